"""Submitting a mutation creates a request whose status the policies decide."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from mutator import MutationContext, PolicyDecision, PolicyRequirement
from mutator_governance import (
    ApprovalConfigurationError,
    ApprovalDecision,
    ApprovalStatus,
    DecisionCategory,
    LifecycleDecision,
    PendingReason,
    RequestAlreadyExistsError,
    RequestNotFoundError,
    RequestQuery,
    RequestStatus,
    StateNotFoundError,
    UnknownMutationTypeError,
)

from .conftest import STATE_ID, T0, IncreaseQuota, Quotas, Unregistered, World

pytestmark = pytest.mark.anyio

L = LifecycleDecision
A = ApprovalDecision


def codes(request) -> list:
    return [d.code for d in request.decisions]


async def nothing_stored(world: World) -> bool:
    page = await world.gov.list(RequestQuery())
    recent = await world.gov.decisions.recent()
    return not page.items and not recent


class TestAllowed:
    async def test_allowed_mutation_is_approved(self, world: World) -> None:
        """With every policy allowing, the request is stored APPROVED with its full record."""
        world.rules.allow()
        mutation = IncreaseQuota("bob", 10)
        request = await world.submit(mutation, metadata={"ticket": "T-1"})

        assert request.status is RequestStatus.APPROVED
        assert request.pending_reason is None
        assert request.approval_requirements == ()
        assert request.revision == 0
        assert request.mutation == mutation
        assert request.mutation_type == "quota.increase"
        assert request.intent == IncreaseQuota.intent
        assert request.state_id == STATE_ID
        assert request.state_type == "Quotas"
        assert request.requester == "alice"
        assert request.created_at == request.updated_at == T0
        assert request.metadata == {"ticket": "T-1"}
        assert request.expected_state_version == "1"
        assert await world.gov.get(request.request_id) == request

    async def test_allowed_decisions_are_submitted_then_approved(self, world: World) -> None:
        """An allowed request records SUBMITTED by the requester, then APPROVED by the system."""
        request = await world.submit()

        submitted, approved = request.decisions
        assert (submitted.code, approved.code) == (L.SUBMITTED, L.APPROVED)
        assert submitted.context.actor_id == "alice"
        assert submitted.reason == "please"
        assert approved.context.actor_id == "system"
        assert approved.context.correlation_id == request.request_id
        assert {d.timestamp for d in request.decisions} == {T0}
        assert all(d.category is DecisionCategory.LIFECYCLE for d in request.decisions)

    async def test_submission_does_not_change_the_state(self, world: World) -> None:
        """Submission only evaluates policies; the governed state keeps its value and version."""
        before = await world.gov.states.get(STATE_ID)
        await world.submit(IncreaseQuota("bob", 1000))
        assert await world.gov.states.get(STATE_ID) == before

    async def test_explicit_request_id_is_used_and_unique(self, world: World) -> None:
        """A given request id is kept; reusing it raises RequestAlreadyExistsError."""
        first = await world.submit(request_id="req-1")
        assert first.request_id == "req-1"
        with pytest.raises(RequestAlreadyExistsError) as caught:
            await world.submit(IncreaseQuota("eve", 1), request_id="req-1")
        assert caught.value.request_id == "req-1"
        assert await world.gov.get("req-1") == first
        assert await world.history("req-1") == first.decisions

    @pytest.mark.parametrize(
        ("changes", "error", "named"),
        [
            ({"request_id": ""}, ValueError, "request_id"),
            ({"request_id": "  "}, ValueError, "request_id"),
            ({"request_id": 123}, ValueError, "request_id"),
            ({"request_id": "a\x00b"}, ValueError, "request_id"),
            ({"state_id": None}, ValueError, "state_id"),
            ({"state_id": " "}, ValueError, "state_id"),
            ({"expires_at": "2030-01-01"}, TypeError, "expires_at"),
            ({"expires_at": datetime(2030, 1, 1)}, ValueError, "expires_at"),
        ],
        ids=lambda v: repr(v) if not isinstance(v, type) else v.__name__,
    )
    async def test_bad_arguments_are_refused_before_anything_is_stored(
        self, world: World, changes: dict[str, Any], error: type[Exception], named: str
    ) -> None:
        """A request that could never be read back (a blank id) is never created."""
        arguments: dict[str, Any] = {"state_id": STATE_ID, "context": world.ctx("alice")}
        arguments.update(changes)
        with pytest.raises(error, match=named):
            await world.gov.submit(IncreaseQuota("bob", 1), **arguments)
        assert (await world.gov.list()).items == ()

    async def test_generated_request_ids_are_distinct(self, world: World) -> None:
        """Requests submitted without an id get distinct ids."""
        ids = {(await world.submit()).request_id for _ in range(5)}
        assert len(ids) == 5


class TestApprovalRequired:
    async def test_required_approvals_map_onto_slots(self, world: World) -> None:
        """Approval requirements become PENDING(APPROVAL) with one slot per target and step."""
        world.rules.require(
            PolicyRequirement.approval("carol", reason="finance signs"),
            PolicyRequirement.approval(role="sre", step=2, reason="ops signs"),
            PolicyRequirement.approval(group="board", step=3),
            reason="big increase",
        )
        request = await world.submit()

        assert request.status is RequestStatus.PENDING
        assert request.pending_reason is PendingReason.APPROVAL
        slots = request.approval_requirements
        assert [(s.step, s.target) for s in slots] == [
            (1, "actor:carol"),
            (2, "role:sre"),
            (3, "group:board"),
        ]
        assert [s.description for s in slots] == ["finance signs", "ops signs", None]
        assert all(s.status is ApprovalStatus.PENDING for s in slots)
        assert all(s.round == 1 and s.required_approvals == 1 for s in slots)
        assert all(s.quorum_group is None for s in slots)
        assert len({s.approval_id for s in slots}) == 3
        assert request.active_step == 1
        assert len(request.policy_requirements) == 3

    async def test_approval_required_decisions(self, world: World) -> None:
        """A pending-approval request records SUBMITTED, PENDING and Approval REQUESTED."""
        world.rules.require(
            PolicyRequirement.approval("carol"), PolicyRequirement.approval("dave"), reason="why"
        )
        request = await world.submit()

        assert codes(request) == [L.SUBMITTED, L.PENDING, A.REQUESTED]
        requested = request.decisions[-1]
        assert requested.category is DecisionCategory.APPROVAL
        assert requested.metadata["approval_requirement_count"] == 2
        assert requested.metadata["round"] == 1
        assert requested.reason == "why"

    async def test_quorum_requirement_forms_one_group(self, world: World) -> None:
        """Several approvers with required_approvals=2 make one quorum group of three slots."""
        world.rules.require(
            PolicyRequirement.approval(approvers=["carol", "dave", "erin"], required_approvals=2)
        )
        request = await world.submit()

        slots = request.approval_requirements
        assert [s.approver_id for s in slots] == ["carol", "dave", "erin"]
        assert len({s.quorum_group for s in slots}) == 1
        assert slots[0].quorum_group is not None
        assert {s.required_approvals for s in slots} == {2}

    async def test_role_only_quorum_creates_one_slot_per_required_approval(
        self, world: World
    ) -> None:
        """A role target with required_approvals=3 yields three role slots in one group."""
        world.rules.require(PolicyRequirement.approval(role="sre", required_approvals=3))
        request = await world.submit()

        slots = request.approval_requirements
        assert [s.target for s in slots] == ["role:sre"] * 3
        assert len({s.quorum_group for s in slots}) == 1
        assert slots[0].quorum_group is not None

    async def test_mixed_targets_fill_quorum_with_the_shared_target(self, world: World) -> None:
        """One approver plus a group with required_approvals=3 adds a second group slot."""
        world.rules.require(PolicyRequirement.approval("carol", group="ops", required_approvals=3))
        request = await world.submit()
        assert sorted(s.target for s in request.approval_requirements) == [
            "actor:carol",
            "group:ops",
            "group:ops",
        ]

    async def test_too_few_named_approvers_is_a_configuration_error(self, world: World) -> None:
        """Naming fewer explicit approvers than required fails at submit and stores nothing."""
        world.rules.require(
            PolicyRequirement.approval(approvers=["carol", "dave"], required_approvals=3)
        )
        with pytest.raises(ApprovalConfigurationError):
            await world.submit()
        assert await nothing_stored(world)

    async def test_requirements_without_approval_type_are_a_configuration_error(
        self, world: World
    ) -> None:
        """A policy asking for approval with no 'approval'-type requirement cannot be mapped."""
        world.rules.require(PolicyRequirement(type="ticket", description="open a ticket"))
        with pytest.raises(ApprovalConfigurationError):
            await world.submit()
        assert await nothing_stored(world)

    async def test_per_requirement_expiry_is_copied_to_slots(self, world: World) -> None:
        """A requirement's expires_at becomes the expiry of each of its slots."""
        deadline = T0 + timedelta(hours=4)
        world.rules.require(
            PolicyRequirement.approval(approvers=["carol", "dave"], expires_at=deadline)
        )
        request = await world.submit()
        assert [s.expires_at for s in request.approval_requirements] == [deadline, deadline]

    async def test_approval_beats_an_explicit_pending_reason(self, world: World) -> None:
        """Required approval makes the request wait for APPROVAL even if another reason is given."""
        world.rules.require(PolicyRequirement.approval("carol"))
        request = await world.submit(pending_reason=PendingReason.SCHEDULE)
        assert request.pending_reason is PendingReason.APPROVAL


