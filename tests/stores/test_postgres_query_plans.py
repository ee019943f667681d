"""PostgreSQL listings stay index-backed behind a large terminal backlog, and schema
version 9 (the pending-reason index) upgrades an existing database."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from mutator_governance import PendingReason, RequestQuery, RequestStatus
from mutator_governance.stores._postgres import PostgresStore
from mutator_governance.stores._postgres_schema import SCHEMA_VERSION
from mutator_governance.testing import sample_registry, sample_request

from . import listing_reference as listing
from .test_postgres import execute_sql, insert_request_row, migrated_to
from .test_postgres import schema as schema  # the fixture

pytestmark = pytest.mark.postgres

BASE = datetime(2026, 1, 1, tzinfo=UTC)
BACKLOG = 30_000
OPEN = 1_500


@pytest.fixture
def anyio_backend() -> str:
    """psycopg's async driver runs on asyncio only."""
    return "asyncio"


@pytest.fixture
async def backlog(postgres_url: str, schema: str) -> AsyncIterator[PostgresStore]:
    """A store holding an old terminal backlog and the newest requests still open.

    ``BACKLOG`` EXECUTED requests created over the year before ``BASE``, then ``OPEN``
    PENDING (for approval) and ``OPEN`` APPROVED ones created after it: the shape of a
    service that has run for a while, where the open rows are always the newest.
    """
    registry = sample_registry()
    store = await PostgresStore.open(postgres_url, registry=registry, schema=schema)
    s = f'"{schema}"'
    try:
        rows = (
            ("done", RequestStatus.EXECUTED, None, BACKLOG, BASE - timedelta(days=365)),
            ("wait", RequestStatus.PENDING, PendingReason.APPROVAL, OPEN, BASE),
            ("ready", RequestStatus.APPROVED, None, OPEN, BASE),
        )
        for prefix, status, reason, count, start in rows:
            template = sample_request(
                f"{prefix}-template", status=status, pending_reason=reason, created_at=start
            )
            document = registry.dumps(registry.unstructure_request(template))
            await execute_sql(
                postgres_url,
                f"INSERT INTO {s}.requests (request_id, state_id, status, pending_reason, "
                "actor_id, created_at, updated_at, revision, document, mutation_type) "
                "SELECT %s || '-' || lpad(i::text, 6, '0'), 'state-' || (i %% 500), %s, %s, "
                "'user-' || (i %% 100), %s + i * interval '1 second', "
                "%s + i * interval '1 second', 0, "
                "replace(%s, %s, '\"' || %s || '-' || lpad(i::text, 6, '0') || '\"'), %s "
                "FROM generate_series(1, %s) AS i",
                (
                    prefix,
                    status.value,
                    None if reason is None else reason.value,
                    start,
                    start,
                    document,
                    json.dumps(template.request_id),
                    prefix,
                    template.mutation_type,
                    count,
                ),
            )
        await execute_sql(postgres_url, f"ANALYZE {s}.requests")
        yield store
    finally:
        await store.aclose()


