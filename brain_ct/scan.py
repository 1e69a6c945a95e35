"""The scan-level reading: the model over every slice of a :class:`~brain_ct.series.Series`, and the rule
that turns slice probabilities into the scan's probability and label.

:func:`predict_series` runs the model over a series in batches (slice-context models get each
slice's anatomical neighbours) and applies the documented scan-level rule (:class:`ScanRule`);
:func:`scan_result` applies the rule to predictions made elsewhere. The result,
:class:`SeriesPrediction`, is what app, CLI and report present for a whole scan; for subtype models
it also summarises each subtype over the scan (:class:`SubtypeScan`, the same rule per subtype).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.explain import SUBTYPE_NOTABLE
from brain_ct.jsonable import json_safe

# Re-exported: callers (tests, train.scan_rule) name them from here.
from brain_ct.scan_rule import RULE_FIELDS as RULE_FIELDS
from brain_ct.scan_rule import ScanRule as ScanRule
from brain_ct.scan_rule import head_areas as head_areas
from brain_ct.series import Series, context_neighbors
from brain_ct.wording import SUBTYPE_SHOWN, hemorrhage_name, slice_ranges

if TYPE_CHECKING:
    from brain_ct.predictor import Prediction, Predictor


@dataclass(frozen=True)
class SubtypeScan:
    """One hemorrhage subtype over a whole scan (subtype models only).

    Attributes:
        probability: the subtype's scan-level probability: :meth:`ScanRule.scan_probability` of its
            slice probabilities, the statistic the scan's P(hemorrhage) comes from.
        slices: 0-based indices (anatomical order) of the slices where this subtype is the leading
            one, at or above :data:`~brain_ct.wording.SUBTYPE_SHOWN`.
    """

    probability: float
    slices: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """``{"probability": p, "slices": [...]}`` (0-based, as ``positive_slices``)."""
        return {"probability": float(self.probability), "slices": list(self.slices)}


def subtype_scan(
    predictions: Sequence[Prediction],
    rule: ScanRule,
    model_threshold: float,
    areas: Sequence[float] | None = None,
) -> dict[str, SubtypeScan] | None:
    """Each subtype over the scan (:class:`SubtypeScan`), in the predictions' subtype order; None for binary models.
    ``areas``: the slices' head cross-sections (:func:`head_areas`) when ``rule`` has end slices by area.

    Raises:
        InvalidInputError: some slices have subtype probabilities and others do not (two models mixed).
    """
    with_subtypes = [p.subtypes is not None for p in predictions]
    if not any(with_subtypes):
        return None
    if not all(with_subtypes):
        raise InvalidInputError(
            "some slices have subtype probabilities and others do not; read a scan with one model"
        )
    names = list(predictions[0].subtypes or {})
    table = np.asarray([[p.subtypes[n] for n in names] for p in predictions], dtype=np.float64)  # type: ignore[index]
    leading = table.argmax(axis=1)
    shown = table.max(axis=1) >= SUBTYPE_SHOWN
    return {
        name: SubtypeScan(
            probability=rule.scan_probability(table[:, j], model_threshold, areas),
            slices=tuple(int(i) for i in np.flatnonzero(shown & (leading == j))),
        )
        for j, name in enumerate(names)
    }


def describe_scan_subtypes(label: str, subtypes: dict[str, SubtypeScan] | None) -> str:
    """One sentence on a scan's subtypes (slices numbered from 1), or "" when there is nothing to say.

    The scan counterpart of :func:`brain_ct.explain.describe_subtypes`, with the same cut
    (:data:`~brain_ct.explain.SUBTYPE_NOTABLE`): a hemorrhage scan names its most probable subtype
    (and the second when it is notable too) or says none stands out; a normal scan mentions only a
    notable subtype, as not a finding. Binary models (``subtypes`` None) get "".
    """
    if not subtypes:
        return ""

    def numbers(name: str) -> str:
        found = subtypes[name].slices
        where = f"; {'slice' if len(found) == 1 else 'slices'} {slice_ranges(found)}" if found else ""
        return f"scan p {subtypes[name].probability:.2f}{where}"

    ranked = sorted(subtypes, key=lambda n: -subtypes[n].probability)
    top, p_top = ranked[0], subtypes[ranked[0]].probability
    if label == "hemorrhage":
        if p_top < SUBTYPE_NOTABLE:
            return (
                f"No hemorrhage subtype stands out over the scan (the highest is {top}, scan p {p_top:.2f})."
            )
        text = f"Most consistent with {hemorrhage_name(top)} ({numbers(top)})"
        if len(ranked) > 1 and subtypes[ranked[1]].probability >= SUBTYPE_NOTABLE:
            text += f", then {hemorrhage_name(ranked[1])} ({numbers(ranked[1])})"
        return text + "."
    if p_top >= SUBTYPE_NOTABLE:
        return (
            f"The model's {top} output is notably high over the scan ({numbers(top)}); with the scan's "
            "P(hemorrhage) below the threshold this is not a finding."
        )
    return ""


def model_output_fields(prediction: Prediction) -> dict[str, Any]:
    """The JSON fields only some models have: ``subtypes`` and ``heatmap_target`` (subtype models),
    ``members`` (ensembles). A binary single model gets none, so its JSON keeps its keys."""
    data = prediction.to_dict()
    fields: dict[str, Any] = {}
    if prediction.subtypes is not None:
        fields["subtypes"] = data["subtypes"]
        fields["heatmap_target"] = data["heatmap_target"]
    if prediction.members is not None:
        fields["members"] = data["members"]
    return fields


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
        subtypes: subtype models only, ``{name: SubtypeScan}`` in :data:`~brain_ct.labels.SUBTYPES`
            order (:func:`subtype_scan`); None for binary models.
        head_areas: float64 ``[n_slices]`` head cross-sections (:func:`head_areas`) when :attr:`rule`
            finds end slices by area; None otherwise.
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
    subtypes: dict[str, SubtypeScan] | None = None
    head_areas: np.ndarray | None = None

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

    @property
    def subtype_explanation(self) -> str:
        """The scan's subtype sentence (:func:`describe_scan_subtypes`); "" for binary models."""
        return describe_scan_subtypes(self.label, self.subtypes)

    @property
    def member_agreement(self) -> tuple[int, int] | None:
        """For an ensemble, (members whose own scan reading is "hemorrhage", members): each member's
        slice probabilities read by :attr:`rule` with its own threshold; None for a single model."""
        first = self.predictions[0].members
        if first is None:
            return None
        above = 0
        for j, member in enumerate(first):
            probs = [p.members[j]["probability"] for p in self.predictions]  # type: ignore[index]
            above += self.rule.apply(probs, float(member["threshold"]), self.head_areas)[1] == "hemorrhage"
        return above, len(first)

    def slice_dict(self, index: int) -> dict[str, Any]:
        """JSON-safe per-slice object: ``file``, ``index`` (0-based position in anatomical order;
        text for people numbers slices from 1), the single-image fields and, for subtype models
        and ensembles, :func:`model_output_fields`."""
        pred = self.predictions[index]
        return {
            "file": self.series.files[index],
            "index": index,
            "label": pred.label,
            "probability": float(pred.probability),
            "threshold": float(pred.threshold),
            "regions": json_safe([r.to_dict() for r in pred.regions]),
            "explanation": pred.explanation,
            **model_output_fields(pred),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe result in the CLI's shape (slices in anatomical order; ``index`` and
        ``positive_slices`` 0-based), with ``series_id``, ``head_check``, ``errors`` and ``skipped``;
        subtype models add ``subtypes`` (``{name: {"probability", "slices"}}``, :class:`SubtypeScan`)
        and ``subtype_explanation``. Binary models keep exactly the keys they always had."""
        out = {
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
        if self.subtypes is not None:
            out["subtypes"] = {name: summary.to_dict() for name, summary in self.subtypes.items()}
            out["subtype_explanation"] = self.subtype_explanation
        return out


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
        rule: the scan rule; default :class:`ScanRule` () (the rule of models that record none).
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
    areas = head_areas(series.slices) if rule.end_area > 0 else None
    probability, label, positive = rule.apply(probs, base, areas)
    subtypes = subtype_scan(predictions, rule, base, areas)
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
        subtypes=subtypes,
        head_areas=areas,
    )


def predict_series(
    predictor: Predictor,
    series: Series,
    *,
    tta: bool = False,
    batch_size: int = 16,
    rule: ScanRule | None = None,
    source: str | None = None,
    heatmap_target: str | None = None,
) -> SeriesPrediction:
    """Run the model over every slice (batched) and read the scan by :class:`ScanRule`.

    Args:
        predictor: a loaded :class:`~brain_ct.predictor.Predictor`.
        series: from :func:`~brain_ct.series.read_series`.
        tta: test-time augmentation (horizontal flip averaged), passed to ``predict_batch``.
            Slice-context models (``predictor.settings.context_slices`` = k > 0) get each slice's
            k neighbours on each side in anatomical order (:func:`~brain_ct.series.context_neighbors`).
        batch_size: slices per forward pass.
        rule: the scan rule; default the model's own (``predictor.settings.scan_rule``, recorded as
            ``brain_ct_scan_rule``), else :class:`ScanRule` (); always with the slices' own threshold.
        source: display string for ``to_dict()["file"]``; default ``series.source``.
        heatmap_target: the label every slice's Grad-CAM explains (see
            :meth:`~brain_ct.predictor.Predictor.predict`): None for P(hemorrhage), or a subtype.
    """
    k = predictor.settings.context_slices
    neighbors = context_neighbors(series.slices, k) if k > 0 else None
    predictions = predictor.predict_batch(
        list(series.slices),
        batch_size=batch_size,
        tta=tta,
        neighbors=neighbors,
        heatmap_target=heatmap_target,
    )
    settings = predictor.settings
    if rule is None and not getattr(settings, "is_ensemble", False):
        # An ensemble's scores are its members' mean, which no member's recorded rule was chosen on;
        # getattr: predictors are duck-typed (settings without the newer fields read by the default rule).
        rule = getattr(settings, "scan_rule", None)
    # model_threshold None: the slices' own threshold (the model's for their input kind)
    return scan_result(series, predictions, rule=rule, source=source)
