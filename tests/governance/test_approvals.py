"""The approval workflow: validation order, targets, steps, quorum, expiry, renewal, races."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from mutator import MutationContext, MutatorError, PolicyRequirement
from mutator_governance import (
    ApprovalDecision,
    ApprovalError,
    ApprovalExpiredError,
    ApprovalNotFoundError,
    ApprovalStateError,
    ApprovalStatus,
    ApprovalStepError,
    ApproverMismatchError,
    DecisionCategory,
    DuplicateApproverError,
    InvalidApprovalActionError,
    InvalidTransitionError,
    LifecycleDecision,
    MutationRequest,
    PendingReason,
    RejectionReason,
    RequestConcurrencyError,
    RequestStatus,
    ResolutionDecision,
    ResolutionStrategy,
    SelfApprovalError,
)
from mutator_governance._governance import DECISION_ATTEMPTS

from .conftest import STATE_ID, T0, Quotas, World, yield_inside_replace

pytestmark = pytest.mark.anyio

S = RequestStatus
A = ApprovalDecision
L = LifecycleDecision
Req = PolicyRequirement.approval


def slot_of(request: MutationRequest, target: str, *, step: int | None = None):
    """The first slot of ``request`` whose target (and step) match."""
    return next(
        s
        for s in request.approval_requirements
        if s.target == target and (step is None or s.step == step)
    )


def codes(decisions) -> list:
    return [d.code for d in decisions]


async def two_steps(world: World) -> MutationRequest:
    """carol approves in step 1, dave in step 2."""
    world.rules.require(Req("carol"), Req("dave", step=2))
    return await world.submit()


async def raises_unchanged(world: World, request: MutationRequest, error: type, action) -> object:
    """Run ``action``; it must raise exactly ``error`` and leave the request as stored."""
    before = await world.gov.get(request.request_id)
    history = await world.history(request.request_id)
    with pytest.raises(error) as caught:
        await action
    assert type(caught.value) is error
    assert caught.value.request_id == request.request_id
    assert await world.gov.get(request.request_id) == before
    assert await world.history(request.request_id) == history
    return caught.value


class TestValidationSteps:
    async def test_request_not_pending_approval(self, world: World) -> None:
        """Approving a slot of a request that is not PENDING(APPROVAL) is an ApprovalStateError."""
        world.rules.require(Req("carol"))
        request = await world.submit()
        slot = request.approval_requirements[0]
        done = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert done.status is S.APPROVED

        await raises_unchanged(
            world,
            done,
            ApprovalStateError,
            world.gov.approve(done.request_id, slot.approval_id, context=world.ctx("carol")),
        )

    async def test_pending_for_another_reason_is_not_awaiting_approvals(self, world: World) -> None:
        """A request pending an external check has no approval workflow to act on."""
        request = await world.submit(pending_reason=PendingReason.EXTERNAL_CHECK)
        await raises_unchanged(
            world,
            request,
            ApprovalStateError,
            world.gov.approve(request.request_id, "any", context=world.ctx("carol")),
        )

    async def test_unknown_approval_id(self, world: World) -> None:
        """An approval id that is not one of the request's slots raises ApprovalNotFoundError."""
        request = await two_steps(world)
        error = await raises_unchanged(
            world,
            request,
            ApprovalNotFoundError,
            world.gov.approve(request.request_id, "nope", context=world.ctx("carol")),
        )
        assert error.approval_id == "nope"
        assert isinstance(error, LookupError)

    async def test_actor_without_a_slot(self, world: World) -> None:
        """Approving without an id when the actor has no open slot raises ApprovalNotFoundError."""
        request = await two_steps(world)
        await raises_unchanged(
            world,
            request,
            ApprovalNotFoundError,
            world.gov.approve(request.request_id, context=world.ctx("mallory")),
        )

    async def test_actor_whose_slot_is_in_a_later_step(self, world: World) -> None:
        """Without an id, an actor whose only slot is in a later step gets ApprovalStepError."""
        request = await two_steps(world)
        error = await raises_unchanged(
            world,
            request,
            ApprovalStepError,
            world.gov.approve(request.request_id, context=world.ctx("dave")),
        )
        assert error.approval_id == slot_of(request, "actor:dave").approval_id

    async def test_already_decided_slot(self, world: World) -> None:
        """Deciding a slot twice raises InvalidApprovalActionError."""
        world.rules.require(Req("carol"), Req("dave"))
        request = await world.submit()
        carol = slot_of(request, "actor:carol")
        request = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert request.status is S.PENDING

        error = await raises_unchanged(
            world,
            request,
            InvalidApprovalActionError,
            world.gov.approve(request.request_id, carol.approval_id, context=world.ctx("carol")),
        )
        assert error.approval_id == carol.approval_id
        assert "APPROVED" in str(error)

    async def test_expired_slot(self, world: World) -> None:
        """A slot whose deadline is at or before the decision time raises ApprovalExpiredError."""
        deadline = T0 + timedelta(hours=1)
        world.rules.require(Req("carol", expires_at=deadline))
        request = await world.submit()
        slot = request.approval_requirements[0]
        world.clock.now = deadline

        error = await raises_unchanged(
            world,
            request,
            ApprovalExpiredError,
            world.gov.approve(request.request_id, slot.approval_id, context=world.ctx("carol")),
        )
        assert error.expires_at == deadline
        assert error.approval_id == slot.approval_id

    async def test_slot_is_usable_until_its_deadline(self, world: World) -> None:
        """Just before its deadline the slot can still be approved."""
        deadline = T0 + timedelta(hours=1)
        world.rules.require(Req("carol", expires_at=deadline))
        request = await world.submit()
        world.clock.now = deadline - timedelta(microseconds=1)
        approved = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert approved.status is S.APPROVED

    async def test_approver_mismatch(self, world: World) -> None:
        """An actor who is not the slot's target raises ApproverMismatchError."""
        request = await two_steps(world)
        slot = slot_of(request, "actor:carol")
        await raises_unchanged(
            world,
            request,
            ApproverMismatchError,
            world.gov.approve(request.request_id, slot.approval_id, context=world.ctx("dave")),
        )

    async def test_later_step(self, world: World) -> None:
        """Deciding a step-2 slot while step 1 is open raises ApprovalStepError."""
        request = await two_steps(world)
        slot = slot_of(request, "actor:dave")
        error = await raises_unchanged(
            world,
            request,
            ApprovalStepError,
            world.gov.approve(request.request_id, slot.approval_id, context=world.ctx("dave")),
        )
        assert error.approval_id == slot.approval_id

    async def test_requester_may_not_approve(self, world: World) -> None:
        """The requester approving their own request raises SelfApprovalError (four-eyes)."""
        world.rules.require(Req(approvers=["alice", "carol"]))
        request = await world.submit()
        slot = slot_of(request, "actor:alice")
        await raises_unchanged(
            world,
            request,
            SelfApprovalError,
            world.gov.approve(request.request_id, slot.approval_id, context=world.ctx("alice")),
        )
        await raises_unchanged(
            world,
            request,
            SelfApprovalError,
            world.gov.approve(request.request_id, context=world.ctx("alice")),
        )

    async def test_same_actor_twice_in_a_quorum_group(self, world: World) -> None:
        """A second approval by the same actor in one quorum group raises DuplicateApproverError."""
        world.rules.require(Req(role="sre", required_approvals=2))
        request = await world.submit()
        first, second = request.approval_requirements
        request = await world.gov.approve(
            request.request_id, first.approval_id, context=world.ctx("carol", roles=["sre"])
        )

        await raises_unchanged(
            world,
            request,
            DuplicateApproverError,
            world.gov.approve(
                request.request_id, second.approval_id, context=world.ctx("carol", roles=["sre"])
            ),
        )
        await raises_unchanged(
            world,
            request,
            DuplicateApproverError,
            world.gov.approve(request.request_id, context=world.ctx("carol", roles=["sre"])),
        )

    async def test_actor_without_id(self, world: World) -> None:
        """A deciding context without an actor id is an InvalidApprovalActionError."""
        request = await two_steps(world)
        slot = slot_of(request, "actor:carol")
        anonymous = MutationContext(timestamp=T0)
        for approval_id in (slot.approval_id, None):
            await raises_unchanged(
                world,
                request,
                InvalidApprovalActionError,
                world.gov.approve(request.request_id, approval_id, context=anonymous),
            )

    @pytest.mark.parametrize("approval_id", ["", "  "])
    async def test_blank_approval_id(self, world: World, approval_id: str) -> None:
        """A blank approval id is a ValueError."""
        request = await two_steps(world)
        with pytest.raises(ValueError, match="approval_id"):
            await world.gov.approve(request.request_id, approval_id, context=world.ctx("carol"))

    @pytest.mark.parametrize(
        "error",
        [
            ApprovalStateError,
            ApprovalNotFoundError,
            InvalidApprovalActionError,
            ApprovalExpiredError,
            ApproverMismatchError,
            ApprovalStepError,
            SelfApprovalError,
            DuplicateApproverError,
        ],
        ids=lambda e: e.__name__,
    )
    async def test_every_approval_error_is_an_approval_and_mutator_error(self, error: type) -> None:
        """One except clause (ApprovalError or MutatorError) catches every approval failure."""
        assert issubclass(error, ApprovalError)
        assert issubclass(error, MutatorError)


