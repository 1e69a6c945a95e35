"""Which 8-bit mapping should new models train with? ``"repeat"`` against ``"pseudo_hu"`` (issue 12, item 6).

``python -m benchmarks.eight_bit_mapping [--phantoms 200] [--renders 3] [--skip-train] [--out FILE]``

Two fine-tuning runs of ``python -m train --preset adapt`` from the bundled demo model, identical in
everything (seed, data, steps, learning rate) but ``--eight_bit_mapping`` (:data:`TRAIN_FLAGS`), then every
model read on the same cases at its own threshold:

* ``phantom_8bit`` (a): internet-style 8-bit figures (:func:`brain_ct.synthetic.render_internet`) of fresh
  phantoms, from the test split of a phantom seed no run trained on (:data:`EVAL_SEED`);
* ``real_8bit`` (b): 8-bit figures of the held-out real GE levels, normal and with painted lesions
  (:func:`benchmarks.real_anatomy.held_out_scores`, the same cases for every model);
* ``phantom_dicom`` / ``real_dicom`` (c): the DICOM versions of the same phantoms and levels, which the
  mapping must not change at all.

Rows: the demo model as bundled (``"repeat"``, no training), the demo with ``"pseudo_hu"`` switched on
without training (how far the mapping alone gets), and the two fine-tuned runs. Per set: ROC AUC,
sensitivity and specificity at the model's own threshold. Results go to ``benchmarks/eight_bit_mapping.json``
and a printed table; the decision is written up in ``benchmarks/NOTES.md``.

``--skip-train`` reuses the run folders of an earlier call (``benchmarks/out/eight_bit/<mapping>``);
``--smoke`` replaces the runs by tiny random models and uses a few cases, so a test keeps the script working
(its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).resolve().parent / "eight_bit_mapping.json"
RUNS_DIR = Path(__file__).resolve().parent / "out" / "eight_bit"
REAL_DIR = ROOT / "data" / "real_anatomy" / "dcm_qa_ct-GE"
MAPPINGS = ("repeat", "pseudo_hu")
#: Phantom seed of the evaluation phantoms (their "test" split); no run trains on it.
EVAL_SEED = 77
#: Side of the generated evaluation phantoms (training's --synthetic_size default).
PHANTOM_SIZE = 256

#: Everything both runs share; only ``--eight_bit_mapping`` and ``--output_dir`` differ. Sized for a few
#: CPU minutes on 2 shared cores: 2 epochs of 640 phantoms + 21 real levels × 8 variants, batch 16
#: (101 steps).
TRAIN_FLAGS: tuple[str, ...] = (
    "--preset", "adapt",
    "--model_name_or_path", "models/brain-ct-demo",
    "--synthetic_train", "640",
    "--synthetic_validation", "80",
    "--synthetic_seed", "5",
    "--synthetic_8bit_fraction", "0.5",
    "--real_anatomy_dir", "data/real_anatomy/dcm_qa_ct-GE",
    "--real_anatomy_holdout", "7",
    "--real_anatomy_variants", "8",
    "--real_anatomy_eval_variants", "2",
    "--stage2_epochs", "2",
    "--learning_rate", "3e-4",
    "--window_jitter", "0.1",
    "--mask_loss_weight", "1.0",
    "--mask_loss_type", "bce",
    "--dataloader_num_workers", "1",
    "--seed", "0",
    "--report_to", "none",
)  # fmt: skip


def train_argv(mapping: str, output_dir: Path) -> list[str]:
    """The ``python -m train`` arguments of one run: :data:`TRAIN_FLAGS` plus the mapping and the folder."""
    return [*TRAIN_FLAGS, "--eight_bit_mapping", mapping, "--output_dir", str(output_dir)]


#: Each run's torch threads: on a shared 2-core machine one thread per process was 3-4x faster than two
#: (a step of the demo model at 160 px, batch 16: 0.9-1.1 s against 3.3-3.6 s at load average 8).
THREADS_PER_RUN = "1"


def train_runs(runs: dict[str, Path]) -> dict[str, float]:
    """Fine-tune one run per mapping, side by side in subprocesses (as a user would run them; together,
    so both meet the same machine load); returns each run's wall-clock seconds.

    Raises:
        RuntimeError: a run failed (its exit status; its output went to ``<output_dir>.log``).
    """
    import os

    env = {**os.environ, "OMP_NUM_THREADS": THREADS_PER_RUN}
    start = time.perf_counter()
    procs = {}
    for mapping, output_dir in runs.items():
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(output_dir.with_suffix(".log"), "w")  # noqa: SIM115 - closed below, after the run
        argv = [sys.executable, "-m", "train", *train_argv(mapping, output_dir)]
        procs[mapping] = (
            subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
            log,
        )
    seconds = {}
    for mapping, (proc, log) in procs.items():
        code = proc.wait()
        log.close()
        seconds[mapping] = round(time.perf_counter() - start, 1)
        if code != 0:
            raise RuntimeError(
                f"python -m train --eight_bit_mapping {mapping} exited with {code}; see {log.name}"
            )
    return seconds


@dataclass(frozen=True)
class PhantomCase:
    """One fresh phantom as the two uploads a user could make of it."""

    label: int
    figure: Any  # CTImage of the internet-style 8-bit render
    dicom: Any  # CTImage of the CT DICOM


def phantom_cases(n: int, seed: int = EVAL_SEED) -> list[PhantomCase]:
    """``n`` phantoms (half hemorrhage) of the test split of phantom seed ``seed``, each as figure and DICOM."""
    from train.data.phantoms import PhantomCache, synthetic_example, synthetic_records

    records = synthetic_records(n, "test", seed, 0.0)
    cache = PhantomCache()
    cases = []
    for s, y in zip(records["synthetic_seed"], records["label"], strict=True):
        figure, _ = synthetic_example(s, y, "image", PHANTOM_SIZE, cache)
        dicom, _ = synthetic_example(s, y, "dicom", PHANTOM_SIZE, cache)
        cases.append(PhantomCase(int(y), figure, dicom))
        cache.entries.clear()  # both renders are made; the phantom itself is not needed again
    return cases


def evaluate(
    model_dir: str | Path,
    cases: Sequence[PhantomCase],
    renders: int,
    real_dir: Path = REAL_DIR,
    seed: int = 0,
) -> dict[str, Any]:
    """One model's ROC AUC, sensitivity and specificity at its own threshold on the four sets."""
    from benchmarks.real_anatomy import _kind_metrics, held_out_scores
    from brain_ct.predictor import Predictor

    predictor = Predictor.from_pretrained(str(model_dir))
    s = predictor.settings
    at = {"8bit": s.threshold_for("image"), "dicom": s.threshold_for("dicom")}  # as the Predictor decides
    labels = np.array([c.label for c in cases])
    sets: dict[str, Any] = {}
    for name, attr in (("phantom_8bit", "figure"), ("phantom_dicom", "dicom")):
        p = np.array(
            [pred.probability for pred in predictor.predict_batch([getattr(c, attr) for c in cases])]
        )
        sets[name] = _kind_metrics(list(p[labels == 0]), list(p[labels == 1]), at[name.split("_")[1]])
    real = held_out_scores(predictor, real_dir, renders, seed)
    for kind in ("8bit", "dicom"):
        sets[f"real_{kind}"] = _kind_metrics(real[f"{kind}_normal"], real[f"{kind}_lesion"], at[kind])
    return {
        "threshold": float(s.threshold),
        "input_thresholds": s.input_thresholds,
        "eight_bit_mapping": s.eight_bit.mode,
        "assumed_window": list(s.eight_bit.assumed_window),
        "sets": sets,
        "mean_auc_8bit": _mean(sets["phantom_8bit"]["roc_auc"], sets["real_8bit"]["roc_auc"]),
        "mean_auc_dicom": _mean(sets["phantom_dicom"]["roc_auc"], sets["real_dicom"]["roc_auc"]),
    }


