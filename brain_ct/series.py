"""Whole-scan reading: gather the slices of one CT series, sort them anatomically, read them once.

A head CT is 30-40 axial slices. :func:`read_series` takes what a person drops in — a folder, a
``.zip``, several files at once, or one (multi-frame) DICOM — and returns a :class:`Series` whose
slices are in anatomical order, inferior → superior. :func:`predict_series` runs the model over
the series in batches and applies the documented scan-level rule (:class:`ScanRule`).

Reading, in order:

1. **Collect** the candidate files. Zips are checked as a whole *before* anything is read
   (:class:`ZipLimits`: entry names, symlinks, entry count, declared sizes, compression ratio of
   each member and of the whole zip); members are then read into memory one by one with the
   limits enforced on the bytes actually inflated (declared sizes can lie). Nothing is ever
   written to disk. The first bytes of each file decide what it is (:func:`_sniff`: the DICOM
   ``DICM`` marker or a DICOM element at the start, or an image signature); anything else is
   never inflated further nor parsed, and is listed in :attr:`Series.errors`. The whole request
   runs under a time budget (:attr:`ZipLimits.max_seconds`).
2. **Headers only** (``io.read_dicom_header``): group DICOMs by (0020,000E) *Series Instance UID*;
   with several series, pick the axial non-contrast CT series with the most slices unless the
   caller chooses one (``series_uid``, hashed or raw). Files not read are listed in
   :attr:`Series.skipped` with the reason (another series, a DICOM without an image, an
   ordinary image beside DICOM slices, a DICOMDIR). File names are user data: they are shown
   only when they pass :func:`screen_name`.
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
import io as _io
import math
import os
import re
import stat
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from brain_ct import framing, privacy
from brain_ct.errors import InvalidInputError, NotHeadCTError
from brain_ct.io import MAX_FILE_BYTES, load_frames, load_image, quiet_dicom, read_dicom_header
from brain_ct.jsonable import json_safe

if TYPE_CHECKING:
    from brain_ct.image import CTImage
    from brain_ct.predictor import Prediction, Predictor

T = TypeVar("T")

#: File name endings read as ordinary images (anything else is tried as DICOM).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: (0008,0016) SOP Class UID of a DICOMDIR (a PACS export's index file, no image): skipped silently.
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

#: |normal · z| above this (cosine of ~37°) counts as an axial slice: gantry tilts stay axial.
_AXIAL_COSINE = 0.8

_CHUNK = 1 << 20  # bytes read from a zip member at a time


@dataclass(frozen=True)
class ZipLimits:
    """Limits a zip must respect to be read at all; a zip over any of them is refused as a whole.

    Members are held in memory (never extracted to disk), hence the total-size limit.

    Attributes:
        max_entries: most entries (files and folders) in the zip.
        max_total_bytes: most uncompressed bytes of all members together (1 GiB: a 2000-slice
            thin-section CT of 512×512 slices is about 1 GiB).
        max_entry_bytes: most uncompressed bytes of a single member.
        max_ratio: highest uncompressed/compressed ratio of a member of at least
            ``ratio_floor_bytes`` (DICOM deflates ~2–10×; a zip bomb of zeros ~1000×).
        ratio_floor_bytes: members smaller than this are not checked for their ratio (a tiny
            blank file may compress very well and is harmless); the zip as a whole is checked
            against ``max_ratio`` once its members add up to :data:`_TOTAL_RATIO_FLOOR` bytes.
        max_seconds: most seconds spent reading one request (collecting, headers, decoding; not
            the model): a request that takes longer is stopped with a message stating this cap.
            Applies to folders and lists of files too.
    """

    max_entries: int = 2000
    max_total_bytes: int = 1 << 30
    max_entry_bytes: int = 256 << 20
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 1 << 20
    max_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not self.max_seconds > 0:
            raise InvalidInputError(f"max_seconds must be positive; got {self.max_seconds}")


DEFAULT_ZIP_LIMITS = ZipLimits()


@dataclass
class Series:
    """The slices of one series, in anatomical order (inferior → superior).

    Attributes:
        slices: the loaded slices, one :class:`~brain_ct.image.CTImage` each.
        files: per slice, its display name: the name inside the folder or zip (POSIX relative
            path, or the base name) when it passes :func:`screen_name`, else ``"slice N at Z mm"``
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
    """One series found in a source, as :func:`list_series` shows it (nothing identifying).

    Attributes:
        series_id: hashed Series Instance UID, the same in every run for the same input (pass it
            back as ``series_uid`` to choose it, also from another process).
        description: (0008,103E) *Series Description* when the privacy allow-list permits it.
        modality: (0008,0060) *Modality*, e.g. ``"CT"``.
        n_slices: slices in the series (frames counted for multi-frame files).
        orientation: ``"axial"``, ``"coronal"``, ``"sagittal"``, ``"oblique"`` or ``"unknown"``.
        contrast: True when (0018,0010) *Contrast/Bolus Agent* is set.
        default: True for the series :func:`read_series` picks when none is chosen.
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


# --------------------------------------------------------------------------- collecting files

#: A zip whose members add up to at least this many bytes is also checked as a whole against
#: ``ZipLimits.max_ratio``: 1000 small files of zeros each stay under the per-member floor.
_TOTAL_RATIO_FLOOR = 32 << 20

#: Bytes of a file looked at to tell DICOM, an ordinary image and anything else apart.
_HEAD_BYTES = 4096

#: Signatures of the ordinary image formats :func:`brain_ct.io.load_image` reads: (magic, offset).
_IMAGE_SIGNATURES: tuple[tuple[bytes, int], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0),
    (b"\xff\xd8\xff", 0),
    (b"II*\x00", 0),
    (b"MM\x00*", 0),
    (b"BM", 0),
    (b"WEBP", 8),
)

#: Groups a DICOM dataset written without preamble may start with (file meta, identifying
#: information, patient, acquisition, relationship, image pixel description).
_FIRST_GROUPS = frozenset({0x0002, 0x0004, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})


@dataclass
class _Member:
    """One candidate file.

    ``name`` is its path inside the folder or zip (internal only: names are user data and may
    carry identifiers; outputs use :attr:`label`). ``data`` is a path, or the bytes in memory
    (zip members; empty once a member is known not to be DICOM or an image). ``kind`` comes from
    the first bytes (:func:`_sniff`); ``shown`` is the screened display name or None, ``ordinal``
    the 1-based place of the file in the natural order of the names.
    """

    name: str
    data: Path | bytes
    kind: str = ""
    shown: str | None = None
    ordinal: int = 0
    problem: str | None = None

    @property
    def label(self) -> str:
        """What outputs call this file: its screened name, else ``"file N"``."""
        return self.shown or f"file {self.ordinal}"


def plural(n: int, noun: str) -> str:
    """``"1 slice"``, ``"2 slices"``: a count with its noun (regular plurals only)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``slice2`` before ``slice10`` (digits compared as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _sniff(head: bytes) -> str:
    """``"dicom"``, ``"image"`` or ``"other"`` from a file's first bytes, before any parsing.

    DICOM: the ``DICM`` marker after the 128-byte preamble followed by the file meta group and a
    data element (:func:`_dataset_follows_meta`), or (old exporters, no preamble) a
    first data element of a group in :data:`_FIRST_GROUPS`, little- or big-endian, with either
    an explicit VR (two capital letters) or a plausible implicit length. Anything else is never
    handed to pydicom, whose forced parsing of arbitrary bytes is slow (~2 MB/s).
    """
    if head[128:132] == b"DICM":
        return "dicom" if _dataset_follows_meta(head) else "other"
    for magic, offset in _IMAGE_SIGNATURES:
        if head[offset : offset + len(magic)] == magic and (offset == 0 or head[:4] == b"RIFF"):
            return "image"
    if len(head) >= 8:
        for order in ("<", ">"):
            group = int.from_bytes(head[0:2], "little" if order == "<" else "big")
            if group not in _FIRST_GROUPS:
                continue
            vr = head[4:6]
            if vr.isalpha() and vr.isupper():
                return "dicom"
            if int.from_bytes(head[4:8], "little" if order == "<" else "big") < 1 << 16:
                return "dicom"
    return "other"


def _dataset_follows_meta(head: bytes) -> bool:
    """After ``DICM`` comes the file meta group (0002,xxxx), explicit VR little endian; when its
    (0002,0000) *File Meta Information Group Length* is there, the first data element after it
    must be of a real group (not 0x0000: a run of zeros parses as thousands of empty elements)."""
    if head[132:134] != b"\x02\x00":
        return False
    if head[134:136] != b"\x00\x00" or head[136:138] != b"UL":
        return True  # no group length: nothing more to check cheaply
    start = 144 + int.from_bytes(head[140:144], "little")
    if start + 2 > len(head):
        return True  # the dataset starts past the bytes looked at
    return head[start : start + 2] != b"\x00\x00"


def _skip_silently(name: str) -> bool:
    """Archive clutter, not input: hidden files, macOS resource forks, Windows thumbnails."""
    parts = name.split("/")
    return (
        any(p.startswith(".") for p in parts)
        or "__MACOSX" in parts
        or parts[-1].lower() in ("thumbs.db", "desktop.ini")
    )


def _is_dicomdir(name: str) -> bool:
    return name.rsplit("/", 1)[-1].upper() == "DICOMDIR"


def _bad_entry_name(name: str) -> str | None:
    """Why a zip entry name is unsafe, or None when it is fine."""
    norm = name.replace("\\", "/")
    if "\x00" in norm:
        return "contains a NUL character"
    if norm.startswith("/"):
        return "is an absolute path"
    if re.match(r"^[A-Za-z]:", norm):
        return "starts with a drive letter"
    if any(part == ".." for part in norm.split("/")):
        return "contains a '..' path part (path traversal)"
    return None


def check_zip(zf: zipfile.ZipFile, limits: ZipLimits = DEFAULT_ZIP_LIMITS, *, label: str = "zip") -> None:
    """Refuse an unsafe zip as a whole, from its directory alone (before reading any member).

    Raises:
        InvalidInputError: naming the first offending entry and the limit it breaks.
    """
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise InvalidInputError(
            f"{label} has {len(infos)} entries; at most {limits.max_entries} are accepted. "
            "Zip only the slices of one CT series."
        )
    total = compressed = 0
    for k, info in enumerate(infos, start=1):
        entry = _entry_label(info.filename, k, len(infos))
        why = _bad_entry_name(info.filename)
        if why:
            raise InvalidInputError(
                f"{label} refused: entry {entry} {why}. Zip entries must be relative paths "
                "inside the archive; re-create the zip from the folder of slices."
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InvalidInputError(
                f"{label} refused: entry {entry} is a symbolic link; links are not accepted. "
                "Zip the slice files themselves."
            )
        if info.flag_bits & 0x1:
            raise InvalidInputError(
                f"{label} refused: entry {entry} is encrypted; zip the slices without a password."
            )
        if info.is_dir():
            continue
        if info.file_size > limits.max_entry_bytes:
            raise InvalidInputError(
                f"{label} refused: entry {entry} declares {info.file_size} bytes uncompressed; "
                f"at most {limits.max_entry_bytes} bytes per file are accepted."
            )
        if info.file_size >= limits.ratio_floor_bytes and info.file_size > limits.max_ratio * max(
            info.compress_size, 1
        ):
            raise InvalidInputError(
                f"{label} refused: entry {entry} expands {info.file_size / max(info.compress_size, 1):.0f}× "
                f"(limit {limits.max_ratio:.0f}×); this looks like a zip bomb."
            )
        total += info.file_size
        compressed += info.compress_size
        if total > limits.max_total_bytes:
            raise InvalidInputError(
                f"{label} refused: its files add up to more than {limits.max_total_bytes} bytes uncompressed "
                "(the limit). Zip only the slices of one CT series."
            )
    if total >= _TOTAL_RATIO_FLOOR and total > limits.max_ratio * max(compressed, 1):
        raise InvalidInputError(
            f"{label} refused: its {len(infos)} entries expand {total / max(compressed, 1):.0f}× together "
            f"(limit {limits.max_ratio:.0f}×); this looks like a zip bomb. Zip only the slices of one CT series."
        )


def _entry_label(name: str, k: int, n: int) -> str:
    """How a message names zip entry ``k`` of ``n``: its name, quoted, when it passes
    :func:`screen_name` (entry names are user data), else ``"number k of n"``."""
    return repr(name) if screen_name(name.replace("\\", "/")) else f"number {k} of {n}"


def _zip_failure(exc: BaseException) -> str:
    text = str(exc)
    if "CRC" in text:
        return "its checksum does not match"
    if isinstance(exc, NotImplementedError):
        return "unsupported compression method"
    if isinstance(exc, EOFError):
        return "the data ends early"
    return type(exc).__name__


class _Budget:
    """The time one request may spend reading (:attr:`ZipLimits.max_seconds`), checked between files."""

    def __init__(self, limits: ZipLimits, label: str) -> None:
        self.seconds = limits.max_seconds
        self.deadline = time.monotonic() + limits.max_seconds
        self.label = label

    def check(self, done: int, total: int, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise InvalidInputError(
                f"reading {self.label} was stopped at the {self.seconds:g} s limit for one request "
                f"({done} of {total} files {what}). Send only the slices of one CT series, or fewer files."
            )


def _read_zip(source: Path | bytes, limits: ZipLimits, label: str, budget: _Budget) -> list[_Member]:
    """Check a zip, then read its members into memory with the limits enforced while inflating.

    Each member's first bytes decide (:func:`_sniff`): a member that is neither DICOM nor an
    ordinary image is inflated no further and kept without its bytes (it is reported, never parsed).
    """
    try:
        zf = zipfile.ZipFile(_io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidInputError(
            f"{label} is not a readable zip file ({exc}); accepted: a .zip of DICOM or PNG/JPG slices."
        ) from None
    members: list[_Member] = []
    with zf:
        check_zip(zf, limits, label=label)
        infos = zf.infolist()
        total = 0
        for done, info in enumerate(infos):
            budget.check(done, len(infos), "unpacked")
            name = info.filename.replace("\\", "/")
            entry = _entry_label(info.filename, done + 1, len(infos))
            if info.is_dir() or _skip_silently(name):
                continue
            buf = bytearray()
            try:
                with zf.open(info) as fh:
                    buf += fh.read(_HEAD_BYTES)
                    kind = _sniff(bytes(buf))
                    total += len(buf)
                    while kind != "other" and (chunk := fh.read(_CHUNK)):
                        buf += chunk
                        total += len(chunk)
                        # Declared sizes can lie: enforce the limits on what is actually inflated.
                        if (
                            len(buf) > min(info.file_size, limits.max_entry_bytes)
                            or total > limits.max_total_bytes
                        ):
                            raise InvalidInputError(
                                f"{label} refused: entry {entry} inflates beyond its declared size "
                                "or the size limit; this looks like a zip bomb or a corrupt zip."
                            )
                        budget.check(done, len(infos), "unpacked")
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
                raise InvalidInputError(
                    f"{label} is corrupt or uses an unsupported compression (entry {entry}: "
                    # zipfile's own messages quote the entry name: only the kind of failure is shown
                    f"{_zip_failure(exc)}); "
                    "re-create it with standard (deflate) compression."
                ) from None
            members.append(_Member(name, b"" if kind == "other" else bytes(buf), kind=kind))
    return members


def _is_zip(path: Path) -> bool:
    """A ``.zip`` name, or a zip signature at the start (a dropped file may have lost its name)."""
    if path.suffix.lower() == ".zip":
        return True
    try:
        with path.open("rb") as fh:
            return fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    except OSError:
        return False


def _sniff_path(member: _Member) -> None:
    """Set ``kind`` of a file on disk from its first bytes (an unreadable file counts as "other")."""
    try:
        with Path(member.data).open("rb") as fh:  # type: ignore[arg-type]  (only called on paths)
            member.kind = _sniff(fh.read(_HEAD_BYTES))
    except OSError:
        member.kind = "other"


def _read_path(member: _Member, limits: ZipLimits, kept: int) -> int:
    """Read a file on disk once: set its ``kind``, and keep its bytes for the header and the decode
    while all kept bytes stay within ``limits.max_total_bytes`` (past that it is read again when
    decoded). A file too large, empty or unreadable gets its ``problem``. Returns the bytes kept."""
    path = Path(member.data)  # type: ignore[arg-type]  (only called on paths)
    limit = MAX_FILE_BYTES  # the io module's limit: a large multi-frame file on disk is fine
    try:
        size = path.stat().st_size
        if size > limit:
            member.kind = "other"
            member.problem = (
                f"the file is {size / 2**20:.0f} MiB, above the {limit / 2**20:.0f} MiB limit per file"
            )
            return 0
        data = path.read_bytes()
    except OSError as exc:
        member.kind = "other"
        member.problem = f"cannot be read ({exc.strerror or type(exc).__name__}); check its permissions"
        return 0
    if not data:
        member.kind = "other"
        member.problem = "the file is empty (0 bytes)"
        return 0
    member.kind = _sniff(data[:_HEAD_BYTES])
    if member.kind == "other" or kept + len(data) > limits.max_total_bytes:
        return 0
    member.data = data
    return len(data)


def _collect(
    source: str | os.PathLike[str] | bytes | Sequence[str | os.PathLike[str]], limits: ZipLimits
) -> tuple[list[_Member], str, _Budget]:
    """Candidate files of a source, the source's display string and the request's time budget.

    The display string is the file or folder's own name, never the folder it sits in (an upload
    sits in the server's cache). Every member comes back with its ``kind``, ``shown`` (None until
    :func:`_name_members`) and ``ordinal`` set.
    """
    members, label, budget = _gather(source, limits)
    kept = 0
    for done, member in enumerate(members):
        if not member.kind:
            budget.check(done, len(members), "read")
            kept += _read_path(member, limits, kept)
    for k, member in enumerate(sorted(members, key=lambda m: natural_key(m.name)), start=1):
        member.ordinal = k
    return members, label, budget


def _gather(
    source: str | os.PathLike[str] | bytes | Sequence[str | os.PathLike[str]], limits: ZipLimits
) -> tuple[list[_Member], str, _Budget]:
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
        budget = _Budget(limits, "the upload")
        if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
            return _read_zip(data, limits, "the zip", budget), "zip", budget
        return [_Member("upload", data, kind=_sniff(data[:_HEAD_BYTES]))], "upload", budget
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        label = path.name or str(source)
        budget = _Budget(limits, label)
        if path.is_dir():
            members = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for fname in files:
                    full = Path(root, fname)
                    rel = full.relative_to(path).as_posix()
                    if not _skip_silently(rel) and full.is_file():
                        members.append(_Member(rel, full))
                if len(members) > limits.max_entries:
                    raise InvalidInputError(
                        f"folder {label} holds more than {limits.max_entries} files; point to the folder "
                        "of one CT series."
                    )
                budget.check(len(members), len(members), "listed")
            if not members:
                raise InvalidInputError(
                    f"folder {label} holds no files; accepted: a folder of DICOM or PNG/JPG slices."
                )
            return members, label, budget
        if not path.is_file():
            raise InvalidInputError(
                f"{label} does not exist or is not a file or folder; accepted: a DICOM/PNG/JPG file, "
                "a folder of slices or a .zip of slices."
            )
        if _is_zip(path):
            members = _read_zip(path, limits, f"zip {label}", budget)
            if not members:
                raise InvalidInputError(
                    f"zip {label} holds no files; accepted: a .zip of DICOM or PNG/JPG slices."
                )
            return members, label, budget
        return [_Member(path.name, path)], label, budget
    paths = list(source)
    if not paths:
        raise InvalidInputError("no files were given; accepted: one or more DICOM or PNG/JPG slices.")
    if len(paths) > limits.max_entries:
        raise InvalidInputError(f"{len(paths)} files were given; at most {limits.max_entries} are accepted.")
    members = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise InvalidInputError(f"{path.name} is not a file; give the slice files themselves.")
        if len(paths) == 1 and _is_zip(path):
            return _gather(path, limits)
        members.append(_Member(path.name, path))
    return members, plural(len(paths), "file"), _Budget(limits, plural(len(paths), "file"))


# --------------------------------------------------------------------------- names are user data

#: Capitalised words a file or folder name may hold and still be shown: what scanners, PACS exports
#: and this project's own tools call slices. Any other capitalised word of 4+ letters may be a name.
_NAME_WORDS = frozenset(
    [
        "image",
        "images",
        "slice",
        "slices",
        "series",
        "scan",
        "scans",
        "frame",
        "frames",
        "file",
        "files",
        "dicom",
        "dicomdir",
        "axial",
        "coronal",
        "sagittal",
        "head",
        "brain",
        "skull",
        "bone",
        "soft",
        "thin",
        "thick",
        "standard",
        "std",
        "recon",
        "mpr",
        "scout",
        "localizer",
        "topogram",
        "plain",
        "contrast",
        "noncontrast",
        "hemorrhage",
        "normal",
        "masks",
        "mask",
        "phantom",
        "phantoms",
        "synth",
        "synthetic",
        "demo",
        "example",
        "examples",
        "test",
        "tests",
        "sample",
        "samples",
        "upload",
        "uploads",
        "data",
        "export",
        "study",
    ]
)

#: Extensions dropped before a name is screened.
_NAME_EXTENSIONS = (".dcm", ".dicom", ".dic", ".ima", ".img", ".raw", ".txt", ".bin", ".json", ".xml")
_NAME_EXTENSIONS += IMAGE_EXTENSIONS


def screen_name(name: str, identifying: Sequence[str] = ()) -> bool:
    """Whether a file or folder name from an upload may be shown (names are user data).

    A name passes only when it looks like what scanners, exports and people call slices
    (``IM0003``, ``img_12.dcm``, ``slice10.png``, ``broken.dcm``): every path part made of
    letters, digits, ``_ - . #`` and spaces, at most 48 characters; each word of 4+ letters
    either all lower case or one of :data:`_NAME_WORDS` (exports write names in capitals:
    ``ZORBLATT``, ``Quennell``, ``PIDZ99183`` do not pass); digit runs at most 6 long (a date
    such as 20210915 or a long id does not pass) and at most 4 of them (a UID does not); no ``^``
    (the DICOM person-name separator); and no identifying value of the file's own header
    (``identifying``, from :func:`brain_ct.privacy.identifying_values`, compared ignoring case).

    Args:
        name: a file name or a POSIX relative path (every part is screened).
        identifying: the identifying values of the file's DICOM header, if any.

    Returns:
        True when the name may be shown.
    """
    parts = name.split("/")
    if not name or any(not _part_passes(part) for part in parts):
        return False
    # "_" counts as a word character for the whole-word search: compare the words split apart.
    words = re.sub(r"[_\-.#/]+", " ", name)
    return privacy.scrub_text(words, values=identifying) == words


def _part_passes(part: str) -> bool:
    if not part or len(part) > 48 or not re.fullmatch(r"[A-Za-z0-9_\-.# ]+", part):
        return False
    stem = part
    for ext in _NAME_EXTENSIONS:
        if stem.lower().endswith(ext) and len(stem) > len(ext):
            stem = stem[: -len(ext)]
            break
    words = re.findall(r"[A-Za-z]+", stem)
    digits = re.findall(r"\d+", stem)
    return (
        all(len(w) <= 3 or w.islower() or w.lower() in _NAME_WORDS for w in words)
        and all(len(d) <= 6 for d in digits)
        and len(digits) <= 4
    )


def _name_members(members: list[_Member], identifying: dict[int, list[str]]) -> None:
    """Set each member's ``shown``: its relative path or base name when that passes
    :func:`screen_name` and no other member would be shown the same way; else None."""
    for member in members:
        values = identifying.get(id(member), [])
        base = member.name.rsplit("/", 1)[-1]
        if screen_name(member.name, values):
            member.shown = member.name
        elif screen_name(base, values):
            member.shown = base
    seen: dict[str, int] = {}
    for member in members:
        if member.shown is not None:
            seen[member.shown] = seen.get(member.shown, 0) + 1
    for member in members:
        if member.shown is not None and seen[member.shown] > 1:
            member.shown = None


# --------------------------------------------------------------------------- headers, grouping, sorting


@dataclass
class _Entry:
    """One slice to be: a file (and a frame for multi-frame files) with its sort information."""

    member: _Member
    frame: int | None = None
    n_frames: int = 1
    position: float | None = None
    instance: int | None = None


@dataclass
class _Group:
    uid: str
    entries: list[_Entry] = field(default_factory=list)
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
class _Headers:
    """What the header pass found: series, ordinary images, and files not read (with why)."""

    groups: dict[str, _Group] = field(default_factory=dict)
    images: list[_Member] = field(default_factory=list)
    problems: list[tuple[_Member, str, str]] = field(default_factory=list)  # (member, type, why)
    not_images: list[tuple[_Member, str]] = field(default_factory=list)  # (member, reason)
    identifying: dict[int, list[str]] = field(default_factory=dict)
    uids: list[str] = field(default_factory=list)  # Series and SOP Instance UIDs of the images

    @property
    def salt(self) -> bytes:
        return _input_salt(self.uids)


def _read_headers(members: list[_Member], budget: _Budget) -> _Headers:
    """Group DICOM members by series from their headers (files that are not DICOM are not parsed)."""
    # pydicom converts values on first access and its warnings and log lines about a malformed
    # value quote it (a UID, a date): touch the headers only under the io module's quiet guard.
    with quiet_dicom():
        return _group_headers(members, budget)


_NOT_DICOM_OR_IMAGE = (
    "not a DICOM file (no 'DICM' marker at byte 128, no DICOM data at the start) nor a PNG, JPEG, "
    "BMP, TIFF or WebP image"
)


def _group_headers(members: list[_Member], budget: _Budget) -> _Headers:
    found = _Headers()
    groups = found.groups
    for done, member in enumerate(members):
        budget.check(done, len(members), "read")
        if _is_dicomdir(member.name):
            found.not_images.append((member, "DICOMDIR: the export's index of its files, no image"))
            continue
        if member.kind == "image":
            found.images.append(member)
            continue
        if member.kind != "dicom":
            found.problems.append((member, "InvalidInputError", member.problem or _NOT_DICOM_OR_IMAGE))
            continue
        try:
            ds = read_dicom_header(member.data)
        except InvalidInputError as exc:
            # io names bytes "upload"; the member's label is put in front when the list is built.
            found.problems.append((member, type(exc).__name__, re.sub(r"^[^:]*: ", "", str(exc), count=1)))
            continue
        found.identifying[id(member)] = privacy.identifying_values(ds)
        sop = str(
            getattr(ds, "SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", "") or ""
        )
        if sop == _DICOMDIR_SOP_CLASS:
            found.not_images.append((member, "DICOMDIR: the export's index of its files, no image"))
            continue
        if "Rows" not in ds or "Columns" not in ds:
            found.not_images.append((member, _not_an_image(ds, sop)))
            continue
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
        found.uids += [uid, str(getattr(ds, "SOPInstanceUID", "") or "")]
        group = groups.get(uid)
        if group is None:
            group = groups[uid] = _Group(uid=uid)
            group.modality = str(getattr(ds, "Modality", "") or "") or None
            group.contrast = bool(str(getattr(ds, "ContrastBolusAgent", "") or "").strip())
            group.description = _allowed_description(ds)
        try:
            n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        except (TypeError, ValueError):
            n_frames = 1
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
                _Entry(
                    member,
                    frame=k if n_frames > 1 else None,
                    n_frames=n_frames,
                    position=pos,
                    instance=instance,
                )
            )
    return found


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


def _sort_entries(entries: list[_Entry]) -> str:
    """Sort in place, inferior → superior; return which key was used."""
    if entries and all(e.position is not None for e in entries):
        entries.sort(key=lambda e: (e.position, e.instance or 0, natural_key(e.member.name), e.frame or 0))
        return "position"
    if entries and all(e.instance is not None for e in entries) and len({e.member.name for e in entries}) > 1:
        entries.sort(key=lambda e: (e.instance, natural_key(e.member.name), e.frame or 0))
        return "instance_number"
    entries.sort(key=lambda e: (natural_key(e.member.name), e.frame or 0))
    return "frame" if len({e.member.name for e in entries}) == 1 and len(entries) > 1 else "name"


def _rank(group: _Group) -> tuple[bool, bool, bool, int]:
    """Preference of a series for reading: CT, axial, non-contrast, then the most slices."""
    return (group.modality == "CT", group.orientation == "axial", not group.contrast, len(group.entries))


def _series_id(uid: str, salt: bytes) -> str:
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


def _choose(groups: dict[str, _Group], series_uid: str | None, salt: bytes) -> _Group:
    if series_uid is not None:
        wanted = series_uid.strip()
        for uid, group in groups.items():
            if wanted in (uid, _series_id(uid, salt)):
                return group
        available = ", ".join(sorted(_series_id(u, salt) for u in groups))
        raise InvalidInputError(
            f"series {wanted!r} is not in this input; available series ids: {available}. "
            "Use one of them (see list_series)."
        )
    return max(groups.values(), key=_rank)


def list_series(
    source: str | os.PathLike[str] | bytes | Sequence[str | os.PathLike[str]],
    *,
    zip_limits: ZipLimits = DEFAULT_ZIP_LIMITS,
) -> list[SeriesInfo]:
    """The DICOM series in a source (headers only, no pixels decoded), preferred first.

    Args:
        source: a folder, a ``.zip`` (path or bytes), a list of files, a single DICOM, or a
            NIfTI volume (``.nii`` / ``.nii.gz``, path or bytes; one series, see
            :func:`brain_ct.nifti.nifti_info`).
        zip_limits: limits a zip must respect, and the time budget.

    Returns:
        One :class:`SeriesInfo` per series, the one :func:`read_series` picks by default first
        (its ``default`` is True). Empty when the source holds no DICOM image.
    """
    nifti = _nifti_source(source)
    if nifti is not None:
        from brain_ct.nifti import nifti_info

        return [nifti_info(nifti)]
    members, _, budget = _collect(source, zip_limits)
    found = _read_headers(members, budget)
    groups = found.groups
    ordered = sorted(groups.values(), key=_rank, reverse=True)
    return [
        SeriesInfo(
            series_id=_series_id(g.uid, found.salt),
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
    from brain_ct.nifti import NIFTI_SUFFIXES, is_nifti

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
    from brain_ct.nifti import nifti_series_id, read_nifti_series

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


def _error(member: _Member, exc: BaseException) -> tuple[int, dict[str, str]]:
    return member.ordinal, {"file": member.label, "type": type(exc).__name__, "message": str(exc)}


def _read_identifiers(member: _Member) -> dict[str, str]:
    """PatientName, PatientID and StudyDate of one file, read only because the caller asked."""
    ds = read_dicom_header(member.data)
    out = {}
    with quiet_dicom():  # a malformed name or date must not be quoted in a warning or log line
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
) -> Series:
    """Read one series of slices, in anatomical order.

    Every input file is accounted for: read (a slice), in :attr:`Series.skipped` (readable but not
    part of this series: another series, a DICOM that is no image, an ordinary image beside DICOM
    slices, a DICOMDIR) or in :attr:`Series.errors` (could not be read). Hidden files and macOS
    ``__MACOSX`` resource forks are archive clutter and left out silently. File names are user
    data: outputs show a name only when it passes :func:`screen_name`, else ``"slice N at Z mm"``
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
        zip_limits: limits a zip must respect and the time one request may take (:class:`ZipLimits`).
        read_identifiers: also keep PatientName, PatientID and StudyDate of the first slice in
            :attr:`Series.identifiers` (for a report the user explicitly asked to identify).

    Returns:
        A :class:`Series` with at least one slice.

    Raises:
        InvalidInputError: unsafe or unreadable zip, empty source, unknown ``series_uid``, reading
            over the time budget, or no slice could be loaded (the message lists why, per file).
            For a NIfTI volume, whatever :func:`brain_ct.nifti.read_nifti_series` refuses.
    """
    nifti = _nifti_source(source)
    if nifti is not None:
        return _read_nifti(nifti, series_uid=series_uid, allow_unverified=allow_unverified)
    members, label, budget = _collect(source, zip_limits)
    found = _read_headers(members, budget)
    _name_members(members, found.identifying)
    errors = [
        (m.ordinal, {"file": m.label, "type": t, "message": f"{m.label}: {why}"})
        for m, t, why in found.problems
    ]
    skipped = [(m.ordinal, {"file": m.label, "reason": why}) for m, why in found.not_images]
    if found.groups:
        salt = found.salt
        group = _choose(found.groups, series_uid, salt)
        sort_key = _sort_entries(group.entries)
        for other in found.groups.values():
            if other is group:
                continue
            reason = f"other series {_series_id(other.uid, salt)}, {plural(len(other.entries), 'slice')}"
            for member in {id(e.member): e.member for e in other.entries}.values():
                skipped.append((member.ordinal, {"file": member.label, "reason": reason}))
        chosen = {id(e.member) for e in group.entries}
        for member in members:
            if id(member) not in chosen:
                member.data = b""  # not part of the series: its bytes are not needed any more
        for member in found.images:
            skipped.append(
                (
                    member.ordinal,
                    {
                        "file": member.label,
                        "reason": "an ordinary image beside DICOM slices; not part of the series",
                    },
                )
            )
        # The head-CT check runs once for the series (below), not per slice: a scan's first and
        # last slices rightly show little head. A missing Modality still needs the user's consent.
        series = _load_dicom_entries(
            group.entries, allow_unverified or group.modality == "CT", errors, budget
        )
        series.series_id = _series_id(group.uid, salt)
        series.sort_key = sort_key
        if read_identifiers and group.entries:
            series.identifiers = _read_identifiers(group.entries[0].member)
    else:
        if series_uid is not None:
            raise InvalidInputError(
                f"series {series_uid!r} was asked for, but {label} holds no DICOM series "
                "(only ordinary images, which have no series id)."
            )
        entries = [_Entry(m) for m in sorted(found.images, key=lambda m: natural_key(m.name))]
        series = _load_dicom_entries(entries, True, errors, budget, sort_key="name")
    series.errors = [e for _, e in sorted(errors, key=lambda item: item[0])]
    series.skipped = [s for _, s in sorted(skipped, key=lambda item: item[0])]
    series.source = label
    if series.slices and not allow_unverified:
        _check_plausible_series(series, label)
    if series.slices:
        _mark_head_check(series, allow_unverified)
    if not series.slices:
        why = [e["message"] for e in series.errors] + [f"{k['file']}: {k['reason']}" for k in series.skipped]
        details = "; ".join(why[:5])
        more = f" (and {len(why) - 5} more)" if len(why) > 5 else ""
        raise InvalidInputError(
            f"no slice of {label} could be read as a head CT. Accepted: DICOM CT slices or PNG/JPG "
            f"slices, in a folder, a zip or as several files. Per file: {details or 'no files'}{more}"
        )
    return series


def _mark_head_check(series: Series, allow_unverified: bool) -> None:
    """Record on every slice whether the head-CT check ran (and passed) for its series.

    Slices are decoded without their own check (a scan's end slices rightly show little head), so
    each says "skipped" after decoding; the series check stands for all of them once it passed.
    """
    verdict = "skipped" if allow_unverified else "passed"
    for ct in series.slices:
        ct.head_check = verdict


def _check_plausible_series(series: Series, label: str) -> None:
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


def _load_dicom_entries(
    entries: list[_Entry],
    allow_unverified: bool,
    errors: list[tuple[int, dict[str, str]]],
    budget: _Budget,
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
                        member.data, allow_unverified=allow_unverified, name=member.label
                    )
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


# --------------------------------------------------------------------------- scan-level prediction


@dataclass(frozen=True)
class ScanRule:
    """How slice probabilities become the scan's probability and label.

    With slice probabilities ``p[0..n-1]`` in anatomical order, ``T`` = :attr:`threshold` (default:
    the model's threshold), ``k`` = min(:attr:`min_positive_slices`, n) and ``H`` =
    :attr:`single_slice_threshold` (default ``T + (1 - T) / 2``):

    * ``p_run`` = the highest probability held by ``k`` *neighbouring* slices together
      (max over runs of k consecutive slices of the run's minimum) — a bleed spans neighbouring
      slices, while a lone positive slice in a thin-section scan is more often noise;
    * ``p_single`` = the maximum slice probability, mapped piecewise-linearly so that
      0 → 0, ``H`` → ``T``, 1 → 1: one very confident slice is enough on its own;
    * scan probability = max(``p_run``, ``p_single``) (never above the top slice's probability);
    * scan label = "hemorrhage" exactly when scan probability ≥ ``T``, i.e. when k neighbouring
      slices reach ``T`` or one slice reaches ``H``.

    A series of one slice reduces to that slice's own probability and label. Positive slices are
    those with probability ≥ ``T``.
    """

    threshold: float | None = None
    min_positive_slices: int = 2
    single_slice_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise InvalidInputError(f"scan threshold must be in (0, 1); got {self.threshold}")
        if self.min_positive_slices < 1:
            raise InvalidInputError(f"min_positive_slices must be ≥ 1; got {self.min_positive_slices}")
        if self.single_slice_threshold is not None and not 0.0 < self.single_slice_threshold <= 1.0:
            raise InvalidInputError(
                f"single_slice_threshold must be in (0, 1]; got {self.single_slice_threshold}"
            )

    def resolve(self, model_threshold: float) -> tuple[float, int, float]:
        """The (T, k, H) used with a model whose threshold is ``model_threshold``."""
        t = float(self.threshold if self.threshold is not None else model_threshold)
        h = float(self.single_slice_threshold if self.single_slice_threshold is not None else t + (1 - t) / 2)
        return t, self.min_positive_slices, max(h, t)

    def apply(self, probabilities: Sequence[float], model_threshold: float) -> tuple[float, str, list[int]]:
        """Scan probability, label and positive slice indices for per-slice probabilities.

        Args:
            probabilities: P(hemorrhage) per slice, in anatomical order; at least one.
            model_threshold: the model's slice threshold (used when :attr:`threshold` is None).
        """
        p = np.asarray(probabilities, dtype=np.float64)
        if p.ndim != 1 or p.size == 0:
            raise InvalidInputError("a scan needs at least one slice probability")
        t, k, h = self.resolve(model_threshold)
        k = min(k, p.size)
        p_run = float(np.max(np.lib.stride_tricks.sliding_window_view(p, k).min(axis=1)))
        top = float(p.max())
        # Piecewise-linear 0 → 0, H → T, 1 → 1 (with H = 1 a lone slice can reach at most T).
        p_single = float(np.interp(top, [0.0, h, 1.0], [0.0, t, 1.0])) if h < 1 else top * t
        probability = float(min(max(p_run, p_single), top))
        label = "hemorrhage" if probability >= t else "normal"
        positive = [int(i) for i in np.flatnonzero(p >= t)]
        return probability, label, positive


@dataclass
class SeriesPrediction:
    """The model's reading of a whole series.

    Attributes:
        series: the slices read (:class:`Series`), in anatomical order.
        predictions: one :class:`~brain_ct.predictor.Prediction` per slice, same order.
        probability: scan-level P(hemorrhage) by :attr:`rule` (see :class:`ScanRule`).
        label: ``"hemorrhage"`` or ``"normal"`` for the scan.
        threshold: the scan threshold ``T`` used.
        positive_slices: indices of slices with probability ≥ ``threshold``.
        most_suspicious: index of the slice with the highest probability.
        rule: the :class:`ScanRule` applied.
        source: display string of what was read (the path as given).
    """

    series: Series
    predictions: list[Prediction]
    probability: float
    label: str
    threshold: float
    positive_slices: list[int]
    most_suspicious: int
    rule: ScanRule
    source: str

    @property
    def n_slices(self) -> int:
        return len(self.predictions)

    @property
    def head_check(self) -> str:
        """``"passed"`` when the series' head-CT check ran and passed, ``"skipped"`` when
        ``allow_unverified`` skipped it for any slice (outputs must then carry a caveat)."""
        checks = [ct.head_check for ct in self.series.slices] + [p.head_check for p in self.predictions]
        return "skipped" if "skipped" in checks else "passed"

    @property
    def unverified(self) -> bool:
        """True when the head-CT check was skipped (see :attr:`head_check`)."""
        return self.head_check != "passed"

    @property
    def probabilities(self) -> np.ndarray:
        """float64 [n_slices] slice probabilities in anatomical order."""
        return np.asarray([p.probability for p in self.predictions], dtype=np.float64)

    def slice_dict(self, index: int) -> dict[str, Any]:
        """JSON-safe per-slice object: ``file``, ``index`` (0-based position in anatomical order;
        text for people numbers slices from 1) and the single-image fields."""
        pred = self.predictions[index]
        return {
            "file": self.series.files[index],
            "index": index,
            "label": pred.label,
            "probability": float(pred.probability),
            "threshold": float(pred.threshold),
            "regions": json_safe([r.to_dict() for r in pred.regions]),
            "explanation": pred.explanation,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe result in the CLI's shape (slices in anatomical order; ``index`` and
        ``positive_slices`` 0-based), with ``series_id``, ``head_check``, ``errors`` and ``skipped``."""
        return {
            "file": self.source,
            "label": self.label,
            "probability": float(self.probability),
            "threshold": float(self.threshold),
            "n_slices": self.n_slices,
            "series_id": self.series.series_id,
            "positive_slices": list(self.positive_slices),
            "head_check": self.head_check,
            "slices": [self.slice_dict(i) for i in range(self.n_slices)],
            "errors": [dict(e) for e in self.series.errors],
            "skipped": [dict(s) for s in self.series.skipped],
        }


def scan_result(
    series: Series,
    predictions: Sequence[Prediction],
    *,
    rule: ScanRule | None = None,
    model_threshold: float | None = None,
    source: str | None = None,
) -> SeriesPrediction:
    """Combine per-slice predictions (anatomical order) into a :class:`SeriesPrediction`.

    Args:
        series: the series the predictions belong to (same length and order).
        predictions: one prediction per slice.
        rule: the scan rule; default :class:`ScanRule` ().
        model_threshold: the model's slice threshold; default the first prediction's ``threshold``.
        source: display string; default ``series.source``.
    """
    if len(predictions) != len(series.slices) or not predictions:
        raise InvalidInputError(
            f"got {len(predictions)} predictions for {len(series.slices)} slices; need one per slice (≥ 1)"
        )
    rule = rule or ScanRule()
    base = float(model_threshold if model_threshold is not None else predictions[0].threshold)
    probs = [float(p.probability) for p in predictions]
    probability, label, positive = rule.apply(probs, base)
    return SeriesPrediction(
        series=series,
        predictions=list(predictions),
        probability=probability,
        label=label,
        threshold=rule.resolve(base)[0],
        positive_slices=positive,
        most_suspicious=int(np.argmax(probs)),
        rule=rule,
        source=series.source if source is None else source,
    )


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
    members = [_Member(str(p), Path(p)) for p in paths]
    for member in members:
        _sniff_path(member)
    index = {id(m): i for i, m in enumerate(members)}
    # Training reads thousands of local files: no per-request time budget here.
    groups = _read_headers(members, _Budget(ZipLimits(max_seconds=math.inf), "files")).groups
    out: list[list[int]] = []
    for uid, group in groups.items():
        entries = [e for e in group.entries if e.n_frames == 1]
        if not uid or len(entries) < 2:
            continue
        if _sort_entries(entries) in ("position", "instance_number"):
            out.append([index[id(e.member)] for e in entries])
    return out


def predict_series(
    predictor: Predictor,
    series: Series,
    *,
    tta: bool = False,
    batch_size: int = 16,
    rule: ScanRule | None = None,
    source: str | None = None,
) -> SeriesPrediction:
    """Run the model over every slice (batched) and read the scan by :class:`ScanRule`.

    Args:
        predictor: a loaded :class:`~brain_ct.predictor.Predictor`.
        series: from :func:`read_series`.
        tta: test-time augmentation (horizontal flip averaged), passed to ``predict_batch``.
            Slice-context models (``predictor.settings.context_slices`` = k > 0) get each slice's
            k neighbours on each side in anatomical order (:func:`context_neighbors`).
        batch_size: slices per forward pass.
        rule: the scan rule; default :class:`ScanRule` () with the model's threshold.
        source: display string for ``to_dict()["file"]``; default ``series.source``.
    """
    k = predictor.settings.context_slices
    neighbors = context_neighbors(series.slices, k) if k > 0 else None
    predictions = predictor.predict_batch(
        list(series.slices), batch_size=batch_size, tta=tta, neighbors=neighbors
    )
    return scan_result(
        series, predictions, rule=rule, model_threshold=predictor.settings.threshold, source=source
    )
