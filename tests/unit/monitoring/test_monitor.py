"""``dogbreeds monitor`` end to end on a real MLflow SQLite registry, a real SQLite prediction
log and correction records: exit codes, what the JSON names, the MLflow run."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from mlflow import MlflowClient

from dogbreeds import cli
from dogbreeds.monitoring import monitor
from dogbreeds.settings import SettingsError
from dogbreeds.tracking import store
from support import production as prod
from support.project import REPO, repo_params

NAME = "dogbreeds"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder (the repo's params.yaml) whose champion's run carries a baseline."""
    root = tmp_path_factory.mktemp("monitor-project")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    version = prod.register_with_baseline(root, NAME, prod.baseline_answers())
    return root, version


@pytest.fixture
def in_project(project, monkeypatch):
    root, version = project
    monkeypatch.chdir(root)
    return root, version


def now() -> datetime:
    return datetime.now(UTC)


def run(tmp_path, *flags: str) -> tuple[int, dict | None]:
    """``dogbreeds monitor`` with the test's log/feedback/output; the exit code and JSON."""
    out = tmp_path / "out"
    code = cli.main(["monitor", "--log", str(tmp_path / "log.sqlite"),
                     "--feedback", str(tmp_path / "feedback"), "--output", str(out), *flags])
    report = out / "monitor.json"
    return code, json.loads(report.read_text()) if report.is_file() else None


def monitor_runs(root, log_path):
    client = MlflowClient(store.local_tracking_uri(root))
    experiment = client.get_experiment_by_name("dogbreeds").experiment_id
    runs = client.search_runs([experiment], "tags.`dogbreeds.stage` = 'monitor'")
    return client, [r for r in runs if r.data.params.get("log") == str(log_path)]


def test_traffic_like_the_baseline_is_no_drift_and_logged_to_mlflow(in_project, tmp_path,
                                                                     capsys):
    root, version = in_project
    rows = prod.log_rows(prod.answers(150, seed=11), version, now(), timedelta(days=3))
    prod.write_prediction_log(tmp_path / "log.sqlite", rows)

    code, report = run(tmp_path)

    assert code == monitor.EXIT_OK, capsys.readouterr()
    assert report["status"] == "ok" and report["drifted"] == []
    assert report["counts"]["predictions"] == 150 and report["counts"]["baseline"] == 240
    assert report["model"]["version"] == version
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"confidence_psi", "low_confidence_rise", "unknown_rise",
                           "class_mix_js"}
    assert checks["confidence_psi"]["value"] < 0.1 and checks["class_mix_js"]["value"] < 0.2
    assert (tmp_path / "out" / "monitor.png").stat().st_size > 20_000
    assert "no drift" in capsys.readouterr().out

    client, runs = monitor_runs(root, tmp_path / "log.sqlite")
    assert len(runs) == 1
    logged = runs[0]
    assert logged.data.tags["dogbreeds.monitor.status"] == "ok"
    assert logged.data.tags["dogbreeds.monitor.model"] == f"models:/{NAME}/{version}"
    assert logged.data.metrics["predictions"] == 150 and logged.data.metrics["drift"] == 0
    assert logged.data.metrics["confidence_psi"] == pytest.approx(checks["confidence_psi"]["value"])
    assert {"confidence_psi_pvalue", "unknown_rate", "baseline_unknown_rate",
            "class_mix_js", "baseline_accuracy"} <= set(logged.data.metrics)
    assert {a.path for a in client.list_artifacts(logged.info.run_id)} == \
        {"monitor.json", "monitor.png"}


@pytest.mark.parametrize("shift, drifted", [
    ({"confidence": (2.5, 2.5)}, {"confidence_psi", "low_confidence_rise"}),
    ({"unknown": 0.4}, {"unknown_rise"}),
    ({"mix": (0.85, 0.05, 0.05, 0.05)}, {"class_mix_js"}),
])
def test_shifted_traffic_exits_3_naming_what_drifted(in_project, tmp_path, shift, drifted):
    root, version = in_project
    rows = prod.log_rows(prod.answers(150, seed=12, **shift), version, now(), timedelta(days=2))
    prod.write_prediction_log(tmp_path / "log.sqlite", rows)

    code, report = run(tmp_path)

    assert code == monitor.EXIT_DRIFT
    assert report["status"] == "drift" and set(report["drifted"]) == drifted
    assert report["exit_code"] == 3
    _, runs = monitor_runs(root, tmp_path / "log.sqlite")
    assert runs[0].data.tags["dogbreeds.monitor.drifted"] == ",".join(report["drifted"])


