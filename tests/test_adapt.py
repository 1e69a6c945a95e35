"""``python -m train --preset adapt``: its defaults (taken from the base model), explicit flags winning, the
scan-time check that names every refused file, and a short adapt run from a tiny model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from helpers_dicom import ct_dataset, dicom_bytes
from helpers_models import make_tiny_model
from helpers_train import NO_EVAL, write_tiny_folder

from brain_ct.errors import InvalidInputError
from brain_ct.model import DEMO_MODEL_DIR
from train import main
from train.__main__ import parse_args
from train.data.image_folder import scan_imagefolder, usable_files
from train.presets import ADAPT_DEFAULTS, preset_defaults


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base model with settings unlike the demo's and the training defaults: 2 windows, 64 px."""
    return make_tiny_model(
        tmp_path_factory.mktemp("base") / "tiny", windows=((40, 80), (-600, 1500)), image_size=64, width=4
    )


def _add_bad_files(folder: Path) -> list[str]:
    """A text file named .png, an MR DICOM, an empty JPG and a PDF report in the class folders."""
    (folder / "normal" / "notes.png").write_text("not an image")
    mr = ct_dataset(np.full((64, 64), 1000, np.int16), Modality="MR")
    (folder / "hemorrhage" / "brain_mr.dcm").write_bytes(dicom_bytes(mr))
    (folder / "normal" / "empty.jpg").write_bytes(b"")
    (folder / "hemorrhage" / "report.pdf").write_bytes(b"%PDF-1.4\n")
    return ["normal/notes.png", "hemorrhage/brain_mr.dcm", "normal/empty.jpg", "hemorrhage/report.pdf"]


# ---------------------------------------------------------------------------------------------- preset


def test_adapt_preset_defaults_come_from_the_demo_model() -> None:
    model_args, data_args, training_args = parse_args(
        ["--preset", "adapt", "--train_dir", str(DEMO_MODEL_DIR)]
    )
    demo = json.loads((DEMO_MODEL_DIR / "config.json").read_text())
    assert Path(model_args.model_name_or_path).resolve() == DEMO_MODEL_DIR
    assert not model_args.from_scratch
    assert [list(w) for w in data_args.window_list] == demo["brain_ct_windows"]
    assert data_args.image_size == demo["brain_ct_image_size"] == 160
    assert data_args.mean_list == pytest.approx(demo["brain_ct_image_mean"])
    assert data_args.std_list == pytest.approx(demo["brain_ct_image_std"])
    assert training_args.stage1_epochs == 0.0  # no frozen stage
    assert training_args.num_train_epochs == ADAPT_DEFAULTS["stage2_epochs"] == 10.0
    assert training_args.learning_rate == 1e-4
    assert training_args.threshold_strategy == "real_fpr" and training_args.max_real_fpr == 0.1
    assert data_args.validation_split == 0.2 and training_args.per_device_train_batch_size == 16


def test_adapt_preset_follows_the_base_model_and_explicit_flags_win(tiny_base: Path) -> None:
    argv = ["--preset", "adapt", "--model_name_or_path", str(tiny_base), "--train_dir", str(tiny_base)]
    _, data_args, training_args = parse_args(argv)
    assert data_args.window_list == [(40.0, 80.0), (-600.0, 1500.0)] and data_args.image_size == 64
    _, data_args, training_args = parse_args(
        [
            *argv,
            "--learning_rate",
            "3e-4",
            "--stage2_epochs",
            "2",
            "--image_size",
            "96",
            "--threshold_strategy",
            "youden",
        ]
    )
    assert training_args.learning_rate == 3e-4 and training_args.num_train_epochs == 2.0
    assert data_args.image_size == 96 and training_args.threshold_strategy == "youden"
    assert training_args.stage1_epochs == 0.0  # the rest of the preset stays


