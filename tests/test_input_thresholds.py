"""A threshold per input kind (``brain_ct_input_thresholds``): chosen by the real_fpr rule within each kind,
saved and loaded with the model, and applied by the Predictor, the scan reading and the metrics alike."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from helpers_models import make_tiny_model, phantom_ct

from brain_ct.errors import ModelLoadError
from brain_ct.model import ModelSettings, apply_settings_to_config, build_random_model, load_model
from brain_ct.predictor import Predictor
from train.evaluate import metrics_by_kind
from train.threshold import example_thresholds, input_kind_thresholds, rule_input_thresholds, select_threshold

DICOM, IMAGE = 0, 1  # indices into train.data.records.INPUT_KINDS
PHANTOM, REAL = 0, 1  # indices into train.data.records.DOMAINS


def _validation() -> tuple[np.ndarray, ...]:
    """20 real normals per kind: DICOM ones score 0.00–0.19, 8-bit ones 0.20–0.39 (real anatomy rendered as a
    figure scores higher); bleeds of both kinds score 0.25–0.97."""
    neg_dicom = np.arange(20) / 100
    neg_image = 0.20 + np.arange(20) / 100
    pos = 0.25 + np.arange(10) * 0.08
    scores = np.r_[neg_dicom, neg_image, pos, pos]
    labels = np.r_[np.zeros(40), np.ones(20)].astype(np.int64)
    kinds = np.r_[np.full(20, DICOM), np.full(20, IMAGE), np.full(10, DICOM), np.full(10, IMAGE)]
    domains = np.full(60, REAL)
    return labels, scores, kinds, domains


def test_pooled_rule_then_a_stricter_threshold_for_the_kind_that_needs_it() -> None:
    y, s, k, d = _validation()
    pooled, rule = select_threshold(y, s, d, "real_fpr", max_real_fpr=0.1, kinds=k)
    # pooled: 40 real normals, 4 may be positive (0.39 … 0.36): the lowest bleed above 0.35 is 0.41
    assert pooled == pytest.approx(0.41)
    # 8-bit alone: 2 of 20 may be positive (0.39, 0.38) → the lowest bleed above 0.37 is 0.41: not stricter
    assert rule_input_thresholds(rule) is None and rule["by_input_kind"]["image"][
        "own_threshold"
    ] == pytest.approx(0.41)
    s2 = s.copy()
    s2[(k == IMAGE) & (y == 0)] += 0.2  # 8-bit normals 0.40–0.59
    pooled, rule = select_threshold(y, s2, d, "real_fpr", max_real_fpr=0.1, kinds=k)
    # pooled: 4 of 40 may be positive (0.59 … 0.56) → lowest bleed above 0.55 is 0.57
    assert pooled == pytest.approx(0.57)
    own = rule_input_thresholds(rule)
    # 8-bit: 2 of 20 may be positive (0.59, 0.58) → lowest bleed above 0.57 is 0.65; DICOM never goes laxer
    assert own == {"image": pytest.approx(0.65)}
    assert rule["by_input_kind"]["dicom"]["threshold"] == pytest.approx(pooled)
    assert rule["by_input_kind"]["dicom"]["own_threshold"] < pooled
    image = rule["by_input_kind"]["image"]
    assert image["n_real_negatives"] == 20 and image["real_false_positives"] == 0
    assert "8-bit images at their own threshold 0.6500" in rule["description"]


def test_no_kind_threshold_without_enough_real_normals_or_without_kinds() -> None:
    y, s, k, d = _validation()
    s = s.copy()
    s[(k == IMAGE) & (y == 0)] += 0.2
    _, rule = select_threshold(y, s, d, "real_fpr", max_real_fpr=0.1)  # kinds not given
    assert "input_thresholds" not in rule and "by_input_kind" not in rule
    own, rules = input_kind_thresholds(y, s, k, d, 0.5, 0.1, min_real_negatives=21)
    assert own == {} and rules == {}
    _, rule = select_threshold(y, s, d, "sensitivity", kinds=k)  # only real_fpr has a per-kind step
    assert rule_input_thresholds(rule) is None


def test_metrics_decide_each_kind_at_its_own_threshold() -> None:
    y, s, k, d = _validation()
    per = example_thresholds(k, 0.3, {"image": 0.5})
    assert per is not None and set(per[k == DICOM]) == {0.3} and set(per[k == IMAGE]) == {0.5}
    assert example_thresholds(k, 0.3, None) is None
    m = metrics_by_kind(y, s, k, 0.3, d, {"image": 0.5})
    image, dicom = m["by_input_kind"]["image"], m["by_input_kind"]["dicom"]
    assert image["threshold"] == 0.5 and dicom["threshold"] == 0.3
    assert image["specificity"] == 1.0  # 8-bit normals 0.20–0.39, all below 0.5
    assert dicom["specificity"] == 1.0
    # overall: each example at its kind's threshold (a pooled 0.3 would flag ten 8-bit normals)
    assert m["confusion_matrix"][0] == [40, 0]
    assert m["input_thresholds"] == {"image": 0.5}
    assert metrics_by_kind(y, s, k, 0.3, d)["confusion_matrix"][0] == [30, 10]


def test_input_thresholds_round_trip_through_config_and_refuse_bad_values(tmp_path: Path) -> None:
    settings = ModelSettings(
        windows=((40, 80), (80, 200), (600, 2800)),
        image_size=32,
        threshold=0.3,
        input_thresholds={"image": 0.45},
    )
    assert settings.threshold_for("image") == 0.45
    assert settings.threshold_for("dicom") == settings.threshold_for("nifti") == 0.3
    model = build_random_model(settings, seed=0)
    apply_settings_to_config(model.config, settings)
    model.save_pretrained(tmp_path / "m")
    _, loaded = load_model(tmp_path / "m")
    assert loaded.input_thresholds == {"image": 0.45} and loaded.threshold == pytest.approx(0.3)
    # a single threshold written later removes the per-kind ones
    apply_settings_to_config(model.config, dataclasses.replace(settings, input_thresholds=None))
    assert not hasattr(model.config, "brain_ct_input_thresholds")

    config = json.loads((tmp_path / "m" / "config.json").read_text())
    for bad in ({"png": 0.4}, {"image": 1.5}, {"image": True}, [0.4]):
        config["brain_ct_input_thresholds"] = bad
        (tmp_path / "m" / "config.json").write_text(json.dumps(config))
        with pytest.raises(ModelLoadError, match="brain_ct_input_thresholds"):
            load_model(tmp_path / "m")
    with pytest.raises(ValueError, match="unknown input kind"):
        dataclasses.replace(settings, input_thresholds={"jpeg": 0.4})


def test_predictor_decides_8bit_images_and_dicoms_at_their_own_thresholds(tmp_path: Path) -> None:
    predictor = Predictor.from_pretrained(make_tiny_model(tmp_path / "m"))
    dicom, image = phantom_ct(128), phantom_ct(128, kind="image")
    p_dicom, p_image = predictor.predict(dicom).probability, predictor.predict(image).probability
    # the base threshold calls both positive; the 8-bit threshold sits just above the 8-bit score
    settings = dataclasses.replace(
        predictor.settings,
        threshold=min(p_dicom, p_image),
        input_thresholds={"image": float(np.nextafter(p_image, 1.0))},
    )
    split = Predictor(predictor.model, settings)
    a, b = split.predict(dicom), split.predict(image)
    assert (a.label, b.label) == ("hemorrhage", "normal")
    assert a.threshold == pytest.approx(min(p_dicom, p_image))
    assert b.threshold == pytest.approx(settings.input_thresholds["image"])
    assert b.to_dict()["threshold"] == pytest.approx(b.threshold)  # every view shows the threshold used


def test_calibrate_cli_records_per_kind_thresholds_on_real_anatomy(tmp_path: Path) -> None:
    from train.calibrate import main

    real = Path(__file__).resolve().parents[1] / "data" / "real_anatomy" / "dcm_qa_ct-GE"
    model_dir = make_tiny_model(tmp_path / "m", image_size=64, threshold=0.3)
    out = tmp_path / "calibrated"
    argv = ["--model", str(model_dir), "--real_anatomy_dir", str(real), "--real_anatomy_eval_variants", "6",
            "--synthetic_size", "128", "--output_dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "eval_results.json").read_text())
    config = json.loads((out / "config.json").read_text())
    rule = results["threshold_rule"]
    # 7 held-out levels × 6 normals, DICOM and 8-bit alternately: 21 real normals of each kind
    assert {k: v["n_real_negatives"] for k, v in rule["by_input_kind"].items()} == {"dicom": 21, "image": 21}
    assert config.get("brain_ct_input_thresholds") == rule.get("input_thresholds")
    _, settings = load_model(out)
    for kind, m in results["validation"]["by_input_kind"].items():
        assert m["threshold"] == pytest.approx(settings.threshold_for(kind))
        assert m["threshold"] >= settings.threshold
