"""Tests of brain_ct.scan: the scan rule and predict_series over a whole series."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_series import FakePredictor, series_with_probs

from brain_ct.errors import InvalidInputError
from brain_ct.scan import ScanRule, predict_series, scan_result
from brain_ct.series import context_neighbors

# --------------------------------------------------------------------------- scan rule


@pytest.mark.parametrize(
    ("probs", "label", "probability", "positive"),
    [
        ([0.1, 0.2, 0.1, 0.05], "normal", 0.2 * 0.5 / 0.75, []),  # lone max mapped: 0.2 × T/H
        ([0.1, 0.6, 0.1, 0.1], "normal", 0.4, [1]),  # one slice over T but under H: not enough
        ([0.1, 0.6, 0.55, 0.1], "hemorrhage", 0.55, [1, 2]),  # two neighbours ≥ T
        ([0.6, 0.1, 0.55, 0.1], "normal", 0.4, [0, 2]),  # two positives, not neighbours
        ([0.1, 0.9, 0.1, 0.1], "hemorrhage", 0.8, [1]),  # one confident slice ≥ H = 0.75
        ([0.7], "hemorrhage", 0.7, [0]),  # a series of one is its slice
        ([0.3], "normal", 0.3, []),
    ],
)
def test_scan_rule_table(probs, label, probability, positive):
    p, lab, pos = ScanRule().apply(probs, 0.5)
    assert lab == label
    assert p == pytest.approx(probability)
    assert pos == positive
    assert (p >= 0.5) == (lab == "hemorrhage")
    assert p <= max(probs) + 1e-12


def test_scan_rule_parameters():
    assert ScanRule().resolve(0.4) == (0.4, 2, pytest.approx(0.7))
    rule = ScanRule(threshold=0.3, min_positive_slices=3, single_slice_threshold=0.95)
    assert rule.apply([0.35, 0.4, 0.32, 0.0], 0.5)[1] == "hemorrhage"
    assert rule.apply([0.35, 0.4, 0.0, 0.32], 0.5)[1] == "normal"
    assert rule.apply([0.0, 0.96, 0.0, 0.0], 0.5)[1] == "hemorrhage"
    assert ScanRule(min_positive_slices=1).apply([0.1, 0.51, 0.1], 0.5)[1] == "hemorrhage"
    for bad in (dict(threshold=1.5), dict(min_positive_slices=0), dict(single_slice_threshold=0.0)):
        with pytest.raises(InvalidInputError):
            ScanRule(**bad)


def test_one_bleeding_slice_is_positive_and_named(make_ct_dataset, tmp_path):
    probs = [0.02, 0.05, 0.03, 0.97, 0.04, 0.02]
    s, by_name, names = series_with_probs(make_ct_dataset, tmp_path, probs)
    fake = FakePredictor(by_name)
    result = predict_series(fake, s, batch_size=4, tta=True)
    assert fake.calls == [dict(n=6, batch_size=4, tta=True, neighbors=None)]
    assert result.label == "hemorrhage"
    assert result.positive_slices == [3]
    assert result.most_suspicious == 3
    d = result.to_dict()
    json.dumps(d)  # JSON-safe (the region score was a numpy float)
    assert d["file"] == "scan.zip"  # the name, never the folder
    assert d["slices"][3]["file"] == names[3]
    assert [x["index"] for x in d["slices"]] == list(range(6))
    assert d["n_slices"] == 6 and d["positive_slices"] == [3]
    assert d["slices"][3]["regions"][0]["region"] == "frontal"
    assert set(d["slices"][0]) == {
        "file",
        "index",
        "label",
        "probability",
        "threshold",
        "regions",
        "explanation",
    }


def test_normal_series_is_negative(make_ct_dataset, tmp_path):
    s, by_name, _ = series_with_probs(make_ct_dataset, tmp_path, [0.02, 0.3, 0.45, 0.1])
    result = predict_series(FakePredictor(by_name), s)
    assert result.label == "normal"
    assert result.positive_slices == []
    assert result.probability < result.threshold


def test_single_borderline_slice_is_not_enough(make_ct_dataset, tmp_path):
    s, by_name, _ = series_with_probs(make_ct_dataset, tmp_path, [0.02, 0.6, 0.1, 0.1])
    result = predict_series(FakePredictor(by_name), s)
    assert result.label == "normal" and result.positive_slices == [1]
    relaxed = predict_series(FakePredictor(by_name), s, rule=ScanRule(min_positive_slices=1))
    assert relaxed.label == "hemorrhage"


def test_context_models_get_anatomical_neighbours(make_ct_dataset, tmp_path):
    s, by_name, names = series_with_probs(make_ct_dataset, tmp_path, [0.1, 0.2, 0.3, 0.4])
    fake = FakePredictor(by_name, context_slices=1)
    predict_series(fake, s)
    nbs = fake.calls[0]["neighbors"]
    assert [[None if c is None else c.name for c in nb] for nb in nbs] == [
        [None, names[1]],
        [names[0], names[2]],
        [names[1], names[3]],
        [names[2], None],
    ]
    assert [len(nb) for nb in context_neighbors(s.slices, 2)] == [4] * 4


def test_scan_result_needs_one_prediction_per_slice(make_ct_dataset, tmp_path):
    s, by_name, _ = series_with_probs(make_ct_dataset, tmp_path, [0.1, 0.2])
    preds = FakePredictor(by_name).predict_batch(s.slices)
    with pytest.raises(InvalidInputError, match="one per slice"):
        scan_result(s, preds[:1])


@pytest.mark.slow
def test_predict_series_with_a_tiny_real_model(make_ct_dataset, tmp_path):
    from helpers_models import make_tiny_model

    from brain_ct.predictor import Predictor

    predictor = Predictor.from_pretrained(make_tiny_model(tmp_path / "m"))
    s, _, _ = series_with_probs(make_ct_dataset, tmp_path, [0.0] * 4)
    result = predict_series(predictor, s, batch_size=3)
    assert result.n_slices == 4
    probs = result.probabilities
    assert np.all((probs >= 0) & (probs <= 1))
    assert result.most_suspicious == int(np.argmax(probs))
    assert result.predictions[0].heatmap.shape == s.slices[0].display.shape
    assert json.loads(json.dumps(result.to_dict()))["n_slices"] == 4

    ctx = Predictor.from_pretrained(make_tiny_model(tmp_path / "ctx", context_slices=1))
    assert predict_series(ctx, s).n_slices == 4