def test_adapt_preset_in_a_json_argument_file(tiny_base: Path, tmp_path: Path) -> None:
    spec = {
        "preset": "adapt",
        "model_name_or_path": str(tiny_base),
        "train_dir": str(tiny_base),
        "learning_rate": 5e-5,
    }
    (tmp_path / "args.json").write_text(json.dumps(spec))
    _, data_args, training_args = parse_args([str(tmp_path / "args.json")])
    assert (
        data_args.image_size == 64
        and training_args.learning_rate == 5e-5
        and training_args.stage1_epochs == 0
    )


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--preset", "fast"], r"--preset 'fast' is unknown"),
        (["--preset", "adapt", "--model_size", "tiny"], r"--preset adapt fine-tunes an existing model"),
        (["--preset", "adapt", "--model_name_or_path", "./no/such/model"], r"--model_name_or_path"),
    ],
)
def test_adapt_preset_errors_name_the_flag(argv: list[str], match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        parse_args([*argv, "--train_dir", str(tmp_path)])


def test_preset_defaults_refuses_a_model_that_is_not_brain_ct(tmp_path: Path) -> None:
    from transformers import ResNetConfig

    labels = {"id2label": {0: "normal", 1: "hemorrhage"}, "label2id": {"normal": 0, "hemorrhage": 1}}
    ResNetConfig(**labels).save_pretrained(tmp_path / "plain")  # no brain_ct_* keys
    with pytest.raises(ValueError, match=r"--preset adapt: the base model .* lacks the config key"):
        preset_defaults("adapt", str(tmp_path / "plain"))


# ---------------------------------------------------------------------------------------------- file check


def test_refused_files_are_named_with_the_reason_and_the_rest_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_tiny_folder(tmp_path / "mine", n=6, size=96)
    bad = _add_bad_files(folder)
    with caplog.at_level(logging.WARNING, logger="train.data"):
        cols = scan_imagefolder(folder)
    assert len(cols["path"]) == 6 and not any(
        Path(p).name in {"notes.png", "brain_mr.dcm"} for p in cols["path"]
    )
    assert len(cols["label"]) == len(cols["mask_path"]) == 6
    message = caplog.text
    assert "4 of 10 files refused, 6 used" in message
    for name in bad:
        assert f"  - {name}: " in message, name
    assert "MR" in message and "empty" in message and ".pdf files are not read" in message


def test_nothing_usable_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "normal").mkdir()
    (tmp_path / "hemorrhage").mkdir()
    bad = _add_bad_files(tmp_path)
    with pytest.raises(InvalidInputError, match=r"none of its 4 files can be used") as info:
        scan_imagefolder(tmp_path)
    for name in bad:
        assert name in str(info.value)


def test_usable_files_filters_every_column_alike() -> None:
    def loader(path: str, allow_unverified: bool) -> None:
        if path.startswith("bad"):
            raise InvalidInputError(f"{path}: cannot be read")

    cols = {"path": ["a", "bad1", "b"], "label": [0, 1, 1], "mask_path": ["", "m", ""]}
    assert usable_files(cols, "test", loader=loader) == {
        "path": ["a", "b"],
        "label": [0, 1],
        "mask_path": ["", ""],
    }


# ---------------------------------------------------------------------------------------------- a run


@pytest.mark.slow
def test_adapt_run_from_a_tiny_model(
    tiny_base: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from safetensors.torch import load_file

    folder = write_tiny_folder(tmp_path / "mine", n=20, size=96)
    _add_bad_files(folder)
    out = tmp_path / "adapted"
    with caplog.at_level(logging.INFO):
        results = main(
            [
                "--preset", "adapt", "--model_name_or_path", str(tiny_base), "--train_dir", str(folder),
                "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "4", *NO_EVAL,
            ]
        )  # fmt: skip
    assert "4 of 24 files refused, 20 used" in caplog.text
    # the stratified 20 % validation split is reported: 4 of the 20 usable slices, 2 of each class
    assert "validation data: 4 slices (2 normal, 2 hemorrhage), a stratified 20% split" in caplog.text
    config = json.loads((out / "config.json").read_text())
    assert (
        config["brain_ct_windows"] == [[40.0, 80.0], [-600.0, 1500.0]] and config["brain_ct_image_size"] == 64
    )
    assert config["brain_ct_threshold_rule"]["strategy"] == "real_fpr"  # user files are real anatomy
    assert config["brain_ct_threshold_rule"]["n_real_negatives"] == 2
    assert "fine-tuned from" in config["brain_ct_trained_on"]
    assert results["validation"]["n"] == 4
    # fine-tuned, not re-initialised: two steps at 1e-4 leave the stem close to the base's, yet changed
    base = load_file(str(tiny_base / "model.safetensors"))
    new = load_file(str(out / "model.safetensors"))
    key = next(k for k in base if k.endswith("embedder.embedder.convolution.weight"))
    diff = (new[key] - base[key]).abs().max().item()
    assert 0 < diff < 0.05 * base[key].abs().max().item()
    card = (out / "README.md").read_text()
    assert "- preset: adapt" in card and "validation data: 4 slices" in card
