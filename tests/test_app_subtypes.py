"""Subtype models and ensembles in the app (issue 15, item 4): the subtype panel, the "Heatmap for"
choice, the ensemble's model line, subtypes per scan slice and in the API; binary models unchanged.

Event functions are called directly; the launched app is driven through ``gradio_client`` and a real
headless Chromium (the ``browser`` marker), which leaves ``test-artifacts/app_subtypes.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from helpers_app import served_app
from helpers_browser import app_page
from helpers_models import make_tiny_model
from helpers_series import synthetic_zip
from pydicom.filewriter import dcmwrite

import app
from brain_ct import page_text, readings
from brain_ct.ensemble import ENSEMBLE_FILE, FORMAT
from brain_ct.labels import SUBTYPE_LABELS, SUBTYPES
from brain_ct.predictor import Prediction, Predictor
from brain_ct.synthetic import generate_series, generate_slice, to_dicom

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """A subtype model, a binary model and an ensemble of two subtype models."""
    root = tmp_path_factory.mktemp("models")
    subtype = make_tiny_model(
        root / "subtype", labels=SUBTYPE_LABELS, seed=3, trained_on="synthetic phantoms"
    )
    binary = make_tiny_model(root / "binary", seed=1)
    ensemble = root / "ensemble"
    make_tiny_model(ensemble / "a", labels=SUBTYPE_LABELS, seed=4)
    make_tiny_model(ensemble / "b", labels=SUBTYPE_LABELS, seed=5, image_size=96)
    spec = {"format": FORMAT, "version": 1, "members": [{"model": "a"}, {"model": "b"}], "combine": "mean"}
    (ensemble / ENSEMBLE_FILE).write_text(json.dumps({**spec, "threshold": 0.5}))
    return {"subtype": str(subtype), "binary": str(binary), "ensemble": str(ensemble)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("inputs")
    dcm = folder / "phantom.dcm"
    dcmwrite(
        dcm, to_dicom(generate_slice(3, 256, hemorrhage=True, level="ventricles")), enforce_file_format=True
    )
    scan = folder / "scan.zip"
    synthetic_zip(generate_series(5, n_slices=4, size=96, hemorrhage=True, subtype="subdural"), scan)
    return {"dcm": str(dcm), "zip": str(scan)}


@pytest.fixture(scope="module")
def settings(models, tmp_path_factory):
    return app.AppSettings(
        model=models["subtype"],
        extra_models=[models["binary"], models["ensemble"]],
        run_dir=tmp_path_factory.mktemp("run") / "run-1",
    )


@pytest.fixture(scope="module")
def reader(settings):
    registry = app.make_registry(settings.model, extra=settings.extra_models)
    return app.Reader(registry, settings=settings)


def _choice(reader, case: str, models: dict[str, str]) -> str:
    """The dropdown id of a model (the registry shows ids, not the server's paths)."""
    return next(c for c in reader.registry.choices if models[case].endswith(c.split("/")[-1]))


# --------------------------------------------------------------------------- the page


def test_the_subtype_controls_start_hidden_and_the_api_names_its_endpoints(settings):
    demo = app.create_app(settings)
    props = {c["props"].get("elem_id"): c["props"] for c in demo.config["components"]}
    assert props["subtypes"]["visible"] is False and props["subtypes"]["show_heading"] is False
    assert props["heatmap-for"]["visible"] is False
    assert [choice[1] for choice in props["heatmap-for"]["choices"]] == ["any", *SUBTYPES]
    names = {d.get("api_name") for d in demo.config["dependencies"] if d.get("api_visibility") != "private"}
    assert {"predict", "predict_series", "subtypes", "heatmap"} <= names


def test_the_model_choice_shows_the_subtype_controls_only_for_subtype_models(reader, models):
    banner, panel, dropdown = reader.model_info(_choice(reader, "subtype", models))
    assert panel["visible"] is True and dropdown["visible"] is True
    banner, panel, dropdown = reader.model_info(_choice(reader, "binary", models))
    assert panel == {"__type__": "update", "value": None, "visible": False}
    assert dropdown == {"__type__": "update", "value": "any", "visible": False}  # no subtype asked of it
    assert "ensemble" not in banner
    banner, panel, dropdown = reader.model_info(_choice(reader, "ensemble", models))
    assert "an ensemble of 2 models" in banner and panel["visible"] is True


# --------------------------------------------------------------------------- one slice


def test_a_subtype_reading_fills_the_panel_with_the_five_probabilities(reader, inputs):
    label, overlay, text, state = reader.read_slice(inputs["dcm"])
    pred = reader.results.get(state).pred
    assert set(label) == {"hemorrhage", "normal"}  # the verdict panel is the same as for binary models
    panel = reader.subtype_panel(state)
    assert list(panel) == list(SUBTYPES) and panel == pytest.approx(pred.subtypes)
    assert "**Heatmap for:** any hemorrhage" in text


def test_the_heatmap_choice_explains_a_subtype_without_reading_the_file_again(reader, inputs, monkeypatch):
    _, overlay_any, text_any, state = reader.read_slice(inputs["dcm"], opacity=0.6)
    before = reader.results.get(state).pred

    def no_reading(*args, **kwargs):
        raise AssertionError("the file was read again")

    monkeypatch.setattr(readings, "load_image", no_reading)
    overlay, text, report = reader.change_heatmap(state, "subdural", opacity=0.6)
    after = reader.results.get(state).pred
    assert after.heatmap_target == "subdural" and "**Heatmap for:** subdural" in text
    assert not np.array_equal(overlay, overlay_any) and not np.allclose(after.heatmap, before.heatmap)
    assert after.probability == before.probability and after.subtypes == before.subtypes
    assert Path(report).read_bytes()[:5] == b"%PDF-"
    # The window controls redraw the heatmap now shown; "any" brings the first one back.
    np.testing.assert_array_equal(reader.rerender_slice(state, "brain", 40, 80, 0.6)[0], overlay)
    overlay_back, text_back, _ = reader.change_heatmap(state, "any", opacity=0.6)
    np.testing.assert_array_equal(overlay_back, overlay_any)
    assert text_back == text_any


def test_a_binary_reading_is_unchanged_and_refuses_a_subtype_heatmap(reader, inputs, models):
    model = _choice(reader, "binary", models)
    label, overlay, text, state = reader.read_slice(inputs["dcm"], model)
    pred = Predictor.from_pretrained(models["binary"]).predict(inputs["dcm"])
    assert label == app.verdict_label(pred)
    table = [f"| {r.region} | {r.side} | {r.score:.2f} |" for r in pred.regions[:5]]
    verdict = page_text.verdict_line(pred.label, pred.probability, pred.threshold, False)
    assert text.startswith(f"{verdict}\n\n{pred.explanation}\n")
    assert all(row in text for row in table) and "Heatmap for" not in text and "subtype" not in text
    assert reader.subtype_panel(state) is None
    with pytest.raises(gr.Error, match="binary model"):
        reader.change_heatmap(state, "subdural")


def test_a_new_upload_empties_the_panel_and_resets_the_heatmap_choice():
    outputs = app.clear_slice_outputs()
    assert outputs[-2] == {"__type__": "update", "value": None}  # visibility stays the model's
    assert outputs[-1] == {"__type__": "update", "value": "any"}


def test_an_ensemble_reading_says_how_many_members_agreed(reader, inputs, models):
    _, _, text, state = reader.read_slice(inputs["dcm"], _choice(reader, "ensemble", models))
    pred = reader.results.get(state).pred
    above = sum(m["probability"] >= m["threshold"] for m in pred.members)
    assert f"{above} of 2 models in the ensemble" in text
    assert list(reader.subtype_panel(state)) == list(SUBTYPES)


# --------------------------------------------------------------------------- whole scan


def test_scan_slices_name_their_leading_subtype(reader, inputs):
    verdict, summary, _, _, state = reader.read_series([inputs["zip"]])
    result = reader.results.get(state).result
    for item, pred in zip(summary["slices"], result.predictions, strict=True):
        assert item["subtypes"] == pytest.approx(pred.subtypes)
    assert set(summary["subtypes"]) == set(SUBTYPES) and result.subtype_explanation in verdict
    subtypes = result.predictions[1].subtypes
    leading = max(subtypes, key=subtypes.get)
    heading = reader.show_series_slice(state, 2)[1].split("\n")[0]
    assert (
        heading.startswith("**Slice 2 of 4**") and f"subtypes: {leading} {subtypes[leading]:.2f}" in heading
    )
    json.dumps(summary)  # the API's JSON output


def test_binary_scan_slices_are_unchanged(reader, inputs, models):
    verdict, summary, _, _, state = reader.read_series([inputs["zip"]], _choice(reader, "binary", models))
    keys = {"file", "index", "label", "probability", "threshold", "regions", "explanation"}
    assert all(set(s) == keys for s in summary["slices"]) and "subtypes" not in summary
    assert "subtype" not in verdict + reader.show_series_slice(state, 2)[1] and "Ensemble" not in verdict


def test_an_ensemble_scan_says_how_many_members_read_hemorrhage(reader, inputs, models):
    verdict, _, _, _, state = reader.read_series([inputs["zip"]], _choice(reader, "ensemble", models))
    above, total = reader.results.get(state).result.member_agreement
    assert f"Ensemble: {above} of {total} models read this scan as hemorrhage" in verdict and total == 2


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("hemorrhage", "subtypes: subdural 0.81, epidural 0.10, intraparenchymal 0.10"),
        (
            "normal",
            "subtypes: subdural 0.81, epidural 0.10, intraparenchymal 0.10 (below the threshold: not a finding)",
        ),
    ],
)
def test_the_subtype_line_says_a_leading_subtype_below_the_threshold_is_no_finding(label, expected):
    subtypes = dict.fromkeys(SUBTYPES, 0.1) | {"subdural": 0.81}
    pred = Prediction(label, 0.6, 0.5, np.zeros((2, 2), np.float32), [], "", subtypes=subtypes)
    assert page_text.subtype_line(pred) == expected
    assert page_text.subtype_line(Prediction(label, 0.6, 0.5, np.zeros((2, 2)), [], "")) == ""


