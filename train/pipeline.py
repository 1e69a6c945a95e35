"""One ``python -m train`` run, from parsed arguments to a saved model folder: what ``train.__main__`` and
``train.folds`` both call.

:func:`prepare` settles the arguments (training stages, checks, seed); :func:`train` builds the data and the
model, trains, calibrates and chooses the threshold, evaluates and saves (and pushes) the model folder;
:func:`train_fold` does both for one fold model of ``--folds K``, handed a :class:`Fold` by
:func:`train.folds.train_folds`. ``train.__main__`` parses the command line and hands a ``--folds`` run to
:mod:`train.folds`, which calls back here, never into ``__main__``.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brain_ct.architectures import FAMILIES, family_of
from brain_ct.errors import ModelLoadError
from brain_ct.jsonable import json_safe
from brain_ct.labels import BINARY_LABELS, MULTI_LABEL, SUBTYPE_LABELS, SUBTYPES
from brain_ct.model import ModelSettings, apply_settings_to_config, shown_model_id
from brain_ct.preprocess import default_stats
from train.args import (
    MODEL_SIZE_PRESETS,
    BrainCTTrainingArguments,
    DataArguments,
    ModelArguments,
    load_model_config,
)
from train.augment import Augmenter
from train.calibrate import calibrate_and_choose, calibration_groups, calibration_report, plot_reliability
from train.card import CardInfo, write_model_card
from train.data.build import build_splits
from train.data.labels import class_weights_from_counts, subtype_counts, subtype_pos_weights
from train.data.phantoms import PhantomCache
from train.data.splits import Splits
from train.data.transform import SliceTransform, attach_transform
from train.evaluate import (
    predict_scores,
    report_split,
    report_subtypes,
    subtype_lines,
    summary_line,
)
from train.hub import push_folder
from train.plots import plot_training_curves

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# The same logger as python -m train itself: a run's log reads as before.
logger = logging.getLogger("train")


@dataclass(frozen=True)
class Fold:
    """One fold model's run, as :func:`train_fold` takes it instead of parsing ``argv``.

    Attributes:
        index: the fold held out for validation, 0 … k−1.
        k: the number of folds.
        arguments: (model, data, training) arguments; the training arguments write to the fold's folder
            and push nothing.
        splits: train = the other folds' records, validation = this fold's, test = the run's test split.
        validation_note: what the validation records are (logged and carded).
        phantoms: the run's one phantom cache, shared by its folds (each phantom generated once).
    """

    index: int
    k: int
    arguments: tuple[ModelArguments, DataArguments, BrainCTTrainingArguments]
    splits: Splits
    validation_note: str
    phantoms: PhantomCache | None = None


def _check_base_label_order(model_args: ModelArguments, base: Any, names: Sequence[str]) -> None:
    """Refuse a base model (its config ``base``) with the run's labels in another order.

    Its head has the run's size, so ``from_pretrained`` would keep its rows and the run's ``id2label`` would
    silently rename them (the ``any`` row feeding ``epidural``). Reordering rows is not worth the risk here.
    """
    base_names = [str(base.id2label[i]).strip().lower() for i in sorted(base.id2label)]
    if sorted(base_names) == sorted(names) and base_names != list(names):
        raise ValueError(
            f"--model_name_or_path {model_args.model_name_or_path!r} has the labels {base_names} in another "
            f"order than this run's {list(names)}; training on would rename its output rows. Continue from a "
            "model with the labels in this order, or start from a model with another label set."
        )


def build_model(model_args: ModelArguments, num_channels: int, label_set: str = "binary") -> Any:
    """A classifier of a supported family (:mod:`brain_ct.architectures`) with ``num_channels`` inputs and the
    run's labels.

    ``label_set`` ``"binary"``: labels {0: normal, 1: hemorrhage} (softmax); ``"subtypes"``: RSNA's six
    labels in :data:`~brain_ct.labels.SUBTYPE_LABELS` order with ``problem_type``
    ``multi_label_classification`` (one sigmoid each). From scratch (``--model_config`` / ``--model_size``)
    it is a ResNet built from a ``ResNetConfig`` with random weights; otherwise ``--model_name_or_path`` is
    loaded with a new head when the pretrained one has another size (ImageNet's 1000 classes, a binary
    model's 2 when training subtypes) and its first convolution adapted when ``--windows`` / context give
    another channel count (:meth:`~brain_ct.architectures.Family.adapt_input_channels`); the backbone is kept.
    """
    from transformers import AutoConfig

    names = SUBTYPE_LABELS if label_set == "subtypes" else BINARY_LABELS
    labels = {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {name: i for i, name in enumerate(names)},
        **({"problem_type": MULTI_LABEL} if label_set == "subtypes" else {}),
    }
    if model_args.from_scratch:
        fields = (
            load_model_config(model_args.model_config)
            if model_args.model_config is not None
            else dict(MODEL_SIZE_PRESETS[model_args.model_size])
        )
        fields = {
            k: v for k, v in fields.items() if k not in ("num_labels", "id2label", "label2id", "problem_type")
        }
        fields["num_channels"] = num_channels
        family = FAMILIES["resnet"]  # --model_size presets and --model_config are ResNetConfig fields
        try:
            config = family.config_class()(**fields, **labels)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--model_config: not a valid ResNetConfig ({exc})") from None
        return family.build(config)
    where = {"revision": model_args.model_revision, "cache_dir": model_args.cache_dir}
    base = AutoConfig.from_pretrained(model_args.model_name_or_path, **where)
    try:
        family = family_of(base, model_args.model_name_or_path)
    except ModelLoadError as exc:
        raise ValueError(f"--model_name_or_path: {exc}") from None
    _check_base_label_order(model_args, base, names)
    model = family.from_pretrained(model_args.model_name_or_path, labels, use_safetensors=None, **where)
    if model.config.num_channels != num_channels:
        logger.info(
            "the base model takes %d input channels; its first convolution is adapted to %d",
            model.config.num_channels,
            num_channels,
        )
        family.adapt_input_channels(model, num_channels)
    return model


def describe_architecture(model: Any) -> str:
    """e.g. ``ResNet (basic blocks), 3 input channels, stages [32, 64, 128] × depths [2, 2, 2], 0.70 M
    parameters, output stride 16`` (:meth:`~brain_ct.architectures.Family.describe`)."""
    return family_of(model).describe(model)


def save_preprocessor(folder: str | Path, settings: ModelSettings) -> None:
    """Write a ``ConvNextImageProcessor``-compatible ``preprocessor_config.json`` for Hub tooling.

    It resizes to ``settings.image_size`` and normalises an already windowed 8-bit image with
    ``settings.mean`` / ``std`` (no cropping: ``crop_pct`` 1). brain_ct's own preprocessing
    (:func:`brain_ct.preprocess.model_input`: HU windows, framing to the head) is what predictions use.
    """
    from transformers import ConvNextImageProcessorPil

    if settings.num_channels != 3:  # image processors speak RGB; a non-3-channel model has no meaningful one
        return
    ConvNextImageProcessorPil(
        size={"shortest_edge": settings.image_size},
        crop_pct=1.0,
        image_mean=list(settings.mean),
        image_std=list(settings.std),
    ).save_pretrained(str(folder))


def resolve_checkpoint(value: str | None, output_dir: str) -> str | None:
    """``--resume_from_checkpoint``: a path, or ``last`` for the newest ``checkpoint-*`` in ``--output_dir``."""
    if value is None or value == "":
        return None
    if value in ("last", "latest", "true", "True"):
        from transformers.trainer_utils import get_last_checkpoint

        found = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if found is None:
            raise ValueError(f"--resume_from_checkpoint {value}: no checkpoint-* folder in {output_dir!r}")
        return found
    if not Path(value).is_dir():
        raise ValueError(f"--resume_from_checkpoint {value!r} is not a checkpoint folder (or say 'last')")
    return value


def check_arguments(
    model_args: ModelArguments, data_args: DataArguments, training_args: BrainCTTrainingArguments
) -> None:
    """Checks across argument groups (each group checks itself in its ``__post_init__``)."""
    if data_args.streaming and training_args.max_steps <= 0:
        raise ValueError("--streaming needs --max_steps (a stream has no length to count epochs by)")
    if data_args.streaming and training_args.class_weight_list is None:
        raise ValueError(
            "--class_weights is required with --streaming (class counts of a stream are unknown)"
        )


@dataclass
class Preprocessing:
    """What every split's slices go through, and what the saved model's config records."""

    windows: list[tuple[float, float]]
    image_size: int
    mean: list[float]
    std: list[float]
    context_slices: int
    eight_bit_mapping: Any = "repeat"  # an EightBitMapping, or its mode name (default window)

    @classmethod
    def from_args(cls, data_args: DataArguments) -> Preprocessing:
        windows = data_args.window_list
        n_ch = len(windows) * (2 * data_args.context_slices + 1)
        mean, std = (data_args.mean_list, data_args.std_list) if data_args.mean_list else default_stats(n_ch)
        return cls(windows, data_args.image_size, mean, std, data_args.context_slices, data_args.eight_bit)

    @property
    def num_channels(self) -> int:
        return len(self.windows) * (2 * self.context_slices + 1)

    def settings(
        self, trained_on: str, threshold: float = 0.5, label_set: str = "binary", **decision: Any
    ) -> Any:
        """The model's :class:`~brain_ct.model.ModelSettings`; ``decision``: threshold_rule, temperature,
        input_thresholds."""
        return ModelSettings(
            labels=SUBTYPE_LABELS if label_set == "subtypes" else BINARY_LABELS,
            windows=tuple(self.windows),
            image_size=self.image_size,
            threshold=threshold,
            mean=tuple(self.mean),
            std=tuple(self.std),
            context_slices=self.context_slices,
            eight_bit=self.eight_bit_mapping,
            trained_on=trained_on,
            **decision,
        )


def describe_training_data(
    model_args: ModelArguments, training_args: BrainCTTrainingArguments, splits: Splits
) -> str:
    """``brain_ct_trained_on``: ``--trained_on``, else the splits' description (and the adapted base model)."""
    trained_on = training_args.trained_on or splits.description
    if model_args.preset == "adapt" and not training_args.trained_on:
        trained_on += f", fine-tuned from {shown_model_id(model_args.model_name_or_path)}"
    return trained_on


def build_datasets(
    data_args: DataArguments,
    training_args: BrainCTTrainingArguments,
    splits: Splits,
    prep: Preprocessing,
    settings: ModelSettings,
    phantoms: Any = None,
) -> tuple[Any, Any, Any]:
    """(train, validation, test) with their transforms: augmentation (and masks) for training only.

    ``phantoms``: a :class:`~train.data.phantoms.PhantomCache` to fill and use (``--folds`` shares one across its
    folds, so each phantom is generated once); None: a new one.
    """
    context = prep.context_slices
    phantoms = PhantomCache() if phantoms is None else phantoms
    if splits.synthetic and data_args.synthetic_cache:
        import os

        procs = max(1, training_args.dataloader_num_workers, min(4, os.cpu_count() or 1))
        for ds in (splits.train, splits.validation):
            if ds is not None and "synthetic_seed" in ds.column_names:
                phantoms.prefetch(ds.to_dict(), data_args.synthetic_size, procs, context)

    with_masks = data_args.mask_loss_weight > 0
    if with_masks and not splits.generated_masks and not splits.hub:
        n_masks = sum(1 for m in splits.train["mask_path"] if m)
        if n_masks == 0:
            raise ValueError(
                "--mask_loss_weight > 0 but no lesion masks were found (<train_dir>/masks/<stem>.png "
                "or --mask_dir)"
            )
        logger.info("mask guidance: %d training slices have lesion masks", n_masks)
    common = {
        "settings": settings,
        "allow_unverified": not data_args.verify_head_ct,
        "synthetic_size": data_args.synthetic_size,
        "phantoms": phantoms,
    }
    if splits.hub:
        common.update(
            image_column=data_args.image_column,
            label_column=data_args.label_column,
            label_map=splits.label_map,
            hub_subtypes=splits.hub_subtypes,
        )
    augmenter = (
        Augmenter(
            rotation=data_args.rotation,
            zoom=data_args.zoom,
            shift=data_args.shift,
            brightness=data_args.brightness_range,
            horizontal_flip=data_args.horizontal_flip,
            window_jitter=data_args.window_jitter,
        )
        if data_args.augment
        else None
    )
    train_ds = attach_transform(
        splits.train, SliceTransform(**common, augmenter=augmenter, with_masks=with_masks)
    )
    eval_transform = SliceTransform(**common)
    val_ds = attach_transform(splits.validation, eval_transform)
    test_ds = attach_transform(splits.test, eval_transform)
    return train_ds, val_ds, test_ds


def train_model(
    model: Any,
    data_args: DataArguments,
    training_args: BrainCTTrainingArguments,
    weights: list[float],
    train_ds: Any,
    val_ds: Any,
) -> tuple[Any, Any]:
    """Run the Trainer (two stages, weighted loss, optional mask guidance); save the best model and state.

    Returns (trainer, train_result).
    """
    from transformers import default_data_collator

    from train.trainer import BrainCTTrainer, compute_metrics  # pulls in datasets (~0.8 s): not for --help

    trainer = BrainCTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=default_data_collator,
        compute_metrics=compute_metrics,
        class_weights=weights,
        stage1_epochs=training_args.stage1_epochs,
        mask_loss_weight=data_args.mask_loss_weight,
        mask_negative_weight=data_args.mask_negative_weight,
        mask_loss_type=data_args.mask_loss_type,
        mask_pos_weight=data_args.mask_pos_weight,
    )
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()  # the best checkpoint (load_best_model_at_end) lands in --output_dir itself
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    return trainer, train_result


