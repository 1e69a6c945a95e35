"""Does the Grad-CAM heatmap point at the bleed? Localisation on synthetic hemorrhages with known masks.

``python -m benchmarks.localization [--model M] [--n-per-subtype 40] [--seed S] [--out FILE]``

For every hemorrhage subtype the synthetic generator (:mod:`brain_ct.synthetic`) draws
``n`` slices (random level, size and anatomy) with their ground-truth lesion masks. Each slice is
read twice, as people would give it to the assistant:

* ``dicom`` — written as a CT DICOM and loaded through :func:`brain_ct.load_image` (HU windows);
* ``8bit`` — rendered as an internet-style 8-bit figure (:func:`brain_ct.synthetic.render_internet`:
  random window, borders, captions, arrows, colour, JPEG) with the mask carried through the same
  geometry, encoded as PNG and loaded the same way. Figures the plausibility check refuses are
  counted (``refused``) and then read with ``allow_unverified=True`` so every slice is scored.

Metrics (per subtype and overall, per input kind), with the lesion mask dilated by
``--dilate`` pixels (default 4) because Grad-CAM on the last ResNet stage is coarse (one cell
≈ 32 model pixels) and a bleed's rim is part of the finding:

* ``pointing_game`` — fraction of slices whose heatmap maximum falls inside the dilated mask
  (an all-zero heatmap is a miss);
* ``mass_in_mask`` — mean fraction of the heatmap's total heat inside the dilated mask;
* ``chance`` — mean fraction of the head's area covered by the dilated mask: what a heatmap
  spread uniformly over the head would score on both metrics;
* ``sensitivity`` — fraction of these (all positive) slices labelled "hemorrhage";
* ``mean_probability``.

Results go to a JSON file (default ``benchmarks/localization.json``) and a printed table.
``--smoke`` builds a tiny random model in a temporary folder and scores 2 slices per subtype, so
a test keeps this script working; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent / "localization.json"
KINDS = ("dicom", "8bit")


@dataclass
class Case:
    """One slice to score: its CTImage, the lesion mask on the same grid, and how it was read."""

    subtype: str
    level: str
    kind: str
    ct: Any
    mask: np.ndarray
    refused: bool


def _encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a grey, RGB or RGBA uint8 image (OpenCV writes BGR order)."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return buf.tobytes()


def _load(data: bytes, name: str) -> tuple[Any, bool]:
    """Load like a user upload; on a refused plausibility check, count it and read it anyway."""
    from brain_ct.errors import NotHeadCTError
    from brain_ct.io import load_image

    try:
        return load_image(data, name=name), False
    except NotHeadCTError:
        return load_image(data, name=name, allow_unverified=True), True


def make_cases(subtype: str, n: int, seed: int, size: int, kinds: Sequence[str]) -> list[Case]:
    """``n`` synthetic hemorrhage slices of ``subtype``, each read as every input kind in ``kinds``."""
    from brain_ct import synthetic

    cases: list[Case] = []
    base = seed * 1_000_003 + synthetic.SUBTYPES.index(subtype) * 10_007
    for i in range(n):
        phantom = synthetic.generate_slice(base + i, size, subtype=subtype)
        if "dicom" in kinds:
            buf = io.BytesIO()
            synthetic.to_dicom(phantom).save_as(buf)
            ct, refused = _load(buf.getvalue(), f"{subtype}-{i}.dcm")
            cases.append(Case(subtype, phantom.level, "dicom", ct, phantom.mask, refused))
        if "8bit" in kinds:
            image, mask = synthetic.render_internet(phantom, np.random.default_rng(base + i))
            ct, refused = _load(_encode_png(image), f"{subtype}-{i}.png")
            if ct.shape != mask.shape:
                raise RuntimeError(f"loaded image {ct.shape} and its mask {mask.shape} differ")
            cases.append(Case(subtype, phantom.level, "8bit", ct, mask.astype(bool), refused))
    return cases


def score(heatmap: np.ndarray, lesion: np.ndarray, head: np.ndarray, dilate_px: int) -> dict[str, float]:
    """Pointing game, heat mass in the dilated lesion, and the chance level, for one slice.

    Args:
        heatmap: float32 [H, W] in [0, 1].
        lesion: bool [H, W] ground-truth mask.
        head: bool [H, W] head mask (for the chance level).
        dilate_px: dilation radius of the lesion mask, pixels.
    """
    if dilate_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
        target = cv2.dilate(lesion.astype(np.uint8), kernel).astype(bool)
    else:
        target = lesion.astype(bool)
    total = float(heatmap.sum())
    if total > 0.0:
        iy, ix = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
        hit = bool(target[iy, ix])
        mass = float(heatmap[target].sum()) / total
    else:
        hit, mass = False, 0.0
    head_area = float(head.sum())
    chance = float((target & head).sum()) / head_area if head_area > 0 else 0.0
    return {"hit": float(hit), "mass": mass, "chance": chance}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"n": 0}
    return {
        "n": len(rows),
        "pointing_game": round(float(np.mean([r["hit"] for r in rows])), 4),
        "mass_in_mask": round(float(np.mean([r["mass"] for r in rows])), 4),
        "chance": round(float(np.mean([r["chance"] for r in rows])), 4),
        "sensitivity": round(float(np.mean([r["positive"] for r in rows])), 4),
        "mean_probability": round(float(np.mean([r["probability"] for r in rows])), 4),
        "refused": int(sum(r["refused"] for r in rows)),
    }


def run(
    predictor: Any,
    *,
    n_per_subtype: int,
    seed: int,
    size: int = 256,
    dilate_px: int = 4,
    kinds: Sequence[str] = KINDS,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Score ``predictor`` on fresh synthetic hemorrhages; returns the JSON-ready results."""
    from brain_ct import framing, synthetic

    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    seconds = {k: 0.0 for k in kinds}
    for subtype in synthetic.SUBTYPES:
        cases = make_cases(subtype, n_per_subtype, seed, size, kinds)
        for kind in kinds:
            mine = [c for c in cases if c.kind == kind]
            start = time.perf_counter()
            predictions = predictor.predict_batch([c.ct for c in mine], batch_size=batch_size)
            seconds[kind] += time.perf_counter() - start
            for case, pred in zip(mine, predictions, strict=True):
                s = score(pred.heatmap, case.mask, framing.head_mask(case.ct), dilate_px)
                rows[kind].append(
                    {
                        **s,
                        "subtype": subtype,
                        "positive": float(pred.label == "hemorrhage"),
                        "probability": pred.probability,
                        "refused": case.refused,
                    }
                )
    results: dict[str, Any] = {}
    for kind in kinds:
        per = {st: _summary([r for r in rows[kind] if r["subtype"] == st]) for st in synthetic.SUBTYPES}
        n = max(1, len(rows[kind]))
        results[kind] = {
            "overall": _summary(rows[kind]),
            "per_subtype": per,
            "seconds_per_slice": round(seconds[kind] / n, 4),
        }
    return results


