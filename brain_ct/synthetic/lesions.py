"""Intracranial hemorrhages as 3-D solids in the head frame, painted into rendered slices.

A lesion is placed once per head (so a series shows it on a few contiguous slices) using a
reference slice to find a plausible site, then :func:`paint_lesion` paints it on any slice of
that head and returns its mask. Densities follow acute blood (50–90 HU), with a share of subtle
lesions only ~14–25 HU above the surrounding parenchyma; sizes run from large to a few mm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from brain_ct.synthetic.anatomy import Head, Slice, _ell, smooth_noise

SUBTYPES: tuple[str, ...] = ("intraparenchymal", "subdural", "epidural", "intraventricular", "subarachnoid")

#: Levels where each subtype can be placed. Intraventricular blood needs ventricles in the slice.
SUBTYPE_LEVELS: dict[str, tuple[str, ...]] = {
    "intraparenchymal": (
        "orbits",
        "posterior_fossa",
        "suprasellar",
        "basal_ganglia",
        "ventricles",
        "centrum_semiovale",
        "vertex",
    ),
    "subdural": (
        "posterior_fossa",
        "suprasellar",
        "basal_ganglia",
        "ventricles",
        "centrum_semiovale",
        "vertex",
    ),
    "epidural": (
        "orbits",
        "posterior_fossa",
        "suprasellar",
        "basal_ganglia",
        "ventricles",
        "centrum_semiovale",
        "vertex",
    ),
    "intraventricular": ("posterior_fossa", "suprasellar", "basal_ganglia", "ventricles"),
    "subarachnoid": (
        "skull_base",
        "orbits",
        "posterior_fossa",
        "suprasellar",
        "basal_ganglia",
        "ventricles",
        "centrum_semiovale",
        "vertex",
    ),
}
# The skull base itself has little cranial cavity in an axial slice; only SAH (around the
# medulla) and small parenchymal bleeds are placed there.
SUBTYPE_LEVELS["intraparenchymal"] = ("skull_base", *SUBTYPE_LEVELS["intraparenchymal"])


@dataclass
class Lesion:
    """One hemorrhage: its subtype and the parameters that paint it (mm, HU, radians)."""

    subtype: str
    params: dict = field(default_factory=dict)


def _pick(rng: np.random.Generator, mask: np.ndarray) -> tuple[int, int] | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    i = int(idx[rng.integers(idx.size)])
    return divmod(i, mask.shape[1])


def _density(rng: np.random.Generator, base: float) -> float:
    """Blood HU: mostly clearly dense, sometimes subtle (~+14–25 HU over the background)."""
    if rng.random() < 0.25:
        return float(np.clip(base + rng.uniform(15, 26), 46, 62))
    return float(np.clip(rng.uniform(58, 88), base + 18, 95))


def _wrap(a: np.ndarray) -> np.ndarray:
    return np.abs((a + np.pi) % (2 * np.pi) - np.pi)


def sample_lesion(rng: np.random.Generator, head: Head, ref: Slice, subtype: str) -> Lesion | None:
    """Choose a site and size for ``subtype`` that intersects the reference slice, or None."""
    tissue_ref = float(np.median(ref.tissue[ref.brain])) if ref.brain.any() else head.hu["wm"]
    sampler = _SAMPLERS.get(subtype)
    if sampler is None:
        raise ValueError(f"unknown subtype {subtype!r}")
    params = sampler(rng, ref, subtype, tissue_ref)
    return None if params is None else Lesion(subtype, params)


def _sample_intraparenchymal(
    rng: np.random.Generator, ref: Slice, subtype: str, tissue_ref: float
) -> dict | None:
    """One haematoma deep enough in the brain for its size, or a cluster of small contusions."""
    contusion = rng.random() < 0.25
    r = float(np.exp(rng.uniform(np.log(2.5), np.log(24.0))))
    at = _pick(rng, ref.brain & (ref.depth_brain > (3.0 if contusion else min(r * 0.6, 15.0))))
    if at is None:
        at = _pick(rng, ref.brain)
        if at is None:
            return None
    n_blobs = int(rng.integers(2, 6)) if contusion else 1
    blobs = _sample_blobs(rng, ref, at, r, n_blobs, contusion)
    edema = float(rng.uniform(1.5, 9.0)) if rng.random() < 0.6 else 0.0
    return {
        "blobs": blobs,
        "hu": _density(rng, tissue_ref),
        "edema": edema,
        "edema_drop": float(rng.uniform(5, 12)),
        "hetero": float(rng.uniform(0, 6)),
        "harm": [(int(k), float(rng.uniform(0, 0.12)), float(rng.uniform(0, 6.3))) for k in (2, 3, 5)],
        "level_fluid": bool(rng.random() < 0.05),
    }


def _sample_blobs(
    rng: np.random.Generator, ref: Slice, at: tuple[int, int], r: float, n_blobs: int, contusion: bool
) -> list[tuple[float, ...]]:
    """Ellipsoids (centre x, y, z, half-axes a, b, c in mm, rotation) around the site ``at``."""
    i, j = at
    blobs = []
    for k in range(n_blobs):
        rr = r if k == 0 and not contusion else float(rng.uniform(2.0, 7.0))
        off = rng.normal(0, 6.0, 3) if k else np.zeros(3)
        blobs.append(
            (
                float(ref.X[i, j] + off[0]),
                float(ref.Y[i, j] + off[1]),
                float(ref.Z[i, j] + rng.uniform(-0.4, 0.4) * rr + off[2] * 0.3),
                rr * float(rng.uniform(0.7, 1.3)),
                rr * float(rng.uniform(0.7, 1.3)),
                rr * float(rng.uniform(0.6, 1.1)),
                float(rng.uniform(0, np.pi)),
            )
        )
    return blobs


def _sample_extra_axial(rng: np.random.Generator, ref: Slice, subtype: str, tissue_ref: float) -> dict | None:
    """A subdural crescent or epidural lens under the inner table (a few subdurals along the falx)."""
    band = ref.cavity & (ref.depth_inner < 6.0) & (ref.depth_inner > 0)
    at = _pick(rng, band)
    if at is None:
        return None
    i, j = at
    sdh = subtype == "subdural"
    if sdh and rng.random() < 0.12:
        falcine = _sample_falcine(rng, ref, tissue_ref)
        if falcine is not None:
            return falcine
    return {
        "falcine": False,
        "theta0": float(ref.theta[i, j]),
        "span": float(rng.uniform(0.5, 1.5) if sdh else rng.uniform(0.22, 0.55)),
        "thick": float(np.exp(rng.uniform(np.log(2.5), np.log(18.0))))
        if sdh
        else float(np.exp(rng.uniform(np.log(5.0), np.log(28.0)))),
        "z0": float(ref.Z[i, j] + rng.uniform(-8, 8)),
        "zspan": float(rng.uniform(18, 45) if sdh else rng.uniform(10, 28)),
        "hu": _density(rng, tissue_ref),
        "hetero": float(rng.uniform(0, 10)) if rng.random() < 0.4 else 0.0,
    }


def _sample_falcine(rng: np.random.Generator, ref: Slice, tissue_ref: float) -> dict | None:
    """An interhemispheric (parafalcine) subdural; None when the slice shows no fissure."""
    at = _pick(rng, ref.fissure)
    if at is None:
        return None
    i, j = at
    return {
        "falcine": True,
        "side": float(rng.choice([-1.0, 1.0])),
        "w": float(rng.uniform(2.0, 5.0)),
        "y0": float(ref.Y[i, j]),
        "ylen": float(rng.uniform(20, 60)),
        "z0": float(ref.Z[i, j]),
        "zlen": float(rng.uniform(10, 30)),
        "hu": _density(rng, tissue_ref),
        "hetero": float(rng.uniform(0, 8)),
    }


def _sample_intraventricular(
    rng: np.random.Generator, ref: Slice, subtype: str, tissue_ref: float
) -> dict | None:
    """Blood layering in a ventricle (a fluid level), or a cast filling a small one."""
    px = ref.pixel_mm
    vent = ref.ventricles
    if vent.sum() * px * px < 12.0:
        return None
    at = _pick(rng, vent)
    i, j = at
    ys = ref.ys[vent]
    # a small ventricle (4th, temporal horn) in the plane is shown filled (a cast)
    cast = rng.random() < 0.3 or vent.sum() * px * px < 150.0
    return {
        "cast": cast,
        "level": float(np.quantile(ys, 1.0 - rng.uniform(0.2, 0.65))),
        "center": (float(ref.X[i, j]), float(ref.Y[i, j]), float(ref.Z[i, j])),
        "radius": float(rng.uniform(10, 30)) if cast else float(rng.uniform(25, 60)),
        "hu": float(rng.uniform(50, 85)) if rng.random() > 0.2 else float(rng.uniform(44, 52)),
    }


def _sample_subarachnoid(
    rng: np.random.Generator, ref: Slice, subtype: str, tissue_ref: float
) -> dict | None:
    """Blood in the sulci and cisterns within a ball around a CSF-space site."""
    space = ref.csf_space & ref.cavity
    at = _pick(rng, space)
    if at is None:
        return None
    i, j = at
    return {
        "center": (float(ref.X[i, j]), float(ref.Y[i, j]), float(ref.Z[i, j])),
        "radius": float(np.exp(rng.uniform(np.log(10.0), np.log(50.0)))),
        "zrad": float(rng.uniform(6, 25)),
        "hu": float(rng.uniform(58, 88)) if rng.random() > 0.2 else float(rng.uniform(48, 58)),
        "fill": float(rng.uniform(0.5, 1.0)),
    }


#: Per subtype, the sampler of a lesion's parameters: ``(rng, ref, subtype, tissue_ref)`` → params or None.
_SAMPLERS: dict[str, Callable[[np.random.Generator, Slice, str, float], dict | None]] = {
    "intraparenchymal": _sample_intraparenchymal,
    "subdural": _sample_extra_axial,
    "epidural": _sample_extra_axial,
    "intraventricular": _sample_intraventricular,
    "subarachnoid": _sample_subarachnoid,
}


def paint_lesion(lesion: Lesion, sl: Slice, rng: np.random.Generator) -> np.ndarray:
    """Paint ``lesion`` into ``sl.hu`` (in place) and return its bool mask on this slice."""
    painter = _PAINTERS.get(lesion.subtype)
    if painter is None:
        raise ValueError(f"unknown subtype {lesion.subtype!r}")
    return painter(lesion, sl, rng)


def _noise_cell(sl: Slice) -> float:
    """Grain of a lesion's heterogeneity in pixels (about 4 mm, at least 2 px)."""
    return max(2.0, 4.0 / sl.pixel_mm)


