"""Every backend answers every request, approval and decision query like the reference.

A fixed corpus of varied requests is stored once per backend; hypothesis then draws
queries over every filter dimension and compares each backend's pages (walked with small
limits, so stores must keep fetching past rows the residual filters drop) with the
in-memory reference predicate.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mutator_governance import (
    ApprovalQuery,
    DecisionQuery,
    InMemoryRequestStore,
    MutationRequest,
    RequestQuery,
    list_approvals,
    list_decisions,
)
from mutator_governance.stores import open_store
from mutator_governance.testing import sample_registry

from ..strategies import query_corpus, request_queries
from .test_postgres import drop_schema, with_schema
from .test_redis import _drop, _with_prefix

CORPUS = query_corpus()
BACKENDS = ["memory", "sqlite", "postgres", "redis"]


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal("asyncio") as opened:
        yield opened


@pytest.fixture(scope="module", params=BACKENDS)
def requests_store(
    request: pytest.FixtureRequest, portal: BlockingPortal, tmp_path_factory: Any
) -> Iterator[Any]:
    """The backend's request store holding :data:`CORPUS`."""
    backend = request.param
    if backend == "memory":
        memory = InMemoryRequestStore()
        for item in CORPUS:
            portal.call(memory.create, item)
        yield memory
        return
    name = f"t_{uuid.uuid4().hex}"
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('parity') / 'parity.db'}"
    elif backend == "postgres":
        base = request.getfixturevalue("postgres_url")
        url = with_schema(base, name)
    else:
        base = request.getfixturevalue("redis_url")
        url = _with_prefix(base, name)
    store = portal.call(lambda: open_store(url, registry=sample_registry()))
    try:
        for item in CORPUS:
            portal.call(store.requests.create, item)
        yield store.requests
    finally:
        portal.call(store.aclose)
        if backend == "postgres":
            portal.call(drop_schema, base, name)
        elif backend == "redis":
            portal.call(_drop, base, name)


def _ids(items: Any) -> list[str]:
    return [r.request_id for r in items]


def _reference(query: RequestQuery) -> list[MutationRequest]:
    return sorted(
        (r for r in CORPUS if query.matches(r)), key=lambda r: (r.created_at, r.request_id)
    )


async def _walk(store: Any, query: RequestQuery, limit: int) -> list[str]:
    found: list[str] = []
    cursor = None
    for _ in range(len(CORPUS) + 2):
        page = await store.list(query, limit=limit, cursor=cursor)
        assert len(page.items) <= limit
        found.extend(_ids(page.items))
        if page.next_cursor is None:
            return found
        assert page.items, "a page with a next cursor is never empty"
        cursor = page.next_cursor
    raise AssertionError("pagination did not end")


PARITY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PARITY
@given(query=request_queries(), limit=st.sampled_from([1, 3, 100]))
def test_request_pages_match_the_reference_predicate(
    requests_store: Any, portal: BlockingPortal, query: RequestQuery, limit: int
) -> None:
    """Walking every page of ``list`` yields exactly the matching requests, in order."""
    walked = portal.call(_walk, requests_store, query, limit)
    assert walked == _ids(_reference(query))


@PARITY
@given(query=request_queries(max_filters=2), approver=st.sampled_from(["carol", "dave"]))
def test_approval_views_match_the_reference_predicate(
    requests_store: Any, portal: BlockingPortal, query: RequestQuery, approver: str
) -> None:
    """``list_approvals`` pages agree with ``ApprovalQuery.matches`` on every backend."""
    approvals = ApprovalQuery(request=query, approver_ids={approver})

    async def walk() -> list[tuple[str, str]]:
        found, cursor = [], None
        while True:
            page = await list_approvals(requests_store, approvals, limit=2, cursor=cursor)
            found.extend((v.request.request_id, v.approval.approval_id) for v in page.items)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    expected = [
        (r.request_id, a.approval_id)
        for r in _reference(query)
        for a in sorted(r.approval_requirements, key=lambda a: (a.step, a.approval_id))
        if approvals.matches(r, a)
    ]
    assert portal.call(walk) == expected


@PARITY
@given(query=request_queries(max_filters=2))
def test_decision_views_match_the_reference_predicate(
    requests_store: Any, portal: BlockingPortal, query: RequestQuery
) -> None:
    """``list_decisions`` returns every matching decision, newest first, on every backend."""
    decisions = DecisionQuery.recent_execution_outcomes(request=query)
    page = portal.call(lambda: list_decisions(requests_store, decisions, limit=1000))
    expected = sorted(
        (
            (d.timestamp, r.request_id, i)
            for r in CORPUS
            for i, d in enumerate(r.decisions)
            if decisions.matches(r, d)
        ),
        key=lambda k: (-k[0].timestamp(), k[1], -k[2]),
    )
    got = [(v.decision.timestamp, v.request.request_id, v.index) for v in page.items]
    assert got == expected


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda store: store.list(limit=1.5), "limit must be an int >= 1, got 1.5"),
        (lambda store: store.list(limit=None), "limit must be an int >= 1, got None"),
        (lambda store: store.list(limit="10"), "limit must be an int >= 1, got '10'"),
        (lambda store: store.list([]), "query must be a RequestQuery or None, got list"),
        (lambda store: store.list("pending"), "query must be a RequestQuery or None, got str"),
        (lambda store: store.pending("schedule"), "reason must be a PendingReason or None"),
    ],
    ids=["limit 1.5", "limit None", "limit text", "query []", "query text", "pending text"],
)
def test_every_backend_refuses_a_malformed_listing_alike(
    requests_store: Any, portal: BlockingPortal, call: Any, message: str
) -> None:
    """The same TypeError everywhere, before anything is read: not an empty answer
    (in memory), an AttributeError (SQL stores), a comparison's TypeError, nor a
    StoredDataError blaming the database (SQLite, ``limit=1.5``)."""
    with pytest.raises(TypeError, match=re.escape(message)):
        portal.call(call, requests_store)


@pytest.mark.parametrize("limit", [2**31, 2**63, 10**20])
def test_every_backend_refuses_a_limit_beyond_its_integers_alike(
    requests_store: Any, portal: BlockingPortal, limit: int
) -> None:
    """A ValueError naming the bound everywhere: SQLite raised OverflowError and
    PostgreSQL a StoreUnavailableError ("bigint out of range") on 20 digits."""
    with pytest.raises(ValueError, match="limit must be at most 2,147,483,647"):
        portal.call(lambda: requests_store.list(limit=limit))
