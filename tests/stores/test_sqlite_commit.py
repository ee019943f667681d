"""The SQLite commit seam: atomic under injected faults, options, migration, typed errors.

Every test runs on asyncio and trio.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from mutator import (
    AuditEntry,
    AuditOutcome,
    ChangeSet,
    ConcurrencyError,
    ConfigurationError,
    HistoryEntry,
    MutationContext,
    MutationMode,
)
from mutator_governance import (
    GovernedCommit,
    LifecycleDecision,
    MutationRequest,
    RequestAlreadyExistsError,
    RequestConcurrencyError,
    RequestDecision,
    RequestNotFoundError,
    RequestQuery,
    RequestStatus,
    RequestWrite,
    StateWrite,
    StoredDataError,
    StoreUnavailableError,
)
from mutator_governance.stores import open_store
from mutator_governance.stores._sqlite import SCHEMA_VERSION, SQLiteOptions, SQLiteStore
from mutator_governance.stores._sqlite_schema import MIGRATIONS
from mutator_governance.testing import SampleState, sample_registry
from mutator_governance.testing import sample_request as _sample_request
from mutator_governance.testing._fixtures import SAMPLE_STATE_ID

from .openers import open_through

pytestmark = pytest.mark.anyio

APPROVED = RequestStatus.APPROVED

TABLES = ("requests", "decisions", "states", "state_versions", "audit", "history")


def sample_request(request_id: str, **changes: Any) -> MutationRequest:
    return _sample_request(request_id, **changes)


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read by a separate connection (what others can see)."""
    raw = sqlite3.connect(path)
    try:
        return {table: sorted(raw.execute(f"SELECT * FROM {table}").fetchall()) for table in TABLES}
    finally:
        raw.close()


def files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def open_file(tmp_path: Path, **options: Any) -> SQLiteStore:
    return await SQLiteStore.open(tmp_path / "gov.db", registry=sample_registry(), **options)


async def log_matches(store: SQLiteStore, request_id: str) -> None:
    request = await store.requests.get(request_id)
    assert request is not None
    assert tuple(await store.decisions.for_request(request_id)) == request.decisions


def decided(request: MutationRequest, status: RequestStatus, code: LifecycleDecision) -> Any:
    from mutator_governance._transitions import transition

    at = request.updated_at + timedelta(seconds=1)
    decision = RequestDecision(code, MutationContext.user("bob"), "test", at)
    return transition(request, status, [decision], at=at)


def records(request: MutationRequest) -> tuple[AuditEntry, HistoryEntry]:
    context = MutationContext.user("alice", mode=MutationMode.COMMIT)
    intent = request.mutation.intent
    audit = AuditEntry(
        f"exec-{request.request_id}",
        request.state_id,
        "SampleState",
        intent,
        context,
        MutationMode.COMMIT,
        AuditOutcome.SUCCEEDED,
        request.updated_at,
        0.001,
    )
    history = HistoryEntry(
        f"exec-{request.request_id}",
        request.state_id,
        intent,
        context,
        ChangeSet(),
        request.updated_at,
        0.001,
        (),
        request.mutation,
    )
    return audit, history


# -- atomicity by fault injection -------------------------------------------------------------


class FailingConnection:
    """Wraps the store's writing connection; its ``fail_at``-th statement raises."""

    def __init__(self, inner: sqlite3.Connection, fail_at: int) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.statements = 0
        self.failed = False

    def _tick(self, sql: str) -> None:
        self.statements += 1
        if self.statements == self.fail_at:
            self.failed = True
            raise sqlite3.OperationalError(f"injected fault at statement {self.fail_at}: {sql}")

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self._tick(sql)
        return self.inner.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        self._tick(sql)
        return self.inner.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


Operation = Callable[[SQLiteStore], Coroutine[Any, Any, Any]]


