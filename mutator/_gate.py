"""Concurrency gate: a global limit plus one lock per state id, evicted when idle."""

from __future__ import annotations

import anyio

__all__ = ["ConcurrencyGate", "KeyedLock"]


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = anyio.Lock(fast_acquire=True)
        self.users = 0


class KeyedLock:
    """One lock per key, created on first use and dropped when nobody holds or awaits it.

    Dropped locks go to a small free list and are reused for other keys, so an
    uncontended acquire allocates nothing; the map itself never outgrows the keys in use.
    """

    __slots__ = ("_entries", "_free")

    _FREE_LIMIT = 64

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._free: list[_Entry] = []

    def __len__(self) -> int:
        """How many keys are held or awaited right now."""
        return len(self._entries)

    async def acquire(self, key: str) -> None:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._free.pop() if self._free else _Entry()
        entry.users += 1
        try:
            await entry.lock.acquire()
        except BaseException:
            self._forget(key, entry)
            raise

    def release(self, key: str) -> None:
        entry = self._entries[key]
        entry.lock.release()
        self._forget(key, entry)

    def _forget(self, key: str, entry: _Entry) -> None:
        entry.users -= 1
        if not entry.users:
            del self._entries[key]
            if len(self._free) < self._FREE_LIMIT:
                self._free.append(entry)


class ConcurrencyGate:
    """Serializes executions per state and bounds how many run at once.

    The state lock is taken before the global slot, so a caller queued behind a busy state
    holds no slot that another state could use (no head-of-line blocking). A state's lock
    is dropped as soon as nobody holds or waits for it, so the map stays as small as the
    number of states in use.
    """

    __slots__ = ("_limit", "_slots", "_states")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots = anyio.Semaphore(limit, fast_acquire=True)
        self._states = KeyedLock()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def tracked_states(self) -> int:
        """How many state locks exist right now (held or awaited)."""
        return len(self._states)

    async def enter(self, state_id: str | None) -> None:
        """Wait for ``state_id``'s lock (if any), then for a global slot."""
        if state_id is None:
            await self._slots.acquire()
            return
        await self._states.acquire(state_id)
        try:
            await self._slots.acquire()
        except BaseException:
            self._states.release(state_id)
            raise

    def leave(self, state_id: str | None) -> None:
        """Release what :meth:`enter` took."""
        self._slots.release()
        if state_id is not None:
            self._states.release(state_id)