@contextlib.contextmanager
def captured() -> Iterator[list[tuple[str, Any]]]:
    """The statements psycopg's async cursors send meanwhile."""
    statements: list[tuple[str, Any]] = []
    original = psycopg.AsyncCursor.execute

    async def execute(cursor: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        statements.append((str(query), params))
        return await original(cursor, query, params, **kwargs)

    psycopg.AsyncCursor.execute = execute  # type: ignore[method-assign,assignment]
    try:
        yield statements
    finally:
        psycopg.AsyncCursor.execute = original  # type: ignore[method-assign]


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows the scans of ``plan`` read from tables and indexes (kept or filtered out)."""
    read = 0
    if "Scan" in plan["Node Type"] and plan["Node Type"] != "Subquery Scan":
        loops = plan.get("Actual Loops", 1)
        read += (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)) * loops
    for child in plan.get("Plans", ()):
        read += _rows_read(child)
    return read


async def _listing_reads(
    url: str, store: PostgresStore, query: RequestQuery
) -> tuple[list[str], int]:
    """The first page of ``query`` (ids) and how many rows its statements scanned."""
    with captured() as statements:
        page = await store.requests.list(query, limit=20)
    read = 0
    for sql, params in statements:
        explained = await execute_sql(url, "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        read += _rows_read(explained[0][0][0]["Plan"])
    return [request.request_id for request in page.items], read


@pytest.mark.anyio
async def test_listing_several_open_statuses_does_not_walk_the_terminal_backlog(
    postgres_url: str, backlog: PostgresStore
) -> None:
    query = RequestQuery(statuses={RequestStatus.PENDING, RequestStatus.APPROVED})
    ids, read = await _listing_reads(postgres_url, backlog, query)
    # Both open kinds were created second by second from BASE: interleaved by created_at.
    assert ids == [f"{kind}-{n:06d}" for n in range(1, 11) for kind in ("ready", "wait")]
    assert read < 1_000, read  # a walk from the oldest request reads the 30,000 first


@pytest.mark.anyio
async def test_listing_by_pending_reason_alone_does_not_walk_the_terminal_backlog(
    postgres_url: str, backlog: PostgresStore
) -> None:
    query = RequestQuery(pending_reasons={PendingReason.APPROVAL})
    ids, read = await _listing_reads(postgres_url, backlog, query)
    assert ids == [f"wait-{n:06d}" for n in range(1, 21)]
    assert read < 1_000, read


@pytest.mark.anyio
async def test_inbox_listing_walks_the_reason_index_in_order(
    postgres_url: str, backlog: PostgresStore
) -> None:
    query = RequestQuery(statuses={RequestStatus.PENDING}, pending_reasons={PendingReason.APPROVAL})
    ids, read = await _listing_reads(postgres_url, backlog, query)
    assert ids == [f"wait-{n:06d}" for n in range(1, 21)]
    assert read < OPEN / 2, read  # not every pending row, sorted, for each page


@pytest.mark.anyio
async def test_listing_by_mutation_type_alone_walks_the_type_index(
    postgres_url: str, schema: str, backlog: PostgresStore
) -> None:
    """A type held by 1 % of the rows, all of them new, is read from its index entries:
    the ``= ANY(...) OR IS NULL`` filter made the planner walk every request in order from
    the oldest, as it expects matches spread evenly. (Only the column is changed, so the
    documents do not match and the listing reads every entry of the type: still bounded.)"""
    await execute_sql(
        postgres_url,
        f'UPDATE "{schema}".requests SET mutation_type = %s WHERE request_id IN '
        f'(SELECT request_id FROM "{schema}".requests WHERE status = %s '
        "ORDER BY created_at DESC LIMIT 330)",
        ("rare.type", RequestStatus.APPROVED.value),
    )
    await execute_sql(postgres_url, f'ANALYZE "{schema}".requests')
    ids, read = await _listing_reads(
        postgres_url, backlog, RequestQuery(mutation_types={"rare.type"})
    )
    assert ids == []
    assert read < 2_000, read  # a walk from the oldest request reads the 30,000 first


@pytest.mark.anyio
async def test_listing_several_statuses_and_reasons_pages_like_the_reference(
    postgres_url: str, schema: str
) -> None:
    store = await PostgresStore.open(postgres_url, registry=sample_registry(), schema=schema)
    requests = []
    for n in range(36):
        status, reason = listing.KINDS[n % len(listing.KINDS)]
        at = BASE + timedelta(seconds=n // 4)  # ties on created_at: ordered by id
        requests.append(
            sample_request(
                f"r{(n * 7) % 36:02d}", status=status, pending_reason=reason, created_at=at
            )
        )
    try:
        await listing.assert_pages_like_the_reference(store.requests, requests, listing.SEVERAL)
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_version_8_schema_is_upgraded_to_the_pending_reason_index(
    postgres_url: str, schema: str
) -> None:
    registry = sample_registry()
    s = await migrated_to(postgres_url, schema, 8)
    old = listing.before_the_reason_index(BASE)
    for request in old:
        await insert_request_row(postgres_url, s, registry, request)
    store = await PostgresStore.open(postgres_url, registry=registry, schema=schema)
    try:
        indexes = await execute_sql(
            postgres_url,
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
            "AND indexname IN ('requests_pending', 'requests_reason')",
            (schema,),
        )
        assert [name for name, _ in indexes] == ["requests_reason"]
        assert "WHERE (pending_reason IS NOT NULL)" in indexes[0][1]
        statistics = await execute_sql(
            postgres_url,
            "SELECT stxname, stxkind::text FROM pg_statistic_ext AS x "
            "JOIN pg_namespace AS n ON n.oid = x.stxnamespace WHERE n.nspname = %s",
            (schema,),
        )
        assert statistics == [("requests_status_reason", "{f}")]
        await listing.assert_listed_by_reason(store.requests, old)
    finally:
        await store.aclose()
    versions = await execute_sql(postgres_url, f"SELECT version FROM {s}.schema_version")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
