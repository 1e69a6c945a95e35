"""An analytic 3-D head in millimetres, sliced on an (oblique) plane into Hounsfield units.

The head is a set of closed-form solids — nested ellipsoidal shells for scalp, skull tables and
diploe, a skull-base "floor" height map that splits the cranial cavity into anterior, middle and
posterior fossae, and ellipsoids for every named structure (ventricles, cisterns, deep grey
nuclei, brainstem, orbits, sinuses, petrous bones, ...). Gyri are the zero set of a smooth 3-D
phase field, so neighbouring slices of one head agree with each other (needed for series).

Every quantity is evaluated per pixel with vectorised numpy on the slice plane: a pixel's head
coordinates (X left–right, Y anterior(−)–posterior(+), Z foot→head, all mm, Z = 0 at the
foramen magnum) come from the pose (rotation, translation, gantry pitch and head roll), so a
tilted head shows one temporal lobe at a different level than the other, as real scans do.

Head frame conventions: +X is the image's right side (the patient's left in radiological
display), −Y is anterior (top of the image), gravity points to image +y (patient supine).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

#: Slice levels from skull base to vertex with their Z range (mm, for a head 145 mm tall).
LEVEL_RANGES: dict[str, tuple[float, float]] = {
    "skull_base": (2.0, 22.0),
    "orbits": (24.0, 40.0),
    "posterior_fossa": (40.0, 54.0),
    "suprasellar": (54.0, 66.0),
    "basal_ganglia": (66.0, 82.0),
    "ventricles": (82.0, 97.0),
    "centrum_semiovale": (97.0, 116.0),
    "vertex": (116.0, 136.0),
}
LEVELS: tuple[str, ...] = tuple(LEVEL_RANGES)

STANDARD_HEIGHT = 145.0  # mm from the foramen magnum to the skin at the vertex


def level_of(z: float, height: float) -> str:
    """Name of the level a slice at ``z`` mm belongs to, for a head ``height`` mm tall."""
    zs = z * STANDARD_HEIGHT / height
    for name, (_, hi) in LEVEL_RANGES.items():
        if zs < hi:
            return name
    return "vertex"


@dataclass
class Head:
    """Random but fixed properties of one patient's head (all lengths in mm, densities in HU)."""

    age: float  # 0 child … 1 elderly
    A: float  # half-width of the skin outline
    B_ant: float  # half-length, anterior half
    B_post: float  # half-length, posterior half
    height: float  # foramen magnum → vertex skin
    zc: float  # height of the widest cross-section
    egg: float  # narrowing of the forehead
    harm: list[tuple[int, float, float]]  # outline harmonics (k, amplitude, phase)
    scalp: float
    temporalis: float
    t_outer: float
    t_diploe: float
    t_inner: float
    sas: float  # subarachnoid space (CSF) over the convexity
    vent: float  # ventricle size factor
    sulc: float  # sulcal width factor
    gyri_k: int
    phase: list[tuple[float, float, float, float, float]]  # (kx, ky, kz, phi, amp)
    phase2: list[tuple[float, float, float, float, float]]
    depth_phase: list[tuple[float, float, float, float, float]]
    hu: dict[str, float]
    calc: dict[str, tuple[float, float, float, float, float]]  # name → (x, y, z, r, hu)
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def inner_offset(self) -> float:
        return self.scalp + self.t_outer + self.t_diploe + self.t_inner


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_head(rng: np.random.Generator, age: float | None = None) -> Head:
    """Draw one patient's head: size, shape, age-related atrophy, tissue densities, calcifications."""
    if age is None:
        # Mostly adults, with children and elderly (the usual ED population).
        age = float(np.clip(rng.beta(2.2, 1.6), 0.0, 1.0))
    child = age < 0.15
    scale = 0.86 if child else _u(rng, 0.93, 1.07)
    A = _u(rng, 66, 78) * scale
    B = _u(rng, 84, 98) * scale
    height = _u(rng, 132, 152) * (0.9 if child else 1.0)
    harm = [(int(k), _u(rng, 0.0, 0.02 / (k - 1)), _u(rng, 0, 2 * np.pi)) for k in (2, 3, 4, 5)]
    sas = 0.6 + 5.0 * age**2.2 + _u(rng, 0.0, 1.0)
    vent = 0.7 + 1.1 * age**2 + _u(rng, -0.1, 0.35)
    if rng.random() < 0.05:  # hydrocephalus / very large ventricles
        vent *= _u(rng, 1.4, 2.0)
    sulc = 0.6 + 1.6 * age**2 + _u(rng, 0.0, 0.4)
    hu = _sample_densities(rng, age)
    calc = _sample_calcifications(rng, age, child)
    extras = _sample_extras(rng, age, child)
    return Head(
        age=age,
        A=A,
        B_ant=B * _u(rng, 0.95, 1.03),
        B_post=B * _u(rng, 0.98, 1.08),
        height=height,
        zc=height * _u(rng, 0.5, 0.6),
        egg=_u(rng, 0.0, 0.22),
        harm=harm,
        scalp=_u(rng, 2.5, 7.0),
        temporalis=_u(rng, 2.0, 9.0),
        # Calvarium 2.4–6.6 mm in all (mean ~4.5): real axial slices show bone in 10–18 % of the head's
        # pixels between the skull base and the vertex (the GE series of data/real_anatomy); the
        # earlier 4–10 mm gave phantoms ~1.6× that.
        t_outer=_u(rng, 1.0, 1.8),
        t_diploe=_u(rng, 0.6, 3.2) * (0.6 if child else 1.0),
        t_inner=_u(rng, 0.8, 1.6),
        sas=sas,
        vent=vent,
        sulc=sulc,
        gyri_k=int(rng.integers(22, 34)),
        phase=_random_sulcal_waves(rng),
        phase2=_random_waves(rng, 3, 25, 60, 1.0, 2.5),
        depth_phase=_random_waves(rng, 3, 20, 50, 0.2, 0.45),
        hu=hu,
        calc=calc,
        extras=extras,
    )


def _sample_densities(rng: np.random.Generator, age: float) -> dict[str, float]:
    """Each tissue's HU for this patient (grey–white contrast fades with age)."""
    wm = _u(rng, 22, 31)
    gm = wm + _u(rng, 7, 13) * (1.0 - 0.35 * age)
    return {
        "wm": wm,
        "gm": gm,
        "deep": gm - _u(rng, 0, 4),
        "csf": _u(rng, 0, 12),
        "blood_vessel": _u(rng, 42, 62),
        "fat": _u(rng, -115, -75),
        "muscle": _u(rng, 38, 58),
        "skin": _u(rng, 20, 55),
        "subcut": _u(rng, -90, 5),
        "cortical": _u(rng, 1200, 2000),
        "diploe": _u(rng, 350, 900),
        "floor": _u(rng, 300, 900),
        "dense": _u(rng, 1300, 2200),
        "vitreous": _u(rng, 2, 15),
        "lens": _u(rng, 80, 125),
        "cerebellum": wm + _u(rng, 2, 7),
        "brainstem": wm + _u(rng, 0, 6),
        "dura": _u(rng, 42, 62),
    }


