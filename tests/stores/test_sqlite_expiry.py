"""The SQLite expiry index: the contract, its cost, and the upgrade that fills it.

Runs the :class:`ExpiryIndexContract` on a file and in memory (asyncio and trio), then the
query plan of a walk, the rows a sweep decodes among many pending requests, the upgrade
from schema version 5 (whose pending rows have no stored deadline yet) and a correction
that loses to a concurrent write.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from mutator_governance import (
    ApprovalRequirement,
    ExpiryIndex,
    Governance,
    GovernedCommit,
    MutationRequest,
    RequestStatus,
    RequestWrite,
    expiry_deadline,
)
from mutator_governance.stores import _sqlite_schema
from mutator_governance.stores._sqlite import (
    _INSERT_REQUEST,
    SCHEMA_VERSION,
    SQLiteStore,
    _Codec,
    _execute,
    _execute_many,
    _heal_transaction,
    _micros,
    _request_row,
    _walk_due,
    due_sql,
)
from mutator_governance.stores._sqlite_schema import STALE_DEADLINE
from mutator_governance.testing import ExpiryIndexContract, sample_registry, sample_request

from .test_sqlite_ready import SQLiteFileStores, SQLiteMemoryStores
from .test_sqlite_upgrade import add_due_at, drop_due_at

pytestmark = pytest.mark.anyio

BASE = datetime(2026, 1, 1, tzinfo=UTC)
NOW = BASE + timedelta(hours=1)


class TestSQLiteFileExpiryIndex(SQLiteFileStores, ExpiryIndexContract):
    pass


class TestSQLiteMemoryExpiryIndex(SQLiteMemoryStores, ExpiryIndexContract):
    pass


async def test_the_request_store_is_an_expiry_index() -> None:
    async with await SQLiteStore.open(":memory:", registry=sample_registry()) as store:
        assert isinstance(store.requests, ExpiryIndex)


@pytest.mark.parametrize("limit", [True, 1.0, "3", None])
async def test_a_limit_that_is_not_an_integer_is_refused(limit: Any) -> None:
    async with await SQLiteStore.open(":memory:", registry=sample_registry()) as store:
        with pytest.raises(ValueError):
            await store.requests.due(now=NOW, limit=limit)


# -- helpers -----------------------------------------------------------------------------------


def _slot(expires_at: datetime | None) -> ApprovalRequirement:
    return ApprovalRequirement("a", role="sre", expires_at=expires_at)


def _pending(request_id: str, **changes: Any) -> MutationRequest:
    return sample_request(request_id, created_at=BASE, **changes)


def _future(count: int) -> list[MutationRequest]:
    """``count`` pending requests whose own deadline, or their slot's, is a day away."""
    return [
        _pending(f"later-{i:05d}", expires_at=BASE + timedelta(days=1, seconds=i))
        if i % 2
        else _pending(
            f"later-{i:05d}", approval_requirements=(_slot(BASE + timedelta(days=1, seconds=i)),)
        )
        for i in range(count)
    ]


def _past() -> list[MutationRequest]:
    """Pending requests due at :data:`NOW`: their own deadline, a slot's, one exactly now."""
    return [
        _pending("past-own", expires_at=BASE),
        _pending("past-slot", approval_requirements=(_slot(BASE + timedelta(minutes=30)),)),
        _pending("past-now", expires_at=NOW),
    ]


def _never() -> list[MutationRequest]:
    """Requests nothing of which ever expires at :data:`NOW`, whatever they carry."""
    return [
        _pending("never-plain"),
        _pending("never-open-slot", approval_requirements=(_slot(None),)),
        sample_request("never-approved", status=RequestStatus.APPROVED, expires_at=BASE),
    ]


async def _insert(store: SQLiteStore, requests: list[MutationRequest]) -> None:
    """Insert many rows in one transaction (through the store's own row encoding)."""
    codec = _Codec(sample_registry())
    rows = [_request_row(codec, r) for r in requests]
    await store._db.run_write(lambda c: _execute_many(c, _INSERT_REQUEST, rows))


