"""The voxel grid of a scan, and volumes written on it: heatmap volumes that overlay the source in a viewer.

:class:`NiftiGrid` keeps a source volume's geometry (never a header's free text); :class:`NiftiSeries`
is a :class:`~brain_ct.volume.Series` that carries it. :func:`grid_from_series` builds the grid of a
DICOM series as ``dcm2niix`` would (tilted or unevenly spaced series resampled onto a regular grid,
:class:`SliceResampling`); :func:`heatmap_volume` puts per-slice heatmaps on a grid and
:func:`write_heatmap_nifti` writes them as a float32 NIfTI volume on the ORIGINAL voxel grid and
affine, so it opens aligned over the scan in 3D Slicer or ITK-SNAP. Reading NIfTI is :mod:`brain_ct.nifti`.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations

from brain_ct.errors import InvalidInputError
from brain_ct.sniff import NIFTI_SUFFIXES
from brain_ct.volume import Series

#: Most voxels of a heatmap or mask volume written on a scan's grid (a resampled tilted series may
#: have more slices than it was read with). What a volume may have when READ is the upload budget's
#: ``max_voxels`` / ``max_volume_bytes`` (:func:`brain_ct.limits.current`), the same budget as a DICOM scan.
MAX_VOXELS = 512 * 512 * 400

#: Millimetres per spatial unit a NIfTI header may name.
UNIT_MM = {"mm": 1.0, "unknown": 1.0, "meter": 1000.0, "micron": 0.001}


@dataclass(frozen=True)
class SliceResampling:
    """How the slices of a tilted or unevenly spaced DICOM series go onto a regular grid.

    As ``dcm2niix`` corrects gantry tilt: the grid's slices are planes along the slice normal
    through the first slice; each source slice is moved in its own plane by the offset of its
    (0020,0032) *Image Position Patient* from the first slice's (the shear a tilted gantry puts
    between slices), so a point of the patient keeps its row and column on every slice. Slices
    that are not evenly spaced along the normal are then interpolated linearly along it onto a
    regular step. Both are bilinear in (row, column, normal): a linear function of patient space
    comes out exactly (tested).

    Attributes:
        positions: float64 ``[n]`` source slice positions along the normal, mm from the first (increasing).
        shifts: float64 ``[n, 2]`` each source slice's in-plane move in pixels (rows, columns).
        step: the grid's slice spacing along the normal, mm.
        n_out: the grid's number of slices.
    """

    positions: np.ndarray
    shifts: np.ndarray
    step: float
    n_out: int

    @property
    def n_in(self) -> int:
        """Number of source slices."""
        return len(self.positions)

    def apply(self, planes: Sequence[np.ndarray]) -> np.ndarray:
        """Source planes (float32 ``[rows, columns]``, series order) → float32 ``[rows, columns, n_out]``.

        Outside a moved slice's field of view the grid holds 0.
        """
        moved = [
            _moved_bilinear(p, float(dy), float(dx)) for p, (dy, dx) in zip(planes, self.shifts, strict=True)
        ]
        rows, cols = moved[0].shape
        out = np.zeros((rows, cols, self.n_out), dtype=np.float32)
        for m in range(self.n_out):
            t = m * self.step
            k = int(np.clip(np.searchsorted(self.positions, t, side="right") - 1, 0, max(self.n_in - 2, 0)))
            if self.n_in == 1:
                out[:, :, m] = moved[0]
                continue
            w = float(
                np.clip((t - self.positions[k]) / (self.positions[k + 1] - self.positions[k]), 0.0, 1.0)
            )
            out[:, :, m] = (1.0 - w) * moved[k] + w * moved[k + 1]
        return out


def _moved_bilinear(plane: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``plane`` moved by (dy, dx) pixels: ``out[y, x] = plane[y - dy, x - dx]``, bilinear, 0 outside."""
    plane = np.asarray(plane, dtype=np.float32)
    iy, ix = int(np.floor(dy)), int(np.floor(dx))
    fy, fx = dy - iy, dx - ix
    out = np.zeros_like(plane)
    for oy, wy in ((iy, 1.0 - fy), (iy + 1, fy)):
        for ox, wx in ((ix, 1.0 - fx), (ix + 1, fx)):
            if wy * wx > 0.0:
                out += np.float32(wy * wx) * _moved_whole(plane, oy, ox)
    return out


