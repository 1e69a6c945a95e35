"""The model comparison keeps working (``python -m benchmarks.compare_models --smoke``) and applies issue #24's
"better reader" rule as written: most held-out real levels read right, ties by mean AUC, phantom AUC within 0.02.
"""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks import compare_models


def _row(name: str, right: int, mean_auc: float, phantom_auc: float) -> dict:
    return {
        "name": name,
        "real_anatomy": {"right": right, "mean_auc": mean_auc},
        "phantom_test": {"auc": phantom_auc},
    }


def test_more_real_levels_read_right_wins():
    rows = [_row("demo", 61, 0.93, 0.90), _row("r50", 64, 0.90, 0.89)]
    assert compare_models.better_reader(rows)["name"] == "r50"


def test_tie_on_real_levels_is_broken_by_mean_auc():
    rows = [_row("demo", 61, 0.93, 0.90), _row("r50", 61, 0.95, 0.90)]
    assert compare_models.better_reader(rows)["name"] == "r50"
    rows = [_row("demo", 61, 0.96, 0.90), _row("r50", 61, 0.95, 0.90)]
    assert compare_models.better_reader(rows)["name"] == "demo"


def test_phantom_auc_more_than_002_below_the_baseline_excludes_a_candidate():
    rows = [_row("demo", 61, 0.93, 0.90), _row("r50", 70, 0.99, 0.879)]
    verdict = compare_models.better_reader(rows)
    assert verdict["name"] == "demo"
    assert verdict["excluded_by_phantom_auc"] == ["r50"]
    rows[1]["phantom_test"]["auc"] = 0.881
    assert compare_models.better_reader(rows)["name"] == "r50"


def test_model_spec_is_name_equals_path_or_a_path():
    assert compare_models.parse_model("demo=models/brain-ct-demo") == ("demo", "models/brain-ct-demo")
    assert compare_models.parse_model("out/r50-run1") == ("r50-run1", "out/r50-run1")
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=PATH"):
        compare_models.parse_model("=models/x")


@pytest.mark.slow
def test_smoke_runs_every_command_and_writes_the_table(tmp_path, capsys):
    out = tmp_path / "cmp.json"
    res = compare_models.main(["--smoke", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["smoke"] is True and saved["better_reader"]["name"] == "tiny (smoke)"
    row = saved["rows"][0]
    assert set(row) >= {"real_anatomy", "phantom_test", "localization", "scans", "speed", "size"}
    assert row["real_anatomy"]["of"] == sum(
        row["real_anatomy"]["held_out"][k]["n_normal"] + row["real_anatomy"]["held_out"][k]["n_lesion"]
        for k in ("dicom", "8bit")
    )
    assert 0.0 <= row["phantom_test"]["auc"] <= 1.0
    assert row["speed"]["forward_ms"] > 0 and row["speed"]["scan_40x512_s"] > 0
    (tn, fp), (fn, tp) = row["scans"]["validation"]["confusion_matrix"]
    assert tn + fp == 3 and fn + tp == 3  # 2 scans per seed × 3 seeds, heads 1, 3, 5 … bleed
    table = out.with_suffix(".md").read_text()
    assert "held-out real levels read right" in table and "40-slice 512² scan" in table
    assert res["rows"][0]["name"] == "tiny (smoke)"
    assert "better reader: tiny (smoke)" in capsys.readouterr().out
