"""Kill -9 on a shared Redis store: every request executes once, every record is exact.

Four worker processes run ``gov.run_worker`` with a 2 s lease (judged by the server's
``TIME``) and a recovery sweep every second over approved requests on a few states; the
test SIGKILLs one worker every ~0.25 s and starts a new one in its place. Afterwards every
request is EXECUTED exactly once, the state sums are exact, each request has one history
entry and one SUCCEEDED audit entry, and every decision log equals its request's decisions.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
import warnings
from collections.abc import Iterator
from functools import partial
from multiprocessing.process import BaseProcess

import anyio
import pytest
import redis

from mutator import MutationContext
from mutator_governance import Backoff, Governance, ResolutionStrategy

from .kill_checks import assert_executed_once, kill_until_done, submit_increments
from .sqlite_worker import registry

REQUESTS = 1500
STATES = 4
WORKERS = 4
LEASE = 2.0
KILL_EVERY = 0.25
KILLING_FOR = 30.0  # then the survivors finish; the whole test stays under 60 s
FINISH_WITHIN = 55.0


async def _serve(url: str) -> None:
    async with Governance.open(url, registry=registry(), lease=LEASE) as gov:
        await gov.run_worker(
            concurrency=2,
            poll_interval=0.05,
            strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE,
            context=MutationContext.service("kill-worker"),
            recover_every=1.0,
            backoff=Backoff(initial=0.1, maximum=LEASE),
        )


def _work(url: str) -> None:
    try:
        anyio.run(_serve, url, backend="asyncio")
    finally:
        os._exit(3)  # run_worker never returns on its own: exiting is a crash


def _start(url: str, index: int) -> BaseProcess:
    """A worker forked from this process, so it works at once (see test_sqlite_kill)."""
    worker = multiprocessing.get_context("fork").Process(target=_work, args=(url,), daemon=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        worker.start()
    return worker


def _executed(redis_url: str, prefix: str) -> int:
    """EXECUTED requests under ``prefix``, read from the store's set of them (no store open)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.zcard(f"{prefix}:updated:executed"))
    finally:
        client.close()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A private key prefix in the named Redis database, its keys deleted afterwards."""
    prefix = f"mutator-kill-{uuid.uuid4().hex}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs os.fork (POSIX)"
)
def test_killed_workers_execute_every_request_exactly_once(redis_url: str, prefix: str) -> None:
    store_url = f"{redis_url}{'&' if '?' in redis_url else '?'}prefix={prefix}"
    plan = anyio.run(partial(submit_increments, store_url, requests=REQUESTS, states=STATES))
    run = kill_until_done(
        partial(_start, store_url),
        partial(_executed, redis_url, prefix),
        requests=REQUESTS,
        workers=WORKERS,
        kill_every=KILL_EVERY,
        killing_for=KILLING_FOR,
        finish_within=FINISH_WITHIN,
    )
    assert not run.crashed, f"workers exited on their own with {run.crashed}"
    assert run.kills >= 3, f"only {run.kills} kills in {run.elapsed:.1f}s: too few"
    print(f"kill test: {run.kills} kills, all executed after {run.elapsed:.1f}s")

    async def verify() -> None:
        async with Governance.open(store_url, registry=registry()) as gov:
            await assert_executed_once(gov, plan)

    anyio.run(verify)
