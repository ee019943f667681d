"""The SQLite backend end to end: governance through ``Governance.open``, restarts, the
schema, unreadable data, locking, and exactly-once execution across OS processes.

The store contracts and the stateful comparison live in ``test_sqlite_contracts.py``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from mutator import (
    ConcurrencyError,
    ConfigurationError,
    HistoryEntry,
    MutationContext,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
)
from mutator.serialization import unstructure
from mutator_governance import (
    DecisionCategory,
    Governance,
    GovernedCommit,
    LifecycleDecision,
    PendingReason,
    RequestConcurrencyError,
    RequestNotFoundError,
    RequestQuery,
    RequestStatus,
    RequestWrite,
    ResolutionStrategy,
    StateWrite,
    StoredDataError,
    StoreUnavailableError,
)
from mutator_governance.stores import open_store
from mutator_governance.stores._sqlite import (
    SCHEMA_VERSION,
    SQLiteStore,
    _Codec,
    _micros,
    sqlite_path,
)
from mutator_governance.testing import (
    SampleState,
    sample_decision,
    sample_registry,
    sample_request,
)

from .sqlite_worker import Counter, Increment, registry

ROOT = Path(__file__).resolve().parents[2]
ALICE = MutationContext.user("alice", reason="more capacity")
BOB = MutationContext.user("bob", roles=["approver"])

pytestmark = pytest.mark.anyio


class NeedsApprover(MutationPolicy[Counter]):
    """Every increment needs someone with the approver role."""

    def evaluate(self, mutation: Any, state: Counter, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(
            PolicyRequirement.approval(role="approver"), reason="counters are precious"
        )


def url_of(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/gov.db"


# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///relative.db", "relative.db"),
        ("sqlite:///dir/relative.db", "dir/relative.db"),
        ("sqlite:////abs/path.db", "/abs/path.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite://", ":memory:"),
        ("SQLITE:///x.db", "x.db"),
        ("sqlite:///with%20space.db", "with space.db"),
        ("plain.db", "plain.db"),
        ("/abs/plain.db", "/abs/plain.db"),
        (Path("/p/q.db"), "/p/q.db"),
    ],
)
def test_sqlite_path(url: Any, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize(
    "url", ["sqlite:/x.db", "sqlite://host/x.db", "sqlite:///x.db?mode=ro", ""]
)
def test_sqlite_path_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        sqlite_path(url)


@pytest.mark.parametrize("form", ["url", "plain", "path"])
async def test_a_nul_character_in_the_path_is_a_configuration_error(
    tmp_path: Path, form: str
) -> None:
    """``%00`` (or a NUL in a plain path) names no file: refused, not a bare ValueError."""
    url: Any = {
        "url": f"sqlite:///{tmp_path}/gov%00.db",
        "plain": f"{tmp_path}/gov\0.db",
        "path": tmp_path / "gov\0.db",
    }[form]
    with pytest.raises(ConfigurationError, match="NUL character"):
        await SQLiteStore.open(url, registry=registry())
    assert os.listdir(tmp_path) == []


async def test_open_store_dispatches_and_accepts_plain_paths(tmp_path: Path) -> None:
    store = await open_store(url_of(tmp_path), registry=registry())
    assert isinstance(store, SQLiteStore)
    assert store.path == f"{tmp_path}/gov.db"
    assert store.schema_version == SCHEMA_VERSION
    await store.aclose()
    async with await SQLiteStore.open(tmp_path / "gov.db", registry=registry()) as again:
        assert await again.states.get("missing") is None


async def test_a_relative_path_keeps_naming_the_same_file_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections made after ``os.chdir`` (readers are made on demand) open the file
    the store was opened on, not a new empty ``gov.db`` in the new directory."""
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    async with Governance.open("sqlite:///gov.db", registry=registry()) as gov:
        await gov.states.put("counter:a", Counter(7))
        monkeypatch.chdir(tmp_path / "second")
        found = await gov.states.get("counter:a")
        assert found is not None
        assert found.state == Counter(7)
        assert list((await gov.list()).items) == []
    assert os.listdir(tmp_path / "second") == []


async def test_file_uses_wal(tmp_path: Path) -> None:
    async with await SQLiteStore.open(url_of(tmp_path), registry=registry()):
        with sqlite3.connect(tmp_path / "gov.db") as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- governance end to end ---------------------------------------------------------------------


