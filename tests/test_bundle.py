"""python -m train.bundle: a training output copied to a shippable folder, fp16 weights loaded as fp32."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_models import make_tiny_model
from safetensors import safe_open

from brain_ct.errors import InvalidInputError
from brain_ct.model import load_model
from brain_ct.server import example_files
from train import bundle


def _training_output(tmp_path):
    out = make_tiny_model(tmp_path / "out", width=8)
    (out / "checkpoint-10").mkdir()
    (out / "checkpoint-10" / "optimizer.pt").write_bytes(b"x" * 100)
    (out / "training_args.bin").write_bytes(b"y")
    (out / "README.md").write_text("# card\n")
    (out / "roc_test.png").write_bytes(b"\x89PNG")
    return out


def test_fp16_copy_keeps_only_what_a_bundled_model_needs_and_loads_as_fp32(tmp_path):
    out = _training_output(tmp_path)
    target = tmp_path / "models" / "tiny"
    assert (
        bundle.main(["--model", str(out), "--output_dir", str(target), "--fp16", "--check_phantoms", "2"])
        == 0
    )

    names = sorted(p.name for p in target.iterdir())
    assert names == ["README.md", "bundle.json", "config.json", "model.safetensors", "roc_test.png"]
    with safe_open(str(target / "model.safetensors"), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 (a file handle, not a dict)
    assert dtypes == {
        torch.float16,
        torch.int64,
    }  # batch counts stay integers; no value is beyond fp16's range
    assert (target / "model.safetensors").stat().st_size < 0.6 * (out / "model.safetensors").stat().st_size

    model, _ = load_model(target)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    original, _ = load_model(out)
    for (name, a), (_, b) in zip(original.state_dict().items(), model.state_dict().items(), strict=True):
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), name

    report = json.loads((target / "bundle.json").read_text())
    check = report["check"]
    assert check["slices"] == len(example_files()) + 2 * 2  # the examples, 2 phantoms as DICOM and PNG
    assert 0 <= check["max_abs_change"] < 0.01
    assert check["label_flips"] == 0
    assert report["tensors_converted"] > 0


def test_fp32_copy_is_byte_identical_weights(tmp_path):
    out = _training_output(tmp_path)
    target = tmp_path / "copy"
    report = bundle.bundle(out, target, fp16=False)
    assert (target / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    assert "check" not in report and not (target / "checkpoint-10").exists()


def test_refuses_a_folder_without_weights_and_the_same_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="not a model folder"):
        bundle.bundle(tmp_path / "empty", tmp_path / "x", fp16=True)
    out = _training_output(tmp_path)
    with pytest.raises(InvalidInputError, match="must differ"):
        bundle.bundle(out, out, fp16=True)
    assert bundle.main(["--model", str(tmp_path / "empty"), "--output_dir", str(tmp_path / "y")]) == 2


def test_a_tensor_fp16_cannot_hold_stays_fp32(tmp_path):
    # The ImageNet ResNet-50's stem batch-norm variance reaches ~1e5 (its input scaled to Keras's 0-255):
    # in fp16 it would be infinite and the stem channel dead.
    out = _training_output(tmp_path)
    model, _ = load_model(out)
    stem_var = "resnet.embedder.embedder.normalization.running_var"
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state[stem_var] *= 1e5
    state["resnet.embedder.embedder.convolution.weight"] *= 316.0  # the same stem output, √1e5 larger
    model.load_state_dict(state)
    model.save_pretrained(out)
    target = tmp_path / "half"
    report = bundle.bundle(out, target, fp16=True, n_phantoms=2)
    assert report["tensors_kept_fp32"] == [stem_var]
    with safe_open(str(target / "model.safetensors"), framework="pt") as f:
        assert f.get_tensor(stem_var).dtype == torch.float32
        assert f.get_tensor("resnet.embedder.embedder.convolution.weight").dtype == torch.float16
    assert report["check"]["label_flips"] == 0 and report["check"]["max_abs_change"] < 0.01
