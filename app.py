"""Gradio app: drop a head-CT slice or a whole scan, see the model's reading, a Grad-CAM heatmap and an explanation.

Wiring only: every image and model operation lives in :mod:`brain_ct`. Importing this module
builds ``demo`` but starts no server and loads no model; ``python app.py`` (what Hugging Face
Spaces runs) loads the model once, warms it up and launches.

    python app.py [--model ID_OR_DIR] [--port 7860] [--host 127.0.0.1] [--share] [--mcp]

Model order: ``--model``, env ``BRAIN_CT_MODEL``, the bundled demo model; ``--revision`` or env
``BRAIN_CT_MODEL_REVISION`` pins a Hub model to a commit. Extra models for the dropdown: env
``BRAIN_CT_MODELS`` (comma-separated Hub ids or folders), loaded lazily and cached.

API: ``gradio_client.Client(url).predict(handle_file(path), api_name="/predict")`` returns
(label dict, overlay image path, explanation markdown); ``/predict_series`` takes a list of files
(a zip, or the slices) and returns (scan verdict markdown, per-slice JSON, PDF report path).
"""

from __future__ import annotations

import argparse
import atexit
import io
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np

from brain_ct import DISCLAIMER
from brain_ct.errors import BrainCTError
from brain_ct.io import CTImage, load_image
from brain_ct.model import resolve_model_id, shown_model_id
from brain_ct.predictor import Prediction, Predictor
from brain_ct.report import probability_plot_png, write_report
from brain_ct.series import SeriesPrediction, predict_series, read_series
from brain_ct.windowing import PRESETS, display_window

log = logging.getLogger("brain_ct.app")

MAX_FILE_SIZE = "200mb"
CONCURRENCY = 2
QUEUE_SIZE = 64
#: (sweep every s, delete older than s): uploads, overlays and report links expire after ~5 minutes;
#: deleting an upload inside the handler is unsafe, as identical uploads share one cached path.
UPLOAD_CACHE = (60, 300)
WINDOW_CHOICES = ["brain", "subdural", "blood", "bone", "soft_tissue", "custom"]
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
#: pydicom's bundled real head-CT slice (JPEG 2000), shown as an example of real anatomy.
REAL_EXAMPLE = "693_J2KI.dcm"


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
        if settings.is_demo:
            text += (
                " — ⚠️ **trained on synthetic phantoms — for demonstration only**; never use it on patients."
            )
        elif settings.trained_on:
            text += f" — trained on {settings.trained_on}"
        return text


def example_files() -> list[str]:
    """The app's one-click examples: synthetic phantoms made by the project, and a real CT test slice."""
    files = sorted(str(p) for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in {".dcm", ".png", ".jpg"})
    try:
        from pydicom.data import get_testdata_file

        real = get_testdata_file(REAL_EXAMPLE)
    except Exception:  # the real slice is a bonus; the app works without it
        real = None
    return files + ([str(real)] if real else [])


def _extra_models() -> list[str]:
    return [m.strip() for m in os.environ.get("BRAIN_CT_MODELS", "").split(",") if m.strip()]


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
    """(overlay RGB, plain grey) of one slice in the chosen display window."""
    c, w = _window(preset, center, width)
    try:
        plain = display_window(ct, c, w)
        return pred.overlay(opacity, display=plain), plain
    except BrainCTError as exc:
        raise gr.Error(str(exc), print_exception=False) from None


def label_dict(probability: float) -> dict[str, float]:
    return {"hemorrhage": float(probability), "normal": float(1.0 - probability)}


def explanation_md(pred: Prediction) -> str:
    verdict = "Hemorrhage suspected" if pred.label == "hemorrhage" else "No hemorrhage found"
    lines = [
        f"**{verdict}** — P(hemorrhage) = {pred.probability:.1%} (threshold {pred.threshold:.1%})",
        "",
        pred.explanation,
    ]
    if pred.regions:
        lines += ["", "| where the model looked | side (patient's) | score |", "|---|---|---|"]
        lines += [f"| {r['region']} | {r['side']} | {float(r['score']):.2f} |" for r in pred.regions[:5]]
    return "\n".join(lines)


def meta_rows(ct: CTImage) -> list[list[str]]:
    return [[str(k), str(v)] for k, v in ct.meta.items()]


#: Reports live in one private folder per process; each request gets its own subfolder, swept after
#: REPORT_MAX_AGE_S (gradio serves its own cached copy of the returned file) and at exit.
REPORT_ROOT = Path(tempfile.mkdtemp(prefix="brain_ct_reports_"))
REPORT_MAX_AGE_S = 300
atexit.register(shutil.rmtree, REPORT_ROOT, True)


def _sweep_reports(now: float) -> None:
    for old in REPORT_ROOT.iterdir():
        try:
            if now - old.stat().st_mtime > REPORT_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another request swept it first
            continue


