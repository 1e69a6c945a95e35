"""Subtype models in python -m train: the label set (--labels), every source's subtypes, the six-target
loss, the any-only temperature, per-subtype metrics and the card's Subtypes section."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import brain_window_uint8, draw_head_hu
from helpers_models import make_tiny_model
from helpers_train import NO_EVAL, write_ct_dicom, write_subtype_folder, write_tiny_folder
from helpers_train import TINY as TINY_FLAGS

from brain_ct.errors import InvalidInputError
from brain_ct.labels import SUBTYPE_LABELS, SUBTYPES, rsna_log_loss
from brain_ct.model import ModelSettings, load_model
from brain_ct.windowing import DEFAULT_WINDOWS
from train import main
from train.data.image_folder import scan_imagefolder
from train.data.labels import check_subtype_records, subtype_pos_weights
from train.data.phantoms import synthetic_records
from train.data.records import SUBTYPE_COLUMN, merge_records
from train.data.rsna import read_rsna_labels, read_rsna_subtypes, scan_rsna
from train.data.transform import SliceTransform
from train.evaluate import subtype_metrics

TINY = [*TINY_FLAGS, "--dataloader_num_workers", "0"]

SUBTYPE_SETTINGS = ModelSettings(DEFAULT_WINDOWS, 64, 0.5, labels=SUBTYPE_LABELS)


def rsna_csv(rows: dict[str, list[int]]) -> str:
    """RSNA 2019 CSV text: six ``ID_<image>_<label>,0/1`` rows per image (SUBTYPE_LABELS order)."""
    lines = ["ID,Label"]
    for image, vector in rows.items():
        lines += [f"{image}_{name},{v}" for name, v in zip(SUBTYPE_LABELS, vector, strict=True)]
    return "\n".join(lines) + "\n"


#: Eight images: normals, single subtypes, and one with two subtypes.
RSNA_ROWS = {
    "ID_000a": [0, 0, 0, 0, 0, 0],
    "ID_000b": [1, 0, 0, 0, 0, 1],
    "ID_000c": [0, 0, 0, 0, 0, 0],
    "ID_000d": [1, 1, 0, 0, 0, 0],
    "ID_000e": [0, 0, 0, 0, 0, 0],
    "ID_000f": [1, 0, 0, 0, 1, 1],
    "ID_0010": [0, 0, 0, 0, 0, 0],
    "ID_0011": [1, 0, 1, 0, 0, 0],
}


@pytest.fixture(scope="module")
def rsna(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(dicom_dir, labels_csv)``: RSNA-layout DICOMs drawn in code (a 70 HU disc on each bleed)."""
    root = tmp_path_factory.mktemp("rsna")
    dicoms = root / "stage_2_train"
    dicoms.mkdir()
    rng = np.random.default_rng(0)
    for image, vector in RSNA_ROWS.items():
        hu = draw_head_hu(96) + rng.normal(0, 3, (96, 96)).astype(np.float32)
        if vector[0]:
            hu[40:52, 30:42] = 70.0
        write_ct_dicom(dicoms / f"{image}.dcm", hu)
    csv = root / "stage_2_train.csv"
    csv.write_text(rsna_csv(RSNA_ROWS))
    return dicoms, csv


@pytest.fixture(scope="module")
def subtype_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_subtype_folder(tmp_path_factory.mktemp("subtypes"), n_per_class=4)


# ---------------------------------------------------------------------------------------------- RSNA CSV


def test_rsna_subtype_reader_returns_the_six_targets(rsna: tuple[Path, Path]) -> None:
    _, csv = rsna
    assert read_rsna_subtypes(csv) == RSNA_ROWS
    assert read_rsna_labels(csv) == {k: v[0] for k, v in RSNA_ROWS.items()}  # binary: any semantics
    cols = scan_rsna(rsna[0], csv, subtypes=None)  # auto: the CSV has subtype rows
    assert cols[SUBTYPE_COLUMN][cols["path"].index(str(rsna[0] / "ID_000f.dcm"))] == [
        "subarachnoid",
        "subdural",
    ]
    assert SUBTYPE_COLUMN not in scan_rsna(rsna[0], csv, subtypes=False)


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ({"ID_a": [0, 0, 0, 0, 0, 1]}, r"ID_a is inconsistent \(any=0, .*subdural=1\)"),
        ({"ID_a": [1, 0, 0, 0, 0, 0]}, "ID_a is inconsistent"),
    ],
)
def test_inconsistent_rsna_rows_are_refused(tmp_path: Path, rows: dict[str, list[int]], match: str) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text(rsna_csv(rows))
    with pytest.raises(InvalidInputError, match=match):
        read_rsna_subtypes(csv)


