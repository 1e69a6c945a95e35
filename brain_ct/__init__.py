"""brain_ct: read a head-CT slice or scan and look for intracranial hemorrhage.

A research and education aid, never a diagnosis. Heavy parts (torch, transformers) are
imported only when the model is first used, so ``import brain_ct`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from brain_ct.errors import InvalidInputError, ModelLoadError, NotHeadCTError
from brain_ct.labels import SUBTYPES
from brain_ct.preprocess import to_model_input
from brain_ct.windowing import PRESETS, window
from brain_ct.wording import DISCLAIMER

__version__ = "0.1.0"

__all__ = [
    "DISCLAIMER",
    "PRESETS",
    "SUBTYPES",
    "CTImage",
    "InvalidInputError",
    "ModelLoadError",
    "NotHeadCTError",
    "Prediction",
    "Predictor",
    "load_image",
    "to_model_input",
    "window",
]

_LAZY = {
    "CTImage": "brain_ct.image",
    "load_image": "brain_ct.io",
    "Predictor": "brain_ct.predictor",
    "Prediction": "brain_ct.predictor",
}

if TYPE_CHECKING:
    from brain_ct.image import CTImage
    from brain_ct.io import load_image
    from brain_ct.predictor import Prediction, Predictor


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'brain_ct' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
