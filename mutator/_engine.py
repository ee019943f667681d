"""The mutation engine: one auditable path from a mutation to a result."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, TypeVar

import anyio
import attrs

from ._changes import EMPTY_CHANGES, ChangeSet
from ._context import ExecutionContext, MutationContext, new_execution_id, utc_now
from ._deadline import DeadlineExpired, bounded_call
from ._diff import diff
from ._enums import ActorType, MutationMode, ResultStatus
from ._errors import (
    ExecutionTimeoutError,
    InvalidMutationError,
    MutationFailedError,
    MutatorError,
)
from ._evaluation import ALLOWED, PolicyEvaluation, PolicySet, evaluate_policies
from ._gate import ConcurrencyGate
from ._intent import MutationIntent
from ._interceptors import Interceptor, InterceptorChain, run_hook
from ._memory import InMemoryAuditSink, InMemoryHistoryStore, NullAuditSink, NullHistoryStore
from ._metrics import InMemoryMetrics
from ._mutation import Mutation
from ._options import EngineOptions
from ._policies import MutationPolicy, PolicyDecision, PolicyModification, PolicyRequirement
from ._records import AuditEntry, AuditOutcome, HistoryEntry, MutationHistory
from ._results import BatchResult, MutationResult
from ._statistics import EngineStatistics
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


@attrs.define(slots=True)
class _Run:
    """What one pass through the pipeline produced, before it is recorded."""

    result: MutationResult[Any]
    history: HistoryEntry | None


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


class _Decided:
    """The parts of a result decided before it is recorded (built once, no copies)."""

    __slots__ = (
        "changes",
        "decisions",
        "new_state",
        "requirements",
        "side_effects",
        "status",
        "validation",
    )

    def __init__(
        self,
        status: ResultStatus,
        new_state: Any,
        changes: ChangeSet,
        side_effects: tuple[Any, ...],
        validation: ValidationResult,
        decisions: tuple[PolicyDecision, ...],
        requirements: tuple[PolicyRequirement, ...],
    ) -> None:
        self.status = status
        self.new_state = new_state
        self.changes = changes
        self.side_effects = side_effects
        self.validation = validation
        self.decisions = decisions
        self.requirements = requirements


_VALID = ValidationResult.ok()


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
        if not isinstance(self.options, EngineOptions):
            raise TypeError(f"options must be EngineOptions, got {type(options).__name__}")
        self.audit: AuditSink = audit if audit is not None else InMemoryAuditSink()
        self.history_store: HistoryStore = (
            history if history is not None else InMemoryHistoryStore()
        )
        self.metrics: MetricsCollector = (
            metrics if metrics is not None else InMemoryMetrics(self.options.metrics_window)
        )
        self._policies = PolicySet()
        self._interceptors = InterceptorChain()
        self._gate = ConcurrencyGate(self.options.max_concurrency)
        self._intents: dict[type[Any], MutationIntent] = {}
        self._audit_on = not isinstance(self.audit, NullAuditSink)
        self._history_on = not isinstance(self.history_store, NullHistoryStore)
        in_memory = (InMemoryAuditSink, NullAuditSink, InMemoryHistoryStore, NullHistoryStore)
        self._shield_records = not (
            isinstance(self.audit, in_memory) and isinstance(self.history_store, in_memory)
        )
        for policy in policies:
            self.register_policy(policy)
        for interceptor in interceptors:
            self.register_interceptor(interceptor)

    # -- registration --------------------------------------------------------------------

    def register_policy(self, policy: MutationPolicy[Any]) -> None:
        """Add a policy; it applies to states that are instances of its ``state_type``."""
        self._policies.add(policy)

    def unregister_policy(self, name: str) -> int:
        """Remove every policy called ``name``; returns how many were removed."""
        return self._policies.remove(name)

    def register_interceptor(self, interceptor: Interceptor) -> None:
        """Add an interceptor; hooks run in ascending ``order``, ties in registration order."""
        self._interceptors.add(interceptor)

    def unregister_interceptor(self, name: str) -> int:
        """Remove every interceptor called ``name``; returns how many were removed."""
        return self._interceptors.remove(name)

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
        :class:`ExecutionTimeoutError` on timeout, and policy errors unchanged.
        Cancellation propagates and is not audited.
        """
        intent = self._intent_of(mutation)
        context = self._context(context)
        await self._gate.enter(state_id)
        try:
            run = await self._run(mutation, intent, state, context, state_id)
            if run.history is not None:
                await self._write_history((run.history,))
            return run.result
        finally:
            self._gate.leave(state_id)

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
        steps = list(mutations)
        intents = [self._intent_of(mutation) for mutation in steps]
        context = self._context(context)
        started = time.perf_counter()
        results: list[MutationResult[StateT]] = []
        entries: list[HistoryEntry] = []
        current = state
        changes = EMPTY_CHANGES
        await self._gate.enter(state_id)
        try:
            for index, (mutation, intent) in enumerate(zip(steps, intents, strict=True)):
                try:
                    run = await self._run(mutation, intent, current, context, state_id)
                except MutatorError as error:
                    error.add_note(f"raised by batch step {index + 1} of {len(steps)}")
                    raise
                results.append(run.result)
                if not run.result.ok:
                    return BatchResult(
                        False, None, tuple(results), EMPTY_CHANGES, time.perf_counter() - started
                    )
                if run.history is not None:
                    entries.append(run.history)
                current = run.result.new_state  # type: ignore[assignment]
                changes = changes + run.result.changes
            if entries:
                await self._write_history(entries)
        finally:
            self._gate.leave(state_id)
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
        intent = self._intent_of(mutation)
        context = self._context(context)
        collected: list[AuditEntry] = []
        await self._gate.enter(state_id)
        try:
            run = await self._run(
                mutation,
                intent,
                state,
                context,
                state_id,
                frozenset(map(_grant_key, granted)),
                collected,
            )
        except MutatorError as error:
            return DeferredExecution(None, error, collected[0] if collected else None, None)
        finally:
            self._gate.leave(state_id)
        return DeferredExecution(run.result, None, collected[0] if collected else None, run.history)

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
        return await self.history_store.history(state_id)

    async def statistics(self) -> EngineStatistics:
        """Execution counts and latency percentiles (works with every preset)."""
        return self.metrics.statistics()

    # -- the pipeline --------------------------------------------------------------------

    async def _run(
        self,
        mutation: Mutation[Any],
        intent: MutationIntent,
        state: Any,
        context: MutationContext,
        state_id: str | None,
        granted: frozenset[tuple[Any, ...]] = frozenset(),
        collected: list[AuditEntry] | None = None,
    ) -> _Run:
        """One pass; audit entries go to ``collected`` instead of the sink when given."""
        started = time.perf_counter()
        sink: AuditSink | list[AuditEntry] = self.audit if collected is None else collected
        audit_on, shield = self._audit_on, self._shield_records
        timeout = self.options.execution_timeout
        deadline = None if timeout is None else anyio.current_time() + timeout
        execution = ExecutionContext(new_execution_id(), utc_now(), state_id, deadline)
        interceptors = (
            self._interceptors.active(intent, context) if self._interceptors.interceptors else ()
        )
        try:
            decided = await self._decide(mutation, state, context, execution, interceptors, granted)
            if deadline is not None and anyio.current_time() > deadline:
                raise DeadlineExpired
        except Exception as error:
            if isinstance(error, DeadlineExpired):
                assert timeout is not None
                failure: MutatorError = ExecutionTimeoutError(
                    timeout, time.perf_counter() - started, execution_id=execution.execution_id
                )
            elif isinstance(error, MutatorError):
                failure = error
            else:
                failure = MutationFailedError(
                    intent.operation, error, execution_id=execution.execution_id
                )
            if failure.execution_id is None:
                failure.execution_id = execution.execution_id
            with anyio.CancelScope(shield=True):
                await self._record_failure(
                    mutation,
                    intent,
                    state,
                    context,
                    execution,
                    interceptors,
                    failure,
                    started,
                    sink if audit_on else None,
                )
            if failure is error:
                raise
            if isinstance(error, DeadlineExpired):
                raise failure from None
            raise failure from error
        except BaseException:  # cancelled: not a failure, but interceptors see it ended
            if interceptors:
                with anyio.CancelScope(shield=True):
                    await run_hook(interceptors, "cancelled", mutation, state, context, execution)
            raise

        duration = time.perf_counter() - started
        status = decided.status
        result: MutationResult[Any] = MutationResult(
            status,
            decided.new_state,
            decided.changes,
            decided.side_effects,
            decided.validation,
            decided.decisions,
            decided.requirements,
            execution.execution_id,
            duration,
            context.mode,
            utc_now(),
        )
        if interceptors:
            hook = "after" if status in _AFTER_HOOK else "policy_blocked"
            await run_hook(interceptors, hook, mutation, state, result, context, execution)
        history = None
        if (
            status is ResultStatus.SUCCEEDED
            and context.mode is MutationMode.COMMIT
            and state_id is not None
            and self._history_on
        ):
            history = HistoryEntry(
                execution.execution_id,
                state_id,
                intent,
                context,
                result.changes,
                execution.started_at,
                duration,
                result.side_effects,
                mutation,
            )
        outcome = _OUTCOMES[status]
        if audit_on:
            entry = AuditEntry(
                execution.execution_id,
                state_id,
                type(state).__name__,
                intent,
                context,
                context.mode,
                outcome,
                execution.started_at,
                duration,
                result.changes,
                result.side_effects,
                result.policy_decisions,
                None if status is ResultStatus.SUCCEEDED else result.error_message,
            )
            if isinstance(sink, list):
                sink.append(entry)
            elif shield:
                with anyio.CancelScope(shield=True):
                    await sink.record(entry)
            else:
                await sink.record(entry)
        self.metrics.record(outcome, duration)
        return _Run(result, history)

    async def _decide(
        self,
        mutation: Mutation[Any],
        state: Any,
        context: MutationContext,
        execution: ExecutionContext,
        interceptors: tuple[Interceptor, ...],
        granted: frozenset[tuple[Any, ...]],
    ) -> _Decided:
        """Before-hooks, policies, validation, the mode and policy modifications."""
        deadline = execution.deadline
        if interceptors:
            await run_hook(
                interceptors, "before", mutation, state, context, execution, deadline=deadline
            )
        policies = self._policies.applicable(type(state))
        evaluation = (
            await evaluate_policies(
                policies,
                mutation,
                state,
                context,
                self.options.policy_timeout,
                execution.execution_id,
                deadline,
            )
            if policies
            else ALLOWED
        )
        status = evaluation.status
        if (
            status is ResultStatus.APPROVAL_REQUIRED
            and granted
            and all(_grant_key(r) in granted for r in evaluation.requirements)
        ):
            status = ResultStatus.SUCCEEDED
        if status is not ResultStatus.SUCCEEDED:
            requirements = (
                evaluation.requirements if status is ResultStatus.APPROVAL_REQUIRED else ()
            )
            return _Decided(
                status, None, EMPTY_CHANGES, (), _VALID, evaluation.decisions, requirements
            )
        mode = context.mode
        validation = _VALID
        if mode is not MutationMode.COMMIT or self.options.always_validate:
            validation = await bounded_call(mutation.validate, state, deadline)
            if not isinstance(validation, ValidationResult):
                raise InvalidMutationError(
                    f"{type(mutation).__qualname__}.validate returned "
                    f"{type(validation).__name__}, expected ValidationResult",
                    execution_id=execution.execution_id,
                )
            if not validation.is_valid:
                return _Decided(
                    ResultStatus.VALIDATION_FAILED,
                    None,
                    EMPTY_CHANGES,
                    (),
                    validation,
                    evaluation.decisions,
                    (),
                )
        if mode is MutationMode.VALIDATE:
            return _Decided(
                ResultStatus.SUCCEEDED,
                state,
                EMPTY_CHANGES,
                (),
                validation,
                evaluation.decisions,
                (),
            )
        outcome = await bounded_call(
            mutation.simulate if mode is MutationMode.SIMULATE else mutation.apply, state, deadline
        )
        return _shape(mutation, state, outcome, validation, evaluation, execution.execution_id)

    async def _record_failure(
        self,
        mutation: Mutation[Any],
        intent: MutationIntent,
        state: Any,
        context: MutationContext,
        execution: ExecutionContext,
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
                execution.execution_id,
                execution.state_id,
                type(state).__name__,
                intent,
                context,
                context.mode,
                outcome,
                execution.started_at,
                duration,
                error=str(error),
            )
            if isinstance(sink, list):
                sink.append(entry)
            else:
                await sink.record(entry)
        self.metrics.record(outcome, duration)

    async def _write_history(self, entries: Iterable[HistoryEntry]) -> None:
        if self._shield_records:
            with anyio.CancelScope(shield=True):
                for entry in entries:
                    await self.history_store.append(entry)
        else:
            for entry in entries:
                await self.history_store.append(entry)

    # -- input checks --------------------------------------------------------------------

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