class TestValidationOrder:
    async def test_state_before_lookup(self, world: World) -> None:
        """An unknown id on a request not awaiting approvals reports the state first."""
        request = await world.submit()
        with pytest.raises(ApprovalStateError):
            await world.gov.approve(request.request_id, "nope", context=world.ctx("carol"))

    async def test_decided_before_expired(self, world: World) -> None:
        """A decided slot past its deadline reports "already decided", not expiry."""
        deadline = T0 + timedelta(hours=1)
        world.rules.require(Req("carol", expires_at=deadline), Req("dave"))
        request = await world.submit()
        carol = slot_of(request, "actor:carol")
        request = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        world.clock.now = deadline + timedelta(hours=1)
        await raises_unchanged(
            world,
            request,
            InvalidApprovalActionError,
            world.gov.approve(request.request_id, carol.approval_id, context=world.ctx("carol")),
        )

    async def test_expired_before_mismatch(self, world: World) -> None:
        """The wrong actor on an expired slot hears about the expiry."""
        world.rules.require(Req("carol", expires_at=T0))
        request = await world.submit()
        slot = request.approval_requirements[0]
        await raises_unchanged(
            world,
            request,
            ApprovalExpiredError,
            world.gov.approve(request.request_id, slot.approval_id, context=world.ctx("dave")),
        )

    async def test_mismatch_before_step(self, world: World) -> None:
        """The wrong actor on a later-step slot hears about the mismatch."""
        request = await two_steps(world)
        slot = slot_of(request, "actor:dave")
        await raises_unchanged(
            world,
            request,
            ApproverMismatchError,
            world.gov.approve(request.request_id, slot.approval_id, context=world.ctx("carol")),
        )

    async def test_step_before_self_approval(self, world: World) -> None:
        """The requester acting on their own later-step slot hears about the step."""
        world.rules.require(Req("carol"), Req("alice", step=2))
        request = await world.submit()
        slot = slot_of(request, "actor:alice")
        await raises_unchanged(
            world,
            request,
            ApprovalStepError,
            world.gov.approve(request.request_id, slot.approval_id, context=world.ctx("alice")),
        )

    async def test_reject_follows_the_same_validation(self, world: World) -> None:
        """Rejecting a slot checks the same rules as approving it."""
        request = await two_steps(world)
        carol = slot_of(request, "actor:carol")
        dave = slot_of(request, "actor:dave")
        await raises_unchanged(
            world,
            request,
            ApproverMismatchError,
            world.gov.reject(request.request_id, carol.approval_id, context=world.ctx("dave")),
        )
        await raises_unchanged(
            world,
            request,
            ApprovalStepError,
            world.gov.reject(request.request_id, dave.approval_id, context=world.ctx("dave")),
        )
        await raises_unchanged(
            world,
            request,
            ApprovalNotFoundError,
            world.gov.reject(request.request_id, context=world.ctx("mallory")),
        )


