"""The prediction log on real SQLite: concurrent appends (threads and processes), retention,
the ``since`` filter, read-only reading, and an unusable path failing when the log opens."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from dogbreeds.serving import predlog
from dogbreeds.serving.predlog import Prediction, PredictionLog, PredictionLogError
from support.project import venv_env

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def row(moment: datetime = NOW, **changes) -> Prediction:
    values = dict(answer_id=uuid.uuid4().hex, time=moment, model_uri="models:/dogbreeds@champion",
                  model_version="2", status="ok", breed="papillon", probability=0.875,
                  novelty=0.5, latency_ms=31.5, image_sha256="ab" * 32)
    return Prediction(**{**values, **changes})


@pytest.fixture
def log(tmp_path):
    opened = PredictionLog(tmp_path / "logs" / "predictions.sqlite", retention_days=90)
    yield opened
    opened.close()


def integrity(path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def test_rows_come_back_with_the_contract_columns(log):
    unknown = row(NOW + timedelta(seconds=1), status="unknown", breed=None, novelty=1.7)
    no_trust = row(NOW + timedelta(seconds=2), novelty=None)
    for logged in (row(), unknown, no_trust):
        assert log.append(logged)
    frame = predlog.read_predictions(log.path)
    assert list(frame.columns) == predlog.COLUMNS + ["answer_id"]
    assert str(frame["time"].dt.tz) == "UTC"
    assert frame["time"].tolist() == [pd.Timestamp(NOW) + pd.Timedelta(seconds=s)
                                      for s in range(3)]
    assert frame["status"].tolist() == ["ok", "unknown", "ok"]
    assert frame["breed"].isna().tolist() == [False, True, False]
    assert frame["novelty"].tolist()[:2] == [0.5, 1.7] and pd.isna(frame["novelty"].iloc[2])
    assert frame.iloc[0][["model_uri", "model_version", "probability", "latency_ms",
                          "image_sha256"]].tolist() == [
        "models:/dogbreeds@champion", "2", 0.875, 31.5, "ab" * 32]
    assert log.find(unknown.answer_id) == unknown
    assert log.find("no-such-id") is None
    with sqlite3.connect(log.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_since_keeps_the_rows_at_or_after_it(log):
    for days in (10, 3, 1, 0):
        log.append(row(NOW - timedelta(days=days)))
    since = predlog.read_predictions(log.path, since=NOW - timedelta(days=3))
    assert since["time"].tolist() == [pd.Timestamp(NOW - timedelta(days=d)) for d in (3, 1, 0)]
    # any time zone means the same instant
    paris = NOW.astimezone(ZoneInfo("Europe/Paris"))
    assert len(predlog.read_predictions(log.path, since=paris - timedelta(days=1))) == 2
    with pytest.raises(ValueError, match="timezone-aware"):
        predlog.read_predictions(log.path, since=datetime(2025, 1, 1))


def test_concurrent_appends_from_threads_all_land(log):
    rows = [row(NOW + timedelta(milliseconds=i)) for i in range(800)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        assert all(pool.map(log.append, rows))
    frame = predlog.read_predictions(log.path)
    assert sorted(frame["answer_id"]) == sorted(r.answer_id for r in rows)
    assert log.stats()["rows_written"] == 800 and log.stats()["failures"] == 0
    assert integrity(log.path) == "ok"


APPENDER = textwrap.dedent("""\
    import sys, time, uuid
    from datetime import UTC, datetime
    from pathlib import Path
    from dogbreeds.serving.predlog import Prediction, PredictionLog
    log = PredictionLog(sys.argv[1], 90)
    while not Path(sys.argv[3]).exists():
        time.sleep(0.001)
    for i in range(300):
        assert log.append(Prediction(uuid.uuid4().hex, datetime.now(UTC), "m", sys.argv[2],
                                     "ok", "beagle", 0.5, None, 1.0, "cd" * 32))
    log.close()
""")


def test_two_server_processes_can_share_one_log(log, tmp_path):
    start = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(log.path), str(n),
                               str(start)], env=venv_env(), stderr=subprocess.PIPE, text=True)
             for n in (1, 2)]
    time.sleep(3)  # both imported, their log open
    start.touch()
    for _ in range(300):  # and this process at the same time
        log.append(row(datetime.now(UTC), model_version="main"))
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
        proc.stderr.close()
    counts = predlog.read_predictions(log.path)["model_version"].value_counts().to_dict()
    assert counts == {"1": 300, "2": 300, "main": 300}
    assert integrity(log.path) == "ok"


def test_retention_deletes_older_rows_when_opening_and_when_purging(tmp_path):
    path = tmp_path / "predictions.sqlite"
    now = datetime.now(UTC)
    first = PredictionLog(path, retention_days=90)
    for days in (200, 91, 89, 0):
        first.append(row(now - timedelta(days=days), breed=f"{days}d"))
    first.close()
    second = PredictionLog(path, retention_days=90)  # opening applies the retention
    assert predlog.read_predictions(path)["breed"].tolist() == ["89d", "0d"]
    assert second.purge(now=now + timedelta(days=2)) == 1  # a day later 89d is past 90 d
    assert predlog.read_predictions(path)["breed"].tolist() == ["0d"]
    second.close()


def test_the_retention_runs_periodically_without_traffic(tmp_path):
    path = tmp_path / "predictions.sqlite"
    log = PredictionLog(path, retention_days=1, purge_every_seconds=0.2)
    try:
        log.append(row(datetime.now(UTC) - timedelta(days=2)))
        log.append(row(datetime.now(UTC)))
        deadline = time.monotonic() + 10
        while len(predlog.read_predictions(path)) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(predlog.read_predictions(path)) == 1
    finally:
        log.close()


def test_reading_never_creates_a_log(tmp_path):
    with pytest.raises(FileNotFoundError, match="no prediction log at .*dogbreeds serve"):
        predlog.read_predictions(tmp_path / "none.sqlite")
    assert not (tmp_path / "none.sqlite").exists()


def test_an_unusable_path_fails_when_the_log_opens(tmp_path):
    (tmp_path / "logs").write_text("a file where the folder should be")
    with pytest.raises(PredictionLogError, match=r"prediction log .*logs/p.sqlite cannot be "
                                                 r"opened for writing .*--prediction-log"):
        PredictionLog(tmp_path / "logs" / "p.sqlite", retention_days=90)
    with pytest.raises(ValueError, match="at least 1"):
        PredictionLog(tmp_path / "p.sqlite", retention_days=0)


def test_a_read_only_log_fails_when_it_opens():
    from support import users

    with users.shared_tmp() as base:
        path = base / "logs" / "predictions.sqlite"
        PredictionLog(path, retention_days=90).close()
        users.make_read_only(base / "logs")
        outcome, message, _ = users.unprivileged(PredictionLog, path, 90)
        assert outcome == "raised" and message.startswith(
            f"PredictionLogError: prediction log {path} cannot be opened for writing"), message
