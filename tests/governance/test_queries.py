"""Queries: pending requests, filtered and paginated listings, and decision histories."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from mutator import PolicyRequirement
from mutator_governance import (
    ApprovalDecision,
    DecisionCategory,
    InvalidTransitionError,
    LifecycleDecision,
    MutationRequest,
    PendingReason,
    RequestQuery,
    RequestStatus,
    ResolutionDecision,
    ResolutionStrategy,
)

from .conftest import OTHER_STATE_ID, STATE_ID, T0, IncreaseQuota, World

pytestmark = pytest.mark.anyio

S = RequestStatus
P = PendingReason
MIN = timedelta(minutes=1)


@attrs.frozen
class Five:
    """Five requests submitted one minute apart (r1 cancelled later, at T0+10m)."""

    r1: MutationRequest  # T0,    alice, acme, APPROVED -> CANCELED at T0+10m
    r2: MutationRequest  # T0+1m, bob,   acme, PENDING(EXTERNAL_CHECK)
    r3: MutationRequest  # T0+2m, carol, beta, PENDING(APPROVAL)
    r4: MutationRequest  # T0+3m, alice, beta, PENDING(SCHEDULE)
    r5: MutationRequest  # T0+4m, dave,  acme, REJECTED

    @property
    def all(self) -> list[MutationRequest]:
        return [self.r1, self.r2, self.r3, self.r4, self.r5]


async def five(world: World) -> Five:
    r1 = await world.submit(IncreaseQuota("u1", 1), actor="alice")
    world.clock.advance(minutes=1)
    r2 = await world.submit(actor="bob", pending_reason=P.EXTERNAL_CHECK)
    world.clock.advance(minutes=1)
    world.rules.require(PolicyRequirement.approval("dave"))
    r3 = await world.submit(actor="carol", state_id=OTHER_STATE_ID)
    world.rules.set()
    world.clock.advance(minutes=1)
    r4 = await world.submit(actor="alice", state_id=OTHER_STATE_ID, pending_reason=P.SCHEDULE)
    world.clock.advance(minutes=1)
    world.rules.deny("no")
    r5 = await world.submit(actor="dave")
    world.rules.set()
    world.clock.now = T0 + 10 * MIN
    r1 = await world.gov.cancel(r1.request_id, context=world.ctx("alice"))
    return Five(r1, r2, r3, r4, r5)


def ids(requests) -> list[str]:
    return [r.request_id for r in requests]


async def listed(world: World, query: RequestQuery | None = None, **kwargs) -> list[str]:
    page = await world.gov.list(query, **kwargs)
    return ids(page.items)


class TestPending:
    async def test_pending_lists_pending_requests_in_creation_order(self, world: World) -> None:
        """pending() returns every PENDING request, oldest first, whatever the reason."""
        got = await five(world)
        assert ids(await world.gov.pending()) == ids([got.r2, got.r3, got.r4])

    async def test_pending_by_reason(self, world: World) -> None:
        """pending(reason) keeps only requests waiting for that reason."""
        got = await five(world)
        assert ids(await world.gov.pending(P.EXTERNAL_CHECK)) == [got.r2.request_id]
        assert ids(await world.gov.pending(P.APPROVAL)) == [got.r3.request_id]
        assert await world.gov.pending(P.QUOTA) == []

    async def test_pending_by_state(self, world: World) -> None:
        """pending(state_id=...) keeps only requests on that state, combinable with a reason."""
        got = await five(world)
        assert ids(await world.gov.pending(state_id=OTHER_STATE_ID)) == ids([got.r3, got.r4])
        assert ids(await world.gov.pending(state_id=STATE_ID)) == ids([got.r2])
        assert ids(await world.gov.pending(P.SCHEDULE, state_id=OTHER_STATE_ID)) == ids([got.r4])
        assert await world.gov.pending(P.SCHEDULE, state_id=STATE_ID) == []

    async def test_pending_reflects_later_changes(self, world: World) -> None:
        """A request that leaves PENDING disappears from pending() and returns the stored copy."""
        got = await five(world)
        approved = await world.gov.approve(got.r2.request_id, context=world.ctx("carol"))
        assert approved.status is S.APPROVED
        assert ids(await world.gov.pending()) == ids([got.r3, got.r4])
        assert (await world.gov.pending(P.SCHEDULE))[0] == got.r4


class TestListFilters:
    async def test_no_query_lists_everything_in_order(self, world: World) -> None:
        """Without filters every request is listed by created_at then id."""
        got = await five(world)
        assert await listed(world) == ids(got.all)
        assert await listed(world, RequestQuery()) == ids(got.all)

    async def test_statuses(self, world: World) -> None:
        """statuses keeps requests in any of the given statuses."""
        got = await five(world)
        assert await listed(world, RequestQuery(statuses={S.PENDING})) == ids(
            [got.r2, got.r3, got.r4]
        )
        assert await listed(world, RequestQuery(statuses=[S.CANCELED, S.REJECTED])) == ids(
            [got.r1, got.r5]
        )
        assert await listed(world, RequestQuery(statuses={S.EXECUTED})) == []

    async def test_pending_reasons(self, world: World) -> None:
        """pending_reasons keeps pending requests with any of the given reasons."""
        got = await five(world)
        query = RequestQuery(pending_reasons={P.APPROVAL, P.SCHEDULE})
        assert await listed(world, query) == ids([got.r3, got.r4])

    async def test_state_ids(self, world: World) -> None:
        """state_ids keeps requests on any of the given states."""
        got = await five(world)
        assert await listed(world, RequestQuery(state_ids={OTHER_STATE_ID})) == ids(
            [got.r3, got.r4]
        )
        both = RequestQuery(state_ids={OTHER_STATE_ID, STATE_ID})
        assert await listed(world, both) == ids(got.all)

    async def test_actor_ids(self, world: World) -> None:
        """actor_ids keeps requests submitted by any of the given actors."""
        got = await five(world)
        assert await listed(world, RequestQuery(actor_ids={"alice"})) == ids([got.r1, got.r4])
        assert await listed(world, RequestQuery(actor_ids={"bob", "dave"})) == ids([got.r2, got.r5])

    async def test_created_range_is_inclusive(self, world: World) -> None:
        """created_from/created_to include requests created exactly at the bounds."""
        got = await five(world)
        query = RequestQuery(created_from=T0 + MIN, created_to=T0 + 3 * MIN)
        assert await listed(world, query) == ids([got.r2, got.r3, got.r4])
        assert await listed(world, RequestQuery(created_to=T0)) == ids([got.r1])
        assert await listed(world, RequestQuery(created_from=T0 + 4 * MIN)) == ids([got.r5])

    async def test_updated_range_is_inclusive(self, world: World) -> None:
        """updated_from/updated_to filter on the last change, bounds included."""
        got = await five(world)
        assert await listed(world, RequestQuery(updated_from=T0 + 10 * MIN)) == ids([got.r1])
        assert await listed(world, RequestQuery(updated_to=T0 + 4 * MIN)) == ids(
            [got.r2, got.r3, got.r4, got.r5]
        )
        window = RequestQuery(updated_from=T0 + 2 * MIN, updated_to=T0 + 2 * MIN)
        assert await listed(world, window) == ids([got.r3])

    async def test_filters_combine_with_and(self, world: World) -> None:
        """Several filters must all match."""
        got = await five(world)
        query = RequestQuery(
            statuses={S.PENDING, S.CANCELED},
            actor_ids={"alice"},
            state_ids={OTHER_STATE_ID},
        )
        assert await listed(world, query) == ids([got.r4])
        none = RequestQuery(statuses={S.REJECTED}, actor_ids={"alice"})
        page = await world.gov.list(none)
        assert page.items == ()
        assert page.next_cursor is None

    async def test_listed_requests_are_the_stored_ones(self, world: World) -> None:
        """Listing returns the current stored copies (latest revision)."""
        got = await five(world)
        page = await world.gov.list(RequestQuery(statuses={S.CANCELED}))
        assert page.items == (got.r1,)
        assert page.items[0].revision == 1


class TestPagination:
    async def test_pages_of_two_concatenate_to_the_full_list(self, world: World) -> None:
        """Pages of two over five requests are 2, 2, 1 and add up to the whole ordered list."""
        got = await five(world)
        pages = []
        cursor = None
        while True:
            page = await world.gov.list(limit=2, cursor=cursor)
            pages.append(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [r for p in pages for r in ids(p)] == ids(got.all)

    async def test_exact_fit_ends_without_a_cursor(self, world: World) -> None:
        """A page that ends exactly at the last request has no next cursor."""
        await five(world)
        assert (await world.gov.list(limit=5)).next_cursor is None
        first = await world.gov.list(limit=4)
        assert first.next_cursor is not None
        last = await world.gov.list(limit=1, cursor=first.next_cursor)
        assert len(last.items) == 1
        assert last.next_cursor is None

    async def test_ties_on_created_at_are_ordered_by_id(self, world: World) -> None:
        """Requests created at the same instant are ordered by request id, also across pages."""
        for request_id in ("c", "e", "a", "d", "b"):
            await world.submit(request_id=request_id)
        assert await listed(world) == ["a", "b", "c", "d", "e"]

        first = await world.gov.list(limit=2)
        second = await world.gov.list(limit=2, cursor=first.next_cursor)
        third = await world.gov.list(limit=2, cursor=second.next_cursor)
        assert [ids(p.items) for p in (first, second, third)] == [["a", "b"], ["c", "d"], ["e"]]
        assert third.next_cursor is None

    async def test_pagination_with_a_filter(self, world: World) -> None:
        """Cursors page through filtered results only."""
        got = await five(world)
        query = RequestQuery(statuses={S.PENDING})
        first = await world.gov.list(query, limit=2)
        second = await world.gov.list(query, limit=2, cursor=first.next_cursor)
        assert ids(first.items) == ids([got.r2, got.r3])
        assert ids(second.items) == ids([got.r4])
        assert second.next_cursor is None

    async def test_cursor_survives_new_requests(self, world: World) -> None:
        """A request created after a page was read shows up on a later page, nothing repeats."""
        got = await five(world)
        first = await world.gov.list(limit=2)
        world.clock.now = T0 + 20 * MIN
        newest = await world.submit()
        rest = await world.gov.list(limit=10, cursor=first.next_cursor)
        assert ids(first.items) + ids(rest.items) == ids([*got.all, newest])

    @pytest.mark.parametrize("limit", [0, -1])
    async def test_limit_must_be_positive(self, world: World, limit: int) -> None:
        """A limit below one is a ValueError."""
        with pytest.raises(ValueError, match="limit"):
            await world.gov.list(limit=limit)

    async def test_garbage_cursor_is_refused(self, world: World) -> None:
        """A cursor that list() did not produce is a ValueError."""
        await five(world)
        with pytest.raises(ValueError, match="cursor"):
            await world.gov.list(cursor="not-a-cursor")


class TestDecisionHistory:
    async def test_history_is_oldest_first_across_operations(self, world: World) -> None:
        """decision_history lists every decision of a request in the order they were made."""
        world.rules.require(PolicyRequirement.approval("carol"))
        request = await world.submit()
        world.clock.advance(minutes=1)
        request = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        world.clock.advance(minutes=1)
        request = (
            await world.gov.resolve(request.request_id, strategy=ResolutionStrategy.REJECT_STALE)
        ).request

        history = await world.gov.decision_history(request.request_id)

        assert [d.code for d in history] == [
            LifecycleDecision.SUBMITTED,
            LifecycleDecision.PENDING,
            ApprovalDecision.REQUESTED,
            ApprovalDecision.GRANTED,
            LifecycleDecision.APPROVED,
            ResolutionDecision.VALIDATED,
        ]
        assert tuple(history) == request.decisions
        assert [d.timestamp for d in history] == [T0] * 3 + [T0 + MIN] * 2 + [T0 + 2 * MIN]

    async def test_failed_operations_add_nothing(self, world: World) -> None:
        """An operation that raises leaves the decision history as it was."""
        request = await world.submit()
        before = await world.gov.decision_history(request.request_id)
        with pytest.raises(InvalidTransitionError):
            await world.gov.expire(request.request_id, context=world.ctx("carol"))
        assert await world.gov.decision_history(request.request_id) == before


class TestRecent:
    async def test_recent_is_newest_first_across_requests(self, world: World) -> None:
        """recent() returns decisions from all requests, newest first, up to the limit."""
        first = await world.submit(pending_reason=P.EXTERNAL_CHECK)
        world.clock.advance(minutes=1)
        second = await world.submit()
        world.clock.advance(minutes=1)
        await world.gov.approve(first.request_id, context=world.ctx("carol"))

        recent = await world.gov.decisions.recent()

        assert [(r.request_id, r.decision.code) for r in recent] == [
            (first.request_id, LifecycleDecision.APPROVED),
            (second.request_id, LifecycleDecision.APPROVED),
            (second.request_id, LifecycleDecision.SUBMITTED),
            (first.request_id, LifecycleDecision.PENDING),
            (first.request_id, LifecycleDecision.SUBMITTED),
        ]
        timestamps = [r.decision.timestamp for r in recent]
        assert timestamps == sorted(timestamps, reverse=True)
        assert len(await world.gov.decisions.recent(2)) == 2
        assert await world.gov.decisions.recent(0) == []

    async def test_recent_filters_by_category(self, world: World) -> None:
        """recent(category=...) keeps only decisions of that category."""
        world.rules.require(PolicyRequirement.approval("carol"))
        request = await world.submit()
        world.clock.advance(minutes=1)
        request = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        world.clock.advance(minutes=1)
        await world.gov.resolve(request.request_id)

        approvals = await world.gov.decisions.recent(category=DecisionCategory.APPROVAL)
        assert [r.decision.code for r in approvals] == [
            ApprovalDecision.GRANTED,
            ApprovalDecision.REQUESTED,
        ]
        resolutions = await world.gov.decisions.recent(category=DecisionCategory.VERSION_RESOLUTION)
        assert [r.decision.code for r in resolutions] == [ResolutionDecision.VALIDATED]
        lifecycle = await world.gov.decisions.recent(1, category=DecisionCategory.LIFECYCLE)
        assert [r.decision.code for r in lifecycle] == [LifecycleDecision.APPROVED]

    async def test_negative_limit_is_refused(self, world: World) -> None:
        """A negative limit is a ValueError."""
        with pytest.raises(ValueError, match="limit"):
            await world.gov.decisions.recent(-1)
