"""train.evaluate: metrics per input kind and domain worked out by hand, and the ``python -m train.evaluate`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_models import make_tiny_model
from helpers_train import write_tiny_folder

from brain_ct.errors import InvalidInputError
from brain_ct.jsonable import json_safe
from train.evaluate import binary_metrics, main, metrics_by_kind

LABELS = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.65, 0.5, 0.3, 0.1, 0.05])


def test_binary_metrics_by_hand() -> None:
    m = binary_metrics(LABELS, SCORES, 0.55)
    # called positive: 0.9 0.8 0.7 0.6 (TP=4) and 0.65 (FP=1); FN=1 (0.2); TN=4
    assert m["confusion_matrix"] == [[4, 1], [1, 4]]
    assert m["sensitivity"] == pytest.approx(0.8)
    assert m["specificity"] == pytest.approx(0.8)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["f1"] == pytest.approx(0.8)
    # AUC: of 25 (pos, neg) pairs the positive wins all but 0.6<0.65, 0.2<0.65, 0.2<0.5, 0.2<0.3 → 21/25
    assert m["auc"] == pytest.approx(21 / 25)


REAL, PHANTOM = 1, 0  # indices into train.data.records.DOMAINS
# LABELS/SCORES with the 5 normals real except the highest-scoring one (0.65), a phantom
DOMAINS = np.array([PHANTOM] * 5 + [PHANTOM, REAL, REAL, REAL, REAL])


def test_metrics_by_domain() -> None:
    m = metrics_by_kind(LABELS, SCORES, np.zeros(10, np.int64), 0.55, DOMAINS)
    assert m["by_domain"]["real"]["n"] == 4 and m["by_domain"]["real"]["confusion_matrix"] == [[4, 0], [0, 0]]
    assert m["by_domain"]["phantom"]["n"] == 6


def test_metrics_by_kind_splits_dicom_and_image() -> None:
    kinds = np.array([0, 1] * 5)
    m = metrics_by_kind(LABELS, SCORES, kinds, 0.55)
    assert m["n"] == 10
    assert m["by_input_kind"]["dicom"]["n"] == 5 and m["by_input_kind"]["image"]["n"] == 5
    assert (
        m["by_input_kind"]["dicom"]["confusion_matrix"]
        == binary_metrics(LABELS[kinds == 0], SCORES[kinds == 0], 0.55)["confusion_matrix"]
    )


def test_evaluate_cli_writes_results_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_tiny_model(tmp_path / "m", image_size=64, threshold=0.3)
    data = write_tiny_folder(tmp_path / "test", n=8, size=96)
    out = tmp_path / "eval"
    assert main(["--model", str(model), "--test_dir", str(data), "--output_dir", str(out)]) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert results["threshold"] == pytest.approx(0.3)
    assert results["threshold_source"].startswith("model config")
    test = results["test"]
    assert test["n"] == 8 and sum(map(sum, test["confusion_matrix"])) == 8
    assert set(test["by_input_kind"]) == {"dicom", "image"}
    assert (out / "roc_test.png").stat().st_size > 1000
    assert (out / "confusion_matrix_test.png").stat().st_size > 1000
    assert (out / "reliability_test.png").stat().st_size > 1000
    assert 0.0 <= results["calibration"]["test"]["ece"] <= 1.0
    assert results["calibration"]["test"]["by_input_kind"]["dicom"]["n"] == 3
    assert "test: n=8" in capsys.readouterr().out


def test_evaluate_cli_rechooses_threshold_on_validation(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "m", image_size=64)
    data = write_tiny_folder(tmp_path / "d", n=6, size=96)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "--model",
                str(model),
                "--test_dir",
                str(data),
                "--validation_dir",
                str(data),
                "--threshold_strategy",
                "sensitivity",
                "--threshold_sensitivity",
                "1.0",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "eval_results.json").read_text())
    assert results["threshold_source"] == "validation (sensitivity)"
    assert results["threshold_rule"]["target_sensitivity"] == 1.0
    assert results["validation"]["sensitivity"] == 1.0  # the rule's target, met on the same data
    assert results["test"]["sensitivity"] == 1.0


def test_evaluate_cli_default_rule_bounds_false_positives_on_real_files(tmp_path: Path) -> None:
    # image-folder files are real anatomy (domain "real"): the default rule is real_fpr
    model = make_tiny_model(tmp_path / "m", image_size=64)
    data = write_tiny_folder(tmp_path / "d", n=10, size=96)
    out = tmp_path / "eval"
    args = ["--model", str(model), "--test_dir", str(data), "--validation_dir", str(data)]
    assert main([*args, "--max_real_fpr", "0.2", "--output_dir", str(out)]) == 0
    results = json.loads((out / "eval_results.json").read_text())
    rule = results["threshold_rule"]
    assert rule["strategy"] == "real_fpr" and rule["n_real_negatives"] == 5
    assert results["validation"]["confusion_matrix"][0][1] <= 1  # ≤ 20 % of 5 real normals


def test_evaluate_cli_without_data_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_tiny_model(tmp_path / "m")
    assert main(["--model", str(model)]) == 1
    assert "--test_dir" in capsys.readouterr().err


def test_single_model_numbers_are_those_of_the_training_transform(tmp_path: Path) -> None:
    # A single model is still scored by predict_scores over SliceTransform (not by the ensemble's Predictor
    # path): eval_results equal the pre-ensemble pipeline rebuilt here, and gain no ensemble keys.
    from brain_ct.model import load_model
    from train.calibrate import calibration_report
    from train.data.image_folder import scan_imagefolder
    from train.data.splits import to_dataset
    from train.data.transform import SliceTransform, attach_transform
    from train.evaluate import predict_scores

    model_dir = make_tiny_model(tmp_path / "m", image_size=64, threshold=0.3)
    data = write_tiny_folder(tmp_path / "test", n=8, size=96)
    out = tmp_path / "eval"
    assert main(["--model", str(model_dir), "--test_dir", str(data), "--output_dir", str(out)]) == 0
    results = json.loads((out / "eval_results.json").read_text())

    model, settings = load_model(model_dir)
    dataset = attach_transform(
        to_dataset(scan_imagefolder(data)), SliceTransform(settings, synthetic_size=256)
    )
    y, s, k, d = predict_scores(model, dataset).binary
    expected = {
        "model": str(model_dir),
        "threshold": 0.3,
        "threshold_source": "model config (brain_ct_threshold)",
        "test": metrics_by_kind(y, s, k, 0.3, d),
        "calibration": {"test": calibration_report(y, s, k, d)},
    }
    assert results == json.loads(json.dumps(json_safe(expected)))


# ------------------------------------------------------------------------------ where results go, what is printed
def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_default_output_is_eval_model_name_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_tiny_model(tmp_path / "models" / "shipped", image_size=64)
    data = write_tiny_folder(tmp_path / "test", n=4, size=96)
    before = _files(model)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["--model", str(model) + "/", "--test_dir", str(data)]) == 0
    assert _files(model) == before  # the model folder is left exactly as it was
    assert (work / "eval-shipped" / "eval_results.json").is_file()
    assert "wrote eval-shipped/eval_results.json" in capsys.readouterr().out


@pytest.mark.parametrize("inside", [".", "eval", "eval/deeper"])
def test_an_output_dir_in_a_model_folder_is_refused(
    inside: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_tiny_model(tmp_path / "m", image_size=64)
    data = write_tiny_folder(tmp_path / "test", n=4, size=96)
    before = _files(model)
    code = main(["--model", str(model), "--test_dir", str(data), "--output_dir", str(model / inside)])
    assert code == 1
    assert "never go into a model folder" in capsys.readouterr().err
    assert _files(model) == before


def test_output_dir_for_a_hub_id_and_a_folder(tmp_path: Path) -> None:
    from train.evaluate import output_dir_for

    assert output_dir_for("someone/brain-ct-resnet50", None) == Path("eval-brain-ct-resnet50")
    assert output_dir_for("models/brain-ct-demo", None) == Path("eval-brain-ct-demo")
    assert output_dir_for("models/brain-ct-demo", str(tmp_path / "x")) == tmp_path / "x"
    make_tiny_model(tmp_path / "ens")
    with pytest.raises(InvalidInputError, match="inside the model folder"):
        output_dir_for("whatever", str(tmp_path / "ens" / "eval"))


def test_thresholds_used_names_each_kinds_threshold() -> None:
    from train.evaluate import thresholds_used

    kinds = np.array([0, 1] * 5)
    both = metrics_by_kind(LABELS, SCORES, kinds, 0.3127, kind_thresholds={"image": 0.367})
    assert thresholds_used(both) == "thresholds dicom 0.3127, image 0.3670"
    images = metrics_by_kind(LABELS, SCORES, np.ones(10, int), 0.3127, kind_thresholds={"image": 0.367})
    assert thresholds_used(images) == "threshold 0.3670 (image)"
    dicoms = metrics_by_kind(LABELS, SCORES, np.zeros(10, int), 0.3127, kind_thresholds={"image": 0.367})
    assert thresholds_used(dicoms) == "threshold 0.3127 (dicom)"
    assert thresholds_used(metrics_by_kind(LABELS, SCORES, kinds, 0.55)) == "threshold 0.5500"


def test_cli_prints_the_per_kind_thresholds_it_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers_models import copy_model_with_config

    plain = make_tiny_model(tmp_path / "m", image_size=64, threshold=0.3127)
    model = copy_model_with_config(plain, tmp_path / "m2", brain_ct_input_thresholds={"image": 0.367})
    data = write_tiny_folder(tmp_path / "test", n=6, size=96)
    assert main(["--model", str(model), "--test_dir", str(data), "--output_dir", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "test: n=6" in out and "@ thresholds dicom 0.3127, image 0.3670" in out
    image_line = next(line for line in out.splitlines() if line.startswith("  image:"))
    assert image_line.endswith("@ threshold 0.3670")
