"""The bundled demo model: the folder contract, its labelling, and its reading of real head-CT anatomy.

pydicom's real head-CT slices are an evaluation set only — the demo model never trained or was tuned
on them — so these tests say whether phantoms alone taught it that real anatomy is not blood.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from brain_ct.model import DEMO_MODEL_DIR
from brain_ct.predictor import Predictor

REAL_HEAD_CT = ("693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm")


@pytest.fixture(scope="module")
def demo() -> Predictor:
    return Predictor.from_pretrained(str(DEMO_MODEL_DIR))


def test_demo_folder_is_small_and_complete() -> None:
    names = {p.name for p in Path(DEMO_MODEL_DIR).iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "preprocessor_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    assert (Path(DEMO_MODEL_DIR) / "model.safetensors").stat().st_size < 10 * 1024 * 1024


def test_demo_is_labelled_synthetic_everywhere(demo: Predictor) -> None:
    assert demo.settings.is_demo
    assert "synthetic" in (demo.settings.trained_on or "").lower()
    card = (Path(DEMO_MODEL_DIR) / "README.md").read_text().lower()
    assert "synthetic phantoms" in card and "not be used on patients" in card
    config = json.loads((Path(DEMO_MODEL_DIR) / "config.json").read_text())
    assert config["id2label"] == {"0": "normal", "1": "hemorrhage"}


# The current demo model fails this (693_J2KI P=0.97, J2K_pixelrep_mismatch P=0.23, threshold 0.105): its
# phantoms do not yet teach it real anatomy. strict=True: the day a retrained model passes, this turns red
# so the mark is removed.
@pytest.mark.xfail(strict=True, reason="known failure of the current demo model on real anatomy (issue 4)")
@pytest.mark.parametrize("name", REAL_HEAD_CT)
def test_real_head_ct_slices_read_normal(demo: Predictor, name: str) -> None:
    prediction = demo.predict(get_testdata_file(name))
    assert prediction.label == "normal", f"{name}: P(hemorrhage) = {prediction.probability:.3f}"
