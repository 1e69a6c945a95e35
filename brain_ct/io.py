"""Read a file a person drops in — a DICOM slice or an ordinary image — into a :class:`CTImage`.

DICOM (pydicom 3, compressed transfer syntaxes through the pylibjpeg plugins):

* HU = stored value × (0028,1053) *Rescale Slope* + (0028,1052) *Rescale Intercept*, taken from
  the top level or, for enhanced multi-frame CT, from the frame's (0028,9145) *Pixel Value
  Transformation Sequence*; a (0028,3000) *Modality LUT Sequence* is applied when present. pydicom's
  helpers silently skip a missing tag; here slope 1 and intercept 0 are assumed only when the tag
  is absent, with a note in ``meta["Notes"]``, and a malformed value is refused.
* (0028,0120) *Pixel Padding Value* (to (0028,0121) *Pixel Padding Range Limit* when given) is
  compared with the stored values and set to air, -1000 HU.
* The RSNA 2019 fix: some scanners wrote 12-bit data ((0028,0101) *Bits Stored* 12,
  (0028,0103) *Pixel Representation* 0) with a wrong intercept (> -100) so that air wraps round
  to large stored values. As in the RSNA 2019 Kaggle kernels (``correct_dcm`` / fastai's
  ``fix_pxrepr``), stored + 1000 is taken modulo 4096 — values whose sum reaches 4096 wrap — and
  the intercept becomes -1000.
* MONOCHROME1 ("minimum is white"): stored values are mirrored within the range that
  Bits Stored / Pixel Representation allow (s → s_min + s_max − s) before the rescale, so the
  result follows the MONOCHROME2 convention that every CT viewer displays: dense is bright.
* Refused: non-CT Modality (MR, US, CR, …), colour (RGB, YBR, palette), no pixel data, fewer
  than :data:`MIN_SIDE` pixels a side or more than the limits in force (:mod:`brain_ct.limits`:
  pixels per slice, frames, a scan's pixels; checked in the header before anything is decoded or
  allocated per frame), native pixel data shorter than Rows × Columns × frames says, files
  without the 128-byte preamble that do not really parse as DICOM.
  A dataset without a Modality tag is read as CT when its SOP class is a CT class or its
  rescale says HU (noted in ``meta["Notes"]``); otherwise only with ``allow_unverified=True``.
* Codec bombs (:mod:`brain_ct.decode_guard`): a deflated dataset is inflated through a size-capped
  decompressor before pydicom parses it; a compressed frame whose own header (JPEG 2000 SIZ,
  JPEG SOF, JPEG-LS SOF55) disagrees with Rows/Columns is refused before decoding, and compressed
  frames are decoded in a worker process with a capped address space.

Ordinary images (OpenCV): PNG (8/16 bit), JPEG, BMP, TIFF (8/16 bit, float), WebP. The header
is read first with Pillow (lazy, no pixel decoding) and its size checked against the limits in
force (:attr:`~brain_ct.limits.UploadLimits.max_image_pixels`) and :data:`MAX_SIDE`, for every
accepted format, to refuse decompression bombs before OpenCV decodes anything; a JPEG's scans are
counted (:data:`MAX_JPEG_SCANS`). An image whose longest side is above
:attr:`~brain_ct.limits.UploadLimits.reduced_side` is decoded in a capped worker
(:func:`brain_ct.decode_guard.decode_image`) and read at that reduced size, with a note in
``meta["Notes"]``. (OpenCV's own ``OPENCV_IO_MAX_IMAGE_PIXELS`` cannot serve: OpenCV reads it once,
when ``cv2`` is loaded, which importing this package has already done.) EXIF orientation is applied, alpha
is flattened onto black, colour is measured (for the plausibility check) and converted to grey;
16-bit and float images are stretched min..max to 8 bit for display. ``hu`` stays None: such
images were already windowed by whoever saved them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

import brain_ct.decode_guard as decode_guard
import brain_ct.framing as framing
import brain_ct.limits as limits
from brain_ct.errors import BrainCTError, InvalidInputError, NotHeadCTError
from brain_ct.image import Box as Box  # re-exported: the box type lived here first
from brain_ct.image import CTImage
from brain_ct.privacy import extract_meta, scrub_text
from brain_ct.sniff import HEAD_BYTES, IMAGE_FORMATS, has_preamble, sniff, unsupported_words
from brain_ct.windowing import AIR_HU, PRESETS, window

#: Largest image any reader accepts, in pixels per frame; checked before decoding. The limits in
#: force (:mod:`brain_ct.limits`) are far lower by default: this bounds what they may be raised to.
MAX_PIXELS = 50_000_000

#: Largest side accepted, in pixels.
MAX_SIDE = 16384

#: Smallest side accepted, in pixels.
MIN_SIDE = 64

#: Largest number of voxels a NIfTI volume may have, whatever the limits in force (640 slices of
#: 512 x 512; ~0.7 GB as float32 HU). Multi-frame DICOMs are bounded by
#: :attr:`brain_ct.limits.UploadLimits.max_scan_pixels`.
MAX_TOTAL_PIXELS = 640 * 512 * 512

#: Most scans (SOS markers) a JPEG may hold. Every progressive scan passes over the whole
#: coefficient buffer: 20,000 scans of a 7000² image took 86 s in OpenCV. Encoders write 1-10
#: (a few more counting an EXIF thumbnail).
MAX_JPEG_SCANS = 100

#: Largest file read, in bytes.
MAX_FILE_BYTES = 1 << 30

Source = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]

ACCEPTED = "a CT DICOM slice (.dcm or extension-less) or a PNG, JPEG, BMP, TIFF or WebP image"

_CT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
}

_MODALITY_NAMES = {
    "MR": "an MR (magnetic resonance)",
    "US": "an ultrasound (US)",
    "CR": "a radiograph (CR)",
    "DX": "a radiograph (DX)",
    "DR": "a radiograph (DR)",
    "MG": "a mammogram (MG)",
    "XA": "an X-ray angiography (XA)",
    "RF": "a fluoroscopy (RF)",
    "PT": "a PET (PT)",
    "NM": "a nuclear medicine (NM)",
    "OT": "an 'other' (OT, secondary capture)",
    "SC": "a secondary capture (SC)",
    "SEG": "a segmentation (SEG)",
    "SR": "a structured report (SR)",
    "RTDOSE": "a radiotherapy dose (RTDOSE)",
    "RTPLAN": "a radiotherapy plan (RTPLAN)",
    "RTSTRUCT": "a radiotherapy structure set (RTSTRUCT)",
    "ECG": "an ECG waveform (ECG)",
    "OP": "an ophthalmic photograph (OP)",
    "XC": "an external camera photograph (XC)",
    "KO": "a key object selection (KO)",
    "PR": "a presentation state (PR)",
    "DOC": "an encapsulated document (DOC)",
    "REG": "a registration (REG)",
    "RTRECORD": "a radiotherapy treatment record (RTRECORD)",
    "HD": "a haemodynamic waveform (HD)",
    "AU": "an audio recording (AU)",
}

#: Modalities whose objects hold no image at all (plans, reports, waveforms, documents).
_NOT_IMAGE_MODALITIES = frozenset(
    {
        "SR",
        "RTPLAN",
        "RTSTRUCT",
        "RTRECORD",
        "ECG",
        "HD",
        "AU",
        "KO",
        "PR",
        "DOC",
        "REG",
        "FID",
        "PLAN",
        "RWV",
    }
)

# The start of a DICOM dataset written without its file meta: a group 0008 element (or group 0002
# without the preamble) in explicit VR (tag, two VR letters) or implicit VR (tag, 4-byte length).
_DATASET_START = re.compile(
    rb"[\x02\x08]\x00[\x00-\xff]{2}(?:AE|AS|AT|CS|DA|DS|DT|FD|FL|IS|LO|LT|OB|OW|PN|SH|SQ|ST|TM|UI|UL|UN|US|UT)"
    rb"|\x08\x00(?:\x05|\x08|\x16|\x18)\x00[\x00-\xff][\x00-\x01]\x00\x00"
)


# --------------------------------------------------------------------------- reading bytes


def read_source(source: Source, name: str | None) -> tuple[bytes, str]:
    """The file's bytes and a display name (never a tag value), within the file-size limit.

    Raises:
        InvalidInputError: missing, a directory, unreadable, too large, or not a path/bytes/binary file.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        shown = name or path.name
        if not path.exists():
            raise InvalidInputError(f"{shown}: no such file; give the path of {ACCEPTED}")
        if not path.is_file():
            raise InvalidInputError(f"{shown}: is a directory, not a file; give the path of {ACCEPTED}")
        size = path.stat().st_size
        _check_file_size(size, shown)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidInputError(
                f"{shown}: cannot be read ({exc.strerror}); check its permissions"
            ) from None
        return data, shown
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        shown = name or "upload"
    elif hasattr(source, "read"):
        raw = getattr(source, "name", None)
        shown = name or (os.path.basename(raw) if isinstance(raw, str) and raw else "upload")
        try:
            data = source.read(MAX_FILE_BYTES + 1)
        except Exception as exc:
            raise InvalidInputError(f"{shown}: cannot be read ({type(exc).__name__})") from None
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidInputError(f"{shown}: the file object must be opened in binary mode ('rb')")
        data = bytes(data)
    else:
        raise InvalidInputError(
            f"cannot read a {type(source).__name__}; give a file path, bytes or a binary file object"
        )
    _check_file_size(len(data), shown)
    return data, shown


