"""SQLite listings stay index-backed behind a large terminal backlog, page like the
reference, and schema version 8 (the pending-reason index) upgrades an existing file."""

from __future__ import annotations

import functools
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mutator.testing import SAMPLE_BASE_TIME, sample_audit_entry
from mutator_governance import PendingReason, RequestQuery, RequestStatus
from mutator_governance.stores import _sqlite, _sqlite_schema
from mutator_governance.stores._sqlite import (
    SCHEMA_VERSION,
    SQLiteStore,
    _Codec,
    _micros,
    _request_row,
)
from mutator_governance.testing import sample_registry, sample_request

from . import listing_reference as listing

pytestmark = pytest.mark.anyio

BASE = datetime(2026, 1, 1, tzinfo=UTC)
BACKLOG = 30_000
OPEN = 1_500
LATE = 30
"""Requests created the day before ``BASE`` that ended (were last updated) after it."""
STEPS = 100
"""Virtual machine instructions between two calls of the step counter."""
MAX_STEPS = 50_000
"""Instructions a first page may take (reading the open rows: about 16,000 at most)."""

_COLUMNS = (
    "request_id, state_id, status, pending_reason, actor_id, created_at, updated_at, "
    "revision, document, mutation_type, compensates, due_at"
)


def _fill(path: Path) -> None:
    """A store file with an old terminal backlog and the newest requests still open.

    ``BACKLOG`` EXECUTED requests created a second apart a year before ``BASE``, ``LATE``
    created the day before it and executed an hour after it, then ``OPEN`` PENDING (for
    approval) and ``OPEN`` APPROVED ones created after it; ``BACKLOG`` old audit entries
    before a few recent ones. Rows are the store's own, copied in SQL with fresh ids.
    """
    codec = _Codec(sample_registry())
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("PRAGMA journal_mode = WAL")
        _sqlite_schema.migrate(raw, str(path))
        raw.execute("BEGIN")
        ended = BASE + timedelta(hours=1)
        kinds = (
            ("done", RequestStatus.EXECUTED, None, BACKLOG, BASE - timedelta(days=365), None),
            ("late", RequestStatus.EXECUTED, None, LATE, BASE - timedelta(days=1), ended),
            ("wait", RequestStatus.PENDING, PendingReason.APPROVAL, OPEN, BASE, None),
            ("ready", RequestStatus.APPROVED, None, OPEN, BASE, None),
        )
        for prefix, status, reason, count, start, updated in kinds:
            template = sample_request(
                f"{prefix}-template",
                status=status,
                pending_reason=reason,
                created_at=start,
                updated_at=updated,
            )
            row = _request_row(codec, template)
            raw.execute(
                f"INSERT INTO requests ({_COLUMNS}) "
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "SELECT ?5 || '-' || printf('%06d', i), 'state-' || (i % 500), ?2, ?3, "
                "'user-' || (i % 100), ?4 + i * 1000000, coalesce(?10, ?4 + i * 1000000), 0, "
                "replace(?6, '\"' || ?7 || '\"', '\"' || ?5 || '-' || printf('%06d', i) || '\"'), "
                "?8, NULL, ?9 FROM n",
                (
                    count,
                    row[2],
                    row[3],
                    _micros(start),
                    prefix,
                    row[8],
                    template.request_id,
                    row[9],
                    row[11],
                    None if updated is None else _micros(updated),
                ),
            )
        old = codec.record(sample_audit_entry("old"))
        raw.execute(
            "INSERT INTO audit (execution_id, state_id, executed_at, document) "
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "SELECT 'old', 'sample:1', ? + i, ? FROM n",
            (BACKLOG, _micros(SAMPLE_BASE_TIME - timedelta(days=365)), old),
        )
        recent = [sample_audit_entry(f"recent-{n}", minutes=n) for n in range(5)]
        raw.executemany(
            "INSERT INTO audit (execution_id, state_id, executed_at, document) VALUES (?, ?, ?, ?)",
            [(e.execution_id, e.state_id, _micros(e.executed_at), codec.record(e)) for e in recent],
        )
        raw.execute("COMMIT")
        raw.execute("ANALYZE")  # as the survey ran: the planner knows the backlog's size
    finally:
        raw.close()


