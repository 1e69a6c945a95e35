"""brain_ct.viewer_out: Grad-CAM overlays as DICOM Secondary Capture images, read back with pydicom.

The source is a synthetic phantom series written as DICOM with fake identifying values; the
overlays must carry none of them, and the source's UIDs only when asked (``--keep-uids``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers_models import make_tiny_model
from pydicom.uid import SecondaryCaptureImageStorage

from brain_ct import privacy
from brain_ct.__main__ import main
from brain_ct.errors import InvalidInputError
from brain_ct.predictor import Predictor
from brain_ct.scan import predict_series
from brain_ct.series import read_series
from brain_ct.synthetic import generate_series, to_dicom
from brain_ct.viewer_out import (
    COPIED_META,
    SERIES_DESCRIPTION,
    patient_orientation,
    secondary_captures,
    source_reference,
    write_dicom_overlays,
)

N_SLICES, SIZE = 4, 64
SECRET_NAME = "Quennell^Janet"

#: Attributes of the Secondary Capture Image IOD (Type 1 and 2) that must be present.
REQUIRED = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "Modality",
    "SeriesNumber",
    "InstanceNumber",
    "ConversionType",
    "PatientOrientation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "PixelData",
)


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("viewer_out")
    folder = root / "dicom"
    folder.mkdir()
    for i, phantom in enumerate(generate_series(3, n_slices=N_SLICES, size=SIZE, hemorrhage=True)):
        ds = to_dicom(phantom, instance_number=i + 1, patient_name=SECRET_NAME)
        # written in reverse anatomical order, so file order is not slice order
        ds.save_as(folder / f"IM{N_SLICES - i:03d}", enforce_file_format=True)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.iterdir())]
    model = make_tiny_model(root / "model")
    series = read_series(folder)
    result = predict_series(Predictor.from_pretrained(str(model)), series)
    secrets = set()
    for ds in headers:
        secrets.update(privacy.identifying_values(ds))
    uids = {str(ds.StudyInstanceUID) for ds in headers} | {str(ds.SeriesInstanceUID) for ds in headers}
    uids |= {str(ds.SOPInstanceUID) for ds in headers}
    by_position = {float(ds.ImagePositionPatient[2]): str(ds.SOPInstanceUID) for ds in headers}
    return {
        "root": root,
        "folder": folder,
        "model": model,
        "series": series,
        "result": result,
        "headers": headers,
        "secrets": secrets,
        "uids": uids,
        "by_position": by_position,
    }


def _strings(ds: pydicom.Dataset) -> list[str]:
    """Every text value in a dataset and its file meta, nested sequences included."""
    out = []
    for dataset in (ds, ds.file_meta):
        for elem in dataset.iterall():
            if elem.VR in ("SQ", "OB", "OW", "UN") or elem.value is None:
                continue
            values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
            out += [str(v) for v in values]
    return out


def test_copied_meta_is_allow_listed() -> None:
    assert set(COPIED_META) <= privacy.ALLOWED_META_KEYS


@pytest.mark.parametrize(
    ("iop", "expected"),
    [
        ([1, 0, 0, 0, 1, 0], ("L", "P")),  # standard axial
        ([-1, 0, 0, 0, -1, 0], ("R", "A")),
        ([0, 1, 0, 0, 0, -1], ("P", "F")),  # sagittal
        ([0.8, 0.6, 0, -0.6, 0.8, 0], ("LP", "PR")),  # rotated in plane
        (None, None),
        ([1, 0, 0], None),
        (["x", 0, 0, 0, 1, 0], None),
    ],
)
def test_patient_orientation_from_image_orientation(iop, expected) -> None:
    assert patient_orientation(iop) == expected


def test_overlays_written_and_read_back_without_any_source_identifier(scan, tmp_path: Path) -> None:
    result = scan["result"]
    written = write_dicom_overlays(result.predictions, tmp_path, stem="scan")
    assert [p.name for p in written] == [f"scan_{k:04d}.dcm" for k in range(1, N_SLICES + 1)]
    series_uids, study_uids = set(), set()
    for k, (path, prediction) in enumerate(zip(written, result.predictions, strict=True)):
        ds = pydicom.dcmread(path)
        missing = [key for key in REQUIRED if key not in ds]
        assert missing == []
        assert ds.SOPClassUID == SecondaryCaptureImageStorage and ds.file_meta.TransferSyntaxUID
        assert (ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.InstanceNumber) == ("RGB", 3, k + 1)
        assert str(ds.PatientName) == "" and str(ds.PatientID) == "" and ds.PatientIdentityRemoved == "YES"
        assert ds.SeriesDescription == SERIES_DESCRIPTION and list(ds.PatientOrientation) == ["L", "P"]
        np.testing.assert_array_equal(ds.pixel_array, prediction.overlay())
        assert [float(v) for v in ds.PixelSpacing] == prediction.meta["PixelSpacing"]
        assert "SourceImageSequence" not in ds and "ReferencedSeriesSequence" not in ds
        text = _strings(ds)
        assert not scan["uids"] & set(text)  # no source UID anywhere
        leaked = [s for s in scan["secrets"] if any(s.lower() in t.lower() for t in text)]
        assert leaked == []
        series_uids.add(ds.SeriesInstanceUID)
        study_uids.add(ds.StudyInstanceUID)
    assert len(series_uids) == 1 and len(study_uids) == 1  # one new series in one new study


def test_the_overlay_differs_from_the_grey_slice_where_the_heat_is(scan) -> None:
    prediction = scan["result"].predictions[0]
    prediction.heatmap[:] = 0.0
    prediction.heatmap[10:20, 10:20] = 1.0
    (ds,) = secondary_captures([prediction])
    pixels = ds.pixel_array
    grey = prediction.display
    assert not np.array_equal(pixels[15, 15], [grey[15, 15]] * 3)  # coloured where hot
    np.testing.assert_array_equal(pixels[40, 40], [grey[40, 40]] * 3)  # grey where cold


def test_reference_names_the_source_study_series_and_each_slice(scan) -> None:
    series, result = scan["series"], scan["result"]
    reference = source_reference(scan["folder"], series)
    header = scan["headers"][0]
    assert (reference.study_uid, reference.series_uid) == (header.StudyInstanceUID, header.SeriesInstanceUID)
    captures = secondary_captures(result.predictions, reference=reference)
    for ct, ds in zip(series.slices, captures, strict=True):
        z = float(ct.meta["ImagePositionPatient"][2])
        assert ds.StudyInstanceUID == header.StudyInstanceUID
        assert ds.SeriesInstanceUID != header.SeriesInstanceUID  # a new series in the source study
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == scan["by_position"][z]
        (item,) = ds.ReferencedSeriesSequence
        assert item.SeriesInstanceUID == header.SeriesInstanceUID
        assert item.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == scan["by_position"][z]
        assert "PatientName" in ds and not ds.PatientName  # UIDs are the one exception; no patient


def test_reference_of_a_series_that_is_not_dicom_is_refused(scan, tmp_path: Path) -> None:
    png_series = read_series([scan["folder"] / "IM001"])
    png_series.series_id = None
    with pytest.raises(InvalidInputError, match="not a DICOM series"):
        source_reference(scan["folder"], png_series)


def test_no_predictions_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no predictions"):
        write_dicom_overlays([], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_existing_overlays_are_never_overwritten(scan, tmp_path: Path) -> None:
    first = write_dicom_overlays(scan["result"].predictions[:1], tmp_path, stem="scan")
    second = write_dicom_overlays(scan["result"].predictions[:1], tmp_path, stem="scan")
    assert [p.name for p in first + second] == ["scan_0001.dcm", "scan-2_0001.dcm"]


# --------------------------------------------------------------------------- CLI


def _record(out: str) -> dict:
    (line,) = [json.loads(x) for x in out.splitlines() if x.strip()]
    return line


@pytest.mark.parametrize("keep", [False, True])
def test_cli_dicom_out_for_a_dicom_folder(scan, tmp_path: Path, capsys, keep: bool) -> None:
    out = tmp_path / "pacs"
    argv = ["predict", str(scan["folder"]), "--model", str(scan["model"]), "--json", "--dicom-out", str(out)]
    code = main(argv + (["--keep-uids"] if keep else []))
    record = _record(capsys.readouterr().out)
    assert code == 0
    assert [Path(p).name for p in record["dicom_overlays"]] == [f"dicom_{k:04d}.dcm" for k in range(1, 5)]
    datasets = [pydicom.dcmread(p) for p in record["dicom_overlays"]]
    source_study = str(scan["headers"][0].StudyInstanceUID)
    assert all((ds.StudyInstanceUID == source_study) is keep for ds in datasets)
    assert all(("SourceImageSequence" in ds) is keep for ds in datasets)
    for ds in datasets:
        assert SECRET_NAME.split("^")[0] not in " ".join(_strings(ds))


def test_cli_dicom_out_for_a_single_dicom_slice(scan, tmp_path: Path, capsys) -> None:
    source = scan["folder"] / "IM002"
    code = main(
        [
            "predict",
            str(source),
            "--model",
            str(scan["model"]),
            "--json",
            "--dicom-out",
            str(tmp_path),
            "--keep-uids",
        ]
    )
    record = _record(capsys.readouterr().out)
    assert code == 0
    (path,) = record["dicom_overlays"]
    ds = pydicom.dcmread(path)
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == pydicom.dcmread(source).SOPInstanceUID


def test_cli_keep_uids_needs_dicom_out(scan, capsys) -> None:
    code = main(["predict", str(scan["folder"]), "--model", str(scan["model"]), "--keep-uids"])
    assert code == 2 and "--dicom-out" in capsys.readouterr().err


def test_cli_dicom_out_ignores_input_that_is_not_dicom(scan, tmp_path: Path, capsys) -> None:
    import cv2

    png = tmp_path / "slice.png"
    cv2.imwrite(str(png), scan["series"].slices[2].display)
    out = tmp_path / "pacs"
    argv = ["predict", str(png), "--model", str(scan["model"]), "--json", "--allow-unverified"]
    code = main([*argv, "--dicom-out", str(out)])
    captured = capsys.readouterr()
    record = _record(captured.out)
    assert code == 0 and "dicom_overlays" not in record
    assert "not DICOM input" in captured.err
    assert not out.exists() or list(out.iterdir()) == []
