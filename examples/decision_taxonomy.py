"""Decision taxonomy: every decision has a category and a code within it.

Decisions about a request fall into three categories: LIFECYCLE (submitted, pending,
approved, rejected, ...), APPROVAL (requested, granted, rejected, ...) and
VERSION_RESOLUTION (validated, rejected as stale, renewed approval required, revalidation
required). This example produces real decisions by walking four requests through
submit / approve / reject / resolve, prints each decision's category and code, and ends
with the whole taxonomy, marking the codes the walk produced.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar

import attrs

from mutator import (
    Mutation,
    MutationContext,
    MutationEngine,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
    RiskLevel,
)
from mutator_governance import (
    ApprovalDecision,
    DecisionCategory,
    Governance,
    LifecycleDecision,
    MutationRegistry,
    RequestDecision,
    ResolutionDecision,
    ResolutionStrategy,
)

CODES: dict[DecisionCategory, type[Enum]] = {
    DecisionCategory.LIFECYCLE: LifecycleDecision,
    DecisionCategory.APPROVAL: ApprovalDecision,
    DecisionCategory.VERSION_RESOLUTION: ResolutionDecision,
}
STATE_ID = "quotas:acme"


@attrs.frozen
class Quotas:
    quotas: dict[str, int]


@attrs.frozen
class SetQuota(Mutation[Quotas]):
    user: str
    value: int
    intent: ClassVar[MutationIntent] = MutationIntent(
        "quota.set", category="billing", risk=RiskLevel.MEDIUM
    )

    def apply(self, state: Quotas) -> Quotas:
        return Quotas({**state.quotas, self.user: self.value})


class LargeQuotaNeedsFinance(MutationPolicy[Quotas]):
    """Quotas above 100 need someone from finance."""

    def evaluate(self, mutation: Any, state: Quotas, context: MutationContext) -> PolicyDecision:
        if mutation.value > 100:
            return PolicyDecision.require_approval(
                PolicyRequirement.approval(role="finance"), reason="quota above 100"
            )
        return PolicyDecision.allow()


def show(label: str, decisions: tuple[RequestDecision, ...] | list[RequestDecision]) -> None:
    print(f"  {label}")
    for decision in decisions:
        print(f"    {decision.category.name:<18} {decision.code.name}")


async def main() -> dict[str, Any]:
    registry = MutationRegistry()
    registry.register(SetQuota)
    gov = Governance(MutationEngine(policies=[LargeQuotaNeedsFinance()]), registry=registry)
    await gov.states.put(STATE_ID, Quotas({"alice": 50}))
    bob = MutationContext.user("bob", reason="customer upgrade")
    finance = MutationContext.user("fiona", roles=["finance"], reason="budget ok")

    print("1) submit, approve, resolve against the current version")
    granted = await gov.submit(SetQuota("alice", 500), state_id=STATE_ID, context=bob)
    await gov.approve(granted.request_id, context=finance)
    await gov.resolve(granted.request_id)
    show(
        "large quota, approved by finance, validated:",
        [*await gov.decision_history(granted.request_id)],
    )

    print("2) submit, reject")
    refused = await gov.submit(SetQuota("alice", 900), state_id=STATE_ID, context=bob)
    await gov.reject(refused.request_id, context=finance, reason="over budget")
    show("larger quota, rejected by finance:", [*await gov.decision_history(refused.request_id)])

    print("3) resolve requests whose state moved on")
    stale = await gov.submit(SetQuota("alice", 60), state_id=STATE_ID, context=bob)
    renew = await gov.submit(SetQuota("alice", 70), state_id=STATE_ID, context=bob)
    revalidate = await gov.submit(SetQuota("alice", 80), state_id=STATE_ID, context=bob)
    current = await gov.states.get(STATE_ID)
    assert current is not None
    await gov.states.put(STATE_ID, Quotas({"alice": 55}), expected_version=current.version)
    walks = [
        (stale, ResolutionStrategy.REJECT_STALE),
        (renew, ResolutionStrategy.REQUIRE_RENEWED_APPROVAL),
        (revalidate, ResolutionStrategy.REVALIDATE_ON_LATEST_STATE),
    ]
    for request, strategy in walks:
        resolution = await gov.resolve(request.request_id, strategy=strategy)
        history = [*await gov.decision_history(request.request_id)]
        show(f"small quota, resolved with {strategy.name} -> {resolution.outcome.name}:", history)

    produced: set[tuple[DecisionCategory, str]] = set()
    for request in (granted, refused, stale, renew, revalidate):
        for decision in await gov.decision_history(request.request_id):
            produced.add((decision.category, decision.code.name))

    print("4) the taxonomy (* = produced above)")
    for category, codes in CODES.items():
        marked = [
            f"{code.name}{'*' if (category, code.name) in produced else ''}" for code in codes
        ]
        print(f"  {category.name}: {', '.join(marked)}")
    return {"produced": frozenset(produced)}