async def fail_at_each_statement(
    tmp_path: Path, store: SQLiteStore, operation: Operation, connection: str = "_writer"
) -> int:
    """Run ``operation`` with a fault at statement 1, 2, ... until it succeeds.

    The faults hit the database's ``connection`` (the writer, or ``_claimer`` for the
    writes tried on the event loop's thread). After every fault nothing of the operation
    is visible; returns the number of faults.
    """
    database = store._db
    real = getattr(database, connection)
    assert real is not None
    fail_at = 1
    while True:
        before = snapshot(tmp_path / "gov.db")
        failing = FailingConnection(real, fail_at)
        setattr(database, connection, failing)
        error: StoreUnavailableError | None = None
        try:
            await operation(store)
        except StoreUnavailableError as raised:
            error = raised
        finally:
            setattr(database, connection, real)
        if error is not None:
            assert failing.failed
            assert "injected fault" in str(error)
            assert snapshot(tmp_path / "gov.db") == before
            assert not real.in_transaction
            fail_at += 1
            continue
        assert not failing.failed
        return fail_at - 1


async def test_a_fault_at_any_statement_of_a_create_writes_nothing(tmp_path: Path) -> None:
    async with await open_file(tmp_path) as store:
        request = sample_request("r1", status=RequestStatus.APPROVED)

        async def create(store: SQLiteStore) -> Any:
            return await store.committer.commit(GovernedCommit((RequestWrite.create(request),)))

        faults = await fail_at_each_statement(tmp_path, store, create)
        assert faults >= 3  # begin, insert, commit
        assert await store.requests.get("r1") == attrs.evolve(request, revision=0)
        await log_matches(store, "r1")


async def test_a_fault_at_any_statement_of_an_update_writes_nothing(tmp_path: Path) -> None:
    async with await open_file(tmp_path) as store:
        (created,) = await store.committer.commit(
            GovernedCommit((RequestWrite.create(sample_request("r1")),))
        )
        canceled = decided(created, RequestStatus.CANCELED, LifecycleDecision.CANCELED)

        async def cancel(store: SQLiteStore) -> Any:
            return await store.committer.commit(
                GovernedCommit((RequestWrite.update(created, canceled),))
            )

        faults = await fail_at_each_statement(tmp_path, store, cancel)
        assert faults >= 4
        stored = await store.requests.get("r1")
        assert stored is not None
        assert stored.status is RequestStatus.CANCELED
        assert stored.revision == 1
        await log_matches(store, "r1")


async def test_a_fault_at_any_statement_of_an_execution_writes_nothing(tmp_path: Path) -> None:
    async with await open_file(tmp_path) as store:
        await store.states.put(SAMPLE_STATE_ID, SampleState("sample", 1))
        (created,) = await store.committer.commit(
            GovernedCommit((RequestWrite.create(sample_request("r1", status=APPROVED)),))
        )
        (linked,) = await store.committer.commit(
            GovernedCommit((RequestWrite.create(sample_request("r2")),))
        )
        executed = decided(created, RequestStatus.EXECUTED, LifecycleDecision.EXECUTED)
        noted = attrs.evolve(linked, metadata={"linked": True})
        audit, history = records(created)
        commit = GovernedCommit(
            (RequestWrite.update(created, executed), RequestWrite.update(linked, noted)),
            StateWrite(SAMPLE_STATE_ID, SampleState("sample", 2), "1", "2", "r1"),
            (history,),
            (audit,),
        )

        async def execute(store: SQLiteStore) -> Any:
            return await store.committer.commit(commit)

        faults = await fail_at_each_statement(tmp_path, store, execute)
        # begin, 2 x (request, decision), state, its producer, history, audit, commit
        assert faults >= 9
        current = await store.states.get(SAMPLE_STATE_ID)
        assert current is not None
        assert (current.state, current.version) == (SampleState("sample", 2), "2")
        assert len(await store.audit.entries(SAMPLE_STATE_ID)) == 1
        assert len((await store.history.history(SAMPLE_STATE_ID)).entries) == 1
        await log_matches(store, "r1")
        await log_matches(store, "r2")


