"""One real head into many: deformations and scanner effects for real HU slices, and the adapter that
lets a real slice go through the phantoms' writers (:func:`~brain_ct.synthetic.to_dicom`,
:func:`~brain_ct.synthetic.render_internet`).

A variant (:func:`real_variant`) is: an optional painted lesion (:mod:`brain_ct.synthetic.real_lesions`)
→ :func:`deform` (affine: in-plane tilt, head size, head shape (anisotropic scale, shear), position; plus
a smooth elastic field) → :func:`rescan` (:func:`brain_ct.synthetic.scanner.apply_scanner` with a random
scanner: reconstruction kernel soft/sharp, dose noise, beam-hardening streaks between dense bones, rings,
offset and cupping). The lesion mask follows the same geometry. The 8-bit window, size, decorations and
JPEG quality of an internet figure are the renderer's own random choices.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from brain_ct.synthetic.anatomy import smooth_noise
from brain_ct.synthetic.core import Phantom, mask_bbox
from brain_ct.synthetic.real_lesions import IntracranialSpace, paint_real_lesion
from brain_ct.synthetic.scanner import Scanner, apply_scanner, sample_scanner

#: The ``level`` of phantoms made from real slices (they have no generator level).
REAL_LEVEL = "real"


@dataclass(frozen=True)
class Deformation:
    """One random geometry draw (degrees, scale factors, fractions of the side, mm)."""

    angle: float  # in-plane tilt, degrees
    scale: float  # head size
    aspect: float  # head shape: x scale / y scale
    shear: float
    tx: float  # shift, fraction of the width
    ty: float
    elastic_mm: float  # peak elastic displacement
    elastic_cell_mm: float  # size of the elastic field's features


def sample_deformation(rng: np.random.Generator) -> Deformation:
    """Draw a deformation: tilt ±15°, size 0.85–1.15, shape 0.9–1.1, shear ±0.06, shift ±6 %,
    elastic 0–4 mm over 25–60 mm features."""
    return Deformation(
        angle=float(rng.uniform(-15.0, 15.0)),
        scale=float(rng.uniform(0.85, 1.15)),
        aspect=float(rng.uniform(0.9, 1.1)),
        shear=float(rng.uniform(-0.06, 0.06)),
        tx=float(rng.uniform(-0.06, 0.06)),
        ty=float(rng.uniform(-0.06, 0.06)),
        elastic_mm=float(rng.uniform(0.0, 4.0)),
        elastic_cell_mm=float(rng.uniform(25.0, 60.0)),
    )


def deform(
    hu: np.ndarray,
    mask: np.ndarray | None,
    pixel_mm: float,
    params: Deformation,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Warp a slice (and its lesion mask) by an affine map plus a smooth elastic field.

    Args:
        hu: float32 ``[H, W]`` HU.
        mask: bool ``[H, W]`` lesion mask or None.
        pixel_mm: pixel spacing, mm (the elastic field is defined in mm).
        params: from :func:`sample_deformation`.
        rng: draws the elastic field.

    Returns:
        ``(hu, mask)``: float32 HU (air, −1000 HU, moved in from outside) and bool mask (or None).
    """
    h, w = hu.shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    rot = np.deg2rad(params.angle)
    sx, sy = params.scale * np.sqrt(params.aspect), params.scale / np.sqrt(params.aspect)
    forward = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]]) @ np.array(
        [[sx, params.shear * sx], [0.0, sy]]
    )
    inverse = np.linalg.inv(forward)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ox = xx - np.float32(cx + params.tx * w)
    oy = yy - np.float32(cy + params.ty * h)
    map_x = np.float32(inverse[0, 0]) * ox + np.float32(inverse[0, 1]) * oy + np.float32(cx)
    map_y = np.float32(inverse[1, 0]) * ox + np.float32(inverse[1, 1]) * oy + np.float32(cy)
    if params.elastic_mm > 0:
        cell = max(2.0, params.elastic_cell_mm / pixel_mm)
        amp = np.float32(params.elastic_mm / pixel_mm)
        map_x += amp * smooth_noise(rng, (h, w), cell)
        map_y += amp * smooth_noise(rng, (h, w), cell)
    out = cv2.remap(hu, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1000.0)
    if mask is not None:
        moved = cv2.remap(mask.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderValue=0.0)
        mask = moved >= 0.5
    return out.astype(np.float32), mask


