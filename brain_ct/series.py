"""Whole-scan reading: group the slices of one CT series by their headers, order them anatomically, read them once.

A head CT is 30-40 axial slices. :func:`read_series` takes what a person drops in — a folder, a
``.zip``, several files at once, or one (multi-frame) DICOM — and returns a :class:`Series` whose
slices are in anatomical order, inferior → superior. The model's reading of a whole scan is
:mod:`brain_ct.scan`.

Reading, in order:

1. **Collect** the candidate files safely (:func:`brain_ct.collect.collect`: zip limits, sniffing,
   time budget; nothing written to disk). Files that are neither DICOM nor an ordinary image are
   never parsed, and are listed in :attr:`Series.errors`.
2. **Headers only** (``io.read_dicom_header``): group DICOMs by (0020,000E) *Series Instance UID*;
   with several series, pick the axial non-contrast CT series with the most slices unless the
   caller chooses one (``series_uid``, hashed or raw). Files not read are listed in
   :attr:`Series.skipped` with the reason (another series, a DICOM without an image, an
   ordinary image beside DICOM slices, a DICOMDIR). File names are user data: they are shown
   only when they pass :func:`brain_ct.collect.screen_name`.
3. **Sort** by (0020,0032) *Image Position Patient* projected on the slice normal (the cross product
   of the row and column direction cosines of (0020,0037) *Image Orientation Patient*, oriented to
   point superior, so positions grow from the feet to the vertex); fallback (0020,0013) *Instance
   Number*; fallback natural order of the file names. PNG/JPG slices keep the natural order of names.
4. **Pixels once**: each file of the chosen series is decoded exactly once (``io.load_image``, or
   ``io.load_frames`` for a multi-frame file), from the bytes read in step 1: a file is read from
   disk once (unless the kept bytes would pass ``ZipLimits.max_total_bytes``). A file that fails
   is skipped and listed in :attr:`Series.errors`; the series fails only when no slice loads.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

import brain_ct.limits as limits
import brain_ct.privacy as privacy
from brain_ct.collect import (
    DEFAULT_ZIP_LIMITS,
    Budget,
    BudgetExceededError,
    Member,
    ZipLimits,
    collect,
    is_dicomdir,
    is_sidecar,
    name_members,
    natural_key,
    screen_name,
    sniff_path,
)
from brain_ct.dicom import check_frame_count, quiet_dicom, read_dicom_header
from brain_ct.errors import InvalidInputError
from brain_ct.image import CTImage
from brain_ct.io import load_frames, load_image
from brain_ct.limits import UploadLimits
from brain_ct.limits import using as using_limits
from brain_ct.nifti import is_nifti, nifti_info, nifti_series_id, read_nifti_series
from brain_ct.ordinary_image import image_pixels
from brain_ct.sniff import NIFTI_SUFFIXES
from brain_ct.source import reader_errors
from brain_ct.volume import Series, SeriesInfo, check_plausible_series
from brain_ct.wording import plural

T = TypeVar("T")

#: (0008,0016) SOP Class UID of a DICOMDIR (a PACS export's index file, no image): skipped silently.
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

#: |normal · z| above this (cosine of ~37°) counts as an axial slice: gantry tilts stay axial.
_AXIAL_COSINE = 0.8


# --------------------------------------------------------------------------- headers, grouping, sorting


@dataclass
class SliceEntry:
    """One slice to be: a file (and a frame for multi-frame files) with its sort information."""

    member: Member
    frame: int | None = None
    n_frames: int = 1
    position: float | None = None
    instance: int | None = None
    rows: int = 0
    columns: int = 0


@dataclass
class SeriesGroup:
    """The files of one (0020,000E) *Series Instance UID*, as the header pass found them.

    ``entries`` are in input order until :func:`sort_entries`; ``normal`` is the unit slice normal
    (pointing superior for axial slices) the entries' ``position`` was projected on.
    """

    uid: str
    entries: list[SliceEntry] = field(default_factory=list)
    modality: str | None = None
    orientation: str = "unknown"
    contrast: bool = False
    description: str | None = None
    normal: np.ndarray | None = None


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _orientation_of(iop: np.ndarray | None) -> tuple[str, np.ndarray | None]:
    """Name of the plane and the unit slice normal, oriented so its dominant axis is positive.

    For axial slices the normal points superior (+z in the DICOM patient frame, LPS), so the
    projection of Image Position Patient on it grows from inferior to superior.
    """
    if iop is None:
        return "unknown", None
    normal = np.cross(iop[:3], iop[3:])
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        return "unknown", None
    normal = normal / norm
    axis = int(np.argmax(np.abs(normal)))
    if normal[axis] < 0:
        normal = -normal
    if abs(normal[2]) >= _AXIAL_COSINE:
        return "axial", normal
    if abs(normal[axis]) >= _AXIAL_COSINE:
        return ("sagittal" if axis == 0 else "coronal"), normal
    return "oblique", normal


def _frame_geometry(ds: Any, n_frames: int) -> tuple[np.ndarray | None, list[np.ndarray | None]]:
    """Orientation and per-frame positions of an enhanced multi-frame DICOM (functional groups)."""
    iop = None
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    if shared:
        seq = getattr(shared[0], "PlaneOrientationSequence", None)
        if seq:
            iop = _floats(getattr(seq[0], "ImageOrientationPatient", None) or [], 6)
    if iop is None:
        iop = _floats(getattr(ds, "ImageOrientationPatient", None) or [], 6)
    positions: list[np.ndarray | None] = [None] * n_frames
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if per_frame and len(per_frame) == n_frames:
        for k, item in enumerate(per_frame):
            seq = getattr(item, "PlanePositionSequence", None)
            if seq:
                positions[k] = _floats(getattr(seq[0], "ImagePositionPatient", None) or [], 3)
            if iop is None:
                oseq = getattr(item, "PlaneOrientationSequence", None)
                if oseq:
                    iop = _floats(getattr(oseq[0], "ImageOrientationPatient", None) or [], 6)
    return iop, positions


@dataclass
class SeriesHeaders:
    """What the header pass (:func:`read_headers`) found: series, ordinary images, and files not read (with why).

    Carries identifying values (``identifying``, the UIDs behind ``salt``): for grouping and for
    screening names, never for output.
    """

    groups: dict[str, SeriesGroup] = field(default_factory=dict)
    images: list[Member] = field(default_factory=list)
    problems: list[tuple[Member, str, str]] = field(default_factory=list)  # (member, type, why)
    not_images: list[tuple[Member, str]] = field(default_factory=list)  # (member, reason)
    identifying: dict[int, list[str]] = field(default_factory=dict)
    uids: list[str] = field(default_factory=list)  # Series and SOP Instance UIDs of the images

    @property
    def salt(self) -> bytes:
        return _input_salt(self.uids)


def read_headers(members: list[Member], budget: Budget, upload: UploadLimits | None = None) -> SeriesHeaders:
    """Group DICOM members by series from their headers (files that are not DICOM are not parsed).

    A file whose header declares more frames than a scan may have, or a slice larger than
    :attr:`~brain_ct.limits.UploadLimits.max_slice_pixels`, is listed as a problem before anything
    is allocated from what it declares.

    Args:
        members: candidate files from :func:`brain_ct.collect.collect` (their ``kind`` set).
        budget: the request's time budget, checked between files.
        upload: the limits in force (default :func:`brain_ct.limits.current`).

    Returns:
        The :class:`SeriesHeaders`; each group's entries in input order (see :func:`sort_entries`).

    Raises:
        InvalidInputError: the time budget ran out.
    """
    # pydicom converts values on first access and its warnings and log lines about a malformed
    # value quote it (a UID, a date): touch the headers only under the io module's quiet guard.
    with quiet_dicom():
        return _group_headers(members, budget, upload or limits.current())


_NOT_DICOM_OR_IMAGE = (
    "not a DICOM file (no 'DICM' marker at byte 128, no DICOM data at the start) nor a PNG, JPEG, "
    "BMP, TIFF or WebP image"
)


def _group_headers(members: list[Member], budget: Budget, upload: UploadLimits) -> SeriesHeaders:
    found = SeriesHeaders()
    for done, member in enumerate(members):
        budget.check(done, len(members), "read")
        if is_dicomdir(member.name):
            found.not_images.append((member, "DICOMDIR: the export's index of its files, no image"))
            continue
        if member.kind == "image":
            found.images.append(member)
            continue
        if member.kind != "dicom":
            if is_sidecar(member.name):  # an empty or unreadable README is still only a README
                found.not_images.append((member, _SIDECAR))
            else:
                found.problems.append((member, "InvalidInputError", member.problem or _NOT_DICOM_OR_IMAGE))
            continue
        try:
            with reader_errors("upload"):
                _add_dicom(found, member, upload)
        except InvalidInputError as exc:
            # io names bytes "upload"; the member's label is put in front when the list is built.
            found.problems.append((member, type(exc).__name__, re.sub(r"^[^:]*: ", "", str(exc), count=1)))
    return found


def _add_dicom(found: SeriesHeaders, member: Member, upload: UploadLimits) -> None:
    """Put one DICOM member's slices (one per frame) into its series group, from its header alone."""
    groups = found.groups
    ds = read_dicom_header(member.data)
    found.identifying[id(member)] = privacy.identifying_values(ds)
    declared = _declared_size(ds, upload)
    sop = str(getattr(ds, "SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", "") or "")
    if sop == _DICOMDIR_SOP_CLASS:
        found.not_images.append((member, "DICOMDIR: the export's index of its files, no image"))
        return
    if "Rows" not in ds or "Columns" not in ds:
        found.not_images.append((member, _not_an_image(ds, sop)))
        return
    uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
    found.uids += [uid, str(getattr(ds, "SOPInstanceUID", "") or "")]
    group = groups.get(uid)
    if group is None:
        group = groups[uid] = SeriesGroup(uid=uid)
        group.modality = str(getattr(ds, "Modality", "") or "") or None
        group.contrast = bool(str(getattr(ds, "ContrastBolusAgent", "") or "").strip())
        group.description = _allowed_description(ds)
    rows, columns, n_frames = declared
    try:
        instance = int(ds.InstanceNumber) if "InstanceNumber" in ds and ds.InstanceNumber != "" else None
    except (TypeError, ValueError):
        instance = None
    if n_frames > 1:
        iop, frame_positions = _frame_geometry(ds, n_frames)
    else:
        iop = _floats(getattr(ds, "ImageOrientationPatient", None) or [], 6)
        frame_positions = [_floats(getattr(ds, "ImagePositionPatient", None) or [], 3)]
    if group.normal is None:
        group.orientation, group.normal = _orientation_of(iop)
    for k, ipp in enumerate(frame_positions):
        pos = None
        if ipp is not None and group.normal is not None:
            pos = float(np.dot(ipp, group.normal))
        group.entries.append(
            SliceEntry(
                member,
                frame=k if n_frames > 1 else None,
                n_frames=n_frames,
                position=pos,
                instance=instance,
                rows=rows,
                columns=columns,
            )
        )


