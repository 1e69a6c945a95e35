"""The app's memory after bursts (issue 26 item 5): ``python -m benchmarks.app_memory [--app PATH]``.

Starts ``python app.py`` on a free loopback port (the default model), and measures the server's
resident memory (psutil, the process and its children) idle after warm-up, after N failed readings of
a large image (a 7000 × 7000 flat PNG: decoded, then refused by the head-CT check), and after two
concurrent scans of 40 synthetic 512² DICOM slices. Each figure is read after the server has been idle
for a few seconds. ``--app`` runs another copy of app.py (e.g. the previous version) for comparison.
Bounded: 30 failures and 2 scans by default; loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


def _settled_rss(pid: int, wait_s: float = 4.0) -> float:
    time.sleep(wait_s)
    return round(_rss_mb(pid), 1)


def _inputs(folder: Path, n_slices: int) -> tuple[Path, Path]:
    from pydicom.filewriter import dcmwrite

    from brain_ct.synthetic import generate_series, to_dicom

    big = folder / "flat_7000.png"
    image = np.full((7000, 7000), 90, np.uint8)
    cv2.circle(image, (3500, 3500), 1000, 140, -1)  # a shape, no skull: refused after decoding
    cv2.imwrite(str(big), image)
    scan = folder / f"scan_{n_slices}.zip"
    with zipfile.ZipFile(scan, "w") as zf:
        for i, p in enumerate(generate_series(1, n_slices=n_slices, size=512, hemorrhage=True)):
            buffer = io.BytesIO()
            dcmwrite(buffer, to_dicom(p, instance_number=i + 1), enforce_file_format=True)
            zf.writestr(f"slice_{i:03d}.dcm", buffer.getvalue())
    return big, scan


def _cached_scan_mb(scan: Path) -> float:
    """What one such scan's reading holds in the app's readings cache (read here, in this process)."""
    from brain_ct.model import resolve_model_id
    from brain_ct.predictor import Predictor
    from brain_ct.scan import predict_series
    from brain_ct.series import list_series, read_series
    from brain_ct.serving import nbytes

    result = predict_series(Predictor.from_pretrained(resolve_model_id(None)), read_series(str(scan)))
    return round(nbytes({"result": result, "infos": list_series(str(scan))}) / 2**20, 1)


def measure(app: Path, failures: int = 30, scans: int = 2, n_slices: int = 40) -> dict[str, float | str]:
    """RSS in MiB of a launched app: idle, after ``failures`` failed large readings, after ``scans``
    concurrent scans of ``n_slices`` slices."""
    from gradio_client import Client, handle_file

    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        big, scan = _inputs(Path(tmp), n_slices)
        env = dict(os.environ, BRAIN_CT_TMP=tmp, GRADIO_ANALYTICS_ENABLED="False")
        server = subprocess.Popen(
            [sys.executable, str(app), "--port", str(port)],
            cwd=app.parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            for _ in range(240):
                try:
                    client = Client(url, verbose=False)
                    break
                except Exception:  # not up yet
                    time.sleep(1)
            else:
                raise RuntimeError("the app did not start in 4 minutes")
            result: dict[str, float | str] = {"idle_mb": _settled_rss(server.pid)}
            start = time.perf_counter()
            for _ in range(failures):
                with contextlib.suppress(Exception):  # the refusal is the point
                    client.predict(handle_file(str(big)), api_name="/predict")
            result["failures_s"] = round(time.perf_counter() - start, 1)
            result[f"after_{failures}_failed_50mp_mb"] = _settled_rss(server.pid)

            def read_scan() -> None:
                Client(url, verbose=False).predict([handle_file(str(scan))], api_name="/predict_series")

            # Twice: the first round also pays one-time costs (the report's and NIfTI's imports, fonts).
            for round_ in (1, 2):
                threads = [threading.Thread(target=read_scan) for _ in range(scans)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=600)
                key = f"after_{scans}_concurrent_{n_slices}_slice_scans_round{round_}_mb"
                result[key] = _settled_rss(server.pid)
            result["readings_cache_per_scan_mb"] = _cached_scan_mb(scan)
            result["app"] = str(app)
            return result
        finally:
            server.terminate()
            server.wait(timeout=60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", type=Path, default=ROOT / "app.py", help="the app.py to run")
    parser.add_argument("--failures", type=int, default=30, help="failed large readings in a row")
    parser.add_argument("--slices", type=int, default=40, help="slices per scan (two scans at once)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.app.resolve(), args.failures, 2, args.slices), indent=2))


if __name__ == "__main__":
    main()
