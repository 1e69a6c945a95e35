"""A tiny head-CT image folder for the training tests, drawn in code (PNG and DICOM files, lesion masks).

Layout as ``python -m brain_ct synth`` writes it: ``root/hemorrhage/*``, ``root/normal/*``,
``root/masks/<stem>.png``. Hemorrhage slices carry a blood-density disc (70 HU) whose mask is saved.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from conftest import brain_window_uint8, draw_head_hu
from helpers_dicom import ct_dataset
from pydicom.filewriter import dcmwrite

#: ``python -m train`` flags of a tiny ResNet at 64 px with small batches (seconds per step on a CPU).
TINY = [
    "--model_size",
    "tiny",
    "--image_size",
    "64",
    "--per_device_train_batch_size",
    "4",
    "--per_device_eval_batch_size",
    "8",
    "--logging_steps",
    "1",
    "--seed",
    "1",
]

#: ``python -m train`` flags for a smoke run that only trains: no per-epoch evaluation, no checkpoints.
NO_EVAL = ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]


def write_ct_dicom(path: Path, hu: np.ndarray) -> None:
    """Write HU as a minimal CT DICOM (int16 stored values, intercept −1024)."""
    stored = np.clip(np.round(hu + 1024.0), -32768, 32767).astype(np.int16)
    ds = ct_dataset(stored)
    dcmwrite(str(path), ds, enforce_file_format=True)


def write_tiny_folder(root: Path, n: int = 16, size: int = 96, dicom_every: int = 3, seed: int = 0) -> Path:
    """Write ``n`` slices (alternating normal / hemorrhage), every ``dicom_every``-th one as DICOM.

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    for sub in ("normal", "hemorrhage", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = i % 2
        hu = draw_head_hu(
            size, center=(size // 2 + int(rng.integers(-4, 5)), size // 2 + int(rng.integers(-4, 5)))
        )
        hu += rng.normal(0, 3, hu.shape).astype(np.float32)
        mask = np.zeros((size, size), np.uint8)
        if label:
            x = size // 2 + int(rng.integers(-size // 6, size // 6))
            y = size // 2 + int(rng.integers(-size // 6, size // 6))
            cv2.circle(mask, (x, y), max(3, size // 14), 255, -1)
            hu[mask > 0] = 70.0
        stem = f"slice{i:03d}"
        folder = root / ("hemorrhage" if label else "normal")
        if i % dicom_every == 0:
            write_ct_dicom(folder / f"{stem}.dcm", hu)
        else:
            cv2.imwrite(str(folder / f"{stem}.png"), brain_window_uint8(hu))
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
    return root


def write_png_folder(root: Path, n: int = 12, size: int = 96) -> Path:
    """``root/{normal,hemorrhage}/<i>.png`` only (no masks/, no DICOM): what ``datasets`` loads as an
    image folder with a ``label`` ClassLabel column, standing in for a Hub dataset."""
    root = Path(root)
    for i in range(n):
        cls = "hemorrhage" if i % 2 else "normal"
        (root / cls).mkdir(parents=True, exist_ok=True)
        hu = draw_head_hu(size)
        if i % 2:
            hu[size // 2 - 6 : size // 2 + 4, size // 2 - 6 : size // 2 + 4] = 70.0
        cv2.imwrite(str(root / cls / f"{i}.png"), brain_window_uint8(hu))
    return root


def write_dicom_series_folder(
    root: Path, n_series: int = 2, n_slices: int = 5, size: int = 96, seed: int = 0
) -> dict[str, list[Path]]:
    """Image folder of whole DICOM series, each slice filed under its own label (as RSNA-style data is).

    Every series has one bleeding slice in the middle (a 70 HU disc with a mask) and normal slices
    around it; slices carry SeriesInstanceUID, ImagePositionPatient (1 mm … along z, written in
    shuffled file order) and ImageOrientationPatient, so only the headers give the anatomical order.

    Returns:
        ``{series uid: [paths inferior → superior]}``.
    """
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(seed)
    root = Path(root)
    for sub in ("normal", "hemorrhage", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    series: dict[str, list[Path]] = {}
    names = iter(rng.permutation(n_series * n_slices))  # file names say nothing about position
    for s in range(n_series):
        uid = generate_uid()
        paths = []
        for z in range(n_slices):
            hu = draw_head_hu(size, scale=0.7 + 0.05 * z)
            hu += rng.normal(0, 3, hu.shape).astype(np.float32)
            mask = np.zeros((size, size), np.uint8)
            label = int(z == n_slices // 2)
            if label:
                cv2.circle(mask, (size // 2 + 8, size // 2), max(3, size // 14), 255, -1)
                hu[mask > 0] = 70.0
            stem = f"img{next(names):03d}"
            path = root / ("hemorrhage" if label else "normal") / f"{stem}.dcm"
            stored = np.clip(np.round(hu + 1024.0), -32768, 32767).astype(np.int16)
            ds = ct_dataset(
                stored,
                SeriesInstanceUID=uid,
                ImagePositionPatient=[-24.0, -24.0, float(5 * z + 10 * s)],
                ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                InstanceNumber=n_slices - z,  # reversed: position must win over instance number
            )
            dcmwrite(str(path), ds, enforce_file_format=True)
            cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
            paths.append(path)
        series[uid] = paths
    return series


def write_subtype_folder(root: Path, n_per_class: int = 4, size: int = 96, seed: int = 0) -> Path:
    """An image folder with subtype class folders: ``normal/``, ``subdural/``, ``Epidural/`` (any case is a
    class), PNG and DICOM mixed, and ``metadata.jsonl`` giving ``subdural/slice001.png`` a second subtype
    (subarachnoid), as Hugging Face's imagefolder names extra columns.

    A subdural bleed is a crescent-like disc near the left skull, an epidural one near the right, both 70 HU.

    Returns:
        ``root``.
    """
    import json

    rng = np.random.default_rng(seed)
    root = Path(root)
    places = {
        "normal": None,
        "subdural": (size // 2 - size // 4, size // 2),
        "Epidural": (size // 2 + size // 4, size // 2),
    }
    for folder, place in places.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            hu = draw_head_hu(size) + rng.normal(0, 3, (size, size)).astype(np.float32)
            if place is not None:
                mask = np.zeros((size, size), np.uint8)
                cv2.circle(mask, place, max(3, size // 14), 255, -1)
                hu[mask > 0] = 70.0
            stem = f"slice{i:03d}"
            if i % 2 == 0:
                write_ct_dicom(root / folder / f"{stem}.dcm", hu)
            else:
                cv2.imwrite(str(root / folder / f"{stem}.png"), brain_window_uint8(hu))
    row = {"file_name": "subdural/slice001.png", "subtypes": ["Subdural", "subarachnoid"]}
    (root / "metadata.jsonl").write_text(json.dumps(row) + "\n")
    return root
