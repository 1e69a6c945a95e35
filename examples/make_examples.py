"""Write the app's example inputs: synthetic phantoms as a scanner DICOM and as internet-style figures.

    python -m examples.make_examples

Deterministic (fixed seeds). The real head-CT example the app also offers is pydicom's bundled
test slice ``693_J2KI.dcm``, used from the installed package rather than copied here.
"""

from __future__ import annotations

from pathlib import Path

import cv2
from pydicom.filewriter import dcmwrite

from brain_ct.synthetic import generate_slice, render_8bit, to_dicom

HERE = Path(__file__).resolve().parent


def main() -> None:
    cases = {
        # Seed 103: the largest subdural of seeds 101-110 (mask area), so the example is plainly visible.
        "synthetic_subdural": generate_slice(
            103, 512, hemorrhage=True, subtype="subdural", level="ventricles"
        ),
        # Seed 204: the largest intraparenchymal bleed of seeds 201-210 (mask area; 202's was a 171-pixel dot
        # beside the calcified choroid plexus, which a reader could not tell from calcification).
        "synthetic_intraparenchymal": generate_slice(
            204, 512, hemorrhage=True, subtype="intraparenchymal", level="basal_ganglia"
        ),
        "synthetic_normal": generate_slice(303, 512, hemorrhage=False, level="ventricles"),
        # One slice of each remaining subtype, so a subtype model can be tried on all five.
        "synthetic_epidural": generate_slice(
            404, 512, hemorrhage=True, subtype="epidural", level="ventricles"
        ),
        "synthetic_intraventricular": generate_slice(
            505, 512, hemorrhage=True, subtype="intraventricular", level="ventricles"
        ),
        "synthetic_subarachnoid": generate_slice(
            606, 512, hemorrhage=True, subtype="subarachnoid", level="suprasellar"
        ),
    }
    for name, phantom in cases.items():
        dcmwrite(
            HERE / f"{name}.dcm",
            to_dicom(phantom, patient_name="SYNTHETIC^EXAMPLE", compress="rle"),
            enforce_file_format=True,
        )
    figure = render_8bit(cases["synthetic_intraparenchymal"], 7, internet_style=True)
    if figure.ndim == 3:
        figure = cv2.cvtColor(figure, cv2.COLOR_RGBA2BGRA if figure.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(HERE / "synthetic_intraparenchymal_figure.png"), figure)
    normal_figure = render_8bit(cases["synthetic_normal"], 8, internet_style=True)
    if normal_figure.ndim == 3:
        normal_figure = cv2.cvtColor(normal_figure[..., :3], cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(HERE / "synthetic_normal_figure.jpg"), normal_figure, [cv2.IMWRITE_JPEG_QUALITY, 85])


if __name__ == "__main__":
    main()
