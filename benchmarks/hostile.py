"""What hostile uploads cost: ``python -m benchmarks.hostile [--rows KEY,...] [--speed-only]``.

Each row of issue 26's table (the readers' part) is built in a temporary folder and read in a fresh
Python process, as the app reads it (``load_image`` for one slice, ``read_series`` for a scan,
``list_series`` for ``predict --list-series``), beside two honest baselines (a 512² slice, a
40-slice 512² scan). Per row: the outcome (read, or refused and why), seconds, the process's
memory above its idle size (VmRSS after imports → VmHWM), and the decoding workers' peak RSS
(the process's children, ``RUSAGE_CHILDREN``). Results go to ``benchmarks/hostile.json`` and a
printed table; the README's "Limits" section quotes them. No test asserts these numbers.

``speed``: median milliseconds of ``load_image`` on an honest 512² PNG and DICOM in one process
(30 reads each, after one warm-up), so that the common case is seen not to get slower; run it
again with ``PYTHONPATH`` on an older checkout to compare.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).with_name("hostile.json")


# --------------------------------------------------------------------------- building the files


def _flat_head_hu(size: int) -> np.ndarray:
    """A drawn head in HU (air, skull ring, uniform brain): compresses to almost nothing, as an attacker's would."""
    y, x = np.mgrid[:size, :size].astype(np.float32)
    r = np.hypot((x - size / 2) / (0.38 * size), (y - size / 2) / (0.45 * size))
    hu = np.full((size, size), -1000.0, np.float32)
    hu[r < 1.0] = 1000.0
    hu[r < 0.92] = 35.0
    return hu


def _head_hu(size: int) -> np.ndarray:
    """A head phantom slice in HU (skull, brain texture, ventricles: an honest slice passes the head-CT check)."""
    return _phantom_hu(size).copy()


@functools.lru_cache(maxsize=4)
def _phantom_hu(size: int) -> np.ndarray:
    from brain_ct.synthetic import generate_slice  # the rows' children import brain_ct themselves

    # the generator stops at 512 px here (its limit is 2048); larger slices are the same head resized
    hu = generate_slice(1, size=min(size, 512)).hu.astype(np.float32)
    return hu if size == hu.shape[0] else cv2.resize(hu, (size, size), interpolation=cv2.INTER_LINEAR)


def _ct(pixels: np.ndarray, *, z: float = 0.0, uid: str = "1.2.3.4", syntax: str | None = None, **tags):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = uid
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    ds.PixelSpacing = [0.45, 0.45]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-115.0, -115.0, float(z)]
    ds.PixelData = pixels.astype(np.int16).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def _bytes(ds) -> bytes:
    from pydicom.filewriter import dcmwrite

    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _slice(size: int = 512, z: float = 0.0, *, flat: bool = False, **tags) -> bytes:
    hu = _flat_head_hu(size) if flat else _head_hu(size)
    return _bytes(_ct(np.round(hu + 1024).astype(np.int16), z=z, **tags))


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buffer.getvalue()


def _scan(n: int, size: int = 512) -> bytes:
    return _zip([(f"IM{i:04d}", _slice(size, z=2.5 * i)) for i in range(n)])


def _big_grey(side: int) -> np.ndarray:
    return cv2.resize(((_head_hu(512) + 1000) / 8).clip(0, 255).astype(np.uint8), (side, side))


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()


def _deflated(size: int) -> bytes:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    return _bytes(_ct(np.zeros((size, size), np.int16), syntax=DeflatedExplicitVRLittleEndian))


def _j2k_frames(size: int, frames: int) -> bytes:
    import openjpeg
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    frame = openjpeg.encode(np.round(_head_hu(size) + 1024).astype(np.uint16), bits_stored=12)
    ds = _ct(np.zeros((1, 1), np.int16), syntax=JPEG2000Lossless)
    ds.Rows = ds.Columns = size
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = encapsulate([bytes(frame)] * frames)
    ds["PixelData"].VR = "OB"
    return _bytes(ds)


