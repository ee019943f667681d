"""Lifecycle operations of the facade: approve, reject, cancel, expire, supersede, pending."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mutator import PolicyRequirement
from mutator_governance import (
    ApprovalDecision,
    ApprovalNotFoundError,
    ApprovalStateError,
    ApprovalStatus,
    InvalidTransitionError,
    LifecycleDecision,
    PendingReason,
    RejectionReason,
    RequestNotFoundError,
    RequestStatus,
    SelfApprovalError,
)

from .conftest import T0, World, losing_race_for

pytestmark = pytest.mark.anyio

S = RequestStatus
P = PendingReason
L = LifecycleDecision


async def pending_check(world: World, **kwargs) -> object:
    return await world.submit(pending_reason=P.EXTERNAL_CHECK, **kwargs)


class TestApprove:
    async def test_approve_a_pending_request_without_slots(self, world: World) -> None:
        """A request pending an external check is approved directly by another actor."""
        request = await pending_check(world, expires_at=T0 + timedelta(hours=2))
        world.clock.advance(minutes=5)

        approved = await world.gov.approve(
            request.request_id, context=world.ctx("carol"), reason="check passed"
        )

        assert approved.status is S.APPROVED
        assert approved.pending_reason is None
        assert approved.revision == 1
        assert approved.updated_at == T0 + timedelta(minutes=5)
        assert approved.expires_at == request.expires_at
        decision = approved.decisions[-1]
        assert (decision.code, decision.reason, decision.context.actor_id) == (
            L.APPROVED,
            "check passed",
            "carol",
        )
        assert await world.gov.get(request.request_id) == approved
        assert await world.history(request.request_id) == approved.decisions

    async def test_approve_defaults_the_reason_to_the_context_reason(self, world: World) -> None:
        """Without an explicit reason the decision takes the context's reason."""
        request = await pending_check(world)
        approved = await world.gov.approve(
            request.request_id, context=world.ctx("carol", reason="looks fine")
        )
        assert approved.decisions[-1].reason == "looks fine"

    async def test_requester_cannot_approve_their_own_request(self, world: World) -> None:
        """Four-eyes also applies to a direct approval; nothing is stored."""
        request = await pending_check(world)
        with pytest.raises(SelfApprovalError):
            await world.gov.approve(request.request_id, context=world.ctx("alice"))
        assert await world.gov.get(request.request_id) == request

    async def test_self_approval_allowed_when_configured(self, make_world) -> None:
        """allow_self_approval=True lets the requester approve a pending request."""
        world = await make_world(allow_self_approval=True)
        request = await pending_check(world)
        approved = await world.gov.approve(request.request_id, context=world.ctx("alice"))
        assert approved.status is S.APPROVED

    async def test_approving_with_an_approval_id_needs_approval_slots(self, world: World) -> None:
        """Naming an approval id on a request without slots is an approval-state error."""
        request = await pending_check(world)
        with pytest.raises(ApprovalStateError, match="not waiting for approvals"):
            await world.gov.approve(request.request_id, "nope", context=world.ctx("carol"))
        assert (await world.gov.get(request.request_id)).revision == 0

    async def test_unknown_request(self, world: World) -> None:
        """Operations on an unknown request raise RequestNotFoundError."""
        with pytest.raises(RequestNotFoundError) as caught:
            await world.gov.approve("missing", context=world.ctx("carol"))
        assert caught.value.request_id == "missing"

    @pytest.mark.parametrize("request_id", ["", "   "])
    async def test_blank_request_id_is_refused(self, world: World, request_id: str) -> None:
        """A blank request id is a ValueError, not a lookup."""
        with pytest.raises(ValueError, match="request_id"):
            await world.gov.cancel(request_id, context=world.ctx("carol"))