def _paint_intraparenchymal(lesion: Lesion, sl: Slice, rng: np.random.Generator) -> np.ndarray:
    p = lesion.params
    X, Y, Z = sl.X, sl.Y, sl.Z
    mask = np.zeros(X.shape, bool)
    region = sl.cavity & ~sl.ventricles & (sl.hu < 150)
    edema_zone = np.zeros_like(mask)
    for cx, cy, cz, a, b, c, rot in p["blobs"]:
        q = _ell(X, Y, Z, cx, cy, cz, a, b, c, rot=rot)
        ang = np.arctan2(Y - np.float32(cy), X - np.float32(cx))
        wob = np.ones_like(q)
        for k, amp, ph in p["harm"]:
            wob += np.float32(amp) * np.cos(np.float32(k) * ang + np.float32(ph))
        q = q / wob**2
        mask |= region & (q < 1)
        if p["edema"] > 0:
            grow = (1 + p["edema"] / max(min(a, b), 1.0)) ** 2
            edema_zone |= region & (q < grow)
    edema_zone &= ~mask & sl.brain
    if edema_zone.any():
        sl.hu[edema_zone] = np.minimum(sl.hu[edema_zone], sl.tissue[edema_zone] - np.float32(p["edema_drop"]))
    value = np.float32(p["hu"]) + np.float32(p["hetero"]) * smooth_noise(rng, X.shape, _noise_cell(sl))
    if p["level_fluid"]:
        # coagulopathy: serum on top, cells layering dependently (gravity = image +y)
        ys_c = np.median(sl.ys[mask]) if mask.any() else 0.0
        value = np.where(sl.ys > ys_c, value + 8, value - 18)
    sl.hu[mask] = value[mask]
    return mask