def test_a_small_window_is_not_called_drift_by_chance(in_project, tmp_path):
    """30 predictions of an unchanged model: PSI alone is often past 0.25 by chance; the KS
    test keeps it from raising the alarm."""
    _, version = in_project
    rows = prod.log_rows(prod.answers(30, seed=10), version, now(), timedelta(days=1))
    prod.write_prediction_log(tmp_path / "log.sqlite", rows)
    code, report = run(tmp_path)
    psi = next(c for c in report["checks"] if c["name"] == "confidence_psi")
    assert psi["value"] > psi["threshold"] and psi["p_value"] > 0.1    # this seed: PSI 0.40
    assert code == monitor.EXIT_OK and not psi["drifted"]


def test_corrections_count_into_the_rate_and_the_accuracy(in_project, tmp_path):
    _, version = in_project
    rows = prod.log_rows(prod.answers(100, seed=13), version, now(), timedelta(days=2))
    prod.write_prediction_log(tmp_path / "log.sqlite", rows)
    named = [r for r in rows if r["breed"]]
    prod.write_corrections(tmp_path / "feedback", named[:8], ["correct"] * 6 + ["wrong"] * 2)
    # Not counted: an answer by another version, and one given before the window.
    other = dict(named[8], model_version="99", image_sha256="a" * 64)
    old = dict(named[9], time=now() - timedelta(days=30), image_sha256="b" * 64)
    prod.write_corrections(tmp_path / "feedback", [other, old], ["wrong", "wrong"])

    code, report = run(tmp_path)

    assert code == monitor.EXIT_OK
    feedback = report["feedback"]
    assert feedback["corrections"] == 8 and feedback["confirmed"] == 6
    assert feedback["correction_rate"] == pytest.approx(8 / 100)
    assert feedback["corrected_accuracy"] == pytest.approx(6 / 8)
    baseline = prod.baseline_answers()
    assert feedback["baseline_accuracy"] == pytest.approx(
        (baseline["breed"] == baseline["true_breed"]).mean())


def test_since_picks_the_window(in_project, tmp_path):
    """Shifted traffic 10 days ago, like-the-baseline traffic in the last 3 days."""
    _, version = in_project
    old = prod.log_rows(prod.answers(100, seed=14, unknown=0.5), version,
                        now() - timedelta(days=10), timedelta(days=1))
    recent = prod.log_rows(prod.answers(80, seed=15), version, now(), timedelta(days=3))
    prod.write_prediction_log(tmp_path / "log.sqlite", old + recent)

    code, report = run(tmp_path, "--since", "7d")
    assert code == monitor.EXIT_OK and report["counts"]["predictions"] == 80
    assert report["window"]["since"] == "7d"

    code, report = run(tmp_path, "--since", (now() - timedelta(days=30)).date().isoformat())
    assert code == monitor.EXIT_DRIFT and report["counts"]["predictions"] == 180
    assert report["drifted"] == ["unknown_rise"]


def test_default_window_is_the_params_since(in_project, tmp_path):
    _, version = in_project
    assert repo_params()["monitor"]["since"] == "7d"
    rows = (prod.log_rows(prod.answers(40, seed=16), version, now() - timedelta(days=8),
                          timedelta(hours=1))
            + prod.log_rows(prod.answers(60, seed=17), version, now(), timedelta(days=6)))
    prod.write_prediction_log(tmp_path / "log.sqlite", rows)
    code, report = run(tmp_path)
    assert code == monitor.EXIT_OK and report["counts"]["predictions"] == 60


