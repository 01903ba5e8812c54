"""Registration and promotion rules, against a real MLflow registry on SQLite in tmp_path."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from dogbreeds.models.gate import Gate
from dogbreeds.settings import SettingsError
from dogbreeds.tracking import registry, store
from support import tiny_models as tm
from support.project import repo_params
from support.tiny_registry import empty_registered_model

NAME = "dogbreeds-test"


# --- the pure decision ---------------------------------------------------------------------

def test_first_model_is_champion():
    promote, reason = registry.decide_promotion(0.4, None, 0.005)
    assert promote and "first model" in reason


@pytest.mark.parametrize("new, old, gain, expected", [
    (0.80, 0.70, 0.005, True),     # clearly better
    (0.800, 0.795, 0.005, True),   # better by exactly the threshold
    (0.799, 0.795, 0.005, False),  # better, but not by enough
    (0.70, 0.70, 0.0, False),      # a tie never replaces the champion
    (0.60, 0.70, 0.0, False),      # worse
])
def test_decide_promotion_threshold(new, old, gain, expected):
    promote, reason = registry.decide_promotion(new, old, gain)
    assert promote is expected
    assert f"{new:.4f}" in reason and f"{old:.4f}" in reason


# --- promotion against the registry -------------------------------------------------------

@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return empty_registered_model(tmp_path, NAME, "registry-test")


def new_version(client: MlflowClient, test_accuracy: float, test_hash: str = "h1") -> str:
    """A registered version (the registry only needs a source) with the tags evaluate sets."""
    v = client.create_model_version(NAME, source="file:///nowhere")
    client.set_model_version_tag(NAME, v.version, registry.TAG_TEST_ACCURACY, str(test_accuracy))
    client.set_model_version_tag(NAME, v.version, registry.TAG_TEST_HASH, test_hash)
    return str(v.version)


def promote(client, version, score, test_hash="h1", reevaluate=None):
    calls = []

    def scorer(uri):
        calls.append(uri)
        return reevaluate

    decision = registry.promote_new_version(client, NAME, version, score, test_hash, 0.005, scorer)
    return decision, calls


def aliases(client) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(NAME).aliases.items()}


def test_better_model_takes_champion_worse_or_equal_is_challenger(client):
    d1, _ = promote(client, new_version(client, 0.70), 0.70)
    assert d1.promoted and d1.alias == "champion" and d1.champion_version is None
    d2, _ = promote(client, new_version(client, 0.80), 0.80)
    assert d2.promoted and d2.champion_version == "1" and d2.champion_score == pytest.approx(0.70)
    d3, _ = promote(client, new_version(client, 0.80), 0.80)  # equal: stays challenger
    d4, _ = promote(client, new_version(client, 0.60), 0.60)
    assert not d3.promoted and not d4.promoted and "not better" in d4.reason
    assert aliases(client) == {"champion": "2", "challenger": "4"}
    versions = client.search_model_versions(f"name='{NAME}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]  # nothing deleted
    assert client.get_model_version(NAME, "3").tags["promotion"] == d3.reason


def test_champion_on_other_test_data_is_reevaluated(client):
    promote(client, new_version(client, 0.95, test_hash="old-data"), 0.95)
    # Recorded 0.95 was measured on other data; on today's data the champion scores 0.50.
    decision, calls = promote(client, new_version(client, 0.60, "new-data"), 0.60,
                              test_hash="new-data", reevaluate=0.50)
    assert calls == [f"models:/{NAME}@champion"]
    assert decision.promoted and decision.champion_reevaluated
    assert decision.champion_score == pytest.approx(0.50) and "re-evaluated" in decision.reason
    # Same data: the recorded number is used, nothing is re-run.
    decision, calls = promote(client, new_version(client, 0.603, "new-data"), 0.603,
                              test_hash="new-data", reevaluate=0.0)
    assert calls == [] and not decision.promoted


def test_recorded_score_is_the_one_measured_on_the_same_photos():
    tags = {registry.TAG_TEST_HASH: "t", registry.TAG_TEST_ACCURACY: "0.5",
            registry.TAG_GATE_HASH: "g", registry.TAG_GATE_ACCURACY: "0.9"}
    assert registry.recorded_score(tags, "g") == 0.9
    assert registry.recorded_score(tags, "t") == 0.5   # its whole test split was these photos
    assert registry.recorded_score(tags, "other") is None
    assert registry.recorded_score({registry.TAG_GATE_HASH: "g"}, "g") is None


def test_the_champion_is_compared_on_the_gate_photos_not_overall(client):
    """A champion judged on the shelter's photos keeps its place against a version that is
    better overall but worse there."""
    v1 = new_version(client, 0.50, test_hash="whole-split")
    for key, value in {registry.TAG_GATE_HASH: "shelter-photos",
                       registry.TAG_GATE_ACCURACY: "0.90"}.items():
        client.set_model_version_tag(NAME, v1, key, value)
    promote(client, v1, 0.90, test_hash="shelter-photos")
    decision, calls = promote(client, new_version(client, 0.95, "whole-split"), 0.85,
                              test_hash="shelter-photos", reevaluate=0.0)
    assert calls == [] and decision.champion_score == pytest.approx(0.90)
    assert not decision.promoted and aliases(client) == {"champion": "1", "challenger": "2"}


def test_test_data_hash_follows_content_not_order(tmp_path):
    df = tm.write_dataset(tmp_path, per_breed=2)
    h = registry.test_data_hash(df, tmp_path)
    assert registry.test_data_hash(df.iloc[::-1], tmp_path) == h
    (tmp_path / df["path"][0]).write_bytes(tm.breed_jpeg("papillon", seed=99))
    assert registry.test_data_hash(df, tmp_path) != h
    assert registry.test_data_hash(df.iloc[1:], tmp_path) != h


# --- end to end: the real pyfunc is logged, registered and re-evaluated ---------------------

def test_register_and_promote_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store.configure(tmp_path, "registry-e2e")
    keras_file = tmp_path / "model.keras"
    tm.train_tiny_model(keras_file, epochs=40)
    test_df = tm.write_dataset(tmp_path, per_breed=3)
    card = {"name": "scratch", "kind": "scratch", "backbone": None, "classes": tm.CLASSES,
            "image_size": tm.SIZE, "mlflow_run_id": "r1"}

    import mlflow

    with mlflow.start_run():
        first = registry.register_and_promote(
            keras_file, card, {"val_accuracy": 0.9, "test_accuracy": 1.0}, model_name=NAME,
            min_improvement=0.005, test_df=test_df, root=tmp_path, extra_tags={"git_commit": "abc"})
    assert first.alias == "champion" and first.version == "1"
    tags = MlflowClient().get_model_version(NAME, "1").tags
    assert tags["kind"] == "scratch" and tags["git_commit"] == "abc"
    assert tags["test_data_hash"] == registry.test_data_hash(test_df, tmp_path)

    # Other test data (one photo fewer): the champion is re-scored through its pyfunc.
    smaller = test_df.iloc[1:].reset_index(drop=True)
    with mlflow.start_run():
        second = registry.register_and_promote(
            keras_file, card, {"val_accuracy": 0.9, "test_accuracy": 1.0}, model_name=NAME,
            min_improvement=0.005, test_df=smaller, root=tmp_path)
    assert second.champion_reevaluated and second.champion_score == pytest.approx(1.0)
    assert second.alias == "challenger" and not second.promoted
    assert registry.pyfunc_accuracy(f"models:/{NAME}/2", pd.DataFrame(smaller), tmp_path) == 1.0

    # The same training run on the same test data again (only another model changed):
    # no duplicate version, aliases untouched.
    with mlflow.start_run():
        third = registry.register_and_promote(
            keras_file, card, {"val_accuracy": 0.9, "test_accuracy": 1.0}, model_name=NAME,
            min_improvement=0.005, test_df=smaller, root=tmp_path)
    assert third.version == "2" and not third.promoted and third.reason.startswith("unchanged")
    assert len(MlflowClient().search_model_versions(f"name = '{NAME}'")) == 2
    assert str(MlflowClient().get_model_version_by_alias(NAME, "champion").version) == "1"

    # Judged on a local source's photos: the champion (judged on all photos) is re-scored
    # on exactly those; the new version's tags say which source judged and how it did.
    mixed = test_df.assign(source=["shelter" if i % 2 else "stanford"
                                   for i in range(len(test_df))])
    shelter = Gate("shelter", ("shelter",), "evaluate.gate_source")
    with mlflow.start_run():
        judged = registry.register_and_promote(
            keras_file, {**card, "mlflow_run_id": "r2"},
            {"val_accuracy": 0.9, "test_accuracy": 1.0, "gate_accuracy": 1.0},
            model_name=NAME, min_improvement=0.005, test_df=mixed, root=tmp_path, gate=shelter)
    assert judged.champion_reevaluated and judged.gate_source == "shelter"
    assert judged.alias == "challenger" and "shelter's 4 test photos" in judged.reason
    tags = MlflowClient().get_model_version(NAME, judged.version).tags
    assert (tags["gate_source"], tags["gate_photos"], tags["gate_accuracy"]) == (
        "shelter", "4", "1.0")
    assert tags["gate_data_hash"] == registry.test_data_hash(shelter.rows(mixed), tmp_path)
    assert tags["test_data_hash"] == registry.test_data_hash(mixed, tmp_path)


def test_registry_settings_from_params():
    shipped = repo_params()["registry"]
    settings = registry.RegistrySettings.from_params(repo_params("registry.min_improvement", 0))
    assert settings == registry.RegistrySettings(shipped["model_name"], 0.0)
    assert isinstance(settings.min_improvement, float)
    with pytest.raises(SettingsError, match=r"missing registry\.min_improvement"):
        registry.RegistrySettings.from_params(repo_params("registry.min_improvement"))
    with pytest.raises(SettingsError, match=r"registry\.model_name: expected a string"):
        registry.RegistrySettings.from_params(repo_params("registry.model_name", ["dogs"]))
