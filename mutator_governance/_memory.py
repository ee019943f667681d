"""In-memory stores: the reference implementations every backend is compared against."""

from __future__ import annotations

import bisect
import builtins
import threading
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from mutator import ConcurrencyError
from mutator.values import trusted

from ._arguments import check_id, check_key, check_version
from ._decisions import RequestDecision
from ._enums import DecisionCategory, PendingReason, RequestStatus
from ._errors import RequestAlreadyExistsError, RequestConcurrencyError, RequestNotFoundError
from ._quarantine import QuarantinedRequest
from ._query import (
    DecisionRecord,
    RequestPage,
    RequestQuery,
    VersionedState,
    listing,
    next_version,
    page_of,
    pending_reason,
    sort_key,
)
from ._request import MutationRequest, evolve_request, expiry_deadline
from ._retention import PurgeBatch, purgeable

__all__ = ["InMemoryDecisionHistory", "InMemoryRequestStore", "InMemoryStateStore"]


_ReadyKey = tuple[datetime, str]
_DueKey = tuple[datetime, str]
_record = trusted(DecisionRecord)
_versioned = trusted(VersionedState)


# Hot paths read enum members from module globals: on Python 3.11 an attribute of an enum
# class is read through EnumType's __getattr__ hook, about 800 instructions each time.
_APPROVED = RequestStatus.APPROVED
_PENDING = RequestStatus.PENDING
_REVALIDATION = PendingReason.REVALIDATION


def _ready_key(request: MutationRequest, revalidation: bool) -> _ReadyKey | None:
    """The ready-index position of ``request``, or None when it is not ready."""
    status = request.status
    if status is _APPROVED or (
        revalidation and status is _PENDING and request.pending_reason is _REVALIDATION
    ):
        return (request.created_at, request.request_id)
    return None


def _due_key(request: MutationRequest) -> _DueKey | None:
    """The expiry-index position of ``request``, or None when nothing of it expires."""
    deadline = expiry_deadline(request)
    return None if deadline is None else (deadline, request.request_id)


def _deadline_of(key: _DueKey) -> datetime:
    return key[0]


def _move(index: builtins.list[Any], before: Any, after: Any) -> None:
    """Move one entry of a sorted index from ``before`` to ``after`` (either may be None)."""
    if before is not None:
        at = bisect.bisect_left(index, before)
        if at < len(index) and index[at] == before:
            del index[at]
    if after is not None:
        bisect.insort(index, after)