@pytest.fixture(scope="module")
def backlog_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file :func:`_fill` fills, shared by the module's tests (which only read it)."""
    path = tmp_path_factory.mktemp("plans") / "backlog.db"
    _fill(path)
    return path


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """The SELECT statements connections opened meanwhile run, with their parameters."""
    seen: list[tuple[str, Any]] = []

    class Recording(sqlite3.Connection):
        def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
            if sql.lstrip().upper().startswith(("SELECT", "WITH")):
                seen.append((sql, tuple(parameters)))
            return super().execute(sql, parameters)

    monkeypatch.setattr(sqlite3, "connect", functools.partial(sqlite3.connect, factory=Recording))
    return seen


def _plans(path: Path, captured: list[tuple[str, Any]]) -> tuple[list[str], int]:
    """The query plans of ``captured`` and the instructions SQLite ran for them.

    A walk of the backlog runs a few instructions per row it skips: some 150,000 for
    30,000 rows; an index-backed page well under ``MAX_STEPS``.
    """
    raw = sqlite3.Connection(str(path))
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += STEPS
        return 0

    try:
        plans: list[str] = []
        for sql, parameters in captured:
            plans += [row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + sql, parameters)]
        raw.set_progress_handler(count, STEPS)
        for sql, parameters in captured:
            raw.execute(sql, parameters).fetchall()
    finally:
        raw.close()
    return plans, steps


def _scans(plans: list[str], table: str) -> list[str]:
    return [line for line in plans if line.startswith(f"SCAN {table}")]


async def _first_page(
    path: Path, captured: list[tuple[str, Any]], query: RequestQuery
) -> tuple[list[str], list[str], int]:
    """The first page of ``query`` (ids), the plans of its statements and their steps."""
    store = await SQLiteStore.open(f"sqlite:///{path}", registry=sample_registry())
    try:
        captured.clear()
        page = await store.requests.list(query, limit=20)
    finally:
        await store.aclose()
    plans, steps = _plans(path, captured)
    return [request.request_id for request in page.items], plans, steps


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(
            RequestQuery(statuses={RequestStatus.PENDING, RequestStatus.APPROVED}),
            # Both open kinds were created second by second from BASE: interleaved by
            # created_at.
            [f"{kind}-{n:06d}" for n in range(1, 11) for kind in ("ready", "wait")],
            id="several open statuses",
        ),
        pytest.param(
            RequestQuery(pending_reasons={PendingReason.APPROVAL}),
            [f"wait-{n:06d}" for n in range(1, 21)],
            id="a pending reason alone",
        ),
        pytest.param(  # one index walked per reason
            RequestQuery(pending_reasons={PendingReason.APPROVAL, PendingReason.REVALIDATION}),
            [f"wait-{n:06d}" for n in range(1, 21)],
            id="several reasons",
        ),
        pytest.param(
            # Open requests were last updated when created (from BASE on, a second apart,
            # for 25 minutes); the late ones an hour after BASE.
            RequestQuery(updated_from=BASE + timedelta(minutes=30)),
            [f"late-{n:06d}" for n in range(1, 21)],
            id="updated in a recent window",
        ),
        pytest.param(  # searches the update index
            RequestQuery(
                statuses={RequestStatus.EXECUTED},
                updated_from=BASE,
                updated_to=BASE + timedelta(hours=2),
            ),
            [f"late-{n:06d}" for n in range(1, 21)],
            id="executed updated in a recent window",
        ),
    ],
)
async def test_a_first_page_does_not_walk_the_terminal_backlog(
    backlog_file: Path,
    statements: list[tuple[str, Any]],
    query: RequestQuery,
    expected: list[str],
) -> None:
    ids, plans, steps = await _first_page(backlog_file, statements, query)
    assert ids == expected
    assert _scans(plans, "requests") == []
    assert steps < MAX_STEPS, steps


