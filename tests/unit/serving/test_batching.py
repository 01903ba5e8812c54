"""Dynamic batching: photos arriving together share one model call; a lone one never waits;
a bad one fails alone. The batcher alone (a real numpy scorer), then through the web demo."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from dogbreeds.serving.batching import Batcher, BatchSettings
from dogbreeds.serving.web import create_app
from dogbreeds.settings import SettingsError
from support.tiny_registry import running_app


class SlowScorer:
    """Softmax of each photo's mean colour; each call takes ``seconds`` (a model's cost)."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.batches: list[int] = []

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        self.batches.append(len(batch))
        logits = batch.reshape(len(batch), -1, 3).mean(axis=1)
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def pixels(value: float) -> np.ndarray:
    return np.full((4, 4, 3), value, np.float32) * np.array([1, 0, 0], np.float32)


def test_a_lone_request_does_not_wait():
    batcher = Batcher(BatchSettings(max_batch_size=32, max_wait_ms=2000))
    scorer = SlowScorer()
    try:
        start = time.perf_counter()
        with batcher.ticket() as ticket:
            future = ticket.submit(scorer, pixels(1.0))
        row = future.result(timeout=5)
        assert time.perf_counter() - start < 0.5  # not the 2 s max wait
        assert row.shape == (3,) and np.argmax(row) == 0
    finally:
        batcher.close()


def test_requests_that_arrive_together_share_a_call():
    batcher = Batcher(BatchSettings(max_batch_size=8, max_wait_ms=500))
    scorer = SlowScorer(seconds=0.05)
    try:
        tickets = [batcher.ticket() for _ in range(20)]  # 20 requests decoding at once
        futures = [t.submit(scorer, pixels(i)) for i, t in enumerate(tickets)]
        rows = [f.result(timeout=10) for f in futures]
    finally:
        batcher.close()
    assert sum(scorer.batches) == 20 and max(scorer.batches) <= 8
    assert len(scorer.batches) <= 4  # 20 photos in batches of up to 8, not 20 calls
    np.testing.assert_allclose(rows[5], SlowScorer().probabilities(pixels(5)[None])[0])


def test_a_request_that_never_submits_does_not_hold_the_others():
    batcher = Batcher(BatchSettings(max_batch_size=8, max_wait_ms=5000))
    scorer = SlowScorer()
    try:
        bad = batcher.ticket()        # decoding... then its photo turns out bad
        with batcher.ticket() as good:
            future = good.submit(scorer, pixels(1.0))
        timer = threading.Timer(0.2, bad.close)
        timer.start()
        start = time.perf_counter()
        future.result(timeout=5)
        assert time.perf_counter() - start < 2  # released by close(), not the 5 s bound
    finally:
        batcher.close()


def test_a_failing_model_call_fails_its_batch_and_the_next_one_runs():
    class Broken(SlowScorer):
        def probabilities(self, batch):
            raise RuntimeError("model exploded")

    batcher = Batcher(BatchSettings(max_batch_size=4, max_wait_ms=0))
    try:
        with batcher.ticket() as ticket:
            failed = ticket.submit(Broken(), pixels(1.0))
        with pytest.raises(RuntimeError, match="model exploded"):
            failed.result(timeout=5)
        with batcher.ticket() as ticket:
            assert ticket.submit(SlowScorer(), pixels(1.0)).result(timeout=5).shape == (3,)
    finally:
        batcher.close()


def test_finish_makes_each_batch_into_per_request_results_once():
    """A batcher with ``finish`` calls it once per model call, with every request's extra in
    queue order, and each request gets its own result back."""
    calls: list[list[int]] = []

    def finish(scorer, rows, extras):
        calls.append(list(extras))
        return [(extra, int(np.argmax(row))) for row, extra in zip(rows, extras, strict=True)]

    batcher = Batcher(BatchSettings(max_batch_size=8, max_wait_ms=500), finish=finish)
    scorer = SlowScorer(seconds=0.05)
    try:
        tickets = [batcher.ticket() for _ in range(12)]
        futures = [t.submit(scorer, pixels(1.0), extra=i) for i, t in enumerate(tickets)]
        results = [f.result(timeout=10) for f in futures]
    finally:
        batcher.close()
    assert results == [(i, 0) for i in range(12)]
    assert len(calls) == len(scorer.batches) < 12  # once per model call, not per photo
    assert [extra for call in calls for extra in call] == list(range(12))


