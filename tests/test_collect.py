"""Tests of brain_ct.collect: safe zips, sniffing before parsing, the time budget, names as user data."""

from __future__ import annotations

import io
import json
import os
import stat
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from helpers_series import (
    FakePredictor,
    head_series,
    snapshot,
    to_bytes,
    zip_bytes,
)
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid

from brain_ct.collect import ZipLimits, check_zip, natural_key, screen_name
from brain_ct.errors import InvalidInputError
from brain_ct.limits import UploadLimits
from brain_ct.scan import predict_series
from brain_ct.series import list_series, read_series
from brain_ct.wording import plural

# --------------------------------------------------------------------------- zip safety


@pytest.fixture
def guard(tmp_path, monkeypatch):
    """Runs in an empty cwd with a private temporary directory (``TMPDIR`` and ``tempfile.tempdir``);
    yields a folder for the test's inputs; afterwards checks that nothing appeared in the cwd, the
    private temp dir or elsewhere in tmp_path (outside the inputs). Other processes' files in the
    system temp dir are none of this test's business (they made it flaky)."""
    cwd = tmp_path / "cwd"
    inputs = tmp_path / "inputs"
    temp = tmp_path / "tmp"
    for d in (cwd, inputs, temp):
        d.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert tempfile.gettempdir() == str(temp)

    def state() -> set[str]:
        return {p for p in snapshot(tmp_path) if not p.startswith(str(inputs))}

    before = state()
    yield inputs
    assert state() - before == set()


def test_guard_sees_a_temp_file_left_behind(guard):
    # The guard must be able to fail: a file the code under test leaves in the temp dir is seen.
    fd, name = tempfile.mkstemp()
    os.close(fd)
    assert Path(name).parent == guard.parent / "tmp"  # the private temp dir the guard watches
    os.unlink(name)


def _valid_entry(make_ct_dataset) -> bytes:
    return to_bytes(head_series(make_ct_dataset, 1)[0][1])


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("../evil.dcm", "path traversal"),
        ("ok/../../evil.dcm", "path traversal"),
        ("..\\evil.dcm", "path traversal"),
        ("/tmp/evil.dcm", "absolute path"),
        ("C:/evil.dcm", "drive letter"),
    ],
)
def test_unsafe_entry_names_refuse_the_whole_zip(name, match, make_ct_dataset, guard):
    good = _valid_entry(make_ct_dataset)
    data = zip_bytes([("good.dcm", good), (name, good)])
    with pytest.raises(InvalidInputError, match=match) as info:
        read_series(data)
    # The entry is named when its name passes the identifier screening, else numbered.
    named = name in str(info.value) or name.replace("\\", "\\\\") in str(info.value)
    assert named or "entry number 2 of 2" in str(info.value)


def test_refusals_never_quote_an_identifying_entry_name(make_ct_dataset):
    secret = "ZORBLATT^QUENNELL_PIDZ99183/20210915"
    link = zipfile.ZipInfo(f"{secret}/IM0001")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    good = _valid_entry(make_ct_dataset)
    for entries, match in (
        ([("IM0000", good), (link, b"/etc/passwd")], "entry number 2 of 2 is a symbolic link"),
        ([("IM0000", good), (f"/{secret}/IM0002", good)], "entry number 2 of 2 is an absolute path"),
    ):
        with pytest.raises(InvalidInputError, match=match) as info:
            read_series(zip_bytes(entries))
        assert not any(v in str(info.value) for v in IDENTITY)
    # zipfile's own error text quotes the entry name: a corrupt member is described, not quoted.
    data = bytearray(zip_bytes([(f"{secret}/IM0003", _dicom_then_zeros(5000))]))
    central = data.find(b"PK\x01\x02")
    data[central + 16 : central + 20] = b"\x00\x00\x00\x00"  # wrong CRC in the directory
    local = data.find(b"PK\x03\x04")
    data[local + 14 : local + 18] = b"\x00\x00\x00\x00"
    with pytest.raises(InvalidInputError, match="corrupt") as info:
        read_series(bytes(data), zip_limits=ZipLimits(max_ratio=1e9))
    assert not any(v in str(info.value) for v in IDENTITY)


