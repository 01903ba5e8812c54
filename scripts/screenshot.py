"""Screenshot of the web demo after an upload, for the docs (docs/web-demo.png).

Start the demo first (``dogbreeds serve``), then::

    .venv/bin/python scripts/screenshot.py PHOTO.jpg [--url http://127.0.0.1:8000] \
        [--out docs/web-demo.png]

It opens the page in headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright;
no browser download), uploads the photo, waits for the ranked breeds and saves a screenshot.
Prints the top breed shown on the page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# Offline, quiet, CI-friendly Chromium: no sandbox (root in containers), no background traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def capture(url: str, photo: Path, out: Path | None = None, *, executable: str = CHROMIUM,
            timeout_ms: int = 60_000) -> str:
    """Upload ``photo`` on the demo page at ``url``; return the top breed shown.

    Saves a full-page screenshot to ``out`` when given.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 720})
            page.goto(url.rstrip("/") + "/", wait_until="domcontentloaded")
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("#predictions li .name", timeout=timeout_ms)
            page.wait_for_timeout(600)  # let the bars finish their width transition
            top = page.locator("#predictions li .name").first.inner_text()
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=True)
            return top
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path, help="the dog photo to upload")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="where the demo runs")
    parser.add_argument("--out", type=Path, default=Path("docs/web-demo.png"))
    parser.add_argument("--chromium", default=CHROMIUM, help="Chromium executable")
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        print(f"screenshot: no Chromium at {args.chromium} (apt-get install chromium)",
              file=sys.stderr)
        return 2
    top = capture(args.url, args.photo, args.out, executable=args.chromium)
    print(f"top breed shown: {top}; screenshot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
