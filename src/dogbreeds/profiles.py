"""Params profiles: named sets of overrides merged into params.yaml, comments kept.

``profiles/<name>.yaml`` holds only the keys a profile changes (the real sample, a tiny
debug run); ``dogbreeds profile NAME -S key=value`` writes them into ``params.yaml`` the way
``dvc exp run -S`` would, so ``git diff params.yaml`` shows exactly what changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: keeps comments, order and flow style
    yaml.preserve_quotes = True
    yaml.width = 100
    return yaml


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=[1, 2]"`` → ``(["a", "b"], [1, 2])``: the value is read as YAML.

    Raises:
        ValueError: when there is no ``=`` or no key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override must look like key.path=value, got {text!r}")
    return key.strip().split("."), YAML(typ="safe").load(value) if value.strip() else None


def set_path(tree: dict, keys: list[str], value: Any) -> None:
    """Set ``tree[k0][k1]...= value``, creating mappings on the way."""
    node = tree
    for key in keys[:-1]:
        if not isinstance(node.get(key), Mapping):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def merge(base: dict, overrides: Mapping) -> None:
    """Deep-merge ``overrides`` into ``base`` in place (mappings merge, anything else replaces)."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and value and isinstance(base.get(key), Mapping):
            merge(base[key], value)
        else:
            base[key] = value


def apply_profile(params_path: Path, profile_path: Path | None = None,
                  overrides: Iterable[str] = ()) -> None:
    """Merge a profile file and then ``key=value`` overrides into ``params_path``."""
    yaml = _yaml()
    params = yaml.load(params_path.read_text(encoding="utf-8"))
    if profile_path is not None:
        if not profile_path.exists():
            available = sorted(p.stem for p in profile_path.parent.glob("*.yaml"))
            raise FileNotFoundError(f"no profile {profile_path.stem!r}; available: {available}")
        merge(params, YAML(typ="safe").load(profile_path.read_text(encoding="utf-8")) or {})
    for text in overrides:
        keys, value = parse_override(text)
        set_path(params, keys, value)
    with open(params_path, "w", encoding="utf-8") as f:
        yaml.dump(params, f)
