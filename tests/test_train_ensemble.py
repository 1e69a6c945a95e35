"""python -m train.ensemble: an ensemble folder built from member models, its threshold chosen on validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_models import make_tiny_model
from sklearn.metrics import roc_auc_score

from brain_ct import DISCLAIMER
from brain_ct.ensemble import read_spec
from brain_ct.errors import InvalidInputError, ModelLoadError
from brain_ct.labels import SUBTYPE_LABELS
from brain_ct.predictor import Predictor
from brain_ct.synthetic.export import write_dataset
from train.ensemble import EnsembleArguments, build_ensemble, main, member_ref, member_source, parse_args
from train.threshold import select_threshold


def _validation_folder(root: Path) -> Path:
    """8 phantom DICOMs and 4 8-bit phantom figures in python -m train's normal/ hemorrhage/ layout."""
    val = write_dataset(root / "val", 8, seed=3, size=128, fmt="dcm")
    figures = write_dataset(root / "figures", 4, seed=4, size=128, fmt="png")
    for png in figures.glob("*/*.png"):
        if png.parent.name != "masks":
            shutil.move(str(png), val / png.parent.name / png.name)
    return val


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ensemble_train")
    make_tiny_model(root / "runs" / "a", seed=1, trained_on="fold 0")
    make_tiny_model(root / "runs" / "b", seed=2, windows=[(40, 80)], image_size=80, threshold=0.3)
    _validation_folder(root)
    return root


@pytest.fixture(scope="module")
def built(project: Path) -> Path:
    out = project / "runs" / "ens"
    argv = ["--members", str(project / "runs" / "a"), str(project / "runs" / "b")]
    argv += ["--validation_dir", str(project / "val"), "--output_dir", str(out)]
    assert main(argv) == 0
    return out


def _validation_files(project: Path) -> tuple[list[Path], np.ndarray]:
    files = sorted((project / "val" / "normal").iterdir()) + sorted(
        (project / "val" / "hemorrhage").iterdir()
    )
    labels = np.array([int(f.parent.name == "hemorrhage") for f in files])
    return files, labels


@pytest.fixture(scope="module")
def member_scores(project: Path) -> np.ndarray:
    """[2, N] P(hemorrhage) of each member read on its own, in _validation_files order."""
    files, _ = _validation_files(project)
    rows = []
    for name in ("a", "b"):
        single = Predictor.from_pretrained(project / "runs" / name)
        rows.append([p.probability for p in single.predict_batch(files, allow_unverified=True)])
    return np.array(rows)


def test_built_folder_loads_and_is_the_members_mean(
    project: Path, built: Path, member_scores: np.ndarray
) -> None:
    spec = read_spec(built / "ensemble.json", "ens")
    assert spec.members == (("../a", None), ("../b", None))  # beside the ensemble: relative
    ens = Predictor.from_pretrained(built)
    files, _ = _validation_files(project)
    readings = ens.predict_batch(files[:3] + files[-3:], allow_unverified=True)
    singles = member_scores[:, [0, 1, 2, -3, -2, -1]]
    for p, expected in zip(readings, singles.T, strict=True):
        assert p.probability == pytest.approx(expected.mean(), abs=1e-6)
        assert [m["probability"] for m in p.members] == pytest.approx(list(expected), abs=1e-6)
        assert p.threshold == spec.threshold


def test_threshold_is_the_rule_on_the_ensemble_scores(
    project: Path, built: Path, member_scores: np.ndarray
) -> None:
    _, labels = _validation_files(project)
    scores = member_scores.mean(axis=0)
    real = np.ones_like(labels)  # files of a labelled folder are real anatomy, as in training
    expected, rule = select_threshold(labels, scores, real, "auto")
    spec = read_spec(built / "ensemble.json", "ens")
    assert rule["strategy"] == "real_fpr"  # the folder has normal slices: the default rule bounds them
    assert spec.threshold == pytest.approx(expected, abs=1e-6)  # float32 batches differ by ~1e-8
    assert spec.threshold_rule["strategy"] == "real_fpr"
    assert spec.threshold_rule["real_false_positives"] == rule["real_false_positives"]
    assert spec.trained_on == "ensemble of 2 models; members trained on: fold 0; not recorded"


