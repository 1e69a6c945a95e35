"""``python -m train.ensemble``: build an ensemble folder from member models, its threshold chosen on validation.

Example::

    python -m train.ensemble --members out/fold-0 out/fold-1 someone/brain-ct-resnet50@0123abcd \\
        --validation_dir Dataset/validation --output_dir out/ensemble

Members are model folders or Hub ids (``id@revision`` pins a commit); they share one label set (binary, or
RSNA's subtypes) and none is an ensemble: :func:`brain_ct.ensemble.load_spec` loads them with the checks
every ensemble gets. The validation data is the labelled image folder ``python -m train`` reads
(``normal/`` and ``hemorrhage/`` class folders, files decoded by :class:`train.data.transform.SliceTransform` through
``load_image``) and, with ``--real_anatomy_dir``, the held-out real levels of :func:`train.data.real_anatomy.real_anatomy_records`.
One :class:`brain_ct.Predictor` over the ensemble reads every slice (:func:`train.evaluate.score_records`, the
scoring ``python -m train.evaluate --model <ensemble>`` uses too): its probability is the ensemble's
P(hemorrhage) (the members' mean), ``Prediction.members`` each member's, so no preprocessing is repeated here.
The ensemble's threshold is chosen on its validation scores by :func:`train.threshold.select_threshold`, with
the rules and the default (``auto``: bound false positives on real normals, else 0.95 sensitivity) of
``python -m train``.

The output folder receives ``ensemble.json`` (:func:`brain_ct.ensemble.write_spec`; a member folder inside
the output folder's parent is written relative to the output folder so both move together, any other as an
absolute path, a Hub member with the commit it was scored at), ``eval_results.json`` (each member at its own
threshold and at the ensemble's, and the ensemble: ROC AUC, sensitivity, specificity, … overall, per input
kind and per anatomy domain), the ensemble's ROC and confusion-matrix plots and a card ``README.md``.
Subtype members are scored on P(hemorrhage) (``any``) only here, which chooses the threshold; the subtype
metrics and RSNA's weighted log loss of a subtype ensemble come from ``python -m train.evaluate --model
<ensemble>`` on a test set that names its subtypes.

The same steps serve ``python -m train --folds K`` (:mod:`train.folds`): :func:`load_members`, then
:func:`write_ensemble` on in-memory record columns (:class:`ScoringData`: the run's validation split, and
its test split, which is reported per member and for the ensemble but never chooses anything).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brain_ct.ensemble import EnsembleSpec, load_spec, write_spec
from brain_ct.errors import BrainCTError
from brain_ct.jsonable import json_safe
from brain_ct.labels import label_set_of
from brain_ct.model import shown_model_id
from brain_ct.predictor import Predictor
from train.data.image_folder import add_file_neighbors, scan_imagefolder
from train.data.real_anatomy import real_anatomy_records
from train.data.records import merge_records
from train.ensemble_card import render_card
from train.evaluate import (
    Scored,
    member_metrics,
    report_split,
    score_records,
    summary_line,
)
from train.hub import push_folder
from train.shared_args import (
    FixedThresholdArguments,
    RealAnatomyEvalArguments,
    ValidationDataArguments,
    check_at_least,
    parse_command,
)
from train.threshold import rule_input_thresholds, select_threshold

logger = logging.getLogger("train.ensemble")


@dataclass
class EnsembleArguments(ValidationDataArguments, RealAnatomyEvalArguments, FixedThresholdArguments):
    """The arguments of ``python -m train.ensemble`` (checked on construction; errors name the flag).

    The validation data, real-anatomy and threshold-rule flags are those of ``python -m train``
    (:mod:`train.shared_args`).
    """

    members: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Two or more member models: folders (as written by python -m train) or Hub ids, "
            "optionally id@revision. All must have the same label set; none may be an ensemble."
        },
    )
    output_dir: str = field(
        default="",
        metadata={
            "help": "The ensemble folder to write (ensemble.json, eval_results.json, README.md, plots)."
        },
    )
    seed: int = field(
        default=42,
        metadata={
            "help": "Seed of the real-anatomy validation variants (python -m train's default seed: the same)."
        },
    )
    real_anatomy_8bit_fraction: float = field(
        default=0.5,
        metadata={"help": "--real_anatomy_dir: share of the held-out variants rendered as 8-bit figures."},
    )
    trained_on: str | None = field(
        default=None,
        metadata={"help": "What the members were trained on (default: their own descriptions, joined)."},
    )
    batch_size: int = field(default=16, metadata={"help": "Slices per forward pass of each member."})
    push_to_hub: bool = field(
        default=False,
        metadata={
            "help": "Upload the ensemble folder to --hub_model_id. Members must then be Hub ids or folders "
            "inside --output_dir (uploaded with it)."
        },
    )
    hub_model_id: str | None = field(
        default=None,
        metadata={"help": "owner/name of the Hub repository (default: the output folder's name)."},
    )
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})
    hub_token: str | None = field(
        default=None, metadata={"help": "Hub token (default: HF_TOKEN or the login cache)."}
    )

    def __post_init__(self) -> None:
        self._check_members_and_output()
        self.check_validation_data()
        self.check_real_anatomy_eval()
        # the members were trained without these levels: without any, validation would reuse training levels
        check_at_least("--real_anatomy_holdout", self.real_anatomy_holdout, 1)
        if not 0.0 <= self.real_anatomy_8bit_fraction <= 1.0:
            raise ValueError(
                f"--real_anatomy_8bit_fraction must be in [0, 1]; got {self.real_anatomy_8bit_fraction}"
            )
        if self.validation_dir is None and self.real_anatomy_dir is None:
            raise ValueError(
                "nothing to choose the threshold on: give --validation_dir DIR (normal/ and hemorrhage/ "
                "subfolders) and/or --real_anatomy_dir DIR"
            )
        self.check_threshold_rule()
        if not 0.0 < self.threshold < 1.0:  # ensemble.json's threshold lies strictly inside (0, 1)
            raise ValueError(f"--threshold must be in (0, 1); got {self.threshold}")
        check_at_least("--batch_size", self.batch_size, 1)
        if self.push_to_hub:
            self._check_push()

    def _check_members_and_output(self) -> None:
        if len(self.members) < 2:
            raise ValueError(
                f"--members needs two or more models (folders or Hub ids); got {len(self.members)}"
            )
        repeated = sorted({m for m in self.members if self.members.count(m) > 1})
        if repeated:
            raise ValueError(f"--members lists {', '.join(repeated)} more than once")
        if not self.output_dir:
            raise ValueError("--output_dir is required: the ensemble folder to write")
        out = Path(self.output_dir).expanduser()
        if (out / "config.json").is_file():
            raise ValueError(
                f"--output_dir {self.output_dir!r} holds a model (config.json); an ensemble needs its own folder"
            )
        for value in self.members:
            if Path(value).expanduser().is_dir() and Path(value).expanduser().resolve() == out.resolve():
                raise ValueError(f"--members {value!r} is --output_dir itself; write the ensemble elsewhere")

    def _check_push(self) -> None:
        """--push_to_hub: a Hub repository name, and members the repository can reach."""
        out = Path(self.output_dir).expanduser()
        self.hub_model_id = self.hub_model_id or out.resolve().name
        for value in self.members:
            local = Path(value).expanduser()
            if local.is_dir() and not local.resolve().is_relative_to(out.resolve()):
                raise ValueError(
                    f"--push_to_hub: member {value!r} is a local folder outside --output_dir, which the Hub "
                    "repository could not reach; push it first and list its Hub id, or put it inside "
                    "--output_dir"
                )


def parse_args(argv: Sequence[str]) -> EnsembleArguments:
    """:class:`EnsembleArguments` from the command line, or from one JSON file of them."""
    return parse_command(EnsembleArguments, argv, prog="python -m train.ensemble")


# ---------------------------------------------------------------------------------------------- members


@dataclass(frozen=True)
class MemberSource:
    """One ``--members`` entry.

    Attributes:
        load: what :func:`brain_ct.ensemble.load_spec` loads: an absolute folder or a Hub id.
        ref: how ``ensemble.json`` names it (see :func:`member_ref`).
        revision: the Hub revision asked for (``id@revision``), or None.
        local: True for a folder.
    """

    load: str
    ref: str
    revision: str | None
    local: bool


def member_ref(folder: Path, output_dir: Path) -> str:
    """How ``ensemble.json`` names a member folder.

    Inside the output folder's parent (the ensemble folder itself included): relative to the ensemble
    folder (``members/fold-0``, ``../fold-0``), so a project folder holding both can be moved or copied;
    anywhere else: the absolute path.
    """
    folder, out = folder.resolve(), output_dir.resolve()
    if folder.is_relative_to(out):
        return folder.relative_to(out).as_posix()
    parent = out.parent
    if parent != parent.parent and folder.is_relative_to(parent):
        return "../" + folder.relative_to(parent).as_posix()
    return str(folder)


def member_source(value: str, output_dir: Path) -> MemberSource:
    """A ``--members`` entry: an existing folder, else a Hub id with an optional ``@revision``."""
    folder = Path(value).expanduser()
    if folder.is_dir():
        return MemberSource(str(folder.resolve()), member_ref(folder, output_dir), None, True)
    repo_id, _, revision = value.partition("@")
    return MemberSource(repo_id, repo_id, revision or None, False)


def pinned_revision(repo_id: str, revision: str | None) -> str | None:
    """The commit a Hub member was loaded at, so the ensemble keeps using the weights it was thresholded on.

    Read from the cached snapshot of its ``config.json`` (``…/snapshots/<commit>/config.json``), which
    loading the member has just fetched; the revision as given when that cannot be told.
    """
    from huggingface_hub import hf_hub_download

    try:
        snapshot = Path(hf_hub_download(repo_id, "config.json", revision=revision)).parent.name
    except Exception:  # offline without a cache entry, or any Hub error: keep what was asked for
        return revision
    return snapshot if re.fullmatch(r"[0-9a-f]{40}", snapshot) else revision


def default_trained_on(predictor: Predictor) -> str:
    """``trained_on`` of the ensemble: its members' own descriptions, each once."""
    described = [m.settings.trained_on or "not recorded" for m in predictor.members]
    distinct = list(dict.fromkeys(described))
    return f"ensemble of {len(described)} models; members trained on: " + "; ".join(distinct)


