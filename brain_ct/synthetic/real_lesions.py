"""Hemorrhages painted into REAL head-CT slices: real anatomy as the background of a positive example.

Phantoms (:mod:`brain_ct.synthetic.core`) know their anatomy; a real slice does not, so the intracranial
space is read from the HU themselves (:func:`intracranial_space`): bone (> 300 HU) closed over sutures
and foramina encloses the cranial cavity; inside it, smoothed HU 20–45 are parenchyma and −5–15 HU are
CSF; CSF regions near the centre of the cavity are ventricles, the rest (sulci, fissures, cisterns) is the
subarachnoid space. :func:`paint_real_lesion` then paints one subtype where it belongs:

* epidural — a lens against the inner table (an ellipse centred on the table, cut by the cavity);
* subdural — a crescent along the inner table over 70–160° of arc, thickest in its middle;
* intraparenchymal — an irregular blob in parenchyma with a hypodense oedema rim;
* intraventricular — the dependent (posterior, patient supine) part of a ventricle below a fluid level,
  sometimes a whole-ventricle cast;
* subarachnoid — CSF of the sulci/cisterns within a few cm of a seed point.

Blood is acute (50–90 HU, a share of subtle 50–62 HU), with a slight texture and noise matched to the
slice's own noise; edges blend with partial volume (the blurred mask) just outside the mask, so the mask
itself is all blood. Large lesions (≥ 4 cm²) may push the surrounding brain away (mass effect, which
shifts the midline when the lesion is large and lateral); the skull and everything outside the cavity
stay untouched. A slice without room for a subtype (vertex, skull base with little brain, no ventricles
in the plane) gives None for it (:func:`lesion_room` lists the subtypes that fit).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.synthetic.anatomy import smooth_noise
from brain_ct.synthetic.lesions import SUBTYPES

#: Acute blood density range (HU) painted into the mask.
BLOOD_HU = (50.0, 90.0)
#: Bone threshold (HU): the inner table and everything denser.
BONE_HU = 300.0
#: Lesions at least this large (mm²) may get mass effect.
MASS_EFFECT_MM2 = 400.0

_MIN_LESION_MM2 = 12.0
#: Closing radii (mm) tried in turn to seal the inner table.
_CLOSING_MM = (3.0, 5.0, 8.0, 12.0)


@dataclass
class IntracranialSpace:
    """Where things are in a real slice, found from its HU (all masks bool ``[H, W]``).

    Attributes:
        cavity: inside the inner table: parenchyma, CSF and anything of soft-tissue density there.
        brain: parenchyma (smoothed 20–45 HU) in the cavity.
        csf: CSF density (smoothed −5–15 HU) in the cavity.
        ventricles: CSF regions near the centre of the cavity, away from the inner table.
        subarachnoid: the other CSF: sulci, fissures and cisterns.
        table: cavity pixels next to bone (the inner table).
        depth_mm: float32 distance of each cavity pixel to the cavity's edge, mm (0 outside).
        centroid: (row, col) of the cavity.
        pixel_mm: pixel spacing, mm.
    """

    cavity: np.ndarray
    brain: np.ndarray
    csf: np.ndarray
    ventricles: np.ndarray
    subarachnoid: np.ndarray
    table: np.ndarray
    depth_mm: np.ndarray
    centroid: tuple[float, float]
    pixel_mm: float

    @property
    def area_mm2(self) -> float:
        return float(self.cavity.sum()) * self.pixel_mm**2


def _check_input(hu: np.ndarray, pixel_mm: float) -> np.ndarray:
    arr = np.asarray(hu)
    if arr.ndim != 2 or min(arr.shape) < 32:
        raise InvalidInputError(
            f"a real slice must be a 2-D HU array of at least 32×32 pixels; got shape {arr.shape}"
        )
    if not np.isfinite(pixel_mm) or not 0.05 <= float(pixel_mm) <= 5.0:
        raise InvalidInputError(f"pixel spacing must be 0.05–5 mm; got {pixel_mm!r}")
    return arr.astype(np.float32, copy=False)


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, int(round(radius_px)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _components(mask: np.ndarray, min_px: int) -> list[np.ndarray]:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [labels == i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_px]


def _enclosed(bone: np.ndarray, radius_px: float) -> np.ndarray:
    """Pixels that bone (closed with a disc of ``radius_px``) walls off from the image border."""
    closed = cv2.morphologyEx(bone, cv2.MORPH_CLOSE, _disk(radius_px))
    outside = np.pad(1 - closed, 1, constant_values=1).astype(np.uint8)
    flood = np.zeros((outside.shape[0] + 2, outside.shape[1] + 2), np.uint8)
    cv2.floodFill(outside, flood, (0, 0), 2)
    return (outside[1:-1, 1:-1] == 1) & (closed == 0)


def intracranial_space(hu: np.ndarray, pixel_mm: float) -> IntracranialSpace:
    """Find the cranial cavity, parenchyma, CSF, ventricles and subarachnoid space from the HU.

    Args:
        hu: float32 ``[H, W]`` Hounsfield units of one axial slice (air ≈ −1000).
        pixel_mm: pixel spacing in mm (square pixels).

    Raises:
        InvalidInputError: not a 2-D array of at least 32×32, or an implausible pixel spacing.
    """
    hu = _check_input(hu, pixel_mm)
    px = float(pixel_mm)
    smooth = cv2.GaussianBlur(hu, (0, 0), sigmaX=max(0.5, 0.8 / px))
    bone = (hu > BONE_HU).astype(np.uint8)
    # Close sutures, foramina and thin spots so the inner table is one closed wall: the smallest closing
    # that encloses a brain-sized region (the posterior fossa needs more than the calvarium).
    for radius_mm in _CLOSING_MM:
        enclosed = _enclosed(bone, radius_mm / px)
        if float((enclosed & (smooth > 15) & (smooth < 50)).sum()) * px * px >= 1000.0:
            break
    soft = enclosed & (smooth > -20) & (smooth < 100) & (hu < BONE_HU)
    # One pixel off the bone: partial volume of the inner table is not cavity.
    soft &= ~cv2.dilate(bone, np.ones((3, 3), np.uint8)).astype(bool)
    # Keep brain-like regions: big enough and of parenchymal density on the whole (an eye's vitreous,
    # a sinus' mucosa or the nasal cavity are enclosed by bone too, but are neither).
    cavity = np.zeros_like(soft)
    for comp in _components(soft, int(600.0 / px**2)):
        if 15.0 <= float(np.median(smooth[comp])) <= 50.0:
            cavity |= comp
    cavity = cv2.morphologyEx(cavity.astype(np.uint8), cv2.MORPH_OPEN, _disk(1.0 / px)).astype(bool)
    depth_mm = cv2.distanceTransform(cavity.astype(np.uint8), cv2.DIST_L2, 5).astype(np.float32) * px
    brain = cavity & (smooth >= 20) & (smooth <= 45)
    csf = cavity & (smooth >= -5) & (smooth < 15)
    if cavity.any():
        rows, cols = np.nonzero(cavity)
        centroid = (float(rows.mean()), float(cols.mean()))
        extent = max(float(np.ptp(rows)), float(np.ptp(cols)), 1.0)
    else:
        centroid, extent = (hu.shape[0] / 2.0, hu.shape[1] / 2.0), 1.0
    ventricles = np.zeros_like(csf)
    for comp in _components(csf, int(25.0 / px**2)):
        r, c = np.nonzero(comp)
        near_centre = np.hypot(r.mean() - centroid[0], c.mean() - centroid[1]) < 0.3 * extent
        if near_centre and float(np.median(depth_mm[comp])) > 20.0:
            ventricles |= comp
    table = cavity & cv2.dilate(bone, _disk(1.5 / px)).astype(bool)
    # Sulci over the convexity are thinner than the smoothing: they show as darker than the brain
    # around them rather than as CSF density; within 25 mm of the table they count as sulci too.
    local = cv2.GaussianBlur(np.where(cavity, smooth, 0), (0, 0), sigmaX=5.0 / px)
    weight = cv2.GaussianBlur(cavity.astype(np.float32), (0, 0), sigmaX=5.0 / px)
    fine = cv2.GaussianBlur(hu, (0, 0), sigmaX=max(0.4, 0.5 / px))
    sulci = cavity & (depth_mm < 25.0) & (fine < local / np.maximum(weight, 1e-3) - 6.0) & (fine < 22.0)
    return IntracranialSpace(
        cavity=cavity,
        brain=brain,
        csf=csf,
        ventricles=ventricles,
        subarachnoid=(csf | sulci) & ~ventricles,
        table=table,
        depth_mm=depth_mm,
        centroid=centroid,
        pixel_mm=px,
    )


def lesion_room(space: IntracranialSpace) -> tuple[str, ...]:
    """The subtypes that fit this slice (in :data:`SUBTYPES` order); :func:`paint_real_lesion` gives
    None for the others."""
    px2 = space.pixel_mm**2
    room = []
    big = space.area_mm2 >= 2500.0  # ≥ 25 cm² of cavity: a supratentorial or posterior-fossa plane
    for subtype in SUBTYPES:
        if subtype == "intraparenchymal":
            ok = float((space.brain & (space.depth_mm > 8.0)).sum()) * px2 >= 300.0
        elif subtype in ("subdural", "epidural"):
            ok = big and float(space.table.sum()) * space.pixel_mm >= 60.0
        elif subtype == "intraventricular":
            ok = float(space.ventricles.sum()) * px2 >= 25.0
        else:
            ok = float(space.subarachnoid.sum()) * px2 >= 60.0
        if ok:
            room.append(subtype)
    return tuple(room)


def _pick(rng: np.random.Generator, mask: np.ndarray) -> tuple[int, int] | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    return divmod(int(idx[rng.integers(idx.size)]), mask.shape[1])


def _ellipse(
    shape: tuple[int, int], centre: tuple[float, float], a: float, b: float, angle: float
) -> np.ndarray:
    """Normalised elliptic radius (1 on the boundary) around ``centre`` (row, col); a, b in pixels;
    ``a`` along ``angle`` (radians, from the +col axis)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    dy, dx = yy - np.float32(centre[0]), xx - np.float32(centre[1])
    ca, sa = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = dx * ca + dy * sa
    v = -dx * sa + dy * ca
    return np.sqrt((u / np.float32(a)) ** 2 + (v / np.float32(b)) ** 2)


