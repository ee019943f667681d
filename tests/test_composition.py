"""Behaviour of policy composition: all_of, any_of and first_decisive."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mutator._composition import (
    ComposedPolicy,
    CompositionMode,
    all_of,
    any_of,
    first_decisive,
)
from mutator._context import MutationContext
from mutator._effects import SideEffect
from mutator._enums import Severity
from mutator._errors import PolicyConflictError, PolicyEvaluationError
from mutator._evaluation import check_policy
from mutator._mutation import Mutation
from mutator._policies import (
    NOTHING,
    MutationPolicy,
    PolicyDecision,
    PolicyModification,
    PolicyRequirement,
)

pytestmark = pytest.mark.anyio


class Touch(Mutation[dict[str, Any]]):
    """A mutation that changes nothing; policies only look at it."""

    def apply(self, state: dict[str, Any]) -> dict[str, Any]:
        return dict(state)


class Fixed(MutationPolicy[Any]):
    """A policy that always returns the same decision and counts its calls."""

    def __init__(self, name: str, decision: PolicyDecision, *, priority: int = 0) -> None:
        self.name = name
        self.priority = priority
        self.decision = decision
        self.calls = 0

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        self.calls += 1
        return self.decision


class AsyncFixed(Fixed):
    """Like :class:`Fixed`, but decides in an ``async def``."""

    async def evaluate(  # type: ignore[override]
        self, mutation: Any, state: Any, context: MutationContext
    ) -> PolicyDecision:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        return self.decision


class Boom(MutationPolicy[Any]):
    """A policy whose evaluation raises."""

    name = "boom"

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        raise RuntimeError("kaboom")


class OnlyInts(Fixed):
    """A policy that applies only to int states."""

    state_type = int


def allow(name: str, *, priority: int = 0, **fields: Any) -> Fixed:
    return Fixed(name, PolicyDecision(True, **fields), priority=priority)


def deny(name: str, reason: str = "no", *, priority: int = 0, **fields: Any) -> Fixed:
    return Fixed(name, PolicyDecision.deny(reason, **fields), priority=priority)


def approval(name: str, approver: str, *, priority: int = 0) -> Fixed:
    requirement = PolicyRequirement.approval(approver)
    return Fixed(name, PolicyDecision.require_approval(requirement), priority=priority)


def effect(name: str, kind: str, *, priority: int = 0) -> Fixed:
    decision = PolicyDecision.modify(side_effects=[SideEffect(kind)])
    return Fixed(name, decision, priority=priority)


def replace(name: str, state: Any, *, priority: int = 0) -> Fixed:
    return Fixed(name, PolicyDecision.modify(state), priority=priority)


def tagged(name: str, *, priority: int = 0, **metadata: Any) -> Fixed:
    return Fixed(name, PolicyDecision(True, metadata=metadata), priority=priority)


async def run(policy: MutationPolicy[Any], state: Any = None) -> PolicyDecision:
    decision = await policy.evaluate(Touch(), {} if state is None else state, MutationContext())  # type: ignore[misc]
    assert isinstance(decision, PolicyDecision)
    return decision


def side_effect_types(decision: PolicyDecision) -> list[str]:
    if decision.modifications is None:
        return []
    return [e.type for e in decision.modifications.side_effects]


class TestAllOf:
    async def test_allows_when_every_child_allows(self) -> None:
        """Every child allowing allows, with all children as winners."""
        decision = await run(all_of("gate", allow("a"), AsyncFixed("b", PolicyDecision(True))))
        assert decision.allowed
        assert decision.policy_name == "gate"
        assert decision.reason == "allowed by a, b"
        assert decision.metadata["composition.winning"] == ("a", "b")
        assert decision.metadata["composition.blocking"] == ()

    async def test_blocks_when_any_child_denies(self) -> None:
        """One denying child blocks the composition and is named in the reason."""
        decision = await run(all_of("gate", allow("a"), deny("b", "frozen")))
        assert decision.blocks
        assert decision.reason == "blocked by b: frozen"
        assert decision.metadata["composition.blocking"] == ("b",)
        assert decision.metadata["composition.winning"] == ()

    async def test_denial_beats_approval(self) -> None:
        """A denial blocks even when another child only asks for approval."""
        decision = await run(all_of("gate", approval("a", "alice"), deny("b")))
        assert decision.blocks
        assert decision.requirements == ()
        assert decision.metadata["composition.blocking"] == ("a", "b")

    async def test_needs_approval_when_a_child_needs_it(self) -> None:
        """Approval-requiring children make the composition need their approvals."""
        decision = await run(all_of("gate", allow("a"), approval("b", "bob"), approval("c", "cy")))
        assert decision.needs_approval
        assert [r.approvers for r in decision.requirements] == [("bob",), ("cy",)]
        assert decision.reason == "approval required by b, c: approval required"

    async def test_evaluates_every_child(self) -> None:
        """All children are evaluated even after a denial."""
        first, second = deny("a", priority=5), allow("b")
        await run(all_of("gate", first, second))
        assert (first.calls, second.calls) == (1, 1)


class TestAnyOf:
    async def test_allows_when_one_child_allows(self) -> None:
        """One allowing child is enough; only allowing children win."""
        decision = await run(any_of("gate", deny("a"), allow("b"), approval("c", "cy")))
        assert decision.allowed
        assert decision.reason == "allowed by b"
        assert decision.metadata["composition.winning"] == ("b",)
        assert decision.metadata["composition.blocking"] == ("a", "c")

    async def test_blocks_when_none_allows_and_one_denies(self) -> None:
        """With no allowing child, any denial blocks."""
        decision = await run(any_of("gate", deny("a", "closed"), approval("b", "bob")))
        assert decision.blocks
        assert decision.reason == "blocked by a: closed"

    async def test_needs_approval_when_no_child_allows_or_denies(self) -> None:
        """Only approval-requiring children make the composition need all their approvals."""
        decision = await run(any_of("gate", approval("a", "alice"), approval("b", "bob")))
        assert decision.needs_approval
        assert [r.approvers for r in decision.requirements] == [("alice",), ("bob",)]

    async def test_only_allowing_children_modify(self) -> None:
        """Modifications of children that did not allow are dropped."""
        loser = PolicyDecision(
            False, "no", modifications=PolicyModification(NOTHING, [SideEffect("lost")])
        )
        decision = await run(any_of("gate", Fixed("a", loser), effect("b", "kept")))
        assert side_effect_types(decision) == ["kept"]


class TestFirstDecisive:
    async def test_first_denial_decides_and_stops(self) -> None:
        """The first denying child decides and later children are not evaluated."""
        later = allow("c", priority=1)
        policy = first_decisive(
            "gate", later, deny("b", "stop", priority=5), allow("a", priority=9)
        )
        decision = await run(policy)
        assert decision.blocks
        assert decision.reason == "blocked by b: stop"
        assert later.calls == 0
        assert decision.metadata["composition.policies"] == ("a", "b")

    async def test_first_modification_decides(self) -> None:
        """A modifying child decides even though it allows."""
        policy = first_decisive("gate", effect("a", "audit", priority=2), deny("b", priority=1))
        decision = await run(policy)
        assert decision.allowed
        assert side_effect_types(decision) == ["audit"]
        assert decision.metadata["composition.winning"] == ("a",)

    async def test_first_approval_decides(self) -> None:
        """An approval-requiring child decides with its requirements."""
        policy = first_decisive("gate", approval("a", "alice", priority=2), deny("b", priority=1))
        decision = await run(policy)
        assert decision.needs_approval
        assert [r.approvers for r in decision.requirements] == [("alice",)]

    async def test_empty_requirements_are_not_decisive(self) -> None:
        """An allowing child with an empty requirements tuple does not stop evaluation."""
        empty = Fixed("a", PolicyDecision(True, requirements=()), priority=2)
        decision = await run(first_decisive("gate", empty, deny("b", "late", priority=1)))
        assert decision.blocks
        assert decision.reason == "blocked by b: late"

    async def test_allows_with_every_child_when_none_is_decisive(self) -> None:
        """Without a decisive child the composition allows with all children as winners."""
        decision = await run(first_decisive("gate", allow("b"), allow("a")))
        assert decision.allowed
        assert decision.metadata["composition.winning"] == ("a", "b")


class TestMerging:
    async def test_severity_is_highest_of_contributors(self) -> None:
        """The composed severity is the maximum among contributing children."""
        blocked = await run(
            all_of("gate", deny("a"), Fixed("b", PolicyDecision.deny_critical("x")))
        )
        allowed = await run(all_of("gate", allow("a", severity=Severity.WARNING), allow("b")))
        assert blocked.severity is Severity.CRITICAL
        assert allowed.severity is Severity.WARNING

    async def test_side_effects_concatenate_in_priority_order(self) -> None:
        """Side effects of all contributors are concatenated in evaluation order."""
        decision = await run(
            all_of("gate", effect("a", "first", priority=1), effect("b", "second"))
        )
        assert side_effect_types(decision) == ["first", "second"]

    async def test_unequal_replacement_states_conflict(self) -> None:
        """Two children replacing the state differently raise a conflict naming everyone."""
        policy = all_of("gate", replace("a", {"v": 1}), replace("b", {"v": 2}))
        with pytest.raises(PolicyConflictError) as caught:
            await run(policy)
        assert caught.value.key == "state"
        assert caught.value.policies == ("a", "b")
        assert caught.value.composition == "gate"

    async def test_equal_replacement_states_merge(self) -> None:
        """Children replacing the state with equal values merge into one replacement."""
        decision = await run(all_of("gate", replace("a", {"v": 1}), replace("b", {"v": 1})))
        assert decision.modifications is not None
        assert decision.modifications.state == {"v": 1}

    async def test_equal_metadata_merges(self) -> None:
        """Equal metadata values from several children merge quietly."""
        decision = await run(all_of("gate", tagged("a", owner="ops"), tagged("b", owner="ops")))
        assert decision.metadata["owner"] == "ops"
        assert decision.metadata["composition.mode"] == "all_of"

    async def test_metadata_conflict_names_key(self) -> None:
        """Unequal metadata values for one key raise a conflict on ``metadata:<key>``."""
        policy = any_of("gate", tagged("a", owner="ops"), tagged("b", owner="dev"))
        with pytest.raises(PolicyConflictError) as caught:
            await run(policy)
        assert caught.value.key == "metadata:owner"
        assert caught.value.policies == ("a", "b")
        assert caught.value.composition == "gate"

    async def test_nested_compositions(self) -> None:
        """Composed policies nest, and their own composition keys do not conflict."""
        inner_any = any_of("inner-any", deny("x"), effect("y", "from-any"))
        inner_all = all_of("inner-all", allow("z"), approval("w", "wanda"))
        decision = await run(all_of("outer", inner_any, inner_all))
        assert decision.needs_approval
        assert decision.metadata["composition.policies"] == ("inner-all", "inner-any")
        assert decision.metadata["composition.blocking"] == ("inner-all",)
        allowed = await run(all_of("outer", inner_any, allow("v")))
        assert side_effect_types(allowed) == ["from-any"]

    async def test_raising_child_names_itself(self) -> None:
        """A child that raises becomes a PolicyEvaluationError naming that child."""
        with pytest.raises(PolicyEvaluationError) as caught:
            await run(any_of("outer", allow("a"), all_of("inner", Boom())))
        assert caught.value.policy_name == "boom"
        assert isinstance(caught.value.__cause__, RuntimeError)

    async def test_non_decision_result_is_an_error(self) -> None:
        """A child returning something other than a decision is a PolicyEvaluationError."""
        with pytest.raises(PolicyEvaluationError, match="'odd'"):
            await run(all_of("gate", Fixed("odd", "yes")))  # type: ignore[arg-type]

    async def test_children_for_other_state_types_are_skipped(self) -> None:
        """Children whose state_type does not match the state are not evaluated."""
        ints = OnlyInts("ints", PolicyDecision.deny("no ints"))
        decision = await run(all_of("gate", ints, allow("any")), state={"k": 1})
        assert decision.allowed
        assert ints.calls == 0
        assert (await run(all_of("gate", ints), state=3)).blocks
        nothing = await run(first_decisive("gate", ints), state={})
        assert nothing.allowed
        assert nothing.reason == "no policy in composition 'gate' applies"


class TestValidation:
    @pytest.mark.parametrize("name", ["", "   ", None, 7])
    def test_name_must_be_non_blank(self, name: Any) -> None:
        """A blank or non-string name is rejected."""
        with pytest.raises(ValueError, match="non-blank name"):
            all_of(name, allow("a"))

    def test_needs_a_child(self) -> None:
        """A composition without children is rejected."""
        with pytest.raises(ValueError, match="at least one"):
            any_of("gate")

    @pytest.mark.parametrize("child", [object(), None, Fixed("", PolicyDecision(True))])
    def test_children_must_be_policies(self, child: Any) -> None:
        """Objects that cannot act as policies are rejected."""
        with pytest.raises(TypeError):
            first_decisive("gate", allow("a"), child)

    def test_priority_must_be_int(self) -> None:
        """A non-int priority is rejected."""
        with pytest.raises(TypeError, match="priority"):
            all_of("gate", allow("a"), priority=True)

    def test_attributes(self) -> None:
        """A composition exposes its settings and its children in evaluation order."""
        a, b, c = allow("a"), allow("b", priority=3), allow("c")
        policy = any_of("gate", c, a, b, priority=7, description="either")
        assert (policy.name, policy.priority, policy.description) == ("gate", 7, "either")
        assert policy.state_type is None
        assert policy.mode is CompositionMode.ANY_OF
        assert policy.policies == (b, a, c)
        assert check_policy(policy) is policy
        assert isinstance(policy, ComposedPolicy)
        assert repr(policy) == "ComposedPolicy('gate', any_of, ['b', 'a', 'c'])"

    def test_mode_values(self) -> None:
        """Each mode has a stable string value."""
        assert [m.value for m in CompositionMode] == ["all_of", "any_of", "first_decisive"]


KINDS = ("allow", "deny", "approve", "modify")


def make_child(index: int, kind: str, priority: int) -> Fixed:
    name = f"p{index}"
    if kind == "allow":
        return allow(name, priority=priority)
    if kind == "deny":
        return deny(name, f"{name} says no", priority=priority)
    if kind == "approve":
        return approval(name, f"approver-{name}", priority=priority)
    return effect(name, f"effect-{name}", priority=priority)


@st.composite
def children_and_permutation(draw: st.DrawFn) -> tuple[list[Fixed], list[Fixed]]:
    specs = draw(
        st.lists(
            st.tuples(st.sampled_from(KINDS), st.integers(min_value=-2, max_value=2)),
            min_size=1,
            max_size=6,
        )
    )
    children = [make_child(i, kind, priority) for i, (kind, priority) in enumerate(specs)]
    return children, draw(st.permutations(children))


class TestProperties:
    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    @pytest.mark.parametrize("mode", list(CompositionMode))
    @settings(max_examples=40, deadline=None)
    @given(drawn=children_and_permutation())
    def test_outcome_does_not_depend_on_argument_order(
        self, backend: str, mode: CompositionMode, drawn: tuple[list[Fixed], list[Fixed]]
    ) -> None:
        """Allowed, requirements and side effects are the same for any order of children."""
        children, shuffled = drawn

        async def outcome(policies: list[Fixed]) -> tuple[bool, Any, list[str]]:
            decision = await run(ComposedPolicy("gate", mode, policies))
            return decision.allowed, decision.requirements, side_effect_types(decision)

        original = anyio.run(outcome, children, backend=backend)
        permuted = anyio.run(outcome, shuffled, backend=backend)
        assert original == permuted