class TestReject:
    async def test_reject_a_pending_request(self, world: World) -> None:
        """Rejecting a pending request without slots makes it REJECTED with the reason."""
        request = await pending_check(world)
        rejected = await world.gov.reject(
            request.request_id, context=world.ctx("carol"), reason="failed check"
        )
        assert (rejected.status, rejected.pending_reason) == (S.REJECTED, None)
        assert (rejected.decisions[-1].code, rejected.decisions[-1].reason) == (
            L.REJECTED,
            "failed check",
        )
        assert rejected.revision == 1

    async def test_structured_rejection_message_is_the_reason(self, world: World) -> None:
        """Without a reason, the rejection's message explains the decision."""
        request = await world.submit()
        rejected = await world.gov.reject(
            request.request_id,
            context=world.ctx("carol"),
            rejection=RejectionReason("LATE", "too late in the quarter"),
        )
        assert rejected.status is S.REJECTED
        assert rejected.decisions[-1].reason == "too late in the quarter"


class TestCancel:
    @pytest.mark.parametrize("pending", [True, False], ids=["pending", "approved"])
    async def test_cancel_pending_or_approved(self, world: World, pending: bool) -> None:
        """Cancel works before execution and clears pending reason and expiry."""
        kwargs = {"pending_reason": P.SCHEDULE} if pending else {}
        request = await world.submit(expires_at=T0 + timedelta(days=1), **kwargs)
        world.clock.advance(seconds=30)

        canceled = await world.gov.cancel(
            request.request_id, context=world.ctx("carol"), reason="not needed"
        )

        assert canceled.status is S.CANCELED
        assert canceled.pending_reason is None
        assert canceled.expires_at is None
        assert canceled.updated_at == T0 + timedelta(seconds=30)
        assert (canceled.decisions[-1].code, canceled.decisions[-1].reason) == (
            L.CANCELED,
            "not needed",
        )
        assert (await world.history(request.request_id))[-1].code is L.CANCELED

    async def test_the_requester_may_cancel(self, world: World) -> None:
        """Cancelling is not an approval: the requester may withdraw their request."""
        request = await world.submit()
        canceled = await world.gov.cancel(request.request_id, context=world.ctx("alice"))
        assert canceled.status is S.CANCELED

    async def test_cancel_pending_approval_request(self, world: World) -> None:
        """A request waiting for approvals can be cancelled."""
        world.rules.require(PolicyRequirement.approval("carol"))
        request = await world.submit()
        canceled = await world.gov.cancel(request.request_id, context=world.ctx("alice"))
        assert canceled.status is S.CANCELED


class TestExpire:
    async def test_expire_a_pending_request(self, world: World) -> None:
        """Expire moves a pending request to EXPIRED with an EXPIRED decision."""
        request = await pending_check(world)
        expired = await world.gov.expire(request.request_id, context=world.ctx("carol"))
        assert (expired.status, expired.pending_reason) == (S.EXPIRED, None)
        assert expired.decisions[-1].code is L.EXPIRED


class TestSupersede:
    async def test_supersede_names_the_superseding_request(self, world: World) -> None:
        """The superseded request records which request replaced it."""
        old = await pending_check(world)
        new = await world.submit()

        superseded = await world.gov.supersede(
            old.request_id, new.request_id, context=world.ctx("carol")
        )

        assert superseded.status is S.SUPERSEDED
        decision = superseded.decisions[-1]
        assert decision.code is L.SUPERSEDED
        assert decision.metadata["superseding_request_id"] == new.request_id
        assert new.request_id in decision.reason
        assert (await world.gov.get(new.request_id)) == new

    async def test_explicit_reason_is_kept(self, world: World) -> None:
        """An explicit reason replaces the default one; the metadata still names the successor."""
        old = await world.submit()
        new = await world.submit()
        superseded = await world.gov.supersede(
            old.request_id, new.request_id, context=world.ctx("carol"), reason="amended"
        )
        assert superseded.decisions[-1].reason == "amended"
        assert superseded.decisions[-1].metadata["superseding_request_id"] == new.request_id

    async def test_superseding_request_must_exist(self, world: World) -> None:
        """An unknown superseding request raises RequestNotFoundError and changes nothing."""
        old = await world.submit()
        with pytest.raises(RequestNotFoundError) as caught:
            await world.gov.supersede(old.request_id, "ghost", context=world.ctx("carol"))
        assert caught.value.request_id == "ghost"
        assert await world.gov.get(old.request_id) == old

    async def test_a_request_cannot_supersede_itself(self, world: World) -> None:
        """Self-supersession is refused with ValueError."""
        old = await world.submit()
        with pytest.raises(ValueError, match="itself"):
            await world.gov.supersede(old.request_id, old.request_id, context=world.ctx("carol"))
        assert await world.gov.get(old.request_id) == old


