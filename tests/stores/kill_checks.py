"""What a kill test checks afterwards: every request executed once, every record exact."""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

import attrs

from mutator import AuditOutcome, MutationContext
from mutator_governance import Governance, RequestStatus

from .sqlite_worker import Counter, Increment, registry


async def assert_executed_once(gov: Governance, plan: dict[str, tuple[str, int]]) -> set[str]:
    """Check the counters ``plan`` (request id -> (state id, increment)) left behind.

    Every request is EXECUTED with one EXECUTED decision, each state holds the exact sum
    at the version one past its request count, each request has one history entry and one
    SUCCEEDED audit entry, and its decision log equals its decisions. Returns the actors
    of every logged decision.
    """
    page = await gov.requests.list(limit=len(plan) + 1)
    assert len(page.items) == len(plan)
    statuses = collections.Counter(r.status for r in page.items)
    assert statuses == {RequestStatus.EXECUTED: len(plan)}, statuses
    for state_id in sorted({s for s, _ in plan.values()}):
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
    actors: set[str] = set()
    for request in page.items:
        logged = await gov.decisions.for_request(request.request_id)
        actors.update(d.context.actor_id or "" for d in logged)
        assert tuple(logged) == request.decisions, request.request_id
        executed = [d for d in request.decisions if d.code.name == "EXECUTED"]
        assert len(executed) == 1, request.request_id
        state_id, _ = plan[request.request_id]
        assert await gov.states.version_by_request(state_id, request.request_id) == (
            request.resulting_state_version
        )
    return actors


@attrs.frozen
class KillRun:
    """What :func:`kill_until_done` did: SIGKILLs sent, seconds taken, exits on their own."""

    kills: int
    elapsed: float
    crashed: list[int | None]


def kill_until_done(
    start: Callable[[int], BaseProcess],
    executed: Callable[[], int],
    *,
    requests: int,
    workers: int,
    kill_every: float,
    killing_for: float,
    finish_within: float,
) -> KillRun:
    """Run ``workers`` processes (``start(index)``); every ``kill_every`` seconds, for
    ``killing_for`` seconds, SIGKILL one in turn and start another in its place, until
    ``executed()`` reaches ``requests`` or ``finish_within`` seconds pass. A worker that
    exits on its own is restarted and reported in ``crashed``."""
    started = time.monotonic()
    running = [start(index) for index in range(workers)]
    kills = 0
    crashed: list[int | None] = []
    try:
        victims = itertools.cycle(range(workers))
        while time.monotonic() - started < finish_within:
            time.sleep(kill_every)
            for index, worker in enumerate(running):
                if not worker.is_alive():  # a worker must never exit on its own
                    crashed.append(worker.exitcode)
                    running[index] = start(index)
            if executed() == requests:
                break
            if time.monotonic() - started < killing_for:
                victim = next(victims)
                running[victim].kill()
                running[victim].join()
                kills += 1
                running[victim] = start(victim)
    finally:
        for worker in running:
            worker.kill()
            worker.join()
            worker.close()
    return KillRun(kills, time.monotonic() - started, crashed)


async def submit_increments(url: str, *, requests: int, states: int) -> dict[str, tuple[str, int]]:
    """Put ``states`` zero counters and submit ``requests`` approved increments spread over
    them at ``url``; returns the plan (request id -> (state id, increment))."""
    plan: dict[str, tuple[str, int]] = {}
    alice = MutationContext.user("alice")
    async with Governance.open(url, registry=registry()) as gov:
        for index in range(states):
            await gov.states.put(f"counter:{index}", Counter(0))
        for index in range(requests):
            state_id = f"counter:{index % states}"
            by = index % 7 + 1
            request = await gov.submit(
                Increment(by), state_id=state_id, context=alice, request_id=f"kill-{index:04d}"
            )
            assert request.status is RequestStatus.APPROVED
            plan[request.request_id] = (state_id, by)
    return plan
