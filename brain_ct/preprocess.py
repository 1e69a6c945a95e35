"""The ONE preprocessing path: a :class:`~brain_ct.image.CTImage` to the tensor the network sees.

Training (``train.data.transform.SliceTransform``) and inference (:class:`brain_ct.predictor.Predictor`) both call
:func:`model_input`, so a model sees in use exactly what it was trained on. The steps, in order:

1. **framing**: crop the square :func:`brain_ct.windowing.model_box` around ``ct.head_box`` (padded with
   air where it extends past the image), so scanner DICOMs and internet figures are framed alike;
2. **resize** to ``image_size`` with :func:`resize_square` (area averaging when shrinking, bilinear when
   enlarging);
3. **window channels**: DICOM input (``ct.hu`` set) gives one channel per window, HU → [0, 1]
   (:func:`brain_ct.windowing.window`); an 8-bit image (``ct.hu is None``) was already windowed by whoever
   saved it, and the model's :class:`EightBitMapping` (config ``brain_ct_8bit_mapping``) says what its
   grey becomes: ``"repeat"`` (every model saved before the key existed) repeats the grey scaled to [0, 1]
   in every channel; ``"pseudo_hu"`` reads the grey as a render in an assumed window, maps it back to
   pseudo-HU and applies each model window to that as to a DICOM;
4. **slice context** (``context_slices`` = k > 0): the windowed slices s−k … s+k stacked as channels
   (:func:`context_stack`);
5. **augmentation** (training only): a hook that may jitter the windows before step 3 (applied to HU:
   measured, or pseudo-HU under ``"pseudo_hu"``) and moves pixels of the [0, 1] stack (:class:`Augmentation`);
6. **normalisation**: per channel ``(x − mean) / std`` (:func:`normalize`).

:func:`mask_to_model_grid` frames a lesion mask with the same box and resize rule, so mask guidance lines
up with the input pixel for pixel.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.image import Box, CTImage
from brain_ct.windowing import AIR_HU, DEFAULT_WINDOWS, PRESETS, Window, model_box, resolve_windows, window

#: ImageNet statistics: what ``microsoft/resnet-50`` was pretrained with.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: ``brain_ct_8bit_mapping`` values: what an 8-bit image's grey becomes (:class:`EightBitMapping`).
EIGHT_BIT_MAPPINGS: tuple[str, ...] = ("repeat", "pseudo_hu")


@dataclasses.dataclass(frozen=True)
class EightBitMapping:
    """How an 8-bit image's grey becomes the model's window channels (config ``brain_ct_8bit_mapping``,
    ``brain_ct_8bit_assumed_window``).

    Attributes:
        mode: ``"repeat"``: the grey g ∈ [0, 255] scaled to [0, 1] in every channel (the behaviour of every
            model saved before the key existed, and the default when it is absent). ``"pseudo_hu"``: the
            grey is read as a render in ``assumed_window`` (c, w), mapped to pseudo-HU
            ``c − w/2 + g/255 · w`` and every model window is applied to that as to a DICOM's HU, so an
            internet figure's channels resemble a DICOM's: a model window equal to the assumed one
            reproduces the grey, a wider one gets a compressed copy. Grey 0 and 255 mean "at or beyond
            the window's end"; they stay at the ends (c − w/2, c + w/2): which HU they stood for is lost.
        assumed_window: (center, width) in HU the figures are assumed to be shown in (default the brain
            window 40/80, what most head-CT figures online use); unused by ``"repeat"``.

    Raises:
        ValueError: an unknown mode (with the closest allowed one) or a window that is not finite with
            width > 0 HU.
    """

    mode: str = "repeat"
    assumed_window: Window = PRESETS["brain"]

    def __post_init__(self) -> None:
        if self.mode not in EIGHT_BIT_MAPPINGS:
            close = difflib.get_close_matches(str(self.mode), EIGHT_BIT_MAPPINGS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown 8-bit mapping {self.mode!r}{hint}; allowed: {', '.join(EIGHT_BIT_MAPPINGS)}"
            )
        try:
            c, w = (float(v) for v in self.assumed_window)
        except (TypeError, ValueError):
            raise ValueError(
                f"the assumed 8-bit window is (center, width) in HU; got {self.assumed_window!r}"
            ) from None
        if not (np.isfinite(c) and np.isfinite(w) and w > 0):
            raise ValueError(
                f"the assumed 8-bit window needs a finite center and width > 0 HU; got {self.assumed_window!r}"
            )
        object.__setattr__(self, "assumed_window", (c, w))

    @property
    def uses_hu(self) -> bool:
        """True when the model windows are applied to (pseudo-)HU, so a window jitter changes the input."""
        return self.mode == "pseudo_hu"

    @property
    def description(self) -> str:
        """What an 8-bit image's grey becomes, as a clause for the model card."""
        if self.mode == "repeat":
            return "an 8-bit PNG/JPG (already windowed by whoever saved it) is repeated in every channel"
        c, w = self.assumed_window
        return (
            f"an 8-bit PNG/JPG is read as a render in the window {c:g}/{w:g} HU, mapped back to pseudo-HU "
            "(grey 0 and 255 stay at that window's ends) and windowed like a DICOM "
            '(`brain_ct_8bit_mapping` "pseudo_hu")'
        )

    def channels(self, grey: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
        """The window channels of a framed, resized 8-bit image.

        Args:
            grey: float32 ``[S, S]``, the grey scaled to [0, 1].
            windows: the model's (center, width) pairs in HU.

        Returns:
            float32 ``[len(windows), S, S]`` in [0, 1].
        """
        if self.mode == "repeat":
            return np.repeat(grey[None], len(windows), axis=0)
        hu = grey_to_pseudo_hu(grey, self.assumed_window)
        return np.stack([window(hu, c, w) for c, w in windows])


#: What a model without ``brain_ct_8bit_mapping`` does: every model saved before the key existed.
REPEAT = EightBitMapping()


def grey_to_pseudo_hu(grey: np.ndarray, assumed_window: Window) -> np.ndarray:
    """Pseudo-HU of a grey rendered in ``assumed_window``: ``c − w/2 + grey · w``, the inverse of
    :func:`brain_ct.windowing.window` on the window's open range.

    Resizing and padding commute with this affine map, so mapping after the framed resize (cheaper: the
    model grid is small) equals mapping the full image first up to float rounding.

    Args:
        grey: float32 array in [0, 1] (grey level / 255), any shape.
        assumed_window: (center, width) in HU the image is taken to have been rendered in.

    Returns:
        float32 array of the same shape, in HU within [c − w/2, c + w/2].
    """
    c, w = assumed_window
    return grey * np.float32(w) + np.float32(c - w / 2.0)


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

    @property
    def eight_bit(self) -> EightBitMapping: ...


class Augmentation(Protocol):
    """Training's hook into :func:`model_input`; inference passes none.

    ``windows`` may jitter the (center, width) pairs in HU before windowing; it is called for DICOM input
    and for an 8-bit image under ``"pseudo_hu"`` (the jittered windows are applied to its pseudo-HU, as to
    a DICOM's HU), not under ``"repeat"`` (those channels do not depend on the windows); ``__call__`` gets the float32
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
    eight_bit: EightBitMapping = REPEAT,
) -> np.ndarray:
    """The single-slice model input: framed, resized, windowed and normalised.

    Args:
        ct: the loaded slice.
        windows: one (center, width) in HU or preset name per output channel.
        size: output side in pixels.
        mean, std: per-channel normalisation applied after windowing (length C, or None to
            leave values in [0, 1]).
        eight_bit: what an 8-bit image's grey becomes (:class:`EightBitMapping`); DICOM input ignores it.

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
        channels = eight_bit.channels(grey, wins)
    return normalize(channels, mean, std)


def context_stack(
    ct: CTImage,
    windows: Sequence[str | Sequence[float]],
    size: int,
    k: int,
    neighbors: Sequence[CTImage | None] | None = None,
    eight_bit: EightBitMapping = REPEAT,
) -> np.ndarray:
    """Windowed slices s−k … s+k stacked as channels, not yet normalised.

    Channel index = slice offset × len(windows) + window index. Neighbours are cropped with the
    centre slice's head box so the stack stays aligned; a missing neighbour (None, or no
    ``neighbors`` at all, e.g. a single uploaded image) repeats the centre slice. ``k == 0`` is the
    centre alone (``neighbors`` ignored). ``eight_bit`` maps every 8-bit slice of the stack alike.

    Returns:
        float32 ``[len(windows) × (2k + 1), size, size]`` in [0, 1].

    Raises:
        ValueError: ``neighbors`` given with other than 2k entries (a programming error, not input).
    """
    centre = to_model_input(ct, windows, size, None, None, eight_bit)
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
            stack.append(to_model_input(aligned, windows, size, None, None, eight_bit))
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
            context slices, mean/std, 8-bit mapping).
        neighbors: for context models, the 2k slices ``[s−k, …, s−1, s+1, …, s+k]`` (None entries
            allowed); ignored by single-slice models.
        augment: training augmentation (:class:`Augmentation`), or None.

    Returns:
        float32 ``[settings.num_channels, image_size, image_size]``, normalised.
    """
    windows: Sequence[Window] = settings.windows
    eight_bit = settings.eight_bit
    # The jitter means one thing for every input: the model windows move before they meet HU, measured
    # or pseudo. Under "repeat" an 8-bit image's channels do not depend on the windows at all.
    if augment is not None and (ct.hu is not None or eight_bit.uses_hu):
        windows = augment.windows(windows)
    stack = context_stack(ct, windows, settings.image_size, settings.context_slices, neighbors, eight_bit)
    if augment is not None:
        stack = augment(stack)
    return normalize(stack, settings.mean, settings.std)


def mask_to_model_grid(mask: np.ndarray, ct: CTImage, size: int) -> np.ndarray:
    """Frame and resize a lesion mask on ``ct``'s pixel grid exactly as :func:`model_input` frames ``ct``.

    Returns:
        float32 ``[size, size]`` in [0, 1] (area-averaged, so thin lesions keep partial weight).
    """
    return resize_square(crop_padded(mask.astype(np.float32, copy=False), model_box(ct), 0.0), size)
