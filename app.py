"""Gradio app: drop a head-CT slice or a whole scan, see the model's reading, a Grad-CAM heatmap and an explanation.

Wiring only: every image and model operation lives in :mod:`brain_ct`. Importing this module does
no work: no folder, no environment change, no thread, no model. :func:`create_app` builds the page
from :class:`AppSettings`; :func:`main` (``python app.py``, what Hugging Face Spaces runs) prepares
the run folder, loads the model once, warms it up and launches.

    python app.py [--model ID_OR_DIR] [--port 7860] [--host 127.0.0.1] [--share] [--mcp] [--verbose]

Model order: ``--model``, env ``BRAIN_CT_MODEL``, the bundled demo model; ``--revision`` or env
``BRAIN_CT_MODEL_REVISION`` pins a Hub model to a commit. Extra models for the dropdown: env
``BRAIN_CT_MODELS`` (comma-separated Hub ids or folders), loaded lazily and cached.

API: ``gradio_client.Client(url).predict(handle_file(path), api_name="/predict")`` returns
(label, overlay image path, explanation markdown): ``label["label"]`` is the verdict, "hemorrhage"
exactly when P(hemorrhage) >= the model's threshold; its confidences are threshold-relative scores
(0.5 = at the threshold), and the explanation states P and the threshold (and, first, a caveat when
the head-CT check was skipped). Subtype models (RSNA's any + five subtypes): after ``/predict``, the
same client's ``/subtypes`` returns that reading's five subtype probabilities as a label value
(``{"label": leading subtype, "confidences": [{"label", "confidence"}, …]}``; None for binary models),
and ``/heatmap`` with a target (``"any"`` or a subtype) re-explains it: (overlay, explanation, PDF report),
without a new upload. ``/predict_series`` takes a list of files (a zip, the slices, or one
NIfTI volume ``.nii`` / ``.nii.gz``) and an optional series id, and returns (scan verdict markdown,
JSON, PDF report path, heatmap volume path): the heatmap volume is a float32 NIfTI on the scan's own
grid (opens over the scan in 3D Slicer / ITK-SNAP), None for PNG/JPG slices (no geometry); the JSON lists
``slices`` with a 0-based ``index`` (people see slice ``index + 1``), ``skipped`` and ``errors``
(file and reason), ``series`` (every series found) and ``head_check``; subtype models add ``subtypes``
per slice and for the scan (as the CLI's JSON). Only uploaded files are read: a URL given as the file is refused.

Per session the page keeps only a key; readings live in a bounded, time-limited cache
(:class:`ResultCache`). Everything a run writes lives under one folder, swept by
age while running and removed at exit, on SIGTERM/SIGINT, or at the next start after a crash
(:attr:`AppSettings.run_dir`).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import io
import logging
import os
import re
import shutil
import signal
import string
import tempfile
import threading
import time
import types
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
from gradio.utils import NamedString
from gradio_client import utils as client_utils

from brain_ct import DISCLAIMER, wording
from brain_ct.errors import BrainCTError, InvalidInputError
from brain_ct.io import CTImage, load_image
from brain_ct.labels import ANY, SUBTYPES
from brain_ct.model import SUBTYPE_DEMO_MODEL_DIR, resolve_model_id, shown_model_id
from brain_ct.nifti import write_heatmap_nifti
from brain_ct.predictor import Prediction, Predictor
from brain_ct.report import plural, probability_plot_png, write_report
from brain_ct.scan import SeriesPrediction, predict_series
from brain_ct.series import list_series, read_series
from brain_ct.windowing import PRESETS, display_window

log = logging.getLogger("brain_ct.app")

MAX_FILE_SIZE = "200mb"
CONCURRENCY = 2
QUEUE_SIZE = 64
#: (sweep every s, delete older than s): uploads, overlays and report links expire after ~5 minutes.
UPLOAD_CACHE = (60, 300)
#: Outputs (overlays, reports) are deleted this long after they were written; swept every SWEEP_EVERY_S.
OUTPUT_MAX_AGE_S = 300
SWEEP_EVERY_S = 60
#: A session's reading is kept this long after its last use (then the page asks for the file again).
SESSION_TTL_S = 900
#: Gradio keeps the state of at most this many sessions (its default, 10,000, is unbounded in practice).
STATE_SESSION_CAPACITY = 128
#: Readings kept in memory at once over all sessions, and their total size; the oldest go first
#: (the newest always stays, so a large scan can still be browsed).
CACHE_ENTRIES = 16
CACHE_BYTES = 512 * 1024 * 1024
#: Largest scan read per request: slices, and pixels over all slices (~1.2 GB of arrays at most).
MAX_SCAN_SLICES = 300
MAX_SCAN_PIXELS = 128 * 512 * 512
WINDOW_CHOICES = ["brain", "subdural", "blood", "bone", "soft_tissue", "custom"]
#: What the Grad-CAM of a subtype model can explain: P(any hemorrhage), or one subtype's output.
HEATMAP_CHOICES = [ANY, *SUBTYPES]
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
#: Real anatomy among the examples: a level of the repository's real head that training holds out, and
#: pydicom's two real head-CT test slices (a posterior-fossa level; a lossy JPEG 2000 whose blobs read as blood).
REAL_EXAMPLE_FILES = (Path(__file__).resolve().parent / "data" / "real_anatomy" / "dcm_qa_ct-GE" / "15.dcm",)
REAL_EXAMPLES = ("J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm")
#: The error box stands out from the results (it stays until the next upload).
APP_CSS = (
    "#error-box, #scan-error-box {border-left: 4px solid #c0392b; padding: 4px 10px; background: #fdecea;}"
)
#: Options for ``Blocks.launch``: bounded memory per public server, and the page's style.
LAUNCH_OPTIONS: dict[str, Any] = {
    "css": APP_CSS,
    "max_file_size": MAX_FILE_SIZE,
    "state_session_capacity": STATE_SESSION_CAPACITY,
}


def run_parent() -> Path:
    """Where run folders live: ``<BRAIN_CT_TMP or the system temp folder>/brain_ct_app``."""
    return Path(os.environ.get("BRAIN_CT_TMP") or tempfile.gettempdir()) / "brain_ct_app"


def default_run_dir() -> Path:
    """This process's run folder, ``<run_parent()>/run-<pid>`` (named only; nothing is created)."""
    return run_parent() / f"run-{os.getpid()}"


def _extra_models() -> list[str]:
    """Env ``BRAIN_CT_MODELS`` (comma-separated); unset: the bundled subtype demo, when it is there."""
    listed = os.environ.get("BRAIN_CT_MODELS")
    if listed is not None:
        return [m.strip() for m in listed.split(",") if m.strip()]
    return [str(SUBTYPE_DEMO_MODEL_DIR)] if (SUBTYPE_DEMO_MODEL_DIR / "config.json").is_file() else []


