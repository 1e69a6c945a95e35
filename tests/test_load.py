"""Load test: 8 parallel gradio_client clients, 32 requests, against the launched app (loopback only).

The app runs in its own process (so its memory can be measured) with a tiny random model, its
upload cache and temp folder in private folders. Requests mix good slices (DICOM, PNG, pydicom's
real head CT) and bad files (text, truncated, MR, a decompression-bomb PNG); the first request of
every client is the very same file, sent by all eight at once. Every good request must come back
with the probability the in-process :class:`~brain_ct.predictor.Predictor` gives for that file,
every bad one with an error message, none lost; the server's RSS must return near its level
before the load. The figures (requests, errors, p50/p95 latency, peak and final RSS, files left
in the upload cache) are printed and written to ``test-artifacts/load.json``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from badfiles import BadFile, dicom_bytes, head_phantom, make_bad_files
from helpers_models import make_tiny_model
from pydicom.data import get_testdata_file

from brain_ct.synthetic import generate_slice, plain_8bit, to_dicom

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"

CLIENTS = 8
REQUESTS_PER_CLIENT = 4
#: Allowed growth of the server's RSS from before to after the load.
RSS_MARGIN_MB = 300

_SERVER = """
import sys
import app

registry = app.ModelRegistry(sys.argv[1])
app.warm_up(registry)
demo = app.build_demo(registry)
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[2]), prevent_thread_lock=True,
            quiet=True, max_file_size=app.MAX_FILE_SIZE)
print("READY", flush=True)
sys.stdin.read()  # serve until the test closes stdin
demo.close()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 2**20


def _inputs(folder: Path) -> tuple[list[Path], list[Path]]:
    """(good files, bad files) for the load."""
    folder.mkdir(parents=True, exist_ok=True)
    good = []
    for seed in range(4):
        path = folder / f"good_{seed}.dcm"
        path.write_bytes(dicom_bytes(to_dicom(generate_slice(seed, 256, hemorrhage=seed % 2 == 0))))
        good.append(path)
    png = folder / "good.png"
    cv2.imwrite(str(png), plain_8bit(head_phantom(5).hu))
    good += [png, Path(get_testdata_file("693_J2KI.dcm"))]
    corpus: list[BadFile] = make_bad_files(folder / "bad", seed=3, include_bombs=True)
    # Codec bombs inside DICOM too: ordinary requests must still be answered while they are refused.
    keys = ("text_as_dcm", "truncated_dicom_pixels", "mr", "nan_tiff", "png_bomb")
    keys += ("j2k_siz_bomb", "jpeg_sof_bomb", "deflate_bomb")
    return good, [f.path for f in corpus if f.key in keys]


