"""Governed execution end to end: approved request -> resolution -> execution -> decision."""

from __future__ import annotations

from typing import Any

import anyio
import attrs
import pytest

from mutator import (
    AuditOutcome,
    ConcurrencyError,
    EngineOptions,
    InMemoryAuditSink,
    MutationContext,
    MutationMode,
    PolicyRequirement,
    ResultStatus,
)
from mutator_governance import (
    ApprovalDecision,
    ApprovalStatus,
    Governance,
    GovernedExecutionResult,
    InMemoryCommitter,
    LifecycleDecision,
    PendingReason,
    RequestClaimedError,
    RequestConcurrencyError,
    RequestNotExecutableError,
    RequestStatus,
    ResolutionDecision,
    ResolutionOutcome,
    ResolutionStrategy,
)

from ._execution_support import (
    Blocking,
    Explode,
    Gate,
    NegativeQuota,
    Probe,
    SimulateDiffers,
    Sleepy,
    Stores,
    YieldingIncrease,
    checkpoint_hook,
    codes_of,
    make_governance,
    seed,
    world_over,
)
from .conftest import STATE_ID, Quotas, World

pytestmark = pytest.mark.anyio

S = RequestStatus
L = LifecycleDecision
R = ResolutionDecision
OUT = ResolutionOutcome
RS = ResolutionStrategy


@pytest.fixture
async def xworld() -> World:
    """A world whose registry also knows the execution-test mutations."""
    return await world_over()


async def move_state(world: World, quotas: dict[str, int]) -> str:
    """Someone else writes the governed state (compare-and-set on its current version)."""
    current = await world.gov.states.get(STATE_ID)
    assert current is not None
    return await world.gov.states.put(STATE_ID, Quotas(quotas), expected_version=current.version)


async def state_of(world: World) -> tuple[dict[str, int], str]:
    current = await world.gov.states.get(STATE_ID)
    assert current is not None
    return dict(current.state.quotas), current.version


async def history_entries(world: World) -> tuple[Any, ...]:
    return (await world.engine.history(STATE_ID)).entries


def audit_entries(world: World) -> tuple[Any, ...]:
    return world.engine.audit.all()  # type: ignore[attr-defined, no-any-return]


async def assert_recorded(world: World, result: GovernedExecutionResult) -> None:
    """The stored request is the one returned and its decision log matches it."""
    stored = await world.gov.get(result.request.request_id)
    assert stored == result.request
    assert tuple(await world.gov.decision_history(stored.request_id)) == stored.decisions


def added(before: Any, result: GovernedExecutionResult) -> list[Any]:
    """Decision codes the execution appended to the request."""
    return codes_of(result.request.decisions[len(before.decisions) :])


def assert_correlated(entries: Any, request_id: str) -> None:
    """Every entry carries the request id as correlation id and governance metadata."""
    assert entries
    for entry in entries:
        assert entry.context.correlation_id == request_id
        assert entry.context.metadata["governance_request_id"] == request_id
        assert entry.context.mode is MutationMode.COMMIT


async def assert_executed(
    world: World, result: GovernedExecutionResult, *, version: str, quotas: dict[str, int]
) -> None:
    """A successful governed execution, checked in every store it touches."""
    request = result.request
    rid = request.request_id
    assert result.executed is True
    assert result.resulting_version == version
    assert result.mutation_result is not None
    assert result.mutation_result.status is ResultStatus.SUCCEEDED
    assert result.mutation_result.mode is MutationMode.COMMIT
    assert result.resolution is not None
    assert result.resolution.request == request
    assert request.status is S.EXECUTED
    assert request.resulting_state_version == version
    assert request.executed_at == world.clock.now
    assert request.claim is None
    executed = request.decisions[-1]
    assert executed.code is L.EXECUTED
    assert executed.metadata["resulting_state_version"] == version
    assert executed.metadata["execution_id"] == result.mutation_result.execution_id
    await assert_recorded(world, result)
    assert await state_of(world) == (quotas, version)
    assert await world.gov.states.version_by_request(STATE_ID, rid) == version
    entries = await history_entries(world)
    assert [e.execution_id for e in entries] == [result.mutation_result.execution_id]
    assert_correlated(entries, rid)
    assert_correlated(audit_entries(world), rid)


