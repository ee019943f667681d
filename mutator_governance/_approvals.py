"""Approval requirements of a request and how policy requirements map onto them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from mutator import MutationContext, PolicyRequirement
from mutator.values import freeze_mapping, trusted

from ._copying import attrs_copier
from ._enums import ApprovalStatus
from ._errors import ApprovalConfigurationError
from ._ids import new_id

__all__ = ["ApprovalRequirement", "RejectionReason", "evolve_slot", "map_requirements"]


@attrs.frozen
class RejectionReason:
    """A structured reason for rejecting an approval."""

    code: str
    message: str
    category: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=freeze_mapping, hash=False)


@attrs.frozen
class ApprovalRequirement:
    """One approval slot: who may approve (actor id, role or group), in which step.

    Slots sharing a ``quorum_group`` form an N-of-M quorum: once ``required_approvals`` of
    them are approved (by distinct actors) the rest become ``SATISFIED``.
    """

    approval_id: str
    step: int = 1
    approver_id: str | None = None
    role: str | None = None
    group: str | None = None
    quorum_group: str | None = None
    required_approvals: int = 1
    expires_at: datetime | None = None
    status: ApprovalStatus = ApprovalStatus.PENDING
    round: int = 1
    description: str | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    rejection: RejectionReason | None = None

    @property
    def target(self) -> str:
        """Who may decide, for messages: ``actor:alice``, ``role:sre`` or ``group:ops``."""
        if self.approver_id:
            return f"actor:{self.approver_id}"
        if self.role:
            return f"role:{self.role}"
        return f"group:{self.group}"

    @property
    def is_open(self) -> bool:
        """Whether the slot still waits for a decision (status PENDING)."""
        return self.status is ApprovalStatus.PENDING

    @property
    def is_fulfilled(self) -> bool:
        """Whether the slot counts towards its step (APPROVED, or SATISFIED by a quorum)."""
        return self.status in (ApprovalStatus.APPROVED, ApprovalStatus.SATISFIED)

    def matches(self, context: MutationContext) -> bool:
        """Whether the actor of ``context`` is a target of this slot."""
        if self.approver_id:
            return context.actor_id == self.approver_id
        if self.role is not None:
            return self.role in context.roles
        return self.group is not None and self.group in context.groups

    def is_expired(self, now: datetime) -> bool:
        """Whether the slot's own expiry has passed at ``now`` (False when it has none)."""
        return self.expires_at is not None and self.expires_at <= now


_copy_slot = attrs_copier(ApprovalRequirement)
_new_slot = trusted(ApprovalRequirement)
assert [a.name for a in attrs.fields(ApprovalRequirement)] == [
    "approval_id", "step", "approver_id", "role", "group", "quorum_group",
    "required_approvals", "expires_at", "status", "round", "description", "decided_at",
    "decided_by", "decision_reason", "rejection",
]  # fmt: skip


def evolve_slot(slot: ApprovalRequirement, **changes: Any) -> ApprovalRequirement:
    """``attrs.evolve(slot, **changes)`` without its per-call overhead (no field is checked)."""
    if type(slot) is not ApprovalRequirement:
        return attrs.evolve(slot, **changes)
    copied: ApprovalRequirement = _copy_slot(slot, changes)
    return copied


def map_requirements(
    requirements: Sequence[PolicyRequirement], *, round: int = 1
) -> tuple[ApprovalRequirement, ...]:
    """Turn approval-type policy requirements into approval slots.

    Each requirement becomes one slot per target (approver ids, then role, then group).
    When ``required_approvals`` exceeds the named approvers and a role or group is named,
    extra slots for that role/group are added so distinct members can fill the quorum;
    with only named approvers that is an :class:`ApprovalConfigurationError`. Several slots
    of one requirement form one quorum group.
    """
    slots: list[ApprovalRequirement] = []
    for index, requirement in enumerate(r for r in requirements if r.is_approval):
        targets: list[tuple[str | None, str | None, str | None]] = [
            (approver, None, None) for approver in dict.fromkeys(requirement.approvers)
        ]
        shared: list[tuple[str | None, str | None, str | None]] = []
        if requirement.role is not None:
            shared.append((None, requirement.role, None))
        if requirement.group is not None:
            shared.append((None, None, requirement.group))
        targets.extend(shared)
        if not targets:
            raise ApprovalConfigurationError(
                f"approval requirement #{index + 1} names no approver, role or group"
            )
        needed = requirement.required_approvals
        if needed > len(targets):
            if not shared:
                raise ApprovalConfigurationError(
                    f"approval requirement #{index + 1} needs {needed} approvals but names "
                    f"only {len(targets)} approver(s)"
                )
            extra = needed - len(targets)
            targets.extend(shared[i % len(shared)] for i in range(extra))
        quorum_group = f"r{round}-s{requirement.step}-q{index + 1}" if len(targets) > 1 else None
        step, expires_at = requirement.step, requirement.expires_at
        description = requirement.description or requirement.reason
        slots.extend(
            _new_slot(
                new_id(),
                step,
                approver,
                role,
                group,
                quorum_group,
                needed,
                expires_at,
                ApprovalStatus.PENDING,
                round,
                description,
                None,
                None,
                None,
                None,
            )
            for approver, role, group in targets
        )
    return tuple(slots)


def renew(approvals: Sequence[ApprovalRequirement], round: int) -> tuple[ApprovalRequirement, ...]:
    """A fresh round: the same slots with new ids, all pending again."""
    groups: dict[str, str] = {}
    renewed = []
    for slot in approvals:
        quorum_group = slot.quorum_group
        if quorum_group is not None:
            quorum_group = groups.setdefault(
                quorum_group, f"r{round}-{quorum_group.split('-', 1)[-1]}"
            )
        renewed.append(
            ApprovalRequirement(
                approval_id=new_id(),
                step=slot.step,
                approver_id=slot.approver_id,
                role=slot.role,
                group=slot.group,
                quorum_group=quorum_group,
                required_approvals=slot.required_approvals,
                expires_at=None,
                round=round,
                description=slot.description,
            )
        )
    return tuple(renewed)
