"""Schema upgrades on open: version 2 with rows (unreadable ones too), 4 to 5 and 6 to 7.

Version 5 to 6 (the expiry index) is in ``test_sqlite_expiry.py``.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mutator import MutationContext, MutationPolicy, PolicyDecision, PolicyRequirement
from mutator_governance import (
    TERMINAL_STATUSES,
    CompensationPlan,
    ExecutionDetails,
    ExecutionKind,
    Governance,
    MutationRequest,
    RequestQuery,
    RequestStatus,
)
from mutator_governance.stores import _sqlite, _sqlite_schema
from mutator_governance.stores._sqlite import (
    SCHEMA_VERSION,
    SQLiteStore,
    _Codec,
    _execute,
    _micros,
)
from mutator_governance.stores._sqlite_schema import MIGRATIONS, TERMINAL_ROWS
from mutator_governance.testing import sample_registry, sample_request

from .sqlite_worker import Counter, Increment, registry

pytestmark = pytest.mark.anyio

BASE = datetime(2026, 1, 1, tzinfo=UTC)
S = RequestStatus


def _v2_row(document: str, request: MutationRequest) -> tuple[Any, ...]:
    return (
        request.request_id,
        request.state_id,
        request.status.value,
        request.pending_reason.value if request.pending_reason else None,
        request.context.actor_id,
        _micros(request.created_at),
        _micros(request.updated_at),
        request.revision,
        document,
    )


def _write_v2(path: Path, rows: list[tuple[Any, ...]]) -> None:
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute(
            "CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, "
            "applied_at TEXT NOT NULL)"
        )
        for version in (1, 2):
            for statement in MIGRATIONS[version]:
                raw.execute(statement)
            raw.execute("INSERT INTO schema_version VALUES (?, '2026-01-01')", (version,))
        raw.executemany(
            "INSERT INTO requests (request_id, state_id, status, pending_reason, actor_id, "
            "created_at, updated_at, revision, document) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    finally:
        raw.close()


async def test_a_version_2_database_is_upgraded_on_open(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    codec = _Codec(sample_registry())
    old = BASE - timedelta(days=10)

    def request(request_id: str, status: RequestStatus, i: int, **changes: Any) -> MutationRequest:
        return sample_request(
            request_id,
            status=status,
            created_at=BASE + timedelta(seconds=i),
            updated_at=old,
            **changes,
        )

    original = request("original", S.EXECUTED, 0)
    compensation = request(
        "compensation",
        S.APPROVED,
        1,
        execution=ExecutionDetails(ExecutionKind.COMPENSATION, CompensationPlan("original")),
    )
    ready = request("ready", S.APPROVED, 2)
    done = request("done", S.CANCELED, 3)
    healthy = [original, compensation, ready, done]
    rows = [_v2_row(codec.request(r), r) for r in healthy]
    broken = [
        ("not-json", "{not json"),
        ("a-list", "[]"),
        (
            "numeric-type",
            codec.request(request("numeric-type", S.APPROVED, 6)).replace(
                '"mutation_type":"testing.sample"', '"mutation_type":7'
            ),
        ),
    ]
    rows += [
        _v2_row(document, request(request_id, S.APPROVED, 4 + n))
        for n, (request_id, document) in enumerate(broken)
    ]
    _write_v2(path, rows)

    async with await SQLiteStore.open(path, registry=sample_registry()) as store:
        assert store.schema_version == SCHEMA_VERSION == 8
        columns = await store._db.run_read(
            lambda c: c.execute(
                "SELECT request_id, mutation_type, compensates, reserved_by, reserved_until "
                "FROM requests ORDER BY created_at"
            ).fetchall()
        )
        assert columns == [
            ("original", "testing.sample", None, None, None),
            ("compensation", "testing.sample", "original", None, None),
            ("ready", "testing.sample", None, None, None),
            ("done", "testing.sample", None, None, None),
            ("not-json", None, None, None, None),
            ("a-list", None, None, None, None),
            ("numeric-type", None, None, None, None),
        ]
        typed = await store.requests.list(RequestQuery(mutation_types={"testing.sample"}))
        assert [r.request_id for r in typed.items] == [r.request_id for r in healthy]
        assert list(typed.items) == healthy

        batch = await store.requests.reserve(owner="w", limit=10, now=BASE, until=BASE)
        assert [r.request_id for r in batch] == ["compensation", "ready"]
        assert {e.request_id for e in await store.requests.quarantined()} == {
            "not-json",
            "a-list",
            "numeric-type",
        }

        # The original stays while its compensation lives; the canceled request goes.
        purged = await store.requests.purge(before=BASE, statuses=TERMINAL_STATUSES, limit=10)
        assert purged.request_ids == ("done",)

    raw = sqlite3.connect(path)
    try:
        versions = [row[0] for row in raw.execute("SELECT version FROM schema_version")]
        indexes = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
        (reason_index,) = raw.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'requests_by_reason'"
        ).fetchone()
    finally:
        raw.close()
    assert versions == [1, 2, 3, 4, 5, 6, 7, 8]
    # Version 8: only rows with a pending reason are indexed by it (version 4's index of
    # PENDING rows is gone).
    assert reason_index.endswith("WHERE pending_reason IS NOT NULL")
    assert "requests_by_pending" not in indexes
    assert {"requests_ready", "requests_by_mutation_type", "quarantine"} <= indexes


ALICE = MutationContext.user("alice", reason="more capacity")
BOB = MutationContext.user("bob", roles=["approver"])
LOGS = ("decisions", "audit", "history")


class NeedsApprover(MutationPolicy[Counter]):
    def evaluate(self, mutation: Any, state: Counter, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(PolicyRequirement.approval(role="approver"))


async def _run_one(gov: Governance) -> str:
    request = await gov.submit(Increment(1), state_id="counter:a", context=ALICE)
    await gov.approve(request.request_id, context=BOB)
    assert (await gov.execute(request.request_id)).executed
    return request.request_id


async def _rows(gov: Governance, table: str, order: str = "id") -> list[tuple[Any, ...]]:
    db = gov.requests._db  # type: ignore[attr-defined]
    rows: list[tuple[Any, ...]] = await db.run_read(
        lambda c: c.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
    )
    return rows


async def add_due_at(db: Any) -> None:
    """Give an older schema the column this library's request writes fill (version 6's).

    ``db`` is a store's database (``store._db``).
    """
    await db.run_write(lambda c: _execute(c, "ALTER TABLE requests ADD COLUMN due_at INTEGER"))


def drop_due_at(path: Path) -> None:
    """Take the column :func:`add_due_at` added out again: the database is as old as it says."""
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("ALTER TABLE requests DROP COLUMN due_at")
    finally:
        raw.close()


async def test_a_version_4_database_keeps_its_rows_and_ids_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 5: decisions, audit and history lose AUTOINCREMENT (their rows and ids stay,
    new rows number on from the highest), ``requests_by_updated`` holds terminal rows and
    ``state_versions`` is one b-tree (WITHOUT ROWID) with the same rows."""
    url = f"sqlite:///{tmp_path / 'v4.db'}"
    with monkeypatch.context() as patched:
        patched.setattr(_sqlite_schema, "SCHEMA_VERSION", 4)
        async with Governance.open(url, registry=registry()) as gov:
            assert gov.requests._db.schema_version == 4  # type: ignore[attr-defined]
            await add_due_at(gov.requests._db)  # type: ignore[attr-defined]
            gov.engine.register_policy(NeedsApprover())
            await gov.states.put("counter:a", Counter(0))
            first = await _run_one(gov)
            waiting = await gov.submit(Increment(2), state_id="counter:a", context=ALICE)
            before = {table: await _rows(gov, table) for table in LOGS}
            produced = await _rows(gov, "state_versions", "state_id, request_id")
            logged = list(await gov.decisions.for_request(first))
    drop_due_at(tmp_path / "v4.db")

    async with Governance.open(url, registry=registry()) as gov:
        assert gov.requests._db.schema_version == SCHEMA_VERSION == 8  # type: ignore[attr-defined]
        gov.engine.register_policy(NeedsApprover())
        for table, rows in before.items():
            assert await _rows(gov, table) == rows, table
        assert list(await gov.decisions.for_request(first)) == logged
        assert await _rows(gov, "state_versions", "state_id, request_id") == produced
        assert await gov.states.version_by_request("counter:a", first) == "2"
        second = await _run_one(gov)
        for table, rows in before.items():
            after = await _rows(gov, table)
            assert after[len(rows)][0] == rows[-1][0] + 1, table
        assert (await gov.decisions.recent(limit=1))[0].request_id == second
        assert len(await gov.history("counter:a")) == 2
        assert len(await gov.engine.audit.entries("counter:a")) == 2
        # Only terminal rows are in the update-time index; a purge walks it and finds both.
        purged = await gov.requests.purge(
            before=datetime.now(UTC) + timedelta(days=1), statuses=TERMINAL_STATUSES, limit=10
        )
        assert sorted(purged.request_ids) == sorted([first, second])
        assert await gov.requests.get(waiting.request_id) is not None

    raw = sqlite3.connect(tmp_path / "v4.db")
    try:
        tables = dict(raw.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
        (updated,) = raw.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'requests_by_updated'"
        ).fetchone()
    finally:
        raw.close()
    for table in LOGS:
        assert "AUTOINCREMENT" not in tables[table].upper(), table
    assert updated.endswith(f"WHERE {TERMINAL_ROWS}")
    assert tables["state_versions"].rstrip().endswith("WITHOUT ROWID")