def _sample_calcifications(
    rng: np.random.Generator, age: float, child: bool
) -> dict[str, tuple[float, float, float, float, float]]:
    """Physiological calcifications: classic hemorrhage mimics, independent of the label (adults only)."""
    calc: dict[str, tuple[float, float, float, float, float]] = {}
    adult = 0.0 if child else 1.0
    if rng.random() < adult * (0.45 + 0.4 * age):
        calc["pineal"] = (_u(rng, -1, 1), 0.27, _u(rng, 68, 73), _u(rng, 1.2, 3.5), _u(rng, 90, 450))
    for side in (-1, 1):
        if rng.random() < adult * (0.35 + 0.5 * age):
            calc[f"choroid{side}"] = (side, 0.0, 0.0, _u(rng, 1.0, 3.0), _u(rng, 80, 350))
        if rng.random() < adult * 0.12 * (0.5 + age):
            calc[f"bg{side}"] = (side, 0.0, 0.0, _u(rng, 1.0, 3.0), _u(rng, 70, 220))
    if rng.random() < adult * (0.1 + 0.35 * age):
        calc["falx"] = (0.0, _u(rng, -0.6, 0.5), _u(rng, 85, 125), _u(rng, 4, 12), _u(rng, 150, 700))
    return calc


def _sample_extras(rng: np.random.Generator, age: float, child: bool) -> dict[str, float]:
    """Variants and incidental findings: white-matter disease, sinuses and their septa, old infarcts, cysts."""
    return {
        "leuko": float(rng.random() < 0.7 * age**2) * _u(rng, 3, 9),
        "lacunes": float(rng.integers(0, 4)) if rng.random() < 0.5 * age else 0.0,
        "pneumatisation": _u(rng, 0.3, 1.0),
        # sphenoid sinus: the intersinus septum is often off the midline and oblique; 0–2 accessory septa
        "sph_septum_x": _u(rng, -7.0, 7.0),
        "sph_septum_tilt": _u(rng, -0.5, 0.5),
        "sph_septa": float(rng.integers(0, 3)),
        "sph_septa_angle": _u(rng, 0.0, np.pi),
        "frontal_sinus": _u(rng, 0.0, 1.0) if not child else 0.0,
        "sinus_fluid": float(rng.random() < 0.12),
        "old_infarct": float(rng.random() < 0.05 + 0.1 * age),
        "infarct_theta": _u(rng, -np.pi, np.pi),
        "falx_shift": _u(rng, -2.0, 2.0),
        "cisterna_magna": _u(rng, 0.6, 1.6) * (2.0 if rng.random() < 0.05 else 1.0),
        "arachnoid_cyst": float(rng.random() < 0.03),
        "cyst_theta": _u(rng, -np.pi, np.pi),
        "pv_hu": _u(rng, 60, 400),
    }


def _random_waves(
    rng: np.random.Generator, n: int, lam_lo: float, lam_hi: float, amp_lo: float, amp_hi: float
) -> list[tuple[float, float, float, float, float]]:
    """``n`` plane waves (kx, ky, kz, phase, amplitude) in random directions, wavelengths in mm."""
    out = []
    for _ in range(n):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction) + 1e-9
        k = 2 * np.pi / _u(rng, lam_lo, lam_hi)
        kx, ky, kz = (direction * k).tolist()
        out.append((kx, ky, kz, _u(rng, 0, 2 * np.pi), _u(rng, amp_lo, amp_hi)))
    return out


def _random_sulcal_waves(rng: np.random.Generator) -> list[tuple[float, float, float, float, float]]:
    """Six waves over (angle, radius, z) that fold the cortex into gyri and sulci."""
    out = []
    for _ in range(6):
        kt = 2 * np.pi / _u(rng, 12, 30) * rng.choice([-1, 1])
        kr = 2 * np.pi / _u(rng, 10, 30) * rng.choice([-1, 1])
        kz = 2 * np.pi / _u(rng, 18, 50) * rng.choice([-1, 1])
        out.append((float(kt), float(kr), float(kz), _u(rng, 0, 2 * np.pi), _u(rng, 0.5, 1.0)))
    return out


@dataclass
class Pose:
    """Where the head lies in the scanner and how the slice plane cuts it."""

    fov: float  # reconstructed field of view, mm (square)
    cx: float  # head centre offset in the image, mm
    cy: float
    rot: float  # in-plane rotation, radians
    pitch: float  # gantry/head tilt about the left–right axis (Z grows anteriorly if > 0), radians
    roll: float  # head roll about the AP axis, radians


def sample_pose(rng: np.random.Generator, head: Head) -> Pose:
    """Random pose: scale (field of view), translation, rotation, gantry tilt and roll."""
    width = 2 * max(head.A, head.B_post)
    fov = width * _u(rng, 1.15, 1.75)
    if rng.random() < 0.05:  # tight field of view that cuts the head
        fov = width * _u(rng, 0.9, 1.05)
    rot = rng.normal(0.0, 0.09)
    if rng.random() < 0.1:
        rot = _u(rng, -0.45, 0.45)
    return Pose(
        fov=fov,
        cx=rng.normal(0.0, 0.05) * fov,
        cy=rng.normal(0.0, 0.05) * fov,
        rot=float(rot),
        pitch=float(np.deg2rad(rng.normal(0.0, 8.0))),
        roll=float(np.deg2rad(rng.normal(0.0, 2.5))),
    )


@dataclass
class Slice:
    """The noise-free rendering of one plane through a head, with the maps lesions need."""

    hu: np.ndarray  # float32 [H, W]
    X: np.ndarray  # head-frame mm, float32 [H, W]
    Y: np.ndarray
    Z: np.ndarray
    ys: np.ndarray  # scanner-frame y (mm, gravity direction)
    skin: np.ndarray  # bool: inside the head's outline
    cavity: np.ndarray  # bool: intracranial (inside the inner table, above the skull-base floor)
    brain: np.ndarray  # bool: parenchyma (cerebrum, cerebellum, brainstem)
    csf_space: np.ndarray  # bool: sulci, fissures, cisterns, convexity CSF (where SAH goes)
    ventricles: np.ndarray  # bool
    mimic: np.ndarray  # bool: dense non-blood findings inside the cavity (calcification, bone, dura, sinus)
    depth_inner: np.ndarray  # mm below the inner table (≈ distance, >0 inside)
    depth_brain: np.ndarray  # mm below the brain surface
    theta: np.ndarray  # polar angle in the head frame, radians
    tissue: np.ndarray  # float32 local parenchyma HU (without CSF), for lesion contrast
    fissure: np.ndarray  # bool: interhemispheric fissure
    pixel_mm: float


def plane_coords(size: int, pose: Pose, z: float) -> tuple[np.ndarray, ...]:
    """Head-frame coordinates (mm) of every pixel centre of a ``size``² slice at height ``z``."""
    ps = pose.fov / size
    c = (np.arange(size, dtype=np.float32) + 0.5 - size / 2.0) * np.float32(ps)
    xs, ys = np.meshgrid(c, c)
    dx, dy = xs - np.float32(pose.cx), ys - np.float32(pose.cy)
    cr, sr = np.float32(np.cos(pose.rot)), np.float32(np.sin(pose.rot))
    X = cr * dx + sr * dy
    Y = -sr * dx + cr * dy
    Z = np.float32(z) - np.float32(np.tan(pose.pitch)) * Y + np.float32(np.tan(pose.roll)) * X
    return X, Y, Z, ys


def _ell(X, Y, Z, cx, cy, cz, a, b, c, rot=0.0, shear=0.0):
    """Normalised squared radius of a Z-rotated ellipsoid (inside where < 1).

    ``shear`` moves the centre along Y by ``shear`` mm per mm of Z (a forward/backward lean).
    """
    dx = X - np.float32(cx)
    dy = Y - np.float32(cy + 0.0) - np.float32(shear) * (Z - np.float32(cz))
    if rot:
        cr, sr = np.float32(np.cos(rot)), np.float32(np.sin(rot))
        dx, dy = cr * dx + sr * dy, -sr * dx + cr * dy
    return (dx / np.float32(a)) ** 2 + (dy / np.float32(b)) ** 2 + ((Z - np.float32(cz)) / np.float32(c)) ** 2