@pytest.mark.slow
def test_parallel_clients_mixed_files(tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    from brain_ct.predictor import Predictor

    model = make_tiny_model(tmp_path / "model", trained_on="synthetic phantoms")
    good, bad = _inputs(tmp_path / "inputs")
    predictor = Predictor.from_pretrained(str(model))
    expected = {str(p): predictor.predict(p).probability for p in good}

    # Request plan: the first request of every client is the same file, sent at the same moment.
    shared = good[0]
    pool = [*good, *bad]
    plan = [
        [shared] + [pool[(c * 3 + k) % len(pool)] for k in range(1, REQUESTS_PER_CLIENT)]
        for c in range(CLIENTS)
    ]
    bad_set = {str(p) for p in bad}

    cache, tmp = tmp_path / "gradio_cache", tmp_path / "server_tmp"
    cache.mkdir()
    tmp.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "BRAIN_CT_MODEL": str(model),
        "GRADIO_TEMP_DIR": str(cache),
        "TMPDIR": str(tmp),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(model), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        ready = server.stdout.readline()
        assert "READY" in ready, server.stderr.read()[-3000:] if server.poll() is not None else ready
        url = f"http://127.0.0.1:{port}/"
        proc = psutil.Process(server.pid)
        warm = Client(url, verbose=False, download_files=False)
        warm.predict(handle_file(str(good[1])), api_name="/predict")  # first request's one-off costs
        with pytest.raises(Exception):  # noqa: B017  (any client-side error type)
            warm.predict(handle_file(str(bad[0])), api_name="/predict")
        time.sleep(1.0)
        rss_before = _rss_mb(proc)

        peak = [rss_before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    peak.append(_rss_mb(proc))
                except psutil.Error:
                    return
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        results: list[dict] = []
        lock = threading.Lock()
        barrier = threading.Barrier(CLIENTS)

        def client_run(index: int) -> None:
            client = Client(url, verbose=False, download_files=False)
            for k, path in enumerate(plan[index]):
                if k == 0:
                    barrier.wait(timeout=120)  # all eight send the shared file together
                start = time.perf_counter()
                record = {"client": index, "file": str(path)}
                try:
                    label, _, text = client.predict(handle_file(str(path)), api_name="/predict")
                    conf = {c["label"]: c["confidence"] for c in label["confidences"]}
                    record.update(ok=True, probability=conf["hemorrhage"], text=text)
                except Exception as exc:  # the client raises for a gr.Error
                    record.update(ok=False, error=str(exc))
                record["seconds"] = time.perf_counter() - start
                with lock:
                    results.append(record)

        threads = [threading.Thread(target=client_run, args=(i,)) for i in range(CLIENTS)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        wall = time.perf_counter() - t0
        time.sleep(2.0)
        stop.set()
        sampler.join()
        rss_after = _rss_mb(proc)
        sent_names = {p.name for p in pool}
        cached = [p for p in cache.rglob("*") if p.is_file()]
        uploads_left = sum(p.name in sent_names for p in cached)  # copies of the uploaded files
        outputs_left = len(cached) - uploads_left  # overlay images served back
        tmp_left = sum(1 for p in tmp.rglob("*") if p.is_file())
    finally:
        if server.poll() is None:
            server.stdin.close()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        server_err = server.stderr.read()

    assert len(results) == CLIENTS * REQUESTS_PER_CLIENT  # none lost
    problems = []
    for r in results:
        if r["file"] in bad_set:
            if r["ok"]:
                problems.append(f"bad file answered: {r}")
            elif Path(r["file"]).name not in r["error"]:
                problems.append(f"error without the file's message: {r['error'][:300]}")
        elif not r["ok"]:
            problems.append(f"good file failed: {r['file']}: {r['error'][:300]}")
        elif abs(r["probability"] - expected[r["file"]]) > 1e-4:
            problems.append(f"{r['file']}: {r['probability']} != in-process {expected[r['file']]}")
    assert not problems, "\n".join(problems)
    shared_answers = [r for r in results if r["file"] == str(shared)]
    assert len(shared_answers) >= CLIENTS and all(r["ok"] for r in shared_answers)
    assert "Traceback" not in server_err, server_err[-3000:]

    latencies = np.array([r["seconds"] for r in results])
    figures = {
        "clients": CLIENTS,
        "requests": len(results),
        "good_requests": sum(r["file"] not in bad_set for r in results),
        "bad_requests": sum(r["file"] in bad_set for r in results),
        "errors": sum(not r["ok"] for r in results),
        "unexpected": len(problems),
        "lost": CLIENTS * REQUESTS_PER_CLIENT - len(results),
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 3),
        "latency_p95_s": round(float(np.percentile(latencies, 95)), 3),
        "latency_max_s": round(float(latencies.max()), 3),
        "wall_s": round(wall, 2),
        "server_rss_before_mb": round(rss_before, 1),
        "server_rss_peak_mb": round(max(peak), 1),
        "server_rss_after_mb": round(rss_after, 1),
        # Kept by gradio until its delete_cache sweep (app.py: every 600 s, files older than 900 s).
        "uploaded_files_left_in_cache": uploads_left,
        "output_files_left_in_cache": outputs_left,
        "server_tmp_files_left": tmp_left,
        "cpus": os.cpu_count(),
        "model": "tiny random ResNet (3 stages, 64 px), CPU",
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("load test:", json.dumps(figures))
    assert rss_after - rss_before < RSS_MARGIN_MB, figures
