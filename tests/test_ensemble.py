"""brain_ct.ensemble: ensemble.json loads wherever a model loads; its reading is the members' mean."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_models import make_tiny_model, phantom_ct

from brain_ct.ensemble import ENSEMBLE_FILE, FORMAT, EnsembleSpec, read_spec, write_spec
from brain_ct.errors import InvalidInputError, ModelLoadError
from brain_ct.labels import SUBTYPE_LABELS, SUBTYPES
from brain_ct.model import load_model
from brain_ct.predictor import Predictor


def write_ensemble(folder: Path, members: list, threshold: float = 0.42, **extra: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "format": FORMAT,
        "version": 1,
        "members": members,
        "combine": "mean",
        "threshold": threshold,
        **extra,
    }
    (folder / ENSEMBLE_FILE).write_text(json.dumps(spec))
    return folder


@pytest.fixture(scope="module")
def binary_ensemble(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two binary members with different windows, input sizes and seeds: one beside, one absolute."""
    root = tmp_path_factory.mktemp("ens")
    make_tiny_model(root / "ens" / "members" / "a", seed=1, image_size=64)
    b = make_tiny_model(
        root / "elsewhere" / "b", seed=2, image_size=96, windows=[(40, 80)], trained_on="CQ500"
    )
    return write_ensemble(
        root / "ens", [{"model": "members/a", "revision": None}, {"model": str(b)}], trained_on="two folds"
    )


def _cts() -> list:
    return [phantom_ct(140, lesion=(50 + 15 * i, 60, 7), kind="dicom" if i else "image") for i in range(3)]


def test_ensemble_is_the_mean_of_its_members(binary_ensemble: Path) -> None:
    ens = Predictor.from_pretrained(binary_ensemble)
    solo = [
        Predictor.from_pretrained(binary_ensemble / "members" / "a"),
        Predictor.from_pretrained(
            json.loads((binary_ensemble / ENSEMBLE_FILE).read_text())["members"][1]["model"]
        ),
    ]
    assert [m.settings.image_size for m in ens.members] == [64, 96]
    for tta in (False, True):
        for ct in _cts():
            p = ens.predict(ct, tta=tta)
            singles = [s.predict(ct, tta=tta) for s in solo]
            assert p.probability == pytest.approx(np.mean([s.probability for s in singles]), abs=1e-6)
            np.testing.assert_allclose(p.heatmap, np.mean([s.heatmap for s in singles], axis=0), atol=1e-5)
            assert p.label == ("hemorrhage" if p.probability >= 0.42 else "normal")
            assert [m["probability"] for m in p.members] == pytest.approx([s.probability for s in singles])
            assert [m["model"] for m in p.members] == ["members/a", solo[1].settings.model_id]
            above = sum(s.probability >= s.threshold for s in singles)
            assert (
                f"{above} of 2 models in the ensemble put this slice above their own threshold."
                in p.explanation
            )
            assert p.subtypes is None and p.to_dict()["members"] == [dict(m) for m in p.members]


def test_ensemble_settings(binary_ensemble: Path) -> None:
    s = Predictor.from_pretrained(binary_ensemble).settings
    assert s.threshold == 0.42 and s.trained_on == "two folds" and s.is_ensemble
    assert s.model_id == str(binary_ensemble) and s.member_ids[0] == "members/a" and len(s.member_ids) == 2
    assert not s.is_demo and not s.is_multi_label


def test_batch_costs_one_forward_pass_per_member(binary_ensemble: Path) -> None:
    ens = Predictor.from_pretrained(binary_ensemble)
    calls = [0, 0]
    handles = [
        m.model.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, m in enumerate(ens.members)
    ]
    try:
        ens.predict_batch(_cts(), batch_size=16)
    finally:
        for h in handles:
            h.remove()
    assert calls == [1, 1]