class TestTargets:
    async def test_actor_target(self, world: World) -> None:
        """A slot naming an actor id is approved by that actor; the GRANTED decision says so."""
        world.rules.require(Req("carol"))
        request = await world.submit()
        slot = request.approval_requirements[0]
        world.clock.advance(minutes=3)

        approved = await world.gov.approve(
            request.request_id, slot.approval_id, context=world.ctx("carol"), reason="ok"
        )

        assert approved.status is S.APPROVED
        decided = approved.approval_requirements[0]
        assert decided.status is ApprovalStatus.APPROVED
        assert (decided.decided_by, decided.decision_reason) == ("carol", "ok")
        assert decided.decided_at == T0 + timedelta(minutes=3)
        granted, lifecycle = approved.decisions[-2:]
        assert (granted.code, lifecycle.code) == (A.GRANTED, L.APPROVED)
        assert granted.category is DecisionCategory.APPROVAL
        assert granted.metadata["approval_id"] == slot.approval_id
        assert granted.metadata["target"] == "actor:carol"
        assert granted.metadata["step"] == 1
        assert granted.metadata["round"] == 1
        assert approved.revision == 1
        assert await world.history(request.request_id) == approved.decisions

    async def test_role_target_reads_roles_from_context_metadata(self, world: World) -> None:
        """A role slot is approved by anyone whose context.metadata["roles"] holds the role."""
        world.rules.require(Req(role="sre"))
        request = await world.submit()
        outsider = MutationContext(actor_id="dave", metadata={"roles": ["dev"]}, timestamp=T0)
        member = MutationContext(actor_id="carol", metadata={"roles": ["sre"]}, timestamp=T0)

        with pytest.raises(ApproverMismatchError):
            await world.gov.approve(
                request.request_id, request.approval_requirements[0].approval_id, context=outsider
            )
        approved = await world.gov.approve(request.request_id, context=member)
        assert approved.status is S.APPROVED
        assert approved.approval_requirements[0].decided_by == "carol"

    async def test_group_target(self, world: World) -> None:
        """A group slot is approved by a member of the group (context.metadata["groups"])."""
        world.rules.require(Req(group="finance"))
        request = await world.submit()
        with pytest.raises(ApprovalNotFoundError):
            await world.gov.approve(
                request.request_id, context=world.ctx("dave", roles=["finance"])
            )
        approved = await world.gov.approve(
            request.request_id, context=world.ctx("carol", groups=["finance", "ops"])
        )
        assert approved.status is S.APPROVED

    async def test_without_an_id_the_actors_own_slot_is_used(self, world: World) -> None:
        """Approving without an id picks the slot that targets the actor."""
        world.rules.require(Req("carol"), Req("dave"))
        request = await world.submit()
        updated = await world.gov.approve(request.request_id, context=world.ctx("dave"))
        assert slot_of(updated, "actor:dave").status is ApprovalStatus.APPROVED
        assert slot_of(updated, "actor:carol").status is ApprovalStatus.PENDING
        assert updated.status is S.PENDING


