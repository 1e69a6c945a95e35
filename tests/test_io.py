"""brain_ct.io: HU-correct DICOM loading, ordinary images, validation."""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import warnings
import zlib

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageOps
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.filewriter import dcmwrite
from pydicom.uid import JPEG2000Lossless, RLELossless

from brain_ct.dicom import quiet_dicom, read_dicom_header
from brain_ct.errors import InvalidInputError, NotHeadCTError
from brain_ct.hu import stored_to_hu
from brain_ct.io import CTImage, load_frames, load_image
from brain_ct.privacy import ALLOWED_META_KEYS
from brain_ct.source import MAX_PIXELS

# --------------------------------------------------------------------------- helpers


def ct_pixels(head_hu, size: int = 128, intercept: float = -1024.0) -> np.ndarray:
    """The head phantom as stored int16 values for slope 1 and the given intercept."""
    return np.round(head_hu(size) - intercept).astype(np.int16)


def relabelled_as_ct(name: str) -> bytes:
    """A pydicom test file with its Modality changed to CT (pixel data left as encoded)."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.Modality = "CT"
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def forged_png(width: int, height: int) -> bytes:
    """A tiny PNG file whose header declares ``width`` x ``height`` (a decompression bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- HU conversion, by hand


def test_hu_is_stored_times_slope_plus_intercept(make_ct_dataset, dicom_bytes, head_hu):
    pixels = ct_pixels(head_hu)
    pixels[0, 0], pixels[0, 1], pixels[0, 2] = 0, 1000, 2000
    ds = make_ct_dataset(pixels, RescaleSlope="2", RescaleIntercept="-1024")
    ct = load_image(dicom_bytes(ds))
    assert ct.source == "dicom"
    assert ct.hu.dtype == np.float32 and ct.hu.shape == (128, 128)
    # 0*2-1024, 1000*2-1024, 2000*2-1024
    assert ct.hu[0, :3].tolist() == [-1024.0, 976.0, 2976.0]
    np.testing.assert_array_equal(ct.hu, pixels.astype(np.float32) * 2 - 1024)


def test_display_is_brain_window(make_ct_dataset, dicom_bytes, head_hu):
    pixels = ct_pixels(head_hu)
    pixels[0, :4] = [1024, 1064, 1104, 900]  # HU 0, 40, 80, -124
    ct = load_image(dicom_bytes(make_ct_dataset(pixels)))
    assert ct.display.dtype == np.uint8
    # brain window 40/80: 0 HU -> 0, 40 HU -> 128 (127.5 rounded), 80 HU -> 255, below -> 0
    assert ct.display[0, :4].tolist() == [0, 128, 255, 0]


def test_missing_rescale_tags_default_with_note(make_ct_dataset, dicom_bytes, head_hu):
    pixels = ct_pixels(head_hu, intercept=0)
    ds = make_ct_dataset(pixels, RescaleSlope=None, RescaleIntercept=None)
    ct = load_image(dicom_bytes(ds))
    np.testing.assert_array_equal(ct.hu, pixels.astype(np.float32))
    assert any("RescaleSlope missing" in n for n in ct.meta["Notes"])
    assert any("RescaleIntercept missing" in n for n in ct.meta["Notes"])


def test_only_intercept_missing_keeps_slope(make_ct_dataset, head_hu):
    ds = make_ct_dataset(ct_pixels(head_hu, intercept=0), RescaleSlope="0.5", RescaleIntercept=None)
    notes: list[str] = []
    hu = stored_to_hu(np.array([[100, -40]], np.int16), ds, notes=notes)
    assert hu.tolist() == [[50.0, -20.0]]
    assert notes == ["RescaleIntercept missing: 0 assumed"]


def test_bad_rescale_slope_is_refused(make_ct_dataset, dicom_bytes, head_hu):
    ds = make_ct_dataset(ct_pixels(head_hu), RescaleSlope="0")
    with pytest.raises(InvalidInputError, match="RescaleSlope"):
        load_image(dicom_bytes(ds))


def test_monochrome1_unsigned_12_bit_is_mirrored(make_ct_dataset):
    ds = make_ct_dataset(
        np.zeros((64, 64), np.uint16), PhotometricInterpretation="MONOCHROME1", BitsStored=12
    )
    stored = np.array([[0, 4095, 1000]], np.uint16)
    # mirrored within 0..4095: 4095, 0, 3095; then - 1024
    assert stored_to_hu(stored, ds).tolist() == [[3071.0, -1024.0, 2071.0]]


def test_monochrome1_signed_is_mirrored(make_ct_dataset):
    ds = make_ct_dataset(
        np.zeros((64, 64), np.int16), PhotometricInterpretation="MONOCHROME1", RescaleIntercept="0"
    )
    stored = np.array([[-32768, 0, 1000]], np.int16)
    # signed 16 bit: s -> -32768 + 32767 - s = -1 - s
    assert stored_to_hu(stored, ds).tolist() == [[32767.0, -1.0, -1001.0]]


def test_monochrome1_file_shows_head_bright(make_ct_dataset, dicom_bytes, head_hu):
    hu = head_hu(128)
    stored = (4095 - np.round(hu + 1024)).astype(np.uint16)  # what a MONOCHROME1 writer stores
    ds = make_ct_dataset(stored, PhotometricInterpretation="MONOCHROME1", BitsStored=12)
    ct = load_image(dicom_bytes(ds))
    np.testing.assert_allclose(ct.hu, np.round(hu), atol=0.5)
    assert ct.display[64, 64] > 100  # brain is bright in the brain window, not inverted


def test_pixel_padding_value_becomes_air(make_ct_dataset):
    ds = make_ct_dataset(np.zeros((64, 64), np.int16), PixelPaddingValue=-2000)
    stored = np.array([[-2000, -1999, 1064]], np.int16)
    assert stored_to_hu(stored, ds).tolist() == [[-1000.0, -3023.0, 40.0]]


def test_pixel_padding_range_limit(make_ct_dataset):
    ds = make_ct_dataset(np.zeros((64, 64), np.int16), PixelPaddingValue=-2000, PixelPaddingRangeLimit=-1500)
    stored = np.array([[-2001, -2000, -1750, -1500, -1499]], np.int16)
    assert stored_to_hu(stored, ds).tolist() == [[-3025.0, -1000.0, -1000.0, -1000.0, -2523.0]]


def test_pixel_padding_written_unsigned_for_signed_data(make_ct_dataset):
    ds = make_ct_dataset(np.zeros((64, 64), np.int16))
    ds.add_new(0x00280120, "US", 63536)  # the 16-bit pattern of -2000
    stored = np.array([[-2000, 0]], np.int16)
    assert stored_to_hu(stored, ds).tolist() == [[-1000.0, -1024.0]]


def test_rsna_12_bit_intercept_fix(make_ct_dataset, dicom_bytes):
    pixels = np.zeros((64, 64), np.uint16)
    pixels[0, :5] = [0, 24, 3095, 3096, 4000]
    ds = make_ct_dataset(pixels, BitsStored=12, RescaleIntercept="0")
    ct = load_image(dicom_bytes(ds), allow_unverified=True)
    # stored + 1000, minus 4096 where that reaches 4096, then intercept -1000
    assert ct.hu[0, :5].tolist() == [0.0, 24.0, 3095.0, -1000.0, -96.0]
    assert any("RSNA" in n for n in ct.meta["Notes"])


def test_rsna_fix_not_applied_with_normal_intercept(make_ct_dataset):
    ds = make_ct_dataset(np.zeros((64, 64), np.uint16), BitsStored=12, RescaleIntercept="-1024")
    notes: list[str] = []
    assert stored_to_hu(np.array([[4000]], np.uint16), ds, notes=notes).tolist() == [[2976.0]]
    assert notes == []


def test_enhanced_ct_rescale_from_functional_groups(make_ct_dataset):
    ds = make_ct_dataset(np.zeros((64, 64), np.int16), RescaleSlope=None, RescaleIntercept=None)
    transform = pydicom.Dataset()
    transform.RescaleSlope = "1"
    transform.RescaleIntercept = "-1000"
    shared = pydicom.Dataset()
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    assert stored_to_hu(np.array([[1040]], np.int16), ds).tolist() == [[40.0]]


def test_multivalued_window_center_width_in_meta(make_ct_dataset, dicom_bytes, head_hu):
    ds = make_ct_dataset(ct_pixels(head_hu), WindowCenter=["40", "400"], WindowWidth=["80", "2000"])
    meta = load_image(dicom_bytes(ds)).meta
    assert meta["WindowCenter"] == [40.0, 400.0]
    assert meta["WindowWidth"] == [80.0, 2000.0]
    json.dumps(meta)


# --------------------------------------------------------------------------- real files


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_real_ct_files_decode_to_rescaled_hu(name):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    if "PixelPaddingValue" in ds:
        expected[ds.pixel_array == ds.PixelPaddingValue] = -1000.0
    # CT_small is a spine slice: refused as a head CT by default (test_framing), read when allowed.
    ct = load_image(path, allow_unverified=name == "CT_small.dcm")
    assert ct.meta["Modality"] == "CT"
    assert ct.name == name
    np.testing.assert_allclose(ct.hu, expected, atol=1e-3)


def test_j2k_head_slice_has_brain_in_hu_range():
    ct = load_image(get_testdata_file("J2K_pixelrep_mismatch.dcm"))
    x0, y0, x1, y1 = ct.head_box
    centre = ct.hu[(y0 + y1) // 2 - 10 : (y0 + y1) // 2 + 10, (x0 + x1) // 2 - 10 : (x0 + x1) // 2 + 10]
    # posterior fossa / brain tissue: roughly 20-60 HU; a wrong pixel representation gives nonsense
    assert 0 < float(np.median(centre)) < 80


def _is_dicom(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM":
        return True
    try:
        pydicom.dcmread(path, force=True, stop_before_pixels=True)
    except Exception:
        return False
    return not path.endswith((".txt", ".json", ".dump", ".gz", ".icc")) and os.path.basename(path) != "README"


#: pydicom's CT slices that are not of a head (CT_small: a thoracic vertebra, feet first, 85 mm wide).
NOT_HEAD_CT = {"CT_small.dcm"}

ALL_TEST_FILES = sorted(f for f in get_testdata_files() if os.path.isfile(f))


@pytest.mark.parametrize("path", ALL_TEST_FILES, ids=[os.path.basename(f) for f in ALL_TEST_FILES])
def test_every_pydicom_test_file_decodes_or_is_refused_clearly(path):
    if not _is_dicom(path):
        pytest.skip("not a DICOM file")
    header = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    modality = str(header.get("Modality", ""))
    big_enough = int(header.get("Rows") or 0) >= 64 and int(header.get("Columns") or 0) >= 64
    is_ct_image = modality == "CT" and "PixelData" in pydicom.dcmread(path, force=True) and big_enough
    try:
        ct = load_image(path)
    except NotHeadCTError as exc:
        assert os.path.basename(path) in NOT_HEAD_CT, f"a head CT slice was refused: {exc}"
        return
    except InvalidInputError as exc:
        assert not is_ct_image, f"a CT slice was refused: {exc}"
        assert len(str(exc)) > 20
        if modality and modality != "CT":
            assert modality in str(exc)
        return
    assert modality in ("CT", ""), "a non-CT modality was accepted"
    assert isinstance(ct, CTImage) and np.isfinite(ct.hu).all()


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("MR_small_RLE.dcm", "MR_small.dcm"),  # RLE Lossless
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),  # JPEG 2000 lossless
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless
        ("MR_small_bigendian.dcm", "MR_small.dcm"),  # Explicit VR big endian
        ("MR_small_implicit.dcm", "MR_small.dcm"),  # Implicit VR little endian
        ("JPGExtended.dcm", None),  # JPEG Extended (12-bit)
        ("JPEG2000.dcm", None),  # JPEG 2000
    ],
)
def test_compressed_transfer_syntaxes_decode(name, reference):
    """pydicom's grey test images of each compression, relabelled CT, decode to their pixels."""
    ct = load_image(relabelled_as_ct(name), allow_unverified=True)
    ds = pydicom.dcmread(get_testdata_file(reference or name))
    arr = ds.pixel_array if int(ds.get("NumberOfFrames", 1) or 1) == 1 else ds.pixel_array[0]
    np.testing.assert_allclose(ct.hu, arr.astype(np.float32), atol=1e-3)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "j2k"])
