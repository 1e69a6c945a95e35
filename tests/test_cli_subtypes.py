"""Subtype models in ``python -m brain_ct predict`` / ``report``: ``--heatmap-target``, the JSON fields, the
``subtypes`` column; binary models' output unchanged (brain_ct.cli; issue 15 item 4)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers_models import make_tiny_model

from brain_ct.__main__ import main
from brain_ct.cli.predict import _format_table
from brain_ct.labels import SUBTYPE_LABELS, SUBTYPES

#: The binary keys of a single-file JSON record, as before subtype models existed.
BINARY_KEYS = {"file", "label", "probability", "threshold", "regions", "explanation", "source", "meta"}
BINARY_KEYS |= {"model", "head_check"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pydicom.filewriter import dcmwrite

    from brain_ct.synthetic import generate_series, to_dicom

    root = tmp_path_factory.mktemp("cli_st")
    phantoms = generate_series(11, n_slices=4, size=128, hemorrhage=True)
    scan = root / "scan.zip"
    with zipfile.ZipFile(scan, "w") as zf:
        for i, phantom in enumerate(phantoms):
            buffer = io.BytesIO()
            dcmwrite(buffer, to_dicom(phantom, instance_number=i + 1), enforce_file_format=True)
            zf.writestr(f"img_{i}.dcm", buffer.getvalue())
            if i == 2:
                (root / "one.dcm").write_bytes(buffer.getvalue())
    return {
        "one": root / "one.dcm",
        "scan": scan,
        "subtype": make_tiny_model(root / "sub", labels=SUBTYPE_LABELS, seed=3),
        "binary": make_tiny_model(root / "bin"),
        "root": root,
    }


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_subtype_json_has_subtypes_and_heatmap_target(inputs, capsys) -> None:
    argv = ["predict", str(inputs["one"]), str(inputs["scan"]), "--model", str(inputs["subtype"]), "--json"]
    assert main(argv) == 0
    single, scan = _lines(capsys.readouterr().out)
    assert list(single["subtypes"]) == list(SUBTYPES) and single["heatmap_target"] == "any"
    assert all(0.0 <= p <= 1.0 for p in single["subtypes"].values())
    assert "members" not in single  # a single model, not an ensemble
    for s in scan["slices"]:
        assert list(s["subtypes"]) == list(SUBTYPES) and s["heatmap_target"] == "any"
    assert list(scan["subtypes"]) == list(SUBTYPES)
    for name, summary in scan["subtypes"].items():
        top = max(s["subtypes"][name] for s in scan["slices"])
        assert 0.0 <= summary["probability"] <= top + 1e-9
        assert all(0 <= i < scan["n_slices"] for i in summary["slices"])
    assert isinstance(scan["subtype_explanation"], str)


def test_heatmap_target_changes_the_heatmap_not_the_reading(inputs, tmp_path: Path, capsys) -> None:
    base = ["predict", str(inputs["one"]), "--model", str(inputs["subtype"]), "--json", "--heatmaps"]
    assert main([*base, str(tmp_path / "default")]) == 0
    (default,) = _lines(capsys.readouterr().out)
    assert main([*base, str(tmp_path / "subdural"), "--heatmap-target", "Subdural"]) == 0
    (chosen,) = _lines(capsys.readouterr().out)
    assert (default["heatmap_target"], chosen["heatmap_target"]) == ("any", "subdural")
    assert chosen["probability"] == default["probability"] and chosen["subtypes"] == default["subtypes"]
    a, b = np.load(default["heatmap"]), np.load(chosen["heatmap"])
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-3)


def test_subtype_table_has_the_subtypes_column_and_the_scan_sentence(inputs, capsys) -> None:
    argv = ["predict", str(inputs["one"]), str(inputs["scan"]), "--model", str(inputs["subtype"])]
    assert main([*argv, "--heatmap-target", "epidural"]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[:2]
    assert header.split() == ["file", "label", "P(hem)", "threshold", "subtypes", "strongest", "region"]
    assert main([*argv, "--json"]) == 0
    single, scan = _lines(capsys.readouterr().out)
    top = max(single["subtypes"], key=single["subtypes"].get)
    assert f"{top} {single['subtypes'][top]:.2f}" in row
    assert "heatmaps explain the epidural output (--heatmap-target epidural)" in out
    assert scan["subtype_explanation"]  # a random subtype model's scan always has a leading subtype ≥ 0.1
    assert f"{inputs['scan']} (scan): {scan['subtype_explanation']}" in out


def test_binary_model_refuses_a_subtype_target_before_reading(inputs, capsys) -> None:
    missing = str(inputs["root"] / "not-read.png")  # never opened: the flag is refused first
    for command in (["predict", missing], ["report", missing, "--out", str(inputs["root"] / "r.pdf")]):
        code = main([*command, "--model", str(inputs["binary"]), "--heatmap-target", "subdural"])
        captured = capsys.readouterr()
        assert code == 2 and captured.out == ""
        assert "--heatmap-target subdural" in captured.err
        assert "The model's labels: normal, hemorrhage." in captured.err
        assert "not-read" not in captured.err and "Traceback" not in captured.err
    assert not (inputs["root"] / "r.pdf").exists()


def test_unknown_target_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["predict", "x.png", "--heatmap-target", "chronic"])
    assert info.value.code == 2
    assert "invalid choice: 'chronic'" in capsys.readouterr().err


def test_binary_json_and_table_are_unchanged(inputs, capsys) -> None:
    argv = ["predict", str(inputs["one"]), str(inputs["scan"]), "--model", str(inputs["binary"])]
    assert main([*argv, "--json", "--heatmap-target", "any"]) == 0
    single, scan = _lines(capsys.readouterr().out)
    assert set(single) == BINARY_KEYS
    assert not {"subtypes", "subtype_explanation"} & set(scan)
    assert all(
        set(s) == {"file", "index", "label", "probability", "threshold", "regions", "explanation"}
        for s in scan["slices"]
    )
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["file", "label", "P(hem)", "threshold", "strongest", "region"]
    assert "subtype" not in out.replace(str(inputs["root"]), "") and "heatmaps explain" not in out


def test_binary_table_text_is_byte_identical() -> None:
    """The table of fixed binary records, exactly as the CLI printed it before subtype models."""

    def region(side: str, name: str) -> dict:
        return {"bbox": [1, 2, 3, 4], "side": side, "region": name, "score": 0.8}

    single = {
        "file": "a.png",
        "label": "hemorrhage",
        "probability": 0.8123,
        "threshold": 0.5,
        "regions": [region("left", "frontal")],
        "explanation": "why a",
        "head_check": "passed",
    }
    bad = {"file": "b.dcm", "error": {"type": "InvalidInputError", "message": "b.dcm: not DICOM"}}
    slices = [
        {
            "file": f"IM{i}",
            "index": i,
            "label": "normal",
            "probability": 0.1 * i,
            "threshold": 0.5,
            "regions": [],
            "explanation": f"why {i}",
        }
        for i in range(3)
    ]
    scan = {
        "file": "scan.zip",
        "label": "normal",
        "probability": 0.25,
        "threshold": 0.5,
        "n_slices": 3,
        "positive_slices": [],
        "slices": slices,
        "errors": [],
        "skipped": [],
        "head_check": "passed",
    }
    out = io.StringIO()
    _format_table([single, bad, scan], out)
    assert out.getvalue() == (
        "file      label       P(hem)  threshold  strongest region\n"
        "a.png     hemorrhage  0.812   0.500      left frontal\n"
        "b.dcm     ERROR                          InvalidInputError: b.dcm: not DICOM\n"
        "scan.zip  normal      0.250   0.500      scan of 3 slices; positive slices: none\n"
        "\n"
        "a.png: why a\n"
        "scan.zip slice 1 of 3 (IM0): why 0\n"
        "scan.zip slice 2 of 3 (IM1): why 1\n"
        "scan.zip slice 3 of 3 (IM2): why 2\n"
    )


def test_subtype_cell_lists_the_shown_subtypes_or_the_top_one() -> None:
    def record(**subtypes: float) -> dict:
        probs = dict.fromkeys(SUBTYPES, 0.01) | subtypes
        return {
            "file": "x.png",
            "label": "hemorrhage",
            "probability": 0.9,
            "threshold": 0.5,
            "regions": [],
            "explanation": "why",
            "subtypes": probs,
            "heatmap_target": "any",
        }

    out = io.StringIO()
    _format_table([record(subdural=0.81, subarachnoid=0.12), record(epidural=0.05)], out)
    rows = out.getvalue().splitlines()[1:3]
    assert "subdural 0.81, subarachnoid 0.12" in rows[0]
    assert "epidural 0.05" in rows[1] and "subdural" not in rows[1]


def test_report_cli_with_a_subtype_heatmap(inputs, tmp_path: Path, capsys) -> None:
    from pypdf import PdfReader

    out = tmp_path / "r.pdf"
    argv = ["report", str(inputs["scan"]), "--out", str(out), "--model", str(inputs["subtype"])]
    assert main([*argv, "--heatmap-target", "subdural"]) == 0, capsys.readouterr().err
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(str(out)).pages).split())
    assert "Subtype Scan probability Slices where it leads" in text
    assert "heatmap overlay for the subdural output" in text
