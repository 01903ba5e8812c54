"""What the web demo keeps: the prediction log and the feedback folder.

:func:`open_records` opens both at start-up, so a folder that cannot be written fails then
(not at the first click); :func:`log_answer` logs a served answer under a random
``answer_id``; :func:`judged_answer` finds the answer a judgement names in the server's own
log (model version and answer are never taken from the client) and checks that the photo sent
with it is the one that was answered (same SHA-256: it also passed the decoder then).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dogbreeds import hashing
from dogbreeds.data import feedback
from dogbreeds.serving.predlog import Prediction, PredictionLog
from dogbreeds.serving.uploads import ApiError
from dogbreeds.settings import SettingsError, from_section, section


@dataclass(frozen=True)
class RecordSettings:
    """``serve`` in params.yaml: where the demo keeps what it answers and what staff say."""

    feedback_dir: Path
    prediction_log: Path
    log_retention_days: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RecordSettings:
        return from_section(cls, section(params, "serve"), "serve").checked()

    def checked(self) -> RecordSettings:
        if self.log_retention_days < 1:
            raise SettingsError("serve.log_retention_days must be at least 1, got "
                                f"{self.log_retention_days}")
        return self


def open_records(records: RecordSettings, with_feedback: bool
                 ) -> tuple[PredictionLog, feedback.FeedbackStore | None]:
    """The prediction log and (``with_feedback``) the feedback store, both checked writable.

    Raises:
        PredictionLogError, feedback.FeedbackError: naming the path and what to do.
    """
    prediction_log = PredictionLog(records.prediction_log, records.log_retention_days)
    try:
        store = feedback.FeedbackStore.open(records.feedback_dir) if with_feedback else None
    except feedback.FeedbackError:
        prediction_log.close()
        raise
    return prediction_log, store


def logged_row(data_sha256: str, answer: dict[str, Any], info: dict[str, Any],
               latency_ms: float) -> Prediction:
    """The prediction log's row for one served answer, under a new random ``answer_id``."""
    return Prediction(
        answer_id=uuid.uuid4().hex, time=datetime.now(UTC), model_uri=info.get("uri"),
        model_version=info.get("version"), status=answer["status"], breed=answer["breed"],
        probability=answer["probability"], novelty=answer["novelty"], latency_ms=latency_ms,
        image_sha256=data_sha256)


async def log_answer(prediction_log: PredictionLog, data_sha256: str, answer: dict[str, Any],
                     info: dict[str, Any], latency_ms: float) -> str | None:
    """Log one served answer and wait for its commit (the writer thread's, shared with other
    requests: nothing blocks meanwhile); its ``answer_id``, or None when the log could not
    take it (so the page does not offer to judge it)."""
    row = logged_row(data_sha256, answer, info, latency_ms)
    logged = await asyncio.wrap_future(prediction_log.submit(row))
    return row.answer_id if logged else None


def judged_answer(prediction_log: PredictionLog, data: bytes, answer_id: str
                  ) -> feedback.Answer:
    """The logged answer a judgement is about, checked against the photo sent with it.

    Raises:
        ApiError: 400 without an ``answer_id``; 404 for an id the log does not hold; 409 when
            the photo is not the one that was answered.
    """
    if not answer_id:
        raise ApiError(400, "no answer_id: send the answer_id /api/predict returned")
    logged = prediction_log.find(answer_id.strip())
    if logged is None:
        raise ApiError(404, f"unknown answer_id {answer_id[:64]!r}: ask /api/predict again")
    if hashing.digest(data) != logged.image_sha256:
        raise ApiError(409, "this photo is not the one answered: send the same photo")
    return feedback.Answer(model_uri=logged.model_uri, model_version=logged.model_version,
                           status=logged.status, breed=logged.breed,
                           probability=logged.probability, novelty=logged.novelty,
                           answered_at=logged.time)
