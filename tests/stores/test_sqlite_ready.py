"""The SQLite worker claim seam: ready batches, quarantine of unreadable rows, and their cost.

Runs the :class:`ReadyQueueContract` on a file and in memory (asyncio and trio), then
poison pills in every status, the query plan of a reservation, the rows it decodes as the
store grows, and reservations from two stores on one file.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from mutator_governance import (
    QUARANTINE_LOGGER,
    DecisionPurger,
    ExecutionClaim,
    Governance,
    GovernanceStore,
    GovernedCommit,
    PendingReason,
    QuarantineLog,
    ReadyQueue,
    RequestPurger,
    RequestQuery,
    RequestStatus,
    RequestWrite,
    StoredDataError,
)
from mutator_governance.stores._sqlite import (
    _INSERT_REQUEST,
    SQLiteStore,
    _Codec,
    _execute,
    _execute_many,
    _micros,
    _request_row,
    ready_sql,
)
from mutator_governance.testing import ReadyQueueContract, sample_registry, sample_request

pytestmark = pytest.mark.anyio

BASE = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=60)

CORRUPTIONS = {
    "not JSON": "'{not json'",
    "unknown mutation type": "json_set(document, '$.mutation.\"$type\"', 'no.such.mutation')",
    "field of the wrong type": "json_set(document, '$.revision', 'x')",
}


async def corrupt(store: SQLiteStore, request_id: str, how: str = "not JSON") -> None:
    """Overwrite the stored document of ``request_id`` behind the store's back."""
    sql = f"UPDATE requests SET document = {CORRUPTIONS[how]} WHERE request_id = ?"
    changed = await store._db.run_write(lambda c: _execute(c, sql, (request_id,)))
    assert changed == 1


class SQLiteFileStores:
    """Contract stores in a file of the test's own; ``corrupt`` spoils a stored document."""

    @pytest.fixture(autouse=True)
    def _database_url(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path}/store.db"

    async def make_store(self) -> GovernanceStore:
        return await SQLiteStore.open(self.url, registry=sample_registry())

    async def corrupt(self, store: GovernanceStore, request_id: str) -> None:
        assert isinstance(store, SQLiteStore)
        await corrupt(store, request_id)


class SQLiteMemoryStores(SQLiteFileStores):
    """The same, each store a private in-memory database."""

    @pytest.fixture(autouse=True)
    def _database_url(self) -> None:
        self.url = "sqlite:///:memory:"


class TestSQLiteFileReadyQueue(SQLiteFileStores, ReadyQueueContract):
    pass


class TestSQLiteMemoryReadyQueue(SQLiteMemoryStores, ReadyQueueContract):
    pass


async def test_the_request_store_implements_the_optional_seams() -> None:
    async with await SQLiteStore.open(":memory:", registry=sample_registry()) as store:
        for seam in (ReadyQueue, QuarantineLog, RequestPurger):
            assert isinstance(store.requests, seam)
        # Decisions go with their requests in one transaction: Governance.purge must not
        # ask the log to forget them a second time.
        assert not isinstance(store.decisions, DecisionPurger)


# -- poison pills ------------------------------------------------------------------------------


async def _commit(store: SQLiteStore, *requests: Any) -> None:
    for request in requests:
        await store.committer.commit(GovernedCommit((RequestWrite.create(request),)))


