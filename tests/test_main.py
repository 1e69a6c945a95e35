"""brain_ct.__main__: the CLI's dispatcher offers every subcommand it names, and hides none."""

from __future__ import annotations

import argparse

import pytest

import brain_ct.__main__ as cli_main


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return set(actions[0].choices)


def test_every_named_subcommand_is_offered() -> None:
    assert (
        _subcommands(cli_main.build_parser()) == {"synth", "predict", "report"} == set(cli_main.SUBCOMMANDS)
    )


def test_a_missing_subcommand_module_is_an_error_not_a_silent_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli_main.SUBCOMMANDS, "ghost", "brain_ct.cli.ghost")
    with pytest.raises(ModuleNotFoundError, match="brain_ct.cli.ghost"):
        cli_main.build_parser()
