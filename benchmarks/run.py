"""Speed and memory benchmark of the brain-CT assistant: ``python -m benchmarks [--smoke]``.

Measures on this machine, side by side in one run, and writes ``benchmarks/results.json`` plus a
printed table (see ``benchmarks/README.md`` for what each row means and ``benchmarks/NOTES.md`` for
the changes these numbers drove):

* ``single``  — one 512×512 CT DICOM → :meth:`Predictor.predict` (decode, preprocessing, one forward
  pass with Grad-CAM, regions, text), the lazy overlay and its PNG encoding, against the FLOOR: the
  same model's forward pass with autograd plus the backward from the hemorrhage log-odds to the last
  encoder stage in plain PyTorch on an already preprocessed tensor. Baseline and candidate run
  interleaved in the same process, so machine load hits both alike.
* ``stages``  — decode, window, resize, forward, Grad-CAM, post-processing (heatmap to the image grid,
  regions, text), overlay, PNG encode.
* ``series``  — 32 slices: ``predict_batch`` (batch 16) against 32 × ``predict``, in slices/s, plus the
  same comparison on the bare model (to show how much batching can give when conv compute dominates).
* ``memory``  — peak RSS of a fresh process reading one slice and a 64-slice series (ResNet-50).
* ``app``     — median latency of ``gradio_client`` ``/predict`` on a launched app against the in-process
  ``predict`` and the app's own event function on the same file.
* ``cold``    — ``python app.py`` to the first answered request, and where the import time goes.
* ``sessions`` — the server's RSS (``python app.py``) after N ``/predict`` calls, each from a new
  ``gradio_client`` session (what a public Space sees from strangers), against its RSS after the first.
* ``ensemble`` — one slice through an ensemble of K = 3 members (``ensemble.json``, random weights of the
  row's architecture) against one of its members alone, interleaved: an ensemble should cost about
  K × one model per slice, nothing more.
* ``train``   — images/s of the project's training step (``BrainCTTrainer`` + ``SliceTransform`` on
  on-the-fly phantoms) against a plain PyTorch loop on the same model, batch and data.

ResNet-50 rows use ``ResNetConfig()`` defaults with random weights (the compute of
``microsoft/resnet-50``); nothing is downloaded. ``--smoke`` runs a tiny model, few repetitions and a
subset of rows in a few seconds (CI keeps the script working with it; no test asserts a time).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from brain_ct.architectures import family_of

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"
ALL_ROWS = ("single", "stages", "series", "ensemble", "memory", "app", "cold", "sessions", "train", "sizes")
SMOKE_ROWS = ("single", "stages", "series", "ensemble", "sizes")
#: Input sizes of the ``sizes`` row (the ResNet-50 issue chooses among them; smoke: the tiny network's).
SIZES, SMOKE_SIZES = (160, 192, 224), (32, 48, 64)

#: ``ResNetConfig()`` defaults: the compute of microsoft/resnet-50.
RESNET50 = {
    "hidden_sizes": (256, 512, 1024, 2048),
    "depths": (3, 4, 6, 3),
    "embedding_size": 64,
    "layer_type": "bottleneck",
}
#: A few-kilobyte network for ``--smoke``.
TINY = {"hidden_sizes": (8, 16), "depths": (1, 1), "embedding_size": 8, "layer_type": "basic"}
TARGETS = {
    "ratio_resnet50": 1.3,
    "ratio_demo": 1.5,
    "series_speedup": 1.5,
    "series_rss_mb": 1500.0,
    "app_overhead_ms": 150.0,
    "cold_start_s": 15.0,
    "session_growth_mb": 100.0,
    "train_ratio": 0.9,
}


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _quiet_hf() -> None:
    """Silence transformers' progress bars and info logs (the table is the output)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def stats(samples: list[float]) -> dict[str, float]:
    """Median, p95, min and count of wall times in seconds (reported in milliseconds)."""
    xs = sorted(samples)
    p95 = xs[min(len(xs) - 1, int(np.ceil(0.95 * len(xs))) - 1)]
    return {
        "median_ms": 1e3 * statistics.median(xs),
        "p95_ms": 1e3 * p95,
        "min_ms": 1e3 * xs[0],
        "n": len(xs),
    }


