"""python -m train: the whole pipeline on a tiny drawn data set, argument checks, the Trainer's stages and
mask-guidance loss, and the Hub push with huggingface_hub replaced at its boundary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers_train import NO_EVAL, TINY, write_tiny_folder

from brain_ct.windowing import PRESETS
from train import main
from train.args import MODEL_SIZE_PRESETS, parse_windows
from train.hub import IGNORE_PATTERNS, push_folder
from train.trainer import class_activation_map, mask_bce_loss, mask_guidance_loss


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        "train": write_tiny_folder(root / "train", n=16, size=96, seed=0),
        "test": write_tiny_folder(root / "test", n=8, size=96, seed=1),
    }


@pytest.fixture(scope="module")
def trained(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One 2-step run with mask guidance and per-step checkpoints, shared by the checks below."""
    out = tmp_path_factory.mktemp("run") / "model"
    results = main(
        [
            *TINY,
            "--train_dir",
            str(data["train"]),
            "--test_dir",
            str(data["test"]),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--eval_strategy",
            "steps",
            "--save_strategy",
            "steps",
            "--eval_steps",
            "1",
            "--save_steps",
            "1",
            "--mask_loss_weight",
            "0.5",
            "--window_jitter",
            "0.1",
        ]
    )
    return out, results


@pytest.mark.slow
def test_saved_folder_follows_the_contract(trained: tuple[Path, dict[str, Any]]) -> None:
    out, results = trained
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "normal", "1": "hemorrhage"}
    assert config["label2id"] == {"normal": 0, "hemorrhage": 1}
    assert config["brain_ct_windows"] == [list(PRESETS[n]) for n in ("brain", "subdural", "bone")]
    assert config["brain_ct_image_size"] == 64
    assert config["brain_ct_threshold"] == pytest.approx(results["threshold"])
    assert 0 < config["brain_ct_threshold"] < 1
    assert len(config["brain_ct_image_mean"]) == 3 and len(config["brain_ct_image_std"]) == 3
    assert "image folder 'train'" in config["brain_ct_trained_on"]
    assert (out / "model.safetensors").is_file()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    for name in (
        "preprocessor_config.json",
        "training_curves.png",
        "roc_validation.png",
        "roc_test.png",
        "confusion_matrix_test.png",
        "README.md",
    ):
        assert (out / name).stat().st_size > 100, name


@pytest.mark.slow
def test_eval_results_have_both_splits_and_input_kinds(trained: tuple[Path, dict[str, Any]]) -> None:
    out, results = trained
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["threshold"] == pytest.approx(results["threshold"])
    # image-folder files are real anatomy: by default the threshold bounds false positives on their normals
    rule = saved["threshold_rule"]
    assert saved["threshold_strategy"] == "real_fpr" == rule["strategy"] and "fallback" not in rule
    assert rule["max_real_fpr"] == 0.1 and rule["n_real_negatives"] >= 1
    # with fewer than 10 real normals, 10 % allows none: every one of them is below the threshold
    assert rule["real_false_positives"] == 0 and saved["validation"]["confusion_matrix"][0][1] == 0
    config = json.loads((out / "config.json").read_text())
    assert config["brain_ct_threshold_rule"] == rule
    cal = saved["calibration"]
    assert config["brain_ct_temperature"] == pytest.approx(
        cal["temperature"]["temperature"] if cal["temperature"]["kept"] else 1.0
    )
    assert cal["validation"]["by_domain"].keys() == {"real"} and 0 <= cal["test"]["ece"] <= 1
    assert (out / "reliability_test.png").stat().st_size > 1000
    test = saved["test"]
    assert test["n"] == 8
    for key in ("accuracy", "sensitivity", "specificity", "f1", "auc", "confusion_matrix"):
        assert key in test
    assert set(test["by_input_kind"]) == {"dicom", "image"}


@pytest.mark.slow
def test_saved_model_loads_with_transformers_and_predictor(
    trained: tuple[Path, dict[str, Any]], data
) -> None:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from brain_ct import Predictor

    out, results = trained
    model = AutoModelForImageClassification.from_pretrained(out)
    assert type(model).__name__ == "ResNetForImageClassification"
    processor = AutoImageProcessor.from_pretrained(out)
    assert processor.size == {"shortest_edge": 64}
    predictor = Predictor.from_pretrained(out)
    assert predictor.threshold == pytest.approx(results["threshold"])
    image = next((data["test"] / "hemorrhage").glob("*.png"))
    pred = predictor.predict(image, allow_unverified=True)
    assert 0.0 <= pred.probability <= 1.0
    assert pred.label == ("hemorrhage" if pred.probability >= pred.threshold else "normal")


