"""Training from NIfTI volumes with voxel masks: pairing, slice labels from masks, decoding, a
volume-whole validation split, and a 2-step ``python -m train --nifti_dir`` run with mask guidance.

Volumes are phantom heads (``generate_series``) stored in the usual NIfTI layout (voxel axes to
patient right, anterior, superior), with discs of blood painted in code so every label is known.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers_train import NO_EVAL, TINY

from brain_ct.errors import InvalidInputError
from brain_ct.model import ModelSettings
from brain_ct.nifti import read_nifti_series
from brain_ct.synthetic import generate_series
from train import main
from train.args import DataArguments
from train.data.nifti_volumes import nifti_pairs, nifti_records
from train.data.sampling import stratified_split
from train.data.transform import SliceTransform

N_SLICES, SIZE = 6, 64
BLEED_SLICES = (2, 3)  # a 40-pixel disc of blood in these slices of a bleeding volume
SPECK_SLICE = 4  # 3 lesion pixels: below the default --min_lesion_area, left out


def _ras(reading: np.ndarray) -> np.ndarray:
    """[row (P), column (L), slice (S)] → voxel axes (R, A, S), as nibabel's diag affine stores them."""
    return np.ascontiguousarray(np.transpose(reading[::-1, ::-1, :], (1, 0, 2)))


def write_volume(folder: Path, name: str, seed: int, bleed: bool, mask_folder: Path | None = None) -> None:
    """``folder/name.nii.gz`` and its mask (``name_mask.nii.gz`` beside it, or ``mask_folder/name.nii.gz``)."""
    hu = np.stack([p.hu for p in generate_series(seed, n_slices=N_SLICES, size=SIZE, hemorrhage=False)], -1)
    mask = np.zeros(hu.shape, np.uint8)
    if bleed:
        yy, xx = np.mgrid[:SIZE, :SIZE]
        disc = (yy - 30) ** 2 + (xx - 36) ** 2 <= 12  # 37 pixels
        for k in BLEED_SLICES:
            hu[..., k][disc] = 70.0
            mask[..., k][disc] = 2  # a label map: subtype 2 counts as lesion
        mask[20, 20:23, SPECK_SLICE] = 1
    affine = np.diag([0.9, 0.9, 5.0, 1.0])
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(_ras(np.round(hu)).astype(np.int16), affine), folder / f"{name}.nii.gz")
    target = (mask_folder / f"{name}.nii.gz") if mask_folder is not None else folder / f"{name}_mask.nii.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(_ras(mask), affine), target)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nifti_train")
    for i in range(6):
        write_volume(root / ("a" if i < 3 else "b"), f"case{i}", seed=20 + i, bleed=i % 2 == 0)
    return root


def test_pairs_beside_the_volumes_and_in_a_mask_folder(volumes: Path, tmp_path: Path) -> None:
    pairs, unpaired = nifti_pairs(volumes)
    assert [(v.name, m.name) for v, m in pairs] == [
        (f"case{i}.nii.gz", f"case{i}_mask.nii.gz") for i in range(6)
    ]
    assert unpaired == []
    # INSTANCE 2022 layout: data/ and label/ with the same names; one volume without its mask
    write_volume(tmp_path / "data", "001", seed=1, bleed=True, mask_folder=tmp_path / "label")
    write_volume(tmp_path / "data", "002", seed=2, bleed=False, mask_folder=tmp_path / "label")
    (tmp_path / "label" / "002.nii.gz").unlink()
    pairs, unpaired = nifti_pairs(tmp_path / "data", mask_dir=tmp_path / "label")
    assert [(v.name, m.parent.name) for v, m in pairs] == [("001.nii.gz", "label")]
    assert [v.name for v in unpaired] == ["002.nii.gz"]


def test_nnunet_channel_names_pair_with_their_label(tmp_path: Path) -> None:
    # BHSD's nnU-Net layout: imagesTr/ and labelsTr/; a channel-0 image X_0000 has the label X
    write_volume(tmp_path / "imagesTr", "ID_01", seed=3, bleed=True, mask_folder=tmp_path / "labelsTr")
    (tmp_path / "imagesTr" / "ID_01.nii.gz").rename(tmp_path / "imagesTr" / "ID_01_0000.nii.gz")
    pairs, unpaired = nifti_pairs(tmp_path / "imagesTr", mask_dir=tmp_path / "labelsTr")
    assert [(v.name, m.name) for v, m in pairs] == [("ID_01_0000.nii.gz", "ID_01.nii.gz")] and unpaired == []


def test_no_volume_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x_mask.nii.gz").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="holds no NIfTI volume"):
        nifti_pairs(tmp_path)


