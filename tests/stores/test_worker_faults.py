"""A worker on a real server whose connections are killed again and again keeps going.

Several requests target each state, so the worker revalidates the ones that went stale.

While the worker executes a backlog, a saboteur terminates the store's PostgreSQL backends
(``pg_terminate_backend``) or kills its Redis connections (``CLIENT KILL``) every few tens
of milliseconds. Afterwards the worker drains everything: each request executed exactly
once (one EXECUTED decision, one history entry), every state sum exact, nothing left
EXECUTING, and the outages were seen and retried rather than stopping the worker.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import psycopg
import pytest
import redis.asyncio as aioredis

from mutator_governance import (
    Backoff,
    Governance,
    LifecycleDecision,
    RequestQuery,
    RequestStatus,
    ResolutionStrategy,
    WorkerProgress,
)

from . import pg_domain
from .pg_domain import Add, Counters
from .test_postgres import drop_schema, with_schema
from .test_redis import _drop, _with_prefix

STATES = 10
REQUESTS = 120
SABOTAGE_SECONDS = 1.5

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _seed(gov: Governance) -> None:
    context = pg_domain.user("alice")
    for state in range(STATES):
        await gov.states.put(f"counters:{state}", Counters())
    for n in range(REQUESTS):
        request = await gov.submit(
            Add("total", 1),
            state_id=f"counters:{n % STATES}",
            context=context,
            request_id=f"add-{n:04d}",
        )
        assert request.status is RequestStatus.APPROVED


async def _drain_under_sabotage(gov: Governance, sabotage: Callable[[], Awaitable[int]]) -> Any:
    progress = WorkerProgress()
    killed = 0

    def felt() -> bool:
        report = progress.report
        return report.outages + report.retried > 0

    async def saboteur() -> None:
        # At least SABOTAGE_SECONDS, then on until a fault reached the worker (a killed
        # idle connection is replaced unseen; only one killed mid-command is felt).
        nonlocal killed
        start = anyio.current_time()
        while (elapsed := anyio.current_time() - start) < SABOTAGE_SECONDS or (
            not felt() and elapsed < 4 * SABOTAGE_SECONDS
        ):
            killed += await sabotage()
            await anyio.sleep(0.02)

    async def drained() -> bool:
        page = await gov.list(
            RequestQuery(
                statuses={RequestStatus.APPROVED, RequestStatus.EXECUTING, RequestStatus.PENDING}
            ),
            limit=1,
        )
        return not page.items

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: gov.run_worker(
                    concurrency=4,
                    strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE,
                    poll_interval=0.05,
                    recover_every=1.0,
                    backoff=Backoff(initial=0.02, maximum=0.3),
                    grace=2.0,
                    progress=progress,
                )
            )
            await saboteur()
            while True:
                try:
                    if await drained():
                        break
                except Exception:  # the reader's own connection may have been killed too
                    pass
                await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
    return progress.report, killed


async def _assert_exactly_once(gov: Governance) -> None:
    page = await gov.list(RequestQuery(), limit=REQUESTS + 1)
    assert len(page.items) == REQUESTS
    assert {r.status for r in page.items} == {RequestStatus.EXECUTED}
    for request in page.items:
        executed = [d for d in request.decisions if d.code is LifecycleDecision.EXECUTED]
        assert len(executed) == 1, request.request_id
        assert tuple(await gov.decisions.for_request(request.request_id)) == request.decisions
    for state in range(STATES):
        current = await gov.states.get(f"counters:{state}")
        assert current is not None
        assert current.state.values == {"total": REQUESTS // STATES}
        assert current.version == str(1 + REQUESTS // STATES)
        history = await gov.history(f"counters:{state}")
        assert len(history.entries) == REQUESTS // STATES


@pytest.fixture
async def pg_url(postgres_url: str) -> AsyncIterator[tuple[str, str]]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield postgres_url, schema
    finally:
        await drop_schema(postgres_url, schema)


async def test_worker_drains_while_postgres_backends_are_terminated(
    pg_url: tuple[str, str],
) -> None:
    url, schema = pg_url

    async def terminate() -> int:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database() "
                "AND position(%s in query) > 0",
                (schema,),
            )
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

    async with Governance.open(
        with_schema(url, schema), registry=pg_domain.registry(), lease=3.0
    ) as gov:
        await _seed(gov)
        report, killed = await _drain_under_sabotage(gov, terminate)
        assert killed > 0
        assert report.outages + report.retried > 0
    # Checked through a store opened after the faults: the sabotaged pool may still hold a
    # connection killed while idle, and the first read on it is an outage by design.
    async with Governance.open(with_schema(url, schema), registry=pg_domain.registry()) as gov:
        await _assert_exactly_once(gov)


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[tuple[str, str]]:
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    try:
        yield redis_url, prefix
    finally:
        await _drop(redis_url, prefix)


async def test_worker_drains_while_redis_connections_are_killed(
    redis_prefix: tuple[str, str],
) -> None:
    url, prefix = redis_prefix
    name = f"fault-{prefix}"

    async def kill() -> int:
        client = aioredis.Redis.from_url(url)
        try:
            killed = 0
            for entry in await client.client_list():
                if entry.get("name") == name:
                    killed += await client.execute_command("CLIENT", "KILL", "ID", entry["id"])
            return killed
        finally:
            await client.aclose()

    async with Governance.open(
        _with_prefix(url, prefix), registry=pg_domain.registry(), lease=3.0, client_name=name
    ) as gov:
        await _seed(gov)
        report, killed = await _drain_under_sabotage(gov, kill)
        assert killed > 0
        assert report.outages + report.retried > 0
    async with Governance.open(_with_prefix(url, prefix), registry=pg_domain.registry()) as gov:
        await _assert_exactly_once(gov)