@dataclass
class Evaluation:
    """The threshold chosen on validation, the metrics of each split, and the plots written."""

    results: dict[str, Any]
    calibration: Any  # train.calibrate's result: threshold, rule, temperature, report
    calibration_plots: list[str]
    plots: list[str]


def calibrate_and_evaluate(
    trainer: Any, training_args: BrainCTTrainingArguments, val_ds: Any, test_ds: Any, train_metrics: dict
) -> Evaluation:
    """Calibrate and choose the threshold on validation, then report validation and test with it."""
    out = Path(training_args.output_dir)
    model = trainer.model
    device = str(training_args.device)
    bs, nw = training_args.per_device_eval_batch_size, training_args.dataloader_num_workers
    results: dict[str, Any] = {}
    cal = calibrate_and_choose(
        model,
        predict_scores(model, val_ds, bs, nw, device, desc="validation"),
        temperature_scaling=training_args.temperature_scaling,
        strategy=training_args.threshold_strategy,
        target_sensitivity=training_args.threshold_sensitivity,
        max_real_fpr=training_args.max_real_fpr,
        fixed=training_args.threshold,
    )
    threshold, rule = cal.threshold, cal.rule
    results["threshold"] = threshold
    results["threshold_strategy"] = rule["strategy"]
    results["threshold_rule"] = rule
    y, s, k, d = cal.validation.binary
    if cal.input_thresholds:
        results["input_thresholds"] = cal.input_thresholds
    results["validation"] = report_split("validation", y, s, k, threshold, out, d, cal.input_thresholds)
    logger.info(summary_line("validation", results["validation"]))
    results["calibration"] = cal.report
    reliability = {"validation": calibration_groups(y, s, k, d)}
    subtypes = {"validation": report_subtypes("validation", cal.validation, threshold, out)}
    if test_ds is not None:
        scored = predict_scores(model, test_ds, bs, nw, device, desc="test")
        y, s, k, d = scored.binary
        results["test"] = report_split("test", y, s, k, threshold, out, d, cal.input_thresholds)
        subtypes["test"] = report_subtypes("test", scored, threshold, out)
        results["calibration"]["test"] = calibration_report(y, s, k, d)
        reliability["test"] = calibration_groups(y, s, k, d)
        logger.info(summary_line("test", results["test"]))
        for kind, m in results["test"].get("by_input_kind", {}).items():
            logger.info(summary_line(f"test ({kind} input)", m))
    subtypes = {split: m for split, m in subtypes.items() if m is not None}
    if subtypes:
        results["subtypes"] = subtypes
        for split, m in subtypes.items():
            for line in subtype_lines(split, m):
                logger.info(line)
    calibration_plots = []
    for split, groups in reliability.items():
        plot_reliability(groups, out / f"reliability_{split}.png", f"Reliability — {split}")
        calibration_plots.append(f"reliability_{split}.png")
    results["train"] = train_metrics
    plots = [p for p in ("training_curves.png",) if plot_training_curves(trainer.state.log_history, out / p)]
    plots += [
        f"{kind}_{split}.png"
        for split in ("validation", "test")
        if split in results
        for kind in ("roc", "confusion_matrix")
    ]
    plots += [f"roc_subtypes_{split}.png" for split in subtypes]
    return Evaluation(results, cal, calibration_plots, plots)