@pytest.mark.slow
def test_model_card(trained: tuple[Path, dict[str, Any]]) -> None:
    from brain_ct import DISCLAIMER

    out, _ = trained
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "model-index:" in card and "type: roc_auc" in card
    assert DISCLAIMER in card
    assert "## Training data" in card and "## Intended use" in card
    assert "python -m train --model_size tiny" in card  # the reproducing command
    assert "synthetic phantoms" not in card.lower()  # real-folder data: no synthetic claim
    assert "real normal validation slices" in card and "brain_ct_threshold_rule" in card
    assert "## Calibration" in card and "Expected calibration error" in card


@pytest.mark.slow
def test_resume_from_last_checkpoint(trained: tuple[Path, dict[str, Any]], data) -> None:
    out, _ = trained
    main(
        [
            *TINY,
            "--train_dir",
            str(data["train"]),
            "--output_dir",
            str(out),
            "--max_steps",
            "3",
            "--eval_strategy",
            "steps",
            "--save_strategy",
            "steps",
            "--eval_steps",
            "1",
            "--save_steps",
            "1",
            "--resume_from_checkpoint",
            "last",
        ]
    )
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    first_logged = [h["step"] for h in state["log_history"] if "loss" in h]
    assert first_logged[0] == 1 and first_logged[-1] == 3  # history continued, not restarted


