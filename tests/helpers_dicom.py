"""Minimal in-memory CT DICOMs for tests: one builder, used by fixtures and helpers alike."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_dataset(pixels: np.ndarray, **tags: Any) -> Dataset:
    """A minimal CT ``Dataset`` around a 2-D integer pixel array.

    ``pixels`` int16 (signed, PixelRepresentation 1) or uint16/uint8 (unsigned); defaults Modality CT,
    MONOCHROME2, slope 1, intercept -1024, PixelSpacing 0.5 mm, BitsStored = bits of the dtype.
    A keyword set to None removes that tag.
    """
    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim != 2:
        raise ValueError("pixels must be 2-D")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "-1024"
    ds.PixelSpacing = [0.5, 0.5]
    ds.PixelData = pixels.tobytes()
    for keyword, value in tags.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    """``ds`` written as a DICOM file (preamble, file meta) into bytes."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