async def assert_untouched(world: World, before: Any, *, version: str = "1") -> None:
    """Nothing about the request or the state changed."""
    assert await world.gov.get(before.request_id) == before
    assert (await state_of(world))[1] == version
    assert await world.gov.states.version_by_request(STATE_ID, before.request_id) is None
    assert await history_entries(world) == ()


class TestMatchingVersion:
    @pytest.mark.parametrize("strategy", list(RS))
    async def test_approved_request_executes_once_under_every_strategy(
        self, world: World, strategy: ResolutionStrategy
    ) -> None:
        """With the state still at the approved version every strategy executes and commits."""
        request = await world.submit()
        world.clock.advance(minutes=1)

        result = await world.gov.execute(request.request_id, strategy=strategy)

        assert result.resolution is not None
        assert result.resolution.outcome is OUT.EXECUTE_APPROVED_VERSION
        assert result.resolution.is_stale is False
        assert (result.resolution.expected_version, result.resolution.current_version) == (
            "1",
            "1",
        )
        assert added(request, result) == [L.CLAIMED, R.VALIDATED, L.EXECUTED]
        assert result.request.revision == request.revision + 2
        await assert_executed(world, result, version="2", quotas={"bob": 11})

    async def test_executor_context_is_recorded_as_the_cause(self, world: World) -> None:
        """The executor's context stamps the decisions; its correlation id becomes the cause."""
        request = await world.submit()
        executor = attrs.evolve(world.ctx("ops"), correlation_id="ticket-7")

        result = await world.gov.execute(request.request_id, context=executor)

        new = result.request.decisions[len(request.decisions) :]
        assert {d.context.actor_id for d in new} == {"ops"}
        (entry,) = await history_entries(world)
        assert entry.context.causation_id == "ticket-7"
        assert entry.context.actor_id == "alice"
        assert entry.context.metadata["executed_by"] == "ops"


class TestStaleVersion:
    async def test_reject_stale_rejects_without_running(self, world: World) -> None:
        """REJECT_STALE ends a stale request REJECTED; the mutation never runs."""
        request = await world.submit()
        await move_state(world, {"bob": 100})

        result = await world.gov.execute(request.request_id, strategy=RS.REJECT_STALE)

        assert result.resolution is not None
        assert result.resolution.outcome is OUT.REJECTED_AS_STALE
        assert result.resolution.is_stale is True
        assert (result.resolution.expected_version, result.resolution.current_version) == (
            "1",
            "2",
        )
        assert (result.executed, result.mutation_result, result.resulting_version) == (
            False,
            None,
            None,
        )
        assert result.request.status is S.REJECTED
        assert result.request.resulting_state_version is None
        assert added(request, result) == [L.CLAIMED, R.REJECTED_AS_STALE]
        await assert_recorded(world, result)
        assert await state_of(world) == ({"bob": 100}, "2")
        assert await history_entries(world) == ()
        assert audit_entries(world) == ()

    async def test_require_renewed_approval_sends_back_to_approval(self, world: World) -> None:
        """REQUIRE_RENEWED_APPROVAL sends a stale request back to PENDING(APPROVAL)."""
        request = await world.submit()
        await move_state(world, {"bob": 100})

        result = await world.gov.execute(request.request_id, strategy=RS.REQUIRE_RENEWED_APPROVAL)

        assert result.resolution is not None
        assert result.resolution.outcome is OUT.REQUIRES_RENEWED_APPROVAL
        assert (result.executed, result.mutation_result, result.resulting_version) == (
            False,
            None,
            None,
        )
        assert (result.request.status, result.request.pending_reason) == (
            S.PENDING,
            PendingReason.APPROVAL,
        )
        assert result.request.expected_state_version == "2"
        assert result.request.approval_round == 2
        assert result.request.claim is None
        assert added(request, result) == [
            L.CLAIMED,
            R.RENEWED_APPROVAL_REQUIRED,
        ]
        await assert_recorded(world, result)
        assert await state_of(world) == ({"bob": 100}, "2")
        assert await history_entries(world) == ()

    async def test_revalidate_executes_on_the_latest_state(self, world: World) -> None:
        """REVALIDATE_ON_LATEST_STATE runs the mutation against the state as it is now."""
        request = await world.submit()
        await move_state(world, {"bob": 100})

        result = await world.gov.execute(request.request_id, strategy=RS.REVALIDATE_ON_LATEST_STATE)

        assert result.resolution is not None
        assert result.resolution.outcome is OUT.REVALIDATE_ON_LATEST_STATE
        assert result.resolution.is_stale is True
        assert result.request.expected_state_version == "2"
        assert added(request, result) == [
            L.CLAIMED,
            R.REVALIDATION_REQUIRED,
            L.EXECUTED,
        ]
        await assert_executed(world, result, version="3", quotas={"bob": 110})

    async def test_pending_revalidation_executes_under_revalidate(self, world: World) -> None:
        """A request resolved to PENDING(REVALIDATION) is executed by REVALIDATE_ON_LATEST_STATE."""
        request = await world.submit()
        await move_state(world, {"bob": 100})
        resolved = await world.gov.resolve(
            request.request_id, strategy=RS.REVALIDATE_ON_LATEST_STATE
        )
        assert resolved.request.pending_reason is PendingReason.REVALIDATION

        result = await world.gov.execute(request.request_id, strategy=RS.REVALIDATE_ON_LATEST_STATE)

        assert result.resolution is not None
        assert result.resolution.outcome is OUT.EXECUTE_APPROVED_VERSION
        assert codes_of(result.request.decisions)[-3:] == [L.CLAIMED, R.VALIDATED, L.EXECUTED]
        await assert_executed(world, result, version="3", quotas={"bob": 110})


