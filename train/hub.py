"""Push a trained model folder to the Hugging Face Hub with ``huggingface_hub``.

The folder pushed is exactly what ``python -m train`` leaves in ``--output_dir``: config (with the
``brain_ct_*`` keys and the chosen threshold), safetensors weights, the image-processor config, the model
card, ``eval_results.json`` and the plots. Checkpoint subfolders, optimizer states and the run's
``training_args.bin`` (a pickle) stay local. The token comes from ``HF_TOKEN`` or the login cache
(``hf auth login``), as ``huggingface_hub`` resolves it.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

_RUN_LEFTOVERS = [
    "checkpoint-*",
    "checkpoint-*/**",
    "runs/**",
    "trainer_state.json",
    "all_results.json",
    "train_results.json",
    ".cache/**",
]

#: What never leaves the machine: checkpoints, optimizer/trainer state, pickled arguments, logs — also
#: those of member models inside an ensemble folder (``fold-0/checkpoint-*``: ``*`` spans folders here).
IGNORE_PATTERNS: list[str] = [
    *_RUN_LEFTOVERS,
    *(f"*/{pattern}" for pattern in _RUN_LEFTOVERS),
    "*.bin",
    "*.pt",
    "*.pth",
    "*.pkl",
]


def push_folder(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload brain-CT hemorrhage model",
) -> str:
    """Create (if needed) the model repo ``repo_id`` and upload ``folder`` to it.

    Args:
        folder: the trained model folder (``--output_dir``), or an ensemble folder.
        repo_id: ``owner/name`` or ``name`` (then under the token's user).
        private: create the repository as private (no effect when it exists).
        token: a Hub token; None uses ``HF_TOKEN`` or the login cache.
        commit_message: the Hub commit message.

    Returns:
        The repository URL.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    is_model = (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    if not is_model and not (folder / "ensemble.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a saved model folder (config.json and model.safetensors needed) "
            "nor an ensemble folder (ensemble.json, written by python -m train.ensemble)"
        )
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
    target = getattr(url, "repo_id", None) or repo_id
    api.upload_folder(
        repo_id=target,
        folder_path=str(folder),
        repo_type="model",
        commit_message=commit_message,
        ignore_patterns=IGNORE_PATTERNS,
    )
    logger.info("pushed %s to https://huggingface.co/%s", folder, target)
    return f"https://huggingface.co/{target}"
