"""Read a file a person drops in — a DICOM slice or an ordinary image — into a :class:`CTImage`: the entry points.

:func:`load_image` (one slice) and :func:`load_frames` (every frame of a multi-frame DICOM) read
the file (:mod:`brain_ct.source`), ask :mod:`brain_ct.sniff` what it is, refuse formats no reader
takes, and hand it to the DICOM reader (:mod:`brain_ct.dicom`, HU by :mod:`brain_ct.hu`) or the
ordinary-image reader (:mod:`brain_ct.ordinary_image`); then the head-CT plausibility check runs
(:func:`brain_ct.framing.check_plausible`). NIfTI volumes are whole scans: :mod:`brain_ct.nifti`.

Where a new single-file input format goes: its magic in :mod:`brain_ct.sniff`, its reader in a
module of its own, and its branch in :func:`_load_data` here.
"""

from __future__ import annotations

import brain_ct.framing as framing
from brain_ct.dicom import FrameCheck, dicom_frames, quiet_dicom
from brain_ct.errors import InvalidInputError
from brain_ct.image import Box as Box  # re-exported: the box type lived here first
from brain_ct.image import CTImage
from brain_ct.ordinary_image import load_ordinary
from brain_ct.sniff import HEAD_BYTES, IMAGE_FORMATS, has_preamble, sniff, unsupported_words
from brain_ct.source import ACCEPTED, Source, read_source, reader_errors


def _load(
    source: Source,
    allow_unverified: bool,
    frame: int | None,
    name: str | None,
    all_frames: bool,
    check: FrameCheck | None = None,
) -> list[CTImage]:
    data, shown = read_source(source, name)
    with reader_errors(shown):
        return _load_data(data, shown, allow_unverified, frame, all_frames, check)


def _load_data(
    data: bytes,
    shown: str,
    allow_unverified: bool,
    frame: int | None,
    all_frames: bool,
    check: FrameCheck | None,
) -> list[CTImage]:
    kind = sniff(data[:HEAD_BYTES])
    # The DICM marker wins over any magic in the preamble (TIFF/DICOM dual files carry TIFF's there).
    what = None if has_preamble(data) or kind in IMAGE_FORMATS else unsupported_words(data)
    if what is not None:
        raise InvalidInputError(f"{shown}: this is {what}, which is not supported; expected {ACCEPTED}")
    if kind not in IMAGE_FORMATS:
        with quiet_dicom():
            images = dicom_frames(data, shown, all_frames, frame, allow_unverified, check)
    else:
        if frame not in (None, 0):
            raise InvalidInputError(f"{shown}: frame {frame} requested, but a {kind} image has one frame")
        images = [load_ordinary(data, kind, shown)]
    if not allow_unverified:
        # One representative frame (the middle) is checked: a scan's first and last slices
        # may rightly hold little or no head.
        framing.check_plausible(*images[len(images) // 2])
    else:
        for ct, _ in images:
            ct.head_check = "skipped"
    return [ct for ct, _ in images]


def load_image(
    source: Source,
    *,
    allow_unverified: bool = False,
    frame: int | None = None,
    name: str | None = None,
) -> CTImage:
    """Load one slice from a DICOM file or an ordinary image.

    Args:
        source: a path (str or Path), bytes, or a binary file object.
        allow_unverified: skip the head-CT plausibility check (:func:`brain_ct.framing.check_plausible`)
            and accept a DICOM without Modality tag, for unusual but genuine slices.
        frame: for multi-frame DICOM, the frame to read (default: the middle one).
        name: display name; default the file name for paths, else ``"upload"``.

    Returns:
        The slice as a :class:`CTImage`.

    Raises:
        InvalidInputError: the input cannot be read as a CT slice (the message says why and
            what is accepted); :class:`~brain_ct.errors.NotHeadCTError` when it decodes but does
            not look like an axial head CT.
    """
    return _load(source, allow_unverified, frame, name, all_frames=False)[0]


def load_frames(
    source: Source,
    *,
    allow_unverified: bool = False,
    name: str | None = None,
    check: FrameCheck | None = None,
) -> list[CTImage]:
    """Load every frame of a (multi-frame) DICOM file; a single-frame file or an image gives one.

    Each frame's ``meta`` carries ``FrameIndex`` and ``NumberOfFrames`` (multi-frame only) and,
    for enhanced CT, its own ImagePositionPatient. The plausibility check runs on the middle frame.

    Args:
        source: a path, bytes or a binary file object.
        allow_unverified: as :func:`load_image`.
        name: as :func:`load_image`.
        check: called before each frame with (frames done, frames in all), e.g. the request's
            time budget (:meth:`brain_ct.collect.Budget.check`); what it raises stops the reading.

    Raises:
        InvalidInputError: as :func:`load_image`; also when the frames are more than a scan may
            have (:meth:`brain_ct.limits.UploadLimits.check_scan`), checked before any is decoded.
    """
    return _load(source, allow_unverified, None, name, all_frames=True, check=check)
