"""What the scanner adds: blur (reconstruction kernel), correlated noise, beam-hardening streaks,
rings, motion, the head holder and table, and the reconstruction circle.

Every effect is drawn independently of the hemorrhage label, so none of them can serve the
model as a shortcut.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Scanner:
    """One scanner/protocol: sharpness, noise, artefact strengths (mm, HU)."""

    psf_mm: float
    sharpen: float
    noise_hu: float
    noise_grain_px: float
    streaks: float
    fine_streaks: float
    ring: float
    motion: float
    holder: int  # 0 none, 1 cradle, 2 cradle + pads
    holder_gap: float
    holder_hu: float
    table: bool
    recon_circle: bool
    offset_hu: float
    cupping_hu: float
    pixel_representation: int  # DICOM: 0 unsigned + intercept −1024, 1 signed
    manufacturer: str
    kvp: float
    kernel: str


MANUFACTURERS = ("SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "TOSHIBA", "CANON_MEC")


def sample_scanner(rng: np.random.Generator) -> Scanner:
    """Random scanner and protocol; varied noise and sharpness (domain randomisation)."""
    sharp = rng.random() < 0.25
    return Scanner(
        psf_mm=float(rng.uniform(0.35, 1.1)),
        sharpen=float(rng.uniform(0.3, 1.2)) if sharp else 0.0,
        noise_hu=float(rng.uniform(1.5, 5.0) * (1.3 if sharp else 1.0)),
        noise_grain_px=float(rng.uniform(0.5, 1.2)),
        streaks=float(rng.uniform(0.3, 1.5)),
        fine_streaks=float(rng.uniform(0, 5)) if rng.random() < 0.3 else 0.0,
        ring=float(rng.uniform(4, 12)) if rng.random() < 0.05 else 0.0,
        motion=float(rng.uniform(1.0, 3.5)) if rng.random() < 0.05 else 0.0,
        holder=int(rng.choice([0, 1, 2], p=[0.35, 0.4, 0.25])),
        holder_gap=float(rng.uniform(1.0, 18.0)),
        holder_hu=float(rng.uniform(-250, 250)),
        table=bool(rng.random() < 0.3),
        recon_circle=bool(rng.random() < 0.5),
        offset_hu=float(rng.normal(0, 2.5)),
        cupping_hu=float(rng.uniform(-4, 6)),
        pixel_representation=int(rng.random() < 0.4),
        manufacturer=str(rng.choice(MANUFACTURERS)),
        kvp=float(rng.choice([100.0, 120.0, 120.0, 140.0])),
        kernel=str(rng.choice(["H30s", "H40s", "J40s", "STANDARD", "SOFT", "FC21", "UB"]))
        if not sharp
        else str(rng.choice(["H60s", "BONE", "FC30", "YC"])),
    )


def _blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px < 0.2:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigmaX=float(sigma_px), borderType=cv2.BORDER_REPLICATE)


def add_fixtures(
    hu: np.ndarray,
    skin: np.ndarray,
    ys: np.ndarray,
    scanner: Scanner,
    pixel_mm: float,
    rng: np.random.Generator,
) -> None:
    """Head holder (cradle under the occiput, pads) and the table, in place, outside the head."""
    if scanner.holder == 0 and not scanner.table:
        return
    h, w = hu.shape
    if not skin.any():
        return
    outside = ~skin
    if scanner.holder:
        gap_px = max(1, int(round(scanner.holder_gap / pixel_mm)))
        thick_px = max(1, int(round(rng.uniform(2.0, 6.0) / pixel_mm)))
        k1 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap_px + 1, 2 * gap_px + 1))
        k2 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * (gap_px + thick_px) + 1,) * 2)
        s8 = skin.astype(np.uint8)
        inner = cv2.dilate(s8, k1).astype(bool)
        outer = cv2.dilate(s8, k2).astype(bool)
        rows = np.nonzero(skin.any(axis=1))[0]
        y_mid = rows[0] + (rows[-1] - rows[0]) * rng.uniform(0.35, 0.65)
        lower = (np.arange(h)[:, None] > y_mid) & np.ones((1, w), bool)
        shell = outer & ~inner & lower
        if scanner.holder == 2:
            pads = inner & outside & lower
            hu[pads] = rng.uniform(-900, -600)
        hu[shell] = scanner.holder_hu
    if scanner.table:
        rows = np.nonzero(skin.any(axis=1))[0]
        y0 = rows[-1] + int(rng.uniform(8, 30) / pixel_mm)
        t = max(1, int(rng.uniform(4, 14) / pixel_mm))
        if y0 < h:
            band = np.zeros_like(skin)
            band[y0 : y0 + t] = True
            hu[band & outside] = rng.uniform(-150, 250)


def _streak_lines(shape, points, amps, widths_px) -> np.ndarray:
    h, w = shape
    canvas = np.zeros(shape, np.float32)
    big = 4 * max(h, w)
    for (p0, p1), amp, width in zip(points, amps, widths_px, strict=True):
        d = np.array(p1, float) - np.array(p0, float)
        n = np.linalg.norm(d)
        if n < 1e-6:
            continue
        d /= n
        a = (np.array(p0) - d * big).astype(int)
        b = (np.array(p0) + d * big).astype(int)
        line = np.zeros(shape, np.float32)
        cv2.line(
            line, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 1.0, max(1, int(round(width))), cv2.LINE_AA
        )
        canvas += np.float32(amp) * line
    return canvas


def apply_scanner(
    hu: np.ndarray,
    *,
    head_mask: np.ndarray,
    cavity: np.ndarray,
    pixel_mm: float,
    scanner: Scanner,
    rng: np.random.Generator,
    rim_mm: float = 16.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Blur, streaks, noise, rings, motion and the reconstruction circle.

    Returns:
        (hu, artefact): the new float32 HU image and the streak/ring artefact map in HU (so
        bright artefacts inside the head can be tracked as mimics).
    """
    h, w = hu.shape
    out = _blur(hu, scanner.psf_mm / pixel_mm)
    if scanner.sharpen:
        out = out + np.float32(scanner.sharpen) * (out - _blur(out, 1.0))
    if scanner.motion:
        shift = scanner.motion / pixel_mm
        m = np.float32([[1, 0, shift * rng.uniform(-1, 1)], [0, 1, shift * rng.uniform(-1, 1)]])
        ghost = cv2.warpAffine(out, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        out = 0.85 * out + 0.15 * ghost

    # Beam hardening / photon starvation between dense bones (skull base, petrous bones).
    # only bone deep inside the head (skull base, petrous bones), not the calvarium's rim
    k = max(3, int(round(rim_mm / pixel_mm)) | 1)
    interior = cv2.erode(head_mask.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    dense = (hu > 1000) & interior
    dense_idx = np.flatnonzero(dense)
    art = np.zeros((h, w), np.float32)
    if dense_idx.size > 20:
        frac = dense_idx.size / max(1, int(cavity.sum()) + 1)
        n = int(np.clip(frac * 40, 1, 10) * scanner.streaks)
        pts, amps, widths = [], [], []
        for _ in range(n):
            a, b = rng.choice(dense_idx, 2)
            pts.append(((a % w, a // w), (b % w, b // w)))
            amps.append(rng.uniform(-55, 25) * scanner.streaks)
            widths.append(rng.uniform(1.0, 4.0) / pixel_mm * 0.6)
        art += _blur(_streak_lines((h, w), pts, amps, widths), 1.0 / pixel_mm)
    if scanner.fine_streaks:
        n = int(rng.integers(6, 24))
        c = np.array([w / 2, h / 2])
        pts = [
            ((c + rng.normal(0, w / 8, 2)).tolist(), (c + rng.normal(0, w / 3, 2)).tolist()) for _ in range(n)
        ]
        art += _blur(_streak_lines((h, w), pts, rng.normal(0, scanner.fine_streaks, n), [1] * n), 0.7)
    out += art * head_mask

    # Correlated quantum noise; stronger where much bone attenuates the beam.
    noise = rng.standard_normal((h, w)).astype(np.float32)
    g = scanner.noise_grain_px
    noise = _blur(noise, g)
    noise *= np.float32(1.0 / max(noise.std(), 1e-6))
    bone_frac = _blur((hu > 400).astype(np.float32), 12.0 / pixel_mm)
    sd = np.float32(scanner.noise_hu) * (1.0 + 1.0 * bone_frac)
    out += noise * sd

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot(xx - w / 2 + 0.5, yy - h / 2 + 0.5) / np.float32(max(h, w) / 2)
    out += (np.float32(scanner.offset_hu) + np.float32(scanner.cupping_hu) * r**2) * head_mask
    if scanner.ring:
        r0 = rng.uniform(0.05, 0.6)
        ring = np.float32(scanner.ring * rng.choice([-1, 1])) * (np.abs(r - r0) < 1.2 / (max(h, w) / 2))
        out += ring * head_mask
        art = art + ring

    np.clip(out, -1024.0, 3071.0, out=out)
    if scanner.recon_circle:
        out[r > rng.uniform(0.97, 1.02)] = -1024.0
    return out, art
