"""Billing quotas: capped increases, no negative quotas, and an all-or-nothing monthly reset.

The state maps users to their API quota. Two policies guard it: ``MaxQuotaPolicy`` caps
increases at 100 and ``PreventNegativeQuotaPolicy`` stops decreases below zero.

1. Emergency increase: one batch raises alice (50 + 15) and bob (95 + 10). Alice's step
   succeeds, bob's is denied by the cap, and the batch stops there: a batch is all or
   nothing, so nothing of it is committed.
2. Refund: a decrease below zero is denied by the second policy.
3. Monthly reset: the system resets every user's quota to 0 in one batch.

The engine statistics are printed at the end under "metrics".
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from mutator import (
    EngineOptions,
    EngineStatistics,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    RiskLevel,
    ValidationResult,
)

CAP = 100
STATE_ID = "quotas:acme"


@attrs.frozen
class Quotas:
    quotas: dict[str, int]


@attrs.frozen
class IncreaseQuota(Mutation[Quotas]):
    user: str
    amount: int
    intent: ClassVar[MutationIntent] = MutationIntent(
        "quota.increase", category="billing", risk=RiskLevel.MEDIUM
    )

    def validate(self, state: Quotas) -> ValidationResult:
        if self.amount <= 0:
            return ValidationResult.error("amount", "must be positive")
        return ValidationResult.ok()

    def apply(self, state: Quotas) -> Quotas:
        return Quotas({**state.quotas, self.user: state.quotas.get(self.user, 0) + self.amount})


@attrs.frozen
class DecreaseQuota(Mutation[Quotas]):
    user: str
    amount: int
    intent: ClassVar[MutationIntent] = MutationIntent(
        "quota.decrease", category="billing", risk=RiskLevel.HIGH
    )

    def apply(self, state: Quotas) -> Quotas:
        return Quotas({**state.quotas, self.user: state.quotas.get(self.user, 0) - self.amount})


@attrs.frozen
class ResetQuota(Mutation[Quotas]):
    user: str
    intent: ClassVar[MutationIntent] = MutationIntent(
        "quota.reset", category="billing", risk=RiskLevel.HIGH
    )

    def apply(self, state: Quotas) -> Quotas:
        return Quotas({**state.quotas, self.user: 0})


class MaxQuotaPolicy(MutationPolicy[Quotas]):
    """No increase may take a quota above the cap."""

    priority = 100

    def evaluate(self, mutation: Any, state: Quotas, context: MutationContext) -> PolicyDecision:
        if not isinstance(mutation, IncreaseQuota):
            return PolicyDecision.allow()
        after = state.quotas.get(mutation.user, 0) + mutation.amount
        if after > CAP:
            return PolicyDecision.deny(f"{mutation.user} would have {after}, the cap is {CAP}")
        return PolicyDecision.allow()


class PreventNegativeQuotaPolicy(MutationPolicy[Quotas]):
    """No decrease may take a quota below zero."""

    priority = 100

    def evaluate(self, mutation: Any, state: Quotas, context: MutationContext) -> PolicyDecision:
        if not isinstance(mutation, DecreaseQuota):
            return PolicyDecision.allow()
        after = state.quotas.get(mutation.user, 0) - mutation.amount
        if after < 0:
            return PolicyDecision.deny(f"{mutation.user} would have {after}, below zero")
        return PolicyDecision.allow()


def show_metrics(stats: EngineStatistics) -> None:
    print("metrics:")
    print(
        f"  executed={stats.total_executed} succeeded={stats.succeeded} failed={stats.failed} "
        f"p50={stats.p50 * 1000:.2f}ms p95={stats.p95 * 1000:.2f}ms"
    )


async def main() -> dict[str, Any]:
    engine: MutationEngine = MutationEngine(
        EngineOptions.strict(), policies=[MaxQuotaPolicy(), PreventNegativeQuotaPolicy()]
    )
    state = Quotas({"alice": 50, "bob": 95, "carol": 20})
    print(f"start: {state.quotas}")

    print("1) emergency increase (one batch)")
    support = MutationContext.user("support-desk", reason="incident INC-7: traffic spike")
    emergency = await engine.execute_batch(
        [IncreaseQuota("alice", 15), IncreaseQuota("bob", 10)],
        state,
        context=support,
        state_id=STATE_ID,
    )
    for step in emergency.results:
        print(f"  step: {step.status.name}")
    assert emergency.failed is not None
    for decision in emergency.failed.blocking_decisions:
        print(f"  blocked by {decision.policy_name}: {decision.reason}")
    print(
        f"  batch ok={emergency.ok} succeeded={emergency.success_count} "
        f"failed={emergency.failure_count} final_state={emergency.final_state}"
    )
    history = await engine.history(STATE_ID)
    print(f"  history entries after the failed batch: {len(history)}")

    print("2) refund larger than the quota")
    refund = await engine.execute(
        DecreaseQuota("carol", 30), state, context=support, state_id=STATE_ID
    )
    print(f"  {refund.status.name}: {refund.error_message}")

    print("3) monthly reset (system context, one batch)")
    system = MutationContext.system("monthly quota reset")
    reset = await engine.execute_batch(
        [ResetQuota(user) for user in sorted(state.quotas)],
        state,
        context=system,
        state_id=STATE_ID,
    )
    assert reset.final_state is not None
    print(
        f"  batch ok={reset.ok} executed={len(reset.results)} succeeded={reset.success_count} "
        f"changes={list(reset.changes.paths())}"
    )
    print(f"  final quotas: {reset.final_state.quotas}")
    history = await engine.history(STATE_ID)
    print(f"  history entries: {len(history)} (one per reset step)")

    stats = await engine.statistics()
    show_metrics(stats)
    return {
        "emergency": emergency,
        "refund": refund,
        "reset": reset,
        "history": history,
        "statistics": stats,
    }
