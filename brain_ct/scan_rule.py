"""The scan-level rule: how slice probabilities become the scan's probability and label (:class:`ScanRule`).

Below :mod:`brain_ct.scan` (which reads a series with it) and :mod:`brain_ct.model` (which reads a
model's recorded rule, ``brain_ct_scan_rule``, into it): it imports neither, so the model loader can
name the rule without importing the scan reader and, through it, the predictor. ``brain_ct.scan``
re-exports every public name. ``python -m train.scan_rule`` chooses a model's rule on validation scans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.framing import head_mask
from brain_ct.image import CTImage

#: The keys of a recorded rule (``brain_ct_scan_rule`` in a model's config.json) that set the rule
#: (:meth:`ScanRule.from_dict`); its other keys (``description``, ``validation``) say how it was chosen.
RULE_FIELDS = (
    "min_positive_slices",
    "single_slice_fraction",
    "end_fraction",
    "end_area",
    "end_single_slice_fraction",
)


def _fraction(value: Any, name: str, low: float, high: float, *, closed_high: bool) -> float:
    """``value`` as a float in [low, high] (or [low, high)); InvalidInputError naming ``name`` otherwise."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and low <= value and (value <= high if closed_high else value < high)
    if not ok:
        bracket = "]" if closed_high else ")"
        raise InvalidInputError(
            f"scan rule {name} must be a number in [{low:g}, {high:g}{bracket}; got {value!r}"
        )
    return float(value)


def _lone_slice(top: float, bar: float, t: float) -> float:
    """A lone slice's P mapped piecewise-linearly 0 → 0, ``bar`` → ``t``, 1 → 1 (it reaches ``t`` exactly
    when ``top`` ≥ ``bar``; with ``bar`` = 1 at most ``t``)."""
    return float(np.interp(top, [0.0, bar, 1.0], [0.0, t, 1.0])) if bar < 1 else top * t


