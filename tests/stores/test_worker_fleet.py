"""A fleet of worker processes on one store executes every request exactly once.

Four processes (``tests/stores/fleet_worker.py``), each with its own ``Governance.open``,
start at the same moment and run ``run_worker(until_idle=True, concurrency=4)`` over 1,000
APPROVED requests on 50 states, on a SQLite file, PostgreSQL and Redis
(the server ones only when named, like every server test). Afterwards: every process
exited 0 with no error and no failed request, their reports add up to one execution per
request, at least two of them executed some, and the store shows each request EXECUTED
with one EXECUTED decision, one history entry and one SUCCEEDED audit entry, and every
state's sum and version exact.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import pytest

from mutator import AuditOutcome
from mutator_governance import Governance, LifecycleDecision, RequestStatus

from .pg_domain import Add, Counters, registry, user

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 1000
STATES = 50
WORKERS = 4
TIMEOUT = 300.0


@pytest.fixture
def anyio_backend() -> str:
    """The PostgreSQL and Redis drivers run on asyncio only."""
    return "asyncio"


@contextlib.asynccontextmanager
async def _postgres(url: str) -> AsyncIterator[str]:
    import psycopg

    schema = f"t_fleet_{uuid.uuid4().hex}"
    try:
        yield f"{url}{'&' if '?' in url else '?'}schema={schema}"
    finally:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.asynccontextmanager
async def _redis(url: str) -> AsyncIterator[str]:
    import redis.asyncio as aioredis

    prefix = f"mutator-test-fleet-{uuid.uuid4().hex}"
    try:
        yield f"{url}{'&' if '?' in url else '?'}prefix={prefix}"
    finally:
        client = aioredis.Redis.from_url(url)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
        finally:
            await client.aclose()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh store location on each backend (schema / key prefix dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fleet.db"
    elif request.param == "postgres":
        async with _postgres(request.getfixturevalue("postgres_url")) as url:
            yield url
    else:
        async with _redis(request.getfixturevalue("redis_url")) as url:
            yield url


def _plan() -> dict[str, tuple[str, Add]]:
    return {
        f"fleet-{index:04d}": (f"s{index % STATES:02d}", Add(f"k{index % 3}", index % 7 + 1))
        for index in range(REQUESTS)
    }


async def _seed(url: str, plan: dict[str, tuple[str, Add]]) -> None:
    async with Governance.open(url, registry=registry()) as gov:
        for state_id in sorted({state_id for state_id, _ in plan.values()}):
            await gov.states.put(state_id, Counters())
        limiter = anyio.CapacityLimiter(8)

        async def submit(request_id: str, state_id: str, mutation: Add) -> None:
            async with limiter:
                request = await gov.submit(
                    mutation, state_id=state_id, context=user("alice"), request_id=request_id
                )
            assert request.status is RequestStatus.APPROVED

        async with anyio.create_task_group() as group:
            for request_id, (state_id, mutation) in plan.items():
                group.start_soon(submit, request_id, state_id, mutation)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def _run_fleet(url: str) -> list[dict[str, Any]]:
    """Start WORKERS processes, release them together once all are ready; their reports."""
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    with contextlib.ExitStack() as stack:
        workers: list[tuple[subprocess.Popen[str], IO[str]]] = []
        # A worker that hangs before saying ready would block readline: kill it in time.

        def kill_all() -> None:
            for process, _ in workers:
                process.kill()

        watchdog = threading.Timer(TIMEOUT, kill_all)
        watchdog.start()
        stack.callback(watchdog.cancel)
        for _ in range(WORKERS):
            errors = stack.enter_context(tempfile.TemporaryFile("w+"))
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.stores.fleet_worker", url],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
            stack.callback(_stop, process)
            workers.append((process, errors))
        for worker, log in workers:
            assert worker.stdout is not None
            line = worker.stdout.readline()
            log.seek(0)
            assert line.strip() == "ready", log.read()
        for worker, _ in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = []
        for worker, log in workers:
            out, _ = worker.communicate(timeout=TIMEOUT)
            log.seek(0)
            assert worker.returncode == 0, log.read()
            reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


async def _verify(url: str, plan: dict[str, tuple[str, Add]]) -> None:
    async with Governance.open(url, registry=registry()) as gov:
        page = await gov.requests.list(limit=REQUESTS + 1)
        assert len(page.items) == REQUESTS
        statuses = collections.Counter(r.status for r in page.items)
        assert statuses == {RequestStatus.EXECUTED: REQUESTS}, statuses
        for request in page.items:
            codes = [d.code for d in request.decisions]
            assert codes.count(LifecycleDecision.EXECUTED) == 1, (request.request_id, codes)

        expected = {state_id: Counters() for state_id, _ in plan.values()}
        per_state = collections.Counter(state_id for state_id, _ in plan.values())
        for state_id, mutation in plan.values():
            expected[state_id] = mutation.apply(expected[state_id])
        history_entries: collections.Counter[str] = collections.Counter()
        for state_id, state in expected.items():
            current = await gov.states.get(state_id)
            assert current is not None
            assert (current.state, current.version) == (state, str(per_state[state_id] + 1))
            history = await gov.engine.history_store.history(state_id)
            history_entries.update(
                e.context.metadata["governance_request_id"] for e in history.entries
            )
        assert history_entries == dict.fromkeys(plan, 1)

        audit = await gov.engine.audit.entries()
        succeeded = collections.Counter(
            e.context.metadata.get("governance_request_id")
            for e in audit
            if e.outcome is AuditOutcome.SUCCEEDED
        )
        assert succeeded == dict.fromkeys(plan, 1)


@pytest.mark.anyio
async def test_a_fleet_of_workers_executes_every_request_exactly_once(store_url: str) -> None:
    plan = _plan()
    await _seed(store_url, plan)

    reports = await anyio.to_thread.run_sync(_run_fleet, store_url)

    assert [r["errors"] for r in reports] == [0] * WORKERS, reports
    assert [r["failed"] for r in reports] == [0] * WORKERS, reports
    assert sum(r["executed"] for r in reports) == REQUESTS, reports
    assert sum(1 for r in reports if r["executed"]) >= 2, f"the workers did not share: {reports}"
    await _verify(store_url, plan)