# ---------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class ScoringData:
    """The records an ensemble is scored on, as :mod:`train.data` record columns, and how to decode them.

    Attributes:
        validation: the records the ensemble's threshold is chosen on.
        validation_note: what they are, e.g. ``40 slices (20 normal, 20 hemorrhage): image folder 'val'``
            (logged and carded).
        test: records only reported (never used for a choice), or None.
        test_note: what the test records are.
        synthetic_size: side in pixels of phantom records (the run's ``--synthetic_size``).
        allow_unverified: skip brain_ct's head-CT check when decoding files (training's default).
    """

    validation: dict[str, list[Any]]
    validation_note: str
    test: dict[str, list[Any]] | None = None
    test_note: str = ""
    synthetic_size: int = 256
    allow_unverified: bool = True


def validation_columns(args: EnsembleArguments, context_slices: int) -> dict[str, list[Any]]:
    """The validation records: the labelled folder (with series neighbours for slice-context members) and
    the held-out real-anatomy levels.

    Raises:
        InvalidInputError: an empty or unreadable folder (:func:`train.data.image_folder.scan_imagefolder`).
    """
    files = None
    if args.validation_dir is not None:
        files = scan_imagefolder(args.validation_dir)
        files = add_file_neighbors(files, context_slices) if context_slices else files
    real = (
        real_anatomy_records(
            args.real_anatomy_dir,
            "validation",
            args.seed,
            size=args.synthetic_size,
            holdout=args.real_anatomy_holdout,
            eval_variants=args.real_anatomy_eval_variants,
            fraction_8bit=args.real_anatomy_8bit_fraction,
        )
        if args.real_anatomy_dir
        else None
    )
    return merge_records(files, real)


