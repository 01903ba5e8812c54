"""The web demo's three answers in a real headless Chromium: a model carrying a trust bundle
says "Most likely: …", "Not sure — one of: … (mixed breed?)" or "This doesn't look like a dog
breed this model knows" (a fully transparent PNG). Its own module: its own store and browser,
apart from test_browser.py's tiny-registry server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dogbreeds.serving.web import create_app
from support.project import REPO
from support.tiny_registry import running_app

pytestmark = pytest.mark.slow

sys.path.insert(0, str(REPO / "scripts"))
import screenshot  # noqa: E402  (scripts/screenshot.py: the same launch settings)

if not Path(screenshot.CHROMIUM).exists():
    pytest.skip(f"no Chromium at {screenshot.CHROMIUM} (apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")



@pytest.fixture(scope="module")
def trusted(tmp_path_factory):
    from support.trusted_model import log_trusted_models

    return log_trusted_models(tmp_path_factory.mktemp("trusted"))


def shown_answer(page, url: str, photo: Path) -> tuple[str, str]:
    """Upload ``photo`` on the page at ``url``; the answer's status and the sentence shown."""
    page.goto(url + "/", wait_until="domcontentloaded")
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#predictions li .name")
    status = page.locator("#status")
    return status.get_attribute("data-answer"), status.inner_text()


def test_the_page_says_sure_not_sure_or_not_a_known_breed(trusted, tmp_path):
    from support import tiny_models as tm

    dog = tmp_path / "papillon.jpg"
    dog.write_bytes(tm.breed_jpeg("papillon"))
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGBA", (80, 60), (0, 0, 0, 0)).save(blank)   # fully transparent
    # Its own browser and store: not the module's tiny-registry server.
    with pytest.MonkeyPatch.context() as mp, sync_api.sync_playwright() as p:
        mp.setenv("MLFLOW_TRACKING_URI", trusted.tracking_uri)
        browser = p.chromium.launch(executable_path=screenshot.CHROMIUM,
                                    args=screenshot.CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(60_000)
        with running_app(create_app(trusted.fitted, refresh_seconds=None)) as url:
            sure = shown_answer(page, url, dog)
            unknown = shown_answer(page, url, blank)
        with running_app(create_app(trusted.hesitant, refresh_seconds=None)) as url:
            unsure = shown_answer(page, url, dog)
        browser.close()
    assert sure[0] == "ok" and sure[1].startswith("Most likely: Papillon (")
    assert unknown == ("unknown", "This doesn't look like a dog breed this model knows")
    assert unsure[0] == "unsure" and unsure[1].startswith("Not sure — one of: ")
    assert "Papillon" in unsure[1] and unsure[1].endswith("(mixed breed?)")
