"""The web demo in a real headless Chromium (Debian's /usr/bin/chromium via Playwright):
upload a photo, read the breeds the page shows, say "Correct" or "Wrong → pick the breed" and
find the judgement in the feedback folder.

Set ``DOGBREEDS_SCREENSHOT=path.png`` to keep a screenshot of the page after an upload
(the docs' picture is taken against the real model with ``scripts/screenshot.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dogbreeds.serving.answers import display_name
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
def server(tiny_registry):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", tiny_registry.tracking_uri)
        with running_app(create_app("models:/dogbreeds@champion", refresh_seconds=None)) as url:
            yield url


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=screenshot.CHROMIUM,
                                    args=screenshot.CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 720})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def open_demo(page, url: str) -> None:
    page.goto(url + "/", wait_until="domcontentloaded")
    # The footer is filled from /api/health once the page has loaded.
    sync_api.expect(page.locator("#model")).to_have_text("dogbreeds version 1 (@champion)")


def test_upload_shows_the_ranked_breeds(page, server, tiny_registry):
    open_demo(page, server)
    photo = tiny_registry.photos["golden_retriever"][0]
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#predictions li .name")
    names = page.locator("#predictions li .name").all_inner_texts()
    assert names[0] == display_name("golden_retriever") == "Golden retriever"
    assert len(names) == len(tiny_registry.classes)
    assert page.locator("#predictions li").first.get_attribute("data-breed") == "golden_retriever"
    assert page.locator("#status").inner_text().startswith("Most likely: Golden retriever")
    assert page.locator("#preview").is_visible()
    assert not page.locator("#feedback").is_visible()  # this server keeps no feedback
    shot = os.environ.get("DOGBREEDS_SCREENSHOT")
    if shot:
        page.wait_for_timeout(600)  # bars' width transition
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=shot, full_page=True)


def test_a_bad_file_shows_an_error_and_the_next_photo_works(page, server, tiny_registry,
                                                            tmp_path):
    open_demo(page, server)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo at all")
    page.set_input_files("#file", str(bad))
    sync_api.expect(page.locator("#status")).to_have_class("error")
    assert "not an image" in page.locator("#status").inner_text()
    assert page.locator("#predictions li").count() == 0

    page.set_input_files("#file", str(tiny_registry.photos["Chihuahua"][0]))
    page.wait_for_selector("#predictions li .name")
    assert page.locator("#predictions li .name").first.inner_text() == "Chihuahua"


def test_screenshot_script(server, tiny_registry, tmp_path):
    out = tmp_path / "docs" / "web-demo.png"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "screenshot.py"),
         str(tiny_registry.photos["papillon"][0]), "--url", server, "--out", str(out)],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "top breed shown: Papillon" in proc.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----- staff feedback: Correct / Wrong → pick the breed --------------------------------------

@pytest.fixture(scope="module")
def feedback_server(tiny_registry, tmp_path_factory):
    from dogbreeds.data.feedback import FeedbackStore
    from dogbreeds.serving.predlog import PredictionLog

    root = tmp_path_factory.mktemp("feedback")
    log = PredictionLog(root / "predictions.sqlite", retention_days=90)
    store = FeedbackStore.open(root / "feedback")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", tiny_registry.tracking_uri)
        with running_app(create_app("models:/dogbreeds@champion", refresh_seconds=None,
                                    prediction_log=log, feedback_store=store)) as url:
            yield url, store
    log.close()


def judged(store, photo: Path) -> dict:
    from dogbreeds import hashing
    from dogbreeds.data.feedback import read_corrections

    rows = read_corrections(store.folder).set_index("image_sha256")
    return rows.loc[hashing.digest(photo.read_bytes())].to_dict()


def test_correct_and_wrong_then_pick_the_breed_are_stored(page, feedback_server, tiny_registry):
    url, store = feedback_server
    open_demo(page, url)
    golden = tiny_registry.photos["golden_retriever"][0]
    page.set_input_files("#file", str(golden))
    page.wait_for_selector("#predictions li .name")
    sync_api.expect(page.locator("#feedback")).to_be_visible()
    assert not page.locator("#picker").is_visible()
    page.click("#correct")
    sync_api.expect(page.locator("#feedback-status")).to_have_text(
        "Saved: Golden retriever. Thank you!")
    row = judged(store, golden)
    assert (row["label"], row["verdict"], row["answer_breed"], row["model_version"]) == (
        "golden_retriever", "correct", "golden_retriever", "1")
    assert (store.folder / "golden_retriever").is_dir()

    papillon = tiny_registry.photos["papillon"][0]
    page.set_input_files("#file", str(papillon))
    sync_api.expect(page.locator("#predictions li").first).to_have_attribute("data-breed",
                                                                              "papillon")
    sync_api.expect(page.locator("#feedback-status")).to_have_text("")  # a new answer
    page.click("#wrong")
    options = page.locator("#breed-list button")
    # every label but the answered breed: the other breeds, then "not a dog" and "mixed"
    assert options.all_inner_texts() == ["Chihuahua", "Golden retriever", "Not a dog", "Mixed"]
    page.fill("#breed-search", "chi")  # searchable
    assert options.all_inner_texts() == ["Chihuahua"]
    options.first.click()
    sync_api.expect(page.locator("#feedback-status")).to_have_text("Saved: Chihuahua. Thank you!")
    row = judged(store, papillon)
    assert (row["label"], row["verdict"], row["answer_breed"]) == ("Chihuahua", "wrong",
                                                                    "papillon")

    page.click("#wrong")  # changing one's mind: the later label wins, the earlier is history
    page.fill("#breed-search", "not a")
    page.press("#breed-search", "Enter")
    sync_api.expect(page.locator("#feedback-status")).to_have_text("Saved: Not a dog. Thank you!")
    row = judged(store, papillon)
    assert (row["label"], row["earlier_judgements"]) == ("not_a_dog", 1)
    shown = [p.parent.name for p in store.folder.glob(f"*/{Path(row['file']).name}")]
    assert shown == ["not_a_dog"]


# ----- the three answers of a model with a trust bundle -------------------------------------

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


def test_the_page_says_sure_not_sure_or_not_a_known_breed(page, trusted, tmp_path):
    from support import tiny_models as tm

    dog = tmp_path / "papillon.jpg"
    dog.write_bytes(tm.breed_jpeg("papillon"))
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGBA", (80, 60), (0, 0, 0, 0)).save(blank)   # fully transparent
    from dogbreeds.data.feedback import FeedbackStore, read_corrections
    from dogbreeds.serving.predlog import PredictionLog

    log = PredictionLog(tmp_path / "predictions.sqlite", retention_days=90)
    store = FeedbackStore.open(tmp_path / "feedback")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", trusted.tracking_uri)
        with running_app(create_app(trusted.fitted, refresh_seconds=None, prediction_log=log,
                                    feedback_store=store)) as url:
            sure = shown_answer(page, url, dog)
            unknown = shown_answer(page, url, blank)
            # an `unknown` answer names no breed: nothing to confirm, only a label to pick
            assert not page.locator("#correct").is_visible()
            page.click("#wrong")
            assert page.locator("#wrong").inner_text() == "Pick the right label"
            page.locator("#breed-list button", has_text="Not a dog").click()
            sync_api.expect(page.locator("#feedback-status")).to_have_text(
                "Saved: Not a dog. Thank you!")
        log.close()
        (row,) = read_corrections(store.folder).to_dict("records")
        assert (row["label"], row["answer_status"], row["answer_breed"]) == (
            "not_a_dog", "unknown", None)
        with running_app(create_app(trusted.hesitant, refresh_seconds=None)) as url:
            unsure = shown_answer(page, url, dog)
    assert sure[0] == "ok" and sure[1].startswith("Most likely: Papillon (")
    assert unknown == ("unknown", "This doesn't look like a dog breed this model knows")
    assert unsure[0] == "unsure" and unsure[1].startswith("Not sure — one of: ")
    assert "Papillon" in unsure[1] and unsure[1].endswith("(mixed breed?)")
