"""Immutable outcomes of single executions and batches."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Generic, TypeVar

import attrs

from ._changes import EMPTY_CHANGES, ChangeSet
from ._effects import SideEffect
from ._enums import MutationMode, ResultStatus
from ._freeze import to_tuple
from ._policies import PolicyDecision, PolicyRequirement
from ._trusted import trusted
from ._validation import ValidationResult

__all__ = ["BatchResult", "MutationResult"]

StateT = TypeVar("StateT")

# Read from a module global: on Python 3.11 an attribute of an enum class is read through
# EnumType's __getattr__ hook, about 800 instructions each time.
_SUCCEEDED = ResultStatus.SUCCEEDED


def _change_set(value: ChangeSet | Iterable[Any]) -> ChangeSet:
    return value if isinstance(value, ChangeSet) else ChangeSet(value)


@attrs.frozen
class MutationResult(Generic[StateT]):
    """What one execution produced.

    ``ok`` is true only for :attr:`ResultStatus.SUCCEEDED`. ``new_state`` is the state after
    the mutation (the input state in VALIDATE mode, None when the mutation did not run).
    Mutations may return ``MutationResult.success(...)`` from ``apply`` to give explicit
    changes and side effects, or ``MutationResult.invalid(...)`` to refuse; the engine
    fills in the execution fields.
    """

    status: ResultStatus
    new_state: StateT | None = None
    changes: ChangeSet = attrs.field(default=EMPTY_CHANGES, converter=_change_set)
    side_effects: tuple[SideEffect, ...] = attrs.field(default=(), converter=to_tuple)
    validation: ValidationResult = attrs.field(factory=ValidationResult.ok)
    policy_decisions: tuple[PolicyDecision, ...] = attrs.field(default=(), converter=to_tuple)
    requirements: tuple[PolicyRequirement, ...] = attrs.field(default=(), converter=to_tuple)
    execution_id: str | None = None
    duration: float = 0.0
    mode: MutationMode = MutationMode.COMMIT
    completed_at: datetime | None = None
    changes_explicit: bool = attrs.field(default=False, eq=False, repr=False)

    @classmethod
    def success(
        cls,
        new_state: StateT,
        changes: ChangeSet | Iterable[Any] | None = None,
        side_effects: Iterable[SideEffect] = (),
    ) -> MutationResult[StateT]:
        """A successful outcome; with ``changes=None`` the engine diffs the states itself."""
        if cls is MutationResult:  # the same fields, converted here, without re-conversion
            return _success(
                ResultStatus.SUCCEEDED,
                new_state,
                EMPTY_CHANGES if changes is None else _change_set(changes),
                tuple(side_effects),
                _VALID,
                (),
                (),
                None,
                0.0,
                MutationMode.COMMIT,
                None,
                changes is not None,
            )
        return cls(
            ResultStatus.SUCCEEDED,
            new_state,
            EMPTY_CHANGES if changes is None else changes,
            tuple(side_effects),
            changes_explicit=changes is not None,
        )

    @classmethod
    def invalid(cls, validation: ValidationResult) -> MutationResult[StateT]:
        """A refusal from ``apply`` itself, reported as a validation failure."""
        if validation.is_valid:
            raise ValueError("MutationResult.invalid needs a ValidationResult with errors")
        return cls(ResultStatus.VALIDATION_FAILED, validation=validation)

    @property
    def ok(self) -> bool:
        """True only when the status is SUCCEEDED."""
        return self.status is _SUCCEEDED

    @property
    def blocking_decisions(self) -> tuple[PolicyDecision, ...]:
        """Decisions that denied the mutation."""
        return tuple(d for d in self.policy_decisions if d.blocks)

    @property
    def error_message(self) -> str | None:
        """A one-line reason for a non-success, or None."""
        if self.status is ResultStatus.SUCCEEDED:
            return None
        if self.status is ResultStatus.VALIDATION_FAILED:
            return self.validation.summary() or "validation failed"
        if self.status is ResultStatus.POLICY_BLOCKED:
            reasons = [
                f"{d.policy_name}: {d.reason}" if d.reason else f"{d.policy_name}: denied"
                for d in self.blocking_decisions
            ]
            return "; ".join(reasons) or "blocked by policy"
        reasons = [d.reason for d in self.policy_decisions if d.needs_approval and d.reason]
        return "; ".join(dict.fromkeys(reasons)) or "approval required"


_success = trusted(MutationResult)
_VALID = ValidationResult.ok()


@attrs.frozen
class BatchResult(Generic[StateT]):
    """Outcome of an all-or-nothing batch.

    ``ok`` when every step succeeded (an empty batch succeeds); ``final_state`` is None
    unless ok; ``results`` has one entry per step that ran (execution stops at the first
    failure); ``changes`` concatenates the changes of the successful steps.
    """

    ok: bool
    final_state: StateT | None
    results: tuple[MutationResult[StateT], ...] = attrs.field(converter=to_tuple)
    changes: ChangeSet = EMPTY_CHANGES
    duration: float = 0.0

    @property
    def failed(self) -> MutationResult[StateT] | None:
        """The step that stopped the batch, if any."""
        if self.ok or not self.results:
            return None
        return self.results[-1]

    @property
    def success_count(self) -> int:
        """How many steps succeeded."""
        return sum(1 for result in self.results if result.ok)

    @property
    def failure_count(self) -> int:
        """How many steps that ran did not succeed (at most one: a batch stops there)."""
        return len(self.results) - self.success_count
