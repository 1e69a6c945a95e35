"""Peak memory and time of NIfTI uploads: gzip bombs (issue 26 item 4) and an honest volume.

Each case runs in a fresh Python process (so peak RSS is that case's alone): list the series as
``predict --list-series`` does (:func:`brain_ct.series.list_series`), then read it as a scan does
(:func:`brain_ct.series.read_series`). Reported: wall time, the process's peak RSS (``ru_maxrss``) and
its RSS after the imports, and how the reading ended. Run: ``python -m benchmarks.nifti_bombs``.
Files are built in a temporary folder (a 512³ float64 bomb compresses to ~1 MB; nothing is committed).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

_CASE = r"""
import json, resource, sys, time
import psutil
from brain_ct.errors import InvalidInputError
from brain_ct.series import list_series, read_series
base = psutil.Process().memory_info().rss
path = sys.argv[1]
t0 = time.perf_counter()
outcome = "read"
try:
    n = list_series(path)[0].n_slices
    s = read_series(path, allow_unverified=True)
    outcome = f"listed {n} slices, read {len(s.slices)}"
except InvalidInputError as exc:
    outcome = "refused: " + str(exc)[:160]
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"wall_s": round(wall, 2), "peak_rss_mb": round(peak / 2**20), "rss_after_imports_mb": round(base / 2**20), "outcome": outcome}))
"""


def _bomb(path: Path, shape: tuple[int, int, int], dtype: type) -> Path:
    """A .nii.gz whose header is honest and whose voxels are all zero: tiny compressed, huge inflated."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.diag([0.5, 0.5, 1.0, 1.0]), code=1)
    header.set_sform(np.diag([0.5, 0.5, 1.0, 1.0]), code=1)
    header["vox_offset"] = 352
    n_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    with path.open("wb") as fh:
        fh.write(comp.compress(header.binaryblock + b"\0" * 4))
        zeros = bytes(1 << 24)
        for start in range(0, n_bytes, len(zeros)):
            fh.write(comp.compress(zeros[: min(len(zeros), n_bytes - start)]))
        fh.write(comp.flush())
    return path


def _honest(path: Path, slices: int = 40) -> Path:
    """A 512 x 512 x ``slices`` int16 head-like volume: air, a skull ring, brain."""
    yy, xx = np.mgrid[:512, :512]
    r = np.hypot(yy - 256, xx - 256)
    plane = np.where(r < 200, 35, np.where(r < 215, 1000, -1000)).astype(np.int16)
    volume = np.repeat(plane[:, :, None], slices, axis=2)
    image = nib.Nifti1Image(volume, np.diag([-0.5, -0.5, 5.0, 1.0]))
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=1))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = {
            "bomb 512^3 float64 (1 GiB inflated)": _bomb(folder / "f64.nii.gz", (512, 512, 512), np.float64),
            "bomb 640x512x512 uint8 (167 M voxels)": _bomb(folder / "u8.nii.gz", (512, 512, 640), np.uint8),
            "largest accepted header, zeros: 512x512x128 float64": _bomb(
                folder / "f64max.nii.gz", (512, 512, 128), np.float64
            ),
            "honest 512x512x40 int16": _honest(folder / "honest.nii.gz"),
        }
        for label, path in cases.items():
            run = subprocess.run([sys.executable, "-c", _CASE, str(path)], capture_output=True, text=True)
            row = (
                json.loads(run.stdout.strip().splitlines()[-1])
                if run.returncode == 0
                else {"error": run.stderr[-400:]}
            )
            row["file_mb"] = round(path.stat().st_size / 2**20, 2)
            results[label] = row
            print(f"{label}: {json.dumps(row)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
