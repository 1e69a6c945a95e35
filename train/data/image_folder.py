"""Image-folder records: ``DIR/<class>/**`` files, ``metadata.jsonl`` subtypes, lesion masks, series neighbours.

Datasets' own ``imagefolder`` cannot decode DICOM, so image folders are scanned here: ``DIR/<class>/**``
with class folders ``hemorrhage`` and ``normal`` (a few aliases accepted, see
:data:`~train.data.labels.CLASS_ALIASES`) or the subtype names (``subdural/``, ``Epidural/``…,
case-insensitive); ``DIR/metadata.jsonl`` (Hugging Face's imagefolder convention) may name the subtypes of
single files, e.g. a slice with two (``{"file_name": "subdural/a.png", "subtypes": ["subdural",
"subarachnoid"]}``); ``DIR/masks/`` is not a class. Masks are looked up as ``<mask_dir>/<stem>.png``
(``mask_dir`` defaults to ``DIR/masks``, which is what ``python -m brain_ct synth`` writes). Every file is
decoded once at scan time (:func:`usable_files`), so a stray PDF is named now, not halfway through an epoch.
Records have ``source`` ``"file"``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from brain_ct import sniff
from brain_ct.errors import InvalidInputError
from brain_ct.io import load_image
from brain_ct.labels import SUBTYPES
from brain_ct.series import anatomical_groups, context_neighbors
from train.data.labels import METADATA_FILE, checked_subtypes, folder_class
from train.data.records import SUBTYPE_COLUMN, file_columns

logger = logging.getLogger(__name__)

#: What a class folder may hold: the ordinary images and DICOMs brain_ct reads, and DICOMs without a suffix.
IMAGE_SUFFIXES = {*sniff.IMAGE_SUFFIXES, *sniff.DICOM_SUFFIXES, ""}
SKIP_DIRS = {"masks"}


def read_folder_metadata(root: str | Path) -> dict[str, list[str]]:
    """``root/metadata.jsonl`` as ``{file path relative to root (POSIX): subtype names}``; {} without one.

    Rows ``{"file_name": "subdural/a.png", "subtypes": ["subdural", "subarachnoid"]}`` (other keys are
    ignored, as Hugging Face's imagefolder keeps them as extra columns); rows without ``subtypes`` (e.g. the
    ``metadata.jsonl`` that ``python -m brain_ct synth`` writes) carry no subtype information and are skipped.

    Raises:
        InvalidInputError: a row that is not JSON, has ``subtypes`` but no ``file_name``, or names an
            unknown subtype; the message gives the line.
    """
    path = Path(root) / METADATA_FILE
    if not path.is_file():
        return {}
    out: dict[str, list[str]] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{METADATA_FILE} line {line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{where} is not JSON ({exc.msg})") from None
        if isinstance(row, dict) and SUBTYPE_COLUMN not in row:
            # Not a subtype row: image folders keep other metadata too (this project's own
            # `brain_ct synth` data sets, Hugging Face captions), which says nothing about subtypes.
            continue
        if not isinstance(row, dict) or "file_name" not in row:
            raise InvalidInputError(
                f'{where}: each row needs "file_name" and "subtypes", e.g. '
                '{"file_name": "subdural/a.png", "subtypes": ["subdural", "subarachnoid"]}'
            )
        name = Path(str(row["file_name"])).as_posix()
        out[name] = checked_subtypes(row[SUBTYPE_COLUMN], f"{where} ({name})")
    return out


def scan_imagefolder(
    root: str | Path, mask_dir: str | Path | None = None, *, validate: bool = True
) -> dict[str, list[Any]]:
    """List an image folder ``root/<class>/**`` as record columns, keeping only files brain_ct can read.

    Args:
        root: folder with ``hemorrhage/`` and ``normal/`` subfolders (PNG/JPG/DICOM…, nested allowed), or
            subtype folders (``subdural/``, …) with ``normal/``, and optionally ``metadata.jsonl``.
        mask_dir: where ``<stem>.png`` lesion masks live; default ``root/masks`` when it exists.
        validate: decode every file once through :func:`brain_ct.io.load_image` (:func:`usable_files`):
            unreadable and non-CT files are left out and named in a warning, with files of other types
            (``.txt``, ``.pdf``, …) found in the class folders. False lists by file name only.

    Returns:
        Record columns (see the module docstring), sorted by path for reproducibility; with a ``subtypes``
        column when the folder names subtypes (subtype folders or ``metadata.jsonl``).

    Raises:
        InvalidInputError: no class folders, an unknown class folder, no files, no usable file, or a
            ``metadata.jsonl`` row that contradicts its file's folder or names no file of the folder.
    """
    root = Path(root)
    metadata = read_folder_metadata(root)
    mask_root = Path(mask_dir) if mask_dir is not None else root / "masks"
    mask_root = mask_root if mask_root.is_dir() else None
    class_dirs = [
        d
        for d in sorted(root.iterdir())
        if d.is_dir() and d.name.lower() not in SKIP_DIRS and not d.name.startswith(".")
    ]
    if not class_dirs:
        raise InvalidInputError(
            f"image folder {str(root)!r} has no class subfolders; it needs hemorrhage/ and normal/ "
            "subfolders of PNG/JPG/DICOM files"
        )
    paths: list[str] = []
    labels: list[int] = []
    masks: list[str] = []
    subtypes: list[list[str]] = []
    other_types: list[tuple[str, str]] = []
    for d in class_dirs:
        label, folder_subtypes = folder_class(d.name, f"image folder {str(root)!r}")
        for f in sorted(d.rglob("*")):
            if not f.is_file() or f.name.startswith("."):
                continue
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                other_types.append((str(f), f"not an image or DICOM file ({f.suffix} files are not read)"))
                continue
            paths.append(str(f))
            labels.append(label)
            named = metadata.pop(f.relative_to(root).as_posix(), None)
            if named is not None and bool(named) != bool(label):
                raise InvalidInputError(
                    f"{METADATA_FILE} of {str(root)!r} gives {f.relative_to(root).as_posix()} the subtypes "
                    f"{named}, but it is in the {d.name}/ folder; a normal slice has none, a bleed at least one"
                )
            subtypes.append(named if named is not None else list(folder_subtypes))
            mask = mask_root / f"{f.stem}.png" if mask_root is not None else None
            masks.append(str(mask) if mask is not None and mask.is_file() else "")
    if not paths:
        raise InvalidInputError(f"image folder {str(root)!r} has class folders but no image or DICOM files")
    if metadata:
        raise InvalidInputError(
            f"{METADATA_FILE} of {str(root)!r} names files that are not in its class folders: "
            f"{', '.join(sorted(metadata)[:5])} (file_name is relative to the folder, e.g. 'subdural/a.png')"
        )
    named = any(set(names) & set(SUBTYPES) for names in subtypes)
    columns = file_columns(paths, labels, masks, subtypes if named else None)
    if validate:
        columns = usable_files(columns, f"image folder {str(root)!r}", root=root, also_refused=other_types)
    return columns


def usable_files(
    columns: dict[str, list[Any]],
    where: str,
    *,
    root: str | Path | None = None,
    also_refused: Sequence[tuple[str, str]] = (),
    allow_unverified: bool = True,
    loader: Callable[..., Any] | None = None,
) -> dict[str, list[Any]]:
    """Keep the file records that :func:`brain_ct.io.load_image` reads; name every refused file and why.

    A labelled folder from a user often holds a stray PDF, a screenshot of a report, an MR series or a
    truncated download. Each is decoded once here, at scan time, so training neither crashes halfway
    through an epoch nor silently learns from it: refused files are listed in one warning (each with
    the reason ``load_image`` gives), together with how many files are used.

    Args:
        columns: record columns with ``path`` (other columns are filtered alongside).
        where: what was scanned, for the messages (e.g. ``"image folder 'my_scans'"``).
        root: shown paths are relative to this folder.
        also_refused: ``(path, reason)`` of files already left out (e.g. by their type), listed too.
        allow_unverified: skip brain_ct's head-CT plausibility check (the default: labelled data is
            trusted to be head CT; decoding, modality and size are always checked).
        loader: ``load_image`` replacement (tests).

    Returns:
        The columns of the usable files, in the same order.

    Raises:
        InvalidInputError: no file is usable; the message lists the refused ones.
    """
    if loader is None:
        loader = load_image

    def shown(path: str) -> str:
        try:
            return Path(path).relative_to(root).as_posix() if root is not None else path
        except ValueError:
            return path

    keep: list[int] = []
    refused = [(shown(p), why) for p, why in also_refused]
    for i, path in enumerate(columns["path"]):
        try:
            loader(path, allow_unverified=allow_unverified)
        except InvalidInputError as exc:
            reason = str(exc)
            prefix = f"{Path(path).name}: "
            refused.append((shown(path), reason[len(prefix) :] if reason.startswith(prefix) else reason))
        else:
            keep.append(i)
    total = len(columns["path"]) + len(also_refused)
    listing = "\n".join(f"  - {name}: {why}" for name, why in refused)
    if not keep:
        raise InvalidInputError(
            f"{where}: none of its {total} files can be used, so there is nothing to train or evaluate on:\n"
            f"{listing}\nPut readable head-CT slices (DICOM, PNG or JPG) in its class folders."
        )
    if refused:
        logger.warning(
            "%s: %d of %d files refused, %d used:\n%s", where, len(refused), total, len(keep), listing
        )
    return {k: [v[i] for i in keep] for k, v in columns.items()}


def read_mask(path: str, shape: tuple[int, int]) -> np.ndarray:
    """Read a lesion mask PNG as float32 {0, 1} on the image grid ``shape`` (H, W).

    Raises:
        InvalidInputError: unreadable, or not the image's size.
    """
    mask = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise InvalidInputError(f"lesion mask {path!r} cannot be read as an image (PNG expected)")
    if mask.shape != tuple(shape):
        raise InvalidInputError(
            f"lesion mask {path!r} is {mask.shape[1]}×{mask.shape[0]} px but its image is "
            f"{shape[1]}×{shape[0]} px; masks must be on the image's own pixel grid"
        )
    return (mask > 0).astype(np.float32)


def add_file_neighbors(columns: dict[str, list[Any]], k: int) -> dict[str, list[Any]]:
    """Add the ``neighbors`` column for slice-context training on files (image folders, RSNA folders).

    A slice's neighbours are the files next to it in its DICOM series, grouped and ordered from the
    headers (:func:`brain_ct.series.anatomical_groups`), wherever they sit on disk (a series' slices are
    usually split between ``hemorrhage/`` and ``normal/``). Call it on a whole listing before it is split
    or subsampled. Files outside any series (PNG/JPG, lone DICOMs) get none: the centre is repeated.

    Returns:
        ``columns`` with ``neighbors`` (per record, 2k paths, "" past either end of its series) and
        ``series_group`` (which series a record belongs to, so :func:`~train.data.sampling.stratified_split`
        keeps series whole).
    """
    paths = columns["path"]
    neighbors = [[""] * (2 * k) for _ in paths]
    # Files outside any series are groups of their own (negative ids).
    series_group = [-1 - i for i in range(len(paths))]
    in_series = 0
    for g, group in enumerate(anatomical_groups(paths)):
        for i, nbs in zip(group, context_neighbors(group, k), strict=True):
            neighbors[i] = [paths[j] if j is not None else "" for j in nbs]
            series_group[i] = g
            in_series += 1
    logger.info(
        "slice context: %d of %d slices belong to a DICOM series with neighbours; the others repeat "
        "themselves as context",
        in_series,
        len(paths),
    )
    return {**columns, "neighbors": neighbors, "series_group": series_group}
