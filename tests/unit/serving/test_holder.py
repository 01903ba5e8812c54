"""The model holder: which registered model a URI names, loading it, answering with it."""

from __future__ import annotations

import pytest

from dogbreeds.serving.holder import ModelHolder, RegistryRef, parse_registry_uri
from dogbreeds.serving.predict import ModelLoadError
from dogbreeds.serving.uploads import ApiError

CHAMPION = "models:/dogbreeds@champion"


def test_parse_registry_uri():
    assert parse_registry_uri("models:/dogbreeds@champion") == RegistryRef("dogbreeds", "champion")
    assert parse_registry_uri("models:/dogbreeds/3") == RegistryRef("dogbreeds", version="3")
    assert parse_registry_uri("models:/m-0123abcd") is None
    assert parse_registry_uri("runs:/abc/classifier") is None


def test_holder_loads_the_champion_and_answers(tiny_registry, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_registry.tracking_uri)
    monkeypatch.chdir(tiny_registry.root)
    holder = ModelHolder(CHAMPION, refresh_seconds=None)
    assert not holder.loaded
    with pytest.raises(ApiError, match="no model loaded") as err:
        holder.predict(b"anything")
    assert err.value.status == 503
    info = holder.load()
    assert holder.loaded
    assert info == {"uri": CHAMPION, "name": "dogbreeds", "version": "1", "alias": "champion"}
    photo = tiny_registry.photos["papillon"][0].read_bytes()
    predictions, used = holder.predict(photo, top_k=2)
    assert [p["breed"] for p in predictions][:1] == ["papillon"] and len(predictions) == 2
    assert used == info
    with pytest.raises(ApiError, match="could not decode the image") as err:
        holder.predict(photo[: len(photo) * 2 // 3])
    assert err.value.status == 400


def test_holder_missing_alias_is_a_model_load_error(tiny_registry, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_registry.tracking_uri)
    monkeypatch.chdir(tiny_registry.root)
    holder = ModelHolder("models:/dogbreeds@nobody", refresh_seconds=None)
    with pytest.raises(ModelLoadError, match="no model at models:/dogbreeds@nobody"):
        holder.load()
    assert not holder.loaded
