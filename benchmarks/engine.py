"""Core engine scenarios, mirroring the reference's C.1 "Core" benchmark classes.

Groups: direct baselines, commit, modes, batches, throughput over state sizes, policy
evaluation, diagnostics and interceptor overhead, concurrency (parallel states, gate
contention, concurrent batches) and result creation/materialization.

The baseline of every scenario here is the direct ``mutation.validate(state)`` +
``mutation.apply(state)`` call on the same state, so each ratio reads "the engine costs
this many direct calls per mutation".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import attrs

from mutator import (
    AuditEntry,
    AuditOutcome,
    BatchResult,
    ChangeSet,
    EngineOptions,
    ExecutionContext,
    HistoryEntry,
    Interceptor,
    LoggingInterceptor,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationIntent,
    MutationMode,
    MutationPolicy,
    MutationResult,
    NullAuditSink,
    NullHistoryStore,
    PolicyDecision,
    SideEffect,
    StateChange,
    ValidationResult,
)

from .harness import Fixture, Scenario

__all__ = ["SCENARIOS", "Counter", "IncrementCounter", "ReplaceSlot", "Slots"]

COUNTER_ID = "benchmark-counter"
SHARED_ID = "shared-concurrency-state"
STATE_SIZES = (32, 1024, 16384)
DIRECT = "engine.direct.counter"


# -- domain ------------------------------------------------------------------------------


@attrs.frozen
class Counter:
    """The counter state of the reference's engine benchmarks."""

    value: int = 0


@attrs.frozen
class IncrementCounter(Mutation[Counter]):
    """Add ``amount`` to the counter; the engine diffs the returned state."""

    amount: int = 1
    intent: ClassVar[MutationIntent] = MutationIntent(
        "benchmark.counter.increment", category="benchmark"
    )

    def validate(self, state: Counter) -> ValidationResult:
        if self.amount <= 0:
            return ValidationResult.error("amount", "must be positive")
        return ValidationResult.ok()

    def apply(self, state: Counter) -> Counter:
        return Counter(state.value + self.amount)


@attrs.frozen
class HoldState(Mutation[Counter]):
    """Signals ``entered`` inside apply, then holds its state until ``release`` is set."""

    entered: anyio.Event = attrs.field(eq=False)
    release: anyio.Event = attrs.field(eq=False)
    intent: ClassVar[MutationIntent] = MutationIntent(
        "benchmark.counter.hold", category="benchmark"
    )

    async def apply(self, state: Counter) -> Counter:
        self.entered.set()
        await self.release.wait()
        return Counter(state.value + 1)


@attrs.frozen
class Slots:
    """Array-like state: a tuple of ints (the reference clones an array on every apply)."""

    values: tuple[int, ...]


@attrs.frozen
class ReplaceSlot(Mutation[Slots]):
    """Replace one slot and return the new state (the engine diffs the whole tuple)."""

    index: int
    value: int
    intent: ClassVar[MutationIntent] = MutationIntent(
        "benchmark.slots.replace", category="benchmark"
    )

    def validate(self, state: Slots) -> ValidationResult:
        if not 0 <= self.index < len(state.values):
            return ValidationResult.error("index", "out of range")
        return ValidationResult.ok()

    def apply(self, state: Slots) -> Slots:
        values = state.values
        # Concatenation copies in C; unpacking (RUF005) is slower for big tuples.
        return Slots(values[: self.index] + (self.value,) + values[self.index + 1 :])  # noqa: RUF005


@attrs.frozen
class ReplaceSlotExplicit(ReplaceSlot):
    """Like :class:`ReplaceSlot` but names its one change, so the engine does not diff."""

    def apply(self, state: Slots) -> MutationResult[Slots]:  # type: ignore[override]
        values = state.values
        new = Slots(values[: self.index] + (self.value,) + values[self.index + 1 :])  # noqa: RUF005
        change = StateChange.modified(f"values[{self.index}]", values[self.index], self.value)
        return MutationResult.success(new, (change,))


def slots(size: int) -> Slots:
    return Slots(tuple(range(size)))


class Allow(MutationPolicy[Any]):
    """A synchronous allow-all policy."""

    def __init__(self, name: str = "allow", priority: int = 100) -> None:
        self.name = name
        self.priority = priority

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.allow()


class AllowAsync(Allow):
    """An ``async def`` allow-all policy."""

    async def evaluate(  # type: ignore[override]
        self, mutation: Any, state: Any, context: MutationContext
    ) -> PolicyDecision:
        return PolicyDecision.allow()