# -- decisions --------------------------------------------------------------------------------


async def test_appending_a_logged_sequence_again_is_skipped(tmp_path: Path) -> None:
    async with await open_file(tmp_path) as store:
        (created,) = await store.committer.commit(
            GovernedCommit((RequestWrite.create(sample_request("r1")),))
        )
        canceled = decided(created, RequestStatus.CANCELED, LifecycleDecision.CANCELED)
        (stored,) = await store.committer.commit(
            GovernedCommit((RequestWrite.update(created, canceled),))
        )
        assert len(stored.decisions) == 1
        await store.decisions.append("r1", stored.decisions)
        await store.decisions.append("r1", stored.decisions)
        assert tuple(await store.decisions.for_request("r1")) == stored.decisions
        await log_matches(store, "r1")


async def test_a_decision_without_a_sequence_is_refused_and_nothing_written(
    tmp_path: Path,
) -> None:
    async with await open_file(tmp_path) as store:
        numbered = RequestDecision(
            LifecycleDecision.SUBMITTED, MutationContext.user("a"), None, sequence=1
        )
        unnumbered = attrs.evolve(numbered, sequence=0)
        before = snapshot(tmp_path / "gov.db")
        with pytest.raises(ValueError, match="sequence"):
            await store.decisions.append("r1", [numbered, unnumbered])
        assert snapshot(tmp_path / "gov.db") == before


async def test_decisions_come_back_in_sequence_order(tmp_path: Path) -> None:
    async with await open_file(tmp_path) as store:
        base = RequestDecision(LifecycleDecision.SUBMITTED, MutationContext.user("a"), None)
        third, first, second = (attrs.evolve(base, sequence=n, reason=str(n)) for n in (3, 1, 2))
        await store.decisions.append("r1", [third])
        await store.decisions.append("r1", [first, second])
        assert [d.sequence for d in await store.decisions.for_request("r1")] == [1, 2, 3]


# -- schema version 2 -------------------------------------------------------------------------


async def test_a_version_1_log_is_numbered_by_position_on_open(tmp_path: Path) -> None:
    path = tmp_path / "gov.db"
    registry = sample_registry()
    request = sample_request("r1", status=RequestStatus.APPROVED)
    decision = RequestDecision(LifecycleDecision.SUBMITTED, MutationContext.user("a"), None)
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute(
            "CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, "
            "applied_at TEXT NOT NULL)"
        )
        for statement in MIGRATIONS[1]:
            raw.execute(statement)
        raw.execute("INSERT INTO schema_version VALUES (1, '2026-01-01')")
        for request_id, reason in [("r1", "a"), ("r2", "x"), ("r1", "b"), ("r1", "c")]:
            document = registry.dumps(
                {
                    k: v
                    for k, v in registry.unstructure_decision(
                        attrs.evolve(decision, reason=reason)
                    ).items()
                    if k != "sequence"
                }
            )
            raw.execute(
                "INSERT INTO decisions (request_id, category, timestamp, document) "
                "VALUES (?, 'LIFECYCLE', 0, ?)",
                (request_id, document),
            )
        raw.execute(
            "INSERT INTO requests (request_id, state_id, status, pending_reason, actor_id, "
            "created_at, updated_at, revision, document) "
            "VALUES ('r1', ?, 'approved', NULL, 'alice', 0, 0, 0, ?)",
            (request.state_id, registry.dumps(registry.unstructure_request(request))),
        )
    finally:
        raw.close()
    async with await SQLiteStore.open(path, registry=registry) as store:
        assert store.schema_version == SCHEMA_VERSION == 8
        # Version 3 on top: the request's mutation type is backfilled and it is reservable.
        typed = await store.requests.list(RequestQuery(mutation_types={request.mutation_type}))
        assert [r.request_id for r in typed.items] == ["r1"]
        now = request.created_at
        (reserved,) = await store.requests.reserve(owner="w", limit=5, now=now, until=now)
        assert reserved.request_id == "r1"
        logged = await store.decisions.for_request("r1")
        assert [(d.sequence, d.reason) for d in logged] == [(1, "a"), (2, "b"), (3, "c")]
        assert [(d.sequence, d.reason) for d in await store.decisions.for_request("r2")] == [
            (1, "x")
        ]
        # The upgraded log is idempotent by sequence number like a new one.
        await store.decisions.append("r1", [attrs.evolve(decision, sequence=2, reason="again")])
        assert len(await store.decisions.for_request("r1")) == 3