def describe_validation(data_args: DataArguments, splits: Splits) -> str:
    """How many validation slices of each class there are and where they came from (logged and carded)."""
    a = data_args
    if a.validation_dir is not None:
        source = f"image folder {Path(a.validation_dir).name!r}"
    elif a.synthetic_validation > 0:
        source = "generated phantoms"
    elif a.dataset_name is not None:
        source = f"the validation split of {a.dataset_name!r}"
    else:
        source = (
            f"a stratified {a.validation_split:.0%} split of the training data (seeded; never trained on)"
        )
    if a.real_anatomy_dir is not None:
        source += f" and the held-out real levels of {Path(a.real_anatomy_dir).name!r} (normals and painted lesions)"
    val = splits.validation
    if splits.hub or val is None or "label" not in (val.column_names or []):
        return source  # a Hub split's labels may be names, and a stream has no length
    counts = np.bincount(np.asarray(val["label"], dtype=np.int64), minlength=2)
    text = f"{int(counts.sum())} slices ({int(counts[0])} normal, {int(counts[1])} hemorrhage"
    if splits.label_set == "subtypes" and "subtypes" in val.column_names:
        text += "; positives per subtype " + ", ".join(
            f"{name} {n}" for name, n in zip(SUBTYPES, subtype_counts(val.to_dict())[1:], strict=True)
        )
    return f"{text}), {source}"


