"""Tiny random brain-CT models for tests: a ResNet folder that follows the model folder contract.

Usage in a test module (pytest puts ``tests/`` on ``sys.path``)::

    from helpers_models import make_tiny_model

    def test_x(tmp_path):
        model_dir = make_tiny_model(tmp_path / "m")

No weights are downloaded: the model is built from a small ``ResNetConfig`` with a fixed seed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from brain_ct.model import ModelSettings, build_random_model
from brain_ct.windowing import DEFAULT_WINDOWS


def make_tiny_model(
    path: str | Path,
    *,
    windows: Sequence[Sequence[float]] = DEFAULT_WINDOWS,
    image_size: int = 64,
    threshold: float = 0.5,
    num_stages: int = 3,
    context_slices: int = 0,
    seed: int = 0,
    width: int = 8,
    trained_on: str | None = None,
    labels: Sequence[str] | None = None,
) -> Path:
    """Save a small random ``ResNetForImageClassification`` with the ``brain_ct_*`` settings.

    Args:
        path: folder to write (created).
        windows: (center, width) in HU per window channel.
        image_size: model input side, pixels.
        threshold: decision threshold on P(hemorrhage).
        num_stages: ResNet stages (hidden sizes width, 2·width, 4·width, …; one basic block each).
        context_slices: k neighbouring slices each side stacked as channels.
        seed: torch seed for the random weights.
        width: channels of the first stage.
        trained_on: value of ``brain_ct_trained_on`` (e.g. "synthetic phantoms"), or None.
        labels: the class names (default the binary labels; ``brain_ct.labels.SUBTYPE_LABELS`` for a
            subtype model).

    Returns:
        ``path`` as a :class:`~pathlib.Path`; loads with :func:`brain_ct.model.load_model`.
    """
    settings = ModelSettings(
        windows=tuple((float(c), float(w)) for c, w in windows),
        image_size=image_size,
        threshold=threshold,
        context_slices=context_slices,
        trained_on=trained_on,
        **({} if labels is None else {"labels": tuple(labels)}),
    )
    model = build_random_model(settings, hidden_sizes=[width * 2**i for i in range(num_stages)], seed=seed)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    return out


def phantom_ct(
    size: int = 160,
    *,
    lesion: tuple[float, float, float] | None = None,
    kind: str = "dicom",
    lesion_hu: float = 70.0,
    name: str = "phantom",
):
    """A simple axial head phantom as a :class:`~brain_ct.image.CTImage`, built without file I/O.

    An elliptical skull (1000 HU) around brain (35 HU) in air (−1000 HU); an optional round lesion.

    Args:
        size: image side, pixels.
        lesion: (x, y, radius) in pixels of a blood-density disc, or None.
        kind: ``"dicom"`` (HU set, brain-window display) or ``"image"`` (8-bit only, ``hu`` None).
        lesion_hu: lesion density, HU.
        name: the CTImage's display name.
    """
    import numpy as np

    from brain_ct.io import CTImage
    from brain_ct.windowing import display_window

    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c = (size - 1) / 2.0
    a, b = 0.40 * size, 0.46 * size  # half-axes: the head is taller than wide, as on real slices
    r = ((xx - c) / a) ** 2 + ((yy - c) / b) ** 2
    hu = np.full((size, size), -1000.0, np.float32)
    hu[r <= 1.0] = 1000.0
    hu[r <= 0.82] = 35.0
    if lesion is not None:
        lx, ly, lr = lesion
        hu[(xx - lx) ** 2 + (yy - ly) ** 2 <= lr**2] = lesion_hu
    display = display_window(
        CTImage(hu, np.zeros((1, 1), np.uint8), {}, (0, 0, 1, 1), "dicom", name), 40.0, 80.0
    )
    ys, xs = np.nonzero(r <= 1.0)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    if kind == "dicom":
        return CTImage(hu, display, {"Modality": "CT"}, box, "dicom", name)
    return CTImage(None, display, {"Format": "PNG"}, box, "image", name)


def copy_model_with_config(src: Path, dst: Path, **changes: object) -> Path:
    """A copy of the model folder ``src`` at ``dst`` whose config.json has ``changes`` (None removes a key)."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def plain_ct(hu=None, display=None, head_box=None):
    """A CTImage straight from arrays: ``hu`` (DICOM-like, brain-window display) or an 8-bit ``display``;
    the head box is the whole image unless given."""
    from brain_ct.image import CTImage
    from brain_ct.windowing import window

    if display is None:
        display = (window(hu, 40, 80) * 255).astype("uint8")
    h, w = display.shape
    return CTImage(
        hu=hu,
        display=display,
        meta={},
        head_box=head_box or (0, 0, w, h),
        source="dicom" if hu is not None else "image",
        name="t",
    )
