"""train.threshold: the threshold rules worked out by hand (moved from test_evaluate.py with the rules)."""

from __future__ import annotations

import numpy as np
import pytest

from brain_ct.errors import InvalidInputError
from train.metrics import binary_metrics
from train.threshold import choose_threshold, clamp_threshold, real_fpr_threshold, select_threshold

LABELS = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.65, 0.5, 0.3, 0.1, 0.05])


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


REAL, PHANTOM = 1, 0  # indices into train.data.records.DOMAINS
# LABELS/SCORES with the 5 normals real except the highest-scoring one (0.65), a phantom
DOMAINS = np.array([PHANTOM] * 5 + [PHANTOM, REAL, REAL, REAL, REAL])


@pytest.mark.parametrize(
    ("max_fpr", "expected", "real_fp"),
    [
        # 4 real normals 0.5 0.3 0.1 0.05. 0.2 → ⌊0.8⌋ = 0 may be positive: above 0.5 → lowest positive 0.6
        (0.2, 0.6, 0),
        # 0.25 → 1 may be positive (0.5): above 0.3 → 0.6 (0.5 < 0.6 anyway: same sensitivity, higher t)
        (0.25, 0.6, 0),
        # 0.5 → 2 (0.5, 0.3): above 0.1 → lowest positive above 0.1 is 0.2, every bleed found
        (0.5, 0.2, 2),
        # 1.0 → no bound: the lowest positive
        (1.0, 0.2, 2),
    ],
)
def test_real_fpr_threshold_by_hand(max_fpr: float, expected: float, real_fp: int) -> None:
    t = real_fpr_threshold(LABELS, SCORES, DOMAINS, max_fpr)
    assert t == pytest.approx(expected)
    real_normals = SCORES[(LABELS == 0) & (DOMAINS == REAL)]
    assert int((real_normals >= t).sum()) == real_fp
    assert real_fp / 4 <= max_fpr
    # the phantom normal (0.65) does not bound the rule: it stays a false positive at 0.6
    assert SCORES[5] >= t


def test_real_fpr_threshold_with_no_positive_above_the_bound() -> None:
    y = np.array([1, 0, 0])
    s = np.array([0.3, 0.8, 0.1])
    d = np.array([REAL, REAL, REAL])
    t = real_fpr_threshold(y, s, d, 0.0)
    assert 0.8 < t < 0.8 + 1e-12  # just above the real normal: nothing is called positive
    with pytest.raises(InvalidInputError, match="no real normal slices"):
        real_fpr_threshold(y, s, np.array([REAL, PHANTOM, PHANTOM]), 0.1)


def test_select_threshold_records_the_rule_and_its_inputs() -> None:
    t, rule = select_threshold(LABELS, SCORES, DOMAINS, "auto", max_real_fpr=0.25)
    assert t == pytest.approx(0.6)
    assert rule["strategy"] == "real_fpr" and "fallback" not in rule
    assert rule["max_real_fpr"] == 0.25 and rule["n_real_negatives"] == 4
    assert rule["real_false_positives"] == 0 and rule["real_fpr"] == 0.0
    assert rule["validation_sensitivity"] == pytest.approx(0.8)
    assert "4 real normal" in rule["description"]
    assert choose_threshold(LABELS, SCORES, "real_fpr", domains=DOMAINS, max_real_fpr=0.25) == pytest.approx(
        0.6
    )


@pytest.mark.parametrize("strategy", ["auto", "real_fpr"])
def test_select_threshold_without_real_normals_falls_back_and_says_so(
    strategy: str, caplog: pytest.LogCaptureFixture
) -> None:
    phantoms = np.zeros_like(DOMAINS)
    with caplog.at_level("INFO", logger="train.threshold"):
        t, rule = select_threshold(LABELS, SCORES, phantoms, strategy, target_sensitivity=0.8)
    assert t == pytest.approx(0.6)  # the sensitivity rule's answer (see above)
    assert rule["strategy"] == "sensitivity" and rule["requested"] == strategy
    assert "no real normal slices" in rule["fallback"] and "no real normal slices" in rule["description"]
    assert "no real normal slices" in caplog.text


def test_select_threshold_other_rules_unchanged() -> None:
    assert select_threshold(LABELS, SCORES, DOMAINS, "youden")[0] == pytest.approx(0.7)
    t, rule = select_threshold(LABELS, SCORES, DOMAINS, "fixed", fixed=0.42)
    assert t == 0.42 and rule["strategy"] == "fixed"
    with pytest.raises(InvalidInputError, match="unknown threshold strategy"):
        select_threshold(LABELS, SCORES, DOMAINS, "best")


def test_clamp_threshold_stays_inside_open_interval() -> None:
    assert 0.0 < clamp_threshold(0.0) < 1e-5
    assert 1.0 - 1e-5 < clamp_threshold(1.0) < 1.0
