"""The image type every module passes around: one loaded slice (:class:`CTImage`) and its head box.

A leaf module: it imports nothing of the package, so :mod:`brain_ct.io` (which builds a
:class:`CTImage`), :mod:`brain_ct.framing` (which finds its head box) and
:mod:`brain_ct.windowing` (which turns it into model input) can all name the type without
importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: A box (x0, y0, x1, y1) in an image's own pixels, x1/y1 exclusive.
Box = tuple[int, int, int, int]


@dataclass
class CTImage:
    """One loaded slice.

    Attributes:
        hu: float32 ``[H, W]`` in Hounsfield units for DICOM input; None for ordinary images.
        display: uint8 ``[H, W]``: the brain window (40/80 HU) for DICOM, the grey image otherwise.
        meta: allow-listed, JSON-serialisable information (see :mod:`brain_ct.privacy`).
        head_box: (x0, y0, x1, y1), x1/y1 exclusive: the head's bounding box in this image's pixels.
        source: ``"dicom"``, ``"nifti"`` or ``"image"``.
        name: display name: the file name when read from a path, else ``"upload"``; never a tag value.
        colour_fraction: fraction of strongly coloured pixels before grey conversion (0 for DICOM).
        head_check: ``"passed"`` when the "looks like an axial head CT" check ran and passed,
            ``"skipped"`` when ``allow_unverified`` skipped it (outputs must then carry a caveat).
        head_outline: int32 ``[N, 2]`` polygon of (x, y) points in this image's pixels: the head's
            outline as framing found it when the image was loaded (``head_box`` is its bounding
            box; the whole image's rectangle when no head was found). Kept so that the head is
            found once: the regions of a heatmap are named inside this same outline. None for an
            image built by hand; :func:`brain_ct.framing.head_mask` then finds it.
    """

    hu: np.ndarray | None
    display: np.ndarray
    meta: dict[str, Any]
    head_box: Box
    source: str
    name: str
    colour_fraction: float = field(default=0.0)
    head_check: str = field(default="passed")
    head_outline: np.ndarray | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.display.shape[0]), int(self.display.shape[1])