class _Grid:
    """Pixel-centre head coordinates of one slice plus the pose, to evaluate solids quickly.

    :meth:`ell` only evaluates an ellipsoid inside its bounding window on the image and skips it
    entirely when the plane misses it, which keeps a slice well under 50 ms.
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray, pose: Pose):
        self.X, self.Y, self.Z = X, Y, Z
        self.pose = pose
        self.n = X.shape[0]
        self.ps = pose.fov / self.n
        self.cr, self.sr = float(np.cos(pose.rot)), float(np.sin(pose.rot))

    def _window(self, cx: float, cy: float, radius: float) -> tuple[slice, slice] | None:
        # head frame → scanner frame → pixel index
        xs = self.cr * cx - self.sr * cy + self.pose.cx
        ys = self.sr * cx + self.cr * cy + self.pose.cy
        j = xs / self.ps + self.n / 2 - 0.5
        i = ys / self.ps + self.n / 2 - 0.5
        r = radius / self.ps + 2
        j0, j1 = max(0, int(j - r)), min(self.n, int(j + r) + 2)
        i0, i1 = max(0, int(i - r)), min(self.n, int(i + r) + 2)
        if j0 >= j1 or i0 >= i1:
            return None
        return slice(i0, i1), slice(j0, j1)

    def _sub_q(self, cx, cy, cz, a, b, c, rot, shear):
        radius = max(a, b) + abs(shear) * c
        win = self._window(cx, cy, radius)
        if win is None:
            return None, None
        Z = self.Z[win]
        if Z.min() > cz + c or Z.max() < cz - c:
            return None, None
        return win, _ell(self.X[win], self.Y[win], Z, cx, cy, cz, a, b, c, rot, shear)

    def ell(self, cx, cy, cz, a, b, c, rot=0.0, shear=0.0, thr=1.0) -> np.ndarray:
        """Bool mask of the ellipsoid's cross-section (normalised radius² < ``thr``)."""
        out = np.zeros(self.X.shape, bool)
        win, q = self._sub_q(cx, cy, cz, a, b, c, rot, shear)
        if win is not None:
            out[win] = q < thr
        return out

    def q(self, cx, cy, cz, a, b, c, rot=0.0, shear=0.0) -> np.ndarray:
        """Normalised radius² of the ellipsoid (inf where it was not evaluated)."""
        out = np.full(self.X.shape, np.inf, np.float32)
        win, q = self._sub_q(cx, cy, cz, a, b, c, rot, shear)
        if win is not None:
            out[win] = q
        return out


def _waves(X, Y, Z, waves) -> np.ndarray:
    out = np.zeros_like(X)
    for kx, ky, kz, phi, amp in waves:
        out += np.float32(amp) * np.sin(
            np.float32(kx) * X + np.float32(ky) * Y + np.float32(kz) * Z + np.float32(phi)
        )
    return out


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth random field (unit-ish SD) with features about ``cell`` pixels across."""
    h, w = shape
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


class _Painter:
    """Paints values into an HU image in order (later paints cover earlier ones)."""

    def __init__(self, shape: tuple[int, int]):
        self.hu = np.full(shape, -1000.0, np.float32)

    def paint(self, mask: np.ndarray, value) -> None:
        if np.ndim(value) == 0:
            self.hu[mask] = value
        else:
            self.hu[mask] = value[mask]


@dataclass
class _Shells:
    """The nested head shells of one slice: ``rho(d) < 1`` inside the shell ``d`` mm below the skin.

    The shells are the skin ellipsoid shrunk by ``d``, narrowed low down (temporal fossae, occiput),
    with a narrower forehead (``egg``), a dome above the widest section and outline harmonics.
    """

    X: np.ndarray
    Y: np.ndarray
    head: Head
    theta: np.ndarray  # polar angle in the head frame, radians
    harm: np.ndarray
    egg: np.ndarray
    dome: np.ndarray
    a_base: np.ndarray
    b_ant_base: np.float32
    b_post_base: np.ndarray
    ant: np.ndarray

    @classmethod
    def of(cls, head: Head, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> _Shells:
        f32 = np.float32
        theta = np.arctan2(Y / f32(head.B_post), X / f32(head.A))
        harm = np.ones_like(X)
        for k, amp, ph in head.harm:
            harm += f32(amp) * np.cos(f32(k) * theta + f32(ph))
        lowz = np.clip((head.zc - Z) / head.zc, 0.0, 1.5)
        a_scale = 1.0 - 0.12 * lowz**2
        b_post_scale = 1.0 - 0.28 * lowz**2
        return cls(
            X=X,
            Y=Y,
            head=head,
            theta=theta,
            harm=harm,
            egg=1.0 + f32(head.egg) * np.clip(-Y / head.B_ant, 0, 1) ** 2,
            dome=np.maximum(Z - f32(head.zc), 0),
            a_base=f32(head.A) * a_scale,
            b_ant_base=f32(head.B_ant),
            b_post_base=f32(head.B_post) * b_post_scale,
            ant=Y < 0,
        )

    def axes(self, d: float):
        a = self.a_base - np.float32(d)
        b = np.where(self.ant, self.b_ant_base - np.float32(d), self.b_post_base - np.float32(d))
        c = np.float32(self.head.height - self.head.zc - d)
        return a, b, c

    def rho(self, d: float) -> np.ndarray:
        a, b, c = self.axes(d)
        return np.sqrt((self.X * self.egg / a) ** 2 + (self.Y / b) ** 2 + (self.dome / c) ** 2) * self.harm

    def depth_of(self, d: float, r: np.ndarray) -> np.ndarray:
        """mm inside the shell ``d`` (r = ``rho(d)``), to first order: (1 - rho) / |grad rho|."""
        a, b, c = self.axes(d)
        gr = np.sqrt((self.X / a**2) ** 2 + (self.Y / b**2) ** 2 + (self.dome / c**2) ** 2) / np.maximum(
            r, 1e-3
        )
        return (1.0 - r) / np.maximum(gr, 1e-4)


@dataclass
class _Floor:
    """The skull-base floor height map ``F`` (mm) and the fossa coordinates it is built on."""

    Ai: float  # half-width of the cranial cavity
    Bi: float  # posterior half-length of the cranial cavity
    u: np.ndarray  # X / Ai
    v: np.ndarray  # Y / Bi
    au: np.ndarray  # |u|
    v_sw: np.ndarray  # sphenoid wing: anterior / middle fossa boundary
    F_ant: np.ndarray
    F_mid: np.ndarray
    F: np.ndarray  # float32 floor height
    posterior: np.ndarray  # bool: behind the petrous ridge
    t_floor: float  # thickness of the floor bone


def _skull_base_floor(head: Head, X: np.ndarray, Y: np.ndarray, hz: float) -> _Floor:
    """Anterior, middle and posterior fossae as one height map under the cranial cavity."""
    f32 = np.float32
    d_inner = head.inner_offset
    Ai = head.A - d_inner
    Bi = head.B_post - d_inner
    u = X / f32(Ai)
    v = Y / f32(Bi)
    au = np.abs(u)
    v_sw = -0.12 - 0.30 * au  # sphenoid wing: anterior / middle fossa boundary
    v_pr = 0.0 + 0.60 * au  # petrous ridge: middle / posterior fossa boundary
    bumps = 1.5 * np.sin(0.31 * X + 0.8) * np.cos(0.27 * Y + 0.3) + 1.0 * np.sin(0.17 * Y - 0.45 * X)
    # Curved floors (domed orbital roofs, bowl-shaped middle fossae): a flat floor cut by the
    # plane would give large unrealistic sheets of bone.
    F_ant = hz * (40 + 12 * np.exp(-(((au - 0.36) / 0.24) ** 2) - ((v + 0.55) / 0.32) ** 2)) + bumps
    F_mid = (
        hz
        * np.minimum(
            20
            + 14 * ((au - 0.6) / 0.35) ** 2
            + 16 * ((v + 0.05) / 0.35) ** 2
            + 22 * np.clip(1 - au / 0.3, 0, 1) ** 2,
            46,
        )
        + bumps
    )
    r2p = (u / 0.85) ** 2 + ((v - 0.2) / 0.85) ** 2
    F_post = hz * (-6 + 36 * np.minimum(r2p, 1.3))
    anterior = v < v_sw
    posterior = v > v_pr
    F = np.where(anterior, F_ant, np.where(posterior, F_post, F_mid)).astype(np.float32)
    return _Floor(
        Ai=Ai,
        Bi=Bi,
        u=u,
        v=v,
        au=au,
        v_sw=v_sw,
        F_ant=F_ant,
        F_mid=F_mid,
        F=F,
        posterior=posterior,
        t_floor=2.0 * hz + 0.4 * head.t_diploe,
    )


def _outline_extras(g: _Grid, head: Head, hz: float) -> tuple[np.ndarray, np.ndarray]:
    """(nose, ears): they extend the head's outline at the lower levels."""
    nose = g.ell(0, -head.B_ant - 2, 18 * hz, 11, 16, 22 * hz)
    ear_x = head.A * (1.0 - 0.12 * ((head.zc - 32 * hz) / head.zc) ** 2) + 1.0
    ears = g.ell(ear_x, 0.05 * head.B_post, 32 * hz, 4, 14, 16 * hz) | g.ell(
        -ear_x, 0.05 * head.B_post, 32 * hz, 4, 14, 16 * hz
    )
    return nose, ears


