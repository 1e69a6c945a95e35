"""Choose a model's scan rule on validation scans, and ``python -m train.scan_rule``.

The slice threshold is chosen on validation slices, bounded on real normal ones (:mod:`train.evaluate`); the
scan rule (:class:`brain_ct.scan.ScanRule`: how slice probabilities make a scan's label) is chosen here the
same way one level up, on validation **scans**:

* phantom scans, half with a bleed: ``--series`` heads of ``--slices`` contiguous 5-mm slices per master
  seed in ``--seed`` (:func:`brain_ct.cli.synth.write_scans`, exactly what ``python -m brain_ct synth
  --series K --slices N --seed S`` writes), written as DICOM and read back as a user's scan is
  (:func:`brain_ct.series.read_series`);
* the held-out real normal levels of ``--real_anatomy_dir`` (the levels :func:`train.data.real_anatomy_split`
  keeps out of training), read together as one sparse normal scan.

Every slice is scored once (:func:`score_scans`); each candidate rule of :func:`candidate_rules` then reads
every scan. The chosen rule (:func:`choose_rule`) is the most sensitive candidate on the bleed scans whose
false-positive rate on normal scans is ≤ ``--max_scan_fpr`` within each domain (phantom scans; real
scans, which with one real scan means it must read "normal"), as ``real_fpr`` bounds the slice threshold;
among equally sensitive candidates the one with the fewest false positives, then the strictest (highest
single-slice bar, end slices never alone, widest end zones). Candidates keep a lone interior slice able to
make a scan positive (single-slice bar < 1). Rules are relative to the slices' own threshold, so one rule
serves DICOM and 8-bit scans.

``--write`` records the rule as ``brain_ct_scan_rule`` in the model folder's config.json (weights
untouched); ``--evaluate_only`` reads the scans by the model's recorded rule and the default rule and
chooses nothing (the check on seeds the rule was not chosen on). Both print scan-level sensitivity and
specificity; ``--output`` writes every number and each scan's reading as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from brain_ct.cli.synth import write_scans
from brain_ct.errors import BrainCTError, InvalidInputError
from brain_ct.jsonable import json_safe
from brain_ct.predictor import Predictor
from brain_ct.scan import ScanRule, head_areas
from brain_ct.series import Series, context_neighbors, read_series
from train.data.real_anatomy import real_anatomy_split
from train.metrics import binary_metrics

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REAL_DIR = ROOT / "data" / "real_anatomy" / "dcm_qa_ct-GE"
#: The bound on normal scans: a whole scan called "hemorrhage" is a bigger false alarm than one slice
#: (whose bound is ``train.evaluate``'s 0.10).
DEFAULT_MAX_SCAN_FPR = 0.05

#: The candidate grid (:func:`candidate_rules`).
SINGLE_SLICE_FRACTIONS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
END_FRACTIONS = (0.0, 0.05, 0.1, 0.15, 0.2)
END_AREAS = (0.0, 0.4, 0.5, 0.6)
END_SINGLE_SLICE_FRACTIONS = (None, 0.8, 0.9, 0.95)
MIN_POSITIVE_SLICES = (2, 3)


@dataclass(frozen=True)
class ScanScores:
    """One validation scan, scored once, for every candidate rule to read.

    Attributes:
        name: what it is, e.g. ``"phantom seed 11 series_003"``; never a DICOM tag.
        label: 1 when the scan shows a bleed on some slice, else 0.
        domain: ``"phantom"`` or ``"real"``.
        probabilities: float64 ``[n]`` P(hemorrhage) per slice, anatomical order (inferior → superior).
        areas: float64 ``[n]`` head cross-section per slice (:func:`brain_ct.scan.head_areas`).
        threshold: the slices' own threshold (the model's for their input kind).
    """

    name: str
    label: int
    domain: str
    probabilities: np.ndarray
    areas: np.ndarray
    threshold: float

    def read(self, rule: ScanRule) -> tuple[float, str]:
        """(scan probability, label) of this scan by ``rule``."""
        probability, label, _ = rule.apply(self.probabilities, self.threshold, self.areas)
        return probability, label


def score_series(predictor: Predictor, series: Series, name: str, label: int, domain: str) -> ScanScores:
    """P(hemorrhage) of every slice of ``series`` (plain forward passes, as :func:`brain_ct.scan.predict_series`
    feeds them: slice-context models get their neighbours) and the slices' head areas."""
    slices = list(series.slices)
    k = predictor.settings.context_slices
    probabilities = predictor.probabilities(slices, neighbors=context_neighbors(slices, k) if k else None)[0]
    kinds = {ct.source for ct in slices}
    thresholds = {predictor.settings.threshold_for(kind) for kind in kinds}
    if len(thresholds) != 1:
        raise InvalidInputError(f"scan {name!r} mixes input kinds {sorted(kinds)}; read one kind per scan")
    return ScanScores(
        name=name,
        label=int(label),
        domain=domain,
        probabilities=np.asarray(probabilities, dtype=np.float64),
        areas=head_areas(slices),
        threshold=float(thresholds.pop()),
    )


