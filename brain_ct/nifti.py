"""NIfTI head-CT volumes in as a :class:`~brain_ct.volume.Series` (heatmap volumes out: :mod:`brain_ct.nifti_grid`).

Research head-CT data is mostly distributed as NIfTI (``.nii`` / ``.nii.gz``, e.g. after
``dcm2niix``). :func:`read_nifti_series` reads one volume into the same :class:`Series` of
:class:`~brain_ct.image.CTImage` slices that the DICOM reader gives, so the model, the scan rule,
regions and the report work unchanged; the series keeps the volume's grid
(:class:`~brain_ct.nifti_grid.NiftiGrid`), on which :func:`brain_ct.nifti_grid.write_heatmap_nifti`
writes the per-slice heatmaps back so they open aligned over the scan in 3D Slicer or ITK-SNAP.

Reading, in order (nothing is written anywhere):

1. **Bytes**: the file (at most :data:`brain_ct.source.MAX_FILE_BYTES`), gzip or not. The header is
   parsed first (NIfTI-1, 348 bytes, or NIfTI-2, 540 bytes, either byte order) and checked
   before a single voxel is read: 2–7 dims, a 3-D volume (a 2-D file or a third dim of 1 is one
   slice; a 4th or 5th dim above 1 — a time series, several volumes or channels — is refused),
   a grey data type (no RGB, no complex), and the declared voxel bytes at most
   the upload budget's ``max_volume_bytes`` / ``max_voxels`` (:mod:`brain_ct.limits`: by default
   128 slices of 512 x 512, as for a DICOM scan). Only the header's bytes are inflated for that (a listing, :func:`nifti_info`, stops
   there). Then one buffer of exactly the declared voxel bytes is allocated and the (gzip) stream
   is inflated once, straight into it, with zlib's ``max_length`` capping every step, so a
   truncated file is caught and a gzip bomb cannot inflate beyond the declared size.
2. **Geometry** from nibabel's best affine (sform, else qform; voxel → RAS+ mm): a voxel axis
   more than :data:`MAX_OBLIQUITY_DEG` from every patient axis is refused (an oblique volume
   cannot be read as axial slices without resampling). The axes are permuted and flipped
   (``nibabel.orientations``) to the reading layout ``[row, column, slice]`` = posterior,
   patient-left, superior: each slice shows as an axial DICOM does (radiological convention:
   anterior at the top, the patient's left on the image's right) and slices run inferior →
   superior. Axial slices whose pixels are not square (ratio above :data:`MAX_PIXEL_ASPECT`, a
   thick-slice coronal or sagittal acquisition) are refused.
3. **HU** = stored value × ``scl_slope`` + ``scl_inter`` (nibabel's scaling; slope 0 or NaN means
   none, as the NIfTI standard says), for integer and float storage. NaN or infinite values are
   refused, and so is a volume that is not in HU (:func:`check_ct_like`: no air near -1000 HU or
   no soft tissue — an MRI, a normalised array, a CT saved without its rescale).
4. **Slices** with DICOM-like geometry in ``meta``: ``PixelSpacing`` (row, column spacing in mm),
   ``ImagePositionPatient`` / ``ImageOrientationPatient`` in the DICOM patient frame (LPS) and
   ``SpacingBetweenSlices``; :attr:`Series.positions` are the slice positions in mm along the
   slice normal pointing superior, exactly as the DICOM reader computes them. The header's free
   text (``descrip``, ``aux_file``, ``intent_name``, ``db_name``) and extensions may carry
   identifying text (dcm2niix writes acquisition times there): none of it is read into an output.
"""

from __future__ import annotations

import hashlib
import io as _io
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import nibabel as nib
import numpy as np
from nibabel import orientations, volumeutils

import brain_ct.limits as limits
from brain_ct.errors import InvalidInputError
from brain_ct.hu import hu_image
from brain_ct.image import CTImage
from brain_ct.nifti_grid import UNIT_MM, NiftiGrid, NiftiSeries
from brain_ct.sniff import NIFTI_SUFFIXES, is_nifti_head, nifti_header_kind
from brain_ct.source import MAX_SIDE, MIN_SIDE, read_source
from brain_ct.volume import SeriesInfo, check_plausible_series

NiftiSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]

#: Most bytes of header extensions (between the header and the voxels) read and skipped.
MAX_EXTENSION_BYTES = 1 << 24

#: A voxel axis further than this from every patient axis (degrees) makes the volume oblique.
MAX_OBLIQUITY_DEG = 30.0

#: Largest ratio of the two pixel spacings of an axial slice (real CT slices have square pixels).
MAX_PIXEL_ASPECT = 1.2

