"""Scoring a model on records, metrics per input kind, plots, and ``python -m train.evaluate``.

``python -m train.evaluate --model M --test_dir D`` (or ``--synthetic_test N``) scores a saved model on a
test set through the same data transform as training (``brain_ct.io.load_image`` →
``brain_ct.preprocess.model_input``) and writes ``eval_results.json`` plus ROC and confusion-matrix PNGs.
The threshold is the model's ``brain_ct_threshold`` unless ``--threshold`` is given, or re-chosen on
``--validation_dir`` / ``--synthetic_validation`` with ``--threshold_strategy``.

``--model`` may be an ensemble (``ensemble.json``; :mod:`brain_ct.ensemble`): its records are read by one
:class:`brain_ct.Predictor` over the members (:func:`score_records`, the scoring ``python -m train.ensemble``
chooses the ensemble's threshold with), the report is that of a single model on the members' mean P(hemorrhage)
at the ensemble's own threshold (a subtype ensemble: on its mean subtype probabilities too), and ``members``
adds each member's metrics at its own threshold and at the ensemble's (:func:`member_metrics`).

The threshold rules (``--threshold_strategy``; ``auto``: ``real_fpr`` when the validation data has real normal
slices, else ``sensitivity``) and the per-input-kind thresholds are :mod:`train.threshold`'s.

Subtype models (RSNA's ``any`` + five subtypes, one sigmoid each): P(hemorrhage) is ``sigmoid(any)`` and every
rule above works on it unchanged. :func:`subtype_metrics` adds, per label, ROC AUC, sensitivity and
specificity (``any`` at the model's threshold, each subtype at :data:`train.metrics.SUBTYPE_THRESHOLD` 0.5 — subtypes have
no threshold of their own), the positives, and RSNA 2019's weighted log loss
(:func:`brain_ct.labels.rsna_log_loss`); :func:`train.plots.plot_subtype_roc` draws one ROC curve per label.

Where results go: ``--output_dir``, by default ``eval-<model folder or Hub name>`` in the current directory
(:func:`output_dir_for`), never into a model folder (a shipped model's files stay as they were released).
The printed summary names every threshold it decided examples at (:func:`thresholds_used`): a model
with a stricter threshold for 8-bit figures scores them at that one, not at its pooled threshold.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from brain_ct import architectures
from brain_ct.ensemble import Member, load
from brain_ct.errors import BrainCTError, InvalidInputError
from brain_ct.jsonable import json_safe
from brain_ct.labels import SUBTYPE_LABELS, label_set_of
from brain_ct.model import ModelSettings
from brain_ct.predictor import Predictor
from train.data.image_folder import add_file_neighbors, scan_imagefolder
from train.data.labels import check_subtype_records
from train.data.phantoms import synthetic_records
from train.data.records import DOMAINS, INPUT_KINDS
from train.data.splits import to_dataset
from train.data.transform import SliceTransform, attach_transform
from train.metrics import (
    binary_metrics,
    calibration_groups,
    calibration_report,
    plot_reliability,
    sigmoid,
    softmax_scores,
    subtype_metrics,
)
from train.plots import plot_confusion, plot_roc, plot_subtype_roc
from train.shared_args import (
    RECHOSEN_STRATEGIES,
    EvaluationDataArguments,
    LoaderArguments,
    ModelToReadArguments,
    ThresholdRuleArguments,
    parse_command,
)
from train.threshold import example_thresholds, rule_input_thresholds, select_threshold

logger = logging.getLogger(__name__)


def metrics_by_kind(
    labels: np.ndarray,
    scores: np.ndarray,
    kinds: np.ndarray,
    threshold: float,
    domains: np.ndarray | None = None,
    kind_thresholds: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """:func:`binary_metrics` overall and per input kind (``dicom`` / ``image``) present in ``kinds``;
    with ``domains``, also per anatomy domain (``by_domain``: ``phantom`` / ``real``) when both occur.
    ``kind_thresholds`` (``brain_ct_input_thresholds``): each kind is decided at its own threshold."""
    per = example_thresholds(kinds, threshold, kind_thresholds)
    out = binary_metrics(labels, scores, threshold, per)
    if kind_thresholds:
        out["input_thresholds"] = {k: float(v) for k, v in kind_thresholds.items()}
    by_kind = {}
    for code, name in enumerate(INPUT_KINDS):
        sel = kinds == code
        if sel.any():
            own = float((kind_thresholds or {}).get(name, threshold))
            by_kind[name] = binary_metrics(labels[sel], scores[sel], own)
    if len(by_kind) > 1:
        out["by_input_kind"] = by_kind
    elif by_kind:
        out["input_kind"] = next(iter(by_kind))
    if domains is not None:
        by_domain = {
            name: binary_metrics(
                labels[domains == code],
                scores[domains == code],
                threshold,
                None if per is None else per[domains == code],
            )
            for code, name in enumerate(DOMAINS)
            if (domains == code).any()
        }
        if len(by_domain) > 1:
            out["by_domain"] = by_domain
        elif by_domain:
            out["domain"] = next(iter(by_domain))
    return out


class Scored(NamedTuple):
    """A model's scores on one split: ``labels``, ``scores`` = P(hemorrhage) (float64), ``input_kind``
    (index into ``train.data.records.INPUT_KINDS``) and ``domain`` (index into ``train.data.records.DOMAINS``), all ``[N]``;
    for a subtype model also ``targets`` (0/1) and ``probabilities`` ``[N, 6]`` in
    :data:`~brain_ct.labels.SUBTYPE_LABELS` order (None for a binary model). An ensemble's
    (:func:`score_records`): ``scores`` and ``probabilities`` are the members' means, and ``members``
    ``[M, N]`` float64 holds each member's P(hemorrhage) in ``ensemble.json`` order (None for a single
    model). ``binary`` is the first four."""

    labels: np.ndarray
    scores: np.ndarray
    input_kind: np.ndarray
    domain: np.ndarray
    targets: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    members: np.ndarray | None = None

    @property
    def binary(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(labels, scores, input_kind, domain)``: what the P(hemorrhage) metrics take."""
        return self.labels, self.scores, self.input_kind, self.domain


