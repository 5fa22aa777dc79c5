"""Loading dataclass configs from YAML files and plain dicts with errors that name the bad key:
unknown and missing keys, and values of the wrong type (``momentum: abc``) are refused before any
code compares or computes with them."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def from_dict(cls: type[T], values: dict[str, Any], *, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``values``; unknown and missing keys are errors naming them."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping of settings, got {type(values).__name__}")
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; accepted keys are {sorted(known)}")
    required = [
        f.name
        for f in fields
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in values]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    hints = typing.get_type_hints(cls)
    wrong = [
        f"{key}={value!r}: expected {_describe(hints[key])}"
        for key, value in values.items()
        if not _matches(value, hints[key])
    ]
    if wrong:
        raise ValueError(f"{where}: " + "; ".join(wrong))
    return cls(**values)


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as YAML or the command line gives it) fits the field type ``hint``: an
    int is a float, a bool is neither, a list is a tuple; container contents are not checked."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    kind = origin or hint
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in (list, tuple):
        return isinstance(value, (list, tuple))
    return isinstance(value, kind) if isinstance(kind, type) else True


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    kind = typing.get_origin(hint) or hint
    return {
        float: "a number",
        int: "an integer",
        str: "a string",
        bool: "true or false",
        dict: "a mapping",
        list: "a list",
        tuple: "a list",
    }.get(kind, getattr(kind, "__name__", str(kind)))


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping, naming the file in every error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise ValueError(f"config file {path}: expected a mapping at the top level, got {type(values).__name__}")
    return values
