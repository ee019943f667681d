"""Concurrency primitives the engine uses, for packages built on mutator (public API).

:class:`KeyedLock` is one anyio lock per key, created on first use and dropped when idle:
the engine serializes executions per state id with it, and the governance package uses it
to keep one process from racing itself on a state.
"""

from __future__ import annotations

from ._gate import KeyedLock

__all__ = ["KeyedLock"]
