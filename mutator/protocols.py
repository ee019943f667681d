"""The seams of the core runtime: implement these to plug in your own stores.

Implementations never need to inherit from these protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from ._records import AuditEntry, AuditOutcome, HistoryEntry, MutationHistory
from ._statistics import EngineStatistics

__all__ = ["AuditSink", "HistoryStore", "MetricsCollector"]


class AuditSink(Protocol):
    """Receives one :class:`AuditEntry` per execution attempt."""

    async def record(self, entry: AuditEntry) -> None:
        """Persist ``entry``."""

    async def entries(
        self,
        state_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEntry]:
        """Entries (oldest first), optionally for one state and within inclusive bounds
        on ``executed_at``."""


class HistoryStore(Protocol):
    """Keeps the committed history of each state."""

    async def append(self, entry: HistoryEntry) -> None:
        """Append ``entry`` to its state's history."""

    async def history(self, state_id: str) -> MutationHistory[Any]:
        """The whole history of ``state_id`` (empty when unknown)."""

    async def between(
        self, state_id: str, start: datetime, end: datetime
    ) -> Sequence[HistoryEntry]:
        """Entries executed within the inclusive bounds, oldest first."""

    async def recent(self, state_id: str, limit: int) -> Sequence[HistoryEntry]:
        """At most ``limit`` newest entries, newest first."""


class MetricsCollector(Protocol):
    """Receives one sample per execution; must be cheap and must not block."""

    def record(self, outcome: AuditOutcome, duration: float) -> None:
        """Record one execution that took ``duration`` seconds."""

    def statistics(self) -> EngineStatistics:
        """Aggregate of what was recorded."""
