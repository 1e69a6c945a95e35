"""Metrics, the decision threshold, plots, and ``python -m train.evaluate``.

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

Threshold rules (:func:`choose_threshold`), all on validation scores P(hemorrhage):

* ``real_fpr``: the most sensitive (lowest) threshold whose false-positive rate on the validation split's
  REAL normal slices (domain "real", label 0) is ≤ ``max_real_fpr`` (0.10); among thresholds with that same
  validation sensitivity, the highest (a positive's score), as the other rules do. Phantom normals don't
  bound it: real anatomy scores far above phantom anatomy, and a threshold tuned on phantoms alone calls
  almost every real head "hemorrhage";
* ``sensitivity``: the HIGHEST threshold whose sensitivity is still ≥ the target (0.95) — the most specific
  operating point that misses at most 5 % of bleeds;
* ``youden``: the threshold maximising sensitivity + specificity − 1 (ties: the highest);
* ``fixed``: the given value;
* ``auto`` (the default, :func:`select_threshold`): ``real_fpr`` when the validation split has real normal
  slices, else ``sensitivity`` — and the returned rule says which and why.

With ``real_fpr`` the rule is applied again within each input kind (:func:`input_kind_thresholds`): a kind
(8-bit ``image`` figures, scanner ``dicom`` slices) whose own real normals need a STRICTER threshold to stay
within ``max_real_fpr`` gets that one (``brain_ct_input_thresholds``); metrics then decide each example at
its kind's threshold.

Subtype models (RSNA's ``any`` + five subtypes, one sigmoid each): P(hemorrhage) is ``sigmoid(any)`` and every
rule above works on it unchanged. :func:`subtype_metrics` adds, per label, ROC AUC, sensitivity and
specificity (``any`` at the model's threshold, each subtype at :data:`SUBTYPE_THRESHOLD` 0.5 — subtypes have
no threshold of their own), the positives, and RSNA 2019's weighted log loss
(:func:`brain_ct.labels.rsna_log_loss`); :func:`plot_subtype_roc` draws one ROC curve per label.

Where results go: ``--output_dir``, by default ``eval-<model folder or Hub name>`` in the current directory
(:func:`output_dir_for`), never into a model folder (a shipped model's files stay as they were released).
The printed summary names every threshold it decided examples at (:func:`thresholds_used`): a model
with a stricter threshold for 8-bit figures scores them at that one, not at its pooled threshold.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from brain_ct import architectures
from brain_ct.ensemble import load
from brain_ct.errors import BrainCTError, InvalidInputError
from brain_ct.jsonable import json_safe
from brain_ct.labels import ANY, SUBTYPE_LABELS, label_set_of
from brain_ct.predictor import Predictor
from train.data.image_folder import add_file_neighbors, scan_imagefolder
from train.data.labels import check_subtype_records
from train.data.phantoms import synthetic_records
from train.data.records import DOMAINS, INPUT_KINDS
from train.data.splits import to_dataset
from train.data.transform import SliceTransform, attach_transform
from train.metrics import SUBTYPE_THRESHOLD as SUBTYPE_THRESHOLD  # re-exported (defined here before)
from train.metrics import (
    _pyplot,
    _ratio,
    binary_metrics,
    calibration_groups,
    calibration_report,
    plot_reliability,
    sigmoid,
    softmax_scores,
    subtype_metrics,
)

logger = logging.getLogger(__name__)


def choose_threshold(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    strategy: str = "sensitivity",
    target_sensitivity: float = 0.95,
    fixed: float = 0.5,
    domains: Sequence[int] | np.ndarray | None = None,
    max_real_fpr: float = 0.10,
) -> float:
    """Choose the decision threshold on validation scores (see the module docstring).

    Args:
        labels, scores: 0/1 and P(hemorrhage) per validation example.
        strategy: ``real_fpr``, ``sensitivity``, ``youden`` or ``fixed``.
        target_sensitivity: for ``sensitivity``.
        fixed: for ``fixed``.
        domains: index into :data:`train.data.DOMAINS` per example (needed by ``real_fpr``).
        max_real_fpr: for ``real_fpr``.

    Raises:
        InvalidInputError: the rule needs examples the data lacks (positives; negatives for youden; real
            normals for real_fpr), or an unknown strategy.
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if strategy == "fixed":
        return float(fixed)
    if strategy == "real_fpr":
        if domains is None:
            raise InvalidInputError("the real_fpr threshold needs the domain of each validation example")
        return real_fpr_threshold(y, s, np.asarray(domains, dtype=np.int64), max_real_fpr)
    if strategy == "sensitivity":
        positives = np.sort(s[y == 1])[::-1]
        if len(positives) == 0:
            raise InvalidInputError(
                "cannot choose a threshold for a target sensitivity: no hemorrhage examples "
                "in the validation data"
            )
        # Calling the k highest-scoring positives positive gives sensitivity k/P; the smallest k reaching
        # the target fixes the highest threshold: the k-th highest positive score.
        k = max(1, math.ceil(target_sensitivity * len(positives) - 1e-9))
        return float(positives[k - 1])
    if strategy == "youden":
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        if n_pos == 0 or n_neg == 0:
            raise InvalidInputError("the youden threshold needs both classes in the validation data")
        candidates = np.unique(s)[::-1]  # every distinct score, highest first
        sens = np.array([(s[y == 1] >= t).sum() / n_pos for t in candidates])
        spec = np.array([(s[y == 0] < t).sum() / n_neg for t in candidates])
        j = sens + spec - 1.0
        # ties (within rounding) go to the highest threshold: the more specific operating point
        best = int(np.flatnonzero(j >= j.max() - 1e-9)[0])
        return float(candidates[best])
    raise InvalidInputError(
        f"unknown threshold strategy {strategy!r}; choose {', '.join(THRESHOLD_STRATEGIES)}"
    )


