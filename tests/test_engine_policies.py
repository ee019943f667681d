"""Behaviour of policy evaluation inside the engine: order, merging, errors and filtering."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mutator import (
    AuditOutcome,
    EngineOptions,
    MutationContext,
    MutationEngine,
    MutationPolicy,
    MutationResult,
    PolicyConflictError,
    PolicyDecision,
    PolicyEvaluationError,
    PolicyRequirement,
    PolicyTimeoutError,
    ResultStatus,
    SideEffect,
)

from ._domain import (
    Fixed,
    Log,
    Other,
    Quotas,
    RecordingInterceptor,
    Returns,
    SetQuota,
    allow,
    approval,
    deny,
    quotas,
    with_quota,
)

pytestmark = pytest.mark.anyio


class Raising(MutationPolicy[Any]):
    """A policy whose evaluation raises a plain exception."""

    name = "raising"

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        raise LookupError("rule table missing")


class Sleepy(MutationPolicy[Any]):
    """An async policy that never decides in time."""

    name = "sleepy"

    async def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        await anyio.sleep(10)
        return PolicyDecision.allow()


def replace(name: str, state: Any, *, priority: int = 0) -> Fixed:
    return Fixed(name, PolicyDecision.modify(state), priority=priority)


def effects(name: str, *kinds: str) -> Fixed:
    return Fixed(name, PolicyDecision.modify(side_effects=[SideEffect(k) for k in kinds]))


def engine_with(*policies: Any, options: EngineOptions | None = None) -> MutationEngine:
    return MutationEngine(options, policies=policies)


class TestEvaluationOrder:
    async def test_priority_desc_then_name(self) -> None:
        """Policies run by priority descending, ties by name, regardless of registration."""
        log: Log = []
        engine = engine_with(
            allow("b", priority=1, log=log),
            allow("z", priority=9, log=log),
            allow("a", priority=1, log=log),
            allow("m", priority=-3, log=log),
        )
        result = await engine.execute(SetQuota("x", 1), quotas())
        assert log == ["policy:z", "policy:a", "policy:b", "policy:m"]
        assert [d.policy_name for d in result.policy_decisions] == ["z", "a", "b", "m"]
        assert [p.name for p in engine.policies] == ["z", "a", "b", "m"]

    async def test_every_policy_is_evaluated_even_after_a_deny(self) -> None:
        """A deny does not short-circuit: every applicable policy is still evaluated."""
        first, second, third = deny("a", priority=3), allow("b", priority=2), deny("c")
        engine = engine_with(first, second, third)
        await engine.execute(SetQuota("x", 1), quotas())
        assert (first.calls, second.calls, third.calls) == (1, 1, 1)


class Deferred(Fixed):
    """A :class:`Fixed` policy that decides asynchronously (after a checkpoint)."""

    async def evaluate(  # type: ignore[override]
        self, mutation: Any, state: Any, context: MutationContext
    ) -> Any:
        await anyio.lowlevel.checkpoint()
        return super().evaluate(mutation, state, context)


class TestAsyncPolicies:
    async def test_async_allows_report_what_each_policy_returned(self) -> None:
        """Awaited decisions appear as returned: the plain allow, or the policy's own."""
        reasoned = PolicyDecision.allow(reason="within budget")
        engine = engine_with(
            Deferred("a", priority=3), Deferred("b", reasoned, priority=2), allow("c")
        )
        result = await engine.execute(SetQuota("x", 1), quotas())
        assert result.status is ResultStatus.SUCCEEDED
        assert [(d.policy_name, d.allowed, d.reason) for d in result.policy_decisions] == [
            ("a", True, None),
            ("b", True, "within budget"),
            ("c", True, None),
        ]

    async def test_async_and_sync_allows_give_equal_results(self) -> None:
        """An async policy that allows leaves the same decisions as its sync twin."""
        awaited = await engine_with(Deferred("a"), allow("b")).execute(SetQuota("x", 1), quotas())
        direct = await engine_with(allow("a"), allow("b")).execute(SetQuota("x", 1), quotas())
        assert awaited.policy_decisions == direct.policy_decisions
        assert awaited.new_state == direct.new_state

    @pytest.mark.parametrize("blocking", ["deny", "approval"])
    async def test_async_refusal_after_async_allows_stops_the_mutation(self, blocking: str) -> None:
        """One awaited refusal among awaited allows decides the outcome."""
        refusal = (
            PolicyDecision.deny("no")
            if blocking == "deny"
            else PolicyDecision.require_approval(PolicyRequirement.approval("lead"))
        )
        engine = engine_with(Deferred("a", priority=2), Deferred("b", refusal))
        result = await engine.execute(SetQuota("x", 1), quotas())
        expected = (
            ResultStatus.POLICY_BLOCKED if blocking == "deny" else ResultStatus.APPROVAL_REQUIRED
        )
        assert result.status is expected
        assert result.new_state is None
        assert [d.policy_name for d in result.policy_decisions] == ["a", "b"]


