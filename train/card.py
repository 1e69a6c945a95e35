"""The model card (``README.md``) written next to a trained model.

It carries Hub metadata (``model-index`` with the test metrics, base model, tags), what the model was
trained on, how inputs are preprocessed, the decision threshold and how it was chosen, the metrics per
input kind, intended use, limitations and the medical disclaimer (:data:`brain_ct.DISCLAIMER`). A model
trained on synthetic data says so in its first lines: it is for demonstration only and must not be used on
patients; a smoke run (``--max_steps`` under 100, a ``tiny`` network) says its numbers mean nothing. Paths are
recorded relative to the working directory, never as absolute local paths. A subtype model's card adds a "Subtypes" section (:func:`subtypes_text`): per-label metrics, RSNA
2019's weighted log loss and the leaderboard it is scored on.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brain_ct.wording import DEMO_NOTE, DISCLAIMER

if TYPE_CHECKING:
    from brain_ct.model import ModelSettings

#: RSNA Intracranial Hemorrhage Detection (2019): the winning team's private-leaderboard weighted log loss.
RSNA_FIRST_PLACE_LOG_LOSS = 0.04383

SYNTHETIC_WARNING = (
    f"**{DEMO_NOTE[:1].upper()}{DEMO_NOTE[1:]}, must not be used on patients.** "
    "Its numbers are measured on synthetic test slices and say nothing about real scans."
)

#: A run with fewer optimiser steps than this (``--max_steps``) only checks that training works.
SMOKE_MAX_STEPS = 100

SMOKE_WARNING = (
    "**Smoke run: its numbers mean nothing.** It was trained for a few steps or as a tiny network only "
    "to check that training works; an ROC AUC near 0.5 is chance, and any better number here is luck."
)

_METRICS = (
    ("auc", "roc_auc", "ROC AUC"),
    ("accuracy", "accuracy", "Accuracy"),
    ("sensitivity", "recall", "Sensitivity"),
    ("specificity", "specificity", "Specificity"),
    ("f1", "f1", "F1"),
)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _present_splits(by_split: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(split, entry)`` for validation then test, where the entry is present and not empty."""
    return [(split, by_split[split]) for split in ("validation", "test") if by_split.get(split)]