class TestCommitMode:
    async def test_simulate_context_still_commits(self, xworld: World) -> None:
        """A request submitted in SIMULATE mode is applied and committed, never simulated."""
        context = attrs.evolve(xworld.ctx("alice"), mode=MutationMode.SIMULATE)
        request = await xworld.gov.submit(SimulateDiffers(), state_id=STATE_ID, context=context)
        assert request.context.mode is MutationMode.SIMULATE

        result = await xworld.gov.execute(request.request_id)

        await assert_executed(xworld, result, version="2", quotas={"bob": 11})
        assert [e.mode for e in audit_entries(xworld)] == [MutationMode.COMMIT]


class TestAuditSink:
    async def test_governed_executions_are_audited_to_the_governance_sink(self) -> None:
        """Governance(audit=...) receives the audit entries of governed executions."""
        sink = InMemoryAuditSink()
        world = await world_over(audit=sink)
        request = await world.submit()

        result = await world.gov.execute(request.request_id)

        assert result.executed
        assert [e.correlation_id for e in sink.all()] == [request.request_id]
        assert audit_entries(world) == ()

    async def test_default_sink_is_the_engines(self, xworld: World) -> None:
        """Without audit=..., governed executions are audited to the engine's own sink."""
        assert xworld.gov.audit is xworld.engine.audit