def test_no_log_is_exit_2_and_writes_nothing(in_project, tmp_path, capsys):
    code, report = run(tmp_path)
    assert code == monitor.EXIT_NO_INPUT and report is None
    assert "no prediction log at" in capsys.readouterr().err


def test_too_few_predictions_is_exit_2_naming_the_other_versions(in_project, tmp_path, capsys):
    _, version = in_project
    rows = (prod.log_rows(prod.answers(10, seed=18), version, now(), timedelta(hours=5))
            + prod.log_rows(prod.answers(50, seed=19), "7", now(), timedelta(hours=5)))
    prod.write_prediction_log(tmp_path / "log.sqlite", rows)
    code, report = run(tmp_path)
    err = capsys.readouterr().err
    assert code == monitor.EXIT_NO_INPUT and report is None
    assert "10 predictions by models:/dogbreeds/" in err and "too few to judge" in err
    assert "version 7: 50" in err


def test_an_empty_log_is_exit_2(in_project, tmp_path, capsys):
    prod.write_prediction_log(tmp_path / "log.sqlite", [])
    code, _ = run(tmp_path)
    assert code == monitor.EXIT_NO_INPUT
    assert "0 predictions" in capsys.readouterr().err


def test_a_log_or_corrections_that_cannot_be_read_is_exit_2(in_project, tmp_path, capsys):
    _, version = in_project
    (tmp_path / "log.sqlite").write_bytes(b"not a database" * 100)
    assert run(tmp_path)[0] == monitor.EXIT_NO_INPUT
    assert "cannot read the prediction log" in capsys.readouterr().err
    (tmp_path / "log.sqlite").unlink()
    prod.write_prediction_log(tmp_path / "log.sqlite", prod.log_rows(
        prod.answers(50, seed=22), version, now(), timedelta(days=1)))
    records = tmp_path / "feedback" / ".records"
    records.mkdir(parents=True)
    (records / ("c" * 64 + ".json")).write_text("{half a record")
    code, report = run(tmp_path)
    assert code == monitor.EXIT_NO_INPUT and report is None
    assert "cannot read the corrections" in capsys.readouterr().err


def test_a_version_without_baseline_is_exit_2(in_project, tmp_path, capsys):
    root, version = in_project
    bare = prod.register_with_baseline(root, "bare-dogs", None)
    prod.write_prediction_log(tmp_path / "log.sqlite", prod.log_rows(
        prod.answers(50, seed=20), bare, now(), timedelta(days=1), name="bare-dogs"))
    code, report = run(tmp_path, "--model", f"models:/bare-dogs/{bare}")
    assert code == monitor.EXIT_NO_INPUT and report is None
    assert f"no baseline for models:/bare-dogs/{bare}" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--model", "runs:/abc/classifier"], "belongs to a registered version"),
    (["--model", "models:/no-such-dogs@champion"], "no registered version at"),
    (["--since", "last tuesday"], "--since 'last tuesday': expected a duration"),
])
def test_what_cannot_be_judged_is_a_clear_exit_2(in_project, tmp_path, capsys, flags, message):
    _, version = in_project
    prod.write_prediction_log(tmp_path / "log.sqlite", prod.log_rows(
        prod.answers(50, seed=21), version, now(), timedelta(days=1)))
    code, _ = run(tmp_path, *flags)
    assert code == monitor.EXIT_NO_INPUT
    assert message in capsys.readouterr().err


def test_monitor_settings_from_params_and_bad_values_name_the_key():
    settings = monitor.MonitorSettings.from_params(repo_params())
    assert settings.thresholds.confidence_psi == 0.25 and settings.min_predictions == 30
    with pytest.raises(SettingsError, match=r"monitor\.thresholds\.unknown_rise must be positive"):
        monitor.MonitorSettings.from_params(repo_params("monitor.thresholds.unknown_rise", 0))
    with pytest.raises(SettingsError, match=r"monitor\.since must be a duration"):
        monitor.MonitorSettings.from_params(repo_params("monitor.since", "a while"))
    with pytest.raises(SettingsError, match=r"missing monitor\.alpha"):
        monitor.MonitorSettings.from_params(repo_params("monitor.alpha"))
