"""NIfTI-volume records: one per axial slice of a CT volume, labelled by its voxel lesion mask.

Records have ``source`` ``"nifti"``, ``path`` the volume, ``mask_path`` its voxel mask and ``nifti_slice``
the slice in reading order; :func:`nifti_example` decodes one (volumes cached per process).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from brain_ct.collect import natural_key
from brain_ct.errors import InvalidInputError
from brain_ct.image import CTImage
from brain_ct.nifti import read_nifti_mask, read_nifti_series
from brain_ct.series import context_neighbors
from brain_ct.sniff import NIFTI_SUFFIXES
from brain_ct.volume import Series
from train.data.records import file_columns

logger = logging.getLogger(__name__)

#: Lesion pixels a slice of a voxel mask needs to be labelled hemorrhage (``--min_lesion_area``).
MIN_LESION_AREA_DEFAULT = 10

#: Decoded NIfTI volumes kept per process: training reads the slices of the same volumes again and again.
NIFTI_CACHE_VOLUMES = 8

_NIFTI: OrderedDict[str, tuple[Series, np.ndarray | None]] = OrderedDict()


def _nifti_stem(path: Path) -> str:
    """``X`` of ``X.nii.gz`` / ``X.nii`` (NIfTI names carry a double extension)."""
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _nifti_files(root: Path) -> list[Path]:
    return sorted(
        (
            f
            for f in root.rglob("*")
            if f.is_file() and not f.name.startswith(".") and f.name.lower().endswith(NIFTI_SUFFIXES)
        ),
        key=lambda f: natural_key(f.relative_to(root).as_posix()),
    )


def nifti_pairs(
    directory: str | Path, mask_suffix: str | None = None, mask_dir: str | Path | None = None
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Pair NIfTI volumes with their voxel masks: ``(pairs, volumes without a mask)``.

    Two layouts (searched recursively, natural name order):

    * masks beside the volumes (``mask_dir`` None): ``X.nii.gz`` with ``X<mask_suffix>.nii.gz``
      (suffix default ``"_mask"``); a file whose name ends in the suffix is a mask, never a volume;
    * masks in their own folder (BHSD, INSTANCE 2022): ``directory/<rel>/X.nii.gz`` with
      ``mask_dir/<rel>/X<mask_suffix>.nii.gz`` (suffix default ``""``: the same file name).

    nnU-Net's channel names are understood in both: ``X_0000.nii.gz`` pairs with ``X<suffix>`` too.

    A mask may be ``.nii`` or ``.nii.gz`` whatever its volume is.

    Raises:
        InvalidInputError: no NIfTI volume in ``directory``.
    """
    root = Path(directory)
    masks_root = Path(mask_dir) if mask_dir is not None else None
    suffix = mask_suffix if mask_suffix is not None else ("" if masks_root is not None else "_mask")
    files = _nifti_files(root)
    if masks_root is not None:
        inside = masks_root.resolve()
        volumes = [f for f in files if inside not in f.resolve().parents]
    else:
        volumes = [f for f in files if not _nifti_stem(f).endswith(suffix)]
    if not volumes:
        raise InvalidInputError(
            f"--nifti_dir {str(root)!r} holds no NIfTI volume (.nii / .nii.gz"
            + (f" not ending in {suffix!r}" if masks_root is None else "")
            + ")"
        )
    pairs: list[tuple[Path, Path]] = []
    unpaired: list[Path] = []
    for volume in volumes:
        folder = volume.parent if masks_root is None else masks_root / volume.parent.relative_to(root)
        stems = [_nifti_stem(volume) + suffix]
        if re.fullmatch(r".+_\d{4}", _nifti_stem(volume)):  # nnU-Net names channel 0 X_0000, its label X
            stems.append(_nifti_stem(volume)[:-5] + suffix)
        candidates = [folder / f"{stem}{ext}" for stem in stems for ext in (".nii.gz", ".nii")]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None or found == volume:
            unpaired.append(volume)
        else:
            pairs.append((volume, found))
    return pairs, unpaired