def test_settings_are_checked():
    with pytest.raises(SettingsError, match="serve.max_batch_size"):
        BatchSettings.from_params({"serve": {"max_batch_size": 0, "max_wait_ms": 5}})
    with pytest.raises(SettingsError, match="missing serve.max_wait_ms"):
        BatchSettings.from_params({"serve": {"max_batch_size": 4}})


# ----- through the web demo ----------------------------------------------------------------

@pytest.fixture(scope="module")
def batched_server(tiny_registry):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", tiny_registry.tracking_uri)
        mp.chdir(tiny_registry.root)
        app = create_app("models:/dogbreeds@champion", refresh_seconds=None,
                         batching=BatchSettings(max_batch_size=16, max_wait_ms=20))
        with running_app(app) as url:
            yield url


def batching_stats(url: str) -> dict:
    return requests.get(f"{url}/api/health", timeout=10).json()["batching"]


def post(url: str, data: bytes) -> requests.Response:
    return requests.post(f"{url}/api/predict", files={"file": ("dog.jpg", data)}, timeout=60)


def test_lone_request_is_answered(batched_server, tiny_registry):
    photo = tiny_registry.photos["papillon"][0].read_bytes()
    before = batching_stats(batched_server)
    response = post(batched_server, photo)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["breed"] == "papillon"
    after = batching_stats(batched_server)
    assert after["model_calls"] == before["model_calls"] + 1
    assert after["photos"] == before["photos"] + 1


def test_concurrent_requests_are_batched_and_a_bad_one_fails_alone(batched_server,
                                                                    tiny_registry):
    jobs = [(breed, path.read_bytes()) for breed, paths in tiny_registry.photos.items()
            for path in paths]
    jobs = (jobs * 48)[:48]
    bad = {7: b"\xff\xd8\xff\xe0" + b"\x00" * 200, 23: b"GIF89a" + b"\x01" * 10}
    truncated = jobs[31][1][: len(jobs[31][1]) * 2 // 3]  # header fine, pixels cut: a 400
    uploads = [bad.get(i, truncated if i == 31 else data) for i, (_, data) in enumerate(jobs)]
    before = batching_stats(batched_server)
    with ThreadPoolExecutor(max_workers=48) as pool:
        responses = list(pool.map(lambda data: post(batched_server, data), uploads))
    after = batching_stats(batched_server)
    for i, ((breed, _), response) in enumerate(zip(jobs, responses, strict=True)):
        if i in bad or i == 31:
            assert 400 <= response.status_code < 500 and response.json()["error"]
        else:
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["breed"] == breed
    calls = after["model_calls"] - before["model_calls"]
    photos = after["photos"] - before["photos"]
    assert photos == 45
    assert calls < photos  # batched: fewer model calls than photos
    assert after["largest_batch"] > 1


def test_requests_batched_together_keep_their_own_top_k_and_answer(batched_server,
                                                                    tiny_registry):
    """The answers of one batch are built together (at the largest top-k asked); each request
    still gets its own top-k, the same ranking and answer as when it comes alone."""
    photo = tiny_registry.photos["papillon"][0].read_bytes()

    def ask(top_k: int) -> dict:
        response = requests.post(f"{batched_server}/api/predict", params={"top_k": top_k},
                                 files={"file": ("dog.jpg", photo)}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    alone = ask(3)
    before = batching_stats(batched_server)
    with ThreadPoolExecutor(max_workers=24) as pool:
        together = list(pool.map(ask, [1 + i % 3 for i in range(24)]))
    after = batching_stats(batched_server)
    assert after["model_calls"] - before["model_calls"] < 24  # they did share calls
    for i, body in enumerate(together):
        top_k = 1 + i % 3
        assert [p["breed"] for p in body["predictions"]] == \
            [p["breed"] for p in alone["predictions"]][:top_k]
        np.testing.assert_allclose([p["probability"] for p in body["predictions"]],
                                   [p["probability"] for p in alone["predictions"]][:top_k],
                                   atol=1e-5)
        assert body["answer"] == alone["answer"]