def test_eval_results_per_member_and_kind(project: Path, built: Path, member_scores: np.ndarray) -> None:
    results = json.loads((built / "eval_results.json").read_text())
    _, labels = _validation_files(project)
    t = results["threshold"]
    assert [m["model"] for m in results["members"]] == ["../a", "../b"]
    assert [m["threshold"] for m in results["members"]] == [0.5, 0.3]
    for m, s in zip(results["members"], member_scores, strict=True):
        for key, at in (("validation", m["threshold"]), ("validation_at_ensemble_threshold", t)):
            pred = s >= at
            tn, fp = int((~pred & (labels == 0)).sum()), int((pred & (labels == 0)).sum())
            fn, tp = int((~pred & (labels == 1)).sum()), int((pred & (labels == 1)).sum())
            assert m[key]["confusion_matrix"] == [[tn, fp], [fn, tp]]
            assert set(m[key]["by_input_kind"]) == {"dicom", "image"}
            assert m[key]["by_input_kind"]["image"]["n"] == 4
    ensemble = results["validation"]
    assert ensemble["n"] == 12 and ensemble["threshold"] == t
    assert set(ensemble["by_input_kind"]) == {"dicom", "image"}
    assert ensemble["auc"] == pytest.approx(roc_auc_score(labels, member_scores.mean(axis=0)), abs=1e-6)
    assert (built / "roc_validation.png").is_file() and (built / "confusion_matrix_validation.png").is_file()


def test_card_names_every_member_and_the_rule(built: Path) -> None:
    card = (built / "README.md").read_text()
    for ref in ("`../a`", "`../b`"):
        assert card.count(ref) >= 3  # members table, summary row, own metrics section
    assert DISCLAIMER in card and "real_fpr" in card and "python -m train.ensemble --members" in card
    # validation numbers are optimistic: the card points to the command that measures it on a test set
    assert "`python -m train.evaluate --model ens --test_dir TEST`" in card
    assert "fold 0" in card


def test_mixed_label_sets_are_refused(project: Path, tmp_path: Path) -> None:
    subtype = make_tiny_model(tmp_path / "subtype", labels=SUBTYPE_LABELS)
    args = EnsembleArguments(
        members=[str(project / "runs" / "a"), str(subtype)],
        validation_dir=str(project / "val"),
        output_dir=str(tmp_path / "ens"),
    )
    with pytest.raises(ModelLoadError, match=r"mixes label sets: .*\(binary\), .*\(subtypes\)"):
        build_ensemble(args)
    assert not (tmp_path / "ens").exists()


def test_subtype_members_make_a_subtype_ensemble(project: Path, tmp_path: Path) -> None:
    members = [
        str(make_tiny_model(tmp_path / n, labels=SUBTYPE_LABELS, seed=s)) for n, s in (("x", 3), ("y", 4))
    ]
    args = EnsembleArguments(
        members=members,
        validation_dir=str(project / "val"),
        output_dir=str(tmp_path / "ens"),
        threshold_strategy="youden",
    )
    results = build_ensemble(args)
    assert results["label_set"] == "subtypes" and results["threshold_strategy"] == "youden"
    assert Predictor.from_pretrained(tmp_path / "ens").settings.is_multi_label


def test_nested_ensemble_is_refused(project: Path, built: Path, tmp_path: Path) -> None:
    args = EnsembleArguments(
        members=[str(built), str(project / "runs" / "a")],
        validation_dir=str(project / "val"),
        output_dir=str(tmp_path / "ens"),
    )
    with pytest.raises(ModelLoadError, match="itself an ensemble"):
        build_ensemble(args)


