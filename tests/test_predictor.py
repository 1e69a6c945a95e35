"""brain_ct.predictor: Prediction fields, one forward pass, batching, TTA, threads, privacy."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_models import make_tiny_model, phantom_ct

from brain_ct import DISCLAIMER, explain
from brain_ct.errors import InvalidInputError
from brain_ct.predictor import Prediction, Predictor

IDENTIFYING = {
    "PatientName": "Doe^Janet^SECRETNAME",
    "PatientID": "PID-99887766",
    "PatientBirthDate": "19450317",
    "InstitutionName": "St Elsewhere Hospital XYZ",
    "ReferringPhysicianName": "House^Gregory^REFDOC",
    "AccessionNumber": "ACC-55443322",
    "StudyDate": "20010911",
}


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor.from_pretrained(make_tiny_model(tmp_path_factory.mktemp("m") / "tiny"))


@pytest.fixture(scope="module")
def identified_dicom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pydicom's real head-CT slice with identifying tags set to recognisable values."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("J2K_pixelrep_mismatch.dcm"))
    for keyword, value in IDENTIFYING.items():
        setattr(ds, keyword, value)
    path = tmp_path_factory.mktemp("dcm") / "identified.dcm"
    ds.save_as(path)
    return path


def _forward_counter(model: torch.nn.Module) -> tuple[dict[str, int], object]:
    calls = {"n": 0}
    handle = model.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    return calls, handle


# ------------------------------------------------------------------------------ one slice
@pytest.mark.parametrize("kind", ["dicom", "image"])
def test_predict_fields(predictor: Predictor, kind: str) -> None:
    ct = phantom_ct(150, lesion=(100, 70, 8), kind=kind, name="slice-7")
    p = predictor.predict(ct)
    assert isinstance(p, Prediction)
    assert p.heatmap.shape == (150, 150) and p.heatmap.dtype == np.float32
    assert not np.isnan(p.heatmap).any()
    assert p.heatmap.min() >= 0.0 and p.heatmap.max() <= 1.0
    assert 0.0 <= p.probability <= 1.0 and isinstance(p.probability, float)
    assert p.threshold == 0.5
    assert p.label == ("hemorrhage" if p.probability >= p.threshold else "normal")
    assert p.explanation.endswith(DISCLAIMER)
    assert p.name == "slice-7" and p.source == kind
    rgb = p.overlay(opacity=0.6)
    assert rgb.shape == (150, 150, 3) and rgb.dtype == np.uint8


def test_probability_is_the_softmax_of_the_model(predictor: Predictor) -> None:
    from brain_ct.preprocess import model_input

    ct = phantom_ct(128, lesion=(50, 60, 6))
    x = torch.from_numpy(model_input(ct, predictor.settings))[None]
    with torch.no_grad():
        expected = torch.softmax(predictor.model(pixel_values=x).logits, 1)[0, 1].item()
    assert predictor.predict(ct).probability == pytest.approx(expected, abs=1e-6)


def test_label_is_hemorrhage_exactly_at_and_above_threshold(predictor: Predictor) -> None:
    ct = phantom_ct(128, lesion=(50, 60, 6))
    p = predictor.predict(ct).probability
    at = Predictor(predictor.model, dataclasses.replace(predictor.settings, threshold=p))
    above = Predictor(
        predictor.model, dataclasses.replace(predictor.settings, threshold=float(np.nextafter(p, 1.0)))
    )
    assert at.predict(ct).label == "hemorrhage"
    assert above.predict(ct).label == "normal"


def test_predict_runs_one_forward_pass(predictor: Predictor) -> None:
    calls, handle = _forward_counter(predictor.model)
    try:
        predictor.predict(phantom_ct(128))
        assert calls["n"] == 1
        predictor.predict(phantom_ct(128), tta=True)  # original and flip in one batch
        assert calls["n"] == 2
        predictor.predict_batch([phantom_ct(128) for _ in range(5)], batch_size=16)
        assert calls["n"] == 3
        predictor.predict_batch([phantom_ct(128) for _ in range(5)], batch_size=2)
        assert calls["n"] == 6
    finally:
        handle.remove()


def test_overlay_is_lazy(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []
    real = explain.overlay
    monkeypatch.setattr(explain, "overlay", lambda *a, **k: drawn.append(1) or real(*a, **k))
    p = predictor.predict(phantom_ct(128))
    p.to_dict()
    assert drawn == []
    p.overlay()
    assert drawn == [1]


def test_predict_batch_matches_single_predictions(predictor: Predictor) -> None:
    cts = [phantom_ct(128, lesion=(40 + 10 * i, 64, 6)) for i in range(3)] + [phantom_ct(100, kind="image")]
    batch = predictor.predict_batch(cts, batch_size=3)
    assert len(batch) == 4
    for ct, b in zip(cts, batch, strict=True):
        single = predictor.predict(ct)
        assert b.probability == pytest.approx(single.probability, abs=1e-5)
        np.testing.assert_allclose(b.heatmap, single.heatmap, atol=1e-4)
        assert b.heatmap.shape == ct.shape


def test_tta_heatmap_is_flipped_back(predictor: Predictor) -> None:
    # With TTA the reading of a mirrored slice must be the mirror of the reading of the slice.
    ct = phantom_ct(129, lesion=(95, 50, 7))  # odd size: the head box mirrors exactly
    mirrored = dataclasses.replace(
        ct, hu=np.ascontiguousarray(ct.hu[:, ::-1]), display=np.ascontiguousarray(ct.display[:, ::-1])
    )
    x0, y0, x1, y1 = ct.head_box
    mirrored.head_box = (129 - x1, y0, 129 - x0, y1)
    a = predictor.predict(ct, tta=True)
    b = predictor.predict(mirrored, tta=True)
    assert a.probability == pytest.approx(b.probability, abs=1e-5)
    np.testing.assert_allclose(b.heatmap, a.heatmap[:, ::-1], atol=1e-4)
    plain = predictor.predict(ct)
    assert not np.allclose(plain.heatmap, a.heatmap, atol=1e-3)  # TTA really changed something


def test_side_convention_end_to_end(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Grad-CAM that lights up blood-density pixels puts a lesion on the image's right on the patient's left."""
    real = explain.gradcam

    def bright_cam(model, x, target_index=1, multi_label=False):
        logits, _ = real(model, x, target_index, multi_label)
        s = predictor.settings
        brain = x[:, 0] * s.std[0] + s.mean[0]  # back to the brain window's [0, 1]
        blood = ((brain > 0.8) & (brain < 0.99)).float()[:, None]  # 64-80 HU; bone saturates at 1
        return logits, torch.nn.functional.avg_pool2d(blood, 4)[:, 0]

    monkeypatch.setattr(explain, "gradcam", bright_cam)
    for kind in ("dicom", "image"):
        right_of_image = predictor.predict(phantom_ct(200, lesion=(140, 100, 10), kind=kind))
        left_of_image = predictor.predict(phantom_ct(200, lesion=(60, 100, 10), kind=kind))
        assert right_of_image.regions[0].side == "left"
        assert left_of_image.regions[0].side == "right"
        x0, y0, x1, y1 = right_of_image.regions[0].bbox
        assert x0 <= 140 < x1 and y0 <= 100 < y1
        iy, ix = np.unravel_index(np.argmax(right_of_image.heatmap), (200, 200))
        assert np.hypot(ix - 140, iy - 100) <= 10
        assert "patient's left" in right_of_image.explanation


