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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from mutator import AuditEntry, HistoryEntry

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
    """Requests, decisions and states behind one committer, with the governance clock."""

    __slots__ = ("_committer", "_reading", "clock", "decisions", "requests", "states", "telemetry")

    def __init__(
        self,
        requests: RequestStore,
        decisions: DecisionHistory,
        states: StateStore[Any],
        committer: ExecutionCommitter,
        clock: Callable[[], datetime],
    ) -> None:
        self.requests = requests
        self.decisions = decisions
        self.states = states
        self.committer = committer
        self.clock = clock
        self.telemetry: Telemetry | None = None

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
        """The stored request; RequestNotFoundError when unknown, ValueError for a bad id."""
        if not isinstance(request_id, str) or not request_id.strip():
            raise ValueError("request_id must be a non-blank string")
        request = await self.requests.get(request_id)
        if request is None:
            raise RequestNotFoundError(request_id)
        if self.telemetry is not None:
            self.telemetry.loaded(request)
        return request

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        """Hand ``commit`` to the committer (traced and logged); return the stored requests."""
        started = time.perf_counter()
        if self.telemetry is None:
            stored = await self._committer.commit(commit)
        else:
            stored = await self.telemetry.commit(commit, lambda: self._committer.commit(commit))
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
        if self.telemetry is None:
            requests, state = await reading.commit_reading(commit, state_id)
        else:
            read: list[VersionedState[Any] | None] = []

            async def call() -> tuple[MutationRequest, ...]:
                requests, state = await reading.commit_reading(commit, state_id)
                read.append(state)
                return requests

            requests = await self.telemetry.commit(commit, call)
            state = read[0]
        _log_commit(commit, requests, time.perf_counter() - started)
        return requests[0], state

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
