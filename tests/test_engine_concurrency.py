"""Behaviour of the engine under concurrency: serialization, limits, cancellation, timeouts."""

from __future__ import annotations

import time
from collections import Counter
from functools import partial
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import attrs
import pytest

from mutator import (
    AuditOutcome,
    EngineOptions,
    ExecutionTimeoutError,
    InMemoryAuditSink,
    Mutation,
    MutationEngine,
    MutationFailedError,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    ResultStatus,
    ValidationResult,
)

from ._domain import (
    Log,
    Quotas,
    Raises,
    RecordingInterceptor,
    SetQuota,
    quotas,
    with_quota,
)

pytestmark = pytest.mark.anyio


class Occupancy:
    """Counts how many executions are inside apply, per state and overall."""

    def __init__(self) -> None:
        self.by_state: Counter[str] = Counter()
        self.max_by_state: Counter[str] = Counter()
        self.inside = 0
        self.max_inside = 0
        self.log: Log = []

    def enter(self, key: str) -> None:
        self.by_state[key] += 1
        self.max_by_state[key] = max(self.max_by_state[key], self.by_state[key])
        self.inside += 1
        self.max_inside = max(self.max_inside, self.inside)
        self.log.append(f"enter:{key}")

    def leave(self, key: str) -> None:
        self.by_state[key] -= 1
        self.inside -= 1
        self.log.append(f"leave:{key}")


@attrs.frozen
class Occupy(Mutation[Quotas]):
    """An async apply that registers itself as inside, yields a few times, then leaves."""

    occupancy: Occupancy = attrs.field(eq=False)
    key: str
    gate: anyio.Event | None = attrs.field(default=None, eq=False)
    entered: anyio.Event | None = attrs.field(default=None, eq=False)
    intent: ClassVar[MutationIntent] = MutationIntent("occupy")

    async def apply(self, state: Quotas) -> Quotas:
        self.occupancy.enter(self.key)
        try:
            if self.entered is not None:
                self.entered.set()
            if self.gate is not None:
                await self.gate.wait()
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
        finally:
            self.occupancy.leave(self.key)
        return with_quota(state, self.key, state.quotas.get(self.key, 0) + 1)


@attrs.frozen
class Sleeps(Mutation[Quotas]):
    """An async apply that signals it started, then sleeps far longer than any timeout."""

    started: anyio.Event = attrs.field(eq=False)
    intent: ClassVar[MutationIntent] = MutationIntent("sleeps")

    async def apply(self, state: Quotas) -> Quotas:
        self.started.set()
        await anyio.sleep(10)
        return with_quota(state, "late", 1)


@attrs.frozen
class BlockingSleep(Mutation[Quotas]):
    """A sync apply that blocks the thread a little longer than the timeout."""

    seconds: float
    intent: ClassVar[MutationIntent] = MutationIntent("blocking-sleep")

    def apply(self, state: Quotas) -> Quotas:
        time.sleep(self.seconds)
        return with_quota(state, "late", 1)


@attrs.frozen
class Step(Mutation[Quotas]):
    """A batch step that logs and optionally waits on a gate."""

    log: Log = attrs.field(eq=False)
    label: str
    gate: anyio.Event | None = attrs.field(default=None, eq=False)
    entered: anyio.Event | None = attrs.field(default=None, eq=False)
    valid: bool = True
    intent: ClassVar[MutationIntent] = MutationIntent("step")

    def validate(self, state: Quotas) -> Any:
        if self.valid:
            return ValidationResult.ok()
        return ValidationResult.error("step", f"{self.label} invalid")

    async def apply(self, state: Quotas) -> Quotas:
        self.log.append(f"{self.label}:start")
        if self.entered is not None:
            self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.log.append(f"{self.label}:end")
        return with_quota(state, self.label, len(state.quotas) + 1)