#: HU at or below which a voxel counts as air (air is -1000 HU; fat is about -100 HU).
AIR_LIMIT_HU = -500.0

#: Soft tissue (brain, blood, muscle) in HU.
SOFT_TISSUE_HU = (-100.0, 100.0)

#: Smallest fraction of voxels that must be air, and soft tissue, for a volume to count as HU.
MIN_CT_FRACTION = 0.01

#: Reading layout: voxel axes pointing to posterior, patient-left, superior (nibabel axis codes).
READING_AXCODES = ("P", "L", "S")

ACCEPTED = "a NIfTI-1 or NIfTI-2 head-CT volume in HU (.nii or .nii.gz)"

_READING_ORNT = orientations.axcodes2ornt(READING_AXCODES)
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
_CHUNK = 1 << 22
# Bytes after the declared voxels read to reach the gzip trailer (its CRC); more is not inflated.
_MAX_TRAILING = 1 << 20

# --------------------------------------------------------------------------- bytes and header


def is_nifti(source: NiftiSource) -> bool:
    """Whether ``source`` looks like a NIfTI file: a ``.nii``/``.nii.gz`` name, or a NIfTI header.

    Only the first bytes are looked at (a gzip stream is inflated for at most 540 bytes), so this
    is cheap and safe to call on anything a person drops in.
    """
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            return True
        try:
            with path.open("rb") as fh:
                head = fh.read(1 << 16)
        except OSError:
            return False
    elif isinstance(source, bytes | bytearray | memoryview):
        head = bytes(source[: 1 << 16])
    else:
        return False
    return is_nifti_head(head)


def _read_bytes(source: NiftiSource, name: str | None) -> tuple[bytes, str, str]:
    """The file's bytes, its display name and the source's display string (the path as given)."""
    data, shown = read_source(source, name)
    return data, shown, str(source) if isinstance(source, str | os.PathLike) else shown