def _paint_scalp(p, head, X, Y, Z, hz, shells: _Shells, in_skin, ears, H) -> None:
    """Skin, subcutaneous fibro-fatty layer, galea; temporalis laterally; the ears."""
    p.paint(in_skin, H["skin"])
    p.paint(in_skin & (shells.rho(1.3) < 1), H["subcut"])
    p.paint(in_skin & (shells.rho(max(head.scalp - 1.0, 1.5)) < 1), H["muscle"] - 8)
    temporal_band = (np.abs(X) > 0.5 * head.A) & (25 * hz < Z) & (95 * hz > Z) & (0.3 * head.B_post > Y)
    scalp_muscle = temporal_band & (shells.rho(max(head.scalp - head.temporalis, 0.8)) < 1)
    p.paint(scalp_muscle, H["muscle"])
    p.paint(ears, H["skin"] + 10)


def _paint_deep_extracranial(p, g, rng, head, X, Y, Z, hz, deep, nose, in_skin, H) -> bool:
    """Face and neck below the skull-base floor, with fat planes; True when the plane is low
    enough to cut the face and skull-base solids."""
    p.paint(deep, H["muscle"])
    # fat planes between the muscles: thin sheets (the zero set of a random field), not blobs
    fat_planes = deep & (np.abs(smooth_noise(rng, X.shape, max(3.0, 16.0 / g.ps))) < 0.05)
    p.paint(fat_planes, H["fat"])
    low_plane = float(Z.min()) < 62 * hz  # face and skull-base solids all lie below ~60 mm
    if low_plane:
        _paint_face(p, g, head, hz, deep | nose, in_skin)
    return low_plane


def _paint_calvarium(
    p, g, head, X, Y, Z, hz, shells, floor: _Floor, r_skull, cavity_shell, bone_zone, cavity, low_plane, H
):
    """Outer table, diploe and inner table; the thin floor bone; sutures, frontal sinus, skull base."""
    f32 = np.float32
    r_diploe_out = shells.rho(head.scalp + head.t_outer)
    r_diploe_in = shells.rho(head.inner_offset - head.t_inner)
    F = floor.F
    p.paint(bone_zone, H["cortical"])
    p.paint(bone_zone & (r_diploe_out < 1) & (r_diploe_in >= 1), H["diploe"])
    floor_bone = cavity_shell & (Z <= F) & (F - floor.t_floor < Z)
    p.paint(floor_bone, f32(H["floor"]))
    _paint_sutures(p, g, head, X, Y, Z, hz, bone_zone, H)
    _paint_frontal_sinus(p, g, head, X, Y, Z, hz, bone_zone | cavity)
    if low_plane:
        f = floor
        _paint_skull_base_bones(
            p, g, head, X, Y, Z, hz, f.u, f.v, f.au, f.v_sw, f.F_ant, f.F_mid, r_skull < 1
        )


@dataclass
class _Brain:
    """The parenchyma of one slice and the maps lesions and later paints need."""

    brain: np.ndarray  # bool
    csf_space: np.ndarray  # bool
    depth_brain: np.ndarray  # mm below the brain surface
    tissue: np.ndarray  # float32 parenchyma HU
    fissure: np.ndarray  # bool
    dxm: np.ndarray  # mm from the falx
    xf: np.ndarray  # falx position (X, mm)
    T: np.ndarray  # tentorium height (mm)


def _paint_brain(p, g, rng, head, X, Y, Z, hz, floor: _Floor, cavity, depth_inner, theta, H) -> _Brain:
    """Cerebrum with gyri and sulci, cerebellum with folia, old lesions; CSF in the sulci."""
    f32 = np.float32
    F, v, au, posterior = floor.F, floor.v, floor.au, floor.posterior
    depth_brain = np.minimum(depth_inner - f32(head.sas), Z - F - f32(0.5 * head.sas))

    # tentorium height: highest at the incisura, lower laterally/posteriorly
    T = hz * (30 + 26 * (1 - au**2) * (1 - 0.45 * np.clip((v - 0.3) / 0.6, 0, 1)))
    infratentorial = posterior & (Z < T)
    supratentorial = cavity & ~infratentorial

    xf = f32(head.extras["falx_shift"]) * np.clip(1 - np.abs(v), 0, 1)
    dxm = np.abs(X - xf)
    cc_region = (v > -0.42) & (v < 0.5) & (99 * hz > Z)
    fissure_w = 0.6 + 1.2 * head.sulc
    fissure = supratentorial & (dxm < fissure_w) & ~cc_region
    depth_brain = np.where(supratentorial & ~cc_region, np.minimum(depth_brain, dxm - fissure_w), depth_brain)
    # the brainstem/cerebellum are separated from the tentorium by a thin CSF layer too
    depth_brain = np.where(infratentorial, np.minimum(depth_brain, (T - Z) * 3.0 - 0.3), depth_brain)

    brain = cavity & (depth_brain > 0)
    # Gyri: sulci are the zero set of a random field whose waves run mostly across the
    # surface (so sulci run inward, meandering and branching), deeper in some places.
    s_arc = theta * f32(70.0)
    field_ = np.zeros_like(X)
    for kt, kr, kz, phi, amp in head.phase:
        field_ += f32(amp) * np.sin(f32(kt) * s_arc + f32(kr) * depth_brain + f32(kz) * Z + f32(phi))
    sulc_depth = (
        (f32(13) + 6 * _waves(X, Y, Z, head.depth_phase)) * f32(0.8 + 0.3 * head.sulc) * f32(np.sqrt(hz))
    )
    taper = np.clip(1.0 - depth_brain / np.maximum(sulc_depth, 1.0), 0, 1)
    af = np.abs(field_)
    w_s = f32(0.10 + 0.12 * head.sulc)
    sulcus = (af < w_s * (0.35 + taper)) & (depth_brain < sulc_depth)
    grey = (depth_brain < 2.8) | ((af < 0.55 + 0.25 * taper) & (depth_brain < sulc_depth + 2.5))
    texture = smooth_noise(rng, X.shape, max(3.0, 6.0 / g.ps)) * f32(1.2)
    tissue = np.where(grey, f32(H["gm"]), f32(H["wm"])) + texture

    # cerebellum: folia as fine lamellae roughly parallel to its surface
    if infratentorial.any():
        Ai, Bi = floor.Ai, floor.Bi
        cb_r = np.sqrt((np.abs(X) - f32(0.36 * Ai)) ** 2 + (Y - f32(0.5 * Bi)) ** 2 + (Z - f32(18 * hz)) ** 2)
        folia = np.cos(cb_r * f32(1.3) + field_ * 1.2)
        cb_tissue = f32(H["cerebellum"]) + f32(3.0) * folia + texture
        tissue = np.where(infratentorial, cb_tissue, tissue)
        cb_sulcus = infratentorial & (folia > 0.985 - 0.03 * head.sulc) & (depth_brain < 15)
        sulcus = np.where(infratentorial, cb_sulcus, sulcus & supratentorial)

    p.paint(brain, tissue)
    _paint_old_lesions(p, g, head, X, Y, Z, hz, theta, brain, depth_brain, H)
    csf_space = cavity & ~brain
    p.paint(brain & sulcus, H["csf"])
    csf_space |= brain & sulcus
    return _Brain(
        brain=brain,
        csf_space=csf_space,
        depth_brain=depth_brain,
        tissue=tissue,
        fissure=fissure,
        dxm=dxm,
        xf=xf,
        T=T,
    )


