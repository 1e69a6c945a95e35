"""The model families brain_ct trains, loads and explains: the ONE module that knows a model's layout.

Everything else asks it, never the model's attributes:

* :func:`family_of` — the :class:`Family` of a model or config (``config.model_type``), or a clear refusal;
* :meth:`Family.gradcam_layer` — the module whose output Grad-CAM explains (its output must be a fresh tensor,
  not an in-place residual add, for Captum's hooks);
* :meth:`Family.head` / :attr:`Family.head_prefix` — the linear classification head (temperature folding,
  the closed-form class activation map of mask guidance, the frozen-backbone stage);
* :meth:`Family.last_features` — the features the head pools, ``[B, K, h, w]``, from an output with
  ``output_hidden_states``: with :meth:`Family.head` they give the CAM ``Σ_k W[c, k] F_k`` in closed form;
* :meth:`Family.from_pretrained` — a pretrained checkpoint with a new head for the run's labels;
* :meth:`Family.adapt_input_channels` — the first convolution made to take another number of channels;
* :func:`positive_output`, :func:`hemorrhage_index`, :func:`to_probabilities` — which output is P(hemorrhage)
  and how logits become probabilities (label-set rules, the same for every family: softmax over
  ``{normal, hemorrhage}``, or one sigmoid per label with ``any`` as P(hemorrhage)).

Adding a family is one :class:`Family` subclass registered in :data:`FAMILIES`, plus its tests.

``torch`` and ``transformers`` are imported inside the functions that need them: importing ``brain_ct``
(the CLI's ``--help``, the app's start) must not pay their import time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from brain_ct.errors import ModelLoadError
from brain_ct.labels import ANY, MULTI_LABEL

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

__all__ = [
    "FAMILIES",
    "Family",
    "ResNetFamily",
    "family_of",
    "hemorrhage_index",
    "positive_output",
    "to_probabilities",
]


class Family(ABC):
    """One model family: how brain_ct finds its parts. A subclass names its transformers classes and
    implements the abstract methods."""

    #: ``config.model_type`` of the family.
    model_type: ClassVar[str] = ""
    #: The transformers classes brain_ct uses: an image classifier with a linear head, and its config.
    model_class: ClassVar[str] = ""
    config_class_name: ClassVar[str] = ""
    #: Parameter-name prefix of the classification head (everything else is the backbone).
    head_prefix: ClassVar[str] = ""

    def config_class(self) -> type[PretrainedConfig]:
        import transformers

        return getattr(transformers, self.config_class_name)

    def build(self, config: PretrainedConfig) -> torch.nn.Module:
        """A randomly initialised model of this family from ``config``."""
        import transformers

        return getattr(transformers, self.model_class)(config)

    @abstractmethod
    def gradcam_layer(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module whose output Grad-CAM weighs (a fresh tensor, not an in-place add)."""

    @abstractmethod
    def head(self, model: torch.nn.Module) -> torch.nn.Linear:
        """The linear classification layer (weight ``[num_labels, K]``)."""

    @abstractmethod
    def last_features(self, outputs: Any) -> torch.Tensor:
        """``[B, K, h, w]`` features the head pools, from an output with ``output_hidden_states``."""

    @abstractmethod
    def first_conv(self, model: torch.nn.Module) -> torch.nn.Conv2d:
        """The convolution that reads the input channels."""

    @abstractmethod
    def describe(self, model: torch.nn.Module) -> str:
        """One line for the model card: layout, input channels, parameters, output stride."""

    @abstractmethod
    def output_stride(self, config: PretrainedConfig) -> int:
        """Input pixels per cell of the Grad-CAM layer's grid."""

    def is_head_parameter(self, name: str) -> bool:
        """True for a parameter (or module) name of the classification head."""
        return name == self.head_prefix or name.startswith(self.head_prefix + ".")

    def from_pretrained(self, name_or_path: str, labels: dict[str, Any], **kwargs: Any) -> torch.nn.Module:
        """Load ``name_or_path`` with a head for ``labels`` (``num_labels``, ``id2label``, ``label2id``,
        optionally ``problem_type``): a pretrained head of another size (ImageNet's 1000 classes, a binary
        model's 2 when training subtypes) is made anew, the backbone kept. ``kwargs`` go to
        ``from_pretrained`` (``revision``, ``cache_dir``)."""
        import torch
        import transformers

        cls = getattr(transformers, self.model_class)
        # Training runs in fp32 even from an fp16 file (the bundled ResNet-50): transformers' default
        # "auto" dtype would keep the file's half precision.
        kwargs.setdefault("dtype", torch.float32)
        return cls.from_pretrained(name_or_path, ignore_mismatched_sizes=True, **labels, **kwargs)

    def adapt_input_channels(self, model: torch.nn.Module, num_channels: int) -> None:
        """Make the first convolution take ``num_channels`` inputs, in place (``config.num_channels`` too).

        Input channel ``j`` gets the pretrained weights of channel ``j mod C`` scaled by ``C / num_channels``:
        an input that repeats the ``C`` pretrained channels (e.g. the same three windows of a slice and its
        neighbours, when they agree) gives exactly the pretrained first-layer response, so fine-tuning starts
        from working features. Fewer channels than ``C``: channel ``j`` gets the sum of the pretrained channels
        ``k ≡ j (mod num_channels)``, so one grey channel reads as the grey repeated in all ``C``.
        """
        import torch

        if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"num_channels must be a positive integer; got {num_channels!r}")
        conv = self.first_conv(model)
        old = conv.weight.shape[1]
        if old == num_channels:
            return
        with torch.no_grad():
            if num_channels >= old:
                weight = conv.weight[:, torch.arange(num_channels) % old] * (old / num_channels)
            else:
                groups = torch.arange(old) % num_channels
                weight = torch.stack([conv.weight[:, groups == j].sum(1) for j in range(num_channels)], 1)
        conv.in_channels = num_channels
        conv.weight = torch.nn.Parameter(weight.contiguous())
        self._set_num_channels(model, num_channels)

    def _set_num_channels(self, model: torch.nn.Module, num_channels: int) -> None:
        model.config.num_channels = num_channels


