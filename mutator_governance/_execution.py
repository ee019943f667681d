"""Governed execution: claim, resolve, execute once, commit the outcome together."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import anyio
import attrs

from mutator import (
    Mutation,
    MutationContext,
    MutationEngine,
    MutationMode,
    MutationResult,
    MutatorError,
    PolicyEvaluationError,
    ResultStatus,
)
from mutator.concurrency import KeyedLock
from mutator.values import freeze_mapping

from ._arguments import check_moment, check_seconds
from ._commit import InMemoryCommitter
from ._commit_types import RequestWrite, StateWrite
from ._copying import attrs_copier
from ._decisions import RequestDecision, new_decision, system_context
from ._enums import (
    ExecutionKind,
    LifecycleDecision,
    LinkType,
    PendingReason,
    RequestStatus,
    ResolutionStrategy,
)
from ._errors import (
    AlreadyCompensatedError,
    CompensationNotAllowedError,
    RequestClaimedError,
    RequestConcurrencyError,
    RequestNotExecutableError,
    RequestNotFoundError,
    StateNotFoundError,
    outage_in,
)
from ._ledger import RequestLedger
from ._memory import InMemoryDecisionHistory, InMemoryRequestStore, InMemoryStateStore
from ._query import RequestQuery, VersionedState, next_version
from ._registry import MutationRegistry
from ._request import (
    CompensationPlan,
    ExecutionClaim,
    ExecutionDetails,
    ExecutionLink,
    MutationRequest,
    new_claim,
)
from ._resolution import Resolution, Verdict, judge
from ._telemetry import Telemetry, observed
from ._transitions import record, transition
from ._worker import Backoff, WorkerOutcome, WorkerProgress, WorkerReport, run_worker
from ._workflow import fresh_round

__all__ = ["GovernedExecutionManager", "GovernedExecutionResult", "RecoverySweep"]

_log = logging.getLogger("mutator.governance")

T = TypeVar("T")


class _Unread(enum.Enum):
    """The state was not read with the claim (the store cannot): read it afterwards."""

    UNREAD = enum.auto()


# Hot paths read enum members from module globals: on Python 3.11 an attribute of an enum
# class is read through EnumType's __getattr__ hook, about 800 instructions each time.
_UNREAD: Final = _Unread.UNREAD
_APPROVED: Final = RequestStatus.APPROVED
_PENDING: Final = RequestStatus.PENDING
_EXECUTING: Final = RequestStatus.EXECUTING
_EXECUTED: Final = RequestStatus.EXECUTED
_CLAIMED: Final = LifecycleDecision.CLAIMED
_EXECUTED_CODE: Final = LifecycleDecision.EXECUTED
_COMPENSATION: Final = ExecutionKind.COMPENSATION
_COMMIT: Final = MutationMode.COMMIT

_INACTIVE = frozenset(
    {
        RequestStatus.REJECTED,
        RequestStatus.CANCELED,
        RequestStatus.EXPIRED,
        RequestStatus.SUPERSEDED,
        RequestStatus.FAILED,
    }
)


@attrs.frozen
class GovernedExecutionResult:
    """What one governed execution did.

    ``executed`` is true only when the mutation ran and its new state was committed as
    ``resulting_version``. ``mutation_result`` is None when resolution stopped early.
    """

    request: MutationRequest
    resolution: Resolution | None
    mutation_result: MutationResult[Any] | None
    executed: bool
    resulting_version: str | None = None
    original: MutationRequest | None = None


@attrs.frozen
class RecoverySweep:
    """What :meth:`GovernedExecutionManager.recover_stale_claims` did."""

    finished: tuple[MutationRequest, ...] = ()
    released: tuple[MutationRequest, ...] = ()
    skipped: tuple[str, ...] = ()
    repaired_decisions: int = 0


_copy_context = attrs_copier(MutationContext)
_NO_SHIELD = contextlib.nullcontext()
_EMPTY_CONTEXT = contextvars.Context()


def _never_suspends(ledger: RequestLedger) -> bool:
    """Whether every store call of ``ledger`` finishes without suspending (in-memory stores).

    A shield around such calls protects nothing: cancellation is only delivered where a
    task suspends. Checked at each use, since a ledger's stores may be swapped.
    """
    return (
        ledger.telemetry is None
        and type(ledger.committer) is InMemoryCommitter
        and type(ledger.requests) is InMemoryRequestStore
        and type(ledger.states) is InMemoryStateStore
        and type(ledger.decisions) is InMemoryDecisionHistory
    )


def _next_sequence(claimed: MutationRequest, verdict: Verdict) -> int:
    """The sequence number of the decision an execution adds after its resolution's."""
    return len(claimed.decisions) + len(verdict.decisions) + 1


