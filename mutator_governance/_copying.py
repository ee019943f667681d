"""Copies of attrs values whose changes the caller has already checked."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from mutator.values import trusted

__all__ = ["attrs_copier"]


def attrs_copier(cls: type[Any]) -> Callable[[Any, Mapping[str, Any]], Any]:
    """``copy(instance, changes)`` for attrs class ``cls``: no converter or validator runs.

    Every field comes from ``changes`` if there, else ``instance``. Generated once from the
    field names, so a copy is one call of a trusted constructor with one expression per
    field (no loop, no ``getattr``). For values whose changes the caller already checked.
    """
    names = [a.name for a in attrs.fields(cls)]
    arguments = ", ".join(f"c[{n!r}] if {n!r} in c else r.{n}" for n in names)
    namespace: dict[str, Any] = {"_build": trusted(cls)}
    exec(f"def copy(r, c):\n    return _build({arguments})", namespace)  # field names only
    copy: Callable[[Any, Mapping[str, Any]], Any] = namespace["copy"]
    return copy