class _Inflow:
    """A NIfTI file's bytes as one forward-only stream, inflated on demand when it is gzip.

    Inflating is capped at every step (zlib's ``max_length``): a reader gets exactly the bytes it
    asks for, so the header can be checked after 348 or 540 bytes and a gzip bomb costs no more
    than the voxel bytes its (checked) header declares, inflated once straight into their buffer.
    Concatenated gzip members and zero padding after the last are read as :mod:`gzip` reads them;
    each member's CRC and size are checked by zlib when its trailer is reached.
    """

    def __init__(self, data: bytes, shown: str) -> None:
        self.gz = data[:2] == b"\x1f\x8b"
        self._data = memoryview(data)
        self._pos = 0  # next unread byte of ``data``
        self._shown = shown
        self._zlib = zlib.decompressobj(wbits=31) if self.gz else None
        self._tail = b""  # compressed input that zlib has not consumed yet
        self.ended = False  # no more data (the last gzip member's trailer was read and checked)
        self.produced = 0  # bytes handed out so far (for gzip: all that was ever inflated)

    @property
    def position(self) -> int:
        """Bytes of ``data`` consumed so far (for uncompressed data: the offset of the next byte)."""
        return self._pos

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the data)."""
        out = bytearray(n)
        return bytes(out[: self.readinto(memoryview(out))])

    def skip(self, n: int) -> int:
        """Read and drop up to ``n`` bytes, a chunk at a time; returns how many there were."""
        scratch = memoryview(bytearray(min(n, _CHUNK)))
        done = 0
        while done < n and not self.ended:
            got = self.readinto(scratch[: min(len(scratch), n - done)])
            done += got
            if not got:
                break
        return done

    def readinto(self, out: memoryview) -> int:
        """Fill ``out`` (a writable byte buffer); returns the bytes written, fewer only at the end."""
        if not self.gz:
            got = min(len(out), len(self._data) - self._pos)
            out[:got] = self._data[self._pos : self._pos + got]
            self._pos += got
            self.produced += got
            return got
        try:
            got = self._inflate_into(out)
            self.produced += got
            return got
        except (EOFError, zlib.error):
            raise InvalidInputError(
                f"{self._shown}: the gzip stream is truncated or corrupt (it ends early or fails its checks); "
                "re-download or re-export the .nii.gz"
            ) from None

    def _inflate_into(self, out: memoryview) -> int:
        got = 0
        while got < len(out) and not self.ended:
            inflater = self._zlib  # a new one for each gzip member
            assert inflater is not None  # only called for gzip data
            if self._tail:
                given: bytes | memoryview = self._tail
            else:
                given = self._data[self._pos : self._pos + _CHUNK]
                self._pos += len(given)
            chunk = inflater.decompress(given, min(_CHUNK, len(out) - got))
            self._tail = inflater.unconsumed_tail
            out[got : got + len(chunk)] = chunk
            got += len(chunk)
            if inflater.eof:
                self._next_member(len(inflater.unused_data))
            elif not chunk and not given:
                raise EOFError("the data ends inside the gzip stream")
        return got

    def _next_member(self, unused: int) -> None:
        """After a gzip member's trailer: start the next member, or end at zero padding / the data's end."""
        start = self._pos - unused
        rest = np.frombuffer(self._data[start:], dtype=np.uint8)
        nonzero = np.flatnonzero(rest)
        if not nonzero.size:
            self.ended = True
            return
        start += int(nonzero[0])
        if bytes(self._data[start : start + 2]) != b"\x1f\x8b":
            raise EOFError("bytes after the gzip stream that are not a gzip member")
        self._pos, self._tail = start, b""
        self._zlib = zlib.decompressobj(wbits=31)


@dataclass
class _Parsed:
    header: Any  # nibabel Nifti1Header or Nifti2Header
    shape: tuple[int, ...]  # spatial shape as stored (2 or 3 dims)
    dtype: np.dtype  # voxel data type as stored (with its byte order)
    kind: str  # "NIfTI-1" or "NIfTI-2"
    # The voxels as stored, 1-D (Fortran order of ``shape``); None when only the header was read.
    raw: np.ndarray | None = None


def _parse(data: bytes, shown: str, *, voxels: bool = True) -> _Parsed:
    """Parse and check the header, then (``voxels``) read exactly the voxel bytes it declares.

    The voxel buffer is allocated only after :func:`_check_header` has accepted the declared
    dims x itemsize, and a gzip stream is inflated once, straight into it; an uncompressed file's
    voxels are a view of ``data``. With ``voxels=False`` only the header is inflated (a listing).
    """
    stream = _Inflow(data, shown)
    first = stream.read(4)
    found = nifti_header_kind(first) if len(first) == 4 else None
    if found is None:
        inside = "a gzip file that does not hold a NIfTI volume" if stream.gz else "not a NIfTI file"
        raise InvalidInputError(
            f"{shown}: this is {inside} (no NIfTI header at its start); expected {ACCEPTED}"
        )
    size, order = found
    head = first + stream.read(size - 4)
    if len(head) < size:
        raise InvalidInputError(
            f"{shown}: the file ends inside its NIfTI header (truncated); expected {ACCEPTED}"
        )
    klass, kind = (nib.Nifti1Header, "NIfTI-1") if size == 348 else (nib.Nifti2Header, "NIfTI-2")
    try:
        # The byte order comes from sizeof_hdr: nibabel would guess it from dim[0], and a damaged
        # dim[0] would then read as a byte-swapped, even more confusing header.
        header = klass.from_fileobj(_io.BytesIO(head), endianness=order, check=False)
        magic = bytes(header["magic"]).rstrip(b"\x00")[:3]
    except Exception:
        raise InvalidInputError(f"{shown}: the {kind} header is damaged and cannot be parsed") from None
    if magic in (b"ni1", b"ni2"):
        raise InvalidInputError(
            f"{shown}: this is the header of a .hdr/.img pair; give a single-file .nii or .nii.gz "
            "(convert it, e.g. with nibabel: nib.save(nib.load('x.hdr'), 'x.nii.gz'))"
        )
    if magic not in (b"n+1", b"n+2"):
        raise InvalidInputError(f"{shown}: the {kind} header has no valid magic string; the file is damaged")
    shape, dtype = _check_header(header, shown, kind)
    offset = int(header["vox_offset"])
    if offset < size:
        raise InvalidInputError(
            f"{shown}: the header says the voxels start at byte {offset}, inside the header itself; "
            "the file is damaged"
        )
    spatial = tuple(shape[:3]) if len(shape) >= 3 else tuple(shape)
    parsed = _Parsed(header=header, shape=spatial, dtype=dtype, kind=kind)
    if voxels:
        parsed.raw = _read_voxels(
            stream, data, offset - size, int(np.prod(shape, dtype=object)), dtype, shown
        )
    return parsed


def _read_voxels(
    stream: _Inflow, data: bytes, gap: int, n_vox: int, dtype: np.dtype, shown: str
) -> np.ndarray:
    """The ``n_vox`` voxels after ``gap`` bytes of header extensions, 1-D ``dtype``, read once."""
    n_bytes = n_vox * dtype.itemsize
    if gap > MAX_EXTENSION_BYTES:
        raise InvalidInputError(
            f"{shown}: the header puts the voxels {gap:,} bytes after its end (header extensions); at most "
            f"{MAX_EXTENSION_BYTES // 2**20} MiB of extensions are read. The file is damaged or not a CT volume"
        )
    skipped = stream.skip(gap)
    if stream.gz:
        buffer = np.empty(n_bytes, dtype=np.uint8)
        got = stream.readinto(memoryview(buffer)) if skipped == gap else 0
        if got == n_bytes:
            # gzip checks its CRC only at the end of the stream, past the declared voxels: read on to it,
            # or a corrupted stream that still inflates would give wrong HU silently.
            stream.skip(_MAX_TRAILING)
    else:
        start = stream.position
        got = min(n_bytes, len(data) - start)
    if got < n_bytes:
        raise InvalidInputError(
            f"{shown}: the file is truncated: its header announces {n_bytes} bytes of voxels, "
            f"but only {max(skipped - gap + got, 0)} are there; re-download or re-export it"
        )
    if stream.gz:
        return buffer.view(dtype)
    return np.frombuffer(data, dtype=dtype, count=n_vox, offset=start)


def _check_header(header: Any, shown: str, kind: str) -> tuple[tuple[int, ...], np.dtype]:
    """Dimensions, data type and declared size, checked before any voxel is read."""
    dim = [int(d) for d in header["dim"]]
    ndim = dim[0]
    if not 2 <= ndim <= 7:
        raise InvalidInputError(
            f"{shown}: the header declares {ndim} dimensions (dim[0]); a NIfTI volume has 2 to 7, "
            "a CT volume 3. The file is damaged or not a volume"
        )
    shape = tuple(dim[1 : ndim + 1])
    if any(n < 1 for n in shape):
        raise InvalidInputError(
            f"{shown}: the header declares dimensions {shape}; every dimension must be at least 1"
        )
    extra = shape[3:]
    if any(n > 1 for n in extra):
        what = (
            f"{extra[0]} volumes along its 4th dimension (a time series or several scans)"
            if extra[0] > 1
            else f"{int(np.prod(extra))} values per voxel (several channels, e.g. a vector or label image)"
        )
        raise InvalidInputError(
            f"{shown}: this NIfTI holds {what}, shape {shape}; give one 3-D CT volume "
            "(split it first, e.g. with fslsplit or nibabel's image slicing)"
        )
    try:
        dtype = header.get_data_dtype()
    except Exception:
        raise InvalidInputError(
            f"{shown}: the header's data type code {int(header['datatype'])} is not a NIfTI data type; "
            "the file is damaged"
        ) from None
    if dtype.fields is not None:
        raise InvalidInputError(
            f"{shown}: the voxels are colour ({', '.join(dtype.names or ())}), several channels per voxel; "
            "a CT volume has one grey value (HU) per voxel"
        )
    if dtype.kind not in "iuf":
        raise InvalidInputError(
            f"{shown}: the voxel data type {dtype} is not supported; a CT volume holds integers or floats"
        )
    slope, inter = (float(header["scl_slope"]), float(header["scl_inter"]))
    # nibabel (and the standard) ignore a slope of 0 or NaN; an infinite slope, or an applied slope
    # with a non-finite intercept, is a damaged header that would turn every voxel into inf/NaN.
    applied = bool(np.isfinite(slope)) and slope != 0.0
    if np.isinf(slope) or (applied and not np.isfinite(inter)):
        raise InvalidInputError(
            f"{shown}: the header's scaling (scl_slope {slope:g}, scl_inter {inter:g}) is infinite or NaN; "
            "every voxel would be NaN or infinite. Fix the scaling fields (HU = stored x scl_slope + scl_inter)"
        )
    n_vox = int(np.prod(shape, dtype=object))
    n_bytes = n_vox * dtype.itemsize
    budget = limits.current()
    if n_vox > budget.max_voxels or n_bytes > budget.max_volume_bytes:
        raise InvalidInputError(
            f"{shown}: the header declares {' x '.join(map(str, shape))} voxels of {dtype} "
            f"({n_bytes / 2**20:,.0f} MiB); a head-CT volume is read up to {_in_slices(budget.max_voxels)} "
            f"({budget.max_voxels:,} voxels) and {budget.max_volume_bytes / 2**20:,.0f} MiB of voxel data. "
            "Refused before reading any voxel; crop or downsample the volume, or raise the limit where you "
            f"run it (the CLI's --max-slices, or {limits.ENV['max_voxels']})"
        )
    return shape, dtype


def _in_slices(voxels: int, side: int = 512) -> str:
    """A voxel count in a reader's terms: ``"400 slices of 512 x 512"``."""
    return f"{voxels // (side * side)} slices of {side} x {side}"


