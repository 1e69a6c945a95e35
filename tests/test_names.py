"""Names from inside an upload are shown only when made of scanner/export words (issue 26, item 7).

:func:`brain_ct.collect.screen_name` is an allow-list: every letter run of a name must be one of
:data:`brain_ct.privacy.NAME_WORDS` and every digit run at most 6 digits. The table below holds
names that must show and names that carry a person's name, initials, a record number or a date,
which must not. The end-to-end tests put hostile names into a zip and a folder and search every
output a reading produces (series, scan JSON, listing, PDF, the CLI's JSON and table) for them.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
from helpers_models import make_tiny_model
from helpers_series import FakePredictor, head_series, to_bytes, zip_bytes

from brain_ct.__main__ import main
from brain_ct.collect import screen_name
from brain_ct.privacy import NAME_WORDS, name_words_known
from brain_ct.report import write_report
from brain_ct.scan import predict_series
from brain_ct.series import list_series, read_series


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        # what scanners, PACS/DICOMDIR exports and converters write
        ("IM000123", True),
        ("IM000123.dcm", True),
        ("IMG_0012.dcm", True),
        ("I0001", True),
        ("SE000001/IM000001", True),
        ("DICOM/ST000000/SE000002/IM000010", True),
        ("SER00003/IMG00012.dcm", True),
        ("EE1234", True),
        ("slice_012.png", True),
        ("head_ct_axial_05.png", True),
        ("CT_HEAD_AX_THIN_BONE_0001.dcm", True),
        ("Brain STD 5mm/image-0004.dcm", True),
        ("BrainSTD/ImageSlice12.dcm", True),  # capitals split into words: Brain, STD, Image, Slice
        ("scan.nii.gz", True),
        ("LICENSE", True),
        ("README.md", True),
        ("DICOMDIR", True),
        ("dcm_qa_ct-GE/IM-0001-0001.dcm", True),
        ("0001.dcm", True),
        ("export 2/series 3/frame 12.jpg", True),
        # a person's name, initials, a record number, a date: hidden
        ("JS_570312", False),
        ("JS_570312.dcm", False),
        ("john_smith_ct_01.dcm", False),
        ("MRN123456.dcm", False),
        ("smith-john-1957.dcm", False),
        ("mary jones/IM0001.dcm", False),
        ("mary jones", False),
        ("JohnSmith.dcm", False),
        ("CT_Smith_0001.dcm", False),
        ("JSmith0001", False),
        ("IM0001_ab", False),
        ("ct_head_19570312.dcm", False),  # 8 digits: a date
        ("IM_1234567", False),  # 7 digits: a record number
        ("1.2.840.113619.2.55.3.dcm", False),  # a UID: too many digit runs
        ("IM^0001", False),
        ("<img src=x>.dcm", False),
        ("a" * 49, False),
        ("", False),
    ],
)
def test_names_are_shown_only_when_made_of_scanner_words(name: str, shown: bool) -> None:
    assert screen_name(name) is shown


def test_identifying_value_of_the_header_hides_an_allowed_name() -> None:
    assert screen_name("HEAD_0001.dcm")
    assert not screen_name("HEAD_0001.dcm", identifying=["head"])


@pytest.mark.parametrize(
    ("name", "known"),
    [("IMG0001.dcm", True), ("HeadCT", True), ("ImageSlice", True), ("JS", False), ("Imogen", False)],
)
def test_letter_runs_are_split_into_words(name: str, known: bool) -> None:
    assert name_words_known(name) is known


def test_the_word_list_holds_no_personal_names() -> None:
    # A few common first names, surnames and two-letter initials: none may be an allowed word.
    assert not {"john", "mary", "smith", "jones", "js", "jd", "mrn", "dob", "id", "pid"} & NAME_WORDS
    assert all(re.fullmatch(r"[a-z]+", w) for w in NAME_WORDS)


# --------------------------------------------------------------------------- end to end

HOSTILE = [
    "john_smith_ct_01.dcm",
    "MRN123456.dcm",
    "JS_570312.dcm",
    "smith-john-1957.dcm",
    "mary jones/IM000001.dcm",
]
ALLOWED = "IM000123.dcm"
#: Parts of the hostile names: none may appear in an output (case-insensitive).
NEEDLES = ("john", "smith", "mary", "jones", "mrn", "123456", "570312", "1957", "js_")


def _needles_in(text: str) -> list[str]:
    return [n for n in NEEDLES if n in text.lower()]


@pytest.fixture
def hostile_zip(make_ct_dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zip of six slices of one series: five under hostile names, one under a scanner name."""
    slices = head_series(make_ct_dataset, len(HOSTILE) + 1)
    names = [*HOSTILE, ALLOWED]
    path = tmp_path_factory.mktemp("names") / "upload.zip"
    path.write_bytes(zip_bytes([(n, to_bytes(ds)) for n, (_, ds) in zip(names, slices, strict=True)]))
    return path


