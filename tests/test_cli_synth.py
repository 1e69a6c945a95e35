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
