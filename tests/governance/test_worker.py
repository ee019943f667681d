"""The governance worker: executes approved requests, survives failures, recovers claims."""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import attrs
import pytest

from mutator import Mutation, MutationIntent
from mutator_governance import (
    ExecutionClaim,
    LifecycleDecision,
    MutationRequest,
    PendingReason,
    RequestQuery,
    RequestStatus,
    ResolutionDecision,
    ResolutionStrategy,
    WorkerReport,
)

from ._execution_support import (
    Blocking,
    Explode,
    Gate,
    Probe,
    Stores,
    appended,
    codes_of,
    past_lease,
    world_over,
)
from .conftest import OTHER_STATE_ID, STATE_ID, IncreaseQuota, Quotas, World

pytestmark = pytest.mark.anyio

S = RequestStatus
L = LifecycleDecision
POLL = 0.01


class Tracker:
    """Counts how many tracked mutations run at the same moment."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.done = anyio.Event()


@attrs.frozen
class Tracked(Mutation[Quotas]):
    """Adds ``amount`` to bob while recording how many tracked applies overlap."""

    tracker: Tracker = attrs.field(eq=False)
    amount: int = 10
    intent: ClassVar[MutationIntent] = MutationIntent("quota.tracked")

    async def apply(self, state: Quotas) -> Quotas:
        self.tracker.running += 1
        self.tracker.peak = max(self.tracker.peak, self.tracker.running)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        self.tracker.running -= 1
        self.tracker.done.set()
        return Quotas({**state.quotas, "bob": state.quotas.get("bob", 0) + self.amount})


@pytest.fixture
async def xworld() -> World:
    """A world whose registry knows the worker-test mutations."""
    world = await world_over()
    world.registry.register(Tracked)
    return world


async def with_states(world: World, count: int) -> list[str]:
    """Create ``count`` extra states (bob at 1, version "1") and return their ids."""
    ids = [f"quotas:s{i}" for i in range(count)]
    for state_id in ids:
        await world.gov.states.put(state_id, Quotas({"bob": 1}))
    return ids


async def statuses(world: World) -> dict[str, RequestStatus]:
    page = await world.gov.list(RequestQuery(), limit=500)
    return {r.request_id: r.status for r in page.items}


async def quotas_of(world: World, state_id: str) -> tuple[dict[str, int], str]:
    current = await world.gov.states.get(state_id)
    assert current is not None
    return dict(current.state.quotas), current.version


class TestRunUntilIdle:
    async def test_executes_requests_on_distinct_states(self, xworld: World) -> None:
        """Every approved request on its own state is executed and counted."""
        tracker = Tracker()
        state_ids = await with_states(xworld, 6)
        for state_id in state_ids:
            await xworld.submit(Tracked(tracker), state_id=state_id)

        report = await xworld.gov.run_worker(until_idle=True, concurrency=3, poll_interval=POLL)

        assert report == WorkerReport(executed=6)
        assert set((await statuses(xworld)).values()) == {S.EXECUTED}
        for state_id in state_ids:
            assert await quotas_of(xworld, state_id) == ({"bob": 11}, "2")
        assert tracker.peak == 3

    async def test_revalidating_worker_executes_all_requests_on_one_state(
        self, world: World
    ) -> None:
        """Under REVALIDATE_ON_LATEST_STATE each request on one state is applied in turn."""
        for _ in range(5):
            await world.submit(IncreaseQuota("bob", 10))

        report = await world.gov.run_worker(
            until_idle=True,
            concurrency=3,
            poll_interval=POLL,
            strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE,
        )

        assert report == WorkerReport(executed=5)
        assert set((await statuses(world)).values()) == {S.EXECUTED}
        assert await quotas_of(world, STATE_ID) == ({"bob": 51}, "6")
        assert len((await world.engine.history(STATE_ID)).entries) == 5

    async def test_reject_stale_worker_applies_one_request_per_state(self, world: World) -> None:
        """Under REJECT_STALE only one of several requests on one state runs; the rest go stale."""
        ids = [(await world.submit(IncreaseQuota("bob", 10))).request_id for _ in range(4)]

        report = await world.gov.run_worker(until_idle=True, concurrency=3, poll_interval=POLL)

        assert report == WorkerReport(executed=1, not_executed=3)
        found = await statuses(world)
        assert sorted(found[i].name for i in ids) == [
            "EXECUTED",
            "REJECTED",
            "REJECTED",
            "REJECTED",
        ]
        for rid in ids:
            request = await world.gov.get(rid)
            if request.status is S.REJECTED:
                assert request.decisions[-1].code is ResolutionDecision.REJECTED_AS_STALE
        assert await quotas_of(world, STATE_ID) == ({"bob": 11}, "2")

    async def test_failing_request_is_counted_and_does_not_stop_others(self, xworld: World) -> None:
        """A request whose mutation raises is counted failed; the others still execute."""
        failing = await xworld.submit(Explode())
        good = await xworld.submit(IncreaseQuota("eve", 1), state_id=OTHER_STATE_ID)
        third_state = (await with_states(xworld, 1))[0]
        third = await xworld.submit(state_id=third_state)

        report = await xworld.gov.run_worker(until_idle=True, concurrency=3, poll_interval=POLL)

        assert report == WorkerReport(executed=2, failed=1)
        found = await statuses(xworld)
        assert found[failing.request_id] is S.FAILED
        assert found[good.request_id] is found[third.request_id] is S.EXECUTED
        assert await quotas_of(xworld, STATE_ID) == ({"bob": 1}, "1")
        assert await quotas_of(xworld, OTHER_STATE_ID) == ({"eve": 6}, "2")

    async def test_idle_worker_returns_an_empty_report(self, world: World) -> None:
        """With nothing approved the worker returns at once and reports nothing."""
        await world.submit(pending_reason=PendingReason.EXTERNAL_CHECK)

        report = await world.gov.run_worker(until_idle=True, poll_interval=POLL)

        assert report == WorkerReport()

    async def test_invalid_concurrency_is_refused(self, world: World) -> None:
        """concurrency below one is a configuration error."""
        with pytest.raises(ValueError):
            await world.gov.run_worker(until_idle=True, concurrency=0)

    async def test_request_that_keeps_erroring_does_not_stall_the_worker(
        self, world: World
    ) -> None:
        """A request that cannot be executed is counted once; until_idle still returns."""
        request = await world.submit()
        await world.force(request, state_id="quotas:gone")

        with anyio.move_on_after(1) as scope:
            report = await world.gov.run_worker(until_idle=True, poll_interval=POLL)

        assert not scope.cancelled_caught
        assert report.errors == 1


class TestCancellation:
    async def test_cancelled_worker_leaves_nothing_executing(self, xworld: World) -> None:
        """Cancelling the worker's task group releases in-flight claims and stops cleanly."""
        gate = Gate()
        blocked = await xworld.submit(Blocking(gate))
        other = await xworld.submit(IncreaseQuota("eve", 1), state_id=OTHER_STATE_ID)

        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: xworld.gov.run_worker(concurrency=2, poll_interval=POLL, grace=0.05)
            )
            await gate.reached.wait()
            tg.cancel_scope.cancel()

        found = await statuses(xworld)
        assert S.EXECUTING not in found.values()
        released = await xworld.gov.get(blocked.request_id)
        assert released.status is S.APPROVED
        assert codes_of(released.decisions)[-2:] == [L.CLAIMED, L.RELEASED]
        assert await quotas_of(xworld, STATE_ID) == ({"bob": 1}, "1")
        ran = found[other.request_id] is S.EXECUTED
        expected_other = ({"eve": 6}, "2") if ran else ({"eve": 5}, "1")
        assert await quotas_of(xworld, OTHER_STATE_ID) == expected_other

        gate.opened.set()
        report = await xworld.gov.run_worker(until_idle=True, poll_interval=POLL)
        assert report.executed >= 1
        assert set((await statuses(xworld)).values()) == {S.EXECUTED}

    async def test_running_worker_picks_up_newly_approved_requests(self) -> None:
        """A long-running worker executes a request approved after it started."""
        stores = Stores()
        executed = anyio.Event()

        async def watch(label: str, method: str, args: Any, kwargs: Any) -> None:
            if method == "append" and L.EXECUTED in codes_of(appended(args)):
                executed.set()

        world = await world_over(
            stores, decisions=Probe(stores.decisions, "decisions", after=watch)
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: world.gov.run_worker(poll_interval=POLL))
            await anyio.lowlevel.checkpoint()
            request = await world.submit()
            await executed.wait()
            tg.cancel_scope.cancel()

        assert (await world.gov.get(request.request_id)).status is S.EXECUTED
        assert await quotas_of(world, STATE_ID) == ({"bob": 11}, "2")


