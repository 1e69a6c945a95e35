"""Several ordinary images (PNG/JPG) read as separate slices: a verdict each, and a count, no scan.

PNG and JPG files carry no position, spacing or patient: file names give no anatomical order and
nothing says the images come from one scan. So they are never stacked into a series or given a scan
verdict; each image is read on its own, numbered in the order uploaded, and the set is summarised
as a count ("2 of 3 images suspicious").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

from brain_ct.errors import BrainCTError, InvalidInputError
from brain_ct.io import load_image
from brain_ct.predictor import Prediction, Predictor
from brain_ct.sniff import sniff
from brain_ct.wording import plural

#: The ordinary image formats read here (:func:`brain_ct.sniff.sniff`'s names).
_FORMATS = ("PNG", "JPEG")


def is_ordinary_image(path: str | PathLike[str]) -> bool:
    """Whether the file starts like a PNG or JPG (by content: names and suffixes can be anything)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return sniff(head) in _FORMATS


def is_image_set(paths: Sequence[str | PathLike[str]]) -> bool:
    """Whether an upload of ``paths`` is a set of ordinary images: two or more, every one PNG/JPG."""
    return len(paths) > 1 and all(is_ordinary_image(p) for p in paths)


@dataclass
class ImageSetReading:
    """The readings of several images, in upload order.

    Attributes:
        predictions: one entry per image: its :class:`Prediction`, or None when it could not be read.
        errors: ``{"image": number (1-based, upload order), "message": why}`` per unreadable image.
        images: the loaded images (:class:`~brain_ct.image.CTImage`), None where unreadable.
    """

    predictions: list[Prediction | None]
    errors: list[dict[str, Any]] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)

    @property
    def n_read(self) -> int:
        return sum(p is not None for p in self.predictions)

    @property
    def suspicious(self) -> list[int]:
        """0-based indices of the images read as hemorrhage (P ≥ the model's threshold)."""
        return [i for i, p in enumerate(self.predictions) if p is not None and p.label == "hemorrhage"]

    def summary(self) -> str:
        """One line: "2 of 3 images suspicious" (and how many could not be read)."""
        line = f"{len(self.suspicious)} of {plural(self.n_read, 'image')} suspicious"
        if self.errors:
            line += f"; {len(self.errors)} could not be read"
        return line

    def to_dict(self) -> dict[str, Any]:
        """Plain fields for JSON: the summary and per image its number, verdict, P and threshold."""
        images = []
        for i, p in enumerate(self.predictions):
            if p is not None:
                images.append(
                    {
                        "image": i + 1,
                        "label": p.label,
                        "probability": round(float(p.probability), 6),
                        "threshold": round(float(p.threshold), 6),
                        "head_check": p.head_check,
                    }
                )
        return {
            "kind": "image set",
            "summary": self.summary(),
            "order": "upload order; images carry no anatomical order",
            "images": images,
            "errors": list(self.errors),
        }


def read_image_set(
    predictor: Predictor,
    paths: Sequence[str | PathLike[str]],
    *,
    allow_unverified: bool = False,
    tta: bool = False,
    batch_size: int = 16,
) -> ImageSetReading:
    """Read each image of ``paths`` on its own (one batched pass over those that load).

    An image that cannot be read (or is refused by the head-CT check) is listed in ``errors`` with its
    number; the others are still read.

    Raises:
        InvalidInputError: none of the images could be read (the message gives the first reason).
    """
    images: list[Any] = []
    errors: list[dict[str, Any]] = []
    for i, path in enumerate(paths):
        try:
            images.append(load_image(path, allow_unverified=allow_unverified, name=f"image {i + 1}"))
        except BrainCTError as exc:
            images.append(None)
            errors.append({"image": i + 1, "message": str(exc)})
    loaded = [ct for ct in images if ct is not None]
    if not loaded:
        raise InvalidInputError(
            f"none of the {len(paths)} images could be read; the first: {errors[0]['message']}"
        )
    batch = iter(predictor.predict_batch(loaded, batch_size=batch_size, tta=tta))
    predictions = [next(batch) if ct is not None else None for ct in images]
    return ImageSetReading(predictions, errors, images)
