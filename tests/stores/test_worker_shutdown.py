"""A worker that stops leaves no reservation behind, on every durable backend.

When a worker is cancelled it gives
back (``ReservationRelease.unreserve``) whatever it reserved and did not start, so a
fresh worker with another executor id (another process) drains it at once instead of
waiting for the reservation to run out (``max(lease, backoff.maximum)``, 300 s by
default). On SQLite a reservation that completes in its worker thread after the cancel
starts nothing and is given back too.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar

import anyio
import attrs
import pytest

from mutator import Mutation, MutationIntent
from mutator_governance import (
    Governance,
    LifecycleDecision,
    MutationRegistry,
    RequestQuery,
    RequestStatus,
    ReservationRelease,
    WorkerProgress,
)

from . import pg_domain
from .pg_domain import Counters
from .test_postgres import drop_schema, with_schema
from .test_redis import _drop, _with_prefix

pytestmark = pytest.mark.anyio

GATES: dict[str, anyio.Event] = {}
"""Per test: the event each ``Held`` request waits for (tag -> event)."""
REACHED: dict[str, anyio.Event] = {}
"""Per test: set when a ``Held`` request starts waiting for its gate."""


@attrs.frozen
class Held(Mutation[Counters]):
    """Adds 1 to counter ``tag`` once ``GATES[tag]`` is set (at once without a gate)."""

    tag: str
    intent: ClassVar[MutationIntent] = MutationIntent("shutdown.held", category="test")

    async def apply(self, state: Counters) -> Counters:
        gate = GATES.get(self.tag)
        if gate is not None:
            REACHED.setdefault(self.tag, anyio.Event()).set()
            await gate.wait()
        return Counters({**state.values, self.tag: state.values.get(self.tag, 0) + 1})


def registry() -> MutationRegistry:
    reg = pg_domain.registry()
    reg.register(Held, name="shutdown.held")
    return reg


Opener = Callable[[], AbstractAsyncContextManager[Governance]]


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[tuple[str, Opener]]:
    """(kind, opener): each call of ``opener`` opens a new governance (its own executor id)
    on the same store."""
    kind = request.param
    if kind != "sqlite" and anyio_backend != "asyncio":
        pytest.skip("the PostgreSQL and Redis tests run on asyncio")
    GATES.clear()
    REACHED.clear()
    name = uuid.uuid4().hex[:12]
    drop: Callable[[], Awaitable[None]] | None = None
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/gov.db"
    elif kind == "postgres":
        base = request.getfixturevalue("postgres_url")
        url = with_schema(base, f"t_{name}")
        drop = functools.partial(drop_schema, base, f"t_{name}")
    else:
        base = request.getfixturevalue("redis_url")
        url = _with_prefix(base, f"t-{name}")
        drop = functools.partial(_drop, base, f"t-{name}")
    try:
        yield kind, lambda: Governance.open(url, registry=registry())
    finally:
        if drop is not None:
            await drop()


async def _statuses(gov: Governance) -> dict[str, RequestStatus]:
    page = await gov.list(RequestQuery(), limit=100)
    return {r.request_id: r.status for r in page.items}


async def test_a_stopped_worker_leaves_nothing_reserved_for_the_next(
    backend: tuple[str, Opener],
) -> None:
    """Two slots; A and C block, B and D are quick. Before: the worker reserved C and D for
    the one slot B freed, D waited in its buffer, and cancelling the worker kept D reserved
    for 300 s, so a fresh ``until_idle`` worker returned with D still APPROVED."""
    kind, opener = backend
    async with opener() as gov:
        assert isinstance(gov.requests, ReservationRelease), kind
        GATES.update(A=anyio.Event(), C=anyio.Event())
        REACHED.update(C=anyio.Event())
        for tag in "ABCD":
            await gov.states.put(f"counters:{tag}", Counters())
            mutation = Held(tag) if tag in GATES else pg_domain.Add(tag, 1)
            await gov.submit(
                mutation,
                state_id=f"counters:{tag}",
                context=pg_domain.user("alice"),
                request_id=tag,
            )
        progress = WorkerProgress()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: gov.run_worker(
                        concurrency=2, poll_interval=0.02, grace=0.2, progress=progress
                    )
                )
                await REACHED["C"].wait()  # B executed, C took its slot
                await anyio.sleep(0.1)  # a few polls with both slots busy
                tg.cancel_scope.cancel()
        assert progress.report.executed == 1
        assert (await _statuses(gov))["D"] is RequestStatus.APPROVED
        for gate in GATES.values():
            gate.set()
    async with opener() as fresh:
        with anyio.fail_after(20):
            report = await fresh.run_worker(until_idle=True, poll_interval=0.02)
        assert report.executed == 3
        assert set((await _statuses(fresh)).values()) == {RequestStatus.EXECUTED}


@pytest.fixture
async def sqlite_gov(tmp_path: Path) -> AsyncIterator[tuple[Governance, Path]]:
    GATES.clear()
    path = tmp_path / "gov.db"
    async with Governance.open(f"sqlite:///{path}", registry=registry()) as gov:
        yield gov, path


async def test_a_reservation_finishing_after_the_cancel_starts_nothing(
    sqlite_gov: tuple[Governance, Path],
) -> None:
    """The worker is cancelled while its reservation waits for SQLite's write lock in a
    worker thread. Before: the reservation completed and the worker claimed and ran the
    request after the cancel, ignoring the grace period; now it starts nothing and gives
    the reservation back."""
    gov, path = sqlite_gov
    await gov.states.put("counters:S", Counters())
    await gov.submit(
        pg_domain.Add("S", 1),
        state_id="counters:S",
        context=pg_domain.user("alice"),
        request_id="S",
    )
    locked = threading.Event()

    def hold_the_write_lock() -> None:
        connection = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(0.6)
            connection.execute("COMMIT")
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    try:
        assert locked.wait(5)
        progress = WorkerProgress()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: gov.run_worker(poll_interval=0.05, grace=0.2, progress=progress)
                )
                await anyio.sleep(0.2)  # the worker's reservation waits for the lock
                tg.cancel_scope.cancel()
    finally:
        holder.join()
    assert progress.report == type(progress.report)()
    request = await gov.get("S")
    assert request.status is RequestStatus.APPROVED
    assert not [d for d in request.decisions if d.code is LifecycleDecision.CLAIMED]
    # given back: another worker (another executor id) reserves it at once
    queue: Any = gov.requests
    now = gov.executor.clock()
    taken = await queue.reserve(owner="another", limit=5, now=now, until=now)
    assert [r.request_id for r in taken] == ["S"]
