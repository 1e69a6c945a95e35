"""Fences around the parts of DICOM decoding that allocate what the *data* says, not the header.

:mod:`brain_ct.dicom` refuses a DICOM whose (0028,0010) *Rows* × (0028,0011) *Columns* is too large
before anything is decoded. Two things escape that check, and a tiny upload could use them to
take a server down:

1. **Compressed frames** carry their own frame header — the JPEG 2000 SIZ marker segment, a
   JPEG SOF0-SOF15 segment, the JPEG-LS SOF55 segment — and the decoders allocate what *it*
   declares (a 116 KB JPEG 2000 file whose SIZ says 20000 × 20000 costs ~2.7 GB).
   :func:`check_frame_header` reads that header first and refuses a frame whose size or
   component count disagrees with the DICOM header; :func:`decode_frame` then decodes
   compressed frames in a worker process whose address space is capped
   (:data:`DECODE_MEMORY_BYTES` above its idle size), so that an unknown codec bug can at
   worst fail that one file, never exhaust the server's memory. Uncompressed frames are decoded
   in-process: their size is exactly what the checked header says.
   Ordinary images too large to decode in the server process (a longest side above
   :attr:`brain_ct.limits.UploadLimits.reduced_side`) are decoded by the same workers, under the
   same caps, and come back reduced (:func:`decode_image`).
2. **Deflated datasets** ((0002,0010) *Transfer Syntax UID* 1.2.840.10008.1.2.1.99) are inflated
   whole by pydicom before it parses a single tag, so ~1 MB can hide hundreds of MB of zeros.
   :func:`inflate_deflated` inflates them beforehand through a size-capped decompressor
   (the scan pixel budget of :mod:`brain_ct.limits` at 16 bits).
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import os
import queue
import select
import struct
import subprocess
import sys
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

import brain_ct.limits as upload_limits
from brain_ct.errors import InvalidInputError

#: Address space a decoding worker may use above its idle size (bytes): a 50-megapixel frame
#: needs ~0.5 GB (16-bit output, the decoder's 32-bit work buffers, the copy sent back).
DECODE_MEMORY_BYTES = 1 << 30

#: Seconds one compressed frame may take to decode before the worker is stopped.
DECODE_TIMEOUT_S = 30.0

#: Most JPEG 2000 tiles a frame may declare (decoders keep per-tile bookkeeping).
MAX_J2K_TILES = 16384

#: Worker processes decoding compressed frames at the same time.
DECODE_WORKERS = max(1, min(2, os.cpu_count() or 1))

_DEFLATED = "1.2.840.10008.1.2.1.99"
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) in explicit VR little endian
_J2K_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
# JPEG frame headers: SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC); SOF55 (F7) is JPEG-LS;
# DHP (DE) opens a hierarchical JPEG with the same layout.
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7, 0xDE}
# JPEG markers without a length field: TEM, RST0-7, SOI, EOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})


# --------------------------------------------------------------------------- frame headers


@dataclass(frozen=True)
class FrameHeader:
    """What a compressed frame's own header declares.

    Attributes:
        codec: ``"JPEG 2000"``, ``"JPEG"`` or ``"JPEG-LS"``.
        rows: image height in pixels.
        columns: image width in pixels.
        components: samples per pixel.
        tiles: JPEG 2000 tiles (1 for JPEG).
    """

    codec: str
    rows: int
    columns: int
    components: int
    tiles: int = 1


def _j2k_header(stream: bytes) -> FrameHeader | None:
    """SIZ of a JPEG 2000 codestream (ISO 15444-1 A.5.1), also inside a JP2 wrapper."""
    start = 0
    if stream.startswith(_J2K_SIGNATURE):
        start = stream.find(b"\xff\x4f\xff\x51", 0, 1 << 16)
        if start < 0:
            return None
    if stream[start : start + 4] != b"\xff\x4f\xff\x51" or len(stream) < start + 42:
        return None
    # SOC(2) SIZ(2) Lsiz(2) Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz (4 each) Csiz(2)
    x, y, x0, y0, xt, yt, xt0, yt0 = struct.unpack_from(">8I", stream, start + 8)
    (components,) = struct.unpack_from(">H", stream, start + 40)
    columns, rows = max(0, x - x0), max(0, y - y0)
    # a zero tile size is invalid: count it as "too many tiles"
    tiles = 1 << 62 if xt == 0 or yt == 0 else -(-max(0, x - xt0) // xt) * -(-max(0, y - yt0) // yt)
    return FrameHeader("JPEG 2000", rows, columns, components, tiles)


def _jpeg_header(stream: bytes) -> FrameHeader | None:
    """The first frame header (SOFn, SOF55 or DHP) of a JPEG / JPEG-LS stream (ITU T.81 B.2.2)."""
    if not stream.startswith(b"\xff\xd8"):
        return None
    offset = 2
    while offset + 4 <= len(stream):
        if stream[offset] != 0xFF:
            return None
        marker = stream[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        if marker in _JPEG_STANDALONE:
            offset += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            return None
        (length,) = struct.unpack_from(">H", stream, offset + 2)
        if marker in _JPEG_FRAME_MARKERS:
            if offset + 10 > len(stream):
                return None
            # length(2) precision(1) Y lines(2) X samples per line(2) Nf components(1)
            rows, columns = struct.unpack_from(">HH", stream, offset + 5)
            components = stream[offset + 9]
            return FrameHeader("JPEG-LS" if marker == 0xF7 else "JPEG", rows, columns, components)
        if length < 2:
            return None
        offset += 2 + length
    return None


def frame_header(stream: bytes) -> FrameHeader | None:
    """The frame header a compressed frame declares, or None when none is recognised.

    Args:
        stream: one frame's encapsulated data (JPEG, JPEG-LS or JPEG 2000; a JP2 wrapper is allowed).

    Returns:
        The declared size and components; None for other data (RLE, damaged streams).
    """
    head = bytes(stream[: 1 << 16])
    return _j2k_header(head) or _jpeg_header(head)


def check_frame_header(stream: bytes, rows: int, columns: int, samples: int, shown: str) -> None:
    """Refuse a compressed frame whose own header disagrees with (0028,0010)/(0028,0011)/(0028,0002).

    Raises:
        InvalidInputError: the frame declares another size, other components, or too many tiles.
    """
    header = frame_header(stream)
    if header is None:
        return
    if (header.rows, header.columns) != (rows, columns) or header.components != samples:
        raise InvalidInputError(
            f"{shown}: the {header.codec} data declares a {header.columns}x{header.rows} image with "
            f"{header.components} component(s), but the DICOM header says {columns}x{rows} with {samples}; "
            "the file is damaged or forged, and was refused before decoding to protect memory"
        )
    if header.tiles > MAX_J2K_TILES:
        raise InvalidInputError(
            f"{shown}: the {header.codec} data is split into {header.tiles} tiles, above the limit of "
            f"{MAX_J2K_TILES}; the file was refused before decoding to protect memory"
        )


# --------------------------------------------------------------------------- deflated datasets


def inflate_deflated(
    data: bytes, shown: str, limit: int | None = None, *, prefix: int | None = None
) -> tuple[bytes, bool]:
    """Inflate a deflated-transfer-syntax file beforehand, through a size-capped decompressor.

    Args:
        data: a whole DICOM file.
        shown: the file's display name, for messages.
        limit: most bytes the dataset may inflate to; default the scan pixel budget in force at
            16 bits plus 8 MiB of header (72 MiB with the defaults: a 50-megapixel slice is refused).
        prefix: inflate only this many bytes (a header read: the header sits before the pixels),
            and let the rest be; None inflates the whole dataset.

    Returns:
        ``(data, False)`` unchanged for any other file; for a deflated one, ``(file, True)``: the
        same file meta with (0002,0010) set to Explicit VR Little Endian, followed by the inflated
        dataset, which pydicom then parses without inflating anything itself.

    Raises:
        InvalidInputError: the dataset inflates past ``limit`` or its deflate stream is damaged.
    """
    if _DEFLATED.encode() not in data[: 1 << 16]:
        return data, False
    from pydicom.filebase import DicomFileLike
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian

    fp = io.BytesIO(data)
    try:
        preamble = read_preamble(fp, force=True)
        meta = _read_file_meta_info(fp)
    except Exception:
        return data, False  # not parseable here: the ordinary reader will say what is wrong
    if str(meta.get("TransferSyntaxUID", "")) != _DEFLATED:
        return data, False
    if limit is None:
        limit = upload_limits.current().max_scan_pixels * 2 + (8 << 20)
    start = fp.tell()
    try:
        inflated = b""
        if prefix is not None:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            inflated = inflater.decompress(data[start:], prefix)
            # The header is whole once the pixel data's tag is in it (or the stream has ended);
            # else it is longer than the prefix and the dataset is inflated as a whole, below.
            if _PIXEL_DATA_TAG not in inflated and not inflater.eof:
                prefix = None
        if prefix is None:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            inflated = inflater.decompress(data[start:], limit + 1)
    except zlib.error:
        raise InvalidInputError(
            f"{shown}: the deflated DICOM data is damaged and cannot be inflated; re-export the file"
        ) from None
    if prefix is None and (len(inflated) > limit or inflater.unconsumed_tail):
        raise InvalidInputError(
            f"{shown}: the deflated DICOM data inflates to more than {limit >> 20} MiB, far more than "
            "a CT slice needs (a decompression bomb?); it was refused before being parsed"
        )
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    if preamble is not None:
        out.write(preamble + b"DICM")
    write_file_meta_info(DicomFileLike(out), meta, enforce_standard=preamble is not None)
    out.write(inflated)
    return out.getvalue(), True


# --------------------------------------------------------------------------- decoding under a cap


def is_deflated(data: bytes) -> bool:
    """Whether a file names the deflated transfer syntax in its first bytes (cheap; may say yes wrongly)."""
    return _DEFLATED.encode() in data[: 1 << 16]


def _minimal_dataset(ds: Any, frame: bytes) -> Any:
    """A dataset with only what decoding one frame needs: group 0028, the frame, the transfer syntax."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate

    small = Dataset()
    for elem in ds:
        if elem.tag.group == 0x0028 and elem.VR != "SQ":
            small.add(elem)
    small.NumberOfFrames = 1
    small.PixelData = encapsulate([frame])
    small["PixelData"].VR = "OB"
    small.file_meta = FileMetaDataset()
    small.file_meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    return small


