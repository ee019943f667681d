"""The ``Governance`` facade: submit, decide, resolve and query governed requests."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import attrs

from mutator import (
    AuditSink,
    ConfigurationError,
    EngineOptions,
    HistoryStore,
    Interceptor,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationHistory,
    MutationPolicy,
    ResultStatus,
)

from . import _operator
from ._approvals import RejectionReason, map_requirements
from ._arguments import (
    MAX_COUNT,
    MAX_ID_BYTES,
    check_id,
    check_moment,
    check_span,
    check_text,
)
from ._commit import default_committer
from ._decisions import RequestDecision, new_decision, system_context
from ._enums import (
    ApprovalDecision,
    LifecycleDecision,
    PendingReason,
    RequestStatus,
    ResolutionStrategy,
)
from ._errors import (
    ApprovalConfigurationError,
    ApprovalStateError,
    InvalidTransitionError,
    RequestConcurrencyError,
    RequestNotFoundError,
    SelfApprovalError,
    StateNotFoundError,
)
from ._execution import GovernedExecutionManager, GovernedExecutionResult, RecoverySweep
from ._ids import new_id
from ._ledger import RequestLedger
from ._memory import InMemoryDecisionHistory, InMemoryRequestStore, InMemoryStateStore
from ._quarantine import QuarantinedRequest
from ._query import RequestPage, RequestQuery, listing, pending_reason
from ._query_views import ApprovalPage, ApprovalQuery, DecisionPage, DecisionQuery
from ._registry import MutationRegistry
from ._request import CompensationPlan, MutationRequest, new_request
from ._resolution import Resolution, resolve_version
from ._retention import TERMINAL_STATUSES, PurgeReport, terminal_statuses
from ._telemetry import Telemetry, observed
from ._transitions import transition
from ._warmup import warm_codec
from ._worker import Backoff, WorkerOutcome, WorkerProgress, WorkerReport
from ._workflow import (
    approve_requirement,
    expire_approvals,
    fresh_round,
    overdue,
    reject_requirement,
    same_actor,
)
from .protocols import (
    DecisionHistory,
    DecisionPurger,
    ExecutionCommitter,
    ExpiryIndex,
    QuarantineLog,
    RequestPurger,
    RequestStore,
    StateStore,
)

__all__ = ["KEEP", "ExpirySweep", "Governance", "Keep"]


class Keep(enum.Enum):
    """Marker type for "leave this field as it is"."""

    KEEP = "KEEP"


KEEP = Keep.KEEP
"""Default of optional update arguments: "leave this field as it is" (None would clear it)."""

_SYSTEM = "governance"
_REMEMBERED = 1024
"""How many requests' last copies the ledger keeps when its store's reads are round trips."""
_SWEEP_BATCH = 256
"""How many due requests an expiry sweep reads at a time from an ExpiryIndex."""


@attrs.frozen
class ExpirySweep:
    """What :meth:`Governance.expire_due` did: requests it expired and ids it skipped."""

    expired: tuple[MutationRequest, ...] = ()
    skipped: tuple[str, ...] = ()


DECISION_ATTEMPTS = 10
"""How many times a decision (approve, reject, cancel, expire, supersede, move to pending)
reads the request and writes its outcome before a lost race is a RequestConcurrencyError:
of N deciders racing on one request, each attempt of each lands one, so up to ten
concurrent deciders all land."""


def _check_decider(context: object, text_name: str, text: object) -> None:
    """Refuse, before the request is read, a decision's context that is not a
    MutationContext or its free text (reason, note) that is not a string."""
    if not isinstance(context, MutationContext):
        raise TypeError(f"context must be a MutationContext, got {type(context).__name__}")
    check_text(text_name, text)


def _check_age(age: object) -> None:
    """Refuse a retention age that is not a positive timedelta."""
    if not isinstance(age, timedelta):
        raise TypeError(f"older_than must be a timedelta, got {type(age).__name__}")
    if age <= timedelta(0):
        raise ValueError(f"older_than must be positive, got {age!r}")


def utc_now() -> datetime:
    """The governance clock's default: the current UTC time."""
    return datetime.now(UTC)


def _check_options(allow_self_approval: object, clock: object, lease: object) -> None:
    """Refuse a non-bool ``allow_self_approval`` (``"no"`` is truthy: it would turn the
    four-eyes rule off), a clock that cannot be called and a lease past the calendar,
    before anything opens."""
    check_span("lease", lease)
    if not isinstance(allow_self_approval, bool):
        raise ConfigurationError(
            f"allow_self_approval must be True or False, got {allow_self_approval!r}"
        )
    if not callable(clock):
        raise ConfigurationError(f"clock must be a callable returning a datetime, got {clock!r}")
    now = clock()
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise ConfigurationError(
            f"clock must return a timezone-aware datetime (e.g. datetime.now(UTC)), got {now!r}"
        )


