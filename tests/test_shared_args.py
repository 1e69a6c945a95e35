"""train.shared_args: a flag several commands take is declared once, and every command that takes it reads it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from train import calibrate, ensemble, evaluate
from train.__main__ import parse_args as parse_train_args
from train.args import BrainCTTrainingArguments, DataArguments, ModelArguments
from train.shared_args import (
    EvaluationDataArguments,
    FixedThresholdArguments,
    LoaderArguments,
    ModelToReadArguments,
    RealAnatomyEvalArguments,
    TemperatureScalingArguments,
    ThresholdRuleArguments,
    ValidationDataArguments,
)

#: Each command's argument dataclasses.
COMMANDS: dict[str, tuple[type, ...]] = {
    "train": (ModelArguments, DataArguments, BrainCTTrainingArguments),
    "train.evaluate": (evaluate.EvaluateArguments,),
    "train.calibrate": (calibrate.CalibrateArguments,),
    "train.ensemble": (ensemble.EnsembleArguments,),
}

#: The shared groups and the commands that take each.
GROUPS: dict[type, set[str]] = {
    ModelToReadArguments: {"train.evaluate", "train.calibrate"},
    ValidationDataArguments: {"train", "train.evaluate", "train.calibrate", "train.ensemble"},
    EvaluationDataArguments: {"train", "train.evaluate", "train.calibrate"},
    RealAnatomyEvalArguments: {"train", "train.calibrate", "train.ensemble"},
    ThresholdRuleArguments: {"train", "train.evaluate", "train.calibrate", "train.ensemble"},
    FixedThresholdArguments: {"train", "train.ensemble"},
    LoaderArguments: {"train.evaluate", "train.calibrate"},
    TemperatureScalingArguments: {"train", "train.calibrate"},
}

#: Flags that two commands spell alike but that mean different things, so each declares its own.
DIFFERENT_MEANINGS = {
    "output_dir": "what is written differs: a model, evaluation results, a calibrated model, an ensemble",
    "threshold": "train.evaluate's replaces the model's threshold (default none); elsewhere the fixed rule's value",
    "batch_size": "train.ensemble's is one forward pass of every member (default 16)",
    "trained_on": "train derives its default from the data flags, train.ensemble from the members' cards",
    "hub_private": "train's sets TrainingArguments' hub_private_repo, whose other Hub flags it inherits",
}


def _own_fields(cls: type) -> set[str]:
    """The dataclass fields ``cls`` itself declares (not inherited ones; no class variables)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return names & set(vars(cls).get("__annotations__", {}))


def _declarations() -> dict[str, set[str]]:
    """Field name → the project classes (``train.*``) declaring it, over every command's dataclasses."""
    out: dict[str, set[str]] = {}
    for types in COMMANDS.values():
        for cls in types:
            for base in cls.__mro__:
                if dataclasses.is_dataclass(base) and base.__module__.startswith("train."):
                    for name in _own_fields(base):
                        out.setdefault(name, set()).add(f"{base.__module__}.{base.__qualname__}")
    return out


def test_each_flag_is_declared_in_one_dataclass() -> None:
    twice = {name: sorted(owners) for name, owners in _declarations().items() if len(owners) > 1}
    assert set(twice) == set(DIFFERENT_MEANINGS), twice


def test_the_shared_groups_declare_the_flags_the_commands_used_to_repeat() -> None:
    owners = _declarations()
    for name in (
        "real_anatomy_eval_variants",
        "real_anatomy_dir",
        "synthetic_test",
        "synthetic_seed",
        "validation_dir",
        "threshold_strategy",
        "max_real_fpr",
    ):
        assert len(owners[name]) == 1 and next(iter(owners[name])).startswith("train.shared_args."), name


@pytest.mark.parametrize("group", list(GROUPS), ids=lambda g: g.__name__)
def test_the_commands_that_take_a_group_are_the_expected_ones(group: type) -> None:
    taking = {name for name, types in COMMANDS.items() if any(issubclass(cls, group) for cls in types)}
    assert taking == GROUPS[group]


