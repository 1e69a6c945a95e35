"""A file in, for every reader: its bytes and display name within the size limits, and the fences all share.

:func:`read_source` takes a path, bytes or a binary file object and gives the bytes (at most
:data:`MAX_FILE_BYTES`) and a display name (never a tag value); :func:`check_dimensions` refuses
from a header an image below :data:`MIN_SIDE` or above the limits in force; :func:`reader_errors`
turns whatever a library raises while reading into an :class:`~brain_ct.errors.InvalidInputError`.
Used by the DICOM reader (:mod:`brain_ct.dicom`), ordinary images (:mod:`brain_ct.ordinary_image`),
NIfTI (:mod:`brain_ct.nifti`) and the entry points (:mod:`brain_ct.io`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from brain_ct.errors import BrainCTError, InvalidInputError

#: Largest image any reader accepts, in pixels per frame; checked before decoding. The limits in
#: force (:mod:`brain_ct.limits`) are far lower by default: this bounds what they may be raised to.
MAX_PIXELS = 50_000_000

#: Largest side accepted, in pixels.
MAX_SIDE = 16384

#: Smallest side accepted, in pixels.
MIN_SIDE = 64


#: Largest file read, in bytes.
MAX_FILE_BYTES = 1 << 30

Source = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]

ACCEPTED = "a CT DICOM slice (.dcm or extension-less) or a PNG, JPEG, BMP, TIFF or WebP image"


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


def check_dimensions(width: int, height: int, shown: str, max_pixels: int, env: str) -> None:
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
