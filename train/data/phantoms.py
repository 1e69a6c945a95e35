"""Phantom records: generated heads (:mod:`brain_ct.synthetic`), their cache, and how one reaches the model.

Records have ``source`` ``"phantom"`` and a ``synthetic_seed``; a phantom is rendered as a DICOM or an
8-bit internet figure (``kind``) and read back through :func:`brain_ct.io.load_image`, as an upload would be.
Slice-context records are generated as a stack (:func:`brain_ct.synthetic.generate_context`).
"""

from __future__ import annotations

import io
import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from brain_ct.errors import InvalidInputError
from brain_ct.image import CTImage
from brain_ct.io import load_image
from brain_ct.labels import SUBTYPES
from brain_ct.synthetic import generate_context, generate_slice, render_internet, to_dicom
from train.data.records import SOURCE_COLUMN, SPLIT_IDS, SUBTYPE_COLUMN


def synthetic_records(
    n: int, split: str, seed: int, fraction_8bit: float, subtypes: bool = False
) -> dict[str, list[Any]]:
    """Records for ``n`` phantoms generated on the fly; half of each class (alternating).

    Each index gets its own phantom seed from ``(seed, split, index)`` and, from that seed, whether it is
    fed as DICOM HU or as an 8-bit rendering; the same arguments always give the same records.
    ``subtypes``: add the ``subtypes`` column, the positives asking the generator for the five subtypes in
    turn (balanced; the generator draws one otherwise, and the transform reads what it made).
    """
    split_id = SPLIT_IDS[split]
    seeds: list[int] = []
    kinds: list[str] = []
    for i in range(n):
        ss = np.random.SeedSequence([int(seed), split_id, i])
        s = int(ss.generate_state(1, dtype=np.uint32)[0])
        seeds.append(s)
        kinds.append("image" if np.random.default_rng(s ^ 0x5EED).random() < fraction_8bit else "dicom")
    labels = [i % 2 for i in range(n)]
    columns = {
        "path": [""] * n,
        "label": labels,
        "mask_path": [""] * n,
        "synthetic_seed": seeds,
        "kind": kinds,
        SOURCE_COLUMN: ["phantom"] * n,
    }
    if subtypes:
        columns[SUBTYPE_COLUMN] = [[SUBTYPES[(i // 2) % len(SUBTYPES)]] if i % 2 else [] for i in range(n)]
    return columns


def _generate(key: tuple[Any, ...]) -> list[Any]:
    """The phantom(s) of a cache key ``(seed, label, size, k)`` or ``(seed, label, size, k, subtype)``.

    A requested subtype the generator cannot place for this seed (rare: a small head at a small size)
    gives way to a drawn one; the phantom's ``subtype`` says which, and the transform's targets follow it.
    """
    seed, label, size, k = key[:4]
    subtype = key[4] if len(key) > 4 and label else None

    def make(wanted: str | None) -> list[Any]:
        if k > 0:
            return generate_context(seed, size, k, hemorrhage=bool(label), subtype=wanted)
        return [generate_slice(seed, size, hemorrhage=bool(label), subtype=wanted)]

    try:
        phantoms = make(subtype)
    except InvalidInputError:
        if subtype is None:
            raise
        phantoms = make(None)
    for phantom in phantoms:
        # Only hu/mask and a few scalars are needed to render it; drop the large helper masks.
        phantom.mimic_mask = phantom.brain_mask = None
    return phantoms


@dataclass(eq=False)
class PhantomCache:
    """Phantoms generated ahead of training, keyed by (seed, label, size, context k).

    Each entry is ``[slice]``, or the 2k + 1 slices of a context stack. Fill it (:meth:`prefetch`) in the
    main process before the DataLoader forks its workers: the
    :class:`~train.data.transform.SliceTransform` holding it is shared with them copy-on-write. A record
    not in the cache is generated on demand (deterministic), so a cache only saves time.
    """

    entries: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict, repr=False)

    def get(self, seed: int, label: int, size: int, k: int = 0, subtype: str = "") -> list[Any]:
        """The phantom(s) of a synthetic record: from the cache, else generated now.

        ``subtype``: the subtype asked of the generator (subtype runs), "" to let it draw one.

        Returns:
            ``[slice]`` for single-slice records, the ``2k + 1`` slices (centre at index k) for context ones.
        """
        key = _phantom_key(seed, label, size, k, subtype)
        phantoms = self.entries.get(key)
        return phantoms if phantoms is not None else _generate(key)

    def prefetch(self, columns: dict[str, list[Any]], size: int, processes: int = 1, k: int = 0) -> int:
        """Generate the phantoms of the synthetic records in ``columns`` once, in parallel.

        Each epoch then only renders (DICOM encoding or the 8-bit figure) and augments, which is several
        times cheaper than generating. Memory: about 330 KB per slice at 256 px (× 2k + 1 for context stacks).

        Returns:
            The number of records whose phantoms were generated.
        """
        asked = columns.get(SUBTYPE_COLUMN) or [[]] * len(columns["label"])
        keys = [
            key
            for s, y, names in zip(columns["synthetic_seed"], columns["label"], asked, strict=True)
            if int(s) >= 0 and (key := _phantom_key(s, y, size, k, asked_subtype(names))) not in self.entries
        ]
        if not keys:
            return 0
        from tqdm.auto import tqdm

        if processes > 1:
            with mp.get_context("fork").Pool(processes) as pool:
                phantoms = list(
                    tqdm(pool.imap(_generate, keys, chunksize=8), total=len(keys), desc="phantoms")
                )
        else:
            phantoms = [_generate(key) for key in tqdm(keys, desc="phantoms")]
        self.entries.update(zip(keys, phantoms, strict=True))
        return len(keys)


def _phantom_key(seed: int, label: int, size: int, k: int, subtype: str) -> tuple[Any, ...]:
    key = (int(seed), int(label), int(size), int(k))
    return (*key, subtype) if subtype and label else key


def asked_subtype(names: Sequence[str] | None) -> str:
    """The one subtype a generated record asks for (see :func:`synthetic_records`), else ""."""
    named = [n for n in (names or ()) if n in SUBTYPES]
    return named[0] if len(named) == 1 else ""


def _png_bytes(image: np.ndarray) -> bytes:
    """uint8 grey / RGB / RGBA array → PNG bytes (lossless: exactly the pixels a person would upload)."""
    if image.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        image = cv2.cvtColor(image, code)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise InvalidInputError(f"cannot encode a rendered {image.shape} phantom as PNG")
    return buf.tobytes()


def synthetic_example(
    seed: int, label: int, kind: str, size: int, phantoms: PhantomCache | None = None
) -> tuple[Any, np.ndarray | None]:
    """One phantom, deterministically, as the model would receive it through ``brain_ct.io.load_image``.

    ``kind == "dicom"``: the phantom written as a CT DICOM (:func:`brain_ct.synthetic.to_dicom`) and read
    back — HU windows as channels. ``kind == "image"``: an 8-bit internet-style rendering
    (:func:`brain_ct.synthetic.render_internet`: window, size, borders, letters, arrows, captions, colour,
    JPEG quality all random per seed) saved as PNG and read back — the path a dropped PNG/JPG takes.
    ``phantoms``: where prefetched phantoms are looked up (None: generate now).

    Returns:
        ``(ct, mask)``: the :class:`~brain_ct.image.CTImage` and the lesion mask (float32 [H, W] on ``ct``'s
        grid; all zero for a normal slice).
    """
    cache = phantoms if phantoms is not None else PhantomCache()
    return _phantom_input(cache.get(seed, label, size)[0], seed, kind)


def synthetic_context_example(
    seed: int, label: int, kind: str, size: int, k: int, phantoms: PhantomCache | None = None
) -> tuple[Any, np.ndarray, list[Any | None]]:
    """A phantom slice with its k neighbours on each side, as a slice-context model receives them.

    ``kind == "dicom"``: every slice of the stack goes through DICOM and ``load_image``; for about one
    record in seven, seeded, one side's neighbours are missing, as at a scan's first or last slice or for
    a lone DICOM (the Predictor repeats the centre then). ``kind == "image"``: only the centre, rendered as
    an internet figure — a PNG/JPG has no neighbours. ``phantoms`` as in :func:`synthetic_example`.

    Returns:
        ``(ct, mask, neighbors)``: the centre slice, its lesion mask (as :func:`synthetic_example`) and the
        2k neighbours ``[s−k … s−1, s+1 … s+k]`` (None where missing).
    """
    stack = (phantoms if phantoms is not None else PhantomCache()).get(seed, label, size, k)
    return _context_input(stack, seed, kind, k)


def phantom_record_example(
    ex: dict[str, Any], size: int, k: int, phantoms: PhantomCache
) -> tuple[CTImage, np.ndarray, list[CTImage | None] | None, str | None]:
    """A phantom record (:func:`synthetic_records`) as the model receives it: ``(ct, mask, neighbours,
    subtype generated)``; neighbours as :func:`synthetic_context_example` for ``k`` > 0, else None."""
    seed, kind, label = int(ex["synthetic_seed"]), ex["kind"], int(ex["label"])
    stack = phantoms.get(seed, label, size, k, asked_subtype(ex.get(SUBTYPE_COLUMN)))
    if k:
        ct, mask, neighbors = _context_input(stack, seed, kind, k)
    else:
        (ct, mask), neighbors = _phantom_input(stack[0], seed, kind), None
    return ct, mask, neighbors, stack[k].subtype


def _context_input(
    stack: list[Any], seed: int, kind: str, k: int
) -> tuple[Any, np.ndarray, list[Any | None]]:
    ct, mask = _phantom_input(stack[k], seed, kind)
    if kind == "image":
        return ct, mask, [None] * (2 * k)
    drop = np.random.default_rng([int(seed), 3]).random(2) < 0.075
    below = [None if drop[0] else _phantom_input(ph, seed, kind)[0] for ph in stack[:k]]
    above = [None if drop[1] else _phantom_input(ph, seed, kind)[0] for ph in stack[k + 1 :]]
    return ct, mask, below + above


def _phantom_input(phantom: Any, seed: int, kind: str) -> tuple[Any, np.ndarray]:
    return encode_phantom(phantom, kind, np.random.default_rng([int(seed), 2]), f"phantom-{seed}")


def encode_phantom(phantom: Any, kind: str, rng: np.random.Generator, name: str) -> tuple[Any, np.ndarray]:
    """A phantom (generated, or a real slice wrapped as one) as the model receives it via ``load_image``.

    ``kind == "image"``: rendered as an internet figure with ``rng`` and read back from PNG;
    ``"dicom"``: written as a CT DICOM and read back. Returns ``(ct, mask float32 on ct's grid)``.
    """
    if kind == "image":
        image, mask = render_internet(phantom, rng)
        data = _png_bytes(image)
    else:
        buf = io.BytesIO()
        to_dicom(phantom).save_as(buf, enforce_file_format=True)
        data, mask = buf.getvalue(), phantom.mask
    ct = load_image(data, allow_unverified=True, name=name)
    return ct, mask.astype(np.float32)
