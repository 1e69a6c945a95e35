"""``python -m brain_ct synth``: write a synthetic head-CT data set (an image folder) or whole scans.

``--n N``: N single slices as an image folder (see :func:`brain_ct.synthetic.write_dataset`).

``--series K --slices N``: K phantom heads, one CT series of N contiguous axial slices each
(:func:`brain_ct.synthetic.generate_series`, written by :func:`brain_ct.synthetic.to_dicom`), to try
the whole-scan path (``python -m brain_ct predict DIR/series_001``). Layout::

    DIR/series_001/IM0001.dcm … IM000N.dcm   inferior → superior; one Series Instance UID per head
    DIR/slices.csv   per slice: folder, file, index (0-based, inferior → superior), z (mm along the
                     head axis), label (0/1), subtype, level, bbox ("x0 y0 x1 y1", x1/y1 exclusive)
    DIR/scans.csv    per scan: folder, n_slices, label (1 when any slice shows blood), subtype,
                     positive_slices (0-based indices, space-separated), seed

Heads alternate hemorrhage / normal, the first one bleeding. ``--format png`` writes 8-bit
brain-window PNGs (``IM0001.png`` …) instead of DICOMs.

Exit codes: 0 written, 1 a library error (message on stderr), 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from brain_ct.cli.common import int_at_least
from brain_ct.errors import InvalidInputError
from brain_ct.synthetic import FORMATS, STYLES, Phantom, generate_series, plain_8bit, to_dicom, write_dataset
from brain_ct.wording import plural

_non_negative_int = int_at_least(0)

#: Largest series generated per head (the phantom generator's own limit).
MAX_SLICES = 256


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``synth`` subcommand."""
    p = subparsers.add_parser(
        "synth",
        help="write synthetic head-CT slices with hemorrhage masks (an image folder), or whole scans",
        description=(
            "Write N synthetic axial head-CT slices, half with a hemorrhage: DIR/hemorrhage/*, DIR/normal/*, "
            "DIR/masks/<stem>.png (0/255; all-zero for normal images) and DIR/metadata.jsonl. "
            "datasets.load_dataset('imagefolder', data_dir=DIR) reads the PNG output; "
            "--format dcm writes CT DICOMs in HU for the DICOM training path (datasets cannot decode .dcm). "
            "With --series K --slices N instead: K whole scans (one DICOM series of N contiguous slices per "
            "phantom head) in DIR/series_001 ..., with labels per slice (DIR/slices.csv) and per scan "
            "(DIR/scans.csv)."
        ),
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--n", type=_non_negative_int, metavar="N", help="number of single slices in total (>= 2)"
    )
    what.add_argument(
        "--series",
        type=_non_negative_int,
        metavar="K",
        help="number of whole scans (phantom heads, one series each; >= 1); use with --slices",
    )
    p.add_argument(
        "--slices",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help=f"slices per scan with --series (1-{MAX_SLICES}, default 32)",
    )
    p.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="master seed (default 0)")
    p.add_argument(
        "--size", type=_non_negative_int, default=256, metavar="PX", help="slice side in pixels (default 256)"
    )
    p.add_argument(
        "--format",
        dest="fmt",
        choices=FORMATS,
        default=None,
        help="png (default for --n), dcm (default for --series) or both (--n only)",
    )
    p.add_argument(
        "--style",
        choices=STYLES,
        default="plain",
        help="PNG look for --n: plain brain window (default), internet-style figures, or mixed",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the data set or the scans; returns the exit code."""
    if args.series is not None:
        return _run_series(args)

    if args.slices is not None:
        print("error: --slices needs --series K (whole scans); --n writes single slices", file=sys.stderr)
        return 2
    if args.n < 2:
        print(f"error: --n must be at least 2 (half of the slices per class); got {args.n}", file=sys.stderr)
        return 2
    out = _write(
        args.out,
        lambda: write_dataset(
            args.out,
            args.n,
            seed=args.seed,
            size=args.size,
            fmt=args.fmt or "png",
            style=args.style,
            progress=not args.no_progress,
        ),
    )
    if isinstance(out, int):
        return out
    print(f"wrote {args.n} slices to {out}", file=sys.stderr)
    return 0


def _run_series(args: argparse.Namespace) -> int:
    n_slices = 32 if args.slices is None else args.slices
    fmt = args.fmt or "dcm"
    if args.series < 1:
        print(f"error: --series must be at least 1 (the number of scans); got {args.series}", file=sys.stderr)
        return 2
    if not 1 <= n_slices <= MAX_SLICES:
        print(f"error: --slices must be from 1 to {MAX_SLICES}; got {n_slices}", file=sys.stderr)
        return 2
    if fmt not in ("dcm", "png"):
        print(f"error: --format {fmt} is not available with --series; use dcm or png", file=sys.stderr)
        return 2
    out = _write(
        args.out,
        lambda: write_scans(
            args.out,
            args.series,
            n_slices,
            seed=args.seed,
            size=args.size,
            fmt=fmt,
            progress=not args.no_progress,
        ),
    )
    if isinstance(out, int):
        return out
    scans = plural(args.series, "scan")
    print(
        f"wrote {scans} of {plural(n_slices, 'slice')} to {out} (labels: slices.csv, scans.csv)",
        file=sys.stderr,
    )
    return 0


def write_scans(
    out_dir: str | Path,
    n_series: int,
    n_slices: int,
    *,
    seed: int = 0,
    size: int = 256,
    fmt: str = "dcm",
    progress: bool = False,
) -> Path:
    """Write ``n_series`` synthetic scans of ``n_slices`` contiguous slices each (layout: module docstring).

    Args:
        out_dir: output directory (created; files with the same names are replaced).
        n_series: number of scans (phantom heads); heads 1, 3, 5 … bleed, 2, 4 … do not.
        n_slices: slices per scan, 1 to :data:`MAX_SLICES`.
        seed: master seed; the output is deterministic per (seed, n_series, n_slices, size, fmt).
        size: slice side in pixels.
        fmt: ``"dcm"`` (CT DICOM in HU, one Series Instance UID per head) or ``"png"`` (8-bit
            brain window).
        progress: show a tqdm progress bar on stderr.

    Returns:
        The output directory.

    Raises:
        InvalidInputError: bad arguments, or a hemorrhage that cannot be placed in so few slices.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(int(seed)).generate_state(int(n_series), dtype=np.uint32)
    slice_rows: list[dict[str, object]] = []
    scan_rows: list[dict[str, object]] = []
    heads = range(int(n_series))
    if progress:
        from tqdm import tqdm

        heads = tqdm(heads, desc="synth", unit="scan", file=sys.stderr)
    for k in heads:
        head_seed = int(seeds[k])
        phantoms = generate_series(head_seed, n_slices=n_slices, size=size, hemorrhage=k % 2 == 0)
        folder = f"series_{k + 1:03d}"
        (out / folder).mkdir(exist_ok=True)
        for i, phantom in enumerate(phantoms):
            name = f"IM{i + 1:04d}.{fmt}"
            _write_slice(out / folder / name, phantom, i, fmt)
            slice_rows.append(_slice_row(folder, name, i, phantom))
        scan_rows.append(_scan_row(folder, phantoms, head_seed))
    _write_csv(out / "slices.csv", slice_rows)
    _write_csv(out / "scans.csv", scan_rows)
    return out


def _write_slice(path: Path, phantom: Phantom, i: int, fmt: str) -> None:
    """Slice ``i`` of a scan as a CT DICOM (``fmt`` "dcm") or an 8-bit brain-window image."""
    if fmt == "dcm":
        to_dicom(phantom, instance_number=i + 1).save_as(path, enforce_file_format=True)
    elif not cv2.imwrite(str(path), plain_8bit(phantom.hu)):
        raise OSError(f"could not write {path}")


def _slice_row(folder: str, name: str, i: int, phantom: Phantom) -> dict[str, object]:
    """One line of slices.csv."""
    return {
        "folder": folder,
        "file": name,
        "index": i,
        "z": f"{phantom.z:.3f}",
        "label": phantom.label,
        "subtype": phantom.subtype or "",
        "level": phantom.level,
        "bbox": " ".join(map(str, phantom.bbox)) if phantom.bbox else "",
    }


def _scan_row(folder: str, phantoms: list[Phantom], head_seed: int) -> dict[str, object]:
    """One line of scans.csv: a scan is positive when any of its slices shows blood."""
    positive = [i for i, ph in enumerate(phantoms) if ph.label]
    return {
        "folder": folder,
        "n_slices": len(phantoms),
        "label": int(bool(positive)),
        "subtype": next((ph.subtype for ph in phantoms if ph.subtype), "") or "",
        "positive_slices": " ".join(map(str, positive)),
        "seed": head_seed,
    }


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write(target: str, write: Callable[[], Path]) -> Path | int:
    """Run a writer; a bad value is a usage error (exit 2), a file system problem exit 1, each with a message."""
    try:
        return write()
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write to {target}: {exc.strerror or exc}", file=sys.stderr)
        return 1
