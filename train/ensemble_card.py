"""The model card (``README.md``) of an ensemble folder written by ``python -m train.ensemble``.

:func:`render_card` takes the ensemble's ``eval_results.json`` content (:func:`train.ensemble.write_ensemble`)
and writes what it is, its members, the threshold rule, metrics per member and for the ensemble, how to use
it, and the research-use notice; each section is one function here. A single model's card is
:mod:`train.card`, whose metric tables and warnings this card shares.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from huggingface_hub import ModelCardData

from brain_ct.wording import DISCLAIMER
from train.card import SYNTHETIC_WARNING, metrics_table


def _cell(value: Any) -> str:
    return "n/a" if not isinstance(value, (int, float)) or value != value else f"{value:.3f}"


def _summary_table(results: dict[str, Any], split: str = "validation") -> str:
    """One row per member and one for the ensemble on ``split``: AUC, sensitivity and specificity at its own
    threshold and at the ensemble's."""
    rows = [
        "| model | own threshold | ROC AUC | sensitivity | specificity | sensitivity at the ensemble's "
        "threshold | specificity at the ensemble's threshold |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in results["members"]:
        own, at = m[split], m[f"{split}_at_ensemble_threshold"]
        rows.append(
            f"| `{m['model']}` | {m['threshold']:.4f} | {_cell(own['auc'])} | {_cell(own['sensitivity'])} | "
            f"{_cell(own['specificity'])} | {_cell(at['sensitivity'])} | {_cell(at['specificity'])} |"
        )
    e = results[split]
    rows.append(
        f"| **ensemble (mean)** | {results['threshold']:.4f} | {_cell(e['auc'])} | {_cell(e['sensitivity'])} | "
        f"{_cell(e['specificity'])} | {_cell(e['sensitivity'])} | {_cell(e['specificity'])} |"
    )
    return "\n".join(rows)


def render_card(name: str, results: dict[str, Any], *, demo: bool, command: str, plots: Sequence[str]) -> str:
    """The ensemble's ``README.md``: what it is, its members, the threshold rule, metrics per member and for
    the ensemble, how to use it, and the research-use notice (:data:`brain_ct.DISCLAIMER`)."""
    lines = _front_matter(name, results, demo)
    lines += _members_section(results["members"])
    lines += _threshold_section(results)
    lines += _evaluation_sections(name, results, plots)
    lines += _usage_sections(name, command)
    return "\n".join(lines)


def _front_matter(name: str, results: dict[str, Any], demo: bool) -> list[str]:
    """The Hub metadata, the title, the notices, what the ensemble is and its intended use."""
    members = results["members"]
    hub_members = [m["model"] for m in members if m["hub"]]
    data = ModelCardData(
        model_name=name,
        pipeline_tag="image-classification",
        base_model=hub_members or None,
        tags=["medical-imaging", "computed-tomography", "intracranial-hemorrhage", "brain-ct", "ensemble"]
        + (["synthetic-data"] if demo else []),
    )
    lines = ["---", data.to_yaml(), "---", "", f"# {name}", ""]
    if demo:
        lines += [f"> {SYNTHETIC_WARNING}", ""]
    return lines + [
        f"> {DISCLAIMER}",
        "",
        f"An ensemble of {len(members)} brain-CT hemorrhage models ({results['label_set']} label set), in the "
        "`brain_ct` ensemble format (`ensemble.json`). Each member reads the slice with its own preprocessing; "
        "the ensemble's P(hemorrhage) is the mean of the members' (`combine: mean`; subtype probabilities and "
        "the Grad-CAM heatmaps are averaged too), and its own threshold, chosen on validation, decides the "
        "label. It loads wherever a `brain_ct` model loads (`--model`, `BRAIN_CT_MODEL`, the app, "
        "`Predictor.from_pretrained`), and each reading lists every member's probability.",
        "",
        "## Intended use",
        "",
        "Research and teaching only: comparing models and their agreement on a slice. It is not a medical "
        "device and must not inform any decision about a patient.",
        "",
    ]


def _members_section(members: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "## Members",
        "",
        "| # | model (as in `ensemble.json`) | revision | trained on | own threshold |",
        "|---|---|---|---|---|",
    ]
    return lines + [
        f"| {i} | `{m['model']}` | {m['revision'] or '—'} | {m['trained_on'] or 'not recorded'} | {m['threshold']:.4f} |"
        for i, m in enumerate(members, 1)
    ]


def _threshold_section(results: dict[str, Any]) -> list[str]:
    """The threshold, the rule that chose it, the input kinds with their own, and a fallback's warning."""
    rule = results["threshold_rule"]
    lines = [
        "",
        "## Decision threshold",
        "",
        f'`threshold` = {results["threshold"]:.4f} in `ensemble.json`: the label is "hemorrhage" when the '
        f"members' mean P(hemorrhage) is at or above it. Chosen on the validation data below by the "
        f"`{rule['strategy']}` rule: {rule.get('description', '')}. The rule and its inputs are stored as "
        f"`threshold_rule`: `{json.dumps(rule, ensure_ascii=False)}`.",
        "",
    ]
    if results.get("input_thresholds"):
        kinds = ", ".join(f"`{k}` {v:.4f}" for k, v in results["input_thresholds"].items())
        lines += [
            f"`input_thresholds` = {kinds} in `ensemble.json`: slices of these input kinds are decided at their "
            "own threshold (their real normals needed a stricter one to stay within the same bound).",
            "",
        ]
    if rule.get("fallback"):
        lines += [
            f"**Fallback:** `{rule.get('requested')}` was asked for, but {rule['fallback']}. Nothing bounds how "
            "often real normal heads are called hemorrhage at this threshold.",
            "",
        ]
    return lines


def _evaluation_sections(name: str, results: dict[str, Any], plots: Sequence[str]) -> list[str]:
    """Validation (and test) summaries, then the ensemble's and each member's metric tables."""
    lines = [
        "## Evaluation on validation",
        "",
        f"Validation data: {results['validation_data']}. The ensemble's threshold was chosen on these same "
        "slices, so its numbers are optimistic; only a separate test set measures it: "
        f"`python -m train.evaluate --model {name} --test_dir TEST` (members and ensemble, as for one model).",
        "",
        _summary_table(results),
        "",
    ]
    if "test" in results:
        lines += [
            "## Evaluation on test",
            "",
            f"Test data: {results['test_data']}. Neither the members nor the ensemble's threshold were chosen "
            "on these slices.",
            "",
            _summary_table(results, "test"),
            "",
        ]
    lines += ["## Metrics by input kind and anatomy", "", "### Ensemble", "", metrics_table(results), ""]
    lines += [line for plot in plots for line in (f"![{plot}]({plot})", "")]
    for m in results["members"]:
        lines += [
            f"### Member `{m['model']}` (at its own threshold)",
            "",
            metrics_table({"validation": m["validation"], "test": m.get("test")}),
            "",
        ]
    return lines


def _usage_sections(name: str, command: str) -> list[str]:
    """How to reproduce and use the ensemble, and its limitations."""
    return [
        "## Reproduce",
        "",
        "```bash",
        command,
        "```",
        "",
        "## How to use",
        "",
        "```python",
        "from brain_ct import Predictor",
        f"predictor = Predictor.from_pretrained({name!r})  # this folder or its Hub id",
        'prediction = predictor.predict("slice.dcm")',
        "print(prediction.label, prediction.probability, prediction.members)",
        "```",
        "",
        "## Limitations",
        "",
        "- An ensemble averages away only the errors its members do not share: copies of one model, or models "
        "trained on the same data, gain little.",
        "- The heatmap is the mean of the members' normalised Grad-CAMs: where the models looked, not a "
        "segmentation of the bleed.",
        "- Every member's own limitations (see its card) still apply.",
        "",
    ]
