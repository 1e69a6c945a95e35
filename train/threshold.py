"""Decision-threshold rules on validation scores P(hemorrhage), and per-input-kind thresholds.

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
its kind's threshold (:func:`example_thresholds`).

Every command that chooses a threshold (``python -m train``, ``train.evaluate``, ``train.calibrate``,
``train.ensemble``) calls :func:`select_threshold`; their flags for it are
:class:`train.shared_args.ThresholdRuleArguments`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.jsonable import json_safe
from train.data.records import DOMAINS, INPUT_KINDS
from train.metrics import _ratio
from train.shared_args import THRESHOLD_STRATEGIES

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
        domains: index into :data:`train.data.records.DOMAINS` per example (needed by ``real_fpr``).
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
    used, rule = _resolve_strategy(strategy, int(real_neg.sum()), target_sensitivity)
    threshold = clamp_threshold(
        choose_threshold(y, s, used, target_sensitivity, fixed, domains=d, max_real_fpr=max_real_fpr)
    )
    n_pos = int((y == 1).sum())
    sens = _ratio(int(((s >= threshold) & (y == 1)).sum()), n_pos)
    rule = {"strategy": used, **rule, "n_validation": int(len(y)), "n_positives": n_pos}
    if used == "real_fpr":
        _describe_real_fpr(rule, y, s, d, real_neg, threshold, max_real_fpr, sens, kinds)
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


def _resolve_strategy(
    strategy: str, n_real_neg: int, target_sensitivity: float
) -> tuple[str, dict[str, Any]]:
    """The rule ``strategy`` stands for (``auto`` and a ``real_fpr`` without real normals fall back to
    ``sensitivity``, logged) and the rule's ``requested`` / ``fallback`` entries when it fell back.

    Raises:
        InvalidInputError: an unknown strategy.
    """
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
    return used, rule


def _describe_real_fpr(
    rule: dict[str, Any],
    y: np.ndarray,
    s: np.ndarray,
    d: np.ndarray,
    real_neg: np.ndarray,
    threshold: float,
    max_real_fpr: float,
    sens: float,
    kinds: np.ndarray | None,
) -> None:
    """Add the ``real_fpr`` rule's counts, its description and (with ``kinds``) the per-input-kind
    thresholds to ``rule``, in place."""
    n_real_neg = int(real_neg.sum())
    n_pos = rule["n_positives"]
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
