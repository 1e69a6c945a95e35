"""``python -m brain_ct report PATH --out report.pdf``: read a slice or a whole scan, write a PDF.

PATH is one file (a DICOM slice, a multi-frame DICOM, a PNG/JPG), a folder of slices or a ``.zip``
of slices. ``--heatmap-target NAME`` (a subtype model's subtype) makes the key slices' heatmaps explain
that subtype, and the caption says so. Exit codes: 0 the report was written, 1 the input could not be
read or the model could not be loaded (the reason is printed, never a traceback), 2 usage error
(including a subtype heatmap asked of a binary model, refused before the input is read).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from brain_ct.cli.common import add_reading_arguments, load_predictor
from brain_ct.cli.predict import cli_message
from brain_ct.errors import InvalidInputError
from brain_ct.report import write_report
from brain_ct.scan import predict_series
from brain_ct.series import read_series
from brain_ct.wording import UNVERIFIED_NOTE, plural


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``report`` subcommand."""
    parser = subparsers.add_parser(
        "report",
        help="read a slice or a scan (file, folder or .zip) and write a PDF report",
        description=(
            "Read a head-CT slice or a whole scan and write a PDF report: scan verdict, key slices "
            "with Grad-CAM overlays, per-slice plot. Research and education aid, not a diagnosis."
        ),
    )
    parser.add_argument(
        "path", metavar="PATH", help="a DICOM/PNG/JPG file, a folder of slices or a .zip of slices"
    )
    parser.add_argument("--out", required=True, metavar="PDF", help="the PDF file to write, e.g. report.pdf")
    add_reading_arguments(parser)
    parser.add_argument(
        "--include-identifiers",
        action="store_true",
        help="print PatientName, PatientID and StudyDate in the report (off by default)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Read PATH, predict, write the report; return the exit code."""
    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"error: the folder of --out {args.out!r} does not exist; create it first", file=sys.stderr)
        return 2
    # The model first: a --heatmap-target it cannot explain is refused before the input is read.
    predictor, code = load_predictor(args)
    if predictor is None:
        return code
    try:
        series = read_series(
            args.path,
            series_uid=args.series_uid,
            allow_unverified=args.allow_unverified,
            read_identifiers=args.include_identifiers,
        )
    except InvalidInputError as exc:
        print(f"error: {cli_message(str(exc))}", file=sys.stderr)
        return 1
    try:
        result = predict_series(
            predictor,
            series,
            tta=args.tta,
            batch_size=args.batch_size,
            source=args.path,
            heatmap_target=args.heatmap_target,
        )
        written = write_report(
            result,
            out,
            model_settings=predictor.settings,
            include_identifiers=args.include_identifiers,
            unverified=bool(args.allow_unverified),
        )
    except InvalidInputError as exc:
        print(f"error: {cli_message(str(exc))}", file=sys.stderr)
        return 1
    for err in series.errors:
        print(f"could not read {err['file']}: {cli_message(err['message'])}", file=sys.stderr)
    for skip in series.skipped:
        print(f"left out {skip['file']}: {skip['reason']}", file=sys.stderr)
    if args.allow_unverified:
        print(f"caution: {UNVERIFIED_NOTE}", file=sys.stderr)
    print(
        f"{result.label} (probability {result.probability:.3f}, threshold {result.threshold:.3f}, "
        f"{plural(result.n_slices, 'slice')}); report written to {written}"
    )
    return 0
