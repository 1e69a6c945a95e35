"""Tests of brain_ct.report (the PDF) and the ``report`` CLI."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from helpers_series import (
    FakePredictor,
    head_series,
    label_predictor,
    series_with_probs,
    synthetic_zip,
    to_bytes,
    zip_bytes,
)
from pypdf import PdfReader

from brain_ct.__main__ import main
from brain_ct.errors import InvalidInputError
from brain_ct.model import ModelSettings
from brain_ct.report import probability_plot_png, write_report
from brain_ct.scan import predict_series
from brain_ct.series import read_series

PATIENT_VALUES = ("DOE", "JANE", "PID-778899")


def model_settings(fake: FakePredictor, **changes) -> ModelSettings:
    """The real settings of the model ``fake`` stands for (write_report takes a ModelSettings)."""
    fields = ("threshold", "context_slices", "model_id", "revision", "is_demo", "trained_on")
    values = {name: getattr(fake.settings, name) for name in fields} | changes
    return ModelSettings(windows=((40.0, 80.0),), image_size=64, **values)


def _pdf_pages(path) -> list[str]:
    return [page.extract_text() or "" for page in PdfReader(str(path)).pages]


def _all_text(path) -> str:
    return "\n".join(_pdf_pages(path))


@pytest.fixture
def positive_result(make_ct_dataset, tmp_path):
    s, by_name, names = series_with_probs(make_ct_dataset, tmp_path, [0.02, 0.05, 0.91, 0.97, 0.04, 0.6])
    fake = FakePredictor(by_name)
    return predict_series(fake, s), model_settings(fake), names


def test_series_report_has_verdict_model_slices_and_disclaimer_on_every_page(positive_result, tmp_path):
    result, settings, names = positive_result
    out = write_report(
        result, tmp_path / "r.pdf", model_settings=settings, created=dt.datetime(2030, 1, 2, 3, 4)
    )
    assert out == tmp_path / "r.pdf"
    pages = _pdf_pages(out)
    text = "\n".join(pages)
    assert "Verdict: hemorrhage suspected (label: hemorrhage)" in text
    assert f"{result.probability:.1%}" in text
    assert "Model: fake" in text
    assert "trained on synthetic phantoms — for demonstration only" in text
    assert "2030-01-02 03:04" in text
    assert "slices 3, 4, 6" in text  # positive slices, numbered from 1 as people count
    assert "Most suspicious slice: 4." in text
    # Key slices, most suspicious first.
    assert (
        text.index("Slice 4 at 15.0 mm") < text.index("Slice 3 at 10.0 mm") < text.index("Slice 6 at 25.0 mm")
    )
    assert "right frontal" in text  # region of a positive fake slice, described
    assert "fake explanation p=0.97" in text
    assert len(pages) >= 2
    assert all("not a diagnosis" in page for page in pages)
    # Images: the plot, and a plain image plus an overlay per key slice (4 key slices).
    n_images = sum(len(page.images) for page in PdfReader(str(out)).pages)
    assert n_images == 1 + 2 * 4


def test_report_carries_no_identifiers_by_default(positive_result, tmp_path):
    result, settings, names = positive_result
    text = _all_text(write_report(result, tmp_path / "r.pdf", model_settings=settings))
    for value in PATIENT_VALUES:
        assert value not in text
    for name in names:  # file names may carry patient names: never printed
        assert name not in text
    assert str(tmp_path) not in text
    raw = (tmp_path / "r.pdf").read_bytes()
    assert b"DOE" not in raw and b"PID-778899" not in raw


def test_synthetic_scan_report_has_verdict_and_no_patient_data(tmp_path):
    from brain_ct.synthetic import generate_series, to_dicom

    synthetic_series = generate_series(3, n_slices=10, size=128, hemorrhage=True)

    path = tmp_path / "scan.zip"
    by_name = synthetic_zip(synthetic_series, path, patient_name="SYNTHETIC^PHANTOM")
    fake = label_predictor(by_name)
    result = predict_series(fake, read_series(path))
    out = write_report(result, tmp_path / "scan.pdf", model_settings=model_settings(fake))
    text = _all_text(out)
    raw = out.read_bytes()
    assert "Verdict: hemorrhage suspected (label: hemorrhage)" in text
    positive = ", ".join(str(i + 1) for i, p in enumerate(synthetic_series) if p.label)
    assert f"slices {positive}." in text
    ds = to_dicom(synthetic_series[0], patient_name="SYNTHETIC^PHANTOM")
    for value in (
        "SYNTHETIC^PHANTOM",
        "SYNTHETIC PHANTOM",
        "PHANTOM SYNTHETIC",
        str(ds.PatientID),
        str(ds.AccessionNumber),
        str(ds.InstitutionName),
        str(ds.StudyDate),
        str(ds.PatientBirthDate),
    ):
        assert value not in text
        assert value.encode() not in raw


def test_identifiers_only_when_asked(make_ct_dataset, tmp_path):
    slices = head_series(make_ct_dataset, 3)
    path = tmp_path / "p.zip"
    path.write_bytes(zip_bytes([(f"{i}.dcm", to_bytes(ds)) for i, (_, ds) in enumerate(slices)]))
    s = read_series(path, read_identifiers=True)
    fake = FakePredictor({f"{i}.dcm": 0.1 for i in range(3)})
    result = predict_series(fake, s)
    text = _all_text(write_report(result, tmp_path / "no.pdf", model_settings=model_settings(fake)))
    assert "DOE" not in text and "PID-778899" not in text
    text = _all_text(
        write_report(
            result, tmp_path / "yes.pdf", model_settings=model_settings(fake), include_identifiers=True
        )
    )
    assert "PatientName: DOE^JANE" in text and "PatientID: PID-778899" in text
    text = _all_text(
        write_report(
            result,
            tmp_path / "explicit.pdf",
            include_identifiers=True,
            identifiers={"PatientID": "X-1", "PatientBirthDate": "19700101"},
        )
    )
    assert "PatientID: X-1" in text and "19700101" not in text and "DOE" not in text


def test_negative_series_report(make_ct_dataset, tmp_path):
    s, by_name, _ = series_with_probs(make_ct_dataset, tmp_path, [0.02, 0.6, 0.1, 0.1])
    fake = FakePredictor(by_name)
    settings = model_settings(fake, is_demo=False, trained_on="labelled head CTs")
    text = _all_text(write_report(predict_series(fake, s), tmp_path / "n.pdf", model_settings=settings))
    assert "Verdict: no hemorrhage found by the model (label: normal)" in text
    assert "hemorrhage suspected" not in text
    assert "for demonstration only" not in text
    assert "2 neighbouring slices reach the threshold 0.50, or one slice reaches 0.75" in text


def test_single_prediction_report_with_tiny_model(make_ct_dataset, tmp_path):
    from helpers_models import make_tiny_model

    from brain_ct.predictor import Predictor

    predictor = Predictor.from_pretrained(make_tiny_model(tmp_path / "m", trained_on="synthetic phantoms"))
    ds = head_series(make_ct_dataset, 1)[0][1]
    pred = predictor.predict(to_bytes(ds))
    out = write_report(pred, tmp_path / "one.pdf", model_settings=predictor.settings)
    text = _all_text(out)
    assert (
        f"Verdict: {'hemorrhage suspected' if pred.label == 'hemorrhage' else 'no hemorrhage found'}" in text
    )
    assert "(slice level)" in text and "Slices read" not in text
    assert "for demonstration only" in text
    for value in PATIENT_VALUES:
        assert value not in text
    assert sum(len(p.images) for p in PdfReader(str(out)).pages) == 2


def test_report_input_errors(positive_result, tmp_path):
    with pytest.raises(InvalidInputError, match="SeriesPrediction or a Prediction"):
        write_report({"label": "normal"}, tmp_path / "x.pdf")
    result, settings, _ = positive_result
    with pytest.raises(InvalidInputError, match="cannot write the report"):
        write_report(result, tmp_path / "missing" / "x.pdf", model_settings=settings)


def test_unverified_reading_carries_the_caveat_in_the_pdf(make_ct_dataset, tmp_path):
    from helpers_models import make_tiny_model

    from brain_ct.predictor import Predictor
    from brain_ct.report import UNVERIFIED_NOTE

    predictor = Predictor.from_pretrained(make_tiny_model(tmp_path / "m"))
    ds = head_series(make_ct_dataset, 1)[0][1]
    checked = predictor.predict(to_bytes(ds))
    forced = predictor.predict(to_bytes(ds), allow_unverified=True)
    caveat = "Head-CT check skipped"
    assert caveat in UNVERIFIED_NOTE
    assert caveat not in _all_text(write_report(checked, tmp_path / "ok.pdf"))
    assert caveat in _all_text(write_report(forced, tmp_path / "forced.pdf"))
    # A scan says so when the caller read it with the check skipped.
    s, by_name, _ = series_with_probs(make_ct_dataset, tmp_path, [0.1, 0.7])
    fake = FakePredictor(by_name)
    result = predict_series(fake, s)
    assert caveat not in _all_text(
        write_report(result, tmp_path / "s.pdf", model_settings=model_settings(fake))
    )
    text = _all_text(
        write_report(result, tmp_path / "u.pdf", model_settings=model_settings(fake), unverified=True)
    )
    assert caveat in text


def test_report_counts_in_words_and_numbers_slices_from_one(make_ct_dataset, tmp_path):
    s, by_name, _ = series_with_probs(make_ct_dataset, tmp_path, [0.1, 0.9])
    s.errors.append({"file": "x.dcm", "type": "InvalidInputError", "message": "broken"})
    s.skipped.append({"file": "y.dcm", "reason": "other series abc, 1 slice"})
    fake = FakePredictor(by_name)
    text = _all_text(
        write_report(predict_series(fake, s), tmp_path / "r.pdf", model_settings=model_settings(fake))
    )
    assert "1 file could not be read and was left out" in text
    assert "1 readable file not part of this series was left out" in text
    assert "slice 2." in text and "Most suspicious slice: 2." in text
    assert "1 files" not in text and "index 1" not in text


def test_plot_numbers_slices_from_one_and_keeps_the_top_tick_inside():
    from brain_ct.report import probability_plot_figure

    fig = probability_plot_figure([0.2, 1.0, 0.4], 0.5, positive=[1], highlight=1)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    shown = [
        float(t.get_text()) for t in ax.get_xticklabels() if t.get_text() and lo <= t.get_position()[0] <= hi
    ]
    assert shown == [1.0, 2.0, 3.0] and lo > 0 and 3 < hi < 4
    renderer = fig.canvas.get_renderer()
    top = [t for t in ax.get_yticklabels() if t.get_text() == "1.00"]
    assert top, [t.get_text() for t in ax.get_yticklabels()]
    box = top[0].get_window_extent(renderer)
    axes_box = ax.get_window_extent(renderer)
    # The label lies wholly inside the figure, and below the axes' top edge (not on the frame).
    assert box.y1 <= fig.bbox.y1 - 1 and box.y1 < axes_box.y1


def test_probability_plot_png():
    png = probability_plot_png([0.1, 0.8, 0.2], 0.5, positive=[1], highlight=1)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import cv2

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[0] > 100 and img.shape[1] > 300


# --------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_report_cli_writes_pdf_and_refuses_bad_zip(make_ct_dataset, tmp_path, capsys):
    from helpers_models import make_tiny_model

    model = make_tiny_model(tmp_path / "m")
    slices = head_series(make_ct_dataset, 4)
    scan = tmp_path / "scan.zip"
    scan.write_bytes(zip_bytes([(f"s{i}.dcm", to_bytes(ds)) for i, (_, ds) in enumerate(slices)]))
    out = tmp_path / "report.pdf"
    code = main(["report", str(scan), "--out", str(out), "--model", str(model), "--tta"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"report written to {out}" in captured.out
    assert "Verdict:" in _all_text(out)

    bad = tmp_path / "bad.zip"
    bad.write_bytes(zip_bytes([("../evil.dcm", to_bytes(slices[0][1]))]))
    code = main(["report", str(bad), "--out", str(tmp_path / "bad.pdf"), "--model", str(model)])
    captured = capsys.readouterr()
    assert code == 1
    assert "path traversal" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "bad.pdf").exists()

    code = main(["report", str(scan), "--out", str(tmp_path / "nope" / "r.pdf"), "--model", str(model)])
    assert code == 2 and "does not exist" in capsys.readouterr().err

    forced = tmp_path / "forced.pdf"
    code = main(["report", str(scan), "--out", str(forced), "--model", str(model), "--allow-unverified"])
    captured = capsys.readouterr()
    assert code == 0 and "4 slices)" in captured.out
    assert "Head-CT check skipped" in captured.err and "Head-CT check skipped" in _all_text(forced)


def test_report_cli_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["report"])
    assert info.value.code == 2


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from helpers_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("m") / "tiny", image_size=64)


def test_captions_match_the_input(tiny_model, make_ct_dataset, tmp_path, capsys):
    import cv2
    from conftest import brain_window_uint8, draw_head_hu

    from brain_ct.windowing import PRESETS
    from brain_ct.wording import HU_DISPLAY, IMAGE_DISPLAY

    assert f"centre {PRESETS['brain'][0]:g} HU, width {PRESETS['brain'][1]:g} HU" in HU_DISPLAY
    png = tmp_path / "figure.png"
    cv2.imwrite(str(png), brain_window_uint8(draw_head_hu(128)))
    dicom = tmp_path / "slice.dcm"
    dicom.write_bytes(to_bytes(head_series(make_ct_dataset, 1)[0][1]))
    for path, shown, not_shown in ((png, IMAGE_DISPLAY, "brain window"), (dicom, HU_DISPLAY, "as given")):
        out = tmp_path / f"{path.stem}.pdf"
        assert main(["report", str(path), "--out", str(out), "--model", str(tiny_model)]) == 0
        text = " ".join(_all_text(out).split())  # pypdf breaks lines where the PDF does
        assert f"Left: {shown}. Right: Grad-CAM heatmap overlay (where the model looked)." in text
        assert not_shown not in text
    capsys.readouterr()


def test_report_cli_refusal_names_the_flag(tiny_model, tmp_path, capsys):
    import cv2

    flat = np.zeros((300, 300), np.uint8)
    cv2.ellipse(flat, (150, 150), (105, 126), 0, 0, 360, 255, -1)
    cv2.ellipse(flat, (150, 150), (96, 117), 0, 0, 360, 110, -1)
    path = tmp_path / "flat.png"
    cv2.imwrite(str(path), flat)
    code = main(["report", str(path), "--out", str(tmp_path / "r.pdf"), "--model", str(tiny_model)])
    err = capsys.readouterr().err
    assert code == 1 and "--allow-unverified" in err and "allow_unverified=True" not in err
    assert not (tmp_path / "r.pdf").exists()
