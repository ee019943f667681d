"""Governed execution: the full loop, a stale branch, and a compensation.

1. A feature-flag rollout is approved and executed exactly once; its resulting state
   version is recorded on the request.
2. A second request is approved, but the state moves on before it runs: executing it with
   REQUIRE_RENEWED_APPROVAL sends it back for a fresh approval round; once approved again
   it executes against the latest state.
3. The rollout is compensated. Policies still govern the compensation (it needs the release
   manager too); once approved it executes and the original is linked to it in the same
   commit.
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
    CompensationKind,
    CompensationPlan,
    Governance,
    MutationRegistry,
    MutationRequest,
    ResolutionStrategy,
)


@attrs.frozen
class Flags:
    enabled: frozenset[str]


@attrs.frozen
class SetFlag(Mutation[Flags]):
    flag: str
    on: bool
    intent: ClassVar[MutationIntent] = MutationIntent(
        "flag.set", category="feature-flags", risk=RiskLevel.HIGH
    )

    def apply(self, state: Flags) -> Flags:
        enabled = state.enabled | {self.flag} if self.on else state.enabled - {self.flag}
        return Flags(frozenset(enabled))


class ReleaseManagerApproves(MutationPolicy[Flags]):
    """Every flag change needs a release manager."""

    def evaluate(self, mutation: Any, state: Flags, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(
            PolicyRequirement.approval(role="release-manager"), reason="flags are high risk"
        )


def history(request: MutationRequest) -> None:
    print(f"  decisions of {request.request_id[:8]} ({request.status.name}):")
    for decision in request.decisions:
        print(f"    {decision}")


async def main() -> dict[str, Any]:
    registry = MutationRegistry()
    registry.register(SetFlag, name="flag.set")
    gov = Governance(MutationEngine(policies=[ReleaseManagerApproves()]), registry=registry)
    await gov.states.put("flags:web", Flags(frozenset()))
    dev = MutationContext.user("dev", reason="launch new checkout")
    rm = MutationContext.user("rita", roles=["release-manager"])

    print("1) full loop")
    rollout = await gov.submit(SetFlag("new-checkout", True), state_id="flags:web", context=dev)
    await gov.approve(rollout.request_id, context=rm)
    done = await gov.execute(rollout.request_id)
    print(f"  executed={done.executed} resulting version={done.resulting_version}")
    history(done.request)

    print("2) stale branch")
    beta = await gov.submit(SetFlag("beta-search", True), state_id="flags:web", context=dev)
    await gov.approve(beta.request_id, context=rm)
    current = await gov.states.get("flags:web")
    assert current is not None
    await gov.states.put(
        "flags:web", Flags(current.state.enabled | {"dark-mode"}), expected_version=current.version
    )
    print("  the state moved on outside this request (dark-mode enabled)")
    stale = await gov.execute(beta.request_id, strategy=ResolutionStrategy.REQUIRE_RENEWED_APPROVAL)
    assert stale.resolution is not None
    print(f"  outcome={stale.resolution.outcome.name} status={stale.request.status.name}")
    await gov.approve(beta.request_id, context=rm)
    renewed = await gov.execute(beta.request_id)
    print(
        f"  after renewed approval: executed={renewed.executed} version={renewed.resulting_version}"
    )
    history(renewed.request)

    print("3) compensation")
    plan = CompensationPlan(
        rollout.request_id, kind=CompensationKind.ROLLBACK, reason="checkout errors spiked"
    )
    oncall = MutationContext.user("oncall", reason="roll back new checkout")
    compensation = await gov.compensate(
        rollout.request_id, SetFlag("new-checkout", False), plan, context=oncall
    )
    waiting = await gov.execute(compensation.request_id)
    print(
        f"  policies still apply: status={waiting.request.status.name} "
        f"({waiting.request.pending_reason.name if waiting.request.pending_reason else ''})"
    )
    await gov.approve(compensation.request_id, context=rm)
    undone = await gov.execute(compensation.request_id)
    assert undone.original is not None
    print(f"  compensation executed={undone.executed} version={undone.resulting_version}")
    history(undone.request)
    history(undone.original)

    final = await gov.states.get("flags:web")
    assert final is not None
    print(f"final flags: {sorted(final.state.enabled)} at version {final.version}")
    return {
        "first": done,
        "stale": stale,
        "renewed": renewed,
        "compensation": undone,
        "final_flags": final.state.enabled,
        "final_version": final.version,
    }
