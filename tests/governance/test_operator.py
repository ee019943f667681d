"""What approvers and operators see: the inbox, approval slots and decision timelines."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mutator import PolicyRequirement
from mutator_governance import (
    ApprovalQuery,
    ApprovalStatus,
    DecisionCategory,
    DecisionQuery,
    LifecycleDecision,
    MutationRequest,
    RequestQuery,
    RequestStatus,
    list_decisions,
)

from .conftest import OTHER_STATE_ID, World

pytestmark = pytest.mark.anyio


def slots(page) -> list[tuple[str, str]]:
    return [(v.request.request_id, v.approval.target) for v in page.items]


async def needing(world: World, *requirements: PolicyRequirement, **submit) -> MutationRequest:
    world.rules.require(*requirements)
    request = await world.submit(**submit)
    world.rules.set()
    world.clock.advance(minutes=1)
    return request


class TestInbox:
    async def test_lists_slots_targeting_the_actor_by_id_role_or_group(self, world: World) -> None:
        """An approver sees slots naming them, one of their roles or one of their groups."""
        r1 = await needing(world, PolicyRequirement.approval("carol"))
        r2 = await needing(world, PolicyRequirement.approval(role="sre"))
        r3 = await needing(world, PolicyRequirement.approval(group="ops"))
        await needing(world, PolicyRequirement.approval("dave"))
        page = await world.gov.inbox(world.ctx("carol", roles=["sre"], groups=["ops"]))
        assert slots(page) == [
            (r1.request_id, "actor:carol"),
            (r2.request_id, "role:sre"),
            (r3.request_id, "group:ops"),
        ]
        assert slots(await world.gov.inbox(world.ctx("carol"))) == [(r1.request_id, "actor:carol")]
        assert (await world.gov.inbox(world.ctx("erin"))).items == ()

    async def test_only_the_active_step_is_offered(self, world: World) -> None:
        """A later step's slot appears only once the earlier step is done."""
        request = await needing(
            world,
            PolicyRequirement.approval("carol", step=1),
            PolicyRequirement.approval("dave", step=2),
        )
        assert (await world.gov.inbox(world.ctx("dave"))).items == ()
        await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert slots(await world.gov.inbox(world.ctx("dave"))) == [
            (request.request_id, "actor:dave")
        ]

    async def test_four_eyes_hides_own_requests_unless_allowed(self, make_world) -> None:
        """The requester never sees their own request, unless self-approval is allowed."""
        for allowed in (False, True):
            world = await make_world(allow_self_approval=allowed)
            request = await needing(world, PolicyRequirement.approval(role="sre"), actor="alice")
            page = await world.gov.inbox(world.ctx("alice", roles=["sre"]))
            expected = [(request.request_id, "role:sre")] if allowed else []
            assert slots(page) == expected

    async def test_quorum_peers_and_expired_slots_are_hidden(self, world: World) -> None:
        """After approving in a quorum the actor no longer sees its peers; expired slots go."""
        quorum = await needing(world, PolicyRequirement.approval(role="sre", required_approvals=2))
        soon = world.clock.now + timedelta(minutes=5)
        expiring = await needing(world, PolicyRequirement.approval("carol", expires_at=soon))
        carol = world.ctx("carol", roles=["sre"])
        assert [v.request.request_id for v in (await world.gov.inbox(carol)).items] == [
            quorum.request_id,
            quorum.request_id,
            expiring.request_id,
        ]
        await world.gov.approve(quorum.request_id, context=carol)
        world.clock.now = soon
        assert (await world.gov.inbox(carol)).items == ()
        dave = world.ctx("dave", roles=["sre"])
        assert slots(await world.gov.inbox(dave)) == [(quorum.request_id, "role:sre")]

    async def test_an_inbox_slot_can_be_approved_by_its_id(self, world: World) -> None:
        """What the inbox offers is exactly what approve accepts."""
        await needing(world, PolicyRequirement.approval("carol"))
        await needing(world, PolicyRequirement.approval(role="sre"))
        carol = world.ctx("carol", roles=["sre"])
        for view in (await world.gov.inbox(carol)).items:
            approved = await world.gov.approve(
                view.request.request_id, view.approval.approval_id, context=carol
            )
            assert approved.status is RequestStatus.APPROVED
        assert (await world.gov.inbox(carol)).items == ()

    async def test_inbox_pages_and_narrows(self, world: World) -> None:
        """The inbox pages with a cursor, oldest first, and takes a request query."""
        made = [
            await needing(world, PolicyRequirement.approval("carol"), state_id=state)
            for state in ("quotas:acme", OTHER_STATE_ID, "quotas:acme")
        ]
        carol = world.ctx("carol")
        first = await world.gov.inbox(carol, limit=2)
        assert [v.request.request_id for v in first.items] == [r.request_id for r in made[:2]]
        assert first.next_cursor is not None
        rest = await world.gov.inbox(carol, limit=2, cursor=first.next_cursor)
        assert [v.request.request_id for v in rest.items] == [made[2].request_id]
        assert rest.next_cursor is None
        other = await world.gov.inbox(carol, query=RequestQuery(state_ids={OTHER_STATE_ID}))
        assert [v.request.request_id for v in other.items] == [made[1].request_id]


