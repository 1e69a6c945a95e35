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
exactly when P(hemorrhage) >= the model's threshold; its confidences are P(hemorrhage) and 1 − P, the
verdict's first, and the explanation states P and the threshold (and, first, a caveat when the head-CT
check was skipped). After ``/predict`` the same client's ``/reading`` returns that reading as plain JSON
fields (verdict, probability, threshold, input_kind, head_check, regions, subtypes): use it in programs.
Subtype models (RSNA's any + five subtypes): after ``/predict``, the
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
(:class:`~brain_ct.serving.ResultCache`); one reading runs at a time per session and per client
address (:class:`~brain_ct.serving.FairShare`). Everything a run writes lives under one folder, swept by
age while running and removed at exit, on SIGTERM/SIGINT, or at the next start after a crash
(:attr:`AppSettings.run_dir`).
"""

from __future__ import annotations

import argparse
import atexit
import io
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import types
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
from gradio.components.label import LabelConfidence, LabelData
from gradio.utils import NamedString
from gradio_client import utils as client_utils

from brain_ct import DISCLAIMER, limits, wording
from brain_ct.collect import screen_name
from brain_ct.errors import BrainCTError, InvalidInputError, NotHeadCTError, TooLargeError
from brain_ct.image_set import ImageSetReading, is_image_set, read_image_set
from brain_ct.io import CTImage, load_image
from brain_ct.labels import ANY, SUBTYPES
from brain_ct.limits import UploadLimits
from brain_ct.model import SUBTYPE_DEMO_MODEL_DIR, resolve_model_id, shown_model_id
from brain_ct.nifti import write_heatmap_nifti
from brain_ct.page_text import (
    KIND_NAMES,
    explanation_md,
    image_set_md,
    md_escape,
    meta_rows,
    probability_bar,
    reading_fields,
    scan_rule_fields,
    series_choices,
    series_md,
    subtype_line,
    subtype_probabilities,
    user_message,
)
from brain_ct.predictor import Prediction, Predictor
from brain_ct.report import probability_plot_png, write_report
from brain_ct.scan import SeriesPrediction, predict_series
from brain_ct.series import list_series, read_series
from brain_ct.serving import (
    SESSION_TTL_S,
    ClientBusyError,
    ErrorBox,
    FairShare,
    ResultCache,
    client_address,
    failure_message,
    forget_failure,
    limit_malloc_arenas,
    release_memory,
    sweep_dead_runs,
    sweep_folder,
)
from brain_ct.windowing import PRESETS, display_window

log = logging.getLogger("brain_ct.app")

MAX_FILE_SIZE = "200mb"
CONCURRENCY = 2
QUEUE_SIZE = 64
#: Uploads (finished or aborted), overlays and reports are deleted this long after they were written
#: (env ``BRAIN_CT_FILE_MAX_AGE_S``), swept every SWEEP_EVERY_S; the examples' copies are kept.
OUTPUT_MAX_AGE_S = 300
SWEEP_EVERY_S = 60
#: Gradio keeps the state of at most this many sessions (its default, 10,000, is unbounded in practice).
STATE_SESSION_CAPACITY = 128
#: Largest scan read per request: slices, and pixels over all slices (~1.2 GB of arrays at most).
PLOT_LABEL = "P(hemorrhage) per slice (dashed: threshold)"
NO_PLOT_LABEL = "No plot: separate images have no order to plot along (each image's P is listed left)"
SLIDER_LABEL = "Slice number (1 = most inferior)"
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
    # The options wrap on a phone instead of squeezing their labels to a letter per line.
    "#options, #options .form {flex-wrap: wrap;} #options .form > * {min-width: 220px !important;}"
    ".pbar {padding: 8px 4px;} .pbar-head {font-size: 1.4em; font-weight: 700;}"
    ".pbar-track {position: relative; height: 14px; background: #e5e7eb; border-radius: 7px; margin: 6px 0;}"
    ".pbar-fill {height: 100%; border-radius: 7px;}"
    ".pbar-mark {position: absolute; top: -4px; width: 3px; height: 22px; background: #111;}"
)
#: Options for ``Blocks.launch``: bounded memory per public server, and the page's style.
LAUNCH_OPTIONS: dict[str, Any] = {
    "css": APP_CSS,
    # System fonts only: offline, the theme's web font fell back glyph by glyph (a title's first letter
    # in another font).
    "theme": gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"]),
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
        limits: what one upload may cost (:class:`brain_ct.limits.UploadLimits`: slices and pixels per
            scan, bytes, seconds); default the public-Space values, raised by ``BRAIN_CT_*`` variables.
        file_max_age_s: seconds an upload or output file is kept (then swept).
        sweep_every_s: seconds between sweeps of the run folder.
        behind_proxy: requests come through a proxy (a Hugging Face Space, env ``SPACE_ID``, or env
            ``BRAIN_CT_BEHIND_PROXY=1``): a client is told apart by the first ``X-Forwarded-For`` hop.
    """

    model: str | None = None
    revision: str | None = None
    extra_models: list[str] = field(default_factory=list)
    run_dir: Path = field(default_factory=default_run_dir)
    limits: UploadLimits = field(default_factory=UploadLimits.from_env)
    file_max_age_s: float = OUTPUT_MAX_AGE_S
    sweep_every_s: float = SWEEP_EVERY_S
    behind_proxy: bool = False

    @classmethod
    def from_env(cls, model: str | None = None, revision: str | None = None) -> AppSettings:
        """Settings for a server: ``revision`` defaults to env ``BRAIN_CT_MODEL_REVISION``, the extra
        models come from env ``BRAIN_CT_MODELS`` (comma-separated), the run folder from ``BRAIN_CT_TMP``,
        the file lifetime from ``BRAIN_CT_FILE_MAX_AGE_S`` (sweeps every fifth of it, at most every
        minute), the proxy from ``SPACE_ID`` / ``BRAIN_CT_BEHIND_PROXY``."""
        max_age = float(os.environ.get("BRAIN_CT_FILE_MAX_AGE_S") or OUTPUT_MAX_AGE_S)
        return cls(
            model=model,
            revision=revision or os.environ.get("BRAIN_CT_MODEL_REVISION") or None,
            extra_models=_extra_models(),
            file_max_age_s=max_age,
            sweep_every_s=min(SWEEP_EVERY_S, max(max_age / 5, 0.5)),
            behind_proxy=bool(os.environ.get("SPACE_ID"))
            or os.environ.get("BRAIN_CT_BEHIND_PROXY", "") not in ("", "0"),
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


def sweep_outputs(
    settings: AppSettings,
    now: float | None = None,
    max_age_s: float | None = None,
    keep: list[Path] | tuple[Path, ...] = (),
) -> None:
    """Delete this run's outputs (overlays, reports) and the files in Gradio's upload cache (uploads,
    partial files of aborted uploads, image outputs) older than ``max_age_s`` (default
    ``settings.file_max_age_s``), except ``keep`` (the examples' cached copies)."""
    age = settings.file_max_age_s if max_age_s is None else max_age_s
    sweep_folder(settings.output_dir, age, now)
    sweep_folder(settings.gradio_cache, age, now, keep=keep)


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


def cached_examples(demo: gr.Blocks) -> list[Path]:
    """The copies of the example files Gradio made in its cache when the page was built: they are
    not uploads, and sweeping them would break the example buttons."""
    kept: set[str] = set()
    for example in getattr(demo, "example_sets", []):
        for values in example.non_none_processed_examples.values():
            kept.update(v["path"] for v in values if isinstance(v, dict) and v.get("path"))
    return [Path(p) for p in sorted(kept)]


def start_sweeper(settings: AppSettings, keep: list[Path] | tuple[Path, ...] = ()) -> threading.Event:
    """A daemon thread sweeping old files every ``settings.sweep_every_s`` (see :func:`sweep_outputs`),
    even while nobody asks for a report; set the returned event to stop it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(settings.sweep_every_s):
            try:
                sweep_outputs(settings, keep=keep)
            except OSError as exc:  # a sweep must never kill the thread
                log.warning("file sweep failed: %s", exc)

    threading.Thread(target=loop, name="brain_ct-sweeper", daemon=True).start()
    return stop


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


EXPIRED = (
    "This reading is no longer kept on the server (readings expire after a while). Upload the file again."
)


def error_heading(exc: BaseException) -> str:
    """The first words of an error on the page: content refusals are not unreadable files."""
    if isinstance(exc, ClientBusyError):
        return "Busy:"
    if isinstance(exc, (NotHeadCTError, TooLargeError)):
        return "Refused:"
    return "Could not read this upload:"


def upload_name(path: str) -> str:
    """An uploaded file's name as the page, the API and the PDF may show it: through the one name screen
    (:func:`brain_ct.collect.screen_name`), since a name such as ``john_smith_ct.dcm`` names a person."""
    name = Path(path).name
    return name if screen_name(name) else "uploaded slice"


def refuse_scan_on_slice_tab(path: str) -> None:
    """A zip or NIfTI volume holds a scan: point to the tab that reads it, before decoding anything."""
    name = Path(path).name.lower()
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK") or name.endswith((".nii", ".nii.gz")):
        raise InvalidInputError(
            f"{Path(path).name}: this upload holds a whole scan (a zip archive or NIfTI volume), and the "
            'One-slice tab reads one image. Use the "Whole scan" tab for it.'
        )


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


# --------------------------------------------------------------------------- text for people


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


def verdict_label(pred: Prediction) -> dict[str, float]:
    """The ``/predict`` label's value: ``{class: probability}`` with the verdict first, the values being
    P(hemorrhage) itself and 1 − P. Shown by a :func:`_verdict_labels` component, whose ``label`` is
    this first key ("hemorrhage" exactly when P(hemorrhage) >= the threshold).

    Gradio's ``gr.Label`` would name the larger value as the label, which is "normal" for a reading
    of P = 17% over a threshold of 11%: the verdict is set by the order instead.
    """
    p = float(pred.probability)
    if pred.label == "hemorrhage":
        return {"hemorrhage": p, "normal": 1.0 - p}
    return {"normal": 1.0 - p, "hemorrhage": p}


def _verdict_labels(component: gr.Label) -> gr.Label:
    """Let ``component`` show a :func:`verdict_label`: its first class is the label, in the given order."""

    def postprocess(self: gr.Label, value: Any) -> Any:
        if not value:
            return {}
        confidences = [LabelConfidence(label=k, confidence=float(v)) for k, v in value.items()]
        return LabelData(label=confidences[0].label, confidences=confidences)

    component.postprocess = types.MethodType(postprocess, component)  # type: ignore[method-assign]
    return component


def subtype_controls(is_subtype_model: bool) -> tuple[Any, Any]:
    """(subtype panel, "Heatmap for" dropdown) updates: shown only for subtype models; a binary model
    also sets the hidden dropdown back to ``any``, so no subtype is asked of it."""
    if is_subtype_model:
        return gr.update(visible=True), gr.update(visible=True)
    return gr.update(value=None, visible=False), gr.update(value=ANY, visible=False)


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
    sweep_folder(settings.output_dir, settings.file_max_age_s)
    out = output_folder(settings) / "brain_ct_report.pdf"
    return str(write_report(result, out, model_settings=predictor.settings, unverified=unverified))


def _heatmap_file(result: SeriesPrediction, settings: AppSettings) -> tuple[str | None, str]:
    """(path, "") of the scan's Grad-CAM heatmaps as one NIfTI volume on its grid, in its own output
    folder; (None, the library's reason) when it cannot be written (no geometry, uneven spacing, …)."""
    out = output_folder(settings) / "brain_ct_heatmap.nii.gz"
    try:
        return str(write_heatmap_nifti([p.heatmap for p in result.predictions], result.series, out)), ""
    except BrainCTError as exc:
        # The type only in the log: messages may name slices, and names of uploads are user data.
        log.info("no heatmap volume for this scan (%s)", type(exc).__name__)
        shutil.rmtree(out.parent, ignore_errors=True)
        return None, failure_message(exc)


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
        self.in_flight = FairShare()

    def address(self, request: gr.Request | None) -> str | None:
        """The client address a request's fair share is counted by (see :func:`client_address`)."""
        client = getattr(request, "client", None)
        headers = getattr(request, "headers", None) or {}
        return client_address(
            getattr(client, "host", None), headers.get("x-forwarded-for"), self.settings.behind_proxy
        )

    def _run(self, work: Any, request: gr.Request | None, paths: list[str] | None = None) -> Any:
        """``work()`` as one reading of the request's session and address; any failure becomes one
        :class:`gr.Error` with a message, after the failed reading's memory is given back."""
        try:
            with (
                self.in_flight.hold(_session(request), self.address(request)),
                limits.using(self.settings.limits),
            ):
                return work()
        except (BrainCTError, gr.Error) as exc:
            failure = (failure_message(exc), error_heading(exc))
            forget_failure(exc)
        except Exception as exc:  # a library bug: the user still gets a message, the log the type
            log.error("reading failed unexpectedly: %s", type(exc).__name__)
            failure = (failure_message(exc), "Could not read this upload.")
            forget_failure(exc)
        # Raised outside the except block, so the error carries no context holding the reading's frames.
        raise self._fail(failure[0], request, paths, heading=failure[1])

    def _fail(
        self, text: str, request: gr.Request | None, paths: list[str] | None = None, heading: str = ""
    ) -> gr.Error:
        message = user_message(text, paths, self.settings.run_dir)
        self.errors.set(
            _session(request), f"**{heading}** {md_escape(message)}" if heading else md_escape(message)
        )
        # No popup: the page keeps the message in its error box (a popup said "Error" once more).
        return gr.Error(
            f"{heading} {message}".strip(),
            print_exception=False,
            title=heading.rstrip(":") or "Error",
            visible=request is None or _session(request) is None,
        )

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
        when P(hemorrhage) >= the model's threshold; its confidences are P(hemorrhage) and 1 − P (the
        verdict's first), and the explanation states P(hemorrhage) and the threshold.

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

        def work() -> tuple[CTImage, Prediction]:
            refuse_scan_on_slice_tab(paths[0])
            predictor = self.registry.get(model_id)
            # Messages to the uploader name the file as uploaded; what the reading shows (page, API,
            # PDF) carries the screened name.
            ct = load_image(paths[0], allow_unverified=bool(allow_unverified), name=Path(paths[0]).name)
            ct.name = upload_name(paths[0])
            return ct, predictor.predict(ct, tta=bool(tta))

        ct, pred = self._run(work, request, paths)
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
        return verdict_label(pred), overlay, explanation_md(pred), key

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

    def reading_bar(self, state) -> str:
        """The page's one number for the slice reading in ``state``: P(hemorrhage) on a bar with the
        threshold of its input kind marked (:func:`probability_bar`); "" when there is none."""
        entry = self._entry(state)
        if not entry:
            return ""
        pred: Prediction = entry["pred"]
        return probability_bar(pred.probability, pred.threshold, pred.label, KIND_NAMES.get(pred.source, ""))

    def reading_json(self, state) -> dict[str, Any] | None:
        """The slice reading in ``state`` as plain fields (the ``/reading`` API, after ``/predict``):
        ``verdict`` ("hemorrhage" exactly when ``probability >= threshold``), ``probability`` (P(hemorrhage)),
        ``threshold`` (the model's, for this input kind), ``input_kind`` ("dicom" or "image"),
        ``head_check``, ``unverified``, ``regions`` (region, patient's side, score) and ``subtypes``
        (subtype models; else None). None when the reading has expired."""
        entry = self._entry(state)
        return reading_fields(entry["pred"], entry["pred"].source) if entry else None

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

        def work() -> tuple[Predictor, Prediction]:
            predictor = self.registry.get(entry["model"])
            return predictor, predictor.predict(
                entry["ct"], tta=entry.get("tta", False), heatmap_target=target
            )

        predictor, pred = self._run(work, request)
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
        volume is float32 in [0, 1] on the scan's voxel grid and affine (None, with the reason in the
        markdown and in the JSON's ``heatmap_volume``, when it cannot be written). Several PNG/JPG
        files are read one by one instead: the JSON is ``{"kind": "image set", "summary", "images"}``
        and there is no scan verdict, PDF or volume (None).

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
        if is_image_set(paths):
            return self._read_image_set(paths, model_id, allow_unverified, tta, request)
        source = paths[0] if len(paths) == 1 else paths
        start = time.perf_counter()

        def work() -> tuple[Predictor, list[Any], Any, SeriesPrediction]:
            predictor = self.registry.get(model_id)
            # the budget (self.settings.limits, in force in _run) refuses an oversized scan from its
            # headers, before any slice is decoded
            infos = list_series(source)
            ids = [i.series_id for i in infos]
            chosen = series_id if series_id in ids else None
            series = read_series(source, series_uid=chosen, allow_unverified=bool(allow_unverified))
            result = predict_series(predictor, series, tta=bool(tta), source=f"{len(paths)} uploaded file(s)")
            return predictor, infos, series, result

        predictor, infos, series, result = self._run(work, request, paths)
        unverified = result.unverified
        summary = result.to_dict()  # head_check and skipped come with it (and subtypes, members)
        summary["file"] = "upload"
        summary["series"] = [i.to_dict() | {"chosen": i.series_id == series.series_id} for i in infos]
        summary["numbering"] = "index is 0-based; people see slice number index + 1 (1 = most inferior)"
        summary["scan_rule"] = scan_rule_fields(result)
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
        heatmap, why_not = _heatmap_file(result, self.settings)
        summary["heatmap_volume"] = "written" if heatmap else f"not written: {why_not}"
        text = series_md(result, unverified, n_series=len(infos))
        if why_not:
            text += f"\n\n**Heatmap volume not written:** {md_escape(user_message(why_not, paths))}"
        release_memory()
        return text, summary, _report_file(result, predictor, unverified, self.settings), heatmap, key

    def _read_image_set(self, paths: list[str], model_id: Any, allow_unverified: Any, tta: Any, request: Any):
        """Several PNG/JPG files: each read on its own (:mod:`brain_ct.image_set`), no scan verdict."""

        def work() -> ImageSetReading:
            predictor = self.registry.get(model_id)
            return read_image_set(predictor, paths, allow_unverified=bool(allow_unverified), tta=bool(tta))

        reading = self._run(work, request, paths)
        key = self.results.put({"images": reading, "unverified": bool(allow_unverified)})
        log.info("image set read: %s", reading.summary())
        release_memory()
        return image_set_md(reading, bool(allow_unverified)), reading.to_dict(), None, None, key

    def show_series_slice(self, state, number, preset="brain", center=40.0, width=80.0, opacity=0.4):
        """(overlay, explanation markdown) of slice ``number`` (1 = most inferior) of the scan in ``state``."""
        entry = self._entry(state)
        if not entry:
            return None, (f"*{EXPIRED}*" if state else "")
        if "images" in entry:
            return self._show_set_image(entry, number, preset, center, width, opacity)
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

    def _show_set_image(self, entry, number, preset, center, width, opacity):
        """(overlay, explanation) of image ``number`` (1-based, upload order) of an image set."""
        reading: ImageSetReading = entry["images"]
        i = int(min(max(int(number or 1) - 1, 0), len(reading.predictions) - 1))
        pred = reading.predictions[i]
        if pred is None:
            return None, f"**Image {i + 1} of {len(reading.predictions)}** could not be read (see above)."
        overlay, _ = render(reading.images[i], pred, preset, center, width, opacity)
        head = f"**Image {i + 1} of {len(reading.predictions)}** (upload order)"
        return overlay, head + "\n\n" + explanation_md(pred, entry["unverified"])

    def series_browser(self, state):
        """Slider (1-based, hidden for a one-slice scan) at the most suspicious slice, and the plot
        (an image set: the slider over its images, no plot: they have no order to plot along)."""
        entry = self._entry(state)
        if not entry:
            return gr.update(minimum=1, maximum=2, value=1, visible=False), None
        if "images" in entry:
            reading: ImageSetReading = entry["images"]
            first = (reading.suspicious or [0])[0] + 1
            n = len(reading.predictions)
            slider = gr.update(
                minimum=1, maximum=n, value=first, step=1, visible=True, label="Image number (upload order)"
            )
            return slider, gr.update(value=None, label=NO_PLOT_LABEL)
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
            minimum=1,
            maximum=max(n, 2),
            value=result.most_suspicious + 1,
            step=1,
            visible=n > 1,
            label=SLIDER_LABEL,
        )
        return slider, plot

    def scan_window_control(self, state):
        """The window presets for the scan in ``state``: greyed out when its slices are 8-bit images."""
        entry = self._entry(state)
        if entry and "images" in entry:
            return window_control(next(ct for ct in entry["images"].images if ct is not None))
        return window_control(entry["result"].series.slices[0] if entry else None)

    def series_picker(self, state):
        """The series dropdown: every series of the upload, the one read selected; hidden for one series."""
        entry = self._entry(state)
        infos = entry.get("infos", []) if entry else []
        if len(infos) < 2:
            return gr.update(choices=[], value=None, visible=False)
        chosen = entry["result"].series.series_id
        return gr.update(choices=series_choices(infos), value=chosen, visible=True)

    def error_box(self, request: gr.Request | None = None) -> Any:
        """The session's last error, kept on the page (hidden when there is none)."""
        message = self.errors.pop(_session(request))
        return gr.update(value=message, visible=bool(message))


def limit_queue_per_client(demo: gr.Blocks, reader: Reader) -> None:
    """Refuse a client's model request at the queue's door while :attr:`FairShare.max_queued` of its
    own already wait (HTTP 503 with the reason): one client cannot fill the shared queue."""
    queue = demo._queue
    original = queue.push

    def model_events(fn_id: Any) -> bool:
        fn = demo.fns.get(fn_id) if isinstance(demo.fns, dict) else None
        return getattr(fn, "concurrency_id", None) == "model"

    async def push(body: Any, request: Any, username: Any) -> Any:
        if model_events(body.fn_index):
            waiting = queue.event_queue_per_concurrency_id.get("model")
            queued = [reader.address(e.request) for e in (waiting.queue if waiting else [])]
            refusal = reader.in_flight.queue_refusal(reader.address(request), queued)
            if refusal:
                return False, refusal, "queue_full"
        return await original(body, request, username)

    queue.push = push  # type: ignore[method-assign]


def clear_slice_outputs():
    """Every output of the one-slice tab, emptied before a new reading (a failed one leaves nothing old);
    the subtype panel keeps its visibility (the model's), and a new reading's heatmap is for ``any``."""
    return (
        None,
        "",
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
        gr.update(value=None, label=PLOT_LABEL),
        gr.update(minimum=1, maximum=2, value=1, visible=False),
        None,
        "",
        gr.update(value="", visible=False),
        None,
    )


def build_demo(registry: ModelRegistry, settings: AppSettings | None = None) -> gr.Blocks:
    """The page around ``registry``'s models: layout and events (starts nothing, loads no model)."""
    reader = Reader(registry, settings=settings)
    # No delete_cache: Gradio's sweep deleted the examples' cached copies; start_sweeper sweeps instead.
    with gr.Blocks(title="Brain-CT hemorrhage reader") as demo:
        gr.Markdown("# Brain-CT hemorrhage reading assistant")
        gr.Markdown(f"> **{DISCLAIMER}**", elem_id="disclaimer")
        banner = gr.Markdown(f"**Model in use:** `{registry.default}`", elem_id="banner")
        with gr.Row(elem_id="options"):
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
                    # Under the upload, where the eye is after dropping a file: the error or the reading.
                    error = gr.Markdown(visible=False, elem_id="error-box")
                    bar = gr.HTML(elem_id="reading-bar")
                    examples = example_files()
                    if examples:
                        demo.example_sets = [  # type: ignore[attr-defined]
                            gr.Examples(
                                examples,
                                inputs=upload,
                                label="Examples (synthetic phantoms; real CT slices: 15.dcm is held out from "
                                "training)",
                            )
                        ]
                    # The /predict API's label (the verdict, P and 1 − P); the page shows the bar above.
                    label = _verdict_labels(gr.Label(num_top_classes=2, visible=False, elem_id="reading"))
                    reading_json = gr.JSON(visible=False)
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
                    # The verdict above the file list: with many files the list would push it out of view.
                    scan_error = gr.Markdown(visible=False, elem_id="scan-error-box")
                    verdict = gr.Markdown(elem_id="scan-verdict")
                    scan_upload = _uploads_only(
                        gr.File(label="Whole scan", file_count="multiple", elem_id="scan-upload", height=220)
                    )
                    gr.Markdown(
                        "A .zip of the scan's DICOM slices, the slices themselves, a NIfTI volume "
                        "(.nii / .nii.gz), or several PNG/JPG images (each read on its own).",
                        elem_id="scan-upload-help",
                    )
                    series_choice = gr.Dropdown(
                        [],
                        value=None,
                        label="Series",
                        visible=False,
                        allow_custom_value=True,
                        elem_id="series",
                    )
                    scan_report = gr.File(label="PDF report", interactive=False)
                    scan_heatmap = gr.File(
                        label="Heatmap volume (NIfTI, opens over the scan in 3D Slicer / ITK-SNAP)",
                        interactive=False,
                        elem_id="scan-heatmap",
                    )
                with gr.Column(scale=2):
                    # No toolbar: it covered the plot's legend.
                    plot = image(label=PLOT_LABEL, buttons=[])
                    slider = gr.Slider(
                        1,
                        2,
                        1,
                        step=1,
                        label=SLIDER_LABEL,
                        visible=False,
                        elem_id="slice",
                    )
                    scan_overlay = image(label="Slice with Grad-CAM overlay")
                    scan_text = gr.Markdown(elem_id="scan-slice")
                    scan_json = gr.JSON(label="Per-slice results", visible=False)
            scan_state = gr.State(time_to_live=SESSION_TTL_S, delete_callback=reader.results.discard)

        slice_outputs = [
            label,
            bar,
            reading_json,
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
        reading.success(reader.reading_bar, inputs=slice_state, outputs=bar, api_visibility="private")
        # Public: after /predict, the same client's /reading gives that reading as plain JSON fields.
        reading.success(reader.reading_json, inputs=slice_state, outputs=reading_json, api_name="reading")
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
    limit_queue_per_client(demo, reader)
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


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be listened on now (Gradio would fail with a raw OSError)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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
    app = create_app(settings)
    start_sweeper(settings, keep=cached_examples(app))
    try:
        if not port_free(args.host, args.port):
            print(
                f"Port {args.port} on {args.host} is already in use (another app or an earlier run of this "
                "one?). Stop it, or start this one on another port: python app.py --port 7861",
                file=sys.stderr,
            )
            raise SystemExit(2)
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
