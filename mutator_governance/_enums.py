"""Closed sets of the governance model (the reference's B.1-B.7, in UPPER_SNAKE)."""

from __future__ import annotations

import enum

__all__ = [
    "ApprovalDecision",
    "ApprovalStatus",
    "CompensationKind",
    "CompensationTrigger",
    "DecisionCategory",
    "ExecutionKind",
    "LifecycleDecision",
    "LinkType",
    "PendingReason",
    "RequestStatus",
    "ResolutionDecision",
    "ResolutionOutcome",
    "ResolutionStrategy",
]


class RequestStatus(enum.Enum):
    """Where a request is in its lifecycle."""

    CREATED = "created"
    PENDING = "pending"
    APPROVED = "approved"
    EXECUTING = "executing"
    REJECTED = "rejected"
    CANCELED = "canceled"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    EXECUTED = "executed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """Whether no transition leaves this status (the request never runs again)."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        RequestStatus.REJECTED,
        RequestStatus.CANCELED,
        RequestStatus.EXPIRED,
        RequestStatus.SUPERSEDED,
        RequestStatus.EXECUTED,
        RequestStatus.FAILED,
    }
)


class PendingReason(enum.Enum):
    """Why a pending request waits."""

    APPROVAL = "approval"
    EXTERNAL_CHECK = "external_check"
    SCHEDULE = "schedule"
    DEPENDENCY = "dependency"
    QUOTA = "quota"
    MANUAL_REVIEW = "manual_review"
    REVALIDATION = "revalidation"


class DecisionCategory(enum.Enum):
    """The family a request decision belongs to."""

    LIFECYCLE = "lifecycle"
    APPROVAL = "approval"
    VERSION_RESOLUTION = "version_resolution"


class LifecycleDecision(enum.Enum):
    """Lifecycle decision codes (``CLAIMED``, ``RELEASED`` and ``FAILED`` are ours)."""

    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    SUPERSEDED = "SUPERSEDED"
    EXECUTED = "EXECUTED"
    COMPENSATED = "COMPENSATED"
    CLAIMED = "CLAIMED"
    RELEASED = "RELEASED"
    FAILED = "FAILED"


class ApprovalDecision(enum.Enum):
    """Approval decision codes."""

    REQUESTED = "REQUESTED"
    GRANTED = "GRANTED"
    REJECTED = "REJECTED"
    QUORUM_SATISFIED = "QUORUM_SATISFIED"
    EXPIRED = "EXPIRED"


class ResolutionDecision(enum.Enum):
    """Version-resolution decision codes."""

    VALIDATED = "VALIDATED"
    REVALIDATION_REQUIRED = "REVALIDATION_REQUIRED"
    RENEWED_APPROVAL_REQUIRED = "RENEWED_APPROVAL_REQUIRED"
    REJECTED_AS_STALE = "REJECTED_AS_STALE"


class ApprovalStatus(enum.Enum):
    """Status of one approval requirement."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    SATISFIED = "satisfied"
    EXPIRED = "expired"


class ResolutionStrategy(enum.Enum):
    """What to do when the state moved on since the request was evaluated."""

    REJECT_STALE = "reject_stale"
    REQUIRE_RENEWED_APPROVAL = "require_renewed_approval"
    REVALIDATE_ON_LATEST_STATE = "revalidate_on_latest_state"


class ResolutionOutcome(enum.Enum):
    """What version resolution concluded."""

    EXECUTE_APPROVED_VERSION = "execute_approved_version"
    REVALIDATE_ON_LATEST_STATE = "revalidate_on_latest_state"
    REJECTED_AS_STALE = "rejected_as_stale"
    REQUIRES_RENEWED_APPROVAL = "requires_renewed_approval"

    @property
    def executes(self) -> bool:
        """Whether this outcome lets the request's mutation run."""
        return self in _EXECUTING_OUTCOMES


_EXECUTING_OUTCOMES = (
    ResolutionOutcome.EXECUTE_APPROVED_VERSION,
    ResolutionOutcome.REVALIDATE_ON_LATEST_STATE,
)
"""Read from a module global: on Python 3.11 an attribute of an enum class is read through
EnumType's __getattr__ hook, about 800 instructions each time."""


class ExecutionKind(enum.Enum):
    """A standard governed execution or a compensation of an earlier one."""

    STANDARD = "standard"
    COMPENSATION = "compensation"


class CompensationKind(enum.Enum):
    """How a compensation undoes an execution: restore the old values or correct forward."""

    ROLLBACK = "rollback"
    FORWARD_CORRECTION = "forward_correction"


class CompensationTrigger(enum.Enum):
    """What asked for a compensation."""

    OPERATOR_ROLLBACK = "operator_rollback"
    BATCH_FAILURE = "batch_failure"
    FAILED_EXECUTION = "failed_execution"


class LinkType(enum.Enum):
    """How two requests are linked (a compensation and the execution it compensates)."""

    COMPENSATES = "compensates"
    COMPENSATED_BY = "compensated_by"
