"""brain_ct.io changes nothing at import (environment, logging); its pydicom log filter arrives with the first read."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers_dicom import ct_dataset, dicom_bytes

from brain_ct.dicom import quiet_dicom
from brain_ct.io import load_image

REPO = Path(__file__).resolve().parents[1]

# cv2 and pydicom are imported before the snapshot: OpenCV's own loader edits LD_LIBRARY_PATH on
# import, which is none of brain_ct's doing; what is checked is what importing brain_ct.io adds.
IMPORT_CHECK = """
import logging, os
import cv2, pydicom, pydicom.pixels
def filters():
    return {n: list(logging.getLogger(n).filters) for n in ["pydicom", *logging.root.manager.loggerDict]
            if n.startswith("pydicom")}
env, before = dict(os.environ), filters()
import brain_ct.io
assert dict(os.environ) == env, sorted(set(os.environ.items()) ^ set(env.items()))
after = filters()
assert after == {n: before.get(n, []) for n in after}, after
print("unchanged")
"""


def test_importing_io_sets_no_environment_variable_and_no_log_filter() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "unchanged"


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_pydicom_log_records_are_dropped_while_reading_once_a_file_was_read() -> None:
    pixels = (np.arange(64 * 64).reshape(64, 64) % 80).astype(np.int16)
    load_image(dicom_bytes(ct_dataset(pixels)), allow_unverified=True)
    logger = logging.getLogger("pydicom")
    keep = _Keep()
    logger.addHandler(keep)
    try:
        with quiet_dicom():
            logger.warning("Patient name DOE^JANE while reading")
        logger.warning("after the read")
    finally:
        logger.removeHandler(keep)
    assert keep.messages == ["after the read"]
