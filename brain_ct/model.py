"""Load a brain-CT hemorrhage model (a Hub id or a folder) and its preprocessing settings.

A model is a ``transformers`` image classifier of a supported family (:mod:`brain_ct.architectures`; today
``ResNetForImageClassification``) saved with safetensors weights,
whose ``config.json`` also carries the project's preprocessing settings (the "model folder
contract", see ``ARCHITECTURE.md``):

* ``id2label``: either the binary labels ``{0: "normal", 1: "hemorrhage"}`` (softmax; P(hemorrhage) is
  class "hemorrhage") or RSNA's six labels ``any, epidural, intraparenchymal, intraventricular,
  subarachnoid, subdural`` with ``problem_type: "multi_label_classification"`` (one sigmoid each;
  P(hemorrhage) is ``any``), see :mod:`brain_ct.labels`. Anything else is refused;
* ``brain_ct_windows``: list of ``[center, width]`` in HU, one per window channel;
* ``brain_ct_image_size``: side of the square model input, pixels;
* ``brain_ct_threshold``: P(hemorrhage) at or above which the label is "hemorrhage";
* ``brain_ct_image_mean`` / ``brain_ct_image_std``: per-channel normalisation (default: ImageNet,
  :func:`brain_ct.preprocess.default_stats`);
* ``brain_ct_context_slices`` (optional, default 0): k > 0 stacks slices s−k … s+k as channels,
  each with every window, so ``num_channels == len(windows) * (2k + 1)``;
* ``brain_ct_trained_on`` (optional): what the weights were trained on, e.g. ``"synthetic phantoms"``;
* ``brain_ct_threshold_rule`` (optional): how ``brain_ct_threshold`` was chosen, a JSON object such as
  ``{"strategy": "real_fpr", "max_real_fpr": 0.1, "n_real_negatives": 14, ...}`` (``train.evaluate``);
* ``brain_ct_temperature`` (optional, default 1): the calibration temperature T already folded into the
  classifier's last linear layer (its weight and bias divided by T), so the logits ARE the calibrated ones
  and inference needs nothing extra; it is recorded for the card and for refitting (temperatures multiply).
* ``brain_ct_8bit_mapping`` (optional, default ``"repeat"``): what an 8-bit image's grey becomes,
  ``"repeat"`` (the grey in every channel: every model saved before the key existed) or ``"pseudo_hu"``
  (the grey read as a render in ``brain_ct_8bit_assumed_window``, optional ``[center, width]``, default the
  brain window ``[40, 80]``, mapped to pseudo-HU and windowed like a DICOM), see
  :class:`brain_ct.preprocess.EightBitMapping`.
* ``brain_ct_input_thresholds`` (optional): a threshold per input kind that replaces ``brain_ct_threshold``
  for slices of that kind, e.g. ``{"image": 0.37}`` (keys :data:`INPUT_KINDS`: ``dicom``, ``image`` for 8-bit
  pictures, ``nifti``); kinds not named use ``brain_ct_threshold``. 8-bit figures and scanner DICOMs score
  real anatomy differently, so ``python -m train`` bounds false positives on real normals per kind.

Model choice order everywhere (CLI, app, library): an explicit id/folder, then the environment
variable ``BRAIN_CT_MODEL``, then the bundled default model in ``models/brain-ct-resnet50/`` (the
ImageNet-pretrained ResNet-50, fp16 on disk, loaded as fp32), then the small bundled demo in
``models/brain-ct-demo/`` when the ResNet-50 folder is not there (a slimmed copy of the project).

Only safetensors weights are loaded and never remote code (``trust_remote_code=False``): a model
file can otherwise run arbitrary code on the machine that opens it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import brain_ct.architectures as architectures
from brain_ct.errors import InvalidInputError, ModelLoadError
from brain_ct.labels import BINARY_LABELS, MULTI_LABEL, SUBTYPE_LABELS, SUBTYPES, label_set_of
from brain_ct.preprocess import EIGHT_BIT_MAPPINGS, REPEAT, EightBitMapping, default_stats
from brain_ct.scan_rule import ScanRule
from brain_ct.wording import BUNDLED_NOTE, DEMO_NOTE

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig


#: The bundled models (trained on synthetic phantoms and one real head by ``python -m train``): the default
#: ResNet-50 fine-tuned from ImageNet, the small 0.7 M-parameter demo (tests, speed, slow machines) and the
#: small subtype model. Every folder under ``models/`` is a demonstration model.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_MODELS_DIR = PROJECT_ROOT / "models"
DEFAULT_MODEL_DIR = BUNDLED_MODELS_DIR / "brain-ct-resnet50"
DEMO_MODEL_DIR = BUNDLED_MODELS_DIR / "brain-ct-demo"
SUBTYPE_DEMO_MODEL_DIR = BUNDLED_MODELS_DIR / "brain-ct-demo-subtypes"

#: Environment variable naming the default model (Hub id or folder).
MODEL_ENV = "BRAIN_CT_MODEL"

#: The labels of a binary brain-CT model, by class index.
ID2LABEL: dict[int, str] = dict(enumerate(BINARY_LABELS))
LABEL2ID: dict[str, int] = {v: k for k, v in ID2LABEL.items()}

_MIN_SIZE, _MAX_SIZE = 32, 2048

#: Input kinds a slice can come from (``CTImage.source``), the keys of ``brain_ct_input_thresholds``.
INPUT_KINDS = ("dicom", "image", "nifti")


@dataclass(frozen=True)
class ModelSettings:
    """Preprocessing and decision settings of one model, read from its ``config.json``.

    Attributes:
        windows: one (center, width) in HU per window channel.
        image_size: side of the square model input, pixels.
        threshold: P(hemorrhage) at or above which the label is "hemorrhage", in (0, 1).
        mean, std: per-input-channel normalisation after windowing (length ``num_channels``).
        context_slices: k neighbouring slices on each side stacked as channels (0 = single slice).
        trained_on: what the weights were trained on (``brain_ct_trained_on``), or None if unknown.
        model_id: the id or folder the model was loaded from (as given, or resolved; a folder inside
            this project relative to it, see :func:`shown_model_id`).
        revision: the Hub revision asked for, or None.
        is_demo: True for a bundled demo model (a folder of ``models/``) or any model trained on
            synthetic data only;
            the app shows a "for demonstration only" banner then.
        labels: the class names in logit order (``id2label``): :data:`~brain_ct.labels.BINARY_LABELS`
            (default) or the six :data:`~brain_ct.labels.SUBTYPE_LABELS` in any order.
        threshold_rule: how ``threshold`` was chosen (``brain_ct_threshold_rule``), or None if unrecorded.
        temperature: calibration temperature already folded into the weights (``brain_ct_temperature``);
            informational, 1.0 when none.
        member_ids: for an ensemble (:mod:`brain_ct.ensemble`), its members' ids as written in
            ``ensemble.json``; () for a single model. The preprocessing fields (windows, size, mean,
            std) are then the first member's, ``context_slices`` the largest of the members'.
        eight_bit: what an 8-bit image's grey becomes (``brain_ct_8bit_mapping``, :class:`EightBitMapping`;
            a mode name such as ``"pseudo_hu"`` is accepted and read with the default assumed window);
            ``"repeat"`` when the config has no key.
        input_thresholds: thresholds replacing ``threshold`` for slices of one input kind
            (``brain_ct_input_thresholds``, keys from :data:`INPUT_KINDS`); None when the model has one
            threshold for every kind. Use :meth:`threshold_for`.
        scan_rule: how slice probabilities make a scan's reading (``brain_ct_scan_rule``, chosen on
            validation scans by ``python -m train.scan_rule``; :class:`~brain_ct.scan.ScanRule`); None when
            the config has no key (the default rule then).
    """

    windows: tuple[tuple[float, float], ...]
    image_size: int
    threshold: float
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    context_slices: int = 0
    trained_on: str | None = None
    model_id: str = ""
    revision: str | None = None
    is_demo: bool = False
    labels: tuple[str, ...] = BINARY_LABELS
    # A dict cannot be hashed: leave it out of the (frozen dataclass's) hash, keep it in equality.
    threshold_rule: dict[str, Any] | None = field(default=None, hash=False)
    temperature: float = 1.0
    member_ids: tuple[str, ...] = ()
    eight_bit: EightBitMapping = REPEAT
    input_thresholds: dict[str, float] | None = field(default=None, hash=False)
    scan_rule: ScanRule | None = None

    def __post_init__(self) -> None:
        if self.input_thresholds is not None:
            object.__setattr__(self, "input_thresholds", checked_input_thresholds(self.input_thresholds))
        if isinstance(self.eight_bit, str):
            object.__setattr__(self, "eight_bit", EightBitMapping(self.eight_bit))
        elif not isinstance(self.eight_bit, EightBitMapping):
            raise ValueError(
                f"ModelSettings.eight_bit must be an EightBitMapping or one of {EIGHT_BIT_MAPPINGS}; "
                f"got {self.eight_bit!r}"
            )
        labels = tuple(str(n).strip().lower() for n in self.labels)
        if label_set_of(labels) is None or len(set(labels)) != len(labels):
            raise ValueError(
                f"ModelSettings.labels must be {BINARY_LABELS} or the six {SUBTYPE_LABELS} (any order); got {labels}"
            )
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "member_ids", tuple(str(m) for m in self.member_ids))
        wins = tuple((float(c), float(w)) for c, w in self.windows)
        object.__setattr__(self, "windows", wins)
        if not self.mean or not self.std:
            mean, std = default_stats(self.num_channels)
            object.__setattr__(self, "mean", tuple(mean))
            object.__setattr__(self, "std", tuple(std))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.is_demo is False and self.trained_on and "synthetic" in self.trained_on.lower():
            object.__setattr__(self, "is_demo", True)

    def threshold_for(self, kind: str | None) -> float:
        """The decision threshold for a slice of input kind ``kind`` (``CTImage.source``): its entry of
        :attr:`input_thresholds`, else :attr:`threshold`."""
        return float((self.input_thresholds or {}).get(str(kind), self.threshold))

    @property
    def demo_note(self) -> str:
        """What the "for demonstration only" warning of a demo model says (:attr:`is_demo`): a bundled model
        (a folder of ``models/``) trained with real anatomy says "phantoms and one real head"."""
        real = re.search(r"\breal (anatomy|head|normal)", str(self.trained_on or "")) is not None
        return BUNDLED_NOTE if real and is_bundled(self.model_id) else DEMO_NOTE

    @property
    def num_channels(self) -> int:
        """Input channels the model expects: windows × (2 × context_slices + 1)."""
        return len(self.windows) * (2 * self.context_slices + 1)

    @property
    def is_multi_label(self) -> bool:
        """True for a subtype model (RSNA's six sigmoid outputs), False for a binary softmax model."""
        return label_set_of(self.labels) == "subtypes"

    @property
    def subtypes(self) -> tuple[str, ...]:
        """The five subtype names (:data:`~brain_ct.labels.SUBTYPES` order) of a subtype model; () if binary."""
        return SUBTYPES if self.is_multi_label else ()

    @property
    def hemorrhage_index(self) -> int:
        """Logit index of P(hemorrhage): "hemorrhage" (binary) or "any" (subtype model)."""
        return architectures.hemorrhage_index(self.labels, self.is_multi_label)

    @property
    def is_ensemble(self) -> bool:
        """True when these are the settings of an ensemble (:mod:`brain_ct.ensemble`)."""
        return bool(self.member_ids)


def resolve_model_id(explicit: str | os.PathLike[str] | None = None) -> str:
    """Pick the model to load: ``explicit``, then env ``BRAIN_CT_MODEL``, then the bundled default
    (``models/brain-ct-resnet50``, or ``models/brain-ct-demo`` where that folder is missing).

    Args:
        explicit: a Hub id (``owner/name``) or a folder, e.g. from ``--model``; None or "" to
            fall through.

    Returns:
        The id or folder path as a string.

    Raises:
        ModelLoadError: nothing was given and neither bundled model is there.
    """
    if explicit is not None and str(explicit).strip():
        return str(explicit).strip()
    env = os.environ.get(MODEL_ENV, "").strip()
    if env:
        return env
    for bundled in (DEFAULT_MODEL_DIR, DEMO_MODEL_DIR):
        if (bundled / "config.json").is_file():
            return str(bundled)
    raise ModelLoadError(
        f"no model given and the bundled models are missing ({DEFAULT_MODEL_DIR}, {DEMO_MODEL_DIR}). "
        "Pass a Hub id or folder with --model (or the model argument), set the environment "
        f"variable {MODEL_ENV}, or train the demo model with python -m train "
        "(the README's section 'The small demo model' and each model's card have the exact commands)"
    )


def shown_model_id(model_id: str) -> str:
    """The model id to show in outputs: a Hub id as given; a folder inside this project relative to it.

    A bundled model is resolved to an absolute path for loading; outputs, reports and the public app
    show ``models/brain-ct-resnet50`` instead of the server's directory layout. Other folders stay as given.
    """
    path = Path(model_id).expanduser()
    if not model_id or not path.exists():
        return model_id
    try:
        return path.resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return model_id


def _looks_like_path(model_id: str) -> bool:
    """True when ``model_id`` can only be a local path (a Hub id is ``name`` or ``owner/name``)."""
    if model_id.startswith((".", "/", "~", "\\")) or model_id.endswith(("/", "\\")):
        return True
    if os.sep != "/" and os.sep in model_id:
        return True
    return model_id.count("/") > 1 or ":" in model_id


def is_bundled(model_id: str) -> bool:
    """True for a folder of ``models/`` (a bundled model), given as an absolute path or relative to the
    project (how :func:`shown_model_id` shows it)."""
    if not model_id:
        return False
    path = Path(model_id).expanduser()
    try:
        path = (path if path.is_absolute() else PROJECT_ROOT / path).resolve()
    except OSError:
        return False
    return path.parent == BUNDLED_MODELS_DIR and path.is_dir()


def _is_demo_path(model_id: str) -> bool:
    try:
        path = Path(model_id).expanduser().resolve()
        return path in (DEFAULT_MODEL_DIR, DEMO_MODEL_DIR) or path.parent == BUNDLED_MODELS_DIR
    except OSError:
        return False


def _as_float_list(value: Any, key: str, model_id: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ModelLoadError(f"model {model_id!r}: config key {key} must be a non-empty list; got {value!r}")
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ModelLoadError(
            f"model {model_id!r}: config key {key} must hold numbers; got {value!r}"
        ) from None
    if not all(math.isfinite(v) for v in out):
        raise ModelLoadError(f"model {model_id!r}: config key {key} must hold finite numbers; got {value!r}")
    return out


def _labels_from_config(config: PretrainedConfig, name: str) -> tuple[str, ...]:
    """The class names in logit order, checked against the two accepted label sets and problem_type."""
    raw = getattr(config, "id2label", None) or {}
    try:
        id2label = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        id2label = {}
    accepted = (
        f"a brain-CT hemorrhage model must have exactly two labels {dict(enumerate(BINARY_LABELS))} (softmax), "
        f"or exactly the six RSNA labels {dict(enumerate(SUBTYPE_LABELS))} with problem_type "
        f"{MULTI_LABEL!r} (one sigmoid each); fix id2label/label2id in config.json"
    )
    if sorted(id2label) != list(range(len(id2label))):
        raise ModelLoadError(f"model {name!r} has labels {raw}; {accepted}")
    labels = tuple(id2label[i].strip().lower() for i in range(len(id2label)))
    kind = label_set_of(labels) if len(set(labels)) == len(labels) else None
    if kind is None:
        raise ModelLoadError(f"model {name!r} has labels {id2label}; {accepted}")
    problem_type = getattr(config, "problem_type", None)
    if kind == "subtypes" and problem_type != MULTI_LABEL:
        raise ModelLoadError(
            f"model {name!r} has the RSNA subtype labels but problem_type {problem_type!r}; a subtype model "
            f'has one sigmoid per label: set "problem_type": {MULTI_LABEL!r} in config.json'
        )
    if kind == "binary" and problem_type == MULTI_LABEL:
        raise ModelLoadError(
            f"model {name!r} has the binary labels {id2label} but problem_type {MULTI_LABEL!r}; a binary "
            "model is a two-class softmax: remove problem_type (or set 'single_label_classification')"
        )
    return labels


def settings_from_config(
    config: PretrainedConfig, model_id: str = "", revision: str | None = None
) -> ModelSettings:
    """Validate a model config against the model folder contract and read its settings.

    Args:
        config: the loaded ``transformers`` config.
        model_id: the id or folder, for error messages and :attr:`ModelSettings.model_id`.
        revision: the Hub revision asked for, or None.

    Raises:
        ModelLoadError: not a supported family's classifier (:mod:`brain_ct.architectures`), labels other than the binary or the RSNA subtype
            set (or a subtype set without ``problem_type: "multi_label_classification"``, or the binary
            set with it), or a ``brain_ct_*`` key missing or invalid. The message names the key and
            how to fix it.
    """
    name = model_id or "<config>"
    architectures.family_of(config, name)
    labels = _labels_from_config(config, name)
    _check_required_keys(config, name)
    windows = _windows_from_config(config, name)
    size = config.brain_ct_image_size
    if isinstance(size, bool) or not isinstance(size, int) or not _MIN_SIZE <= size <= _MAX_SIZE:
        raise ModelLoadError(
            f"model {name!r}: brain_ct_image_size must be an integer from {_MIN_SIZE} to {_MAX_SIZE} px; got {size!r}"
        )
    threshold = config.brain_ct_threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ModelLoadError(
            f"model {name!r}: brain_ct_threshold must be a number in (0, 1); got {threshold!r}"
        )
    context = _context_from_config(config, name, len(windows))
    mean, std = _normalisation_from_config(config, name, len(windows) * (2 * context + 1))
    trained_on = getattr(config, "brain_ct_trained_on", None)
    rule = _threshold_rule_from_config(config, name)
    temperature = _temperature_from_config(config, name)
    return ModelSettings(
        eight_bit=_eight_bit_from_config(config, name),
        windows=tuple(windows),
        image_size=int(size),
        threshold=float(threshold),
        mean=tuple(mean),
        std=tuple(std),
        context_slices=int(context),
        trained_on=str(trained_on) if trained_on else None,
        model_id=shown_model_id(model_id),
        revision=revision,
        is_demo=_is_demo_path(model_id) if model_id else False,
        labels=labels,
        threshold_rule=dict(rule) if rule is not None else None,
        temperature=temperature,
        input_thresholds=_input_thresholds_from_config(config, name),
        scan_rule=_scan_rule_from_config(config, name),
    )


def _check_required_keys(config: PretrainedConfig, name: str) -> None:
    """The keys every model saved by ``python -m train`` has; a model without them was made elsewhere."""
    missing = [
        k for k in ("brain_ct_windows", "brain_ct_image_size", "brain_ct_threshold") if not hasattr(config, k)
    ]
    if missing:
        raise ModelLoadError(
            f"model {name!r} lacks the config key(s) {', '.join(missing)}: it was not saved by "
            "python -m train. Add them to its config.json (see ARCHITECTURE.md, model folder contract), "
            'e.g. "brain_ct_windows": [[40, 80], [80, 200], [600, 2800]], '
            '"brain_ct_image_size": 224, "brain_ct_threshold": 0.5'
        )


def _windows_from_config(config: PretrainedConfig, name: str) -> list[tuple[float, float]]:
    """``brain_ct_windows``: the input channels' [center, width] windows in HU, widths > 0."""
    raw_windows = config.brain_ct_windows
    if not isinstance(raw_windows, (list, tuple)) or not raw_windows:
        raise ModelLoadError(
            f"model {name!r}: brain_ct_windows must be a list of [center, width] in HU; got {raw_windows!r}"
        )
    windows: list[tuple[float, float]] = []
    for w in raw_windows:
        pair = _as_float_list(w, "brain_ct_windows", name)
        if len(pair) != 2 or pair[1] <= 0:
            raise ModelLoadError(
                f"model {name!r}: each entry of brain_ct_windows is [center, width] with width > 0 HU; got {w!r}"
            )
        windows.append((pair[0], pair[1]))
    return windows


def _context_from_config(config: PretrainedConfig, name: str, n_windows: int) -> int:
    """``brain_ct_context_slices`` (0 when absent), checked with the windows against ``num_channels``."""
    context = getattr(config, "brain_ct_context_slices", 0) or 0
    if isinstance(context, bool) or not isinstance(context, int) or not 0 <= context <= 8:
        raise ModelLoadError(
            f"model {name!r}: brain_ct_context_slices must be an integer from 0 to 8; got {context!r}"
        )
    expected = n_windows * (2 * context + 1)
    num_channels = getattr(config, "num_channels", None)
    if num_channels != expected:
        raise ModelLoadError(
            f"model {name!r} takes {num_channels} input channels but its settings describe {expected} "
            f"({n_windows} window(s) × {2 * context + 1} slice(s)); fix brain_ct_windows or "
            "brain_ct_context_slices in config.json"
        )
    return context


def _normalisation_from_config(
    config: PretrainedConfig, name: str, n_channels: int
) -> tuple[list[float], list[float]]:
    """``brain_ct_image_mean`` / ``_std``, one per input channel; the defaults when either is absent."""
    mean_raw = getattr(config, "brain_ct_image_mean", None)
    std_raw = getattr(config, "brain_ct_image_std", None)
    if mean_raw is None or std_raw is None:
        return default_stats(n_channels)
    mean = _as_float_list(mean_raw, "brain_ct_image_mean", name)
    std = _as_float_list(std_raw, "brain_ct_image_std", name)
    if len(mean) != n_channels or len(std) != n_channels:
        raise ModelLoadError(
            f"model {name!r}: brain_ct_image_mean/std need one value per input channel ({n_channels}); "
            f"got {len(mean)} and {len(std)}"
        )
    if min(std) <= 0:
        raise ModelLoadError(f"model {name!r}: brain_ct_image_std values must be > 0; got {std}")
    return mean, std


def _threshold_rule_from_config(config: PretrainedConfig, name: str) -> dict | None:
    """``brain_ct_threshold_rule``: how the threshold was chosen (a JSON object), or None."""
    rule = getattr(config, "brain_ct_threshold_rule", None)
    if rule is not None and not isinstance(rule, dict):
        raise ModelLoadError(
            f"model {name!r}: brain_ct_threshold_rule must be a JSON object describing how the threshold "
            f"was chosen; got {rule!r}. Remove the key or write it as python -m train does"
        )
    return rule


def _temperature_from_config(config: PretrainedConfig, name: str) -> float:
    """``brain_ct_temperature``: the calibration temperature folded into the weights (1 when absent)."""
    temperature = getattr(config, "brain_ct_temperature", None)
    temperature = 1.0 if temperature is None else temperature
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ModelLoadError(
            f"model {name!r}: brain_ct_temperature must be a number > 0 (the calibration temperature "
            f"folded into the weights; 1 = none); got {temperature!r}"
        )
    return float(temperature)


def _scan_rule_from_config(config: PretrainedConfig, name: str) -> ScanRule | None:
    """``brain_ct_scan_rule`` as a :class:`~brain_ct.scan_rule.ScanRule`; None when absent (older models)."""
    raw = getattr(config, "brain_ct_scan_rule", None)
    if raw is None:
        return None
    try:
        return ScanRule.from_dict(raw)
    except (InvalidInputError, TypeError) as exc:
        raise ModelLoadError(
            f"model {name!r}: config key brain_ct_scan_rule: {exc}. Write it with python -m train.scan_rule "
            "--write, or remove it to read scans by the default rule"
        ) from None


def checked_input_thresholds(raw: Any) -> dict[str, float] | None:
    """``brain_ct_input_thresholds`` (or an ensemble's ``input_thresholds``) as ``{kind: threshold}``, None
    when empty; ValueError for anything else."""
    if not isinstance(raw, dict):
        raise ValueError(f"input thresholds must map an input kind to a threshold; got {raw!r}")
    out: dict[str, float] = {}
    for kind, value in raw.items():
        if kind not in INPUT_KINDS:
            raise ValueError(f"unknown input kind {kind!r} in the input thresholds; kinds are {INPUT_KINDS}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
            raise ValueError(f"the {kind} threshold must be a number in (0, 1); got {value!r}")
        out[kind] = float(value)
    return out or None


def _input_thresholds_from_config(config: PretrainedConfig, name: str) -> dict[str, float] | None:
    raw = getattr(config, "brain_ct_input_thresholds", None)
    if raw is None:
        return None
    try:
        return checked_input_thresholds(raw)
    except ValueError as exc:
        raise ModelLoadError(
            f"model {name!r}: config key brain_ct_input_thresholds: {exc}. Write it as python -m train does "
            '(e.g. {"image": 0.37}) or remove it to use brain_ct_threshold for every input kind'
        ) from None


def _eight_bit_from_config(config: PretrainedConfig, name: str) -> EightBitMapping:
    """``brain_ct_8bit_mapping`` / ``brain_ct_8bit_assumed_window``; absent → ``"repeat"`` (older models)."""
    mode = getattr(config, "brain_ct_8bit_mapping", None)
    raw_window = getattr(config, "brain_ct_8bit_assumed_window", None)
    if mode is None and raw_window is None:
        return REPEAT
    window = REPEAT.assumed_window
    if raw_window is not None:
        pair = _as_float_list(raw_window, "brain_ct_8bit_assumed_window", name)
        if len(pair) != 2 or pair[1] <= 0:
            raise ModelLoadError(
                f"model {name!r}: brain_ct_8bit_assumed_window is [center, width] in HU with width > 0; "
                f"got {raw_window!r}"
            )
        window = (pair[0], pair[1])
    try:
        return EightBitMapping(REPEAT.mode if mode is None else mode, window)
    except ValueError as exc:
        raise ModelLoadError(
            f"model {name!r}: config key brain_ct_8bit_mapping: {exc}. Set it to one of "
            f"{', '.join(repr(m) for m in EIGHT_BIT_MAPPINGS)} in config.json, or remove it for 'repeat'"
        ) from None


def apply_settings_to_config(config: PretrainedConfig, settings: ModelSettings) -> PretrainedConfig:
    """Write ``settings`` (its labels, problem_type for subtype models) into a config, for ``save_pretrained``.

    The training script calls this before saving so that every model folder it writes loads
    with :func:`load_model`. ``num_channels`` must already match ``settings.num_channels``.

    Returns:
        The same config, modified in place.
    """
    config.id2label = dict(enumerate(settings.labels))
    config.label2id = {name: i for i, name in enumerate(settings.labels)}
    if settings.is_multi_label:
        config.problem_type = MULTI_LABEL
    elif getattr(config, "problem_type", None) == MULTI_LABEL:
        config.problem_type = None
    config.brain_ct_windows = [[float(c), float(w)] for c, w in settings.windows]
    config.brain_ct_image_size = int(settings.image_size)
    config.brain_ct_threshold = float(settings.threshold)
    config.brain_ct_image_mean = [float(v) for v in settings.mean]
    config.brain_ct_image_std = [float(v) for v in settings.std]
    config.brain_ct_context_slices = int(settings.context_slices)
    if settings.trained_on:
        config.brain_ct_trained_on = settings.trained_on
    if settings.threshold_rule is not None:
        config.brain_ct_threshold_rule = dict(settings.threshold_rule)
    config.brain_ct_temperature = float(settings.temperature)
    if settings.input_thresholds:
        config.brain_ct_input_thresholds = dict(settings.input_thresholds)
    elif hasattr(config, "brain_ct_input_thresholds"):
        del config.brain_ct_input_thresholds  # a re-chosen single threshold replaces the old per-kind ones
    config.brain_ct_8bit_mapping = settings.eight_bit.mode
    config.brain_ct_8bit_assumed_window = [float(v) for v in settings.eight_bit.assumed_window]
    settings_from_config(config, "<config>")  # refuse to write what load_model would refuse
    return config


def _load_config(model_id: str, revision: str | None) -> PretrainedConfig:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=False)
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors, ...
        where = "folder" if Path(model_id).expanduser().exists() else "Hub id or folder"
        raise ModelLoadError(
            f"cannot load the model config of {where} {model_id!r}"
            + (f" at revision {revision!r}" if revision else "")
            + f": {_first_line(exc)}. Check the id/path (a folder needs config.json and model.safetensors; "
            "a Hub id needs network access, or a cached copy when HF_HUB_OFFLINE=1)"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def load_model(
    model_id_or_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, ModelSettings]:
    """Load a brain-CT model and its settings.

    Args:
        model_id_or_dir: a Hub id (``owner/name``, fetched with ``huggingface_hub`` into its cache;
            works offline from the cache with ``HF_HUB_OFFLINE=1``) or a local folder; None
            follows :func:`resolve_model_id`.
        revision: a Hub branch, tag or commit hash (pin a commit on Spaces); None for the default.
        device: torch device to put the model on.

    Returns:
        ``(model, settings)``: the ``ResNetForImageClassification`` in eval mode and its
        :class:`ModelSettings`.

    Raises:
        ModelLoadError: bad id or folder, unreachable Hub, no safetensors weights, or a config
            that does not follow the model folder contract. The message names the id.
    """
    model_id = resolve_model_id(None if model_id_or_dir is None else str(model_id_or_dir))
    local = Path(model_id).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file() and (local / "ensemble.json").is_file():
            raise ModelLoadError(
                f"{model_id!r} is an ensemble folder (ensemble.json), not a single model; load it with "
                "Predictor.from_pretrained or brain_ct.ensemble.load"
            )
        if not (local / "config.json").is_file():
            raise ModelLoadError(
                f"model folder {model_id!r} has no config.json; a model folder is what python -m train "
                "writes (config.json + model.safetensors)"
            )
        model_id = str(local)
    elif local.exists():
        raise ModelLoadError(f"model {model_id!r} is a file; give the model's folder or a Hub id")
    elif _looks_like_path(model_id):
        raise ModelLoadError(
            f"model folder {model_id!r} does not exist; give an existing folder or a Hub id (owner/name)"
        )

    config = _load_config(model_id, revision)
    settings = settings_from_config(config, model_id, revision)

    import torch
    from transformers import AutoModelForImageClassification

    try:
        # fp32 whatever the file holds: transformers' "auto" dtype would keep an fp16 file (the bundled
        # ResNet-50) in half precision, which CPU convolutions run slower and Grad-CAM less exactly.
        model = AutoModelForImageClassification.from_pretrained(
            model_id,
            config=config,
            revision=revision,
            use_safetensors=True,
            trust_remote_code=False,
            dtype=torch.float32,
        )
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load the weights of model {model_id!r}: {_first_line(exc)}. "
            "Only safetensors weights (model.safetensors) are accepted"
        ) from exc
    family = architectures.family_of(config, model_id)
    if type(model).__name__ != family.model_class:
        raise ModelLoadError(f"model {model_id!r} loaded as {type(model).__name__}, not {family.model_class}")
    model.eval()
    model.to(device)
    # Nothing in inference trains the weights: don't let Grad-CAM's backward fill .grad buffers.
    for p in model.parameters():
        p.requires_grad_(False)
    return model, settings


def build_random_model(
    settings: ModelSettings,
    *,
    hidden_sizes: Sequence[int] = (8, 16, 32),
    depths: Sequence[int] | None = None,
    embedding_size: int | None = None,
    layer_type: str = "basic",
    seed: int | None = None,
) -> torch.nn.Module:
    """A randomly initialised ``ResNetForImageClassification`` whose config carries ``settings``.

    For tests, smoke runs and benchmarks, which must not download weights; ``save_pretrained`` on the
    result writes a folder that :func:`load_model` accepts. ``ResNetConfig()`` defaults
    (``hidden_sizes=(256, 512, 1024, 2048)``, ``depths=(3, 4, 6, 3)``, ``embedding_size=64``,
    ``layer_type="bottleneck"``) give ResNet-50's compute.

    Args:
        settings: the brain-CT settings (its ``num_channels`` sets the input channels).
        hidden_sizes: channels of each stage.
        depths: blocks per stage (default one each).
        embedding_size: stem channels (default ``hidden_sizes[0]``).
        layer_type: ``"basic"`` or ``"bottleneck"``.
        seed: torch seed for the weights, or None to leave the global RNG as it is.

    Returns:
        The model in eval mode.
    """
    import torch

    family = architectures.FAMILIES["resnet"]
    config = family.config_class()(
        num_channels=settings.num_channels,
        embedding_size=int(embedding_size or hidden_sizes[0]),
        hidden_sizes=[int(h) for h in hidden_sizes],
        depths=[int(d) for d in depths] if depths is not None else [1] * len(hidden_sizes),
        layer_type=layer_type,
        num_labels=len(settings.labels),
    )
    apply_settings_to_config(config, settings)
    if seed is not None:
        torch.manual_seed(seed)
    return family.build(config).eval()
