"""Writers for phantoms: CT DICOM datasets, internet-style 8-bit figures, and image-folder data sets.

Data set layout written by :func:`write_dataset` (``DIR``)::

    DIR/hemorrhage/hemorrhage_000001.png   image (or .dcm, or both)
    DIR/normal/normal_000000.png
    DIR/masks/hemorrhage_000001.png        0/255 mask, same stem; ALL images get one (all-zero
                                           for normal images), aligned with the written PNG
    DIR/metadata.jsonl                     one row per image

Each ``metadata.jsonl`` row: ``file_name`` and ``file`` (the same path relative to DIR: ``file``
is this project's key, ``file_name`` is the key Hugging Face ``datasets``' image folder reads),
``label`` (0 normal, 1 hemorrhage), ``subtype`` (null for normal), ``bbox`` ([x0, y0, x1, y1] of
the mask in the written image's pixels, x1/y1 exclusive; null for normal), ``mask`` (path of the
mask PNG), ``level``, ``seed``, ``dicom`` (path of the ``.dcm`` or null).

``datasets.load_dataset("imagefolder", data_dir=DIR)`` reads the PNG layout: when a metadata
file is present the image folder yields exactly its rows, so ``masks/`` is not taken for a
class. It cannot decode ``.dcm`` files: ``--format dcm`` is for the training script's DICOM path
(``brain_ct.load_image``), and ``--format both`` writes PNGs for ``datasets`` plus the DICOMs.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from brain_ct.errors import InvalidInputError
from brain_ct.source import MIN_SIDE
from brain_ct.synthetic.core import Phantom, generate_slice, mask_bbox
from brain_ct.windowing import window

COMPRESSIONS = {"rle": RLELossless, "jpeg2000": JPEG2000Lossless, "jpegls": JPEGLSLossless}
FORMATS = ("png", "dcm", "both")
STYLES = ("plain", "internet", "mixed")

_FIRST = ("ALEX", "SAM", "ROBIN", "JO", "KIM", "LEE", "MORGAN", "TAYLOR")
_LAST = ("SYNTHETIC", "PHANTOM", "TESTCASE", "EXAMPLE")


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=["brain_ct.synthetic", *map(str, parts)])


def to_dicom(
    phantom: Phantom,
    *,
    series_uid: str | None = None,
    instance_number: int = 1,
    patient_name: str = "SYNTHETIC^PHANTOM",
    compress: str | None = None,
) -> Dataset:
    """Encode a phantom as a CT Image Storage DICOM dataset with realistic (fake) tags.

    Stored values: ``round(HU + 1024)`` with (0028,1053) *Rescale Slope* 1 and (0028,1052)
    *Rescale Intercept* −1024; unsigned 12-bit or signed 16-bit depending on the phantom's scanner.
    Patient/institution tags carry FAKE identifying values (name, ID, birth date, institution,
    accession number, referring physician) so de-identification can be tested.

    Args:
        phantom: the slice.
        series_uid: (0020,000E) *Series Instance UID*; derived from the seed when None.
        instance_number: (0020,0013) *Instance Number*.
        patient_name: (0010,0010) *Patient's Name*.
        compress: None (Explicit VR Little Endian), ``"rle"``, ``"jpeg2000"`` (lossless) or
            ``"jpegls"`` (lossless; needs the optional ``pyjpegls`` encoder).

    Returns:
        A :class:`pydicom.Dataset` with file meta, ready for ``ds.save_as(path)``.
    """
    if compress is not None and compress not in COMPRESSIONS:
        raise InvalidInputError(
            f"unknown compression {compress!r}; choose one of {', '.join(COMPRESSIONS)} or None"
        )
    # One generator per phantom for the fake dates, numbers and sex: the same slice always
    # gets the same tags. The helpers below draw from it in this order.
    rng = np.random.default_rng([phantom.seed, 7])
    sop_uid = _uid("sop", phantom.seed, phantom.series_index, instance_number, phantom.z)
    ds = Dataset()
    ds.file_meta = _file_meta(sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    _set_study_and_patient(ds, phantom, patient_name, rng)
    ds.StudyInstanceUID = _uid("study", phantom.seed)
    ds.SeriesInstanceUID = series_uid or _uid("series", phantom.seed)
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.InstanceNumber = int(instance_number)
    _set_plane(ds, phantom)
    arr = _set_pixels(ds, phantom, rng)
    if compress is not None:
        uid = COMPRESSIONS[compress]
        try:
            ds.compress(uid, arr)
        except (RuntimeError, ImportError) as exc:
            raise InvalidInputError(
                f"cannot write {compress} DICOM here: {exc}; use compress='rle' or 'jpeg2000', or None"
            ) from exc
    return ds


def _file_meta(sop_uid: str) -> FileMetaDataset:
    """The file meta of an uncompressed CT image (``compress`` changes the transfer syntax later)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _set_study_and_patient(
    ds: Dataset, phantom: Phantom, patient_name: str, rng: np.random.Generator
) -> None:
    """Dates, times, the (fake) patient, institution and scanner: what a study's header holds."""
    sc = phantom.scanner
    when = _dt.date(2020, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 1800)))
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = f"{int(rng.integers(0, 24)):02d}{int(rng.integers(0, 60)):02d}00"
    ds.AccessionNumber = f"ACC{int(rng.integers(10**6, 10**7))}"
    ds.Modality = "CT"
    ds.Manufacturer = sc.manufacturer if sc else "SYNTHETIC"
    ds.InstitutionName = "Synthetic General Hospital"
    ds.ReferringPhysicianName = "DOE^JANE"
    ds.StudyDescription = "CT HEAD WITHOUT CONTRAST"
    ds.SeriesDescription = "AXIAL HEAD 5mm" if phantom.slice_thickness >= 5 else "AXIAL HEAD"
    ds.ManufacturerModelName = "PhantomScan 64"
    ds.PatientName = patient_name
    ds.PatientID = f"SYN{phantom.seed:08d}"
    age_years = int(round(2 + 90 * phantom.age))
    ds.PatientBirthDate = f"{when.year - age_years:04d}0101"
    ds.PatientSex = str(rng.choice(["F", "M"]))
    ds.PatientAge = f"{age_years:03d}Y"
    ds.BodyPartExamined = "HEAD"
    ds.SliceThickness = f"{phantom.slice_thickness:.2f}"
    ds.KVP = f"{sc.kvp:.0f}" if sc else "120"
    ds.ConvolutionKernel = sc.kernel if sc else "STANDARD"
    ds.PatientPosition = "HFS"


