"""brain_ct.page_text: the app's words for a reading (scan rule, probability bar, image sets, escapes)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from brain_ct.image_set import ImageSetReading
from brain_ct.page_text import image_set_md, md_escape, probability_bar, scan_rule_fields, scan_rule_line
from brain_ct.predictor import Prediction
from brain_ct.scan import ScanRule


def _scan(p: list[float], threshold: float = 0.5):
    rule = ScanRule()
    probs = np.asarray(p)
    return types.SimpleNamespace(
        probabilities=probs,
        rule=rule,
        threshold=threshold,
        probability=rule.scan_probability(probs, threshold),
    )


@pytest.mark.parametrize(
    ("p", "slices", "decided_by"),
    [
        ([0.1, 0.6, 0.95, 0.2], [3], "the top slice"),  # one very confident slice
        ([0.7, 0.72, 0.1], [1, 2], "the least of 2 neighbouring slices"),
        ([0.3], [1], "the top slice"),
    ],
)
def test_the_scan_rule_names_its_statistic_and_the_slices_that_decided_it(p, slices, decided_by):
    scan = _scan(p)
    fields = scan_rule_fields(scan)
    assert fields["statistic"] == "scan score" and fields["value"] == pytest.approx(
        scan.probability, abs=1e-6
    )
    assert fields["slices"] == slices and fields["decided_by"] == decided_by
    assert fields["slice_probabilities"] == [pytest.approx(p[i - 1]) for i in slices]
    line = scan_rule_line(fields)
    assert line.startswith(f"Scan score = {scan.probability:.1%}")
    assert all(f"slice {i}: {p[i - 1]:.1%}" in line for i in slices)


@pytest.mark.parametrize(("p", "t", "label"), [(0.136, 0.114, "hemorrhage"), (0.05, 0.3, "normal")])
def test_the_bar_shows_p_itself_and_marks_the_threshold(p, t, label):
    bar = probability_bar(p, t, label, "DICOM slices")
    assert (
        f"P(hemorrhage) = <b>{100 * p:.1f}%</b>" in bar
        and f"threshold for DICOM slices = {100 * t:.1f}%" in bar
    )
    assert f"width:{100 * p:.1f}%" in bar and f"left:{100 * t:.1f}%" in bar
    assert ("suspected" in bar) == (label == "hemorrhage")


def test_image_set_text_claims_no_order_and_says_why_outputs_are_empty():
    preds = [
        Prediction(x, q, 0.5, np.zeros((2, 2)), [], "") for x, q in (("hemorrhage", 0.8), ("normal", 0.2))
    ]
    text = image_set_md(ImageSetReading(preds, [{"image": 3, "message": "cut <b>short</b>"}]))
    assert text.startswith("## 1 of 2 images suspicious; 1 could not be read")
    assert (
        "- **image 1**: Hemorrhage suspected — P(hemorrhage) = 80.0%" in text and "most inferior" not in text
    )
    assert "No PDF report or heatmap volume" in text and "<b>" not in text


def test_markdown_escape():
    assert md_escape("[x](http://e) <img>") == r"\[x\]\(http\:\/\/e\) &lt;img&gt;"
