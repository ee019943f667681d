"""Concurrency gate: a global limit plus one lock per state id, evicted when idle.

The gate keeps its own bookkeeping (free slots, held states, FIFO queues of waiters) so an
uncontended caller passes with a few dictionary operations and no anyio primitive: see
:meth:`ConcurrencyGate.try_enter`. Only a caller that has to wait creates an
:class:`anyio.Event`; whoever leaves hands its state (or its slot) directly to the first
waiter, so waiters are served in arrival order and a newcomer never overtakes them.

:class:`KeyedLock` (one anyio lock per key) serves callers that only need per-key locks.
"""

from __future__ import annotations

from collections import deque

import anyio
import anyio.lowlevel

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
    holds no slot that another state could use (no head-of-line blocking). A state is
    tracked only while somebody holds or awaits it, so the map stays as small as the
    number of states in use.

    ``_states`` maps a held state id to the queue of callers waiting for it (None while
    nobody waits). A released state or slot goes straight to the first waiter, whose
    event is then set: that waiter owns it even if it is cancelled before it resumes,
    in which case it passes it on.
    """

    __slots__ = ("_free", "_limit", "_slot_waiters", "_states")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._free = limit
        self._slot_waiters: deque[anyio.Event] = deque()
        self._states: dict[str, deque[anyio.Event] | None] = {}

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def tracked_states(self) -> int:
        """How many state locks exist right now (held or awaited)."""
        return len(self._states)

    def try_enter(self, state_id: str | None) -> bool:
        """Take the state and a slot at once if both are free and nobody waits; no await.

        Not a cancel point: the caller checks for cancellation before (the engine does).

        A free slot implies that nobody waits for one (slots are handed to waiters), and a
        state nobody holds has no waiters, so passing here never overtakes anyone.
        """
        if self._free and (state_id is None or state_id not in self._states):
            self._free -= 1
            if state_id is not None:
                self._states[state_id] = None
            return True
        return False

    async def enter(self, state_id: str | None) -> None:
        """Wait for ``state_id``'s lock (if any), then for a global slot.

        A cancel point even when nothing has to be waited for.
        """
        if state_id is not None:
            await self._acquire_state(state_id)
            try:
                await self._acquire_slot()
            except BaseException:
                self._release_state(state_id)
                raise
        else:
            await self._acquire_slot()

    def leave(self, state_id: str | None) -> None:
        """Release what :meth:`enter` or :meth:`try_enter` took."""
        waiters = self._slot_waiters
        if waiters:
            waiters.popleft().set()
        else:
            self._free += 1
        if state_id is not None:
            queue = self._states[state_id]
            if queue:
                queue.popleft().set()
            else:
                del self._states[state_id]

    async def _acquire_state(self, state_id: str) -> None:
        states = self._states
        if state_id not in states:
            await anyio.lowlevel.checkpoint_if_cancelled()
            if state_id not in states:
                states[state_id] = None
                return
        queue = states[state_id]
        if queue is None:
            queue = states[state_id] = deque()
        event = anyio.Event()
        queue.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self._release_state(state_id)  # it was handed to us: pass it on
            else:
                queue.remove(event)
            raise

    def _release_state(self, state_id: str) -> None:
        queue = self._states[state_id]
        if queue:
            queue.popleft().set()
        else:
            del self._states[state_id]

    async def _acquire_slot(self) -> None:
        if self._free:
            await anyio.lowlevel.checkpoint_if_cancelled()
            if self._free:
                self._free -= 1
                return
        event = anyio.Event()
        self._slot_waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self._release_slot()  # it was handed to us: pass it on
            else:
                self._slot_waiters.remove(event)
            raise

    def _release_slot(self) -> None:
        if self._slot_waiters:
            self._slot_waiters.popleft().set()
        else:
            self._free += 1
