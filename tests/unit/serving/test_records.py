"""What the web demo keeps, against a real uvicorn serving the tiny registered classifier: a
prediction log row per answer, ``POST /api/feedback`` (ok, bad labels, bad uploads, a photo or
answer that do not match), ``--no-feedback``, and folders that cannot be written failing at
start-up."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from dogbreeds import hashing
from dogbreeds.data import feedback
from dogbreeds.data.feedback import FeedbackStore
from dogbreeds.serving import predlog
from dogbreeds.serving.predlog import PredictionLog
from dogbreeds.serving.records import RecordSettings
from dogbreeds.serving.web import FEEDBACK_OFF, create_app, serve
from support import tiny_models as tm
from support.tiny_registry import running_app

CHAMPION = "models:/dogbreeds@champion"


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    root = tmp_path_factory.mktemp("kept")
    log = PredictionLog(root / "logs" / "predictions.sqlite", retention_days=90)
    yield log, FeedbackStore.open(root / "feedback")
    log.close()


@pytest.fixture(scope="module")
def server(tiny_registry, kept):
    log, store = kept
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", tiny_registry.tracking_uri)
        with running_app(create_app(CHAMPION, refresh_seconds=None, prediction_log=log,
                                    feedback_store=store)) as url:
            yield url


def predict(url: str, photo: bytes) -> dict:
    response = requests.post(f"{url}/api/predict", files={"file": ("dog.jpg", photo)},
                             timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def judge(url: str, photo: bytes, **fields) -> requests.Response:
    return requests.post(f"{url}/api/feedback", files={"file": ("dog.jpg", photo)},
                         data=fields, timeout=60)


def corrections(store: FeedbackStore) -> dict[str, dict]:
    return {r["image_sha256"]: r for r in feedback.read_corrections(store.folder)
            .to_dict("records")}


# ----- the prediction log ----------------------------------------------------------------------

def test_every_answer_is_logged_with_its_hash_and_no_pixels(server, kept, tiny_registry):
    log, _ = kept
    photo = tiny_registry.photos["papillon"][0].read_bytes()
    body = predict(server, photo)
    logged = log.find(body["answer_id"])
    assert logged is not None
    assert (logged.model_uri, logged.model_version, logged.status, logged.breed) == (
        CHAMPION, "1", "ok", "papillon")
    assert logged.probability == pytest.approx(body["answer"]["probability"])
    assert logged.image_sha256 == hashing.digest(photo)
    assert 0 < logged.latency_ms < 60_000
    frame = predlog.read_predictions(log.path)
    assert body["answer_id"] in set(frame["answer_id"])
    health = requests.get(server + "/api/health", timeout=10).json()
    assert health["feedback"] is True and health["prediction_log"]["failures"] == 0


def test_a_refused_upload_is_not_logged(server, kept):
    log, _ = kept
    before = log.stats()["rows_written"]
    response = requests.post(f"{server}/api/predict", files={"file": ("x.jpg", b"text")},
                             timeout=60)
    assert response.status_code == 415
    assert log.stats()["rows_written"] == before


# ----- POST /api/feedback ----------------------------------------------------------------------

def test_the_page_gets_the_known_labels(server, tiny_registry):
    options = requests.get(server + "/api/feedback", timeout=10).json()
    assert options["enabled"] is True
    assert [o["label"] for o in options["labels"]] == [*tiny_registry.classes, "not_a_dog",
                                                      "mixed"]
    assert options["labels"][1]["name"] == "Golden retriever"
    assert options["labels"][-2]["name"] == "Not a dog"


def test_correct_stores_the_photo_under_the_answered_breed(server, kept, tiny_registry):
    _, store = kept
    photo = tiny_registry.photos["Chihuahua"][0].read_bytes()
    body = predict(server, photo)
    # a model_version sent by the client is ignored: the server's own log says who answered
    response = judge(server, photo, answer_id=body["answer_id"], verdict="correct",
                     model_version="99")
    assert response.status_code == 200, response.text
    saved = response.json()
    sha = hashing.digest(photo)
    assert saved == {"saved": True, "image_sha256": sha, "label": "Chihuahua",
                     "name": "Chihuahua", "verdict": "correct", "previous_label": None,
                     "corrected_at": saved["corrected_at"]}
    assert (store.folder / "Chihuahua" / f"{sha}.jpg").read_bytes() == photo
    row = corrections(store)[sha]
    assert (row["label"], row["verdict"], row["model_version"], row["answer_status"],
            row["answer_breed"]) == ("Chihuahua", "correct", "1", "ok", "Chihuahua")
    assert row["answered_at"] <= row["corrected_at"]


def test_wrong_then_a_later_correction_wins(server, kept, tiny_registry):
    _, store = kept
    photo = tiny_registry.photos["golden_retriever"][0].read_bytes()
    sha = hashing.digest(photo)
    answer_id = predict(server, photo)["answer_id"]
    first = judge(server, photo, answer_id=answer_id, verdict="wrong", label="mixed")
    assert first.status_code == 200 and first.json()["label"] == "mixed"
    second = judge(server, photo, answer_id=answer_id, verdict="wrong", label="not_a_dog")
    assert second.status_code == 200, second.text
    assert second.json()["previous_label"] == "mixed"
    assert [p.parent.name for p in store.folder.glob(f"*/{sha}.*")
            if not p.parent.name.startswith(".")] == ["not_a_dog"]
    row = corrections(store)[sha]
    assert (row["label"], row["answer_breed"], row["earlier_judgements"]) == (
        "not_a_dog", "golden_retriever", 1)


def test_two_concurrent_corrections_of_one_photo_end_consistent(server, kept):
    _, store = kept
    photo = tm.breed_jpeg("papillon", seed=99)
    sha = hashing.digest(photo)
    answer_id = predict(server, photo)["answer_id"]
    labels = ["Chihuahua", "mixed"] * 6
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda label: judge(server, photo, answer_id=answer_id,
                                                     verdict="wrong", label=label).status_code,
                                 labels))
    assert statuses == [200] * 12
    record = store.read_record(sha)
    assert [str(p.relative_to(store.folder)) for p in store.folder.glob(f"*/{sha}.*")
            if not p.parent.name.startswith(".")] == [record["file"]]
    assert len(record["history"]) == 11


@pytest.mark.parametrize("fields, status, message", [
    ({"verdict": "wrong", "label": "beagle"}, 400, "unknown label 'beagle'"),
    ({"verdict": "wrong", "label": "../../etc/passwd"}, 400, "unknown label '../../etc/passwd'"),
    ({"verdict": "wrong", "label": ".records"}, 400, "unknown label '.records'"),
    ({"verdict": "wrong"}, 400, "verdict=wrong needs the right label"),
    ({"verdict": "wrong", "label": "papillon"}, 400, "send verdict=correct"),
    ({"verdict": "correct", "label": "mixed"}, 400, "send verdict=wrong"),
    ({"verdict": "yes"}, 400, "verdict must be 'correct' or 'wrong'"),
    ({}, 400, "verdict must be 'correct' or 'wrong'"),
])
def test_a_bad_judgement_is_refused_and_nothing_is_stored(server, kept, tiny_registry, fields,
                                                          status, message):
    _, store = kept
    photo = tiny_registry.photos["papillon"][1].read_bytes()
    answer_id = predict(server, photo)["answer_id"]
    response = judge(server, photo, answer_id=answer_id, **fields)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert hashing.digest(photo) not in corrections(store)
    assert not list(store.folder.glob("*/*passwd*")) and not (store.folder / "etc").exists()


def test_the_answer_must_exist_and_be_about_this_photo(server, tiny_registry):
    photo = tiny_registry.photos["papillon"][0].read_bytes()
    answer_id = predict(server, photo)["answer_id"]
    missing = judge(server, photo, verdict="correct")
    assert missing.status_code == 400 and "no answer_id" in missing.json()["error"]
    unknown = judge(server, photo, answer_id="f" * 32, verdict="correct")
    assert unknown.status_code == 404 and "unknown answer_id" in unknown.json()["error"]
    other = judge(server, tiny_registry.photos["Chihuahua"][1].read_bytes(),
                  answer_id=answer_id, verdict="correct")
    assert other.status_code == 409
    assert other.json()["error"] == "this photo is not the one answered: send the same photo"


@pytest.mark.parametrize("data, status, message", [
    (b"\xff\xd8\xff" + b"\x00" * (15 * 1024 * 1024), 413, "upload too large: the limit is 15 MB"),
    (b"just text, not a photo", 415, "not an image"),
    (b"", 400, "empty upload"),
])
def test_the_upload_checks_of_predictions_apply(server, tiny_registry, data, status, message):
    response = judge(server, data, answer_id="0" * 32, verdict="correct")
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    photo = tiny_registry.photos["papillon"][0].read_bytes()  # the server keeps serving
    assert judge(server, photo, answer_id=predict(server, photo)["answer_id"],
                 verdict="correct").status_code == 200


def test_feedback_off_refuses_and_still_logs(tiny_registry, tmp_path):
    log = PredictionLog(tmp_path / "p.sqlite", retention_days=90)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", tiny_registry.tracking_uri)
            with running_app(create_app(CHAMPION, refresh_seconds=None,
                                        prediction_log=log)) as url:
                photo = tiny_registry.photos["papillon"][0].read_bytes()
                answer_id = predict(url, photo)["answer_id"]
                response = judge(url, photo, answer_id=answer_id, verdict="correct")
                options = requests.get(url + "/api/feedback", timeout=10).json()
        assert response.status_code == 403 and response.json()["error"] == FEEDBACK_OFF
        assert options == {"enabled": False, "labels": [], "message": FEEDBACK_OFF}
        assert log.find(answer_id) is not None
    finally:
        log.close()
    with pytest.raises(ValueError, match="feedback needs the prediction log"):
        create_app(CHAMPION, feedback_store=FeedbackStore.open(tmp_path / "fb"))


# ----- start-up ------------------------------------------------------------------------------

def records(feedback_dir, log_path) -> RecordSettings:
    return RecordSettings(feedback_dir=feedback_dir, prediction_log=log_path,
                          log_retention_days=90)


def test_an_uncreatable_feedback_folder_stops_serve_before_the_model_loads(tmp_path, capsys):
    (tmp_path / "data").write_text("a file, not a folder")
    with pytest.raises(SystemExit) as stopped:
        # no such model either: the folder is checked first, so its error is the one shown
        serve("models:/nothing@champion", port=1,
              records=records(tmp_path / "data" / "feedback", tmp_path / "p.sqlite"))
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"dogbreeds serve: feedback folder {tmp_path}/data/feedback cannot be created" in err
    assert "--no-feedback" in err and "no model" not in err


def test_a_read_only_feedback_folder_stops_serve_and_no_feedback_does_not():
    from support import users

    with users.shared_tmp() as base:
        (base / "logs").mkdir(mode=0o777)
        (base / "logs").chmod(0o777)
        folder = base / "feedback"
        FeedbackStore.open(folder)
        users.make_read_only(folder)
        settings = records(folder, base / "logs" / "p.sqlite")
        outcome, code, err = users.unprivileged(serve, "models:/nothing@champion", "127.0.0.1",
                                                1, records=settings)
        assert (outcome, code) == ("exit", 2), err
        assert f"dogbreeds serve: feedback folder {folder} is not writable (Permission " \
               "denied)" in err
        outcome, code, err = users.unprivileged(serve, "models:/nothing@champion", "127.0.0.1",
                                                1, records=settings, with_feedback=False)
        assert (outcome, code) == ("exit", 2), err
        assert "no model at models:/nothing@champion" in err  # it got past the folders