async def test_submit_approve_execute(tmp_path: Path) -> None:
    async with Governance.open(url_of(tmp_path), registry=registry()) as gov:
        gov.engine.register_policy(NeedsApprover())
        await gov.states.put("counter:a", Counter(10))
        submitted = await gov.submit(Increment(5), state_id="counter:a", context=ALICE)
        assert submitted.pending_reason is PendingReason.APPROVAL
        approved = await gov.approve(submitted.request_id, context=BOB)
        assert approved.status is RequestStatus.APPROVED
        done = await gov.execute(submitted.request_id)
        assert done.executed
        assert done.request.status is RequestStatus.EXECUTED
        current = await gov.states.get("counter:a")
        assert current is not None
        assert current.state == Counter(15)
        assert current.version == done.resulting_version == "2"
        assert current.request_id == submitted.request_id
        history = await gov.engine.history_store.history("counter:a")
        assert len(history) == 1
        assert history.entries[0].changes
        audit = await gov.engine.audit.entries("counter:a")
        assert [entry.succeeded for entry in audit] == [True]


async def test_restart_loses_nothing(tmp_path: Path) -> None:
    url = url_of(tmp_path)
    async with Governance.open(url, registry=registry()) as gov:
        gov.engine.register_policy(NeedsApprover())
        await gov.states.put("counter:a", Counter(0))
        ids = [
            (await gov.submit(Increment(n), state_id="counter:a", context=ALICE)).request_id
            for n in (1, 2, 3)
        ]
    # Restart: a new process would see exactly this.
    async with Governance.open(url, registry=registry()) as gov:
        gov.engine.register_policy(NeedsApprover())
        pending = await gov.requests.pending(PendingReason.APPROVAL)
        assert sorted(r.request_id for r in pending) == sorted(ids)
        for request_id in ids:
            await gov.approve(request_id, context=BOB)
            done = await gov.execute(
                request_id, strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE
            )
            assert done.executed
    async with Governance.open(url, registry=registry()) as gov:
        current = await gov.states.get("counter:a")
        assert current is not None
        assert current.state == Counter(6)
        assert current.version == "4"
        for request_id in ids:
            request = await gov.requests.get(request_id)
            assert request is not None
            assert request.status is RequestStatus.EXECUTED
            logged = await gov.decisions.for_request(request_id)
            assert list(logged) == list(request.decisions)
            assert logged[0].code is LifecycleDecision.SUBMITTED
            assert logged[-1].code is LifecycleDecision.EXECUTED
            assert await gov.states.version_by_request("counter:a", request_id) == (
                request.resulting_state_version
            )
        history = await gov.engine.history_store.history("counter:a")
        assert len(history) == 3
        assert all(entry.mutation is None for entry in history.entries)
        recent = await gov.engine.history_store.recent("counter:a", 2)
        assert [e.execution_id for e in recent] == [
            e.execution_id for e in reversed(history.entries[1:])
        ]
        audit = await gov.engine.audit.entries("counter:a")
        assert len([entry for entry in audit if entry.succeeded]) == 3
        executed = await gov.requests.list(RequestQuery(statuses={RequestStatus.EXECUTED}))
        assert {r.request_id for r in executed.items} == set(ids)
        lifecycle = await gov.decisions.recent(100, category=DecisionCategory.LIFECYCLE)
        assert sum(r.decision.code is LifecycleDecision.EXECUTED for r in lifecycle) == 3


async def test_history_and_audit_bounds(tmp_path: Path) -> None:
    async with Governance.open(url_of(tmp_path), registry=registry()) as gov:
        await gov.states.put("counter:a", Counter(0))
        for n in range(3):
            request = await gov.submit(Increment(n), state_id="counter:a", context=ALICE)
            await gov.execute(request.request_id)
        store = gov.engine.history_store
        entries = (await store.history("counter:a")).entries
        first, last = entries[0].executed_at, entries[-1].executed_at
        assert list(await store.between("counter:a", first, last)) == list(entries)
        assert list(await store.between("counter:a", last + timedelta(seconds=1), last)) == []
        assert list(await store.recent("counter:a", 0)) == []
        with pytest.raises(ValueError):
            await store.recent("counter:a", -1)
        assert len(await store.history("counter:b")) == 0
        audit = gov.engine.audit
        everything = await audit.entries()
        assert len(everything) == 3
        assert list(await audit.entries(since=everything[1].executed_at)) == everything[1:]
        assert list(await audit.entries(until=everything[0].executed_at)) == everything[:1]
        assert list(await audit.entries("counter:b")) == []


