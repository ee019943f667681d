"""Re-applying a recorded mutation during history replay."""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from ._errors import InvalidMutationError
from ._records import HistoryEntry
from ._results import MutationResult

StateT = TypeVar("StateT")


def reapply(state: StateT, entry: HistoryEntry) -> StateT:
    """Apply ``entry``'s recorded mutation to ``state`` synchronously."""
    mutation = entry.mutation
    if mutation is None:
        raise InvalidMutationError(
            f"history entry {entry.execution_id} carries no mutation; pass apply= to replay",
            execution_id=entry.execution_id,
        )
    outcome: Any = mutation.apply(state)
    if inspect.isawaitable(outcome):
        if hasattr(outcome, "close"):
            outcome.close()
        raise InvalidMutationError(
            f"{type(mutation).__qualname__}.apply is async; pass apply= to replay",
            execution_id=entry.execution_id,
        )
    if isinstance(outcome, MutationResult):
        if not outcome.ok:
            raise InvalidMutationError(
                f"replaying {entry.execution_id} did not succeed: {outcome.error_message}",
                execution_id=entry.execution_id,
            )
        outcome = outcome.new_state
    replayed: StateT = outcome
    return replayed
