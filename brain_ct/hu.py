"""Stored DICOM pixel values → Hounsfield units, and a slice in HU → :class:`~brain_ct.image.CTImage`.

* HU = stored value × (0028,1053) *Rescale Slope* + (0028,1052) *Rescale Intercept*, taken from
  the top level or, for enhanced multi-frame CT, from the frame's (0028,9145) *Pixel Value
  Transformation Sequence*; a (0028,3000) *Modality LUT Sequence* is applied when present. pydicom's
  helpers silently skip a missing tag; here slope 1 and intercept 0 are assumed only when the tag
  is absent, with a note in ``meta["Notes"]``, and a malformed value is refused.
* (0028,0120) *Pixel Padding Value* (to (0028,0121) *Pixel Padding Range Limit* when given) is
  compared with the stored values and set to air, -1000 HU.
* The RSNA 2019 fix: some scanners wrote 12-bit data ((0028,0101) *Bits Stored* 12,
  (0028,0103) *Pixel Representation* 0) with a wrong intercept (> -100) so that air wraps round
  to large stored values. As in the RSNA 2019 Kaggle kernels (``correct_dcm`` / fastai's
  ``fix_pxrepr``), stored + 1000 is taken modulo 4096 — values whose sum reaches 4096 wrap — and
  the intercept becomes -1000.
* MONOCHROME1 ("minimum is white"): stored values are mirrored within the range that
  Bits Stored / Pixel Representation allow (s → s_min + s_max − s) before the rescale, so the
  result follows the MONOCHROME2 convention that every CT viewer displays: dense is bright.

:func:`hu_image` builds the slice as every HU reader (DICOM, NIfTI) does: brain-window display and
the head outline found once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import brain_ct.framing as framing
from brain_ct.errors import InvalidInputError
from brain_ct.image import CTImage
from brain_ct.windowing import AIR_HU, PRESETS, window


def float_value(value: Any) -> float:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def functional_item(ds: Any, frame: int, sequence: str) -> Any:
    """The item of an enhanced multi-frame functional group for ``frame`` (per-frame, else shared)."""
    for group, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(group)
        if items and len(items) > index and sequence in items[index] and items[index][sequence].value:
            return items[index][sequence].value[0]
    return None


def _rescale(ds: Any, frame: int, shown: str, notes: list[str]) -> tuple[float, float]:
    """(slope, intercept): top level, else the frame's Pixel Value Transformation; defaults only if absent."""
    holder = ds
    if "RescaleSlope" not in ds and "RescaleIntercept" not in ds:
        item = functional_item(ds, frame, "PixelValueTransformationSequence")
        if item is not None:
            holder = item
    values = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        if keyword not in holder or holder[keyword].value in (None, ""):
            notes.append(f"{keyword} missing: {default:g} assumed")
            values.append(default)
            continue
        try:
            value = float_value(holder[keyword].value)
        except Exception:
            value = float("nan")
        if not np.isfinite(value) or (keyword == "RescaleSlope" and value == 0):
            raise InvalidInputError(
                f"{shown}: the DICOM's {keyword} is not a usable number; HU cannot be computed"
            )
        values.append(value)
    return values[0], values[1]


def _stored_range(ds: Any, arr: np.ndarray) -> tuple[int, int]:
    bits = int(ds.get("BitsStored") or arr.dtype.itemsize * 8)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _padding_mask(ds: Any, stored: np.ndarray) -> np.ndarray | None:
    if "PixelPaddingValue" not in ds or ds.PixelPaddingValue is None:
        return None

    def signed(v: int) -> int:
        # A padding value written as US for signed data ("63536" meaning -2000).
        bits = int(ds.get("BitsAllocated") or 16)
        if int(ds.get("PixelRepresentation") or 0) == 1 and v >= 1 << (bits - 1):
            return v - (1 << bits)
        return v

    pad = signed(int(float_value(ds.PixelPaddingValue)))
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None or limit == "":
        return stored == pad
    lim = signed(int(float_value(limit)))
    return (stored >= min(pad, lim)) & (stored <= max(pad, lim))


def needs_rsna_fix(ds: Any) -> bool:
    """Whether the RSNA 2019 12-bit intercept fix applies (BitsStored 12, unsigned, intercept > -100)."""
    try:
        return (
            int(ds.get("BitsStored") or 0) == 12
            and int(ds.get("PixelRepresentation") or 0) == 0
            and "RescaleIntercept" in ds
            and float(ds.RescaleIntercept) > -100
        )
    except Exception:
        return False


def stored_to_hu(
    stored: np.ndarray, ds: Any, frame: int = 0, notes: list[str] | None = None, shown: str = ""
) -> np.ndarray:
    """Convert one frame of stored pixel values to HU.

    Order: padding mask (on the stored values), RSNA 12-bit fix, MONOCHROME1 mirroring,
    Modality LUT or rescale, padding set to -1000 HU.

    Args:
        stored: integer ``[H, W]`` as decoded from (7FE0,0010) *Pixel Data*.
        ds: the dataset it came from.
        frame: the frame's index (for enhanced multi-frame rescale).
        notes: list to which processing notes are appended.
        shown: the file's display name, for error messages.

    Returns:
        float32 ``[H, W]`` in HU.
    """
    notes = [] if notes is None else notes
    pad = _padding_mask(ds, stored)
    values = stored.astype(np.int64 if stored.dtype.itemsize >= 4 else np.int32)
    rsna = needs_rsna_fix(ds)
    if rsna:
        values = values + 1000
        values[values >= 4096] -= 4096
        notes.append("RSNA 12-bit intercept fix applied (stored + 1000 modulo 4096, intercept -1000)")
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        low, high = _stored_range(ds, stored)
        values = (low + high) - values
        notes.append("MONOCHROME1: stored values mirrored to the MONOCHROME2 convention before rescale")
    if ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        hu = apply_modality_lut(values, ds).astype(np.float64)
        notes.append("Modality LUT Sequence applied")
    else:
        slope, intercept = _rescale(ds, frame, shown, notes)
        if rsna:
            intercept = -1000.0
        # float64: exact for any stored integer times a decimal slope; cast once at the end
        hu = values.astype(np.float64)
        if slope != 1.0:
            hu *= slope
        hu += intercept
    if pad is not None and pad.any():
        hu[pad] = AIR_HU
        notes.append(f"pixel padding set to {AIR_HU:g} HU ({int(pad.sum())} pixels)")
    return hu.astype(np.float32)


def hu_image(
    hu: np.ndarray, meta: dict[str, Any], name: str, source: str
) -> tuple[CTImage, framing.HeadOutline | None]:
    """A slice in HU as every HU reader (DICOM, NIfTI) builds it: the brain-window display and the head
    outline found once, with the head box from it.

    Args:
        hu: float32 [H, W] Hounsfield units.
        meta: allow-listed metadata only.
        name: display name (never a tag value).
        source: ``"dicom"`` or ``"nifti"``.
    """
    display = (window(hu, *PRESETS["brain"]) * 255.0 + 0.5).astype(np.uint8)
    outline = framing.outline_from_hu(hu)
    ct = CTImage(
        hu=hu,
        display=display,
        meta=meta,
        head_box=framing.head_box(outline, hu.shape),
        source=source,
        name=name,
        head_outline=framing.outline_polygon(outline, hu.shape),
    )
    return ct, outline
