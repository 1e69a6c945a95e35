"""Hugging Face dataset examples: the dataset's own rows (an image column, a label or subtype columns).

Hub rows carry no record columns: :class:`~train.data.transform.SliceTransform` knows them by its
``image_column`` (source ``"hub"``) and decodes them with :func:`hub_example`. :func:`build_hub_splits` loads
the dataset and cuts its splits (``--dataset_name``; streamed with ``--streaming``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.image import CTImage
from brain_ct.labels import SUBTYPES
from train.data.labels import HubSubtypes, class_id, hub_subtypes, resolve_label_set, subtype_counts
from train.data.records import SUBTYPE_COLUMN
from train.data.splits import Splits

if TYPE_CHECKING:
    from train.args import DataArguments

logger = logging.getLogger(__name__)


def pil_to_png_bytes(image: Any) -> bytes:
    """Encode a PIL image (as ``datasets`` decodes Hub images) to PNG bytes for :func:`brain_ct.io.load_image`."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    if arr.dtype not in (np.uint8, np.uint16):
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise InvalidInputError(f"cannot encode a {arr.shape} {arr.dtype} image from the dataset as PNG")
    return buf.tobytes()


def hf_label_map(features: Any, label_column: str) -> dict[Any, int] | None:
    """Map a Hub dataset's label values to 0/1 by class name; None when labels are plain 0/1 ints."""
    feat = features.get(label_column) if features is not None else None
    names = getattr(feat, "names", None)
    if names:
        return {i: class_id(n, f"dataset label column {label_column!r}") for i, n in enumerate(names)}
    return None


def hub_example(
    ex: dict[str, Any],
    image_column: str,
    label_column: str,
    label_map: dict[Any, int] | None,
    found: HubSubtypes | None,
    loader: Callable[..., CTImage],
    allow_unverified: bool,
) -> tuple[CTImage, int, list[str] | None]:
    """``(ct, label 0/1, subtype names or None)`` of one Hub row; the image goes through ``loader``
    (:func:`brain_ct.io.load_image`) as PNG bytes when ``datasets`` decoded it to a PIL image.

    A dataset with subtype columns and no label column takes the label from them ("any")."""
    raw = ex[image_column]
    data = raw if isinstance(raw, (bytes, bytearray)) else pil_to_png_bytes(raw)
    ct = loader(bytes(data), allow_unverified=allow_unverified)
    names = found.of(ex) if found is not None else None
    if label_column in ex:
        value = ex[label_column]
        label = label_map[value] if label_map is not None else int(value)
    else:  # a dataset with subtype columns only: the label is "any"
        label = int(bool(names))
    return ct, label, names


def build_hub_splits(a: DataArguments, seed: int) -> Splits:
    """The splits of ``--dataset_name``: its own validation / test splits when it has them (or names them),
    else a seeded validation split of the training split (stratified by label where labels are classes).

    Raises:
        InvalidInputError: a missing split or column, or a subtype run on a dataset that names no subtypes.
    """
    import datasets  # heavy: only Hub runs need it

    loaded = datasets.load_dataset(a.dataset_name, a.dataset_config_name, streaming=a.streaming)
    if a.train_split not in loaded:
        raise InvalidInputError(
            f"dataset {a.dataset_name!r} has no split {a.train_split!r} (--train_split); it has {list(loaded)}"
        )
    train = loaded[a.train_split]
    features = train.features
    found, label_set = _hub_label_set(a, features)
    has_label = features is None or a.label_column in features
    label_map = hf_label_map(features, a.label_column) if has_label else None
    validation = _named_split(a, loaded, a.validation_split_name, "validation")
    test = _named_split(a, loaded, a.test_split_name, "test")
    if a.streaming:
        train, validation = _streamed(a, train, validation, seed)
        counts = sub_counts = None
    else:
        keep = (
            [a.image_column] + ([a.label_column] if has_label else []) + (found.used_columns if found else [])
        )
        split_by = a.label_column if label_map is not None else None
        train, validation, test = _in_memory(a, train.select_columns(keep), validation, test, seed, split_by)
        counts, sub_counts = _hub_counts(train, a.label_column if has_label else None, label_map, found)
    desc = f"Hugging Face dataset {a.dataset_name!r}" + (
        f" ({a.dataset_config_name})" if a.dataset_config_name else ""
    )
    return Splits(
        train,
        validation,
        test,
        counts,
        desc,
        synthetic=False,
        hub=True,
        label_map=label_map,
        label_set=label_set,
        subtype_counts=sub_counts if label_set == "subtypes" else None,
        hub_subtypes=found if label_set == "subtypes" or not has_label else None,
    )