@dataclass
class AppSettings:
    """What one app server is built from: its models, its run folder and its per-request limits.

    Attributes:
        model: Hub id or folder of the default model; None: env ``BRAIN_CT_MODEL``, then the bundled demo.
        revision: Hub revision of the default model (a commit hash pins it).
        extra_models: more models for the dropdown (Hub ids or folders), loaded on first use.
        run_dir: everything this server writes (outputs; Gradio's upload cache when :func:`main` runs
            it): removed at exit.
        max_scan_slices: largest scan read per request, in slices.
        max_scan_pixels: largest scan read per request, in pixels over all slices.
    """

    model: str | None = None
    revision: str | None = None
    extra_models: list[str] = field(default_factory=list)
    run_dir: Path = field(default_factory=default_run_dir)
    max_scan_slices: int = MAX_SCAN_SLICES
    max_scan_pixels: int = MAX_SCAN_PIXELS

    @classmethod
    def from_env(cls, model: str | None = None, revision: str | None = None) -> AppSettings:
        """Settings for a server: ``revision`` defaults to env ``BRAIN_CT_MODEL_REVISION``, the extra
        models come from env ``BRAIN_CT_MODELS`` (comma-separated), the run folder from ``BRAIN_CT_TMP``."""
        return cls(
            model=model,
            revision=revision or os.environ.get("BRAIN_CT_MODEL_REVISION") or None,
            extra_models=_extra_models(),
        )

    @property
    def output_dir(self) -> Path:
        """Overlays and reports, one fresh sub-folder per request."""
        return self.run_dir / "outputs"

    @property
    def gradio_cache(self) -> Path:
        """Gradio's upload cache, once :func:`main` has pointed ``GRADIO_TEMP_DIR`` here."""
        return self.run_dir / "gradio"


class ModelRegistry:
    """Predictors by model id: the default is loaded at start, extra ones on first use, all cached."""

    def __init__(self, default: str, extra: list[str] | None = None, revision: str | None = None) -> None:
        # Choices are the ids users see (the bundled demo as models/brain-ct-demo, not the server's path).
        self._sources = {shown_model_id(m): m for m in [*(extra or [])[::-1], default]}
        self.default = shown_model_id(default)
        self.revision = revision
        self.choices = list(dict.fromkeys([self.default, *(shown_model_id(m) for m in extra or [])]))
        self._cache: dict[str, Predictor] = {}
        self._lock = threading.Lock()

    def get(self, model_id: str | None = None) -> Predictor:
        model_id = model_id or self.default
        if model_id not in self.choices:
            raise gr.Error(f"unknown model {model_id!r}; choose one of {', '.join(self.choices)}")
        with self._lock:
            if model_id not in self._cache:
                try:
                    revision = self.revision if model_id == self.default else None
                    self._cache[model_id] = Predictor.from_pretrained(
                        self._sources[model_id], revision=revision
                    )
                except BrainCTError as exc:
                    raise gr.Error(str(exc), print_exception=False) from None
            return self._cache[model_id]

    def banner(self, model_id: str | None = None) -> str:
        settings = self.get(model_id).settings
        text = f"**Model in use:** `{settings.model_id}`"
        if settings.is_ensemble:
            n = len(settings.member_ids)
            text += f" (an ensemble of {n} models: P(hemorrhage) is their mean)"
        if settings.is_demo:
            text += f" — ⚠️ **{wording.DEMO_NOTE}**; never use it on patients."
        elif settings.trained_on:
            text += f" — trained on {md_escape(str(settings.trained_on))}"
        return text


# --------------------------------------------------------------------------- run folder and outputs


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def sweep_dead_runs(parent: Path) -> list[Path]:
    """Remove the run folders of servers that are no longer running (killed before they could clean up)."""
    removed = []
    for folder in parent.glob("run-*") if parent.is_dir() else []:
        try:
            pid = int(folder.name.removeprefix("run-"))
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def sweep_outputs(
    settings: AppSettings, now: float | None = None, max_age_s: float = OUTPUT_MAX_AGE_S
) -> None:
    """Delete this run's outputs (overlay images, reports) older than ``max_age_s``, and the empty
    folders Gradio's own cache sweep leaves behind (it deletes the files, not their folders)."""
    now = time.time() if now is None else now
    for old in settings.output_dir.iterdir() if settings.output_dir.is_dir() else []:
        try:
            if now - old.stat().st_mtime > max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another sweep removed it first
            continue
    cache = settings.gradio_cache
    for folder in cache.iterdir() if cache.is_dir() else []:
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
                folder.rmdir()  # only when empty
        except OSError:  # not empty, or already gone
            continue


def remove_run_dir(settings: AppSettings) -> None:
    """Remove everything this run wrote (at exit, and on SIGTERM/SIGINT)."""
    shutil.rmtree(settings.run_dir, ignore_errors=True)


def prepare_run_dir(settings: AppSettings) -> None:
    """Sweep the folders of dead runs, create this run's folder, point Gradio's cache into it and
    remove it at exit.

    Gradio reads ``GRADIO_TEMP_DIR`` when each component is built and when the server starts
    (``gradio.utils.get_upload_folder``): call this before :func:`create_app`.
    """
    removed = sweep_dead_runs(settings.run_dir.parent)
    if removed:
        log.info("removed %d folder(s) left by earlier runs", len(removed))
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(settings.gradio_cache)
    atexit.register(remove_run_dir, settings)


_sweeper_started = threading.Event()


def start_sweeper(settings: AppSettings, every_s: float = SWEEP_EVERY_S) -> None:
    """Once per process: a daemon thread that sweeps old outputs even while nobody asks for a report."""
    if _sweeper_started.is_set():
        return
    _sweeper_started.set()

    def loop() -> None:
        while True:
            time.sleep(every_s)
            try:
                sweep_outputs(settings)
            except OSError as exc:  # a sweep must never kill the thread
                log.warning("output sweep failed: %s", exc)

    threading.Thread(target=loop, name="brain_ct-sweeper", daemon=True).start()


def output_folder(settings: AppSettings) -> Path:
    """A fresh folder for one request's outputs: identical concurrent requests never share a file."""
    folder = settings.output_dir / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def _unique_image_file(component: gr.Image, image: np.ndarray) -> str:
    """Write an image output to its own new file in Gradio's cache, completely before it is named.

    Gradio writes returned arrays to a content-hash path without an atomic write, so two identical
    requests at once could serve a half-written file.
    """
    folder = Path(component.GRADIO_CACHE) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    path = folder / "image.png"
    rgb = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), rgb):
        raise gr.Error("the result image could not be written; please try again")
    return str(path)


