"""The monitor's inputs: the window, the version filter, the prediction log and corrections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from dogbreeds.monitoring import traffic
from support import production as prod

NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("since, start", [
    ("7d", NOW - timedelta(days=7)),
    ("12h", NOW - timedelta(hours=12)),
    ("30m", NOW - timedelta(minutes=30)),
    ("2w", NOW - timedelta(weeks=2)),
    ("1.5d", NOW - timedelta(hours=36)),
    ("2025-06-01", datetime(2025, 6, 1, tzinfo=UTC)),
    ("2025-06-01T08:30", datetime(2025, 6, 1, 8, 30, tzinfo=UTC)),
    ("2025-06-01T08:30+02:00", datetime(2025, 6, 1, 6, 30, tzinfo=UTC)),
])
def test_window_start(since, start):
    assert traffic.window_start(since, NOW) == start


@pytest.mark.parametrize("since", ["", "7", "7 days", "-1d", "yesterday"])
def test_a_window_that_means_nothing_is_refused(since):
    with pytest.raises(ValueError, match="expected a duration"):
        traffic.window_start(since, NOW)


def test_versions_match_however_the_column_stores_them():
    versions = pd.Series(["3", 3, 3.0, None, float("nan"), "13"], dtype=object)
    assert traffic.of_version(versions, "3").tolist() == [True, True, True, False, False, False]
    assert [traffic.version_text(v) for v in versions] == ["3", "3", "3", "none", "none", "13"]


def test_recent_traffic_keeps_the_window_and_the_version(tmp_path):
    rows = (prod.log_rows(prod.answers(20, seed=1), "2", NOW - timedelta(days=1),
                          timedelta(hours=20))
            + prod.log_rows(prod.answers(5, seed=2), "1", NOW, timedelta(hours=1))
            + prod.log_rows(prod.answers(7, seed=3), "2", NOW - timedelta(days=9),
                            timedelta(hours=1))
            + prod.log_rows(prod.answers(3, seed=4), "2", NOW + timedelta(hours=2),
                            timedelta(hours=1)))        # after the window's end
    log = prod.write_prediction_log(tmp_path / "log.sqlite", rows)
    prod.write_corrections(tmp_path / "fb", [rows[0], rows[20], rows[25]],
                           ["correct", "wrong", "wrong"])
    got = traffic.recent_traffic(log, tmp_path / "fb", "2", NOW - timedelta(days=7), NOW)
    assert len(got.answers) == 20
    assert got.other_versions == {"1": 5}
    assert got.corrections["image_sha256"].tolist() == [rows[0]["image_sha256"]]
    assert str(got.answers["time"].dt.tz) == "UTC"


def test_no_feedback_folder_means_no_corrections(tmp_path):
    log = prod.write_prediction_log(tmp_path / "log.sqlite", prod.log_rows(
        prod.answers(4, seed=1), "1", NOW, timedelta(hours=1)))
    got = traffic.recent_traffic(log, tmp_path / "absent", "1", NOW - timedelta(days=1), NOW)
    assert len(got.answers) == 4 and got.corrections.empty


def test_no_log_is_an_input_error(tmp_path):
    with pytest.raises(traffic.MonitorInputError, match="no prediction log at"):
        traffic.recent_traffic(tmp_path / "none.sqlite", None, "1", NOW, NOW)
