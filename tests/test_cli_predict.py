"""``python -m brain_ct predict``: JSON Lines schema, table, heatmaps, exit codes, failures, privacy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import brain_window_uint8, draw_head_hu
from helpers_models import make_tiny_model

from brain_ct.__main__ import main

REPO = Path(__file__).resolve().parents[1]
SECRETS = {
    "PatientName": "Doe^Janet^SECRETNAME",
    "PatientID": "PID-99887766",
    "InstitutionName": "St Elsewhere XYZ",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import pydicom
    from pydicom.data import get_testdata_file

    root = tmp_path_factory.mktemp("cli")
    ds = pydicom.dcmread(get_testdata_file("J2K_pixelrep_mismatch.dcm"))
    for keyword, value in SECRETS.items():
        setattr(ds, keyword, value)
    dcm = root / "real head.dcm"
    ds.save_as(dcm)
    png = np.zeros((240, 200), np.uint8)
    png[20:220] = brain_window_uint8(draw_head_hu(200))  # scalp, skull, brain, ventricles
    cv2.circle(png, (140, 100), 10, 220, -1)  # a bright lesion
    png_path = root / "phantom.png"
    cv2.imwrite(str(png_path), png)
    bad = root / "broken.dcm"
    bad.write_bytes(b"DICM? no, just some text renamed to .dcm")
    return {
        "dcm": dcm,
        "png": png_path,
        "bad": bad,
        "model": make_tiny_model(root / "model"),
        "root": root,
    }


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_json_lines_schema_heatmaps_and_a_bad_file(files, tmp_path: Path, capsys) -> None:
    heat_dir = tmp_path / "heat"
    paths = [str(files["dcm"]), str(files["bad"]), str(files["png"])]
    code = main(["predict", *paths, "--model", str(files["model"]), "--json", "--heatmaps", str(heat_dir)])
    assert code == 1  # one input failed
    records = _lines(capsys.readouterr().out)
    assert [r["file"] for r in records] == paths  # input order, paths as given
    bad = records[1]
    assert set(bad) == {"file", "error"}
    assert bad["error"]["type"] == "InvalidInputError"
    assert "broken.dcm" in bad["error"]["message"]
    for record, shape in ((records[0], (512, 512)), (records[2], (240, 200))):
        for key in ("label", "probability", "threshold", "regions", "explanation", "heatmap"):
            assert key in record
        assert isinstance(record["probability"], float) and isinstance(record["regions"], list)
        assert record["label"] == ("hemorrhage" if record["probability"] >= record["threshold"] else "normal")
        heat = np.load(record["heatmap"])
        assert Path(record["heatmap"]).parent == heat_dir
        assert heat.shape == shape and heat.dtype == np.float32
        assert heat.min() >= 0.0 and heat.max() <= 1.0
        for region in record["regions"]:
            assert set(region) >= {"bbox", "side", "region", "score"}
            assert region["side"] in {"left", "right", "midline"}


def test_all_good_exit_zero_and_table(files, capsys) -> None:
    code = main(["predict", str(files["png"]), str(files["dcm"]), "--model", str(files["model"])])
    out = capsys.readouterr().out
    assert code == 0
    header, row1, row2 = out.splitlines()[:3]
    assert header.split()[:3] == ["file", "label", "P(hem)"]
    assert row1.startswith(str(files["png"])) and row2.startswith(str(files["dcm"]))
    assert ("hemorrhage" in row1) or ("normal" in row1)
    assert "not a diagnosis" in out


def test_table_reports_failures_in_their_row(files, capsys) -> None:
    code = main(["predict", str(files["bad"]), str(files["png"]), "--model", str(files["model"])])
    out = capsys.readouterr().out
    assert code == 1
    assert any(line.startswith(str(files["bad"])) and "ERROR" in line for line in out.splitlines())


def _shuffled_scan_zip(path: Path, n: int = 5) -> list[float]:
    """A zip of a synthetic scan with scrambled file names; returns the slices' z in mm."""
    import io
    import zipfile

    from pydicom.filewriter import dcmwrite

    from brain_ct.synthetic import generate_series, to_dicom

    phantoms = generate_series(11, n_slices=n, size=128, hemorrhage=False)
    with zipfile.ZipFile(path, "w") as zf:
        for i, phantom in enumerate(phantoms):
            buffer = io.BytesIO()
            dcmwrite(buffer, to_dicom(phantom, instance_number=i + 1), enforce_file_format=True)
            zf.writestr(f"img_{(i * 3) % n}.dcm", buffer.getvalue())
    return [p.z for p in phantoms]


