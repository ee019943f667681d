"""Kill -9 on a shared SQLite file: every request executes once, every record is exact.

Four worker processes (two on asyncio, two on trio) run ``gov.run_worker`` with a 2 s
lease and a recovery sweep every second over 600 approved requests on a few states; the
test SIGKILLs one worker every ~0.5 s and starts a new one in its place. Afterwards every
request is EXECUTED exactly once, the state sums are exact, each request has one history
entry and one SUCCEEDED audit entry, and every decision log equals its request's decisions.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
import sqlite3
import time
import warnings
from multiprocessing.process import BaseProcess
from pathlib import Path

import anyio
import pytest

from mutator import AuditOutcome, MutationContext
from mutator_governance import Governance, RequestStatus

from .sqlite_worker import Counter, Increment, registry, serve

REQUESTS = 600
STATES = 4
WORKERS = 4
LEASE = 2.0
KILL_EVERY = 0.3
KILLING_FOR = 35.0  # then the survivors finish; the whole test stays under 60 s
FINISH_WITHIN = 55.0
ALICE = MutationContext.user("alice")


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
    plan: dict[str, tuple[str, int]] = {}

    async def prepare() -> None:
        async with Governance.open(f"sqlite:///{path}", registry=registry()) as gov:
            for index in range(STATES):
                await gov.states.put(f"counter:{index}", Counter(0))
            for index in range(REQUESTS):
                state_id = f"counter:{index % STATES}"
                by = index % 7 + 1
                request = await gov.submit(
                    Increment(by), state_id=state_id, context=ALICE, request_id=f"kill-{index:03d}"
                )
                assert request.status is RequestStatus.APPROVED
                plan[request.request_id] = (state_id, by)

    anyio.run(prepare)
    started = time.monotonic()
    workers = [_start(path, index) for index in range(WORKERS)]
    kills = 0
    crashed: list[int | None] = []
    try:
        victims = itertools.cycle(range(WORKERS))
        while time.monotonic() - started < FINISH_WITHIN:
            time.sleep(KILL_EVERY)
            for index, worker in enumerate(workers):
                if not worker.is_alive():  # a worker must never exit on its own
                    crashed.append(worker.exitcode)
                    workers[index] = _start(path, index)
            if _executed(path) == REQUESTS:
                break
            if time.monotonic() - started < KILLING_FOR:
                victim = next(victims)
                workers[victim].kill()
                workers[victim].join()
                kills += 1
                workers[victim] = _start(path, victim)
    finally:
        for worker in workers:
            worker.kill()
            worker.join()
            worker.close()
    elapsed = time.monotonic() - started
    assert not crashed, f"workers exited on their own with {crashed}"
    assert kills >= 3, f"only {kills} kills in {elapsed:.1f}s: the test killed too little"
    print(f"kill test: {kills} kills, all executed after {elapsed:.1f}s")

    async def verify() -> None:
        async with Governance.open(f"sqlite:///{path}", registry=registry()) as gov:
            page = await gov.requests.list(limit=REQUESTS + 1)
            assert len(page.items) == REQUESTS
            statuses = collections.Counter(r.status for r in page.items)
            assert statuses == {RequestStatus.EXECUTED: REQUESTS}, statuses
            for index in range(STATES):
                state_id = f"counter:{index}"
                mine = [by for s, by in plan.values() if s == state_id]
                current = await gov.states.get(state_id)
                assert current is not None
                assert current.state == Counter(sum(mine))
                assert current.version == str(len(mine) + 1)
                history = await gov.engine.history_store.history(state_id)
                by_request = collections.Counter(
                    e.context.metadata["governance_request_id"] for e in history.entries
                )
                assert len(history) == len(mine)
                assert set(by_request.values()) == {1}
            audit = await gov.engine.audit.entries()
            succeeded = collections.Counter(
                e.context.metadata.get("governance_request_id")
                for e in audit
                if e.outcome is AuditOutcome.SUCCEEDED
            )
            assert succeeded == dict.fromkeys(plan, 1)
            actors: set[str | None] = set()
            for request in page.items:
                logged = await gov.decisions.for_request(request.request_id)
                actors.update(d.context.actor_id for d in logged)
                assert tuple(logged) == request.decisions, request.request_id
                state_id, _ = plan[request.request_id]
                assert await gov.states.version_by_request(state_id, request.request_id) == (
                    request.resulting_state_version
                )

            # Workers on both event loops did work.
            assert {"kill-worker-asyncio", "kill-worker-trio"} <= actors, actors

    anyio.run(verify)


_ = Increment
