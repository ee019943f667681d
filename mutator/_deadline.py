"""Awaiting user code under an execution deadline, paying for a cancel scope only when needed.

Synchronous work cannot be interrupted; the engine checks the clock after it returns.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import anyio

__all__ = ["DeadlineExpired", "bounded", "bounded_call"]


class DeadlineExpired(Exception):
    """The execution deadline passed while awaiting user code."""


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
    if inspect.isawaitable(outcome):
        return await bounded(outcome, deadline)
    return outcome
