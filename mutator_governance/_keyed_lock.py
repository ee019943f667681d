"""One lock per state id inside one process, so one executor never races itself."""

from __future__ import annotations

import anyio

__all__ = ["KeyedLock"]


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.users = 0


class KeyedLock:
    """One lock per key, created on first use and dropped when nobody holds or awaits it."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        """How many keys are held or awaited right now."""
        return len(self._entries)

    async def acquire(self, key: str) -> None:
        """Wait for ``key``'s lock and take it."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        try:
            await entry.lock.acquire()
        except BaseException:
            self._forget(key, entry)
            raise

    def release(self, key: str) -> None:
        """Release ``key``'s lock (taken by :meth:`acquire`)."""
        entry = self._entries[key]
        entry.lock.release()
        self._forget(key, entry)

    def _forget(self, key: str, entry: _Entry) -> None:
        entry.users -= 1
        if not entry.users:
            del self._entries[key]
