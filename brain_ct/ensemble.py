"""Load a model id or folder that may be an ensemble: the ONE loader behind ``Predictor.from_pretrained``.

An ensemble is a folder (or Hub repository) holding ``ensemble.json`` instead of a model::

    {
      "format": "brain-ct-ensemble",
      "version": 1,
      "members": [
        {"model": "members/fold-0", "revision": null},
        {"model": "/srv/models/other-model"},
        {"model": "someone/brain-ct-resnet50", "revision": "0123456789abcdef0123456789abcdef01234567"}
      ],
      "combine": "mean",
      "threshold": 0.42,
      "threshold_rule": {"strategy": "real_fpr", "max_real_fpr": 0.1},
      "input_thresholds": {"image": 0.47},
      "trained_on": "RSNA 2019 + synthetic phantoms"
    }

* ``members`` (required, non-empty): each ``model`` is a folder relative to the ensemble folder, an
  absolute folder, or a Hub id (``owner/name``), with an optional Hub ``revision`` (pin a commit).
  Every member is a model folder under the model folder contract (:mod:`brain_ct.model`), never
  another ensemble. All members have the same label set (binary, or RSNA's subtypes); their
  preprocessing (windows, input size, normalisation, context slices) may differ: each member gets
  its own input from the one :class:`~brain_ct.image.CTImage`.
* ``combine`` (default ``"mean"``, the only one): P(hemorrhage), the subtype probabilities and the
  (normalised, input-grid) Grad-CAM heatmaps are the members' means.
* ``threshold`` (required, in (0, 1)): the ensemble's own decision threshold on the mean P(hemorrhage),
  chosen on validation; ``threshold_rule`` (optional) records how; ``input_thresholds`` (optional) replaces it
  for slices of the input kinds named (as ``brain_ct_input_thresholds`` does for one model; the members' own
  per-kind thresholds are not used by the ensemble's decision); ``trained_on`` (optional) what the
  members were trained on. A ``README.md`` card may sit beside ``ensemble.json``.

:func:`write_spec` writes the file (``python -m train.ensemble`` builds one) and checks it with the same
:func:`parse_spec` the loader uses, so the writer and the reader share one definition of the format.
:func:`load` returns ``(members, settings)`` for a single model as well (an ensemble of one with
``settings.member_ids == ()``), so prediction has one code path. The Hub case downloads
``ensemble.json`` with ``huggingface_hub`` (and, for members stored inside the same repository, those
folders with ``snapshot_download``); a Hub repository without ``ensemble.json`` is a single model.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import brain_ct.model as model_lib
from brain_ct.errors import ModelLoadError
from brain_ct.jsonable import json_safe
from brain_ct.labels import label_set_of

if TYPE_CHECKING:
    import torch

    from brain_ct.model import ModelSettings

#: The file that makes a folder or Hub repository an ensemble.
ENSEMBLE_FILE = "ensemble.json"
FORMAT = "brain-ct-ensemble"
VERSION = 1
#: How member outputs may be combined (of probabilities; heatmaps are always averaged).
COMBINE_RULES = ("mean",)


@dataclass(frozen=True)
class Member:
    """One model of a predictor: the network and its settings (``model_id`` as written in ensemble.json)."""

    model: torch.nn.Module
    settings: ModelSettings


@dataclass(frozen=True)
class EnsembleSpec:
    """The validated content of ``ensemble.json``.

    Attributes:
        members: (model, revision) per member, ``model`` as written.
        combine: how probabilities are combined (``"mean"``).
        threshold: the ensemble's decision threshold on the combined P(hemorrhage), in (0, 1).
        threshold_rule: how the threshold was chosen, or None.
        trained_on: what the members were trained on, or None.
        input_thresholds: thresholds replacing ``threshold`` for slices of one input kind, or None.
    """

    members: tuple[tuple[str, str | None], ...]
    combine: str
    threshold: float
    threshold_rule: dict[str, Any] | None = None
    trained_on: str | None = None
    input_thresholds: dict[str, float] | None = None


def parse_spec(data: Any, name: str) -> EnsembleSpec:
    """Check the decoded ``ensemble.json`` of ensemble ``name`` against the schema (module docstring).

    Raises:
        ModelLoadError: wrong format or version, no members, a member without a model, an unknown
            ``combine``, or a threshold outside (0, 1). The message names the key.
    """
    where = f"ensemble {name!r} ({ENSEMBLE_FILE})"
    if not isinstance(data, dict):
        raise ModelLoadError(f"{where} must hold a JSON object; got {type(data).__name__}")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ModelLoadError(
            f"{where} has format {data.get('format')!r} version {data.get('version')!r}; "
            f'expected "format": {FORMAT!r}, "version": {VERSION}'
        )
    raw_members = data.get("members")
    if not isinstance(raw_members, list) or not raw_members:
        raise ModelLoadError(f'{where} needs a non-empty "members" list of {{"model": ..., "revision": ...}}')
    members: list[tuple[str, str | None]] = []
    for i, entry in enumerate(raw_members):
        entry = {"model": entry} if isinstance(entry, str) else entry
        model_ref = entry.get("model") if isinstance(entry, dict) else None
        revision = entry.get("revision") if isinstance(entry, dict) else None
        if not isinstance(model_ref, str) or not model_ref.strip():
            raise ModelLoadError(f'{where}: member {i} needs "model" (a folder or Hub id); got {entry!r}')
        if revision is not None and not isinstance(revision, str):
            raise ModelLoadError(f"{where}: member {i} has revision {revision!r}; give a string or null")
        members.append((model_ref.strip(), revision or None))
    combine = data.get("combine", "mean")
    if combine not in COMBINE_RULES:
        raise ModelLoadError(
            f"{where} has combine {combine!r}; supported: {', '.join(map(repr, COMBINE_RULES))} "
            "(the mean of the members' probabilities)"
        )
    threshold = data.get("threshold")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
        or not 0.0 < threshold < 1.0
    ):
        raise ModelLoadError(
            f'{where} needs "threshold", the ensemble\'s own threshold in (0, 1) chosen on validation; '
            f"got {threshold!r}"
        )
    rule = data.get("threshold_rule")
    if rule is not None and not isinstance(rule, dict):
        raise ModelLoadError(f'{where}: "threshold_rule" must be a JSON object or absent; got {rule!r}')
    trained_on = data.get("trained_on")
    try:
        raw = data.get("input_thresholds")
        own = None if raw is None else model_lib.checked_input_thresholds(raw)
    except ValueError as exc:
        raise ModelLoadError(f'{where}: "input_thresholds": {exc}') from None
    return EnsembleSpec(
        members=tuple(members),
        combine=str(combine),
        threshold=float(threshold),
        threshold_rule=dict(rule) if rule is not None else None,
        trained_on=str(trained_on) if trained_on else None,
        input_thresholds=own,
    )


def read_spec(path: str | os.PathLike[str], name: str) -> EnsembleSpec:
    """Read and check an ``ensemble.json`` file (see :func:`parse_spec`)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {ENSEMBLE_FILE} of ensemble {name!r}: {exc}") from None
    return parse_spec(data, name)