def _epidural(space: IntracranialSpace, rng: np.random.Generator) -> np.ndarray | None:
    px = space.pixel_mm
    at = _pick(rng, space.table)
    if at is None:
        return None
    cy, cx = space.centroid
    normal = np.arctan2(cy - at[0], cx - at[1])  # inward, towards the cavity's centre
    a = rng.uniform(12.0, 35.0) / px  # along the table
    b = rng.uniform(4.0, 14.0) / px  # into the cavity
    return (_ellipse(space.cavity.shape, at, a, b, normal + np.pi / 2) <= 1.0) & space.cavity


def _subdural(space: IntracranialSpace, rng: np.random.Generator) -> np.ndarray | None:
    at = _pick(rng, space.table)
    if at is None:
        return None
    cy, cx = space.centroid
    h, w = space.cavity.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phi = np.arctan2(yy - cy, xx - cx)
    phi0 = np.arctan2(at[0] - cy, at[1] - cx)
    half = np.deg2rad(rng.uniform(35.0, 80.0))
    d = np.abs((phi - phi0 + np.pi) % (2 * np.pi) - np.pi)
    profile = np.clip(np.cos(0.5 * np.pi * d / half), 0.0, 1.0) ** 0.6
    thick = rng.uniform(3.0, 14.0)
    wobble = 1.0 + 0.15 * smooth_noise(rng, (h, w), 20.0 / space.pixel_mm)
    return space.cavity & (space.depth_mm < thick * profile * wobble) & (d < half)