def metrics_table(results: dict[str, Any]) -> str:
    """A Markdown table: one row per split and input kind, columns n, AUC, accuracy, sensitivity, …"""
    rows = [
        "| data | n | ROC AUC | accuracy | sensitivity | specificity | F1 | confusion [[TN, FP], [FN, TP]] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, m in _present_splits(results):
        entries = [(split, m)] + [(f"{split} — {k} input", v) for k, v in m.get("by_input_kind", {}).items()]
        entries += [(f"{split} — {k} anatomy", v) for k, v in m.get("by_domain", {}).items()]
        for name, e in entries:
            rows.append(
                f"| {name} | {e['n']} | {_fmt(e['auc'])} | {_fmt(e['accuracy'])} | {_fmt(e['sensitivity'])} | "
                f"{_fmt(e['specificity'])} | {_fmt(e['f1'])} | {e['confusion_matrix']} |"
            )
    return "\n".join(rows)


def threshold_text(threshold: float, rule: Mapping[str, Any] | str) -> str:
    """The card's "Decision threshold" paragraph."""
    description = rule if isinstance(rule, str) else str(rule.get("description", rule.get("strategy", "")))
    text = (
        f'`brain_ct_threshold` = {threshold:.4f}: the label is "hemorrhage" when P(hemorrhage) ≥ this value. '
        f"Chosen on the validation split: {description}."
    )
    own = rule.get("input_thresholds") if isinstance(rule, Mapping) else None
    if own:
        kinds = ", ".join(f"`{kind}` {value:.4f}" for kind, value in own.items())
        text += (
            f"\n\n`brain_ct_input_thresholds` = {kinds}: slices of these input kinds (`image`: an 8-bit PNG/JPG; "
            "`dicom`: a scanner DICOM) are decided at their own threshold, because their real normals needed a "
            "stricter one to stay within the same false-positive bound; every other kind uses "
            "`brain_ct_threshold`."
        )
    if isinstance(rule, Mapping):
        text += (
            "\n\nThe rule and its inputs are recorded in `config.json` as `brain_ct_threshold_rule`: "
            f"`{json.dumps(dict(rule), ensure_ascii=False)}`."
        )
        if rule.get("fallback"):
            text += (
                f"\n\n**Fallback:** {rule.get('requested')} was asked for, but {rule['fallback']}. "
                "Nothing bounds how often real normal heads are called hemorrhage at this threshold."
            )
    return text


def calibration_text(
    calibration: Mapping[str, Any], plots: Sequence[str] = (), multi_label: bool = False
) -> str:
    """The card's "Calibration" section body from ``eval_results.json``'s ``calibration`` entry
    (``multi_label``: a subtype model, whose temperature is folded into the ``any`` output only)."""
    temp = calibration.get("temperature") or {}
    lines = []
    if temp:
        total = temp.get("folded_total", temp.get("temperature"))
        if temp.get("kept"):
            lines.append(
                f"Temperature scaling: T = {temp['temperature']:.3f} fitted on the validation split lowered "
                f"its negative log-likelihood from {temp['nll_before']:.4f} to {temp['nll_after']:.4f}; it is "
                + (
                    "folded into the `any` row of the classifier's last linear layer (its weight and bias "
                    "divided by T; the five subtype outputs are left as trained), so the weights give a "
                    "calibrated P(hemorrhage) directly "
                    if multi_label
                    else "folded into the classifier's last linear layer (weight and bias divided by T), so the "
                    "weights give calibrated probabilities directly "
                )
                + f"(`brain_ct_temperature` = {total:.4f})."
            )
        else:
            lines.append(
                f"Temperature scaling was tried and not kept: {temp.get('reason') or 'no improvement'} "
                f"(validation NLL {_fmt(temp.get('nll_before'))})."
            )
        lines.append("")
    binning = next(
        (calibration[s]["binning"] for s in ("validation", "test") if calibration.get(s, {}).get("binning")),
        "equal-width bins of P(hemorrhage)",
    )
    lines += [
        f"Expected calibration error (ECE) with {binning}: the mean absolute gap "
        "between the fraction of hemorrhage and the mean P(hemorrhage) in each bin, weighted by its count. "
        "The validation split is also what the temperature was fitted on, so its ECE is optimistic.",
        "",
        "| data | n | ECE | NLL | Brier |",
        "|---|---|---|---|---|",
    ]
    for split, report in _present_splits(calibration):
        rows = [(split, report)]
        rows += [(f"{split} — {k} input", v) for k, v in report.get("by_input_kind", {}).items()]
        rows += [(f"{split} — {k} anatomy", v) for k, v in report.get("by_domain", {}).items()]
        for name, m in rows:
            lines.append(f"| {name} | {m['n']} | {_fmt(m['ece'])} | {_fmt(m['nll'])} | {_fmt(m['brier'])} |")
    lines.append("")
    for plot in plots:
        lines += [f"![{plot}]({plot})", ""]
    return "\n".join(lines).rstrip() + "\n"


def subtypes_text(subtypes: Mapping[str, Any], synthetic: bool, plots: Sequence[str] = ()) -> str:
    """The card's "Subtypes" section body from ``eval_results.json``'s ``subtypes`` entry
    (:func:`train.evaluate.subtype_metrics` per split)."""
    lines = [
        "One sigmoid per label: P(hemorrhage) is `any` (its threshold is the decision threshold above); the "
        "five subtype probabilities are reported beside it. Sensitivity and specificity: `any` at the "
        "decision threshold, each subtype at 0.5 (subtypes have no threshold of their own).",
        "",
        "| data | label | positives | ROC AUC | sensitivity | specificity | at |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, m in _present_splits(subtypes):
        for label, e in m["per_label"].items():
            lines.append(
                f"| {split} | {label} | {e['positives']} | {_fmt(e['auc'])} | {_fmt(e['sensitivity'])} | "
                f"{_fmt(e['specificity'])} | {_fmt(e['threshold'])} |"
            )
    lines.append("")
    for split in ("validation", "test"):
        m = subtypes.get(split)
        if m:
            lines.append(
                f"- RSNA 2019 weighted log loss, {split} ({m['n']} slices): {m['rsna_log_loss']:.4f}"
            )
    lines += [
        "",
        "For reference: RSNA Intracranial Hemorrhage Detection (2019) scored this weighted log loss (weight 2 "
        "for `any`, 1 per subtype; lower is better) on its own test set of real scans; the first-place team "
        f"reached {RSNA_FIRST_PLACE_LOG_LOSS} on the private leaderboard. Only a number measured on that real "
        "RSNA test set is comparable with it"
        + (
            "; the numbers above come from synthetic phantoms and are NOT comparable: they say nothing about "
            "real scans."
            if synthetic
            else "; a number on other data (another source, a validation split of the training data) is not "
            "comparable."
        ),
        "",
    ]
    for plot in plots:
        lines += [f"![{plot}]({plot})", ""]
    return "\n".join(lines).rstrip() + "\n"


def replace_section(card: str, heading: str, body: str, before: str | None = None) -> str:
    """Replace the body of the Markdown section ``## heading`` (up to the next ``## ``) with ``body``;
    without such a section, insert it before ``## before`` (or at the end)."""
    block = f"## {heading}\n\n{body.strip()}\n\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(card):
        return pattern.sub(lambda _: block, card, count=1)
    if before is not None:
        anchor = re.search(rf"^## {re.escape(before)}\n", card, re.M)
        if anchor:
            return card[: anchor.start()] + block + card[anchor.start() :]
    return card.rstrip("\n") + "\n\n" + block


def section_body(card: str, heading: str) -> str | None:
    """The body of ``## heading`` (up to the next ``## ``), or None when the card has no such section."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", card, re.S | re.M)
    return m.group(1).strip() if m else None


def _eval_results(results: dict[str, Any], dataset_name: str) -> list[Any]:
    from huggingface_hub import EvalResult

    test = results.get("test") or results.get("validation")
    split = "test" if results.get("test") else "validation"
    if not test:
        return []
    out = []
    for key, metric_type, metric_name in _METRICS:
        v = test.get(key)
        if isinstance(v, float) and math.isfinite(v):
            out.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Intracranial hemorrhage detection",
                    dataset_type=re.sub(r"[^a-z0-9]+", "-", dataset_name.lower()).strip("-")[:60] or "custom",
                    dataset_name=dataset_name[:100],
                    dataset_split=split,
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=round(v, 4),
                )
            )
    return out


def is_smoke_run(training: Mapping[str, Any], command: str | None) -> bool:
    """Whether a run only checked the pipeline: ``--max_steps`` under :data:`SMOKE_MAX_STEPS` (the card's
    ``max steps`` entry, or the flag in its command) or ``--model_size tiny``."""
    steps = training.get("max steps")
    words = shlex.split(command or "")
    flags: dict[str, str] = {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            name, eq, value = word.partition("=")
            flags[name] = value if eq else (words[i + 1] if i + 1 < len(words) else "")
    if not isinstance(steps, int) or isinstance(steps, bool):
        try:
            steps = int(flags.get("--max_steps", ""))
        except ValueError:
            steps = None
    return (steps is not None and 0 < steps < SMOKE_MAX_STEPS) or flags.get("--model_size") == "tiny"


def local_reference(model: str) -> str:
    """A model as a card records it: a Hub id as given, a local folder relative to the working directory.

    Cards are shared; an absolute path names someone's machine (and often their user name) and
    points nowhere for anyone else.
    """
    if not _is_local(model):
        return model
    return Path(os.path.relpath(Path(model).expanduser().resolve(), Path.cwd().resolve())).as_posix()


def _is_local(model: str) -> bool:
    """An absolute path, or a relative one that exists here (a Hub id ``owner/name`` does not)."""
    path = Path(model).expanduser()
    return path.is_absolute() or path.exists()


# An absolute POSIX path inside free text (up to a space, quote, comma, semicolon or bracket).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/[^\s'\",;()\[\]]+")


def relative_paths(text: str) -> str:
    """``text`` with every absolute path of an existing file or folder made relative to the working
    directory (:func:`local_reference`); other text, Hub ids and URLs stay as they are."""

    def shorten(match: re.Match[str]) -> str:
        found = match.group(0)
        return local_reference(found) if Path(found).exists() else found

    return _ABSOLUTE_PATH.sub(shorten, text)


@dataclass(frozen=True)
class CardInfo:
    """What the card says beyond the model's settings and its ``eval_results.json``.

    Attributes:
        model_name: the repo / folder name shown as title.
        synthetic: trained on generated phantoms only → the "demonstration only" warning.
        base_model: the pretrained starting point (a Hub id or a local folder, recorded relative to the
            working directory, :func:`local_reference`), or None when trained from scratch.
        architecture: a short description (stages, widths, parameter count).
        training: hyper-parameters to list (name → value).
        command: the exact command that reproduces the model, or None.
        plots: PNG file names in the folder to show under the evaluation.
        calibration_plots: reliability-diagram PNG names to show in the calibration section.
    """

    model_name: str
    synthetic: bool
    base_model: str | None
    architecture: str
    training: Mapping[str, Any] = field(default_factory=dict)
    command: str | None = None
    plots: Sequence[str] = ()
    calibration_plots: Sequence[str] = ()


def render_model_card(settings: ModelSettings, results: Mapping[str, Any], info: CardInfo) -> str:
    """The model card text (YAML front matter + Markdown).

    Args:
        settings: the saved model's settings: preprocessing (windows, image size, mean/std, slice
            context), ``threshold`` and ``threshold_rule`` (the rule dict of
            :func:`train.threshold.select_threshold`, stored as ``brain_ct_threshold_rule``) and
            ``trained_on`` (the training data description).
        results: ``eval_results.json`` content: ``validation`` / ``test`` metric dicts and, when
            calibration ran, ``calibration`` (temperature, ECE per split, input kind and domain).
        info: the rest (:class:`CardInfo`).
    """
    smoke = is_smoke_run(info.training, info.command)
    trained_on = relative_paths(settings.trained_on or "not recorded")
    lines = _front_matter(settings, results, info, trained_on)
    if smoke:
        lines += [f"> {SMOKE_WARNING}", ""]
    if info.synthetic:
        lines += [f"> {SYNTHETIC_WARNING}", ""]
    lines += [f"> {DISCLAIMER}", ""]
    lines += _intended_use(settings, trained_on)
    lines += _preprocessing_section(settings)
    lines += _evaluation_sections(settings, results, info, smoke)
    lines += _training_sections(info)
    lines += _usage_sections(settings, info)
    return "\n".join(lines)


def _front_matter(
    settings: ModelSettings, results: Mapping[str, Any], info: CardInfo, trained_on: str
) -> list[str]:
    """The Hub metadata (tags, base model, eval results) and the title."""
    from huggingface_hub import ModelCardData

    # The Hub's base_model metadata takes Hub ids; a local folder is named in the text only.
    hub_base = info.base_model if info.base_model and not _is_local(info.base_model) else None
    data = ModelCardData(
        model_name=info.model_name,
        library_name="transformers",
        pipeline_tag="image-classification",
        base_model=hub_base,
        tags=[
            "medical-imaging",
            "computed-tomography",
            "intracranial-hemorrhage",
            "brain-ct",
            "resnet",
            "grad-cam",
        ]
        + (["synthetic-data"] if info.synthetic else []),
        eval_results=_eval_results(results, "synthetic head-CT phantoms" if info.synthetic else trained_on)
        or None,
    )
    return ["---", data.to_yaml(), "---", "", f"# {info.model_name}", ""]


def _intended_use(settings: ModelSettings, trained_on: str) -> list[str]:
    """What the model gives, its intended use and its training data."""
    if settings.is_multi_label:
        what = (
            "P(hemorrhage) for intracranial hemorrhage and the probability of each of RSNA's five subtypes, with "
            f"labels `{dict(enumerate(settings.labels))}` and one sigmoid each "
            "(`problem_type: multi_label_classification`; P(hemorrhage) is `any`)"
        )
    else:
        what = "P(hemorrhage) for intracranial hemorrhage, with labels `{0: normal, 1: hemorrhage}`"
    return [
        f"A `ResNetForImageClassification` that reads one axial head-CT slice and gives {what}. It is meant "
        "to be used with the `brain_ct` library (Predictor, CLI and Gradio app), which also draws a Grad-CAM "
        "heatmap.",
        "",
        "## Intended use",
        "",
        "Research and teaching: showing how a CT classifier with HU windows as channels behaves and where "
        "it looks. Not a medical device; not for diagnosis, triage or any decision about a patient.",
        "",
        "## Training data",
        "",
        trained_on + ".",
        "",
    ]


def _preprocessing_section(settings: ModelSettings) -> list[str]:
    image_size = settings.image_size
    return [
        "## Preprocessing",
        "",
        "`brain_ct.preprocess.model_input` — the same function in training and inference: DICOM input is "
        f"converted to HU and each CT window below becomes one channel; {settings.eight_bit.description}. "
        "The slice is framed to a square around the head, "
        f"resized to {image_size}×{image_size} and normalised per channel.",
        "",
        f"- windows (center, width in HU): {[[c, w] for c, w in settings.windows]}",
        f"- input size: {image_size} px",
        f"- slice context: {settings.context_slices} slice(s) on each side stacked as channels"
        if settings.context_slices
        else "- slice context: none (one slice)",
        f"- mean / std: {[round(v, 4) for v in settings.mean]} / {[round(v, 4) for v in settings.std]}",
        "",
        "These are stored in `config.json` (`brain_ct_*` keys). `preprocessor_config.json` is there for Hub "
        "tooling only (resize + normalise of an already windowed image); it does not do the CT windowing, so "
        "use `brain_ct` for real predictions.",
        "",
    ]


def _evaluation_sections(
    settings: ModelSettings, results: Mapping[str, Any], info: CardInfo, smoke: bool
) -> list[str]:
    """The decision threshold, the evaluation with its plots, and the subtype and calibration sections."""
    rule: Mapping[str, Any] | str = (
        settings.threshold_rule
        if settings.threshold_rule is not None
        else "how it was chosen was not recorded"
    )
    lines = [
        "## Decision threshold",
        "",
        threshold_text(settings.threshold, rule),
        "",
        "## Evaluation",
        "",
        metrics_table(results) if results else "No evaluation was run.",
        "",
        *([SMOKE_WARNING, ""] if smoke and results else []),
    ]
    subtype_plots = [p for p in info.plots if p.startswith("roc_subtypes_")]
    for plot in info.plots:
        if plot not in subtype_plots:
            lines += [f"![{plot}]({plot})", ""]
    if settings.is_multi_label:
        body = (
            subtypes_text(results["subtypes"], info.synthetic, subtype_plots)
            if results.get("subtypes")
            else "No per-subtype evaluation was run."
        )
        lines += ["## Subtypes", "", body]
    calibration = results.get("calibration")
    if calibration:
        lines += [
            "## Calibration",
            "",
            calibration_text(calibration, info.calibration_plots, settings.is_multi_label),
        ]
    return lines


def _training_sections(info: CardInfo) -> list[str]:
    """The architecture, base model and hyper-parameters, and the command that reproduces the model."""
    base_model = local_reference(info.base_model) if info.base_model else None
    lines = [
        "## Model and training",
        "",
        f"- architecture: {info.architecture}",
        f"- base model: {base_model or 'none (random initialisation)'}",
    ]
    lines += [f"- {k}: {v}" for k, v in info.training.items()]
    lines.append("")
    if info.command:
        lines += ["## Reproduce", "", "```bash", relative_paths(info.command), "```", ""]
    return lines


def _usage_sections(settings: ModelSettings, info: CardInfo) -> list[str]:
    """How to use the model, and its limitations."""
    return [
        "## How to use",
        "",
        "```python",
        "from brain_ct import Predictor",
        f"predictor = Predictor.from_pretrained({info.model_name!r})  # a Hub id or this folder",
        'prediction = predictor.predict("slice.dcm")',
        "print(prediction.label, prediction.probability, prediction.explanation)",
        *(["print(prediction.subtypes)  # {subtype: probability}"] if settings.is_multi_label else []),
        "```",
        "",
        "## Limitations",
        "",
        "- One slice at a time; no scan-level context unless the config says `brain_ct_context_slices`.",
        "- Metrics are only as good as the test data; "
        + (
            "these come from synthetic phantoms, not patients."
            if info.synthetic
            else "check how the test set was collected before trusting them."
        ),
        "- Heatmaps show where the network looked, not a segmentation of the bleed.",
        "",
    ]


def write_model_card(
    folder: str | Path, settings: ModelSettings, results: Mapping[str, Any], info: CardInfo
) -> Path:
    """Render the card (see :func:`render_model_card`) into ``folder/README.md`` and return its path."""
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(settings, results, info), encoding="utf-8")
    return path
