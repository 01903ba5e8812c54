"""``dogbreeds promote`` / ``dogbreeds models`` against a real MLflow registry on SQLite."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from dogbreeds.tracking import registry, registry_cli
from support.tiny_registry import empty_registered_model

NAME = "dogbreeds-test"


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return empty_registered_model(tmp_path, NAME, "registry-cli-test")


def new_version(client: MlflowClient, test_accuracy: float, **tags: str) -> str:
    """A registered version (the registry only needs a source) with the tags evaluate sets."""
    v = client.create_model_version(NAME, source="file:///nowhere")
    client.set_model_version_tag(NAME, v.version, registry.TAG_TEST_ACCURACY, str(test_accuracy))
    for key, value in tags.items():
        client.set_model_version_tag(NAME, v.version, key, value)
    return str(v.version)


def aliases(client) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(NAME).aliases.items()}


def test_manual_promote_rollback_and_models_table(client, capsys):
    for score in (0.5, 0.7):
        version = new_version(client, score)
        client.set_registered_model_alias(NAME, "champion", version)
    assert aliases(client)["champion"] == "2"
    assert registry_cli.cli_promote(NAME, "1") == 0  # rollback
    assert aliases(client)["champion"] == "1"
    assert "version 1 (was version 2)" in capsys.readouterr().out
    assert registry_cli.cli_promote(NAME, "99") == 1
    assert "no version 99" in capsys.readouterr().err
    assert aliases(client)["champion"] == "1"
    assert registry_cli.cli_models(NAME) == 0
    table = capsys.readouterr().out
    assert "champion" in table and "0.7000" in table and "version" in table
    assert registry_cli.cli_models("no-such-model") == 1
    assert "no registered model 'no-such-model'" in capsys.readouterr().err


def test_versions_table_newest_first_with_aliases_and_metrics(client):
    new_version(client, 0.5, kind="scratch")
    new_version(client, 0.75, kind="transfer", backbone="mobilenetv2", val_accuracy="0.8",
                test_ece_calibrated="0.0123", test_coverage="0.91", gate_source="shelter",
                gate_accuracy="0.6")
    client.set_registered_model_alias(NAME, "champion", "2")
    client.set_registered_model_alias(NAME, "challenger", "1")
    table = registry_cli.versions_table(client, NAME)
    assert list(table.columns) == registry_cli.COLUMNS
    assert list(table["version"]) == [2, 1]
    assert list(table["aliases"]) == ["champion", "challenger"]
    assert list(table["model"]) == ["transfer/mobilenetv2", "scratch"]
    assert list(table["test_acc"]) == ["0.7500", "0.5000"]
    assert list(table["val_acc"]) == ["0.8000", ""]  # a missing metric is blank, not an error
    assert list(table["judged_on"]) == ["shelter", ""] and list(table["judged_acc"]) == [
        "0.6000", ""]
    # versions registered with a trust bundle show their calibrated ECE and coverage
    assert list(table["ece"]) == ["0.0123", ""] and list(table["coverage"]) == ["0.9100", ""]


def test_models_of_a_model_without_versions(client, capsys):
    assert registry_cli.cli_models(NAME) == 0
    assert f"{NAME}: no versions" in capsys.readouterr().out