class TestSteps:
    async def test_steps_are_decided_in_order(self, world: World) -> None:
        """Step 2 opens only after step 1; the request is approved after the last step."""
        request = await two_steps(world)
        assert request.active_step == 1

        request = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert (request.status, request.pending_reason, request.active_step) == (
            S.PENDING,
            PendingReason.APPROVAL,
            2,
        )
        request = await world.gov.approve(request.request_id, context=world.ctx("dave"))

        assert request.status is S.APPROVED
        assert request.pending_reason is None
        assert request.active_step is None
        assert codes(request.decisions[3:]) == [A.GRANTED, A.GRANTED, L.APPROVED]
        assert request.revision == 2

    async def test_steps_follow_step_numbers_not_declaration_order(self, world: World) -> None:
        """A requirement declared first but with a higher step waits for the lower step."""
        world.rules.require(Req("dave", step=3), Req("carol", step=1))
        request = await world.submit()
        assert request.active_step == 1
        with pytest.raises(ApprovalStepError):
            await world.gov.approve(request.request_id, context=world.ctx("dave"))
        request = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert request.active_step == 3


class TestQuorum:
    async def test_two_of_three_satisfies_the_remaining_slot(self, world: World) -> None:
        """After two distinct approvals of a 2-of-3 group the third slot is SATISFIED."""
        world.rules.require(Req(approvers=["carol", "dave", "erin"], required_approvals=2))
        request = await world.submit()
        group = request.approval_requirements[0].quorum_group

        request = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert request.status is S.PENDING
        assert slot_of(request, "actor:erin").status is ApprovalStatus.PENDING

        request = await world.gov.approve(request.request_id, context=world.ctx("dave"))

        assert request.status is S.APPROVED
        assert [s.status for s in request.approval_requirements] == [
            ApprovalStatus.APPROVED,
            ApprovalStatus.APPROVED,
            ApprovalStatus.SATISFIED,
        ]
        assert slot_of(request, "actor:erin").decided_by is None
        granted, quorum, approved = request.decisions[-3:]
        assert codes([granted, quorum, approved]) == [A.GRANTED, A.QUORUM_SATISFIED, L.APPROVED]
        assert quorum.metadata["quorum_group"] == group
        assert quorum.metadata["required_approvals"] == 2
        assert granted.metadata["quorum_group"] == group

    async def test_satisfied_slot_cannot_be_decided(self, world: World) -> None:
        """Once the quorum is met in an open request, the satisfied slot is already decided."""
        world.rules.require(
            Req(approvers=["carol", "dave", "erin"], required_approvals=2), Req("zoe", step=2)
        )
        request = await world.submit()
        erin = slot_of(request, "actor:erin")
        for actor in ("carol", "dave"):
            request = await world.gov.approve(request.request_id, context=world.ctx(actor))
        assert request.status is S.PENDING
        assert request.active_step == 2
        await raises_unchanged(
            world,
            request,
            InvalidApprovalActionError,
            world.gov.approve(request.request_id, erin.approval_id, context=world.ctx("erin")),
        )

    async def test_role_only_quorum_needs_distinct_members(self, world: World) -> None:
        """A role quorum of two is met by two different role members, not one twice."""
        world.rules.require(Req(role="sre", required_approvals=2))
        request = await world.submit()
        carol = world.ctx("carol", roles=["sre"])

        request = await world.gov.approve(request.request_id, context=carol)
        assert request.status is S.PENDING
        with pytest.raises(DuplicateApproverError):
            await world.gov.approve(request.request_id, context=carol)
        request = await world.gov.approve(
            request.request_id, context=world.ctx("dave", roles=["sre"])
        )

        assert request.status is S.APPROVED
        assert sorted(s.decided_by for s in request.approval_requirements) == ["carol", "dave"]

    async def test_any_of_two_approvers(self, world: World) -> None:
        """Two named approvers with the default quorum of one: either one approves."""
        world.rules.require(Req(approvers=["carol", "dave"]))
        request = await world.submit()
        request = await world.gov.approve(request.request_id, context=world.ctx("dave"))
        assert request.status is S.APPROVED
        assert slot_of(request, "actor:carol").status is ApprovalStatus.SATISFIED

    async def test_one_rejection_ends_a_quorum(self, world: World) -> None:
        """A single rejection in a quorum group rejects the whole request."""
        world.rules.require(Req(approvers=["carol", "dave", "erin"], required_approvals=2))
        request = await world.submit()
        request = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        request = await world.gov.reject(request.request_id, context=world.ctx("dave"))
        assert request.status is S.REJECTED
        erin = slot_of(request, "actor:erin")
        assert erin.status is ApprovalStatus.PENDING
        with pytest.raises(ApprovalStateError):
            await world.gov.approve(request.request_id, erin.approval_id, context=world.ctx("erin"))
        with pytest.raises(InvalidTransitionError):
            await world.gov.approve(request.request_id, context=world.ctx("erin"))