def rescan(
    hu: np.ndarray, pixel_mm: float, rng: np.random.Generator, scanner: Scanner | None = None
) -> tuple[np.ndarray, Scanner]:
    """Re-image a real slice with a random scanner: kernel (blur or sharpening), dose noise on top of the
    slice's own, beam-hardening streaks between dense bones, rings, offset and cupping.

    Returns:
        ``(hu, scanner)``: float32 HU and the scanner used (its tags go into the DICOM).
    """
    scanner = scanner if scanner is not None else sample_scanner(rng)
    head = hu > -300
    cavity = head & (hu > -20) & (hu < 100)
    out, _ = apply_scanner(hu, head_mask=head, cavity=cavity, pixel_mm=pixel_mm, scanner=scanner, rng=rng)
    return out.astype(np.float32), scanner


def as_phantom(
    hu: np.ndarray,
    mask: np.ndarray | None,
    pixel_mm: float,
    *,
    seed: int,
    subtype: str | None = None,
    scanner: Scanner | None = None,
    z: float = 0.0,
    slice_thickness: float = 5.0,
) -> Phantom:
    """Wrap a real slice as a :class:`~brain_ct.synthetic.Phantom` for the phantom writers.

    ``seed`` (≥ 0) only names the written DICOM's fake UIDs; ``level`` is :data:`REAL_LEVEL`.
    """
    mask = np.zeros(hu.shape, bool) if mask is None else mask.astype(bool)
    label = int(mask.any())
    return Phantom(
        hu=hu.astype(np.float32, copy=False),
        mask=mask,
        label=label,
        subtype=subtype if label else None,
        level=REAL_LEVEL,
        bbox=mask_bbox(mask),
        seed=int(seed),
        z=float(z),
        pixel_spacing=float(pixel_mm),
        slice_thickness=float(slice_thickness),
        scanner=scanner,
    )


def real_variant(
    hu: np.ndarray,
    pixel_mm: float,
    rng: np.random.Generator,
    *,
    seed: int,
    subtype: str | None = None,
    augment: bool = True,
    space: IntracranialSpace | None = None,
    z: float = 0.0,
    slice_thickness: float = 5.0,
) -> Phantom | None:
    """One variant of a real slice: lesion (if ``subtype``), then deformation and re-scan (if ``augment``).

    Args:
        hu: float32 ``[H, W]`` HU of a real normal slice.
        pixel_mm: pixel spacing, mm.
        rng: all randomness of the variant.
        seed: ≥ 0, names the variant's DICOM UIDs.
        subtype: paint this hemorrhage subtype, or None for a normal variant.
        augment: deform and re-scan; False keeps the slice's own geometry and noise.
        space: :func:`~brain_ct.synthetic.real_lesions.intracranial_space` of ``hu`` if known.

    Returns:
        The variant as a :class:`~brain_ct.synthetic.Phantom`, or None when ``subtype`` has no room here.
    """
    mask = None
    if subtype is not None:
        painted = paint_real_lesion(hu, pixel_mm, subtype, rng, space=space)
        if painted is None:
            return None
        hu, mask = painted
    scanner = None
    if augment:
        hu, mask = deform(hu, mask, pixel_mm, sample_deformation(rng), rng)
        hu, scanner = rescan(hu, pixel_mm, rng)
        if mask is not None and not mask.any():  # warped out of the picture: nothing left to find
            return None
    return as_phantom(
        hu, mask, pixel_mm, seed=seed, subtype=subtype, scanner=scanner, z=z, slice_thickness=slice_thickness
    )