async def test_concurrent_executions_in_one_process(tmp_path: Path) -> None:
    """Many tasks execute at once on several states: every request lands exactly once."""
    async with Governance.open(url_of(tmp_path), registry=registry()) as gov:
        for index in range(4):
            await gov.states.put(f"counter:{index}", Counter(0))
        ids = [
            (await gov.submit(Increment(1), state_id=f"counter:{n % 4}", context=ALICE)).request_id
            for n in range(60)
        ]
        limit = anyio.Semaphore(8)

        async def execute(request_id: str) -> None:
            async with limit:
                done = await gov.execute(
                    request_id, strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE
                )
                assert done.executed

        async with anyio.create_task_group() as group:
            for request_id in ids:
                group.start_soon(execute, request_id)
        for index in range(4):
            current = await gov.states.get(f"counter:{index}")
            assert current is not None
            assert current.state == Counter(15)
            assert len(await gov.engine.history_store.history(f"counter:{index}")) == 15
        assert len(await gov.engine.audit.entries()) == 60


# -- the committer -----------------------------------------------------------------------------


async def test_commit_checks_everything_before_writing(tmp_path: Path) -> None:
    async with await SQLiteStore.open(url_of(tmp_path), registry=sample_registry()) as store:
        one = await store.requests.create(sample_request("r1", state_id="s:1"))
        two = await store.requests.create(sample_request("r2", state_id="s:1"))
        version = await store.states.put("s:1", SampleState(value=1))

        async def attempt(expected_two: int, expected_version: str | None) -> None:
            await store.committer.commit(
                GovernedCommit(
                    (
                        RequestWrite(one, 0, one.decisions),
                        RequestWrite(two, expected_two, ()),
                    ),
                    StateWrite("s:1", SampleState(value=2), expected_version, "2", "r1"),
                )
            )

        with pytest.raises(RequestConcurrencyError) as caught:
            await attempt(5, version)
        assert (caught.value.expected_revision, caught.value.actual_revision) == (5, 0)
        with pytest.raises(ConcurrencyError):
            await attempt(0, "7")
        # Nothing was written by either attempt.
        assert (await store.requests.get("r1")) == one
        assert (await store.states.get("s:1")).version == version  # type: ignore[union-attr]
        assert await store.states.version_by_request("s:1", "r1") is None
        assert list(await store.decisions.for_request("r1")) == []
        with pytest.raises(RequestNotFoundError):
            await store.committer.commit(
                GovernedCommit((RequestWrite(sample_request("nope"), 0, ()),))
            )

        await attempt(0, version)
        assert (await store.requests.get("r1")).revision == 1  # type: ignore[union-attr]
        assert (await store.requests.get("r2")).revision == 1  # type: ignore[union-attr]
        assert await store.states.version_by_request("s:1", "r1") == "2"
        assert list(await store.decisions.for_request("r1")) == list(one.decisions)


# -- schema and unreadable data ------------------------------------------------------------------


async def test_schema_version_too_new_is_refused(tmp_path: Path) -> None:
    url = url_of(tmp_path)
    await (await SQLiteStore.open(url, registry=registry())).aclose()
    with sqlite3.connect(tmp_path / "gov.db") as raw:
        raw.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
            (SCHEMA_VERSION + 41, datetime.now(UTC).isoformat()),
        )
    raw.close()
    with pytest.raises(StoredDataError) as caught:
        await SQLiteStore.open(url, registry=registry())
    message = str(caught.value)
    assert f"schema version {SCHEMA_VERSION + 41}" in message
    assert f"version {SCHEMA_VERSION} " in message
    assert caught.value.backend == "sqlite"


async def test_reopening_keeps_the_schema(tmp_path: Path) -> None:
    url = url_of(tmp_path)
    for _ in range(2):
        async with await SQLiteStore.open(url, registry=registry()) as store:
            assert store.schema_version == SCHEMA_VERSION
    with sqlite3.connect(tmp_path / "gov.db") as raw:
        rows = raw.execute("SELECT version FROM schema_version").fetchall()
    raw.close()
    assert rows == [(version,) for version in range(1, SCHEMA_VERSION + 1)]