class PassiveInterceptor(Interceptor):
    """Observes every hook and does nothing."""

    name = "passive"

    def before(
        self,
        mutation: Mutation[Any],
        state: Any,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        return None

    def after(
        self,
        mutation: Mutation[Any],
        old_state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        return None


def quiet_logger() -> logging.Logger:
    """A logger at WARNING, so the logging interceptor's INFO lines are never formatted."""
    logger = logging.getLogger("benchmarks.mutator")
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    return logger


# -- engines and checks --------------------------------------------------------------------


def context(mode: MutationMode = MutationMode.COMMIT) -> MutationContext:
    return MutationContext.user("benchmark", reason="benchmark run", mode=mode)


def engine(
    options: EngineOptions,
    *,
    diagnostics: bool = True,
    policies: Iterable[MutationPolicy[Any]] = (),
    interceptors: Iterable[Interceptor] = (),
) -> MutationEngine:
    """An engine with in-memory audit/history (``diagnostics``) or the Null sinks."""
    if diagnostics:
        return MutationEngine(options, policies=policies, interceptors=interceptors)
    return MutationEngine(
        options,
        audit=NullAuditSink(),
        history=NullHistoryStore(),
        policies=policies,
        interceptors=interceptors,
    )


def concurrency_options(max_concurrency: int) -> EngineOptions:
    """Performance-like options with a given concurrency limit (reference: Concurrency)."""
    return EngineOptions(always_validate=False, max_concurrency=max_concurrency)


def _ok(result: MutationResult[Any] | BatchResult[Any]) -> None:
    if not result.ok:
        raise AssertionError(f"expected a successful execution, got {result!r}")


def _all_ok(results: Sequence[Any]) -> None:
    for result in results:
        _ok(result)


def _check_valid(outcome: Any) -> None:
    if not isinstance(outcome, Counter | Slots):
        raise AssertionError(f"direct apply returned {outcome!r}")


# -- setups ------------------------------------------------------------------------------


async def direct(mutation: Mutation[Any], state: Any, ops: int) -> Fixture:
    """The baseline: validate + apply called directly (no engine)."""
    validate = mutation.validate
    apply = mutation.apply

    def op() -> Any:
        if not validate(state).is_valid:  # type: ignore[union-attr]  # a sync validate
            raise AssertionError("validation failed")
        return apply(state)

    return Fixture(op, _check_valid, is_async=False)


async def execute(
    make_engine: functools.partial[MutationEngine],
    mutation: Mutation[Any],
    state: Any,
    mode: MutationMode,
    ops: int,
) -> Fixture:
    """One ``engine.execute`` per operation on one state id."""
    run = functools.partial(
        make_engine().execute, mutation, state, context=context(mode), state_id=COUNTER_ID
    )
    return Fixture(run, _ok)


async def batch(
    make_engine: functools.partial[MutationEngine],
    mutations: Sequence[Mutation[Any]],
    state: Any,
    ops: int,
) -> Fixture:
    """One ``engine.execute_batch`` per operation on one state id."""
    run = functools.partial(
        make_engine().execute_batch, tuple(mutations), state, context=context(), state_id=COUNTER_ID
    )
    return Fixture(run, _ok)


async def parallel(parallelism: int, ops: int) -> Fixture:
    """``parallelism`` executions on distinct states in one task group."""
    eng = engine(concurrency_options(parallelism), diagnostics=False)
    mutation, state, ctx = IncrementCounter(), Counter(), context()
    ids = [f"parallel-state-{i}" for i in range(parallelism)]
    results: list[Any] = [None] * parallelism

    async def one(index: int, state_id: str) -> None:
        results[index] = await eng.execute(mutation, state, context=ctx, state_id=state_id)

    async def op() -> list[Any]:
        async with anyio.create_task_group() as tg:
            for index, state_id in enumerate(ids):
                tg.start_soon(one, index, state_id)
        return results

    return Fixture(op, _all_ok)


async def gate_contention(ops: int) -> Fixture:
    """Two executions on one state: the first holds it until the second is queued behind."""
    eng = engine(concurrency_options(4), diagnostics=False)
    follower, state, ctx = IncrementCounter(), Counter(), context()

    async def op() -> list[tuple[str, Any]]:
        blocker = HoldState(anyio.Event(), anyio.Event())
        finished: list[tuple[str, Any]] = []
        queued = False

        async def first() -> None:
            result = await eng.execute(blocker, state, context=ctx, state_id=SHARED_ID)
            finished.append(("first", result))

        async def second() -> None:
            nonlocal queued
            queued = True  # the same step then blocks on the state's lock
            result = await eng.execute(follower, state, context=ctx, state_id=SHARED_ID)
            finished.append(("second", result))

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await blocker.entered.wait()
            tg.start_soon(second)
            while not queued:
                await anyio.lowlevel.checkpoint()
            blocker.release.set()
        return finished

    def check(finished: list[tuple[str, Any]]) -> None:
        if [name for name, _ in finished] != ["first", "second"]:
            raise AssertionError(f"executions did not serialize: {finished!r}")
        _all_ok([result for _, result in finished])

    return Fixture(op, check)


async def concurrent_batches(batches: int, size: int, ops: int) -> Fixture:
    """``batches`` batches of ``size`` steps at once, each on its own state, 2 slots."""
    eng = engine(concurrency_options(2), diagnostics=False)
    steps, state, ctx = (IncrementCounter(),) * size, Counter(), context()
    ids = [f"batch-state-{i}" for i in range(batches)]
    results: list[Any] = [None] * batches

    async def one(index: int, state_id: str) -> None:
        results[index] = await eng.execute_batch(steps, state, context=ctx, state_id=state_id)

    async def op() -> list[Any]:
        async with anyio.create_task_group() as tg:
            for index, state_id in enumerate(ids):
                tg.start_soon(one, index, state_id)
        return results

    return Fixture(op, _all_ok)


TWO_CHANGES = ChangeSet.of(
    StateChange.modified("value", 0, 1), StateChange.modified("label", "old", "new")
)


async def result_creation(side_effects: int, ops: int) -> Fixture:
    """``MutationResult.success`` with a 2-change set and ``side_effects`` new side effects."""
    state = Counter(1)
    success = MutationResult.success
    if side_effects == 0:

        def op() -> MutationResult[Counter]:
            return success(state, TWO_CHANGES)

    else:
        kinds = [f"benchmark.effect.{i}" for i in range(side_effects)]

        def op() -> MutationResult[Counter]:
            return success(
                state, TWO_CHANGES, [SideEffect(kind, "counter changed") for kind in kinds]
            )

    def check(result: MutationResult[Counter]) -> None:
        if len(result.side_effects) != side_effects or len(result.changes) != 2:
            raise AssertionError(f"unexpected result {result!r}")

    return Fixture(op, check, is_async=False)


async def materialization(kind: str, ops: int) -> Fixture:
    """A history or audit entry from a result with 3 side effects and 4 changes."""
    changes = ChangeSet(StateChange.modified(f"values[{i}]", i, i + 1) for i in range(4))
    effects = [SideEffect(f"benchmark.effect.{i}", "changed") for i in range(3)]
    result = MutationResult.success(Slots((1, 2, 3, 4)), changes, effects)
    ctx = context()
    intent = ReplaceSlot.intent
    execution = ExecutionContext("bench-0001", ctx.timestamp, COUNTER_ID)
    mutation = ReplaceSlot(0, 1)

    if kind == "history":

        def op() -> HistoryEntry:
            return HistoryEntry(
                execution.execution_id,
                COUNTER_ID,
                intent,
                ctx,
                result.changes,
                execution.started_at,
                0.000_01,
                result.side_effects,
                mutation,
            )

    else:

        def op() -> AuditEntry:  # type: ignore[misc]
            return AuditEntry(
                execution.execution_id,
                COUNTER_ID,
                "Slots",
                intent,
                ctx,
                ctx.mode,
                AuditOutcome.SUCCEEDED,
                execution.started_at,
                0.000_01,
                result.changes,
                result.side_effects,
                result.policy_decisions,
                None,
            )

    return Fixture(op, None, is_async=False)


# -- the scenarios -------------------------------------------------------------------------


def _partial(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return functools.partial(fn, *args, **kwargs)


def _engine_factory(options: EngineOptions, **kwargs: Any) -> Any:
    return functools.partial(engine, options, **kwargs)


def _scenarios() -> list[Scenario]:
    counter, inc = Counter(), IncrementCounter()
    performance, strict, default = (
        EngineOptions.performance(),
        EngineOptions.strict(),
        EngineOptions.default(),
    )

    def core(
        name: str,
        setup: Any,
        summary: str,
        *,
        baseline: str = DIRECT,
        mutations: int = 1,
        reference: str | None = None,
    ) -> Scenario:
        return Scenario(name, baseline, setup, summary, mutations, reference=reference, engine=True)

    out = [
        core(
            DIRECT,
            _partial(direct, inc, counter),
            "baseline: IncrementCounter.validate + apply called directly on a Counter",
        )
    ]
    out += [
        core(
            f"engine.direct.slots.{size}",
            _partial(direct, ReplaceSlot(size // 2, -1), slots(size)),
            f"baseline: ReplaceSlot.validate + apply directly on a {size}-slot state",
            baseline=f"engine.direct.slots.{size}",
        )
        for size in STATE_SIZES
    ]
    # commit
    out += [
        core(
            "engine.commit.performance_no_policy",
            _partial(execute, _engine_factory(performance), inc, counter, MutationMode.COMMIT),
            "execute, COMMIT, performance preset, no policy, in-memory audit+history",
            reference="Commit_Performance_NoPolicy 4.349 (optimized 4.027)",
        ),
        core(
            "engine.commit.strict_policy",
            _partial(
                execute,
                _engine_factory(strict, policies=[Allow()]),
                inc,
                counter,
                MutationMode.COMMIT,
            ),
            "execute, COMMIT, strict preset (timeouts, validation) + one allow policy",
            reference="Commit_Strict_WithPolicy 5.878 (optimized 5.277)",
        ),
    ]
    # modes
    out += [
        core(
            f"engine.mode.{mode.name.lower()}.strict_policy",
            _partial(
                execute,
                _engine_factory(strict, policies=[Allow()]),
                inc,
                counter,
                mode,
            ),
            f"execute in {mode.name} mode, strict preset + one allow policy",
            reference=ref,
        )
        for mode, ref in (
            (MutationMode.SIMULATE, "Simulate_Strict_WithPolicy 5.303"),
            (MutationMode.VALIDATE, "ValidateOnly_Strict_WithPolicy 5.056"),
        )
    ]
    # batches
    out += [
        core(
            f"engine.batch.commit.{size}",
            _partial(batch, _engine_factory(performance), [inc] * size, counter),
            f"execute_batch of {size} increments on one state, performance preset",
            mutations=size,
            reference=ref,
        )
        for size, ref in (
            (10, "Batch_Commit_Performance_NoPolicy 46.73"),
            (100, "Batch_Commit_Performance_NoPolicy 426.36"),
        )
    ]
    # throughput over state sizes
    single_refs = {32: "5.142 / 5.110", 1024: "5.396 / 5.461", 16384: "7.895 / 7.300"}
    batch_refs = {32: "39.899", 1024: "44.314", 16384: "63.035"}
    for size in STATE_SIZES:
        state = slots(size)
        base = f"engine.direct.slots.{size}"
        for variant, cls, note in (
            ("single", ReplaceSlot, "returns the new state, the engine diffs it"),
            ("single_explicit", ReplaceSlotExplicit, "returns MutationResult.success + 1 change"),
        ):
            out.append(
                core(
                    f"engine.throughput.{variant}.{size}",
                    _partial(
                        execute,
                        _engine_factory(performance),
                        cls(size // 2, -1),
                        state,
                        MutationMode.COMMIT,
                    ),
                    f"one slot replaced in a {size}-slot state; {note}",
                    baseline=base,
                    reference=(
                        f"SingleMutation_Commit_Throughput {single_refs[size]} (batch 8 / 64 run)"
                        if variant == "single"
                        else None
                    ),
                )
            )
        for variant, cls in (("batch8", ReplaceSlot), ("batch8_explicit", ReplaceSlotExplicit)):
            steps = [cls((i * size) // 8, -1) for i in range(8)]
            out.append(
                core(
                    f"engine.throughput.{variant}.{size}",
                    _partial(batch, _engine_factory(performance), steps, state),
                    f"batch of 8 slot replacements in a {size}-slot state"
                    + (" (explicit changes)" if "explicit" in variant else ""),
                    baseline=base,
                    mutations=8,
                    reference=(
                        f"BatchMutation_Commit_Throughput {batch_refs[size]}"
                        if variant == "batch8"
                        else None
                    ),
                )
            )
    # policy evaluation
    mixed = [
        Allow("p300", 300),
        AllowAsync("p200", 200),
        Allow("p100", 100),
        AllowAsync("p0", 0),
    ]
    for name, policies, ref in (
        ("none", [], "NoPolicy_Baseline 5.007"),
        ("one_sync", [Allow()], "SingleSyncPolicy_Allow 5.324"),
        ("one_async", [AllowAsync()], "SingleAsyncPolicy_Allow 5.307"),
        ("four_mixed", mixed, "MultipleMixedPolicies_Allow 5.607"),
    ):
        out.append(
            core(
                f"engine.policy.{name}",
                _partial(
                    execute,
                    _engine_factory(default, policies=policies),
                    inc,
                    counter,
                    MutationMode.COMMIT,
                ),
                f"execute, default preset, policies: {name.replace('_', ' ')}"
                + (
                    " (sync/async alternating, priorities 300/200/100/0)"
                    if mixed is policies
                    else ""
                ),
                reference=ref,
            )
        )
    # diagnostics and interceptors
    diagnostics: tuple[tuple[str, dict[str, Any], str, str], ...] = (
        (
            "engine.diagnostics.null_sinks",
            {"diagnostics": False},
            "Null audit sink + Null history store",
            "NoDiagnostics_Baseline 2.237",
        ),
        (
            "engine.diagnostics.audit_history",
            {},
            "in-memory audit sink + history store",
            "AuditHistory_Enabled 4.974",
        ),
        (
            "engine.diagnostics.audit_history_interceptors",
            {"interceptors": [PassiveInterceptor(), LoggingInterceptor(quiet_logger())]},
            "in-memory audit+history + passive interceptor + LoggingInterceptor (logger at "
            "WARNING)",
            "CombinedInterceptionAndDiagnostics_Enabled 5.653",
        ),
        (
            "engine.interceptor.none",
            {"diagnostics": False},
            "Null sinks, no interceptor",
            "NoInterceptor_Baseline 2.161 (optimized 1.582)",
        ),
        (
            "engine.interceptor.passive",
            {"diagnostics": False, "interceptors": [PassiveInterceptor()]},
            "Null sinks, one passive interceptor",
            "PassiveInterceptor_Enabled 2.252 (optimized 1.609)",
        ),
    )
    out += [
        core(
            name,
            _partial(
                execute,
                _engine_factory(default, **kwargs),
                inc,
                counter,
                MutationMode.COMMIT,
            ),
            f"execute, default preset, {summary}",
            reference=ref,
        )
        for name, kwargs, summary, ref in diagnostics
    ]
    # concurrency
    out += [
        core(
            f"engine.parallel.distinct_states.{n}",
            _partial(parallel, n),
            f"{n} concurrent executions on distinct states (task group), max_concurrency={n}",
            mutations=n,
            reference=f"ParallelDistinctStates_ExecuteAsync {ref}",
        )
        for n, ref in ((2, "4.324"), (8, "17.557"))
    ]
    out.append(
        core(
            "engine.gate.contention",
            _partial(gate_contention),
            "two executions on one state; the first holds it until the second is queued",
            mutations=2,
            reference="SharedStateGate_TwoConcurrentExecutions: not run (timed out in-process)",
        )
    )
    out += [
        core(
            f"engine.concurrent_batches.{b}x{s}",
            _partial(concurrent_batches, b, s),
            f"{b} concurrent batches of {s} on distinct states, max_concurrency=2",
            mutations=b * s,
            reference=f"ConcurrentBatches_LimitedRuntimeAvailability {ref}",
        )
        for b, s, ref in ((2, 4, "18.12"), (2, 16, "71.95"), (4, 4, "36.71"), (4, 16, "140.05"))
    ]
    # results
    out += [
        core(
            f"engine.result.success.{name}",
            _partial(result_creation, n),
            f"MutationResult.success with a 2-change set and {n} new side effect(s)",
            reference=ref,
        )
        for n, name, ref in (
            (0, "no_side_effects", "Success_NoSideEffects 0.094"),
            (1, "one_side_effect", "Success_SingleSideEffect 0.269"),
            (4, "four_side_effects", "Success_MultipleSideEffects 0.897"),
        )
    ]
    out += [
        core(
            f"engine.result.{kind}_entry",
            _partial(materialization, kind),
            f"{kind.capitalize()}Entry from a result with 3 side effects and 4 changes",
            reference=ref,
        )
        for kind, ref in (
            ("history", "HistoryEntry_Materialization 0.707"),
            ("audit", "AuditEntry_Materialization 0.689"),
        )
    ]
    return out


SCENARIOS: tuple[Scenario, ...] = tuple(_scenarios())
