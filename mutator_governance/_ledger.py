"""The layer under the facade and the execution manager: load requests, write operations.

Every governance operation ends in one :meth:`RequestLedger.commit` — one atomic write on
the shipped stores. :class:`~mutator_governance.Governance` and
:class:`~mutator_governance.GovernedExecutionManager` both sit on top of it; neither calls
the other's internals.

Logging: every commit that changes a request logs ONE record at INFO on the logger
``mutator.governance.changes`` (:data:`CHANGES_LOGGER`), with the ``extra=`` fields
``request_id``, ``operation`` (``submitted`` for a new request, else the lower-case code
of the last decision the commit adds: ``approved``, ``claimed``, ``executed``...),
``status`` (the request's new status), ``actor`` (the submitter of a new request, else
who made that decision), ``revision`` and ``duration`` (seconds the commit took) — JSON
formatters and structlog pick them up. A lease renewal (no new decision) logs at DEBUG.

The ledger remembers the copy of each request it last wrote or read (a bounded number of
them, when the store's reads are round trips): an operation may start from that copy
instead of reading the request again (:meth:`RequestLedger.recent`). Nothing trusts it: every
write is a compare-and-set on the revision, so a copy another process made stale fails
the write, and the operation then reads the stored request and decides again. A read that
fails (the row is unreadable, or gone) drops the copy. What the copy cannot see is an edit
of the stored row that kept its revision (no write through a store does that): an
operation starting from the copy replaces such a row instead of reporting it unreadable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from mutator import AuditEntry, HistoryEntry

from ._arguments import check_id
from ._commit_types import GovernedCommit, RequestWrite, StateWrite
from ._errors import RequestNotFoundError
from ._query import VersionedState
from ._request import MutationRequest
from ._telemetry import Telemetry
from .protocols import (
    DecisionHistory,
    ExecutionCommitter,
    ReadingCommitter,
    RequestStore,
    StateStore,
)

__all__ = ["CHANGES_LOGGER", "RequestLedger"]

CHANGES_LOGGER = "mutator.governance.changes"
"""The logger of governance state changes (one INFO record per change)."""

_log = logging.getLogger(CHANGES_LOGGER)


def operation_of(write: RequestWrite) -> str:
    """What a write records: ``submitted`` for a new request, else its last decision's code.

    Lower-case (``approved``, ``claimed``, ``executed``...); ``renew`` for a lease renewal.
    """
    if write.expected_revision is None:
        return "submitted"
    if not write.new_decisions:
        return "renew"
    return write.new_decisions[-1].code.name.lower()


def _log_commit(commit: GovernedCommit, stored: tuple[MutationRequest, ...], took: float) -> None:
    """One structured record per request the commit wrote."""
    if not _log.isEnabledFor(logging.INFO):  # DEBUG is off too, then
        return
    for write, request in zip(commit.requests, stored, strict=False):
        decision = (
            None
            if not write.new_decisions
            else write.new_decisions[0 if write.expected_revision is None else -1]
        )
        level = logging.INFO if decision is not None else logging.DEBUG
        if not _log.isEnabledFor(level):
            continue
        operation = operation_of(write)
        _log.log(
            level,
            "request %s %s: now %s",
            request.request_id,
            operation,
            request.status.value,
            extra={
                "request_id": request.request_id,
                "operation": operation,
                "status": request.status.value,
                "actor": decision.context.actor_id if decision is not None else None,
                "revision": request.revision,
                "duration": took,
            },
        )


class RequestLedger:
    """Requests, decisions and states behind one committer, with the governance clock.

    ``remember`` is how many requests' last written or read copies it keeps for
    :meth:`recent` (0 keeps none: right for stores whose reads cost no round trip).
    """

    __slots__ = (
        "_committer",
        "_reading",
        "_recent",
        "clock",
        "decisions",
        "remember",
        "requests",
        "states",
        "telemetry",
    )

    def __init__(
        self,
        requests: RequestStore,
        decisions: DecisionHistory,
        states: StateStore[Any],
        committer: ExecutionCommitter,
        clock: Callable[[], datetime],
        *,
        remember: int = 0,
    ) -> None:
        self.requests = requests
        self.decisions = decisions
        self.states = states
        self.committer = committer
        self.clock = clock
        self.telemetry: Telemetry | None = None
        self.remember = remember
        self._recent: dict[str, MutationRequest] = {}

    def recent(self, request_id: object) -> MutationRequest | None:
        """The copy of the request this ledger last wrote or read, if it still holds one.

        It may be stale (another process may have changed the request since): use it
        only to start an operation whose write compares the revision, and read the
        request again when that write or the operation's checks refuse it.
        """
        if not isinstance(request_id, str):
            return None
        request = self._recent.get(request_id)
        if request is not None and self.telemetry is not None:
            self.telemetry.loaded(request)
        return request

    def _remember(self, requests: Iterable[MutationRequest]) -> None:
        if not self.remember:
            return
        recent = self._recent
        for request in requests:
            recent.pop(request.request_id, None)  # re-inserted last: the newest stay longest
            recent[request.request_id] = request
        while len(recent) > self.remember:
            del recent[next(iter(recent))]

    def _forget(self, commit: GovernedCommit) -> None:
        """Drop the copies of a commit's requests (it failed: they may be stale)."""
        for write in commit.requests:
            self._recent.pop(write.request.request_id, None)

    @property
    def committer(self) -> ExecutionCommitter:
        """The committer every operation's write goes through."""
        return self._committer

    @committer.setter
    def committer(self, committer: ExecutionCommitter) -> None:
        self._committer = committer
        self._reading = committer if isinstance(committer, ReadingCommitter) else None

    @property
    def atomic(self) -> bool:
        """True when every commit lands whole (the committer says so)."""
        return bool(getattr(self.committer, "atomic", False))

    async def load(self, request_id: str) -> MutationRequest:
        """The stored request; RequestNotFoundError when unknown, ValueError for a bad id (blank,
        with NUL, or not UTF-8: the same on every store)."""
        check_id("request_id", request_id)
        try:
            request = await self.requests.get(request_id)
        except BaseException:  # unreadable (or unknown): no operation starts from a copy
            self._recent.pop(request_id, None)
            raise
        if request is None:
            self._recent.pop(request_id, None)
            raise RequestNotFoundError(request_id)
        if self.telemetry is not None:
            self.telemetry.loaded(request)
        self._remember((request,))
        return request

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        """Hand ``commit`` to the committer (traced and logged); return the stored requests."""
        started = time.perf_counter()
        try:
            if self.telemetry is None:
                stored = await self._committer.commit(commit)
            else:
                stored = await self.telemetry.commit(commit, lambda: self._committer.commit(commit))
        except BaseException:
            self._forget(commit)
            raise
        self._remember(stored)
        _log_commit(commit, stored, time.perf_counter() - started)
        return stored

    async def create(self, request: MutationRequest) -> MutationRequest:
        """Store a new request with its decisions in one write."""
        (stored,) = await self.commit(GovernedCommit((RequestWrite.create(request),)))
        return stored

    async def save(
        self,
        before: MutationRequest,
        after: MutationRequest,
        *,
        linked: Sequence[RequestWrite] = (),
        state: StateWrite | None = None,
        history: Sequence[HistoryEntry] = (),
        audit: Sequence[AuditEntry] = (),
    ) -> tuple[MutationRequest, ...]:
        """Write ``before`` → ``after`` (compare-and-set on the revision) with everything else.

        Returns the stored requests: ``after`` first, then ``linked`` in order.
        """
        return await self.commit(
            GovernedCommit((RequestWrite.update(before, after), *linked), state, history, audit)
        )

    async def update(self, before: MutationRequest, after: MutationRequest) -> MutationRequest:
        """Write ``before`` → ``after`` alone and return the stored request."""
        (stored,) = await self.commit(GovernedCommit((RequestWrite.update(before, after),)))
        return stored

    @property
    def reads_with_commit(self) -> bool:
        """True when the committer reads a state back in the round trip of a commit."""
        return self._reading is not None

    async def update_reading(
        self, before: MutationRequest, after: MutationRequest, state_id: str
    ) -> tuple[MutationRequest, VersionedState[Any] | None]:
        """Write ``before`` → ``after`` alone and read ``state_id``'s state, in one round trip.

        Only when :attr:`reads_with_commit` (the committer is a
        :class:`~mutator_governance.protocols.ReadingCommitter`).
        """
        reading = self._reading
        assert reading is not None, "update_reading needs a ReadingCommitter"
        commit = GovernedCommit((RequestWrite.update(before, after),))
        started = time.perf_counter()
        try:
            requests, state = await self._commit_reading(reading, commit, state_id)
        except BaseException:
            self._forget(commit)
            raise
        self._remember(requests)
        _log_commit(commit, requests, time.perf_counter() - started)
        return requests[0], state

    async def _commit_reading(
        self, reading: ReadingCommitter, commit: GovernedCommit, state_id: str
    ) -> tuple[tuple[MutationRequest, ...], VersionedState[Any] | None]:
        if self.telemetry is None:
            return await reading.commit_reading(commit, state_id)
        read: list[VersionedState[Any] | None] = []

        async def call() -> tuple[MutationRequest, ...]:
            requests, state = await reading.commit_reading(commit, state_id)
            read.append(state)
            return requests

        requests = await self.telemetry.commit(commit, call)
        return requests, read[0]

    async def repair(self, request: MutationRequest) -> int:
        """Append the decisions of ``request`` missing from its log; return how many.

        Missing means "no logged decision with that sequence number": never by position,
        never twice, and safe when several processes repair at once (appends are
        idempotent per sequence number).
        """
        logged = {d.sequence for d in await self.decisions.for_request(request.request_id)}
        missing = [d for d in request.decisions if d.sequence not in logged]
        if missing:
            await self.decisions.append(request.request_id, missing)
        return len(missing)
