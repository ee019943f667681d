"""Audit and history records, and the per-state history aggregate."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from ._changes import EMPTY_CHANGES, ChangeSet, StateChange
from ._context import MutationContext
from ._effects import SideEffect
from ._enums import MutationMode
from ._freeze import to_tuple
from ._intent import MutationIntent
from ._policies import PolicyDecision

if TYPE_CHECKING:
    from ._mutation import Mutation

__all__ = [
    "AuditEntry",
    "AuditOutcome",
    "HistoryEntry",
    "HistoryStatistics",
    "MutationHistory",
    "TimelineEntry",
]

StateT = TypeVar("StateT")


class AuditOutcome(enum.Enum):
    """How an audited execution ended."""

    SUCCEEDED = "succeeded"
    VALIDATION_FAILED = "validation_failed"
    POLICY_BLOCKED = "policy_blocked"
    APPROVAL_REQUIRED = "approval_required"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


@attrs.frozen
class AuditEntry:
    """One audited execution attempt, successful or not.

    ``context.timestamp`` is when the request was made; ``executed_at`` is when the engine
    ran it. Every attempt is audited except one cancelled by its caller.
    """

    execution_id: str
    state_id: str | None
    state_type: str
    intent: MutationIntent
    context: MutationContext
    mode: MutationMode
    outcome: AuditOutcome
    executed_at: datetime
    duration: float
    changes: ChangeSet = EMPTY_CHANGES
    side_effects: tuple[SideEffect, ...] = ()
    policy_decisions: tuple[PolicyDecision, ...] = ()
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        """True when the execution committed (outcome SUCCEEDED)."""
        return self.outcome is AuditOutcome.SUCCEEDED

    @property
    def correlation_id(self) -> str | None:
        """The correlation id of the request's context, if it had one."""
        return self.context.correlation_id


@attrs.frozen
class HistoryEntry:
    """One committed mutation of one state (only successful commits are recorded)."""

    execution_id: str
    state_id: str
    intent: MutationIntent
    context: MutationContext
    changes: ChangeSet
    executed_at: datetime
    duration: float = 0.0
    side_effects: tuple[SideEffect, ...] = ()
    mutation: Mutation[Any] | None = attrs.field(default=None, eq=False)


@attrs.frozen
class TimelineEntry:
    """One change to one path, with who made it and when."""

    executed_at: datetime
    change: StateChange
    execution_id: str
    actor_id: str | None
    reason: str | None


@attrs.frozen
class HistoryStatistics:
    """Summary of a state's history."""

    total_mutations: int
    unique_actors: int
    by_category: dict[str, int]
    average_changes: float


@attrs.frozen
class MutationHistory(Generic[StateT]):
    """The committed history of one state, oldest entry first."""

    state_id: str
    entries: tuple[HistoryEntry, ...] = attrs.field(default=(), converter=to_tuple)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def first_at(self) -> datetime | None:
        """When the oldest entry was executed (None for an empty history)."""
        return self.entries[0].executed_at if self.entries else None

    @property
    def last_at(self) -> datetime | None:
        """When the newest entry was executed (None for an empty history)."""
        return self.entries[-1].executed_at if self.entries else None

    def replay(
        self,
        initial: StateT,
        apply: Callable[[StateT, HistoryEntry], StateT] | None = None,
    ) -> StateT:
        """Fold the entries over ``initial``.

        Without ``apply`` each entry's recorded mutation is applied again (its ``apply``
        must be synchronous and deterministic).
        """
        return self._fold(self.entries, initial, apply)

    def replay_until(
        self,
        initial: StateT,
        until: datetime,
        apply: Callable[[StateT, HistoryEntry], StateT] | None = None,
    ) -> StateT:
        """Like :meth:`replay`, over entries executed at or before ``until``."""
        return self._fold((e for e in self.entries if e.executed_at <= until), initial, apply)

    def timeline(self, path: str) -> tuple[TimelineEntry, ...]:
        """Every change to ``path`` or below it, in execution order."""
        prefix_dot, prefix_index = path + ".", path + "["
        return tuple(
            TimelineEntry(
                entry.executed_at,
                change,
                entry.execution_id,
                entry.context.actor_id,
                entry.context.reason,
            )
            for entry in self.entries
            for change in entry.changes
            if change.path == path
            or change.path.startswith(prefix_dot)
            or change.path.startswith(prefix_index)
        )

    def statistics(self) -> HistoryStatistics:
        """Number of mutations and distinct actors, mutations per category, mean changes."""
        total = len(self.entries)
        return HistoryStatistics(
            total_mutations=total,
            unique_actors=len({entry.context.actor_id for entry in self.entries}),
            by_category=dict(Counter(entry.intent.category for entry in self.entries)),
            average_changes=(
                sum(len(entry.changes) for entry in self.entries) / total if total else 0.0
            ),
        )

    @staticmethod
    def _fold(
        entries: Iterable[HistoryEntry],
        state: StateT,
        apply: Callable[[StateT, HistoryEntry], StateT] | None,
    ) -> StateT:
        from ._replay import reapply

        step = apply or reapply
        for entry in entries:
            state = step(state, entry)
        return state