def test_compressed_ct_round_trip(syntax, make_ct_dataset, dicom_bytes, head_hu):
    pixels = ct_pixels(head_hu)
    ds = make_ct_dataset(pixels)
    ds.compress(syntax)
    ct = load_image(dicom_bytes(ds))
    assert ct.meta["TransferSyntax"] == syntax.name
    np.testing.assert_array_equal(ct.hu, pixels.astype(np.float32) - 1024)


def test_implicit_vr_without_preamble_and_extensionless_path(make_ct_dataset, head_hu, tmp_path):
    ds = make_ct_dataset(ct_pixels(head_hu))
    del ds.file_meta  # no preamble, no file meta: implicit VR little endian, as old exporters wrote
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
    data = buffer.getvalue()
    assert data[128:132] != b"DICM"
    path = tmp_path / "IM000001"
    path.write_bytes(data)
    ct = load_image(path)
    assert ct.name == "IM000001"
    np.testing.assert_array_equal(ct.hu, ct_pixels(head_hu).astype(np.float32) - 1024)


def test_file_object_and_name(make_ct_dataset, dicom_bytes, head_hu, tmp_path):
    path = tmp_path / "slice.dcm"
    path.write_bytes(dicom_bytes(make_ct_dataset(ct_pixels(head_hu))))
    with open(path, "rb") as f:
        assert load_image(f).name == "slice.dcm"
    assert load_image(path.read_bytes()).name == "upload"
    assert load_image(io.BytesIO(path.read_bytes()), name="x.dcm").name == "x.dcm"


