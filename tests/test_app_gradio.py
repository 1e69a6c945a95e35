"""app_gradio: the app's patches of Gradio components and queue, and failures turned into Gradio errors."""

from __future__ import annotations

import inspect
import tempfile
import types
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio.data_classes import FileData

import app_gradio
from brain_ct import page_text
from brain_ct.errors import InvalidInputError
from brain_ct.readings import ReadingExpired, ReadingFailed, Readings


@pytest.mark.parametrize(
    ("p", "t"), [(0.173, 0.114), (0.114, 0.114), (0.6, 0.7), (0.7, 0.6), (0.0, 0.3), (1.0, 0.3), (0.5, 0.5)]
)
def test_label_top_class_is_the_verdict(p, t):
    from brain_ct.predictor import Prediction

    pred = Prediction(
        label="hemorrhage" if p >= t else "normal",
        probability=p,
        threshold=t,
        heatmap=np.zeros((2, 2), np.float32),
        regions=[],
        explanation="",
    )
    label = page_text.verdict_label(pred)
    # The verdict comes first, however P compares with 1 - P; P is P itself.
    assert next(iter(label)) == pred.label
    assert label == {"hemorrhage": pytest.approx(p), "normal": pytest.approx(1 - p)}
    with gr.Blocks():
        shown = app_gradio.verdict_labels(gr.Label()).postprocess(label)
    assert shown.label == pred.label and shown.confidences[0].confidence == pytest.approx(label[pred.label])
    bar = page_text.probability_bar(p, t, pred.label)
    assert f"width:{100 * p:.1f}%" in bar and f"left:{100 * t:.1f}%" in bar


def test_every_image_output_gets_its_own_file():
    with gr.Blocks():
        component = app_gradio.write_images_to_unique_files(gr.Image(type="numpy", format="png"))
    rgb = np.zeros((8, 8, 3), np.uint8)
    first, second = component.postprocess(rgb), component.postprocess(rgb)
    assert first.path != second.path
    assert Path(first.path).read_bytes() == Path(second.path).read_bytes()
    assert Path(first.path).stat().st_size > 0


def test_a_url_as_the_file_is_refused_and_no_empty_temp_file_is_made(tmp_path, monkeypatch):
    with gr.Blocks():
        component = app_gradio.uploads_only(gr.File())
    with pytest.raises(gr.Error, match="Only uploaded files are read"):
        component.move_resource_to_block_cache("https://example.com/scan.dcm")
    upload = tmp_path / "slice.dcm"
    upload.write_bytes(b"x")
    monkeypatch.setattr("tempfile.NamedTemporaryFile", None)  # the patched path never opens one
    processed = component._process_single_file(FileData(path=str(upload)))
    assert str(processed) == str(upload)


def test_the_examples_cached_copies_are_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    example = tmp_path / "example.dcm"
    example.write_bytes(b"not read here")
    with gr.Blocks() as demo:
        upload = gr.File()
        demo.example_sets = [gr.Examples([str(example)], inputs=upload)]
    kept = app_gradio.cached_examples(demo)
    assert len(kept) == 1 and kept[0].name == "example.dcm" and kept[0].is_relative_to(tmp_path / "cache")
    assert app_gradio.cached_examples(gr.Blocks()) == []


@pytest.mark.parametrize(("session", "visible"), [("page-session", False), (None, True)])
def test_a_failed_reading_is_headed_and_a_page_gets_no_popup(session, visible):
    request = types.SimpleNamespace(session_hash=session)
    error = app_gradio.gradio_error(ReadingFailed("wait for it", "Busy:"), request)
    assert isinstance(error, gr.Error) and error.message == "Busy: wait for it"
    assert error.title == "Busy" and error.visible is visible and error.print_exception is False
    assert app_gradio.gradio_error(ReadingFailed("oops", ""), None).title == "Error"
    assert app_gradio.session_of(request) == session and app_gradio.session_of(None) is None


def test_a_refusal_to_show_a_reading_is_a_plain_message_without_server_folders():
    folder = tempfile.gettempdir()
    error = app_gradio.gradio_error(InvalidInputError(f"window too narrow for {folder}/x.dcm"), None)
    assert error.message == "window too narrow for x.dcm" and error.print_exception is False


def test_shown_raises_the_gradio_error_without_the_failed_reading_as_context():
    def expired() -> None:
        raise ReadingExpired

    assert app_gradio.shown(lambda: 3) == 3
    with pytest.raises(gr.Error, match="no longer kept") as raised:
        app_gradio.shown(expired)
    assert raised.value.__context__ is None
    with pytest.raises(ValueError):  # not a refusal: a bug stays a bug
        app_gradio.shown(lambda: int("x"))


def test_a_readings_method_as_an_event_keeps_its_signature_and_shows_refusals():
    event = app_gradio.shown_on_page(Readings.rerender_slice)
    assert inspect.signature(event) == inspect.signature(Readings.rerender_slice)
    assert event.__doc__ == Readings.rerender_slice.__doc__
    readings = Readings.__new__(Readings)
    readings.results = types.SimpleNamespace(get=lambda key: None)
    with pytest.raises(gr.Error, match="no longer kept"):
        event(readings, "an expired key", "brain", 40.0, 80.0, 0.4)
