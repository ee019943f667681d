"""A stopping worker leaves no reservation behind and claims nothing after its cancel.

When a worker stops it gives back (:class:`~mutator_governance.ReservationRelease`) every
reservation it holds on a request it did not start: one waiting in its buffer for a free
slot, one reserved while it was being cancelled, one waiting for a retry.
Giving back is shielded and bounded, and a failure is logged, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from mutator_governance import (
    WORKER_LOGGER,
    Backoff,
    InMemoryRequestStore,
    MutationRequest,
    RequestStatus,
    StoreUnavailableError,
    WorkerOutcome,
    WorkerOutcomeKind,
    WorkerProgress,
)
from mutator_governance import _worker as worker_module

from ._execution_support import Blocking, Gate, Stores, world_over
from .conftest import IncreaseQuota, World
from .test_worker import statuses, with_states

pytestmark = pytest.mark.anyio

S = RequestStatus
K = WorkerOutcomeKind
POLL = 0.01


async def reservable_by_another(world: World) -> list[str]:
    """The ids another worker (another owner) reserves now, reserving them."""
    queue: Any = world.gov.executor.ledger.requests
    now = world.clock()
    taken = await queue.reserve(owner="another", limit=50, now=now, until=now)
    return [r.request_id for r in taken]


class RecordingLimits(InMemoryRequestStore):
    """The in-memory store, recording the limit of every reservation."""

    def __init__(self) -> None:
        super().__init__()
        self.limits: list[int] = []

    async def reserve(self, **options: Any) -> Sequence[MutationRequest]:
        self.limits.append(options["limit"])
        return await super().reserve(**options)


class TestBuffered:
    async def test_a_reservation_waiting_for_a_slot_is_given_back(self) -> None:
        """Two slots; a and c block, b and d are quick. Once b finished the worker reserved
        c and d for its one free slot and d waited in its buffer. Before: stopping the
        worker left d reserved, so a second worker skipped it."""
        requests = RecordingLimits()
        stores = Stores(requests=requests)
        world = await world_over(stores)
        gates = {"a": Gate(), "c": Gate()}
        states = await with_states(world, 4)
        for tag, state_id in zip("abcd", states, strict=True):
            mutation = Blocking(gates[tag]) if tag in gates else IncreaseQuota("bob", 1)
            await world.submit(mutation, state_id=state_id, request_id=tag)
        progress = WorkerProgress()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: world.gov.run_worker(
                        concurrency=2, poll_interval=POLL, grace=0.05, progress=progress
                    )
                )
                await gates["c"].reached.wait()
                await anyio.sleep(0.05)  # polls with both slots busy reserve nothing
                tg.cancel_scope.cancel()

        assert requests.limits[:2] == [2, 2]
        assert progress.report.executed == 1
        assert (await statuses(world))["d"] is S.APPROVED
        for gate in gates.values():
            gate.opened.set()
        second = await world_over(stores)
        with anyio.fail_after(10):
            report = await second.gov.run_worker(until_idle=True, poll_interval=POLL)
        assert report.executed == 3
        assert set((await statuses(world)).values()) == {S.EXECUTED}


class ReservingThroughTheCancel(InMemoryRequestStore):
    """A reservation that, once ``hold`` is set, cannot be interrupted until ``go`` is set:
    what a reservation running in a worker thread (SQLite) does when the worker is
    cancelled meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.entered = anyio.Event()
        self.go = anyio.Event()
        self.unreserved: list[list[str]] = []

    async def reserve(self, **options: Any) -> Sequence[MutationRequest]:
        if self.hold:
            with anyio.CancelScope(shield=True):
                self.entered.set()
                await self.go.wait()
        return await super().reserve(**options)

    async def unreserve(self, *, owner: str, request_ids: Sequence[str]) -> int:
        self.unreserved.append(list(request_ids))
        return await super().unreserve(owner=owner, request_ids=request_ids)


class TestCancelledWhileReserving:
    async def test_a_batch_reserved_after_the_cancel_is_given_back_not_started(self) -> None:
        """Before: the worker started the batch after its cancel (executions are shielded),
        claiming and running it outside the grace period."""
        requests = ReservingThroughTheCancel()
        world = await world_over(Stores(requests=requests))
        request = await world.submit()
        requests.hold = True
        outcomes: list[WorkerOutcome] = []

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: world.gov.run_worker(
                        poll_interval=POLL, grace=5, on_outcome=outcomes.append
                    )
                )
                await requests.entered.wait()
                tg.cancel_scope.cancel()
                requests.go.set()

        assert outcomes == []
        stored = await world.gov.get(request.request_id)
        assert stored.status is S.APPROVED
        assert stored.revision == request.revision  # never claimed
        assert requests.unreserved == [[request.request_id]]
        assert await reservable_by_another(world) == [request.request_id]


