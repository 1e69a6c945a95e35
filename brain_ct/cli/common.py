"""Flags shared by the subcommands that read CT images with a model (``predict``, ``report``)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_reading_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --revision, --allow-unverified, --tta, --batch-size, --series-uid."""
    parser.add_argument(
        "--model",
        default=None,
        metavar="ID_OR_DIR",
        help="Hugging Face Hub id or model folder (default: env BRAIN_CT_MODEL, then models/brain-ct-demo)",
    )
    parser.add_argument("--revision", default=None, help="Hub revision; a commit hash pins the model")
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help="skip the 'looks like an axial head CT' check for unusual but genuine slices",
    )
    parser.add_argument(
        "--tta", action="store_true", help="test-time augmentation: average with the flipped slice"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=16,
        metavar="N",
        help="slices per forward pass (default 16)",
    )
    parser.add_argument(
        "--series-uid",
        default=None,
        metavar="UID",
        help="for a folder or zip holding several series: the one to read (hashed id as listed, or the UID)",
    )
