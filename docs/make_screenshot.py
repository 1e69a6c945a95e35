"""Take the README's screenshot: the app on the default model (the bundled ResNet-50) reading an example slice.

    python -m docs.make_screenshot [--input examples/synthetic_subdural.dcm] [--out docs/app.png]

Needs Debian's Chromium (/usr/bin/chromium) and the playwright package (no browser download).
"""

from __future__ import annotations

import argparse
import shutil
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(ROOT / "examples" / "synthetic_subdural.dcm"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "app.png"))
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    import app

    settings = app.AppSettings.from_env()
    app.prepare_run_dir(settings)
    demo = app.create_app(settings)
    app.warm_up(demo.reader.registry)
    _, url, _ = demo.launch(
        server_name="127.0.0.1",
        server_port=_free_port(),
        prevent_thread_lock=True,
        quiet=True,
        **app.LAUNCH_OPTIONS,
    )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.locator("#upload input[type=file]").set_input_files(args.input)
            page.get_by_text("P(hemorrhage)").first.wait_for(timeout=120_000)
            page.wait_for_timeout(2500)
            page.screenshot(path=args.out, full_page=False)
            browser.close()
    finally:
        demo.close()
        app.remove_run_dir(settings)
    print(args.out)


if __name__ == "__main__":
    main()
