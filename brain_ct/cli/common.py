"""Flags shared by the subcommands that read CT images with a model (``predict``, ``report``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer ≥ ``minimum`` (0: "non-negative", 1: "positive")."""
    kind = {0: "non-negative", 1: "positive"}.get(minimum, f"≥ {minimum}")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
        return value

    return parse


positive_int = int_at_least(1)


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
        help=(
            "for a folder or zip holding several series: the one to read (the id that "
            "'predict --list-series PATH' shows, or the raw Series Instance UID)"
        ),
    )
