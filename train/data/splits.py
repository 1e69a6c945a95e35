"""The data of one run (:class:`Splits`), before transforms are attached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from train.data.labels import HubSubtypes


@dataclass
class Splits:
    """The data of one run, before transforms are attached.

    Attributes:
        train, validation, test: ``datasets.Dataset`` (or ``IterableDataset`` when streaming) or None.
        class_counts: [normal, hemorrhage] training counts, or None when unknown (streaming).
        description: what the data is, for the config's ``brain_ct_trained_on`` and the model card.
        synthetic: True when the training data is generated phantoms.
        hub: True for a Hub dataset (examples carry images, not file records).
        generated_masks: True when lesion masks come with generated examples (phantoms, lesions painted
            into real anatomy) rather than from mask files.
        label_set: ``"binary"`` or ``"subtypes"`` (``--labels``, ``auto`` resolved from the data).
        subtype_counts: training positives per label in :data:`~brain_ct.labels.SUBTYPE_LABELS` order
            (subtype runs; None when unknown: streaming).
        hub_subtypes: where a Hub dataset keeps its subtypes (subtype runs on ``--dataset_name``).
    """

    train: Any
    validation: Any
    test: Any
    class_counts: list[int] | None
    description: str
    synthetic: bool = False
    hub: bool = False
    label_map: dict[Any, int] | None = None
    generated_masks: bool = False
    label_set: str = "binary"
    subtype_counts: list[int] | None = None
    hub_subtypes: HubSubtypes | None = None


def to_dataset(columns: dict[str, list[Any]] | None) -> Any:
    if columns is None:
        return None
    import datasets

    return datasets.Dataset.from_dict(columns)