# -- issue 11: unreadable stored data ---------------------------------------------------------


async def test_a_request_document_under_another_id_is_stored_data_error(tmp_path: Path) -> None:
    async with await open_file(tmp_path) as store:
        await store.requests.create(sample_request("r1"))
        await store.requests.create(sample_request("r2"))
        raw = sqlite3.connect(tmp_path / "gov.db")
        with raw:
            raw.execute(
                "UPDATE requests SET document = "
                "(SELECT document FROM requests WHERE request_id = 'r2') WHERE request_id = 'r1'"
            )
        raw.close()
        before = snapshot(tmp_path / "gov.db")
        with pytest.raises(StoredDataError) as caught:
            await store.requests.get("r1")
        assert (caught.value.key, caught.value.field) == ("r1", "request_id")
        assert "'r2'" in str(caught.value)
        # A listing sets it aside instead of raising, and changes nothing but the quarantine.
        assert [r.request_id for r in (await store.requests.list()).items] == ["r2"]
        (entry,) = await store.requests.quarantined()
        assert (entry.request_id, entry.field) == ("r1", "request_id")
        assert snapshot(tmp_path / "gov.db") == before


@pytest.mark.parametrize("version", ["abc", "", "01", "-1", "1.5"])
async def test_a_state_version_that_is_not_a_counter_is_stored_data_error(
    tmp_path: Path, version: str
) -> None:
    async with await open_file(tmp_path) as store:
        await store.states.put("s:1", SampleState(), request_id="r1")
        raw = sqlite3.connect(tmp_path / "gov.db")
        with raw:
            raw.execute("UPDATE states SET version = ?", (version,))
            raw.execute("UPDATE state_versions SET version = ?", (version,))
        raw.close()
        before = snapshot(tmp_path / "gov.db")
        with pytest.raises(StoredDataError) as caught:
            await store.states.get("s:1")
        assert (caught.value.key, caught.value.field) == ("s:1", "version")
        with pytest.raises(StoredDataError):
            await store.states.version_by_request("s:1", "r1")
        with pytest.raises(StoredDataError):
            await store.states.put("s:1", SampleState(), expected_version=version)
        assert snapshot(tmp_path / "gov.db") == before


async def test_a_second_version_by_the_same_request_writes_nothing(tmp_path: Path) -> None:
    async with await open_file(tmp_path) as store:
        await store.states.put("s:1", SampleState(value=1), request_id="r1")
        before = snapshot(tmp_path / "gov.db")
        with pytest.raises(ConcurrencyError, match="at most one version"):
            await store.states.put(
                "s:1", SampleState(value=2), expected_version="1", request_id="r1"
            )
        assert snapshot(tmp_path / "gov.db") == before


async def test_creating_an_existing_request_writes_nothing(tmp_path: Path) -> None:
    async with await open_file(tmp_path) as store:
        await store.requests.create(sample_request("r1"))
        before = snapshot(tmp_path / "gov.db")
        with pytest.raises(RequestAlreadyExistsError):
            await store.requests.create(sample_request("r1", metadata={"x": 1}))
        assert snapshot(tmp_path / "gov.db") == before


# -- options ----------------------------------------------------------------------------------


def pragma(path: Path, store: SQLiteStore, name: str) -> Any:
    writer = store._db._writer
    assert writer is not None
    return writer.execute(f"PRAGMA {name}").fetchone()[0]


