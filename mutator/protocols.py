"""The seams of the core runtime: implement these to plug in your own stores.

Implementations never need to inherit from these protocols. The promises written here are
what :mod:`mutator.testing` checks: run its contract suites against your implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from ._records import AuditEntry, AuditOutcome, HistoryEntry, MutationHistory
from ._statistics import EngineStatistics

__all__ = ["AuditSink", "HistoryStore", "MetricsCollector"]


class AuditSink(Protocol):
    """Receives one :class:`AuditEntry` per execution attempt.

    A sink keeps every entry it is given (recording is not idempotent: the engine records
    each attempt once) and gives entries back exactly as recorded, with their types.
    Concurrent ``record`` calls from many tasks must all be kept. State ids are opaque
    strings (any characters, including separators and wildcards of the backing store).
    """

    async def record(self, entry: AuditEntry) -> None:
        """Persist ``entry``."""

    async def entries(
        self,
        state_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEntry]:
        """Entries in the order they were recorded (oldest first), optionally for one state
        and within inclusive bounds on ``executed_at``.

        Bounds are timezone-aware and compare instants, whatever their UTC offset; a
        ``since`` later than ``until`` selects nothing.
        """


class HistoryStore(Protocol):
    """Keeps the committed history of each state.

    Each state's entries stay in append order (not sorted by ``executed_at``). A store need
    not keep :attr:`HistoryEntry.mutation`; every other field must come back exactly, with
    its type. Concurrent appends, to one state or many, must all be kept. State ids are
    opaque strings (any characters, including separators and wildcards of the backing store).
    """

    async def append(self, entry: HistoryEntry) -> None:
        """Append ``entry`` to its state's history."""

    async def history(self, state_id: str) -> MutationHistory[Any]:
        """The whole history of ``state_id`` (empty when unknown)."""

    async def between(
        self, state_id: str, start: datetime, end: datetime
    ) -> Sequence[HistoryEntry]:
        """Entries executed within the inclusive bounds, in append order.

        Bounds are timezone-aware and compare instants; ``start`` after ``end`` selects
        nothing.
        """

    async def recent(self, state_id: str, limit: int) -> Sequence[HistoryEntry]:
        """At most ``limit`` most recently appended entries, newest first.

        ``limit`` 0 gives nothing; a negative ``limit`` raises :class:`ValueError`.
        """


class MetricsCollector(Protocol):
    """Receives one sample per execution; must be cheap and must not block.

    ``record`` is a plain (not ``async``) call, made from many tasks at once; no sample may
    be lost.
    """

    def record(self, outcome: AuditOutcome, duration: float) -> None:
        """Record one execution that took ``duration`` seconds."""

    def statistics(self) -> EngineStatistics:
        """Aggregate of what was recorded; reading it changes nothing.

        ``total_executed`` counts every sample, ``succeeded`` those with outcome
        ``SUCCEEDED`` and ``failed`` all others. The latency figures (``mean``, ``minimum``,
        ``maximum``, ``p50`` ≤ ``p95`` ≤ ``p99``) describe the last ``window`` samples; a
        collector that has recorded nothing returns ``EngineStatistics()`` (all zero).
        """