async def _store_clock(store: object) -> Callable[[], datetime]:
    """A clock that follows the store's own clock where it has one.

    Leases are then judged by one clock, the store's, whatever the skew of each host's
    wall clock: the offset is measured once, halfway through the round trip.
    """
    server_time = getattr(store, "server_time", None)
    if server_time is None:
        return utc_now
    before = datetime.now(UTC)
    remote = await server_time()
    after = datetime.now(UTC)
    if remote is None:
        return utc_now
    offset: timedelta = remote - (before + (after - before) / 2)

    def store_clock() -> datetime:
        return datetime.now(UTC) + offset

    return store_clock


class Governance:
    """Governed mutations as durable requests: submit, approve, resolve, execute.

    Attributes: ``engine`` (the :class:`~mutator.MutationEngine` that evaluates and runs
    mutations), ``registry``, and the stores ``requests``, ``decisions``, ``states``,
    ``audit`` (where governed executions are audited; default: the engine's sink),
    ``history_store`` (where their history entries land; default: the engine's) and
    ``committer`` (writes every operation as one atomic commit). Stores default to
    in-memory ones; pass your own (or use :meth:`open`) to make them durable.
    ``allow_self_approval`` turns off the four-eyes rule (by default a requester may not
    approve their own request). ``lease`` is how long an execution's claim holds before
    recovery may take it over (a running execution renews it). ``telemetry`` is None
    until :func:`mutator_governance.otel.instrument` turns tracing and metrics on.

    On stores whose reads are round trips, ``approve``, ``reject``, ``cancel``, ``expire``,
    ``move_to_pending`` and ``execute`` start from the copy of the request this governance
    last wrote or read instead of reading it again; every write compares the revision, and
    a stale copy makes the operation read the request and decide again.
    """

    def __init__(
        self,
        engine: MutationEngine,
        *,
        registry: MutationRegistry | None = None,
        requests: RequestStore | None = None,
        decisions: DecisionHistory | None = None,
        states: StateStore[Any] | None = None,
        allow_self_approval: bool = False,
        clock: Callable[[], datetime] = utc_now,
        committer: ExecutionCommitter | None = None,
        lease: float = 300.0,
        audit: AuditSink | None = None,
        history: HistoryStore | None = None,
    ) -> None:
        if not isinstance(engine, MutationEngine):
            raise TypeError(f"engine must be a MutationEngine, got {type(engine).__name__}")
        _check_options(allow_self_approval, clock, lease)
        self.engine = engine
        self.registry = registry if registry is not None else MutationRegistry()
        self.requests: RequestStore = requests if requests is not None else InMemoryRequestStore()
        self.decisions: DecisionHistory = (
            decisions if decisions is not None else InMemoryDecisionHistory()
        )
        self.states: StateStore[Any] = states if states is not None else InMemoryStateStore()
        self.audit: AuditSink = audit if audit is not None else engine.audit
        self.history_store: HistoryStore = history if history is not None else engine.history_store
        self.allow_self_approval = allow_self_approval
        self.clock = clock
        self.committer: ExecutionCommitter = committer or default_committer(
            self.requests, self.decisions, self.states, self.history_store, self.audit
        )
        self._ledger = RequestLedger(
            self.requests,
            self.decisions,
            self.states,
            self.committer,
            clock,
            remember=0 if isinstance(self.requests, InMemoryRequestStore) else _REMEMBERED,
        )
        self.executor = GovernedExecutionManager(self._ledger, engine, self.registry, lease=lease)
        self.telemetry: Telemetry | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str,
        *,
        registry: MutationRegistry,
        engine: MutationEngine | None = None,
        options: EngineOptions | None = None,
        policies: Iterable[MutationPolicy[Any]] = (),
        interceptors: Iterable[Interceptor] = (),
        allow_self_approval: bool = False,
        clock: Callable[[], datetime] = utc_now,
        lease: float = 300.0,
        instrumentation: Callable[[Governance], object] | None = None,
        **store_options: Any,
    ) -> AsyncIterator[Governance]:
        """A governance whose requests, decisions, states, audit and history live at ``url``.

        ``sqlite:///path.db`` (embedded), ``postgresql://...`` or ``redis://...``. Without
        ``engine`` an engine is built (with ``options``, ``policies`` and ``interceptors``)
        whose audit and history are the backend's too, so one database holds everything;
        with ``engine``, its policies and interceptors are extended by the given ones.
        ``store_options`` go to the backend (see :func:`~mutator_governance.stores.open_store`):
        an option also named in the URL must have the same value there.
        Without ``clock``, the governance clock follows the store's own clock where the
        store has one (PostgreSQL, Redis), so every host judges leases alike.
        ``instrumentation`` is called once with the new governance before it is handed
        out, e.g. :func:`mutator_governance.otel.instrument` (or a ``functools.partial``
        of it with providers and ``engine=True``); when what it returns has
        ``uninstrument()``, that is called on exit. Without it nothing of OpenTelemetry
        is imported. The codec's hooks for the registered mutation and state types are
        built before the governance is handed out, so the first request it handles does not
        pay for them. The store closes on exit::

            async with Governance.open("sqlite:///gov.db", registry=registry) as gov:
                ...
        """
        from .stores import open_store

        _check_options(allow_self_approval, clock, lease)
        if instrumentation is not None and not callable(instrumentation):
            raise ConfigurationError(
                f"instrumentation must be a callable (otel.instrument), got {instrumentation!r}"
            )
        if engine is not None and options is not None:
            raise ConfigurationError(
                "options configure the engine open() builds; with engine=, give that "
                "engine its options instead"
            )
        store = await open_store(url, registry=registry, **store_options)
        try:
            warm_codec(registry)
            if clock is utc_now:
                clock = await _store_clock(store)
            if engine is None:
                engine = MutationEngine(
                    options,
                    audit=store.audit,
                    history=store.history,
                    policies=policies,
                    interceptors=interceptors,
                )
            else:
                for policy in policies:
                    engine.register_policy(policy)
                for interceptor in interceptors:
                    engine.register_interceptor(interceptor)
            governance = cls(
                engine,
                registry=registry,
                requests=store.requests,
                decisions=store.decisions,
                states=store.states,
                committer=store.committer,
                audit=store.audit,
                history=store.history,
                allow_self_approval=allow_self_approval,
                clock=clock,
                lease=lease,
            )
            installed = instrumentation(governance) if instrumentation is not None else None
            try:
                yield governance
            finally:
                uninstrument = getattr(installed, "uninstrument", None)
                if callable(uninstrument):
                    uninstrument()
        finally:
            with anyio.CancelScope(shield=True):
                await store.aclose()

    # -- submission ----------------------------------------------------------------------

    @observed("submit")
    async def submit(
        self,
        mutation: Mutation[Any],
        *,
        state_id: str,
        context: MutationContext,
        pending_reason: PendingReason | None = None,
        expires_at: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> MutationRequest:
        """Create a request for ``mutation`` on ``state_id``.

        The engine's policies run as a dry run against the current state: a denial creates
        the request REJECTED (with every blocking reason), required approvals create it
        PENDING(APPROVAL) with one approval slot per required approver, and an allowed
        mutation creates it APPROVED, or PENDING(``pending_reason``) when a reason is given
        (e.g. EXTERNAL_CHECK, SCHEDULE). The state version it was evaluated against is
        recorded as ``expected_state_version``.
        """
        if not isinstance(mutation, Mutation):
            raise TypeError(f"mutation must be a Mutation, got {type(mutation).__name__}")
        if not isinstance(context, MutationContext):
            raise TypeError(f"context must be a MutationContext, got {type(context).__name__}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping or None, got {type(metadata).__name__}")
        if pending_reason is not None and not isinstance(pending_reason, PendingReason):
            raise TypeError(f"pending_reason must be a PendingReason, got {pending_reason!r}")
        if pending_reason in (PendingReason.APPROVAL, PendingReason.REVALIDATION):
            raise ValueError(
                f"{pending_reason.name} is set by policies or resolution, not at submission"
            )
        check_id("state_id", state_id)
        if request_id is not None:
            check_id("request_id", request_id)
        actor = context.actor_id
        if actor is not None and (
            not actor.isascii() or "\x00" in actor or len(actor) > MAX_ID_BYTES
        ):
            check_id("context.actor_id", actor)  # the requester is a column on SQL stores
        if expires_at is not None:
            check_moment("expires_at", expires_at)
        mutation_type = self.registry.name_of(mutation)
        current = await self.states.get(state_id)
        if current is None:
            raise StateNotFoundError(state_id)
        evaluation = await self.engine.evaluate(mutation, current.state, context=context)
        now = self.clock()
        request_id = new_id() if request_id is None else request_id
        decisions = [
            new_decision(LifecycleDecision.SUBMITTED, context, context.reason, now, None, 1)
        ]
        base = new_request(
            {
                "request_id": request_id,
                "state_id": state_id,
                "state_type": type(current.state).__name__,
                "mutation_type": mutation_type,
                "mutation": mutation,
                "intent": mutation.intent,
                "context": context,
                "status": RequestStatus.CREATED,
                "created_at": now,
                "updated_at": now,
                "policy_requirements": evaluation.requirements,
                "expected_state_version": current.version,
                "expires_at": expires_at,
                "metadata": {} if metadata is None else metadata,
                "trace_context": self.telemetry.capture() if self.telemetry is not None else {},
            }
        )
        system = system_context(request_id, now)
        status = evaluation.status
        if status is ResultStatus.POLICY_BLOCKED:
            reason = "; ".join(
                f"{d.policy_name}: {d.reason or 'denied'}" for d in evaluation.blockers
            )
            decisions.append(
                new_decision(
                    LifecycleDecision.REJECTED,
                    system,
                    reason,
                    now,
                    {"blocking_policies": tuple(d.policy_name for d in evaluation.blockers)},
                    2,
                )
            )
            request = transition(base, RequestStatus.REJECTED, decisions, at=now)
        elif status is ResultStatus.APPROVAL_REQUIRED:
            approvals = map_requirements(evaluation.requirements)
            if not approvals:
                raise ApprovalConfigurationError(
                    "policies required approval but no requirement is of type 'approval'"
                )
            decisions.append(
                new_decision(LifecycleDecision.PENDING, system, "approval required", now, None, 2)
            )
            decisions.append(
                new_decision(
                    ApprovalDecision.REQUESTED,
                    system,
                    "; ".join(
                        dict.fromkeys(
                            d.reason or "approval required"
                            for d in evaluation.decisions
                            if d.needs_approval
                        )
                    ),
                    now,
                    {"approval_requirement_count": len(approvals), "round": 1},
                    3,
                )
            )
            request = transition(
                base,
                RequestStatus.PENDING,
                decisions,
                at=now,
                pending_reason=PendingReason.APPROVAL,
                approval_requirements=approvals,
            )
        elif pending_reason is not None:
            decisions.append(
                new_decision(LifecycleDecision.PENDING, context, pending_reason.name, now, None, 2)
            )
            request = transition(
                base, RequestStatus.PENDING, decisions, at=now, pending_reason=pending_reason
            )
        else:
            decisions.append(
                new_decision(
                    LifecycleDecision.APPROVED, system, "allowed by policies", now, None, 2
                )
            )
            request = transition(base, RequestStatus.APPROVED, decisions, at=now)
        return await self._ledger.create(request)

    # -- approvals -----------------------------------------------------------------------

    @observed("approve")
    async def approve(
        self,
        request_id: str,
        approval_id: str | None = None,
        *,
        context: MutationContext,
        reason: str | None = None,
    ) -> MutationRequest:
        """Approve: one approval slot, or the pending request itself when it has none.

        Without ``approval_id`` the actor's one matching slot in the active step is used.
        The request becomes APPROVED when every slot is approved or satisfied.
        """
        _check_decider(context, "reason", reason)

        def decide(request: MutationRequest) -> MutationRequest:
            self._fence(request, RequestStatus.APPROVED)
            if request.status is RequestStatus.APPROVED and approval_id is None:
                raise ApprovalStateError(
                    f"request {request_id!r} is already APPROVED; there is nothing left to approve",
                    request_id=request_id,
                )
            now = self.clock()
            late = overdue(request, now)
            if late is not None:
                raise late
            awaiting_slots = (
                request.pending_reason is PendingReason.APPROVAL and request.approval_requirements
            )
            if awaiting_slots or approval_id is not None:
                updated = approve_requirement(
                    request,
                    approval_id,
                    context,
                    reason=reason,
                    at=now,
                    allow_self_approval=self.allow_self_approval,
                    revision=request.revision + 1,
                )
            else:
                self._four_eyes(request, context)
                updated = transition(
                    request,
                    RequestStatus.APPROVED,
                    [
                        new_decision(
                            LifecycleDecision.APPROVED,
                            context,
                            reason or context.reason,
                            now,
                            None,
                            len(request.decisions) + 1,
                        )
                    ],
                    at=now,
                    revision=request.revision + 1,
                )
            return updated

        return await self._change(request_id, decide)

    @observed("reject")
    async def reject(
        self,
        request_id: str,
        approval_id: str | None = None,
        *,
        context: MutationContext,
        reason: str | None = None,
        rejection: RejectionReason | None = None,
    ) -> MutationRequest:
        """Reject the request (through the actor's approval slot when it awaits approvals)."""
        _check_decider(context, "reason", reason)
        if rejection is not None and not isinstance(rejection, RejectionReason):
            raise TypeError(
                f"rejection must be a RejectionReason or None, got {type(rejection).__name__}"
            )

        def decide(request: MutationRequest) -> MutationRequest:
            self._fence(request, RequestStatus.REJECTED)
            now = self.clock()
            awaiting_slots = (
                request.status is RequestStatus.PENDING
                and request.pending_reason is PendingReason.APPROVAL
                and bool(request.approval_requirements)
            )
            if awaiting_slots or approval_id is not None:
                updated = reject_requirement(
                    request,
                    approval_id,
                    context,
                    reason=reason,
                    rejection=rejection,
                    at=now,
                    allow_self_approval=self.allow_self_approval,
                )
            else:
                why = reason or (rejection.message if rejection else None) or context.reason
                updated = transition(
                    request,
                    RequestStatus.REJECTED,
                    [RequestDecision(LifecycleDecision.REJECTED, context, why, now)],
                    at=now,
                )
            return updated

        return await self._change(request_id, decide)

    # -- lifecycle -----------------------------------------------------------------------

    @observed("cancel")
    async def cancel(
        self, request_id: str, *, context: MutationContext, reason: str | None = None
    ) -> MutationRequest:
        """Cancel a request that has not run yet."""
        _check_decider(context, "reason", reason)
        return await self._lifecycle(
            request_id, RequestStatus.CANCELED, LifecycleDecision.CANCELED, context, reason
        )

    @observed("expire")
    async def expire(
        self, request_id: str, *, context: MutationContext, reason: str | None = None
    ) -> MutationRequest:
        """Expire a pending request now."""
        _check_decider(context, "reason", reason)
        return await self._lifecycle(
            request_id, RequestStatus.EXPIRED, LifecycleDecision.EXPIRED, context, reason
        )

    @observed("supersede")
    async def supersede(
        self,
        request_id: str,
        superseding_request_id: str,
        *,
        context: MutationContext,
        reason: str | None = None,
    ) -> MutationRequest:
        """Mark a request superseded by another request, which must exist."""
        _check_decider(context, "reason", reason)
        if superseding_request_id == request_id:
            raise ValueError("a request cannot supersede itself")
        await self._load(superseding_request_id)
        return await self._lifecycle(
            request_id,
            RequestStatus.SUPERSEDED,
            LifecycleDecision.SUPERSEDED,
            context,
            reason or f"superseded by {superseding_request_id}",
            {"superseding_request_id": superseding_request_id},
        )

    @observed("move_to_pending")
    async def move_to_pending(
        self,
        request_id: str,
        reason: PendingReason,
        *,
        context: MutationContext,
        note: str | None = None,
        expires_at: datetime | Keep | None = KEEP,
    ) -> MutationRequest:
        """Send a request back to PENDING; to APPROVAL it gets a fresh approval round.

        ``expires_at`` replaces the request's deadline when given (None clears it).
        """
        _check_decider(context, "note", note)
        if not isinstance(reason, PendingReason):
            raise TypeError(f"reason must be a PendingReason, got {reason!r}")
        if reason is PendingReason.REVALIDATION:
            raise ValueError("reason must be a PendingReason other than REVALIDATION")
        if expires_at is not KEEP and expires_at is not None:
            check_moment("expires_at", expires_at)

        def decide(request: MutationRequest) -> MutationRequest:
            self._fence(request, RequestStatus.PENDING)
            now = self.clock()
            changes: dict[str, Any] = {} if expires_at is KEEP else {"expires_at": expires_at}
            decisions = [
                RequestDecision(LifecycleDecision.PENDING, context, note or reason.name, now)
            ]
            if reason is PendingReason.APPROVAL:
                round_changes, round_decisions = fresh_round(request, context, now)
                changes.update(round_changes)
                decisions.extend(round_decisions)
            return transition(
                request, RequestStatus.PENDING, decisions, at=now, pending_reason=reason, **changes
            )

        return await self._change(request_id, decide)

    async def expire_due(
        self, now: datetime | None = None, *, context: MutationContext | None = None
    ) -> ExpirySweep:
        """Expire pending requests and approval slots whose deadline is at or before ``now``.

        A request that changed concurrently is skipped and reported, never aborting the
        sweep. On a store with an :class:`~mutator_governance.ExpiryIndex` the sweep reads
        only the requests that are due, in batches; otherwise every pending request.
        """
        now = self.clock() if now is None else check_moment("now", now)
        context = context or MutationContext.system("expiry sweep", timestamp=now)
        expired: list[MutationRequest] = []
        skipped: list[str] = []
        requests = self.requests
        if not isinstance(requests, ExpiryIndex):
            for request in await requests.pending():
                await self._expire(request, now, context, expired, skipped)
            return ExpirySweep(tuple(expired), tuple(skipped))
        seen: set[str] = set()
        while True:
            batch = await requests.due(now=now, limit=_SWEEP_BATCH)
            fresh = [r for r in batch if r.request_id not in seen]
            for request in fresh:
                seen.add(request.request_id)
                await self._expire(request, now, context, expired, skipped)
            # What was skipped stays due: a batch of only those ends this sweep.
            if len(batch) < _SWEEP_BATCH or not fresh:
                return ExpirySweep(tuple(expired), tuple(skipped))

    async def _expire(
        self,
        request: MutationRequest,
        now: datetime,
        context: MutationContext,
        expired: list[MutationRequest],
        skipped: list[str],
    ) -> None:
        """Expire ``request`` if it is due at ``now``; record what happened."""
        updated = expire_approvals(request, now, context)
        if updated is None and request.expires_at is not None and request.expires_at <= now:
            updated = transition(
                request,
                RequestStatus.EXPIRED,
                [
                    RequestDecision(
                        LifecycleDecision.EXPIRED,
                        context,
                        f"expired at {request.expires_at.isoformat()}",
                        now,
                    )
                ],
                at=now,
            )
        if updated is None:
            return
        try:
            expired.append(await self._ledger.update(request, updated))
        except (RequestConcurrencyError, RequestNotFoundError):
            skipped.append(request.request_id)

    # -- resolution ----------------------------------------------------------------------

    @observed("resolve")
    async def resolve(
        self,
        request_id: str,
        current_version: str | None = None,
        strategy: ResolutionStrategy = ResolutionStrategy.REJECT_STALE,
        *,
        context: MutationContext | None = None,
    ) -> Resolution:
        """Resolve a request against the current state version and persist the outcome.

        Without ``current_version`` the version is read from the state store.
        """
        if context is not None and not isinstance(context, MutationContext):
            raise TypeError(f"context must be a MutationContext, got {type(context).__name__}")
        request = await self._load(request_id)
        if current_version is None:
            current = await self.states.get(request.state_id)
            if current is None:
                raise StateNotFoundError(request.state_id)
            current_version = current.version
        now = self.clock()
        context = context or MutationContext.system(
            "version resolution", correlation_id=request_id, timestamp=now
        )
        resolution = resolve_version(request, current_version, strategy, context, at=now)
        stored = await self._ledger.update(request, resolution.request)
        return attrs.evolve(resolution, request=stored)

    # -- execution -----------------------------------------------------------------------

    async def execute(
        self,
        request_id: str,
        *,
        context: MutationContext | None = None,
        strategy: ResolutionStrategy = ResolutionStrategy.REJECT_STALE,
    ) -> GovernedExecutionResult:
        """Execute an approved request exactly once (see :class:`GovernedExecutionManager`)."""
        if type(strategy) is not ResolutionStrategy:  # before the claim, not after it
            raise TypeError(f"strategy must be a ResolutionStrategy, got {strategy!r}")
        if context is not None and not isinstance(context, MutationContext):
            raise TypeError(f"context must be a MutationContext, got {type(context).__name__}")
        return await self.executor.execute(request_id, context=context, strategy=strategy)

    async def compensate(
        self,
        original_request_id: str,
        mutation: Mutation[Any],
        plan: CompensationPlan | None = None,
        *,
        context: MutationContext,
        allow_irreversible: bool = False,
    ) -> MutationRequest:
        """Create an approved compensation request for an executed one."""
        if not isinstance(context, MutationContext):
            raise TypeError(f"context must be a MutationContext, got {type(context).__name__}")
        if not isinstance(mutation, Mutation):
            raise TypeError(f"mutation must be a Mutation, got {type(mutation).__name__}")
        if plan is not None and not isinstance(plan, CompensationPlan):
            raise TypeError(f"plan must be a CompensationPlan or None, got {type(plan).__name__}")
        return await self.executor.compensate(
            original_request_id,
            mutation,
            plan,
            context=context,
            allow_irreversible=allow_irreversible,
        )

    async def recover_stale_claims(self, now: datetime | None = None) -> RecoverySweep:
        """Finish or release executions whose claim lease ran out."""
        return await self.executor.recover_stale_claims(now)

    async def recover(self, now: datetime | None = None) -> RecoverySweep:
        """Everything to do after a crash: settle stale claims, then repair the decision log.

        With an atomic committer (every shipped store) the log never falls behind, so only
        claims are settled; with stores that share no transaction the decisions that
        reached a request but not its log are appended (exactly the missing sequence
        numbers, safe to run from several processes at once).
        """
        sweep = await self.executor.recover_stale_claims(now)
        if self._ledger.atomic:
            return sweep
        repaired = await self.repair_decision_log()
        return attrs.evolve(sweep, repaired_decisions=repaired)

    async def run_worker(
        self,
        *,
        concurrency: int = 4,
        poll_interval: float = 1.0,
        strategy: ResolutionStrategy = ResolutionStrategy.REJECT_STALE,
        until_idle: bool = False,
        context: MutationContext | None = None,
        recover_every: float = 30.0,
        expire_every: float = 30.0,
        retention: timedelta | None = None,
        purge_every: float = 3600.0,
        backoff: Backoff | None = None,
        grace: float = 10.0,
        progress: WorkerProgress | None = None,
        on_outcome: Callable[[WorkerOutcome], object] | None = None,
    ) -> WorkerReport:
        """Execute ready requests as they appear; see ``GovernedExecutionManager.run_worker``.

        ``poll_interval`` may be 0 (with ``until_idle``, the quickest run to idle): a
        worker waiting for work still waits at least 10 ms between polls, never polling
        the store in a busy loop.

        The worker also expires requests past their deadline (``expire_due``) every
        ``expire_every`` seconds and, with ``retention``, runs
        ``purge(older_than=retention)`` every ``purge_every`` seconds (a failing sweep is
        logged and retried, never stopping the worker).
        """
        purge = None
        if retention is not None:
            _check_age(retention)

            async def purge() -> int:
                return (await self.purge(older_than=retention)).requests

        async def expire() -> int:
            return len((await self.expire_due()).expired)

        return await self.executor.run_worker(
            concurrency=concurrency,
            poll_interval=poll_interval,
            strategy=strategy,
            until_idle=until_idle,
            context=context,
            recover_every=recover_every,
            expire=expire,
            expire_every=expire_every,
            purge=purge,
            purge_every=purge_every,
            backoff=backoff,
            grace=grace,
            progress=progress,
            on_outcome=on_outcome,
        )

    # -- retention -----------------------------------------------------------------------

    @observed("purge")
    async def purge(
        self,
        *,
        older_than: timedelta,
        statuses: Iterable[RequestStatus] = TERMINAL_STATUSES,
        batch_size: int = 500,
        now: datetime | None = None,
    ) -> PurgeReport:
        """Delete terminal requests last updated more than ``older_than`` ago, with decisions.

        Only ``statuses`` (terminal ones; all of them by default) are purged, never a
        request a live compensation links (an EXECUTED request whose compensation is not
        terminal yet). Works in batches of ``batch_size``, one store call each, until a
        batch comes back short. Needs a request store that implements
        :class:`~mutator_governance.protocols.RequestPurger` (every shipped store does);
        raises TypeError otherwise.
        """
        _check_age(older_than)
        chosen = terminal_statuses(statuses)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > MAX_COUNT:
            raise ValueError(f"batch_size must be at most {MAX_COUNT:,}, got {batch_size:,}")
        purger = self.requests
        if not isinstance(purger, RequestPurger):
            raise TypeError(
                f"{type(purger).__name__} cannot purge requests: it does not implement "
                "RequestPurger"
            )
        moment = self.clock() if now is None else check_moment("now", now)
        try:
            cutoff = moment - older_than
        except OverflowError:  # before year 1 (``timedelta.max``): nothing is that old
            return PurgeReport(0, 0, 0, datetime.min.replace(tzinfo=UTC))
        forget = self.decisions if isinstance(self.decisions, DecisionPurger) else None
        requests = decisions = batches = 0
        while True:
            batch = await purger.purge(before=cutoff, statuses=chosen, limit=batch_size)
            batches += 1
            requests += len(batch.request_ids)
            decisions += batch.decisions
            if forget is not None and batch.request_ids:
                with anyio.CancelScope(shield=True):  # the requests are gone: their decisions too
                    decisions += await forget.forget(batch.request_ids)
            if len(batch.request_ids) < batch_size:
                return PurgeReport(requests, decisions, batches, cutoff)

    # -- queries -------------------------------------------------------------------------

    async def get(self, request_id: str) -> MutationRequest:
        """The request (raises :class:`RequestNotFoundError` when unknown)."""
        return await self._load(request_id)

    async def pending(
        self, reason: PendingReason | None = None, *, state_id: str | None = None
    ) -> Sequence[MutationRequest]:
        """Pending requests, optionally with one reason and for one state."""
        pending_reason(reason)
        if state_id is not None:
            check_id("state_id", state_id)
        return await self.requests.pending(reason, state_id=state_id)

    async def list(
        self, query: RequestQuery | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> RequestPage:
        """A page of requests matching ``query``."""
        listing(query, limit)
        return await self.requests.list(query, limit=limit, cursor=cursor)

    async def history(self, state_id: str) -> MutationHistory[Any]:
        """The committed history of ``state_id``, from this governance's history store.

        That is the store's own history (``history=``, or the backend's with
        :meth:`open`), also when the engine keeps another one.
        """
        return await self.history_store.history(check_id("state_id", state_id))

    async def list_approvals(
        self, query: ApprovalQuery | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> ApprovalPage:
        """A page of approval slots matching ``query`` (see :func:`list_approvals`)."""
        return await _operator.list_approvals(self.requests, query, limit=limit, cursor=cursor)

    async def list_decisions(
        self, query: DecisionQuery | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> DecisionPage:
        """A page of decisions matching ``query``, newest first (see :func:`list_decisions`)."""
        log = self.decisions if self._ledger.atomic else None
        return await _operator.list_decisions(
            self.requests, query, limit=limit, cursor=cursor, decisions=log
        )

    async def inbox(
        self,
        context: MutationContext,
        *,
        query: RequestQuery | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> ApprovalPage:
        """The approval slots the actor of ``context`` may decide now, oldest first.

        Open slots in each pending request's active step that target the actor (id, role
        or group), with this governance's four-eyes rule applied (see :func:`inbox`).
        """
        return await _operator.inbox(
            self.requests,
            context,
            allow_self_approval=self.allow_self_approval,
            at=self.clock(),
            query=query,
            limit=limit,
            cursor=cursor,
        )

    async def quarantined(self) -> Sequence[QuarantinedRequest]:
        """Stored requests set aside because they cannot be read (id, backend, field, error).

        Listings, sweeps and workers skip them; repair or delete the row, then call
        ``requests.release(request_id)``. Empty for a store without a
        :class:`~mutator_governance.QuarantineLog`.
        """
        log = self.requests
        if isinstance(log, QuarantineLog):
            return await log.quarantined()
        return ()

    async def decision_history(self, request_id: str) -> Sequence[RequestDecision]:
        """Every decision about a request, oldest first (the request is the source of truth)."""
        return (await self._load(request_id)).decisions

    async def repair_decision_log(self, request_ids: Sequence[str] | None = None) -> int:
        """Append decisions that reached a request but not the decision log.

        Needed only with stores that share no transaction, after a crash between the two
        writes. Checks the given requests (all when None); returns how many were appended.
        """
        if request_ids is None:
            ids: list[str] = []
            cursor = None
            while True:
                page = await self.requests.list(limit=500, cursor=cursor)
                ids.extend(r.request_id for r in page.items)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        elif isinstance(request_ids, str | bytes) or not isinstance(request_ids, Iterable):
            raise TypeError(
                f"request_ids must be a sequence of request ids or None, got {request_ids!r}"
            )
        else:
            ids = [check_id("request_ids[]", request_id) for request_id in request_ids]
        appended = 0
        for request_id in ids:
            request = await self.requests.get(request_id)
            if request is not None:
                appended += await self._ledger.repair(request)
        return appended

    # -- internals -----------------------------------------------------------------------

    async def _lifecycle(
        self,
        request_id: str,
        target: RequestStatus,
        code: LifecycleDecision,
        context: MutationContext,
        reason: str | None,
        metadata: Mapping[str, Any] | None = None,
    ) -> MutationRequest:
        def decide(request: MutationRequest) -> MutationRequest:
            self._fence(request, target)
            now = self.clock()
            return transition(
                request,
                target,
                [RequestDecision(code, context, reason or context.reason, now, metadata or {})],
                at=now,
            )

        return await self._change(request_id, decide)

    async def _load(self, request_id: str) -> MutationRequest:
        return await self._ledger.load(request_id)

    async def _change(
        self, request_id: str, decide: Callable[[MutationRequest], MutationRequest]
    ) -> MutationRequest:
        """Write what ``decide`` makes of the request (compare-and-set on its revision).

        Starts from the ledger's last copy of the request when it holds one, saving a
        read. That copy may be stale: when ``decide`` refuses it, or the write finds the
        revision moved (or the request gone), the stored request is read and decided
        again, so the outcome, error included, is that of reading first. A write that
        loses to a concurrent writer (another approver, say) reads and decides again, up
        to :data:`DECISION_ATTEMPTS` times in all: a decision is made on the request as
        stored, so it lands whenever it still holds, as it does in memory, where nothing
        comes between the read and the write.
        """
        ledger = self._ledger
        recent = ledger.recent(request_id)
        if recent is not None:
            try:
                updated = decide(recent)
            except Exception:  # perhaps only stale: the stored request decides
                pass
            else:
                try:
                    return await ledger.update(recent, updated)
                except (RequestConcurrencyError, RequestNotFoundError):
                    pass
        for _ in range(DECISION_ATTEMPTS - 1):
            request = await ledger.load(request_id)
            try:
                return await ledger.update(request, decide(request))
            except RequestConcurrencyError:
                continue
        request = await ledger.load(request_id)
        return await ledger.update(request, decide(request))

    @staticmethod
    def _fence(request: MutationRequest, target: RequestStatus) -> None:
        """Refuse to move a claimed request: only its claimant, or recovery, may."""
        if request.status is RequestStatus.EXECUTING:
            claim = request.claim
            holder = (
                f"claimed by {claim.claimant} until {claim.lease_until.isoformat()}"
                if claim is not None
                else "claimed"
            )
            raise InvalidTransitionError(
                request.request_id,
                request.status,
                target,
                f"it is being executed ({holder}); only its executor, or recovery after the "
                "lease, may move it",
            )

    def _four_eyes(self, request: MutationRequest, context: MutationContext) -> None:
        if not self.allow_self_approval and same_actor(context.actor_id, request.requester):
            raise SelfApprovalError(
                f"actor {context.actor_id!r} submitted request {request.request_id!r} and may "
                "not approve it (four-eyes)",
                request_id=request.request_id,
            )
