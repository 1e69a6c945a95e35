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
    REPEAT,
    EightBitMapping,
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
from brain_ct.windowing import AIR_HU, DEFAULT_WINDOWS, model_box

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


# ------------------------------------------------------------------------------ 8-bit mapping
PSEUDO = EightBitMapping("pseudo_hu")


def _figure() -> CTImage:
    """An 8-bit figure with every grey level: a ramp across the head box (flat at 0 and 255 at its ends,
    so they survive resizing), the box partly outside the image."""
    grey = np.zeros((90, 120), np.uint8)
    grey[10:80, 20:110] = np.clip(np.linspace(-60, 315, 90), 0, 255).round().astype(np.uint8)[None, :]
    return plain_ct(display=grey, head_box=(20, 5, 110, 85))


def test_repeat_is_bit_identical_to_the_grey_in_every_channel_and_the_default() -> None:
    ct = _figure()
    old = ModelSettings(windows=WINDOWS, image_size=40, threshold=0.5)
    assert old.eight_bit == REPEAT and REPEAT.mode == "repeat"
    # the 8-bit path as it was before the mapping existed, written out step by step
    grey = resize_square(crop_padded(ct.display, model_box(ct), 0), 40).astype(np.float32) * np.float32(
        1 / 255
    )
    want = normalize(np.repeat(grey[None], 3, axis=0), old.mean, old.std)
    np.testing.assert_array_equal(model_input(ct, old), want)
    explicit = ModelSettings(windows=WINDOWS, image_size=40, threshold=0.5, eight_bit="repeat")
    np.testing.assert_array_equal(model_input(ct, explicit), want)


def test_pseudo_hu_brain_channel_is_the_grey_and_wider_windows_compress_it() -> None:
    ct = _figure()
    grey = to_model_input(ct, [(40, 80)], 40, None, None)[0]  # "repeat": the grey / 255
    x = to_model_input(ct, WINDOWS, 40, None, None, eight_bit=PSEUDO)
    np.testing.assert_allclose(x[0], grey, atol=1e-6)  # the assumed window reproduces the figure
    # pseudo-HU = 0 + 80 g; the subdural window (80, 200) maps it to (80 g + 20) / 200,
    # the bone window (600, 2800) to (80 g + 800) / 2800: affine, compressed, inside (0, 1)
    np.testing.assert_allclose(x[1], 0.1 + 0.4 * grey, atol=1e-6)
    np.testing.assert_allclose(x[2], 800 / 2800 + 80 / 2800 * grey, atol=1e-6)
    assert grey.min() == 0.0 and grey.max() == pytest.approx(1.0)  # the clipped ends are in the test
    # another assumed window moves the ends: grey 0 is its low end, 255 its high end
    wide = to_model_input(ct, [(80, 200)], 40, None, None, eight_bit=EightBitMapping("pseudo_hu", (40, 400)))
    want = np.clip(((40 - 200 + 400 * grey) - (80 - 100)) / 200, 0, 1)
    np.testing.assert_allclose(wide[0], want, atol=1e-6)
    assert wide[0].min() == 0.0 and wide[0].max() == 1.0


def test_the_mapping_never_touches_dicom_input() -> None:
    ct = phantom_ct(120, lesion=(80, 60, 6))
    for k, neighbors in ((0, None), (1, [phantom_ct(120), None])):
        plain = ModelSettings(windows=WINDOWS, image_size=64, threshold=0.5, context_slices=k)
        pseudo = ModelSettings(
            windows=WINDOWS, image_size=64, threshold=0.5, context_slices=k, eight_bit=PSEUDO
        )
        np.testing.assert_array_equal(model_input(ct, plain, neighbors), model_input(ct, pseudo, neighbors))


def test_pseudo_hu_reaches_context_stacks() -> None:
    ct = _figure()
    settings = ModelSettings(
        windows=WINDOWS, image_size=40, threshold=0.5, context_slices=1, eight_bit=PSEUDO
    )
    stack = context_stack(ct, WINDOWS, 40, 1, None, PSEUDO)
    single = to_model_input(ct, WINDOWS, 40, None, None, eight_bit=PSEUDO)
    np.testing.assert_array_equal(stack, np.concatenate([single] * 3))  # a figure has no neighbours
    np.testing.assert_array_equal(
        model_input(ct, settings), normalize(stack.copy(), settings.mean, settings.std)
    )


def test_window_jitter_moves_the_windows_applied_to_pseudo_hu() -> None:
    ct = phantom_ct(120, kind="image")
    settings = ModelSettings(windows=WINDOWS, image_size=64, threshold=0.5, eight_bit=PSEUDO)
    hook = _Recorder()
    model_input(ct, settings, augment=hook)
    assert hook.windows_seen == list(WINDOWS)  # the same hook call as for a DICOM
    moved = [(c + 40.0, w) for c, w in WINDOWS]
    np.testing.assert_array_equal(
        hook.stack_seen, to_model_input(ct, moved, 64, None, None, eight_bit=PSEUDO)
    )
    # the brain channel moved by 40 HU = half its width: the figure's grey shifted down by 0.5, clipped
    grey = to_model_input(ct, [(40, 80)], 64, None, None)[0]
    np.testing.assert_allclose(hook.stack_seen[0], np.clip(grey - 0.5, 0, 1), atol=1e-6)


@pytest.mark.parametrize(
    ("mode", "window", "match"),
    [
        ("pseudo-hu", (40, 80), r"unknown 8-bit mapping 'pseudo-hu' \(did you mean 'pseudo_hu'\?\); allowed"),
        ("grey", (40, 80), r"unknown 8-bit mapping 'grey'; allowed: repeat, pseudo_hu"),
        ("pseudo_hu", (40, 0), r"width > 0 HU"),
        ("pseudo_hu", (40,), r"\(center, width\) in HU"),
        ("pseudo_hu", (float("nan"), 80), r"finite center"),
    ],
)
def test_eight_bit_mapping_refuses_bad_values(mode: str, window: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EightBitMapping(mode, window)


def test_mask_lines_up_with_the_input_pixel_for_pixel() -> None:
    grey = np.zeros((90, 120), np.uint8)
    cv2.circle(grey, (70, 40), 9, 255, -1)
    ct = plain_ct(display=grey, head_box=(20, 5, 110, 85))  # box partly outside: padding too
    grid = mask_to_model_grid((grey > 0).astype(np.float32), ct, 40)
    image = model_input(ct, ModelSettings(((40, 80),), 40, 0.5, (0.0,), (1.0,)))[0]
    assert grid.shape == (40, 40) and grid.max() > 0.9
    np.testing.assert_allclose(grid, image, atol=1.0 / 255 + 1e-6)  # uint8 rounding only