def _set_plane(ds: Dataset, phantom: Phantom) -> None:
    """Where the slice lies: an axial plane centred on the head axis at the phantom's ``z``."""
    size_h, size_w = phantom.hu.shape
    ps = float(phantom.pixel_spacing)
    x0 = -ps * size_w / 2.0 + ps / 2.0
    y0 = -ps * size_h / 2.0 + ps / 2.0
    ds.ImagePositionPatient = [f"{x0:.3f}", f"{y0:.3f}", f"{phantom.z:.3f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = _uid("for", phantom.seed)
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{phantom.z:.3f}"
    ds.Rows, ds.Columns = size_h, size_w
    ds.PixelSpacing = [f"{ps:.6f}", f"{ps:.6f}"]


def _set_pixels(ds: Dataset, phantom: Phantom, rng: np.random.Generator) -> np.ndarray:
    """Pixel module, window presets and rescale; returns the stored values (for ``compress``)."""
    signed = bool(phantom.scanner.pixel_representation) if phantom.scanner is not None else False
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    stored = np.rint(np.clip(phantom.hu, -1024.0, 3071.0) + 1024.0)
    if signed:
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
        arr = stored.astype(np.int16)
    else:
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        arr = stored.astype(np.uint16)
    if rng.random() < 0.5:
        ds.WindowCenter, ds.WindowWidth = "40", "80"
    else:
        ds.WindowCenter, ds.WindowWidth = ["40", "700"], ["80", "3200"]
        ds.WindowCenterWidthExplanation = ["BRAIN", "BONE"]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OW"
    return arr


# --------------------------------------------------------------------------------------------
# Internet-style 8-bit rendering
# --------------------------------------------------------------------------------------------

_WINDOWS = [
    ((40, 80), 0.5),
    ((35, 80), 0.1),
    ((40, 120), 0.1),
    ((50, 100), 0.08),
    ((30, 70), 0.07),
    ((80, 200), 0.1),
    ((40, 150), 0.05),
]
_WIDE = [(40, 400), (300, 1500), (600, 2800), (500, 2000)]
#: Fraction of head pixels at or above the window's top above which a plane counts as mostly bone.
_MOSTLY_BONE = 0.4
#: Fraction of internet figures with brain in view that are nonetheless shown in a wide window.
_WIDE_FRACTION = 0.04
_COLOURS = [
    (0, 0, 255),
    (0, 255, 255),
    (0, 255, 0),
    (255, 255, 255),
    (255, 0, 0),
    (0, 165, 255),
    (255, 0, 255),
]
_CAPTIONS = [
    "Axial CT",
    "Non-contrast CT head",
    "NCCT",
    "CT brain",
    "W:80 L:40",
    "5 mm",
    "R",
    "L",
    "Fig. 1",
    "Fig. 2",
    "axial",
    "Case 3",
    "CT",
    "ED",
    "Head CT w/o",
    "Image 12/32",
    "kV 120  mA 250",
    "Series 2",
]


def _as_rng(rng_or_seed: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def plain_8bit(hu: np.ndarray, center: float = 40.0, width: float = 80.0) -> np.ndarray:
    """A uint8 grey rendering of HU with a linear window (brain 40/80 by default)."""
    return (window(hu, center, width) * 255.0 + 0.5).astype(np.uint8)


def _draw_arrow(
    img: np.ndarray, tip: tuple[float, float], rng: np.random.Generator, colour, scale: float
) -> None:
    ang = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(25, 70) * scale
    tail = (int(tip[0] + np.cos(ang) * length), int(tip[1] + np.sin(ang) * length))
    thick = max(1, int(round(rng.uniform(1.0, 3.5) * scale)))
    cv2.arrowedLine(
        img, tail, (int(tip[0]), int(tip[1])), colour, thick, cv2.LINE_AA, tipLength=rng.uniform(0.2, 0.45)
    )


def _put_text(
    img: np.ndarray, text: str, org: tuple[int, int], colour, scale: float, rng: np.random.Generator
) -> None:
    font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN]))
    cv2.putText(img, text, org, font, scale, colour, max(1, int(round(scale * 1.6))), cv2.LINE_AA)