def _training_summary(
    training_args: BrainCTTrainingArguments, data_args: DataArguments, weights: list[float], splits: Splits
) -> dict[str, Any]:
    t, d = training_args, data_args
    aug = (
        (
            f"rotation ±{d.rotation}°, zoom {d.zoom}, shift {d.shift}, brightness {d.brightness_range}, "
            f"horizontal flip {d.horizontal_flip}, window jitter {d.window_jitter}"
        )
        if d.augment
        else "off"
    )
    summary = {
        "stage 1 (frozen backbone) epochs": t.stage1_epochs,
        "stage 2 (full fine-tune) epochs": t.stage2_epochs,
        "max steps": t.max_steps if t.max_steps > 0 else "—",
        "learning rate": f"{t.learning_rate} ({t.lr_scheduler_type})",
        "batch size": t.per_device_train_batch_size,
        **(
            {
                "labels": "RSNA's any + five subtypes, one sigmoid each (BCE with logits)",
                "BCE positive weights [any, " + ", ".join(SUBTYPES) + "]": [round(w, 4) for w in weights],
                "training positives per label": splits.subtype_counts,
            }
            if splits.label_set == "subtypes"
            else {"class weights [normal, hemorrhage]": [round(w, 4) for w in weights]}
        ),
        "training class counts [normal, hemorrhage]": splits.class_counts,
        "augmentation": aug,
        "slice context": (
            f"{d.context_slices} slice(s) on each side stacked as channels (brain_ct_context_slices)"
            if d.context_slices
            else "none (single-slice model)"
        ),
        "mask guidance": (
            f"weight {d.mask_loss_weight}, normal-slice weight {d.mask_negative_weight}"
            if d.mask_loss_weight > 0
            else "off"
        ),
        "best checkpoint by": f"validation {t.metric_for_best_model}",
        "seed": t.seed,
    }
    return summary