def _intraparenchymal(space: IntracranialSpace, rng: np.random.Generator) -> np.ndarray | None:
    px = space.pixel_mm
    r = float(np.exp(rng.uniform(np.log(4.0), np.log(20.0))))
    at = _pick(rng, space.brain & (space.depth_mm > r + 3.0))
    if at is None:
        r = 4.0
        at = _pick(rng, space.brain & (space.depth_mm > 8.0))
        if at is None:
            return None
    a, b = r * rng.uniform(0.7, 1.3) / px, r * rng.uniform(0.6, 1.1) / px
    rho = _ellipse(space.cavity.shape, at, a, b, rng.uniform(0, np.pi))
    rough = 0.18 * smooth_noise(rng, space.cavity.shape, max(2.0, 0.5 * r / px))
    return (rho + rough <= 1.0) & space.cavity


def _intraventricular(space: IntracranialSpace, rng: np.random.Generator) -> np.ndarray | None:
    comps = _components(space.ventricles, 1)
    if not comps:
        return None
    picked = [c for c in comps if rng.random() < 0.6] or [comps[int(rng.integers(len(comps)))]]
    mask = np.zeros_like(space.ventricles)
    for comp in picked:
        if rng.random() < 0.2:  # a cast: the whole ventricle filled
            mask |= comp
            continue
        rows = np.nonzero(comp)[0]
        # Patient supine: blood settles posteriorly, towards larger rows (image bottom).
        level = np.quantile(rows, 1.0 - rng.uniform(0.25, 0.7))
        mask |= comp & (np.arange(comp.shape[0])[:, None] >= level)
    return mask