def _moved_whole(plane: np.ndarray, oy: int, ox: int) -> np.ndarray:
    """``plane`` moved by whole pixels (``out[y, x] = plane[y - oy, x - ox]``), 0 where nothing lands."""
    rows, cols = plane.shape
    out = np.zeros_like(plane)
    if abs(oy) < rows and abs(ox) < cols:
        out[max(oy, 0) : rows + min(oy, 0), max(ox, 0) : cols + min(ox, 0)] = plane[
            max(-oy, 0) : rows + min(-oy, 0), max(-ox, 0) : cols + min(-ox, 0)
        ]
    return out


@dataclass(frozen=True)
class NiftiGrid:
    """A source volume's voxel grid and how it maps to the reading layout ``[row, column, slice]``.

    Keeps only geometry (never a header's free text or extensions): enough to write a volume back
    on the source grid (:func:`write_heatmap_nifti`) that a viewer overlays exactly. Built by
    :func:`read_nifti_series` for NIfTI input and by :func:`grid_from_series` for DICOM series.

    Attributes:
        shape: the source's spatial shape as stored (2 or 3 ints; trailing singleton dims dropped).
        affine: float64 ``[4, 4]``, source voxel index → RAS+ mm (nibabel's best affine).
        reading_ornt: ``[3, 2]`` nibabel orientation transform from the source voxel axes to the
            reading layout (row, column, slice), as :func:`nibabel.orientations.apply_orientation` takes it.
        qform, sform: float64 ``[4, 4]`` written to a volume on this grid.
        qform_code, sform_code: their NIfTI codes (0 = not set).
        zooms: voxel sizes (``pixdim``) of the spatial axes, in ``unit``.
        unit: spatial unit name of the header (``"mm"``, ``"meter"``, ``"micron"``, ``"unknown"``).
        resampling: for a DICOM series with gantry tilt or uneven slice spacing, how its slices go onto
            this regular grid (:class:`SliceResampling`); None when the slices are the grid's slices.
        note: what was done to make the grid regular, in words for a reader; None when nothing was.
    """

    shape: tuple[int, ...]
    affine: np.ndarray = field(repr=False)
    reading_ornt: np.ndarray = field(repr=False)
    qform: np.ndarray = field(repr=False)
    sform: np.ndarray = field(repr=False)
    qform_code: int = 0
    sform_code: int = 0
    zooms: tuple[float, ...] = ()
    unit: str = "mm"
    resampling: SliceResampling | None = field(default=None, repr=False)
    note: str | None = None

    @property
    def shape3(self) -> tuple[int, int, int]:
        """The spatial shape as three dims (a 2-D source has a third dim of 1)."""
        return (*self.shape, 1, 1)[:3]  # type: ignore[return-value]

    @property
    def reading_shape(self) -> tuple[int, int, int]:
        """(rows, columns, slices) of the reading layout."""
        out = [0, 0, 0]
        for axis, (target, _) in enumerate(self.reading_ornt):
            out[int(target)] = self.shape3[axis]
        return out[0], out[1], out[2]

    @property
    def reading_affine(self) -> np.ndarray:
        """float64 ``[4, 4]``: (row, column, slice) index → RAS+ mm."""
        return self.affine @ orientations.inv_ornt_aff(self.reading_ornt, self.shape3)

    def to_reading(self, volume: np.ndarray) -> np.ndarray:
        """A volume in the source's voxel layout (``shape``) → ``[rows, columns, slices]`` (a view)."""
        return orientations.apply_orientation(np.reshape(volume, self.shape3), self.reading_ornt)

    def to_source(self, volume: np.ndarray) -> np.ndarray:
        """A ``[rows, columns, slices]`` volume → the source's voxel layout and ``shape``."""
        back = np.zeros_like(self.reading_ornt)
        for axis, (target, flip) in enumerate(self.reading_ornt):
            back[int(target)] = (axis, flip)
        return np.reshape(orientations.apply_orientation(volume, back), self.shape)