#: ``--threshold_strategy`` values; ``auto`` is resolved by :func:`select_threshold`.
THRESHOLD_STRATEGIES: tuple[str, ...] = ("auto", "real_fpr", "sensitivity", "youden", "fixed")


def _real_domain() -> int:
    return DOMAINS.index("real")


def real_fpr_threshold(
    labels: np.ndarray, scores: np.ndarray, domains: np.ndarray, max_real_fpr: float
) -> float:
    """The ``real_fpr`` rule: the most sensitive threshold with FPR on REAL normals ≤ ``max_real_fpr``.

    With the N real-normal scores sorted high to low, m = ⌊max_real_fpr · N⌋ of them may be called positive,
    so the threshold must lie above the (m+1)-th highest, ``bound``. Every threshold just above ``bound``
    has the same (the highest admissible) sensitivity; the highest of those is the lowest positive score
    above ``bound``. When no positive scores above ``bound``, the threshold is the next float above it
    (sensitivity 0: the model cannot separate its bleeds from real anatomy at this bound).

    Raises:
        InvalidInputError: the validation data has no real normal slices.
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    d = np.asarray(domains, dtype=np.int64)
    negatives = np.sort(s[(y == 0) & (d == _real_domain())])[::-1]
    if len(negatives) == 0:
        raise InvalidInputError(
            "cannot bound the false-positive rate on real anatomy: the validation split has no real "
            "normal slices (give --validation_dir / --real_anatomy_dir with normal scans, or use "
            "--threshold_strategy sensitivity)"
        )
    allowed = math.floor(max_real_fpr * len(negatives) + 1e-9)
    bound = -math.inf if allowed >= len(negatives) else float(negatives[allowed])
    positives = s[(y == 1) & (s > bound)]
    if len(positives):
        return float(positives.min())
    return float(np.nextafter(bound, np.inf))


def select_threshold(
    labels: np.ndarray,
    scores: np.ndarray,
    domains: np.ndarray,
    strategy: str = "auto",
    *,
    target_sensitivity: float = 0.95,
    max_real_fpr: float = 0.10,
    fixed: float = 0.5,
    kinds: np.ndarray | None = None,
) -> tuple[float, dict[str, Any]]:
    """Choose the threshold by ``strategy`` and describe the rule and its inputs (for config and card).

    With ``kinds`` (input kind per example) and the ``real_fpr`` rule, each input kind with enough real
    normals is checked on its own (:func:`input_kind_thresholds`): the rule then records ``by_input_kind``
    and, for the kinds that need a stricter threshold, ``input_thresholds`` (→ ``brain_ct_input_thresholds``;
    read it with :func:`rule_input_thresholds`).

    ``auto`` means ``real_fpr`` when the validation data has real normal slices, else ``sensitivity``;
    an explicit ``real_fpr`` without real normals also falls back to ``sensitivity``. A fallback is logged
    and recorded in the rule (``requested`` and ``fallback``).

    Returns:
        ``(threshold clamped to (0, 1), rule)`` where ``rule`` is JSON-ready: ``strategy`` (the rule used),
        its parameters, the counts it was chosen on and the validation operating point it gives
        (``validation_sensitivity``; ``real_fpr`` for ``real_fpr``), and ``description`` (one sentence).
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    d = np.asarray(domains, dtype=np.int64)
    real_neg = (y == 0) & (d == _real_domain())
    n_real_neg = int(real_neg.sum())
    rule: dict[str, Any] = {}
    used = strategy
    if strategy in ("auto", "real_fpr"):
        used = "real_fpr" if n_real_neg else "sensitivity"
        if not n_real_neg:
            reason = (
                "the validation split has no real normal slices, so false positives on real anatomy could "
                f"not be bounded; the threshold is the highest with sensitivity ≥ {target_sensitivity}"
            )
            rule.update(requested=strategy, fallback=reason)
            log = logger.warning if strategy == "real_fpr" else logger.info
            log("threshold rule %s: %s", strategy, reason)
    if used not in THRESHOLD_STRATEGIES[1:]:
        raise InvalidInputError(
            f"unknown threshold strategy {strategy!r}; choose {', '.join(THRESHOLD_STRATEGIES)}"
        )
    threshold = clamp_threshold(
        choose_threshold(y, s, used, target_sensitivity, fixed, domains=d, max_real_fpr=max_real_fpr)
    )
    n_pos = int((y == 1).sum())
    sens = _ratio(int(((s >= threshold) & (y == 1)).sum()), n_pos)
    rule = {"strategy": used, **rule, "n_validation": int(len(y)), "n_positives": n_pos}
    if used == "real_fpr":
        fp = int((s[real_neg] >= threshold).sum())
        rule.update(
            max_real_fpr=float(max_real_fpr),
            n_real_negatives=n_real_neg,
            real_false_positives=fp,
            real_fpr=fp / n_real_neg,
        )
        rule["description"] = (
            f"the most sensitive threshold whose false-positive rate on the {n_real_neg} real normal "
            f"validation slices is ≤ {max_real_fpr:g} (here {fp}/{n_real_neg}); validation sensitivity "
            f"{sens:.3f} on {n_pos} hemorrhage slices"
        )
        if kinds is not None:
            own, by_kind = input_kind_thresholds(y, s, kinds, d, threshold, max_real_fpr)
            if by_kind:
                rule["by_input_kind"] = by_kind
            if own:
                rule["input_thresholds"] = own
                rule["description"] += "; " + "; ".join(
                    f"{_KIND_WORDS.get(kind, kind)} at their own threshold {value:.4f}, the same rule on "
                    f"their {by_kind[kind]['n_real_negatives']} real normals "
                    f"(here {by_kind[kind]['real_false_positives']}/{by_kind[kind]['n_real_negatives']}; "
                    f"sensitivity {by_kind[kind]['validation_sensitivity']:.3f} on "
                    f"{by_kind[kind]['n_positives']} of their bleeds)"
                    for kind, value in own.items()
                )
        if sens == 0 or not math.isfinite(sens):
            logger.warning(
                "threshold rule real_fpr: no hemorrhage slice of the validation split scores above the "
                "real normals allowed by --max_real_fpr %g; the model calls nothing positive there",
                max_real_fpr,
            )
    elif used == "sensitivity":
        rule["target_sensitivity"] = float(target_sensitivity)
        rule["description"] = f"the highest threshold reaching sensitivity ≥ {target_sensitivity}" + (
            f" ({rule['fallback']})" if "fallback" in rule else ""
        )
    elif used == "youden":
        rule["description"] = "maximum of sensitivity + specificity − 1 (Youden's J)"
    else:
        rule["fixed"] = float(fixed)
        rule["description"] = "fixed by --threshold"
    rule["validation_sensitivity"] = sens
    return threshold, json_safe(rule)


