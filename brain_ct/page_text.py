"""The app's text for people: verdicts, probabilities, scan rules and error messages as Markdown/HTML.

Web-framework free, so the wording is tested without a server: every function takes readings
(:class:`~brain_ct.predictor.Prediction`, :class:`~brain_ct.scan.SeriesPrediction`,
:class:`~brain_ct.image_set.ImageSetReading`) and returns text. User-supplied text (file names,
descriptions, messages naming them) goes through :func:`md_escape`.
"""

from __future__ import annotations

import html
import os
import re
import string
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import brain_ct.wording as wording
from brain_ct.image import CTImage
from brain_ct.image_set import ImageSetReading
from brain_ct.labels import ANY
from brain_ct.predictor import Prediction
from brain_ct.scan import SeriesPrediction
from brain_ct.wording import plural

#: The input kinds a threshold can be set for, in people's words (``CTImage.source``).
KIND_NAMES = {"dicom": "DICOM slices", "image": "PNG/JPG images"}

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


def reading_fields(pred: Prediction, kind: str) -> dict[str, Any]:
    """The ``/reading`` API's plain fields of one slice reading: verdict, P, threshold, input kind, regions."""
    return {
        "verdict": pred.label,
        "probability": round(float(pred.probability), 6),
        "threshold": round(float(pred.threshold), 6),
        "input_kind": kind,
        "head_check": pred.head_check,
        "unverified": bool(pred.unverified),
        "regions": [
            {"region": r.region, "side": r.side, "score": round(float(r.score), 4)} for r in pred.regions
        ],
        "subtypes": subtype_probabilities(pred),
    }


def probability_bar(probability: float, threshold: float, label: str, kind: str = "") -> str:
    """HTML of one reading's P(hemorrhage) as a bar from 0 to 100 %, with the threshold marked.

    The one number people read: the bar is P itself (not rescaled), the tick is the threshold of the
    slice's kind, and the headline is the verdict, which is P ≥ threshold.
    """
    p, t = 100 * float(probability), 100 * float(threshold)
    colour = "#c0392b" if label == "hemorrhage" else "#2e7d32"
    kind_text = f" for {html.escape(kind)}" if kind else ""
    return (
        f'<div class="pbar" role="img" aria-label="P(hemorrhage) {p:.1f}%, threshold {t:.1f}%">'
        f'<div class="pbar-head" style="color:{colour}">{html.escape(wording.verdict(label))}</div>'
        f'<div class="pbar-track"><div class="pbar-fill" style="width:{p:.1f}%;background:{colour}"></div>'
        f'<div class="pbar-mark" style="left:{t:.1f}%"></div></div>'
        f'<div class="pbar-text">P(hemorrhage) = <b>{p:.1f}%</b> · threshold{kind_text} = {t:.1f}% '
        f"(the mark)</div></div>"
    )


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


def verdict_label(pred: Prediction) -> dict[str, float]:
    """The ``/predict`` label's value: ``{class: probability}`` with the verdict first, the values being
    P(hemorrhage) itself and 1 − P. Shown by an ``app_gradio.verdict_labels`` component, whose ``label``
    is this first key ("hemorrhage" exactly when P(hemorrhage) >= the threshold).

    Gradio's ``gr.Label`` would name the larger value as the label, which is "normal" for a reading
    of P = 17% over a threshold of 11%: the verdict is set by the order instead.
    """
    p = float(pred.probability)
    if pred.label == "hemorrhage":
        return {"hemorrhage": p, "normal": 1.0 - p}
    return {"normal": 1.0 - p, "hemorrhage": p}


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


def _file_list(items: list[dict[str, str]], reason_key: str, limit: int = 20) -> list[str]:
    shown = [
        f"- {md_escape(str(i.get('file', '')))}: {md_escape(str(i.get(reason_key, '')))}"
        for i in items[:limit]
    ]
    if len(items) > limit:
        shown.append(f"- … and {len(items) - limit} more")
    return shown