def _write_images_to_unique_files(component: gr.Image) -> gr.Image:
    original = component.postprocess

    def postprocess(self: gr.Image, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = _unique_image_file(self, value)
        return original(value)

    component.postprocess = types.MethodType(postprocess, component)  # type: ignore[method-assign]
    return component


def _uploads_only(component: gr.File) -> gr.File:
    """Read uploaded files only: refuse a URL an API client passes as "the file" (Gradio would download
    it without the upload size limit), and skip the empty temp file Gradio makes per upload."""
    original_async = component.async_move_resource_to_block_cache
    original_sync = component.move_resource_to_block_cache

    def refuse(value: Any) -> None:
        if value is not None and client_utils.is_http_url_like(str(value)):
            raise gr.Error(
                "A web address was given instead of a file. Only uploaded files are read: download the "
                "file and upload it.",
                print_exception=False,
            )

    async def move_async(self: gr.File, value: Any) -> Any:
        refuse(value)
        return await original_async(value)

    def move_sync(self: gr.File, value: Any) -> Any:
        refuse(value)
        return original_sync(value)

    def single(self: gr.File, f: Any) -> Any:
        # Gradio's filepath mode opens a NamedTemporaryFile(delete=False) per file and never uses it.
        return NamedString(f.path) if self.type == "filepath" else type(self)._process_single_file(self, f)

    component.async_move_resource_to_block_cache = types.MethodType(move_async, component)  # type: ignore[method-assign]
    component.move_resource_to_block_cache = types.MethodType(move_sync, component)  # type: ignore[method-assign]
    component._process_single_file = types.MethodType(single, component)  # type: ignore[method-assign]
    return component


# --------------------------------------------------------------------------- per-session results


@cache
def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None


def limit_malloc_arenas(n: int = 2) -> None:
    """Let glibc use at most ``n`` malloc arenas (unless ``MALLOC_ARENA_MAX`` is set).

    glibc gives each thread its own arena and keeps freed memory there; Gradio runs events on a pool
    of up to 40 threads, and a server grew by ~0.5 GB over 60 new-session requests that way
    (``python -m benchmarks --rows sessions``), never returned.
    """
    libc = _glibc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(-8, int(n))  # -8 = M_ARENA_MAX


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps it otherwise)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _nbytes(value: Any, seen: set[int] | None = None) -> int:
    """Approximate bytes held by the arrays of a reading (CTImages, predictions, series)."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(_nbytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v, seen) for v in value)
    if hasattr(value, "__dict__"):
        return sum(_nbytes(v, seen) for v in vars(value).values())
    return 0


class ResultCache:
    """Readings by key, bounded in entries, bytes and age; ``gr.State`` holds only the key.

    Gradio keeps a session's state until the tab closes (an hour later) or, for API clients, until
    10,000 sessions exist: holding whole images there grows the server by megabytes per session.
    Thread-safe: events of many sessions run at once.
    """

    def __init__(
        self, max_entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES, ttl_s: float = SESSION_TTL_S
    ) -> None:
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self._items: OrderedDict[str, tuple[float, int, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, value: dict[str, Any]) -> str:
        key = uuid.uuid4().hex
        size = _nbytes(value)
        with self._lock:
            self._items[key] = (time.monotonic(), size, value)
            self._evict()
        return key

    def get(self, key: Any) -> dict[str, Any] | None:
        if not isinstance(key, str):
            return None
        with self._lock:
            self._evict()
            item = self._items.get(key)
            if item is None:
                return None
            self._items[key] = (time.monotonic(), item[1], item[2])
            self._items.move_to_end(key)
            return item[2]

    def discard(self, key: Any) -> None:
        """``gr.State``'s delete callback: the session ended or its state expired."""
        if isinstance(key, str):
            with self._lock:
                gone = self._items.pop(key, None)
            if gone is not None:
                release_memory()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(size for _, size, _ in self._items.values())

    def _evict(self) -> None:
        now = time.monotonic()
        n = len(self._items)
        for key in [k for k, (t, _, _) in self._items.items() if now - t > self.ttl_s]:
            del self._items[key]
        total = sum(size for _, size, _ in self._items.values())
        # The newest entry always stays: it is the reading the page is about to show.
        while len(self._items) > 1 and (len(self._items) > self.max_entries or total > self.max_bytes):
            total -= self._items.popitem(last=False)[1][1]
        if len(self._items) < n:
            release_memory()


class ErrorBox:
    """The last error of each session, shown on the page until the next upload (bounded)."""

    def __init__(self, max_sessions: int = 1024) -> None:
        self.max_sessions = max_sessions
        self._items: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def set(self, session: str | None, message: str) -> None:
        if not session:
            return
        with self._lock:
            self._items[session] = message
            self._items.move_to_end(session)
            while len(self._items) > self.max_sessions:
                self._items.popitem(last=False)

    def pop(self, session: str | None) -> str:
        with self._lock:
            return self._items.pop(session or "", "")


EXPIRED = (
    "This reading is no longer kept on the server (readings expire after a while). Upload the file again."
)


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


# --------------------------------------------------------------------------- text for people

#: Markdown's special characters; "&", "<", ">" become HTML entities instead (safe in any renderer).
_MD_SPECIAL = re.compile("([" + re.escape("".join(c for c in string.punctuation if c not in "&<>;")) + "])")


def md_escape(text: str) -> str:
    """User-supplied text (file names, descriptions) as literal Markdown: no HTML, links or formatting."""
    flat = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", flat).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def user_message(text: str, paths: list[str] | None = None, run_dir: Path | None = None) -> str:
    """An error message in the app's words: the checkbox instead of the flag, file names without the
    server's cache folders."""
    text = str(text)
    text = re.sub(
        r"tick 'allow unusual images' / pass allow_unverified=True", "tick 'Allow unusual images'", text
    )
    text = re.sub(r"pass allow_unverified=True|allow_unverified=True", "tick 'Allow unusual images'", text)
    text = text.replace("--allow-unverified", "'Allow unusual images'")
    for path in paths or []:
        folder = str(Path(path).parent)
        if folder not in ("", "."):
            text = text.replace(folder + os.sep, "").replace(folder, "the upload")
    for folder in (*([str(run_dir)] if run_dir is not None else []), tempfile.gettempdir()):
        text = text.replace(folder + os.sep, "").replace(folder, "the upload")
    return text


def example_files() -> list[str]:
    """The app's one-click examples: synthetic phantoms made by the project, and real CT slices."""
    files = sorted(str(p) for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in {".dcm", ".png", ".jpg"})
    files += [str(p) for p in REAL_EXAMPLE_FILES if p.is_file()]
    try:
        from pydicom.data import get_testdata_file

        files += [str(get_testdata_file(name)) for name in REAL_EXAMPLES]
    except Exception:  # pydicom's real slices are a bonus; the app works without them
        pass
    return files


def _paths(files: Any) -> list[str]:
    if files is None:
        return []
    items = files if isinstance(files, (list, tuple)) else [files]
    return [str(getattr(f, "name", f)) for f in items if f is not None]


def _window(preset: str, center: float | None, width: float | None) -> tuple[float | None, float | None]:
    if preset == "custom":
        return center, width
    return PRESETS.get(preset, (None, None))


def render(
    ct: CTImage, pred: Prediction, preset: str, center: float | None, width: float | None, opacity: float
):
    """(overlay RGB, plain grey) of one slice in the chosen display window (8-bit images: as they are)."""
    c, w = _window(preset, center, width)
    try:
        plain = display_window(ct, c, w)
        return pred.overlay(opacity, display=plain), plain
    except BrainCTError as exc:
        raise gr.Error(user_message(str(exc)), print_exception=False) from None


