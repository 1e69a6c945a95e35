"""The app's Gradio glue: the one place that replaces Gradio internals, and how failures reach the page.

The patches exist because Gradio 6 offers no public option for them; each wraps one component (or
the app's queue) and leaves Gradio's own classes as they are:

- :func:`write_images_to_unique_files` replaces ``gr.Image.postprocess``: Gradio writes a returned
  array to a content-hash path without an atomic write, so two identical requests at once could
  serve a half-written file (``format="png"`` sets only the file type).
- :func:`uploads_only` replaces ``gr.File``'s ``move_resource_to_block_cache`` (sync and async) and
  ``_process_single_file``: Gradio downloads a URL an API client sends as "the file", without the
  upload size limit, and opens an empty temp file per upload in ``filepath`` mode that nobody uses.
- :func:`verdict_labels` replaces ``gr.Label.postprocess``: Gradio names the larger confidence as
  the label, which is "normal" for P = 17% over a threshold of 11%; the verdict is the first class.
- :func:`limit_queue_per_client` wraps the queue's ``push``: Gradio's concurrency limits are per
  event and shared by all users, so one client could fill the whole queue.
- :func:`cached_examples` reads the examples' processed values: Gradio copies the example files into
  its cache, and the run folder's sweep must spare those copies.

:func:`shown` and :func:`shown_on_page` turn the failures of :mod:`brain_ct.readings` into the
``gr.Error`` the page shows (:func:`gradio_error`).
"""

from __future__ import annotations

import functools
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import cv2
import gradio as gr
import numpy as np
from gradio.components.label import LabelConfidence, LabelData
from gradio.utils import NamedString
from gradio_client import utils as client_utils

from brain_ct import wording
from brain_ct.errors import BrainCTError
from brain_ct.page_text import user_message
from brain_ct.readings import ReadingFailed, Readings
from brain_ct.serving import FairShare

T = TypeVar("T")


class QueueClients(Protocol):
    """Who a queued request belongs to, and the fair share it is counted against."""

    in_flight: FairShare

    def address(self, request: gr.Request | None) -> str | None: ...


def unique_image_file(component: gr.Image, image: np.ndarray) -> str:
    """Write an image output to its own new file in Gradio's cache, completely before it is named."""
    folder = Path(component.GRADIO_CACHE) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    path = folder / "image.png"
    rgb = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), rgb):
        raise gr.Error("the result image could not be written; please try again")
    return str(path)


def write_images_to_unique_files(component: gr.Image) -> gr.Image:
    """Let ``component`` write each returned array to a file of its own (:func:`unique_image_file`)."""
    original = component.postprocess

    def postprocess(self: gr.Image, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = unique_image_file(self, value)
        return original(value)

    component.postprocess = types.MethodType(postprocess, component)  # type: ignore[method-assign]
    return component


def uploads_only(component: gr.File) -> gr.File:
    """Read uploaded files only: refuse a URL an API client passes as "the file" (Gradio would download
    it without the upload size limit), and skip the empty temp file Gradio makes per upload."""
    original_async = component.async_move_resource_to_block_cache
    original_sync = component.move_resource_to_block_cache

    def refuse(value: Any) -> None:
        if value is not None and client_utils.is_http_url_like(str(value)):
            raise gr.Error(wording.URL_REFUSED, print_exception=False)

    async def move_async(self: gr.File, value: Any) -> Any:
        refuse(value)
        return await original_async(value)

    def move_sync(self: gr.File, value: Any) -> Any:
        refuse(value)
        return original_sync(value)

    def single(self: gr.File, f: Any) -> Any:
        # Gradio's filepath mode opens a NamedTemporaryFile(delete=False) per file and never uses it.
        return NamedString(f.path) if self.type == "filepath" else type(self)._process_single_file(self, f)

    component.async_move_resource_to_block_cache = types.MethodType(move_async, component)  # type: ignore[method-assign]
    component.move_resource_to_block_cache = types.MethodType(move_sync, component)  # type: ignore[method-assign]
    component._process_single_file = types.MethodType(single, component)  # type: ignore[method-assign]
    return component


def verdict_labels(component: gr.Label) -> gr.Label:
    """Let ``component`` show a :func:`~brain_ct.page_text.verdict_label`: its first class is the
    label, in the given order."""

    def postprocess(self: gr.Label, value: Any) -> Any:
        if not value:
            return {}
        confidences = [LabelConfidence(label=k, confidence=float(v)) for k, v in value.items()]
        return LabelData(label=confidences[0].label, confidences=confidences)

    component.postprocess = types.MethodType(postprocess, component)  # type: ignore[method-assign]
    return component


def limit_queue_per_client(demo: gr.Blocks, clients: QueueClients) -> None:
    """Refuse a client's model request at the queue's door while :attr:`FairShare.max_queued` of its
    own already wait (HTTP 503 with the reason): one client cannot fill the shared queue."""
    queue = demo._queue
    original = queue.push

    def model_events(fn_id: Any) -> bool:
        fn = demo.fns.get(fn_id) if isinstance(demo.fns, dict) else None
        return getattr(fn, "concurrency_id", None) == "model"

    async def push(body: Any, request: Any, username: Any) -> Any:
        if model_events(body.fn_index):
            waiting = queue.event_queue_per_concurrency_id.get("model")
            queued = [clients.address(e.request) for e in (waiting.queue if waiting else [])]
            refusal = clients.in_flight.queue_refusal(clients.address(request), queued)
            if refusal:
                return False, refusal, "queue_full"
        return await original(body, request, username)

    queue.push = push  # type: ignore[method-assign]


def cached_examples(demo: gr.Blocks) -> list[Path]:
    """The copies of the example files Gradio made in its cache when the page was built: they are
    not uploads, and sweeping them would break the example buttons."""
    kept: set[str] = set()
    for example in getattr(demo, "example_sets", []):
        for values in example.non_none_processed_examples.values():
            kept.update(v["path"] for v in values if isinstance(v, dict) and v.get("path"))
    return [Path(p) for p in sorted(kept)]


def session_of(request: gr.Request | None) -> str | None:
    """The session a request belongs to (None: a call without a page or client session)."""
    return getattr(request, "session_hash", None) if request is not None else None


def gradio_error(exc: ReadingFailed | BrainCTError, request: gr.Request | None) -> gr.Error:
    """What the page shows for ``exc``: a failed reading under its heading, without a popup for a page
    (its error box keeps the message; a popup said "Error" once more); a reading that cannot be shown
    (expired, a window it cannot take) as a plain message."""
    if isinstance(exc, ReadingFailed):
        return gr.Error(
            str(exc),
            print_exception=False,
            title=exc.heading.rstrip(":") or "Error",
            visible=request is None or session_of(request) is None,
        )
    return gr.Error(user_message(str(exc)), print_exception=False)


def shown(call: Callable[[], T], request: gr.Request | None = None) -> T:
    """``call()``, its failure raised as the page's Gradio error (outside the except block, so the
    error holds no frame of the failed reading)."""
    try:
        return call()
    except (ReadingFailed, BrainCTError) as exc:
        error = gradio_error(exc, request)
    raise error


def shown_on_page(method: Callable[..., T]) -> Callable[..., T]:
    """A :class:`~brain_ct.readings.Readings` method as an event: its refusals become Gradio errors."""

    @functools.wraps(method)
    def event(self: Readings, *args: Any, **kwargs: Any) -> T:
        return shown(lambda: method(self, *args, **kwargs))

    return event
