"""Headless Debian Chromium for the browser tests (Playwright's own browser download cannot work offline)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium_or_skip() -> str:
    """Debian's chromium; a skip where it is missing, a failure in CI (``.ci/run`` must install it)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: .ci/run must install Debian's chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium chromium-driver)")
    return executable


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1100) -> Iterator[Any]:
    """A fresh page of a headless Chromium, closed afterwards."""
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


@contextlib.contextmanager
def app_page(url: str, width: int = 1400, height: int = 1100) -> Iterator[Any]:
    """A fresh headless page with the app at ``url`` loaded (its disclaimer shown), and ``test-artifacts/``
    ready for screenshots."""
    from pathlib import Path

    (Path(__file__).resolve().parent.parent / "test-artifacts").mkdir(exist_ok=True)
    with browser_page(width, height) as page:
        page.goto(url)
        page.locator("#disclaimer").wait_for(timeout=60_000)
        yield page
