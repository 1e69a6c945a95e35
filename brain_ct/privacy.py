"""The ONE allow-list of DICOM information that may appear in any output.

Everything :mod:`brain_ct` shows or writes about a DICOM file — ``CTImage.meta``, the app's
metadata table, CLI JSON, PDF reports, logs — goes through :func:`extract_meta`, which copies
only the clinical/technical tags in :data:`ALLOWED_TAGS` (none of them identifies a patient,
a physician, an institution or a date) plus a few values derived here (:data:`DERIVED_KEYS`).
UIDs never leave: :func:`hashed_uid` turns a UID into a salted hash so slices can still be
grouped by series on screen.

:data:`IDENTIFYING_TAGS` is the deny list (after the DICOM PS3.15 Basic Application Level
Confidentiality Profile, abridged). :func:`identifying_values` collects the values of those tags,
of every person-name (PN) and date/time (DA, DT, TM) element, and of the instance UIDs — at any
depth of sequences — so that :func:`scrub_text` can remove them from free text (error messages,
log lines, report text), and whole-product tests can search every output for them.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Iterable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

#: DICOM keywords that may be copied into outputs: technical and clinical, never identifying.
ALLOWED_TAGS: tuple[str, ...] = (
    "Modality",
    "BodyPartExamined",
    "ImageType",
    "PatientPosition",
    "SliceThickness",
    "SpacingBetweenSlices",
    "PixelSpacing",
    "KVP",
    "XRayTubeCurrent",
    "ConvolutionKernel",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "WindowCenter",
    "WindowWidth",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "PixelPaddingValue",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "InstanceNumber",
    "SliceLocation",
)

#: Keys :func:`extract_meta` derives from the dataset rather than copying a tag.
DERIVED_KEYS: tuple[str, ...] = (
    "TransferSyntax",  # the transfer syntax's name, e.g. "JPEG 2000 Image Compression"
    "SOPClass",  # the SOP class's name, e.g. "CT Image Storage"
    "SeriesUIDHash",  # hashed_uid(SeriesInstanceUID)
    "StudyUIDHash",  # hashed_uid(StudyInstanceUID)
)

#: Keys the readers (:mod:`brain_ct.dicom`, :mod:`brain_ct.ordinary_image`) add themselves (never tag values): frame bookkeeping, processing notes
#: written by this package, and the format of ordinary (non-DICOM) images.
LOADER_KEYS: tuple[str, ...] = ("FrameIndex", "Notes", "Format", "BitDepth", "Channels")

#: Every key that may appear in ``CTImage.meta``.
ALLOWED_META_KEYS: frozenset[str] = frozenset(ALLOWED_TAGS + DERIVED_KEYS + LOADER_KEYS)

#: DICOM keywords whose values identify a person, a place, a time or an instance (deny list).
IDENTIFYING_TAGS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAge",
    "PatientSex",
    "PatientSize",
    "PatientWeight",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientComments",
    "PatientReligiousPreference",
    "EthnicGroup",
    "Occupation",
    "MilitaryRank",
    "BranchOfService",
    "CountryOfResidence",
    "RegionOfResidence",
    "MedicalRecordLocator",
    "AdditionalPatientHistory",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "OperatorsName",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "InstanceCreationDate",
    "StudyTime",
    "SeriesTime",
    "AcquisitionTime",
    "ContentTime",
    "InstanceCreationTime",
    "AcquisitionDateTime",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "RequestedProcedureDescription",
    "PerformedProcedureStepDescription",
    "ImageComments",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "MediaStorageSOPInstanceUID",
    "FrameOfReferenceUID",
)

#: Deny-listed tags whose bare numbers or one-letter codes ("M", "70") identify nobody on their
#: own and would match unrelated numbers in text: never shown, but not searched for in text.
_NOT_SEARCHED = frozenset({"PatientSex", "PatientSize", "PatientWeight"})

#: Value representations whose values are always treated as identifying.
IDENTIFYING_VRS: frozenset[str] = frozenset({"PN", "DA", "DT", "TM"})

# One salt per process: hashes group slices consistently within a run, yet cannot be looked up
# in a table of known UIDs (a plain SHA-256 of a UID could).
_SALT = secrets.token_bytes(16)

_REDACTED = "[removed]"


def hashed_uid(uid: str, salt: bytes | None = None) -> str:
    """A salted SHA-256 prefix of a UID: equal UIDs give equal hashes within this process.

    Args:
        uid: a DICOM UID such as (0020,000E) *Series Instance UID*.
        salt: bytes to salt with; the per-process random salt when None.

    Returns:
        16 lowercase hex characters.
    """
    digest = hashlib.sha256((_SALT if salt is None else salt) + str(uid).strip().encode("ascii", "replace"))
    return digest.hexdigest()[:16]


#: Longest free-text value shown (a DICOM LO value holds at most 64 characters).
MAX_FREE_TEXT = 64

# What identifies a person in free text, as far as text alone can tell: a DICOM person name
# ("Doe^Jane"), "Surname, Given", an ID-like run of 5+ digits (record numbers, UIDs, dates
# written without separators), a date with separators, a phone number, an e-mail address.
_IDENTIFYING_TEXT = re.compile(
    r"\^"
    r"|\b[A-Z][a-z]+, [A-Z][a-z]+\b"
    r"|\d{5,}"
    r"|\b\d{1,4}[./-]\d{1,2}[./-]\d{1,4}\b"
    r"|\b\d{3}[-. ]\d{4}\b"
    r"|@"
)
# Markup and control characters: no technical DICOM text needs them, and a page must not get them.
_UNSAFE_CHARACTERS = re.compile(r"[<>\x00-\x1f\x7f]")


def safe_free_text(value: Any) -> str | None:
    """Free text from an upload (a tag value, a file name) when it cannot identify anybody.

    One screening for every free-text string that may be shown: allow-listed DICOM text tags
    such as (0008,0008) *Image Type* and (0018,1210) *Convolution Kernel* here, file and folder
    names in :mod:`brain_ct.collect`. A value is refused when it looks like a person name (a
    ``^`` separator, "Surname, Given"), holds an ID-like run of 5 or more digits, a date, a
    phone number or an e-mail address, contains markup or control characters, or is longer
    than :data:`MAX_FREE_TEXT` characters.

    Args:
        value: the text (anything else gives None).

    Returns:
        The text without surrounding blanks, or None when it is empty or may identify someone.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > MAX_FREE_TEXT:
        return None
    if _UNSAFE_CHARACTERS.search(text) or _IDENTIFYING_TEXT.search(text):
        return None
    return text


