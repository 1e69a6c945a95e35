"""python -m train --folds K: K fold models on stratified folds of the training records, and their ensemble
with its own threshold chosen on the validation split held out from every fold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_train import NO_EVAL, TINY
from sklearn.metrics import roc_auc_score

from brain_ct.ensemble import read_spec
from brain_ct.errors import InvalidInputError
from brain_ct.model import load_model
from brain_ct.predictor import Predictor
from brain_ct.synthetic.export import write_dataset
from train import main
from train.data.phantoms import synthetic_records
from train.data.sampling import fold_splits
from train.evaluate import score_records
from train.threshold import select_threshold

#: A tiny run: 24 phantom training records, 8 validation, 4 test, one step per fold.
RUN = [
    *TINY,
    "--synthetic_size",
    "64",
    "--synthetic_validation",
    "8",
    "--max_steps",
    "1",
    "--dataloader_num_workers",
    "0",
    *NO_EVAL,
]


@pytest.fixture(scope="module")
def folded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("folds") / "ens"
    argv = [
        *RUN,
        "--synthetic_train",
        "24",
        "--synthetic_test",
        "4",
        "--folds",
        "2",
        "--output_dir",
        str(out),
    ]
    return out, main(argv)


def _train_records() -> dict[str, list[Any]]:
    """The run's training records (no validation is split off them: --synthetic_validation is given)."""
    return synthetic_records(24, "train", 0, 0.5)


@pytest.mark.slow
def test_fold_folders_and_the_ensemble_over_them(folded: tuple[Path, dict[str, Any]]) -> None:
    out, results = folded
    spec = read_spec(out / "ensemble.json", "ens")
    assert spec.members == (("fold-0", None), ("fold-1", None))  # inside the ensemble folder: relative
    for i in range(2):
        fold = out / f"fold-{i}"
        for name in ("config.json", "model.safetensors", "README.md", "eval_results.json"):
            assert (fold / name).is_file(), name
        _, settings = load_model(fold)
        assert f"fold model {i} of 2" in settings.trained_on
        assert f"fold {i} of 2" in (fold / "README.md").read_text()
    assert [m["model"] for m in results["members"]] == ["fold-0", "fold-1"]
    assert json.loads((out / "eval_results.json").read_text())["threshold"] == results["threshold"]
    card = (out / "README.md").read_text()
    assert "python -m train " in card and "--folds 2" in card and "held out from every fold" in card