class TestPerStateSerialization:
    async def test_same_state_never_interleaves(self) -> None:
        """Executions on one state_id run one at a time."""
        occupancy = Occupancy()
        engine: MutationEngine = MutationEngine(EngineOptions(max_concurrency=8))
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(
                    partial(engine.execute, Occupy(occupancy, "x"), quotas(), state_id="x")
                )
                tg.start_soon(
                    partial(engine.execute, Occupy(occupancy, "y"), quotas(), state_id="y")
                )
        assert occupancy.max_by_state["x"] == 1
        assert occupancy.max_by_state["y"] == 1
        assert occupancy.max_inside == 2
        assert len((await engine.history("x")).entries) == 6

    async def test_without_state_id_executions_overlap(self) -> None:
        """Executions without a state_id are not serialized against each other."""
        occupancy = Occupancy()
        engine: MutationEngine = MutationEngine(EngineOptions(max_concurrency=8))
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(engine.execute, Occupy(occupancy, "same"), quotas())
        assert occupancy.max_by_state["same"] == 3


class TestGlobalLimit:
    async def test_parallelism_reaches_but_never_exceeds_the_limit(self) -> None:
        """With more distinct states than max_concurrency, exactly the limit run at once."""
        occupancy = Occupancy()
        gate = anyio.Event()
        engine: MutationEngine = MutationEngine(EngineOptions(max_concurrency=3))
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for index in range(7):
                    key = f"s{index}"
                    tg.start_soon(
                        partial(
                            engine.execute, Occupy(occupancy, key, gate), quotas(), state_id=key
                        )
                    )
                await anyio.wait_all_tasks_blocked()
                assert occupancy.inside == 3
                gate.set()
        assert occupancy.max_inside == 3
        assert occupancy.inside == 0

    async def test_waiter_on_busy_state_holds_no_slot(self) -> None:
        """A caller queued on a busy state does not take a global slot from other states."""
        occupancy = Occupancy()
        gate = anyio.Event()
        a_entered = anyio.Event()
        c_done = anyio.Event()
        engine: MutationEngine = MutationEngine(EngineOptions(max_concurrency=2))

        async def run_c() -> None:
            await engine.execute(Occupy(occupancy, "Y"), quotas(), state_id="Y")
            c_done.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    partial(
                        engine.execute,
                        Occupy(occupancy, "X", gate, a_entered),
                        quotas(),
                        state_id="X",
                    )
                )
                await a_entered.wait()
                tg.start_soon(
                    partial(engine.execute, Occupy(occupancy, "X"), quotas(), state_id="X")
                )
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(run_c)
                await c_done.wait()
                assert not gate.is_set()
                assert occupancy.by_state["X"] == 1
                gate.set()
        assert occupancy.log.index("leave:Y") < occupancy.log.index("leave:X")

    async def test_max_concurrency_one_serializes_everything(self) -> None:
        """max_concurrency=1 runs executions on different states one at a time."""
        occupancy = Occupancy()
        engine: MutationEngine = MutationEngine(EngineOptions(max_concurrency=1))
        async with anyio.create_task_group() as tg:
            for index in range(4):
                key = f"s{index}"
                tg.start_soon(
                    partial(engine.execute, Occupy(occupancy, key), quotas(), state_id=key)
                )
        assert occupancy.max_inside == 1


class TestLockEviction:
    async def test_state_locks_are_evicted_when_idle(self) -> None:
        """After every execution finishes no per-state lock remains."""
        occupancy = Occupancy()
        engine: MutationEngine = MutationEngine()
        async with anyio.create_task_group() as tg:
            for index in range(20):
                key = f"s{index % 5}"
                tg.start_soon(
                    partial(engine.execute, Occupy(occupancy, key), quotas(), state_id=key)
                )
        assert engine._gate.tracked_states == 0

    async def test_locks_evicted_after_failures(self) -> None:
        """A failing execution releases and evicts its state's lock."""
        engine: MutationEngine = MutationEngine()
        with pytest.raises(MutationFailedError):
            await engine.execute(Raises(RuntimeError("x")), quotas(), state_id="q")
        assert engine._gate.tracked_states == 0
        assert (await engine.execute(SetQuota("a", 1), quotas(), state_id="q")).ok