def _paint_dura_and_sinuses(
    p, head, X, Z, hz, floor: _Floor, cavity, depth_inner, b: _Brain, H
) -> np.ndarray:
    """Falx, tentorium and the superior sagittal and transverse sinuses: normal dense structures
    (returned as a mask of mimics)."""
    f32 = np.float32
    v, au, T = floor.v, floor.au, b.T
    falx = b.fissure & (b.dxm < 0.5)
    tent = cavity & (np.abs(Z - T) < 0.45) & (v > 0.0) & (au < 0.95)
    sss = (
        cavity
        & (np.abs(X - b.xf) < 4.5 - 0.6 * depth_inner)
        & (depth_inner < 6)
        & (45 * hz < Z)
        & (np.abs(v) > 0.45)
    )
    transverse = cavity & (depth_inner < 4.5) & (np.abs(Z - (T - 1.5)) < 3.0) & (v > 0.35) & (au > 0.25)
    p.paint(falx, H["dura"])
    p.paint(tent, np.maximum(p.hu, f32(H["dura"] - 8)))
    p.paint(sss | transverse, H["blood_vessel"])
    return falx | tent | sss | transverse


def _paint_bone_partial_volume(p, head, Z, hz, F, cavity, depth_inner) -> np.ndarray:
    """Partial volume of bone in a thick slice: the orbital roofs and middle-fossa floor just below
    the plane, and the obliquely cut calvarium near the vertex, brighten the adjacent brain
    (returned as a mask of mimics)."""
    pv_floor = np.where(15 * hz < F, np.clip(1 - (Z - F) / (3.0 * hz), 0, 1), 0)
    w_vertex = 0.8 + 5.0 * np.clip((Z - 105 * hz) / (25 * hz), 0, 1)
    pv_vertex = np.clip(1 - depth_inner / w_vertex, 0, 1)
    pv_amount = np.maximum(pv_floor, pv_vertex) ** 2 * np.float32(head.extras["pv_hu"])
    pv = cavity & (pv_amount > 8)
    p.paint(pv, p.hu + pv_amount)
    return pv


def render_anatomy(head: Head, pose: Pose, z: float, size: int, rng: np.random.Generator) -> Slice:
    """Render the plane at height ``z`` (mm) through ``head`` in ``pose`` as noise-free HU.

    Painted outside in, each layer over the last: scalp, face and neck, calvarium, cranial cavity
    and brain, deep structures, dura and sinuses, calcifications, bone partial volume.
    ``rng`` only drives small per-slice texture (fat planes, parenchymal heterogeneity), not anatomy.
    """
    X, Y, Z, ys = plane_coords(size, pose, z)
    g = _Grid(X, Y, Z, pose)
    hz = head.height / STANDARD_HEIGHT
    H = head.hu
    p = _Painter(X.shape)

    shells = _Shells.of(head, X, Y, Z)
    r_skin = shells.rho(0.0)
    r_skull = shells.rho(head.scalp)
    r_inner = shells.rho(head.inner_offset)
    floor = _skull_base_floor(head, X, Y, hz)
    nose, ears = _outline_extras(g, head, hz)
    in_skin = (r_skin < 1) | nose | ears
    cavity_shell = r_inner < 1
    cavity = cavity_shell & (Z > floor.F)
    skull_shell = (r_skull < 1) & ~cavity_shell
    above_base = floor.F - floor.t_floor < Z
    deep = (r_skull < 1) & ~above_base  # face and neck below the skull-base floor

    _paint_scalp(p, head, X, Y, Z, hz, shells, in_skin, ears, H)
    low_plane = _paint_deep_extracranial(p, g, rng, head, X, Y, Z, hz, deep, nose, in_skin, H)
    bone_zone = skull_shell & above_base
    _paint_calvarium(
        p, g, head, X, Y, Z, hz, shells, floor, r_skull, cavity_shell, bone_zone, cavity, low_plane, H
    )

    # The cranial cavity: CSF everywhere, then parenchyma.
    cavity = cavity & (p.hu < 300)  # the petrous/clinoid bones painted above stay bone
    p.paint(cavity, H["csf"])
    depth_inner = shells.depth_of(head.inner_offset, r_inner)
    b = _paint_brain(p, g, rng, head, X, Y, Z, hz, floor, cavity, depth_inner, shells.theta, H)
    csf_space = b.csf_space

    ventricles = np.zeros_like(b.brain)
    mimic = np.zeros_like(b.brain)
    deep_struct = _paint_deep(
        p, g, head, X, Y, Z, hz, floor.Ai, floor.Bi, cavity, H, ventricles, csf_space, b.tissue, mimic
    )
    brain = b.brain | deep_struct
    brain &= ~(ventricles | csf_space)

    mimic |= _paint_dura_and_sinuses(p, head, X, Z, hz, floor, cavity, depth_inner, b, H)
    _paint_calcifications(p, g, head, X, Y, Z, hz, floor.Ai, floor.Bi, cavity, mimic)
    # bone at or above ~120 HU inside the cavity (clinoids, petrous apex) is a mimic
    mimic |= cavity & (p.hu > 120)
    mimic |= _paint_bone_partial_volume(p, head, Z, hz, floor.F, cavity, depth_inner)

    return Slice(
        hu=p.hu,
        X=X,
        Y=Y,
        Z=Z,
        ys=ys,
        skin=in_skin,
        cavity=cavity,
        brain=brain & ~mimic,
        csf_space=csf_space & ~ventricles,
        ventricles=ventricles,
        mimic=mimic,
        depth_inner=depth_inner,
        depth_brain=b.depth_brain,
        theta=shells.theta,
        tissue=b.tissue,
        fissure=b.fissure,
        pixel_mm=pose.fov / size,
    )