class ReplyInFlightAtTheCancel(ReservingThroughTheCancel):
    """A reservation the store has made whose reply is still on the way when the worker
    is cancelled (a PostgreSQL statement that committed just before the cancel)."""

    async def reserve(self, **options: Any) -> Sequence[MutationRequest]:
        made = await InMemoryRequestStore.reserve(self, **options)
        if self.hold and made:
            self.entered.set()
            await anyio.sleep(0.2)
        return made


class TestCancelledWhileTheReplyIsOnItsWay:
    async def test_a_reservation_made_before_the_cancel_is_given_back(self) -> None:
        """Before: the cancel interrupted the wait for the reply, the worker never learnt
        what it had reserved, and the request stayed reserved until the reservation ran
        out (the lease, five minutes by default)."""
        requests = ReplyInFlightAtTheCancel()
        world = await world_over(Stores(requests=requests))
        request = await world.submit()
        requests.hold = True

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: world.gov.run_worker(poll_interval=POLL, grace=5))
                await requests.entered.wait()
                tg.cancel_scope.cancel()

        stored = await world.gov.get(request.request_id)
        assert stored.status is S.APPROVED
        assert stored.revision == request.revision  # never claimed
        assert requests.unreserved == [[request.request_id]]
        assert await reservable_by_another(world) == [request.request_id]


class TestRetriesAtShutdown:
    async def test_a_request_waiting_for_its_retry_is_given_back(self) -> None:
        """An outage made the request wait for a retry; the worker stops meanwhile. Its
        reservation (``max(lease, backoff.maximum)``) would keep it from everyone."""
        stores = Stores()
        world = await world_over(stores)
        request = await world.submit()
        real = world.gov.executor.ledger.committer.commit

        async def down(commit: Any) -> Any:
            raise StoreUnavailableError("commit outage", url="memory://")

        world.gov.executor.ledger.committer.commit = down  # type: ignore[method-assign]
        outcomes: list[WorkerOutcome] = []
        retried = anyio.Event()

        def seen(outcome: WorkerOutcome) -> None:
            outcomes.append(outcome)
            retried.set()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: world.gov.run_worker(
                        poll_interval=POLL,
                        backoff=Backoff(initial=60, maximum=60),
                        on_outcome=seen,
                    )
                )
                await retried.wait()
                tg.cancel_scope.cancel()

        world.gov.executor.ledger.committer.commit = real  # type: ignore[method-assign]
        assert [o.kind for o in outcomes] == [K.RETRIED]
        assert (await world.gov.get(request.request_id)).status is S.APPROVED
        assert await reservable_by_another(world) == [request.request_id]


class FailingRelease(ReservingThroughTheCancel):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    async def unreserve(self, *, owner: str, request_ids: Sequence[str]) -> int:
        if self.how == "raises":
            raise StoreUnavailableError("down while stopping", url="memory://")
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


class TestGivingBackFails:
    @pytest.mark.parametrize("how", ["raises", "hangs"])
    async def test_a_failed_give_back_is_logged_and_the_worker_still_stops(
        self, how: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(worker_module, "_GIVE_BACK_SECONDS", 0.1)
        requests = FailingRelease(how)
        world = await world_over(Stores(requests=requests))
        request = await world.submit()
        requests.hold = True

        with caplog.at_level(logging.WARNING, logger=WORKER_LOGGER), anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: world.gov.run_worker(poll_interval=POLL, grace=5))
                await requests.entered.wait()
                tg.cancel_scope.cancel()
                requests.go.set()

        (record,) = [r for r in caplog.records if "giving back" in r.getMessage()]
        assert record.levelno == logging.WARNING
        assert ("timed out" in record.getMessage()) is (how == "hangs")
        assert (await world.gov.get(request.request_id)).status is S.APPROVED
        # the reservation runs out on its own
        assert await reservable_by_another(world) == []
        world.clock.advance(minutes=10)
        assert await reservable_by_another(world) == [request.request_id]
