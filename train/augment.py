"""Training augmentation: the hook :func:`brain_ct.preprocess.model_input` applies, and the same move
for the lesion mask.

The pipeline per training slice is::

    CTImage ──model_input(ct, settings, neighbors, augment=draw)──▶ normalised [C, S, S]
              inside: windows jittered (draw.windows) → framed, resized, windowed stack in [0, 1]
                      → draw(stack): one affine warp for every channel, brightness → normalize(mean, std)
    lesion mask ──mask_to_model_grid──▶ draw.mask: the same affine warp

so the one preprocessing path (:mod:`brain_ct.preprocess`) still does all the CT work (HU windows,
framing to the head, resize, normalisation); augmentation only moves pixels on the model grid. Doing the
geometry after framing matters: warping the full image first would be undone by the crop to the head box.

The defaults follow the seed project (Keras ``ImageDataGenerator``): rotation ±20°, zoom 0.2, shift 0.15,
brightness 0.8–1.2, horizontal flip. Pixels moved in from outside are air (0 in every window).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

Window = tuple[float, float]


@dataclass(frozen=True)
class AugmentParams:
    """One random draw of the augmentation (all in model-grid units)."""

    angle: float  # degrees, counter-clockwise
    scale: float  # > 1 zooms in
    tx: float  # shift in pixels, +x to the right
    ty: float  # shift in pixels, +y down
    flip: bool  # left-right mirror
    brightness: float  # intensity factor
    center_shift: float  # window jitter: center += center_shift × width
    width_factor: float  # window jitter: width ×= width_factor


IDENTITY = AugmentParams(0.0, 1.0, 0.0, 0.0, False, 1.0, 0.0, 1.0)


@dataclass(frozen=True)
class Augmenter:
    """Random geometric and intensity augmentation of a ``[C, S, S]`` input and its mask.

    Args:
        rotation: rotation range in degrees (uniform in ±rotation).
        zoom: scale uniform in [1 - zoom, 1 + zoom].
        shift: shift uniform in ±shift × S pixels, each axis.
        brightness: (low, high) multiplicative intensity factor on [0, 1] values, then clipped.
        horizontal_flip: mirror left-right with probability 0.5.
        window_jitter: DICOM input only; see :meth:`AugmentDraw.windows`.
    """

    rotation: float = 20.0
    zoom: float = 0.2
    shift: float = 0.15
    brightness: tuple[float, float] = (0.8, 1.2)
    horizontal_flip: bool = True
    window_jitter: float = 0.0

    def sample(self, rng: np.random.Generator, size: int) -> AugmentParams:
        """Draw one set of parameters for a ``size``-pixel input."""
        j = self.window_jitter
        return AugmentParams(
            angle=float(rng.uniform(-self.rotation, self.rotation)),
            scale=float(rng.uniform(1.0 - self.zoom, 1.0 + self.zoom)),
            tx=float(rng.uniform(-self.shift, self.shift) * size),
            ty=float(rng.uniform(-self.shift, self.shift) * size),
            flip=bool(self.horizontal_flip and rng.random() < 0.5),
            brightness=float(rng.uniform(*self.brightness)),
            center_shift=float(rng.uniform(-j, j)) if j > 0 else 0.0,
            width_factor=float(rng.uniform(1.0 - j, 1.0 + j)) if j > 0 else 1.0,
        )

    def draw(self, rng: np.random.Generator, size: int) -> AugmentDraw:
        """Draw one augmentation for a ``size``-pixel input (:meth:`sample` wrapped as the hook)."""
        return AugmentDraw(self.sample(rng, size))


@dataclass(frozen=True)
class AugmentDraw:
    """One drawn augmentation: the :class:`brain_ct.preprocess.Augmentation` hook of
    :func:`brain_ct.preprocess.model_input`, and :meth:`mask` for the lesion mask on the same grid."""

    params: AugmentParams

    def windows(self, windows: Sequence[Window]) -> list[Window]:
        """Jittered windows: center += center_shift × width, width ×= width_factor (HU)."""
        p = self.params
        return [(c + p.center_shift * w, w * p.width_factor) for c, w in windows]

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        """Warp every channel of float32 ``[C, S, S]`` in [0, 1] with one affine map, then scale brightness.

        Returns:
            A new float32 array of the same shape in [0, 1] (``stack`` itself for the identity).
        """
        if self.params == IDENTITY:
            return stack
        out = warp_channels(stack, affine_matrix(stack.shape[-1], self.params))
        if self.params.brightness != 1.0:
            out *= np.float32(self.params.brightness)
            np.clip(out, 0.0, 1.0, out=out)
        return out

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """Warp a float32 ``[S, S]`` mask in [0, 1] with the same affine map as the channels (no brightness)."""
        if self.params == IDENTITY:
            return mask
        size = mask.shape[-1]
        return cv2.warpAffine(
            mask.astype(np.float32, copy=False),
            affine_matrix(size, self.params),
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0.0,
        )


def affine_matrix(size: int, params: AugmentParams) -> np.ndarray:
    """The 2×3 forward map (input pixel → output pixel) for :func:`cv2.warpAffine`.

    Flip first (about the vertical midline), then rotate and zoom about the centre, then shift.
    """
    c = (size - 1) / 2.0
    rot = cv2.getRotationMatrix2D((c, c), params.angle, params.scale)  # 2×3
    full = np.vstack([rot, [0.0, 0.0, 1.0]])
    if params.flip:
        flip = np.array([[-1.0, 0.0, 2 * c], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        full = full @ flip
    full[0, 2] += params.tx
    full[1, 2] += params.ty
    return full[:2].astype(np.float64)


def warp_channels(channels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply one affine ``matrix`` to every channel of float32 ``[C, S, S]`` (bilinear, air outside)."""
    c, h, w = channels.shape
    out = np.empty_like(channels, dtype=np.float32)
    # OpenCV warps up to 4 interleaved channels at once; do channels in groups of up to 4.
    for start in range(0, c, 4):
        group = np.ascontiguousarray(np.moveaxis(channels[start : start + 4], 0, -1), dtype=np.float32)
        warped = cv2.warpAffine(
            group, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0
        )
        if warped.ndim == 2:
            warped = warped[..., None]
        out[start : start + 4] = np.moveaxis(warped, -1, 0)
    return out