def verdict_score(probability: float, threshold: float) -> float:
    """P(hemorrhage) rescaled so that the model's threshold sits at 0.5 (piecewise linear, monotone).

    ``gr.Label`` shows the class with the larger score on top; with raw probabilities a reading of
    P = 17% against a threshold of 11% would show "normal 83%" under a "hemorrhage" verdict.
    """
    p, t = float(probability), float(threshold)
    if p >= t:
        return 0.5 + 0.5 * (p - t) / max(1.0 - t, 1e-9)
    return 0.5 * p / max(t, 1e-9)


def label_dict(pred: Prediction) -> dict[str, float]:
    """The reading's ``gr.Label`` value: its top class is always the verdict (``probability >= threshold``).

    The values are threshold-relative scores (:func:`verdict_score`, 0.5 = at the threshold), not
    P(hemorrhage); the explanation states P and the threshold.
    """
    s = verdict_score(pred.probability, pred.threshold)
    if pred.label == "hemorrhage":
        return {"hemorrhage": max(s, 0.5), "normal": 1.0 - max(s, 0.5)}
    return {"normal": max(1.0 - s, 0.5), "hemorrhage": 1.0 - max(1.0 - s, 0.5)}


def verdict_line(label: str, probability: float, threshold: float, unverified: bool, scope: str = "") -> str:
    lines = [
        f"**{wording.verdict(label, scope=scope)}** — P(hemorrhage) = {probability:.1%}, "
        f"{wording.threshold_relation(label)} the model's threshold of {threshold:.1%}"
    ]
    if unverified:
        lines.insert(0, f"> ⚠️ **{wording.UNVERIFIED_NOTE}**")
    return "\n\n".join(lines)


def subtype_line(pred: Prediction) -> str:
    """One slice's subtypes, leading first, for the scan's slice caption ("" for binary models):
    "subtypes: subdural 0.81, subarachnoid 0.12" (:func:`brain_ct.wording.subtype_list`, as the CLI's
    column). Below the threshold they are no finding (as :func:`brain_ct.explain.describe_subtypes`
    says), so the line says that too."""
    if not pred.subtypes:
        return ""
    text = f"subtypes: {wording.subtype_list(pred.subtypes)}"
    return text if pred.label == "hemorrhage" else text + " (below the threshold: not a finding)"


def heatmap_line(pred: Prediction) -> str:
    """Which output the heatmap explains, for subtype models ("" for binary models: they have one)."""
    if pred.subtypes is None:
        return ""
    if pred.heatmap_target in (ANY, "hemorrhage"):
        return "**Heatmap for:** any hemorrhage (Grad-CAM of P(hemorrhage))."
    return f"**Heatmap for:** {pred.heatmap_target} (Grad-CAM of the model's {pred.heatmap_target} output)."


def subtype_probabilities(pred: Prediction | None) -> dict[str, float] | None:
    """``{subtype: p}`` of a subtype model's reading, the subtype panel's ``gr.Label`` value: each
    subtype's own probability (independent sigmoids, they need not sum to 1); None for binary models."""
    return None if pred is None or pred.subtypes is None else {k: float(v) for k, v in pred.subtypes.items()}


def subtype_controls(is_subtype_model: bool) -> tuple[Any, Any]:
    """(subtype panel, "Heatmap for" dropdown) updates: shown only for subtype models; a binary model
    also sets the hidden dropdown back to ``any``, so no subtype is asked of it."""
    if is_subtype_model:
        return gr.update(visible=True), gr.update(visible=True)
    return gr.update(value=None, visible=False), gr.update(value=ANY, visible=False)


def explanation_md(pred: Prediction, unverified: bool | None = None) -> str:
    flag = pred.unverified if unverified is None else unverified
    lines = [verdict_line(pred.label, pred.probability, pred.threshold, flag), "", pred.explanation]
    if pred.subtypes is not None:
        lines += ["", heatmap_line(pred)]
    if pred.regions:
        lines += ["", "| where the model looked | side (patient's) | score |", "|---|---|---|"]
        lines += [f"| {r.region} | {r.side} | {r.score:.2f} |" for r in pred.regions[:5]]
    return "\n".join(lines)


def meta_rows(ct: CTImage) -> list[list[str]]:
    return [[str(k), str(v)] for k, v in ct.meta.items()]


def meta_table(ct: CTImage) -> Any:
    """The metadata table, headed for what the file is (DICOM tags, or an image file's properties)."""
    headers = ["DICOM tag", "value"] if ct.source == "dicom" else ["image property", "value"]
    return gr.update(value=meta_rows(ct), headers=headers)


def window_control(ct: CTImage | None) -> Any:
    """Window presets work on Hounsfield units: greyed out, with the reason, for 8-bit images."""
    if ct is None or ct.hu is not None:
        return gr.update(interactive=True, info=None)
    return gr.update(
        interactive=False,
        info="PNG/JPG images hold no Hounsfield units: they were windowed when saved, so presets "
        "cannot change them (DICOM only).",
    )


def _report_file(
    result: SeriesPrediction | Prediction, predictor: Predictor, unverified: bool, settings: AppSettings
) -> str:
    sweep_outputs(settings)
    out = output_folder(settings) / "brain_ct_report.pdf"
    return str(write_report(result, out, model_settings=predictor.settings, unverified=unverified))


def _heatmap_file(result: SeriesPrediction, settings: AppSettings) -> str | None:
    """The scan's Grad-CAM heatmaps as one NIfTI volume on its grid, in its own output folder;
    None when the slices carry no geometry to place them (PNG/JPG slices)."""
    out = output_folder(settings) / "brain_ct_heatmap.nii.gz"
    try:
        return str(write_heatmap_nifti([p.heatmap for p in result.predictions], result.series, out))
    except InvalidInputError as exc:
        # The type only: messages may name slices, and names of uploads are user data.
        log.info("no heatmap volume for this scan (%s)", type(exc).__name__)
        shutil.rmtree(out.parent, ignore_errors=True)
        return None


def _file_list(items: list[dict[str, str]], reason_key: str, limit: int = 20) -> list[str]:
    shown = [
        f"- {md_escape(str(i.get('file', '')))}: {md_escape(str(i.get(reason_key, '')))}"
        for i in items[:limit]
    ]
    if len(items) > limit:
        shown.append(f"- … and {len(items) - limit} more")
    return shown


