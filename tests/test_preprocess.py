"""brain_ct.preprocess: the one path from a CTImage to the model input, values worked out by hand."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers_models import phantom_ct, plain_ct

from brain_ct.errors import InvalidInputError
from brain_ct.image import CTImage
from brain_ct.model import ModelSettings
from brain_ct.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    context_stack,
    crop_padded,
    default_stats,
    interpolation,
    mask_to_model_grid,
    model_input,
    normalize,
    resize_square,
    to_model_input,
)
from brain_ct.windowing import AIR_HU, DEFAULT_WINDOWS

WINDOWS = ((40.0, 80.0), (80.0, 200.0), (600.0, 2800.0))


# ------------------------------------------------------------------------------ the steps
def test_crop_padded_fills_outside_the_image() -> None:
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    crop = crop_padded(image, (-1, -1, 3, 3), fill=-1000.0)
    assert crop.shape == (4, 4)
    np.testing.assert_array_equal(crop[0], [-1000.0] * 4)
    np.testing.assert_array_equal(crop[:, 0], [-1000.0] * 4)
    np.testing.assert_array_equal(crop[1:, 1:], image[:3, :3])


@pytest.mark.parametrize(
    ("source", "target", "flag"),
    [
        (512, 224, cv2.INTER_AREA),
        (225, 224, cv2.INTER_AREA),
        (224, 224, cv2.INTER_LINEAR),
        (100, 224, cv2.INTER_LINEAR),
    ],
)
def test_interpolation_averages_when_shrinking_only(source: int, target: int, flag: int) -> None:
    assert interpolation(source, target) == flag


def test_resize_square_shrinks_by_area_averages() -> None:
    image = np.array([[0, 4, 8, 8], [0, 4, 8, 8], [1, 1, 2, 6], [1, 1, 6, 2]], np.float32)
    np.testing.assert_allclose(resize_square(image, 2), [[2.0, 8.0], [1.0, 4.0]])


def test_normalize_checks_channel_count() -> None:
    with pytest.raises(InvalidInputError, match="3 channels, got 2 means"):
        normalize(np.zeros((3, 2, 2), np.float32), [0, 0], [1, 1])
    out = normalize(np.full((3, 1, 1), 0.5, np.float32), IMAGENET_MEAN, IMAGENET_STD)
    assert out[0, 0, 0] == pytest.approx((0.5 - 0.485) / 0.229, rel=1e-5)
    assert out[2, 0, 0] == pytest.approx((0.5 - 0.406) / 0.225, rel=1e-5)


def test_default_stats_are_imagenet_for_three_channels_else_their_average() -> None:
    assert default_stats(3) == (list(IMAGENET_MEAN), list(IMAGENET_STD))
    mean, std = default_stats(9)
    assert mean == pytest.approx([(0.485 + 0.456 + 0.406) / 3] * 9)
    assert std == pytest.approx([(0.229 + 0.224 + 0.225) / 3] * 9)


def test_to_model_input_dicom_has_one_channel_per_window() -> None:
    hu = np.full((64, 64), AIR_HU, np.float32)
    hu[16:48, 16:48] = 40.0  # brain-centre value
    ct = plain_ct(hu=hu, head_box=(16, 16, 48, 48))
    x = to_model_input(ct, ["brain", "subdural", "bone"], size=32, mean=None, std=None)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    centre = x[:, 16, 16]
    np.testing.assert_allclose(centre, [0.5, (40 - (80 - 100)) / 200, (40 - (600 - 1400)) / 2800], atol=1e-5)
    assert x[:, 0, 0].max() == 0.0  # margin is air


def test_to_model_input_8bit_repeats_the_grey_image() -> None:
    grey = np.zeros((50, 50), np.uint8)
    grey[10:40, 10:40] = 255
    ct = plain_ct(display=grey, head_box=(10, 10, 40, 40))
    x = to_model_input(ct, DEFAULT_WINDOWS, size=16, mean=None, std=None)
    np.testing.assert_array_equal(x[0], x[1])
    np.testing.assert_array_equal(x[0], x[2])
    assert x[0, 8, 8] == pytest.approx(1.0)


# ------------------------------------------------------------------------------ model_input
@pytest.mark.parametrize("kind", ["dicom", "image"])
def test_model_input_single_slice_is_to_model_input_under_the_settings(kind: str) -> None:
    ct = phantom_ct(120, lesion=(80, 60, 6), kind=kind)
    settings = ModelSettings(windows=WINDOWS, image_size=64, threshold=0.5)
    x = model_input(ct, settings)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    np.testing.assert_array_equal(x, to_model_input(ct, settings.windows, 64, settings.mean, settings.std))
    np.testing.assert_array_equal(model_input(ct, settings, [None, None]), x)  # neighbours ignored at k = 0


def test_model_input_context_stacks_neighbours_in_order() -> None:
    centre = phantom_ct(120)
    before = phantom_ct(120, lesion=(40, 60, 10))
    after = phantom_ct(120, lesion=(80, 60, 10))
    settings = ModelSettings(windows=((40, 80),), image_size=64, threshold=0.5, context_slices=1)
    m = np.asarray(settings.mean, np.float32)[:, None, None]
    s = np.asarray(settings.std, np.float32)[:, None, None]
    alone = model_input(centre, settings)
    assert alone.shape == (3, 64, 64)
    # Without neighbours the slice stands in for them; only the per-channel mean/std differ.
    raw = alone * s + m
    np.testing.assert_allclose(raw[0], raw[1], atol=1e-5)
    np.testing.assert_allclose(raw[2], raw[1], atol=1e-5)
    stacked = model_input(centre, settings, [before, after])
    raw = stacked * s + m
    np.testing.assert_allclose(
        raw, context_stack(centre, settings.windows, 64, 1, [before, after]), atol=1e-5
    )
    # Channel 0 is s-1 (lesion on the image's left half), channel 2 is s+1 (right half).
    diff_before = np.abs(raw[0] - raw[1])
    diff_after = np.abs(raw[2] - raw[1])
    assert diff_before[:, :32].sum() > 10 * diff_before[:, 32:].sum() + 1e-6
    assert diff_after[:, 32:].sum() > 10 * diff_after[:, :32].sum() + 1e-6
    with pytest.raises(ValueError, match="needs 2 neighbours"):
        model_input(centre, settings, [before])


def test_context_neighbours_are_framed_with_the_centre_head_box() -> None:
    centre = phantom_ct(120)
    shifted = CTImage(
        hu=centre.hu, display=centre.display, meta={}, head_box=(0, 0, 60, 60), source="dicom", name="nb"
    )
    stack = context_stack(centre, WINDOWS, 48, 1, [shifted, None])
    np.testing.assert_array_equal(stack[:3], stack[3:6])  # same pixels, cropped with the centre's box


class _Recorder:
    """An augmentation hook that records what model_input hands it."""

    def __init__(self) -> None:
        self.windows_seen: list[tuple[float, float]] | None = None
        self.stack_seen: np.ndarray | None = None

    def windows(self, windows):
        self.windows_seen = list(windows)
        return [(c + 40.0, w) for c, w in windows]

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        self.stack_seen = stack.copy()
        return stack[:, :, ::-1].copy()


def test_augmentation_hook_sees_the_unnormalised_stack_and_its_output_is_normalised() -> None:
    ct = phantom_ct(120, lesion=(40, 60, 10))
    settings = ModelSettings(windows=WINDOWS, image_size=64, threshold=0.5)
    hook = _Recorder()
    x = model_input(ct, settings, augment=hook)
    assert hook.windows_seen == list(WINDOWS)
    moved = [(c + 40.0, w) for c, w in WINDOWS]
    np.testing.assert_array_equal(hook.stack_seen, to_model_input(ct, moved, 64, None, None))
    assert hook.stack_seen.min() >= 0.0 and hook.stack_seen.max() <= 1.0
    want = normalize(hook.stack_seen[:, :, ::-1].copy(), settings.mean, settings.std)
    np.testing.assert_array_equal(x, want)


def test_augmentation_hook_windows_leave_8bit_input_alone() -> None:
    ct = phantom_ct(120, kind="image")
    settings = ModelSettings(windows=WINDOWS, image_size=64, threshold=0.5)
    hook = _Recorder()
    model_input(ct, settings, augment=hook)
    assert hook.windows_seen is None  # an 8-bit image was windowed by whoever saved it
    np.testing.assert_array_equal(hook.stack_seen, to_model_input(ct, WINDOWS, 64, None, None))


def test_mask_lines_up_with_the_input_pixel_for_pixel() -> None:
    grey = np.zeros((90, 120), np.uint8)
    cv2.circle(grey, (70, 40), 9, 255, -1)
    ct = plain_ct(display=grey, head_box=(20, 5, 110, 85))  # box partly outside: padding too
    grid = mask_to_model_grid((grey > 0).astype(np.float32), ct, 40)
    image = model_input(ct, ModelSettings(((40, 80),), 40, 0.5, (0.0,), (1.0,)))[0]
    assert grid.shape == (40, 40) and grid.max() > 0.9
    np.testing.assert_allclose(grid, image, atol=1.0 / 255 + 1e-6)  # uint8 rounding only
