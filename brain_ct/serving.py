"""Serving a reading app to strangers: bounded memory, swept files and a fair share per client.

Web-framework free (the Gradio app wires these in): a bounded readings cache (:class:`ResultCache`),
the last error per session (:class:`ErrorBox`), one reading at a time per session and per client
address with a bound on a client's queued requests (:class:`FairShare`), age sweeps of the run
folder and of the upload cache that spare named files (:func:`sweep_folder`), and giving the memory
of a failed reading back at once (:func:`forget_failure`, :func:`release_memory`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import ipaddress
import os
import shutil
import threading
import time
import traceback
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from brain_ct.errors import BrainCTError

#: Readings kept in memory at once over all sessions, their total size (bytes) and idle lifetime (s).
CACHE_ENTRIES = 16
CACHE_BYTES = 512 * 1024 * 1024
SESSION_TTL_S = 900
#: Requests of one client address that may wait in the queue for a worker at once.
MAX_QUEUED_PER_CLIENT = 2
BUSY_MESSAGE = "you already have a reading running; wait for its result, then upload again"
QUEUE_MESSAGE = (
    "you already have {n} readings waiting in the queue; wait for them to finish before sending more"
)


#: What a :class:`ResultCache` holds (the app's typed readings).
Entry = TypeVar("Entry")


class ClientBusyError(BrainCTError):
    """A client asked for a second reading while its first is still running (or its queue is full)."""


# --------------------------------------------------------------------------- memory


@cache
def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None


def limit_malloc_arenas(n: int = 2) -> None:
    """Let glibc use at most ``n`` malloc arenas (unless ``MALLOC_ARENA_MAX`` is set).

    glibc gives each thread its own arena and keeps freed memory there; Gradio runs events on a pool
    of up to 40 threads, and a server grew by ~0.5 GB over 60 new-session requests that way
    (``python -m benchmarks --rows sessions``), never returned.
    """
    libc = _glibc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(-8, int(n))  # -8 = M_ARENA_MAX


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps it otherwise)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def failure_message(exc: BaseException) -> str:
    """A non-empty message for any exception: its own text, else what kind of failure it was.

    Some library exceptions carry no text (``NotImplementedError()``); an empty message reaches an
    API client as ``"error": null``.
    """
    text = str(getattr(exc, "message", "") or exc).strip()
    if text:
        return text
    return (
        f"the file could not be read ({type(exc).__name__} while decoding it); check that it is an "
        "uncorrupted DICOM, PNG or JPG file"
    )


def forget_failure(exc: BaseException) -> None:
    """Drop everything a failed reading's exception keeps alive, and give the memory back.

    A traceback holds the frames of the reading, and they hold its decoded arrays (a 50-megapixel
    image is ~200 MB per copy); chained exceptions (``raise … from``) hold more frames. Until a full
    garbage collection those arrays stay, so a burst of failures held gigabytes while idle.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
            current.__traceback__ = None
        nxt = current.__cause__ or current.__context__
        current.__cause__ = current.__context__ = None
        current = nxt
    gc.collect()
    release_memory()