class TestCancellation:
    async def test_caller_cancellation_propagates_unaudited(self) -> None:
        """Cancelling the caller raises the backend's cancellation; no audit, no history."""
        started = anyio.Event()
        seen: list[type[BaseException]] = []
        log: Log = []
        engine: MutationEngine = MutationEngine(interceptors=[RecordingInterceptor(log)])

        async def caller(scope: anyio.CancelScope) -> None:
            with scope:
                try:
                    await engine.execute(Sleeps(started), quotas(), state_id="q")
                except BaseException as error:
                    seen.append(type(error))
                    raise

        scope = anyio.CancelScope()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(caller, scope)
                await started.wait()
                scope.cancel()
        assert scope.cancelled_caught
        assert seen == [anyio.get_cancelled_exc_class()]
        assert await engine.audit.entries() == []
        assert len(await engine.history("q")) == 0
        assert log == ["before"]
        assert engine._gate.tracked_states == 0
        assert (await engine.statistics()).total_executed == 0

    async def test_cancellation_with_timeout_configured_is_not_a_timeout(self) -> None:
        """With an execution timeout set, caller cancellation is still not audited."""
        started = anyio.Event()
        engine: MutationEngine = MutationEngine(EngineOptions(execution_timeout=30))
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(engine.execute, Sleeps(started), quotas(), state_id="q"))
                await started.wait()
                tg.cancel_scope.cancel()
        assert await engine.audit.entries() == []
        assert engine._gate.tracked_states == 0

    async def test_cancelled_waiter_releases_its_place(self) -> None:
        """A caller cancelled while queued on a busy state leaves no lock behind."""
        occupancy = Occupancy()
        gate = anyio.Event()
        entered = anyio.Event()
        engine: MutationEngine = MutationEngine()
        waiter = anyio.CancelScope()

        async def queued() -> None:
            with waiter:
                await engine.execute(Occupy(occupancy, "X"), quotas(), state_id="X")

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    partial(
                        engine.execute,
                        Occupy(occupancy, "X", gate, entered),
                        quotas(),
                        state_id="X",
                    )
                )
                await entered.wait()
                tg.start_soon(queued)
                await anyio.wait_all_tasks_blocked()
                waiter.cancel()
                await anyio.wait_all_tasks_blocked()
                gate.set()
        assert occupancy.log == ["enter:X", "leave:X"]
        assert engine._gate.tracked_states == 0
        assert len(await engine.audit.entries("X")) == 1


class TestTimeouts:
    async def test_async_apply_times_out(self) -> None:
        """An async apply past execution_timeout raises ExecutionTimeoutError with details."""
        engine: MutationEngine = MutationEngine(EngineOptions(execution_timeout=0.05))
        with anyio.fail_after(5):
            with pytest.raises(ExecutionTimeoutError) as caught:
                await engine.execute(Sleeps(anyio.Event()), quotas(), state_id="q")
        error = caught.value
        assert error.timeout == 0.05
        assert 0.04 <= error.elapsed < 5
        assert error.execution_id is not None
        assert isinstance(error, TimeoutError)
        (entry,) = await engine.audit.entries("q")
        assert entry.outcome is AuditOutcome.TIMED_OUT
        assert entry.execution_id == error.execution_id
        assert not entry.succeeded
        assert len(await engine.history("q")) == 0
        stats = await engine.statistics()
        assert (stats.total_executed, stats.succeeded) == (1, 0)
        assert engine._gate.tracked_states == 0

    async def test_sync_apply_overrun_times_out(self) -> None:
        """A sync apply that returns after the deadline is reported as a timeout."""
        engine: MutationEngine = MutationEngine(EngineOptions(execution_timeout=0.05))
        with pytest.raises(ExecutionTimeoutError) as caught:
            await engine.execute(BlockingSleep(0.1), quotas(), state_id="q")
        assert caught.value.elapsed >= 0.05
        (entry,) = await engine.audit.entries("q")
        assert entry.outcome is AuditOutcome.TIMED_OUT
        assert len(await engine.history("q")) == 0

    @pytest.mark.parametrize("slow", ["sync", "async"])
    async def test_timeout_leaves_no_pending_cancellation(self, slow: str) -> None:
        """After a timeout the caller keeps running normally: no stray cancellation leaks."""
        engine: MutationEngine = MutationEngine(EngineOptions(execution_timeout=0.05))
        mutation = BlockingSleep(0.1) if slow == "sync" else Sleeps(anyio.Event())
        with anyio.fail_after(5), pytest.raises(ExecutionTimeoutError):
            await engine.execute(mutation, quotas(), state_id="q")
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        await anyio.sleep(0.06)
        result = await engine.execute(Occupy(Occupancy(), "after"), quotas(), state_id="q")
        assert result.ok

    async def test_fast_apply_within_timeout_succeeds(self) -> None:
        """An apply that finishes in time is unaffected by the timeout."""
        engine: MutationEngine = MutationEngine(EngineOptions(execution_timeout=5))
        result = await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        assert result.ok
        assert len(await engine.history("q")) == 1

    async def test_execution_timeout_covers_slow_policies(self) -> None:
        """The execution budget includes policy evaluation, so a slow policy times out."""

        class SlowPolicy(MutationPolicy[Any]):
            name = "slow"

            async def evaluate(self, mutation: Any, state: Any, context: Any) -> PolicyDecision:
                await anyio.sleep(10)
                return PolicyDecision.allow()

        audit = InMemoryAuditSink()
        engine: MutationEngine = MutationEngine(
            EngineOptions(execution_timeout=0.05), policies=[SlowPolicy()], audit=audit
        )
        with anyio.fail_after(5), pytest.raises(ExecutionTimeoutError):
            await engine.execute(SetQuota("a", 1), quotas())
        assert [entry.outcome for entry in audit.all()] == [AuditOutcome.TIMED_OUT]

    async def test_timeout_calls_failed_hook(self) -> None:
        """Interceptors see a timeout through the failed hook."""
        log: Log = []
        interceptor = RecordingInterceptor(log)
        engine: MutationEngine = MutationEngine(
            EngineOptions(execution_timeout=0.05), interceptors=[interceptor]
        )
        with anyio.fail_after(5), pytest.raises(ExecutionTimeoutError):
            await engine.execute(Sleeps(anyio.Event()), quotas())
        assert log == ["before", "failed"]
        assert isinstance(interceptor.errors[0], ExecutionTimeoutError)


