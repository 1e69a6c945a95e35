"""Tiny random brain-CT models for tests: a ResNet folder that follows the model folder contract.

Usage in a test module (pytest puts ``tests/`` on ``sys.path``)::

    from helpers_models import make_tiny_model

    def test_x(tmp_path):
        model_dir = make_tiny_model(tmp_path / "m")

No weights are downloaded: the model is built from a small ``ResNetConfig`` with a fixed seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from brain_ct.model import ModelSettings, apply_settings_to_config
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

    Returns:
        ``path`` as a :class:`~pathlib.Path`; loads with :func:`brain_ct.model.load_model`.
    """
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    settings = ModelSettings(
        windows=tuple((float(c), float(w)) for c, w in windows),
        image_size=image_size,
        threshold=threshold,
        context_slices=context_slices,
        trained_on=trained_on,
    )
    config = ResNetConfig(
        num_channels=settings.num_channels,
        embedding_size=width,
        hidden_sizes=[width * 2**i for i in range(num_stages)],
        depths=[1] * num_stages,
        layer_type="basic",
        num_labels=2,
    )
    apply_settings_to_config(config, settings)
    torch.manual_seed(seed)
    model = ResNetForImageClassification(config).eval()
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    return out
