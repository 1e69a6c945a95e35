"""Patient privacy end to end: identifying DICOM values never reach any output.

Synthetic head-CT slices are filled with distinctive identifying values (names, IDs, dates,
institution, accession number, free-text descriptions, a name nested in a sequence, a malformed
date that makes pydicom warn) and read through every way out of the product: the library
(``CTImage.meta``, ``Prediction.to_dict``, series results, error messages), the CLI (``predict
--json``, ``report``), the app's event functions (label, explanation, metadata table, series JSON,
PDF reports), the PDF text, and everything logged at DEBUG or written to stdout/stderr. None of
the values, nor any of their parts, may appear. A control run with ``--include-identifiers``
shows that the searches would find a leak.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from badfiles import dicom_bytes
from helpers_models import make_tiny_model
from pydicom.dataset import Dataset

from brain_ct.errors import InvalidInputError
from brain_ct.io import load_image
from brain_ct.privacy import ALLOWED_META_KEYS
from brain_ct.synthetic import generate_series, to_dicom

REPO = Path(__file__).resolve().parents[1]

#: Identifying values, each distinctive enough that finding it anywhere can only mean a leak.
IDENTITY: dict[str, str] = {
    "PatientName": "Zyxwert^Quimbly^Ottoline",
    "PatientID": "PID7731XQ",
    "OtherPatientIDs": "OPID5566ZR",
    "PatientBirthDate": "19580412",
    "PatientAddress": "17 Brindlewood Crescent, Hollowmere",
    "PatientTelephoneNumbers": "555-0199-7731",
    "InstitutionName": "Quarrington Memorial Infirmary",
    "InstitutionAddress": "1 Lantern Row, Fenwick",
    "InstitutionalDepartmentName": "Fenwick Neuroradiology Wing",
    "ReferringPhysicianName": "Vandersloot^Ophelia",
    "PerformingPhysicianName": "Brackenbury^Cuthbert",
    "OperatorsName": "Ashgrove^Wilhelmina",
    "AccessionNumber": "ACCN55501ZZ",
    "StudyID": "STUDY4242QQ",
    "StudyDate": "20190317",
    "SeriesDate": "20190318",
    "AcquisitionDate": "20190319",
    "ContentDate": "20190320",
    "StudyTime": "071342",
    "StationName": "CTROOMQX9",
    "DeviceSerialNumber": "SN88QZ41",
    "StudyDescription": "HEAD CT Zyxwert trauma",
    "SeriesDescription": "AXIAL Quarrington protocol",
    "ImageComments": "patient Quimbly fell at home",
}

#: Fragments to search for: every value, and the parts a formatter could print on their own.
NEEDLES: tuple[str, ...] = (
    "Zyxwert",
    "Quimbly",
    "Ottoline",
    "PID7731XQ",
    "OPID5566ZR",
    "19580412",
    "1958-04-12",
    "12.04.1958",
    "Brindlewood",
    "555-0199",
    "Quarrington",
    "Lantern Row",
    "Fenwick",
    "Vandersloot",
    "Ophelia",
    "Brackenbury",
    "Cuthbert",
    "Ashgrove",
    "Wilhelmina",
    "ACCN55501ZZ",
    "STUDY4242QQ",
    "20190317",
    "2019-03-17",
    "20190318",
    "20190319",
    "20190320",
    "2019-03-2",
    "071342",
    "CTROOMQX9",
    "SN88QZ41",
    "Nestorius",  # in a sequence
    "1999.12.31",  # a malformed DA value: pydicom warns about it, quoting it
)


def _identified(ds: Dataset, uid_log: list[str]) -> Dataset:
    for key, value in IDENTITY.items():
        setattr(ds, key, value)
    item = Dataset()
    item.PerformingPhysicianName = "Nestorius^Balthazar"
    ds.RequestAttributesSequence = [item]
    with warnings.catch_warnings():  # pydicom warns here already: the value is invalid on purpose
        warnings.simplefilter("ignore")
        ds.InstanceCreationDate = "1999.12.31"  # invalid DA: read lazily, warned about by pydicom
    uid_log += [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    return ds


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 4-slice identified series in a folder (with a bleed), one slice, and an MR with the same identity."""
    root = tmp_path_factory.mktemp("privacy")
    uids: list[str] = []
    folder = root / "series"
    folder.mkdir()
    series_uid = None
    for i, phantom in enumerate(
        generate_series(11, n_slices=4, size=128, hemorrhage=True, subtype="subdural")
    ):
        ds = _identified(to_dicom(phantom, instance_number=i + 1, series_uid=series_uid), uids)
        series_uid = str(ds.SeriesInstanceUID)
        (folder / f"im{i + 1:03d}.dcm").write_bytes(dicom_bytes(ds))
    single = root / "slice.dcm"
    single.write_bytes((folder / "im002.dcm").read_bytes())
    mr = _identified(to_dicom(next(iter(generate_series(12, n_slices=1, size=128)))), uids)
    mr.Modality = "MR"
    mr_path = root / "other.dcm"
    mr_path.write_bytes(dicom_bytes(mr))
    model = make_tiny_model(root / "model", trained_on="synthetic phantoms")
    return {"root": root, "folder": folder, "single": single, "mr": mr_path, "model": model, "uids": uids}


def _leaks(text: str, uids: list[str]) -> list[str]:
    """Needles (and raw UIDs) found in ``text``, case-insensitively, also with whitespace removed."""
    squeezed = re.sub(r"\s+", "", text)
    found = []
    for needle in (*NEEDLES, *uids):
        n = needle.lower()
        if n in text.lower() or n.replace(" ", "") in squeezed.lower():
            found.append(needle)
    return found


