"""brain_ct.architectures: where each family keeps its Grad-CAM layer, head, first convolution, P(hemorrhage)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, ResNetConfig, ResNetForImageClassification, ViTConfig

from brain_ct import architectures
from brain_ct.architectures import FAMILIES, family_of, hemorrhage_index, positive_output, to_probabilities
from brain_ct.errors import ModelLoadError
from brain_ct.labels import BINARY_LABELS, MULTI_LABEL, SUBTYPE_LABELS

#: Tiny stand-ins for the layouts the project uses: the demo's basic blocks, and the ImageNet ResNet-50 v1
#: layout of train.import_resnet50 (bottleneck, stride in the first 1×1 convolution).
LAYOUTS = {
    "basic": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
    "bottleneck_v1": {
        "embedding_size": 8,
        "hidden_sizes": [16, 32],
        "depths": [1, 2],
        "layer_type": "bottleneck",
        "downsample_in_bottleneck": True,
    },
}


def _model(layout: str, num_labels: int = 2, num_channels: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = ResNetConfig(num_channels=num_channels, num_labels=num_labels, **LAYOUTS[layout])
    model = ResNetForImageClassification(config).eval()
    # Non-trivial BN statistics, so a wrong layer or a wrong channel mapping shows in the outputs.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


def test_family_of_a_resnet_model_and_config() -> None:
    model = _model("basic")
    assert family_of(model) is FAMILIES["resnet"]
    assert family_of(model.config) is FAMILIES["resnet"]


def test_family_of_refuses_other_families_and_classes() -> None:
    with pytest.raises(ModelLoadError, match=r"'vit' model.*ResNetForImageClassification"):
        family_of(ViTConfig(), "some/vit")
    with pytest.raises(ModelLoadError, match=r"ResNetBackbone.*ResNetForImageClassification is required"):
        family_of(ResNetConfig(architectures=["ResNetBackbone"]), "some/backbone")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_gradcam_layer_head_and_features_rebuild_the_logits(layout: str) -> None:
    """The head applied to the global mean of the last features IS the model's logits (the closed-form CAM's
    premise), and the Grad-CAM layer's output is those features."""
    model = _model(layout)
    family = family_of(model)
    seen: dict[str, torch.Tensor] = {}
    handle = family.gradcam_layer(model).register_forward_hook(lambda _m, _i, out: seen.setdefault("f", out))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(pixel_values=x, output_hidden_states=True)
    handle.remove()
    features = family.last_features(out)
    torch.testing.assert_close(seen["f"], features)
    head = family.head(model)
    assert head.weight.shape == (2, features.shape[1])
    torch.testing.assert_close(head(features.mean((2, 3))), out.logits, rtol=1e-5, atol=1e-6)
    assert family.output_stride(model.config) == 64 // features.shape[-1]


def test_head_prefix_separates_head_from_backbone() -> None:
    model = _model("basic")
    family = family_of(model)
    head = {n for n, _ in model.named_parameters() if family.is_head_parameter(n)}
    assert head == {"classifier.1.weight", "classifier.1.bias"}
    assert not family.is_head_parameter("classifier_extra.weight")


def test_head_refuses_a_non_linear_classifier() -> None:
    model = _model("basic")
    model.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Identity())
    with pytest.raises(ModelLoadError, match="Identity.*Linear"):
        family_of(model).head(model)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_adapted_first_conv_gives_the_same_logits_for_repeated_channels(layout: str) -> None:
    """3 → 9 channels: the three pretrained channels repeated (a slice and two identical neighbours) give the
    pretrained model's logits exactly; the new channels are not all alike (each window keeps its own)."""
    model = _model(layout)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(pixel_values=x).logits
    family = family_of(model)
    family.adapt_input_channels(model, 9)
    assert model.config.num_channels == 9 and family.first_conv(model).weight.shape[1] == 9
    with torch.no_grad():
        after = model(pixel_values=x.repeat(1, 3, 1, 1)).logits
        other = model(pixel_values=torch.cat([x, x.flip(1), x], 1)).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(other, before, atol=1e-3)