def _check_file_size(size: int, shown: str) -> None:
    if size == 0:
        raise InvalidInputError(f"{shown}: the file is empty (0 bytes); expected {ACCEPTED}")
    if size > MAX_FILE_BYTES:
        raise InvalidInputError(
            f"{shown}: the file is {size / 2**20:.0f} MiB, above the {MAX_FILE_BYTES / 2**20:.0f} MiB limit"
        )


# --------------------------------------------------------------------------- DICOM


_reading = threading.local()


class _DropWhileReading(logging.Filter):
    """Drops pydicom's log records emitted while this thread reads a file (they may quote values)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(_reading, "depth", 0) == 0


_DROP = _DropWhileReading()
_filtered_loggers: set[str] = set()
_filter_lock = threading.Lock()


def _install_log_filter() -> None:
    """Put the drop filter on pydicom's loggers that do not have it yet (idempotent).

    Called on entering every read (:func:`_quiet`), not at import: importing the package changes
    no logging set-up, and a library user who calls :func:`load_image` directly is covered as much
    as the CLI and the app. Records outside a read pass anyway, so installing it late loses nothing.
    A logger's filters only see records created on that very logger, so the filter goes on
    "pydicom" and on each of its child loggers (pixel decoders log there); loggers created since
    the last read (a decoder imported lazily) get it on the next.
    """
    import pydicom
    import pydicom.pixels  # noqa: F401  (creates the decoder loggers)

    names = {"pydicom"} | {n for n in list(logging.root.manager.loggerDict) if n.startswith("pydicom.")}
    with _filter_lock:
        for logger_name in sorted(names - _filtered_loggers):
            logging.getLogger(logger_name).addFilter(_DROP)
            _filtered_loggers.add(logger_name)


# Warning filters are process-wide (before Python 3.14), so a per-call warnings.catch_warnings()
# is not thread-safe: two overlapping reads restore each other's saved filters and leave warnings
# off for good. Instead one "ignore" entry is added while at least one read is in progress,
# counted under a lock, and removed by the last read to finish.
_quiet_lock = threading.Lock()
_quiet_count = 0
_IGNORE_ALL = ("ignore", None, Warning, None, 0)  # what warnings.filterwarnings("ignore") adds
_added_ignore = False


def _silence_warnings() -> None:
    global _quiet_count, _added_ignore
    with _quiet_lock:
        _quiet_count += 1
        if _quiet_count == 1:
            # An identical entry the application set itself stays where it is, and is kept.
            _added_ignore = _IGNORE_ALL not in warnings.filters
            if _added_ignore:
                warnings.filterwarnings("ignore")


def _restore_warnings() -> None:
    global _quiet_count, _added_ignore
    with _quiet_lock:
        _quiet_count -= 1
        if _quiet_count == 0 and _added_ignore:
            _added_ignore = False
            with contextlib.suppress(ValueError):  # someone else reset the filters meanwhile
                warnings.filters.remove(_IGNORE_ALL)
            mutated = getattr(warnings, "_filters_mutated", None)  # drops the filter cache
            if mutated is not None:
                mutated()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence pydicom while reading: its warnings and log lines may quote tag values (a name,
    a date) and must not reach a log. Log records are dropped per thread; warnings are ignored
    while any read is in progress (thread-safe, see above)."""
    _install_log_filter()
    _reading.depth = getattr(_reading, "depth", 0) + 1
    _silence_warnings()
    try:
        yield
    finally:
        _restore_warnings()
        _reading.depth -= 1