def _report_file(result: SeriesPrediction | Prediction, predictor: Predictor) -> str:
    _sweep_reports(time.time())
    out = Path(tempfile.mkdtemp(dir=REPORT_ROOT)) / "brain_ct_report.pdf"
    return str(write_report(result, out, model_settings=predictor.settings))


class Reader:
    """The app's event functions, kept free of layout so tests can call them directly."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

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
    ):
        """Read one head-CT slice (DICOM, PNG or JPG) for intracranial hemorrhage: P(hemorrhage), a Grad-CAM
        overlay and a plain-language explanation. Research and education aid, not a diagnosis.

        Args:
            file: the slice to read.
            model_id: the model (default: the app's model).
            allow_unverified: skip the "looks like an axial head CT" check.
            tta: average with the horizontally flipped slice.
            preset: display window of the overlay (brain, subdural, blood, bone, soft_tissue, custom).
            center: custom window center in HU.
            width: custom window width in HU.
            opacity: heatmap opacity in [0, 1].
        """
        paths = _paths(file)
        if not paths:
            return None, None, "", None
        try:
            predictor = self.registry.get(model_id)
            ct = load_image(paths[0], allow_unverified=bool(allow_unverified), name=Path(paths[0]).name)
            pred = predictor.predict(ct, tta=bool(tta))
        except BrainCTError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        overlay, _ = render(ct, pred, preset, center, width, opacity)
        return (
            label_dict(pred.probability),
            overlay,
            explanation_md(pred),
            {"ct": ct, "pred": pred, "model": model_id},
        )

    def slice_details(self, state, preset="brain", center=40.0, width=80.0, opacity=0.4):
        """Plain image, metadata table and the PDF report of the slice in ``state``."""
        if not state:
            return None, [], None
        _, plain = render(state["ct"], state["pred"], preset, center, width, opacity)
        report = _report_file(state["pred"], self.registry.get(state["model"]))
        return plain, meta_rows(state["ct"]), report

    def rerender_slice(self, state, preset, center, width, opacity):
        if not state:
            return None, None
        return render(state["ct"], state["pred"], preset, center, width, opacity)

    def read_series(self, files, model_id=None, allow_unverified=False, tta=False):
        """Read a whole head-CT scan (a zip of DICOM slices, or several slices) for intracranial hemorrhage:
        the scan verdict, per-slice results in anatomical order and a PDF report. Not a diagnosis.

        Args:
            files: a .zip of the scan's slices, or the slice files.
            model_id: the model (default: the app's model).
            allow_unverified: skip the "looks like an axial head CT" check.
            tta: average with the horizontally flipped slices.
        """
        paths = _paths(files)
        if not paths:
            return "", None, None, None
        try:
            predictor = self.registry.get(model_id)
            source = paths[0] if len(paths) == 1 else paths
            series = read_series(source, allow_unverified=bool(allow_unverified))
            result = predict_series(predictor, series, tta=bool(tta), source=f"{len(paths)} uploaded file(s)")
        except BrainCTError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        summary = result.to_dict()
        summary["file"] = "upload"
        return series_md(result), summary, _report_file(result, predictor), {"result": result}

    def show_series_slice(self, state, index, preset="brain", center=40.0, width=80.0, opacity=0.4):
        """(overlay, explanation markdown) of slice ``index`` of the scan in ``state``."""
        if not state:
            return None, ""
        result: SeriesPrediction = state["result"]
        i = int(min(max(int(index), 0), result.n_slices - 1))
        pred = result.predictions[i]
        overlay, _ = render(result.series.slices[i], pred, preset, center, width, opacity)
        head = f"**Slice {i + 1} of {result.n_slices}** (`{result.series.files[i]}`)"
        return overlay, head + "\n\n" + explanation_md(pred)

    def series_browser(self, state):
        """Slider set to the most suspicious slice, and the per-slice probability plot."""
        if not state:
            return gr.update(maximum=1, value=0), None
        result: SeriesPrediction = state["result"]
        png = probability_plot_png(
            result.probabilities,
            result.threshold,
            positive=result.positive_slices,
            highlight=result.most_suspicious,
        )
        plot = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return gr.update(
            minimum=0, maximum=max(result.n_slices - 1, 0), value=result.most_suspicious, step=1
        ), plot


def series_md(result: SeriesPrediction) -> str:
    verdict = (
        "Hemorrhage suspected in this scan"
        if result.label == "hemorrhage"
        else "No hemorrhage found in this scan"
    )
    lines = [
        f"## {verdict}",
        f"Scan-level P(hemorrhage) = {result.probability:.1%} (threshold {result.threshold:.1%}); "
        f"{result.n_slices} slices read, inferior → superior.",
    ]
    if result.positive_slices:
        shown = ", ".join(str(i + 1) for i in result.positive_slices[:20])
        lines.append(f"Suspicious slices: {shown} (most suspicious: {result.most_suspicious + 1}).")
    if result.series.errors:
        lines.append(f"{len(result.series.errors)} file(s) could not be read and were skipped.")
    return "\n\n".join(lines)


def build_demo(registry: ModelRegistry) -> gr.Blocks:
    reader = Reader(registry)
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

        with gr.Tab("One slice"):
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.File(
                        label="Head-CT slice: DICOM (.dcm or no extension), PNG, JPG", elem_id="upload"
                    )
                    examples = example_files()
                    if examples:
                        gr.Examples(
                            examples,
                            inputs=upload,
                            label="Examples (synthetic phantoms; a real CT test slice)",
                        )
                    label = gr.Label(num_top_classes=2, label="Reading", elem_id="reading")
                    report = gr.File(label="PDF report", interactive=False)
                with gr.Column(scale=2):
                    with gr.Row():
                        overlay_img = gr.Image(
                            label="Grad-CAM overlay", type="numpy", format="png", interactive=False
                        )
                        plain_img = gr.Image(label="Image", type="numpy", format="png", interactive=False)
                    explanation = gr.Markdown(elem_id="explanation")
                    meta = gr.Dataframe(
                        headers=["DICOM tag", "value"], label="Image information (non-identifying)"
                    )
            slice_state = gr.State()

        with gr.Tab("Whole scan"):
            with gr.Row():
                with gr.Column(scale=1):
                    scan_upload = gr.File(
                        label="A .zip of the scan's DICOM slices, or several slices at once",
                        file_count="multiple",
                        elem_id="scan-upload",
                    )
                    verdict = gr.Markdown(elem_id="scan-verdict")
                    scan_report = gr.File(label="PDF report", interactive=False)
                with gr.Column(scale=2):
                    plot = gr.Image(
                        label="P(hemorrhage) per slice (dashed: threshold)", type="numpy", interactive=False
                    )
                    slider = gr.Slider(0, 1, 0, step=1, label="Slice (inferior → superior)")
                    scan_overlay = gr.Image(
                        label="Slice with Grad-CAM overlay", type="numpy", format="png", interactive=False
                    )
                    scan_text = gr.Markdown()
                    scan_json = gr.JSON(label="Per-slice results", visible=False)
            scan_state = gr.State()

        upload.change(
            reader.read_slice,
            inputs=[upload, *options, *view],
            outputs=[label, overlay_img, explanation, slice_state],
            api_name="predict",
            concurrency_limit=CONCURRENCY,
            concurrency_id="model",
        ).then(
            reader.slice_details,
            inputs=[slice_state, *view],
            outputs=[plain_img, meta, report],
            api_visibility="private",
        )
        for control in view:
            control.change(
                reader.rerender_slice,
                inputs=[slice_state, *view],
                outputs=[overlay_img, plain_img],
                api_visibility="private",
            )

        scan_upload.change(
            reader.read_series,
            inputs=[scan_upload, *options],
            outputs=[verdict, scan_json, scan_report, scan_state],
            api_name="predict_series",
            concurrency_limit=CONCURRENCY,
            concurrency_id="model",
        ).then(
            reader.series_browser, inputs=scan_state, outputs=[slider, plot], api_visibility="private"
        ).then(
            reader.show_series_slice,
            inputs=[scan_state, slider, *view],
            outputs=[scan_overlay, scan_text],
            api_visibility="private",
        )
        for control in [slider, *view]:
            control.change(
                reader.show_series_slice,
                inputs=[scan_state, slider, *view],
                outputs=[scan_overlay, scan_text],
                api_visibility="private",
            )

        model_id.change(registry.banner, inputs=model_id, outputs=banner, api_visibility="private")
        demo.load(registry.banner, inputs=model_id, outputs=banner, api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
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
    return parser.parse_args(argv)


def make_registry(model: str | None = None, revision: str | None = None) -> ModelRegistry:
    revision = revision or os.environ.get("BRAIN_CT_MODEL_REVISION") or None
    return ModelRegistry(resolve_model_id(model), _extra_models(), revision=revision)


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
        max_file_size=MAX_FILE_SIZE,
        **kwargs,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    app_registry, app_demo = registry, demo
    if (args.model is not None and shown_model_id(resolve_model_id(args.model)) != registry.default) or (
        args.revision != registry.revision
    ):
        app_registry = make_registry(args.model, args.revision)
        app_demo = build_demo(app_registry)
    warm_up(app_registry)  # load once at start, not per request
    launch(app_demo, args)


registry = make_registry()
demo = build_demo(registry)

if __name__ == "__main__":
    main()
