"""Predictor: a head-CT slice in, a :class:`Prediction` (label, probability, Grad-CAM, regions, text) out.

>>> from brain_ct import Predictor
>>> predictor = Predictor.from_pretrained()          # --model / BRAIN_CT_MODEL / bundled demo
>>> p = predictor.predict("slice.dcm")                # a path, bytes, a file object or a CTImage
>>> p.label, round(p.probability, 2), p.regions[:1]
>>> rgb = p.overlay(opacity=0.4)                      # computed only when asked for

One forward pass per batch gives both the probabilities and Grad-CAM (see :mod:`brain_ct.explain`).
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

from brain_ct import explain
from brain_ct.errors import InvalidInputError
from brain_ct.jsonable import json_safe
from brain_ct.model import ModelSettings, load_model
from brain_ct.preprocess import model_input

if TYPE_CHECKING:
    import torch

    from brain_ct.image import CTImage

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
        probability: P(hemorrhage) in [0, 1] (averaged over flips with test-time augmentation).
        threshold: the model's decision threshold (``brain_ct_threshold``).
        heatmap: float32 [H, W] in [0, 1], Grad-CAM on the input image's own pixel grid.
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
        head_check.

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
        }


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
    """

    def __init__(
        self,
        model: torch.nn.Module,
        settings: ModelSettings,
        device: str | torch.device = "cpu",
        *,
        channels_last: bool | None = None,
    ):
        import torch

        configure_threads()
        self.device = torch.device(device)
        self.channels_last = self.device.type == "cpu" if channels_last is None else bool(channels_last)
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
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
        """Load a model (Hub id or folder; None → env ``BRAIN_CT_MODEL``, then the bundled demo).

        ``channels_last``: see :class:`Predictor`.

        Raises:
            ModelLoadError: see :func:`brain_ct.model.load_model`.
        """
        model, settings = load_model(model_id_or_dir, revision=revision, device=device)
        return cls(model, settings, device=device, channels_last=channels_last)

    @property
    def model_id(self) -> str:
        """The id or folder the model was loaded from."""
        return self.settings.model_id

    @property
    def threshold(self) -> float:
        """The model's decision threshold on P(hemorrhage)."""
        return self.settings.threshold

    # ----------------------------------------------------------------------------------------
    def load(self, source: Any, *, allow_unverified: bool = False) -> CTImage:
        """A :class:`~brain_ct.image.CTImage` from a path, bytes, a binary file object, or as given."""
        from brain_ct.image import CTImage
        from brain_ct.io import load_image

        if isinstance(source, CTImage):
            return source
        if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(source, "read"):
            return load_image(source, allow_unverified=allow_unverified)
        raise InvalidInputError(
            f"cannot read a {type(source).__name__} as an image; give a file path, the file's bytes, "
            "a binary file object or a brain_ct.CTImage"
        )

    def predict(self, image: Any, *, allow_unverified: bool = False, tta: bool = False) -> Prediction:
        """Predict one slice.

        Args:
            image: a path, bytes, binary file object or :class:`~brain_ct.image.CTImage`.
            allow_unverified: skip the "looks like an axial head CT" check when loading.
            tta: test-time augmentation — average with the horizontally flipped slice (both go
                through one batched forward pass; the flipped heatmap is flipped back).

        Raises:
            InvalidInputError: the input cannot be read as a head-CT slice.
        """
        return self.predict_batch([image], allow_unverified=allow_unverified, tta=tta)[0]

    def predict_batch(
        self,
        images: Iterable[Any],
        batch_size: int = 16,
        *,
        allow_unverified: bool = False,
        tta: bool = False,
        neighbors: Sequence[Sequence[CTImage | None] | None] | None = None,
    ) -> list[Prediction]:
        """Predict many slices, ``batch_size`` per forward pass.

        Args:
            images: paths, bytes, file objects or CTImages.
            batch_size: slices per forward pass (with ``tta`` twice as many go through the model).
            allow_unverified: see :meth:`predict`.
            tta: see :meth:`predict`.
            neighbors: for slice-context models (``settings.context_slices`` = k > 0), one entry per
                image: its 2k neighbouring slices ``[s−k, …, s−1, s+1, …, s+k]`` (None entries or a
                None entry repeat the slice itself). Ignored by single-slice models.

        Returns:
            One :class:`Prediction` per image, in order.

        Raises:
            InvalidInputError: an input cannot be read (nothing is returned then; load inputs one by
                one with :meth:`load` to handle failures separately, as the CLI does).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer; got {batch_size!r}")
        items = list(images)
        if neighbors is not None and len(neighbors) != len(items):
            raise InvalidInputError(
                f"neighbors needs one entry per image: {len(items)} images, {len(neighbors)} entries"
            )
        out: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            cts = [self.load(s, allow_unverified=allow_unverified) for s in items[start : start + batch_size]]
            nbs = None if neighbors is None else list(neighbors[start : start + batch_size])
            out.extend(self._predict_loaded(cts, tta=tta, neighbors=nbs))
        return out

    # ----------------------------------------------------------------------------------------
    def _predict_loaded(
        self,
        cts: list[CTImage],
        *,
        tta: bool,
        neighbors: list[Sequence[CTImage | None] | None] | None,
    ) -> list[Prediction]:
        import torch

        s = self.settings
        if not cts:
            return []
        x = torch.from_numpy(
            np.stack(
                [model_input(ct, s, None if neighbors is None else neighbors[i]) for i, ct in enumerate(cts)]
            )
        )
        n = x.shape[0]
        if tta:
            x = torch.cat([x, x.flip(-1)])
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._lock:
            logits, cams = explain.gradcam(self.model, x, s.hemorrhage_index)
        probs = torch.softmax(logits.float(), dim=1)[:, s.hemorrhage_index]
        if tta:
            probs = (probs[:n] + probs[n:]) / 2.0
            cams = (cams[:n] + cams[n:].flip(-1)) / 2.0
        probs_np = probs.cpu().numpy()
        cams_np = cams.float().cpu().numpy()
        return [self._finish(ct, float(p), cam) for ct, p, cam in zip(cts, probs_np, cams_np, strict=True)]

    def _finish(self, ct: CTImage, probability: float, cam: np.ndarray) -> Prediction:
        threshold = self.settings.threshold
        heat = explain.heatmap_for_image(explain.normalize_heatmap(cam), ct)
        found = explain.regions(heat, ct)
        return Prediction(
            label="hemorrhage" if probability >= threshold else "normal",
            probability=probability,
            threshold=threshold,
            heatmap=heat,
            regions=found,
            explanation=explain.explanation(probability, threshold, found),
            meta=dict(ct.meta),
            name=ct.name,
            source=ct.source,
            model_id=self.settings.model_id,
            display=ct.display,
            head_check=ct.head_check,
        )
