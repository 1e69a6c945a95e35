"""NIfTI volumes through the product: ``read_series`` / ``list_series`` dispatch and ``python -m brain_ct
predict`` with ``--heatmaps-nifti``; bad NIfTI files give a clear error and nothing is written.

The scan is a synthetic phantom series written as DICOM (the reference reading) and as the NIfTI
volume ``dcm2niix`` would write from it (the grid of :func:`brain_ct.nifti_grid.grid_from_series`).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers_models import make_tiny_model

from brain_ct.__main__ import main
from brain_ct.errors import InvalidInputError
from brain_ct.nifti import nifti_series_id
from brain_ct.nifti_grid import grid_from_series
from brain_ct.series import Series, list_series, read_series
from brain_ct.synthetic import generate_series, to_dicom

N_SLICES, SIZE = 6, 64
SECRET_NAME = "Quennell^Janet"


def _nifti_of(series: Series, path: Path) -> Path:
    """The DICOM series as a NIfTI volume on its own grid (int16 HU, qform and sform set)."""
    grid = grid_from_series(series)
    hu = np.stack([ct.hu for ct in series.slices], axis=-1)  # [row, column, slice]
    image = nib.Nifti1Image(grid.to_source(hu).astype(np.int16), grid.affine)
    image.header.set_qform(grid.affine, code=1)
    image.header.set_sform(grid.affine, code=1)
    nib.save(image, path)
    return path


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("nifti_cli")
    folder = root / "dicom"
    folder.mkdir()
    for i, phantom in enumerate(generate_series(7, n_slices=N_SLICES, size=SIZE, hemorrhage=True)):
        ds = to_dicom(phantom, instance_number=i + 1, patient_name=SECRET_NAME)
        ds.save_as(folder / f"IM{i:03d}", enforce_file_format=True)
    dicom = read_series(folder)
    assert dicom.sort_key == "position" and len(dicom) == N_SLICES
    return {
        "root": root,
        "folder": folder,
        "dicom": dicom,
        "nifti": _nifti_of(dicom, root / "scan.nii.gz"),
        "model": make_tiny_model(root / "model"),
    }


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# --------------------------------------------------------------------------- read_series / list_series


@pytest.mark.parametrize("form", ["path", "str", "bytes", "list"])
def test_read_series_reads_a_nifti_as_the_same_scan(scan, form: str) -> None:
    path = scan["nifti"]
    source = {"path": path, "str": str(path), "bytes": path.read_bytes(), "list": [path]}[form]
    series = read_series(source)
    dicom = scan["dicom"]
    assert len(series) == N_SLICES and series.sort_key == "position"
    for a, b in zip(series.slices, dicom.slices, strict=True):
        np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_allclose(series.positions, dicom.positions, atol=1e-3)
    assert series.source == ("upload" if form == "bytes" else "scan.nii.gz")
    stem = "volume" if form == "bytes" else "scan.nii.gz"
    assert series.files == [f"{stem}#{k}" for k in range(1, N_SLICES + 1)]
    # the id is the file's, the same for every form and in list_series
    assert series.series_id == nifti_series_id(path) == list_series(source)[0].series_id


def test_list_series_of_a_nifti_is_one_axial_series(scan) -> None:
    (info,) = list_series(scan["nifti"])
    assert (info.n_slices, info.orientation, info.default, info.modality) == (N_SLICES, "axial", True, None)


def test_series_uid_of_a_nifti_must_be_its_own(scan) -> None:
    own = nifti_series_id(scan["nifti"])
    assert len(read_series(scan["nifti"], series_uid=own)) == N_SLICES
    with pytest.raises(InvalidInputError, match="one NIfTI volume"):
        read_series(scan["nifti"], series_uid="0123456789abcdef")


def test_a_nifti_among_other_files_is_refused(scan) -> None:
    slice_file = next(scan["folder"].iterdir())
    with pytest.raises(InvalidInputError, match="whole scan on its own"):
        read_series([scan["nifti"], slice_file])


def test_an_identifying_file_name_is_not_shown_for_slices(scan, tmp_path: Path) -> None:
    named = tmp_path / "Quennell_Janet_PIDZ99183.nii.gz"
    named.write_bytes(scan["nifti"].read_bytes())
    series = read_series(named)
    assert series.files[0] == "volume#1" and all("Quennell" not in ct.name for ct in series.slices)


@pytest.mark.parametrize(("allow", "expected"), [(False, "passed"), (True, "skipped")])
def test_head_check_of_nifti_slices_says_whether_it_ran(scan, allow: bool, expected: str) -> None:
    series = read_series(scan["nifti"], allow_unverified=allow)
    assert [ct.head_check for ct in series.slices] == [expected] * N_SLICES


# --------------------------------------------------------------------------- CLI


def test_predict_a_nifti_scan_with_its_heatmap_volume(scan, tmp_path: Path, capsys) -> None:
    out = tmp_path / "heat.nii.gz"
    code = main(
        ["predict", str(scan["nifti"]), "--model", str(scan["model"]), "--json", "--heatmaps-nifti", str(out)]
    )
    (record,) = _lines(capsys.readouterr().out)
    assert code == 0, record
    assert record["n_slices"] == N_SLICES and record["heatmap_nifti"] == str(out)
    assert [s["file"] for s in record["slices"]][:2] == ["scan.nii.gz#1", "scan.nii.gz#2"]
    heat = nib.load(out)
    source = nib.load(scan["nifti"])
    assert heat.shape == source.shape
    np.testing.assert_allclose(heat.affine, source.affine, atol=1e-5)
    data = np.asarray(heat.dataobj)
    assert data.dtype == np.float32 and data.min() >= 0.0 and data.max() <= 1.0 and data.max() > 0
    assert record["head_check"] == "passed"


def test_a_nifti_read_without_the_head_check_says_so(scan, capsys) -> None:
    from brain_ct.report import UNVERIFIED_NOTE

    argv = ["predict", str(scan["nifti"]), "--model", str(scan["model"]), "--allow-unverified"]
    assert main([*argv, "--json"]) == 0
    (record,) = _lines(capsys.readouterr().out)
    assert record["head_check"] == "skipped"
    assert main(argv) == 0
    assert UNVERIFIED_NOTE in capsys.readouterr().out


def test_heatmap_volume_of_a_dicom_scan_lies_on_the_dicom_grid(scan, tmp_path: Path, capsys) -> None:
    """The heatmap of slice k of the DICOM reading sits at voxel [:, :, k] of the volume, transposed
    to NIfTI's (column, row) axes: the same place the NIfTI of that scan has slice k."""
    folder = tmp_path / "volumes"
    code = main(
        ["predict", str(scan["folder"]), "--model", str(scan["model"]), "--heatmaps-nifti", str(folder)]
    )
    text = capsys.readouterr().out
    assert code == 0
    (written,) = folder.iterdir()
    assert written.name == "dicom_heatmap.nii.gz" and f"heatmap volume: {written}" in text
    heat = nib.load(written)
    np.testing.assert_allclose(heat.affine, nib.load(scan["nifti"]).affine, atol=1e-4)
    # and the same heatmaps as the NIfTI reading of the same scan, voxel for voxel
    main(["predict", str(scan["nifti"]), "--model", str(scan["model"]), "--heatmaps-nifti", str(folder)])
    capsys.readouterr()
    other = folder / "scan_heatmap.nii.gz"
    np.testing.assert_allclose(np.asarray(heat.dataobj), np.asarray(nib.load(other).dataobj), atol=1e-5)