def _paint_sutures(p, g, head, X, Y, Z, hz, bone, H):
    """Coronal, sagittal and lambdoid sutures: thin zig-zag gaps through the calvarium."""
    zig = np.sin(X * 0.9) * 1.2 + np.sin(Z * 0.7)
    coronal = np.abs(Y + 0.28 * head.B_ant - 0.25 * (Z - 60 * hz) + zig) < 0.6
    lambdoid = np.abs(Y - 0.62 * head.B_post + 0.35 * (Z - 60 * hz) + zig) < 0.6
    sagittal = (np.abs(X + np.sin(Y * 0.8)) < 0.6) & (95 * hz < Z)
    width = 0.6 if head.age > 0.15 else 1.5
    if width > 1:
        coronal = np.abs(Y + 0.28 * head.B_ant - 0.25 * (Z - 60 * hz) + zig) < width
    p.paint(bone & (coronal | lambdoid | sagittal), H["skin"] + 150)


def _paint_frontal_sinus(p, g, head, X, Y, Z, hz, region):
    size = head.extras["frontal_sinus"]
    if size < 0.15:
        return
    y0 = -head.B_ant + head.scalp + 5
    outer = g.ell(0, y0 + 2, 60 * hz, 16 * size + 4, 8 * size + 3, 14 * hz * size + 4)
    air = g.ell(0, y0 + 2, 60 * hz, 16 * size, 8 * size, 14 * hz * size)
    p.paint(region & outer, head.hu["cortical"])
    p.paint(region & air & (np.abs(X - 1.5) > 0.7), -950.0)


def _honeycomb(X, Y, Z, cell: float, wall: float) -> np.ndarray:
    """Air cells separated by thin bony septa (True where air)."""
    k = np.float32(2 * np.pi / cell)
    s = (
        np.sin(k * X + 0.7 * np.sin(0.3 * Z))
        * np.sin(k * Y + 0.5 * np.cos(0.4 * X))
        * np.sin(k * 0.7 * Z + 0.3)
    )
    return np.abs(s) > wall


def _paint_skull_base_bones(p, g, head, X, Y, Z, hz, u, v, au, v_sw, F_ant, F_mid, within):
    H = head.hu
    Ai = head.A - head.inner_offset
    Bi = head.B_post - head.inner_offset
    # greater wings of the sphenoid: a curved bony wall between anterior and middle fossae
    wing = within & (np.abs(v - v_sw) * Bi < 1.4) & (F_ant + 3 * hz > Z) & (F_mid - 6 * hz < Z) & (au < 0.95)
    p.paint(wing, H["cortical"])
    for side in (-1.0, 1.0):
        ang = -side * np.deg2rad(50)
        # petrous pyramid: dense, running anteromedial → posterolateral
        cxp, cyp = side * 0.48 * Ai, 0.26 * Bi
        petrous = g.ell(cxp, cyp, 30 * hz, 7.0, 25, 13 * hz, rot=ang)
        p.paint(within & petrous, H["dense"])
        # inner ear / internal auditory canal: small soft-tissue and air spots within
        iac = g.ell(side * 0.3 * Ai, 0.14 * Bi, 33 * hz, 5, 1.6, 2.0, rot=side * np.deg2rad(90))
        p.paint(within & iac, 20.0)
        # mastoid air cells, posterolateral to the petrous bone
        # (up to the petrous level, as in real scans), with the larger mastoid antrum medially
        mast = g.ell(side * 0.86 * Ai, 0.34 * Bi, 24 * hz, 12, 14, 16 * hz)
        pn = head.extras["pneumatisation"]
        p.paint(within & mast, H["cortical"] * 0.8)
        if pn > 0.35 and mast.any():
            air = mast & _honeycomb(X, Y, Z, 2.5 + 3.0 * pn, 0.35 - 0.2 * pn)
            p.paint(within & air, -900.0)
            antrum = g.ell(side * 0.74 * Ai, 0.26 * Bi, 30 * hz, 3.0, 3.5, 3.0 * hz)
            p.paint(within & antrum, -900.0)
        # anterior clinoid processes
        clin = g.ell(side * 10, -0.17 * Bi, 50 * hz, 3, 6, 4 * hz)
        p.paint(within & clin, H["cortical"])
    # clivus: midline bone leaning back as it descends; dorsum sellae on top
    clivus = g.ell(0, 0.0 * Bi, 26 * hz, 10, 6.5, 22 * hz, shear=-0.45)
    p.paint(within & clivus & (48 * hz > Z), H["cortical"])
    # sella turcica: pituitary in a bony cup
    cup = g.ell(0, -0.1 * Bi, 44 * hz, 9, 8, 6 * hz)
    pit = g.ell(0, -0.1 * Bi, 46 * hz, 6, 5, 4.5 * hz)
    p.paint(within & cup, H["cortical"])
    p.paint(within & pit, H["gm"] + 5)


def _paint_face(p: _Painter, g: _Grid, head: Head, hz: float, deep: np.ndarray, in_skin: np.ndarray) -> None:
    """Orbits, paranasal sinuses, nasal cavity, nasopharynx and the upper neck."""
    f = _Face(p, g, head, hz, deep, in_skin, face=deep & (0.05 * head.B_ant > g.Y), yf=-head.B_ant)
    _paint_nose(f)
    for side in (-1.0, 1.0):
        _paint_maxillary_sinus(f, side)
        _paint_orbit(f, side)
        _paint_lateral_face_bones(f, side)
    _paint_ethmoid_and_sphenoid(f)
    _paint_upper_neck(f)


@dataclass
class _Face:
    """What the face and neck painters share: painter, grid, head, masks and the face's front ``yf`` (mm)."""

    p: _Painter
    g: _Grid
    head: Head
    hz: float
    deep: np.ndarray  # face and neck below the skull-base floor
    in_skin: np.ndarray
    face: np.ndarray  # the front of ``deep``
    yf: float


def _paint_nose(f: _Face) -> None:
    """Nasal cavity with its septum and turbinates, and the nasopharynx behind it."""
    p, g, hz, yf, in_skin, H = f.p, f.g, f.hz, f.yf, f.in_skin, f.head.hu
    X, Z = g.X, g.Z
    nasal = g.ell(0, yf + 30, 14 * hz, 13, 30, 18 * hz)
    p.paint(in_skin & nasal, -980.0)
    turb = nasal & (np.abs(np.abs(X) - 8) < 3.5) & (np.sin(Z * 0.5) > 0.0)
    p.paint(in_skin & turb, H["muscle"] - 10)
    p.paint(in_skin & nasal & (np.abs(X) < 0.9), H["cortical"] * 0.5)
    naso = g.ell(0, yf + 62, 8 * hz, 12, 7, 10 * hz)
    p.paint(f.deep & naso, -990.0)


def _paint_maxillary_sinus(f: _Face, side: float) -> None:
    """An air box with a thin bony wall (rounded, flat medial wall, not a ring); mucosa lines it, septa cross it."""
    p, g, hz, yf, face, head, H = f.p, f.g, f.hz, f.yf, f.face, f.head, f.head.hu
    X, Y = g.X, g.Y
    pn = head.extras["pneumatisation"]
    mq = _box_q(g, side * 27, yf + 38, 8 * hz, 14.5, 18.5, 15 * hz, rot=side * 0.25)
    wall = 1.2 + 0.8 * float(head.extras["frontal_sinus"])
    p.paint(face & (mq < 1), H["cortical"] * 0.7)
    inner = mq < (1 - wall / 14.5) ** 4
    p.paint(face & inner, -990.0)
    p.paint(face & inner & (mq > (1 - (wall + 1.5 * pn) / 14.5) ** 4), H["muscle"] - 15)
    p.paint(face & inner & (np.abs(np.sin(0.35 * (Y - yf) + side * 0.2 * X)) < 0.04), H["cortical"] * 0.5)
    if head.extras["sinus_fluid"] and side > 0:
        p.paint(face & inner & (yf + 44 < Y), 20.0)  # air–fluid level (supine: posterior)