def prepare(
    model_args: ModelArguments, data_args: DataArguments, training_args: BrainCTTrainingArguments
) -> None:
    """Settle a run's arguments before anything is built: its training stages, the checks across argument
    groups (:func:`check_arguments`) and the seed."""
    from transformers import set_seed  # transformers costs seconds to import; only a run needs it

    training_args.resolve_stages(model_args.from_scratch)
    check_arguments(model_args, data_args, training_args)
    set_seed(training_args.seed)


def train(
    argv: Sequence[str],
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: BrainCTTrainingArguments,
    fold: Fold | None = None,
) -> dict[str, Any]:
    """Train, choose the threshold, evaluate, save (and push) one model; arguments already :func:`prepare`-d.

    Args:
        argv: the command line as given (written into the model card).
        model_args, data_args, training_args: the run's arguments.
        fold: for a fold model of ``--folds K``, its splits, validation note and shared phantom cache
            (instead of the splits built from ``data_args``).

    Returns:
        The ``eval_results.json`` content; ``{}`` in a process other than the main one of a distributed run.
    """
    # ---- data and model ----
    prep = Preprocessing.from_args(data_args)
    splits = build_splits(data_args, training_args.seed) if fold is None else fold.splits
    label_set = splits.label_set
    weights = loss_weights(training_args, splits)
    logger.info(
        "training data: %s; labels %s; class counts %s%s; %s %s",
        splits.description,
        label_set,
        splits.class_counts,
        f", positives per label {splits.subtype_counts}" if splits.subtype_counts else "",
        "BCE positive weights" if label_set == "subtypes" else "class weights",
        [round(w, 4) for w in weights],
    )
    model = build_model(model_args, prep.num_channels, label_set)
    validation_note = describe_validation(data_args, splits) if fold is None else fold.validation_note
    logger.info("validation data: %s", validation_note)
    trained_on = describe_training_data(model_args, training_args, splits)
    settings = prep.settings(trained_on, label_set=label_set)
    apply_settings_to_config(model.config, settings)  # checkpoints carry the keys too
    train_ds, val_ds, test_ds = build_datasets(
        data_args, training_args, splits, prep, settings, None if fold is None else fold.phantoms
    )

    # ---- train ----
    trainer, train_result = train_model(model, data_args, training_args, weights, train_ds, val_ds)
    if not trainer.is_world_process_zero():
        return {}

    # ---- threshold on validation, metrics, plots (main process only) ----
    evaluation = calibrate_and_evaluate(trainer, training_args, val_ds, test_ds, train_result.metrics)

    # ---- save: config, weights, preprocessor, results, card; push ----
    saved = SavedRun(trained_on, weights, validation_note, evaluation)
    return save_run(argv, trainer.model, model_args, data_args, training_args, splits, prep, saved)


