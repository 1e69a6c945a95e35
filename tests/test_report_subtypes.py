"""The PDF report of subtype models and ensembles: the Subtypes section, the ensemble's agreement, the
caption of a subtype heatmap; binary reports without any of it (brain_ct.report; issue 15 item 4)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from helpers_models import make_tiny_model, phantom_ct
from helpers_subtypes import subtype_scan_result
from pypdf import PdfReader

from brain_ct.labels import SUBTYPE_LABELS, SUBTYPES
from brain_ct.predictor import Predictor
from brain_ct.report import write_report
from brain_ct.wording import SUBTYPE_NOTE


def _text(path) -> str:
    # Extracted text breaks lines where the PDF does; compare with single spaces.
    return " ".join(" ".join(page.extract_text() or "" for page in PdfReader(str(path)).pages).split())


@pytest.fixture(scope="module")
def predictors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Predictor]:
    root = tmp_path_factory.mktemp("models")
    return {
        "subtype": Predictor.from_pretrained(make_tiny_model(root / "sub", labels=SUBTYPE_LABELS, seed=3)),
        "binary": Predictor.from_pretrained(make_tiny_model(root / "bin")),
    }


def test_slice_report_of_a_subtype_model_has_the_subtypes_table(predictors, tmp_path) -> None:
    pred = predictors["subtype"].predict(phantom_ct(128, lesion=(50, 60, 6)))
    text = _text(write_report(pred, tmp_path / "s.pdf", model_settings=predictors["subtype"].settings))
    assert "Subtypes Subtype Probability" in text
    for name in SUBTYPES:
        assert f"{name} {pred.subtypes[name]:.1%}" in text
    assert " ".join(SUBTYPE_NOTE.split()) in text
    assert "heatmap overlay (where the model looked)" in text  # the default heatmap: caption unchanged
    assert "Ensemble:" not in text


def test_binary_report_has_no_subtype_section(predictors, tmp_path) -> None:
    pred = predictors["binary"].predict(phantom_ct(128, lesion=(50, 60, 6)))
    text = _text(write_report(pred, tmp_path / "b.pdf", model_settings=predictors["binary"].settings))
    assert "Verdict:" in text
    for absent in ("Subtypes", "Subtype probabilities", "Ensemble:", *SUBTYPES):
        assert absent not in text


def test_subtype_heatmap_is_named_in_the_caption(predictors, tmp_path) -> None:
    pred = predictors["subtype"].predict(phantom_ct(128, lesion=(50, 60, 6)), heatmap_target="subdural")
    text = _text(write_report(pred, tmp_path / "c.pdf"))
    assert (
        "Grad-CAM heatmap overlay for the subdural output (where the model looked for a subdural hemorrhage)"
        in text
    )


def test_scan_report_has_the_scan_subtype_summary(make_ct_dataset, tmp_path) -> None:
    result = subtype_scan_result(make_ct_dataset, tmp_path)
    text = _text(write_report(result, tmp_path / "scan.pdf"))
    assert "Subtype Scan probability Slices where it leads" in text
    assert "subdural 80.0% 3–4" in text and "epidural 46.7% 5" in text and "subarachnoid 12.0% none" in text
    assert "Most consistent with a subdural hemorrhage (scan p 0.80; slices 3–4)." in text
    assert "slices are numbered from 1" in text
    assert text.index("Subtypes") < text.index("Model:")


def test_ensemble_reports_state_how_many_models_agree(predictors, make_ct_dataset, tmp_path) -> None:
    members = [[(0.1, 0.5), (0.1, 0.6)]] * 2 + [[(0.9, 0.5), (0.65, 0.6)], [(0.8, 0.5), (0.2, 0.6)]]
    members += [[(0.1, 0.5), (0.1, 0.6)]] * 2
    scan = subtype_scan_result(make_ct_dataset, tmp_path, members=members)
    assert "Ensemble: 1 of 2 models above their own threshold (scan level)." in _text(
        write_report(scan, tmp_path / "e.pdf")
    )
    pred = predictors["binary"].predict(phantom_ct(128))
    voted = replace(
        pred,
        members=tuple(
            {"model": f"m{i}", "probability": p, "threshold": 0.5} for i, p in enumerate((0.7, 0.6, 0.2))
        ),
    )
    text = _text(write_report(voted, tmp_path / "v.pdf"))
    assert "Ensemble: 2 of 3 models above their own threshold (slice level)." in text
    assert "Subtypes" not in text  # a binary ensemble has no subtypes
