"""Kill -9 on a shared SQLite file: every request executes once, every record is exact.

Four worker processes (two on asyncio, two on trio) run ``gov.run_worker`` with a 2 s
lease and a recovery sweep every second over 600 approved requests on a few states; the
test SIGKILLs one worker every ~0.5 s and starts a new one in its place. Afterwards every
request is EXECUTED exactly once, the state sums are exact, each request has one history
entry and one SUCCEEDED audit entry, and every decision log equals its request's decisions.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import warnings
from functools import partial
from multiprocessing.process import BaseProcess
from pathlib import Path

import anyio
import pytest

from mutator_governance import Governance, RequestStatus

from .kill_checks import assert_executed_once, kill_until_done, submit_increments
from .sqlite_worker import registry, serve

REQUESTS = 600
STATES = 4
WORKERS = 4
LEASE = 2.0
KILL_EVERY = 0.3
KILLING_FOR = 35.0  # then the survivors finish; the whole test stays under 60 s
FINISH_WITHIN = 55.0


def _executed(path: Path) -> int:
    raw = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = raw.execute(
            "SELECT COUNT(*) FROM requests WHERE status = ?", (RequestStatus.EXECUTED.value,)
        ).fetchone()
        return int(row[0])
    finally:
        raw.close()


def _work(path: str, backend: str) -> None:
    try:
        anyio.run(serve, path, LEASE, backend=backend)
    finally:
        os._exit(3)  # run_worker never returns on its own: exiting is a crash


def _start(path: Path, index: int) -> BaseProcess:
    """A worker forked from this process (no interpreter start-up: it works at once).

    A fresh interpreter takes seconds to start on a loaded machine, longer than a worker
    lives here. Forking is safe although idle worker threads exist: the child starts a new
    event loop, anyio keeps its worker threads per loop and trio clears its thread cache
    after a fork (Python 3.12+ warns about forking with threads; that warning is muted).
    """
    backend = "trio" if index % 2 else "asyncio"
    worker = multiprocessing.get_context("fork").Process(
        target=_work, args=(str(path), backend), daemon=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        worker.start()
    return worker


@pytest.mark.slow
@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs os.fork (POSIX)"
)
def test_killed_workers_execute_every_request_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "kill.db"
    url = f"sqlite:///{path}"
    plan = anyio.run(partial(submit_increments, url, requests=REQUESTS, states=STATES))
    run = kill_until_done(
        partial(_start, path),
        partial(_executed, path),
        requests=REQUESTS,
        workers=WORKERS,
        kill_every=KILL_EVERY,
        killing_for=KILLING_FOR,
        finish_within=FINISH_WITHIN,
    )
    assert not run.crashed, f"workers exited on their own with {run.crashed}"
    assert run.kills >= 3, f"only {run.kills} kills in {run.elapsed:.1f}s: too few"
    print(f"kill test: {run.kills} kills, all executed after {run.elapsed:.1f}s")

    async def verify() -> set[str]:
        async with Governance.open(url, registry=registry()) as gov:
            return await assert_executed_once(gov, plan)

    actors = anyio.run(verify)
    # Workers on both event loops did work.
    assert {"kill-worker-asyncio", "kill-worker-trio"} <= actors, actors