class TestMoveToPending:
    async def test_approved_request_goes_back_to_pending(self, world: World) -> None:
        """move_to_pending sets the reason, the note and a new expiry."""
        request = await world.submit()
        deadline = T0 + timedelta(hours=6)
        moved = await world.gov.move_to_pending(
            request.request_id,
            P.MANUAL_REVIEW,
            context=world.ctx("carol"),
            note="audit asked",
            expires_at=deadline,
        )
        assert (moved.status, moved.pending_reason, moved.expires_at) == (
            S.PENDING,
            P.MANUAL_REVIEW,
            deadline,
        )
        assert (moved.decisions[-1].code, moved.decisions[-1].reason) == (
            L.PENDING,
            "audit asked",
        )
        assert await world.gov.pending(P.MANUAL_REVIEW) == [moved]

    async def test_revalidation_is_not_a_manual_reason(self, world: World) -> None:
        """REVALIDATION is set by resolution only; move_to_pending refuses it."""
        request = await world.submit()
        with pytest.raises(ValueError, match="REVALIDATION"):
            await world.gov.move_to_pending(
                request.request_id, P.REVALIDATION, context=world.ctx("carol")
            )
        assert await world.gov.get(request.request_id) == request

    async def test_pending_to_pending_is_refused(self, world: World) -> None:
        """A pending request cannot be moved to another pending reason (same status)."""
        request = await pending_check(world)
        with pytest.raises(InvalidTransitionError):
            await world.gov.move_to_pending(request.request_id, P.QUOTA, context=world.ctx("c"))
        assert await world.gov.get(request.request_id) == request

    async def test_back_to_approval_issues_a_fresh_round(self, world: World) -> None:
        """Returning an approved request to APPROVAL creates new pending slots that work again."""
        world.rules.require(
            PolicyRequirement.approval("carol"), PolicyRequirement.approval("dave", step=2)
        )
        request = await world.submit()
        for actor in ("carol", "dave"):
            request = await world.gov.approve(request.request_id, context=world.ctx(actor))
        assert request.status is S.APPROVED
        old_ids = [s.approval_id for s in request.approval_requirements]

        moved = await world.gov.move_to_pending(
            request.request_id, P.APPROVAL, context=world.ctx("erin")
        )

        assert (moved.status, moved.pending_reason) == (S.PENDING, P.APPROVAL)
        assert moved.approval_round == 2
        slots = moved.approval_requirements
        assert [s.target for s in slots] == ["actor:carol", "actor:dave"]
        assert all(s.status is ApprovalStatus.PENDING and s.round == 2 for s in slots)
        assert not {s.approval_id for s in slots} & set(old_ids)
        assert [d.code for d in moved.decisions[-2:]] == [L.PENDING, ApprovalDecision.REQUESTED]
        assert moved.decisions[-1].metadata["round"] == 2

        with pytest.raises(ApprovalNotFoundError):
            await world.gov.approve(moved.request_id, old_ids[0], context=world.ctx("carol"))
        again = await world.gov.approve(moved.request_id, context=world.ctx("carol"))
        again = await world.gov.approve(again.request_id, context=world.ctx("dave"))
        assert again.status is S.APPROVED


