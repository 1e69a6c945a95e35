"""Calibration: reliability, expected calibration error, temperature scaling folded into the weights, and
``python -m train.calibrate``.

Calibration is measured on P(hemorrhage) with :data:`ECE_BINS` equal-width bins on [0, 1] (bin i holds
scores in [i/B, (i+1)/B); the last bin includes 1): the expected calibration error is
``Σ_b (n_b / N) · |fraction of hemorrhage in b − mean P(hemorrhage) in b|``, reported overall, per input
kind (``dicom`` / ``image``) and per anatomy domain (``phantom`` / ``real``), with a reliability diagram.

Temperature scaling (Guo et al., 2017) divides the logits by one T > 0 fitted on the validation split by
minimising its negative log-likelihood (a bounded 1-D search over log T). It is kept only when it lowers the
validation NLL. It changes no decision (the ranking is the same; the threshold is re-chosen on the calibrated
scores) and is applied without touching the Predictor: :func:`fold_temperature` divides the classifier's last
linear layer (weight and bias) by T, so ``softmax(W x / T + b / T) == softmax((W x + b) / T)`` and the saved
model's logits ARE the calibrated ones; ``brain_ct_temperature`` in ``config.json`` records T.

Subtype models (six sigmoid outputs): P(hemorrhage) = sigmoid(``any``), so T is fitted on the ``any`` logit and
folded into the ``any`` row of the last linear layer only; the five subtype outputs keep their logits (one
temperature fitted on ``any`` says nothing about them, and their 0.5 operating point stays put).

``python -m train.calibrate --model DIR --output_dir OUT [--synthetic_validation N] [--validation_dir DIR]
[--real_anatomy_dir DIR [--real_anatomy_eval_variants N]] [--max_real_fpr 0.1] [--synthetic_test N | --test_dir DIR]``
does all of it after training on an existing model folder: scores the validation data, fits T, chooses the
threshold by the rule (:func:`train.threshold.select_threshold`, per input kind too) and writes the updated model folder (config, weights when T is
kept, ``eval_results.json``, reliability and ROC plots, and the card's threshold, calibration and evaluation
sections).

An ensemble (``ensemble.json``) is refused (:func:`refuse_ensemble`): a temperature folded into one classifier
is not defined for the mean of several, and re-choosing only its threshold is what ``python -m train.ensemble``
does (which also rewrites its card); ``python -m train.evaluate --model <ensemble> --validation_dir DIR`` shows
the ensemble at a threshold re-chosen on other data without writing anything.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from brain_ct.architectures import family_of, positive_output
from brain_ct.ensemble import ENSEMBLE_FILE, find_ensemble_file
from brain_ct.errors import BrainCTError, InvalidInputError, ModelLoadError
from brain_ct.jsonable import json_safe
from brain_ct.model import ModelSettings, apply_settings_to_config, load_model, shown_model_id
from train.card import (
    calibration_text,
    metrics_table,
    replace_section,
    section_body,
    subtypes_text,
    threshold_text,
)
from train.data.image_folder import add_file_neighbors, scan_imagefolder
from train.data.labels import check_subtype_records
from train.data.phantoms import synthetic_records
from train.data.real_anatomy import REAL_HOLDOUT_DEFAULT, real_anatomy_records
from train.data.records import merge_records
from train.data.splits import to_dataset
from train.data.transform import SliceTransform, attach_transform
from train.evaluate import (
    Scored,
    predict_scores,
    report_split,
    report_subtypes,
    summary_line,
)
from train.metrics import (
    BINNING,
    apply_temperature,
    binary_nll,
    calibration_groups,
    calibration_report,
    margins,
    plot_reliability,
)

# Re-exported: the calibration metrics were defined here before they moved down to train.metrics.
from train.metrics import ECE_BINS as ECE_BINS
from train.metrics import calibration_metrics as calibration_metrics
from train.metrics import expected_calibration_error as expected_calibration_error
from train.metrics import reliability_bins as reliability_bins
from train.shared_args import (
    RECHOSEN_STRATEGIES,
    EvaluationDataArguments,
    LoaderArguments,
    ModelToReadArguments,
    RealAnatomyEvalArguments,
    TemperatureScalingArguments,
    ThresholdRuleArguments,
    parse_command,
)
from train.threshold import rule_input_thresholds, select_threshold

logger = logging.getLogger(__name__)


#: Search range of the temperature (a model needing more than this is not worth calibrating by T alone).
T_RANGE = (0.05, 20.0)


# ---------------------------------------------------------------------------------------------- temperature


@dataclass(frozen=True)
class TemperatureFit:
    """Result of :func:`fit_temperature`: the fitted T, validation NLL before and after, and whether T is
    kept (it lowers the NLL); ``reason`` says why not when it isn't."""

    temperature: float
    nll_before: float
    nll_after: float
    kept: bool
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_temperature(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> TemperatureFit:
    """Fit T minimising the NLL of ``sigmoid(margin / T)`` on validation labels (bounded search on log T).

    Kept only if it lowers the NLL by more than 1e-6 nats; with one class only the NLL keeps falling as
    T → 0 or ∞ (nothing to calibrate against), so no T is fitted then.
    """
    from scipy.optimize import minimize_scalar

    y = np.asarray(labels, dtype=np.int64)
    z = margins(scores)
    before = binary_nll(y, scores)
    if len(y) == 0 or y.min() == y.max():
        return TemperatureFit(1.0, before, before, False, "the validation data has only one class")

    def nll(log_t: float) -> float:
        # log-sigmoid form, stable for large margins: −log σ(u) = log(1 + e^(−u))
        u = z / math.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, np.where(y == 1, -u, u))))

    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    temperature, after = float(math.exp(res.x)), float(res.fun)
    if not T_RANGE[0] * 1.01 < temperature < T_RANGE[1] / 1.01:
        # no optimum inside the range: too few examples, or scores that rank the classes the wrong way
        return TemperatureFit(
            temperature,
            before,
            after,
            False,
            f"the fit ran to the edge of the search range {T_RANGE} (too few or unseparated validation examples)",
        )
    if after < before - 1e-6:
        return TemperatureFit(temperature, before, after, True)
    return TemperatureFit(temperature, before, after, False, "it does not lower the validation NLL")


