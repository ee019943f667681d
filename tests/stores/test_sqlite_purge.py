"""Retention on SQLite: ``purge`` deletes old terminal requests with their decisions, in one
transaction, agreeing with the reference predicate ``purgeable``; ``Governance.purge`` works.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from mutator import MutationContext
from mutator_governance import (
    TERMINAL_STATUSES,
    CompensationPlan,
    ExecutionDetails,
    ExecutionKind,
    Governance,
    GovernedCommit,
    LifecycleDecision,
    MutationRequest,
    RequestDecision,
    RequestQuery,
    RequestStatus,
    RequestWrite,
    purgeable,
)
from mutator_governance.stores._sqlite import _PURGEABLE, SQLiteStore, _execute
from mutator_governance.testing import sample_registry, sample_request

from .sqlite_worker import Counter, Increment, registry

pytestmark = pytest.mark.anyio

BASE = datetime(2026, 1, 1, tzinfo=UTC)
ALICE = MutationContext.user("alice", reason="more capacity")
OPERATOR = MutationContext.user("olga", roles=["operator"])
S = RequestStatus


class Clock:
    """A settable governance clock."""

    def __init__(self) -> None:
        self.now = BASE

    def __call__(self) -> datetime:
        return self.now


def _decided(request: MutationRequest, count: int) -> MutationRequest:
    decisions = [
        RequestDecision(
            LifecycleDecision.SUBMITTED, ALICE, f"note {n}", request.created_at, sequence=n + 1
        )
        for n in range(count)
    ]
    return attrs.evolve(request, decisions=tuple(decisions))


def _population(seed: int) -> list[MutationRequest]:
    """Requests in every status, updated at scattered times, some compensating others."""
    rng = random.Random(seed)
    made: list[MutationRequest] = []
    for i in range(60):
        status = rng.choice(list(RequestStatus))
        updated = BASE + timedelta(hours=rng.randrange(0, 48))
        changes: dict[str, Any] = {}
        if made and rng.random() < 0.3:
            original = rng.choice(made).request_id
            changes["execution"] = ExecutionDetails(
                ExecutionKind.COMPENSATION, CompensationPlan(original)
            )
        request = sample_request(
            f"r-{i:02d}",
            status=status,
            created_at=BASE - timedelta(seconds=i),
            updated_at=updated,
            **changes,
        )
        made.append(_decided(request, rng.randrange(0, 4)))
    old = BASE - timedelta(days=1)
    made += [
        sample_request("kept-superseded", status=S.SUPERSEDED, updated_at=old),
        _decided(sample_request("kept-original", status=S.EXECUTED, updated_at=old), 3),
        sample_request(
            "kept-compensation",
            status=S.APPROVED,
            updated_at=old,
            execution=ExecutionDetails(
                ExecutionKind.COMPENSATION, CompensationPlan("kept-original")
            ),
        ),
    ]
    return made


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_purge_agrees_with_the_reference_predicate(tmp_path: Path, seed: int) -> None:
    everything = _population(seed)
    before = BASE + timedelta(hours=30)
    statuses = frozenset({S.EXECUTED, S.CANCELED, S.REJECTED, S.EXPIRED, S.FAILED})
    async with await SQLiteStore.open(tmp_path / "p.db", registry=sample_registry()) as store:
        for request in everything:
            await store.committer.commit(GovernedCommit((RequestWrite.create(request),)))
        remaining = {r.request_id: r for r in everything}
        batches = 0
        while True:
            expected = purgeable(remaining.values(), before=before, statuses=statuses, limit=4)
            batch = await store.requests.purge(before=before, statuses=statuses, limit=4)
            batches += 1
            assert batch.request_ids == tuple(r.request_id for r in expected)
            assert batch.decisions == sum(len(r.decisions) for r in expected)
            for request in expected:
                del remaining[request.request_id]
            if len(batch.request_ids) < 4:
                break
        assert batches > 1
        page = await store.requests.list(limit=1000)
        assert {r.request_id for r in page.items} == set(remaining)
        logged = {r.request_id for r in await store.decisions.recent(1000)}
        assert logged == {r.request_id for r in remaining.values() if r.decisions}
        purged = {r.request_id for r in everything} - set(remaining)
        assert all(
            r.status in statuses and r.updated_at < before
            for r in everything
            if r.request_id in purged
        )
        assert all(r.request_id in remaining for r in everything if not r.status.is_terminal)
        # An unchosen status, and an original whose compensation still lives, are kept.
        assert {"kept-superseded", "kept-original", "kept-compensation"} <= set(remaining)


async def test_a_bad_limit_is_refused(tmp_path: Path) -> None:
    async with await SQLiteStore.open(":memory:", registry=sample_registry()) as store:
        with pytest.raises(ValueError, match="limit"):
            await store.requests.purge(before=BASE, statuses=TERMINAL_STATUSES, limit=0)


async def test_purge_takes_quarantine_entries_with_their_rows(tmp_path: Path) -> None:
    async with await SQLiteStore.open(tmp_path / "q.db", registry=sample_registry()) as store:
        old = _decided(sample_request("old", status=S.EXECUTED, updated_at=BASE), 2)
        live = sample_request("live", status=S.EXECUTED, updated_at=BASE + timedelta(days=9))
        for request in (old, live):
            await store.committer.commit(GovernedCommit((RequestWrite.create(request),)))
        await store._db.run_write(
            lambda c: _execute(c, "UPDATE requests SET document = '[]' WHERE request_id = 'old'")
        )
        await store.requests.list()
        assert [e.request_id for e in await store.requests.quarantined()] == ["old"]
        batch = await store.requests.purge(
            before=BASE + timedelta(days=1), statuses=TERMINAL_STATUSES, limit=10
        )
        assert (batch.request_ids, batch.decisions) == (("old",), 2)
        assert await store.requests.quarantined() == []
        assert await store.requests.get("old") is None
        assert await store.decisions.for_request("old") == ()


# -- through Governance ------------------------------------------------------------------------


async def test_governance_purges_a_sqlite_store(tmp_path: Path) -> None:
    clock = Clock()
    async with Governance.open(
        f"sqlite:///{tmp_path}/gov.db", registry=registry(), clock=clock
    ) as gov:
        await gov.states.put("counter:a", Counter(0))
        executed = await gov.submit(Increment(1), state_id="counter:a", context=ALICE)
        await gov.execute(executed.request_id)
        canceled = await gov.submit(Increment(2), state_id="counter:a", context=ALICE)
        await gov.cancel(canceled.request_id, context=ALICE)
        live = await gov.submit(Increment(3), state_id="counter:a", context=ALICE)
        logged = len(await gov.decisions.for_request(executed.request_id)) + len(
            await gov.decisions.for_request(canceled.request_id)
        )
        assert (await gov.purge(older_than=timedelta(days=30))).requests == 0

        clock.now += timedelta(days=31)
        report = await gov.purge(older_than=timedelta(days=30), batch_size=1)

        assert (report.requests, report.decisions, report.batches) == (2, logged, 3)
        page = await gov.list(limit=100)
        assert [r.request_id for r in page.items] == [live.request_id]
        assert await gov.decisions.for_request(executed.request_id) == ()
        assert await gov.decisions.for_request(canceled.request_id) == ()
        assert {r.request_id for r in await gov.decisions.recent(100)} == {live.request_id}
        done = await gov.list(RequestQuery(statuses={S.EXECUTED, S.CANCELED}))
        assert done.items == ()
        # The state and its history stay: retention forgets requests, not what they did.
        current = await gov.states.get("counter:a")
        assert current is not None
        assert current.state == Counter(1)
        assert await gov.states.version_by_request("counter:a", executed.request_id) == "2"


async def test_an_original_with_a_live_compensation_is_kept(tmp_path: Path) -> None:
    clock = Clock()
    async with Governance.open(
        f"sqlite:///{tmp_path}/gov.db", registry=registry(), clock=clock
    ) as gov:
        await gov.states.put("counter:a", Counter(0))
        original = await gov.submit(Increment(5), state_id="counter:a", context=ALICE)
        await gov.execute(original.request_id)
        compensation = await gov.compensate(
            original.request_id, Increment(-5), context=OPERATOR, allow_irreversible=True
        )
        assert not compensation.status.is_terminal
        clock.now += timedelta(days=31)

        kept = await gov.purge(older_than=timedelta(days=30))
        assert kept.requests == 0
        assert await gov.requests.get(original.request_id) is not None

        await gov.execute(compensation.request_id)
        clock.now += timedelta(days=31)
        report = await gov.purge(older_than=timedelta(days=30))
        assert report.requests == 2
        assert (await gov.list()).items == ()
        assert await gov.decisions.recent(100) == []


async def test_purge_walks_the_oldest_rows_in_order(tmp_path: Path) -> None:
    path = tmp_path / "plan.db"
    async with await SQLiteStore.open(path, registry=sample_registry()):
        pass
    raw = sqlite3.connect(path)
    try:
        sql = _PURGEABLE.format(statuses="?, ?")
        plan = [
            row[3]
            for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", ["executed", "canceled", 0, 10])
        ]
    finally:
        raw.close()
    assert plan[0] == "SEARCH r USING INDEX requests_by_updated (updated_at<?)", plan
    assert any("requests_by_compensates" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