def _address_space() -> int | None:
    """This process's virtual memory size in bytes (Linux), or None where unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def reduced_shape(rows: int, columns: int, max_side: int) -> tuple[int, int]:
    """(rows, columns) scaled so that the longest side is at most ``max_side`` (unchanged when it is)."""
    longest = max(rows, columns)
    if longest <= max_side:
        return rows, columns
    scale = max_side / longest
    return max(1, min(max_side, round(rows * scale))), max(1, min(max_side, round(columns * scale)))


def jpeg_factor(rows: int, columns: int, max_side: int) -> int:
    """The smallest libjpeg scale (1, 2, 4 or 8) at which a JPEG's longest side fits ``max_side`` (8 at most:
    the rest is reduced after decoding)."""
    factor = 1
    while factor < 8 and -(-max(rows, columns) // factor) > max_side:
        factor *= 2
    return factor


def _decode_image_here(
    data: bytes, fmt: str, grey: bool, rows: int, columns: int, max_side: int
) -> tuple[np.ndarray, tuple[int, int], int]:
    """Decode an ordinary image as OpenCV does (no EXIF rotation) and reduce it to ``max_side``.

    A JPEG is decoded at 1/2, 1/4 or 1/8 by libjpeg itself (its memory and time shrink with it);
    other formats are decoded whole and then reduced with area averaging.

    Returns:
        (image ``[H, W(, C)]`` in its own dtype, the decoded (rows, columns) before reduction,
        the JPEG scale factor, 1 for other formats).
    """
    import cv2

    buffer = np.frombuffer(data, np.uint8)
    factor = jpeg_factor(rows, columns, max_side) if fmt == "JPEG" else 1
    if factor > 1:
        flags = {
            (2, True): cv2.IMREAD_REDUCED_GRAYSCALE_2,
            (4, True): cv2.IMREAD_REDUCED_GRAYSCALE_4,
            (8, True): cv2.IMREAD_REDUCED_GRAYSCALE_8,
            (2, False): cv2.IMREAD_REDUCED_COLOR_2,
            (4, False): cv2.IMREAD_REDUCED_COLOR_4,
            (8, False): cv2.IMREAD_REDUCED_COLOR_8,
        }[factor, grey] | cv2.IMREAD_IGNORE_ORIENTATION  # the caller applies EXIF orientation itself
        image = cv2.imdecode(buffer, flags)
    else:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ValueError("OpenCV could not decode the image")
    decoded = (int(image.shape[0]), int(image.shape[1]))
    target = reduced_shape(*decoded, max_side)
    if target != decoded:
        image = cv2.resize(image, (target[1], target[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image), decoded, factor


def _serve() -> None:
    """The decoding worker's loop (``python -m brain_ct.decode_guard``), one frame or image per request.

    Request: 8-byte length + a pickle (from the parent, which built it): a one-frame dataset, or
    ``("image", data, fmt, grey, rows, columns, max_side)`` for :func:`decode_image`.
    Reply: 8-byte length + a JSON header (``{"dtype", "shape"}`` or ``{"error"}``), then 8-byte
    length + the array's raw bytes: plain data, so the parent never unpickles anything that
    passed through the decoder.
    """
    import pickle
    import resource

    import cv2
    from pydicom.pixels import pixel_array  # the decoders' libraries load before the cap

    cv2.setNumThreads(1)  # one image at a time; OpenCV's thread pool would only reserve memory

    for name in ("pydicom", "pylibjpeg", "openjpeg", "libjpeg"):
        logging.getLogger(name).disabled = True  # may quote tag values; the parent words errors
    warnings.simplefilter("ignore")
    idle = _address_space()
    if idle is not None:
        cap = idle + DECODE_MEMORY_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    # The replies get a private copy of stdout; descriptor 1 itself goes to /dev/null, so that
    # nothing a decoder library prints can corrupt the protocol (or reach a log).
    source, sink = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (lives as long as the worker)
    while True:
        try:
            (size,) = struct.unpack("<Q", _read_exactly(source, 8))
            small = pickle.loads(_read_exactly(source, size))
        except EOFError:
            return
        try:
            extra: dict[str, Any] = {}
            if isinstance(small, tuple) and small[0] == "image":
                array, decoded, factor = _decode_image_here(*small[1:])
                extra = {"decoded": list(decoded), "factor": factor}
            else:
                array = np.ascontiguousarray(pixel_array(small))
            header = {"dtype": array.dtype.str, "shape": list(array.shape), **extra}
            body = memoryview(array).cast("B")  # sent as it lies in memory, no copy
        except MemoryError:
            header, body = {"error": "MemoryError"}, memoryview(b"")
        except Exception as exc:
            header, body = {"error": type(exc).__name__, "message": str(exc)[:500]}, memoryview(b"")
        del small
        encoded = json.dumps(header).encode()
        sink.write(struct.pack("<Q", len(encoded)) + encoded + struct.pack("<Q", body.nbytes))
        sink.write(body)
        sink.flush()
        del body


class DecodeError(Exception):
    """The decoder refused the frame (damaged data); carries the decoder's exception name and text."""


