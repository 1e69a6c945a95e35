"""Gradio app: drop a head-CT slice, see the model's reading, a Grad-CAM heatmap and an explanation.

Wiring only: every image and model operation lives in :mod:`brain_ct`. Importing this module
builds ``demo`` but starts no server and loads no model; ``python app.py`` (what Hugging Face
Spaces runs) loads the model once, warms it up and launches.

    python app.py [--model ID_OR_DIR] [--port 7860] [--host 127.0.0.1] [--share] [--mcp]

Model order: ``--model``, env ``BRAIN_CT_MODEL``, the bundled demo model. Extra models for the
dropdown: env ``BRAIN_CT_MODELS`` (comma-separated Hub ids or folders), loaded lazily and cached.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from brain_ct import DISCLAIMER
from brain_ct.errors import BrainCTError
from brain_ct.explain import overlay as heat_overlay
from brain_ct.io import CTImage, load_image
from brain_ct.model import resolve_model_id
from brain_ct.predictor import Prediction, Predictor
from brain_ct.windowing import PRESETS, display_window

log = logging.getLogger("brain_ct.app")

MAX_FILE_SIZE = "64mb"
CONCURRENCY = 2
QUEUE_SIZE = 64
WINDOW_CHOICES = ["brain", "subdural", "blood", "bone", "soft_tissue", "custom"]
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


class ModelRegistry:
    """Predictors by model id: the default is loaded at start, extra ones on first use, all cached."""

    def __init__(self, default: str, extra: list[str] | None = None) -> None:
        self.default = default
        self.choices = list(dict.fromkeys([default, *(extra or [])]))
        self._cache: dict[str, Predictor] = {}
        self._lock = threading.Lock()

    def get(self, model_id: str | None = None) -> Predictor:
        model_id = model_id or self.default
        if model_id not in self.choices:
            raise gr.Error(f"unknown model {model_id!r}; choose one of {', '.join(self.choices)}")
        with self._lock:
            if model_id not in self._cache:
                self._cache[model_id] = Predictor.from_pretrained(model_id)
            return self._cache[model_id]


def _extra_models() -> list[str]:
    return [m.strip() for m in os.environ.get("BRAIN_CT_MODELS", "").split(",") if m.strip()]


def _window(preset: str, center: float | None, width: float | None) -> tuple[float | None, float | None]:
    if preset == "custom":
        return center, width
    return PRESETS.get(preset, (None, None))


def _render(ct: CTImage, pred: Prediction, preset: str, center: float | None, width: float | None, opacity: float):
    c, w = _window(preset, center, width)
    plain = display_window(ct, c, w)
    return heat_overlay(plain, pred.heatmap, opacity=opacity), plain


def _label(pred: Prediction) -> dict[str, float]:
    return {"hemorrhage": float(pred.probability), "normal": float(1.0 - pred.probability)}


def _explanation_md(pred: Prediction) -> str:
    verdict = "Hemorrhage suspected" if pred.label == "hemorrhage" else "No hemorrhage found"
    lines = [
        f"**{verdict}** — P(hemorrhage) = {pred.probability:.1%} (threshold {pred.threshold:.1%})",
        "",
        pred.explanation,
    ]
    if pred.regions:
        lines += ["", "| where the model looked | side (patient) | score |", "|---|---|---|"]
        lines += [f"| {r['region']} | {r['side']} | {r['score']:.2f} |" for r in pred.regions[:5]]
    return "\n".join(lines)


def _meta_rows(ct: CTImage) -> list[list[str]]:
    return [[str(k), str(v)] for k, v in ct.meta.items()]


def _banner(predictor: Predictor) -> str:
    s = predictor.settings
    text = f"Model in use: `{s.model_id}`"
    if s.is_demo:
        text += " — ⚠️ **trained on synthetic phantoms — for demonstration only**, not on patient data."
    return text


def build_demo(registry: ModelRegistry) -> gr.Blocks:
    def read(file, model_id, allow_unverified, tta, preset, center, width, opacity):
        """Read one uploaded slice: returns the label, the overlay and the explanation."""
        if file is None:
            return None, None, "", None
        try:
            predictor = registry.get(model_id)
            ct = load_image(file, allow_unverified=bool(allow_unverified), name=Path(file).name)
            pred = predictor.predict(ct, tta=bool(tta))
        except BrainCTError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        over, _ = _render(ct, pred, preset, center, width, opacity)
        return _label(pred), over, _explanation_md(pred), {"ct": ct, "pred": pred}

    def details(state, preset, center, width, opacity):
        if not state:
            return None, []
        _, plain = _render(state["ct"], state["pred"], preset, center, width, opacity)
        return plain, _meta_rows(state["ct"])

    def rerender(state, preset, center, width, opacity):
        if not state:
            return None, None
        try:
            return _render(state["ct"], state["pred"], preset, center, width, opacity)
        except BrainCTError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    with gr.Blocks(title="Brain-CT hemorrhage reader", delete_cache=(600, 900)) as demo:
        gr.Markdown("# Brain-CT hemorrhage reading assistant")
        gr.Markdown(f"> **{DISCLAIMER}**", elem_id="disclaimer")
        banner = gr.Markdown(_banner(registry.get()) if registry._cache else f"Model in use: `{registry.default}`")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Head-CT slice: DICOM (.dcm or no extension), PNG, JPG", elem_id="upload")
                model_id = gr.Dropdown(registry.choices, value=registry.default, label="Model")
                with gr.Row():
                    allow_unverified = gr.Checkbox(False, label="Allow unusual images (skip the head-CT check)")
                    tta = gr.Checkbox(False, label="Test-time augmentation (flip)")
                preset = gr.Radio(WINDOW_CHOICES, value="brain", label="Display window")
                with gr.Row():
                    center = gr.Number(40, label="Custom center (HU)")
                    width = gr.Number(80, label="Custom width (HU)")
                opacity = gr.Slider(0.0, 1.0, 0.4, step=0.05, label="Heatmap opacity")
                examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*") if p.is_file())
                if examples:
                    gr.Examples(examples, inputs=upload, label="Examples (synthetic phantoms and a real CT test slice)")
            with gr.Column(scale=2):
                label = gr.Label(num_top_classes=2, label="Reading", elem_id="reading")
                with gr.Row():
                    overlay_img = gr.Image(label="Grad-CAM overlay", type="numpy", format="png")
                    plain_img = gr.Image(label="Image", type="numpy", format="png")
                explanation = gr.Markdown(elem_id="explanation")
                meta = gr.Dataframe(headers=["DICOM tag", "value"], label="Image information (non-identifying)")
        state = gr.State()

        controls = [preset, center, width, opacity]
        upload.change(
            read,
            inputs=[upload, model_id, allow_unverified, tta, *controls],
            outputs=[label, overlay_img, explanation, state],
            api_name="predict",
            concurrency_limit=CONCURRENCY,
        ).then(details, inputs=[state, *controls], outputs=[plain_img, meta], api_visibility="private")
        for control in controls:
            control.change(
                rerender, inputs=[state, *controls], outputs=[overlay_img, plain_img], api_visibility="private"
            )
        model_id.change(lambda m: _banner(registry.get(m)), inputs=model_id, outputs=banner, api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Brain-CT hemorrhage reading assistant (Gradio app)")
    parser.add_argument("--model", default=None, help="Hub id or folder; default env BRAIN_CT_MODEL, then the demo")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--mcp", action="store_true", help="also serve the prediction as an MCP tool")
    return parser.parse_args(argv)


def make_registry(model: str | None = None) -> ModelRegistry:
    return ModelRegistry(resolve_model_id(model), _extra_models())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    registry = make_registry(args.model)
    registry.get()  # load once at start, not per request
    app = build_demo(registry)
    app.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        mcp_server=args.mcp,
        max_file_size=MAX_FILE_SIZE,
    )


demo = build_demo(make_registry())

if __name__ == "__main__":
    main()