class TestBatches:
    async def test_successful_batch(self) -> None:
        """A successful batch chains states, aggregates changes and records each step."""
        engine: MutationEngine = MutationEngine()
        batch = await engine.execute_batch(
            [SetQuota("a", 1), SetQuota("b", 2), SetQuota("a", 3)], quotas(), state_id="q"
        )
        assert batch.ok
        assert batch.final_state == quotas(a=3, b=2)
        assert [c.path for c in batch.changes] == ["quotas.a", "quotas.b", "quotas.a"]
        assert batch.success_count == 3
        assert batch.failed is None
        history = await engine.history("q")
        assert [e.execution_id for e in history.entries] == [r.execution_id for r in batch.results]

    async def test_empty_batch_succeeds_with_input_state(self) -> None:
        """An empty batch is ok and returns the input state unchanged."""
        engine: MutationEngine = MutationEngine()
        state = quotas(a=1)
        batch = await engine.execute_batch([], state, state_id="q")
        assert batch.ok
        assert batch.final_state is state
        assert batch.results == ()
        assert len(batch.changes) == 0
        assert await engine.audit.entries() == []

    async def test_failing_step_fails_everything(self) -> None:
        """A failing step makes the batch fail, with no history for any step."""
        engine: MutationEngine = MutationEngine()
        batch = await engine.execute_batch(
            [SetQuota("a", 1), SetQuota("b", -1), SetQuota("c", 1)], quotas(), state_id="q"
        )
        assert not batch.ok
        assert batch.final_state is None
        assert len(batch.results) == 2
        assert batch.failed is batch.results[-1]
        assert batch.failed.status is ResultStatus.VALIDATION_FAILED
        assert (batch.success_count, batch.failure_count) == (1, 1)
        assert len(batch.changes) == 0
        assert len(await engine.history("q")) == 0
        outcomes = [e.outcome for e in await engine.audit.entries("q")]
        assert outcomes == [AuditOutcome.SUCCEEDED, AuditOutcome.VALIDATION_FAILED]

    async def test_raising_step_records_no_history(self) -> None:
        """A step that raises propagates the error and no step is recorded."""
        engine: MutationEngine = MutationEngine()
        with pytest.raises(MutationFailedError) as caught:
            await engine.execute_batch(
                [SetQuota("a", 1), Raises(RuntimeError("boom"))], quotas(), state_id="q"
            )
        assert any("step 2 of 2" in note for note in caught.value.__notes__)
        assert len(await engine.history("q")) == 0
        outcomes = [e.outcome for e in await engine.audit.entries("q")]
        assert outcomes == [AuditOutcome.SUCCEEDED, AuditOutcome.FAILED]
        assert engine._gate.tracked_states == 0

    async def test_batch_holds_the_state(self) -> None:
        """A single execution on the same state cannot run between two batch steps."""
        log: Log = []
        gate = anyio.Event()
        entered = anyio.Event()
        engine: MutationEngine = MutationEngine()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    partial(
                        engine.execute_batch,
                        [Step(log, "b1", gate, entered), Step(log, "b2")],
                        quotas(),
                        state_id="q",
                    )
                )
                await entered.wait()
                tg.start_soon(partial(engine.execute, Step(log, "single"), quotas(), state_id="q"))
                await anyio.wait_all_tasks_blocked()
                gate.set()
        assert log == ["b1:start", "b1:end", "b2:start", "b2:end", "single:start", "single:end"]


