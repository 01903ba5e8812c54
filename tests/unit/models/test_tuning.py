"""dogbreeds.models.tuning: the search space, the hypermodel, the project name, TuneSettings."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import keras_tuner as kt
import pytest

from dogbreeds.models import tuning
from dogbreeds.models.scratch import ScratchSettings
from dogbreeds.settings import SettingsError
from support.params import PARAMS
from support.tune_data import SIZE, SPACE, hypermodel, schedule_of


def test_hypermodel_respects_search_space_bounds():
    space = tuning.SearchSpace.from_params(
        {**SPACE, "blocks": [2, 4], "filters": [8, 16, 32], "kernel": [3, 5]})
    hp = kt.HyperParameters()
    tuning.declare_architecture(hp, space)
    by_name = {p.name: p for p in hp.space}
    assert (by_name["blocks"].min_value, by_name["blocks"].max_value) == (2, 4)
    assert by_name["learning_rate"].sampling == "log"
    assert (by_name["dropout"].min_value, by_name["dropout"].max_value) == (0.0, 0.3)
    oracle = kt.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=40, seed=0)
    oracle.hyperparameters = hp
    seen_blocks, seen_types = set(), set()
    for i in range(40):
        values = oracle.populate_space(str(i))["values"]
        arch = tuning.architecture_from_values(values, space)
        seen_blocks.add(len(arch["blocks"]))
        assert 2 <= len(arch["blocks"]) <= 4
        assert all(b["filters"] in (8, 16, 32) for b in arch["blocks"])
        assert len({b["kernel"] for b in arch["blocks"]}) == 1
        assert arch["blocks"][0]["kernel"] in (3, 5)
        assert arch["dense"][0] in (8, 16)
        assert 0.0 <= arch["dropout"] <= 0.3
        assert 0.001 <= arch["learning_rate"] <= 0.01
        assert 0.0 <= arch["weight_decay"] <= 0.1 and 0.0 <= arch["label_smoothing"] <= 0.2
        seen_types.add(arch["block_type"])
    assert seen_blocks == {2, 3, 4}
    assert seen_types == {"plain", "residual"}


def test_hypermodel_builds_the_scratch_cnn():
    hp = kt.HyperParameters()
    hp.Fixed("blocks", 2)
    hp.Fixed("block_type", "plain")
    model = hypermodel().build(hp)
    assert model.name == "scratch_cnn"
    assert len([layer for layer in model.layers if layer.name.endswith("_conv")]) == 2
    assert model.input_shape == (None, SIZE, SIZE, 3) and model.output_shape == (None, 3)


def test_hypermodel_shares_the_hand_set_recipe_and_spans_its_epochs():
    """The trial's schedule spans the trial's steps; for_epochs() the final training's."""
    hp = kt.HyperParameters()
    hp.Fixed("learning_rate", 0.004)
    hp.Fixed("weight_decay", 0.03)
    hp.Fixed("label_smoothing", 0.15)
    hp.Fixed("block_type", "residual")
    trial = hypermodel(epochs=2, steps_per_epoch=5)
    model = trial.build(hp)
    rate = schedule_of(model)
    assert float(rate(5)) == pytest.approx(0.004)      # warm-up: 1 epoch (params.yaml)
    assert float(rate(10)) == pytest.approx(0.0, abs=1e-9)
    assert model.optimizer.weight_decay == pytest.approx(0.03)
    assert model.loss.label_smoothing == pytest.approx(0.15)
    assert "block0_add" in [layer.name for layer in model.layers]
    final_rate = schedule_of(trial.for_epochs(6).build(hp))
    assert float(final_rate(10)) > 0.001 and float(final_rate(30)) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("change, match", [
    ({"blocks": [3, 2]}, "min 3 > max 2"),
    ({"blocks": [0, 2]}, "blocks must be >= 1"),
    ({"filters": []}, "filters must be a non-empty list"),
    ({"dropout": [0.1, 1.0]}, r"dropout must lie in \[0, 1\)"),
    ({"learning_rate": [0, 0.1]}, "learning_rate must be > 0"),
    ({"kernel": None}, "kernel must be a non-empty list"),
    ({"block_type": ["plain", "wide"]}, "block_type must be a non-empty list"),
    ({"weight_decay": [-0.1, 0.1]}, "weight_decay must be >= 0"),
    ({"label_smoothing": [0.0, 1.0]}, "label_smoothing"),
])
def test_search_space_rejects_bad_bounds(change, match):
    with pytest.raises(ValueError, match=match):
        tuning.SearchSpace.from_params({**SPACE, **change})