class TestExpiry:
    async def test_expire_due_expires_requirements_and_the_request(self, world: World) -> None:
        """A slot past its deadline makes expire_due expire the request with Approval EXPIRED."""
        deadline = T0 + timedelta(hours=1)
        world.rules.require(
            Req(approvers=["carol", "dave"], required_approvals=2, expires_at=deadline),
            Req("erin", step=2),
        )
        request = await world.submit()
        request = await world.gov.approve(request.request_id, context=world.ctx("carol"))

        assert (await world.gov.expire_due(deadline - timedelta(seconds=1))).expired == ()
        sweep = await world.gov.expire_due(deadline)

        assert [r.request_id for r in sweep.expired] == [request.request_id]
        expired = await world.gov.get(request.request_id)
        assert (expired.status, expired.pending_reason) == (S.EXPIRED, None)
        assert [s.status for s in expired.approval_requirements] == [
            ApprovalStatus.APPROVED,
            ApprovalStatus.EXPIRED,
            ApprovalStatus.PENDING,
        ]
        new = expired.decisions[len(request.decisions) :]
        assert codes(new) == [A.EXPIRED, L.EXPIRED]
        assert new[0].metadata["approval_id"] == slot_of(request, "actor:dave").approval_id
        assert new[0].metadata["approval_expires_at"] == deadline
        assert await world.history(request.request_id) == expired.decisions

    async def test_every_expired_slot_gets_a_decision(self, world: World) -> None:
        """Each expired slot is reported by its own Approval EXPIRED decision."""
        world.rules.require(
            Req(approvers=["carol", "dave"], expires_at=T0), Req("erin", expires_at=T0)
        )
        request = await world.submit()
        await world.gov.expire_due(T0)
        expired = await world.gov.get(request.request_id)
        assert codes(expired.decisions[3:]) == [A.EXPIRED, A.EXPIRED, A.EXPIRED, L.EXPIRED]

    async def test_expiry_is_judged_by_the_governance_clock(self, world: World) -> None:
        """A slot expired on the Governance clock cannot be approved, whatever the context says."""
        deadline = T0 + timedelta(hours=1)
        world.rules.require(Req("carol", expires_at=deadline))
        request = await world.submit()
        world.clock.now = deadline + timedelta(hours=1)
        context = MutationContext.user("carol", timestamp=T0)
        with pytest.raises(ApprovalExpiredError):
            await world.gov.approve(request.request_id, context=context)


class TestRejection:
    async def test_structured_rejection(self, world: World) -> None:
        """A structured rejection is kept on the slot and in the decision metadata."""
        world.rules.require(Req("carol"), Req("dave", step=2))
        request = await world.submit()
        rejection = RejectionReason(
            "RISK_TOO_HIGH", "exposure above limit", category="risk", metadata={"limit": 5}
        )
        rejected = await world.gov.reject(
            request.request_id, context=world.ctx("carol"), rejection=rejection
        )

        assert (rejected.status, rejected.pending_reason) == (S.REJECTED, None)
        slot = slot_of(rejected, "actor:carol")
        assert (slot.status, slot.rejection, slot.decided_by) == (
            ApprovalStatus.REJECTED,
            rejection,
            "carol",
        )
        approval, lifecycle = rejected.decisions[-2:]
        assert codes([approval, lifecycle]) == [A.REJECTED, L.REJECTED]
        assert approval.metadata["rejection_code"] == "RISK_TOO_HIGH"
        assert approval.metadata["rejection_category"] == "risk"
        assert approval.reason == lifecycle.reason == "exposure above limit"
        assert await world.history(request.request_id) == rejected.decisions

    async def test_explicit_reason_wins_over_the_rejection_message(self, world: World) -> None:
        """An explicit reason is the decisions' reason; the rejection stays structured."""
        world.rules.require(Req("carol"))
        request = await world.submit()
        rejected = await world.gov.reject(
            request.request_id,
            context=world.ctx("carol"),
            reason="no budget",
            rejection=RejectionReason("BUDGET", "budget exhausted"),
        )
        assert rejected.decisions[-1].reason == "no budget"
        assert rejected.decisions[-2].metadata["rejection_code"] == "BUDGET"
        assert "rejection_category" not in rejected.decisions[-2].metadata

    async def test_requester_cannot_reject_through_a_slot(self, world: World) -> None:
        """Four-eyes covers rejections through approval slots as well."""
        world.rules.require(Req(approvers=["alice", "carol"]))
        request = await world.submit()
        await raises_unchanged(
            world,
            request,
            SelfApprovalError,
            world.gov.reject(request.request_id, context=world.ctx("alice")),
        )