def series_md(result: SeriesPrediction, unverified: bool = False, n_series: int = 1) -> str:
    lines = []
    if unverified:
        lines.append(f"> ⚠️ **{wording.UNVERIFIED_NOTE}**")
    lines += [
        f"## {wording.verdict(result.label, scope=' in this scan')}",
        f"Scan-level P(hemorrhage) = {result.probability:.1%}, "
        f"{wording.threshold_relation(result.label)} the scan threshold of "
        f"{result.threshold:.1%}; {plural(result.n_slices, 'slice')} read"
        + (
            f", numbered 1 (most inferior) to {result.n_slices} (most superior)."
            if result.n_slices > 1
            else "."
        ),
    ]
    if result.subtypes is not None:
        lines.append(result.subtype_explanation)
    if result.member_agreement is not None:
        above, total = result.member_agreement
        lines.append(
            f"Ensemble: {above} of {total} models read this scan as hemorrhage by their own threshold."
        )
    if result.positive_slices:
        shown = ", ".join(str(i + 1) for i in result.positive_slices[:20])
        more = " …" if len(result.positive_slices) > 20 else ""
        lines.append(
            f"Suspicious {'slice' if len(result.positive_slices) == 1 else 'slices'}: {shown}{more} "
            f"(most suspicious: {result.most_suspicious + 1})."
        )
    if n_series > 1:
        lines.append(
            f"This upload holds {n_series} series; this is one of them. Choose another in **Series** above."
        )
    skipped = list(result.series.skipped)
    if skipped:
        lines.append(f"**{plural(len(skipped), 'file')} left out** (not part of this series):")
        lines.append("\n".join(_file_list(skipped, "reason")))
    if result.series.errors:
        lines.append(f"**{plural(len(result.series.errors), 'file')} could not be read:**")
        lines.append("\n".join(_file_list(result.series.errors, "message")))
    return "\n\n".join(lines)


def _series_choices(infos: list[Any]) -> list[tuple[str, str]]:
    choices = []
    for info in infos:
        parts = [info.modality or "?", plural(info.n_slices, "slice"), info.orientation]
        if info.contrast:
            parts.append("contrast")
        what = " ".join(str(info.description or "").split())[:40] or "series"
        choices.append((f"{what} ({', '.join(parts)}) · {info.series_id[:10]}", info.series_id))
    return choices


class OneReadingPerSession:
    """At most one reading in flight per browser or API session, so one client cannot hold every worker.

    Gradio's concurrency limit is per event, shared by all users: without this, a single client sending
    uploads in a loop would occupy both workers while everyone else waits in the queue. A second reading
    from a session whose first is still running is refused at once (it costs no decoding).
    """

    def __init__(self) -> None:
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, session: str | None) -> Iterator[None]:
        if session is None:  # called directly (tests, scripts): no session to share
            yield
            return
        with self._lock:
            if session in self._busy:
                raise gr.Error(
                    "your previous upload is still being read; wait for its result, then upload again",
                    print_exception=False,
                )
            self._busy.add(session)
        try:
            yield
        finally:
            with self._lock:
                self._busy.discard(session)


