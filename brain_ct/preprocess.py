"""The ONE preprocessing path: a :class:`~brain_ct.image.CTImage` to the tensor the network sees.

Training (``train.data.SliceTransform``) and inference (:class:`brain_ct.predictor.Predictor`) both call
:func:`model_input`, so a model sees in use exactly what it was trained on. The steps, in order:

1. **framing**: crop the square :func:`brain_ct.windowing.model_box` around ``ct.head_box`` (padded with
   air where it extends past the image), so scanner DICOMs and internet figures are framed alike;
2. **resize** to ``image_size`` with :func:`resize_square` (area averaging when shrinking, bilinear when
   enlarging);
3. **window channels**: DICOM input (``ct.hu`` set) gives one channel per window, HU → [0, 1]
   (:func:`brain_ct.windowing.window`); an 8-bit image (``ct.hu is None``) was already windowed by whoever
   saved it, so its grey values scaled to [0, 1] are repeated in every channel;
4. **slice context** (``context_slices`` = k > 0): the windowed slices s−k … s+k stacked as channels
   (:func:`context_stack`);
5. **augmentation** (training only): a hook that may jitter the windows before step 3 and moves pixels of
   the [0, 1] stack (:class:`Augmentation`);
6. **normalisation**: per channel ``(x − mean) / std`` (:func:`normalize`).

:func:`mask_to_model_grid` frames a lesion mask with the same box and resize rule, so mask guidance lines
up with the input pixel for pixel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.image import Box, CTImage
from brain_ct.windowing import AIR_HU, DEFAULT_WINDOWS, Window, model_box, resolve_windows, window

#: ImageNet statistics: what ``microsoft/resnet-50`` was pretrained with.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class InputSettings(Protocol):
    """What :func:`model_input` reads of a model's settings: :class:`brain_ct.model.ModelSettings` has it.

    A protocol rather than an import, so ``brain_ct.model`` (which takes its default normalisation from
    here) and this module do not import each other.
    """

    @property
    def windows(self) -> Sequence[Window]: ...

    @property
    def image_size(self) -> int: ...

    @property
    def context_slices(self) -> int: ...

    @property
    def mean(self) -> Sequence[float]: ...

    @property
    def std(self) -> Sequence[float]: ...


class Augmentation(Protocol):
    """Training's hook into :func:`model_input`; inference passes none.

    ``windows`` may jitter the (center, width) pairs in HU before windowing (they only change DICOM
    input: an 8-bit image's channels do not depend on them); ``__call__`` gets the float32
    ``[C, S, S]`` stack in [0, 1], before normalisation, and returns an array of the same shape.
    """

    def windows(self, windows: Sequence[Window]) -> Sequence[Window]: ...

    def __call__(self, stack: np.ndarray) -> np.ndarray: ...


def default_stats(n_channels: int) -> tuple[list[float], list[float]]:
    """ImageNet mean/std for 3 channels; their averages repeated for any other channel count."""
    if n_channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    m, s = float(np.mean(IMAGENET_MEAN)), float(np.mean(IMAGENET_STD))
    return [m] * n_channels, [s] * n_channels


def crop_padded(image: np.ndarray, box: Box, fill: float) -> np.ndarray:
    """Crop ``box`` (x0, y0, x1, y1; x1/y1 exclusive) out of a 2-D ``image``, padding with ``fill``
    where it extends past the image."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    inside = image[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y1 - h), max(0, x1 - w)
    if top == left == bottom == right == 0:
        return inside
    return cv2.copyMakeBorder(inside, top, bottom, left, right, cv2.BORDER_CONSTANT, value=fill)


def interpolation(source_side: int, target_side: int) -> int:
    """The OpenCV interpolation for resizing a side of ``source_side`` to ``target_side`` pixels.

    Area averaging when shrinking (bilinear would alias: thin bleeds and skull edges flicker with the
    scale), bilinear when enlarging.
    """
    return cv2.INTER_AREA if source_side > target_side else cv2.INTER_LINEAR


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square 2-D ``image`` to ``size`` × ``size`` pixels by the :func:`interpolation` rule."""
    return cv2.resize(image, (size, size), interpolation=interpolation(image.shape[0], size))


def normalize(channels: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """Per-channel ``(x - mean) / std`` on a float32 ``[C, H, W]`` array (in place).

    ``mean`` or ``std`` None leaves the values as they are (in [0, 1]).

    Raises:
        InvalidInputError: not one mean and one std per channel.
    """
    if mean is None or std is None:
        return channels
    c = channels.shape[0]
    if len(mean) != c or len(std) != c:
        raise InvalidInputError(
            f"normalisation needs one mean and std per channel: {c} channels, "
            f"got {len(mean)} means and {len(std)} stds"
        )
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    channels -= m
    channels /= s
    return channels


def to_model_input(
    ct: CTImage,
    windows: Sequence[str | Sequence[float]] = DEFAULT_WINDOWS,
    size: int = 224,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> np.ndarray:
    """The single-slice model input: framed, resized, windowed and normalised.

    Args:
        ct: the loaded slice.
        windows: one (center, width) in HU or preset name per output channel.
        size: output side in pixels.
        mean, std: per-channel normalisation applied after windowing (length C, or None to
            leave values in [0, 1]).

    Returns:
        float32 ``[C, size, size]``, C = ``len(windows)``.
    """
    wins = resolve_windows(windows)
    box = model_box(ct)
    if ct.hu is not None:
        patch = resize_square(crop_padded(ct.hu.astype(np.float32, copy=False), box, AIR_HU), size)
        channels = np.stack([window(patch, c, w) for c, w in wins])
    else:
        grey = resize_square(crop_padded(ct.display, box, 0), size).astype(np.float32) * np.float32(1 / 255)
        channels = np.repeat(grey[None], len(wins), axis=0)
    return normalize(channels, mean, std)


def context_stack(
    ct: CTImage,
    windows: Sequence[str | Sequence[float]],
    size: int,
    k: int,
    neighbors: Sequence[CTImage | None] | None = None,
) -> np.ndarray:
    """Windowed slices s−k … s+k stacked as channels, not yet normalised.

    Channel index = slice offset × len(windows) + window index. Neighbours are cropped with the
    centre slice's head box so the stack stays aligned; a missing neighbour (None, or no
    ``neighbors`` at all, e.g. a single uploaded image) repeats the centre slice. ``k == 0`` is the
    centre alone (``neighbors`` ignored).

    Returns:
        float32 ``[len(windows) × (2k + 1), size, size]`` in [0, 1].

    Raises:
        ValueError: ``neighbors`` given with other than 2k entries (a programming error, not input).
    """
    centre = to_model_input(ct, windows, size, None, None)
    if k == 0:
        return centre
    nbs = list(neighbors) if neighbors is not None else [None] * (2 * k)
    if len(nbs) != 2 * k:
        raise ValueError(
            f"a context model with {k} slice(s) each side needs {2 * k} neighbours; got {len(nbs)}"
        )
    stack: list[np.ndarray] = []
    for nb in [*nbs[:k], None, *nbs[k:]]:
        if nb is None or nb is ct:
            stack.append(centre)
        else:
            aligned = dataclasses.replace(nb, head_box=ct.head_box) if nb.shape == ct.shape else nb
            stack.append(to_model_input(aligned, windows, size, None, None))
    return np.concatenate(stack, axis=0)


def model_input(
    ct: CTImage,
    settings: InputSettings,
    neighbors: Sequence[CTImage | None] | None = None,
    augment: Augmentation | None = None,
) -> np.ndarray:
    """The model input of one slice under ``settings`` — the one entry point of training and inference.

    Args:
        ct: the slice.
        settings: the model's :class:`~brain_ct.model.ModelSettings` (windows, image size,
            context slices, mean/std).
        neighbors: for context models, the 2k slices ``[s−k, …, s−1, s+1, …, s+k]`` (None entries
            allowed); ignored by single-slice models.
        augment: training augmentation (:class:`Augmentation`), or None.

    Returns:
        float32 ``[settings.num_channels, image_size, image_size]``, normalised.
    """
    windows: Sequence[Window] = settings.windows
    if augment is not None and ct.hu is not None:
        windows = augment.windows(windows)
    stack = context_stack(ct, windows, settings.image_size, settings.context_slices, neighbors)
    if augment is not None:
        stack = augment(stack)
    return normalize(stack, settings.mean, settings.std)


def mask_to_model_grid(mask: np.ndarray, ct: CTImage, size: int) -> np.ndarray:
    """Frame and resize a lesion mask on ``ct``'s pixel grid exactly as :func:`model_input` frames ``ct``.

    Returns:
        float32 ``[size, size]`` in [0, 1] (area-averaged, so thin lesions keep partial weight).
    """
    return resize_square(crop_padded(mask.astype(np.float32, copy=False), model_box(ct), 0.0), size)
