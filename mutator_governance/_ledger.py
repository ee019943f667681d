"""The layer under the facade and the execution manager: load requests, write operations.

Every governance operation ends in one :meth:`RequestLedger.commit` — one atomic write on
the shipped stores. :class:`~mutator_governance.Governance` and
:class:`~mutator_governance.GovernedExecutionManager` both sit on top of it; neither calls
the other's internals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from mutator import AuditEntry, HistoryEntry

from ._commit_types import GovernedCommit, RequestWrite, StateWrite
from ._errors import RequestNotFoundError
from ._request import MutationRequest
from .protocols import DecisionHistory, ExecutionCommitter, RequestStore, StateStore

__all__ = ["RequestLedger"]


class RequestLedger:
    """Requests, decisions and states behind one committer, with the governance clock."""

    __slots__ = ("clock", "committer", "decisions", "requests", "states")

    def __init__(
        self,
        requests: RequestStore,
        decisions: DecisionHistory,
        states: StateStore,
        committer: ExecutionCommitter,
        clock: Callable[[], datetime],
    ) -> None:
        self.requests = requests
        self.decisions = decisions
        self.states = states
        self.committer = committer
        self.clock = clock

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
        return request

    async def create(self, request: MutationRequest) -> MutationRequest:
        """Store a new request with its decisions in one write."""
        (stored,) = await self.committer.commit(GovernedCommit((RequestWrite.create(request),)))
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
        return await self.committer.commit(
            GovernedCommit((RequestWrite.update(before, after), *linked), state, history, audit)
        )

    async def update(self, before: MutationRequest, after: MutationRequest) -> MutationRequest:
        """Write ``before`` → ``after`` alone and return the stored request."""
        (stored,) = await self.committer.commit(
            GovernedCommit((RequestWrite.update(before, after),))
        )
        return stored

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