def _mean(*values: float | None) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def with_mapping(model_dir: Path, out_dir: Path, mapping: str) -> Path:
    """A copy of a model folder's config and weights whose ``brain_ct_8bit_mapping`` is ``mapping``."""
    import shutil

    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(model_dir / "model.safetensors", out_dir / "model.safetensors")
    config = json.loads((model_dir / "config.json").read_text())
    config["brain_ct_8bit_mapping"] = mapping
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    return out_dir


def machine() -> dict[str, Any]:
    """``lscpu``'s model name and the usable cores (what the timings mean)."""
    import os

    name = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return {"cpu": name, "cores": len(os.sched_getaffinity(0)), "load_average": list(os.getloadavg())}


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.eight_bit_mapping", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--phantoms", type=int, default=200, help="fresh phantoms (half hemorrhage), each as figure and DICOM"
    )
    p.add_argument("--renders", type=int, default=3, help="8-bit figures per held-out real normal level")
    p.add_argument(
        "--skip-train", action="store_true", help=f"reuse the runs in {RUNS_DIR.relative_to(ROOT)}"
    )
    p.add_argument(
        "--out", type=Path, default=None, help=f"JSON results (default {DEFAULT_OUT.name}; none with --smoke)"
    )
    p.add_argument(
        "--smoke", action="store_true", help="tiny random models, few cases: checks the script runs"
    )
    return p