def test_json_argument_file(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m"
    args = {
        "model_size": "tiny",
        "image_size": 64,
        "train_dir": str(data["train"]),
        "output_dir": str(out),
        "max_steps": 1,
        "per_device_train_batch_size": 4,
        "eval_strategy": "no",
        "save_strategy": "no",
        "load_best_model_at_end": False,
        "windows": ["brain", "80,200"],
        "class_weights": "1.0,1.3",
        "threshold_strategy": "fixed",
        "threshold": 0.4,
        "augment": False,
    }
    path = tmp_path / "args.json"
    path.write_text(json.dumps(args))
    results = main([str(path)])
    config = json.loads((out / "config.json").read_text())
    assert config["brain_ct_windows"] == [[40.0, 80.0], [80.0, 200.0]]
    assert config["num_channels"] == 2
    assert results["threshold"] == pytest.approx(0.4)
    assert "[1.0, 1.3]" in (out / "README.md").read_text()


def test_push_to_hub_uploads_the_output_folder(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import HfApi

    calls: dict[str, Any] = {}

    def create_repo(self: HfApi, repo_id: str, **kwargs: Any) -> Any:
        calls["create"] = (repo_id, kwargs)
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self: HfApi, **kwargs: Any) -> None:
        folder = Path(kwargs["folder_path"])
        calls["upload"] = kwargs
        calls["files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    out = tmp_path / "m"
    results = main(
        [
            *TINY,
            "--train_dir",
            str(data["train"]),
            "--output_dir",
            str(out),
            "--max_steps",
            "1",
            *NO_EVAL,
            "--push_to_hub",
            "--hub_model_id",
            "someone/brain-ct-test",
            "--hub_private",
        ]
    )
    assert calls["create"][0] == "someone/brain-ct-test"
    assert calls["create"][1]["private"] is True
    assert calls["upload"]["repo_id"] == "someone/brain-ct-test"
    assert Path(calls["upload"]["folder_path"]) == out
    assert "checkpoint-*" in calls["upload"]["ignore_patterns"]
    for name in (
        "config.json",
        "model.safetensors",
        "README.md",
        "eval_results.json",
        "preprocessor_config.json",
    ):
        assert name in calls["files"]
    assert results["hub_url"] == "https://huggingface.co/someone/brain-ct-test"


def test_push_folder_refuses_a_non_model_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a saved model folder"):
        push_folder(tmp_path, "someone/x")
    assert "*.bin" in IGNORE_PATTERNS  # training_args.bin is a pickle: never uploaded


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ([], "no training data"),
        (["--train_dir", "/nonexistent/dir"], "--train_dir"),
        (["--synthetic_train", "10", "--windows", "brian"], "--windows"),
        (["--synthetic_train", "10", "--class_weights", "1,2,3"], "--class_weights"),
        (["--synthetic_train", "10", "--model_size", "huge"], "--model_size"),
        (["--synthetic_train", "10", "--model_config", "{not json"], "--model_config"),
        (["--synthetic_train", "10", "--threshold_strategy", "best"], "--threshold_strategy"),
        (["--synthetic_train", "10", "--threshold_sensitivity", "1.5"], "--threshold_sensitivity"),
        (["--synthetic_train", "10", "--synthetic_8bit_fraction", "2"], "--synthetic_8bit_fraction"),
        (["--synthetic_train", "10", "--brightness", "1.2,0.8"], "--brightness"),
        (["--synthetic_train", "10", "--dicom_dir", "."], "exactly one training source"),
        (["--synthetic_train", "10", "--mask_dir", "."], "--mask_loss_weight"),
        (["--synthetic_train", "10", "--mask_loss_type", "dice"], "--mask_loss_type"),
        (["--synthetic_train", "10", "--mask_pos_weight", "0"], "--mask_pos_weight"),
    ],
)
def test_argument_errors_name_the_flag(extra: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        main(["--output_dir", "unused", *extra])


def test_parse_windows_accepts_presets_and_pairs() -> None:
    assert parse_windows(["brain", "600,2800", "Soft tissue"]) == [
        (40.0, 80.0),
        (600.0, 2800.0),
        (40.0, 380.0),
    ]


def test_demo_preset_is_small_with_stride_16() -> None:
    from transformers import ResNetConfig, ResNetForImageClassification

    model = ResNetForImageClassification(ResNetConfig(**MODEL_SIZE_PRESETS["demo"], num_labels=2)).eval()
    n_bytes = sum(p.numel() for p in model.parameters()) * 4
    assert n_bytes < 10e6
    with torch.no_grad():
        features = model(torch.zeros(1, 3, 256, 256), output_hidden_states=True).hidden_states[-1]
    assert features.shape[-2:] == (16, 16)


# ------------------------------------------------------------------------------------------- trainer


def test_stage1_freezes_backbone_then_stage2_trains_it(tmp_path: Path) -> None:
    from transformers import ResNetConfig, ResNetForImageClassification, default_data_collator

    from train.args import BrainCTTrainingArguments
    from train.trainer import BrainCTTrainer

    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(**MODEL_SIZE_PRESETS["tiny"], num_labels=2))
    rows = [{"pixel_values": torch.randn(3, 32, 32), "labels": i % 2, "input_kind": 0} for i in range(8)]
    args = BrainCTTrainingArguments(
        output_dir=str(tmp_path),
        stage1_epochs=1,
        stage2_epochs=1,
        max_steps=2,
        per_device_train_batch_size=4,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        report_to="none",
        learning_rate=1e-2,
    )
    trainer = BrainCTTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=default_data_collator,
        class_weights=[1.0, 2.0],
        stage1_epochs=1,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    bn = model.resnet.embedder.embedder.normalization.running_mean.clone()
    trainer.train()
    assert trainer.stage1_steps == 1  # stage 1 is 1 of 2 epochs: half of the 2 steps
    after = dict(model.named_parameters())
    head_changed = not torch.equal(before["classifier.1.weight"], after["classifier.1.weight"])
    backbone_changed = not torch.equal(
        before["resnet.embedder.embedder.convolution.weight"],
        after["resnet.embedder.embedder.convolution.weight"],
    )
    assert head_changed and backbone_changed  # step 1 head only, step 2 everything
    assert not torch.equal(bn, model.resnet.embedder.embedder.normalization.running_mean)


