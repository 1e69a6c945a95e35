"""An ordinary image (PNG, JPEG, BMP, TIFF, WebP) → :class:`~brain_ct.image.CTImage` with ``hu`` None.

Read with OpenCV: PNG (8/16 bit), JPEG, BMP, TIFF (8/16 bit, float), WebP. The header
is read first with Pillow (lazy, no pixel decoding) and its size checked against the limits in
force (:attr:`~brain_ct.limits.UploadLimits.max_image_pixels`) and :data:`brain_ct.source.MAX_SIDE`, for every
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

import io
import warnings
from typing import Any

import cv2
import numpy as np

import brain_ct.decode_guard as decode_guard
import brain_ct.framing as framing
import brain_ct.limits as limits
from brain_ct.errors import InvalidInputError
from brain_ct.image import CTImage
from brain_ct.sniff import IMAGE_FORMATS, sniff
from brain_ct.source import ACCEPTED, check_dimensions

#: Most scans (SOS markers) a JPEG may hold. Every progressive scan passes over the whole
#: coefficient buffer: 20,000 scans of a 7000² image took 86 s in OpenCV. Encoders write 1-10
#: (a few more counting an EXIF thumbnail).
MAX_JPEG_SCANS = 100


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
    check_dimensions(width, height, shown, limits.current().max_image_pixels, limits.ENV["max_image_pixels"])
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
    """(rows, columns) an ordinary image will have once read (reduced as :func:`brain_ct.io.load_image` reduces it),
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


def load_ordinary(data: bytes, fmt: str, shown: str) -> tuple[CTImage, framing.HeadOutline | None]:
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
