"""Typed settings: frozen dataclasses read from a ``params.yaml`` section, checked once.

``params.yaml`` is the only place defaults live: a settings dataclass declares fields and their
types, never default values, and :func:`from_section` requires every field to be in the
section. A wrong or missing value fails at once with the dotted key that is wrong
(``train_scratch.epochs: expected an integer, got 'ten'``), not deep inside Keras.

Supported field types: ``int``, ``float``, ``bool``, ``str``, ``Path``, ``Literal[...]``,
``X | None``, ``tuple[X, ...]`` (from a YAML list), and ``dict``/``list``/``Any`` (taken as
they are, for nested structures such as a CNN's block list). Extra keys in a section are
allowed: a section also holds what other stages or ``dvc.yaml`` read (``output`` paths).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_MISSING = object()


class SettingsError(ValueError):
    """A params value is missing or has the wrong type; the message names the key."""


def section(params: Mapping[str, Any], dotted: str) -> Mapping[str, Any]:
    """``params["a"]["b"]`` for ``"a.b"``, with an error naming the missing key."""
    node: Any = params
    for i, key in enumerate(dotted.split(".")):
        if not isinstance(node, Mapping) or key not in node:
            where = ".".join(dotted.split(".")[: i + 1])
            raise SettingsError(f"params.yaml: missing section {where!r}")
        node = node[key]
    if not isinstance(node, Mapping):
        raise SettingsError(f"params.yaml: {dotted} must be a mapping, got {node!r}")
    return node


def from_section(cls: type[T], values: Mapping[str, Any], prefix: str, **extra: Any) -> T:
    """Build the frozen dataclass ``cls`` from ``values`` (a params section named ``prefix``).

    ``extra`` supplies fields that do not come from this section (e.g. a value resolved from
    another one); everything else must be in ``values``.
    """
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        if field.name in extra:
            kwargs[field.name] = extra[field.name]
            continue
        raw = values.get(field.name, _MISSING)
        if raw is _MISSING:
            raise SettingsError(f"params.yaml: missing {prefix}.{field.name}")
        try:
            kwargs[field.name] = coerce(raw, hints[field.name], f"{prefix}.{field.name}")
        except SettingsError as exc:
            raise SettingsError(f"params.yaml: {exc}") from None
    return cls(**kwargs)


def coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` as type ``hint``, or a :class:`SettingsError` naming ``key``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(value, option, key)
            except SettingsError as exc:
                errors.append(str(exc))
        raise SettingsError(errors[0] if len(errors) == 1 else
                            f"{key}: {value!r} matches none of {', '.join(map(_name, options))}")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(map(repr, args))
            raise SettingsError(f"{key}: expected one of {choices}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if hint in (Any, dict, list) or origin in (dict, list, Mapping):
        expected = {dict: Mapping, list: list, Mapping: Mapping}.get(origin or hint)
        if expected is not None and not isinstance(value, expected):
            raise SettingsError(f"{key}: expected a {_name(origin or hint)}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SettingsError(f"{key}: expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)) or not str(value):
            raise SettingsError(f"{key}: expected a path, got {value!r}")
        return Path(value)
    raise TypeError(f"{key}: settings field type {hint!r} is not supported")


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def value(params: Mapping[str, Any], dotted: str, hint: Any) -> Any:
    """The value at the dotted key (``"data.raw_dir"``) as type ``hint``; a missing or wrong
    value is a :class:`SettingsError` naming the key. For a settings field that comes from
    another section (pass it to :func:`from_section` as an ``extra``)."""
    parent, _, key = dotted.rpartition(".")
    values = section(params, parent) if parent else params
    if key not in values:
        raise SettingsError(f"params.yaml: missing {dotted}")
    try:
        return coerce(values[key], hint, dotted)
    except SettingsError as exc:
        raise SettingsError(f"params.yaml: {exc}") from None
