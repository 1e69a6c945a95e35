"""Tests of brain_ct.series: safe zips, grouping, anatomical order, multi-frame, the scan rule."""

from __future__ import annotations

import io
import json
import os
import random
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import draw_head_hu
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from brain_ct.errors import InvalidInputError, NotHeadCTError
from brain_ct.explain import Region
from brain_ct.predictor import Prediction
from brain_ct.series import (
    ScanRule,
    ZipLimits,
    check_zip,
    context_neighbors,
    list_series,
    natural_key,
    predict_series,
    read_series,
    scan_result,
)

# --------------------------------------------------------------------------- helpers


def _hu_to_stored(hu: np.ndarray) -> np.ndarray:
    return np.clip(np.round(hu + 1024.0), -32768, 32767).astype(np.int16)


def _slice_ds(
    make_ct_dataset, hu: np.ndarray, *, uid: str, z: float | None, instance: int | None, **tags
) -> Dataset:
    extra: dict[str, Any] = {
        "SeriesInstanceUID": uid,
        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "PatientName": "DOE^JANE",
        "PatientID": "PID-778899",
    }
    if z is not None:
        extra["ImagePositionPatient"] = [-100.0, -100.0, float(z)]
    if instance is not None:
        extra["InstanceNumber"] = instance
    extra.update(tags)
    return make_ct_dataset(_hu_to_stored(hu), **extra)