def test_read_dicom_header_has_no_pixels(make_ct_dataset, dicom_bytes, head_hu):
    ds = make_ct_dataset(ct_pixels(head_hu), InstanceNumber=7, ImagePositionPatient=[0, 0, 12.5])
    header = read_dicom_header(dicom_bytes(ds))
    assert "PixelData" not in header
    assert header.SeriesInstanceUID == ds.SeriesInstanceUID
    assert int(header.InstanceNumber) == 7
    with pytest.raises(InvalidInputError, match="not a DICOM"):
        read_dicom_header(b"hello, this is plain text and not a DICOM file at all" * 4)


def test_meta_is_json_and_allow_listed(make_ct_dataset, dicom_bytes, head_hu):
    ds = make_ct_dataset(ct_pixels(head_hu), InstanceNumber=3, SliceThickness="5", KVP="120")
    ct = load_image(dicom_bytes(ds))
    assert set(ct.meta) <= ALLOWED_META_KEYS
    assert ct.meta["SliceThickness"] == 5.0 and ct.meta["InstanceNumber"] == 3
    assert ct.meta["PixelSpacing"] == [0.5, 0.5]
    assert ct.meta["SOPClass"] == "CT Image Storage"
    assert len(ct.meta["SeriesUIDHash"]) == 16
    json.loads(json.dumps(ct.meta))
    assert ct.shape == (128, 128)