class TestDenied:
    async def test_denied_request_is_rejected_with_every_blocker(self, world: World) -> None:
        """Denials create a REJECTED request naming every blocking policy and its reason."""
        world.rules.deny("over budget", "frozen account")
        request = await world.submit(expires_at=T0 + timedelta(days=1))

        assert request.status is RequestStatus.REJECTED
        assert request.pending_reason is None
        assert request.expires_at is None
        assert codes(request) == [L.SUBMITTED, L.REJECTED]
        rejected = request.decisions[-1]
        assert "rule1: over budget" in rejected.reason
        assert "rule2: frozen account" in rejected.reason
        assert rejected.metadata["blocking_policies"] == ("rule1", "rule2")
        assert rejected.context.actor_id == "system"
        assert request.is_terminal

    async def test_denial_wins_over_approval(self, world: World) -> None:
        """One denial rejects the request even when another policy only asks for approval."""
        world.rules.set(
            PolicyDecision.require_approval(PolicyRequirement.approval("carol")),
            PolicyDecision.deny("not allowed"),
        )
        request = await world.submit()
        assert request.status is RequestStatus.REJECTED
        assert request.approval_requirements == ()
        assert request.decisions[-1].metadata["blocking_policies"] == ("rule2",)

    async def test_rejected_request_is_stored_and_recorded(self, world: World) -> None:
        """A rejected submission is still durable: stored and in the decision history."""
        world.rules.deny("no")
        request = await world.submit()
        assert await world.gov.get(request.request_id) == request
        assert await world.history(request.request_id) == request.decisions


