"""The app's readings, web-framework free: run one under the limits, keep it, and say what it shows.

:class:`Readings` is what the page's events do, minus the page: it reads an upload (one slice, a
whole scan, or several PNG/JPG images) as one reading of a session and a client address
(:class:`~brain_ct.serving.FairShare`) under the server's upload limits, keeps the reading in a
bounded cache as a typed entry (:class:`CachedSlice`, :class:`CachedScan`, :class:`CachedImageSet`)
under a key the page's state holds, and builds from it what the page and the API show: overlays in a
display window, the verdict's Markdown, the P bar, the ``/reading`` JSON, the scan browser and the
PDF and heatmap files. A failure becomes one :class:`ReadingFailed` with the message in the app's
words, kept per session for the page's error box. ``app.py`` maps these onto Gradio components.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from brain_ct import limits, wording
from brain_ct.collect import screen_name
from brain_ct.errors import BrainCTError, InvalidInputError, NotHeadCTError, TooLargeError
from brain_ct.image import CTImage
from brain_ct.image_set import ImageSetReading, is_image_set, read_image_set
from brain_ct.io import load_image
from brain_ct.labels import ANY
from brain_ct.nifti_grid import write_heatmap_nifti
from brain_ct.page_text import (
    KIND_NAMES,
    explanation_md,
    image_set_md,
    md_escape,
    meta_rows,
    probability_bar,
    reading_fields,
    scan_rule_fields,
    series_md,
    subtype_line,
    subtype_probabilities,
    user_message,
)
from brain_ct.predictor import Prediction, Predictor
from brain_ct.report import probability_plot_png, write_report
from brain_ct.scan import SeriesPrediction, predict_series
from brain_ct.series import list_series, read_series
from brain_ct.server import AppSettings, ModelRegistry, output_folder
from brain_ct.serving import (
    ClientBusyError,
    ErrorBox,
    FairShare,
    ResultCache,
    failure_message,
    forget_failure,
    release_memory,
    sweep_folder,
)
from brain_ct.sniff import HEAD_BYTES, NIFTI_SUFFIXES, sniff
from brain_ct.volume import Series, SeriesInfo
from brain_ct.windowing import PRESETS, display_window

log = logging.getLogger("brain_ct.app")

T = TypeVar("T")

#: The display window and heatmap opacity of a shown slice: (preset, center HU, width HU, opacity).
View = tuple[str, float | None, float | None, float]
DEFAULT_VIEW: View = ("brain", 40.0, 80.0, 0.4)


@dataclass
class CachedSlice:
    """One slice read on the one-slice tab: the image, its reading, and how it was read (for re-explaining)."""

    ct: CTImage
    pred: Prediction
    model: str | None
    tta: bool


@dataclass
class CachedScan:
    """One series of a whole-scan upload, read, with every series the upload holds."""

    result: SeriesPrediction
    unverified: bool
    infos: list[SeriesInfo]


@dataclass
class CachedImageSet:
    """Several PNG/JPG images of one upload, each read on its own."""

    images: ImageSetReading
    unverified: bool


Cached = CachedSlice | CachedScan | CachedImageSet


class ReadingExpired(InvalidInputError):
    """A reading the page showed is no longer in the cache."""

    def __init__(self) -> None:
        super().__init__(wording.EXPIRED)


class ReadingFailed(Exception):
    """A reading failed: ``message`` in the app's words (file names without server folders) and the
    ``heading`` it is shown under ("Busy:", "Refused:", "Could not read this upload:")."""

    def __init__(self, message: str, heading: str) -> None:
        super().__init__(f"{heading} {message}".strip())
        self.message, self.heading = message, heading


@dataclass(frozen=True)
class ScanBrowser:
    """The scan browser of a reading: the slider's settings, and the P plot (RGB) or, for an image
    set, the label saying why there is none (``plot_label``; None: the plot keeps its label)."""

    slider: dict[str, int | bool | str]
    plot: np.ndarray | None
    plot_label: str | None = None


HIDDEN_SLIDER: dict[str, int | bool] = {"minimum": 1, "maximum": 2, "value": 1, "visible": False}


def upload_paths(files: object) -> list[str]:
    """The paths of an upload: one file or a list, each a path or a file object with ``.name``."""
    if files is None:
        return []
    items = files if isinstance(files, (list, tuple)) else [files]
    return [str(getattr(f, "name", f)) for f in items if f is not None]


def error_heading(exc: BaseException) -> str:
    """The first words of an error on the page: content refusals are not unreadable files."""
    if isinstance(exc, ClientBusyError):
        return wording.HEADING_BUSY
    if isinstance(exc, (NotHeadCTError, TooLargeError)):
        return wording.HEADING_REFUSED
    return wording.HEADING_UNREADABLE


def upload_name(path: str) -> str:
    """An uploaded file's name as the page, the API and the PDF may show it: through the one name screen
    (:func:`brain_ct.collect.screen_name`), since a name such as ``john_smith_ct.dcm`` names a person."""
    name = Path(path).name
    return name if screen_name(name) else "uploaded slice"


def refuse_scan_on_slice_tab(path: str) -> None:
    """A zip or NIfTI volume holds a scan: point to the tab that reads it, before decoding anything."""
    name = Path(path).name.lower()
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    if sniff(head) in ("zip", "nifti") or name.endswith(NIFTI_SUFFIXES):
        raise InvalidInputError(
            f"{Path(path).name}: this upload holds a whole scan (a zip archive or NIfTI volume), and the "
            'One-slice tab reads one image. Use the "Whole scan" tab for it.'
        )


def window(preset: str, center: float | None, width: float | None) -> tuple[float | None, float | None]:
    """(center, width) in HU of a display preset; ``"custom"``: the given ones; unknown: the image's own."""
    if preset == "custom":
        return center, width
    return PRESETS.get(preset, (None, None))