def _hub_label_set(a: DataArguments, features: Any) -> tuple[HubSubtypes | None, str]:
    """Where the dataset keeps subtypes and the run's label set; checks the columns the run reads."""
    found = hub_subtypes(features, getattr(a, "subtypes_column", SUBTYPE_COLUMN))
    label_set = resolve_label_set(
        getattr(a, "labels", "auto"), {SUBTYPE_COLUMN: [list(SUBTYPES)]} if found else None
    )
    if label_set == "subtypes" and found is None:
        raise InvalidInputError(
            f"dataset {a.dataset_name!r} names no subtypes: it needs the five 0/1 columns {', '.join(SUBTYPES)} "
            f"or a column of subtype-name lists (--subtypes_column); its columns are {list(features or [])}"
        )
    required = [(a.image_column, "--image_column")]
    if found is None or (features is not None and a.label_column in features):
        required.append((a.label_column, "--label_column"))  # optional when subtypes give the label
    for col, flag in required:
        if features is not None and col not in features:
            raise InvalidInputError(
                f"dataset {a.dataset_name!r} has no column {col!r} ({flag}); its columns are {list(features)}"
            )
    return found, label_set


def _named_split(a: DataArguments, loaded: Any, name: str | None, default: str) -> Any:
    """The split ``name`` (which must exist), else the one called ``default`` if there is one, else None."""
    key = name if name is not None else (default if default in loaded else None)
    if name is not None and name not in loaded:
        raise InvalidInputError(
            f"dataset {a.dataset_name!r} has no split {name!r}; it has {list(loaded.keys())}"
        )
    return loaded[key] if key is not None else None


def _streamed(a: DataArguments, train: Any, validation: Any, seed: int) -> tuple[Any, Any]:
    """Streamed train / validation: the first examples held out when there is no validation split."""
    if validation is None:
        n_val = a.max_eval_samples or 500
        logger.warning(
            "streaming %s without a validation split: the first %d examples of the stream are "
            "held out for validation (not stratified: make sure the stream is shuffled)",
            a.dataset_name,
            n_val,
        )
        validation, train = train.take(n_val), train.skip(n_val)
    elif a.max_eval_samples:
        validation = validation.take(a.max_eval_samples)
    if a.max_train_samples:
        train = train.take(a.max_train_samples)
    return train.shuffle(seed=seed, buffer_size=1000), validation


def _in_memory(
    a: DataArguments, train: Any, validation: Any, test: Any, seed: int, stratify_by: str | None
) -> tuple[Any, Any, Any]:
    """Train / validation / test of a loaded dataset: a seeded validation split (stratified by
    ``stratify_by``) when there is none, then ``--max_train_samples`` / ``--max_eval_samples``."""
    if validation is None:
        if stratify_by is not None:
            parts = train.train_test_split(
                test_size=a.validation_split, seed=seed, stratify_by_column=stratify_by
            )
        else:
            parts = train.train_test_split(test_size=a.validation_split, seed=seed)
        train, validation = parts["train"], parts["test"]
    if a.max_train_samples:
        train = train.shuffle(seed=seed).select(range(min(a.max_train_samples, len(train))))
    if a.max_eval_samples:
        validation = validation.select(range(min(a.max_eval_samples, len(validation))))
        if test is not None:
            test = test.select(range(min(a.max_eval_samples, len(test))))
    return train, validation, test


def _hub_counts(
    train: Any, label_column: str | None, label_map: dict[Any, int] | None, found: HubSubtypes | None
) -> tuple[list[int], list[int] | None]:
    """[normal, hemorrhage] counts of a Hub training split, and its positives per subtype label."""
    counts = [0, 0]
    if label_column is not None:
        for v in train[label_column]:
            counts[label_map[v] if label_map is not None else int(v)] += 1
    if found is None:
        return counts, None
    rows = train.select_columns(found.used_columns).to_dict()
    names = [found.of({k: v[i] for k, v in rows.items()}) for i in range(len(train))]
    if label_column is None:
        counts = [sum(1 for n in names if not n), sum(1 for n in names if n)]
    return counts, subtype_counts({SUBTYPE_COLUMN: names})
