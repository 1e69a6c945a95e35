"""PDF report of a reading: scan verdict, model, key slices with Grad-CAM overlays, per-slice plot.

:func:`write_report` takes a :class:`~brain_ct.scan.SeriesPrediction` (a whole scan) or a single
:class:`~brain_ct.predictor.Prediction` (a series of one) and writes an A4 PDF with fpdf2:

* the scan-level verdict, probability and threshold, and the scan rule that produced them; for an
  ensemble, how many of its models read the scan (or slice) as hemorrhage by their own threshold;
* subtype models only, a "Subtypes" section: the five subtype probabilities of a slice, or the scan's
  subtype summary (:class:`~brain_ct.scan.SubtypeScan`: scan probability and the slices each subtype
  leads), with what those outputs are (:data:`~brain_ct.wording.SUBTYPE_NOTE`);
* the model's id, revision and what it was trained on ("trained on synthetic phantoms — for
  demonstration only" for the demo model), the report's date and time;
* a per-slice probability plot with the threshold line (series of more than one slice);
* the key slices, most suspicious first: the slice as shown (the brain window of DICOM or NIfTI
  input, a PNG or JPG as given: an 8-bit picture is never windowed again) beside its heatmap overlay,
  with the probability, the regions and the explanation text (the caption names the subtype when the
  heatmap explains one, ``heatmap_target``);
* the disclaimer in the footer of every page.

Privacy: nothing identifying is written by default — no DICOM tag values, no file or folder names
(they often carry patient names), slices are named by number (1 = most inferior) and position. Only when the caller
passes ``include_identifiers=True`` are (0010,0010) *Patient's Name*, (0010,0020) *Patient ID* and
(0008,0020) *Study Date* printed, taken from ``identifiers`` (or the series' explicitly read
identifiers, :func:`brain_ct.series.read_series` with ``read_identifiers=True``).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import brain_ct.explain as explain
from brain_ct.errors import InvalidInputError
from brain_ct.labels import SUBTYPES
from brain_ct.scan import SeriesPrediction
from brain_ct.wording import (
    DISCLAIMER,
    SUBTYPE_NOTE,
    UNVERIFIED_NOTE,
    display_caption,
    hemorrhage_name,
    plural,
    slice_ranges,
    verdict,
)

if TYPE_CHECKING:
    from brain_ct.model import ModelSettings
    from brain_ct.predictor import Prediction

#: The only identifiers a report may carry, and only with ``include_identifiers=True``.
IDENTIFIER_KEYS: tuple[str, ...] = ("PatientName", "PatientID", "StudyDate")

#: Longest side, pixels, of a slice image embedded in the PDF (keeps files small and fast to write).
_MAX_IMAGE_SIDE = 384

_FONT = "DejaVu"


@dataclass
class _SliceView:
    """What the report shows of one slice."""

    index: int
    prediction: Prediction
    position: float | None


def _font_paths() -> tuple[Path, Path] | None:
    """DejaVu Sans regular and bold bundled with matplotlib (Unicode: "≥", "—", "×")."""
    try:
        import matplotlib

        base = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    except Exception:  # matplotlib missing or broken: fall back to the PDF core font
        return None
    regular, bold = base / "DejaVuSans.ttf", base / "DejaVuSans-Bold.ttf"
    return (regular, bold) if regular.is_file() and bold.is_file() else None


def _pdf_class() -> type:
    from fpdf import FPDF

    class _ReportPDF(FPDF):
        font_name = "helvetica"

        def footer(self) -> None:  # fpdf2 calls this on every page
            self.set_y(-14)
            self.set_font(self.font_name, size=7.5)
            self.set_text_color(90, 90, 90)
            self.multi_cell(0, 3.6, _latin(self, f"{DISCLAIMER}  Page {self.page_no()}/{{nb}}"), align="C")
            self.set_text_color(0, 0, 0)

        def paragraph(
            self,
            line: str,
            size: float = 10,
            style: str = "",
            h: float = 5.2,
            color: tuple[int, int, int] = (0, 0, 0),
        ) -> None:
            """One left-aligned paragraph, ``size`` pt, line height ``h`` mm, then black again."""
            self.set_font(self.font_name, style=style, size=size)
            self.set_text_color(*color)
            self.multi_cell(0, h, _latin(self, line), align="L", new_x="LMARGIN", new_y="NEXT")
            self.set_text_color(0, 0, 0)

    return _ReportPDF


def _latin(pdf: Any, text: str) -> str:
    """Text as the current font can show it (core fonts are Latin-1 only)."""
    if pdf.font_name == _FONT:
        return text
    replaced = (
        text.replace("—", "-").replace("–", "-").replace("≥", ">=").replace("≤", "<=").replace("×", "x")
    )
    return replaced.encode("latin-1", "replace").decode("latin-1")


def _fit(image: np.ndarray) -> Any:
    """uint8 [H, W] or [H, W, 3] → PIL image no larger than :data:`_MAX_IMAGE_SIDE`."""
    import cv2
    from PIL import Image

    h, w = image.shape[:2]
    scale = _MAX_IMAGE_SIDE / max(h, w)
    if scale < 1:
        image = cv2.resize(
            image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    return Image.fromarray(np.ascontiguousarray(image))


def probability_plot_figure(
    probabilities: Sequence[float],
    threshold: float,
    *,
    positive: Sequence[int] = (),
    highlight: int | None = None,
    width_in: float = 7.0,
    height_in: float = 2.2,
    dpi: int = 120,
) -> Any:
    """The per-slice probability plot as a drawn matplotlib ``Figure`` (Agg canvas, no pyplot).

    Slices are numbered from 1 on the x axis, as people and viewers count them; ``positive`` and
    ``highlight`` are 0-based indices into ``probabilities``. See :func:`probability_plot_png`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    p = np.asarray(probabilities, dtype=np.float64)
    number = np.arange(p.size) + 1
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(number, p, color="#3b6ea8", lw=1.4, marker="o", ms=3, label="slice probability")
    pos = np.asarray([i for i in positive if 0 <= i < p.size], dtype=int)
    if pos.size:
        ax.scatter(pos + 1, p[pos], color="#c0392b", s=22, zorder=3, label="positive slice")
    if highlight is not None and 0 <= highlight < p.size:
        ax.scatter(
            [highlight + 1],
            [p[highlight]],
            s=120,
            facecolors="none",
            edgecolors="black",
            lw=1.2,
            zorder=4,
            clip_on=False,
        )
    ax.axhline(threshold, color="#c0392b", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    # Headroom above 1.0 so neither the top tick label nor a circled slice at P = 1 is cut off.
    ax.set_ylim(-0.04, 1.08)
    ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlim(0.5, max(p.size + 0.5, 1.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("slice number (1 = most inferior → superior)")
    ax.set_ylabel("P(hemorrhage)")
    ax.grid(alpha=0.3)
    # The legend sits above the axes, right-aligned: it cannot hide points near P = 1, nor sit under
    # the app's image caption, which covers the top-left corner.
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, ncol=3)
    fig.tight_layout(pad=0.6)
    fig.canvas.draw()
    return fig


def probability_plot_png(
    probabilities: Sequence[float],
    threshold: float,
    *,
    positive: Sequence[int] = (),
    highlight: int | None = None,
    width_in: float = 7.0,
    height_in: float = 2.2,
    dpi: int = 120,
) -> bytes:
    """Per-slice probability plot with the threshold line, as PNG bytes (matplotlib Agg, no pyplot).

    Args:
        probabilities: P(hemorrhage) per slice in anatomical order (inferior → superior).
        threshold: drawn as a dashed horizontal line.
        positive: 0-based indices drawn in red.
        highlight: 0-based index circled (the most suspicious slice), or None.
        width_in, height_in: figure size, inches.
        dpi: resolution.

    Returns:
        PNG file bytes; the x axis numbers slices from 1.
    """
    import io

    fig = probability_plot_figure(
        probabilities,
        threshold,
        positive=positive,
        highlight=highlight,
        width_in=width_in,
        height_in=height_in,
        dpi=dpi,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _views(result: SeriesPrediction | Prediction) -> tuple[list[_SliceView], dict[str, Any]]:
    """Per-slice views and the scan-level fields of a series or single prediction."""
    if isinstance(result, SeriesPrediction):
        views = [
            _SliceView(i, p, result.series.positions[i] if i < len(result.series.positions) else None)
            for i, p in enumerate(result.predictions)
        ]
        scan = {
            "label": result.label,
            "probability": float(result.probability),
            "threshold": float(result.threshold),
            "positive": list(result.positive_slices),
            "most_suspicious": int(result.most_suspicious),
            "rule": result.rule,
            "errors": len(result.series.errors),
            "skipped": len(result.series.skipped),
            "identifiers": dict(result.series.identifiers),
            # A series of one is reported as its slice (no scan rule is shown for it either).
            "subtypes": result.subtypes if len(views) > 1 else result.predictions[0].subtypes,
            "subtype_text": result.subtype_explanation if len(views) > 1 else "",
            "agreement": result.member_agreement,
        }
        return views, scan
    if not hasattr(result, "probability") or not hasattr(result, "heatmap"):
        raise InvalidInputError(
            f"write_report needs a SeriesPrediction or a Prediction; got {type(result).__name__}"
        )
    scan = {
        "label": result.label,
        "probability": float(result.probability),
        "threshold": float(result.threshold),
        "positive": [0] if result.label == "hemorrhage" else [],
        "most_suspicious": 0,
        "rule": None,
        "errors": 0,
        "identifiers": {},
        "subtypes": result.subtypes,
        "subtype_text": "",
        "agreement": None
        if result.members is None
        else (sum(m["probability"] >= m["threshold"] for m in result.members), len(result.members)),
    }
    return [_SliceView(0, result, None)], scan


def is_unverified(result: SeriesPrediction | Prediction) -> bool:
    """True when the head-CT check was skipped (``head_check == "skipped"``): for a prediction, its slice;
    for a scan, any of its slices (:func:`brain_ct.series.read_series` marks every slice "passed" once the
    series check passed, "skipped" when the caller skipped it)."""
    return result.head_check == "skipped"


def write_report(
    result: SeriesPrediction | Prediction,
    path: str | os.PathLike[str],
    *,
    model_settings: ModelSettings | None = None,
    include_identifiers: bool = False,
    identifiers: Mapping[str, str] | None = None,
    max_key_slices: int = 4,
    opacity: float = 0.4,
    created: _dt.datetime | None = None,
    unverified: bool | None = None,
) -> Path:
    """Write the PDF report of a reading.

    Args:
        result: a :class:`~brain_ct.scan.SeriesPrediction`, or a single
            :class:`~brain_ct.predictor.Prediction` (reported as a series of one slice).
        path: the PDF file to write (its folder must exist).
        model_settings: the predictor's settings (``predictor.settings``); it names the model, its
            revision, what it was trained on and its slice context, and its threshold sets the scan
            rule. None prints the model id stored in the prediction only.
        include_identifiers: print PatientName, PatientID and StudyDate (and nothing else
            identifying). Off by default: the report then carries no identifying data.
        identifiers: those values, read explicitly by the caller; default the series'
            ``identifiers`` (empty unless read with ``read_identifiers=True``). Ignored unless
            ``include_identifiers``; keys other than :data:`IDENTIFIER_KEYS` are never printed.
        max_key_slices: most slices shown with images, most suspicious first.
        opacity: heatmap overlay opacity at full heat, in [0, 1].
        created: the report's date and time; default now (local time, with its UTC offset).
        unverified: the head-CT check was skipped (``allow_unverified``): a warning is printed
            under the verdict. Default: :func:`is_unverified` of ``result`` (its ``head_check``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InvalidInputError: ``result`` is neither kind, or ``path`` cannot be written.
    """
    views, scan = _views(result)
    if not views:
        raise InvalidInputError("the reading has no slices; nothing to report")
    out = Path(path)
    created = created or _dt.datetime.now().astimezone()
    pdf = _new_pdf(created)
    _title(pdf, created)
    _verdict_section(pdf, scan, len(views), is_unverified(result) if unverified is None else unverified)
    if len(views) > 1:
        _scan_section(pdf, scan, len(views))
    if scan["subtypes"]:
        _subtype_section(pdf, scan, len(views))
    pdf.ln(1.5)
    _model_section(pdf, model_settings, views[0].prediction.model_id)
    if include_identifiers:
        _identifier_section(pdf, identifiers if identifiers is not None else scan["identifiers"])
    if len(views) > 1:
        _plot_section(pdf, views, scan)
    _key_slices_section(pdf, views, max_key_slices, opacity)
    try:
        pdf.output(str(out))
    except OSError as exc:
        raise InvalidInputError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    return out


_GREY = (80, 80, 80)


def _new_pdf(created: _dt.datetime) -> Any:
    """An A4 report PDF with its metadata, Unicode font (when available) and first page."""
    pdf = _pdf_class()(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.set_margins(14, 14, 14)
    pdf.set_creator("brain_ct")
    pdf.set_title("Head-CT hemorrhage reading (research aid)")
    pdf.set_creation_date(created)
    fonts = _font_paths()
    if fonts is not None:
        pdf.add_font(_FONT, "", str(fonts[0]))
        pdf.add_font(_FONT, "B", str(fonts[1]))
        pdf.font_name = _FONT
    pdf.add_page()
    return pdf


def _title(pdf: Any, created: _dt.datetime) -> None:
    pdf.paragraph("Head-CT hemorrhage reading — research report", size=15, style="B", h=8)
    pdf.paragraph(f"Report created {created.strftime('%Y-%m-%d %H:%M %Z').strip()}", size=9, color=_GREY)
    pdf.ln(2)


def _verdict_section(pdf: Any, scan: dict[str, Any], n: int, unverified: bool) -> None:
    """The verdict in colour, the caveat when the head-CT check was skipped, P and the threshold."""
    label = scan["label"]
    colour = (170, 30, 30) if label == "hemorrhage" else (25, 110, 50)
    pdf.paragraph(
        f"Verdict: {verdict(label, hedged=True, capitalised=False)} (label: {label})",
        size=13,
        style="B",
        h=7,
        color=colour,
    )
    if unverified:
        pdf.paragraph(f"Caution — {UNVERIFIED_NOTE}", size=10.5, style="B", color=(170, 90, 0))
    scope = "scan" if n > 1 else "slice"
    pdf.paragraph(
        f"Probability of hemorrhage ({scope} level): {scan['probability']:.1%} — threshold {scan['threshold']:.1%}."
    )
    if scan.get("agreement"):
        above, total = scan["agreement"]
        pdf.paragraph(f"Ensemble: {above} of {total} models above their own threshold ({scope} level).")


def _scan_section(pdf: Any, scan: dict[str, Any], n: int) -> None:
    """A scan's positive slices, the scan rule, and the files left out."""
    positive = scan["positive"]
    # People count slices from 1 (as viewers do); only JSON keeps the 0-based index.
    listed = ", ".join(str(i + 1) for i in positive[:30]) + (" …" if len(positive) > 30 else "")
    pdf.paragraph(
        f"Slices read: {n}. Positive slices (probability ≥ threshold): {len(positive)}"
        + (f" — slice {listed}." if len(positive) == 1 else f" — slices {listed}." if positive else ".")
        + f" Most suspicious slice: {scan['most_suspicious'] + 1}."
    )
    rule = scan["rule"]
    if rule is not None:
        # the scan's own threshold (its slices' input kind's) resolves to the same (T, k, H) as the model's
        pdf.paragraph(
            f"{rule.describe(float(scan['threshold']), n)} Slice 1 is the most inferior slice.",
            size=8.5,
            color=_GREY,
        )
    errors = scan["errors"]
    if errors:
        pdf.paragraph(
            f"{plural(errors, 'file')} could not be read and {'was' if errors == 1 else 'were'} left out.",
            size=8.5,
            color=_GREY,
        )
    skipped = scan.get("skipped", 0)
    if skipped:
        pdf.paragraph(
            f"{plural(skipped, 'readable file')} not part of this series "
            f"{'was' if skipped == 1 else 'were'} left out (another series, or not an image).",
            size=8.5,
            color=_GREY,
        )


def _subtype_section(pdf: Any, scan: dict[str, Any], n: int) -> None:
    """Subtype models: a slice's five subtype probabilities, or each subtype over the scan, as a small table."""
    subtypes = scan["subtypes"]
    pdf.ln(1.5)
    pdf.paragraph("Subtypes", size=12, style="B", h=7)
    if n > 1:
        rows = [("Subtype", "Scan probability", "Slices where it leads")]
        rows += [
            (name, f"{subtypes[name].probability:.1%}", slice_ranges(subtypes[name].slices) or "none")
            for name in SUBTYPES
            if name in subtypes
        ]
        widths: tuple[float, ...] = (45, 35, 60)
    else:
        rows = [("Subtype", "Probability")]
        rows += [(name, f"{subtypes[name]:.1%}") for name in SUBTYPES if name in subtypes]
        widths = (45, 35)
    pdf.set_font(pdf.font_name, size=9)
    with pdf.table(
        width=sum(widths), col_widths=widths, align="LEFT", text_align="LEFT", line_height=5, padding=0.8
    ) as table:
        for row in rows:
            cells = table.row()
            for text in row:
                cells.cell(_latin(pdf, text))
    pdf.ln(1)
    if scan.get("subtype_text"):
        pdf.paragraph(scan["subtype_text"], size=9.5)
    note = SUBTYPE_NOTE
    if n > 1:
        note += " Scan probabilities follow the scan rule above; slices are numbered from 1 (most inferior)."
    pdf.paragraph(note, size=8.5, color=_GREY)


def _model_section(pdf: Any, model_settings: ModelSettings | None, prediction_model_id: str | None) -> None:
    """Which model read the scan, its revision, its training data, the demo note and its slice context."""
    settings = model_settings
    model_id = (settings.model_id if settings else None) or prediction_model_id or "unknown"
    revision = (settings.revision if settings else None) or "not pinned"
    trained_on = (settings.trained_on if settings else None) or "not stated by the model"
    pdf.paragraph(f"Model: {model_id} — revision: {revision}", size=9.5, style="B")
    pdf.paragraph(f"Trained on: {trained_on}.", size=9)
    if settings is not None and settings.is_demo:
        pdf.paragraph(f"This model was {settings.demo_note}.", size=10, style="B", color=(170, 90, 0))
    context = int(settings.context_slices or 0) if settings is not None else 0
    if context:
        pdf.paragraph(f"Slice context: {context} neighbouring slice(s) on each side.", size=9)


def _identifier_section(pdf: Any, identifiers: Mapping[str, str]) -> None:
    """Only :data:`IDENTIFIER_KEYS`, and only those with a value."""
    ids = dict(identifiers)
    shown = [f"{k}: {ids[k]}" for k in IDENTIFIER_KEYS if ids.get(k)]
    if shown:
        pdf.ln(1)
        pdf.paragraph("Identifiers (included at the user's request): " + "; ".join(shown), size=9)


def _plot_section(pdf: Any, views: list[_SliceView], scan: dict[str, Any]) -> None:
    import io

    pdf.ln(2)
    png = probability_plot_png(
        [v.prediction.probability for v in views],
        scan["threshold"],
        positive=scan["positive"],
        highlight=scan["most_suspicious"],
    )
    pdf.image(io.BytesIO(png), w=pdf.epw)


def _key_slices_section(pdf: Any, views: list[_SliceView], max_key_slices: int, opacity: float) -> None:
    """The most suspicious slices, each with its images, regions and explanation."""
    n = len(views)
    order = sorted(views, key=lambda v: -v.prediction.probability)[: max(1, max_key_slices)]
    pdf.ln(2)
    pdf.paragraph("Key slices, most suspicious first" if n > 1 else "The slice", size=12, style="B", h=7)
    # Two images side by side, small enough for two or three slices per page.
    img_w = min((pdf.epw - 4) / 2, 62.0)
    for view in order:
        _key_slice(pdf, view, n, img_w, opacity)


def _key_slice(pdf: Any, view: _SliceView, n: int, img_w: float, opacity: float) -> None:
    pred = view.prediction
    display = pred.display
    rows, cols = display.shape[:2] if display is not None else pred.heatmap.shape[:2]
    img_h = img_w * rows / cols
    # Keep a slice's images and its caption together on one page.
    if pdf.get_y() + img_h + 30 > pdf.h - pdf.b_margin:
        pdf.add_page()
    where = f" at {view.position:.1f} mm" if view.position is not None else ""
    head = f"Slice {view.index + 1}{where}" if n > 1 else "Slice"
    pdf.paragraph(
        f"{head}: {pred.label}, probability {pred.probability:.1%}",
        size=10.5,
        style="B",
        color=(170, 30, 30) if pred.label == "hemorrhage" else (0, 0, 0),
    )
    y = pdf.get_y() + 1
    if display is not None:
        pdf.image(_fit(display), x=pdf.l_margin, y=y, w=img_w, h=img_h)
        pdf.image(_fit(pred.overlay(opacity)), x=pdf.l_margin + img_w + 4, y=y, w=img_w, h=img_h)
    else:
        heat = (np.clip(pred.heatmap, 0, 1) * 255).astype(np.uint8)
        pdf.image(_fit(explain.overlay(heat, pred.heatmap, opacity)), x=pdf.l_margin, y=y, w=img_w, h=img_h)
    pdf.set_y(y + img_h + 1.5)
    pdf.paragraph(_caption(pred.heatmap_target, pred.source, display is not None), size=8, color=(90, 90, 90))
    if pred.regions:
        described = "; ".join(f"{explain.describe_region(r)} (score {r.score:.2f})" for r in pred.regions[:4])
        pdf.paragraph(f"Regions: {described}.", size=9)
    pdf.paragraph(pred.explanation, size=9)
    pdf.ln(3)


def _caption(heatmap_target: str, source: str, with_image: bool = True) -> str:
    """The images' caption: what the left image is (a brain window of HU input, a PNG or JPG as given,
    :func:`~brain_ct.wording.display_caption`) and what the heatmap explains (a subtype's output
    when one was chosen, ``--heatmap-target``). Without an input image the heatmap is shown alone."""
    if heatmap_target in SUBTYPES:
        target = f" for the {heatmap_target} output"
        what = f"where the model looked for {hemorrhage_name(heatmap_target)}"
    else:
        target, what = "", "where the model looked"
    if not with_image:
        return f"Grad-CAM heatmap{target} ({what}), shown alone: the input image was not kept."
    return f"Left: {display_caption(source)}. Right: Grad-CAM heatmap overlay{target} ({what})."