@dataclass(frozen=True)
class ScanRule:
    """How slice probabilities become the scan's probability and label.

    With slice probabilities ``p[0..n-1]`` in anatomical order (inferior → superior), ``T`` =
    :attr:`threshold` (default: the slices' own threshold), ``k`` = min(:attr:`min_positive_slices`, n)
    and ``H`` = :attr:`single_slice_threshold` (default ``T + f·(1 − T)``, f =
    :attr:`single_slice_fraction`, 0.5):

    * *end slices* are the outer :attr:`end_fraction` of the scan's slices at each end (slice i sits at
      (i + ½)/n) and the slices whose head cross-section is under :attr:`end_area` × the scan's largest
      (skull base, vertex: where normal heads most often score high); none by default, and none when
      every slice would be one (too short a scan to have ends);
    * ``p_run`` = the highest probability held by ``k`` *neighbouring* slices together
      (max over runs of k consecutive slices of the run's minimum), runs of end slices alone left out —
      a bleed spans neighbouring slices, while a lone positive slice in a thin-section scan is more
      often noise;
    * ``p_single`` = the highest *interior* slice probability, mapped piecewise-linearly so that
      0 → 0, ``H`` → ``T``, 1 → 1: one very confident slice is enough on its own. An end slice alone
      counts only when :attr:`end_single_slice_fraction` is set, at ``H_end = T + f_end·(1 − T)``;
    * scan probability = max(``p_run``, ``p_single``) (never above the top slice's probability);
    * scan label = "hemorrhage" exactly when scan probability ≥ ``T``, i.e. when k neighbouring
      slices (not all end slices) reach ``T``, or one interior slice reaches ``H`` (an end slice ``H_end``).

    The defaults (no end slices) are the rule of models without ``brain_ct_scan_rule``. A series of one
    slice reduces to that slice's own probability and label. Positive slices are those with
    probability ≥ ``T``. ``python -m train.scan_rule`` chooses a model's rule on validation scans.
    """

    threshold: float | None = None
    min_positive_slices: int = 2
    single_slice_threshold: float | None = None
    single_slice_fraction: float = 0.5
    end_fraction: float = 0.0
    end_area: float = 0.0
    end_single_slice_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise InvalidInputError(f"scan threshold must be in (0, 1); got {self.threshold}")
        k = self.min_positive_slices
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"min_positive_slices must be an integer ≥ 1; got {k!r}")
        if self.single_slice_threshold is not None and not 0.0 < self.single_slice_threshold <= 1.0:
            raise InvalidInputError(
                f"single_slice_threshold must be in (0, 1]; got {self.single_slice_threshold}"
            )
        _fraction(self.single_slice_fraction, "single_slice_fraction", 0.0, 1.0, closed_high=True)
        # Ends of half the scan or more would leave no interior: a lone slice could never decide.
        _fraction(self.end_fraction, "end_fraction", 0.0, 0.5, closed_high=False)
        _fraction(self.end_area, "end_area", 0.0, 1.0, closed_high=False)
        if self.end_single_slice_fraction is not None:
            _fraction(self.end_single_slice_fraction, "end_single_slice_fraction", 0.0, 1.0, closed_high=True)

    @classmethod
    def from_dict(cls, raw: Any) -> ScanRule:
        """The rule a model records (``brain_ct_scan_rule``): :data:`RULE_FIELDS` (others ignored: they
        describe how the rule was chosen), relative to the slices' own threshold.

        Raises:
            InvalidInputError: ``raw`` is no JSON object, or a field is out of range.
        """
        if not isinstance(raw, dict):
            raise InvalidInputError(
                f"a scan rule must be a JSON object with some of {list(RULE_FIELDS)}; got {raw!r}"
            )
        return cls(**{k: raw[k] for k in RULE_FIELDS if k in raw})

    def to_dict(self) -> dict[str, Any]:
        """The :data:`RULE_FIELDS` of this rule (what ``brain_ct_scan_rule`` records)."""
        return {k: getattr(self, k) for k in RULE_FIELDS}

    def resolve(self, model_threshold: float) -> tuple[float, int, float]:
        """The (T, k, H) used with a model whose threshold is ``model_threshold``."""
        t = float(self.threshold if self.threshold is not None else model_threshold)
        h = self.single_slice_threshold
        h = float(h if h is not None else t + self.single_slice_fraction * (1 - t))
        return t, self.min_positive_slices, max(h, t)

    def end_single_slice_threshold(self, t: float) -> float | None:
        """``H_end`` for scan threshold ``t``: the P an end slice needs alone; None when it never counts alone."""
        f = self.end_single_slice_fraction
        return None if f is None else float(t + f * (1 - t))

    @property
    def has_ends(self) -> bool:
        """True when this rule treats end slices apart (:attr:`end_fraction` or :attr:`end_area` > 0)."""
        return self.end_fraction > 0 or self.end_area > 0

    def end_slices(self, n: int, areas: Sequence[float] | None = None) -> np.ndarray:
        """bool ``[n]``: the end slices of a scan of ``n`` slices (see the class docstring).

        Args:
            n: slices in the scan, ≥ 1.
            areas: head cross-section per slice (any unit, e.g. pixels or mm²), anatomical order; None
                to decide by position alone.
        """
        pos = (np.arange(n) + 0.5) / n
        end = (pos < self.end_fraction) | (pos > 1.0 - self.end_fraction)
        if self.end_area > 0 and areas is not None:
            a = np.asarray(areas, dtype=np.float64)
            if a.shape != (n,):
                raise InvalidInputError(f"got {a.size} head areas for {n} slices; need one per slice")
            if np.isfinite(a).all() and a.max() > 0:
                end |= a < self.end_area * a.max()
        return np.zeros(n, dtype=bool) if end.all() else end

    def apply(
        self, probabilities: Sequence[float], model_threshold: float, areas: Sequence[float] | None = None
    ) -> tuple[float, str, list[int]]:
        """Scan probability, label and positive slice indices for per-slice probabilities.

        Args:
            probabilities: P(hemorrhage) per slice, in anatomical order; at least one.
            model_threshold: the model's slice threshold (used when :attr:`threshold` is None).
            areas: head cross-section per slice (:func:`head_areas`), for :attr:`end_area`; None for none.
        """
        p = np.asarray(probabilities, dtype=np.float64)
        probability = self.scan_probability(p, model_threshold, areas)
        t = self.resolve(model_threshold)[0]
        label = "hemorrhage" if probability >= t else "normal"
        positive = [int(i) for i in np.flatnonzero(p >= t)]
        return probability, label, positive

    def scan_probability(
        self, probabilities: Sequence[float], model_threshold: float, areas: Sequence[float] | None = None
    ) -> float:
        """The scan-level statistic alone: max(``p_run``, ``p_single``), never above the top slice.

        The same statistic summarises each subtype over a scan (:class:`SubtypeScan`), with the same
        ``T``, ``k``, ``H`` and end slices, so a subtype's scan probability reads like the scan's P(hemorrhage).
        """
        p = np.asarray(probabilities, dtype=np.float64)
        if p.ndim != 1 or p.size == 0:
            raise InvalidInputError("a scan needs at least one slice probability")
        t, k, h = self.resolve(model_threshold)
        k = min(k, p.size)
        end = self.end_slices(p.size, areas)
        windows = np.lib.stride_tricks.sliding_window_view
        # A run of end slices alone is the skull base or the vertex scoring high again, not a bleed.
        runs = np.where(windows(end, k).all(axis=1), 0.0, windows(p, k).min(axis=1))
        evidence = [float(runs.max())]
        if not end.all():
            evidence.append(_lone_slice(float(p[~end].max()), h, t))
        h_end = self.end_single_slice_threshold(t)
        if end.any() and h_end is not None:
            evidence.append(_lone_slice(float(p[end].max()), max(h_end, t), t))
        return float(min(max(evidence), p.max()))

    def describe(self, model_threshold: float, n_slices: int) -> str:
        """The rule in words for people (the PDF report), with this scan's numbers; slices numbered from 1."""
        t, k, h = self.resolve(model_threshold)
        run = f"{min(k, n_slices)} neighbouring slices reach the threshold {t:.2f}"
        if not self.has_ends:
            return f"Scan rule: hemorrhage when {run}, or one slice reaches {h:.2f}."
        where = []
        if self.end_fraction > 0:
            where.append(f"the outer {self.end_fraction:.0%} of the slices at either end")
        if self.end_area > 0:
            where.append(f"slices whose head cross-section is under {self.end_area:.0%} of the largest")
        h_end = self.end_single_slice_threshold(t)
        alone = "" if h_end is None else f", and one end slice alone only from {max(h_end, t):.2f}"
        return (
            f"Scan rule: hemorrhage when {run}, or one slice away from the ends reaches {h:.2f}. End slices "
            f"({' or '.join(where)}: skull base, vertex, where normal heads score highest) count only in a "
            f"run with a slice away from the ends{alone}."
        )


def head_areas(slices: Sequence[CTImage]) -> np.ndarray:
    """float64 ``[n]``: each slice's head cross-section in pixels (the filled head outline,
    :func:`brain_ct.framing.head_mask`), times the pixel area in mm² where the slice's DICOM header
    gives (0028,0030) *Pixel Spacing*. What :attr:`ScanRule.end_area` compares within one scan."""
    out = []
    for ct in slices:
        spacing = ct.meta.get("PixelSpacing") if isinstance(ct.meta, dict) else None
        scale = float(spacing[0]) * float(spacing[1]) if spacing and len(spacing) == 2 else 1.0
        out.append(float(head_mask(ct).sum()) * scale)
    return np.asarray(out, dtype=np.float64)