def fold_temperature(model: Any, temperature: float) -> None:
    """Divide the classifier's last linear layer (weight and bias) by ``temperature``, in place.

    The logits are linear in that layer's parameters, so the folded model's logits are the original ones
    divided by T and its softmax is ``softmax(logits / T)``: every consumer of the weights (Predictor,
    Grad-CAM, Hub tooling) gets calibrated probabilities with no extra step. A subtype model
    (``problem_type`` multi-label) has only its ``any`` row divided: ``sigmoid(any / T)`` is the calibrated
    P(hemorrhage) and the subtypes are untouched (see the module docstring).
    """
    import torch

    try:
        head = family_of(model).head(model)
    except ModelLoadError as exc:
        raise InvalidInputError(f"cannot fold a temperature into this model: {exc}") from None
    if not (math.isfinite(temperature) and temperature > 0):
        raise InvalidInputError(f"the temperature must be a finite number > 0; got {temperature!r}")
    multi_label, index = positive_output(model.config)
    rows = slice(index, index + 1) if multi_label else slice(None)
    with torch.no_grad():
        head.weight[rows].div_(float(temperature))
        if head.bias is not None:
            head.bias[rows].div_(float(temperature))


# ---------------------------------------------------------------------------------------------- one step


@dataclass
class Calibrated:
    """What :func:`calibrate_and_choose` decided on the validation split.

    Attributes:
        threshold: the decision threshold on the calibrated scores.
        rule: the threshold rule and its inputs (``brain_ct_threshold_rule``).
        temperature: the model's total folded temperature afterwards (``brain_ct_temperature``).
        validation: the validation scores after calibration (labels, scores, input kind, domain).
        report: ``eval_results.json``'s ``calibration`` entry so far: ``temperature`` (the fit),
            ``validation_before`` and ``validation`` (:func:`calibration_report` before / after).
    """

    threshold: float
    rule: dict[str, Any]
    temperature: float
    validation: Any
    report: dict[str, Any]

    @property
    def input_thresholds(self) -> dict[str, float] | None:
        """Thresholds of the input kinds that got their own (``brain_ct_input_thresholds``), or None."""
        return rule_input_thresholds(self.rule)


