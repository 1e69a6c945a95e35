"""How does a model read REAL head anatomy? Every real-anatomy number of the README and the model cards.

``python -m benchmarks.real_anatomy [--model M] [--real-dir DIR] [--renders 3] [--out FILE]``

Real normal anatomy available to the repository, none of it trained on:

* ``held_out`` — the real levels of ``--real-dir`` (default the 28 GE slices in ``data/real_anatomy``) that
  training holds out (:func:`train.data.real_anatomy_split`, the same deterministic choice as training):
  - ``dicom_normal``: each held-out slice read from its own file (the unchanged scanner DICOM);
  - ``8bit_normal``: ``--renders`` internet-style 8-bit figures of each (random window, borders, captions,
    JPEG: :func:`brain_ct.synthetic.render_internet`), read as a user would upload them;
  - ``dicom_lesion`` / ``8bit_lesion``: each subtype that fits on each held-out level, painted into the real
    slice (:func:`brain_ct.synthetic.paint_real_lesion`, no other change), as DICOM and as a figure.
  Reported per kind: how many normals read "normal" (specificity), how many lesions read "hemorrhage"
  (sensitivity), ROC AUC of normals against lesions, at the model's own threshold for that input kind
  (``brain_ct_input_thresholds``, else ``brain_ct_threshold``), and the Grad-CAM pointing
  game on the painted lesions (heatmap maximum inside the mask dilated by 4 px, as
  :func:`benchmarks.localization.score` counts it).
* ``pydicom`` — pydicom's real head-CT test slices (``J2K_pixelrep_mismatch.dcm``, a posterior-fossa level,
  and ``693_J2KI.dcm``, compressed so lossily that blobs replace the anatomy): P(hemorrhage) and label.
* ``whole_scan`` — every slice of ``--real-dir`` read as one scan (:func:`brain_ct.scan.predict_series`):
  the scan verdict and how many slices read positive. Most of these levels ARE training levels of a model
  trained with ``--real_anatomy_dir`` on them, so this row is a consistency check, not a generalisation one.

Results go to a JSON file (default ``benchmarks/real_anatomy.json``) and a printed table. ``--smoke`` uses a
tiny random model and one render per level, so a test keeps the script working; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REAL_DIR = ROOT / "data" / "real_anatomy" / "dcm_qa_ct-GE"
DEFAULT_OUT = Path(__file__).resolve().parent / "real_anatomy.json"
PYDICOM_REAL = ("J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm")
#: Working size of painted slices (the real-anatomy training source's default).
PAINT_SIZE = 256


def _kind_metrics(normal: list[float], lesion: list[float], threshold: float) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    n, p = np.asarray(normal, float), np.asarray(lesion, float)
    out: dict[str, Any] = {
        "n_normal": int(n.size),
        "normal_read_normal": int((n < threshold).sum()),
        "specificity": float((n < threshold).mean()) if n.size else None,
        "n_lesion": int(p.size),
        "lesion_read_hemorrhage": int((p >= threshold).sum()),
        "sensitivity": float((p >= threshold).mean()) if p.size else None,
        "roc_auc": None,
    }
    if n.size and p.size:
        y = np.r_[np.zeros(n.size), np.ones(p.size)]
        out["roc_auc"] = float(roc_auc_score(y, np.r_[n, p]))
    return out


def held_out_scores(predictor: Any, real_dir: Path, renders: int, seed: int) -> dict[str, list[float]]:
    """P(hemorrhage) of every held-out case by case kind, and pointing-game hits (1/0) of the lesions
    (``dicom_hits``, ``8bit_hits``); see the module docstring."""
    from benchmarks.localization import score
    from brain_ct.synthetic import SUBTYPES, real_variant
    from train.data.phantoms import encode_phantom
    from train.data.real_anatomy import load_real_slice, real_anatomy_split

    _, held = real_anatomy_split(real_dir)
    scores: dict[str, list[float]] = {
        k: []
        for k in ("dicom_normal", "8bit_normal", "dicom_lesion", "8bit_lesion", "dicom_hits", "8bit_hits")
    }
    rng = np.random.default_rng(seed)
    for level, path in enumerate(held):
        scores["dicom_normal"].append(predictor.predict(path, allow_unverified=True).probability)
        real = load_real_slice(path, PAINT_SIZE)
        plain = real_variant(real.hu, real.pixel_mm, rng, seed=level, augment=False, space=real.space)
        for _ in range(renders):
            ct, _ = encode_phantom(plain, "image", rng, f"level{level}.png")
            scores["8bit_normal"].append(predictor.predict(ct).probability)
        for subtype in SUBTYPES:
            lesion = real_variant(
                real.hu, real.pixel_mm, rng, seed=level, subtype=subtype, augment=False, space=real.space
            )
            if lesion is None:  # no room for this subtype on this level (skull base, vertex)
                continue
            for kind, key in (("dicom", "dicom"), ("image", "8bit")):
                ct, mask = encode_phantom(lesion, kind, rng, f"level{level}-{subtype}")
                pred = predictor.predict(ct)
                scores[f"{key}_lesion"].append(pred.probability)
                hit = score(pred.heatmap, mask > 0.5, np.ones(mask.shape, bool), 4)["hit"]
                scores[f"{key}_hits"].append(hit)
    return scores


def pydicom_slices(predictor: Any) -> dict[str, Any]:
    from pydicom.data import get_testdata_file

    out = {}
    for name in PYDICOM_REAL:
        pred = predictor.predict(get_testdata_file(name))
        out[name] = {"probability": float(pred.probability), "label": pred.label}
    return out


def whole_scan(predictor: Any, real_dir: Path) -> dict[str, Any]:
    from brain_ct.scan import predict_series
    from brain_ct.series import read_series

    result = predict_series(predictor, read_series(str(real_dir)))
    return {
        "label": result.label,
        "probability": float(result.probability),
        "n_slices": result.n_slices,
        "positive_slices": len(result.positive_slices),
    }


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.real_anatomy", description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        default=None,
        help="Hub id or folder (default: BRAIN_CT_MODEL, then the bundled default, models/brain-ct-resnet50)",
    )
    p.add_argument("--real-dir", type=Path, default=DEFAULT_REAL_DIR, help="folder of real normal CT DICOMs")
    p.add_argument("--renders", type=int, default=3, help="8-bit figures per held-out normal level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, default=None, help=f"JSON results (default {DEFAULT_OUT}; none with --smoke)"
    )
    p.add_argument(
        "--smoke", action="store_true", help="tiny random model, one render: checks the script runs"
    )
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from brain_ct.model import resolve_model_id, shown_model_id
    from brain_ct.predictor import Predictor

    args = _build_parser().parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            from brain_ct.model import ModelSettings, build_random_model

            model_id = str(Path(tmp) / "tiny")
            settings = ModelSettings(windows=((40, 80), (80, 200), (600, 2800)), image_size=64, threshold=0.5)
            build_random_model(settings, seed=0).save_pretrained(model_id)
            renders = 1
        else:
            model_id, renders = resolve_model_id(args.model), args.renders
        predictor = Predictor.from_pretrained(model_id)
        # each kind is decided at the threshold the Predictor uses for it (brain_ct_input_thresholds)
        thresholds = {
            kind: predictor.settings.threshold_for(source)
            for kind, source in (("dicom", "dicom"), ("8bit", "image"))
        }
        scores = held_out_scores(predictor, args.real_dir, renders, args.seed)
        results: dict[str, Any] = {
            "model": "tiny random model (--smoke)" if args.smoke else shown_model_id(model_id),
            "threshold": float(predictor.threshold),
            "thresholds": thresholds,
            "real_dir": str(
                args.real_dir.relative_to(ROOT) if args.real_dir.is_relative_to(ROOT) else args.real_dir
            ),
            "held_out": {
                kind: _kind_metrics(scores[f"{kind}_normal"], scores[f"{kind}_lesion"], thresholds[kind])
                | {
                    "pointing_game": float(np.mean(scores[f"{kind}_hits"]))
                    if scores[f"{kind}_hits"]
                    else None
                }
                for kind in ("dicom", "8bit")
            },
            "pydicom": pydicom_slices(predictor),
            "whole_scan": whole_scan(predictor, args.real_dir),
            "renders_per_level": renders,
            "seed": args.seed,
            "seconds": round(time.perf_counter() - start, 1),
            "smoke": bool(args.smoke),
            "command": " ".join(
                ["python -m benchmarks.real_anatomy", *(sys.argv[1:] if argv is None else argv)]
            ),
        }
    _print_table(results)
    out = args.out if args.out is not None else (None if args.smoke else DEFAULT_OUT)
    if out is not None:
        out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def _print_table(r: dict[str, Any]) -> None:
    def f(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}"

    print(
        f"model {r['model']}, threshold "
        + ", ".join(f"{kind} {value:.3f}" for kind, value in r["thresholds"].items())
    )
    print(
        "| held-out real levels | normals read normal | lesions read hemorrhage | ROC AUC | pointing game |"
    )
    print("|---|---|---|---|---|")
    for kind, m in r["held_out"].items():
        print(
            f"| {kind} | {m['normal_read_normal']}/{m['n_normal']} ({f(m['specificity'])}) "
            f"| {m['lesion_read_hemorrhage']}/{m['n_lesion']} ({f(m['sensitivity'])}) | {f(m['roc_auc'])} "
            f"| {f(m['pointing_game'])} |"
        )
    for name, v in r["pydicom"].items():
        print(f"pydicom {name}: P = {v['probability']:.3f} → {v['label']}")
    s = r["whole_scan"]
    print(
        f"whole real scan ({s['n_slices']} slices): {s['label']} (P {s['probability']:.3f}, {s['positive_slices']} positive slices)"
    )


if __name__ == "__main__":
    main()
    sys.exit(0)
