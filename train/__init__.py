"""Training pipeline of the brain-CT hemorrhage model: ``python -m train`` (see ``train/__main__.py``).

``train.main(argv)`` runs the whole pipeline in-process (what the tests call); the modules are
:mod:`train.args` (argument dataclasses), :mod:`train.data` (datasets and the decoding transform),
:mod:`train.augment`, :mod:`train.trainer` (the Trainer subclass), :mod:`train.evaluate` (metrics,
threshold, plots, ``python -m train.evaluate``), :mod:`train.card` (model card) and :mod:`train.hub` (push).
"""

from __future__ import annotations

from typing import Any


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run ``python -m train`` with ``argv`` (default ``sys.argv[1:]``); returns the evaluation results."""
    from train.__main__ import main as _main  # torch + transformers (~2 s): `import train` stays light

    return _main(argv)


__all__ = ["main"]