def _paint_orbit(f: _Face, side: float) -> None:
    """A bony cone with fat, the globe and lens, the optic nerve and the rectus muscles."""
    p, g, hz, yf, face, in_skin, H = f.p, f.g, f.hz, f.yf, f.face, f.in_skin, f.head.hu
    X, Y = g.X, g.Y
    oc = (side * 31, yf + 24, 36 * hz)
    cone_bone = g.ell(oc[0], oc[1] + 8, oc[2], 19, 26, 16 * hz, rot=side * 0.3)
    cone_fat = g.ell(oc[0], oc[1] + 8, oc[2], 17, 24.5, 14 * hz, rot=side * 0.3)
    p.paint(face & cone_bone & (yf + 10 < Y), H["cortical"])
    p.paint((face | in_skin) & cone_fat, H["fat"])
    mus = cone_fat & (np.abs(np.abs(X - oc[0]) - 12.5) < 2.0) & (yf + 22 < Y)
    p.paint(mus, H["muscle"])
    nerve = g.ell(side * 24, yf + 38, oc[2], 2.2, 14, 2.5 * hz, rot=side * 0.35)
    p.paint(cone_fat & nerve, H["wm"] + 5)
    globe_c = (side * 32, yf + 13, 36 * hz)
    gq = g.q(*globe_c, 12, 11.5, 11.5 * hz)
    p.paint(in_skin & (gq < 1), H["muscle"] - 5)  # sclera
    p.paint(in_skin & (gq < 0.85), H["vitreous"])
    lens = g.ell(globe_c[0], globe_c[1] - 8.2, globe_c[2], 4.5, 1.9, 4.5 * hz)
    p.paint(in_skin & lens, H["lens"])


def _paint_lateral_face_bones(f: _Face, side: float) -> None:
    """Zygomatic arch, mandibular ramus and condyle, pterygoid plates: the bright lateral bones of low slices."""
    p, g, hz, yf, deep, head, H = f.p, f.g, f.hz, f.yf, f.deep, f.head, f.head.hu
    X, Y, Z = g.X, g.Y, g.Z
    # zygomatic arch, lateral to the temporal fossa
    zyg = (
        (np.abs(np.abs(X) - (head.A * 0.9)) < 2.5)
        & (yf + 20 < Y)
        & (0.1 * head.B_post > Y)
        & (np.abs(Z - 24 * hz) < 3 * hz)
    )
    p.paint(f.in_skin & zyg & deep, H["cortical"])
    # mandibular ramus (cortical shell, marrow) with the masseter outside and the
    # pterygoid plates medially
    ram = _box_q(g, side * head.A * 0.66, 0.02 * head.B_post - 14, -2 * hz, 4.5, 13, 16 * hz, rot=side * 0.25)
    p.paint(deep & (ram < 1), H["cortical"] * 0.9)
    p.paint(deep & (ram < 0.25), H["diploe"])
    pter = g.ell(side * 13, yf + 66, 6 * hz, 1.6, 9, 12 * hz, rot=side * 0.3)
    p.paint(deep & pter, H["cortical"] * 0.8)
    # mandibular condyle in front of the ear canal
    cond = g.ell(side * head.A * 0.72, 0.02 * head.B_post, 18 * hz, 5, 5, 10 * hz)
    p.paint(deep & cond, H["cortical"] * 0.8)


def _paint_ethmoid_and_sphenoid(f: _Face) -> None:
    """Ethmoid air cells between the orbits; the sphenoid sinus under the sella with its bony septa."""
    p, g, hz, yf, deep, head, H = f.p, f.g, f.hz, f.yf, f.deep, f.head, f.head.hu
    X, Y, Z = g.X, g.Y, g.Z
    f32 = np.float32
    pn = head.extras["pneumatisation"]
    eth = g.ell(0, yf + 32, 38 * hz, 11, 20, 14 * hz)
    p.paint(deep & eth, H["cortical"] * 0.6)
    if eth.any():
        p.paint(deep & eth & _honeycomb(X, Y, Z, 4.5, 0.3), -920.0)
    sph_w = g.ell(0, -0.22 * head.B_post, 33 * hz, 16, 14, 10 * hz)
    sph = g.ell(0, -0.22 * head.B_post, 33 * hz, 14 * pn + 2, 12.5 * pn + 1.5, 9 * hz * pn + 1)
    p.paint(deep & sph_w, H["cortical"])
    sph_air = deep & sph
    if sph_air.any():
        p.paint(sph_air, -960.0)
        # bony septa across the air: the intersinus septum and accessory ones (thin, ~1 mm)
        ys = -0.22 * head.B_post
        ex = head.extras
        septa = np.abs(X - f32(ex["sph_septum_x"]) - f32(ex["sph_septum_tilt"]) * (Y - f32(ys))) < 0.6
        for k in range(int(ex["sph_septa"])):
            ang = ex["sph_septa_angle"] + k * 1.1
            off = (k - 0.5) * 6.0
            septa |= np.abs((X - f32(off)) * f32(np.cos(ang)) + (Y - f32(ys)) * f32(np.sin(ang))) < 0.5
        p.paint(sph_air & septa, H["cortical"] * 0.7)


def _paint_upper_neck(f: _Face) -> None:
    """C1 ring and dens, the spinal canal and cord (continuing the foramen magnum)."""
    p, g, hz, deep, head, H = f.p, f.g, f.hz, f.deep, f.head, f.head.hu
    Z = g.Z
    Bi = head.B_post - head.inner_offset
    cy = 0.17 * Bi
    c1 = g.ell(0, cy, -12 * hz, 24, 22, 7 * hz)
    canal = g.ell(0, cy, -12 * hz, 13, 12, 20 * hz)
    cord = g.ell(0, cy, -12 * hz, 6.5, 5.5, 30 * hz)
    dens = g.ell(0, cy - 18, -10 * hz, 6, 6, 9 * hz)
    p.paint(deep & c1, H["cortical"])
    p.paint(deep & dens, H["cortical"] * 0.8)
    p.paint(deep & canal & (Z < 0), H["csf"])
    p.paint(deep & cord & (Z < 0), H["wm"] + 5)


def _box_q(g, cx, cy, cz, a, b, c, rot=0.0) -> np.ndarray:
    """Like :meth:`_Grid.q` but for a rounded box (fourth-power superellipsoid), inf outside."""
    out = np.full(g.X.shape, np.inf, np.float32)
    win = g._window(cx, cy, 1.42 * max(a, b))
    if win is None:
        return out
    Z = g.Z[win]
    if Z.min() > cz + c or Z.max() < cz - c:
        return out
    dx = g.X[win] - np.float32(cx)
    dy = g.Y[win] - np.float32(cy)
    if rot:
        cr, sr = np.float32(np.cos(rot)), np.float32(np.sin(rot))
        dx, dy = cr * dx + sr * dy, -sr * dx + cr * dy
    out[win] = (
        (dx / np.float32(a)) ** 4 + (dy / np.float32(b)) ** 4 + ((Z - np.float32(cz)) / np.float32(c)) ** 2
    )
    return out


