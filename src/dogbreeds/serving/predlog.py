"""The prediction log: every answer the web demo serves, one SQLite row (no pixels).

``serve.prediction_log`` (``logs/predictions.sqlite``) holds table ``predictions``: ``time``
(UTC, ISO 8601 text that sorts as it reads), ``answer_id`` (what the page sends back with a
correction), ``model_uri``, ``model_version``, ``status``, ``breed`` (top-1, null when
unknown), ``probability``, ``novelty``, ``latency_ms`` (request received → answer ready) and
``image_sha256`` (of the uploaded bytes, the name the feedback folder gives the same photo).
Only answers are logged: a refused upload (4xx) never reached the model.

**Concurrency and durability.** WAL journal: readers (``dogbreeds monitor``, the sqlite3
shell) never block the writer, and several server processes may share one log
(``busy_timeout``). One writer thread per process commits the rows (:meth:`PredictionLog.
submit`): it takes every row queued since its last commit into one short transaction (group
commit), so concurrent requests share a commit instead of queueing on SQLite's write lock, and
neither the event loop, the thread pool nor the batcher's thread ever waits on SQLite. A
request awaits its row's commit before it answers, so an answer a client received is in the
log: a server killed with SIGKILL loses none (``synchronous=NORMAL``: committed pages sit in
the WAL file, which only a power cut before the next checkpoint could lose; the database stays
consistent either way).

**Retention:** rows older than ``serve.log_retention_days`` are deleted when the log opens and
then every hour by a daemon thread.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from concurrent.futures import Future
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

# The columns of read_predictions (the contract with `dogbreeds monitor`), then answer_id.
COLUMNS = ["time", "model_uri", "model_version", "status", "breed", "probability", "novelty",
           "latency_ms", "image_sha256"]
PURGE_EVERY_SECONDS = 3600.0
BUSY_TIMEOUT_MS = 10_000
MAX_ROWS_PER_COMMIT = 512
SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    answer_id TEXT NOT NULL UNIQUE,
    model_uri TEXT,
    model_version TEXT,
    status TEXT NOT NULL,
    breed TEXT,
    probability REAL,
    novelty REAL,
    latency_ms REAL,
    image_sha256 TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time);
"""


class PredictionLogError(Exception):
    """The prediction log cannot be opened or created (the message names the file)."""


@dataclass(frozen=True)
class Prediction:
    """One served answer, as logged."""

    answer_id: str
    time: datetime
    model_uri: str | None
    model_version: str | None
    status: str
    breed: str | None
    probability: float | None
    novelty: float | None
    latency_ms: float
    image_sha256: str


_FIELDS = [f.name for f in fields(Prediction)]
_INSERT = (f"INSERT INTO predictions ({', '.join(_FIELDS)}) "
           f"VALUES ({', '.join('?' * len(_FIELDS))})")