def test_heatmaps_nifti_file_needs_exactly_one_scan(scan, tmp_path: Path, capsys) -> None:
    code = main(
        [
            "predict",
            str(scan["nifti"]),
            str(scan["folder"]),
            "--model",
            str(scan["model"]),
            "--heatmaps-nifti",
            str(tmp_path / "h.nii.gz"),
        ]
    )
    assert code == 2
    assert "exactly one scan" in capsys.readouterr().err
    assert not (tmp_path / "h.nii.gz").exists()


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _four_d(_: bytes) -> bytes:
    return nib.Nifti1Image(np.zeros((8, 8, 4, 2), np.int16), np.eye(4)).to_bytes()


def _with_nan(_: bytes) -> bytes:
    volume = np.full((64, 64, 4), -1000.0, np.float32)
    volume[10:50, 10:50] = 30.0
    volume[0, 0, 0] = np.nan
    return nib.Nifti1Image(volume, np.eye(4)).to_bytes()


def _huge_header(data: bytes) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape((2048, 2048, 512))  # 4 GiB of int16 voxels claimed, none present
    header.set_data_dtype(np.int16)
    return header.binaryblock + b"\0" * 4 + b"\0" * 1024


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_truncated, "truncated"),
        (_four_d, "4th dimension"),
        (_with_nan, "NaN"),
        (_huge_header, "before reading any voxel"),
    ],
)
def test_bad_nifti_through_the_cli_is_a_clear_error_and_nothing_is_written(
    scan, tmp_path: Path, capsys, make, message: str
) -> None:
    raw = gzip.decompress(scan["nifti"].read_bytes())
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(make(raw)))
    out = tmp_path / "out"
    out.mkdir()
    code = main(
        [
            "predict",
            str(bad),
            "--model",
            str(scan["model"]),
            "--json",
            "--heatmaps",
            str(out / "npy"),
            "--heatmaps-nifti",
            str(out / "heat.nii.gz"),
        ]
    )
    captured = capsys.readouterr()
    (record,) = _lines(captured.out)
    assert code == 1
    assert record["error"]["type"] == "InvalidInputError" and message in record["error"]["message"]
    assert "Traceback" not in captured.err
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_heatmap_volume_of_slices_without_geometry_is_a_clear_exit_1(scan, tmp_path: Path, capsys) -> None:
    import cv2

    folder = tmp_path / "pngs"
    folder.mkdir()
    for k, ct in enumerate(scan["dicom"].slices):
        cv2.imwrite(str(folder / f"slice{k}.png"), ct.display)
    out = tmp_path / "heat.nii.gz"
    argv = ["predict", str(folder), "--model", str(scan["model"]), "--json", "--allow-unverified"]
    code = main([*argv, "--heatmaps-nifti", str(out)])
    captured = capsys.readouterr()
    (record,) = _lines(captured.out)
    assert code == 1
    assert record["n_slices"] == N_SLICES and "label" in record  # the prediction is kept
    (error,) = record["output_errors"]
    assert error["output"] == "--heatmaps-nifti" and "PNG/JPG slices have none" in error["message"]
    assert "--heatmaps-nifti not written" in captured.err and "Traceback" not in captured.err
    assert not out.exists() and list(tmp_path.glob(".heatmap-*")) == []