async def _deadlines(store: Any) -> dict[str, int | None]:
    db = store._db
    rows: list[tuple[str, int | None]] = await db.run_read(
        lambda c: c.execute("SELECT request_id, due_at FROM requests").fetchall()
    )
    return dict(rows)


class _Decodes:
    """Counts the request rows the SQLite stores decode (patching the codec)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = _Codec.read_request

        def counting(codec: _Codec, row: Any) -> MutationRequest:
            self.count += 1
            return original(codec, row)

        monkeypatch.setattr(_Codec, "read_request", counting)

    def take(self) -> int:
        """The rows decoded since the last call."""
        count, self.count = self.count, 0
        return count


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> _Decodes:
    """Counts decoded request rows for one test (the patch goes with ``monkeypatch``)."""
    return _Decodes(monkeypatch)


# -- cost ------------------------------------------------------------------------------------


def _plan(path: Path, sql: str, params: list[Any]) -> list[str]:
    raw = sqlite3.connect(path)
    try:
        rows = raw.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    finally:
        raw.close()
    return [row[3] for row in rows]


@pytest.mark.parametrize("after", [False, True])
async def test_due_walks_the_due_index_in_order(tmp_path: Path, after: bool) -> None:
    path = tmp_path / "plan.db"
    async with await SQLiteStore.open(path, registry=sample_registry()):
        pass
    plan = _plan(path, due_sql(after=after), [0, *((0, "") if after else ()), 10])
    assert any("requests_due" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    assert not any(step.startswith("SCAN requests") and "INDEX" not in step for step in plan)


async def test_due_decodes_only_the_due_rows_among_many_pending(
    tmp_path: Path, decodes: _Decodes
) -> None:
    async with await SQLiteStore.open(tmp_path / "many.db", registry=sample_registry()) as store:
        await _insert(store, [*_future(1_000), *_past(), *_never()])
        decodes.take()
        due = await store.requests.due(now=NOW, limit=256)
        assert [r.request_id for r in due] == ["past-own", "past-slot", "past-now"]
        assert decodes.take() == 3
        # One at a time, the walk still stops at the limit.
        assert [r.request_id for r in await store.requests.due(now=NOW, limit=1)] == ["past-own"]
        assert decodes.take() == 1

    async with Governance.open(f"sqlite:///{tmp_path}/many.db", registry=sample_registry()) as gov:
        decodes.take()
        sweep = await gov.expire_due(NOW)
        assert [r.request_id for r in sweep.expired] == ["past-own", "past-slot", "past-now"]
        assert decodes.take() == 3
        assert (await gov.expire_due(NOW)).expired == ()
        assert decodes.take() == 0


# -- upgrade ---------------------------------------------------------------------------------


async def _version_5_database(path: Path, requests: list[MutationRequest]) -> None:
    """A database at schema version 5 holding ``requests``, as version 5 wrote them."""
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(_sqlite_schema, "SCHEMA_VERSION", 5)
        async with await SQLiteStore.open(path, registry=sample_registry()) as store:
            assert store.schema_version == 5
            await add_due_at(store._db)
            for request in requests:
                await store.committer.commit(GovernedCommit((RequestWrite.create(request),)))
    drop_due_at(path)
    raw = sqlite3.connect(path)
    try:
        columns = [row[1] for row in raw.execute("PRAGMA table_info(requests)")]
        (version,) = raw.execute("SELECT MAX(version) FROM schema_version").fetchone()
    finally:
        raw.close()
    assert "due_at" not in columns
    assert version == 5


async def test_a_version_5_database_is_swept_once_then_only_through_the_index(
    tmp_path: Path, decodes: _Decodes
) -> None:
    path = tmp_path / "v5.db"
    # More pending rows than a sweep's batch of 256, so the first walk pages past them.
    later, past, never = _future(300), _past(), _never()
    await _version_5_database(path, [*later, *past, *never])

    async with Governance.open(f"sqlite:///{path}", registry=sample_registry()) as gov:
        assert gov.requests._db.schema_version == SCHEMA_VERSION == 8  # type: ignore[attr-defined]
        stored = await _deadlines(gov.requests)
        # Every pending row waits for the first sweep to read it; the others have nothing due.
        assert stored == {
            r.request_id: STALE_DEADLINE if r.status is RequestStatus.PENDING else None
            for r in [*later, *past, *never]
        }
        decodes.take()

        first = await gov.expire_due(NOW)
        assert [r.request_id for r in first.expired] == [r.request_id for r in past]
        assert first.skipped == ()
        # Each pending row decoded once.
        assert decodes.take() == len(later) + len(past) + 2
        # Its real deadline is stored now (none for what expired or never does).
        assert await _deadlines(gov.requests) == {
            r.request_id: None if r in past else _micros_or_none(expiry_deadline(r))
            for r in [*later, *past, *never]
        }

        second = await gov.expire_due(NOW)
        assert second.expired == ()
        assert second.skipped == ()
        assert decodes.take() == 0

        # The rest expire when their time comes, read through the index.
        third = await gov.expire_due(BASE + timedelta(days=2))
        assert [r.request_id for r in third.expired] == [r.request_id for r in later]
        assert decodes.take() == len(later)


def _micros_or_none(moment: datetime | None) -> int | None:
    return None if moment is None else _micros(moment)


# -- self-healing ------------------------------------------------------------------------------


async def test_a_stale_deadline_is_corrected_and_a_due_request_returned_in_its_place(
    tmp_path: Path,
) -> None:
    async with await SQLiteStore.open(tmp_path / "heal.db", registry=sample_registry()) as store:
        await _insert(store, [*_past(), *_future(2)])
        # Behind the store's back: one due row says it is due first, one not-due row too,
        # one due row says it is never due (a sweep cannot see it until it is next written).
        await store._db.run_write(
            lambda c: _execute_many(
                c,
                "UPDATE requests SET due_at = ? WHERE request_id = ?",
                [(STALE_DEADLINE, "past-now"), (STALE_DEADLINE, "later-00000")],
            )
        )
        due = await store.requests.due(now=NOW, limit=10)
        assert [r.request_id for r in due] == ["past-own", "past-slot", "past-now"]
        deadlines = await _deadlines(store.requests)
        assert deadlines["past-now"] == _micros(NOW)
        assert deadlines["later-00000"] == _micros(BASE + timedelta(days=1))
        # With a limit, a corrected request never overtakes one due before it.
        await store._db.run_write(
            lambda c: _execute(
                c, "UPDATE requests SET due_at = ? WHERE request_id = 'past-now'", (STALE_DEADLINE,)
            )
        )
        due = await store.requests.due(now=NOW, limit=1)
        assert [r.request_id for r in due] == ["past-own"]
        assert (await _deadlines(store.requests))["past-now"] == _micros(NOW)


async def test_a_concurrent_write_wins_over_a_correction(tmp_path: Path) -> None:
    async with await SQLiteStore.open(tmp_path / "race.db", registry=sample_registry()) as store:
        (request,) = _future(1)
        await _insert(store, [request])
        await store._db.run_write(
            lambda c: _execute(c, "UPDATE requests SET due_at = ?", (STALE_DEADLINE,))
        )
        codec = _Codec(sample_registry())
        walk = await _walk_due(store._db, codec, _micros(NOW), 10)
        assert [s.request_id for s in walk.stale] == [request.request_id]
        # The request is written (a new deadline) between the walk and its correction.
        sooner = NOW - timedelta(minutes=5)
        updated = await store.requests.replace(
            attrs.evolve(request, expires_at=sooner, approval_requirements=()),
            expected_revision=request.revision,
        )
        healed, quarantined = await store._db.run_write(
            _heal_transaction(walk.stale, (), datetime.now(UTC))
        )
        assert (healed, quarantined) == ([], [])
        assert (await _deadlines(store.requests))[request.request_id] == _micros(sooner)
        assert list(await store.requests.due(now=NOW, limit=10)) == [updated]