class InMemoryRequestStore:
    """Requests in a dict; every operation is atomic (a lock, no awaits inside).

    Ready requests (APPROVED, or pending revalidation) are also kept in an ordered index,
    so :meth:`reserve` reads only what it hands out and what others hold reserved; pending
    requests with a deadline in another, so :meth:`due` reads only what is due.
    Objects held in memory are always readable, so nothing is ever quarantined.
    """

    def __init__(self) -> None:
        self._requests: dict[str, MutationRequest] = {}
        self._lock = threading.Lock()
        self._ready: builtins.list[_ReadyKey] = []
        self._due: builtins.list[_DueKey] = []
        self._reserved: dict[str, tuple[datetime, str]] = {}
        """Reservations by request id: until when, and who holds it."""

    async def create(self, request: MutationRequest) -> MutationRequest:
        """Store a new request at revision 0; raises RequestAlreadyExistsError."""
        with self._lock:
            self.check_revision(request.request_id, None)
            return self.replace_now(request, None)

    async def replace(self, request: MutationRequest, *, expected_revision: int) -> MutationRequest:
        """Store ``request`` at the next revision if the stored one is ``expected_revision``."""
        with self._lock:
            self.check_revision(request.request_id, expected_revision)
            return self.replace_now(request, expected_revision)

    def check_revision(self, request_id: str, expected_revision: int | None) -> None:
        """Raise unless ``request_id`` is stored at ``expected_revision`` (caller locks).

        ``None`` expects the request not to exist.
        """
        current = self._requests.get(request_id)
        if expected_revision is None:
            if current is not None:
                raise RequestAlreadyExistsError(request_id)
            return
        if current is None:
            raise RequestNotFoundError(request_id)
        if current.revision != expected_revision:
            raise RequestConcurrencyError(request_id, expected_revision, current.revision)

    def replace_now(
        self, request: MutationRequest, expected_revision: int | None
    ) -> MutationRequest:
        """The write itself, after :meth:`check_revision` (caller locks)."""
        revision = 0 if expected_revision is None else expected_revision + 1
        stored = (
            request if request.revision == revision else evolve_request(request, revision=revision)
        )
        previous = self._requests.get(request.request_id)
        self._requests[request.request_id] = stored
        self._reindex(previous, stored)
        return stored

    def _reindex(self, previous: MutationRequest | None, stored: MutationRequest | None) -> None:
        """Keep the ready and expiry indexes in step with one write (caller locks)."""
        before = None if previous is None else _ready_key(previous, True)
        after = None if stored is None else _ready_key(stored, True)
        if before != after:
            _move(self._ready, before, after)
            if before is not None:
                self._reserved.pop(before[1], None)
        due_before = None if previous is None else _due_key(previous)
        due_after = None if stored is None else _due_key(stored)
        if due_before != due_after:
            _move(self._due, due_before, due_after)

    async def due(self, *, now: datetime, limit: int) -> Sequence[MutationRequest]:
        """Up to ``limit`` pending requests due at ``now``, earliest first (an ExpiryIndex)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        with self._lock:
            end = bisect.bisect_right(self._due, now, key=_deadline_of)
            return [self._requests[request_id] for _, request_id in self._due[: min(end, limit)]]

    async def reserve(
        self,
        *,
        owner: str,
        limit: int,
        now: datetime,
        until: datetime,
        revalidation: bool = False,
    ) -> Sequence[MutationRequest]:
        """Reserve up to ``limit`` ready requests, oldest first (see :class:`ReadyQueue`)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        chosen: builtins.list[MutationRequest] = []
        with self._lock:
            for _, request_id in self._ready:
                held = self._reserved.get(request_id)
                if held is not None and held[0] > now:
                    continue
                request = self._requests[request_id]
                if _ready_key(request, revalidation) is None:
                    continue
                self._reserved[request_id] = (until, owner)
                chosen.append(request)
                if len(chosen) == limit:
                    break
        return chosen

    async def unreserve(self, *, owner: str, request_ids: Sequence[str]) -> int:
        """Clear ``owner``'s reservations on ``request_ids`` (see :class:`ReservationRelease`)."""
        cleared = 0
        with self._lock:
            for request_id in dict.fromkeys(request_ids):
                held = self._reserved.get(request_id)
                if held is not None and held[1] == owner:
                    del self._reserved[request_id]
                    cleared += 1
        return cleared

    async def quarantined(self) -> Sequence[QuarantinedRequest]:
        """Always empty: a request held in memory is never unreadable."""
        return ()

    async def release(self, request_id: str) -> bool:
        """Nothing is ever quarantined in memory: always False."""
        return False

    @property
    def lock(self) -> threading.Lock:
        """The lock every write holds (atomic commits hold it too)."""
        return self._lock

    async def get(self, request_id: str) -> MutationRequest | None:
        """The request, or None."""
        return self._requests.get(check_key("request_id", request_id))

    async def by_state(self, state_id: str) -> Sequence[MutationRequest]:
        """Requests targeting ``state_id``, by ``created_at`` then id."""
        check_key("state_id", state_id)
        return sorted((r for r in self._snapshot() if r.state_id == state_id), key=sort_key)

    async def pending(
        self, reason: PendingReason | None = None, *, state_id: str | None = None
    ) -> Sequence[MutationRequest]:
        """PENDING requests, optionally with one reason and for one state, ordered."""
        reason = pending_reason(reason)
        return sorted(
            (
                r
                for r in self._snapshot()
                if r.status is RequestStatus.PENDING
                and (reason is None or r.pending_reason is reason)
                and (state_id is None or r.state_id == state_id)
            ),
            key=sort_key,
        )

    async def list(
        self, query: RequestQuery | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> RequestPage:
        """A page of requests matching ``query``, ordered by ``created_at`` then id."""
        query = listing(query, limit)
        if query.request_ids:
            with self._lock:
                named = [self._requests.get(i) for i in query.request_ids]
            candidates = [r for r in named if r is not None]
        else:
            candidates = self._snapshot()
        matches = query.predicate()
        ordered = sorted(filter(matches, candidates), key=sort_key)
        return page_of(ordered, limit, cursor)

    async def purge(
        self, *, before: datetime, statuses: frozenset[RequestStatus], limit: int
    ) -> PurgeBatch:
        """Delete up to ``limit`` purgeable requests (see :class:`RequestPurger`).

        Decisions live in the decision history: it forgets them separately.
        """
        with self._lock:
            chosen = purgeable(
                self._requests.values(), before=before, statuses=statuses, limit=limit
            )
            for request in chosen:
                del self._requests[request.request_id]
                self._reindex(request, None)
        return PurgeBatch(tuple(r.request_id for r in chosen))

    def _snapshot(self) -> builtins.list[MutationRequest]:
        with self._lock:
            return list(self._requests.values())


class InMemoryDecisionHistory:
    """Decisions in per-request lists plus one global append order.

    Appends are idempotent per ``(request_id, sequence)``: a decision whose sequence number
    is already logged for its request is skipped, so a repair can never log it twice.
    ``max_entries`` bounds the log: past it the oldest decisions are dropped first (the
    requests keep theirs; only this log forgets them).
    """

    def __init__(self, *, max_entries: int | None = None) -> None:
        if max_entries is not None and (
            isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1
        ):
            raise ValueError(f"max_entries must be a positive integer or None, got {max_entries!r}")
        self.max_entries = max_entries
        self._by_request: dict[str, dict[int, RequestDecision]] = {}
        self._log: deque[DecisionRecord] = deque()
        self._lock = threading.Lock()

    async def append(self, request_id: str, decisions: Sequence[RequestDecision]) -> None:
        """Append ``decisions`` to ``request_id``'s log, skipping sequences already logged."""
        with self._lock:
            self.append_now(request_id, decisions)

    def append_now(self, request_id: str, decisions: Sequence[RequestDecision]) -> None:
        """The append itself; the caller holds :attr:`lock` (used by atomic commits)."""
        logged = self._by_request.setdefault(request_id, {})
        for decision in decisions:
            if decision.sequence < 1:
                raise ValueError(
                    f"decision {decision} of request {request_id!r} has no sequence number"
                )
            if decision.sequence not in logged:
                logged[decision.sequence] = decision
                self._log.append(_record(request_id, decision))
        if self.max_entries is not None:
            while len(self._log) > self.max_entries:
                oldest = self._log.popleft()
                kept = self._by_request.get(oldest.request_id)
                if kept is not None:
                    kept.pop(oldest.decision.sequence, None)
                    if not kept:
                        del self._by_request[oldest.request_id]

    async def forget(self, request_ids: Sequence[str]) -> int:
        """Delete the logged decisions of ``request_ids`` (retention); return how many."""
        gone = set(request_ids)
        with self._lock:
            removed = sum(len(self._by_request.pop(rid, {})) for rid in gone)
            if removed:
                self._log = deque(r for r in self._log if r.request_id not in gone)
        return removed

    @property
    def lock(self) -> threading.Lock:
        """The lock an atomic commit holds while it appends."""
        return self._lock

    async def for_request(self, request_id: str) -> Sequence[RequestDecision]:
        """Decisions of one request in sequence order."""
        check_key("request_id", request_id)
        with self._lock:
            logged = self._by_request.get(request_id, {})
            return tuple(logged[sequence] for sequence in sorted(logged))

    async def recent(
        self, limit: int = 50, *, category: DecisionCategory | None = None
    ) -> Sequence[DecisionRecord]:
        """The newest ``limit`` decisions across requests, optionally of one category."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        with self._lock:
            records = [
                r
                for r in reversed(self._log)
                if category is None or r.decision.category is category
            ]
        records.sort(key=lambda r: r.decision.timestamp, reverse=True)
        return records[:limit]


class InMemoryStateStore:
    """States with integer-string versions ("1", "2", ...) and compare-and-set writes."""

    def __init__(self) -> None:
        self._states: dict[str, VersionedState[Any]] = {}
        self._produced: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    async def get(self, state_id: str) -> VersionedState[Any] | None:
        """The state with its version, or None."""
        return self._states.get(check_key("state_id", state_id))

    async def put(
        self,
        state_id: str,
        state: Any,
        *,
        expected_version: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Write ``state`` if it is at ``expected_version``; return the new version
        (ValueError for an id no store can keep)."""
        check_id("state_id", state_id)
        check_version(expected_version)
        with self._lock:
            return self.put_now(state_id, state, expected_version, request_id)

    def check_version(self, state_id: str, expected_version: str | None) -> None:
        """Raise ConcurrencyError unless the state is at ``expected_version`` (caller locks)."""
        current = self._states.get(state_id)
        actual = current.version if current is not None else None
        if actual != expected_version:
            raise ConcurrencyError(
                f"state {state_id!r} is at version {actual!r}, expected {expected_version!r}",
                key=state_id,
                expected=expected_version,
                actual=actual,
            )

    def check_request(self, state_id: str, request_id: str | None) -> None:
        """Raise ConcurrencyError when ``request_id`` already produced a version (caller locks)."""
        if request_id is None:
            return
        produced = self._produced.get((state_id, request_id))
        if produced is not None:
            raise ConcurrencyError(
                f"request {request_id!r} already produced version {produced!r} of state "
                f"{state_id!r}; a request is applied at most once",
                key=state_id,
                expected=None,
                actual=produced,
            )

    def put_now(
        self, state_id: str, state: Any, expected_version: str | None, request_id: str | None
    ) -> str:
        """The write itself; the caller holds the lock (used by atomic commits)."""
        self.check_version(state_id, expected_version)
        self.check_request(state_id, request_id)
        version = next_version(expected_version)
        self._states[state_id] = _versioned(state, version, request_id)
        if request_id is not None:
            self._produced[(state_id, request_id)] = version
        return version

    async def version_by_request(self, state_id: str, request_id: str) -> str | None:
        """The version of ``state_id`` that ``request_id`` produced, if any."""
        return self._produced.get((state_id, request_id))

    @property
    def lock(self) -> threading.Lock:
        """The lock every write holds (atomic commits hold it too)."""
        return self._lock
