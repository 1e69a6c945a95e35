"""The one JSON-cleaning helper: a table of values worked out by hand, and a strict JSON round trip."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat

from brain_ct.jsonable import json_safe


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (3, 3),
        ("text", "text"),
        (0.25, 0.25),
        (math.nan, None),
        (math.inf, None),
        (-math.inf, None),
        (np.float32(0.5), 0.5),
        (np.float64(np.nan), None),
        (np.int64(7), 7),
        (np.bool_(False), False),
        ((1, 2), [1, 2]),
        (np.array([[1, 2], [3, 4]], dtype=np.uint8), [[1, 2], [3, 4]]),
        ({1: np.float32(1.5), "k": (np.int32(2),)}, {"1": 1.5, "k": [2]}),
        (MultiValue(DSfloat, ["0.5", "0.25"]), [0.5, 0.25]),
        (b"\x00", "b'\\x00'"),
        (object, str(object)),
    ],
)
def test_json_safe_table(value: Any, expected: Any) -> None:
    got = json_safe(value)
    assert got == expected
    assert type(got) is type(expected) or isinstance(got, type(expected))


def test_numpy_scalars_become_plain_python() -> None:
    got = json_safe({"p": np.float64(0.1), "n": np.int16(4), "b": np.bool_(True)})
    assert [type(v) for v in got.values()] == [float, int, bool]


def test_output_passes_a_strict_json_writer() -> None:
    value = {"auc": np.float64(np.nan), "curve": np.linspace(0, 1, 3), "rule": {"kind": "real_fpr"}}
    text = json.dumps(json_safe(value), allow_nan=False)
    assert json.loads(text) == {"auc": None, "curve": [0.0, 0.5, 1.0], "rule": {"kind": "real_fpr"}}
