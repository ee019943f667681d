"""A tiny governed domain for the command-line tests (``--registry tests.cli_domain:registry``).

``submit`` seeds a SQLite store the way an application would: it registers the policy,
creates the state and submits requests; the command line then operates on the file.
"""

from __future__ import annotations

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
from mutator_governance import Governance, MutationRegistry, MutationRequest


@attrs.frozen
class Quota:
    limit: int


@attrs.frozen
class RaiseQuota(Mutation[Quota]):
    by: int
    intent: ClassVar[MutationIntent] = MutationIntent("quota.raise", category="billing")

    def apply(self, state: Quota) -> Quota:
        return Quota(state.limit + self.by)


@attrs.frozen
class BreakQuota(Mutation[Quota]):
    """A raise whose apply fails: executing it leaves the request FAILED."""

    intent: ClassVar[MutationIntent] = MutationIntent("quota.break", category="billing")

    def apply(self, state: Quota) -> Quota:
        raise RuntimeError("the quota service is down")


class FinanceApproves(MutationPolicy[Quota]):
    """Every quota raise needs someone with the finance role."""

    def evaluate(self, mutation: Any, state: Quota, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(PolicyRequirement.approval(role="finance"))


class AtMost115(MutationPolicy[Quota]):
    """A raise may not take the limit past 115 (evaluated again on the latest state)."""

    def evaluate(self, mutation: Any, state: Quota, context: MutationContext) -> PolicyDecision:
        if state.limit + mutation.by > 115:
            return PolicyDecision.deny("the limit would pass 115")
        return PolicyDecision.allow()


policies = [FinanceApproves(), AtMost115()]


def make_registry() -> MutationRegistry:
    made = MutationRegistry()
    made.register(RaiseQuota, name="quota.raise")
    made.register(BreakQuota, name="quota.break")
    made.register_state(Quota, name="billing.Quota")
    return made


registry = make_registry()


async def submit(
    url: str, *ids: str, requester: str = "alice", mutation: Mutation[Quota] | None = None
) -> list[MutationRequest]:
    """Create ``quota:acme`` (if new) and submit one ``mutation`` (default a +10 raise) per
    id, as ``requester``."""
    async with Governance.open(url, registry=make_registry()) as gov:
        gov.engine.register_policy(FinanceApproves())
        if await gov.states.get("quota:acme") is None:
            await gov.states.put("quota:acme", Quota(100))
        return [
            await gov.submit(
                mutation or RaiseQuota(10),
                state_id="quota:acme",
                context=MutationContext.user(requester, reason="launch"),
                request_id=request_id,
            )
            for request_id in ids
        ]


def registry_broken() -> MutationRegistry:
    """A mistake ``--registry`` may name: a factory whose own code raises."""
    return {}["billing"]  # type: ignore[no-any-return]


async def registry_later() -> MutationRegistry:
    """A mistake ``--registry`` must name: an ``async def`` factory (never awaited)."""
    return make_registry()