def test_symlink_entry_is_refused(make_ct_dataset, guard):
    link = zipfile.ZipInfo("evil_link")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    data = zip_bytes([("good.dcm", _valid_entry(make_ct_dataset)), (link, b"/etc/passwd")])
    with pytest.raises(InvalidInputError, match="symbolic link"):
        read_series(data)


def test_too_many_entries_is_refused(guard):
    path = guard / "many.zip"
    path.write_bytes(zip_bytes([(f"f{i}.dcm", b"x") for i in range(6)]))
    with pytest.raises(InvalidInputError, match="6 entries; at most 5"):
        read_series(path, zip_limits=ZipLimits(max_entries=5))
    with pytest.raises(InvalidInputError, match="6 entries; at most 5"):
        list_series(path, zip_limits=ZipLimits(max_entries=5))


def test_zip_bomb_is_refused_by_ratio_and_by_total_size(guard):
    # 64 MiB of zeros deflate to ~64 KiB (ratio ~1000): written in chunks, never held whole.
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("bomb.dcm", "w", force_zip64=True) as fh,
    ):
        chunk = bytes(1 << 20)
        for _ in range(64):
            fh.write(chunk)
    data = buf.getvalue()
    assert len(data) < 1 << 20
    with pytest.raises(InvalidInputError, match="zip bomb"):
        read_series(data)
    with pytest.raises(InvalidInputError, match="add up to more than 0.954 MiB"):
        read_series(data, zip_limits=ZipLimits(max_total_bytes=1_000_000, max_ratio=10_000))
    with pytest.raises(InvalidInputError, match="at most 1000 bytes per file"):
        read_series(data, zip_limits=ZipLimits(max_entry_bytes=1000, max_ratio=10_000))


def test_lying_declared_size_is_caught_while_inflating(guard):
    real = bytes(200_000)
    data = bytearray(zip_bytes([("bomb.dcm", real)]))
    # Declare 100 bytes uncompressed in both the local header and the central directory.
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    data[local + 22 : local + 26] = (100).to_bytes(4, "little")
    data[central + 24 : central + 28] = (100).to_bytes(4, "little")
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        check_zip(zf)  # the directory alone looks harmless
    with pytest.raises(InvalidInputError, match="zip bomb or a corrupt zip|corrupt"):
        read_series(bytes(data))


def test_not_a_zip_with_zip_name(guard):
    p = guard / "fake.zip"
    p.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(InvalidInputError, match="not a readable zip"):
        read_series(p)


def test_hidden_and_macos_entries_are_skipped(make_ct_dataset):
    slices = head_series(make_ct_dataset, 2)
    data = zip_bytes(
        [("__MACOSX/._a.dcm", b"junk"), (".DS_Store", b"junk"), ("DICOMDIR", b"junk")]
        + [(f"im{i}.dcm", to_bytes(ds)) for i, (_, ds) in enumerate(slices)]
    )
    s = read_series(data)
    assert s.files == ["im0.dcm", "im1.dcm"] and s.errors == []


# --------------------------------------------------------------------------- reading and sniffing


def test_zip_without_zip_suffix_is_read_as_zip(make_ct_dataset, tmp_path):
    slices = head_series(make_ct_dataset, 3)
    path = tmp_path / "upload_without_suffix"
    path.write_bytes(zip_bytes([(f"{i}.dcm", to_bytes(ds)) for i, (_, ds) in enumerate(slices)]))
    assert read_series(path).files == ["0.dcm", "1.dcm", "2.dcm"]
    assert read_series([path]).files == ["0.dcm", "1.dcm", "2.dcm"]


# --------------------------------------------------------------------------- tiny zips cost little (issue 14.3)


