"""What a file is, from its first bytes: the ONE sniffer, and the ONE list of file-name suffixes.

Every reader asks :func:`sniff` before parsing anything (:mod:`brain_ct.io` for one file,
:mod:`brain_ct.collect` for each file of a folder or zip, :mod:`brain_ct.image_set` for a set of
images, :mod:`brain_ct.nifti` through :func:`is_nifti_head`): names and suffixes can be anything,
the bytes decide. One table (:data:`_MAGIC`) holds the magic bytes of every format told apart.

A DICOM file is the ``DICM`` marker after the 128-byte preamble followed by the file meta group,
or — old exporters wrote no preamble and no file meta — a first data element of a group a dataset
starts with, little- or big-endian, with an explicit VR (two capital letters) or a plausible
implicit length. That rule accepts every file of pydicom's own test corpus that pydicom reads and
refuses the rest (``tests/test_sniff.py``); anything else is never handed to pydicom, whose forced
parsing of arbitrary bytes is slow (~2 MB/s) and may "succeed" on junk.

Where a new input format goes: its magic bytes in :data:`_MAGIC` (and its suffixes here when a
name decides anything), then its reader.
"""

from __future__ import annotations

import zlib

#: File name endings of the ordinary image formats :func:`brain_ct.io.load_image` reads.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: File name endings DICOM files usually carry (many have none: the bytes decide, not the name).
DICOM_SUFFIXES = (".dcm", ".dicom")

#: File name endings of a NIfTI volume (:mod:`brain_ct.nifti`).
NIFTI_SUFFIXES = (".nii", ".nii.gz")

#: What :func:`sniff` calls the ordinary image formats (also the names messages use).
IMAGE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")

#: Bytes of a file enough for :func:`sniff` (a DICOM's file meta and first element, any magic).
HEAD_BYTES = 4096

#: (magic, offset, kind, words): the formats told apart by their first bytes. ``words`` says what a
#: file of a format no reader takes is, for a message; None for formats that are read.
_MAGIC: tuple[tuple[bytes, int, str, str | None], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "PNG", None),
    (b"\xff\xd8\xff", 0, "JPEG", None),
    (b"II*\x00", 0, "TIFF", None),
    (b"MM\x00*", 0, "TIFF", None),
    (b"BM", 0, "BMP", None),
    (b"WEBP", 8, "WEBP", None),  # a RIFF container, checked too
    (
        b"PK\x03\x04",
        0,
        "zip",
        "a zip archive, which holds a whole scan: read it as one (the app's 'Whole scan' tab, or the "
        "command line with the zip or folder as input: python -m brain_ct predict SCAN.zip)",
    ),
    (b"PK\x05\x06", 0, "zip", "an empty zip archive"),
    (b"GIF8", 0, "GIF", "a GIF image"),
    (b"%PDF", 0, "PDF", "a PDF document"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG 2000", "a JPEG 2000 image"),
    (b"ftyp", 4, "HEIC", "an HEIC/MP4 file"),
    (b"\x1f\x8b", 0, "gzip", "a gzip archive"),
)

#: Groups a DICOM dataset written without preamble may start with (file meta, directory,
#: identifying information, patient, acquisition, relationship, image pixel description).
_FIRST_GROUPS = frozenset({0x0002, 0x0004, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})

#: Bytes of a header that tell NIfTI apart (sizeof_hdr 348 + magic "n+1"/"ni1", or 540 + "n+2").
NIFTI_HEADER_BYTES = 540


def sniff(head: bytes) -> str:
    """What a file is, from its first bytes (:data:`HEAD_BYTES` suffice), before any parsing.

    Returns:
        ``"dicom"``; an image format of :data:`IMAGE_FORMATS`; ``"zip"``; ``"nifti"`` (a NIfTI-1/2
        header, gzip-compressed or not); another kind of :data:`_MAGIC` (``"GIF"``, ``"PDF"``,
        ``"gzip"``, …: :func:`unsupported_words` says it in words); or ``"other"``.
    """
    if has_preamble(head):
        return "dicom" if _dataset_follows_meta(head) else "other"
    kind = _magic_kind(head)
    if kind in IMAGE_FORMATS or kind == "zip":
        return kind
    if is_nifti_head(head):
        return "nifti"
    if kind is not None:
        return kind
    return "dicom" if _starts_like_dataset(head) else "other"


def has_preamble(head: bytes) -> bool:
    """Whether the bytes carry the DICOM ``DICM`` marker after a 128-byte preamble."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def unsupported_words(head: bytes) -> str | None:
    """What a file of a format no reader takes is, in words ("a GIF image"), from its magic; else None."""
    for magic, offset, _, words in _MAGIC:
        if words is not None and head[offset : offset + len(magic)] == magic:
            return words
    return None


def is_nifti_head(head: bytes) -> bool:
    """Whether ``head`` starts a NIfTI-1/2 header; a gzip stream is inflated for at most a header's bytes."""
    start = _inflate_start(head)
    if len(start) >= 348 and _sizeof_hdr(start[:4]) == 348:
        return start[344:347] in (b"n+1", b"ni1")
    return len(start) >= 12 and _sizeof_hdr(start[:4]) == 540 and start[4:7] == b"n+2"


def _inflate_start(head: bytes) -> bytes:
    """The first bytes of ``head``, inflated when it is gzip (never more than a header's worth)."""
    if head[:2] != b"\x1f\x8b":
        return head[:NIFTI_HEADER_BYTES]
    try:
        return zlib.decompressobj(wbits=31).decompress(head, NIFTI_HEADER_BYTES)
    except zlib.error:
        return b""


def nifti_header_kind(first: bytes) -> tuple[int, str] | None:
    """(sizeof_hdr, byte order ``"<"`` or ``">"``) from a NIfTI header's first 4 bytes, or None."""
    for order, code in (("little", "<"), ("big", ">")):
        value = int.from_bytes(first, order)  # type: ignore[arg-type]
        if value in (348, 540):
            return value, code
    return None


def _sizeof_hdr(first: bytes) -> int | None:
    """348 (NIfTI-1) or 540 (NIfTI-2) from the header's first field, in either byte order."""
    found = nifti_header_kind(first)
    return found[0] if found else None


def _magic_kind(head: bytes) -> str | None:
    for magic, offset, kind, _ in _MAGIC:
        if head[offset : offset + len(magic)] == magic and (offset != 8 or head[:4] == b"RIFF"):
            return kind
    return None


def _starts_like_dataset(head: bytes) -> bool:
    """A DICOM dataset without preamble: a first element of a group in :data:`_FIRST_GROUPS`, either
    byte order, with an explicit VR (two capital letters) or an implicit length below 64 KiB."""
    if len(head) < 8:
        return False
    for order in ("little", "big"):
        if int.from_bytes(head[0:2], order) not in _FIRST_GROUPS:
            continue
        vr = head[4:6]
        if vr.isalpha() and vr.isupper():
            return True
        if int.from_bytes(head[4:8], order) < 1 << 16:
            return True
    return False


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