class Reader:
    """The app's event functions, kept free of layout so tests can call them directly.

    Readings are kept in :attr:`results` (bounded, time-limited); the page's ``gr.State`` holds only
    their key. Errors are also kept per session in :attr:`errors` so the page can show the last one
    until the next upload (Gradio's popup closes by itself). Outputs go to ``settings.run_dir`` and
    scans are capped by its limits (default :class:`AppSettings`).
    """

    def __init__(
        self, registry: ModelRegistry, results: ResultCache | None = None, settings: AppSettings | None = None
    ) -> None:
        self.registry = registry
        self.settings = settings or AppSettings()
        self.results = results or ResultCache()
        self.errors = ErrorBox()
        self.in_flight = OneReadingPerSession()

    def _fail(self, exc: BaseException | str, request: gr.Request | None, paths: list[str] | None = None):
        message = user_message(str(getattr(exc, "message", exc)), paths, self.settings.run_dir)
        self.errors.set(_session(request), message)
        return gr.Error(message, print_exception=False)

    def _entry(self, state: Any) -> dict[str, Any] | None:
        return self.results.get(state)

    def read_slice(
        self,
        file,
        model_id=None,
        allow_unverified=False,
        tta=False,
        preset="brain",
        center=40.0,
        width=80.0,
        opacity=0.4,
        request: gr.Request | None = None,
    ):
        """Read one head-CT slice (DICOM, PNG or JPG) for intracranial hemorrhage: the verdict, a Grad-CAM
        overlay and a plain-language explanation. Research and education aid, not a diagnosis.

        Returns (label, overlay, explanation): ``label["label"]`` is the verdict, "hemorrhage" exactly
        when P(hemorrhage) >= the model's threshold; its confidences are threshold-relative scores
        (0.5 = at the threshold), and the explanation states P(hemorrhage) and the threshold.

        Args:
            file: the slice to read.
            model_id: the model (default: the app's model).
            allow_unverified: skip the "looks like an axial head CT" check (every output then says so).
            tta: average with the horizontally flipped slice.
            preset: display window of the overlay (brain, subdural, blood, bone, soft_tissue, custom).
            center: custom window center in HU.
            width: custom window width in HU.
            opacity: heatmap opacity in [0, 1].
        """
        paths = _paths(file)
        if not paths:
            return None, None, "", None
        start = time.perf_counter()
        try:
            with self.in_flight.hold(_session(request)):
                predictor = self.registry.get(model_id)
                ct = load_image(paths[0], allow_unverified=bool(allow_unverified), name=Path(paths[0]).name)
                pred = predictor.predict(ct, tta=bool(tta))
        except (BrainCTError, gr.Error) as exc:
            raise self._fail(exc, request, paths) from None
        overlay, _ = render(ct, pred, preset, center, width, opacity)
        key = self.results.put({"ct": ct, "pred": pred, "model": model_id, "tta": bool(tta)})
        # Never the file name in a log line: names of uploads may carry patient names.
        log.info(
            "slice read: %s, P=%.3f, threshold %.3f, head check %s, %.2f s",
            pred.label,
            pred.probability,
            pred.threshold,
            pred.head_check,
            time.perf_counter() - start,
        )
        return label_dict(pred), overlay, explanation_md(pred), key

    def slice_details(self, state, preset="brain", center=40.0, width=80.0, opacity=0.4):
        """Plain image, metadata table and the PDF report of the slice in ``state``."""
        entry = self._entry(state)
        if not entry:
            return None, [], None
        _, plain = render(entry["ct"], entry["pred"], preset, center, width, opacity)
        pred: Prediction = entry["pred"]
        report = _report_file(pred, self.registry.get(entry["model"]), pred.unverified, self.settings)
        return plain, meta_rows(entry["ct"]), report

    def slice_page(self, state, preset="brain", center=40.0, width=80.0, opacity=0.4):
        """:meth:`slice_details` for the page: also the table's header and the window control's state."""
        plain, _, report = self.slice_details(state, preset, center, width, opacity)
        entry = self._entry(state)
        ct = entry["ct"] if entry else None
        table = meta_table(ct) if ct is not None else gr.update(value=[], headers=["property", "value"])
        return plain, table, report, window_control(ct)

    def subtype_panel(self, state):
        """The five subtype probabilities of the slice reading in ``state`` (the ``/subtypes`` API);
        None for a binary model's reading. A plain value, so API clients get the label itself: the
        panel's visibility follows the model choice (:meth:`model_info`)."""
        entry = self._entry(state)
        return subtype_probabilities(entry["pred"] if entry else None)

    def change_heatmap(
        self,
        state,
        target=ANY,
        preset="brain",
        center=40.0,
        width=80.0,
        opacity=0.4,
        request: gr.Request | None = None,
    ):
        """Explain the slice in ``state`` again for ``target`` (``"any"`` or a subtype): (overlay,
        explanation, PDF report). The loaded slice is kept with the reading, so nothing is re-read;
        the probabilities and the verdict stay the same, the heatmap and its regions change.

        Args:
            target: the heatmap target: ``any`` (P(hemorrhage)) or one of the five subtypes.
            preset: display window of the overlay (brain, subdural, blood, bone, soft_tissue, custom).
            center: custom window center in HU.
            width: custom window width in HU.
            opacity: heatmap opacity in [0, 1].
        """
        entry = self._entry(state)
        if not entry:
            if state:
                raise gr.Error(EXPIRED, print_exception=False)
            return None, "", None
        try:
            with self.in_flight.hold(_session(request)):
                predictor = self.registry.get(entry["model"])
                pred = predictor.predict(entry["ct"], tta=entry.get("tta", False), heatmap_target=target)
        except (BrainCTError, gr.Error) as exc:
            raise gr.Error(user_message(str(getattr(exc, "message", exc))), print_exception=False) from None
        # The window controls and the report redraw from the cached reading: keep the new heatmap there.
        entry["pred"] = pred
        overlay, _ = render(entry["ct"], pred, preset, center, width, opacity)
        report = _report_file(pred, predictor, pred.unverified, self.settings)
        return overlay, explanation_md(pred), report

    def model_info(self, model_id=None):
        """(banner, subtype panel, "Heatmap for" dropdown) for the chosen model: the subtype controls
        are shown only when it is a subtype model."""
        is_subtype_model = self.registry.get(model_id).settings.is_multi_label
        return (self.registry.banner(model_id), *subtype_controls(is_subtype_model))

    def rerender_slice(self, state, preset, center, width, opacity):
        entry = self._entry(state)
        if not entry:
            if state:  # a reading this page showed has expired from the cache: say so
                raise gr.Error(EXPIRED, print_exception=False)
            return None, None
        return render(entry["ct"], entry["pred"], preset, center, width, opacity)

    def read_series(
        self,
        files,
        model_id=None,
        allow_unverified=False,
        tta=False,
        series_id=None,
        request: gr.Request | None = None,
    ):
        """Read a whole head-CT scan (a zip of DICOM slices, several slices, or a NIfTI volume) for
        intracranial hemorrhage: the scan verdict, per-slice results in anatomical order, a PDF report and
        the Grad-CAM heatmaps as a NIfTI volume. Not a diagnosis.

        Returns (verdict markdown, per-slice JSON, PDF report path, heatmap volume path): the heatmap
        volume is float32 in [0, 1] on the scan's voxel grid and affine (None for PNG/JPG slices,
        which carry no geometry).

        The per-slice JSON lists ``slices`` in anatomical order with a 0-based ``index`` (slice
        number ``index + 1`` on the page and in the PDF), ``skipped`` (readable files left out, with
        the reason), ``errors`` (files that could not be read), ``series`` (every series found) and
        ``head_check`` ("skipped" when the head-CT check was skipped).

        Args:
            files: a .zip of the scan's slices, the slice files, or one NIfTI volume (.nii / .nii.gz).
            model_id: the model (default: the app's model).
            allow_unverified: skip the "looks like an axial head CT" check (every output then says so).
            tta: average with the horizontally flipped slices.
            series_id: when the upload holds several series, the one to read (an id from ``series``);
                default: the axial non-contrast CT series with the most slices.
        """
        paths = _paths(files)
        if not paths:
            return "", None, None, None, None
        source = paths[0] if len(paths) == 1 else paths
        start = time.perf_counter()
        try:
            with self.in_flight.hold(_session(request)):
                predictor = self.registry.get(model_id)
                infos = list_series(source)
                ids = [i.series_id for i in infos]
                chosen = series_id if series_id in ids else None
                info = next((i for i in infos if i.series_id == chosen), infos[0] if infos else None)
                max_slices, max_pixels = self.settings.max_scan_slices, self.settings.max_scan_pixels
                if info is not None and info.n_slices > max_slices:
                    raise gr.Error(
                        f"this series has {info.n_slices} slices; the app reads at most {max_slices} per "
                        "scan. Choose a thicker-slice series, or read it with the command line "
                        "(python -m brain_ct predict).",
                        print_exception=False,
                    )
                series = read_series(source, series_uid=chosen, allow_unverified=bool(allow_unverified))
                pixels = sum(int(ct.display.size) for ct in series.slices)
                if len(series.slices) > max_slices or pixels > max_pixels:
                    raise gr.Error(
                        f"this scan has {plural(len(series.slices), 'slice')} ({pixels / 1e6:.0f} megapixels); the "
                        f"app reads at most {max_slices} slices and {max_pixels / 1e6:.0f} megapixels "
                        "per scan. Upload fewer or smaller slices, or use the command line (python -m brain_ct predict).",
                        print_exception=False,
                    )
                result = predict_series(
                    predictor, series, tta=bool(tta), source=f"{len(paths)} uploaded file(s)"
                )
        except (BrainCTError, gr.Error) as exc:
            raise self._fail(exc, request, paths) from None
        unverified = result.unverified
        summary = result.to_dict()  # head_check and skipped come with it (and subtypes, members)
        summary["file"] = "upload"
        summary["series"] = [i.to_dict() | {"chosen": i.series_id == series.series_id} for i in infos]
        summary["numbering"] = "index is 0-based; people see slice number index + 1 (1 = most inferior)"
        key = self.results.put({"result": result, "unverified": unverified, "infos": infos})
        log.info(
            "scan read: %s, P=%.3f, %d slice(s), %d left out, %d unreadable, head check %s, %.2f s",
            result.label,
            result.probability,
            result.n_slices,
            len(summary["skipped"]),
            len(result.series.errors),
            summary["head_check"],
            time.perf_counter() - start,
        )
        return (
            series_md(result, unverified, n_series=len(infos)),
            summary,
            _report_file(result, predictor, unverified, self.settings),
            _heatmap_file(result, self.settings),
            key,
        )

    def show_series_slice(self, state, number, preset="brain", center=40.0, width=80.0, opacity=0.4):
        """(overlay, explanation markdown) of slice ``number`` (1 = most inferior) of the scan in ``state``."""
        entry = self._entry(state)
        if not entry:
            return None, (f"*{EXPIRED}*" if state else "")
        result: SeriesPrediction = entry["result"]
        i = int(min(max(int(number or 1) - 1, 0), result.n_slices - 1))
        pred = result.predictions[i]
        overlay, _ = render(result.series.slices[i], pred, preset, center, width, opacity)
        position = result.series.positions[i] if i < len(result.series.positions) else None
        where = f" at {position:.1f} mm" if position is not None else ""
        head = f"**Slice {i + 1} of {result.n_slices}**{where}"
        if pred.subtypes is not None:
            head += f" — {subtype_line(pred)}"
        return overlay, head + "\n\n" + explanation_md(pred, entry["unverified"])

    def series_browser(self, state):
        """Slider (1-based, hidden for a one-slice scan) at the most suspicious slice, and the plot."""
        entry = self._entry(state)
        if not entry:
            return gr.update(minimum=1, maximum=2, value=1, visible=False), None
        result: SeriesPrediction = entry["result"]
        png = probability_plot_png(
            result.probabilities,
            result.threshold,
            positive=result.positive_slices,
            highlight=result.most_suspicious,
        )
        plot = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        n = result.n_slices
        # A slider needs minimum < maximum: a one-slice scan has nothing to browse, so it is hidden.
        slider = gr.update(
            minimum=1, maximum=max(n, 2), value=result.most_suspicious + 1, step=1, visible=n > 1
        )
        return slider, plot

    def scan_window_control(self, state):
        """The window presets for the scan in ``state``: greyed out when its slices are 8-bit images."""
        entry = self._entry(state)
        return window_control(entry["result"].series.slices[0] if entry else None)

    def series_picker(self, state):
        """The series dropdown: every series of the upload, the one read selected; hidden for one series."""
        entry = self._entry(state)
        infos = entry["infos"] if entry else []
        if len(infos) < 2:
            return gr.update(choices=[], value=None, visible=False)
        chosen = entry["result"].series.series_id
        return gr.update(choices=_series_choices(infos), value=chosen, visible=True)

    def error_box(self, request: gr.Request | None = None) -> Any:
        """The session's last error, kept on the page (hidden when there is none)."""
        message = self.errors.pop(_session(request))
        if not message:
            return gr.update(value="", visible=False)
        return gr.update(value=f"**Could not read this upload.** {md_escape(message)}", visible=True)