# --------------------------------------------------------------------------- geometry


def _grid(parsed: _Parsed, shown: str, notes: list[str]) -> NiftiGrid:
    """The source grid from the header; refuses degenerate and oblique affines."""
    header = parsed.header
    affine = np.asarray(header.get_best_affine(), dtype=np.float64)
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if not np.isfinite(affine).all():
        raise InvalidInputError(f"{shown}: the header's affine (sform/qform) holds NaN or infinite values")
    if not scode and not qcode:
        notes.append(
            "NIfTI header without orientation (sform and qform codes 0): nibabel's default orientation "
            "assumed, so the patient's left and right may be swapped"
        )
    lin = affine[:3, :3]
    zooms = np.linalg.norm(lin, axis=0)
    if np.any(zooms < 1e-6) or abs(np.linalg.det(lin)) < 1e-9 * float(np.prod(zooms)):
        raise InvalidInputError(
            f"{shown}: the header's affine is degenerate (a voxel size of 0 or axes that coincide); "
            "the file is damaged"
        )
    cosines = np.clip(np.abs(lin / zooms).max(axis=0), 0.0, 1.0)
    angles = np.degrees(np.arccos(cosines))
    worst = float(angles.max())
    if worst > MAX_OBLIQUITY_DEG:
        raise InvalidInputError(
            f"{shown}: this volume is oblique: a voxel axis is {worst:.0f}° from the closest patient axis "
            f"(at most {MAX_OBLIQUITY_DEG:.0f}° can be read as axial slices). Resample it to an axis-aligned "
            "grid first (e.g. 3D Slicer's 'Resample Scalar Volume', or dcm2niix with gantry-tilt correction)"
        )
    if worst > 1.0:
        notes.append(
            f"oblique volume ({worst:.0f}° from the patient axes): slices kept as stored, not resampled"
        )
    pixdim = tuple(float(z) for z in header.get_zooms()[: len(parsed.shape)])
    unit = str(header.get_xyzt_units()[0])
    return NiftiGrid(
        shape=parsed.shape,
        affine=affine,
        reading_ornt=orientations.ornt_transform(orientations.io_orientation(affine), _READING_ORNT),
        qform=np.asarray(qform if qform is not None else affine, dtype=np.float64),
        sform=np.asarray(sform if sform is not None else affine, dtype=np.float64),
        qform_code=int(qcode or 0),
        sform_code=int(scode or 0),
        zooms=pixdim,
        unit=unit,
    )


