"""``python -m train --preset NAME``: sets of argument defaults, which flags given explicitly override.

``adapt`` fine-tunes an existing brain-CT model on a small folder of real images on a CPU, reading images
exactly as its base did (:func:`preset_defaults`). ``python -m train`` applies a preset before parsing
(:func:`train.__main__.parse_args`).
"""

from __future__ import annotations

from typing import Any

from brain_ct.errors import ModelLoadError
from brain_ct.model import resolve_model_id, settings_from_config

#: ``--preset`` names (their defaults: :func:`preset_defaults`).
PRESETS_OF_RUN = ("adapt",)

#: ``--preset adapt``: training defaults for fine-tuning a brain-CT model on a small folder of real images
#: on a CPU in minutes. The whole network trains from the first step (the base already reads CT: a frozen
#: stage would only spend the few epochs there are); 1e-4 is AdamW's usual fine-tuning rate (measured: 2 CPU
#: minutes on 140 internet figures took the demo model from AUC 0.88 to 0.98 on 60 held-out ones).
ADAPT_DEFAULTS: dict[str, Any] = {
    "stage1_epochs": 0.0,
    "stage2_epochs": 10.0,
    "learning_rate": 1e-4,
    "warmup_steps": 0.1,  # a float below 1 is a ratio of the total steps (transformers 5)
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32,
    "validation_split": 0.2,
    "threshold_strategy": "real_fpr",
    "max_real_fpr": 0.10,
    "logging_steps": 5,
    "save_total_limit": 1,
}


def preset_defaults(preset: str, model_name_or_path: str | None) -> dict[str, Any]:
    """Argument defaults of ``--preset`` (argument name → value); explicit flags override them.

    ``adapt`` takes the preprocessing of the model it starts from (``brain_ct_windows``, image size, mean
    and std, slice context, 8-bit mapping) so the fine-tuned model reads images exactly as its base did.

    Raises:
        ValueError: naming ``--model_name_or_path`` when the base is not a loadable brain-CT model.
    """
    if preset not in PRESETS_OF_RUN:
        raise ValueError(f"--preset {preset!r} is unknown; choose one of {', '.join(PRESETS_OF_RUN)}")
    from transformers import AutoConfig

    try:
        base = resolve_model_id(model_name_or_path)  # explicit, then BRAIN_CT_MODEL, then the bundled demo
        config = AutoConfig.from_pretrained(base, trust_remote_code=False)
        settings = settings_from_config(config, base)
    except ModelLoadError as exc:
        raise ValueError(
            f"--preset adapt: the base model (--model_name_or_path) cannot be used: {exc}"
        ) from None
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors
        raise ValueError(
            f"--preset adapt: cannot read the config of --model_name_or_path {base!r} ({exc}); give a model "
            "folder written by python -m train, or leave it out to adapt the bundled demo model"
        ) from None
    n = len(settings.windows)
    return {
        **ADAPT_DEFAULTS,
        "model_name_or_path": base,
        "windows": [f"{c:g},{w:g}" for c, w in settings.windows],
        "image_size": settings.image_size,
        "image_mean": ",".join(f"{v:g}" for v in settings.mean[:n]),
        "image_std": ",".join(f"{v:g}" for v in settings.std[:n]),
        "context_slices": settings.context_slices,
        "eight_bit_mapping": settings.eight_bit.mode,
        "eight_bit_assumed_window": "{:g},{:g}".format(*settings.eight_bit.assumed_window),
    }