# --------------------------------------------------------------------------- multi-frame


def _multiframe(make_ct_dataset, head_hu, frames: int = 3):
    base = ct_pixels(head_hu)
    stack = np.stack([base + 10 * i for i in range(frames)]).astype(np.int16)
    ds = make_ct_dataset(base)
    ds.NumberOfFrames = frames
    ds.PixelData = stack.tobytes()
    return ds, stack


def test_multiframe_middle_frame_by_default(make_ct_dataset, dicom_bytes, head_hu):
    ds, stack = _multiframe(make_ct_dataset, head_hu)
    data = dicom_bytes(ds)
    ct = load_image(data)
    assert ct.meta["NumberOfFrames"] == 3 and ct.meta["FrameIndex"] == 1
    np.testing.assert_array_equal(ct.hu, stack[1].astype(np.float32) - 1024)
    first = load_image(data, frame=0)
    np.testing.assert_array_equal(first.hu, stack[0].astype(np.float32) - 1024)
    with pytest.raises(InvalidInputError, match="frame 5 requested"):
        load_image(data, frame=5)


def test_load_frames_returns_every_frame(make_ct_dataset, dicom_bytes, head_hu):
    ds, stack = _multiframe(make_ct_dataset, head_hu, frames=4)
    frames = load_frames(dicom_bytes(ds))
    assert [f.meta["FrameIndex"] for f in frames] == [0, 1, 2, 3]
    for f, s in zip(frames, stack, strict=True):
        np.testing.assert_array_equal(f.hu, s.astype(np.float32) - 1024)
    single = load_frames(dicom_bytes(make_ct_dataset(ct_pixels(head_hu))))
    assert len(single) == 1 and "FrameIndex" not in single[0].meta