def _to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _zip(
    entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def _head_series(
    make_ct_dataset, n: int, *, uid: str | None = None, size: int = 96, **tags
) -> list[tuple[float, Dataset]]:
    """n slices of the drawn head phantom, z = 5 mm × index; each slice differs (a bright dot row)."""
    uid = uid or generate_uid()
    out = []
    for i in range(n):
        hu = draw_head_hu(size)
        hu[size // 2, size // 2 - 10 + i] = 80.0  # marks the slice, so order can be checked from pixels
        out.append((5.0 * i, _slice_ds(make_ct_dataset, hu, uid=uid, z=5.0 * i, instance=i + 1, **tags)))
    return out


def _marker(ct) -> int:
    """The index written into a slice by :func:`_head_series`."""
    size = ct.hu.shape[0]
    row = ct.hu[size // 2, size // 2 - 10 : size // 2 + 22]
    return int(np.argmax(row >= 79.0))


def _snapshot(*dirs: Path) -> set[str]:
    out = set()
    for d in dirs:
        for root, subdirs, files in os.walk(d):
            out.update(os.path.join(root, f) for f in files + subdirs)
    return out


# --------------------------------------------------------------------------- synthetic (helper B) series


@pytest.fixture(scope="module")
def synthetic_series():
    """A 10-slice phantom head with a bleed on some of its slices (and some slices without)."""
    from brain_ct.synthetic import generate_series

    phantoms = generate_series(3, n_slices=10, size=128, hemorrhage=True)
    assert {p.label for p in phantoms} == {0, 1}
    return phantoms


def synthetic_zip(
    phantoms, path: Path, *, seed: int = 1, patient_name: str = "TESTCASE^ROBIN"
) -> dict[str, Any]:
    """Write phantoms (inferior → superior) as DICOMs into a zip under shuffled random names.

    Instance numbers run backwards on purpose (position must win). Returns {file name: phantom}.
    """
    from brain_ct.synthetic import to_dicom

    uid = generate_uid()
    rng = random.Random(seed)
    items = []
    for i, ph in enumerate(phantoms):
        ds = to_dicom(ph, series_uid=uid, instance_number=len(phantoms) - i, patient_name=patient_name)
        ds.ImagePositionPatient = [-64.0, -64.0, -40.0 + 5.0 * i]
        items.append((f"IM{rng.randrange(10**6):06d}_{i}.dcm", ph, _to_bytes(ds)))
    rng.shuffle(items)
    path.write_bytes(_zip([(name, data) for name, _, data in items]))
    return {name: ph for name, ph, _ in items}


def label_predictor(by_name: dict[str, Any]) -> FakePredictor:
    """A predictor whose output we control: P = 0.95 on slices whose phantom shows blood, else 0.05."""
    return FakePredictor({name: 0.95 if ph.label else 0.05 for name, ph in by_name.items()})


def test_shuffled_synthetic_zip_comes_back_in_anatomical_order(synthetic_series, tmp_path):
    path = tmp_path / "scan.zip"
    by_name = synthetic_zip(synthetic_series, path)

    s = read_series(path)

    assert [by_name[f] for f in s.files] == list(synthetic_series)
    assert s.positions == pytest.approx([-40.0 + 5.0 * i for i in range(len(synthetic_series))])
    assert s.sort_key == "position"
    assert s.errors == []
    # The pixels follow the files: each slice read is its phantom's HU.
    for ct, ph in zip(s.slices, synthetic_series, strict=True):
        np.testing.assert_allclose(ct.hu, ph.hu, atol=1.0)


def test_synthetic_series_with_one_bleeding_slice_is_positive_and_names_it(synthetic_series, tmp_path):
    # Exactly one bleeding slice: the lowest one that shows blood, plus every slice without blood.
    first = next(i for i, p in enumerate(synthetic_series) if p.label)
    phantoms = [p for i, p in enumerate(synthetic_series) if i == first or not p.label]
    # by identity: Phantom == compares numpy arrays, so list.index only works when it hits the first item
    index = next(i for i, p in enumerate(phantoms) if p is synthetic_series[first])
    path = tmp_path / "one.zip"
    by_name = synthetic_zip(phantoms, path, seed=4)
    s = read_series(path)
    result = predict_series(label_predictor(by_name), s)
    assert result.label == "hemorrhage"
    assert result.positive_slices == [index]
    assert result.most_suspicious == index
    bleeding = next(name for name, ph in by_name.items() if ph.label)
    d = result.to_dict()
    assert [x["file"] for x in d["slices"] if x["label"] == "hemorrhage"] == [bleeding]
    assert d["slices"][index]["file"] == bleeding


def test_synthetic_normal_series_is_negative(tmp_path):
    from brain_ct.synthetic import generate_series

    phantoms = generate_series(5, n_slices=6, size=128, hemorrhage=False)
    path = tmp_path / "normal.zip"
    by_name = synthetic_zip(phantoms, path)
    result = predict_series(label_predictor(by_name), read_series(path))
    assert result.label == "normal" and result.positive_slices == []
    assert result.probability < result.threshold


# --------------------------------------------------------------------------- ordering


def test_shuffled_zip_sorted_by_position(make_ct_dataset, tmp_path):
    slices = _head_series(make_ct_dataset, 7)
    order = list(range(7))
    random.Random(0).shuffle(order)
    # Instance numbers disagree with positions on purpose: position must win.
    entries = [(f"x/{k:02d}.dcm", _to_bytes(slices[i][1])) for k, i in enumerate(order)]
    for k, i in enumerate(order):
        slices[i][1].InstanceNumber = 100 - k
    path = tmp_path / "s.zip"
    path.write_bytes(_zip(entries))
    s = read_series(path)
    assert [_marker(ct) for ct in s.slices] == list(range(7))
    assert s.positions == [5.0 * i for i in range(7)]
    assert s.files == [f"x/{order.index(i):02d}.dcm" for i in range(7)]
    assert s.source == "s.zip"  # the name, never the folder it sits in (an upload sits in a cache)


def test_normal_pointing_down_still_sorts_inferior_to_superior(make_ct_dataset, tmp_path):
    # Column direction (0, -1, 0) makes row × col point to the feet; positions must still grow upwards.
    slices = _head_series(make_ct_dataset, 5, ImageOrientationPatient=[1, 0, 0, 0, -1, 0])
    for d in (tmp_path / "d",):
        d.mkdir()
        for i, (_, ds) in enumerate(reversed(slices)):
            (d / f"f{i}.dcm").write_bytes(_to_bytes(ds))
    s = read_series(tmp_path / "d")
    assert [_marker(ct) for ct in s.slices] == list(range(5))
    assert s.positions == [0.0, 5.0, 10.0, 15.0, 20.0]


def test_instance_number_fallback_then_natural_names(make_ct_dataset, tmp_path):
    slices = _head_series(make_ct_dataset, 4)
    d = tmp_path / "inst"
    d.mkdir()
    for i, (_, ds) in enumerate(slices):
        del ds.ImagePositionPatient
        (d / f"z{3 - i}.dcm").write_bytes(_to_bytes(ds))
    s = read_series(d)
    assert s.sort_key == "instance_number"
    assert [_marker(ct) for ct in s.slices] == [0, 1, 2, 3]
    assert s.positions == [None] * 4

    d2 = tmp_path / "names"
    d2.mkdir()
    for i, (_, ds) in enumerate(slices):
        del ds.InstanceNumber
        (d2 / f"img{i * 5}.dcm").write_bytes(_to_bytes(ds))  # img0, img5, img10, img15: natural order
    s2 = read_series(d2)
    assert s2.sort_key == "name"
    assert s2.files == ["img0.dcm", "img5.dcm", "img10.dcm", "img15.dcm"]
    assert [_marker(ct) for ct in s2.slices] == [0, 1, 2, 3]


def test_png_slices_keep_natural_name_order(encode_image, head_grey, tmp_path):
    d = tmp_path / "png"
    d.mkdir()
    for i in (10, 2, 1):
        img = head_grey(128)
        img[5, 5] = i  # distinct content per file
        (d / f"slice{i}.png").write_bytes(encode_image(img))
    s = read_series(d)
    assert s.files == ["slice1.png", "slice2.png", "slice10.png"]
    assert [int(ct.display[5, 5]) for ct in s.slices] == [1, 2, 10]
    assert s.series_id is None and s.positions == [None, None, None]


def test_natural_key():
    assert sorted(["a10", "a2", "A1"], key=natural_key) == ["A1", "a2", "a10"]


def test_list_of_files_and_skipped_files(make_ct_dataset, tmp_path):
    slices = _head_series(make_ct_dataset, 3)
    paths = []
    for i, (_, ds) in enumerate(slices):
        p = tmp_path / f"s{i}.dcm"
        p.write_bytes(_to_bytes(ds))
        paths.append(p)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(_to_bytes(slices[0][1])[:-4000])  # header fine, pixels truncated
    note = tmp_path / "notes.txt"
    note.write_text("hello")
    s = read_series([paths[2], broken, note, paths[0], paths[1]])
    assert s.files == ["s0.dcm", "s1.dcm", "s2.dcm"]
    assert {e["file"] for e in s.errors} == {"broken.dcm", "notes.txt"}
    assert all(e["message"] and e["type"] for e in s.errors)
    assert s.source == "5 files"


def test_no_loadable_slice_is_an_error(tmp_path):
    d = tmp_path / "junk"
    d.mkdir()
    (d / "a.txt").write_text("not an image")
    with pytest.raises(InvalidInputError, match="no slice .* could be read"):
        read_series(d)


def test_empty_folder_and_empty_zip_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="holds no files"):
        read_series(tmp_path / "empty")
    z = tmp_path / "empty.zip"
    z.write_bytes(_zip([]))
    with pytest.raises(InvalidInputError, match="holds no files"):
        read_series(z)
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_series(tmp_path / "missing")
    with pytest.raises(InvalidInputError, match="no files were given"):
        read_series([])


def test_not_a_head_ct_series_is_refused_unless_allowed(make_ct_dataset, tmp_path):
    uid = generate_uid()
    d = tmp_path / "blank"
    d.mkdir()
    for i in range(3):
        ds = _slice_ds(
            make_ct_dataset, np.full((96, 96), -1000.0, np.float32), uid=uid, z=i * 5.0, instance=i + 1
        )
        (d / f"{i}.dcm").write_bytes(_to_bytes(ds))
    with pytest.raises(NotHeadCTError, match="does not look like an axial head CT"):
        read_series(d)
    assert len(read_series(d, allow_unverified=True)) == 3


def test_end_slices_without_head_are_kept_in_a_head_series(make_ct_dataset, tmp_path):
    uid = generate_uid()
    d = tmp_path / "ends"
    d.mkdir()
    for i in range(5):
        hu = draw_head_hu(96) if 0 < i < 4 else np.full((96, 96), -1000.0, np.float32)
        (d / f"{i}.dcm").write_bytes(
            _to_bytes(_slice_ds(make_ct_dataset, hu, uid=uid, z=i * 5.0, instance=i))
        )
    s = read_series(d)
    assert len(s) == 5 and s.errors == []


@pytest.mark.parametrize("allow", [False, True])
def test_every_slice_says_whether_the_series_head_check_ran(
    make_ct_dataset, encode_image, head_grey, tmp_path, allow
):
    # Slices are decoded without the per-slice check; the series check stands for all of them.
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    for i, (_, ds) in enumerate(_head_series(make_ct_dataset, 3)):
        (dicom / f"{i}.dcm").write_bytes(_to_bytes(ds))
    png = tmp_path / "png"
    png.mkdir()
    for i in range(2):
        (png / f"s{i}.png").write_bytes(encode_image(head_grey(128)))
    expected = "skipped" if allow else "passed"
    for folder in (dicom, png):
        s = read_series(folder, allow_unverified=allow)
        assert [ct.head_check for ct in s.slices] == [expected] * len(s)
        result = predict_series(FakePredictor({f: 0.1 for f in s.files}), s)
        assert result.head_check == expected and result.to_dict()["head_check"] == expected


# --------------------------------------------------------------------------- several series


def test_several_series_pick_axial_non_contrast_and_choose(make_ct_dataset, tmp_path):
    axial = _head_series(make_ct_dataset, 4)
    contrast = _head_series(make_ct_dataset, 6, ContrastBolusAgent="IODINE")
    coronal = _head_series(make_ct_dataset, 8, ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    entries = []
    for tag, group in (("ax", axial), ("cx", contrast), ("co", coronal)):
        entries += [(f"{tag}{i}.dcm", _to_bytes(ds)) for i, (_, ds) in enumerate(group)]
    random.Random(2).shuffle(entries)
    path = tmp_path / "multi.zip"
    path.write_bytes(_zip(entries))

    s = read_series(path)
    assert sorted(s.files) == [f"ax{i}.dcm" for i in range(4)]

    infos = list_series(path)
    assert [i.n_slices for i in infos] == [4, 6, 8]
    assert [i.default for i in infos] == [True, False, False]
    assert [(i.orientation, i.contrast) for i in infos] == [
        ("axial", False),
        ("axial", True),
        ("coronal", False),
    ]
    assert all(i.description is None for i in infos)  # SeriesDescription is not on the allow-list
    assert s.series_id == infos[0].series_id

    raw_uid = str(contrast[0][1].SeriesInstanceUID)
    assert raw_uid not in json.dumps([i.to_dict() for i in infos])
    by_hash = read_series(path, series_uid=infos[1].series_id)
    by_raw = read_series(path, series_uid=raw_uid)
    assert sorted(by_hash.files) == sorted(by_raw.files) == [f"cx{i}.dcm" for i in range(6)]
    with pytest.raises(InvalidInputError, match="available series ids"):
        read_series(path, series_uid="nope")


# --------------------------------------------------------------------------- multi-frame


def test_multiframe_dicom_is_a_series_sorted_by_frame_positions(make_ct_dataset, tmp_path):
    n = 5
    frames = []
    for i in range(n):
        hu = draw_head_hu(96)
        hu[48, 38 + i] = 80.0
        frames.append(_hu_to_stored(hu))
    order = [3, 0, 4, 1, 2]  # frame k holds slice order[k]
    ds = make_ct_dataset(frames[0], SeriesInstanceUID=generate_uid(), PatientName="DOE^JANE")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.NumberOfFrames = n
    ds.PixelData = b"".join(frames[i].tobytes() for i in order)
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = DicomSequence([orient])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for i in order:
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, 2.5 * i]
        item.PlanePositionSequence = DicomSequence([pos])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    path = tmp_path / "enhanced.dcm"
    path.write_bytes(_to_bytes(ds))

    s = read_series(path)
    assert [_marker(ct) for ct in s.slices] == list(range(n))
    assert s.positions == [2.5 * i for i in range(n)]
    assert s.files == [f"enhanced.dcm#{order.index(i) + 1}" for i in range(n)]


# --------------------------------------------------------------------------- each file decoded once


def test_each_file_is_decoded_once(make_ct_dataset, tmp_path, monkeypatch):
    import pydicom.pixels

    slices = _head_series(make_ct_dataset, 6, size=128)
    d = tmp_path / "once"
    d.mkdir()
    for i, (_, ds) in enumerate(slices):
        (d / f"{i}.dcm").write_bytes(_to_bytes(ds))
    calls = []
    real = pydicom.pixels.pixel_array
    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda *a, **k: calls.append(1) or real(*a, **k))
    s = read_series(d)
    assert len(s) == 6
    assert len(calls) == 6


def test_each_file_is_read_from_disk_once(make_ct_dataset, encode_image, head_grey, tmp_path, monkeypatch):
    import collections

    slices = _head_series(make_ct_dataset, 3)
    d = tmp_path / "folder"
    d.mkdir()
    for i, (_, ds) in enumerate(slices):
        (d / f"{i}.dcm").write_bytes(_to_bytes(ds))
    (d / "thumb.png").write_bytes(encode_image(head_grey(128)))
    (d / "notes.txt").write_text("not an image")
    opened: collections.Counter[str] = collections.Counter()
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if str(file).startswith(str(d)):
            opened[Path(file).name] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting_open)
    s = read_series(d)
    assert len(s) == 3
    assert opened == {name: 1 for name in ("0.dcm", "1.dcm", "2.dcm", "thumb.png", "notes.txt")}


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
        return {p for p in _snapshot(tmp_path) if not p.startswith(str(inputs))}

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
    return _to_bytes(_head_series(make_ct_dataset, 1)[0][1])


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
    data = _zip([("good.dcm", good), (name, good)])
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
            read_series(_zip(entries))
        assert not any(v in str(info.value) for v in IDENTITY)
    # zipfile's own error text quotes the entry name: a corrupt member is described, not quoted.
    data = bytearray(_zip([(f"{secret}/IM0003", _dicom_then_zeros(5000))]))
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
    data = _zip([("good.dcm", _valid_entry(make_ct_dataset)), (link, b"/etc/passwd")])
    with pytest.raises(InvalidInputError, match="symbolic link"):
        read_series(data)


