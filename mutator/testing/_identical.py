"""Type-exact equality for round-trip tests of durable stores."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

import attrs

__all__ = ["assert_identical"]


def assert_identical(expected: object, actual: object, path: str = "value") -> None:
    """Assert ``actual`` equals ``expected`` with the same types all the way down.

    Plain equality hides what durable stores typically lose: ``1 == 1.0 == True`` and a
    list is not a tuple. Datetimes must stay timezone-aware and denote the same instant
    (the offset may change); mappings may be any Mapping; enum members must be identical;
    attrs fields with ``eq=False`` (such as :attr:`HistoryEntry.mutation`) are not compared.
    """
    if isinstance(expected, datetime):
        assert isinstance(actual, datetime), f"{path}: expected a datetime, got {actual!r}"
        assert actual.utcoffset() is not None, f"{path}: {actual!r} lost its timezone"
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
    elif isinstance(expected, enum.Enum):
        assert actual is expected, f"{path}: {actual!r} is not {expected!r}"
    elif attrs.has(type(expected)):
        assert type(actual) is type(expected), (
            f"{path}: expected {type(expected).__qualname__}, got {type(actual).__qualname__}"
        )
        for field in attrs.fields(cast(Any, type(expected))):
            if field.eq:
                assert_identical(
                    getattr(expected, field.name),
                    getattr(actual, field.name),
                    f"{path}.{field.name}",
                )
    elif isinstance(expected, Mapping):
        assert isinstance(actual, Mapping), f"{path}: expected a mapping, got {actual!r}"
        assert set(actual) == set(expected), f"{path}: keys {set(actual)} != {set(expected)}"
        for key, value in expected.items():
            assert_identical(value, actual[key], f"{path}[{key!r}]")
    elif isinstance(expected, tuple | list | frozenset | set):
        assert type(actual) is type(expected), (
            f"{path}: expected a {type(expected).__name__}, got {actual!r}"
        )
        assert len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        if isinstance(expected, frozenset | set):
            assert actual == expected, f"{path}: {actual!r} != {expected!r}"
            return
        for index, (left, right) in enumerate(zip(expected, cast(Any, actual), strict=True)):
            assert_identical(left, right, f"{path}[{index}]")
    else:
        assert type(actual) is type(expected), (
            f"{path}: expected {type(expected).__name__} {expected!r}, "
            f"got {type(actual).__name__} {actual!r}"
        )
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