@dataclass(frozen=True)
class _Geometry:
    """DICOM-like geometry of the reading layout (LPS patient frame, mm)."""

    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    orientation: list[float]  # ImageOrientationPatient: row direction then column direction
    positions_patient: np.ndarray  # [n, 3] ImagePositionPatient per slice
    positions: list[float]  # per slice, mm along the slice normal (pointing superior)
    spacing: float  # between slices along the normal


def _geometry(grid: NiftiGrid, shown: str) -> _Geometry:
    """Pixel spacing, orientation and slice positions as the DICOM reader would compute them."""
    scale = UNIT_MM.get(grid.unit, 1.0)
    aff = grid.reading_affine
    row_step = _LPS_FROM_RAS @ aff[:3, 0] * scale  # from one row to the next (down the image)
    col_step = _LPS_FROM_RAS @ aff[:3, 1] * scale  # from one column to the next (to the right)
    row_mm, col_mm = float(np.linalg.norm(row_step)), float(np.linalg.norm(col_step))
    rows, cols, n = grid.reading_shape
    if max(row_mm, col_mm) > MAX_PIXEL_ASPECT * min(row_mm, col_mm):
        raise InvalidInputError(
            f"{shown}: axial slices of this volume would have {row_mm:.2g} x {col_mm:.2g} mm pixels (not square; "
            "it was probably acquired coronal or sagittal with thick slices), so it cannot be read as axial "
            "slices. Give an axial CT volume, or resample it to square in-plane pixels"
        )
    if min(rows, cols) < MIN_SIDE or max(rows, cols) > MAX_SIDE:
        raise InvalidInputError(
            f"{shown}: axial slices of this volume are {cols} x {rows} pixels; accepted: {MIN_SIDE} to "
            f"{MAX_SIDE} pixels a side"
        )
    # DICOM's (0020,0037): direction of increasing column index first, then of increasing row index.
    row_dir, col_dir = col_step / col_mm, row_step / row_mm
    # Columns run to the patient's left (+x in LPS), rows to posterior (+y): the normal points
    # superior (+z), as brain_ct.series orients an axial slice normal.
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    index = np.stack([np.zeros(n), np.zeros(n), np.arange(n), np.ones(n)])
    ipp = ((_LPS_FROM_RAS @ (aff @ index)[:3]) * scale).T
    positions = [float(p) for p in ipp @ normal]
    spacing = float(abs(np.dot(_LPS_FROM_RAS @ aff[:3, 2] * scale, normal)))
    return _Geometry((row_mm, col_mm), [*map(float, row_dir), *map(float, col_dir)], ipp, positions, spacing)