def test_stage1_only_keeps_backbone_and_batchnorm_fixed(tmp_path: Path) -> None:
    from transformers import ResNetConfig, ResNetForImageClassification, default_data_collator

    from train.args import BrainCTTrainingArguments
    from train.trainer import BrainCTTrainer

    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(**MODEL_SIZE_PRESETS["tiny"], num_labels=2))
    rows = [{"pixel_values": torch.randn(3, 32, 32), "labels": i % 2} for i in range(8)]
    args = BrainCTTrainingArguments(
        output_dir=str(tmp_path),
        stage1_epochs=4,
        stage2_epochs=0,
        per_device_train_batch_size=4,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        report_to="none",
        learning_rate=1e-2,
    )
    trainer = BrainCTTrainer(
        model=model, args=args, train_dataset=rows, data_collator=default_data_collator, stage1_epochs=4
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    trainer.train()
    assert trainer.state.global_step == 8
    for n, p in model.named_parameters():
        assert torch.equal(before[n], p) == (not n.startswith("classifier.")), n
    for n, b in model.named_buffers():
        assert torch.equal(buffers[n], b), n  # BatchNorm statistics untouched in stage 1


def test_mask_guidance_loss_by_hand() -> None:
    cam = torch.zeros(2, 4, 4)
    cam[0, 0, 0] = 3.0  # inside the mask
    cam[0, 3, 3] = 1.0  # outside
    cam[1, 1, 1] = 2.0  # a normal slice: all positive evidence
    cam[1, 2, 2] = -2.0
    mask = torch.zeros(2, 8, 8)
    mask[0, :2, :2] = 1.0  # max-pools onto CAM cell (0, 0)
    labels = torch.tensor([1, 0])
    loss = mask_guidance_loss(cam, mask, torch.tensor([True, False]), labels, negative_weight=0.5)
    # positive: 1 - 3/4 = 0.25; negative: 0.5 * 2/4 = 0.25
    assert float(loss) == pytest.approx(0.5, abs=1e-5)
    assert float(mask_guidance_loss(cam, mask, torch.tensor([False, False]), labels, 0.0)) == 0.0


def test_mask_bce_loss_by_hand() -> None:
    logodds = torch.zeros(3, 2, 2)
    logodds[0, 0, 0] = 2.0  # lesion cell of a positive slice
    logodds[1, 1, 1] = -1.0  # a normal slice
    mask = torch.zeros(3, 4, 4)
    mask[0, 0, 0] = 1.0  # any lesion pixel marks its whole cell
    labels = torch.tensor([1, 0, 1])
    has_mask = torch.tensor([True, False, False])  # the third (positive without a mask) is left out
    loss = mask_bce_loss(logodds, mask, has_mask, labels, pos_weight=4.0)

    def bce(x: float, t: float, w: float = 4.0) -> float:
        import math

        return -(w * t * math.log(1 / (1 + math.exp(-x))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-x))))

    expected = (bce(2.0, 1.0) + 3 * bce(0.0, 0.0) + bce(-1.0, 0.0) + 3 * bce(0.0, 0.0)) / 8
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    only_unmasked = mask_bce_loss(logodds[2:], mask[2:], has_mask[2:], labels[2:], 4.0)
    assert float(only_unmasked) == 0.0


def test_mask_bce_mean_of_the_map_is_the_slice_logit_difference() -> None:
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    model = ResNetForImageClassification(
        ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=2)
    ).eval()
    out = model(pixel_values=torch.randn(2, 3, 64, 64), output_hidden_states=True)
    head = model.classifier[-1]
    features = out.hidden_states[-1]
    logodds = class_activation_map(features, head.weight, 1) - class_activation_map(features, head.weight, 0)
    logodds = logodds + (head.bias[1] - head.bias[0])
    diff = out.logits[:, 1] - out.logits[:, 0]
    torch.testing.assert_close(logodds.mean(dim=(1, 2)), diff, rtol=1e-4, atol=1e-5)


def test_cam_equals_gradcam_up_to_scale() -> None:
    """The claim behind mask guidance: CAM of the hemorrhage class = Captum Grad-CAM × a positive factor."""
    from captum.attr import LayerGradCam
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(**MODEL_SIZE_PRESETS["tiny"], num_labels=2)).eval()
    x = torch.randn(2, 3, 64, 64)
    gc = LayerGradCam(lambda t: model(pixel_values=t).logits, model.resnet.encoder.stages[-1])
    grad_cam = gc.attribute(x, target=1, relu_attributions=False).squeeze(1)
    with torch.no_grad():
        feats = model(pixel_values=x, output_hidden_states=True).hidden_states[-1]
    cam = class_activation_map(feats, model.classifier[-1].weight, 1)
    h, w = cam.shape[-2:]
    assert grad_cam.abs().max() > 0
    # Grad-CAM weights are the spatially averaged gradients W[1, k] / (h·w): the maps agree up to h·w,
    # so ReLU(CAM) and Captum's relu_attributions=True heatmap agree too.
    torch.testing.assert_close(grad_cam * (h * w), cam, rtol=1e-4, atol=1e-5)
    assert np.isfinite(cam.detach().numpy()).all()


