"""The remembered asyncio task behind the engine's cancel point (``mutator._deadline``).

A task that reaches the cancel point twice is remembered in a context variable so that
later checks skip ``asyncio._get_running_loop()`` (a ``getpid()`` system call). These tests
show the remembered task never stands in for another one: in child tasks, in threads
given a copy of the context, in a loop nested inside the task, in a new loop after the
previous one closed, and in a forked child. Each scenario ends with an execution inside a
cancelled scope that must not run.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
import threading
from typing import Any

import anyio
import pytest

import mutator._deadline as deadline
from mutator import MutationEngine

from ._domain import SetQuota, quotas

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
"""For tests of asyncio's own machinery (threads, nested loops, fork)."""


def _engine() -> MutationEngine:
    return MutationEngine()


async def _run_twice(engine: MutationEngine) -> None:
    """Two executions in the calling task: enough for it to be remembered."""
    for amount in (1, 2):
        assert (await engine.execute(SetQuota("a", amount), quotas(), state_id="q")).ok


async def _cancelled_execution_does_not_run(engine: MutationEngine) -> None:
    """An execution in a cancelled scope is stopped at the cancel point."""
    before = engine.metrics.statistics().total_executed
    with anyio.CancelScope() as scope:
        scope.cancel()
        await engine.execute(SetQuota("a", 9), quotas(), state_id="q")
        pytest.fail("the execution ran inside a cancelled scope")  # pragma: no cover
    assert scope.cancelled_caught
    assert engine.metrics.statistics().total_executed == before


def _remembered() -> Any:
    here = deadline._TASK.get()
    return None if here is None else here[0]()


@pytest.fixture
def running_loop_calls(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """Counts the calls of ``asyncio._get_running_loop`` made by the cancel point."""
    calls: list[None] = []
    original = deadline._get_running_loop

    def counted() -> Any:
        calls.append(None)
        return original()

    monkeypatch.setattr(deadline, "_get_running_loop", counted)
    return calls


@pytest.mark.anyio
async def test_a_task_is_remembered_and_still_sees_cancellation(
    anyio_backend: str, running_loop_calls: list[None]
) -> None:
    engine = _engine()
    await _run_twice(engine)
    await _run_twice(engine)  # the first check of a process also sets the module up
    calls = len(running_loop_calls)
    await _run_twice(engine)
    if anyio_backend == "asyncio":
        assert _remembered() is asyncio.current_task()
        assert len(running_loop_calls) == calls  # the remembered task answered
    else:
        assert _remembered() is None  # Trio has its own check; nothing is remembered
    await _cancelled_execution_does_not_run(engine)
    with anyio.CancelScope() as outer:
        outer.cancel()
        with anyio.CancelScope(shield=True):
            assert (await engine.execute(SetQuota("a", 3), quotas(), state_id="q")).ok
    await _run_twice(engine)


@pytest.mark.anyio
async def test_child_tasks_do_not_pass_for_their_parent(anyio_backend: str) -> None:
    engine = _engine()
    await _run_twice(engine)
    ran: list[str] = []

    async def child(name: str) -> None:
        own = _engine()  # counts only this child's executions
        await _run_twice(own)
        await _cancelled_execution_does_not_run(own)
        await _run_twice(own)
        ran.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(child, "first")
        tg.start_soon(child, "second")
    assert sorted(ran) == ["first", "second"]

    async with anyio.create_task_group() as tg:  # cancelled before the child runs
        tg.start_soon(engine.execute, SetQuota("a", 5), quotas())
        tg.cancel_scope.cancel()
    assert engine.metrics.statistics().total_executed == 2
    await _cancelled_execution_does_not_run(engine)


def _in_a_new_loop(engine: MutationEngine, errors: list[BaseException]) -> None:
    async def main() -> None:
        await _cancelled_execution_does_not_run(engine)
        await _run_twice(engine)
        await _cancelled_execution_does_not_run(engine)

    try:
        asyncio.run(main())
    except BaseException as error:  # pragma: no cover - reported by the test
        errors.append(error)


@pytest.mark.anyio
@asyncio_only
async def test_a_thread_with_a_copied_context_mid_step(anyio_backend: str) -> None:
    """The remembered task is blocked (mid-step) while another thread's task runs."""
    engine = _engine()
    await _run_twice(engine)
    assert _remembered() is asyncio.current_task()
    errors: list[BaseException] = []
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(_in_a_new_loop, engine, errors))
    thread.start()
    thread.join()  # blocks this task's step: its loop still names it as running
    assert errors == []
    await _cancelled_execution_does_not_run(engine)


