"""Where the model looked: Grad-CAM (Captum), heatmap regions, plain-language explanation, overlay.

Grad-CAM (Selvaraju et al. 2017) weighs the feature maps of the last ResNet stage
(``Family.gradcam_layer``, :mod:`brain_ct.architectures`: a fresh tensor, not an in-place residual add)
by the mean gradient of the hemorrhage log-odds ``logit[hemorrhage] − logit[normal]`` — the quantity
whose sigmoid is P(hemorrhage) for a two-class softmax; for a subtype model (one sigmoid per label) the
raw logit of ``any`` or of a chosen subtype, which is that sigmoid's log-odds — and keeps the positive part
(``relu_attributions=True``). The prediction and the heatmap come from ONE forward pass: the forward
function handed to Captum stores the logits it computes, and Captum's ``LayerGradCam`` runs the
forward function exactly once (captum 0.9: ``compute_layer_gradients_and_eval`` →
``_forward_layer_distributed_eval`` → ``_run_forward``), then one backward from the log-odds to
the last stage. The weights have ``requires_grad=False`` (see :func:`brain_ct.model.load_model`), so
autograd records only what follows the last stage: the backward is as cheap as it can be.

Sides follow the radiological convention: axial slices are displayed as if looking up from the
patient's feet, so the PATIENT's left is on the IMAGE's right. Every ``side`` in this module is
the patient's side.

Region names (frontal, parietal, temporal, occipital, posterior fossa, deep/ventricular, extra-axial)
are APPROXIMATE: they come from where a region lies inside the head outline on a single axial
slice, with the slice level only guessed (skull base, high convexity) and without the patient's anatomy. Treat them as "roughly where",
never as an anatomical label. The head outline is the one framing found when the slice was loaded
(:func:`brain_ct.framing.head_mask`), the same head the model was shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

import brain_ct.architectures as architectures
import brain_ct.framing as framing
import brain_ct.windowing as windowing
from brain_ct.errors import InvalidInputError
from brain_ct.image import Box, CTImage
from brain_ct.wording import DISCLAIMER, hemorrhage_name

if TYPE_CHECKING:
    import torch


#: Heat below this (of a heatmap in [0, 1]) is not coloured in the overlay, so the image stays readable.
OVERLAY_EPS = 0.05
#: Heat at and above this gets the full overlay opacity; in between the opacity ramps up.
OVERLAY_FULL = 0.25

REGION_NAMES = (
    "frontal",
    "parietal",
    "temporal",
    "occipital",
    "posterior fossa",
    "deep/ventricular",
    "extra-axial",
)


# --------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------
def gradcam(
    model: torch.nn.Module, pixel_values: torch.Tensor, target_index: int = 1, multi_label: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and raw Grad-CAM maps of a batch from one forward and one backward pass.

    Each sample's target depends only on that sample (ResNet in eval mode: batch norm uses its
    running statistics), so the gradient of their sum — what Captum takes — gives every sample
    its own Grad-CAM.

    Args:
        model: a ``ResNetForImageClassification`` in eval mode.
        pixel_values: float32 ``[N, C, S, S]`` model input.
        target_index: the logit to explain: "hemorrhage" of a binary model (1 under the model folder
            contract), "any" or a subtype of a subtype model (``ModelSettings.hemorrhage_index`` is
            the default target).
        multi_label: the model has one sigmoid per label (a subtype model): the target is the raw
            logit ``logit[target_index]``, which IS that sigmoid's log-odds. Otherwise (a two-class
            softmax) it is the log-odds ``logit[target_index] − logit[other]``.

    Returns:
        ``(logits, cams)``: logits float32 ``[N, num_labels]`` (detached) and the non-negative
        Grad-CAM maps float32 ``[N, h, w]`` on the last stage's grid (S / 32 for ResNet-50), detached
        and not normalised.
    """
    import torch
    from captum.attr import LayerGradCam

    other = 1 - target_index
    captured: dict[str, torch.Tensor] = {}

    def forward(x: torch.Tensor) -> torch.Tensor:
        logits = model(pixel_values=x).logits
        captured["logits"] = logits
        # [N, 1]: the target's log-odds, target 0 below.
        if multi_label:
            return logits[:, target_index : target_index + 1]
        return (logits[:, target_index] - logits[:, other]).unsqueeze(1)

    layer = architectures.family_of(model).gradcam_layer(model)
    # inference_mode would forbid the backward; Captum itself enables gradients.
    with torch.inference_mode(False):
        cams = LayerGradCam(forward, layer).attribute(pixel_values, target=0, relu_attributions=True)
    return captured["logits"].detach(), cams.detach()[:, 0]


