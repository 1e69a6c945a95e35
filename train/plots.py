"""The plots of an evaluation and of a training run, written as PNG files beside ``eval_results.json``.

ROC curves (P(hemorrhage), and one per label of a subtype model), the 2×2 confusion matrix and the training
curves; the reliability diagram is :func:`train.metrics.plot_reliability`, beside the calibration measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brain_ct.labels import ANY, SUBTYPE_LABELS
from train.metrics import _pyplot, binary_metrics


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
