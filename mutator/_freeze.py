"""Converters that make fields of frozen values read-only."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["EMPTY_MAPPING", "freeze_mapping", "name_set", "names", "to_frozenset", "to_tuple"]

EMPTY_MAPPING: Mapping[Any, Any] = MappingProxyType({})


def freeze_mapping(value: Mapping[Any, Any] | None) -> Mapping[Any, Any]:
    """Return a read-only copy of ``value`` (values are kept as they are)."""
    if not value:
        return EMPTY_MAPPING
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return MappingProxyType(dict(value))


def to_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    """``value`` as a tuple (a tuple is returned unchanged)."""
    return value if type(value) is tuple else tuple(value)


def to_frozenset(value: Iterable[Any]) -> frozenset[Any]:
    """``value`` as a frozenset (a frozenset is returned unchanged)."""
    return value if type(value) is frozenset else frozenset(value)


def names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """A name or names as a tuple of non-blank strings (a lone string is one name)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    return tuple(v for v in value if isinstance(v, str) and v.strip())


def name_set(value: str | Iterable[str]) -> frozenset[str]:
    """Like :func:`names`, as a frozenset."""
    return frozenset(names(value))