class ResNetFamily(Family):
    """transformers' ResNet (``ResNetForImageClassification``): ``microsoft/resnet-50`` (v1.5), the
    ImageNet ResNet-50 v1 of :mod:`train.import_resnet50` (``downsample_in_bottleneck``), the small demos.

    Layout: ``resnet.embedder.embedder.convolution`` (the stem's convolution) → ``resnet.encoder.stages``
    → global average pool → ``classifier`` = ``Sequential(Flatten, Linear)``.
    """

    model_type: ClassVar[str] = "resnet"
    model_class: ClassVar[str] = "ResNetForImageClassification"
    config_class_name: ClassVar[str] = "ResNetConfig"
    head_prefix: ClassVar[str] = "classifier"

    def gradcam_layer(self, model: torch.nn.Module) -> torch.nn.Module:
        """The last stage: its output is the last block's fresh tensor (Captum hooks need no in-place add)."""
        return model.resnet.encoder.stages[-1]

    def head(self, model: torch.nn.Module) -> torch.nn.Linear:
        import torch

        head = model.classifier[-1] if isinstance(model.classifier, torch.nn.Sequential) else model.classifier
        if not isinstance(head, torch.nn.Linear):
            raise ModelLoadError(
                f"the classifier head is a {type(head).__name__}; a Linear layer is required"
            )
        return head

    def last_features(self, outputs: Any) -> torch.Tensor:
        """The last stage's output ``[B, K, h, w]`` (``hidden_states[-1]``), the tensor the head pools."""
        return outputs.hidden_states[-1]

    def first_conv(self, model: torch.nn.Module) -> torch.nn.Conv2d:
        return model.resnet.embedder.embedder.convolution

    def _set_num_channels(self, model: torch.nn.Module, num_channels: int) -> None:
        # ResNetEmbeddings.forward refuses inputs whose channel count differs from its own record.
        model.resnet.embedder.num_channels = num_channels
        model.config.num_channels = num_channels

    def output_stride(self, config: PretrainedConfig) -> int:
        """Input pixels per cell of the last stage: 4 (stem) × 2 per later stage (× 2 if the first strides)."""
        return 4 * 2 ** (len(config.depths) - 1) * (2 if config.downsample_in_first_stage else 1)

    def describe(self, model: torch.nn.Module) -> str:
        """e.g. ``ResNet (basic blocks), 3 input channels, stages [32, 64, 128] × depths [2, 2, 2], 0.70 M
        parameters, output stride 16``."""
        c = model.config
        n = sum(p.numel() for p in model.parameters())
        return (
            f"ResNet ({c.layer_type} blocks), {c.num_channels} input channels, stages {list(c.hidden_sizes)} × "
            f"depths {list(c.depths)}, {n / 1e6:.2f} M parameters, output stride {self.output_stride(c)}"
        )


