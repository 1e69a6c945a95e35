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


# --------------------------------------------------------------------------- subtypes


def test_subtype_summary_uses_the_scan_rule_per_subtype(make_ct_dataset, tmp_path):
    from helpers_subtypes import SUBTYPE_PROBS, subtype_scan_result

    from brain_ct.labels import SUBTYPES

    result = subtype_scan_result(make_ct_dataset, tmp_path)
    assert list(result.subtypes) == list(SUBTYPES)
    # subdural [.01 .02 .80 .85 .30 .01]: two neighbours hold 0.80; the lone top maps 0.85 → 0.70.
    assert result.subtypes["subdural"].probability == pytest.approx(0.80)
    # epidural [.01 .01 .10 .20 .70 .02]: neighbours hold 0.20; the lone top 0.70 → 0.70 × 0.5 / 0.75.
    assert result.subtypes["epidural"].probability == pytest.approx(0.70 * 0.5 / 0.75)
    for j, name in enumerate(SUBTYPES):
        column = [row[j] for row in SUBTYPE_PROBS]
        assert result.subtypes[name].probability == pytest.approx(ScanRule().scan_probability(column, 0.5))
    # Where each subtype leads at or above the shown cut (0-based); slices 0, 1 and 5 show nothing.
    assert {n: s.slices for n, s in result.subtypes.items()} == {
        "epidural": (4,),
        "intraparenchymal": (),
        "intraventricular": (),
        "subarachnoid": (),
        "subdural": (2, 3),
    }
    assert (
        result.subtype_explanation == "Most consistent with a subdural hemorrhage (scan p 0.80; slices 3–4)."
    )
    d = json.loads(json.dumps(result.to_dict()))
    assert d["subtypes"]["subdural"] == {"probability": pytest.approx(0.80), "slices": [2, 3]}
    assert d["subtype_explanation"] == result.subtype_explanation
    assert d["slices"][3]["subtypes"]["subdural"] == 0.85 and d["slices"][3]["heatmap_target"] == "any"
    assert "members" not in d["slices"][3]


def test_binary_scan_has_no_subtype_keys(make_ct_dataset, tmp_path):
    s, by_name, _ = series_with_probs(make_ct_dataset, tmp_path, [0.1, 0.9, 0.8])
    result = predict_series(FakePredictor(by_name), s)
    d = result.to_dict()
    assert result.subtypes is None and result.subtype_explanation == "" and result.member_agreement is None
    assert not {"subtypes", "subtype_explanation"} & set(d)


def _summary(**probs: float):
    from brain_ct.labels import SUBTYPES
    from brain_ct.scan import SubtypeScan

    return {n: SubtypeScan(probs.get(n, 0.05), (11, 12, 13, 14) if n in probs else ()) for n in SUBTYPES}


@pytest.mark.parametrize(
    ("label", "probs", "expected"),
    [
        (
            "hemorrhage",
            dict(subdural=0.81),
            "Most consistent with a subdural hemorrhage (scan p 0.81; slices 12–15).",
        ),
        (
            "hemorrhage",
            dict(epidural=0.7, subarachnoid=0.6),
            "Most consistent with an epidural hemorrhage (scan p 0.70; slices 12–15), then a subarachnoid "
            "hemorrhage (scan p 0.60; slices 12–15).",
        ),
        (
            "hemorrhage",
            dict(intraventricular=0.3),
            "No hemorrhage subtype stands out over the scan (the highest is intraventricular, scan p 0.30).",
        ),
        (
            "normal",
            dict(intraparenchymal=0.55),
            "The model's intraparenchymal output is notably high over the scan (scan p 0.55; slices 12–15); "
            "with the scan's P(hemorrhage) below the threshold this is not a finding.",
        ),
        ("normal", dict(subdural=0.3), ""),
    ],
)
def test_describe_scan_subtypes(label, probs, expected):
    from brain_ct.scan import describe_scan_subtypes

    assert describe_scan_subtypes(label, _summary(**probs)) == expected
    assert describe_scan_subtypes(label, None) == ""


def test_mixed_subtype_and_binary_slices_are_refused(make_ct_dataset, tmp_path):
    from dataclasses import replace

    from brain_ct.labels import SUBTYPES

    s, by_name, _ = series_with_probs(make_ct_dataset, tmp_path, [0.1, 0.2])
    preds = FakePredictor(by_name).predict_batch(s.slices)
    preds[0] = replace(preds[0], subtypes=dict.fromkeys(SUBTYPES, 0.1))
    with pytest.raises(InvalidInputError, match="one model"):
        scan_result(s, preds)


def test_ensemble_agreement_reads_each_member_by_the_rule(make_ct_dataset, tmp_path):
    from helpers_subtypes import subtype_scan_result

    # Member 0 (threshold 0.5) has two neighbouring positive slices; member 1 (threshold 0.6) one borderline.
    members = (
        [[(0.1, 0.5), (0.1, 0.6)]] * 2
        + [[(0.9, 0.5), (0.65, 0.6)], [(0.8, 0.5), (0.2, 0.6)]]
        + [[(0.1, 0.5), (0.1, 0.6)]] * 2
    )
    result = subtype_scan_result(make_ct_dataset, tmp_path, members=members)
    assert result.member_agreement == (1, 2)
    assert result.to_dict()["slices"][2]["members"][1] == {
        "model": "m1",
        "probability": 0.65,
        "threshold": 0.6,
    }


def test_predict_series_passes_the_heatmap_target(make_ct_dataset, tmp_path):
    from helpers_models import make_tiny_model

    from brain_ct.labels import SUBTYPE_LABELS, SUBTYPES
    from brain_ct.predictor import Predictor

    predictor = Predictor.from_pretrained(make_tiny_model(tmp_path / "m", labels=SUBTYPE_LABELS, seed=3))
    s, _, _ = series_with_probs(make_ct_dataset, tmp_path, [0.0] * 6)
    result = predict_series(predictor, s, heatmap_target="subdural")
    assert {p.heatmap_target for p in result.predictions} == {"subdural"}
    assert list(result.subtypes) == list(SUBTYPES)
    for name in SUBTYPES:
        column = [p.subtypes[name] for p in result.predictions]
        summary = result.subtypes[name]
        assert summary.probability == pytest.approx(ScanRule().scan_probability(column, predictor.threshold))
        assert 0.0 <= summary.probability <= max(column) + 1e-12
        for i in summary.slices:  # listed only where this subtype leads
            assert max(result.predictions[i].subtypes.values()) == column[i]