class TestSlotCancellation:
    async def test_cancelled_while_waiting_for_a_slot(self) -> None:
        """A caller cancelled while waiting for a global slot leaves no lock behind."""
        occupancy = Occupancy()
        gate = anyio.Event()
        entered = anyio.Event()
        engine: MutationEngine = MutationEngine(EngineOptions(max_concurrency=1))
        waiter = anyio.CancelScope()

        async def queued() -> None:
            with waiter:
                await engine.execute(Occupy(occupancy, "Y"), quotas(), state_id="Y")

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    partial(
                        engine.execute,
                        Occupy(occupancy, "X", gate, entered),
                        quotas(),
                        state_id="X",
                    )
                )
                await entered.wait()
                tg.start_soon(queued)
                await anyio.wait_all_tasks_blocked()
                assert engine._gate.tracked_states == 2
                waiter.cancel()
                await anyio.wait_all_tasks_blocked()
                assert engine._gate.tracked_states == 1
                gate.set()
        assert engine._gate.tracked_states == 0
        assert occupancy.log == ["enter:X", "leave:X"]
        assert (await engine.execute(SetQuota("a", 1), quotas(), state_id="Y")).ok


class TestFailures:
    async def test_exception_becomes_mutation_failed(self) -> None:
        """An exception from apply becomes MutationFailedError with the original as cause."""
        log: Log = []
        interceptor = RecordingInterceptor(log)
        engine: MutationEngine = MutationEngine(interceptors=[interceptor])
        original = ValueError("bad arithmetic")
        with pytest.raises(MutationFailedError) as caught:
            await engine.execute(Raises(original), quotas(), state_id="q")
        error = caught.value
        assert error.__cause__ is original
        assert error.operation == "quota.raises"
        assert "bad arithmetic" in str(error)
        assert error.execution_id is not None
        assert log == ["before", "failed"]
        assert interceptor.errors == [error]
        (entry,) = await engine.audit.entries("q")
        assert entry.outcome is AuditOutcome.FAILED
        assert entry.execution_id == error.execution_id
        assert "bad arithmetic" in (entry.error or "")
        assert len(await engine.history("q")) == 0

    async def test_exception_from_validate_becomes_mutation_failed(self) -> None:
        """An exception from validate is wrapped the same way as one from apply."""

        @attrs.frozen
        class BadValidate(Mutation[Quotas]):
            intent: ClassVar[MutationIntent] = MutationIntent("bad.validate")

            def validate(self, state: Quotas) -> Any:
                raise ZeroDivisionError("oops")

            def apply(self, state: Quotas) -> Quotas:
                return state

        engine: MutationEngine = MutationEngine()
        with pytest.raises(MutationFailedError) as caught:
            await engine.execute(BadValidate(), quotas(), state_id="q")
        assert isinstance(caught.value.__cause__, ZeroDivisionError)
        (entry,) = await engine.audit.entries("q")
        assert entry.outcome is AuditOutcome.FAILED
