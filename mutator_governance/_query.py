"""Request queries, pages and cursors shared by every store."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import attrs

from mutator.values import optional_aware, to_tuple

from ._decisions import RequestDecision
from ._enums import PendingReason, RequestStatus
from ._request import MutationRequest

__all__ = ["DecisionRecord", "RequestPage", "RequestQuery", "VersionedState"]


def _frozen(value: Iterable[Any] | None) -> frozenset[Any]:
    return frozenset(value or ())


@attrs.frozen
class RequestQuery:
    """Filters for listing requests; empty sets and None bounds mean "no constraint".

    Time bounds are inclusive. Results are ordered by ``created_at`` then ``request_id``.
    """

    statuses: frozenset[RequestStatus] = attrs.field(default=frozenset(), converter=_frozen)
    pending_reasons: frozenset[PendingReason] = attrs.field(default=frozenset(), converter=_frozen)
    state_ids: frozenset[str] = attrs.field(default=frozenset(), converter=_frozen)
    actor_ids: frozenset[str] = attrs.field(default=frozenset(), converter=_frozen)
    created_from: datetime | None = attrs.field(default=None, validator=optional_aware)
    created_to: datetime | None = attrs.field(default=None, validator=optional_aware)
    updated_from: datetime | None = attrs.field(default=None, validator=optional_aware)
    updated_to: datetime | None = attrs.field(default=None, validator=optional_aware)

    def matches(self, request: MutationRequest) -> bool:
        """The reference predicate every backend's pushed-down query must agree with."""
        if self.statuses and request.status not in self.statuses:
            return False
        if self.pending_reasons and request.pending_reason not in self.pending_reasons:
            return False
        if self.state_ids and request.state_id not in self.state_ids:
            return False
        if self.actor_ids and request.context.actor_id not in self.actor_ids:
            return False
        if self.created_from is not None and request.created_at < self.created_from:
            return False
        if self.created_to is not None and request.created_at > self.created_to:
            return False
        if self.updated_from is not None and request.updated_at < self.updated_from:
            return False
        return not (self.updated_to is not None and request.updated_at > self.updated_to)


@attrs.frozen
class RequestPage:
    """One page of requests and the cursor of the next page (None on the last page)."""

    items: tuple[MutationRequest, ...] = attrs.field(converter=to_tuple)
    next_cursor: str | None = None


@attrs.frozen
class DecisionRecord:
    """A decision together with the request it belongs to."""

    request_id: str
    decision: RequestDecision


@attrs.frozen
class VersionedState:
    """A state, its version, and the request whose execution produced that version."""

    state: Any
    version: str
    request_id: str | None = None


def sort_key(request: MutationRequest) -> tuple[datetime, str]:
    return (request.created_at, request.request_id)


def encode_cursor(request: MutationRequest) -> str:
    raw = json.dumps([request.created_at.isoformat(), request.request_id])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Decode a cursor from :func:`encode_cursor` (ValueError when it is not one)."""
    try:
        created, request_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        moment = datetime.fromisoformat(created)
    except Exception as error:
        raise ValueError(f"not a request cursor: {cursor!r}") from error
    if not isinstance(request_id, str) or moment.tzinfo is None:
        raise ValueError(f"not a request cursor: {cursor!r}")
    return moment, request_id


def page_of(ordered: Sequence[MutationRequest], limit: int, cursor: str | None) -> RequestPage:
    """Slice an ordered, filtered sequence into a page after ``cursor``."""
    if limit < 1:
        raise ValueError("limit must be >= 1")
    start = 0
    if cursor is not None:
        after = decode_cursor(cursor)
        start = next((i for i, r in enumerate(ordered) if sort_key(r) > after), len(ordered))
    items = tuple(ordered[start : start + limit])
    more = start + limit < len(ordered)
    return RequestPage(items, encode_cursor(items[-1]) if more and items else None)


def next_version(version: str | None) -> str:
    """The version after ``version``: state versions are decimal counters ("1", "2", ...).

    Every state store uses this scheme, so a governed execution knows the version it will
    produce before it commits the state and the request together.
    """
    if version is None:
        return "1"
    try:
        return str(int(version) + 1)
    except ValueError:
        raise ValueError(f"state version {version!r} is not a decimal counter") from None
