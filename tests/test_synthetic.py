"""Tests for brain_ct.synthetic: determinism, masks vs. bright pixels, levels/subtypes, DICOM, 8-bit."""

from __future__ import annotations

import cv2
import numpy as np
import pydicom
import pytest

from brain_ct.errors import InvalidInputError
from brain_ct.synthetic import (
    LEVELS,
    SUBTYPE_LEVELS,
    SUBTYPES,
    generate_series,
    generate_slice,
    mask_bbox,
    render_8bit,
    to_dicom,
    write_dataset,
)
from brain_ct.synthetic.export import decoration_plan

SIZE = 128


def test_same_seed_same_slice_and_different_seed_differs():
    a = generate_slice(11, SIZE)
    b = generate_slice(11, SIZE)
    c = generate_slice(12, SIZE)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert (a.label, a.subtype, a.level, a.z) == (b.label, b.subtype, b.level, b.z)
    assert not np.array_equal(a.hu, c.hu)


def test_no_global_random_state_is_used():
    np.random.seed(0)
    a = generate_slice(5, SIZE)
    np.random.seed(99)
    b = generate_slice(5, SIZE)
    np.testing.assert_array_equal(a.hu, b.hu)


@pytest.mark.parametrize("subtype", SUBTYPES)
def test_every_subtype_generates_a_labelled_mask(subtype):
    for seed in range(3):
        ph = generate_slice(seed, SIZE, subtype=subtype)
        assert ph.label == 1 and ph.subtype == subtype
        assert ph.mask.dtype == bool and ph.mask.shape == (SIZE, SIZE)
        assert ph.mask.sum() >= 6
        assert ph.bbox == mask_bbox(ph.mask)
        x0, y0, x1, y1 = ph.bbox
        assert ph.mask[y0:y1, x0:x1].sum() == ph.mask.sum()
        assert not ph.mask[:, :x0].any() and not ph.mask[:y0].any()
        # blood lies inside the cranial cavity
        assert (ph.mask & ~ph.brain_mask).sum() == 0


@pytest.mark.parametrize("level", LEVELS)
def test_every_level_generates_normal_slices_with_empty_masks(level):
    ph = generate_slice(3, SIZE, hemorrhage=False, level=level)
    assert ph.label == 0 and ph.subtype is None and ph.bbox is None
    assert ph.level == level
    assert not ph.mask.any()
    assert ph.hu.dtype == np.float32 and ph.hu.shape == (SIZE, SIZE)
    assert np.isfinite(ph.hu).all()
    # air around the head, bone in the head
    assert ph.hu[0, 0] < -900
    assert (ph.hu > 700).sum() > 20


@pytest.mark.parametrize("subtype", SUBTYPES)
def test_every_allowed_level_of_a_subtype_generates(subtype):
    for k, level in enumerate(SUBTYPE_LEVELS[subtype]):
        ph = generate_slice(100 + k, 96, subtype=subtype, level=level)
        assert ph.label == 1 and ph.level == level and ph.mask.any()


def test_tissue_densities_are_plausible():
    ph = generate_slice(4, 256, hemorrhage=False, level="ventricles")
    tissue = ph.hu[ph.brain_mask & ~ph.mimic_mask]
    assert 15 < np.median(tissue) < 45
    assert ph.hu.min() >= -1024 and ph.hu.max() <= 3071


@pytest.mark.parametrize("subtype", SUBTYPES)
def test_mask_is_denser_than_the_surrounding_parenchyma(subtype):
    for seed in range(4):
        ph = generate_slice(seed, 256, subtype=subtype)
        background = ph.brain_mask & ~ph.mask & ~ph.mimic_mask
        assert np.median(ph.hu[ph.mask]) > np.median(ph.hu[background]) + 8


def _bright_outside_mimics(ph):
    smooth = cv2.medianBlur(ph.hu.astype(np.float32), 5)
    return ph.brain_mask & (smooth > 60) & ~ph.mimic_mask