#: The supported families by ``config.model_type``.
FAMILIES: dict[str, Family] = {f.model_type: f for f in (ResNetFamily(),)}


def _supported() -> str:
    return ", ".join(f"{f.model_class} (model_type {t!r})" for t, f in FAMILIES.items())


def family_of(model_or_config: Any, name: str = "") -> Family:
    """The :class:`Family` of a model or its config.

    Args:
        model_or_config: a transformers model or ``PretrainedConfig``.
        name: the model id or folder, for the message.

    Raises:
        ModelLoadError: ``model_type`` is not a supported family, or ``architectures`` names another class
            than the family's classifier (e.g. a ``ResNetBackbone``).
    """
    config = getattr(model_or_config, "config", model_or_config)
    label = name or "<config>"
    model_type = getattr(config, "model_type", None)
    family = FAMILIES.get(str(model_type))
    if family is None:
        raise ModelLoadError(
            f"model {label!r} is a {model_type!r} model; brain_ct loads {_supported()} models only, "
            "as written by python -m train"
        )
    archs = getattr(config, "architectures", None) or []
    if archs and family.model_class not in archs:
        raise ModelLoadError(f"model {label!r} has architectures {archs}; a {family.model_class} is required")
    return family


def hemorrhage_index(labels: Sequence[str], multi_label: bool) -> int:
    """Index of the output that is P(hemorrhage): ``any`` of a subtype model, ``hemorrhage`` of a binary one.

    Raises:
        ValueError: that label is not among ``labels``.
    """
    names = [str(n).lower() for n in labels]
    return names.index(ANY if multi_label else "hemorrhage")


def positive_output(config: Any) -> tuple[bool, int]:
    """``(multi_label, index)`` of a model config: whether it has one sigmoid per label (``problem_type``
    multi-label, a subtype model), and the output of P(hemorrhage) (:func:`hemorrhage_index` of its
    ``id2label``; 1 for a two-class head without label names).

    Raises:
        ValueError: named labels without ``hemorrhage`` (binary) or ``any`` (multi-label).
    """
    multi_label = getattr(config, "problem_type", None) == MULTI_LABEL
    id2label = config.id2label
    labels = [str(id2label[i]).lower() for i in range(len(id2label))]
    if not multi_label and len(labels) == 2 and "hemorrhage" not in labels:
        # An unnamed two-class head (transformers' LABEL_0 / LABEL_1) is trained on train's 0/1 targets, so
        # output 1 is hemorrhage: the position the model folder contract gives it.
        return False, 1
    return multi_label, hemorrhage_index(labels, multi_label)


def to_probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Logits ``[N, num_labels]`` → probabilities ``[N, num_labels]`` (float32): one sigmoid per label for a
    subtype model, a softmax over the labels otherwise."""
    import torch

    logits = logits.float()
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)
