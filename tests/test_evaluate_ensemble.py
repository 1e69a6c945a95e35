"""python -m train.evaluate on an ensemble: the report of one model on the members' mean, plus each member;
python -m train.calibrate refuses an ensemble."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers_models import make_tiny_model
from helpers_train import write_subtype_folder, write_tiny_folder
from sklearn.metrics import roc_auc_score

from brain_ct.ensemble import EnsembleSpec, write_spec
from brain_ct.labels import SUBTYPE_LABELS, rsna_log_loss
from brain_ct.predictor import Predictor
from train.calibrate import main as calibrate_main
from train.evaluate import main

ENSEMBLE_THRESHOLD = 0.45


def _files(folder: Path) -> list[Path]:
    """The slices of an image folder (masks and metadata left out), in a fixed order."""
    return sorted(p for p in folder.glob("*/*") if p.parent.name != "masks" and p.suffix in (".png", ".dcm"))


def _confusion(labels: np.ndarray, scores: np.ndarray, threshold: float) -> list[list[int]]:
    pred = scores >= threshold
    return [
        [int((~pred & (labels == 0)).sum()), int((pred & (labels == 0)).sum())],
        [int((~pred & (labels == 1)).sum()), int((pred & (labels == 1)).sum())],
    ]


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An ensemble of two binary members (different windows, sizes, context, thresholds) and a test folder."""
    root = tmp_path_factory.mktemp("evaluate_ensemble")
    make_tiny_model(root / "a", seed=1, threshold=0.5)
    make_tiny_model(root / "b", seed=2, windows=[(40, 80)], image_size=80, threshold=0.3, context_slices=1)
    spec = EnsembleSpec(
        members=(("../a", None), ("../b", None)), combine="mean", threshold=ENSEMBLE_THRESHOLD
    )
    write_spec(root / "ens", spec)
    return root, write_tiny_folder(root / "test", n=10, size=96)


@pytest.fixture(scope="module")
def evaluated(binary: tuple[Path, Path]) -> tuple[dict, str]:
    root, test = binary
    out = root / "eval"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["--model", str(root / "ens"), "--test_dir", str(test), "--output_dir", str(out)]) == 0
    return json.loads((out / "eval_results.json").read_text()), printed.getvalue()


