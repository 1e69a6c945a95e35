"""The label sets and RSNA 2019's weighted log loss (brain_ct.labels)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brain_ct import labels


def test_rsna_log_loss_matches_a_hand_worked_example() -> None:
    # Image 1: a subdural bleed. BCE: any -ln 0.9, four absent subtypes -ln 0.9 each, subdural -ln 0.8;
    # weights 2,1,1,1,1,1 -> (6 * 0.1053605 + 0.2231436) / 7 = 0.1221867.
    # Image 2: normal, every output 0.5 -> ln 2 = 0.6931472 whatever the weights.
    targets = [[1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]]
    probs = [[0.9, 0.1, 0.1, 0.1, 0.1, 0.8], [0.5] * 6]
    expected = ((6 * -math.log(0.9) + -math.log(0.8)) / 7 + math.log(2)) / 2
    assert labels.rsna_log_loss(targets, probs) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.4076669, abs=1e-6)


def test_rsna_log_loss_weights_any_twice() -> None:
    # Only `any` wrong (p 0.5 where the truth is 1): 2 * ln 2 / 7, not ln 2 / 6.
    loss = labels.rsna_log_loss([[1, 0, 0, 0, 0, 0]], [[0.5, 0, 0, 0, 0, 0]])
    assert loss == pytest.approx(2 * math.log(2) / 7, rel=1e-9)


def test_rsna_log_loss_is_finite_for_confident_mistakes_and_refuses_bad_shapes() -> None:
    loss = labels.rsna_log_loss([[1, 1, 0, 0, 0, 0]], [[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    assert math.isfinite(loss) and loss > 10
    with pytest.raises(ValueError, match=r"\[N, 6\]"):
        labels.rsna_log_loss(np.zeros((2, 5)), np.zeros((2, 5)))
    with pytest.raises(ValueError):
        labels.rsna_log_loss(np.zeros((2, 6)), np.zeros((3, 6)))


def test_label_sets_and_subtype_vectors() -> None:
    assert labels.SUBTYPE_LABELS == (
        "any",
        "epidural",
        "intraparenchymal",
        "intraventricular",
        "subarachnoid",
        "subdural",
    )
    assert labels.label_set_of(["hemorrhage", "normal"]) == "binary"
    assert labels.label_set_of(["Subdural", *labels.SUBTYPE_LABELS[:5]]) == "subtypes"
    assert labels.label_set_of(["normal", "hemorrhage", "subdural"]) is None
    assert (
        labels.label_set_of(
            ["any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "sdh"]
        )
        is None
    )
    assert labels.subtype_vector([]) == [0] * 6
    assert labels.subtype_vector(["subdural", "epidural"]) == [1, 1, 0, 0, 0, 1]
    assert labels.subtype_vector(["any"]) == [1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="unknown hemorrhage subtype"):
        labels.subtype_vector(["chronic"])
