"""Approval and decision queries: one row per approval slot or per decision of a request.

An :class:`ApprovalQuery` projects each matching request onto its approval slots
(:class:`ApprovalView`), a :class:`DecisionQuery` onto its decisions
(:class:`DecisionView`). Both start from a :class:`RequestQuery` for the request-level
filters; their ``matches`` methods are the reference predicates.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import attrs

from mutator.values import optional_aware, to_tuple

from ._approvals import ApprovalRequirement
from ._decisions import DecisionCode, RequestDecision
from ._enums import (
    ApprovalDecision,
    ApprovalStatus,
    DecisionCategory,
    LifecycleDecision,
    PendingReason,
    RequestStatus,
    ResolutionDecision,
)
from ._query import RequestQuery, members, names, to_set
from ._request import MutationRequest

__all__ = [
    "ApprovalPage",
    "ApprovalQuery",
    "ApprovalView",
    "DecisionPage",
    "DecisionQuery",
    "DecisionView",
]

_CODES = (LifecycleDecision, ApprovalDecision, ResolutionDecision)


def _request_query(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, RequestQuery):
        raise TypeError(f"{attribute.name} must be a RequestQuery, got {value!r}")


def _codes(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, frozenset) or not all(isinstance(c, _CODES) for c in value):
        raise TypeError(
            f"{attribute.name} must be a set of LifecycleDecision, ApprovalDecision or "
            f"ResolutionDecision members, got {value!r}"
        )


def _narrowed(query: RequestQuery, field: str, extra: frozenset[Any]) -> RequestQuery | None:
    """``query`` with ``field`` also limited to ``extra``; None when nothing can match."""
    if not extra:
        return query
    current: frozenset[Any] = getattr(query, field)
    merged = extra & current if current else extra
    if not merged:
        return None
    changes: dict[str, Any] = {field: merged}
    return attrs.evolve(query, **changes)


@attrs.frozen
class ApprovalView:
    """One approval slot together with the request it belongs to."""

    request: MutationRequest
    approval: ApprovalRequirement

    @property
    def sort_key(self) -> tuple[datetime, str, int, str]:
        """Request creation, request id, step, approval id: the order of approval pages."""
        request, approval = self.request, self.approval
        return (request.created_at, request.request_id, approval.step, approval.approval_id)


@attrs.frozen
class DecisionView:
    """One decision together with the request it belongs to.

    ``index`` is the decision's position in ``request.decisions`` (0 = the first).
    """

    request: MutationRequest
    decision: RequestDecision
    index: int = 0


@attrs.frozen
class ApprovalQuery:
    """Filters for approval slots: request filters plus filters on the slot and its request.

    ``categories`` are intent categories of the request; ``approver_ids``,
    ``approver_roles`` and ``approver_groups`` match the slot's target (a slot without
    that kind of target never matches a non-empty filter); ``approval_statuses`` the
    slot's status; ``pending_reasons`` and ``request_statuses`` the request's.
    """

    request: RequestQuery = attrs.field(factory=RequestQuery, validator=_request_query)
    categories: frozenset[str] = attrs.field(default=frozenset(), converter=to_set, validator=names)
    approver_ids: frozenset[str] = attrs.field(
        default=frozenset(), converter=to_set, validator=names
    )
    approver_roles: frozenset[str] = attrs.field(
        default=frozenset(), converter=to_set, validator=names
    )
    approver_groups: frozenset[str] = attrs.field(
        default=frozenset(), converter=to_set, validator=names
    )
    approval_statuses: frozenset[ApprovalStatus] = attrs.field(
        default=frozenset(), converter=to_set, validator=members(ApprovalStatus)
    )
    pending_reasons: frozenset[PendingReason] = attrs.field(
        default=frozenset(), converter=to_set, validator=members(PendingReason)
    )
    request_statuses: frozenset[RequestStatus] = attrs.field(
        default=frozenset(), converter=to_set, validator=members(RequestStatus)
    )

    @classmethod
    def pending(cls, **filters: Any) -> ApprovalQuery:
        """Open slots of requests pending for approval (plus any further ``filters``)."""
        preset: dict[str, Any] = {
            "approval_statuses": {ApprovalStatus.PENDING},
            "request_statuses": {RequestStatus.PENDING},
            "pending_reasons": {PendingReason.APPROVAL},
        }
        return cls(**{**preset, **filters})

    def matches(self, request: MutationRequest, approval: ApprovalRequirement) -> bool:
        """The reference predicate for one slot of one request."""
        return (
            self.request.matches(request)
            and (not self.categories or request.intent.category in self.categories)
            and (not self.approver_ids or approval.approver_id in self.approver_ids)
            and (not self.approver_roles or approval.role in self.approver_roles)
            and (not self.approver_groups or approval.group in self.approver_groups)
            and (not self.approval_statuses or approval.status in self.approval_statuses)
            and (not self.pending_reasons or request.pending_reason in self.pending_reasons)
            and (not self.request_statuses or request.status in self.request_statuses)
        )

    def views(self, request: MutationRequest) -> list[ApprovalView]:
        """The matching slots of ``request``, by step then approval id."""
        views = [ApprovalView(request, a) for a in request.approval_requirements]
        views.sort(key=lambda v: (v.approval.step, v.approval.approval_id))
        return [v for v in views if self.matches(request, v.approval)]

    def request_filter(self) -> RequestQuery | None:
        """A request query every request with a matching slot satisfies (None: no request).

        Stores answer it, so the request-level parts of this query are pushed down.
        """
        query: RequestQuery | None = self.request
        for field, extra in (
            ("statuses", self.request_statuses),
            ("pending_reasons", self.pending_reasons),
            ("intent_categories", self.categories),
        ):
            if query is None:
                return None
            query = _narrowed(query, field, extra)
        return query


@attrs.frozen
class DecisionQuery:
    """Filters for decisions: request filters plus filters on the decision itself.

    ``categories`` and ``codes`` (members of the decision code enums) match the
    decision; ``actor_ids`` / ``actor_names`` its actor (None never matches a non-empty
    filter); ``decided_from`` / ``decided_to`` bound its timestamp, inclusively.
    """

    request: RequestQuery = attrs.field(factory=RequestQuery, validator=_request_query)
    categories: frozenset[DecisionCategory] = attrs.field(
        default=frozenset(), converter=to_set, validator=members(DecisionCategory)
    )
    codes: frozenset[DecisionCode] = attrs.field(
        default=frozenset(), converter=to_set, validator=_codes
    )
    actor_ids: frozenset[str] = attrs.field(default=frozenset(), converter=to_set, validator=names)
    actor_names: frozenset[str] = attrs.field(
        default=frozenset(), converter=to_set, validator=names
    )
    decided_from: datetime | None = attrs.field(default=None, validator=optional_aware)
    decided_to: datetime | None = attrs.field(default=None, validator=optional_aware)

    @classmethod
    def recent_version_resolutions(cls, **filters: Any) -> DecisionQuery:
        """Version-resolution decisions (plus any further ``filters``)."""
        return cls(**{"categories": {DecisionCategory.VERSION_RESOLUTION}, **filters})

    @classmethod
    def recent_execution_outcomes(cls, **filters: Any) -> DecisionQuery:
        """Lifecycle decisions that end a request: executed, rejected, canceled, expired,
        superseded (plus any further ``filters``)."""
        preset: dict[str, Any] = {
            "categories": {DecisionCategory.LIFECYCLE},
            "codes": {
                LifecycleDecision.EXECUTED,
                LifecycleDecision.REJECTED,
                LifecycleDecision.CANCELED,
                LifecycleDecision.EXPIRED,
                LifecycleDecision.SUPERSEDED,
            },
        }
        return cls(**{**preset, **filters})

    def matches(self, request: MutationRequest, decision: RequestDecision) -> bool:
        """The reference predicate for one decision of one request."""
        context = decision.context
        return (
            self.request.matches(request)
            and (not self.categories or decision.category in self.categories)
            and (not self.codes or decision.code in self.codes)
            and (not self.actor_ids or context.actor_id in self.actor_ids)
            and (not self.actor_names or context.actor_name in self.actor_names)
            and (self.decided_from is None or decision.timestamp >= self.decided_from)
            and (self.decided_to is None or decision.timestamp <= self.decided_to)
        )

    def views(self, request: MutationRequest) -> list[DecisionView]:
        """The matching decisions of ``request``, oldest first."""
        return [
            DecisionView(request, decision, index)
            for index, decision in enumerate(request.decisions)
            if self.matches(request, decision)
        ]

    def request_filter(self) -> RequestQuery:
        """A request query every request with a matching decision satisfies."""
        query = self.request
        if self.categories and not query.decision_categories:
            return attrs.evolve(query, decision_categories=self.categories)
        return query


@attrs.frozen
class ApprovalPage:
    """One page of approval views and the cursor of the next page (None on the last)."""

    items: tuple[ApprovalView, ...] = attrs.field(converter=to_tuple)
    next_cursor: str | None = None


@attrs.frozen
class DecisionPage:
    """One page of decision views, newest first, and the cursor of the next page."""

    items: tuple[DecisionView, ...] = attrs.field(converter=to_tuple)
    next_cursor: str | None = None


# -- cursors -------------------------------------------------------------------------------

_APPROVAL = "approval"
_DECISION = "decision"


def _encode(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()


def _decode(cursor: str, tag: str, size: int, label: str) -> list[Any]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        valid = isinstance(parts, list) and len(parts) == size and parts[0] == tag
    except Exception:
        valid = False
    if not valid:
        raise ValueError(f"not {label} cursor: {cursor!r}")
    result: list[Any] = parts
    return result


def _moment(text: Any, cursor: str, kind: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"not {kind} cursor: {cursor!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"not {kind} cursor: {cursor!r}")
    return moment


def encode_approval_cursor(view: ApprovalView) -> str:
    """The cursor of the position right after ``view`` in approval order."""
    created, request_id, step, approval_id = view.sort_key
    return _encode(_APPROVAL, created.isoformat(), request_id, step, approval_id)


def decode_approval_cursor(cursor: str) -> tuple[datetime, str, int, str]:
    """The approval position of ``cursor`` (ValueError when it is not an approval cursor)."""
    if not isinstance(cursor, str):
        raise ValueError(f"not an approval cursor: {cursor!r}")
    _, created, request_id, step, approval_id = _decode(cursor, _APPROVAL, 5, "an approval")
    if not (isinstance(request_id, str) and type(step) is int and isinstance(approval_id, str)):
        raise ValueError(f"not an approval cursor: {cursor!r}")
    return _moment(created, cursor, "an approval"), request_id, step, approval_id


def encode_decision_cursor(view: DecisionView) -> str:
    """The cursor of the position right after ``view`` in decision order."""
    stamp = view.decision.timestamp.isoformat()
    return _encode(_DECISION, stamp, view.request.request_id, view.index)


def decode_decision_cursor(cursor: str) -> tuple[datetime, str, int]:
    """The decision position of ``cursor`` (ValueError when it is not a decision cursor)."""
    if not isinstance(cursor, str):
        raise ValueError(f"not a decision cursor: {cursor!r}")
    _, stamp, request_id, index = _decode(cursor, _DECISION, 4, "a decision")
    if not (isinstance(request_id, str) and type(index) is int):
        raise ValueError(f"not a decision cursor: {cursor!r}")
    return _moment(stamp, cursor, "a decision"), request_id, index