def describe_records(labels: Sequence[int], source: str) -> str:
    """e.g. ``40 slices (20 normal, 20 hemorrhage): image folder 'val'`` (logged and carded)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=2)
    return f"{int(counts.sum())} slices ({int(counts[0])} normal, {int(counts[1])} hemorrhage): {source}"


def scoring_data(args: EnsembleArguments, context_slices: int) -> ScoringData:
    """``--validation_dir`` and ``--real_anatomy_dir`` as :class:`ScoringData` (no test split)."""
    columns = validation_columns(args, context_slices)
    sources = []
    if args.validation_dir is not None:
        sources.append(f"image folder {Path(args.validation_dir).name!r}")
    if args.real_anatomy_dir is not None:
        sources.append(
            f"the held-out real levels of {Path(args.real_anatomy_dir).name!r} (normals and painted lesions)"
        )
    return ScoringData(
        columns, describe_records(columns["label"], " and ".join(sources)), synthetic_size=args.synthetic_size
    )


def member_results(
    sources: Sequence[MemberSource],
    predictor: Predictor,
    scores: dict[str, Scored],
    threshold: float,
) -> list[dict[str, Any]]:
    """Each member's source and metrics (:func:`train.evaluate.member_metrics`) on every scored split
    (``validation``, ``test``), at its own threshold and at the ensemble's (``<split>_at_ensemble_threshold``)."""
    out = []
    for i, (source, member) in enumerate(zip(sources, predictor.members, strict=True)):
        own = member.settings.threshold
        entry: dict[str, Any] = {
            "model": source.ref,
            "revision": source.revision,
            "hub": not source.local,
            "label_set": label_set_of(member.settings.labels),
            "trained_on": member.settings.trained_on,
            "threshold": own,
            **member_metrics(scores, i, own, threshold),
        }
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------- main