def test_too_many_entries_is_refused(guard):
    path = guard / "many.zip"
    path.write_bytes(_zip([(f"f{i}.dcm", b"x") for i in range(6)]))
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
    with pytest.raises(InvalidInputError, match="add up to more than 1000000 bytes"):
        read_series(data, zip_limits=ZipLimits(max_total_bytes=1_000_000, max_ratio=10_000))
    with pytest.raises(InvalidInputError, match="at most 1000 bytes per file"):
        read_series(data, zip_limits=ZipLimits(max_entry_bytes=1000, max_ratio=10_000))


def test_lying_declared_size_is_caught_while_inflating(guard):
    real = bytes(200_000)
    data = bytearray(_zip([("bomb.dcm", real)]))
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
    slices = _head_series(make_ct_dataset, 2)
    data = _zip(
        [("__MACOSX/._a.dcm", b"junk"), (".DS_Store", b"junk"), ("DICOMDIR", b"junk")]
        + [(f"a{i}.dcm", _to_bytes(ds)) for i, (_, ds) in enumerate(slices)]
    )
    s = read_series(data)
    assert s.files == ["a0.dcm", "a1.dcm"] and s.errors == []


# --------------------------------------------------------------------------- privacy of the series


def test_identifiers_only_on_request(make_ct_dataset, tmp_path):
    slices = _head_series(make_ct_dataset, 2)
    path = tmp_path / "p.zip"
    path.write_bytes(_zip([(f"{i}.dcm", _to_bytes(ds)) for i, (_, ds) in enumerate(slices)]))
    s = read_series(path)
    assert s.identifiers == {}
    text = json.dumps(s.to_dict()) + repr(s)
    assert "DOE" not in text and "PID-778899" not in text
    assert str(slices[0][1].SeriesInstanceUID) not in text
    s2 = read_series(path, read_identifiers=True)
    assert s2.identifiers == {"PatientName": "DOE^JANE", "PatientID": "PID-778899"}
    assert "DOE" not in repr(s2)


