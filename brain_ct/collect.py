"""Safe collection of the files one request brings: a folder, a ``.zip``, several files, or one file.

:func:`collect` turns what a person drops in into candidate files (:class:`Member`) without ever
writing to disk. Zips are checked as a whole *before* anything is read (:class:`ZipLimits`: entry
names, symlinks, entry count, declared sizes, compression ratio of each member and of the whole
zip); members are then read into memory one by one with the limits enforced on the bytes actually
inflated (declared sizes can lie). The first bytes of each file decide what it is
(:func:`brain_ct.sniff.sniff`: DICOM, an ordinary image, or neither); anything else
is never inflated further nor parsed. The whole request runs under a time budget
(:attr:`ZipLimits.max_seconds`, :class:`Budget`).

File names are user data: :func:`screen_name` decides whether one may be shown, and
:func:`name_members` gives each member its display name. Nothing here reads a DICOM header:
grouping and ordering by headers is :mod:`brain_ct.series`.
"""

from __future__ import annotations

import dataclasses
import io as _io
import os
import re
import stat
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import brain_ct.privacy as privacy
from brain_ct.errors import InvalidInputError
from brain_ct.limits import ENV, UploadLimits
from brain_ct.limits import current as current_limits
from brain_ct.sniff import DICOM_SUFFIXES, HEAD_BYTES, IMAGE_FORMATS, IMAGE_SUFFIXES, NIFTI_SUFFIXES, sniff
from brain_ct.source import MAX_FILE_BYTES
from brain_ct.wording import plural

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


# --------------------------------------------------------------------------- collecting files

#: A zip whose members add up to at least this many bytes is also checked as a whole against
#: ``ZipLimits.max_ratio``: 1000 small files of zeros each stay under the per-member floor.
_TOTAL_RATIO_FLOOR = 32 << 20


@dataclass
class Member:
    """One candidate file.

    ``name`` is its path inside the folder or zip (internal only: names are user data and may
    carry identifiers; outputs use :attr:`label`). ``data`` is a path, or the bytes in memory
    (zip members; empty once a member is known not to be DICOM or an image). ``kind`` comes from
    the first bytes (:func:`_kind`); ``shown`` is the screened display name or None, ``ordinal``
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


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``slice2`` before ``slice10`` (digits compared as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _kind(head: bytes) -> str:
    """``"dicom"``, ``"image"`` or ``"other"`` from a file's first bytes (:func:`brain_ct.sniff.sniff`)."""
    kind = sniff(head)
    if kind in IMAGE_FORMATS:
        return "image"
    return kind if kind == "dicom" else "other"


def _skip_silently(name: str) -> bool:
    """Archive clutter, not input: hidden files, macOS resource forks, Windows thumbnails."""
    parts = name.split("/")
    return (
        any(p.startswith(".") for p in parts)
        or "__MACOSX" in parts
        or parts[-1].lower() in ("thumbs.db", "desktop.ini")
    )


#: Base names (any extension) and extensions of text and metadata files that travel with exported
#: slices: listed as skipped, not as errors. Only for files whose first bytes are no DICOM or image.
_SIDECAR_NAMES = frozenset(
    {"license", "licence", "readme", "copying", "notice", "changes", "manifest", "index"}
)
_SIDECAR_EXTENSIONS = frozenset(
    {
        ".txt",
        ".md",
        ".json",
        ".xml",
        ".csv",
        ".tsv",
        ".html",
        ".htm",
        ".pdf",
        ".rtf",
        ".yaml",
        ".yml",
        ".ini",
        ".nfo",
        # scripts and logs that travel with a data set or an examples folder
        ".py",
        ".sh",
        ".bat",
        ".log",
        ".cfg",
        ".toml",
    }
)


def is_sidecar(name: str) -> bool:
    """A README, LICENSE or .txt/.json/… file beside the slices (harmless; skipped, not an error)."""
    base = name.rsplit("/", 1)[-1].lower()
    stem, dot, ext = base.rpartition(".")
    return (stem if dot else base) in _SIDECAR_NAMES or (bool(dot) and f".{ext}" in _SIDECAR_EXTENSIONS)


def is_dicomdir(name: str) -> bool:
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
                f"{label} refused: its files add up to more than {limits.max_total_bytes / 2**20:.3g} MiB "
                f"uncompressed (the limit; a 128-slice CT series is ~64 MiB). Zip only the slices of one CT "
                f"series, or raise the limit locally ({ENV['max_request_bytes']}, or the CLI's --max-slices)."
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


class BudgetExceededError(InvalidInputError):
    """The request's time budget ran out: the whole reading stops (never one file's error among others)."""