#: The same guard for other modules that touch pydicom datasets: pydicom converts element values
#: lazily, on first access, so reading a tag after :func:`read_dicom_header` may warn or log too.
quiet_dicom = _quiet


def _parse_dicom(data: bytes, shown: str, *, stop_before_pixels: bool) -> Any:
    if sniff(data[:HEAD_BYTES]) != "dicom":
        raise _not_dicom(data, shown)
    # A header read of a deflated file inflates the header's bytes only, not a large slice's pixels.
    prefix = _HEADER_PREFIX if stop_before_pixels else None
    return _parse_dicom_inflated(data, shown, has_preamble(data), stop_before_pixels, prefix)


def _not_dicom(data: bytes, shown: str) -> InvalidInputError:
    """The refusal of bytes that are no DICOM file (a dataset without file meta is named as one)."""
    if _DATASET_START.search(data[:256]):
        return InvalidInputError(
            f"{shown}: this looks like a DICOM dataset without its file meta header (no 128-byte "
            "preamble and 'DICM' marker) and cannot be parsed as one (damaged, or an encoding that "
            "cannot be guessed); re-export it from the viewer or PACS as a standard DICOM file"
        )
    return InvalidInputError(f"{shown}: this is not a DICOM file or a supported image; expected {ACCEPTED}")


#: Bytes of a deflated dataset inflated to read its header (a CT header is a few KB).
_HEADER_PREFIX = 1 << 20


def _parse_dicom_inflated(
    data: bytes, shown: str, has_preamble: bool, stop_before_pixels: bool, prefix: int | None
) -> Any:
    import pydicom

    # pydicom inflates a deflated dataset whole before parsing it: inflate it here, capped, first.
    data, inflated = decode_guard.inflate_deflated(data, shown, prefix=prefix)
    try:
        with _quiet():
            ds = pydicom.dcmread(
                io.BytesIO(data), force=not has_preamble, stop_before_pixels=stop_before_pixels
            )
            if inflated:  # report the file's own transfer syntax; its pixels are native either way
                ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
            # force=True accepts any bytes; keep it only when real DICOM elements came out.
            real = any(k in ds for k in ("SOPClassUID", "Modality", "Rows", "PixelData")) or (
                "TransferSyntaxUID" in getattr(ds, "file_meta", {})
            )
    except Exception:
        real = False
        if has_preamble:
            raise InvalidInputError(
                f"{shown}: the DICOM file is damaged or truncated and cannot be parsed; expected {ACCEPTED}"
            ) from None
    if not real:
        raise _not_dicom(data, shown)
    # Item and delimiter tags (FFFE,xxxx) belong inside sequences; a stray one after the last
    # element (some writers append a sequence delimiter) is kept by pydicom as an element of no
    # VR that raises NotImplementedError when touched. It carries nothing: drop it, read the slice.
    for tag in [tag for tag in ds.keys() if tag.group == 0xFFFE]:  # noqa: SIM118 (iterating converts)
        del ds[tag]
    _ensure_transfer_syntax(ds)
    return ds


