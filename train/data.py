"""Training data: file lists, Hub datasets and on-the-fly phantoms, all decoded by ``brain_ct``.

Every source becomes a :class:`datasets.Dataset` of light records and is decoded lazily in a
``set_transform`` (:class:`SliceTransform`), so nothing is precomputed to disk and the model sees exactly
what the Predictor feeds it: :func:`brain_ct.io.load_image` → :func:`brain_ct.preprocess.model_input`, under
the model's own :class:`~brain_ct.model.ModelSettings`.

Record columns (file-based and synthetic sources):

* ``path`` (str): image or DICOM file, "" for phantoms;
* ``label`` (int): 0 normal, 1 hemorrhage (RSNA's ``any``);
* ``subtypes`` (list[str], only where the source knows subtypes, :data:`SUBTYPE_COLUMN`): the RSNA subtype
  names of the slice (:data:`brain_ct.labels.SUBTYPES`), ``[]`` for a normal slice, ``["any"]`` for a bleed of
  unknown subtype (a ``hemorrhage/`` folder). Subtype runs (``--labels subtypes``) refuse ``["any"]``-only
  positives (:func:`check_subtype_records`): their five subtype targets would be guesses. Generated examples
  (phantoms, lesions painted into real anatomy) carry the subtype ASKED of the generator here; the transform
  takes the targets from what was actually generated (:attr:`brain_ct.synthetic.Phantom.subtype`);
* ``mask_path`` (str): lesion mask PNG (same pixel grid as the image, non-zero = lesion) or "";
* ``synthetic_seed`` (int): phantom seed, -1 for files;
* ``kind`` (str): "dicom" / "image" for phantoms (how the phantom is fed), "" for files (known after decoding);
* ``nifti_slice`` (int, NIfTI volumes only, :func:`nifti_records`): the slice of the volume ``path`` in reading
  order (inferior → superior); ``mask_path`` is then the voxel mask volume; −1 or absent for other sources;
* ``neighbors`` (list[str], slice-context training with files only): the 2k files ``[s−k … s−1, s+1 … s+k]``
  of the slice's series in anatomical order, "" past either end (:func:`add_file_neighbors`);
* ``real_seed`` / ``real_subtype`` / ``real_augment`` (real-anatomy records only, :func:`real_anatomy_records`;
  other sources get −1 / "" / False in :func:`merge_records`): a real normal slice (``path``) made into a
  variant — a painted lesion when ``label`` is 1, deformation and re-scan when ``real_augment`` — and fed
  as ``kind``. ``synthetic_seed`` is −1, so the anatomy domain is "real".

Slice-context models (``--context_slices k``) see the windowed slices s−k … s+k as channels, built by
:func:`brain_ct.preprocess.model_input` as the Predictor builds them. Files get their neighbours from DICOM
series headers; phantoms are generated as a slice with its neighbours (:func:`brain_ct.synthetic.generate_context`).

Datasets' own ``imagefolder`` cannot decode DICOM, so image folders are scanned here: ``DIR/<class>/**``
with class folders ``hemorrhage`` and ``normal`` (a few aliases accepted, see :data:`CLASS_ALIASES`) or the
subtype names (``subdural/``, ``Epidural/``…, case-insensitive); ``DIR/metadata.jsonl`` (Hugging Face's
imagefolder convention) may name the subtypes of single files, e.g. a slice with two
(``{"file_name": "subdural/a.png", "subtypes": ["subdural", "subarachnoid"]}``); ``DIR/masks/`` is not a class. Masks are looked up as ``<mask_dir>/<stem>.png`` (``mask_dir`` defaults to
``DIR/masks``, which is what ``python -m brain_ct synth`` writes).
"""

from __future__ import annotations

import csv
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from brain_ct.collect import natural_key
from brain_ct.errors import InvalidInputError
from brain_ct.image import CTImage
from brain_ct.io import load_image
from brain_ct.labels import ANY, SUBTYPE_LABELS, SUBTYPES, subtype_vector
from brain_ct.labels import LABEL_MODES as LABEL_MODES  # re-exported: defined here before
from brain_ct.nifti import read_nifti_mask, read_nifti_series
from brain_ct.preprocess import interpolation, mask_to_model_grid, model_input
from brain_ct.series import anatomical_groups, context_neighbors
from brain_ct.synthetic import generate_context, generate_slice, render_internet, to_dicom
from brain_ct.synthetic.real_augment import real_variant
from brain_ct.synthetic.real_lesions import intracranial_space, lesion_room

if TYPE_CHECKING:
    from brain_ct.model import ModelSettings
    from train.args import DataArguments
    from train.augment import Augmenter

logger = logging.getLogger(__name__)

#: Folder / class names accepted for each label (case-insensitive).
CLASS_ALIASES: dict[str, int] = {
    "normal": 0,
    "no_hemorrhage": 0,
    "no-hemorrhage": 0,
    "negative": 0,
    "0": 0,
    "healthy": 0,
    "hemorrhage": 1,
    "haemorrhage": 1,
    "hemorrhagic": 1,
    "ich": 1,
    "positive": 1,
    "1": 1,
    "bleed": 1,
}


#: The record column with a slice's subtype names (see the module docstring).
SUBTYPE_COLUMN = "subtypes"

#: Image-folder metadata file naming per-file subtypes (Hugging Face's imagefolder convention).
METADATA_FILE = "metadata.jsonl"

#: Largest BCE positive weight of one label (a rare subtype, e.g. epidural at 0.4 % of RSNA's slices,
#: would otherwise weigh 250 × and swamp the other terms).
POS_WEIGHT_MAX = 20.0

#: Input kinds reported per example (``input_kind``): how the slice reached the model.
INPUT_KINDS: tuple[str, ...] = ("dicom", "image")

#: Anatomy domains reported per example (``domain``): "phantom" for generated heads (``synthetic_seed`` ≥ 0),
#: "real" for everything read from files or the Hub (real anatomy, with or without painted-in lesions).
#: The real-anatomy threshold rule bounds false positives on the real normals of the validation split.
DOMAINS: tuple[str, ...] = ("phantom", "real")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom", ""}
SKIP_DIRS = {"masks"}

#: Offsets separating the phantom seeds of the train / validation / test splits (no overlap).
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


def class_id(name: str, where: str) -> int:
    """Map a class folder or label name to 0 (normal) / 1 (hemorrhage).

    Raises:
        InvalidInputError: the name is not a known class; the message lists what is accepted.
    """
    key = str(name).strip().lower().replace(" ", "_")
    if key not in CLASS_ALIASES:
        raise InvalidInputError(
            f"{where}: class {name!r} is not recognised; use 'normal' and 'hemorrhage' "
            f"(accepted aliases: {', '.join(sorted(CLASS_ALIASES))}) or the subtype names "
            f"{', '.join(SUBTYPES)}"
        )
    return CLASS_ALIASES[key]


def folder_class(name: str, where: str) -> tuple[int, list[str]]:
    """A class folder's ``(label, subtypes)``: a subtype name (any case) → ``(1, [name])``, ``normal`` and
    its aliases → ``(0, [])``, ``hemorrhage`` and its aliases → ``(1, ["any"])`` (subtype unknown).

    Raises:
        InvalidInputError: not a class name (:func:`class_id`).
    """
    key = str(name).strip().lower()
    if key in SUBTYPES:
        return 1, [key]
    label = class_id(name, where)
    return label, ([ANY] if label else [])


def checked_subtypes(names: Any, where: str) -> list[str]:
    """Lower-cased subtype names of one slice, checked against RSNA's labels (``any`` allowed).

    Raises:
        InvalidInputError: not a list of names, or a name that is not ``any`` or a subtype.
    """
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise InvalidInputError(f"{where}: subtypes must be a list of names; got {names!r}")
    out = sorted({str(n).strip().lower() for n in names})
    try:
        subtype_vector(out)
    except ValueError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    if ANY in out and len(out) > 1:
        out.remove(ANY)  # "any" is implied by a named subtype
    return out


