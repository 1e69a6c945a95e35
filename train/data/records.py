"""The training record: what every source produces, as the columns of a :class:`datasets.Dataset`.

Records are light (paths, seeds, labels); :class:`train.data.transform.SliceTransform` decodes them lazily.
Every record says what it is in its ``source`` column (:data:`RecordSource`), and the transform picks the
decoder by that value alone. The other columns:

* ``path`` (str): image or DICOM file (a NIfTI volume, a real slice), "" for phantoms;
* ``label`` (int): 0 normal, 1 hemorrhage (RSNA's ``any``);
* ``subtypes`` (list[str], only where the source knows subtypes, :data:`SUBTYPE_COLUMN`): the RSNA subtype
  names of the slice (:data:`brain_ct.labels.SUBTYPES`), ``[]`` for a normal slice, ``["any"]`` for a bleed
  of unknown subtype (a ``hemorrhage/`` folder). Subtype runs (``--labels subtypes``) refuse ``["any"]``-only
  positives (:func:`~train.data.labels.check_subtype_records`): their five subtype targets would be
  guesses. Generated examples (phantoms, lesions painted into real anatomy) carry the subtype ASKED of the
  generator here; the transform takes the targets from what was actually generated
  (:attr:`brain_ct.synthetic.Phantom.subtype`);
* ``mask_path`` (str): lesion mask PNG (same pixel grid as the image, non-zero = lesion) or "";
* ``synthetic_seed`` (int): phantom seed, -1 for every other source;
* ``kind`` (str): "dicom" / "image" for phantoms and real-anatomy variants (how they are fed), "" for files
  (known after decoding);
* ``nifti_slice`` (int, NIfTI volumes only, :func:`~train.data.nifti_volumes.nifti_records`): the slice of
  the volume ``path`` in reading order (inferior → superior); ``mask_path`` is then the voxel mask volume;
* ``neighbors`` (list[str], slice-context training with files only): the 2k files
  ``[s−k … s−1, s+1 … s+k]`` of the slice's series in anatomical order, "" past either end
  (:func:`~train.data.image_folder.add_file_neighbors`);
* ``series_group`` (int, files with slice context and NIfTI volumes): which series or volume a record
  belongs to, so splits and folds keep it whole;
* ``real_seed`` / ``real_subtype`` / ``real_augment`` (real-anatomy records only,
  :func:`~train.data.real_anatomy.real_anatomy_records`; other sources get −1 / "" / False in
  :func:`merge_records`): a real normal slice (``path``) made into a variant — a painted lesion when
  ``label`` is 1, deformation and re-scan when ``real_augment`` — and fed as ``kind``.

Where do I add a new source? A module of its own producing these columns with a new :data:`RecordSource`
value, and its decoder in :data:`train.data.transform.DECODERS`.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from brain_ct.labels import ANY

#: What a record is, so how it is decoded: ``file`` (an image or DICOM file: image folders, RSNA folders),
#: ``nifti`` (a slice of a NIfTI volume), ``phantom`` (a generated head), ``real`` (a real normal slice made
#: into a variant) and ``hub`` (a row of a Hugging Face dataset: the dataset's own columns, so it carries no
#: ``source`` column; the transform knows it by its ``image_column``).
RecordSource = Literal["file", "nifti", "phantom", "real", "hub"]

#: Every :data:`RecordSource`, in declaration order.
RECORD_SOURCES: tuple[RecordSource, ...] = get_args(RecordSource)

#: The record column naming its :data:`RecordSource`.
SOURCE_COLUMN = "source"

#: The record column with a slice's subtype names (see the module docstring).
SUBTYPE_COLUMN = "subtypes"

#: Input kinds reported per example (``input_kind``): how the slice reached the model.
INPUT_KINDS: tuple[str, ...] = ("dicom", "image")

#: Anatomy domains reported per example (``domain``): "phantom" for generated heads (``synthetic_seed`` ≥ 0),
#: "real" for everything read from files or the Hub (real anatomy, with or without painted-in lesions).
#: The real-anatomy threshold rule bounds false positives on the real normals of the validation split.
DOMAINS: tuple[str, ...] = ("phantom", "real")

#: Offsets separating the phantom seeds of the train / validation / test splits (no overlap).
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


def file_columns(
    paths: list[str],
    labels: list[int],
    masks: list[str],
    subtypes: list[list[str]] | None = None,
    source: RecordSource = "file",
) -> dict[str, list[Any]]:
    """The columns every source has, for ``source`` records of these ``paths`` (a ``subtypes`` column only
    when ``subtypes`` is given)."""
    columns: dict[str, list[Any]] = {
        "path": paths,
        "label": labels,
        "mask_path": masks,
        "synthetic_seed": [-1] * len(paths),
        "kind": [""] * len(paths),
        SOURCE_COLUMN: [source] * len(paths),
    }
    if subtypes is not None:
        columns[SUBTYPE_COLUMN] = subtypes
    return columns


#: Columns only real-anatomy records carry (others get the defaults in :func:`merge_records`).
REAL_COLUMNS: dict[str, Any] = {"real_seed": -1, "real_subtype": "", "real_augment": False}


def merge_records(*parts: dict[str, list[Any]] | None) -> dict[str, list[Any]]:
    """Concatenate record columns of several sources; a column one source lacks gets its neutral value
    (:data:`REAL_COLUMNS`' defaults, ``-1`` for ``synthetic_seed``, ``[]`` for lists, ``""`` for text;
    ``subtypes`` from the label: ``[]`` or ``["any"]``, a bleed of unknown subtype)."""
    present = [p for p in parts if p]
    keys = list(dict.fromkeys(k for p in present for k in p))
    out: dict[str, list[Any]] = {k: [] for k in keys}
    for p in present:
        n = len(p["label"])
        for k in keys:
            if k in p:
                out[k] += p[k]
            elif k == SUBTYPE_COLUMN:  # a source without subtypes: normal, or a bleed of unknown subtype
                out[k] += [[ANY] if int(y) else [] for y in p["label"]]
            else:
                out[k] += [_neutral(k, present)] * n
    return out


def _neutral(key: str, parts: list[dict[str, list[Any]]]) -> Any:
    if key in REAL_COLUMNS:
        return REAL_COLUMNS[key]
    if key == "synthetic_seed":
        return -1
    sample = next((p[key][0] for p in parts if p.get(key)), None)
    return [] if isinstance(sample, list) else "" if isinstance(sample, str) else None