# --------------------------------------------------------------------------- Modality


def test_missing_modality_with_ct_sop_class_is_read_with_note(make_ct_dataset, dicom_bytes, head_hu):
    ct = load_image(dicom_bytes(make_ct_dataset(ct_pixels(head_hu), Modality=None)))
    assert any("SOP class" in n for n in ct.meta["Notes"])


def test_missing_modality_without_ct_evidence(make_ct_dataset, dicom_bytes, head_hu):
    ds = make_ct_dataset(ct_pixels(head_hu), Modality=None, SOPClassUID="1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    data = dicom_bytes(ds)
    with pytest.raises(NotHeadCTError, match="no \\(0008,0060\\) Modality"):
        load_image(data)
    ct = load_image(data, allow_unverified=True)
    assert any("allow_unverified" in n for n in ct.meta["Notes"])


# --------------------------------------------------------------------------- ordinary images


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff", ".webp"])
def test_ordinary_image_formats(ext, head_grey, encode_image):
    grey = head_grey(256)
    ct = load_image(encode_image(grey, ext))
    assert ct.source == "image" and ct.hu is None
    assert ct.display.dtype == np.uint8 and ct.display.shape == (256, 256)
    assert ct.meta["Format"] in ext.upper().replace(".JPG", "JPEG").replace(".TIFF", "TIFF")
    tolerance = 0 if ext in (".png", ".bmp", ".tiff") else 40
    assert np.abs(ct.display.astype(int) - grey).max() <= tolerance


def test_16_bit_png_is_stretched_to_8_bit(head_grey, encode_image):
    grey16 = head_grey(256).astype(np.uint16) * 100 + 500  # 500 .. 26000
    ct = load_image(encode_image(grey16))
    assert ct.hu is None and ct.meta["BitDepth"] == 16
    assert ct.display.min() == 0 and ct.display.max() == 255
    assert np.array_equal(ct.display > 100, head_grey(256) > 100)


def test_colour_image_converted_to_grey(head_grey, encode_image):
    bgr = cv2.cvtColor(head_grey(256), cv2.COLOR_GRAY2BGR)
    ct = load_image(encode_image(bgr, ".png"))
    assert ct.display.ndim == 2 and ct.meta["Channels"] == 3
    assert np.array_equal(ct.display, head_grey(256))
    assert ct.colour_fraction == 0.0


def test_rgba_flattened_onto_black(head_grey, encode_image):
    grey = head_grey(256)
    bgra = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    bgra[:, :20] = [255, 255, 255, 0]  # transparent white strip
    bgra[:, 20:30, 3] = 128  # half transparent
    ct = load_image(encode_image(bgra))
    assert ct.display[:, :20].max() == 0
    np.testing.assert_allclose(ct.display[:, 20:30], np.round(grey[:, 20:30] * (128 / 255)), atol=1)
    assert np.array_equal(ct.display[:, 30:], grey[:, 30:])


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_honoured(orientation, head_grey):
    grey = head_grey(256)[:, 20:230].copy()  # not square: rotations show in the shape
    grey[10:30, 10:40] = 255  # an asymmetric mark
    im = Image.fromarray(grey)
    exif = im.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))).convert("L"))
    ct = load_image(buffer.getvalue())
    assert ct.display.shape == expected.shape
    assert np.abs(ct.display.astype(int) - expected).mean() < 2


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"just some text renamed to .dcm, nothing else in it" * 10, "not a DICOM file or a supported image"),
        (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not a DICOM"),
        (b"GIF89a" + b"\x00" * 200, "GIF image, which is not supported"),
        (b"PK\x03\x04" + b"\x00" * 200, "zip archive"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "PNG"),
        (b"\x00" * 128 + b"DICM" + b"\xff" * 300, "DICOM"),
    ],
    ids=["empty", "text", "random", "gif", "zip", "png-garbage", "dicom-garbage"],
)
def test_unreadable_bytes(data, match):
    with pytest.raises(InvalidInputError, match=match):
        load_image(data)