class TestApprovalViews:
    async def test_one_view_per_matching_slot_across_pages(self, world: World) -> None:
        """Every slot comes once, by request age then step, however small the pages."""
        a = await needing(
            world,
            PolicyRequirement.approval("carol", step=1),
            PolicyRequirement.approval(role="sre", step=2),
        )
        b = await needing(world, PolicyRequirement.approval(approvers=["dave", "erin"]))
        expected = [
            (a.request_id, "actor:carol"),
            (a.request_id, "role:sre"),
            (b.request_id, "actor:dave"),
            (b.request_id, "actor:erin"),
        ]
        every = await world.gov.list_approvals()
        assert sorted(slots(every)) == sorted(expected)
        assert slots(every)[:2] == expected[:2]
        walked, cursor = [], None
        while True:
            page = await world.gov.list_approvals(limit=1, cursor=cursor)
            walked.extend(slots(page))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert walked == slots(every)

    async def test_pending_preset_drops_decided_slots_and_requests(self, world: World) -> None:
        """ApprovalQuery.pending() keeps open slots of requests still waiting for approval."""
        a = await needing(
            world, PolicyRequirement.approval("carol"), PolicyRequirement.approval("dave")
        )
        b = await needing(world, PolicyRequirement.approval("carol"))
        await world.gov.approve(a.request_id, context=world.ctx("carol"))
        await world.gov.cancel(b.request_id, context=world.ctx("alice"))
        page = await world.gov.list_approvals(ApprovalQuery.pending())
        assert slots(page) == [(a.request_id, "actor:dave")]
        decided = await world.gov.list_approvals(
            ApprovalQuery(approval_statuses={ApprovalStatus.APPROVED}, approver_ids={"carol"})
        )
        assert slots(decided) == [(a.request_id, "actor:carol")]

    async def test_bad_paging_arguments(self, world: World) -> None:
        """A request cursor is not an approval cursor; limits below 1 are refused."""
        await needing(world, PolicyRequirement.approval("carol"))
        await needing(world, PolicyRequirement.approval("carol"))
        request_cursor = (await world.gov.list(limit=1)).next_cursor
        assert request_cursor is not None
        with pytest.raises(ValueError, match="not an approval cursor"):
            await world.gov.list_approvals(cursor=request_cursor)
        with pytest.raises(ValueError, match="limit"):
            await world.gov.list_approvals(limit=0)
        with pytest.raises(ValueError, match="not a decision cursor"):
            await world.gov.list_decisions(cursor="garbage")
        with pytest.raises(TypeError, match="ApprovalQuery"):
            await world.gov.list_approvals(RequestQuery())