class TestOutcomes:
    async def test_policy_denial_at_execution_rejects(self, world: World) -> None:
        """A policy that denies at execution time ends the request REJECTED, state untouched."""
        request = await world.submit()
        world.rules.deny("frozen account")

        result = await world.gov.execute(request.request_id)

        assert result.executed is False
        assert result.mutation_result is not None
        assert result.mutation_result.status is ResultStatus.POLICY_BLOCKED
        assert result.request.status is S.REJECTED
        decision = result.request.decisions[-1]
        assert decision.code is L.REJECTED
        assert "frozen account" in (decision.reason or "")
        assert decision.metadata["result_status"] == ResultStatus.POLICY_BLOCKED.value
        assert added(request, result) == [L.CLAIMED, R.VALIDATED, L.REJECTED]
        await assert_recorded(world, result)
        assert await state_of(world) == ({"bob": 1}, "1")
        assert await history_entries(world) == ()
        (audit,) = audit_entries(world)
        assert audit.outcome is AuditOutcome.POLICY_BLOCKED
        assert_correlated([audit], request.request_id)

    async def test_validation_failure_rejects(self, xworld: World) -> None:
        """A mutation its own validation refuses ends REJECTED with the validation message."""
        request = await xworld.submit(NegativeQuota())

        result = await xworld.gov.execute(request.request_id)

        assert result.executed is False
        assert result.mutation_result is not None
        assert result.mutation_result.status is ResultStatus.VALIDATION_FAILED
        assert result.request.status is S.REJECTED
        decision = result.request.decisions[-1]
        assert decision.code is L.REJECTED
        assert "must not be negative" in (decision.reason or "")
        assert decision.metadata["result_status"] == ResultStatus.VALIDATION_FAILED.value
        await assert_recorded(xworld, result)
        assert await state_of(xworld) == ({"bob": 1}, "1")
        assert await history_entries(xworld) == ()

    async def test_raising_mutation_fails(self, xworld: World) -> None:
        """A mutation that raises ends FAILED (not REJECTED) with the failure type recorded."""
        request = await xworld.submit(Explode("kaboom"))

        result = await xworld.gov.execute(request.request_id)

        assert (result.executed, result.mutation_result, result.resulting_version) == (
            False,
            None,
            None,
        )
        assert result.request.status is S.FAILED
        assert added(request, result) == [L.CLAIMED, R.VALIDATED, L.FAILED]
        failed = result.request.decisions[-1]
        assert failed.metadata["failure_type"] == "MutationFailedError"
        assert "kaboom" in (failed.reason or "")
        (audit,) = audit_entries(xworld)
        assert audit.outcome is AuditOutcome.FAILED
        assert failed.metadata["execution_id"] == audit.execution_id
        assert_correlated([audit], request.request_id)
        await assert_recorded(xworld, result)
        assert await state_of(xworld) == ({"bob": 1}, "1")
        assert await history_entries(xworld) == ()

    async def test_timed_out_mutation_fails(self) -> None:
        """An async apply running past execution_timeout ends FAILED as a timeout."""
        world = await world_over(options=EngineOptions(execution_timeout=0.05))
        request = await world.submit(Sleepy(30.0))

        result = await world.gov.execute(request.request_id)

        assert result.executed is False
        assert result.request.status is S.FAILED
        failed = result.request.decisions[-1]
        assert failed.code is L.FAILED
        assert failed.metadata["failure_type"] == "ExecutionTimeoutError"
        (audit,) = audit_entries(world)
        assert audit.outcome is AuditOutcome.TIMED_OUT
        await assert_recorded(world, result)
        assert await state_of(world) == ({"bob": 1}, "1")

    async def test_failed_request_never_runs_again(self, xworld: World) -> None:
        """A FAILED request is terminal: executing it again raises and changes nothing."""
        request = await xworld.submit(Explode())
        failed = (await xworld.gov.execute(request.request_id)).request

        with pytest.raises(RequestNotExecutableError):
            await xworld.gov.execute(request.request_id)
        assert await xworld.gov.get(request.request_id) == failed
        assert len(audit_entries(xworld)) == 1

    async def test_state_moved_during_execution_is_not_overwritten(self, xworld: World) -> None:
        """A concurrent state write during the mutation wins; the request is released, not lost."""
        gate = Gate()
        request = await xworld.submit(Blocking(gate))
        outcome: dict[str, Any] = {}

        async def run() -> None:
            try:
                await xworld.gov.execute(request.request_id)
            except ConcurrencyError as error:
                outcome["error"] = error

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await gate.reached.wait()
            await move_state(xworld, {"bob": 100})
            gate.opened.set()

        assert isinstance(outcome.get("error"), ConcurrencyError)
        released = await xworld.gov.get(request.request_id)
        assert released.status is S.APPROVED
        assert codes_of(released.decisions)[-2:] == [L.CLAIMED, L.RELEASED]
        assert await state_of(xworld) == ({"bob": 100}, "2")
        assert await xworld.gov.states.version_by_request(STATE_ID, request.request_id) is None
        assert await history_entries(xworld) == ()