def _progressive_jpeg(side: int, scans: int) -> bytes:
    """A progressive JPEG of ``side``² whose last scan is repeated to ``scans`` scans in all."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_big_grey(side)).save(buffer, "JPEG", progressive=True, quality=75)
    data = buffer.getvalue()
    end = data.rfind(b"\xff\xd9")
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"] + [end]
    # the encoder's smallest scan (a refinement pass of near-empty bands), repeated
    smallest = min((data[a:b] for a, b in zip(starts, starts[1:], strict=False)), key=len)
    return data[:end] + smallest * max(0, scans - len(starts) + 1) + b"\xff\xd9"


def _frames_claim() -> bytes:
    return _bytes(_ct(np.round(_head_hu(64) + 1024).astype(np.int16), NumberOfFrames=2_000_000_000))


def _float_tiff(side: int) -> bytes:
    return cv2.imencode(".tiff", _big_grey(side).astype(np.float32) / 255.0)[1].tobytes()


def _rgba_png(side: int) -> bytes:
    return _png(cv2.cvtColor(_big_grey(side), cv2.COLOR_GRAY2BGRA))


#: (key, what was uploaded, how it is read, builder of the file's bytes, file name)
ROWS: list[tuple[str, str, str, Callable[[], bytes], str]] = [
    ("baseline_slice", "honest 512² CT DICOM slice", "load_image", lambda: _slice(), "IM0001.dcm"),
    ("baseline_scan", "honest 40-slice 512² scan (zip)", "read_series", lambda: _scan(40), "scan.zip"),
    ("frames_2e9", "9 KB 64² DICOM claiming 2,000,000,000 frames", "read_series", _frames_claim, "IM0001"),
    (
        "frames_2e9_zip",
        "the same in a zip, --list-series",
        "list_series",
        lambda: _zip([("IM0001", _frames_claim())]),
        "x.zip",
    ),
    ("deflated_50mp", "50 MP deflated DICOM", "load_image", lambda: _deflated(7072), "IM0001.dcm"),
    (
        "j2k_50mp",
        "50 MP DICOM with an honest JPEG 2000 frame",
        "load_image",
        lambda: _j2k_frames(7072, 1),
        "IM1",
    ),
    (
        "png16_25mp",
        "25 MP 16-bit PNG (4900²)",
        "load_image",
        lambda: _png(_big_grey(4900).astype(np.uint16) * 257),
        "a.png",
    ),
    (
        "png16_50mp",
        "50 MP 16-bit PNG (7072²)",
        "load_image",
        lambda: _png(_big_grey(7072).astype(np.uint16) * 257),
        "a.png",
    ),
    ("rgba_25mp", "25 MP RGBA PNG (4900²)", "load_image", lambda: _rgba_png(4900), "a.png"),
    ("tiff_float_25mp", "25 MP float TIFF (4900²)", "load_image", lambda: _float_tiff(4900), "a.tiff"),
    (
        "jpeg_25mp",
        "25 MP JPEG (4900²)",
        "load_image",
        lambda: cv2.imencode(".jpg", _big_grey(4900))[1].tobytes(),
        "a.jpg",
    ),
    (
        "zip_40_png",
        "zip of 40 PNGs of 24 MP",
        "read_series",
        lambda: _zip([(f"s{i}.png", p) for i, p in enumerate([_png(_big_grey(4900))] * 40)]),
        "x.zip",
    ),
    (
        "zip_40_deflated",
        "zip of 40 deflated 50 MP DICOMs",
        "read_series",
        lambda: _zip([(f"IM{i:04d}", d) for i, d in enumerate([_deflated(7072)] * 40)]),
        "x.zip",
    ),
    (
        "j2k_300x740",
        "300 JPEG 2000 frames of 740² in one DICOM",
        "read_series",
        lambda: _j2k_frames(740, 300),
        "IM1",
    ),
    (
        "zip_2000",
        "zip of 2000 slices of 0.53 MB",
        "read_series",
        lambda: _zip([(f"IM{i:04d}", s) for i, s in enumerate([_slice(flat=True)] * 2000)]),
        "x.zip",
    ),
    (
        "jpeg_scans_7000",
        "progressive 7000² JPEG, 20,000 scans",
        "load_image",
        lambda: _progressive_jpeg(7000, 20000),
        "a.jpg",
    ),
    (
        "jpeg_scans_4000",
        "progressive 4000² JPEG, 20,000 scans",
        "load_image",
        lambda: _progressive_jpeg(4000, 20000),
        "a.jpg",
    ),
    ("scan_128", "honest 128-slice 512² scan (zip)", "read_series", lambda: _scan(128), "scan.zip"),
    ("scan_300", "300 slices of 512² (zip)", "read_series", lambda: _scan(300), "scan.zip"),
    (
        "stray_delimiter",
        "512² slice + 8 stray bytes (sequence delimiter)",
        "load_image",
        lambda: _slice() + b"\xfe\xff\xdd\xe0" + struct.pack("<I", 0),
        "IM0001.dcm",
    ),
]


# --------------------------------------------------------------------------- measuring


_CHILD = """
import json, sys, time
def _status(key):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key)).split()[1]) / 1024
from brain_ct.errors import BrainCTError
from brain_ct.io import load_image
from brain_ct.series import list_series, read_series
from brain_ct import decode_guard
fn = {"load_image": load_image, "read_series": read_series, "list_series": list_series}[sys.argv[1]]
idle = _status("VmRSS:")
start = time.perf_counter()
try:
    out = fn(sys.argv[2])
    n = len(out) if isinstance(out, list) or hasattr(out, "slices") else 1
    outcome = f"read ({n} slice(s){'; ' + out.meta['Notes'][0][:60] if hasattr(out, 'meta') and out.meta.get('Notes') else ''})"
    if isinstance(out, list):
        outcome = f"listed {len(out)} series"
