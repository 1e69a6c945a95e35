"""The label sets a brain-CT model may have, and RSNA 2019's weighted multi-label log loss.

Two label sets exist (the model folder contract, ``ARCHITECTURE.md``):

* **binary** — ``{0: "normal", 1: "hemorrhage"}``, softmax over two logits; P(hemorrhage) is the
  softmax of class 1.
* **subtypes** — RSNA 2019's six labels in RSNA's order, ``any, epidural, intraparenchymal,
  intraventricular, subarachnoid, subdural``, one sigmoid each (``problem_type:
  "multi_label_classification"``); P(hemorrhage) is the ``any`` output.

The RSNA Intracranial Hemorrhage Detection challenge (2019) scored submissions with a weighted
multi-label logarithmic loss: per image, the binary cross-entropy of each of the six labels, weighted
2 for ``any`` and 1 for each subtype, divided by the sum of the weights (7), then averaged over images
(the competition's "Evaluation" page; first place, private leaderboard: 0.04383). Predictions are
clipped to [1e-15, 1 - 1e-15] as scikit-learn's ``log_loss`` does, so one confident mistake costs a
large but finite amount.

This module is a leaf: it imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

#: The two-class label set, by class index.
BINARY_LABELS: tuple[str, ...] = ("normal", "hemorrhage")

#: "Any hemorrhage": the first of the RSNA labels; its probability is P(hemorrhage).
ANY = "any"

#: The five hemorrhage subtypes, in RSNA's (alphabetical) order.
SUBTYPES: tuple[str, ...] = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")

#: The subtype model's labels by class index: ``any`` then the five subtypes (RSNA's CSV names).
SUBTYPE_LABELS: tuple[str, ...] = (ANY, *SUBTYPES)

#: ``config.problem_type`` of a subtype model.
MULTI_LABEL = "multi_label_classification"

#: ``--labels`` values of ``python -m train``: ``auto`` = subtypes when the training data names them, else binary.
LABEL_MODES: tuple[str, ...] = ("auto", "binary", "subtypes")

#: RSNA 2019's label weights: 2 for ``any``, 1 for each subtype.
RSNA_WEIGHTS: dict[str, float] = {ANY: 2.0, **dict.fromkeys(SUBTYPES, 1.0)}

#: Clipping of probabilities inside the log loss (as scikit-learn's ``log_loss``).
LOG_LOSS_EPS = 1e-15


def label_set_of(labels: Iterable[str]) -> str | None:
    """``"binary"`` or ``"subtypes"`` for a model's label names (any order, any case), else None."""
    names = [str(n).strip().lower() for n in labels]
    if len(names) == len(BINARY_LABELS) and set(names) == set(BINARY_LABELS):
        return "binary"
    if len(names) == len(SUBTYPE_LABELS) and set(names) == set(SUBTYPE_LABELS):
        return "subtypes"
    return None


def subtype_vector(present: Iterable[str]) -> list[int]:
    """The six 0/1 targets (``SUBTYPE_LABELS`` order) of a slice with the given subtypes.

    ``any`` is 1 exactly when at least one subtype is present; naming ``any`` alone (a bleed of
    unknown subtype) sets only ``any``.

    Raises:
        ValueError: a name that is neither ``any`` nor one of :data:`SUBTYPES`.
    """
    names = {str(n).strip().lower() for n in present}
    unknown = names - set(SUBTYPE_LABELS)
    if unknown:
        raise ValueError(
            f"unknown hemorrhage subtype(s) {sorted(unknown)}; expected some of {', '.join(SUBTYPE_LABELS)}"
        )
    vector = [int(name in names) for name in SUBTYPE_LABELS]
    vector[0] = int(bool(names))
    return vector


def rsna_log_loss(
    targets: Sequence[Sequence[float]] | np.ndarray,
    probabilities: Sequence[Sequence[float]] | np.ndarray,
    weights: Mapping[str, float] = RSNA_WEIGHTS,
) -> float:
    """RSNA 2019's weighted multi-label log loss (see the module docstring).

    Args:
        targets: ``[N, 6]`` 0/1 in :data:`SUBTYPE_LABELS` order.
        probabilities: ``[N, 6]`` predicted probabilities, same order.
        weights: per-label weights (default RSNA's 2, 1, 1, 1, 1, 1).

    Returns:
        The mean over images of ``Σ_j w_j · BCE_j / Σ_j w_j``.

    Raises:
        ValueError: shapes differ, are not ``[N, 6]``, or N is 0.
    """
    y = np.asarray(targets, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2 or y.shape[1] != len(SUBTYPE_LABELS) or y.shape[0] == 0:
        raise ValueError(
            f"rsna_log_loss needs targets and probabilities of the same shape [N, {len(SUBTYPE_LABELS)}], N > 0; "
            f"got {y.shape} and {p.shape}"
        )
    w = np.array([float(weights[name]) for name in SUBTYPE_LABELS])
    p = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    bce = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
    return float(np.mean(bce @ w / w.sum()))