#: Why a text or metadata file beside the slices is skipped.
_SIDECAR = "a text or metadata file beside the slices (README, LICENSE, .txt, .json, …), not an image"


def _declared_size(ds: Any, upload: UploadLimits) -> tuple[int, int, int]:
    """(rows, columns, frames) a header declares, refused when over the limits before any use.

    Raises:
        InvalidInputError: more frames than a scan may have, or a slice above the pixel limit.
    """
    try:
        frames = int(float(getattr(ds, "NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        frames = 1
    check_frame_count(frames, "upload", upload)
    try:
        rows, columns = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    except (TypeError, ValueError):
        rows = columns = 0  # no image: io says what is wrong if it is decoded
    if rows * columns > upload.max_slice_pixels:
        raise InvalidInputError(
            f"upload: a slice of {columns}x{rows} pixels ({rows * columns / 1e6:.1f} megapixels) is above the "
            f"limit of {upload.max_slice_pixels / 1e6:.1f} megapixels (a CT slice is 512 x 512); refused "
            "before decoding"
        )
    return rows, columns, frames


def _not_an_image(ds: Any, sop: str) -> str:
    """Why a DICOM without Rows/Columns is skipped, naming its kind (SOP class name or Modality)."""
    from pydicom.uid import UID

    kind = UID(sop).name if sop else ""
    if not kind or kind == sop:  # a private class's "name" is the UID itself: say nothing of it
        modality = str(getattr(ds, "Modality", "") or "").strip()
        kind = f"modality {modality}" if re.fullmatch(r"[A-Z]{1,16}", modality) else "no pixel data"
    return f"not an image (DICOM {kind}); only image slices are read"


def _allowed_description(ds: Any) -> str | None:
    """(0008,103E) Series Description, only when the privacy allow-list lets it out."""
    if "SeriesDescription" not in privacy.ALLOWED_TAGS:
        return None
    text = str(getattr(ds, "SeriesDescription", "") or "").strip()
    return text or None


def sort_entries(entries: list[SliceEntry]) -> str:
    """Sort in place, inferior → superior; return which key was used.

    Returns:
        ``"position"`` (Image Position Patient on the normal), ``"instance_number"``, ``"frame"``
        (the frames of one file) or ``"name"`` (natural order of the file names).
    """
    if entries and all(e.position is not None for e in entries):
        entries.sort(key=lambda e: (e.position, e.instance or 0, natural_key(e.member.name), e.frame or 0))
        return "position"
    if entries and all(e.instance is not None for e in entries) and len({e.member.name for e in entries}) > 1:
        entries.sort(key=lambda e: (e.instance, natural_key(e.member.name), e.frame or 0))
        return "instance_number"
    entries.sort(key=lambda e: (natural_key(e.member.name), e.frame or 0))
    return "frame" if len({e.member.name for e in entries}) == 1 and len(entries) > 1 else "name"


def _rank(group: SeriesGroup) -> tuple[bool, bool, bool, int]:
    """Preference of a series for reading: CT, axial, non-contrast, then the most slices."""
    return (group.modality == "CT", group.orientation == "axial", not group.contrast, len(group.entries))


def hashed_series_id(uid: str, salt: bytes) -> str:
    """The id a series is shown and chosen by: its Series Instance UID hashed with the input's salt
    (:attr:`SeriesHeaders.salt`), ``"no-series-uid"`` for files without one."""
    return privacy.hashed_uid(uid, salt=salt) if uid else "no-series-uid"


def _input_salt(uids: Sequence[str]) -> bytes:
    """Salt for the series ids of one input: derived from every image's UIDs in it.

    The ids must agree between two runs (``predict --list-series`` then ``--series-uid ID``), so
    the per-process salt of :func:`brain_ct.privacy.hashed_uid` cannot be used; a salt made of
    all the input's SOP Instance and Series Instance UIDs is stable for the same files, yet an id
    cannot be matched against a table of known Series UIDs without every other UID of the input.
    """
    digest = hashlib.sha256(b"brain_ct.series ids\0")
    for uid in sorted(set(uids)):
        digest.update(uid.encode("ascii", "replace") + b"\0")
    return digest.digest()[:16]


def _choose(groups: dict[str, SeriesGroup], series_uid: str | None, salt: bytes) -> SeriesGroup:
    if series_uid is not None:
        wanted = series_uid.strip()
        for uid, group in groups.items():
            if wanted in (uid, hashed_series_id(uid, salt)):
                return group
        available = ", ".join(sorted(hashed_series_id(u, salt) for u in groups))
        raise InvalidInputError(
            f"series {wanted!r} is not in this input; available series ids: {available}. "
            "Use one of them (see list_series)."
        )
    return max(groups.values(), key=_rank)


def list_series(
    source: str | os.PathLike[str] | bytes | Sequence[str | os.PathLike[str]],
    *,
    zip_limits: ZipLimits = DEFAULT_ZIP_LIMITS,
    limits: UploadLimits | None = None,
) -> list[SeriesInfo]:
    """The DICOM series in a source (headers only, no pixels decoded), preferred first.

    Args:
        source: a folder, a ``.zip`` (path or bytes), a list of files, a single DICOM, or a
            NIfTI volume (``.nii`` / ``.nii.gz``, path or bytes; one series, see
            :func:`brain_ct.nifti.nifti_info`).
        zip_limits: limits a zip must respect, and the time budget.
        limits: the upload budget (default :func:`brain_ct.limits.current`); a file declaring more
            frames or larger slices than it allows is left out.

    Returns:
        One :class:`SeriesInfo` per series, the one :func:`read_series` picks by default first
        (its ``default`` is True). Empty when the source holds no DICOM image.

    Raises:
        InvalidInputError: every file was refused (e.g. a DICOM declaring 2,000,000,000 frames);
            the message says why, per file.
    """
    nifti = _nifti_source(source)
    if nifti is not None:
        return [nifti_info(nifti)]
    with using_limits(limits) as upload:
        members, label, budget = collect(source, zip_limits, upload)
        found = read_headers(members, budget, upload)
    groups = found.groups
    if not groups and not found.images and found.problems:
        # Nothing to list because every file was refused: say why rather than "no series".
        name_members(members, found.identifying)
        why = [f"{m.label}: {text}" for m, _, text in sorted(found.problems, key=lambda p: p[0].ordinal)]
        more = f" (and {len(why) - 5} more)" if len(why) > 5 else ""
        raise InvalidInputError(f"no series of {label} could be listed. Per file: {'; '.join(why[:5])}{more}")
    ordered = sorted(groups.values(), key=_rank, reverse=True)
    return [
        SeriesInfo(
            series_id=hashed_series_id(g.uid, found.salt),
            description=g.description,
            modality=g.modality,
            n_slices=len(g.entries),
            orientation=g.orientation,
            contrast=g.contrast,
            default=i == 0,
        )
        for i, g in enumerate(ordered)
    ]


def _nifti_source(
    source: str | os.PathLike[str] | bytes | Sequence[str | os.PathLike[str]],
) -> Path | bytes | None:
    """The NIfTI file a source is (a path, bytes, or a one-element list), else None.

    A list of several files holding a ``.nii`` / ``.nii.gz`` is refused: a NIfTI file is a whole
    scan on its own, not one slice among others.
    """
    if isinstance(source, bytes | bytearray):
        return bytes(source) if is_nifti(source) else None
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return path if path.is_file() and is_nifti(path) else None
    paths = [Path(p) for p in source]
    if len(paths) == 1:
        return _nifti_source(paths[0])
    volumes = [p for p in paths if p.name.lower().endswith(NIFTI_SUFFIXES)]
    if volumes:
        raise InvalidInputError(
            f"{plural(len(paths), 'file')} were given, {plural(len(volumes), 'NIfTI volume')} among them; a NIfTI "
            "file (.nii / .nii.gz) is a whole scan on its own. Give one NIfTI volume at a time, or only DICOM "
            "or PNG/JPG slices"
        )
    return None


def _read_nifti(source: Path | bytes, *, series_uid: str | None, allow_unverified: bool) -> Series:
    """A NIfTI volume as a :class:`Series`; named like a DICOM file (screened, else ``"volume"``)."""
    label = source.name if isinstance(source, Path) else "upload"
    shown = label if isinstance(source, Path) and screen_name(label) else "volume"
    series = read_nifti_series(source, name=shown, allow_unverified=allow_unverified)
    _mark_head_check(series, allow_unverified)
    series.series_id = nifti_series_id(source)
    if series_uid is not None and series_uid.strip() != series.series_id:
        raise InvalidInputError(
            f"series {series_uid.strip()!r} was asked for, but {label} is one NIfTI volume, series "
            f"{series.series_id}; leave the series choice out for a NIfTI file"
        )
    # As for DICOM: the file's own name, never the folder it sits in (an upload sits in a cache).
    series.source = label
    return series


def _error(member: Member, exc: BaseException) -> tuple[int, dict[str, str]]:
    """An entry of :attr:`Series.errors`; its message without the file's label, which ``file`` holds."""
    message = str(exc)
    prefix = f"{member.label}: "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    return member.ordinal, {"file": member.label, "type": type(exc).__name__, "message": message}


def _read_identifiers(member: Member) -> dict[str, str]:
    """PatientName, PatientID and StudyDate of one file, read only because the caller asked."""
    ds = read_dicom_header(member.data)
    out = {}
    # quiet: a malformed name or date must not be quoted in a warning or log line
    with quiet_dicom(), reader_errors(member.label):
        for key in ("PatientName", "PatientID", "StudyDate"):
            value = str(getattr(ds, key, "") or "").strip()
            if value:
                out[key] = value
    return out


def read_series(
    source: str | os.PathLike[str] | bytes | Sequence[str | os.PathLike[str]],
    *,
    series_uid: str | None = None,
    allow_unverified: bool = False,
    zip_limits: ZipLimits = DEFAULT_ZIP_LIMITS,
    read_identifiers: bool = False,
    limits: UploadLimits | None = None,
) -> Series:
    """Read one series of slices, in anatomical order.

    Every input file is accounted for: read (a slice), in :attr:`Series.skipped` (readable but not
    part of this series: another series, a DICOM that is no image, an ordinary image beside DICOM
    slices, a DICOMDIR) or in :attr:`Series.errors` (could not be read). Hidden files and macOS
    ``__MACOSX`` resource forks are archive clutter and left out silently. File names are user
    data: outputs show a name only when it passes :func:`~brain_ct.collect.screen_name`, else ``"slice N at Z mm"``
    (slices, N from 1 in anatomical order) or ``"file N"`` (others, N from 1 in name order).

    Args:
        source: a folder (searched recursively), a ``.zip`` (path or bytes), a list of slice files
            (several files dropped at once), or one file (a multi-frame DICOM gives one slice per
            frame; a NIfTI volume ``.nii`` / ``.nii.gz``, path, bytes or a one-element list, gives
            its axial slices, see :func:`brain_ct.nifti.read_nifti_series`; any other single file
            is a series of one).
        series_uid: which DICOM series to read when there are several: its hashed id (as
            :func:`list_series` shows) or its raw Series Instance UID. Default: the axial
            non-contrast CT series with the most slices.
        allow_unverified: skip the "does this look like a head CT" check for every slice. Each
            slice's ``CTImage.head_check`` says which: ``"passed"`` (the series check ran and
            passed) or ``"skipped"``.
        zip_limits: limits a zip must respect and the time one request may take (:class:`~brain_ct.collect.ZipLimits`).
        read_identifiers: also keep PatientName, PatientID and StudyDate of the first slice in
            :attr:`Series.identifiers` (for a report the user explicitly asked to identify).
        limits: what the scan may cost (default :func:`brain_ct.limits.current`): its slices and
            pixels, summed over the headers, are checked before any slice is decoded; every reader
            this reading calls asks these (:func:`brain_ct.limits.using`).

    Returns:
        A :class:`Series` with at least one slice.

    Raises:
        InvalidInputError: unsafe or unreadable zip, empty source, unknown ``series_uid``, a scan
            over ``limits``, reading over the time budget, or no slice could be loaded (the message lists why, per file).
            For a NIfTI volume, whatever :func:`brain_ct.nifti.read_nifti_series` refuses.
    """
    with using_limits(limits) as upload:
        return _read_series(source, series_uid, allow_unverified, zip_limits, read_identifiers, upload)


def _read_series(
    source: str | os.PathLike[str] | bytes | Sequence[str | os.PathLike[str]],
    series_uid: str | None,
    allow_unverified: bool,
    zip_limits: ZipLimits,
    read_identifiers: bool,
    upload: UploadLimits,
) -> Series:
    nifti = _nifti_source(source)
    if nifti is not None:
        return _read_nifti(nifti, series_uid=series_uid, allow_unverified=allow_unverified)
    members, label, budget = collect(source, zip_limits, upload)
    found = read_headers(members, budget, upload)
    name_members(members, found.identifying)
    errors = [(m.ordinal, {"file": m.label, "type": t, "message": why}) for m, t, why in found.problems]
    skipped = [(m.ordinal, {"file": m.label, "reason": why}) for m, why in found.not_images]
    if found.groups:
        salt = found.salt
        group = _choose(found.groups, series_uid, salt)
        sort_key = sort_entries(group.entries)
        skipped += _left_beside(group, found, members)
        # A CT series is judged once as a series (below), not per slice: a scan's first and last
        # slices rightly show little head. Without a Modality each slice must pass io's own check,
        # which also asks for the user's consent to read it as CT; a series check on top of that
        # would only judge again slices that have already passed.
        slices_checked = not allow_unverified and group.modality != "CT"
        _check_scan_size(group.entries, upload, label)
        series = _load_dicom_entries(group.entries, not slices_checked, errors, budget)
        series.series_id = hashed_series_id(group.uid, salt)
        series.sort_key = sort_key
        if read_identifiers and group.entries:
            series.identifiers = _read_identifiers(group.entries[0].member)
    else:
        if series_uid is not None:
            raise InvalidInputError(
                f"series {series_uid!r} was asked for, but {label} holds no DICOM series "
                "(only ordinary images, which have no series id)."
            )
        entries = [SliceEntry(m) for m in sorted(found.images, key=lambda m: natural_key(m.name))]
        for entry in entries:
            budget.check(0, len(entries), "decoded")
            size = image_pixels(_bytes_of(entry.member), upload)
            entry.rows, entry.columns = size or (0, 0)
        _check_scan_size(entries, upload, label)
        slices_checked = False
        series = _load_dicom_entries(entries, True, errors, budget, sort_key="name")
    series.errors = [e for _, e in sorted(errors, key=lambda item: item[0])]
    series.skipped = [s for _, s in sorted(skipped, key=lambda item: item[0])]
    series.source = label
    if series.slices and not allow_unverified and not slices_checked:
        check_plausible_series(series, label)
    if series.slices:
        _mark_head_check(series, allow_unverified)
    if not series.slices:
        raise _nothing_read(series, label)
    return series


def _left_beside(
    group: SeriesGroup, found: SeriesHeaders, members: list[Member]
) -> list[tuple[int, dict[str, str]]]:
    """(ordinal, skipped entry) of every file left out beside the chosen ``group``: the other series'
    slices and ordinary images. Members outside the group let go of their bytes."""
    skipped = []
    for other in found.groups.values():
        if other is group:
            continue
        reason = (
            f"other series {hashed_series_id(other.uid, found.salt)}, {plural(len(other.entries), 'slice')}"
        )
        for member in {id(e.member): e.member for e in other.entries}.values():
            skipped.append((member.ordinal, {"file": member.label, "reason": reason}))
    chosen = {id(e.member) for e in group.entries}
    for member in members:
        if id(member) not in chosen:
            member.data = b""  # not part of the series: its bytes are not needed any more
    beside = "an ordinary image beside DICOM slices; not part of the series"
    skipped += [(member.ordinal, {"file": member.label, "reason": beside}) for member in found.images]
    return skipped


def _nothing_read(series: Series, label: str) -> InvalidInputError:
    """The refusal of a request of which no slice could be read, naming why per file (the first five)."""
    why = [f"{e['file']}: {e['message']}" for e in series.errors]
    why += [f"{k['file']}: {k['reason']}" for k in series.skipped]
    details = "; ".join(why[:5])
    more = f" (and {len(why) - 5} more)" if len(why) > 5 else ""
    return InvalidInputError(
        f"no slice of {label} could be read as a head CT. Accepted: DICOM CT slices or PNG/JPG "
        f"slices, in a folder, a zip or as several files. Per file: {details or 'no files'}{more}"
    )


def _bytes_of(member: Member) -> bytes:
    """A member's bytes: kept in memory, or read from disk (only its header is looked at)."""
    if isinstance(member.data, bytes):
        return member.data
    try:
        with Path(member.data).open("rb") as fh:
            return fh.read(1 << 20)  # image headers (and EXIF) sit in the first bytes
    except OSError:
        return b""


def _check_scan_size(entries: list[SliceEntry], upload: UploadLimits, label: str) -> None:
    """Refuse, before any slice is decoded, a scan whose headers declare more than ``upload`` allows."""
    if not entries:
        return
    pixels = sum(e.rows * e.columns for e in entries)
    big = max(entries, key=lambda e: e.rows * e.columns)
    upload.check_scan(len(entries), pixels, big.rows or 512, big.columns or 512, label)


def _mark_head_check(series: Series, allow_unverified: bool) -> None:
    """Record on every slice whether the head-CT check ran (and passed) for its series.

    Slices of a CT series and ordinary images are decoded without their own check (a scan's end
    slices rightly show little head), so each says "skipped" after decoding; the series check
    stands for all of them once it passed. Slices without a Modality passed their own check.
    """
    verdict = "skipped" if allow_unverified else "passed"
    for ct in series.slices:
        ct.head_check = verdict


def _load_dicom_entries(
    entries: list[SliceEntry],
    allow_unverified: bool,
    errors: list[tuple[int, dict[str, str]]],
    budget: Budget,
    *,
    sort_key: str = "name",
) -> Series:
    """Decode each file once, keeping the sorted order; frames of a multi-frame file share one decode.

    Each slice is named by its screened file name (``#N`` for frame N of a multi-frame file), or
    ``"slice N at Z mm"`` (N from 1 in this order; Z its position) when the name may not be shown.
    """
    decoded: dict[int, list[CTImage] | InvalidInputError] = {}
    series = Series(slices=[], files=[], positions=[], sort_key=sort_key)
    for done, entry in enumerate(entries):
        budget.check(done, len(entries), "decoded")
        member = entry.member
        if entry.frame is None:
            try:
                ct = load_image(member.data, allow_unverified=allow_unverified, name=member.label)
            except InvalidInputError as exc:
                errors.append(_error(member, exc))
                continue
            name = member.shown
        else:
            key = id(member)
            if key not in decoded:
                try:
                    decoded[key] = load_frames(
                        member.data,
                        allow_unverified=allow_unverified,
                        name=member.label,
                        check=lambda k, n, done=done: budget.check(
                            done, len(entries), f"decoded (frame {k + 1} of {n})"
                        ),
                    )
                except BudgetExceededError:
                    raise
                except InvalidInputError as exc:
                    decoded[key] = exc
                    errors.append(_error(member, exc))
            frames = decoded[key]
            if isinstance(frames, InvalidInputError) or entry.frame >= len(frames):
                continue
            ct = frames[entry.frame]
            name = f"{member.shown}#{entry.frame + 1}" if member.shown else None
        if name is None:
            name = f"slice {len(series.slices) + 1}"
            if entry.position is not None:
                name += f" at {entry.position:.1f} mm"
        ct.name = name
        series.slices.append(ct)
        series.files.append(name)
        series.positions.append(entry.position)
    return series


def context_neighbors(slices: Sequence[T], k: int) -> list[list[T | None]]:
    """Per slice, its 2k anatomical neighbours ``[s−k, …, s−1, s+1, …, s+k]`` (None past either end).

    With the slices of a :class:`Series` this is the ``neighbors`` argument of
    ``Predictor.predict_batch`` for slice-context models (``settings.context_slices`` = k); the
    predictor repeats the slice itself for a None. Training uses it on file indices
    (:func:`anatomical_groups`).
    """
    n = len(slices)
    return [
        [slices[j] if 0 <= j < n else None for j in (*range(i - k, i), *range(i + 1, i + k + 1))]
        for i in range(n)
    ]


def anatomical_groups(paths: Sequence[str | os.PathLike[str]]) -> list[list[int]]:
    """Group DICOM files into series by their headers, each in anatomical order (inferior → superior).

    For slice-context training on files (an image folder, an RSNA folder): a slice's neighbours are
    the files next to it in its group, wherever they sit on disk. Only headers are parsed. Files
    left out have no neighbours: PNG/JPG and other non-DICOM files, multi-frame files, files
    without a SeriesInstanceUID, and series whose order would be a guess (no Image Position
    Patient or Instance Number on every slice).

    Args:
        paths: DICOM (or other) files.

    Returns:
        One list per series of indices into ``paths``, inferior → superior.
    """
    members = [Member(str(p), Path(p)) for p in paths]
    for member in members:
        sniff_path(member)
    index = {id(m): i for i, m in enumerate(members)}
    # Training reads thousands of local files: no per-request time budget here.
    groups = read_headers(members, Budget(ZipLimits(max_seconds=math.inf), "files")).groups
    out: list[list[int]] = []
    for uid, group in groups.items():
        entries = [e for e in group.entries if e.n_frames == 1]
        if not uid or len(entries) < 2:
            continue
        if sort_entries(entries) in ("position", "instance_number"):
            out.append([index[id(e.member)] for e in entries])
    return out
