"""The mutation engine: one auditable path from a mutation to a result."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
import attrs

from . import _context as _context_module
from ._changes import EMPTY_CHANGES, ChangeSet
from ._context import ExecutionContext, MutationContext
from ._deadline import (
    AWAITABLE_TYPES,
    DeadlineExpired,
    bounded,
    checkpoint_if_cancelled,
    current_time,
    is_awaitable,
)
from ._diff import diff, differ
from ._enums import ActorType, MutationMode, ResultStatus
from ._errors import (
    ExecutionTimeoutError,
    InvalidMutationError,
    MutationFailedError,
    MutatorError,
)
from ._evaluation import (
    ALLOWED,
    PolicyEvaluation,
    PolicySet,
    allow_prefix,
    allowed_evaluation,
    evaluate_policies,
    evaluate_rest,
)
from ._gate import ConcurrencyGate
from ._intent import MutationIntent
from ._interceptors import Interceptor, InterceptorChain, run_hook
from ._memory import (
    InMemoryAuditSink,
    InMemoryHistoryStore,
    NullAuditSink,
    NullHistoryStore,
    _Log,
)
from ._metrics import InMemoryMetrics
from ._mutation import Mutation
from ._options import EngineOptions
from ._policies import MutationPolicy, PolicyDecision, PolicyModification, PolicyRequirement
from ._records import AuditEntry, AuditOutcome, HistoryEntry, MutationHistory
from ._results import BatchResult, MutationResult
from ._statistics import EngineStatistics
from ._trusted import builder, trusted
from ._validation import ValidationResult
from .protocols import AuditSink, HistoryStore, MetricsCollector

__all__ = ["DeferredExecution", "MutationEngine"]

StateT = TypeVar("StateT")

_OUTCOMES = {
    ResultStatus.SUCCEEDED: AuditOutcome.SUCCEEDED,
    ResultStatus.VALIDATION_FAILED: AuditOutcome.VALIDATION_FAILED,
    ResultStatus.POLICY_BLOCKED: AuditOutcome.POLICY_BLOCKED,
    ResultStatus.APPROVAL_REQUIRED: AuditOutcome.APPROVAL_REQUIRED,
}


@attrs.frozen
class DeferredExecution:
    """What :meth:`MutationEngine.execute_deferred` produced, not yet written anywhere.

    Exactly one of ``result`` and ``error`` is set. ``audit`` is the entry the engine would
    have recorded (None when the engine audits nothing) and ``history`` the entry of a
    successful commit; the caller writes both together with the new state, so a commit
    that does not land leaves no record of success.
    """

    result: MutationResult[Any] | None
    error: MutatorError | None
    audit: AuditEntry | None
    history: HistoryEntry | None


_AUDIT_SUCCEEDED = AuditOutcome.SUCCEEDED
_now = datetime.now
_perf_counter = time.perf_counter
_NO_GRANTS: frozenset[tuple[Any, ...]] = frozenset()
_VALID = ValidationResult.ok()
_SUCCEEDED = ResultStatus.SUCCEEDED
_COMMIT = MutationMode.COMMIT
_VALIDATE = MutationMode.VALIDATE
_SIMULATE = MutationMode.SIMULATE

# Trusted constructors (no converters or validators) for values this module assembled
# from already-frozen parts; the public constructors keep validating user input.
_execution_context = trusted(ExecutionContext)
# The same steps inline (see :func:`builder`), for the three values of every execution.
_RESULT_BUILDER = builder(MutationResult)
_AUDIT_BUILDER = builder(AuditEntry)
_HISTORY_BUILDER = builder(HistoryEntry)

_Decided = tuple[
    ResultStatus,
    Any,
    ChangeSet,
    tuple[Any, ...],
    ValidationResult,
    tuple[PolicyDecision, ...],
    tuple[PolicyRequirement, ...],
]
"""status, new state, changes, side effects, validation, decisions, requirements."""


class _Plan:
    """What the engine needs to know about one (mutation class, state type), worked out once.

    ``policies`` are the applicable ones in evaluation order and ``allowed`` their combined
    evaluation when each returns the shared allow decision; ``validates`` is False when the
    class keeps :meth:`Mutation.validate` (always valid, so it is not called);
    ``result_types`` are the classes apply may return (None: anything, for a None state);
    ``diff`` diffs two states of exactly ``state_type``.
    """

    __slots__ = (
        "allowed",
        "diff",
        "intent",
        "policies",
        "result_types",
        "state_type",
        "state_type_name",
        "validates",
    )

    def __init__(
        self,
        mutation_type: type[Any],
        intent: MutationIntent,
        state_type: type[Any],
        policies: tuple[MutationPolicy[Any], ...],
    ) -> None:
        self.intent = intent
        self.state_type = state_type
        self.state_type_name = state_type.__name__
        self.diff = differ(state_type)
        self.policies = policies
        self.allowed = allowed_evaluation(policies) if policies else ALLOWED
        self.validates = mutation_type.validate is not Mutation.validate
        declared: tuple[type[Any], ...] = getattr(mutation_type, "result_types", ())
        self.result_types: tuple[type[Any], ...] | None = (
            None if state_type is type(None) else (state_type, *declared)
        )


class _Step:
    """A step of :meth:`MutationEngine.execute_batch` or ``execute_deferred``.

    Passed to :meth:`MutationEngine.execute` as its ``context``: the caller has passed the
    cancel point and holds the gate, and the plan is already known. ``granted`` approvals
    count as given, audit entries go to ``collected`` when it is given, and the history
    entry of a successful commit is left in ``history`` instead of being written.
    """

    __slots__ = ("collected", "context", "granted", "history", "plan")

    plan: _Plan
    """The plan of the step about to run (set by the caller before each step)."""

    def __init__(
        self,
        context: MutationContext,
        granted: frozenset[tuple[Any, ...]] = _NO_GRANTS,
        collected: list[AuditEntry] | None = None,
    ) -> None:
        self.context = context
        self.granted = granted
        self.collected = collected
        self.history: HistoryEntry | None = None


def _check_state_id(state_id: object) -> None:
    """Refuse a state id that is not a string (None is no state): it keys the state's
    lock, its history and its audit entries, which a number or a list would not survive."""
    if state_id is not None and not isinstance(state_id, str):
        raise TypeError(f"state_id must be a string or None, got {state_id!r}")


class MutationEngine:
    """Runs mutations through interceptors, policies, validation, the mode, audit and history.

    Pipeline for one execution: concurrency slot (per-state lock, then a global slot) →
    ``before`` interceptors → every applicable policy → validation (skipped only for
    COMMIT when ``always_validate`` is off) → the mode (simulate / validate / commit) →
    policy modifications → ``after`` interceptors → audit → history (successful commits
    with a ``state_id``) → metrics.

    Executions sharing a ``state_id`` never interleave; others run in parallel up to
    ``max_concurrency``. The engine never stores states: the caller keeps
    ``result.new_state``.
    """

    def __init__(
        self,
        options: EngineOptions | None = None,
        *,
        audit: AuditSink | None = None,
        history: HistoryStore | None = None,
        metrics: MetricsCollector | None = None,
        policies: Iterable[MutationPolicy[Any]] = (),
        interceptors: Iterable[Interceptor] = (),
    ) -> None:
        self.options = options if options is not None else EngineOptions.default()
        self._audit: AuditSink = audit if audit is not None else InMemoryAuditSink()
        self._history_store: HistoryStore = (
            history if history is not None else InMemoryHistoryStore()
        )
        self._metrics: MetricsCollector = (
            metrics if metrics is not None else InMemoryMetrics(self.options.metrics_window)
        )
        self._sinks_changed()
        self._policies = PolicySet()
        self._interceptors = InterceptorChain()
        self._intercepting = False
        self._gate = ConcurrencyGate(self.options.max_concurrency)
        self._intents: dict[type[Any], MutationIntent] = {}
        self._plans: dict[tuple[type[Any], type[Any]], _Plan] = {}
        for policy in policies:
            self.register_policy(policy)
        for interceptor in interceptors:
            self.register_interceptor(interceptor)

    # -- configuration -------------------------------------------------------------------
    # Reassigning one of these recomputes what the pipeline derives from it once.

    @property
    def options(self) -> EngineOptions:
        """The engine's options (``max_concurrency`` is read once, when the engine is made)."""
        return self._options

    @options.setter
    def options(self, options: EngineOptions) -> None:
        if not isinstance(options, EngineOptions):
            raise TypeError(f"options must be EngineOptions, got {type(options).__name__}")
        self._options = options
        self._timeout = options.execution_timeout
        self._policy_timeout = options.policy_timeout
        self._always_validate = options.always_validate

    @property
    def audit(self) -> AuditSink:
        """Where every execution attempt is audited."""
        return self._audit

    @audit.setter
    def audit(self, audit: AuditSink) -> None:
        self._audit = audit
        self._sinks_changed()

    @property
    def history_store(self) -> HistoryStore:
        """Where successful commits with a ``state_id`` are recorded."""
        return self._history_store

    @history_store.setter
    def history_store(self, history_store: HistoryStore) -> None:
        self._history_store = history_store
        self._sinks_changed()

    @property
    def metrics(self) -> MetricsCollector:
        """What counts executions and their durations."""
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: MetricsCollector) -> None:
        self._metrics = metrics
        self._sinks_changed()

    def _sinks_changed(self) -> None:
        """Work out once how records and metrics are written.

        The in-memory sinks and metrics of this package (their own classes only: a
        subclass may override a method) are written without a call or an await.
        """
        audit, history, metrics = self._audit, self._history_store, self._metrics
        self._audit_on = not isinstance(audit, NullAuditSink)
        self._history_on = not isinstance(history, NullHistoryStore)
        in_memory = (InMemoryAuditSink, NullAuditSink, InMemoryHistoryStore, NullHistoryStore)
        self._shield_records = not (isinstance(audit, in_memory) and isinstance(history, in_memory))
        self._audit_entries: deque[AuditEntry] | None = None
        self._keep_audit: Callable[[AuditEntry], None] | None = None
        if isinstance(audit, InMemoryAuditSink) and type(audit) is InMemoryAuditSink:
            if audit.max_entries is None:
                self._audit_entries = audit._entries  # nothing is ever dropped: append
            else:
                self._keep_audit = audit._keep
        self._keep_history: Callable[[HistoryEntry], None] | None = None
        self._history_logs: dict[str, _Log] | None = None
        if isinstance(history, InMemoryHistoryStore) and type(history) is InMemoryHistoryStore:
            if history._order is None:
                self._history_logs = history._by_state  # nothing is ever dropped: append
            self._keep_history = history._keep
        self._memory_metrics = (
            metrics
            if isinstance(metrics, InMemoryMetrics) and type(metrics) is InMemoryMetrics
            else None
        )

    # -- registration --------------------------------------------------------------------

    def register_policy(self, policy: MutationPolicy[Any]) -> None:
        """Add a policy; it applies to states that are instances of its ``state_type``."""
        self._policies.add(policy)
        self._plans.clear()

    def unregister_policy(self, name: str) -> int:
        """Remove every policy called ``name``; returns how many were removed."""
        removed = self._policies.remove(name)
        self._plans.clear()
        return removed

    def register_interceptor(self, interceptor: Interceptor) -> None:
        """Add an interceptor; hooks run in ascending ``order``, ties in registration order."""
        self._interceptors.add(interceptor)
        self._intercepting = bool(self._interceptors.interceptors)

    def unregister_interceptor(self, name: str) -> int:
        """Remove every interceptor called ``name``; returns how many were removed."""
        removed = self._interceptors.remove(name)
        self._intercepting = bool(self._interceptors.interceptors)
        return removed

    @property
    def policies(self) -> tuple[MutationPolicy[Any], ...]:
        """Registered policies in evaluation order."""
        return self._policies.all()

    @property
    def interceptors(self) -> tuple[Interceptor, ...]:
        """Registered interceptors in run order."""
        return self._interceptors.interceptors

    # -- execution -----------------------------------------------------------------------

    async def execute(
        self,
        mutation: Mutation[StateT],
        state: StateT,
        *,
        context: MutationContext | None = None,
        state_id: str | None = None,
    ) -> MutationResult[StateT]:
        """Run one mutation against ``state`` in ``context.mode`` (COMMIT by default).

        Returns a result for every policy or validation outcome; raises
        :class:`MutationFailedError` when the mutation's own code raised,
        :class:`InvalidMutationError` when it returned something the engine cannot use
        (such as an object that is not an instance of the state's class),
        :class:`ExecutionTimeoutError` on timeout, and policy errors unchanged.
        Cancellation propagates and is not audited.
        """
        # The pipeline runs in this one frame (one coroutine per execution): hooks,
        # policies, validation, the mode and policy modifications, then the result and
        # records. Synchronous user code runs without awaiting anything. The clocks are
        # read once each: ``perf_counter`` for the duration (and the timeout of synchronous
        # work), the wall clock for the execution's timestamp, which the result, the audit
        # entry and the history entry share; the event-loop clock only when a deadline is
        # needed for awaited work (or for interceptors to see).
        step: _Step | None = None
        if type(context) is MutationContext:
            plan = self._plans.get((type(mutation), type(state))) or self._plan(mutation, state)
        else:
            given: Any = context
            if type(given) is _Step:  # from execute_batch or execute_deferred: gate held
                step = given
                plan = given.plan
                context = given.context
            else:
                plan = self._plans.get((type(mutation), type(state))) or self._plan(mutation, state)
                context = self._context(context)
        gate = self._gate
        if step is None:
            if state_id is not None and type(state_id) is not str:
                _check_state_id(state_id)
            check = checkpoint_if_cancelled()  # a cancel point, as an anyio lock would be
            if check is not None:
                await check
            # ConcurrencyGate.try_enter, inlined: both free, nobody can be waiting for either.
            if gate._free and (state_id is None or state_id not in gate._states):
                gate._free -= 1
                if state_id is not None:
                    gate._states[state_id] = None
            else:
                await gate.enter(state_id)
            granted = _NO_GRANTS
            collected = None
        else:
            granted = step.granted
            collected = step.collected
        try:
            started = _perf_counter()
            started_at = _now(UTC)
            execution_id = next(_context_module._ids)
            intent = plan.intent
            timeout = self._timeout
            deadline = None
            execution = None
            interceptors = self._interceptors.active(intent, context) if self._intercepting else ()
            if interceptors:
                if timeout is not None:
                    deadline = current_time() + timeout
                execution = _execution_context(execution_id, started_at, state_id, deadline, {})
            mode = context.mode
            try:
                if interceptors:
                    await run_hook(
                        interceptors,
                        "before",
                        mutation,
                        state,
                        context,
                        execution,
                        deadline=deadline,
                    )
                decided: _Decided | None = None
                evaluation = plan.allowed
                policies = plan.policies
                if policies:
                    limit = self._policy_timeout
                    index, pending, called_at = allow_prefix(
                        policies, mutation, state, context, limit, execution_id
                    )
                    if index < len(policies):
                        if deadline is None and timeout is not None:
                            deadline = _loop_deadline(started, timeout)
                        evaluation = await evaluate_rest(
                            policies,
                            index,
                            pending,
                            called_at,
                            mutation,
                            state,
                            context,
                            limit,
                            execution_id,
                            deadline,
                            evaluation,
                        )
                        if evaluation is not plan.allowed:
                            decided = _refused(evaluation, granted)
                if decided is None:
                    validation: Any = _VALID
                    if plan.validates and (mode is not _COMMIT or self._always_validate):
                        validation = mutation.validate(state)
                        if type(validation) is not ValidationResult:
                            if is_awaitable(validation):
                                if deadline is None and timeout is not None:
                                    deadline = _loop_deadline(started, timeout)
                                validation = await bounded(validation, deadline)
                            if not isinstance(validation, ValidationResult):
                                raise InvalidMutationError(
                                    f"{type(mutation).__qualname__}.validate returned "
                                    f"{type(validation).__name__}, expected ValidationResult",
                                    execution_id=execution_id,
                                )
                        if validation.issues and not validation.is_valid:
                            decided = (
                                ResultStatus.VALIDATION_FAILED,
                                None,
                                EMPTY_CHANGES,
                                (),
                                validation,
                                evaluation.decisions,
                                (),
                            )
                    if decided is None:
                        if mode is _VALIDATE:
                            decided = (
                                _SUCCEEDED,
                                state,
                                EMPTY_CHANGES,
                                (),
                                validation,
                                evaluation.decisions,
                                (),
                            )
                        else:
                            if mode is _SIMULATE:
                                outcome = mutation.simulate(state)
                            else:
                                outcome = mutation.apply(state)  # no bound method is made
                            known = AWAITABLE_TYPES.get(type(outcome))
                            if known or (known is None and is_awaitable(outcome)):
                                if deadline is None and timeout is not None:
                                    deadline = _loop_deadline(started, timeout)
                                outcome = await bounded(outcome, deadline)
                            if type(outcome) is plan.state_type and evaluation.modification is None:
                                decided = (
                                    _SUCCEEDED,
                                    outcome,
                                    plan.diff(state, outcome),
                                    (),
                                    validation,
                                    evaluation.decisions,
                                    (),
                                )
                            else:
                                decided = _shape(
                                    mutation,
                                    plan,
                                    mode,
                                    state,
                                    outcome,
                                    validation,
                                    evaluation,
                                    execution_id,
                                )
                duration = _perf_counter() - started
                if timeout is not None and duration > timeout:
                    raise DeadlineExpired
            except Exception as error:
                if isinstance(error, DeadlineExpired):
                    assert timeout is not None
                    failure: MutatorError = ExecutionTimeoutError(
                        timeout, _perf_counter() - started, execution_id=execution_id
                    )
                elif isinstance(error, MutatorError):
                    failure = error
                else:
                    failure = MutationFailedError(
                        intent.operation, error, execution_id=execution_id
                    )
                if failure.execution_id is None:
                    failure.execution_id = execution_id
                with anyio.CancelScope(shield=True):
                    await self._record_failure(
                        mutation,
                        plan,
                        state,
                        context,
                        execution_id,
                        started_at,
                        state_id,
                        execution,
                        interceptors,
                        failure,
                        started,
                        (self._audit if collected is None else collected)
                        if self._audit_on
                        else None,
                    )
                if failure is error:
                    raise
                if isinstance(error, DeadlineExpired):
                    raise failure from None
                raise failure from error
            except BaseException:  # cancelled: not a failure, but interceptors see it ended
                if interceptors:
                    with anyio.CancelScope(shield=True):
                        await run_hook(
                            interceptors, "cancelled", mutation, state, context, execution
                        )
                raise

            status, new_state, changes, side_effects, validation, decisions, requirements = decided
            # The result, history and audit entry are built as their trusted constructors
            # would (one plain store per field, then the class), without the calls.
            result = _RESULT_BUILDER()
            result.status = status
            result.new_state = new_state
            result.changes = changes
            result.side_effects = side_effects
            result.validation = validation
            result.policy_decisions = decisions
            result.requirements = requirements
            result.execution_id = execution_id
            result.duration = duration
            result.mode = mode
            result.completed_at = started_at
            result.changes_explicit = False
            result.__class__ = MutationResult
            if interceptors:
                hook = "after" if status in _AFTER_HOOK else "policy_blocked"
                await run_hook(interceptors, hook, mutation, state, result, context, execution)
            history = None
            if (
                status is _SUCCEEDED
                and mode is _COMMIT
                and state_id is not None
                and self._history_on
            ):
                history = _HISTORY_BUILDER()
                history.execution_id = execution_id
                history.state_id = state_id
                history.intent = intent
                history.context = context
                history.changes = changes
                history.executed_at = started_at
                history.duration = duration
                history.side_effects = side_effects
                history.mutation = mutation
                history.__class__ = HistoryEntry
            outcome_ = _AUDIT_SUCCEEDED if status is _SUCCEEDED else _OUTCOMES[status]
            if self._audit_on:
                entry = _AUDIT_BUILDER()
                entry.execution_id = execution_id
                entry.state_id = state_id
                entry.state_type = plan.state_type_name
                entry.intent = intent
                entry.context = context
                entry.mode = mode
                entry.outcome = outcome_
                entry.executed_at = started_at
                entry.duration = duration
                entry.changes = changes
                entry.side_effects = side_effects
                entry.policy_decisions = decisions
                entry.error = None if status is _SUCCEEDED else result.error_message
                entry.__class__ = AuditEntry
                if collected is not None:
                    collected.append(entry)
                elif self._audit_entries is not None:
                    self._audit_entries.append(entry)
                elif self._keep_audit is not None:
                    self._keep_audit(entry)
                elif self._shield_records:
                    with anyio.CancelScope(shield=True):
                        await self._audit.record(entry)
                else:
                    await self._audit.record(entry)
            metrics = self._memory_metrics
            if metrics is not None:  # InMemoryMetrics.record, inlined
                metrics._durations.append(duration)
                metrics._stamps.append(started + duration)  # the end, on the stamps' clock
                metrics._total += 1
                if outcome_ is _AUDIT_SUCCEEDED:
                    metrics._succeeded += 1
            else:
                self._metrics.record(outcome_, duration)
            if step is not None:
                step.history = history
            elif history is not None:
                logs = self._history_logs
                if logs is not None:  # InMemoryHistoryStore._keep, inlined (no bound)
                    log = logs.get(state_id)  # type: ignore[arg-type]  # set with history
                    if log is None:
                        logs[state_id] = _Log(history)  # type: ignore[index]
                    else:
                        log.entries.append(history)
                elif self._keep_history is not None:
                    self._keep_history(history)
                elif self._shield_records:
                    with anyio.CancelScope(shield=True):
                        await self._history_store.append(history)
                else:
                    await self._history_store.append(history)
            return result  # type: ignore[no-any-return]  # built as a MutationResult
        finally:
            if step is not None:
                pass  # the batch or deferred execution leaves the gate
            elif gate._slot_waiters or (state_id is not None and gate._states[state_id]):
                gate.leave(state_id)
            else:  # ConcurrencyGate.leave, inlined for the case where nobody waits
                gate._free += 1
                if state_id is not None:
                    del gate._states[state_id]

    async def execute_batch(
        self,
        mutations: Iterable[Mutation[StateT]],
        state: StateT,
        *,
        context: MutationContext | None = None,
        state_id: str | None = None,
    ) -> BatchResult[StateT]:
        """Run mutations in order against successive states, all or nothing.

        The state is held for the whole batch. The first step that does not succeed stops
        the batch: ``ok`` is False, ``final_state`` is None and no step is written to
        history (every attempt is audited). An empty batch succeeds with ``state``.
        """
        _check_state_id(state_id)
        steps = list(mutations)
        for mutation in steps:
            self._intent_of(mutation)
        context = self._context(context)
        started = time.perf_counter()
        results: list[MutationResult[StateT]] = []
        entries: list[HistoryEntry] = []
        current = state
        changes = EMPTY_CHANGES
        plans = self._plans
        gate = self._gate
        check = checkpoint_if_cancelled()  # a cancel point, as an anyio lock would be
        if check is not None:
            await check
        if not gate.try_enter(state_id):
            await gate.enter(state_id)
        try:
            step = _Step(context)  # one for the whole batch, given each step's plan
            for index, mutation in enumerate(steps):
                step.plan = plans.get((type(mutation), type(current))) or self._plan(
                    mutation, current
                )
                try:  # execute leaves the step's history entry (or None) in step.history
                    result = await MutationEngine.execute(
                        self,
                        mutation,
                        current,
                        context=step,  # type: ignore[arg-type]  # a step of this batch
                        state_id=state_id,
                    )
                except MutatorError as error:
                    error.add_note(f"raised by batch step {index + 1} of {len(steps)}")
                    raise
                results.append(result)
                if not result.ok:
                    return BatchResult(
                        False, None, tuple(results), EMPTY_CHANGES, time.perf_counter() - started
                    )
                if step.history is not None:
                    entries.append(step.history)
                current = result.new_state  # type: ignore[assignment]
                changes = changes + result.changes
            if entries:
                await self._write_history(entries)
        finally:
            gate.leave(state_id)
        return BatchResult(True, current, tuple(results), changes, time.perf_counter() - started)

    async def execute_deferred(
        self,
        mutation: Mutation[StateT],
        state: StateT,
        *,
        context: MutationContext,
        state_id: str,
        granted: Iterable[PolicyRequirement] = (),
    ) -> DeferredExecution:
        """Execute like :meth:`execute`, but hand the audit and history entries back.

        For callers that commit the new state with its records in one write (governed
        execution). A :class:`MutatorError` (the mutation raised, returned something
        invalid, timed out, or a policy failed) is returned as ``error`` with its audit
        entry, not raised; cancellation propagates. Approval requirements equal to one in
        ``granted`` (ignoring expiry) count as already approved; denials still block.
        Metrics are recorded as usual.
        """
        _check_state_id(state_id)
        plan = self._plan(mutation, state)
        context = self._context(context)
        collected: list[AuditEntry] = []
        gate = self._gate
        check = checkpoint_if_cancelled()  # a cancel point, as an anyio lock would be
        if check is not None:
            await check
        if not gate.try_enter(state_id):
            await gate.enter(state_id)
        try:
            step = _Step(context, frozenset(map(_grant_key, granted)), collected)
            step.plan = plan
            result = await MutationEngine.execute(
                self,
                mutation,
                state,
                context=step,  # type: ignore[arg-type]  # the gate is held here
                state_id=state_id,
            )
        except MutatorError as error:
            return DeferredExecution(None, error, collected[0] if collected else None, None)
        finally:
            gate.leave(state_id)
        return DeferredExecution(result, None, collected[0] if collected else None, step.history)

    async def evaluate(
        self,
        mutation: Mutation[StateT],
        state: StateT,
        *,
        context: MutationContext | None = None,
    ) -> PolicyEvaluation:
        """Evaluate the policies only (a dry run: nothing is applied, audited or recorded)."""
        self._intent_of(mutation)
        policies = self._policies.applicable(type(state))
        return await evaluate_policies(
            policies, mutation, state, self._context(context), self.options.policy_timeout
        )

    async def history(self, state_id: str) -> MutationHistory[Any]:
        """The committed history of ``state_id``, oldest entry first."""
        if not isinstance(state_id, str):
            raise TypeError(f"state_id must be a string, got {state_id!r}")
        return await self.history_store.history(state_id)

    async def statistics(self) -> EngineStatistics:
        """Execution counts and latency percentiles (works with every preset)."""
        return self.metrics.statistics()

    # -- the pipeline --------------------------------------------------------------------

    async def _record_failure(
        self,
        mutation: Mutation[Any],
        plan: _Plan,
        state: Any,
        context: MutationContext,
        execution_id: str,
        started_at: Any,
        state_id: str | None,
        execution: ExecutionContext | None,
        interceptors: tuple[Interceptor, ...],
        error: MutatorError,
        started: float,
        sink: AuditSink | list[AuditEntry] | None,
    ) -> None:
        duration = time.perf_counter() - started
        outcome = (
            AuditOutcome.TIMED_OUT
            if isinstance(error, ExecutionTimeoutError)
            else AuditOutcome.FAILED
        )
        if interceptors:
            await run_hook(interceptors, "failed", mutation, state, error, context, execution)
        if sink is not None:
            entry = AuditEntry(
                execution_id,
                state_id,
                plan.state_type_name,
                plan.intent,
                context,
                context.mode,
                outcome,
                started_at,
                duration,
                error=str(error),
            )
            if isinstance(sink, list):
                sink.append(entry)
            else:
                await sink.record(entry)
        self._metrics.record(outcome, duration)

    async def _write_history(self, entries: Iterable[HistoryEntry]) -> None:
        keep = self._keep_history
        if keep is not None:
            for entry in entries:
                keep(entry)
        elif self._shield_records:
            with anyio.CancelScope(shield=True):
                for entry in entries:
                    await self._history_store.append(entry)
        else:
            for entry in entries:
                await self._history_store.append(entry)

    # -- input checks --------------------------------------------------------------------

    def _plan(self, mutation: Mutation[Any], state: Any) -> _Plan:
        """The plan of ``(type(mutation), type(state))``, made (and checked) on first use."""
        key = (type(mutation), type(state))
        plan = self._plans.get(key)
        if plan is None:
            intent = self._intent_of(mutation)
            plan = _Plan(key[0], intent, key[1], self._policies.applicable(key[1]))
            self._plans[key] = plan
        return plan

    def _intent_of(self, mutation: Mutation[Any]) -> MutationIntent:
        cls = type(mutation)
        intent = self._intents.get(cls)
        if intent is not None:
            return intent
        if not isinstance(mutation, Mutation):
            raise InvalidMutationError(
                f"expected a mutator.Mutation, got {cls.__qualname__}: subclass Mutation "
                "and declare an intent"
            )
        intent = getattr(cls, "intent", None)
        if not isinstance(intent, MutationIntent):
            raise InvalidMutationError(
                f"{cls.__qualname__} has no intent: declare "
                "`intent: ClassVar[MutationIntent] = MutationIntent(...)`"
            )
        if cls.apply is Mutation.apply:
            raise InvalidMutationError(f"{cls.__qualname__} does not implement apply()")
        self._intents[cls] = intent
        return intent

    @staticmethod
    def _context(context: MutationContext | None) -> MutationContext:
        if context is None:
            return MutationContext(actor_id="system", actor_type=ActorType.SYSTEM)
        if not isinstance(context, MutationContext):
            raise TypeError(f"context must be a MutationContext, got {type(context).__name__}")
        return context


