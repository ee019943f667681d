"""Listings of several statuses and pending reasons page like the in-memory reference,
and an older schema's requests are listed by reason once upgraded: the kinds of request,
queries and checks the SQL stores' query-plan tests share."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from mutator_governance import (
    InMemoryRequestStore,
    PendingReason,
    RequestQuery,
    RequestStatus,
    RequestStore,
)
from mutator_governance._request import MutationRequest
from mutator_governance.testing import sample_request

KINDS: list[tuple[RequestStatus, PendingReason | None]] = [
    (RequestStatus.PENDING, PendingReason.APPROVAL),
    (RequestStatus.APPROVED, None),
    (RequestStatus.EXECUTED, None),
    (RequestStatus.PENDING, PendingReason.REVALIDATION),
    (RequestStatus.PENDING, PendingReason.QUOTA),
    (RequestStatus.REJECTED, None),
]
"""Statuses and pending reasons, taken in turn."""

SEVERAL: list[RequestQuery] = [
    RequestQuery(statuses={RequestStatus.PENDING, RequestStatus.APPROVED}),
    RequestQuery(
        statuses={RequestStatus.PENDING, RequestStatus.EXECUTED},
        pending_reasons={PendingReason.APPROVAL, PendingReason.QUOTA},
    ),
    RequestQuery(pending_reasons={PendingReason.REVALIDATION, PendingReason.QUOTA}),
    RequestQuery(statuses={RequestStatus.REJECTED, RequestStatus.FAILED}),
]
"""Queries of several statuses or reasons (merged branches)."""


async def assert_pages_like_the_reference(
    store: RequestStore, requests: Sequence[MutationRequest], queries: Sequence[RequestQuery]
) -> None:
    """Create ``requests`` in ``store`` and the in-memory reference; every query, paged four
    at a time, lists the same non-empty ids in both."""
    reference = InMemoryRequestStore()
    for request in requests:
        await store.create(request)
        await reference.create(request)
    for query in queries:
        pages: list[list[str]] = []
        for source in (store, reference):
            seen: list[str] = []
            cursor = None
            while True:
                page = await source.list(query, limit=4, cursor=cursor)
                seen.extend(request.request_id for request in page.items)
                cursor = page.next_cursor
                if cursor is None:
                    break
            pages.append(seen)
        assert pages[0], query
        assert pages[0] == pages[1], query


def before_the_reason_index(base: datetime) -> list[MutationRequest]:
    """Requests an older schema holds: pending for approval, executed, pending for quota."""
    return [
        sample_request(
            "a",
            status=RequestStatus.PENDING,
            pending_reason=PendingReason.APPROVAL,
            created_at=base,
        ),
        sample_request("b", status=RequestStatus.EXECUTED, created_at=base),
        sample_request(
            "c",
            status=RequestStatus.PENDING,
            pending_reason=PendingReason.QUOTA,
            created_at=base + timedelta(seconds=1),
        ),
    ]


async def assert_listed_by_reason(store: RequestStore, old: Sequence[MutationRequest]) -> None:
    """``old`` (from :func:`before_the_reason_index`), upgraded, is listed by reason."""
    page = await store.list(
        RequestQuery(pending_reasons={PendingReason.APPROVAL, PendingReason.QUOTA})
    )
    assert page.items == (old[0], old[2])
    assert await store.pending(PendingReason.QUOTA) == [old[2]]
