"""The ``set_transform`` callable (:class:`SliceTransform`): records → model inputs, one decoder per source.

The model sees exactly what the Predictor feeds it: :func:`brain_ct.io.load_image` →
:func:`brain_ct.preprocess.model_input`, under the model's own :class:`~brain_ct.model.ModelSettings`.
A record is decoded by the function its ``source`` names (:data:`DECODERS`); nothing is precomputed to disk.
Slice-context models (``--context_slices k``) see the windowed slices s−k … s+k as channels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.image import CTImage
from brain_ct.io import load_image
from brain_ct.labels import SUBTYPES, subtype_vector
from brain_ct.preprocess import mask_to_model_grid, model_input
from train.data.hub_datasets import hub_example
from train.data.image_folder import read_mask
from train.data.labels import HubSubtypes
from train.data.nifti_volumes import nifti_example
from train.data.phantoms import PhantomCache, phantom_record_example
from train.data.real_anatomy import real_anatomy_decode
from train.data.records import (
    DOMAINS,
    INPUT_KINDS,
    RECORD_SOURCES,
    SOURCE_COLUMN,
    SUBTYPE_COLUMN,
    RecordSource,
)

if TYPE_CHECKING:
    from brain_ct.model import ModelSettings
    from train.augment import Augmenter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoded:
    """One record decoded: the slice, its lesion mask (or None), label (0/1), neighbours (slice context,
    else None) and subtype names (``[]`` normal; None when the source names none)."""

    ct: CTImage
    mask: np.ndarray | None
    label: int
    neighbors: list[CTImage | None] | None
    subtypes: list[str] | None


@dataclass
class SliceTransform:
    """The ``set_transform`` callable: records → model inputs (``pixel_values``, ``labels``, …).

    ``labels`` is the class index (0/1) for a binary model and the six 0/1 targets (float, always in
    :data:`~brain_ct.labels.SUBTYPE_LABELS` order, whatever the model's logit order) for a subtype model
    (``settings.is_multi_label``).

    Args:
        settings: the model's preprocessing (windows, image size, mean/std, context slices) and label set,
            as the Predictor reads them from the saved config.
        augmenter: training augmentation, or None (evaluation).
        with_masks: also return ``mask`` (float32 [size, size]) and ``has_mask`` (bool) per example.
        allow_unverified: skip brain_ct's head-CT plausibility check (framing is always done).
        synthetic_size: phantom side in pixels for synthetic records.
        image_column, label_map: for Hub datasets: the image column and label value → 0/1.
        hub_subtypes: for Hub datasets with subtypes: where they are
            (:func:`~train.data.labels.hub_subtypes`).
        phantoms: prefetched phantoms for synthetic records (:class:`~train.data.phantoms.PhantomCache`), or
            None to generate each when it is read.
    """

    settings: ModelSettings
    augmenter: Augmenter | None = None
    with_masks: bool = False
    allow_unverified: bool = True
    synthetic_size: int = 256
    image_column: str | None = None
    label_column: str = "label"
    label_map: dict[Any, int] | None = None
    hub_subtypes: HubSubtypes | None = None
    phantoms: PhantomCache | None = field(default=None, repr=False)
    _load_image: Callable[..., Any] | None = field(default=None, repr=False)

    def _loader(self) -> Callable[..., Any]:
        if self._load_image is None:
            self._load_image = load_image
        return self._load_image

    def load(
        self, ex: dict[str, Any], rng: np.random.Generator | None = None
    ) -> tuple[Any, np.ndarray | None, int]:
        """Decode one record into ``(CTImage, mask on the image grid or None, label)``."""
        d = self.decode(ex, rng)
        return d.ct, d.mask, d.label

    def load_with_context(
        self, ex: dict[str, Any], rng: np.random.Generator | None = None
    ) -> tuple[Any, np.ndarray | None, int, list[Any] | None]:
        """Decode one record into ``(CTImage, mask or None, label, neighbours)`` (:meth:`decode`)."""
        d = self.decode(ex, rng)
        return d.ct, d.mask, d.label, d.neighbors

    def source_of(self, ex: dict[str, Any]) -> RecordSource | None:
        """What a record is: its ``source`` column, or ``"hub"`` for a Hub dataset's own rows (this transform
        was given their ``image_column``); None for a record without one."""
        return "hub" if self.image_column is not None else ex.get(SOURCE_COLUMN)

    def decode(self, ex: dict[str, Any], rng: np.random.Generator | None = None) -> Decoded:
        """Decode one record (see :class:`Decoded`) with the decoder of its source (:data:`DECODERS`).

        The neighbours are None for single-slice training, else the 2k slices around the centre (None
        entries where the record has none). ``rng`` (training) draws a fresh variant of a real-anatomy
        record each time; without it the record's own seed makes it the same every time. Generated
        examples name the subtype actually generated; file records their ``subtypes`` column.
        """
        source = self.source_of(ex)
        if source not in DECODERS:
            raise InvalidInputError(
                f"a training record has source {source!r}; records name one of {', '.join(RECORD_SOURCES)} "
                "in their 'source' column (train.data.records)"
            )
        return DECODERS[source](self, ex, rng)

    def _no_context(self) -> list[CTImage | None] | None:
        k = self.settings.context_slices
        return [None] * (2 * k) if k else None

    def _decode_real(self, ex: dict[str, Any], rng: np.random.Generator | None) -> Decoded:
        ct, mask, subtype = real_anatomy_decode(ex, self.synthetic_size, rng)
        names = [subtype] if subtype else []
        return Decoded(ct, mask if self.with_masks else None, int(ex["label"]), self._no_context(), names)

    def _decode_hub(self, ex: dict[str, Any], rng: np.random.Generator | None) -> Decoded:
        if self.image_column is None:
            raise InvalidInputError("a Hub dataset example needs the transform's image_column")
        ct, label, names = hub_example(
            ex,
            self.image_column,
            self.label_column,
            self.label_map,
            self.hub_subtypes,
            self._loader(),
            self.allow_unverified,
        )
        return Decoded(ct, None, label, self._no_context(), names)

    def _decode_nifti(self, ex: dict[str, Any], rng: np.random.Generator | None) -> Decoded:
        ct, mask, neighbors = nifti_example(
            ex["path"],
            ex["mask_path"],
            int(ex["nifti_slice"]),
            with_mask=self.with_masks,
            k=self.settings.context_slices,
            allow_unverified=self.allow_unverified,
        )
        return Decoded(ct, mask, int(ex["label"]), neighbors, None)

    def _decode_phantom(self, ex: dict[str, Any], rng: np.random.Generator | None) -> Decoded:
        cache = self.phantoms if self.phantoms is not None else PhantomCache()
        ct, mask, neighbors, subtype = phantom_record_example(
            ex, self.synthetic_size, self.settings.context_slices, cache
        )
        names = [subtype] if subtype else []
        return Decoded(ct, mask if self.with_masks else None, int(ex["label"]), neighbors, names)

    def _decode_file(self, ex: dict[str, Any], rng: np.random.Generator | None) -> Decoded:
        k = self.settings.context_slices
        ct = self._loader()(ex["path"], allow_unverified=self.allow_unverified)
        mask = None
        if self.with_masks and ex.get("mask_path"):
            mask = read_mask(ex["mask_path"], ct.display.shape[:2])
        neighbors = None
        if k:
            # A neighbour is context, not the example: one that will not load is left out (repeated centre).
            paths = list(ex.get("neighbors") or [""] * (2 * k))
            neighbors = [self._load_neighbor(path) for path in paths]
        names = ex.get(SUBTYPE_COLUMN)
        return Decoded(ct, mask, int(ex["label"]), neighbors, list(names) if names is not None else None)

    def targets(self, decoded: Decoded) -> int | list[float]:
        """The ``labels`` entry: the class index (binary), or the six targets (subtype model).

        Raises:
            InvalidInputError: a subtype model's example that names no subtype for its bleed.
        """
        if not self.settings.is_multi_label:
            return decoded.label
        names = decoded.subtypes
        if names is None or (decoded.label == 1 and not set(names) & set(SUBTYPES)):
            raise InvalidInputError(
                f"{decoded.ct.name or 'a slice'}: a subtype model's example needs its subtypes, and this "
                "one has none (see check_subtype_records)"
            )
        return [float(v) for v in subtype_vector(names)]

    def _load_neighbor(self, path: str) -> CTImage | None:
        if not path:
            return None
        try:
            return self._loader()(path, allow_unverified=True)
        except InvalidInputError as exc:
            logger.warning("slice-context neighbour %s skipped: %s", Path(path).name, exc)
            return None

    def encode(
        self,
        ct: CTImage,
        mask: np.ndarray | None,
        rng: np.random.Generator | None = None,
        neighbors: Sequence[CTImage | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One slice → (normalised float32 [C, S, S], mask float32 [S, S] or None), augmented if training.

        The channels are :func:`brain_ct.preprocess.model_input` — exactly the Predictor's input — with the
        augmentation drawn for this example as its hook (the same geometry for every stacked slice and
        the mask).
        """
        size = self.settings.image_size
        grid_mask = mask_to_model_grid(mask, ct, size) if mask is not None else None
        if self.augmenter is None:
            return model_input(ct, self.settings, neighbors), grid_mask
        draw = self.augmenter.draw(rng if rng is not None else np.random.default_rng(), size)
        pv = model_input(ct, self.settings, neighbors, augment=draw)
        return pv, (draw.mask(grid_mask) if grid_mask is not None else None)

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        import torch

        n = len(next(iter(batch.values())))
        out: dict[str, list[Any]] = {"pixel_values": [], "labels": [], "input_kind": [], "domain": []}
        if self.with_masks:
            out["mask"], out["has_mask"] = [], []
        # Draw augmentation randomness from torch's RNG: the DataLoader seeds it per worker and epoch
        # from the Trainer's seed, so runs are reproducible and workers don't repeat each other.
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item())) if self.augmenter else None
        for i in range(n):
            ex = {k: v[i] for k, v in batch.items()}
            decoded = self.decode(ex, rng)
            ct, label = decoded.ct, decoded.label
            pv, grid_mask = self.encode(ct, decoded.mask, rng, decoded.neighbors)
            out["pixel_values"].append(torch.from_numpy(np.ascontiguousarray(pv)))
            out["labels"].append(self.targets(decoded))
            out["input_kind"].append(INPUT_KINDS.index("dicom" if ct.hu is not None else "image"))
            out["domain"].append(DOMAINS.index("phantom" if self.source_of(ex) == "phantom" else "real"))
            if self.with_masks:
                has = grid_mask is not None and label == 1 and float(grid_mask.max()) > 0
                out["mask"].append(
                    torch.from_numpy(
                        grid_mask if has else np.zeros((self.settings.image_size,) * 2, np.float32)
                    )
                )
                out["has_mask"].append(bool(has))
        return out


#: The decoder of each record source (:data:`~train.data.records.RecordSource`).
DECODERS: dict[
    RecordSource, Callable[[SliceTransform, dict[str, Any], np.random.Generator | None], Decoded]
] = {
    "file": SliceTransform._decode_file,
    "nifti": SliceTransform._decode_nifti,
    "phantom": SliceTransform._decode_phantom,
    "real": SliceTransform._decode_real,
    "hub": SliceTransform._decode_hub,
}


def attach_transform(dataset: Any, transform: SliceTransform) -> Any:
    """Decode lazily: ``set_transform`` on a map-style dataset, a batched ``map`` on a streaming one."""
    if dataset is None:
        return None
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        columns = list(dataset.features) if dataset.features is not None else None
        return dataset.map(transform, batched=True, batch_size=16, remove_columns=columns)
    dataset.set_transform(transform)
    return dataset