def normalize_heatmap(cam: np.ndarray) -> np.ndarray:
    """Scale one map to [0, 1] by its maximum; an all-zero (or non-finite) map stays all zero.

    Args:
        cam: float ``[h, w]``, any non-negative values (NaN/inf are treated as 0).

    Returns:
        float32 ``[h, w]`` in [0, 1], no NaN.
    """
    out = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    np.maximum(out, 0.0, out=out)
    peak = float(out.max()) if out.size else 0.0
    if peak > 0.0:
        out *= np.float32(1.0 / peak)
        np.minimum(out, 1.0, out=out)
    return out


def heatmap_for_image(cam: np.ndarray, ct: CTImage) -> np.ndarray:
    """A normalised Grad-CAM map on the model grid → float32 [H, W] in [0, 1] on the input's grid.

    The coarse map covers exactly the square :func:`~brain_ct.windowing.model_box` the model saw,
    so one bilinear resize straight to the box's size (in
    :func:`~brain_ct.windowing.heatmap_to_image`) places it exactly; upsampling to the model grid
    first would be a second bilinear pass over the same samples. Outside the box the heat is 0.
    """
    heat = windowing.heatmap_to_image(cam, windowing.model_box(ct), ct_shape(ct))
    return np.clip(heat, 0.0, 1.0, out=heat)


