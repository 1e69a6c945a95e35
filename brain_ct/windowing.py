"""CT windows in Hounsfield units, the framing box, and maps from the model grid back to the image.

A window maps Hounsfield units (HU) linearly to [0, 1]: ``center - width/2`` → 0 and
``center + width/2`` → 1, clipped outside. Rescale (stored value × (0028,1053) *Rescale Slope*
+ (0028,1052) *Rescale Intercept*) happens in :mod:`brain_ct.io` before any windowing.

:func:`model_box` is the square around ``ct.head_box`` that the model sees; the one preprocessing path
(:mod:`brain_ct.preprocess`) crops it, and :func:`heatmap_to_image` maps a map on the model grid back
onto the input image's own pixel grid through the same box.
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
