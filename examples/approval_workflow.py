"""Approval workflow: a request walks through two approval steps to APPROVED.

A quota increase above 20 needs two approvals in order: first anyone with the ``finance``
role, then the team lead ``carol``. The requester may not approve their own request
(four-eyes), and an approval out of order is refused.
"""

from __future__ import annotations

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
    ApprovalError,
    Governance,
    MutationRegistry,
    MutationRequest,
    RequestStatus,
)


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

    def apply(self, state: Quotas) -> Quotas:
        return Quotas({**state.quotas, self.user: state.quotas.get(self.user, 0) + self.amount})


class LargeIncreaseNeedsTwoSteps(MutationPolicy[Quotas]):
    """Increases above 20 need finance, then the team lead."""

    priority = 100

    def evaluate(self, mutation: Any, state: Quotas, context: MutationContext) -> PolicyDecision:
        if mutation.amount <= 20:
            return PolicyDecision.allow()
        return PolicyDecision.require_approval(
            PolicyRequirement.approval(role="finance", step=1, reason="budget check"),
            PolicyRequirement.approval("carol", step=2, reason="team lead sign-off"),
            reason=f"increase of {mutation.amount} exceeds 20",
        )


def show(request: MutationRequest) -> None:
    print(f"request {request.request_id[:8]} is {request.status.name}", end="")
    if request.pending_reason is not None:
        print(f" ({request.pending_reason.name}, active step {request.active_step})", end="")
    print()
    for slot in request.approval_requirements:
        decided = f" by {slot.decided_by}" if slot.decided_by else ""
        print(f"  step {slot.step}: {slot.target:<16} {slot.status.name}{decided}")


async def main() -> MutationRequest:
    registry = MutationRegistry()
    registry.register(IncreaseQuota, name="quota.increase")
    engine = MutationEngine(policies=[LargeIncreaseNeedsTwoSteps()])
    gov = Governance(engine, registry=registry)
    await gov.states.put("quotas:acme", Quotas({"alice": 10}))

    bob = MutationContext.user("bob", reason="alice moves to the enterprise plan")
    request = await gov.submit(IncreaseQuota("alice", 50), state_id="quotas:acme", context=bob)
    show(request)

    refusals = [
        ("bob approves his own request", MutationContext.user("bob", roles=["finance"])),
        ("carol approves before finance", MutationContext.user("carol")),
    ]
    for label, context in refusals:
        try:
            await gov.approve(request.request_id, context=context)
        except ApprovalError as error:
            print(f"refused: {label}: {type(error).__name__}")

    dana = MutationContext.user("dana", roles=["finance"], reason="within budget")
    request = await gov.approve(request.request_id, context=dana)
    show(request)
    carol = MutationContext.user("carol", reason="approved for the launch")
    request = await gov.approve(request.request_id, context=carol)
    show(request)
    assert request.status is RequestStatus.APPROVED

    print("decision history:")
    for decision in await gov.decision_history(request.request_id):
        print(f"  {decision.timestamp:%H:%M:%S} {decision}")
    return request