def render(ct: CTImage, pred: Prediction, view: View) -> tuple[np.ndarray, np.ndarray]:
    """(overlay RGB, plain grey) uint8 of one slice in the chosen display window (8-bit images: as they
    are). A window the image cannot take raises :class:`~brain_ct.errors.BrainCTError`."""
    preset, center, width, opacity = view
    plain = display_window(ct, *window(preset, center, width))
    return pred.overlay(opacity, display=plain), plain


def window_note(ct: CTImage | None) -> str | None:
    """Why the window presets cannot change ``ct`` (an 8-bit image), or None when they can."""
    if ct is None or ct.hu is not None:
        return None
    return wording.NO_WINDOW_NOTE


def _numbered(number: float | None, n: int) -> int:
    """The 0-based index of 1-based ``number`` (None: the first), clipped to ``n`` items."""
    return int(min(max(int(number or 1) - 1, 0), n - 1))


class Readings:
    """The readings of every session of one server: read, cache, and show them.

    Readings are kept in :attr:`results` (bounded, time-limited); a page's state holds only their
    key. Errors are also kept per session in :attr:`errors` so the page can show the last one until
    the next upload. Outputs go to ``settings.run_dir`` and uploads are capped by its limits
    (default :class:`~brain_ct.server.AppSettings`).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        results: ResultCache[Cached] | None = None,
        settings: AppSettings | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings or AppSettings()
        self.results: ResultCache[Cached] = results or ResultCache()
        self.errors = ErrorBox()
        self.in_flight = FairShare()

    # ----------------------------------------------------------------------- running a reading

    def run(
        self,
        work: Callable[[], T],
        session: str | None,
        address: str | None,
        paths: list[str] | None = None,
    ) -> T:
        """``work()`` as one reading of ``session`` from ``address``, under the server's limits. Any
        failure raises one :class:`ReadingFailed` (also kept for the session's error box), after the
        failed reading's memory is given back."""
        try:
            with self.in_flight.hold(session, address), limits.using(self.settings.limits):
                return work()
        except BrainCTError as exc:
            failure = (failure_message(exc), error_heading(exc))
            forget_failure(exc)
        except Exception as exc:  # a library bug: the user still gets a message, the log the type
            log.error("reading failed unexpectedly: %s", type(exc).__name__)
            failure = (failure_message(exc), "Could not read this upload.")
            forget_failure(exc)
        # Raised outside the except block, so the error carries no context holding the reading's frames.
        raise self.failed(failure[0], session, paths, heading=failure[1])

    def failed(
        self, text: str, session: str | None, paths: list[str] | None = None, heading: str = ""
    ) -> ReadingFailed:
        """The failure of a reading in the app's words, kept as the session's last error."""
        message = user_message(text, paths, self.settings.run_dir)
        self.errors.set(session, f"**{heading}** {md_escape(message)}" if heading else md_escape(message))
        return ReadingFailed(message, heading)

    def entry(self, key: object) -> Cached | None:
        """The cached reading under ``key`` (a page's state), or None when there is none (any more)."""
        return self.results.get(key)

    def _slice(self, key: object) -> CachedSlice | None:
        entry = self.entry(key)
        return entry if isinstance(entry, CachedSlice) else None

    # ----------------------------------------------------------------------- one slice

    def read_slice_file(
        self,
        path: str,
        model_id: str | None,
        allow_unverified: bool,
        tta: bool,
        view: View,
        session: str | None = None,
        address: str | None = None,
    ) -> tuple[str, CachedSlice, np.ndarray]:
        """Read the slice at ``path``: (cache key, the reading, its overlay in ``view``)."""
        start = time.perf_counter()

        def work() -> tuple[CTImage, Prediction]:
            refuse_scan_on_slice_tab(path)
            predictor = self.registry.get(model_id)
            # Messages to the uploader name the file as uploaded; what the reading shows (page, API,
            # PDF) carries the screened name.
            ct = load_image(path, allow_unverified=allow_unverified, name=Path(path).name)
            ct.name = upload_name(path)
            return ct, predictor.predict(ct, tta=tta)

        ct, pred = self.run(work, session, address, [path])
        overlay, _ = render(ct, pred, view)
        entry = CachedSlice(ct, pred, model_id, tta)
        key = self.results.put(entry)
        # Never the file name in a log line: names of uploads may carry patient names.
        log.info(
            "slice read: %s, P=%.3f, threshold %.3f, head check %s, %.2f s",
            pred.label,
            pred.probability,
            pred.threshold,
            pred.head_check,
            time.perf_counter() - start,
        )
        return key, entry, overlay

    def slice_details(
        self,
        state: object,
        preset: str = "brain",
        center: float | None = 40.0,
        width: float | None = 80.0,
        opacity: float = 0.4,
    ) -> tuple[np.ndarray | None, list[list[str]], str | None]:
        """Plain image, metadata table and the PDF report of the slice in ``state``."""
        entry = self._slice(state)
        if not entry:
            return None, [], None
        _, plain = render(entry.ct, entry.pred, (preset, center, width, opacity))
        report = self.report_file(entry.pred, self.registry.get(entry.model), entry.pred.unverified)
        return plain, meta_rows(entry.ct), report

    def reading_bar(self, state: object) -> str:
        """The page's one number for the slice reading in ``state``: P(hemorrhage) on a bar with the
        threshold of its input kind marked (:func:`probability_bar`); "" when there is none."""
        entry = self._slice(state)
        if not entry:
            return ""
        pred = entry.pred
        return probability_bar(pred.probability, pred.threshold, pred.label, KIND_NAMES.get(pred.source, ""))

    def reading_json(self, state: object) -> dict[str, Any] | None:
        """The slice reading in ``state`` as plain fields (the ``/reading`` API, after ``/predict``):
        ``verdict`` ("hemorrhage" exactly when ``probability >= threshold``), ``probability`` (P(hemorrhage)),
        ``threshold`` (the model's, for this input kind), ``input_kind`` ("dicom" or "image"),
        ``head_check``, ``unverified``, ``regions`` (region, patient's side, score) and ``subtypes``
        (subtype models; else None). None when the reading has expired."""
        entry = self._slice(state)
        return reading_fields(entry.pred, entry.pred.source) if entry else None

    def subtype_panel(self, state: object) -> dict[str, float] | None:
        """The five subtype probabilities of the slice reading in ``state`` (the ``/subtypes`` API);
        None for a binary model's reading. A plain value, so API clients get the label itself: the
        panel's visibility follows the model choice (:meth:`model_info`)."""
        entry = self._slice(state)
        return subtype_probabilities(entry.pred if entry else None)

    def explain_again(
        self,
        state: object,
        target: str = ANY,
        view: View = DEFAULT_VIEW,
        session: str | None = None,
        address: str | None = None,
    ) -> tuple[np.ndarray | None, str, str | None]:
        """Explain the slice in ``state`` again for ``target`` (``"any"`` or a subtype): (overlay,
        explanation, PDF report), without reading the file again; the new heatmap is kept with the
        reading. An expired reading raises :class:`ReadingExpired`."""
        entry = self._slice(state)
        if not entry:
            if state:
                raise ReadingExpired
            return None, "", None

        def work() -> tuple[Predictor, Prediction]:
            predictor = self.registry.get(entry.model)
            return predictor, predictor.predict(entry.ct, tta=entry.tta, heatmap_target=target)

        predictor, pred = self.run(work, session, address)
        # The window controls and the report redraw from the cached reading: keep the new heatmap there.
        entry.pred = pred
        overlay, _ = render(entry.ct, pred, view)
        return overlay, explanation_md(pred), self.report_file(pred, predictor, pred.unverified)

    def rerender_slice(
        self, state: object, preset: str, center: float | None, width: float | None, opacity: float
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(overlay, plain) of the slice in ``state`` in a new display window; an expired reading the
        page showed raises :class:`ReadingExpired`."""
        entry = self._slice(state)
        if not entry:
            if state:  # a reading this page showed has expired from the cache: say so
                raise ReadingExpired
            return None, None
        return render(entry.ct, entry.pred, (preset, center, width, opacity))

    def slice_image(self, state: object) -> CTImage | None:
        """The slice image of the reading in ``state`` (None: none, or expired)."""
        entry = self._slice(state)
        return entry.ct if entry else None

    # ----------------------------------------------------------------------- whole scan

    def read_scan_files(
        self,
        paths: list[str],
        model_id: str | None,
        allow_unverified: bool,
        tta: bool,
        series_id: str | None = None,
        session: str | None = None,
        address: str | None = None,
    ) -> tuple[str, dict[str, Any], str | None, str | None, str]:
        """Read a whole-scan upload: (verdict Markdown, JSON, PDF report, heatmap volume, cache key).
        Several PNG/JPG files are read one by one instead (no PDF or volume: None)."""
        if is_image_set(paths):
            return self._read_image_set(paths, model_id, allow_unverified, tta, session, address)
        source = paths[0] if len(paths) == 1 else paths
        start = time.perf_counter()

        def work() -> tuple[Predictor, list[SeriesInfo], Series, SeriesPrediction]:
            predictor = self.registry.get(model_id)
            # the budget (self.settings.limits, in force in run) refuses an oversized scan from its
            # headers, before any slice is decoded
            infos = list_series(source)
            ids = [i.series_id for i in infos]
            chosen = series_id if series_id in ids else None
            series = read_series(source, series_uid=chosen, allow_unverified=allow_unverified)
            result = predict_series(predictor, series, tta=tta, source=f"{len(paths)} uploaded file(s)")
            return predictor, infos, series, result

        predictor, infos, series, result = self.run(work, session, address, paths)
        unverified = result.unverified
        summary = result.to_dict()  # head_check and skipped come with it (and subtypes, members)
        summary["file"] = "upload"
        summary["series"] = [i.to_dict() | {"chosen": i.series_id == series.series_id} for i in infos]
        summary["numbering"] = "index is 0-based; people see slice number index + 1 (1 = most inferior)"
        summary["scan_rule"] = scan_rule_fields(result)
        key = self.results.put(CachedScan(result, unverified, infos))
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
        heatmap, why_not = self.heatmap_file(result)
        summary["heatmap_volume"] = "written" if heatmap else f"not written: {why_not}"
        text = series_md(result, unverified, n_series=len(infos))
        if why_not:
            text += f"\n\n**Heatmap volume not written:** {md_escape(user_message(why_not, paths))}"
        release_memory()
        return text, summary, self.report_file(result, predictor, unverified), heatmap, key

    def _read_image_set(
        self,
        paths: list[str],
        model_id: str | None,
        allow_unverified: bool,
        tta: bool,
        session: str | None,
        address: str | None,
    ) -> tuple[str, dict[str, Any], None, None, str]:
        """Several PNG/JPG files: each read on its own (:mod:`brain_ct.image_set`), no scan verdict."""

        def work() -> ImageSetReading:
            predictor = self.registry.get(model_id)
            return read_image_set(predictor, paths, allow_unverified=allow_unverified, tta=tta)

        reading = self.run(work, session, address, paths)
        key = self.results.put(CachedImageSet(reading, allow_unverified))
        log.info("image set read: %s", reading.summary())
        release_memory()
        return image_set_md(reading, allow_unverified), reading.to_dict(), None, None, key

    def show_series_slice(
        self,
        state: object,
        number: float | None,
        preset: str = "brain",
        center: float | None = 40.0,
        width: float | None = 80.0,
        opacity: float = 0.4,
    ) -> tuple[np.ndarray | None, str]:
        """(overlay, explanation markdown) of slice ``number`` (1 = most inferior) of the scan in ``state``."""
        entry = self.entry(state)
        view = (preset, center, width, opacity)
        if isinstance(entry, CachedImageSet):
            return self._show_set_image(entry, number, view)
        if not isinstance(entry, CachedScan):
            return None, (f"*{wording.EXPIRED}*" if state else "")
        result = entry.result
        i = _numbered(number, result.n_slices)
        pred = result.predictions[i]
        overlay, _ = render(result.series.slices[i], pred, view)
        position = result.series.positions[i] if i < len(result.series.positions) else None
        where = f" at {position:.1f} mm" if position is not None else ""
        head = f"**Slice {i + 1} of {result.n_slices}**{where}"
        if pred.subtypes is not None:
            head += f" — {subtype_line(pred)}"
        return overlay, head + "\n\n" + explanation_md(pred, entry.unverified)

    def _show_set_image(
        self, entry: CachedImageSet, number: float | None, view: View
    ) -> tuple[np.ndarray | None, str]:
        """(overlay, explanation) of image ``number`` (1-based, upload order) of an image set."""
        reading = entry.images
        i = _numbered(number, len(reading.predictions))
        pred = reading.predictions[i]
        if pred is None:
            return None, f"**Image {i + 1} of {len(reading.predictions)}** could not be read (see above)."
        overlay, _ = render(reading.images[i], pred, view)
        head = f"**Image {i + 1} of {len(reading.predictions)}** (upload order)"
        return overlay, head + "\n\n" + explanation_md(pred, entry.unverified)

    def scan_browser(self, state: object) -> ScanBrowser | None:
        """The slider (1-based, hidden for a one-slice scan) at the most suspicious slice and the P plot
        (an image set: the slider over its images, no plot: they have no order to plot along); None
        when there is no reading."""
        entry = self.entry(state)
        if isinstance(entry, CachedImageSet):
            reading = entry.images
            first = (reading.suspicious or [0])[0] + 1
            n = len(reading.predictions)
            slider = {"minimum": 1, "maximum": n, "value": first, "step": 1, "visible": True}
            return ScanBrowser(slider | {"label": wording.IMAGE_SLIDER_LABEL}, None, wording.NO_PLOT_LABEL)
        if not isinstance(entry, CachedScan):
            return None
        result = entry.result
        png = probability_plot_png(
            result.probabilities,
            result.threshold,
            positive=result.positive_slices,
            highlight=result.most_suspicious,
        )
        plot = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        n = result.n_slices
        # A slider needs minimum < maximum: a one-slice scan has nothing to browse, so it is hidden.
        slider = {
            "minimum": 1,
            "maximum": max(n, 2),
            "value": result.most_suspicious + 1,
            "step": 1,
            "visible": n > 1,
            "label": wording.SLIDER_LABEL,
        }
        return ScanBrowser(slider, plot)

    def scan_image(self, state: object) -> CTImage | None:
        """A slice of the scan (or the first readable image of the set) in ``state``: what the window
        presets would change."""
        entry = self.entry(state)
        if isinstance(entry, CachedImageSet):
            return next(ct for ct in entry.images.images if ct is not None)
        return entry.result.series.slices[0] if isinstance(entry, CachedScan) else None

    def series_options(self, state: object) -> tuple[list[SeriesInfo], str] | None:
        """(every series of the upload, the id of the one read) when the scan in ``state`` holds
        several series; None otherwise."""
        entry = self.entry(state)
        infos = entry.infos if isinstance(entry, CachedScan) else []
        if len(infos) < 2:
            return None
        return infos, entry.result.series.series_id

    # ----------------------------------------------------------------------- files

    def report_file(
        self, result: SeriesPrediction | Prediction, predictor: Predictor, unverified: bool
    ) -> str:
        """The PDF report of ``result`` in a fresh output folder (old outputs are swept first)."""
        sweep_folder(self.settings.output_dir, self.settings.file_max_age_s)
        out = output_folder(self.settings) / "brain_ct_report.pdf"
        return str(write_report(result, out, model_settings=predictor.settings, unverified=unverified))

    def heatmap_file(self, result: SeriesPrediction) -> tuple[str | None, str]:
        """(path, "") of the scan's Grad-CAM heatmaps as one NIfTI volume on its grid, in its own output
        folder; (None, the library's reason) when it cannot be written (no geometry, uneven spacing, …)."""
        out = output_folder(self.settings) / "brain_ct_heatmap.nii.gz"
        try:
            return str(write_heatmap_nifti([p.heatmap for p in result.predictions], result.series, out)), ""
        except BrainCTError as exc:
            # The type only in the log: messages may name slices, and names of uploads are user data.
            log.info("no heatmap volume for this scan (%s)", type(exc).__name__)
            shutil.rmtree(out.parent, ignore_errors=True)
            return None, failure_message(exc)
