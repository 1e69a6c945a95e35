"""Plain JSON data from what the package's results hold: the ONE JSON-cleaning helper.

Used for every JSON the package writes or returns (a reading's ``to_dict``, a scan's per-slice
objects, training's ``eval_results.json`` and threshold rule), so they all follow the same rules.
A leaf module: it imports nothing of the package.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types, recursively, for a strict JSON writer.

    * numpy scalars become Python numbers first (``np.float64`` is a ``float`` subclass, kept plain);
    * ``None``, ``bool``, ``int`` and ``str`` (and their subclasses, e.g. pydicom ``IS``) stay as they
      are; a finite float stays, a non-finite one (NaN, ±inf) becomes ``None`` (strict JSON has no NaN);
    * dict keys become ``str``; tuples, lists, numpy arrays, pydicom multi-values and any other
      iterable (not ``bytes``) become lists;
    * anything else becomes its ``str``.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (
        hasattr(value, "__iter__") and not isinstance(value, (bytes, str))
    ):
        return [json_safe(v) for v in value]
    return str(value)