class TestDenials:
    async def test_any_deny_blocks(self) -> None:
        """One deny among allows blocks the mutation and nothing is applied."""
        engine = engine_with(allow("a"), deny("b", "frozen"), allow("c"))
        result = await engine.execute(SetQuota("x", 1), quotas(), state_id="q")
        assert result.status is ResultStatus.POLICY_BLOCKED
        assert not result.ok
        assert result.new_state is None
        assert len(await engine.history("q")) == 0

    async def test_all_blockers_are_reported(self) -> None:
        """Every denying policy is reported in blocking_decisions and the error message."""
        engine = engine_with(deny("a", "one", priority=2), allow("b", priority=1), deny("c", "two"))
        result = await engine.execute(SetQuota("x", 1), quotas())
        assert [d.policy_name for d in result.policy_decisions] == ["a", "b", "c"]
        assert [d.policy_name for d in result.blocking_decisions] == ["a", "c"]
        assert result.error_message == "a: one; c: two"

    async def test_deny_plus_approval_is_blocked(self) -> None:
        """A deny wins over an approval requirement: POLICY_BLOCKED."""
        engine = engine_with(approval("ask", "carol"), deny("no"))
        result = await engine.execute(SetQuota("x", 1), quotas())
        assert result.status is ResultStatus.POLICY_BLOCKED
        assert [d.policy_name for d in result.blocking_decisions] == ["no"]


class TestApprovals:
    async def test_requirements_from_all_policies_are_collected(self) -> None:
        """Approval requirements from every policy land in result.requirements, in order."""
        engine = engine_with(
            approval("first", "carol", priority=2),
            allow("ok", priority=1),
            approval("second", "dan"),
        )
        result = await engine.execute(SetQuota("x", 1), quotas(), state_id="q")
        assert result.status is ResultStatus.APPROVAL_REQUIRED
        assert not result.ok
        assert [r.approvers for r in result.requirements] == [("carol",), ("dan",)]
        assert result.blocking_decisions == ()
        assert result.new_state is None
        assert result.error_message == "first wants carol; second wants dan"
        assert len(await engine.history("q")) == 0

    async def test_multiple_requirements_from_one_policy(self) -> None:
        """A policy requiring several approvals contributes all of them."""
        decision = PolicyDecision.require_approval(
            PolicyRequirement.approval("carol"),
            PolicyRequirement.approval(role="admin", step=2),
        )
        engine = engine_with(Fixed("two", decision))
        result = await engine.execute(SetQuota("x", 1), quotas())
        assert [(r.approvers, r.role, r.step) for r in result.requirements] == [
            (("carol",), None, 1),
            ((), "admin", 2),
        ]


class TestModifications:
    async def test_replacement_state_replaces_new_state(self) -> None:
        """A policy's replacement state becomes new_state, diffed against the original."""
        replacement = quotas(alice=1, capped=10)
        engine = engine_with(replace("cap", replacement))
        result = await engine.execute(SetQuota("bob", 1000), quotas(alice=1), state_id="q")
        assert result.ok
        assert result.new_state == replacement
        assert result.changes.paths() == ("quotas.capped",)
        (entry,) = (await engine.history("q")).entries
        assert entry.changes.paths() == ("quotas.capped",)

    async def test_side_effects_from_policies_are_appended(self) -> None:
        """Side effects of policies follow the mutation's own, in policy order."""
        own = SideEffect("own")
        engine = engine_with(effects("p1", "a", "b"), effects("p2", "c"))
        result = await engine.execute(
            Returns(lambda s: MutationResult.success(with_quota(s, "x", 1), side_effects=[own])),
            quotas(),
        )
        assert [e.type for e in result.side_effects] == ["own", "a", "b", "c"]
        assert result.changes.paths() == ("quotas.x",)

    async def test_conflicting_replacements_raise(self) -> None:
        """Two policies replacing the state with different values raise PolicyConflictError."""
        engine = engine_with(replace("one", quotas(a=1)), replace("two", quotas(a=2)))
        with pytest.raises(PolicyConflictError) as caught:
            await engine.execute(SetQuota("x", 1), quotas(), state_id="q")
        assert caught.value.key == "state"
        assert set(caught.value.policies) == {"one", "two"}
        assert "one" in str(caught.value)
        assert "two" in str(caught.value)
        assert caught.value.execution_id is not None
        assert len(await engine.history("q")) == 0

    async def test_equal_replacements_are_fine(self) -> None:
        """Two policies replacing the state with equal values agree."""
        engine = engine_with(replace("one", quotas(a=1)), replace("two", quotas(a=1)))
        result = await engine.execute(SetQuota("x", 1), quotas())
        assert result.ok
        assert result.new_state == quotas(a=1)

    async def test_modification_on_blocked_execution_is_ignored(self) -> None:
        """A deny wins over a modification: nothing is applied."""
        engine = engine_with(replace("one", quotas(a=1)), deny("no"))
        result = await engine.execute(SetQuota("x", 1), quotas())
        assert result.status is ResultStatus.POLICY_BLOCKED
        assert result.new_state is None