def _argv_and_values(group: type, tmp_path: Path) -> tuple[list[str], dict[str, Any]]:
    """A command line giving every flag of ``group`` a value other than its default, and those values."""
    values: dict[str, Any] = {}
    argv: list[str] = []
    for f in dataclasses.fields(group):
        if f.name.endswith("_dir"):
            value: Any = str(tmp_path / f.name)
            Path(value).mkdir(exist_ok=True)
        elif f.name == "threshold_strategy":
            value = "youden"
        elif f.type in ("bool", bool):
            assert f.default is True
            argv.append(f"--no_{f.name}")
            values[f.name] = False
            continue
        elif f.name == "model":
            value = "someone/brain-ct"
        elif f.type in ("int", int):
            value = f.default + 3 if f.default >= 64 else f.default + 1
        elif f.type in ("float", float):
            value = round(f.default * 0.5, 3) or 0.25
        else:
            raise AssertionError(f"no test value for {group.__name__}.{f.name} ({f.type})")
        argv += [f"--{f.name}", str(value)]
        values[f.name] = value
    return argv, values


def _parsers(tmp_path: Path) -> dict[str, Callable[[Sequence[str]], Any]]:
    """Each command's parser, given the flags it needs besides the shared ones."""
    (tmp_path / "out").mkdir()

    def train(argv: Sequence[str]) -> Any:
        _, data, training = parse_train_args(["--synthetic_train", "4", "--output_dir", "unused", *argv])
        return _Merged(data, training)

    def calibrate_(argv: Sequence[str]) -> Any:
        model = [] if "--model" in argv else ["--model", "someone/brain-ct"]
        return calibrate.parse_args([*model, "--output_dir", str(tmp_path / "cal"), *argv])

    def evaluate_(argv: Sequence[str]) -> Any:
        return evaluate.parse_args(
            ([] if "--model" in argv else ["--model", "someone/brain-ct"]) + list(argv)
        )

    def ensemble_(argv: Sequence[str]) -> Any:
        base = ["--members", "a/b", "c/d", "--output_dir", str(tmp_path / "ens")]
        if "--validation_dir" not in argv and "--real_anatomy_dir" not in argv:
            base += ["--real_anatomy_dir", str(tmp_path / "out")]
        return ensemble.parse_args([*base, *argv])

    return {
        "train": train,
        "train.evaluate": evaluate_,
        "train.calibrate": calibrate_,
        "train.ensemble": ensemble_,
    }


class _Merged:
    """``python -m train``'s data and training arguments read as one."""

    def __init__(self, *parts: object) -> None:
        self.parts = parts

    def __getattr__(self, name: str) -> Any:
        for part in self.parts:
            if hasattr(part, name):
                return getattr(part, name)
        raise AttributeError(name)


@pytest.mark.parametrize(
    ("group", "command"),
    [(group, command) for group, commands in GROUPS.items() for command in sorted(commands)],
    ids=lambda v: v.__name__ if isinstance(v, type) else v,
)
def test_every_command_that_takes_a_group_reads_its_flags(group: type, command: str, tmp_path: Path) -> None:
    argv, values = _argv_and_values(group, tmp_path)
    args = _parsers(tmp_path)[command](argv)
    assert {name: getattr(args, name) for name in values} == values


@pytest.mark.parametrize("parse", [evaluate.parse_args, calibrate.parse_args])
def test_the_commands_that_rechoose_a_threshold_refuse_the_fixed_rule(parse: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="--threshold_strategy 'fixed' is not taken here"):
        parse(["--model", "m", "--output_dir", "o", "--threshold_strategy", "fixed"])


def test_a_bad_shared_flag_is_named_by_every_command(tmp_path: Path) -> None:
    for parse in _parsers(tmp_path).values():
        with pytest.raises(ValueError, match="--max_real_fpr must be in"):
            parse(["--max_real_fpr", "1.5"])
        with pytest.raises(ValueError, match="--synthetic_size must be >= 64 pixels"):
            parse(["--synthetic_size", "32"])


def test_evaluate_exits_2_on_a_bad_flag_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate.main(["--model", "m", "--synthetic_test", "2", "--max_real_fpr", "2"]) == 2
    assert "--max_real_fpr must be in [0, 1]" in capsys.readouterr().err
