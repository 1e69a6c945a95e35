"""Flags shared by the subcommands that read CT images with a model (``predict``, ``report``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import brain_ct.limits as limits
from brain_ct.errors import BrainCTError, InvalidInputError
from brain_ct.labels import ANY, SUBTYPES
from brain_ct.predictor import Predictor


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


class RaiseSliceLimit(argparse.Action):
    """``--max-slices N``: raise this process's upload limits (:mod:`brain_ct.limits`) for scans of N slices.

    Applied as the flag is parsed, before any input is read, so that every reader of the command
    (``--list-series`` too) asks the raised limits.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        try:
            limits.configure(limits.current().with_slices(int(values)))  # type: ignore[call-overload]
        except InvalidInputError as exc:  # an environment variable that is not a number
            parser.error(str(exc))


def add_reading_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --revision, --allow-unverified, --tta, --batch-size, --series-uid, --heatmap-target, --max-slices."""
    parser.add_argument(
        "--model",
        default=None,
        metavar="ID_OR_DIR",
        help="Hugging Face Hub id or model folder (default: env BRAIN_CT_MODEL, then models/brain-ct-resnet50)",
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
    parser.add_argument(
        "--heatmap-target",
        type=str.lower,
        choices=(ANY, *SUBTYPES),
        default=None,
        metavar="NAME",
        help=(
            f"what the Grad-CAM heatmap explains: '{ANY}' (P(hemorrhage), the default) or, for a subtype "
            f"model, one subtype: {', '.join(SUBTYPES)}"
        ),
    )
    default = limits.UploadLimits()
    parser.add_argument(
        "--max-slices",
        type=positive_int,
        action=RaiseSliceLimit,
        default=None,
        metavar="N",
        help=(
            f"read scans of up to N slices of 512 x 512 (default: {default.scan_limit_text()}, a public "
            f"server's limit; thin-section scans have 250+). Environment variables raise each limit too: "
            f"{', '.join(limits.ENV.values())}"
        ),
    )


def heatmap_target_problem(predictor: Predictor, requested: str | None) -> str | None:
    """Why ``--heatmap-target`` does not fit the loaded model (e.g. a subtype asked of a binary model), or None.

    Checked right after the model loads, before any input is read, so a wrong flag costs no reading.
    """
    try:
        predictor.heatmap_target(requested)
    except InvalidInputError as exc:
        labels = ", ".join(predictor.settings.labels)
        return f"--heatmap-target {requested}: {exc}. The model's labels: {labels}."
    return None


def load_predictor(args: argparse.Namespace) -> tuple[Predictor | None, int]:
    """The model of ``--model`` / ``--revision``, checked against ``--heatmap-target``, before any input is read.

    Returns:
        ``(predictor, 0)``, or ``(None, exit code)`` with the reason printed on stderr: 1 the model
        could not be loaded, 2 ``--heatmap-target`` does not fit it (:func:`heatmap_target_problem`).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars are noise on a CLI's stderr
    try:
        predictor = Predictor.from_pretrained(args.model, revision=args.revision)
    except BrainCTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 1
    problem = heatmap_target_problem(predictor, args.heatmap_target)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return None, 2
    return predictor, 0