def test_env_variable_names_an_ensemble(binary_ensemble: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAIN_CT_MODEL", str(binary_ensemble))
    assert Predictor.from_pretrained().settings.member_ids[0] == "members/a"
    with pytest.raises(ModelLoadError, match=r"is an ensemble folder.*Predictor.from_pretrained"):
        load_model(binary_ensemble)


def test_subtype_ensemble_averages_subtypes_and_explains_a_subtype(tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "e" / "s1", labels=SUBTYPE_LABELS, seed=4)
    make_tiny_model(tmp_path / "e" / "s2", labels=SUBTYPE_LABELS, seed=5, image_size=80)
    ens = Predictor.from_pretrained(write_ensemble(tmp_path / "e", ["s1", {"model": "s2"}], threshold=0.5))
    solo = [Predictor.from_pretrained(tmp_path / "e" / n) for n in ("s1", "s2")]
    ct = phantom_ct(128, lesion=(80, 50, 8))
    p = ens.predict(ct, heatmap_target="subdural")
    singles = [s.predict(ct, heatmap_target="subdural") for s in solo]
    assert p.heatmap_target == "subdural" and list(p.subtypes) == list(SUBTYPES)
    for name in SUBTYPES:
        assert p.subtypes[name] == pytest.approx(np.mean([s.subtypes[name] for s in singles]), abs=1e-6)
    np.testing.assert_allclose(p.heatmap, np.mean([s.heatmap for s in singles], axis=0), atol=1e-5)


def test_members_with_different_context_get_their_own_neighbours(tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "e" / "k2", windows=[(40, 80)], context_slices=2, seed=6)
    make_tiny_model(tmp_path / "e" / "k1", windows=[(40, 80)], context_slices=1, seed=7)
    ens = Predictor.from_pretrained(write_ensemble(tmp_path / "e", ["k2", "k1"]))
    assert ens.settings.context_slices == 2
    ct = phantom_ct(128)
    nbs = [phantom_ct(128, lesion=(40 + 20 * i, 50, 10)) for i in range(4)]  # s-2, s-1, s+1, s+2
    p = ens.predict_batch([ct], neighbors=[nbs])[0]
    k2 = Predictor.from_pretrained(tmp_path / "e" / "k2").predict_batch([ct], neighbors=[nbs])[0]
    k1 = Predictor.from_pretrained(tmp_path / "e" / "k1").predict_batch([ct], neighbors=[nbs[1:3]])[0]
    assert p.probability == pytest.approx((k2.probability + k1.probability) / 2, abs=1e-6)


def test_probabilities_alone_equal_the_full_readings(binary_ensemble: Path, tmp_path: Path) -> None:
    """Predictor.probabilities (scoring: no Grad-CAM) gives the numbers predict_batch gives, for an
    ensemble, a single model and a subtype model with context neighbours."""
    cts = _cts()
    ens = Predictor.from_pretrained(binary_ensemble)
    mean, subtypes, members = ens.probabilities(cts)
    full = ens.predict_batch(cts)
    assert subtypes is None and members.shape == (2, len(cts))
    np.testing.assert_allclose(mean, [p.probability for p in full], atol=1e-6)
    np.testing.assert_allclose(members.T, [[m["probability"] for m in p.members] for p in full], atol=1e-6)
    make_tiny_model(tmp_path / "s", labels=SUBTYPE_LABELS, context_slices=1, seed=8)
    sub = Predictor.from_pretrained(tmp_path / "s")
    nbs = [[phantom_ct(140), phantom_ct(140, lesion=(60, 60, 9))] for _ in cts]
    mean, subtypes, members = sub.probabilities(cts, neighbors=nbs)
    full = sub.predict_batch(cts, neighbors=nbs)
    np.testing.assert_allclose(mean, [p.probability for p in full], atol=1e-6)
    np.testing.assert_allclose(subtypes, [[p.subtypes[n] for n in SUBTYPES] for p in full], atol=1e-6)
    np.testing.assert_allclose(members[0], mean)
    with pytest.raises(InvalidInputError, match="one entry per image"):
        sub.probabilities(cts, neighbors=nbs[:1])


# ------------------------------------------------------------------------------ refused ensembles
def test_members_with_another_label_set_are_refused(tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "e" / "bin")
    make_tiny_model(tmp_path / "e" / "sub", labels=SUBTYPE_LABELS)
    write_ensemble(tmp_path / "e", ["bin", "sub"])
    with pytest.raises(ModelLoadError, match=r"mixes label sets: bin \(binary\), sub \(subtypes\)"):
        Predictor.from_pretrained(tmp_path / "e")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"members": []}, r"non-empty \"members\""),
        ({"combine": "max"}, r"combine 'max'; supported: 'mean'"),
        ({"threshold": 1.0}, r"needs \"threshold\".*got 1.0"),
        ({"threshold": None}, r"needs \"threshold\""),
        ({"format": "other"}, r"format 'other' version 1; expected"),
        ({"members": [{"revision": "main"}]}, r"member 0 needs \"model\""),
        ({"members": ["m", "members/gone"]}, r"member folder 'members/gone' does not exist"),
        ({"members": ["m", "./gone"]}, r"member folder './gone' does not exist"),
        ({"input_thresholds": {"png": 0.3}}, r"\"input_thresholds\": unknown input kind 'png'"),
        ({"input_thresholds": {"image": 2}}, r"\"input_thresholds\": the image threshold must be"),
    ],
)
def test_bad_ensemble_files_are_refused(tmp_path: Path, spec: dict, match: str) -> None:
    make_tiny_model(tmp_path / "e" / "m")
    (tmp_path / "e" / "members").mkdir()
    base = {"format": FORMAT, "version": 1, "members": ["m"], "combine": "mean", "threshold": 0.5}
    (tmp_path / "e" / ENSEMBLE_FILE).write_text(json.dumps({**base, **spec}))
    with pytest.raises(ModelLoadError, match=match):
        Predictor.from_pretrained(tmp_path / "e")


