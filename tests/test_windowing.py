"""Windowing, the framing box and the heatmap map back: values worked out by hand, plus properties."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_models import plain_ct
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from brain_ct.errors import InvalidInputError
from brain_ct.windowing import (
    DEFAULT_WINDOWS,
    PRESETS,
    heatmap_to_image,
    model_box,
    resolve_window,
    resolve_windows,
    square_box,
    window,
)


@pytest.mark.parametrize(
    ("hu", "center", "width", "expected"),
    [
        (0.0, 40, 80, 0.0),  # lower edge
        (40.0, 40, 80, 0.5),  # centre
        (80.0, 40, 80, 1.0),  # upper edge
        (60.0, 40, 80, 0.75),
        (-1000.0, 40, 80, 0.0),  # air clipped
        (3000.0, 40, 80, 1.0),  # metal clipped
        (-800.0, 600, 2800, 0.0),
        (600.0, 600, 2800, 0.5),
        (1300.0, 600, 2800, 0.75),
    ],
)
def test_window_values_by_hand(hu, center, width, expected):
    out = window(np.array([hu]), center, width)
    assert out.dtype == np.float32
    assert out[0] == pytest.approx(expected, abs=1e-6)


def test_window_nan_and_inf_become_finite():
    out = window(np.array([np.nan, np.inf, -np.inf]), 40, 80)
    np.testing.assert_array_equal(out, [0.0, 1.0, 0.0])


@pytest.mark.parametrize(("center", "width"), [(40, 0), (40, -5), (np.nan, 80), (40, np.inf)])
def test_window_rejects_bad_parameters(center, width):
    with pytest.raises(InvalidInputError, match="width > 0"):
        window(np.zeros(3), center, width)


def test_presets_resolve_by_name_and_pair():
    assert resolve_window("brain") == (40.0, 80.0)
    assert resolve_window("Soft tissue") == PRESETS["soft_tissue"]
    assert resolve_window([80, 200]) == (80.0, 200.0)
    assert resolve_windows(["brain", "subdural", "bone"]) == list(DEFAULT_WINDOWS)


def test_unknown_preset_names_the_choices():
    with pytest.raises(InvalidInputError, match="unknown window preset 'lung'.*brain"):
        resolve_window("lung")
    with pytest.raises(InvalidInputError, match="center, width"):
        resolve_window([1, 2, 3])
    with pytest.raises(InvalidInputError, match="at least one window"):
        resolve_windows([])


def test_square_box_is_centred_and_has_margin():
    assert square_box((10, 20, 110, 70), margin=0.0) == (10, -5, 110, 95)
    x0, y0, x1, y1 = square_box((0, 0, 100, 100), margin=0.1)
    assert (x1 - x0, y1 - y0) == (120, 120)
    assert (x0 + x1) / 2 == pytest.approx(50, abs=0.5)


def test_heatmap_to_image_inverts_the_crop_geometry():
    shape = (40, 60)
    box = (10, -5, 50, 35)  # 40x40 square partly above the image
    heat = np.zeros((8, 8), np.float32)
    heat[4:, 4:] = 1.0  # bottom-right quarter of the box
    out = heatmap_to_image(heat, box, shape)
    assert out.shape == shape
    assert out[:, :10].max() == 0.0 and out[:, 50:].max() == 0.0  # outside the box
    assert out[30, 45] == pytest.approx(1.0)  # bottom-right quarter of the box (y 15..35, x 30..50)
    assert out[5, 15] == pytest.approx(0.0)


def test_model_box_is_square_around_the_head():
    ct = plain_ct(display=np.zeros((100, 200), np.uint8), head_box=(50, 10, 150, 90))
    x0, y0, x1, y1 = model_box(ct)
    assert x1 - x0 == y1 - y0 >= 100


@settings(max_examples=60, deadline=None)
@given(
    hu=arrays(
        np.float32,
        st.integers(1, 50),
        elements=st.floats(-5000, 5000, width=32) | st.just(np.nan) | st.just(np.inf),
    ),
    center=st.floats(-1000, 2000),
    width=st.floats(1, 4000),
)
def test_window_output_is_finite_and_in_unit_range(hu, center, width):
    out = window(hu, center, width)
    assert np.all(np.isfinite(out))
    assert out.min() >= 0.0 and out.max() <= 1.0


@settings(max_examples=60, deadline=None)
@given(
    a=st.floats(-3000, 3000),
    b=st.floats(-3000, 3000),
    center=st.floats(-1000, 2000),
    width=st.floats(1, 4000),
)
def test_window_is_monotone_in_hu(a, b, center, width):
    lo, hi = sorted((a, b))
    out = window(np.array([lo, hi], np.float32), center, width)
    assert out[0] <= out[1]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_their_edges(name):
    center, width = PRESETS[name]
    out = window(np.array([center - width / 2, center, center + width / 2], np.float32), center, width)
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0], atol=1e-5)
