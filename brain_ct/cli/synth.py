"""``python -m brain_ct synth``: write a synthetic head-CT data set (an image folder).

Exit codes: 0 written, 1 a library error (message on stderr), 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import sys

from brain_ct.cli.common import int_at_least
from brain_ct.errors import InvalidInputError

_non_negative_int = int_at_least(0)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``synth`` subcommand."""
    from brain_ct.synthetic import FORMATS, STYLES

    p = subparsers.add_parser(
        "synth",
        help="write synthetic head-CT slices with hemorrhage masks (an image folder)",
        description=(
            "Write N synthetic axial head-CT slices, half with a hemorrhage: DIR/hemorrhage/*, DIR/normal/*, "
            "DIR/masks/<stem>.png (0/255; all-zero for normal images) and DIR/metadata.jsonl. "
            "datasets.load_dataset('imagefolder', data_dir=DIR) reads the PNG output; "
            "--format dcm writes CT DICOMs in HU for the DICOM training path (datasets cannot decode .dcm)."
        ),
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--n", required=True, type=_non_negative_int, metavar="N", help="number of slices in total (>= 2)"
    )
    p.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="master seed (default 0)")
    p.add_argument(
        "--size", type=_non_negative_int, default=256, metavar="PX", help="slice side in pixels (default 256)"
    )
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="png", help="png (default), dcm or both")
    p.add_argument(
        "--style",
        choices=STYLES,
        default="plain",
        help="PNG look: plain brain window (default), internet-style figures, or mixed",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the data set; returns the exit code."""
    from brain_ct.synthetic import write_dataset

    if args.n < 2:
        print(f"error: --n must be at least 2 (half of the slices per class); got {args.n}", file=sys.stderr)
        return 2
    try:
        out = write_dataset(
            args.out,
            args.n,
            seed=args.seed,
            size=args.size,
            fmt=args.fmt,
            style=args.style,
            progress=not args.no_progress,
        )
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.n} slices to {out}", file=sys.stderr)
    return 0
