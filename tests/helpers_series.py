"""Shared helpers of the series, collect and scan tests: DICOM slices and zips built in memory, a fake predictor."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from conftest import draw_head_hu
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid

from brain_ct.predictor import Prediction


def hu_to_stored(hu: np.ndarray) -> np.ndarray:
    return np.clip(np.round(hu + 1024.0), -32768, 32767).astype(np.int16)


def slice_ds(
    make_ct_dataset, hu: np.ndarray, *, uid: str, z: float | None, instance: int | None, **tags
) -> Dataset:
    extra: dict[str, Any] = {
        "SeriesInstanceUID": uid,
        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "PatientName": "DOE^JANE",
        "PatientID": "PID-778899",
    }
    if z is not None:
        extra["ImagePositionPatient"] = [-100.0, -100.0, float(z)]
    if instance is not None:
        extra["InstanceNumber"] = instance
    extra.update(tags)
    return make_ct_dataset(hu_to_stored(hu), **extra)


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def zip_bytes(
    entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def head_series(
    make_ct_dataset, n: int, *, uid: str | None = None, size: int = 96, **tags
) -> list[tuple[float, Dataset]]:
    """n slices of the drawn head phantom, z = 5 mm × index; each slice differs (a bright dot row)."""
    uid = uid or generate_uid()
    out = []
    for i in range(n):
        hu = draw_head_hu(size)
        hu[size // 2, size // 2 - 10 + i] = 80.0  # marks the slice, so order can be checked from pixels
        out.append((5.0 * i, slice_ds(make_ct_dataset, hu, uid=uid, z=5.0 * i, instance=i + 1, **tags)))
    return out


def marker(ct) -> int:
    """The index written into a slice by :func:`head_series`."""
    size = ct.hu.shape[0]
    row = ct.hu[size // 2, size // 2 - 10 : size // 2 + 22]
    return int(np.argmax(row >= 79.0))


def snapshot(*dirs: Path) -> set[str]:
    out = set()
    for d in dirs:
        for root, subdirs, files in os.walk(d):
            out.update(os.path.join(root, f) for f in files + subdirs)
    return out


class FakePredictor:
    """Returns probabilities chosen per file name, as real :class:`Prediction` objects.

    It records what predict_batch received so the tests check batching, TTA and context.
    """

    def __init__(self, probs: dict[str, float], threshold: float = 0.5, context_slices: int = 0):
        self.probs = probs
        self.settings = type(
            "S",
            (),
            dict(
                threshold=threshold,
                context_slices=context_slices,
                model_id="fake",
                revision=None,
                is_demo=True,
                trained_on="synthetic phantoms",
            ),
        )()
        self.calls: list[dict[str, Any]] = []

    def predict_batch(self, images, batch_size=16, *, allow_unverified=False, tta=False, neighbors=None):
        self.calls.append(dict(n=len(images), batch_size=batch_size, tta=tta, neighbors=neighbors))
        out = []
        for ct in images:
            p = self.probs[ct.name]
            h, w = ct.display.shape
            heat = np.zeros((h, w), np.float32)
            regions = []
            if p >= 0.5:
                heat[h // 4 : h // 2, w // 4 : w // 2] = 1.0
                regions = [
                    dict(
                        bbox=[w // 4, h // 4, w // 2, h // 2],
                        side="right",
                        region="frontal",
                        score=np.float32(0.9),
                    )
                ]
            out.append(
                Prediction(
                    label="hemorrhage" if p >= self.settings.threshold else "normal",
                    probability=p,
                    threshold=self.settings.threshold,
                    heatmap=heat,
                    regions=regions,
                    explanation=f"fake explanation p={p:.2f}",
                    name=ct.name,
                    model_id="fake",
                    display=ct.display,
                )
            )
        return out
