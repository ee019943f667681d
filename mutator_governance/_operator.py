"""What approvers and operators look at: approval slots, decisions and the approver inbox.

These run over any :class:`~mutator_governance.RequestStore`: the request-level filters
go to the store's ``list`` (pushed down where the store can), the slot- and decision-level
ones are applied here with the queries' reference predicates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import attrs

from mutator import MutationContext
from mutator.values import utc_now

from ._arguments import check_limit, check_moment
from ._enums import DecisionCategory
from ._errors import StoredDataError
from ._query import DecisionRecord, RequestQuery, encode_position, listing
from ._query_views import (
    ApprovalPage,
    ApprovalQuery,
    ApprovalView,
    DecisionPage,
    DecisionQuery,
    DecisionView,
    decode_approval_cursor,
    decode_decision_cursor,
    encode_approval_cursor,
    encode_decision_cursor,
)
from ._request import MutationRequest
from ._workflow import decidable_slots
from .protocols import DecisionHistory, RequestStore

_log = logging.getLogger("mutator.governance")

__all__ = ["inbox", "list_approvals", "list_decisions"]

_SCAN = 200
"""Requests fetched per store page while filling a page of views."""


async def _fill(
    requests: RequestStore,
    query: RequestQuery,
    cursor: str | None,
    batch: int,
    take: Callable[[MutationRequest], bool],
) -> None:
    """Feed requests matching ``query`` after ``cursor`` to ``take`` until it returns True.

    (A plain loop rather than an async generator, which trio cannot finalize when the
    consumer stops early.)
    """
    while True:
        page = await requests.list(query, limit=batch, cursor=cursor)
        for request in page.items:
            if take(request):
                return
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def _approval_page(
    requests: RequestStore,
    query: RequestQuery | None,
    views_of: Callable[[MutationRequest], list[ApprovalView]],
    limit: int,
    cursor: str | None,
) -> ApprovalPage:
    """A page of the views of the requests matching ``query``, in approval order."""
    check_limit(limit)
    after = decode_approval_cursor(cursor) if cursor is not None else None
    if query is None:
        return ApprovalPage(())
    found: list[ApprovalView] = []
    request_cursor = None
    if after is not None:
        created, request_id = after[0], after[1]
        # the cursor's own request may have slots left after the cursor's position
        current = await requests.get(request_id)
        if current is not None and current.created_at == created and query.matches(current):
            found.extend(v for v in views_of(current) if v.sort_key > after)
        request_cursor = encode_position(created, request_id)
    if len(found) <= limit:

        def take(request: MutationRequest) -> bool:
            found.extend(views_of(request))
            return len(found) > limit

        await _fill(requests, query, request_cursor, min(max(limit + 1, 20), _SCAN), take)
    items = found[:limit]
    more = len(found) > limit
    return ApprovalPage(items, encode_approval_cursor(items[-1]) if more else None)


async def list_approvals(
    requests: RequestStore,
    query: ApprovalQuery | None = None,
    *,
    limit: int = 100,
    cursor: str | None = None,
) -> ApprovalPage:
    """A page of approval slots matching ``query``, one :class:`ApprovalView` per slot.

    Ordered by the request's ``created_at`` and id, then the slot's step and approval id
    (oldest request first). A cursor is a position, so slots of requests created later
    appear on later pages; an invalid cursor or ``limit < 1`` raises ValueError.
    """
    query = query if query is not None else ApprovalQuery()
    if not isinstance(query, ApprovalQuery):
        raise TypeError(f"query must be an ApprovalQuery, got {type(query).__name__}")
    return await _approval_page(requests, query.request_filter(), query.views, limit, cursor)


async def inbox(
    requests: RequestStore,
    context: MutationContext,
    *,
    allow_self_approval: bool = False,
    at: datetime | None = None,
    query: RequestQuery | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> ApprovalPage:
    """The approval slots the actor of ``context`` may decide now, oldest request first.

    A slot is in the inbox when its request is pending for approval, it is open, not
    expired at ``at`` (default: now), in the request's active step, and targets the actor
    by id, by a role in ``context.metadata["roles"]`` or a group in
    ``context.metadata["groups"]`` — and the actor did not submit the request (unless
    ``allow_self_approval``) nor already approve in its quorum group. That is exactly
    the rule ``approve`` and ``reject`` enforce. ``query`` narrows the requests.
    """
    if not isinstance(context, MutationContext):
        raise TypeError(f"context must be a MutationContext, got {type(context).__name__}")
    moment = utc_now() if at is None else check_moment("at", at)
    pending = ApprovalQuery.pending(request=listing(query, limit))

    def views_of(request: MutationRequest) -> list[ApprovalView]:
        slots = decidable_slots(
            request, context, allow_self_approval=allow_self_approval, at=moment
        )
        views = [ApprovalView(request, slot) for slot in slots]
        views.sort(key=lambda v: v.sort_key)
        return views

    return await _approval_page(requests, pending.request_filter(), views_of, limit, cursor)


def _newest_first(views: list[DecisionView]) -> None:
    """Sort by decision time (newest first), then request id, then position (latest first)."""
    views.sort(key=lambda v: v.index, reverse=True)
    views.sort(key=lambda v: v.request.request_id)
    views.sort(key=lambda v: v.decision.timestamp, reverse=True)


def _after(view: DecisionView, position: tuple[datetime, str, int]) -> bool:
    stamp, request_id, index = position
    moment = view.decision.timestamp
    if moment != stamp:
        return moment < stamp
    if view.request.request_id != request_id:
        return view.request.request_id > request_id
    return view.index < index


_LOG_WINDOW = 64
"""Decisions first read from the decision log's newest end (quadrupled while too few)."""
_LOG_MAX = 16384
"""Beyond this window the log path gives up and every matching request is read."""