def has_subtypes(columns: dict[str, list[Any]] | None) -> bool:
    """True when some record names a subtype (not just ``any``): the data can train a subtype model."""
    if not columns or SUBTYPE_COLUMN not in columns:
        return False
    return any(set(names) & set(SUBTYPES) for names in columns[SUBTYPE_COLUMN])


def check_subtype_records(columns: dict[str, list[Any]], where: str) -> None:
    """Refuse records a subtype run cannot learn from: a bleed of unknown subtype (``["any"]`` only).

    Its five subtype targets would be guesses (all 0 would teach "this blood is no subtype"), so such
    slices are refused rather than trained as any-only.

    Raises:
        InvalidInputError: naming how many such slices ``where`` has, a few of them, and the fix.
    """
    names = columns.get(SUBTYPE_COLUMN)
    labels = columns["label"]
    unknown = [
        i
        for i, label in enumerate(labels)
        if int(label) == 1 and not (names is not None and set(names[i]) & set(SUBTYPES))
    ]
    if unknown:
        shown = ", ".join(Path(str(columns["path"][i])).name or f"record {i}" for i in unknown[:5])
        raise InvalidInputError(
            f"{where}: {len(unknown)} hemorrhage slice(s) have no subtype ({shown}"
            f"{', …' if len(unknown) > 5 else ''}); a subtype model needs each bleed's subtypes: file them under "
            f"subtype folders ({', '.join(SUBTYPES)}) or name them in {METADATA_FILE}, give the RSNA CSV's "
            "subtype rows, or train a binary model with --labels binary"
        )


def subtype_counts(columns: dict[str, list[Any]]) -> list[int]:
    """Positives per label in :data:`~brain_ct.labels.SUBTYPE_LABELS` order (``any`` first)."""
    vectors = [subtype_vector(names) for names in columns[SUBTYPE_COLUMN]]
    return np.asarray(vectors, dtype=np.int64).reshape(-1, len(SUBTYPE_LABELS)).sum(axis=0).tolist()


def subtype_pos_weights(positives: Sequence[int], n: int) -> list[float]:
    """BCE positive weights ``n_negative / n_positive`` per label, clipped to [1/20, 20]
    (:data:`POS_WEIGHT_MAX`); 1.0 for a label without positives or negatives.

    It is the multi-label form of the binary run's balanced weights: positives and negatives of each
    label then weigh the same in the loss (up to the clip).
    """
    out = []
    for p in positives:
        neg = n - int(p)
        w = neg / p if p > 0 and neg > 0 else 1.0
        out.append(float(min(max(w, 1.0 / POS_WEIGHT_MAX), POS_WEIGHT_MAX)))
    return out


def _columns(
    paths: list[str], labels: list[int], masks: list[str], subtypes: list[list[str]] | None = None
) -> dict[str, list[Any]]:
    columns = {
        "path": paths,
        "label": labels,
        "mask_path": masks,
        "synthetic_seed": [-1] * len(paths),
        "kind": [""] * len(paths),
    }
    if subtypes is not None:
        columns[SUBTYPE_COLUMN] = subtypes
    return columns


def read_folder_metadata(root: str | Path) -> dict[str, list[str]]:
    """``root/metadata.jsonl`` as ``{file path relative to root (POSIX): subtype names}``; {} without one.

    Rows ``{"file_name": "subdural/a.png", "subtypes": ["subdural", "subarachnoid"]}`` (other keys are
    ignored, as Hugging Face's imagefolder keeps them as extra columns); rows without ``subtypes`` (e.g. the
    ``metadata.jsonl`` that ``python -m brain_ct synth`` writes) carry no subtype information and are skipped.

    Raises:
        InvalidInputError: a row that is not JSON, has ``subtypes`` but no ``file_name``, or names an
            unknown subtype; the message gives the line.
    """
    import json

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
    columns = _columns(paths, labels, masks, subtypes if named else None)
    if validate:
        columns = usable_files(columns, f"image folder {str(root)!r}", root=root, also_refused=other_types)
    return columns


def _rsna_rows(csv_path: str | Path) -> dict[str, dict[str, int]]:
    """An RSNA 2019 labels CSV as ``{image_id: {label: 0/1}}`` for the six labels of
    :data:`~brain_ct.labels.SUBTYPE_LABELS` (rows ``ID_<image>_<label>``; other suffixes are ignored).

    Raises:
        InvalidInputError: missing columns, a bad label value or conflicting duplicated rows (the public CSV
            repeats some rows; repeats must agree).
    """
    out: dict[str, dict[str, int]] = {}
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"ID", "Label"} <= set(reader.fieldnames):
            raise InvalidInputError(
                f"labels CSV {str(csv_path)!r} needs the header 'ID,Label' (RSNA 2019 layout); "
                f"got {reader.fieldnames}"
            )
        for line, row in enumerate(reader, start=2):
            ident = (row["ID"] or "").strip()
            image_id, _, label = ident.rpartition("_")
            if not image_id or label not in SUBTYPE_LABELS:
                continue
            value = (row["Label"] or "").strip()
            if value not in {"0", "1"}:
                raise InvalidInputError(
                    f"labels CSV {str(csv_path)!r} line {line}: Label must be 0 or 1; got {value!r}"
                )
            rows = out.setdefault(image_id, {})
            if rows.get(label, int(value)) != int(value):
                raise InvalidInputError(
                    f"labels CSV {str(csv_path)!r} line {line}: {ident} appears with labels 0 and 1"
                )
            rows[label] = int(value)
    return out


def read_rsna_labels(csv_path: str | Path) -> dict[str, int]:
    """Read an RSNA 2019 labels CSV into ``{image_id: 0/1}`` from its ``ID_<image>_any`` rows.

    The file has a header ``ID,Label`` and one row per image and subtype, e.g.
    ``ID_12cadc6af_any,1``; only the ``any`` rows decide the label. Duplicated rows (the public CSV has
    some) must agree.

    Raises:
        InvalidInputError: missing columns, a bad label value, conflicting duplicates, or no ``_any`` row.
    """
    return _any_labels(_rsna_rows(csv_path), csv_path)


def _any_labels(rows: dict[str, dict[str, int]], csv_path: str | Path) -> dict[str, int]:
    out = {image: labels[ANY] for image, labels in rows.items() if ANY in labels}
    if not out:
        raise InvalidInputError(
            f"labels CSV {str(csv_path)!r} has no 'ID_<image>_any' rows; is it the RSNA 2019 stage_2_train.csv?"
        )
    return out


def _names_subtypes(rows: dict[str, dict[str, int]]) -> bool:
    return any(set(labels) & set(SUBTYPES) for labels in rows.values())


def rsna_subtype_targets(rows: dict[str, dict[str, int]], where: str) -> dict[str, list[int]]:
    """The six targets (:data:`~brain_ct.labels.SUBTYPE_LABELS` order) of each image of :func:`_rsna_rows`.

    Raises:
        InvalidInputError: an image without all six rows, or inconsistent rows: ``any`` must be 1 exactly
            when some subtype is (RSNA's definition), so a subtype 1 with ``any`` 0 (or ``any`` 1 with no
            subtype) names the image and its rows.
    """
    out: dict[str, list[int]] = {}
    for image, labels in rows.items():
        missing = [name for name in SUBTYPE_LABELS if name not in labels]
        if missing:
            raise InvalidInputError(
                f"{where}: {image} has no row for {', '.join(missing)}; an RSNA subtype CSV has six rows per "
                f"image ({', '.join(f'{image}_{n}' for n in SUBTYPE_LABELS)})"
            )
        vector = [labels[name] for name in SUBTYPE_LABELS]
        if vector[0] != max(vector[1:]):
            shown = ", ".join(f"{name}={labels[name]}" for name in SUBTYPE_LABELS)
            raise InvalidInputError(
                f"{where}: {image} is inconsistent ({shown}); 'any' must be 1 exactly when a subtype is 1"
            )
        out[image] = vector
    return out


def read_rsna_subtypes(csv_path: str | Path) -> dict[str, list[int]]:
    """Read an RSNA 2019 labels CSV into ``{image_id: six 0/1 targets}`` (``any`` then the five subtypes).

    Raises:
        InvalidInputError: as :func:`_rsna_rows`, no subtype rows at all, or an image whose rows are
            missing or inconsistent (:func:`rsna_subtype_targets`).
    """
    return _subtype_targets_of(_rsna_rows(csv_path), csv_path)