@pytest.fixture(scope="module")
def member_scores(binary: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
    """Each member read on its own by a Predictor: ``([2, N] P(hemorrhage), labels [N])``."""
    root, test = binary
    files = _files(test)
    rows = [
        [
            p.probability
            for p in Predictor.from_pretrained(root / name).predict_batch(files, allow_unverified=True)
        ]
        for name in ("a", "b")
    ]
    return np.array(rows), np.array([int(f.parent.name == "hemorrhage") for f in files])


def test_ensemble_report_is_that_of_the_members_mean(
    evaluated: tuple[dict, str], member_scores: tuple[np.ndarray, np.ndarray]
) -> None:
    results, printed = evaluated
    scores, labels = member_scores
    mean = scores.mean(axis=0)
    test = results["test"]
    assert results["threshold"] == ENSEMBLE_THRESHOLD
    assert results["threshold_source"].startswith("ensemble.json")
    assert test["n"] == 10 and test["threshold"] == ENSEMBLE_THRESHOLD
    assert test["auc"] == pytest.approx(roc_auc_score(labels, mean), abs=1e-6)
    assert test["confusion_matrix"] == _confusion(labels, mean, ENSEMBLE_THRESHOLD)
    assert set(test["by_input_kind"]) == {"dicom", "image"}
    assert 0.0 <= results["calibration"]["test"]["ece"] <= 1.0
    assert results["combine"] == "mean" and results["label_set"] == "binary"
    assert "subtypes" not in results
    assert "ensemble test: n=10" in printed and "member ../b" in printed


def test_each_member_at_its_own_threshold_and_at_the_ensembles(
    evaluated: tuple[dict, str], member_scores: tuple[np.ndarray, np.ndarray]
) -> None:
    results, _ = evaluated
    scores, labels = member_scores
    members = results["members"]
    assert [m["model"] for m in members] == ["../a", "../b"]
    assert [m["threshold"] for m in members] == [0.5, 0.3]
    for m, s in zip(members, scores, strict=True):
        assert m["test"]["auc"] == pytest.approx(roc_auc_score(labels, s), abs=1e-6)
        assert m["test"]["confusion_matrix"] == _confusion(labels, s, m["threshold"])
        at = m["test_at_ensemble_threshold"]
        assert at["threshold"] == ENSEMBLE_THRESHOLD
        assert at["confusion_matrix"] == _confusion(labels, s, ENSEMBLE_THRESHOLD)


def test_threshold_rechosen_on_validation_applies_to_the_ensemble(
    binary: tuple[Path, Path], tmp_path: Path
) -> None:
    root, test = binary
    args = ["--model", str(root / "ens"), "--test_dir", str(test), "--validation_dir", str(test)]
    args += ["--threshold_strategy", "sensitivity", "--threshold_sensitivity", "1.0"]
    assert main([*args, "--output_dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "eval_results.json").read_text())
    t = results["threshold"]
    assert results["threshold_source"] == "validation (sensitivity)" and t != ENSEMBLE_THRESHOLD
    assert results["validation"]["sensitivity"] == 1.0 and results["test"]["sensitivity"] == 1.0
    for m in results["members"]:
        assert m["validation_at_ensemble_threshold"]["threshold"] == t
        assert m["test"]["threshold"] == m["threshold"]  # a member keeps its own threshold


def test_subtype_ensemble_gets_subtype_metrics(tmp_path: Path) -> None:
    for name, seed in (("x", 3), ("y", 4)):
        make_tiny_model(tmp_path / name, labels=SUBTYPE_LABELS, seed=seed)
    write_spec(
        tmp_path / "ens",
        EnsembleSpec(members=(("../x", None), ("../y", None)), combine="mean", threshold=0.5),
    )
    test = write_subtype_folder(tmp_path / "test", n_per_class=3, size=96)
    out = tmp_path / "eval"
    assert main(["--model", str(tmp_path / "ens"), "--test_dir", str(test), "--output_dir", str(out)]) == 0
    results = json.loads((out / "eval_results.json").read_text())

    files = _files(test)
    readings = Predictor.from_pretrained(tmp_path / "ens").predict_batch(files, allow_unverified=True)
    probs = np.array([[p.probability, *p.subtypes.values()] for p in readings])
    targets = np.zeros((len(files), len(SUBTYPE_LABELS)), dtype=np.int64)
    for i, f in enumerate(files):  # by hand from write_subtype_folder's layout and metadata.jsonl
        folder = f.parent.name.lower()
        if folder != "normal":
            targets[i, [0, SUBTYPE_LABELS.index(folder)]] = 1
        if (folder, f.name) == ("subdural", "slice001.png"):
            targets[i, SUBTYPE_LABELS.index("subarachnoid")] = 1

    sub = results["subtypes"]["test"]
    assert sub["n"] == 9
    assert sub["rsna_log_loss"] == pytest.approx(rsna_log_loss(targets, probs), abs=1e-6)
    for j, name in enumerate(SUBTYPE_LABELS):
        assert sub["per_label"][name]["positives"] == int(targets[:, j].sum())
        if 0 < targets[:, j].sum() < len(files):
            expected = roc_auc_score(targets[:, j], probs[:, j])
            assert sub["per_label"][name]["auc"] == pytest.approx(expected, abs=1e-6)
    assert results["test"]["auc"] == pytest.approx(roc_auc_score(targets[:, 0], probs[:, 0]), abs=1e-6)
    assert results["label_set"] == "subtypes" and len(results["members"]) == 2
    assert (out / "roc_subtypes_test.png").is_file()


def test_calibrate_refuses_an_ensemble(
    binary: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = binary
    out = tmp_path / "calibrated"
    argv = ["--model", str(root / "ens"), "--output_dir", str(out), "--synthetic_validation", "4"]
    assert calibrate_main(argv) == 1
    err = capsys.readouterr().err
    assert "is an ensemble (ensemble.json)" in err
    assert "python -m train.ensemble" in err and "python -m train.evaluate --model" in err
    assert not out.exists()
