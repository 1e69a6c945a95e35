"""train.evaluate: metrics and threshold rules worked out by hand, and the ``python -m train.evaluate`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_models import make_tiny_model
from helpers_train import write_tiny_folder

from brain_ct.errors import InvalidInputError
from train.evaluate import (
    binary_metrics,
    choose_threshold,
    clamp_threshold,
    json_ready,
    main,
    metrics_by_kind,
    softmax_scores,
)

LABELS = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.65, 0.5, 0.3, 0.1, 0.05])


def test_binary_metrics_by_hand() -> None:
    m = binary_metrics(LABELS, SCORES, 0.55)
    # called positive: 0.9 0.8 0.7 0.6 (TP=4) and 0.65 (FP=1); FN=1 (0.2); TN=4
    assert m["confusion_matrix"] == [[4, 1], [1, 4]]
    assert m["sensitivity"] == pytest.approx(0.8)
    assert m["specificity"] == pytest.approx(0.8)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["f1"] == pytest.approx(0.8)
    # AUC: of 25 (pos, neg) pairs the positive wins all but 0.6<0.65, 0.2<0.65, 0.2<0.5, 0.2<0.3 → 21/25
    assert m["auc"] == pytest.approx(21 / 25)


def test_binary_metrics_one_class_has_no_auc() -> None:
    m = binary_metrics([1, 1], [0.2, 0.9], 0.5)
    assert np.isnan(m["auc"]) and np.isnan(m["specificity"])
    assert json_ready(m)["auc"] is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [(0.95, 0.2), (0.8, 0.6), (0.6, 0.7), (0.2, 0.9), (1.0, 0.2)],
)
def test_sensitivity_threshold_is_highest_reaching_target(target: float, expected: float) -> None:
    t = choose_threshold(LABELS, SCORES, "sensitivity", target)
    assert t == pytest.approx(expected)
    assert binary_metrics(LABELS, SCORES, t)["sensitivity"] >= target
    # just above it, sensitivity drops below the target: it is the highest such threshold
    assert binary_metrics(LABELS, SCORES, t + 1e-9)["sensitivity"] < target


def test_youden_threshold_by_hand() -> None:
    # J = sens + spec - 1: t=0.7 → 0.6+1.0-1 = 0.6; t=0.6 → 0.8+0.8-1 = 0.6 (tie → the higher); t=0.2 → 1+0.4-1 = 0.4
    assert choose_threshold(LABELS, SCORES, "youden") == pytest.approx(0.7)
    # without the 0.65 negative, t=0.6 alone is best: 0.8 + 1.0 - 1 = 0.8
    keep = SCORES != 0.65
    assert choose_threshold(LABELS[keep], SCORES[keep], "youden") == pytest.approx(0.6)


def test_fixed_threshold_and_errors() -> None:
    assert choose_threshold(LABELS, SCORES, "fixed", fixed=0.42) == 0.42
    with pytest.raises(InvalidInputError, match="no hemorrhage examples"):
        choose_threshold([0, 0], [0.1, 0.2], "sensitivity")
    with pytest.raises(InvalidInputError, match="unknown threshold strategy"):
        choose_threshold(LABELS, SCORES, "best")


def test_clamp_threshold_stays_inside_open_interval() -> None:
    assert 0.0 < clamp_threshold(0.0) < 1e-5
    assert 1.0 - 1e-5 < clamp_threshold(1.0) < 1.0


def test_softmax_scores() -> None:
    np.testing.assert_allclose(softmax_scores(np.array([[0.0, 0.0], [0.0, np.log(3.0)]])), [0.5, 0.75])


def test_metrics_by_kind_splits_dicom_and_image() -> None:
    kinds = np.array([0, 1] * 5)
    m = metrics_by_kind(LABELS, SCORES, kinds, 0.55)
    assert m["n"] == 10
    assert m["by_input_kind"]["dicom"]["n"] == 5 and m["by_input_kind"]["image"]["n"] == 5
    assert (
        m["by_input_kind"]["dicom"]["confusion_matrix"]
        == binary_metrics(LABELS[kinds == 0], SCORES[kinds == 0], 0.55)["confusion_matrix"]
    )


def test_evaluate_cli_writes_results_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_tiny_model(tmp_path / "m", image_size=64, threshold=0.3)
    data = write_tiny_folder(tmp_path / "test", n=8, size=96)
    out = tmp_path / "eval"
    assert main(["--model", str(model), "--test_dir", str(data), "--output_dir", str(out)]) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert results["threshold"] == pytest.approx(0.3)
    assert results["threshold_source"].startswith("model config")
    test = results["test"]
    assert test["n"] == 8 and sum(map(sum, test["confusion_matrix"])) == 8
    assert set(test["by_input_kind"]) == {"dicom", "image"}
    assert (out / "roc_test.png").stat().st_size > 1000
    assert (out / "confusion_matrix_test.png").stat().st_size > 1000
    assert "test: n=8" in capsys.readouterr().out


def test_evaluate_cli_rechooses_threshold_on_validation(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "m", image_size=64)
    data = write_tiny_folder(tmp_path / "d", n=6, size=96)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "--model",
                str(model),
                "--test_dir",
                str(data),
                "--validation_dir",
                str(data),
                "--threshold_strategy",
                "sensitivity",
                "--threshold_sensitivity",
                "1.0",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "eval_results.json").read_text())
    assert results["threshold_source"] == "validation (sensitivity)"
    assert results["validation"]["sensitivity"] == 1.0  # the rule's target, met on the same data
    assert results["test"]["sensitivity"] == 1.0


def test_evaluate_cli_without_data_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_tiny_model(tmp_path / "m")
    assert main(["--model", str(model)]) == 1
    assert "--test_dir" in capsys.readouterr().err
