"""Sample audit and history entries for the core contract suites.

Built from the public model only, so any store whose converter handles the core records
(cattrs through :func:`mutator.make_converter` or a :class:`mutator.TypeRegistry`) can
store them without knowing a user domain.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs

from .._changes import ChangeSet, StateChange
from .._context import MutationContext
from .._effects import SideEffect, side_effect_payload
from .._enums import (
    ActorType,
    BlastRadiusScope,
    ChangeType,
    MutationMode,
    RiskLevel,
    Severity,
)
from .._intent import BlastRadius, MutationIntent
from .._policies import PolicyDecision, PolicyRequirement
from .._records import AuditEntry, AuditOutcome, HistoryEntry

__all__ = [
    "SAMPLE_BASE_TIME",
    "SampleEffectPayload",
    "sample_audit_entry",
    "sample_history_entry",
    "sample_rich_audit_entry",
    "sample_rich_history_entry",
]

SAMPLE_BASE_TIME = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)
"""The instant sample entries are placed around (``minutes`` count from it)."""

_EAST = timezone(timedelta(hours=5, minutes=30))

_INTENT = MutationIntent("sample.set", category="sample")


@side_effect_payload("mutator.testing.sample_effect", version=1)
@attrs.frozen
class SampleEffectPayload:
    """A typed side-effect payload; a store must give it back as this class."""

    target: str
    attempts: int
    ratio: float


def _at(minutes: float) -> datetime:
    return SAMPLE_BASE_TIME + timedelta(minutes=minutes)


def sample_audit_entry(
    execution_id: str,
    *,
    state_id: str | None = "sample:1",
    minutes: float = 0,
    outcome: AuditOutcome = AuditOutcome.SUCCEEDED,
    duration: float = 0.001,
) -> AuditEntry:
    """A small audit entry executed ``minutes`` after :data:`SAMPLE_BASE_TIME`."""
    return AuditEntry(
        execution_id=execution_id,
        state_id=state_id,
        state_type="Sample",
        intent=_INTENT,
        context=MutationContext.user("alice", timestamp=_at(minutes)),
        mode=MutationMode.COMMIT,
        outcome=outcome,
        executed_at=_at(minutes),
        duration=duration,
        error=None if outcome is AuditOutcome.SUCCEEDED else f"{outcome.value} in {execution_id}",
    )


def sample_history_entry(
    execution_id: str,
    *,
    state_id: str = "sample:1",
    minutes: float = 0,
    value: int = 1,
) -> HistoryEntry:
    """A small history entry setting ``value`` at ``minutes`` after :data:`SAMPLE_BASE_TIME`."""
    return HistoryEntry(
        execution_id=execution_id,
        state_id=state_id,
        intent=_INTENT,
        context=MutationContext.user("alice", timestamp=_at(minutes)),
        changes=ChangeSet.of(StateChange.modified("value", value - 1, value)),
        executed_at=_at(minutes),
        duration=0.001,
    )


def _rich_intent() -> MutationIntent:
    return MutationIntent(
        "sample.rich",
        category="billing",
        description="every field set",
        risk=RiskLevel.HIGH,
        reversible=False,
        blast_radius=BlastRadius(BlastRadiusScope.MODULE, 12, "twelve tenants"),
        tags=frozenset({"quota", "tenant"}),
        metadata={"ticket": "OPS-1", "weight": 2, "share": 0.5, "flags": [True, None]},
    )


def _rich_context() -> MutationContext:
    return MutationContext(
        actor_id="bob",
        actor_name="Bob B.",
        actor_type=ActorType.SERVICE,
        reason="nightly rebalance",
        mode=MutationMode.COMMIT,
        correlation_id="corr-1",
        causation_id="cause-1",
        session_id="sess-1",
        source_address="127.0.0.1",
        user_agent="contract/1",
        timestamp=(SAMPLE_BASE_TIME - timedelta(seconds=3)).astimezone(_EAST),
        metadata={"roles": ("finance",), "nested": {"n": 1, "items": (1, "two", 3.0)}},
    )


def _rich_changes() -> ChangeSet:
    return ChangeSet.of(
        StateChange.modified("quotas.alice", 10, 15),
        StateChange.added("quotas.bob", {"limit": 5, "tags": ["a", "b"]}),
        StateChange.removed("slots[3]", 2.5),
        StateChange("name", "old", "new", ChangeType.REPLACED),
        StateChange.moved("order", (1, 2), (2, 1)),
        StateChange.added("flag", True),
        StateChange.modified("maybe", None, "set"),
    )


def _rich_side_effects() -> tuple[SideEffect, ...]:
    return (
        SideEffect(
            "notify",
            "tell the owner",
            Severity.WARNING,
            {"channel": "email", "count": 2},
            timestamp=SAMPLE_BASE_TIME,
        ),
        SideEffect(
            "retry",
            "typed payload",
            data=SampleEffectPayload("svc", 3, 0.25),
            timestamp=SAMPLE_BASE_TIME + timedelta(microseconds=1),
        ),
        SideEffect("page", "wake someone", Severity.CRITICAL, None, True, SAMPLE_BASE_TIME),
    )


def sample_rich_audit_entry(execution_id: str = "exec-rich", **fields: Any) -> AuditEntry:
    """An audit entry with every optional field set, for round-trip tests."""
    entry = AuditEntry(
        execution_id=execution_id,
        state_id="sample:rich",
        state_type="Quotas",
        intent=_rich_intent(),
        context=_rich_context(),
        mode=MutationMode.COMMIT,
        outcome=AuditOutcome.APPROVAL_REQUIRED,
        executed_at=(SAMPLE_BASE_TIME + timedelta(microseconds=123_457)).astimezone(_EAST),
        duration=0.015625,
        changes=_rich_changes(),
        side_effects=_rich_side_effects(),
        policy_decisions=(
            PolicyDecision(True, policy_name="Allow"),
            PolicyDecision(
                False,
                reason="needs finance",
                policy_name="Finance",
                severity=Severity.ERROR,
                requirements=(
                    PolicyRequirement.approval(
                        role="finance",
                        required_approvals=2,
                        step=2,
                        expires_at=SAMPLE_BASE_TIME + timedelta(days=1),
                        reason="large increase",
                    ),
                ),
                metadata={"limit": 100},
            ),
        ),
        error="approval required",
    )
    return attrs.evolve(entry, **fields)


def sample_rich_history_entry(execution_id: str = "exec-rich", **fields: Any) -> HistoryEntry:
    """A history entry with every optional field set, for round-trip tests."""
    entry = HistoryEntry(
        execution_id=execution_id,
        state_id="sample:rich",
        intent=_rich_intent(),
        context=_rich_context(),
        changes=_rich_changes(),
        executed_at=(SAMPLE_BASE_TIME + timedelta(microseconds=654_321)).astimezone(_EAST),
        duration=0.5,
        side_effects=_rich_side_effects(),
    )
    return attrs.evolve(entry, **fields)
