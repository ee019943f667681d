"""Queries and the approver inbox: what operators and approvers look at.

Three kinds of request wait in one governance: an access grant (needs someone from
security), a key rotation (carol first, then an SRE) and a quota raise (allowed, then
executed). The example then asks:

1. the pending approval queue, and requests by tag, blast radius and metadata;
2. each approver's inbox (carol's, then the SRE's once carol has approved);
3. open approval slots by role, and the recent execution outcomes.

``examples/redis_queries.py`` runs the same tour on Redis.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from mutator import (
    BlastRadius,
    BlastRadiusScope,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
)
from mutator_governance import (
    ApprovalQuery,
    DecisionQuery,
    Governance,
    MutationRegistry,
    RequestQuery,
    TagMatch,
)


@attrs.frozen
class Access:
    grants: frozenset[str] = frozenset()


@attrs.frozen
class Keys:
    generation: int = 1


@attrs.frozen
class Quota:
    limit: int = 100


@attrs.frozen
class GrantAccess(Mutation[Access]):
    user: str
    intent: ClassVar[MutationIntent] = MutationIntent(
        "access.grant",
        category="access",
        tags=frozenset({"security"}),
        blast_radius=BlastRadius.single("one user"),
    )

    def apply(self, state: Access) -> Access:
        return Access(state.grants | {self.user})


@attrs.frozen
class RotateKeys(Mutation[Keys]):
    intent: ClassVar[MutationIntent] = MutationIntent(
        "keys.rotate",
        category="security",
        tags=frozenset({"security", "prod"}),
        blast_radius=BlastRadius.system("every service re-reads its keys"),
    )

    def apply(self, state: Keys) -> Keys:
        return Keys(state.generation + 1)


@attrs.frozen
class RaiseQuota(Mutation[Quota]):
    by: int
    intent: ClassVar[MutationIntent] = MutationIntent(
        "quota.raise", category="billing", blast_radius=BlastRadius.module()
    )

    def apply(self, state: Quota) -> Quota:
        return Quota(state.limit + self.by)


class Approvals(MutationPolicy[Any]):
    """Grants need security; rotations need carol, then an SRE; quotas pass."""

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        if isinstance(mutation, GrantAccess):
            return PolicyDecision.require_approval(PolicyRequirement.approval(role="security"))
        if isinstance(mutation, RotateKeys):
            return PolicyDecision.require_approval(
                PolicyRequirement.approval("carol", step=1),
                PolicyRequirement.approval(role="sre", step=2),
            )
        return PolicyDecision.allow()


def make_registry() -> MutationRegistry:
    registry = MutationRegistry()
    registry.register(GrantAccess, name="access.grant")
    registry.register(RotateKeys, name="keys.rotate")
    registry.register(RaiseQuota, name="quota.raise")
    registry.register_state(Access, name="examples.Access")
    registry.register_state(Keys, name="examples.Keys")
    registry.register_state(Quota, name="examples.Quota")
    return registry


def _ids(items: Any, names: dict[str, str]) -> list[str]:
    return [names[item.request_id] for item in items]


async def tour(gov: Governance) -> dict[str, Any]:
    """Submit the three requests into ``gov`` and run every query; return what each found."""
    gov.engine.register_policy(Approvals())
    await gov.states.put("acl:prod", Access())
    await gov.states.put("keys:prod", Keys())
    await gov.states.put("quota:acme", Quota())
    dev = MutationContext.user("dev", reason="sprint work")
    grant = await gov.submit(
        GrantAccess("erin"), state_id="acl:prod", context=dev, metadata={"ticket": "SEC-1"}
    )
    rotate = await gov.submit(
        RotateKeys(), state_id="keys:prod", context=dev, metadata={"ticket": "OPS-7"}
    )
    quota = await gov.submit(RaiseQuota(50), state_id="quota:acme", context=dev)
    await gov.execute(quota.request_id)
    names = {grant.request_id: "grant", rotate.request_id: "rotate", quota.request_id: "quota"}
    found: dict[str, Any] = {}

    async def ask(label: str, query: RequestQuery) -> None:
        found[label] = _ids((await gov.list(query)).items, names)
        print(f"  {label:<22} {', '.join(found[label]) or '-'}")

    print("1) request queries")
    await ask("approval queue", RequestQuery.pending_approval_queue())
    await ask("tagged prod", RequestQuery(tags={"prod"}))
    await ask("security and prod", RequestQuery(tags={"security", "prod"}, tag_match=TagMatch.ALL))
    await ask("module-wide or wider", RequestQuery(min_blast_radius=BlastRadiusScope.MODULE))
    await ask("ticket SEC-1", RequestQuery(metadata={"ticket": "SEC-1"}))

    print("2) inboxes")
    carol = MutationContext.user("carol", roles=["security"])
    sam = MutationContext.user("sam", roles=["sre"])

    async def inbox(label: str, who: MutationContext) -> list[tuple[str, str]]:
        page = await gov.inbox(who)
        slots = [(names[v.request.request_id], v.approval.target) for v in page.items]
        shown = ", ".join(f"{n} ({t})" for n, t in slots) or "nothing"
        print(f"  {label:<22} {shown}")
        return slots

    found["carol inbox"] = await inbox("carol", carol)
    found["sam inbox before"] = await inbox("sam (sre)", sam)
    await gov.approve(rotate.request_id, context=carol)
    print("  carol approves the rotation's first step")
    found["sam inbox after"] = await inbox("sam (sre)", sam)

    print("3) approval slots and decisions")
    sre = await gov.list_approvals(ApprovalQuery.pending(approver_roles={"sre"}))
    found["open sre slots"] = [names[v.request.request_id] for v in sre.items]
    print(f"  open SRE slots         {', '.join(found['open sre slots'])}")
    outcomes = await gov.list_decisions(DecisionQuery.recent_execution_outcomes())
    found["outcomes"] = [
        (names[v.request.request_id], v.decision.code.name) for v in outcomes.items
    ]
    for name, code in found["outcomes"]:
        print(f"  outcome                {name}: {code}")
    return found


async def main() -> dict[str, Any]:
    return await tour(Governance(MutationEngine(), registry=make_registry()))


if __name__ == "__main__":
    import anyio

    anyio.run(main)