def test_bright_pixels_in_the_brain_are_in_the_lesion_mask():
    covered = total = 0
    for subtype in SUBTYPES:
        for seed in range(6):
            ph = generate_slice(seed, 256, subtype=subtype)
            bright = _bright_outside_mimics(ph)
            grown = cv2.dilate(ph.mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            covered += int((bright & grown).sum())
            total += int(bright.sum())
    assert total > 1000
    assert covered / total > 0.95


def test_normal_slices_have_almost_no_bright_pixels_outside_mimics():
    counts = [int(_bright_outside_mimics(generate_slice(s, 256, hemorrhage=False)).sum()) for s in range(12)]
    assert max(counts) < 40, counts


def test_mimics_appear_in_normal_slices():
    # calcifications/dense dura/partial-volume bone are present without any hemorrhage
    mimic_px = [generate_slice(s, SIZE, hemorrhage=False).mimic_mask.sum() for s in range(6)]
    assert all(m > 0 for m in mimic_px)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"subtype": "chronic"}, "unknown subtype"),
        ({"level": "neck"}, "unknown level"),
        ({"hemorrhage": False, "subtype": "subdural"}, "contradicts"),
        ({"subtype": "intraventricular", "level": "vertex"}, "cannot be placed"),
        ({"size": 8}, "size must be"),
    ],
)
def test_bad_arguments_raise_invalid_input(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        generate_slice(1, **kwargs)


def test_negative_seed_is_refused():
    with pytest.raises(InvalidInputError, match="seed"):
        generate_slice(-1)


def test_series_is_ordered_and_a_bleed_spans_contiguous_slices():
    series = generate_series(7, n_slices=24, size=96, subtype="intraparenchymal", slice_thickness=6.0)
    assert len(series) == 24
    zs = [p.z for p in series]
    assert zs == sorted(zs) and np.allclose(np.diff(zs), 6.0)
    assert [p.series_index for p in series] == list(range(24))
    positive = [i for i, p in enumerate(series) if p.label]
    assert positive, "the bleed shows on at least one slice"
    assert positive == list(range(positive[0], positive[-1] + 1))
    for p in series:
        assert p.mask.any() == bool(p.label)
    # one head: the lowest slices show the skull base, the highest the vertex
    assert series[0].level in ("skull_base", "orbits") and series[-1].level == "vertex"


def test_normal_series_has_no_blood_and_is_deterministic():
    a = generate_series(3, n_slices=6, size=64, hemorrhage=False)
    b = generate_series(3, n_slices=6, size=64, hemorrhage=False)
    assert all(p.label == 0 and not p.mask.any() for p in a)
    for p, q in zip(a, b, strict=True):
        np.testing.assert_array_equal(p.hu, q.hu)


@pytest.mark.parametrize("compress", [None, "rle", "jpeg2000"])
def test_dicom_round_trip_gives_back_the_hu(tmp_path, compress):
    ph = generate_slice(21, SIZE, subtype="subdural")
    ds = to_dicom(ph, instance_number=3, compress=compress)
    path = tmp_path / "slice.dcm"
    ds.save_as(path, enforce_file_format=True)
    back = pydicom.dcmread(path)
    assert back.Modality == "CT"
    assert back.SOPClassUID == pydicom.uid.CTImageStorage
    assert str(back.PatientName) == "SYNTHETIC^PHANTOM"
    assert back.PatientID and back.PatientBirthDate and back.InstitutionName and back.AccessionNumber
    assert int(back.InstanceNumber) == 3
    assert float(back.RescaleIntercept) == -1024 and float(back.RescaleSlope) == 1
    assert float(back.ImagePositionPatient[2]) == pytest.approx(ph.z, abs=1e-3)
    assert float(back.PixelSpacing[0]) == pytest.approx(ph.pixel_spacing, rel=1e-5)
    hu = back.pixel_array.astype(np.float32) * float(back.RescaleSlope) + float(back.RescaleIntercept)
    assert np.abs(hu - ph.hu).max() <= 0.5 + 1e-3
    if compress is None:
        assert back.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_dicom_pixel_representation_varies_between_scanners():
    reps = {int(to_dicom(generate_slice(s, 48)).PixelRepresentation) for s in range(40)}
    assert reps == {0, 1}


def test_dicom_unknown_compression_is_refused():
    with pytest.raises(InvalidInputError, match="compression"):
        to_dicom(generate_slice(1, 64), compress="zip")


def test_render_8bit_plain_is_the_brain_window():
    ph = generate_slice(2, SIZE)
    img = render_8bit(ph, 0, internet_style=False)
    assert img.dtype == np.uint8 and img.shape == ph.hu.shape
    expected = np.clip((ph.hu - 0.0) / 80.0, 0, 1) * 255
    assert np.abs(img.astype(np.float32) - expected).max() <= 1.0


def test_render_8bit_internet_style_sizes_and_modes():
    modes = set()
    for seed in range(30):
        ph = generate_slice(seed, SIZE)
        img = render_8bit(ph, seed)
        assert img.dtype == np.uint8
        assert 200 <= max(img.shape[:2]) <= 1024
        modes.add(img.shape[2] if img.ndim == 3 else 1)
    assert 1 in modes and 3 in modes


def test_render_8bit_is_deterministic_per_seed():
    ph = generate_slice(9, SIZE)
    np.testing.assert_array_equal(render_8bit(ph, 4), render_8bit(ph, 4))


def test_decorations_do_not_depend_on_the_label():
    # The plan is drawn before anything about the image is known, so a normal and a
    # hemorrhage slice rendered with the same generator state get the same decorations.
    normal = generate_slice(1, SIZE, hemorrhage=False)
    bleed = generate_slice(1, SIZE, hemorrhage=True)
    for seed in range(20):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        assert decoration_plan(a) == decoration_plan(b)
        img_n, img_b = render_8bit(normal, seed), render_8bit(bleed, seed)
        assert img_n.ndim == img_b.ndim
    plans = [decoration_plan(np.random.default_rng(s)) for s in range(400)]
    assert 0.25 < np.mean([p["arrows"] > 0 for p in plans]) < 0.45


def test_write_dataset_refuses_bad_arguments(tmp_path):
    with pytest.raises(InvalidInputError, match="n must be"):
        write_dataset(tmp_path, 1)
    with pytest.raises(InvalidInputError, match="format"):
        write_dataset(tmp_path, 4, fmt="jpg")
    with pytest.raises(InvalidInputError, match="style"):
        write_dataset(tmp_path, 4, style="fancy")


def test_write_dataset_internet_style_masks_follow_the_image(tmp_path):
    import json

    write_dataset(tmp_path, 6, seed=2, size=96, style="internet")
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        img = cv2.imread(str(tmp_path / row["file"]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(tmp_path / row["mask"]), cv2.IMREAD_GRAYSCALE)
        assert img.shape[:2] == mask.shape
        assert set(np.unique(mask)) <= {0, 255}
        if row["label"]:
            assert row["bbox"] == mask_bbox(mask > 0)
        else:
            assert row["bbox"] is None and not mask.any()


def test_hemorrhage_series_never_fails_for_a_valid_request():
    # Short series near the vertex cannot show intraventricular blood: a drawn subtype must
    # give way to one the covered levels can show, never raise.
    subtypes = set()
    for seed in range(0, 200, 5):
        for n in (3, 6, 12):
            series = generate_series(seed, n_slices=n, size=64, hemorrhage=True)
            assert any(p.label for p in series), (seed, n)
            subtypes.add(series[0].subtype)
            for p in series:
                assert p.mask.any() == bool(p.label)
    assert len(subtypes) >= 3
    # the case from the bug report
    series = generate_series(5, n_slices=6, size=128, hemorrhage=True)
    assert any(p.label for p in series)


def test_impossible_series_request_raises_invalid_input_with_advice():
    with pytest.raises(InvalidInputError, match="intraventricular.*2-slice"):
        generate_series(5, n_slices=2, size=64, subtype="intraventricular")


def test_hemorrhage_slices_never_fail_at_small_sizes():
    for seed in range(60):
        ph = generate_slice(seed, 48, hemorrhage=True)
        assert ph.label == 1 and ph.mask.any() and ph.subtype in SUBTYPES


def test_series_top_slice_still_shows_brain():
    for seed in range(6):
        top = generate_series(seed, n_slices=2, size=64, hemorrhage=False)[-1]
        assert top.level == "vertex"
        assert top.brain_mask.sum() > 20


@pytest.mark.slow
def test_internet_renders_pass_the_plausibility_check():
    from brain_ct.framing import check_plausible
    from brain_ct.io import load_image

    refused = []
    n = 200
    for seed in range(n):
        ph = generate_slice(seed, 256)
        img = render_8bit(ph, np.random.default_rng([seed, 2]))
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".png", img)
        assert ok
        try:
            check_plausible(load_image(buf.tobytes()))
        except InvalidInputError as exc:
            refused.append((seed, ph.level, str(exc)[:80]))
    # measured 191/200 (95.5 %); the rest are skull-base/orbit slices in wide windows and
    # tight fields of view that cut the skull, which framing's rim heuristic refuses
    assert len(refused) <= 0.06 * n, refused


def test_internet_renders_of_the_skull_cap_are_not_saturated():
    from brain_ct.framing import check_plausible
    from brain_ct.io import load_image

    reasons = []
    for seed in range(30):
        ph = generate_slice(seed, 128, hemorrhage=False, level="vertex")
        img = render_8bit(ph, seed)
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR)
        try:
            check_plausible(load_image(cv2.imencode(".png", img)[1].tobytes()))
        except InvalidInputError as exc:
            reasons.append(str(exc))
    assert not [r for r in reasons if "saturated" in r], reasons