# --------------------------------------------------------------------------- the launched app


@pytest.fixture(scope="module")
def served(settings):
    with served_app(app, settings) as url:
        yield url


@pytest.mark.slow
def test_the_api_returns_subtypes_and_explains_a_chosen_subtype(served, reader, inputs, models):
    from gradio_client import Client, handle_file

    client = Client(served, verbose=False)
    label, overlay, text = client.predict(handle_file(inputs["dcm"]), api_name="/predict")
    subtypes = client.predict(api_name="/subtypes")  # this client's last reading
    assert {c["label"] for c in subtypes["confidences"]} == set(SUBTYPES)
    top = max(subtypes["confidences"], key=lambda c: c["confidence"])
    assert subtypes["label"] == top["label"]
    subdural, text_subdural, report = client.predict("subdural", api_name="/heatmap")
    assert "**Heatmap for:** subdural" in text_subdural and Path(report).is_file()
    assert Path(subdural).read_bytes() != Path(overlay).read_bytes()
    with pytest.raises(Exception, match="not in the list of choices"):
        client.predict("lobar", api_name="/heatmap")
    _, summary, _, _ = client.predict([handle_file(inputs["zip"])], api_name="/predict_series")
    assert all(set(s["subtypes"]) == set(SUBTYPES) for s in summary["slices"])
    # A binary model: the same three outputs, and no subtypes.
    binary = _choice(reader, "binary", models)
    label, _, text = client.predict(handle_file(inputs["dcm"]), binary, api_name="/predict")
    assert {c["label"] for c in label["confidences"]} == {"hemorrhage", "normal"}
    assert "Heatmap for" not in text
    assert not client.predict(api_name="/subtypes")  # empty: a binary model has no subtypes


