"""Labels of training records: class names, subtype names and checks (also where a Hub dataset keeps
them), the run's label set, loss weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.labels import ANY, LABEL_MODES, SUBTYPE_LABELS, SUBTYPES, subtype_vector
from train.data.records import SUBTYPE_COLUMN

#: Folder / class names accepted for each label (case-insensitive).
CLASS_ALIASES: dict[str, int] = {
    "normal": 0,
    "no_hemorrhage": 0,
    "no-hemorrhage": 0,
    "negative": 0,
    "0": 0,
    "healthy": 0,
    "hemorrhage": 1,
    "haemorrhage": 1,
    "hemorrhagic": 1,
    "ich": 1,
    "positive": 1,
    "1": 1,
    "bleed": 1,
}

#: Image-folder metadata file naming per-file subtypes (Hugging Face's imagefolder convention).
METADATA_FILE = "metadata.jsonl"

#: Largest BCE positive weight of one label (a rare subtype, e.g. epidural at 0.4 % of RSNA's slices,
#: would otherwise weigh 250 × and swamp the other terms).
POS_WEIGHT_MAX = 20.0


def class_id(name: str, where: str) -> int:
    """Map a class folder or label name to 0 (normal) / 1 (hemorrhage).

    Raises:
        InvalidInputError: the name is not a known class; the message lists what is accepted.
    """
    key = str(name).strip().lower().replace(" ", "_")
    if key not in CLASS_ALIASES:
        raise InvalidInputError(
            f"{where}: class {name!r} is not recognised; use 'normal' and 'hemorrhage' "
            f"(accepted aliases: {', '.join(sorted(CLASS_ALIASES))}) or the subtype names "
            f"{', '.join(SUBTYPES)}"
        )
    return CLASS_ALIASES[key]


def folder_class(name: str, where: str) -> tuple[int, list[str]]:
    """A class folder's ``(label, subtypes)``: a subtype name (any case) → ``(1, [name])``, ``normal`` and
    its aliases → ``(0, [])``, ``hemorrhage`` and its aliases → ``(1, ["any"])`` (subtype unknown).

    Raises:
        InvalidInputError: not a class name (:func:`class_id`).
    """
    key = str(name).strip().lower()
    if key in SUBTYPES:
        return 1, [key]
    label = class_id(name, where)
    return label, ([ANY] if label else [])


def checked_subtypes(names: Any, where: str) -> list[str]:
    """Lower-cased subtype names of one slice, checked against RSNA's labels (``any`` allowed).

    Raises:
        InvalidInputError: not a list of names, or a name that is not ``any`` or a subtype.
    """
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise InvalidInputError(f"{where}: subtypes must be a list of names; got {names!r}")
    out = sorted({str(n).strip().lower() for n in names})
    try:
        subtype_vector(out)
    except ValueError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    if ANY in out and len(out) > 1:
        out.remove(ANY)  # "any" is implied by a named subtype
    return out


def has_subtypes(columns: dict[str, list[Any]] | None) -> bool:
    """True when some record names a subtype (not just ``any``): the data can train a subtype model."""
    if not columns or SUBTYPE_COLUMN not in columns:
        return False
    return any(set(names) & set(SUBTYPES) for names in columns[SUBTYPE_COLUMN])


def check_subtype_records(columns: dict[str, list[Any]], where: str) -> None:
    """Refuse records a subtype run cannot learn from: a bleed of unknown subtype (``["any"]`` only).

    Its five subtype targets would be guesses (all 0 would teach "this blood is no subtype"), so such
    slices are refused rather than trained as any-only.

    Raises:
        InvalidInputError: naming how many such slices ``where`` has, a few of them, and the fix.
    """
    names = columns.get(SUBTYPE_COLUMN)
    labels = columns["label"]
    unknown = [
        i
        for i, label in enumerate(labels)
        if int(label) == 1 and not (names is not None and set(names[i]) & set(SUBTYPES))
    ]
    if unknown:
        shown = ", ".join(Path(str(columns["path"][i])).name or f"record {i}" for i in unknown[:5])
        raise InvalidInputError(
            f"{where}: {len(unknown)} hemorrhage slice(s) have no subtype ({shown}"
            f"{', …' if len(unknown) > 5 else ''}); a subtype model needs each bleed's subtypes: file them under "
            f"subtype folders ({', '.join(SUBTYPES)}) or name them in {METADATA_FILE}, give the RSNA CSV's "
            "subtype rows, or train a binary model with --labels binary"
        )


def subtype_counts(columns: dict[str, list[Any]]) -> list[int]:
    """Positives per label in :data:`~brain_ct.labels.SUBTYPE_LABELS` order (``any`` first)."""
    vectors = [subtype_vector(names) for names in columns[SUBTYPE_COLUMN]]
    return np.asarray(vectors, dtype=np.int64).reshape(-1, len(SUBTYPE_LABELS)).sum(axis=0).tolist()


def subtype_pos_weights(positives: Sequence[int], n: int) -> list[float]:
    """BCE positive weights ``n_negative / n_positive`` per label, clipped to [1/20, 20]
    (:data:`POS_WEIGHT_MAX`); 1.0 for a label without positives or negatives.

    It is the multi-label form of the binary run's balanced weights: positives and negatives of each
    label then weigh the same in the loss (up to the clip).
    """
    out = []
    for p in positives:
        neg = n - int(p)
        w = neg / p if p > 0 and neg > 0 else 1.0
        out.append(float(min(max(w, 1.0 / POS_WEIGHT_MAX), POS_WEIGHT_MAX)))
    return out


def class_weights_from_counts(counts: Sequence[int]) -> list[float]:
    """Balanced cross-entropy weights ``n / (2 n_c)`` ([normal, hemorrhage]); 1.0 for an empty class."""
    total = float(sum(counts))
    return [total / (len(counts) * c) if c > 0 else 1.0 for c in counts]


def resolve_label_set(mode: str, train: dict[str, list[Any]] | None) -> str:
    """``--labels``: ``binary`` / ``subtypes`` as given; ``auto`` → subtypes when the training records name
    subtypes (RSNA subtype rows, subtype folders, ``metadata.jsonl``), else binary. Phantoms and real
    anatomy carry subtypes only when ``--labels subtypes`` asks them to."""
    if mode not in LABEL_MODES:
        raise InvalidInputError(f"--labels {mode!r} is unknown; choose one of {', '.join(LABEL_MODES)}")
    if mode != "auto":
        return mode
    return "subtypes" if has_subtypes(train) else "binary"


def finish_label_set(
    label_set: str, parts: dict[str, dict[str, list[Any]] | None]
) -> dict[str, dict[str, list[Any]] | None]:
    """Binary runs drop the ``subtypes`` column (their records stay as before); subtype runs check every
    split (:func:`check_subtype_records`)."""
    out = {}
    for name, columns in parts.items():
        if columns is not None and label_set == "binary":
            columns = {k: v for k, v in columns.items() if k != SUBTYPE_COLUMN}
        elif columns is not None:
            check_subtype_records(columns, f"the {name} data")
        out[name] = columns
    return out


@dataclass(frozen=True)
class HubSubtypes:
    """Where a Hub dataset keeps each example's subtypes (:func:`hub_subtypes`).

    Attributes:
        columns: ``(column, label name)`` pairs of 0/1 columns named like
            :data:`~brain_ct.labels.SUBTYPE_LABELS` (any case; ``any`` optional).
        sequence: a column holding a list of subtype names (strings, or class indices into ``names``).
        names: the class names of ``sequence`` when it is a list of ``ClassLabel``.
    """

    columns: tuple[tuple[str, str], ...] = ()
    sequence: str | None = None
    names: tuple[str, ...] | None = None

    def of(self, ex: dict[str, Any]) -> list[str]:
        """The subtype names of one example (checked; ``[]`` for a normal one)."""
        if self.sequence is not None:
            raw = ex[self.sequence] or []
            values = [self.names[int(v)] if self.names is not None else v for v in raw]
            return checked_subtypes(values, f"dataset column {self.sequence!r}")
        present = [name for column, name in self.columns if int(ex[column]) == 1]
        named = [n for n in present if n != ANY]
        if ANY in dict(map(reversed, self.columns)) and bool(named) != (ANY in present):
            raise InvalidInputError(
                f"dataset example with subtype columns {present}: 'any' must be 1 exactly when a subtype is 1"
            )
        return named

    @property
    def used_columns(self) -> list[str]:
        return [self.sequence] if self.sequence is not None else [c for c, _ in self.columns]


def hub_subtypes(features: Any, sequence_column: str = SUBTYPE_COLUMN) -> HubSubtypes | None:
    """How a Hub dataset names subtypes: the five subtype columns (0/1, RSNA's names, any case; an
    ``any`` column too if present), or ``sequence_column`` as a list of names; None when it does neither."""
    if features is None:
        return None
    by_name = {str(c).strip().lower(): str(c) for c in features}
    if set(SUBTYPES) <= set(by_name):
        return HubSubtypes(columns=tuple((by_name[n], n) for n in SUBTYPE_LABELS if n in by_name))
    feature = features.get(sequence_column)
    if feature is None:
        return None
    inner = getattr(feature, "feature", None)
    if inner is None:
        raise InvalidInputError(
            f"dataset column {sequence_column!r} (--subtypes_column) must be a list of subtype names; "
            f"it is {type(feature).__name__}"
        )
    names = getattr(inner, "names", None)
    return HubSubtypes(sequence=sequence_column, names=tuple(names) if names else None)