# --------------------------------------------------------------------------- scan rule


@pytest.mark.parametrize(
    ("probs", "label", "probability", "positive"),
    [
        ([0.1, 0.2, 0.1, 0.05], "normal", 0.2 * 0.5 / 0.75, []),  # lone max mapped: 0.2 × T/H
        ([0.1, 0.6, 0.1, 0.1], "normal", 0.4, [1]),  # one slice over T but under H: not enough
        ([0.1, 0.6, 0.55, 0.1], "hemorrhage", 0.55, [1, 2]),  # two neighbours ≥ T
        ([0.6, 0.1, 0.55, 0.1], "normal", 0.4, [0, 2]),  # two positives, not neighbours
        ([0.1, 0.9, 0.1, 0.1], "hemorrhage", 0.8, [1]),  # one confident slice ≥ H = 0.75
        ([0.7], "hemorrhage", 0.7, [0]),  # a series of one is its slice
        ([0.3], "normal", 0.3, []),
    ],
)
def test_scan_rule_table(probs, label, probability, positive):
    p, lab, pos = ScanRule().apply(probs, 0.5)
    assert lab == label
    assert p == pytest.approx(probability)
    assert pos == positive
    assert (p >= 0.5) == (lab == "hemorrhage")
    assert p <= max(probs) + 1e-12


