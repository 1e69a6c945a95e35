"""The one budget of what an upload may cost: pixels, frames, voxels, bytes and seconds.

Every reader asks :func:`current` (or the :class:`UploadLimits` it was given) *before* it
allocates anything from what a file declares: :mod:`brain_ct.dicom` (a slice's Rows × Columns, a
multi-frame file's NumberOfFrames), :mod:`brain_ct.ordinary_image` (an ordinary image's header), :mod:`brain_ct.series` (a
scan's slices and pixels summed over the headers, before any slice is decoded) and
:mod:`brain_ct.collect` (bytes, members, seconds). The defaults are the strict values of a
public Space (2 vCPU, 16 GB shared by every visitor: one request ≤ 1.5 GB above idle); a local
user raises them with environment variables (``BRAIN_CT_MAX_SCAN_SLICES=400``) or the CLI's
``--max-slices``, so that thin-section scans of 250+ slices read on a workstation.

Messages say a limit in the user's terms: "at most 128 slices of 512 × 512" when the pixel cap
binds before the slice cap does (:meth:`UploadLimits.scan_limit_text`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from brain_ct.errors import InvalidInputError, TooLargeError

#: The slice side messages count in: what nearly every CT scanner writes.
TYPICAL_SIDE = 512

#: Environment variable of each field (integers; ``max_seconds`` and ``decode_seconds`` may be decimals).
ENV = {
    "max_slice_pixels": "BRAIN_CT_MAX_SLICE_PIXELS",
    "max_image_pixels": "BRAIN_CT_MAX_IMAGE_PIXELS",
    "reduced_side": "BRAIN_CT_REDUCED_SIDE",
    "max_scan_slices": "BRAIN_CT_MAX_SCAN_SLICES",
    "max_scan_pixels": "BRAIN_CT_MAX_SCAN_PIXELS",
    "max_voxels": "BRAIN_CT_MAX_VOXELS",
    "max_volume_bytes": "BRAIN_CT_MAX_VOLUME_BYTES",
    "max_file_bytes": "BRAIN_CT_MAX_FILE_BYTES",
    "max_request_bytes": "BRAIN_CT_MAX_REQUEST_BYTES",
    "max_seconds": "BRAIN_CT_MAX_SECONDS",
    "decode_seconds": "BRAIN_CT_DECODE_SECONDS",
}


@dataclass(frozen=True)
class UploadLimits:
    """What one request may cost. The defaults are the public Space's.

    Attributes:
        max_slice_pixels: most pixels (Rows × Columns) of one DICOM frame, refused above from the
            header before decoding (2048²: CT slices are 512² and rarely 1024²; a DICOM's HU cannot
            be read at a reduced size without changing its pixel spacing).
        max_image_pixels: most pixels an ordinary image (PNG, JPEG, TIFF, WebP, BMP) may declare
            in its header; refused above, before decoding (25 MP).
        reduced_side: an ordinary image whose longest side is above this (pixels) is read at a
            reduced size, its longest side ≤ this, in a time- and memory-capped worker; the
            reading's ``meta["Notes"]`` says so. The model sees far less (224-512 px).
        max_scan_slices: most slices (files or frames) one scan may have.
        max_scan_pixels: most pixels of all slices of one scan together (128 slices of 512²:
            ~0.55 GB of HU and display as the app keeps them); checked from the headers before
            any slice is decoded.
        max_voxels: most voxels of one NIfTI volume (the same budget as a scan's pixels).
        max_volume_bytes: most bytes a NIfTI volume's data may inflate to (voxels × 8-byte floats).
        max_file_bytes: most bytes of one file read into memory.
        max_request_bytes: most bytes of all files of one request held in memory at once (a zip's
            members as inflated; 384 MiB: a 128-slice scan is ~64 MiB, room for other series beside
            it); a zip whose directory declares more is refused before any member is inflated.
        max_seconds: most seconds one request may spend reading (collecting, headers, decoding;
            not the model), checked inside the long loops (per member, per file, per frame).
        decode_seconds: most seconds one frame or image may take in a decoding worker.
    """

    max_slice_pixels: int = 2048 * 2048
    max_image_pixels: int = 25_000_000
    reduced_side: int = 2048
    max_scan_slices: int = 300
    max_scan_pixels: int = 128 * TYPICAL_SIDE * TYPICAL_SIDE
    max_voxels: int = 128 * TYPICAL_SIDE * TYPICAL_SIDE
    max_volume_bytes: int = 128 * TYPICAL_SIDE * TYPICAL_SIDE * 8
    max_file_bytes: int = 1 << 30
    max_request_bytes: int = 384 << 20
    max_seconds: float = 60.0
    decode_seconds: float = 30.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InvalidInputError(
                    f"limit {f.name} must be a positive number; got {value!r} "
                    f"(set it with {ENV[f.name]} or leave it at its default)"
                )
        if self.reduced_side < 64:
            raise InvalidInputError(f"limit reduced_side must be at least 64 pixels; got {self.reduced_side}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> UploadLimits:
        """The defaults, each replaced by its environment variable (:data:`ENV`) when set.

        Raises:
            InvalidInputError: a variable is not a positive number (the message names it).
        """
        environ = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for f in dataclasses.fields(cls):
            text = environ.get(ENV[f.name], "").strip()
            if not text:
                continue
            try:
                values[f.name] = float(text) if f.type in (float, "float") else int(text.replace("_", ""))
            except ValueError:
                raise InvalidInputError(
                    f"{ENV[f.name]}={text!r} is not a {'number' if f.type in (float, 'float') else 'whole number'}"
                    f"; unset it for the default ({getattr(cls, f.name)})"
                ) from None
        return cls(**values)

    def with_slices(self, slices: int) -> UploadLimits:
        """These limits raised so that a scan of ``slices`` slices of 512² reads (CLI ``--max-slices``).

        Only raises: a value already above what ``slices`` needs is kept. NIfTI volumes get the same
        room (voxels, and their bytes as 8-byte floats).
        """
        pixels = slices * TYPICAL_SIDE * TYPICAL_SIDE
        return dataclasses.replace(
            self,
            max_scan_slices=max(self.max_scan_slices, slices),
            max_scan_pixels=max(self.max_scan_pixels, pixels),
            max_voxels=max(self.max_voxels, pixels),
            max_volume_bytes=max(self.max_volume_bytes, pixels * 8),
            max_request_bytes=max(self.max_request_bytes, slices * (3 << 20)),
        )

    def scan_slices_allowed(self, rows: int, columns: int) -> int:
        """How many slices of ``rows`` × ``columns`` a scan may have: the tighter of both scan caps."""
        return max(0, min(self.max_scan_slices, self.max_scan_pixels // max(1, rows * columns)))

    def scan_limit_text(self, rows: int = TYPICAL_SIDE, columns: int = TYPICAL_SIDE) -> str:
        """The scan limit in the user's terms, e.g. ``"at most 128 slices of 512 × 512"``."""
        return f"at most {self.scan_slices_allowed(rows, columns)} slices of {columns} × {rows}"

    def check_scan(self, slices: int, pixels: int, rows: int, columns: int, what: str) -> None:
        """Refuse a scan of ``slices`` slices and ``pixels`` pixels in all, before decoding it.

        Args:
            slices: slices (files or frames) declared.
            pixels: their pixels together, from the headers.
            rows: the slices' height in pixels (the largest, for mixed sizes), for the message.
            columns: their width in pixels.
            what: how the message names the input (e.g. ``"the zip"``).

        Raises:
            TooLargeError: over :attr:`max_scan_slices` or :attr:`max_scan_pixels`.
        """
        if slices <= self.max_scan_slices and pixels <= self.max_scan_pixels:
            return
        raise TooLargeError(
            f"{what} holds {slices} slices of {columns} × {rows} ({pixels / 1e6:.0f} megapixels); a scan may have "
            f"{self.scan_limit_text(rows, columns)} here ({self.max_scan_pixels / 1e6:.0f} megapixels). Send "
            f"a thicker-slice series, or read it locally with a higher limit (CLI --max-slices N, or the "
            f"environment variables {ENV['max_scan_slices']} and {ENV['max_scan_pixels']}). Refused before "
            "any slice was decoded"
        )


#: The limits set for this process by :func:`configure` (the CLI's flags); None: from the environment.
_configured: UploadLimits | None = None

#: The limits one reading passed explicitly (:func:`using`), seen by every reader it calls.
_in_force: ContextVar[UploadLimits | None] = ContextVar("brain_ct_upload_limits", default=None)


def current() -> UploadLimits:
    """The limits in force: a reading's own (:func:`using`), else those :func:`configure` set, else
    :meth:`UploadLimits.from_env`."""
    own = _in_force.get()
    if own is not None:
        return own
    return _configured if _configured is not None else UploadLimits.from_env()


@contextlib.contextmanager
def using(limits: UploadLimits | None) -> Iterator[UploadLimits]:
    """Within this block (this thread or task only), :func:`current` is ``limits`` (None: unchanged)."""
    if limits is None:
        yield current()
        return
    token = _in_force.set(limits)
    try:
        yield limits
    finally:
        _in_force.reset(token)


def configure(limits: UploadLimits | None) -> UploadLimits | None:
    """Set the limits of this process (None: back to the environment's); returns the previous setting."""
    global _configured
    previous, _configured = _configured, limits
    return previous