def ct_shape(ct: CTImage) -> tuple[int, int]:
    """(H, W) of the input image, in pixels."""
    return tuple(int(v) for v in ct.display.shape[:2])  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Regions inside the head outline
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Region:
    """One hot region of a heatmap inside the head.

    Attributes:
        bbox: (x0, y0, x1, y1) in input pixels, x1/y1 exclusive.
        side: ``"left"``, ``"right"`` or ``"midline"``: the PATIENT's side (patient's left =
            image right).
        region: an approximate name from :data:`REGION_NAMES`.
        score: the region's share of the heat inside the head, 0–1 (4 decimals).
        peak: its highest heat, 0–1 (4 decimals).
        area_px: its size in pixels.
    """

    bbox: Box
    side: str
    region: str
    score: float
    peak: float
    area_px: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict with the same keys: ``bbox`` (a list), ``side``, ``region``, ``score``,
        ``peak``, ``area_px`` (what a reading's JSON lists under ``regions``)."""
        return {
            "bbox": [int(v) for v in self.bbox],
            "side": self.side,
            "region": self.region,
            "score": float(self.score),
            "peak": float(self.peak),
            "area_px": int(self.area_px),
        }


def head_depth(mask: np.ndarray) -> np.ndarray:
    """How deep each pixel lies inside the head: float32 [H, W], 0 at the outline, 1 at the deepest point.

    The Euclidean distance to the head's outline divided by its maximum (the inscribed radius), so
    it does not depend on the image's size or pixel spacing.
    """
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    peak = float(dist.max())
    if peak > 0:
        dist *= np.float32(1.0 / peak)
    return dist


def is_skull_base_level(ct: CTImage, mask: np.ndarray, depth: np.ndarray | None = None) -> bool:
    """Guess whether a slice is at the skull base (posterior fossa level) from bone deep inside the head.

    At the skull base the petrous bones, clivus and sphenoid put bone in the middle of the head
    (depth > 0.5, see :func:`head_depth`) while brain still fills much of it; above it only small
    calcifications do. Slices through the skull cap near the vertex also show much bone inside, but
    little brain, which is what tells them apart. Bone is HU > 300 for DICOM and saturated white
    (≥ 250) for 8-bit images (where acute blood can saturate too: an approximation for naming
    regions, nothing more).
    """
    depth = head_depth(mask) if depth is None else depth
    centre = depth > 0.5
    if not centre.any() or not mask.any():
        return False
    if ct.hu is not None:
        bone = float((ct.hu[centre] > 300.0).mean())
        soft = float(((ct.hu[mask] > 0.0) & (ct.hu[mask] < 100.0)).mean())
    else:
        bone = float((ct.display[centre] >= 250).mean())
        soft = float(((ct.display[mask] > 20) & (ct.display[mask] < 240)).mean())
    return 0.015 <= bone <= 0.6 and soft >= 0.4


def _geometry(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Centre and half-axes (cx, cy, rx, ry) of the head's bounding box, pixels; None if empty."""
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    if w < 2 or h < 2:
        return None
    return x + w / 2.0, y + h / 2.0, w / 2.0, h / 2.0


def regions(
    heatmap: np.ndarray,
    ct: CTImage,
    *,
    rel_threshold: float = 0.5,
    min_area_frac: float = 0.002,
    max_regions: int = 5,
) -> list[Region]:
    """The heatmap's hot regions inside the head, strongest first, named.

    The head is the slice's own outline (:func:`brain_ct.framing.head_mask`: the one framing found
    on loading). Heat inside it at or above ``rel_threshold`` × its peak is split into 8-connected
    components; components smaller than ``min_area_frac`` of the head are dropped. A posterior
    region is named "posterior fossa" instead of "occipital" when the slice is at the skull base
    (:func:`is_skull_base_level`), which is only tested when a region would be occipital. On a
    high-convexity (vertex) slice (:func:`is_convexity_level`, tested when a region lies deeper than the
    extra-axial band) regions are named frontal or parietal, never deep/ventricular or temporal.

    Args:
        heatmap: float32 [H, W] in [0, 1] on the input grid.
        ct: the slice the heatmap belongs to.
        rel_threshold: fraction of the in-head peak a pixel needs to be part of a region.
        min_area_frac: smallest region kept, as a fraction of the head's area.
        max_regions: at most this many regions are returned.

    Returns:
        :class:`Region` s sorted by ``score`` (descending), at most ``max_regions``.
    """
    mask = framing.head_mask(ct)
    if heatmap.shape != mask.shape:
        raise InvalidInputError(f"heatmap {heatmap.shape} and image {mask.shape} must have the same shape")
    geom = _geometry(mask)
    if geom is None:
        return []
    heat = np.where(mask, heatmap, np.float32(0.0)).astype(np.float32, copy=False)
    peak = float(heat.max())
    total = float(heat.sum())
    if peak <= 1e-6 or total <= 0.0:
        return []
    binary = (heat >= rel_threshold * peak).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return []
    depth = head_depth(mask)
    min_area = max(1, int(min_area_frac * float(mask.sum())))
    found = _located_components(heat, binary, labels, stats, depth, geom, min_area, total)
    found.sort(key=lambda item: (-item[0].score, -item[0].peak))
    return _named_for_level(found[:max_regions], ct, mask, depth, geom)


def _located_components(
    heat: np.ndarray,
    binary: np.ndarray,
    labels: np.ndarray,
    stats: np.ndarray,
    depth: np.ndarray,
    geom: tuple[float, float, float, float],
    min_area: int,
    total: float,
) -> list[tuple[Region, tuple[float, float, float]]]:
    """Every component of at least ``min_area`` pixels as a :class:`Region`, with its heat-weighted
    centroid (x, y) and mean depth (unsorted)."""
    n = len(stats)
    # Heat mass, heat-weighted centroid and depth of every component at once, over the hot pixels only.
    idx = np.flatnonzero(binary)
    lab = labels.ravel()[idx]
    hv = heat.ravel()[idx].astype(np.float64)
    ys, xs = np.divmod(idx, heat.shape[1])
    mass = np.bincount(lab, weights=hv, minlength=n)
    mx = np.bincount(lab, weights=hv * xs, minlength=n)
    my = np.bincount(lab, weights=hv * ys, minlength=n)
    md = np.bincount(lab, weights=hv * depth.ravel()[idx], minlength=n)
    found: list[tuple[Region, tuple[float, float, float]]] = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if area < min_area or mass[i] <= 0.0:
            continue
        crop = heat[y : y + bh, x : x + bw]
        comp_peak = float(crop[labels[y : y + bh, x : x + bw] == i].max())
        where = (float(mx[i] / mass[i]), float(my[i] / mass[i]), float(md[i] / mass[i]))
        side, name = _locate(*where, geom)
        region = Region(
            bbox=(x, y, x + bw, y + bh),
            side=side,
            region=name,
            score=round(float(mass[i]) / total, 4),
            peak=round(comp_peak, 4),
            area_px=area,
        )
        found.append((region, where))
    return found


def _named_for_level(
    found: list[tuple[Region, tuple[float, float, float]]],
    ct: CTImage,
    mask: np.ndarray,
    depth: np.ndarray,
    geom: tuple[float, float, float, float],
) -> list[Region]:
    """The regions renamed where the slice's level changes a name (vertex, skull base)."""
    # Near the vertex nothing is deep and the convexity is frontal or parietal. The test costs a pass
    # over the image, so it runs only when a region lies inside the head, where a name depends on it.
    if any(r.region != "extra-axial" for r, _ in found) and is_convexity_level(ct, mask, depth):
        found = [(replace(r, region=_locate(*where, geom, convexity=True)[1]), where) for r, where in found]
    named = [r for r, _ in found]
    # At the skull base the back of the head holds the cerebellum: "posterior fossa". The test
    # costs a pass over the image, so it runs only when a region's name depends on it.
    if any(r.region == "occipital" for r in named) and is_skull_base_level(ct, mask, depth):
        named = [replace(r, region="posterior fossa") if r.region == "occipital" else r for r in named]
    return named


#: Heat-weighted mean depth (:func:`head_depth`) below which a region hugs the skull: "extra-axial".
EXTRA_AXIAL_DEPTH = 0.24
#: Half-axes (u, v) of the central ellipse of the head's bounding box that holds the deep grey nuclei
#: (thalamus, basal ganglia) and the ventricles: a region whose heat-weighted centroid lies inside it
#: is "deep/ventricular". On synthetic intraparenchymal bleeds at the basal-ganglia and ventricle
#: levels, seen through a Grad-CAM-coarse (7 x 7) heatmap, it names 94 % of the deep (thalamic /
#: basal-ganglia) ones deep and 1 % of the lobar ones. A depth measured from the nearest outline
#: (the former rule) called a third of the deep ones lobar: in a head taller than wide, a thalamus
#: lies nearer the side than the front or back.
DEEP_HALF_AXES = (0.42, 0.34)
#: Share of bone in the bone-plus-brain pixels of the head (:func:`is_convexity_level`) from which a
#: slice is a high-convexity (vertex) cut: the skull cap is cut obliquely and the brain is small.
#: DICOM (bone HU > 300, brain 0-100 HU) / 8-bit (bone saturated white, brain 21-239). Phantom
#: slices at the basal-ganglia and ventricle levels reach at most 0.21 / 0.27; vertex ones 0.19-0.50
#: / 0.26-0.67, the top five slices of the real GE scan 0.28-0.73 / 0.34-0.87.
CONVEXITY_BONE_SHARE = (0.24, 0.30)


def is_convexity_level(ct: CTImage, mask: np.ndarray, depth: np.ndarray | None = None) -> bool:
    """Guess whether a slice is a high-convexity (vertex) cut, above the ventricles and deep nuclei.

    Near the vertex the skull cap is cut obliquely (a broad bone band) round a small brain, so bone
    makes up a large share (:data:`CONVEXITY_BONE_SHARE`) of the head's bone and brain pixels. The
    skull base has much bone too, but inside the head (:func:`is_skull_base_level`), which rules it
    out. Nothing deep is named on such a slice: there are no ventricles or deep nuclei to name.
    """
    if not mask.any():
        return False
    if ct.hu is not None:
        values = ct.hu[mask]
        bone = float((values > 300.0).mean())
        brain = float(((values > 0.0) & (values < 100.0)).mean())
        limit = CONVEXITY_BONE_SHARE[0]
    else:
        values = ct.display[mask]
        bone = float((values >= 250).mean())
        brain = float(((values > 20) & (values < 240)).mean())
        limit = CONVEXITY_BONE_SHARE[1]
    if bone + brain <= 0.0 or bone / (bone + brain) < limit:
        return False
    return not is_skull_base_level(ct, mask, depth)


def _locate(
    x: float, y: float, depth: float, geom: tuple[float, float, float, float], *, convexity: bool = False
) -> tuple[str, str]:
    """Patient side and approximate region name of a region with centroid (x, y) and mean depth.

    A heat-weighted mean depth under :data:`EXTRA_AXIAL_DEPTH` is extra-axial (along the inner
    table, where subdural and epidural blood lie). Otherwise the centroid's position in the head's
    bounding box decides: u ∈ [−1, 1] left→right on the IMAGE, v ∈ [−1, 1] top (anterior, in
    standard axial display) → bottom (posterior). Inside the central ellipse
    (:data:`DEEP_HALF_AXES`) it is deep/ventricular, except on a high-convexity slice
    (``convexity``, :func:`is_convexity_level`), which holds only frontal (front) and parietal
    (back) convexity; elsewhere the lobe. Checked on synthetic lesions of known subtype and site.
    """
    cx, cy, rx, ry = geom
    u = (x - cx) / rx
    v = (y - cy) / ry
    # Radiological convention: the image's right (u > 0) is the patient's LEFT.
    side = "midline" if abs(u) < 0.1 else ("left" if u > 0 else "right")
    if depth < EXTRA_AXIAL_DEPTH:
        name = "extra-axial"
    elif convexity:
        name = "frontal" if v < -0.1 else "parietal"
    elif (u / DEEP_HALF_AXES[0]) ** 2 + (v / DEEP_HALF_AXES[1]) ** 2 <= 1.0:
        name = "deep/ventricular"
    elif v < -0.3:
        name = "frontal"
    elif v > 0.45:
        name = "occipital"  # "posterior fossa" at the skull base, decided in regions()
    elif abs(u) > 0.5:
        name = "temporal"
    else:
        name = "parietal"
    return side, name


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------
def probability_tier(probability: float, threshold: float) -> str:
    """One of ``"clearly below"``, ``"near below"``, ``"near above"``, ``"well above"``.

    The band around the threshold is half the distance to 0 below it and half the distance to 1
    above it, so the tiers adapt to thresholds other than 0.5.
    """
    if probability < threshold:
        return "clearly below" if probability < threshold / 2.0 else "near below"
    return "near above" if probability < threshold + (1.0 - threshold) / 2.0 else "well above"


def describe_region(region: Region) -> str:
    """A region with side "left" and name "temporal" → "the patient's left temporal area"."""
    side, name = region.side, region.region
    if name == "extra-axial":
        where = "the midline" if side == "midline" else f"the patient's {side} side"
        return f"the extra-axial space just inside the skull ({where})"
    if name == "deep/ventricular":
        where = "near the midline" if side == "midline" else f"on the patient's {side}"
        return f"the deep / ventricular area {where}"
    if side == "midline":
        return f"the midline {name} area"
    return f"the patient's {side} {name} area"


#: A subtype probability at or above this counts as notable: a second subtype is named above the
#: threshold, and one is mentioned (as not a finding) below it.
SUBTYPE_NOTABLE = 0.5


def describe_subtypes(probability: float, threshold: float, subtypes: dict[str, float] | None) -> str:
    """One sentence on a subtype model's subtype outputs, or "" when there is nothing to say.

    Above the threshold: the most probable subtype (and the second when it is also at least
    :data:`SUBTYPE_NOTABLE`), or that none stands out. Below it: only a subtype at or above
    :data:`SUBTYPE_NOTABLE`, stated as not a finding. Binary models (``subtypes`` None) get "".
    """
    if not subtypes:
        return ""
    ranked = sorted(subtypes.items(), key=lambda kv: -kv[1])
    (top, p_top), rest = ranked[0], ranked[1:]
    if probability >= threshold:
        if p_top < SUBTYPE_NOTABLE:
            return f"No hemorrhage subtype stands out (the highest is {top}, p {p_top:.2f})."
        text = f"The pattern is most consistent with {hemorrhage_name(top)} (p {p_top:.2f})"
        if rest and rest[0][1] >= SUBTYPE_NOTABLE:
            text += f", then {hemorrhage_name(rest[0][0])} (p {rest[0][1]:.2f})"
        return text + "."
    if p_top >= SUBTYPE_NOTABLE:
        return (
            f"The model's {top} output is notably high (p {p_top:.2f}); with P(hemorrhage) below the "
            "threshold this is not a finding."
        )
    return ""


def describe_agreement(agreement: tuple[int, int] | None) -> str:
    """``(2, 3)`` → "2 of 3 models in the ensemble put this slice above their own threshold."; None → ""."""
    if agreement is None:
        return ""
    above, total = agreement
    return f"{above} of {total} {'model' if total == 1 else 'models'} in the ensemble put this slice above their own threshold."


def explanation(
    probability: float,
    threshold: float,
    found: Sequence[Region],
    *,
    subtypes: dict[str, float] | None = None,
    agreement: tuple[int, int] | None = None,
) -> str:
    """A short plain-language explanation of one prediction.

    Args:
        probability: P(hemorrhage) in [0, 1].
        threshold: the model's decision threshold.
        found: :func:`regions` of the heatmap, strongest first.
        subtypes: a subtype model's five subtype probabilities (:func:`describe_subtypes`); None for
            binary models.
        agreement: for an ensemble, (members at or above their own threshold, members); None for a
            single model.

    Returns:
        A few sentences: the verdict by probability tier, the subtypes and the ensemble's agreement
        if any, where the model looked (below the threshold without claiming a finding), how
        approximate region names are, and the disclaimer.
    """
    p, t = float(probability), float(threshold)
    tier = probability_tier(p, t)
    nums = f"probability {p:.2f}, threshold {t:.2f}"
    verdict = {
        "clearly below": f"No sign of intracranial hemorrhage found by the model ({nums}: clearly below).",
        "near below": f"Below the threshold but close ({nums}): a borderline result that deserves a careful look.",
        "near above": f"Possible intracranial hemorrhage ({nums}: above the threshold, but not by much).",
        "well above": f"Intracranial hemorrhage likely according to the model ({nums}: well above).",
    }[tier]
    places = [describe_region(r) for r in found[:2]]
    if not places:
        where = "The heatmap shows no focused area inside the head."
    else:
        listed = places[0] if len(places) == 1 else f"{places[0]}, then {places[1]}"
        if p >= t:
            where = f"The heatmap (Grad-CAM) points to {listed}."
        else:
            where = f"Where the model looked most (Grad-CAM; this is not a finding): {listed}."
        where += " Region names are approximate, estimated from position in the head outline on this slice."
    parts = [verdict, describe_subtypes(p, t, subtypes), describe_agreement(agreement), where, DISCLAIMER]
    return " ".join(part for part in parts if part)


# --------------------------------------------------------------------------------------------
# Overlay
# --------------------------------------------------------------------------------------------
def overlay(display: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4) -> np.ndarray:
    """The heatmap in the JET colour map over a grey image.

    Colour is blended in only where the heat exceeds :data:`OVERLAY_EPS`, ramping up to ``opacity``
    at :data:`OVERLAY_FULL`, so cold areas keep the original grey image.

    Args:
        display: uint8 [H, W] grey image (or [H, W, 3] RGB).
        heatmap: float32 [H, W] in [0, 1].
        opacity: colour weight at full heat, in [0, 1].

    Returns:
        uint8 [H, W, 3] RGB.
    """
    if not 0.0 <= float(opacity) <= 1.0:
        raise InvalidInputError(f"overlay opacity must be in [0, 1]; got {opacity}")
    if display.shape[:2] != heatmap.shape:
        raise InvalidInputError(
            f"image {display.shape[:2]} and heatmap {heatmap.shape} must have the same height and width"
        )
    out = display.copy() if display.ndim == 3 else cv2.cvtColor(display, cv2.COLOR_GRAY2RGB)
    heat = np.clip(np.nan_to_num(heatmap.astype(np.float32, copy=False)), 0.0, 1.0)
    alpha = np.clip((heat - OVERLAY_EPS) / (OVERLAY_FULL - OVERLAY_EPS), 0.0, 1.0) * np.float32(opacity)
    # Blend only inside the bounding box of the coloured pixels (alpha > 0): elsewhere the result is
    # the grey image itself, and most of a 512² slice is cold — same output, a fraction of the work.
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return out
    cols = np.flatnonzero(alpha.any(axis=0))
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    a = alpha[box][..., None]
    levels = (heat[box] * 255.0 + 0.5).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out[box] = (out[box].astype(np.float32) * (1.0 - a) + colour.astype(np.float32) * a + 0.5).astype(
        np.uint8
    )
    return out