class TestSelfApprovalSwitch:
    async def test_allow_self_approval_lets_the_requester_approve(self, make_world) -> None:
        """With allow_self_approval=True the requester may approve their own slot."""
        world = await make_world(allow_self_approval=True)
        world.rules.require(Req("alice"))
        request = await world.submit()
        approved = await world.gov.approve(request.request_id, context=world.ctx("alice"))
        assert approved.status is S.APPROVED
        assert approved.approval_requirements[0].decided_by == "alice"

    async def test_allow_self_approval_keeps_the_quorum_distinct(self, make_world) -> None:
        """Self-approval does not let one actor fill two quorum slots."""
        world = await make_world(allow_self_approval=True)
        world.rules.require(Req(role="sre", required_approvals=2))
        request = await world.submit()
        alice = world.ctx("alice", roles=["sre"])
        request = await world.gov.approve(request.request_id, context=alice)
        with pytest.raises(DuplicateApproverError):
            await world.gov.approve(request.request_id, context=alice)


ALIASES = ["ALICE", "alice ", " alice", "alice\t", "alice\u200b", "\uff41lice"]
"""Ids an unnormalized identity layer could hand over for the requester ``alice``."""


class TestOnePersonUnderManyIds:
    """Four-eyes and a quorum's distinct approvers see through case, width, whitespace and
    invisible characters in actor ids; a slot's target still matches exactly."""

    @pytest.mark.parametrize("alias", ALIASES)
    async def test_the_requester_cannot_approve_under_another_spelling(
        self, world: World, alias: str
    ) -> None:
        world.rules.require(Req(role="finance"))
        request = await world.submit()  # by alice
        error = await raises_unchanged(
            world,
            request,
            SelfApprovalError,
            world.gov.approve(request.request_id, context=world.ctx(alias, roles=["finance"])),
        )
        assert "(as 'alice')" in str(error)
        inbox = await world.gov.inbox(world.ctx(alias, roles=["finance"]))
        assert inbox.items == ()

    @pytest.mark.parametrize("alias", ALIASES)
    async def test_the_requester_cannot_reject_under_another_spelling(
        self, world: World, alias: str
    ) -> None:
        world.rules.require(Req(role="finance"))
        request = await world.submit()
        await raises_unchanged(
            world,
            request,
            SelfApprovalError,
            world.gov.reject(request.request_id, context=world.ctx(alias, roles=["finance"])),
        )

    async def test_a_request_without_slots_refuses_the_requester_alike(self, world: World) -> None:
        request = await world.submit()
        moved = await world.gov.move_to_pending(
            request.request_id, PendingReason.APPROVAL, context=world.ctx("carol")
        )
        await raises_unchanged(
            world,
            moved,
            SelfApprovalError,
            world.gov.approve(request.request_id, context=world.ctx("Alice")),
        )

    @pytest.mark.parametrize("alias", ["CAROL", "carol ", "carol\u200b"])
    async def test_one_person_fills_one_quorum_slot(self, world: World, alias: str) -> None:
        world.rules.require(Req(role="sre", required_approvals=2))
        request = await world.submit()
        request = await world.gov.approve(
            request.request_id, context=world.ctx("carol", roles=["sre"])
        )
        await raises_unchanged(
            world,
            request,
            DuplicateApproverError,
            world.gov.approve(request.request_id, context=world.ctx(alias, roles=["sre"])),
        )
        approved = await world.gov.approve(
            request.request_id, context=world.ctx("dave", roles=["sre"])
        )
        assert approved.status is S.APPROVED

    async def test_a_slot_for_an_actor_matches_that_id_only(self, world: World) -> None:
        world.rules.require(Req("carol"))
        request = await world.submit()
        await raises_unchanged(
            world,
            request,
            ApprovalNotFoundError,
            world.gov.approve(request.request_id, context=world.ctx("CAROL")),
        )
        approved = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert approved.status is S.APPROVED

    async def test_allow_self_approval_still_lets_the_requester_approve(self, make_world) -> None:
        world = await make_world(allow_self_approval=True)
        world.rules.require(Req(role="finance"))
        request = await world.submit()
        approved = await world.gov.approve(
            request.request_id, context=world.ctx("ALICE", roles=["finance"])
        )
        assert approved.status is S.APPROVED