def _head_pixels(hu: np.ndarray) -> np.ndarray:
    """The head: the largest connected region above −300 HU, holes filled (no holder, no table)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((hu > -300).astype(np.uint8), connectivity=8)
    head = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    outside = np.pad(1 - head, 1, constant_values=1)
    flood = np.zeros((outside.shape[0] + 2, outside.shape[1] + 2), np.uint8)
    cv2.floodFill(outside, flood, (0, 0), 2)
    return outside[1:-1, 1:-1] != 2


def test_skull_is_as_thin_as_in_real_slices():
    """Between skull base and vertex real axial slices show bone (> 300 HU) in 10–18 % of the head
    (the GE series in data/real_anatomy: 11–14 % at these levels); phantoms used to show ~20 % (0.177
    for these seeds before the calvarium was thinned)."""
    fractions = []
    for i, level in enumerate(("suprasellar", "basal_ganglia", "ventricles") * 5):
        hu = generate_slice(500 + i, 192, hemorrhage=False, level=level).hu
        fractions.append(float((hu[_head_pixels(hu)] > 300).mean()))
    assert 0.08 <= float(np.median(fractions)) <= 0.16


def test_sphenoid_septum_follows_the_head_and_mastoid_cells_reach_the_petrous_level():
    from brain_ct.synthetic.anatomy import STANDARD_HEIGHT, Pose, render_anatomy, sample_head

    head = sample_head(np.random.default_rng(3), age=0.5)
    head.extras.update(pneumatisation=1.0, sph_septa=0.0, sph_septum_x=-4.0, sph_septum_tilt=0.0)
    hz = head.height / STANDARD_HEIGHT
    ai, bi = head.A - head.inner_offset, head.B_post - head.inner_offset
    pose = Pose(fov=240.0, cx=0.0, cy=0.0, rot=0.0, pitch=0.0, roll=0.0)  # 1 mm pixels, centre 120
    sl = render_anatomy(head, pose, 33 * hz, 240, np.random.default_rng(0))
    c = 120
    y0 = c + int(round(-0.22 * head.B_post))  # the sphenoid sinus, behind the nasal cavity
    sinus = sl.hu[y0 - 6 : y0 + 7]
    assert (sinus[:, c - 10 : c + 10] < -500).any(axis=1).sum() >= 10  # an air-filled sinus...
    assert (sinus[:, c - 5 : c - 3] > 300).any(axis=1).sum() >= 10  # ...split by its septum at x = -4 mm
    n_air, _ = cv2.connectedComponents((sinus[:, c - 14 : c + 15] < -500).astype(np.uint8), connectivity=4)
    assert n_air - 1 >= 2
    # mastoid air cells posterolateral to the petrous bone, on both sides, up to the petrous level
    sl = render_anatomy(head, pose, 36 * hz, 240, np.random.default_rng(0))
    for side in (-1, 1):
        x0, y1 = int(round(c + side * 0.86 * ai)), int(round(c + 0.34 * bi))
        assert (sl.hu[y1 - 12 : y1 + 13, x0 - 10 : x0 + 11] < -500).sum() >= 30
