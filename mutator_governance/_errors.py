"""Governance errors, all rooted at :class:`mutator.MutatorError`."""

from __future__ import annotations

from datetime import datetime

from mutator import ConfigurationError, MutatorError

from ._enums import PendingReason, RequestStatus

__all__ = [
    "AlreadyCompensatedError",
    "CompensationError",
    "CompensationNotAllowedError",
    "RequestClaimedError",
    "ApprovalError",
    "ApprovalExpiredError",
    "ApprovalNotFoundError",
    "ApprovalStateError",
    "ApprovalConfigurationError",
    "ApproverMismatchError",
    "ApprovalStepError",
    "DuplicateApproverError",
    "GovernanceError",
    "InvalidApprovalActionError",
    "InvalidTransitionError",
    "RequestAlreadyExistsError",
    "RequestConcurrencyError",
    "RequestNotExecutableError",
    "RequestNotFoundError",
    "SelfApprovalError",
    "StateNotFoundError",
    "StoredDataError",
    "StoreNotFoundError",
    "StoreUnavailableError",
    "UnknownMutationTypeError",
]


class GovernanceError(MutatorError):
    """Base of governance errors; ``request_id`` names the request when there is one."""

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class RequestNotFoundError(GovernanceError, LookupError):
    """No request with this id exists in the store."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request {request_id!r} does not exist", request_id=request_id)


class RequestAlreadyExistsError(GovernanceError):
    """A request with this id already exists; creating it again changes nothing."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request {request_id!r} already exists", request_id=request_id)


class RequestConcurrencyError(GovernanceError):
    """A compare-and-set on the request revision lost against a concurrent writer."""

    def __init__(self, request_id: str, expected_revision: int, actual_revision: int | None):
        super().__init__(
            f"request {request_id!r} changed concurrently "
            f"(expected revision {expected_revision}, found {actual_revision})",
            request_id=request_id,
        )
        self.expected_revision = expected_revision
        self.actual_revision = actual_revision


class InvalidTransitionError(GovernanceError):
    """The lifecycle does not allow moving from ``current`` to ``target``."""

    def __init__(
        self,
        request_id: str,
        current: RequestStatus,
        target: RequestStatus,
        detail: str | None = None,
    ) -> None:
        message = f"request {request_id!r} cannot move from {current.name} to {target.name}"
        super().__init__(message + (f": {detail}" if detail else ""), request_id=request_id)
        self.current = current
        self.target = target


class RequestNotExecutableError(GovernanceError):
    """The request is not in a status from which it may be resolved or executed."""

    def __init__(
        self,
        request_id: str,
        status: RequestStatus,
        pending_reason: PendingReason | None,
        detail: str,
    ) -> None:
        where = status.name + (f"({pending_reason.name})" if pending_reason else "")
        super().__init__(f"request {request_id!r} is {where}: {detail}", request_id=request_id)
        self.status = status
        self.pending_reason = pending_reason


class UnknownMutationTypeError(GovernanceError, LookupError):
    """A mutation class or stored type name is not registered."""


class StoredDataError(GovernanceError):
    """A stored document or row could not be read back."""

    def __init__(
        self,
        message: str,
        *,
        backend: str,
        key: str | None = None,
        field: str | None = None,
        request_id: str | None = None,
    ) -> None:
        where = f" at {key!r}" if key else ""
        field_part = f" (field {field})" if field else ""
        super().__init__(f"[{backend}]{where}{field_part}: {message}", request_id=request_id)
        self.backend = backend
        self.key = key
        self.field = field


class StoreUnavailableError(GovernanceError):
    """The store could not be reached; ``url`` has its credentials removed."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(f"{message} ({url})")
        self.url = url


class StoreNotFoundError(GovernanceError, ConfigurationError):
    """``create=False`` and no governance store exists where the URL points (``where``: the
    PostgreSQL schema or Redis key prefix; ``url`` has its credentials removed): a mistyped
    location is refused instead of creating an empty store there."""

    def __init__(self, message: str, *, where: str, url: str) -> None:
        super().__init__(f"{message} ({url})")
        self.where = where
        self.url = url


class ApprovalError(GovernanceError):
    """Base of approval-workflow errors."""

    def __init__(
        self, message: str, *, request_id: str | None = None, approval_id: str | None = None
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.approval_id = approval_id


class ApprovalConfigurationError(ApprovalError):
    """Approval requirements are inconsistent (no target, impossible quorum, ...)."""


class ApprovalStateError(ApprovalError):
    """The request is not waiting for approvals."""


class ApprovalNotFoundError(ApprovalError, LookupError):
    """No approval requirement matches the id, or the actor has none in the active step."""


class InvalidApprovalActionError(ApprovalError):
    """The approval action is not allowed (already decided, blank actor, ...)."""


class ApprovalExpiredError(InvalidApprovalActionError):
    """The approval slot's own expiry passed before this decision (``expires_at``)."""

    def __init__(self, request_id: str, approval_id: str, expires_at: datetime) -> None:
        super().__init__(
            f"approval {approval_id!r} of request {request_id!r} expired at "
            f"{expires_at.isoformat()}",
            request_id=request_id,
            approval_id=approval_id,
        )
        self.expires_at = expires_at


class ApproverMismatchError(InvalidApprovalActionError):
    """The actor is not a target of the requirement (id, role or group)."""


class ApprovalStepError(InvalidApprovalActionError):
    """The requirement belongs to a later step than the active one."""


class SelfApprovalError(InvalidApprovalActionError):
    """Four-eyes: the requester may not decide their own request."""


class DuplicateApproverError(InvalidApprovalActionError):
    """The actor already approved another slot of the same quorum group."""


class StateNotFoundError(GovernanceError, LookupError):
    """The state a request targets is not in the state store."""

    def __init__(self, state_id: str) -> None:
        super().__init__(
            f"state {state_id!r} is not in the state store; create it with "
            "`await gov.states.put(state_id, state)` first"
        )
        self.state_id = state_id


class RequestClaimedError(RequestConcurrencyError):
    """Another executor holds the request's execution claim."""

    def __init__(self, request_id: str, claimant: str, lease_until: datetime) -> None:
        GovernanceError.__init__(
            self,
            f"request {request_id!r} is being executed by {claimant!r} "
            f"(lease until {lease_until.isoformat()})",
            request_id=request_id,
        )
        self.expected_revision = -1
        self.actual_revision = None
        self.claimant = claimant
        self.lease_until = lease_until


class CompensationError(GovernanceError):
    """A compensation cannot be created."""


class CompensationNotAllowedError(CompensationError):
    """The original was not executed, or its intent is not reversible (without override)."""


class AlreadyCompensatedError(CompensationError):
    """The original already has a compensation (executed or in flight)."""

    def __init__(self, request_id: str, compensation_id: str) -> None:
        super().__init__(
            f"request {request_id!r} is already compensated by {compensation_id!r}",
            request_id=request_id,
        )
        self.compensation_id = compensation_id


def outage_in(error: BaseException) -> StoreUnavailableError | None:
    """The store outage behind ``error`` (itself or a cause or context), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, StoreUnavailableError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
