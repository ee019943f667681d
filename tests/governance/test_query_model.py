"""The query model: the reference semantics of every filter group, presets and bad input."""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs
import pytest
from hypothesis import given, settings

from mutator import (
    BlastRadius,
    BlastRadiusScope,
    MutationContext,
    MutationIntent,
    Severity,
    SideEffect,
)
from mutator_governance import (
    ApprovalDecision,
    ApprovalQuery,
    ApprovalRequirement,
    ApprovalStatus,
    DecisionCategory,
    DecisionQuery,
    LifecycleDecision,
    PendingReason,
    RequestDecision,
    RequestQuery,
    RequestStatus,
    ResolutionDecision,
    TagMatch,
)
from mutator_governance.testing import SamplePayload, sample_request

from ..strategies import query_corpus, request_queries
from .conftest import T0

MIN = timedelta(minutes=1)


def intent(**fields) -> MutationIntent:
    return MutationIntent("testing.sample.set", **fields)


def decision(code, actor: str | None = "alice", at: datetime = T0, name=None) -> RequestDecision:
    return RequestDecision(code, MutationContext(actor_id=actor, actor_name=name), None, at)


class TestScopeAndActor:
    def test_every_scope_set_is_a_membership_test(self) -> None:
        """Request ids, state ids, state types and mutation types each filter by membership."""
        request = sample_request("r1", state_id="s:a", state_type="billing.Quota")
        assert RequestQuery(request_ids={"r1", "r2"}).matches(request)
        assert not RequestQuery(request_ids={"r2"}).matches(request)
        assert RequestQuery(state_types={"billing.Quota"}).matches(request)
        assert not RequestQuery(state_types={"other"}).matches(request)
        assert RequestQuery(mutation_types={"testing.sample"}).matches(request)
        assert not RequestQuery(mutation_types={"quota.raise"}).matches(request)

    def test_a_missing_actor_never_matches_an_actor_filter(self) -> None:
        """A request without actor id or name is excluded by any non-empty actor filter."""
        anonymous = sample_request(context=MutationContext.system())
        named = sample_request(context=MutationContext.user("bob", name="Bob"))
        assert not RequestQuery(actor_ids={"bob"}).matches(anonymous)
        assert not RequestQuery(actor_names={"Bob"}).matches(anonymous)
        assert RequestQuery(actor_ids={"bob"}, actor_names={"Bob", "Robert"}).matches(named)
        assert RequestQuery().matches(anonymous)

    def test_groups_are_anded(self) -> None:
        """A request must satisfy every given group, not just one."""
        request = sample_request(state_id="s:a", actor_id="bob")
        assert RequestQuery(state_ids={"s:a"}, actor_ids={"bob"}).matches(request)
        assert not RequestQuery(state_ids={"s:a"}, actor_ids={"carol"}).matches(request)


class TestIntent:
    def test_tags_match_any_by_default_and_all_on_request(self) -> None:
        """TagMatch.ANY needs one listed tag on the intent, TagMatch.ALL every one."""
        request = sample_request(intent=intent(tags={"pii", "prod"}))
        assert RequestQuery(tags={"pii", "batch"}).matches(request)
        assert not RequestQuery(tags={"pii", "batch"}, tag_match=TagMatch.ALL).matches(request)
        assert RequestQuery(tags={"pii", "prod"}, tag_match=TagMatch.ALL).matches(request)
        assert not RequestQuery(tags={"batch"}).matches(request)

    def test_categories_and_intent_metadata(self) -> None:
        """Intent categories are a membership test; intent metadata needs every pair."""
        request = sample_request(intent=intent(category="billing", metadata={"team": "a", "n": 1}))
        assert RequestQuery(intent_categories={"billing", "access"}).matches(request)
        assert not RequestQuery(intent_categories={"access"}).matches(request)
        assert RequestQuery(intent_metadata={"team": "a"}).matches(request)
        assert not RequestQuery(intent_metadata={"team": "a", "missing": None}).matches(request)
        assert not RequestQuery(intent_metadata={"team": "b"}).matches(request)

    def test_blast_radius_bounds_are_inclusive_and_need_a_radius(self) -> None:
        """min/max compare on scope order, include the bounds, and exclude a missing radius."""
        module = sample_request(intent=intent(blast_radius=BlastRadius.module()))
        unknown = sample_request(intent=intent(blast_radius=None))
        scope = BlastRadiusScope
        assert RequestQuery(min_blast_radius=scope.MODULE).matches(module)
        assert RequestQuery(max_blast_radius=scope.MODULE).matches(module)
        assert not RequestQuery(min_blast_radius=scope.SYSTEM).matches(module)
        assert not RequestQuery(max_blast_radius=scope.SINGLE).matches(module)
        both = RequestQuery(min_blast_radius=scope.SINGLE, max_blast_radius=scope.GLOBAL)
        assert both.matches(module)
        assert not both.matches(unknown)
        assert not RequestQuery(max_blast_radius=scope.GLOBAL).matches(unknown)


