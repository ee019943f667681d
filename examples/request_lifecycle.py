"""Request lifecycle: pending, approved, cancelled and expired requests side by side.

Three requests are submitted at a fixed time (the governance clock is injected, so the
run is deterministic):

* ``quota-increase``: a large quota increase needs a finance approval; it waits
  PENDING(APPROVAL) and expires in 6 hours unless approved;
* ``monthly-reset``: a reset scheduled by the billing service waits PENDING(SCHEDULE),
  but its deadline has already passed;
* ``checkout-rollout``: a feature rollout is allowed by policies (APPROVED), then sent
  back to PENDING(EXTERNAL_CHECK) until a load test passes.

The pending requests are listed globally and per state. Then finance approves the quota
increase, the rollout is cancelled when the load test fails, and the expiry sweep
(``expire_due``) expires the overdue reset. Final statuses and every decision are printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
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
    Governance,
    MutationRegistry,
    MutationRequest,
    PendingReason,
    RequestStatus,
)

NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)


@attrs.frozen
class Quotas:
    quotas: dict[str, int]


@attrs.frozen
class Flags:
    enabled: frozenset[str]


@attrs.frozen
class IncreaseQuota(Mutation[Quotas]):
    user: str
    amount: int
    intent: ClassVar[MutationIntent] = MutationIntent(
        "quota.increase", category="billing", risk=RiskLevel.MEDIUM
    )

    def apply(self, state: Quotas) -> Quotas:
        return Quotas({**state.quotas, self.user: state.quotas.get(self.user, 0) + self.amount})


@attrs.frozen
class ResetQuotas(Mutation[Quotas]):
    intent: ClassVar[MutationIntent] = MutationIntent(
        "quota.reset_all", category="billing", risk=RiskLevel.HIGH
    )

    def apply(self, state: Quotas) -> Quotas:
        return Quotas(dict.fromkeys(state.quotas, 0))


@attrs.frozen
class EnableFlag(Mutation[Flags]):
    flag: str
    intent: ClassVar[MutationIntent] = MutationIntent(
        "flag.enable", category="feature-flags", risk=RiskLevel.HIGH
    )

    def apply(self, state: Flags) -> Flags:
        return Flags(state.enabled | {self.flag})


class LargeIncreaseNeedsFinance(MutationPolicy[Quotas]):
    """Quota increases above 20 need someone from finance."""

    state_type = Quotas

    def evaluate(self, mutation: Any, state: Quotas, context: MutationContext) -> PolicyDecision:
        if isinstance(mutation, IncreaseQuota) and mutation.amount > 20:
            return PolicyDecision.require_approval(
                PolicyRequirement.approval(role="finance"),
                reason=f"increase of {mutation.amount} exceeds 20",
            )
        return PolicyDecision.allow()


def line(request: MutationRequest) -> str:
    reason = f"({request.pending_reason.name})" if request.pending_reason else ""
    expires = f" expires {request.expires_at:%Y-%m-%d %H:%M}" if request.expires_at else ""
    return f"{request.request_id:<17} {request.status.name}{reason}{expires}"


def show(title: str, requests: Sequence[MutationRequest]) -> None:
    print(f"  {title}: {len(requests)}")
    for request in requests:
        print(f"    {line(request)}")


async def main() -> dict[str, Any]:
    registry = MutationRegistry()
    for mutation_class in (IncreaseQuota, ResetQuotas, EnableFlag):
        registry.register(mutation_class)
    engine: MutationEngine = MutationEngine(policies=[LargeIncreaseNeedsFinance()])
    gov = Governance(engine, registry=registry, clock=lambda: NOW)
    await gov.states.put("quotas:acme", Quotas({"alice": 40, "bob": 70}))
    await gov.states.put("flags:web", Flags(frozenset()))
    print(f"clock: {NOW:%Y-%m-%d %H:%M} UTC")

    print("1) submit")
    bob = MutationContext.user("bob", reason="alice moves to the enterprise plan")
    quota = await gov.submit(
        IncreaseQuota("alice", 50),
        state_id="quotas:acme",
        context=bob,
        expires_at=NOW + timedelta(hours=6),
        request_id="quota-increase",
    )
    billing = MutationContext.service("billing-scheduler", reason="monthly reset")
    reset = await gov.submit(
        ResetQuotas(),
        state_id="quotas:acme",
        context=billing,
        pending_reason=PendingReason.SCHEDULE,
        expires_at=NOW - timedelta(minutes=5),
        request_id="monthly-reset",
    )
    dev = MutationContext.user("dana", reason="launch the new checkout")
    rollout = await gov.submit(
        EnableFlag("new-checkout"), state_id="flags:web", context=dev, request_id="checkout-rollout"
    )
    for request in (quota, reset, rollout):
        print(f"    {line(request)}")
    sre = MutationContext.user("sam", roles=["sre"])
    rollout = await gov.move_to_pending(
        rollout.request_id, PendingReason.EXTERNAL_CHECK, context=sre, note="waiting for load test"
    )
    print(f"  moved: {line(rollout)}")

    print("2) list pending")
    pending_all = await gov.pending()
    show("pending (all states)", pending_all)
    pending_quotas = await gov.pending(state_id="quotas:acme")
    show("pending on quotas:acme", pending_quotas)
    show("pending EXTERNAL_CHECK", await gov.pending(PendingReason.EXTERNAL_CHECK))

    print("3) decide")
    finance = MutationContext.user("fiona", roles=["finance"], reason="within budget")
    quota = await gov.approve(quota.request_id, context=finance)
    print(f"  fiona (finance) approves: {line(quota)}")
    rollout = await gov.cancel(rollout.request_id, context=sre, reason="load test failed")
    print(f"  sam cancels the rollout: {line(rollout)}")
    sweep = await gov.expire_due()
    print(f"  expire_due() expired {[r.request_id for r in sweep.expired]}")

    print("4) final statuses and decision histories")
    page = await gov.list()
    statuses = {request.request_id: request.status for request in page.items}
    for request in page.items:
        print(f"  {line(request)}")
        for decision in await gov.decision_history(request.request_id):
            print(f"      {decision}")
    assert statuses["quota-increase"] is RequestStatus.APPROVED
    return {
        "statuses": statuses,
        "pending_all": tuple(r.request_id for r in pending_all),
        "pending_quotas": tuple(r.request_id for r in pending_quotas),
        "expired": tuple(r.request_id for r in sweep.expired),
        "requests": {request.request_id: request for request in page.items},
    }
