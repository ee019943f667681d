"""Version resolution: every strategy x staleness row, persistence, and refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mutator import MutationContext, PolicyRequirement
from mutator_governance import (
    ApprovalDecision,
    ApprovalStatus,
    DecisionCategory,
    ExecutionClaim,
    PendingReason,
    RequestNotExecutableError,
    RequestStatus,
    ResolutionDecision,
    ResolutionOutcome,
    ResolutionStrategy,
    StateNotFoundError,
)

from .conftest import STATE_ID, T0, Quotas, World

pytestmark = pytest.mark.anyio

S = RequestStatus
P = PendingReason
RS = ResolutionStrategy
RO = ResolutionOutcome
RD = ResolutionDecision


async def move_state(world: World) -> str:
    """Change the governed state so requests evaluated at version "1" become stale."""
    return await world.gov.states.put(STATE_ID, Quotas({"bob": 500}), expected_version="1")


async def revalidating(world: World):
    """A stored request pending REVALIDATION (expected version "2", state at "2")."""
    request = await world.submit()
    await move_state(world)
    resolution = await world.gov.resolve(request.request_id, strategy=RS.REVALIDATE_ON_LATEST_STATE)
    assert (resolution.request.status, resolution.request.pending_reason) == (
        S.PENDING,
        P.REVALIDATION,
    )
    return resolution.request


class TestNotStale:
    @pytest.mark.parametrize("strategy", list(RS), ids=lambda s: s.name)
    async def test_same_version_is_validated_under_every_strategy(
        self, world: World, strategy: ResolutionStrategy
    ) -> None:
        """Expected == current: VALIDATED, executes, status and expected version unchanged."""
        request = await world.submit()
        world.clock.advance(minutes=1)

        resolution = await world.gov.resolve(request.request_id, "1", strategy)

        assert resolution.outcome is RO.EXECUTE_APPROVED_VERSION
        assert resolution.executes
        assert not resolution.is_stale
        assert (resolution.expected_version, resolution.current_version) == ("1", "1")
        assert resolution.strategy is strategy
        resolved = resolution.request
        assert (resolved.status, resolved.pending_reason) == (S.APPROVED, None)
        assert resolved.expected_state_version == "1"
        decision = resolved.decisions[-1]
        assert decision.code is RD.VALIDATED
        assert decision.category is DecisionCategory.VERSION_RESOLUTION
        assert decision.metadata["expected_state_version"] == "1"
        assert decision.metadata["current_state_version"] == "1"
        assert len(resolved.decisions) == len(request.decisions) + 1

    @pytest.mark.parametrize("expected", [None, ""], ids=["none", "blank"])
    async def test_without_expected_version_nothing_is_stale(
        self, world: World, expected: str | None
    ) -> None:
        """A request without an expected version is never stale; metadata records ''."""
        request = await world.force(await world.submit(), expected_state_version=expected)
        await move_state(world)

        resolution = await world.gov.resolve(request.request_id, strategy=RS.REJECT_STALE)

        assert resolution.outcome is RO.EXECUTE_APPROVED_VERSION
        assert not resolution.is_stale
        assert resolution.request.status is S.APPROVED
        metadata = resolution.request.decisions[-1].metadata
        assert metadata["expected_state_version"] == ""
        assert metadata["current_state_version"] == "2"

    async def test_revalidating_request_at_its_version_is_validated(self, world: World) -> None:
        """A PENDING(REVALIDATION) request whose version still holds stays where it is."""
        request = await revalidating(world)
        resolution = await world.gov.resolve(request.request_id, strategy=RS.REJECT_STALE)
        assert resolution.outcome is RO.EXECUTE_APPROVED_VERSION
        assert (resolution.request.status, resolution.request.pending_reason) == (
            S.PENDING,
            P.REVALIDATION,
        )
        assert resolution.request.decisions[-1].code is RD.VALIDATED


class TestStale:
    async def test_reject_stale(self, world: World) -> None:
        """Stale + REJECT_STALE: REJECTED with a REJECTED_AS_STALE decision naming both versions."""
        request = await world.submit()
        await move_state(world)

        resolution = await world.gov.resolve(request.request_id, "2", RS.REJECT_STALE)

        assert resolution.outcome is RO.REJECTED_AS_STALE
        assert resolution.is_stale
        assert not resolution.executes
        assert (resolution.expected_version, resolution.current_version) == ("1", "2")
        resolved = resolution.request
        assert (resolved.status, resolved.pending_reason) == (S.REJECTED, None)
        assert resolved.expected_state_version == "1"
        decision = resolved.decisions[-1]
        assert decision.code is RD.REJECTED_AS_STALE
        assert decision.metadata["expected_state_version"] == "1"
        assert decision.metadata["current_state_version"] == "2"
        assert "1" in decision.reason
        assert "2" in decision.reason

    async def test_require_renewed_approval(self, world: World) -> None:
        """Stale + REQUIRE_RENEWED_APPROVAL: PENDING(APPROVAL) expecting the current version."""
        world.rules.require(PolicyRequirement.approval("carol"))
        request = await world.submit()
        request = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        await move_state(world)

        resolution = await world.gov.resolve(request.request_id, "2", RS.REQUIRE_RENEWED_APPROVAL)

        assert resolution.outcome is RO.REQUIRES_RENEWED_APPROVAL
        assert resolution.is_stale
        assert not resolution.executes
        resolved = resolution.request
        assert (resolved.status, resolved.pending_reason) == (S.PENDING, P.APPROVAL)
        assert resolved.expected_state_version == "2"
        renewal, requested = resolved.decisions[-2:]
        assert renewal.code is RD.RENEWED_APPROVAL_REQUIRED
        assert renewal.metadata["expected_state_version"] == "1"
        assert renewal.metadata["current_state_version"] == "2"
        assert requested.code is ApprovalDecision.REQUESTED
        assert [s.status for s in resolved.approval_requirements] == [ApprovalStatus.PENDING]

    async def test_require_renewed_approval_maps_policy_requirements_without_slots(
        self, world: World
    ) -> None:
        """A request approved without slots gets slots from its stored policy requirements."""
        world.rules.require(PolicyRequirement.approval("carol"))
        submitted = await world.submit()
        request = await world.force(
            submitted, status=S.APPROVED, pending_reason=None, approval_requirements=()
        )
        await move_state(world)

        resolved = (
            await world.gov.resolve(request.request_id, strategy=RS.REQUIRE_RENEWED_APPROVAL)
        ).request

        assert [s.target for s in resolved.approval_requirements] == ["actor:carol"]
        assert resolved.approval_round == 2

    async def test_revalidate_on_latest_state(self, world: World) -> None:
        """Stale + REVALIDATE_ON_LATEST_STATE: PENDING(REVALIDATION), still executable."""
        request = await world.submit()
        await move_state(world)

        resolution = await world.gov.resolve(request.request_id, "2", RS.REVALIDATE_ON_LATEST_STATE)

        assert resolution.outcome is RO.REVALIDATE_ON_LATEST_STATE
        assert resolution.is_stale
        assert resolution.executes
        resolved = resolution.request
        assert (resolved.status, resolved.pending_reason) == (S.PENDING, P.REVALIDATION)
        assert resolved.expected_state_version == "2"
        assert resolved.is_executable
        decision = resolved.decisions[-1]
        assert decision.code is RD.REVALIDATION_REQUIRED
        assert decision.metadata["expected_state_version"] == "1"
        assert decision.metadata["current_state_version"] == "2"

    async def test_revalidating_request_revalidates_again(self, world: World) -> None:
        """A stale PENDING(REVALIDATION) request keeps waiting, now on the new version."""
        request = await revalidating(world)
        await world.gov.states.put(STATE_ID, Quotas({}), expected_version="2")

        resolution = await world.gov.resolve(
            request.request_id, strategy=RS.REVALIDATE_ON_LATEST_STATE
        )

        assert resolution.outcome is RO.REVALIDATE_ON_LATEST_STATE
        resolved = resolution.request
        assert (resolved.status, resolved.pending_reason) == (S.PENDING, P.REVALIDATION)
        assert resolved.expected_state_version == "3"

    async def test_revalidating_request_rejected_as_stale(self, world: World) -> None:
        """A PENDING(REVALIDATION) request that went stale again is rejected under REJECT_STALE."""
        request = await revalidating(world)
        await world.gov.states.put(STATE_ID, Quotas({}), expected_version="2")
        resolution = await world.gov.resolve(request.request_id, strategy=RS.REJECT_STALE)
        assert resolution.request.status is S.REJECTED

    async def test_revalidating_request_can_require_renewed_approval(self, world: World) -> None:
        """A stale PENDING(REVALIDATION) request can be sent back for renewed approval."""
        request = await revalidating(world)
        await world.gov.states.put(STATE_ID, Quotas({}), expected_version="2")
        resolution = await world.gov.resolve(
            request.request_id, strategy=RS.REQUIRE_RENEWED_APPROVAL
        )
        assert (resolution.request.status, resolution.request.pending_reason) == (
            S.PENDING,
            P.APPROVAL,
        )
        assert resolution.request.expected_state_version == "3"


class TestPersistence:
    @pytest.mark.parametrize("strategy", list(RS), ids=lambda s: s.name)
    @pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale"])
    async def test_resolution_is_stored_and_recorded(
        self, world: World, strategy: ResolutionStrategy, stale: bool
    ) -> None:
        """Every resolution bumps the revision by one and appends its decisions to the history."""
        request = await world.submit()
        if stale:
            await move_state(world)

        resolution = await world.gov.resolve(request.request_id, strategy=strategy)

        stored = await world.gov.get(request.request_id)
        assert stored == resolution.request
        assert stored.revision == request.revision + 1
        assert await world.history(request.request_id) == stored.decisions
        assert len(stored.decisions) > len(request.decisions)

    async def test_version_is_read_from_the_state_store(self, world: World) -> None:
        """Without a version, resolve compares against the state store's current version."""
        request = await world.submit()
        fresh = await world.gov.resolve(request.request_id)
        assert not fresh.is_stale
        assert fresh.current_version == "1"

        await move_state(world)
        stale = await world.gov.resolve(request.request_id)

        assert stale.is_stale
        assert stale.current_version == "2"
        assert stale.outcome is RO.REJECTED_AS_STALE

    async def test_explicit_version_wins_over_the_store(self, world: World) -> None:
        """An explicit current version is used as given, without reading the state store."""
        request = await world.submit()
        resolution = await world.gov.resolve(request.request_id, "7", RS.REVALIDATE_ON_LATEST_STATE)
        assert resolution.current_version == "7"
        assert resolution.request.expected_state_version == "7"
        assert (await world.gov.states.get(STATE_ID)).version == "1"

    async def test_missing_state_is_reported(self, world: World) -> None:
        """Reading the version of a state that no longer exists raises StateNotFoundError."""
        request = await world.force(await world.submit(), state_id="quotas:gone")
        with pytest.raises(StateNotFoundError):
            await world.gov.resolve(request.request_id)
        assert (await world.gov.get(request.request_id)).revision == request.revision

    async def test_resolution_decisions_use_the_given_context_and_clock(self, world: World) -> None:
        """The resolution decision carries the caller's context and the Governance clock time."""
        request = await world.submit()
        world.clock.advance(hours=2)
        context = MutationContext.service("deployer", reason="pre-flight")
        resolution = await world.gov.resolve(request.request_id, context=context)
        decision = resolution.request.decisions[-1]
        assert decision.context == context
        assert decision.timestamp == world.clock.now


