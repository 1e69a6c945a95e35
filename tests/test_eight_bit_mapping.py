"""The 8-bit mapping end to end: ``python -m train --eight_bit_mapping`` writes it into the model folder,
``--preset adapt`` keeps the base model's, and ``benchmarks.eight_bit_mapping`` compares the two."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_models import copy_model_with_config, make_tiny_model
from helpers_train import NO_EVAL, write_tiny_folder

from brain_ct.model import DEMO_MODEL_DIR, load_model
from brain_ct.preprocess import EightBitMapping
from train import main
from train.args import DataArguments
from train.presets import preset_defaults

TINY_RUN = [
    "--model_size", "tiny",
    "--image_size", "64",
    "--per_device_train_batch_size", "4",
    "--max_steps", "1",
    "--no_temperature_scaling",
    "--seed", "1",
    *NO_EVAL,
]  # fmt: skip


@pytest.mark.parametrize("mapping", ["pseudo_hu", "repeat"])
def test_training_with_the_flag_writes_the_key(mapping: str, tmp_path: Path) -> None:
    data = write_tiny_folder(tmp_path / "data", n=8, size=96, dicom_every=2)
    out = tmp_path / "model"
    main([*TINY_RUN, "--train_dir", str(data), "--output_dir", str(out), "--eight_bit_mapping", mapping])
    config = json.loads((out / "config.json").read_text())
    assert config["brain_ct_8bit_mapping"] == mapping
    assert config["brain_ct_8bit_assumed_window"] == [40.0, 80.0]
    assert load_model(out)[1].eight_bit == EightBitMapping(mapping)
    card = (out / "README.md").read_text()
    assert ("mapped back to pseudo-HU" in card) == (mapping == "pseudo_hu")
    assert ("is repeated in every channel" in card) == (mapping == "repeat")


def test_new_runs_default_to_the_measured_winner_and_bad_values_name_the_flag(tmp_path: Path) -> None:
    data = write_tiny_folder(tmp_path / "data", n=4, size=64)
    # "repeat" measured better than "pseudo_hu" (benchmarks/NOTES.md, "The 8-bit mapping")
    assert DataArguments(train_dir=str(data)).eight_bit_mapping == "repeat"
    with pytest.raises(
        ValueError, match=r"--eight_bit_mapping 'grey' is unknown; choose one of repeat, pseudo_hu"
    ):
        DataArguments(train_dir=str(data), eight_bit_mapping="grey")


def test_adapt_keeps_the_base_models_mapping(tmp_path: Path) -> None:
    # the bundled demo has no key: it was trained with "repeat", and adapting it must not change that
    assert preset_defaults("adapt", str(DEMO_MODEL_DIR))["eight_bit_mapping"] == "repeat"
    tiny = make_tiny_model(tmp_path / "tiny")
    pseudo = copy_model_with_config(tiny, tmp_path / "pseudo", brain_ct_8bit_mapping="pseudo_hu")
    assert preset_defaults("adapt", str(pseudo))["eight_bit_mapping"] == "pseudo_hu"
    # the assumed window travels with the mode: a base reading figures as 35/90 renders is adapted so too
    odd = copy_model_with_config(
        tiny, tmp_path / "odd", brain_ct_8bit_mapping="pseudo_hu", brain_ct_8bit_assumed_window=[35.0, 90.0]
    )
    defaults = preset_defaults("adapt", str(odd))
    assert defaults["eight_bit_assumed_window"] == "35,90"
    data = write_tiny_folder(tmp_path / "data", n=4, size=64)
    args = DataArguments(
        train_dir=str(data),
        eight_bit_mapping="pseudo_hu",
        eight_bit_assumed_window=defaults["eight_bit_assumed_window"],
    )
    assert args.eight_bit == EightBitMapping("pseudo_hu", (35.0, 90.0))
    with pytest.raises(ValueError, match="--eight_bit_assumed_window '40,0'.*width"):
        DataArguments(train_dir=str(data), eight_bit_mapping="pseudo_hu", eight_bit_assumed_window="40,0")


def test_benchmark_runs_differ_only_in_the_mapping(tmp_path: Path) -> None:
    from benchmarks.eight_bit_mapping import MAPPINGS, train_argv

    a, b = (train_argv(m, tmp_path / m) for m in MAPPINGS)
    differ = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    assert differ == [("repeat", "pseudo_hu"), (str(tmp_path / "repeat"), str(tmp_path / "pseudo_hu"))]
    assert a[a.index("--seed") + 1] == "0" and "--real_anatomy_dir" in a


@pytest.mark.slow
def test_benchmark_smoke_reads_every_model_on_every_set(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import eight_bit_mapping

    res = eight_bit_mapping.main(["--smoke"])
    assert len(res["models"]) == 4
    for row in res["models"].values():
        for name in eight_bit_mapping.SETS:
            m = row["sets"][name]
            assert m["n_normal"] > 0 and m["n_lesion"] > 0, name
            assert m["roc_auc"] is not None and 0.0 <= m["roc_auc"] <= 1.0
    modes = [row["eight_bit_mapping"] for row in res["models"].values()]
    assert modes == ["repeat", "pseudo_hu", "repeat", "pseudo_hu"]
    rows = list(res["models"].values())
    # the mapping never touches DICOM: the same weights read the DICOM sets identically
    assert rows[0]["sets"]["phantom_dicom"] == rows[1]["sets"]["phantom_dicom"]
    assert rows[0]["sets"]["real_dicom"] == rows[1]["sets"]["real_dicom"]
    assert "| fine-tuned, pseudo_hu |" in capsys.readouterr().out