def _paint_extra_axial(lesion: Lesion, sl: Slice, rng: np.random.Generator) -> np.ndarray:
    p = lesion.params
    X, Z = sl.X, sl.Z
    value = np.float32(p["hu"]) + np.float32(p["hetero"]) * smooth_noise(rng, X.shape, _noise_cell(sl) * 1.5)
    if p.get("falcine"):
        side = p["side"]
        near = np.abs(X) < p["w"] + 1.0
        m = (
            sl.cavity
            & near
            & (np.sign(X + 1e-3) == side)
            & (np.abs(sl.Y - p["y0"]) < p["ylen"] / 2)
            & (np.abs(Z - p["z0"]) < p["zlen"] / 2)
            & (sl.fissure | sl.brain | sl.csf_space)
        )
        sl.hu[m] = value[m]
        return m
    dth = _wrap(sl.theta - np.float32(p["theta0"])) / np.float32(p["span"])
    dz = np.abs(Z - np.float32(p["z0"])) / np.float32(p["zspan"])
    if lesion.subtype == "subdural":
        # crescent: nearly constant thickness with long tapering ends (crosses sutures)
        prof = np.clip((1 - dth) / 0.4, 0, 1) ** 0.7 * np.clip((1 - dz) / 0.5, 0, 1) ** 0.7
    else:
        # biconvex lens: elliptical profile, steep ends (limited by sutures)
        prof = np.sqrt(np.clip(1 - dth**2, 0, 1)) * np.sqrt(np.clip(1 - dz**2, 0, 1))
    thick = np.float32(p["thick"]) * prof
    m = sl.cavity & (sl.depth_inner > -0.5) & (sl.depth_inner < thick) & (sl.hu < 300)
    sl.hu[m] = value[m]
    return m