def scan_rule_fields(result: SeriesPrediction) -> dict[str, Any]:
    """What decided a scan, as plain fields: the scan rule's statistic (the "scan score", see
    :class:`~brain_ct.scan.ScanRule`), its threshold, and the slices whose P set it (1-based)."""
    p = result.probabilities
    t, k, h = result.rule.resolve(result.threshold)
    k = min(k, p.size)
    runs = np.lib.stride_tricks.sliding_window_view(p, k).min(axis=1)
    start, top = int(np.argmax(runs)), int(np.argmax(p))
    p_single = float(np.interp(p[top], [0.0, h, 1.0], [0.0, t, 1.0])) if h < 1 else float(p[top]) * t
    by_run = float(runs[start]) >= p_single
    slices = list(range(start, start + k)) if by_run else [top]
    return {
        "statistic": "scan score",
        "value": round(float(result.probability), 6),
        "threshold": round(t, 6),
        "decided_by": f"the least of {k} neighbouring slices" if by_run and k > 1 else "the top slice",
        "slices": [i + 1 for i in slices],
        "slice_probabilities": [round(float(p[i]), 6) for i in slices],
        "single_slice_threshold": round(h, 6),
    }


def scan_rule_line(fields: dict[str, Any]) -> str:
    """The scan rule's statistic in words, with the P of the slices that decided it."""
    ps = ", ".join(
        f"slice {i}: {q:.1%}" for i, q in zip(fields["slices"], fields["slice_probabilities"], strict=True)
    )
    if fields["decided_by"] == "the top slice":
        how = (
            f"set by the top slice alone (a single slice at {fields['single_slice_threshold']:.1%} or more "
            "counts as the threshold)"
        )
    else:
        how = f"set by {fields['decided_by']} (a bleed spans neighbouring slices)"
    return f"Scan score = {fields['value']:.1%} against the threshold of {fields['threshold']:.1%}, {how}: P(hemorrhage) {ps}."


def series_md(result: SeriesPrediction, unverified: bool = False, n_series: int = 1) -> str:
    lines = []
    if unverified:
        lines.append(f"> ⚠️ **{wording.UNVERIFIED_NOTE}**")
    lines += [
        f"## {wording.verdict(result.label, scope=' in this scan')}",
        scan_rule_line(scan_rule_fields(result)),
        f"{plural(result.n_slices, 'slice')} read"
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


def image_set_md(reading: ImageSetReading, unverified: bool = False) -> str:
    """Several images read one by one: a count, each image's verdict and P, and why there is no scan
    verdict, PDF or heatmap volume."""
    lines = [f"> ⚠️ **{wording.UNVERIFIED_NOTE}**"] if unverified else []
    lines += [
        f"## {reading.summary()}",
        "Each PNG/JPG image was read on its own, numbered in the order uploaded: images carry no "
        "position, so they are not stacked into a scan and no scan verdict is given.",
    ]
    bullets = [
        f"- **image {i + 1}**: {wording.verdict(p.label)} — P(hemorrhage) = {p.probability:.1%} "
        f"(threshold {p.threshold:.1%})"
        for i, p in enumerate(reading.predictions)
        if p is not None
    ]
    lines.append("\n".join(bullets))
    if reading.errors:
        lines.append(f"**{plural(len(reading.errors), 'image')} could not be read:**")
        lines.append("\n".join(f"- image {e['image']}: {md_escape(e['message'])}" for e in reading.errors))
    lines.append(
        "*No PDF report or heatmap volume for a set of images*: read one image on the One-slice tab for "
        "its PDF report; PNG/JPG images carry no geometry to place a heatmap volume."
    )
    return "\n\n".join(lines)


def series_choices(infos: list[Any]) -> list[tuple[str, str]]:
    choices = []
    for info in infos:
        parts = [info.modality or "?", plural(info.n_slices, "slice"), info.orientation]
        if info.contrast:
            parts.append("contrast")
        what = " ".join(str(info.description or "").split())[:40] or "series"
        choices.append((f"{what} ({', '.join(parts)}) · {info.series_id[:10]}", info.series_id))
    return choices
