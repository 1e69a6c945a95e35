"""Cutting record columns: the stratified validation split, seeded subsampling, and the folds of ``--folds``.

Records that must stay together (the slices of one series or volume, the variants of one real level)
stay on one side.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from brain_ct.errors import InvalidInputError


def stratified_split(
    columns: dict[str, list[Any]], fraction: float, seed: int
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Split record columns into (train, validation), stratified by label and seeded.

    With a ``series_group`` column (slice-context training) whole series go to one side, so validation
    never sees a neighbour of a training slice; the split is then as close to ``fraction`` and to the
    label ratio as whole series allow.

    Raises:
        InvalidInputError: a class has fewer than 2 examples (nothing to split).
    """
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    labels = np.asarray(columns["label"])
    counts = np.bincount(labels, minlength=2)
    if counts.min() < 2:
        raise InvalidInputError(
            f"cannot take a stratified validation split: class counts are normal={counts[0]}, "
            f"hemorrhage={counts[1]}; each class needs at least 2 examples (or give --validation_dir)"
        )
    pick = lambda idx: {k: [v[i] for i in sorted(idx)] for k, v in columns.items()}  # noqa: E731
    groups = columns.get("series_group")
    if groups is not None and len(set(groups)) < len(groups):
        folds = max(2, int(round(1.0 / max(fraction, 1e-6))))
        splitter = StratifiedGroupKFold(
            n_splits=min(folds, len(set(groups))), shuffle=True, random_state=seed
        )
        idx_train, idx_val = next(splitter.split(np.zeros(len(labels)), labels, groups))
        return pick(idx_train), pick(idx_val)
    n_val = max(2, int(round(fraction * len(labels))))
    n_val = min(n_val, len(labels) - 2)
    idx_train, idx_val = train_test_split(
        np.arange(len(labels)), test_size=n_val, stratify=labels, random_state=seed
    )
    return pick(idx_train), pick(idx_val)


def take(columns: dict[str, list[Any]], n: int | None, seed: int) -> dict[str, list[Any]]:
    """At most ``n`` records, chosen at random with ``seed`` (all when ``n`` is None or larger)."""
    total = len(columns["label"])
    if n is None or n >= total:
        return columns
    idx = sorted(np.random.default_rng(seed).choice(total, size=n, replace=False).tolist())
    return {k: [v[i] for i in idx] for k, v in columns.items()}


def fold_splits(
    columns: dict[str, list[Any]], k: int, seed: int
) -> list[tuple[dict[str, list[Any]], dict[str, list[Any]]]]:
    """``k`` (train, validation) pairs of record columns for ``--folds k``: seeded k-fold cross-validation,
    stratified by label; every record is in exactly one validation fold.

    Records that must not straddle folds share a group, as in :func:`stratified_split`: a ``series_group``
    (the slices of one DICOM series or NIfTI volume, so a fold model never validates on a neighbour of a
    slice it trained on) and, for real-anatomy records (``real_seed`` ≥ 0), their ``path`` (the variants of
    one real level). Phantoms and loose files are groups of their own.

    Raises:
        InvalidInputError: ``k`` < 2, ``k`` larger than the smaller class count or than the number of
            groups, or whole groups that cannot give every fold both classes.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(columns["label"], dtype=np.int64)
    counts = np.bincount(labels, minlength=2)
    if k < 2:
        raise InvalidInputError(f"--folds must be 2 or more (each fold model validates on one fold); got {k}")
    if counts.min() < k:
        name = ("normal", "hemorrhage")[int(counts.argmin())]
        raise InvalidInputError(
            f"--folds {k}: the training records have only {counts.min()} {name} slice(s) (normal={counts[0]}, "
            f"hemorrhage={counts[1]}); every fold needs both classes to choose its threshold on, so "
            f"--folds can be at most {counts.min()}"
        )
    series = columns.get("series_group") or [None] * len(labels)
    real = columns.get("real_seed") or [-1] * len(labels)
    keys = [
        ("series", g) if g is not None else ("level", p) if int(r) >= 0 else ("record", i)
        for i, (g, r, p) in enumerate(zip(series, real, columns["path"], strict=True))
    ]
    codes = {key: n for n, key in enumerate(dict.fromkeys(keys))}
    groups = np.asarray([codes[key] for key in keys])
    if len(codes) < len(keys):
        if len(codes) < k:
            raise InvalidInputError(
                f"--folds {k}: the training records form only {len(codes)} series / real levels, which "
                f"stay whole; use --folds {len(codes)} or fewer"
            )
        splitter: Any = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    pick = lambda idx: {key: [v[i] for i in sorted(idx)] for key, v in columns.items()}  # noqa: E731
    grouped = groups if isinstance(splitter, StratifiedGroupKFold) else None
    out = []
    for i, (idx_train, idx_val) in enumerate(splitter.split(np.zeros(len(labels)), labels, grouped)):
        for part, idx in (("validation", idx_val), ("training", idx_train)):
            fold_counts = np.bincount(labels[idx], minlength=2)
            if fold_counts.min() == 0:
                raise InvalidInputError(
                    f"--folds {k}: fold {i}'s {part} records hold only one class (normal={fold_counts[0]}, "
                    f"hemorrhage={fold_counts[1]}) because whole series / real levels stay together; "
                    "use fewer --folds"
                )
        out.append((pick(idx_train), pick(idx_val)))
    return out
