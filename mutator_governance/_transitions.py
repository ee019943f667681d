"""The one function that changes a request's status, and the one that records decisions."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import attrs

from mutator.values import aware

from ._decisions import RequestDecision, numbered
from ._enums import PendingReason, RequestStatus
from ._errors import InvalidTransitionError
from ._request import MutationRequest, check_changes, copy_request

_UPDATED_AT = attrs.fields(MutationRequest).updated_at

__all__ = ["ALLOWED_TRANSITIONS", "can_transition", "record", "transition"]

S = RequestStatus

ALLOWED_TRANSITIONS: dict[RequestStatus, frozenset[RequestStatus]] = {
    S.CREATED: frozenset({S.PENDING, S.APPROVED, S.REJECTED, S.CANCELED, S.SUPERSEDED}),
    S.PENDING: frozenset(
        {S.APPROVED, S.REJECTED, S.CANCELED, S.EXPIRED, S.SUPERSEDED, S.EXECUTING}
    ),
    S.APPROVED: frozenset(
        {S.PENDING, S.REJECTED, S.CANCELED, S.SUPERSEDED, S.EXECUTED, S.EXECUTING}
    ),
    S.EXECUTING: frozenset({S.EXECUTED, S.FAILED, S.REJECTED, S.APPROVED, S.PENDING}),
    S.REJECTED: frozenset(),
    S.CANCELED: frozenset(),
    S.EXPIRED: frozenset(),
    S.SUPERSEDED: frozenset(),
    S.EXECUTED: frozenset(),
    S.FAILED: frozenset(),
}
"""Statuses reachable from each status: B.3, plus CREATED → REJECTED (denied at submission),
the execution claim edges, and PENDING(REVALIDATION) → PENDING(APPROVAL) (renewed approval
of a request awaiting revalidation)."""

# Hot paths read enum members from module globals: on Python 3.11 an attribute of an enum
# class is read through EnumType's __getattr__ hook, about 800 instructions each time.
_PENDING = S.PENDING
_EXECUTING = S.EXECUTING
_APPROVAL = PendingReason.APPROVAL
_REVALIDATION = PendingReason.REVALIDATION


def can_transition(
    request: MutationRequest,
    target: RequestStatus,
    pending_reason: PendingReason | None = None,
) -> str | None:
    """Why ``request`` may not move to ``target`` (None when it may)."""
    current = request.status
    if (
        current is _PENDING
        and target is _PENDING
        and request.pending_reason is _REVALIDATION
        and pending_reason is _APPROVAL
    ):
        return None
    if target not in ALLOWED_TRANSITIONS[current]:
        if current.is_terminal:
            return f"{current.name} is terminal"
        return "not an allowed transition"
    if target is _PENDING and pending_reason is None:
        return "a pending request needs a pending reason"
    if current is _PENDING and target is _EXECUTING and request.pending_reason is not _REVALIDATION:
        return "only a request pending REVALIDATION may be claimed for execution"
    if (
        current is _EXECUTING
        and target is _PENDING
        and pending_reason not in (_APPROVAL, _REVALIDATION)
    ):
        return "an executing request may only return to pending APPROVAL or REVALIDATION"
    return None


def transition(
    request: MutationRequest,
    target: RequestStatus,
    decisions: Iterable[RequestDecision],
    *,
    at: datetime,
    pending_reason: PendingReason | None = None,
    **changes: Any,
) -> MutationRequest:
    """Move ``request`` to ``target``, appending ``decisions``; the only status writer.

    Raises :class:`InvalidTransitionError` (and changes nothing) for a move the lifecycle
    does not allow. Leaving PENDING clears the pending reason; leaving EXECUTING drops the
    claim; reaching a terminal status clears the expiry.
    """
    refusal = can_transition(request, target, pending_reason)
    if refusal is not None:
        raise InvalidTransitionError(request.request_id, request.status, target, refusal)
    aware(request, _UPDATED_AT, at)
    if changes:
        check_changes(request, changes)
    if target is not _PENDING:
        pending_reason = None
    if target is not _EXECUTING:
        changes.setdefault("claim", None)
    if target.is_terminal:
        changes.setdefault("expires_at", None)
    changes["status"] = target
    changes["pending_reason"] = pending_reason
    changes["decisions"] = request.decisions + numbered(decisions, len(request.decisions))
    changes["updated_at"] = at
    return copy_request(request, changes)


def record(
    request: MutationRequest,
    decisions: Iterable[RequestDecision],
    *,
    at: datetime,
    **changes: Any,
) -> MutationRequest:
    """Append ``decisions`` (and field changes) without changing the status."""
    if "status" in changes or "pending_reason" in changes:
        raise ValueError("record() does not change status; use transition()")
    aware(request, _UPDATED_AT, at)
    if changes:
        check_changes(request, changes)
    changes["decisions"] = request.decisions + numbered(decisions, len(request.decisions))
    changes["updated_at"] = at
    return copy_request(request, changes)
