"""brain_ct.image_set: several PNG/JPG images read one by one, counted, never stacked into a scan."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from helpers_models import make_tiny_model

from brain_ct.errors import InvalidInputError
from brain_ct.image_set import ImageSetReading, is_image_set, is_ordinary_image, read_image_set
from brain_ct.predictor import Prediction, Predictor
from brain_ct.synthetic import generate_slice, plain_8bit


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    return Predictor.from_pretrained(make_tiny_model(tmp_path_factory.mktemp("m") / "tiny"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("images")
    paths = {}
    for i, (name, bleed) in enumerate([("a.png", True), ("b.jpg", False)]):
        paths[name] = str(folder / name)
        cv2.imwrite(paths[name], plain_8bit(generate_slice(i, 128, hemorrhage=bleed, level="ventricles").hu))
    broken = folder / "c.png"
    broken.write_bytes(Path(paths["a.png"]).read_bytes()[:100])
    paths["broken"] = str(broken)
    text = folder / "d.png"  # named like an image, but is not one
    text.write_text("not an image")
    paths["text"] = str(text)
    return paths


def test_an_image_set_is_told_by_content(images):
    assert is_ordinary_image(images["b.jpg"]) and not is_ordinary_image(images["text"])
    assert is_image_set([images["a.png"], images["b.jpg"]])
    assert not is_image_set([images["a.png"]])  # one image is a slice, not a set
    assert not is_image_set([images["a.png"], images["text"]])


def test_each_image_is_read_on_its_own_as_the_predictor_reads_it(predictor, images):
    reading = read_image_set(predictor, [images["a.png"], images["broken"], images["b.jpg"]])
    assert reading.predictions[1] is None and reading.errors[0]["image"] == 2
    for path, pred in ((images["a.png"], reading.predictions[0]), (images["b.jpg"], reading.predictions[2])):
        alone = predictor.predict(path)
        assert pred.probability == pytest.approx(alone.probability, abs=1e-5) and pred.label == alone.label
    d = reading.to_dict()
    assert [i["image"] for i in d["images"]] == [1, 3] and d["kind"] == "image set"
    assert "no anatomical order" in d["order"]


def test_none_readable_is_an_error(predictor, images):
    with pytest.raises(InvalidInputError, match="none of the 2 images could be read"):
        read_image_set(predictor, [images["broken"], images["text"]])


def _pred(label: str) -> Prediction:
    import numpy as np

    return Prediction(label, 0.7 if label == "hemorrhage" else 0.1, 0.5, np.zeros((2, 2)), [], "")


@pytest.mark.parametrize(
    ("labels", "errors", "expected"),
    [
        (["hemorrhage", "normal", "hemorrhage"], 0, "2 of 3 images suspicious"),
        (["normal"], 1, "0 of 1 image suspicious; 1 could not be read"),
    ],
)
def test_summary_counts_suspicious_images(labels, errors, expected):
    reading = ImageSetReading([_pred(x) for x in labels], [{"image": 9, "message": "x"}] * errors)
    assert reading.summary() == expected
    assert reading.suspicious == [i for i, x in enumerate(labels) if x == "hemorrhage"]
