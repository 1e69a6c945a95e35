"""train.card: the model card is rendered from the saved settings, eval_results.json and a CardInfo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brain_ct import DISCLAIMER
from brain_ct.model import ModelSettings
from train.card import SYNTHETIC_WARNING, CardInfo, render_model_card, write_model_card

RULE = {"strategy": "real_fpr", "max_real_fpr": 0.1, "description": "at most 10% of real normals flagged"}

METRICS = {
    "n": 20,
    "auc": 0.91,
    "accuracy": 0.85,
    "sensitivity": 0.8,
    "specificity": 0.9,
    "f1": 0.84,
    "confusion_matrix": [[9, 1], [2, 8]],
}


def _settings(**changes: object) -> ModelSettings:
    values = {
        "windows": ((40.0, 80.0), (80.0, 200.0), (600.0, 2800.0)),
        "image_size": 96,
        "threshold": 0.4321,
        "trained_on": "image folder 'scans' (40 slices)",
        "threshold_rule": RULE,
        **changes,
    }
    return ModelSettings(**values)  # type: ignore[arg-type]


def _info(**changes: object) -> CardInfo:
    values = {
        "model_name": "tiny-ct",
        "synthetic": False,
        "base_model": None,
        "architecture": "ResNet (basic blocks), 3 input channels",
        "training": {"seed": 7},
        "command": "python -m train --model_size tiny",
        "plots": ("roc_test.png",),
        **changes,
    }
    return CardInfo(**values)  # type: ignore[arg-type]


def test_card_takes_preprocessing_and_threshold_from_the_settings() -> None:
    card = render_model_card(_settings(), {"test": METRICS}, _info())
    assert "- windows (center, width in HU): [[40.0, 80.0], [80.0, 200.0], [600.0, 2800.0]]" in card
    assert "- input size: 96 px" in card and "resized to 96×96" in card
    assert "- mean / std: [0.485, 0.456, 0.406] / [0.229, 0.224, 0.225]" in card
    assert "- slice context: none (one slice)" in card
    assert "`brain_ct_threshold` = 0.4321" in card and "at most 10% of real normals flagged" in card
    assert json.dumps(RULE) in card  # the recorded rule, as stored in config.json
    assert "image folder 'scans' (40 slices)." in card  # settings.trained_on
    assert "`brain_ct.preprocess.model_input`" in card


def test_card_takes_metrics_and_calibration_from_the_results() -> None:
    calibration = {
        "validation": {"n": 20, "ece": 0.05, "nll": 0.3, "brier": 0.1, "binning": "10 equal-width bins"}
    }
    card = render_model_card(_settings(), {"test": METRICS, "calibration": calibration}, _info())
    assert "| test | 20 | 0.910 | 0.850 | 0.800 | 0.900 | 0.840 | [[9, 1], [2, 8]] |" in card
    assert "- type: roc_auc\n      value: 0.91\n" in card  # Hub model-index from the test metrics
    assert "## Calibration" in card and "| validation | 20 | 0.050 | 0.300 | 0.100 |" in card
    assert "## Calibration" not in render_model_card(_settings(), {"test": METRICS}, _info())


def test_card_takes_the_rest_from_card_info() -> None:
    card = render_model_card(_settings(context_slices=1), {}, _info(calibration_plots=("rel.png",)))
    assert card.count("# tiny-ct") == 1 and DISCLAIMER in card
    assert "![roc_test.png](roc_test.png)" in card and "- seed: 7" in card
    assert "```bash\npython -m train --model_size tiny\n```" in card
    assert "none (random initialisation)" in card and "No evaluation was run." in card
    assert "- slice context: 1 slice(s) on each side stacked as channels" in card
    assert "- mean / std: [0.4" in card  # nine averaged ImageNet channels for a context model
    assert SYNTHETIC_WARNING not in card
    synthetic = render_model_card(_settings(), {}, _info(synthetic=True, base_model="microsoft/resnet-50"))
    assert SYNTHETIC_WARNING in synthetic and "base_model: microsoft/resnet-50" in synthetic


def test_card_without_a_recorded_rule_says_so() -> None:
    card = render_model_card(_settings(threshold_rule=None), {}, _info())
    assert "Chosen on the validation split: how it was chosen was not recorded." in card


def test_write_model_card_writes_readme(tmp_path: Path) -> None:
    path = write_model_card(tmp_path, _settings(), {"test": METRICS}, _info())
    assert path == tmp_path / "README.md"
    assert path.read_text(encoding="utf-8") == render_model_card(_settings(), {"test": METRICS}, _info())


@pytest.mark.parametrize("n_windows", [1, 3])
def test_save_preprocessor_takes_the_settings(tmp_path: Path, n_windows: int) -> None:
    from train.__main__ import save_preprocessor

    settings = _settings(windows=((40.0, 80.0),) * n_windows)
    save_preprocessor(tmp_path, settings)
    written = tmp_path / "preprocessor_config.json"
    if n_windows != 3:  # image processors speak RGB: nothing meaningful to write
        assert not written.exists()
        return
    config = json.loads(written.read_text())
    assert config["size"] == {"shortest_edge": 96}
    assert config["image_mean"] == list(settings.mean) and config["image_std"] == list(settings.std)


@pytest.mark.parametrize(
    ("training", "command", "smoke"),
    [
        ({"max steps": 20}, "python -m train --max_steps 20", True),
        ({"max steps": "—"}, "python -m train --model_size tiny --synthetic_train 64", True),
        ({}, "python -m train --model_size=tiny", True),
        ({}, "python -m train --max_steps=99", True),
        ({"max steps": 100}, "python -m train --max_steps 100", False),
        ({"max steps": "—"}, "python -m train --model_size demo", False),
        ({"max steps": "—"}, None, False),
    ],
)
def test_smoke_runs_are_recognised(training: dict, command: str | None, smoke: bool) -> None:
    from train.card import is_smoke_run

    assert is_smoke_run(training, command) is smoke


def test_a_smoke_run_card_says_its_numbers_mean_nothing() -> None:
    from train.card import SMOKE_WARNING

    chance = dict(METRICS, auc=0.52)
    smoke = render_model_card(_settings(), {"test": chance}, _info(training={"max steps": 20}))
    assert smoke.count(SMOKE_WARNING) == 2  # under the title and under the metrics
    assert "numbers mean nothing" in smoke and "chance" in smoke
    assert smoke.index(SMOKE_WARNING) < smoke.index("## Evaluation")
    real = render_model_card(
        _settings(), {"test": METRICS}, _info(training={"max steps": "—"}, command="python -m train")
    )
    assert SMOKE_WARNING not in real


def test_cards_record_no_absolute_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "models" / "brain-ct-demo"
    base.mkdir(parents=True)
    data = tmp_path / "adapt" / "mine"
    data.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    card = render_model_card(
        _settings(trained_on=f"image folder 'mine', fine-tuned from {base}"),
        {"test": METRICS},
        _info(
            base_model=str(base), command=f"python -m train --train_dir {data} --model_name_or_path {base}"
        ),
    )
    assert str(tmp_path) not in card
    assert "- base model: models/brain-ct-demo" in card
    assert "fine-tuned from models/brain-ct-demo." in card
    assert "--train_dir adapt/mine --model_name_or_path models/brain-ct-demo" in card
    assert "base_model:" not in card.split("---")[1]  # Hub metadata takes Hub ids only
    hub = render_model_card(_settings(), {"test": METRICS}, _info(base_model="microsoft/resnet-50"))
    assert "base_model: microsoft/resnet-50" in hub and "- base model: microsoft/resnet-50" in hub
    assert "/no/such/folder" in render_model_card(_settings(trained_on="from /no/such/folder"), {}, _info())