def test_paths_that_are_not_files(tmp_path):
    with pytest.raises(InvalidInputError, match="no such file"):
        load_image(tmp_path / "missing.dcm")
    with pytest.raises(InvalidInputError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(InvalidInputError, match="binary mode"):
        load_image(io.StringIO("text"))
    with pytest.raises(InvalidInputError, match="cannot read a int"):
        load_image(5)


def test_truncated_dicom(make_ct_dataset, dicom_bytes, head_hu):
    data = dicom_bytes(make_ct_dataset(ct_pixels(head_hu)))
    with pytest.raises(InvalidInputError, match="truncated"):
        load_image(data[: len(data) // 2])


def test_truncated_png_and_jpeg(head_grey, encode_image):
    for ext in (".png", ".jpg"):
        data = encode_image(head_grey(256), ext)
        with pytest.raises(InvalidInputError, match="truncated"):
            load_image(data[: int(len(data) * 0.6)])


def test_dicom_without_pixel_data(make_ct_dataset, dicom_bytes, head_hu):
    ds = make_ct_dataset(ct_pixels(head_hu))
    del ds.PixelData
    with pytest.raises(InvalidInputError, match="no pixel data"):
        load_image(dicom_bytes(ds))


@pytest.mark.parametrize(
    ("modality", "match"),
    [
        ("MR", "this is an MR .*; the model expects a non-contrast head CT"),
        ("US", "ultrasound"),
        ("PT", "PET"),
        ("XYZ", "XYZ"),
    ],
)
def test_non_ct_modality_refused(modality, match, make_ct_dataset, dicom_bytes, head_hu):
    with pytest.raises(InvalidInputError, match=match):
        load_image(dicom_bytes(make_ct_dataset(ct_pixels(head_hu), Modality=modality)), allow_unverified=True)


def test_colour_dicom_refused(make_ct_dataset, dicom_bytes):
    rgb = np.zeros((64, 64 * 3), np.uint8)
    ds = make_ct_dataset(
        rgb, Columns=64, SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0
    )
    with pytest.raises(InvalidInputError, match="colour DICOM \\(RGB"):
        load_image(dicom_bytes(ds))
    ds = make_ct_dataset(np.zeros((64, 64), np.uint8), PhotometricInterpretation="PALETTE COLOR")
    with pytest.raises(InvalidInputError, match="PALETTE COLOR"):
        load_image(dicom_bytes(ds))


def test_too_small_images(make_ct_dataset, dicom_bytes, encode_image):
    with pytest.raises(InvalidInputError, match="1x1 pixels, too small"):
        load_image(encode_image(np.zeros((1, 1), np.uint8)))
    with pytest.raises(InvalidInputError, match="32x48 pixels, too small; at least 64"):
        load_image(dicom_bytes(make_ct_dataset(np.zeros((48, 32), np.int16))))


def test_decompression_bomb_png_refused_before_decoding():
    data = forged_png(30000, 30000)
    assert len(data) < 2000
    with pytest.raises(InvalidInputError, match="too large"):
        load_image(data)


def test_huge_dicom_header_refused_before_decoding(make_ct_dataset, dicom_bytes):
    ds = make_ct_dataset(np.zeros((64, 64), np.int16))
    ds.Rows, ds.Columns = 20000, 20000  # the header lies; the pixel data is tiny
    with pytest.raises(InvalidInputError, match="too large"):
        load_image(dicom_bytes(ds))
    assert MAX_PIXELS < 20000 * 20000


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_float_tiff(bad, head_grey, encode_image):
    image = head_grey(128).astype(np.float32)
    image[5, 5] = bad
    data = encode_image(image, ".tiff")
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        load_image(data)


def test_finite_float_tiff_is_read(head_grey, encode_image):
    image = head_grey(256).astype(np.float32) / 255.0
    ct = load_image(encode_image(image, ".tiff"))
    assert ct.meta["BitDepth"] == 32
    assert np.abs(ct.display.astype(int) - head_grey(256)).max() <= 1


# --------------------------------------------------------------------------- warnings while reading


def test_overlapping_quiet_reads_in_threads_restore_the_warning_filters():
    # Thread a enters, b enters, a leaves, b leaves: with a save/restore per call, b's exit
    # restored the filters a had changed, and warnings stayed off for the whole process.
    before = list(warnings.filters)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        with quiet_dicom():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def second() -> None:
        a_in.wait(5)
        with quiet_dicom():
            b_in.set()
            a_out.wait(5)
            seen["quiet_after_a_left"] = any(f[0] == "ignore" and f[2] is Warning for f in warnings.filters)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen["quiet_after_a_left"], "b's read lost its silencing when a left"
    assert warnings.filters == before


def test_many_concurrent_reads_leave_warnings_on(make_ct_dataset, dicom_bytes, head_hu):
    data = dicom_bytes(make_ct_dataset(ct_pixels(head_hu)))
    before = list(warnings.filters)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(5):
                load_image(data)
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert warnings.filters == before


# --------------------------------------------------------------------------- wording of refusals


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("rtplan.dcm", "a radiotherapy plan (RTPLAN)"),
        ("test-SR.dcm", "a structured report (SR)"),
        ("waveform_ecg.dcm", "an ECG waveform (ECG)"),
        ("rtstruct.dcm", "a radiotherapy structure set (RTSTRUCT)"),
    ],
)
def test_non_image_dicoms_are_called_not_images(name, kind):
    with pytest.raises(InvalidInputError) as info:
        load_image(get_testdata_file(name))
    message = str(info.value)
    assert f"this is {kind}, not an image" in message
    assert f"{kind} image" not in message


def test_image_modalities_are_still_called_images(make_ct_dataset, dicom_bytes, head_hu):
    data = dicom_bytes(make_ct_dataset(ct_pixels(head_hu), Modality="RTDOSE"))
    with pytest.raises(InvalidInputError, match=r"this is a radiotherapy dose \(RTDOSE\) image;"):
        load_image(data)


def test_dataset_without_file_meta_is_not_called_not_dicom():
    path = get_testdata_file("no_meta.dcm")  # CT_small without its file meta (and unparseable as is)
    with pytest.raises(InvalidInputError) as info:
        load_image(path)
    message = str(info.value)
    assert "not a DICOM file" not in message
    assert "DICOM dataset without its file meta header" in message


def test_random_bytes_are_still_not_dicom():
    data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(InvalidInputError, match="not a DICOM file"):
        load_image(data)


# --------------------------------------------------------------------------- sizes and decoders (issue 26)


def _big(head_grey, width: int, height: int) -> np.ndarray:
    return cv2.resize(head_grey(256), (width, height), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize(
    ("kind", "size", "expected"),
    [
        ("png16", (2600, 2600), (2048, 2048)),
        ("rgba", (3000, 1500), (1024, 2048)),
        ("tiff_float", (2200, 2100), (1955, 2048)),
        ("jpeg", (3000, 2200), (1100, 1500)),  # decoded by libjpeg at 1/2, nothing left to reduce
    ],
)
def test_large_honest_images_are_read_reduced_and_say_so(head_grey, encode_image, kind, size, expected):
    grey = _big(head_grey, *size)
    if kind == "png16":
        data = encode_image(grey.astype(np.uint16) * 257, ".png", (cv2.IMWRITE_PNG_COMPRESSION, 1))
    elif kind == "rgba":
        bgra = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGRA)
        data = encode_image(bgra, ".png", (cv2.IMWRITE_PNG_COMPRESSION, 1))
    elif kind == "tiff_float":
        data = encode_image(grey.astype(np.float32) / 255.0, ".tiff")
    else:
        data = encode_image(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95))
    ct = load_image(data, allow_unverified=True)
    assert ct.shape == expected
    assert any(f"of the image's {size[0]}x{size[1]}" in note for note in ct.meta["Notes"])
    # the same picture, only smaller
    want = cv2.resize(grey, (expected[1], expected[0]), interpolation=cv2.INTER_AREA).astype(np.float64)
    assert np.abs(ct.display.astype(np.float64) - want).mean() < 3.0