def test_search_space_missing_key():
    with pytest.raises(ValueError, match=r"lacks \['dense'\]"):
        tuning.SearchSpace.from_params({k: v for k, v in SPACE.items() if k != "dense"})


def test_project_name_follows_the_search_config_not_the_budget():
    config = {"search_space": SPACE, "epochs": 2, "data": "abc"}
    name = tuning.project_name("random", config)
    assert name.startswith("random-")
    assert tuning.project_name("random", dict(config)) == name
    assert tuning.project_name("bayesian", config) != name
    assert tuning.project_name("random", {**config, "epochs": 3}) != name
    changed = {**config, "search_space": {**SPACE, "dense": [8]}}
    assert tuning.project_name("random", changed) != name


def test_settings_are_the_params_values_and_their_paths():
    s = tuning.TuneSettings.from_params(PARAMS)
    cfg = PARAMS["tune"]
    assert (s.algorithm, s.max_trials, s.epochs, s.final_epochs) == (
        cfg["algorithm"], cfg["max_trials"], cfg["epochs"], cfg["final_epochs"])
    assert s.search_space == tuning.SearchSpace.from_params(cfg["search_space"])
    assert s.seed == PARAMS["base"]["seed"] and s.output == Path(cfg["output"])
    assert s.tuner_dir == Path("checkpoints") / "tune"
    assert s.retrain_checkpoint_dir == Path("checkpoints") / "scratch_tuned"


def test_settings_name_a_bad_key():
    params = copy.deepcopy(PARAMS)
    params["tune"]["max_trials"] = "many"
    with pytest.raises(SettingsError, match=r"tune\.max_trials: expected an integer, got 'many'"):
        tuning.TuneSettings.from_params(params)
    del params["tune"]["search_space"]
    with pytest.raises(SettingsError, match=r"missing section 'tune\.search_space'"):
        tuning.TuneSettings.from_params(params)


def test_the_project_hashes_the_search_configuration():
    s, scratch = tuning.TuneSettings.from_params(PARAMS), ScratchSettings.from_params(PARAMS)
    kwargs = {"batch_size": 32, "classes": ["a", "b"], "data_key": "abc"}
    name = s.project(scratch, **kwargs)
    # The same name as hashing the params.yaml values themselves (and the first trial).
    assert name == tuning.project_name(s.algorithm, {
        "search_space": PARAMS["tune"]["search_space"], "epochs": PARAMS["tune"]["epochs"],
        "batch_size": 32, "seed": s.seed, "model": scratch.fixed, "classes": ["a", "b"],
        "data": "abc", "first_trial": tuning.hand_set_values(scratch, s.search_space)[0]})
    assert s.project(scratch, **{**kwargs, "batch_size": 64}) != name
    # Another hand-set CNN is another first trial: another search.
    assert s.project(dataclasses.replace(scratch, dropout=0.45), **kwargs) != name
    # Not the budget: more trials continue the same search.
    assert dataclasses.replace(s, max_trials=40).project(scratch, **kwargs) == name


def test_the_hand_set_cnn_is_a_point_of_the_default_search_space():
    s, scratch = tuning.TuneSettings.from_params(PARAMS), ScratchSettings.from_params(PARAMS)
    values, outside = tuning.hand_set_values(scratch, s.search_space)
    assert outside == []
    assert values["blocks"] == len(scratch.blocks)
    assert [values[f"filters_{i}"] for i in range(len(scratch.blocks))] == \
        [b["filters"] for b in scratch.blocks]
    assert (values["dense"], values["dropout"], values["block_type"]) == \
        (scratch.dense[0], scratch.dropout, scratch.block_type)
    # As the hyperparameters' defaults, they rebuild the hand-set architecture.
    hp = kt.HyperParameters()
    arch = tuning.declare_architecture(hp, s.search_space, values)
    assert arch["blocks"] == [{"filters": b["filters"], "kernel": b["kernel"]}
                              for b in scratch.blocks]
    assert arch["learning_rate"] == pytest.approx(scratch.learning_rate)


def test_a_hand_set_setting_outside_the_space_is_named_and_left_out():
    s, scratch = tuning.TuneSettings.from_params(PARAMS), ScratchSettings.from_params(PARAMS)
    odd = dataclasses.replace(scratch, dropout=0.9, blocks=[{"filters": 48, "kernel": 3}] * 3)
    values, outside = tuning.hand_set_values(odd, s.search_space)
    assert set(outside) == {"dropout=0.9", "filters_0=48", "filters_1=48", "filters_2=48"}
    assert "dropout" not in values and values["blocks"] == 3