@pytest.mark.slow
def test_ensemble_probability_is_the_folds_mean(folded: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = folded
    folder = write_dataset(tmp_path / "slices", 4, seed=9, size=64, fmt="dcm")
    files = sorted(p for p in folder.glob("*/*.dcm"))
    ensemble = Predictor.from_pretrained(out).predict_batch(files, allow_unverified=True)
    folds = [
        [
            p.probability
            for p in Predictor.from_pretrained(out / f"fold-{i}").predict_batch(files, allow_unverified=True)
        ]
        for i in range(2)
    ]
    for reading, expected in zip(ensemble, np.array(folds).T, strict=True):
        assert reading.probability == pytest.approx(float(expected.mean()), abs=1e-6)
        assert [m["probability"] for m in reading.members] == pytest.approx(list(expected), abs=1e-6)


@pytest.mark.slow
def test_each_fold_validates_on_its_own_fold(folded: tuple[Path, dict[str, Any]]) -> None:
    out, _ = folded
    expected = fold_splits(_train_records(), 2, seed=1)
    for i, (train, validation) in enumerate(expected):
        fold = json.loads((out / f"fold-{i}" / "eval_results.json").read_text())
        assert fold["validation"]["n"] == len(validation["label"]) == 12
        assert fold["threshold_rule"]["n_validation"] == 12
        assert fold["test"]["n"] == 4  # the run's test split, the same for every fold
        _, settings = load_model(out / f"fold-{i}")
        assert f"({len(train['label'])} slices)" in settings.trained_on


@pytest.mark.slow
def test_ensemble_threshold_is_chosen_on_the_common_validation(folded: tuple[Path, dict[str, Any]]) -> None:
    out, results = folded
    predictor = Predictor.from_pretrained(out)
    scores = score_records(predictor, synthetic_records(8, "validation", 0, 0.5), synthetic_size=64)
    threshold, rule = select_threshold(scores.labels, scores.scores, scores.domain, "auto")
    assert results["threshold"] == pytest.approx(threshold, abs=1e-6)
    assert predictor.threshold == pytest.approx(threshold, abs=1e-6)
    assert results["threshold_rule"]["n_validation"] == 8  # not a fold's 12
    assert results["validation"]["n"] == 8
    assert results["validation"]["auc"] == pytest.approx(
        roc_auc_score(scores.labels, scores.scores), abs=1e-6
    )


@pytest.mark.slow
def test_test_split_is_reported_per_fold_and_for_the_ensemble(folded: tuple[Path, dict[str, Any]]) -> None:
    out, results = folded
    assert results["test"]["n"] == 4 and results["test_data"].startswith("4 slices (2 normal, 2 hemorrhage)")
    for m in results["members"]:
        assert m["test"]["n"] == 4 and m["test_at_ensemble_threshold"]["threshold"] == results["threshold"]
    assert (out / "roc_test.png").is_file()
    assert "## Evaluation on test" in (out / "README.md").read_text()


# ---------------------------------------------------------------------------------------------- fold_splits


def _disjoint_cover(columns: dict[str, list[Any]], k: int, seed: int) -> list[tuple[dict, dict]]:
    """fold_splits' folds, checked: validation folds disjoint and covering every record, train = the rest."""
    folds = fold_splits(columns, k, seed)
    ids = columns["id"]
    seen: list[Any] = []
    for train, validation in folds:
        assert not set(train["id"]) & set(validation["id"])
        assert sorted(train["id"] + validation["id"]) == sorted(ids)
        seen += validation["id"]
    assert sorted(seen) == sorted(ids)
    assert len(folds) == k
    return folds


def test_phantom_folds_are_stratified_and_cover_the_records() -> None:
    columns = {**synthetic_records(24, "train", 0, 0.5)}
    columns["id"] = list(range(24))
    folds = _disjoint_cover(columns, 3, seed=5)
    for _, validation in folds:
        assert np.bincount(validation["label"]).tolist() == [4, 4]
    assert fold_splits(columns, 3, seed=5) == folds  # seeded
    assert fold_splits(columns, 3, seed=6) != folds


def test_series_and_real_levels_stay_in_one_fold() -> None:
    # 6 DICOM series of 4 slices (slice 1 bleeds), 3 loose files, and 3 real levels with 4 variants each
    series = [s for s in range(6) for _ in range(4)] + [-1, -2, -3] + [None] * 12
    labels = (
        [int(z == 1) for _ in range(6) for z in range(4)]
        + [0, 1, 0]
        + [v % 2 for _ in range(3) for v in range(4)]
    )
    paths = [f"s{s}_{z}.dcm" for s in range(6) for z in range(4)] + ["a.png", "b.png", "c.png"]
    paths += [f"real{lv}.dcm" for lv in range(3) for _ in range(4)]
    real_seed = [-1] * 27 + list(range(12))
    columns = {
        "id": list(range(39)),
        "path": paths,
        "label": labels,
        "series_group": series,
        "real_seed": real_seed,
    }
    folds = _disjoint_cover(columns, 3, seed=0)
    for _, validation in folds:
        assert set(validation["label"]) == {0, 1}
    for s in range(6):
        where = [i for i, (_, v) in enumerate(folds) if s in v["series_group"]]
        assert len(where) == 1, f"series {s} split across folds {where}"
    for level in range(3):
        where = [i for i, (_, v) in enumerate(folds) if f"real{level}.dcm" in v["path"]]
        assert len(where) == 1, f"real level {level} split across folds {where}"


@pytest.mark.parametrize(
    ("labels", "groups", "k", "message"),
    [
        ([0, 1] * 6, None, 1, "--folds must be 2 or more"),
        ([0] * 9 + [1] * 3, None, 4, r"only 3 hemorrhage slice\(s\).*at most 3"),
        ([0, 0, 1, 1] * 3, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], 4, "only 3 series / real levels"),
        ([0, 0, 0, 1] + [0] * 4 + [0, 1, 0, 1], [0] * 4 + [1] * 4 + [2] * 4, 3, "hold only one class"),
    ],
)
def test_fold_splits_refusals(labels: list[int], groups: list[int] | None, k: int, message: str) -> None:
    columns: dict[str, list[Any]] = {"path": [""] * len(labels), "label": labels}
    if groups is not None:
        columns["series_group"] = groups
    with pytest.raises(InvalidInputError, match=message):
        fold_splits(columns, k, seed=0)