class TestExpireDue:
    async def test_sweep_expires_due_pending_requests_inclusively(self, world: World) -> None:
        """expire_due expires pending requests whose deadline is at or before now, only those."""
        due = await pending_check(world, expires_at=T0 + timedelta(hours=1))
        later = await pending_check(world, expires_at=T0 + timedelta(hours=2))
        forever = await pending_check(world)
        approved = await world.submit(expires_at=T0 + timedelta(minutes=1))

        early = await world.gov.expire_due(T0 + timedelta(minutes=59))
        assert early.expired == ()
        assert early.skipped == ()

        sweep = await world.gov.expire_due(T0 + timedelta(hours=1))

        assert [r.request_id for r in sweep.expired] == [due.request_id]
        assert sweep.skipped == ()
        expired = await world.gov.get(due.request_id)
        assert expired.status is S.EXPIRED
        assert expired.decisions[-1].code is L.EXPIRED
        assert expired.decisions[-1].timestamp == T0 + timedelta(hours=1)
        assert (T0 + timedelta(hours=1)).isoformat() in expired.decisions[-1].reason
        assert (await world.history(due.request_id))[-1].code is L.EXPIRED
        for untouched in (later, forever, approved):
            assert await world.gov.get(untouched.request_id) == untouched

    async def test_sweep_uses_the_clock_by_default(self, world: World) -> None:
        """Without an explicit instant the sweep asks the Governance clock."""
        due = await pending_check(world, expires_at=T0 + timedelta(hours=1))
        assert (await world.gov.expire_due()).expired == ()
        world.clock.advance(hours=1)
        sweep = await world.gov.expire_due()
        assert [r.request_id for r in sweep.expired] == [due.request_id]

    async def test_a_second_sweep_finds_nothing(self, world: World) -> None:
        """Expired requests are terminal, so sweeping again does nothing."""
        await pending_check(world, expires_at=T0)
        assert len((await world.gov.expire_due(T0)).expired) == 1
        assert (await world.gov.expire_due(T0 + timedelta(days=1))).expired == ()

    async def test_a_request_losing_a_race_is_skipped(self, make_world) -> None:
        """A request changed concurrently is reported in skipped and the sweep goes on."""
        store = losing_race_for("racy")
        world = await make_world(requests=store)
        racy = await pending_check(world, expires_at=T0, request_id="racy")
        world.clock.advance(seconds=1)
        other = await pending_check(world, expires_at=T0, request_id="calm")

        sweep = await world.gov.expire_due(T0 + timedelta(minutes=1))

        assert sweep.skipped == ("racy",)
        assert [r.request_id for r in sweep.expired] == [other.request_id]
        assert (await world.gov.get("racy")) == racy
        assert (await world.gov.get("calm")).status is S.EXPIRED
        assert await world.history("racy") == racy.decisions


class TestSystemDecisionTimes:
    """A decision the system makes on its own has a context stamped by the governance
    clock, as the decision itself is, not by the host's wall clock."""

    async def test_an_allowed_submission_is_approved_at_the_clock(self, world: World) -> None:
        request = await world.submit()
        approved = request.decisions[-1]
        assert approved.code is L.APPROVED
        assert approved.context.actor_id == "system"
        assert approved.context.timestamp == approved.timestamp == T0

    async def test_the_expiry_sweep_and_resolution_decide_at_the_clock(self, world: World) -> None:
        due = await pending_check(world, expires_at=T0 + timedelta(hours=1))
        world.clock.advance(hours=2)
        (expired,) = (await world.gov.expire_due()).expired
        assert expired.request_id == due.request_id
        assert expired.decisions[-1].context.timestamp == T0 + timedelta(hours=2)

        request = await world.submit()
        resolution = await world.gov.resolve(request.request_id)
        assert resolution.request.decisions[-1].context.timestamp == T0 + timedelta(hours=2)

    async def test_an_execution_without_a_context_runs_at_the_clock(self, world: World) -> None:
        request = await world.submit()
        world.clock.advance(minutes=5)
        outcome = await world.gov.execute(request.request_id)
        assert outcome.executed
        claimed = [d for d in outcome.request.decisions if d.code is L.CLAIMED]
        assert [d.context.timestamp for d in claimed] == [T0 + timedelta(minutes=5)]