def nifti_records(
    directory: str | Path,
    *,
    mask_suffix: str | None = None,
    mask_dir: str | Path | None = None,
    min_lesion_area: int = MIN_LESION_AREA_DEFAULT,
    allow_unverified: bool = True,
) -> dict[str, list[Any]]:
    """Slice records from NIfTI CT volumes with voxel lesion masks (:func:`nifti_pairs`).

    Every volume and mask is read once here (:func:`brain_ct.nifti.read_nifti_series`,
    :func:`brain_ct.nifti.read_nifti_mask`: HU check, orientation to axial slices inferior → superior,
    mask on the volume's grid), so a bad file is named now rather than halfway through an epoch. A
    slice with at least ``min_lesion_area`` lesion pixels (any label > 0, e.g. BHSD's five subtypes) is
    hemorrhage, one without any is normal; a slice with 1 to ``min_lesion_area - 1`` lesion pixels is
    left out (neither a visible bleed nor a normal slice: as a normal it would teach mask guidance to
    call blood normal). Volumes without a mask and unreadable pairs are left out and named in a warning.

    Columns: those of the file sources (``source`` "nifti", ``path`` the volume, ``mask_path`` its mask,
    ``kind`` ""), plus
    ``nifti_slice`` (the slice index in reading order) and ``series_group`` (the volume's index, so
    :func:`~train.data.sampling.stratified_split` keeps whole volumes on one side).

    Raises:
        InvalidInputError: no usable volume (the message lists why per file).
    """
    if min_lesion_area < 1:
        raise InvalidInputError(f"--min_lesion_area must be >= 1 lesion pixel; got {min_lesion_area}")
    root = Path(directory)
    pairs, unpaired = nifti_pairs(root, mask_suffix, mask_dir)
    refused = [(v.relative_to(root).as_posix(), "no mask found for it") for v in unpaired]
    cols: dict[str, list[Any]] = {k: [] for k in (*file_columns([], [], []), "nifti_slice", "series_group")}
    left_out = 0
    for group, (volume, mask) in enumerate(pairs):
        shown = volume.relative_to(root).as_posix()
        try:
            series = read_nifti_series(volume, allow_unverified=allow_unverified)
            areas = (read_nifti_mask(mask, series.grid) > 0).sum(axis=(1, 2))
        except InvalidInputError as exc:
            refused.append((shown, str(exc)))
            continue
        for k, area in enumerate(areas.tolist()):
            if 0 < area < min_lesion_area:
                left_out += 1
                continue
            for key, value in zip(
                cols,
                (str(volume), int(area >= min_lesion_area), str(mask), -1, "", "nifti", k, group),
                strict=True,
            ):
                cols[key].append(value)
    listing = "\n".join(f"  - {name}: {why}" for name, why in refused)
    if not cols["path"]:
        raise InvalidInputError(
            f"--nifti_dir {str(root)!r}: no volume with a mask can be used:\n{listing or '  (none)'}\n"
            "Each CT volume X.nii.gz needs its voxel mask (see --mask_suffix and --nifti_mask_dir)"
        )
    if refused:
        logger.warning("--nifti_dir %s: %d volumes left out:\n%s", root, len(refused), listing)
    if left_out:
        logger.info(
            "--nifti_dir %s: %d slices with 1-%d lesion pixels left out (below --min_lesion_area)",
            root,
            left_out,
            min_lesion_area - 1,
        )
    return cols


def nifti_example(
    path: str, mask_path: str, index: int, *, with_mask: bool, k: int = 0, allow_unverified: bool = True
) -> tuple[CTImage, np.ndarray | None, list[CTImage | None] | None]:
    """Slice ``index`` of a NIfTI volume: ``(CTImage, lesion mask float32 {0, 1} or None, neighbours)``.

    The volume (and its mask, when asked for) is decoded once per process and kept in a small cache
    (:data:`NIFTI_CACHE_VOLUMES`). Neighbours (slice context, ``k`` > 0) are the volume's own slices
    ``index − k … index + k`` (None past either end), as the Predictor reads a NIfTI scan.
    """
    key = str(path)
    cached = _NIFTI.get(key)
    if cached is None or (with_mask and cached[1] is None):
        series = read_nifti_series(path, allow_unverified=allow_unverified)
        masks = (read_nifti_mask(mask_path, series.grid) > 0).astype(np.uint8) if with_mask else None
        cached = (series, masks)
        _NIFTI[key] = cached
        while len(_NIFTI) > NIFTI_CACHE_VOLUMES:
            _NIFTI.popitem(last=False)
    _NIFTI.move_to_end(key)
    series, masks = cached
    if not 0 <= index < len(series.slices):
        raise InvalidInputError(f"{Path(path).name} has {len(series.slices)} slices; slice {index} asked for")
    mask = masks[index].astype(np.float32) if with_mask and masks is not None else None
    neighbors = context_neighbors(series.slices, k)[index] if k else None
    return series.slices[index], mask, neighbors
