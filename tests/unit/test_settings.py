"""dogbreeds.settings: typed, frozen settings from a params section; errors name the key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from dogbreeds.settings import SettingsError, from_section, section, value


@dataclass(frozen=True)
class Example:
    epochs: int
    learning_rate: float
    image_size: int | None
    pooling: Literal["avg", "max"]
    dense: tuple[int, ...]
    output: Path
    blocks: list
    augment: bool


GOOD = {"epochs": 3, "learning_rate": 1, "image_size": None, "pooling": "avg", "dense": [64, 32],
        "output": "models/x", "blocks": [{"filters": 8}], "augment": False, "unrelated": "ok"}


def test_builds_a_frozen_typed_instance():
    s = from_section(Example, GOOD, "stage")
    assert s == Example(3, 1.0, None, "avg", (64, 32), Path("models/x"), [{"filters": 8}], False)
    assert isinstance(s.learning_rate, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.epochs = 4  # type: ignore[misc]


@pytest.mark.parametrize("key, value, message", [
    ("epochs", "ten", r"stage\.epochs: expected an integer, got 'ten'"),
    ("epochs", True, r"stage\.epochs: expected an integer"),
    ("learning_rate", "fast", r"stage\.learning_rate: expected a number"),
    ("image_size", 1.5, r"stage\.image_size: expected an integer"),
    ("pooling", "mean", r"stage\.pooling: expected one of 'avg', 'max', got 'mean'"),
    ("dense", [64, "x"], r"stage\.dense\[1\]: expected an integer"),
    ("augment", "yes", r"stage\.augment: expected true or false"),
    ("blocks", "conv", r"stage\.blocks: expected a list"),
])
def test_a_bad_value_names_its_dotted_key(key, value, message):
    with pytest.raises(SettingsError, match=r"^params\.yaml: " + message):
        from_section(Example, {**GOOD, key: value}, "stage")


def test_a_missing_key_is_an_error_not_a_default():
    values = {k: v for k, v in GOOD.items() if k != "dense"}
    with pytest.raises(SettingsError, match=r"missing stage\.dense"):
        from_section(Example, values, "stage")


def test_extra_supplies_fields_from_elsewhere():
    values = {k: v for k, v in GOOD.items() if k != "image_size"}
    assert from_section(Example, values, "stage", image_size=96).image_size == 96


def test_section_names_the_missing_part():
    params = {"a": {"b": {"c": 1}}}
    assert section(params, "a.b") == {"c": 1}
    with pytest.raises(SettingsError, match=r"missing section 'a\.x'"):
        section(params, "a.x.y")


def test_value_reads_one_dotted_key_typed():
    params = {"data": {"raw_dir": "data/raw", "breeds": "all"}, "seed": 3}
    assert value(params, "data.raw_dir", Path) == Path("data/raw")
    assert value(params, "seed", int) == 3
    with pytest.raises(SettingsError, match=r"^params\.yaml: data\.breeds: expected a list"):
        value(params, "data.breeds", tuple[str, ...])
    with pytest.raises(SettingsError, match=r"^params\.yaml: missing data\.image_size"):
        value(params, "data.image_size", int)
    with pytest.raises(SettingsError, match=r"missing section 'base'"):
        value(params, "base.seed", int)