class TestNotExecutable:
    async def pending_approval(self, world: World) -> Any:
        world.rules.require(PolicyRequirement.approval("carol"))
        return await world.submit()

    async def rejected(self, world: World) -> Any:
        request = await world.submit()
        return await world.gov.reject(request.request_id, context=world.ctx("carol"))

    async def canceled(self, world: World) -> Any:
        request = await world.submit()
        return await world.gov.cancel(request.request_id, context=world.ctx("alice"))

    async def executed(self, world: World) -> Any:
        request = await world.submit()
        return (await world.gov.execute(request.request_id)).request

    async def revalidation(self, world: World) -> Any:
        request = await world.submit()
        await move_state(world, {"bob": 100})
        resolved = await world.gov.resolve(
            request.request_id, strategy=RS.REVALIDATE_ON_LATEST_STATE
        )
        return resolved.request

    @pytest.mark.parametrize(
        ("make", "strategy", "status"),
        [
            ("pending_approval", RS.REJECT_STALE, S.PENDING),
            ("pending_approval", RS.REVALIDATE_ON_LATEST_STATE, S.PENDING),
            ("rejected", RS.REJECT_STALE, S.REJECTED),
            ("canceled", RS.REJECT_STALE, S.CANCELED),
            ("executed", RS.REJECT_STALE, S.EXECUTED),
            ("executed", RS.REVALIDATE_ON_LATEST_STATE, S.EXECUTED),
            ("revalidation", RS.REJECT_STALE, S.PENDING),
            ("revalidation", RS.REQUIRE_RENEWED_APPROVAL, S.PENDING),
        ],
    )
    async def test_not_executable_request_is_refused_unchanged(
        self, world: World, make: str, strategy: ResolutionStrategy, status: RequestStatus
    ) -> None:
        """A request that is not executable under the strategy raises and nothing changes."""
        request = await getattr(self, make)(world)
        assert request.status is status
        state_before = await state_of(world)
        entries_before = await history_entries(world)
        audit_before = audit_entries(world)

        with pytest.raises(RequestNotExecutableError) as raised:
            await world.gov.execute(request.request_id, strategy=strategy)

        assert raised.value.status is status
        assert raised.value.request_id == request.request_id
        stored = await world.gov.get(request.request_id)
        assert stored == request
        assert stored.revision == request.revision
        assert await state_of(world) == state_before
        assert await history_entries(world) == entries_before
        assert audit_entries(world) == audit_before

    async def test_claimed_request_is_refused_as_taken(self, world: World) -> None:
        """A request another executor holds raises RequestClaimedError, a concurrency error."""
        request = await world.submit()
        executor = world.gov.executor
        claimed, _ = await executor._claim(
            request, executor._new_claim(request), world.ctx("other")
        )

        with pytest.raises(RequestClaimedError) as raised:
            await world.gov.execute(request.request_id)

        assert isinstance(raised.value, RequestConcurrencyError)
        assert raised.value.claimant == world.gov.executor.executor_id
        assert await world.gov.get(request.request_id) == claimed
        assert await state_of(world) == ({"bob": 1}, "1")


class TestApprovalLoop:
    async def test_renewed_approval_round_then_execution(self, world: World) -> None:
        """Approve, state moves, renewed approval round, approve again, then execute once."""
        world.rules.require(PolicyRequirement.approval("carol"))
        request = await world.submit()
        (first_slot,) = request.approval_requirements
        approved = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert approved.status is S.APPROVED
        version = await world.gov.states.put(STATE_ID, Quotas({"bob": 100}), expected_version="1")
        assert version == "2"

        renewed = await world.gov.execute(request.request_id, strategy=RS.REQUIRE_RENEWED_APPROVAL)

        pending = renewed.request
        assert renewed.executed is False
        assert (pending.status, pending.pending_reason) == (S.PENDING, PendingReason.APPROVAL)
        assert pending.approval_round == 2
        (slot,) = pending.approval_requirements
        assert slot.approval_id != first_slot.approval_id
        assert (slot.status, slot.approver_id, slot.round) == (ApprovalStatus.PENDING, "carol", 2)
        assert codes_of(pending.decisions)[-3:] == [
            L.CLAIMED,
            R.RENEWED_APPROVAL_REQUIRED,
            ApprovalDecision.REQUESTED,
        ]
        with pytest.raises(RequestNotExecutableError):
            await world.gov.execute(request.request_id, strategy=RS.REQUIRE_RENEWED_APPROVAL)

        again = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert again.status is S.APPROVED
        result = await world.gov.execute(request.request_id, strategy=RS.REQUIRE_RENEWED_APPROVAL)

        assert result.resolution is not None
        assert result.resolution.outcome is OUT.EXECUTE_APPROVED_VERSION
        await assert_executed(world, result, version="3", quotas={"bob": 110})

    async def test_same_approval_still_required_counts_as_granted(self, world: World) -> None:
        """A policy still requiring the approval already given lets the request execute."""
        world.rules.require(PolicyRequirement.approval("carol"))
        request = await world.submit()
        await world.gov.approve(request.request_id, context=world.ctx("carol"))

        result = await world.gov.execute(request.request_id)

        await assert_executed(world, result, version="2", quotas={"bob": 11})

    async def test_new_approval_required_sends_back_to_approval(self, world: World) -> None:
        """A policy requiring a different approval at execution opens a fresh approval round."""
        world.rules.require(PolicyRequirement.approval("carol"))
        request = await world.submit()
        await world.gov.approve(request.request_id, context=world.ctx("carol"))
        world.rules.require(PolicyRequirement.approval("dave"))

        result = await world.gov.execute(request.request_id)

        assert result.executed is False
        assert result.mutation_result is not None
        assert result.mutation_result.status is ResultStatus.APPROVAL_REQUIRED
        pending = result.request
        assert (pending.status, pending.pending_reason) == (S.PENDING, PendingReason.APPROVAL)
        assert pending.approval_round == 2
        assert [s.approver_id for s in pending.open_approvals] == ["dave"]
        assert codes_of(pending.decisions)[-4:] == [
            L.CLAIMED,
            R.VALIDATED,
            L.PENDING,
            ApprovalDecision.REQUESTED,
        ]
        await assert_recorded(world, result)
        assert await state_of(world) == ({"bob": 1}, "1")
        assert await history_entries(world) == ()

        await world.gov.approve(request.request_id, context=world.ctx("dave"))
        final = await world.gov.execute(request.request_id)
        await assert_executed(world, final, version="2", quotas={"bob": 11})

    async def test_auto_approved_request_needing_approval_at_execution(self, world: World) -> None:
        """A request approved without slots is sent to approval when a policy now demands one."""
        request = await world.submit()
        world.rules.require(PolicyRequirement.approval("dave"))

        result = await world.gov.execute(request.request_id)

        assert result.request.status is S.PENDING
        assert [s.approver_id for s in result.request.open_approvals] == ["dave"]
        assert await state_of(world) == ({"bob": 1}, "1")


