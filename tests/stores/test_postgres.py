"""The PostgreSQL store: contract suites, comparison with the reference, governance on top.

Every test uses its own schema (``t_<uuid>``) and drops it afterwards. The store is asyncio
only, so this module pins ``anyio_backend`` to asyncio. The server comes from the
``postgres_url`` fixture (skips, or fails under ``MUTATOR_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from psycopg_pool import AsyncConnectionPool

from mutator import (
    ConcurrencyError,
    ConfigurationError,
    InMemoryAuditSink,
    InMemoryHistoryStore,
    MutationEngine,
)
from mutator_governance import (
    DecisionHistory,
    Governance,
    GovernanceStore,
    GovernedCommit,
    MutationRegistry,
    MutationRequest,
    PendingReason,
    RequestConcurrencyError,
    RequestNotFoundError,
    RequestStatus,
    RequestStore,
    RequestWrite,
    StateStore,
    StateWrite,
    StoredDataError,
    StoreUnavailableError,
)
from mutator_governance.stores import open_store
from mutator_governance.stores._postgres import SCHEMA_VERSION, PostgresStore, split_url
from mutator_governance.stores._postgres_schema import MIGRATIONS
from mutator_governance.testing import (
    DecisionHistoryContract,
    GovernanceStoreContract,
    RequestStoreContract,
    SampleState,
    StateStoreContract,
    assert_identical,
    make_store_comparison,
    sample_decision,
    sample_registry,
    sample_request,
)

from . import pg_race_worker
from .pg_domain import Add, Counters, RequireCarol, registry, user

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]

ALL_VERSIONS = [(version,) for version in range(1, SCHEMA_VERSION + 1)]


@pytest.fixture
def anyio_backend() -> str:
    """psycopg's async driver runs on asyncio only."""
    return "asyncio"


def new_schema() -> str:
    return f"t_{uuid.uuid4().hex}"


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


