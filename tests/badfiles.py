"""A seeded generator of hostile and broken inputs (and a few valid but unusual CT files).

Used by ``tests/test_bad_inputs.py``: every file is written into a folder given by the caller,
built in code (no download), small on disk even when it declares a gigantic image, and labelled
with what the library must do with it: refuse it with :class:`~brain_ct.errors.InvalidInputError`
(``expect="error"``) or read it as a CT slice (``expect="ok"``).

Usage (pytest puts ``tests/`` on ``sys.path``)::

    from badfiles import make_bad_files

    files = make_bad_files(tmp_path, seed=0)
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from hostile import make_hostile_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)

from brain_ct.synthetic import generate_slice, plain_8bit, to_dicom

#: Side, in pixels, of the decompression-bomb PNG (30000 × 30000 = 900 megapixels, ~0.1 MB on disk).
BOMB_SIDE = 30000

#: Uncompressed size of the zip bomb's single entry (64 MiB of zeros, ~64 KiB compressed).
ZIP_BOMB_BYTES = 64 << 20


@dataclass(frozen=True)
class BadFile:
    """One generated input.

    Attributes:
        key: short identifier, used as the pytest id.
        path: where the file was written.
        expect: ``"error"`` (must raise InvalidInputError) or ``"ok"`` (a valid CT slice).
        kind: ``"slice"`` (a single file), ``"zip"`` (an archive: a series input) or ``"bomb"``
            (declares far more pixels than the limits allow; run under a memory limit).
        why: what is wrong with it, for failure messages.
    """

    key: str
    path: Path
    expect: str
    kind: str
    why: str


# --------------------------------------------------------------------------- building blocks


def head_phantom(seed: int = 0, size: int = 256):
    """A normal synthetic head-CT phantom at the lateral-ventricle level (plausible at any size ≥ 128)."""
    return generate_slice(seed, size, hemorrhage=False, level="ventricles")


def ct_dataset(seed: int = 0, size: int = 256) -> Dataset:
    """A valid, realistic CT DICOM dataset (explicit VR little endian) of a synthetic head."""
    return to_dicom(head_phantom(seed, size))


def dicom_bytes(ds: Dataset, *, implicit_vr: bool | None = None, little_endian: bool | None = None) -> bytes:
    """``ds`` written as a DICOM file (preamble + file meta) into bytes."""
    buffer = io.BytesIO()
    if implicit_vr is None and little_endian is None:
        dcmwrite(buffer, ds, enforce_file_format=True)
    else:
        dcmwrite(buffer, ds, enforce_file_format=True, implicit_vr=implicit_vr, little_endian=little_endian)
    return buffer.getvalue()


def _plain_dataset(pixels: np.ndarray, *, modality: str = "CT", sop_class: str = CTImageStorage) -> Dataset:
    """A minimal image dataset around ``pixels`` (uint8/int16 [H, W] or uint8 [H, W, 3])."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 else pixels.shape[2]
    ds.PhotometricInterpretation = "MONOCHROME2" if pixels.ndim == 2 else "RGB"
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if modality == "CT":
        ds.RescaleSlope = "1"
        ds.RescaleIntercept = "-1024"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def _stored(seed: int, size: int) -> np.ndarray:
    """int16 stored values (HU + 1024) of a synthetic head."""
    return np.clip(np.round(head_phantom(seed, size).hu + 1024), -32768, 32767).astype(np.int16)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bomb(side: int = BOMB_SIDE) -> bytes:
    """A genuine, valid 1-bit greyscale PNG of ``side`` × ``side`` pixels, all black.

    900 megapixels decode to ~0.9 GB as 8-bit grey (more as BGR); the file is ~0.1 MB, built by
    streaming the zero rows through zlib (no big buffer is ever held).
    """
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte 0 + packed 1-bit pixels
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * 1000) for _ in range(side // 1000)]
    parts.append(comp.compress(row * (side % 1000)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def png_forged_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose IHDR declares ``width`` × ``height`` 8-bit RGB pixels but holds one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def zip_bomb(entry_bytes: int = ZIP_BOMB_BYTES) -> bytes:
    """A zip whose single entry inflates from ~``entry_bytes``/1000 to ``entry_bytes`` zeros."""
    buffer = io.BytesIO()
    chunk = b"\x00" * (1 << 20)
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open("slice_001.dcm", "w", force_zip64=True) as fh,
    ):
        for _ in range(entry_bytes // len(chunk)):
            fh.write(chunk)
    return buffer.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)  # ZipInfo keeps "../" and "/abs" names as written
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buffer.getvalue()


def _encode(image: np.ndarray, ext: str) -> bytes:
    ok, buffer = cv2.imencode(ext, image)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {ext}")
    return buffer.tobytes()


# --------------------------------------------------------------------------- the corpus


def make_bad_files(folder: str | Path, seed: int = 0, *, include_bombs: bool = True) -> list[BadFile]:
    """Write the corpus of hostile/broken inputs (and valid unusual CTs) into ``folder``.

    Args:
        folder: an existing or new folder (created).
        seed: seeds the random bytes and the phantoms; the same seed writes the same files.
        include_bombs: also write the inputs that declare gigantic images (kind ``"bomb"``).

    Returns:
        One :class:`BadFile` per written file, in a fixed order.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files: list[BadFile] = []

    def add(key: str, name: str, data: bytes, expect: str, why: str, kind: str = "slice") -> None:
        path = out / name
        path.write_bytes(data)
        files.append(BadFile(key, path, expect, kind, why))

    good_ds = ct_dataset(seed)
    good = dicom_bytes(good_ds)
    stored = _stored(seed, 256)
    head_png = _encode(plain_8bit(head_phantom(seed).hu), ".png")

    # ---- empty, text, random bytes
    add("zero_bytes", "empty.dcm", b"", "error", "zero-byte file")
    add("text_as_dcm", "notes.dcm", b"Patient scan notes: see attached.\n" * 20, "error", "text renamed .dcm")
    add("random_bytes", "random.bin", rng.bytes(4096), "error", "seeded random bytes")
    add("random_as_dcm", "random.dcm", rng.bytes(20000), "error", "random bytes named .dcm")
    add(
        "random_with_preamble",
        "random_preamble.dcm",
        rng.bytes(128) + b"DICM" + rng.bytes(4000),
        "error",
        "a DICM preamble followed by random bytes",
    )
    add("gif", "figure.gif", b"GIF89a" + rng.bytes(200), "error", "a GIF")
    add("pdf", "paper.pdf", b"%PDF-1.4\n" + rng.bytes(200), "error", "a PDF")

    # ---- truncated files
    add(
        "truncated_dicom_pixels",
        "truncated.dcm",
        good[: len(good) * 3 // 4],
        "error",
        "DICOM cut in its pixel data",
    )
    add("truncated_dicom_header", "truncated_header.dcm", good[:300], "error", "DICOM cut in its header")
    add("truncated_png", "truncated.png", head_png[: len(head_png) // 2], "error", "PNG cut in half")
    jpg = _encode(plain_8bit(head_phantom(seed).hu), ".jpg")
    add("truncated_jpeg", "truncated.jpg", jpg[: len(jpg) // 2], "error", "JPEG cut in half")

    # ---- DICOMs that are not CT images
    no_pixels = ct_dataset(seed)
    del no_pixels.PixelData
    add("dicom_no_pixels", "no_pixels.dcm", dicom_bytes(no_pixels), "error", "DICOM without pixel data")
    mr = _plain_dataset(stored, modality="MR", sop_class=MRImageStorage)
    add("mr", "mr.dcm", dicom_bytes(mr), "error", "an MR image")
    us = _plain_dataset(
        rng.integers(0, 255, (128, 160, 3), dtype=np.uint8), modality="US", sop_class=UltrasoundImageStorage
    )
    add("us", "us.dcm", dicom_bytes(us), "error", "an ultrasound (RGB)")
    rgb = _plain_dataset(np.repeat(plain_8bit(head_phantom(seed).hu)[..., None], 3, axis=2))
    add("rgb_ct", "rgb.dcm", dicom_bytes(rgb), "error", "an RGB DICOM labelled CT")
    palette = _plain_dataset(plain_8bit(head_phantom(seed).hu))
    palette.PhotometricInterpretation = "PALETTE COLOR"
    for colour in ("Red", "Green", "Blue"):
        setattr(palette, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(
            palette, f"{colour}PaletteColorLookupTableData", np.arange(256, dtype=np.uint16).tobytes() * 1
        )
    add("palette_ct", "palette.dcm", dicom_bytes(palette), "error", "a palette-colour DICOM")

    # ---- valid CT in unusual encodings
    add(
        "implicit_vr",
        "implicit_vr.dcm",
        dicom_bytes(
            _with_syntax(ct_dataset(seed), ImplicitVRLittleEndian), implicit_vr=True, little_endian=True
        ),
        "ok",
        "implicit VR little endian CT",
    )
    big = _with_syntax(ct_dataset(seed), ExplicitVRBigEndian)
    arr = np.frombuffer(big.PixelData, dtype="<i2" if int(big.PixelRepresentation) else "<u2")
    big.PixelData = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    add(
        "big_endian",
        "big_endian.dcm",
        dicom_bytes(big, implicit_vr=False, little_endian=False),
        "ok",
        "explicit VR big endian CT",
    )
    add(
        "multiframe", "multiframe.dcm", dicom_bytes(_multiframe(seed)), "ok", "3-frame CT (middle frame read)"
    )
    add("unicode_name", "Kopf_头部_🧠_é.dcm", good, "ok", "a valid CT with a unicode file name")
    add(
        "long_name", ("slice_" + "x" * 230)[:240] + ".png", head_png, "ok", "a valid PNG with a 244-byte name"
    )
    no_ext = out / "IM000001"  # extension-less DICOM, as PACS exports write
    no_ext.write_bytes(good)
    files.append(BadFile("no_extension", no_ext, "ok", "slice", "a valid CT without extension"))

    # ---- degenerate sizes and values
    add("one_pixel_png", "one_pixel.png", _encode(np.zeros((1, 1), np.uint8), ".png"), "error", "a 1×1 PNG")
    add(
        "one_pixel_dicom",
        "one_pixel.dcm",
        dicom_bytes(_plain_dataset(np.zeros((1, 1), np.int16))),
        "error",
        "a 1×1 CT DICOM",
    )
    nan = np.full((256, 256), 0.5, np.float32)
    nan[100:150, 100:150] = np.nan
    add("nan_tiff", "nan.tiff", _encode(nan, ".tiff"), "error", "a float TIFF with NaN")
    inf = np.full((256, 256), 0.5, np.float32)
    inf[10, 10] = np.inf
    add("inf_tiff", "inf.tiff", _encode(inf, ".tiff"), "error", "a float TIFF with +inf")
    nan_slope = ct_dataset(seed)
    with warnings.catch_warnings():  # pydicom warns that "NaN" is no valid DS: that is the point
        warnings.simplefilter("ignore")
        nan_slope.RescaleSlope = "NaN"
    add("nan_slope", "nan_slope.dcm", dicom_bytes(nan_slope), "error", "RescaleSlope NaN")

    # ---- archives (series inputs; a single-slice reader refuses them too)
    add("empty_zip", "empty.zip", _zip({}), "error", "an empty zip", kind="zip")
    add(
        "zip_traversal",
        "traversal.zip",
        _zip({"../evil_traversal.dcm": good}),
        "error",
        "a zip with ../",
        kind="zip",
    )
    add(
        "zip_absolute",
        "absolute.zip",
        _zip({f"/tmp/brain_ct_evil_{seed}.dcm": good}),
        "error",
        "a zip with an absolute entry",
        kind="zip",
    )
    add("zip_bomb", "bomb.zip", zip_bomb(), "error", "a zip bomb (64 MiB of zeros)", kind="zip")

    # ---- gigantic declared sizes (decompression bombs)
    if include_bombs:
        add("png_bomb", "bomb.png", png_bomb(), "error", f"a real {BOMB_SIDE}² PNG", kind="bomb")
        add(
            "png_forged_ihdr",
            "forged.png",
            png_forged_header(),
            "error",
            "a PNG header declaring 10^10 px",
            kind="bomb",
        )
        huge = _plain_dataset(np.zeros((64, 64), np.int16))
        huge.Rows = huge.Columns = 60000
        add(
            "dicom_huge_rows",
            "huge_rows.dcm",
            dicom_bytes(huge),
            "error",
            "a DICOM declaring 60000²",
            kind="bomb",
        )
        frames = _plain_dataset(np.zeros((512, 512), np.int16))
        frames.NumberOfFrames = 100000
        add(
            "dicom_many_frames",
            "many_frames.dcm",
            dicom_bytes(frames),
            "error",
            "100000 declared frames",
            kind="bomb",
        )
        # Codec bombs: honest DICOM headers, gigantic frame headers or inflated size (tests/hostile.py).
        whys = {
            "j2k_siz_bomb": "a JPEG 2000 frame whose SIZ says 20000² (Rows/Columns 512)",
            "j2k_siz_mismatch": "a JPEG 2000 frame whose SIZ says 1024² (Rows/Columns 512)",
            "jpeg_sof_bomb": "a baseline JPEG frame whose SOF0 says 65000²",
            "jpeg_ls_sof55_bomb": "a JPEG-LS frame whose SOF55 says 65000²",
            "deflate_bomb": "a deflated dataset hiding 384 MiB of zeros",
        }
        for key, path in make_hostile_files(out / "codec", seed).items():
            files.append(BadFile(key, path, "error", "bomb", whys[key]))
    return files


def _with_syntax(ds: Dataset, syntax: str) -> Dataset:
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def _multiframe(seed: int) -> Dataset:
    """A 3-frame CT (legacy multi-frame: frames share the top-level rescale)."""
    frames = np.stack([_stored(seed + k, 256) for k in range(3)])
    ds = _plain_dataset(frames[0])
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    return ds