@pytest.mark.parametrize(
    ("url_query", "keywords", "expected"),
    [
        ("", {}, SQLiteOptions("FULL", 5.0, 4)),
        ("?synchronous=normal&busy_timeout=0.5&pool_size=2", {}, SQLiteOptions("NORMAL", 0.5, 2)),
        (
            "",
            {"synchronous": "NORMAL", "busy_timeout": 2, "pool_size": 8},
            SQLiteOptions("NORMAL", 2.0, 8),
        ),
        (
            "?synchronous=NORMAL",
            {"synchronous": "normal", "pool_size": 3},
            SQLiteOptions("NORMAL", 5.0, 3),
        ),
    ],
)
async def test_options_reach_the_database_from_keywords_and_the_url(
    tmp_path: Path, url_query: str, keywords: dict[str, Any], expected: SQLiteOptions
) -> None:
    url = f"sqlite:///{tmp_path}/gov.db{url_query}"
    store = await open_store(url, registry=sample_registry(), **keywords)
    assert isinstance(store, SQLiteStore)
    async with store:
        assert store.options == expected
        assert store.path == f"{tmp_path}/gov.db"
        levels = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}
        assert pragma(tmp_path, store, "synchronous") == levels[expected.synchronous]
        assert pragma(tmp_path, store, "busy_timeout") == int(expected.busy_timeout * 1000)
        assert await store.server_time() is None


@pytest.mark.parametrize(
    ("url_query", "keywords", "message"),
    [
        ("?mode=ro", {}, "unknown SQLite URL query parameter 'mode'"),
        ("", {"poolsize": 3}, "unknown SQLite keyword option 'poolsize'"),
        ("?synchronous=SOMETIMES", {}, "synchronous must be one of"),
        ("", {"synchronous": 2}, "synchronous must be one of"),
        ("?busy_timeout=soon", {}, "busy_timeout must be a number"),
        ("", {"busy_timeout": float("nan")}, "busy_timeout must be a finite number"),
        ("", {"busy_timeout": -1}, "busy_timeout must be a finite number"),
        ("", {"busy_timeout": True}, "busy_timeout must be a number"),
        ("", {"busy_timeout": 30 * 86400}, "busy_timeout must be at most"),
        ("?busy_timeout=2147483.648", {}, "busy_timeout must be at most"),
        ("?pool_size=0", {}, "pool_size must be >= 1"),
        ("", {"pool_size": 2.5}, "pool_size must be an integer"),
        ("?pool_size=2&pool_size=3", {}, "names 'pool_size' twice"),
        ("?pool_size=2", {"pool_size": 3}, "name it once"),
        ("?pool_size", {}, "malformed query"),
    ],
)
async def test_bad_options_are_refused_before_the_file_is_created(
    tmp_path: Path, url_query: str, keywords: dict[str, Any], message: str
) -> None:
    url = f"sqlite:///{tmp_path}/gov.db{url_query}"
    with pytest.raises(ConfigurationError, match=message):
        await open_store(url, registry=sample_registry(), **keywords)
    assert files(tmp_path) == []


@pytest.mark.parametrize("opener", ["open_store", "Governance.open"])
@pytest.mark.parametrize(
    ("option", "in_url", "keyword"),
    [
        ("synchronous", "NORMAL", "FULL"),
        ("busy_timeout", "2", 3),
        ("busy_timeout", "2", 2.5),
        ("pool_size", "4", 8),
    ],
)
async def test_an_option_named_twice_with_different_values_is_refused(
    tmp_path: Path, opener: str, option: str, in_url: str, keyword: Any
) -> None:
    """The same rule as PostgreSQL and Redis: the message names the option and both
    values, and nothing is opened."""
    url = f"sqlite:///{tmp_path}/gov.db?{option}={in_url}"
    with pytest.raises(ConfigurationError) as caught:
        await open_through(opener, url, **{option: keyword})
    message = str(caught.value)
    assert f"SQLite option {option!r}" in message
    assert f"{in_url!r} in the URL" in message
    assert f"{keyword!r} as a keyword argument" in message
    assert files(tmp_path) == []