class TestExplicitPendingReasons:
    @pytest.mark.parametrize(
        "reason",
        [
            PendingReason.EXTERNAL_CHECK,
            PendingReason.SCHEDULE,
            PendingReason.DEPENDENCY,
            PendingReason.QUOTA,
            PendingReason.MANUAL_REVIEW,
        ],
        ids=lambda r: r.name,
    )
    async def test_allowed_request_waits_for_the_given_reason(
        self, world: World, reason: PendingReason
    ) -> None:
        """An allowed mutation submitted with a reason is PENDING(reason) with its expiry."""
        deadline = T0 + timedelta(hours=1)
        request = await world.submit(pending_reason=reason, expires_at=deadline)

        assert request.status is RequestStatus.PENDING
        assert request.pending_reason is reason
        assert request.expires_at == deadline
        assert request.approval_requirements == ()
        assert codes(request) == [L.SUBMITTED, L.PENDING]
        assert request.decisions[-1].reason == reason.name
        assert await world.gov.pending(reason) == [request]

    @pytest.mark.parametrize(
        "reason", [PendingReason.APPROVAL, PendingReason.REVALIDATION], ids=lambda r: r.name
    )
    async def test_reasons_owned_by_the_library_are_refused(
        self, world: World, reason: PendingReason
    ) -> None:
        """APPROVAL and REVALIDATION cannot be asked for at submission."""
        with pytest.raises(ValueError, match=reason.name):
            await world.submit(pending_reason=reason)
        assert await nothing_stored(world)

    async def test_naive_expiry_is_refused(self, world: World) -> None:
        """A timezone-naive expires_at is refused."""
        with pytest.raises(ValueError, match="timezone"):
            await world.submit(expires_at=datetime(2030, 1, 2))
        assert await nothing_stored(world)