def _pdf_text(path: str | Path) -> str:
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    meta = reader.metadata or {}
    return (
        "\n".join(page.extract_text() or "" for page in reader.pages)
        + "\n"
        + json.dumps({str(k): str(v) for k, v in meta.items()})
    )


def _dump(value: Any) -> str:
    return json.dumps(value, default=repr, ensure_ascii=False)


def test_the_needles_are_really_in_the_files(case: dict[str, Any]) -> None:
    raw = case["single"].read_bytes().decode("latin-1")
    assert len(_leaks(raw, case["uids"])) >= 20  # the search finds them where they are


def test_library_outputs_and_logs_carry_no_identity(
    case: dict[str, Any], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    from brain_ct.predictor import Predictor
    from brain_ct.report import write_report
    from brain_ct.scan import predict_series
    from brain_ct.series import list_series, read_series

    caplog.set_level(logging.DEBUG)
    predictor = Predictor.from_pretrained(str(case["model"]))
    ct = load_image(case["single"])
    assert set(ct.meta) <= ALLOWED_META_KEYS
    pred = predictor.predict(ct, tta=True)
    series = read_series(case["folder"])
    result = predict_series(predictor, series)
    with pytest.raises(InvalidInputError) as mr_error:
        load_image(case["mr"])
    with pytest.raises(InvalidInputError) as truncated_error:
        load_image(case["single"].read_bytes()[:-5000], name="cut.dcm")
    pdf = write_report(result, case["root"] / "lib_report.pdf", model_settings=predictor.settings)
    texts = {
        "meta": _dump(ct.meta),
        "repr": repr(ct) + repr(series) + repr(pred),
        "prediction": _dump(pred.to_dict()),
        "series": _dump(result.to_dict()) + _dump(series.to_dict()),
        "list_series": _dump([s.to_dict() for s in list_series(case["folder"])]),
        "errors": str(mr_error.value) + str(truncated_error.value),
        "pdf": _pdf_text(pdf),
        "logs": "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records),
    }
    out, err = capfd.readouterr()
    texts["stdout/stderr"] = out + err
    leaks = {k: _leaks(v, case["uids"]) for k, v in texts.items()}
    assert not any(leaks.values()), leaks
    assert series.identifiers == {}  # only read when asked for
    # Control: asked for explicitly, the three identifiers (and only those) are printed, and the
    # searches above find them.
    named = read_series(case["folder"], read_identifiers=True)
    named_pdf = write_report(
        predict_series(predictor, named),
        case["root"] / "named.pdf",
        model_settings=predictor.settings,
        include_identifiers=True,
    )
    found = set(_leaks(_pdf_text(named_pdf), case["uids"]))
    assert {"Zyxwert", "PID7731XQ", "20190317"} <= found
    assert not found & {"Quarrington", "Vandersloot", "ACCN55501ZZ", "19580412", "Nestorius"}


@pytest.mark.slow
def test_cli_outputs_carry_no_identity(case: dict[str, Any], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    model = str(case["model"])
    predict = subprocess.run(
        [
            sys.executable,
            "-m",
            "brain_ct",
            "predict",
            "--json",
            "--model",
            model,
            str(case["single"]),
            str(case["mr"]),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert predict.returncode == 1, predict.stderr[-2000:]  # the MR fails, the CT is read
    lines = [json.loads(x) for x in predict.stdout.splitlines() if x.strip()]
    assert "probability" in lines[0] and "error" in lines[1]
    report_pdf = tmp_path / "report.pdf"
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "brain_ct",
            "report",
            str(case["folder"]),
            "--out",
            str(report_pdf),
            "--model",
            model,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    texts = {
        "predict": predict.stdout + predict.stderr,
        "report": report.stdout + report.stderr,
        "pdf": _pdf_text(report_pdf),
    }
    leaks = {k: _leaks(v, case["uids"]) for k, v in texts.items()}
    assert not any(leaks.values()), leaks


@pytest.mark.slow
def test_app_outputs_and_logs_carry_no_identity(
    case: dict[str, Any], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    import gradio as gr

    old = os.environ.get("BRAIN_CT_MODEL")
    os.environ["BRAIN_CT_MODEL"] = str(case["model"])
    try:
        import app
    finally:
        if old is None:
            os.environ.pop("BRAIN_CT_MODEL", None)
        else:
            os.environ["BRAIN_CT_MODEL"] = old
    caplog.set_level(logging.DEBUG)
    reader = app.Reader(app.ModelRegistry(str(case["model"])))
    label, _, explanation, state = reader.read_slice(str(case["single"]), tta=True)
    _, meta_rows, slice_pdf = reader.slice_details(state)
    verdict, summary, series_pdf, heatmap_volume, series_state = reader.read_series(
        sorted(str(p) for p in case["folder"].iterdir())
    )
    _, slice_text = reader.show_series_slice(series_state, 1)
    with pytest.raises(gr.Error) as mr_error:
        reader.read_slice(str(case["mr"]))
    texts = {
        "label": _dump(label),
        "explanation": explanation + slice_text,
        "meta table": _dump(meta_rows),
        "slice pdf": _pdf_text(slice_pdf),
        "series": verdict + _dump(summary),
        "series pdf": _pdf_text(series_pdf),
        # the whole file: header, free-text fields and any extension
        "heatmap volume": gzip.decompress(Path(heatmap_volume).read_bytes()).decode("latin-1"),
        "error": str(mr_error.value.message),
        "logs": "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records),
    }
    out, err = capfd.readouterr()
    texts["stdout/stderr"] = out + err
    leaks = {k: _leaks(v, case["uids"]) for k, v in texts.items()}
    assert not any(leaks.values()), leaks
    assert meta_rows and {row[0] for row in meta_rows} <= ALLOWED_META_KEYS
