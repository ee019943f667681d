"""Versioned resolution: what happens to an approved request when the state moved on.

A request remembers the state version its policies were evaluated against
(``expected_state_version``). Before it runs it is resolved against the current version:

* same version: EXECUTE_APPROVED_VERSION, whatever the strategy;
* newer version with REJECT_STALE: REJECTED_AS_STALE, the request is rejected;
* newer version with REQUIRE_RENEWED_APPROVAL: back to PENDING(APPROVAL) for a fresh
  approval round, now expecting the current version;
* newer version with REVALIDATE_ON_LATEST_STATE: PENDING(REVALIDATION), executable
  against the current version, whose checks then act as the revalidation.

Six requests are approved against version 1. Three are resolved while the state is still
at version 1 and three after it moved to version 2, one request per strategy each time.
For each the outcome, staleness, status, new expected version, last decision and revision
are printed.
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
    Governance,
    MutationRegistry,
    Resolution,
    ResolutionStrategy,
)

STATE_ID = "pricing:eu"


@attrs.frozen
class Prices:
    prices: dict[str, int]


@attrs.frozen
class SetPrice(Mutation[Prices]):
    plan: str
    cents: int
    intent: ClassVar[MutationIntent] = MutationIntent(
        "price.set", category="pricing", risk=RiskLevel.HIGH
    )

    def apply(self, state: Prices) -> Prices:
        return Prices({**state.prices, self.plan: self.cents})


class PricingLeadApproves(MutationPolicy[Prices]):
    """Every price change needs the pricing lead."""

    def evaluate(self, mutation: Any, state: Prices, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(
            PolicyRequirement.approval(role="pricing-lead"), reason="prices are public"
        )


def show(label: str, resolution: Resolution) -> None:
    request = resolution.request
    status = request.status.name
    if request.pending_reason is not None:
        status += f"({request.pending_reason.name})"
    last = request.last_decision
    print(f"  {label}")
    print(
        f"    outcome={resolution.outcome.name} stale={resolution.is_stale} "
        f"versions {resolution.expected_version}->{resolution.current_version}"
    )
    print(
        f"    status={status} expected_state_version={request.expected_state_version} "
        f"revision={request.revision}"
    )
    print(f"    last decision: {last}")


async def approved_request(gov: Governance, cents: int) -> str:
    """Submit a price change and have the pricing lead approve it; returns its id."""
    analyst = MutationContext.user("ana", reason="spring pricing")
    lead = MutationContext.user("lee", roles=["pricing-lead"])
    submitted = await gov.submit(SetPrice("basic", cents), state_id=STATE_ID, context=analyst)
    approved = await gov.approve(submitted.request_id, context=lead)
    return approved.request_id


async def main() -> dict[str, Any]:
    registry = MutationRegistry()
    registry.register(SetPrice)
    gov = Governance(MutationEngine(policies=[PricingLeadApproves()]), registry=registry)
    version = await gov.states.put(STATE_ID, Prices({"basic": 900, "pro": 2900}))
    strategies = list(ResolutionStrategy)
    fresh_ids = [await approved_request(gov, 950) for _ in strategies]
    stale_ids = [await approved_request(gov, 990) for _ in strategies]
    print(f"{len(fresh_ids) + len(stale_ids)} requests approved against version {version}")

    print(f"1) resolve against the matching version {version}")
    matching: dict[ResolutionStrategy, Resolution] = {}
    for strategy, request_id in zip(strategies, fresh_ids, strict=True):
        matching[strategy] = await gov.resolve(request_id, strategy=strategy)
        show(strategy.name, matching[strategy])

    current = await gov.states.get(STATE_ID)
    assert current is not None
    newer = await gov.states.put(
        STATE_ID, Prices({**current.state.prices, "pro": 3200}), expected_version=current.version
    )
    print(f"2) the state moved on to version {newer}; resolve against it")
    stale: dict[ResolutionStrategy, Resolution] = {}
    for strategy, request_id in zip(strategies, stale_ids, strict=True):
        stale[strategy] = await gov.resolve(request_id, strategy=strategy)
        show(strategy.name, stale[strategy])
    return {"matching": matching, "stale": stale, "versions": (version, newer)}
