"""A DICOM file → checked header → frames in HU (:class:`~brain_ct.image.CTImage`), pydicom kept quiet.

DICOM (pydicom 3, compressed transfer syntaxes through the pylibjpeg plugins):

* Each frame's stored values become HU in :func:`brain_ct.hu.stored_to_hu` (rescale or Modality LUT,
  padding, the RSNA 12-bit fix, MONOCHROME1).
* Refused: non-CT Modality (MR, US, CR, …), colour (RGB, YBR, palette), no pixel data, fewer
  than :data:`brain_ct.source.MIN_SIDE` pixels a side or more than the limits in force (:mod:`brain_ct.limits`:
  pixels per slice, frames, a scan's pixels; checked in the header before anything is decoded or
  allocated per frame), native pixel data shorter than Rows × Columns × frames says, files
  without the 128-byte preamble that do not really parse as DICOM.
  A dataset without a Modality tag is read as CT when its SOP class is a CT class or its
  rescale says HU (noted in ``meta["Notes"]``); otherwise only with ``allow_unverified=True``.
* Codec bombs (:mod:`brain_ct.decode_guard`): a deflated dataset is inflated through a size-capped
  decompressor before pydicom parses it; a compressed frame whose own header (JPEG 2000 SIZ,
  JPEG SOF, JPEG-LS SOF55) disagrees with Rows/Columns is refused before decoding, and compressed
  frames are decoded in a worker process with a capped address space.

Which bytes are DICOM at all is :mod:`brain_ct.sniff`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import brain_ct.decode_guard as decode_guard
import brain_ct.framing as framing
import brain_ct.limits as limits
from brain_ct.errors import InvalidInputError, NotHeadCTError
from brain_ct.hu import functional_item, hu_image, stored_to_hu
from brain_ct.image import CTImage
from brain_ct.privacy import extract_meta, scrub_text
from brain_ct.sniff import HEAD_BYTES, IMAGE_FORMATS, has_preamble, sniff
from brain_ct.source import ACCEPTED, Source, check_dimensions, read_source, reader_errors

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
    no logging set-up, and a library user who calls :func:`brain_ct.io.load_image` directly is covered as much
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
    check_dimensions(cols, rows, shown, budget.max_slice_pixels, limits.ENV["max_slice_pixels"])
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
        item = functional_item(ds, 0, "PixelMeasuresSequence")
        if item is not None and "PixelSpacing" in item:
            header["PixelSpacing"] = list(item.PixelSpacing)
    reason = framing.header_reason(header)
    if reason is None:
        return
    if not allow_unverified:
        raise NotHeadCTError(f"{shown}: this does not look like a head CT: {reason}. {framing.OVERRIDE_HINT}")
    notes.append(f"not verified as a head CT: {reason} (read because allow_unverified was set)")


#: Called before each frame is decoded with (frames done, frames in all); raises to stop the reading
#: (:meth:`brain_ct.collect.Budget.check`: the request's time budget).
FrameCheck = Callable[[int, int], None]


def dicom_frames(
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
    item = functional_item(ds, index, "PlanePositionSequence")
    if item is not None and "ImagePositionPatient" in item:
        out["ImagePositionPatient"] = [float(v) for v in item.ImagePositionPatient]
    item = functional_item(ds, index, "PlaneOrientationSequence")
    if item is not None and "ImageOrientationPatient" in item:
        out["ImageOrientationPatient"] = [float(v) for v in item.ImageOrientationPatient]
    item = functional_item(ds, index, "PixelMeasuresSequence")
    if item is not None and "PixelSpacing" in item:
        out["PixelSpacing"] = [float(v) for v in item.PixelSpacing]
    return out
