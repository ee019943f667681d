"""A mutation class changes while a request of it waits: ``register(..., upgrade=...)``.

1. Version 1 of ``quota.raise`` (fields ``by`` and ``ticket``) is submitted and approved,
   then the service stops.
2. Version 2 renames ``by`` to ``amount`` and drops ``ticket``. Opened without an upgrade,
   the waiting request is not read: running it without a field it was approved with
   would run something nobody approved. It is quarantined, and nothing is written.
3. Opened with an upgrade that says what version 1's fields become, the request reads as
   version 2, executes once, and is stored in the new shape.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar

import attrs

from mutator import (
    Mutation,
    MutationContext,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
)
from mutator_governance import Governance, MutationRegistry, QuarantineLog, StoredDataError


@attrs.frozen
class Quota:
    limit: int


@attrs.frozen
class RaiseQuotaV1(Mutation[Quota]):
    """What the service ran before the change."""

    by: int
    ticket: str
    intent: ClassVar[MutationIntent] = MutationIntent("quota.raise", category="billing")

    def apply(self, state: Quota) -> Quota:
        return Quota(state.limit + self.by)


@attrs.frozen
class RaiseQuota(Mutation[Quota]):
    """What it runs now: ``by`` is ``amount``, and tickets live elsewhere."""

    amount: int
    intent: ClassVar[MutationIntent] = MutationIntent("quota.raise", category="billing")

    def apply(self, state: Quota) -> Quota:
        return Quota(state.limit + self.amount)


def upgrade_raise(fields: dict[str, Any]) -> dict[str, Any]:
    """Version 1's fields as version 2's (version 2's come back unchanged)."""
    if "by" in fields:
        fields["amount"] = fields.pop("by")
    fields.pop("ticket", None)
    return fields


class FinanceApproves(MutationPolicy[Quota]):
    """Every quota raise needs someone from finance."""

    def evaluate(self, mutation: Any, state: Quota, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(
            PolicyRequirement.approval(role="finance"), reason="quotas cost money"
        )


def registry_for(cls: type[Mutation[Quota]], **options: Any) -> MutationRegistry:
    registry = MutationRegistry()
    registry.register(cls, name="quota.raise", **options)
    registry.register_state(Quota, name="billing.Quota")
    return registry


async def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mutator-example-") as directory:
        url = f"sqlite:///{Path(directory) / 'governance.db'}"
        requester = MutationContext.user("dev", reason="launch needs headroom")
        finance = MutationContext.user("fiona", roles=["finance"])

        print("1) version 1: submit and approve, then stop")
        async with Governance.open(url, registry=registry_for(RaiseQuotaV1)) as gov:
            gov.engine.register_policy(FinanceApproves())
            await gov.states.put("quota:acme", Quota(100))
            request = await gov.submit(
                RaiseQuotaV1(50, ticket="FIN-7"), state_id="quota:acme", context=requester
            )
            await gov.approve(request.request_id, context=finance)
            print(f"  {request.request_id[:8]} approved: {request.mutation}")

        print("2) version 2 without an upgrade")
        async with Governance.open(url, registry=registry_for(RaiseQuota)) as gov:
            try:
                await gov.execute(request.request_id)
            except StoredDataError as error:
                refused = str(error)
                print(f"  not read: {refused}")
            quarantined = [entry.request_id for entry in await gov.quarantined()]
            print(f"  quarantined: {[rid[:8] for rid in quarantined]}")
            state = await gov.states.get("quota:acme")
            assert state is not None
            untouched = state.state.limit
            assert isinstance(gov.requests, QuarantineLog)
            await gov.requests.release(request.request_id)  # repaired by the upgrade below

        print("3) version 2 with an upgrade")
        upgraded = registry_for(RaiseQuota, upgrade=upgrade_raise)
        async with Governance.open(url, registry=upgraded) as gov:
            gov.engine.register_policy(FinanceApproves())
            loaded = await gov.get(request.request_id)
            print(f"  read as {loaded.mutation}")
            done = await gov.execute(request.request_id)
            state = await gov.states.get("quota:acme")
            assert state is not None
            print(f"  executed={done.executed}; quota:acme = {state.state}")
        async with Governance.open(url, registry=registry_for(RaiseQuota)) as gov:
            stored = await gov.get(request.request_id)
            print(f"  stored now as {stored.mutation} ({stored.status.name})")
        return {
            "refused": "'ticket'" in refused,
            "quarantined": quarantined == [request.request_id],
            "untouched": untouched,
            "read_as": loaded.mutation,
            "executed": done.executed,
            "limit": state.state.limit,
            "stored_as": stored.mutation,
        }


if __name__ == "__main__":
    import anyio

    anyio.run(main)
