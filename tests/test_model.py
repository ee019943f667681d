"""Behaviour of the core value types: contexts, intents, side effects, validation, changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import attrs.exceptions
import pytest

from mutator import (
    ActorType,
    ChangeSet,
    ChangeType,
    MutationContext,
    MutationIntent,
    MutationMode,
    PolicyDecision,
    PolicyRequirement,
    RiskLevel,
    Severity,
    SideEffect,
    StateChange,
    ValidationIssue,
    ValidationResult,
)


class TestMutationContext:
    def test_user_factory(self) -> None:
        """user() builds a USER context with name, reason, roles and groups in metadata."""
        context = MutationContext.user(
            "alice", name="Alice", reason="ticket 1", roles=["admin"], groups=("ops", "eu")
        )
        assert context.actor_id == "alice"
        assert context.actor_name == "Alice"
        assert context.actor_type is ActorType.USER
        assert context.reason == "ticket 1"
        assert context.mode is MutationMode.COMMIT
        assert context.metadata["roles"] == ("admin",)
        assert context.metadata["groups"] == ("ops", "eu")
        assert context.roles == ("admin",)
        assert context.groups == ("ops", "eu")

    def test_user_keeps_other_metadata(self) -> None:
        """Extra metadata is kept next to roles."""
        context = MutationContext.user("alice", roles=["r"], metadata={"tenant": "acme"})
        assert dict(context.metadata) == {"tenant": "acme", "roles": ("r",)}

    def test_service_factory(self) -> None:
        """service() builds a SERVICE context and passes other fields through."""
        context = MutationContext.service("billing", reason="nightly", correlation_id="c-1")
        assert context.actor_type is ActorType.SERVICE
        assert context.actor_id == "billing"
        assert context.correlation_id == "c-1"
        assert context.roles == ()

    def test_system_factory_generates_correlation_id(self) -> None:
        """system() is a SYSTEM context with a fresh correlation id unless one is given."""
        first, second = MutationContext.system("cleanup"), MutationContext.system()
        assert first.actor_type is ActorType.SYSTEM
        assert first.actor_id == "system"
        assert first.reason == "cleanup"
        assert first.correlation_id
        assert second.correlation_id
        assert first.correlation_id != second.correlation_id
        assert MutationContext.system(correlation_id="given").correlation_id == "given"

    @pytest.mark.parametrize("actor", ["", "   ", None, 5])
    def test_blank_actor_rejected(self, actor: object) -> None:
        """A blank or non-string actor id is rejected by the factories."""
        with pytest.raises(ValueError, match="actor_id"):
            MutationContext.user(actor)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="actor_id"):
            MutationContext.service(actor)  # type: ignore[arg-type]

    def test_single_role_string_is_one_role(self) -> None:
        """roles='admin' means the one role admin (or is refused), never five letters."""
        try:
            context = MutationContext.user("alice", roles="admin", groups="ops")  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        assert context.roles == ("admin",)
        assert context.groups == ("ops",)

    def test_naive_timestamp_rejected(self) -> None:
        """A naive timestamp is rejected; an aware one is kept."""
        with pytest.raises(ValueError, match="timezone-aware"):
            MutationContext(actor_id="a", timestamp=datetime(2024, 1, 1))
        aware = datetime(2024, 1, 1, tzinfo=UTC)
        assert MutationContext(actor_id="a", timestamp=aware).timestamp == aware

    def test_default_timestamp_is_now_and_aware(self) -> None:
        """The default timestamp is the current aware UTC time."""
        before = datetime.now(UTC)
        context = MutationContext.user("a")
        assert before <= context.timestamp <= datetime.now(UTC)
        assert context.timestamp.tzinfo is not None

    def test_context_is_immutable(self) -> None:
        """A context cannot be changed; evolve derives a variant."""
        context = MutationContext.user("alice")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            context.actor_id = "mallory"  # type: ignore[misc]
        with pytest.raises(TypeError):
            context.metadata["roles"] = ("admin",)  # type: ignore[index]
        preview = attrs.evolve(context, mode=MutationMode.SIMULATE)
        assert preview.mode is MutationMode.SIMULATE
        assert context.mode is MutationMode.COMMIT

    def test_metadata_is_copied(self) -> None:
        """Changing the dict passed as metadata does not change the context."""
        source = {"k": 1}
        context = MutationContext(actor_id="a", metadata=source)
        source["k"] = 2
        assert context.metadata["k"] == 1


class TestMutationIntent:
    @pytest.mark.parametrize("operation", ["", "   ", None])
    def test_blank_operation_rejected(self, operation: object) -> None:
        """An intent needs a non-blank operation."""
        with pytest.raises(ValueError, match="operation"):
            MutationIntent(operation)  # type: ignore[arg-type]

    def test_defaults_and_fields(self) -> None:
        """An intent has sensible defaults and freezes tags and metadata."""
        intent = MutationIntent("quota.set", tags=["a", "b", "a"], metadata={"k": 1})
        assert intent.category == "general"
        assert intent.risk is RiskLevel.LOW
        assert intent.reversible
        assert intent.tags == frozenset({"a", "b"})
        with pytest.raises(TypeError):
            intent.metadata["k"] = 2  # type: ignore[index]

    def test_risk_levels_are_ordered(self) -> None:
        """Risk levels compare, so policies can use thresholds."""
        assert RiskLevel.LOW < RiskLevel.MEDIUM < RiskLevel.HIGH < RiskLevel.CRITICAL


class TestSideEffect:
    def test_critical_requires_action(self) -> None:
        """A CRITICAL side effect always requires action."""
        assert SideEffect("page", severity=Severity.CRITICAL).requires_action
        assert SideEffect("page", severity=Severity.CRITICAL, requires_action=False).requires_action
        assert SideEffect.critical("page", "wake someone").requires_action

    def test_non_critical_does_not_require_action_by_default(self) -> None:
        """Lower severities require action only when asked."""
        assert not SideEffect("mail", severity=Severity.ERROR).requires_action
        assert SideEffect("mail", requires_action=True).requires_action

    @pytest.mark.parametrize("kind", ["", "  "])
    def test_blank_type_rejected(self, kind: str) -> None:
        """A side effect needs a type."""
        with pytest.raises(ValueError, match="type"):
            SideEffect(kind)

    def test_side_effect_is_immutable(self) -> None:
        """Side effects cannot be changed after creation."""
        effect = SideEffect("mail")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            effect.requires_action = True  # type: ignore[misc]


class TestValidationResult:
    def test_ok_is_valid_and_empty(self) -> None:
        """ok() has no issues and is valid."""
        ok = ValidationResult.ok()
        assert ok.is_valid
        assert ok.issues == ()
        assert ok.summary() == ""

    def test_warnings_and_info_never_block(self) -> None:
        """Warnings and infos keep a result valid."""
        result = ValidationResult.warning("a", "careful") + ValidationResult.info("b", "fyi")
        assert result.is_valid
        assert [i.message for i in result.warnings] == ["careful"]
        assert [i.message for i in result.infos] == ["fyi"]
        assert result.errors == ()

    def test_errors_and_critical_block(self) -> None:
        """An ERROR or CRITICAL issue makes a result invalid."""
        assert not ValidationResult.error("a", "bad").is_valid
        critical = ValidationResult.of([ValidationIssue("a", "worse", severity=Severity.CRITICAL)])
        assert not critical.is_valid
        assert len(critical.errors) == 1

    def test_combination_keeps_every_issue_in_order(self) -> None:
        """+ concatenates issues; one error makes the whole invalid."""
        combined = (
            ValidationResult.warning("w", "careful")
            + ValidationResult.error("quotas.a", "too big", code="max")
            + ValidationResult.ok()
            + ValidationResult.error("", "global")
        )
        assert [i.path for i in combined.issues] == ["w", "quotas.a", ""]
        assert not combined.is_valid
        assert combined.summary() == "quotas.a: too big [max]; global"

    def test_combining_with_ok_is_identity(self) -> None:
        """Adding ok() on either side returns the other result unchanged."""
        error = ValidationResult.error("a", "bad")
        assert ValidationResult.ok() + error == error
        assert error + ValidationResult.ok() == error
        assert ValidationResult.ok().is_valid

    def test_adding_a_non_result_fails(self) -> None:
        """Only validation results can be combined."""
        with pytest.raises(TypeError):
            ValidationResult.ok() + "error"  # type: ignore[operator]

    def test_issue_text_must_be_strings(self) -> None:
        """Issue paths and messages are strings."""
        with pytest.raises(TypeError):
            ValidationIssue("a", None)  # type: ignore[arg-type]


class TestChangeSet:
    def test_is_an_immutable_sequence(self) -> None:
        """A ChangeSet is a sized, indexable, iterable sequence that cannot be changed."""
        first = StateChange.modified("a", 1, 2)
        second = StateChange.added("b", 3)
        changes = ChangeSet([first, second])
        assert len(changes) == 2
        assert changes[0] == first
        assert list(changes) == [first, second]
        assert isinstance(changes[0:1], ChangeSet)
        assert bool(changes)
        assert not ChangeSet()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            changes.changes = ()  # type: ignore[misc]
        assert isinstance(changes.changes, tuple)

    def test_input_list_is_copied(self) -> None:
        """Mutating the list a ChangeSet was built from does not change it."""
        source = [StateChange("a", 1, 2)]
        changes = ChangeSet(source)
        source.append(StateChange("b", 1, 2))
        assert len(changes) == 1

    def test_only_state_changes_allowed(self) -> None:
        """A ChangeSet refuses values that are not StateChange."""
        with pytest.raises(TypeError, match="StateChange"):
            ChangeSet(["a"])  # type: ignore[list-item]

    def test_paths_distinct_in_first_seen_order(self) -> None:
        """paths() lists each changed path once, in first-seen order."""
        changes = ChangeSet.of(
            StateChange("b", 1, 2),
            StateChange("a", 1, 2),
            StateChange("b", 2, 3),
            StateChange("c[0]", 1, 2),
        )
        assert changes.paths() == ("b", "a", "c[0]")
        assert len(changes.for_path("b")) == 2

    def test_touches_respects_path_boundaries(self) -> None:
        """touches(path) matches the path and its children, not siblings with a prefix."""
        changes = ChangeSet.of(StateChange("quotas.alice", 1, 2), StateChange("slots[3]", 1, 2))
        assert changes.touches("quotas")
        assert changes.touches("quotas.alice")
        assert changes.touches("slots")
        assert not changes.touches("quota")
        assert not changes.touches("quotas.al")

    def test_addition_concatenates(self) -> None:
        """+ concatenates two change sets and leaves both operands unchanged."""
        left = ChangeSet.of(StateChange("a", 1, 2))
        right = ChangeSet.of(StateChange("b", 1, 2))
        combined = left + right
        assert combined.paths() == ("a", "b")
        assert left.paths() == ("a",)
        assert right.paths() == ("b",)
        assert left + ChangeSet() == left
        assert ChangeSet() + right == right

    def test_addition_with_non_change_set_fails(self) -> None:
        """Only change sets can be added together."""
        with pytest.raises(TypeError):
            ChangeSet() + [StateChange("a")]  # type: ignore[operator]  # noqa: RUF005

    def test_state_change_factories(self) -> None:
        """StateChange factories set the change type and values."""
        assert StateChange.added("a", 1) == StateChange("a", None, 1, ChangeType.ADDED)
        assert StateChange.removed("a", 1) == StateChange("a", 1, None, ChangeType.REMOVED)
        assert StateChange.replaced("a", 1, "x").type is ChangeType.REPLACED
        assert StateChange("a").type is ChangeType.MODIFIED


class TestPolicyRequirement:
    def test_approval_needs_a_target(self) -> None:
        """An approval without approver, role or group is rejected."""
        with pytest.raises(ValueError, match="approver"):
            PolicyRequirement.approval()
        with pytest.raises(ValueError, match="approver"):
            PolicyRequirement.approval(approvers=["", "  "])

    def test_blank_single_approver_is_not_a_target(self) -> None:
        """A whitespace-only approver is not a target, just like in approvers=[...]."""
        with pytest.raises(ValueError, match="approver"):
            PolicyRequirement.approval("   ")

    def test_approvers_string_is_one_approver(self) -> None:
        """approvers='carol' targets carol (or is refused), never single letters."""
        try:
            requirement = PolicyRequirement.approval(approvers="carol")
        except (TypeError, ValueError):
            return
        assert requirement.approvers == ("carol",)

    @pytest.mark.parametrize("count", [0, -1, True, 1.5])
    def test_required_approvals_at_least_one(self, count: object) -> None:
        """required_approvals must be an int of at least one."""
        with pytest.raises(ValueError, match="required_approvals"):
            PolicyRequirement.approval("carol", required_approvals=count)  # type: ignore[arg-type]

    def test_step_at_least_one(self) -> None:
        """Approval steps start at one."""
        with pytest.raises(ValueError, match="step"):
            PolicyRequirement.approval("carol", step=0)

    def test_targets(self) -> None:
        """Approver, approvers, role and group are kept; the approver comes first, once."""
        requirement = PolicyRequirement.approval(
            "carol", approvers=["dan", "carol"], role="admin", group="ops", required_approvals=2
        )
        assert requirement.approvers == ("carol", "dan")
        assert (requirement.role, requirement.group) == ("admin", "ops")
        assert requirement.required_approvals == 2
        assert requirement.is_approval
        assert PolicyRequirement.approval(role="admin").approvers == ()
        assert PolicyRequirement.approval(group="ops").group == "ops"

    def test_naive_expiry_rejected(self) -> None:
        """An approval expiry must be timezone-aware."""
        with pytest.raises(ValueError, match="timezone-aware"):
            PolicyRequirement.approval("carol", expires_at=datetime(2030, 1, 1))
        aware = datetime.now(UTC) + timedelta(days=1)
        assert PolicyRequirement.approval("carol", expires_at=aware).expires_at == aware


class TestPolicyDecision:
    def test_factories(self) -> None:
        """allow/deny/require_approval/modify map onto blocks and needs_approval."""
        assert PolicyDecision.allow().allowed
        denied = PolicyDecision.deny("no")
        assert denied.blocks
        assert not denied.needs_approval
        assert denied.severity is Severity.ERROR
        asked = PolicyDecision.require_approval(PolicyRequirement.approval("carol"))
        assert asked.needs_approval
        assert not asked.blocks
        assert asked.reason == "approval required"

    def test_deny_needs_error_severity(self) -> None:
        """A denial cannot be merely a warning."""
        with pytest.raises(ValueError):
            PolicyDecision.deny("no", severity=Severity.WARNING)

    def test_require_approval_needs_requirements(self) -> None:
        """require_approval without requirements is rejected."""
        with pytest.raises(ValueError):
            PolicyDecision.require_approval()

    def test_modify_needs_something(self) -> None:
        """modify() without a state or side effects is rejected."""
        with pytest.raises(ValueError):
            PolicyDecision.modify()
