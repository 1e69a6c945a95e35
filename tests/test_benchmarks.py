"""The speed benchmark keeps working: ``python -m benchmarks --smoke`` (tiny model, few repetitions).

No test asserts a time (timings on shared CI machines are noise); these check that every row runs,
the JSON has the documented shape, the table is printed, and the numbers are sane (positive, finite).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from benchmarks import run

    out = tmp_path_factory.mktemp("bench") / "results.json"
    res = run.main(["--smoke", "--out", str(out)])
    return res, out


def _positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_smoke_writes_json_with_every_smoke_row(smoke, capsys):
    res, out = smoke
    saved = json.loads(out.read_text())
    assert saved["smoke"] is True
    assert set(saved) >= {"machine", "targets", "models", "single", "stages", "series"}
    assert saved["machine"]["torch_threads"] >= 1
    assert saved["models"] == {"tiny": "random tiny ResNet (smoke)"}
    single = saved["single"]["tiny"]
    for key in ("floor", "predict", "predict+overlay+png", "overlay"):
        t = single["times"][key]
        assert _positive(t["median_ms"]) and t["p95_ms"] >= t["median_ms"] >= t["min_ms"] > 0
    assert _positive(single["ratio_predict_to_floor"])
    assert single["image"] == "128x128 DICOM"
    stages = saved["stages"]["tiny"]["times"]
    for key in (
        "decode",
        "resize",
        "window",
        "forward (inference_mode)",
        "overlay",
        "encode (PNG of the overlay)",
    ):
        assert _positive(stages[key]["median_ms"]), key
    series = saved["series"]["tiny"]
    assert series["slices"] == 4
    assert all(_positive(v) for v in series["slices_per_s"].values())
    sizes = saved["sizes"]
    assert sizes["image"] == "128x128 DICOM" and set(sizes["by_size"]) == {"32", "48", "64"}
    for row in sizes["by_size"].values():
        assert _positive(row["times"]["forward"]["median_ms"]) and _positive(row["ratio_predict_to_forward"])


@pytest.mark.slow
def test_smoke_table_lists_the_rows(smoke):
    from benchmarks import run

    res, _ = smoke
    text = run.table(res)
    assert "| one 512² DICOM slice" in text and "| tiny |" in text
    assert "slices/s" in text and "stages, ms" in text
    assert "read + explained (`predict`) / bare forward, 64 px" in text
    assert res["machine"]["cpu"] in text


def test_stats_median_and_p95_by_hand():
    from benchmarks.run import stats

    s = stats([0.001 * v for v in range(1, 21)])  # 1 … 20 ms
    assert s["median_ms"] == pytest.approx(10.5)
    assert s["p95_ms"] == pytest.approx(19.0)
    assert s["min_ms"] == pytest.approx(1.0)
    assert s["n"] == 20


def test_interleaved_runs_candidates_in_turn():
    from benchmarks.run import interleaved

    calls: list[str] = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert [len(v) for v in times.values()] == [3, 3]


def test_memory_child_reports_peak_rss(tmp_path, capsys):
    """The subprocess body of the memory row, run in-process on a tiny model."""
    from benchmarks import run

    model = run.make_model("tiny", tmp_path / "m")
    data = run.make_data(tmp_path / "d", 128, 2)
    run.main(["--child", "single", "--model", model["dir"], "--input", data["slice"]])
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["peak_rss_mb"] >= rec["rss_after_model_load_mb"] > 0


def test_localization_entry_point_still_separate():
    """``python -m benchmarks.localization`` is another module: the package entry point must not shadow it."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.localization", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "localization" in proc.stdout.lower() or "usage" in proc.stdout.lower()


@pytest.mark.slow
def test_real_anatomy_smoke_reports_every_section(capsys):
    from benchmarks import real_anatomy

    res = real_anatomy.main(["--smoke"])
    assert res["smoke"] is True and set(res["held_out"]) == {"dicom", "8bit"}
    dicom = res["held_out"]["dicom"]
    # 7 of the 28 GE levels are held out; lesions are painted only where they fit (not at base/vertex).
    assert dicom["n_normal"] == 7 and 0 < dicom["n_lesion"] <= 7 * 5
    assert 0.0 <= dicom["roc_auc"] <= 1.0 and 0.0 <= dicom["pointing_game"] <= 1.0
    assert set(res["pydicom"]) == {"J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm"}
    assert res["whole_scan"]["n_slices"] == 28
    assert "held-out real levels" in capsys.readouterr().out
