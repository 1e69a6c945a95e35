"""train.data.records and the transform's dispatch: every record names its source, and is decoded by it."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers_train import write_ct_dicom, write_tiny_folder

from brain_ct.errors import InvalidInputError
from brain_ct.io import load_image
from brain_ct.model import ModelSettings
from brain_ct.preprocess import model_input
from brain_ct.synthetic import generate_series, generate_slice
from brain_ct.windowing import DEFAULT_WINDOWS
from train.data.image_folder import scan_imagefolder
from train.data.nifti_volumes import nifti_records
from train.data.phantoms import PhantomCache, phantom_record_example, synthetic_example, synthetic_records
from train.data.real_anatomy import real_anatomy_records
from train.data.records import RECORD_SOURCES, SOURCE_COLUMN, file_columns, merge_records
from train.data.rsna import scan_rsna
from train.data.transform import DECODERS, SliceTransform

SETTINGS = ModelSettings(DEFAULT_WINDOWS, 48, 0.5)
REAL_DIR = Path(__file__).resolve().parent.parent / "data" / "real_anatomy" / "dcm_qa_ct-GE"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_folder(tmp_path_factory.mktemp("records"), n=4, size=96)


def test_every_source_has_a_decoder() -> None:
    assert set(DECODERS) == set(RECORD_SOURCES) == {"file", "nifti", "phantom", "real", "hub"}


def test_file_columns_name_their_source() -> None:
    cols = file_columns(["a.dcm", "b.png"], [0, 1], ["", "m.png"], source="nifti")
    assert cols[SOURCE_COLUMN] == ["nifti", "nifti"]
    assert cols["synthetic_seed"] == [-1, -1] and cols["kind"] == ["", ""]
    assert "subtypes" not in cols
    assert file_columns([], [], [], [])["subtypes"] == []


def test_each_producer_tags_its_records(folder: Path, tmp_path: Path) -> None:
    write_ct_dicom(tmp_path / "ID_a.dcm", generate_slice(1, 64, hemorrhage=False).hu)
    (tmp_path / "labels.csv").write_text("ID,Label\nID_a_any,0\n")
    assert set(scan_imagefolder(folder)[SOURCE_COLUMN]) == {"file"}
    assert scan_rsna(tmp_path, tmp_path / "labels.csv")[SOURCE_COLUMN] == ["file"]
    assert set(synthetic_records(4, "train", 0, 0.5)[SOURCE_COLUMN]) == {"phantom"}
    real = real_anatomy_records(REAL_DIR, "validation", 0, size=64, holdout=2, eval_variants=1)
    assert real[SOURCE_COLUMN] and set(real[SOURCE_COLUMN]) == {"real"}
    hu = np.stack([ph.hu for ph in generate_series(2, n_slices=3, size=64, hemorrhage=False)], -1)
    affine = np.diag([0.9, 0.9, 5.0, 1.0])
    nib.save(nib.Nifti1Image(np.round(hu).astype(np.int16), affine), tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(hu.shape, np.uint8), affine), tmp_path / "v_mask.nii.gz")
    assert nifti_records(tmp_path)[SOURCE_COLUMN] == ["nifti"] * 3


def test_merged_records_keep_each_source(folder: Path) -> None:
    files = scan_imagefolder(folder, validate=False)
    phantoms = synthetic_records(2, "validation", 0, 0.0)
    merged = merge_records(files, phantoms)
    assert merged[SOURCE_COLUMN] == ["file"] * len(files["label"]) + ["phantom", "phantom"]


def test_the_source_decides_how_a_record_is_decoded(folder: Path) -> None:
    """A file record whose marker columns look like a phantom's is still read as its file."""
    cols = scan_imagefolder(folder)
    record = {k: v[0] for k, v in cols.items()}
    record.update(synthetic_seed=5, kind="dicom", real_seed=3, nifti_slice=2)
    transform = SliceTransform(SETTINGS)
    got = transform.decode(record)
    want = load_image(record["path"], allow_unverified=True)
    np.testing.assert_array_equal(got.ct.display, want.display)
    out = transform({k: [v] for k, v in record.items()})
    np.testing.assert_array_equal(out["pixel_values"][0].numpy(), model_input(want, SETTINGS))
    assert out["domain"] == [1]  # "real": only phantom records are the phantom domain


@pytest.mark.parametrize("source", [None, "dicom", "phantoms"])
def test_a_record_without_a_known_source_is_a_clear_error(folder: Path, source: str | None) -> None:
    record = {k: v[0] for k, v in scan_imagefolder(folder, validate=False).items()}
    if source is None:
        del record[SOURCE_COLUMN]
    else:
        record[SOURCE_COLUMN] = source
    with pytest.raises(InvalidInputError, match=r"source .*one of file, nifti, phantom, real, hub"):
        SliceTransform(SETTINGS).decode(record)


def test_phantom_record_example_is_the_synthetic_example() -> None:
    cols = synthetic_records(2, "validation", 4, 0.5)
    for i in range(2):
        record = {k: v[i] for k, v in cols.items()}
        ct, mask, neighbors, subtype = phantom_record_example(record, 64, 0, PhantomCache())
        want_ct, want_mask = synthetic_example(record["synthetic_seed"], record["label"], record["kind"], 64)
        np.testing.assert_array_equal(ct.display, want_ct.display)
        np.testing.assert_array_equal(mask, want_mask)
        assert neighbors is None and (subtype is not None) == bool(record["label"])