def test_rsna_subtype_reader_needs_all_six_rows(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("ID,Label\nID_a_any,1\nID_a_subdural,1\n")
    with pytest.raises(InvalidInputError, match="ID_a has no row for epidural"):
        read_rsna_subtypes(csv)
    csv.write_text("ID,Label\nID_a_any,1\n")
    with pytest.raises(InvalidInputError, match="no subtype rows"):
        read_rsna_subtypes(csv)


def test_inconsistent_csv_stops_a_training_run(rsna: tuple[Path, Path], tmp_path: Path) -> None:
    from train.args import DataArguments
    from train.data.build import build_splits

    csv = tmp_path / "bad.csv"
    csv.write_text(rsna_csv({**RSNA_ROWS, "ID_000b": [0, 0, 0, 0, 0, 1]}))
    with pytest.raises(InvalidInputError, match="ID_000b is inconsistent"):
        build_splits(DataArguments(dicom_dir=str(rsna[0]), labels_csv=str(csv)), seed=0)  # --labels auto
    binary = build_splits(DataArguments(dicom_dir=str(rsna[0]), labels_csv=str(csv), labels="binary"), seed=0)
    labels = list(binary.train["label"]) + list(binary.validation["label"])
    assert binary.label_set == "binary" and (len(labels), sum(labels)) == (8, 3)  # the any rows alone


@pytest.mark.slow
def test_a_base_model_with_the_subtype_labels_in_another_order_is_refused(
    rsna: tuple[Path, Path], tmp_path: Path
) -> None:
    # Same head size, so its rows would be kept and silently renamed (its any row feeding epidural).
    base = make_tiny_model(tmp_path / "reordered", labels=SUBTYPE_LABELS[::-1], image_size=64, num_stages=2)
    argv = [*TINY[2:], "--model_name_or_path", str(base), "--dicom_dir", str(rsna[0])]
    argv += ["--labels_csv", str(rsna[1]), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="in another order"):
        main(argv)
    assert not (tmp_path / "out" / "config.json").exists()


def test_rsna_subtype_run_continues_from_a_binary_model(rsna: tuple[Path, Path], tmp_path: Path) -> None:
    """RSNA folder + six-row CSV (auto → subtypes), starting from a binary model: the 2-class head is
    made anew as a 6-label one, the backbone is the base's, and the folder loads with the five subtypes."""
    from brain_ct import Predictor

    base = make_tiny_model(tmp_path / "binary", image_size=64, num_stages=2)
    out = tmp_path / "subtypes"
    results = main(
        [
            *TINY[2:],  # not --model_size: start from the binary model
            "--model_name_or_path",
            str(base),
            "--dicom_dir",
            str(rsna[0]),
            "--labels_csv",
            str(rsna[1]),
            "--validation_split",
            "0.5",
            "--stage1_epochs",  # only stage 1 (head only), so the backbone must stay the base's
            "1",
            "--stage2_epochs",
            "0",
            "--max_steps",
            "2",
            *NO_EVAL,
            "--output_dir",
            str(out),
        ]
    )
    config = json.loads((out / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(6)] == list(SUBTYPE_LABELS)
    assert config["problem_type"] == "multi_label_classification"
    model, settings = load_model(out)
    assert settings.subtypes == SUBTYPES and model.classifier[-1].weight.shape[0] == 6
    base_model, _ = load_model(base)
    # stage 1 froze the backbone: it is the base's own, and only the new head learned
    for name, p in base_model.resnet.named_parameters():
        torch.testing.assert_close(dict(model.resnet.named_parameters())[name], p)
    prediction = Predictor.from_pretrained(out).predict(str(rsna[0] / "ID_000b.dcm"))
    assert set(prediction.subtypes) == set(SUBTYPES)
    assert all(0.0 <= v <= 1.0 for v in prediction.subtypes.values())
    per_label = results["subtypes"]["validation"]["per_label"]
    assert list(per_label) == list(SUBTYPE_LABELS)
    assert sum(e["positives"] for e in per_label.values()) > 0


# ---------------------------------------------------------------------------------------------- image folders


def test_subtype_folders_and_metadata_give_the_six_targets(subtype_folder: Path) -> None:
    cols = scan_imagefolder(subtype_folder)
    by_name = {Path(p).relative_to(subtype_folder).as_posix(): i for i, p in enumerate(cols["path"])}
    transform = SliceTransform(SUBTYPE_SETTINGS)
    picks = ["normal/slice000.dcm", "subdural/slice000.dcm", "subdural/slice001.png", "Epidural/slice001.png"]
    batch = {k: [v[by_name[p]] for p in picks] for k, v in cols.items()}
    targets = transform(batch)["labels"]
    #          any  epi  ipa  ivh  sah  sdh
    assert targets == [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        [1.0, 0.0, 0.0, 0.0, 1.0, 1.0],  # metadata.jsonl: subdural + subarachnoid
        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0],  # Epidural/: folder names are case-insensitive
    ]
    binary = SliceTransform(ModelSettings(DEFAULT_WINDOWS, 64, 0.5))(batch)["labels"]
    assert binary == [0, 1, 1, 1]


def test_metadata_that_contradicts_its_folder_is_refused(tmp_path: Path) -> None:
    root = write_subtype_folder(tmp_path / "f", n_per_class=2)
    (root / "metadata.jsonl").write_text('{"file_name": "normal/slice001.png", "subtypes": ["subdural"]}\n')
    with pytest.raises(InvalidInputError, match="in the normal/ folder"):
        scan_imagefolder(root)
    (root / "metadata.jsonl").write_text('{"file_name": "subdural/nope.png", "subtypes": ["subdural"]}\n')
    with pytest.raises(InvalidInputError, match="subdural/nope.png"):
        scan_imagefolder(root)
    (root / "metadata.jsonl").write_text('{"file_name": "subdural/slice001.png", "subtypes": ["sdh"]}\n')
    with pytest.raises(InvalidInputError, match=r"line 1 .*unknown hemorrhage subtype"):
        scan_imagefolder(root)


def test_the_projects_own_synth_folder_stays_a_binary_folder(tmp_path: Path) -> None:
    # `brain_ct synth` writes a metadata.jsonl (label, subtype, bbox, …) without a `subtypes` list: it must
    # still read as the binary hemorrhage/ + normal/ folder it is, not be refused as malformed subtype rows.
    from brain_ct.synthetic.export import write_dataset

    root = write_dataset(tmp_path / "synth", 4, seed=3, size=64, fmt="dcm")
    assert (root / "metadata.jsonl").is_file()
    cols = scan_imagefolder(root)
    assert SUBTYPE_COLUMN not in cols
    assert sorted(cols["label"]) == [0, 0, 1, 1]


def test_a_bleed_of_unknown_subtype_is_refused_for_a_subtype_run(tmp_path: Path) -> None:
    folder = write_tiny_folder(tmp_path / "binary", n=8)  # hemorrhage/ and normal/ only
    assert SUBTYPE_COLUMN not in scan_imagefolder(folder)
    with pytest.raises(InvalidInputError, match=r"4 hemorrhage slice\(s\) have no subtype .*--labels binary"):
        main([*TINY, "--train_dir", str(folder), "--labels", "subtypes", "--output_dir", str(tmp_path / "m")])
    merged = merge_records(scan_imagefolder(folder), synthetic_records(2, "train", 0, 0.0, subtypes=True))
    assert merged[SUBTYPE_COLUMN][-2:] == [[], ["epidural"]]
    with pytest.raises(InvalidInputError, match="no subtype"):
        check_subtype_records(merged, "mixed")


@pytest.mark.slow
def test_labels_binary_on_subtype_data_trains_a_binary_model(subtype_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "binary"
    results = main(
        [*TINY, "--train_dir", str(subtype_folder), "--labels", "binary", "--max_steps", "1", *NO_EVAL]
        + ["--output_dir", str(out)]
    )
    _, settings = load_model(out)
    assert not settings.is_multi_label and settings.labels == ("normal", "hemorrhage")
    assert "subtypes" not in results and "problem_type" not in json.loads((out / "config.json").read_text())


# ---------------------------------------------------------------------------------------------- Hub


def test_hub_dataset_with_a_subtypes_column(tmp_path: Path) -> None:
    """An imagefolder with metadata.jsonl loads (datasets) with a list-of-names column and no label column."""
    import cv2

    from train.args import DataArguments
    from train.data.build import build_splits
    from train.data.transform import attach_transform

    rows = []
    for i in range(8):
        folder = tmp_path / "train" / ("subdural" if i % 2 else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        hu = draw_head_hu(96)
        if i % 2:
            hu[40:52, 20:30] = 70.0
        cv2.imwrite(str(folder / f"{i}.png"), brain_window_uint8(hu))
        names = (["subdural"] + (["intraventricular"] if i == 3 else [])) if i % 2 else []
        rows.append({"file_name": f"{folder.name}/{i}.png", "subtypes": names})
    (tmp_path / "train" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    splits = build_splits(DataArguments(dataset_name=str(tmp_path), validation_split=0.25), seed=0)
    assert splits.label_set == "subtypes" and splits.hub_subtypes.sequence == "subtypes"
    assert sum(splits.class_counts) == 6 and splits.subtype_counts[0] == splits.class_counts[1]
    transform = SliceTransform(SUBTYPE_SETTINGS, image_column="image", hub_subtypes=splits.hub_subtypes)
    expected = [[float(bool(n))] + [float(s in n) for s in SUBTYPES] for n in splits.train["subtypes"]]
    ds = attach_transform(splits.train, transform)
    assert [row["labels"] for row in ds] == expected
    binary = build_splits(DataArguments(dataset_name=str(tmp_path), labels="binary"), seed=0)
    assert binary.label_set == "binary" and sum(binary.class_counts) == 6


# ---------------------------------------------------------------------------------------------- phantoms


def test_phantom_records_ask_for_subtypes_and_targets_follow_the_generator() -> None:
    cols = synthetic_records(10, "validation", 3, 0.0, subtypes=True)
    assert cols[SUBTYPE_COLUMN][1::2] == [[s] for s in SUBTYPES]
    assert cols[SUBTYPE_COLUMN][0::2] == [[]] * 5
    batch = {k: v[:4] for k, v in cols.items()}
    out = SliceTransform(SUBTYPE_SETTINGS, synthetic_size=64)(batch)["labels"]
    assert out[0] == [0.0] * 6 and out[2] == [0.0] * 6
    assert out[1][0] == 1.0 and sum(out[1][1:]) == 1.0 and out[3][0] == 1.0 and sum(out[3][1:]) == 1.0
    assert out[1][1 + SUBTYPES.index("epidural")] == 1.0  # asked, and the generator placed it
    assert SUBTYPE_COLUMN not in synthetic_records(4, "train", 3, 0.0)  # binary records as before


def test_context_stacks_take_a_requested_subtype() -> None:
    from brain_ct.synthetic import generate_context

    stack = generate_context(11, 64, 1, subtype="subdural")
    assert stack[1].label == 1 and stack[1].subtype == "subdural"
    with pytest.raises(InvalidInputError, match="contradicts"):
        generate_context(11, 64, 1, hemorrhage=False, subtype="subdural")


@pytest.mark.slow
def test_phantom_subtype_run_then_evaluate_and_calibrate(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from train.calibrate import main as calibrate_main
    from train.evaluate import main as evaluate_main

    out = tmp_path / "phantoms"
    results = main(
        [*TINY, "--labels", "subtypes", "--synthetic_train", "6", "--synthetic_validation", "10"]
        + [
            "--synthetic_test",
            "10",
            "--synthetic_size",
            "64",
            "--max_steps",
            "1",
            "--mask_loss_weight",
            "0.5",
        ]
        + [*NO_EVAL, "--output_dir", str(out)]
    )
    assert set(results["subtypes"]) == {"validation", "test"}
    test = results["subtypes"]["test"]
    assert (
        test["per_label"]["any"]["positives"] == 5
        and test["per_label"]["any"]["threshold"] == results["threshold"]
    )
    assert all(test["per_label"][s]["threshold"] == 0.5 for s in SUBTYPES)
    assert (out / "roc_subtypes_test.png").is_file()
    card = (out / "README.md").read_text()
    assert "## Subtypes" in card and "0.04383" in card and "NOT comparable" in card
    assert "![roc_subtypes_test.png](roc_subtypes_test.png)" in card

    assert (
        evaluate_main(["--model", str(out), "--synthetic_test", "4", "--output_dir", str(tmp_path / "ev")])
        == 0
    )
    printed = capsys.readouterr().out
    assert "test subtypes: RSNA weighted log loss" in printed and "subdural" in printed
    written = json.loads((tmp_path / "ev" / "eval_results.json").read_text())
    assert written["subtypes"]["test"]["n"] == 4

    cal = tmp_path / "cal"
    argv = ["--model", str(out), "--output_dir", str(cal), "--synthetic_validation", "6"]
    assert calibrate_main([*argv, "--threshold_strategy", "youden"]) == 0
    assert "## Subtypes" in (cal / "README.md").read_text()
    assert json.loads((cal / "eval_results.json").read_text())["subtypes"]["validation"]["n"] == 6


# ---------------------------------------------------------------------------------------------- loss, temperature


def test_positive_weights_balance_each_label_and_are_clipped() -> None:
    weights = subtype_pos_weights([50, 1, 0, 25, 100, 10], 100)
    assert weights == pytest.approx([1.0, 20.0, 1.0, 3.0, 1.0, 9.0])  # 99 → clipped to 20; none / all → 1
    assert subtype_pos_weights([99], 100) == pytest.approx([1 / 20])


def test_temperature_folds_into_the_any_logit_only(tmp_path: Path) -> None:
    from train.calibrate import fold_temperature

    model, _ = load_model(make_tiny_model(tmp_path / "m", labels=SUBTYPE_LABELS))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(pixel_values=x).logits
        fold_temperature(model, 2.0)
        after = model(pixel_values=x).logits
    torch.testing.assert_close(after[:, 0], before[:, 0] / 2.0)
    torch.testing.assert_close(after[:, 1:], before[:, 1:])


def test_trainer_loss_is_weighted_bce_on_the_six_targets(tmp_path: Path) -> None:
    from transformers import TrainingArguments

    from train.trainer import BrainCTTrainer

    model, _ = load_model(make_tiny_model(tmp_path / "m", labels=SUBTYPE_LABELS))
    weights = [1.0, 3.0, 2.0, 1.0, 0.5, 4.0]
    args = TrainingArguments(output_dir=str(tmp_path / "o"), report_to=[], use_cpu=True)
    trainer = BrainCTTrainer(model=model, args=args, class_weights=weights)
    x = torch.randn(3, 3, 64, 64)
    y = torch.tensor([[0.0] * 6, [1, 0, 0, 0, 0, 1], [1, 1, 0, 0, 1, 0]], dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, {"pixel_values": x, "labels": y.clone()})
        z = model(pixel_values=x).logits.double()
    # by hand: −[w·y·log σ(z) + (1 − y)·log(1 − σ(z))], mean over the 18 terms
    w = torch.tensor(weights, dtype=torch.float64)
    by_hand = -(w * y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z))).mean()
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)


# ---------------------------------------------------------------------------------------------- metrics, card


def test_subtype_metrics_by_hand() -> None:
    y = np.array([[0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]])
    p = np.array(
        [
            [0.2, 0.1, 0.1, 0.1, 0.1, 0.3],
            [0.9, 0.6, 0.1, 0.1, 0.1, 0.2],
            [0.4, 0.2, 0.1, 0.1, 0.1, 0.8],
            [0.5, 0.7, 0.1, 0.1, 0.1, 0.1],
        ]
    )
    m = subtype_metrics(y, p, threshold=0.45)
    any_ = m["per_label"]["any"]
    # any: positives 0.9, 0.4 vs negatives 0.2, 0.5 → 3 of 4 pairs ordered; at 0.45: TP 1, FN 1, TN 1, FP 1
    assert any_["auc"] == pytest.approx(0.75) and any_["threshold"] == 0.45
    assert any_["sensitivity"] == pytest.approx(0.5) and any_["specificity"] == pytest.approx(0.5)
    epi = m["per_label"]["epidural"]
    # epidural: the positive (0.6) is below one negative (0.7) → AUC 2/3; at 0.5: TP 1, FP 1 of 3 negatives
    assert epi["auc"] == pytest.approx(2 / 3) and epi["threshold"] == 0.5
    assert epi["sensitivity"] == 1.0 and epi["specificity"] == pytest.approx(2 / 3)
    assert m["per_label"]["intraparenchymal"]["auc"] is None  # no positives: no AUC
    assert m["per_label"]["subdural"]["positives"] == 1 and m["per_label"]["subdural"]["auc"] == 1.0
    assert m["mean_subtype_auc"] == pytest.approx((2 / 3 + 1.0) / 2)
    # RSNA loss by hand: per image Σ w·BCE / 7 with w = 2 for any
    w = np.array([2, 1, 1, 1, 1, 1.0])
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert m["rsna_log_loss"] == pytest.approx(float(np.mean(bce @ w / 7)))
    assert m["rsna_log_loss"] == pytest.approx(rsna_log_loss(y, p))
    with pytest.raises(InvalidInputError, match=r"\[N, 6\]"):
        subtype_metrics(y[:, :5], p[:, :5], 0.5)


def test_card_renders_the_subtypes_section() -> None:
    from train.card import CardInfo, render_model_card

    y = np.array([[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    p = np.clip(y * 0.8 + 0.1, 0, 1)
    results: dict[str, Any] = {"subtypes": {"test": subtype_metrics(y, p, 0.5)}}
    settings = ModelSettings(DEFAULT_WINDOWS, 64, 0.5, labels=SUBTYPE_LABELS, trained_on="RSNA 2019 subset")
    info = CardInfo(
        "m", synthetic=False, base_model=None, architecture="tiny", plots=["roc_subtypes_test.png"]
    )
    card = render_model_card(settings, results, info)
    section = card.split("## Subtypes", 1)[1].split("\n## ", 1)[0]
    assert "| test | subdural | 1 | 1.000 |" in section
    assert f"{results['subtypes']['test']['rsna_log_loss']:.4f}" in section
    assert "0.04383" in section and "private leaderboard" in section and "not comparable" in section.lower()
    assert "![roc_subtypes_test.png](roc_subtypes_test.png)" in section
    assert "print(prediction.subtypes)" in card
    synthetic = render_model_card(settings, results, CardInfo("m", True, None, "tiny"))
    assert "NOT comparable" in synthetic
    binary = render_model_card(
        ModelSettings(DEFAULT_WINDOWS, 64, 0.5), {}, CardInfo("m", False, None, "tiny")
    )
    assert "## Subtypes" not in binary and "prediction.subtypes" not in binary
    assert not math.isnan(results["subtypes"]["test"]["rsna_log_loss"])


def test_validation_metrics_during_training_read_the_any_logit() -> None:
    from transformers import EvalPrediction

    from train.trainer import compute_metrics

    y = np.array([[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], np.float32)
    logits = np.where(y > 0, 2.0, -2.0).astype(np.float32)
    logits[3, 0] = 3.0  # one normal scores above every bleed on "any"
    m = compute_metrics(EvalPrediction(predictions=logits, label_ids=y))
    assert m["auc"] == pytest.approx(0.5)  # any: positives 2, 2 vs negatives −2, 3 → 2 of 4 pairs
    assert m["sensitivity"] == 1.0 and m["specificity"] == pytest.approx(0.5)
    assert m["rsna_log_loss"] == pytest.approx(rsna_log_loss(y, 1 / (1 + np.exp(-logits))), rel=1e-6)
    assert m["mean_subtype_auc"] == pytest.approx(1.0)


def test_real_anatomy_records_name_the_painted_subtype() -> None:
    from train.data.real_anatomy import real_anatomy_records

    ge = Path(__file__).resolve().parent.parent / "data" / "real_anatomy" / "dcm_qa_ct-GE"
    cols = real_anatomy_records(ge, "validation", 0, size=128, eval_variants=1, subtypes=True)
    assert SUBTYPE_COLUMN not in real_anatomy_records(ge, "validation", 0, size=128, eval_variants=1)
    positives = [i for i, y in enumerate(cols["label"]) if y == 1]
    assert positives and all(cols[SUBTYPE_COLUMN][i] == [cols["real_subtype"][i]] for i in positives)
    i = positives[0]
    batch = {k: [v[i]] for k, v in cols.items()}
    targets = SliceTransform(SUBTYPE_SETTINGS, synthetic_size=128)(batch)["labels"][0]
    assert targets == [1.0] + [float(s == cols["real_subtype"][i]) for s in SUBTYPES]
