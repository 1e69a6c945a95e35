"""brain_ct.model: model choice order, loading, the model folder contract and its validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers_models import copy_model_with_config, make_tiny_model

from brain_ct import model as bm
from brain_ct.errors import ModelLoadError


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


# ------------------------------------------------------------------------------ resolve_model_id
def test_resolve_explicit_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAIN_CT_MODEL", "env/model")
    assert bm.resolve_model_id("given/model") == "given/model"


def test_resolve_env_then_default_then_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default, demo = tmp_path / "resnet50", tmp_path / "demo"
    for folder in (default, demo):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    monkeypatch.setattr(bm, "DEFAULT_MODEL_DIR", default)
    monkeypatch.setattr(bm, "DEMO_MODEL_DIR", demo)
    monkeypatch.setenv("BRAIN_CT_MODEL", "env/model")
    assert bm.resolve_model_id(None) == "env/model"
    monkeypatch.delenv("BRAIN_CT_MODEL")
    assert bm.resolve_model_id("") == str(default)
    (default / "config.json").unlink()  # a slimmed copy without the ResNet-50: the small demo
    assert bm.resolve_model_id(None) == str(demo)


def test_resolve_without_demo_says_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BRAIN_CT_MODEL", raising=False)
    monkeypatch.setattr(bm, "DEFAULT_MODEL_DIR", tmp_path / "missing-default")
    monkeypatch.setattr(bm, "DEMO_MODEL_DIR", tmp_path / "missing")
    with pytest.raises(ModelLoadError, match=r"--model.*BRAIN_CT_MODEL.*python -m train"):
        bm.resolve_model_id(None)


# ------------------------------------------------------------------------------ load_model
def test_load_tiny_model_reads_settings(tiny_dir: Path) -> None:
    model, settings = bm.load_model(tiny_dir)
    assert type(model).__name__ == "ResNetForImageClassification"
    assert not model.training
    assert settings.windows == ((40.0, 80.0), (80.0, 200.0), (600.0, 2800.0))
    assert settings.image_size == 64
    assert settings.threshold == 0.5
    assert settings.mean == pytest.approx((0.485, 0.456, 0.406))
    assert settings.context_slices == 0
    assert settings.model_id == str(tiny_dir)
    assert settings.is_demo is False
    assert settings.hemorrhage_index == 1
    # Inference never trains: no parameter collects gradients during Grad-CAM.
    assert not any(p.requires_grad for p in model.parameters())


def test_is_demo_from_trained_on_and_from_demo_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    synthetic = make_tiny_model(tmp_path / "synthetic", trained_on="synthetic phantoms")
    _, settings = bm.load_model(synthetic)
    assert settings.is_demo is True
    assert settings.trained_on == "synthetic phantoms"
    plain = make_tiny_model(tmp_path / "plain")
    monkeypatch.setattr(bm, "DEFAULT_MODEL_DIR", tmp_path / "no-resnet50")
    monkeypatch.setattr(bm, "DEMO_MODEL_DIR", plain.resolve())
    monkeypatch.delenv("BRAIN_CT_MODEL", raising=False)
    _, demo_settings = bm.load_model(None)
    assert demo_settings.is_demo is True
    assert demo_settings.model_id == str(plain.resolve())


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (
            {"id2label": {"0": "cat", "1": "dog"}, "label2id": {"cat": 0, "dog": 1}},
            r"labels.*normal.*hemorrhage",
        ),
        (
            {
                "id2label": {"0": "normal", "1": "hemorrhage", "2": "other"},
                "label2id": {"normal": 0, "hemorrhage": 1, "other": 2},
            },
            r"exactly two",
        ),
        ({"brain_ct_windows": None}, r"lacks the config key\(s\) brain_ct_windows"),
        (
            {"brain_ct_threshold": None, "brain_ct_image_size": None},
            r"brain_ct_image_size, brain_ct_threshold",
        ),
        ({"brain_ct_windows": [[40, 80], [80, 200]]}, r"takes 3 input channels.*describe 2"),
        ({"brain_ct_windows": [[40, 0], [80, 200], [600, 2800]]}, r"width > 0"),
        ({"brain_ct_threshold": 1.5}, r"brain_ct_threshold must be a number in \(0, 1\)"),
        ({"brain_ct_image_size": 8}, r"brain_ct_image_size must be an integer"),
        ({"brain_ct_image_mean": [0.5, 0.5]}, r"one value per input channel"),
        ({"brain_ct_context_slices": 1}, r"takes 3 input channels.*describe 9"),
        ({"architectures": ["ResNetBackbone"]}, r"ResNetForImageClassification is required"),
        ({"brain_ct_temperature": 0}, r"brain_ct_temperature must be a number > 0"),
        ({"brain_ct_temperature": "2"}, r"brain_ct_temperature must be a number > 0"),
        ({"brain_ct_threshold_rule": "real_fpr"}, r"brain_ct_threshold_rule must be a JSON object"),
        (
            {"brain_ct_8bit_mapping": "pseudo-hu"},
            r"brain_ct_8bit_mapping.*'pseudo-hu'.*did you mean 'pseudo_hu'",
        ),
        ({"brain_ct_8bit_mapping": 3}, r"brain_ct_8bit_mapping.*allowed: repeat, pseudo_hu"),
        ({"brain_ct_8bit_assumed_window": [40, 0]}, r"brain_ct_8bit_assumed_window is \[center, width\]"),
        ({"brain_ct_8bit_assumed_window": "brain"}, r"brain_ct_8bit_assumed_window must be a non-empty list"),
    ],
)
def test_contract_violations_are_refused(tiny_dir: Path, tmp_path: Path, changes: dict, match: str) -> None:
    bad = copy_model_with_config(tiny_dir, tmp_path / "bad", **changes)
    with pytest.raises(ModelLoadError, match=match) as info:
        bm.load_model(bad)
    assert str(bad) in str(info.value)  # the message names the model


def test_non_resnet_model_type_is_refused(tmp_path: Path) -> None:
    from transformers import ViTConfig

    cfg = ViTConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8, image_size=32
    )
    cfg.save_pretrained(tmp_path / "vit")
    with pytest.raises(ModelLoadError, match=r"'vit' model.*ResNetForImageClassification"):
        bm.load_model(tmp_path / "vit")


def test_only_safetensors_weights_are_loaded(tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickle"
    shutil.copytree(tiny_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded: pickles can run code")
    with pytest.raises(ModelLoadError, match=r"safetensors"):
        bm.load_model(folder)


def test_missing_folder_and_file_and_empty_folder(tmp_path: Path, tiny_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"does not exist"):
        bm.load_model(str(tmp_path / "nope") + "/")
    with pytest.raises(ModelLoadError, match=r"is a file"):
        bm.load_model(tiny_dir / "config.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config.json"):
        bm.load_model(tmp_path / "empty")


def test_unknown_hub_id_offline_names_the_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelLoadError, match=r"'someone/not-a-model'"):
        bm.load_model("someone/not-a-model")


def test_hub_id_loads_offline_from_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_dir: Path
) -> None:
    import huggingface_hub.constants as hub_constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--someone--tiny-ct"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in tiny_dir.iterdir():
        shutil.copy(f, snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    model, settings = bm.load_model("someone/tiny-ct")
    assert settings.model_id == "someone/tiny-ct"
    assert settings.image_size == 64
    _, pinned = bm.load_model("someone/tiny-ct", revision=commit)
    assert pinned.revision == commit


# ------------------------------------------------------------------------------ settings round trip
def test_apply_settings_round_trip() -> None:
    from transformers import ResNetConfig

    settings = bm.ModelSettings(
        windows=((40, 80),), image_size=96, threshold=0.3, context_slices=1, trained_on="synthetic phantoms"
    )
    config = bm.apply_settings_to_config(ResNetConfig(num_channels=3, num_labels=2), settings)
    back = bm.settings_from_config(config, "x")
    assert back.windows == ((40.0, 80.0),)
    assert (back.image_size, back.threshold, back.context_slices) == (96, 0.3, 1)
    assert back.mean == settings.mean and len(back.mean) == 3
    assert back.is_demo is True
    assert config.id2label == {0: "normal", 1: "hemorrhage"}


def test_threshold_rule_and_temperature_round_trip_and_old_configs_load(
    tiny_dir: Path, tmp_path: Path
) -> None:
    from transformers import ResNetConfig

    rule = {"strategy": "real_fpr", "max_real_fpr": 0.1, "n_real_negatives": 14}
    settings = bm.ModelSettings(
        windows=((40, 80),), image_size=96, threshold=0.3, threshold_rule=rule, temperature=1.7
    )
    config = bm.apply_settings_to_config(ResNetConfig(num_channels=1, num_labels=2), settings)
    assert config.brain_ct_threshold_rule == rule and config.brain_ct_temperature == 1.7
    back = bm.settings_from_config(config, "x")
    assert back.threshold_rule == rule and back.temperature == 1.7
    assert hash(back)  # the dict-valued field stays out of the frozen dataclass's hash
    # a config written before these keys existed (like the first demo models) loads with the defaults
    old = copy_model_with_config(
        tiny_dir, tmp_path / "old", brain_ct_threshold_rule=None, brain_ct_temperature=None
    )
    assert "brain_ct_temperature" not in json.loads((old / "config.json").read_text())
    _, loaded = bm.load_model(old)
    assert loaded.threshold_rule is None and loaded.temperature == 1.0


def test_8bit_mapping_round_trip_and_a_missing_key_is_repeat(tiny_dir: Path, tmp_path: Path) -> None:
    from transformers import ResNetConfig

    from brain_ct.preprocess import REPEAT, EightBitMapping

    pseudo = EightBitMapping("pseudo_hu", (35, 90))
    settings = bm.ModelSettings(windows=((40, 80),), image_size=96, threshold=0.3, eight_bit=pseudo)
    config = bm.apply_settings_to_config(ResNetConfig(num_channels=1, num_labels=2), settings)
    assert config.brain_ct_8bit_mapping == "pseudo_hu"
    assert config.brain_ct_8bit_assumed_window == [35.0, 90.0]
    saved = tmp_path / "saved"
    config.save_pretrained(saved)  # through config.json and back
    from transformers import AutoConfig

    assert bm.settings_from_config(AutoConfig.from_pretrained(saved), "x").eight_bit == pseudo
    # a mode name alone takes the default assumed window (the brain window)
    named = bm.ModelSettings(windows=((40, 80),), image_size=96, threshold=0.3, eight_bit="pseudo_hu")
    assert named.eight_bit == EightBitMapping("pseudo_hu", (40.0, 80.0))
    # every model saved before the key existed reads 8-bit images as it always did
    old = copy_model_with_config(
        tiny_dir, tmp_path / "old", brain_ct_8bit_mapping=None, brain_ct_8bit_assumed_window=None
    )
    assert "brain_ct_8bit_mapping" not in json.loads((old / "config.json").read_text())
    assert bm.load_model(old)[1].eight_bit == REPEAT
    # the bundled demo keeps "repeat" (benchmarks/NOTES.md), now written out by its later runs
    demo_config = json.loads((bm.DEMO_MODEL_DIR / "config.json").read_text())
    assert demo_config.get("brain_ct_8bit_mapping", "repeat") == "repeat"
    # a mapping key without the window takes the default window
    only_mode = copy_model_with_config(
        tiny_dir, tmp_path / "mode", brain_ct_8bit_mapping="pseudo_hu", brain_ct_8bit_assumed_window=None
    )
    assert bm.load_model(only_mode)[1].eight_bit == EightBitMapping("pseudo_hu")
    with pytest.raises(ValueError, match=r"unknown 8-bit mapping 'grey'"):
        bm.ModelSettings(windows=((40, 80),), image_size=96, threshold=0.3, eight_bit="grey")


def test_apply_settings_refuses_channel_mismatch() -> None:
    from transformers import ResNetConfig

    settings = bm.ModelSettings(windows=((40, 80), (80, 200)), image_size=64, threshold=0.5)
    with pytest.raises(ModelLoadError, match=r"takes 3 input channels"):
        bm.apply_settings_to_config(ResNetConfig(num_channels=3, num_labels=2), settings)


def test_shown_model_id_hides_the_server_path_of_project_folders(tmp_path: Path) -> None:
    assert bm.shown_model_id(str(bm.DEMO_MODEL_DIR)) == "models/brain-ct-demo"
    assert bm.shown_model_id("someone/tiny-ct") == "someone/tiny-ct"  # a Hub id as given
    assert bm.shown_model_id(str(tmp_path)) == str(tmp_path)  # a user's own folder as given
    _, settings = bm.load_model(str(bm.DEMO_MODEL_DIR))
    assert settings.model_id == "models/brain-ct-demo" and settings.is_demo


def test_bundled_models_name_the_real_head_in_their_demo_note(tmp_path: Path) -> None:
    from brain_ct.wording import BUNDLED_NOTE, DEMO_NOTE

    assert bm.is_bundled("models/brain-ct-demo") and bm.is_bundled(str(bm.DEMO_MODEL_DIR))
    assert not bm.is_bundled("models") and not bm.is_bundled("someone/model") and not bm.is_bundled("")
    _, demo = bm.load_model(bm.DEMO_MODEL_DIR)
    assert demo.demo_note == BUNDLED_NOTE
    # Trained on phantoms alone, or outside models/: the plain note (it never claims a real head it lacks).
    _, synthetic = bm.load_model(make_tiny_model(tmp_path / "s", trained_on="synthetic phantoms"))
    assert synthetic.is_demo and synthetic.demo_note == DEMO_NOTE
    _, elsewhere = bm.load_model(
        make_tiny_model(tmp_path / "r", trained_on="synthetic phantoms; real anatomy: x")
    )
    assert elsewhere.demo_note == DEMO_NOTE
