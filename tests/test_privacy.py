"""brain_ct.privacy: the allow-list, hashed UIDs, identifying values and scrubbing."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from brain_ct import privacy
from brain_ct.errors import InvalidInputError
from brain_ct.io import load_image

IDENTITY = {
    "PatientName": "Doe^Jane^Q",
    "PatientID": "MRN-00417731",
    "PatientBirthDate": "19610314",
    "PatientAddress": "12 Elm Street, Springfield",
    "InstitutionName": "St. Example General Hospital",
    "ReferringPhysicianName": "Houseman^Gregory",
    "AccessionNumber": "ACC998877",
    "StudyDate": "20240105",
    "StudyTime": "142233",
    "StudyDescription": "CT HEAD for Jane Doe",
    "OperatorsName": "Techson^Tina",
    "StationName": "CTSCAN-ROOM-7",
}


@pytest.fixture
def identified_ct(make_ct_dataset, head_hu):
    """A CT dataset full of identifying tags, one of them nested in a sequence."""
    pixels = np.round(head_hu(128) + 1024).astype(np.int16)
    ds = make_ct_dataset(pixels, BodyPartExamined="HEAD", ConvolutionKernel="H30s", KVP="120", **IDENTITY)
    item = Dataset()
    item.PerformingPhysicianName = "Nested^Nora"
    ds.RequestAttributesSequence = [item]
    return ds


def test_no_identifying_value_reaches_meta(identified_ct, dicom_bytes):
    ct = load_image(dicom_bytes(identified_ct), name="scan.dcm")
    text = json.dumps(ct.meta).lower()
    for value in privacy.identifying_values(identified_ct):
        assert value.lower() not in text, value
    for needle in ("doe", "jane", "mrn-00417731", "19610314", "springfield", "houseman", "nora", "20240105"):
        assert needle not in text
    assert str(identified_ct.SeriesInstanceUID) not in text
    assert str(identified_ct.SOPInstanceUID) not in text
    assert set(ct.meta) <= privacy.ALLOWED_META_KEYS
    assert ct.meta["BodyPartExamined"] == "HEAD" and ct.meta["KVP"] == 120.0
    assert ct.name == "scan.dcm"


def test_allow_list_holds_no_identifying_tag():
    assert not set(privacy.ALLOWED_TAGS) & set(privacy.IDENTIFYING_TAGS)
    for keyword in privacy.ALLOWED_TAGS + privacy.IDENTIFYING_TAGS:
        assert tag_for_keyword(keyword) is not None, keyword
    for keyword in privacy.ALLOWED_TAGS:
        assert dictionary_VR(tag_for_keyword(keyword)) not in privacy.IDENTIFYING_VRS, keyword


def test_allow_listed_text_containing_a_name_is_dropped(make_ct_dataset):
    ds = make_ct_dataset(np.zeros((64, 64), np.int16), PatientName="Headly^Ann", BodyPartExamined="HEADLY")
    meta = privacy.extract_meta(ds)
    assert "BodyPartExamined" not in meta
    assert meta["Modality"] == "CT"


def test_identifying_values_cover_nested_pn_and_dates(identified_ct):
    values = privacy.identifying_values(identified_ct)
    for expected in (
        "Doe^Jane^Q",
        "Doe",
        "Jane",
        "Jane Doe",
        "Nested^Nora",
        "19610314",
        "1961-03-14",
        "MRN-00417731",
    ):
        assert expected in values
    assert str(identified_ct.SeriesInstanceUID) in values
    identified_ct.PatientSex = "F"
    identified_ct.PatientWeight = "70"
    values = privacy.identifying_values(identified_ct)
    assert "F" not in values and "70" not in values  # never shown, but not searched for in text


def test_scrub_text(identified_ct):
    text = (
        "Slice of DOE, JANE (MRN-00417731) born 1961-03-14 at St. Example General Hospital: probability 70%"
    )
    clean = privacy.scrub_text(text, identified_ct)
    for gone in ("DOE", "JANE", "MRN-00417731", "1961-03-14", "St. Example General Hospital"):
        assert gone not in clean
    assert clean.startswith("Slice of [removed] ([removed]) born [removed] at [removed]")
    assert "probability 70%" in clean
    # whole words only: a name inside another word is left alone
    assert privacy.scrub_text("Doeskin and Janet", identified_ct) == "Doeskin and Janet"
    assert privacy.scrub_text("nothing here", None, values=["x"]) == "nothing here"
    assert privacy.scrub_text("call Bob^Smith", values=["Bob^Smith"]) == "call [removed]"


def test_hashed_uid():
    a, b = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    assert privacy.hashed_uid(a) == privacy.hashed_uid(a)
    assert privacy.hashed_uid(a) != privacy.hashed_uid(b)
    assert len(privacy.hashed_uid(a)) == 16 and "3680043" not in privacy.hashed_uid(a)
    assert privacy.hashed_uid(a, salt=b"x") != privacy.hashed_uid(a, salt=b"y")
    assert privacy.hashed_uid(a, salt=b"x") == privacy.hashed_uid(a + " ", salt=b"x")


def test_same_series_gets_same_hash_in_meta(make_ct_dataset, dicom_bytes, head_hu):
    pixels = np.round(head_hu(128) + 1024).astype(np.int16)
    first = make_ct_dataset(pixels)
    second = make_ct_dataset(pixels, SeriesInstanceUID=first.SeriesInstanceUID)
    other = make_ct_dataset(pixels)
    hashes = [load_image(dicom_bytes(ds)).meta["SeriesUIDHash"] for ds in (first, second, other)]
    assert hashes[0] == hashes[1] != hashes[2]


def test_no_identifying_value_in_errors_or_logs(identified_ct, dicom_bytes, caplog):
    identified_ct.Rows = 4096  # the pixel data no longer matches: decoding fails
    identified_ct.StudyInstanceUID = "1.2.840.0123.77x"  # invalid UI: pydicom warns and logs it, quoted
    data = dicom_bytes(identified_ct)  # (writing may warn; only reading is under test)
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    with pytest.raises(InvalidInputError) as info:
        load_image(data)
    assert "1.2.840.0123.77x" in data.decode("latin-1")
    logged = " ".join(r.getMessage() for r in caplog.records)
    for value in privacy.identifying_values(identified_ct):
        assert value not in str(info.value)
        assert value not in logged


# --------------------------------------------------------------------------- free text screening


@pytest.mark.parametrize(
    "text",
    [
        "HEAD",
        "BRAIN",
        "CT HEAD W/O",
        "5/5mm Plain",
        "Lv2",
        "H30s",
        "FC26",
        "Axial 2.5 mm",
        "ORIGINAL",
        "HEAD ROUTINE 120kV",
        "JPEG 2000 Image Compression",
    ],
)
def test_safe_free_text_keeps_technical_text(text):
    assert privacy.safe_free_text(text) == text
    assert privacy.safe_free_text(f"  {text} ") == text


@pytest.mark.parametrize(
    "text",
    [
        "ZORBLATT^QUENNELL",  # a DICOM person name
        "Doe^Jane^Q",
        "PIDZ99183",  # an ID-like number run
        "MRN 00417731",
        "1.2.826.0.1.3680043.8.498.1",  # a UID
        "20210915",  # dates in any common form
        "2021-09-15",
        "15.09.2021",
        "09/15/2021",
        "head of Doe, Jane",  # "Surname, Given"
        "call 555-0199",  # a phone number
        "jane.doe@example.org",
        "<img src=x>",  # markup: a tracking pixel in a page
        "tab\there",  # control characters
        "x" * 65,  # longer than any free-text DICOM value (LO: 64)
        "",
        "   ",
    ],
)
def test_safe_free_text_drops_identifying_text(text):
    assert privacy.safe_free_text(text) is None


def test_safe_free_text_of_a_non_string_is_none():
    assert privacy.safe_free_text(None) is None
    assert privacy.safe_free_text(12345) is None


def test_allow_listed_free_text_tags_are_screened(make_ct_dataset):
    ds = make_ct_dataset(
        np.zeros((64, 64), np.int16),
        ImageType=["ORIGINAL", "PRIMARY", "ZORBLATT^QUENNELL"],
        ConvolutionKernel="PIDZ99183",
        BodyPartExamined="20210915",
        PatientPosition="HFS",
    )
    meta = privacy.extract_meta(ds)
    text = json.dumps(meta)
    for needle in ("ZORBLATT", "QUENNELL", "99183", "20210915"):
        assert needle not in text
    assert meta["ImageType"] == ["ORIGINAL", "PRIMARY"]  # the rest of a multi-valued tag is kept
    assert "ConvolutionKernel" not in meta and "BodyPartExamined" not in meta
    assert meta["PatientPosition"] == "HFS"
    assert meta["Modality"] == "CT"
