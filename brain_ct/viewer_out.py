"""Results out for DICOM viewers: Grad-CAM overlays as DICOM Secondary Capture images.

A PACS or DICOM viewer shows images, not PNG files. :func:`write_dicom_overlays` writes each
slice's overlay (the heatmap blended on the brain window, :meth:`Prediction.overlay`) as an RGB
Secondary Capture image built by highdicom (:class:`highdicom.sc.SCImage`), all of one input in
one new series.

Privacy: nothing of the source's patient, study, institution or dates is copied. Patient's Name
(0010,0010) and Patient ID (0010,0020) stay empty (Type 2: present, no value) and (0012,0062)
*Patient Identity Removed* says YES. Only non-identifying geometry that :mod:`brain_ct.privacy`
allows reaches the new image (:data:`COPIED_META`: pixel spacing, and the patient orientation
derived from (0020,0037) *Image Orientation Patient*). The study, series and image UIDs are new
unless the user asks for the overlays to sit with the source (:func:`source_reference`, the CLI's
``--keep-uids``): then (0020,000D) *Study Instance UID* is the source's, and (0008,2112) *Source
Image Sequence* and (0008,1115) *Referenced Series Sequence* name the source series and images. A
UID is the one exception to the allow-list, made only on that explicit request.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brain_ct.collect import DEFAULT_ZIP_LIMITS, collect
from brain_ct.dicom import quiet_dicom, read_dicom_header
from brain_ct.errors import InvalidInputError
from brain_ct.series import Series, hashed_series_id, read_headers, sort_entries

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from brain_ct.predictor import Prediction

#: Meta keys copied into a Secondary Capture: geometry only, each in :data:`brain_ct.privacy.ALLOWED_META_KEYS`.
COPIED_META: tuple[str, ...] = ("PixelSpacing", "ImageOrientationPatient")

#: (0008,103E) Series Description of the overlays: what they are, and what they are not.
SERIES_DESCRIPTION = "brain_ct Grad-CAM overlay - research aid, not a diagnosis"

#: (0008,0070) Manufacturer of the overlays (the software that made them).
MANUFACTURER = "brain_ct"

#: (0020,0011) Series Number of the overlay series (high, so viewers list it after the scan's own).
SERIES_NUMBER = 9901

# Direction cosine components at least this large name a patient direction in Patient Orientation.
_ORIENTATION_MIN = 0.25
_LPS_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))


@dataclass(frozen=True)
class SourceReference:
    """The source UIDs an overlay series refers to (only on the user's explicit request).

    Attributes:
        study_uid: (0020,000D) *Study Instance UID* of the source: the overlays join its study.
        series_uid: (0020,000E) *Series Instance UID* of the source series.
        instances: per slice, in the series' order, (SOP Class UID, SOP Instance UID, frame number
            from 1 or None) of the source image, or None when it cannot be matched to one file.
    """

    study_uid: str
    series_uid: str
    instances: tuple[tuple[str, str, int | None] | None, ...] = ()


def _uids(ds: Any) -> tuple[str, str, str, str]:
    """(Study, Series, SOP Class, SOP Instance) UIDs of a header; empty strings where missing."""
    sop_class = getattr(ds, "SOPClassUID", "") or getattr(
        getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""
    )
    return (
        str(getattr(ds, "StudyInstanceUID", "") or ""),
        str(getattr(ds, "SeriesInstanceUID", "") or ""),
        str(sop_class or ""),
        str(getattr(ds, "SOPInstanceUID", "") or ""),
    )


def _need(uids: tuple[str, ...], what: str) -> None:
    if not uids[0] or not uids[1]:
        raise InvalidInputError(
            f"{what} has no Study or Series Instance UID, so the overlays cannot refer to it; "
            "leave out --keep-uids (the overlays then get new UIDs)"
        )


def source_reference(source: str | os.PathLike[str], series: Series | None = None) -> SourceReference:
    """Read the UIDs the overlays of ``source`` refer to (headers only, no pixels).

    Args:
        source: a single DICOM file (``series`` None: one slice), or the folder, zip or files that
            ``series`` was read from by :func:`brain_ct.series.read_series`.
        series: the series read from ``source`` (its ``series_id`` picks the series; its slice
            positions match slices to files).

    Returns:
        The :class:`SourceReference`; per-slice instances are None where a slice cannot be matched
        to exactly one source file (slices without Image Position Patient when files failed to load).

    Raises:
        InvalidInputError: not DICOM, the series is not in ``source``, or the source lacks its
            Study or Series Instance UID.
    """
    if series is None:
        with quiet_dicom():
            uids = _uids(read_dicom_header(source))
        _need(uids, Path(source).name)
        return SourceReference(uids[0], uids[1], ((uids[2], uids[3], None),) if uids[3] else (None,))

    if series.series_id is None or not series.slices or series.slices[0].source != "dicom":
        raise InvalidInputError(
            f"{series.source or 'the input'} is not a DICOM series; DICOM overlays refer to DICOM input only"
        )
    members, label, budget = collect(source, DEFAULT_ZIP_LIMITS)
    found = read_headers(members, budget)
    group = next(
        (g for uid, g in found.groups.items() if hashed_series_id(uid, found.salt) == series.series_id),
        None,
    )
    if group is None:
        raise InvalidInputError(
            f"series {series.series_id} is not in {label}; read it with read_series first"
        )
    sort_entries(group.entries)
    headers: dict[int, tuple[str, str, str, str]] = {}
    with quiet_dicom():
        for entry in group.entries:
            if id(entry.member) not in headers:
                headers[id(entry.member)] = _uids(read_dicom_header(entry.member.data))
    first = headers[id(group.entries[0].member)]
    _need(first, label)
    return SourceReference(first[0], first[1], tuple(_match(series, group.entries, headers)))


def _match(series: Series, entries: Sequence[Any], headers: dict[int, tuple[str, ...]]) -> list[Any]:
    """Per slice, the (SOP Class, SOP Instance, frame) of its file: entries are the sorted source
    files, the slices a subsequence of them (files that failed to decode are missing)."""

    def ref(entry: Any) -> tuple[str, str, int | None] | None:
        uids = headers[id(entry.member)]
        return (uids[2], uids[3], None if entry.frame is None else entry.frame + 1) if uids[3] else None

    if len(entries) == len(series.slices):
        return [ref(e) for e in entries]
    if any(p is None for p in series.positions):
        return [None] * len(series.slices)
    out: list[Any] = []
    j = 0
    for position in series.positions:
        while j < len(entries) and entries[j].position != position:
            j += 1
        out.append(ref(entries[j]) if j < len(entries) else None)
        j += 1
    return out


def patient_orientation(iop: Sequence[float] | None) -> tuple[str, str] | None:
    """(0020,0020) *Patient Orientation* from (0020,0037) *Image Orientation Patient*.

    The first value is the patient direction of increasing column index (along a row), the
    second of increasing row index, each as letters L/R, A/P, H/F (LPS patient frame) of the
    components of at least :data:`_ORIENTATION_MIN`, largest first: ``("L", "P")`` for a standard
    axial slice. None without a valid orientation.
    """
    try:
        values = np.asarray([float(v) for v in (iop or ())], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if values.shape != (6,) or not np.isfinite(values).all():
        return None
    out = []
    for vector in (values[:3], values[3:]):
        order = np.argsort(-np.abs(vector))
        letters = "".join(
            _LPS_LETTERS[i][int(vector[i] > 0)] for i in order if abs(vector[i]) >= _ORIENTATION_MIN
        )
        if not letters:
            return None
        out.append(letters)
    return out[0], out[1]


def secondary_captures(
    predictions: Sequence[Prediction],
    *,
    reference: SourceReference | None = None,
    opacity: float = 0.4,
) -> list[Dataset]:
    """One RGB Secondary Capture per prediction (same order), all in one new series.

    Args:
        predictions: slices of one input, e.g. ``SeriesPrediction.predictions``; each needs its
            display image (:meth:`Prediction.overlay`).
        reference: the source UIDs to refer to (:func:`source_reference`), or None for new UIDs
            only (the overlays then form a study of their own).
        opacity: colour weight at full heat, in [0, 1].

    Returns:
        highdicom ``SCImage`` datasets: ``pixel_array`` uint8 [H, W, 3] is the overlay.

    Raises:
        InvalidInputError: no predictions, a prediction without its image, a bad opacity, or a
            reference with a different number of slices.
    """
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    if not predictions:
        raise InvalidInputError("no predictions to write as DICOM overlays")
    if reference is not None and reference.instances and len(reference.instances) != len(predictions):
        raise InvalidInputError(
            f"the source reference names {len(reference.instances)} images for {len(predictions)} slices"
        )
    study_uid = reference.study_uid if reference is not None else generate_uid()
    series_uid = generate_uid()
    out = []
    for k, prediction in enumerate(predictions):
        pixels = np.ascontiguousarray(prediction.overlay(opacity=opacity), dtype=np.uint8)
        meta = {key: prediction.meta[key] for key in COPIED_META if key in prediction.meta}
        orientation = patient_orientation(meta.get("ImageOrientationPatient"))
        spacing = meta.get("PixelSpacing")
        sc = hd.sc.SCImage(
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            series_number=SERIES_NUMBER,
            sop_instance_uid=generate_uid(),
            instance_number=k + 1,
            manufacturer=MANUFACTURER,
            # highdicom wants an orientation for patient images; an unknown one is stored empty below.
            patient_orientation=orientation or ("L", "P"),
            pixel_spacing=tuple(float(v) for v in spacing) if spacing else None,
        )
        if orientation is None:
            sc.PatientOrientation = None  # Type 2: present and empty = unknown
        sc.PatientIdentityRemoved = "YES"
        sc.BurnedInAnnotation = "NO"
        sc.SeriesDescription = SERIES_DESCRIPTION
        sc.DerivationDescription = (
            f"Grad-CAM heatmap (JET colours, opacity {opacity:g}) blended on the brain window (40/80 HU)"
        )
        instance = reference.instances[k] if reference is not None and reference.instances else None
        if instance is not None:
            item = _instance_item(instance)
            if instance[2] is not None:
                item.ReferencedFrameNumber = instance[2]
            sc.SourceImageSequence = [item]
        if reference is not None:
            # Common Instance Reference: the source series and the image this one derives from
            # (all matched images of the series when this slice's own file is unknown).
            known = [instance] if instance is not None else [i for i in reference.instances if i is not None]
            if known:
                series_item = Dataset()
                series_item.SeriesInstanceUID = reference.series_uid
                series_item.ReferencedInstanceSequence = [_instance_item(i) for i in known]
                sc.ReferencedSeriesSequence = [series_item]
        out.append(sc)
    return out


def _instance_item(instance: tuple[str, str, int | None]) -> Dataset:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = instance[0], instance[1]
    return item


def write_dicom_overlays(
    predictions: Sequence[Prediction],
    folder: str | os.PathLike[str],
    *,
    stem: str = "overlay",
    reference: SourceReference | None = None,
    opacity: float = 0.4,
) -> list[Path]:
    """Write :func:`secondary_captures` as ``folder/<stem>_0001.dcm`` … (numbered from 1, slice order).

    All files are built before any is written, and each appears complete or not at all (written to
    a temporary file, then renamed); an existing file is never overwritten (``<stem>-2_0001.dcm``…).

    Args:
        predictions, reference, opacity: as :func:`secondary_captures`.
        folder: output folder (created when missing).
        stem: file name prefix (letters, digits, ``._-``; anything else becomes ``_``).

    Returns:
        The paths written.

    Raises:
        InvalidInputError: as :func:`secondary_captures`, or the folder cannot be created.
    """
    import glob
    import re

    datasets = secondary_captures(predictions, reference=reference, opacity=opacity)
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot create the DICOM output folder {str(out)!r}: {exc.strerror}"
        ) from None
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80] or "overlay"
    name, n = base, 1
    while any(out.glob(f"{glob.escape(name)}_[0-9][0-9][0-9][0-9].dcm")):
        n += 1
        name = f"{base}-{n}"
    written: list[Path] = []
    for k, ds in enumerate(datasets, start=1):
        target = out / f"{name}_{k:04d}.dcm"
        fd, tmp = tempfile.mkstemp(prefix=".overlay-", suffix=".part", dir=out)
        try:
            with os.fdopen(fd, "wb") as fh:
                ds.save_as(fh, enforce_file_format=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written
