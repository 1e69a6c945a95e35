"""Seeded generation of single slices and whole series (see :mod:`brain_ct.synthetic`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.synthetic.anatomy import (
    LEVEL_RANGES,
    LEVELS,
    STANDARD_HEIGHT,
    Head,
    Pose,
    Slice,
    level_of,
    render_anatomy,
    sample_head,
    sample_pose,
    smooth_noise,
)
from brain_ct.synthetic.lesions import SUBTYPE_LEVELS, SUBTYPES, Lesion, paint_lesion, sample_lesion
from brain_ct.synthetic.scanner import Scanner, add_fixtures, apply_scanner, sample_scanner

MIN_SIZE, MAX_SIZE = 32, 2048


@dataclass
class Phantom:
    """One synthetic axial head-CT slice with its ground truth.

    Attributes:
        hu: float32 ``[H, W]`` Hounsfield units (air −1000, CSF 0–15, white matter ~22–31, grey
            matter ~30–44, acute blood 46–95, calcification 70–700, bone 350–2200).
        mask: bool ``[H, W]`` hemorrhage pixels (all False for a normal slice).
        label: 0 normal, 1 hemorrhage.
        subtype: one of :data:`SUBTYPES`, or None for a normal slice.
        level: one of :data:`LEVELS`.
        bbox: ``[x0, y0, x1, y1]`` pixel box of ``mask`` (x1/y1 exclusive), None when empty.
        seed: the seed it was generated from (the series seed for series slices).
        z: slice position along the head axis in mm (foramen magnum = 0).
        mimic_mask: bool ``[H, W]`` dense structures inside the cranial cavity that are NOT blood
            (calcifications, bone and its partial volume, falx, tentorium, venous sinuses).
        brain_mask: bool ``[H, W]`` the cranial cavity (inside the inner table, above the skull base).
        pixel_spacing: mm per pixel (square pixels).
        slice_thickness: mm.
        age: 0 (child) … 1 (elderly); drives atrophy, ventricle size and calcifications.
        scanner: scanner/protocol parameters (used for DICOM tags).
        series_index: position in a series (0 = most inferior), or None for a single slice.
    """

    hu: np.ndarray
    mask: np.ndarray
    label: int
    subtype: str | None
    level: str
    bbox: list[int] | None
    seed: int
    z: float
    mimic_mask: np.ndarray | None = None
    brain_mask: np.ndarray | None = None
    pixel_spacing: float = 1.0
    slice_thickness: float = 5.0
    age: float = 0.5
    scanner: Scanner | None = field(default=None, repr=False)
    series_index: int | None = None


def mask_bbox(mask: np.ndarray) -> list[int] | None:
    """``[x0, y0, x1, y1]`` (x1/y1 exclusive) of the True pixels, or None when there are none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def _positive_level_weights() -> np.ndarray:
    """Level distribution of hemorrhage slices (subtypes uniform); normals copy it so the
    level itself carries no information about the label."""
    w = np.zeros(len(LEVELS))
    for s in SUBTYPES:
        allowed = SUBTYPE_LEVELS[s]
        for lv in allowed:
            w[LEVELS.index(lv)] += 1.0 / len(allowed)
    return w / w.sum()


LEVEL_WEIGHTS = _positive_level_weights()


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer; got {seed!r}")
    return int(seed)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInputError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels; got {size!r}")
    return int(size)


