"""The bundled demo models (binary, and the subtype model beside it): the folder contract, their labelling,
and their reading of real head-CT anatomy.

pydicom's real head-CT slices are an evaluation set only — the demo model never trained or was tuned
on them — so these tests say whether phantoms alone taught it that real anatomy is not blood.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from brain_ct.labels import BINARY_LABELS, SUBTYPE_LABELS
from brain_ct.model import DEFAULT_MODEL_DIR, DEMO_MODEL_DIR, PROJECT_ROOT, SUBTYPE_DEMO_MODEL_DIR
from brain_ct.predictor import Predictor

REAL_ANATOMY_DIR = Path(__file__).resolve().parents[1] / "data" / "real_anatomy" / "dcm_qa_ct-GE"


#: Each bundled model folder and its labels by class index: the default ResNet-50, the small demo, the subtypes.
DEMOS = {
    DEFAULT_MODEL_DIR: BINARY_LABELS,
    DEMO_MODEL_DIR: BINARY_LABELS,
    SUBTYPE_DEMO_MODEL_DIR: SUBTYPE_LABELS,
}
#: Largest weights file of each (the ResNet-50 is 23.5 M parameters in fp16; the small ones 0.7 M in fp32).
MAX_WEIGHTS_BYTES = {
    DEFAULT_MODEL_DIR: 50_000_000,
    DEMO_MODEL_DIR: 10 * 1024 * 1024,
    SUBTYPE_DEMO_MODEL_DIR: 10 * 1024 * 1024,
}


@pytest.fixture(scope="module", params=list(DEMOS), ids=lambda p: p.name)
def demo(request: pytest.FixtureRequest) -> Predictor:
    return Predictor.from_pretrained(str(request.param))


@pytest.mark.parametrize("folder", list(DEMOS), ids=lambda p: p.name)
def test_demo_folder_is_small_and_complete(folder: Path) -> None:
    names = {p.name for p in Path(folder).iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "preprocessor_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    assert (Path(folder) / "model.safetensors").stat().st_size < MAX_WEIGHTS_BYTES[folder]


def test_demo_is_labelled_synthetic_everywhere(demo: Predictor) -> None:
    folder = PROJECT_ROOT / demo.settings.model_id  # a bundled model is shown relative to the project
    assert demo.settings.is_demo
    assert "synthetic" in (demo.settings.trained_on or "").lower()
    card = (folder / "README.md").read_text().lower()
    assert "synthetic phantoms" in card and "not be used on patients" in card
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(DEMOS[folder])}


def test_the_subtype_demo_gives_the_five_subtypes() -> None:
    demo = Predictor.from_pretrained(str(SUBTYPE_DEMO_MODEL_DIR))
    prediction = demo.predict(PROJECT_ROOT / "examples" / "synthetic_subdural.dcm")
    assert set(prediction.subtypes) == set(SUBTYPE_LABELS[1:])
    assert all(0.0 <= p <= 1.0 for p in prediction.subtypes.values())


def test_real_posterior_fossa_slice_reads_normal(demo: Predictor) -> None:
    # pydicom's real posterior-fossa level; the model before real-anatomy training read it "hemorrhage"
    # (P 0.173 against a threshold of 0.114).
    prediction = demo.predict(get_testdata_file("J2K_pixelrep_mismatch.dcm"))
    assert prediction.label == "normal", f"P(hemorrhage) = {prediction.probability:.3f}"


def test_held_out_real_levels_read_normal(demo: Predictor) -> None:
    from train.data.real_anatomy import real_anatomy_split

    _, held_out = real_anatomy_split(REAL_ANATOMY_DIR)
    assert len(held_out) == 7
    readings = [demo.predict(path) for path in held_out]
    normal = sum(p.label == "normal" for p in readings)
    assert normal >= 0.9 * len(held_out), [round(p.probability, 3) for p in readings]


def test_held_out_real_levels_as_8bit_figures_read_normal(demo: Predictor) -> None:
    """The held-out levels as internet-style figures (other renders than benchmarks.real_anatomy's: seed 1),
    decided at the model's threshold for 8-bit images."""
    import numpy as np

    from brain_ct.synthetic import real_variant
    from train.data.phantoms import encode_phantom
    from train.data.real_anatomy import load_real_slice, real_anatomy_split

    _, held_out = real_anatomy_split(REAL_ANATOMY_DIR)
    rng = np.random.default_rng(1)
    readings = []
    for level, path in enumerate(held_out):
        real = load_real_slice(path, 256)
        plain = real_variant(real.hu, real.pixel_mm, rng, seed=level, augment=False, space=real.space)
        for _ in range(3):
            ct, _ = encode_phantom(plain, "image", rng, f"level{level}.png")
            readings.append(demo.predict(ct))
    assert {p.threshold for p in readings} == {demo.settings.threshold_for("image")}
    normal = sum(p.label == "normal" for p in readings)
    assert normal >= 0.85 * len(readings), [round(p.probability, 3) for p in readings]


@pytest.mark.parametrize("name", sorted(p.name for p in (PROJECT_ROOT / "examples").glob("synthetic_*.*")))
@pytest.mark.parametrize("folder", [DEFAULT_MODEL_DIR, DEMO_MODEL_DIR], ids=lambda p: p.name)
def test_the_app_examples_read_as_named(folder: Path, name: str) -> None:
    # what a new user clicks first, with the default and the small demo: a bleed example must read
    # "hemorrhage", a normal one "normal"
    prediction = _predictor(folder).predict(PROJECT_ROOT / "examples" / name)
    expected = "normal" if "normal" in name else "hemorrhage"
    assert prediction.label == expected, f"P(hemorrhage) = {prediction.probability:.3f}"


# 693_J2KI.dcm is compressed so lossily that blobs replace the anatomy (look at it in a brain window): the
# small models read it "hemorrhage" (P 0.92, threshold 0.31), the ResNet-50 "normal" (P 0.24, threshold 0.50).
# strict=True: the day a small model reads it "normal", this turns red so the mark is removed.
_SMALL_LOSSY = pytest.mark.xfail(
    strict=True, reason="lossy JPEG 2000 blobs read as blood by the small models (issue 12)"
)


@pytest.mark.parametrize(
    "folder",
    [
        DEFAULT_MODEL_DIR,
        *(pytest.param(f, marks=_SMALL_LOSSY) for f in (DEMO_MODEL_DIR, SUBTYPE_DEMO_MODEL_DIR)),
    ],
    ids=lambda p: p.name,
)
def test_lossy_real_slice_reads_normal(folder: Path) -> None:
    prediction = _predictor(folder).predict(get_testdata_file("693_J2KI.dcm"))
    assert prediction.label == "normal", f"P(hemorrhage) = {prediction.probability:.3f}"


_PREDICTORS: dict[Path, Predictor] = {}


def _predictor(folder: Path) -> Predictor:
    """One predictor per bundled folder for the parametrised tests (loading the ResNet-50 takes a second)."""
    if folder not in _PREDICTORS:
        _PREDICTORS[folder] = Predictor.from_pretrained(str(folder))
    return _PREDICTORS[folder]
