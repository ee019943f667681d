"""The durable request: a governed mutation waiting for, or past, its execution."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from mutator import Mutation, MutationContext, MutationIntent, PolicyRequirement, SideEffect
from mutator.values import aware, freeze_mapping, optional_aware, to_tuple, trusted

from ._approvals import ApprovalRequirement
from ._copying import attrs_copier
from ._decisions import RequestDecision, numbered
from ._enums import (
    ApprovalStatus,
    CompensationKind,
    CompensationTrigger,
    ExecutionKind,
    LinkType,
    PendingReason,
    RequestStatus,
)
from ._ids import new_token

__all__ = [
    "check_changes",
    "copy_request",
    "evolve_request",
    "expiry_deadline",
    "new_claim",
    "new_request",
    "CompensationPlan",
    "ExecutionClaim",
    "ExecutionDetails",
    "ExecutionLink",
    "MutationRequest",
]

# Hot paths read enum members from module globals: on Python 3.11 an attribute of an enum
# class is read through EnumType's __getattr__ hook, about 800 instructions each time.
_APPROVED = RequestStatus.APPROVED
_PENDING = RequestStatus.PENDING
_REVALIDATION = PendingReason.REVALIDATION


@attrs.frozen
class CompensationPlan:
    """Why and how a compensation request undoes or corrects an executed one."""

    original_request_id: str
    kind: CompensationKind = CompensationKind.ROLLBACK
    trigger: CompensationTrigger = CompensationTrigger.OPERATOR_ROLLBACK
    batch_id: str | None = None
    related_request_ids: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    reason: str | None = None


@attrs.frozen
class ExecutionLink:
    """A link between an execution and its compensation."""

    request_id: str
    type: LinkType
    kind: ExecutionKind
    linked_at: datetime
    compensation_kind: CompensationKind | None = None
    trigger: CompensationTrigger | None = None
    batch_id: str | None = None


@attrs.frozen
class ExecutionDetails:
    """Whether a request is a standard execution or a compensation, and its links."""

    kind: ExecutionKind = ExecutionKind.STANDARD
    compensation: CompensationPlan | None = None
    links: tuple[ExecutionLink, ...] = attrs.field(default=(), converter=to_tuple)


@attrs.frozen
class ExecutionClaim:
    """Who is executing a request and until when their lease holds."""

    claimant: str
    claimed_at: datetime = attrs.field(validator=aware)
    lease_until: datetime = attrs.field(validator=aware)
    revalidating: bool = False
    token: str = attrs.field(factory=new_token)


_build_claim = trusted(ExecutionClaim)
_CLAIMED_AT, _LEASE_UNTIL = attrs.fields(ExecutionClaim)[1:3]


def new_claim(
    claimant: str, claimed_at: datetime, lease_until: datetime, revalidating: bool
) -> ExecutionClaim:
    """``ExecutionClaim(...)`` for the library's own claims: checks the times only."""
    aware(None, _CLAIMED_AT, claimed_at)
    aware(None, _LEASE_UNTIL, lease_until)
    claim: ExecutionClaim = _build_claim(
        claimant, claimed_at, lease_until, revalidating, new_token()
    )
    return claim


@attrs.frozen
class MutationRequest:
    """A governed mutation as a durable, versioned record.

    Immutable: every change produces a new request with ``revision`` advanced by the
    store. ``decisions`` is the append-only history of what happened to it.
    ``trace_context`` is the W3C trace context (``traceparent``/``tracestate``) of the
    span that submitted it, when governance is instrumented: later spans link to it.
    """

    request_id: str
    state_id: str
    state_type: str
    mutation_type: str
    mutation: Mutation[Any]
    intent: MutationIntent
    context: MutationContext
    status: RequestStatus
    created_at: datetime = attrs.field(validator=aware)
    updated_at: datetime = attrs.field(validator=aware)
    pending_reason: PendingReason | None = None
    policy_requirements: tuple[PolicyRequirement, ...] = attrs.field(default=(), converter=to_tuple)
    approval_requirements: tuple[ApprovalRequirement, ...] = attrs.field(
        default=(), converter=to_tuple
    )
    decisions: tuple[RequestDecision, ...] = attrs.field(default=(), converter=numbered)
    revision: int = 0
    expected_state_version: str | None = None
    resulting_state_version: str | None = None
    expires_at: datetime | None = attrs.field(default=None, validator=optional_aware)
    executed_at: datetime | None = attrs.field(default=None, validator=optional_aware)
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=freeze_mapping, hash=False)
    side_effects: tuple[SideEffect, ...] = attrs.field(default=(), converter=to_tuple)
    execution: ExecutionDetails = ExecutionDetails()
    claim: ExecutionClaim | None = None
    approval_round: int = 1
    trace_context: Mapping[str, str] = attrs.field(
        factory=dict, converter=freeze_mapping, hash=False
    )

    @property
    def requester(self) -> str | None:
        """The actor id of whoever submitted the request."""
        return self.context.actor_id

    @property
    def is_terminal(self) -> bool:
        """True once no transition leaves the request's status (it never runs again)."""
        return self.status.is_terminal

    @property
    def is_executable(self) -> bool:
        """APPROVED, or pending revalidation (executable under that strategy)."""
        status = self.status
        return status is _APPROVED or (status is _PENDING and self.pending_reason is _REVALIDATION)

    @property
    def open_approvals(self) -> tuple[ApprovalRequirement, ...]:
        """The approval requirements still pending."""
        return tuple(a for a in self.approval_requirements if a.status is ApprovalStatus.PENDING)

    @property
    def active_step(self) -> int | None:
        """The lowest step that still has a pending approval, or None."""
        steps = [a.step for a in self.approval_requirements if a.status is ApprovalStatus.PENDING]
        return min(steps) if steps else None

    @property
    def last_decision(self) -> RequestDecision | None:
        """The newest decision, or None."""
        return self.decisions[-1] if self.decisions else None

    def approval(self, approval_id: str) -> ApprovalRequirement | None:
        """The approval requirement with ``approval_id``, or None."""
        for requirement in self.approval_requirements:
            if requirement.approval_id == approval_id:
                return requirement
        return None