class TestRefusals:
    async def _not_executable(self, world: World) -> dict:
        world.rules.require(PolicyRequirement.approval("carol"))
        approval = await world.submit()
        world.rules.set()
        check = await world.submit(pending_reason=P.EXTERNAL_CHECK)
        canceled = await world.gov.cancel((await world.submit()).request_id, context=world.ctx("c"))
        world.rules.deny("no")
        rejected = await world.submit()
        world.rules.set()
        executed = await world.force(await world.submit(), status=S.EXECUTED)
        created = await world.force(await world.submit(), status=S.CREATED)
        return {
            "pending-approval": approval,
            "pending-external-check": check,
            "canceled": canceled,
            "rejected": rejected,
            "executed": executed,
            "created": created,
        }

    @pytest.mark.parametrize("strategy", list(RS), ids=lambda s: s.name)
    async def test_non_executable_requests_are_refused(
        self, world: World, strategy: ResolutionStrategy
    ) -> None:
        """Only APPROVED or PENDING(REVALIDATION) requests resolve; others are left untouched."""
        requests = await self._not_executable(world)
        await move_state(world)
        for name, request in requests.items():
            history = await world.history(request.request_id)
            with pytest.raises(RequestNotExecutableError) as caught:
                await world.gov.resolve(request.request_id, strategy=strategy)
            error = caught.value
            assert (error.request_id, error.status, error.pending_reason) == (
                request.request_id,
                request.status,
                request.pending_reason,
            ), name
            assert await world.gov.get(request.request_id) == request, name
            assert await world.history(request.request_id) == history, name

    async def test_claimed_request_is_not_resolved_through_the_facade(self, world: World) -> None:
        """A request being executed by a worker cannot be re-resolved from outside."""
        request = await world.force(
            await world.submit(),
            status=S.EXECUTING,
            claim=ExecutionClaim("worker-1", T0, T0 + timedelta(minutes=5)),
        )
        await move_state(world)
        with pytest.raises(RequestNotExecutableError):
            await world.gov.resolve(request.request_id, strategy=RS.REJECT_STALE)

    @pytest.mark.parametrize("version", ["", "   "], ids=["empty", "spaces"])
    async def test_blank_current_version_is_refused(self, world: World, version: str) -> None:
        """A blank current version is a ValueError and nothing is stored."""
        request = await world.submit()
        with pytest.raises(ValueError, match="current_version"):
            await world.gov.resolve(request.request_id, version)
        assert await world.gov.get(request.request_id) == request

    async def test_unknown_strategy_is_refused(self, world: World) -> None:
        """A strategy that is not a ResolutionStrategy raises TypeError."""
        request = await world.submit()
        with pytest.raises(TypeError):
            await world.gov.resolve(request.request_id, "1", "reject_stale")
        assert await world.gov.get(request.request_id) == request
