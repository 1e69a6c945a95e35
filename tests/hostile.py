"""A seeded generator of codec bombs hidden inside small, well-formed CT DICOM files.

Each file's DICOM header is honest and small (Rows/Columns 512, Modality CT), so the header
checks of :mod:`brain_ct.io` pass it; the danger is inside the compressed data, where the
decoder reads its own frame header (JPEG 2000 SIZ, JPEG SOF, JPEG-LS SOF55) or, for the deflated
transfer syntax, inflates the whole dataset. Built in code, independently of the project's
phantom generator: the pixels are seeded noise and the codestreams come from the encoders
(OpenJPEG, OpenCV) with their frame header rewritten afterwards.

Usage (pytest puts ``tests/`` on ``sys.path``)::

    from hostile import make_hostile_files

    files = make_hostile_files(tmp_path, seed=0)  # {key: path}
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.filereader import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    generate_uid,
)

#: Rows and Columns every hostile file declares in its DICOM header.
SIDE = 512

#: What the JPEG 2000 codestream's SIZ claims (400 megapixels: ~2.7 GB when decoded, per the issue).
J2K_BOMB_SIDE = 20000

#: What the baseline JPEG's SOF0 and the JPEG-LS SOF55 claim (4.2 gigapixels).
JPEG_BOMB_SIDE = 65000

#: Zeros hidden in a private element of the deflated file (inflates ~1000:1).
DEFLATE_BOMB_BYTES = 384 << 20


def _dataset(pixels_bits: int, syntax: str, seed: int) -> Dataset:
    """A CT header of SIDE x SIDE pixels (no pixel data yet)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f"hostile-{seed}-{syntax}"])
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[f"study-{seed}"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[f"series-{seed}"])
    ds.Modality = "CT"
    ds.Rows = ds.Columns = SIDE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8 if pixels_bits <= 8 else 16
    ds.BitsStored = pixels_bits
    ds.HighBit = pixels_bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "-1024"
    ds.PixelSpacing = [0.45, 0.45]
    return ds


def _write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def _encapsulated(ds: Dataset, codestream: bytes) -> Dataset:
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    return ds


def j2k_with_siz(width: int, height: int, seed: int = 0) -> bytes:
    """A real SIDE x SIDE 12-bit JPEG 2000 codestream whose SIZ then claims ``width`` x ``height``.

    The image and tile sizes are rewritten together, as a deliberate bomb would, so that the
    decoder allocates one huge tile instead of refusing a tile grid that does not fit.
    """
    import openjpeg

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 4096, (SIDE, SIDE), dtype=np.uint16)
    stream = bytearray(openjpeg.encode(pixels, bits_stored=12))
    if stream[:4] != b"\xff\x4f\xff\x51":
        raise RuntimeError("OpenJPEG did not write SOC + SIZ first")
    # SIZ: marker(2) Lsiz(2) Rsiz(2) Xsiz(4) Ysiz(4) XOsiz(4) YOsiz(4) XTsiz(4) YTsiz(4) ...
    struct.pack_into(">II", stream, 8, width, height)
    struct.pack_into(">II", stream, 24, width, height)
    return bytes(stream)


def _jpeg_sof_offset(stream: bytes, markers: tuple[int, ...]) -> int:
    """Offset of the first frame-header marker among ``markers`` (walks the marker segments)."""
    offset = 2
    while offset + 4 <= len(stream):
        marker = stream[offset + 1]
        if marker in markers:
            return offset
        offset += 2 + struct.unpack_from(">H", stream, offset + 2)[0]
    raise RuntimeError("no frame header found")


def jpeg_with_sof(width: int, height: int, seed: int = 0) -> bytes:
    """A real SIDE x SIDE 8-bit baseline JPEG whose SOF0 then claims ``width`` x ``height``."""
    rng = np.random.default_rng(seed)
    pixels = cv2.GaussianBlur(rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8), (9, 9), 3)
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    stream = bytearray(encoded.tobytes())
    sof = _jpeg_sof_offset(bytes(stream), (0xC0,))
    # SOF: marker(2) length(2) precision(1) lines Y(2) samples per line X(2) components(1)
    struct.pack_into(">HH", stream, sof + 5, height, width)
    return bytes(stream)


def jpeg_ls_with_sof55(width: int, height: int) -> tuple[bytes, Dataset]:
    """pydicom's JPEG-LS lossless test frame with its SOF55 rewritten, and that file's dataset.

    No JPEG-LS encoder is installed; pydicom's own test file (an independent source) provides
    a valid codestream whose frame header is then forged.
    """
    ds = dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    stream = bytearray(get_frame(ds.PixelData, 0, number_of_frames=1))
    sof = _jpeg_sof_offset(bytes(stream), (0xF7,))
    struct.pack_into(">HH", stream, sof + 5, height, width)
    return bytes(stream), ds


