"""Typed option checks shared by the config (``hkt.config``) and the option mappings nested inside it
(``data.augment``): a leaf, importing nothing from hkt, so any module can check its options without an import circle."""

from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # a library's annotation we cannot resolve: no type checks for that object
        return {}


def _accepts(hint: Any, value: Any) -> bool | None:
    """Whether ``value`` fits ``hint``; ``None`` when the hint is not a plain number/bool/str type we check."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (list, tuple, collections.abc.Sequence) and typing.get_args(hint):
        if not isinstance(value, (list, tuple)):
            return False
        verdicts = [_accepts(typing.get_args(hint)[0], v) for v in value]
        return False if False in verdicts else None if None in verdicts else True
    if origin in (typing.Union, types.UnionType):
        verdicts = [_accepts(h, value) for h in typing.get_args(hint)]
        return True if True in verdicts else None if None in verdicts else False
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return None


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) in (list, tuple, collections.abc.Sequence) and typing.get_args(hint):
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def check_types(options: dict[str, Any], fn: Any, where: str) -> None:
    """Raise ``ConfigError`` naming the key, the value and the expected type when a number, bool or string
    option of ``fn`` has a value of another type (e.g. ``lr: "1e-3"`` quoted, or ``max_epochs: 2.5``)."""
    hints = _hints(fn)
    for key, value in options.items():
        if key in hints and _accepts(hints[key], value) is False:
            choice = typing.get_origin(hints[key]) is typing.Literal
            raise ConfigError(
                f"config key '{where}{key}' must be {_type_name(hints[key])}, got {value!r}"
                + ("" if choice else f" ({type(value).__name__}); write numbers unquoted, e.g. lr: 0.001 or lr: 1e-3")
            )