def _every_status(prefix: str, offset: int) -> list[Any]:
    """One request in every status (and pending for revalidation), expiring in the past."""
    made = []
    for i, status in enumerate(RequestStatus):
        changes: dict[str, Any] = {}
        if status is RequestStatus.PENDING:
            changes["expires_at"] = BASE + timedelta(hours=1)
        if status is RequestStatus.EXECUTING:
            changes["claim"] = ExecutionClaim("gone", BASE, BASE + LEASE)
        made.append(
            sample_request(
                f"{prefix}-{status.value}",
                status=status,
                created_at=BASE + timedelta(seconds=offset + 2 * i),
                **changes,
            )
        )
    made.append(
        sample_request(
            f"{prefix}-revalidation",
            status=RequestStatus.PENDING,
            pending_reason=PendingReason.REVALIDATION,
            created_at=BASE + timedelta(seconds=offset + 100),
        )
    )
    return made


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
async def test_poison_pills_in_every_status_are_skipped_everywhere(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/pills.db"
    healthy = _every_status("ok", 0)
    poisoned = _every_status("bad", 1)
    bad_ids = {r.request_id for r in poisoned}
    async with await SQLiteStore.open(url, registry=sample_registry()) as store:
        await _commit(store, *healthy, *poisoned)
        for request in poisoned:
            await corrupt(store, request.request_id, how)
        requests = store.requests
        caplog.set_level(logging.WARNING, logger=QUARANTINE_LOGGER)

        page = await requests.list(limit=1000)
        assert [r.request_id for r in page.items] == [r.request_id for r in healthy]
        assert {r.request_id for r in await requests.pending()} == {
            "ok-pending",
            "ok-revalidation",
        }
        assert [r.request_id for r in await requests.by_state(healthy[0].state_id)] == [
            r.request_id for r in healthy
        ]
        ready = await requests.reserve(
            owner="w", limit=50, now=BASE, until=BASE + LEASE, revalidation=True
        )
        assert [r.request_id for r in ready] == ["ok-approved", "ok-revalidation"]

        entries = await requests.quarantined()
        assert {e.request_id for e in entries} == bad_ids
        assert len(entries) == len(bad_ids)
        assert all(e.backend == "sqlite" and e.error for e in entries)
        warned = [r for r in caplog.records if r.name == QUARANTINE_LOGGER]
        assert sorted(r.request_id for r in warned) == sorted(bad_ids)  # type: ignore[attr-defined]
        for request_id in bad_ids:
            with pytest.raises(StoredDataError):
                await requests.get(request_id)

    # Governance sweeps over the same file go on around the unreadable rows.
    async with Governance.open(url, registry=sample_registry()) as gov:
        expired = await gov.expire_due(BASE + timedelta(hours=2))
        assert [r.request_id for r in expired.expired] == ["ok-pending"]
        recovered = await gov.recover(BASE + LEASE * 2)
        assert [r.request_id for r in recovered.released + recovered.finished] == ["ok-executing"]
        assert len(await gov.requests.quarantined()) == len(bad_ids)


async def test_paging_past_unreadable_rows_loses_nothing(tmp_path: Path) -> None:
    async with await SQLiteStore.open(
        f"sqlite:///{tmp_path}/pages.db", registry=sample_registry()
    ) as store:
        made = [
            sample_request(f"r-{i:02d}", created_at=BASE + timedelta(seconds=i)) for i in range(20)
        ]
        await _commit(store, *made)
        bad = {f"r-{i:02d}" for i in (2, 3, 4, 9, 19)}
        for request_id in bad:
            await corrupt(store, request_id)
        seen: list[str] = []
        sizes: list[int] = []
        cursor = None
        while True:
            page = await store.requests.list(limit=3, cursor=cursor)
            seen.extend(r.request_id for r in page.items)
            sizes.append(len(page.items))
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == [r.request_id for r in made if r.request_id not in bad]
        assert all(size == 3 for size in sizes[:-1])
        assert {e.request_id for e in await store.requests.quarantined()} == bad


async def test_a_repaired_row_comes_back_once_released(tmp_path: Path) -> None:
    async with await SQLiteStore.open(
        f"sqlite:///{tmp_path}/repair.db", registry=sample_registry()
    ) as store:
        request = sample_request("r1", status=RequestStatus.APPROVED, created_at=BASE)
        await _commit(store, request)
        good = await store._db.run_read(
            lambda c: c.execute("SELECT document FROM requests").fetchone()[0]
        )
        await corrupt(store, "r1")
        assert (await store.requests.list()).items == ()
        await store._db.run_write(
            lambda c: _execute(c, "UPDATE requests SET document = ?", (good,))
        )
        # Still set aside until an operator releases it.
        assert (await store.requests.list()).items == ()
        assert await store.requests.release("r1") is True
        assert [r.request_id for r in (await store.requests.list()).items] == ["r1"]
        assert await store.requests.quarantined() == []


# -- cost ------------------------------------------------------------------------------------


def _plan(path: Path, sql: str, params: list[Any]) -> list[str]:
    with sqlite3.connect(path) as raw:
        rows = raw.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    raw.close()
    return [row[3] for row in rows]


@pytest.mark.parametrize("revalidation", [False, True])
@pytest.mark.parametrize("after", [False, True])
async def test_reserve_walks_the_ready_index_in_order(
    tmp_path: Path, revalidation: bool, after: bool
) -> None:
    path = tmp_path / "plan.db"
    async with await SQLiteStore.open(path, registry=sample_registry()):
        pass
    params: list[Any] = [0, *((0, "") if after else ()), 10]
    plan = _plan(path, ready_sql(revalidation=revalidation, after=after), params)
    assert any("requests_ready" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    assert not any(step.startswith("SCAN requests") and "INDEX" not in step for step in plan)


async def _decoded_per_reserve(tmp_path: Path, terminal: int, monkeypatch: Any) -> list[int]:
    """Rows decoded by each of three reserves of 10 among ``terminal`` executed rows."""
    async with await SQLiteStore.open(
        tmp_path / f"cost-{terminal}.db", registry=sample_registry()
    ) as store:
        done = [
            sample_request(
                f"x-{i:05d}", status=RequestStatus.EXECUTED, created_at=BASE + timedelta(seconds=i)
            )
            for i in range(terminal)
        ]
        waiting = [
            sample_request(f"p-{i:05d}", created_at=BASE + timedelta(seconds=i))
            for i in range(terminal // 2)
        ]
        ready = [
            sample_request(
                f"a-{i:03d}",
                status=RequestStatus.APPROVED,
                created_at=BASE + timedelta(seconds=terminal + i),
            )
            for i in range(40)
        ]
        await _commit_many(store, [*done, *waiting, *ready])
        counts: list[int] = []
        decoded = 0
        original = _Codec.read_request

        def counting(self: _Codec, row: Any) -> Any:
            nonlocal decoded
            decoded += 1
            return original(self, row)

        monkeypatch.setattr(_Codec, "read_request", counting)
        for n in range(3):
            decoded = 0
            batch = await store.requests.reserve(
                owner=f"w{n}", limit=10, now=BASE, until=BASE + LEASE
            )
            assert [r.request_id for r in batch] == [r.request_id for r in ready[10 * n :][:10]]
            counts.append(decoded)
        monkeypatch.setattr(_Codec, "read_request", original)
        return counts


async def _commit_many(store: SQLiteStore, requests: list[Any]) -> None:
    """Insert many rows in one transaction (through the store's own row encoding)."""
    codec = _Codec(sample_registry())
    rows = [_request_row(codec, r) for r in requests]
    await store._db.run_write(lambda c: _execute_many(c, _INSERT_REQUEST, rows))


async def test_rows_decoded_per_reserve_do_not_grow_with_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = await _decoded_per_reserve(tmp_path, 1_000, monkeypatch)
    large = await _decoded_per_reserve(tmp_path, 5_000, monkeypatch)
    assert small == large == [10, 10, 10]


# -- several processes ------------------------------------------------------------------------


async def test_two_stores_on_one_file_reserve_disjoint_batches(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    async with (
        await SQLiteStore.open(url, registry=sample_registry()) as one,
        await SQLiteStore.open(url, registry=sample_registry()) as two,
    ):
        made = [
            sample_request(
                f"r-{i:03d}", status=RequestStatus.APPROVED, created_at=BASE + timedelta(seconds=i)
            )
            for i in range(60)
        ]
        await _commit_many(one, made)
        handed: dict[str, list[str]] = {"one": [], "two": []}

        async def drain(name: str, store: SQLiteStore) -> None:
            for n in range(10):
                batch = await store.requests.reserve(
                    owner=f"{name}-{n}", limit=4, now=BASE, until=BASE + LEASE
                )
                handed[name].extend(r.request_id for r in batch)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, "one", one)
            tg.start_soon(drain, "two", two)
        everything = handed["one"] + handed["two"]
        assert len(everything) == len(set(everything)) == 60
        assert handed["one"]
        assert handed["two"]
        held = await one._db.run_read(
            lambda c: c.execute(
                "SELECT reserved_by, COUNT(*), MIN(reserved_until), MAX(reserved_until) "
                "FROM requests GROUP BY reserved_by"
            ).fetchall()
        )
        # 60 rows in batches of 4: 15 reservations, each recorded with its owner and lease.
        assert len(held) == 15
        assert {row[1:] for row in held} == {(4, _micros(BASE + LEASE), _micros(BASE + LEASE))}


async def test_mutation_types_are_filtered_in_sql(tmp_path: Path) -> None:
    async with await SQLiteStore.open(
        f"sqlite:///{tmp_path}/types.db", registry=sample_registry()
    ) as store:
        await _commit(store, sample_request("r1"), sample_request("r2"))
        plan = _plan(
            tmp_path / "types.db",
            "SELECT request_id FROM requests WHERE mutation_type IN (?) "
            "ORDER BY created_at, request_id",
            ["testing.sample"],
        )
        assert any("requests_by_mutation_type" in step for step in plan), plan
        found = await store.requests.list(RequestQuery(mutation_types={"testing.sample"}))
        assert {r.request_id for r in found.items} == {"r1", "r2"}
        assert (await store.requests.list(RequestQuery(mutation_types={"other"}))).items == ()
        stored = await store._db.run_read(
            lambda c: c.execute("SELECT DISTINCT mutation_type FROM requests").fetchall()
        )
        assert stored == [("testing.sample",)]
