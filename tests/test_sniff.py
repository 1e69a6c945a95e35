"""brain_ct.sniff: one sniffer for every reader; DICOM without preamble as pydicom's own corpus says."""

from __future__ import annotations

import gzip
import io
import os
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.datadict import keyword_for_tag
from pydicom.errors import InvalidDicomError

from brain_ct.sniff import HEAD_BYTES, IMAGE_FORMATS, has_preamble, is_nifti_head, sniff, unsupported_words

CORPUS = sorted(f for f in get_testdata_files() if os.path.isfile(f))


def _pydicom_reads(path: str) -> bool:
    """Whether pydicom reads the file as DICOM: with its preamble as pydicom reads by default
    (``force=False``); without one, forced parsing that yields only elements pydicom's dictionary
    knows (forced parsing of any other bytes "succeeds" with one unknown element)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pydicom.dcmread(path, force=False, stop_before_pixels=True)
            return True
        except InvalidDicomError:
            pass
        except Exception:
            return False
        if has_preamble(_head(path)):
            return False
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        except Exception:
            return False
        return len(ds) > 0 and all(keyword_for_tag(tag) for tag in ds.keys())  # noqa: SIM118


def _head(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(HEAD_BYTES)


def test_the_corpus_holds_files_without_preamble_both_read_and_not():
    without = [f for f in CORPUS if not has_preamble(_head(f))]
    read = {os.path.basename(f) for f in without if _pydicom_reads(f)}
    assert {"ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm", "rtstruct.dcm"} <= read
    assert "no_meta.dcm" in {os.path.basename(f) for f in without} - read


@pytest.mark.parametrize("path", CORPUS, ids=[os.path.basename(f) for f in CORPUS])
def test_dicom_is_exactly_what_pydicom_reads_in_its_own_corpus(path):
    assert (sniff(_head(path)) == "dicom") == _pydicom_reads(path)


def _nifti_bytes() -> bytes:
    return nib.Nifti1Image(np.zeros((4, 4, 2), np.int16), np.eye(4)).to_bytes()


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "PNG"),
        (b"\xff\xd8\xff\xe0" + bytes(40), "JPEG"),
        (b"II*\x00" + bytes(40), "TIFF"),
        (b"MM\x00*" + bytes(40), "TIFF"),
        (b"BM" + bytes(40), "BMP"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(40), "WEBP"),
        (b"RIFX\x00\x00\x00\x00WEBPVP8 " + bytes(40), "other"),  # WEBP only inside RIFF
        (b"PK\x03\x04" + bytes(40), "zip"),
        (b"PK\x05\x06" + bytes(40), "zip"),
        (b"GIF89a" + bytes(40), "GIF"),
        (b"\x1f\x8b\x08\x00" + bytes(40), "gzip"),
        (bytes(128) + b"DICM" + bytes(200), "other"),  # the marker, then no file meta
        (bytes(300), "other"),
        (b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100", "dicom"),  # explicit VR, no preamble
        (b"\x08\x00\x16\x00\x1a\x00\x00\x001.2.840.10008.5.1.4.1.1.2\x00", "dicom"),  # implicit VR
        (b"\x09\x00\x05\x00CS\x0a\x00ISO_IR 100", "other"),  # no dataset starts with group 0009
    ],
)
def test_kinds_from_first_bytes(head, kind):
    assert sniff(head) == kind


def test_nifti_plain_and_gzip():
    data = _nifti_bytes()
    assert sniff(data[:HEAD_BYTES]) == "nifti" and is_nifti_head(data)
    packed = gzip.compress(data)
    assert sniff(packed[:HEAD_BYTES]) == "nifti" and is_nifti_head(packed)
    assert sniff(gzip.compress(b"not a header" * 100)) == "gzip"
    assert not is_nifti_head(data[:300])


def test_ordinary_images_written_by_pillow_are_recognised():
    from PIL import Image

    grey = Image.fromarray(np.zeros((8, 8), np.uint8))
    for fmt, expected in (
        ("PNG", "PNG"),
        ("JPEG", "JPEG"),
        ("TIFF", "TIFF"),
        ("BMP", "BMP"),
        ("WEBP", "WEBP"),
    ):
        buffer = io.BytesIO()
        grey.save(buffer, format=fmt)
        assert sniff(buffer.getvalue()) == expected
        assert expected in IMAGE_FORMATS


def test_unsupported_words_only_for_formats_no_reader_takes():
    assert unsupported_words(b"%PDF-1.4") == "a PDF document"
    assert unsupported_words(b"PK\x05\x06" + bytes(18)) == "an empty zip archive"
    assert unsupported_words(b"PK\x03\x04").startswith("a zip archive, which holds a whole scan")
    assert unsupported_words(b"\x00\x00\x00\x18ftypheic") == "an HEIC/MP4 file"
    assert unsupported_words(b"\x89PNG\r\n\x1a\n") is None
    assert unsupported_words(bytes(20)) is None