def _smoke_real_dir(tmp: Path) -> Path:
    """Two mid-brain GE levels (one of them held out): enough for every set to have both classes."""
    import shutil

    folder = tmp / "real"
    folder.mkdir()
    for name in ("13.dcm", "14.dcm"):
        shutil.copy2(REAL_DIR / name, folder / name)
    return folder


def _smoke_runs(tmp: Path) -> dict[str, Path]:
    from brain_ct.model import ModelSettings, build_random_model

    runs = {}
    for mapping in MAPPINGS:
        settings = ModelSettings(
            windows=((40, 80), (80, 200), (600, 2800)), image_size=64, threshold=0.5, eight_bit=mapping
        )
        runs[mapping] = tmp / mapping
        build_random_model(settings, seed=0).save_pretrained(runs[mapping])
    return runs


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from brain_ct.model import DEMO_MODEL_DIR

    args = _build_parser().parse_args(argv)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "command": "python -m benchmarks.eight_bit_mapping" + ("" if argv is None else " " + " ".join(argv)),
        "train_flags": list(TRAIN_FLAGS),
        "smoke": bool(args.smoke),
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.smoke:
            runs, n, renders = _smoke_runs(tmp), 4, 1
            base, real_dir = runs["repeat"], _smoke_real_dir(tmp)
        else:
            runs = {m: RUNS_DIR / m for m in MAPPINGS}
            n, renders, base, real_dir = args.phantoms, args.renders, DEMO_MODEL_DIR, REAL_DIR
            if not args.skip_train:
                results["train_seconds"] = train_runs(runs)
        models = {
            "demo, repeat (as bundled, no training)": base,
            "demo, pseudo_hu switched on (no training)": with_mapping(base, tmp / "demo-pseudo", "pseudo_hu"),
            **{f"fine-tuned, {m}": runs[m] for m in MAPPINGS},
        }
        cases = phantom_cases(n)
        results["n_phantoms"], results["renders_per_level"] = n, renders
        results["models"] = {name: evaluate(path, cases, renders, real_dir) for name, path in models.items()}
    results["seconds"] = round(time.perf_counter() - start, 1)
    print_table(results)
    out = args.out if args.out is not None else (None if args.smoke else DEFAULT_OUT)
    if out is not None:
        out.write_text(json.dumps(results, indent=2) + "\n")
    return results


SETS = ("phantom_8bit", "real_8bit", "phantom_dicom", "real_dicom")


def print_table(results: dict[str, Any]) -> None:
    """The markdown table of ``benchmarks/NOTES.md``: AUC / sensitivity / specificity per set."""

    def f(v: float | None) -> str:
        return "—" if v is None else f"{v:.3f}"

    print("| model | threshold | " + " | ".join(SETS) + " | mean AUC 8-bit | mean AUC DICOM |")
    print("|---|---|" + "---|" * len(SETS) + "---|---|")
    for name, r in results["models"].items():
        cells = [
            f"{f(m['roc_auc'])} / {f(m['sensitivity'])} / {f(m['specificity'])}"
            for m in (r["sets"][s] for s in SETS)
        ]
        print(
            f"| {name} | {r['threshold']:.3f} | "
            + " | ".join(cells)
            + f" | {f(r['mean_auc_8bit'])} | {f(r['mean_auc_dicom'])} |"
        )


if __name__ == "__main__":
    main()
    sys.exit(0)