def test_slice_labels_come_from_the_mask(volumes: Path) -> None:
    cols = nifti_records(volumes)
    assert set(cols) >= {
        "path",
        "label",
        "mask_path",
        "nifti_slice",
        "series_group",
        "synthetic_seed",
        "kind",
    }
    by_volume: dict[str, dict[int, int]] = {}
    for path, k, label in zip(cols["path"], cols["nifti_slice"], cols["label"], strict=True):
        by_volume.setdefault(Path(path).name, {})[k] = label
    bleeding = {k: int(k in BLEED_SLICES) for k in range(N_SLICES) if k != SPECK_SLICE}
    assert by_volume["case0.nii.gz"] == bleeding  # the 3-pixel speck slice is left out
    assert by_volume["case1.nii.gz"] == dict.fromkeys(range(N_SLICES), 0)
    assert len(set(cols["series_group"])) == 6
    # a lower minimum area keeps the speck as a hemorrhage slice
    low = nifti_records(volumes, min_lesion_area=3)
    speck = [lab for p, k, lab in zip(low["path"], low["nifti_slice"], low["label"], strict=True)]
    assert len(speck) == len(cols["label"]) + 3 and sum(speck) == sum(cols["label"]) + 3


def test_unreadable_volume_is_named_and_left_out(volumes: Path, tmp_path: Path, caplog) -> None:
    folder = tmp_path / "mixed"
    write_volume(folder, "good", seed=5, bleed=True)
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    (folder / "broken_mask.nii.gz").write_bytes((folder / "good_mask.nii.gz").read_bytes())
    with caplog.at_level(logging.WARNING, logger="train.data"):
        cols = nifti_records(folder)
    assert {Path(p).name for p in cols["path"]} == {"good.nii.gz"}
    assert "broken.nii.gz" in caplog.text
    (folder / "good_mask.nii.gz").unlink()
    with pytest.raises(InvalidInputError, match="no volume with a mask can be used"):
        nifti_records(folder)


def _index(cols: dict[str, list], volume: str, k: int) -> int:
    """The record of slice ``k`` of ``<volume>.nii.gz``."""
    pairs = zip(cols["path"], cols["nifti_slice"], strict=True)
    return next(j for j, (p, s) in enumerate(pairs) if Path(p).name == f"{volume}.nii.gz" and s == k)


def test_transform_decodes_the_volume_slice_and_its_mask(volumes: Path) -> None:
    cols = nifti_records(volumes)
    i = _index(cols, "case2", 3)
    ex = {key: values[i] for key, values in cols.items()}
    transform = SliceTransform(ModelSettings(((40, 80),), 64, 0.5, (0.5,), (0.25,)), with_masks=True)
    ct, mask, label = transform.load(ex)
    expected = read_nifti_series(ex["path"]).slices[3]
    np.testing.assert_array_equal(ct.hu, expected.hu)
    assert label == 1 and mask is not None and mask.dtype == np.float32
    assert int(mask.sum()) == 37 and mask[30, 36] == 1.0  # the disc, in reading layout (row 30, column 36)
    out = transform({key: [values[i]] for key, values in cols.items()})
    assert out["has_mask"] == [True] and tuple(out["pixel_values"][0].shape) == (1, 64, 64)


def test_slice_context_neighbours_are_the_volume_slices(volumes: Path) -> None:
    cols = nifti_records(volumes)
    ex = {key: values[_index(cols, "case1", 0)] for key, values in cols.items()}
    transform = SliceTransform(ModelSettings(((40, 80),), 64, 0.5, (0.5,) * 3, (0.25,) * 3, context_slices=1))
    _, _, _, neighbors = transform.load_with_context(ex)
    series = read_nifti_series(ex["path"])
    assert neighbors[0] is None and np.array_equal(neighbors[1].hu, series.slices[1].hu)


def test_validation_split_keeps_whole_volumes(volumes: Path) -> None:
    train, val = stratified_split(nifti_records(volumes), 0.3, seed=0)
    assert train["path"] and val["path"]
    assert not set(train["path"]) & set(val["path"])


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--synthetic_train", "4", "--mask_suffix", "_seg"], "--nifti_dir only"),
        (["--nifti_dir", "{volumes}", "--synthetic_train", "4"], "exactly one training source"),
        (["--nifti_dir", "{volumes}", "--min_lesion_area", "0"], "--min_lesion_area"),
        (["--nifti_dir", "{volumes}/nope"], "--nifti_dir"),
    ],
)
def test_argument_checks_name_the_flag(volumes: Path, argv: list[str], flag: str) -> None:
    from transformers import HfArgumentParser

    argv = [a.replace("{volumes}", str(volumes)) for a in argv]
    with pytest.raises(ValueError, match=flag):
        HfArgumentParser(DataArguments).parse_args_into_dataclasses(args=argv)


def test_two_step_training_run_from_nifti_volumes(volumes: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    main(
        [
            *TINY,
            "--nifti_dir",
            str(volumes),
            "--mask_loss_weight",
            "0.5",
            "--validation_split",
            "0.34",
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            *NO_EVAL,
        ]
    )
    config = json.loads((out / "config.json").read_text())
    assert "NIfTI volumes" in config["brain_ct_trained_on"] and "voxel masks" in config["brain_ct_trained_on"]
    assert (out / "model.safetensors").is_file()