class TestMetadataAndLifecycle:
    def test_metadata_needs_every_key_with_an_equal_value(self) -> None:
        """Request metadata filters compare values exactly; a bool never equals a number."""
        request = sample_request(metadata={"env": "prod", "n": 1, "flag": True})
        assert RequestQuery(metadata={"env": "prod", "n": 1}).matches(request)
        assert not RequestQuery(metadata={"env": "prod", "other": "x"}).matches(request)
        assert RequestQuery(metadata={"flag": True}).matches(request)
        assert not RequestQuery(metadata={"n": True}).matches(request)
        assert not RequestQuery(metadata={"flag": 1}).matches(request)

    def test_a_missing_pending_reason_never_matches(self) -> None:
        """pending_reasons excludes requests without a reason (anything not pending)."""
        approved = sample_request(status=RequestStatus.APPROVED)
        waiting = sample_request(pending_reason=PendingReason.SCHEDULE)
        query = RequestQuery(pending_reasons={PendingReason.SCHEDULE})
        assert query.matches(waiting)
        assert not query.matches(approved)

    def test_decision_categories_match_any_decision(self) -> None:
        """A request matches when any one of its decisions has a listed category."""
        request = sample_request(
            decisions=[decision(LifecycleDecision.SUBMITTED), decision(ApprovalDecision.GRANTED)]
        )
        assert RequestQuery(decision_categories={DecisionCategory.APPROVAL}).matches(request)
        resolution = {DecisionCategory.VERSION_RESOLUTION}
        assert not RequestQuery(decision_categories=resolution).matches(request)

    def test_time_bounds_are_inclusive(self) -> None:
        """created_* and updated_* include requests exactly on the bound."""
        request = sample_request(created_at=T0, updated_at=T0 + MIN)
        assert RequestQuery(created_from=T0, created_to=T0).matches(request)
        assert RequestQuery(updated_from=T0 + MIN, updated_to=T0 + MIN).matches(request)
        assert not RequestQuery(created_from=T0 + MIN).matches(request)
        assert not RequestQuery(updated_to=T0).matches(request)


class TestSideEffects:
    def test_one_side_effect_must_satisfy_every_criterion(self) -> None:
        """Criteria met by two different side effects do not make a match."""
        request = sample_request(
            side_effects=[
                SideEffect("email", severity=Severity.INFO),
                SideEffect("webhook", severity=Severity.ERROR, data=SamplePayload("ops")),
            ]
        )
        assert RequestQuery(side_effect_types={"email"}).matches(request)
        query = RequestQuery(side_effect_types={"email"}, side_effect_severities={Severity.ERROR})
        assert not query.matches(request)
        contract = RequestQuery(
            side_effect_types={"webhook"}, side_effect_contracts={"mutator.testing.sample"}
        )
        assert contract.matches(request)
        assert not RequestQuery(side_effect_contracts={"other"}).matches(request)

    def test_requires_action_and_no_side_effects(self) -> None:
        """requires_action filters on the flag; a request without side effects never matches."""
        critical = sample_request(side_effects=[SideEffect.critical("page")])
        none = sample_request()
        assert RequestQuery(side_effect_requires_action=True).matches(critical)
        assert not RequestQuery(side_effect_requires_action=False).matches(critical)
        assert not RequestQuery(side_effect_requires_action=False).matches(none)
        assert RequestQuery().matches(none)


