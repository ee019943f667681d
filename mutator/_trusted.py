"""Trusted constructors of frozen attrs classes, for values the library itself assembled.

A public constructor converts and validates every field (``to_tuple``, ``ChangeSet``
coercion, ...). On the engine's hot path the inputs are already the frozen values those
converters would produce, so :func:`trusted` builds the instance directly: it stores each
argument in its slot and runs no converter, validator, default or ``__attrs_post_init__``.
Only code that guarantees the field types may call one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import MemberDescriptorType
from typing import Any, TypeVar

import attrs

__all__ = ["trusted"]

T = TypeVar("T")


def trusted(cls: type[T]) -> Callable[..., T]:
    """A constructor taking every attrs field of ``cls`` positionally, in declaration order."""
    if not attrs.has(cls):
        raise TypeError(f"{cls.__qualname__} is not an attrs class")
    names = [field.name for field in attrs.fields(cls)]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def build({', '.join(names)}):", "    _instance = _new(_cls)"]
    for name in names:
        setter = f"_set_{name}"
        slot = inspect.getattr_static(cls, name, None)
        if not isinstance(slot, MemberDescriptorType):
            raise TypeError(f"{cls.__qualname__}.{name} is not a slot")
        namespace[setter] = slot.__set__
        lines.append(f"    {setter}(_instance, {name})")
    lines.append("    return _instance")
    exec("\n".join(lines), namespace)  # generated from the field names only
    build: Callable[..., T] = namespace["build"]
    build.__qualname__ = f"trusted({cls.__qualname__})"
    return build