class TestExactlyOnce:
    async def test_fifty_concurrent_executions_apply_once(self, xworld: World) -> None:
        """Of 50 concurrent executes exactly one runs; the rest are refused."""
        world = xworld
        request = await world.submit(YieldingIncrease())
        results: list[GovernedExecutionResult] = []
        refused: list[BaseException] = []

        async def attempt() -> None:
            try:
                results.append(await world.gov.execute(request.request_id))
            except (RequestConcurrencyError, RequestNotExecutableError) as error:
                refused.append(error)

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(attempt)

        assert [r.executed for r in results] == [True]
        assert len(refused) == 49
        await assert_executed(world, results[0], version="2", quotas={"bob": 11})
        assert codes_of(results[0].request.decisions).count(L.CLAIMED) == 1

    async def test_two_governance_instances_apply_once(self) -> None:
        """Two executors (own engine, manager and locks) sharing stores still apply once."""
        stores = Stores()
        await seed(stores)
        requests = Probe(stores.requests, "requests", before=checkpoint_hook)

        def governance() -> Any:
            engine = stores.engine()
            committer = InMemoryCommitter(
                stores.requests, stores.decisions, stores.states, engine.history_store, engine.audit
            )
            return make_governance(stores, engine=engine, requests=requests, committer=committer)

        first: Governance = governance()
        second: Governance = governance()
        assert first.executor.executor_id != second.executor.executor_id
        request = await first.submit(
            YieldingIncrease(), state_id=STATE_ID, context=MutationContext.user("alice")
        )
        results: list[GovernedExecutionResult] = []
        refused: list[BaseException] = []

        async def attempt(gov: Governance) -> None:
            try:
                results.append(await gov.execute(request.request_id))
            except (RequestConcurrencyError, RequestNotExecutableError) as error:
                refused.append(error)

        async with anyio.create_task_group() as tg:
            for _ in range(25):
                tg.start_soon(attempt, first)
                tg.start_soon(attempt, second)

        assert [r.executed for r in results] == [True]
        assert len(refused) == 49
        assert any(isinstance(e, RequestConcurrencyError) for e in refused)
        final = await stores.requests.get(request.request_id)
        assert final is not None
        assert final.status is S.EXECUTED
        assert codes_of(final.decisions).count(L.CLAIMED) == 1
        assert tuple(await stores.decisions.for_request(request.request_id)) == final.decisions
        current = await stores.states.get(STATE_ID)
        assert current is not None
        assert (current.state.quotas, current.version) == ({"bob": 11}, "2")
        assert len((await stores.history.history(STATE_ID)).entries) == 1
        assert [e.outcome for e in stores.audit.all()] == [AuditOutcome.SUCCEEDED]