_AFTER_HOOK = frozenset({ResultStatus.SUCCEEDED, ResultStatus.VALIDATION_FAILED})


def _shape(
    mutation: Mutation[Any],
    state: Any,
    outcome: Any,
    validation: ValidationResult,
    evaluation: PolicyEvaluation,
    execution_id: str,
) -> _Decided:
    """Turn what apply/simulate returned into an outcome, with policy modifications applied."""
    side_effects: tuple[Any, ...] = ()
    if isinstance(outcome, MutationResult):
        if outcome.status is ResultStatus.VALIDATION_FAILED:
            return _Decided(
                ResultStatus.VALIDATION_FAILED,
                None,
                EMPTY_CHANGES,
                (),
                validation + outcome.validation,
                evaluation.decisions,
                (),
            )
        if outcome.status is not ResultStatus.SUCCEEDED:
            raise InvalidMutationError(
                f"{type(mutation).__qualname__}.apply returned a result with status "
                f"{outcome.status.name}; return MutationResult.success(...) or .invalid(...)",
                execution_id=execution_id,
            )
        new_state = outcome.new_state
        changes = outcome.changes if outcome.changes_explicit else diff(state, new_state)
        side_effects = outcome.side_effects
    else:
        if outcome is None and state is not None:
            raise InvalidMutationError(
                f"{type(mutation).__qualname__}.apply returned None: return the new state "
                "(or a MutationResult)",
                execution_id=execution_id,
            )
        new_state = outcome
        changes = diff(state, new_state)
    modification = evaluation.modification
    if modification is not None:
        new_state, changes, side_effects = _modify(
            state, new_state, changes, side_effects, modification
        )
    return _Decided(
        ResultStatus.SUCCEEDED,
        new_state,
        changes,
        side_effects,
        validation,
        evaluation.decisions,
        (),
    )


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