@pytest.mark.slow
def test_on_the_fly_phantoms_make_a_demo_style_model(tmp_path: Path) -> None:
    from brain_ct.model import load_model

    out = tmp_path / "demo"
    results = main(
        [
            *TINY,
            "--synthetic_train",
            "8",
            "--synthetic_validation",
            "4",
            "--synthetic_test",
            "6",
            "--synthetic_size",
            "64",
            "--output_dir",
            str(out),
            "--max_steps",
            "1",
            *NO_EVAL,
            "--dataloader_num_workers",
            "0",
        ]
    )
    card = (out / "README.md").read_text()
    assert (
        "trained on synthetic phantoms — for demonstration only, must not be used on patients" in card.lower()
    )
    assert set(results["test"]["by_input_kind"]) == {"dicom", "image"}
    _, settings = load_model(out)
    assert settings.is_demo and "synthetic phantoms" in settings.trained_on
    # phantoms only: no real normals to bound false positives on, so the sensitivity rule, said everywhere
    rule = results["threshold_rule"]
    assert rule["strategy"] == "sensitivity" and rule["requested"] == "auto"
    assert "no real normal slices" in rule["fallback"]
    assert settings.threshold_rule == rule
    assert "**Fallback:**" in card and "no real normal slices" in card


@pytest.mark.slow
def test_streaming_hub_dataset(tmp_path: Path) -> None:
    from helpers_train import write_png_folder

    write_png_folder(tmp_path / "hub" / "train", 12)
    write_png_folder(tmp_path / "hub" / "test", 4)
    out = tmp_path / "m"
    results = main(
        [
            *TINY,
            "--dataset_name",
            str(tmp_path / "hub"),
            "--streaming",
            "--max_steps",
            "2",
            "--class_weights",
            "1,1",
            "--max_eval_samples",
            "4",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "2",
            "--save_strategy",
            "steps",
            "--save_steps",
            "2",
            "--output_dir",
            str(out),
        ]
    )
    assert results["test"]["n"] == 4
    assert "Hugging Face dataset" in json.loads((out / "config.json").read_text())["brain_ct_trained_on"]


def test_streaming_needs_max_steps_and_class_weights(tmp_path: Path) -> None:
    from helpers_train import write_png_folder

    write_png_folder(tmp_path / "hub" / "train", 4)
    with pytest.raises(ValueError, match="--max_steps"):
        main(
            [
                *TINY,
                "--dataset_name",
                str(tmp_path / "hub"),
                "--streaming",
                "--output_dir",
                str(tmp_path / "o"),
            ]
        )
    with pytest.raises(ValueError, match="--class_weights"):
        main(
            [
                *TINY,
                "--dataset_name",
                str(tmp_path / "hub"),
                "--streaming",
                "--max_steps",
                "1",
                "--output_dir",
                str(tmp_path / "o"),
            ]
        )


def test_build_model_from_a_pretrained_base_new_head_and_adapted_channels(tmp_path: Path) -> None:
    """A 3-channel ImageNet-style base (another head size) becomes a 9-channel binary model: the backbone is
    kept, the head made anew, and three identical slices give the base's stem response."""
    from transformers import ResNetConfig, ResNetForImageClassification

    from train.__main__ import build_model
    from train.args import ModelArguments

    torch.manual_seed(0)
    base = ResNetForImageClassification(
        ResNetConfig(**MODEL_SIZE_PRESETS["tiny"], num_labels=5, downsample_in_bottleneck=True)
    ).eval()
    base.save_pretrained(tmp_path / "base")
    model = build_model(ModelArguments(model_name_or_path=str(tmp_path / "base")), 9, "binary").eval()
    assert model.config.num_channels == 9 and model.config.id2label == {0: "normal", 1: "hemorrhage"}
    assert model.classifier[-1].weight.shape[0] == 2
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            model.resnet.embedder(x.repeat(1, 3, 1, 1)), base.resnet.embedder(x), rtol=1e-4, atol=1e-5
        )
        assert model(pixel_values=x.repeat(1, 3, 1, 1)).logits.shape == (2, 2)


def test_build_model_refuses_a_base_of_another_family(tmp_path: Path) -> None:
    from transformers import ViTConfig

    from train.__main__ import build_model
    from train.args import ModelArguments

    ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1).save_pretrained(tmp_path)
    with pytest.raises(
        ValueError, match=r"--model_name_or_path: .*'vit' model.*ResNetForImageClassification"
    ):
        build_model(ModelArguments(model_name_or_path=str(tmp_path)), 3, "binary")