def _check_choice(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    if value is not None and value not in allowed:
        raise InvalidInputError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
    return value


def _min_lesion_px(size: int) -> int:
    return max(6, int(round(0.00035 * size * size)))


def _finish(
    sl: Slice,
    mask: np.ndarray,
    head: Head,
    pose: Pose,
    scanner: Scanner,
    rng: np.random.Generator,
    *,
    seed: int,
    z: float,
    subtype: str | None,
    thickness: float,
    series_index: int | None = None,
) -> Phantom:
    hu = sl.hu
    add_fixtures(hu, sl.skin, sl.ys, scanner, sl.pixel_mm, rng)
    # Bone is not a flat plateau: trabecular texture (cancellous bone darker, cortex brighter)...
    bone = hu > 300
    if bone.any():
        grain = smooth_noise(rng, hu.shape, max(1.5, 1.2 / sl.pixel_mm))
        hu[bone] *= np.float32(1.0) + np.float32(rng.uniform(0.1, 0.3)) * grain[bone]
    # ...and a slice several mm thick averages bone with the tissue above and below it: the
    # edges of the skull base, orbital roofs and calvarium show intermediate 60–300 HU rims,
    # the classic false positives for blood (so they belong in the normal slices too).
    pv_sigma = (0.2 + 0.12 * thickness) * rng.uniform(0.5, 1.5) / sl.pixel_mm
    if pv_sigma > 0.3:
        excess = np.maximum(hu - np.float32(150.0), 0)
        hu += cv2.GaussianBlur(excess, (0, 0), sigmaX=float(pv_sigma)) - excess
    # Bone blurred into the adjacent brain by the reconstruction kernel is not blood either.
    k = 2 * max(1, int(np.ceil(2.5 * scanner.psf_mm / sl.pixel_mm + 2.5 * pv_sigma))) + 1
    bone_spill = cv2.dilate((hu > 250).astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    hu, artefact = apply_scanner(
        hu,
        head_mask=sl.skin,
        cavity=sl.cavity,
        pixel_mm=sl.pixel_mm,
        scanner=scanner,
        rng=rng,
        rim_mm=2 * (head.inner_offset + 3.0),
    )
    label = int(mask.any())
    return Phantom(
        hu=hu.astype(np.float32, copy=False),
        mask=mask,
        label=label,
        subtype=subtype if label else None,
        level=level_of(z, head.height),
        bbox=mask_bbox(mask),
        seed=seed,
        z=float(z),
        mimic_mask=(sl.mimic | (sl.cavity & (bone_spill | (artefact > 8.0)))) & ~mask,
        brain_mask=sl.cavity,
        pixel_spacing=float(sl.pixel_mm),
        slice_thickness=float(thickness),
        age=float(head.age),
        scanner=scanner,
        series_index=series_index,
    )


def generate_slice(
    seed: int,
    size: int = 256,
    *,
    hemorrhage: bool | None = None,
    subtype: str | None = None,
    level: str | None = None,
) -> Phantom:
    """Generate one synthetic axial head-CT slice in HU with its hemorrhage mask.

    Fully deterministic per ``seed`` (``np.random.default_rng(seed)``, no global state).

    Args:
        seed: non-negative integer.
        size: output side in pixels (square), 32–2048.
        hemorrhage: True for a bleed, False for a normal slice, None to draw it (50/50; True
            when ``subtype`` is given).
        subtype: one of :data:`SUBTYPES` (implies a hemorrhage), or None to draw one.
        level: one of :data:`LEVELS`, or None to draw one. Normal slices draw levels with the
            same frequencies as hemorrhage slices, so the level says nothing about the label.

    Returns:
        A :class:`Phantom`; its ``mask`` is non-empty exactly when ``label == 1``.

    Raises:
        InvalidInputError: bad seed/size/subtype/level, ``hemorrhage=False`` with a subtype, a
            subtype that cannot occur at the requested level (intraventricular at the vertex), or
            a requested subtype that does not fit the slice (a drawn one gives way to another).
    """
    seed = _check_seed(seed)
    size = _check_size(size)
    _check_choice(subtype, SUBTYPES, "subtype")
    _check_choice(level, LEVELS, "level")
    _check_no_contradiction(hemorrhage, subtype)
    if subtype is not None and level is not None and level not in SUBTYPE_LEVELS[subtype]:
        raise InvalidInputError(
            f"a {subtype} hemorrhage cannot be placed at level {level!r}; "
            f"choose one of {', '.join(SUBTYPE_LEVELS[subtype])}"
        )
    rng = np.random.default_rng(seed)
    requested_subtype = subtype
    options = [s for s in SUBTYPES if level is None or level in SUBTYPE_LEVELS[s]]
    hemorrhage, subtype = _draw_bleed(rng, hemorrhage, subtype, options)
    level_fixed = level is not None
    if level is None:
        level = _draw_level(rng, hemorrhage, subtype)

    head = sample_head(rng)
    pose = sample_pose(rng, head)
    scanner = sample_scanner(rng)
    thickness = float(rng.choice([1.0, 2.5, 3.0, 5.0, 5.0, 5.0]))
    # No plane above the top of the brain: a slice of nothing but skull cap is not what anyone
    # reads (or posts) as a head CT.
    planes = _SlicePlanes(head, pose, size, int(rng.integers(2**31)), head.height - head.inner_offset - 4.0)
    z, sl = planes.cut(rng, level)
    mask = np.zeros((size, size), bool)
    if hemorrhage:
        sl, mask, subtype, level, z = _place_in_slice(
            rng,
            planes,
            sl,
            z,
            level,
            subtype,
            requested_subtype=requested_subtype,
            level_fixed=level_fixed,
            seed=seed,
        )
    ph = _finish(sl, mask, head, pose, scanner, rng, seed=seed, z=z, subtype=subtype, thickness=thickness)
    ph.level = level  # the requested level (a tilted plane spans neighbouring ones)
    return ph


def _check_no_contradiction(hemorrhage: bool | None, subtype: str | None) -> None:
    if hemorrhage is False and subtype is not None:
        raise InvalidInputError(f"hemorrhage=False contradicts subtype={subtype!r}; drop one of them")


def _draw_bleed(
    rng: np.random.Generator, hemorrhage: bool | None, subtype: str | None, options: Sequence[str]
) -> tuple[bool, str | None]:
    """Whether it bleeds (50/50 unless given; a subtype implies it), and a subtype from ``options`` if not given."""
    if hemorrhage is None:
        hemorrhage = subtype is not None or bool(rng.random() < 0.5)
    if hemorrhage and subtype is None:
        subtype = str(rng.choice(options))
    return hemorrhage, subtype


def _draw_level(rng: np.random.Generator, hemorrhage: bool, subtype: str | None) -> str:
    """A level the subtype can show; a normal slice's from the same mix, so the level says nothing of the label."""
    if hemorrhage:
        return str(rng.choice(SUBTYPE_LEVELS[subtype]))
    return str(rng.choice(LEVELS, p=LEVEL_WEIGHTS))


def _lesion_px_needed(size: int, subtype: str) -> int:
    """Fewest mask pixels for a lesion to count as shown on a slice of ``size`` px."""
    need = _min_lesion_px(size)
    if subtype == "intraventricular":  # ventricles can be small in the plane
        need = max(4, need // 2)
    return need


@dataclass
class _SlicePlanes:
    """How a single slice is cut from one head: its pose, texture and the highest plane allowed (mm)."""

    head: Head
    pose: Pose
    size: int
    texture_seed: int
    z_top: float

    def cut(self, rng: np.random.Generator, level: str) -> tuple[float, Slice]:
        """Draw a plane within ``level`` (never above ``z_top``) and render it."""
        hz = self.head.height / STANDARD_HEIGHT
        lo, hi = LEVEL_RANGES[level]
        z = float(rng.uniform(lo * hz, min(hi * hz, self.z_top)))
        return z, render_anatomy(self.head, self.pose, z, self.size, np.random.default_rng(self.texture_seed))


def _place_in_slice(
    rng: np.random.Generator,
    planes: _SlicePlanes,
    sl: Slice,
    z: float,
    level: str,
    subtype: str,
    *,
    requested_subtype: str | None,
    level_fixed: bool,
    seed: int,
) -> tuple[Slice, np.ndarray, str, str, float]:
    """Paint a hemorrhage into a single slice, trying other planes (and levels, subtypes) until one shows.

    A drawn subtype that will not fit this head/level gives way to the others (in a seeded
    order); a requested one is tried harder and refused with a clear message.

    Returns:
        (slice, mask, subtype, level, z) of the plane the lesion was painted on.
    """
    others = [s for s in SUBTYPES if s != subtype and (not level_fixed or level in SUBTYPE_LEVELS[s])]
    candidates = [subtype] + (
        [] if requested_subtype is not None else [str(s) for s in rng.permutation(others)]
    )
    for cand in candidates:
        need = _lesion_px_needed(planes.size, cand)
        if not level_fixed and level not in SUBTYPE_LEVELS[cand]:
            level = str(rng.choice(SUBTYPE_LEVELS[cand]))
            z, sl = planes.cut(rng, level)
        for attempt in range(40 if cand == candidates[0] else 24):
            if attempt and attempt % 4 == 0:
                # another plane within the level (and, if the level was drawn, another level)
                if attempt % 8 == 0 and not level_fixed:
                    level = str(rng.choice(SUBTYPE_LEVELS[cand]))
                z, sl = planes.cut(rng, level)
            lesion = sample_lesion(rng, planes.head, sl, cand)
            if lesion is None:
                continue
            before = sl.hu.copy()
            mask = paint_lesion(lesion, sl, rng)
            if mask.sum() >= need:
                return sl, mask, cand, level, z
            sl.hu = before
    raise InvalidInputError(
        f"could not place a {requested_subtype or 'hemorrhage'} at level {level!r} in a "
        f"{planes.size} px slice (seed {seed}); try a larger size, another level or another seed"
    )


def generate_series(
    seed: int,
    n_slices: int = 32,
    size: int = 256,
    *,
    hemorrhage: bool | None = None,
    subtype: str | None = None,
    slice_thickness: float = 5.0,
) -> list[Phantom]:
    """Generate a consistent axial series of one head, ordered inferior → superior.

    The same head, pose and scanner on every slice; slices are ``slice_thickness`` mm apart and
    the last one cuts the top of the brain just under the vertex. A hemorrhage (if any) is one
    3-D lesion, so it spans the contiguous slices it intersects (a small one may show on one
    slice only); each slice's ``label`` says whether it shows blood there. A drawn subtype the
    covered levels cannot show (intraventricular blood in a few slices near the vertex) is
    replaced by one they can; ``subtype`` on the phantoms says which.

    Args:
        seed: non-negative integer; the whole series is deterministic per seed.
        n_slices: 1–256.
        size: slice side in pixels.
        hemorrhage: True/False, or None to draw it (50/50; True when ``subtype`` is given).
        subtype: one of :data:`SUBTYPES`, or None to draw one when bleeding.
        slice_thickness: spacing and thickness in mm (0.5–10).

    Returns:
        ``n_slices`` :class:`Phantom` objects with ``series_index`` 0 … n−1.

    Raises:
        InvalidInputError: bad arguments, or a requested ``subtype`` (or any hemorrhage) that
            cannot be placed in the covered range (intraventricular blood in 2 slices at the top).
    """
    seed = _check_seed(seed)
    size = _check_size(size)
    _check_choice(subtype, SUBTYPES, "subtype")
    if isinstance(n_slices, bool) or not isinstance(n_slices, (int, np.integer)) or not 1 <= n_slices <= 256:
        raise InvalidInputError(f"n_slices must be an integer from 1 to 256; got {n_slices!r}")
    if not 0.5 <= float(slice_thickness) <= 10.0:
        raise InvalidInputError(f"slice_thickness must be 0.5–10 mm; got {slice_thickness!r}")
    _check_no_contradiction(hemorrhage, subtype)
    rng = np.random.default_rng(seed)
    requested_subtype = subtype
    hemorrhage, subtype = _draw_bleed(rng, hemorrhage, subtype, SUBTYPES)
    head = sample_head(rng)
    pose = sample_pose(rng, head)
    pose.rot *= 0.5  # a series is set up with some care
    scanner = sample_scanner(rng)
    texture_seed = int(rng.integers(2**31))
    # the top slice still shows a cap of brain under the skull, as a scan's last slice does
    top = head.height - head.inner_offset - 3.0
    zs = [top - (n_slices - 1 - k) * float(slice_thickness) for k in range(n_slices)]
    scan = _Scan(seed, head, pose, scanner, texture_seed, size, float(slice_thickness))
    out = _render_series(
        rng, scan, zs, hemorrhage=hemorrhage, subtype=subtype, requested_subtype=requested_subtype
    )
    if out is None:
        levels = [level_of(zk, head.height) for zk in zs]
        raise InvalidInputError(
            f"could not place a {requested_subtype or 'hemorrhage'} in a {n_slices}-slice series of "
            f"{slice_thickness} mm slices (levels {levels[0]} to {levels[-1]}, seed {seed}); "
            f"{requested_subtype or 'blood'} needs "
            f"{', '.join(SUBTYPE_LEVELS[requested_subtype]) if requested_subtype else 'a cranial cavity'} "
            "in the covered range: use more or thicker slices, a larger size or another subtype"
        )
    return out


def generate_context(
    seed: int,
    size: int = 256,
    k: int = 1,
    *,
    hemorrhage: bool | None = None,
    subtype: str | None = None,
) -> list[Phantom]:
    """Generate one slice with its ``k`` neighbouring slices on each side, for slice-context models.

    Like :func:`generate_slice` (a level drawn the same way, so the level says nothing about the
    label), but the head is cut at ``2k + 1`` planes one slice thickness apart, as consecutive
    slices of a scan, and a hemorrhage is one 3-D lesion that always shows on the centre slice
    (and on the neighbours it reaches). Slice thickness and spacing are drawn from 2.5–5 mm.

    Args:
        seed: non-negative integer; deterministic per seed.
        size: slice side in pixels.
        k: neighbours on each side, 1–8.
        hemorrhage: True/False, or None to draw it (50/50; True when ``subtype`` is given).
        subtype: one of :data:`SUBTYPES` (implies a hemorrhage), or None to draw one. A drawn
            subtype that does not fit gives way to another; a requested one is kept or refused.

    Returns:
        ``2k + 1`` :class:`Phantom` objects, inferior → superior; the centre (index ``k``) has
        ``label == 1`` exactly when ``hemorrhage``.

    Raises:
        InvalidInputError: bad arguments, ``hemorrhage=False`` with a subtype, or (rarely) no
            hemorrhage (of the requested subtype) could be placed for this seed.
    """
    seed = _check_seed(seed)
    size = _check_size(size)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 8:
        raise InvalidInputError(f"k must be an integer from 1 to 8; got {k!r}")
    _check_choice(subtype, SUBTYPES, "subtype")
    _check_no_contradiction(hemorrhage, subtype)
    rng = np.random.default_rng(seed)
    requested_subtype = subtype
    hemorrhage, subtype = _draw_bleed(rng, hemorrhage, subtype, SUBTYPES)
    head = sample_head(rng)
    pose = sample_pose(rng, head)
    scanner = sample_scanner(rng)
    thickness = float(rng.choice([2.5, 3.0, 5.0, 5.0, 5.0]))
    scan = _Scan(seed, head, pose, scanner, int(rng.integers(2**31)), size, thickness)
    hz = head.height / STANDARD_HEIGHT
    # The top neighbour still cuts brain under the vertex, as a scan's last slice does.
    z_top = head.height - head.inner_offset - 3.0 - k * thickness
    for attempt in range(6):
        # A drawn subtype that does not fit draws the next try's level from another subtype.
        keep = attempt < 3 or subtype is None or requested_subtype is not None
        choice = subtype if keep else str(rng.choice(SUBTYPES))
        lo, hi = LEVEL_RANGES[_draw_level(rng, hemorrhage, choice)]
        centre = float(rng.uniform(min(lo * hz, z_top), min(hi * hz, z_top)))
        zs = [centre + (j - k) * thickness for j in range(2 * k + 1)]
        out = _render_series(
            rng, scan, zs, hemorrhage=hemorrhage, subtype=choice, requested_subtype=None, lesion_slice=k
        )
        if out is not None:
            return out
    raise InvalidInputError(
        f"could not place a {requested_subtype or 'hemorrhage'} on the centre slice of a {2 * k + 1}-slice "
        f"stack (seed {seed}, "
        f"{size} px); try another seed or a larger size"
    )


@dataclass
class _Scan:
    """What every slice of one scan shares: the head, its pose, the scanner, texture and slice geometry."""

    seed: int
    head: Head
    pose: Pose
    scanner: Scanner
    texture_seed: int
    size: int
    slice_thickness: float


def _render_series(
    rng: np.random.Generator,
    scan: _Scan,
    zs: list[float],
    *,
    hemorrhage: bool,
    subtype: str | None,
    requested_subtype: str | None,
    lesion_slice: int | None = None,
) -> list[Phantom] | None:
    """Render the planes ``zs`` of one head and, when bleeding, one 3-D lesion across them.

    ``lesion_slice`` None: the lesion may sit anywhere its subtype's levels are covered (a whole
    series). An index: the lesion must show on that slice (a slice and its neighbours, whose
    label is the centre's). Returns None when no lesion could be placed.
    """
    slices = [
        render_anatomy(scan.head, scan.pose, zk, scan.size, np.random.default_rng(scan.texture_seed + k))
        for k, zk in enumerate(zs)
    ]
    masks = [np.zeros((scan.size, scan.size), bool) for _ in zs]
    if hemorrhage:
        placed = _place_in_series(rng, scan, slices, zs, subtype, requested_subtype, lesion_slice)
        if placed is None:
            return None
        masks, subtype = placed
    out = []
    for k, (sl, m) in enumerate(zip(slices, masks, strict=True)):
        srng = np.random.default_rng([scan.seed, k])
        out.append(
            _finish(
                sl,
                m,
                scan.head,
                scan.pose,
                scan.scanner,
                srng,
                seed=scan.seed,
                z=zs[k],
                subtype=subtype,
                thickness=float(scan.slice_thickness),
                series_index=k,
            )
        )
    return out


def _place_in_series(
    rng: np.random.Generator,
    scan: _Scan,
    slices: list[Slice],
    zs: list[float],
    subtype: str | None,
    requested_subtype: str | None,
    lesion_slice: int | None,
) -> tuple[list[np.ndarray], str] | None:
    """Paint one 3-D lesion across ``slices`` (in place); its per-slice masks and subtype, or None if none fits.

    A drawn subtype that this series cannot show (e.g. intraventricular blood in a few slices
    near the vertex) gives way to the others in a seeded order.
    """
    n_slices = len(zs)
    requested = requested_subtype is not None
    levels = [level_of(zk, scan.head.height) for zk in zs]
    others = [str(s) for s in rng.permutation([s for s in SUBTYPES if s != subtype])]
    for cand in [subtype] + ([] if requested else others):
        where = range(n_slices) if lesion_slice is None else [lesion_slice]
        ok = [k for k in where if levels[k] in SUBTYPE_LEVELS[cand]]
        if not ok and not requested:
            continue
        ok = ok or list(where)
        need = _lesion_px_needed(scan.size, cand)
        tiny = max(3, need // 4)
        for _ in range(40 if requested else 24):
            ref = slices[int(rng.choice(ok))]
            lesion = sample_lesion(rng, scan.head, ref, cand)
            if lesion is None:
                continue
            trial = _paint_across(lesion, slices, rng, tiny)
            shown = [int(m.sum()) for _, m in trial]
            if (max(shown) if lesion_slice is None else shown[lesion_slice]) >= need:
                for sl, (before, m) in zip(slices, trial, strict=True):
                    if not m.any():
                        sl.hu = before
                return [m for _, m in trial], cand
            for sl, (before, _) in zip(slices, trial, strict=True):
                sl.hu = before
    return None


def _paint_across(
    lesion: Lesion, slices: list[Slice], rng: np.random.Generator, tiny: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Paint ``lesion`` on every slice (in place); per slice, its HU before and its mask (a sliver
    under ``tiny`` pixels is dropped from the mask)."""
    trial = []
    for sl in slices:
        before = sl.hu.copy()
        m = paint_lesion(lesion, sl, rng)
        if m.sum() < tiny:
            m[:] = False
        trial.append((before, m))
    return trial
