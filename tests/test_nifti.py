"""Tests of brain_ct.nifti: NIfTI volumes read like the same scan as DICOM, heatmaps back on the source grid.

Volumes are built in code with nibabel from a synthetic phantom series (``generate_series``) that is
also written as DICOM and read by ``read_series``: the DICOM reading is the reference for slice
order, HU, pixel spacing and slice positions.
"""

from __future__ import annotations

import gzip
import io
import struct
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations

from brain_ct import limits
from brain_ct.errors import InvalidInputError, NotHeadCTError
from brain_ct.image import CTImage
from brain_ct.nifti import (
    MAX_EXTENSION_BYTES,
    _Inflow,
    check_ct_like,
    is_nifti,
    nifti_info,
    read_nifti_mask,
    read_nifti_series,
)
from brain_ct.nifti_grid import (
    MAX_VOXELS,
    NiftiGrid,
    NiftiSeries,
    grid_from_series,
    heatmap_volume,
    write_heatmap_nifti,
)
from brain_ct.series import Series, read_series
from brain_ct.synthetic import generate_series, to_dicom

N_SLICES, SIZE = 8, 64
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])


# --------------------------------------------------------------------------- the reference scan


@pytest.fixture(scope="module")
def dicom_series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    """A 64x64x8 phantom written as DICOM (files in reverse order) and read by the series reader."""
    folder = tmp_path_factory.mktemp("dicom")
    phantoms = generate_series(11, n_slices=N_SLICES, size=SIZE)
    for i, phantom in enumerate(reversed(phantoms)):
        to_dicom(phantom, instance_number=i + 1).save_as(folder / f"IM{i:03d}", enforce_file_format=True)
    series = read_series(folder)
    assert series.sort_key == "position" and len(series) == N_SLICES
    return series


def _reading(series: Series) -> tuple[np.ndarray, np.ndarray]:
    """The DICOM series as a [row, column, slice] HU array and its (row, column, slice) → RAS affine.

    Built from the DICOM geometry alone (Image Position/Orientation Patient, Pixel Spacing).
    """
    hu = np.stack([ct.hu for ct in series.slices], axis=-1)
    meta = [ct.meta for ct in series.slices]
    ipp = np.asarray([m["ImagePositionPatient"] for m in meta], dtype=float)
    iop = np.asarray(meta[0]["ImageOrientationPatient"], dtype=float)
    row_mm, col_mm = (float(v) for v in meta[0]["PixelSpacing"])
    affine = np.eye(4)
    affine[:3, 0] = RAS_FROM_LPS @ iop[3:] * row_mm  # next row: along the column direction
    affine[:3, 1] = RAS_FROM_LPS @ iop[:3] * col_mm  # next column: along the row direction
    affine[:3, 2] = RAS_FROM_LPS @ (ipp[1] - ipp[0])
    affine[:3, 3] = RAS_FROM_LPS @ ipp[0]
    return hu, affine