def test_hostile_names_reach_no_library_output(hostile_zip: Path, tmp_path: Path) -> None:
    series = read_series(hostile_zip)
    assert len(series.files) == len(HOSTILE) + 1
    # The control: a scanner name is shown as it is, so the searches below would find a leak.
    assert ALLOWED in series.files
    assert sum(f.startswith("slice ") and " mm" in f for f in series.files) == len(HOSTILE) - 1
    assert "IM000001.dcm" in series.files  # the base name of mary jones/IM000001.dcm, without the folder
    result = predict_series(FakePredictor(defaultdict(lambda: 0.1)), series)
    texts = {
        "series": json.dumps(series.to_dict()),
        "scan JSON": json.dumps(result.to_dict()),
        "listing": json.dumps([s.to_dict() for s in list_series(hostile_zip)]),
        "pdf": _pdf_text(write_report(result, tmp_path / "report.pdf")),
    }
    assert ALLOWED in texts["scan JSON"]
    leaks = {k: _needles_in(v) for k, v in texts.items()}
    assert not any(leaks.values()), leaks


def test_hostile_folder_names_reach_no_library_output(make_ct_dataset, tmp_path: Path) -> None:
    folder = tmp_path / "upload"
    (folder / "mary jones").mkdir(parents=True)
    (folder / "SE1").mkdir()
    slices = head_series(make_ct_dataset, 3)
    (folder / "mary jones" / "JS_570312.dcm").write_bytes(to_bytes(slices[0][1]))
    (folder / "mary jones" / "IM0002.dcm").write_bytes(to_bytes(slices[1][1]))
    (folder / "SE1" / "IM0003.dcm").write_bytes(to_bytes(slices[2][1]))
    series = read_series(folder)
    assert series.files == ["slice 1 at 0.0 mm", "IM0002.dcm", "SE1/IM0003.dcm"]
    assert not _needles_in(json.dumps(series.to_dict()))


@pytest.mark.slow
def test_hostile_names_reach_no_cli_output(hostile_zip: Path, tmp_path: Path, capsys) -> None:
    model = make_tiny_model(tmp_path / "model")
    code = main(["predict", str(hostile_zip), "--model", str(model), "--json"])
    json_out = capsys.readouterr()
    assert code == 0, json_out.err[-2000:]
    code = main(["predict", str(hostile_zip), "--model", str(model)])
    table = capsys.readouterr()
    assert code == 0, table.err[-2000:]
    code = main(["predict", "--list-series", str(hostile_zip)])
    listing = capsys.readouterr()
    assert code == 0, listing.err[-2000:]
    texts = {"json": json_out.out + json_out.err, "table": table.out + table.err, "list": listing.out}
    assert ALLOWED in texts["json"] and ALLOWED in texts["table"]
    # The path the user typed is echoed as given: only names from inside the upload are screened.
    assert str(hostile_zip.name) in texts["json"] + texts["table"]
    leaks = {k: _needles_in(v) for k, v in texts.items()}
    assert not any(leaks.values()), leaks


def _pdf_text(path: str | Path) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() or "" for page in PdfReader(str(path)).pages)
