"""brain_ct.explain: Grad-CAM from one forward pass, heatmap geometry, regions, text, overlay."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_models import make_tiny_model, phantom_ct

from brain_ct import DISCLAIMER, explain, framing
from brain_ct.errors import InvalidInputError
from brain_ct.model import load_model
from brain_ct.windowing import model_box


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return load_model(make_tiny_model(tmp_path_factory.mktemp("m") / "tiny", image_size=64))


# ------------------------------------------------------------------------------ Grad-CAM
def test_gradcam_matches_hand_computed_gradcam(tiny) -> None:
    model, settings = tiny
    torch.manual_seed(1)
    x = torch.randn(3, 3, 64, 64)
    logits, cams = explain.gradcam(model, x, settings.hemorrhage_index)

    # Plain-PyTorch Grad-CAM of the log-odds, one sample at a time.
    saved = {}

    def keep(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        output.requires_grad_(True)  # the weights are frozen: start the graph at the last stage
        saved["a"] = output

    handle = model.resnet.encoder.stages[-1].register_forward_hook(keep)
    try:
        for n in range(3):
            with torch.enable_grad():
                out = model(pixel_values=x[n : n + 1]).logits
                acts = saved["a"]
                grads = torch.autograd.grad(out[0, 1] - out[0, 0], acts)[0]
            expected = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1))[0]
            torch.testing.assert_close(logits[n], out[0].detach(), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(cams[n], expected.detach(), rtol=1e-4, atol=1e-6)
    finally:
        handle.remove()
    assert cams.shape == (3, 4, 4)  # 64 px: stem /4, then /2 in stages 2 and 3


def test_gradcam_runs_the_model_forward_once(tiny) -> None:
    model, settings = tiny
    calls = {"model": 0, "stem": 0}
    h1 = model.register_forward_hook(lambda *a: calls.__setitem__("model", calls["model"] + 1))
    h2 = model.resnet.embedder.register_forward_hook(lambda *a: calls.__setitem__("stem", calls["stem"] + 1))
    try:
        explain.gradcam(model, torch.randn(4, 3, 64, 64), settings.hemorrhage_index)
    finally:
        h1.remove()
        h2.remove()
    assert calls == {"model": 1, "stem": 1}


def test_normalize_heatmap() -> None:
    zero = explain.normalize_heatmap(np.zeros((4, 4), np.float32))
    assert zero.dtype == np.float32 and not zero.any()
    nan = explain.normalize_heatmap(np.array([[np.nan, 2.0], [1.0, np.inf]]))
    np.testing.assert_array_equal(nan, [[0.0, 1.0], [0.5, 0.0]])
    scaled = explain.normalize_heatmap(np.array([[0.0, 4.0], [2.0, -1.0]]))
    np.testing.assert_array_equal(scaled, [[0.0, 1.0], [0.5, 0.0]])


def test_heatmap_for_image_lands_on_the_right_pixels() -> None:
    # A non-square image whose model box extends past the top and bottom of the image.
    ct = phantom_ct(120)
    ct.display = np.zeros((120, 200), np.uint8)
    ct.hu = np.full((120, 200), -1000.0, np.float32)
    ct.head_box = (40, 0, 160, 120)
    cam = np.zeros((4, 4), np.float32)
    cam[1, 3] = 1.0  # second row, right-most column of the model grid
    heat = explain.heatmap_for_image(cam, ct)
    assert heat.shape == (120, 200) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    x0, y0, x1, y1 = model_box(ct)
    side = x1 - x0
    iy, ix = np.unravel_index(np.argmax(heat), heat.shape)
    # The cell's centre: column 3.5/4 and row 1.5/4 of the box.
    assert abs(ix - (x0 + 3.5 * side / 4)) <= side / 8
    assert abs(iy - (y0 + 1.5 * side / 4)) <= side / 8
    assert heat[:, : max(x0, 0)].max() == 0.0  # nothing left of the box


# ------------------------------------------------------------------------------ head outline, regions
def _blob(shape: tuple[int, int], x: float, y: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * r * r)).astype(np.float32)


@pytest.mark.parametrize(
    ("x", "y", "side", "region"),
    [
        (125, 80, "left", "temporal"),  # image right = patient's LEFT
        (35, 80, "right", "temporal"),  # image left = patient's RIGHT
        (80, 80, "midline", "deep/ventricular"),
        (80, 30, "midline", "frontal"),
        (95, 125, "left", "occipital"),
        (60, 58, "right", "parietal"),
        (80, 10, "midline", "extra-axial"),
        (141, 80, "left", "extra-axial"),
    ],
)
def test_regions_side_is_the_patients_side(x: float, y: float, side: str, region: str) -> None:
    found = explain.regions(_blob((160, 160), x, y, 4.0), phantom_ct(160))
    assert len(found) == 1
    r = found[0]
    assert isinstance(r, explain.Region)
    assert (r.side, r.region) == (side, region)
    x0, y0, x1, y1 = r.bbox
    assert x0 <= x < x1 and y0 <= y < y1
    if region != "extra-axial":  # at the edge the head mask cuts the blob's tail
        # A 2-D Gaussian holds 1 - 2**-1 = 0.5 of its mass inside its half-maximum circle.
        assert r.score == pytest.approx(0.5, abs=0.03)
    assert r.region in explain.REGION_NAMES


def _skull_base(ct):
    ct.hu = ct.hu.copy()
    ct.hu[70:100, 50:110] = 900.0  # petrous bone / clivus across the middle of the head
    return ct


def test_regions_sorted_by_score_and_posterior_fossa_at_skull_base() -> None:
    heat = _blob((160, 160), 120, 80, 6.0) + 0.8 * _blob((160, 160), 80, 125, 4.0)
    heat /= heat.max()
    found = explain.regions(heat, phantom_ct(160))
    assert [r.side for r in found] == ["left", "midline"]
    assert found[0].score > found[1].score > 0
    assert [r.region for r in found] == ["temporal", "occipital"]
    at_base = explain.regions(heat, _skull_base(phantom_ct(160)))
    assert [r.region for r in at_base] == ["temporal", "posterior fossa"]


def test_skull_base_is_tested_only_when_a_region_is_occipital(monkeypatch) -> None:
    calls = []

    def spy(ct, mask, depth=None):
        calls.append(mask.shape)
        return True

    monkeypatch.setattr(explain, "is_skull_base_level", spy)
    ct = phantom_ct(160)
    assert [r.region for r in explain.regions(_blob((160, 160), 125, 80, 4.0), ct)] == ["temporal"]
    assert calls == []
    assert [r.region for r in explain.regions(_blob((160, 160), 95, 125, 4.0), ct)] == ["posterior fossa"]
    assert calls == [(160, 160)]


def test_regions_empty_for_cold_or_outside_heat() -> None:
    ct = phantom_ct(160)
    assert explain.regions(np.zeros((160, 160), np.float32), ct) == []
    outside = _blob((160, 160), 2, 2, 2.0)  # heat only in the air outside the head
    outside[framing.head_mask(ct)] = 0.0
    assert explain.regions(outside, ct) == []
    with pytest.raises(InvalidInputError, match="same shape"):
        explain.regions(np.zeros((10, 10), np.float32), ct)


def test_skull_base_level_from_bone_inside_the_head() -> None:
    ct = phantom_ct(160)
    mask = framing.head_mask(ct)
    assert explain.is_skull_base_level(ct, mask) is False
    assert explain.is_skull_base_level(_skull_base(ct), mask) is True


def test_region_to_dict_is_the_reading_json() -> None:
    r = explain.Region(bbox=(3, 4, 10, 12), side="left", region="temporal", score=0.5, peak=0.9, area_px=42)
    d = r.to_dict()
    assert d == {
        "bbox": [3, 4, 10, 12],
        "side": "left",
        "region": "temporal",
        "score": 0.5,
        "peak": 0.9,
        "area_px": 42,
    }
    assert list(d) == ["bbox", "side", "region", "score", "peak", "area_px"]
    assert json.loads(json.dumps(d)) == d
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.region = "frontal"  # type: ignore[misc]


def test_regions_are_named_inside_the_images_own_outline(monkeypatch) -> None:
    # An outline that is NOT what framing would find in the pixels: the left half of the head.
    ct = phantom_ct(160)
    ct.head_outline = np.array([[16, 8], [79, 8], [79, 151], [16, 151]], np.int32)
    mask = framing.head_mask(ct)
    assert mask[80, 40] and not mask[80, 120]
    assert mask.sum() == 64 * 144

    def refuse(ct):
        raise AssertionError("the outline was searched again")

    monkeypatch.setattr(framing, "find_outline", refuse)
    # Heat in the right half of the head lies outside this outline: no region there.
    assert explain.regions(_blob((160, 160), 120, 80, 4.0), ct) == []
    found = explain.regions(_blob((160, 160), 40, 80, 4.0), ct)
    assert len(found) == 1 and found[0].bbox[0] <= 40 < found[0].bbox[2]


def test_a_hand_built_image_gets_framings_outline() -> None:
    ct = phantom_ct(160)
    assert ct.head_outline is None
    mask = framing.head_mask(ct)
    expected = framing.head_mask(dataclasses.replace(ct, head_outline=framing.find_outline(ct).polygon))
    np.testing.assert_array_equal(mask, expected)
    ys, xs = np.nonzero(mask)
    assert (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) == ct.head_box


# ------------------------------------------------------------------------------ explanation
REGION = explain.Region(bbox=(0, 0, 1, 1), side="left", region="temporal", score=1.0, peak=1.0, area_px=1)


@pytest.mark.parametrize(
    ("p", "tier"),
    [
        (0.05, "clearly below"),
        (0.3, "near below"),
        (0.6, "near above"),
        (0.9, "well above"),
        (0.5, "near above"),
    ],
)
def test_probability_tiers(p: float, tier: str) -> None:
    assert explain.probability_tier(p, 0.5) == tier


def test_explanation_above_threshold_names_the_region() -> None:
    text = explain.explanation(0.93, 0.5, [REGION])
    assert "hemorrhage likely" in text.lower()
    assert "patient's left temporal" in text
    assert "0.93" in text and "0.50" in text
    assert text.endswith(DISCLAIMER)


def test_explanation_below_threshold_says_where_without_a_finding() -> None:
    text = explain.explanation(0.05, 0.5, [REGION])
    assert "No sign of intracranial hemorrhage" in text
    assert "not a finding" in text
    assert "patient's left temporal" in text
    assert "likely" not in text and "Possible" not in text
    assert DISCLAIMER in text


def test_explanation_without_regions() -> None:
    text = explain.explanation(0.45, 0.5, [])
    assert "borderline" in text and "no focused area" in text
    assert DISCLAIMER in text


# ------------------------------------------------------------------------------ overlay
def test_overlay_colours_only_the_hot_area() -> None:
    grey = np.full((40, 50), 100, np.uint8)
    heat = np.zeros((40, 50), np.float32)
    heat[10:20, 10:20] = 1.0
    rgb = explain.overlay(grey, heat, opacity=0.5)
    assert rgb.shape == (40, 50, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[30:, 30:], 100)  # cold pixels keep the grey image
    hot = rgb[15, 15].astype(int)
    assert hot[0] > hot[2] + 30  # JET at 1.0 is red: R well above B
    np.testing.assert_array_equal(explain.overlay(grey, heat, opacity=0.0), np.repeat(grey[..., None], 3, 2))


def test_overlay_checks_its_arguments() -> None:
    with pytest.raises(InvalidInputError, match="opacity"):
        explain.overlay(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.float32), opacity=2.0)
    with pytest.raises(InvalidInputError, match="same height and width"):
        explain.overlay(np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.float32))


def test_tiny_model_fixture_is_a_folder(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "m", num_stages=2, image_size=32)
    assert (folder / "model.safetensors").is_file()
    _, settings = load_model(folder)
    assert settings.image_size == 32


# ------------------------------------------------------------------------------ localisation benchmark
def test_localization_score_by_hand() -> None:
    from benchmarks.localization import score

    lesion = np.zeros((20, 20), bool)
    lesion[5:8, 5:8] = True
    head = np.zeros((20, 20), bool)
    head[0:10, 0:10] = True  # 100 px of head
    heat = np.zeros((20, 20), np.float32)
    heat[6, 6] = 1.0  # peak in the lesion
    heat[15, 15] = 0.5  # and some heat far away
    s = score(heat, lesion, head, dilate_px=0)
    assert s == {"hit": 1.0, "mass": pytest.approx(1.0 / 1.5), "chance": pytest.approx(9 / 100)}
    heat[15, 15] = 2.0  # now the peak is outside, even after a 1-px dilation (5..8 -> 4..9)
    s = score(heat, lesion, head, dilate_px=1)
    assert s["hit"] == 0.0 and s["mass"] == pytest.approx(1.0 / 3.0)
    assert score(np.zeros((20, 20), np.float32), lesion, head, 2)["hit"] == 0.0


@pytest.mark.slow
def test_localization_benchmark_smoke(tmp_path: Path, capsys) -> None:
    import json

    from benchmarks.localization import main

    out = tmp_path / "loc.json"
    assert main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["n_per_subtype"] == 2
    for kind in ("dicom", "8bit"):
        overall = report["results"][kind]["overall"]
        assert overall["n"] == 10
        for key in ("pointing_game", "mass_in_mask", "chance", "sensitivity"):
            assert 0.0 <= overall[key] <= 1.0
        assert overall["chance"] > 0.0  # every slice has a lesion inside the head
        assert set(report["results"][kind]["per_subtype"]) == {
            "intraparenchymal",
            "subdural",
            "epidural",
            "intraventricular",
            "subarachnoid",
        }
    assert "pointing" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["dicom", "png", "png-large"])
def test_a_loaded_slice_keeps_the_outline_it_was_framed_with(kind: str, monkeypatch) -> None:
    import io

    import cv2

    from brain_ct import synthetic
    from brain_ct.io import load_image

    phantom = synthetic.generate_slice(7, 256, subtype="epidural")
    if kind == "dicom":
        buf = io.BytesIO()
        synthetic.to_dicom(phantom).save_as(buf)
        data = buf.getvalue()
    else:
        grey = (np.clip((phantom.hu - 0.0) / 80.0, 0.0, 1.0) * 255.0).astype(np.uint8)
        if kind == "png-large":  # above framing's working grid: the outline is scaled back
            grey = cv2.resize(grey, (1100, 1100), interpolation=cv2.INTER_NEAREST)
        data = cv2.imencode(".png", grey)[1].tobytes()
    ct = load_image(data, allow_unverified=True)
    assert ct.head_outline is not None and ct.head_outline.dtype == np.int32
    monkeypatch.setattr(framing, "find_outline", lambda ct: pytest.fail("the head was searched for twice"))
    mask = framing.head_mask(ct)
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = ct.head_box
    slack = 0 if kind != "png-large" else int(np.ceil(1100 / framing.WORK_SIDE))
    assert abs(int(xs.min()) - x0) <= slack and abs(int(xs.max()) + 1 - x1) <= slack
    assert abs(int(ys.min()) - y0) <= slack and abs(int(ys.max()) + 1 - y1) <= slack
    heat = np.zeros(ct.shape, np.float32)
    heat[(y0 + y1) // 2, (x0 + x1) // 2] = 1.0
    heat = cv2.GaussianBlur(heat, (0, 0), ct.shape[0] / 40)
    assert len(explain.regions(heat / heat.max(), ct)) == 1


# ------------------------------------------------------------------------------ region names on phantoms
def _coarse_heat(mask: np.ndarray, grid: int = 7) -> np.ndarray:
    """A heatmap as coarse as Grad-CAM's (the last ResNet stage is ~7 x 7): the lesion mask pooled
    onto a ``grid`` x ``grid`` grid and upsampled bilinearly, peak 1."""
    import cv2

    h, w = mask.shape
    pooled = cv2.resize(mask.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA)
    heat = cv2.resize(pooled, (w, h), interpolation=cv2.INTER_LINEAR)
    return (heat / heat.max()).astype(np.float32)


def _phantom_slices(phantom, kind: str):
    """The phantom loaded as a reader loads it: its DICOM, or a brain-window PNG of it."""
    import cv2
    from helpers_dicom import dicom_bytes

    from brain_ct.io import load_image
    from brain_ct.synthetic import to_dicom
    from brain_ct.windowing import window

    if kind == "dicom":
        return load_image(dicom_bytes(to_dicom(phantom)))
    grey = (window(phantom.hu, 40, 80) * 255 + 0.5).astype(np.uint8)
    # A vertex cut is mostly bone: saturated in a brain window, which the head-CT check refuses.
    return load_image(cv2.imencode(".png", grey)[1].tobytes(), allow_unverified=True)


def _lesion_uv(phantom) -> tuple[float, float]:
    """The lesion's centre in the cranial cavity's box, each axis −1..1 (truth, not the heatmap)."""
    ys, xs = np.nonzero(phantom.brain_mask)
    my, mx = np.argwhere(phantom.mask).mean(axis=0)
    u = (mx - (xs.min() + xs.max()) / 2) / ((xs.max() - xs.min()) / 2)
    v = (my - (ys.min() + ys.max()) / 2) / ((ys.max() - ys.min()) / 2)
    return float(u), float(v)


@pytest.mark.parametrize("kind", ["dicom", "png"])
@pytest.mark.parametrize(
    ("level", "seed"),
    # basal_ganglia 7 and 10 lie lateral, where the former depth rule said "parietal"/"temporal"
    [
        ("basal_ganglia", 7),
        ("basal_ganglia", 10),
        ("basal_ganglia", 27),
        ("ventricles", 18),
        ("ventricles", 46),
    ],
)
def test_deep_bleeds_are_named_deep(level: str, seed: int, kind: str) -> None:
    from brain_ct.synthetic import generate_slice

    phantom = generate_slice(seed, 192, subtype="intraparenchymal", level=level)
    u, v = _lesion_uv(phantom)
    assert abs(u) < 0.4 and abs(v) < 0.3  # thalamus / basal ganglia: central third of the cavity
    found = explain.regions(_coarse_heat(phantom.mask), _phantom_slices(phantom, kind))
    assert found[0].region == "deep/ventricular"
    assert explain.describe_region(found[0]).startswith("the deep / ventricular area")


@pytest.mark.parametrize(
    ("level", "seed"),
    [("ventricles", 0), ("ventricles", 6), ("ventricles", 9), ("centrum_semiovale", 3), ("basal_ganglia", 5)],
)
def test_lobar_bleeds_are_not_named_deep(level: str, seed: int) -> None:
    from brain_ct.synthetic import generate_slice

    phantom = generate_slice(seed, 192, subtype="intraparenchymal", level=level)
    u, v = _lesion_uv(phantom)
    assert (u / 0.6) ** 2 + (v / 0.6) ** 2 > 1.0  # truth: out in a lobe
    found = explain.regions(_coarse_heat(phantom.mask), _phantom_slices(phantom, "dicom"))
    assert found[0].region in {"frontal", "parietal", "temporal", "occipital"}


@pytest.mark.parametrize("kind", ["dicom", "png"])
@pytest.mark.parametrize("seed", [0, 2, 4, 6])
def test_vertex_slices_are_never_deep(seed: int, kind: str) -> None:
    import cv2

    from brain_ct.synthetic import generate_slice

    phantom = generate_slice(seed, 192, subtype="intraparenchymal", level="vertex")
    ct = _phantom_slices(phantom, kind)
    assert explain.is_convexity_level(ct, framing.head_mask(ct))
    x0, y0, x1, y1 = ct.head_box
    centre = np.zeros(ct.shape, np.float32)
    cv2.circle(centre, ((x0 + x1) // 2, (y0 + y1) // 2), (x1 - x0) // 8, 1.0, -1)
    for heat in (_coarse_heat(phantom.mask), _coarse_heat(centre > 0)):
        names = {r.region for r in explain.regions(heat, ct)}
        assert names and names <= {"frontal", "parietal", "extra-axial"}


def test_convexity_level_only_near_the_vertex() -> None:
    from brain_ct.synthetic import generate_slice

    ct = phantom_ct(160)
    assert explain.is_convexity_level(ct, framing.head_mask(ct)) is False
    base = _skull_base(phantom_ct(160))
    assert explain.is_convexity_level(base, framing.head_mask(base)) is False
    for level in ("basal_ganglia", "ventricles"):
        slice_ = _phantom_slices(generate_slice(5, 160, hemorrhage=False, level=level), "dicom")
        assert explain.is_convexity_level(slice_, framing.head_mask(slice_)) is False
