"""Tests of train.scan_rule: choosing a model's scan rule on validation scans, and its command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brain_ct.errors import InvalidInputError, ModelLoadError
from brain_ct.scan import ScanRule
from train.scan_rule import ScanScores, candidate_rules, choose_rule, main, scan_metrics

AREAS = np.array([18.0, 19, 20, 20, 20, 20, 19, 18, 16, 13, 10, 6])  # a head's cross-section, base → vertex


def scan(probs: list[float], label: int, domain: str = "phantom", name: str = "scan") -> ScanScores:
    p = np.asarray(probs, dtype=np.float64)
    return ScanScores(name, label, domain, p, AREAS[: p.size].copy(), 0.3)


def quiet(n: int = 12) -> list[float]:
    return [0.1] * n


def validation_scans() -> list[ScanScores]:
    """Normal scans whose vertex (or skull base) slice alone scores high, bleeds over neighbouring interior
    slices, one bleed shown by one convincing interior slice, and a real normal scan."""
    normals = []
    for i in range(6):
        p = quiet()
        p[-1 if i % 2 else 0] = 0.8 + 0.01 * i  # 0.80 … 0.85, over today's H = 0.65
        normals.append(scan(p, 0))
    bleeds = []
    for i in range(5):
        p = quiet()
        p[3 + i % 4], p[4 + i % 4] = 0.6, 0.5
        bleeds.append(scan(p, 1))
    lone = quiet()
    lone[5] = 0.95
    return [*normals, *bleeds, scan(lone, 1), scan(quiet(7), 0, "real")]


def test_todays_rule_calls_every_normal_scan_with_a_high_end_slice():
    m = scan_metrics(ScanRule(), validation_scans())
    assert m["phantom_false_positives"] == 6 and m["n_phantom_normal"] == 6
    assert m["real_false_positives"] == 0 and m["n_real_normal"] == 1
    assert m["sensitivity"] == 1.0 and m["confusion_matrix"] == [[1, 6], [0, 6]]


def test_the_chosen_rule_keeps_every_bleed_and_quiets_the_ends():
    scans = validation_scans()
    rule, m = choose_rule(scans, max_scan_fpr=0.0)
    assert rule.has_ends
    assert m["sensitivity"] == 1.0 and m["specificity"] == 1.0
    assert m["phantom_false_positives"] == 0
    lone = scans[-2]
    assert lone.read(rule)[1] == "hemorrhage"  # a single convincing slice still makes a scan positive
    assert rule.single_slice_fraction < 1.0
    # ties go to the strictest: the highest single-slice bar that still keeps the lone bleed (0.95)
    assert rule.resolve(0.3)[2] <= 0.95 < 0.3 + (rule.single_slice_fraction + 0.1) * 0.7


def test_the_bound_holds_per_domain_and_sensitivity_decides_within_it():
    scans = validation_scans()
    # A real normal scan that only the highest lone-slice bar (0.3 + 0.9 × 0.7 = 0.93) keeps normal: the
    # chosen rule must give up the lone-slice bleed at 0.9, which a bar of 0.86 (0.8) would have caught.
    real, lone = quiet(7), quiet()
    real[3], lone[5] = 0.92, 0.9
    scans[-1], scans[-2] = scan(real, 0, "real"), scan(lone, 1)
    assert choose_rule([*scans[:-1], scan(quiet(7), 0, "real")], 0.2)[1]["sensitivity"] == 1.0
    rule, m = choose_rule(scans, max_scan_fpr=0.2)
    assert m["real_false_positives"] == 0
    assert m["phantom_false_positives"] <= 1  # 0.2 × 6
    assert scans[-2].read(rule)[1] == "normal" and m["sensitivity"] == pytest.approx(5 / 6)


def test_candidates_include_todays_rule_and_keep_a_lone_slice_able_to_decide():
    rules = candidate_rules()
    assert ScanRule() in rules
    assert len(rules) == len(set(rules))
    assert all(r.single_slice_fraction < 1.0 for r in rules)


@pytest.mark.parametrize(
    ("scans", "bound", "match"),
    [
        ([scan(quiet(), 0)], 0.05, "bleed and normal scans"),
        ([scan(quiet(), 0), scan([0.9] * 12, 1)], 1.0, "max_scan_fpr"),
        # The one normal scan is called by every rule: the refusal says the lowest rate reachable (1 of 1).
        (
            [scan([0.9] * 12, 0), scan([0.9] * 12, 1)],
            0.05,
            r"no candidate.*strictest candidate reaches 1\.000",
        ),
    ],
)
def test_choose_rule_refuses_what_it_cannot_choose_on(scans, bound, match):
    with pytest.raises(InvalidInputError, match=match):
        choose_rule(scans, bound)


@pytest.mark.slow
def test_command_chooses_writes_and_the_model_reads_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from helpers_models import make_tiny_model

    from brain_ct.predictor import Predictor

    # A threshold no random slice reaches keeps the normal scans normal whatever the weights say.
    model = make_tiny_model(tmp_path / "m", threshold=0.99)
    before = json.loads((model / "config.json").read_text())
    out = tmp_path / "out" / "scan_rule.json"
    args = ["--model", str(model), "--series", "2", "--slices", "6", "--size", "128", "--seed", "5"]
    assert main([*args, "--real_anatomy_dir", "", "--max_scan_fpr", "0.5", "--output", str(out)]) == 0
    assert "brain_ct_scan_rule" not in json.loads((model / "config.json").read_text())  # only with --write
    printed = capsys.readouterr().out
    assert "default rule" in printed and "chosen rule" in printed and "scan sensitivity" in printed
    results = json.loads(out.read_text())
    assert [s["label"] for s in results["scans"]] == [1, 0]
    assert results["chosen_rule"]["validation"]["n"] == 2

    assert main([*args, "--real_anatomy_dir", "", "--max_scan_fpr", "0.5", "--write"]) == 0
    config = json.loads((model / "config.json").read_text())
    record = config.pop("brain_ct_scan_rule")
    assert config == before  # nothing else changed
    assert record["validation"]["seeds"] == [5] and "description" in record
    predictor = Predictor.from_pretrained(str(model))
    assert predictor.settings.scan_rule == ScanRule.from_dict(record)

    record["end_fraction"] = 0.7
    (model / "config.json").write_text(json.dumps({**config, "brain_ct_scan_rule": record}))
    with pytest.raises(ModelLoadError, match="brain_ct_scan_rule: scan rule end_fraction"):
        Predictor.from_pretrained(str(model))


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--write", "--evaluate_only"], 2, "drop --evaluate_only"),
        (["--real_anatomy_dir", "no/such/dir"], 1, "is not a folder"),
        (["--series", "0"], 1, "--series must be ≥ 1"),
    ],
)
def test_command_errors_are_clear(tmp_path, capsys, extra, code, message):
    from helpers_models import make_tiny_model

    model = make_tiny_model(tmp_path / "m")
    assert main(["--model", str(model), "--series", "1", "--slices", "2", "--size", "64", *extra]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_real_levels_are_read_as_one_sparse_normal_scan(make_ct_dataset, tmp_path):
    from helpers_models import make_tiny_model
    from helpers_series import head_series

    from brain_ct.predictor import Predictor
    from train.scan_rule import real_scans

    for i, (_, ds) in enumerate(head_series(make_ct_dataset, 6)):
        ds.save_as(tmp_path / f"{i:02d}.dcm", enforce_file_format=True)
    predictor = Predictor.from_pretrained(str(make_tiny_model(tmp_path / "m")))
    held, whole = real_scans(predictor, tmp_path)
    assert (held.label, held.domain, whole.domain) == (0, "real", "real")
    assert held.probabilities.size == 3  # holdout_levels(6, 7): one level of each half-bin, at most half
    assert whole.probabilities.size == 6
    assert held.threshold == whole.threshold == 0.5
    assert np.all(held.areas > 0)


@pytest.mark.slow
def test_the_demos_rule_reads_the_documented_normal_phantom_scan_normal(tmp_path):
    """``synth --series 4 --slices 24 --seed 3``'s scan 2 (normal) was called "hemorrhage" by its most
    inferior slice alone under the earlier rule; the demo's recorded rule reads it "normal"."""
    from brain_ct.model import DEMO_MODEL_DIR
    from brain_ct.predictor import Predictor
    from brain_ct.scan import predict_series, scan_result
    from brain_ct.series import read_series
    from brain_ct.synthetic import generate_series, to_dicom

    # Head 2 of write_scans(seed=3) alone, as it writes it (its seed, no bleed, 24 slices of 256 px).
    head_seed = int(np.random.SeedSequence(3).generate_state(2, dtype=np.uint32)[1])
    for i, phantom in enumerate(generate_series(head_seed, n_slices=24, size=256, hemorrhage=False)):
        to_dicom(phantom, instance_number=i + 1).save_as(
            tmp_path / f"IM{i + 1:04d}.dcm", enforce_file_format=True
        )
    series = read_series(str(tmp_path))
    predictor = Predictor.from_pretrained(str(DEMO_MODEL_DIR))
    assert predictor.settings.scan_rule is not None and predictor.settings.scan_rule.has_ends
    result = predict_series(predictor, series)
    assert result.label == "normal"
    assert 0 in result.positive_slices  # the skull-base slice still reaches the slice threshold ...
    earlier = scan_result(series, result.predictions, rule=ScanRule())
    assert earlier.label == "hemorrhage"  # ... which alone decided the scan before