def spec_to_dict(spec: EnsembleSpec) -> dict[str, Any]:
    """The JSON object of ``ensemble.json`` for ``spec`` (the schema in the module docstring).

    The writer's half of the format: :func:`parse_spec` reads back exactly this.
    """
    data: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "members": [{"model": model, "revision": revision} for model, revision in spec.members],
        "combine": spec.combine,
        "threshold": float(spec.threshold),
    }
    if spec.threshold_rule is not None:
        data["threshold_rule"] = dict(spec.threshold_rule)
    if spec.input_thresholds:
        data["input_thresholds"] = dict(spec.input_thresholds)
    if spec.trained_on:
        data["trained_on"] = spec.trained_on
    return data


def write_spec(folder: str | os.PathLike[str], spec: EnsembleSpec) -> Path:
    """Write ``folder/ensemble.json`` (folder created) after checking it reads back as ``spec``.

    Raises:
        ModelLoadError: ``spec`` breaks the schema (e.g. a threshold outside (0, 1)); nothing is written.
    """
    data = json_safe(spec_to_dict(spec))
    parse_spec(data, str(folder))  # one definition of the format: refuse to write what load() would refuse
    path = Path(folder) / ENSEMBLE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _hub_ensemble_file(repo_id: str, revision: str | None) -> Path | None:
    """``ensemble.json`` of a Hub repository (downloaded or from the cache), or None when it has none.

    Any failure (no such file, offline without a cached copy, no network) reads as "not an ensemble":
    loading it as a single model then reports what is wrong with the id.
    """
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, ENSEMBLE_FILE, revision=revision))
    except Exception:  # EntryNotFoundError, LocalEntryNotFoundError, HTTP and validation errors
        return None


def find_ensemble_file(model_id: str, revision: str | None = None) -> Path | None:
    """The ``ensemble.json`` that makes ``model_id`` (a folder or Hub id) an ensemble, or None."""
    local = Path(model_id).expanduser()
    if local.is_dir():
        candidate = local / ENSEMBLE_FILE
        return candidate if candidate.is_file() else None
    if local.exists() or model_lib._looks_like_path(model_id):
        return None
    return _hub_ensemble_file(model_id, revision)


def _member_source(ref: str, base: Path, hub_repo: tuple[str, str | None] | None) -> str:
    """Where a member is loaded from: a folder beside ``ensemble.json``, an absolute folder, or a Hub id."""
    path = Path(ref).expanduser()
    if path.is_absolute():
        return str(path)
    if hub_repo is not None and not (base / ref).is_dir():
        # A folder inside the ensemble's own Hub repository: fetch that folder only.
        from huggingface_hub import snapshot_download

        repo_id, revision = hub_repo
        try:
            snapshot = snapshot_download(repo_id, revision=revision, allow_patterns=[f"{ref.strip('/')}/*"])
        except Exception:
            snapshot = None
        if snapshot is not None and (Path(snapshot) / ref).is_dir():
            return str(Path(snapshot) / ref)
    if (base / ref).is_dir():
        return str(base / ref)
    # "members/fold-3" beside an existing "members/" folder is a missing folder, not a Hub id.
    beside = (base / ref).parent != base and (base / ref).parent.is_dir()
    if beside or ref.startswith((".", "~")) or ref.count("/") != 1 or model_lib._looks_like_path(ref):
        raise ModelLoadError(
            f"member folder {ref!r} does not exist (looked in {base}); members are folders relative to the "
            "ensemble folder, absolute folders, or Hub ids (owner/name)"
        )
    return ref