class TestRenewal:
    async def test_stale_request_gets_a_fresh_round_that_works(self, world: World) -> None:
        """approve -> state moves -> renewed approval -> approve again -> APPROVED."""
        request = await two_steps(world)
        for actor in ("carol", "dave"):
            request = await world.gov.approve(request.request_id, context=world.ctx(actor))
        assert request.status is S.APPROVED
        old_ids = [s.approval_id for s in request.approval_requirements]

        version = await world.gov.states.put(STATE_ID, Quotas({"bob": 99}), expected_version="1")
        resolution = await world.gov.resolve(
            request.request_id, strategy=ResolutionStrategy.REQUIRE_RENEWED_APPROVAL
        )

        renewed = resolution.request
        assert (renewed.status, renewed.pending_reason) == (S.PENDING, PendingReason.APPROVAL)
        assert renewed.expected_state_version == version == "2"
        assert renewed.approval_round == 2
        assert [(s.target, s.step, s.status, s.round) for s in renewed.approval_requirements] == [
            ("actor:carol", 1, ApprovalStatus.PENDING, 2),
            ("actor:dave", 2, ApprovalStatus.PENDING, 2),
        ]
        assert not {s.approval_id for s in renewed.approval_requirements} & set(old_ids)
        assert codes(renewed.decisions[-2:]) == [
            ResolutionDecision.RENEWED_APPROVAL_REQUIRED,
            A.REQUESTED,
        ]
        assert renewed.decisions[-1].metadata["round"] == 2

        for old in old_ids:
            with pytest.raises(ApprovalNotFoundError):
                await world.gov.approve(renewed.request_id, old, context=world.ctx("carol"))
        with pytest.raises(ApprovalStepError):
            await world.gov.approve(
                renewed.request_id,
                slot_of(renewed, "actor:dave").approval_id,
                context=world.ctx("dave"),
            )

        again = await world.gov.approve(renewed.request_id, context=world.ctx("carol"))
        again = await world.gov.approve(again.request_id, context=world.ctx("dave"))
        assert again.status is S.APPROVED
        assert all(s.round == 2 for s in again.approval_requirements)
        final = await world.gov.resolve(again.request_id)
        assert final.executes
        assert final.request.decisions[-1].code is ResolutionDecision.VALIDATED

    async def test_renewed_quorum_starts_from_zero(self, world: World) -> None:
        """Approvals of the old round do not count towards the renewed quorum."""
        world.rules.require(Req(approvers=["carol", "dave", "erin"], required_approvals=2))
        request = await world.submit()
        for actor in ("carol", "dave"):
            request = await world.gov.approve(request.request_id, context=world.ctx(actor))
        await world.gov.states.put(STATE_ID, Quotas({}), expected_version="1")
        renewed = (
            await world.gov.resolve(
                request.request_id, strategy=ResolutionStrategy.REQUIRE_RENEWED_APPROVAL
            )
        ).request

        renewed = await world.gov.approve(renewed.request_id, context=world.ctx("carol"))
        assert renewed.status is S.PENDING
        renewed = await world.gov.approve(renewed.request_id, context=world.ctx("erin"))
        assert renewed.status is S.APPROVED
        assert slot_of(renewed, "actor:dave").status is ApprovalStatus.SATISFIED