except BrainCTError as exc:
    outcome = "refused: " + str(exc)[:160]
except BaseException as exc:
    outcome = f"ESCAPED {type(exc).__name__}: {str(exc)[:100]}"
seconds = time.perf_counter() - start
peak = _status("VmHWM:")
decode_guard.shutdown_workers()
import resource
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"outcome": outcome, "seconds": seconds, "idle_mb": idle, "peak_mb": peak,
                  "above_idle_mb": peak - idle, "workers_peak_mb": workers}))
"""


def measure(key: str, how: str, path: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, how, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )
    if proc.returncode != 0:
        return {"outcome": f"child failed ({proc.returncode}): {proc.stderr[-300:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speed(reps: int = 30) -> dict[str, float]:
    """Median ms of ``load_image`` on an honest 512² PNG and DICOM (in this process, after a warm-up)."""
    from brain_ct.io import load_image  # measured in this process only: the child rows import it themselves
    from brain_ct.synthetic import generate_slice, render_8bit  # likewise

    # a phantom in the brain window: the flat drawn head of the other rows is refused by the head-CT check
    honest_png = _png(render_8bit(generate_slice(1, size=512), 1, internet_style=False))
    inputs = {"png_512": honest_png, "dicom_512": _slice()}
    out = {}
    for name, data in inputs.items():
        load_image(data)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            load_image(data)
            times.append((time.perf_counter() - start) * 1000)
        out[name] = statistics.median(times)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=None, help="comma-separated row keys (default: all)")
    parser.add_argument("--speed-only", action="store_true", help="only the 512² load_image medians")
    args = parser.parse_args(argv)
    print("speed (median ms):", json.dumps({k: round(v, 2) for k, v in speed().items()}), flush=True)
    if args.speed_only:
        return
    wanted = set(args.rows.split(",")) if args.rows else None
    results = json.loads(OUT.read_text()) if OUT.exists() and wanted else {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, what, how, build, name in ROWS:
            if wanted and key not in wanted:
                continue
            path = Path(tmp, name)
            path.write_bytes(build())
            row = measure(key, how, path)
            row.update(what=what, how=how, upload_mb=path.stat().st_size / 2**20)
            results[key] = row
            path.unlink()
            print(
                f"{key:18s} {row['upload_mb']:7.2f} MB  {row.get('seconds', float('nan')):6.2f} s  "
                f"+{row.get('above_idle_mb', float('nan')):6.0f} MB  workers {row.get('workers_peak_mb', 0):5.0f} MB  "
                f"{row['outcome'][:110]}",
                flush=True,
            )
    results["_machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    OUT.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