class TestPolicyErrors:
    async def test_raising_policy_is_named(self) -> None:
        """A raising policy surfaces as PolicyEvaluationError naming it, with the cause."""
        engine = engine_with(Raising())
        with pytest.raises(PolicyEvaluationError) as caught:
            await engine.execute(SetQuota("x", 1), quotas())
        assert caught.value.policy_name == "raising"
        assert "raising" in str(caught.value)
        assert isinstance(caught.value.__cause__, LookupError)
        assert caught.value.execution_id is not None

    async def test_raising_policy_calls_failed_hook_and_is_audited(self) -> None:
        """A raising policy is audited as a failure and reported to interceptors."""
        log: Log = []
        interceptor = RecordingInterceptor(log)
        engine: MutationEngine = MutationEngine(policies=[Raising()], interceptors=[interceptor])
        with pytest.raises(PolicyEvaluationError):
            await engine.execute(SetQuota("x", 1), quotas(), state_id="q")
        assert log == ["before", "failed"]
        (entry,) = await engine.audit.entries("q")
        assert entry.outcome is AuditOutcome.FAILED

    async def test_non_decision_is_an_evaluation_error(self) -> None:
        """A policy returning something other than a PolicyDecision is a PolicyEvaluationError."""
        engine = engine_with(Fixed("sloppy", True))
        with pytest.raises(PolicyEvaluationError) as caught:
            await engine.execute(SetQuota("x", 1), quotas())
        assert caught.value.policy_name == "sloppy"
        assert "bool" in str(caught.value)

    async def test_slow_async_policy_times_out(self) -> None:
        """An async policy exceeding policy_timeout raises PolicyTimeoutError naming it."""
        engine = engine_with(Sleepy(), options=EngineOptions(policy_timeout=0.05))
        with anyio.fail_after(5):
            with pytest.raises(PolicyTimeoutError) as caught:
                await engine.execute(SetQuota("x", 1), quotas())
        assert isinstance(caught.value, PolicyEvaluationError)
        assert caught.value.policy_name == "sleepy"
        assert caught.value.timeout == 0.05
        assert "sleepy" in str(caught.value)


class SlowSync(MutationPolicy[Any]):
    """A sync policy that blocks a little longer than a tiny policy timeout."""

    name = "slow-sync"

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        time.sleep(0.1)
        return PolicyDecision.allow()


class TestPolicyTimeouts:
    async def test_sync_policy_overrun_times_out(self) -> None:
        """A sync policy returning after policy_timeout is reported as PolicyTimeoutError."""
        engine = engine_with(SlowSync(), options=EngineOptions(policy_timeout=0.05))
        with pytest.raises(PolicyTimeoutError) as caught:
            await engine.execute(SetQuota("x", 1), quotas(), state_id="q")
        assert caught.value.policy_name == "slow-sync"
        assert caught.value.execution_id is not None
        assert len(await engine.history("q")) == 0

    async def test_policy_timeout_applies_per_policy(self) -> None:
        """A fast policy next to a generous timeout is unaffected."""
        engine = engine_with(allow("fast"), options=EngineOptions(policy_timeout=5))
        assert (await engine.execute(SetQuota("x", 1), quotas())).ok

    async def test_evaluate_honours_policy_timeout(self) -> None:
        """The dry run enforces policy_timeout too."""
        engine = engine_with(Sleepy(), options=EngineOptions(policy_timeout=0.05))
        with anyio.fail_after(5), pytest.raises(PolicyTimeoutError):
            await engine.evaluate(SetQuota("x", 1), quotas())