def _paint_deep(p, g, head, X, Y, Z, hz, Ai, Bi, cavity, H, ventricles, csf_space, tissue_map, mimic):
    """Ventricles, cisterns, deep grey nuclei, brainstem. Updates the masks in place."""
    vs = head.vent
    sc = head.sulc
    deep_mask = np.zeros_like(cavity)

    def put(mask, value, kind):
        m = cavity & mask
        p.paint(m, value)
        if kind == "csf":
            csf_space[m] = True
            deep_mask[m] = False
        elif kind == "vent":
            ventricles[m] = True
            csf_space[m] = False
            deep_mask[m] = False
        else:
            deep_mask[m] = True
            csf_space[m] = False
            ventricles[m] = False
            tissue_map[m] = value if np.ndim(value) == 0 else value[m]

    # sylvian fissures with insular cortex
    for s in (-1.0, 1.0):
        ins = g.ell(s * 0.66 * Ai, -0.08 * Bi, 66 * hz, 6, 22, 14 * hz, rot=s * 0.15)
        put(ins, H["gm"], "tissue")
        syl = g.ell(s * 0.72 * Ai, -0.1 * Bi, 64 * hz, 1.0 + 1.4 * sc, 24, 12 * hz, rot=s * 0.18)
        put(syl, H["csf"], "csf")
        syl_stem = g.ell(s * 0.4 * Ai, -0.16 * Bi, 57 * hz, 18, 1.2 + 1.2 * sc, 4 * hz, rot=s * 0.1)
        put(syl_stem, H["csf"], "csf")
    # basal cisterns, brainstem
    put(g.ell(0, -0.07 * Bi, 58 * hz, 10 + 2 * sc, 9 + sc, 5 * hz), H["csf"], "csf")  # suprasellar
    put(g.ell(0, 0.1 * Bi, 60 * hz, 13 + 1.5 * sc, 12 + sc, 7 * hz), H["csf"], "csf")  # ambient
    put(g.ell(0, 0.1 * Bi, 60 * hz, 11, 10, 8 * hz), H["brainstem"], "tissue")  # midbrain
    put(g.ell(0, 0.0 * Bi, 58 * hz, 2 + 0.5 * sc, 3, 5 * hz), H["csf"], "csf")  # interpeduncular
    put(g.ell(0, 0.25 * Bi, 64 * hz, 9 + sc, 5 + sc, 6 * hz), H["csf"], "csf")  # quadrigeminal
    put(g.ell(0, 0.03 * Bi, 35 * hz, 13 + sc, 13, 15 * hz, shear=-0.25), H["csf"], "csf")  # prepontine
    put(g.ell(0, 0.12 * Bi, 36 * hz, 14.5, 12, 14 * hz, shear=-0.25), H["brainstem"], "tissue")  # pons
    put(g.ell(0, 0.17 * Bi, 10 * hz, 10, 9, 16 * hz), H["brainstem"], "tissue")  # medulla
    cm = head.extras["cisterna_magna"]
    put(g.ell(0, 0.7 * Bi, 12 * hz, 10 * cm, 9 * cm, 10 * hz), H["csf"], "csf")  # cisterna magna
    # vermis is tissue; the 4th ventricle sits between pons and vermis
    put(g.ell(0, 0.3 * Bi, 37 * hz, 6 * np.sqrt(vs), 3.5 * np.sqrt(vs), 11 * hz), H["csf"], "vent")
    put(g.ell(0, 0.0, 70 * hz, 1.2 * vs, 12, 10 * hz), H["csf"], "vent")  # 3rd ventricle
    # deep grey nuclei
    for s in (-1.0, 1.0):
        put(g.ell(s * 0.36 * Ai, -0.03 * Bi, 74 * hz, 7, 16, 10 * hz, rot=-s * 0.25), H["deep"], "tissue")
        put(g.ell(s * (8 + 2 * vs), 0.12 * Bi, 74 * hz, 9, 12, 10 * hz), H["deep"] - 1, "tissue")
        put(g.ell(s * (9 + 5 * vs), -0.25 * Bi, 78 * hz, 5, 9, 10 * hz), H["deep"], "tissue")  # caudate
    # lateral ventricles
    for s in (-1.0, 1.0):
        parts = [
            (s * (6 + 3 * vs), -0.27 * Bi, 80 * hz, 3.2 * vs + 1.0, 15, 8 * hz, -s * 0.45),  # frontal horn
            (s * (7 + 5 * vs), 0.0 * Bi, 90 * hz, 3.5 * vs + 0.5, 27, 6.5 * hz, -s * 0.12),  # body
            (s * (16 + 5 * vs), 0.33 * Bi, 82 * hz, 5 * vs, 10, 10 * hz, 0.0),  # atrium
            (s * (15 + 4 * vs), 0.5 * Bi, 77 * hz, 2.5 * vs, 11, 5 * hz, s * 0.35),  # occipital horn
            (s * 0.5 * Ai, -0.05 * Bi, 57 * hz, 1.5 * vs, 12, 4 * hz, s * 0.2),  # temporal horn
        ]
        for cx, cy, cz, a, b, c, rot in parts:
            put(g.ell(cx, cy, cz, a, b, c, rot=rot), H["csf"], "vent")
    # periventricular white-matter hypodensity (small-vessel disease) around the horns
    if head.extras["leuko"] > 0:
        for s in (-1.0, 1.0):
            cap = (
                (g.ell(s * (10 + 4 * vs), 0.0, 88 * hz, 10 + 3 * vs, 40, 16 * hz)) & ~ventricles & ~deep_mask
            )
            p.paint(cavity & cap & (p.hu > 15) & (p.hu < 45), p.hu - np.float32(head.extras["leuko"]))
    return deep_mask


def _paint_old_lesions(p, g, head, X, Y, Z, hz, theta, brain, depth_brain, H):
    """Non-hemorrhagic chronic findings: lacunes, an old cortical infarct, an arachnoid cyst."""
    if head.extras["old_infarct"]:
        t0 = head.extras["infarct_theta"]
        wedge = (
            brain
            & (np.abs(np.angle(np.exp(1j * (theta - t0)))) < 0.25)
            & (depth_brain < 22)
            & (np.abs(Z - 85 * hz) < 25 * hz)
        )
        p.paint(wedge, H["csf"] + 6)
    if head.extras["arachnoid_cyst"]:
        t0 = head.extras["cyst_theta"]
        cyst = (
            brain
            & (np.abs(np.angle(np.exp(1j * (theta - t0)))) < 0.3)
            & (depth_brain < 14)
            & (np.abs(Z - 60 * hz) < 18 * hz)
        )
        p.paint(cyst, H["csf"])
    n = int(head.extras["lacunes"])
    for i in range(n):
        s = -1.0 if i % 2 else 1.0
        lac = g.ell(s * (18 + 3 * i), -0.05 * head.B_post + 5 * i, (70 + 4 * i) * hz, 2, 2.5, 3 * hz)
        p.paint(brain & lac, H["csf"] + 4)


def _paint_calcifications(p, g, head, X, Y, Z, hz, Ai, Bi, cavity, mimic):
    vs = head.vent
    for name, (x, y, z, r, value) in head.calc.items():
        if name == "pineal":
            m = g.ell(x, y * Bi, z * hz, r, r, r * hz)
        elif name.startswith("choroid"):
            s = x
            m = g.ell(s * (16 + 5 * vs), 0.33 * Bi, 83 * hz, r, r * 1.4, r * 1.2 * hz)
        elif name.startswith("bg"):
            s = x
            m = g.ell(s * 0.3 * Ai, -0.03 * Bi, 73 * hz, r, r * 1.5, r * 1.5 * hz)
        else:  # falx plaque
            m = g.ell(0, y * Bi, z * hz, 1.0, r, r * 0.6 * hz)
        m &= cavity
        p.paint(m, value)
        mimic |= m
