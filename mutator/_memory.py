"""In-memory audit sink and history store: the reference implementations of the protocols.

Both keep everything by default; give ``max_entries`` to bound them for long-running
services: once full, every append drops the oldest entry (O(1)).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import datetime
from itertools import islice
from typing import Any, cast

from ._errors import ConfigurationError
from ._records import AuditEntry, HistoryEntry, MutationHistory

__all__ = ["InMemoryAuditSink", "InMemoryHistoryStore", "NullAuditSink", "NullHistoryStore"]


def _bound(max_entries: int | None) -> int | None:
    if max_entries is None:
        return None
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise ConfigurationError(f"max_entries must be None or an int >= 1, got {max_entries!r}")
    return max_entries


class InMemoryAuditSink:
    """Keeps audit entries in memory, oldest first (for tests, examples and small services).

    With ``max_entries`` it keeps only the newest ``max_entries`` entries; ``dropped``
    counts the entries discarded to stay within the bound.
    """

    __slots__ = ("_entries", "dropped", "max_entries")

    def __init__(self, *, max_entries: int | None = None) -> None:
        self.max_entries = _bound(max_entries)
        self._entries: deque[AuditEntry] = deque(maxlen=self.max_entries)
        self.dropped = 0

    async def record(self, entry: AuditEntry) -> None:
        """Keep ``entry``; when full, the oldest entry is dropped and counted in ``dropped``."""
        self._keep(entry)

    def _keep(self, entry: AuditEntry) -> None:
        """:meth:`record` without awaiting (the engine calls it directly)."""
        entries = self._entries
        if entries.maxlen is not None and len(entries) == entries.maxlen:
            self.dropped += 1
        entries.append(entry)

    async def entries(
        self,
        state_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEntry]:
        """Kept entries, oldest first, for one state and an ``executed_at`` range if given."""
        return [
            entry
            for entry in self._entries
            if (state_id is None or entry.state_id == state_id)
            and (since is None or entry.executed_at >= since)
            and (until is None or entry.executed_at <= until)
        ]

    def all(self) -> tuple[AuditEntry, ...]:
        """Every entry kept, oldest first."""
        return tuple(self._entries)

    def clear(self) -> None:
        """Forget every kept entry (``dropped`` is left as it is)."""
        self._entries.clear()


class _Log:
    """One state's entries; the first ``head`` slots were dropped (cleared, then compacted).

    Compacting once half the list is dropped keeps each drop amortized O(1).
    """

    __slots__ = ("entries", "head")

    def __init__(self, entry: HistoryEntry) -> None:
        self.entries: list[HistoryEntry | None] = [entry]
        self.head = 0

    def kept(self) -> list[HistoryEntry]:
        kept = self.entries[self.head :] if self.head else self.entries
        return cast("list[HistoryEntry]", kept)  # every slot from head on is an entry

    def drop_oldest(self) -> bool:
        """Drop the oldest entry; True when none is left."""
        entries = self.entries
        entries[self.head] = None
        self.head += 1
        if self.head == len(entries):
            return True
        if self.head * 2 >= len(entries):
            del entries[: self.head]
            self.head = 0
        return False


class InMemoryHistoryStore:
    """Keeps each state's committed history in memory.

    With ``max_entries`` it keeps at most that many entries over all states: each append
    beyond it drops the oldest entry of the store (whatever its state); ``dropped`` counts
    them. A state whose history was trimmed keeps its newest entries, oldest first, so
    :meth:`MutationHistory.replay` of what is kept starts from the state before its first
    entry.
    """

    __slots__ = ("_by_state", "_limit", "_order", "dropped", "max_entries")

    def __init__(self, *, max_entries: int | None = None) -> None:
        self.max_entries = _bound(max_entries)
        self._by_state: dict[str, _Log] = {}
        self._limit = self.max_entries or 0
        self._order: deque[str] | None = None if self.max_entries is None else deque()
        self.dropped = 0

    async def append(self, entry: HistoryEntry) -> None:
        """Add ``entry`` to its state's history; when full, drop the store's oldest entry."""
        self._keep(entry)

    def _keep(self, entry: HistoryEntry) -> None:
        """:meth:`append` without awaiting (the engine calls it directly)."""
        state_id = entry.state_id
        log = self._by_state.get(state_id)
        if log is None:
            self._by_state[state_id] = _Log(entry)
        else:
            log.entries.append(entry)
        order = self._order
        if order is None:
            return
        order.append(state_id)
        if len(order) > self._limit:
            oldest = order.popleft()
            if self._by_state[oldest].drop_oldest():
                del self._by_state[oldest]
            self.dropped += 1

    async def history(self, state_id: str) -> MutationHistory[Any]:
        """The kept history of ``state_id`` (empty when there is none)."""
        log = self._by_state.get(state_id)
        return MutationHistory(state_id, () if log is None else tuple(log.kept()))

    async def between(
        self, state_id: str, start: datetime, end: datetime
    ) -> Sequence[HistoryEntry]:
        """Entries of ``state_id`` executed from ``start`` to ``end`` inclusive, oldest first."""
        log = self._by_state.get(state_id)
        if log is None:
            return []
        return [e for e in log.kept() if start <= e.executed_at <= end]

    async def recent(self, state_id: str, limit: int) -> Sequence[HistoryEntry]:
        """The newest ``limit`` entries of ``state_id``, newest first."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        log = self._by_state.get(state_id)
        if log is None:
            return []
        newest = islice(reversed(log.entries), min(limit, len(log.entries) - log.head))
        return cast("list[HistoryEntry]", list(newest))  # never reaches a dropped slot

    def state_ids(self) -> tuple[str, ...]:
        """The ids of the states that have history kept."""
        return tuple(self._by_state)


class NullAuditSink:
    """Discards audit entries; the engine skips building them when it sees this sink."""

    __slots__ = ()

    async def record(self, entry: AuditEntry) -> None:
        """Discard ``entry``."""

    async def entries(
        self,
        state_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEntry]:
        """Always empty."""
        return ()


class NullHistoryStore:
    """Discards history; the engine skips building entries when it sees this store."""

    __slots__ = ()

    async def append(self, entry: HistoryEntry) -> None:
        """Discard ``entry``."""

    async def history(self, state_id: str) -> MutationHistory[Any]:
        """Always an empty history of ``state_id``."""
        return MutationHistory(state_id)

    async def between(
        self, state_id: str, start: datetime, end: datetime
    ) -> Sequence[HistoryEntry]:
        """Always empty."""
        return ()

    async def recent(self, state_id: str, limit: int) -> Sequence[HistoryEntry]:
        """Always empty."""
        return ()