def test_scan_rule_parameters():
    assert ScanRule().resolve(0.4) == (0.4, 2, pytest.approx(0.7))
    rule = ScanRule(threshold=0.3, min_positive_slices=3, single_slice_threshold=0.95)
    assert rule.apply([0.35, 0.4, 0.32, 0.0], 0.5)[1] == "hemorrhage"
    assert rule.apply([0.35, 0.4, 0.0, 0.32], 0.5)[1] == "normal"
    assert rule.apply([0.0, 0.96, 0.0, 0.0], 0.5)[1] == "hemorrhage"
    assert ScanRule(min_positive_slices=1).apply([0.1, 0.51, 0.1], 0.5)[1] == "hemorrhage"
    for bad in (dict(threshold=1.5), dict(min_positive_slices=0), dict(single_slice_threshold=0.0)):
        with pytest.raises(InvalidInputError):
            ScanRule(**bad)


# --------------------------------------------------------------------------- predict_series


class FakePredictor:
    """Returns probabilities chosen per file name, as real :class:`Prediction` objects.

    It records what predict_batch received so the tests check batching, TTA and context.
    """

    def __init__(self, probs: dict[str, float], threshold: float = 0.5, context_slices: int = 0):
        self.probs = probs
        self.settings = type(
            "S",
            (),
            dict(
                threshold=threshold,
                context_slices=context_slices,
                model_id="fake",
                revision=None,
                is_demo=True,
                trained_on="synthetic phantoms",
            ),
        )()
        self.calls: list[dict[str, Any]] = []

    def predict_batch(self, images, batch_size=16, *, allow_unverified=False, tta=False, neighbors=None):
        self.calls.append(dict(n=len(images), batch_size=batch_size, tta=tta, neighbors=neighbors))
        out = []
        for ct in images:
            p = self.probs[ct.name]
            h, w = ct.display.shape
            heat = np.zeros((h, w), np.float32)
            regions = []
            if p >= 0.5:
                heat[h // 4 : h // 2, w // 4 : w // 2] = 1.0
                regions = [
                    Region(
                        bbox=(w // 4, h // 4, w // 2, h // 2),
                        side="right",
                        region="frontal",
                        score=0.9,
                        peak=1.0,
                        area_px=(h // 4) * (w // 4),
                    )
                ]
            out.append(
                Prediction(
                    label="hemorrhage" if p >= self.settings.threshold else "normal",
                    probability=p,
                    threshold=self.settings.threshold,
                    heatmap=heat,
                    regions=regions,
                    explanation=f"fake explanation p={p:.2f}",
                    name=ct.name,
                    model_id="fake",
                    display=ct.display,
                )
            )
        return out


def _series_with_probs(make_ct_dataset, tmp_path, probs: list[float]):
    slices = _head_series(make_ct_dataset, len(probs))
    names = [f"r{random.Random(i).randrange(10**5)}_{i}.dcm" for i in range(len(probs))]
    path = tmp_path / "scan.zip"
    entries = [(names[i], _to_bytes(ds)) for i, (_, ds) in enumerate(slices)]
    random.Random(5).shuffle(entries)
    path.write_bytes(_zip(entries))
    return read_series(path), dict(zip(names, probs, strict=True)), names


def test_one_bleeding_slice_is_positive_and_named(make_ct_dataset, tmp_path):
    probs = [0.02, 0.05, 0.03, 0.97, 0.04, 0.02]
    s, by_name, names = _series_with_probs(make_ct_dataset, tmp_path, probs)
    fake = FakePredictor(by_name)
    result = predict_series(fake, s, batch_size=4, tta=True)
    assert fake.calls == [dict(n=6, batch_size=4, tta=True, neighbors=None)]
    assert result.label == "hemorrhage"
    assert result.positive_slices == [3]
    assert result.most_suspicious == 3
    d = result.to_dict()
    json.dumps(d)  # JSON-safe (the region score was a numpy float)
    assert d["file"] == "scan.zip"  # the name, never the folder
    assert d["slices"][3]["file"] == names[3]
    assert [x["index"] for x in d["slices"]] == list(range(6))
    assert d["n_slices"] == 6 and d["positive_slices"] == [3]
    assert d["slices"][3]["regions"][0]["region"] == "frontal"
    assert set(d["slices"][0]) == {
        "file",
        "index",
        "label",
        "probability",
        "threshold",
        "regions",
        "explanation",
    }


def test_normal_series_is_negative(make_ct_dataset, tmp_path):
    s, by_name, _ = _series_with_probs(make_ct_dataset, tmp_path, [0.02, 0.3, 0.45, 0.1])
    result = predict_series(FakePredictor(by_name), s)
    assert result.label == "normal"
    assert result.positive_slices == []
    assert result.probability < result.threshold


def test_single_borderline_slice_is_not_enough(make_ct_dataset, tmp_path):
    s, by_name, _ = _series_with_probs(make_ct_dataset, tmp_path, [0.02, 0.6, 0.1, 0.1])
    result = predict_series(FakePredictor(by_name), s)
    assert result.label == "normal" and result.positive_slices == [1]
    relaxed = predict_series(FakePredictor(by_name), s, rule=ScanRule(min_positive_slices=1))
    assert relaxed.label == "hemorrhage"


def test_context_models_get_anatomical_neighbours(make_ct_dataset, tmp_path):
    s, by_name, names = _series_with_probs(make_ct_dataset, tmp_path, [0.1, 0.2, 0.3, 0.4])
    fake = FakePredictor(by_name, context_slices=1)
    predict_series(fake, s)
    nbs = fake.calls[0]["neighbors"]
    assert [[None if c is None else c.name for c in nb] for nb in nbs] == [
        [None, names[1]],
        [names[0], names[2]],
        [names[1], names[3]],
        [names[2], None],
    ]
    assert [len(nb) for nb in context_neighbors(s.slices, 2)] == [4] * 4


def test_scan_result_needs_one_prediction_per_slice(make_ct_dataset, tmp_path):
    s, by_name, _ = _series_with_probs(make_ct_dataset, tmp_path, [0.1, 0.2])
    preds = FakePredictor(by_name).predict_batch(s.slices)
    with pytest.raises(InvalidInputError, match="one per slice"):
        scan_result(s, preds[:1])


@pytest.mark.slow
def test_predict_series_with_a_tiny_real_model(make_ct_dataset, tmp_path):
    from helpers_models import make_tiny_model

    from brain_ct.predictor import Predictor

    predictor = Predictor.from_pretrained(make_tiny_model(tmp_path / "m"))
    s, _, _ = _series_with_probs(make_ct_dataset, tmp_path, [0.0] * 4)
    result = predict_series(predictor, s, batch_size=3)
    assert result.n_slices == 4
    probs = result.probabilities
    assert np.all((probs >= 0) & (probs <= 1))
    assert result.most_suspicious == int(np.argmax(probs))
    assert result.predictions[0].heatmap.shape == s.slices[0].display.shape
    assert json.loads(json.dumps(result.to_dict()))["n_slices"] == 4

    ctx = Predictor.from_pretrained(make_tiny_model(tmp_path / "ctx", context_slices=1))
    assert predict_series(ctx, s).n_slices == 4


def test_zip_without_zip_suffix_is_read_as_zip(make_ct_dataset, tmp_path):
    slices = _head_series(make_ct_dataset, 3)
    path = tmp_path / "upload_without_suffix"
    path.write_bytes(_zip([(f"{i}.dcm", _to_bytes(ds)) for i, (_, ds) in enumerate(slices)]))
    assert read_series(path).files == ["0.dcm", "1.dcm", "2.dcm"]
    assert read_series([path]).files == ["0.dcm", "1.dcm", "2.dcm"]


# --------------------------------------------------------------------------- no silent drops (issue 13.3)


def _synth_dicom_zip(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    """A zip of ``python -m brain_ct synth --format dcm`` output: n slices, each its own series."""
    from brain_ct.__main__ import main

    out = tmp_path / "synth"
    assert (
        main(["synth", "--out", str(out), "--n", str(n), "--size", "128", "--format", "dcm", "--no-progress"])
        == 0
    )
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.dcm"))
    path = tmp_path / "synth.zip"
    path.write_bytes(_zip([(name, (out / name).read_bytes()) for name in names]))
    return path, names


def test_zip_of_single_slice_series_lists_every_other_file_as_skipped(tmp_path):
    path, names = _synth_dicom_zip(tmp_path, 4)
    s = read_series(path, allow_unverified=True)
    infos = list_series(path)
    assert len(s) == 1 and len(infos) == 4
    assert s.errors == []
    assert sorted(s.files + [k["file"] for k in s.skipped]) == names  # every input file accounted for
    others = {i.series_id for i in infos} - {s.series_id}
    assert sorted(k["reason"] for k in s.skipped) == sorted(f"other series {sid}, 1 slice" for sid in others)
    assert s.to_dict()["skipped"] == s.skipped


def test_non_image_dicom_and_ordinary_images_beside_a_series_are_skipped_with_a_reason(
    make_ct_dataset, encode_image, head_grey
):
    slices = _head_series(make_ct_dataset, 2)
    plan = Dataset()
    plan.file_meta = slices[0][1].file_meta.__class__()
    plan.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"  # RT Plan Storage
    plan.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    plan.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    plan.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"
    plan.SOPInstanceUID = plan.file_meta.MediaStorageSOPInstanceUID
    plan.Modality = "RTPLAN"
    plan.SeriesInstanceUID = generate_uid()
    data = _zip(
        [(f"a{i}.dcm", _to_bytes(ds)) for i, (_, ds) in enumerate(slices)]
        + [("plan.dcm", _to_bytes(plan)), ("thumb.png", encode_image(head_grey(128))), ("DICOMDIR", b"x")]
        + [("notes.txt", b"hello, this is not an image")]
    )
    s = read_series(data)
    assert s.files == ["a0.dcm", "a1.dcm"]
    reasons = {k["file"]: k["reason"] for k in s.skipped}
    assert reasons["plan.dcm"].startswith("not an image")
    assert "RT Plan Storage" in reasons["plan.dcm"]
    assert "ordinary image beside DICOM slices" in reasons["thumb.png"]
    assert "DICOMDIR" in reasons["DICOMDIR"]
    assert [e["file"] for e in s.errors] == ["notes.txt"]
    assert "not a DICOM file" in s.errors[0]["message"]


def test_an_input_of_only_non_image_dicom_says_why(make_ct_dataset):
    ds = _head_series(make_ct_dataset, 1)[0][1]
    for keyword in ("Rows", "Columns", "PixelData"):
        delattr(ds, keyword)
    with pytest.raises(InvalidInputError, match=r"Per file: a\.dcm: not an image"):
        read_series(_zip([("a.dcm", _to_bytes(ds))]))


def test_scan_json_carries_skipped_and_errors(make_ct_dataset, tmp_path):
    a = _head_series(make_ct_dataset, 2)
    b = _head_series(make_ct_dataset, 3)
    path = tmp_path / "two.zip"
    path.write_bytes(
        _zip(
            [(f"a{i}.dcm", _to_bytes(ds)) for i, (_, ds) in enumerate(a)]
            + [(f"b{i}.dcm", _to_bytes(ds)) for i, (_, ds) in enumerate(b)]
            + [("junk.bin", bytes(5000))]
        )
    )
    s = read_series(path)
    fake = FakePredictor({f: 0.1 for f in s.files})
    d = predict_series(fake, s).to_dict()
    assert d["errors"] == [
        {"file": "junk.bin", "type": "InvalidInputError", "message": d["errors"][0]["message"]}
    ]
    assert [k["file"] for k in d["skipped"]] == ["a0.dcm", "a1.dcm"]
    assert d["skipped"][0]["reason"] == f"other series {list_series(path)[1].series_id}, 2 slices"


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
    import time
    import tracemalloc

    # Each file just under ZipLimits.ratio_floor_bytes, so no single member is checked for its ratio.
    data = _zip_of_copies(1000, bytes(1_000_000))
    assert len(data) < 1.5 * 2**20  # ~1 MB uploaded, 1 GB inflated
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(InvalidInputError, match=match) as info:
            read_series(data, zip_limits=limits)
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
    return _to_bytes(ds) + bytes(n)


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
    real = _to_bytes(_head_series(make_ct_dataset, 1)[0][1])
    meta_end = 132 + 12 + int.from_bytes(real[140:144], "little")
    (d / "meta.dcm").write_bytes(real[:meta_end] + bytes(3000))
    with pytest.raises(InvalidInputError, match="could be read"):
        read_series(d)
    assert calls == []


def test_dicom_without_preamble_is_still_read(make_ct_dataset, tmp_path):
    slices = _head_series(make_ct_dataset, 3)
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
    slices = _head_series(make_ct_dataset, 4)
    names = [
        "ZORBLATT^QUENNELL_PIDZ99183/20210915/IM0003",
        "ZORBLATT^QUENNELL_PIDZ99183/20210915/IM0001",
        "ZORBLATT^QUENNELL_PIDZ99183/20210915/ZORBLATT_QUENNELL.dcm",
        "ZORBLATT^QUENNELL_PIDZ99183/20210915/<img src=x>.dcm",
    ]
    junk = "ZORBLATT^QUENNELL_PIDZ99183/20210915/PIDZ99183.txt"
    path = tmp_path / "scan.zip"
    path.write_bytes(
        _zip([(n, _to_bytes(ds)) for n, (_, ds) in zip(names, slices, strict=True)] + [(junk, b"text")])
    )
    s = read_series(path)
    assert s.files == ["IM0003", "IM0001", "slice 3 at 10.0 mm", "slice 4 at 15.0 mm"]
    assert [ct.name for ct in s.slices] == s.files
    assert s.errors[0]["file"] == "file 4"  # 4th in name order
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
    from brain_ct.series import screen_name

    assert screen_name(name) is ok


def test_a_name_holding_the_files_own_patient_id_is_screened_out(make_ct_dataset):
    ((_, ds),) = _head_series(make_ct_dataset, 1, PatientID="123456")
    s = read_series(_zip([("123456.dcm", _to_bytes(ds))]))
    assert s.files == ["slice 1 at 0.0 mm"]
    ((_, ds),) = _head_series(make_ct_dataset, 1)  # PatientName DOE^JANE
    assert read_series(_zip([("jane_0001.dcm", _to_bytes(ds))])).files == ["slice 1 at 0.0 mm"]
    assert read_series(_zip([("scan_0001.dcm", _to_bytes(ds))])).files == ["scan_0001.dcm"]


# --------------------------------------------------------------------------- messages (issue 14.7, 13.13)


def test_messages_name_the_file_never_its_folder(tmp_path):
    deep = tmp_path / "cache" / "0123abcd"
    deep.mkdir(parents=True)
    z = deep / "nested.zip"
    z.write_bytes(_zip([("a.txt", b"hello")]))
    with pytest.raises(InvalidInputError) as info:
        read_series(z)
    assert "no slice of nested.zip could be read" in str(info.value)
    assert str(deep) not in str(info.value)
    assert read_series.__module__  # the source label is the name too
    empty = deep / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInputError) as info:
        read_series(empty)
    assert str(deep) not in str(info.value) and "folder empty holds no files" in str(info.value)


def test_one_slice_is_singular():
    from brain_ct.series import plural

    assert plural(1, "slice") == "1 slice"
    assert plural(0, "slice") == "0 slices"
    assert plural(12, "slice") == "12 slices"


def test_series_ids_are_stable_across_runs_for_the_same_input(make_ct_dataset, monkeypatch):
    from brain_ct import privacy

    a = _head_series(make_ct_dataset, 2)
    b = _head_series(make_ct_dataset, 3)
    entries = [(f"a{i}.dcm", _to_bytes(ds)) for i, (_, ds) in enumerate(a)]
    entries += [(f"b{i}.dcm", _to_bytes(ds)) for i, (_, ds) in enumerate(b)]
    data = _zip(entries)
    first = [i.series_id for i in list_series(data)]
    monkeypatch.setattr(privacy, "_SALT", b"another process has another salt")
    # `predict --list-series` and `predict --series-uid ID` run in two processes: the ids must agree.
    assert [i.series_id for i in list_series(data)] == first
    assert read_series(data, series_uid=first[1]).series_id == first[1]
    # The id depends on the whole input, so it cannot be looked up from one UID alone.
    more = _zip(
        entries
        + [("b9.dcm", _to_bytes(_head_series(make_ct_dataset, 1, uid=str(b[0][1].SeriesInstanceUID))[0][1]))]
    )
    assert set(i.series_id for i in list_series(more)).isdisjoint(first)