def predict_scores(
    model: Any,
    dataset: Any,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "cpu",
    desc: str = "scoring",
) -> Scored:
    """Run the model over a transformed dataset.

    Returns:
        :class:`Scored` ``(labels int64 [N], scores float64 [N] = P(hemorrhage), input_kind int64 [N],
        domain int64 [N])``; a dataset whose examples carry no ``domain`` counts as all "real". A subtype
        model (``problem_type`` multi-label) also gives ``targets`` and the six sigmoid ``probabilities``
        ``[N, 6]``, reordered to :data:`~brain_ct.labels.SUBTYPE_LABELS` (the transform's target order);
        ``labels`` / ``scores`` are then those of ``any``.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import default_data_collator

    multi_label, positive = architectures.positive_output(model.config)

    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=default_data_collator
    )
    model.eval()
    labels, logits, kinds, domains = [], [], [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, leave=False):
            out = model(pixel_values=batch["pixel_values"].to(device))
            logits.append(out.logits.float().cpu().numpy())
            labels.append(batch["labels"].numpy())
            kinds.append(batch["input_kind"].numpy())
            domain = batch.get("domain")
            domains.append(
                domain.numpy() if domain is not None else np.full(len(labels[-1]), DOMAINS.index("real"))
            )
    if not logits:
        raise InvalidInputError(f"{desc}: the data set is empty")
    kinds_all = np.concatenate(kinds).astype(np.int64)
    domains_all = np.concatenate(domains).astype(np.int64)
    if not multi_label:
        return Scored(
            np.concatenate(labels).astype(np.int64),
            softmax_scores(np.concatenate(logits), positive),
            kinds_all,
            domains_all,
        )
    names = [str(model.config.id2label[i]).lower() for i in range(len(model.config.id2label))]
    order = [names.index(name) for name in SUBTYPE_LABELS]
    probabilities = sigmoid(np.concatenate(logits))[:, order]
    targets = np.concatenate(labels).astype(np.int64).reshape(-1, len(SUBTYPE_LABELS))
    return Scored(targets[:, 0], probabilities[:, 0], kinds_all, domains_all, targets, probabilities)


def score_records(
    predictor: Predictor,
    columns: dict[str, list[Any]],
    batch_size: int = 16,
    *,
    synthetic_size: int = 256,
    allow_unverified: bool = True,
    subtypes: bool = False,
) -> Scored:
    """Read every record as training decodes it and score it with the ensemble ``predictor``.

    Records are decoded by :meth:`train.data.transform.SliceTransform.decode` (files through ``load_image``,
    phantoms from their seeds at ``synthetic_size``, real anatomy with its painted lesions), and the
    predictor preprocesses each slice for each member as at inference (one
    :meth:`~brain_ct.Predictor.predict_batch` per batch: the ensemble's mean and each member's
    P(hemorrhage) come from the same reading). Input kind and domain are those the training run reports.

    Args:
        subtypes: for a subtype ensemble, also the six targets of each record and the ensemble's six
            probabilities (every bleed must name its subtypes: :func:`train.data.labels.check_subtype_records`).
            Ignored for a binary ensemble.

    Returns:
        :class:`Scored` with ``scores`` the ensemble's P(hemorrhage) (the members' mean) and ``members``
        each member's; ``targets`` and ``probabilities`` with ``subtypes``.

    Raises:
        InvalidInputError: no records, a record that cannot be read, or (``subtypes``) a bleed without
            subtypes.
    """
    n = len(columns["label"])
    if n == 0:
        raise InvalidInputError("the data set to score is empty")
    decode = SliceTransform(
        predictor.settings, synthetic_size=synthetic_size, allow_unverified=allow_unverified
    )
    named = subtypes and predictor.settings.is_multi_label
    labels, means, per_member, kinds, domains, targets, probabilities = [], [], [], [], [], [], []
    for start in range(0, n, batch_size):
        records = [{k: v[i] for k, v in columns.items()} for i in range(start, min(n, start + batch_size))]
        decoded = [decode.decode(ex) for ex in records]
        # The numbers only: no Grad-CAM, regions or text for slices that are just being scored.
        mean, subtype_mean, members = predictor.probabilities(
            [d.ct for d in decoded], neighbors=[d.neighbors for d in decoded]
        )
        for i, (ex, d) in enumerate(zip(records, decoded, strict=True)):
            labels.append(d.label)
            means.append(float(mean[i]))
            per_member.append(members[:, i].tolist() if predictor.settings.member_ids else [])
            kinds.append(INPUT_KINDS.index("dicom" if d.ct.hu is not None else "image"))
            domains.append(DOMAINS.index("phantom" if decode.source_of(ex) == "phantom" else "real"))
            if named:
                targets.append(decode.targets(d))
                probabilities.append([float(mean[i]), *map(float, subtype_mean[i])])
        logger.info("scored %d / %d slices", min(n, start + batch_size), n)
    return Scored(
        np.asarray(labels, dtype=np.int64),
        np.asarray(means, dtype=np.float64),
        np.asarray(kinds, dtype=np.int64),
        np.asarray(domains, dtype=np.int64),
        np.asarray(targets, dtype=np.int64) if named else None,
        np.asarray(probabilities, dtype=np.float64) if named else None,
        np.asarray(per_member, dtype=np.float64).T,
    )


def member_metrics(
    scores: Mapping[str, Scored], index: int, own_threshold: float, ensemble_threshold: float
) -> dict[str, Any]:
    """Member ``index``'s :func:`metrics_by_kind` on every split an ensemble was scored on
    (:func:`score_records`: ``validation``, ``test``), at its own threshold (``<split>``) and at the
    ensemble's (``<split>_at_ensemble_threshold``)."""
    out: dict[str, Any] = {}
    for split, sc in scores.items():
        if sc.members is None:
            raise InvalidInputError(f"{split}: member metrics need an ensemble's scores (score_records)")
        y, s, k, d = sc.labels, sc.members[index], sc.input_kind, sc.domain
        out[split] = metrics_by_kind(y, s, k, own_threshold, d)
        out[f"{split}_at_ensemble_threshold"] = metrics_by_kind(y, s, k, ensemble_threshold, d)
    return out