class Budget:
    """The time one request may spend reading (:attr:`ZipLimits.max_seconds`), checked between files."""

    def __init__(self, limits: ZipLimits, label: str) -> None:
        self.seconds = limits.max_seconds
        self.deadline = time.monotonic() + limits.max_seconds
        self.label = label

    def check(self, done: int, total: int, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise BudgetExceededError(
                f"reading {self.label} was stopped at the {self.seconds:g} s limit for one request "
                f"({done} of {total} files {what}). Send only the slices of one CT series, or fewer files."
            )


def _read_zip(source: Path | bytes, limits: ZipLimits, label: str, budget: Budget) -> list[Member]:
    """Check a zip, then read its members into memory with the limits enforced while inflating.

    Each member's first bytes decide (:func:`_kind`): a member that is neither DICOM nor an
    ordinary image is inflated no further and kept without its bytes (it is reported, never parsed).
    """
    try:
        zf = zipfile.ZipFile(_io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidInputError(
            f"{label} is not a readable zip file ({exc}); accepted: a .zip of DICOM or PNG/JPG slices."
        ) from None
    members: list[Member] = []
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
                    buf += fh.read(HEAD_BYTES)
                    kind = _kind(bytes(buf))
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
            members.append(Member(name, b"" if kind == "other" else bytes(buf), kind=kind))
    return members


def _is_zip(path: Path) -> bool:
    """A ``.zip`` name, or a zip signature at the start (a dropped file may have lost its name)."""
    if path.suffix.lower() == ".zip":
        return True
    try:
        with path.open("rb") as fh:
            return sniff(fh.read(4)) == "zip"
    except OSError:
        return False


def sniff_path(member: Member) -> None:
    """Set ``kind`` of a file on disk from its first bytes (an unreadable file counts as "other")."""
    try:
        with Path(member.data).open("rb") as fh:  # type: ignore[arg-type]  (only called on paths)
            member.kind = _kind(fh.read(HEAD_BYTES))
    except OSError:
        member.kind = "other"


def _read_path(member: Member, limits: ZipLimits, kept: int) -> int:
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
    member.kind = _kind(data[:HEAD_BYTES])
    if member.kind == "other" or kept + len(data) > limits.max_total_bytes:
        return 0
    member.data = data
    return len(data)


def collect(
    source: str | os.PathLike[str] | bytes | Sequence[str | os.PathLike[str]],
    limits: ZipLimits,
    upload: UploadLimits | None = None,
) -> tuple[list[Member], str, Budget]:
    """Candidate files of a source, the source's display string and the request's time budget.

    The display string is the file or folder's own name, never the folder it sits in (an upload
    sits in the server's cache). Every member comes back with its ``kind``, ``shown`` (None until
    :func:`name_members`) and ``ordinal`` set.

    Args:
        source: a folder, a zip (path or bytes), one file, or a list of files.
        limits: the zip's limits and the request's seconds.
        upload: the upload budget (default :func:`brain_ct.limits.current`): the tighter of its
            ``max_request_bytes`` / ``max_seconds`` and ``limits``' own applies.
    """
    upload = upload or current_limits()
    limits = dataclasses.replace(
        limits,
        max_total_bytes=min(limits.max_total_bytes, upload.max_request_bytes),
        max_seconds=min(limits.max_seconds, upload.max_seconds),
    )
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
) -> tuple[list[Member], str, Budget]:
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
        budget = Budget(limits, "the upload")
        if sniff(data[:4]) == "zip":
            return _read_zip(data, limits, "the zip", budget), "zip", budget
        return [Member("upload", data, kind=_kind(data[:HEAD_BYTES]))], "upload", budget
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        label = path.name or str(source)
        budget = Budget(limits, label)
        if path.is_dir():
            members = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for fname in files:
                    full = Path(root, fname)
                    rel = full.relative_to(path).as_posix()
                    if not _skip_silently(rel) and full.is_file():
                        members.append(Member(rel, full))
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
        return [Member(path.name, path)], label, budget
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
        members.append(Member(path.name, path))
    return members, plural(len(paths), "file"), Budget(limits, plural(len(paths), "file"))


# --------------------------------------------------------------------------- names are user data

#: Extensions dropped before a name is screened.
_NAME_EXTENSIONS = (*DICOM_SUFFIXES, ".dic", ".ima", ".img", ".raw", ".txt", ".bin", ".json", ".xml")
_NAME_EXTENSIONS += (*NIFTI_SUFFIXES, ".zip")
_NAME_EXTENSIONS += IMAGE_SUFFIXES


def screen_name(name: str, identifying: Sequence[str] = ()) -> bool:
    """Whether a file or folder name from inside an upload may be shown (names are user data).

    An allow-list: a name passes only when it is made of what scanners and exports call files
    (``IM000123``, ``SE1/IMG_0012.dcm``, ``head_ct_axial_05.png``, ``LICENSE``): every path part
    of letters, digits, ``_ - . #`` and spaces, at most 48 characters; every letter run one of
    :data:`brain_ct.privacy.NAME_WORDS` (:func:`brain_ct.privacy.name_words_known`: ``JS_570312``,
    ``john_smith_ct_01.dcm``, ``MRN123456.dcm``, ``mary jones`` do not pass); every digit run at most
    6 digits long (a date such as 19570312 or a record number does not pass) and at most 4 of them
    in a part (a UID does not); and no identifying value of the file's own header (``identifying``,
    from :func:`brain_ct.privacy.identifying_values`, compared ignoring case). A path the user typed
    (the CLI's argument) is not screened: this is for names found inside a folder or zip.

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
    """One path part: allowed characters and length, allow-listed words, short and few digit runs."""
    if not part or len(part) > 48 or not re.fullmatch(r"[A-Za-z0-9_\-.# ]+", part):
        return False
    stem = part
    for ext in _NAME_EXTENSIONS:
        if stem.lower().endswith(ext) and len(stem) > len(ext):
            stem = stem[: -len(ext)]
            break
    digits = re.findall(r"\d+", stem)
    return privacy.name_words_known(part) and all(len(d) <= 6 for d in digits) and len(digits) <= 4


def name_members(members: list[Member], identifying: dict[int, list[str]]) -> None:
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