def _subtype_targets_of(rows: dict[str, dict[str, int]], csv_path: str | Path) -> dict[str, list[int]]:
    where = f"labels CSV {str(csv_path)!r}"
    if not _names_subtypes(rows):
        raise InvalidInputError(
            f"{where} has no subtype rows (ID_<image>_subdural, …); a subtype model needs them "
            "(or train a binary model with --labels binary)"
        )
    return rsna_subtype_targets(rows, where)


def scan_rsna(
    dicom_dir: str | Path, labels_csv: str | Path, subtypes: bool | None = False
) -> dict[str, list[Any]]:
    """Records for an RSNA 2019 folder: ``dicom_dir/ID_<image>.dcm`` labelled by the CSV.

    ``subtypes``: False reads only the ``_any`` rows (:func:`read_rsna_labels`); True needs the six rows
    of every image (:func:`read_rsna_subtypes`) and adds the ``subtypes`` column; None (``--labels auto``)
    does the latter when the CSV has subtype rows at all. Images listed in the CSV but missing from the
    folder are skipped with a logged count (the public data set is often used in parts); none found at all
    is an error.
    """
    rows = _rsna_rows(labels_csv)
    vectors = None
    if subtypes or (subtypes is None and _names_subtypes(rows)):
        vectors = _subtype_targets_of(rows, labels_csv)
        labels = {image: v[0] for image, v in vectors.items()}
    else:
        labels = _any_labels(rows, labels_csv)
    root = Path(dicom_dir)
    paths: list[str] = []
    ys: list[int] = []
    missing = 0
    for image_id in sorted(labels):
        f = root / f"{image_id}.dcm"
        if f.is_file():
            paths.append(str(f))
            ys.append(labels[image_id])
        else:
            missing += 1
    if not paths:
        raise InvalidInputError(
            f"none of the {len(labels)} images in {str(labels_csv)!r} is in {str(root)!r} "
            "(expected files named ID_<image>.dcm)"
        )
    if missing:
        logger.warning("%d of %d labelled RSNA images are not in %s; skipped", missing, len(labels), root)
    names = None
    if vectors is not None:
        names = [[n for n, v in zip(SUBTYPES, vectors[Path(p).stem][1:], strict=True) if v] for p in paths]
    return _columns(paths, ys, [""] * len(paths), names)


# ---------------------------------------------------------------------------------------------- NIfTI volumes

#: Lesion pixels a slice of a voxel mask needs to be labelled hemorrhage (``--min_lesion_area``).
MIN_LESION_AREA_DEFAULT = 10

#: Decoded NIfTI volumes kept per process: training reads the slices of the same volumes again and again.
NIFTI_CACHE_VOLUMES = 8

_NIFTI: OrderedDict[str, tuple[Any, np.ndarray | None]] = OrderedDict()


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
            if f.is_file() and not f.name.startswith(".") and f.name.lower().endswith((".nii", ".nii.gz"))
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

    Columns: those of the file sources (``path`` the volume, ``mask_path`` its mask, ``kind`` ""), plus
    ``nifti_slice`` (the slice index in reading order) and ``series_group`` (the volume's index, so
    :func:`stratified_split` keeps whole volumes on one side).

    Raises:
        InvalidInputError: no usable volume (the message lists why per file).
    """
    if min_lesion_area < 1:
        raise InvalidInputError(f"--min_lesion_area must be >= 1 lesion pixel; got {min_lesion_area}")
    root = Path(directory)
    pairs, unpaired = nifti_pairs(root, mask_suffix, mask_dir)
    refused = [(v.relative_to(root).as_posix(), "no mask found for it") for v in unpaired]
    cols: dict[str, list[Any]] = {k: [] for k in (*_columns([], [], []), "nifti_slice", "series_group")}
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
                cols, (str(volume), int(area >= min_lesion_area), str(mask), -1, "", k, group), strict=True
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
) -> tuple[Any, np.ndarray | None, list[Any] | None]:
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


def synthetic_records(
    n: int, split: str, seed: int, fraction_8bit: float, subtypes: bool = False
) -> dict[str, list[Any]]:
    """Records for ``n`` phantoms generated on the fly; half of each class (alternating).

    Each index gets its own phantom seed from ``(seed, split, index)`` and, from that seed, whether it is
    fed as DICOM HU or as an 8-bit rendering; the same arguments always give the same records.
    ``subtypes``: add the ``subtypes`` column, the positives asking the generator for the five subtypes in
    turn (balanced; the generator draws one otherwise, and the transform reads what it made).
    """
    split_id = SPLIT_IDS[split]
    seeds: list[int] = []
    kinds: list[str] = []
    for i in range(n):
        ss = np.random.SeedSequence([int(seed), split_id, i])
        s = int(ss.generate_state(1, dtype=np.uint32)[0])
        seeds.append(s)
        kinds.append("image" if np.random.default_rng(s ^ 0x5EED).random() < fraction_8bit else "dicom")
    labels = [i % 2 for i in range(n)]
    columns = {
        "path": [""] * n,
        "label": labels,
        "mask_path": [""] * n,
        "synthetic_seed": seeds,
        "kind": kinds,
    }
    if subtypes:
        columns[SUBTYPE_COLUMN] = [[SUBTYPES[(i // 2) % len(SUBTYPES)]] if i % 2 else [] for i in range(n)]
    return columns


def stratified_split(
    columns: dict[str, list[Any]], fraction: float, seed: int
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Split record columns into (train, validation), stratified by label and seeded.

    With a ``series_group`` column (slice-context training) whole series go to one side, so validation
    never sees a neighbour of a training slice; the split is then as close to ``fraction`` and to the
    label ratio as whole series allow.

    Raises:
        InvalidInputError: a class has fewer than 2 examples (nothing to split).
    """
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    labels = np.asarray(columns["label"])
    counts = np.bincount(labels, minlength=2)
    if counts.min() < 2:
        raise InvalidInputError(
            f"cannot take a stratified validation split: class counts are normal={counts[0]}, "
            f"hemorrhage={counts[1]}; each class needs at least 2 examples (or give --validation_dir)"
        )
    pick = lambda idx: {k: [v[i] for i in sorted(idx)] for k, v in columns.items()}  # noqa: E731
    groups = columns.get("series_group")
    if groups is not None and len(set(groups)) < len(groups):
        folds = max(2, int(round(1.0 / max(fraction, 1e-6))))
        splitter = StratifiedGroupKFold(
            n_splits=min(folds, len(set(groups))), shuffle=True, random_state=seed
        )
        idx_train, idx_val = next(splitter.split(np.zeros(len(labels)), labels, groups))
        return pick(idx_train), pick(idx_val)
    n_val = max(2, int(round(fraction * len(labels))))
    n_val = min(n_val, len(labels) - 2)
    idx_train, idx_val = train_test_split(
        np.arange(len(labels)), test_size=n_val, stratify=labels, random_state=seed
    )
    return pick(idx_train), pick(idx_val)


def take(columns: dict[str, list[Any]], n: int | None, seed: int) -> dict[str, list[Any]]:
    """At most ``n`` records, chosen at random with ``seed`` (all when ``n`` is None or larger)."""
    total = len(columns["label"])
    if n is None or n >= total:
        return columns
    idx = sorted(np.random.default_rng(seed).choice(total, size=n, replace=False).tolist())
    return {k: [v[i] for i in idx] for k, v in columns.items()}


def class_weights_from_counts(counts: Sequence[int]) -> list[float]:
    """Balanced cross-entropy weights ``n / (2 n_c)`` ([normal, hemorrhage]); 1.0 for an empty class."""
    total = float(sum(counts))
    return [total / (len(counts) * c) if c > 0 else 1.0 for c in counts]


# ---------------------------------------------------------------------------------------------- decoding


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