def test_zip_is_read_as_one_series_in_anatomical_order(files, tmp_path: Path, capsys) -> None:
    scan = tmp_path / "scan.zip"
    _shuffled_scan_zip(scan, n=5)
    heat_dir = tmp_path / "heat"
    code = main(
        [
            "predict",
            str(scan),
            str(files["png"]),
            "--model",
            str(files["model"]),
            "--json",
            "--heatmaps",
            str(heat_dir),
        ]
    )
    series, single = _lines(capsys.readouterr().out)
    assert code == 0
    assert series["file"] == str(scan) and single["file"] == str(files["png"])
    assert series["n_slices"] == 5 and [s["index"] for s in series["slices"]] == [0, 1, 2, 3, 4]
    # written in scrambled order img_0, img_3, img_1, img_4, img_2 → read back inferior to superior
    assert [s["file"] for s in series["slices"]] == [
        "img_0.dcm",
        "img_3.dcm",
        "img_1.dcm",
        "img_4.dcm",
        "img_2.dcm",
    ]
    assert series["label"] == ("hemorrhage" if series["probability"] >= series["threshold"] else "normal")
    for s in series["slices"]:
        assert {"label", "probability", "threshold", "regions", "explanation"} <= set(s)
        assert np.load(s["heatmap"]).shape == (128, 128)


def test_empty_folder_is_a_failed_series_and_the_rest_go_on(files, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["predict", str(empty), str(files["png"]), "--model", str(files["model"]), "--json"])
    failed, good = _lines(capsys.readouterr().out)
    assert code == 1
    assert failed["file"] == str(empty) and failed["error"]["type"] == "InvalidInputError"
    assert "label" in good


def test_no_identifying_values_in_output(files, tmp_path: Path, capsys) -> None:
    main(
        ["predict", str(files["dcm"]), "--model", str(files["model"]), "--json", "--heatmaps", str(tmp_path)]
    )
    main(["predict", str(files["dcm"]), "--model", str(files["model"])])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "real head.dcm" in text  # the output is there...
    for value in SECRETS.values():
        for part in value.split("^"):
            assert part not in text  # ...but no identifying tag value