def report_subtypes(name: str, scored: Scored, threshold: float, out_dir: Path) -> dict[str, Any] | None:
    """:func:`subtype_metrics` of a split and its ``roc_subtypes_<name>.png``; None for a binary model."""
    if scored.targets is None or scored.probabilities is None:
        return None
    plot_subtype_roc(
        scored.targets,
        scored.probabilities,
        out_dir / f"roc_subtypes_{name}.png",
        title=f"ROC per label — {name}",
    )
    return subtype_metrics(scored.targets, scored.probabilities, threshold)


def subtype_lines(name: str, m: dict[str, Any]) -> list[str]:
    """Human-readable lines of :func:`subtype_metrics` (printed by the CLIs)."""

    def f(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"

    lines = [f"{name} subtypes: RSNA weighted log loss {m['rsna_log_loss']:.4f} (n={m['n']})"]
    for label, e in m["per_label"].items():
        lines.append(
            f"  {label:<17} positives={e['positives']:<5} AUC={f(e['auc'])} sens={f(e['sensitivity'])} "
            f"spec={f(e['specificity'])} @ {e['threshold']:.3f}"
        )
    return lines


def report_split(
    name: str,
    labels: np.ndarray,
    scores: np.ndarray,
    kinds: np.ndarray,
    threshold: float,
    out_dir: Path,
    domains: np.ndarray | None = None,
    kind_thresholds: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Metrics of one split at ``threshold`` (each input kind at its own with ``kind_thresholds``) plus its
    ROC and confusion-matrix PNGs in ``out_dir``."""
    metrics = metrics_by_kind(labels, scores, kinds, threshold, domains, kind_thresholds)
    plot_roc(
        labels,
        scores,
        threshold,
        out_dir / f"roc_{name}.png",
        title=f"ROC — {name}",
        per_example=example_thresholds(kinds, threshold, kind_thresholds),
    )
    plot_confusion(
        metrics["confusion_matrix"],
        out_dir / f"confusion_matrix_{name}.png",
        title=f"Confusion matrix — {name}",
    )
    return metrics


# ---------------------------------------------------------------------------------------------- CLI


@dataclass
class EvaluateArguments(
    LoaderArguments, ThresholdRuleArguments, EvaluationDataArguments, ModelToReadArguments
):
    """The arguments of ``python -m train.evaluate`` (checked on construction; errors name the flag).

    The groups are listed last first: ``--help`` shows the model, the data, the rule, then the loader.

    ``--validation_dir`` / ``--synthetic_validation`` re-choose the threshold by ``--threshold_strategy``
    (any rule but ``fixed``: a fixed threshold is ``--threshold``).
    """

    threshold_strategies: ClassVar[tuple[str, ...]] = RECHOSEN_STRATEGIES

    threshold: float | None = field(
        default=None, metadata={"help": "Use this threshold instead of the model's (or a re-chosen one)."}
    )
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where to write eval_results.json and plots (default: eval-<model folder name> in the "
            "current directory); never a model folder."
        },
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision of --model."})

    def __post_init__(self) -> None:
        self.check_evaluation_data()
        self.check_threshold_rule()


def parse_args(argv: Sequence[str]) -> EvaluateArguments:
    """:class:`EvaluateArguments` from the command line, or from one JSON file of them."""
    return parse_command(
        EvaluateArguments,
        argv,
        prog="python -m train.evaluate",
        description="Evaluate a saved brain-CT model or ensemble on a test set; writes eval_results.json and "
        "plots (a subtype model: also per-subtype metrics and RSNA's weighted log loss; an ensemble: also each "
        "member's metrics).",
    )


class _SplitScorer:
    """Reads a split's records and scores them with the model or ensemble ``evaluate_model`` loaded.

    An ensemble's scores are kept per split (``ensemble_scores``) for its members' metrics.
    """

    def __init__(self, args: EvaluateArguments, members: list[Member], settings: ModelSettings) -> None:
        self.args, self.members, self.settings = args, members, settings
        self.predictor = Predictor.from_members(members, settings) if settings.is_ensemble else None
        self.transform = SliceTransform(settings, synthetic_size=args.synthetic_size)
        self.ensemble_scores: dict[str, Scored] = {}

    def columns(self, folder: str | None, n: int, split: str) -> dict[str, list[Any]] | None:
        """The records of ``split``: a labelled folder, else ``n`` phantoms, else None."""
        args, context, named = self.args, self.settings.context_slices, self.settings.is_multi_label
        if folder:
            cols = scan_imagefolder(folder)
            if context:  # slice-context models see each slice with its series neighbours
                cols = add_file_neighbors(cols, context)
        elif n > 0:
            cols = synthetic_records(n, split, args.synthetic_seed, args.synthetic_8bit_fraction, named)
        else:
            return None
        if named:  # a subtype model is scored on every label: each bleed needs its subtypes
            check_subtype_records(cols, f"the {split} data")
        return cols

    def score(self, cols: dict[str, list[Any]], split: str) -> Scored:
        args = self.args
        if self.predictor is None:
            dataset = attach_transform(to_dataset(cols), self.transform)
            return predict_scores(
                self.members[0].model, dataset, args.batch_size, args.num_workers, desc=split
            )
        scores = score_records(
            self.predictor,
            cols,
            args.batch_size,
            synthetic_size=args.synthetic_size,
            subtypes=self.settings.is_multi_label,
        )
        self.ensemble_scores[split] = scores
        return scores


def evaluate_model(args: EvaluateArguments) -> dict[str, Any]:
    """Evaluate ``args.model`` as described by the CLI arguments; returns what is written to eval_results.json.

    A single model is scored by :func:`predict_scores` over the training transform. An ensemble
    (``ensemble.json``, loaded by :func:`brain_ct.ensemble.load`) is scored by :func:`score_records`, the
    scoring ``python -m train.ensemble`` chose its threshold with, and gets the same report on its mean
    P(hemorrhage) at its own threshold, plus ``members``: each member's metrics at its own threshold and
    at the ensemble's (:func:`member_metrics`).
    """
    if not args.test_dir and args.synthetic_test <= 0:
        raise InvalidInputError("nothing to evaluate: give --test_dir DIR or --synthetic_test N")
    output_dir_for(args.model, args.output_dir)  # refused before any model is loaded or slice scored
    members, settings = load(args.model, revision=args.revision)
    scorer = _SplitScorer(args, members, settings)
    out_dir = output_dir_for(args.model, args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"model": str(args.model)}
    subtypes: dict[str, Any] = {}
    threshold, kind_thresholds, source = _validation_threshold(scorer, out_dir, results, subtypes)
    scored = scorer.score(scorer.columns(args.test_dir, args.synthetic_test, "test"), "test")
    y, s, k, d = scored.binary
    results["threshold"] = threshold
    results["threshold_source"] = source
    if kind_thresholds:
        results["input_thresholds"] = kind_thresholds
    results["test"] = report_split("test", y, s, k, threshold, out_dir, d, kind_thresholds)
    subtypes["test"] = report_subtypes("test", scored, threshold, out_dir)
    if settings.is_multi_label:
        results["subtypes"] = {split: m for split, m in subtypes.items() if m is not None}
    results["calibration"] = {"test": calibration_report(y, s, k, d)}
    plot_reliability(calibration_groups(y, s, k, d), out_dir / "reliability_test.png", "Reliability — test")
    if scorer.predictor is not None:
        results.update(_ensemble_results(scorer.predictor, scorer.ensemble_scores, threshold))
    (out_dir / "eval_results.json").write_text(json.dumps(json_safe(results), indent=2) + "\n")
    return results


def _validation_threshold(
    scorer: _SplitScorer, out_dir: Path, results: dict[str, Any], subtypes: dict[str, Any]
) -> tuple[float, dict[str, float] | None, str]:
    """The threshold the test split is decided at, its per-input-kind thresholds and where it comes from:
    ``--threshold``, else one re-chosen on the validation data (reported into ``results`` and
    ``subtypes``), else the model's own."""
    args, settings = scorer.args, scorer.settings
    threshold, kind_thresholds = settings.threshold, settings.input_thresholds
    source = "ensemble.json (threshold)" if scorer.predictor else "model config (brain_ct_threshold)"
    val = scorer.columns(args.validation_dir, args.synthetic_validation, "validation")
    if val is not None and args.threshold is None:
        scored = scorer.score(val, "validation")
        y, s, k, d = scored.binary
        threshold, rule = select_threshold(
            y,
            s,
            d,
            args.threshold_strategy,
            target_sensitivity=args.threshold_sensitivity,
            max_real_fpr=args.max_real_fpr,
            kinds=k,
        )
        kind_thresholds = rule_input_thresholds(rule)
        results["threshold_rule"] = rule
        results["validation"] = report_split("validation", y, s, k, threshold, out_dir, d, kind_thresholds)
        subtypes["validation"] = report_subtypes("validation", scored, threshold, out_dir)
        source = f"validation ({rule['strategy']})"
    elif settings.threshold_rule is not None:
        results["threshold_rule"] = settings.threshold_rule
    if args.threshold is not None:
        threshold, source, kind_thresholds = float(args.threshold), "--threshold", None
    return threshold, kind_thresholds, source


def _ensemble_results(predictor: Predictor, scores: dict[str, Scored], threshold: float) -> dict[str, Any]:
    """An ensemble's entries of ``eval_results.json``: how it combines, its label set, and each member's
    metrics at its own threshold and at the ensemble's."""
    return {
        "combine": "mean",
        "label_set": label_set_of(predictor.settings.labels),
        "members": [
            {
                "model": m.settings.model_id,
                "revision": m.settings.revision,
                "trained_on": m.settings.trained_on,
                "threshold": m.settings.threshold,
                **member_metrics(scores, i, m.settings.threshold, threshold),
            }
            for i, m in enumerate(predictor.members)
        ],
    }


#: Files that make a folder a model folder (``python -m train``'s output, an ensemble's).
MODEL_FILES = ("config.json", "ensemble.json", "model.safetensors")


def _model_folder_of(path: Path) -> Path | None:
    """The model folder ``path`` is or lies in (itself or a parent holding :data:`MODEL_FILES`), or None."""
    for folder in (path, *path.parents):
        if any((folder / name).is_file() for name in MODEL_FILES):
            return folder
    return None


def output_dir_for(model: str, output_dir: str | None) -> Path:
    """Where ``python -m train.evaluate`` writes: ``output_dir``, or ``eval-<name>`` in the current directory.

    ``<name>`` is the model folder's name, or a Hub id's last part (``org/brain-ct`` → ``eval-brain-ct``).

    Raises:
        InvalidInputError: the folder is, or lies inside, a model folder (it holds ``config.json``,
            ``ensemble.json`` or ``model.safetensors``): evaluating must leave a model as it was.
    """
    if output_dir:
        out = Path(output_dir)
    else:
        name = Path(str(model).rstrip("/\\")).name or "model"
        out = Path(f"eval-{name}")
    inside = _model_folder_of(out.resolve())
    if inside is not None:
        raise InvalidInputError(
            f"--output_dir {str(out)!r} is inside the model folder {str(inside)!r}; evaluation results never "
            "go into a model folder. Give another --output_dir (the default is eval-<model name> here)"
        )
    return out


def thresholds_used(m: Mapping[str, Any]) -> str:
    """The thresholds a split's examples were decided at, in words: "threshold 0.3670 (image)", or
    "thresholds dicom 0.3127, image 0.3670" for a test set of both kinds with thresholds of their own.

    ``m`` is :func:`metrics_by_kind`'s result: ``threshold`` (the pooled one), ``input_thresholds``
    (stricter per-kind ones, when the model has them) and the kinds present (``by_input_kind`` or
    ``input_kind``).
    """
    pooled = float(m["threshold"])
    own = m.get("input_thresholds") or {}
    kinds = list(m.get("by_input_kind", {})) or ([m["input_kind"]] if m.get("input_kind") else [])
    used = {kind: float(own.get(kind, pooled)) for kind in kinds}
    if len(set(used.values())) > 1:
        return "thresholds " + ", ".join(f"{kind} {t:.4f}" for kind, t in used.items())
    if len(used) == 1:
        ((kind, t),) = used.items()
        return f"threshold {t:.4f} ({kind})"
    return f"threshold {pooled:.4f}"


def summary_line(name: str, m: dict[str, Any], thresholds: str | None = None) -> str:
    """One human-readable line of the main metrics, ending with the threshold(s) they were decided at
    (``thresholds``, else :func:`thresholds_used` of ``m``)."""

    def f(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"

    return (
        f"{name}: n={m['n']} AUC={f(m['auc'])} acc={f(m['accuracy'])} sens={f(m['sensitivity'])} "
        f"spec={f(m['specificity'])} F1={f(m['f1'])} @ {thresholds or thresholds_used(m)}"
    )


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit 0 on success, 1 on a clear error (no traceback), 2 on usage errors."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = parse_args(argv)
    except ValueError as exc:  # a bad flag value: a usage error, as argparse's own
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        results = evaluate_model(args)
    except BrainCTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    test = results["test"]
    for m in results.get("members", ()):
        print(summary_line(f"member {m['model']}", m["test"]))
    print(summary_line("ensemble test" if "members" in results else "test", test))
    for kind, m in test.get("by_input_kind", {}).items():
        print(summary_line(f"  {kind}", m))
    for domain, m in test.get("by_domain", {}).items():
        print(summary_line(f"  {domain} anatomy", m, thresholds_used(test)))  # decided as the whole split
    print(
        f"test ECE {results['calibration']['test']['ece']:.4f} ({results['calibration']['test']['binning']})"
    )
    for split, m in results.get("subtypes", {}).items():
        print("\n".join(subtype_lines(split, m)))
    print(f"wrote {output_dir_for(args.model, args.output_dir) / 'eval_results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
