"""``python -m train --folds K``: K fold models and the ensemble over them.

Example::

    python -m train --model_size demo --synthetic_train 4000 --synthetic_validation 400 --folds 5 \\
        --output_dir out/ich-folds

The run's data are built as for one model (:func:`train.data.build.build_splits`): training records, a
validation split and an optional test split. The validation split is held out from every fold; the
training records are cut into K folds by :func:`train.data.sampling.fold_splits` (stratified by label and seeded;
the slices of one DICOM series or NIfTI volume, and the variants of one real level, stay in one fold).
Fold model *i* is an ordinary ``python -m train`` run (:func:`train.pipeline.train_fold`, handed a :class:`Fold`)
on the other K−1 folds, with fold *i* as its validation split — its best checkpoint, calibration, threshold
and validation metrics come from fold *i* — saved to ``<output_dir>/fold-<i>`` as a normal model folder
(config, weights, card, ``eval_results.json``; test metrics too when there is a test split).

The ensemble over the K folders is then written to ``<output_dir>`` by :func:`train.ensemble.write_ensemble`
(members ``fold-0`` … relative to it, so the folder moves and uploads as one): P(hemorrhage) is the folds'
mean, and its own threshold is chosen on the common validation split by the run's
``--threshold_strategy`` rule; ``eval_results.json`` holds each fold's and the ensemble's metrics on
validation (and test). ``--push_to_hub`` uploads that folder, the fold folders inside it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brain_ct.errors import InvalidInputError
from train.data.build import build_splits
from train.data.labels import subtype_counts
from train.data.phantoms import PhantomCache
from train.data.sampling import fold_splits
from train.data.splits import Splits, to_dataset
from train.ensemble import ScoringData, describe_records, load_members, push_ensemble, write_ensemble
from train.pipeline import Fold as Fold  # re-exported: defined here before it moved down
from train.pipeline import describe_training_data, describe_validation, train_fold

if TYPE_CHECKING:
    from train.args import BrainCTTrainingArguments, DataArguments, ModelArguments

logger = logging.getLogger("train.folds")


def fold_dir(output_dir: str | Path, index: int) -> Path:
    """``<output_dir>/fold-<index>``: inside the ensemble folder, so the two move and upload together."""
    return Path(output_dir) / f"fold-{index}"


def _columns(dataset: Any) -> dict[str, list[Any]] | None:
    return None if dataset is None else dataset.to_dict()


def _labels(columns: dict[str, list[Any]]) -> np.ndarray:
    return np.asarray(columns["label"], dtype=np.int64)


def fold_runs(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: BrainCTTrainingArguments,
    splits: Splits,
) -> list[Fold]:
    """The K fold runs over ``splits.train`` (:func:`train.data.sampling.fold_splits`, the run's seed).

    Raises:
        InvalidInputError: K does not fit the training records (see :func:`train.data.sampling.fold_splits`).
    """
    k = data_args.folds
    pairs = fold_splits(_columns(splits.train), k, training_args.seed)
    phantoms = PhantomCache()  # one for every fold: the common validation split is the same phantoms
    runs = []
    for i, (train, validation) in enumerate(pairs):
        counts = np.bincount(_labels(train), minlength=2).tolist()
        fold_data = dataclasses.replace(
            splits,
            train=to_dataset(train),
            validation=to_dataset(validation),
            class_counts=counts,
            # a subtype run's BCE positive weights come from the fold's own positives per label
            subtype_counts=subtype_counts(train) if splits.label_set == "subtypes" else None,
            description=(
                f"{splits.description}; fold model {i} of {k}: trained on the other "
                f"{'fold' if k == 2 else f'{k - 1} folds'} ({sum(counts)} slices)"
            ),
        )
        note = describe_records(
            validation["label"],
            f"fold {i} of {k} stratified folds of the training records (whole series and real levels "
            "together), never trained on by this fold model",
        )
        fold_args = copy.copy(training_args)  # a shallow copy: Trainer state lives elsewhere
        fold_args.output_dir = str(fold_dir(training_args.output_dir, i))
        fold_args.push_to_hub_requested = False  # the ensemble folder, fold folders inside, is pushed
        fold_args.hub_model_id = None
        runs.append(Fold(i, k, (model_args, data_args, fold_args), fold_data, note, phantoms))
    return runs


def describe_test(data_args: DataArguments, labels: np.ndarray) -> str:
    """What the run's test records are, e.g. ``60 slices (30 normal, 30 hemorrhage): generated phantoms``."""
    a = data_args
    sources = []
    if a.test_dir is not None:
        sources.append(f"image folder {Path(a.test_dir).name!r}")
    elif a.synthetic_test > 0:
        sources.append("generated phantoms")
    if a.real_anatomy_dir is not None and a.real_anatomy_test:
        sources.append(f"the test variants of the held-out real levels of {Path(a.real_anatomy_dir).name!r}")
    return describe_records(labels, " and ".join(sources))


def check_fold_run(training_args: BrainCTTrainingArguments, splits: Splits) -> None:
    """What ``--folds`` cannot do, said before any fold trains.

    Raises:
        ValueError: ``--resume_from_checkpoint`` given, or ``--output_dir`` already holds one model.
        InvalidInputError: no validation split to choose the ensemble's threshold on.
    """
    if training_args.resume_from_checkpoint:
        raise ValueError(
            "--resume_from_checkpoint does not combine with --folds (each fold trains from its start); "
            "drop it, or resume one fold as a plain run"
        )
    out = Path(training_args.output_dir)
    if (out / "config.json").is_file():
        raise ValueError(
            f"--output_dir {str(out)!r} holds a model (config.json); --folds writes an ensemble there, "
            "so give it a folder of its own"
        )
    if splits.validation is None:
        raise InvalidInputError(
            "--folds needs a validation split held out from every fold to choose the ensemble's threshold "
            "on; give --validation_dir, --synthetic_validation or --real_anatomy_dir"
        )


def train_folds(
    argv: list[str],
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: BrainCTTrainingArguments,
) -> dict[str, Any]:
    """Train the K fold models and write the ensemble over them (see the module docstring).

    Returns:
        The ensemble's ``eval_results.json`` content (``hub_url`` added when pushed).

    Raises:
        ValueError / InvalidInputError: the arguments or the data do not allow K folds (nothing trained).
    """
    started = time.perf_counter()
    splits = build_splits(data_args, training_args.seed)
    check_fold_run(training_args, splits)
    runs = fold_runs(model_args, data_args, training_args, splits)
    is_main_process = True
    for run in runs:
        logger.info("fold %d of %d: %s", run.index, run.k, run.validation_note)
        # Every process of a distributed run trains every fold (they meet in its collective calls);
        # only the main one gets results back and goes on to write the ensemble.
        is_main_process = bool(train_fold(argv, run))
        logger.info("fold %d trained (%.0f s since start)", run.index, time.perf_counter() - started)
    if not is_main_process:
        return {}

    out = Path(training_args.output_dir)
    sources, predictor = load_members([str(fold_dir(out, r.index)) for r in runs], out)
    validation, test = _columns(splits.validation), _columns(splits.test)
    data = ScoringData(
        validation,
        describe_validation(data_args, splits) + "; held out from every fold",
        test,
        describe_test(data_args, _labels(test)) if test is not None else "",
        synthetic_size=data_args.synthetic_size,
        allow_unverified=not data_args.verify_head_ct,
    )
    k = data_args.folds
    trained_on = (
        f"{describe_training_data(model_args, training_args, splits)}; {k} fold models, each trained on "
        f"{k - 1} of {k} stratified folds of it and validated on the remaining one"
    )
    results = write_ensemble(
        out,
        sources,
        predictor,
        data,
        training_args,
        name=training_args.hub_model_id or out.resolve().name,
        command="python -m train " + " ".join(shlex.quote(a) for a in argv),
        trained_on=trained_on,
        batch_size=training_args.per_device_eval_batch_size,
    )
    if training_args.push_to_hub_requested:
        results["hub_url"] = push_ensemble(
            out,
            training_args.hub_model_id,
            private=bool(training_args.hub_private_repo),
            token=training_args.hub_token,
        )
    logger.info(
        "ensemble of %d folds written to %s in %.0f s: threshold %.4f (%s)",
        k,
        out,
        time.perf_counter() - started,
        results["threshold"],
        results["threshold_rule"]["description"],
    )
    return results
