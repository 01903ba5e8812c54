"""The ``dogbreeds`` command's defaults come from the project's params.yaml (registry section)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from dogbreeds import cli
from dogbreeds.settings import SettingsError
from support.project import REPO, repo_params
from support.tiny_registry import empty_registered_model


def write_params(folder, key: str, value) -> None:
    """The repo's params.yaml in ``folder`` with ``registry.<key>`` set to ``value``."""
    params = repo_params(f"registry.{key}", value)
    (folder / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


def test_default_model_uri_follows_registry_model_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shipped = repo_params()["registry"]["model_name"]
    assert cli.default_model_uri() == f"models:/{shipped}@champion"
    write_params(tmp_path, "model_name", "other-dogs")
    assert cli.registry_model_name() == "other-dogs"
    assert cli.default_model_uri() == "models:/other-dogs@champion"


def test_without_params_yaml_the_documented_fallback_applies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.default_model_uri() == f"models:/{cli.FALLBACK_MODEL_NAME}@champion"


def test_predict_uses_the_params_model_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no mlflow.db here: the error names the URI it tried
    write_params(tmp_path, "model_name", "other-dogs")
    photo = tmp_path / "dog.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    assert cli.main(["predict", str(photo)]) == 2
    assert "no model at models:/other-dogs@champion" in capsys.readouterr().err


def test_models_and_promote_use_the_params_model_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, "model_name", "other-dogs")
    client = empty_registered_model(tmp_path, "other-dogs", "cli-test")
    for _ in range(2):
        client.create_model_version("other-dogs", source="file:///nowhere")
    assert cli.main(["promote", "2"]) == 0
    assert "other-dogs@champion -> version 2" in capsys.readouterr().out
    assert cli.main(["models"]) == 0
    assert "champion" in capsys.readouterr().out
    assert cli.main(["models", "--name", "dogbreeds-none"]) == 1  # an explicit name still wins
    assert "no registered model 'dogbreeds-none'" in capsys.readouterr().err


@pytest.mark.parametrize("key, value, message", [
    ("model_name", 5, "registry.model_name: expected a string"),
    ("min_improvement", "a lot", "registry.min_improvement: expected a number"),
])
def test_a_wrong_registry_section_names_the_key(tmp_path, monkeypatch, capsys, key, value,
                                                message):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, key, value)
    assert cli.main(["models"]) == 2
    assert message in capsys.readouterr().err


def test_serve_batching_comes_from_params_and_flags_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parser = cli.build_parser()
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())["serve"]
    assert cli.FALLBACK_SERVE == shipped  # the fallback is what params.yaml ships with
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["serve"] = {"max_batch_size": 8, "max_wait_ms": 3}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    settings = cli.serve_batching(parser.parse_args(["serve"]))
    assert (settings.max_batch_size, settings.max_wait_ms) == (8, 3.0)
    settings = cli.serve_batching(parser.parse_args(["serve", "--max-wait-ms", "0"]))
    assert (settings.max_batch_size, settings.max_wait_ms) == (8, 0.0)
    with pytest.raises(SettingsError, match="max_batch_size"):
        cli.serve_batching(parser.parse_args(["serve", "--max-batch-size", "0"]))


def test_monitor_fallbacks_are_what_params_yaml_ships_with():
    shipped = repo_params()
    assert cli.FALLBACK_MONITOR == shipped["monitor"]
    assert cli.FALLBACK_EXPERIMENT == shipped["base"]["experiment"]
    outside = cli.project_params(REPO / "no-such-params.yaml")
    assert outside["serve"] == shipped["serve"] and outside["monitor"] == shipped["monitor"]


def test_monitor_reads_its_defaults_from_params(tmp_path, monkeypatch, capsys):
    """The log path comes from serve.prediction_log; a wrong monitor param names its key."""
    from support import production

    monkeypatch.chdir(tmp_path)
    params = repo_params("serve.prediction_log", "elsewhere/log.sqlite")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    production.register_with_baseline(tmp_path, "dogbreeds", production.baseline_answers(40))
    assert cli.main(["monitor"]) == 2
    assert "no prediction log at elsewhere/log.sqlite" in capsys.readouterr().err
    params = repo_params("monitor.min_predictions", "many")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    assert cli.main(["monitor"]) == 2
    assert "monitor.min_predictions: expected an integer" in capsys.readouterr().err


def test_serve_records_come_from_params_and_flags_override(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    parser = cli.build_parser()
    settings = cli.serve_records(parser.parse_args(["serve"]))  # outside a project: fallback
    assert (settings.feedback_dir, settings.prediction_log, settings.log_retention_days) == (
        Path("data/sources/feedback"), Path("logs/predictions.sqlite"), 90)
    params = repo_params("serve.log_retention_days", 30)
    params["serve"]["feedback_dir"] = "shelter/feedback"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    args = parser.parse_args(["serve", "--prediction-log", "elsewhere.sqlite"])
    settings = cli.serve_records(args)
    assert (settings.feedback_dir, settings.prediction_log, settings.log_retention_days) == (
        Path("shelter/feedback"), Path("elsewhere.sqlite"), 30)
    assert args.no_feedback is False
    assert parser.parse_args(["serve", "--no-feedback"]).no_feedback is True
    with pytest.raises(SettingsError, match="serve.log_retention_days must be at least 1"):
        cli.serve_records(parser.parse_args(["serve", "--log-retention-days", "0"]))