def _screened(value: Any) -> Any:
    """A tag's JSON value with its free text screened: unsafe strings (or list items) are left out."""
    if isinstance(value, str):
        return safe_free_text(value)
    if isinstance(value, list) and any(isinstance(v, str) for v in value):
        kept = [v for v in (_screened(v) for v in value) if v is not None]
        return kept or None
    return value


def _json_value(value: Any) -> Any:
    """A pydicom element value as JSON-serialisable data, or None when it has none."""
    if value is None or isinstance(value, (bytes, bytearray, Dataset)):
        return None
    if isinstance(value, (MultiValue, list, tuple)):
        items = [_json_value(v) for v in value]
        if not items or any(v is None for v in items):
            return None
        return items
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    text = str(value).strip()
    return text or None


def _strings_in(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings_in(v)


def extract_meta(ds: Dataset) -> dict[str, Any]:
    """Copy the allow-listed, non-identifying information of a DICOM dataset.

    Args:
        ds: a dataset (pixel data need not be loaded).

    Returns:
        dict with keys from :data:`ALLOWED_TAGS` and :data:`DERIVED_KEYS` whose values are
        JSON-serialisable (str, int, float, or lists of them). Missing or empty tags are left out.
        Text goes through :func:`safe_free_text` (an unsafe item of a multi-valued tag is left
        out); a string that happens to contain an identifying value of the same dataset is dropped.
    """
    meta: dict[str, Any] = {}
    for keyword in ALLOWED_TAGS:
        try:
            elem = ds.data_element(keyword)
            value = None if elem is None else _screened(_json_value(elem.value))
        except Exception:  # a malformed value (bad VR, undecodable text) is simply not shown
            value = None
        if value is not None:
            meta[keyword] = value
    file_meta = getattr(ds, "file_meta", None)
    ts = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if ts:
        meta["TransferSyntax"] = UID(str(ts)).name
    sop = ds.get("SOPClassUID") or (
        file_meta.get("MediaStorageSOPClassUID") if file_meta is not None else None
    )
    if sop:
        name = UID(str(sop)).name
        # An unknown (private) class's "name" is the UID itself: not worth showing.
        if name != str(sop):
            meta["SOPClass"] = name
    for keyword, key in (("SeriesInstanceUID", "SeriesUIDHash"), ("StudyInstanceUID", "StudyUIDHash")):
        uid = ds.get(keyword)
        if uid:
            meta[key] = hashed_uid(str(uid))
    pattern = _pattern(identifying_values(ds))
    for key in list(meta):
        if pattern is not None and any(pattern.search(s) for s in _strings_in(meta[key])):
            del meta[key]
    return meta


def _value_strings(value: Any) -> Iterable[str]:
    if value is None or isinstance(value, (bytes, bytearray)):
        return
    if isinstance(value, (MultiValue, list, tuple)):
        for v in value:
            yield from _value_strings(v)
        return
    text = str(value).strip()
    if text:
        yield text


def _variants(text: str, vr: str) -> Iterable[str]:
    """The forms a value may take in free text: as stored, and split into its parts."""
    yield text
    if vr == "PN" or "^" in text:
        parts = [p.strip() for p in re.split(r"[\^=]", text) if p.strip()]
        yield from parts
        if len(parts) >= 2:
            yield " ".join(parts)
            yield " ".join(reversed(parts[:2]))
            yield ", ".join(parts[:2])
    if vr == "DA" and re.fullmatch(r"\d{8}", text):
        yield f"{text[:4]}-{text[4:6]}-{text[6:]}"
        yield f"{text[:4]}.{text[4:6]}.{text[6:]}"
        yield f"{text[6:]}.{text[4:6]}.{text[:4]}"
        yield f"{text[4:6]}/{text[6:]}/{text[:4]}"
        yield f"{text[6:]}/{text[4:6]}/{text[:4]}"


def identifying_values(ds: Dataset) -> list[str]:
    """Every identifying value in ``ds`` (deny-listed tags, PN/DA/DT/TM elements, nested too).

    Args:
        ds: any dataset; its file meta is searched as well.

    Returns:
        Distinct strings, longest first, each at least 2 characters (shorter fragments such
        as a one-letter sex code would match everywhere and identify nobody on their own).
    """
    denied = set(IDENTIFYING_TAGS)
    found: set[str] = set()

    def walk(dataset: Dataset) -> None:
        for elem in dataset.iterall():
            if elem.VR == "SQ":
                continue
            if elem.keyword in _NOT_SEARCHED:
                continue
            if elem.keyword in denied or elem.VR in IDENTIFYING_VRS:
                try:
                    value = elem.value
                except Exception:  # undecodable value: nothing to search for
                    continue
                for text in _value_strings(value):
                    found.update(v for v in _variants(text, elem.VR) if len(v) >= 2)

    walk(ds)
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        walk(file_meta)
    return sorted(found, key=lambda s: (-len(s), s))


def scrub_text(text: str, ds: Dataset | None = None, values: Iterable[str] | None = None) -> str:
    """Remove identifying values from free text (messages, log lines, report text).

    Args:
        text: the text to clean.
        ds: the dataset whose :func:`identifying_values` are removed.
        values: further strings to remove (e.g. values collected earlier).

    Returns:
        ``text`` with every whole-word occurrence (case-insensitive) replaced by ``"[removed]"``.
    """
    banned: set[str] = set(values or ())
    if ds is not None:
        banned.update(identifying_values(ds))
    pattern = _pattern(banned)
    return text if pattern is None else pattern.sub(_REDACTED, text)


def _pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex matching any of ``values`` as a whole word, longest first."""
    kept = sorted({v for v in values if len(v) >= 2}, key=len, reverse=True)
    if not kept:
        return None
    # Lookarounds instead of \b: values may start or end with punctuation ("Doe^John", "1.2.3").
    alternatives = "|".join(re.escape(v) for v in kept)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


# --------------------------------------------------------------------------- file and folder names

_NAME_WORD_GROUPS = (
    # files, slices and series as scanners, PACS and DICOMDIR exports number them (IM0001, SE1, EE...)
    "i x z im img imgs ima image images pic slice slices sl frame frames file files part",
    "se ser series seq sequence st std study studies pa pat ee exam acq run vol volume volumes",
    # modality, anatomy, plane, reconstruction and acquisition
    "scan scans ct cta ctp ncct mr mri pet dx cr xa us modality",
    "head brain neck spine cervical skull bone bones soft tissue thin thick standard sharp smooth",
    "ax axi axial cor coronal sag sagittal obl oblique mpr mip minip recon rec reformat reformatted",
    "scout loc localizer localiser topo topogram survey helical spiral gantry tilt tilted",
    "plain contrast noncontrast nc pre post wo with without enhanced window wl ww kernel fc mm",
    # formats and extensions
    "dicom dicomdir dcm dic dir nii nifti gz zip jpg jpeg png bmp tif tiff webp gif raw bin json",
    "xml txt csv md pdf npy npz mha nrrd py sh log cfg toml init make",
    # sidecar files of exports and data sets
    "license licence readme copying notice authors changelog manifest index info meta metadata version",
    # exports, data sets, examples and this project's own outputs
    "pacs export exported exports import data dataset upload uploads download downloads",
    "anon anonymized anonymised deid deidentified demo example examples sample samples test tests",
    "phantom phantoms synth synthetic qa real anatomy case cases sub ses anat",
    "ge siemens philips toshiba canon hitachi",
    "hemorrhage haemorrhage hemorrhagic bleed bleeding ich sdh edh sah ivh iph normal abnormal",
    "subdural epidural extradural subarachnoid intraparenchymal intraventricular intracranial hematoma",
    "haematoma acute chronic stroke trauma figure fig screenshot",
    "mask masks label labels seg segmentation heatmap heatmaps overlay",
    "new old copy orig original final output input result results left right top bottom no of",
    # what test and sidecar files are called (no name of anybody)
    "notes broken junk bad corrupt damaged empty dummy misc other extra",
    "thumb thumbs thumbnail preview rt plan dose struct report sr",
)

#: The words a file or folder name from inside an upload may be made of (compared ignoring case):
#: what scanners, PACS and viewer exports, converters and this project's tools write, sidecar file
#: names and file extensions. A name holding any other letter run (``JS``, ``Smith``, ``MRN``) may
#: name or point to a person and is not shown (:func:`name_words_known`). Deliberately no first
#: names, surnames or initials; single letters only where an export writes them (GE's ``I0001``).
NAME_WORDS: frozenset[str] = frozenset(" ".join(_NAME_WORD_GROUPS).split())

# A name's letter runs, split where a lower-case letter meets a capital ("ImageSlice": Image, Slice).
_NAME_PIECES = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


def name_words_known(name: str) -> bool:
    """Whether every letter run of a file or folder name is one of :data:`NAME_WORDS`.

    Letter runs are split at digits, punctuation and a lower-to-upper case change
    (``IMG0001.dcm``: IMG, dcm; ``HeadCT``: Head, CT), compared ignoring case. Digits are not
    judged here (:func:`brain_ct.collect.screen_name` limits their runs).

    Args:
        name: a file name or one part of a path.

    Returns:
        True when the name holds no letter run outside the allow-list (a name of digits only too).
    """
    return all(piece.lower() in NAME_WORDS for piece in _NAME_PIECES.findall(name))