# --------------------------------------------------------------------------- voxels


def _scaled_slices(parsed: _Parsed, grid: NiftiGrid) -> Iterator[np.ndarray]:
    """The stored voxels as float32 ``[rows, columns]`` slices of the reading layout, scaled.

    The scaling is nibabel's (``ArrayProxy._get_scaled`` for float32: scl_slope / scl_inter cast
    to float32 where exact, :func:`nibabel.volumeutils.apply_read_scaling`), applied element by
    element, so the values are exactly those of ``get_fdata(dtype=np.float32)``, one slice at a time.
    """
    assert parsed.raw is not None  # _parse(..., voxels=True)
    stored = grid.to_reading(parsed.raw.reshape(grid.shape3, order="F"))
    scale = _read_scaling(parsed.header)
    for k in range(stored.shape[2]):
        yield np.asarray(volumeutils.apply_read_scaling(stored[:, :, k], *scale), dtype=np.float32)


def _read_scaling(header: Any) -> list[np.ndarray]:
    """(slope, intercept) as nibabel applies them when reading float32 (1 and 0 when unset)."""
    slope, inter = header.get_slope_inter()
    scale = [np.asanyarray(1.0 if slope is None else slope), np.asanyarray(0.0 if inter is None else inter)]
    return [v.astype(np.float32) if np.can_cast(v, np.float32) else v for v in scale]


def _voxel_sample(parsed: _Parsed) -> np.ndarray:
    """float32 HU of :func:`_sample` of the stored voxels (source order), before the volume is built."""
    assert parsed.raw is not None
    picked = _sample(parsed.raw.reshape(parsed.shape, order="F"))
    return np.asarray(volumeutils.apply_read_scaling(picked, *_read_scaling(parsed.header)), dtype=np.float32)


def _refuse_non_finite(bad: int, shown: str) -> None:
    if bad:
        raise InvalidInputError(
            f"{shown}: {bad} voxel(s) are NaN or infinite; a CT volume holds finite HU values. "
            "Replace them (e.g. with -1000, air) before reading it"
        )


def _count_non_finite(planes: Iterator[np.ndarray]) -> int:
    return sum(int(plane.size - np.count_nonzero(np.isfinite(plane))) for plane in planes)


def _load_voxels(parsed: _Parsed, grid: NiftiGrid, shown: str, notes: list[str]) -> np.ndarray:
    """float32 ``[slices, rows, columns]`` (reading layout, C-contiguous) scaled by scl_slope / scl_inter.

    Filled one slice at a time into the one output buffer (no full-size intermediates).
    """
    rows, cols, n = grid.reading_shape
    volume = np.empty((n, rows, cols), dtype=np.float32)
    for k, plane in enumerate(_scaled_slices(parsed, grid)):
        volume[k] = plane
    slope, inter = parsed.header.get_slope_inter()
    if slope is not None and (slope, inter) != (1.0, 0.0):
        notes.append(f"NIfTI scaling applied: HU = stored x {slope:g} + {inter:g} (scl_slope, scl_inter)")
    _refuse_non_finite(_count_non_finite(iter(volume)), shown)
    return volume


def check_ct_like(hu: np.ndarray, shown: str = "the volume") -> None:
    """Refuse a volume whose values are not Hounsfield units of a head CT.

    A head CT in HU has air around the head (about -1000 HU) and soft tissue (brain, blood:
    -100 to 100 HU); each must make up at least :data:`MIN_CT_FRACTION` of the voxels. An MRI
    (0 to a few thousand, no air), a normalised array (0..1, z-scores) or a CT saved without its
    rescale (air at 0) fails.

    Args:
        hu: float ``[...]`` values that should be HU (finite).
        shown: display name for the message.

    Raises:
        InvalidInputError: with the value range received and how to fix it.
    """
    problem = _not_ct_reason(_sample(hu), shown)
    if problem:
        raise InvalidInputError(problem)


