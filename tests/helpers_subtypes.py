"""Scan readings of a subtype model with chosen numbers: the fake predictor's slices given subtype
probabilities (and ensemble members), combined by the real scan rule (tests of scan and report)."""

from __future__ import annotations

from dataclasses import replace

from helpers_series import FakePredictor, series_with_probs

from brain_ct.labels import SUBTYPES
from brain_ct.scan import SeriesPrediction, scan_result

#: A 6-slice bleed: P(any) per slice, and the five subtypes per slice (SUBTYPES order). Subdural leads on
#: slices 3–4 (0-based 2, 3), epidural on slice 5 (0-based 4); slices 1, 2 and 6 show nothing.
ANY_PROBS = [0.02, 0.05, 0.9, 0.95, 0.85, 0.03]
SUBTYPE_PROBS = [
    # epidural, intraparenchymal, intraventricular, subarachnoid, subdural
    [0.01, 0.01, 0.01, 0.01, 0.01],
    [0.01, 0.02, 0.01, 0.05, 0.02],
    [0.10, 0.05, 0.02, 0.15, 0.80],
    [0.20, 0.04, 0.02, 0.12, 0.85],
    [0.70, 0.03, 0.01, 0.08, 0.30],
    [0.02, 0.01, 0.01, 0.02, 0.01],
]


def subtype_scan_result(
    make_ct_dataset,
    tmp_path,
    any_probs: list[float] = ANY_PROBS,
    subtype_probs: list[list[float]] = SUBTYPE_PROBS,
    members: list[list[tuple[float, float]]] | None = None,
) -> SeriesPrediction:
    """A scan whose slices carry ``subtype_probs`` (and, per slice, ensemble ``members`` as
    (probability, threshold) pairs), read by :func:`brain_ct.scan.scan_result`."""
    series, by_name, _ = series_with_probs(make_ct_dataset, tmp_path, any_probs)
    predictions = FakePredictor(by_name).predict_batch(series.slices)
    changed = []
    for i, pred in enumerate(predictions):
        extra = {}
        if members is not None:
            extra["members"] = tuple(
                {"model": f"m{j}", "probability": p, "threshold": t} for j, (p, t) in enumerate(members[i])
            )
        subtypes = dict(zip(SUBTYPES, subtype_probs[i], strict=True))
        changed.append(replace(pred, subtypes=subtypes, heatmap_target="any", **extra))
    return scan_result(series, changed)