def _finish(
    claimed: MutationRequest,
    verdict: Verdict,
    target: RequestStatus,
    decision: RequestDecision,
    now: datetime,
    *more: RequestDecision,
    pending_reason: PendingReason | None = None,
    **changes: Any,
) -> MutationRequest:
    """The final request of an execution: ``claimed`` resolved by ``verdict``, then moved on.

    One copy of the request with the resolution's decisions and changes, then ``decision``
    and ``more`` with ``changes``; its revision is the one the write stores.
    """
    return transition(
        claimed,
        target,
        (*verdict.decisions, decision, *more),
        at=now,
        pending_reason=pending_reason,
        **{**verdict.changes, **changes, "revision": claimed.revision + 1},
    )


def _executor_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _decides_failure(error: MutatorError) -> bool:
    """Whether ``error`` makes a request FAILED: the mutation's own fault only.

    A store outage behind any error, and a policy that could not be evaluated, release
    the claim instead (the error propagates and the request can run again).
    """
    if outage_in(error) is not None:
        return False
    return not isinstance(error, PolicyEvaluationError)


class _Claim:
    """The claimed request of one running execution, renewed while the mutation runs.

    ``scope`` is the cancel scope of a started asyncio renewal: cancelled through it, the
    renewal still finishes a write it sent (its shield holds, which a ``Task.cancel``
    pierces), so the commit expects the revision that write stored.
    """

    __slots__ = ("renewal", "request", "scope")

    def __init__(self, request: MutationRequest) -> None:
        self.request = request
        self.renewal: asyncio.Task[None] | None = None
        self.scope: anyio.CancelScope | None = None


