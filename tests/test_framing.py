"""brain_ct.framing: crop to the head, and the head-CT plausibility check."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from brain_ct import framing
from brain_ct.errors import NotHeadCTError
from brain_ct.io import CTImage, load_image
from brain_ct.windowing import window


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def box_grey(grey: np.ndarray) -> tuple[int, int, int, int]:
    """The head box of an 8-bit grey image, as :func:`brain_ct.io.load_image` finds it."""
    return framing.head_box(framing.outline_from_grey(grey)[0], grey.shape)


def box_hu(hu: np.ndarray) -> tuple[int, int, int, int]:
    """The head box of a slice in HU, as the DICOM and NIfTI readers find it."""
    return framing.head_box(framing.outline_from_hu(hu), hu.shape)


def true_box(grey: np.ndarray, dx: int = 0, dy: int = 0) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(grey > 0)
    return int(xs.min()) + dx, int(ys.min()) + dy, int(xs.max()) + 1 + dx, int(ys.max()) + 1 + dy


def internet_figure(head: np.ndarray, background: int = 0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The head pasted into a BGR figure with a panel letter, caption, ruler, red arrow and frame."""
    h, w = head.shape
    canvas = np.full((h + 160, w + 300, 3), background, np.uint8)
    oy, ox = 60, 150
    canvas[oy : oy + h, ox : ox + w] = head[..., None]
    ink = (255, 255, 255) if background < 128 else (0, 0, 0)
    cv2.putText(canvas, "B", (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 2.0, ink, 5)
    cv2.putText(
        canvas, "Fig. 2: acute subdural haematoma", (20, h + 130), cv2.FONT_HERSHEY_SIMPLEX, 0.8, ink, 2
    )
    for x in range(20, 130, 10):  # a ruler
        cv2.line(canvas, (x, h + 80), (x, h + 95 if x % 50 else h + 100), ink, 1)
    cv2.arrowedLine(canvas, (w + 270, 90), (ox + w - 40, oy + h // 3), (0, 0, 255), 4, tipLength=0.25)
    cv2.rectangle(canvas, (2, 2), (canvas.shape[1] - 3, canvas.shape[0] - 3), ink, 3)  # a frame
    return canvas, true_box(head, ox, oy)


# --------------------------------------------------------------------------- cropping


def test_phantom_in_a_figure_is_cropped_back_to_the_head(head_grey, encode_image):
    figure, truth = internet_figure(head_grey(256))
    ct = load_image(encode_image(figure, ".png"))
    assert iou(ct.head_box, truth) >= 0.9
    assert iou(box_grey(cv2.cvtColor(figure, cv2.COLOR_BGR2GRAY)), truth) >= 0.9


def test_figure_on_a_white_page(head_grey, encode_image):
    head = head_grey(256)
    page = np.full((500, 700), 255, np.uint8)
    page[100:400, 200:500] = 0  # the CT panel's own black square
    page[122:378, 222:478] = head
    cv2.putText(page, "Figure 3", (20, 470), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 0, 2)
    ct = load_image(encode_image(page, ".jpg"))
    assert iou(ct.head_box, true_box(head, 222, 122)) >= 0.9


def test_largest_of_several_panels_is_chosen(head_grey):
    big, small = head_grey(256), head_grey(160)
    canvas = np.zeros((300, 480), np.uint8)
    canvas[20:276, 10:266] = big
    canvas[60:220, 300:460] = small
    cv2.putText(canvas, "A", (5, 290), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
    assert iou(box_grey(canvas), true_box(big, 10, 20)) >= 0.9


def test_hu_head_box_ignores_the_head_holder(head_hu):
    hu = head_hu(256)
    holder = np.full_like(hu, -1000.0)
    cv2.ellipse(holder, (128, 128), (120, 124), 0, 20, 160, 300.0, 2)  # thin curved head rest
    hu = np.maximum(hu, holder)
    box = box_hu(hu)
    assert iou(box, true_box(head_hu(256) > -300)) >= 0.95


def test_real_dicom_head_box_covers_the_head():
    ct = load_image(get_testdata_file("693_J2KI.dcm"))
    x0, y0, x1, y1 = ct.head_box
    # the head is the bright oval in the middle; the arcs of the head holder are left out
    assert 100 < x0 < 160 and 60 < y0 < 120 and 380 < x1 < 440 and 420 < y1 < 480
    inside = ct.hu[y0:y1, x0:x1] > framing.TISSUE_HU
    assert (ct.hu > framing.TISSUE_HU).sum() - inside.sum() < 0.06 * inside.sum()  # thin holder arcs only


def test_nothing_found_gives_the_whole_image():
    assert box_grey(np.zeros((100, 120), np.uint8)) == (0, 0, 120, 100)
    assert box_hu(np.full((100, 120), -1000.0, np.float32)) == (0, 0, 120, 100)


# --------------------------------------------------------------------------- accepted


def test_figure_with_coloured_arrow_and_captions_is_accepted(head_grey, encode_image):
    figure, _ = internet_figure(head_grey(300))
    ct = load_image(encode_image(figure, ".jpg"))
    assert 0 < ct.colour_fraction < framing.MAX_COLOUR_FRACTION


@pytest.mark.parametrize("name", ["693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"])
@pytest.mark.parametrize(
    "preset", [(40, 80), (80, 200), (600, 2800), (40, 380)], ids=["brain", "subdural", "bone", "soft"]
)
@pytest.mark.parametrize(("size", "ext"), [(512, ".png"), (200, ".jpg")])
def test_real_head_ct_exported_as_image_is_accepted(name, preset, size, ext, encode_image):
    hu = load_image(get_testdata_file(name)).hu
    grey = (window(hu, *preset) * 255 + 0.5).astype(np.uint8)
    grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
    ct = load_image(encode_image(grey, ext))
    assert ct.head_box != (0, 0, size, size)


def test_rgba_png_of_a_head_is_accepted(head_grey, encode_image):
    grey = head_grey(256)
    rgba = np.dstack([grey, grey, grey, np.where(grey > 0, 255, 0).astype(np.uint8)])
    ct = load_image(encode_image(rgba, ".png"))
    assert iou(ct.head_box, true_box(grey)) >= 0.95


def test_real_ct_dicoms_pass_the_lenient_dicom_check():
    for name in ("CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"):
        framing.check_plausible(load_image(get_testdata_file(name), allow_unverified=True))


# --------------------------------------------------------------------------- refused


def test_colour_photo_is_refused(encode_image):
    rng = np.random.default_rng(3)
    photo = cv2.resize(
        rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (400, 300), interpolation=cv2.INTER_CUBIC
    )
    with pytest.raises(NotHeadCTError, match="colour picture"):
        load_image(encode_image(photo, ".jpg"))
    ct = load_image(encode_image(photo, ".jpg"), allow_unverified=True)
    assert ct.colour_fraction > framing.MAX_COLOUR_FRACTION


@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_image_is_refused(value, encode_image):
    with pytest.raises(NotHeadCTError, match="blank"):
        load_image(encode_image(np.full((300, 300), value, np.uint8)))


def chest_radiograph(size: int = 512) -> np.ndarray:
    """A crude frontal chest radiograph: body running off the edges, dark lungs, spine, ribs."""
    cxr = np.zeros((size, size), np.uint8)
    s = size / 512
    body = (np.array([[0, 512], [0, 150], [150, 40], [362, 40], [512, 150], [512, 512]]) * s).astype(np.int32)
    cv2.fillPoly(cxr, [body], 120)
    for cx in (170, 342):
        cv2.ellipse(cxr, (int(cx * s), int(280 * s)), (int(70 * s), int(150 * s)), 0, 0, 360, 40, -1)
    cv2.rectangle(cxr, (int(226 * s), int(40 * s)), (int(286 * s), size), 200, -1)
    for y in range(150, 420, 40):
        cv2.ellipse(
            cxr, (int(256 * s), int(y * s)), (int(200 * s), int(60 * s)), 0, 200, 340, 180, max(1, int(6 * s))
        )
    return cv2.GaussianBlur(cxr, (15, 15), 0)


def test_chest_radiograph_is_refused(encode_image):
    cxr = chest_radiograph()
    with pytest.raises(NotHeadCTError, match="does not look like an axial head CT slice"):
        load_image(encode_image(cxr))
    framed = np.zeros((600, 600), np.uint8)
    framed[44:556, 44:556] = cxr  # the same radiograph inside a black margin
    with pytest.raises(NotHeadCTError, match="skull"):
        load_image(encode_image(framed))


def test_tiny_bright_mark_is_refused(encode_image):
    image = np.zeros((400, 400), np.uint8)
    cv2.circle(image, (200, 200), 28, 200, -1)  # 1.5 % of the image
    with pytest.raises(NotHeadCTError, match="only"):
        load_image(encode_image(image))


def test_saturated_white_head_is_refused(encode_image):
    image = np.zeros((300, 300), np.uint8)
    cv2.ellipse(image, (150, 150), (100, 125), 0, 0, 360, 255, -1)  # a window that whites out the brain
    with pytest.raises(NotHeadCTError, match="saturated white"):
        load_image(encode_image(image))


def test_override_message_and_allow_unverified(encode_image):
    data = encode_image(np.full((300, 300), 90, np.uint8))
    with pytest.raises(NotHeadCTError, match="allow_unverified=True"):
        load_image(data)
    ct = load_image(data, allow_unverified=True)
    assert ct.head_box == (0, 0, 300, 300)


def _ct(hu: np.ndarray, **meta) -> CTImage:
    display = (window(hu, 40, 80) * 255).astype(np.uint8)
    return CTImage(
        hu=hu, display=display, meta=meta, head_box=(0, 0, hu.shape[1], hu.shape[0]), source="dicom", name="t"
    )


def test_dicom_checks(head_hu):
    framing.check_plausible(_ct(head_hu(256), PixelSpacing=[0.5, 0.5]))
    with pytest.raises(NotHeadCTError, match="localizer"):
        framing.check_plausible(_ct(head_hu(256), ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]))
    with pytest.raises(NotHeadCTError, match="blank"):
        framing.check_plausible(_ct(np.full((128, 128), 40.0, np.float32)))
    air = np.full((128, 128), -1000.0, np.float32)
    air[::7, ::5] = -990.0
    with pytest.raises(NotHeadCTError, match="no tissue"):
        framing.check_plausible(_ct(air))
    # the same outline at 1.5 mm per pixel is ~310 x 310 mm: a trunk, not a head
    with pytest.raises(NotHeadCTError, match="larger than a head"):
        framing.check_plausible(_ct(head_hu(256, scale=1.2), PixelSpacing=[1.5, 1.5]))


def test_colour_fraction():
    grey = np.full((50, 50, 3), 120, np.uint8)
    assert framing.colour_fraction(grey) == 0.0
    red = grey.copy()
    red[:10] = (0, 0, 255)
    assert framing.colour_fraction(red) == pytest.approx(0.2)
    dark = np.zeros((50, 50, 3), np.uint8)
    dark[..., 2] = 40  # too dark to have a reliable hue
    assert framing.colour_fraction(dark) == 0.0


# --------------------------------------------------------------------------- the headers' say


def _head_dicom(make_ct_dataset, dicom_bytes, head_hu, **tags) -> bytes:
    """A plausible head slice (256 px x 0.9 mm = 230 mm field of view) with the given header tags."""
    pixels = np.round(head_hu(256) + 1024).astype(np.int16)
    return dicom_bytes(make_ct_dataset(pixels, PixelSpacing=[0.9, 0.9], **tags))


HEADER_FIELDS = ("BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName")


@pytest.mark.parametrize("field", HEADER_FIELDS)
@pytest.mark.parametrize(
    "text", ["HEAD", "BRAIN", "CT HEAD W/O", "AXIAL HEAD 5mm", "HEADNECK", "CTA HEAD/NECK", "Schadel nativ"]
)
def test_head_descriptions_pass(field, text, make_ct_dataset, dicom_bytes, head_hu):
    ct = load_image(_head_dicom(make_ct_dataset, dicom_bytes, head_hu, **{field: text}))
    assert ct.hu is not None


@pytest.mark.parametrize("field", HEADER_FIELDS)
@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("CHEST", "chest"),
        ("ABDOMEN", "abdomen"),
        ("SPINE", "spine"),
        ("L-SPINE", "spine"),
        ("LSPINE", "spine"),
        ("CT CHEST W/CONTRAST", "chest"),
        ("PELVIS", "pelvis"),
        ("KNEE LEFT", "limb"),
    ],
)
def test_other_body_regions_are_refused_with_the_reason(
    field, text, region, make_ct_dataset, dicom_bytes, head_hu
):
    data = _head_dicom(make_ct_dataset, dicom_bytes, head_hu, **{field: text})
    with pytest.raises(NotHeadCTError, match=rf"names the {region}") as info:
        load_image(data)
    assert "allow_unverified" in str(info.value)
    ct = load_image(data, allow_unverified=True)  # overridable, as the image check is
    assert any("not verified as a head CT" in note for note in ct.meta["Notes"])


def test_a_head_word_wins_over_another_region(make_ct_dataset, dicom_bytes, head_hu):
    load_image(
        _head_dicom(
            make_ct_dataset, dicom_bytes, head_hu, BodyPartExamined="HEAD", StudyDescription="CHEST ABD"
        )
    )


def test_the_refusal_does_not_quote_the_description(make_ct_dataset, dicom_bytes, head_hu):
    data = _head_dicom(make_ct_dataset, dicom_bytes, head_hu, SeriesDescription="CHEST for Zorblatt 4411")
    with pytest.raises(NotHeadCTError) as info:
        load_image(data)
    assert "Zorblatt" not in str(info.value) and "4411" not in str(info.value)


def test_pydicom_ct_small_spine_slice_is_refused_from_its_header():
    path = get_testdata_file("CT_small.dcm")  # a thoracic vertebra, feet first, 85 mm field of view
    with pytest.raises(NotHeadCTError, match=r"feet first.*85 mm"):
        load_image(path)
    assert load_image(path, allow_unverified=True).hu.shape == (128, 128)


@pytest.mark.parametrize(
    "tags",
    [
        {},  # nothing said: never refused for missing tags
        {"PatientPosition": "FFS"},  # feet first alone
        {"PixelSpacing": [0.3, 0.3]},  # small field of view alone (77 mm: a temporal-bone reconstruction)
        {"PatientPosition": None, "PixelSpacing": None},
        {"BodyPartExamined": "", "SeriesDescription": "5/5mm Plain", "StudyDescription": "e+1"},
    ],
)
def test_weak_or_missing_header_signs_alone_never_refuse(tags, make_ct_dataset, dicom_bytes, head_hu):
    pixels = np.round(head_hu(256) + 1024).astype(np.int16)
    base = {"PixelSpacing": [0.9, 0.9]}
    base.update(tags)
    load_image(dicom_bytes(make_ct_dataset(pixels, **base)))


def test_feet_first_with_a_small_field_of_view_is_refused(make_ct_dataset, dicom_bytes, head_hu):
    pixels = np.round(head_hu(256) + 1024).astype(np.int16)
    data = dicom_bytes(make_ct_dataset(pixels, PatientPosition="FFS", PixelSpacing=[0.3, 0.3]))
    with pytest.raises(NotHeadCTError, match="feet first"):
        load_image(data)


REAL_HEAD_CT_DIR = Path(__file__).resolve().parents[1] / "data" / "real_anatomy" / "dcm_qa_ct-GE"


def test_real_head_cts_pass_the_header_check():
    import glob

    paths = [get_testdata_file("693_J2KI.dcm"), get_testdata_file("J2K_pixelrep_mismatch.dcm")]
    paths += sorted(glob.glob(f"{REAL_HEAD_CT_DIR}/*.dcm"))
    for path in paths:
        load_image(path)
    assert len(paths) == 30


def test_synthetic_phantom_dicoms_pass_the_header_check():
    from helpers_dicom import dicom_bytes as write

    from brain_ct.synthetic import generate_slice, to_dicom

    for seed in range(4):
        load_image(write(to_dicom(generate_slice(seed, 256))))


def test_malformed_pixel_spacing_says_nothing(make_ct_dataset, dicom_bytes, head_hu):
    pixels = np.round(head_hu(256) + 1024).astype(np.int16)
    load_image(dicom_bytes(make_ct_dataset(pixels, PixelSpacing="0.3", PatientPosition="FFS")))


# --------------------------------------------------------------------------- flat synthetic shapes


def _flat_shapes(size: int = 300) -> dict[str, np.ndarray]:
    """Shapes that pass every outline test (size, ellipse, bright rim) but show no brain inside."""
    c = (size // 2, size // 2)
    ring = np.zeros((size, size), np.uint8)
    cv2.ellipse(ring, c, (int(0.35 * size), int(0.42 * size)), 0, 0, 360, 255, -1)
    cv2.ellipse(ring, c, (int(0.32 * size), int(0.39 * size)), 0, 0, 360, 110, -1)
    disc = np.zeros((size, size), np.uint8)
    cv2.circle(disc, c, int(0.4 * size), 128, -1)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(xx - size / 2, yy - size / 2) / (0.4 * size)
    gradient = np.where(r <= 1, 60 + 195 * r**3, 0).astype(np.uint8)  # bright at the edge, like a skull
    return {"ellipse in a white ring": ring, "flat disc": disc, "radial gradient disc": gradient}


@pytest.mark.parametrize("ext", [".png", ".jpg"])
@pytest.mark.parametrize("shape", ["ellipse in a white ring", "flat disc", "radial gradient disc"])
def test_flat_synthetic_shapes_are_refused(shape, ext, encode_image):
    data = encode_image(_flat_shapes()[shape], ext)
    with pytest.raises(NotHeadCTError, match="does not look like an axial head CT slice") as info:
        load_image(data)
    assert "allow_unverified=True" in str(info.value)
    load_image(data, allow_unverified=True)


def test_the_ring_is_refused_for_being_flat_not_for_its_outline(encode_image):
    with pytest.raises(NotHeadCTError, match="flat: no brain texture and no structures"):
        load_image(encode_image(_flat_shapes()["ellipse in a white ring"]))


def test_inner_edges_measure_structure(head_grey):
    ring = _flat_shapes()["ellipse in a white ring"]
    outline, small = framing.outline_from_grey(ring)
    length, pieces = framing.inner_edges(small, outline)
    assert 0.8 < length < framing.MIN_INNER_EDGE_LENGTH and pieces == 1  # the ring's inner edge only
    grey = head_grey(300)  # scalp, skull and two ventricles: the skull's two edges and the ventricles'
    outline, small = framing.outline_from_grey(grey)
    length, pieces = framing.inner_edges(small, outline)
    assert length > 1.5 * framing.MIN_INNER_EDGE_LENGTH and pieces >= framing.MIN_INNER_EDGE_PIECES


REAL_SLICES = [
    "693_J2KI.dcm",
    "J2K_pixelrep_mismatch.dcm",
    *(f"{REAL_HEAD_CT_DIR.name}/{n:02d}.dcm" for n in (1, 4, 9, 14, 18, 22, 25)),
]
WINDOWS = {"brain": (40, 80), "subdural": (80, 200), "bone": (600, 2800), "soft": (40, 380)}


def _real_path(name: str) -> str:
    return str(REAL_HEAD_CT_DIR / Path(name).name) if "/" in name else get_testdata_file(name)


@pytest.mark.parametrize("name", REAL_SLICES)
def test_real_slices_still_pass_as_dicom_and_as_8_bit_renders(name, encode_image):
    ct = load_image(_real_path(name))  # the DICOM itself
    passed = 0
    for preset in WINDOWS.values():
        grey = (window(ct.hu, *preset) * 255 + 0.5).astype(np.uint8)
        for size, ext in ((512, ".png"), (200, ".jpg")):
            data = encode_image(cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA), ext)
            outline, work = framing.outline_from_grey(cv2.imdecode(np.frombuffer(data, np.uint8), 0))
            if outline is not None:
                # Renders refused before this check (a saturated window, no rim) are not its business;
                # what it alone decides must never call a real slice flat.
                assert not framing._is_flat(work, outline), (name, preset, size)
            load_image(data, allow_unverified=True)
            passed += 1
    assert passed == 8
    brain = (window(ct.hu, *WINDOWS["brain"]) * 255 + 0.5).astype(np.uint8)
    load_image(encode_image(brain, ".png"))  # the brain window passes the whole check


@pytest.mark.parametrize("seed", range(6))
def test_phantoms_pass_as_dicom_and_as_internet_figures(seed, encode_image):
    from helpers_dicom import dicom_bytes as write

    from brain_ct.synthetic import generate_slice, to_dicom
    from brain_ct.synthetic.export import render_internet

    phantom = generate_slice(seed, 256)
    load_image(write(to_dicom(phantom)))
    figure, _ = render_internet(phantom, np.random.default_rng(seed))
    if figure.ndim == 3:  # RGB(A) as the generator gives it; OpenCV writes BGR(A)
        figure = cv2.cvtColor(figure, cv2.COLOR_RGB2BGR if figure.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    load_image(encode_image(figure, ".png"))


@pytest.mark.parametrize("name", ["synthetic_intraparenchymal_figure.png", "synthetic_normal_figure.jpg"])
def test_example_figures_pass(name):
    load_image(Path(__file__).resolve().parents[1] / "examples" / name)
