"""Command-line arguments of ``python -m train``, as dataclasses read by :class:`transformers.HfArgumentParser`.

Three groups, as in Hugging Face's ``run_image_classification.py``:

* :class:`ModelArguments` — which network to start from (a Hub id / folder, a ``ResNetConfig`` JSON or a
  size preset built without pretrained weights).
* :class:`DataArguments` — where the slices come from (image folders, a Hub dataset, an RSNA 2019 DICOM
  folder with its CSV, NIfTI volumes with voxel masks, or phantoms generated on the fly), the CT windows and input size, augmentation and
  optional lesion-mask guidance.
* :class:`BrainCTTrainingArguments` — :class:`transformers.TrainingArguments` with this project's defaults
  (learning rate 1e-4, best checkpoint by validation ROC AUC, …) plus the two-stage schedule, class weights
  and the decision-threshold rule.

Everything is checked in ``__post_init__``; a bad value raises ``ValueError`` naming the flag to change.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainingArguments

from brain_ct.errors import InvalidInputError
from brain_ct.labels import LABEL_MODES
from brain_ct.preprocess import EIGHT_BIT_MAPPINGS, EightBitMapping
from brain_ct.windowing import PRESETS, Window, resolve_window
from train.presets import PRESETS_OF_RUN
from train.shared_args import (
    EvaluationDataArguments,
    FixedThresholdArguments,
    RealAnatomyEvalArguments,
    TemperatureScalingArguments,
    check_at_least,
    check_folder,
)

#: Mask-guidance losses (see train/trainer.py).
MASK_LOSS_TYPES = ("bce", "outside")

#: ``--model_size`` presets: ``ResNetConfig`` keyword arguments for networks trained from scratch.
#: ``demo`` keeps three stages (total stride 16) so Grad-CAM is 16×16 at a 256-pixel input, and stays < 10 MB.
MODEL_SIZE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
    "demo": {"embedding_size": 32, "hidden_sizes": [32, 64, 128], "depths": [2, 2, 2], "layer_type": "basic"},
    "resnet18-random": {
        "embedding_size": 64,
        "hidden_sizes": [64, 128, 256, 512],
        "depths": [2, 2, 2, 2],
        "layer_type": "basic",
    },
    "resnet50-random": {},  # ResNetConfig() defaults: the same compute as microsoft/resnet-50
}

DEFAULT_BASE_MODEL = "microsoft/resnet-50"


def _parse_floats(text: str, flag: str, count: int | None = None) -> list[float]:
    """Parse ``"1.0,1.3"`` into floats; ``ValueError`` naming ``flag`` when malformed."""
    try:
        values = [float(v) for v in str(text).replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated numbers such as '1.0,1.3'; got {text!r}") from None
    if count is not None and len(values) != count:
        raise ValueError(f"{flag} expects {count} comma-separated numbers; got {text!r}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{flag} expects finite numbers; got {text!r}")
    return values


def _has_accelerator() -> bool:
    import torch

    return bool(
        torch.cuda.is_available()
        or getattr(torch.backends, "mps", None)
        and torch.backends.mps.is_available()
    )


def parse_windows(specs: list[str] | tuple[str, ...]) -> list[Window]:
    """Resolve ``--windows`` items: a preset name (``brain``) or ``center,width`` in HU (``80,200``).

    Raises:
        ValueError: naming ``--windows`` when an item is neither.
    """
    if not specs:
        raise ValueError("--windows needs at least one window (a preset name or 'center,width' in HU)")
    out: list[Window] = []
    for spec in specs:
        text = str(spec).strip()
        try:
            if any(ch.isdigit() for ch in text) and "," in text:
                out.append(resolve_window(_parse_floats(text, "--windows", 2)))
            else:
                out.append(resolve_window(text))
        except (InvalidInputError, ValueError) as exc:
            raise ValueError(
                f"--windows: cannot use {text!r} ({exc}); give preset names ({', '.join(PRESETS)}) "
                "or 'center,width' pairs in HU, e.g. --windows brain subdural 600,2800"
            ) from None
    return out


def load_model_config(spec: str) -> dict[str, Any]:
    """Read ``--model_config``: a path to a JSON file or an inline JSON object of ``ResNetConfig`` fields."""
    text = spec.strip()
    if not text.startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"--model_config: {spec!r} is neither a JSON file nor an inline JSON object")
        text = path.read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"--model_config is not valid JSON ({exc}); give e.g. '{{\"depths\": [1, 1]}}'"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(
            f"--model_config must be a JSON object of ResNetConfig fields; got {type(value).__name__}"
        )
    return value


@dataclass
class ModelArguments:
    """Which network to fine-tune or build."""

    model_name_or_path: str = field(
        default=DEFAULT_BASE_MODEL,
        metadata={
            "help": "Pretrained ResNet on the Hub or a local folder (the default needs the Hub at run "
            "time; offline: the folder python -m train.import_resnet50 writes). A head of another size is made "
            "anew and the first convolution adapted to the channel count. Ignored when --model_config or "
            "--model_size is given."
        },
    )
    model_config: str | None = field(
        default=None,
        metadata={
            "help": "Build a ResNet from scratch (random weights) from this ResNetConfig: a JSON file "
            'path or an inline JSON object, e.g. \'{"hidden_sizes": [16, 32], "depths": [1, 1]}\'.'
        },
    )
    model_size: str | None = field(
        default=None,
        metadata={
            "help": f"Build a ResNet from scratch from a size preset: {', '.join(MODEL_SIZE_PRESETS)}. "
            "'demo' is the bundled demo model's architecture (3 stages, stride 16, < 10 MB)."
        },
    )
    preset: str | None = field(
        default=None,
        metadata={
            "help": "A set of defaults; flags given explicitly override them. 'adapt': fine-tune an "
            "existing brain-CT model (default: the bundled models/brain-ct-demo, or --model_name_or_path) "
            "on your own labelled folder (--train_dir) on a laptop CPU: its windows, input size and "
            "normalisation, no frozen stage, learning rate 1e-4 for 10 epochs, batch 16, a stratified 20 %% "
            "validation split, and the real_fpr threshold rule (your files are real anatomy)."
        },
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the base model."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads are cached."})

    def __post_init__(self) -> None:
        if self.model_config is not None and self.model_size is not None:
            raise ValueError("give either --model_config or --model_size, not both")
        if self.preset is not None and self.preset not in PRESETS_OF_RUN:
            raise ValueError(
                f"--preset {self.preset!r} is unknown; choose one of {', '.join(PRESETS_OF_RUN)}"
            )
        if self.preset == "adapt" and self.from_scratch:
            raise ValueError(
                "--preset adapt fine-tunes an existing model; drop --model_size / --model_config "
                "(or give --model_name_or_path to start from another model folder)"
            )
        if self.model_size is not None and self.model_size not in MODEL_SIZE_PRESETS:
            raise ValueError(
                f"--model_size {self.model_size!r} is unknown; choose one of {', '.join(MODEL_SIZE_PRESETS)}"
            )
        if self.model_config is not None:
            load_model_config(self.model_config)  # fail early on a bad file or JSON

    @property
    def from_scratch(self) -> bool:
        """True when the network is built with random weights rather than loaded pretrained."""
        return self.model_config is not None or self.model_size is not None


@dataclass
class DataArguments(EvaluationDataArguments, RealAnatomyEvalArguments):
    """Where the training data comes from and how it becomes model input; the validation and test data
    flags are those of ``train.evaluate`` and ``train.calibrate`` (:mod:`train.shared_args`)."""

    train_dir: str | None = field(
        default=None,
        metadata={
            "help": "Image folder for training: hemorrhage/ and normal/ subfolders of PNG/JPG/DICOM "
            "files (the seed's Dataset/train layout)."
        },
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A Hugging Face dataset (Hub id or local loading script/folder)."}
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Configuration of --dataset_name."}
    )
    image_column: str = field(default="image", metadata={"help": "Image column of --dataset_name."})
    label_column: str = field(
        default="label",
        metadata={"help": "Label column of --dataset_name: 0/1, or class names normal/hemorrhage."},
    )
    train_split: str = field(default="train", metadata={"help": "Training split of --dataset_name."})
    validation_split_name: str | None = field(
        default=None,
        metadata={"help": "Validation split of --dataset_name (default: 'validation' if present)."},
    )
    test_split_name: str | None = field(
        default=None, metadata={"help": "Test split of --dataset_name (default: 'test' if present)."}
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream --dataset_name instead of downloading it (needs --max_steps and "
            "--class_weights, and a validation split or --max_eval_samples taken from the stream)."
        },
    )
    subtypes_column: str = field(
        default="subtypes",
        metadata={
            "help": "--dataset_name: a column holding each image's list of subtype names (e.g. "
            "['subdural', 'subarachnoid'], [] for normal). Five 0/1 columns named epidural, "
            "intraparenchymal, intraventricular, subarachnoid, subdural (any case) are found without it."
        },
    )
    labels: str = field(
        default="auto",
        metadata={
            "help": "Label set of the model: 'binary' (normal / hemorrhage, softmax), 'subtypes' (RSNA's "
            "any + five subtypes, one sigmoid each) or 'auto': subtypes when the training data names them "
            "(RSNA CSV subtype rows, subtype class folders or metadata.jsonl, Hub subtype columns), else "
            "binary. Phantoms and --real_anatomy_dir carry their subtypes only with 'subtypes'. A subtype "
            "run refuses bleeds of unknown subtype (a hemorrhage/ folder): their subtype targets would be "
            "guesses."
        },
    )
    dicom_dir: str | None = field(
        default=None, metadata={"help": "Folder of DICOM slices in the RSNA 2019 layout (ID_<image>.dcm)."}
    )
    labels_csv: str | None = field(
        default=None,
        metadata={
            "help": "RSNA 2019 labels CSV for --dicom_dir: 'ID,Label' rows; the ID_<image>_any rows "
            "give the label, and a subtype run (--labels subtypes, or auto with subtype rows) reads all "
            "six rows of each image (any must be 1 exactly when a subtype is)."
        },
    )
    nifti_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of NIfTI CT volumes (.nii/.nii.gz, in HU) with voxel lesion masks, searched "
            "recursively: X.nii.gz is paired with X<mask_suffix>.nii.gz beside it, or with the same name "
            "under --nifti_mask_dir. Each axial slice is one example, labelled from its mask (at least "
            "--min_lesion_area lesion pixels = hemorrhage, none = normal); the masks also serve mask "
            "guidance. The validation split keeps whole volumes on one side."
        },
    )
    nifti_mask_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the voxel masks of --nifti_dir when they are not beside the volumes (e.g. "
            "BHSD's 'ground truths/', INSTANCE 2022's 'label/'): the same relative path and file name "
            "(plus --mask_suffix, default none)."
        },
    )
    mask_suffix: str | None = field(
        default=None,
        metadata={
            "help": "--nifti_dir: what a mask's file name adds to its volume's (X.nii.gz → X_mask.nii.gz); "
            "default '_mask', or '' with --nifti_mask_dir."
        },
    )
    min_lesion_area: int = field(
        default=10,
        metadata={
            "help": "--nifti_dir: lesion pixels (any mask label > 0) a slice needs to be labelled hemorrhage; "
            "slices with fewer but some are left out as ambiguous."
        },
    )
    synthetic_train: int = field(
        default=0,
        metadata={
            "help": "Generate this many phantom slices on the fly for training (half of each class); "
            "no files are written and lesion masks come for free."
        },
    )
    synthetic_cache: bool = field(
        default=True,
        metadata={
            "help": "Generate the training and validation phantoms once, in parallel, and keep them in "
            "memory (about 330 KB per 256-px slice); each epoch then only renders and augments them. "
            "--no_synthetic_cache regenerates every phantom every time (no memory, ~3x the CPU)."
        },
    )
    real_anatomy_variants: int = field(
        default=8,
        metadata={"help": "Examples per real training level per epoch (half normal, half lesioned)."},
    )
    real_anatomy_test: bool = field(
        default=False,
        metadata={"help": "Also put the held-out real levels (other lesion seeds) into the test split."},
    )
    validation_split: float = field(
        default=0.15,
        metadata={"help": "Fraction of training data held out for validation when none is given."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training examples (debugging, quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many validation/test examples."}
    )
    windows: list[str] = field(
        default_factory=lambda: ["brain", "subdural", "bone"],
        metadata={
            "help": f"CT windows, one input channel each: preset names ({', '.join(PRESETS)}) or "
            "'center,width' in HU, e.g. --windows brain subdural 600,2800."
        },
    )
    eight_bit_mapping: str = field(
        default="repeat",
        metadata={
            "help": "What an 8-bit PNG/JPG's grey becomes (config brain_ct_8bit_mapping): 'repeat' puts the "
            "grey in every channel (also what models saved before the key do); 'pseudo_hu' reads it as a "
            "brain-window (40/80) render, maps it to pseudo-HU and applies every window as to a DICOM. The "
            "default is the one that measured better (benchmarks/NOTES.md, 'The 8-bit mapping'); --preset "
            "adapt keeps the base model's."
        },
    )
    eight_bit_assumed_window: str = field(
        default="40,80",
        metadata={
            "help": "'center,width' in HU that --eight_bit_mapping pseudo_hu assumes a figure was shown in "
            "(config brain_ct_8bit_assumed_window); --preset adapt keeps the base model's."
        },
    )
    context_slices: int = field(
        default=0,
        metadata={
            "help": "Slice context: also stack the k neighbouring slices on each side as channels (all "
            "windows per slice, 2k+1 slices; 0 = single-slice model). Neighbours come from DICOM series "
            "headers (SeriesInstanceUID, ImagePositionPatient) of --train_dir / --dicom_dir, or from "
            "generated phantom stacks; a PNG/JPG or a series' end slice repeats itself. With a pretrained "
            "3-channel ResNet use one window: --windows brain --context_slices 1. The Predictor reads k "
            "from the saved config (brain_ct_context_slices) and feeds series slices the same way."
        },
    )
    image_size: int = field(default=224, metadata={"help": "Model input side in pixels."})
    image_mean: str | None = field(
        default=None,
        metadata={
            "help": "Normalisation mean per window, comma-separated (default: ImageNet); slice-context "
            "models repeat it for every stacked slice."
        },
    )
    image_std: str | None = field(
        default=None,
        metadata={
            "help": "Normalisation std per window, comma-separated (default: ImageNet); see --image_mean."
        },
    )
    verify_head_ct: bool = field(
        default=False,
        metadata={
            "help": "Run brain_ct's head-CT plausibility check on training files too (off: the "
            "labelled data is trusted to be head CT; framing to the head is always done)."
        },
    )
    augment: bool = field(
        default=True, metadata={"help": "Augment training slices (--no_augment to turn off)."}
    )
    rotation: float = field(default=20.0, metadata={"help": "Random rotation range in degrees (±)."})
    zoom: float = field(default=0.2, metadata={"help": "Random zoom range: scale in [1-zoom, 1+zoom]."})
    shift: float = field(default=0.15, metadata={"help": "Random shift as a fraction of the side (±)."})
    brightness: str = field(
        default="0.8,1.2", metadata={"help": "Random brightness factor range 'low,high'."}
    )
    horizontal_flip: bool = field(default=True, metadata={"help": "Random left-right flip."})
    window_jitter: float = field(
        default=0.0,
        metadata={
            "help": "DICOM input only: jitter each window's center by ±jitter×width and its width by a "
            "factor in [1-jitter, 1+jitter] (0 = off; 0.1 is a sensible value)."
        },
    )
    mask_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of lesion masks named like the images (<stem>.png). Without it, "
            "<train_dir>/masks/ is used when present. Masks are only read when "
            "--mask_loss_weight > 0."
        },
    )
    mask_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the mask-guidance loss that pulls the class activation map (= Grad-CAM "
            "up to scale) into the lesion mask on positive slices (0 = off)."
        },
    )
    mask_negative_weight: float = field(
        default=0.1,
        metadata={
            "help": "Relative weight of the mask-guidance term keeping the activation map negative "
            "on normal slices (--mask_loss_type outside only)."
        },
    )
    mask_loss_type: str = field(
        default="bce",
        metadata={
            "help": "Mask guidance: 'bce' = per-cell binary cross-entropy of the hemorrhage log-odds map "
            "against the mask (dense supervision: every lesion cell positive, every cell of a normal "
            "slice negative; learns far faster from scratch), or 'outside' = the share of the "
            "activation map outside the mask."
        },
    )
    mask_pos_weight: float = field(
        default=5.0,
        metadata={
            "help": "--mask_loss_type bce: weight of lesion cells against background cells (lesions "
            "cover a few percent of a slice)."
        },
    )
    folds: int = field(
        default=0,
        metadata={
            "help": "K >= 2: train K fold models (<output_dir>/fold-<i>, each validated on its own fold of the "
            "training records, stratified, whole series together) and build the ensemble over them in "
            "--output_dir, its threshold chosen on the validation split held out from every fold. "
            "0 (default): one model."
        },
    )

    def __post_init__(self) -> None:
        if self.labels not in LABEL_MODES:
            raise ValueError(f"--labels {self.labels!r} is unknown; choose one of {', '.join(LABEL_MODES)}")
        self._check_sources()
        self.check_evaluation_data()
        self.check_real_anatomy_eval()
        self._check_sizes()
        self._parse_preprocessing()
        self._check_augmentation()
        self._check_mask_guidance()
        self._check_folds()

    def _check_sources(self) -> None:
        """Exactly one training source (real anatomy alone or mixed in), and its flags together."""
        sources = [
            self.train_dir is not None,
            self.dataset_name is not None,
            self.dicom_dir is not None,
            self.synthetic_train > 0,
            self.nifti_dir is not None,
        ]
        if sum(sources) == 0 and self.real_anatomy_dir is None:
            raise ValueError(
                "no training data: give --train_dir, --dataset_name, --dicom_dir with --labels_csv, "
                "--nifti_dir, --synthetic_train N or --real_anatomy_dir DIR"
            )
        if self.nifti_dir is None and (self.nifti_mask_dir is not None or self.mask_suffix is not None):
            raise ValueError("--nifti_mask_dir and --mask_suffix apply to --nifti_dir only")
        check_at_least("--synthetic_train", self.synthetic_train, 0)
        if self.min_lesion_area < 1:
            raise ValueError(f"--min_lesion_area must be >= 1 lesion pixel; got {self.min_lesion_area}")
        if self.real_anatomy_dir is not None:
            self._check_real_anatomy_training()
        if sum(sources) > 1:
            raise ValueError(
                "give exactly one training source: --train_dir, --dataset_name, --dicom_dir, --nifti_dir or "
                "--synthetic_train"
            )
        if (self.dicom_dir is None) != (self.labels_csv is None):
            raise ValueError("--dicom_dir and --labels_csv go together (RSNA 2019 layout)")
        for flag, value in (
            ("--train_dir", self.train_dir),
            ("--dicom_dir", self.dicom_dir),
            ("--mask_dir", self.mask_dir),
            ("--nifti_dir", self.nifti_dir),
            ("--nifti_mask_dir", self.nifti_mask_dir),
        ):
            check_folder(flag, value)
        if self.labels_csv is not None and not Path(self.labels_csv).is_file():
            raise ValueError(f"--labels_csv {self.labels_csv!r} is not a file")
        if self.streaming and self.dataset_name is None:
            raise ValueError("--streaming applies to --dataset_name only")

    def _check_real_anatomy_training(self) -> None:
        """--real_anatomy_dir as a training source: what it mixes with, and its training levels."""
        if self.dataset_name is not None:
            raise ValueError("--real_anatomy_dir mixes with file folders and phantoms, not --dataset_name")
        if self.context_slices:
            raise ValueError("--real_anatomy_dir does not support --context_slices yet (no neighbours)")
        check_at_least("--real_anatomy_variants", self.real_anatomy_variants, 2)

    def _check_sizes(self) -> None:
        """Split fraction, input size, slice context and sample caps."""
        if not 0.0 < self.validation_split < 1.0:
            raise ValueError(f"--validation_split must be in (0, 1); got {self.validation_split}")
        if self.image_size < 32:
            raise ValueError(f"--image_size must be >= 32 pixels; got {self.image_size}")
        if not 0 <= self.context_slices <= 8:
            raise ValueError(f"--context_slices must be 0–8 slices on each side; got {self.context_slices}")
        for flag, value in (
            ("--max_train_samples", self.max_train_samples),
            ("--max_eval_samples", self.max_eval_samples),
        ):
            if value is not None:
                check_at_least(flag, value, 1)

    def _parse_preprocessing(self) -> None:
        """The 8-bit mapping, the windows and the normalisation, parsed into ``eight_bit``, ``window_list``,
        ``mean_list`` and ``std_list``."""
        if self.eight_bit_mapping not in EIGHT_BIT_MAPPINGS:
            raise ValueError(
                f"--eight_bit_mapping {self.eight_bit_mapping!r} is unknown; choose one of {', '.join(EIGHT_BIT_MAPPINGS)}"
            )
        assumed = _parse_floats(self.eight_bit_assumed_window, "--eight_bit_assumed_window", 2)
        try:
            self.eight_bit = EightBitMapping(self.eight_bit_mapping, (assumed[0], assumed[1]))
        except ValueError as exc:
            raise ValueError(f"--eight_bit_assumed_window {self.eight_bit_assumed_window!r}: {exc}") from None
        self.window_list: list[Window] = parse_windows(self.windows)
        n = len(self.window_list)
        self.mean_list = _parse_floats(self.image_mean, "--image_mean", n) if self.image_mean else None
        self.std_list = _parse_floats(self.image_std, "--image_std", n) if self.image_std else None
        if self.mean_list is not None and self.std_list is not None:
            # one value per window, repeated for each stacked slice of a context model
            self.mean_list = self.mean_list * (2 * self.context_slices + 1)
            self.std_list = self.std_list * (2 * self.context_slices + 1)
        if self.std_list is not None and min(self.std_list) <= 0:
            raise ValueError(f"--image_std must be > 0; got {self.image_std!r}")
        if (self.mean_list is None) != (self.std_list is None):
            raise ValueError("--image_mean and --image_std go together")

    def _check_augmentation(self) -> None:
        """The augmentation ranges; ``brightness_range`` parsed."""
        low, high = _parse_floats(self.brightness, "--brightness", 2)
        if not 0 < low <= high:
            raise ValueError(f"--brightness must be 'low,high' with 0 < low <= high; got {self.brightness!r}")
        self.brightness_range = (low, high)
        if not 0 <= self.rotation <= 180:
            raise ValueError(f"--rotation must be in [0, 180] degrees; got {self.rotation}")
        if not 0 <= self.zoom < 1:
            raise ValueError(f"--zoom must be in [0, 1); got {self.zoom}")
        if not 0 <= self.shift < 1:
            raise ValueError(f"--shift must be in [0, 1); got {self.shift}")
        if not 0 <= self.window_jitter < 1:
            raise ValueError(f"--window_jitter must be in [0, 1); got {self.window_jitter}")

    def _check_mask_guidance(self) -> None:
        if self.mask_loss_weight < 0 or self.mask_negative_weight < 0:
            raise ValueError("--mask_loss_weight and --mask_negative_weight must be >= 0")
        if self.mask_loss_type not in MASK_LOSS_TYPES:
            raise ValueError(
                f"--mask_loss_type must be one of {', '.join(MASK_LOSS_TYPES)}; got {self.mask_loss_type!r}"
            )
        if self.mask_pos_weight <= 0:
            raise ValueError(f"--mask_pos_weight must be > 0; got {self.mask_pos_weight}")
        if self.mask_dir is not None and self.mask_loss_weight == 0:
            raise ValueError("--mask_dir is only used with --mask_loss_weight > 0 (mask guidance is off)")

    def _check_folds(self) -> None:
        if self.folds < 0 or self.folds == 1:
            raise ValueError(
                f"--folds must be 2 or more (K fold models and their ensemble), or 0 for one model; got {self.folds}"
            )
        if self.folds and self.dataset_name is not None:
            raise ValueError(
                "--folds splits training records (--train_dir, --dicom_dir, --nifti_dir, --synthetic_train, "
                "--real_anatomy_dir), not a Hub dataset (--dataset_name)"
            )


@dataclass
class BrainCTTrainingArguments(TrainingArguments, FixedThresholdArguments, TemperatureScalingArguments):
    """:class:`transformers.TrainingArguments` with this project's defaults and a few additions, and the
    threshold rule and temperature scaling every command that chooses a threshold takes
    (:mod:`train.shared_args`).

    ``num_train_epochs`` is derived: ``stage1_epochs + stage2_epochs``.
    """

    output_dir: str | None = field(
        default="outputs/brain-ct-model",
        metadata={"help": "Where the final model is saved (checkpoints go to checkpoint-* subfolders)."},
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(
        default=64, metadata={"help": "Evaluation batch size per device."}
    )
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: no, steps or epoch."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint: no, steps or epoch."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Reload the checkpoint with the best validation metric at the end."}
    )
    metric_for_best_model: str | None = field(
        default="auc", metadata={"help": "Validation metric choosing the best checkpoint (default ROC AUC)."}
    )
    greater_is_better: bool | None = field(
        default=True, metadata={"help": "Whether larger metric is better."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False: the transform builds the model inputs."}
    )
    logging_steps: float = field(default=10, metadata={"help": "Log the training loss every N steps."})
    stage1_epochs: float | None = field(
        default=None,
        metadata={
            "help": "Stage 1: epochs training only the classification head with the backbone frozen "
            "(default 5 for a pretrained model, 0 for one built from scratch)."
        },
    )
    stage2_epochs: float = field(
        default=25, metadata={"help": "Stage 2: epochs fine-tuning the whole network."}
    )
    class_weights: str | None = field(
        default=None,
        metadata={
            "help": "Cross-entropy weights 'normal,hemorrhage', e.g. '1.0,1.3' (the seed's); for a subtype "
            "model six BCE positive weights in RSNA's order 'any,epidural,intraparenchymal,"
            "intraventricular,subarachnoid,subdural'. Default: computed from the training counts "
            "(n / (2 n_class); subtypes: n_negative / n_positive per label, clipped to [0.05, 20])."
        },
    )
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})
    trained_on: str | None = field(
        default=None,
        metadata={
            "help": "Description of the training data for the config and model card (default: "
            "derived from the data arguments)."
        },
    )

    def __post_init__(self) -> None:
        if self.stage1_epochs is not None and self.stage1_epochs < 0:
            raise ValueError(f"--stage1_epochs must be >= 0; got {self.stage1_epochs}")
        if self.stage2_epochs < 0:
            raise ValueError(f"--stage2_epochs must be >= 0; got {self.stage2_epochs}")
        if self.class_weights is not None:
            weights = _parse_floats(self.class_weights, "--class_weights")
            if len(weights) not in (2, 6):
                raise ValueError(
                    f"--class_weights expects 2 numbers (binary) or 6 (subtypes); got {self.class_weights!r}"
                )
            if min(weights) <= 0:
                raise ValueError(f"--class_weights must be > 0; got {self.class_weights!r}")
        self.check_threshold_rule()
        if self.hub_private:
            self.hub_private_repo = True
        # The Trainer must not push on its own: the pushed folder needs the threshold and model card
        # written after training, so train.hub pushes it at the very end.
        self.push_to_hub_requested = bool(self.push_to_hub)
        self.push_to_hub = False
        self.num_train_epochs = float((self.stage1_epochs or 0) + self.stage2_epochs)
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            raise ValueError(
                "nothing to train: --stage1_epochs + --stage2_epochs is 0 and --max_steps is not set"
            )
        if self.dataloader_pin_memory and not _has_accelerator():
            self.dataloader_pin_memory = False  # pinning needs a GPU; on CPU it only warns
        super().__post_init__()
        if self.push_to_hub_requested and self.hub_model_id is None:
            self.hub_model_id = Path(self.output_dir).name

    @property
    def class_weight_list(self) -> list[float] | None:
        """``--class_weights`` as [normal, hemorrhage] (or six subtype positive weights), or None to compute
        them from the counts."""
        return None if self.class_weights is None else _parse_floats(self.class_weights, "--class_weights")

    def resolve_stages(self, from_scratch: bool) -> None:
        """Fill the default stage-1 length: 5 epochs for a pretrained backbone, 0 when built from scratch
        (freezing a random backbone would only waste the epochs)."""
        if self.stage1_epochs is None:
            self.stage1_epochs = 0.0 if from_scratch else 5.0
        self.num_train_epochs = float(self.stage1_epochs + self.stage2_epochs)