class _Renewals:
    """The running executions of one manager on one asyncio loop, under one timer.

    A timer per execution (``call_later``, then ``cancel``) costs more than the rest of
    the bookkeeping of an in-memory execution; here an execution only enters a dict and
    leaves it. The timer fires when the earliest one is due, starts the renewal of every
    execution then due (in that execution's context, as its own timer would), and is set
    again for the next.
    """

    __slots__ = ("due", "loop", "renew", "timer", "when")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, renew: Callable[[_Claim], Coroutine[Any, Any, None]]
    ) -> None:
        self.loop = loop
        self.renew = renew
        self.due: dict[_Claim, tuple[float, contextvars.Context]] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.when = 0.0

    def add(self, held: _Claim, interval: float) -> None:
        """Start renewing ``held`` ``interval`` seconds from now, unless discarded by then."""
        at = self.loop.time() + interval
        self.due[held] = at, contextvars.copy_context()
        if self.timer is None or at < self.when:
            self._set(at)

    def _set(self, at: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.when = at
        self.timer = self.loop.call_at(at, self._fire, context=_EMPTY_CONTEXT)

    def _fire(self) -> None:
        self.timer = None
        now = self.loop.time()
        due = self.due
        for held, (at, context) in list(due.items()):
            if at <= now:
                del due[held]
                held.renewal = self.loop.create_task(self.renew(held), context=context)
        if due:
            self._set(min(at for at, _ in due.values()))


class GovernedExecutionManager:
    """Executes approved requests exactly once.

    ``execute`` claims the request (APPROVED → EXECUTING, compare-and-set on its revision,
    with a lease), resolves it against the current state version, runs the mutation in
    COMMIT mode with the request id as correlation id, and commits the new state, the
    terminal request, its decisions, the history entry and the audit entry as one write.
    The claimed revision fences the commit: if recovery took the claim over, the commit
    changes nothing. A running execution renews its lease; a crashed executor's claim
    expires after ``lease`` seconds and :meth:`recover_stale_claims` then finishes or
    releases it without applying the mutation twice. A store error never decides the
    outcome: the claim is released (or the request finished, when its state landed) and
    the error propagates.
    """

    def __init__(
        self,
        ledger: RequestLedger,
        engine: MutationEngine,
        registry: MutationRegistry,
        *,
        lease: float = 300.0,
        executor_id: str | None = None,
    ) -> None:
        check_seconds("lease", lease)
        self.ledger = ledger
        self.engine = engine
        self.registry = registry
        self.lease = timedelta(seconds=lease)
        self.executor_id = executor_id or _executor_id()
        self._states = KeyedLock()
        self._renewals: _Renewals | None = None
        self.telemetry: Telemetry | None = None

    @property
    def clock(self) -> Callable[[], datetime]:
        """The governance clock (leases, decision times)."""
        return self.ledger.clock

    # -- execution -----------------------------------------------------------------------

    @observed("execute")
    async def execute(
        self,
        request_id: str,
        *,
        context: MutationContext | None = None,
        strategy: ResolutionStrategy = ResolutionStrategy.REJECT_STALE,
    ) -> GovernedExecutionResult:
        """Execute an approved request (see the class docstring for the steps).

        Starts from the ledger's copy of the request when it holds an executable one (no
        read); the claim's compare-and-set decides, and a stale copy is read again.
        """
        request = self.ledger.recent(request_id)
        if request is None or not self._executable(request, strategy):
            request = await self.ledger.load(request_id)  # the stored one decides
        return await self._execute_loaded(request, context, strategy)

    @observed("execute")
    async def execute_reserved(
        self,
        request: MutationRequest,
        *,
        context: MutationContext | None = None,
        strategy: ResolutionStrategy = ResolutionStrategy.REJECT_STALE,
    ) -> GovernedExecutionResult:
        """Execute ``request`` as read from the store (a worker's reserved batch).

        Saves the read :meth:`execute` starts with; the claim's compare-and-set on
        ``request.revision`` still decides, so a stale copy raises the same errors.
        """
        if self.telemetry is not None:
            self.telemetry.loaded(request)
        return await self._execute_loaded(request, context, strategy)

    async def _execute_loaded(
        self,
        request: MutationRequest,
        context: MutationContext | None,
        strategy: ResolutionStrategy,
    ) -> GovernedExecutionResult:
        request_id = request.request_id
        context = context or system_context(request_id, self.clock(), executing=True)
        self._check_executable(request, strategy)
        state_id = request.state_id
        await self._states.acquire(state_id)
        try:
            claim = self._new_claim(request)
            try:
                with self._shield():
                    claimed, current = await self._claim_latest(request, claim, context, strategy)
                return await self._run_claimed(claimed, current, context, strategy)
            except BaseException:
                await self._settle_own(request_id, claim, context, "interrupted before commit")
                raise
        finally:
            self._states.release(state_id)

    async def _claim_latest(
        self,
        request: MutationRequest,
        claim: ExecutionClaim,
        context: MutationContext,
        strategy: ResolutionStrategy,
    ) -> tuple[MutationRequest, VersionedState[Any] | _Unread | None]:
        """Claim ``request``; when its revision moved, claim the latest if still executable.

        The copy in hand may be stale (another execution of the same state ran while this
        one waited for the state lock, or a worker's batch aged): only then is it read
        again, and the precise error raised when it is no longer executable. Returns the
        claimed request and the state it will change when the store read it with the
        claim (else ``UNREAD``: it is read outside the claim's shield).
        """
        try:
            return await self._claim(request, claim, context)
        except RequestConcurrencyError:
            latest = await self.ledger.load(request.request_id)
            self._check_executable(latest, strategy)
            return await self._claim(latest, claim, context)

    def _executable(self, request: MutationRequest, strategy: ResolutionStrategy) -> bool:
        try:
            self._check_executable(request, strategy)
        except (RequestNotExecutableError, RequestClaimedError):
            return False
        return True

    def _check_executable(self, request: MutationRequest, strategy: ResolutionStrategy) -> None:
        if request.status is _EXECUTING and request.claim is not None:
            raise RequestClaimedError(
                request.request_id, request.claim.claimant, request.claim.lease_until
            )
        if request.status is _APPROVED:
            return
        if (
            request.status is RequestStatus.PENDING
            and request.pending_reason is PendingReason.REVALIDATION
        ):
            if strategy is ResolutionStrategy.REVALIDATE_ON_LATEST_STATE:
                return
            detail = "it awaits revalidation; execute it with REVALIDATE_ON_LATEST_STATE"
        elif request.status is RequestStatus.EXECUTED:
            detail = "it was already executed"
        elif request.status.is_terminal:
            detail = "a terminal request never runs again"
        else:
            detail = "only APPROVED requests are executed"
        raise RequestNotExecutableError(
            request.request_id, request.status, request.pending_reason, detail
        )

    def _new_claim(self, request: MutationRequest) -> ExecutionClaim:
        now = self.clock()
        return new_claim(self.executor_id, now, now + self.lease, request.status is _PENDING)

    def _shield(self) -> contextlib.AbstractContextManager[object]:
        """A shield for a write that must land whole, or none when nothing can suspend."""
        if _never_suspends(self.ledger):
            return _NO_SHIELD
        return anyio.CancelScope(shield=True)

    @observed("claim")
    async def _claim(
        self, request: MutationRequest, claim: ExecutionClaim, context: MutationContext
    ) -> tuple[MutationRequest, VersionedState[Any] | _Unread | None]:
        now = claim.claimed_at
        claimed = transition(
            request,
            _EXECUTING,
            [
                new_decision(
                    _CLAIMED,
                    context,
                    f"claimed by {self.executor_id}",
                    now,
                    {"claimant": self.executor_id, "lease_until": claim.lease_until},
                    len(request.decisions) + 1,
                )
            ],
            at=now,
            claim=claim,
            revision=request.revision + 1,
        )
        ledger = self.ledger
        if ledger.reads_with_commit:
            return await ledger.update_reading(request, claimed, request.state_id)
        return await ledger.update(request, claimed), _UNREAD

    def _outlives_lease(self) -> bool:
        """Whether an execution may run long enough to need its lease renewed.

        Not when the engine's execution timeout ends it within a third of the lease.
        """
        timeout = self.engine.options.execution_timeout
        return timeout is None or timeout > self.lease.total_seconds() / 3

    async def _renewing(self, held: _Claim, call: Awaitable[T]) -> T:
        """Await ``call`` while the claim's lease is renewed every third of it.

        Most executions end long before a third of the lease, so the renewal starts only
        when one is still running then: on asyncio the manager's one timer starts it (no
        task or timer per execution, see :class:`_Renewals`); elsewhere a task group
        runs it.
        """
        if not self._outlives_lease():
            return await call
        interval = self.lease.total_seconds() / 3
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            async with anyio.create_task_group() as group:
                group.start_soon(self._renew, held, interval)
                try:
                    return await call
                finally:
                    group.cancel_scope.cancel()
        renewals = self._renewals
        if renewals is None or renewals.loop is not loop:
            renewals = self._renewals = _Renewals(loop, self._renew_now)
        renewals.add(held, interval)
        try:
            return await call
        finally:
            renewals.due.pop(held, None)
            task = held.renewal
            if task is not None:
                if held.scope is None:  # not started yet: it never runs
                    task.cancel()
                else:
                    held.scope.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.wait((task,))

    async def _renew_now(self, held: _Claim) -> None:
        with anyio.CancelScope() as held.scope:
            await self._renew(held, 0.0)

    async def _renew(self, held: _Claim, first_wait: float) -> None:
        """Extend the lease every third of it while the mutation runs."""
        interval = self.lease.total_seconds() / 3
        wait = first_wait
        while True:
            await anyio.sleep(wait)
            wait = interval
            current = held.request
            assert current.claim is not None
            now = self.clock()
            renewed = record(
                current, (), at=now, claim=attrs.evolve(current.claim, lease_until=now + self.lease)
            )
            try:
                with anyio.CancelScope(shield=True):
                    held.request = await self.ledger.update(current, renewed)
            except Exception:
                _log.warning(
                    "could not renew the claim on %s; the commit will find out whether it "
                    "still holds",
                    current.request_id,
                    exc_info=True,
                    extra={"request_id": current.request_id, "operation": "renew"},
                )
                return

    async def _run_claimed(
        self,
        claimed: MutationRequest,
        current: VersionedState[Any] | _Unread | None,
        context: MutationContext,
        strategy: ResolutionStrategy,
    ) -> GovernedExecutionResult:
        ledger = self.ledger
        if current is _UNREAD:
            current = await ledger.states.get(claimed.state_id)
        if current is None:
            raise StateNotFoundError(claimed.state_id)
        if not ledger.atomic:
            produced = await ledger.states.version_by_request(claimed.state_id, claimed.request_id)
            if produced is not None:
                finished, _ = await self._finish_applied(
                    claimed, produced, context, "the state already holds this request's version"
                )
                return GovernedExecutionResult(finished, None, None, True, produced)
        claim = claimed.claim
        at = claim.claimed_at if claim is not None else self.clock()
        verdict = judge(claimed, current.version, strategy, context, at=at, claimed=True)
        if not verdict.outcome.executes:
            resolved = verdict.apply(claimed, at=at, revision=claimed.revision + 1)
            with self._shield():
                stored = await ledger.update(claimed, resolved)
            return GovernedExecutionResult(stored, verdict.resolution(stored), None, False)
        # An executing verdict only appends to the claimed request: it is folded into the
        # final write below rather than built on its own.
        assert verdict.target is None
        mutation = self._mutation_of(claimed)
        granted = claimed.policy_requirements if claimed.approval_requirements else ()
        held = _Claim(claimed)
        run_context = self._execution_context(claimed, context)
        deferred = await self._renewing(
            held,
            self.engine.execute_deferred(
                mutation,
                current.state,
                context=run_context,
                state_id=claimed.state_id,
                granted=granted,
            ),
        )
        # The lease may have been renewed: the outcome then carries the new revision.
        claimed = held.request
        failure = deferred.error
        if failure is not None and not _decides_failure(failure):
            outage = outage_in(failure)
            if outage is not None and outage is not failure:
                raise outage from failure
            raise failure
        mutation_result = deferred.result
        now = self.clock()
        state_write = None
        extra: list[RequestWrite] = []
        if failure is not None:
            final = _finish(
                claimed,
                verdict,
                RequestStatus.FAILED,
                new_decision(
                    LifecycleDecision.FAILED,
                    context,
                    str(failure),
                    now,
                    {
                        "failure_type": type(failure).__name__,
                        "execution_id": failure.execution_id or "",
                    },
                    _next_sequence(claimed, verdict),
                ),
                now,
            )
        else:
            assert mutation_result is not None
            final, state_write, extra = await self._outcome(
                claimed, verdict, mutation_result, current.version, context, now
            )
        executed = state_write is not None
        history = (deferred.history,) if executed and deferred.history is not None else ()
        audit = (deferred.audit,) if deferred.audit is not None else ()
        with self._shield():
            written = await ledger.save(
                claimed, final, linked=extra, state=state_write, history=history, audit=audit
            )
        return GovernedExecutionResult(
            written[0],
            verdict.resolution(written[0]),
            mutation_result,
            executed,
            state_write.new_version if state_write is not None else None,
            written[1] if len(written) > 1 else None,
        )

    async def _outcome(
        self,
        claimed: MutationRequest,
        verdict: Verdict,
        result: MutationResult[Any],
        current_version: str,
        context: MutationContext,
        now: datetime,
    ) -> tuple[MutationRequest, StateWrite | None, list[RequestWrite]]:
        """The terminal request (and writes) for a result the engine returned."""
        sequence = _next_sequence(claimed, verdict)
        metadata = {
            "execution_id": result.execution_id or "",
            "execution_kind": claimed.execution.kind.value,
            "result_status": result.status.value,
        }
        if result.ok:
            version = next_version(current_version)
            final = _finish(
                claimed,
                verdict,
                _EXECUTED,
                new_decision(
                    _EXECUTED_CODE,
                    context,
                    f"executed; state is now at version {version}",
                    now,
                    {
                        **metadata,
                        "resulting_state_version": version,
                        "change_count": len(result.changes),
                        "side_effect_count": len(result.side_effects),
                    },
                    sequence,
                ),
                now,
                resulting_state_version=version,
                executed_at=now,
                side_effects=result.side_effects,
            )
            write = StateWrite(
                claimed.state_id, result.new_state, current_version, version, claimed.request_id
            )
            if final.execution.kind is not _COMPENSATION:
                return final, write, []
            try:
                extra = await self._link_compensation(final, version, context, now)
            except AlreadyCompensatedError as error:
                refused = _finish(
                    claimed,
                    verdict,
                    RequestStatus.REJECTED,
                    new_decision(
                        LifecycleDecision.REJECTED, context, str(error), now, metadata, sequence
                    ),
                    now,
                )
                return refused, None, []
            return final, write, extra
        if result.status is ResultStatus.APPROVAL_REQUIRED:
            changes, requested = fresh_round(claimed, context, now, result.requirements)
            final = _finish(
                claimed,
                verdict,
                RequestStatus.PENDING,
                new_decision(
                    LifecycleDecision.PENDING,
                    context,
                    f"policies now require approvals not granted: {result.error_message}",
                    now,
                    metadata,
                    sequence,
                ),
                now,
                *requested,
                pending_reason=PendingReason.APPROVAL,
                policy_requirements=result.requirements,
                expected_state_version=current_version,
                **changes,
            )
            return final, None, []
        final = _finish(
            claimed,
            verdict,
            RequestStatus.REJECTED,
            new_decision(
                LifecycleDecision.REJECTED, context, result.error_message, now, metadata, sequence
            ),
            now,
            side_effects=result.side_effects,
        )
        return final, None, []

    async def _link_compensation(
        self, final: MutationRequest, version: str, context: MutationContext, now: datetime
    ) -> list[RequestWrite]:
        plan = final.execution.compensation
        if final.execution.kind is not ExecutionKind.COMPENSATION or plan is None:
            return []
        original = await self.ledger.load(plan.original_request_id)
        for existing in original.execution.links:
            if existing.type is LinkType.COMPENSATED_BY:
                if existing.request_id == final.request_id:
                    return []
                raise AlreadyCompensatedError(original.request_id, existing.request_id)
        link = ExecutionLink(
            final.request_id,
            LinkType.COMPENSATED_BY,
            ExecutionKind.COMPENSATION,
            now,
            plan.kind,
            plan.trigger,
            plan.batch_id,
        )
        linked = record(
            original,
            [
                RequestDecision(
                    LifecycleDecision.COMPENSATED,
                    context,
                    plan.reason or f"compensated by {final.request_id}",
                    now,
                    {
                        "compensation_request_id": final.request_id,
                        "resulting_state_version": version,
                        "compensation_kind": plan.kind.value,
                        "compensation_trigger": plan.trigger.value,
                    },
                )
            ],
            at=now,
            execution=attrs.evolve(original.execution, links=(*original.execution.links, link)),
        )
        return [
            RequestWrite(linked, original.revision, linked.decisions[len(original.decisions) :])
        ]

    def _mutation_of(self, request: MutationRequest) -> Mutation[Any]:
        cls = self.registry.class_of(request.mutation_type)
        if not isinstance(request.mutation, cls):
            raise TypeError(
                f"request {request.request_id!r} holds a {type(request.mutation).__qualname__}, "
                f"but {request.mutation_type!r} is registered to {cls.__qualname__}"
            )
        return request.mutation

    @staticmethod
    def _execution_context(request: MutationRequest, executor: MutationContext) -> MutationContext:
        """The requester's context, forced to COMMIT and correlated with the request."""
        requester = request.context
        changes: dict[str, Any] = {
            "mode": _COMMIT,
            "correlation_id": request.request_id,
            "causation_id": executor.correlation_id,
            "metadata": freeze_mapping(
                {
                    **requester.metadata,
                    "governance_request_id": request.request_id,
                    "execution_kind": request.execution.kind.value,
                    "executed_by": executor.actor_id or executor.actor_type.value,
                }
            ),
        }
        if type(requester) is not MutationContext:
            return attrs.evolve(requester, **changes)
        context: MutationContext = _copy_context(requester, changes)
        return context

    async def _settle_own(
        self, request_id: str, claim: ExecutionClaim, context: MutationContext, reason: str
    ) -> None:
        """After an interrupted execution, settle the request if it still holds our claim."""
        with anyio.CancelScope(shield=True):
            try:
                latest = await self.ledger.requests.get(request_id)
                if (
                    latest is not None
                    and latest.status is RequestStatus.EXECUTING
                    and latest.claim is not None
                    and latest.claim.claimant == claim.claimant
                    and latest.claim.claimed_at == claim.claimed_at
                    and latest.claim.token == claim.token
                ):
                    await self._settle(latest, context, reason)
            except Exception:
                _log.warning(
                    "could not settle the claim on %s; recovery will after its lease",
                    request_id,
                    exc_info=True,
                    extra={"request_id": request_id, "operation": "settle"},
                )

    async def _settle(
        self, request: MutationRequest, context: MutationContext, reason: str
    ) -> tuple[MutationRequest, bool]:
        """Finish an EXECUTING request whose executor stopped before recording the outcome.

        When the state store holds a version this request produced, the mutation was
        applied: the request becomes EXECUTED with that version (and a compensation links
        its original). Otherwise the claim is released so the request can run again.
        Returns the stored request and whether it was finished as executed.
        """
        version = await self.ledger.states.version_by_request(request.state_id, request.request_id)
        if version is None:
            released = self._released(request, context, reason, self.clock())
            return await self.ledger.update(request, released), False
        return await self._finish_applied(
            request,
            version,
            context,
            f"recovered: the state reached version {version} before the executor stopped",
        )

    async def _finish_applied(
        self, request: MutationRequest, version: str, context: MutationContext, reason: str
    ) -> tuple[MutationRequest, bool]:
        """Record EXECUTED for a request whose state version ``version`` already landed."""
        now = self.clock()
        finished = transition(
            request,
            RequestStatus.EXECUTED,
            [
                RequestDecision(
                    LifecycleDecision.EXECUTED,
                    context,
                    reason,
                    now,
                    {"resulting_state_version": version, "recovered": True},
                )
            ],
            at=now,
            resulting_state_version=version,
            executed_at=now,
        )
        try:
            linked = await self._link_compensation(finished, version, context, now)
        except AlreadyCompensatedError:
            _log.error(
                "recovered compensation %s was applied, but its original is already "
                "compensated by another request",
                request.request_id,
                extra={"request_id": request.request_id, "operation": "recover"},
            )
            linked = []
        stored = await self.ledger.save(request, finished, linked=linked)
        return stored[0], True

    @staticmethod
    def _released(
        request: MutationRequest, context: MutationContext, reason: str, now: datetime
    ) -> MutationRequest:
        decision = RequestDecision(LifecycleDecision.RELEASED, context, reason, now)
        if request.claim is not None and request.claim.revalidating:
            return transition(
                request,
                RequestStatus.PENDING,
                [decision],
                at=now,
                pending_reason=PendingReason.REVALIDATION,
            )
        return transition(request, RequestStatus.APPROVED, [decision], at=now)

    # -- recovery ------------------------------------------------------------------------

    @observed("recover")
    async def recover_stale_claims(
        self, now: datetime | None = None, *, context: MutationContext | None = None
    ) -> RecoverySweep:
        """Finish or release EXECUTING requests whose lease ran out.

        When the state store records a version produced by the request, the mutation was
        applied and only its outcome is missing: the request becomes EXECUTED with that
        version. Otherwise it is released so it can be executed again.
        """
        now = self.clock() if now is None else check_moment("now", now)
        finished: list[MutationRequest] = []
        released: list[MutationRequest] = []
        skipped: list[str] = []
        for request in await self._executing():
            if request.claim is None or request.claim.lease_until > now:
                continue
            scoped = context or MutationContext.system(
                "claim recovery", correlation_id=request.request_id, timestamp=now
            )
            try:
                stored, executed = await self._settle(request, scoped, "lease expired")
            except (RequestConcurrencyError, RequestNotFoundError):
                skipped.append(request.request_id)
                continue
            (finished if executed else released).append(stored)
        return RecoverySweep(tuple(finished), tuple(released), tuple(skipped))

    async def _executing(self) -> list[MutationRequest]:
        query = RequestQuery(statuses={RequestStatus.EXECUTING})
        found: list[MutationRequest] = []
        cursor = None
        while True:
            page = await self.ledger.requests.list(query, limit=200, cursor=cursor)
            found.extend(page.items)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    # -- worker --------------------------------------------------------------------------

    async def run_worker(
        self,
        *,
        concurrency: int = 4,
        poll_interval: float = 1.0,
        strategy: ResolutionStrategy = ResolutionStrategy.REJECT_STALE,
        context: MutationContext | None = None,
        until_idle: bool = False,
        recover_every: float = 30.0,
        expire: Callable[[], Awaitable[int]] | None = None,
        expire_every: float = 30.0,
        purge: Callable[[], Awaitable[int]] | None = None,
        purge_every: float = 3600.0,
        backoff: Backoff | None = None,
        grace: float = 10.0,
        progress: WorkerProgress | None = None,
        on_outcome: Callable[[WorkerOutcome], object] | None = None,
    ) -> WorkerReport:
        """Execute ready requests as they appear, at most ``concurrency`` at a time.

        Ready means APPROVED (with REVALIDATE_ON_LATEST_STATE also pending revalidation),
        oldest first. A store with a :class:`~mutator_governance.ReadyQueue` hands out
        disjoint batches to every worker process in one operation; a store with a
        :class:`~mutator_governance.ReadySignal` wakes an idle worker as soon as a request
        becomes ready; otherwise the worker polls every ``poll_interval`` seconds (with
        jitter). ``poll_interval`` may be 0 (with ``until_idle``, the quickest run to
        idle): a worker waiting for work still waits at least 10 ms between polls, as it
        does for any shorter interval, so it never reads the store in a busy loop; a
        finished execution wakes it at once. Nothing stops it but cancellation (or, with
        ``until_idle``, no ready request and nothing in flight or waiting for a retry):

        - a store outage (poll, claim, commit, housekeeping) is logged at WARNING and
          retried after ``backoff`` (exponential with jitter);
        - a request that raised anything else is logged and parked for one lease
          (never retried in a tight loop); unreadable rows are quarantined by the store;
        - every ``recover_every`` seconds stale claims are recovered, every
          ``expire_every`` seconds ``expire`` runs, every ``purge_every`` seconds ``purge``
          (each returns how many requests it settled: ``recovered``, ``expired`` and
          ``purged`` in the report).

        Each outcome is logged at INFO on ``mutator.governance.worker`` and passed to
        ``on_outcome``; ``progress`` shows the counts live and after a cancellation.
        Cancelling stops claiming and gives in-flight executions ``grace`` seconds to
        finish before they are cancelled and their claims released (a commit already
        sent is shielded: one waiting on the store, e.g. on a row lock held elsewhere,
        holds the shutdown until the store answers, so bound it with the store's
        statement timeout). A worker that stops gives back the reservations it did not
        start (a store with a
        :class:`~mutator_governance.ReservationRelease`), so other workers take those
        requests at once; a batch whose reservation completes after the cancel is not
        started.
        """
        return await run_worker(
            self,
            concurrency=concurrency,
            poll_interval=poll_interval,
            strategy=strategy,
            context=context,
            until_idle=until_idle,
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

    # -- compensation --------------------------------------------------------------------

    @observed("compensate")
    async def compensate(
        self,
        original_request_id: str,
        mutation: Mutation[Any],
        plan: CompensationPlan | None = None,
        *,
        context: MutationContext,
        allow_irreversible: bool = False,
        request_id: str | None = None,
    ) -> MutationRequest:
        """Create an APPROVED compensation request linked to an executed request.

        Executing it links ``COMPENSATED_BY`` on the original and appends its
        ``COMPENSATED`` decision in the same commit. Raises
        :class:`CompensationNotAllowedError` when the original was not executed or its intent
        is not reversible (unless ``allow_irreversible``), and
        :class:`AlreadyCompensatedError` when a compensation exists or is in flight.
        """
        ledger = self.ledger
        plan = plan or CompensationPlan(original_request_id)
        if plan.original_request_id != original_request_id:
            raise ValueError("plan.original_request_id must name the request being compensated")
        original = await ledger.load(original_request_id)
        if original.status is not RequestStatus.EXECUTED:
            raise CompensationNotAllowedError(
                f"request {original_request_id!r} is {original.status.name}; only EXECUTED "
                "requests can be compensated",
                request_id=original_request_id,
            )
        if not original.intent.reversible and not allow_irreversible:
            raise CompensationNotAllowedError(
                f"request {original_request_id!r} ({original.intent.operation}) is not "
                "reversible; pass allow_irreversible=True to compensate it anyway",
                request_id=original_request_id,
            )
        for link in original.execution.links:
            if link.type is LinkType.COMPENSATED_BY:
                raise AlreadyCompensatedError(original_request_id, link.request_id)
        for other in await ledger.requests.by_state(original.state_id):
            compensation = other.execution.compensation
            if (
                compensation is not None
                and compensation.original_request_id == original_request_id
                and other.status not in _INACTIVE
            ):
                raise AlreadyCompensatedError(original_request_id, other.request_id)
        current = await ledger.states.get(original.state_id)
        if current is None:
            raise StateNotFoundError(original.state_id)
        now = self.clock()
        new_id = request_id or uuid.uuid4().hex
        metadata = {
            "original_request_id": original_request_id,
            "compensation_kind": plan.kind.value,
            "compensation_trigger": plan.trigger.value,
        }
        if plan.batch_id is not None:
            metadata["batch_id"] = plan.batch_id
        request = MutationRequest(
            request_id=new_id,
            state_id=original.state_id,
            state_type=original.state_type,
            mutation_type=self.registry.name_of(mutation),
            mutation=mutation,
            intent=mutation.intent,
            context=context,
            status=RequestStatus.APPROVED,
            created_at=now,
            updated_at=now,
            decisions=(
                RequestDecision(LifecycleDecision.SUBMITTED, context, plan.reason, now, metadata),
                RequestDecision(
                    LifecycleDecision.APPROVED,
                    context,
                    plan.reason or f"compensation of {original_request_id}",
                    now,
                    metadata,
                ),
            ),
            expected_state_version=current.version,
            execution=ExecutionDetails(
                ExecutionKind.COMPENSATION,
                plan,
                (
                    ExecutionLink(
                        original_request_id,
                        LinkType.COMPENSATES,
                        ExecutionKind.COMPENSATION,
                        now,
                        plan.kind,
                        plan.trigger,
                        plan.batch_id,
                    ),
                ),
            ),
        )
        return await ledger.create(request)
