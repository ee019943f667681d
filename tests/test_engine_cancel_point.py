"""The cancel point at the start of every execution (the engine's own check, per backend)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from mutator import MutationContext, MutationEngine

from ._domain import SetQuota, quotas

pytestmark = pytest.mark.anyio

Run = Callable[[MutationEngine], Awaitable[Any]]

ENTRY_POINTS: dict[str, Run] = {
    "execute": lambda engine: engine.execute(SetQuota("a", 1), quotas(), state_id="q"),
    "execute_batch": lambda engine: engine.execute_batch(
        [SetQuota("a", 1)], quotas(), state_id="q"
    ),
}


def _untouched(engine: MutationEngine) -> None:
    assert engine.audit.all() == ()  # type: ignore[attr-defined]
    assert engine.metrics.statistics().total_executed == 0
    assert engine._gate.tracked_states == 0


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
class TestCancelPoint:
    async def test_cancelled_scope_stops_before_anything_runs(self, entry: str) -> None:
        """Inside an already cancelled scope nothing runs, is audited or is counted."""
        engine = MutationEngine()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await ENTRY_POINTS[entry](engine)
            pytest.fail("the execution ran inside a cancelled scope")  # pragma: no cover
        assert scope.cancelled_caught
        _untouched(engine)

    async def test_cancelled_outer_scope_is_seen_through_inner_ones(self, entry: str) -> None:
        engine = MutationEngine()
        with anyio.CancelScope() as outer:
            outer.cancel()
            with anyio.CancelScope(), anyio.CancelScope(deadline=anyio.current_time() + 60):
                await ENTRY_POINTS[entry](engine)
                pytest.fail("the execution ran inside a cancelled scope")  # pragma: no cover
        assert outer.cancelled_caught
        _untouched(engine)

    async def test_shielded_scope_runs_inside_a_cancelled_one(self, entry: str) -> None:
        """A shield between the execution and the cancelled scope lets it run."""
        engine = MutationEngine()
        with anyio.CancelScope() as outer:
            outer.cancel()
            with anyio.CancelScope(shield=True):
                result = await ENTRY_POINTS[entry](engine)
        assert result.ok
        assert engine.metrics.statistics().total_executed == 1

    async def test_cancelled_after_the_scope_was_left_runs(self, entry: str) -> None:
        engine = MutationEngine()
        with anyio.CancelScope() as scope:  # noqa: ASYNC100
            scope.cancel()
        assert (await ENTRY_POINTS[entry](engine)).ok

    async def test_cancelled_from_another_task_while_queued(self, entry: str) -> None:
        """A task group cancelled before its child reaches the engine: nothing runs."""
        engine = MutationEngine()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ENTRY_POINTS[entry], engine)
            tg.cancel_scope.cancel()
        _untouched(engine)


async def test_deferred_execution_in_a_cancelled_scope_is_not_run() -> None:
    engine = MutationEngine()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await engine.execute_deferred(
            SetQuota("a", 1), quotas(), context=MutationContext.user("tester"), state_id="q"
        )
        pytest.fail("the execution ran inside a cancelled scope")  # pragma: no cover
    assert scope.cancelled_caught
    _untouched(engine)


async def test_loop_clock_is_anyio_current_time() -> None:
    from mutator._deadline import current_time

    before = anyio.current_time()
    now = current_time()
    after = anyio.current_time()
    assert before <= now <= after