async def drop_schema(url: str, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def execute_sql(url: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(sql, params)
        return await cursor.fetchall() if cursor.description else []


async def migrated_to(url: str, schema: str, version: int) -> str:
    """Create ``schema`` as a release at schema ``version`` left it; its quoted name."""
    s = f'"{schema}"'
    await execute_sql(url, f"CREATE SCHEMA {s}")
    await execute_sql(
        url,
        f"CREATE TABLE {s}.schema_version (version integer PRIMARY KEY, "
        "applied_at timestamptz NOT NULL DEFAULT now())",
    )
    for applied in range(1, version + 1):
        for statement in MIGRATIONS[applied - 1]:
            await execute_sql(url, statement.format(s=s, channel="unused"))
        await execute_sql(url, f"INSERT INTO {s}.schema_version VALUES (%s)", (applied,))
    return s


async def insert_request_row(
    url: str, s: str, registry: MutationRegistry, request: MutationRequest
) -> None:
    """Write ``request`` as a row behind the store (schema version 3 or later)."""
    await execute_sql(
        url,
        f"INSERT INTO {s}.requests (request_id, state_id, status, pending_reason, actor_id, "
        "created_at, updated_at, revision, document, mutation_type) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, 0, %s, %s)",
        (
            request.request_id,
            request.state_id,
            request.status.value,
            None if request.pending_reason is None else request.pending_reason.value,
            request.context.actor_id,
            request.created_at,
            request.updated_at,
            registry.dumps(registry.unstructure_request(request)),
            request.mutation_type,
        ),
    )


@pytest.fixture
async def schema(postgres_url: str) -> AsyncIterator[str]:
    """A unique schema name, dropped after the test."""
    name = new_schema()
    try:
        yield name
    finally:
        await drop_schema(postgres_url, name)


@pytest.fixture
async def store(postgres_url: str, schema: str) -> AsyncIterator[PostgresStore]:
    """A store on a fresh schema with the sample registry."""
    opened = await PostgresStore.open(postgres_url, registry=sample_registry(), schema=schema)
    try:
        yield opened
    finally:
        await opened.aclose()


# -- contract suites -------------------------------------------------------------------------


class PostgresHooks:
    """Opens one store per contract test on its own schema; closing drops the schema."""

    @pytest.fixture(autouse=True)
    def _server(self, postgres_url: str) -> Iterator[None]:
        self.url = postgres_url
        self.opened: dict[int, tuple[PostgresStore, str]] = {}
        yield
        assert not self.opened, "a store was not closed"

    async def open_store(self) -> PostgresStore:
        name = new_schema()
        return await PostgresStore.open(self.url, registry=sample_registry(), schema=name)

    def keep(self, sub: Any, opened: PostgresStore) -> Any:
        self.opened[id(sub)] = (opened, opened.schema)
        return sub

    async def release(self, sub: Any) -> None:
        opened, name = self.opened.pop(id(sub))
        await opened.aclose()
        await drop_schema(self.url, name)


class TestPostgresRequestStore(PostgresHooks, RequestStoreContract):
    async def make_request_store(self) -> RequestStore:
        opened = await self.open_store()
        return self.keep(opened.requests, opened)  # type: ignore[no-any-return]

    async def close_request_store(self, store: RequestStore) -> None:
        await self.release(store)


class TestPostgresDecisionHistory(PostgresHooks, DecisionHistoryContract):
    async def make_decision_history(self) -> DecisionHistory:
        opened = await self.open_store()
        return self.keep(opened.decisions, opened)  # type: ignore[no-any-return]

    async def close_decision_history(self, history: DecisionHistory) -> None:
        await self.release(history)


class TestPostgresGovernanceStore(PostgresHooks, GovernanceStoreContract):
    async def make_store(self) -> GovernanceStore:
        opened = await self.open_store()
        return self.keep(opened, opened)  # type: ignore[no-any-return]

    async def close_store(self, store: GovernanceStore) -> None:
        await self.release(store)


class TestPostgresStateStore(PostgresHooks, StateStoreContract):
    async def make_state_store(self) -> StateStore:
        opened = await self.open_store()
        return self.keep(opened.states, opened)  # type: ignore[no-any-return]

    async def close_state_store(self, store: StateStore) -> None:
        await self.release(store)


# -- stateful comparison with the in-memory reference ----------------------------------------


def test_comparison_with_in_memory_reference(postgres_url: str) -> None:
    opened: dict[int, PostgresStore] = {}

    async def factory() -> RequestStore:
        made = await PostgresStore.open(
            postgres_url, registry=sample_registry(), schema=new_schema(), min_size=1, max_size=2
        )
        opened[id(made.requests)] = made
        return made.requests

    async def close(requests: RequestStore) -> None:
        made = opened.pop(id(requests))
        await made.aclose()
        await drop_schema(postgres_url, made.schema)

    machine = make_store_comparison(factory, close=close, name="PostgresComparison")
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=20,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    assert not opened


# -- opening, schema, errors -----------------------------------------------------------------


@pytest.mark.anyio
async def test_open_store_dispatches_with_schema_parameter(postgres_url: str, schema: str) -> None:
    opened = await open_store(with_schema(postgres_url, schema), registry=sample_registry())
    try:
        assert isinstance(opened, PostgresStore)
        assert opened.schema == schema
        await opened.requests.create(sample_request("req-1"))
    finally:
        await opened.aclose()
    rows = await execute_sql(postgres_url, f'SELECT request_id FROM "{schema}".requests')
    assert rows == [("req-1",)]
    versions = await execute_sql(postgres_url, f'SELECT version FROM "{schema}".schema_version')
    assert versions == ALL_VERSIONS


def test_split_url_removes_only_the_schema() -> None:
    assert split_url("postgresql://u:p@h:5/db?schema=abc&sslmode=disable") == (
        "postgresql://u:p@h:5/db?sslmode=disable",
        "abc",
    )
    assert split_url("postgresql://h/db") == ("postgresql://h/db", None)


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["1abc", "a-b", 'x"; DROP TABLE y; --', "a" * 64])
async def test_schema_must_be_an_identifier(postgres_url: str, name: str) -> None:
    with pytest.raises(ValueError, match="identifier"):
        await PostgresStore.open(postgres_url, registry=sample_registry(), schema=name)


@pytest.mark.anyio
async def test_unreachable_server_raises_store_unavailable(postgres_url: str) -> None:
    del postgres_url  # only to skip without a server
    url = "postgresql://app:s3cret-pw@127.0.0.1:1/test"
    with pytest.raises(StoreUnavailableError) as caught:
        await PostgresStore.open(url, registry=sample_registry(), connect_timeout=2)
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert caught.value.url == "postgresql://app:***@127.0.0.1:1/test"
    assert "127.0.0.1:1" in message


@pytest.mark.anyio
async def test_open_cancelled_while_the_pool_opens_closes_the_pool(
    postgres_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open cancelled (a timeout around it) leaves no pool task and no connection."""
    pools: list[AsyncConnectionPool[Any]] = []
    opened = anyio.Event()
    open_pool = AsyncConnectionPool.open

    async def open_then_wait(pool: AsyncConnectionPool[Any], *args: Any, **kwargs: Any) -> None:
        await open_pool(pool, *args, **kwargs)
        pools.append(pool)
        opened.set()
        await anyio.sleep_forever()

    monkeypatch.setattr(AsyncConnectionPool, "open", open_then_wait)
    before = set(asyncio.all_tasks())
    async with anyio.create_task_group() as group:
        url = with_schema(postgres_url, schema)
        group.start_soon(functools.partial(open_store, url, registry=sample_registry()))
        await opened.wait()
        group.cancel_scope.cancel()
    assert [pool.closed for pool in pools] == [True]
    assert set(asyncio.all_tasks()) - before == set()


@pytest.mark.anyio
async def test_closed_store_raises_store_unavailable(store: PostgresStore) -> None:
    await store.aclose()
    with pytest.raises(StoreUnavailableError, match="closed"):
        await store.requests.get("req-1")


@pytest.mark.anyio
async def test_newer_schema_version_is_refused(postgres_url: str, schema: str) -> None:
    first = await PostgresStore.open(postgres_url, registry=sample_registry(), schema=schema)
    await first.aclose()
    await execute_sql(postgres_url, f'INSERT INTO "{schema}".schema_version VALUES (99)')
    with pytest.raises(StoredDataError) as caught:
        await PostgresStore.open(postgres_url, registry=sample_registry(), schema=schema)
    message = str(caught.value)
    assert "version 99" in message
    assert f"version {SCHEMA_VERSION}" in message
    assert caught.value.backend == "postgresql"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "statements",
    [
        ["CREATE TABLE {s}.requests (id integer, title text)"],
        ["CREATE TABLE {s}.users (id integer)", "CREATE INDEX audit_state ON {s}.users (id)"],
        ["CREATE TABLE {s}.schema_version (name text)"],
        [
            "CREATE TABLE {s}.schema_version (version text PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())",
            "INSERT INTO {s}.schema_version (version) VALUES ('1.0')",
        ],
        ["CREATE VIEW {s}.schema_version AS SELECT 1 AS version, now() AS applied_at"],
    ],
    ids=["requests-table", "store-index-name", "other-table", "text-version", "view"],
)
async def test_another_applications_relations_under_the_stores_names_are_refused_untouched(
    postgres_url: str, schema: str, statements: list[str]
) -> None:
    """A schema whose relations the store would collide with is StoredDataError (not an
    outage to retry, nor a bare ValueError), and nothing is created in it."""
    s = f'"{schema}"'
    await execute_sql(postgres_url, f"CREATE SCHEMA {s}")
    for statement in statements:
        await execute_sql(postgres_url, statement.format(s=s))
    listing = (
        "SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE nspname = %s ORDER BY 1"
    )
    before = await execute_sql(postgres_url, listing, (schema,))
    with pytest.raises(StoredDataError, match="another application's schema") as caught:
        await PostgresStore.open(postgres_url, registry=sample_registry(), schema=schema)
    assert caught.value.backend == "postgresql"
    assert await execute_sql(postgres_url, listing, (schema,)) == before


@pytest.mark.anyio
async def test_concurrent_first_time_creation(postgres_url: str, schema: str) -> None:
    opened: list[PostgresStore] = []

    async def open_one() -> None:
        opened.append(
            await PostgresStore.open(
                postgres_url, registry=sample_registry(), schema=schema, min_size=1, max_size=1
            )
        )

    try:
        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(open_one)
        await opened[0].requests.create(sample_request("req-1"))
        for each in opened:
            assert await each.requests.get("req-1") is not None
    finally:
        for each in opened:
            await each.aclose()
    versions = await execute_sql(postgres_url, f'SELECT version FROM "{schema}".schema_version')
    assert versions == ALL_VERSIONS


def test_opening_under_trio_is_refused_as_asyncio_only(postgres_url: str) -> None:
    name = new_schema()

    async def attempt() -> None:
        await PostgresStore.open(postgres_url, registry=sample_registry(), schema=name)

    with pytest.raises(ConfigurationError, match="asyncio only"):
        anyio.run(attempt, backend="trio")
    rows = anyio.run(
        execute_sql,
        postgres_url,
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s",
        (name,),
    )
    assert rows == [(0,)], "nothing was created"


@pytest.mark.anyio
async def test_values_postgres_refuses_raise_value_error(store: PostgresStore) -> None:
    with pytest.raises(ValueError, match="refused"):
        await store.requests.create(sample_request("req-1", state_id="s\x00"))
    assert await store.requests.get("req-1") is None


# -- unreadable data -------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("document", ["not json {", '{"request_id": "req-1"}', "[]"])
async def test_unreadable_request_raises_by_id_and_is_skipped_by_listings(
    postgres_url: str, store: PostgresStore, document: str
) -> None:
    await store.requests.create(sample_request("req-1"))
    await execute_sql(
        postgres_url, f'UPDATE "{store.schema}".requests SET document = %s', (document,)
    )
    with pytest.raises(StoredDataError) as caught:
        await store.requests.get("req-1")
    assert caught.value.backend == "postgresql"
    assert caught.value.key == "req-1"
    assert caught.value.field is not None
    assert caught.value.field.startswith("requests.document")
    assert await store.requests.by_state("sample:1") == []
    assert (await store.requests.list()).items == ()
    assert await store.requests.pending() == []
    (entry,) = await store.requests.quarantined()
    assert (entry.request_id, entry.backend) == ("req-1", "postgresql")
    assert entry.field is not None
    assert entry.field.startswith("requests.document")


@pytest.mark.anyio
async def test_unreadable_state_and_decision(postgres_url: str, store: PostgresStore) -> None:
    await store.states.put("s:1", SampleState())
    await store.decisions.append("req-1", [attrs.evolve(sample_decision(), sequence=1)])
    s = store.schema
    await execute_sql(postgres_url, f'UPDATE "{s}".states SET document = \'{{"$type": 3}}\'')
    await execute_sql(postgres_url, f"UPDATE \"{s}\".decisions SET document = 'nope'")
    with pytest.raises(StoredDataError) as state_error:
        await store.states.get("s:1")
    assert (state_error.value.key, state_error.value.field) == ("s:1", "states.document")
    with pytest.raises(StoredDataError) as decision_error:
        await store.decisions.for_request("req-1")
    assert decision_error.value.field == "decisions.document"
    assert decision_error.value.request_id == "req-1"
    with pytest.raises(StoredDataError):
        await store.decisions.recent()


# -- audit and history -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_audit_and_history_round_trip(postgres_url: str, schema: str) -> None:
    reg = registry()
    memory_audit, memory_history = InMemoryAuditSink(), InMemoryHistoryStore()
    engine = MutationEngine(audit=memory_audit, history=memory_history)
    state: Any = Counters({"a": 1})
    base = datetime(2024, 1, 1, tzinfo=UTC)
    for index in range(4):
        state_id = f"s:{index % 2}"
        result = await engine.execute(
            Add("a", index),
            state,
            state_id=state_id,
            context=attrs.evolve(user("alice"), timestamp=base + timedelta(minutes=index)),
        )
        state = result.new_state
    opened = await PostgresStore.open(postgres_url, registry=reg, schema=schema)
    try:
        for audit_entry in memory_audit.all():
            await opened.audit.record(audit_entry)
        for state_id in memory_history.state_ids():
            for history_entry in (await memory_history.history(state_id)).entries:
                await opened.history.append(history_entry)
        assert_identical(list(await memory_audit.entries()), list(await opened.audit.entries()))
        assert_identical(
            list(await memory_audit.entries("s:1")), list(await opened.audit.entries("s:1"))
        )
        entries = memory_audit.all()
        since, until = entries[1].executed_at, entries[2].executed_at
        assert_identical(
            list(await memory_audit.entries(since=since, until=until)),
            list(await opened.audit.entries(since=since, until=until)),
        )
        for state_id in ("s:0", "s:1", "missing"):
            expected = await memory_history.history(state_id)
            actual = await opened.history.history(state_id)
            assert actual.state_id == state_id
            assert_identical(expected.entries, actual.entries)
            # The converter leaves the (eq=False) mutation out of stored history entries.
            assert all(e.mutation is None for e in actual.entries)
            assert_identical(
                list(await memory_history.recent(state_id, 1)),
                list(await opened.history.recent(state_id, 1)),
            )
            if expected.entries:
                first = expected.entries[0].executed_at
                assert_identical(
                    list(await memory_history.between(state_id, first, first)),
                    list(await opened.history.between(state_id, first, first)),
                )
        assert list(await opened.history.recent("s:0", 0)) == []
        with pytest.raises(ValueError):
            await opened.history.recent("s:0", -1)
    finally:
        await opened.aclose()


# -- the committer ---------------------------------------------------------------------------


async def _two_requests(store: PostgresStore) -> tuple[Any, Any, str]:
    one = await store.requests.create(sample_request("req-1", status=RequestStatus.EXECUTING))
    two = await store.requests.create(sample_request("req-2", status=RequestStatus.EXECUTED))
    version = await store.states.put("s:1", SampleState(value=1))
    return one, two, version


DECISION = attrs.evolve(sample_decision(timestamp=datetime(2024, 6, 1, tzinfo=UTC)), sequence=1)


def _commit(one: Any, two: Any, version: str | None, *, rev_two: int = 0) -> GovernedCommit:
    executed = attrs.evolve(one, status=RequestStatus.EXECUTED)
    return GovernedCommit(
        (
            RequestWrite(executed, 0, (DECISION,)),
            RequestWrite(attrs.evolve(two, metadata={"linked": True}), rev_two, ()),
        ),
        StateWrite("s:1", SampleState(value=2), version, "2" if version == "1" else "1", "req-1"),
        (),
    )


@pytest.mark.anyio
async def test_commit_writes_everything(store: PostgresStore) -> None:
    one, two, version = await _two_requests(store)
    written = await store.committer.commit(_commit(one, two, version))
    assert [r.revision for r in written] == [1, 1]
    assert written[0].status is RequestStatus.EXECUTED
    assert await store.requests.get("req-1") == written[0]
    assert await store.requests.get("req-2") == written[1]
    current = await store.states.get("s:1")
    assert current is not None
    assert (current.state, current.version, current.request_id) == (
        SampleState(value=2),
        "2",
        "req-1",
    )
    assert await store.states.version_by_request("s:1", "req-1") == "2"
    assert list(await store.decisions.for_request("req-1")) == [DECISION]


async def _unchanged(store: PostgresStore, one: Any, two: Any, version: str) -> None:
    assert await store.requests.get("req-1") == one
    assert await store.requests.get("req-2") == two
    current = await store.states.get("s:1")
    assert current is not None
    assert (current.state, current.version) == (SampleState(value=1), version)
    assert await store.states.version_by_request("s:1", "req-1") is None
    assert list(await store.decisions.for_request("req-1")) == []


@pytest.mark.anyio
async def test_commit_with_stale_revision_writes_nothing(store: PostgresStore) -> None:
    one, two, version = await _two_requests(store)
    with pytest.raises(RequestConcurrencyError) as caught:
        await store.committer.commit(_commit(one, two, version, rev_two=3))
    assert (caught.value.request_id, caught.value.expected_revision) == ("req-2", 3)
    assert caught.value.actual_revision == 0
    await _unchanged(store, one, two, version)


@pytest.mark.anyio
async def test_commit_with_unknown_request_writes_nothing(store: PostgresStore) -> None:
    one, two, version = await _two_requests(store)
    ghost = sample_request("ghost")
    with pytest.raises(RequestNotFoundError):
        await store.committer.commit(_commit(one, ghost, version))
    await _unchanged(store, one, two, version)


@pytest.mark.anyio
async def test_commit_with_moved_state_writes_nothing(store: PostgresStore) -> None:
    one, two, version = await _two_requests(store)
    moved = await store.states.put("s:1", SampleState(value=1), expected_version=version)
    with pytest.raises(ConcurrencyError) as caught:
        await store.committer.commit(_commit(one, two, version))
    assert (caught.value.expected, caught.value.actual) == (version, moved)
    await _unchanged(store, one, two, moved)


@pytest.mark.anyio
async def test_lost_connection_mid_commit_rolls_back(
    postgres_url: str, store: PostgresStore
) -> None:
    one, two, version = await _two_requests(store)
    s = store.schema
    # The last write of the transaction kills its own server session.
    await execute_sql(
        postgres_url,
        f"""CREATE FUNCTION "{s}".die() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$""",
    )
    await execute_sql(
        postgres_url,
        f'CREATE TRIGGER die BEFORE INSERT ON "{s}".history '
        f'FOR EACH ROW EXECUTE FUNCTION "{s}".die()',
    )
    commit = attrs.evolve(
        _commit(one, two, version),
        history=(await _history_entry(),),
    )
    with pytest.raises(StoreUnavailableError) as caught:
        await store.committer.commit(commit)
    assert "postgresql://" in str(caught.value)
    await execute_sql(postgres_url, f'DROP TRIGGER die ON "{s}".history')
    await _unchanged(store, one, two, version)
    # The pool replaced the dead connection: the store keeps working.
    written = await store.committer.commit(commit)
    assert written[0].revision == 1
    assert len(await store.history.history("s:1")) == 1


async def _history_entry() -> Any:
    history = InMemoryHistoryStore()
    engine = MutationEngine(history=history)
    await engine.execute(Add("a", 1), Counters(), state_id="s:1", context=user("alice"))
    return (await history.history("s:1")).entries[0]


# -- governance end to end -------------------------------------------------------------------


@pytest.mark.anyio
async def test_governance_end_to_end(postgres_url: str, schema: str) -> None:
    url = with_schema(postgres_url, schema)
    async with Governance.open(url, registry=registry()) as gov:
        gov.engine.register_policy(RequireCarol())
        await gov.states.put("acme", Counters({"bob": 1}))
        submitted = await gov.submit(Add("bob", 10), state_id="acme", context=user("alice"))
        assert submitted.status is RequestStatus.PENDING
        assert submitted.pending_reason is PendingReason.APPROVAL
        assert [r.request_id for r in await gov.requests.pending(PendingReason.APPROVAL)] == [
            submitted.request_id
        ]
        approved = await gov.approve(submitted.request_id, context=user("carol"))
        assert approved.status is RequestStatus.APPROVED
        outcome = await gov.execute(submitted.request_id)
        assert outcome.executed
        assert outcome.request.status is RequestStatus.EXECUTED
        current = await gov.states.get("acme")
        assert current is not None
        assert current.state == Counters({"bob": 11})
        assert current.version == "2"
        assert current.request_id == submitted.request_id
        history = await gov.engine.history_store.history("acme")
        assert len(history) == 1
        assert history.entries[0].context.correlation_id == submitted.request_id
        audit = await gov.engine.audit.entries("acme")
        assert any(entry.succeeded for entry in audit)
        stored = await gov.requests.get(submitted.request_id)
        assert stored == outcome.request
        logged = await gov.decisions.for_request(submitted.request_id)
        assert list(logged) == list(stored.decisions)


@pytest.mark.anyio
async def test_restart_loses_nothing(postgres_url: str, schema: str) -> None:
    url = with_schema(postgres_url, schema)

    async with Governance.open(url, registry=registry()) as gov:
        gov.engine.register_policy(RequireCarol())
        await gov.states.put("acme", Counters({"bob": 1}))
        submitted = await gov.submit(Add("bob", 5), state_id="acme", context=user("alice"))
    request_id = submitted.request_id

    async with Governance.open(url, registry=registry()) as gov:
        assert await gov.requests.get(request_id) == submitted
        approved = await gov.approve(request_id, context=user("carol"))
        assert approved.status is RequestStatus.APPROVED

    async with Governance.open(url, registry=registry()) as gov:
        assert await gov.requests.get(request_id) == approved
        outcome = await gov.execute(request_id)
        assert outcome.executed

    async with Governance.open(url, registry=registry()) as gov:
        final = await gov.requests.get(request_id)
        assert final is not None
        assert final == outcome.request
        assert final.status is RequestStatus.EXECUTED
        current = await gov.states.get("acme")
        assert current is not None
        assert (current.state, current.version) == (Counters({"bob": 6}), "2")
        assert await gov.states.version_by_request("acme", request_id) == "2"
        assert list(await gov.decisions.for_request(request_id)) == list(final.decisions)
        assert len(await gov.engine.history_store.history("acme")) == 1


# -- exactly once across processes -----------------------------------------------------------

RACE_REQUESTS = 200
RACE_WORKERS = 4


def _run_workers(url: str, delay: float = 3.0) -> list[dict[str, Any]]:
    """Start RACE_WORKERS processes racing from the same moment; their JSON reports."""
    start = time.time() + delay
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tests.stores.pg_race_worker", url, str(start)]
    workers = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(RACE_WORKERS)
    ]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err.decode()
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    return reports


@pytest.mark.slow
@pytest.mark.anyio
async def test_first_time_creation_across_processes(postgres_url: str, schema: str) -> None:
    # Four processes open the same fresh schema at the same moment (and find no work).
    reports = await anyio.to_thread.run_sync(_run_workers, with_schema(postgres_url, schema), 2.0)
    assert reports == [{"executed": [], "conflicts": 0}] * RACE_WORKERS
    versions = await execute_sql(postgres_url, f'SELECT version FROM "{schema}".schema_version')
    assert versions == ALL_VERSIONS


@pytest.mark.slow
@pytest.mark.anyio
async def test_exactly_once_across_processes(postgres_url: str, schema: str) -> None:
    url = with_schema(postgres_url, schema)
    async with Governance.open(url, registry=registry()) as gov:
        await gov.states.put("shared", Counters())
        ids = []
        for index in range(RACE_REQUESTS):
            request = await gov.submit(
                Add(f"k{index % 7}", index + 1),
                state_id="shared",
                context=user("alice"),
                request_id=f"race-{index:03d}",
            )
            assert request.status is RequestStatus.APPROVED
            ids.append(request.request_id)

    reports = await anyio.to_thread.run_sync(_run_workers, url)

    executed = [rid for report in reports for rid in report["executed"]]
    assert sorted(executed) == ids, "every request executed by exactly one process"
    assert sum(1 for report in reports if report["executed"]) >= 2, "the workers did not race"

    expected = Counters()
    for index in range(RACE_REQUESTS):
        expected = Add(f"k{index % 7}", index + 1).apply(expected)

    async with Governance.open(url, registry=registry()) as gov:
        current = await gov.states.get("shared")
        assert current is not None
        assert current.state == expected
        assert current.version == str(RACE_REQUESTS + 1)
        for rid in ids:
            final = await gov.requests.get(rid)
            assert final is not None
            assert final.status is RequestStatus.EXECUTED, rid
            assert await gov.states.version_by_request("shared", rid) is not None
            assert final.resulting_state_version == await gov.states.version_by_request(
                "shared", rid
            )
            executed_decisions = [d for d in final.decisions if d.code.name == "EXECUTED"]
            assert len(executed_decisions) == 1
        history = await gov.engine.history_store.history("shared")
        assert len(history) == RACE_REQUESTS
        assert sorted(e.context.correlation_id or "" for e in history.entries) == ids


# -- exactly once while workers are killed ----------------------------------------------------

KILL_REQUESTS = 1200
KILL_STATES = 6
KILL_WORKERS = 4
KILL_EVERY = 0.25
KILL_PHASE = 20.0
KILL_DEADLINE = 50.0


def _workers() -> Any:
    """Processes forked from a server that has imported the worker already, so a restart
    costs milliseconds, not an interpreter start (which takes seconds on a loaded machine)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.stores.pg_race_worker"])
    return context


@attrs.define
class _Worker:
    process: Any
    ready: Path

    @classmethod
    def start(cls, context: Any, url: str, folder: Path, number: int) -> _Worker:
        ready = folder / f"ready-{number}"
        process = context.Process(
            target=pg_race_worker.run_served, args=(url, str(ready)), daemon=True
        )
        process.start()
        return cls(process, ready)

    def working_since(self) -> float | None:
        """When the worker started working (its store open), or None."""
        try:
            return self.ready.stat().st_mtime
        except FileNotFoundError:
            return None

    def kill(self) -> None:
        self.process.kill()
        self.process.join()


def _executed_count(url: str, schema: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM \"{schema}\".requests WHERE status = 'executed'"
        ).fetchone()
    return int(row[0]) if row is not None else 0


def _kill_workers_until_done(url: str, store_url: str, schema: str, folder: Path) -> int:
    """Run KILL_WORKERS workers; every KILL_EVERY seconds SIGKILL the one working longest
    (working for KILL_EVERY at least) and start another, for KILL_PHASE seconds at most,
    then let the survivors finish. Returns how many workers were killed."""
    context = _workers()
    started = itertools.count()
    workers = [
        _Worker.start(context, store_url, folder, next(started)) for _ in range(KILL_WORKERS)
    ]
    killed = 0
    begun = time.monotonic()
    try:
        while _executed_count(url, schema) < KILL_REQUESTS:
            assert time.monotonic() - begun < KILL_DEADLINE, "the workers did not finish in time"
            time.sleep(KILL_EVERY)
            if time.monotonic() - begun > KILL_PHASE:
                continue
            since = [(w.working_since(), i) for i, w in enumerate(workers)]
            working = sorted(
                (t, i) for t, i in since if t is not None and t < time.time() - KILL_EVERY
            )
            if not working:
                continue
            index = working[0][1]
            workers[index].kill()
            killed += 1
            workers[index] = _Worker.start(context, store_url, folder, next(started))
    finally:
        for worker in workers:
            worker.kill()
    return killed


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("flights", [0, 1], ids=["one-statement-each", "grouped"])
async def test_every_request_executes_once_while_workers_are_killed(
    postgres_url: str, schema: str, tmp_path: Path, flights: int
) -> None:
    """Workers SIGKILLed mid-operation, writing alone or in groups (``write_flights``)."""
    url = with_schema(postgres_url, schema) + f"&write_flights={flights}"
    amounts = {f"kill-{index:04d}": index + 1 for index in range(KILL_REQUESTS)}
    expected = {f"s{n}": Counters() for n in range(KILL_STATES)}
    mutations = {
        request_id: (f"s{index % KILL_STATES}", Add(f"k{index % 3}", amount))
        for index, (request_id, amount) in enumerate(amounts.items())
    }
    for state_id, mutation in mutations.values():
        expected[state_id] = mutation.apply(expected[state_id])
    async with Governance.open(url, registry=registry(), max_size=8) as gov:
        for state_id in expected:
            await gov.states.put(state_id, Counters())
        limiter = anyio.CapacityLimiter(8)

        async def submit(request_id: str) -> None:
            state_id, mutation = mutations[request_id]
            async with limiter:
                request = await gov.submit(
                    mutation, state_id=state_id, context=user("alice"), request_id=request_id
                )
            assert request.status is RequestStatus.APPROVED

        async with anyio.create_task_group() as group:
            for request_id in mutations:
                group.start_soon(submit, request_id)

    killed = await anyio.to_thread.run_sync(
        _kill_workers_until_done, postgres_url, url, schema, tmp_path
    )
    assert killed >= 4, "no worker was killed: the test did not test anything"

    async with Governance.open(url, registry=registry()) as gov:
        for state_id, state in expected.items():
            current = await gov.states.get(state_id)
            assert current is not None
            assert current.state == state, state_id
            per_state = KILL_REQUESTS // KILL_STATES
            assert current.version == str(per_state + 1)
        history_ids: list[str] = []
        for state_id in expected:
            history_ids += [
                e.context.correlation_id or ""
                for e in (await gov.engine.history_store.history(state_id)).entries
            ]
        assert sorted(history_ids) == sorted(amounts), "one history entry per request"
        succeeded = [
            e.correlation_id or "" for e in await gov.engine.audit.entries() if e.succeeded
        ]
        assert sorted(succeeded) == sorted(amounts), "one SUCCEEDED audit entry per request"
        for request_id in amounts:
            final = await gov.requests.get(request_id)
            assert final is not None
            assert final.status is RequestStatus.EXECUTED, request_id
            executed = [d for d in final.decisions if d.code.name == "EXECUTED"]
            assert len(executed) == 1, request_id
            assert final.resulting_state_version == await gov.states.version_by_request(
                final.state_id, request_id
            )
            assert tuple(await gov.decisions.for_request(request_id)) == final.decisions
