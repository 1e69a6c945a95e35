"""The scan-level reading: the model over every slice of a :class:`~brain_ct.series.Series`, and the rule
that turns slice probabilities into the scan's probability and label.

:func:`predict_series` runs the model over a series in batches (slice-context models get each
slice's anatomical neighbours) and applies the documented scan-level rule (:class:`ScanRule`);
:func:`scan_result` applies the rule to predictions made elsewhere. The result,
:class:`SeriesPrediction`, is what app, CLI and report present for a whole scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.jsonable import json_safe
from brain_ct.series import Series, context_neighbors

if TYPE_CHECKING:
    from brain_ct.predictor import Prediction, Predictor


@dataclass(frozen=True)
class ScanRule:
    """How slice probabilities become the scan's probability and label.

    With slice probabilities ``p[0..n-1]`` in anatomical order, ``T`` = :attr:`threshold` (default:
    the model's threshold), ``k`` = min(:attr:`min_positive_slices`, n) and ``H`` =
    :attr:`single_slice_threshold` (default ``T + (1 - T) / 2``):

    * ``p_run`` = the highest probability held by ``k`` *neighbouring* slices together
      (max over runs of k consecutive slices of the run's minimum) — a bleed spans neighbouring
      slices, while a lone positive slice in a thin-section scan is more often noise;
    * ``p_single`` = the maximum slice probability, mapped piecewise-linearly so that
      0 → 0, ``H`` → ``T``, 1 → 1: one very confident slice is enough on its own;
    * scan probability = max(``p_run``, ``p_single``) (never above the top slice's probability);
    * scan label = "hemorrhage" exactly when scan probability ≥ ``T``, i.e. when k neighbouring
      slices reach ``T`` or one slice reaches ``H``.

    A series of one slice reduces to that slice's own probability and label. Positive slices are
    those with probability ≥ ``T``.
    """

    threshold: float | None = None
    min_positive_slices: int = 2
    single_slice_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise InvalidInputError(f"scan threshold must be in (0, 1); got {self.threshold}")
        if self.min_positive_slices < 1:
            raise InvalidInputError(f"min_positive_slices must be ≥ 1; got {self.min_positive_slices}")
        if self.single_slice_threshold is not None and not 0.0 < self.single_slice_threshold <= 1.0:
            raise InvalidInputError(
                f"single_slice_threshold must be in (0, 1]; got {self.single_slice_threshold}"
            )

    def resolve(self, model_threshold: float) -> tuple[float, int, float]:
        """The (T, k, H) used with a model whose threshold is ``model_threshold``."""
        t = float(self.threshold if self.threshold is not None else model_threshold)
        h = float(self.single_slice_threshold if self.single_slice_threshold is not None else t + (1 - t) / 2)
        return t, self.min_positive_slices, max(h, t)

    def apply(self, probabilities: Sequence[float], model_threshold: float) -> tuple[float, str, list[int]]:
        """Scan probability, label and positive slice indices for per-slice probabilities.

        Args:
            probabilities: P(hemorrhage) per slice, in anatomical order; at least one.
            model_threshold: the model's slice threshold (used when :attr:`threshold` is None).
        """
        p = np.asarray(probabilities, dtype=np.float64)
        if p.ndim != 1 or p.size == 0:
            raise InvalidInputError("a scan needs at least one slice probability")
        t, k, h = self.resolve(model_threshold)
        k = min(k, p.size)
        p_run = float(np.max(np.lib.stride_tricks.sliding_window_view(p, k).min(axis=1)))
        top = float(p.max())
        # Piecewise-linear 0 → 0, H → T, 1 → 1 (with H = 1 a lone slice can reach at most T).
        p_single = float(np.interp(top, [0.0, h, 1.0], [0.0, t, 1.0])) if h < 1 else top * t
        probability = float(min(max(p_run, p_single), top))
        label = "hemorrhage" if probability >= t else "normal"
        positive = [int(i) for i in np.flatnonzero(p >= t)]
        return probability, label, positive


@dataclass
class SeriesPrediction:
    """The model's reading of a whole series.

    Attributes:
        series: the slices read (:class:`~brain_ct.series.Series`), in anatomical order.
        predictions: one :class:`~brain_ct.predictor.Prediction` per slice, same order.
        probability: scan-level P(hemorrhage) by :attr:`rule` (see :class:`ScanRule`).
        label: ``"hemorrhage"`` or ``"normal"`` for the scan.
        threshold: the scan threshold ``T`` used.
        positive_slices: indices of slices with probability ≥ ``threshold``.
        most_suspicious: index of the slice with the highest probability.
        rule: the :class:`ScanRule` applied.
        source: display string of what was read (the path as given).
    """

    series: Series
    predictions: list[Prediction]
    probability: float
    label: str
    threshold: float
    positive_slices: list[int]
    most_suspicious: int
    rule: ScanRule
    source: str

    @property
    def n_slices(self) -> int:
        return len(self.predictions)

    @property
    def head_check(self) -> str:
        """``"passed"`` when the series' head-CT check ran and passed, ``"skipped"`` when
        ``allow_unverified`` skipped it for any slice (outputs must then carry a caveat)."""
        checks = [ct.head_check for ct in self.series.slices] + [p.head_check for p in self.predictions]
        return "skipped" if "skipped" in checks else "passed"

    @property
    def unverified(self) -> bool:
        """True when the head-CT check was skipped (see :attr:`head_check`)."""
        return self.head_check != "passed"

    @property
    def probabilities(self) -> np.ndarray:
        """float64 [n_slices] slice probabilities in anatomical order."""
        return np.asarray([p.probability for p in self.predictions], dtype=np.float64)

    def slice_dict(self, index: int) -> dict[str, Any]:
        """JSON-safe per-slice object: ``file``, ``index`` (0-based position in anatomical order;
        text for people numbers slices from 1) and the single-image fields."""
        pred = self.predictions[index]
        return {
            "file": self.series.files[index],
            "index": index,
            "label": pred.label,
            "probability": float(pred.probability),
            "threshold": float(pred.threshold),
            "regions": json_safe([r.to_dict() for r in pred.regions]),
            "explanation": pred.explanation,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe result in the CLI's shape (slices in anatomical order; ``index`` and
        ``positive_slices`` 0-based), with ``series_id``, ``head_check``, ``errors`` and ``skipped``."""
        return {
            "file": self.source,
            "label": self.label,
            "probability": float(self.probability),
            "threshold": float(self.threshold),
            "n_slices": self.n_slices,
            "series_id": self.series.series_id,
            "positive_slices": list(self.positive_slices),
            "head_check": self.head_check,
            "slices": [self.slice_dict(i) for i in range(self.n_slices)],
            "errors": [dict(e) for e in self.series.errors],
            "skipped": [dict(s) for s in self.series.skipped],
        }


def scan_result(
    series: Series,
    predictions: Sequence[Prediction],
    *,
    rule: ScanRule | None = None,
    model_threshold: float | None = None,
    source: str | None = None,
) -> SeriesPrediction:
    """Combine per-slice predictions (anatomical order) into a :class:`SeriesPrediction`.

    Args:
        series: the series the predictions belong to (same length and order).
        predictions: one prediction per slice.
        rule: the scan rule; default :class:`ScanRule` ().
        model_threshold: the model's slice threshold; default the first prediction's ``threshold``.
        source: display string; default ``series.source``.
    """
    if len(predictions) != len(series.slices) or not predictions:
        raise InvalidInputError(
            f"got {len(predictions)} predictions for {len(series.slices)} slices; need one per slice (≥ 1)"
        )
    rule = rule or ScanRule()
    base = float(model_threshold if model_threshold is not None else predictions[0].threshold)
    probs = [float(p.probability) for p in predictions]
    probability, label, positive = rule.apply(probs, base)
    return SeriesPrediction(
        series=series,
        predictions=list(predictions),
        probability=probability,
        label=label,
        threshold=rule.resolve(base)[0],
        positive_slices=positive,
        most_suspicious=int(np.argmax(probs)),
        rule=rule,
        source=series.source if source is None else source,
    )


def predict_series(
    predictor: Predictor,
    series: Series,
    *,
    tta: bool = False,
    batch_size: int = 16,
    rule: ScanRule | None = None,
    source: str | None = None,
) -> SeriesPrediction:
    """Run the model over every slice (batched) and read the scan by :class:`ScanRule`.

    Args:
        predictor: a loaded :class:`~brain_ct.predictor.Predictor`.
        series: from :func:`~brain_ct.series.read_series`.
        tta: test-time augmentation (horizontal flip averaged), passed to ``predict_batch``.
            Slice-context models (``predictor.settings.context_slices`` = k > 0) get each slice's
            k neighbours on each side in anatomical order (:func:`~brain_ct.series.context_neighbors`).
        batch_size: slices per forward pass.
        rule: the scan rule; default :class:`ScanRule` () with the model's threshold.
        source: display string for ``to_dict()["file"]``; default ``series.source``.
    """
    k = predictor.settings.context_slices
    neighbors = context_neighbors(series.slices, k) if k > 0 else None
    predictions = predictor.predict_batch(
        list(series.slices), batch_size=batch_size, tta=tta, neighbors=neighbors
    )
    return scan_result(
        series, predictions, rule=rule, model_threshold=predictor.settings.threshold, source=source
    )