def clear_slice_outputs():
    """Every output of the one-slice tab, emptied before a new reading (a failed one leaves nothing old);
    the subtype panel keeps its visibility (the model's), and a new reading's heatmap is for ``any``."""
    return (
        None,
        None,
        "",
        None,
        None,
        gr.update(value=[], headers=["property", "value"]),
        None,
        gr.update(value="", visible=False),
        gr.update(value=None),
        gr.update(value=ANY),
    )


def clear_scan_outputs():
    """Every output of the whole-scan tab, emptied before a new reading."""
    return (
        "",
        None,
        None,
        None,
        None,
        gr.update(minimum=1, maximum=2, value=1, visible=False),
        None,
        "",
        gr.update(value="", visible=False),
        None,
    )


def build_demo(registry: ModelRegistry, settings: AppSettings | None = None) -> gr.Blocks:
    """The page around ``registry``'s models: layout and events (starts nothing, loads no model)."""
    reader = Reader(registry, settings=settings)
    with gr.Blocks(title="Brain-CT hemorrhage reader", delete_cache=UPLOAD_CACHE) as demo:
        gr.Markdown("# Brain-CT hemorrhage reading assistant")
        gr.Markdown(f"> **{DISCLAIMER}**", elem_id="disclaimer")
        banner = gr.Markdown(f"**Model in use:** `{registry.default}`", elem_id="banner")
        with gr.Row():
            model_id = gr.Dropdown(registry.choices, value=registry.default, label="Model", scale=2)
            allow_unverified = gr.Checkbox(False, label="Allow unusual images (skip the head-CT check)")
            tta = gr.Checkbox(False, label="Test-time augmentation (flip)")
        with gr.Row():
            preset = gr.Radio(WINDOW_CHOICES, value="brain", label="Display window", scale=3)
            center = gr.Number(40, label="Custom center (HU)", scale=1)
            width = gr.Number(80, label="Custom width (HU)", scale=1)
            opacity = gr.Slider(0.0, 1.0, 0.4, step=0.05, label="Heatmap opacity", scale=2)
        view = [preset, center, width, opacity]
        options = [model_id, allow_unverified, tta]

        def image(**kwargs: Any) -> gr.Image:
            return _write_images_to_unique_files(
                gr.Image(type="numpy", format="png", interactive=False, **kwargs)
            )

        with gr.Tab("One slice"):
            with gr.Row():
                with gr.Column(scale=1):
                    upload = _uploads_only(
                        gr.File(
                            label="Head-CT slice: DICOM (.dcm or no extension), PNG, JPG", elem_id="upload"
                        )
                    )
                    examples = example_files()
                    if examples:
                        gr.Examples(
                            examples,
                            inputs=upload,
                            label="Examples (synthetic phantoms; real CT slices: 15.dcm is held out from training)",
                        )
                    error = gr.Markdown(visible=False, elem_id="error-box")
                    label = gr.Label(
                        num_top_classes=2,
                        label="Reading (bar scale: 50% = the model's threshold)",
                        elem_id="reading",
                    )
                    # Subtype models only (shown by the model's choice): bars are probabilities, not verdicts.
                    subtypes = gr.Label(
                        num_top_classes=len(SUBTYPES),
                        show_heading=False,
                        label="Hemorrhage subtype (probability of each; no finding below the threshold)",
                        visible=False,
                        elem_id="subtypes",
                    )
                    report = gr.File(label="PDF report", interactive=False)
                with gr.Column(scale=2):
                    heatmap_for = gr.Dropdown(
                        HEATMAP_CHOICES,
                        value=ANY,
                        label="Heatmap for",
                        info="Grad-CAM of P(any hemorrhage), or of one subtype's output",
                        visible=False,
                        elem_id="heatmap-for",
                    )
                    with gr.Row():
                        overlay_img = image(label="Grad-CAM overlay")
                        plain_img = image(label="Image")
                    explanation = gr.Markdown(elem_id="explanation")
                    meta = gr.Dataframe(
                        headers=["property", "value"], label="Image information (non-identifying)"
                    )
            slice_state = gr.State(time_to_live=SESSION_TTL_S, delete_callback=reader.results.discard)

        with gr.Tab("Whole scan"):
            with gr.Row():
                with gr.Column(scale=1):
                    scan_upload = _uploads_only(
                        gr.File(
                            label="A .zip of the scan's DICOM slices, several slices at once, or a NIfTI "
                            "volume (.nii / .nii.gz)",
                            file_count="multiple",
                            elem_id="scan-upload",
                        )
                    )
                    series_choice = gr.Dropdown(
                        [],
                        value=None,
                        label="Series",
                        visible=False,
                        allow_custom_value=True,
                        elem_id="series",
                    )
                    scan_error = gr.Markdown(visible=False, elem_id="scan-error-box")
                    verdict = gr.Markdown(elem_id="scan-verdict")
                    scan_report = gr.File(label="PDF report", interactive=False)
                    scan_heatmap = gr.File(
                        label="Heatmap volume (NIfTI, opens over the scan in 3D Slicer / ITK-SNAP)",
                        interactive=False,
                        elem_id="scan-heatmap",
                    )
                with gr.Column(scale=2):
                    plot = image(label="P(hemorrhage) per slice (dashed: threshold)")
                    slider = gr.Slider(
                        1,
                        2,
                        1,
                        step=1,
                        label="Slice number (1 = most inferior)",
                        visible=False,
                        elem_id="slice",
                    )
                    scan_overlay = image(label="Slice with Grad-CAM overlay")
                    scan_text = gr.Markdown(elem_id="scan-slice")
                    scan_json = gr.JSON(label="Per-slice results", visible=False)
            scan_state = gr.State(time_to_live=SESSION_TTL_S, delete_callback=reader.results.discard)

        slice_outputs = [
            label,
            overlay_img,
            explanation,
            slice_state,
            plain_img,
            meta,
            report,
            error,
            subtypes,
            heatmap_for,
        ]
        # Every output is emptied first, so a failed reading leaves nothing of the previous one.
        reading = upload.change(
            clear_slice_outputs, outputs=slice_outputs, api_visibility="private", queue=False
        ).then(
            reader.read_slice,
            inputs=[upload, *options, *view],
            outputs=[label, overlay_img, explanation, slice_state],
            api_name="predict",
            concurrency_limit=CONCURRENCY,
            concurrency_id="model",
        )
        reading.failure(reader.error_box, outputs=error, api_visibility="private")
        reading.success(
            reader.slice_page,
            inputs=[slice_state, *view],
            outputs=[plain_img, meta, report, preset],
            api_visibility="private",
        )
        # Public: after /predict, the same client's /subtypes gives that reading's subtype probabilities.
        reading.success(reader.subtype_panel, inputs=slice_state, outputs=subtypes, api_name="subtypes")
        # .select: Gradio 6's dropdown fires .input twice per choice (the second read was refused as busy).
        heatmap_for.select(
            reader.change_heatmap,
            inputs=[slice_state, heatmap_for, *view],
            outputs=[overlay_img, explanation, report],
            api_name="heatmap",
            concurrency_limit=CONCURRENCY,
            concurrency_id="model",
        )
        for control in view:
            control.change(
                reader.rerender_slice,
                inputs=[slice_state, *view],
                outputs=[overlay_img, plain_img],
                api_visibility="private",
            )

        scan_outputs = [
            verdict,
            scan_json,
            scan_report,
            scan_state,
            plot,
            slider,
            scan_overlay,
            scan_text,
            scan_error,
            scan_heatmap,
        ]

        def after_scan_reading(event: Any) -> None:
            event.failure(reader.error_box, outputs=scan_error, api_visibility="private")
            event.success(
                reader.series_browser, inputs=scan_state, outputs=[slider, plot], api_visibility="private"
            ).then(
                reader.series_picker, inputs=scan_state, outputs=series_choice, api_visibility="private"
            ).then(
                reader.scan_window_control, inputs=scan_state, outputs=preset, api_visibility="private"
            ).then(
                reader.show_series_slice,
                inputs=[scan_state, slider, *view],
                outputs=[scan_overlay, scan_text],
                api_visibility="private",
            )

        # A new upload reads the default series (the dropdown is reset first); choosing a series re-reads.
        after_scan_reading(
            scan_upload.change(
                lambda: (*clear_scan_outputs(), gr.update(choices=[], value=None, visible=False)),
                outputs=[*scan_outputs, series_choice],
                api_visibility="private",
                queue=False,
            ).then(
                reader.read_series,
                inputs=[scan_upload, *options, series_choice],
                outputs=[verdict, scan_json, scan_report, scan_heatmap, scan_state],
                api_name="predict_series",
                concurrency_limit=CONCURRENCY,
                concurrency_id="model",
            )
        )
        after_scan_reading(
            series_choice.input(
                clear_scan_outputs, outputs=scan_outputs, api_visibility="private", queue=False
            ).then(
                reader.read_series,
                inputs=[scan_upload, *options, series_choice],
                outputs=[verdict, scan_json, scan_report, scan_heatmap, scan_state],
                api_visibility="private",
                concurrency_limit=CONCURRENCY,
                concurrency_id="model",
            )
        )
        for control in [slider, *view]:
            control.change(
                reader.show_series_slice,
                inputs=[scan_state, slider, *view],
                outputs=[scan_overlay, scan_text],
                api_visibility="private",
            )

        model_outputs = [banner, subtypes, heatmap_for]
        model_id.change(reader.model_info, inputs=model_id, outputs=model_outputs, api_visibility="private")
        demo.load(reader.model_info, inputs=model_id, outputs=model_outputs, api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    demo.reader = reader  # type: ignore[attr-defined]  # main warms its model up; tests inspect the session cache
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Brain-CT hemorrhage reading assistant (Gradio app)")
    parser.add_argument(
        "--model", default=None, help="Hub id or folder; default env BRAIN_CT_MODEL, then the demo"
    )
    parser.add_argument(
        "--revision",
        default=os.environ.get("BRAIN_CT_MODEL_REVISION") or None,
        help="Hub revision of the model; a commit hash pins it (default: env BRAIN_CT_MODEL_REVISION)",
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also create a public share link")
    parser.add_argument(
        "--mcp", action="store_true", help="also serve the prediction as an MCP tool (gradio[mcp])"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show other libraries' INFO log lines (httpx, fontTools, …)",
    )
    return parser.parse_args(argv)


def setup_logging(verbose: bool = False) -> None:
    """The app's own INFO lines; other libraries (httpx, fontTools, …) only from WARNING unless ``verbose``."""
    from brain_ct.__main__ import setup_logging as setup

    setup(verbose)


def make_registry(
    model: str | None = None, revision: str | None = None, extra: list[str] | None = None
) -> ModelRegistry:
    """The models of a server: ``model`` (None: env ``BRAIN_CT_MODEL``, then the bundled demo) and ``extra``."""
    return ModelRegistry(resolve_model_id(model), extra, revision=revision)


def create_app(settings: AppSettings) -> gr.Blocks:
    """The app for ``settings``: its models (none loaded yet) and its page; ``.reader`` holds the events.

    Creates no folder and launches nothing; :func:`main` prepares the run folder first.
    """
    registry = make_registry(settings.model, settings.revision, settings.extra_models)
    return build_demo(registry, settings)


def warm_up(registry: ModelRegistry) -> None:
    """Load the default model and read one synthetic DICOM through the whole path, so the first user does not wait."""
    from pydicom.filewriter import dcmwrite

    from brain_ct.synthetic import generate_slice, to_dicom

    buffer = io.BytesIO()
    dcmwrite(buffer, to_dicom(generate_slice(0, 256, hemorrhage=False)), enforce_file_format=True)
    registry.get().predict(buffer.getvalue())


def launch(demo_app: gr.Blocks, args: argparse.Namespace, **kwargs: Any):
    return demo_app.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        mcp_server=args.mcp,
        **{**LAUNCH_OPTIONS, **kwargs},
    )


def _stop(signum: int, frame: Any) -> None:
    # Docker and Spaces stop a container with SIGTERM, which skips atexit: turn it into the same
    # KeyboardInterrupt as Ctrl-C, so Gradio closes its server and main() removes the run folder.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """``python app.py``: prepare the run folder and hooks, load and warm up the model, serve until stopped."""
    args = parse_args(argv)
    setup_logging(args.verbose)
    settings = AppSettings.from_env(model=args.model, revision=args.revision)
    prepare_run_dir(settings)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    limit_malloc_arenas()  # before Gradio starts its worker threads
    start_sweeper(settings)
    app = create_app(settings)
    try:
        warm_up(app.reader.registry)  # load once at start, not per request
        launch(app, args)
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
        remove_run_dir(settings)
        log.info("stopped; removed %s", settings.run_dir)


if __name__ == "__main__":
    main()
