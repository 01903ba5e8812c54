"""Profiles: overrides merged into params.yaml with its comments kept (and the CLI)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from dogbreeds.cli import main
from dogbreeds.profiles import apply_profile, parse_override
from support.project import REPO


@pytest.fixture
def params(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    return path


def test_override_values_are_read_as_yaml():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("x=none") == (["x"], "none")
    assert parse_override("x={a.tar: 1}") == (["x"], {"a.tar": 1})
    with pytest.raises(ValueError, match="key.path=value"):
        parse_override("novalue")


def test_profile_merges_deeply_and_keeps_comments(params):
    before = yaml.safe_load(params.read_text())
    apply_profile(params, REPO / "profiles" / "debug.yaml", ["train_scratch.epochs=7"])
    after = yaml.safe_load(params.read_text())
    assert after["train_scratch"]["epochs"] == 7                      # the override wins
    assert after["train_scratch"]["image_size"] == 32                 # from the profile
    assert after["train_scratch"]["learning_rate"] == before["train_scratch"]["learning_rate"]
    assert after["download"]["checksums"] == before["download"]["checksums"]  # merged, not replaced
    assert "# global seed" in params.read_text()                       # comments survive


def test_every_shipped_profile_names_only_existing_params(params):
    known = yaml.safe_load(params.read_text())

    def check(tree, base, where):
        for key, value in tree.items():
            assert key in base, f"{where}{key} is not a param"
            if isinstance(value, dict) and isinstance(base[key], dict) and base[key]:
                check(value, base[key], f"{where}{key}.")

    for profile in (REPO / "profiles").glob("*.yaml"):
        check(yaml.safe_load(profile.read_text()), known, f"{profile.name}: ")


def test_cli_profile_command(params, capsys):
    assert main(["profile", "none", "--params", str(params), "-S", "data.breeds=all"]) == 0
    assert yaml.safe_load(params.read_text())["data"]["breeds"] == "all"
    with pytest.raises(FileNotFoundError, match="no profile 'nope'"):
        main(["profile", "nope", "--params", str(params),
              "--profiles-dir", str(REPO / "profiles")])