def time_text(moment: datetime) -> str:
    """UTC ISO 8601 with microseconds and a ``Z``: fixed width, so text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("prediction log times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode={'ro' if read_only else 'rwc'}"
    connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                 timeout=BUSY_TIMEOUT_MS / 1000)
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return connection


class PredictionLog:
    """The open log of one server process: :meth:`submit` or :meth:`append` from any thread.

    Raises:
        PredictionLogError: the file (or its folder) cannot be created or written.
    """

    def __init__(self, path: Path | str, retention_days: int,
                 purge_every_seconds: float = PURGE_EVERY_SECONDS) -> None:
        if retention_days < 1:
            raise ValueError(f"serve.log_retention_days must be at least 1, got {retention_days}")
        self.path = Path(path)
        self.retention = timedelta(days=retention_days)
        self.written = 0
        self.failures = 0
        self.commits = 0
        self._lock = threading.Lock()  # one connection, shared by the writer, purge and find
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = _connect(self.path)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(SCHEMA)
            self.purge()
        except (OSError, sqlite3.Error) as exc:
            raise PredictionLogError(f"prediction log {self.path} cannot be opened for writing "
                                     f"({exc}): choose another file (--prediction-log, "
                                     "serve.prediction_log)") from exc
        self._queue: queue.SimpleQueue[tuple[tuple, Future] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, name="dogbreeds-predlog-writer", daemon=True),
            threading.Thread(target=self._purge_periodically, args=(purge_every_seconds,),
                             name="dogbreeds-predlog-purge", daemon=True)]
        for thread in self._threads:
            thread.start()

    def submit(self, row: Prediction) -> Future:
        """Queue one answer for the writer; the future resolves to True once it is committed
        (False if it could not be: logged and counted, never raised — the answer is still
        served). Await it with ``asyncio.wrap_future`` before answering."""
        future: Future = Future()
        if self._stop.is_set():
            future.set_result(False)
            return future
        values = (row.answer_id, time_text(row.time), *astuple(row)[2:])
        self._queue.put((values, future))
        return future

    def append(self, row: Prediction) -> bool:
        """:meth:`submit` and wait for the commit."""
        return self.submit(row).result()

    def _write(self) -> None:
        """The writer thread: commit whatever is queued, one transaction per round."""
        while (first := self._queue.get()) is not None:
            batch = [first]
            while len(batch) < MAX_ROWS_PER_COMMIT:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            self._commit(batch)
        while True:  # submitted while closing: not logged, and said so
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_result(False)

    def _commit(self, batch: list[tuple[tuple, Future]]) -> None:
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(_INSERT, [values for values, _ in batch])
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            self.written += len(batch)
            self.commits += 1
            ok = True
        except sqlite3.Error:
            self.failures += len(batch)
            log.exception("could not log %d predictions to %s", len(batch), self.path)
            ok = False
        for _, future in batch:
            future.set_result(ok)

    def find(self, answer_id: str) -> Prediction | None:
        """The answer logged under ``answer_id`` (None if unknown or past retention)."""
        with self._lock:
            found = self._db.execute(f"SELECT {', '.join(_FIELDS)} FROM predictions "
                                     "WHERE answer_id = ?", (answer_id,)).fetchone()
        if found is None:
            return None
        values = dict(zip(_FIELDS, found, strict=True))
        values["time"] = datetime.fromisoformat(values["time"])
        return Prediction(**values)

    def purge(self, now: datetime | None = None) -> int:
        """Delete the rows older than the retention; return how many."""
        cutoff = time_text((now or datetime.now(UTC)) - self.retention)
        with self._lock:
            deleted = self._db.execute("DELETE FROM predictions WHERE time < ?",
                                       (cutoff,)).rowcount
        if deleted:
            log.info("prediction log %s: deleted %d rows older than %s", self.path, deleted,
                     cutoff)
        return deleted

    def _purge_periodically(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.purge()
            except sqlite3.Error:
                log.exception("could not apply the retention to %s", self.path)

    def stats(self) -> dict[str, object]:
        return {"rows_written": self.written, "commits": self.commits,
                "failures": self.failures, "retention_days": self.retention.days}

    def close(self) -> None:
        """Commit what is queued, stop the threads, close the file."""
        self._stop.set()
        self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        with self._lock:
            self._db.close()


def read_predictions(path: Path | str, since: datetime | None = None) -> pd.DataFrame:
    """The logged answers (oldest first), those at or after ``since`` (tz-aware) if given.

    Columns: ``time`` (UTC tz-aware), ``model_uri, model_version, status, breed, probability,
    novelty, latency_ms, image_sha256``, then ``answer_id``. Opens the file read-only (a
    reader never creates or changes a log).

    Raises:
        FileNotFoundError: no log at ``path`` (the server has not run there yet).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no prediction log at {path}: `dogbreeds serve` writes it "
                                "(serve.prediction_log)")
    query = f"SELECT {', '.join(COLUMNS)}, answer_id FROM predictions"
    args: tuple = ()
    if since is not None:
        query += " WHERE time >= ?"
        args = (time_text(since),)
    connection = _connect(path, read_only=True)
    try:
        frame = pd.read_sql_query(query + " ORDER BY time, id", connection, params=args)
    finally:
        connection.close()
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    for column in ("probability", "novelty", "latency_ms"):
        frame[column] = frame[column].astype("float64")
    return frame