class TestReducedPredicate:
    CORPUS = query_corpus()

    @settings(max_examples=300, deadline=None)
    @given(query=request_queries(max_filters=4))
    def test_it_answers_as_matches_for_every_request(self, query: RequestQuery) -> None:
        """``predicate()`` keeps only the groups a query sets and never answers otherwise."""
        predicate = query.predicate()
        assert [predicate(r) for r in self.CORPUS] == [query.matches(r) for r in self.CORPUS]

    def test_an_empty_query_matches_everything(self) -> None:
        assert all(map(RequestQuery().predicate(), self.CORPUS))


class TestPresets:
    def test_request_presets(self) -> None:
        """The presets hold the reference's filters and accept further filters."""
        assert RequestQuery.pending() == RequestQuery(statuses={RequestStatus.PENDING})
        queue = RequestQuery.pending_approval_queue(state_ids={"s:a"})
        assert queue.statuses == {RequestStatus.PENDING}
        assert queue.pending_reasons == {PendingReason.APPROVAL}
        assert queue.decision_categories == {DecisionCategory.APPROVAL}
        assert queue.state_ids == {"s:a"}
        recent = RequestQuery.recent_approvals()
        assert recent.statuses == {RequestStatus.APPROVED, RequestStatus.EXECUTED}
        assert recent.decision_categories == {DecisionCategory.APPROVAL}

    def test_view_presets(self) -> None:
        """Approval and decision presets select open approval work and outcomes."""
        pending = ApprovalQuery.pending()
        assert pending.approval_statuses == {ApprovalStatus.PENDING}
        assert pending.request_statuses == {RequestStatus.PENDING}
        assert pending.pending_reasons == {PendingReason.APPROVAL}
        resolutions = DecisionQuery.recent_version_resolutions()
        assert resolutions.categories == {DecisionCategory.VERSION_RESOLUTION}
        outcomes = DecisionQuery.recent_execution_outcomes()
        assert outcomes.categories == {DecisionCategory.LIFECYCLE}
        assert {c.name for c in outcomes.codes} == {
            "EXECUTED",
            "REJECTED",
            "CANCELED",
            "EXPIRED",
            "SUPERSEDED",
        }
        assert all(isinstance(c, LifecycleDecision) for c in outcomes.codes)