def _paint_intraventricular(lesion: Lesion, sl: Slice, rng: np.random.Generator) -> np.ndarray:
    p = lesion.params
    cx, cy, cz = p["center"]
    near = _ell(sl.X, sl.Y, sl.Z, cx, cy, cz, p["radius"], p["radius"], p["radius"]) < 1
    m = sl.ventricles & near
    if p["cast"]:
        # a clot filling a ventricle distends it by a millimetre or two
        k = 2 * max(1, int(round(1.5 / sl.pixel_mm))) + 1
        m = cv2.dilate(m.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool) & sl.cavity & near
        m &= sl.hu < 100
    else:
        m &= sl.ys > np.float32(p["level"])
    sl.hu[m] = np.float32(p["hu"])
    return m


def _paint_subarachnoid(lesion: Lesion, sl: Slice, rng: np.random.Generator) -> np.ndarray:
    p = lesion.params
    cx, cy, cz = p["center"]
    near = _ell(sl.X, sl.Y, sl.Z, cx, cy, cz, p["radius"], p["radius"], p["zrad"]) < 1
    m = sl.csf_space & sl.cavity & near & (sl.hu < 100)
    # blood distends the sulci it fills: grow by about a millimetre into the cortex
    k = 2 * max(1, int(round(0.8 / sl.pixel_mm))) + 1
    grown = cv2.dilate(m.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    m = grown & sl.cavity & near & ~sl.ventricles & (sl.hu < 100)
    if p["fill"] < 1:
        # patchy: blood in some sulci, not all
        m &= smooth_noise(rng, sl.X.shape, max(3.0, 8.0 / sl.pixel_mm)) > (p["fill"] - 0.75) * 2
    sl.hu[m] = np.float32(p["hu"])
    return m


#: Per subtype, the painter of a lesion into one slice (in place; returns the slice's mask).
_PAINTERS: dict[str, Callable[[Lesion, Slice, np.random.Generator], np.ndarray]] = {
    "intraparenchymal": _paint_intraparenchymal,
    "subdural": _paint_extra_axial,
    "epidural": _paint_extra_axial,
    "intraventricular": _paint_intraventricular,
    "subarachnoid": _paint_subarachnoid,
}