class TestStateAndRegistry:
    async def test_expected_state_version_is_the_evaluated_version(self, world: World) -> None:
        """The request remembers the state version its policies were evaluated against."""
        version = await world.gov.states.put(STATE_ID, Quotas({"bob": 2}), expected_version="1")
        assert version == "2"
        request = await world.submit()
        assert request.expected_state_version == "2"

    async def test_policies_see_the_stored_state(self, world: World) -> None:
        """Policies are evaluated against the state currently in the state store."""
        seen = []

        class Peek:
            name = "peek"
            priority = 0
            state_type = None

            def evaluate(self, mutation, state, context):
                seen.append((state, context.actor_id))
                return PolicyDecision.allow()

        world.engine.register_policy(Peek())
        await world.submit()
        assert seen == [(Quotas({"bob": 1}), "alice")]

    async def test_unregistered_mutation_is_refused(self, world: World) -> None:
        """A mutation class missing from the registry raises UnknownMutationTypeError."""
        with pytest.raises(UnknownMutationTypeError, match="Unregistered"):
            await world.submit(Unregistered())
        assert await nothing_stored(world)

    async def test_unknown_state_is_refused(self, world: World) -> None:
        """A state id missing from the state store raises StateNotFoundError."""
        with pytest.raises(StateNotFoundError) as caught:
            await world.submit(state_id="quotas:nobody")
        assert caught.value.state_id == "quotas:nobody"
        assert isinstance(caught.value, LookupError)
        assert await nothing_stored(world)

    async def test_context_must_be_a_mutation_context(self, world: World) -> None:
        """Passing something other than a MutationContext raises TypeError."""
        with pytest.raises(TypeError):
            await world.gov.submit(
                IncreaseQuota("bob", 1), state_id=STATE_ID, context={"actor_id": "alice"}
            )


class TestDecisionHistory:
    async def test_submission_decisions_land_in_the_history(self, world: World) -> None:
        """Every submission decision is appended to gov.decisions under the request id."""
        world.rules.require(PolicyRequirement.approval("carol"))
        request = await world.submit()

        assert await world.history(request.request_id) == request.decisions
        recent = await world.gov.decisions.recent()
        assert [r.request_id for r in recent] == [request.request_id] * 3
        assert [r.decision for r in recent] == list(reversed(request.decisions))

    async def test_decisions_are_hashable_values(self, world: World) -> None:
        """Frozen decisions can be collected in a set (e.g. to deduplicate merged histories)."""
        request = await world.submit()
        assert len(set(request.decisions) | set(await world.history(request.request_id))) == 2

    async def test_histories_are_kept_per_request(self, world: World) -> None:
        """Two requests' decisions do not mix."""
        first = await world.submit()
        world.rules.deny("no")
        second = await world.submit(IncreaseQuota("eve", 2))
        assert await world.history(first.request_id) == first.decisions
        assert await world.history(second.request_id) == second.decisions
        assert tuple(await world.gov.decisions.for_request("unknown")) == ()
        with pytest.raises(RequestNotFoundError):
            await world.gov.decision_history("unknown")

    async def test_submitted_decision_keeps_the_requester_context(self, world: World) -> None:
        """The SUBMITTED decision carries the requester's own context."""
        context = MutationContext.user("alice", reason="quarter end", timestamp=T0)
        request = await world.gov.submit(
            IncreaseQuota("bob", 1), state_id=STATE_ID, context=context
        )
        assert request.decisions[0].context == context
        assert request.context == context
