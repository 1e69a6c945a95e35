"""CT windowing and the ONE preprocessing path from a :class:`~brain_ct.image.CTImage` to model input.

A window maps Hounsfield units (HU) linearly to [0, 1]: ``center - width/2`` → 0 and
``center + width/2`` → 1, clipped outside. Rescale (stored value × (0028,1053) *Rescale Slope*
+ (0028,1052) *Rescale Intercept*) happens in :mod:`brain_ct.io` before any windowing.

Model input (:func:`to_model_input`) is a float32 ``[C, size, size]`` array:

* DICOM input (``ct.hu`` is set): one channel per window, HU → window → [0, 1].
* 8-bit images (PNG/JPG/…; ``ct.hu is None``): whoever saved the image already chose a
  window, so the grey image scaled to [0, 1] is repeated in every channel.

Both are cropped to a square around the head (``ct.head_box``) so scanner DICOMs and internet
figures are framed alike, resized, then normalised with per-channel mean/std. Training and
inference both call :func:`to_model_input`; :func:`heatmap_to_image` maps a map on the model
grid back onto the input image's own pixel grid through the same box.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.image import Box, CTImage

Window = tuple[float, float]

#: Named windows as (center, width) in HU.
PRESETS: dict[str, Window] = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "blood": (60.0, 40.0),
    "bone": (600.0, 2800.0),
    "soft_tissue": (40.0, 380.0),
}

#: Default model channels, as the RSNA 2019 winners used: brain, subdural, bone.
DEFAULT_WINDOWS: tuple[Window, ...] = (PRESETS["brain"], PRESETS["subdural"], PRESETS["bone"])

#: ImageNet statistics: what ``microsoft/resnet-50`` was pretrained with.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: HU used to pad outside the scanned field (air).
AIR_HU = -1000.0

#: Fraction of the head's larger side added around it on every side of the model box.
HEAD_MARGIN = 0.06


def window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """Apply a linear CT window.

    Args:
        hu: array of HU values, any shape. NaN counts as the window's lower bound.
        center: window center (0028,1050) *Window Center*, in HU.
        width: window width (0028,1051) *Window Width*, in HU; must be > 0.

    Returns:
        float32 array of the same shape with values in [0, 1].
    """
    if not np.isfinite(center) or not np.isfinite(width) or width <= 0:
        raise InvalidInputError(
            f"window center/width must be finite with width > 0 HU; got center={center}, width={width}"
        )
    low = center - width / 2.0
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) * np.float32(1.0 / width)
    np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0, out=out)


def resolve_window(spec: str | Sequence[float]) -> Window:
    """Turn a preset name (``"brain"``) or a ``(center, width)`` pair into a checked window."""
    if isinstance(spec, str):
        key = spec.strip().lower().replace("-", "_").replace(" ", "_")
        if key not in PRESETS:
            raise InvalidInputError(
                f"unknown window preset {spec!r}; choose one of {', '.join(PRESETS)} "
                "or give (center, width) in HU"
            )
        return PRESETS[key]
    values = [float(v) for v in spec]
    if len(values) != 2:
        raise InvalidInputError(f"a window is (center, width) in HU; got {list(spec)!r}")
    center, width = values
    window(np.zeros(1, np.float32), center, width)  # validates
    return center, width


def resolve_windows(specs: Sequence[str | Sequence[float]]) -> list[Window]:
    """Resolve a list of window specs; at least one is required."""
    if len(specs) == 0:
        raise InvalidInputError("at least one window is required")
    return [resolve_window(s) for s in specs]


def square_box(box: Box, margin: float = HEAD_MARGIN) -> Box:
    """A square box centred on ``box`` (x0, y0, x1, y1; x1/y1 exclusive) with a margin.

    The result may extend past the image; the outside is padded with air when cropping.
    """
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    side = max(1, int(round(side * (1.0 + 2.0 * margin))))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    sx0 = int(round(cx - side / 2.0))
    sy0 = int(round(cy - side / 2.0))
    return sx0, sy0, sx0 + side, sy0 + side


def model_box(ct: CTImage) -> Box:
    """The square region of the input image (pixels, may extend past it) that the model sees."""
    return square_box(ct.head_box)


def crop_padded(image: np.ndarray, box: Box, fill: float) -> np.ndarray:
    """Crop ``box`` out of a 2-D ``image``, padding with ``fill`` where it extends past the image."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    inside = image[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y1 - h), max(0, x1 - w)
    if top == left == bottom == right == 0:
        return inside
    return cv2.copyMakeBorder(inside, top, bottom, left, right, cv2.BORDER_CONSTANT, value=fill)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def to_model_input(
    ct: CTImage,
    windows: Sequence[str | Sequence[float]] = DEFAULT_WINDOWS,
    size: int = 224,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> np.ndarray:
    """Build the model input for one slice — the one preprocessing path of training and inference.

    Args:
        ct: the loaded slice.
        windows: one (center, width) in HU or preset name per output channel.
        size: output side in pixels.
        mean, std: per-channel normalisation applied after windowing (length C, or None to
            leave values in [0, 1]).

    Returns:
        float32 ``[C, size, size]``, C = ``len(windows)``.
    """
    wins = resolve_windows(windows)
    box = model_box(ct)
    if ct.hu is not None:
        patch = _resize(crop_padded(ct.hu.astype(np.float32, copy=False), box, AIR_HU), size)
        channels = np.stack([window(patch, c, w) for c, w in wins])
    else:
        grey = _resize(crop_padded(ct.display, box, 0), size).astype(np.float32) * np.float32(1 / 255)
        channels = np.repeat(grey[None], len(wins), axis=0)
    return normalize(channels, mean, std)


def normalize(channels: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """Per-channel ``(x - mean) / std`` on a float32 ``[C, H, W]`` array (in place)."""
    if mean is None or std is None:
        return channels
    c = channels.shape[0]
    if len(mean) != c or len(std) != c:
        raise InvalidInputError(
            f"normalisation needs one mean and std per channel: {c} channels, "
            f"got {len(mean)} means and {len(std)} stds"
        )
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    channels -= m
    channels /= s
    return channels


def default_stats(n_channels: int) -> tuple[list[float], list[float]]:
    """ImageNet mean/std for 3 channels; their averages repeated for any other channel count."""
    if n_channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    m, s = float(np.mean(IMAGENET_MEAN)), float(np.mean(IMAGENET_STD))
    return [m] * n_channels, [s] * n_channels


def heatmap_to_image(heatmap: np.ndarray, box: Box, shape: tuple[int, int]) -> np.ndarray:
    """Map a heatmap on the model grid back onto the input image's pixel grid.

    Args:
        heatmap: float32 ``[h, w]`` on the model input grid.
        box: the :func:`model_box` the input was cropped with (image pixels, may extend past it).
        shape: the input image's (H, W).

    Returns:
        float32 ``[H, W]``; zero outside the box.
    """
    x0, y0, x1, y1 = box
    resized = cv2.resize(heatmap.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    out = np.zeros(shape, np.float32)
    h, w = shape
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0:iy1, ix0:ix1] = resized[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    return out


def display_window(ct: CTImage, center: float | None = None, width: float | None = None) -> np.ndarray:
    """A uint8 rendering of ``ct`` for people: a chosen window for DICOM, the image itself otherwise."""
    if ct.hu is None or center is None or width is None:
        return ct.display
    return (window(ct.hu, center, width) * 255.0 + 0.5).astype(np.uint8)