def interleaved(fns: dict[str, Callable[[], Any]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each function ``warmup`` times, then ``reps`` rounds of all of them in turn; wall times in s.

    Interleaving makes background load (other processes on the 2 cores) hit every candidate alike.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def machine() -> dict[str, Any]:
    """CPU model, cores, torch threads and library versions."""
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("torch", "transformers", "captum", "pydicom", "cv2", "numpy", "gradio", "gradio_client"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # not installed, or no __version__
            versions[mod] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()),
        "versions": versions,
        "gpu": "none (CPU only)",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(field: str = "VmRSS") -> float:
    """Resident memory of this process in MiB: ``VmRSS`` now, or ``VmHWM`` (its peak so far)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------------------------
# models and data
# ------------------------------------------------------------------------------------------------
def make_model(kind: str, folder: Path) -> dict[str, Any]:
    """Write a model folder: ``resnet50`` (random), ``demo`` (bundled if present, else random demo preset), ``tiny``."""
    from brain_ct.model import DEMO_MODEL_DIR, ModelSettings, build_random_model
    from brain_ct.windowing import DEFAULT_WINDOWS

    if (
        kind == "demo"
        and (DEMO_MODEL_DIR / "config.json").is_file()
        and (DEMO_MODEL_DIR / "model.safetensors").is_file()
    ):
        return {"dir": str(DEMO_MODEL_DIR), "source": "bundled models/brain-ct-demo"}
    size = 224
    if kind == "resnet50":
        arch, source = RESNET50, "random ResNetConfig() defaults (ResNet-50 compute)"
    elif kind == "demo":
        from train.args import MODEL_SIZE_PRESETS

        preset = MODEL_SIZE_PRESETS["demo"]
        arch = {k: preset[k] for k in ("hidden_sizes", "depths", "embedding_size", "layer_type")}
        size, source = (
            256,
            "random weights, train 'demo' size preset at 256 px (bundled demo model not present)",
        )
    else:
        arch, size, source = TINY, 64, "random tiny ResNet (smoke)"
    settings = ModelSettings(windows=DEFAULT_WINDOWS, image_size=size, threshold=0.5)
    model = build_random_model(settings, seed=0, **arch)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    return {"dir": str(folder), "source": source}


def make_data(root: Path, size: int, n_series: int) -> dict[str, Any]:
    """A synthetic hemorrhage slice as DICOM, and an ``n_series``-slice synthetic series as DICOM files."""
    from brain_ct.synthetic import generate_series, generate_slice, to_dicom

    root.mkdir(parents=True, exist_ok=True)
    one = root / "slice.dcm"
    to_dicom(generate_slice(3, size, hemorrhage=True)).save_as(one, enforce_file_format=True)
    series_dir = root / "series"
    series_dir.mkdir(exist_ok=True)
    paths = []
    for i, ph in enumerate(generate_series(7, n_series, size, hemorrhage=True)):
        p = series_dir / f"IM{i:04d}.dcm"
        to_dicom(ph, instance_number=i + 1).save_as(p, enforce_file_format=True)
        paths.append(str(p))
    return {"slice": str(one), "series_dir": str(series_dir), "series": paths}


def floor_fn(model: Any, x: Any, hemorrhage_index: int = 1) -> Callable[[], Any]:
    """Plain PyTorch: forward with autograd, backward from the log-odds to the last stage, Grad-CAM weights."""
    import torch

    stage = family_of(model).gradcam_layer(model)
    other = 1 - hemorrhage_index

    def run() -> Any:
        feats: dict[str, torch.Tensor] = {}

        def hook(_m: Any, _i: Any, out: torch.Tensor) -> None:
            out.requires_grad_(True)  # weights are frozen: autograd records only what follows
            feats["f"] = out

        handle = stage.register_forward_hook(hook)
        try:
            logits = model(pixel_values=x).logits
            (grad,) = torch.autograd.grad((logits[:, hemorrhage_index] - logits[:, other]).sum(), feats["f"])
        finally:
            handle.remove()
        cam = torch.relu((grad.mean((2, 3), keepdim=True) * feats["f"]).sum(1))
        return logits.detach(), cam.detach()

    return run


def png_encode(rgb: np.ndarray) -> bytes:
    """PNG bytes as Gradio's ``gr.Image(format="png")`` writes them (PIL, default settings)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="png")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------------
def bench_single(model_dir: str, slice_path: str, reps: int) -> dict[str, Any]:
    """One slice: ``predict`` (channels-last, the default on CPU, and NCHW) against the plain-PyTorch floors."""
    import torch

    from brain_ct.io import load_image
    from brain_ct.predictor import Predictor
    from brain_ct.preprocess import model_input

    pred = Predictor.from_pretrained(model_dir)  # channels-last on CPU
    nchw = Predictor.from_pretrained(model_dir, channels_last=False)
    data = Path(slice_path).read_bytes()
    x = torch.from_numpy(model_input(load_image(data), pred.settings))[None]
    hi = pred.settings.hemorrhage_index
    floor_cl = floor_fn(pred.model, x.contiguous(memory_format=torch.channels_last), hi)
    floor_nchw = floor_fn(nchw.model, x, hi)
    last: dict[str, Any] = {}

    def predict() -> None:
        last["p"] = pred.predict(slice_path)

    def predict_overlay_png() -> None:
        png_encode(pred.predict(slice_path).overlay(0.4))

    times = interleaved(
        {
            "floor": floor_cl,
            "floor (NCHW)": floor_nchw,
            "predict": predict,
            "predict (NCHW)": lambda: nchw.predict(slice_path),
            "predict+overlay+png": predict_overlay_png,
        },
        reps,
        2,
    )
    p = last["p"]
    over = interleaved({"overlay": lambda: p.overlay(0.4)}, max(reps, 5), 1)["overlay"]
    s = {k: stats(v) for k, v in times.items()}
    s["overlay"] = stats(over)
    # The floor is the faster plain-PyTorch layout, so the ratio never flatters the product.
    f = min(s["floor"]["median_ms"], s["floor (NCHW)"]["median_ms"])
    return {
        "image": f"{p.heatmap.shape[1]}x{p.heatmap.shape[0]} DICOM",
        "model_input": int(pred.settings.image_size),
        "times": s,
        "floor_ms": f,
        "ratio_predict_to_floor": s["predict"]["median_ms"] / f,
        "ratio_with_overlay_png_to_floor": s["predict+overlay+png"]["median_ms"] / f,
        "channels_last_speedup_predict": s["predict (NCHW)"]["median_ms"] / s["predict"]["median_ms"],
        "channels_last_speedup_floor": s["floor (NCHW)"]["median_ms"] / s["floor"]["median_ms"],
    }


def bench_sizes(
    folder: Path, slice_path: str, sizes: tuple[int, ...], reps: int, smoke: bool
) -> dict[str, Any]:
    """One 512² DICOM read and explained (``predict``: decode, preprocessing, forward, Grad-CAM, regions)
    against the same model's bare forward pass (``inference_mode``, the predictor's memory format), per input
    size. The network is the ImageNet ResNet-50 v1 layout of ``train.import_resnet50`` with random weights
    (weights do not change the time; nothing is downloaded); ``smoke``: the tiny one."""
    import torch

    from brain_ct.architectures import FAMILIES
    from brain_ct.io import load_image
    from brain_ct.model import ModelSettings, apply_settings_to_config, build_random_model
    from brain_ct.predictor import Predictor
    from brain_ct.preprocess import model_input
    from brain_ct.windowing import DEFAULT_WINDOWS
    from train.import_resnet50 import resnet50_v1_config

    out: dict[str, Any] = {}
    data = Path(slice_path).read_bytes()
    for size in sizes:
        settings = ModelSettings(windows=DEFAULT_WINDOWS, image_size=size, threshold=0.5)
        torch.manual_seed(0)
        if smoke:
            model = build_random_model(settings, **TINY)
        else:
            config = apply_settings_to_config(resnet50_v1_config(num_labels=2), settings)
            model = FAMILIES["resnet"].build(config).eval()
        model.save_pretrained(folder / f"s{size}", safe_serialization=True)
        pred = Predictor.from_pretrained(str(folder / f"s{size}"))
        x = pred._on_device(torch.from_numpy(model_input(load_image(data), pred.settings))[None])

        def forward(m: Any = pred.model, x: Any = x) -> None:
            with torch.inference_mode():
                m(pixel_values=x)

        times = interleaved({"forward": forward, "predict": lambda p=pred: p.predict(slice_path)}, reps, 2)
        st = {k: stats(v) for k, v in times.items()}
        out[str(size)] = {
            "times": st,
            "ratio_predict_to_forward": st["predict"]["median_ms"] / st["forward"]["median_ms"],
        }
    return {
        "model": "tiny (smoke)" if smoke else "ResNet-50 v1 layout (train.import_resnet50), random weights",
        "image": "512x512 DICOM" if not smoke else "128x128 DICOM",
        "by_size": out,
    }


def bench_stages(model_dir: str, slice_path: str, reps: int) -> dict[str, Any]:
    import torch

    from brain_ct import explain, preprocess, windowing
    from brain_ct.io import load_image
    from brain_ct.predictor import Predictor
    from brain_ct.preprocess import model_input

    pred = Predictor.from_pretrained(model_dir)
    s = pred.settings
    data = Path(slice_path).read_bytes()
    ct = load_image(data)
    box = windowing.model_box(ct)
    x = torch.from_numpy(model_input(ct, s))[None].contiguous(memory_format=torch.channels_last)
    logits, cams = explain.gradcam(pred.model, x, s.hemorrhage_index)
    p = pred.predict(ct)
    overlay = p.overlay(0.4)
    patch = preprocess.resize_square(
        preprocess.crop_padded(ct.hu.astype(np.float32, copy=False), box, windowing.AIR_HU), s.image_size
    )

    def forward() -> None:
        with torch.inference_mode():
            pred.model(pixel_values=x)

    fns = {
        "decode": lambda: load_image(data),
        "resize": lambda: preprocess.resize_square(
            preprocess.crop_padded(ct.hu.astype(np.float32, copy=False), box, windowing.AIR_HU), s.image_size
        ),
        "window": lambda: preprocess.normalize(
            np.stack([windowing.window(patch, c, w) for c, w in s.windows]), s.mean, s.std
        ),
        "model_input (resize+window+normalise)": lambda: model_input(ct, s),
        "forward (inference_mode)": forward,
        "forward+Grad-CAM (explain.gradcam)": lambda: explain.gradcam(pred.model, x, s.hemorrhage_index),
        "post (heatmap to image grid, regions, text)": lambda: pred._finish(
            ct, 0.7, explain.heatmap_for_image(explain.normalize_heatmap(cams[0].numpy()), ct)
        ),
        "overlay": lambda: p.overlay(0.4),
        "encode (PNG of the overlay)": lambda: png_encode(overlay),
    }
    times = {k: stats(v) for k, v in interleaved(fns, reps, 1).items()}
    gc = (
        times["forward+Grad-CAM (explain.gradcam)"]["median_ms"]
        - times["forward (inference_mode)"]["median_ms"]
    )
    return {"times": times, "gradcam_extra_ms": gc}


def bench_ensemble(kind: str, folder: Path, slice_path: str, reps: int, k: int = 3) -> dict[str, Any]:
    """One slice: an ensemble of ``k`` members against its first member alone (``Predictor.predict``)."""
    from brain_ct.ensemble import ENSEMBLE_FILE, FORMAT
    from brain_ct.model import ModelSettings, build_random_model
    from brain_ct.predictor import Predictor
    from brain_ct.windowing import DEFAULT_WINDOWS

    arch, size = (RESNET50, 224) if kind == "resnet50" else (TINY, 64)
    settings = ModelSettings(windows=DEFAULT_WINDOWS, image_size=size, threshold=0.5)
    for i in range(k):
        build_random_model(settings, seed=i, **arch).save_pretrained(
            folder / f"m{i}", safe_serialization=True
        )
    spec = {"format": FORMAT, "version": 1, "members": [f"m{i}" for i in range(k)], "threshold": 0.5}
    (folder / ENSEMBLE_FILE).write_text(json.dumps(spec))
    ens = Predictor.from_pretrained(folder)
    one = Predictor.from_pretrained(folder / "m0")
    times = interleaved(
        {"one model": lambda: one.predict(slice_path), f"ensemble of {k}": lambda: ens.predict(slice_path)},
        reps,
        1,
    )
    s = {name: stats(v) for name, v in times.items()}
    ratio = s[f"ensemble of {k}"]["median_ms"] / s["one model"]["median_ms"]
    return {
        "members": k,
        "model_input": size,
        "times": s,
        "ratio_to_one_model": ratio,
        "ratio_per_member": ratio / k,
    }


def bench_series(
    model_dir: str, paths: list[str], reps: int, batch_size: int = 16, warmup: int = 1
) -> dict[str, Any]:
    import torch

    from brain_ct.io import load_image
    from brain_ct.predictor import Predictor
    from brain_ct.preprocess import model_input

    pred = Predictor.from_pretrained(model_dir)
    n = len(paths)
    blobs = [Path(p).read_bytes() for p in paths]
    xs = torch.from_numpy(
        np.stack([model_input(load_image(b, allow_unverified=True), pred.settings) for b in blobs])
    )
    xs = xs.contiguous(memory_format=torch.channels_last)
    fb = [
        floor_fn(pred.model, xs[i : i + batch_size], pred.settings.hemorrhage_index)
        for i in range(0, n, batch_size)
    ]
    f1 = [floor_fn(pred.model, xs[i : i + 1], pred.settings.hemorrhage_index) for i in range(n)]
    fns = {
        "predict_batch": lambda: pred.predict_batch(paths, batch_size=batch_size, allow_unverified=True),
        "predict x n": lambda: [pred.predict(p, allow_unverified=True) for p in paths],
        "floor batched": lambda: [f() for f in fb],
        "floor x n": lambda: [f() for f in f1],
    }
    fb[0]()  # the batched shape's kernels are created once, outside the timing
    times = interleaved(fns, reps, warmup)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "slices": n,
        "batch_size": batch_size,
        "slices_per_s": {k: n / v for k, v in med.items()},
        "speedup_predict_batch": med["predict x n"] / med["predict_batch"],
        "speedup_floor_batched": med["floor x n"] / med["floor batched"],
        "times": {k: stats(v) for k, v in times.items()},
    }


def _child(args: argparse.Namespace) -> None:
    """Subprocess body of the memory row: load the model, read, report peak RSS as JSON on stdout."""
    _quiet_hf()
    from brain_ct.predictor import Predictor

    pred = Predictor.from_pretrained(args.model)
    after_load = _rss_mb()
    if args.child == "single":
        p = pred.predict(args.input)
        p.overlay(0.4)
    else:
        from brain_ct.scan import predict_series
        from brain_ct.series import read_series

        series = read_series(args.input, allow_unverified=True)
        result = predict_series(pred, series)
        assert result.n_slices > 0
    end = _rss_mb()
    # VmHWM is the kernel's RSS high-water mark; ru_maxrss (KiB on Linux) where /proc is missing.
    peak = (
        max(_rss_mb("VmHWM"), end, after_load)
        if Path("/proc/self/status").exists()
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    )
    print(json.dumps({"rss_after_model_load_mb": after_load, "peak_rss_mb": peak, "rss_end_mb": end}))


def bench_memory(model_dir: str, slice_path: str, series_dir: str, n_slices: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, src in (("single", slice_path), ("series", series_dir)):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.run", "--child", kind, "--model", model_dir, "--input", src],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory child ({kind}) failed:\n{proc.stderr[-3000:]}")
        out[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["series"]["slices"] = n_slices
    return out


def bench_app(model_dir: str, slice_path: str, reps: int) -> dict[str, Any]:
    """Launched app (in this process, on loopback) through gradio_client versus in-process calls."""
    os.environ["BRAIN_CT_MODEL"] = model_dir  # the registry below reads it, as app.main() does
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from gradio_client import Client, handle_file

    import app

    reg = app.make_registry(model_dir)
    app.warm_up(reg)
    demo = app.build_demo(reg)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        reader = app.Reader(reg)
        pred = reg.get()
        fns = {
            "gradio_client /predict": lambda: client.predict(handle_file(slice_path), api_name="/predict"),
            "in-process Predictor.predict": lambda: pred.predict(slice_path),
            "in-process event function (read_slice)": lambda: reader.read_slice(slice_path),
        }
        times = {k: stats(v) for k, v in interleaved(fns, reps, 2).items()}
    finally:
        demo.close()
    overlay = reader.read_slice(slice_path)[1]  # the very image the app returns
    times["gradio no-op, same inputs/outputs"] = stats(_noop_round_trip(slice_path, overlay, reps))
    c = times["gradio_client /predict"]["median_ms"]
    return {
        "times": times,
        "gradio_floor_ms": times["gradio no-op, same inputs/outputs"]["median_ms"],
        "overhead_vs_predict_ms": c - times["in-process Predictor.predict"]["median_ms"],
        "overhead_vs_event_function_ms": c - times["in-process event function (read_slice)"]["median_ms"],
    }


def _noop_round_trip(slice_path: str, rgb: np.ndarray, reps: int) -> list[float]:
    """Gradio's own cost: a launched app whose ``/predict`` takes the same file and returns a constant label,
    the app's overlay image (``rgb``) and markdown, without touching the model — the serving floor."""
    import gradio as gr
    from gradio_client import Client, handle_file

    def fn(_file: Any) -> tuple[dict[str, float], np.ndarray, str]:
        return {"hemorrhage": 0.3, "normal": 0.7}, rgb, "text"

    with gr.Blocks() as noop:
        f = gr.File()
        outs = [gr.Label(), gr.Image(type="numpy", format="png"), gr.Markdown()]
        f.change(fn, inputs=f, outputs=outs, api_name="predict")
    noop.queue()
    port = _free_port()
    noop.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        return interleaved(
            {"noop": lambda: client.predict(handle_file(slice_path), api_name="/predict")}, reps, 2
        )["noop"]
    finally:
        noop.close()


def _importtime(top: int = 12) -> list[dict[str, Any]]:
    """Top-level modules by cumulative import time of ``import app`` (``python -X importtime``)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cum_us, name = line[len("import time:") :].split("|", 2)
        name = name.strip()
        # Top-level packages at any depth (each is imported once; its time includes what it pulls in).
        if "." not in name and name != "app" and not name.startswith("_"):
            rows.append({"module": name, "cumulative_s": int(cum_us) / 1e6})
    rows.sort(key=lambda r: -r["cumulative_s"])
    return rows[:top]


def bench_cold(model_dir: str, slice_path: str) -> dict[str, Any]:
    """``python app.py --port P`` → first answered ``/predict``; plus ``import app`` time and its top imports."""
    from gradio_client import Client, handle_file

    env = {
        **os.environ,
        "BRAIN_CT_MODEL": model_dir,
        "PYTHONPATH": str(ROOT),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    t0 = time.perf_counter()
    imp = subprocess.run(
        [sys.executable, "-c", "import app"], cwd=ROOT, env=env, capture_output=True, timeout=300
    )
    import_s = time.perf_counter() - t0
    if imp.returncode != 0:
        raise RuntimeError(f"import app failed: {imp.stderr.decode()[-2000:]}")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    up_s = first_s = None
    try:
        while time.perf_counter() - t0 < 180:
            if proc.poll() is not None:
                raise RuntimeError(f"python app.py exited with {proc.returncode}")
            try:
                client = Client(url, verbose=False)
            except Exception:  # not listening yet
                time.sleep(0.2)
                continue
            up_s = time.perf_counter() - t0
            client.predict(handle_file(slice_path), api_name="/predict")
            first_s = time.perf_counter() - t0
            break
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "import_app_s": import_s,
        "server_up_s": up_s,
        "first_answer_s": first_s,
        "top_imports_of_app": _importtime(),
    }


def _process_rss_mb(pid: int) -> float:
    """Resident memory of another process in MiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def bench_sessions(model_dir: str, slice_path: str, n_sessions: int, root: Path = ROOT) -> dict[str, Any]:
    """Server RSS after ``n_sessions`` ``/predict`` calls, each from a new client session (``python app.py``).

    ``root`` is the checkout whose ``app.py`` is served (to compare with an older version).
    """
    from gradio_client import Client, handle_file

    env = {
        **os.environ,
        "BRAIN_CT_MODEL": model_dir,
        "PYTHONPATH": str(root),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    env.pop("GRADIO_TEMP_DIR", None)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rss: list[float] = []
    try:
        t0 = time.perf_counter()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"python app.py exited with {proc.returncode}")
            try:
                Client(url, verbose=False).predict(handle_file(slice_path), api_name="/predict")
                break
            except Exception:  # not listening yet
                if time.perf_counter() - t0 > 180:
                    raise
                time.sleep(0.5)
        start = _process_rss_mb(proc.pid)
        t0 = time.perf_counter()
        for i in range(n_sessions):
            Client(url, verbose=False).predict(handle_file(slice_path), api_name="/predict")
            if (i + 1) % 10 == 0:
                rss.append(round(_process_rss_mb(proc.pid), 1))
        seconds = time.perf_counter() - t0
        end = _process_rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "sessions": n_sessions,
        "rss_after_first_call_mb": round(start, 1),
        "rss_after_sessions_mb": round(end, 1),
        "growth_mb": round(end - start, 1),
        "rss_every_10_sessions_mb": rss,
        "seconds": round(seconds, 1),
    }


def bench_train(
    model_dir: str, n_records: int, batch: int, steps: int, warmup: int, workers: int
) -> dict[str, Any]:
    """Images/s of the project's training step against a plain PyTorch loop on the same model, batch and data."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForImageClassification, TrainerCallback, default_data_collator

    from brain_ct.model import load_model
    from train.args import BrainCTTrainingArguments
    from train.augment import Augmenter
    from train.data.phantoms import PhantomCache, synthetic_records
    from train.data.splits import to_dataset
    from train.data.transform import SliceTransform, attach_transform
    from train.trainer import EXTRA_KEYS, BrainCTTrainer

    _, settings = load_model(model_dir)
    size = settings.image_size
    records = synthetic_records(n_records, "train", 0, 0.5)
    phantoms = PhantomCache()
    phantoms.prefetch(records, 256, processes=min(2, os.cpu_count() or 1))
    transform = SliceTransform(
        settings, augmenter=Augmenter(), allow_unverified=True, synthetic_size=256, phantoms=phantoms
    )
    dataset = attach_transform(to_dataset(records), transform)

    def fresh_model() -> Any:
        torch.manual_seed(0)
        m = AutoModelForImageClassification.from_pretrained(
            model_dir, use_safetensors=True, dtype=torch.float32
        )
        return m.train()

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.ends.append(time.perf_counter())

    def rate(ends: list[float]) -> float:
        e = ends[warmup:]
        return batch * (len(e) - 1) / (e[-1] - e[0])

    with tempfile.TemporaryDirectory() as tmp:
        clock = StepClock()
        args = BrainCTTrainingArguments(
            output_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=batch,
            eval_strategy="no",
            save_strategy="no",
            load_best_model_at_end=False,
            report_to=[],
            logging_steps=10_000,
            dataloader_num_workers=workers,
            stage1_epochs=0,
            stage2_epochs=1,
            disable_tqdm=True,
            use_cpu=True,
        )
        trainer = BrainCTTrainer(
            model=fresh_model(),
            args=args,
            train_dataset=dataset,
            data_collator=default_data_collator,
            class_weights=(1.0, 1.0),
            callbacks=[clock],
        )
        trainer.train()
        trainer_ips = rate(clock.ends)

    model = fresh_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=default_data_collator,
        drop_last=True,
    )

    def step(b: dict[str, Any]) -> None:
        for k in EXTRA_KEYS:
            b.pop(k, None)
        loss = F.cross_entropy(model(pixel_values=b["pixel_values"]).logits, b["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    ends: list[float] = []
    fixed = None
    while len(ends) < steps:
        for b in loader:
            fixed = fixed if fixed is not None else {k: v.clone() for k, v in b.items()}
            step(b)
            ends.append(time.perf_counter())
            if len(ends) >= steps:
                break
    plain_ips = rate(ends)
    # The same loop on one batch held in memory: the compute-only ceiling (is data loading the bottleneck?).
    ends = []
    for _ in range(max(warmup + 3, steps // 2)):
        step(dict(fixed))
        ends.append(time.perf_counter())
    compute_ips = rate(ends)
    # Data alone: examples/s of the transform on this process (what the loader must sustain).
    t0 = time.perf_counter()
    k = min(len(dataset), 2 * batch)
    for i in range(k):
        dataset[i]
    data_ips = k / (time.perf_counter() - t0)
    return {
        "model_input": size,
        "batch": batch,
        "steps": steps,
        "warmup_steps": warmup,
        "dataloader_workers": workers,
        "images_per_s": {
            "project Trainer": trainer_ips,
            "plain PyTorch loop": plain_ips,
            "plain loop, batch in memory (compute only)": compute_ips,
            "data transform alone, 1 process": data_ips,
        },
        "ratio_trainer_to_plain": trainer_ips / plain_ips,
    }


# ------------------------------------------------------------------------------------------------
# table
# ------------------------------------------------------------------------------------------------
def _f(v: float | None, unit: str = "", nd: int = 0) -> str:
    return "—" if v is None else f"{v:.{nd}f}{unit}"


def table(res: dict[str, Any]) -> str:
    """Markdown table of the key numbers (what ``benchmarks/README.md`` shows)."""
    m = res["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs, torch {m['versions']['torch']} with "
        f"{m['torch_threads']} threads, CPU only; load average at start {m['load_average'][0]:.1f}.",
        "",
        "| measurement | model | result | target |",
        "|---|---|---|---|",
    ]
    for key, r in res.get("single", {}).items():
        t = r["times"]
        tgt = TARGETS["ratio_resnet50"] if key == "resnet50" else TARGETS["ratio_demo"]
        lines.append(
            f"| one 512² DICOM slice: `predict` median / p95 | {key} | {_f(t['predict']['median_ms'], ' ms')} / "
            f"{_f(t['predict']['p95_ms'], ' ms')} | |"
        )
        lines.append(
            f"| floor (forward + backward to last stage), channels-last / NCHW | {key} | "
            f"{_f(t['floor']['median_ms'], ' ms')} / {_f(t['floor (NCHW)']['median_ms'], ' ms')} | |"
        )
        lines.append(
            f"| `predict`, channels-last (default) / NCHW | {key} | {_f(t['predict']['median_ms'], ' ms')} / "
            f"{_f(t['predict (NCHW)']['median_ms'], ' ms')} (×{r['channels_last_speedup_predict']:.2f}) | |"
        )
        lines.append(
            f"| ratio `predict` / floor (+ overlay + PNG) | {key} | {r['ratio_predict_to_floor']:.2f} "
            f"({r['ratio_with_overlay_png_to_floor']:.2f}) | ≤ {tgt} |"
        )
    for key, r in res.get("stages", {}).items():
        parts = ", ".join(
            f"{k.split(' (')[0]} {v['median_ms']:.1f}"
            for k, v in r["times"].items()
            if not k.startswith("model_input") and not k.startswith("forward+")
        )
        lines.append(f"| stages, ms (Grad-CAM extra {r['gradcam_extra_ms']:.1f}) | {key} | {parts} | |")
    for key, r in res.get("series", {}).items():
        sps = r["slices_per_s"]
        lines.append(
            f"| {r['slices']}-slice series: `predict_batch` vs {r['slices']}× `predict`, slices/s | {key} | "
            f"{sps['predict_batch']:.2f} vs {sps['predict x n']:.2f} (×{r['speedup_predict_batch']:.2f}; "
            f"bare model ×{r['speedup_floor_batched']:.2f}) | ≥ ×{TARGETS['series_speedup']} |"
        )
    for key, r in res.get("ensemble", {}).items():
        t = r["times"]
        k = r["members"]
        lines.append(
            f"| one slice: ensemble of {k} vs one member, `predict` median | {key} | "
            f"{t[f'ensemble of {k}']['median_ms']:.0f} vs {t['one model']['median_ms']:.0f} ms "
            f"(×{r['ratio_to_one_model']:.2f} = {r['ratio_per_member']:.2f} per member) | ≈ ×{k} |"
        )
    for key, r in res.get("memory", {}).items():
        lines.append(
            f"| peak RSS, one slice / {r['series']['slices']}-slice series | {key} | "
            f"{r['single']['peak_rss_mb']:.0f} MB / {r['series']['peak_rss_mb']:.0f} MB | "
            f"< {TARGETS['series_rss_mb']:.0f} MB (series) |"
        )
    if "app" in res:
        r = res["app"]
        t = r["times"]
        lines.append(
            f"| app round trip (`gradio_client`) vs in-process `predict` | {r['model']} | "
            f"{t['gradio_client /predict']['median_ms']:.0f} vs {t['in-process Predictor.predict']['median_ms']:.0f} ms "
            f"(overhead {r['overhead_vs_predict_ms']:.0f} ms; vs event fn {r['overhead_vs_event_function_ms']:.0f}; "
            f"Gradio no-op app {r['gradio_floor_ms']:.0f} ms) "
            f"| ≤ {TARGETS['app_overhead_ms']:.0f} ms |"
        )
    if "cold" in res:
        r = res["cold"]
        lines.append(
            f"| cold start `python app.py` → first answer (server up; `import app`) | {r['model']} | "
            f"{_f(r['first_answer_s'], ' s', 1)} ({_f(r['server_up_s'], ' s', 1)}; {r['import_app_s']:.1f} s) "
            f"| ≤ {TARGETS['cold_start_s']:.0f} s |"
        )
    if "sessions" in res:
        r = res["sessions"]
        lines.append(
            f"| server RSS growth over {r['sessions']} new-session `/predict` calls | {r['model']} | "
            f"{r['growth_mb']:+.0f} MB ({r['rss_after_first_call_mb']:.0f} → {r['rss_after_sessions_mb']:.0f} MB) "
            f"| < {TARGETS['session_growth_mb']:.0f} MB |"
        )
    if "sizes" in res:
        r = res["sizes"]
        for size, v in r["by_size"].items():
            t = v["times"]
            lines.append(
                f"| {r['image']} read + explained (`predict`) / bare forward, {size} px | {r['model']} | "
                f"{_f(t['predict']['median_ms'], ' ms')} / {_f(t['forward']['median_ms'], ' ms')} = "
                f"×{v['ratio_predict_to_forward']:.2f} | ≤ ×{TARGETS['ratio_resnet50']} |"
            )
    if "train" in res:
        r = res["train"]
        ips = r["images_per_s"]
        lines.append(
            f"| training images/s: project Trainer vs plain loop (compute only) | {r['model']} | "
            f"{ips['project Trainer']:.1f} vs {ips['plain PyTorch loop']:.1f} ({ips['plain loop, batch in memory (compute only)']:.1f}) "
            f"= ×{r['ratio_trainer_to_plain']:.2f} | ≥ ×{TARGETS['train_ratio']} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model, few repetitions, a subset of rows (CI)")
    ap.add_argument(
        "--rows",
        nargs="+",
        choices=ALL_ROWS,
        default=None,
        help="rows to run (default: all); with an existing --out file, only these rows are replaced",
    )
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per single-slice measurement")
    ap.add_argument(
        "--out", default=None, help=f"results JSON (default {DEFAULT_OUT}; --smoke: not written unless given)"
    )
    ap.add_argument("--child", choices=("single", "series"), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        _child(args)
        return {}
    _quiet_hf()
    from brain_ct.predictor import configure_threads

    configure_threads()
    smoke = args.smoke
    rows = tuple(args.rows or (SMOKE_ROWS if smoke else ALL_ROWS))
    reps = args.reps or (3 if smoke else 9)
    res: dict[str, Any] = {"smoke": smoke, "machine": machine(), "targets": TARGETS}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="brain_ct_bench_") as tmp_s:
        tmp = Path(tmp_s)
        n_series = 4 if smoke else 64
        data = make_data(tmp / "data", 128 if smoke else 512, n_series)
        kinds = ("tiny",) if smoke else ("resnet50", "demo")
        models = {k: make_model(k, tmp / k) for k in kinds}
        res["models"] = {k: v["source"] for k, v in models.items()}
        big = "tiny" if smoke else "resnet50"
        small = "tiny" if smoke else "demo"

        def run(name: str, key: str | None, fn: Callable[[], dict[str, Any]]) -> None:
            t0 = time.perf_counter()
            print(f"[bench] {name}{'' if key is None else ' ' + key} ...", file=sys.stderr, flush=True)
            out = fn()
            out["bench_wall_s"] = round(time.perf_counter() - t0, 1)
            if key is None:
                res[name] = out
            else:
                res.setdefault(name, {})[key] = out

        for key in kinds:
            if "single" in rows:
                run(
                    "single",
                    key,
                    lambda k=key: bench_single(
                        models[k]["dir"], data["slice"], reps if k == big else 3 * reps
                    ),
                )
            if "stages" in rows:
                run(
                    "stages",
                    key,
                    lambda k=key: bench_stages(
                        models[k]["dir"], data["slice"], reps if k == big else 3 * reps
                    ),
                )
        if "series" in rows:
            n = min(32, n_series)
            for key in kinds:
                # ResNet-50: one round (4 × 32 slices at ~0.5-1 s each, interleaved); the demo model three.
                run(
                    "series",
                    key,
                    lambda k=key: bench_series(
                        models[k]["dir"],
                        data["series"][:n],
                        1 if smoke or k == big else 3,
                        warmup=0 if smoke else (0 if k == big else 1),
                    ),
                )
        if "ensemble" in rows:
            run(
                "ensemble",
                big,
                lambda: bench_ensemble(big, tmp / "ensemble", data["slice"], reps if not smoke else 2),
            )
        if "sizes" in rows:
            run(
                "sizes",
                None,
                lambda: bench_sizes(
                    tmp / "sizes",
                    data["slice"],
                    SMOKE_SIZES if smoke else SIZES,
                    reps if not smoke else 2,
                    smoke,
                ),
            )
        if "memory" in rows:
            run(
                "memory",
                big,
                lambda: bench_memory(models[big]["dir"], data["slice"], data["series_dir"], n_series),
            )
        if "app" in rows:
            run(
                "app",
                None,
                lambda: {
                    "model": small,
                    **bench_app(models[small]["dir"], data["slice"], 5 if smoke else 30),
                },
            )
        if "cold" in rows:
            run("cold", None, lambda: {"model": small, **bench_cold(models[small]["dir"], data["slice"])})
        if "sessions" in rows:
            run(
                "sessions",
                None,
                lambda: {
                    "model": small,
                    **bench_sessions(models[small]["dir"], data["slice"], 10 if smoke else 60),
                },
            )
        if "train" in rows:
            run(
                "train",
                None,
                lambda: {
                    "model": small,
                    **bench_train(
                        models[small]["dir"],
                        64 if not smoke else 8,
                        16 if not smoke else 4,
                        14 if not smoke else 4,
                        3 if not smoke else 1,
                        0,
                    ),
                },
            )
    res["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    res["machine"]["load_average_end"] = list(os.getloadavg())
    out = args.out or (None if smoke else str(DEFAULT_OUT))
    if out and args.rows and not smoke and Path(out).is_file():
        # A rerun of some rows updates them in the existing results and keeps the others.
        merged = json.loads(Path(out).read_text())
        merged.update({k: v for k, v in res.items() if k in rows or k == "models"})
        merged.setdefault("reruns", []).append({"rows": list(rows), "machine": res["machine"]})
        res = merged
    if out:
        Path(out).write_text(json.dumps(res, indent=2) + "\n")
    print(table(res))
    if out:
        print(f"\nwritten: {out}")
    return res


if __name__ == "__main__":
    main()
