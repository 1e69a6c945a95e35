"""Predictor: a head-CT slice in, a :class:`Prediction` (label, probability, Grad-CAM, regions, text) out.

>>> from brain_ct import Predictor
>>> predictor = Predictor.from_pretrained()          # --model / BRAIN_CT_MODEL / bundled ResNet-50
>>> p = predictor.predict("slice.dcm")                # a path, bytes, a file object or a CTImage
>>> p.label, round(p.probability, 2), p.regions[:1]
>>> rgb = p.overlay(opacity=0.4)                      # computed only when asked for

One forward pass per batch gives both the probabilities and Grad-CAM (see :mod:`brain_ct.explain`).
Subtype models (RSNA's six sigmoid outputs, :mod:`brain_ct.labels`) add the five subtype probabilities
and can explain a chosen subtype (``heatmap_target="subdural"``) instead of "any". An ensemble
(:mod:`brain_ct.ensemble`) loads like a model; a single model is an ensemble of one internally, so
both take the same path: each member preprocesses the slice with its own settings and runs its own
forward pass, and probabilities and input-grid heatmaps are the members' means.
A :class:`Predictor` may be shared between threads (the app serves several users with one model):
only the model call is serialised by a lock, because Captum's hooks live on the shared model;
loading, preprocessing and region analysis run in parallel.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

import brain_ct.ensemble as ensemble
import brain_ct.explain as explain
from brain_ct.architectures import to_probabilities
from brain_ct.ensemble import Member
from brain_ct.errors import InvalidInputError
from brain_ct.image import CTImage
from brain_ct.io import load_image
from brain_ct.jsonable import json_safe
from brain_ct.labels import ANY, SUBTYPES
from brain_ct.model import ModelSettings
from brain_ct.preprocess import model_input

if TYPE_CHECKING:
    import torch


_threads_configured = False
_threads_lock = threading.Lock()


def configure_threads() -> int:
    """Size torch's intra-op thread pool to the CPUs this process may use, once per process.

    ``torch`` counts physical cores by default, which under-uses containers and Spaces whose
    vCPUs are hyper-threads. An explicit ``OMP_NUM_THREADS`` wins.

    Returns:
        The number of threads torch uses.
    """
    global _threads_configured
    import torch

    with _threads_lock:
        if not _threads_configured:
            if not os.environ.get("OMP_NUM_THREADS"):
                try:
                    n = len(os.sched_getaffinity(0))
                except AttributeError:  # not on Linux
                    n = os.cpu_count() or 1
                torch.set_num_threads(max(1, n))
            _threads_configured = True
    return torch.get_num_threads()


@dataclass
class Prediction:
    """The model's reading of one slice.

    Attributes:
        label: ``"hemorrhage"`` exactly when ``probability >= threshold``, else ``"normal"``.
        probability: P(hemorrhage) in [0, 1] (averaged over flips with test-time augmentation): the
            softmax of "hemorrhage" (binary models) or the sigmoid of "any" (subtype models); an
            ensemble's is its members' mean.
        threshold: the model's decision threshold for this slice's input kind
            (:meth:`~brain_ct.model.ModelSettings.threshold_for`: ``brain_ct_input_thresholds`` or
            ``brain_ct_threshold``; an ensemble's own).
        heatmap: float32 [H, W] in [0, 1], Grad-CAM on the input image's own pixel grid (an ensemble's:
            the mean of its members' normalised heatmaps).
        regions: :class:`~brain_ct.explain.Region` s, the hot regions of the heatmap inside the
            head, strongest first (see :func:`brain_ct.explain.regions`; ``side`` is the PATIENT's
            side).
        explanation: short plain-language text, ending with the disclaimer.
        meta: allow-listed, non-identifying metadata of the input (from ``CTImage.meta``).
        name: display name of the input (its file name, never a DICOM tag value).
        source: ``"dicom"`` or ``"image"``.
        model_id: the model that made the prediction.
        head_check: the input's :attr:`~brain_ct.image.CTImage.head_check`: ``"passed"``, or
            ``"skipped"`` when the "looks like an axial head CT" check was skipped
            (``allow_unverified``); then every view of the reading must say so.
        subtypes: a subtype model's five subtype probabilities ``{name: p}`` in
            :data:`~brain_ct.labels.SUBTYPES` order; None for binary models.
        heatmap_target: the label the heatmap explains: ``"hemorrhage"`` (binary models), ``"any"``
            (subtype models' default) or a subtype name.
        members: ensembles only, one ``{"model", "probability", "threshold"}`` per member (its id as
            written in ``ensemble.json``, its P(hemorrhage), its own threshold for this input kind); None for
            a single model.
    """

    label: str
    probability: float
    threshold: float
    heatmap: np.ndarray = field(repr=False)
    regions: list[explain.Region]
    explanation: str
    meta: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    source: str = ""
    model_id: str = ""
    display: np.ndarray | None = field(default=None, repr=False)
    head_check: str = "passed"
    subtypes: dict[str, float] | None = None
    heatmap_target: str = "hemorrhage"
    members: tuple[dict[str, Any], ...] | None = None

    def overlay(self, opacity: float = 0.4, display: np.ndarray | None = None) -> np.ndarray:
        """The heatmap over the image, computed on demand (the CLI and JSON never need it).

        Args:
            opacity: colour weight at full heat, in [0, 1].
            display: uint8 [H, W] rendering to draw on (e.g. another CT window); default: the
                input's own display image.

        Returns:
            uint8 [H, W, 3] RGB.
        """
        base = self.display if display is None else display
        if base is None:
            raise InvalidInputError("this prediction has no image to draw the overlay on; pass display=")
        return explain.overlay(base, self.heatmap, opacity)

    @property
    def unverified(self) -> bool:
        """True when the head-CT check was skipped for this input (see :attr:`head_check`)."""
        return self.head_check != "passed"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary: label, probability, threshold, regions, explanation, meta, name, model,
        head_check, subtypes (null for binary models), heatmap_target, members (null for single models).

        Arrays (heatmap, image) are left out; save the heatmap separately if needed.
        """
        return {
            "name": self.name,
            "label": self.label,
            "probability": float(self.probability),
            "threshold": float(self.threshold),
            "regions": [r.to_dict() for r in self.regions],
            "explanation": self.explanation,
            "source": self.source,
            "meta": json_safe(self.meta),
            "model": self.model_id,
            "head_check": self.head_check,
            "subtypes": json_safe(self.subtypes),
            "heatmap_target": self.heatmap_target,
            "members": None if self.members is None else json_safe(list(self.members)),
        }


def _split_outputs(probs: np.ndarray, settings: ModelSettings) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities ``[N, num_labels]`` → (P(hemorrhage) ``[N]``, subtype probabilities ``[N, 5]`` in
    :data:`~brain_ct.labels.SUBTYPES` order, or None for a binary model)."""
    subtypes = probs[:, [settings.labels.index(n) for n in SUBTYPES]] if settings.is_multi_label else None
    return probs[:, settings.hemorrhage_index], subtypes


class Predictor:
    """Hemorrhage prediction with Grad-CAM for head-CT slices; safe to share between threads.

    Args:
        model: a ``ResNetForImageClassification`` in eval mode (from :func:`brain_ct.model.load_model`).
        settings: its :class:`~brain_ct.model.ModelSettings`.
        device: torch device the model is on.
        channels_last: run the convolutions in the channels-last (NHWC) memory format; the model's
            weights are converted in place. Default: on for CPU, where oneDNN's NHWC kernels measured
            ~1.45× faster for the forward pass with Grad-CAM (``benchmarks/NOTES.md``). Results agree
            with the default layout to float rounding.

    An ensemble is built with :meth:`from_members` (or loaded with :meth:`from_pretrained`);
    :attr:`members` holds the models either way (one for a single model).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        settings: ModelSettings,
        device: str | torch.device = "cpu",
        *,
        channels_last: bool | None = None,
    ):
        self._setup([Member(model, settings)], settings, device, channels_last)

    @classmethod
    def from_members(
        cls,
        members: Sequence[Member],
        settings: ModelSettings,
        device: str | torch.device = "cpu",
        *,
        channels_last: bool | None = None,
    ) -> Predictor:
        """A predictor over several models (an ensemble; see :func:`brain_ct.ensemble.load`).

        Args:
            members: the members, all with the same label set.
            settings: the ensemble-level settings (threshold, labels, model_id, member_ids, and
                ``context_slices`` = the largest member's).
            device, channels_last: see :class:`Predictor`.
        """
        self = cls.__new__(cls)
        self._setup(list(members), settings, device, channels_last)
        return self

    def _setup(
        self,
        members: list[Member],
        settings: ModelSettings,
        device: str | torch.device,
        channels_last: bool | None,
    ) -> None:
        import torch

        if not members:
            raise InvalidInputError("a Predictor needs at least one model")
        configure_threads()
        self.device = torch.device(device)
        self.channels_last = self.device.type == "cpu" if channels_last is None else bool(channels_last)
        if self.channels_last:
            members = [Member(m.model.to(memory_format=torch.channels_last), m.settings) for m in members]
        self.members = tuple(members)
        self.settings = settings
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_dir: str | os.PathLike[str] | None = None,
        revision: str | None = None,
        device: str | torch.device = "cpu",
        *,
        channels_last: bool | None = None,
    ) -> Predictor:
        """Load a model or an ensemble (Hub id or folder; None → env ``BRAIN_CT_MODEL``, then the bundled default).

        ``channels_last``: see :class:`Predictor`.

        Raises:
            ModelLoadError: see :func:`brain_ct.ensemble.load`.
        """
        members, settings = ensemble.load(model_id_or_dir, revision=revision, device=device)
        return cls.from_members(members, settings, device=device, channels_last=channels_last)

    @property
    def model(self) -> torch.nn.Module:
        """The model of a single-model predictor (an ensemble's first member; see :attr:`members`)."""
        return self.members[0].model

    @property
    def model_id(self) -> str:
        """The id or folder the model was loaded from."""
        return self.settings.model_id

    @property
    def threshold(self) -> float:
        """The model's decision threshold on P(hemorrhage) (``brain_ct_threshold``; a slice of an input kind
        with its own threshold is decided by ``settings.threshold_for(kind)``, see :class:`Prediction`)."""
        return self.settings.threshold

    # ----------------------------------------------------------------------------------------
    def load(self, source: Any, *, allow_unverified: bool = False) -> CTImage:
        """A :class:`~brain_ct.image.CTImage` from a path, bytes, a binary file object, or as given."""
        if isinstance(source, CTImage):
            return source
        if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(source, "read"):
            return load_image(source, allow_unverified=allow_unverified)
        raise InvalidInputError(
            f"cannot read a {type(source).__name__} as an image; give a file path, the file's bytes, "
            "a binary file object or a brain_ct.CTImage"
        )

    def predict(
        self,
        image: Any,
        *,
        allow_unverified: bool = False,
        tta: bool = False,
        heatmap_target: str | None = None,
    ) -> Prediction:
        """Predict one slice.

        Args:
            image: a path, bytes, binary file object or :class:`~brain_ct.image.CTImage`.
            allow_unverified: skip the "looks like an axial head CT" check when loading.
            tta: test-time augmentation — average with the horizontally flipped slice (both go
                through one batched forward pass; the flipped heatmap is flipped back).
            heatmap_target: the label the Grad-CAM explains: None or ``"any"`` (P(hemorrhage), the
                default), or for a subtype model one of :data:`~brain_ct.labels.SUBTYPES`. It changes
                the heatmap and regions only, never the probabilities or the label.

        Raises:
            InvalidInputError: the input cannot be read as a head-CT slice, or ``heatmap_target`` is
                not one of this model's labels.
        """
        return self.predict_batch(
            [image], allow_unverified=allow_unverified, tta=tta, heatmap_target=heatmap_target
        )[0]

    def predict_batch(
        self,
        images: Iterable[Any],
        batch_size: int = 16,
        *,
        allow_unverified: bool = False,
        tta: bool = False,
        neighbors: Sequence[Sequence[CTImage | None] | None] | None = None,
        heatmap_target: str | None = None,
    ) -> list[Prediction]:
        """Predict many slices, ``batch_size`` per forward pass (of each member, for an ensemble).

        Args:
            images: paths, bytes, file objects or CTImages.
            batch_size: slices per forward pass (with ``tta`` twice as many go through the model).
            allow_unverified: see :meth:`predict`.
            tta: see :meth:`predict`.
            neighbors: for slice-context models (``settings.context_slices`` = k > 0), one entry per
                image: its 2k neighbouring slices ``[s−k, …, s−1, s+1, …, s+k]`` (None entries or a
                None entry repeat the slice itself). Ignored by single-slice models. An ensemble member
                with fewer context slices gets the nearest ones of these.
            heatmap_target: see :meth:`predict`.

        Returns:
            One :class:`Prediction` per image, in order.

        Raises:
            InvalidInputError: an input cannot be read (nothing is returned then; load inputs one by
                one with :meth:`load` to handle failures separately, as the CLI does), or a bad
                ``heatmap_target``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer; got {batch_size!r}")
        target = self.heatmap_target(heatmap_target)
        items = list(images)
        if neighbors is not None and len(neighbors) != len(items):
            raise InvalidInputError(
                f"neighbors needs one entry per image: {len(items)} images, {len(neighbors)} entries"
            )
        out: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            cts = [self.load(s, allow_unverified=allow_unverified) for s in items[start : start + batch_size]]
            nbs = None if neighbors is None else list(neighbors[start : start + batch_size])
            out.extend(self._predict_loaded(cts, tta=tta, neighbors=nbs, target=target))
        return out

    def heatmap_target(self, requested: str | None = None) -> str:
        """The label name a requested heatmap target resolves to (what :attr:`Prediction.heatmap_target` shows).

        None, ``"any"`` and ``"hemorrhage"`` mean P(hemorrhage): ``"hemorrhage"`` for binary models,
        ``"any"`` for subtype models; a subtype model also accepts each of its subtypes.

        Raises:
            InvalidInputError: any other name, or a subtype asked of a binary model.
        """
        s = self.settings
        default = ANY if s.is_multi_label else "hemorrhage"
        name = "" if requested is None else str(requested).strip().lower()
        if name in ("", ANY, "hemorrhage"):
            return default
        if name in s.subtypes:
            return name
        if s.is_multi_label:
            allowed = f"one of {', '.join((ANY, *s.subtypes))}"
        else:
            allowed = (
                f"'{ANY}' only: {s.model_id or 'this model'} is a binary model with one output, P(hemorrhage); "
                f"subtype heatmaps ({', '.join(SUBTYPES)}) need a subtype model"
            )
        raise InvalidInputError(f"unknown heatmap target {requested!r}; choose {allowed}")

    # ----------------------------------------------------------------------------------------
    def _predict_loaded(
        self,
        cts: list[CTImage],
        *,
        tta: bool,
        neighbors: list[Sequence[CTImage | None] | None] | None,
        target: str,
    ) -> list[Prediction]:
        if not cts:
            return []
        runs = [self._run_member(m, cts, tta=tta, neighbors=neighbors, target=target) for m in self.members]
        n_members = len(runs)
        probs = np.mean([r[0] for r in runs], axis=0)
        subtypes = None if runs[0][1] is None else np.mean([r[1] for r in runs], axis=0)
        ensemble_of = self.settings.member_ids
        out = []
        for i, ct in enumerate(cts):
            heat = runs[0][2][i]
            if n_members > 1:
                heat = np.mean([r[2][i] for r in runs], axis=0, dtype=np.float32)
            members = None
            if ensemble_of:
                members = tuple(
                    {
                        "model": m.settings.model_id,
                        "probability": float(r[0][i]),
                        "threshold": m.settings.threshold_for(ct.source),
                    }
                    for m, r in zip(self.members, runs, strict=True)
                )
            out.append(
                self._finish(
                    ct,
                    float(probs[i]),
                    heat,
                    subtypes=None
                    if subtypes is None
                    else dict(zip(SUBTYPES, map(float, subtypes[i]), strict=True)),
                    target=target,
                    members=members,
                )
            )
        return out

    def probabilities(
        self, cts: Sequence[CTImage], *, neighbors: Sequence[Sequence[CTImage | None] | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The numbers alone, for scoring data sets: no Grad-CAM, regions or text (one plain forward pass
        of each member, without gradients, on the same inputs :meth:`predict_batch` uses).

        Args:
            cts: loaded slices (:meth:`load`).
            neighbors: as for :meth:`predict_batch`.

        Returns:
            ``(P(hemorrhage) [N], subtype probabilities [N, 5] in SUBTYPES order or None, each member's
            P(hemorrhage) [members, N])``; the first two are the members' means, as in :class:`Prediction`.
        """
        import torch

        if neighbors is not None and len(neighbors) != len(cts):
            raise InvalidInputError(
                f"neighbors needs one entry per image: {len(cts)} images, {len(neighbors)} entries"
            )
        nbs = None if neighbors is None else list(neighbors)
        hemorrhage, subtypes = [], []
        for member in self.members:
            ms = member.settings
            x = self._on_device(self._member_input(member, list(cts), nbs))
            with self._lock, torch.no_grad():
                logits = member.model(pixel_values=x).logits.float()
            hem, sub = _split_outputs(to_probabilities(logits, ms.is_multi_label).cpu().numpy(), ms)
            hemorrhage.append(hem)
            if sub is not None:
                subtypes.append(sub)
        per_member = np.stack(hemorrhage)
        return per_member.mean(axis=0), (np.mean(subtypes, axis=0) if subtypes else None), per_member

    def _member_input(
        self, member: Member, cts: list[CTImage], neighbors: list[Sequence[CTImage | None] | None] | None
    ) -> torch.Tensor:
        """One member's batch (on the CPU): its own preprocessing of each slice and its neighbours."""
        import torch

        ms = member.settings
        widest = self.settings.context_slices
        nbs = neighbors
        if nbs is not None and ms.context_slices < widest:
            # This member needs the k nearest of the ensemble's 2·K neighbours: [s−k … s−1, s+1 … s+k].
            k = ms.context_slices
            nbs = [None if nb is None else [*nb[widest - k : widest], *nb[widest : widest + k]] for nb in nbs]
        return torch.from_numpy(
            np.stack([model_input(ct, ms, None if nbs is None else nbs[i]) for i, ct in enumerate(cts)])
        )

    def _on_device(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _run_member(
        self,
        member: Member,
        cts: list[CTImage],
        *,
        tta: bool,
        neighbors: list[Sequence[CTImage | None] | None] | None,
        target: str,
    ) -> tuple[np.ndarray, np.ndarray | None, list[np.ndarray]]:
        """One member's P(hemorrhage) [N], subtype probabilities [N, 5] (or None) and input-grid heatmaps."""
        import torch

        ms = member.settings
        x = self._member_input(member, cts, neighbors)
        n = x.shape[0]
        if tta:
            x = torch.cat([x, x.flip(-1)])
        x = self._on_device(x)
        with self._lock:
            logits, cams = explain.gradcam(
                member.model, x, ms.labels.index(target), multi_label=ms.is_multi_label
            )
        probs = to_probabilities(logits, ms.is_multi_label)
        if tta:
            probs = (probs[:n] + probs[n:]) / 2.0
            cams = (cams[:n] + cams[n:].flip(-1)) / 2.0
        hemorrhage, subtypes = _split_outputs(probs.cpu().numpy(), ms)
        cams_np = cams.float().cpu().numpy()
        heats = [
            explain.heatmap_for_image(explain.normalize_heatmap(cam), ct)
            for ct, cam in zip(cts, cams_np, strict=True)
        ]
        return hemorrhage, subtypes, heats

    def _finish(
        self,
        ct: CTImage,
        probability: float,
        heat: np.ndarray,
        *,
        subtypes: dict[str, float] | None = None,
        target: str | None = None,
        members: tuple[dict[str, Any], ...] | None = None,
    ) -> Prediction:
        """The prediction of one slice from its P(hemorrhage) and its heatmap on the input grid."""
        threshold = self.settings.threshold_for(ct.source)
        found = explain.regions(heat, ct)
        agreement = (
            None
            if members is None
            else (sum(m["probability"] >= m["threshold"] for m in members), len(members))
        )
        return Prediction(
            label="hemorrhage" if probability >= threshold else "normal",
            probability=probability,
            threshold=threshold,
            heatmap=heat,
            regions=found,
            explanation=explain.explanation(
                probability, threshold, found, subtypes=subtypes, agreement=agreement
            ),
            meta=dict(ct.meta),
            name=ct.name,
            source=ct.source,
            model_id=self.settings.model_id,
            display=ct.display,
            head_check=ct.head_check,
            subtypes=subtypes,
            heatmap_target=target or self.heatmap_target(None),
            members=members,
        )