def test_context_model_predicts_a_single_slice(tmp_path: Path) -> None:
    ctx = Predictor.from_pretrained(make_tiny_model(tmp_path / "ctx", windows=[(40, 80)], context_slices=1))
    assert ctx.settings.num_channels == 3
    ct = phantom_ct(128, lesion=(80, 60, 6))
    p = ctx.predict(ct)
    assert p.heatmap.shape == (128, 128)
    nb = ctx.predict_batch([ct], neighbors=[[phantom_ct(128), phantom_ct(128, lesion=(40, 40, 12))]])[0]
    assert nb.probability != pytest.approx(p.probability, abs=1e-7)
    with pytest.raises(InvalidInputError, match="one entry per image"):
        ctx.predict_batch([ct, ct], neighbors=[[None, None]])


# ------------------------------------------------------------------------------ inputs
def test_predict_from_path_and_bytes(predictor: Predictor, identified_dicom: Path) -> None:
    by_path = predictor.predict(identified_dicom)
    by_bytes = predictor.predict(identified_dicom.read_bytes())
    assert by_path.heatmap.shape == (512, 512)
    assert by_path.probability == pytest.approx(by_bytes.probability, abs=1e-6)
    assert by_path.name == "identified.dcm"
    assert by_path.meta.get("Modality") == "CT"