def _ensure_transfer_syntax(ds: Any) -> None:
    """Give a dataset without file meta (old exporters) the native transfer syntax it was read with.

    pydicom parses such files by guessing the encoding but cannot decode their pixels without a
    (0002,0010) *Transfer Syntax UID*; native encodings are all that can lack it.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and "TransferSyntaxUID" in file_meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:
        return
    explicit = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    syntax = ImplicitVRLittleEndian if implicit else explicit
    if file_meta is None:
        ds.file_meta = file_meta = FileMetaDataset()
    file_meta.TransferSyntaxUID = syntax


def read_dicom_header(source: Source) -> Any:
    """Read a DICOM file's header only (no pixel data), e.g. to group and sort a series.

    The result carries identifying tags: use it for grouping/sorting (SeriesInstanceUID,
    ImagePositionPatient, ImageOrientationPatient, InstanceNumber), never for output; output
    goes through :func:`brain_ct.privacy.extract_meta`.

    Args:
        source: a path, bytes or a binary file object.

    Returns:
        ``pydicom.Dataset`` read with ``stop_before_pixels=True``.

    Raises:
        InvalidInputError: empty, unreadable or not DICOM.
    """
    data, shown = read_source(source, None)
    kind = sniff(data[:HEAD_BYTES])
    if kind in IMAGE_FORMATS:
        raise InvalidInputError(f"{shown}: this is a {kind} image, not a DICOM file")
    with _quiet(), reader_errors(shown):
        return _parse_dicom(data, shown, stop_before_pixels=True)


def _int_tag(ds: Any, keyword: str, shown: str, default: int | None = None) -> int | None:
    if keyword not in ds or ds[keyword].value in (None, ""):
        return default
    try:
        value = ds[keyword].value
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        return int(float(value))
    except Exception:
        raise InvalidInputError(f"{shown}: the DICOM tag {keyword} is not a valid number") from None


def _float_value(value: Any) -> float:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _check_dicom(ds: Any, shown: str, allow_unverified: bool, notes: list[str]) -> tuple[int, int, int]:
    """Validate a DICOM header; returns (rows, columns, frames). Nothing is decoded here."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality and modality != "CT":
        kind = _MODALITY_NAMES.get(modality, f"a {modality}")
        what = f"{kind}, not an image" if modality in _NOT_IMAGE_MODALITIES else f"{kind} image"
        raise InvalidInputError(
            f"{shown}: this is {what}; the model expects a non-contrast head CT (Modality CT)"
        )
    if "PixelData" not in ds:
        sop = ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID")
        what = f" ({sop.name})" if sop is not None and getattr(sop, "name", str(sop)) != str(sop) else ""
        raise InvalidInputError(
            f"{shown}: this DICOM has no pixel data{what}; expected a CT image slice with (7FE0,0010) Pixel Data"
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    samples = _int_tag(ds, "SamplesPerPixel", shown, 1)
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InvalidInputError(
            f"{shown}: this is a colour DICOM ({photometric}, {samples} samples per pixel); "
            "CT slices are greyscale (MONOCHROME1/MONOCHROME2)"
        )
    rows, cols, frames = _declared_size(ds, shown)
    _check_pixel_length(ds, rows, cols, frames, samples or 1, shown)
    if not modality:
        sop = str(
            ds.get("SOPClassUID", "") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")
        )
        rescale_type = str(ds.get("RescaleType", "") or "").strip().upper()
        if sop in _CT_SOP_CLASSES:
            notes.append("no Modality tag: read as CT because its SOP class is a CT image class")
        elif rescale_type == "HU":
            notes.append("no Modality tag: read as CT because its Rescale Type is HU")
        elif allow_unverified:
            notes.append(
                "no Modality tag and no sign of CT: values read as HU because allow_unverified was set"
            )
        else:
            raise NotHeadCTError(
                f"{shown}: this DICOM has no (0008,0060) Modality and nothing shows it is a CT "
                f"(no CT SOP class, no HU rescale type). {framing.OVERRIDE_HINT}"
            )
    return rows, cols, frames


def _declared_size(ds: Any, shown: str) -> tuple[int, int, int]:
    """(rows, columns, frames) of a DICOM header, refused when over the limits in force (nothing decoded)."""
    rows = _int_tag(ds, "Rows", shown)
    cols = _int_tag(ds, "Columns", shown)
    if rows is None or cols is None:
        raise InvalidInputError(f"{shown}: the DICOM has no Rows/Columns; it cannot be decoded as an image")
    frames = _int_tag(ds, "NumberOfFrames", shown, 1) or 1
    budget = limits.current()
    _check_dimensions(cols, rows, shown, budget.max_slice_pixels, limits.ENV["max_slice_pixels"])
    check_frame_count(frames, shown, budget)
    return rows, cols, frames


def check_frame_count(frames: int, shown: str, budget: limits.UploadLimits) -> None:
    """Refuse a declared (0028,0008) *Number of Frames* below 1 or above what a scan may have.

    Called before anything is allocated per frame (a 9 KB file may declare 2,000,000,000 frames).

    Raises:
        InvalidInputError: the count is not 1 .. ``budget.max_scan_slices``.
    """
    if frames < 1:
        raise InvalidInputError(f"{shown}: NumberOfFrames is {frames}; expected 1 or more")
    if frames > budget.max_scan_slices:
        raise InvalidInputError(
            f"{shown}: the DICOM declares {frames} frames; a scan may have at most {budget.max_scan_slices} "
            f"slices here ({limits.ENV['max_scan_slices']} or the CLI's --max-slices raise it locally). "
            "Refused before reading any frame"
        )


def _check_pixel_length(ds: Any, rows: int, cols: int, frames: int, samples: int, shown: str) -> None:
    """Refuse native pixel data shorter than Rows × Columns × frames × bytes says (a forged count)."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" not in ds or syntax is None or getattr(syntax, "is_encapsulated", True):
        return
    try:
        bits = int(ds.get("BitsAllocated") or 0)
        length = len(ds["PixelData"].value or b"")
    except Exception:  # a damaged element: the decoder says what is wrong
        return
    if bits <= 0:
        return
    needed = (rows * cols * frames * samples * bits + 7) // 8
    if length < needed:
        raise InvalidInputError(
            f"{shown}: the DICOM header declares {frames} frame(s) of {cols}x{rows} at {bits} bits "
            f"({needed} bytes), but its pixel data holds {length} bytes; the file is truncated or forged"
        )


#: Header tags :func:`brain_ct.framing.header_reason` reads (descriptions are matched, never shown).
_HEAD_HEADER_TAGS = (
    "BodyPartExamined",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "PatientPosition",
    "PixelSpacing",
    "Rows",
    "Columns",
)


def _check_head_header(ds: Any, shown: str, allow_unverified: bool, notes: list[str]) -> None:
    """Refuse, before decoding, a slice whose header names another body region (framing.header_reason).

    With ``allow_unverified`` the slice is read and the reason is kept in ``meta["Notes"]``.
    """
    header: dict[str, Any] = {}
    for keyword in _HEAD_HEADER_TAGS:
        try:
            value = ds.get(keyword)
            if value is not None and value != "":
                header[keyword] = list(value) if keyword == "PixelSpacing" else value
        except Exception:  # a malformed value says nothing
            continue
    if "PixelSpacing" not in header:
        item = _functional_item(ds, 0, "PixelMeasuresSequence")
        if item is not None and "PixelSpacing" in item:
            header["PixelSpacing"] = list(item.PixelSpacing)
    reason = framing.header_reason(header)
    if reason is None:
        return
    if not allow_unverified:
        raise NotHeadCTError(f"{shown}: this does not look like a head CT: {reason}. {framing.OVERRIDE_HINT}")
    notes.append(f"not verified as a head CT: {reason} (read because allow_unverified was set)")


def _check_dimensions(width: int, height: int, shown: str, max_pixels: int, env: str) -> None:
    """Refuse, from the header, an image smaller than :data:`MIN_SIDE` or above ``max_pixels``.

    Args:
        width: declared width in pixels.
        height: declared height in pixels.
        shown: display name, for the message.
        max_pixels: the limit in force (pixels); :data:`MAX_PIXELS` and :data:`MAX_SIDE` bound it.
        env: the environment variable that raises it, named in the message.
    """
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InvalidInputError(
            f"{shown}: the image is {width}x{height} pixels, too small; at least {MIN_SIDE} pixels a side is needed"
        )
    max_pixels = min(max_pixels, MAX_PIXELS)
    if width > MAX_SIDE or height > MAX_SIDE or width * height > max_pixels:
        raise InvalidInputError(
            f"{shown}: the image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), too large; "
            f"the limit is {max_pixels / 1e6:.1f} megapixels and {MAX_SIDE} pixels a side (a CT slice is "
            f"512 x 512; refused before decoding to protect memory; {env} raises it locally)"
        )


def _functional_item(ds: Any, frame: int, sequence: str) -> Any:
    """The item of an enhanced multi-frame functional group for ``frame`` (per-frame, else shared)."""
    for group, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(group)
        if items and len(items) > index and sequence in items[index] and items[index][sequence].value:
            return items[index][sequence].value[0]
    return None


def _rescale(ds: Any, frame: int, shown: str, notes: list[str]) -> tuple[float, float]:
    """(slope, intercept): top level, else the frame's Pixel Value Transformation; defaults only if absent."""
    holder = ds
    if "RescaleSlope" not in ds and "RescaleIntercept" not in ds:
        item = _functional_item(ds, frame, "PixelValueTransformationSequence")
        if item is not None:
            holder = item
    values = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        if keyword not in holder or holder[keyword].value in (None, ""):
            notes.append(f"{keyword} missing: {default:g} assumed")
            values.append(default)
            continue
        try:
            value = _float_value(holder[keyword].value)
        except Exception:
            value = float("nan")
        if not np.isfinite(value) or (keyword == "RescaleSlope" and value == 0):
            raise InvalidInputError(
                f"{shown}: the DICOM's {keyword} is not a usable number; HU cannot be computed"
            )
        values.append(value)
    return values[0], values[1]


def _stored_range(ds: Any, arr: np.ndarray) -> tuple[int, int]:
    bits = int(ds.get("BitsStored") or arr.dtype.itemsize * 8)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _padding_mask(ds: Any, stored: np.ndarray) -> np.ndarray | None:
    if "PixelPaddingValue" not in ds or ds.PixelPaddingValue is None:
        return None

    def signed(v: int) -> int:
        # A padding value written as US for signed data ("63536" meaning -2000).
        bits = int(ds.get("BitsAllocated") or 16)
        if int(ds.get("PixelRepresentation") or 0) == 1 and v >= 1 << (bits - 1):
            return v - (1 << bits)
        return v

    pad = signed(int(_float_value(ds.PixelPaddingValue)))
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None or limit == "":
        return stored == pad
    lim = signed(int(_float_value(limit)))
    return (stored >= min(pad, lim)) & (stored <= max(pad, lim))


def needs_rsna_fix(ds: Any) -> bool:
    """Whether the RSNA 2019 12-bit intercept fix applies (BitsStored 12, unsigned, intercept > -100)."""
    try:
        return (
            int(ds.get("BitsStored") or 0) == 12
            and int(ds.get("PixelRepresentation") or 0) == 0
            and "RescaleIntercept" in ds
            and float(ds.RescaleIntercept) > -100
        )
    except Exception:
        return False


def stored_to_hu(
    stored: np.ndarray, ds: Any, frame: int = 0, notes: list[str] | None = None, shown: str = ""
) -> np.ndarray:
    """Convert one frame of stored pixel values to HU.

    Order: padding mask (on the stored values), RSNA 12-bit fix, MONOCHROME1 mirroring,
    Modality LUT or rescale, padding set to -1000 HU.

    Args:
        stored: integer ``[H, W]`` as decoded from (7FE0,0010) *Pixel Data*.
        ds: the dataset it came from.
        frame: the frame's index (for enhanced multi-frame rescale).
        notes: list to which processing notes are appended.
        shown: the file's display name, for error messages.

    Returns:
        float32 ``[H, W]`` in HU.
    """
    notes = [] if notes is None else notes
    pad = _padding_mask(ds, stored)
    values = stored.astype(np.int64 if stored.dtype.itemsize >= 4 else np.int32)
    rsna = needs_rsna_fix(ds)
    if rsna:
        values = values + 1000
        values[values >= 4096] -= 4096
        notes.append("RSNA 12-bit intercept fix applied (stored + 1000 modulo 4096, intercept -1000)")
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        low, high = _stored_range(ds, stored)
        values = (low + high) - values
        notes.append("MONOCHROME1: stored values mirrored to the MONOCHROME2 convention before rescale")
    if ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        hu = apply_modality_lut(values, ds).astype(np.float64)
        notes.append("Modality LUT Sequence applied")
    else:
        slope, intercept = _rescale(ds, frame, shown, notes)
        if rsna:
            intercept = -1000.0
        # float64: exact for any stored integer times a decimal slope; cast once at the end
        hu = values.astype(np.float64)
        if slope != 1.0:
            hu *= slope
        hu += intercept
    if pad is not None and pad.any():
        hu[pad] = AIR_HU
        notes.append(f"pixel padding set to {AIR_HU:g} HU ({int(pad.sum())} pixels)")
    return hu.astype(np.float32)


def hu_image(
    hu: np.ndarray, meta: dict[str, Any], name: str, source: str
) -> tuple[CTImage, framing.HeadOutline | None]:
    """A slice in HU as every HU reader (DICOM, NIfTI) builds it: the brain-window display and the head
    outline found once, with the head box from it.

    Args:
        hu: float32 [H, W] Hounsfield units.
        meta: allow-listed metadata only.
        name: display name (never a tag value).
        source: ``"dicom"`` or ``"nifti"``.
    """
    display = (window(hu, *PRESETS["brain"]) * 255.0 + 0.5).astype(np.uint8)
    outline = framing.outline_from_hu(hu)
    ct = CTImage(
        hu=hu,
        display=display,
        meta=meta,
        head_box=framing.head_box(outline, hu.shape),
        source=source,
        name=name,
        head_outline=framing.outline_polygon(outline, hu.shape),
    )
    return ct, outline


#: Called before each frame is decoded with (frames done, frames in all); raises to stop the reading
#: (:meth:`brain_ct.collect.Budget.check`: the request's time budget).
FrameCheck = Callable[[int, int], None]


def _dicom_frames(
    data: bytes,
    shown: str,
    all_frames: bool,
    frame: int | None,
    allow_unverified: bool,
    check: FrameCheck | None = None,
) -> list[tuple[CTImage, framing.HeadOutline | None]]:
    if decode_guard.is_deflated(data):
        # Its header is judged before the pixels are inflated: a 96 KB file may hold 50 megapixels.
        _declared_size(_parse_dicom(data, shown, stop_before_pixels=True), shown)
    ds = _parse_dicom(data, shown, stop_before_pixels=False)
    notes: list[str] = []
    rows, cols, frames = _check_dicom(ds, shown, allow_unverified, notes)
    _check_head_header(ds, shown, allow_unverified, notes)
    if not all_frames:
        if frame is None:
            frame = frames // 2
        if not -frames <= frame < frames:
            raise InvalidInputError(f"{shown}: frame {frame} requested, but the file has {frames} frame(s)")
        indices = [frame % frames]
    else:
        limits.current().check_scan(frames, rows * cols * frames, rows, cols, shown)
        indices = list(range(frames))
    base_meta = extract_meta(ds)
    if frames > 1:
        base_meta["NumberOfFrames"] = frames
    images = []
    for done, index in enumerate(indices):
        if check is not None:
            check(done, len(indices))
        try:
            stored = decode_guard.decode_frame(ds, index, frames, shown)
        except InvalidInputError:
            raise
        except Exception as exc:
            message = scrub_text(str(exc), ds)[:200]
            raise InvalidInputError(
                f"{shown}: the DICOM pixel data cannot be decoded (truncated, damaged or an unsupported "
                f"compression: {type(exc).__name__}: {message})"
            ) from None
        if stored.shape != (rows, cols):
            raise InvalidInputError(
                f"{shown}: the decoded pixel data is {stored.shape}, not one {rows}x{cols} grey frame"
            )
        frame_notes = list(notes)
        hu = stored_to_hu(stored, ds, index, frame_notes, shown)
        meta = dict(base_meta)
        if frames > 1:
            meta["FrameIndex"] = index
            meta.update(_frame_position(ds, index))
        if frame_notes:
            meta["Notes"] = frame_notes
        images.append(hu_image(hu, meta, shown, "dicom"))
    return images


def _frame_position(ds: Any, index: int) -> dict[str, Any]:
    """Per-frame geometry of enhanced multi-frame CT (plane position and orientation)."""
    out: dict[str, Any] = {}
    item = _functional_item(ds, index, "PlanePositionSequence")
    if item is not None and "ImagePositionPatient" in item:
        out["ImagePositionPatient"] = [float(v) for v in item.ImagePositionPatient]
    item = _functional_item(ds, index, "PlaneOrientationSequence")
    if item is not None and "ImageOrientationPatient" in item:
        out["ImageOrientationPatient"] = [float(v) for v in item.ImageOrientationPatient]
    item = _functional_item(ds, index, "PixelMeasuresSequence")
    if item is not None and "PixelSpacing" in item:
        out["PixelSpacing"] = [float(v) for v in item.PixelSpacing]
    return out


# --------------------------------------------------------------------------- ordinary images


def _apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an ``[H, W(, C)]`` array, as viewers display it."""
    if orientation == 2:
        return image[:, ::-1]
    if orientation == 3:
        return image[::-1, ::-1]
    if orientation == 4:
        return image[::-1]
    if orientation == 5:
        return image.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(image, k=-1)
    if orientation == 7:
        return image.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(image, k=1)
    return image


def _image_header(data: bytes, fmt: str, shown: str) -> tuple[int, int, int, bool]:
    """(width, height, EXIF orientation, one grey component) from the header alone (Pillow opens lazily)."""
    width, height, orientation, grey = _peek_image(data, fmt, shown)
    _check_dimensions(width, height, shown, limits.current().max_image_pixels, limits.ENV["max_image_pixels"])
    return width, height, orientation, grey


def _peek_image(data: bytes, fmt: str, shown: str) -> tuple[int, int, int, bool]:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                grey = im.mode in ("L", "1")
                try:
                    orientation = int(_exif(im).get(0x0112, 1))
                except Exception:
                    orientation = 1
    except Image.DecompressionBombError:
        raise InvalidInputError(
            f"{shown}: the {fmt} image declares a huge size, too large (a decompression bomb?); "
            f"the limit is {limits.current().max_image_pixels / 1e6:.0f} megapixels, refused before decoding"
        ) from None
    except Exception:
        raise InvalidInputError(
            f"{shown}: the {fmt} file is damaged or truncated and cannot be read; expected {ACCEPTED}"
        ) from None
    return width, height, orientation, grey


def _exif(im: Any) -> Any:
    """An opened image's EXIF without decoding its pixels.

    Pillow's ``getexif()`` on a PNG without an eXIf chunk before its pixels *decodes the whole
    image* to look for one after them: a 25-megapixel 16-bit PNG would be decoded here, uncapped.
    A PNG's orientation is taken from a chunk before the pixels only (where encoders put it).
    """
    from PIL import Image

    if im.format != "PNG":
        return im.getexif()
    exif = Image.Exif()
    raw = im.info.get("exif")
    if raw:
        exif.load(raw)
    return exif


def image_pixels(data: bytes, budget: limits.UploadLimits | None = None) -> tuple[int, int] | None:
    """(rows, columns) an ordinary image will have once read (reduced as :func:`load_image` reduces it),
    from its header alone; None when it is no readable PNG, JPEG, TIFF, WebP or BMP header.

    For a scan's pixel total before any slice is decoded (:func:`brain_ct.series.read_series`).
    """
    fmt = sniff(data[:64])
    if fmt not in IMAGE_FORMATS:
        return None
    try:
        width, height, orientation, _ = _peek_image(data, fmt, "")
    except InvalidInputError:
        return None
    budget = budget or limits.current()
    rows, cols = decode_guard.reduced_shape(height, width, budget.reduced_side)
    return (cols, rows) if orientation in (5, 6, 7, 8) else (rows, cols)


def _check_jpeg_scans(data: bytes, shown: str) -> None:
    """Refuse a JPEG of more than :data:`MAX_JPEG_SCANS` scans before decoding it.

    Inside entropy-coded data an FF byte is always followed by 00 or a restart marker, so every
    FF DA in the file is a start-of-scan marker (of the image or of an embedded thumbnail).
    """
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise InvalidInputError(
            f"{shown}: the JPEG is coded in {scans} scans; at most {MAX_JPEG_SCANS} are accepted (encoders "
            "write up to ~10; each scan costs a pass over the whole image). Re-save it as a baseline JPEG or PNG"
        )


def _check_complete(data: bytes, fmt: str, shown: str) -> None:
    """Refuse truncated PNG/JPEG files that decoders would silently fill with grey."""
    truncated = False
    if fmt == "JPEG":
        # After the last start-of-scan marker, entropy-coded data never contains FF D9 except as
        # the end-of-image marker (FF bytes are stuffed), so its absence means truncation.
        sos = data.rfind(b"\xff\xda")
        truncated = sos < 0 or data.find(b"\xff\xd9", sos) < 0
    elif fmt == "PNG":
        truncated = b"IEND" not in data[-64:]
    if truncated:
        raise InvalidInputError(
            f"{shown}: the {fmt} file is truncated (its end is missing); re-export or re-download it"
        )


def _to_uint8(image: np.ndarray, shown: str) -> np.ndarray:
    """Scale an image of any depth to uint8: 8-bit as is, others stretched min..max."""
    if image.dtype == np.uint8:
        return image
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise InvalidInputError(
            f"{shown}: the image contains NaN or infinite values; expected finite pixel values"
        )
    low, high = float(image.min()), float(image.max())
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    # In place on one float64 copy: a 4-channel 16-bit image would otherwise hold four.
    values = image.astype(np.float64)
    values -= low
    values *= 255.0 / (high - low)
    values += 0.5
    np.clip(values, 0, 255, out=values)
    return values.astype(np.uint8)


def _load_ordinary(data: bytes, fmt: str, shown: str) -> tuple[CTImage, framing.HeadOutline | None]:
    _check_complete(data, fmt, shown)
    width, height, orientation, grey_jpeg = _image_header(data, fmt, shown)
    if fmt == "JPEG":
        _check_jpeg_scans(data, shown)
    notes: list[str] = []
    reduced_side = limits.current().reduced_side
    if max(width, height) > reduced_side:
        # Too large to decode in this process: a capped worker decodes it (a JPEG at a libjpeg
        # scale) and sends back the reduced image only.
        decoded, (rows, cols), factor = decode_guard.decode_image(
            data, fmt, grey_jpeg, height, width, reduced_side, shown
        )
        expected = (-(-height // factor), -(-width // factor))
        notes.append(
            f"read at a reduced size: {decoded.shape[1]}x{decoded.shape[0]} pixels of the image's "
            f"{width}x{height} (longest side at most {reduced_side}; the model sees far less)"
        )
    else:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if decoded is None or decoded.size == 0:
            raise InvalidInputError(
                f"{shown}: the {fmt} file cannot be decoded (damaged or truncated); expected {ACCEPTED}"
            )
        (rows, cols), expected = decoded.shape[:2], (height, width)
    if (rows, cols) != expected:
        raise InvalidInputError(
            f"{shown}: the {fmt} header says {width}x{height} but the pixels are {cols}x{rows}; the file is damaged"
        )
    bit_depth = decoded.dtype.itemsize * 8
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    image = _to_uint8(decoded, shown)
    if channels == 4:
        # Flatten onto black: transparent parts of a figure become background, not white.
        alpha = image[..., 3:4].astype(np.float32) * (1.0 / 255.0)
        image = (image[..., :3].astype(np.float32) * alpha + 0.5).astype(np.uint8)
    elif channels == 2:
        alpha = image[..., 1].astype(np.float32) * (1.0 / 255.0)
        image = (image[..., 0].astype(np.float32) * alpha + 0.5).astype(np.uint8)
    elif channels not in (1, 3):
        raise InvalidInputError(f"{shown}: the image has {channels} channels; expected grey, RGB or RGBA")
    image = np.ascontiguousarray(_apply_exif_orientation(image, orientation))
    if image.ndim == 3:
        colour = framing.colour_fraction(image)
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    else:
        colour, grey = 0.0, image
    meta: dict[str, Any] = {
        "Format": fmt,
        "BitDepth": bit_depth,
        "Channels": channels,
        "Rows": int(grey.shape[0]),
        "Columns": int(grey.shape[1]),
    }
    if notes:
        meta["Notes"] = notes
    outline, _ = framing.outline_from_grey(grey)
    ct = CTImage(
        hu=None,
        display=grey,
        meta=meta,
        head_box=framing.head_box(outline, grey.shape),
        source="image",
        name=shown,
        colour_fraction=colour,
        head_outline=framing.outline_polygon(outline, grey.shape),
    )
    return ct, outline


# --------------------------------------------------------------------------- public API


def _load(
    source: Source,
    allow_unverified: bool,
    frame: int | None,
    name: str | None,
    all_frames: bool,
    check: FrameCheck | None = None,
) -> list[CTImage]:
    data, shown = read_source(source, name)
    with reader_errors(shown):
        return _load_data(data, shown, allow_unverified, frame, all_frames, check)


@contextlib.contextmanager
def reader_errors(shown: str) -> Iterator[None]:
    """Turn whatever a library raises while reading ``shown`` into an :class:`InvalidInputError` with a message.

    pydicom converts elements lazily and may raise anything on a malformed one (a stray sequence
    delimiter after the pixel data raises ``NotImplementedError`` on first access); OpenCV and
    Pillow raise their own types. Only the exception's type is quoted: its text may quote a value.
    """
    try:
        yield
    except BrainCTError:
        raise
    except MemoryError:
        raise InvalidInputError(
            f"{shown}: reading it needs more memory than is available; the file is too large or damaged"
        ) from None
    except Exception as exc:
        raise InvalidInputError(
            f"{shown}: the file is malformed and cannot be read ({type(exc).__name__} in "
            f"{type(exc).__module__.split('.')[0]}); re-export it from the viewer or PACS. Expected {ACCEPTED}"
        ) from None


def _load_data(
    data: bytes,
    shown: str,
    allow_unverified: bool,
    frame: int | None,
    all_frames: bool,
    check: FrameCheck | None,
) -> list[CTImage]:
    kind = sniff(data[:HEAD_BYTES])
    # The DICM marker wins over any magic in the preamble (TIFF/DICOM dual files carry TIFF's there).
    what = None if has_preamble(data) or kind in IMAGE_FORMATS else unsupported_words(data)
    if what is not None:
        raise InvalidInputError(f"{shown}: this is {what}, which is not supported; expected {ACCEPTED}")
    if kind not in IMAGE_FORMATS:
        with _quiet():
            images = _dicom_frames(data, shown, all_frames, frame, allow_unverified, check)
    else:
        if frame not in (None, 0):
            raise InvalidInputError(f"{shown}: frame {frame} requested, but a {kind} image has one frame")
        images = [_load_ordinary(data, kind, shown)]
    if not allow_unverified:
        # One representative frame (the middle) is checked: a scan's first and last slices
        # may rightly hold little or no head.
        framing.check_plausible(*images[len(images) // 2])
    else:
        for ct, _ in images:
            ct.head_check = "skipped"
    return [ct for ct, _ in images]


def load_image(
    source: Source,
    *,
    allow_unverified: bool = False,
    frame: int | None = None,
    name: str | None = None,
) -> CTImage:
    """Load one slice from a DICOM file or an ordinary image.

    Args:
        source: a path (str or Path), bytes, or a binary file object.
        allow_unverified: skip the head-CT plausibility check (:func:`brain_ct.framing.check_plausible`)
            and accept a DICOM without Modality tag, for unusual but genuine slices.
        frame: for multi-frame DICOM, the frame to read (default: the middle one).
        name: display name; default the file name for paths, else ``"upload"``.

    Returns:
        The slice as a :class:`CTImage`.

    Raises:
        InvalidInputError: the input cannot be read as a CT slice (the message says why and
            what is accepted); :class:`~brain_ct.errors.NotHeadCTError` when it decodes but does
            not look like an axial head CT.
    """
    return _load(source, allow_unverified, frame, name, all_frames=False)[0]


def load_frames(
    source: Source,
    *,
    allow_unverified: bool = False,
    name: str | None = None,
    check: FrameCheck | None = None,
) -> list[CTImage]:
    """Load every frame of a (multi-frame) DICOM file; a single-frame file or an image gives one.

    Each frame's ``meta`` carries ``FrameIndex`` and ``NumberOfFrames`` (multi-frame only) and,
    for enhanced CT, its own ImagePositionPatient. The plausibility check runs on the middle frame.

    Args:
        source: a path, bytes or a binary file object.
        allow_unverified: as :func:`load_image`.
        name: as :func:`load_image`.
        check: called before each frame with (frames done, frames in all), e.g. the request's
            time budget (:meth:`brain_ct.collect.Budget.check`); what it raises stops the reading.

    Raises:
        InvalidInputError: as :func:`load_image`; also when the frames are more than a scan may
            have (:meth:`brain_ct.limits.UploadLimits.check_scan`), checked before any is decoded.
    """
    return _load(source, allow_unverified, None, name, all_frames=True, check=check)
