"""The seams of governance: implement these to keep requests, decisions and states anywhere.

Every implementation must pass the contract suites in :mod:`mutator_governance.testing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

from mutator import AuditSink, HistoryStore

from ._commit_types import GovernedCommit
from ._decisions import RequestDecision
from ._enums import DecisionCategory, PendingReason, RequestStatus
from ._quarantine import QuarantinedRequest
from ._query import DecisionRecord, RequestPage, RequestQuery, VersionedState
from ._request import MutationRequest
from ._retention import PurgeBatch

__all__ = [
    "DecisionHistory",
    "DecisionPurger",
    "ExecutionCommitter",
    "ExpiryIndex",
    "GovernanceStore",
    "ReadingCommitter",
    "QuarantineLog",
    "ReadyQueue",
    "ReadySignal",
    "RequestPurger",
    "ReservationRelease",
    "RequestStore",
    "StateStore",
]


class RequestStore(Protocol):
    """Durable requests with compare-and-set on ``revision``."""

    async def create(self, request: MutationRequest) -> MutationRequest:
        """Store a new request with revision 0 and return it.

        Raises RequestAlreadyExistsError when the id is taken.
        """

    async def replace(self, request: MutationRequest, *, expected_revision: int) -> MutationRequest:
        """Store ``request`` if the stored revision is ``expected_revision``.

        Returns the stored copy with revision ``expected_revision + 1``. Raises
        RequestConcurrencyError on a revision mismatch and RequestNotFoundError when unknown.
        """

    async def get(self, request_id: str) -> MutationRequest | None:
        """The request, or None."""

    async def by_state(self, state_id: str) -> Sequence[MutationRequest]:
        """Requests targeting ``state_id``, by ``created_at`` then id."""

    async def pending(
        self, reason: PendingReason | None = None, *, state_id: str | None = None
    ) -> Sequence[MutationRequest]:
        """PENDING requests, optionally with one reason and for one state, ordered."""

    async def list(
        self, query: RequestQuery | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> RequestPage:
        """A page of requests matching ``query``, ordered by ``created_at`` then id.

        Ordering is by the instant of ``created_at``, ties broken by ``request_id`` in
        code-point order. A cursor is a position (the last item's created-at and id), not an
        offset. An invalid cursor or ``limit < 1`` raises ValueError.
        """


@runtime_checkable
class RequestPurger(Protocol):
    """Optional on a request store: delete old terminal requests (retention).

    :meth:`~mutator_governance.Governance.purge` calls it batch by batch; a store without
    it cannot be purged. Implement it as one transaction per call.
    """

    async def purge(
        self, *, before: datetime, statuses: frozenset[RequestStatus], limit: int
    ) -> PurgeBatch:
        """Delete up to ``limit`` purgeable requests, oldest ``updated_at`` first.

        Purgeable: status in ``statuses`` (all terminal), ``updated_at < before``, and not
        the original of a compensation request that is not terminal (the predicate is
        :func:`~mutator_governance.purgeable`). A store that also holds the decision log
        deletes the requests' decisions in the same transaction and counts them; every
        index or listing drops the deleted requests. Returns the deleted ids.
        """


@runtime_checkable
class ReadyQueue(Protocol):
    """Optional on a request store: hand ready requests to competing workers in batches.

    Without it the worker pages through ``list()``; with it each poll is one store
    operation whose cost does not grow with the store, and workers in several processes
    take disjoint batches. A reservation keeps workers apart; it is not a fence: the
    claim's compare-and-set on the revision still decides who executes.
    """

    async def reserve(
        self,
        *,
        owner: str,
        limit: int,
        now: datetime,
        until: datetime,
        revalidation: bool = False,
    ) -> Sequence[MutationRequest]:
        """Reserve up to ``limit`` ready requests for ``owner`` until ``until``, atomically.

        Ready: APPROVED (with ``revalidation`` also PENDING with reason REVALIDATION), not
        quarantined, and not reserved by anyone (``owner`` included) past ``now``.
        Returned oldest first (``created_at``, then ``request_id``). Concurrent callers
        never receive the same request while its reservation runs. A row that cannot be
        read is quarantined (see :class:`QuarantineLog`) and skipped, never raised. A
        request that stops being ready (claimed, rejected) drops out whatever its
        reservation. ``limit < 1`` raises ValueError.
        """


@runtime_checkable
class ReservationRelease(Protocol):
    """Optional on a :class:`ReadyQueue`: give reservations back before they run out.

    A worker that stops with requests reserved but not started (a graceful shutdown)
    gives them back, so other workers can take them at once instead of after ``until``
    (minutes by default). Without it those requests wait for their reservations to run
    out. A separate protocol rather than a method of :class:`ReadyQueue`, so a queue
    written before it keeps being used as one.
    """

    async def unreserve(self, *, owner: str, request_ids: Sequence[str]) -> int:
        """Clear the reservations ``owner`` holds on ``request_ids``; return how many.

        Only a reservation held by ``owner`` is cleared (whether or not it ran out): one
        taken over by another owner, an unknown id, or a request that stopped being ready
        (its reservation dropped with it) is left alone and not counted. Idempotent; an
        empty ``request_ids`` clears nothing.
        """


@runtime_checkable
class ExpiryIndex(Protocol):
    """Optional on a request store: the pending requests whose deadline has passed.

    Without it :meth:`~mutator_governance.Governance.expire_due` reads every pending
    request on each sweep (the whole approval backlog, every ``expire_every`` seconds in
    every worker); with it a sweep reads only the requests it expires. A request's
    deadline is :func:`~mutator_governance.expiry_deadline`.
    """

    async def due(self, *, now: datetime, limit: int) -> Sequence[MutationRequest]:
        """Up to ``limit`` PENDING requests whose deadline is at or before ``now``.

        Ordered by deadline, then ``request_id``. Only requests whose
        :func:`~mutator_governance.expiry_deadline`, computed from the request as
        returned, is at or before ``now`` are returned. What it reads follows what is due,
        never the number of pending requests (it may also read rows whose stored deadline
        it corrects, such as rows written before the upgrade that added it). A row that
        cannot be read is quarantined and skipped, never raised. ``limit < 1`` raises
        ValueError.
        """


@runtime_checkable
class ReadySignal(Protocol):
    """Optional on a request store: wake idle workers when a request becomes ready."""

    async def wait_ready(self, seconds: float) -> bool:
        """Wait until a request may have become ready, at most ``seconds`` seconds.

        Returns True when woken by a commit that made a request ready (in any process
        using the same store) since the previous call returned, False on timeout. A
        wake-up is a hint: the caller reserves to find out. A lost connection returns
        False (the caller falls back to polling); it never raises for an outage.
        """


@runtime_checkable
class QuarantineLog(Protocol):
    """Optional on a request store: the rows set aside because they cannot be read."""

    async def quarantined(self) -> Sequence[QuarantinedRequest]:
        """Every quarantined request, oldest detection first (one entry per request id).

        An entry is recorded the first time a read meets the unreadable row: a
        multi-row read (listing, pending, sweep, reservation), which skips it, or a read
        by id, which still raises StoredDataError (the worker meets rows no listing
        walks this way, e.g. the original of a compensation). The row itself is left as
        it is for an operator to repair or delete.
        """

    async def release(self, request_id: str) -> bool:
        """Take a (repaired) request out of quarantine; True when it was quarantined.

        The row is read again by the next multi-row read and quarantined again if it is
        still unreadable.
        """


@runtime_checkable
class DecisionPurger(Protocol):
    """Optional on a decision log: forget the decisions of purged requests."""

    async def forget(self, request_ids: Sequence[str]) -> int:
        """Delete every logged decision of ``request_ids``; return how many were deleted."""


class DecisionHistory(Protocol):
    """An append-only log of request decisions, queryable across requests."""

    async def append(self, request_id: str, decisions: Sequence[RequestDecision]) -> None:
        """Append ``decisions`` to ``request_id``'s log, idempotently.

        Each decision carries its ``sequence`` number within the request; a decision
        whose ``(request_id, sequence)`` is already logged is skipped, so appending the
        same decisions twice (two recoverers, a retried write) logs them once. A decision
        without a sequence number (0) raises ValueError.
        """

    async def for_request(self, request_id: str) -> Sequence[RequestDecision]:
        """Decisions of one request in sequence order."""

    async def recent(
        self, limit: int = 50, *, category: DecisionCategory | None = None
    ) -> Sequence[DecisionRecord]:
        """The newest decisions across requests, newest first."""


StateT = TypeVar("StateT")


class StateStore(Protocol[StateT]):
    """Governed states with string versions and compare-and-set writes.

    Generic in the state type: a store of one state type can be typed
    ``StateStore[Quotas]``, so ``get`` returns ``VersionedState[Quotas] | None``; the
    shipped stores hold any registered state (``StateStore[Any]``).
    """

    async def get(self, state_id: str) -> VersionedState[StateT] | None:
        """The state with its version, or None."""

    async def put(
        self,
        state_id: str,
        state: StateT,
        *,
        expected_version: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Write ``state`` and return its new version.

        ``expected_version=None`` creates the state (it must not exist). A mismatch raises
        :class:`mutator.ConcurrencyError`. ``request_id`` records which request produced
        the version; a request produces at most one version of a state, so a second put
        with the same ``request_id`` raises :class:`mutator.ConcurrencyError` and writes
        nothing.
        """

    async def version_by_request(self, state_id: str, request_id: str) -> str | None:
        """The version of ``state_id`` that ``request_id`` produced, if any."""


class ExecutionCommitter(Protocol):
    """Writes one governance operation, all or nothing: the seam every operation goes through.

    ``atomic`` is True when a commit lands whole (one transaction, one script, one
    critical section); the sequential fallback (False) relies on claim recovery and
    log repair instead. The contract suite
    :class:`~mutator_governance.testing.GovernanceStoreContract` checks it.
    """

    atomic: bool

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        """Apply every write in ``commit``; return the stored requests in order.

        A write with ``expected_revision=None`` creates its request (revision 0);
        otherwise the stored revision must equal it and becomes ``expected_revision + 1``.
        Decisions are appended idempotently by sequence number; the state, history and
        audit entries land with the requests. Raises RequestAlreadyExistsError,
        RequestNotFoundError, RequestConcurrencyError or :class:`mutator.ConcurrencyError`
        — writing nothing — when a request exists, is missing, or a revision or the state
        version moved (or the request already produced a state version).
        """


@runtime_checkable
class ReadingCommitter(Protocol):
    """A committer that can read a state back in the same round trip as a commit (optional).

    A governed execution claims its request and then reads the state it will change; a
    store that implements this does both in one round trip (one transaction, one script).
    The state is read after the commit's writes, in the same transaction where the store
    has one. Stores without it are used through ``commit`` then ``StateStore.get``.
    """

    async def commit_reading(
        self, commit: GovernedCommit, state_id: str
    ) -> tuple[tuple[MutationRequest, ...], VersionedState[Any] | None]:
        """Apply ``commit`` like ``commit``; return its stored requests and ``state_id``'s state.

        Raises what ``commit`` raises, writing nothing and reading nothing; the state is
        ``None`` when ``state_id`` holds none.
        """


class GovernanceStore(Protocol):
    """One durable backend holding everything a deployment needs, on one database.

    ``committer`` writes every governance operation (requests, decisions and, for
    executions, the state, history and audit entries) in one atomic step; the engine
    should use ``audit`` and ``history`` so its records live in the
    same database.
    """

    @property
    def requests(self) -> RequestStore:
        """The request store."""
        ...

    @property
    def decisions(self) -> DecisionHistory:
        """The decision log."""
        ...

    @property
    def states(self) -> StateStore[Any]:
        """The state store."""
        ...

    @property
    def audit(self) -> AuditSink:
        """The audit sink (governed executions are audited here)."""
        ...

    @property
    def history(self) -> HistoryStore:
        """The history store."""
        ...

    @property
    def committer(self) -> ExecutionCommitter:
        """Writes every governance operation as one atomic commit."""
        ...

    async def aclose(self) -> None:
        """Release connections; the store is unusable afterwards."""