def _subarachnoid(space: IntracranialSpace, rng: np.random.Generator) -> np.ndarray | None:
    at = _pick(rng, space.subarachnoid)
    if at is None:
        return None
    radius = rng.uniform(15.0, 45.0) / space.pixel_mm
    near = _ellipse(space.cavity.shape, at, radius, radius * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
    # Blood fills the CSF spaces it reaches and coats them: grow by a pixel within the cavity.
    mask = space.subarachnoid & (near <= 1.0)
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & space.cavity


_PAINTERS = {
    "epidural": _epidural,
    "subdural": _subdural,
    "intraparenchymal": _intraparenchymal,
    "intraventricular": _intraventricular,
    "subarachnoid": _subarachnoid,
}


def slice_noise_hu(hu: np.ndarray, region: np.ndarray) -> float:
    """Robust noise SD (HU) of ``hu`` in ``region``: the MAD of its fine detail (hu − blurred hu)."""
    if region.sum() < 50:
        return 3.0
    detail = hu - cv2.GaussianBlur(hu, (0, 0), sigmaX=1.0)
    vals = detail[region]
    return float(1.4826 * np.median(np.abs(vals - np.median(vals))))


def _matched_noise(rng: np.random.Generator, shape: tuple[int, int], target_detail_sd: float) -> np.ndarray:
    """Slightly correlated noise whose fine detail has the slice's SD (so blood is as grainy as brain)."""
    n = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigmaX=0.6)
    detail = n - cv2.GaussianBlur(n, (0, 0), sigmaX=1.0)
    return n * np.float32(target_detail_sd / max(float(detail.std()), 1e-6))


