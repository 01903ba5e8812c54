"""``dogbreeds serve``: a small web demo — upload a dog photo, see its likely breeds.

One FastAPI app (:func:`create_app`) with:

- ``GET /``: a single offline page (inline CSS and JS, no CDN) with upload and drag-and-drop;
- ``POST /api/predict``: a multipart upload (any field name, ``file`` by convention) or the raw
  image as the request body → ``{"predictions": [{"breed", "label", "probability"}…],
  "answer": {"status", "breed", "label", "probability", "candidates", "novelty", "message"},
  "model": {...}}`` (``breed`` is the raw class label, ``label`` its human-readable form;
  ``answer`` is the model's ok / unsure / unknown verdict and the sentence the page shows,
  the same as ``dogbreeds predict`` prints);
- ``GET /api/health``: whether the model is loaded, and which one;
- ``POST /api/reload``: load the model again now (e.g. after ``dogbreeds promote``);
- ``POST /api/feedback``: staff say an answer was correct, or wrong and what the photo shows
  (multipart: the photo as ``file``, ``answer_id``, ``verdict`` = correct|wrong, ``label``);
  ``GET /api/feedback`` tells the page whether it is on and which labels it takes.

**What is kept** (:func:`serve`; a library caller passes them to :func:`create_app`): every
answer goes to the prediction log (:mod:`dogbreeds.serving.predlog`) under a random
``answer_id``, returned with the answer. A judgement names that ``answer_id`` and re-sends the
photo: the server takes the model version and the answer from its own log (a client cannot
claim another), checks that the photo is the one answered (same SHA-256, so it also passed the
decoder then) and stores it in the feedback folder (:mod:`dogbreeds.data.feedback`).

**Picking up a new champion** is the model holder's job (:mod:`dogbreeds.serving.holder`): an
alias URI is re-resolved by requests every ``refresh_seconds`` (30 s by default) and a moved
alias swapped in without dropping requests in flight.

**Safety** is the upload checks' job (:mod:`dogbreeds.serving.uploads`): size caps while
reading (413), the image header checked before anything decodes it (413 for a decompression
bomb, 415 for non-images, 400 for empty bodies); undecodable images get 400. Every error is
JSON ``{"error": message}`` and the server keeps serving.

**Concurrency.** Each request decodes its photo in the thread pool, in parallel with the
model; photos that arrive together are then predicted in one model call by the batcher
(:mod:`dogbreeds.serving.batching`: at most ``max_batch_size`` photos, waiting at most
``max_wait_ms`` for more, never when no other request is on its way). The event loop stays free
and a bad upload fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from dogbreeds import hashing
from dogbreeds.data import feedback, photos
from dogbreeds.serving.answers import display_name, labelled_answer
from dogbreeds.serving.batching import Batcher, BatchSettings
from dogbreeds.serving.holder import DEFAULT_TOP_K, REFRESH_SECONDS, ModelHolder, labelled
from dogbreeds.serving.predict import ModelLoadError, decode_error, plain_answer
from dogbreeds.serving.predlog import PredictionLog, PredictionLogError
from dogbreeds.serving.records import RecordSettings, judged_answer, log_answer, open_records
from dogbreeds.serving.uploads import (
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    ApiError,
    check_image_header,
    read_upload,
    read_upload_form,
)

log = logging.getLogger(__name__)

MAX_TOP_K = 20
# Without settings (a library caller, the tests): one photo per model call, no waiting.
UNBATCHED = BatchSettings(max_batch_size=1, max_wait_ms=0.0)
FEEDBACK_OFF = "feedback is turned off on this server (dogbreeds serve --no-feedback)"


# The file picker's filter: MIME types and extensions of what the decoder reads.
ACCEPT = ("image/jpeg,image/png,image/webp,image/heic,image/heif,image/gif,image/bmp,"
          ".jpg,.jpeg,.png,.webp,.heic,.heif,.gif,.bmp")


def index_html(max_upload_bytes: int = MAX_UPLOAD_BYTES) -> str:
    """The demo page (``static/index.html``, shipped as package data), naming the formats the
    decoder really reads and the upload limit."""
    page = resources.files("dogbreeds.serving") / "static" / "index.html"
    return (page.read_text(encoding="utf-8")
            .replace("__FORMATS__", photos.FORMAT_NAMES)
            .replace("__ACCEPT__", ACCEPT)
            .replace("__MAX_MB__", f"{max_upload_bytes / (1024 * 1024):g}"))


def create_app(model_uri: str | None = None, *, holder: ModelHolder | None = None,
               refresh_seconds: float | None = REFRESH_SECONDS,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
               batching: BatchSettings = UNBATCHED, prediction_log: PredictionLog | None = None,
               feedback_store: feedback.FeedbackStore | None = None) -> FastAPI:
    """The web app serving ``model_uri`` (or an existing ``holder``; loaded at start-up);
    ``batching`` bounds its dynamic batches (``serve`` in params.yaml for ``dogbreeds serve``).

    Answers go to ``prediction_log`` when given; judgements to ``feedback_store`` (opened with
    :meth:`~dogbreeds.data.feedback.FeedbackStore.open`; it needs the log), else feedback is
    off. The caller closes the log.
    """
    if holder is None:
        if model_uri is None:
            raise ValueError("create_app needs a model_uri or a holder")
        holder = ModelHolder(model_uri, refresh_seconds=refresh_seconds)
    if feedback_store is not None and prediction_log is None:
        raise ValueError("feedback needs the prediction log: it holds the answers judged")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not holder.loaded:
            await run_in_threadpool(holder.load)
        yield
        batcher.close()

    app = FastAPI(title="dogbreeds", summary="Which dog breed is in this photo?",
                  lifespan=lifespan)
    app.state.holder = holder
    app.state.batcher = batcher = Batcher(batching, finish=batch_answers)
    page = index_html(max_upload_bytes)

    async def current_scorer() -> tuple[Any, dict[str, Any]]:
        """The holder's scorer; through the thread pool only when an alias check is due
        (a registry lookup), else at once."""
        if holder.check_is_quick():
            return holder.scorer()
        return await run_in_threadpool(holder.scorer)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok" if holder.loaded else "no model", "model_loaded": holder.loaded,
                "model": holder.info, "runtime": holder.runtime, "batching": batcher.stats(),
                "prediction_log": prediction_log.stats() if prediction_log else None,
                "feedback": feedback_store is not None}

    @app.post("/api/reload")
    async def reload() -> JSONResponse:
        previous = holder.info
        try:
            current = await run_in_threadpool(holder.load)
        except ModelLoadError as exc:
            return JSONResponse({"error": str(exc), "model": holder.info}, status_code=503)
        return JSONResponse({"reloaded": True, "previous": previous, "model": current})

    @app.post("/api/predict")
    async def predict(request: Request, top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
        started = time.perf_counter()
        if not 1 <= top_k <= MAX_TOP_K:
            raise ApiError(400, f"top_k must be between 1 and {MAX_TOP_K}")
        data = await read_upload(request, max_upload_bytes)
        fmt, width, height = check_image_header(data, max_pixels)
        scorer, info = await current_scorer()
        with batcher.ticket() as ticket:
            try:  # hashed for the log in the same trip to the thread pool
                (pixels,), sha = await run_in_threadpool(decode_and_hash, scorer, data,
                                                         prediction_log is not None)
            except ValueError as exc:
                raise ApiError(400, f"could not decode the image: {decode_error(exc)}") from exc
            answer = ticket.submit(scorer, pixels, top_k)
        predictions, plain, page_answer = await asyncio.wrap_future(answer)
        body = {"predictions": predictions, "answer": page_answer,
                "model": info, "image": {"format": fmt, "width": width, "height": height}}
        if prediction_log is not None:
            latency_ms = 1000 * (time.perf_counter() - started)
            body["answer_id"] = await log_answer(prediction_log, sha, plain, info, latency_ms)
        return body

    @app.get("/api/feedback")
    async def feedback_options() -> dict[str, Any]:
        if feedback_store is None:
            return {"enabled": False, "labels": [], "message": FEEDBACK_OFF}
        scorer, _ = await current_scorer()
        return {"enabled": True, "labels": [{"label": label, "name": display_name(label)}
                                            for label in feedback.known_labels(scorer.classes)]}

    @app.post("/api/feedback")
    async def judge(request: Request) -> dict[str, Any]:
        if feedback_store is None or prediction_log is None:
            raise ApiError(403, FEEDBACK_OFF)
        data, fields = await read_upload_form(request, max_upload_bytes)
        fmt, _, _ = check_image_header(data, max_pixels)
        answer = await run_in_threadpool(judged_answer, prediction_log, data,
                                         fields.get("answer_id", ""))
        scorer, _ = await current_scorer()
        try:
            label = feedback.resolve_label(fields.get("verdict", ""), fields.get("label"),
                                           answer, scorer.classes)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        try:
            record = await run_in_threadpool(feedback_store.save, data, fmt, label,
                                             fields["verdict"], answer)
        except (OSError, feedback.FeedbackError) as exc:
            log.exception("could not save feedback on answer %s", fields.get("answer_id"))
            raise ApiError(503, "could not save the feedback: the server's log says why") \
                from exc
        earlier = record["history"][-1]["label"] if record["history"] else None
        return {"saved": True, "image_sha256": record["image_sha256"], "label": label,
                "name": display_name(label), "verdict": record["verdict"],
                "previous_label": earlier, "corrected_at": record["corrected_at"]}

    return app


def batch_answers(scorer: Any, rows: np.ndarray, top_ks: list[int]
                  ) -> list[tuple[list[dict], dict, dict]]:
    """The batcher's ``finish``: one answer frame for the whole batch (at the largest top-k
    asked), then per request its labelled top-k, its plain answer (for the log) and the
    answer the page shows."""
    frame = scorer.answer_rows(rows, max(top_ks))
    out = []
    for said, top_k in zip(frame.to_dict("records"), top_ks, strict=True):
        plain = plain_answer(said)
        out.append((labelled(said["top_k"][:top_k]), plain, labelled_answer(plain)))
    return out


def decode_and_hash(scorer: Any, data: bytes, hashed: bool) -> tuple[Any, str | None]:
    """The model input of one upload, and (``hashed``) its SHA-256 for the prediction log."""
    return scorer.preprocess([data]), hashing.digest(data) if hashed else None


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (a no-op elsewhere).

    Requests decode in a pool of ~40 threads and glibc gives busy threads arenas of their own,
    which keep the memory they once held: in the load test (benchmarks/serving.py, 4,000
    requests from 32 clients, RSS after each 1,000) the server kept growing: 1,021 → 1,071 →
    1,074 → 1,117 → 1,133 MiB; with two arenas it levels off after the first 1,000: 974 →
    1,056 → 1,050 → 1,066 → 1,065 MiB. Same effect as ``MALLOC_ARENA_MAX=2``.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).mallopt(-8, arenas)  # -8: M_ARENA_MAX


def serve(model_uri: str, host: str = "127.0.0.1", port: int = 8000, *,
          refresh_seconds: float | None = REFRESH_SECONDS,
          batching: BatchSettings = UNBATCHED, runtime: str = "pyfunc",
          records: RecordSettings | None = None, with_feedback: bool = True) -> None:
    """Open the prediction log and feedback folder (``records``; none without), load the
    model, then serve the demo with uvicorn until interrupted.

    Exits with status 2 and a clear message when the log or the feedback folder cannot be
    written (checked before anything else) or the model cannot be loaded.
    """
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    limit_malloc_arenas()
    prediction_log, store = None, None
    try:
        if records is not None:
            prediction_log, store = open_records(records, with_feedback)
        holder = ModelHolder(model_uri, refresh_seconds=refresh_seconds, runtime=runtime)
        info = holder.load()
    except (ModelLoadError, PredictionLogError, feedback.FeedbackError) as exc:
        print(f"dogbreeds serve: {exc}", file=sys.stderr)
        if prediction_log is not None:
            prediction_log.close()
        raise SystemExit(2) from None
    kept = (f"; answers logged to {prediction_log.path}, feedback "
            f"{f'saved in {store.folder}' if store else 'off'}" if prediction_log else "")
    print(f"dogbreeds serve: model {info}; batches of up to {batching.max_batch_size} photos "
          f"(waiting at most {batching.max_wait_ms:g} ms){kept}; open http://{host}:{port}/",
          flush=True)
    try:
        uvicorn.run(create_app(holder=holder, batching=batching, prediction_log=prediction_log,
                               feedback_store=store), host=host, port=port)
    finally:
        if prediction_log is not None:
            prediction_log.close()