def deflated_bomb(hidden_bytes: int = DEFLATE_BOMB_BYTES, seed: int = 0) -> bytes:
    """A deflated-transfer-syntax CT file hiding ``hidden_bytes`` of zeros in a private element.

    The zeros sit in (7FE1,1010), a private element after the pixel data, so that even a header
    read (which stops before the pixels) has to inflate past them. They are streamed through
    the compressor, so building the file never holds them in memory.
    """
    rng = np.random.default_rng(seed)
    ds = _dataset(16, ExplicitVRLittleEndian, seed)
    ds.PixelData = rng.integers(0, 2000, (SIDE, SIDE), dtype=np.uint16).tobytes()
    ds["PixelData"].VR = "OW"
    plain = _raw_dataset_bytes(ds)
    private = (
        struct.pack("<HH2sH", 0x7FE1, 0x0010, b"LO", 6)
        + b"BOMB  "
        + struct.pack("<HH2sHI", 0x7FE1, 0x1010, b"OB", 0, hidden_bytes)
    )
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = [deflate.compress(plain + private)]
    chunk = bytes(1 << 22)
    left = hidden_bytes
    while left:
        step = min(left, len(chunk))
        body.append(deflate.compress(chunk[:step]))
        left -= step
    body.append(deflate.flush())
    meta = FileMetaDataset(ds.file_meta)
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return _file_meta_bytes(meta) + b"".join(body)


def _raw_dataset_bytes(ds: Dataset) -> bytes:
    """``ds`` (without file meta) encoded as explicit VR little endian."""
    import io

    from pydicom.filewriter import write_dataset

    buffer = io.BytesIO()
    clean = Dataset(ds)
    clean.file_meta = FileMetaDataset()
    from pydicom.filebase import DicomFileLike

    fp = DicomFileLike(buffer)
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, clean)
    return buffer.getvalue()


def _file_meta_bytes(meta: FileMetaDataset) -> bytes:
    """Preamble, ``DICM`` and the file meta group."""
    import io

    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_file_meta_info

    buffer = io.BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(DicomFileLike(buffer), meta, enforce_standard=True)
    return buffer.getvalue()


def make_hostile_files(
    folder: str | Path, seed: int = 0, *, deflate_bytes: int = DEFLATE_BOMB_BYTES
) -> dict[str, Path]:
    """Write the codec bombs into ``folder``; returns ``{key: path}``.

    Keys: ``j2k_siz_bomb``, ``j2k_siz_mismatch`` (SIZ 1024 x 1024, below the pixel limit but not
    what Rows/Columns say), ``jpeg_sof_bomb``, ``jpeg_ls_sof55_bomb``, ``deflate_bomb``.
    """
    folder = Path(folder)
    files: dict[str, Path] = {}
    ds = _encapsulated(_dataset(12, JPEG2000Lossless, seed), j2k_with_siz(J2K_BOMB_SIDE, J2K_BOMB_SIDE, seed))
    files["j2k_siz_bomb"] = _write(ds, folder / "j2k_siz_bomb.dcm")
    ds = _encapsulated(_dataset(12, JPEG2000Lossless, seed), j2k_with_siz(1024, 1024, seed))
    files["j2k_siz_mismatch"] = _write(ds, folder / "j2k_siz_mismatch.dcm")
    ds = _encapsulated(
        _dataset(8, JPEGBaseline8Bit, seed), jpeg_with_sof(JPEG_BOMB_SIDE, JPEG_BOMB_SIDE, seed)
    )
    files["jpeg_sof_bomb"] = _write(ds, folder / "jpeg_sof_bomb.dcm")
    stream, source = jpeg_ls_with_sof55(JPEG_BOMB_SIDE, JPEG_BOMB_SIDE)
    ds = _dataset(int(source.BitsStored), JPEGLSLossless, seed)
    ds.Rows, ds.Columns = int(source.Rows), int(source.Columns)
    ds.BitsAllocated, ds.PixelRepresentation = int(source.BitsAllocated), int(source.PixelRepresentation)
    files["jpeg_ls_sof55_bomb"] = _write(_encapsulated(ds, stream), folder / "jpeg_ls_sof55_bomb.dcm")
    path = folder / "deflate_bomb.dcm"
    path.write_bytes(deflated_bomb(deflate_bytes, seed))
    files["deflate_bomb"] = path
    return files
