"""Tests of brain_ct.scan: the scan rule and predict_series over a whole series."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_series import FakePredictor, series_with_probs

from brain_ct.errors import InvalidInputError
from brain_ct.scan import RULE_FIELDS, ScanRule, predict_series, scan_result
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


# --------------------------------------------------------------------------- end slices (skull base, vertex)

ENDS = ScanRule(end_fraction=0.2)  # of 6 slices, 0 and 5 are end slices (positions 1/12 and 11/12)


@pytest.mark.parametrize(
    ("rule", "probs", "label"),
    [
        (ScanRule(), [0.1, 0.1, 0.1, 0.1, 0.1, 0.9], "hemorrhage"),  # today: the vertex alone decides
        (ENDS, [0.1, 0.1, 0.1, 0.1, 0.1, 0.9], "normal"),  # an end slice never decides alone
        (ENDS, [0.9, 0.1, 0.1, 0.1, 0.1, 0.1], "normal"),  # nor does the most inferior one
        (ENDS, [0.1, 0.1, 0.9, 0.1, 0.1, 0.1], "hemorrhage"),  # one convincing interior slice still does
        (ENDS, [0.1, 0.1, 0.1, 0.1, 0.55, 0.6], "hemorrhage"),  # an end slice beside an interior neighbour
        (ScanRule(end_fraction=0.34), [0.1, 0.1, 0.1, 0.1, 0.55, 0.6], "normal"),  # a run of end slices only
        (ScanRule(end_fraction=0.2, end_single_slice_fraction=0.9), [0.1] * 5 + [0.96], "hemorrhage"),
        (ScanRule(end_fraction=0.2, end_single_slice_fraction=0.9), [0.1] * 5 + [0.94], "normal"),
        (ScanRule(end_fraction=0.2, single_slice_fraction=0.8), [0.1, 0.85, 0.1, 0.1, 0.1, 0.1], "normal"),
        (
            ScanRule(end_fraction=0.2, single_slice_fraction=0.8),
            [0.1, 0.95, 0.1, 0.1, 0.1, 0.1],
            "hemorrhage",
        ),
    ],
)
def test_end_slices_need_a_neighbour(rule, probs, label):
    p, lab, pos = rule.apply(probs, 0.5)
    assert lab == label
    assert (p >= 0.5) == (label == "hemorrhage")  # the statistic and the label agree
    assert p <= max(probs) + 1e-12
    assert pos == [i for i, x in enumerate(probs) if x >= 0.5]


def test_end_slices_by_position_and_by_head_area():
    assert ENDS.end_slices(6).tolist() == [True, False, False, False, False, True]
    assert ScanRule().end_slices(6).tolist() == [False] * 6
    by_area = ScanRule(end_area=0.5)
    areas = [300.0, 900.0, 1000.0, 800.0, 450.0]  # skull base 30 %, vertex 45 % of the largest
    assert by_area.end_slices(5, areas).tolist() == [True, False, False, False, True]
    assert by_area.end_slices(5).tolist() == [False] * 5  # no areas: position alone (none here)
    # a vertex slice with a small cross-section, far from the scan's ends by position
    assert by_area.apply([0.1, 0.1, 0.1, 0.1, 0.9], 0.5, areas)[1] == "normal"
    assert by_area.apply([0.1, 0.1, 0.9, 0.1, 0.1], 0.5, areas)[1] == "hemorrhage"
    with pytest.raises(InvalidInputError, match="one per slice"):
        by_area.end_slices(5, areas[:4])


@pytest.mark.parametrize("n", [1, 2])
def test_a_scan_too_short_for_ends_reads_as_before(n):
    rule = ScanRule(end_fraction=0.45)  # would make every slice of 1 or 2 an end slice
    assert not rule.end_slices(n).any()
    probs = [0.9] + [0.1] * (n - 1)
    assert rule.apply(probs, 0.5) == ScanRule().apply(probs, 0.5)


def test_rule_record_round_trip_and_relative_bars():
    rule = ScanRule(
        single_slice_fraction=0.6, end_fraction=0.15, end_area=0.6, end_single_slice_fraction=0.95
    )
    record = {**rule.to_dict(), "description": "how it was chosen", "validation": {"n": 3}}
    assert ScanRule.from_dict(record) == rule
    assert set(rule.to_dict()) == set(RULE_FIELDS)
    # relative to the slices' own threshold: H = T + 0.6 (1 - T), H_end = T + 0.95 (1 - T)
    assert rule.resolve(0.3) == (0.3, 2, pytest.approx(0.72))
    assert rule.resolve(0.5) == (0.5, 2, pytest.approx(0.8))
    assert rule.end_single_slice_threshold(0.3) == pytest.approx(0.965)
    assert ScanRule().end_single_slice_threshold(0.3) is None


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ([0.1], "JSON object"),
        ({"end_fraction": 0.5}, r"end_fraction must be a number in \[0, 0.5\)"),
        ({"end_area": -0.1}, "end_area"),
        ({"single_slice_fraction": 1.2}, "single_slice_fraction"),
        ({"single_slice_fraction": "0.6"}, "single_slice_fraction"),
        ({"end_single_slice_fraction": 1.5}, "end_single_slice_fraction"),
        ({"min_positive_slices": 0}, "min_positive_slices"),
        ({"min_positive_slices": True}, "min_positive_slices"),
    ],
)
def test_bad_rule_records_are_refused(raw, match):
    with pytest.raises(InvalidInputError, match=match):
        ScanRule.from_dict(raw)


def test_describe_names_the_end_slices():
    assert ScanRule().describe(0.5, 10) == (
        "Scan rule: hemorrhage when 2 neighbouring slices reach the threshold 0.50, or one slice reaches 0.75."
    )
    text = ScanRule(end_fraction=0.15, end_area=0.6, end_single_slice_fraction=0.9).describe(0.5, 10)
    assert "one slice away from the ends reaches 0.75" in text
    assert "outer 15% of the slices at either end or slices whose head cross-section is under 60%" in text
    assert text.endswith("and one end slice alone only from 0.95.")
    assert "never" not in text and "alone only" not in ScanRule(end_area=0.5).describe(0.5, 10)


def test_head_areas_follow_the_head_and_the_pixel_spacing(make_ct_dataset, tmp_path):
    from conftest import draw_head_hu
    from helpers_series import slice_ds

    from brain_ct.scan import head_areas
    from brain_ct.series import read_series

    for i, scale in enumerate([0.9, 1.0, 0.5]):  # the last a vertex-like small cross-section
        ds = slice_ds(make_ct_dataset, draw_head_hu(96, scale=scale), uid="1.2.3", z=5.0 * i, instance=i + 1)
        ds.save_as(tmp_path / f"s{i}.dcm", enforce_file_format=True)
    series = read_series(str(tmp_path))
    areas = head_areas(series.slices)
    assert areas.shape == (3,)
    assert areas[1] > areas[0] > areas[2] > 0
    assert areas[2] / areas[1] < 0.4  # ~0.25 for half the head's size
    # 0.5 mm pixels (make_ct_dataset's PixelSpacing): mm² = pixels / 4
    from brain_ct.framing import head_mask

    assert areas[1] == pytest.approx(head_mask(series.slices[1]).sum() * 0.25)
    result = scan_result(
        series,
        FakePredictor(
            {ct.name: p for ct, p in zip(series.slices, [0.1, 0.1, 0.9], strict=True)}
        ).predict_batch(series.slices),
        rule=ScanRule(end_area=0.5),
    )
    assert result.label == "normal" and result.positive_slices == [2]
    assert result.head_areas is not None and result.head_areas.tolist() == areas.tolist()


def test_predict_series_reads_by_the_models_recorded_rule(make_ct_dataset, tmp_path):
    s, by_name, _ = series_with_probs(make_ct_dataset, tmp_path, [0.1, 0.1, 0.1, 0.1, 0.1, 0.9])
    fake = FakePredictor(by_name)
    assert predict_series(fake, s).label == "hemorrhage"  # no recorded rule: today's
    fake.settings.scan_rule = ENDS
    result = predict_series(fake, s)
    assert result.label == "normal" and result.rule == ENDS
    assert predict_series(fake, s, rule=ScanRule()).label == "hemorrhage"  # an explicit rule wins
    fake.settings.is_ensemble = True  # an ensemble never reads by its first member's rule
    assert predict_series(fake, s).rule == ScanRule()