def load(
    model_id_or_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[list[Member], ModelSettings]:
    """Load a single model or an ensemble: what ``--model``, ``BRAIN_CT_MODEL`` and the app's choice name.

    Args:
        model_id_or_dir: a folder or Hub id; None follows :func:`brain_ct.model.resolve_model_id`.
        revision: Hub revision of the model, or of the ensemble's ``ensemble.json``.
        device: torch device for every member.

    Returns:
        ``(members, settings)``. A single model: one member, whose settings are ``settings``. An
        ensemble: its members, and ensemble-level settings: its threshold, threshold rule and
        trained_on, the members' labels, ``model_id`` the ensemble as shown, ``member_ids`` as written,
        ``is_demo`` when any member is, ``context_slices`` the largest member's, and the first member's
        windows, size and normalisation (each member still uses its own).

    Raises:
        ModelLoadError: see :func:`brain_ct.model.load_model` and :func:`parse_spec`; also an empty
            ensemble, a nested ensemble, a missing member folder, or members with different label sets.
    """
    model_id = model_lib.resolve_model_id(None if model_id_or_dir is None else str(model_id_or_dir))
    spec_file = find_ensemble_file(model_id, revision)
    if spec_file is None:
        model, settings = model_lib.load_model(model_id, revision=revision, device=device)
        return [Member(model, settings)], settings

    shown = model_lib.shown_model_id(model_id)
    spec = read_spec(spec_file, shown)
    local = Path(model_id).expanduser().is_dir()
    hub_repo = None if local else (model_id, revision)
    members, settings = load_spec(spec, spec_file.parent, shown, hub_repo=hub_repo, device=device)
    is_demo = settings.is_demo or model_lib._is_demo_path(model_id)
    return members, _replace(settings, revision=revision, is_demo=is_demo)


def load_spec(
    spec: EnsembleSpec,
    base: str | os.PathLike[str],
    shown: str,
    *,
    hub_repo: tuple[str, str | None] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[list[Member], ModelSettings]:
    """Load the members of an ensemble spec and combine their settings (the body of :func:`load`).

    Also used before an ``ensemble.json`` exists: ``python -m train.ensemble`` loads the members it is
    about to write, through the same checks, to score them on validation.

    Args:
        spec: the ensemble (see :func:`parse_spec`).
        base: the folder member paths are relative to (where ``ensemble.json`` is or will be).
        shown: the ensemble's name in messages and ``settings.model_id``.
        hub_repo: ``(repo_id, revision)`` when the ensemble lives on the Hub (members may be folders
            of that repository), else None.
        device: torch device for every member.

    Returns:
        ``(members, settings)`` as :func:`load` describes (``revision`` None).

    Raises:
        ModelLoadError: a nested ensemble, a missing member folder, a member that does not load, or
            members with different label sets.
    """
    base = Path(base)
    members: list[Member] = []
    for ref, member_revision in spec.members:
        try:
            source = _member_source(ref, base, hub_repo)
            if find_ensemble_file(source, member_revision) is not None:
                raise ModelLoadError(
                    f"{ref!r} is itself an ensemble; list its member models directly (ensembles do not nest)"
                )
            model, settings = model_lib.load_model(source, revision=member_revision, device=device)
        except ModelLoadError as exc:
            raise ModelLoadError(f"ensemble {shown!r}, member {ref!r}: {exc}") from None
        members.append(Member(model, _replace(settings, model_id=ref)))

    kinds = {label_set_of(m.settings.labels) for m in members}
    if len(kinds) > 1:
        listed = ", ".join(f"{m.settings.model_id} ({label_set_of(m.settings.labels)})" for m in members)
        raise ModelLoadError(
            f"ensemble {shown!r} mixes label sets: {listed}; all members must be binary models or all "
            "subtype models"
        )
    first = members[0].settings
    context = max(m.settings.context_slices for m in members)
    # Informational at the ensemble level (each member normalises its own input); recomputed only
    # when the widest context changes the channel count.
    stats: dict[str, Any] = {} if context == first.context_slices else {"mean": (), "std": ()}
    settings = _replace(
        first,
        threshold=spec.threshold,
        threshold_rule=spec.threshold_rule,
        # the ensemble's own, never its first member's
        input_thresholds=spec.input_thresholds,
        trained_on=spec.trained_on,
        model_id=shown,
        revision=None,
        is_demo=any(m.settings.is_demo for m in members),
        context_slices=context,
        **stats,
        temperature=1.0,
        member_ids=tuple(m.settings.model_id for m in members),
    )
    return members, settings


def _replace(settings: ModelSettings, **changes: Any) -> ModelSettings:
    import dataclasses

    return dataclasses.replace(settings, **changes)
