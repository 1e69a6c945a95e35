"""Subcommands of ``python -m brain_ct``; each module has ``add_parser(subparsers)`` and ``run(args) -> int``."""