def _corrupt(path: Path, sql: str, *params: Any) -> None:
    with sqlite3.connect(path) as raw:
        raw.execute(sql, params)
    raw.close()


async def test_corrupt_request_document_names_the_key(tmp_path: Path) -> None:
    url = url_of(tmp_path)
    async with await SQLiteStore.open(url, registry=sample_registry()) as store:
        await store.requests.create(sample_request("good"))
        await store.requests.create(sample_request("bad"))
        await store.requests.create(sample_request("broken"))
        _corrupt(
            tmp_path / "gov.db",
            "UPDATE requests SET document = json_set(document, '$.revision', 'x') "
            "WHERE request_id = 'bad'",
        )
        _corrupt(
            tmp_path / "gov.db",
            "UPDATE requests SET document = '{not json' WHERE request_id = 'broken'",
        )
        assert await store.requests.get("good") is not None
        with pytest.raises(StoredDataError) as caught:
            await store.requests.get("bad")
        assert caught.value.key == "bad"
        assert caught.value.field == "revision"
        assert caught.value.backend == "sqlite"
        with pytest.raises(StoredDataError) as caught:
            await store.requests.get("broken")
        assert caught.value.key == "broken"
        assert "JSON" in str(caught.value)
        # Listings skip both, and quarantine them once (see test_sqlite_ready.py).
        assert [r.request_id for r in (await store.requests.list()).items] == ["good"]
        entries = await store.requests.quarantined()
        assert sorted((e.request_id, e.field) for e in entries) == [
            ("bad", "revision"),
            ("broken", None),
        ]


async def test_a_revision_column_edited_by_hand_is_stored_data_error(tmp_path: Path) -> None:
    """Every write checking the revision names the row and field (was a bare ValueError
    from ``int()``); nothing is written, and the other requests go on."""
    async with Governance.open(url_of(tmp_path), registry=registry()) as gov:
        await gov.states.put("c", Counter(0))
        for name in ("good", "bad"):
            await gov.submit(
                Increment(1), state_id="c", context=MutationContext.user("al"), request_id=name
            )
        _corrupt(tmp_path / "gov.db", "UPDATE requests SET revision = 'x' WHERE request_id = 'bad'")
        for attempt in (
            lambda: gov.execute("bad"),
            lambda: gov.cancel("bad", context=MutationContext.user("bo")),
        ):
            with pytest.raises(StoredDataError) as caught:
                await attempt()
            assert (caught.value.key, caught.value.field) == ("bad", "revision")
        assert (await gov.execute("good")).executed
        assert (await gov.get("bad")).status is RequestStatus.APPROVED


async def test_corrupt_state_and_decision_documents(tmp_path: Path) -> None:
    async with await SQLiteStore.open(url_of(tmp_path), registry=sample_registry()) as store:
        await store.states.put("s:1", SampleState())
        decision = attrs.evolve(sample_decision(LifecycleDecision.SUBMITTED), sequence=1)
        await store.decisions.append("r1", [decision])
        _corrupt(tmp_path / "gov.db", 'UPDATE states SET document = \'{"$type": "nope"}\'')
        _corrupt(tmp_path / "gov.db", "UPDATE decisions SET document = '[]'")
        with pytest.raises(StoredDataError) as caught:
            await store.states.get("s:1")
        assert caught.value.key == "s:1"
        with pytest.raises(StoredDataError) as caught:
            await store.decisions.for_request("r1")
        assert caught.value.key == "r1"
        with pytest.raises(StoredDataError):
            await store.decisions.recent()


async def test_unopenable_file_is_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "gov.db"
    with pytest.raises(StoreUnavailableError) as caught:
        await SQLiteStore.open(f"sqlite:///{missing}", registry=registry())
    assert str(missing) in str(caught.value)
    assert caught.value.url == str(missing)


async def test_not_a_database_is_stored_data_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database file at all, not even close" * 100)
    with pytest.raises(StoredDataError) as caught:
        await SQLiteStore.open(junk, registry=registry())
    assert str(junk) in str(caught.value)


