"""Gradio app: drop a head-CT slice or a whole scan, see the model's reading, a Grad-CAM heatmap and an explanation.

Wiring only: every image and model operation lives in :mod:`brain_ct` (what a reading shows in
:mod:`brain_ct.readings`, the server's settings, models and run folder in :mod:`brain_ct.server`), the
patches of Gradio internals in :mod:`app_gradio`. Importing this module does
no work: no folder, no environment change, no thread, no model. :func:`create_app` builds the page
from :class:`AppSettings`; :func:`main` (``python app.py``, what Hugging Face Spaces runs) prepares
the run folder, loads the model once, warms it up and launches.

    python app.py [--model ID_OR_DIR] [--port 7860] [--host 127.0.0.1] [--share] [--mcp] [--verbose]

Model order: ``--model``, env ``BRAIN_CT_MODEL``, the bundled ResNet-50 (``models/brain-ct-resnet50``); ``--revision`` or env
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
import logging
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import gradio as gr

from app_gradio import (
    cached_examples,
    limit_queue_per_client,
    session_of,
    shown,
    shown_on_page,
    uploads_only,
    verdict_labels,
    write_images_to_unique_files,
)
from brain_ct import DISCLAIMER
from brain_ct.__main__ import setup_logging
from brain_ct.errors import BrainCTError
from brain_ct.io import CTImage
from brain_ct.labels import ANY, SUBTYPES
from brain_ct.page_text import explanation_md, meta_rows, series_choices, verdict_label
from brain_ct.readings import (
    HIDDEN_SLIDER,
    Readings,
    upload_paths,
    window_note,
)
from brain_ct.server import (
    AppSettings,
    ModelRegistry,
    example_files,
    exit_if_port_busy,
    make_registry,
    parse_args,
    prepare_run_dir,
    remove_run_dir,
    start_sweeper,
    stop_on_signals,
    warm_up,
)
from brain_ct.serving import SESSION_TTL_S, client_address, limit_malloc_arenas
from brain_ct.wording import PLOT_LABEL, SLIDER_LABEL

log = logging.getLogger("brain_ct.app")

T = TypeVar("T")

MAX_FILE_SIZE = "200mb"
CONCURRENCY = 2
QUEUE_SIZE = 64
#: Gradio keeps the state of at most this many sessions (its default, 10,000, is unbounded in practice).
STATE_SESSION_CAPACITY = 128
WINDOW_CHOICES = ["brain", "subdural", "blood", "bone", "soft_tissue", "custom"]
#: What the Grad-CAM of a subtype model can explain: P(any hemorrhage), or one subtype's output.
HEATMAP_CHOICES = [ANY, *SUBTYPES]
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


# --------------------------------------------------------------------------- events


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
    note = window_note(ct)
    return gr.update(interactive=True, info=None) if note is None else gr.update(interactive=False, info=note)


class Reader(Readings):
    """The page's events: :class:`~brain_ct.readings.Readings` with Gradio's requests, updates and errors.

    Kept free of layout so tests can call them directly. A request's session and client address
    (see :func:`~brain_ct.serving.client_address`) decide its fair share; the page's ``gr.State``
    holds only the key of a reading in :attr:`results`.
    """

    def address(self, request: gr.Request | None) -> str | None:
        """The client address a request's fair share is counted by (see :func:`client_address`)."""
        client = getattr(request, "client", None)
        headers = getattr(request, "headers", None) or {}
        return client_address(
            getattr(client, "host", None), headers.get("x-forwarded-for"), self.settings.behind_proxy
        )

    def _who(self, request: gr.Request | None) -> tuple[str | None, str | None]:
        return session_of(request), self.address(request)

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
        paths = upload_paths(file)
        if not paths:
            return None, None, "", None
        view = (preset, center, width, opacity)
        key, entry, overlay = shown(
            lambda: self.read_slice_file(
                paths[0], model_id, bool(allow_unverified), bool(tta), view, *self._who(request)
            ),
            request,
        )
        return verdict_label(entry.pred), overlay, explanation_md(entry.pred), key

    slice_details = shown_on_page(Readings.slice_details)
    rerender_slice = shown_on_page(Readings.rerender_slice)
    show_series_slice = shown_on_page(Readings.show_series_slice)

    def slice_page(self, state, preset="brain", center=40.0, width=80.0, opacity=0.4):
        """:meth:`slice_details` for the page: also the table's header and the window control's state."""
        plain, _, report = self.slice_details(state, preset, center, width, opacity)
        ct = self.slice_image(state)
        table = meta_table(ct) if ct is not None else gr.update(value=[], headers=["property", "value"])
        return plain, table, report, window_control(ct)

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
        view = (preset, center, width, opacity)
        return shown(lambda: self.explain_again(state, target, view, *self._who(request)), request)

    def model_info(self, model_id=None):
        """(banner, subtype panel, "Heatmap for" dropdown) for the chosen model: the subtype controls
        are shown only when it is a subtype model."""
        try:
            is_subtype_model = self.registry.get(model_id).settings.is_multi_label
        except BrainCTError as exc:  # an unknown model, or one that cannot be loaded: its own message
            raise gr.Error(str(exc), print_exception=False) from None
        return (self.registry.banner(model_id), *subtype_controls(is_subtype_model))

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
        paths = upload_paths(files)
        if not paths:
            return "", None, None, None, None
        return shown(
            lambda: self.read_scan_files(
                paths, model_id, bool(allow_unverified), bool(tta), series_id, *self._who(request)
            ),
            request,
        )

    def series_browser(self, state):
        """Slider (1-based, hidden for a one-slice scan) at the most suspicious slice, and the plot
        (an image set: the slider over its images, no plot: they have no order to plot along)."""
        browser = self.scan_browser(state)
        if browser is None:
            return gr.update(**HIDDEN_SLIDER), None
        if browser.plot_label is not None:
            return gr.update(**browser.slider), gr.update(value=None, label=browser.plot_label)
        return gr.update(**browser.slider), browser.plot

    def scan_window_control(self, state):
        """The window presets for the scan in ``state``: greyed out when its slices are 8-bit images."""
        return window_control(self.scan_image(state))

    def series_picker(self, state):
        """The series dropdown: every series of the upload, the one read selected; hidden for one series."""
        options = self.series_options(state)
        if options is None:
            return gr.update(choices=[], value=None, visible=False)
        infos, chosen = options
        return gr.update(choices=series_choices(infos), value=chosen, visible=True)

    def error_box(self, request: gr.Request | None = None) -> Any:
        """The session's last error, kept on the page (hidden when there is none)."""
        message = self.errors.pop(session_of(request))
        return gr.update(value=message, visible=bool(message))


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
        gr.update(**HIDDEN_SLIDER),
        None,
        "",
        gr.update(value="", visible=False),
        None,
    )