@pytest.mark.slow
@pytest.mark.browser
def test_browser_shows_the_subtype_panel_and_a_subtype_heatmap(served, inputs):
    with app_page(served) as page:
        page.locator("#heatmap-for").wait_for(timeout=60_000)  # shown once the subtype model is known
        page.locator("#upload input[type=file]").set_input_files(inputs["dcm"])
        page.locator("#subtypes").get_by_text("subdural").first.wait_for(timeout=90_000)
        page.locator("#explanation").get_by_text("any hemorrhage").first.wait_for(timeout=30_000)
        page.locator("#heatmap-for input").click()
        page.get_by_role("option", name="subdural").click()
        page.locator("#explanation").get_by_text("Grad-CAM of the model's subdural output").wait_for(
            timeout=60_000
        )
        page.wait_for_timeout(1500)  # let the overlay image paint before the screenshot
        page.screenshot(path=str(ARTIFACTS / "app_subtypes.png"), full_page=True)
        panel = page.locator("#subtypes").inner_text()
        toasts = page.locator(".toast-body").count()
    assert all(name in panel for name in SUBTYPES)
    assert toasts == 0  # one choice, one re-explanation: no "still being read" refusal
    assert (ARTIFACTS / "app_subtypes.png").stat().st_size > 10_000


def test_the_bundled_models_are_offered_unless_models_are_listed(monkeypatch):
    from brain_ct.model import DEFAULT_MODEL_DIR, DEMO_MODEL_DIR, SUBTYPE_DEMO_MODEL_DIR

    monkeypatch.delenv("BRAIN_CT_MODELS", raising=False)
    monkeypatch.delenv("BRAIN_CT_MODEL", raising=False)
    bundled = [DEFAULT_MODEL_DIR, DEMO_MODEL_DIR, SUBTYPE_DEMO_MODEL_DIR]
    assert app.AppSettings.from_env().extra_models == [str(m) for m in bundled]
    registry = app.make_registry(None, extra=app.AppSettings.from_env().extra_models)
    # The default first, listed once; nothing is loaded to list them.
    assert registry.choices == [
        "models/brain-ct-resnet50",
        "models/brain-ct-demo",
        "models/brain-ct-demo-subtypes",
    ]
    # With the small demo as the default (BRAIN_CT_MODEL), the ResNet-50 is still offered.
    registry = app.make_registry(str(DEMO_MODEL_DIR), extra=app.AppSettings.from_env().extra_models)
    assert registry.choices == [
        "models/brain-ct-demo",
        "models/brain-ct-resnet50",
        "models/brain-ct-demo-subtypes",
    ]
    monkeypatch.setenv("BRAIN_CT_MODELS", "")  # an empty list: only the default model
    assert app.AppSettings.from_env().extra_models == []