def counted_reserves(world: World, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the time of every ready-requests query the worker makes (``reserve``)."""
    store = world.gov.requests
    reserve = store.reserve  # type: ignore[attr-defined]
    calls: list[float] = []

    async def counting(**kwargs: Any) -> Any:
        calls.append(anyio.current_time())
        return await reserve(**kwargs)

    monkeypatch.setattr(store, "reserve", counting)
    return calls


def reads_between(calls: list[float], start: float, end: float) -> int:
    return sum(1 for at in calls if start <= at < end)


class TestPollIntervalZero:
    """``poll_interval=0`` is accepted, but a waiting worker still waits a floor (10 ms)."""

    async def test_an_idle_worker_with_poll_interval_zero_does_not_spin(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Idle for 0.3 s, it queries the store about 30 times, not thousands, and still
        executes a request approved afterwards."""
        calls = counted_reserves(world, monkeypatch)
        executed = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: world.gov.run_worker(poll_interval=0, on_outcome=lambda _: executed.set())
            )
            start = anyio.current_time()
            await anyio.sleep(0.3)
            idle_reads = reads_between(calls, start, anyio.current_time())
            request = await world.submit()
            with anyio.fail_after(5):
                await executed.wait()
            tg.cancel_scope.cancel()

        assert 1 <= idle_reads <= 60, idle_reads
        assert (await world.gov.get(request.request_id)).status is S.EXECUTED

    async def test_a_worker_waiting_on_an_execution_with_poll_interval_zero_does_not_spin(
        self, xworld: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With a free slot and one execution in flight, an until-idle worker polls at the
        floor too, and the execution's end still wakes it at once."""
        gate = Gate()
        await xworld.submit(Blocking(gate))
        calls = counted_reserves(xworld, monkeypatch)
        reports: list[WorkerReport] = []

        async def work() -> None:
            reports.append(await xworld.gov.run_worker(until_idle=True, poll_interval=0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            await gate.reached.wait()
            start = anyio.current_time()
            await anyio.sleep(0.3)
            waiting_reads = reads_between(calls, start, anyio.current_time())
            gate.opened.set()

        assert reports == [WorkerReport(executed=1)]
        assert 1 <= waiting_reads <= 60, waiting_reads

    async def test_a_ready_signal_that_cannot_wait_is_not_asked_in_a_busy_loop(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A store's signal whose listening connection is down returns at once; with a
        poll interval of 1 ms the worker asked it (and the store reconnected) every
        millisecond. It now pauses at least 50 ms."""
        asked: list[float] = []

        async def wait_ready(seconds: float) -> bool:
            asked.append(anyio.current_time())
            return False

        monkeypatch.setattr(world.gov.requests, "wait_ready", wait_ready, raising=False)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: world.gov.run_worker(poll_interval=0.001))
            await anyio.sleep(0.3)
            tg.cancel_scope.cancel()

        assert 1 <= len(asked) <= 10, len(asked)


async def claimed(world: World, request: MutationRequest) -> MutationRequest:
    """Claim ``request`` like an executor that then crashes (lease from the test clock)."""
    executor = world.gov.executor
    stored, _ = await executor._claim(
        request, executor._new_claim(request), world.ctx("crashed-executor")
    )
    return stored


class TestRecovery:
    async def test_expired_claim_is_released(self, world: World) -> None:
        """A claim whose lease ran out goes back to APPROVED with a RELEASED decision."""
        request = await claimed(world, await world.submit())
        assert request.status is S.EXECUTING

        early = await world.gov.recover_stale_claims(now=world.clock.now)
        assert early.released == early.finished == ()
        assert await world.gov.get(request.request_id) == request

        sweep = await world.gov.recover_stale_claims(now=past_lease(world.clock))

        (released,) = sweep.released
        assert sweep.finished == ()
        assert released == await world.gov.get(request.request_id)
        assert (released.status, released.claim) == (S.APPROVED, None)
        assert codes_of(released.decisions)[-2:] == [L.CLAIMED, L.RELEASED]
        assert tuple(await world.gov.decision_history(request.request_id)) == released.decisions
        assert (await world.gov.execute(request.request_id)).executed is True

    async def test_expired_revalidating_claim_returns_to_revalidation(self, world: World) -> None:
        """A revalidating claim is released to PENDING(REVALIDATION), not to APPROVED."""
        request = await world.submit()
        claim = ExecutionClaim("gone", world.clock.now, world.clock.now, revalidating=True)
        stuck = await world.force(request, status=S.EXECUTING, claim=claim)

        sweep = await world.gov.recover_stale_claims(now=past_lease(world.clock))

        (released,) = sweep.released
        assert released.request_id == stuck.request_id
        assert (released.status, released.pending_reason) == (S.PENDING, PendingReason.REVALIDATION)
        assert released.claim is None

    async def test_claim_whose_state_landed_is_finished(self, world: World) -> None:
        """When the state holds the version the request produced, recovery marks it EXECUTED."""
        request = await claimed(world, await world.submit())
        version = await world.gov.states.put(
            STATE_ID, Quotas({"bob": 11}), expected_version="1", request_id=request.request_id
        )

        sweep = await world.gov.recover_stale_claims(now=past_lease(world.clock))

        (finished,) = sweep.finished
        assert sweep.released == ()
        assert finished.status is S.EXECUTED
        assert finished.resulting_state_version == version == "2"
        assert finished.decisions[-1].code is L.EXECUTED
        assert finished.decisions[-1].metadata["recovered"] is True
        assert await quotas_of(world, STATE_ID) == ({"bob": 11}, "2")

    async def test_worker_recovers_and_executes_a_crashed_claim(self, world: World) -> None:
        """A worker started after the lease expired recovers the claim and executes it once."""
        request = await claimed(world, await world.submit())
        world.clock.now = past_lease(world.clock)

        report = await world.gov.run_worker(until_idle=True, poll_interval=POLL)

        assert report == WorkerReport(executed=1, recovered=1)
        final = await world.gov.get(request.request_id)
        assert final.status is S.EXECUTED
        assert codes_of(final.decisions).count(L.RELEASED) == 1
        assert await quotas_of(world, STATE_ID) == ({"bob": 11}, "2")

    async def test_worker_leaves_a_live_claim_alone(self, world: World) -> None:
        """A claim still within its lease is neither recovered nor executed by the worker."""
        request = await claimed(world, await world.submit())

        report = await world.gov.run_worker(until_idle=True, poll_interval=POLL)

        assert report == WorkerReport()
        assert await world.gov.get(request.request_id) == request
