"""Durable governance on SQLite: a request survives two restarts.

1. A quota increase is submitted and approved, then the process "stops" (the store is
   closed).
2. After a restart (the file is opened again) the approved request is executed.
3. After another restart its whole decision history and the state are read back.

Everything (requests, decisions, states, audit and history) lives in one SQLite file.
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
from mutator_governance import Governance, MutationRegistry, RequestStatus


@attrs.frozen
class Quota:
    limit: int


@attrs.frozen
class RaiseQuota(Mutation[Quota]):
    by: int
    intent: ClassVar[MutationIntent] = MutationIntent("quota.raise", category="billing")

    def apply(self, state: Quota) -> Quota:
        return Quota(state.limit + self.by)


class FinanceApproves(MutationPolicy[Quota]):
    """Every quota raise needs someone from finance."""

    def evaluate(self, mutation: Any, state: Quota, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(
            PolicyRequirement.approval(role="finance"), reason="quotas cost money"
        )


def make_registry() -> MutationRegistry:
    registry = MutationRegistry()
    registry.register(RaiseQuota, name="quota.raise")
    registry.register_state(Quota, name="billing.Quota")
    return registry


async def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mutator-example-") as directory:
        url = f"sqlite:///{Path(directory) / 'governance.db'}"
        print(f"database: {url}")
        requester = MutationContext.user("dev", reason="launch needs headroom")
        finance = MutationContext.user("fiona", roles=["finance"])

        print("1) submit and approve, then stop")
        async with Governance.open(url, registry=make_registry()) as gov:
            gov.engine.register_policy(FinanceApproves())
            await gov.states.put("quota:acme", Quota(100))
            request = await gov.submit(RaiseQuota(50), state_id="quota:acme", context=requester)
            print(f"  submitted {request.request_id[:8]}: {request.status.name}")
            approved = await gov.approve(request.request_id, context=finance)
            print(f"  approved by fiona: {approved.status.name}")
        request_id = request.request_id

        print("2) restart, then execute")
        async with Governance.open(url, registry=make_registry()) as gov:
            gov.engine.register_policy(FinanceApproves())
            waiting = await gov.requests.get(request_id)
            assert waiting is not None
            print(f"  after restart the request is {waiting.status.name}")
            done = await gov.execute(request_id)
            print(f"  executed={done.executed} resulting version={done.resulting_version}")

        print("3) restart again, then read everything back")
        async with Governance.open(url, registry=make_registry()) as gov:
            stored = await gov.requests.get(request_id)
            assert stored is not None
            print(f"  request {request_id[:8]} is {stored.status.name}; its decisions:")
            for decision in await gov.decisions.for_request(request_id):
                print(f"    {decision}")
            state = await gov.states.get("quota:acme")
            assert state is not None
            print(f"  quota:acme = {state.state} at version {state.version}")
            history = await gov.engine.history_store.history("quota:acme")
            audit = await gov.engine.audit.entries("quota:acme")
            print(f"  history entries: {len(history)}, audit entries: {len(audit)}")
            return {
                "status": stored.status,
                "executed": stored.status is RequestStatus.EXECUTED,
                "limit": state.state.limit,
                "version": state.version,
                "decisions": len(await gov.decisions.for_request(request_id)),
                "history": len(history),
            }


if __name__ == "__main__":
    import anyio

    anyio.run(main)
