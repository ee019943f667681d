"""The contract of the worker's claim seam: ready batches, wake-ups and quarantine."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import attrs
import pytest

from mutator import MutationContext

from .._commit_types import GovernedCommit, RequestWrite
from .._decisions import RequestDecision
from .._enums import LifecycleDecision, PendingReason, RequestStatus
from .._errors import StoredDataError
from .._query import RequestQuery
from .._request import ExecutionClaim, MutationRequest
from .._transitions import transition
from ..protocols import (
    GovernanceStore,
    QuarantineLog,
    ReadyQueue,
    ReadySignal,
    ReservationRelease,
)
from ._fixtures import sample_request
from ._store_under_test import StoreUnderTest, implementing

__all__ = ["ReadyQueueContract"]

_BASE = datetime(2026, 1, 1, tzinfo=UTC)
_LEASE = timedelta(seconds=60)


def _queue(store: GovernanceStore) -> ReadyQueue:
    requests = store.requests
    assert isinstance(requests, ReadyQueue), f"{type(requests).__name__} is not a ReadyQueue"
    return requests


def _ids(requests: Sequence[MutationRequest]) -> list[str]:
    return [r.request_id for r in requests]


@pytest.mark.anyio
class ReadyQueueContract(StoreUnderTest):
    """What a request store that implements :class:`~mutator_governance.ReadyQueue` must do.

    Subclass it and implement :meth:`make_store` (a new, empty store per test). Override
    :meth:`corrupt` to make one stored request unreadable, so the quarantine tests run;
    the :class:`~mutator_governance.ReadySignal` and
    :class:`~mutator_governance.ReservationRelease` tests run when the request store
    implements them.
    """

    async def _create(
        self,
        store: GovernanceStore,
        count: int,
        *,
        status: RequestStatus = RequestStatus.APPROVED,
        reason: PendingReason | None = None,
        prefix: str = "r",
        offset: int = 0,
    ) -> list[MutationRequest]:
        requests = [
            sample_request(
                f"{prefix}-{i:03d}",
                status=status,
                pending_reason=reason,
                created_at=_BASE + timedelta(seconds=offset + i),
            )
            for i in range(count)
        ]
        # Created newest first, so an index in insertion order would come out wrong.
        created: list[MutationRequest] = []
        for request in reversed(requests):
            (stored,) = await store.committer.commit(
                GovernedCommit((RequestWrite.create(request),))
            )
            created.append(stored)
        return sorted(created, key=lambda r: (r.created_at, r.request_id))

    async def _move(
        self,
        store: GovernanceStore,
        request: MutationRequest,
        status: RequestStatus,
        **changes: Any,
    ) -> MutationRequest:
        at = request.updated_at + timedelta(seconds=1)
        decision = RequestDecision(
            LifecycleDecision.CLAIMED
            if status is RequestStatus.EXECUTING
            else LifecycleDecision.RELEASED,
            MutationContext.system("contract"),
            "contract",
            at,
        )
        moved = transition(request, status, [decision], at=at, **changes)
        (stored,) = await store.committer.commit(
            GovernedCommit((RequestWrite.update(request, moved),))
        )
        return stored

    async def _reserve(
        self,
        store: GovernanceStore,
        limit: int,
        *,
        owner: str = "worker-a",
        now: datetime = _BASE,
        revalidation: bool = False,
    ) -> Sequence[MutationRequest]:
        return await _queue(store).reserve(
            owner=owner, limit=limit, now=now, until=now + _LEASE, revalidation=revalidation
        )

    # -- batches -------------------------------------------------------------------------

    async def test_reserves_ready_requests_oldest_first_up_to_the_limit(
        self, store: GovernanceStore
    ) -> None:
        created = await self._create(store, 5)
        batch = await self._reserve(store, 3)
        assert _ids(batch) == _ids(created[:3])
        assert list(batch) == created[:3]

    async def test_a_reserved_request_is_not_handed_out_again_while_reserved(
        self, store: GovernanceStore
    ) -> None:
        created = await self._create(store, 4)
        first = await self._reserve(store, 2)
        second = await self._reserve(store, 10, owner="worker-b")
        assert _ids(second) == _ids(created[2:])
        assert set(_ids(first)).isdisjoint(_ids(second))
        assert await self._reserve(store, 10, owner="worker-a") == []

    async def test_an_expired_reservation_is_handed_out_again(self, store: GovernanceStore) -> None:
        created = await self._create(store, 2)
        await self._reserve(store, 2)
        later = _BASE + _LEASE + timedelta(seconds=1)
        again = await self._reserve(store, 5, owner="worker-b", now=later)
        assert _ids(again) == _ids(created)

    async def test_only_ready_requests_are_reserved(self, store: GovernanceStore) -> None:
        approved = await self._create(store, 2)
        await self._create(store, 2, status=RequestStatus.PENDING, prefix="p", offset=10)
        await self._create(store, 1, status=RequestStatus.EXECUTED, prefix="x", offset=20)
        waiting = await self._create(
            store,
            2,
            status=RequestStatus.PENDING,
            reason=PendingReason.REVALIDATION,
            prefix="v",
            offset=30,
        )
        assert _ids(await self._reserve(store, 10)) == _ids(approved)
        later = _BASE + _LEASE * 2
        both = await self._reserve(store, 10, owner="worker-b", now=later, revalidation=True)
        assert _ids(both) == _ids(approved) + _ids(waiting)

    async def test_a_request_that_stops_being_ready_drops_out(self, store: GovernanceStore) -> None:
        created = await self._create(store, 3)
        claim = ExecutionClaim("worker-x", _BASE, _BASE + _LEASE)
        await self._move(store, created[0], RequestStatus.EXECUTING, claim=claim)
        assert _ids(await self._reserve(store, 10)) == _ids(created[1:])

    async def test_a_request_ready_again_can_be_reserved_at_once(
        self, store: GovernanceStore
    ) -> None:
        (request,) = await self._create(store, 1)
        assert _ids(await self._reserve(store, 1)) == [request.request_id]
        claim = ExecutionClaim("worker-a", _BASE, _BASE + _LEASE)
        claimed = await self._move(store, request, RequestStatus.EXECUTING, claim=claim)
        released = await self._move(store, claimed, RequestStatus.APPROVED)
        again = await self._reserve(store, 1, owner="worker-b")
        assert list(again) == [released]

    async def test_a_write_that_keeps_the_request_ready_keeps_its_reservation(
        self, store: GovernanceStore
    ) -> None:
        (request,) = await self._create(store, 1)
        assert _ids(await self._reserve(store, 1)) == [request.request_id]
        at = request.updated_at + timedelta(seconds=1)
        touched = attrs.evolve(request, metadata={"ticket": "OPS-1"}, updated_at=at)
        await store.committer.commit(GovernedCommit((RequestWrite.update(request, touched),)))
        assert await self._reserve(store, 1, owner="worker-b") == []

    async def test_concurrent_reservations_are_disjoint(self, store: GovernanceStore) -> None:
        created = await self._create(store, 24)
        batches: list[Sequence[MutationRequest]] = []

        async def take(owner: str) -> None:
            batches.append(await self._reserve(store, 5, owner=owner))

        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(take, f"worker-{n}")
        handed = [request_id for batch in batches for request_id in _ids(batch)]
        assert len(handed) == len(set(handed)) == 24
        assert sorted(handed) == sorted(_ids(created))

    async def test_a_limit_below_one_is_refused(self, store: GovernanceStore) -> None:
        with pytest.raises(ValueError, match="limit"):
            await self._reserve(store, 0)

    # -- giving reservations back --------------------------------------------------------

    async def test_a_reservation_given_back_can_be_reserved_at_once(
        self, store: GovernanceStore
    ) -> None:
        release: ReservationRelease = implementing(store.requests, ReservationRelease)
        created = await self._create(store, 3)
        assert _ids(await self._reserve(store, 3)) == _ids(created)
        back = [created[2].request_id, created[0].request_id]
        assert await release.unreserve(owner="worker-a", request_ids=back) == 2
        again = await self._reserve(store, 10, owner="worker-b")
        assert _ids(again) == [created[0].request_id, created[2].request_id]

    async def test_only_the_owners_reservations_are_given_back(
        self, store: GovernanceStore
    ) -> None:
        release: ReservationRelease = implementing(store.requests, ReservationRelease)
        (request,) = await self._create(store, 1)
        await self._reserve(store, 1)
        ids = [request.request_id]
        assert await release.unreserve(owner="worker-b", request_ids=ids) == 0
        assert await self._reserve(store, 1, owner="worker-b") == []
        assert await release.unreserve(owner="worker-a", request_ids=ids) == 1
        assert await release.unreserve(owner="worker-a", request_ids=ids) == 0
        assert _ids(await self._reserve(store, 1, owner="worker-b")) == ids

    async def test_a_reservation_taken_over_after_it_ran_out_is_not_given_back(
        self, store: GovernanceStore
    ) -> None:
        release: ReservationRelease = implementing(store.requests, ReservationRelease)
        (request,) = await self._create(store, 1)
        await self._reserve(store, 1)
        later = _BASE + _LEASE + timedelta(seconds=1)
        assert len(await self._reserve(store, 1, owner="worker-b", now=later)) == 1
        ids = [request.request_id]
        assert await release.unreserve(owner="worker-a", request_ids=ids) == 0
        assert await self._reserve(store, 1, owner="worker-c", now=later) == []

    async def test_giving_back_skips_unknown_unready_and_repeated_ids(
        self, store: GovernanceStore
    ) -> None:
        release: ReservationRelease = implementing(store.requests, ReservationRelease)
        created = await self._create(store, 2)
        await self._reserve(store, 2)
        claim = ExecutionClaim("worker-a", _BASE, _BASE + _LEASE)
        await self._move(store, created[0], RequestStatus.EXECUTING, claim=claim)
        assert await release.unreserve(owner="worker-a", request_ids=[]) == 0
        ids = ["missing", created[0].request_id, created[1].request_id, created[1].request_id]
        assert await release.unreserve(owner="worker-a", request_ids=ids) == 1
        assert _ids(await self._reserve(store, 10, owner="worker-b")) == [created[1].request_id]

    # -- quarantine ----------------------------------------------------------------------

    async def test_an_unreadable_request_is_quarantined_and_skipped(
        self, store: GovernanceStore
    ) -> None:
        created = await self._create(store, 3)
        bad = created[1].request_id
        await self.corrupt(store, bad)
        batch = await self._reserve(store, 10)
        assert _ids(batch) == [created[0].request_id, created[2].request_id]
        log = store.requests
        assert isinstance(log, QuarantineLog)
        (entry,) = await log.quarantined()
        assert entry.request_id == bad
        assert entry.error
        page = await store.requests.list(RequestQuery(), limit=10)
        assert bad not in _ids(page.items)
        with pytest.raises(StoredDataError):
            await store.requests.get(bad)

    async def test_listing_quarantines_an_unreadable_request_once(
        self, store: GovernanceStore
    ) -> None:
        created = await self._create(store, 3, status=RequestStatus.PENDING)
        bad = created[0].request_id
        await self.corrupt(store, bad)
        pending = await store.requests.pending()
        assert _ids(pending) == _ids(created[1:])
        await store.requests.list(RequestQuery(statuses={RequestStatus.PENDING}), limit=10)
        log = store.requests
        assert isinstance(log, QuarantineLog)
        assert [e.request_id for e in await log.quarantined()] == [bad]

    async def test_reading_an_unreadable_request_by_id_quarantines_it(
        self, store: GovernanceStore
    ) -> None:
        """A row no listing walks (here EXECUTED) is set aside when read by id: the worker
        meets it through a compensation's original, and an operator must see it."""
        created = await self._create(store, 2, status=RequestStatus.EXECUTED)
        bad = created[0].request_id
        await self.corrupt(store, bad)
        for _ in range(2):
            with pytest.raises(StoredDataError):
                await store.requests.get(bad)
        log = store.requests
        assert isinstance(log, QuarantineLog)
        assert [e.request_id for e in await log.quarantined()] == [bad]
        assert await store.requests.get(created[1].request_id) == created[1]

    async def test_a_released_request_is_read_again(self, store: GovernanceStore) -> None:
        created = await self._create(store, 2)
        bad = created[0].request_id
        await self.corrupt(store, bad)
        await self._reserve(store, 10)
        log = store.requests
        assert isinstance(log, QuarantineLog)
        assert await log.release(bad) is True
        assert await log.release(bad) is False
        assert await log.quarantined() == []
        later = _BASE + _LEASE * 2
        assert _ids(await self._reserve(store, 10, now=later)) == [created[1].request_id]
        assert [e.request_id for e in await log.quarantined()] == [bad]

    # -- wake-ups ------------------------------------------------------------------------

    async def test_wait_ready_times_out_without_a_ready_request(
        self, store: GovernanceStore
    ) -> None:
        signal: ReadySignal = implementing(store.requests, ReadySignal)
        await signal.wait_ready(0.05)  # whatever was pending from setup
        assert await signal.wait_ready(0.1) is False

    async def test_approving_a_request_wakes_a_waiting_worker(self, store: GovernanceStore) -> None:
        signal: ReadySignal = implementing(store.requests, ReadySignal)
        await signal.wait_ready(0.05)
        woken: list[bool] = []

        async def wait() -> None:
            woken.append(await signal.wait_ready(10.0))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.1)
                started = anyio.current_time()
                await self._create(store, 1)
        assert woken == [True]
        # Woken by the write, not by the 10 s wait running out (3 s leaves room for a
        # loaded machine: 1 s was once exceeded with the load at 6 on two cores).
        assert anyio.current_time() - started < 3.0