def test_small_images_are_read_whole_without_a_note(head_grey, encode_image):
    ct = load_image(encode_image(head_grey(512)))
    assert ct.shape == (512, 512) and "Notes" not in ct.meta


def _progressive_jpeg_with_scans(grey: np.ndarray, extra_scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated ``extra_scans`` times before its end marker."""
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    last = data.rfind(b"\xff\xda")
    scan = data[last : data.rfind(b"\xff\xd9")]
    return data[: data.rfind(b"\xff\xd9")] + scan * extra_scans + b"\xff\xd9"


def test_a_jpeg_of_thousands_of_scans_is_refused_before_decoding(head_grey):
    import time

    data = _progressive_jpeg_with_scans(head_grey(256), 2000)
    start = time.perf_counter()
    with pytest.raises(InvalidInputError, match=r"coded in 20\d\d scans; at most 100"):
        load_image(data)
    assert time.perf_counter() - start < 2.0
    assert load_image(_progressive_jpeg_with_scans(head_grey(256), 0)).shape == (256, 256)


def test_an_image_above_the_pixel_limit_is_refused_from_its_header():
    from badfiles import png_forged_header

    with pytest.raises(
        InvalidInputError, match=r"6000x6000 pixels \(36\.0 megapixels\), too large.*25\.0 megapixels"
    ):
        load_image(png_forged_header(6000, 6000))


def test_a_dicom_slice_above_the_slice_limit_is_refused_from_its_header(make_ct_dataset, dicom_bytes):
    ds = make_ct_dataset(np.zeros((64, 64), np.int16))
    ds.Rows = ds.Columns = 3000
    with pytest.raises(
        InvalidInputError, match=r"3000x3000 pixels \(9\.0 megapixels\), too large.*4\.2 megapixels"
    ):
        load_image(dicom_bytes(ds))


@pytest.mark.parametrize("loader", [load_image, load_frames])
def test_two_billion_declared_frames_are_refused_before_any_frame(
    make_ct_dataset, dicom_bytes, loader, head_hu
):
    ds = make_ct_dataset(ct_pixels(head_hu, 64), NumberOfFrames=2_000_000_000)
    with pytest.raises(
        InvalidInputError, match=r"declares 2000000000 frames; a scan may have at most 300 slices"
    ):
        loader(dicom_bytes(ds))


def test_a_frame_count_the_pixel_data_cannot_hold_is_refused(make_ct_dataset, dicom_bytes, head_hu):
    ds = make_ct_dataset(ct_pixels(head_hu, 64), NumberOfFrames=10)
    with pytest.raises(
        InvalidInputError, match=r"declares 10 frame\(s\) of 64x64 .*holds 8192 bytes; .*forged"
    ):
        load_frames(dicom_bytes(ds))


def test_a_stray_sequence_delimiter_after_the_pixels_is_ignored(make_ct_dataset, dicom_bytes, head_hu):
    data = dicom_bytes(make_ct_dataset(ct_pixels(head_hu, 128)))
    ct = load_image(data + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    assert np.array_equal(ct.hu, load_image(data).hu)


def test_a_library_failure_becomes_a_message_without_values(
    make_ct_dataset, dicom_bytes, head_hu, monkeypatch
):
    def broken(ds):
        raise KeyError("DOE^JANE")

    monkeypatch.setattr("brain_ct.dicom.extract_meta", broken)
    with pytest.raises(InvalidInputError, match=r"upload: the file is malformed .*KeyError") as info:
        load_image(dicom_bytes(make_ct_dataset(ct_pixels(head_hu, 128))))
    assert "DOE" not in str(info.value)


def test_an_error_without_a_message_still_says_something():
    assert str(InvalidInputError()).startswith("InvalidInputError: the input could not be read")


def test_a_zip_given_as_one_slice_points_to_reading_the_whole_scan():
    with pytest.raises(
        InvalidInputError, match=r"a zip archive, which holds a whole scan: .*'Whole scan' tab"
    ):
        load_image(b"PK\x03\x04" + bytes(200))


def test_a_large_deflated_dicom_is_refused_from_its_header_before_inflating(make_ct_dataset):
    import tracemalloc

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = make_ct_dataset(np.zeros((3000, 3000), np.int16))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    data = buffer.getvalue()
    assert len(data) < 100_000  # 18 MB of pixels deflate to almost nothing
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInputError, match=r"3000x3000 pixels \(9\.0 megapixels\), too large"):
            load_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak  # the 18 MB were never inflated