def calibrate_and_choose(
    model: Any,
    validation: Any,
    *,
    temperature_scaling: bool = True,
    prior_temperature: float = 1.0,
    strategy: str = "auto",
    target_sensitivity: float = 0.95,
    max_real_fpr: float = 0.10,
    fixed: float = 0.5,
) -> Calibrated:
    """Fit the temperature on validation scores (folding it into ``model`` when kept), then choose the
    threshold on the calibrated scores by ``strategy`` (:func:`train.threshold.select_threshold`).

    Args:
        model: the ``ResNetForImageClassification`` that produced ``validation`` (modified in place).
        validation: :class:`train.evaluate.Scored` of the validation split.
        temperature_scaling: False skips the fit (the report still has the calibration metrics).
        prior_temperature: a temperature already folded into ``model`` (the new one multiplies it).
        strategy, target_sensitivity, max_real_fpr, fixed: the threshold rule.
    """
    y, s, kinds, domains = tuple(validation)[:4]
    probabilities = getattr(validation, "probabilities", None)
    report: dict[str, Any] = {"validation_before": calibration_report(y, s, kinds, domains)}
    total = float(prior_temperature)
    if temperature_scaling:
        fit = fit_temperature(y, s)
        info = fit.as_dict()
        if fit.kept:
            fold_temperature(model, fit.temperature)
            s = apply_temperature(s, fit.temperature)
            if probabilities is not None:  # the any column is P(hemorrhage); the subtypes are not folded
                probabilities = probabilities.copy()
                probabilities[:, 0] = s
            total *= fit.temperature
            logger.info(
                "temperature scaling: T = %.4f lowers validation NLL %.4f → %.4f (folded into the classifier)",
                fit.temperature,
                fit.nll_before,
                fit.nll_after,
            )
        else:
            logger.info("temperature scaling not kept: %s", fit.reason)
        report["temperature"] = {**info, "folded_total": total}
    threshold, rule = select_threshold(
        y,
        s,
        domains,
        strategy,
        target_sensitivity=target_sensitivity,
        max_real_fpr=max_real_fpr,
        fixed=fixed,
        kinds=kinds,
    )
    logger.info("threshold %.4f: %s", threshold, rule["description"])
    report["validation"] = calibration_report(y, s, kinds, domains)
    targets = getattr(validation, "targets", None)
    return Calibrated(threshold, rule, total, Scored(y, s, kinds, domains, targets, probabilities), report)


# ---------------------------------------------------------------------------------------------- CLI


@dataclass
class CalibrateArguments(
    LoaderArguments,
    TemperatureScalingArguments,
    ThresholdRuleArguments,
    RealAnatomyEvalArguments,
    EvaluationDataArguments,
    ModelToReadArguments,
):
    """The arguments of ``python -m train.calibrate`` (checked on construction; errors name the flag).

    The groups are listed last first: ``--help`` shows the model, the data, the rule, then the loader.

    The threshold is re-chosen by ``--threshold_strategy`` (any rule but ``fixed``) on the calibrated
    validation scores.
    """

    threshold_strategies: ClassVar[tuple[str, ...]] = RECHOSEN_STRATEGIES

    output_dir: str = field(kw_only=True, metadata={"help": "Where to write the calibrated model folder."})

    def __post_init__(self) -> None:
        self.check_evaluation_data()
        self.check_real_anatomy_eval()
        self.check_threshold_rule()