class _Worker:
    """One decoding worker process and its pipes."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        }
        # Single-threaded numerics: the worker decodes one frame; thread pools only reserve memory.
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "brain_ct.decode_guard"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # decoder messages may quote tag values
            env=env,
            cwd=root,  # `-m` looks in the working folder first: make that this package's own checkout
            bufsize=0,
            close_fds=True,
        )

    def decode(self, small: Any, timeout: float) -> tuple[np.ndarray, dict[str, Any]]:
        import pickle

        payload = pickle.dumps(small, protocol=pickle.HIGHEST_PROTOCOL)
        # Two writes: joining them would copy the payload once more (a large image's whole file).
        self.process.stdin.write(struct.pack("<Q", len(payload)))  # type: ignore[union-attr]
        self.process.stdin.write(payload)  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        header = json.loads(bytes(self._read(self._read_length(deadline), deadline)))
        body = self._read(self._read_length(deadline), deadline)
        if "error" in header:
            if header["error"] == "MemoryError":
                raise MemoryError
            raise DecodeError(f"{header['error']}: {header.get('message', '')}")
        return np.frombuffer(body, dtype=np.dtype(header["dtype"])).reshape(header["shape"]), header

    def _read_length(self, deadline: float) -> int:
        return int(struct.unpack("<Q", self._read(8, deadline))[0])

    def _read(self, size: int, deadline: float) -> bytearray:
        # Unbuffered reads straight into one buffer: select() only sees what the OS still holds,
        # and a large frame is not copied chunk by chunk.
        stdout = self.process.stdout
        buffer = bytearray(size)
        view = memoryview(buffer)
        done = 0
        while done < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([stdout], [], [], remaining)[0]:
                raise TimeoutError
            count = stdout.readinto(view[done : done + (1 << 20)])  # type: ignore[union-attr]
            if not count:
                raise EOFError
            done += count
        return buffer

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


# Idle workers; None is a free slot whose worker starts on first use. A caller takes one (waiting
# while all DECODE_WORKERS are busy) and puts it back, or None if the worker had to be stopped.
def _new_slots() -> queue.Queue[_Worker | None]:
    slots: queue.Queue[_Worker | None] = queue.Queue()
    for _ in range(DECODE_WORKERS):
        slots.put(None)
    return slots


_slots = _new_slots()


def _forget_workers_after_fork() -> None:
    # A forked child (a data-loader worker) must not talk to its parent's decoding workers over
    # the same pipes: it starts its own.
    global _slots
    _slots = _new_slots()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_workers_after_fork)


def _decode_fenced(small: Any, timeout: float) -> tuple[np.ndarray, dict[str, Any]]:
    worker = _slots.get()
    keep = False
    try:
        if worker is None or worker.process.poll() is not None:
            worker = _Worker()
        result = worker.decode(small, timeout)
        keep = True
        return result
    except DecodeError:
        keep = True
        raise
    finally:
        if not keep and worker is not None:
            worker.stop()
        _slots.put(worker if keep else None)


def shutdown_workers() -> None:
    """Stop the idle decoding workers (new ones start on the next compressed frame)."""
    for _ in range(DECODE_WORKERS):
        try:
            worker = _slots.get_nowait()
        except queue.Empty:
            return
        if worker is not None:
            worker.stop()
        _slots.put(None)


atexit.register(shutdown_workers)


def decode_frame(ds: Any, index: int, frames: int, shown: str) -> np.ndarray:
    """Decode one frame of (7FE0,0010) *Pixel Data* as pydicom does, fenced for compressed data.

    Native (uncompressed) frames are decoded in this process: their size is what the already
    checked header says. A compressed frame is first checked with :func:`check_frame_header`
    and then decoded in a worker process limited to :data:`DECODE_MEMORY_BYTES` above its idle
    size and :data:`DECODE_TIMEOUT_S` seconds.

    Args:
        ds: the dataset, with pixel data.
        index: the frame's index (0-based).
        frames: (0028,0008) *Number of Frames* (1 when absent).
        shown: the file's display name, for messages.

    Returns:
        The stored values of that frame, ``[Rows, Columns]`` (as :func:`pydicom.pixels.pixel_array`).

    Raises:
        InvalidInputError: the frame's own header disagrees with the dataset's, or decoding
            runs out of its memory or time.
        Exception: whatever the decoder raises for damaged data (the caller words it).
    """
    from pydicom.encaps import get_frame
    from pydicom.pixels import pixel_array

    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_encapsulated:
        return pixel_array(ds, index=index) if frames > 1 else pixel_array(ds)
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    frame = get_frame(ds.PixelData, index, number_of_frames=frames, extended_offsets=offsets)
    samples = int(ds.get("SamplesPerPixel") or 1)
    check_frame_header(frame, int(ds.Rows), int(ds.Columns), samples, shown)
    if os.name != "posix":  # no address-space limit nor select() on pipes: the header check only
        return pixel_array(ds, index=index) if frames > 1 else pixel_array(ds)
    return _fenced(_minimal_dataset(ds, frame), shown, "the compressed pixel data")[0]


def _timeout() -> float:
    return min(DECODE_TIMEOUT_S, upload_limits.current().decode_seconds)


def _fenced(payload: Any, shown: str, what: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode ``payload`` in a worker; its limits broken become an :class:`InvalidInputError` naming ``what``."""
    timeout = _timeout()
    try:
        return _decode_fenced(payload, timeout)
    except TimeoutError:
        raise InvalidInputError(
            f"{shown}: decoding {what} took longer than {timeout:.0f} s and was stopped; the file is "
            "damaged or hostile"
        ) from None
    except MemoryError:
        raise InvalidInputError(
            f"{shown}: decoding {what} needs more than the {DECODE_MEMORY_BYTES >> 20} MiB allowed; the "
            "file is damaged or hostile"
        ) from None
    except (EOFError, OSError):
        raise InvalidInputError(
            f"{shown}: the decoder stopped while reading {what} (crashed or out of memory); the file is "
            "damaged or hostile"
        ) from None


