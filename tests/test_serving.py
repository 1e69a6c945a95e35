"""brain_ct.serving: failure cleanup, the fair share per session and address, and the file sweeps."""

from __future__ import annotations

import gc
import os
import time
import weakref

import numpy as np
import pytest

from brain_ct.serving import (
    BUSY_MESSAGE,
    ClientBusyError,
    ErrorBox,
    FairShare,
    ResultCache,
    client_address,
    failure_message,
    forget_failure,
    sweep_folder,
)


def _fail_holding(array: np.ndarray) -> None:
    local = array  # noqa: F841  # what a decoder's frame holds when it fails
    try:
        raise KeyError("inner")
    except KeyError as exc:
        raise ValueError("outer") from exc


def test_forget_failure_frees_the_arrays_a_traceback_holds():
    gc.disable()  # only forget_failure may collect here
    try:
        array = np.zeros(1000)
        alive = weakref.ref(array)
        try:
            _fail_holding(array)
        except ValueError as caught:
            exc = caught
        del array
        assert alive() is not None  # the failed frame keeps it
        forget_failure(exc)
        assert alive() is None
        assert exc.__traceback__ is None and exc.__cause__ is None and exc.__context__ is None
    finally:
        gc.enable()


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (NotImplementedError(), "NotImplementedError while decoding"),
        (ValueError("  "), "ValueError while decoding"),
        (ValueError("bad header"), "bad header"),
    ],
)
def test_every_failure_has_a_message(exc, expected):
    assert expected in failure_message(exc)


def test_one_reading_at_a_time_per_session_and_per_address():
    share = FairShare()
    with share.hold("s1", "203.0.113.5"):
        # same session from another address; then the same address in a new session
        with (
            pytest.raises(ClientBusyError, match="already have a reading running"),
            share.hold("s1", "198.51.100.7"),
        ):
            pass
        with pytest.raises(ClientBusyError) as err, share.hold("s2", "203.0.113.5"):
            pass
        assert str(err.value) == BUSY_MESSAGE
        with share.hold("s3", "198.51.100.7"):  # another client is served meanwhile
            pass
        with share.hold("s4", None), share.hold("s5", None):  # addresses that cannot be told apart
            pass
    with pytest.raises(RuntimeError), share.hold("s1", "203.0.113.5"):
        raise RuntimeError("a failed reading")
    with share.hold("s1", "203.0.113.5"):  # freed after the failure
        pass


def test_a_client_may_queue_only_a_few_requests():
    share = FairShare(max_queued=2)
    assert share.queue_refusal("a", ["a", "b"]) is None
    refusal = share.queue_refusal("a", ["a", "b", "a"])
    assert refusal is not None and "2 readings waiting" in refusal
    assert share.queue_refusal("b", ["a", "a", "a", "b"]) is None
    assert share.queue_refusal(None, [None] * 10) is None


@pytest.mark.parametrize(
    ("host", "forwarded", "proxy", "expected"),
    [
        ("203.0.113.5", None, False, "203.0.113.5"),
        ("203.0.113.5", "198.51.100.7", False, "203.0.113.5"),  # a client's own header is not trusted
        ("10.0.0.2", "198.51.100.7, 10.0.0.9", True, "198.51.100.7"),  # the proxy's first hop
        ("10.0.0.2", None, True, "10.0.0.2"),
        ("127.0.0.1", None, False, None),  # the local user
        ("::1", None, False, None),
        (None, None, False, None),
        ("testclient", None, False, "testclient"),
    ],
)
def test_client_address(host, forwarded, proxy, expected):
    assert client_address(host, forwarded, proxy) == expected


def test_sweep_keeps_fresh_files_and_kept_ones_and_removes_the_rest(tmp_path):
    old = time.time() - 1000

    def make(rel: str, age: float | None = old):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        if age is not None:
            os.utime(path, (age, age))
        return path

    partial = make("tmp1234")
    upload = make("hash1/slice.dcm")
    os.utime(upload.parent, (old, old))
    example = make("hash2/example.dcm")
    fresh = make("hash3/new.dcm", None)
    assert sweep_folder(tmp_path, 300, keep=[example]) == 2
    assert not partial.exists() and not upload.parent.exists()
    assert example.exists() and fresh.exists()
    assert sweep_folder(tmp_path / "missing", 300) == 0


def test_error_box_keeps_the_last_error_per_session_bounded():
    box = ErrorBox(max_sessions=2)
    for s in ("a", "b", "c"):
        box.set(s, f"error {s}")
    box.set(None, "nobody")
    assert box.pop("a") == "" and box.pop("c") == "error c" and box.pop("c") == ""


def test_result_cache_is_bounded_in_entries_bytes_and_age(monkeypatch):
    cache = ResultCache(max_entries=3, max_bytes=10_000, ttl_s=60)
    keys = [cache.put({"a": np.zeros(100, np.uint8)}) for _ in range(5)]
    assert len(cache) == 3 and cache.get(keys[0]) is None and cache.get(keys[-1]) is not None
    big = cache.put({"a": np.zeros(9_000, np.uint8)})
    assert cache.nbytes <= 10_000 and cache.get(big) is not None
    cache.discard(big)
    assert cache.get(big) is None
    huge = cache.put({"a": np.zeros(50_000, np.uint8)})  # larger than the budget: the newest stays
    assert cache.get(huge) is not None and len(cache) == 1
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    key = cache.put({"a": np.zeros(10, np.uint8)})
    clock[0] += 61
    assert cache.get(key) is None
    assert cache.get({"not": "a key"}) is None
