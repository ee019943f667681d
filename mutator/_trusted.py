"""Trusted constructors of frozen attrs classes, for values the library itself assembled.

A public constructor converts and validates every field (``to_tuple``, ``ChangeSet``
coercion, ...). On the engine's hot path the inputs are already the frozen values those
converters would produce, so :func:`trusted` builds the instance directly: it stores each
argument in its slot and runs no converter, validator, default or ``__attrs_post_init__``.
Only code that guarantees the field types may call one.

How: a frozen class refuses ``setattr``, and going around that through each slot's
``__set__`` costs a C call per field. Instead the instance is born as a private subclass
that adds no slot and keeps ``object.__setattr__`` (so each field is a plain, specialized
slot store), then becomes an instance of the class itself by ``__class__`` assignment,
which Python allows between classes of one memory layout. What the caller gets is an
ordinary instance of ``cls``, indistinguishable from one its constructor made.
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Callable
from types import MemberDescriptorType
from typing import Any, TypeVar

import attrs

__all__ = ["builder", "trusted"]

T = TypeVar("T")


def trusted(cls: type[T]) -> Callable[..., T]:
    """A constructor taking every attrs field of ``cls`` positionally, in declaration order."""
    if not attrs.has(cls):
        raise TypeError(f"{cls.__qualname__} is not an attrs class")
    names = [field.name for field in attrs.fields(cls)]
    for name in names:
        if not isinstance(inspect.getattr_static(cls, name, None), MemberDescriptorType):
            raise TypeError(f"{cls.__qualname__}.{name} is not a slot")
        if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("__"):
            raise TypeError(f"{cls.__qualname__}.{name} cannot be stored by a trusted constructor")
    namespace: dict[str, Any] = {
        "_new": object.__new__,
        "_cls": cls,
        "_builder": _builder(cls),
    }
    make = "_builder()" if cls.__new__ is object.__new__ else "_new(_builder)"
    lines = [f"def build({', '.join(names)}):", f"    _instance = {make}"]
    lines += [f"    _instance.{name} = {name}" for name in names]
    lines += ["    _instance.__class__ = _cls", "    return _instance"]
    exec("\n".join(lines), namespace)  # generated from the field names only
    build: Callable[..., T] = namespace["build"]
    build.__qualname__ = f"trusted({cls.__qualname__})"
    return build


def builder(cls: type[Any]) -> type[Any]:
    """The class :func:`trusted` builds ``cls`` instances as, for code generated inline.

    ``builder(cls)()`` (no ``__init__`` runs; ``object.__new__(builder(cls))`` when ``cls``
    has its own ``__new__``), one plain store per field, then ``instance.__class__ = cls``:
    the same steps as a trusted constructor, without its call.
    """
    if not attrs.has(cls):
        raise TypeError(f"{cls.__qualname__} is not an attrs class")
    for field in attrs.fields(cls):
        if not isinstance(inspect.getattr_static(cls, field.name, None), MemberDescriptorType):
            raise TypeError(f"{cls.__qualname__}.{field.name} is not a slot")
    return _builder(cls)


def _builder(cls: type[Any]) -> type[Any]:
    """A subclass of ``cls`` with its layout (no slot of its own) that allows plain stores."""
    namespace: dict[str, Any] = {
        "__slots__": (),
        "__module__": cls.__module__,
        "__qualname__": f"{cls.__qualname__}.<trusted builder>",
        # Both, or Python would route every store through a slow generic wrapper.
        "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__,
        # Calling the builder makes a bare instance (cheaper than object.__new__(builder)).
        "__init__": object.__init__,
    }
    metaclass: Any = type(cls)  # ABCMeta for ChangeSet, plain type for the others
    builder: type[Any] = metaclass(cls.__name__, (cls,), namespace)
    return builder