_KIND_WORDS = {"image": "8-bit images", "dicom": "DICOM slices"}


def rule_input_thresholds(rule: Mapping[str, Any] | None) -> dict[str, float] | None:
    """The per-input-kind thresholds a rule of :func:`select_threshold` chose, or None."""
    own = (rule or {}).get("input_thresholds")
    return {str(k): float(v) for k, v in own.items()} if own else None


#: Real normal validation slices an input kind needs before it gets a threshold of its own.
MIN_KIND_REAL_NEGATIVES = 10


def input_kind_thresholds(
    labels: np.ndarray,
    scores: np.ndarray,
    kinds: np.ndarray,
    domains: np.ndarray,
    threshold: float,
    max_real_fpr: float,
    min_real_negatives: int = MIN_KIND_REAL_NEGATIVES,
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """The ``real_fpr`` rule again within each input kind (``dicom`` / ``image``), never below ``threshold``.

    8-bit figures and scanner DICOMs of the same real anatomy score differently (an 8-bit render has lost
    the HU scale and the wide windows), so one pooled threshold can keep real normals of one kind ≤ the
    bound while flagging many more of the other. A kind with at least ``min_real_negatives`` real normal
    validation slices gets the :func:`real_fpr_threshold` of its own slices when that is STRICTER than the
    pooled ``threshold``; a laxer one is not taken (it would rest on a small subset alone).

    Returns:
        ``(thresholds, rules)``: ``{kind: threshold}`` for the kinds that get their own (for
        ``brain_ct_input_thresholds``), and ``{kind: {...}}`` for every kind with enough real normals: its
        counts, the kind's own rule threshold, the threshold used, its real false positives and sensitivity.
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    k = np.asarray(kinds, dtype=np.int64)
    d = np.asarray(domains, dtype=np.int64)
    real_neg = (y == 0) & (d == _real_domain())
    thresholds: dict[str, float] = {}
    rules: dict[str, dict[str, Any]] = {}
    for code, name in enumerate(INPUT_KINDS):
        sel = k == code
        n_neg = int((sel & real_neg).sum())
        if n_neg < min_real_negatives:
            continue
        own = clamp_threshold(real_fpr_threshold(y[sel], s[sel], d[sel], max_real_fpr))
        used = max(own, float(threshold))
        if used > threshold:
            thresholds[name] = used
        n_pos = int((sel & (y == 1)).sum())
        rules[name] = {
            "n_real_negatives": n_neg,
            "n_positives": n_pos,
            "own_threshold": own,
            "threshold": used,
            "real_false_positives": int((s[sel & real_neg] >= used).sum()),
            "validation_sensitivity": _ratio(int(((s >= used) & sel & (y == 1)).sum()), n_pos),
        }
    return thresholds, rules


def example_thresholds(
    kinds: np.ndarray, threshold: float, kind_thresholds: Mapping[str, float] | None
) -> np.ndarray | None:
    """Each example's decision threshold (its input kind's, else ``threshold``); None without per-kind
    thresholds, so callers keep the plain scalar comparison."""
    if not kind_thresholds:
        return None

    k = np.asarray(kinds, dtype=np.int64)
    out = np.full(k.shape, float(threshold))
    for code, name in enumerate(INPUT_KINDS):
        if name in kind_thresholds:
            out[k == code] = float(kind_thresholds[name])
    return out


def clamp_threshold(t: float) -> float:
    """Keep a threshold inside (0, 1) as the model folder contract requires (``brain_ct_threshold``)."""
    return float(min(max(t, 1e-6), 1.0 - 1e-6))


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
    (index into ``train.data.INPUT_KINDS``) and ``domain`` (index into ``train.data.DOMAINS``), all ``[N]``;
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
            domains.append(domain.numpy() if domain is not None else np.full(len(labels[-1]), _real_domain()))
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

    Records are decoded by :meth:`train.data.SliceTransform.decode` (files through ``load_image``,
    phantoms from their seeds at ``synthetic_size``, real anatomy with its painted lesions), and the
    predictor preprocesses each slice for each member as at inference (one
    :meth:`~brain_ct.Predictor.predict_batch` per batch: the ensemble's mean and each member's
    P(hemorrhage) come from the same reading). Input kind and domain are those the training run reports.

    Args:
        subtypes: for a subtype ensemble, also the six targets of each record and the ensemble's six
            probabilities (every bleed must name its subtypes: :func:`train.data.check_subtype_records`).
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
            domains.append(DOMAINS.index("phantom" if int(ex.get("synthetic_seed", -1)) >= 0 else "real"))
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


# ---------------------------------------------------------------------------------------------- plots


def plot_roc(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    path: Path,
    title: str = "ROC",
    per_example: np.ndarray | None = None,
) -> None:
    """Save the ROC curve with the operating point at ``threshold`` (or at each example's own threshold,
    ``per_example``) as a PNG."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    if 0 < labels.sum() < len(labels):
        fpr, tpr, _ = roc_curve(labels, scores)
        m = binary_metrics(labels, scores, threshold, per_example)
        ax.plot(fpr, tpr, lw=2, label=f"AUC = {m['auc']:.3f}")
        point = f"threshold {threshold:.3f}" if per_example is None else "thresholds per input kind"
        ax.plot(1 - m["specificity"], m["sensitivity"], "o", color="crimson", label=point)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(matrix: Sequence[Sequence[int]], path: Path, title: str = "Confusion matrix") -> None:
    """Save a 2×2 confusion matrix ``[[TN, FP], [FN, TP]]`` as a PNG."""
    plt = _pyplot()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4, 3.6), dpi=110)
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["normal", "hemorrhage"],
        yticklabels=["normal", "hemorrhage"],
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_training_curves(log_history: list[dict[str, Any]], path: Path) -> bool:
    """Save loss and validation AUC/accuracy against epoch, as the seed plotted them. False if nothing logged."""
    train = [(h["epoch"], h["loss"]) for h in log_history if "loss" in h and "epoch" in h]
    evals = [h for h in log_history if "eval_loss" in h and "epoch" in h]
    if not train and not evals:
        return False
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    if train:
        ax1.plot(*zip(*train, strict=True), label="training loss")
    if evals:
        ax1.plot([h["epoch"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="validation loss")
        for key, name in (("eval_auc", "validation AUC"), ("eval_accuracy", "validation accuracy")):
            pts = [(h["epoch"], h[key]) for h in evals if key in h and h[key] == h[key]]
            if pts:
                ax2.plot(*zip(*pts, strict=True), "o-", label=name)
    ax1.set(xlabel="epoch", title="loss")
    ax2.set(xlabel="epoch", title="validation", ylim=(0, 1.01))
    for ax in (ax1, ax2):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_subtype_roc(
    targets: np.ndarray, probabilities: np.ndarray, path: Path, title: str = "ROC per label"
) -> None:
    """Save one ROC curve per label (``any`` and the five subtypes, AUC in the legend) as a PNG; a label
    with one class only in ``targets`` is named in the legend without a curve."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5.2), dpi=110)
    y = np.asarray(targets, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    for j, name in enumerate(SUBTYPE_LABELS):
        if 0 < y[:, j].sum() < len(y):
            fpr, tpr, _ = roc_curve(y[:, j], p[:, j])
            auc = roc_auc_score(y[:, j], p[:, j])
            ax.plot(
                fpr, tpr, lw=2.2 if name == ANY else 1.4, label=f"{name} (AUC {auc:.3f}, n+={y[:, j].sum()})"
            )
        else:
            ax.plot([], [], " ", label=f"{name}: one class only, no curve")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.evaluate",
        description="Evaluate a saved brain-CT model or ensemble on a test set; writes eval_results.json and "
        "plots (a subtype model: also per-subtype metrics and RSNA's weighted log loss; an ensemble: also each "
        "member's metrics).",
    )
    p.add_argument(
        "--model",
        required=True,
        help="model folder or Hub id (as written by python -m train), or an ensemble's (ensemble.json, as "
        "written by python -m train.ensemble): then each member is reported too",
    )
    p.add_argument(
        "--test_dir",
        help="image folder with hemorrhage/ and normal/ subfolders (a subtype model: subtype folders and/or "
        "metadata.jsonl, see python -m train --labels)",
    )
    p.add_argument(
        "--synthetic_test", type=int, default=0, help="evaluate on N phantoms generated on the fly"
    )
    p.add_argument("--validation_dir", help="re-choose the threshold on this image folder")
    p.add_argument(
        "--synthetic_validation", type=int, default=0, help="re-choose the threshold on N generated phantoms"
    )
    p.add_argument("--synthetic_seed", type=int, default=0, help="phantom seed (same meaning as in training)")
    p.add_argument("--synthetic_size", type=int, default=256, help="phantom side in pixels")
    p.add_argument(
        "--synthetic_8bit_fraction",
        type=float,
        default=0.5,
        help="fraction of phantoms fed as 8-bit renderings",
    )
    p.add_argument("--threshold", type=float, help="use this threshold instead of the model's")
    p.add_argument(
        "--threshold_strategy",
        default="auto",
        choices=[s for s in THRESHOLD_STRATEGIES if s != "fixed"],
        help="rule for re-choosing the threshold on validation data (auto: real_fpr when it has real "
        "normal slices, else sensitivity)",
    )
    p.add_argument(
        "--max_real_fpr",
        type=float,
        default=0.10,
        help="real_fpr rule: highest false-positive rate allowed on the validation split's real normal slices",
    )
    p.add_argument("--threshold_sensitivity", type=float, default=0.95, help="target sensitivity")
    p.add_argument(
        "--output_dir",
        help="where to write eval_results.json and plots (default: eval-<model folder name> in the current "
        "directory); never a model folder",
    )
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument(
        "--num_workers",
        type=int,
        default=0,
        help="dataloader worker processes (a single model; an ensemble reads its slices in this process)",
    )
    p.add_argument("--revision", help="Hub revision of --model")
    return p


def evaluate_model(args: argparse.Namespace) -> dict[str, Any]:
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
    context = settings.context_slices  # an ensemble's: its widest member's
    named = settings.is_multi_label
    predictor = Predictor.from_members(members, settings) if settings.is_ensemble else None
    transform = SliceTransform(settings, synthetic_size=args.synthetic_size)
    ensemble_scores: dict[str, Scored] = {}

    def columns(folder: str | None, n: int, split: str) -> dict[str, list[Any]] | None:
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

    def score(cols: dict[str, list[Any]], split: str) -> Scored:
        if predictor is None:
            dataset = attach_transform(to_dataset(cols), transform)
            return predict_scores(members[0].model, dataset, args.batch_size, args.num_workers, desc=split)
        scores = score_records(
            predictor, cols, args.batch_size, synthetic_size=args.synthetic_size, subtypes=named
        )
        ensemble_scores[split] = scores
        return scores

    out_dir = output_dir_for(args.model, args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threshold, kind_thresholds = settings.threshold, settings.input_thresholds
    results: dict[str, Any] = {"model": str(args.model)}
    val = columns(args.validation_dir, args.synthetic_validation, "validation")
    source = "ensemble.json (threshold)" if predictor else "model config (brain_ct_threshold)"
    subtypes: dict[str, Any] = {}
    if val is not None and args.threshold is None:
        scored = score(val, "validation")
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
    scored = score(columns(args.test_dir, args.synthetic_test, "test"), "test")
    y, s, k, d = scored.binary
    results["threshold"] = threshold
    results["threshold_source"] = source
    if kind_thresholds:
        results["input_thresholds"] = kind_thresholds
    results["test"] = report_split("test", y, s, k, threshold, out_dir, d, kind_thresholds)
    subtypes["test"] = report_subtypes("test", scored, threshold, out_dir)
    if named:
        results["subtypes"] = {split: m for split, m in subtypes.items() if m is not None}
    results["calibration"] = {"test": calibration_report(y, s, k, d)}
    plot_reliability(calibration_groups(y, s, k, d), out_dir / "reliability_test.png", "Reliability — test")
    if predictor is not None:
        results["combine"] = "mean"
        results["label_set"] = label_set_of(settings.labels)
        results["members"] = [
            {
                "model": m.settings.model_id,
                "revision": m.settings.revision,
                "trained_on": m.settings.trained_on,
                "threshold": m.settings.threshold,
                **member_metrics(ensemble_scores, i, m.settings.threshold, threshold),
            }
            for i, m in enumerate(predictor.members)
        ]
    (out_dir / "eval_results.json").write_text(json.dumps(json_safe(results), indent=2) + "\n")
    return results


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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