# --------------------------------------------------------------------------- page


@dataclass
class Options:
    """The controls above the tabs: the model banner and choice, the reading options and the view."""

    banner: gr.Markdown
    model_id: gr.Dropdown
    preset: gr.Radio
    reading: list[gr.components.Component]  # model, allow unusual images, TTA: every reading's inputs
    view: list[gr.components.Component]  # window preset, center, width, opacity: how a slice is shown


@dataclass
class SliceTab:
    """The one-slice tab's components: the upload, then its outputs in the order
    :func:`clear_slice_outputs` empties them."""

    upload: gr.File
    label: gr.Label
    bar: gr.HTML
    json: gr.JSON
    overlay: gr.Image
    explanation: gr.Markdown
    state: gr.State
    plain: gr.Image
    meta: gr.Dataframe
    report: gr.File
    error: gr.Markdown
    subtypes: gr.Label
    heatmap_for: gr.Dropdown

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [getattr(self, f.name) for f in fields(self)][1:]


@dataclass
class ScanTab:
    """The whole-scan tab's components: the upload and the series choice, then the outputs in the
    order :func:`clear_scan_outputs` empties them."""

    upload: gr.File
    series_choice: gr.Dropdown
    verdict: gr.Markdown
    json: gr.JSON
    report: gr.File
    state: gr.State
    plot: gr.Image
    slider: gr.Slider
    overlay: gr.Image
    text: gr.Markdown
    error: gr.Markdown
    heatmap: gr.File

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [getattr(self, f.name) for f in fields(self)][2:]


def result_image(**kwargs: Any) -> gr.Image:
    """An output image written to a file of its own (see :func:`app_gradio.write_images_to_unique_files`)."""
    return write_images_to_unique_files(gr.Image(type="numpy", format="png", interactive=False, **kwargs))


def options_panel(registry: ModelRegistry) -> Options:
    """The title, the disclaimer, the model banner and the controls every reading shares."""
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
    return Options(
        banner, model_id, preset, [model_id, allow_unverified, tta], [preset, center, width, opacity]
    )


