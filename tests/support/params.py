"""The repository's params.yaml, and copies of it with one section changed."""

from __future__ import annotations

import copy

import yaml

from support.project import REPO

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def with_changes(section: str, **changes) -> dict:
    """A deep copy of :data:`PARAMS` with ``changes`` applied to ``PARAMS[section]``."""
    params = copy.deepcopy(PARAMS)
    params[section].update(changes)
    return params
