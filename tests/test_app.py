"""The Gradio app: event functions directly, the launched app through gradio_client, and a real browser."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from helpers_app import served_app
from helpers_browser import app_page
from helpers_models import make_tiny_model
from pydicom.data import get_testdata_file
from pydicom.filewriter import dcmwrite

import app_gradio
from brain_ct.synthetic import generate_series, generate_slice, plain_8bit, to_dicom

REAL_HEAD_CT = "693_J2KI.dcm"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny", trained_on="synthetic phantoms")


@pytest.fixture(scope="module")
def app_module():
    import app

    return app


@pytest.fixture(scope="module")
def settings(app_module, tiny_model, tmp_path_factory):
    return app_module.AppSettings(model=str(tiny_model), run_dir=tmp_path_factory.mktemp("run") / "run-1")


@pytest.fixture(scope="module")
def demo(app_module, settings):
    return app_module.create_app(settings)


@pytest.fixture(scope="module")
def reader(app_module, settings):
    return app_module.Reader(app_module.make_registry(settings.model), settings=settings)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("inputs")
    phantom = generate_slice(3, 256, hemorrhage=True, level="ventricles")
    dcm = folder / "phantom.dcm"
    dcmwrite(dcm, to_dicom(phantom), enforce_file_format=True)
    png = folder / "phantom.png"
    import cv2

    cv2.imwrite(str(png), plain_8bit(phantom.hu))
    bad = folder / "not_a_scan.dcm"
    bad.write_text("this is text, not a DICOM file")
    scan = folder / "scan.zip"
    with zipfile.ZipFile(scan, "w") as zf:
        for i, p in enumerate(generate_series(5, n_slices=6, size=128, hemorrhage=True, subtype="subdural")):
            buffer = io.BytesIO()
            dcmwrite(buffer, to_dicom(p, instance_number=i + 1), enforce_file_format=True)
            zf.writestr(f"slice_{(i * 7) % 6:02d}.dcm", buffer.getvalue())
    return {
        "dcm": str(dcm),
        "png": str(png),
        "bad": str(bad),
        "zip": str(scan),
        "nifti": str(_nifti_scan(folder / "volume.nii.gz")),
        "real": get_testdata_file(REAL_HEAD_CT),
    }


def _nifti_scan(path: Path, n: int = 5) -> Path:
    """A small phantom scan as the NIfTI volume dcm2niix would write (int16 HU, qform and sform)."""
    import nibabel as nib

    from brain_ct.nifti_grid import grid_from_series
    from brain_ct.series import read_series

    slices = []
    for i, phantom in enumerate(generate_series(9, n_slices=n, size=64, hemorrhage=True)):
        buffer = io.BytesIO()
        dcmwrite(buffer, to_dicom(phantom, instance_number=i + 1), enforce_file_format=True)
        slices.append(buffer.getvalue())
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        for i, data in enumerate(slices):
            zf.writestr(f"{i}.dcm", data)
    series = read_series(zipped.getvalue())
    grid = grid_from_series(series)
    hu = np.stack([ct.hu for ct in series.slices], axis=-1)
    image = nib.Nifti1Image(grid.to_source(hu).astype(np.int16), grid.affine)
    image.header.set_qform(grid.affine, code=1)
    image.header.set_sform(grid.affine, code=1)
    nib.save(image, path)
    return path


def test_import_does_no_work(tmp_path):
    """``import app`` changes no environment variable, creates no run folder and starts no thread."""
    code = (
        "import os, threading\n"
        "import cv2, gradio, gradio_client, brain_ct.report, brain_ct.series, brain_ct.nifti\n"
        "env, threads = dict(os.environ), set(threading.enumerate())\n"
        "import app\n"
        "assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())\n"
        "assert set(threading.enumerate()) == threads, set(threading.enumerate()) - threads\n"
        "assert not hasattr(app, 'demo')\n"
    )
    env = {**os.environ, "BRAIN_CT_TMP": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_TEMP_DIR", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_create_app_builds_the_page_without_launching_or_loading(app_module, settings, demo):
    assert isinstance(demo, gr.Blocks)
    assert not getattr(demo, "is_running", False)
    assert demo.reader.registry.default == settings.model and not demo.reader.registry._cache
    assert not settings.run_dir.exists()


def test_read_slice_returns_label_overlay_and_explanation(reader, files):
    label, overlay, text, state = reader.read_slice(files["real"])
    pred = reader.results.get(state).pred
    # One probability: the label's values are P(hemorrhage) itself and 1 - P, the verdict first.
    assert next(iter(label)) == pred.label
    assert label == {
        "hemorrhage": pytest.approx(pred.probability),
        "normal": pytest.approx(1 - pred.probability),
    }
    fields = reader.reading_json(state)
    assert (fields["verdict"], fields["input_kind"]) == (pred.label, "dicom")
    assert fields["probability"] == pytest.approx(pred.probability, abs=1e-6)
    assert fields["threshold"] == pytest.approx(pred.threshold, abs=1e-6)
    assert [r["region"] for r in fields["regions"]] == [r.region for r in pred.regions]
    assert f"{100 * pred.probability:.1f}%" in reader.reading_bar(state)
    assert overlay.dtype == np.uint8 and overlay.shape == (512, 512, 3)
    assert "not a diagnosis" in text
    plain, meta, report = reader.slice_details(state)
    assert plain.shape == (512, 512)
    assert ["Modality", "CT"] in meta
    assert Path(report).read_bytes()[:5] == b"%PDF-"


def test_window_change_rerenders_without_the_model(reader, files):
    _, _, _, state = reader.read_slice(files["dcm"])
    brain_overlay, brain = reader.rerender_slice(state, "brain", 40, 80, 0.0)
    bone_overlay, bone = reader.rerender_slice(state, "bone", 40, 80, 0.0)
    assert not np.array_equal(brain, bone)
    custom_overlay, custom = reader.rerender_slice(state, "custom", 40, 80, 0.0)
    np.testing.assert_array_equal(custom, brain)


def test_bad_upload_raises_a_readable_gradio_error(reader, files):
    with pytest.raises(gr.Error, match="not a DICOM file or a supported image"):
        reader.read_slice(files["bad"])


def test_no_file_clears_the_outputs(reader):
    assert reader.read_slice(None) == (None, None, "", None)


def test_series_reading_and_browser(reader, files):
    import nibabel as nib

    verdict, summary, report, heatmap, state = reader.read_series([files["zip"]])
    assert "scan" in verdict
    assert summary["n_slices"] == 6 and len(summary["slices"]) == 6
    assert [s["index"] for s in summary["slices"]] == list(range(6))
    assert Path(report).read_bytes()[:5] == b"%PDF-"
    # The heatmap volume: one plane per slice, in the slices' order, beside the report.
    volume = nib.load(heatmap)
    assert heatmap.endswith(".nii.gz") and Path(heatmap).parent.parent == Path(report).parent.parent
    assert sorted(volume.shape) == [6, 128, 128]
    result = reader.results.get(state).result
    planes = np.moveaxis(np.asarray(volume.dataobj), 2, 0)
    for plane, pred in zip(planes, result.predictions, strict=True):
        np.testing.assert_allclose(np.sort(plane.ravel()), np.sort(pred.heatmap.ravel()), atol=1e-6)
    slider, plot = reader.series_browser(state)
    result = reader.results.get(state).result
    assert slider["value"] == result.most_suspicious + 1  # slider numbers slices from 1
    assert slider["minimum"] == 1 and slider["maximum"] == 6 and slider["visible"]
    assert plot.ndim == 3
    overlay, text = reader.show_series_slice(state, 3)
    assert overlay.shape[2] == 3 and "Slice 3 of 6" in text


def test_a_nifti_volume_is_read_as_a_scan_and_its_heatmap_lies_on_its_grid(reader, files):
    import nibabel as nib

    verdict, summary, report, heatmap, _ = reader.read_series([files["nifti"]])
    assert summary["n_slices"] == 5 and Path(report).is_file()
    source = nib.load(files["nifti"])
    volume = nib.load(heatmap)
    assert volume.shape == source.shape
    np.testing.assert_allclose(volume.affine, source.affine, atol=1e-5)


def test_several_images_are_read_one_by_one_without_a_scan_verdict(reader, files, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(Path(files["png"]).read_bytes()[:200])  # a PNG cut short: listed, not fatal
    verdict, summary, report, heatmap, state = reader.read_series([files["png"], files["png"], str(broken)])
    assert summary["kind"] == "image set" and [i["image"] for i in summary["images"]] == [1, 2]
    assert summary["errors"][0]["image"] == 3
    n = sum(i["label"] == "hemorrhage" for i in summary["images"])
    assert f"{n} of 2 images suspicious; 1 could not be read" in verdict
    assert "scan" not in verdict.split("\n")[0] and "most inferior" not in verdict
    # The empty boxes say why on the page.
    assert report is None and heatmap is None and "No PDF report or heatmap volume" in verdict
    slider, plot = reader.series_browser(state)
    assert (
        plot["value"] is None
        and plot["label"].startswith("No plot")
        and slider["maximum"] == 3
        and slider["label"].startswith("Image number")
    )
    overlay, text = reader.show_series_slice(state, 2)
    assert overlay.ndim == 3 and "Image 2 of 3" in text


def test_slices_without_geometry_say_why_they_get_no_heatmap_volume(reader, files):
    verdict, summary, report, heatmap, _ = reader.read_series([files["png"]])
    assert summary["n_slices"] == 1 and Path(report).is_file() and heatmap is None
    assert summary["heatmap_volume"].startswith("not written: ")
    assert "Heatmap volume not written:" in verdict


def test_scan_upload_offers_nifti_and_a_heatmap_download(demo):
    config = demo.config["components"]
    labels = [c["props"].get("label") or "" for c in config]
    help_text = next(c["props"]["value"] for c in config if c["props"].get("elem_id") == "scan-upload-help")
    assert ".nii.gz" in help_text and ".zip" in help_text and "PNG/JPG" in help_text
    assert any(label.startswith("Heatmap volume (NIfTI") for label in labels)


def test_banner_labels_the_synthetic_model(app_module, tiny_model):
    registry = app_module.ModelRegistry(str(tiny_model))
    assert "for demonstration only" in registry.banner()


@pytest.fixture(scope="module")
def served(app_module, settings):
    with served_app(app_module, settings) as url:
        yield url


@pytest.mark.slow
def test_launched_app_through_gradio_client(served, files):
    from gradio_client import Client, handle_file

    client = Client(served, verbose=False)
    label, overlay, text = client.predict(handle_file(files["real"]), api_name="/predict")
    assert label["label"] in {"hemorrhage", "normal"}
    assert Path(overlay).is_file() and "not a diagnosis" in text
    fields = client.predict(api_name="/reading")  # the same client's reading as plain fields
    assert fields["verdict"] == label["label"] and fields["input_kind"] == "dicom"
    assert (fields["probability"] >= fields["threshold"]) == (fields["verdict"] == "hemorrhage")
    p = {c["label"]: c["confidence"] for c in label["confidences"]}["hemorrhage"]
    assert p == pytest.approx(fields["probability"], abs=1e-5) and f"{p:.1%}" in text
    label, _, _ = client.predict(handle_file(files["png"]), api_name="/predict")
    assert {c["label"] for c in label["confidences"]} == {"hemorrhage", "normal"}
    with pytest.raises(Exception, match="not a DICOM file or a supported image"):
        client.predict(handle_file(files["bad"]), api_name="/predict")
    label, _, _ = client.predict(handle_file(files["dcm"]), api_name="/predict")  # still serving
    assert label["label"] in {"hemorrhage", "normal"}
    verdict, summary, report, heatmap = client.predict(
        [handle_file(files["zip"])], api_name="/predict_series"
    )
    assert summary["n_slices"] == 6 and Path(report).is_file() and Path(heatmap).is_file()
    # A NIfTI volume through the upload, whatever name Gradio gives the cached copy.
    import nibabel as nib

    verdict, summary, report, heatmap = client.predict(
        [handle_file(files["nifti"])], api_name="/predict_series"
    )
    assert summary["n_slices"] == 5 and summary["head_check"] == "passed" and Path(report).is_file()
    source = nib.load(files["nifti"])
    np.testing.assert_allclose(nib.load(heatmap).affine, source.affine, atol=1e-5)
    assert nib.load(heatmap).shape == source.shape


@pytest.mark.slow
@pytest.mark.browser
def test_real_browser_upload_shows_the_reading(served, files):
    with app_page(served) as page:
        page.locator("#upload input[type=file]").set_input_files(files["real"])
        page.locator("#reading-bar").get_by_text("P(hemorrhage) =").first.wait_for(timeout=90_000)
        page.get_by_text("not a diagnosis").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1500)  # let the overlay image paint before the screenshot
        page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
        text = page.locator("#explanation").inner_text()
    assert "P(hemorrhage)" in text
    assert (ARTIFACTS / "app.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.browser
def test_examples_still_work_after_the_upload_sweep(app_module, tiny_model, tmp_path, monkeypatch):
    """Issue 27.1: uploads are swept after a short retention, the example buttons keep working."""
    import time

    from helpers_app import launched

    settings = app_module.AppSettings(
        model=str(tiny_model), run_dir=tmp_path / "run-1", file_max_age_s=2, sweep_every_s=0.5
    )
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(settings.gradio_cache))  # as main() does
    demo = app_module.create_app(settings)
    app_module.warm_up(demo.reader.registry)
    kept = app_gradio.cached_examples(demo)
    assert kept and all(p.is_file() for p in kept)
    partial = settings.gradio_cache / "tmpaborted"  # an aborted upload's leftover
    partial.write_bytes(b"x" * 100)
    stop = app_module.start_sweeper(settings, keep=kept)
    try:
        with launched(demo, app_module) as url, app_page(url) as page:
            time.sleep(5)  # past the retention, several sweeps
            assert not partial.exists() and all(p.is_file() for p in kept)
            page.get_by_text("synthetic_subdural.dcm", exact=True).first.click()
            page.locator("#reading-bar").get_by_text("P(hemorrhage) =").first.wait_for(timeout=90_000)
            assert not page.locator("#error-box").is_visible()
    finally:
        stop.set()
