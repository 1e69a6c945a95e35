"""Scores and metrics of the training package, at its bottom: evaluate, calibrate and the trainer all import it.

Logits → scores (:func:`softmax_scores`, :func:`sigmoid`), the binary and per-subtype metrics
(:func:`binary_metrics`, :func:`subtype_metrics`), calibration measured on P(hemorrhage) (margins and
temperature, ECE over :data:`ECE_BINS` equal-width bins, NLL, Brier, reliability bins and diagram) and the
headless matplotlib loader behind every plot. It imports no other module of ``train`` except the record
vocabulary of :mod:`train.data` (``DOMAINS``, ``INPUT_KINDS``), so ``train.evaluate`` can report calibration
without importing ``train.calibrate``, which imports ``train.evaluate``. ``train.evaluate`` and
``train.calibrate`` re-export the names they held before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.labels import ANY, SUBTYPE_LABELS, rsna_log_loss
from train.data.records import DOMAINS, INPUT_KINDS


def softmax_scores(logits: np.ndarray, positive_index: int = 1) -> np.ndarray:
    """P(class ``positive_index``) from ``[N, C]`` logits, float64 ``[N]``."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, positive_index] / e.sum(axis=1)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function, float64, stable for large |logit|."""
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


#: The operating point of each subtype in :func:`subtype_metrics` (``any`` uses the model's threshold).
SUBTYPE_THRESHOLD = 0.5


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def binary_metrics(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float,
    per_example: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy, sensitivity, specificity, precision, F1, ROC AUC and the confusion matrix.

    Args:
        labels: 0/1 per example.
        scores: P(hemorrhage) per example.
        threshold: an example is called positive when ``score >= threshold``.
        per_example: each example's own threshold instead (a model with a threshold per input kind,
            :func:`example_thresholds`); ``threshold`` is then only reported.

    Returns:
        A JSON-ready dict; undefined values (e.g. AUC with one class) are NaN.
        ``confusion_matrix`` is ``[[TN, FP], [FN, TP]]`` (rows: truth normal/hemorrhage).
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise InvalidInputError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    pred = (s >= (threshold if per_example is None else per_example)).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    sens = _ratio(tp, tp + fn)
    spec = _ratio(tn, tn + fp)
    prec = _ratio(tp, tp + fp)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    auc = float("nan")
    if 0 < y.sum() < len(y):
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(y, s))
    return {
        "n": int(len(y)),
        "n_hemorrhage": int(y.sum()),
        "n_normal": int(len(y) - y.sum()),
        "threshold": float(threshold),
        "accuracy": _ratio(tp + tn, len(y)),
        "sensitivity": sens,
        "specificity": spec,
        "precision": prec,
        "f1": f1,
        "auc": auc,
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def subtype_metrics(
    targets: Sequence[Sequence[int]] | np.ndarray,
    probabilities: Sequence[Sequence[float]] | np.ndarray,
    threshold: float,
) -> dict[str, Any]:
    """Per-label metrics of a subtype model (see the module docstring).

    Args:
        targets: ``[N, 6]`` 0/1 in :data:`~brain_ct.labels.SUBTYPE_LABELS` order.
        probabilities: ``[N, 6]`` sigmoid outputs, same order.
        threshold: the model's threshold on P(hemorrhage), used for ``any``; the five subtypes are called
            at :data:`SUBTYPE_THRESHOLD` (0.5).

    Returns:
        JSON-ready: ``n``; ``per_label`` {name: ``positives``, ``auc`` (None when the label has one class
        only), ``threshold``, ``sensitivity``, ``specificity`` (NaN when undefined)}; ``rsna_log_loss``;
        ``mean_subtype_auc`` (mean over the five subtypes with an AUC, None if none); ``subtype_threshold``.

    Raises:
        InvalidInputError: shapes other than ``[N, 6]`` with N > 0.
    """
    y = np.asarray(targets, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2 or y.shape[1] != len(SUBTYPE_LABELS) or len(y) == 0:
        raise InvalidInputError(
            f"subtype_metrics needs targets and probabilities of shape [N, {len(SUBTYPE_LABELS)}], N > 0; "
            f"got {y.shape} and {p.shape}"
        )
    per_label: dict[str, Any] = {}
    for j, name in enumerate(SUBTYPE_LABELS):
        t = float(threshold) if name == ANY else SUBTYPE_THRESHOLD
        m = binary_metrics(y[:, j], p[:, j], t)
        per_label[name] = {
            "positives": m["n_hemorrhage"],
            "auc": m["auc"] if math.isfinite(m["auc"]) else None,
            "threshold": t,
            "sensitivity": m["sensitivity"],
            "specificity": m["specificity"],
        }
    aucs = [per_label[n]["auc"] for n in SUBTYPE_LABELS[1:] if per_label[n]["auc"] is not None]
    return {
        "n": int(len(y)),
        "per_label": per_label,
        "rsna_log_loss": rsna_log_loss(y, p),
        "mean_subtype_auc": float(np.mean(aucs)) if aucs else None,
        "subtype_threshold": SUBTYPE_THRESHOLD,
    }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: files only
    import matplotlib.pyplot as plt

    return plt


#: Equal-width bins on P(hemorrhage) for the expected calibration error and the reliability diagram.
ECE_BINS = 10


BINNING = f"{ECE_BINS} equal-width bins of P(hemorrhage) on [0, 1]"


_EPS = 1e-12


def margins(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """The logit difference ``z_hem − z_normal = log(p / (1 − p))`` behind each two-class score p.

    Scores are clipped to [1e-12, 1 − 1e-12] first, so margins beyond ±27.6 saturate (no finite model
    output on real data gets there, and the NLL of such a score is unaffected to 1e-12).
    """
    p = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(scores: Sequence[float] | np.ndarray, temperature: float) -> np.ndarray:
    """P(hemorrhage) after dividing the two logits by ``temperature``: ``sigmoid(margin / T)``."""
    return 1.0 / (1.0 + np.exp(-margins(scores) / float(temperature)))


def binary_nll(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Mean negative log-likelihood (natural log) of the labels under P(hemorrhage) = ``scores``."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1.0 - _EPS)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


def reliability_bins(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, n_bins: int = ECE_BINS
) -> list[dict[str, Any]]:
    """Per equal-width bin of P(hemorrhage): its edges, count, mean score and fraction of hemorrhage.

    Empty bins have ``n`` 0 and NaN means (``None`` in JSON).
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    index = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = index == b
        n = int(sel.sum())
        out.append(
            {
                "low": b / n_bins,
                "high": (b + 1) / n_bins,
                "n": n,
                "mean_score": float(s[sel].mean()) if n else float("nan"),
                "fraction_hemorrhage": float(y[sel].mean()) if n else float("nan"),
            }
        )
    return out


def expected_calibration_error(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """``Σ_b (n_b / N) · |fraction of hemorrhage in b − mean score in b|`` over equal-width bins (NaN if empty)."""
    bins = reliability_bins(labels, scores, n_bins)
    total = sum(b["n"] for b in bins)
    if total == 0:
        return float("nan")
    return float(
        sum(b["n"] / total * abs(b["fraction_hemorrhage"] - b["mean_score"]) for b in bins if b["n"])
    )


def calibration_metrics(labels: np.ndarray, scores: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """``n``, ``ece``, ``nll``, ``brier`` and the reliability ``bins`` of one group of examples."""
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    return {
        "n": int(len(y)),
        "ece": expected_calibration_error(y, s, n_bins),
        "nll": binary_nll(y, s) if len(y) else float("nan"),
        "brier": float(np.mean((s - y) ** 2)) if len(y) else float("nan"),
        "bins": reliability_bins(y, s, n_bins),
    }


def calibration_groups(
    labels: np.ndarray, scores: np.ndarray, kinds: np.ndarray, domains: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"all": (y, s), "dicom": …, "image": …, "phantom": …, "real": …}`` — the groups present."""
    groups = {"all": (labels, scores)}
    for values, names in ((kinds, INPUT_KINDS), (domains, DOMAINS)):
        for code, name in enumerate(names):
            sel = values == code
            if sel.any():
                groups[name] = (labels[sel], scores[sel])
    return groups


def calibration_report(
    labels: np.ndarray, scores: np.ndarray, kinds: np.ndarray, domains: np.ndarray, n_bins: int = ECE_BINS
) -> dict[str, Any]:
    """Calibration overall, ``by_input_kind`` and ``by_domain`` (each :func:`calibration_metrics`)."""
    groups = calibration_groups(labels, scores, kinds, domains)
    report: dict[str, Any] = {"binning": f"{n_bins} equal-width bins of P(hemorrhage) on [0, 1]"}
    report.update(calibration_metrics(*groups["all"], n_bins))
    report["by_input_kind"] = {k: calibration_metrics(*groups[k], n_bins) for k in INPUT_KINDS if k in groups}
    report["by_domain"] = {k: calibration_metrics(*groups[k], n_bins) for k in DOMAINS if k in groups}
    return report


def plot_reliability(
    groups: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str, n_bins: int = ECE_BINS
) -> None:
    """Save a reliability diagram: fraction of hemorrhage against mean P(hemorrhage) per bin, one line per
    group (with its ECE in the legend), the diagonal, and the overall score histogram below."""
    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(4.8, 5.6), dpi=110, gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfectly calibrated")
    for name, (y, s) in groups.items():
        bins = [b for b in reliability_bins(y, s, n_bins) if b["n"]]
        ece = expected_calibration_error(y, s, n_bins)
        ax.plot(
            [b["mean_score"] for b in bins],
            [b["fraction_hemorrhage"] for b in bins],
            "o-",
            lw=2 if name == "all" else 1.2,
            ms=4,
            label=f"{name} (n={len(y)}, ECE {ece:.3f})",
        )
    ax.set(ylabel="fraction hemorrhage", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper left", fontsize=7)
    if "all" in groups:
        hist.hist(groups["all"][1], bins=n_bins, range=(0, 1), color="steelblue")
    hist.set(xlabel="P(hemorrhage)", ylabel="slices")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