def parse_args(argv: Sequence[str]) -> CalibrateArguments:
    """:class:`CalibrateArguments` from the command line, or from one JSON file of them."""
    return parse_command(
        CalibrateArguments,
        argv,
        prog="python -m train.calibrate",
        description="Calibrate a saved brain-CT model (temperature scaling folded into its weights) and "
        "re-choose its threshold on validation data; writes the updated model folder.",
    )


def real_anatomy_columns(
    folder: str,
    split: str,
    seed: int,
    subtypes: bool = False,
    eval_variants: int = 2,
    holdout: int = REAL_HOLDOUT_DEFAULT,
) -> dict[str, list[Any]]:
    """Records of the real-anatomy source's ``split`` (its held-out levels for validation/test).

    The ONE place this module meets that source (``train.data.real_anatomy.real_anatomy_records``).
    """
    return real_anatomy_records(
        folder, split, seed, subtypes=subtypes, eval_variants=eval_variants, holdout=holdout
    )


def split_columns(
    args: CalibrateArguments, split: str, context_slices: int = 0, subtypes: bool = False
) -> dict[str, list[Any]] | None:
    """The records of ``split`` ("validation" or "test") from the CLI's sources, or None when none given.

    Files of a slice-context model carry their series neighbours (phantoms are generated as stacks). For a
    subtype model (``subtypes``) every bleed must name its subtypes (:func:`train.data.labels.check_subtype_records`).
    """
    folder = args.validation_dir if split == "validation" else args.test_dir
    n = args.synthetic_validation if split == "validation" else args.synthetic_test
    parts = []
    if folder:
        files = scan_imagefolder(folder)
        parts.append(add_file_neighbors(files, context_slices) if context_slices else files)
    if n > 0:
        parts.append(synthetic_records(n, split, args.synthetic_seed, args.synthetic_8bit_fraction, subtypes))
    if args.real_anatomy_dir:
        variants, holdout = args.real_anatomy_eval_variants, args.real_anatomy_holdout
        parts.append(
            real_anatomy_columns(
                args.real_anatomy_dir, split, args.synthetic_seed, subtypes, variants, holdout
            )
        )
    if not parts:
        return None
    columns = merge_records(*parts)
    if subtypes:
        check_subtype_records(columns, f"the {split} data")
    return columns


def _copy_model_folder(src: Path, dst: Path) -> None:
    if src.resolve() == dst.resolve():
        return
    # checkpoints and trainer state belong to the training run, not to the calibrated model
    shutil.copytree(
        src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint-*", "runs", "*.bin", "eval")
    )


def _update_card(
    out: Path,
    results: dict[str, Any],
    calibration_plots: list[str],
    plots: list[str],
    command: str,
    synthetic: bool = False,
) -> None:
    path = out / "README.md"
    if not path.is_file():
        return
    card = path.read_text(encoding="utf-8")
    card = replace_section(
        card, "Decision threshold", threshold_text(results["threshold"], results["threshold_rule"])
    )
    evaluation = metrics_table(results)
    if "test" not in results:
        evaluation += (
            "\n\nTest metrics were not recomputed at this threshold by `python -m train.calibrate`; "
            "run `python -m train.evaluate` on a test set."
        )
    subtype_plots = [p for p in plots if p.startswith("roc_subtypes_")]
    evaluation += "\n\n" + "\n\n".join(f"![{p}]({p})" for p in plots if p not in subtype_plots)
    card = replace_section(card, "Evaluation", evaluation, before="Model and training")
    if results.get("subtypes"):
        body = subtypes_text(results["subtypes"], synthetic, subtype_plots)
        card = replace_section(card, "Subtypes", body, before="Calibration")
    card = replace_section(
        card,
        "Calibration",
        calibration_text(results["calibration"], calibration_plots, bool(results.get("subtypes"))),
        before="Model and training",
    )
    reproduce = section_body(card, "Reproduce") or ""
    calibrate_block = f"```bash\n{command}\n```"
    if calibrate_block not in reproduce:
        reproduce = (reproduce + "\n\nThen calibrated and thresholded with:\n\n" + calibrate_block).strip()
        card = replace_section(card, "Reproduce", reproduce, before="How to use")
    path.write_text(card, encoding="utf-8")