def test_nested_ensembles_are_refused(binary_ensemble: Path, tmp_path: Path) -> None:
    write_ensemble(tmp_path / "outer", [str(binary_ensemble)])
    with pytest.raises(ModelLoadError, match=r"is itself an ensemble.*do not nest"):
        Predictor.from_pretrained(tmp_path / "outer")


def test_unreadable_ensemble_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / ENSEMBLE_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"cannot read ensemble.json"):
        Predictor.from_pretrained(tmp_path / "e")


def test_binary_ensemble_refuses_subtype_heatmaps(binary_ensemble: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"binary model"):
        Predictor.from_pretrained(binary_ensemble).predict(phantom_ct(96), heatmap_target="subdural")


def test_written_spec_reads_back_as_written(tmp_path: Path) -> None:
    spec = EnsembleSpec(
        members=(("members/a", None), ("someone/model", "0123456789abcdef0123456789abcdef01234567")),
        combine="mean",
        threshold=0.37,
        threshold_rule={"strategy": "youden", "description": "max J"},
        trained_on="two folds",
        input_thresholds={"image": 0.45},
    )
    path = write_spec(tmp_path / "ens", spec)
    assert path == tmp_path / "ens" / ENSEMBLE_FILE
    assert read_spec(path, "ens") == spec
    assert json.loads(path.read_text())["members"][0] == {"model": "members/a", "revision": None}


@pytest.mark.parametrize("threshold", [0.0, 1.0, float("nan")])
def test_writer_refuses_what_the_loader_refuses(tmp_path: Path, threshold: float) -> None:
    spec = EnsembleSpec(members=(("a", None),), combine="mean", threshold=threshold)
    with pytest.raises(ModelLoadError, match='needs "threshold"'):
        write_spec(tmp_path, spec)
    assert not (tmp_path / ENSEMBLE_FILE).exists()


def test_an_ensemble_decides_by_its_own_input_thresholds_never_its_first_members(tmp_path: Path) -> None:
    from helpers_models import copy_model_with_config

    plain = make_tiny_model(tmp_path / "plain", seed=1)
    copy_model_with_config(plain, tmp_path / "e" / "a", brain_ct_input_thresholds={"image": 0.99})
    make_tiny_model(tmp_path / "e" / "b", seed=2)
    image, dicom = phantom_ct(128, kind="image"), phantom_ct(128)
    ensemble = Predictor.from_pretrained(write_ensemble(tmp_path / "e", ["a", "b"], threshold=0.42))
    assert ensemble.settings.input_thresholds is None
    reading = ensemble.predict(image)
    assert reading.threshold == pytest.approx(0.42)  # not member a's 0.99
    assert reading.members is not None and reading.members[0]["threshold"] == pytest.approx(0.99)
    write_ensemble(tmp_path / "e", ["a", "b"], threshold=0.42, input_thresholds={"image": 0.6})
    ensemble = Predictor.from_pretrained(tmp_path / "e")
    assert ensemble.predict(image).threshold == pytest.approx(0.6)
    assert ensemble.predict(dicom).threshold == pytest.approx(0.42)
