"""The app served for tests: a free local port and a launched page, closed afterwards."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def launched(demo: Any, app_module: Any) -> Iterator[str]:
    """``demo`` served on a free local port with the app's launch options, as ``main()`` does; yields its URL."""
    _, url, _ = demo.launch(
        server_name="127.0.0.1",
        server_port=free_port(),
        prevent_thread_lock=True,
        quiet=True,
        **app_module.LAUNCH_OPTIONS,
    )
    try:
        yield url
    finally:
        demo.close()


@contextlib.contextmanager
def served_app(app_module: Any, settings: Any) -> Iterator[str]:
    """The app for ``settings`` built, its model warmed up and served (see :func:`launched`); yields its URL."""
    demo = app_module.create_app(settings)
    app_module.warm_up(demo.reader.registry)
    with launched(demo, app_module) as url:
        yield url