@dataclass(frozen=True)
class SavedRun:
    """What a finished run writes beside its weights: the training data description, the loss weights, the
    validation note and the evaluation (threshold, calibration, results, plots)."""

    trained_on: str
    weights: list[float]
    validation_note: str
    evaluation: Evaluation


def loss_weights(training_args: BrainCTTrainingArguments, splits: Splits) -> list[float]:
    """``--class_weights`` for the run's label set, else computed from its counts (binary: class weights;
    subtypes: BCE positive weights per label).

    Raises:
        ValueError: naming ``--class_weights`` when it has the wrong count for the label set.
    """
    label_set = splits.label_set
    weights = training_args.class_weight_list
    n_labels = 6 if label_set == "subtypes" else 2
    if weights is not None and len(weights) != n_labels:
        raise ValueError(
            f"--class_weights has {len(weights)} numbers but this is a {label_set} run: give {n_labels} "
            + (
                "(BCE positive weights in RSNA's order any,epidural,…,subdural)"
                if n_labels == 6
                else "(normal,hemorrhage)"
            )
        )
    if weights is None and label_set == "subtypes":  # check_arguments made sure the counts are known
        return subtype_pos_weights(splits.subtype_counts, sum(splits.class_counts))
    if weights is None:
        return class_weights_from_counts(splits.class_counts)
    return weights


def save_run(
    argv: Sequence[str],
    model: PreTrainedModel,
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: BrainCTTrainingArguments,
    splits: Splits,
    prep: Preprocessing,
    saved: SavedRun,
) -> dict[str, Any]:
    """Write the trained model folder — config with the chosen threshold, weights, preprocessor,
    ``eval_results.json``, card — and push it when asked; returns the results (with ``hub_url`` when pushed)."""
    evaluation = saved.evaluation
    results, cal = evaluation.results, evaluation.calibration
    out = Path(training_args.output_dir)
    settings = prep.settings(
        saved.trained_on,
        cal.threshold,
        splits.label_set,
        threshold_rule=cal.rule,
        temperature=cal.temperature,
        input_thresholds=cal.input_thresholds,
    )
    apply_settings_to_config(model.config, settings)
    # the weights too: a kept temperature was folded into the classifier after the Trainer saved them
    model.save_pretrained(str(out))
    save_preprocessor(out, settings)
    (out / "eval_results.json").write_text(json.dumps(json_safe(results), indent=2) + "\n")
    name = training_args.hub_model_id or out.name
    card = CardInfo(
        model_name=name,
        synthetic=splits.synthetic,
        base_model=None if model_args.from_scratch else model_args.model_name_or_path,
        architecture=describe_architecture(model),
        training={
            **_training_summary(training_args, data_args, saved.weights, splits),
            "validation data": saved.validation_note,
            **({"preset": model_args.preset} if model_args.preset else {}),
        },
        command="python -m train " + " ".join(shlex.quote(a) for a in argv),
        plots=evaluation.plots,
        calibration_plots=evaluation.calibration_plots,
    )
    write_model_card(out, settings, json_safe(results), card)
    if training_args.push_to_hub_requested:
        url = push_folder(
            out,
            training_args.hub_model_id,
            private=bool(training_args.hub_private_repo),
            token=training_args.hub_token,
        )
        logger.info("pushed to %s", url)
        results["hub_url"] = url
    return results


def train_fold(argv: Sequence[str], fold: Fold) -> dict[str, Any]:
    """One fold model of ``--folds K`` (:func:`train.folds.train_folds`): :func:`prepare` and :func:`train`
    with the fold's own arguments."""
    prepare(*fold.arguments)
    return train(argv, *fold.arguments, fold=fold)