_REQUEST_FIELDS = attrs.fields(MutationRequest)
_REQUEST_FIELD_NAMES = frozenset(a.name for a in _REQUEST_FIELDS)
_CHECKED = {a.name: a for a in _REQUEST_FIELDS if a.converter or a.validator}


_copy = attrs_copier(MutationRequest)


def check_changes(request: MutationRequest, changes: dict[str, Any]) -> None:
    """Convert and validate ``changes`` in place, as :func:`evolve_request` does."""
    if not _REQUEST_FIELD_NAMES.issuperset(changes):
        unknown = changes.keys() - _REQUEST_FIELD_NAMES
        raise TypeError(f"MutationRequest has no field(s) {', '.join(sorted(unknown))}")
    for name, value in changes.items():
        field = _CHECKED.get(name)
        if field is None:
            continue
        if field.converter is not None:
            value = changes[name] = field.converter(value)  # type: ignore[operator]
        if field.validator is not None:
            field.validator(request, field, value)


def copy_request(request: MutationRequest, changes: dict[str, Any]) -> MutationRequest:
    """A copy of ``request`` with ``changes`` taken as they are (already checked)."""
    copied: MutationRequest = _copy(request, changes)
    return copied


_TEMPLATE = MutationRequest(
    request_id="",
    state_id="",
    state_type="",
    mutation_type="",
    mutation=None,  # type: ignore[arg-type]
    intent=None,  # type: ignore[arg-type]
    context=MutationContext(),
    status=RequestStatus.CREATED,
    created_at=datetime.min.replace(tzinfo=UTC),
    updated_at=datetime.min.replace(tzinfo=UTC),
)


def new_request(fields: dict[str, Any]) -> MutationRequest:
    """``MutationRequest(**fields)``: ``fields`` are converted and validated, the rest default.

    Cheaper than the constructor because defaults are copied from a template built once
    (every default is immutable) instead of converted again. ``fields`` must name every
    field without a default, in declaration order (the order errors are raised in).
    """
    check_changes(_TEMPLATE, fields)
    copied: MutationRequest = _copy(_TEMPLATE, fields)
    return copied


def evolve_request(request: MutationRequest, **changes: Any) -> MutationRequest:
    """A copy of ``request`` with ``changes``: converts and validates only the changed fields.

    The trusted copy used on the library's own paths (transitions, stores): the fields
    that did not change were validated when ``request`` was built, so unlike
    :func:`attrs.evolve` this does not run every converter again.
    """
    check_changes(request, changes)
    copied: MutationRequest = _copy(request, changes)
    return copied


def expiry_deadline(request: MutationRequest) -> datetime | None:
    """The first moment an expiry sweep has something to do with ``request``, or None.

    For a PENDING request, the earliest of its own ``expires_at`` and the expiries of its
    open approval slots; None for any other status or when nothing of it expires. Stores
    that implement :class:`~mutator_governance.ExpiryIndex` index it, so a sweep reads only
    the requests it expires.
    """
    if request.status is not _PENDING:
        return None
    deadline = request.expires_at
    for slot in request.approval_requirements:
        at = slot.expires_at
        if (
            at is not None
            and slot.status is ApprovalStatus.PENDING
            and (deadline is None or at < deadline)
        ):
            deadline = at
    return deadline