def test_terminal_rows_names_every_terminal_status() -> None:
    terminal = " OR ".join(f"status = '{s.value}'" for s in RequestStatus if s.is_terminal)
    assert f"({terminal})" == TERMINAL_ROWS


def _index_sql(path: Path, name: str) -> str:
    raw = sqlite3.connect(path)
    try:
        (sql,) = raw.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    finally:
        raw.close()
    text: str = sql
    return text


async def test_a_version_6_database_indexes_terminal_rows_without_a_list_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 7: ``requests_by_updated`` states its predicate as comparisons (no ``IN``
    list for SQLite to build a table for on every request write); it holds the same rows,
    so a purge still finds the terminal requests written before the upgrade."""
    url = f"sqlite:///{tmp_path / 'v6.db'}"
    with monkeypatch.context() as patched:
        patched.setattr(_sqlite_schema, "SCHEMA_VERSION", 6)
        async with Governance.open(url, registry=registry()) as gov:
            gov.engine.register_policy(NeedsApprover())
            await gov.states.put("counter:a", Counter(0))
            first = await _run_one(gov)
            waiting = await gov.submit(Increment(2), state_id="counter:a", context=ALICE)
    assert " IN (" in _index_sql(tmp_path / "v6.db", "requests_by_updated")

    async with Governance.open(url, registry=registry()) as gov:
        assert gov.requests._db.schema_version == SCHEMA_VERSION == 8  # type: ignore[attr-defined]
        gov.engine.register_policy(NeedsApprover())
        second = await _run_one(gov)
        purged = await gov.requests.purge(
            before=datetime.now(UTC) + timedelta(days=1), statuses=TERMINAL_STATUSES, limit=10
        )
        assert sorted(purged.request_ids) == sorted([first, second])
        assert await gov.requests.get(waiting.request_id) is not None
    assert _index_sql(tmp_path / "v6.db", "requests_by_updated").endswith(f"WHERE {TERMINAL_ROWS}")


@pytest.mark.parametrize("statement", ["_CREATE_REQUEST", "_UPDATE_MUTABLE", "_UPDATE_REQUEST"])
def test_a_request_write_builds_no_temporary_table(statement: str) -> None:
    """Each index predicate a request write checks is plain comparisons: SQLite builds an
    ephemeral table for an ``IN`` list on every execution of the statement."""
    raw = sqlite3.connect(":memory:", isolation_level=None)
    try:
        _sqlite_schema.migrate(raw, ":memory:")
        sql = getattr(_sqlite, statement)
        parameters = [None] * (12 if statement == "_CREATE_REQUEST" else 13)
        program = raw.execute(f"EXPLAIN {sql}", parameters).fetchall()
    finally:
        raw.close()
    assert [op for op in program if op[1] == "OpenEphemeral"] == []