async def test_audit_entries_since_a_moment_search_the_time_index(
    backlog_file: Path, statements: list[tuple[str, Any]]
) -> None:
    store = await SQLiteStore.open(f"sqlite:///{backlog_file}", registry=sample_registry())
    try:
        statements.clear()
        entries = await store.audit.entries(since=SAMPLE_BASE_TIME + timedelta(minutes=1))
    finally:
        await store.aclose()
    assert [entry.execution_id for entry in entries] == [f"recent-{n}" for n in range(1, 5)]
    plans, steps = _plans(backlog_file, statements)
    assert _scans(plans, "audit") == []
    assert steps < MAX_STEPS, steps


@pytest.mark.parametrize("narrow", [None, -1], ids=["searched", "walked"])
async def test_listing_statuses_reasons_and_update_windows_pages_like_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, narrow: int | None
) -> None:
    """Both ways of reading an update-time window (a narrow one searched, a broad one
    walked) and the merged branches of several statuses or reasons page like the
    in-memory reference, ties on ``created_at`` included."""
    if narrow is not None:  # every window counts as broad
        monkeypatch.setattr(_sqlite, "_NARROW_UPDATES", narrow)
    store = await SQLiteStore.open(
        f"sqlite:///{tmp_path / 'paging.db'}", registry=sample_registry()
    )
    kinds = [*listing.KINDS, (RequestStatus.EXECUTING, None)]
    requests = []
    for n in range(42):
        status, reason = kinds[n % len(kinds)]
        at = BASE + timedelta(seconds=n // 4)  # ties on created_at: ordered by id
        requests.append(
            sample_request(
                f"r{(n * 5) % 42:02d}",
                status=status,
                pending_reason=reason,
                created_at=at,
                updated_at=at + timedelta(seconds=(n * 11) % 17),
            )
        )
    window = {
        "updated_from": BASE + timedelta(seconds=6),
        "updated_to": BASE + timedelta(seconds=15),
    }
    queries = [
        *listing.SEVERAL,
        RequestQuery(updated_from=BASE + timedelta(seconds=9)),
        RequestQuery(updated_to=BASE + timedelta(seconds=8)),
        RequestQuery(**window),
        RequestQuery(statuses={RequestStatus.EXECUTED, RequestStatus.PENDING}, **window),
        RequestQuery(statuses={RequestStatus.EXECUTING}, **window),
        RequestQuery(statuses={RequestStatus.REJECTED}, actor_ids={"alice"}, **window),
    ]
    try:
        await listing.assert_pages_like_the_reference(store.requests, requests, queries)
    finally:
        await store.aclose()


async def test_a_version_7_file_is_upgraded_to_the_pending_reason_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'v7.db'}"
    old = listing.before_the_reason_index(BASE)
    with monkeypatch.context() as patched:
        patched.setattr(_sqlite_schema, "SCHEMA_VERSION", 7)
        store = await SQLiteStore.open(url, registry=sample_registry())
        try:
            assert store.schema_version == 7
            for request in old:
                await store.requests.create(request)
        finally:
            await store.aclose()

    store = await SQLiteStore.open(url, registry=sample_registry())
    try:
        assert store.schema_version == SCHEMA_VERSION == 8
        await listing.assert_listed_by_reason(store.requests, old)
    finally:
        await store.aclose()
    raw = sqlite3.connect(tmp_path / "v7.db")
    try:
        indexes = dict(raw.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
    finally:
        raw.close()
    assert "requests_by_pending" not in indexes
    assert indexes["requests_by_reason"].endswith("WHERE pending_reason IS NOT NULL")