async def list_decisions(
    requests: RequestStore,
    query: DecisionQuery | None = None,
    *,
    limit: int = 100,
    cursor: str | None = None,
    decisions: DecisionHistory | None = None,
) -> DecisionPage:
    """A page of decisions matching ``query``, one :class:`DecisionView` per decision.

    Newest first: by decision timestamp (descending), then request id, then the
    decision's position in its request (latest first). With ``decisions`` (a log that
    always holds every decision of ``requests``, as an atomic committer keeps it) the
    newest end of the log is read first and only the requests it names are loaded;
    otherwise, or when that window does not fill the page, every request matching the
    request-level filters is read — as it is when the log holds a row that cannot be read
    (logged as a warning), so one damaged row does not stop the listing.
    """
    query = query if query is not None else DecisionQuery()
    if not isinstance(query, DecisionQuery):
        raise TypeError(f"query must be a DecisionQuery, got {type(query).__name__}")
    check_limit(limit)
    after = decode_decision_cursor(cursor) if cursor is not None else None
    if decisions is not None:
        try:
            page = await _from_log(requests, decisions, query, limit, after)
        except StoredDataError as error:
            # The requests hold every decision too: one damaged log row costs speed only.
            _log.warning("decision log unreadable, reading the requests instead: %s", error)
            page = None
        if page is not None:
            return page
    request_query = query.request_filter()
    views: list[DecisionView] = []

    def take(request: MutationRequest) -> bool:
        views.extend(query.views(request))
        return False

    await _fill(requests, request_query, None, _SCAN, take)
    return _decision_page(views, limit, after)


def _decision_page(
    views: list[DecisionView], limit: int, after: tuple[datetime, str, int] | None
) -> DecisionPage:
    _newest_first(views)
    if after is not None:
        views = [view for view in views if _after(view, after)]
    items = views[:limit]
    more = len(views) > limit
    return DecisionPage(items, encode_decision_cursor(items[-1]) if more else None)


async def _from_log(
    requests: RequestStore,
    decisions: DecisionHistory,
    query: DecisionQuery,
    limit: int,
    after: tuple[datetime, str, int] | None,
) -> DecisionPage | None:
    """The page from the newest decisions of the log, or None when the window cannot tell.

    Per category the log returns the newest ``window`` decisions; every decision newer
    than the oldest one returned is among them, so the views strictly newer than the
    latest such boundary are complete. When fewer than a page lie beyond it, the window
    grows; when the log ran out (it may be bounded) or the window got too large, the
    caller reads the requests instead.
    """
    categories: list[DecisionCategory | None] = list(query.categories) or [None]
    window = max(_LOG_WINDOW, 2 * (limit + 1))
    base = query.request_filter()
    while window <= _LOG_MAX:
        records: list[DecisionRecord] = []
        cutoff: datetime | None = None
        for category in categories:
            newest = await decisions.recent(window, category=category)
            records.extend(newest)
            if len(newest) < window:
                return None  # the log ran out: only reading the requests is exact
            oldest = min(r.decision.timestamp for r in newest)
            cutoff = oldest if cutoff is None else max(cutoff, oldest)
        assert cutoff is not None
        ids = {r.request_id for r in records if r.decision.timestamp > cutoff}
        if base.request_ids:
            ids &= base.request_ids
        views: list[DecisionView] = []
        if ids:
            scoped = attrs.evolve(base, request_ids=frozenset(ids))
            found = await requests.list(scoped, limit=len(ids))
            for request in found.items:
                views.extend(v for v in query.views(request) if v.decision.timestamp > cutoff)
        page = _decision_page(views, limit, after)
        if page.next_cursor is not None:
            return page
        window *= 4
    return None