def _not_ct_reason(sample: np.ndarray, shown: str) -> str | None:
    """Why a sample of a volume's HU (:func:`_sample`) is not a head CT in HU, or None when it is."""
    air, tissue = _ct_fractions(sample)
    if air >= MIN_CT_FRACTION and tissue >= MIN_CT_FRACTION:
        return None
    low, high = (float(v) for v in np.percentile(sample, [1, 99]))
    missing = (
        "no air (values at or below -500 HU)" if air < MIN_CT_FRACTION else "no soft tissue (-100..100 HU)"
    )
    # A CT saved as stored values without its rescale would pass once shifted back by -1024.
    shifted = min(_ct_fractions(sample - 1024.0)) >= MIN_CT_FRACTION
    hint = (
        " If it is a CT stored without its rescale (air at 0 instead of -1000), set scl_inter to -1024"
        if shifted
        else ""
    )
    return (
        f"{shown}: the values do not look like a CT in Hounsfield units: they run from about {low:g} to "
        f"{high:g} (1st-99th percentile) with {missing}; a head CT has air at about -1000 HU around the head "
        f"and brain at 20-40 HU. This may be an MRI or a normalised array, which the model cannot read.{hint}"
    )


def _sample(values: np.ndarray) -> np.ndarray:
    """A strided sample of at most ~2 million values: fractions of 1 % stay exact enough, and cheap.

    The values at every k-th index of ``values`` in C order, taken without flattening (a flatten
    of a non-contiguous view would copy the whole volume).
    """
    step = max(1, values.size // 2_000_000)
    return values[np.unravel_index(np.arange(0, values.size, step), values.shape)]


def _ct_fractions(sample: np.ndarray) -> tuple[float, float]:
    """Fractions of air and of soft tissue among HU values."""
    air = float(np.mean(sample <= AIR_LIMIT_HU))
    tissue = float(np.mean((sample >= SOFT_TISSUE_HU[0]) & (sample <= SOFT_TISSUE_HU[1])))
    return air, tissue


def _slice_image(hu: np.ndarray, meta: dict[str, Any], name: str) -> CTImage:
    """One axial slice as the DICOM reader builds it: HU, brain-window display, head box."""
    return hu_image(hu, meta, name, "nifti")[0]


# --------------------------------------------------------------------------- public API


def read_nifti_series(
    source: NiftiSource, *, name: str | None = None, allow_unverified: bool = False
) -> NiftiSeries:
    """Read a NIfTI head-CT volume as a series of axial slices, inferior → superior.

    Args:
        source: a ``.nii`` / ``.nii.gz`` path, its bytes, or a binary file object.
        name: display name; default the file name for paths, else ``"upload"``. Slices are named
            ``"<name>#k"`` (k from 1, inferior first), like the frames of a multi-frame DICOM.
        allow_unverified: skip the "does this look like a head CT" check of the central slices
            (:func:`brain_ct.framing.check_plausible`). The HU check (:func:`check_ct_like`) always runs.

    Returns:
        A :class:`NiftiSeries`: ``slices`` of :class:`~brain_ct.image.CTImage` (``hu`` float32 [H, W]
        HU, ``display`` uint8 brain window, ``source`` ``"nifti"``, ``meta`` with ``PixelSpacing``,
        ``ImagePositionPatient``, ``ImageOrientationPatient`` (LPS), ``SpacingBetweenSlices``,
        ``InstanceNumber``, ``Format``, ``Notes``); ``positions`` in mm along the slice normal;
        ``sort_key`` ``"position"``; ``grid`` for writing volumes back.

    Raises:
        InvalidInputError: not NIfTI, truncated or damaged, 4-D or multi-channel, too large
            (checked before reading voxels), oblique, non-square axial pixels, NaN/inf, not HU;
            :class:`~brain_ct.errors.NotHeadCTError` when no central slice looks like a head CT.
    """
    data, shown, label = _read_bytes(source, name)
    parsed = _parse(data, shown)
    kind = parsed.kind
    notes: list[str] = []
    grid = _grid(parsed, shown, notes)
    geometry = _geometry(grid, shown)
    # Judged on a sample of the stored voxels before the float32 volume exists: a volume of zeros
    # that inflates to the cap costs its stored bytes only. Non-finite voxels are named first.
    problem = _not_ct_reason(_voxel_sample(parsed), shown)
    if problem:
        _refuse_non_finite(_count_non_finite(_scaled_slices(parsed, grid)), shown)
        raise InvalidInputError(problem)
    # [slice, row, column], C-contiguous: each slice is a contiguous [H, W] view of one buffer.
    volume = _load_voxels(parsed, grid, shown, notes)
    del parsed, data
    rows, cols, n = grid.reading_shape
    series = NiftiSeries(slices=[], files=[], positions=[], source=label, sort_key="position", grid=grid)
    for k in range(n):
        meta: dict[str, Any] = {
            "Format": kind,
            "Rows": rows,
            "Columns": cols,
            "PixelSpacing": [round(v, 6) for v in geometry.pixel_spacing],
            "SpacingBetweenSlices": round(geometry.spacing, 6),
            "ImagePositionPatient": [round(float(v), 4) for v in geometry.positions_patient[k]],
            "ImageOrientationPatient": [round(v, 6) for v in geometry.orientation],
            "InstanceNumber": k + 1,
        }
        if notes:
            meta["Notes"] = list(notes)
        series.slices.append(_slice_image(volume[k], meta, f"{shown}#{k + 1}"))
        series.files.append(f"{shown}#{k + 1}")
        series.positions.append(round(geometry.positions[k], 4))
    if not allow_unverified:
        check_plausible_series(series, label)
    return series


def nifti_series_id(source: str | os.PathLike[str] | bytes) -> str:
    """A NIfTI volume's series id: 16 hex characters of the SHA-256 of the file's bytes.

    A NIfTI file carries no Series Instance UID; its content gives an id that is the same in
    every run for the same file (as :func:`brain_ct.series.list_series` promises) and says
    nothing about the patient.
    """
    digest = hashlib.sha256(b"brain_ct.nifti series id\0")
    if isinstance(source, bytes | bytearray | memoryview):
        digest.update(source)
    else:
        with open(source, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def nifti_info(source: str | os.PathLike[str] | bytes, *, name: str | None = None) -> SeriesInfo:
    """A NIfTI volume as :func:`brain_ct.series.list_series` lists a series, from its header.

    The header and geometry are checked as :func:`read_nifti_series` checks them, but the voxels
    are not decoded nor judged. ``n_slices`` is the number of axial slices it is read as;
    ``orientation`` is ``"axial"`` (the volume is read as axial slices whatever its storage
    order); ``modality`` and ``description`` are None (a NIfTI header records neither);
    ``contrast`` False (unknown).

    Raises:
        InvalidInputError: as :func:`read_nifti_series` for a bad header or geometry.
    """
    data, shown, _ = _read_bytes(source, name)
    parsed = _parse(data, shown, voxels=False)
    grid = _grid(parsed, shown, [])
    _geometry(grid, shown)
    return SeriesInfo(
        series_id=nifti_series_id(data),
        description=None,
        modality=None,
        n_slices=grid.reading_shape[2],
        orientation="axial",
        contrast=False,
        default=True,
    )


def read_nifti_mask(source: NiftiSource, grid: NiftiGrid, *, name: str | None = None) -> np.ndarray:
    """Read a voxel mask (or label map) volume on the same grid as a scan, in the scan's reading order.

    For training from volumes with masks: ``mask[k]`` lies over ``series.slices[k]``.

    Args:
        source: the mask's ``.nii`` / ``.nii.gz`` path, bytes or binary file object.
        grid: the scan's grid (``NiftiSeries.grid``).
        name: display name for messages.

    Returns:
        int32 ``[slices, rows, columns]``: the mask's values rounded to integers (0 = no lesion;
        label maps keep their labels, e.g. BHSD's 1-5 subtypes).

    Raises:
        InvalidInputError: as :func:`read_nifti_series` for a bad file; also when the mask's shape or
            affine differ from the scan's, or it holds negative values.
    """
    data, shown, _ = _read_bytes(source, name)
    parsed = _parse(data, shown)
    del data
    if tuple(parsed.shape) != tuple(grid.shape):
        raise InvalidInputError(
            f"{shown}: the mask is {parsed.shape} voxels but its scan is {grid.shape}; a mask must lie on "
            "its scan's voxel grid (same shape and affine)"
        )
    affine = np.asarray(parsed.header.get_best_affine(), dtype=np.float64)
    # Masks saved by other tools carry float32-rounded affines: allow a hundredth of a voxel.
    tolerance = 0.01 * float(np.min(np.linalg.norm(grid.affine[:3, :3], axis=0)))
    if not np.allclose(affine, grid.affine, rtol=0.0, atol=max(tolerance, 1e-4)):
        raise InvalidInputError(
            f"{shown}: the mask's affine differs from its scan's, so it does not lie over the scan; "
            "resample the mask onto the scan's grid (same shape and affine)"
        )
    values = _load_voxels(parsed, grid, shown, [])
    if values.size and float(values.min()) < 0:
        raise InvalidInputError(
            f"{shown}: the mask holds negative values; expected 0 (background) and labels >= 1"
        )
    return np.rint(values).astype(np.int32)
