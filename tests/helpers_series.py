"""Shared helpers of the series, collect and scan tests: DICOM slices and zips built in memory, a fake predictor."""

from __future__ import annotations

import io
import os
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from conftest import draw_head_hu
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid

from brain_ct.explain import Region
from brain_ct.predictor import Prediction
from brain_ct.series import read_series


def hu_to_stored(hu: np.ndarray) -> np.ndarray:
    """HU as the int16 stored values of :func:`make_ct_dataset` (intercept -1024)."""
    return np.clip(np.round(hu + 1024.0), -32768, 32767).astype(np.int16)


def slice_ds(
    make_ct_dataset, hu: np.ndarray, *, uid: str, z: float | None, instance: int | None, **tags
) -> Dataset:
    """One CT slice of series ``uid`` at position z (mm) with a patient name and id to screen out."""
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
    """A dataset as a DICOM file (preamble and file meta) in bytes."""
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def zip_bytes(
    entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    """A zip of (name or ZipInfo, data) entries, in memory."""
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
    """Every file and folder under ``dirs``."""
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

    def predict_batch(
        self, images, batch_size=16, *, allow_unverified=False, tta=False, neighbors=None, heatmap_target=None
    ):
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
                    Region(
                        bbox=(w // 4, h // 4, w // 2, h // 2),
                        side="right",
                        region="frontal",
                        score=0.9,
                        peak=1.0,
                        area_px=(h // 4) * (w // 4),
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


def synthetic_zip(
    phantoms, path: Path, *, seed: int = 1, patient_name: str = "TESTCASE^ROBIN"
) -> dict[str, Any]:
    """Write phantoms (inferior → superior) as DICOMs into a zip under shuffled random names.

    Instance numbers run backwards on purpose (position must win). Returns {file name: phantom}.
    """
    from brain_ct.synthetic import to_dicom

    uid = generate_uid()
    rng = random.Random(seed)
    items = []
    for i, ph in enumerate(phantoms):
        ds = to_dicom(ph, series_uid=uid, instance_number=len(phantoms) - i, patient_name=patient_name)
        ds.ImagePositionPatient = [-64.0, -64.0, -40.0 + 5.0 * i]
        items.append((f"IM{rng.randrange(10**6):06d}_{i}.dcm", ph, to_bytes(ds)))
    rng.shuffle(items)
    path.write_bytes(zip_bytes([(name, data) for name, _, data in items]))
    return {name: ph for name, ph, _ in items}


def label_predictor(by_name: dict[str, Any]) -> FakePredictor:
    """A predictor whose output we control: P = 0.95 on slices whose phantom shows blood, else 0.05."""
    return FakePredictor({name: 0.95 if ph.label else 0.05 for name, ph in by_name.items()})


def series_with_probs(make_ct_dataset, tmp_path, probs: list[float]):
    """A shuffled zip of len(probs) head slices under random names, read back; with the P each name
    should get (for :class:`FakePredictor`) and the names in anatomical order."""
    slices = head_series(make_ct_dataset, len(probs))
    names = [f"im{random.Random(i).randrange(10**5)}_{i}.dcm" for i in range(len(probs))]
    path = tmp_path / "scan.zip"
    entries = [(names[i], to_bytes(ds)) for i, (_, ds) in enumerate(slices)]
    random.Random(5).shuffle(entries)
    path.write_bytes(zip_bytes(entries))
    return read_series(path), dict(zip(names, probs, strict=True)), names
