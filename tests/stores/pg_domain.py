"""A tiny governed domain shared by the PostgreSQL tests and their worker processes.

``Counters`` is the governed state and ``Add`` adds ``amount`` to one counter, so any
order of executing a set of ``Add`` requests ends in the same state. ``RequireCarol`` is a
policy that makes every mutation wait for carol's approval.
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
from mutator_governance import MutationRegistry


@attrs.frozen
class Counters:
    """The governed state: named integer counters."""

    values: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class Add(Mutation[Counters]):
    """Add ``amount`` to counter ``key``."""

    key: str
    amount: int
    intent: ClassVar[MutationIntent] = MutationIntent("pg.add", category="test")

    def apply(self, state: Counters) -> Counters:
        return Counters({**state.values, self.key: state.values.get(self.key, 0) + self.amount})


class RequireCarol(MutationPolicy[Any]):
    """Every mutation needs carol's approval."""

    name = "require-carol"

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(
            PolicyRequirement.approval("carol"), reason="carol must approve"
        )


def registry() -> MutationRegistry:
    """A registry that knows ``Add`` and ``Counters``."""
    reg = MutationRegistry()
    reg.register(Add, name="pg.add")
    reg.register_state(Counters, name="pg.Counters")
    return reg


def user(actor: str, reason: str = "test") -> MutationContext:
    """A user context for ``actor``."""
    return MutationContext.user(actor, reason=reason)
