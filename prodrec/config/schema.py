"""Build nested config dataclasses from plain dicts, checking every key and value type.

Used by :mod:`prodrec.config.sections`; knows nothing about prodrec's sections.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, List, Literal, Optional, Union
from prodrec.utils import ProdrecError, brief

__all__ = ["ConfigError", "merge_into"]


class ConfigError(ProdrecError):
    """A config key is unknown, missing or has a value of the wrong type."""


def merge_into(target: Any, data: Any, where: str) -> None:
    """Update the dataclass ``target`` in place from ``data``; ``where`` prefixes key names in errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {brief(data)}")
    hints = typing.get_type_hints(type(target))
    names = [f.name for f in dataclasses.fields(target)]
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {brief(path)}; known keys here: {names}")
        hint = hints[key]
        nested = _dataclass_in(hint)
        if nested is not None and isinstance(value, dict):
            current = getattr(target, key)
            if current is None:
                current = nested()
            merge_into(current, value, path)
            setattr(target, key, current)
        else:
            setattr(target, key, _check_type(value, hint, path))


def _dataclass_in(hint: Any) -> Optional[type]:
    candidates = typing.get_args(hint) if typing.get_origin(hint) is Union else (hint,)
    for candidate in candidates:
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _check_type(value: Any, hint: Any, path: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Union:
        for arg in args:
            try:
                return _check_type(value, arg, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {brief(value)} is not a valid value (expected {_describe(hint)})")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{path}: {brief(value)} is not one of {list(args)}")
    if origin in (list, List):
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {brief(value)}")
        return [_check_type(item, args[0], f"{path}[{i}]") for i, item in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {brief(value)}")
        return {str(k): _check_type(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{path}: expected null")
    if dataclasses.is_dataclass(hint):
        raise ConfigError(f"{path}: expected a mapping of {hint.__name__} keys, got {brief(value)}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{path}: expected an integer, got {brief(value)}")
    if not isinstance(value, hint):
        raise ConfigError(f"{path}: expected {_describe(hint)}, got {brief(value)} ({type(value).__name__})")
    return value


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Union:
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))
