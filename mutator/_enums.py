"""Closed sets used across the core model."""

from __future__ import annotations

import enum

__all__ = [
    "ActorType",
    "BlastRadiusScope",
    "ChangeType",
    "MutationMode",
    "ResultStatus",
    "RiskLevel",
    "Severity",
]


class _Ordered(enum.IntEnum):
    """An ordered enum whose members print by name."""

    def __str__(self) -> str:
        return self.name


class RiskLevel(_Ordered):
    """How dangerous a mutation is; ordered, so policies can compare levels."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2
    CRITICAL = 3


class BlastRadiusScope(_Ordered):
    """How far the effect of a mutation reaches; ordered from narrow to wide."""

    SINGLE = 0
    MODULE = 1
    SYSTEM = 2
    GLOBAL = 3


class Severity(_Ordered):
    """Severity of a validation issue, policy decision or side effect."""

    INFO = 0
    WARNING = 1
    ERROR = 2
    CRITICAL = 3


class ActorType(enum.Enum):
    """Who initiated a mutation."""

    UNKNOWN = "unknown"
    USER = "user"
    SYSTEM = "system"
    SERVICE = "service"
    POLICY = "policy"
    SCHEDULER = "scheduler"
    ADMINISTRATOR = "administrator"


class MutationMode(enum.Enum):
    """What the engine does with a mutation: preview it, only validate it, or commit it."""

    SIMULATE = "simulate"
    VALIDATE = "validate"
    COMMIT = "commit"


class ChangeType(enum.Enum):
    """The kind of one recorded state change."""

    MODIFIED = "modified"
    ADDED = "added"
    REMOVED = "removed"
    REPLACED = "replaced"
    MOVED = "moved"


class ResultStatus(enum.Enum):
    """Outcome of one execution; only ``SUCCEEDED`` is a success."""

    SUCCEEDED = "succeeded"
    VALIDATION_FAILED = "validation_failed"
    POLICY_BLOCKED = "policy_blocked"
    APPROVAL_REQUIRED = "approval_required"