def load_members(values: Sequence[str], output_dir: str | Path) -> tuple[list[MemberSource], Predictor]:
    """The ``--members`` entries and one :class:`~brain_ct.Predictor` over them, loaded with the checks every
    ensemble gets (:func:`brain_ct.ensemble.load_spec`: label sets, nesting); Hub members pinned to the
    commit they were loaded at.

    Raises:
        ModelLoadError: a member does not load, is an ensemble, or the label sets differ.
    """
    import dataclasses

    out = Path(output_dir).expanduser()
    sources = [member_source(value, out) for value in values]
    # The members load before ensemble.json exists; the threshold is a placeholder until validation
    # has chosen it.
    spec = EnsembleSpec(members=tuple((s.load, s.revision) for s in sources), combine="mean", threshold=0.5)
    members, settings = load_spec(spec, Path.cwd(), str(output_dir))
    sources = [
        s if s.local else dataclasses.replace(s, revision=pinned_revision(s.load, s.revision))
        for s in sources
    ]
    return sources, Predictor.from_members(members, settings)


def write_ensemble(
    output_dir: str | Path,
    sources: Sequence[MemberSource],
    predictor: Predictor,
    data: ScoringData,
    flags: FixedThresholdArguments,
    *,
    name: str,
    command: str,
    trained_on: str | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Score ``data``, choose the ensemble's threshold on its validation records and write the ensemble
    folder: ``ensemble.json``, ``eval_results.json``, plots and the card ``README.md`` (``name``, and
    ``command`` under "Reproduce").

    Returns:
        The ``eval_results.json`` content.

    Raises:
        InvalidInputError: the records are empty, unreadable or lack what the threshold rule needs.
    """
    out = Path(output_dir).expanduser()
    decode = {"synthetic_size": data.synthetic_size, "allow_unverified": data.allow_unverified}
    scores = {"validation": score_records(predictor, data.validation, batch_size, **decode)}
    if data.test is not None:
        scores["test"] = score_records(predictor, data.test, batch_size, **decode)
    val = scores["validation"]
    threshold, rule = select_threshold(
        val.labels,
        val.scores,
        val.domain,
        flags.threshold_strategy,
        target_sensitivity=flags.threshold_sensitivity,
        max_real_fpr=flags.max_real_fpr,
        fixed=flags.threshold,
        kinds=val.input_kind,
    )
    own = rule_input_thresholds(rule)
    out.mkdir(parents=True, exist_ok=True)
    trained_on = trained_on or default_trained_on(predictor)
    spec = EnsembleSpec(
        members=tuple((s.ref, s.revision) for s in sources),
        combine="mean",
        threshold=threshold,
        threshold_rule=rule,
        trained_on=trained_on,
        input_thresholds=own,
    )
    write_spec(out, spec)

    results: dict[str, Any] = {
        "ensemble": shown_model_id(str(out)),
        "combine": "mean",
        "label_set": label_set_of(predictor.settings.labels),
        "trained_on": trained_on,
        "validation_data": data.validation_note,
        **({"test_data": data.test_note} if data.test is not None else {}),
        "members": member_results(sources, predictor, scores, threshold),
        "threshold": threshold,
        "threshold_strategy": rule["strategy"],
        "threshold_rule": rule,
        **({"input_thresholds": own} if own else {}),
    }
    for split, sc in scores.items():
        results[split] = report_split(
            split, sc.labels, sc.scores, sc.input_kind, threshold, out, sc.domain, own
        )
    results = json_safe(results)
    (out / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

    plots = [f"{kind}_{split}.png" for split in scores for kind in ("roc", "confusion_matrix")]
    demo = any(m.settings.is_demo for m in predictor.members)
    card = render_card(name, results, demo=demo, command=command, plots=plots)
    (out / "README.md").write_text(card, encoding="utf-8")
    return results


def push_ensemble(output_dir: str | Path, repo_id: str, *, private: bool, token: str | None) -> str:
    """Upload the ensemble folder (members inside it travel along; their checkpoints stay local)."""
    url = push_folder(
        output_dir,
        repo_id,
        private=private,
        token=token,
        commit_message="Upload brain-CT hemorrhage ensemble",
    )
    logger.info("pushed to %s", url)
    return url


def build_ensemble(args: EnsembleArguments, argv: Sequence[str] = ()) -> dict[str, Any]:
    """Load the members, score the validation data, choose the threshold and write the ensemble folder.

    Returns:
        The ``eval_results.json`` content.

    Raises:
        ModelLoadError: a member does not load, is an ensemble, or the label sets differ.
        InvalidInputError: the validation data is empty, unreadable or lacks what the threshold rule needs.
    """
    sources, predictor = load_members(args.members, args.output_dir)
    data = scoring_data(args, predictor.settings.context_slices)
    results = write_ensemble(
        args.output_dir,
        sources,
        predictor,
        data,
        args,
        name=args.hub_model_id or Path(args.output_dir).expanduser().resolve().name,
        command="python -m train.ensemble " + " ".join(shlex.quote(a) for a in argv),
        trained_on=args.trained_on,
        batch_size=args.batch_size,
    )
    if args.push_to_hub:
        results["hub_url"] = push_ensemble(
            args.output_dir, args.hub_model_id, private=args.hub_private, token=args.hub_token
        )
    return results


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit 0 on success, 1 on a model or data error, 2 on an argument error (no traceback)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = parse_args(argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        results = build_ensemble(args, argv)
    except (BrainCTError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for m in results["members"]:
        print(summary_line(f"member {m['model']}", m["validation"]))
        print(summary_line("  at the ensemble's threshold", m["validation_at_ensemble_threshold"]))
    print(summary_line("ensemble", results["validation"]))
    print(f"threshold {results['threshold']:.4f}: {results['threshold_rule']['description']}")
    print(f"wrote {args.output_dir} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
