"""Argument groups that several training commands take, each declared once.

``python -m train``, ``train.evaluate``, ``train.calibrate`` and ``train.ensemble`` read their arguments as
dataclasses through :class:`transformers.HfArgumentParser`, as Hugging Face's example scripts do. A flag two
commands share is a field of one group here, and each command's dataclass inherits the groups it takes:

* :class:`ModelToReadArguments` — ``--model``, the saved model (or ensemble) to read: evaluate, calibrate.
* :class:`ValidationDataArguments` — ``--validation_dir``, ``--synthetic_size``: all four.
* :class:`EvaluationDataArguments` — the test folder and the phantoms generated for validation and test:
  train, evaluate, calibrate.
* :class:`RealAnatomyEvalArguments` — ``--real_anatomy_dir`` and the held-out levels validation reads:
  train, calibrate, ensemble.
* :class:`ThresholdRuleArguments` — the threshold rule (:mod:`train.threshold`): all four;
  :class:`FixedThresholdArguments` adds the value of the ``fixed`` rule: train, ensemble.
* :class:`LoaderArguments` — batch size and dataloader workers of scoring: evaluate, calibrate.
* :class:`TemperatureScalingArguments` — ``--temperature_scaling``: train, calibrate.

A group holds no ``__post_init__`` of its own (a command inherits several): each has a ``check_*`` method
that the command's ``__post_init__`` calls, raising ``ValueError`` naming the flag to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar

from transformers import HfArgumentParser

#: ``--threshold_strategy`` values (the rules: :mod:`train.threshold`; ``auto`` is resolved by
#: :func:`train.threshold.select_threshold`).
THRESHOLD_STRATEGIES: tuple[str, ...] = ("auto", "real_fpr", "sensitivity", "youden", "fixed")

#: ``--threshold_strategy`` values of the commands that re-choose a model's threshold (evaluate,
#: calibrate): a fixed threshold is given there as such (``train.evaluate --threshold``).
RECHOSEN_STRATEGIES: tuple[str, ...] = tuple(s for s in THRESHOLD_STRATEGIES if s != "fixed")

#: Smallest side in pixels phantoms and real slices are rendered at.
MIN_SYNTHETIC_SIZE = 64

Arguments = TypeVar("Arguments")


def parse_command(types: type[Arguments], argv: Sequence[str], **parser_kwargs: str) -> Arguments:
    """One command's arguments dataclass from ``argv``, or from one JSON file of them (``cmd args.json``).

    Raises:
        ValueError: a check of the dataclass failed (the message names the flag).
        SystemExit: argparse's own usage errors (exit status 2), and ``--help``.
    """
    parser = HfArgumentParser(types, **parser_kwargs)
    if len(argv) == 1 and argv[0].endswith(".json"):
        (args,) = parser.parse_json_file(argv[0])
    else:
        (args,) = parser.parse_args_into_dataclasses(args=list(argv))
    return args


def check_folder(flag: str, value: str | None) -> None:
    """Refuse a folder flag whose value is not a folder."""
    if value is not None and not Path(value).expanduser().is_dir():
        raise ValueError(f"{flag} {value!r} is not a folder")


def check_at_least(flag: str, value: float, low: float, sign: str = ">=") -> None:
    """Refuse a value below ``low``; the message reads "``flag`` must be ``sign`` ``low``"."""
    if value < low:
        raise ValueError(f"{flag} must be {sign} {low}; got {value}")


@dataclass
class ModelToReadArguments:
    """The saved model a command reads."""

    model: str = field(
        kw_only=True,
        metadata={
            "help": "Model folder or Hub id, as written by python -m train. python -m train.evaluate also "
            "takes an ensemble's (ensemble.json, as written by python -m train.ensemble): then each member "
            "is reported too; python -m train.calibrate refuses one."
        },
    )


@dataclass
class ValidationDataArguments:
    """The labelled validation folder, and the side slices are rendered at."""

    validation_dir: str | None = field(
        default=None,
        metadata={
            "help": "Labelled validation image folder in python -m train's layout (normal/ and hemorrhage/ "
            "subfolders of DICOM/PNG/JPG files; a subtype model: subtype folders and/or metadata.jsonl, see "
            "python -m train --labels); its files count as real anatomy. python -m train: without one, a "
            "stratified seeded split of the training data (--validation_split); the other commands choose "
            "the threshold on it."
        },
    )
    synthetic_size: int = field(
        default=256,
        metadata={"help": "Side in pixels of generated phantoms and of rendered real-anatomy slices."},
    )

    def check_validation_data(self) -> None:
        check_folder("--validation_dir", self.validation_dir)
        if self.synthetic_size < MIN_SYNTHETIC_SIZE:
            raise ValueError(
                f"--synthetic_size must be >= {MIN_SYNTHETIC_SIZE} pixels; got {self.synthetic_size}"
            )


@dataclass
class EvaluationDataArguments(ValidationDataArguments):
    """Test images, and phantoms generated on the fly for validation and test."""

    test_dir: str | None = field(
        default=None,
        metadata={
            "help": "Labelled test image folder (the layout of --validation_dir): the final test metrics."
        },
    )
    synthetic_validation: int = field(
        default=0, metadata={"help": "Phantom slices generated on the fly for validation."}
    )
    synthetic_test: int = field(
        default=0, metadata={"help": "Phantom slices generated on the fly for the test set."}
    )
    synthetic_8bit_fraction: float = field(
        default=0.5,
        metadata={
            "help": "Fraction of phantom slices fed as 8-bit internet-style renderings instead of "
            "DICOM HU (chosen per index, deterministically)."
        },
    )
    synthetic_seed: int = field(
        default=0,
        metadata={
            "help": "Seed of the phantom generator (train/validation/test never overlap; the same seed gives "
            "the same phantoms in every command)."
        },
    )

    def check_evaluation_data(self) -> None:
        self.check_validation_data()
        check_folder("--test_dir", self.test_dir)
        for flag, value in (
            ("--synthetic_validation", self.synthetic_validation),
            ("--synthetic_test", self.synthetic_test),
        ):
            check_at_least(flag, value, 0)
        if not 0.0 <= self.synthetic_8bit_fraction <= 1.0:
            raise ValueError(
                f"--synthetic_8bit_fraction must be in [0, 1]; got {self.synthetic_8bit_fraction}"
            )


@dataclass
class RealAnatomyEvalArguments:
    """Real normal head CTs whose held-out levels (normals and painted lesions) join validation."""

    real_anatomy_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of real NORMAL head-CT DICOMs (e.g. data/real_anatomy/dcm_qa_ct-GE). Whole levels "
            "are held out (--real_anatomy_holdout); their normals and painted lesions join the validation "
            "data as domain 'real'. python -m train also trains on the other levels: each yields "
            "--real_anatomy_variants examples, half normal and half with a lesion painted in, deformed and "
            "re-scanned afresh every epoch, fed as DICOM or 8-bit figure (--synthetic_8bit_fraction); alone "
            "or mixed with --synthetic_train, --train_dir or --dicom_dir."
        },
    )
    real_anatomy_holdout: int = field(
        default=7,
        metadata={
            "help": "Real levels held out per series (never trained on), spread from skull base to vertex. "
            "Reading a trained model's validation (calibrate, ensemble), give the value it was trained "
            "with, or the threshold is chosen on levels it trained on."
        },
    )
    real_anatomy_eval_variants: int = field(
        default=2,
        metadata={
            "help": "Normals and as many painted lesions per held-out real level in validation (and test), "
            "DICOM and 8-bit alternately."
        },
    )

    def check_real_anatomy_eval(self) -> None:
        check_folder("--real_anatomy_dir", self.real_anatomy_dir)
        check_at_least("--real_anatomy_holdout", self.real_anatomy_holdout, 0, ">=")
        check_at_least("--real_anatomy_eval_variants", self.real_anatomy_eval_variants, 1, "≥")


@dataclass
class ThresholdRuleArguments:
    """How a decision threshold is chosen on validation scores (the rules: :mod:`train.threshold`)."""

    #: The rules this command takes (the commands that re-choose a saved model's threshold: no ``fixed``).
    threshold_strategies: ClassVar[tuple[str, ...]] = THRESHOLD_STRATEGIES

    threshold_strategy: str = field(
        default="auto",
        metadata={
            "aliases": ["--threshold_rule"],
            "help": f"How the decision threshold is chosen on validation: {', '.join(THRESHOLD_STRATEGIES)} "
            "(real_fpr: the most sensitive threshold whose false-positive rate on the validation split's "
            "REAL normal slices is <= --max_real_fpr; sensitivity: the highest threshold reaching "
            "--threshold_sensitivity; youden: max TPR-FPR; fixed: --threshold, python -m train and "
            "train.ensemble only; auto: real_fpr when the validation split has real normal slices, else "
            "sensitivity). The rule is recorded in config.json (brain_ct_threshold_rule) or ensemble.json, "
            "and in the card.",
        },
    )
    max_real_fpr: float = field(
        default=0.10,
        metadata={
            "help": "--threshold_strategy real_fpr: the highest false-positive rate allowed on the "
            "validation split's real normal slices."
        },
    )
    threshold_sensitivity: float = field(
        default=0.95, metadata={"help": "Target sensitivity for --threshold_strategy sensitivity."}
    )

    def check_threshold_rule(self) -> None:
        strategy, allowed = self.threshold_strategy, self.threshold_strategies
        if strategy not in allowed:
            known = "is not taken here" if strategy in THRESHOLD_STRATEGIES else "is unknown"
            raise ValueError(f"--threshold_strategy {strategy!r} {known}; choose one of {', '.join(allowed)}")
        if not 0.0 < self.threshold_sensitivity <= 1.0:
            raise ValueError(f"--threshold_sensitivity must be in (0, 1]; got {self.threshold_sensitivity}")
        if not 0.0 <= self.max_real_fpr <= 1.0:
            raise ValueError(f"--max_real_fpr must be in [0, 1]; got {self.max_real_fpr}")


@dataclass
class FixedThresholdArguments(ThresholdRuleArguments):
    """The threshold rules, with the value of the ``fixed`` one."""

    threshold: float = field(default=0.5, metadata={"help": "Threshold for --threshold_strategy fixed."})

    def check_threshold_rule(self) -> None:
        super().check_threshold_rule()
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"--threshold must be in [0, 1]; got {self.threshold}")


@dataclass
class LoaderArguments:
    """How slices are batched when a model scores them."""

    batch_size: int = field(default=64, metadata={"help": "Slices per forward pass."})
    num_workers: int = field(
        default=0,
        metadata={
            "help": "Dataloader worker processes (a single model; an ensemble reads its slices in this process)."
        },
    )


@dataclass
class TemperatureScalingArguments:
    """Whether a temperature is fitted on validation and folded into the classifier."""

    temperature_scaling: bool = field(
        default=True,
        metadata={
            "help": "Fit a temperature on the validation split and fold it into the classifier's weights "
            "when it lowers the validation NLL (--no_temperature_scaling: off; python -m train.calibrate "
            "then only re-chooses the threshold, the weights unchanged)."
        },
    )
