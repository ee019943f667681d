"""The concurrency gate when contended: arrival order, hand-over, cancellation, eviction."""

from __future__ import annotations

from functools import partial

import anyio
import pytest

from mutator import EngineOptions, MutationEngine

from ._domain import Log, quotas
from .test_engine_concurrency import Step

pytestmark = pytest.mark.anyio


class TestFairness:
    async def test_waiters_on_a_state_run_in_arrival_order(self) -> None:
        """Callers queued on a busy state run first come, first served."""
        log: Log = []
        gate, entered = anyio.Event(), anyio.Event()
        engine = MutationEngine()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    partial(engine.execute, Step(log, "0", gate, entered), quotas(), state_id="s")
                )
                await entered.wait()
                for label in ("1", "2", "3"):
                    tg.start_soon(partial(engine.execute, Step(log, label), quotas(), state_id="s"))
                    await anyio.wait_all_tasks_blocked()
                gate.set()
        assert [entry for entry in log if entry.endswith(":start")] == [
            "0:start",
            "1:start",
            "2:start",
            "3:start",
        ]
        assert engine._gate.tracked_states == 0

    async def test_waiters_for_a_slot_run_in_arrival_order(self) -> None:
        """With every slot taken, callers on other states get slots first come, first served."""
        log: Log = []
        gate, entered = anyio.Event(), anyio.Event()
        engine = MutationEngine(EngineOptions(max_concurrency=1))
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    partial(engine.execute, Step(log, "0", gate, entered), quotas(), state_id="a")
                )
                await entered.wait()
                for label in ("b", "c", "d"):
                    tg.start_soon(
                        partial(engine.execute, Step(log, label), quotas(), state_id=label)
                    )
                    await anyio.wait_all_tasks_blocked()
                gate.set()
        assert [entry for entry in log if entry.endswith(":start")] == [
            "0:start",
            "b:start",
            "c:start",
            "d:start",
        ]

    async def test_cancelled_waiter_passes_its_turn_on(self) -> None:
        """A queued caller cancelled after its turn came hands the state to the next one."""
        log: Log = []
        gate, entered = anyio.Event(), anyio.Event()
        engine = MutationEngine()
        second = anyio.CancelScope()

        async def cancelled_caller() -> None:
            with second:
                await engine.execute(Step(log, "cancelled"), quotas(), state_id="s")

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    partial(engine.execute, Step(log, "0", gate, entered), quotas(), state_id="s")
                )
                await entered.wait()
                tg.start_soon(cancelled_caller)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(partial(engine.execute, Step(log, "last"), quotas(), state_id="s"))
                await anyio.wait_all_tasks_blocked()
                gate.set()  # the state is handed to the cancelled caller...
                second.cancel()  # ...which is cancelled before it resumes
        assert "cancelled:start" not in log
        assert log[-2:] == ["last:start", "last:end"]
        assert engine._gate.tracked_states == 0
