"""Find the head in a slice, and refuse what is clearly not an axial head CT.

Images from the internet are screenshots and figures: black or white margins, captions,
rulers, arrows, panel letters, several panels. :func:`outline_from_grey` / :func:`head_box` frame the head alike in
a scanner DICOM and in such a figure, so the model sees the same thing in both:

1. a foreground mask — HU > :data:`TISSUE_HU` for DICOM (skin, brain and bone, not air or
   the foam of the head rest); for 8-bit images, grey above half of Otsu's threshold;
2. for 8-bit images, components touching more than half of the image border are dropped (a
   white page around a figure, a thick white frame, a radiograph's body running off the edges);
3. each large component is filled (its outer contour: ventricles, sulci, a dark brain inside a
   bright skull) — unless it is a thin line round something else (a frame, a circle) — and then
   opened with a disc ~1.2 % of the image side, which cuts off what is thin: an arrow touching
   the skull, ruler ticks, text strokes, the head holder;
4. the largest remaining piece is the head. Images larger than :data:`WORK_SIDE` are analysed
   shrunk, and the box and outline are mapped back to the image's own pixels.

The head is found once, when a slice is loaded: its outline stays on the
:class:`~brain_ct.image.CTImage` (``head_outline``), and :func:`head_mask` fills it for
:mod:`brain_ct.explain`, which names heatmap regions inside that same head.

:func:`check_plausible` then refuses a colour photo, a blank image and anything whose largest
outline is not head-like (too small, not roughly elliptical, saturated white, no bright skull
rim round at least half of it, or flat inside: a drawn shape with no brain texture and no structures,
:func:`inner_edges`). For DICOM the check is lenient, because Modality CT is itself
strong evidence: it only refuses a scout (localizer) image, a blank slice, a slice with no
tissue at all, and a cross-section wider than :data:`MAX_HEAD_MM` (a chest or abdomen CT). Every refusal raises
:class:`~brain_ct.errors.NotHeadCTError`, which callers skip with ``allow_unverified=True``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from brain_ct.errors import NotHeadCTError
from brain_ct.image import Box, CTImage

#: HU above which a pixel counts as part of the head (skin, fat-free soft tissue, brain, bone).
TISSUE_HU = -300.0

#: A cross-section wider or taller than this (mm) is not a head (an adult head is ~140-210 mm).
MAX_HEAD_MM = 300.0

#: Fraction of strongly saturated pixels above which an image is a colour picture. Genuine CT
#: figures are grey, with at most a few coloured arrows, circles or labels (a few per cent).
MAX_COLOUR_FRACTION = 0.10

#: Smallest head outline accepted in an ordinary image, as a fraction of the image area.
MIN_HEAD_AREA_FRACTION = 0.02

#: Smallest head side accepted in an ordinary image, in pixels.
MIN_HEAD_SIDE = 32

#: Images are analysed on a grid of at most this many pixels a side (speed; boxes are mapped back).
WORK_SIDE = 512

#: A DICOM field of view narrower than this (mm, PixelSpacing x Columns/Rows) cannot hold a whole
#: head cross-section (an adult head is ~140-210 mm wide; head CTs are reconstructed at 180-250 mm).
MIN_HEAD_FOV_MM = 120.0

# Words of (0018,0015) Body Part Examined, Study/Series Description and Protocol Name, matched on
# whole upper-case words (and word beginnings for head words: HEADNECK, CRANIAL, CEREBRAL).
_HEAD_WORD = re.compile(
    r"\b(?:HEAD|BRAIN|SKULL|CRAN|CEREBR|NEURO|STROKE|KOPF|SCHADEL|SCHAEDEL|SCHÄDEL|HIRN|CABEZA|CRANE|CAPO)"
)
_OTHER_REGIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("spine", re.compile(r"\b(?:[CLT]-?SPINE|SPINE|SPINAL|LUMBAR|VERTEBRA\w*|SACRUM|COCCYX|WIRBEL\w*)\b")),
    ("chest", re.compile(r"\b(?:CHEST|THORAX|THORACIC|LUNGS?|PULMONARY|THORAX\w*|CARDIAC|HEART|CORONARY)\b")),
    ("abdomen", re.compile(r"\b(?:ABDOMEN|ABD|ABDOMINAL|LIVER|KIDNEYS?|RENAL|COLON|PANCREAS|UROGRAM)\b")),
    ("pelvis", re.compile(r"\b(?:PELVIS|PELVIC|HIPS?|BECKEN)\b")),
    (
        "limb",
        re.compile(
            r"\b(?:KNEE|ANKLE|FOOT|FEET|LEG|FEMUR|TIBIA|SHOULDER|ELBOW|WRIST|HAND|ARM|HUMERUS|EXTREMITY|EXTREMITIES)\b"
        ),
    ),
)
_HEADER_FIELDS = {
    "BodyPartExamined": "(0018,0015) Body Part Examined",
    "StudyDescription": "study description",
    "SeriesDescription": "series description",
    "ProtocolName": "protocol name",
}

#: Edges inside the head (Canny 40/120 on the working grid, away from its outline), in lengths of
#: its outline, below which the head counts as flat: a uniform shape in a ring has about one
#: outline's worth (the ring's inner edge); a real slice has the skull's two tables, ventricles,
#: sulci, lesions and noise (1.2 or more in every real slice and phantom in the repository).
MIN_INNER_EDGE_LENGTH = 1.15

#: ... unless its inner edges come in at least this many separate pieces (each at least 2 % of the
#: outline long): a bone-window slice shows a flat brain, but its skull breaks into many edges.
MIN_INNER_EDGE_PIECES = 4

#: How to skip the head-CT checks, appended to every NotHeadCTError message. The library names the
#: keyword argument; the CLI and the app replace it with their own switch.
OVERRIDE_HINT = "If it is one, pass allow_unverified=True."


@dataclass(frozen=True)
class HeadOutline:
    """The largest filled outline found in a foreground mask.

    Large images are analysed on a working grid of at most :data:`WORK_SIDE` pixels a side.

    Attributes:
        box: (x0, y0, x1, y1) in the image's own pixels, x1/y1 exclusive.
        mask: bool, the filled outline on the working grid.
        work_box: ``box`` on the working grid.
        area_fraction: filled area / image area.
        fill_ratio: area / box area (an ellipse fills pi/4 ~ 0.785 of its box).
        solidity: area / area of its convex hull.
        polygon: int32 ``[N, 2]``, the outer contour as (x, y) points in the image's own pixels
            (``box`` is its bounding box): what a :class:`~brain_ct.image.CTImage` keeps.
        scale: image pixels per working-grid pixel (1 for images up to :data:`WORK_SIDE`).
    """

    box: Box
    mask: np.ndarray
    work_box: Box
    area_fraction: float
    fill_ratio: float
    solidity: float
    polygon: np.ndarray
    scale: float = 1.0


def _kernel(shape: tuple[int, int], fraction: float = 0.012) -> np.ndarray:
    side = max(3, int(round(min(shape) * fraction)) | 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))


def largest_outline(mask: np.ndarray, *, max_border_contact: float | None = 0.5) -> HeadOutline | None:
    """The largest filled outline in a foreground mask, with thin attachments erased.

    Each large connected component is filled (holes inside its outer contour: ventricles,
    sulci, a dark brain inside a bright skull), then opened with a disc ~1.2 % of the image
    side, which cuts off what is thin (an arrow touching the skull, a ruler, a caption's
    strokes); the largest remaining piece of the largest component wins.

    Args:
        mask: bool or uint8 ``[H, W]``, non-zero = foreground.
        max_border_contact: components with more than this fraction of the image border's
            pixels are dropped as background (a white page, a thick frame, a radiograph running
            off the edges); None keeps them, as for DICOM, where what touches the border is
            still the patient.

    Returns:
        The outline, or None when no piece of at least 0.1 % of the image remains.
    """
    h, w = mask.shape
    fg = (np.asarray(mask) > 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return None
    min_area = max(16, int(0.001 * h * w))
    kernel = _kernel((h, w))
    perimeter = 2 * (h + w) - 4
    box_areas = stats[1:, cv2.CC_STAT_WIDTH].astype(np.int64) * stats[1:, cv2.CC_STAT_HEIGHT]
    best: tuple[int, np.ndarray, int, int] | None = None  # (area, piece, x offset, y offset)
    for label in np.argsort(box_areas)[::-1][:8] + 1:
        x, y, bw, bh, raw_area = (int(v) for v in stats[label])
        if bw * bh < min_area:
            break
        if best is not None and bw * bh <= best[0]:
            continue  # its filled area cannot beat the best
        comp = (labels[y : y + bh, x : x + bw] == label).astype(np.uint8)
        if max_border_contact is not None:
            on_border = (
                (int(comp[0].sum()) if y == 0 else 0)
                + (int(comp[-1].sum()) if y + bh == h else 0)
                + (int(comp[:, 0].sum()) if x == 0 else 0)
                + (int(comp[:, -1].sum()) if x + bw == w else 0)
            )
            if on_border > max_border_contact * perimeter:
                continue
        contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        filled = np.zeros_like(comp)
        cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
        if raw_area < 0.1 * int(filled.sum()):
            continue  # a thin line drawn round something else (a frame, a circle annotation)
        opened = cv2.morphologyEx(filled, cv2.MORPH_OPEN, kernel)
        m, pieces, piece_stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
        if m <= 1:
            continue
        k = 1 + int(np.argmax(piece_stats[1:, cv2.CC_STAT_AREA]))
        area = int(piece_stats[k, cv2.CC_STAT_AREA])
        if area < min_area or (best is not None and area <= best[0]):
            continue
        best = (area, (pieces == k).astype(np.uint8), x, y)
    if best is None:
        return None
    area, piece, ox, oy = best
    contour = max(cv2.findContours(piece, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0], key=cv2.contourArea)
    px, py, pw, ph = cv2.boundingRect(contour)
    full = np.zeros((h, w), bool)
    full[oy : oy + piece.shape[0], ox : ox + piece.shape[1]] = piece > 0
    hull_area = float(cv2.contourArea(cv2.convexHull(contour)))
    box = (ox + px, oy + py, ox + px + pw, oy + py + ph)
    return HeadOutline(
        box=box,
        mask=full,
        work_box=box,
        area_fraction=area / float(h * w),
        fill_ratio=area / float(pw * ph),
        solidity=min(1.0, float(cv2.contourArea(contour)) / hull_area) if hull_area > 0 else 0.0,
        polygon=(contour.reshape(-1, 2) + np.array([ox, oy])).astype(np.int32),
    )


def foreground_from_grey(grey: np.ndarray) -> np.ndarray:
    """Foreground mask of an 8-bit grey image: pixels brighter than half Otsu's threshold.

    Half of Otsu's threshold (clipped to 10..60) keeps brain tissue in brain, subdural and bone
    windows alike while leaving out a black background and JPEG noise in it.
    """
    otsu, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = float(np.clip(0.5 * otsu, 10.0, 60.0))
    return grey > threshold


def _working(image: np.ndarray) -> tuple[np.ndarray, float]:
    """``image`` shrunk (area interpolation) to at most :data:`WORK_SIDE` a side, and the factor."""
    h, w = image.shape[:2]
    factor = max(h, w) / WORK_SIDE
    if factor <= 1.0:
        return image, 1.0
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


def _to_image_grid(outline: HeadOutline, factor: float, shape: tuple[int, ...]) -> HeadOutline:
    if factor == 1.0:
        return outline
    x0, y0, x1, y1 = outline.box
    h, w = shape[:2]
    box = (
        max(0, int(np.floor(x0 * factor))),
        max(0, int(np.floor(y0 * factor))),
        min(w, int(np.ceil(x1 * factor))),
        min(h, int(np.ceil(y1 * factor))),
    )
    # A working-grid pixel centre x lies at (x + 0.5) * factor - 0.5 on the image's grid.
    points = np.rint((outline.polygon + 0.5) * factor - 0.5)
    polygon = np.clip(points, 0, [w - 1, h - 1]).astype(np.int32)
    return replace(outline, box=box, polygon=polygon, scale=factor)


def outline_from_grey(grey: np.ndarray) -> tuple[HeadOutline | None, np.ndarray]:
    """The head outline of an 8-bit grey image, and the working-grid image it was found on."""
    small, factor = _working(_as_uint8(grey))
    outline = largest_outline(foreground_from_grey(small))
    return (None if outline is None else _to_image_grid(outline, factor, grey.shape)), small


def outline_from_hu(hu: np.ndarray) -> HeadOutline | None:
    """The head outline of a CT slice in HU, from HU > :data:`TISSUE_HU`."""
    small, factor = _working(np.asarray(hu, dtype=np.float32))
    outline = largest_outline(small > TISSUE_HU, max_border_contact=None)
    return None if outline is None else _to_image_grid(outline, factor, hu.shape)


def head_box(outline: HeadOutline | None, shape: tuple[int, ...]) -> Box:
    """The head's bounding box from its outline (:func:`outline_from_grey`, :func:`outline_from_hu`).

    Args:
        outline: the head outline found in the image, or None when none was found.
        shape: the image's shape, ``(H, W, ...)``.

    Returns:
        (x0, y0, x1, y1) in pixels, x1/y1 exclusive; the whole image when no outline was found.
    """
    return outline.box if outline is not None else (0, 0, int(shape[1]), int(shape[0]))


def outline_polygon(outline: HeadOutline | None, shape: tuple[int, ...]) -> np.ndarray:
    """The head's outline as :attr:`CTImage.head_outline <brain_ct.image.CTImage.head_outline>` keeps it.

    Args:
        outline: the head outline found in the image, or None when none was found.
        shape: the image's shape, ``(H, W, ...)``.

    Returns:
        int32 ``[N, 2]`` (x, y) points in the image's pixels: the outline's contour, or the corners
        of :func:`head_box` (the whole image) when no outline was found, so that the head's box is
        always the bounding box of its outline.
    """
    if outline is not None:
        return outline.polygon
    x0, y0, x1, y1 = head_box(None, shape)
    return np.array([[x0, y0], [x1 - 1, y0], [x1 - 1, y1 - 1], [x0, y1 - 1]], np.int32)


def find_outline(ct: CTImage) -> HeadOutline | None:
    """The head outline of a loaded slice: :func:`outline_from_hu` when it has HU, else
    :func:`outline_from_grey` of its grey image (what :mod:`brain_ct.io` runs when loading)."""
    return outline_from_hu(ct.hu) if ct.hu is not None else outline_from_grey(ct.display)[0]


def head_mask(ct: CTImage) -> np.ndarray:
    """The head (skull and everything inside it) as a bool ``[H, W]`` mask on the image's grid.

    The filled :attr:`~brain_ct.image.CTImage.head_outline` found when the image was loaded, so
    the head is found once; an image built without one gets it from :func:`find_outline`, the
    same rule.
    """
    polygon = ct.head_outline
    if polygon is None:
        polygon = outline_polygon(find_outline(ct), ct.shape)
    mask = np.zeros(ct.shape, np.uint8)
    cv2.drawContours(mask, [polygon.reshape(-1, 1, 2).astype(np.int32)], -1, 1, thickness=cv2.FILLED)
    return mask.astype(bool)


def colour_fraction(bgr: np.ndarray) -> float:
    """Fraction of strongly coloured pixels in an 8-bit BGR image ``[H, W, 3]``.

    A pixel counts when its HSV saturation is above 0.4 and its value above 60/255 (dark
    pixels have no reliable hue). Grey CT figures score ~0; a coloured arrow a few per cent.
    """
    bgr = _as_uint8(bgr)
    mx = bgr.max(axis=2).astype(np.int16)
    mn = bgr.min(axis=2).astype(np.int16)
    strong = (mx > 60) & ((mx - mn) * 5 > mx * 2)
    return float(strong.mean())


def check_plausible(ct: CTImage, outline: HeadOutline | None = None) -> None:
    """Refuse what clearly is not an axial head-CT slice.

    Args:
        ct: a loaded slice.
        outline: its head outline when already computed (:func:`outline_from_hu` for DICOM,
            :func:`outline_from_grey` otherwise); found here when None.

    Raises:
        NotHeadCTError: with the reason, and how to override the check.
    """
    reason = _dicom_reason(ct, ct.hu, outline) if ct.hu is not None else _image_reason(ct, outline)
    if reason is not None:
        raise NotHeadCTError(f"this does not look like an axial head CT slice: {reason}. {OVERRIDE_HINT}")


def header_reason(header: Mapping[str, Any]) -> str | None:
    """Why a DICOM header says the slice is not a head CT, or None when it does not say so.

    Read together with the image check (:func:`check_plausible`); a missing tag never refuses
    on its own. Refused when:

    * (0018,0015) *Body Part Examined*, the study or series description or the protocol name
      names another region (chest, abdomen, pelvis, spine, a limb) and none of them names the
      head (HEAD, BRAIN, SKULL, CRANIAL, HEADNECK, ...: a head word wins over any other);
    * the patient lay feet first ((0018,5100) *Patient Position* FF*) **and** the field of view
      ((0028,0030) *Pixel Spacing* x Columns/Rows) is narrower than :data:`MIN_HEAD_FOV_MM`:
      each alone happens in genuine head CTs (a trauma protocol, a temporal-bone reconstruction).

    Args:
        header: keyword -> value for BodyPartExamined, StudyDescription, SeriesDescription,
            ProtocolName, PatientPosition, PixelSpacing ([row, column] mm), Rows, Columns;
            missing keys are fine. Descriptions are matched here, never quoted in the reason.

    Returns:
        The reason, in words, or None.
    """
    texts = {key: str(header.get(key) or "").upper() for key in _HEADER_FIELDS}
    if any(_HEAD_WORD.search(text) for text in texts.values()):
        return None
    for region, pattern in _OTHER_REGIONS:
        for key, text in texts.items():
            if pattern.search(text):
                return f"its {_HEADER_FIELDS[key]} names the {region}, not the head"
    position = str(header.get("PatientPosition") or "").strip().upper()
    fov = _field_of_view_mm(header)
    if position.startswith("FF") and fov is not None and fov < MIN_HEAD_FOV_MM:
        return (
            f"the patient lay feet first ({position}) and the field of view is only {fov:.0f} mm wide, "
            f"smaller than a head (at least ~{MIN_HEAD_FOV_MM:.0f} mm), as in a spine or limb slice"
        )
    return None


def _field_of_view_mm(header: Mapping[str, Any]) -> float | None:
    """The larger side of the reconstructed field of view in mm, or None when the tags are missing."""
    try:
        row_mm, col_mm = (float(v) for v in header["PixelSpacing"])
        width = col_mm * int(header["Columns"])
        height = row_mm * int(header["Rows"])
    except (KeyError, TypeError, ValueError):
        return None
    fov = max(width, height)
    return fov if fov > 0 else None


def _dicom_reason(ct: CTImage, hu: np.ndarray, outline: HeadOutline | None) -> str | None:
    image_type = ct.meta.get("ImageType")
    types = (
        [str(t).upper() for t in image_type]
        if isinstance(image_type, list)
        else [str(image_type or "").upper()]
    )
    if "LOCALIZER" in types:
        return "it is a scout (localizer) image, not an axial slice"
    finite = hu[np.isfinite(hu)]
    if finite.size == 0 or float(finite.std()) < 1.0:
        return "the slice is blank (all pixels have the same value)"
    if float((finite > TISSUE_HU).mean()) < 0.005:
        return "the slice contains no tissue (only air)"
    spacing = ct.meta.get("PixelSpacing")
    if outline is None:
        outline = outline_from_hu(hu)
    if outline is not None and isinstance(spacing, list) and len(spacing) == 2:
        row_mm, col_mm = (float(s) for s in spacing)
        x0, y0, x1, y1 = outline.box
        width_mm, height_mm = (x1 - x0) * col_mm, (y1 - y0) * row_mm
        if max(width_mm, height_mm) > MAX_HEAD_MM:
            return (
                f"the body cross-section is {width_mm:.0f} x {height_mm:.0f} mm, larger than a head "
                f"(at most ~{MAX_HEAD_MM:.0f} mm) - a chest or abdomen CT?"
            )
    return None


def _image_reason(ct: CTImage, outline: HeadOutline | None) -> str | None:
    if ct.colour_fraction > MAX_COLOUR_FRACTION:
        return (
            f"it is a colour picture ({100 * ct.colour_fraction:.0f}% of its pixels are strongly coloured; "
            "CT slices are grey)"
        )
    grey = ct.display
    low, high = np.percentile(grey, [1, 99])
    if high - low < 16 or float(grey.std()) < 4.0:
        return "the image is blank or nearly uniform"
    if outline is None:
        outline, small = outline_from_grey(grey)
    else:
        small, _ = _working(grey)
    if outline is None:
        return "no bright closed outline (the skull) was found"
    x0, y0, x1, y1 = outline.box
    bw, bh = x1 - x0, y1 - y0
    if outline.area_fraction < MIN_HEAD_AREA_FRACTION or min(bw, bh) < MIN_HEAD_SIDE:
        return (
            f"the largest bright outline is only {bw}x{bh} pixels "
            f"({100 * outline.area_fraction:.1f}% of the image)"
        )
    if not 0.5 <= bw / bh <= 2.0:
        return f"the largest bright outline is {bw}x{bh} pixels, too elongated for a head"
    if outline.solidity < 0.8 or not 0.5 <= outline.fill_ratio <= 0.97:
        return "the largest bright outline is not roughly elliptical like a head"
    inside = small[outline.mask]
    if float(np.median(inside)) >= 250:
        return "the head is saturated white (the window is too narrow or too low to show the brain)"
    if not _has_bright_rim(small, outline):
        return "no bright rim (skull) surrounds the largest outline"
    if _is_flat(small, outline):
        return (
            "the inside of the outline is flat: no brain texture and no structures (the skull's inner "
            "and outer edges, ventricles, sulci) - a drawn or synthetic shape"
        )
    return None


def inner_edges(grey: np.ndarray, outline: HeadOutline) -> tuple[float, int]:
    """How much structure the inside of the head shows (``grey`` on the working grid).

    Canny edges (hysteresis 40/120 grey levels) more than 2 pixels inside the outline: the
    skull's inner and outer tables, ventricles, sulci, grey-white contrast, lesions and CT noise
    in a real slice; a flat shape has none, or one ring.

    Returns:
        (length, pieces): edge pixels in lengths of the outline's perimeter, and the number of
        connected edge pieces at least 2 % of the perimeter (and 5 pixels) long.
    """
    mask = outline.mask.astype(np.uint8)
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, 3) > 2
    contour = outline.polygon.reshape(-1, 1, 2).astype(np.float32) / outline.scale
    perimeter = max(1.0, float(cv2.arcLength(contour, True)))
    edges = ((cv2.Canny(grey, 40, 120) > 0) & inside).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(edges, connectivity=8)
    pieces = int((stats[1:n, cv2.CC_STAT_AREA] >= max(5.0, 0.02 * perimeter)).sum())
    return float(edges.sum()) / perimeter, pieces


def _is_flat(grey: np.ndarray, outline: HeadOutline) -> bool:
    length, pieces = inner_edges(grey, outline)
    return length < MIN_INNER_EDGE_LENGTH and pieces < MIN_INNER_EDGE_PIECES


def _has_bright_rim(grey: np.ndarray, outline: HeadOutline, sectors: int = 16) -> bool:
    """Whether a bright ring (the skull) runs round most of the outline (``grey`` on the working grid).

    The outer band of the outline (12 % of its smaller side deep: scalp and skull) is split into
    ``sectors`` angular sectors around the centroid; a sector is bright when its 90th percentile
    is at least 25 grey levels above the inside's median and at least 60 % of the head's 99th
    percentile (the skull is the brightest thing in a head CT, whatever the window). At least
    half of the sectors must be bright (skull-base slices have gaps at the orbits, nose, ears
    and foramina): a radiograph's body edge or a photo's blob is not ringed by its brightest pixels.
    """
    x0, y0, x1, y1 = outline.work_box
    depth = max(3, int(round(0.12 * min(x1 - x0, y1 - y0))))
    mask = outline.mask.astype(np.uint8)
    # distance to the outside > depth: an erosion by a disc, in linear time
    inner = cv2.distanceTransform(mask, cv2.DIST_L2, 3) > depth
    band = (mask > 0) & ~inner
    inside = grey[inner]
    if not band.any() or inside.size == 0:
        return False
    level = max(float(np.median(inside)) + 25.0, 0.6 * float(np.percentile(grey[mask > 0], 99)))
    ys, xs = np.nonzero(band)
    moments = cv2.moments(mask, binaryImage=True)
    cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
    sector = ((np.arctan2(ys - cy, xs - cx) + np.pi) / (2 * np.pi) * sectors).astype(int) % sectors
    values = grey[ys, xs]
    bright = 0
    for k in range(sectors):
        chosen = values[sector == k]
        if chosen.size and float(np.percentile(chosen, 90)) >= level:
            bright += 1
    return bright >= 0.5 * sectors


def _as_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return np.clip(image, 0, 255).astype(np.uint8)