class TestDecisionViews:
    async def test_execution_outcomes_newest_first(self, world: World) -> None:
        """Outcome decisions of every request, newest first, paged by cursor."""
        executed = await world.submit()
        world.clock.advance(minutes=1)
        await world.gov.execute(executed.request_id)
        world.clock.advance(minutes=1)
        canceled = await world.submit()
        world.clock.advance(minutes=1)
        await world.gov.cancel(canceled.request_id, context=world.ctx("alice"))
        world.clock.advance(minutes=1)
        world.rules.deny("no")
        rejected = await world.submit()
        world.rules.set()
        outcomes = DecisionQuery.recent_execution_outcomes()
        page = await world.gov.list_decisions(outcomes)
        assert [(v.request.request_id, v.decision.code) for v in page.items] == [
            (rejected.request_id, LifecycleDecision.REJECTED),
            (canceled.request_id, LifecycleDecision.CANCELED),
            (executed.request_id, LifecycleDecision.EXECUTED),
        ]
        first = await world.gov.list_decisions(outcomes, limit=2)
        assert first.items == page.items[:2]
        rest = await world.gov.list_decisions(outcomes, cursor=first.next_cursor)
        assert rest.items == page.items[2:]
        assert rest.next_cursor is None

    async def test_decision_timeline_filters(self, world: World) -> None:
        """Decision queries combine request filters with category and actor filters."""
        mine = await world.submit(actor="alice")
        await world.submit(actor="bob", state_id=OTHER_STATE_ID)
        query = DecisionQuery(
            request=RequestQuery(actor_ids={"alice"}),
            categories={DecisionCategory.LIFECYCLE},
            actor_ids={"alice"},
        )
        page = await world.gov.list_decisions(query)
        assert [(v.request.request_id, v.decision.code) for v in page.items] == [
            (mine.request_id, LifecycleDecision.SUBMITTED)
        ]
        assert page.items[0].index == 0


class TestDecisionLogPath:
    """Over an atomic store, decision pages come from the log's newest end."""

    QUERIES = (
        DecisionQuery.recent_execution_outcomes(),
        DecisionQuery(),
        DecisionQuery(categories={DecisionCategory.LIFECYCLE}, actor_ids={"alice"}),
        DecisionQuery(request=RequestQuery(state_ids={OTHER_STATE_ID})),
        DecisionQuery.recent_version_resolutions(),
    )

    async def busy(self, world: World) -> None:
        """Many requests with same-instant decisions (ties), executions and cancels."""
        for n in range(60):
            state = OTHER_STATE_ID if n % 3 else None
            request = await world.submit(
                actor="alice" if n % 2 else "bob", **({"state_id": state} if state else {})
            )
            if n % 4 == 0:
                await world.gov.cancel(request.request_id, context=world.ctx("alice"))
            elif n % 5 == 0:
                await world.gov.execute(request.request_id)
            if n % 7 == 0:
                world.clock.advance(seconds=1)

    async def all_pages(self, fetch, limit: int) -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []
        cursor = None
        while True:
            page = await fetch(limit, cursor)
            seen.extend((v.request.request_id, v.index) for v in page.items)
            if page.next_cursor is None:
                return seen
            cursor = page.next_cursor

    @pytest.mark.parametrize("limit", [1, 7, 50])
    async def test_log_pages_equal_the_full_scan(self, world: World, limit: int) -> None:
        await self.busy(world)
        gov = world.gov
        for query in self.QUERIES:

            async def via_log(n: int, cursor: str | None, query=query):  # type: ignore[no-untyped-def]
                return await gov.list_decisions(query, limit=n, cursor=cursor)

            async def via_scan(n: int, cursor: str | None, query=query):  # type: ignore[no-untyped-def]
                return await list_decisions(gov.requests, query, limit=n, cursor=cursor)

            assert await self.all_pages(via_log, limit) == await self.all_pages(via_scan, limit)

    async def test_a_first_page_reads_only_the_requests_the_log_names(self, world: World) -> None:
        await self.busy(world)
        calls: list[int] = []
        inner = world.gov.requests.list

        async def counted(query=None, **options):  # type: ignore[no-untyped-def]
            page = await inner(query, **options)
            calls.append(len(page.items))
            return page

        world.gov.requests.list = counted  # type: ignore[method-assign]
        page = await world.gov.list_decisions(DecisionQuery(), limit=5)
        assert len(page.items) == 5
        assert len(calls) == 1
        assert calls[0] <= 64