def decoration_plan(rng: np.random.Generator) -> dict:
    """Which decorations a figure gets. Drawn first and never from the label, so every
    decoration appears with the same probability in normal and hemorrhage images."""
    return {
        "panels": bool(rng.random() < 0.15),
        "border": bool(rng.random() < 0.6),
        "colour": bool(rng.random() < 0.4),
        "alpha": bool(rng.random() < 0.15),
        "arrows": int(rng.integers(1, 3)) if rng.random() < 0.35 else 0,
        "letters": bool(rng.random() < 0.3),
        "captions": bool(rng.random() < 0.3),
        "overlay": bool(rng.random() < 0.15),
        "ruler": bool(rng.random() < 0.15),
        "jpeg": int(rng.choice([0, 1, 1, 1, 2])),
    }


def _figure_window(hu: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """The window (center, width in HU) a figure is shown in: a jittered brain window, or a wide one."""
    probs = np.array([p for _, p in _WINDOWS])
    (c, w) = _WINDOWS[int(rng.choice(len(_WINDOWS), p=probs / probs.sum()))][0]
    c += rng.normal(0, 3)
    w *= rng.uniform(0.9, 1.12)
    head = hu > -300
    bone_fraction = float(np.mean(hu[head] >= c + w / 2)) if head.any() else 0.0
    # A plane that is mostly bone (a cut through the skull cap) is not posted as a saturated white
    # disc but in a wide or bone window. Wherever brain shows, figures use a brain window (a few
    # are posted in a wide one, of either class alike): in a bone window blood is invisible, so
    # such a figure's label could not be read from it.
    if bone_fraction > _MOSTLY_BONE or rng.random() < _WIDE_FRACTION:
        c, w = _WIDE[int(rng.integers(len(_WIDE)))]
    return c, w


def _loose_crop(grey: np.ndarray, rng: np.random.Generator) -> tuple[slice, slice]:
    """Sometimes a loose box around the head (figures are often trimmed), else the whole image."""
    crop = (slice(None), slice(None))
    if rng.random() < 0.4:
        ys, xs = np.nonzero(grey > 20)
        if ys.size:
            m = int(rng.uniform(0, 0.08) * grey.shape[0])
            crop = (
                slice(max(0, ys.min() - m), min(grey.shape[0], ys.max() + m + 1)),
                slice(max(0, xs.min() - m), min(grey.shape[1], xs.max() + m + 1)),
            )
    return crop


def _side_panel(
    hu: np.ndarray, grey: np.ndarray, mask: np.ndarray, crop: tuple[slice, slice], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Side-by-side panels: the same slice in another window beside it (the mask gets an empty twin)."""
    other = plain_8bit(hu, *((80, 200) if rng.random() < 0.5 else (600, 2800)))[crop]
    gap = np.zeros((grey.shape[0], int(rng.integers(0, 12))), np.uint8)
    if rng.random() < 0.5:
        grey = np.concatenate([grey, gap, other], axis=1)
        mask = np.concatenate([mask, gap, np.zeros_like(mask)], axis=1)
    else:
        grey = np.concatenate([other, gap, grey], axis=1)
        mask = np.concatenate([np.zeros_like(mask), gap, mask], axis=1)
    return grey, mask


def _resize_with_border(
    grey: np.ndarray, mask: np.ndarray, border: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Final size 200–1024 px on the longer side, borders included; never under ``MIN_SIDE`` a side."""
    target = int(rng.uniform(200, 1024))
    b = [int(rng.uniform(0, 0.12) * target) for _ in range(4)] if border else [0, 0, 0, 0]
    s = min((target - b[0] - b[1]) / grey.shape[0], (target - b[2] - b[3]) / grey.shape[1])
    new = (max(8, int(round(grey.shape[1] * s))), max(8, int(round(grey.shape[0] * s))))
    interp = int(rng.choice([cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC]))
    grey = cv2.resize(grey, new, interpolation=interp)
    mask = cv2.resize(mask, new, interpolation=cv2.INTER_NEAREST)
    # borders (usually black, sometimes white like a journal figure)
    if border:
        val = 255 if rng.random() < 0.1 else 0
        grey = cv2.copyMakeBorder(grey, b[0], b[1], b[2], b[3], cv2.BORDER_CONSTANT, value=val)
        mask = cv2.copyMakeBorder(mask, b[0], b[1], b[2], b[3], cv2.BORDER_CONSTANT, value=0)
    # A sliver of skull cap cropped tightly can come out a few dozen pixels high; a posted figure keeps
    # some background around it (and a loader refuses anything under MIN_SIDE pixels a side).
    short = [max(0, MIN_SIDE - side) for side in grey.shape]
    if any(short):
        top, left = short[0] // 2, short[1] // 2
        pads = (top, short[0] - top, left, short[1] - left)
        grey = cv2.copyMakeBorder(grey, *pads, cv2.BORDER_CONSTANT, value=0)
        mask = cv2.copyMakeBorder(mask, *pads, cv2.BORDER_CONSTANT, value=0)
    return grey, mask


def _pick_colour(rng: np.random.Generator, colour: bool) -> tuple[int, ...]:
    """A decoration colour: a bright RGB one on a colour figure, white, light grey or black on a grey one."""
    col = _COLOURS[int(rng.integers(len(_COLOURS)))]
    return col if colour else (int(rng.choice([255, 230, 0])),)


def _draw_arrows(
    img: np.ndarray, grey: np.ndarray, mask: np.ndarray, n: int, colour: bool, rng: np.random.Generator
) -> None:
    """``n`` arrows: at the lesion sometimes, anywhere in the head otherwise (also in normal images)."""
    scale = max(grey.shape) / 512.0
    for _ in range(n):
        lesion = np.argwhere(mask > 0)
        at_lesion = rng.random() < 0.5
        if lesion.size and at_lesion:
            ty, tx = lesion[rng.integers(len(lesion))]
        else:
            head = np.argwhere(grey > 40)
            if not head.size:
                continue
            ty, tx = head[rng.integers(len(head))]
        _draw_arrow(img, (float(tx), float(ty)), rng, _pick_colour(rng, colour), scale)


def _draw_texts(img: np.ndarray, plan: dict, panels: int, colour: bool, rng: np.random.Generator) -> None:
    """Panel letters, captions and a viewer's corner overlay, as the plan says."""
    h, w_ = img.shape[:2]
    scale = max(h, w_) / 512.0
    if plan["letters"] or panels > 1:  # panel letters
        letters = ["A", "B", "C", "D", "a", "b"]
        for k in range(panels):
            org = (int(5 + k * w_ / panels + rng.uniform(0, 10)), int(rng.uniform(20, 40) * scale + 5))
            _put_text(
                img,
                letters[min(k + int(rng.integers(0, 2)) * 2, 5)],
                org,
                _pick_colour(rng, colour),
                1.2 * scale,
                rng,
            )
    if plan["captions"]:  # captions
        for _ in range(int(rng.integers(1, 3))):
            text = _CAPTIONS[int(rng.integers(len(_CAPTIONS)))]
            org = (
                int(rng.uniform(0, 0.6) * w_),
                int(rng.choice([rng.uniform(0.04, 0.1), rng.uniform(0.9, 0.98)]) * h),
            )
            _put_text(img, text, org, _pick_colour(rng, colour), rng.uniform(0.4, 0.9) * scale, rng)
    if plan["overlay"]:  # viewer overlay: lines of small text in the corners
        for k in range(int(rng.integers(2, 6))):
            text = str(
                rng.choice(
                    ["Im: 14/32", "Se: 2", "120 kV", "250 mA", "W 80 C 40", "Zoom 1.2", "5.0 mm", "HFS"]
                )
            )
            _put_text(
                img, text, (4, int((k + 1) * 14 * scale) + 4), _pick_colour(rng, colour), 0.4 * scale, rng
            )


def _draw_ruler(img: np.ndarray, colour: bool, rng: np.random.Generator) -> None:
    """A ruler with ticks along one side."""
    h, w_ = img.shape[:2]
    col = _pick_colour(rng, colour)
    x = int(rng.uniform(0.02, 0.1) * w_) if rng.random() < 0.5 else int(rng.uniform(0.9, 0.97) * w_)
    y0, y1 = int(0.25 * h), int(0.75 * h)
    cv2.line(img, (x, y0), (x, y1), col, 1)
    for k, y in enumerate(np.linspace(y0, y1, int(rng.integers(5, 12)))):
        cv2.line(img, (x, int(y)), (x + (8 if k % 5 == 0 else 4), int(y)), col, 1)


def _recompress(img: np.ndarray, times: int, rng: np.random.Generator) -> np.ndarray:
    """Lossy JPEG re-compression, ``times`` times (quality 30–95 each)."""
    for _ in range(times):
        q = int(rng.uniform(30, 95))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return img


def render_internet(phantom: Phantom, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render like a head CT found online, and carry the lesion mask through the same geometry.

    Returns:
        (image, mask): image uint8 ``[h, w]``, ``[h, w, 3]`` (RGB) or ``[h, w, 4]`` (RGBA);
        mask bool ``[h, w]`` aligned with it.
    """
    plan = decoration_plan(rng)
    grey = plain_8bit(phantom.hu, *_figure_window(phantom.hu, rng))
    mask = phantom.mask.astype(np.uint8)
    if rng.random() < 0.3:  # a gamma/brightness tweak from the figure's author or viewer
        lut = np.clip(255 * (np.arange(256) / 255.0) ** rng.uniform(0.8, 1.25) + rng.normal(0, 6), 0, 255)
        grey = lut.astype(np.uint8)[grey]
    crop = _loose_crop(grey, rng)
    grey, mask = grey[crop], mask[crop]
    panels = 1
    if plan["panels"]:
        grey, mask = _side_panel(phantom.hu, grey, mask, crop, rng)
        panels = 2
    grey, mask = _resize_with_border(grey, mask, plan["border"], rng)

    colour = plan["colour"]
    img = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB) if colour else grey
    # Decorations are drawn with the same probabilities for both classes (no label shortcut).
    if plan["arrows"]:
        _draw_arrows(img, grey, mask, plan["arrows"], colour, rng)
    _draw_texts(img, plan, panels, colour, rng)
    if plan["ruler"]:
        _draw_ruler(img, colour, rng)
    img = _recompress(img, plan["jpeg"], rng)
    if colour and plan["alpha"]:
        img = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    return img, mask.astype(bool)


def render_8bit(
    phantom: Phantom, rng_or_seed: np.random.Generator | int, *, internet_style: bool = True
) -> np.ndarray:
    """An 8-bit image of the slice as people find head CTs online (or a plain brain window).

    With ``internet_style`` the window, size (200–1024 px), borders, panel letters, arrows
    (pointing at the lesion or anywhere — also in normal images), captions, rulers, colour
    (RGB/RGBA) and JPEG re-compression (quality 30–95) are random; every decoration appears
    with the same probability in both classes. Without it: brain window 40/80, grey, own size.

    Returns:
        uint8 ``[h, w]`` grey, ``[h, w, 3]`` RGB or ``[h, w, 4]`` RGBA.
    """
    if not internet_style:
        return plain_8bit(phantom.hu)
    img, _ = render_internet(phantom, _as_rng(rng_or_seed))
    return img


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------


def _write_png(path: Path, img: np.ndarray) -> None:
    if img.ndim == 3:  # our arrays are RGB(A); OpenCV writes BGR(A)
        code = cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR
        img = cv2.cvtColor(img, code)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def write_dataset(
    out_dir: str | Path,
    n: int,
    *,
    seed: int = 0,
    size: int = 256,
    fmt: str = "png",
    style: str = "plain",
    progress: bool = False,
) -> Path:
    """Write ``n`` synthetic slices (half hemorrhage, half normal) as an image folder.

    Args:
        out_dir: output directory (created; existing files with the same names are replaced).
        n: number of images in total, at least 2; ``n // 2`` hemorrhage, the rest normal.
        seed: master seed; the data set is deterministic per (seed, n, size, fmt, style).
        size: slice side in pixels.
        fmt: ``"png"`` (windowed 8-bit images), ``"dcm"`` (CT DICOM in HU) or ``"both"``.
        style: PNG look — ``"plain"`` (brain window 40/80, the slice's own size), ``"internet"``
            (see :func:`render_8bit`) or ``"mixed"`` (half each). Masks and bboxes follow the
            PNG's geometry.
        progress: show a tqdm progress bar on stderr.

    Returns:
        The output directory. See the module docstring for the layout.
    """
    _check_dataset_args(n, seed, fmt, style)
    out = Path(out_dir)
    for sub in ("hemorrhage", "normal", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(int(seed)).generate_state(int(n), dtype=np.uint32)
    n_hem = int(n) // 2
    items = range(int(n))
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="synth", unit="slice", file=sys.stderr)
    rows = [_write_item(out, i, int(seeds[i]), i < n_hem, size=size, fmt=fmt, style=style) for i in items]
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return out


def _check_dataset_args(n: int, seed: int, fmt: str, style: str) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise InvalidInputError(f"n must be an integer >= 2 (half of the images per class); got {n!r}")
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if style not in STYLES:
        raise InvalidInputError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer; got {seed!r}")


def _write_item(out: Path, i: int, item_seed: int, hem: bool, *, size: int, fmt: str, style: str) -> dict:
    """Write data set item ``i`` (its DICOM and/or PNG, and its mask); returns its metadata row."""
    ph = generate_slice(item_seed, size, hemorrhage=hem)
    cls = "hemorrhage" if hem else "normal"
    stem = f"{cls}_{i:06d}"
    row: dict = {
        "file_name": None,
        "file": None,
        "label": ph.label,
        "subtype": ph.subtype,
        "bbox": None,
        "mask": f"masks/{stem}.png",
        "level": ph.level,
        "seed": item_seed,
        "dicom": None,
    }
    if fmt in ("dcm", "both"):
        ds = to_dicom(ph, instance_number=i + 1)
        rel = f"{cls}/{stem}.dcm"
        ds.save_as(out / rel, enforce_file_format=True)
        row["dicom"] = rel
        row["file_name"] = row["file"] = rel
        mask = ph.mask
    if fmt in ("png", "both"):
        # Each item's own generators: whether it is an internet figure, and how it looks.
        internet = style == "internet" or (
            style == "mixed" and bool(np.random.default_rng([item_seed, 1]).random() < 0.5)
        )
        if internet:
            img, mask = render_internet(ph, np.random.default_rng([item_seed, 2]))
        else:
            img, mask = plain_8bit(ph.hu), ph.mask
        rel = f"{cls}/{stem}.png"
        _write_png(out / rel, img)
        row["file_name"] = row["file"] = rel
    cv2.imwrite(str(out / row["mask"]), mask.astype(np.uint8) * 255)
    row["bbox"] = mask_bbox(mask)
    return row
