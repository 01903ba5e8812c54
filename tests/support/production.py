"""Production as ``dogbreeds monitor`` sees it, made by the tests: a registered version whose run
carries a baseline (real MLflow SQLite registry), a prediction log (real SQLite) and a
feedback folder of correction records.

The log and the records are written by the server's own writers
(:class:`dogbreeds.serving.predlog.PredictionLog`, :class:`dogbreeds.data.feedback.FeedbackStore`),
through :func:`write_prediction_log` and :func:`write_corrections`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

CLASSES = ["beagle", "golden_retriever", "kelpie", "papillon"]


def answers(n: int, seed: int, *, confidence: tuple[float, float] = (9.0, 1.2),
            unknown: float = 0.05, unsure: float = 0.08,
            mix: Iterable[float] = (0.25, 0.25, 0.25, 0.25)) -> pd.DataFrame:
    """``n`` answers like a good model's on dog photos: probabilities ~ Beta(*confidence),
    ``unknown``/``unsure`` shares, breeds drawn with the shares ``mix`` over :data:`CLASSES`."""
    rng = np.random.default_rng(seed)
    status = rng.choice(["ok", "unsure", "unknown"], size=n,
                        p=[1.0 - unknown - unsure, unsure, unknown])
    breed = rng.choice(CLASSES, size=n, p=list(mix))
    return pd.DataFrame({
        "status": status,
        "breed": [None if s == "unknown" else b for s, b in zip(status, breed, strict=True)],
        "probability": rng.beta(*confidence, size=n),
        "novelty": np.where(status == "unknown", rng.uniform(1.1, 3.0, n),
                            rng.uniform(0.1, 0.9, n)),
    })


def baseline_answers(n: int = 240, seed: int = 0, accuracy: float = 0.9) -> pd.DataFrame:
    """A baseline (test answers + true breed): the answered breed is right ``accuracy`` of
    the time."""
    frame = answers(n, seed)
    rng = np.random.default_rng(seed + 1)
    right = rng.random(n) < accuracy
    named = [b if isinstance(b, str) else None for b in frame["breed"]]  # unknown: no breed
    other = [CLASSES[(CLASSES.index(b) + 1) % len(CLASSES)] if b else CLASSES[0] for b in named]
    frame["true_breed"] = [b if (ok and b) else o
                           for b, o, ok in zip(named, other, right, strict=True)]
    return frame


def register_with_baseline(root: Path, name: str, baseline: pd.DataFrame | None,
                           experiment: str = "dogbreeds") -> str:
    """A new version of ``name`` whose run logged ``baseline`` (None: no baseline, like a
    version registered before baselines existed); alias champion. Returns the version."""
    import mlflow
    from mlflow import MlflowClient

    from dogbreeds.models import baseline as contract
    from dogbreeds.tracking import store

    store.configure(root, experiment)
    client = MlflowClient()
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        client.create_registered_model(name)
    with mlflow.start_run(run_name="evaluate") as run:
        if baseline is not None:
            contract.log_baseline(contract.write_baseline(baseline, root / contract.FILE_NAME))
    version = client.create_model_version(name, source=f"runs:/{run.info.run_id}/classifier",
                                          run_id=run.info.run_id).version
    client.set_registered_model_alias(name, "champion", str(version))
    return str(version)


def photo_bytes(tag: str) -> bytes:
    """A small real PNG that differs for every ``tag`` (so its SHA-256 does too)."""
    from PIL import Image

    seed = int(hashlib.sha256(tag.encode()).hexdigest()[:8], 16)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def log_rows(frame: pd.DataFrame, version: str, end: datetime, span: timedelta,
             name: str = "dogbreeds") -> list[dict]:
    """Prediction-log rows for the answers in ``frame``, spread evenly over ``span`` up to
    ``end``, answered by ``version``; each row's ``photo`` is the image it answered."""
    from dogbreeds import hashing

    n = len(frame)
    rows = []
    for i, answer in enumerate(frame.to_dict("records")):
        time = end - span * (n - i) / (n + 1)
        photo = photo_bytes(f"{version}-{time}-{i}")
        rows.append({"time": time, "model_uri": f"models:/{name}@champion",
                     "model_version": version, "status": answer["status"],
                     "breed": answer["breed"] if isinstance(answer["breed"], str) else None,
                     "probability": float(answer["probability"]),
                     "novelty": float(answer["novelty"]), "latency_ms": 20.0,
                     "image_sha256": hashing.digest(photo), "photo": photo})
    return rows


def write_prediction_log(path: Path, rows: Iterable[Mapping]) -> Path:
    """Append ``rows`` (contract 2's columns; ``time`` a tz-aware datetime) to the log, through
    the server's own writer (:class:`dogbreeds.serving.predlog.PredictionLog`)."""
    from dogbreeds.serving.predlog import Prediction, PredictionLog

    log = PredictionLog(path, retention_days=3650)
    try:
        for i, row in enumerate(rows):
            log.append(Prediction(
                answer_id=f"{row['image_sha256'][:16]}-{i}", time=row["time"],
                model_uri=row["model_uri"], model_version=row["model_version"],
                status=row["status"], breed=row["breed"], probability=row["probability"],
                novelty=row["novelty"], latency_ms=row["latency_ms"],
                image_sha256=row["image_sha256"]))
    finally:
        log.close()
    return path


def write_corrections(folder: Path, rows: Iterable[Mapping], verdicts: Iterable[str],
                      corrected_after: timedelta = timedelta(minutes=1)) -> None:
    """Judge each logged prediction in ``rows`` through the feedback store the demo uses
    (``correct``: the staff confirmed the answer; ``wrong``: they picked ``mixed``)."""
    from dogbreeds.data.feedback import Answer, FeedbackStore

    store = FeedbackStore.open(folder)
    for row, verdict in zip(rows, verdicts, strict=True):
        label = row["breed"] if verdict == "correct" else "mixed"
        answer = Answer(model_uri=row["model_uri"], model_version=row["model_version"],
                        status=row["status"], breed=row["breed"],
                        probability=row["probability"], novelty=row["novelty"],
                        answered_at=row["time"])
        store.save(row["photo"], "PNG", label, verdict, answer,
                   now=row["time"] + corrected_after)
