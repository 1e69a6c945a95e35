"""brain_ct.readings without a web framework: readings of a tiny model on phantoms, the typed cache, what
a reading shows, and failures in the app's words."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_models import make_tiny_model
from helpers_series import to_bytes

from brain_ct.errors import InvalidInputError, NotHeadCTError, TooLargeError
from brain_ct.readings import (
    CachedImageSet,
    CachedScan,
    CachedSlice,
    ReadingExpired,
    ReadingFailed,
    Readings,
    error_heading,
    refuse_scan_on_slice_tab,
    upload_paths,
    window,
    window_note,
)
from brain_ct.server import AppSettings, ModelRegistry
from brain_ct.serving import ClientBusyError
from brain_ct.synthetic import generate_series, generate_slice, plain_8bit, to_dicom
from brain_ct.windowing import PRESETS
from brain_ct.wording import EXPIRED, IMAGE_SLIDER_LABEL, NO_PLOT_LABEL, SLIDER_LABEL

ROOT = Path(__file__).resolve().parent.parent
VIEW = ("brain", 40.0, 80.0, 0.4)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("readings_inputs")
    dcm = folder / "phantom.dcm"
    dcm.write_bytes(to_bytes(to_dicom(generate_slice(3, 256, hemorrhage=True, level="ventricles"))))
    pngs = []
    for seed in (4, 5):
        png = folder / f"image_{seed}.png"
        cv2.imwrite(str(png), plain_8bit(generate_slice(seed, 256, hemorrhage=False).hu))
        pngs.append(str(png))
    scan = folder / "scan.zip"
    with zipfile.ZipFile(scan, "w") as zf:
        for i, p in enumerate(generate_series(8, n_slices=4, size=128, hemorrhage=True, subtype="subdural")):
            zf.writestr(f"s{i}.dcm", to_bytes(to_dicom(p, instance_number=i + 1)))
    text = folder / "notes.dcm"
    text.write_text("this is text, not a DICOM file")
    return {"dcm": str(dcm), "png": pngs[0], "png2": pngs[1], "zip": str(scan), "text": str(text)}


@pytest.fixture(scope="module")
def readings(tmp_path_factory) -> Readings:
    model = make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
    settings = AppSettings(model=str(model), run_dir=tmp_path_factory.mktemp("run") / "run-1")
    return Readings(ModelRegistry(str(model)), settings=settings)


def test_the_readings_load_no_web_framework():
    code = "import sys, brain_ct.readings, brain_ct.server\nassert 'gradio' not in sys.modules\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_slice_reading_is_cached_typed_and_shown(readings, files):
    key, entry, overlay = readings.read_slice_file(files["dcm"], None, False, False, VIEW)
    assert isinstance(entry, CachedSlice) and readings.entry(key) is entry
    assert entry.model is None and entry.tta is False and entry.ct.name == "phantom.dcm"
    assert overlay.shape == (*entry.ct.display.shape[:2], 3) and overlay.dtype == np.uint8
    fields = readings.reading_json(key)
    assert fields["verdict"] == entry.pred.label and fields["input_kind"] == "dicom"
    assert fields["probability"] == round(float(entry.pred.probability), 6)
    assert f"{100 * entry.pred.probability:.1f}%" in readings.reading_bar(key)
    assert readings.subtype_panel(key) is None  # a binary model
    plain, meta, report = readings.slice_details(key)
    assert plain.ndim == 2 and meta and Path(report).is_file() and report.endswith(".pdf")
    assert Path(report).is_relative_to(readings.settings.output_dir)
    assert readings.slice_image(key) is entry.ct


def test_a_new_window_redraws_the_cached_slice_only(readings, files):
    key, entry, _ = readings.read_slice_file(files["dcm"], None, False, False, VIEW)
    _, brain = readings.rerender_slice(key, *VIEW)
    _, bone = readings.rerender_slice(key, "bone", None, None, 0.4)
    assert not np.array_equal(brain, bone)
    assert readings.rerender_slice(None, *VIEW) == (None, None)
    readings.results.discard(key)
    with pytest.raises(ReadingExpired, match="no longer kept"):
        readings.rerender_slice(key, *VIEW)


def test_explaining_again_keeps_the_probability_and_the_new_heatmap(readings, files):
    key, entry, _ = readings.read_slice_file(files["dcm"], None, False, False, VIEW)
    before = entry.pred
    overlay, text, report = readings.explain_again(key, "any", VIEW)
    assert readings.entry(key).pred is not before
    assert readings.entry(key).pred.probability == pytest.approx(before.probability, abs=1e-6)
    assert overlay is not None and "P(hemorrhage)" in text and Path(report).is_file()
    assert readings.explain_again(None) == (None, "", None)
    with pytest.raises(ReadingExpired):
        readings.explain_again("an expired key")


def test_a_failure_is_one_message_in_the_app_words_kept_for_the_session(readings, files):
    with pytest.raises(ReadingFailed) as failed:
        readings.read_slice_file(files["text"], None, False, False, VIEW, session="s1")
    assert failed.value.heading == "Could not read this upload:"
    folder = str(Path(files["text"]).parent)
    assert folder not in failed.value.message and "notes.dcm" in failed.value.message
    assert str(failed.value) == f"{failed.value.heading} {failed.value.message}"
    assert readings.errors.pop("s1").startswith("**Could not read this upload:**")
    assert readings.errors.pop("s1") == ""


def test_a_busy_session_is_refused_before_reading(readings, files):
    with readings.in_flight.hold("s2"), pytest.raises(ReadingFailed) as failed:
        readings.read_slice_file(files["dcm"], None, False, False, VIEW, session="s2")
    assert failed.value.heading == "Busy:" and "already have a reading running" in failed.value.message


def test_a_library_bug_still_gets_a_message(readings):
    def broken() -> None:
        raise NotImplementedError

    with pytest.raises(ReadingFailed) as failed:
        readings.run(broken, None, None)
    assert failed.value.heading == "Could not read this upload."
    assert "NotImplementedError" in failed.value.message


def test_a_scan_reading_is_cached_with_its_browser(readings, files):
    text, summary, report, heatmap, key = readings.read_scan_files([files["zip"]], None, False, False)
    entry = readings.entry(key)
    assert isinstance(entry, CachedScan) and entry.result.n_slices == 4 and len(entry.infos) == 1
    assert summary["file"] == "upload" and summary["series"][0]["chosen"] is True
    assert summary["heatmap_volume"] == "written" and Path(heatmap).is_file() and Path(report).is_file()
    assert f"{entry.result.n_slices} slices read" in text
    browser = readings.scan_browser(key)
    assert browser.slider["value"] == entry.result.most_suspicious + 1 and browser.slider["maximum"] == 4
    assert browser.slider["label"] == SLIDER_LABEL and browser.plot.ndim == 3 and browser.plot_label is None
    assert readings.series_options(key) is None  # one series: nothing to choose
    assert readings.scan_image(key) is entry.result.series.slices[0]
    overlay, caption = readings.show_series_slice(key, 99)  # past the end: the last slice
    assert overlay is not None and caption.startswith("**Slice 4 of 4**")
    assert readings.show_series_slice(key, None)[1].startswith("**Slice 1 of 4**")
    assert readings.show_series_slice("gone", 1) == (None, f"*{EXPIRED}*")
    assert readings.scan_browser("gone") is None


def test_several_images_are_an_image_set_without_a_plot(readings, files):
    text, summary, report, heatmap, key = readings.read_scan_files(
        [files["png"], files["png2"]], None, False, False
    )
    entry = readings.entry(key)
    assert isinstance(entry, CachedImageSet) and (report, heatmap) == (None, None)
    assert summary["kind"] == "image set" and "Each PNG/JPG image was read on its own" in text
    browser = readings.scan_browser(key)
    assert browser.plot is None and browser.plot_label == NO_PLOT_LABEL
    assert browser.slider["label"] == IMAGE_SLIDER_LABEL and browser.slider["maximum"] == 2
    assert readings.show_series_slice(key, 2)[1].startswith("**Image 2 of 2** (upload order)")
    assert window_note(readings.scan_image(key)) is not None  # 8-bit images: no window presets


@pytest.mark.parametrize(
    ("exc", "heading"),
    [
        (ClientBusyError("busy"), "Busy:"),
        (NotHeadCTError("not a head"), "Refused:"),
        (TooLargeError("too large"), "Refused:"),
        (InvalidInputError("unreadable"), "Could not read this upload:"),
    ],
)
def test_refusals_are_headed_apart_from_unreadable_files(exc, heading):
    assert error_heading(exc) == heading


def test_a_zip_or_volume_on_the_slice_tab_is_pointed_to_the_scan_tab(files, tmp_path):
    with pytest.raises(InvalidInputError, match="Whole scan"):
        refuse_scan_on_slice_tab(files["zip"])
    volume = tmp_path / "head.nii.gz"
    volume.write_bytes(b"\x1f\x8b not read")
    with pytest.raises(InvalidInputError, match="Whole scan"):
        refuse_scan_on_slice_tab(str(volume))
    refuse_scan_on_slice_tab(files["dcm"])  # one slice: no refusal


def test_windows_and_upload_paths():
    assert window("bone", 1.0, 2.0) == PRESETS["bone"]
    assert window("custom", 30.0, 60.0) == (30.0, 60.0)
    assert window("no such preset", 1.0, 2.0) == (None, None)
    assert window_note(None) is None
    named = type("Upload", (), {"name": os.path.join("up", "a.dcm")})()
    assert upload_paths(None) == [] and upload_paths("a.dcm") == ["a.dcm"]
    assert upload_paths([named, None, "b.dcm"]) == [os.path.join("up", "a.dcm"), "b.dcm"]