def nbytes(value: Any, seen: set[int] | None = None) -> int:
    """Approximate bytes held by the arrays of a reading (CTImages, predictions, series)."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v, seen) for v in value)
    if hasattr(value, "__dict__"):
        return sum(nbytes(v, seen) for v in vars(value).values())
    return 0


class ResultCache(Generic[Entry]):
    """Readings by key, bounded in entries, bytes and age; a page's session state holds only the key.

    Gradio keeps a session's state until the tab closes (an hour later) or, for API clients, until
    10,000 sessions exist: holding whole images there grows the server by megabytes per session.
    Thread-safe: events of many sessions run at once.
    """

    def __init__(
        self, max_entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES, ttl_s: float = SESSION_TTL_S
    ) -> None:
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self._items: OrderedDict[str, tuple[float, int, Entry]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, value: Entry) -> str:
        key = uuid.uuid4().hex
        size = nbytes(value)
        with self._lock:
            self._items[key] = (time.monotonic(), size, value)
            self._evict()
        return key

    def get(self, key: object) -> Entry | None:
        if not isinstance(key, str):
            return None
        with self._lock:
            self._evict()
            item = self._items.get(key)
            if item is None:
                return None
            self._items[key] = (time.monotonic(), item[1], item[2])
            self._items.move_to_end(key)
            return item[2]

    def discard(self, key: object) -> None:
        """A session ended or its state expired: forget its reading."""
        if isinstance(key, str):
            with self._lock:
                gone = self._items.pop(key, None)
            if gone is not None:
                release_memory()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(size for _, size, _ in self._items.values())

    def _evict(self) -> None:
        now = time.monotonic()
        n = len(self._items)
        for key in [k for k, (t, _, _) in self._items.items() if now - t > self.ttl_s]:
            del self._items[key]
        total = sum(size for _, size, _ in self._items.values())
        # The newest entry always stays: it is the reading the page is about to show.
        while len(self._items) > 1 and (len(self._items) > self.max_entries or total > self.max_bytes):
            total -= self._items.popitem(last=False)[1][1]
        if len(self._items) < n:
            release_memory()


class ErrorBox:
    """The last error message of each session, shown on the page until the next upload (bounded)."""

    def __init__(self, max_sessions: int = 1024) -> None:
        self.max_sessions = max_sessions
        self._items: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def set(self, session: str | None, message: str) -> None:
        if not session:
            return
        with self._lock:
            self._items[session] = message
            self._items.move_to_end(session)
            while len(self._items) > self.max_sessions:
                self._items.popitem(last=False)

    def pop(self, session: str | None) -> str:
        with self._lock:
            return self._items.pop(session or "", "")


# --------------------------------------------------------------------------- fair share


def client_address(
    host: str | None, forwarded_for: str | None = None, behind_proxy: bool = False
) -> str | None:
    """The address a client's fair share is counted by; None when it cannot be told apart from others.

    Behind a proxy (a Hugging Face Space) every request comes from the proxy: the client is the
    first hop of ``X-Forwarded-For``. Elsewhere that header is the client's own word and is ignored
    (anyone could send a fresh one with each request). A loopback address without a proxy is the
    local user (or an unannounced local proxy, where one address would be everyone): None.
    """
    if behind_proxy and forwarded_for:
        first = forwarded_for.split(",")[0].strip()
        if first:
            return first
    if not host:
        return None
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    return host


class FairShare:
    """At most one reading in flight per session and per client address, and a bound on queued ones.

    A web framework's concurrency limit is per event and shared by all users: without this, one
    client sending uploads in a loop would occupy every worker while everyone else waits. A second
    reading from a busy session or address is refused at once, before any decoding.
    """

    def __init__(self, max_queued: int = MAX_QUEUED_PER_CLIENT) -> None:
        self.max_queued = max_queued
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, session: str | None, address: str | None = None) -> Iterator[None]:
        """Run one reading for ``session`` from ``address`` (None: not counted); raises
        :class:`ClientBusyError` when either already has one running."""
        keys = [
            k
            for k in (f"session:{session}" if session else None, f"address:{address}" if address else None)
            if k
        ]
        with self._lock:
            if any(k in self._busy for k in keys):
                raise ClientBusyError(BUSY_MESSAGE)
            self._busy.update(keys)
        try:
            yield
        finally:
            with self._lock:
                self._busy.difference_update(keys)

    def queue_refusal(self, address: str | None, queued: Iterable[str | None]) -> str | None:
        """The message refusing a new queued request from ``address`` when ``queued`` (the addresses
        of the requests waiting now) already holds :attr:`max_queued` of its own; None: accept."""
        if address is None:
            return None
        n = Counter(queued)[address]
        return QUEUE_MESSAGE.format(n=n) if n >= self.max_queued else None


# --------------------------------------------------------------------------- files


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def sweep_dead_runs(parent: Path) -> list[Path]:
    """Remove the ``run-<pid>`` folders under ``parent`` of servers no longer running (killed before
    they could clean up)."""
    removed = []
    for folder in parent.glob("run-*") if parent.is_dir() else []:
        try:
            pid = int(folder.name.removeprefix("run-"))
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def sweep_folder(folder: Path, max_age_s: float, now: float | None = None, keep: Iterable[Path] = ()) -> int:
    """Delete what under ``folder`` is older than ``max_age_s`` seconds (by modification time), except
    ``keep`` and what lies inside a kept folder; then the empty sub-folders that old. Returns how many
    files went.

    An upload cache holds finished uploads in per-file folders and, at its top, the partial files of
    uploads aborted half-way (no framework sweep knows them); kept paths are the app's examples.
    """
    now = time.time() if now is None else now
    kept = {Path(k).resolve() for k in keep}
    removed = 0
    if not folder.is_dir():
        return 0
    paths = sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    # Ages first: deleting a file makes its folder look new, and that folder must still go.
    mtimes = {}
    for path in paths:
        with contextlib.suppress(OSError):
            mtimes[path] = path.lstat().st_mtime
    for path, mtime in mtimes.items():
        resolved = path.resolve()
        if now - mtime <= max_age_s or resolved in kept or any(k in resolved.parents for k in kept):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()  # only when empty
            else:
                path.unlink()
                removed += 1
        except OSError:  # not empty, or removed by another sweep first
            continue
    return removed
