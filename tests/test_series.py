"""Tests of brain_ct.series: grouping by headers, anatomical order, multi-frame, every file accounted for."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import draw_head_hu
from helpers_series import (
    FakePredictor,
    head_series,
    hu_to_stored,
    label_predictor,
    marker,
    slice_ds,
    synthetic_zip,
    to_bytes,
    zip_bytes,
)
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from brain_ct.errors import InvalidInputError, NotHeadCTError
from brain_ct.scan import predict_series
from brain_ct.series import list_series, read_series

# --------------------------------------------------------------------------- synthetic (helper B) series


@pytest.fixture(scope="module")
def synthetic_series():
    """A 10-slice phantom head with a bleed on some of its slices (and some slices without)."""
    from brain_ct.synthetic import generate_series

    phantoms = generate_series(3, n_slices=10, size=128, hemorrhage=True)
    assert {p.label for p in phantoms} == {0, 1}
    return phantoms


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
    slices = head_series(make_ct_dataset, 7)
    order = list(range(7))
    random.Random(0).shuffle(order)
    # Instance numbers disagree with positions on purpose: position must win.
    entries = [(f"x/{k:02d}.dcm", to_bytes(slices[i][1])) for k, i in enumerate(order)]
    for k, i in enumerate(order):
        slices[i][1].InstanceNumber = 100 - k
    path = tmp_path / "s.zip"
    path.write_bytes(zip_bytes(entries))
    s = read_series(path)
    assert [marker(ct) for ct in s.slices] == list(range(7))
    assert s.positions == [5.0 * i for i in range(7)]
    assert s.files == [f"x/{order.index(i):02d}.dcm" for i in range(7)]
    assert s.source == "s.zip"  # the name, never the folder it sits in (an upload sits in a cache)


def test_normal_pointing_down_still_sorts_inferior_to_superior(make_ct_dataset, tmp_path):
    # Column direction (0, -1, 0) makes row × col point to the feet; positions must still grow upwards.
    slices = head_series(make_ct_dataset, 5, ImageOrientationPatient=[1, 0, 0, 0, -1, 0])
    for d in (tmp_path / "d",):
        d.mkdir()
        for i, (_, ds) in enumerate(reversed(slices)):
            (d / f"f{i}.dcm").write_bytes(to_bytes(ds))
    s = read_series(tmp_path / "d")
    assert [marker(ct) for ct in s.slices] == list(range(5))
    assert s.positions == [0.0, 5.0, 10.0, 15.0, 20.0]


def test_instance_number_fallback_then_natural_names(make_ct_dataset, tmp_path):
    slices = head_series(make_ct_dataset, 4)
    d = tmp_path / "inst"
    d.mkdir()
    for i, (_, ds) in enumerate(slices):
        del ds.ImagePositionPatient
        (d / f"z{3 - i}.dcm").write_bytes(to_bytes(ds))
    s = read_series(d)
    assert s.sort_key == "instance_number"
    assert [marker(ct) for ct in s.slices] == [0, 1, 2, 3]
    assert s.positions == [None] * 4

    d2 = tmp_path / "names"
    d2.mkdir()
    for i, (_, ds) in enumerate(slices):
        del ds.InstanceNumber
        (d2 / f"img{i * 5}.dcm").write_bytes(to_bytes(ds))  # img0, img5, img10, img15: natural order
    s2 = read_series(d2)
    assert s2.sort_key == "name"
    assert s2.files == ["img0.dcm", "img5.dcm", "img10.dcm", "img15.dcm"]
    assert [marker(ct) for ct in s2.slices] == [0, 1, 2, 3]


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


def test_scripts_and_empty_sidecars_beside_the_slices_are_skipped_not_errors(make_ct_dataset, tmp_path):
    for i, (_, ds) in enumerate(head_series(make_ct_dataset, 2)):
        (tmp_path / f"im{i}.dcm").write_bytes(to_bytes(ds))
    (tmp_path / "__init__.py").write_bytes(b"")
    (tmp_path / "make_examples.py").write_text("print('hello')")
    (tmp_path / "README").write_bytes(b"")
    s = read_series(tmp_path)
    assert s.files == ["im0.dcm", "im1.dcm"] and s.errors == []
    assert sorted(k["file"] for k in s.skipped) == ["README", "__init__.py", "make_examples.py"]


def test_list_of_files_and_skipped_files(make_ct_dataset, tmp_path):
    slices = head_series(make_ct_dataset, 3)
    paths = []
    for i, (_, ds) in enumerate(slices):
        p = tmp_path / f"im{i}.dcm"
        p.write_bytes(to_bytes(ds))
        paths.append(p)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(to_bytes(slices[0][1])[:-4000])  # header fine, pixels truncated
    note = tmp_path / "notes.txt"
    note.write_text("hello")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x01\x02 not an image" * 10)
    s = read_series([paths[2], broken, note, junk, paths[0], paths[1]])
    assert s.files == ["im0.dcm", "im1.dcm", "im2.dcm"]
    assert {e["file"] for e in s.errors} == {"broken.dcm", "junk.bin"}
    assert all(e["message"] and e["type"] for e in s.errors)
    # the file's label is in "file" and not repeated at the start of its message
    assert not any(e["message"].startswith(e["file"]) for e in s.errors)
    # a text file beside the slices is harmless: skipped with a reason, not an error
    assert [k["file"] for k in s.skipped] == ["notes.txt"] and "not an image" in s.skipped[0]["reason"]
    assert s.source == "6 files"


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
    z.write_bytes(zip_bytes([]))
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
        ds = slice_ds(
            make_ct_dataset, np.full((96, 96), -1000.0, np.float32), uid=uid, z=i * 5.0, instance=i + 1
        )
        (d / f"{i}.dcm").write_bytes(to_bytes(ds))
    with pytest.raises(NotHeadCTError, match="does not look like an axial head CT"):
        read_series(d)
    assert len(read_series(d, allow_unverified=True)) == 3


def test_end_slices_without_head_are_kept_in_a_head_series(make_ct_dataset, tmp_path):
    uid = generate_uid()
    d = tmp_path / "ends"
    d.mkdir()
    for i in range(5):
        hu = draw_head_hu(96) if 0 < i < 4 else np.full((96, 96), -1000.0, np.float32)
        (d / f"{i}.dcm").write_bytes(to_bytes(slice_ds(make_ct_dataset, hu, uid=uid, z=i * 5.0, instance=i)))
    s = read_series(d)
    assert len(s) == 5 and s.errors == []


@pytest.mark.parametrize(("tags", "checks"), [({}, 1), ({"Modality": None, "RescaleType": "HU"}, 3)])
def test_a_series_is_judged_as_a_head_ct_once(make_ct_dataset, tmp_path, monkeypatch, tags, checks):
    # A CT series is judged as a series (its central slice passes at once); slices without a
    # Modality each pass io's own check when decoded and are not judged a second time as a series.
    from brain_ct import framing

    judged: list[str] = []
    real = framing.check_plausible
    monkeypatch.setattr(framing, "check_plausible", lambda ct, *a: judged.append(ct.name) or real(ct, *a))
    d = tmp_path / "scan"
    d.mkdir()
    for i, (_, ds) in enumerate(head_series(make_ct_dataset, 3, **tags)):
        (d / f"{i}.dcm").write_bytes(to_bytes(ds))
    s = read_series(d)
    assert len(s) == 3 and s.errors == []
    assert len(judged) == checks
    assert [ct.head_check for ct in s.slices] == ["passed"] * 3


@pytest.mark.parametrize("allow", [False, True])
def test_every_slice_says_whether_the_series_head_check_ran(
    make_ct_dataset, encode_image, head_grey, tmp_path, allow
):
    # Slices are decoded without the per-slice check; the series check stands for all of them.
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    for i, (_, ds) in enumerate(head_series(make_ct_dataset, 3)):
        (dicom / f"{i}.dcm").write_bytes(to_bytes(ds))
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
    axial = head_series(make_ct_dataset, 4)
    contrast = head_series(make_ct_dataset, 6, ContrastBolusAgent="IODINE")
    coronal = head_series(make_ct_dataset, 8, ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    entries = []
    for tag, group in (("ax", axial), ("cta", contrast), ("co", coronal)):
        entries += [(f"{tag}{i}.dcm", to_bytes(ds)) for i, (_, ds) in enumerate(group)]
    random.Random(2).shuffle(entries)
    path = tmp_path / "multi.zip"
    path.write_bytes(zip_bytes(entries))

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
    assert sorted(by_hash.files) == sorted(by_raw.files) == [f"cta{i}.dcm" for i in range(6)]
    with pytest.raises(InvalidInputError, match="available series ids"):
        read_series(path, series_uid="nope")


# --------------------------------------------------------------------------- multi-frame


def test_multiframe_dicom_is_a_series_sorted_by_frame_positions(make_ct_dataset, tmp_path):
    n = 5
    frames = []
    for i in range(n):
        hu = draw_head_hu(96)
        hu[48, 38 + i] = 80.0
        frames.append(hu_to_stored(hu))
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
    path.write_bytes(to_bytes(ds))

    s = read_series(path)
    assert [marker(ct) for ct in s.slices] == list(range(n))
    assert s.positions == [2.5 * i for i in range(n)]
    assert s.files == [f"enhanced.dcm#{order.index(i) + 1}" for i in range(n)]


# --------------------------------------------------------------------------- each file decoded once


def test_each_file_is_decoded_once(make_ct_dataset, tmp_path, monkeypatch):
    import pydicom.pixels

    slices = head_series(make_ct_dataset, 6, size=128)
    d = tmp_path / "once"
    d.mkdir()
    for i, (_, ds) in enumerate(slices):
        (d / f"{i}.dcm").write_bytes(to_bytes(ds))
    calls = []
    real = pydicom.pixels.pixel_array
    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda *a, **k: calls.append(1) or real(*a, **k))
    s = read_series(d)
    assert len(s) == 6
    assert len(calls) == 6


def test_each_file_is_read_from_disk_once(make_ct_dataset, encode_image, head_grey, tmp_path, monkeypatch):
    import collections

    slices = head_series(make_ct_dataset, 3)
    d = tmp_path / "folder"
    d.mkdir()
    for i, (_, ds) in enumerate(slices):
        (d / f"{i}.dcm").write_bytes(to_bytes(ds))
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


# --------------------------------------------------------------------------- privacy of the series


def test_identifiers_only_on_request(make_ct_dataset, tmp_path):
    slices = head_series(make_ct_dataset, 2)
    path = tmp_path / "p.zip"
    path.write_bytes(zip_bytes([(f"{i}.dcm", to_bytes(ds)) for i, (_, ds) in enumerate(slices)]))
    s = read_series(path)
    assert s.identifiers == {}
    text = json.dumps(s.to_dict()) + repr(s)
    assert "DOE" not in text and "PID-778899" not in text
    assert str(slices[0][1].SeriesInstanceUID) not in text
    s2 = read_series(path, read_identifiers=True)
    assert s2.identifiers == {"PatientName": "DOE^JANE", "PatientID": "PID-778899"}
    assert "DOE" not in repr(s2)


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
    path.write_bytes(zip_bytes([(name, (out / name).read_bytes()) for name in names]))
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
    slices = head_series(make_ct_dataset, 2)
    plan = Dataset()
    plan.file_meta = slices[0][1].file_meta.__class__()
    plan.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"  # RT Plan Storage
    plan.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    plan.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    plan.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"
    plan.SOPInstanceUID = plan.file_meta.MediaStorageSOPInstanceUID
    plan.Modality = "RTPLAN"
    plan.SeriesInstanceUID = generate_uid()
    data = zip_bytes(
        [(f"im{i}.dcm", to_bytes(ds)) for i, (_, ds) in enumerate(slices)]
        + [("plan.dcm", to_bytes(plan)), ("thumb.png", encode_image(head_grey(128))), ("DICOMDIR", b"x")]
        + [
            ("notes.txt", b"hello, this is not an image"),
            ("LICENSE", b"CC-BY 4.0"),
            ("junk.bin", b"\x01" * 40),
        ]
    )
    s = read_series(data)
    assert s.files == ["im0.dcm", "im1.dcm"]
    reasons = {k["file"]: k["reason"] for k in s.skipped}
    assert reasons["plan.dcm"].startswith("not an image")
    assert "RT Plan Storage" in reasons["plan.dcm"]
    assert "ordinary image beside DICOM slices" in reasons["thumb.png"]
    assert "DICOMDIR" in reasons["DICOMDIR"]
    # notes.txt and LICENSE (whose name the screen may hide): harmless, skipped with a reason
    assert len([k for k in s.skipped if "text or metadata file" in k["reason"]]) == 2
    assert [e["file"] for e in s.errors] == ["junk.bin"]
    assert s.errors[0]["message"].startswith("not a DICOM file")


def test_an_input_of_only_non_image_dicom_says_why(make_ct_dataset):
    ds = head_series(make_ct_dataset, 1)[0][1]
    for keyword in ("Rows", "Columns", "PixelData"):
        delattr(ds, keyword)
    with pytest.raises(InvalidInputError, match=r"Per file: im\.dcm: not an image"):
        read_series(zip_bytes([("im.dcm", to_bytes(ds))]))


def test_scan_json_carries_skipped_and_errors(make_ct_dataset, tmp_path):
    a = head_series(make_ct_dataset, 2)
    b = head_series(make_ct_dataset, 3)
    path = tmp_path / "two.zip"
    path.write_bytes(
        zip_bytes(
            [(f"im{i}.dcm", to_bytes(ds)) for i, (_, ds) in enumerate(a)]
            + [(f"b{i}.dcm", to_bytes(ds)) for i, (_, ds) in enumerate(b)]
            + [("junk.bin", bytes(5000))]
        )
    )
    s = read_series(path)
    fake = FakePredictor({f: 0.1 for f in s.files})
    d = predict_series(fake, s).to_dict()
    assert d["errors"] == [
        {"file": "junk.bin", "type": "InvalidInputError", "message": d["errors"][0]["message"]}
    ]
    assert [k["file"] for k in d["skipped"]] == ["im0.dcm", "im1.dcm"]
    assert d["skipped"][0]["reason"] == f"other series {list_series(path)[1].series_id}, 2 slices"


# --------------------------------------------------------------------------- messages (issue 14.7, 13.13)


def test_messages_name_the_file_never_its_folder(tmp_path):
    deep = tmp_path / "cache" / "0123abcd"
    deep.mkdir(parents=True)
    z = deep / "nested.zip"
    z.write_bytes(zip_bytes([("a.txt", b"hello")]))
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


def test_series_ids_are_stable_across_runs_for_the_same_input(make_ct_dataset, monkeypatch):
    from brain_ct import privacy

    a = head_series(make_ct_dataset, 2)
    b = head_series(make_ct_dataset, 3)
    entries = [(f"im{i}.dcm", to_bytes(ds)) for i, (_, ds) in enumerate(a)]
    entries += [(f"b{i}.dcm", to_bytes(ds)) for i, (_, ds) in enumerate(b)]
    data = zip_bytes(entries)
    first = [i.series_id for i in list_series(data)]
    monkeypatch.setattr(privacy, "_SALT", b"another process has another salt")
    # `predict --list-series` and `predict --series-uid ID` run in two processes: the ids must agree.
    assert [i.series_id for i in list_series(data)] == first
    assert read_series(data, series_uid=first[1]).series_id == first[1]
    # The id depends on the whole input, so it cannot be looked up from one UID alone.
    more = zip_bytes(
        entries
        + [("b9.dcm", to_bytes(head_series(make_ct_dataset, 1, uid=str(b[0][1].SeriesInstanceUID))[0][1]))]
    )
    assert set(i.series_id for i in list_series(more)).isdisjoint(first)


# --------------------------------------------------------------------------- declared sizes (issue 26)


def _frames_claim(make_ct_dataset, frames: int) -> bytes:
    """A 9 KB 64×64 CT DICOM whose (0028,0008) Number of Frames claims ``frames``."""
    ds = make_ct_dataset(hu_to_stored(draw_head_hu(64)), NumberOfFrames=frames)
    return to_bytes(ds)


@pytest.mark.parametrize("wrap", ["alone", "zip"])
def test_two_billion_frames_are_refused_before_any_per_frame_list(make_ct_dataset, wrap):
    import tracemalloc

    data = _frames_claim(make_ct_dataset, 2_000_000_000)
    assert len(data) < 10_000
    source = data if wrap == "alone" else zip_bytes([("IM0001.dcm", data)])
    tracemalloc.start()
    try:
        # what `predict --list-series` shows
        with pytest.raises(
            InvalidInputError, match=r"no series of .* could be listed. Per file: .*2000000000 frames"
        ):
            list_series(source)
        with pytest.raises(
            InvalidInputError, match=r"declares 2000000000 frames; a scan may have at most 300"
        ):
            read_series(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a list of 2e9 entries would be 16 GB; the file itself and its parse are well under this
    assert peak < 30 << 20, peak


def test_scan_pixels_are_refused_from_the_headers_before_decoding(make_ct_dataset, monkeypatch):
    from brain_ct.limits import UploadLimits

    slices = head_series(make_ct_dataset, 5, size=64)
    data = zip_bytes([(f"IM{i:04d}", to_bytes(ds)) for i, (_, ds) in enumerate(slices)])

    def no_decoding(*args, **kwargs):
        raise AssertionError("a slice was decoded")

    monkeypatch.setattr("brain_ct.series.load_image", no_decoding)
    tight = UploadLimits(max_scan_pixels=4 * 64 * 64)
    with pytest.raises(InvalidInputError, match=r"holds 5 slices of 64 × 64 .*at most 4 slices of 64 × 64"):
        read_series(data, limits=tight)
    monkeypatch.undo()
    assert len(read_series(data, limits=UploadLimits(max_scan_pixels=5 * 64 * 64))) == 5


def test_300_jpeg2000_frames_of_740_are_refused_from_the_header(make_ct_dataset, monkeypatch):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    ds = make_ct_dataset(np.zeros((740, 740), np.int16), NumberOfFrames=300)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)] * 300)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    data = to_bytes(ds)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a frame was decoded")

    monkeypatch.setattr("brain_ct.decode_guard.decode_frame", no_decoding)
    with pytest.raises(InvalidInputError, match=r"300 slices of 740 × 740 .*at most 61 slices of 740 × 740"):
        read_series(data)


def test_a_zip_of_large_images_is_refused_from_their_headers(monkeypatch):
    from badfiles import png_forged_header

    data = zip_bytes([(f"slice{i}.png", png_forged_header(3000, 3000)) for i in range(40)])

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr("brain_ct.series.load_image", no_decoding)
    # each would be read reduced to 2048², and 40 of those are far above a scan's pixels
    with pytest.raises(
        InvalidInputError, match=r"40 slices of 2048 × 2048 .*at most 8 slices of 2048 × 2048"
    ):
        read_series(data)


def test_a_slice_above_the_pixel_limit_is_refused_from_its_header(make_ct_dataset):
    ds = make_ct_dataset(np.zeros((64, 64), np.int16))
    ds.Rows = ds.Columns = 4096  # the pixel data is not even there: only the header is read
    with pytest.raises(InvalidInputError, match=r"4096x4096 pixels \(16\.8 megapixels\) is above the limit"):
        read_series(zip_bytes([("IM0001", to_bytes(ds))]))


def test_the_time_budget_stops_a_multiframe_file_between_frames(make_ct_dataset, monkeypatch):
    from brain_ct import collect

    hu = draw_head_hu(64)
    ds = make_ct_dataset(np.stack([hu_to_stored(hu)] * 6).reshape(6 * 64, 64), NumberOfFrames=6)
    ds.Rows = 64
    checks = []
    real = collect.Budget.check

    def counting(self, done, total, what):
        checks.append(what)
        if "frame 4 of 6" in what:
            self.deadline = 0.0  # the budget runs out while the file's frames are decoded
        real(self, done, total, what)

    monkeypatch.setattr(collect.Budget, "check", counting)
    with pytest.raises(InvalidInputError, match=r"stopped at the 60 s limit .*frame 4 of 6"):
        read_series(to_bytes(ds))
    assert "decoded (frame 1 of 6)" in checks


def test_a_stray_sequence_delimiter_after_the_pixels_is_read(make_ct_dataset):
    data = to_bytes(head_series(make_ct_dataset, 1, size=64)[0][1]) + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    series = read_series(data, read_identifiers=True)
    assert len(series) == 1 and series.identifiers["PatientID"] == "PID-778899"
    assert list_series(data)[0].n_slices == 1


def test_a_malformed_header_says_what_is_wrong_without_quoting_values(make_ct_dataset, monkeypatch):
    data = zip_bytes([("IM0001", to_bytes(head_series(make_ct_dataset, 1, size=64)[0][1]))])

    def broken(ds):
        raise NotImplementedError("Unknown VR in tag holding DOE^JANE")

    monkeypatch.setattr("brain_ct.privacy.identifying_values", broken)
    with pytest.raises(
        InvalidInputError, match=r"IM0001: the file is malformed .*NotImplementedError"
    ) as info:
        read_series(data)
    assert "DOE" not in str(info.value)


def test_limits_passed_to_a_reading_reach_every_reader_it_calls(make_ct_dataset, monkeypatch):
    from brain_ct.limits import UploadLimits

    hu = draw_head_hu(64)
    ds = make_ct_dataset(np.stack([hu_to_stored(hu)] * 6).reshape(6 * 64, 64), NumberOfFrames=6)
    ds.Rows = 64
    data = to_bytes(ds)
    monkeypatch.setenv("BRAIN_CT_MAX_SCAN_SLICES", "4")  # a strict server...
    with pytest.raises(InvalidInputError, match=r"declares 6 frames; a scan may have at most 4"):
        read_series(data)
    with pytest.raises(InvalidInputError, match=r"declares 6 frames"):
        list_series(data)
    # ...and a caller that allows more: the header pass and the frame decoder both follow it
    assert len(read_series(data, limits=UploadLimits(max_scan_slices=6))) == 6
    assert list_series(data, limits=UploadLimits(max_scan_slices=6))[0].n_slices == 6