# ---------------------------------------------------------------------------------------------- refusals


def test_one_fold_is_refused_with_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--folds must be 2 or more"):
        main([*RUN, "--synthetic_train", "8", "--folds", "1", "--output_dir", str(tmp_path / "o")])


def test_more_folds_than_the_smaller_class_is_refused_before_training(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with pytest.raises(InvalidInputError, match=r"--folds 5: .*only 4 .*at most 4"):
        main([*RUN, "--synthetic_train", "8", "--folds", "5", "--output_dir", str(out)])
    assert not (out / "fold-0").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset_name", "someone/ct"], "not a Hub dataset"),
        (["--synthetic_train", "8", "--resume_from_checkpoint", "last"], "--resume_from_checkpoint"),
    ],
)
def test_folds_argument_refusals(tmp_path: Path, extra: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        main([*RUN, *extra, "--folds", "2", "--output_dir", str(tmp_path / "o")])


def test_output_folder_holding_a_model_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds a model"):
        main([*RUN, "--synthetic_train", "8", "--folds", "2", "--output_dir", str(out)])


def test_push_leaves_the_folds_checkpoints_local() -> None:
    from huggingface_hub.utils import filter_repo_objects

    from train.hub import IGNORE_PATTERNS

    files = ["ensemble.json", "README.md", "fold-0/config.json", "fold-0/model.safetensors"]
    leftovers = [
        "fold-0/checkpoint-3/model.safetensors",
        "fold-0/trainer_state.json",
        "fold-1/training_args.bin",
    ]
    leftovers += ["fold-1/runs/events.out", "checkpoint-1/optimizer.pt"]
    assert list(filter_repo_objects(files + leftovers, ignore_patterns=IGNORE_PATTERNS)) == files


def test_fold_runs_write_to_fold_folders_with_their_own_counts(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from train.data.splits import Splits, to_dataset
    from train.folds import fold_runs

    # 8 normals and 4 bleeds with hand-picked subtypes: each fold's positives per label are counted by hand
    subtypes = [[]] * 8 + [["epidural"], ["subdural"], ["epidural", "subdural"], ["subarachnoid"]]
    columns = {"id": list(range(12)), "path": [""] * 12, "label": [0] * 8 + [1] * 4, "subtypes": subtypes}
    splits = Splits(to_dataset(columns), None, None, [8, 4], "twelve records", label_set="subtypes")
    training_args = SimpleNamespace(
        seed=3, output_dir=str(tmp_path), push_to_hub_requested=True, hub_model_id="me/x"
    )
    runs = fold_runs(SimpleNamespace(), SimpleNamespace(folds=2), training_args, splits)
    order = ["any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]
    for run, (train, validation) in zip(runs, fold_splits(columns, 2, seed=3), strict=True):
        fold_args = run.arguments[2]
        assert fold_args.output_dir == str(tmp_path / f"fold-{run.index}")
        assert not fold_args.push_to_hub_requested and fold_args.hub_model_id is None
        assert run.splits.train["id"] == train["id"] and run.splits.validation["id"] == validation["id"]
        assert run.splits.class_counts == np.bincount(train["label"], minlength=2).tolist()
        names = [n for row in train["subtypes"] for n in row]
        expected = [sum(train["label"])] + [names.count(n) for n in order[1:]]
        assert run.splits.subtype_counts == expected
        assert f"fold model {run.index} of 2" in run.splits.description
    assert training_args.output_dir == str(tmp_path) and training_args.push_to_hub_requested  # untouched
    # one phantom cache for the whole run: each phantom (the shared validation ones too) is generated once
    assert runs[0].phantoms is not None and all(run.phantoms is runs[0].phantoms for run in runs)