def phantom_scans(
    predictor: Predictor, seeds: Sequence[int], n_series: int, n_slices: int, size: int = 256
) -> list[ScanScores]:
    """Score the phantom scans ``python -m brain_ct synth --series n_series --slices n_slices --seed S``
    writes, for each S in ``seeds`` (written to a temporary folder and read back as DICOM series)."""
    out: list[ScanScores] = []
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="scan_rule_") as tmp:
            write_scans(tmp, n_series, n_slices, seed=int(seed), size=size)
            with open(Path(tmp) / "scans.csv", newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            for row in rows:
                series = read_series(str(Path(tmp) / row["folder"]))
                name = f"phantom seed {seed} {row['folder']}"
                out.append(score_series(predictor, series, name, int(row["label"]), "phantom"))
        logger.info("scored %d phantom scans of seed %d", len(rows), seed)
    return out


def real_scans(predictor: Predictor, real_dir: str | Path) -> tuple[ScanScores, ScanScores]:
    """``(held-out levels, whole scan)`` of a folder of real normal head-CT DICOMs: the levels training keeps
    out (:func:`train.data.real_anatomy_split`) read as one sparse normal scan (a validation scan), and every
    level as one scan (a check only: most of its levels are training levels).

    Raises:
        InvalidInputError: no such folder, or it holds no held-out levels.
    """
    if not Path(real_dir).is_dir():
        raise InvalidInputError(f"{str(real_dir)!r} is not a folder of real normal head-CT DICOMs")
    _, held = real_anatomy_split(real_dir)
    if not held:
        raise InvalidInputError(
            f"--real_anatomy_dir {str(real_dir)!r} has no held-out levels (too few slices)"
        )
    held_scan = score_series(predictor, read_series(held), "real held-out levels", 0, "real")
    whole = score_series(predictor, read_series(str(real_dir)), "real whole scan", 0, "real")
    return held_scan, whole


def candidate_rules() -> list[ScanRule]:
    """Every rule of the grid (the default rule among them), each once: without end slices the end
    settings mean nothing, so those rules appear once per single-slice bar and run length."""
    rules: list[ScanRule] = []
    for f, e, a, f_end, k in product(
        SINGLE_SLICE_FRACTIONS, END_FRACTIONS, END_AREAS, END_SINGLE_SLICE_FRACTIONS, MIN_POSITIVE_SLICES
    ):
        if e == 0 and a == 0 and f_end is not None:
            continue
        rules.append(
            ScanRule(
                min_positive_slices=k,
                single_slice_fraction=f,
                end_fraction=e,
                end_area=a,
                end_single_slice_fraction=f_end,
            )
        )
    return rules


def scan_metrics(rule: ScanRule, scans: Sequence[ScanScores]) -> dict[str, Any]:
    """Scan-level metrics of ``rule`` (:func:`train.evaluate.binary_metrics` on the scans, each at its own
    threshold) plus the false positives per domain: ``{domain}_false_positives`` of ``n_{domain}_normal``."""
    readings = [s.read(rule) for s in scans]
    labels = np.asarray([s.label for s in scans], dtype=np.int64)
    m = binary_metrics(
        labels,
        np.asarray([p for p, _ in readings]),
        float(np.median([s.threshold for s in scans])),
        per_example=np.asarray([s.threshold for s in scans]),
    )
    called = np.asarray([lab == "hemorrhage" for _, lab in readings])
    for domain in sorted({s.domain for s in scans}):
        normal = np.asarray([s.domain == domain and s.label == 0 for s in scans])
        m[f"n_{domain}_normal"] = int(normal.sum())
        m[f"{domain}_false_positives"] = int((called & normal).sum())
    return m


def _strictness(rule: ScanRule) -> tuple[float, ...]:
    """Larger is stricter on normal scans (the tie-break among equally sensitive rules)."""
    f_end = 2.0 if rule.end_single_slice_fraction is None else rule.end_single_slice_fraction
    return (rule.single_slice_fraction, f_end, rule.end_fraction, rule.end_area, rule.min_positive_slices)


def choose_rule(
    scans: Sequence[ScanScores],
    max_scan_fpr: float = DEFAULT_MAX_SCAN_FPR,
    candidates: Sequence[ScanRule] | None = None,
) -> tuple[ScanRule, dict[str, Any]]:
    """The rule for a model: the most sensitive candidate whose false-positive rate on the normal scans
    of each domain is ≤ ``max_scan_fpr`` (ties: fewest false positives, then the strictest).

    Returns:
        ``(rule, its scan_metrics)``.

    Raises:
        InvalidInputError: no bleed or no normal scans, a bound outside [0, 1), or no candidate within it.
    """
    if not 0.0 <= max_scan_fpr < 1.0:
        raise InvalidInputError(f"--max_scan_fpr must be in [0, 1); got {max_scan_fpr}")
    labels = [s.label for s in scans]
    if 1 not in labels or 0 not in labels:
        raise InvalidInputError(
            f"choosing a scan rule needs bleed and normal scans; got {labels.count(1)} bleed and "
            f"{labels.count(0)} normal (give more --series, ≥ 2)"
        )
    y = np.asarray(labels)
    normal_in = {
        d: np.asarray([s.label == 0 and s.domain == d for s in scans]) for d in {s.domain for s in scans}
    }
    allowed = {d: max_scan_fpr * mask.sum() + 1e-9 for d, mask in normal_in.items()}
    best: tuple[tuple[float, ...], ScanRule] | None = None
    lowest_fpr = 1.0  # the smallest worst-domain false-positive rate any candidate reaches (for the refusal)
    for rule in candidates if candidates is not None else candidate_rules():
        # The labels alone here (scan_metrics, with its AUC, only for the winner): ~1000 rules are read.
        called = np.asarray([s.read(rule)[1] == "hemorrhage" for s in scans])
        fps = {d: int((called & mask).sum()) for d, mask in normal_in.items()}
        lowest_fpr = min(lowest_fpr, max(fps[d] / max(int(normal_in[d].sum()), 1) for d in fps))
        if any(fps[d] > allowed[d] for d in fps):
            continue
        key = (float(called[y == 1].mean()), -sum(fps.values()), *_strictness(rule))
        if best is None or key > best[0]:
            best = (key, rule)
    if best is None:
        raise InvalidInputError(
            f"no candidate scan rule keeps the false-positive rate on normal scans ≤ {max_scan_fpr}; the "
            f"model scores normal scans too high (the strictest candidate reaches {lowest_fpr:.3f} in its "
            "worst domain). Allow more (--max_scan_fpr) or improve the model"
        )
    return best[1], scan_metrics(best[1], scans)


def _rule_record(
    rule: ScanRule, m: dict[str, Any], args: argparse.Namespace, n_candidates: int
) -> dict[str, Any]:
    """What ``brain_ct_scan_rule`` records: the rule, how it was chosen and its validation numbers."""
    normals = " and ".join(
        f"{m[f'{d}_false_positives']}/{m[f'n_{d}_normal']} {d}"
        for d in ("phantom", "real")
        if f"n_{d}_normal" in m
    )
    return {
        **rule.to_dict(),
        "description": (
            f"the most sensitive of {n_candidates} candidate rules whose false-positive rate on normal "
            f"validation scans is ≤ {args.max_scan_fpr} in each domain (here {normals}: phantom scans of seeds "
            f"{' '.join(map(str, args.seed))}, {args.series} per seed of {args.slices} slices, and the "
            "held-out real levels read as one scan); scan sensitivity "
            f"{m['sensitivity']:.3f} on {m['n_hemorrhage']} bleed scans, specificity {m['specificity']:.3f}"
        ),
        "strategy": "scan_fpr",
        "max_scan_fpr": args.max_scan_fpr,
        "validation": {
            "seeds": list(args.seed),
            "n_series": args.series,
            "n_slices": args.slices,
            **{k: m[k] for k in ("n", "n_hemorrhage", "n_normal", "sensitivity", "specificity")},
            **{k: v for k, v in m.items() if k.endswith(("_false_positives", "_normal")) and k != "n_normal"},
        },
    }


def write_rule(model_dir: str | Path, record: dict[str, Any]) -> Path:
    """Set ``brain_ct_scan_rule`` in ``model_dir/config.json`` (keys sorted, 2-space indent, as
    transformers writes it); nothing else changes.

    Raises:
        InvalidInputError: ``model_dir`` has no config.json (a Hub id cannot be written to).
    """
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise InvalidInputError(
            f"--write needs a model folder with a config.json; {str(model_dir)!r} has none (a Hub id "
            "cannot be written to: download the model into a folder first)"
        )
    config = json.loads(path.read_text(encoding="utf-8"))
    config["brain_ct_scan_rule"] = json_safe(record)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _scan_rows(scans: Sequence[ScanScores], rules: dict[str, ScanRule]) -> list[dict[str, Any]]:
    rows = []
    for s in scans:
        row: dict[str, Any] = {
            "scan": s.name,
            "label": s.label,
            "domain": s.domain,
            "n_slices": int(s.probabilities.size),
            "top_slice": int(np.argmax(s.probabilities)),
            "top_probability": float(s.probabilities.max()),
        }
        for name, rule in rules.items():
            probability, label = s.read(rule)
            row[name] = {"label": label, "probability": probability}
        rows.append(row)
    return rows


def _line(name: str, m: dict[str, Any]) -> str:
    fps = ", ".join(
        f"{d} normal scans called hemorrhage {m[f'{d}_false_positives']}/{m[f'n_{d}_normal']}"
        for d in ("phantom", "real")
        if f"n_{d}_normal" in m
    )
    return (
        f"{name}: scan sensitivity {m['sensitivity']:.3f} ({m['confusion_matrix'][1][1]}/{m['n_hemorrhage']}), "
        f"specificity {m['specificity']:.3f} ({m['confusion_matrix'][0][0]}/{m['n_normal']}); {fps}"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Score the scans, choose (or only evaluate) the rule, write what was asked; returns the results."""
    if args.series < 1 or not 1 <= args.slices <= 256:
        raise InvalidInputError(
            f"--series must be ≥ 1 and --slices 1-256; got --series {args.series} --slices {args.slices}"
        )
    if args.real_anatomy_dir and not Path(args.real_anatomy_dir).is_dir():
        raise InvalidInputError(
            f"--real_anatomy_dir {args.real_anatomy_dir!r} is not a folder; give the folder of real normal "
            f"head-CT DICOMs (the project's: {DEFAULT_REAL_DIR.relative_to(ROOT)}) or '' for none"
        )
    predictor = Predictor.from_pretrained(args.model)
    scans = phantom_scans(predictor, args.seed, args.series, args.slices, args.size)
    checks: list[ScanScores] = []
    if args.real_anatomy_dir:
        held, whole = real_scans(predictor, args.real_anatomy_dir)
        scans.append(held)
        checks.append(whole)
    rules: dict[str, ScanRule] = {"default_rule": ScanRule()}
    results: dict[str, Any] = {"model": str(args.model), "max_scan_fpr": args.max_scan_fpr}
    if args.evaluate_only:
        if predictor.settings.scan_rule is not None:
            rules["model_rule"] = predictor.settings.scan_rule
    else:
        candidates = candidate_rules()
        rule, m = choose_rule(scans, args.max_scan_fpr, candidates)
        rules["chosen_rule"] = rule
        results["record"] = _rule_record(rule, m, args, len(candidates))
    for name, rule in rules.items():
        results[name] = {"rule": rule.to_dict(), "validation": scan_metrics(rule, scans)}
        for check in checks:
            probability, label = check.read(rule)
            results[name][check.name] = {"label": label, "probability": probability}
    results["scans"] = _scan_rows([*scans, *checks], rules)
    if args.write and "record" in results:
        results["written"] = str(write_rule(args.model, results["record"]))
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.scan_rule",
        description="Choose a model's scan rule (how slice probabilities make a scan's label) on validation "
        "scans: phantom series with and without bleeds and the held-out real levels read as one normal scan; "
        "print scan-level sensitivity/specificity; --write records it in the model's config.json.",
    )
    p.add_argument("--model", required=True, help="model folder (or Hub id without --write)")
    p.add_argument("--series", type=int, default=40, help="phantom scans per seed (heads 1, 3, 5 … bleed)")
    p.add_argument("--slices", type=int, default=24, help="slices per phantom scan (5 mm, up to the vertex)")
    p.add_argument(
        "--seed", type=int, nargs="+", default=[11], help="master seed(s), as for python -m brain_ct synth"
    )
    p.add_argument("--size", type=int, default=256, help="phantom slice side in pixels")
    p.add_argument(
        "--real_anatomy_dir",
        default=str(DEFAULT_REAL_DIR),
        help="folder of real normal head-CT DICOMs whose held-out levels are read as one normal scan "
        "('' for none: phantom scans alone then bound the rule)",
    )
    p.add_argument(
        "--max_scan_fpr",
        type=float,
        default=DEFAULT_MAX_SCAN_FPR,
        help="highest false-positive rate allowed on the normal validation scans of each domain",
    )
    p.add_argument("--evaluate_only", action="store_true", help="read by the model's rule; choose nothing")
    p.add_argument("--write", action="store_true", help="record the chosen rule in <model>/config.json")
    p.add_argument("--output", help="write every number and each scan's reading to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit 0 on success, 1 on a clear error (no traceback), 2 on usage errors."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.write and args.evaluate_only:
        print("error: --write records a chosen rule; drop --evaluate_only", file=sys.stderr)
        return 2
    try:
        results = run(args)
    except BrainCTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name in ("default_rule", "model_rule", "chosen_rule"):
        if name in results:
            print(_line(f"{name.replace('_', ' ')} {results[name]['rule']}", results[name]["validation"]))
            whole = results[name].get("real whole scan")
            if whole:
                print(f"  real whole scan: {whole['label']} (scan P {whole['probability']:.3f})")
    if "record" in results:
        print(f"chosen: {results['record']['description']}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(json_safe(results), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.output}")
    if "written" in results:
        print(f"wrote brain_ct_scan_rule to {results['written']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
