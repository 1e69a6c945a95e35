"""train.calibrate: temperature fit and folding, and the ``python -m train.calibrate`` command on a tiny
model (ECE and reliability bins by hand: test_metrics.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_models import make_tiny_model
from helpers_train import write_tiny_folder

from brain_ct.errors import InvalidInputError
from brain_ct.model import ModelSettings, build_random_model, load_model
from train.calibrate import (
    apply_temperature,
    calibrate_and_choose,
    expected_calibration_error,
    fit_temperature,
    fold_temperature,
    main,
)
from train.card import replace_section, section_body, threshold_text
from train.data.records import merge_records
from train.evaluate import Scored


def test_fit_temperature_recovers_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, 20000)
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(np.int64)  # truth: P = sigmoid(z)
    overconfident = 1 / (1 + np.exp(-3.0 * z))  # the model reports sigmoid(3 z)
    fit = fit_temperature(y, overconfident)
    assert fit.kept and fit.temperature == pytest.approx(3.0, rel=0.05)
    assert fit.nll_after < fit.nll_before
    assert expected_calibration_error(y, apply_temperature(overconfident, fit.temperature)) < 0.02
    assert expected_calibration_error(y, overconfident) > 0.05


def test_fit_temperature_not_kept_when_already_calibrated_or_one_class() -> None:
    # scores equal to the empirical frequency per group: T = 1 is optimal, nothing to gain
    y = np.array([1, 0, 0, 0] * 50 + [1, 1, 1, 0] * 50)
    s = np.array([0.25] * 200 + [0.75] * 200)
    fit = fit_temperature(y, s)
    assert not fit.kept and fit.temperature == pytest.approx(1.0, abs=1e-3) and fit.reason
    one = fit_temperature([1, 1, 1], [0.6, 0.7, 0.8])
    assert not one.kept and "one class" in one.reason
    # ranked the wrong way round: the NLL falls all the way to the edge of the range (T → ∞), not kept
    wrong = fit_temperature([0, 1] * 20, [0.9, 0.1] * 20)
    assert not wrong.kept and "edge of the search range" in wrong.reason


def test_folded_model_gives_softmax_of_logits_over_t() -> None:
    settings = ModelSettings(windows=((40, 80), (80, 200), (600, 2800)), image_size=32, threshold=0.5)
    model = build_random_model(settings, seed=3)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(pixel_values=x).logits
        fold_temperature(model, 2.5)
        after = model(pixel_values=x).logits
    torch.testing.assert_close(after.softmax(-1), (before / 2.5).softmax(-1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(after.softmax(-1), before.softmax(-1))
    with pytest.raises(InvalidInputError, match="temperature"):
        fold_temperature(model, 0.0)


def test_calibrate_and_choose_folds_and_thresholds_on_calibrated_scores() -> None:
    settings = ModelSettings(windows=((40, 80), (80, 200), (600, 2800)), image_size=32, threshold=0.5)
    model = build_random_model(settings, seed=3)
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 2.0, 400)
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(np.int64)
    s = 1 / (1 + np.exp(-4.0 * z))
    kinds = np.arange(400) % 2
    domains = np.where(np.arange(400) < 200, 1, 0)  # half real, half phantom
    weight = model.classifier[-1].weight.clone()
    cal = calibrate_and_choose(model, Scored(y, s, kinds, domains), prior_temperature=2.0, max_real_fpr=0.1)
    t = cal.report["temperature"]["temperature"]
    assert cal.report["temperature"]["kept"] and t == pytest.approx(4.0, rel=0.2)
    assert cal.temperature == pytest.approx(2.0 * t)  # temperatures multiply
    torch.testing.assert_close(model.classifier[-1].weight, weight / t)
    np.testing.assert_allclose(cal.validation.scores, apply_temperature(s, t))
    assert cal.rule["strategy"] == "real_fpr"
    real_neg = (y == 0) & (domains == 1)
    assert (cal.validation.scores[real_neg] >= cal.threshold).mean() <= 0.1
    assert cal.report["validation"]["ece"] < cal.report["validation_before"]["ece"]
    assert set(cal.report["validation"]["by_domain"]) == {"phantom", "real"}


def test_merge_records_fills_missing_columns() -> None:
    a = {"path": ["a.png"], "label": [0], "synthetic_seed": [-1]}
    b = {"path": [""], "label": [1], "synthetic_seed": [7], "kind": ["dicom"], "neighbors": [["x"]]}
    m = merge_records(a, b)
    assert m == {
        "path": ["a.png", ""],
        "label": [0, 1],
        "synthetic_seed": [-1, 7],
        "kind": ["", "dicom"],
        "neighbors": [[], ["x"]],
    }


def test_card_sections_are_replaced_or_inserted() -> None:
    card = "# m\n\n## Decision threshold\n\nstale\n\n## Evaluation\n\ntable\n\n## Model and training\n\n- x\n"
    new = replace_section(card, "Decision threshold", "new text")
    assert "stale" not in new and section_body(new, "Decision threshold") == "new text"
    new = replace_section(new, "Calibration", "ece", before="Model and training")
    assert new.index("## Evaluation") < new.index("## Calibration") < new.index("## Model and training")
    assert section_body(new, "Evaluation") == "table"
    text = threshold_text(
        0.25, {"strategy": "sensitivity", "requested": "auto", "fallback": "no real", "description": "d"}
    )
    assert "0.2500" in text and "Fallback" in text and "brain_ct_threshold_rule" in text


@pytest.mark.slow
def test_calibrate_cli_writes_an_updated_model_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = make_tiny_model(tmp_path / "m", image_size=64, threshold=0.3)
    (model_dir / "README.md").write_text(
        "# m\n\n## Decision threshold\n\nold rule\n\n## Evaluation\n\nold table\n\n"
        "## Model and training\n\n- x\n\n## Reproduce\n\n```bash\npython -m train ...\n```\n\n## How to use\n\n...\n"
    )
    (model_dir / "eval_results.json").write_text(json.dumps({"threshold": 0.3, "test": {"n": 1}}))
    val = write_tiny_folder(tmp_path / "val", n=12, size=96, seed=2)
    test = write_tiny_folder(tmp_path / "test", n=6, size=96, seed=3)
    out = tmp_path / "calibrated"
    argv = [
        "--model", str(model_dir), "--validation_dir", str(val), "--synthetic_validation", "4",
        "--synthetic_size", "96", "--test_dir", str(test), "--max_real_fpr", "0.2", "--output_dir", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "eval_results.json").read_text())
    config = json.loads((out / "config.json").read_text())
    rule = results["threshold_rule"]
    # 6 real normals from the folder (files are real anatomy), 2 phantom normals not counted
    assert rule["strategy"] == "real_fpr" and rule["n_real_negatives"] == 6 and rule["n_validation"] == 16
    assert rule["real_false_positives"] <= 1
    assert config["brain_ct_threshold_rule"] == rule
    assert config["brain_ct_threshold"] == pytest.approx(results["threshold"])
    temp = results["calibration"]["temperature"]
    assert config["brain_ct_temperature"] == pytest.approx(temp["temperature"] if temp["kept"] else 1.0)
    assert set(results["calibration"]["validation"]["by_domain"]) == {"phantom", "real"}
    assert results["test"]["n"] == 6 and "ece" in results["calibration"]["test"]
    assert results["before_calibration"]["threshold"] == 0.3
    for name in (
        "reliability_validation.png",
        "reliability_test.png",
        "roc_validation.png",
        "model.safetensors",
    ):
        assert (out / name).stat().st_size > 1000, name
    card = (out / "README.md").read_text()
    assert "old rule" not in card and "real normal validation slices" in card
    assert "## Calibration" in card and "reliability_validation.png" in card
    assert "10 equal-width bins of P(hemorrhage) on [0, 1]" in card
    assert "python -m train.calibrate" in section_body(card, "Reproduce")
    # the written folder loads, with the folded weights: its validation scores are the calibrated ones
    model, settings = load_model(out)
    assert settings.threshold_rule == rule and settings.threshold == pytest.approx(results["threshold"])
    if temp["kept"]:
        original, _ = load_model(model_dir)
        w0, w1 = original.classifier[-1].weight, model.classifier[-1].weight
        torch.testing.assert_close(w1, w0 / temp["temperature"])
    assert "threshold" in capsys.readouterr().out


def test_calibrate_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = make_tiny_model(tmp_path / "m")
    assert main(["--model", str(model_dir), "--output_dir", str(tmp_path / "o")]) == 1
    assert "--validation_dir" in capsys.readouterr().err
    args = ["--model", str(model_dir), "--output_dir", str(tmp_path / "o"), "--synthetic_validation", "2"]
    assert main([*args, "--max_real_fpr", "1.5"]) == 1
    assert "--max_real_fpr" in capsys.readouterr().err
    assert main([*args, "--real_anatomy_eval_variants", "0"]) == 1
    assert "--real_anatomy_eval_variants must be ≥ 1" in capsys.readouterr().err


@pytest.mark.slow
def test_calibrate_cli_slice_context_model(tmp_path: Path) -> None:
    from helpers_train import write_dicom_series_folder

    model_dir = make_tiny_model(tmp_path / "m", image_size=64, windows=((40, 80),), context_slices=1)
    write_dicom_series_folder(tmp_path / "val", n_series=3, n_slices=5, size=96)
    out = tmp_path / "o"
    assert (
        main(["--model", str(model_dir), "--validation_dir", str(tmp_path / "val"), "--output_dir", str(out)])
        == 0
    )
    results = json.loads((out / "eval_results.json").read_text())
    assert results["validation"]["n"] == 15 and results["threshold_rule"]["n_real_negatives"] == 12
    _, settings = load_model(out)
    assert settings.context_slices == 1
