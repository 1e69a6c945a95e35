"""Copy a trained model folder into ``models/`` to ship with the project, optionally with fp16 weights.

    python -m train.bundle --model out/r50-run4 --output_dir models/brain-ct-resnet50 --fp16

``python -m train`` writes checkpoints, optimizer states and ``training_args.bin`` beside the model; a
bundled model needs only what :func:`brain_ct.model.load_model` reads and what its card shows: the config,
the image-processor config, the weights (``model.safetensors``), the card (``README.md``), the metric files
and the plots. ``--fp16`` stores the weights in half precision (a ResNet-50: 94 MB → 47 MB; brain_ct always
loads them as fp32) and checks what that costs: the folder's model and the bundled copy read the same slices
(the project's examples and the synthetic phantoms of :mod:`brain_ct.synthetic`, DICOM and 8-bit), and the
largest change of P(hemorrhage) and the number of labels that flip are printed and written to
``<output_dir>/bundle.json``. A flipped label refuses the copy unless ``--allow_flips``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from brain_ct import synthetic
from brain_ct.errors import BrainCTError, InvalidInputError
from brain_ct.image import CTImage
from brain_ct.io import load_image
from brain_ct.predictor import Predictor
from brain_ct.server import example_files
from train.data.phantoms import encode_phantom

logger = logging.getLogger(__name__)

#: What a bundled model folder keeps of a training output (anything else, checkpoints above all, stays behind).
KEPT_FILES = (
    "config.json",
    "preprocessor_config.json",
    "model.safetensors",
    "README.md",
    "all_results.json",
    "train_results.json",
    "eval_results.json",
    "trainer_state.json",
)
KEPT_SUFFIXES = (".png",)
WEIGHTS = "model.safetensors"


def kept(path: Path) -> bool:
    """True for a file of a training output that a bundled model keeps."""
    return path.is_file() and (path.name in KEPT_FILES or path.suffix in KEPT_SUFFIXES)


def write_half_weights(source: Path, target: Path) -> dict[str, Any]:
    """``source``'s safetensors with its floating tensors in fp16, the file's metadata kept.

    A tensor fp16 cannot hold (any |value| above 65504, e.g. the stem's batch-norm variance of the ImageNet
    ResNet-50, whose first convolution takes ImageNet-normalised input scaled to Keras's 0–255) stays in
    fp32: it would become infinite. Integer buffers stay as they are.

    Returns:
        ``{"converted": n, "kept_fp32": [names]}``.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    largest = torch.finfo(torch.float16).max
    tensors: dict[str, Any] = {}
    converted, kept_fp32 = 0, []
    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata() or {}
        names = f.keys()  # a safetensors file handle is not iterable
        for name in names:
            t = f.get_tensor(name)
            if t.is_floating_point() and t.dtype != torch.float16:
                if t.numel() and float(t.abs().max()) > largest:
                    kept_fp32.append(name)
                else:
                    t = t.to(torch.float16)
                    converted += 1
            tensors[name] = t.contiguous()
    save_file(tensors, str(target), metadata={**metadata, "format": "pt"})
    return {"converted": converted, "kept_fp32": kept_fp32}


def check_slices(size: int, n_phantoms: int, seed: int) -> list[Any]:
    """The slices both copies read: the project's examples, then synthetic phantoms (half with a bleed) as
    training feeds them (:func:`train.data.phantoms.encode_phantom`): a DICOM and an 8-bit internet figure."""
    import numpy as np

    slices: list[CTImage] = [load_image(path, allow_unverified=True) for path in example_files()]
    for i in range(n_phantoms):
        phantom = synthetic.generate_slice(seed + i, size, hemorrhage=i % 2 == 1)
        rng = np.random.default_rng(seed + i)
        slices += [
            encode_phantom(phantom, kind, rng, f"phantom-{i}.{kind}")[0] for kind in ("dicom", "image")
        ]
    return slices


def compare(original: Path, bundled: Path, n_phantoms: int, seed: int) -> dict[str, Any]:
    """P(hemorrhage) of both folders on :func:`check_slices`, and how far apart they are."""
    import numpy as np

    before, after = Predictor.from_pretrained(str(original)), Predictor.from_pretrained(str(bundled))
    slices = check_slices(256, n_phantoms, seed)
    p0 = np.asarray(before.probabilities(slices)[0], dtype=np.float64)
    p1 = np.asarray(after.probabilities(slices)[0], dtype=np.float64)
    kinds = [ct.source for ct in slices]
    t0 = np.array([before.settings.threshold_for(k) for k in kinds])
    t1 = np.array([after.settings.threshold_for(k) for k in kinds])
    flips = int(np.sum((p0 >= t0) != (p1 >= t1)))
    return {
        "slices": len(slices),
        "max_abs_change": float(np.max(np.abs(p1 - p0))),
        "mean_abs_change": float(np.mean(np.abs(p1 - p0))),
        "label_flips": flips,
    }


def bundle(
    model: Path, output_dir: Path, *, fp16: bool, n_phantoms: int = 40, seed: int = 9000
) -> dict[str, Any]:
    """Copy ``model``'s kept files to ``output_dir`` (made anew), the weights in fp16 with ``fp16``.

    Returns what was done: files copied, sizes, and with ``fp16`` the :func:`compare` numbers.
    """

    if not (model / "config.json").is_file() or not (model / WEIGHTS).is_file():
        raise InvalidInputError(f"{model} is not a model folder (config.json and {WEIGHTS} are needed)")
    if output_dir.resolve() == model.resolve():
        raise InvalidInputError("--output_dir must differ from --model")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    files = sorted(p for p in model.iterdir() if kept(p))
    for path in files:
        if fp16 and path.name == WEIGHTS:
            continue
        shutil.copy2(path, output_dir / path.name)
    report: dict[str, Any] = {"source": str(model), "files": [p.name for p in files], "fp16": fp16}
    if fp16:
        halves = write_half_weights(model / WEIGHTS, output_dir / WEIGHTS)
        report["tensors_converted"], report["tensors_kept_fp32"] = halves["converted"], halves["kept_fp32"]
        report["check"] = compare(model, output_dir, n_phantoms, seed)
    report["weights_bytes"] = (output_dir / WEIGHTS).stat().st_size
    report["source_weights_bytes"] = (model / WEIGHTS).stat().st_size
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the training output folder to copy")
    parser.add_argument("--output_dir", type=Path, required=True, help="the bundled folder (replaced)")
    parser.add_argument("--fp16", action="store_true", help="store the weights in half precision")
    parser.add_argument(
        "--check_phantoms",
        type=int,
        default=40,
        help="phantoms (each as DICOM and 8-bit) read by both copies",
    )
    parser.add_argument("--check_seed", type=int, default=9000, help="seed of the first check phantom")
    parser.add_argument("--allow_flips", action="store_true", help="keep an fp16 copy whose labels differ")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        report = bundle(
            args.model, args.output_dir, fp16=args.fp16, n_phantoms=args.check_phantoms, seed=args.check_seed
        )
    except BrainCTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (args.output_dir / "bundle.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    flips = report.get("check", {}).get("label_flips", 0)
    if flips and not args.allow_flips:
        shutil.rmtree(args.output_dir)
        print(
            f"error: {flips} label(s) differ between fp32 and fp16; copy removed (--allow_flips keeps it)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