def slice_tab(demo: gr.Blocks, reader: Reader) -> SliceTab:
    """The "One slice" tab: upload and reading on the left, the overlay and its explanation on the right."""
    with gr.Tab("One slice"):
        with gr.Row():
            with gr.Column(scale=1):
                upload = uploads_only(
                    gr.File(label="Head-CT slice: DICOM (.dcm or no extension), PNG, JPG", elem_id="upload")
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
                            label="Examples (synthetic phantoms; real CT slices: 15.dcm is held out from training)",
                        )
                    ]
                # The /predict API's label (the verdict, P and 1 − P); the page shows the bar above.
                label = verdict_labels(gr.Label(num_top_classes=2, visible=False, elem_id="reading"))
                json = gr.JSON(visible=False)
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
                    overlay = result_image(label="Grad-CAM overlay")
                    plain = result_image(label="Image")
                explanation = gr.Markdown(elem_id="explanation")
                meta = gr.Dataframe(
                    headers=["property", "value"], label="Image information (non-identifying)"
                )
        state = gr.State(time_to_live=SESSION_TTL_S, delete_callback=reader.results.discard)
    return SliceTab(
        upload,
        label,
        bar,
        json,
        overlay,
        explanation,
        state,
        plain,
        meta,
        report,
        error,
        subtypes,
        heatmap_for,
    )


def scan_tab(reader: Reader) -> ScanTab:
    """The "Whole scan" tab: upload and verdict on the left, the P plot and the slice browser on the right."""
    with gr.Tab("Whole scan"):
        with gr.Row():
            with gr.Column(scale=1):
                # The verdict above the file list: with many files the list would push it out of view.
                error = gr.Markdown(visible=False, elem_id="scan-error-box")
                verdict = gr.Markdown(elem_id="scan-verdict")
                upload = uploads_only(
                    gr.File(label="Whole scan", file_count="multiple", elem_id="scan-upload", height=220)
                )
                gr.Markdown(
                    "A .zip of the scan's DICOM slices, the slices themselves, a NIfTI volume "
                    "(.nii / .nii.gz), or several PNG/JPG images (each read on its own).",
                    elem_id="scan-upload-help",
                )
                series_choice = gr.Dropdown(
                    [], value=None, label="Series", visible=False, allow_custom_value=True, elem_id="series"
                )
                report = gr.File(label="PDF report", interactive=False)
                heatmap = gr.File(
                    label="Heatmap volume (NIfTI, opens over the scan in 3D Slicer / ITK-SNAP)",
                    interactive=False,
                    elem_id="scan-heatmap",
                )
            with gr.Column(scale=2):
                # No toolbar: it covered the plot's legend.
                plot = result_image(label=PLOT_LABEL, buttons=[])
                slider = gr.Slider(1, 2, 1, step=1, label=SLIDER_LABEL, visible=False, elem_id="slice")
                overlay = result_image(label="Slice with Grad-CAM overlay")
                text = gr.Markdown(elem_id="scan-slice")
                json = gr.JSON(label="Per-slice results", visible=False)
        state = gr.State(time_to_live=SESSION_TTL_S, delete_callback=reader.results.discard)
    return ScanTab(
        upload, series_choice, verdict, json, report, state, plot, slider, overlay, text, error, heatmap
    )


def wire_slice_tab(tab: SliceTab, options: Options, reader: Reader) -> None:
    """The one-slice events: ``/predict`` and, after it, ``/reading``, ``/subtypes``; ``/heatmap``."""
    view = options.view
    # Every output is emptied first, so a failed reading leaves nothing of the previous one.
    reading = tab.upload.change(
        clear_slice_outputs, outputs=tab.outputs, api_visibility="private", queue=False
    ).then(
        reader.read_slice,
        inputs=[tab.upload, *options.reading, *view],
        outputs=[tab.label, tab.overlay, tab.explanation, tab.state],
        api_name="predict",
        concurrency_limit=CONCURRENCY,
        concurrency_id="model",
    )
    reading.failure(reader.error_box, outputs=tab.error, api_visibility="private")
    reading.success(reader.reading_bar, inputs=tab.state, outputs=tab.bar, api_visibility="private")
    # Public: after /predict, the same client's /reading gives that reading as plain JSON fields.
    reading.success(reader.reading_json, inputs=tab.state, outputs=tab.json, api_name="reading")
    reading.success(
        reader.slice_page,
        inputs=[tab.state, *view],
        outputs=[tab.plain, tab.meta, tab.report, options.preset],
        api_visibility="private",
    )
    # Public: after /predict, the same client's /subtypes gives that reading's subtype probabilities.
    reading.success(reader.subtype_panel, inputs=tab.state, outputs=tab.subtypes, api_name="subtypes")
    # .select: Gradio 6's dropdown fires .input twice per choice (the second read was refused as busy).
    tab.heatmap_for.select(
        reader.change_heatmap,
        inputs=[tab.state, tab.heatmap_for, *view],
        outputs=[tab.overlay, tab.explanation, tab.report],
        api_name="heatmap",
        concurrency_limit=CONCURRENCY,
        concurrency_id="model",
    )
    for control in view:
        control.change(
            reader.rerender_slice,
            inputs=[tab.state, *view],
            outputs=[tab.overlay, tab.plain],
            api_visibility="private",
        )