@pytest.mark.anyio
@asyncio_only
async def test_a_thread_started_through_anyio(anyio_backend: str) -> None:
    engine = _engine()
    await _run_twice(engine)
    errors: list[BaseException] = []
    await anyio.to_thread.run_sync(_in_a_new_loop, engine, errors)
    assert errors == []
    await _cancelled_execution_does_not_run(engine)


@pytest.mark.anyio
@asyncio_only
async def test_a_loop_nested_inside_the_task(anyio_backend: str) -> None:
    """A loop run inside the task's step (asyncio's private API) has tasks of its own."""
    engine = _engine()
    await _run_twice(engine)
    outer = asyncio.get_running_loop()
    nested = asyncio.new_event_loop()
    asyncio.events._set_running_loop(None)
    try:

        async def inner() -> None:
            await _cancelled_execution_does_not_run(engine)
            await _run_twice(engine)
            await _cancelled_execution_does_not_run(engine)

        nested.run_until_complete(inner())
    finally:
        nested.close()
        asyncio.events._set_running_loop(outer)
    await _cancelled_execution_does_not_run(engine)
    await _run_twice(engine)


def test_a_new_loop_after_the_previous_one_closed() -> None:
    """One context across two loops (and one loop run twice): the old task is not trusted."""
    engine = _engine()
    context = contextvars.copy_context()
    remembered: list[Any] = []

    async def first() -> None:
        await _run_twice(engine)
        remembered.append(_remembered())
        assert remembered[-1] is asyncio.current_task()

    async def second() -> None:
        assert deadline._TASK.get() is not None  # the context still holds the first task
        await _cancelled_execution_does_not_run(engine)
        await _run_twice(engine)
        assert _remembered() is asyncio.current_task()

    with asyncio.Runner() as runner:
        runner.run(first(), context=context)
    with asyncio.Runner() as runner:
        runner.run(second(), context=context)
        runner.run(second(), context=context)  # the same loop again, a new task
    assert engine.metrics.statistics().total_executed == 6


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.anyio
@asyncio_only
async def test_a_forked_child_does_not_trust_the_parents_task(anyio_backend: str) -> None:
    """In the child asyncio reports no running loop; so does the cancel point."""
    engine = _engine()
    await _run_twice(engine)
    assert _remembered() is asyncio.current_task()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        status = 1
        try:
            check = deadline.checkpoint_if_cancelled()
            remembered = deadline._TASK.get()
            # As before the cache: with no running loop the check is the generic one.
            status = 0 if remembered is None and asyncio._get_running_loop() is None else 2
            if status == 0 and check is not None and hasattr(check, "close"):
                check.close()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)  # noqa: ASYNC222 - the child exits at once
    assert os.waitstatus_to_exitcode(status) == 0
    await _cancelled_execution_does_not_run(engine)


@pytest.mark.skipif(sys.platform == "win32", reason="Unix event loops")
def test_only_standard_loops_are_remembered() -> None:
    """A loop whose run_forever is not asyncio's own may not keep ``_thread_id``."""

    class Custom(asyncio.SelectorEventLoop):
        def run_forever(self) -> None:
            super().run_forever()

    engine = _engine()

    async def main() -> None:
        await _run_twice(engine)
        await _run_twice(engine)
        assert deadline._TASK.get() is None
        await _cancelled_execution_does_not_run(engine)

    loop = Custom()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@pytest.mark.anyio
@asyncio_only
async def test_trio_run_inside_the_task_uses_trios_check(anyio_backend: str) -> None:
    """Trio run (blocking) inside the remembered task's step: Trio's tasks are Trio's."""
    trio = pytest.importorskip("trio")
    engine = _engine()
    await _run_twice(engine)
    assert _remembered() is asyncio.current_task()

    async def in_trio() -> None:
        assert deadline._TASK.get() is not None  # Trio copied this task's context
        await _cancelled_execution_does_not_run(engine)
        await _run_twice(engine)
        await _cancelled_execution_does_not_run(engine)

    trio.run(in_trio)  # blocks this task's step: asyncio still names it as running
    await _cancelled_execution_does_not_run(engine)


@pytest.mark.anyio
@asyncio_only
async def test_tasks_taking_turns_are_each_remembered(anyio_backend: str) -> None:
    engine = _engine()
    remembered: dict[str, bool] = {}

    async def worker(name: str) -> None:
        for amount in range(1, 5):
            assert (await engine.execute(SetQuota(name, amount), quotas(), state_id=name)).ok
            await anyio.lowlevel.checkpoint()  # the other worker runs in between
        remembered[name] = _remembered() is asyncio.current_task()
        await _cancelled_execution_does_not_run(_engine())

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker, "a")
        tg.start_soon(worker, "b")
    assert remembered == {"a": True, "b": True}
