"""Retention: ``Governance.purge`` deletes old terminal requests, never live ones."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest

from mutator import MutationContext
from mutator_governance import (
    TERMINAL_STATUSES,
    DecisionCategory,
    InMemoryDecisionHistory,
    LifecycleDecision,
    PendingReason,
    PurgeReport,
    RequestDecision,
    RequestQuery,
    RequestStatus,
)

from ._execution_support import DecreaseQuota, Gate, Probe, Stores, world_over
from .conftest import World

pytestmark = pytest.mark.anyio

S = RequestStatus
OLD = timedelta(days=30)


async def everything(world: World) -> dict[str, RequestStatus]:
    page = await world.gov.list(limit=1000)
    return {r.request_id: r.status for r in page.items}


async def aged(world: World) -> None:
    """Move the clock past the retention age."""
    world.clock.advance(days=31)


class TestPurge:
    async def test_purges_old_terminal_requests_with_their_decisions(self) -> None:
        world = await world_over()
        executed = await world.submit()
        await world.gov.execute(executed.request_id)
        canceled = await world.submit()
        await world.gov.cancel(canceled.request_id, context=world.ctx("dave"))
        live = await world.submit()  # APPROVED, never executed
        pending = await world.submit(pending_reason=PendingReason.SCHEDULE)
        logged = len(await world.gov.decisions.for_request(executed.request_id)) + len(
            await world.gov.decisions.for_request(canceled.request_id)
        )
        await aged(world)

        report = await world.gov.purge(older_than=OLD, batch_size=1)

        assert report == PurgeReport(2, logged, 3, report.cutoff)
        assert await everything(world) == {
            live.request_id: S.APPROVED,
            pending.request_id: S.PENDING,
        }
        assert await world.gov.decisions.for_request(executed.request_id) == ()
        recent = await world.gov.decisions.recent(100)
        assert {r.request_id for r in recent} == {live.request_id, pending.request_id}
        page = await world.gov.list(RequestQuery(statuses={S.EXECUTED, S.CANCELED}))
        assert page.items == ()

    async def test_recent_requests_and_unchosen_statuses_are_kept(self) -> None:
        world = await world_over()
        executed = await world.submit()
        await world.gov.execute(executed.request_id)
        canceled = await world.submit()
        await world.gov.cancel(canceled.request_id, context=world.ctx("dave"))

        assert (await world.gov.purge(older_than=OLD)).requests == 0
        await aged(world)
        report = await world.gov.purge(older_than=OLD, statuses={S.CANCELED})

        assert report.requests == 1
        assert await everything(world) == {executed.request_id: S.EXECUTED}

    async def test_an_original_with_a_live_compensation_is_kept(self) -> None:
        world = await world_over()
        original = await world.submit()
        await world.gov.execute(original.request_id)
        compensation = await world.gov.compensate(
            original.request_id, DecreaseQuota("bob", 10), context=world.ctx("ops")
        )
        await aged(world)

        assert (await world.gov.purge(older_than=OLD)).requests == 0
        await world.gov.execute(compensation.request_id)
        world.clock.advance(days=31)
        report = await world.gov.purge(older_than=OLD)

        assert report.requests == 2
        assert await everything(world) == {}

    async def test_non_terminal_statuses_and_bad_ages_are_refused(self) -> None:
        world = await world_over()
        with pytest.raises(ValueError, match="only terminal"):
            await world.gov.purge(older_than=OLD, statuses={S.APPROVED})
        with pytest.raises(ValueError, match="positive"):
            await world.gov.purge(older_than=timedelta(0))
        with pytest.raises(TypeError, match="timedelta"):
            await world.gov.purge(older_than=30)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="batch_size"):
            await world.gov.purge(older_than=OLD, batch_size=0)
        with pytest.raises(ValueError, match="batch_size must be at most 2,147,483,647"):
            await world.gov.purge(older_than=OLD, batch_size=10**20)
        assert S.EXECUTING not in TERMINAL_STATUSES

    async def test_an_age_reaching_before_year_one_purges_nothing(self) -> None:
        """``timedelta.max`` ("keep everything") raised OverflowError computing the cutoff."""
        world = await world_over()
        canceled = await world.submit()
        await world.gov.cancel(canceled.request_id, context=world.ctx("dave"))
        await aged(world)

        report = await world.gov.purge(older_than=timedelta.max)

        assert (report.requests, report.decisions) == (0, 0)
        assert await everything(world) == {canceled.request_id: S.CANCELED}

    async def test_a_purge_cancelled_after_a_batch_forgets_its_decisions(self) -> None:
        """Cancelled once a batch of requests is deleted, the purge still deletes their
        decisions: a separate decision store kept them for good (the requests were gone,
        so no later purge found them)."""
        stores = Stores()
        parked = Gate()

        async def park(label: str, method: str, args: Any, kwargs: Any) -> None:
            if method == "forget":
                await parked.pass_through()

        world = await world_over(stores, decisions=Probe(stores.decisions, "decisions", park))
        canceled = await world.submit()
        await world.gov.cancel(canceled.request_id, context=world.ctx("dave"))
        await aged(world)

        scope = anyio.CancelScope()

        async def purge() -> None:
            with scope:
                await world.gov.purge(older_than=OLD)

        async with anyio.create_task_group() as tg:
            tg.start_soon(purge)
            await parked.reached.wait()
            scope.cancel()
            parked.opened.set()

        assert await everything(world) == {}
        assert await stores.decisions.for_request(canceled.request_id) == ()

    async def test_a_worker_with_retention_purges_as_it_runs(self) -> None:
        world = await world_over()
        canceled = await world.submit()
        await world.gov.cancel(canceled.request_id, context=world.ctx("dave"))
        await aged(world)
        fresh = await world.submit()

        report = await world.gov.run_worker(until_idle=True, poll_interval=0, retention=OLD)

        assert report.executed == 1
        assert await everything(world) == {fresh.request_id: S.EXECUTED}


class TestBoundedDecisionLog:
    async def test_the_oldest_decisions_are_dropped_first(self) -> None:
        log = InMemoryDecisionHistory(max_entries=3)
        context = MutationContext.system("test")
        for request_id in ("a", "b"):
            await log.append(
                request_id,
                [
                    RequestDecision(LifecycleDecision.SUBMITTED, context, sequence=1),
                    RequestDecision(LifecycleDecision.APPROVED, context, sequence=2),
                ],
            )
        assert [d.sequence for d in await log.for_request("a")] == [2]
        assert len(await log.for_request("b")) == 2
        recent = await log.recent(10, category=DecisionCategory.LIFECYCLE)
        assert len(recent) == 3

    @pytest.mark.parametrize("bound", [0, -1, True, 1.5])
    def test_a_bad_bound_is_refused(self, bound: Any) -> None:
        with pytest.raises(ValueError, match="max_entries"):
            InMemoryDecisionHistory(max_entries=bound)