def refuse_ensemble(model_id: str) -> None:
    """Refuse an ensemble as ``--model`` with what to do instead (see the module docstring).

    Raises:
        ModelLoadError: ``model_id`` (a folder or Hub id) holds ``ensemble.json``.
    """
    if find_ensemble_file(model_id) is None:
        return
    raise ModelLoadError(
        f"--model {model_id!r} is an ensemble ({ENSEMBLE_FILE}); python -m train.calibrate folds a temperature "
        "into one model's classifier weights, which is not defined for the mean of several models. Calibrate "
        "each member instead (python -m train.calibrate --model MEMBER --output_dir ...), then choose the "
        "ensemble's threshold again with python -m train.ensemble --members ...; to see this ensemble at a "
        f"threshold re-chosen on other data, run python -m train.evaluate --model {model_id} --validation_dir "
        "DIR --test_dir DIR"
    )


def calibrate_model(args: CalibrateArguments, argv: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``python -m train.calibrate`` (see the module docstring); returns the new ``eval_results.json``."""
    refuse_ensemble(str(args.model))
    model, settings = load_model(args.model)
    columns = split_columns(args, "validation", settings.context_slices, settings.is_multi_label)
    if columns is None:
        raise InvalidInputError(
            "nothing to calibrate on: give --validation_dir DIR, --synthetic_validation N and/or "
            "--real_anatomy_dir DIR (real normal slices let the threshold bound false positives on real anatomy)"
        )
    transform = SliceTransform(settings, synthetic_size=args.synthetic_size)

    def dataset(cols: dict[str, list[Any]]) -> Any:
        return attach_transform(to_dataset(cols), transform)

    val = predict_scores(model, dataset(columns), args.batch_size, args.num_workers, desc="validation")
    cal = calibrate_and_choose(
        model,
        val,
        temperature_scaling=args.temperature_scaling,
        prior_temperature=settings.temperature,
        strategy=args.threshold_strategy,
        target_sensitivity=args.threshold_sensitivity,
        max_real_fpr=args.max_real_fpr,
    )
    src, out = Path(args.model), Path(args.output_dir)
    previous = _previous_results(src)
    if src.is_dir():
        _copy_model_folder(src, out)
    out.mkdir(parents=True, exist_ok=True)

    results: dict[str, Any] = {
        "model": shown_model_id(str(args.model)),
        "threshold": cal.threshold,
        "threshold_strategy": cal.rule["strategy"],
        "threshold_rule": cal.rule,
    }
    if cal.input_thresholds:
        results["input_thresholds"] = cal.input_thresholds
    y, s, k, d = cal.validation.binary
    results["validation"] = report_split("validation", y, s, k, cal.threshold, out, d, cal.input_thresholds)
    results["calibration"] = cal.report
    groups = {"validation": calibration_groups(y, s, k, d)}
    subtypes = {"validation": report_subtypes("validation", cal.validation, cal.threshold, out)}
    test_columns = (
        split_columns(args, "test", settings.context_slices, settings.is_multi_label)
        if (args.test_dir or args.synthetic_test > 0)
        else None
    )
    if test_columns is not None:
        # the folded model scores the test set: this also checks the folding end to end
        test = predict_scores(model, dataset(test_columns), args.batch_size, args.num_workers, desc="test")
        _report_test(results, groups, subtypes, test, cal, out)
    if settings.is_multi_label:
        results["subtypes"] = {split: m for split, m in subtypes.items() if m is not None}
    calibration_plots = _plot_reliability(groups, out)
    if previous is not None:
        results["before_calibration"] = previous
    _save_calibrated(model, settings, cal, out, results)
    command = "python -m train.calibrate " + " ".join(shlex.quote(a) for a in argv)
    _update_card(
        out, json_safe(results), calibration_plots, _card_plots(out, results), command, settings.is_demo
    )
    return results


def _previous_results(src: Path) -> dict[str, Any] | None:
    """The model folder's ``eval_results.json`` before this calibration (its own ``before_calibration``
    dropped), or None."""
    if not (src.is_dir() and (src / "eval_results.json").is_file()):
        return None
    previous = json.loads((src / "eval_results.json").read_text())
    previous.pop("before_calibration", None)
    return previous


def _report_test(
    results: dict[str, Any],
    groups: dict[str, Any],
    subtypes: dict[str, Any],
    test: Scored,
    cal: Calibrated,
    out: Path,
) -> None:
    """The test split's metrics, calibration and subtype entries at the calibrated threshold, in place."""
    results["test"] = report_split(
        "test", *test.binary[:3], cal.threshold, out, test.domain, cal.input_thresholds
    )
    results["calibration"]["test"] = calibration_report(*test.binary)
    groups["test"] = calibration_groups(*test.binary)
    subtypes["test"] = report_subtypes("test", test, cal.threshold, out)