def test_a_folder_of_nifti_volumes_is_one_scan_per_volume(scan, tmp_path: Path, capsys) -> None:
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    for name in ("case10.nii.gz", "case2.nii.gz"):
        (volumes / name).write_bytes(scan["nifti"].read_bytes())
    (volumes / ".DS_Store").write_bytes(b"clutter")
    heat = tmp_path / "heat"
    code = main(
        ["predict", str(volumes), "--model", str(scan["model"]), "--json", "--heatmaps-nifti", str(heat)]
    )
    records = _lines(capsys.readouterr().out)
    assert code == 0
    assert [Path(r["file"]).name for r in records] == ["case2.nii.gz", "case10.nii.gz"]  # natural order
    assert sorted(p.name for p in heat.iterdir()) == ["case10_heatmap.nii.gz", "case2_heatmap.nii.gz"]
    # with one heatmap file for the whole folder there are two scans: a usage error, nothing read
    code = main(
        ["predict", str(volumes), "--model", str(scan["model"]), "--heatmaps-nifti", str(tmp_path / "h.nii")]
    )
    assert code == 2 and "2 scans" in capsys.readouterr().err


def test_heatmap_volume_of_a_tilted_scan_says_it_was_resampled(scan, tmp_path: Path, capsys) -> None:
    """The real GE series (gantry tilt 18.5°, uneven spacing) gets its volume, and the CLI says how."""
    ge = Path(__file__).resolve().parent.parent / "data" / "real_anatomy" / "dcm_qa_ct-GE"
    out = tmp_path / "ge_heatmap.nii.gz"
    code = main(["predict", str(ge), "--model", str(scan["model"]), "--json", "--heatmaps-nifti", str(out)])
    (record,) = _lines(capsys.readouterr().out)
    assert code == 0 and record["heatmap_nifti"] == str(out) and out.exists()
    assert "tilt" in record["heatmap_nifti_note"]
    main(["predict", str(ge), "--model", str(scan["model"]), "--heatmaps-nifti", str(out)])
    text = capsys.readouterr().out
    assert f"heatmap volume: {out}" in text and "tilt" in text.split(f"heatmap volume: {out}")[1]