@pytest.mark.parametrize(
    "statements",
    [
        ["CREATE TABLE requests (id INTEGER, title TEXT)"],
        ["CREATE TABLE users (id INTEGER)", "CREATE INDEX audit_by_time ON users (id)"],
        ["CREATE TABLE schema_version (name TEXT)"],
        ["CREATE VIEW schema_version AS SELECT 1 AS version, '' AS applied_at"],
    ],
    ids=["requests-table", "store-index-name", "schema-version-table", "schema-version-view"],
)
async def test_another_applications_tables_under_the_stores_names_are_refused_untouched(
    tmp_path: Path, statements: list[str]
) -> None:
    """A database whose tables or indexes the store would collide with is StoredDataError
    (not an outage to retry), and nothing is created or changed in it."""
    other = tmp_path / "app.db"

    def schema() -> list[Any]:
        app = sqlite3.connect(other)
        try:
            for statement in statements:
                app.execute(statement)
            return app.execute("SELECT * FROM sqlite_master").fetchall()
        finally:
            app.close()

    before = schema()
    statements = []
    with pytest.raises(StoredDataError, match="another application's database") as caught:
        await SQLiteStore.open(other, registry=registry())
    assert str(other) in str(caught.value)
    assert schema() == before


async def test_locked_beyond_the_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "gov.db"
    async with await SQLiteStore.open(path, registry=registry(), busy_timeout=0.2) as store:
        raw = sqlite3.connect(path, isolation_level=None)
        try:
            raw.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError) as caught:
                await store.states.put("counter:a", Counter())
            assert time.monotonic() - started >= 0.15
            assert "locked" in str(caught.value)
            # Reads still work while another connection writes (WAL).
            assert await store.states.get("counter:a") is None
        finally:
            raw.execute("ROLLBACK")
            raw.close()
        assert await store.states.put("counter:a", Counter()) == "1"


async def test_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = await SQLiteStore.open(url_of(tmp_path), registry=registry())
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreUnavailableError):
        await store.states.get("counter:a")
    with pytest.raises(StoreUnavailableError):
        await store.states.put("counter:a", Counter())


async def test_memory_databases_are_private(tmp_path: Path) -> None:
    async with (
        await SQLiteStore.open("sqlite:///:memory:", registry=registry()) as one,
        await SQLiteStore.open("sqlite:///:memory:", registry=registry()) as two,
    ):
        await one.states.put("counter:a", Counter(1))
        assert await two.states.get("counter:a") is None
        assert (await one.states.get("counter:a")).state == Counter(1)  # type: ignore[union-attr]


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "file"])
async def test_lone_surrogates_round_trip(tmp_path: Path, url: str) -> None:
    """The reference store keeps any str; UTF-8 text cannot hold a lone surrogate."""
    url = url_of(tmp_path) if url == "file" else url
    async with await SQLiteStore.open(url, registry=sample_registry()) as store:
        request = sample_request("r1", metadata={"a": "\ud800", "b": "caf\u00e9 \U0001f600"})
        await store.requests.create(request)
        assert await store.requests.get("r1") == request
        await store.states.put("s:1", SampleState(name="\udfff"))
        assert (await store.states.get("s:1")).state == SampleState(name="\udfff")  # type: ignore[union-attr]


def test_naive_bounds_are_refused() -> None:
    """A query bound without a timezone is refused when the query is built."""
    with pytest.raises(ValueError, match="timezone-aware"):
        RequestQuery(created_from=datetime(2024, 1, 1))


async def test_history_entry_round_trip(tmp_path: Path) -> None:
    async with Governance.open(url_of(tmp_path), registry=registry()) as gov:
        await gov.states.put("counter:a", Counter(0))
        request = await gov.submit(Increment(2), state_id="counter:a", context=ALICE)
        await gov.execute(request.request_id)
        (entry,) = (await gov.engine.history_store.history("counter:a")).entries
        assert isinstance(entry, HistoryEntry)
        assert entry.context.metadata["governance_request_id"] == request.request_id
        assert entry.executed_at.tzinfo is not None


