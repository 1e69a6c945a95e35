"""Real-anatomy records: real normal head-CT slices (``--real_anatomy_dir``) made into variants.

A training level gives normals and slices with a lesion painted in, deformed and re-scanned afresh each
time they are read; held-out levels give fixed validation / test variants. Records have ``source``
``"real"`` and carry ``real_seed`` / ``real_subtype`` / ``real_augment``; :func:`real_anatomy_decode`
renders one through the phantom writers and back through ``load_image``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from brain_ct.collect import natural_key
from brain_ct.errors import InvalidInputError
from brain_ct.io import load_image
from brain_ct.preprocess import interpolation
from brain_ct.series import anatomical_groups
from brain_ct.synthetic.real_augment import real_variant
from brain_ct.synthetic.real_lesions import IntracranialSpace, intracranial_space, lesion_room
from train.data.phantoms import encode_phantom
from train.data.records import REAL_COLUMNS, SPLIT_IDS, SUBTYPE_COLUMN, file_columns

#: Default number of real levels held out per series (7 of the 28 GE levels), spread base → vertex.
REAL_HOLDOUT_DEFAULT = 7


@dataclass
class RealSlice:
    """A real normal slice prepared once per process: HU at the working size and where lesions fit."""

    hu: np.ndarray  # float32 [size, size]-ish HU (longer side = size)
    pixel_mm: float
    space: IntracranialSpace
    room: tuple[str, ...]  # subtypes that fit (lesion_room)
    slice_thickness: float


#: Real slices loaded in this process, keyed by (path, size). Filled by :func:`real_anatomy_records` in the
#: main process before the DataLoader forks, so workers share it.
_REAL: dict[tuple[str, int], RealSlice] = {}


def load_real_slice(path: str, size: int) -> RealSlice:
    """Read a real DICOM slice (HU), scale it so its longer side is ``size`` px, and find its spaces.

    Raises:
        InvalidInputError: not a DICOM with HU, or without (0028,0030) *Pixel Spacing*.
    """
    key = (str(path), int(size))
    if key in _REAL:
        return _REAL[key]

    ct = load_image(path, allow_unverified=True)
    name = Path(path).name
    if ct.hu is None:
        raise InvalidInputError(
            f"real anatomy file {name!r} is an 8-bit image; --real_anatomy_dir needs CT DICOMs with HU "
            "(lesions are painted in Hounsfield units)"
        )
    spacing = ct.meta.get("PixelSpacing")
    if not spacing:
        raise InvalidInputError(
            f"real anatomy file {name!r} has no (0028,0030) Pixel Spacing; lesion sizes need it"
        )
    h, w = ct.hu.shape
    factor = size / float(max(h, w))
    pixel_mm = float(np.mean([float(v) for v in spacing])) / factor
    hu = cv2.resize(
        ct.hu,
        (max(1, round(w * factor)), max(1, round(h * factor))),
        interpolation=interpolation(max(h, w), size),
    )
    space = intracranial_space(hu, pixel_mm)
    thickness = float(ct.meta.get("SliceThickness") or 5.0)
    _REAL[key] = RealSlice(hu.astype(np.float32), pixel_mm, space, lesion_room(space), thickness)
    return _REAL[key]


def _has_dicm(path: Path) -> bool:
    """An extension-less file that is a DICOM Part 10 file ("DICM" after the 128-byte preamble)."""
    if path.suffix:
        return False
    with open(path, "rb") as fh:
        return fh.read(132)[128:] == b"DICM"


def _dicom_paths(directory: str | Path) -> list[str]:
    root = Path(directory)
    paths = sorted(
        (
            str(f)
            for f in root.rglob("*")
            if f.is_file()
            and not f.name.startswith(".")
            and (f.suffix.lower() in {".dcm", ".dicom"} or _has_dicm(f))
        ),
        key=natural_key,
    )
    if not paths:
        raise InvalidInputError(
            f"--real_anatomy_dir {str(root)!r} has no DICOM files (.dcm, .dicom, or DICOM files without a suffix)"
        )
    return paths


def real_anatomy_files(directory: str | Path) -> list[str]:
    """The DICOM files of ``directory`` (recursively) in anatomical order, skull base → vertex, series by
    series (:func:`brain_ct.series.anatomical_groups`); files outside a series follow in name order.

    Raises:
        InvalidInputError: no files.
    """
    return [path for series in _series_of(_dicom_paths(directory)) for path in series]


def holdout_levels(n: int, holdout: int) -> list[int]:
    """Indices of ``holdout`` of ``n`` levels in anatomical order, one from the middle of each of
    ``holdout`` equal bins (spread from skull base to vertex); at most half the levels."""
    h = max(0, min(int(holdout), n // 2))
    return sorted({int((i + 0.5) * n / h) for i in range(h)}) if h else []


def _series_of(paths: list[str]) -> list[list[str]]:
    groups = anatomical_groups(paths)
    grouped = {i for g in groups for i in g}
    loose = [paths[i] for i in range(len(paths)) if i not in grouped]
    return [[paths[i] for i in g] for g in groups] + ([loose] if loose else [])


def real_anatomy_split(
    directory: str | Path, holdout: int = REAL_HOLDOUT_DEFAULT
) -> tuple[list[str], list[str]]:
    """``(train_files, held_out_files)``: whole levels, chosen per series by :func:`holdout_levels`;
    deterministic (no seed), so every run, the evaluator and the tests agree on the held-out levels."""
    train: list[str] = []
    held: list[str] = []
    for series in _series_of(_dicom_paths(directory)):
        out = set(holdout_levels(len(series), holdout))
        for i, path in enumerate(series):
            (held if i in out else train).append(path)
    return train, held


def real_anatomy_records(
    directory: str | Path,
    split: str,
    seed: int,
    *,
    size: int = 256,
    variants: int = 8,
    holdout: int = REAL_HOLDOUT_DEFAULT,
    eval_variants: int = 2,
    fraction_8bit: float = 0.5,
    subtypes: bool = False,
) -> dict[str, list[Any]]:
    """Records for real normal slices of ``directory`` and lesions painted into them.

    ``split == "train"``: per training level, ``variants`` records, alternately normal and with a painted
    lesion (all normal for a level without room for any lesion: vertex, low skull base); each is
    deformed and re-scanned freshly whenever it is read in training. ``"validation"`` / ``"test"``: per
    held-out level, ``eval_variants`` normals (the first as the unchanged DICOM, then alternately the
    8-bit internet rendering and the DICOM) and as many positives (lesion painted, no other change,
    DICOM and 8-bit alternately, subtypes in turn); test uses other seeds than validation. The same
    arguments always give the same records; held-out and training levels never overlap.

    Columns: those of every source (``source`` "real", ``path`` = the real file, ``synthetic_seed`` −1,
    ``kind``) plus ``real_seed`` (≥ 0), ``real_subtype`` ("" = any that fits) and
    ``real_augment``. ``subtypes`` (subtype runs): training positives too ask for the subtypes that fit
    their level in turn, and the ``subtypes`` column names the asked subtype (the transform's targets
    follow what was painted, should a draw give way to another subtype).

    Raises:
        InvalidInputError: unknown split, no DICOM files, or a file that is not a CT DICOM with HU.
    """
    if split not in SPLIT_IDS:
        raise InvalidInputError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_IDS)}")
    train_files, held = real_anatomy_split(directory, holdout)
    files = train_files if split == "train" else held
    keys = (*file_columns([], [], []), *REAL_COLUMNS, *((SUBTYPE_COLUMN,) if subtypes else ()))
    cols: dict[str, list[Any]] = {k: [] for k in keys}

    def add(path: str, label: int, kind: str, rseed: int, subtype: str, augment: bool) -> None:
        values = (path, label, "", -1, kind, "real", rseed, subtype, augment, [subtype] if subtype else [])
        for key, value in zip(keys, values[: len(keys)], strict=True):
            cols[key].append(value)

    for level, path in enumerate(files):
        room = load_real_slice(path, size).room

        def state(v: int, level: int = level) -> int:
            return int(
                np.random.SeedSequence([int(seed), SPLIT_IDS[split], 17, level, v]).generate_state(1)[0]
            )

        if split == "train":
            for v in range(variants):
                s = state(v)
                kind = "image" if np.random.default_rng(s ^ 0x5EED).random() < fraction_8bit else "dicom"
                label = int(v % 2 == 1 and bool(room))
                asked = room[(level + v // 2) % len(room)] if subtypes and label else ""
                add(path, label, kind, s, asked, True)
            continue
        for v in range(eval_variants):
            add(path, 0, "dicom" if v % 2 == 0 else "image", state(v), "", False)
        for v in range(eval_variants if room else 0):
            subtype = room[(level + v) % len(room)]
            add(path, 1, "dicom" if v % 2 == 0 else "image", state(100 + v), subtype, False)
    return cols


def real_anatomy_example(
    ex: dict[str, Any], size: int, rng: np.random.Generator | None = None
) -> tuple[Any, np.ndarray]:
    """``(ct, mask)`` of a real-anatomy record (:func:`real_anatomy_decode` without the subtype)."""
    ct, mask, _ = real_anatomy_decode(ex, size, rng)
    return ct, mask


def real_anatomy_decode(
    ex: dict[str, Any], size: int, rng: np.random.Generator | None = None
) -> tuple[Any, np.ndarray, str | None]:
    """Decode a real-anatomy record: the variant (lesion, deformation, scanner) rendered as DICOM or as an
    8-bit figure and read back through ``load_image``, with its lesion mask on the image's grid.

    ``rng`` None: the record's ``real_seed`` decides everything (validation, test: the same every time).

    Returns:
        ``(ct, mask, subtype)``: the subtype painted (the record's own when it fits and paints, else
        another that fits), None for a normal record.

    Raises:
        InvalidInputError: a positive record whose slice has no room for any lesion (not made by
            :func:`real_anatomy_records`, which never asks for that).
    """
    path, label, kind = str(ex["path"]), int(ex["label"]), str(ex["kind"])
    real = load_real_slice(path, size)
    rng = rng if rng is not None else np.random.default_rng(int(ex["real_seed"]))
    augment = bool(ex.get("real_augment", True))
    name = f"real-{Path(path).stem}"
    common = {
        "seed": int(ex["real_seed"]),
        "augment": augment,
        "space": real.space,
        "slice_thickness": real.slice_thickness,
    }
    variant = None
    if label == 0:
        variant = real_variant(real.hu, real.pixel_mm, rng, **common)
    else:
        wanted = str(ex.get("real_subtype") or "")
        order = [wanted] if wanted in real.room else list(rng.permutation(list(real.room)))
        order += [s for s in real.room if s not in order]
        for subtype in order:
            for _ in range(3):  # a draw can be warped off the picture; try again
                variant = real_variant(real.hu, real.pixel_mm, rng, subtype=str(subtype), **common)
                if variant is not None:
                    break
            if variant is not None:
                break
    if variant is None:
        raise InvalidInputError(
            f"real anatomy file {Path(path).name!r} has no room for a lesion at this level; "
            "label its records normal"
        )
    ct, mask = encode_phantom(variant, kind, rng, name)
    return ct, mask, variant.subtype
