"""Slice-context training (``--context_slices``): phantom stacks, series neighbours from DICOM headers,
series-whole validation splits, the transform against the Predictor's input, and a whole run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_dicom import dicom_bytes
from helpers_train import NO_EVAL, write_dicom_series_folder, write_tiny_folder

from brain_ct.errors import InvalidInputError
from brain_ct.io import load_image
from brain_ct.model import ModelSettings
from brain_ct.preprocess import model_input
from brain_ct.series import anatomical_groups
from brain_ct.synthetic import generate_context, generate_slice, to_dicom
from train.augment import Augmenter
from train.data.image_folder import add_file_neighbors, scan_imagefolder
from train.data.phantoms import synthetic_context_example
from train.data.sampling import stratified_split
from train.data.transform import SliceTransform

WINDOWS = [(40.0, 80.0), (80.0, 200.0), (600.0, 2800.0)]


@pytest.fixture(scope="module")
def series_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    root = tmp_path_factory.mktemp("series") / "train"
    return root, write_dicom_series_folder(root, n_series=3, n_slices=5, size=64)


# ------------------------------------------------------------------------------------------- phantoms


@pytest.mark.parametrize(("k", "hemorrhage"), [(1, True), (1, False), (2, True)])
def test_generate_context_is_one_head_cut_at_consecutive_planes(k: int, hemorrhage: bool) -> None:
    stack = generate_context(11, 96, k, hemorrhage=hemorrhage)
    assert len(stack) == 2 * k + 1
    centre = stack[k]
    assert centre.label == int(hemorrhage) and bool(centre.mask.any()) == hemorrhage
    if not hemorrhage:
        assert all(ph.label == 0 for ph in stack)
    steps = np.diff([ph.z for ph in stack])
    np.testing.assert_allclose(steps, centre.slice_thickness)  # one thickness apart, inferior → superior
    assert 2.5 <= centre.slice_thickness <= 5.0
    assert [ph.series_index for ph in stack] == list(range(2 * k + 1))
    assert not np.array_equal(stack[0].hu, centre.hu)  # different planes, not copies
    again = generate_context(11, 96, k, hemorrhage=hemorrhage)
    np.testing.assert_array_equal(again[k].hu, centre.hu)


def test_generate_context_centre_always_shows_the_blood() -> None:
    labels = [generate_context(seed, 64, 1, hemorrhage=True)[1].label for seed in range(12)]
    assert labels == [1] * 12


def test_generate_context_rejects_bad_k() -> None:
    with pytest.raises(InvalidInputError, match="k must be"):
        generate_context(0, 64, 0)


def test_synthetic_context_example_dicom_has_neighbours_image_has_none() -> None:
    ct, mask, neighbors = synthetic_context_example(3, 1, "dicom", 64, 1)
    assert ct.hu is not None and mask.max() > 0 and len(neighbors) == 2
    present = [nb for nb in neighbors if nb is not None]
    assert present, "seed 3 keeps at least one side"
    assert all(nb.hu is not None and nb.shape == ct.shape for nb in present)
    assert not np.array_equal(present[0].hu, ct.hu)
    ct8, mask8, none = synthetic_context_example(3, 1, "image", 64, 1)
    assert ct8.hu is None and none == [None, None]
    # over many seeds some records lose a side (series ends, lone DICOMs), most keep both
    kept = [
        sum(nb is not None for nb in synthetic_context_example(s, 0, "dicom", 64, 1)[2]) for s in range(30)
    ]
    assert 2 in kept and min(kept) < 2


# ------------------------------------------------------------------------------------------- files


def test_anatomical_groups_follow_positions_not_names_or_folders(
    series_folder: tuple[Path, dict[str, list[Path]]], tmp_path: Path
) -> None:
    root, series = series_folder
    paths = [str(p) for p in sorted(root.rglob("*.dcm"))]
    png = write_tiny_folder(tmp_path / "png", n=2, dicom_every=99)
    paths += [str(p) for p in sorted(png.rglob("*.png")) if "masks" not in p.parts]
    groups = anatomical_groups(paths)
    got = sorted([paths[i] for i in g] for g in groups)
    want = sorted([str(p) for p in ordered] for ordered in series.values())
    assert got == want  # each series whole, inferior → superior; PNGs in no group


def test_file_neighbours_and_series_whole_split(series_folder: tuple[Path, dict[str, list[Path]]]) -> None:
    root, series = series_folder
    cols = add_file_neighbors(scan_imagefolder(root), 1)
    by_path = dict(zip(cols["path"], cols["neighbors"], strict=True))
    for ordered in series.values():
        names = [str(p) for p in ordered]
        assert by_path[names[0]] == ["", names[1]]  # first slice: nothing below
        assert by_path[names[2]] == [names[1], names[3]]
        assert by_path[names[-1]] == [names[-2], ""]
    train, val = stratified_split(cols, 0.34, seed=0)
    groups_train, groups_val = set(train["series_group"]), set(val["series_group"])
    assert groups_train and groups_val and not groups_train & groups_val
    assert len(train["path"]) + len(val["path"]) == len(cols["path"])


def test_context_transform_is_exactly_the_predictor_input(
    series_folder: tuple[Path, dict[str, list[Path]]],
) -> None:
    root, series = series_folder
    cols = add_file_neighbors(scan_imagefolder(root), 1)
    settings = ModelSettings(windows=tuple(WINDOWS), image_size=48, threshold=0.5, context_slices=1)
    transform = SliceTransform(settings)
    ordered = next(iter(series.values()))
    for i in (0, 2):  # an end slice (centre repeated below) and a middle one
        row = cols["path"].index(str(ordered[i]))
        batch = {key: [values[row]] for key, values in cols.items()}
        got = transform(batch)["pixel_values"][0].numpy()
        cts = [load_image(str(p), allow_unverified=True) for p in ordered]
        below = cts[i - 1] if i > 0 else None
        want = model_input(cts[i], settings, [below, cts[i + 1]])
        assert got.shape == (9, 48, 48)
        np.testing.assert_allclose(got, want, atol=1e-6)
        below_repeats_centre = np.array_equal(got[:3], got[3:6])
        assert below_repeats_centre == (i == 0)  # the first slice has nothing below it


def test_augmentation_moves_every_stacked_slice_alike() -> None:
    stack = generate_context(5, 96, 1, hemorrhage=True)
    cts = [load_image(dicom_bytes(to_dicom(ph)), allow_unverified=True) for ph in stack]
    flip = Augmenter(rotation=0, zoom=0, shift=0, brightness=(1.0, 1.0), horizontal_flip=True)
    settings = ModelSettings(windows=tuple(WINDOWS), image_size=64, threshold=0.5, context_slices=1)
    plain = model_input(cts[1], settings, [cts[0], cts[2]])
    transform = SliceTransform(settings, augmenter=flip)
    flipped = [
        transform.encode(cts[1], None, np.random.default_rng(s), [cts[0], cts[2]])[0] for s in range(8)
    ]
    mirrored = [x for x in flipped if not np.allclose(x, plain)]
    assert mirrored, "a horizontal flip was drawn in 8 tries"
    np.testing.assert_allclose(mirrored[0], plain[:, :, ::-1], atol=1e-6)  # all 9 channels mirrored


# ------------------------------------------------------------------------------------------- training


def test_hub_dataset_with_context_is_refused(tmp_path: Path) -> None:
    from train.args import DataArguments
    from train.data.build import build_splits

    args = DataArguments(dataset_name=str(tmp_path), context_slices=1)
    with pytest.raises(InvalidInputError, match="--context_slices needs slices in series order"):
        build_splits(args, seed=0)


def test_context_slices_flag_is_checked() -> None:
    from train import main

    with pytest.raises(ValueError, match="--context_slices"):
        main(["--output_dir", "unused", "--synthetic_train", "10", "--context_slices", "9"])


@pytest.mark.slow
def test_train_a_context_model_on_dicom_series_and_read_a_scan(
    series_folder: tuple[Path, dict[str, list[Path]]], tmp_path: Path
) -> None:
    from brain_ct.predictor import Predictor
    from brain_ct.scan import predict_series
    from brain_ct.series import read_series
    from train import main
    from train.evaluate import main as evaluate_main

    root, series = series_folder
    out = tmp_path / "ctx"
    results = main(
        [
            "--model_size",
            "tiny",
            "--image_size",
            "48",
            "--train_dir",
            str(root),
            "--test_dir",
            str(root),
            "--context_slices",
            "1",
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
            *NO_EVAL,
            "--mask_loss_weight",
            "0.5",
            "--dataloader_num_workers",
            "0",
        ]
    )
    config = json.loads((out / "config.json").read_text())
    assert config["brain_ct_context_slices"] == 1 and config["num_channels"] == 9
    assert len(config["brain_ct_image_mean"]) == 9
    assert results["test"]["n"] == 15
    assert "1 slice(s) on each side" in (out / "README.md").read_text()

    predictor = Predictor.from_pretrained(out)
    assert predictor.settings.context_slices == 1
    ordered = next(iter(series.values()))
    scan = read_series([str(p) for p in reversed(ordered)], allow_unverified=True)
    result = predict_series(predictor, scan)
    assert result.n_slices == 5 and all(0.0 <= p <= 1.0 for p in result.probabilities)
    assert predictor.predict(str(ordered[0]), allow_unverified=True).probability >= 0.0  # lone slice

    assert (
        evaluate_main(["--model", str(out), "--test_dir", str(root), "--output_dir", str(tmp_path / "ev")])
        == 0
    )
    assert json.loads((tmp_path / "ev" / "eval_results.json").read_text())["test"]["n"] == 15


@pytest.mark.slow
def test_train_a_context_model_on_phantom_stacks(tmp_path: Path) -> None:
    from brain_ct.model import load_model
    from train import main

    out = tmp_path / "phantom-ctx"
    results = main(
        [
            "--model_size",
            "tiny",
            "--image_size",
            "48",
            "--windows",
            "brain",
            "--context_slices",
            "1",
            "--synthetic_train",
            "6",
            "--synthetic_validation",
            "4",
            "--synthetic_size",
            "64",
            "--output_dir",
            str(out),
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            "3",
            *NO_EVAL,
            "--dataloader_num_workers",
            "0",
        ]
    )
    model, settings = load_model(out)
    assert settings.context_slices == 1 and settings.num_channels == 3 and model.config.num_channels == 3
    assert results["validation"]["n"] == 4
    assert generate_slice(0, 64).hu.shape == (64, 64)  # the single-slice generator is untouched