def wire_scan_tab(tab: ScanTab, options: Options, reader: Reader) -> None:
    """The whole-scan events: ``/predict_series``, a series chosen, the slice browser."""
    view = options.view
    read = {
        "fn": reader.read_series,
        "inputs": [tab.upload, *options.reading, tab.series_choice],
        "outputs": [tab.verdict, tab.json, tab.report, tab.heatmap, tab.state],
        "concurrency_limit": CONCURRENCY,
        "concurrency_id": "model",
    }
    show_slice = {"inputs": [tab.state, tab.slider, *view], "outputs": [tab.overlay, tab.text]}

    def after_reading(event: Any) -> None:
        event.failure(reader.error_box, outputs=tab.error, api_visibility="private")
        event.success(
            reader.series_browser, inputs=tab.state, outputs=[tab.slider, tab.plot], api_visibility="private"
        ).then(
            reader.series_picker, inputs=tab.state, outputs=tab.series_choice, api_visibility="private"
        ).then(
            reader.scan_window_control, inputs=tab.state, outputs=options.preset, api_visibility="private"
        ).then(reader.show_series_slice, **show_slice, api_visibility="private")

    # A new upload reads the default series (the dropdown is reset first); choosing a series re-reads.
    after_reading(
        tab.upload.change(
            lambda: (*clear_scan_outputs(), gr.update(choices=[], value=None, visible=False)),
            outputs=[*tab.outputs, tab.series_choice],
            api_visibility="private",
            queue=False,
        ).then(**read, api_name="predict_series")
    )
    after_reading(
        tab.series_choice.input(
            clear_scan_outputs, outputs=tab.outputs, api_visibility="private", queue=False
        ).then(**read, api_visibility="private")
    )
    for control in [tab.slider, *view]:
        control.change(reader.show_series_slice, **show_slice, api_visibility="private")


def build_demo(registry: ModelRegistry, settings: AppSettings | None = None) -> gr.Blocks:
    """The page around ``registry``'s models: layout and events (starts nothing, loads no model)."""
    reader = Reader(registry, settings=settings)
    # No delete_cache: Gradio's sweep deleted the examples' cached copies; start_sweeper sweeps instead.
    with gr.Blocks(title="Brain-CT hemorrhage reader") as demo:
        options = options_panel(registry)
        one_slice = slice_tab(demo, reader)
        whole_scan = scan_tab(reader)
        wire_slice_tab(one_slice, options, reader)
        wire_scan_tab(whole_scan, options, reader)
        model_outputs = [options.banner, one_slice.subtypes, one_slice.heatmap_for]
        options.model_id.change(
            reader.model_info, inputs=options.model_id, outputs=model_outputs, api_visibility="private"
        )
        demo.load(reader.model_info, inputs=options.model_id, outputs=model_outputs, api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    limit_queue_per_client(demo, reader)
    demo.reader = reader  # type: ignore[attr-defined]  # main warms its model up; tests inspect the session cache
    return demo


def create_app(settings: AppSettings) -> gr.Blocks:
    """The app for ``settings``: its models (none loaded yet) and its page; ``.reader`` holds the events.

    Creates no folder and launches nothing; :func:`main` prepares the run folder first.
    """
    registry = make_registry(settings.model, settings.revision, settings.extra_models)
    return build_demo(registry, settings)


def launch(demo_app: gr.Blocks, args: argparse.Namespace, **kwargs: Any):
    return demo_app.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        mcp_server=args.mcp,
        **{**LAUNCH_OPTIONS, **kwargs},
    )


def main(argv: list[str] | None = None) -> None:
    """``python app.py``: prepare the run folder and hooks, load and warm up the model, serve until stopped."""
    args = parse_args(argv)
    setup_logging(args.verbose)
    settings = AppSettings.from_env(model=args.model, revision=args.revision)
    prepare_run_dir(settings)
    stop_on_signals()
    limit_malloc_arenas()  # before Gradio starts its worker threads
    app = create_app(settings)
    start_sweeper(settings, keep=cached_examples(app))
    try:
        exit_if_port_busy(args.host, args.port)
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
