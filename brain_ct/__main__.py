"""``python -m brain_ct {synth,predict,report} ...``.

Exit codes: 0 all inputs succeeded, 1 some input failed (its error was reported and the
rest went on), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from brain_ct.errors import BrainCTError

SUBCOMMANDS = {
    "synth": "brain_ct.cli.synth",
    "predict": "brain_ct.cli.predict",
    "report": "brain_ct.cli.report",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m brain_ct",
        description="Brain-CT hemorrhage reading assistant (research and education aid, not a diagnosis).",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show other libraries' INFO log lines (fontTools, httpx, …)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def setup_logging(verbose: bool = False) -> None:
    """This package's INFO lines; other libraries (fontTools logs ~40 INFO lines per PDF, httpx one per
    request) only from WARNING, unless ``verbose``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # basicConfig does nothing when the root logger already has handlers: set the levels explicitly.
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("brain_ct").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except BrainCTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
