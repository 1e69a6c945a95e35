"""``python -m brain_ct predict PATH [PATH ...]``: hemorrhage prediction with Grad-CAM for slices.

Output, one entry per input in the order given:

* default: a table (file, label, P(hemorrhage), threshold, strongest heatmap region), then the
  explanation of each slice;
* ``--json``: JSON Lines on stdout, one object per input: ``file`` (the path as given),
  ``label``, ``probability``, ``threshold``, ``regions``, ``explanation``, ``source``, ``meta``
  (allow-listed, non-identifying), ``model``, ``head_check`` (``"passed"``, or ``"skipped"`` with
  ``--allow-unverified``: the table then starts with the caveat the app and the PDF show), and with ``--heatmaps DIR`` also ``heatmap``: the path
  of a float32 ``.npy`` [H, W] in [0, 1] on the input's own pixel grid. A failed input gives
  ``{"file": ..., "error": {"type": ..., "message": ...}}`` and the others still run.

``label`` is "hemorrhage" exactly when ``probability >= threshold``.

Subtype models (RSNA's ``any`` + five subtypes, :mod:`brain_ct.labels`) add ``subtypes`` (``{name: p}``
for epidural, intraparenchymal, intraventricular, subarachnoid, subdural) and ``heatmap_target`` (the
label the heatmap explains) to each record and each slice of a scan, and the table gains a ``subtypes``
column (those at or above :data:`brain_ct.wording.SUBTYPE_SHOWN`, else the top one).
``--heatmap-target NAME`` (``any`` or a subtype) chooses what the heatmaps explain; a binary model
refuses a subtype with exit code 2 before any input is read. Ensembles add ``members`` (each member's
P(hemorrhage) and own threshold). A binary single model's output is exactly what it always was.

Exit codes: 0 every input succeeded; 1 an input failed (reported in its row / JSON line), an output
asked for (``--heatmaps-nifti``, ``--dicom-out``) could not be written for it, or the model could not
be loaded (message on stderr); 2 usage error (bad arguments). Files inside a scan folder or zip that
are not part of the scan (a LICENSE, a README, another series) are listed with the scan and never
change the exit code. A head-CT refusal names ``--allow-unverified``.

A folder or ``.zip`` is a whole CT series (see :mod:`brain_ct.series`): it prints ONE object with
the scan-level ``label`` and ``probability`` (documented rule in :class:`brain_ct.scan.ScanRule`),
``positive_slices`` (0-based indices), ``n_slices``, ``series_id``, ``head_check``, (subtype models)
``subtypes`` ``{name: {"probability", "slices"}}`` and ``subtype_explanation`` (:class:`brain_ct.scan.SubtypeScan`),
``errors`` (files inside it that
could not be read: ``file``, ``type``, ``message``), ``skipped`` (readable files that are not part of
the series read: ``file``, ``reason``, e.g. "other series 3f2a…, 1 slice") and ``slices``: one
object per slice in anatomical order (inferior to superior, by position along the slice normal),
each with ``file`` (its name inside the zip or folder when that name passes the identifier
screening, else "slice N at Z mm"), ``index`` and the per-slice fields above (and ``heatmap`` with
``--heatmaps``).

Slice numbers: everything a person reads (the table, the explanations) counts slices from 1, as
viewers do; JSON ``index`` and ``positive_slices`` are 0-based positions in ``slices``.

A NIfTI volume (``.nii`` / ``.nii.gz``, see :mod:`brain_ct.nifti`) is a whole scan too: its axial
slices are read inferior to superior and named ``<file>#N``. A folder holding only NIfTI volumes
stands for its volumes: one scan object per volume.

Results for viewers (scans only, i.e. a folder, zip or NIfTI volume, except ``--dicom-out``):

* ``--heatmaps-nifti PATH``: the scan's heatmaps as one float32 NIfTI volume on the scan's own
  voxel grid and affine (:func:`brain_ct.nifti_grid.write_heatmap_nifti`; opens aligned over the scan in
  3D Slicer or ITK-SNAP). PATH ending in ``.nii`` / ``.nii.gz`` is the file (one scan input); any
  other PATH is a folder receiving ``<scan>_heatmap.nii.gz`` per scan. The record gets
  ``heatmap_nifti`` (the path written).
* ``--dicom-out DIR``: for DICOM input (a DICOM slice, or a DICOM folder / zip), each slice's overlay
  as a DICOM Secondary Capture image ``DIR/<input>_NNNN.dcm`` (:mod:`brain_ct.viewer_out`): new UIDs
  and no patient attribute; ``--keep-uids`` puts them in the source study and refers to the source
  series and images. The record gets ``dicom_overlays`` (the paths written).

An output that cannot be written leaves the prediction in its record, adds ``output_errors``
(``output``, ``type``, ``message``), prints the message on stderr and makes the exit code 1.

Several series in one folder or zip: ``--list-series PATH ...`` lists them (no model is loaded):
hashed series id (the same in every run for the same files), slices, orientation, contrast,
modality, description (when the privacy allow-list permits it) and which one is read by default;
``--series-uid ID`` reads another one. With ``--json`` the listing is one object per path:
``{"file": ..., "series": [{"series_id", "n_slices", "orientation", "contrast", "modality",
"description", "default"}, ...]}``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from brain_ct.cli.common import add_reading_arguments, load_predictor
from brain_ct.collect import natural_key
from brain_ct.errors import BrainCTError
from brain_ct.labels import SUBTYPES
from brain_ct.nifti import is_nifti
from brain_ct.nifti_grid import NiftiGrid, grid_from_series, write_heatmap_nifti
from brain_ct.scan import model_output_fields, predict_series
from brain_ct.series import Series, list_series, read_series
from brain_ct.sniff import NIFTI_SUFFIXES
from brain_ct.viewer_out import source_reference, write_dicom_overlays
from brain_ct.wording import UNVERIFIED_NOTE, plural, subtype_list

if TYPE_CHECKING:
    from brain_ct.image import CTImage
    from brain_ct.predictor import Prediction, Predictor

#: Show a progress bar on stderr from this many inputs on (and only on a terminal).
PROGRESS_MIN_FILES = 4


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``predict`` on the ``python -m brain_ct`` parser."""
    parser = subparsers.add_parser(
        "predict",
        help="predict hemorrhage with a Grad-CAM heatmap for CT slices (DICOM, PNG, JPG, ...)",
        description=(
            "Predict intracranial hemorrhage for each head-CT slice given, with a Grad-CAM heatmap, "
            "the regions it points to and a short explanation. Research and education aid, not a diagnosis."
        ),
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help=(
            "CT slice files (DICOM, PNG, JPG, BMP, TIFF, WebP), or a whole scan: a folder / .zip of slices or "
            "a NIfTI volume (.nii / .nii.gz)"
        ),
    )
    add_reading_arguments(parser)
    parser.add_argument(
        "--json", action="store_true", help="write JSON Lines (one object per input) to stdout"
    )
    parser.add_argument(
        "--list-series",
        action="store_true",
        help="only list the DICOM series in each folder or zip (ids for --series-uid); loads no model",
    )
    parser.add_argument(
        "--heatmaps",
        type=Path,
        default=None,
        metavar="DIR",
        help="save each heatmap as float32 .npy [H, W] in DIR",
    )
    parser.add_argument(
        "--heatmaps-nifti",
        type=Path,
        default=None,
        metavar="PATH",
        help=(
            "write each scan's heatmaps as one float32 NIfTI volume on the scan's grid (opens aligned in "
            "3D Slicer / ITK-SNAP): PATH.nii.gz for one scan, or a folder (<scan>_heatmap.nii.gz per scan); "
            "a volume that cannot be written (e.g. unevenly spaced slices) is reported and makes the exit code 1"
        ),
    )
    parser.add_argument(
        "--dicom-out",
        type=Path,
        default=None,
        metavar="DIR",
        help=(
            "write the overlays of DICOM input as DICOM Secondary Capture images into DIR (new UIDs, "
            "no patient attributes), for a PACS or DICOM viewer"
        ),
    )
    parser.add_argument(
        "--keep-uids",
        action="store_true",
        help=(
            "with --dicom-out: put the overlays into the source study and refer to the source series and "
            "images (copies those UIDs; nothing else of the source)"
        ),
    )
    parser.set_defaults(func=run)
    return parser


