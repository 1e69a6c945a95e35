"""Seeded synthetic axial head-CT slices in Hounsfield units with ground-truth hemorrhage masks.

The only training data of the bundled demo model, and the test data of this project. A model
trained on phantoms must not mistake real anatomy for blood, so the generator covers every
slice level from the skull base to the vertex and the classic hemorrhage mimics as NEGATIVE
findings (calcified pineal/choroid plexus/falx/basal ganglia, dense falx, tentorium and venous
sinuses, beam-hardening streaks, partial-volume bone, lossy compression), patients of all ages
and varied scanners; it randomises broadly rather than imitating one look.

Public API:

* :func:`generate_slice` / :func:`generate_series` / :func:`generate_context` (a slice and its
  neighbours, for slice-context training) → :class:`Phantom` (HU, mask, label, ...)
* :func:`to_dicom` → CT DICOM dataset with realistic (fake) tags
* :func:`render_8bit` → an 8-bit image like those found online
* :func:`write_dataset` → an image folder for ``datasets`` (used by ``python -m brain_ct synth``)
* :func:`paint_real_lesion` → a hemorrhage painted into a REAL HU slice (:mod:`.real_lesions`);
  :func:`real_variant` → one real slice made into many (deformed, re-scanned, with or without a lesion;
  :mod:`.real_augment`), written by the same :func:`to_dicom` / :func:`render_internet`

Modules: :mod:`~brain_ct.synthetic.anatomy` (the 3-D head), :mod:`~brain_ct.synthetic.lesions`
(hemorrhage subtypes), :mod:`~brain_ct.synthetic.scanner` (noise, blur, artefacts, fixtures),
:mod:`~brain_ct.synthetic.core` (generation), :mod:`~brain_ct.synthetic.export` (writers).
"""

from __future__ import annotations

from brain_ct.synthetic.anatomy import LEVELS
from brain_ct.synthetic.core import Phantom, generate_context, generate_series, generate_slice, mask_bbox
from brain_ct.synthetic.export import (
    COMPRESSIONS,
    FORMATS,
    STYLES,
    plain_8bit,
    render_8bit,
    render_internet,
    to_dicom,
    write_dataset,
)
from brain_ct.synthetic.lesions import SUBTYPE_LEVELS, SUBTYPES
from brain_ct.synthetic.real_augment import real_variant
from brain_ct.synthetic.real_lesions import intracranial_space, lesion_room, paint_real_lesion

__all__ = [
    "COMPRESSIONS",
    "FORMATS",
    "LEVELS",
    "STYLES",
    "SUBTYPES",
    "SUBTYPE_LEVELS",
    "Phantom",
    "generate_context",
    "generate_series",
    "generate_slice",
    "intracranial_space",
    "lesion_room",
    "mask_bbox",
    "paint_real_lesion",
    "plain_8bit",
    "render_8bit",
    "real_variant",
    "render_internet",
    "to_dicom",
    "write_dataset",
]
