"""RSNA 2019 records: ``ID_<image>.dcm`` files labelled by the competition's CSV (``any`` and five subtypes).

Records have ``source`` ``"file"``: they are DICOM files, decoded as any file is.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from brain_ct.errors import InvalidInputError
from brain_ct.labels import ANY, SUBTYPE_LABELS, SUBTYPES
from train.data.records import file_columns

logger = logging.getLogger(__name__)


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
    return file_columns(paths, ys, [""] * len(paths), names)