def test_adapted_model_saves_and_loads(tmp_path: Path) -> None:
    """3 → 1 channel: one grey channel reads as the grey repeated in the three pretrained ones."""
    model = _model("basic")
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        grey = model(pixel_values=x.repeat(1, 3, 1, 1)).logits
    family_of(model).adapt_input_channels(model, 1)
    with torch.no_grad():
        expected = model(pixel_values=x).logits
    torch.testing.assert_close(expected, grey, rtol=1e-4, atol=1e-5)
    model.save_pretrained(tmp_path)
    loaded = ResNetForImageClassification.from_pretrained(tmp_path).eval()
    assert AutoConfig.from_pretrained(tmp_path).num_channels == 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x).logits, expected)


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_adapt_input_channels_refuses_non_positive_counts(bad: object) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        family_of(_model("basic")).adapt_input_channels(_model("basic"), bad)  # type: ignore[arg-type]


def test_from_pretrained_makes_a_new_head_and_keeps_the_backbone(tmp_path: Path) -> None:
    base = _model("bottleneck_v1", num_labels=7)
    base.save_pretrained(tmp_path)
    names = list(BINARY_LABELS)
    labels = {
        "num_labels": 2,
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }
    model = FAMILIES["resnet"].from_pretrained(str(tmp_path), labels)
    assert model.config.id2label == {0: "normal", 1: "hemorrhage"}
    assert FAMILIES["resnet"].head(model).weight.shape[0] == 2
    conv = FAMILIES["resnet"].first_conv
    torch.testing.assert_close(conv(model).weight, conv(base).weight)


@pytest.mark.parametrize(
    ("labels", "multi_label", "index"),
    [
        (BINARY_LABELS, False, 1),
        (SUBTYPE_LABELS, True, 0),
        (("epidural", "ANY", "subdural"), True, 1),
        (("hemorrhage", "normal"), False, 0),
    ],
)
def test_which_output_is_p_hemorrhage(labels: tuple[str, ...], multi_label: bool, index: int) -> None:
    assert hemorrhage_index(labels, multi_label) == index
    config = ResNetConfig(
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        problem_type=MULTI_LABEL if multi_label else None,
    )
    assert positive_output(config) == (multi_label, index)


def test_hemorrhage_index_refuses_labels_without_it() -> None:
    with pytest.raises(ValueError):
        hemorrhage_index(("normal", "bleed"), False)
    with pytest.raises(ValueError):
        positive_output(ResNetConfig(num_labels=3, id2label={0: "a", 1: "b", 2: "c"}))


def test_unnamed_two_class_head_reads_output_1() -> None:
    """transformers' default LABEL_0 / LABEL_1: train's 0/1 targets make output 1 hemorrhage."""
    assert positive_output(ResNetConfig(num_labels=2)) == (False, 1)


def test_to_probabilities_softmax_and_sigmoid_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    soft = to_probabilities(logits, multi_label=False)
    torch.testing.assert_close(soft[:, 1], torch.tensor([0.5, 1 / (1 + torch.e**-2)]))
    torch.testing.assert_close(soft.sum(1), torch.ones(2))
    sig = to_probabilities(logits, multi_label=True)
    torch.testing.assert_close(sig, torch.tensor([[0.5, 0.5], [0.5, 1 / (1 + torch.e**-2)]]))
    assert to_probabilities(logits.half(), multi_label=False).dtype == torch.float32


def test_describe_names_the_layout() -> None:
    text = architectures.FAMILIES["resnet"].describe(_model("bottleneck_v1"))
    assert text.startswith("ResNet (bottleneck blocks), 3 input channels, stages [16, 32] × depths [1, 2]")
    assert text.endswith("output stride 8")
