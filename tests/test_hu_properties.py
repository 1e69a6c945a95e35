"""Property-based tests (hypothesis) of the whole HU pipeline: stored values → HU → window.

Each example writes a real DICOM file in memory (random bit depth, signedness, slope, intercept,
MONOCHROME1/2, padding) and reads it back through :func:`brain_ct.io.load_image`; the expected HU
are computed here independently, with the formulas of PS3.3 C.11.1 (rescale), C.7.6.3.1.2
(MONOCHROME1) and C.7.5.1.1.2 (pixel padding), and the RSNA 2019 12-bit fix as documented in
:mod:`brain_ct.io`.
"""

from __future__ import annotations

import numpy as np
from helpers_dicom import ct_dataset, dicom_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brain_ct.io import load_image
from brain_ct.windowing import PRESETS, window

SIDE = 64  # the smallest image load_image accepts


def _stored(seed: int, bits: int, signed: bool) -> np.ndarray:
    """Random stored values covering the whole range Bits Stored allows, in a 16-bit container."""
    rng = np.random.default_rng(seed)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    values = rng.integers(low, high, size=(SIDE, SIDE), endpoint=True)
    values.flat[:2] = (low, high)  # the extremes always occur
    return values.astype(np.int16 if signed else np.uint16)


def _dicom(stored: np.ndarray, bits: int, slope: str, intercept: str, photometric: str, **tags) -> bytes:
    ds = ct_dataset(
        stored,
        BitsStored=bits,
        HighBit=bits - 1,
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        PhotometricInterpretation=photometric,
        PixelSpacing=None,
        **tags,
    )
    return dicom_bytes(ds)


def _expected_hu(
    stored: np.ndarray, bits: int, slope: float, intercept: float, photometric: str, padding: int | None
) -> np.ndarray:
    """HU computed independently of brain_ct.io, in float64."""
    s = stored.astype(np.float64)
    signed = stored.dtype.kind == "i"
    pad = (stored == padding) if padding is not None else np.zeros(stored.shape, bool)
    if bits == 12 and not signed and intercept > -100:
        # RSNA 2019 fix: stored + 1000 wrapped modulo 4096, intercept -1000.
        s = np.mod(s + 1000, 4096)
        intercept = -1000.0
    if photometric == "MONOCHROME1":
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        s = (low + high) - s
    hu = s * slope + intercept
    hu[pad] = -1000.0
    return hu


def _ds(value: float) -> str:
    """A decimal string (VR DS, at most 16 characters) and the exact float it stands for."""
    return f"{value:.6g}"


pipelines = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**32 - 1),
        "bits": st.sampled_from([8, 10, 12, 16]),
        "signed": st.booleans(),
        "slope": st.sampled_from([1.0, 0.5, 2.0, 0.25]) | st.floats(0.01, 10.0),
        "intercept": st.sampled_from([-1024.0, -1000.0, 0.0, -50.0]) | st.floats(-4000.0, 1000.0),
        "photometric": st.sampled_from(["MONOCHROME2", "MONOCHROME1"]),
        "use_padding": st.booleans(),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=pipelines)
def test_stored_to_hu_matches_the_rescale_formula(p: dict) -> None:
    stored = _stored(p["seed"], p["bits"], p["signed"])
    slope_text, intercept_text = _ds(p["slope"]), _ds(p["intercept"])
    slope, intercept = float(slope_text), float(intercept_text)
    padding = int(stored.flat[5]) if p["use_padding"] else None
    tags = {"PixelPaddingValue": padding} if padding is not None else {}
    data = _dicom(stored, p["bits"], slope_text, intercept_text, p["photometric"], **tags)
    ct = load_image(data, allow_unverified=True)
    expected = _expected_hu(stored, p["bits"], slope, intercept, p["photometric"], padding)
    assert ct.hu is not None and ct.hu.dtype == np.float32 and ct.hu.shape == stored.shape
    # float32 output: relative error of one float32 rounding of values up to ~3e5 HU
    np.testing.assert_allclose(ct.hu, expected, rtol=1e-6, atol=1e-3)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=pipelines, center=st.floats(-1000, 2000), width=st.floats(1, 4000))
def test_windowed_hu_is_finite_in_unit_range_and_monotone_in_stored_value(
    p: dict, center: float, width: float
) -> None:
    stored = _stored(p["seed"], p["bits"], p["signed"])
    data = _dicom(stored, p["bits"], _ds(p["slope"]), _ds(p["intercept"]), p["photometric"])
    ct = load_image(data, allow_unverified=True)
    out = window(ct.hu, center, width)
    assert np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    # Dense is bright: for MONOCHROME2 without the RSNA wrap, a larger stored value never gives a
    # darker pixel; for MONOCHROME1 a larger stored value never gives a brighter one.
    wraps = p["bits"] == 12 and not p["signed"] and float(_ds(p["intercept"])) > -100
    if not wraps:
        order = np.argsort(stored, axis=None, kind="stable")
        ranked = out.ravel()[order]
        steps = np.diff(ranked)
        if p["photometric"] == "MONOCHROME2":
            assert (steps >= 0).all()
        else:
            assert (steps <= 0).all()
    # The display image is the brain window of the same HU, rounded to 8 bits.
    brain = np.floor(window(ct.hu, *PRESETS["brain"]) * 255.0 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(ct.display, brain)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    bits=st.sampled_from([12, 16]),
    slope=st.sampled_from([1.0, 0.5, 2.0]),
    intercept=st.floats(-2000, -100),
)
def test_monochrome1_is_the_mirror_of_monochrome2(
    seed: int, bits: int, slope: float, intercept: float
) -> None:
    stored = _stored(seed, bits, signed=True)
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    mirrored = ((low + high) - stored.astype(np.int32)).astype(np.int16)
    m1 = load_image(_dicom(stored, bits, _ds(slope), _ds(intercept), "MONOCHROME1"), allow_unverified=True)
    m2 = load_image(_dicom(mirrored, bits, _ds(slope), _ds(intercept), "MONOCHROME2"), allow_unverified=True)
    np.testing.assert_array_equal(m1.hu, m2.hu)
