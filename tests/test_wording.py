"""The one home of a reading's words: each wording as the app, the report and the card show it."""

from __future__ import annotations

import pytest

from brain_ct.wording import DEMO_NOTE, threshold_relation, verdict


@pytest.mark.parametrize(
    ("label", "kwargs", "expected"),
    [
        ("hemorrhage", {}, "Hemorrhage suspected"),
        ("normal", {}, "No hemorrhage found"),
        ("hemorrhage", {"scope": " in this scan"}, "Hemorrhage suspected in this scan"),
        ("normal", {"scope": " in this scan"}, "No hemorrhage found in this scan"),
        # the report's sentence: lower case, and a negative verdict hedged
        ("hemorrhage", {"hedged": True, "capitalised": False}, "hemorrhage suspected"),
        ("normal", {"hedged": True, "capitalised": False}, "no hemorrhage found by the model"),
    ],
)
def test_verdict_words(label: str, kwargs: dict, expected: str) -> None:
    assert verdict(label, **kwargs) == expected


@pytest.mark.parametrize(("label", "expected"), [("hemorrhage", "at or above"), ("normal", "below")])
def test_threshold_relation(label: str, expected: str) -> None:
    assert threshold_relation(label) == expected


def test_app_banner_report_and_card_say_the_same_demo_note() -> None:
    from train.card import SYNTHETIC_WARNING

    assert DEMO_NOTE == "trained on synthetic phantoms — for demonstration only"
    assert SYNTHETIC_WARNING.startswith(f"**T{DEMO_NOTE[1:]}, must not be used on patients.**")


def test_display_caption_follows_the_source() -> None:
    from brain_ct.wording import HU_DISPLAY, IMAGE_DISPLAY, display_caption

    assert display_caption("dicom") == display_caption("nifti") == HU_DISPLAY
    assert display_caption("image") == IMAGE_DISPLAY
    assert "window" not in display_caption("") and "as given" not in display_caption("")
