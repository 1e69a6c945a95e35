"""The model folder contract's two label sets: binary models keep loading, subtype models round-trip,
mixed or unknown label sets are refused (brain_ct.model, issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_models import copy_model_with_config, make_tiny_model

from brain_ct import model as bm
from brain_ct.errors import ModelLoadError
from brain_ct.labels import BINARY_LABELS, MULTI_LABEL, SUBTYPE_LABELS, SUBTYPES


@pytest.fixture(scope="module")
def subtype_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "subtypes", labels=SUBTYPE_LABELS)


def _labels(names: list[str]) -> dict[str, object]:
    return {
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }


def test_binary_model_loads_unchanged(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "binary")
    assert json.loads((folder / "config.json").read_text()).get("problem_type") is None
    model, settings = bm.load_model(folder)
    assert settings.labels == BINARY_LABELS
    assert (settings.is_multi_label, settings.subtypes, settings.hemorrhage_index) == (False, (), 1)
    assert model.config.num_labels == 2


def test_subtype_model_round_trip(subtype_dir: Path) -> None:
    cfg = json.loads((subtype_dir / "config.json").read_text())
    assert cfg["problem_type"] == MULTI_LABEL
    assert cfg["id2label"] == {str(i): n for i, n in enumerate(SUBTYPE_LABELS)}
    model, settings = bm.load_model(subtype_dir)
    assert model.config.num_labels == 6
    assert settings.labels == SUBTYPE_LABELS
    assert settings.is_multi_label and settings.subtypes == SUBTYPES
    assert settings.hemorrhage_index == 0  # "any"


def test_subtype_labels_in_another_order_point_at_any(subtype_dir: Path, tmp_path: Path) -> None:
    order = ["subdural", "epidural", "any", "intraparenchymal", "intraventricular", "subarachnoid"]
    folder = copy_model_with_config(subtype_dir, tmp_path / "shuffled", **_labels(order))
    _, settings = bm.load_model(folder)
    assert settings.hemorrhage_index == 2
    assert settings.subtypes == SUBTYPES  # always reported in RSNA's order


def test_apply_settings_writes_problem_type_and_labels_both_ways() -> None:
    from transformers import ResNetConfig

    sub = bm.ModelSettings(windows=((40, 80),), image_size=64, threshold=0.3, labels=SUBTYPE_LABELS)
    config = bm.apply_settings_to_config(ResNetConfig(num_channels=1, num_labels=2), sub)
    assert config.problem_type == MULTI_LABEL and config.num_labels == 6
    assert bm.settings_from_config(config, "x").labels == SUBTYPE_LABELS
    # The same config turned back into a binary model drops the multi-label problem type.
    binary = bm.ModelSettings(windows=((40, 80),), image_size=64, threshold=0.3)
    config = bm.apply_settings_to_config(config, binary)
    assert config.problem_type is None and config.id2label == {0: "normal", 1: "hemorrhage"}
    assert bm.settings_from_config(config, "x").labels == BINARY_LABELS


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        # Mixed: binary and subtype names in one model.
        (
            _labels(["normal", "hemorrhage", "subdural"]),
            r"labels \{0: 'normal', 1: 'hemorrhage', 2: 'subdural'\}",
        ),
        (_labels(["any", "hemorrhage"]), r"labels \{0: 'any', 1: 'hemorrhage'\}"),
        # Unknown names, a subtype missing, a name twice.
        (
            _labels(["any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "chronic"]),
            "chronic",
        ),
        (
            _labels(["any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid"]),
            "subarachnoid",
        ),
        (
            {"id2label": {str(i): n for i, n in enumerate(["any", *SUBTYPES[:4], "any"])}},
            r"5: 'any'",
        ),
        # The subtype set without sigmoid outputs.
        ({"problem_type": None}, r"problem_type None.*multi_label_classification"),
        ({"problem_type": "single_label_classification"}, r"problem_type 'single_label_classification'"),
    ],
)
def test_bad_label_sets_are_refused(subtype_dir: Path, tmp_path: Path, changes: dict, match: str) -> None:
    folder = copy_model_with_config(subtype_dir, tmp_path / "bad", **changes)
    with pytest.raises(ModelLoadError, match=match) as info:
        bm.load_model(folder)
    if "problem_type" not in changes:
        # The message names both accepted sets.
        assert "'normal'" in str(info.value) and "'subdural'" in str(info.value)


def test_binary_labels_with_multi_label_problem_type_are_refused(tmp_path: Path) -> None:
    folder = copy_model_with_config(
        make_tiny_model(tmp_path / "b"), tmp_path / "bad", problem_type=MULTI_LABEL
    )
    with pytest.raises(ModelLoadError, match=r"binary labels.*two-class softmax"):
        bm.load_model(folder)


def test_settings_refuse_unknown_labels() -> None:
    with pytest.raises(ValueError, match=r"labels must be"):
        bm.ModelSettings(windows=((40, 80),), image_size=64, threshold=0.5, labels=("cat", "dog"))
