"""IAM roles: a second approver for critical grants, and last-admin protection.

The state maps users to their roles. Granting a role is CRITICAL, revoking one HIGH.

* ``PreventLastAdminRemovalPolicy`` denies revoking ``admin`` from the only admin;
* ``RequireTwoPersonApprovalPolicy`` makes every CRITICAL change name a second approver in
  the context metadata ``approved_by`` (someone other than the actor).

Scenarios: revoking the only admin is denied; granting ``admin`` without a second approver
is denied and with one is allowed (after which the original admin can step down); and a
system-context batch migrates several users to new roles with the security team's
approval.
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
)

ADMIN = "admin"
STATE_ID = "iam:acme"


@attrs.frozen
class Directory:
    roles: dict[str, frozenset[str]]

    def admins(self) -> list[str]:
        return sorted(user for user, roles in self.roles.items() if ADMIN in roles)


@attrs.frozen
class GrantRole(Mutation[Directory]):
    user: str
    role: str
    intent: ClassVar[MutationIntent] = MutationIntent(
        "iam.grant", category="iam", risk=RiskLevel.CRITICAL
    )

    def apply(self, state: Directory) -> Directory:
        current = state.roles.get(self.user, frozenset())
        return Directory({**state.roles, self.user: current | {self.role}})


@attrs.frozen
class RevokeRole(Mutation[Directory]):
    user: str
    role: str
    intent: ClassVar[MutationIntent] = MutationIntent(
        "iam.revoke", category="iam", risk=RiskLevel.HIGH
    )

    def apply(self, state: Directory) -> Directory:
        current = state.roles.get(self.user, frozenset())
        return Directory({**state.roles, self.user: current - {self.role}})


class PreventLastAdminRemovalPolicy(MutationPolicy[Directory]):
    """Someone must always hold the admin role."""

    priority = 100

    def evaluate(self, mutation: Any, state: Directory, context: MutationContext) -> PolicyDecision:
        revokes_admin = isinstance(mutation, RevokeRole) and mutation.role == ADMIN
        if revokes_admin and state.admins() == [mutation.user]:
            return PolicyDecision.deny_critical(f"{mutation.user} is the last admin")
        return PolicyDecision.allow()


class RequireTwoPersonApprovalPolicy(MutationPolicy[Directory]):
    """CRITICAL changes need ``approved_by`` naming someone other than the actor."""

    priority = 50

    def evaluate(self, mutation: Any, state: Directory, context: MutationContext) -> PolicyDecision:
        if mutation.intent.risk < RiskLevel.CRITICAL:
            return PolicyDecision.allow()
        approver = context.metadata.get("approved_by")
        if not approver or approver == context.actor_id:
            return PolicyDecision.deny(
                f"{mutation.intent.operation} needs a second approver besides {context.actor_id}"
            )
        return PolicyDecision.allow()


def show_metrics(stats: EngineStatistics) -> None:
    print("metrics:")
    print(
        f"  executed={stats.total_executed} succeeded={stats.succeeded} failed={stats.failed} "
        f"p50={stats.p50 * 1000:.2f}ms p95={stats.p95 * 1000:.2f}ms"
    )


def show(directory: Directory) -> None:
    for user, roles in sorted(directory.roles.items()):
        print(f"    {user:<6} {', '.join(sorted(roles)) or '-'}")


async def main() -> dict[str, Any]:
    engine: MutationEngine = MutationEngine(
        EngineOptions.strict(),
        policies=[PreventLastAdminRemovalPolicy(), RequireTwoPersonApprovalPolicy()],
    )
    state = Directory(
        {
            "alice": frozenset({ADMIN}),
            "bob": frozenset({"developer"}),
            "carol": frozenset({"developer"}),
            "dave": frozenset({"viewer"}),
        }
    )
    print("start:")
    show(state)
    alice = MutationContext.user("alice", reason="handing over administration")

    print("1) revoke admin from alice, the only admin")
    last_admin = await engine.execute(
        RevokeRole("alice", ADMIN), state, context=alice, state_id=STATE_ID
    )
    print(f"  {last_admin.status.name}: {last_admin.error_message}")

    print("2) grant admin to bob")
    alone = await engine.execute(GrantRole("bob", ADMIN), state, context=alice, state_id=STATE_ID)
    print(f"  without a second approver: {alone.status.name}: {alone.error_message}")
    approved = attrs.evolve(alice, metadata={"approved_by": "carol"})
    granted = await engine.execute(
        GrantRole("bob", ADMIN), state, context=approved, state_id=STATE_ID
    )
    print(f"  approved_by=carol: {granted.status.name} {list(granted.changes.paths())}")
    assert granted.new_state is not None
    state = granted.new_state
    stepped_down = await engine.execute(
        RevokeRole("alice", ADMIN), state, context=alice, state_id=STATE_ID
    )
    print(f"  now alice can step down: {stepped_down.status.name}")
    assert stepped_down.new_state is not None
    state = stepped_down.new_state

    print("3) role migration (system context, one batch)")
    system = MutationContext.system("Q3 role migration", metadata={"approved_by": "security-team"})
    migration = await engine.execute_batch(
        [
            GrantRole("carol", "manager"),
            GrantRole("dave", "developer"),
            RevokeRole("dave", "viewer"),
            GrantRole("dave", ADMIN),
        ],
        state,
        context=system,
        state_id=STATE_ID,
    )
    assert migration.final_state is not None
    print(f"  batch ok={migration.ok} steps={len(migration.results)}")
    print("  final roles:")
    show(migration.final_state)
    history = await engine.history(STATE_ID)
    print(f"  history entries: {len(history)}, actors: {history.statistics().unique_actors}")

    stats = await engine.statistics()
    show_metrics(stats)
    return {
        "last_admin": last_admin,
        "grant_without_approver": alone,
        "grant": granted,
        "step_down": stepped_down,
        "migration": migration,
        "statistics": stats,
    }