def test_micros_is_the_instant_in_any_zone() -> None:
    """The same instant gives the same column value in UTC and any other zone; a naive
    datetime, or one whose zone has no offset, is refused."""

    class NoOffset(tzinfo):
        def utcoffset(self, dt: datetime | None) -> timedelta | None:
            return None

    moment = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)
    expected = 1_796_432_523_456_789
    assert _micros(moment) == expected
    assert _micros(moment.astimezone(timezone(timedelta(hours=-5, minutes=-30)))) == expected
    assert _micros(moment.astimezone(timezone(timedelta(0), "Z"))) == expected
    assert _micros(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1
    for wrong in (datetime(2026, 12, 5), datetime(2026, 12, 5, tzinfo=NoOffset())):
        with pytest.raises(TypeError, match="timezone-aware"):
            _micros(wrong)


async def test_records_are_the_registrys_documents(tmp_path: Path) -> None:
    """History and audit rows hold the registry's JSON of each entry, as unstructure gives."""
    async with Governance.open(url_of(tmp_path), registry=registry()) as gov:
        await gov.states.put("counter:a", Counter(0))
        request = await gov.submit(Increment(2), state_id="counter:a", context=ALICE)
        await gov.execute(request.request_id)
    reg = registry()
    async with await SQLiteStore.open(url_of(tmp_path), registry=reg) as store:
        (entry,) = (await store.history.history("counter:a")).entries
        (audit,) = await store.audit.entries("counter:a")
    codec = _Codec(reg)
    for record in (entry, audit, audit):
        assert codec.record(record) == reg.dumps(unstructure(reg.converter, record))


# -- exactly once across processes ---------------------------------------------------------------

RACE_REQUESTS = 200
RACE_STATES = 5
RACE_WORKERS = 4


@pytest.mark.slow
def test_exactly_once_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    plan: dict[str, tuple[str, int]] = {}

    async def prepare() -> None:
        async with Governance.open(f"sqlite:///{path}", registry=registry()) as gov:
            for index in range(RACE_STATES):
                await gov.states.put(f"counter:{index}", Counter(0))
            for index in range(RACE_REQUESTS):
                state_id = f"counter:{index % RACE_STATES}"
                by = index % 7 + 1
                request = await gov.submit(
                    Increment(by), state_id=state_id, context=ALICE, request_id=f"race-{index:03d}"
                )
                assert request.status is RequestStatus.APPROVED
                plan[request.request_id] = (state_id, by)

    anyio.run(prepare)
    start = time.time() + 3.0
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.stores.sqlite_worker",
                str(path),
                repr(start),
                "trio" if index % 2 else "asyncio",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(RACE_WORKERS)
    ]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))

    executed = [request_id for report in reports for request_id in report["executed"]]
    assert sorted(executed) == sorted(plan), "every request executed exactly once"
    assert sum(1 for report in reports if report["executed"]) >= 2, reports
    print("race reports:", [(len(r["executed"]), r["conflicts"]) for r in reports])

    async def verify() -> None:
        async with Governance.open(f"sqlite:///{path}", registry=registry()) as gov:
            page = await gov.requests.list(limit=RACE_REQUESTS + 1)
            assert len(page.items) == RACE_REQUESTS
            assert {r.status for r in page.items} == {RequestStatus.EXECUTED}
            total_history = 0
            for index in range(RACE_STATES):
                state_id = f"counter:{index}"
                expected = sum(by for s, by in plan.values() if s == state_id)
                count = sum(1 for s, _ in plan.values() if s == state_id)
                current = await gov.states.get(state_id)
                assert current is not None
                assert current.state == Counter(expected)
                assert current.version == str(count + 1)
                history = await gov.engine.history_store.history(state_id)
                assert len(history) == count
                total_history += len(history)
            assert total_history == RACE_REQUESTS
            for request in page.items:
                logged = await gov.decisions.for_request(request.request_id)
                executed_codes = [d for d in logged if d.code is LifecycleDecision.EXECUTED]
                assert len(executed_codes) == 1
                state_id, _ = plan[request.request_id]
                assert await gov.states.version_by_request(state_id, request.request_id) == (
                    request.resulting_state_version
                )

    anyio.run(verify)


# -- the example -------------------------------------------------------------------------------


async def test_durable_sqlite_example(capsys: pytest.CaptureFixture[str]) -> None:
    from examples.durable_sqlite import main

    outcome = await main()
    assert outcome["status"] is RequestStatus.EXECUTED
    assert outcome["limit"] == 150
    assert outcome["version"] == "2"
    assert outcome["history"] == 1
    assert outcome["decisions"] >= 6
    printed = capsys.readouterr().out
    assert "after restart the request is APPROVED" in printed
    assert "LIFECYCLE/EXECUTED" in printed