def _loop_deadline(started: float, timeout: float) -> float:
    """The execution deadline on the event-loop clock, for an execution begun at ``started``."""
    return current_time() + timeout - (time.perf_counter() - started)


def _grant_key(requirement: PolicyRequirement) -> tuple[Any, ...]:
    """What makes two approval requirements the same approval (expiry aside)."""
    return (
        requirement.type,
        requirement.approvers,
        requirement.role,
        requirement.group,
        requirement.required_approvals,
        requirement.step,
    )


def _refused(evaluation: PolicyEvaluation, granted: frozenset[tuple[Any, ...]]) -> _Decided | None:
    """The outcome of an evaluation that does not let the mutation run, or None if it does.

    Approval requirements all in ``granted`` count as approved; denials still block.
    """
    status = evaluation.status
    if (
        status is ResultStatus.APPROVAL_REQUIRED
        and granted
        and all(_grant_key(r) in granted for r in evaluation.requirements)
    ):
        return None
    if status is _SUCCEEDED:
        return None
    requirements = evaluation.requirements if status is ResultStatus.APPROVAL_REQUIRED else ()
    return (status, None, EMPTY_CHANGES, (), _VALID, evaluation.decisions, requirements)


_AFTER_HOOK = frozenset({ResultStatus.SUCCEEDED, ResultStatus.VALIDATION_FAILED})