#: The library's way of naming the head-CT override (:data:`brain_ct.framing.OVERRIDE_HINT`, and the
#: reader's refusal of a DICOM without Modality, which adds the app's box), and the CLI's.
_LIBRARY_OVERRIDE = re.compile(r"pass allow_unverified=True(?: / tick 'allow unusual images')?")
CLI_OVERRIDE = "rerun with --allow-unverified"


def cli_message(text: str) -> str:
    """A library message as the CLI shows it: the head-CT override named as the CLI's flag."""
    return _LIBRARY_OVERRIDE.sub(CLI_OVERRIDE, text)


def _error_dict(exc: BaseException) -> dict[str, str]:
    message = cli_message(str(exc).strip()) or type(exc).__name__
    return {"type": type(exc).__name__, "message": message}


def is_series_path(path: str) -> bool:
    """A folder, a zip file (by extension or signature) or a NIfTI volume is read as one CT series."""
    p = Path(path)
    if p.is_dir():
        return True
    try:
        return p.is_file() and (p.suffix.lower() == ".zip" or zipfile.is_zipfile(p) or is_nifti(p))
    except OSError:
        return False


def expand_nifti_folders(paths: Sequence[str]) -> list[str]:
    """A folder holding only NIfTI volumes stands for its volumes (each a scan, natural name order).

    A folder is otherwise one series of slices; volumes are whole scans, so a folder of them is
    several inputs. A folder with anything else in it (hidden files aside) is left as it is.
    """
    out: list[str] = []
    for path in paths:
        folder = Path(path)
        files = (
            [f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")]
            if folder.is_dir()
            else []
        )
        if files and all(f.name.lower().endswith(NIFTI_SUFFIXES) for f in files):
            out += sorted((str(f) for f in files), key=natural_key)
        else:
            out.append(path)
    return out


def _stem(path: str) -> str:
    """A file name without its extension (``scan.nii.gz`` → ``scan``)."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".zip", ".dcm"):
        if name.lower().endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return Path(path).stem or name


class _ViewerOutputs:
    """Writes ``--heatmaps-nifti`` volumes and ``--dicom-out`` overlays; failures stay with the record."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.nifti: Path | None = args.heatmaps_nifti
        self.nifti_is_file = self.nifti is not None and self.nifti.name.lower().endswith(NIFTI_SUFFIXES)
        self.dicom: Path | None = args.dicom_out
        self.keep_uids = bool(args.keep_uids)
        self.used: set[Path] = set()

    def _fail(self, record: dict[str, Any], output: str, exc: BaseException) -> None:
        error = {"output": output, **_error_dict(exc)}
        record.setdefault("output_errors", []).append(error)
        print(f"error: {record['file']}: {output} not written: {error['message']}", file=sys.stderr)

    def _nifti_target(self, path: str) -> Path:
        assert self.nifti is not None
        if self.nifti_is_file:
            return self.nifti
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", _stem(path)).strip("._")[:80] or "scan"
        target, n = self.nifti / f"{stem}_heatmap.nii.gz", 1
        while target in self.used or target.exists():
            n += 1
            target = self.nifti / f"{stem}-{n}_heatmap.nii.gz"
        self.used.add(target)
        return target

    def scan(self, record: dict[str, Any], path: str, result: Any) -> None:
        """Outputs of a scan (``SeriesPrediction``)."""
        if self.nifti is not None:
            try:
                heatmaps = [p.heatmap for p in result.predictions]
                grid = (
                    result.series if isinstance(result.series, NiftiGrid) else grid_from_series(result.series)
                )
                record["heatmap_nifti"] = str(write_heatmap_nifti(heatmaps, grid, self._nifti_target(path)))
                if grid.note:
                    record["heatmap_nifti_note"] = grid.note
            except (BrainCTError, OSError) as exc:
                self._fail(record, "--heatmaps-nifti", exc)
        if self.dicom is not None:
            if result.series.slices[0].source == "dicom":
                self._dicom(record, path, result.predictions, result.series)
            else:
                self._not_dicom(path)

    def single(self, record: dict[str, Any], path: str, prediction: Prediction) -> None:
        """Outputs of one slice file: DICOM overlays only (a single slice is no volume)."""
        if self.dicom is not None:
            if prediction.source == "dicom":
                self._dicom(record, path, [prediction], None)
            else:
                self._not_dicom(path)

    def _not_dicom(self, path: str) -> None:
        # Overlays of a PNG or NIfTI would refer to nothing a PACS holds: said, not an error.
        print(f"note: {path}: not DICOM input, so no DICOM overlays are written for it", file=sys.stderr)

    def _dicom(
        self, record: dict[str, Any], path: str, predictions: Sequence[Prediction], series: Series | None
    ) -> None:
        assert self.dicom is not None
        try:
            reference = source_reference(path, series) if self.keep_uids else None
            written = write_dicom_overlays(predictions, self.dicom, stem=_stem(path), reference=reference)
            record["dicom_overlays"] = [str(p) for p in written]
        except (BrainCTError, OSError) as exc:
            self._fail(record, "--dicom-out", exc)


class _HeatmapWriter:
    """Saves heatmaps as ``DIR/<safe stem>.npy``, never overwriting an earlier one of this run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.used: set[str] = set()

    def save(self, path_as_given: str, heatmap: Any) -> str:
        import numpy as np

        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path_as_given).stem).strip("._")[:80] or "slice"
        name, n = stem, 1
        while name in self.used or (self.folder / f"{name}.npy").exists():
            n += 1
            name = f"{stem}-{n}"
        self.used.add(name)
        target = self.folder / f"{name}.npy"
        np.save(target, np.asarray(heatmap, dtype=np.float32))
        return str(target)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _predict_chunk(
    predictor: Predictor, paths: Sequence[str], args: argparse.Namespace
) -> list[Prediction | BaseException]:
    """Load each path (a failure stays with its path), then one batched prediction for the rest."""
    loaded: list[CTImage | BaseException] = []
    for path in paths:
        try:
            loaded.append(predictor.load(path, allow_unverified=args.allow_unverified))
        except Exception as exc:  # any failure of one input is reported and the rest go on
            loaded.append(exc)
    good = [ct for ct in loaded if not isinstance(ct, BaseException)]
    try:
        predictions = iter(
            predictor.predict_batch(
                good, batch_size=max(1, len(good)), tta=args.tta, heatmap_target=args.heatmap_target
            )
        )
    except Exception:
        # Isolate which slice broke the batch; the others still get their answer.
        singles: list[Prediction | BaseException] = []
        for ct in good:
            try:
                singles.append(predictor.predict(ct, tta=args.tta, heatmap_target=args.heatmap_target))
            except Exception as exc:
                singles.append(exc)
        predictions = iter(singles)
    return [item if isinstance(item, BaseException) else next(predictions) for item in loaded]


def _record(
    path: str,
    result: Prediction | BaseException,
    writer: _HeatmapWriter | None,
    outputs: _ViewerOutputs | None = None,
) -> dict[str, Any]:
    if isinstance(result, BaseException):
        return {"file": path, "error": _error_dict(result)}
    record: dict[str, Any] = {"file": path}
    data = result.to_dict()
    keys = (
        "label",
        "probability",
        "threshold",
        "regions",
        "explanation",
        "source",
        "meta",
        "model",
        "head_check",
    )
    for key in keys:
        record[key] = data[key]
    record.update(model_output_fields(result))
    if writer is not None:
        record["heatmap"] = writer.save(path, result.heatmap)
    if outputs is not None:
        outputs.single(record, path, result)
    return record


def _series_record(
    predictor: Predictor,
    path: str,
    args: argparse.Namespace,
    writer: _HeatmapWriter | None,
    outputs: _ViewerOutputs | None = None,
) -> dict[str, Any]:
    try:
        series = read_series(path, series_uid=args.series_uid, allow_unverified=args.allow_unverified)
        result = predict_series(
            predictor,
            series,
            tta=args.tta,
            batch_size=args.batch_size,
            source=path,
            heatmap_target=args.heatmap_target,
        )
    except Exception as exc:  # one failed scan is reported and the other inputs go on
        return {"file": path, "error": _error_dict(exc)}
    record = result.to_dict()
    for error in record.get("errors") or []:
        error["message"] = cli_message(error["message"])
    if writer is not None:
        for slice_record, prediction in zip(record["slices"], result.predictions, strict=True):
            slice_record["heatmap"] = writer.save(
                f"{Path(path).stem}_{slice_record['index']:04d}", prediction.heatmap
            )
    if outputs is not None:
        outputs.scan(record, path, result)
    return record


def _groups(paths: Sequence[str], batch_size: int) -> Iterator[tuple[str, Sequence[str]]]:
    """Consecutive slice files in batches of ``batch_size``; each series on its own; order kept."""
    pending: list[str] = []
    for path in paths:
        if is_series_path(path):
            yield from (("slices", chunk) for chunk in _chunks(pending, batch_size))
            pending = []
            yield "series", [path]
        else:
            pending.append(path)
    yield from (("slices", chunk) for chunk in _chunks(pending, batch_size))


def _format_table(records: list[dict[str, Any]], out: TextIO) -> None:
    """The human-readable table; slices are numbered from 1 here (JSON ``index`` is 0-based).

    Readings whose head-CT check was skipped get the app's and the report's caveat first, before
    any verdict is read (naming them when only some were read that way).
    """
    read = [r for r in records if "error" not in r]
    unverified = [r["file"] for r in read if r.get("head_check") == "skipped"]
    if unverified:
        which = "" if len(unverified) == len(read) else f" ({', '.join(unverified)})"
        print(f"caution{which}: {UNVERIFIED_NOTE}", file=out)
        print(file=out)
    # Subtype models add a column; a binary model's table stays exactly as it always was.
    _print_columns(_table_rows(records, with_subtypes=any("subtypes" in r for r in read)), out)
    _print_files_left_out(records, out)
    targets = sorted(
        {s["heatmap_target"] for r in read for s in r.get("slices", [r]) if "heatmap_target" in s}
    )
    for target in targets:
        if target not in SUBTYPES:
            continue
        print(
            f"heatmaps explain the {target} output (--heatmap-target {target}), not P(hemorrhage)", file=out
        )
    _print_explanations(records, read, out)
    _print_viewer_outputs(records, out)


def _table_rows(records: list[dict[str, Any]], *, with_subtypes: bool) -> list[tuple[str, ...]]:
    """The header and one row per input: file, label, P(hem), threshold, (subtypes,) strongest region."""
    rows = [
        (
            "file",
            "label",
            "P(hem)",
            "threshold",
            *(("subtypes",) if with_subtypes else ()),
            "strongest region",
        )
    ]
    for r in records:
        if "error" in r:
            blank = ("",) * (2 + with_subtypes)
            rows.append((r["file"], "ERROR", *blank, f"{r['error']['type']}: {r['error']['message']}"))
            continue
        if "slices" in r:
            positive = ", ".join(str(i + 1) for i in r["positive_slices"]) or "none"
            where = f"scan of {plural(r['n_slices'], 'slice')}; positive slices: {positive}"
        else:
            top = r["regions"][0] if r["regions"] else None
            where = f"{top['side']} {top['region']}" if top else "-"
        shown = (_subtype_cell(r),) if with_subtypes else ()
        rows.append(
            (r["file"], r["label"], f"{r['probability']:.3f}", f"{r['threshold']:.3f}", *shown, where)
        )
    return rows


def _print_columns(rows: list[tuple[str, ...]], out: TextIO) -> None:
    """Rows in padded columns; the last column is not padded (it may be long)."""
    padded = len(rows[0]) - 1
    widths = [max(len(row[i]) for row in rows) for i in range(padded)]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(padded)]
        print("  ".join([*cells, row[padded]]).rstrip(), file=out)


def _print_files_left_out(records: list[dict[str, Any]], out: TextIO) -> None:
    """Per scan, the files skipped (by reason, five named) and those that could not be read."""
    for r in records:
        by_reason: dict[str, list[str]] = {}
        for item in r.get("skipped") or []:
            by_reason.setdefault(item["reason"], []).append(item["file"])
        for reason, names in by_reason.items():
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            print(f"{r['file']}: {plural(len(names), 'file')} skipped ({reason}): {shown}", file=out)
        if r.get("errors"):
            listed = "; ".join(f"{e['file']}: {e['message']}" for e in r["errors"])
            print(f"{r['file']}: {plural(len(r['errors']), 'file')} could not be read: {listed}", file=out)


def _print_explanations(records: list[dict[str, Any]], read: list[dict[str, Any]], out: TextIO) -> None:
    """The scans' subtype sentences, then each slice's explanation (and heatmap file)."""
    explained = [(_slice_title(r, s), s) for r in records for s in r.get("slices", [r]) if "explanation" in s]
    if explained:
        print(file=out)
    for r in read:
        if r.get("subtype_explanation"):
            print(f"{r['file']} (scan): {r['subtype_explanation']}", file=out)
    for title, s in explained:
        print(f"{title}: {s['explanation']}", file=out)
        if "heatmap" in s:
            print(f"  heatmap: {s['heatmap']}", file=out)


def _print_viewer_outputs(records: list[dict[str, Any]], out: TextIO) -> None:
    """Where each input's NIfTI heatmap volume and DICOM overlays were written."""
    for r in records:
        if r.get("heatmap_nifti"):
            print(f"{r['file']}: heatmap volume: {r['heatmap_nifti']}", file=out)
            if r.get("heatmap_nifti_note"):
                print(f"  ({r['heatmap_nifti_note']})", file=out)
        if r.get("dicom_overlays"):
            folder = Path(r["dicom_overlays"][0]).parent
            print(f"{r['file']}: {plural(len(r['dicom_overlays']), 'DICOM overlay')} in {folder}", file=out)


def _subtype_cell(record: dict[str, Any]) -> str:
    """The ``subtypes`` cell: a slice's subtype probabilities, or a scan's scan-level ones (``-`` if none)."""
    subtypes = record.get("subtypes")
    if not subtypes:
        return "-"
    if "slices" in record:
        return subtype_list({name: s["probability"] for name, s in subtypes.items()})
    return subtype_list(subtypes)


def _slice_title(record: dict[str, Any], item: dict[str, Any]) -> str:
    """``scan.zip slice 3 of 30 (IM0003)`` for a slice of a scan (from 1), the file for a single input."""
    if item is record:
        return str(record["file"])
    return f"{record['file']} slice {item['index'] + 1} of {record['n_slices']} ({item['file']})"


def _list_series(paths: Sequence[str], as_json: bool) -> int:
    """Print the DICOM series of each path (no model); returns the exit code."""
    failed = 0
    for path in paths:
        try:
            infos = [info.to_dict() for info in list_series(path)]
        except Exception as exc:  # one unreadable input is reported and the others go on
            failed += 1
            error = _error_dict(exc)
            if as_json:
                print(json.dumps({"file": path, "error": error}), flush=True)
            else:
                print(f"{path}: ERROR {error['type']}: {error['message']}")
            continue
        if as_json:
            print(json.dumps({"file": path, "series": infos}), flush=True)
            continue
        if not infos:
            print(f"{path}: no DICOM series (ordinary images have no series id)")
            continue
        print(f"{path}: {len(infos)} series (* = read by default; choose another with --series-uid ID)")
        rows = [("", "series id", "slices", "orientation", "contrast", "modality", "description")]
        for info in infos:
            rows.append(
                (
                    "*" if info["default"] else "",
                    info["series_id"],
                    plural(info["n_slices"], "slice"),
                    info["orientation"],
                    "yes" if info["contrast"] else "no",
                    info["modality"] or "-",
                    info["description"] or "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 1 if failed else 0


def _check_viewer_outputs(args: argparse.Namespace, paths: Sequence[str]) -> str | None:
    """Why ``--heatmaps-nifti`` / ``--dicom-out`` cannot be used as given (checked before the model loads)."""
    target = args.heatmaps_nifti
    if target is not None:
        scans = [p for p in paths if is_series_path(p)]
        if target.name.lower().endswith(NIFTI_SUFFIXES):
            if len(scans) != 1:
                return (
                    f"--heatmaps-nifti {str(target)!r} is one file, but {len(scans)} scans (folders, zips or "
                    "NIfTI volumes) were given; give exactly one scan, or a folder as --heatmaps-nifti"
                )
            if not target.parent.is_dir():
                return f"--heatmaps-nifti: the folder {str(target.parent)!r} does not exist; create it first"
        else:
            if not scans:
                return (
                    "--heatmaps-nifti needs a scan (a folder or zip of slices, or a NIfTI volume); a single "
                    "slice file is not a volume (--heatmaps writes its heatmap as .npy)"
                )
            try:
                target.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return f"cannot create the --heatmaps-nifti folder {str(target)!r}: {exc.strerror}"
    return None


def run(args: argparse.Namespace) -> int:
    """Predict every input; print a table or JSON Lines. Returns the exit code (0, 1 or 2)."""
    from tqdm import tqdm

    if hasattr(sys.stdout, "reconfigure"):
        # File names need not be valid in the terminal's encoding; never crash on printing one.
        sys.stdout.reconfigure(errors="backslashreplace")
    if args.list_series:
        return _list_series([str(p) for p in args.paths], args.json)
    if args.keep_uids and args.dicom_out is None:
        print("error: --keep-uids only applies with --dicom-out DIR", file=sys.stderr)
        return 2
    writer = None
    if args.heatmaps is not None:
        try:
            args.heatmaps.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(
                f"error: cannot create the heatmap folder {str(args.heatmaps)!r}: {exc.strerror}",
                file=sys.stderr,
            )
            return 2
        writer = _HeatmapWriter(args.heatmaps)

    paths = expand_nifti_folders([str(p) for p in args.paths])
    outputs = None
    if args.heatmaps_nifti is not None or args.dicom_out is not None:
        problem = _check_viewer_outputs(args, paths)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        outputs = _ViewerOutputs(args)

    predictor, code = load_predictor(args)
    if predictor is None:
        return code

    show_bar = len(paths) >= PROGRESS_MIN_FILES and sys.stderr.isatty()
    failed = 0
    records: list[dict[str, Any]] = []
    with tqdm(total=len(paths), unit="file", file=sys.stderr, disable=not show_bar) as bar:
        for kind, group in _groups(paths, args.batch_size):
            if kind == "series":
                results: list[tuple[str, Any]] = [(group[0], None)]
            else:
                results = list(zip(group, _predict_chunk(predictor, group, args), strict=True))
            for path, result in results:
                try:
                    if kind == "series":
                        record = _series_record(predictor, path, args, writer, outputs)
                    else:
                        record = _record(path, result, writer, outputs)
                except OSError as exc:  # the heatmap could not be written
                    record = {"file": path, "error": _error_dict(exc)}
                failed += "error" in record or "output_errors" in record
                if args.json:
                    print(json.dumps(record), flush=True)
                else:
                    records.append(record)
                bar.update(1)
    if not args.json:
        _format_table(records, sys.stdout)
    return 1 if failed else 0