def _plot_reliability(groups: dict[str, Any], out: Path) -> list[str]:
    """One reliability diagram per split in ``out``; returns their file names."""
    names = []
    for split, split_groups in groups.items():
        name = f"reliability_{split}.png"
        plot_reliability(split_groups, out / name, f"Reliability — {split}")
        names.append(name)
    return names


def _save_calibrated(
    model: Any, settings: ModelSettings, cal: Calibrated, out: Path, results: dict[str, Any]
) -> None:
    """Write the calibrated model (threshold, rule, temperature and per-kind thresholds in its config) and
    its ``eval_results.json``."""
    settings = dataclasses.replace(
        settings,
        threshold=cal.threshold,
        threshold_rule=cal.rule,
        temperature=cal.temperature,
        input_thresholds=cal.input_thresholds,
    )
    apply_settings_to_config(model.config, settings)
    model.save_pretrained(str(out))
    (out / "eval_results.json").write_text(json.dumps(json_safe(results), indent=2) + "\n")


def _card_plots(out: Path, results: dict[str, Any]) -> list[str]:
    """The evaluation plots the card shows: training curves when the folder has them, ROC and confusion
    matrix per split, and the subtype ROC curves."""
    plots = [p for p in ("training_curves.png",) if (out / p).is_file()]
    plots += [
        f"{kind}_{split}.png"
        for split in ("validation", "test")
        if split in results
        for kind in ("roc", "confusion_matrix")
    ]
    plots += [f"roc_subtypes_{split}.png" for split in results.get("subtypes", {})]
    return plots


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit 0 on success, 1 on a clear error (no traceback), 2 on usage errors."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = parse_args(argv)
    except ValueError as exc:  # a bad flag value: as clear as the data errors below, the same status
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        results = calibrate_model(args, argv)
    except BrainCTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    temp = results["calibration"].get("temperature")
    if temp:
        kept = "kept" if temp["kept"] else f"not kept ({temp['reason']})"
        print(f"temperature {temp['temperature']:.4f}: {kept}; folded total {temp['folded_total']:.4f}")
    print(f"threshold {results['threshold']:.4f}: {results['threshold_rule']['description']}")
    for split in ("validation", "test"):
        if split in results:
            print(summary_line(split, results[split]))
            print(f"  {split} ECE {results['calibration'][split]['ece']:.4f} ({BINNING})")
    print(f"wrote {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