class TestViewPredicates:
    def test_approval_query_matches_the_slot_target(self) -> None:
        """Approver filters match the slot; a slot without a role never matches a role filter."""
        by_id = ApprovalRequirement("a1", approver_id="carol")
        by_role = ApprovalRequirement("a2", role="sre")
        request = sample_request(approval_requirements=[by_id, by_role])
        assert ApprovalQuery(approver_ids={"carol"}).matches(request, by_id)
        assert not ApprovalQuery(approver_ids={"carol"}).matches(request, by_role)
        assert ApprovalQuery(approver_roles={"sre"}).matches(request, by_role)
        assert not ApprovalQuery(approver_roles={"sre"}).matches(request, by_id)
        assert not ApprovalQuery(approver_groups={"ops"}).matches(request, by_role)
        assert ApprovalQuery(categories={"testing"}).matches(request, by_id)
        scoped = ApprovalQuery(request=RequestQuery(state_ids={"elsewhere"}))
        assert not scoped.matches(request, by_id)

    def test_approval_view_order_is_step_then_id(self) -> None:
        """A request's slots are listed by step, then approval id."""
        request = sample_request(
            approval_requirements=[
                ApprovalRequirement("b", step=2),
                ApprovalRequirement("z", step=1),
                ApprovalRequirement("a", step=2),
            ]
        )
        assert [v.approval.approval_id for v in ApprovalQuery().views(request)] == ["z", "a", "b"]

    def test_decision_query_codes_are_exact_members(self) -> None:
        """Codes tell a lifecycle rejection from an approval rejection of the same name."""
        lifecycle = decision(LifecycleDecision.REJECTED)
        approval = decision(ApprovalDecision.REJECTED)
        request = sample_request(decisions=[approval, lifecycle])
        query = DecisionQuery(codes={LifecycleDecision.REJECTED})
        assert [v.index for v in query.views(request)] == [1]
        assert DecisionQuery(categories={DecisionCategory.APPROVAL}).matches(request, approval)

    def test_decision_actor_and_time_bounds(self) -> None:
        """Decision actor filters exclude actorless decisions; time bounds are inclusive."""
        system = decision(ResolutionDecision.VALIDATED, actor=None, at=T0)
        named = decision(LifecycleDecision.EXECUTED, actor="w1", at=T0 + MIN, name="Worker")
        request = sample_request(decisions=[system, named])
        system, named = request.decisions  # numbered by the request
        assert [v.decision for v in DecisionQuery(actor_ids={"w1"}).views(request)] == [named]
        assert DecisionQuery(actor_names={"Worker"}).views(request)[0].decision == named
        window = DecisionQuery(decided_from=T0, decided_to=T0)
        assert [v.decision for v in window.views(request)] == [system]


class TestBadInput:
    @pytest.mark.parametrize(
        ("fields", "error", "message"),
        [
            ({"statuses": {"pending"}}, TypeError, "statuses must hold RequestStatus"),
            ({"statuses": 3}, TypeError, "statuses must be a set"),
            ({"state_ids": {""}}, ValueError, "state_ids must hold non-blank strings"),
            ({"tags": {"a": 1}}, TypeError, "tags must be a set"),
            ({"tag_match": "all"}, TypeError, "tag_match must be a TagMatch"),
            ({"min_blast_radius": 2}, TypeError, "min_blast_radius must be a BlastRadiusScope"),
            ({"metadata": ["env"]}, TypeError, "metadata filter must be a mapping"),
            ({"metadata": {1: "x"}}, TypeError, "keys must be strings"),
            ({"created_from": datetime(2030, 1, 1)}, ValueError, "timezone-aware"),
            ({"side_effect_requires_action": 1}, TypeError, "True, False or None"),
        ],
    )
    def test_bad_filters_raise_clear_errors(self, fields, error, message) -> None:
        """Every field checks its input and names itself in the error."""
        with pytest.raises(error, match=message):
            RequestQuery(**fields)

    def test_a_lone_value_is_one_element(self) -> None:
        """A lone string or enum member is taken as a one-element set, not iterated."""
        assert RequestQuery(state_ids="s:a").state_ids == {"s:a"}
        assert RequestQuery(statuses=RequestStatus.PENDING).statuses == {RequestStatus.PENDING}

    def test_view_queries_check_their_input(self) -> None:
        """View queries need a RequestQuery and decision code members."""
        with pytest.raises(TypeError, match="request must be a RequestQuery"):
            ApprovalQuery(request={"statuses": ()})
        with pytest.raises(TypeError, match="codes must be a set of"):
            DecisionQuery(codes={"EXECUTED"})
        with pytest.raises(TypeError, match="approval_statuses must hold ApprovalStatus"):
            ApprovalQuery(approval_statuses={RequestStatus.PENDING})

    def test_queries_are_hashable_values(self) -> None:
        """Equal queries compare and hash equal, so they can key caches."""
        one = RequestQuery(state_ids=["s:a"], metadata={"env": "prod"})
        two = attrs.evolve(RequestQuery(state_ids={"s:a"}), metadata={"env": "prod"})
        assert one == two
        assert hash(RequestQuery.pending()) == hash(RequestQuery.pending())