def decode_image(
    data: bytes, fmt: str, grey: bool, rows: int, columns: int, max_side: int, shown: str
) -> tuple[np.ndarray, tuple[int, int], int]:
    """Decode an ordinary image in a capped worker, reduced so that its longest side is ≤ ``max_side``.

    Args:
        data: the whole file (PNG, JPEG, TIFF, WebP or BMP), its header already checked.
        fmt: its format name as :mod:`brain_ct.sniff` names it (``"JPEG"`` decodes at a libjpeg scale).
        grey: a JPEG with one component (decoded as grey; colour JPEGs stay colour).
        rows: the height its header declares (pixels).
        columns: the width its header declares (pixels).
        max_side: longest side of the result (pixels).
        shown: the file's display name, for messages.

    Returns:
        (image ``[H, W(, C)]`` in its decoded dtype, OpenCV's channel order; (rows, columns) as
        decoded before reduction; the JPEG scale factor, 1 for other formats).

    Raises:
        InvalidInputError: the worker ran out of its time or memory, or the image cannot be decoded.
    """
    payload = ("image", data, fmt, grey, rows, columns, max_side)
    try:
        if os.name != "posix":  # no address-space limit nor select() on pipes: decode here
            return _decode_image_here(*payload[1:])
        image, header = _fenced(payload, shown, f"the {fmt} image")
    except InvalidInputError:  # a ValueError too: its own message stands
        raise
    except (DecodeError, ValueError):
        raise InvalidInputError(f"{shown}: the {fmt} file cannot be decoded (damaged or truncated)") from None
    return image, (int(header["decoded"][0]), int(header["decoded"][1])), int(header["factor"])


if __name__ == "__main__":
    _serve()
