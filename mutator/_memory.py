"""In-memory audit sink and history store: the reference implementations of the protocols."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ._records import AuditEntry, HistoryEntry, MutationHistory

__all__ = ["InMemoryAuditSink", "InMemoryHistoryStore", "NullAuditSink", "NullHistoryStore"]


class InMemoryAuditSink:
    """Keeps every audit entry in a list (for tests, examples and small services)."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: list[AuditEntry] = []

    async def record(self, entry: AuditEntry) -> None:
        self._entries.append(entry)

    async def entries(
        self,
        state_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEntry]:
        return [
            entry
            for entry in self._entries
            if (state_id is None or entry.state_id == state_id)
            and (since is None or entry.executed_at >= since)
            and (until is None or entry.executed_at <= until)
        ]

    def all(self) -> tuple[AuditEntry, ...]:
        """Every entry recorded so far, oldest first."""
        return tuple(self._entries)

    def clear(self) -> None:
        self._entries.clear()


class InMemoryHistoryStore:
    """Keeps each state's committed history in a list."""

    __slots__ = ("_by_state",)

    def __init__(self) -> None:
        self._by_state: dict[str, list[HistoryEntry]] = {}

    async def append(self, entry: HistoryEntry) -> None:
        entries = self._by_state.get(entry.state_id)
        if entries is None:
            self._by_state[entry.state_id] = [entry]
        else:
            entries.append(entry)

    async def history(self, state_id: str) -> MutationHistory[Any]:
        return MutationHistory(state_id, tuple(self._by_state.get(state_id, ())))

    async def between(
        self, state_id: str, start: datetime, end: datetime
    ) -> Sequence[HistoryEntry]:
        return [e for e in self._by_state.get(state_id, ()) if start <= e.executed_at <= end]

    async def recent(self, state_id: str, limit: int) -> Sequence[HistoryEntry]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        entries = self._by_state.get(state_id, [])
        return entries[::-1][:limit]

    def state_ids(self) -> tuple[str, ...]:
        return tuple(self._by_state)


class NullAuditSink:
    """Discards audit entries; the engine skips building them when it sees this sink."""

    __slots__ = ()

    async def record(self, entry: AuditEntry) -> None:
        return None

    async def entries(
        self,
        state_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEntry]:
        return ()


class NullHistoryStore:
    """Discards history; the engine skips building entries when it sees this store."""

    __slots__ = ()

    async def append(self, entry: HistoryEntry) -> None:
        return None

    async def history(self, state_id: str) -> MutationHistory[Any]:
        return MutationHistory(state_id)

    async def between(
        self, state_id: str, start: datetime, end: datetime
    ) -> Sequence[HistoryEntry]:
        return ()

    async def recent(self, state_id: str, limit: int) -> Sequence[HistoryEntry]:
        return ()