def format_table(report: dict[str, Any]) -> str:
    """The results as a plain-text table, one block per input kind."""
    lines = [
        f"model: {report['model']}  (demo: {report['is_demo']})  slices/subtype: {report['n_per_subtype']}  "
        f"size: {report['size']} px  seed: {report['seed']}  mask dilated by {report['dilate_px']} px"
    ]
    head = f"{'subtype':<18}{'n':>4}{'pointing':>10}{'mass in':>9}{'chance':>8}{'sens.':>7}{'mean p':>8}{'refused':>9}"
    for kind, res in report["results"].items():
        lines += ["", f"[{kind}]  {res['seconds_per_slice'] * 1000:.0f} ms/slice in predict_batch", head]
        for name, s in [*res["per_subtype"].items(), ("overall", res["overall"])]:
            if s.get("n", 0) == 0:
                continue
            lines.append(
                f"{name:<18}{s['n']:>4}{s['pointing_game']:>10.3f}{s['mass_in_mask']:>9.3f}{s['chance']:>8.3f}"
                f"{s['sensitivity']:>7.2f}{s['mean_probability']:>8.3f}{s['refused']:>9d}"
            )
    return "\n".join(lines)


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.localization",
        description="Grad-CAM localisation on synthetic hemorrhages with known masks (pointing game, heat mass).",
    )
    p.add_argument(
        "--model",
        default=None,
        help="Hub id or folder (default: BRAIN_CT_MODEL, then the bundled default, models/brain-ct-resnet50)",
    )
    p.add_argument("--revision", default=None, help="Hub revision to pin")
    p.add_argument("--n-per-subtype", type=int, default=40, help="slices per hemorrhage subtype (default 40)")
    p.add_argument("--seed", type=int, default=2024, help="seed of the synthetic slices")
    p.add_argument("--size", type=int, default=256, help="phantom side in pixels (default 256)")
    p.add_argument("--dilate", type=int, default=4, help="lesion mask dilation radius in pixels (default 4)")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="input kinds to score")
    p.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    p.add_argument(
        "--out", type=Path, default=None, help=f"JSON results (default {DEFAULT_OUT}; none with --smoke)"
    )
    p.add_argument(
        "--smoke", action="store_true", help="tiny random model, 2 slices per subtype: checks the script runs"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.n_per_subtype < 1 or args.size < 64 or args.dilate < 0 or args.batch_size < 1:
        print(
            "error: --n-per-subtype and --batch-size must be >= 1, --size >= 64, --dilate >= 0",
            file=sys.stderr,
        )
        return 2
    from transformers.utils import logging as hf_logging

    from brain_ct.errors import BrainCTError
    from brain_ct.model import ModelSettings, build_random_model
    from brain_ct.predictor import Predictor

    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if args.smoke:
                settings = ModelSettings(
                    windows=((40, 80), (80, 200), (600, 2800)), image_size=64, threshold=0.5
                )
                folder = Path(tmp) / "tiny"
                build_random_model(settings, seed=0).save_pretrained(folder)
                predictor = Predictor.from_pretrained(folder)
                n = 2
            else:
                predictor = Predictor.from_pretrained(args.model, revision=args.revision)
                n = args.n_per_subtype
        except BrainCTError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        started = time.perf_counter()
        results = run(
            predictor,
            n_per_subtype=n,
            seed=args.seed,
            size=args.size,
            dilate_px=args.dilate,
            kinds=args.kinds,
            batch_size=args.batch_size,
        )
    report = {
        "model": "tiny random model (--smoke)" if args.smoke else predictor.model_id,
        "revision": args.revision,
        "is_demo": bool(predictor.settings.is_demo),
        "smoke": bool(args.smoke),
        "n_per_subtype": n,
        "seed": args.seed,
        "size": args.size,
        "dilate_px": args.dilate,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    print(format_table(report))
    out = args.out if args.out is not None else (None if args.smoke else DEFAULT_OUT)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
