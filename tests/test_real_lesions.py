"""brain_ct.synthetic.real_lesions and real_augment: lesions painted into the real GE slices of
data/real_anatomy, the variants made from one real slice, and the repository copy of those slices."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from brain_ct.errors import InvalidInputError
from brain_ct.io import load_image
from brain_ct.synthetic import SUBTYPES, render_internet, to_dicom
from brain_ct.synthetic.real_augment import as_phantom, deform, real_variant, rescan, sample_deformation
from brain_ct.synthetic.real_lesions import (
    BLOOD_HU,
    intracranial_space,
    lesion_room,
    paint_real_lesion,
)

GE = Path(__file__).resolve().parent.parent / "data" / "real_anatomy" / "dcm_qa_ct-GE"
SIZE = 256
#: Levels (file stems) from the posterior fossa to the high convexity, and two without room.
LEVELS = ("09", "11", "13", "15", "17", "19", "21", "23")
NO_ROOM = ("03", "28")
#: Partial volume blends blood at most this far (mm) outside the mask (σ ≤ 1 mm, 3.5 σ).
MARGIN_MM = 4.0


def _slice(stem: str) -> tuple[np.ndarray, float]:
    ct = load_image(GE / f"{stem}.dcm")
    factor = SIZE / ct.hu.shape[1]
    hu = cv2.resize(ct.hu, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return hu.astype(np.float32), float(ct.meta["PixelSpacing"][0]) / factor


@pytest.fixture(scope="module")
def slices() -> dict[str, tuple[np.ndarray, float]]:
    return {stem: _slice(stem) for stem in (*LEVELS, *NO_ROOM)}


def test_repo_copy_is_bit_identical_to_the_source() -> None:
    """The RLE Lossless copies decode to exactly the stored values of the source files (pixels.sha256)."""
    expected = dict(
        reversed(line.split("  ")) for line in (GE / "pixels.sha256").read_text().splitlines() if line
    )
    assert len(expected) == 28 and (GE / "LICENSE").is_file()
    for name, digest in expected.items():
        ds = pydicom.dcmread(GE / name)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
        assert hashlib.sha256(ds.pixel_array.astype("<i2").tobytes()).hexdigest() == digest, name


def test_intracranial_space_finds_brain_csf_and_ventricles(slices) -> None:
    hu, px = slices["17"]  # the lateral ventricles' level
    space = intracranial_space(hu, px)
    assert 120e2 < space.area_mm2 < 250e2  # an adult's supratentorial cavity: ~120–250 cm²
    assert space.ventricles.sum() * px * px > 300  # lateral ventricles, mm²
    assert not (space.cavity & (hu > 300)).any()  # never bone
    med = float(np.median(hu[space.brain]))
    assert 20 <= med <= 45
    assert float(np.median(hu[space.ventricles])) < 15


@pytest.mark.parametrize("stem", LEVELS)
@pytest.mark.parametrize("subtype", SUBTYPES)
def test_lesion_inside_cavity_acute_and_nothing_else_changes(slices, stem: str, subtype: str) -> None:
    hu, px = slices[stem]
    space = intracranial_space(hu, px)
    if subtype not in lesion_room(space):
        assert paint_real_lesion(hu, px, subtype, np.random.default_rng(0)) is None
        return
    out = paint_real_lesion(hu, px, subtype, np.random.default_rng(0), mass_effect=False, space=space)
    assert out is not None
    new, mask = out
    assert new.dtype == np.float32 and new.shape == hu.shape and mask.dtype == bool
    assert mask.any() and not (mask & ~space.cavity).any()
    vals = new[mask]
    assert BLOOD_HU[0] <= float(np.median(vals)) <= BLOOD_HU[1]
    assert np.percentile(vals, 2) >= BLOOD_HU[0] - 10 and np.percentile(vals, 98) <= BLOOD_HU[1] + 10
    rim_mm = MARGIN_MM + (6.0 if subtype == "intraparenchymal" else 0.0)  # + the oedema rim
    r = int(np.ceil(rim_mm / px))
    near = cv2.dilate(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)
    assert np.array_equal(new[~near], hu[~near])
    assert not np.array_equal(new[mask], hu[mask])


def test_every_subtype_fits_somewhere_and_some_levels_have_no_room(slices) -> None:
    rooms = {stem: lesion_room(intracranial_space(*slices[stem])) for stem in (*LEVELS, *NO_ROOM)}
    assert {s for stem in LEVELS for s in rooms[stem]} == set(SUBTYPES)
    assert all(len(rooms[stem]) >= 3 for stem in ("13", "15", "17", "19"))
    for stem in NO_ROOM:
        assert rooms[stem] == ()
        hu, px = slices[stem]
        assert all(paint_real_lesion(hu, px, s, np.random.default_rng(1)) is None for s in SUBTYPES)


def test_intraventricular_blood_layers_posteriorly(slices) -> None:
    hu, px = slices["17"]
    space = intracranial_space(hu, px)
    for seed in range(6):
        new, mask = paint_real_lesion(hu, px, "intraventricular", np.random.default_rng(seed), space=space)
        assert not (mask & ~space.ventricles).any()
        # In every ventricle it reaches, blood fills everything behind (below, in the image) a level.
        n, labels = cv2.connectedComponents(space.ventricles.astype(np.uint8), connectivity=8)
        rows = np.arange(hu.shape[0])[:, None]
        touched = 0
        for i in range(1, n):
            comp = labels == i
            if (mask & comp).any():
                touched += 1
                level = np.nonzero(mask & comp)[0].min()
                assert np.array_equal(mask & comp, comp & (rows >= level))
        assert touched >= 1


def test_painting_is_deterministic_per_seed(slices) -> None:
    hu, px = slices["15"]
    a = paint_real_lesion(hu, px, "subdural", np.random.default_rng(5))
    b = paint_real_lesion(hu, px, "subdural", np.random.default_rng(5))
    c = paint_real_lesion(hu, px, "subdural", np.random.default_rng(6))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_mass_effect_moves_brain_but_not_skull(slices) -> None:
    hu, px = slices["17"]
    space = intracranial_space(hu, px)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    pushed, mask = paint_real_lesion(hu, px, "subdural", rng_a, mass_effect=True, space=space)
    plain, mask_b = paint_real_lesion(hu, px, "subdural", rng_b, mass_effect=False, space=space)
    assert np.array_equal(mask, mask_b)
    far = ~cv2.dilate(mask.astype(np.uint8), np.ones((21, 21), np.uint8)).astype(bool)
    inside = space.cavity & far
    assert np.abs(pushed[inside] - plain[inside]).max() > 5.0  # brain shifted
    outside = ~cv2.dilate(space.cavity.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert np.array_equal(pushed[outside & far], hu[outside & far])  # bone and scalp untouched


def test_bad_inputs_raise_invalid_input(slices) -> None:
    hu, px = slices["15"]
    with pytest.raises(InvalidInputError, match="unknown hemorrhage subtype 'bleed'"):
        paint_real_lesion(hu, px, "bleed", np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match="2-D HU array"):
        paint_real_lesion(hu[None], px, "subdural", np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match="pixel spacing"):
        intracranial_space(hu, 0.0)


def test_deformation_moves_mask_with_the_image(slices) -> None:
    hu, px = slices["15"]
    new, mask = paint_real_lesion(hu, px, "intraparenchymal", np.random.default_rng(2), mass_effect=False)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        warped, wmask = deform(new, mask, px, sample_deformation(rng), rng)
        assert warped.shape == hu.shape and wmask.dtype == bool and wmask.any()
        assert float(np.median(warped[wmask])) > BLOOD_HU[0] - 5  # the mask still sits on the blood
        assert not np.array_equal(warped, new)


def test_rescan_changes_noise_and_keeps_hu_scale(slices) -> None:
    hu, px = slices["15"]
    out, scanner = rescan(hu, px, np.random.default_rng(0))
    brain = intracranial_space(hu, px).brain
    assert abs(float(np.median(out[brain])) - float(np.median(hu[brain]))) < 10
    assert not np.array_equal(out, hu) and scanner.kernel


def test_real_variant_writes_as_dicom_and_8bit(slices) -> None:
    hu, px = slices["13"]
    ph = real_variant(hu, px, np.random.default_rng(0), seed=11, subtype="subdural")
    assert ph.label == 1 and ph.subtype == "subdural" and ph.mask.any() and ph.level == "real"
    ds = to_dicom(ph)
    assert ds.Rows == hu.shape[0] and float(ds.PixelSpacing[0]) == pytest.approx(px, abs=1e-5)
    image, mask = render_internet(ph, np.random.default_rng(0))
    assert image.dtype == np.uint8 and mask.any()
    normal = real_variant(hu, px, np.random.default_rng(0), seed=12, augment=False)
    assert normal.label == 0 and np.array_equal(normal.hu, hu)
    assert real_variant(*slices["28"], np.random.default_rng(0), seed=1, subtype="subdural") is None
    assert as_phantom(hu, None, px, seed=3).bbox is None


def test_a_tightly_cropped_sliver_still_renders_at_least_min_side_pixels() -> None:
    from brain_ct.source import MIN_SIDE
    from brain_ct.synthetic.real_augment import as_phantom

    # a skull cap seen edge-on: a thin, wide band of bone (what a tight crop of a vertex level leaves)
    hu = np.full((256, 256), -1000.0, np.float32)
    hu[120:134, 20:236] = 1200.0
    sides = [min(render_internet(as_phantom(hu, None, 0.9, seed=0), np.random.default_rng(s))[0].shape[:2])
             for s in range(60)]  # fmt: skip
    assert min(sides) >= MIN_SIDE