def _zip_of_copies(n: int, payload: bytes, name: str = "f{:04d}.dcm") -> bytes:
    """A zip of n deflated copies of ``payload`` (compressed once: fast to build even for 1000 × 1 MB)."""
    import struct
    import zlib

    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = comp.compress(payload) + comp.flush()
    crc = zlib.crc32(payload)
    out, central = bytearray(), bytearray()
    for i in range(n):
        fname = name.format(i).encode()
        offset = len(out)
        out += struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(body), len(payload), len(fname), 0
        )
        out += fname + body
        central += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            20,
            20,
            0,
            8,
            0,
            0x21,
            crc,
            len(body),
            len(payload),
            len(fname),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += fname
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), len(out), 0)
    return bytes(out + central + end)


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        (ZipLimits(), "expand .* together"),  # refused from the zip's directory alone
        (ZipLimits(max_ratio=1e9), "no slice of zip could be read"),  # every member sniffed and skipped
    ],
)
def test_a_tiny_zip_of_1000_zero_files_costs_little_time_and_memory(limits, match):

    # Each file just under ZipLimits.ratio_floor_bytes, so no single member is checked for its ratio.
    data = _zip_of_copies(1000, bytes(1_000_000))
    assert len(data) < 1.5 * 2**20  # ~1 MB uploaded, 1 GB inflated
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(InvalidInputError, match=match) as info:
            # room for the 1 GB the directory declares: the ratio is what refuses it here
            read_series(data, zip_limits=limits, limits=UploadLimits(max_request_bytes=2 << 30))
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 2.5, elapsed
    assert peak < 64 * 2**20, peak  # never holds the inflated zeros
    assert "1000 more" not in str(info.value)  # the message stays short


