"""Compensation: an approved request that undoes an executed one, linked both ways."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mutator import ResultStatus
from mutator_governance import (
    AlreadyCompensatedError,
    CompensationKind,
    CompensationNotAllowedError,
    CompensationPlan,
    CompensationTrigger,
    ExecutionKind,
    InMemoryCommitter,
    LifecycleDecision,
    LinkType,
    MutationRequest,
    PendingReason,
    RequestStatus,
    ResolutionStrategy,
)

from ._execution_support import (
    DecreaseQuota,
    Explode,
    Probe,
    ResetQuota,
    Stores,
    codes_of,
    seed,
    world_over,
)
from .conftest import STATE_ID, World

pytestmark = pytest.mark.anyio

S = RequestStatus
L = LifecycleDecision


@pytest.fixture
async def xworld() -> World:
    """A world whose registry also knows the compensating mutations."""
    return await world_over()


async def executed(world: World, mutation: Any = None) -> MutationRequest:
    """Submit and execute a request (default: +10 for bob); returns it EXECUTED."""
    request = await world.submit(mutation)
    result = await world.gov.execute(request.request_id)
    assert result.request.status is S.EXECUTED
    return result.request


async def compensate(world: World, original: MutationRequest, **kwargs: Any) -> MutationRequest:
    return await world.gov.compensate(
        original.request_id, DecreaseQuota("bob", 10), context=world.ctx("ops"), **kwargs
    )


class TestCreation:
    async def test_compensation_request_is_approved_and_linked(self, xworld: World) -> None:
        """Compensating an executed request creates an APPROVED COMPENSATION request."""
        original = await executed(xworld)
        plan = CompensationPlan(
            original.request_id,
            kind=CompensationKind.FORWARD_CORRECTION,
            trigger=CompensationTrigger.FAILED_EXECUTION,
            batch_id="b-1",
            reason="wrong user",
        )

        comp = await compensate(xworld, original, plan=plan)

        assert comp.status is S.APPROVED
        assert comp.request_id != original.request_id
        assert comp.state_id == original.state_id
        assert comp.mutation == DecreaseQuota("bob", 10)
        assert comp.mutation_type == "quota.decrease"
        assert comp.execution.kind is ExecutionKind.COMPENSATION
        assert comp.execution.compensation == plan
        (link,) = comp.execution.links
        assert (link.request_id, link.type, link.kind) == (
            original.request_id,
            LinkType.COMPENSATES,
            ExecutionKind.COMPENSATION,
        )
        assert (link.compensation_kind, link.trigger, link.batch_id) == (
            CompensationKind.FORWARD_CORRECTION,
            CompensationTrigger.FAILED_EXECUTION,
            "b-1",
        )
        assert comp.expected_state_version == "2"
        assert codes_of(comp.decisions) == [L.SUBMITTED, L.APPROVED]
        assert comp.decisions[0].metadata["original_request_id"] == original.request_id
        assert await xworld.gov.get(comp.request_id) == comp
        assert tuple(await xworld.gov.decision_history(comp.request_id)) == comp.decisions
        assert await xworld.gov.get(original.request_id) == original

    async def test_default_plan_is_an_operator_rollback(self, xworld: World) -> None:
        """Without a plan the compensation is a ROLLBACK triggered by an operator."""
        original = await executed(xworld)

        comp = await compensate(xworld, original)

        assert comp.execution.compensation == CompensationPlan(original.request_id)
        assert comp.execution.compensation is not None
        assert comp.execution.compensation.kind is CompensationKind.ROLLBACK
        assert comp.execution.compensation.trigger is CompensationTrigger.OPERATOR_ROLLBACK

    async def test_plan_for_another_request_is_refused(self, xworld: World) -> None:
        """A plan naming a different original is a programming error; nothing is created."""
        original = await executed(xworld)

        with pytest.raises(ValueError):
            await compensate(xworld, original, plan=CompensationPlan("someone-else"))
        assert len((await xworld.gov.list()).items) == 1


class TestExecution:
    async def test_executing_compensation_links_the_original_in_one_commit(
        self, xworld: World
    ) -> None:
        """Executing the compensation applies it and links COMPENSATED_BY on the original."""
        original = await executed(xworld)
        comp = await compensate(xworld, original)

        result = await xworld.gov.execute(comp.request_id)

        assert (result.executed, result.resulting_version) == (True, "3")
        assert result.request.status is S.EXECUTED
        assert result.request.execution.kind is ExecutionKind.COMPENSATION
        current = await xworld.gov.states.get(STATE_ID)
        assert current is not None
        assert (current.state.quotas, current.version) == ({"bob": 1}, "3")
        linked = await xworld.gov.get(original.request_id)
        assert result.original == linked
        assert linked.revision == original.revision + 1
        assert linked.status is S.EXECUTED
        assert linked.decisions[: len(original.decisions)] == original.decisions
        (compensated,) = linked.decisions[len(original.decisions) :]
        assert compensated.code is L.COMPENSATED
        assert compensated.metadata["compensation_request_id"] == comp.request_id
        assert compensated.metadata["resulting_state_version"] == "3"
        (link,) = linked.execution.links
        assert (link.request_id, link.type) == (comp.request_id, LinkType.COMPENSATED_BY)
        assert tuple(await xworld.gov.decision_history(original.request_id)) == linked.decisions
        entries = (await xworld.engine.history(STATE_ID)).entries
        assert [e.context.correlation_id for e in entries] == [
            original.request_id,
            comp.request_id,
        ]
        assert entries[1].context.metadata["execution_kind"] == ExecutionKind.COMPENSATION.value

    async def test_failed_compensation_does_not_link_and_can_be_retried(
        self, xworld: World
    ) -> None:
        """A compensation whose mutation raises ends FAILED; the original stays unlinked."""
        original = await executed(xworld)
        failing = await xworld.gov.compensate(
            original.request_id, Explode(), context=xworld.ctx("ops")
        )

        result = await xworld.gov.execute(failing.request_id)

        assert result.request.status is S.FAILED
        assert result.original is None
        assert await xworld.gov.get(original.request_id) == original
        retry = await compensate(xworld, original)
        assert (await xworld.gov.execute(retry.request_id)).executed is True

    async def test_policy_blocked_compensation_does_not_link(self, xworld: World) -> None:
        """A compensation a policy denies at execution is REJECTED and links nothing."""
        original = await executed(xworld)
        comp = await compensate(xworld, original)
        xworld.rules.deny("change freeze")

        result = await xworld.gov.execute(comp.request_id)

        assert result.mutation_result is not None
        assert result.mutation_result.status is ResultStatus.POLICY_BLOCKED
        assert result.request.status is S.REJECTED
        assert await xworld.gov.get(original.request_id) == original


class TestRefusals:
    async def test_compensating_twice_is_refused(self, xworld: World) -> None:
        """A request already compensated cannot be compensated again."""
        original = await executed(xworld)
        comp = await compensate(xworld, original)
        await xworld.gov.execute(comp.request_id)

        with pytest.raises(AlreadyCompensatedError) as raised:
            await compensate(xworld, original)

        assert raised.value.compensation_id == comp.request_id
        assert raised.value.request_id == original.request_id

    async def test_compensation_in_flight_blocks_another(self, xworld: World) -> None:
        """While a compensation is only approved, a second one is refused."""
        original = await executed(xworld)
        comp = await compensate(xworld, original)

        with pytest.raises(AlreadyCompensatedError) as raised:
            await compensate(xworld, original)

        assert raised.value.compensation_id == comp.request_id
        page = await xworld.gov.list()
        assert {r.request_id for r in page.items} == {original.request_id, comp.request_id}

    async def test_canceled_compensation_allows_a_new_one(self, xworld: World) -> None:
        """A canceled compensation no longer blocks compensating the original."""
        original = await executed(xworld)
        comp = await compensate(xworld, original)
        await xworld.gov.cancel(comp.request_id, context=xworld.ctx("ops"))

        again = await compensate(xworld, original)

        assert again.status is S.APPROVED

    async def test_superseded_compensation_allows_a_new_one(self, xworld: World) -> None:
        """A superseded compensation (terminal, never runs) no longer blocks a new one."""
        original = await executed(xworld)
        comp = await compensate(xworld, original)
        await xworld.gov.supersede(comp.request_id, original.request_id, context=xworld.ctx("ops"))

        again = await compensate(xworld, original)

        assert again.status is S.APPROVED

    @pytest.mark.parametrize("status", ["approved", "pending", "rejected", "failed"])
    async def test_only_executed_requests_can_be_compensated(
        self, xworld: World, status: str
    ) -> None:
        """Compensating a request that was not executed raises CompensationNotAllowedError."""
        if status == "pending":
            request = await xworld.submit(pending_reason=PendingReason.EXTERNAL_CHECK)
        elif status == "rejected":
            xworld.rules.deny("no")
            request = await xworld.submit()
        elif status == "failed":
            request = (
                await xworld.gov.execute((await xworld.submit(Explode())).request_id)
            ).request
        else:
            request = await xworld.submit()

        with pytest.raises(CompensationNotAllowedError) as raised:
            await compensate(xworld, request)

        assert raised.value.request_id == request.request_id
        assert await xworld.gov.get(request.request_id) == request
        assert len((await xworld.gov.list()).items) == 1

    async def test_irreversible_intent_needs_override(self, xworld: World) -> None:
        """An irreversible original is refused unless allow_irreversible=True."""
        original = await executed(xworld, ResetQuota("bob"))

        with pytest.raises(CompensationNotAllowedError):
            await compensate(xworld, original)
        assert len((await xworld.gov.list()).items) == 1

        comp = await compensate(xworld, original, allow_irreversible=True)
        assert comp.status is S.APPROVED
        result = await xworld.gov.execute(comp.request_id)
        assert result.executed is True


class TestRaces:
    async def test_concurrent_compensations_never_both_apply(self) -> None:
        """Two compensations requested at the same moment never both undo the original."""
        stores = Stores()
        await seed(stores)
        arrived = 0
        both_scanned = anyio.Event()

        async def barrier(label: str, method: str, args: Any, kwargs: Any) -> None:
            # hold every caller right after its scan until both have scanned
            nonlocal arrived
            if method == "by_state":
                arrived += 1
                if arrived == 2:
                    both_scanned.set()
                await both_scanned.wait()

        world = await world_over(
            stores,
            requests=Probe(stores.requests, "requests", after=barrier),
            committer=InMemoryCommitter(
                stores.requests, stores.decisions, stores.states, stores.history, stores.audit
            ),
        )
        original = await executed(world)
        created: list[MutationRequest] = []
        refused: list[AlreadyCompensatedError] = []

        async def attempt() -> None:
            try:
                created.append(await compensate(world, original))
            except AlreadyCompensatedError as error:
                refused.append(error)

        async with anyio.create_task_group() as tg:
            tg.start_soon(attempt)
            tg.start_soon(attempt)

        applied = 0
        for comp in created:
            result = await world.gov.execute(
                comp.request_id, strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE
            )
            applied += result.executed
        assert applied == 1
        current = await world.gov.states.get(STATE_ID)
        assert current is not None
        assert current.state.quotas == {"bob": 1}
