"""Policy composition: several policies deciding as one with all_of, any_of, first_decisive.

The state is a release gate: the release being submitted, its environment, its owner and
an audit trail. Each scenario installs one composed gate on the engine, submits a
release, and removes the gate again.

1. ``all_of`` (``ReleaseApprovalGate``): two approvals are required and an audit entry is
   added; both children must allow, their side effects and metadata are merged and the
   audit policy's replacement state becomes the new state.
2. ``any_of`` (``ReleaseEmergencyGate``): an incident commander's emergency override wins
   even without approvals; without it, both children deny.
3. ``first_decisive`` (``ReleaseDeploymentGate``): the production guard decides alone for
   production (approval required, the default policy is never asked); for staging it has
   nothing to say and the default policy decides.
4. Conflict (``ReleaseOwnerConflictGate``): two policies replace the state with different
   owners; the engine raises ``PolicyConflictError`` naming the key and both policies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from mutator import (
    ComposedPolicy,
    EngineOptions,
    EngineStatistics,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationIntent,
    MutationPolicy,
    MutationResult,
    PolicyConflictError,
    PolicyDecision,
    PolicyRequirement,
    RiskLevel,
    SideEffect,
    all_of,
    any_of,
    first_decisive,
)

STATE_ID = "release:web"


@attrs.frozen
class Release:
    version: str | None = None
    environment: str | None = None
    status: str = "idle"
    owner: str | None = None
    audit: tuple[str, ...] = ()


@attrs.frozen
class SubmitRelease(Mutation[Release]):
    version: str
    environment: str
    approvers: tuple[str, ...] = ()
    emergency: bool = False
    intent: ClassVar[MutationIntent] = MutationIntent(
        "release.submit", category="release", risk=RiskLevel.HIGH
    )

    def apply(self, state: Release) -> Release:
        return attrs.evolve(
            state, version=self.version, environment=self.environment, status="submitted"
        )


def with_metadata(decision: PolicyDecision, **metadata: Any) -> PolicyDecision:
    """``PolicyDecision`` factories take no metadata; attach it afterwards."""
    return attrs.evolve(decision, metadata=metadata)


class RequireApprovalsPolicy(MutationPolicy[Release]):
    """At least two approvers; announces the check as a side effect."""

    def evaluate(self, mutation: Any, state: Release, context: MutationContext) -> PolicyDecision:
        if len(mutation.approvers) < 2:
            return PolicyDecision.deny(f"{len(mutation.approvers)} approval(s), 2 required")
        checked = SideEffect("release.approvals_checked", data={"approvers": mutation.approvers})
        return with_metadata(
            PolicyDecision.modify(side_effects=[checked]), approvals=len(mutation.approvers)
        )


class AddAuditTrailPolicy(MutationPolicy[Release]):
    """Replaces the new state with one that carries an audit entry."""

    def evaluate(self, mutation: Any, state: Release, context: MutationContext) -> PolicyDecision:
        # A replacement state replaces the mutation's result, so apply the mutation first.
        entry = f"{context.actor_id} submitted {mutation.version} to {mutation.environment}"
        replacement = attrs.evolve(mutation.apply(state), audit=(*state.audit, entry))
        audited = SideEffect("audit.release_submitted", entry)
        return with_metadata(
            PolicyDecision.modify(replacement, side_effects=[audited]),
            audited_by=type(self).__name__,
        )


class EmergencyOverridePolicy(MutationPolicy[Release]):
    """An incident commander may push an emergency release."""

    def evaluate(self, mutation: Any, state: Release, context: MutationContext) -> PolicyDecision:
        if mutation.emergency and "incident-commander" in context.roles:
            return PolicyDecision.allow("emergency override")
        return PolicyDecision.deny("no emergency override")


class ApprovalFallbackPolicy(MutationPolicy[Release]):
    """Otherwise two approvals are needed."""

    def evaluate(self, mutation: Any, state: Release, context: MutationContext) -> PolicyDecision:
        if len(mutation.approvers) >= 2:
            return PolicyDecision.allow("two approvals")
        return PolicyDecision.deny(f"{len(mutation.approvers)} approval(s), 2 required")


class ProductionGuardPolicy(MutationPolicy[Release]):
    """Production releases need a release manager; other environments are not its concern."""

    priority = 10

    def evaluate(self, mutation: Any, state: Release, context: MutationContext) -> PolicyDecision:
        if mutation.environment == "production":
            return PolicyDecision.require_approval(
                PolicyRequirement.approval(role="release-manager"),
                reason="production needs a release manager",
            )
        return PolicyDecision.allow()


class DefaultDeploymentPolicy(MutationPolicy[Release]):
    """Everything else is scheduled for the next deployment window."""

    def evaluate(self, mutation: Any, state: Release, context: MutationContext) -> PolicyDecision:
        scheduled = SideEffect("deploy.scheduled", f"{mutation.version} in the next window")
        return PolicyDecision.modify(side_effects=[scheduled], reason="default deployment")


class SetOwnerPolicy(MutationPolicy[Release]):
    """Sets the release owner by replacing the state (one instance per owner)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.name = f"SetOwnerPolicy[{owner}]"

    def evaluate(self, mutation: Any, state: Release, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.modify(attrs.evolve(mutation.apply(state), owner=self.owner))


def show_metrics(stats: EngineStatistics) -> None:
    print("metrics:")
    print(
        f"  executed={stats.total_executed} succeeded={stats.succeeded} failed={stats.failed} "
        f"p50={stats.p50 * 1000:.2f}ms p95={stats.p95 * 1000:.2f}ms"
    )


def composition(result: MutationResult[Release]) -> Mapping[str, Any]:
    """The composed gate's decision metadata (it is the only registered policy)."""
    return result.policy_decisions[0].metadata


def show(label: str, result: MutationResult[Release]) -> None:
    decision = result.policy_decisions[0]
    print(f"  {label}: {result.status.name} ({decision.reason})")
    meta = decision.metadata
    print(
        f"    evaluated={list(meta['composition.policies'])} "
        f"winning={list(meta['composition.winning'])} "
        f"blocking={list(meta['composition.blocking'])}"
    )
    extra = {k: v for k, v in meta.items() if not k.startswith("composition.")}
    if extra:
        print(f"    merged metadata: {extra}")
    if result.side_effects:
        print(f"    side effects: {[effect.type for effect in result.side_effects]}")
    if result.requirements:
        print(f"    requirements: {[f'role:{r.role}' for r in result.requirements]}")
    if result.new_state is not None:
        print(f"    new state: {result.new_state}")


async def submit(
    engine: MutationEngine,
    gate: ComposedPolicy,
    mutation: SubmitRelease,
    context: MutationContext,
) -> MutationResult[Release]:
    engine.register_policy(gate)
    try:
        return await engine.execute(mutation, Release(), context=context, state_id=STATE_ID)
    finally:
        engine.unregister_policy(gate.name)


async def main() -> dict[str, Any]:
    engine: MutationEngine = MutationEngine(EngineOptions.strict())
    dev = MutationContext.user("dana", reason="weekly release")

    print("1) all_of: ReleaseApprovalGate")
    approval_gate = all_of(
        "ReleaseApprovalGate", RequireApprovalsPolicy(), AddAuditTrailPolicy(), priority=500
    )
    all_ok = await submit(
        engine, approval_gate, SubmitRelease("2.4.0", "staging", ("bob", "carol")), dev
    )
    show("two approvers", all_ok)

    print("2) any_of: ReleaseEmergencyGate")
    emergency_gate = any_of(
        "ReleaseEmergencyGate", EmergencyOverridePolicy(), ApprovalFallbackPolicy(), priority=400
    )
    commander = MutationContext.user("ivan", roles=["incident-commander"], reason="hotfix")
    hotfix = SubmitRelease("2.4.1", "production", emergency=True)
    override = await submit(engine, emergency_gate, hotfix, commander)
    show("incident commander, emergency", override)
    no_override = await submit(engine, emergency_gate, hotfix, dev)
    show("developer, emergency", no_override)

    print("3) first_decisive: ReleaseDeploymentGate")
    deployment_gate = first_decisive(
        "ReleaseDeploymentGate", ProductionGuardPolicy(), DefaultDeploymentPolicy(), priority=300
    )
    production = await submit(engine, deployment_gate, SubmitRelease("2.5.0", "production"), dev)
    show("production", production)
    staging = await submit(engine, deployment_gate, SubmitRelease("2.5.0", "staging"), dev)
    show("staging", staging)

    print("4) conflict: ReleaseOwnerConflictGate")
    conflict_gate = all_of(
        "ReleaseOwnerConflictGate", SetOwnerPolicy("alice"), SetOwnerPolicy("bob"), priority=200
    )
    conflict: PolicyConflictError | None = None
    try:
        await submit(engine, conflict_gate, SubmitRelease("2.6.0", "staging"), dev)
    except PolicyConflictError as error:
        conflict = error
        print(f"  PolicyConflictError: {error}")
        print(f"    key={error.key!r} policies={list(error.policies)}")
        print(f"    composition={error.composition!r}")
    assert conflict is not None

    stats = await engine.statistics()
    show_metrics(stats)
    return {
        "all_of": all_ok,
        "any_of": override,
        "any_of_denied": no_override,
        "first_decisive_production": production,
        "first_decisive_staging": staging,
        "conflict": conflict,
        "statistics": stats,
    }