def pil_to_png_bytes(image: Any) -> bytes:
    """Encode a PIL image (as ``datasets`` decodes Hub images) to PNG bytes for :func:`brain_ct.io.load_image`."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    if arr.dtype not in (np.uint8, np.uint16):
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise InvalidInputError(f"cannot encode a {arr.shape} {arr.dtype} image from the dataset as PNG")
    return buf.tobytes()


def _generate(key: tuple[Any, ...]) -> list[Any]:
    """The phantom(s) of a cache key ``(seed, label, size, k)`` or ``(seed, label, size, k, subtype)``.

    A requested subtype the generator cannot place for this seed (rare: a small head at a small size)
    gives way to a drawn one; the phantom's ``subtype`` says which, and the transform's targets follow it.
    """
    seed, label, size, k = key[:4]
    subtype = key[4] if len(key) > 4 and label else None

    def make(wanted: str | None) -> list[Any]:
        if k > 0:
            return generate_context(seed, size, k, hemorrhage=bool(label), subtype=wanted)
        return [generate_slice(seed, size, hemorrhage=bool(label), subtype=wanted)]

    try:
        phantoms = make(subtype)
    except InvalidInputError:
        if subtype is None:
            raise
        phantoms = make(None)
    for phantom in phantoms:
        # Only hu/mask and a few scalars are needed to render it; drop the large helper masks.
        phantom.mimic_mask = phantom.brain_mask = None
    return phantoms


@dataclass(eq=False)
class PhantomCache:
    """Phantoms generated ahead of training, keyed by (seed, label, size, context k).

    Each entry is ``[slice]``, or the 2k + 1 slices of a context stack. Fill it (:meth:`prefetch`) in the
    main process before the DataLoader forks its workers: the :class:`SliceTransform` holding it is shared
    with them copy-on-write. A record not in the cache is generated on demand (deterministic), so a cache
    only saves time.
    """

    entries: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict, repr=False)

    def get(self, seed: int, label: int, size: int, k: int = 0, subtype: str = "") -> list[Any]:
        """The phantom(s) of a synthetic record: from the cache, else generated now.

        ``subtype``: the subtype asked of the generator (subtype runs), "" to let it draw one.

        Returns:
            ``[slice]`` for single-slice records, the ``2k + 1`` slices (centre at index k) for context ones.
        """
        key = _phantom_key(seed, label, size, k, subtype)
        phantoms = self.entries.get(key)
        return phantoms if phantoms is not None else _generate(key)

    def prefetch(self, columns: dict[str, list[Any]], size: int, processes: int = 1, k: int = 0) -> int:
        """Generate the phantoms of the synthetic records in ``columns`` once, in parallel.

        Each epoch then only renders (DICOM encoding or the 8-bit figure) and augments, which is several
        times cheaper than generating. Memory: about 330 KB per slice at 256 px (× 2k + 1 for context stacks).

        Returns:
            The number of records whose phantoms were generated.
        """
        asked = columns.get(SUBTYPE_COLUMN) or [[]] * len(columns["label"])
        keys = [
            key
            for s, y, names in zip(columns["synthetic_seed"], columns["label"], asked, strict=True)
            if int(s) >= 0 and (key := _phantom_key(s, y, size, k, asked_subtype(names))) not in self.entries
        ]
        if not keys:
            return 0
        from tqdm.auto import tqdm

        if processes > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(processes) as pool:
                phantoms = list(
                    tqdm(pool.imap(_generate, keys, chunksize=8), total=len(keys), desc="phantoms")
                )
        else:
            phantoms = [_generate(key) for key in tqdm(keys, desc="phantoms")]
        self.entries.update(zip(keys, phantoms, strict=True))
        return len(keys)


def _phantom_key(seed: int, label: int, size: int, k: int, subtype: str) -> tuple[Any, ...]:
    key = (int(seed), int(label), int(size), int(k))
    return (*key, subtype) if subtype and label else key


def asked_subtype(names: Sequence[str] | None) -> str:
    """The one subtype a generated record asks for (see :func:`synthetic_records`), else ""."""
    named = [n for n in (names or ()) if n in SUBTYPES]
    return named[0] if len(named) == 1 else ""


def _png_bytes(image: np.ndarray) -> bytes:
    """uint8 grey / RGB / RGBA array → PNG bytes (lossless: exactly the pixels a person would upload)."""
    if image.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        image = cv2.cvtColor(image, code)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise InvalidInputError(f"cannot encode a rendered {image.shape} phantom as PNG")
    return buf.tobytes()


def synthetic_example(
    seed: int, label: int, kind: str, size: int, phantoms: PhantomCache | None = None
) -> tuple[Any, np.ndarray | None]:
    """One phantom, deterministically, as the model would receive it through ``brain_ct.io.load_image``.

    ``kind == "dicom"``: the phantom written as a CT DICOM (:func:`brain_ct.synthetic.to_dicom`) and read
    back — HU windows as channels. ``kind == "image"``: an 8-bit internet-style rendering
    (:func:`brain_ct.synthetic.render_internet`: window, size, borders, letters, arrows, captions, colour,
    JPEG quality all random per seed) saved as PNG and read back — the path a dropped PNG/JPG takes.
    ``phantoms``: where prefetched phantoms are looked up (None: generate now).

    Returns:
        ``(ct, mask)``: the :class:`~brain_ct.image.CTImage` and the lesion mask (float32 [H, W] on ``ct``'s
        grid; all zero for a normal slice).
    """
    cache = phantoms if phantoms is not None else PhantomCache()
    return _phantom_input(cache.get(seed, label, size)[0], seed, kind)


def synthetic_context_example(
    seed: int, label: int, kind: str, size: int, k: int, phantoms: PhantomCache | None = None
) -> tuple[Any, np.ndarray, list[Any | None]]:
    """A phantom slice with its k neighbours on each side, as a slice-context model receives them.

    ``kind == "dicom"``: every slice of the stack goes through DICOM and ``load_image``; for about one
    record in seven, seeded, one side's neighbours are missing, as at a scan's first or last slice or for
    a lone DICOM (the Predictor repeats the centre then). ``kind == "image"``: only the centre, rendered as
    an internet figure — a PNG/JPG has no neighbours. ``phantoms`` as in :func:`synthetic_example`.

    Returns:
        ``(ct, mask, neighbors)``: the centre slice, its lesion mask (as :func:`synthetic_example`) and the
        2k neighbours ``[s−k … s−1, s+1 … s+k]`` (None where missing).
    """
    stack = (phantoms if phantoms is not None else PhantomCache()).get(seed, label, size, k)
    return _context_input(stack, seed, kind, k)


def _context_input(
    stack: list[Any], seed: int, kind: str, k: int
) -> tuple[Any, np.ndarray, list[Any | None]]:
    ct, mask = _phantom_input(stack[k], seed, kind)
    if kind == "image":
        return ct, mask, [None] * (2 * k)
    drop = np.random.default_rng([int(seed), 3]).random(2) < 0.075
    below = [None if drop[0] else _phantom_input(ph, seed, kind)[0] for ph in stack[:k]]
    above = [None if drop[1] else _phantom_input(ph, seed, kind)[0] for ph in stack[k + 1 :]]
    return ct, mask, below + above


def _phantom_input(phantom: Any, seed: int, kind: str) -> tuple[Any, np.ndarray]:
    return encode_phantom(phantom, kind, np.random.default_rng([int(seed), 2]), f"phantom-{seed}")


def encode_phantom(phantom: Any, kind: str, rng: np.random.Generator, name: str) -> tuple[Any, np.ndarray]:
    """A phantom (generated, or a real slice wrapped as one) as the model receives it via ``load_image``.

    ``kind == "image"``: rendered as an internet figure with ``rng`` and read back from PNG;
    ``"dicom"``: written as a CT DICOM and read back. Returns ``(ct, mask float32 on ct's grid)``.
    """
    import io as _io

    if kind == "image":
        image, mask = render_internet(phantom, rng)
        data = _png_bytes(image)
    else:
        buf = _io.BytesIO()
        to_dicom(phantom).save_as(buf, enforce_file_format=True)
        data, mask = buf.getvalue(), phantom.mask
    ct = load_image(data, allow_unverified=True, name=name)
    return ct, mask.astype(np.float32)


def add_file_neighbors(columns: dict[str, list[Any]], k: int) -> dict[str, list[Any]]:
    """Add the ``neighbors`` column for slice-context training on files (image folders, RSNA folders).

    A slice's neighbours are the files next to it in its DICOM series, grouped and ordered from the
    headers (:func:`brain_ct.series.anatomical_groups`), wherever they sit on disk (a series' slices are
    usually split between ``hemorrhage/`` and ``normal/``). Call it on a whole listing before it is split
    or subsampled. Files outside any series (PNG/JPG, lone DICOMs) get none: the centre is repeated.

    Returns:
        ``columns`` with ``neighbors`` (per record, 2k paths, "" past either end of its series) and
        ``series_group`` (which series a record belongs to, so :func:`stratified_split` keeps series whole).
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


# ---------------------------------------------------------------------------------------------- real anatomy

#: Default number of real levels held out per series (7 of the 28 GE levels), spread base → vertex.
REAL_HOLDOUT_DEFAULT = 7


@dataclass
class RealSlice:
    """A real normal slice prepared once per process: HU at the working size and where lesions fit."""

    hu: np.ndarray  # float32 [size, size]-ish HU (longer side = size)
    pixel_mm: float
    space: Any  # brain_ct.synthetic.real_lesions.IntracranialSpace
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

    Columns: those of every source (``path`` = the real file, ``synthetic_seed`` −1 so the domain is
    "real", ``kind``) plus ``real_seed`` (≥ 0), ``real_subtype`` ("" = any that fits) and
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
    keys = (*_columns([], [], []), *REAL_COLUMNS, *((SUBTYPE_COLUMN,) if subtypes else ()))
    cols: dict[str, list[Any]] = {k: [] for k in keys}

    def add(path: str, label: int, kind: str, rseed: int, subtype: str, augment: bool) -> None:
        values = (path, label, "", -1, kind, rseed, subtype, augment, [subtype] if subtype else [])
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


#: Columns only real-anatomy records carry (others get the defaults in :func:`merge_records`).
REAL_COLUMNS: dict[str, Any] = {"real_seed": -1, "real_subtype": "", "real_augment": False}


def merge_records(*parts: dict[str, list[Any]] | None) -> dict[str, list[Any]]:
    """Concatenate record columns of several sources; a column one source lacks gets its neutral value
    (:data:`REAL_COLUMNS`' defaults, ``-1`` for ``synthetic_seed``, ``[]`` for lists, ``""`` for text;
    ``subtypes`` from the label: ``[]`` or ``["any"]``, a bleed of unknown subtype)."""
    present = [p for p in parts if p]
    keys = list(dict.fromkeys(k for p in present for k in p))
    out: dict[str, list[Any]] = {k: [] for k in keys}
    for p in present:
        n = len(p["label"])
        for k in keys:
            if k in p:
                out[k] += p[k]
            elif k == SUBTYPE_COLUMN:  # a source without subtypes: normal, or a bleed of unknown subtype
                out[k] += [[ANY] if int(y) else [] for y in p["label"]]
            else:
                out[k] += [_neutral(k, present)] * n
    return out


def _neutral(key: str, parts: list[dict[str, list[Any]]]) -> Any:
    if key in REAL_COLUMNS:
        return REAL_COLUMNS[key]
    if key == "synthetic_seed":
        return -1
    sample = next((p[key][0] for p in parts if p.get(key)), None)
    return [] if isinstance(sample, list) else "" if isinstance(sample, str) else None


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


@dataclass(frozen=True)
class HubSubtypes:
    """Where a Hub dataset keeps each example's subtypes (:func:`hub_subtypes`).

    Attributes:
        columns: ``(column, label name)`` pairs of 0/1 columns named like
            :data:`~brain_ct.labels.SUBTYPE_LABELS` (any case; ``any`` optional).
        sequence: a column holding a list of subtype names (strings, or class indices into ``names``).
        names: the class names of ``sequence`` when it is a list of ``ClassLabel``.
    """

    columns: tuple[tuple[str, str], ...] = ()
    sequence: str | None = None
    names: tuple[str, ...] | None = None

    def of(self, ex: dict[str, Any]) -> list[str]:
        """The subtype names of one example (checked; ``[]`` for a normal one)."""
        if self.sequence is not None:
            raw = ex[self.sequence] or []
            values = [self.names[int(v)] if self.names is not None else v for v in raw]
            return checked_subtypes(values, f"dataset column {self.sequence!r}")
        present = [name for column, name in self.columns if int(ex[column]) == 1]
        named = [n for n in present if n != ANY]
        if ANY in dict(map(reversed, self.columns)) and bool(named) != (ANY in present):
            raise InvalidInputError(
                f"dataset example with subtype columns {present}: 'any' must be 1 exactly when a subtype is 1"
            )
        return named

    @property
    def used_columns(self) -> list[str]:
        return [self.sequence] if self.sequence is not None else [c for c, _ in self.columns]


def hub_subtypes(features: Any, sequence_column: str = SUBTYPE_COLUMN) -> HubSubtypes | None:
    """How a Hub dataset names subtypes: the five subtype columns (0/1, RSNA's names, any case; an
    ``any`` column too if present), or ``sequence_column`` as a list of names; None when it does neither."""
    if features is None:
        return None
    by_name = {str(c).strip().lower(): str(c) for c in features}
    if set(SUBTYPES) <= set(by_name):
        return HubSubtypes(columns=tuple((by_name[n], n) for n in SUBTYPE_LABELS if n in by_name))
    feature = features.get(sequence_column)
    if feature is None:
        return None
    inner = getattr(feature, "feature", None)
    if inner is None:
        raise InvalidInputError(
            f"dataset column {sequence_column!r} (--subtypes_column) must be a list of subtype names; "
            f"it is {type(feature).__name__}"
        )
    names = getattr(inner, "names", None)
    return HubSubtypes(sequence=sequence_column, names=tuple(names) if names else None)


@dataclass(frozen=True)
class Decoded:
    """One record decoded: the slice, its lesion mask (or None), label (0/1), neighbours (slice context,
    else None) and subtype names (``[]`` normal; None when the source names none)."""

    ct: CTImage
    mask: np.ndarray | None
    label: int
    neighbors: list[CTImage | None] | None
    subtypes: list[str] | None


@dataclass
class SliceTransform:
    """The ``set_transform`` callable: records → model inputs (``pixel_values``, ``labels``, …).

    ``labels`` is the class index (0/1) for a binary model and the six 0/1 targets (float, always in
    :data:`~brain_ct.labels.SUBTYPE_LABELS` order, whatever the model's logit order) for a subtype model
    (``settings.is_multi_label``).

    Args:
        settings: the model's preprocessing (windows, image size, mean/std, context slices) and label set,
            as the Predictor reads them from the saved config.
        augmenter: training augmentation, or None (evaluation).
        with_masks: also return ``mask`` (float32 [size, size]) and ``has_mask`` (bool) per example.
        allow_unverified: skip brain_ct's head-CT plausibility check (framing is always done).
        synthetic_size: phantom side in pixels for synthetic records.
        image_column, label_map: for Hub datasets: the image column and label value → 0/1.
        hub_subtypes: for Hub datasets with subtypes: where they are (:func:`hub_subtypes`).
        phantoms: prefetched phantoms for synthetic records (:class:`PhantomCache`), or None to
            generate each when it is read.
    """

    settings: ModelSettings
    augmenter: Augmenter | None = None
    with_masks: bool = False
    allow_unverified: bool = True
    synthetic_size: int = 256
    image_column: str | None = None
    label_column: str = "label"
    label_map: dict[Any, int] | None = None
    hub_subtypes: HubSubtypes | None = None
    phantoms: PhantomCache | None = field(default=None, repr=False)
    _load_image: Callable[..., Any] | None = field(default=None, repr=False)

    def _loader(self) -> Callable[..., Any]:
        if self._load_image is None:
            self._load_image = load_image
        return self._load_image

    def load(
        self, ex: dict[str, Any], rng: np.random.Generator | None = None
    ) -> tuple[Any, np.ndarray | None, int]:
        """Decode one record into ``(CTImage, mask on the image grid or None, label)``."""
        d = self.decode(ex, rng)
        return d.ct, d.mask, d.label

    def load_with_context(
        self, ex: dict[str, Any], rng: np.random.Generator | None = None
    ) -> tuple[Any, np.ndarray | None, int, list[Any] | None]:
        """Decode one record into ``(CTImage, mask or None, label, neighbours)`` (:meth:`decode`)."""
        d = self.decode(ex, rng)
        return d.ct, d.mask, d.label, d.neighbors

    def decode(self, ex: dict[str, Any], rng: np.random.Generator | None = None) -> Decoded:
        """Decode one record (see :class:`Decoded`).

        The neighbours are None for single-slice training, else the 2k slices around the centre (None
        entries where the record has none). ``rng`` (training) draws a fresh variant of a real-anatomy
        record each time; without it the record's own seed makes it the same every time. Generated
        examples name the subtype actually generated; file records their ``subtypes`` column.
        """
        k = self.settings.context_slices
        no_context = [None] * (2 * k) if k else None
        if int(ex.get("real_seed", -1)) >= 0:
            ct, mask, subtype = real_anatomy_decode(ex, self.synthetic_size, rng)
            names = [subtype] if subtype else []
            return Decoded(ct, mask if self.with_masks else None, int(ex["label"]), no_context, names)
        if self.image_column is not None:  # a Hub dataset example
            raw = ex[self.image_column]
            data = raw if isinstance(raw, (bytes, bytearray)) else pil_to_png_bytes(raw)
            ct = self._loader()(bytes(data), allow_unverified=self.allow_unverified)
            names = self.hub_subtypes.of(ex) if self.hub_subtypes is not None else None
            if self.label_column in ex:
                value = ex[self.label_column]
                label = self.label_map[value] if self.label_map is not None else int(value)
            else:  # a dataset with subtype columns only: the label is "any"
                label = int(bool(names))
            return Decoded(ct, None, label, no_context, names)
        label = int(ex["label"])
        if int(ex.get("nifti_slice") if ex.get("nifti_slice") is not None else -1) >= 0:
            ct, mask, neighbors = nifti_example(
                ex["path"],
                ex["mask_path"],
                int(ex["nifti_slice"]),
                with_mask=self.with_masks,
                k=k,
                allow_unverified=self.allow_unverified,
            )
            return Decoded(ct, mask, label, neighbors, None)
        if int(ex.get("synthetic_seed", -1)) >= 0:
            seed, kind = int(ex["synthetic_seed"]), ex["kind"]
            cache = self.phantoms if self.phantoms is not None else PhantomCache()
            stack = cache.get(seed, label, self.synthetic_size, k, asked_subtype(ex.get(SUBTYPE_COLUMN)))
            if k:
                ct, mask, neighbors = _context_input(stack, seed, kind, k)
            else:
                (ct, mask), neighbors = _phantom_input(stack[0], seed, kind), None
            subtype = stack[k].subtype
            return Decoded(
                ct, mask if self.with_masks else None, label, neighbors, [subtype] if subtype else []
            )
        ct = self._loader()(ex["path"], allow_unverified=self.allow_unverified)
        mask = None
        if self.with_masks and ex.get("mask_path"):
            mask = read_mask(ex["mask_path"], ct.display.shape[:2])
        neighbors = None
        if k:
            # A neighbour is context, not the example: one that will not load is left out (repeated centre).
            paths = list(ex.get("neighbors") or [""] * (2 * k))
            neighbors = [self._load_neighbor(path) for path in paths]
        names = ex.get(SUBTYPE_COLUMN)
        return Decoded(ct, mask, label, neighbors, list(names) if names is not None else None)

    def targets(self, decoded: Decoded) -> int | list[float]:
        """The ``labels`` entry: the class index (binary), or the six targets (subtype model).

        Raises:
            InvalidInputError: a subtype model's example that names no subtype for its bleed.
        """
        if not self.settings.is_multi_label:
            return decoded.label
        names = decoded.subtypes
        if names is None or (decoded.label == 1 and not set(names) & set(SUBTYPES)):
            raise InvalidInputError(
                f"{decoded.ct.name or 'a slice'}: a subtype model's example needs its subtypes, and this "
                "one has none (see check_subtype_records)"
            )
        return [float(v) for v in subtype_vector(names)]

    def _load_neighbor(self, path: str) -> Any | None:
        if not path:
            return None
        try:
            return self._loader()(path, allow_unverified=True)
        except InvalidInputError as exc:
            logger.warning("slice-context neighbour %s skipped: %s", Path(path).name, exc)
            return None

    def encode(
        self,
        ct: CTImage,
        mask: np.ndarray | None,
        rng: np.random.Generator | None = None,
        neighbors: Sequence[CTImage | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One slice → (normalised float32 [C, S, S], mask float32 [S, S] or None), augmented if training.

        The channels are :func:`brain_ct.preprocess.model_input` — exactly the Predictor's input — with the
        augmentation drawn for this example as its hook (the same geometry for every stacked slice and
        the mask).
        """
        size = self.settings.image_size
        grid_mask = mask_to_model_grid(mask, ct, size) if mask is not None else None
        if self.augmenter is None:
            return model_input(ct, self.settings, neighbors), grid_mask
        draw = self.augmenter.draw(rng if rng is not None else np.random.default_rng(), size)
        pv = model_input(ct, self.settings, neighbors, augment=draw)
        return pv, (draw.mask(grid_mask) if grid_mask is not None else None)

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        import torch

        n = len(next(iter(batch.values())))
        out: dict[str, list[Any]] = {"pixel_values": [], "labels": [], "input_kind": [], "domain": []}
        if self.with_masks:
            out["mask"], out["has_mask"] = [], []
        # Draw augmentation randomness from torch's RNG: the DataLoader seeds it per worker and epoch
        # from the Trainer's seed, so runs are reproducible and workers don't repeat each other.
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item())) if self.augmenter else None
        for i in range(n):
            ex = {k: v[i] for k, v in batch.items()}
            decoded = self.decode(ex, rng)
            ct, label = decoded.ct, decoded.label
            pv, grid_mask = self.encode(ct, decoded.mask, rng, decoded.neighbors)
            out["pixel_values"].append(torch.from_numpy(np.ascontiguousarray(pv)))
            out["labels"].append(self.targets(decoded))
            out["input_kind"].append(INPUT_KINDS.index("dicom" if ct.hu is not None else "image"))
            out["domain"].append(
                DOMAINS.index("phantom" if int(ex.get("synthetic_seed", -1)) >= 0 else "real")
            )
            if self.with_masks:
                has = grid_mask is not None and label == 1 and float(grid_mask.max()) > 0
                out["mask"].append(
                    torch.from_numpy(
                        grid_mask if has else np.zeros((self.settings.image_size,) * 2, np.float32)
                    )
                )
                out["has_mask"].append(bool(has))
        return out


def hf_label_map(features: Any, label_column: str) -> dict[Any, int] | None:
    """Map a Hub dataset's label values to 0/1 by class name; None when labels are plain 0/1 ints."""
    feat = features.get(label_column) if features is not None else None
    names = getattr(feat, "names", None)
    if names:
        return {i: class_id(n, f"dataset label column {label_column!r}") for i, n in enumerate(names)}
    return None


# ---------------------------------------------------------------------------------------------- splits


@dataclass
class Splits:
    """The data of one run, before transforms are attached.

    Attributes:
        train, validation, test: ``datasets.Dataset`` (or ``IterableDataset`` when streaming) or None.
        class_counts: [normal, hemorrhage] training counts, or None when unknown (streaming).
        description: what the data is, for the config's ``brain_ct_trained_on`` and the model card.
        synthetic: True when the training data is generated phantoms.
        hub: True for a Hub dataset (examples carry images, not file records).
        generated_masks: True when lesion masks come with generated examples (phantoms, lesions painted
            into real anatomy) rather than from mask files.
        label_set: ``"binary"`` or ``"subtypes"`` (``--labels``, ``auto`` resolved from the data).
        subtype_counts: training positives per label in :data:`~brain_ct.labels.SUBTYPE_LABELS` order
            (subtype runs; None when unknown: streaming).
        hub_subtypes: where a Hub dataset keeps its subtypes (subtype runs on ``--dataset_name``).
    """

    train: Any
    validation: Any
    test: Any
    class_counts: list[int] | None
    description: str
    synthetic: bool = False
    hub: bool = False
    label_map: dict[Any, int] | None = None
    generated_masks: bool = False
    label_set: str = "binary"
    subtype_counts: list[int] | None = None
    hub_subtypes: HubSubtypes | None = None


def to_dataset(columns: dict[str, list[Any]] | None) -> Any:
    if columns is None:
        return None
    import datasets

    return datasets.Dataset.from_dict(columns)


def _counts(columns: dict[str, list[Any]]) -> list[int]:
    return np.bincount(np.asarray(columns["label"], dtype=np.int64), minlength=2)[:2].tolist()


def resolve_label_set(mode: str, train: dict[str, list[Any]] | None) -> str:
    """``--labels``: ``binary`` / ``subtypes`` as given; ``auto`` → subtypes when the training records name
    subtypes (RSNA subtype rows, subtype folders, ``metadata.jsonl``), else binary. Phantoms and real
    anatomy carry subtypes only when ``--labels subtypes`` asks them to."""
    if mode not in LABEL_MODES:
        raise InvalidInputError(f"--labels {mode!r} is unknown; choose one of {', '.join(LABEL_MODES)}")
    if mode != "auto":
        return mode
    return "subtypes" if has_subtypes(train) else "binary"


def finish_label_set(
    label_set: str, parts: dict[str, dict[str, list[Any]] | None]
) -> dict[str, dict[str, list[Any]] | None]:
    """Binary runs drop the ``subtypes`` column (their records stay as before); subtype runs check every
    split (:func:`check_subtype_records`)."""
    out = {}
    for name, columns in parts.items():
        if columns is not None and label_set == "binary":
            columns = {k: v for k, v in columns.items() if k != SUBTYPE_COLUMN}
        elif columns is not None:
            check_subtype_records(columns, f"the {name} data")
        out[name] = columns
    return out


def build_splits(data_args: DataArguments, seed: int) -> Splits:
    """Collect train / validation / test records from the data arguments (see :class:`train.args.DataArguments`).

    A missing validation split is a stratified seeded split of the training records
    (``--validation_split``); a Hub dataset uses its own splits when it has them. ``--labels`` decides the
    label set (:func:`resolve_label_set`); a subtype run needs every bleed's subtypes in every split.
    """
    a = data_args
    k = a.context_slices
    mode = getattr(a, "labels", "auto")
    if a.dataset_name is not None:
        if k:
            raise InvalidInputError(
                "--context_slices needs slices in series order: DICOM series (--train_dir or --dicom_dir) "
                "or phantoms (--synthetic_train); a Hub image dataset carries no series"
            )
        return _build_hub_splits(a, seed)

    def files(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return add_file_neighbors(columns, k) if k else columns

    test = None
    synthetic = False
    real_dir = a.real_anatomy_dir
    if real_dir is not None and k:
        raise InvalidInputError("--real_anatomy_dir does not support --context_slices yet")
    if a.synthetic_train <= 0 and a.dicom_dir is None and a.train_dir is None and a.nifti_dir is None:
        train, desc = None, ""  # real anatomy alone
    elif a.synthetic_train > 0:
        synthetic = True
        train = synthetic_records(
            a.synthetic_train, "train", a.synthetic_seed, a.synthetic_8bit_fraction, mode == "subtypes"
        )
        desc = (
            f"synthetic phantoms: {a.synthetic_train} slices generated by brain_ct.synthetic (seed "
            f"{a.synthetic_seed}), {a.synthetic_8bit_fraction:.0%} fed as 8-bit internet-style renderings, "
            "the rest as DICOM HU"
        )
    elif a.nifti_dir is not None:
        if mode == "subtypes":
            raise InvalidInputError(
                "--nifti_dir gives binary slice labels only (which voxel-mask value is which subtype is not "
                "recorded for these data sets); train with --labels binary"
            )
        train = nifti_records(
            a.nifti_dir,
            mask_suffix=a.mask_suffix,
            mask_dir=a.nifti_mask_dir,
            min_lesion_area=a.min_lesion_area,
            allow_unverified=not a.verify_head_ct,
        )
        n_volumes, counts = len(set(train["series_group"])), _counts(train)
        desc = (
            f"NIfTI volumes {Path(a.nifti_dir).name!r} ({n_volumes} volumes, {len(train['label'])} slices: "
            f"{counts[0]} normal, {counts[1]} hemorrhage), slice labels from voxel masks (at least "
            f"{a.min_lesion_area} lesion pixels = hemorrhage)"
        )
    elif a.dicom_dir is not None:
        train = files(scan_rsna(a.dicom_dir, a.labels_csv, {"auto": None, "binary": False}.get(mode, True)))
        desc = f"RSNA 2019 layout DICOM folder {Path(a.dicom_dir).name!r} ({len(train['label'])} slices)"
    else:
        train = files(scan_imagefolder(a.train_dir, a.mask_dir))
        desc = f"image folder {Path(a.train_dir).name!r} ({len(train['label'])} slices)"
    train = take(train, a.max_train_samples, seed) if train is not None else None
    label_set = resolve_label_set(mode, train)
    named = label_set == "subtypes"
    if named and train is not None:  # before a validation split takes part of it: name every such slice
        check_subtype_records(train, "the training data")

    validation = None
    if a.validation_dir is not None:
        validation = files(scan_imagefolder(a.validation_dir, None))
    elif a.synthetic_validation > 0:
        validation = synthetic_records(
            a.synthetic_validation, "validation", a.synthetic_seed, a.synthetic_8bit_fraction, named
        )
    elif train is not None:
        train, validation = stratified_split(train, a.validation_split, seed)
    validation = take(validation, a.max_eval_samples, seed) if validation is not None else None

    if a.test_dir is not None:
        test = files(scan_imagefolder(a.test_dir, None))
    elif a.synthetic_test > 0:
        test = synthetic_records(a.synthetic_test, "test", a.synthetic_seed, a.synthetic_8bit_fraction, named)
    if test is not None:
        test = take(test, a.max_eval_samples, seed)
    if real_dir is not None:
        # Real levels are added after the other sources are split, so a held-out level never reaches
        # training through a stratified split and --max_*_samples never drops the real anatomy.
        real = {
            "size": a.synthetic_size,
            "variants": a.real_anatomy_variants,
            "holdout": a.real_anatomy_holdout,
            "eval_variants": a.real_anatomy_eval_variants,
            "fraction_8bit": a.synthetic_8bit_fraction,
            "subtypes": named,
        }
        real_train = real_anatomy_records(real_dir, "train", seed, **real)
        real_val = real_anatomy_records(real_dir, "validation", seed, **real)
        train = merge_records(train, real_train)
        validation = merge_records(validation, real_val) if real_val["label"] or validation else None
        if a.real_anatomy_test:
            test = merge_records(test, real_anatomy_records(real_dir, "test", seed, **real))
        n_train = len(set(real_train["path"]))
        n_held = len(set(real_val["path"]))
        desc = (desc + "; " if desc else "") + (
            f"real anatomy: {n_train} normal head-CT levels of {Path(real_dir).name!r}, "
            f"{a.real_anatomy_variants} variants each per epoch (half with a painted lesion; deformed, "
            f"re-scanned, {a.synthetic_8bit_fraction:.0%} as 8-bit figures); {n_held} levels held out"
        )
    counts = _counts(train)
    if min(counts) == 0:
        raise InvalidInputError(
            f"the training data has only one class (normal={counts[0]}, hemorrhage={counts[1]}); "
            "it needs slices of both classes"
        )
    parts = finish_label_set(label_set, {"training": train, "validation": validation, "test": test})
    return Splits(
        to_dataset(parts["training"]),
        to_dataset(parts["validation"]),
        to_dataset(parts["test"]),
        counts,
        desc,
        synthetic,
        generated_masks=synthetic or real_dir is not None,
        label_set=label_set,
        subtype_counts=subtype_counts(parts["training"]) if named else None,
    )


def _build_hub_splits(a: Any, seed: int) -> Splits:
    import datasets

    kwargs: dict[str, Any] = {"streaming": a.streaming}
    loaded = datasets.load_dataset(a.dataset_name, a.dataset_config_name, **kwargs)
    names = list(loaded.keys())
    if a.train_split not in loaded:
        raise InvalidInputError(
            f"dataset {a.dataset_name!r} has no split {a.train_split!r} (--train_split); it has {names}"
        )
    train = loaded[a.train_split]
    features = train.features
    mode = getattr(a, "labels", "auto")
    found = hub_subtypes(features, getattr(a, "subtypes_column", SUBTYPE_COLUMN))
    label_set = resolve_label_set(mode, {SUBTYPE_COLUMN: [list(SUBTYPES)]} if found else None)
    if label_set == "subtypes" and found is None:
        raise InvalidInputError(
            f"dataset {a.dataset_name!r} names no subtypes: it needs the five 0/1 columns {', '.join(SUBTYPES)} "
            f"or a column of subtype-name lists (--subtypes_column); its columns are {list(features or [])}"
        )
    required = [(a.image_column, "--image_column")]
    if found is None or (features is not None and a.label_column in features):
        required.append((a.label_column, "--label_column"))  # optional when subtypes give the label
    for col, flag in required:
        if features is not None and col not in features:
            raise InvalidInputError(
                f"dataset {a.dataset_name!r} has no column {col!r} ({flag}); its columns are {list(features)}"
            )
    has_label = features is None or a.label_column in features
    label_map = hf_label_map(features, a.label_column) if has_label else None

    def pick(name: str | None, default: str) -> Any:
        key = name if name is not None else (default if default in loaded else None)
        if name is not None and name not in loaded:
            raise InvalidInputError(f"dataset {a.dataset_name!r} has no split {name!r}; it has {names}")
        return loaded[key] if key is not None else None

    validation = pick(a.validation_split_name, "validation")
    test = pick(a.test_split_name, "test")
    keep = [a.image_column] + ([a.label_column] if has_label else []) + (found.used_columns if found else [])
    if a.streaming:
        if validation is None:
            n_val = a.max_eval_samples or 500
            logger.warning(
                "streaming %s without a validation split: the first %d examples of the stream are "
                "held out for validation (not stratified: make sure the stream is shuffled)",
                a.dataset_name,
                n_val,
            )
            validation, train = train.take(n_val), train.skip(n_val)
        elif a.max_eval_samples:
            validation = validation.take(a.max_eval_samples)
        if a.max_train_samples:
            train = train.take(a.max_train_samples)
        train = train.shuffle(seed=seed, buffer_size=1000)
        counts = sub_counts = None
    else:
        train = train.select_columns(keep)
        if validation is None:
            if label_map is not None:
                parts = train.train_test_split(
                    test_size=a.validation_split, seed=seed, stratify_by_column=a.label_column
                )
            else:
                parts = train.train_test_split(test_size=a.validation_split, seed=seed)
            train, validation = parts["train"], parts["test"]
        if a.max_train_samples:
            train = train.shuffle(seed=seed).select(range(min(a.max_train_samples, len(train))))
        if a.max_eval_samples:
            validation = validation.select(range(min(a.max_eval_samples, len(validation))))
            if test is not None:
                test = test.select(range(min(a.max_eval_samples, len(test))))
        counts, sub_counts = _hub_counts(train, a.label_column if has_label else None, label_map, found)
    desc = f"Hugging Face dataset {a.dataset_name!r}" + (
        f" ({a.dataset_config_name})" if a.dataset_config_name else ""
    )
    return Splits(
        train,
        validation,
        test,
        counts,
        desc,
        synthetic=False,
        hub=True,
        label_map=label_map,
        label_set=label_set,
        subtype_counts=sub_counts if label_set == "subtypes" else None,
        hub_subtypes=found if label_set == "subtypes" or not has_label else None,
    )


def _hub_counts(
    train: Any, label_column: str | None, label_map: dict[Any, int] | None, found: HubSubtypes | None
) -> tuple[list[int], list[int] | None]:
    """[normal, hemorrhage] counts of a Hub training split, and its positives per subtype label."""
    counts = [0, 0]
    if label_column is not None:
        for v in train[label_column]:
            counts[label_map[v] if label_map is not None else int(v)] += 1
    if found is None:
        return counts, None
    rows = train.select_columns(found.used_columns).to_dict()
    names = [found.of({k: v[i] for k, v in rows.items()}) for i in range(len(train))]
    if label_column is None:
        counts = [sum(1 for n in names if not n), sum(1 for n in names if n)]
    return counts, subtype_counts({SUBTYPE_COLUMN: names})


def attach_transform(dataset: Any, transform: SliceTransform) -> Any:
    """Decode lazily: ``set_transform`` on a map-style dataset, a batched ``map`` on a streaming one."""
    if dataset is None:
        return None
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        columns = list(dataset.features) if dataset.features is not None else None
        return dataset.map(transform, batched=True, batch_size=16, remove_columns=columns)
    dataset.set_transform(transform)
    return dataset


# ---------------------------------------------------------------------------------------------- file check


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


# ---------------------------------------------------------------------------------------------- folds


def fold_splits(
    columns: dict[str, list[Any]], k: int, seed: int
) -> list[tuple[dict[str, list[Any]], dict[str, list[Any]]]]:
    """``k`` (train, validation) pairs of record columns for ``--folds k``: seeded k-fold cross-validation,
    stratified by label; every record is in exactly one validation fold.

    Records that must not straddle folds share a group, as in :func:`stratified_split`: a ``series_group``
    (the slices of one DICOM series or NIfTI volume, so a fold model never validates on a neighbour of a
    slice it trained on) and, for real-anatomy records (``real_seed`` ≥ 0), their ``path`` (the variants of
    one real level). Phantoms and loose files are groups of their own.

    Raises:
        InvalidInputError: ``k`` < 2, ``k`` larger than the smaller class count or than the number of
            groups, or whole groups that cannot give every fold both classes.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(columns["label"], dtype=np.int64)
    counts = np.bincount(labels, minlength=2)
    if k < 2:
        raise InvalidInputError(f"--folds must be 2 or more (each fold model validates on one fold); got {k}")
    if counts.min() < k:
        name = ("normal", "hemorrhage")[int(counts.argmin())]
        raise InvalidInputError(
            f"--folds {k}: the training records have only {counts.min()} {name} slice(s) (normal={counts[0]}, "
            f"hemorrhage={counts[1]}); every fold needs both classes to choose its threshold on, so "
            f"--folds can be at most {counts.min()}"
        )
    series = columns.get("series_group") or [None] * len(labels)
    real = columns.get("real_seed") or [-1] * len(labels)
    keys = [
        ("series", g) if g is not None else ("level", p) if int(r) >= 0 else ("record", i)
        for i, (g, r, p) in enumerate(zip(series, real, columns["path"], strict=True))
    ]
    codes = {key: n for n, key in enumerate(dict.fromkeys(keys))}
    groups = np.asarray([codes[key] for key in keys])
    if len(codes) < len(keys):
        if len(codes) < k:
            raise InvalidInputError(
                f"--folds {k}: the training records form only {len(codes)} series / real levels, which "
                f"stay whole; use --folds {len(codes)} or fewer"
            )
        splitter: Any = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    pick = lambda idx: {key: [v[i] for i in sorted(idx)] for key, v in columns.items()}  # noqa: E731
    grouped = groups if isinstance(splitter, StratifiedGroupKFold) else None
    out = []
    for i, (idx_train, idx_val) in enumerate(splitter.split(np.zeros(len(labels)), labels, grouped)):
        for part, idx in (("validation", idx_val), ("training", idx_train)):
            fold_counts = np.bincount(labels[idx], minlength=2)
            if fold_counts.min() == 0:
                raise InvalidInputError(
                    f"--folds {k}: fold {i}'s {part} records hold only one class (normal={fold_counts[0]}, "
                    f"hemorrhage={fold_counts[1]}) because whole series / real levels stay together; "
                    "use fewer --folds"
                )
        out.append((pick(idx_train), pick(idx_val)))
    return out