def _dicom_then_zeros(n: int) -> bytes:
    """A DICOM start that passes every cheap check (marker, file meta, one element), then n zeros."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SpecificCharacterSet = "ISO_IR 100"
    return to_bytes(ds) + bytes(n)


def test_zip_with_dicom_magic_but_zeros_is_bounded_by_the_time_budget():
    # A DICOM start passes the cheap checks, so only the per-request time budget stops this one.
    payload = _dicom_then_zeros(200_000)
    data = _zip_of_copies(300, payload)
    with pytest.raises(InvalidInputError, match=r"0\.2 s limit"):
        read_series(data, zip_limits=ZipLimits(max_seconds=0.2, max_ratio=10_000))
    with pytest.raises(InvalidInputError, match="expand .* together"):
        read_series(data)  # by default the whole zip's ratio refuses it before anything is read


def test_files_without_dicom_or_image_signature_are_not_parsed(make_ct_dataset, tmp_path, monkeypatch):
    import pydicom

    calls = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: calls.append(1) or real(*a, **k))
    d = tmp_path / "junk"
    d.mkdir()
    for i in range(20):
        (d / f"{i}.dcm").write_bytes(bytes(3000))
    # The DICM marker followed by zeros, and a real file meta group followed by zeros: no dataset.
    (d / "dicm.dcm").write_bytes(bytes(128) + b"DICM" + bytes(3000))
    real = to_bytes(head_series(make_ct_dataset, 1)[0][1])
    meta_end = 132 + 12 + int.from_bytes(real[140:144], "little")
    (d / "meta.dcm").write_bytes(real[:meta_end] + bytes(3000))
    with pytest.raises(InvalidInputError, match="could be read"):
        read_series(d)
    assert calls == []


def test_dicom_without_preamble_is_still_read(make_ct_dataset, tmp_path):
    slices = head_series(make_ct_dataset, 3)
    d = tmp_path / "nopre"
    d.mkdir()
    for i, (_, ds) in enumerate(slices):
        del ds.file_meta  # an old exporter's file: no preamble, no file meta, implicit VR
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
        raw = buf.getvalue()
        assert raw[128:132] != b"DICM"
        (d / f"{i}.dcm").write_bytes(raw)
    assert len(read_series(d)) == 3


# --------------------------------------------------------------------------- names are user data (issue 14.4)


IDENTITY = ("ZORBLATT", "QUENNELL", "PIDZ99183", "20210915")


def test_identifiers_in_folder_and_file_names_never_reach_outputs(make_ct_dataset, tmp_path):
    slices = head_series(make_ct_dataset, 4)
    names = [
        "ZORBLATT^QUENNELL_PIDZ99183/20210915/IM0003",
        "ZORBLATT^QUENNELL_PIDZ99183/20210915/IM0001",
        "ZORBLATT^QUENNELL_PIDZ99183/20210915/ZORBLATT_QUENNELL.dcm",
        "ZORBLATT^QUENNELL_PIDZ99183/20210915/<img src=x>.dcm",
    ]
    junk = "ZORBLATT^QUENNELL_PIDZ99183/20210915/PIDZ99183.txt"
    path = tmp_path / "scan.zip"
    path.write_bytes(
        zip_bytes([(n, to_bytes(ds)) for n, (_, ds) in zip(names, slices, strict=True)] + [(junk, b"text")])
    )
    s = read_series(path)
    assert s.files == ["IM0003", "IM0001", "slice 3 at 10.0 mm", "slice 4 at 15.0 mm"]
    assert [ct.name for ct in s.slices] == s.files
    assert s.skipped[0]["file"] == "file 4"  # 4th in name order (a .txt beside the slices is skipped)
    fake = FakePredictor({f: 0.1 for f in s.files})
    text = json.dumps(predict_series(fake, s).to_dict()) + json.dumps(s.to_dict()) + repr(s)
    for value in (*IDENTITY, "<img"):
        assert value not in text


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("IM0003", True),
        ("img_12.dcm", True),
        ("slice10.png", True),
        ("hemorrhage/hemorrhage_000001.dcm", True),
        ("x/00.dcm", True),
        ("20210915", False),
        ("ZORBLATT_QUENNELL.dcm", False),
        ("PIDZ99183", False),
        ("a^b.dcm", False),
        ("1.2.840.113619.2.55.3.604688.dcm", False),
        ("<img src=x>.dcm", False),
        ("Quennell_0001.dcm", False),
        ("broken.dcm", True),
        ("", False),
    ],
)
def test_name_screening(name, ok):

    assert screen_name(name) is ok


def test_a_name_holding_the_files_own_patient_id_is_screened_out(make_ct_dataset):
    ((_, ds),) = head_series(make_ct_dataset, 1, PatientID="123456")
    s = read_series(zip_bytes([("123456.dcm", to_bytes(ds))]))
    assert s.files == ["slice 1 at 0.0 mm"]
    ((_, ds),) = head_series(make_ct_dataset, 1)  # PatientName DOE^JANE
    assert read_series(zip_bytes([("jane_0001.dcm", to_bytes(ds))])).files == ["slice 1 at 0.0 mm"]
    assert read_series(zip_bytes([("scan_0001.dcm", to_bytes(ds))])).files == ["scan_0001.dcm"]


# --------------------------------------------------------------------------- shared helpers


def test_natural_key():
    assert sorted(["a10", "a2", "A1"], key=natural_key) == ["A1", "a2", "a10"]


def test_one_slice_is_singular():
    assert plural(1, "slice") == "1 slice"
    assert plural(0, "slice") == "0 slices"
    assert plural(12, "slice") == "12 slices"


def test_a_zip_declaring_more_bytes_than_a_request_may_hold_is_refused_from_its_directory():
    data = zip_bytes([(f"IM{i:04d}", os.urandom(400_000)) for i in range(3)])
    with pytest.raises(InvalidInputError, match=r"add up to more than 1 MiB .*BRAIN_CT_MAX_REQUEST_BYTES"):
        read_series(data, limits=UploadLimits(max_request_bytes=1 << 20))