def _layout(hu: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same volume stored with voxel axes pointing to ``axcodes`` (e.g. "RAS", "LPS", "SLA")."""
    start = orientations.io_orientation(affine)
    xform = orientations.ornt_transform(start, orientations.axcodes2ornt(tuple(axcodes)))
    return orientations.apply_orientation(hu, xform), affine @ orientations.inv_ornt_aff(xform, hu.shape)


def _nifti_bytes(
    data: np.ndarray,
    affine: np.ndarray,
    *,
    gz: bool = False,
    dtype: type | None = None,
    slope: float | None = None,
    inter: float | None = None,
    codes: tuple[int, int] = (1, 1),
) -> bytes:
    """A single-file NIfTI-1 of ``data`` (stored as ``dtype``, with optional scl_slope/scl_inter)."""
    array = np.asarray(data if dtype is None else data.astype(dtype))
    if codes == (0, 0):  # no orientation at all: only the voxel sizes
        image = nib.Nifti1Image(array, None)
        image.header.set_zooms(tuple(np.linalg.norm(affine[:3, :3], axis=0))[: array.ndim])
    else:
        image = nib.Nifti1Image(array, affine)
        image.header.set_qform(affine, code=codes[0])
        image.header.set_sform(affine, code=codes[1])
    if slope is not None:
        image.header.set_slope_inter(slope, inter)
    raw = image.to_bytes()
    return gzip.compress(raw) if gz else raw


def _rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    rot = np.eye(4)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot


def _assert_same_scan(nifti: Series, dicom: Series, *, geometry: bool = True) -> None:
    assert len(nifti) == len(dicom)
    for k, (a, b) in enumerate(zip(nifti.slices, dicom.slices, strict=True)):
        assert a.hu.dtype == np.float32 and a.hu.shape == b.hu.shape
        np.testing.assert_array_equal(a.hu, b.hu, err_msg=f"slice {k}")
        np.testing.assert_array_equal(a.display, b.display)
        assert a.head_box == b.head_box
    if geometry:
        np.testing.assert_allclose(nifti.positions, dicom.positions, atol=2e-3)
        for a, b in zip(nifti.slices, dicom.slices, strict=True):
            np.testing.assert_allclose(a.meta["PixelSpacing"], b.meta["PixelSpacing"], atol=1e-5)
            np.testing.assert_allclose(
                a.meta["ImagePositionPatient"], b.meta["ImagePositionPatient"], atol=2e-3
            )
            np.testing.assert_allclose(
                a.meta["ImageOrientationPatient"], b.meta["ImageOrientationPatient"], atol=1e-6
            )


# --------------------------------------------------------------------------- same scan as DICOM


def test_ras_volume_by_hand_reads_as_the_dicom_series(dicom_series: Series, tmp_path: Path) -> None:
    # The usual NIfTI layout, built by hand: i → patient right, j → anterior, k → superior.
    stack = np.stack([ct.hu for ct in dicom_series.slices])  # [slice, row, column]: rows → P, cols → L
    data = np.transpose(stack[:, ::-1, ::-1], (2, 1, 0))  # [i=R, j=A, k=S]
    ipp0 = np.asarray(dicom_series.slices[0].meta["ImagePositionPatient"], dtype=float)
    ps = float(dicom_series.slices[0].meta["PixelSpacing"][0])
    dz = dicom_series.positions[1] - dicom_series.positions[0]
    affine = np.diag([ps, ps, dz, 1.0])
    # Voxel i = 0 is the DICOM column furthest to the patient's left... i.e. column W-1.
    affine[:3, 3] = [-(ipp0[0] + (SIZE - 1) * ps), -(ipp0[1] + (SIZE - 1) * ps), ipp0[2]]
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(_nifti_bytes(data, affine, gz=True, dtype=np.int16, slope=1.0, inter=0.0))
    series = read_nifti_series(path)
    assert isinstance(series, NiftiSeries) and isinstance(series, Series)
    _assert_same_scan(series, dicom_series)
    assert series.sort_key == "position" and series.source == str(path)
    assert series.files[0] == "scan.nii.gz#1" and series.files[-1] == f"scan.nii.gz#{N_SLICES}"
    assert series.slices[0].source == "nifti" and series.slices[0].meta["Format"] == "NIfTI-1"


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "LAI", "RPI", "ASL", "SLP", "IRA"])
def test_any_axis_layout_reads_as_the_dicom_series(dicom_series: Series, axcodes: str) -> None:
    hu, affine = _reading(dicom_series)
    data, aff = _layout(hu, affine, axcodes)
    assert orientations.aff2axcodes(aff) == tuple(axcodes)
    _assert_same_scan(read_nifti_series(_nifti_bytes(data, aff)), dicom_series)


def test_float_storage_and_gzip_and_file_object(dicom_series: Series, tmp_path: Path) -> None:
    hu, affine = _reading(dicom_series)
    data, aff = _layout(hu, affine, "RAS")
    raw = _nifti_bytes(data, aff, gz=True, dtype=np.float32)
    path = tmp_path / "float.nii.gz"
    path.write_bytes(raw)
    with path.open("rb") as fh:
        from_file = read_nifti_series(fh)
    assert from_file.files[0] == "float.nii.gz#1"
    _assert_same_scan(from_file, dicom_series)
    _assert_same_scan(read_nifti_series(raw, name="x.nii.gz"), dicom_series)


@pytest.mark.parametrize(
    ("dtype", "slope", "inter"),
    [
        (np.int16, 1.0, -1024.0),
        (np.uint16, 1.0, -1024.0),
        (np.int16, 2.0, -1024.0),
        (np.float32, 0.5, -1000.0),
    ],
)
def test_scl_slope_and_inter_give_hu(dicom_series: Series, dtype: type, slope: float, inter: float) -> None:
    hu, affine = _reading(dicom_series)
    hu = np.round(hu / 2.0) * 2.0 if slope == 2.0 else hu  # representable with slope 2
    stored = (hu - inter) / slope
    series = read_nifti_series(_nifti_bytes(stored, affine, dtype=dtype, slope=slope, inter=inter))
    np.testing.assert_allclose(np.stack([ct.hu for ct in series.slices], axis=-1), hu, atol=1e-3)
    assert any("scl_slope" in note for note in series.slices[0].meta["Notes"])


def test_two_d_file_and_single_slice_read_as_one_slice(dicom_series: Series, tmp_path: Path) -> None:
    hu, affine = _reading(dicom_series)
    data, aff = _layout(hu[:, :, 4:5], affine, "RAS")
    for image in (data, data[:, :, 0]):  # third dim 1, and a true 2-D file
        series = read_nifti_series(_nifti_bytes(image, aff))
        assert len(series) == 1 and series.grid is not None and series.grid.shape == image.shape
        np.testing.assert_array_equal(series.slices[0].hu, dicom_series.slices[4].hu)
        heat = write_heatmap_nifti([np.ones(series.slices[0].shape)], series, tmp_path / "heat.nii")
        back = nib.load(heat)
        assert back.shape == image.shape
        np.testing.assert_allclose(back.affine, aff, atol=1e-4)


def test_trailing_singleton_fourth_dim_is_one_volume(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    series = read_nifti_series(_nifti_bytes(hu[..., None], affine))
    _assert_same_scan(series, dicom_series)


def test_mildly_oblique_volume_is_read_as_stored(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    tilted = _rotation(0, 15.0) @ affine  # head pitched 15° about the left-right axis
    series = read_nifti_series(_nifti_bytes(hu, tilted))
    _assert_same_scan(series, dicom_series, geometry=False)
    np.testing.assert_allclose(np.diff(series.positions), np.diff(dicom_series.positions), atol=2e-3)
    assert any("oblique" in note for note in series.slices[0].meta["Notes"])


def test_in_plane_rotation_keeps_positions(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    series = read_nifti_series(_nifti_bytes(hu, _rotation(2, 20.0) @ affine))
    _assert_same_scan(series, dicom_series, geometry=False)
    np.testing.assert_allclose(series.positions, dicom_series.positions, atol=2e-3)


@pytest.mark.parametrize(("axis", "degrees"), [(0, 40.0), (1, 35.0), (2, 45.0)])
def test_strongly_oblique_volume_is_refused(dicom_series: Series, axis: int, degrees: float) -> None:
    hu, affine = _reading(dicom_series)
    with pytest.raises(InvalidInputError, match=r"oblique.*Resample"):
        read_nifti_series(_nifti_bytes(hu, _rotation(axis, degrees) @ affine))


def test_thick_coronal_acquisition_is_refused(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    stretched = affine.copy()
    stretched[:3, 0] *= 3.0  # rows (anterior-posterior) 3x further apart than columns
    with pytest.raises(InvalidInputError, match="not square"):
        read_nifti_series(_nifti_bytes(hu, stretched))


def test_header_without_orientation_is_noted(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    data, aff = _layout(hu, affine, "LAS")  # what nibabel assumes without orientation
    series = read_nifti_series(_nifti_bytes(data, aff, codes=(0, 0)))
    assert any("without orientation" in note for note in series.slices[0].meta["Notes"])
    _assert_same_scan(series, dicom_series, geometry=False)


def test_not_a_head_is_refused_unless_allowed(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    huge = affine.copy()
    huge[:3, :2] *= 3.0  # 3x wider pixels: a cross-section over 300 mm, a trunk rather than a head
    raw = _nifti_bytes(hu, huge)
    with pytest.raises(NotHeadCTError, match="larger than a head"):
        read_nifti_series(raw)
    assert len(read_nifti_series(raw, allow_unverified=True)) == N_SLICES


def test_no_header_text_reaches_meta_dict_or_heatmap(dicom_series: Series, tmp_path: Path) -> None:
    hu, affine = _reading(dicom_series)
    image = nib.Nifti1Image(hu.astype(np.int16), affine)
    image.header["descrip"] = b"DOE^JANE 19700101"
    image.header["aux_file"] = b"PID-778899"
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"PatientName=DOE^JANE"))
    series = read_nifti_series(image.to_bytes())
    text = repr(series.to_dict()) + "".join(repr(ct.meta) for ct in series.slices)
    for secret in ("DOE", "JANE", "19700101", "778899"):
        assert secret not in text
    from brain_ct.privacy import ALLOWED_META_KEYS

    assert set(series.slices[0].meta) <= ALLOWED_META_KEYS
    heat = write_heatmap_nifti([np.zeros(ct.shape) for ct in series.slices], series, tmp_path / "heat.nii")
    written = heat.read_bytes()
    assert b"DOE" not in written and b"778899" not in written and b"19700101" not in written
    assert nib.load(heat).header.extensions == []


# --------------------------------------------------------------------------- heatmaps back on the source grid


def _marker_volume(
    dicom_series: Series, axcodes: str, voxel: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    hu, affine = _reading(dicom_series)
    data, aff = _layout(hu, affine, axcodes)
    data = data.copy()
    data[voxel] = 3000.0  # brighter than anything else: findable after reading
    return data, aff


@pytest.mark.parametrize(("axcodes", "suffix"), [("RAS", ".nii.gz"), ("LPI", ".nii"), ("SAL", ".nii.gz")])
def test_heatmap_lands_on_the_source_voxel(
    dicom_series: Series, tmp_path: Path, axcodes: str, suffix: str
) -> None:
    shape = _layout(*_reading(dicom_series), axcodes)[0].shape
    voxel = (shape[0] // 3, shape[1] // 4, shape[2] // 5 + 1)
    data, aff = _marker_volume(dicom_series, axcodes, voxel)
    series = read_nifti_series(_nifti_bytes(data, aff))
    heatmaps = [np.zeros(ct.shape, np.float32) for ct in series.slices]
    k = int(np.argmax([ct.hu.max() for ct in series.slices]))
    r, c = np.unravel_index(int(np.argmax(series.slices[k].hu)), series.slices[k].shape)
    heatmaps[k][r, c] = 1.0
    out = write_heatmap_nifti(heatmaps, series, tmp_path / f"heat{suffix}")
    assert out == tmp_path / f"heat{suffix}"
    back = nib.load(out)
    volume = np.asarray(back.dataobj)
    assert volume.dtype == np.float32 and volume.shape == shape
    assert np.unravel_index(int(np.argmax(volume)), shape) == voxel and float(volume.sum()) == 1.0
    np.testing.assert_allclose(back.affine, aff, atol=1e-4)
    assert back.header.get_sform(coded=True)[1] == 1 and back.header.get_qform(coded=True)[1] == 1
    assert (out.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_heatmap_of_dicom_series_overlays_the_scan_in_world_space(
    dicom_series: Series, tmp_path: Path
) -> None:
    k, r, c = 5, 20, 41
    heatmaps = [np.zeros(ct.shape, np.float32) for ct in dicom_series.slices]
    heatmaps[k][r, c] = 1.0
    back = nib.load(write_heatmap_nifti(heatmaps, dicom_series, tmp_path / "heat.nii.gz"))
    volume = np.asarray(back.dataobj)
    hot = np.unravel_index(int(np.argmax(volume)), volume.shape)
    world = (back.affine @ [*hot, 1.0])[:3]
    meta = dicom_series.slices[k].meta
    iop = np.asarray(meta["ImageOrientationPatient"], dtype=float)
    row_mm, col_mm = (float(v) for v in meta["PixelSpacing"])
    lps = np.asarray(meta["ImagePositionPatient"], dtype=float) + c * col_mm * iop[:3] + r * row_mm * iop[3:]
    np.testing.assert_allclose(world, RAS_FROM_LPS @ lps, atol=1e-3)


def test_dicom_grid_and_nifti_grid_of_the_same_scan_agree(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    from_nifti = read_nifti_series(_nifti_bytes(*_layout(hu, affine, "RAS")))
    a, b = grid_from_series(dicom_series), grid_from_series(from_nifti)
    assert isinstance(a, NiftiGrid) and a.reading_shape == b.reading_shape == (SIZE, SIZE, N_SLICES)
    np.testing.assert_allclose(a.reading_affine, b.reading_affine, atol=1e-3)


def test_heatmap_errors_write_nothing(dicom_series: Series, tmp_path: Path) -> None:
    good = [np.zeros(ct.shape, np.float32) for ct in dicom_series.slices]
    cases = [
        (good[:-1], "heat.nii.gz", "8 slices"),
        ([np.zeros((10, 10))] * N_SLICES, "heat.nii.gz", "own pixel grid"),
        ([np.full(ct.shape, np.nan) for ct in dicom_series.slices], "heat.nii.gz", "NaN"),
        (good, "heat.png", r"\.nii or \.nii\.gz"),
        (good, "missing/heat.nii.gz", "does not exist"),
    ]
    for heatmaps, name, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            write_heatmap_nifti(heatmaps, dicom_series, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_heatmap_needs_slice_geometry(tmp_path: Path) -> None:
    from brain_ct.io import CTImage

    flat = CTImage(
        hu=None,
        display=np.zeros((64, 64), np.uint8),
        meta={},
        head_box=(0, 0, 64, 64),
        source="image",
        name="a",
    )
    with pytest.raises(InvalidInputError, match="PNG/JPG"):
        write_heatmap_nifti([np.zeros((64, 64))], Series([flat], ["a.png"], [None]), tmp_path / "h.nii")
    assert list(tmp_path.iterdir()) == []


def test_heatmap_volume_inverts_reading_order(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    data, aff = _layout(hu, affine, "SLA")
    series = read_nifti_series(_nifti_bytes(data, aff))
    # Heatmaps equal to the slices' own HU must come back as the source array itself.
    np.testing.assert_array_equal(heatmap_volume([ct.hu for ct in series.slices], series.grid), data)


# --------------------------------------------------------------------------- masks


def test_mask_lies_over_its_slices(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    data, aff = _layout(hu, affine, "LAI")
    mask = np.zeros(data.shape, np.uint8)
    mask[30, 22, 6] = 3
    series = read_nifti_series(_nifti_bytes(data, aff))
    labels = read_nifti_mask(_nifti_bytes(mask, aff, gz=True), series.grid)
    assert labels.shape == (N_SLICES, SIZE, SIZE) and labels.dtype == np.int32
    k, r, c = (int(v) for v in np.argwhere(labels)[0])
    assert labels[k, r, c] == 3 and int(labels.sum()) == 3
    # The labelled voxel carries the same HU in the slice as in the source array.
    assert series.slices[k].hu[r, c] == data[30, 22, 6]


def test_mask_on_another_grid_is_refused(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    series = read_nifti_series(_nifti_bytes(hu, affine))
    with pytest.raises(InvalidInputError, match="shape"):
        read_nifti_mask(_nifti_bytes(np.zeros((SIZE, SIZE, 4), np.uint8), affine), series.grid)
    shifted = affine.copy()
    shifted[:3, 3] += 5.0
    with pytest.raises(InvalidInputError, match="affine differs"):
        read_nifti_mask(_nifti_bytes(np.zeros(hu.shape, np.uint8), shifted), series.grid)


# --------------------------------------------------------------------------- bad files


@pytest.fixture(scope="module")
def good_bytes(dicom_series: Series) -> bytes:
    hu, affine = _reading(dicom_series)
    return _nifti_bytes(hu, affine, dtype=np.int16)


def _with_header(raw: bytes, fmt: str, offset: int, *values: float) -> bytes:
    out = bytearray(raw)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def test_truncated_gzip_is_refused(good_bytes: bytes) -> None:
    packed = gzip.compress(good_bytes)
    for cut in (len(packed) // 2, 200, 30):
        with pytest.raises(InvalidInputError, match="truncated"):
            read_nifti_series(packed[:cut], name="scan.nii.gz")


def test_corrupt_gzip_is_refused(good_bytes: bytes) -> None:
    packed = bytearray(gzip.compress(good_bytes))
    packed[len(packed) // 2 : len(packed) // 2 + 64] = bytes(64)
    with pytest.raises(InvalidInputError, match="gzip stream is truncated or corrupt"):
        read_nifti_series(bytes(packed))


def test_truncated_uncompressed_file_is_refused(good_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "scan.nii"
    path.write_bytes(good_bytes[: len(good_bytes) - 1000])
    with pytest.raises(InvalidInputError, match=r"scan\.nii: the file is truncated"):
        read_nifti_series(path)


@pytest.mark.parametrize(
    ("fmt", "offset", "values", "message"),
    [
        ("<h", 40, (9,), r"declares 9 dimensions \(dim\[0\]\)"),
        ("<h", 40, (1,), "declares 1 dimensions"),
        ("<h", 42, (-64,), "at least 1"),
        ("<hh", 40, (4, 64), "4th dimension"),  # dim[4] = 64 would be 64 volumes
        ("<h", 70, (999,), "data type code 999"),
        ("<h", 70, (32,), "not supported"),  # complex64
        ("<h", 70, (128,), "colour"),  # RGB24
        ("<f", 108, (100.0,), "inside the header"),  # vox_offset 100 < 348
    ],
)
def test_bad_header_is_refused(good_bytes: bytes, fmt: str, offset: int, values: tuple, message: str) -> None:
    raw = _with_header(good_bytes, fmt, offset, *values)
    if values == (4, 64):
        raw = _with_header(raw, "<h", 48, 64)
    with pytest.raises(InvalidInputError, match=message):
        read_nifti_series(raw)


def test_four_d_and_multichannel_volumes_are_refused(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    with pytest.raises(InvalidInputError, match=r"2 volumes along its 4th dimension"):
        read_nifti_series(_nifti_bytes(np.stack([hu, hu], axis=-1), affine))
    with pytest.raises(InvalidInputError, match="3 values per voxel"):
        read_nifti_series(_nifti_bytes(np.stack([hu] * 3, axis=-1)[:, :, :, None, :], affine))


def test_huge_header_claim_is_refused_before_reading(good_bytes: bytes) -> None:
    # 2048 x 2048 x 256 int16 = 2 GiB announced in a file of a few kilobytes.
    raw = _with_header(good_bytes, "<hhh", 42, 2048, 2048, 256)
    assert limits.current().max_volume_bytes < 2048 * 2048 * 256 * 2
    with pytest.raises(
        InvalidInputError, match=r"2048 x 2048 x 256 voxels of int16 \(2,048 MiB\).*before reading"
    ):
        read_nifti_series(gzip.compress(raw))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused(dicom_series: Series, bad: float) -> None:
    hu, affine = _reading(dicom_series)
    hu = hu.copy()
    hu[3, 4, 5] = bad
    with pytest.raises(InvalidInputError, match="1 voxel.* NaN or infinite"):
        read_nifti_series(_nifti_bytes(hu, affine, dtype=np.float32))


@pytest.mark.parametrize(("slope", "inter"), [(np.inf, 0.0), (-np.inf, 0.0), (1.0, np.nan), (2.0, np.inf)])
def test_non_finite_scaling_is_refused(good_bytes: bytes, slope: float, inter: float) -> None:
    with pytest.raises(InvalidInputError, match=r"scaling \(scl_slope .*\) is infinite or NaN"):
        read_nifti_series(_with_header(good_bytes, "<ff", 112, slope, inter))


def test_zero_or_nan_slope_means_no_scaling(dicom_series: Series, good_bytes: bytes) -> None:
    # good_bytes stores the HU themselves (int16); a slope of 0 or NaN must leave them unscaled.
    for slope in (0.0, np.nan):
        series = read_nifti_series(_with_header(good_bytes, "<ff", 112, slope, -1024.0))
        _assert_same_scan(series, dicom_series)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x89PNG\r\n\x1a\n" + bytes(600),
        b"this is a text file, not a scan\n" * 40,
        gzip.compress(b"plain text inside a gzip\n" * 40),
        b"ab",
    ],
)
def test_non_nifti_bytes_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInputError, match="not a NIfTI|does not hold a NIfTI"):
        read_nifti_series(raw)
    assert not is_nifti(raw)


def test_hdr_img_pair_and_empty_and_missing_files(good_bytes: bytes, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"\.hdr/\.img pair"):
        read_nifti_series(good_bytes[:344] + b"ni1\x00" + good_bytes[348:])
    with pytest.raises(InvalidInputError, match="empty"):
        read_nifti_series(b"")
    with pytest.raises(InvalidInputError, match="no such file"):
        read_nifti_series(tmp_path / "nothing.nii.gz")
    with pytest.raises(InvalidInputError, match="is a directory"):
        read_nifti_series(tmp_path)
    with pytest.raises(InvalidInputError, match="cannot read a int"):
        read_nifti_series(3)  # type: ignore[arg-type]


def test_mri_like_values_are_refused(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    mri = np.clip(hu + 1000.0, 0, None) * 2.0  # 0..~4000, no air below zero
    with pytest.raises(InvalidInputError, match=r"do not look like a CT in Hounsfield units.*no air") as info:
        read_nifti_series(_nifti_bytes(mri, affine, dtype=np.float32))
    assert "scl_inter" not in str(info.value)  # no rescale would make it a CT
    # A CT stored without its rescale (air at 0) gets the hint how to fix it.
    with pytest.raises(InvalidInputError, match="set scl_inter to -1024"):
        read_nifti_series(_nifti_bytes(np.clip(hu + 1024.0, 0, None), affine, dtype=np.int16))


@pytest.mark.parametrize(
    ("values", "ok"),
    [
        (np.r_[np.full(90, -1000.0), np.full(10, 35.0)], True),
        (np.r_[np.full(99, -1000.0), np.full(1, 35.0)], True),
        (np.r_[np.full(100, 35.0)], False),  # no air
        (np.r_[np.full(50, -1000.0), np.full(50, 900.0)], False),  # no soft tissue
        (np.linspace(0.0, 1.0, 100), False),  # a normalised array
    ],
)
def test_check_ct_like_table(values: np.ndarray, ok: bool) -> None:
    if ok:
        check_ct_like(values)
    else:
        with pytest.raises(InvalidInputError, match="Hounsfield"):
            check_ct_like(values)


def test_is_nifti(good_bytes: bytes, tmp_path: Path, dicom_series: Series) -> None:
    assert is_nifti(good_bytes) and is_nifti(gzip.compress(good_bytes))
    assert is_nifti("anything.nii") and is_nifti(Path("x/scan.NII.GZ"))
    unnamed = tmp_path / "download"
    unnamed.write_bytes(gzip.compress(good_bytes))
    assert is_nifti(unnamed)
    dicom = io.BytesIO()
    to_dicom(generate_series(1, n_slices=1, size=SIZE)[0]).save_as(dicom, enforce_file_format=True)
    assert not is_nifti(dicom.getvalue()) and not is_nifti(tmp_path / "missing")
    # NIfTI-2 reads too.
    hu, affine = _reading(dicom_series)
    two = nib.Nifti2Image(hu.astype(np.int16), affine).to_bytes()
    assert is_nifti(two)
    series = read_nifti_series(two)
    assert series.slices[0].meta["Format"] == "NIfTI-2"
    _assert_same_scan(series, dicom_series)


def test_big_endian_file_reads_the_same(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    header = nib.Nifti1Header(endianness=">")
    raw = nib.Nifti1Image(hu.astype(np.int16), affine, header=header).to_bytes()
    assert raw[:4] == (348).to_bytes(4, "big")
    _assert_same_scan(read_nifti_series(raw), dicom_series)


def test_file_over_the_size_limit_is_refused(good_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("brain_ct.source.MAX_FILE_BYTES", len(good_bytes) - 1)
    with pytest.raises(InvalidInputError, match="above the .* limit"):
        read_nifti_series(good_bytes)


def test_only_the_declared_bytes_are_inflated(good_bytes: bytes, dicom_series: Series) -> None:
    # 64 MiB of zeros after the voxels (a gzip bomb's payload): never inflated, the scan reads.
    packed = gzip.compress(good_bytes + bytes(64 << 20), compresslevel=1)
    assert len(packed) < 1 << 20
    _assert_same_scan(read_nifti_series(packed), dicom_series)


def test_slices_smaller_than_the_minimum_are_refused(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    with pytest.raises(InvalidInputError, match=r"32 x 32 pixels; accepted: 64"):
        read_nifti_series(_nifti_bytes(hu[::2, ::2], affine @ np.diag([2.0, 2.0, 1.0, 1.0])))


def test_model_reads_a_nifti_scan_and_its_heatmaps_go_back_to_the_grid(
    dicom_series: Series, tmp_path: Path
) -> None:
    from helpers_models import make_tiny_model

    from brain_ct.predictor import Predictor
    from brain_ct.scan import predict_series

    hu, affine = _reading(dicom_series)
    data, aff = _layout(hu, affine, "RAS")
    series = read_nifti_series(_nifti_bytes(data, aff))
    predictor = Predictor.from_pretrained(make_tiny_model(tmp_path / "tiny"))
    from_nifti = predict_series(predictor, series)
    from_dicom = predict_series(predictor, dicom_series)
    np.testing.assert_allclose(from_nifti.probabilities, from_dicom.probabilities, atol=1e-6)
    heatmaps = [p.heatmap for p in from_nifti.predictions]
    back = nib.load(write_heatmap_nifti(heatmaps, series, tmp_path / "heat.nii.gz"))
    volume = np.asarray(back.dataobj)
    assert volume.shape == data.shape and float(volume.max()) > 0
    # RAS storage → reading layout is "flip i and j, swap them": each heatmap sits on its slice's voxels.
    np.testing.assert_allclose(
        volume[::-1, ::-1, :].transpose(1, 0, 2), np.stack(heatmaps, axis=-1), atol=1e-6
    )


# --------------------------------------------------------------------------- streamed inflating (issue 26)


def _bomb_header(shape: tuple[int, ...], dtype: type) -> bytes:
    """A NIfTI-1 header declaring ``shape`` of ``dtype`` and no voxels after it."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(np.diag([0.5, 0.5, 1.0, 1.0]), code=1)
    return header.binaryblock + b"\0" * 4


@pytest.mark.parametrize(
    ("shape", "dtype", "declared"),
    [
        ((512, 512, 512), np.float64, r"512 x 512 x 512 voxels of float64 \(1,024 MiB\)"),  # 1 GiB
        ((512, 512, 640), np.uint8, r"512 x 512 x 640 voxels of uint8 \(160 MiB\)"),  # 167 M voxels
        ((512, 512, 401), np.int16, r"512 x 512 x 401 voxels of int16"),  # one slice above the cap
        ((512, 512, 300), np.float64, r"512 x 512 x 300 voxels of float64 \(600 MiB\)"),  # bytes cap
    ],
)
def test_bomb_headers_are_refused_in_the_users_terms(shape: tuple, dtype: type, declared: str) -> None:
    packed = gzip.compress(_bomb_header(shape, dtype))
    message = declared + r".*up to 128 slices of 512 x 512 \(33,554,432 voxels\) and 256 MiB.*before reading"
    with pytest.raises(InvalidInputError, match=message):
        read_nifti_series(packed, name="bomb.nii.gz")
    with pytest.raises(InvalidInputError, match=message):
        nifti_info(packed, name="bomb.nii.gz")


def test_volume_caps_are_the_upload_budget() -> None:
    # the public default: a volume as large as a DICOM scan may be, in any voxel type up to float64
    default = limits.UploadLimits()
    assert default.max_voxels == default.max_scan_pixels == 128 * 512 * 512
    assert default.max_volume_bytes == 128 * 512 * 512 * 8
    # written heatmap grids may hold a resampled thin-section scan
    assert 512 * 512 * 400 <= MAX_VOXELS < 512 * 512 * 401


def test_raised_limits_read_a_larger_volume(dicom_series: Series) -> None:
    hu, affine = _reading(dicom_series)
    raw = _nifti_bytes(hu, affine)
    tight = limits.UploadLimits(max_voxels=hu.size - 1)
    with limits.using(tight), pytest.raises(InvalidInputError, match="--max-slices"):
        read_nifti_series(raw)
    with limits.using(tight.with_slices(hu.shape[-1])):
        assert len(read_nifti_series(raw).slices) == hu.shape[-1]


def test_inflating_stops_at_what_is_asked() -> None:
    # 256 MiB of zeros compress to ~1 MB: only the bytes asked for are ever inflated.
    packed = gzip.compress(bytes(256 << 20), compresslevel=1)
    stream = _Inflow(packed, "x.nii.gz")
    assert stream.read(540) == bytes(540)
    assert stream.produced == 540 and not stream.ended
    assert stream.skip(10 << 20) == 10 << 20
    assert stream.produced == 540 + (10 << 20) and not stream.ended


def test_listing_reads_only_the_header(good_bytes: bytes) -> None:
    # The voxels are cut off: a listing (header only) still describes the volume, a reading refuses it.
    cut = gzip.compress(good_bytes[:400])
    info = nifti_info(cut, name="scan.nii.gz")
    assert info.n_slices == N_SLICES and info.orientation == "axial"
    with pytest.raises(InvalidInputError, match="truncated"):
        read_nifti_series(cut, name="scan.nii.gz")


def test_concatenated_gzip_members_and_padding_read_as_gzip_does(
    good_bytes: bytes, dicom_series: Series
) -> None:
    half = len(good_bytes) // 2
    members = gzip.compress(good_bytes[:half]) + gzip.compress(good_bytes[half:]) + bytes(100)
    assert gzip.GzipFile(fileobj=io.BytesIO(members)).read() == good_bytes
    _assert_same_scan(read_nifti_series(members), dicom_series)
    with pytest.raises(InvalidInputError, match="gzip stream is truncated or corrupt"):
        read_nifti_series(gzip.compress(good_bytes) + b"junk after the stream")


def test_huge_extension_gap_is_refused(good_bytes: bytes) -> None:
    raw = _with_header(good_bytes, "<f", 108, float(MAX_EXTENSION_BYTES + 352 + 16))
    with pytest.raises(InvalidInputError, match="header extensions"):
        read_nifti_series(gzip.compress(raw))


@pytest.mark.parametrize(
    ("dtype", "slope", "inter", "order"),
    [
        (np.int16, None, None, "<"),
        (np.int16, 0.5, -1024.0, ">"),
        (np.uint8, 16.0, -1100.0, "<"),
        (np.int32, 1.0, -1024.0, "<"),
        (np.float64, None, None, ">"),
        (np.float32, 1.5, 3.0, "<"),
    ],
)
def test_voxels_are_exactly_nibabels(
    dicom_series: Series, dtype: type, slope: float | None, inter: float | None, order: str
) -> None:
    hu, affine = _reading(dicom_series)
    stored = hu if slope is None else (hu - inter) / slope
    stored = np.clip(stored, *((0, 255) if dtype is np.uint8 else (-3e4, 3e4)))
    image = nib.Nifti1Image(stored.astype(dtype), affine, header=nib.Nifti1Header(endianness=order))
    if slope is not None:
        image.header.set_slope_inter(slope, inter)
    raw = image.to_bytes()
    expected = nib.Nifti1Image.from_bytes(raw).get_fdata(dtype=np.float32)
    series = read_nifti_series(gzip.compress(raw), allow_unverified=True)
    got = np.stack([ct.hu for ct in series.slices], axis=-1)
    assert series.grid is not None
    np.testing.assert_array_equal(series.grid.to_source(got), expected)


# --------------------------------------------------------------------------- tilted and unevenly spaced series (issue 27)

GE_TILTED = Path(__file__).resolve().parents[1] / "data" / "real_anatomy" / "dcm_qa_ct-GE"


def _geometry_series(ipp: np.ndarray, iop: list[float], pixel_mm: float, size: int) -> Series:
    """A series of blank slices with the given DICOM geometry (only geometry matters for a grid)."""
    slices = []
    for k, position in enumerate(ipp):
        meta = {
            "ImagePositionPatient": [float(v) for v in position],
            "ImageOrientationPatient": iop,
            "PixelSpacing": [pixel_mm, pixel_mm],
        }
        display = np.zeros((size, size), np.uint8)
        slices.append(CTImage(None, display, meta, (0, 0, size, size), "dicom", f"IM{k}"))
    return Series(slices=slices, files=[ct.name for ct in slices], positions=[None] * len(slices))


def _world_heatmaps(series: Series, field: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """Per slice, ``field`` (of LPS mm points ``[..., 3]``) at each pixel centre."""
    out = []
    for ct in series.slices:
        meta = ct.meta
        ipp = np.asarray(meta["ImagePositionPatient"], float)
        iop = np.asarray(meta["ImageOrientationPatient"], float)
        row_mm, col_mm = (float(v) for v in meta["PixelSpacing"])
        r, c = np.mgrid[: ct.shape[0], : ct.shape[1]]
        points = ipp + c[..., None] * col_mm * iop[:3] + r[..., None] * row_mm * iop[3:]
        out.append(field(points).astype(np.float32))
    return out


def _volume_world(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A written volume and the LPS mm position of each of its voxels (``[..., 3]``)."""
    image = nib.load(path)
    volume = np.asarray(image.dataobj)
    index = np.stack(np.indices(volume.shape), axis=-1).astype(float)
    ras = index @ image.affine[:3, :3].T + image.affine[:3, 3]
    return volume, ras @ RAS_FROM_LPS.T


def _tilted_series(tilt_deg: float, gaps: list[float], size: int = 48, pixel_mm: float = 2.0) -> Series:
    """Slices tilted about the patient's left-right axis, stepping along the table (z) as a gantry does."""
    t = np.radians(tilt_deg)
    iop = [1.0, 0.0, 0.0, 0.0, float(np.cos(t)), float(-np.sin(t))]
    z = np.concatenate([[0.0], np.cumsum(gaps)]) / np.cos(t)  # gaps along the normal
    ipp = np.stack([np.full_like(z, -48.0), np.full_like(z, -40.0), z - 20.0], axis=1)
    return _geometry_series(ipp, iop, pixel_mm, size)


@pytest.mark.parametrize(
    ("tilt", "gaps"),
    [(18.5, [4.0] * 10), (0.0, [4.0] * 4 + [1.0] + [7.0] * 4), (18.5, [4.0] * 5 + [1.2] + [7.0] * 4)],
)
def test_tilted_or_uneven_series_is_resampled_like_dcm2niix(
    tmp_path: Path, tilt: float, gaps: list[float]
) -> None:
    series = _tilted_series(tilt, gaps)
    grid = grid_from_series(series)
    assert grid.resampling is not None and grid.note is not None
    assert ("gantry tilt of 18.5°" in grid.note) == (tilt > 0)
    assert ("resampled to" in grid.note) == (len(set(gaps)) > 1)
    assert grid.zooms[2] == pytest.approx(4.0)
    # The grid is orthogonal (no shear left for a viewer to ignore), its slices along the normal.
    axes = grid.affine[:3, :3] / np.linalg.norm(grid.affine[:3, :3], axis=0)
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-9)
    # A linear function of patient space is reproduced exactly by bilinear + linear interpolation.
    coeffs = np.array([0.3, -0.7, 1.1])
    heat = _world_heatmaps(series, lambda p: p @ coeffs)
    volume, world = _volume_world(write_heatmap_nifti(heat, series, tmp_path / "heat.nii.gz"))
    assert volume.shape == grid.shape
    expected = world @ coeffs
    # Voxels whose every contributing pixel lies in a moved slice's field of view: where ones stay one.
    ones = [np.ones(h.shape, np.float32) for h in heat]
    coverage, _ = _volume_world(write_heatmap_nifti(ones, series, tmp_path / "ones.nii.gz"))
    interior = np.abs(coverage - 1.0) < 1e-5
    assert interior.sum() > 0.8 * volume.size
    np.testing.assert_allclose(volume[interior], expected[interior], atol=2e-3)


def test_heatmap_blob_of_a_tilted_series_lands_where_it_was(tmp_path: Path) -> None:
    series = _tilted_series(18.5, [4.0] * 6 + [7.0] * 6)
    centre = np.array([0.0, 10.0, 20.0])  # LPS mm: in the 7 mm part of the stack, far from the first slice
    heat = _world_heatmaps(series, lambda p: np.exp(-np.sum((p - centre) ** 2, axis=-1) / (2 * 5.0**2)))
    volume, world = _volume_world(write_heatmap_nifti(heat, series, tmp_path / "heat.nii"))
    along, across = _miss(volume, world, centre, grid_from_series(series))
    # In the slice plane within half a pixel (2 mm): without the tilt correction the blob would sit
    # some 50 mm x tan(18.5°) = 17 mm off. Along the normal within half the 7 mm source gap.
    assert across < 1.0 and along < 3.6


def test_real_ge_series_with_gantry_tilt_gets_its_heatmap_volume(tmp_path: Path) -> None:
    series = read_series(GE_TILTED, allow_unverified=True)
    grid = grid_from_series(series)
    assert grid.note is not None and "gantry tilt of 18.5°" in grid.note and "resampled" in grid.note
    assert grid.shape == (512, 512, 37) and grid.zooms[2] == pytest.approx(4.0, abs=0.01)
    centre = np.array([0.0, 20.0, 60.0])  # LPS mm: inside the head, in the 7 mm part of the scan
    heat = _world_heatmaps(series, lambda p: np.exp(-np.sum((p - centre) ** 2, axis=-1) / (2 * 8.0**2)))
    volume, world = _volume_world(write_heatmap_nifti(heat, series, tmp_path / "ge.nii.gz"))
    along, across = _miss(volume, world, centre, grid)
    assert across < 0.5 and along < 3.6  # half a 0.49 mm pixel; half the 7 mm source gap


def _miss(volume: np.ndarray, world: np.ndarray, centre: np.ndarray, grid: NiftiGrid) -> tuple[float, float]:
    """How far the hottest voxel lies from ``centre`` (LPS mm): along the grid's slice normal, and across it."""
    normal = RAS_FROM_LPS @ grid.affine[:3, 2]
    normal /= np.linalg.norm(normal)
    miss = world[np.unravel_index(int(np.argmax(volume)), volume.shape)] - centre
    along = float(abs(miss @ normal))
    return along, float(np.linalg.norm(miss - (miss @ normal) * normal))


def test_slices_at_one_position_give_a_reason() -> None:
    ipp = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 0.0, 5.0], [0.0, 0.0, 10.0]])
    series = _geometry_series(ipp, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 1.0, 32)
    with pytest.raises(InvalidInputError, match="same position along the slice normal"):
        grid_from_series(series)


def test_even_untilted_series_keeps_its_own_slices(dicom_series: Series) -> None:
    grid = grid_from_series(dicom_series)
    assert grid.resampling is None and grid.note is None and grid.shape[2] == N_SLICES