def _unexpected_result(
    mutation: Mutation[Any], mode: MutationMode, returned: Any, plan: _Plan, execution_id: str
) -> InvalidMutationError:
    """The error for a new state that is not an instance of an acceptable class."""
    assert plan.result_types is not None
    method = "simulate" if mode is _SIMULATE else "apply"
    expected = " or ".join(kind.__qualname__ for kind in plan.result_types)
    return InvalidMutationError(
        f"{type(mutation).__qualname__}.{method} returned {type(returned).__qualname__}, "
        f"expected {expected}: return an instance of the state's class (list other "
        "acceptable classes in the mutation's result_types)",
        execution_id=execution_id,
    )


def _shape(
    mutation: Mutation[Any],
    plan: _Plan,
    mode: MutationMode,
    state: Any,
    outcome: Any,
    validation: ValidationResult,
    evaluation: PolicyEvaluation,
    execution_id: str,
) -> _Decided:
    """Turn what apply/simulate returned into an outcome, with policy modifications applied."""
    side_effects: tuple[Any, ...] = ()
    result_types = plan.result_types
    if isinstance(outcome, MutationResult):
        if outcome.status is ResultStatus.VALIDATION_FAILED:
            return (
                ResultStatus.VALIDATION_FAILED,
                None,
                EMPTY_CHANGES,
                (),
                validation + outcome.validation,
                evaluation.decisions,
                (),
            )
        if outcome.status is not _SUCCEEDED:
            raise InvalidMutationError(
                f"{type(mutation).__qualname__}.apply returned a result with status "
                f"{outcome.status.name}; return MutationResult.success(...) or .invalid(...)",
                execution_id=execution_id,
            )
        new_state = outcome.new_state
        if result_types is not None and not isinstance(new_state, result_types):
            raise _unexpected_result(mutation, mode, new_state, plan, execution_id)
        changes = outcome.changes if outcome.changes_explicit else diff(state, new_state)
        side_effects = outcome.side_effects
    else:
        if outcome is None and state is not None:
            raise InvalidMutationError(
                f"{type(mutation).__qualname__}.apply returned None: return the new state "
                "(or a MutationResult)",
                execution_id=execution_id,
            )
        if result_types is not None and not isinstance(outcome, result_types):
            raise _unexpected_result(mutation, mode, outcome, plan, execution_id)
        new_state = outcome
        changes = diff(state, new_state)
    modification = evaluation.modification
    if modification is not None:
        new_state, changes, side_effects = _modify(
            state, new_state, changes, side_effects, modification
        )
    return (_SUCCEEDED, new_state, changes, side_effects, validation, evaluation.decisions, ())


def _modify(
    state: Any,
    new_state: Any,
    changes: ChangeSet,
    side_effects: tuple[Any, ...],
    modification: PolicyModification,
) -> tuple[Any, ChangeSet, tuple[Any, ...]]:
    if modification.replaces_state:
        new_state = modification.state
        changes = diff(state, new_state)
    return new_state, changes, side_effects + modification.side_effects