@pytest.mark.parametrize("bad", [b"", b"this is not an image", 12345, None])
def test_bad_inputs_raise_invalid_input(predictor: Predictor, bad: object) -> None:
    with pytest.raises(InvalidInputError):
        predictor.predict(bad)


def test_batch_size_is_checked(predictor: Predictor) -> None:
    with pytest.raises(InvalidInputError, match="batch_size"):
        predictor.predict_batch([phantom_ct(100)], batch_size=0)


def test_no_identifying_value_in_prediction(predictor: Predictor, identified_dicom: Path) -> None:
    p = predictor.predict(identified_dicom)
    text = json.dumps(p.to_dict()) + repr(p) + p.explanation
    for keyword, value in IDENTIFYING.items():
        for part in value.split("^"):
            assert part not in text, f"{keyword} leaked"
    assert "heatmap" not in p.to_dict()  # JSON-safe: no arrays
    json.dumps(p.to_dict())


# ------------------------------------------------------------------------------ threads
def test_shared_predictor_is_thread_safe(predictor: Predictor) -> None:
    cts = [phantom_ct(128, lesion=(40 + 12 * i, 50 + 5 * i, 6)) for i in range(6)]
    expected = [predictor.predict(ct) for ct in cts]
    results: dict[int, Prediction] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = predictor.predict(cts[i])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    # Sleeping after the last stage (which releases the GIL) lets threads interleave while one
    # call's Captum hook is still on the shared layer, as a big model would: without the
    # predictor's lock, that hook records another call's activations.
    pooler = predictor.model.resnet.pooler  # runs after the last stage, while Captum's hook is on
    handle = pooler.register_forward_pre_hook(lambda *a: time.sleep(0.02))
    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        handle.remove()
    assert errors == []
    for i, exp in enumerate(expected):
        assert results[i].probability == pytest.approx(exp.probability, abs=1e-6)
        np.testing.assert_allclose(results[i].heatmap, exp.heatmap, atol=1e-5)


# ------------------------------------------------------------------------------ head-CT check outcome
def test_skipped_head_check_is_carried_to_the_prediction(predictor: Predictor, tmp_path: Path) -> None:
    import cv2

    # A landscape photo-like gradient: refused by the head-CT check, read only when it is skipped.
    photo = np.tile(np.linspace(0, 255, 320, dtype=np.float32), (200, 1)).astype(np.uint8)
    path = tmp_path / "landscape.png"
    cv2.imwrite(str(path), photo)
    with pytest.raises(InvalidInputError):
        predictor.predict(str(path))
    forced = predictor.predict(str(path), allow_unverified=True)
    assert forced.head_check == "skipped" and forced.unverified
    assert forced.to_dict()["head_check"] == "skipped"
    checked = predictor.predict(phantom_ct())  # built directly: no check was skipped
    assert checked.head_check == "passed" and not checked.unverified
    assert checked.to_dict()["head_check"] == "passed"
