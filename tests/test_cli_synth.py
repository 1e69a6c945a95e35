"""Tests for ``python -m brain_ct synth``."""

from __future__ import annotations

import json
import subprocess
import sys

import pydicom
import pytest

from brain_ct.__main__ import main


def _rows(out):
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def test_synth_writes_an_image_folder_that_datasets_reads(tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "ds"
    assert (
        main(["synth", "--out", str(out), "--n", "8", "--size", "128", "--seed", "3", "--no-progress"]) == 0
    )
    rows = _rows(out)
    assert len(rows) == 8
    assert sorted(r["label"] for r in rows) == [0] * 4 + [1] * 4
    for r in rows:
        assert set(r) >= {"file", "file_name", "label", "subtype", "bbox", "mask"}
        assert r["file"] == r["file_name"]
        assert (out / r["file"]).is_file() and (out / r["mask"]).is_file()
        folder = "hemorrhage" if r["label"] else "normal"
        assert r["file"].startswith(folder + "/") and r["file"].endswith(".png")
        assert r["mask"] == "masks/" + r["file"].split("/")[1]
        if r["label"]:
            x0, y0, x1, y1 = r["bbox"]
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
            assert r["subtype"] is not None
        else:
            assert r["bbox"] is None and r["subtype"] is None

    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    assert len(ds) == 8  # masks/ is not read as a third class
    assert sorted(set(ds["label"])) == [0, 1]
    first = ds[0]
    assert first["image"].size == (128, 128)
    assert first["file"] in {r["file"] for r in rows}


def test_synth_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert (
            main(["synth", "--out", str(out), "--n", "4", "--size", "64", "--seed", "9", "--no-progress"])
            == 0
        )
    assert _rows(a) == _rows(b)
    for r in _rows(a):
        assert (a / r["file"]).read_bytes() == (b / r["file"]).read_bytes()


def test_synth_dicom_format_writes_ct_dicoms(tmp_path):
    out = tmp_path / "dcm"
    assert (
        main(["synth", "--out", str(out), "--n", "2", "--size", "64", "--format", "dcm", "--no-progress"])
        == 0
    )
    rows = _rows(out)
    assert all(r["file"].endswith(".dcm") and r["dicom"] == r["file"] for r in rows)
    ds = pydicom.dcmread(out / rows[0]["file"])
    assert ds.Modality == "CT" and ds.Rows == 64
    assert str(ds.PatientName) == "SYNTHETIC^PHANTOM"


def test_synth_both_writes_png_and_dicom(tmp_path):
    out = tmp_path / "both"
    assert (
        main(["synth", "--out", str(out), "--n", "2", "--size", "64", "--format", "both", "--no-progress"])
        == 0
    )
    for r in _rows(out):
        assert r["file"].endswith(".png") and r["dicom"].endswith(".dcm")
        assert (out / r["dicom"]).is_file()


@pytest.mark.parametrize(
    "argv",
    [
        ["synth", "--n", "4"],  # no --out
        ["synth", "--out", "X"],  # no --n
        ["synth", "--out", "X", "--n", "-3"],
        ["synth", "--out", "X", "--n", "four"],
        ["synth", "--out", "X", "--n", "4", "--format", "jpg"],
        ["synth", "--out", "X", "--n", "4", "--style", "fancy"],
    ],
)
def test_bad_arguments_exit_2(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


@pytest.mark.parametrize("extra", [["--n", "1"], ["--n", "4", "--size", "8"]])
def test_out_of_range_values_exit_2_with_a_message(extra, tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "o"), *extra, "--no-progress"]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_runs_as_a_module_with_progress_on_stderr(tmp_path):
    out = tmp_path / "m"
    proc = subprocess.run(
        [sys.executable, "-m", "brain_ct", "synth", "--out", str(out), "--n", "2", "--size", "64"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "synth" in proc.stderr and proc.stdout == ""
    assert len(_rows(out)) == 2


def _csv(path):
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_synth_series_writes_whole_scans_that_read_back_as_series(tmp_path):
    from brain_ct.series import list_series, read_series

    out = tmp_path / "scans"
    argv = ["synth", "--out", str(out), "--series", "2", "--slices", "6", "--size", "128", "--seed", "5"]
    assert main([*argv, "--no-progress"]) == 0
    scans = _csv(out / "scans.csv")
    slices = _csv(out / "slices.csv")
    assert [s["folder"] for s in scans] == ["series_001", "series_002"]
    assert len(slices) == 12
    for scan in scans:
        rows = [r for r in slices if r["folder"] == scan["folder"]]
        assert [int(r["index"]) for r in rows] == list(range(6))
        assert int(scan["n_slices"]) == 6
        # A scan bleeds exactly when one of its slices does; its positive slices are those slices.
        positive = [int(r["index"]) for r in rows if r["label"] == "1"]
        assert int(scan["label"]) == int(bool(positive))
        assert scan["positive_slices"] == " ".join(map(str, positive))
        for r in rows:
            assert (out / r["folder"] / r["file"]).is_file()
            assert (r["label"] == "1") == (r["bbox"] != "")
    assert scans[0]["label"] == "1" and scans[0]["subtype"]  # the first head bleeds, so one can try it

    series = read_series(out / "series_001")
    rows = [r for r in slices if r["folder"] == "series_001"]
    assert series.files == [r["file"] for r in rows]  # anatomical order is the order written
    assert series.positions == pytest.approx([float(r["z"]) for r in rows])
    assert series.errors == [] and series.skipped == []
    assert series.sort_key == "position"

    infos = list_series(out)
    assert [i.n_slices for i in infos] == [6, 6] and len({i.series_id for i in infos}) == 2
    whole = read_series(out)
    assert len(whole) == 6 and len(whole.skipped) == 8  # the other head's slices and the two CSVs
    assert whole.errors == []  # the CSVs beside the scans are sidecar files: skipped, named, not errors
    assert {"scans.csv", "slices.csv"} <= {k["file"] for k in whole.skipped}
    # Deterministic per seed.
    again = tmp_path / "again"
    assert main(["synth", "--out", str(again), *argv[3:], "--no-progress"]) == 0
    assert _csv(again / "slices.csv") == slices


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n", "4", "--slices", "6"], "--slices needs --series"),
        (["--series", "0"], "--series must be at least 1"),
        (["--series", "1", "--slices", "0"], "--slices must be"),
        (["--series", "1", "--format", "both"], "--format"),
    ],
)
def test_synth_series_bad_values_exit_2_with_a_message(extra, message, tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "o"), *extra, "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_n_and_series_together_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(tmp_path / "o"), "--n", "4", "--series", "2"])
    assert exc.value.code == 2