@dataclass
class NiftiSeries(Series):
    """A :class:`~brain_ct.series.Series` read from a NIfTI volume, with the volume's grid.

    Attributes:
        grid: the source voxel grid (:class:`NiftiGrid`), for :func:`write_heatmap_nifti` and
            :func:`read_nifti_mask`.
    """

    grid: NiftiGrid | None = None


def grid_from_series(series: Series) -> NiftiGrid:
    """The voxel grid of a series: a NIfTI series's own grid, or one built from DICOM slice geometry.

    For DICOM the grid is the one ``dcm2niix`` would write: voxel axes (column, row, slice) with
    the affine from (0020,0037) *Image Orientation Patient*, (0028,0030) *Pixel Spacing* and the
    (0020,0032) *Image Position Patient* of the first and last slices (LPS turned into RAS), so a
    heatmap volume overlays the scan in a viewer. The reading layout is the slices as stored.

    A series with gantry tilt (slices stepping along the table, not along their normal) or with
    uneven slice spacing gets, as dcm2niix builds it, a regular orthogonal grid along the slice
    normal instead: ``resampling`` says how the slices go onto it (:class:`SliceResampling`) and
    ``note`` says so in words (e.g. "gantry tilt of 18.5° corrected ...").

    Raises:
        InvalidInputError: slices without geometry (PNG/JPG), of different sizes, orientations or
            pixel spacings, or two slices at one position (the message says why; callers show it).
    """
    if isinstance(series, NiftiSeries) and series.grid is not None:
        return series.grid
    slices = series.slices
    if not slices:
        raise InvalidInputError("the series has no slices; a heatmap volume needs at least one")
    metas = [ct.meta for ct in slices]
    try:
        ipp = np.asarray([[float(v) for v in m["ImagePositionPatient"]] for m in metas], dtype=np.float64)
        iop = np.asarray([[float(v) for v in m["ImageOrientationPatient"]] for m in metas], dtype=np.float64)
        spacing = np.asarray([[float(v) for v in m["PixelSpacing"]] for m in metas], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise InvalidInputError(
            "a heatmap volume needs each slice's position, orientation and pixel spacing (DICOM Image "
            "Position Patient, Image Orientation Patient, Pixel Spacing); these slices lack them "
            "(PNG/JPG slices have none). Use DICOM or NIfTI input"
        ) from None
    shapes = {ct.shape for ct in slices}
    if len(shapes) > 1 or ipp.shape[1:] != (3,) or iop.shape[1:] != (6,) or spacing.shape[1:] != (2,):
        raise InvalidInputError(
            f"the slices differ in size ({sorted(shapes)}) or carry malformed geometry; a heatmap volume needs "
            "one grid"
        )
    if not (np.allclose(iop, iop[0], atol=1e-4) and np.allclose(spacing, spacing[0], atol=1e-4)):
        raise InvalidInputError(
            "the slices differ in orientation or pixel spacing, so they do not form one volume; "
            "a heatmap volume needs one grid"
        )
    rows, cols = slices[0].shape
    row_dir, col_dir = iop[0, :3], iop[0, 3:]
    row_mm, col_mm = spacing[0]
    n = len(slices)
    if n > 1:
        step = (ipp[-1] - ipp[0]) / (n - 1)
        uneven = np.abs(np.diff(ipp, axis=0) - step).max() > 0.01 * np.linalg.norm(step)
        normal = np.cross(row_dir, col_dir)
        # Gantry tilt: the slices follow each other along the table, not along their normal.
        sheared = np.linalg.norm(np.cross(ipp[-1] - ipp[0], normal)) > 0.05 * min(row_mm, col_mm)
        if np.linalg.norm(step) < 1e-6 or uneven or sheared:
            return _regular_grid(ipp, row_dir, col_dir, (float(row_mm), float(col_mm)), (rows, cols))
    else:
        thickness = float(metas[0].get("SpacingBetweenSlices") or metas[0].get("SliceThickness") or 1.0)
        step = np.cross(row_dir, col_dir) * thickness
    return _dicom_grid(ipp[0], row_dir, col_dir, (float(row_mm), float(col_mm)), step, (rows, cols, n))


def _dicom_grid(
    origin: np.ndarray,
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    pixel_mm: tuple[float, float],
    step: np.ndarray,
    size: tuple[int, int, int],
    **extra: Any,
) -> NiftiGrid:
    """The grid of DICOM slices: voxel axes (column, row, slice), LPS geometry turned into RAS.

    Args:
        origin: (0020,0032) *Image Position Patient* of the first slice, LPS mm.
        row_dir, col_dir: unit vectors of (0020,0037) *Image Orientation Patient* (LPS).
        pixel_mm: (0028,0030) *Pixel Spacing*: (between rows, between columns) in mm.
        step: LPS mm vector from one slice to the next.
        size: (rows, columns, slices).
        extra: further :class:`NiftiGrid` fields (``resampling``, ``note``).
    """
    (row_mm, col_mm), (rows, cols, n) = pixel_mm, size
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_mm  # voxel axis i: along a row, from one column to the next
    lps[:3, 1] = col_dir * row_mm  # voxel axis j: down a column, from one row to the next
    lps[:3, 2] = step
    lps[:3, 3] = origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return NiftiGrid(
        shape=(cols, rows, n),
        affine=affine,
        # Source axes (column, row, slice) → reading layout (row, column, slice): a swap, no flip.
        reading_ornt=np.array([[1.0, 1.0], [0.0, 1.0], [2.0, 1.0]]),
        qform=affine,
        sform=affine,
        qform_code=1,
        sform_code=1,
        zooms=(float(col_mm), float(row_mm), float(np.linalg.norm(step))),
        unit="mm",
        **extra,
    )


def _regular_grid(
    ipp: np.ndarray,
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    pixel_mm: tuple[float, float],
    size: tuple[int, int],
) -> NiftiGrid:
    """The regular grid of a tilted or unevenly spaced series (:class:`SliceResampling`).

    Args:
        ipp: float64 ``[n, 3]`` (0020,0032) *Image Position Patient* of the slices in series order (LPS mm).
        row_dir, col_dir: unit vectors of (0020,0037) *Image Orientation Patient* (LPS).
        pixel_mm: (0028,0030) *Pixel Spacing*: (between rows, between columns) in mm.
        size: (rows, columns) of a slice.

    Raises:
        InvalidInputError: two slices at one position along the normal (a repeated slice or two
            series mixed), or a grid above :data:`MAX_VOXELS`.
    """
    (row_mm, col_mm), (rows, cols) = pixel_mm, size
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    offsets = ipp - ipp[0]
    positions = offsets @ normal
    if positions[-1] < positions[0]:
        normal, positions = -normal, -positions
    gaps = np.diff(positions)
    span = float(positions[-1] - positions[0])
    if span <= 1e-6 or gaps.min() <= 1e-3 * span / len(gaps):
        raise InvalidInputError(
            "two slices lie at the same position along the slice normal (a repeated slice, or two series "
            "or two passes mixed), so the slices do not form one volume and no heatmap volume can be built; "
            "read one series at a time (--series)"
        )
    # The finest regular spacing of the scan itself (a head CT often has 2 spacings: thin slices at
    # the skull base, thicker above); a lone narrow gap where two blocks meet does not set the step.
    step = float(gaps[gaps >= 0.5 * np.median(gaps)].min())
    n_out = int(np.floor(span / step + 1e-6)) + 1
    if n_out * rows * cols > MAX_VOXELS:
        raise InvalidInputError(
            f"the heatmap volume would need {n_out} slices of {cols} x {rows} at {step:.2f} mm; at most "
            f"{MAX_VOXELS:,} voxels are written"
        )
    shifts = np.stack([offsets @ col_dir / row_mm, offsets @ row_dir / col_mm], axis=1)
    tilt = float(
        np.degrees(np.arccos(min(1.0, abs(float(np.dot(offsets[-1], normal))) / np.linalg.norm(offsets[-1]))))
    )
    done = []
    if tilt > 0.05:
        done.append(f"gantry tilt of {tilt:.1f}° corrected (each slice moved in its plane)")
    if gaps.max() - gaps.min() > 0.01 * step:
        done.append(
            f"{len(positions)} slices {gaps.min():.2f}-{gaps.max():.2f} mm apart resampled to {n_out} slices "
            f"{step:.2f} mm apart (linear along the slice normal)"
        )
    return _dicom_grid(
        ipp[0],
        row_dir,
        col_dir,
        pixel_mm,
        normal * step,
        (rows, cols, n_out),
        resampling=SliceResampling(positions=positions - positions[0], shifts=shifts, step=step, n_out=n_out),
        note="heatmap volume on a regular grid as dcm2niix builds one: " + "; ".join(done) if done else None,
    )


def heatmap_volume(heatmaps: Sequence[np.ndarray], grid: NiftiGrid) -> np.ndarray:
    """Per-slice heatmaps (reading order) as one float32 volume in the source's voxel layout.

    Args:
        heatmaps: one float ``[rows, columns]`` per slice, in the series' order (``Prediction.heatmap``).
        grid: the series' grid (:func:`grid_from_series`); with ``grid.resampling`` the heatmaps are
            moved and interpolated onto it (one per source slice).

    Returns:
        float32 array of shape ``grid.shape``.

    Raises:
        InvalidInputError: wrong count or shape, or non-finite values.
    """
    rows, cols, n = grid.reading_shape
    if grid.resampling is not None:
        n = grid.resampling.n_in
    if len(heatmaps) != n:
        raise InvalidInputError(
            f"got {len(heatmaps)} heatmaps for a volume of {n} slices; need one per slice"
        )
    planes = [np.asarray(h, dtype=np.float32) for h in heatmaps]
    for k, plane in enumerate(planes):
        if plane.shape != (rows, cols):
            raise InvalidInputError(
                f"heatmap {k} is {plane.shape}, but the slices are ({rows}, {cols}); give each slice's heatmap "
                "on its own pixel grid"
            )
        if not np.isfinite(plane).all():
            raise InvalidInputError(f"heatmap {k} holds NaN or infinite values")
    if grid.resampling is not None:
        stack = grid.resampling.apply(planes)
    else:
        stack = np.stack(planes, axis=-1) if planes else np.zeros((rows, cols, 0), np.float32)
    return np.ascontiguousarray(grid.to_source(stack), dtype=np.float32)


def write_heatmap_nifti(
    heatmaps: Sequence[np.ndarray], reference: NiftiGrid | Series, path: str | os.PathLike[str]
) -> Path:
    """Write per-slice heatmaps as a float32 NIfTI volume on the source's grid and affine.

    The file carries the source's qform and sform (and codes) and voxel sizes, so 3D Slicer,
    ITK-SNAP or FSLeyes overlay it exactly on the scan; nothing from the source header's free
    text or extensions is copied. The file appears complete or not at all (written to a
    temporary file beside it, then renamed).

    Args:
        heatmaps: one float ``[rows, columns]`` per slice, in the series' order (``Prediction.heatmap``).
        reference: the series read (:class:`NiftiSeries`, or a DICOM :class:`~brain_ct.series.Series`
            with slice geometry) or its :class:`NiftiGrid`.
        path: output file ending in ``.nii`` or ``.nii.gz`` (gzip-compressed); its folder must exist.

    Returns:
        The path written.

    Raises:
        InvalidInputError: a bad name or folder, heatmaps that do not fit the grid, a series without
            geometry. Nothing is written then.
    """
    out = Path(path)
    if not out.name.lower().endswith(NIFTI_SUFFIXES):
        raise InvalidInputError(f"heatmap volume {out.name!r}: the file name must end in .nii or .nii.gz")
    if not out.parent.is_dir():
        raise InvalidInputError(
            f"heatmap volume {out}: the folder {out.parent} does not exist; create it first"
        )
    grid = reference if isinstance(reference, NiftiGrid) else grid_from_series(reference)
    volume = heatmap_volume(heatmaps, grid)
    image = nib.Nifti1Image(volume, affine=None)
    header = image.header
    header.set_qform(grid.qform, code=int(grid.qform_code))
    header.set_sform(grid.sform, code=int(grid.sform_code))
    header.set_zooms(grid.zooms[: volume.ndim])
    header.set_xyzt_units(xyz=grid.unit if grid.unit in UNIT_MM else "unknown")
    header["descrip"] = b"brain_ct Grad-CAM heatmap 0-1; research aid, not a diagnosis"
    header["cal_min"], header["cal_max"] = 0.0, 1.0
    payload = image.to_bytes()
    if out.name.lower().endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    fd, tmp = tempfile.mkstemp(prefix=".heatmap-", suffix=".part", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
