"""python -m train --real_anatomy_dir: a 2-step run on the repository's real GE slices, alone and with phantoms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_train import NO_EVAL

from brain_ct.model import load_model
from train import main
from train.args import DataArguments

GE_DIR = Path(__file__).resolve().parent.parent / "data" / "real_anatomy" / "dcm_qa_ct-GE"
TINY = [
    "--model_size",
    "tiny",
    "--image_size",
    "64",
    "--synthetic_size",
    "128",
    "--per_device_train_batch_size",
    "4",
    "--per_device_eval_batch_size",
    "8",
    "--seed",
    "1",
    "--max_steps",
    "2",
    "--real_anatomy_dir",
    str(GE_DIR),
    "--real_anatomy_variants",
    "2",
]


@pytest.mark.slow
def test_two_step_run_with_real_anatomy_and_phantoms_writes_a_model(tmp_path: Path) -> None:
    out = tmp_path / "model"
    results = main([*TINY, "--synthetic_train", "8", "--mask_loss_weight", "0.5", "--output_dir", str(out)])
    assert (out / "model.safetensors").is_file()
    model, settings = load_model(str(out))
    assert settings.image_size == 64
    assert "real anatomy: 21 normal head-CT levels" in settings.trained_on
    val = results["validation"]
    # 7 held-out levels × 2 normals, positives on the 5 held-out levels with room, + split-off phantoms
    assert val["n_normal"] >= 14 and val["n_hemorrhage"] >= 10
    assert json.loads((out / "eval_results.json").read_text())["validation"]["n"] == val["n"]


@pytest.mark.slow
def test_real_anatomy_alone_trains(tmp_path: Path) -> None:
    out = tmp_path / "model"
    results = main([*TINY, *NO_EVAL, "--output_dir", str(out)])
    assert (out / "model.safetensors").is_file()
    assert results["validation"]["n"] == 24  # only the held-out real levels


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--real_anatomy_dir", "/nonexistent-real"], "--real_anatomy_dir"),
        (["--real_anatomy_dir", str(GE_DIR), "--real_anatomy_variants", "1"], "--real_anatomy_variants"),
        (["--real_anatomy_dir", str(GE_DIR), "--context_slices", "1"], "--context_slices"),
    ],
)
def test_real_anatomy_argument_errors_name_the_flag(extra: list[str], match: str) -> None:
    from transformers import HfArgumentParser

    with pytest.raises(ValueError, match=match):
        HfArgumentParser(DataArguments).parse_args_into_dataclasses(extra)
