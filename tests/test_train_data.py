"""train.data and train.augment: file lists, RSNA CSV, splits, the decoding transform, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_models import make_tiny_model
from helpers_train import write_dicom_series_folder, write_tiny_folder

from brain_ct.errors import InvalidInputError
from brain_ct.io import load_image
from brain_ct.model import ModelSettings
from brain_ct.preprocess import mask_to_model_grid, to_model_input
from brain_ct.series import context_neighbors
from brain_ct.windowing import DEFAULT_WINDOWS
from train.augment import IDENTITY, AugmentDraw, Augmenter, AugmentParams, affine_matrix
from train.data.image_folder import add_file_neighbors, read_mask, scan_imagefolder
from train.data.labels import class_id, class_weights_from_counts
from train.data.phantoms import PhantomCache, synthetic_records
from train.data.rsna import read_rsna_labels, scan_rsna
from train.data.sampling import stratified_split, take
from train.data.transform import SliceTransform

RSNA_CSV = """ID,Label
ID_aaa_epidural,0
ID_aaa_any,1
ID_bbb_any,0
ID_bbb_subdural,0
ID_ccc_intraparenchymal,1
ID_ccc_any,1
ID_aaa_any,1
"""


#: A 3-window single-slice model at 64 px with ImageNet mean/std.
SETTINGS = ModelSettings(DEFAULT_WINDOWS, 64, 0.5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_folder(tmp_path_factory.mktemp("folder"), n=8, size=96)


def test_read_rsna_labels_uses_any_rows(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(RSNA_CSV)
    assert read_rsna_labels(path) == {"ID_aaa": 1, "ID_bbb": 0, "ID_ccc": 1}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("Image,Target\nID_a_any,1\n", "ID,Label"),
        ("ID,Label\nID_a_any,2\n", "must be 0 or 1"),
        ("ID,Label\nID_a_any,1\nID_a_any,0\n", "labels 0 and 1"),
        ("ID,Label\nID_a_subdural,1\n", "no 'ID_<image>_any' rows"),
    ],
)
def test_read_rsna_labels_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=match):
        read_rsna_labels(path)


def test_scan_rsna_matches_files_and_skips_missing(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text(RSNA_CSV)
    dicoms = tmp_path / "dcm"
    dicoms.mkdir()
    for name in ("ID_aaa.dcm", "ID_bbb.dcm"):
        (dicoms / name).write_bytes(b"x")
    cols = scan_rsna(dicoms, tmp_path / "labels.csv")
    assert [Path(p).name for p in cols["path"]] == ["ID_aaa.dcm", "ID_bbb.dcm"]
    assert cols["label"] == [1, 0]
    with pytest.raises(InvalidInputError, match="none of the 3 images"):
        scan_rsna(tmp_path, tmp_path / "labels.csv")


def test_scan_imagefolder_labels_masks_and_kinds(folder: Path) -> None:
    cols = scan_imagefolder(folder)
    assert len(cols["path"]) == 8
    for path, label, mask in zip(cols["path"], cols["label"], cols["mask_path"], strict=True):
        assert Path(path).parent.name == ("hemorrhage" if label else "normal")
        assert Path(mask).name == Path(path).stem + ".png"  # masks/ found by stem, not a class
    assert {Path(p).suffix for p in cols["path"]} == {".png", ".dcm"}


def test_scan_imagefolder_rejects_unknown_class(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "a.png").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="'cats' is not recognised"):
        scan_imagefolder(tmp_path)


def test_class_aliases() -> None:
    assert class_id("Hemorrhagic", "x") == 1
    assert class_id("NORMAL", "x") == 0


def test_stratified_split_is_seeded_disjoint_and_keeps_ratio() -> None:
    cols = {"path": [f"f{i}" for i in range(40)], "label": [1 if i < 10 else 0 for i in range(40)]}
    train, val = stratified_split(cols, 0.2, seed=3)
    assert len(val["label"]) == 8 and sum(val["label"]) == 2  # 25 % positives kept
    assert set(train["path"]).isdisjoint(val["path"])
    assert stratified_split(cols, 0.2, seed=3)[1] == val
    assert stratified_split(cols, 0.2, seed=4)[1] != val


def test_stratified_split_needs_two_per_class() -> None:
    with pytest.raises(InvalidInputError, match="hemorrhage=1"):
        stratified_split({"label": [0, 0, 0, 1]}, 0.5, seed=0)


def test_take_is_seeded_subset() -> None:
    cols = {"label": list(range(10))}
    assert take(cols, 4, 1) == take(cols, 4, 1)
    assert len(take(cols, 4, 1)["label"]) == 4
    assert take(cols, None, 1) is cols


def test_synthetic_records_deterministic_balanced_and_split_apart() -> None:
    a = synthetic_records(20, "train", 7, 0.5)
    assert a == synthetic_records(20, "train", 7, 0.5)
    assert sum(a["label"]) == 10
    assert set(a["kind"]) == {"dicom", "image"}
    b = synthetic_records(20, "test", 7, 0.5)
    assert set(a["synthetic_seed"]).isdisjoint(b["synthetic_seed"])
    assert set(synthetic_records(10, "train", 7, 0.0)["kind"]) == {"dicom"}


def test_class_weights_from_counts() -> None:
    assert class_weights_from_counts([30, 10]) == pytest.approx([40 / 60, 40 / 20])


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """One DICOM series (4 slices, headers give the order), a lone DICOM and two PNGs."""
    root = tmp_path_factory.mktemp("mixed")
    series = write_dicom_series_folder(root, n_series=1, n_slices=4, size=64)
    write_tiny_folder(root, n=3, size=64, dicom_every=99)
    return root, next(iter(series.values()))


@pytest.mark.parametrize("k", [0, 1])
def test_training_transform_is_exactly_the_predictor_input(
    mixed_folder: tuple[Path, list[Path]], tmp_path: Path, k: int
) -> None:
    """One preprocessing path: for the same file, SliceTransform's tensor is the very tensor the Predictor
    feeds its model — single-slice and context models; DICOM in a series, a lone DICOM and 8-bit PNGs."""
    from brain_ct.predictor import Predictor

    root, ordered = mixed_folder
    predictor = Predictor.from_pretrained(make_tiny_model(tmp_path / "m", image_size=48, context_slices=k))
    fed: list[np.ndarray] = []
    predictor.model.register_forward_pre_hook(
        lambda _m, _a, kw: fed.append(kw["pixel_values"].detach().cpu().numpy().copy()), with_kwargs=True
    )
    cols = scan_imagefolder(root)
    cols = add_file_neighbors(cols, k) if k else cols
    transform = SliceTransform(predictor.settings)
    # The Predictor reads a series in anatomical order, each slice with its neighbours (series reading).
    cts = [load_image(str(p), allow_unverified=True) for p in ordered]
    in_series = {
        str(p): (ct, nbs) for p, ct, nbs in zip(ordered, cts, context_neighbors(cts, k), strict=True)
    }
    kinds = []
    for i, path in enumerate(cols["path"]):
        out = transform({key: [v[i]] for key, v in cols.items()})
        ct, nbs = in_series.get(path, (load_image(path, allow_unverified=True), None))
        fed.clear()
        predictor.predict_batch([ct], neighbors=[nbs] if k else None, allow_unverified=True)
        assert out["pixel_values"][0].shape == (3 * (2 * k + 1), 48, 48)
        np.testing.assert_array_equal(out["pixel_values"][0].numpy(), fed[0][0])
        kinds.append((out["input_kind"][0], path in in_series))
    assert set(kinds) == {(0, True), (0, False), (1, False)}  # series DICOM, lone DICOM, PNG


def test_identity_augmentation_equals_eval_path(folder: Path) -> None:
    cols = scan_imagefolder(folder)
    aug = Augmenter(rotation=0, zoom=0, shift=0, brightness=(1.0, 1.0), horizontal_flip=False)
    t_aug = SliceTransform(SETTINGS, augmenter=aug)
    t_eval = SliceTransform(SETTINGS)
    batch = {k: v[:3] for k, v in cols.items()}
    a, b = t_aug(batch), t_eval(batch)
    for x, y in zip(a["pixel_values"], b["pixel_values"], strict=True):
        np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-6)


def test_masks_are_framed_like_the_image(folder: Path) -> None:
    """The lesion mask on the model grid sits where the 70 HU disc is in the windowed input."""
    cols = scan_imagefolder(folder)
    i = next(j for j, p in enumerate(cols["path"]) if p.endswith(".dcm") and cols["label"][j] == 1)
    ct = load_image(cols["path"][i], allow_unverified=True)
    mask = read_mask(cols["mask_path"][i], ct.shape)
    grid = mask_to_model_grid(mask, ct, 64)
    brain = to_model_input(ct, [(40, 80)], 64, None, None)[0]
    lesion = (brain > 0.8) & (brain < 0.95)  # 70 HU → 0.875 in the brain window
    assert lesion.sum() > 5
    assert grid[lesion].mean() > 0.8
    assert grid[~lesion & (brain < 0.6)].mean() < 0.05


def test_read_mask_wrong_size(folder: Path) -> None:
    cols = scan_imagefolder(folder)
    with pytest.raises(InvalidInputError, match="image's own pixel grid"):
        read_mask(cols["mask_path"][0], (10, 10))


def test_training_transform_returns_masks_for_positives(folder: Path) -> None:
    cols = scan_imagefolder(folder)
    t = SliceTransform(SETTINGS, augmenter=Augmenter(), with_masks=True)
    out = t({k: v[:4] for k, v in cols.items()})
    assert out["has_mask"] == [bool(y) for y in cols["label"][:4]]
    for m, has in zip(out["mask"], out["has_mask"], strict=True):
        assert m.shape == (64, 64)
        assert (float(m.max()) > 0.5) == has


# ------------------------------------------------------------------------------------------- augment


def _square_image(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    img = np.zeros((3, size, size), np.float32)
    img[:, 10:20, 40:52] = 1.0
    return img, img[0].copy()


def test_flip_only_mirrors_exactly() -> None:
    img, mask = _square_image()
    params = AugmentParams(0.0, 1.0, 0.0, 0.0, True, 1.0, 0.0, 1.0)
    draw = AugmentDraw(params)
    out, m = draw(img), draw.mask(mask)
    np.testing.assert_allclose(out, img[:, :, ::-1], atol=1e-6)
    np.testing.assert_allclose(m, mask[:, ::-1], atol=1e-6)


def test_shift_moves_by_pixels() -> None:
    img, mask = _square_image()
    draw = AugmentDraw(AugmentParams(0.0, 1.0, 5.0, -3.0, False, 1.0, 0.0, 1.0))
    out, m = draw(img), draw.mask(mask)
    np.testing.assert_allclose(out[0, 7:17, 45:57], 1.0, atol=1e-6)
    assert out[0, 10:20, 40:45].max() == 0.0
    np.testing.assert_allclose(m, out[0], atol=1e-6)  # the mask moved with the image


@pytest.mark.parametrize("seed", range(5))
def test_random_augmentation_keeps_mask_on_image(seed: int) -> None:
    img, mask = _square_image()
    draw = Augmenter(rotation=20, zoom=0.2, shift=0.1, brightness=(1.0, 1.0)).draw(
        np.random.default_rng(seed), 64
    )
    out, m = draw(img), draw.mask(mask)
    np.testing.assert_allclose(out[0], m, atol=1e-5)  # the same warp, pixel for pixel
    assert m.sum() > 50


def test_brightness_scales_and_clips() -> None:
    img = np.full((3, 8, 8), 0.9, np.float32)
    out = AugmentDraw(AugmentParams(0.0, 1.0, 0.0, 0.0, False, 1.2, 0.0, 1.0))(img)
    assert out.max() == 1.0
    out = AugmentDraw(AugmentParams(0.0, 1.0, 0.0, 0.0, False, 0.5, 0.0, 1.0))(img)
    np.testing.assert_allclose(out, 0.45, atol=1e-6)
    assert img.max() == pytest.approx(0.9)  # the input stack is left as it was


def test_window_jitter_only_when_enabled() -> None:
    rng = np.random.default_rng(0)
    assert Augmenter().sample(rng, 64).width_factor == 1.0
    p = Augmenter(window_jitter=0.1).sample(rng, 64)
    ((c, w),) = AugmentDraw(p).windows([(40.0, 80.0)])
    assert abs(c - 40.0) <= 8.0 and 72.0 <= w <= 88.0 and (c, w) != (40.0, 80.0)


def test_identity_matrix() -> None:
    np.testing.assert_allclose(affine_matrix(32, IDENTITY), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    img, mask = _square_image()
    draw = AugmentDraw(IDENTITY)
    assert draw(img) is img and draw.mask(mask) is mask  # nothing drawn, nothing resampled


# ------------------------------------------------------------------------------------------- phantoms


def test_synthetic_examples_go_through_load_image_with_aligned_masks() -> None:
    from train.data.phantoms import synthetic_example

    cols = synthetic_records(6, "train", 0, 0.5)
    seen = set()
    for seed, label, kind in zip(cols["synthetic_seed"], cols["label"], cols["kind"], strict=True):
        ct, mask = synthetic_example(seed, label, kind, 96)
        seen.add(kind)
        assert ct.source == ("dicom" if kind == "dicom" else "image")
        assert (ct.hu is not None) == (kind == "dicom")
        assert mask.shape == ct.shape  # on the decoded image's own grid (8-bit renderings are resized)
        assert (mask.max() > 0) == bool(label)
        again, mask2 = synthetic_example(seed, label, kind, 96)
        np.testing.assert_array_equal(again.display, ct.display)  # deterministic per index
    assert seen == {"dicom", "image"}


def test_prefetch_fills_cache_once() -> None:
    from train.data import phantoms as data

    cols = synthetic_records(3, "validation", 5, 0.0)
    cache = PhantomCache()
    assert cache.prefetch(cols, 64) == 3
    assert cache.prefetch(cols, 64) == 0  # already cached
    assert PhantomCache().prefetch(cols, 64) == 3  # caches are separate objects, no hidden global
    key = (cols["synthetic_seed"][0], cols["label"][0], 64, 0)
    assert cache.get(*key) is cache.entries[key]
    np.testing.assert_array_equal(cache.get(*key)[0].hu, data._generate(key)[0].hu)
    assert cache.prefetch(cols, 64, k=1) == 3  # context stacks are cached apart
    assert len(cache.get(*key[:3], 1)) == 3


def test_transform_reads_phantoms_from_its_cache() -> None:
    from train.data import phantoms as data

    cols = synthetic_records(2, "validation", 5, 0.0)
    batch = {k: v[:1] for k, v in cols.items()}
    key = (cols["synthetic_seed"][0], cols["label"][0], 128, 0)
    cache = PhantomCache()
    cache.prefetch(batch, 128)
    fresh = SliceTransform(SETTINGS, synthetic_size=128)(batch)["pixel_values"][0]
    cached = SliceTransform(SETTINGS, synthetic_size=128, phantoms=cache)(batch)["pixel_values"][0]
    np.testing.assert_array_equal(cached.numpy(), fresh.numpy())  # a cache only saves time
    cache.entries[key] = data._generate((key[0] + 1, *key[1:]))  # another head under this key
    other = SliceTransform(SETTINGS, synthetic_size=128, phantoms=cache)(batch)["pixel_values"][0]
    assert not np.array_equal(other.numpy(), fresh.numpy())  # the transform did read the cache


# ------------------------------------------------------------------------------------------- Hub datasets


def test_hub_dataset_splits_and_transform(tmp_path: Path) -> None:
    """A datasets-loadable image folder (what a Hub dataset looks like once loaded), labels by class name."""
    from helpers_train import write_png_folder

    from train.args import DataArguments
    from train.data.build import build_splits
    from train.data.transform import attach_transform

    write_png_folder(tmp_path / "train", 12)
    args = DataArguments(dataset_name=str(tmp_path), validation_split=0.25)
    splits = build_splits(args, seed=0)
    assert splits.hub and splits.class_counts is not None and sum(splits.class_counts) == 9
    assert len(splits.validation) == 3
    names = splits.train.features["label"].names
    assert {names[k]: v for k, v in splits.label_map.items()} == {"hemorrhage": 1, "normal": 0}
    t = SliceTransform(
        SETTINGS,
        image_column="image",
        label_column="label",
        label_map=splits.label_map,
    )
    raw_label = splits.validation[0]["label"]
    expected = class_id(names[raw_label], "test")
    ds = attach_transform(splits.validation, t)
    row = ds[0]
    assert row["labels"] == expected
    assert tuple(row["pixel_values"].shape) == (3, 64, 64)
    assert row["input_kind"] == 1  # an 8-bit image


# ---------------------------------------------------------------------------------------------- real anatomy

GE_DIR = Path(__file__).resolve().parent.parent / "data" / "real_anatomy" / "dcm_qa_ct-GE"


def test_real_holdout_is_whole_levels_spread_and_deterministic() -> None:
    from train.data.real_anatomy import holdout_levels, real_anatomy_files, real_anatomy_split

    # skull base → vertex from the headers (ImagePositionPatient), not from the file names
    assert [Path(p).name for p in real_anatomy_files(GE_DIR)] == [f"{i:02d}.dcm" for i in range(1, 29)]

    assert holdout_levels(28, 7) == [2, 6, 10, 14, 18, 22, 26]
    assert holdout_levels(4, 7) == [1, 3]  # never more than half
    assert holdout_levels(10, 0) == []
    train, held = real_anatomy_split(GE_DIR)
    assert [Path(p).name for p in held] == [
        "03.dcm",
        "07.dcm",
        "11.dcm",
        "15.dcm",
        "19.dcm",
        "23.dcm",
        "27.dcm",
    ]
    assert len(train) == 21 and not set(train) & set(held)
    assert real_anatomy_split(GE_DIR) == (train, held)


def test_real_records_train_and_validation_never_share_a_level() -> None:
    from train.data.real_anatomy import real_anatomy_records

    tr = real_anatomy_records(GE_DIR, "train", 0, variants=4)
    va = real_anatomy_records(GE_DIR, "validation", 0)
    te = real_anatomy_records(GE_DIR, "test", 0)
    assert not set(tr["path"]) & set(va["path"])
    assert set(va["path"]) == set(te["path"]) and va["real_seed"] != te["real_seed"]
    assert set(tr["synthetic_seed"]) == set(va["synthetic_seed"]) == {-1}  # domain "real"
    assert len(tr["label"]) == 21 * 4 and 0 < sum(tr["label"]) <= 21 * 2
    assert all(tr["real_augment"]) and not any(va["real_augment"])
    # validation: per held-out level an unchanged DICOM normal and an 8-bit normal; positives where room
    normals = [
        (Path(p).name, k) for p, y, k in zip(va["path"], va["label"], va["kind"], strict=True) if y == 0
    ]
    assert ("15.dcm", "dicom") in normals and ("15.dcm", "image") in normals and len(normals) == 14
    assert sum(va["label"]) >= 8 and all(s for s, y in zip(va["real_subtype"], va["label"], strict=True) if y)
    assert real_anatomy_records(GE_DIR, "train", 0, variants=4) == tr


def test_real_anatomy_transform_is_domain_real_with_masks() -> None:
    from train.data.real_anatomy import real_anatomy_records
    from train.data.records import merge_records
    from train.data.splits import to_dataset

    va = real_anatomy_records(GE_DIR, "validation", 0)
    cols = merge_records(synthetic_records(2, "validation", 0, 0.0), va)
    assert cols["real_seed"][:2] == [-1, -1] and cols["real_subtype"][:2] == ["", ""]
    tf = SliceTransform(SETTINGS, with_masks=True, synthetic_size=128)
    pick = [0, 1] + [2 + i for i, y in enumerate(va["label"]) if y][:2] + [2 + va["label"].index(0)]
    batch = {k: [v[i] for i in pick] for k, v in cols.items()}
    out = tf(batch)
    assert out["domain"] == [0, 0, 1, 1, 1]  # phantom, phantom, real ×3
    assert out["labels"] == [0, 1, 1, 1, 0]
    assert out["has_mask"][2:] == [True, True, False]
    assert tuple(out["pixel_values"][2].shape) == (3, 64, 64)
    # validation records decode identically every time; the unchanged normal is the file itself
    again = tf(batch)
    assert all(np.array_equal(a, b) for a, b in zip(out["pixel_values"], again["pixel_values"], strict=True))
    ds = to_dataset(batch)
    assert ds.num_rows == 5


def test_real_anatomy_training_draws_fresh_variants() -> None:
    from train.data.real_anatomy import real_anatomy_example, real_anatomy_records

    tr = real_anatomy_records(GE_DIR, "train", 0, variants=2, size=128)
    i = tr["label"].index(1)
    ex = {k: v[i] for k, v in tr.items()}
    ct_a, mask_a = real_anatomy_example(ex, 128, np.random.default_rng(1))
    ct_b, mask_b = real_anatomy_example(ex, 128, np.random.default_rng(2))
    assert mask_a.any() and mask_b.any() and not np.array_equal(mask_a, mask_b)
    ct_c, _ = real_anatomy_example(ex, 128, None)
    ct_d, _ = real_anatomy_example(ex, 128, None)
    assert np.array_equal(ct_c.display, ct_d.display)  # the record's own seed without an rng


def test_real_anatomy_files_are_ordered_by_header_not_name(tmp_path: Path) -> None:
    import shutil

    from train.data.real_anatomy import real_anatomy_files

    # 10.dcm → a.dcm, 05.dcm → b.dcm, 20.dcm → c.dcm: name order is not anatomical order
    for src, dst in (("10", "a"), ("05", "b"), ("20", "c")):
        shutil.copy(GE_DIR / f"{src}.dcm", tmp_path / f"{dst}.dcm")
    assert [Path(p).stem for p in real_anatomy_files(tmp_path)] == ["b", "a", "c"]


def test_real_anatomy_dir_without_dicoms_is_a_clear_error(tmp_path: Path) -> None:
    from train.data.real_anatomy import real_anatomy_records

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="has no DICOM files"):
        real_anatomy_records(tmp_path, "train", 0)