def _mass_effect(
    hu: np.ndarray, mask: np.ndarray, space: IntracranialSpace, rng: np.random.Generator
) -> np.ndarray:
    """Push the cavity's contents away from the lesion (midline shift for large lateral lesions).

    The displacement fades to zero within 5 mm of the cavity's edge, so skull and scalp do not move.
    """
    px = space.pixel_mm
    area = float(mask.sum()) * px**2
    amp = float(np.clip(np.sqrt(area) / 8.0, 1.0, 6.0)) * rng.uniform(0.6, 1.0) / px
    sigma = rng.uniform(25.0, 45.0) / px
    rows, cols = np.nonzero(mask)
    cy, cx = float(rows.mean()), float(cols.mean())
    h, w = hu.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    r = np.sqrt(dx * dx + dy * dy) + np.float32(1e-3)
    fade = np.clip(space.depth_mm / 5.0, 0.0, 1.0).astype(np.float32)
    mag = np.float32(amp) * np.exp(-0.5 * (r / np.float32(sigma)) ** 2) * fade
    map_x = xx - mag * dx / r
    map_y = yy - mag * dy / r
    moved = cv2.remap(hu, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.where(fade > 0, moved, hu).astype(np.float32)


def paint_real_lesion(
    hu: np.ndarray,
    pixel_mm: float,
    subtype: str,
    rng: np.random.Generator,
    *,
    mass_effect: bool | None = None,
    space: IntracranialSpace | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Paint one acute hemorrhage of ``subtype`` into a real slice.

    Args:
        hu: float32 ``[H, W]`` HU of a real axial slice (not modified).
        pixel_mm: pixel spacing, mm.
        subtype: one of :data:`~brain_ct.synthetic.lesions.SUBTYPES`.
        rng: the randomness (site, size, density, texture, noise); same state → same result.
        mass_effect: push the brain away from a large lesion: True always, False never, None (default)
            with probability 0.6 when the lesion covers ≥ :data:`MASS_EFFECT_MM2`.
        space: :func:`intracranial_space` of ``hu`` when already known (saves its cost).

    Returns:
        ``(hu, mask)``: new float32 HU and the bool lesion mask (inside the cavity; every mask pixel is
        blood, 50–90 HU plus the slice's noise; partial volume blends just outside it), or None when the
        slice has no room for ``subtype`` (see :func:`lesion_room`).

    Raises:
        InvalidInputError: unknown subtype, or not a 2-D HU array with a plausible pixel spacing.
    """
    if subtype not in _PAINTERS:
        raise InvalidInputError(
            f"unknown hemorrhage subtype {subtype!r}; choose one of {', '.join(SUBTYPES)}"
        )
    hu = _check_input(hu, pixel_mm)
    space = space if space is not None else intracranial_space(hu, pixel_mm)
    if subtype not in lesion_room(space):
        return None
    px = space.pixel_mm
    min_px = _MIN_LESION_MM2 / px**2
    mask = None
    for _ in range(8):  # a draw can miss (a sliver of cavity); redraw a few times
        mask = _PAINTERS[subtype](space, rng)
        if mask is not None and mask.sum() >= min_px:
            break
        mask = None
    if mask is None:
        return None
    out = hu.copy()
    area = float(mask.sum()) * px**2
    pushes = mass_effect or (mass_effect is None and area >= MASS_EFFECT_MM2 and rng.random() < 0.6)
    if pushes and subtype != "intraventricular":  # blood in a ventricle does not push it outward
        out = _mass_effect(out, mask, space, rng)
    if subtype == "intraparenchymal":
        # Oedema: a hypodense rim a few mm wide around the clot (fading outward), inside the cavity.
        rim_px = rng.uniform(2.0, 6.0) / px
        ring = cv2.dilate(mask.astype(np.uint8), _disk(rim_px)).astype(np.float32)
        ring = cv2.GaussianBlur(ring, (0, 0), sigmaX=max(0.5, rim_px / 2)) * (space.cavity & ~mask)
        out -= np.float32(rng.uniform(4.0, 10.0)) * ring
    # One bleed in five is subtle (50–62 HU, barely above grey matter), the rest clearly dense.
    density = rng.uniform(BLOOD_HU[0], 62.0) if rng.random() < 0.2 else rng.uniform(58.0, 85.0)
    texture = np.float32(2.5) * smooth_noise(rng, hu.shape, max(1.5, 3.0 / px))
    noise = _matched_noise(rng, hu.shape, slice_noise_hu(hu, space.brain))
    blood = np.clip(np.float32(density) + texture + noise, BLOOD_HU[0] - 8.0, BLOOD_HU[1] + 8.0)
    # Partial volume: the blurred mask blends blood into the neighbours; the mask itself is all blood.
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=max(0.4, rng.uniform(0.4, 1.0) / px))
    alpha = np.maximum(soft * (out < BONE_HU / 2), mask.astype(np.float32))
    out = out + alpha * (blood - out)
    return out.astype(np.float32), mask
