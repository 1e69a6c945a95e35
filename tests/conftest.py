"""Shared fixtures: in-memory CT DICOMs, a drawn head phantom, encoded images, pydicom's CT files."""

from __future__ import annotations

import os
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from helpers_dicom import ct_dataset
from helpers_dicom import dicom_bytes as write_dicom_bytes
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from brain_ct.model import DEMO_MODEL_DIR, MODEL_ENV

# The suite reads with the small bundled demo (0.7 M parameters: fast), not the default ResNet-50; the
# tests of the default itself clear the variable (tests/test_default_model.py). Subprocesses inherit it.
os.environ[MODEL_ENV] = str(DEMO_MODEL_DIR)

#: pydicom's real CT slices with pixel data (axial head: 693_J2KI, J2K_pixelrep_mismatch; spine: CT_small).
PYDICOM_CT_FILES = ("CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm")


@pytest.fixture
def pydicom_ct_path() -> Callable[[str], str]:
    """Path of one of pydicom's bundled test files, by name (e.g. ``"693_J2KI.dcm"``)."""
    return lambda name: str(get_testdata_file(name))


@pytest.fixture
def make_ct_dataset() -> Callable[..., Dataset]:
    """Factory: a minimal CT ``Dataset`` around a 2-D integer pixel array.

    ``make_ct_dataset(pixels, **tags)``: ``pixels`` int16 (signed, PixelRepresentation 1) or
    uint16/uint8 (unsigned); defaults Modality CT, MONOCHROME2, slope 1, intercept -1024,
    PixelSpacing 0.5 mm, BitsStored = bits of the dtype. A keyword set to None removes that tag.
    """

    return ct_dataset


@pytest.fixture
def dicom_bytes() -> Callable[[Dataset], bytes]:
    """Factory: a dataset written as a DICOM file (preamble, file meta) into bytes."""

    return write_dicom_bytes


def draw_head_hu(size: int = 256, center: tuple[int, int] | None = None, scale: float = 1.0) -> np.ndarray:
    """A simple axial head phantom in HU: air, scalp, skull ring, brain, two ventricles.

    Args:
        size: side of the square image in pixels.
        center: (x, y) of the head; the image centre by default.
        scale: head size relative to 0.8 x ``size`` tall.

    Returns:
        float32 ``[size, size]`` in HU.
    """
    hu = np.full((size, size), -1000.0, np.float32)
    cx, cy = center if center is not None else (size // 2, size // 2)
    ax, ay = int(0.32 * size * scale), int(0.40 * size * scale)
    cv2.ellipse(hu, (cx, cy), (ax, ay), 0, 0, 360, 40.0, -1)  # scalp
    cv2.ellipse(hu, (cx, cy), (ax - 3, ay - 3), 0, 0, 360, 1200.0, -1)  # skull
    cv2.ellipse(hu, (cx, cy), (int(ax * 0.88), int(ay * 0.9)), 0, 0, 360, 35.0, -1)  # brain
    for dx in (-1, 1):
        cv2.ellipse(hu, (cx + dx * ax // 6, cy), (ax // 10, ay // 4), 0, 0, 360, 5.0, -1)  # ventricles
    return hu


def brain_window_uint8(hu: np.ndarray) -> np.ndarray:
    """HU → uint8 in the brain window (40/80)."""
    return (np.clip((hu - 0.0) / 80.0, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@pytest.fixture
def head_hu() -> Callable[..., np.ndarray]:
    """Factory :func:`draw_head_hu`."""
    return draw_head_hu


@pytest.fixture
def head_grey() -> Callable[..., np.ndarray]:
    """Factory: the head phantom as a brain-window uint8 image (what a PNG from the web holds)."""
    return lambda size=256, **kw: brain_window_uint8(draw_head_hu(size, **kw))


@pytest.fixture
def encode_image() -> Callable[..., bytes]:
    """Factory: ``encode_image(array, ext=".png", params=())`` → the encoded file's bytes (OpenCV)."""

    def encode(array: np.ndarray, ext: str = ".png", params: tuple[int, ...] = ()) -> bytes:
        ok, buffer = cv2.imencode(ext, array, list(params))
        if not ok:
            raise ValueError(f"OpenCV could not encode {ext}")
        return buffer.tobytes()

    return encode
