"""A scan as read, whatever its format: :class:`Series`, :class:`SeriesInfo` and the series head-CT check.

Every volume reader produces these: :mod:`brain_ct.series` (DICOM series, PNG/JPG slices) and
:mod:`brain_ct.nifti` (NIfTI volumes). They sit here, below both readers, so that ``series`` can
dispatch a NIfTI source to ``nifti`` while ``nifti`` returns a ``Series`` without importing
``series`` back. ``brain_ct.series`` re-exports all three names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import brain_ct.framing as framing
from brain_ct.errors import NotHeadCTError
from brain_ct.image import CTImage
from brain_ct.wording import plural


@dataclass
class Series:
    """The slices of one series, in anatomical order (inferior → superior).

    Attributes:
        slices: the loaded slices, one :class:`~brain_ct.image.CTImage` each.
        files: per slice, its display name: the name inside the folder or zip (POSIX relative
            path, or the base name) when it passes :func:`~brain_ct.collect.screen_name`, else ``"slice N at Z mm"``
            (N from 1 in anatomical order, Z its position; ``"slice N"`` without one); frames of a
            multi-frame DICOM are ``"name#N"`` (N from 1). Never a temp path. Also ``CTImage.name``.
        positions: per slice, its position in mm along the slice normal (pointing superior), or
            ``None`` where (0020,0032) *Image Position Patient* is missing.
        series_id: hashed (0020,000E) *Series Instance UID* (:func:`brain_ct.privacy.hashed_uid`
            salted with the input's own UIDs, so the same files give the same id in every run;
            not equal to ``meta["SeriesUIDHash"]``); ``None`` for ordinary images.
        errors: files that could not be read: ``{"file", "type", "message"}`` each; ``file`` is the
            screened name or ``"file N"`` (N from 1 in the natural order of the input's names).
        skipped: readable input files that are not part of this series (another series, a non-image
            DICOM such as RTPLAN or SR, an ordinary image beside DICOM slices): ``{"file", "reason"}`` each,
            e.g. ``{"file": "IM0003", "reason": "other series 3f2a…, 1 slice"}``.
        source: what was read, as a display string: the file or folder's own name (never the
            folder it sits in: an upload sits in the server's cache), ``"zip"``/``"upload"`` for
            bytes, or ``"N files"``.
        sort_key: how the slices were ordered: ``"position"``, ``"instance_number"``, ``"name"``.
        identifiers: (0010,0010) PatientName, (0010,0020) PatientID and (0008,0020) StudyDate
            of the first slice, only when ``read_series(..., read_identifiers=True)`` asked for
            them (empty otherwise); never included in :meth:`to_dict` or ``repr``.
    """

    slices: list[CTImage]
    files: list[str]
    positions: list[float | None]
    series_id: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    source: str = ""
    sort_key: str = "name"
    identifiers: dict[str, str] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.slices)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary without pixels or identifiers."""
        return {
            "source": self.source,
            "series_id": self.series_id,
            "n_slices": len(self.slices),
            "files": list(self.files),
            "positions": list(self.positions),
            "sort_key": self.sort_key,
            "errors": [dict(e) for e in self.errors],
            "skipped": [dict(s) for s in self.skipped],
        }


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a source, as :func:`~brain_ct.series.list_series` shows it (nothing identifying).

    Attributes:
        series_id: hashed Series Instance UID, the same in every run for the same input (pass it
            back as ``series_uid`` to choose it, also from another process).
        description: (0008,103E) *Series Description* when the privacy allow-list permits it.
        modality: (0008,0060) *Modality*, e.g. ``"CT"``.
        n_slices: slices in the series (frames counted for multi-frame files).
        orientation: ``"axial"``, ``"coronal"``, ``"sagittal"``, ``"oblique"`` or ``"unknown"``.
        contrast: True when (0018,0010) *Contrast/Bolus Agent* is set.
        default: True for the series :func:`~brain_ct.series.read_series` picks when none is chosen.
    """

    series_id: str
    description: str | None
    modality: str | None
    n_slices: int
    orientation: str
    contrast: bool
    default: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "series_id": self.series_id,
            "description": self.description,
            "modality": self.modality,
            "n_slices": self.n_slices,
            "orientation": self.orientation,
            "contrast": self.contrast,
            "default": self.default,
        }


def check_plausible_series(series: Series, label: str) -> None:
    """Refuse a series that does not look like a head CT, judged on its central slices.

    The middle slice and those at a quarter and three quarters are tried; one plausible slice is
    enough (the end slices of a scan, skull base and vertex, rightly show little head).

    Raises:
        NotHeadCTError: none of them looks like an axial head-CT slice.
    """
    n = len(series.slices)
    first: NotHeadCTError | None = None
    for i in dict.fromkeys((n // 2, n // 4, (3 * n) // 4)):
        try:
            framing.check_plausible(series.slices[i])
            return
        except NotHeadCTError as exc:
            first = first or exc
    where = f"{label}" if n == 1 else f"{label} ({plural(n, 'slice')}, judged on its central slices)"
    raise NotHeadCTError(f"{where}: {first}")