@pytest.mark.parametrize(
    ("option", "in_url", "keyword"),
    [
        ("synchronous", "normal", "NORMAL"),
        ("busy_timeout", "2", 2.0),
        ("busy_timeout", "0.5", 0.5),
        ("pool_size", "8", 8),
    ],
)
async def test_an_option_named_twice_with_the_same_value_is_accepted(
    tmp_path: Path, option: str, in_url: str, keyword: Any
) -> None:
    """Values are compared once typed: ``?pool_size=8`` and ``pool_size=8`` agree."""
    url = f"sqlite:///{tmp_path}/gov.db?{option}={in_url}"
    store = await open_store(url, registry=sample_registry(), **{option: keyword})
    assert isinstance(store, SQLiteStore)
    async with store:
        assert store.options == SQLiteOptions.build({option: in_url}, {})
        assert store.options == SQLiteOptions.build({}, {option: keyword})


@pytest.mark.parametrize(
    "url", ["sqlite:/x.db", "sqlite://host/x.db", "sqlite:///x.db#frag", "", "   "]
)
async def test_malformed_urls_are_configuration_errors_naming_the_forms(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(ConfigurationError, match=r"sqlite:///relative/path\.db"):
        await SQLiteStore.open(url, registry=sample_registry())
    assert files(tmp_path) == []


async def test_a_claim_skips_its_own_flush_on_its_own_connection(tmp_path: Path) -> None:
    """A claim commits on the claiming connection (NORMAL, no checkpoints), in one
    transaction of three statements and no pragma; the writer stays FULL."""
    async with await open_file(tmp_path) as store:
        executed: list[str] = []
        writer = store._db._writer
        assert writer is not None
        writer.set_trace_callback(executed.append)
        (created,) = await store.committer.commit(
            GovernedCommit(
                (RequestWrite.create(sample_request("r1", status=RequestStatus.APPROVED)),)
            )
        )
        claimed = decided(created, RequestStatus.EXECUTING, LifecycleDecision.CLAIMED)
        executed.clear()
        await store.committer.commit(GovernedCommit((RequestWrite.update(created, claimed),)))
        writer.set_trace_callback(None)
        assert executed == []
        claimer = store._db._claimer
        assert claimer is not None
        assert claimer.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert claimer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert claimer.execute("PRAGMA busy_timeout").fetchone()[0] == 0
        assert pragma(tmp_path, store, "synchronous") == 2
        assert await store.requests.get("r1") == attrs.evolve(claimed, revision=1)


async def test_a_fault_at_any_statement_of_a_claim_writes_nothing(tmp_path: Path) -> None:
    async with await open_file(tmp_path) as store:
        await store.states.put(SAMPLE_STATE_ID, SampleState("sample", 1))
        (created,) = await store.committer.commit(
            GovernedCommit((RequestWrite.create(sample_request("r1", status=APPROVED)),))
        )
        claimed = decided(created, RequestStatus.EXECUTING, LifecycleDecision.CLAIMED)
        database = store._db
        database._claimer = database._connect(reader=False, wait=False, claimer=True)
        read: list[Any] = []

        async def claim(store: SQLiteStore) -> Any:
            result = await store.committer.commit_reading(
                GovernedCommit((RequestWrite.update(created, claimed),)), SAMPLE_STATE_ID
            )
            read.append(result)
            return result

        faults = await fail_at_each_statement(tmp_path, store, claim, "_claimer")
        assert faults >= 4  # begin, update, decisions, select state, commit
        ((stored,), state) = read[0]
        assert stored == await store.requests.get("r1")
        assert state == await store.states.get(SAMPLE_STATE_ID)
        await log_matches(store, "r1")


async def test_no_relaxed_claims_when_commits_do_not_flush(tmp_path: Path) -> None:
    async with await open_file(tmp_path, synchronous="NORMAL") as store:
        assert not store._db.relax_claims


# -- reads are never starved by writers -------------------------------------------------------


async def test_queued_writers_do_not_starve_a_read(tmp_path: Path) -> None:
    """Writers waiting for another process's lock hold no thread a read needs."""
    async with await open_file(tmp_path, busy_timeout=3) as store:
        await store.states.put("s:0", SampleState())
        blocker = sqlite3.connect(tmp_path / "gov.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            async with anyio.create_task_group() as group:

                async def write(n: int) -> None:
                    with pytest.raises(StoreUnavailableError):
                        await store.states.put(f"s:{n + 1}", SampleState())

                for n in range(60):  # more than anyio's default 40 threads
                    group.start_soon(write, n)
                await anyio.sleep(0.2)
                started = time.monotonic()
                with anyio.fail_after(2):
                    current = await store.states.get("s:0")
                assert current is not None
                assert time.monotonic() - started < 1.0
                group.cancel_scope.cancel()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()


async def test_a_claim_waits_for_another_process_holding_the_lock(tmp_path: Path) -> None:
    """A claim tried at once on a locked database falls back to waiting, then lands."""
    async with await open_file(tmp_path, busy_timeout=5) as store:
        (created,) = await store.committer.commit(
            GovernedCommit((RequestWrite.create(sample_request("r1", status=APPROVED)),))
        )
        claimed = decided(created, RequestStatus.EXECUTING, LifecycleDecision.CLAIMED)
        blocker = sqlite3.connect(tmp_path / "gov.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        landed: list[MutationRequest] = []

        async def claim() -> None:
            landed.extend(
                await store.committer.commit(
                    GovernedCommit((RequestWrite.update(created, claimed),))
                )
            )

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(claim)
                await anyio.sleep(0.3)
                assert landed == []
                blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        assert [r.status for r in landed] == [RequestStatus.EXECUTING]
        assert await store.requests.get("r1") == landed[0]
        await log_matches(store, "r1")
        assert pragma(tmp_path, store, "busy_timeout") == 5000
        assert pragma(tmp_path, store, "synchronous") == 2


async def test_governance_open_passes_options_through(tmp_path: Path) -> None:
    from mutator_governance import Governance

    url = f"sqlite:///{tmp_path}/gov.db"
    with pytest.raises(ConfigurationError, match="synchronous must be one of"):
        async with Governance.open(url, registry=sample_registry(), synchronous="SOMETIMES"):
            pass
    assert files(tmp_path) == []
    async with Governance.open(
        url, registry=sample_registry(), synchronous="NORMAL", busy_timeout=1
    ) as gov:
        await gov.states.put("s:1", SampleState())
    raw = sqlite3.connect(tmp_path / "gov.db")
    try:
        assert raw.execute("SELECT version FROM states").fetchall() == [("1",)]
    finally:
        raw.close()


async def test_an_update_that_changes_a_column_requests_never_change_lands(
    tmp_path: Path,
) -> None:
    """Updates set only the columns that change when the others are as stored; one that
    changes them too (not done by governance, allowed by the store) still lands whole."""
    async with await open_file(tmp_path) as store:
        created = await store.requests.create(sample_request("r1"))
        moved = attrs.evolve(created, state_id="elsewhere")
        stored = await store.requests.replace(moved, expected_revision=0)
        assert await store.requests.get("r1") == stored
        assert [r.request_id for r in await store.requests.by_state("elsewhere")] == ["r1"]
        assert await store.requests.by_state(created.state_id) == []
        with pytest.raises(RequestConcurrencyError):
            await store.requests.replace(moved, expected_revision=0)
        with pytest.raises(RequestNotFoundError):
            await store.requests.replace(sample_request("r2"), expected_revision=0)