def test_model_load_failure_is_exit_1_with_message(files, tmp_path: Path, capsys) -> None:
    code = main(["predict", str(files["png"]), "--model", str(tmp_path / "no-such-model") + "/"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert "no-such-model" in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize(
    "argv", [["predict"], ["predict", "x.png", "--batch-size", "0"], ["predict", "--bogus", "x"]]
)
def test_usage_errors_exit_2(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_heatmap_names_never_collide(files, tmp_path: Path, capsys) -> None:
    other = tmp_path / "b"
    other.mkdir()
    twin = other / files["png"].name  # same file name in another folder
    twin.write_bytes(files["png"].read_bytes())
    heat_dir = tmp_path / "heat"
    main(
        [
            "predict",
            str(files["png"]),
            str(twin),
            "--model",
            str(files["model"]),
            "--json",
            "--heatmaps",
            str(heat_dir),
        ]
    )
    first, second = _lines(capsys.readouterr().out)
    assert first["heatmap"] != second["heatmap"]
    assert len(list(heat_dir.glob("*.npy"))) == 2


@pytest.mark.slow
def test_real_process_exit_codes_and_no_traceback(files, tmp_path: Path) -> None:
    garbage = tmp_path / "random.png"
    garbage.write_bytes(os.urandom(2000))
    cmd = [sys.executable, "-m", "brain_ct", "predict", str(garbage), str(files["png"]), "--json"]
    env = {**os.environ, "BRAIN_CT_MODEL": str(files["model"]), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=180)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    bad, good = _lines(proc.stdout)
    assert bad["error"]["type"] == "InvalidInputError"
    assert good["label"] in {"normal", "hemorrhage"}


def _two_series_zip(path: Path) -> None:
    """A zip of two synthetic series: 3 slices (files im*.dcm) and 2 slices (files img*.dcm)."""
    import io
    import zipfile

    from pydicom.filewriter import dcmwrite
    from pydicom.uid import generate_uid

    from brain_ct.synthetic import generate_series, to_dicom

    with zipfile.ZipFile(path, "w") as zf:
        for prefix, seed, n in (("im", 11, 3), ("img", 12, 2)):
            uid = generate_uid()
            for i, phantom in enumerate(generate_series(seed, n_slices=n, size=128, hemorrhage=False)):
                buffer = io.BytesIO()
                ds = to_dicom(phantom, series_uid=uid, instance_number=i + 1)
                dcmwrite(buffer, ds, enforce_file_format=True)
                zf.writestr(f"{prefix}{i}.dcm", buffer.getvalue())


def test_list_series_then_series_uid_chooses_another(files, tmp_path: Path, capsys) -> None:
    scan = tmp_path / "two.zip"
    _two_series_zip(scan)
    # Listing needs no model: a model that does not exist is never loaded.
    assert main(["predict", "--list-series", str(scan), "--json", "--model", str(tmp_path / "none")]) == 0
    (listing,) = _lines(capsys.readouterr().out)
    assert listing["file"] == str(scan)
    assert [(s["n_slices"], s["default"]) for s in listing["series"]] == [(3, True), (2, False)]
    first, second = (s["series_id"] for s in listing["series"])

    assert main(["predict", "--list-series", str(scan)]) == 0
    table = capsys.readouterr().out
    assert f"{str(scan)}: 2 series" in table
    assert any(line.split()[:2] == ["*", first] and "3 slices" in line for line in table.splitlines())
    assert any(line.split()[0] == second and "2 slices" in line for line in table.splitlines())

    code = main(["predict", str(scan), "--series-uid", second, "--model", str(files["model"]), "--json"])
    (record,) = _lines(capsys.readouterr().out)
    assert code == 0
    assert record["n_slices"] == 2 and record["errors"] == [] and record["series_id"] == second
    assert record["skipped"] == [
        {"file": f"im{i}.dcm", "reason": f"other series {first}, 3 slices"} for i in range(3)
    ]


def test_list_series_of_a_bad_path_is_exit_1(tmp_path: Path, capsys) -> None:
    assert main(["predict", "--list-series", str(tmp_path / "missing.zip")]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and "missing.zip" in out


def test_table_numbers_slices_from_one_and_lists_files_not_read(capsys) -> None:
    from brain_ct.cli.predict import _format_table

    slices = [
        {"file": f"IM{i}", "index": i, "label": "normal", "probability": 0.1, "explanation": f"why {i}"}
        for i in range(3)
    ]
    record = {
        "file": "scan.zip",
        "label": "hemorrhage",
        "probability": 0.9,
        "threshold": 0.5,
        "n_slices": 3,
        "positive_slices": [0, 2],
        "slices": slices,
        "errors": [{"file": "file 5", "type": "InvalidInputError", "message": "not a DICOM file"}],
        "skipped": [{"file": "b0.dcm", "reason": "other series 0123, 1 slice"}],
    }
    one = dict(
        record, file="one.zip", n_slices=1, positive_slices=[], slices=slices[:1], errors=[], skipped=[]
    )
    _format_table([record, one], sys.stdout)
    out = capsys.readouterr().out
    assert "scan of 3 slices; positive slices: 1, 3" in out
    assert "scan of 1 slice;" in out
    assert "scan.zip slice 1 of 3 (IM0): why 0" in out and "scan.zip slice 3 of 3 (IM2): why 2" in out
    assert "slice 0" not in out
    assert "scan.zip: 1 file skipped (other series 0123, 1 slice): b0.dcm" in out
    assert "scan.zip: 1 file could not be read: file 5: not a DICOM file" in out


def test_a_reading_without_the_head_check_says_so_in_table_and_json(files, tmp_path: Path, capsys) -> None:
    from brain_ct.report import UNVERIFIED_NOTE

    scan = tmp_path / "scan.zip"
    _shuffled_scan_zip(scan, n=4)
    inputs = [str(files["png"]), str(scan)]
    model = ["--model", str(files["model"])]
    assert main(["predict", *inputs, *model, "--json"]) == 0
    assert [r["head_check"] for r in _lines(capsys.readouterr().out)] == ["passed", "passed"]
    assert main(["predict", *inputs, *model]) == 0
    assert UNVERIFIED_NOTE not in capsys.readouterr().out
    unverified = [*inputs, *model, "--allow-unverified"]
    assert main(["predict", *unverified, "--json"]) == 0
    assert [r["head_check"] for r in _lines(capsys.readouterr().out)] == ["skipped", "skipped"]
    assert main(["predict", *unverified]) == 0
    out = capsys.readouterr().out
    # Before the table, as the app shows it before the verdict.
    assert UNVERIFIED_NOTE in out and out.index(UNVERIFIED_NOTE) < out.index("P(hem)")


def test_table_names_the_inputs_read_without_the_head_check(capsys) -> None:
    from brain_ct.cli.predict import _format_table
    from brain_ct.report import UNVERIFIED_NOTE

    def row(name: str, check: str) -> dict:
        fields = {
            "label": "normal",
            "probability": 0.1,
            "threshold": 0.5,
            "regions": [],
            "explanation": "why",
        }
        return {"file": name, **fields, "head_check": check}

    _format_table([row("a.png", "skipped"), row("b.dcm", "passed")], sys.stdout)
    out = capsys.readouterr().out
    assert f"caution (a.png): {UNVERIFIED_NOTE}" in out and "b.dcm)" not in out


def test_refusal_names_the_cli_flag(files, tmp_path: Path, capsys) -> None:
    flat = np.zeros((300, 300), np.uint8)
    cv2.ellipse(flat, (150, 150), (105, 126), 0, 0, 360, 255, -1)
    cv2.ellipse(flat, (150, 150), (96, 117), 0, 0, 360, 110, -1)  # a uniform grey ellipse in a white ring
    path = tmp_path / "flat.png"
    cv2.imwrite(str(path), flat)
    code = main(["predict", str(path), "--model", str(files["model"]), "--json"])
    (record,) = _lines(capsys.readouterr().out)
    assert code == 1 and record["error"]["type"] == "NotHeadCTError"
    assert "--allow-unverified" in record["error"]["message"]
    assert "allow_unverified=True" not in record["error"]["message"]
    assert main(["predict", str(path), "--model", str(files["model"]), "--json", "--allow-unverified"]) == 0


def test_a_sidecar_file_in_a_scan_is_listed_and_keeps_exit_zero(files, tmp_path: Path, capsys):
    import zipfile

    scan = tmp_path / "scan.zip"
    _shuffled_scan_zip(scan, n=5)
    with zipfile.ZipFile(scan, "a") as zf:
        zf.writestr("LICENSE", "CC-BY 4.0: share and adapt with attribution.\n")
    code = main(["predict", str(scan), "--model", str(files["model"]), "--json"])
    (record,) = _lines(capsys.readouterr().out)
    # The reader decides whether a sidecar is "skipped" or "could not be read" (and how it is named);
    # either way it is listed with the scan and is no failed input.
    assert code == 0 and record["n_slices"] == 5 and "error" not in record
    assert len(record["skipped"]) + len(record["errors"]) == 1
    code = main(["predict", str(scan), "--model", str(files["model"])])
    table = capsys.readouterr().out
    assert code == 0 and ("1 file skipped" in table or "1 file could not be read" in table)
    assert "ERROR" not in table


def test_a_heatmap_volume_that_cannot_be_written_makes_the_exit_code_1(files, tmp_path: Path, capsys):
    import io
    import zipfile

    from pydicom.filewriter import dcmwrite

    from brain_ct.synthetic import generate_series, to_dicom

    scan = tmp_path / "twice.zip"
    with zipfile.ZipFile(scan, "w") as zf:
        for i, phantom in enumerate(generate_series(11, n_slices=5, size=128, hemorrhage=False)):
            ds = to_dicom(phantom, instance_number=i + 1)
            if i == 2:
                # moved onto slice 1's position (5 mm below): no regular volume can hold both
                ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], ds.ImagePositionPatient[2] - 5.0]
            buffer = io.BytesIO()
            dcmwrite(buffer, ds, enforce_file_format=True)
            zf.writestr(f"img_{i}.dcm", buffer.getvalue())
    target = tmp_path / "heat.nii.gz"
    argv = ["predict", str(scan), "--model", str(files["model"]), "--json", "--heatmaps-nifti", str(target)]
    code = main(argv)
    captured = capsys.readouterr()
    (record,) = _lines(captured.out)
    assert "label" in record and "heatmap_nifti" not in record and not target.exists()
    assert [e["output"] for e in record["output_errors"]] == ["--heatmaps-nifti"]
    assert "--heatmaps-nifti not written" in captured.err
    assert code == 1


@pytest.mark.parametrize(
    "library",
    [
        "this does not look like an axial head CT slice: flat. If it is one, pass allow_unverified=True.",
        "x.dcm: no Modality; if it is a CT slice, pass allow_unverified=True / tick 'allow unusual images'",
    ],
)
def test_cli_message_names_the_flag(library: str) -> None:
    from brain_ct.cli.predict import cli_message

    shown = cli_message(library)
    assert "rerun with --allow-unverified" in shown
    assert "allow_unverified=True" not in shown and "tick" not in shown
    assert shown.split("rerun")[0] == library.split("pass")[0]  # the reason itself is kept as it was