def test_missing_and_empty_validation_folders(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    members = ["--members", str(project / "runs" / "a"), str(project / "runs" / "b")]
    out = ["--output_dir", str(tmp_path / "ens")]
    assert main([*members, "--validation_dir", str(tmp_path / "nowhere"), *out]) == 2
    assert "--validation_dir" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([*members, "--validation_dir", str(tmp_path / "empty"), *out]) == 1
    err = capsys.readouterr().err
    assert "no class subfolders" in err and "Traceback" not in err
    (tmp_path / "empty" / "normal").mkdir()
    with pytest.raises(InvalidInputError, match="no image or DICOM files"):
        build_ensemble(parse_args([*members, "--validation_dir", str(tmp_path / "empty"), *out]))
    assert not (tmp_path / "ens" / "ensemble.json").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"members": ["m1"]}, "two or more"),
        ({"members": ["m1", "m1"]}, "more than once"),
        ({"threshold_strategy": "best"}, "--threshold_strategy 'best' is unknown"),
        ({"max_real_fpr": 1.5}, "--max_real_fpr"),
        ({"validation_dir": None}, "nothing to choose the threshold on"),
        ({"push_to_hub": True}, "outside --output_dir"),
    ],
)
def test_argument_errors_name_the_flag(project: Path, tmp_path: Path, changes: dict, message: str) -> None:
    values = {
        "members": [str(project / "runs" / "a"), str(project / "runs" / "b")],
        "validation_dir": str(project / "val"),
        "output_dir": str(tmp_path / "ens"),
        **changes,
    }
    with pytest.raises(ValueError, match=message):
        EnsembleArguments(**values)


def test_output_folder_holding_a_model_is_refused(project: Path) -> None:
    with pytest.raises(ValueError, match="holds a model"):
        EnsembleArguments(
            members=["x/y", "x/z"],
            validation_dir=str(project / "val"),
            output_dir=str(project / "runs" / "a"),
        )


def test_threshold_rule_alias_and_hub_ids(project: Path, tmp_path: Path) -> None:
    args = parse_args(
        ["--members", "me/m1@abc123", "me/m2", "--validation_dir", str(project / "val")]
        + ["--output_dir", str(tmp_path / "e"), "--threshold_rule", "sensitivity", "--push_to_hub"]
    )
    assert args.threshold_strategy == "sensitivity" and args.hub_model_id == "e"
    first = member_source(args.members[0], tmp_path / "e")
    assert (first.load, first.ref, first.revision, first.local) == ("me/m1", "me/m1", "abc123", False)


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        ("proj/ens/members/m", "members/m"),
        ("proj/m", "../m"),
        ("proj/runs/m", "../runs/m"),
        ("other/m", None),
    ],
)
def test_member_ref(tmp_path: Path, member: str, expected: str | None) -> None:
    folder = tmp_path / member
    assert member_ref(folder, tmp_path / "proj" / "ens") == (expected or str(folder.resolve()))


def test_push_uploads_the_ensemble_with_members_inside(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import HfApi

    calls: dict[str, Any] = {}
    monkeypatch.setattr(
        HfApi, "create_repo", lambda self, repo_id, **kw: type("RepoUrl", (), {"repo_id": repo_id})()
    )
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.update(kw))
    out = tmp_path / "ens"
    for name in ("a", "b"):
        shutil.copytree(project / "runs" / name, out / "members" / name)
    args = EnsembleArguments(
        members=[str(out / "members" / "a"), str(out / "members" / "b")],
        validation_dir=str(project / "val"),
        output_dir=str(out),
        push_to_hub=True,
        hub_model_id="someone/ens",
    )
    results = build_ensemble(args)
    assert results["hub_url"] == "https://huggingface.co/someone/ens"
    assert calls["repo_id"] == "someone/ens" and Path(calls["folder_path"]) == out
    assert read_spec(out / "ensemble.json", "ens").members == (("members/a", None), ("members/b", None))


def test_real_anatomy_validation_holds_out_what_the_members_held_out() -> None:
    from types import SimpleNamespace

    from train.data.real_anatomy import real_anatomy_split
    from train.ensemble import validation_columns

    real_dir = Path(__file__).resolve().parents[1] / "data" / "real_anatomy" / "dcm_qa_ct-GE"
    args = SimpleNamespace(
        validation_dir=None,
        real_anatomy_dir=str(real_dir),
        seed=42,
        real_anatomy_holdout=4,
        real_anatomy_eval_variants=1,
        real_anatomy_8bit_fraction=0.0,
        synthetic_size=128,
    )
    columns = validation_columns(args, 0)
    _, held_out = real_anatomy_split(real_dir, 4)
    assert set(columns["path"]) == set(held_out)  # the members' 4 held-out levels, not the default 7
    assert set(columns["kind"]) == {"dicom"}  # no 8-bit renders asked for
