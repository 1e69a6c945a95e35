"""Subtype models in the Predictor: subtype probabilities, per-subtype Grad-CAM on demand, the text
(brain_ct.predictor, brain_ct.explain; issue 15)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_models import make_tiny_model, phantom_ct

from brain_ct import DISCLAIMER, explain
from brain_ct.errors import InvalidInputError
from brain_ct.labels import SUBTYPE_LABELS, SUBTYPES
from brain_ct.predictor import Predictor
from brain_ct.preprocess import model_input


@pytest.fixture(scope="module")
def subtype_predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    folder = make_tiny_model(tmp_path_factory.mktemp("m") / "sub", labels=SUBTYPE_LABELS, seed=3)
    return Predictor.from_pretrained(folder)


@pytest.fixture(scope="module")
def binary_predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor.from_pretrained(make_tiny_model(tmp_path_factory.mktemp("m") / "bin"))


def _logits(predictor: Predictor, ct) -> torch.Tensor:
    x = torch.from_numpy(model_input(ct, predictor.settings))[None]
    with torch.no_grad():
        return predictor.model(pixel_values=x).logits[0]


def test_subtype_probabilities_are_the_sigmoids(subtype_predictor: Predictor) -> None:
    ct = phantom_ct(128, lesion=(50, 60, 6))
    p = subtype_predictor.predict(ct)
    logits = _logits(subtype_predictor, ct)
    assert p.probability == pytest.approx(torch.sigmoid(logits[0]).item(), abs=1e-6)
    assert list(p.subtypes) == list(SUBTYPES)
    for i, name in enumerate(SUBTYPE_LABELS[1:], start=1):
        assert p.subtypes[name] == pytest.approx(torch.sigmoid(logits[i]).item(), abs=1e-6)
    assert p.heatmap_target == "any"
    d = p.to_dict()
    assert (
        d["subtypes"] == pytest.approx(p.subtypes) and d["heatmap_target"] == "any" and d["members"] is None
    )


def test_subtype_heatmap_is_that_logits_gradcam(subtype_predictor: Predictor) -> None:
    cts = [phantom_ct(128, lesion=(40 + 12 * i, 60, 7)) for i in range(3)]
    x = torch.from_numpy(np.stack([model_input(ct, subtype_predictor.settings) for ct in cts]))
    differs = False
    for target in ("subdural", "epidural"):
        index = SUBTYPE_LABELS.index(target)
        _, cams = explain.gradcam(subtype_predictor.model, x, index, multi_label=True)
        for ct, cam in zip(cts, cams.numpy(), strict=True):
            default = subtype_predictor.predict(ct)
            chosen = subtype_predictor.predict(ct, heatmap_target=target.upper())
            expected = explain.heatmap_for_image(explain.normalize_heatmap(cam), ct)
            np.testing.assert_allclose(chosen.heatmap, expected, atol=1e-4)
            assert chosen.heatmap_target == target
            # The target changes where the model is said to look, never what it reads.
            assert chosen.probability == default.probability and chosen.subtypes == default.subtypes
            differs |= not np.allclose(chosen.heatmap, default.heatmap, atol=1e-3)
    assert differs


def test_gradcam_multi_label_explains_the_raw_logit(subtype_predictor: Predictor) -> None:
    model = subtype_predictor.model
    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    _, cams = explain.gradcam(model, x, 5, multi_label=True)
    saved = {}

    def keep(module, inputs, output):
        output.requires_grad_(True)
        saved["a"] = output

    handle = model.resnet.encoder.stages[-1].register_forward_hook(keep)
    try:
        for n in range(2):
            with torch.enable_grad():
                out = model(pixel_values=x[n : n + 1]).logits
                grads = torch.autograd.grad(out[0, 5], saved["a"])[0]
            expected = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * saved["a"]).sum(1))[0]
            torch.testing.assert_close(cams[n], expected.detach(), rtol=1e-4, atol=1e-6)
    finally:
        handle.remove()


@pytest.mark.parametrize("target", ["subdural", "normal", "bleed"])
def test_binary_models_refuse_other_heatmap_targets(binary_predictor: Predictor, target: str) -> None:
    with pytest.raises(InvalidInputError, match=r"binary model.*need a subtype model"):
        binary_predictor.predict(phantom_ct(96), heatmap_target=target)


def test_subtype_models_refuse_unknown_targets(subtype_predictor: Predictor) -> None:
    with pytest.raises(InvalidInputError, match=r"choose one of any, epidural, .*subdural"):
        subtype_predictor.predict(phantom_ct(96), heatmap_target="chronic")


def test_binary_prediction_keeps_its_keys_and_text(binary_predictor: Predictor) -> None:
    default = binary_predictor.predict(phantom_ct(120, lesion=(60, 50, 6)))
    same = binary_predictor.predict(phantom_ct(120, lesion=(60, 50, 6)), heatmap_target="any")
    np.testing.assert_array_equal(default.heatmap, same.heatmap)
    d = default.to_dict()
    assert (d["subtypes"], d["heatmap_target"], d["members"]) == (None, "hemorrhage", None)
    assert default.explanation == explain.explanation(default.probability, default.threshold, default.regions)


# ------------------------------------------------------------------------------ text
def test_binary_explanation_text_is_unchanged() -> None:
    assert explain.explanation(0.9, 0.5, []) == (
        "Intracranial hemorrhage likely according to the model (probability 0.90, threshold 0.50: well above). "
        f"The heatmap shows no focused area inside the head. {DISCLAIMER}"
    )


def _subtypes(**high: float) -> dict[str, float]:
    return {name: high.get(name, 0.02) for name in SUBTYPES}


@pytest.mark.parametrize(
    ("probability", "subtypes", "expected"),
    [
        (
            0.9,
            _subtypes(subdural=0.81),
            "The pattern is most consistent with a subdural hemorrhage (p 0.81).",
        ),
        (
            0.9,
            _subtypes(epidural=0.7, intraventricular=0.55),
            "The pattern is most consistent with an epidural hemorrhage (p 0.70), "
            "then an intraventricular hemorrhage (p 0.55).",
        ),
        (
            0.9,
            _subtypes(subarachnoid=0.3),
            "No hemorrhage subtype stands out (the highest is subarachnoid, p 0.30).",
        ),
        (
            0.2,
            _subtypes(intraparenchymal=0.6),
            "The model's intraparenchymal output is notably high (p 0.60); with P(hemorrhage) below the "
            "threshold this is not a finding.",
        ),
        (0.2, _subtypes(subdural=0.4), ""),
        (0.9, None, ""),
    ],
)
def test_describe_subtypes(probability: float, subtypes: dict | None, expected: str) -> None:
    assert explain.describe_subtypes(probability, 0.5, subtypes) == expected
    text = explain.explanation(probability, 0.5, [], subtypes=subtypes)
    assert (expected in text) and text.endswith(DISCLAIMER)


def test_explanation_states_the_agreement() -> None:
    text = explain.explanation(0.7, 0.5, [], agreement=(2, 3))
    assert "2 of 3 models in the ensemble put this slice above their own threshold." in text