class TestConcurrentApprovals:
    """Approvers deciding at once, through a store that lets other tasks run between each
    approval's read and its write (as a durable store does)."""

    N = 30

    async def _quorum(self, make_world, n: int) -> tuple[World, MutationRequest]:
        world = await make_world(requests=yield_inside_replace())
        approvers = [f"approver-{i:02d}" for i in range(n)]
        world.rules.require(Req(approvers=approvers, required_approvals=n))
        return world, await world.submit()

    async def test_concurrent_approvals_by_different_approvers_all_land(self, make_world) -> None:
        """Each approval that loses the race reads the request again and decides on it, so
        as many approvers as a decision has attempts all land, with no error to retry."""
        world, request = await self._quorum(make_world, DECISION_ATTEMPTS)

        async with anyio.create_task_group() as tg:
            for slot in request.approval_requirements:
                tg.start_soon(
                    lambda actor=slot.approver_id: world.gov.approve(
                        request.request_id, context=world.ctx(actor)
                    )
                )

        final = await world.gov.get(request.request_id)
        assert final.status is S.APPROVED
        assert world.gov.requests.replace_calls > DECISION_ATTEMPTS, "no race was run"
        granted = [d.context.actor_id for d in final.decisions if d.code is A.GRANTED]
        assert sorted(granted) == sorted(s.approver_id for s in request.approval_requirements)
        assert [d.code for d in final.decisions].count(L.APPROVED) == 1
        assert final.revision == DECISION_ATTEMPTS
        assert await world.history(request.request_id) == final.decisions

    async def test_concurrent_approvals_land_or_conflict(self, make_world) -> None:
        """Of 30 concurrent approvals (more than a decision's attempts) each lands or raises
        RequestConcurrencyError; none is lost or counted twice."""
        world, request = await self._quorum(make_world, self.N)
        landed: dict[str, str] = {}
        conflicts: list[str] = []

        async def approve(slot) -> None:
            actor = slot.approver_id
            try:
                await world.gov.approve(
                    request.request_id, slot.approval_id, context=world.ctx(actor)
                )
            except RequestConcurrencyError:
                conflicts.append(actor)
            else:
                landed[actor] = slot.approval_id

        async with anyio.create_task_group() as tg:
            for slot in request.approval_requirements:
                tg.start_soon(approve, slot)

        assert len(landed) + len(conflicts) == self.N
        final = await world.gov.get(request.request_id)
        granted = [d for d in final.decisions if d.code is A.GRANTED]
        assert len(granted) == len(landed)
        assert {d.context.actor_id for d in granted} == set(landed)
        for actor, approval_id in landed.items():
            assert final.approval(approval_id).status is ApprovalStatus.APPROVED
            assert final.approval(approval_id).decided_by == actor
        approved = [s for s in final.approval_requirements if s.status is ApprovalStatus.APPROVED]
        assert len(approved) == len(landed)
        assert final.revision == len(landed)
        assert await world.history(request.request_id) == final.decisions

    async def test_retrying_conflicts_lands_every_approval(self, make_world) -> None:
        """Retrying on RequestConcurrencyError eventually lands all 30 and approves the request."""
        world, request = await self._quorum(make_world, self.N)

        async def approve(actor: str) -> None:
            while True:
                try:
                    await world.gov.approve(request.request_id, context=world.ctx(actor))
                except RequestConcurrencyError:
                    continue
                return

        async with anyio.create_task_group() as tg:
            for slot in request.approval_requirements:
                tg.start_soon(approve, slot.approver_id)

        final = await world.gov.get(request.request_id)
        assert final.status is S.APPROVED
        granted = [d for d in final.decisions if d.code is A.GRANTED]
        assert sorted(d.context.actor_id for d in granted) == sorted(
            s.approver_id for s in request.approval_requirements
        )
        assert all(s.status is ApprovalStatus.APPROVED for s in final.approval_requirements)
        assert [d.code for d in final.decisions].count(L.APPROVED) == 1
        assert final.revision == self.N
        assert await world.history(request.request_id) == final.decisions


class TestStaleRejection:
    async def test_rejecting_a_slot_after_the_quorum_was_met(self, world: World) -> None:
        """Rejecting a named slot of a request that is already approved is refused."""
        world.rules.require(Req(approvers=["carol", "dave"]))
        request = await world.submit()
        dave = slot_of(request, "actor:dave")
        approved = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert approved.status is S.APPROVED

        with pytest.raises(ApprovalStateError):
            await world.gov.reject(request.request_id, dave.approval_id, context=world.ctx("dave"))
        assert (await world.gov.get(request.request_id)).status is S.APPROVED


class TestOverdueRequests:
    """A pending request past its own deadline takes no approval, whether or not the
    expiry sweep has run: before, a late approval made it APPROVED and it executed."""

    async def test_approving_past_the_deadline_is_refused_and_the_sweep_ends_it(
        self, world: World
    ) -> None:
        world.rules.require(Req("carol"))
        request = await world.submit(expires_at=T0 + timedelta(hours=1))
        world.clock.advance(hours=2)
        with pytest.raises(ApprovalStateError, match=r"expired at 2030-01-01T13:00:00\+00:00"):
            await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert await world.gov.get(request.request_id) == request
        assert (await world.gov.inbox(world.ctx("carol"))).items == ()
        (expired,) = (await world.gov.expire_due()).expired
        assert expired.status is S.EXPIRED

    async def test_a_request_pending_for_a_check_is_not_approved_past_its_deadline(
        self, world: World
    ) -> None:
        request = await world.submit(
            pending_reason=PendingReason.EXTERNAL_CHECK, expires_at=T0 + timedelta(minutes=5)
        )
        world.clock.advance(minutes=5)
        with pytest.raises(ApprovalStateError, match="expired at"):
            await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert await world.gov.get(request.request_id) == request

    async def test_before_the_deadline_the_approval_lands(self, world: World) -> None:
        world.rules.require(Req("carol"))
        request = await world.submit(expires_at=T0 + timedelta(hours=1))
        world.clock.advance(minutes=59)
        assert [
            v.request.request_id for v in (await world.gov.inbox(world.ctx("carol"))).items
        ] == [request.request_id]
        approved = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert approved.status is S.APPROVED
