"""train.metrics: scores from logits, binary metrics without AUC, ECE and reliability bins, the temperature
helpers and the calibration report by group, worked out by hand (moved from test_evaluate / test_calibrate)."""

from __future__ import annotations

import numpy as np
import pytest

from brain_ct.jsonable import json_safe
from train.metrics import (
    apply_temperature,
    binary_metrics,
    binary_nll,
    calibration_report,
    expected_calibration_error,
    margins,
    reliability_bins,
    softmax_scores,
)


def test_binary_metrics_one_class_has_no_auc() -> None:
    m = binary_metrics([1, 1], [0.2, 0.9], 0.5)
    assert np.isnan(m["auc"]) and np.isnan(m["specificity"])
    assert json_safe(m)["auc"] is None


def test_softmax_scores() -> None:
    np.testing.assert_allclose(softmax_scores(np.array([[0.0, 0.0], [0.0, np.log(3.0)]])), [0.5, 0.75])


def test_ece_by_hand() -> None:
    # one example in each of bins 0, 1, 8, 9: gaps 0.05, 0.15, 0.15, 0.05 → mean 0.1
    assert expected_calibration_error([0, 0, 1, 1], [0.05, 0.15, 0.85, 0.95]) == pytest.approx(0.1)
    # two examples in bin 3 (mean score 0.35, one positive → 0.5): gap 0.15, weight 2/3; one in bin 9: 0.1
    assert expected_calibration_error([0, 1, 1], [0.31, 0.39, 0.9]) == pytest.approx(
        2 / 3 * 0.15 + 1 / 3 * 0.1
    )
    # perfectly calibrated bins
    assert expected_calibration_error([0, 1] * 5, [0.55] * 10) == pytest.approx(0.05)
    assert np.isnan(expected_calibration_error([], []))


def test_reliability_bins_are_equal_width_and_include_one() -> None:
    bins = reliability_bins([1, 0, 1], [1.0, 0.0, 0.1], n_bins=10)
    assert len(bins) == 10 and bins[3]["low"] == pytest.approx(0.3) and bins[3]["high"] == pytest.approx(0.4)
    assert [b["n"] for b in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]  # 1.0 falls in the last bin
    assert bins[1]["fraction_hemorrhage"] == 1.0 and np.isnan(bins[2]["mean_score"])


def test_temperature_helpers_by_hand() -> None:
    p = np.array([0.5, 0.75, 0.1])
    np.testing.assert_allclose(margins(p), [0.0, np.log(3.0), -np.log(9.0)])
    np.testing.assert_allclose(apply_temperature(p, 2.0), [0.5, np.sqrt(3) / (1 + np.sqrt(3)), 1 / 4])
    assert binary_nll([1, 0], [0.75, 0.25]) == pytest.approx(-np.log(0.75))


def test_calibration_report_groups() -> None:
    y = np.array([0, 1, 0, 1])
    report = calibration_report(
        y, np.array([0.1, 0.9, 0.4, 0.6]), np.array([0, 0, 1, 1]), np.array([1, 1, 1, 1])
    )
    assert report["n"] == 4 and set(report["by_input_kind"]) == {"dicom", "image"}
    assert set(report["by_domain"]) == {"real"} and report["by_input_kind"]["image"]["n"] == 2
    assert report["by_input_kind"]["dicom"]["ece"] == pytest.approx(0.1)
    assert "equal-width" in report["binning"]
