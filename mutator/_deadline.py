"""Awaiting user code under an execution deadline, paying for a cancel scope only when needed.

Synchronous work cannot be interrupted; the engine checks the clock after it returns.
Whether a returned value must be awaited is answered once per type (:func:`is_awaitable`),
not by :func:`inspect.isawaitable` on every call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import GeneratorType
from typing import Any, Final

import anyio

__all__ = ["AWAITABLE_TYPES", "DeadlineExpired", "bounded", "bounded_call", "is_awaitable"]


class DeadlineExpired(Exception):
    """The execution deadline passed while awaiting user code."""


AWAITABLE_TYPES: Final[dict[type[Any], bool]] = {}
"""Per type: whether its instances are awaitable (read directly on hot paths)."""

_CACHE_LIMIT: Final = 4096


def is_awaitable(value: object) -> bool:
    """:func:`inspect.isawaitable`, remembered per type.

    Generators are asked every time: whether one is awaitable is a flag of its code object
    (``types.coroutine``), not of its type. Types created at run time beyond a few thousand
    are not remembered, so the cache stays bounded.
    """
    cls = type(value)
    known = AWAITABLE_TYPES.get(cls)
    if known is not None:
        return known
    answer = inspect.isawaitable(value)
    if cls is not GeneratorType and len(AWAITABLE_TYPES) < _CACHE_LIMIT:
        AWAITABLE_TYPES[cls] = answer
    return answer


async def bounded(awaitable: Any, deadline: float | None) -> Any:
    """Await ``awaitable``, interrupting it at ``deadline`` (``anyio.current_time()`` clock)."""
    if deadline is None:
        return await awaitable
    with anyio.CancelScope(deadline=deadline):
        return await awaitable
    raise DeadlineExpired


async def bounded_call(method: Callable[[Any], Any], state: Any, deadline: float | None) -> Any:
    """Call ``method(state)``; await the result under ``deadline`` when it is awaitable."""
    outcome = method(state)
    if is_awaitable(outcome):
        return await bounded(outcome, deadline)
    return outcome