class TestApplicability:
    async def test_policy_for_another_state_type_is_skipped(self) -> None:
        """A policy whose state_type does not match the state is not evaluated."""
        other = Fixed("other-only", PolicyDecision.deny("no"), state_type=Other)
        mine = Fixed("quotas-only", PolicyDecision.allow(), state_type=Quotas)
        engine = engine_with(other, mine)
        result = await engine.execute(SetQuota("x", 1), quotas())
        assert result.ok
        assert other.calls == 0
        assert mine.calls == 1
        assert [d.policy_name for d in result.policy_decisions] == ["quotas-only"]

    async def test_policy_for_a_base_class_applies(self) -> None:
        """A policy for a base class applies to subclass states."""
        policy = Fixed("any-object", PolicyDecision.deny("no"), state_type=object)
        engine = engine_with(policy)
        result = await engine.execute(SetQuota("x", 1), quotas())
        assert result.status is ResultStatus.POLICY_BLOCKED

    async def test_unregister_policy(self) -> None:
        """An unregistered policy is no longer evaluated."""
        blocker = deny("blocker")
        engine = engine_with(blocker, allow("keeper"))
        assert not (await engine.execute(SetQuota("x", 1), quotas())).ok
        assert engine.unregister_policy("blocker") == 1
        assert engine.unregister_policy("blocker") == 0
        result = await engine.execute(SetQuota("x", 1), quotas())
        assert result.ok
        assert [p.name for p in engine.policies] == ["keeper"]
        assert blocker.calls == 1

    async def test_register_after_first_use_is_seen(self) -> None:
        """A policy registered after an execution applies to the next one."""
        engine = engine_with()
        assert (await engine.execute(SetQuota("x", 1), quotas())).ok
        engine.register_policy(deny("late"))
        assert not (await engine.execute(SetQuota("x", 1), quotas())).ok


class TestDryRun:
    async def test_evaluate_is_a_dry_run(self) -> None:
        """engine.evaluate reports the verdict without applying, auditing or recording."""
        engine = engine_with(approval("ask", "carol"), allow("ok"))
        evaluation = await engine.evaluate(SetQuota("x", 1), quotas())
        assert evaluation.status is ResultStatus.APPROVAL_REQUIRED
        assert [r.approvers for r in evaluation.requirements] == [("carol",)]
        assert await engine.audit.entries() == []
        assert (await engine.statistics()).total_executed == 0

    async def test_evaluate_reports_blockers(self) -> None:
        """engine.evaluate lists every blocker."""
        engine = engine_with(deny("a"), deny("b"), allow("c"))
        evaluation = await engine.evaluate(SetQuota("x", 1), quotas())
        assert evaluation.status is ResultStatus.POLICY_BLOCKED
        assert [d.policy_name for d in evaluation.blockers] == ["a", "b"]
        assert not evaluation.allowed


_KINDS = st.sampled_from(["allow", "deny", "approval"])
_POLICY_SPECS = st.lists(st.tuples(st.integers(-3, 3), _KINDS), min_size=0, max_size=6).map(
    lambda specs: [(f"p{i}", priority, kind) for i, (priority, kind) in enumerate(specs)]
)


def build(name: str, priority: int, kind: str) -> Fixed:
    if kind == "allow":
        return allow(name, priority=priority)
    if kind == "deny":
        return deny(name, f"{name} says no", priority=priority)
    return approval(name, f"approver-{name}", priority=priority)


def outcome(specs: list[tuple[str, int, str]], backend: str) -> tuple[Any, ...]:
    async def run() -> tuple[Any, ...]:
        engine = engine_with(*(build(*spec) for spec in specs))
        result = await engine.execute(SetQuota("x", 1), quotas())
        return (
            result.status,
            result.policy_decisions,
            result.requirements,
            result.blocking_decisions,
            result.error_message,
        )

    return anyio.run(run, backend=backend)


class TestOrderIndependence:
    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    @given(specs=_POLICY_SPECS, data=st.data())
    def test_registration_order_does_not_matter(
        self, backend: str, specs: list[tuple[str, int, str]], data: st.DataObject
    ) -> None:
        """The decision, status and requirements do not depend on registration order."""
        shuffled = data.draw(st.permutations(specs))
        assert outcome(specs, backend) == outcome(list(shuffled), backend)
