"""The PostgreSQL store's one-statement commit: atomicity under injected faults, options,
refused configurations, unreadable values and the schema upgrade from version 1.

Faults are injected inside the server-side commit: a trigger on one table makes that
statement of the transaction fail (or kill its own session, or outlive the statement
timeout); afterwards nothing of the operation is visible and every decision log still
equals its request's decisions. Every test uses its own schema.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import anyio
import attrs
import psycopg
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
    Governance,
    GovernedCommit,
    LifecycleDecision,
    MutationRequest,
    RequestConcurrencyError,
    RequestDecision,
    RequestStatus,
    RequestWrite,
    StateWrite,
    StoredDataError,
    StoreUnavailableError,
)
from mutator_governance.stores import open_store
from mutator_governance.stores._postgres import PostgresStore
from mutator_governance.stores._postgres_options import parse_url
from mutator_governance.stores._postgres_schema import SCHEMA_VERSION
from mutator_governance.testing import SampleState, sample_registry, sample_request

from . import pg_domain
from .openers import open_through
from .test_postgres import anyio_backend as anyio_backend  # the fixtures
from .test_postgres import execute_sql, migrated_to, with_schema
from .test_postgres import schema as schema

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]

STATE_ID = "sample:1"
CHECK_INTERVAL = 1.0


@pytest.fixture
async def store(postgres_url: str, schema: str) -> AsyncIterator[PostgresStore]:
    """A store on a fresh schema with the sample registry."""
    opened = await PostgresStore.open(postgres_url, registry=sample_registry(), schema=schema)
    try:
        yield opened
    finally:
        await opened.aclose()


# -- helpers -----------------------------------------------------------------------------------


def _decided(request: MutationRequest, status: RequestStatus, code: LifecycleDecision) -> Any:
    at = request.updated_at + timedelta(seconds=1)
    decision = RequestDecision(code, MutationContext.user("bob"), "test", at)
    return attrs.evolve(
        request,
        status=status,
        pending_reason=None,
        updated_at=at,
        decisions=(*request.decisions, decision),
    )


def _records(request: MutationRequest) -> tuple[AuditEntry, HistoryEntry]:
    context = MutationContext.user("alice", mode=MutationMode.COMMIT)
    at = request.updated_at
    audit = AuditEntry(
        f"exec-{request.request_id}",
        request.state_id,
        "SampleState",
        request.mutation.intent,
        context,
        MutationMode.COMMIT,
        AuditOutcome.SUCCEEDED,
        at,
        0.001,
    )
    history = HistoryEntry(
        f"exec-{request.request_id}",
        request.state_id,
        request.mutation.intent,
        context,
        ChangeSet(),
        at,
        0.001,
        (),
        request.mutation,
    )
    return audit, history


async def _snapshot(url: str, schema: str) -> dict[str, list[Any]]:
    """Every row of every table (ordered), to compare a store before and after."""
    s = f'"{schema}"'
    return {
        table: await execute_sql(url, f"SELECT * FROM {s}.{table} ORDER BY 1, 2")
        for table in ("requests", "decisions", "states", "state_versions", "audit", "history")
    }


async def _logs_match(store: PostgresStore) -> None:
    page = await store.requests.list(limit=1000)
    for request in page.items:
        assert tuple(await store.decisions.for_request(request.request_id)) == request.decisions


async def _seed(store: PostgresStore) -> tuple[MutationRequest, MutationRequest]:
    await store.states.put(STATE_ID, SampleState("sample", 1))
    (one,) = await store.committer.commit(
        GovernedCommit(
            (RequestWrite.create(sample_request("req-1", status=RequestStatus.EXECUTING)),)
        )
    )
    (two,) = await store.committer.commit(
        GovernedCommit(
            (RequestWrite.create(sample_request("req-2", status=RequestStatus.EXECUTED)),)
        )
    )
    return one, two


def _create(one: MutationRequest, two: MutationRequest) -> GovernedCommit:
    del one, two
    submitted = _decided(
        sample_request("req-3"), RequestStatus.PENDING, LifecycleDecision.SUBMITTED
    )
    assert submitted.decisions
    return GovernedCommit((RequestWrite.create(submitted),))


def _update(one: MutationRequest, two: MutationRequest) -> GovernedCommit:
    del two
    released = _decided(one, RequestStatus.APPROVED, LifecycleDecision.RELEASED)
    return GovernedCommit((RequestWrite.update(one, released),))


def _execution(one: MutationRequest, two: MutationRequest) -> GovernedCommit:
    executed = _decided(one, RequestStatus.EXECUTED, LifecycleDecision.EXECUTED)
    audit, history = _records(one)
    return GovernedCommit(
        (RequestWrite.update(one, executed), RequestWrite.update(two, two)),
        StateWrite(STATE_ID, SampleState("sample", 2), "1", "2", "req-1"),
        (history,),
        (audit,),
    )


OPERATIONS: dict[str, Callable[[MutationRequest, MutationRequest], GovernedCommit]] = {
    "create": _create,
    "update": _update,
    "execution": _execution,
}

# Every write governed_commit makes, per operation: (table, trigger event).
STATEMENTS: dict[str, list[tuple[str, str]]] = {
    "create": [("requests", "INSERT"), ("decisions", "INSERT")],
    "update": [("requests", "UPDATE"), ("decisions", "INSERT")],
    "execution": [
        ("states", "UPDATE"),
        ("state_versions", "INSERT"),
        ("requests", "UPDATE"),
        ("decisions", "INSERT"),
        ("history", "INSERT"),
        ("audit", "INSERT"),
    ],
}

FAULTS = [
    (operation, table, event)
    for operation, statements in STATEMENTS.items()
    for table, event in statements
]

_BODIES = {
    "fail": "RAISE EXCEPTION 'injected fault';",
    "die": "PERFORM pg_terminate_backend(pg_backend_pid());",
    "stall": "PERFORM pg_sleep(5);",
    "slow": "PERFORM pg_sleep(0.1);",
    "full": "RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100';",
    "deadlock": "RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01';",
    "serialization": "RAISE EXCEPTION 'could not serialize' USING ERRCODE = '40001';",
}


async def _inject(
    url: str, schema: str, table: str, event: str, kind: str, *, when: str | None = None
) -> None:
    """Run the fault ``kind`` before each ``event`` on ``table`` (for the rows ``when``, an
    SQL condition on ``NEW``, holds)."""
    s = f'"{schema}"'
    await execute_sql(
        url,
        f"""CREATE OR REPLACE FUNCTION {s}.fault() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN {_BODIES[kind]} RETURN NEW; END $$""",
    )
    condition = f"WHEN ({when}) " if when is not None else ""
    await execute_sql(
        url,
        f"CREATE TRIGGER fault BEFORE {event} ON {s}.{table} "
        f"FOR EACH ROW {condition}EXECUTE FUNCTION {s}.fault()",
    )


async def _remove(url: str, schema: str, table: str) -> None:
    await execute_sql(url, f'DROP TRIGGER fault ON "{schema}".{table}')


# -- atomicity by fault injection ----------------------------------------------------------------


@pytest.mark.parametrize(("operation", "table", "event"), FAULTS)
async def test_a_fault_at_any_statement_leaves_nothing_written(
    postgres_url: str, store: PostgresStore, operation: str, table: str, event: str
) -> None:
    one, two = await _seed(store)
    commit = OPERATIONS[operation](one, two)
    before = await _snapshot(postgres_url, store.schema)
    await _inject(postgres_url, store.schema, table, event, "fail")
    with pytest.raises(StoreUnavailableError, match="injected fault"):
        await store.committer.commit(commit)
    await _remove(postgres_url, store.schema, table)
    assert await _snapshot(postgres_url, store.schema) == before
    await _logs_match(store)
    # The same operation lands whole once the fault is gone.
    stored = await store.committer.commit(commit)
    assert await store.requests.get(stored[0].request_id) == stored[0]
    await _logs_match(store)


@pytest.mark.parametrize(
    ("kind", "says"),
    [("full", r"failed the operation \(SQLSTATE 53100\)"), ("die", "connection failed")],
)
async def test_an_outage_says_whether_the_server_answered_or_the_connection_went(
    postgres_url: str, store: PostgresStore, kind: str, says: str
) -> None:
    """A server out of disk answers (the connection is fine); a killed session does not."""
    one, two = await _seed(store)
    commit = _execution(one, two)
    await _inject(postgres_url, store.schema, "history", "INSERT", kind)
    with pytest.raises(StoreUnavailableError, match=says):
        await store.committer.commit(commit)
    await _remove(postgres_url, store.schema, "history")
    await store.committer.commit(commit)
    await _logs_match(store)


@pytest.mark.parametrize("kind", ["deadlock", "serialization"])
async def test_a_transaction_the_server_rolled_back_is_a_concurrency_error(
    postgres_url: str, store: PostgresStore, kind: str
) -> None:
    """A deadlock or serialization failure is a lost race to retry, not an outage."""
    one, two = await _seed(store)
    commit = _execution(one, two)
    before = await _snapshot(postgres_url, store.schema)
    await _inject(postgres_url, store.schema, "audit", "INSERT", kind)
    with pytest.raises(ConcurrencyError, match="rolled back a transaction") as raised:
        await store.committer.commit(commit)
    assert not isinstance(raised.value, StoreUnavailableError)
    await _remove(postgres_url, store.schema, "audit")
    assert await _snapshot(postgres_url, store.schema) == before
    await store.committer.commit(commit)
    await _logs_match(store)


@pytest.mark.parametrize("table", ["requests", "history"])
async def test_a_session_killed_mid_commit_leaves_nothing_written(
    postgres_url: str, store: PostgresStore, table: str
) -> None:
    one, two = await _seed(store)
    commit = _execution(one, two)
    before = await _snapshot(postgres_url, store.schema)
    event = "UPDATE" if table == "requests" else "INSERT"
    await _inject(postgres_url, store.schema, table, event, "die")
    with pytest.raises(StoreUnavailableError):
        await store.committer.commit(commit)
    await _remove(postgres_url, store.schema, table)
    assert await _snapshot(postgres_url, store.schema) == before
    # The broken connection was discarded: the store keeps working.
    await store.committer.commit(commit)
    await _logs_match(store)


async def test_statement_timeout_cancels_the_whole_operation(
    postgres_url: str, schema: str
) -> None:
    url = with_schema(postgres_url, schema) + "&statement_timeout=0.3"
    store = await PostgresStore.open(url, registry=sample_registry())
    try:
        one, two = await _seed(store)
        before = await _snapshot(postgres_url, schema)
        await _inject(postgres_url, schema, "audit", "INSERT", "stall")
        with pytest.raises(StoreUnavailableError, match="statement_timeout"):
            await store.committer.commit(_execution(one, two))
        await _remove(postgres_url, schema, "audit")
        assert await _snapshot(postgres_url, schema) == before
        await _logs_match(store)
    finally:
        await store.aclose()


async def test_connections_broken_by_the_server_fail_once_then_are_replaced(
    postgres_url: str, schema: str
) -> None:
    name = f"mutator-{schema}"
    url = with_schema(postgres_url, schema) + f"&application_name={name}"
    store = await PostgresStore.open(url, registry=sample_registry(), min_size=3, max_size=3)
    try:
        await store.requests.create(sample_request("req-1"))
        killed = await execute_sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        )
        assert len(killed) == 3
        failures = 0
        for _ in range(3):
            try:
                assert await store.requests.get("req-1") is not None
            except StoreUnavailableError:
                failures += 1
        # Without a check per checkout the first use of a dead connection fails; the
        # failure checks the idle connections, so the next operations succeed.
        assert failures == 1
        assert await store.requests.get("req-1") is not None
    finally:
        await store.aclose()


# -- commit_reading: the state read after the writes, in the same statement ------------------


async def test_commit_reading_reads_the_state_after_its_own_writes(store: PostgresStore) -> None:
    one, two = await _seed(store)
    (executed, _), read = await store.committer.commit_reading(_execution(one, two), STATE_ID)
    assert executed.status is RequestStatus.EXECUTED
    assert read == await store.states.get(STATE_ID)
    assert read is not None
    assert (read.state, read.version, read.request_id) == (SampleState("sample", 2), "2", "req-1")


async def test_a_commit_is_one_statement_even_when_it_reads(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, _ = await _seed(store)
    released = _decided(one, RequestStatus.APPROVED, LifecycleDecision.RELEASED)
    (released,) = await store.committer.commit(
        GovernedCommit((RequestWrite.update(one, released),))
    )
    sent: list[str] = []
    original = psycopg.AsyncCursor.execute  # every statement, on any cursor

    async def spy(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return await original(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", spy)
    claimed = _decided(released, RequestStatus.EXECUTING, LifecycleDecision.CLAIMED)
    _, read = await store.committer.commit_reading(
        GovernedCommit((RequestWrite.update(released, claimed),)), STATE_ID
    )
    assert read is not None
    assert len(sent) == 1
    assert "governed_commit" in sent[0]


# -- the claim commits without waiting for the flush -------------------------------------------


async def test_only_the_claim_skips_the_durable_flush(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = await _seed(store)
    released = _decided(one, RequestStatus.APPROVED, LifecycleDecision.RELEASED)
    (released,) = await store.committer.commit(
        GovernedCommit((RequestWrite.update(one, released),))
    )
    writer = store.committer._writer
    seen: list[bool] = []
    original = writer.write

    async def spy(*args: Any, durable: bool, **kwargs: Any) -> Any:
        seen.append(durable)
        return await original(*args, durable=durable, **kwargs)

    monkeypatch.setattr(writer, "write", spy)
    claimed = _decided(released, RequestStatus.EXECUTING, LifecycleDecision.CLAIMED)
    (claimed,) = await store.committer.commit(
        GovernedCommit((RequestWrite.update(released, claimed),))
    )
    await store.committer.commit(_execution(claimed, two))
    assert seen == [False, True]


# -- refused before connecting -----------------------------------------------------------------


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to connect."""

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("connected although the configuration is refused")

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", refuse)


@pytest.mark.usefixtures("no_connect")
@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgresql://:::@/", "postgresql://user"),
        ("postgresql:///test", "no host"),
        ("postgresql://127.0.0.1/test", "no user"),
        ("postgresql://postgres@127.0.0.1", "no database"),
        ("postgresql://postgres@127.0.0.1/", "no database"),
        ("postgresql://postgres@127.0.0.1:99999/test", "postgresql://user"),
        ("postgresql://postgres@127.0.0.1:5432/a/b", "'/'"),
        ("postgresql://postgres@127.0.0.1:5432/test?bogus=1", "bogus"),
        ("postgresql://postgres@127.0.0.1:5432/test?max_size=many", "max_size"),
        ("postgresql://postgres@127.0.0.1:5432/test?statement_timeout=-1", "statement_timeout"),
        ("postgresql://postgres@127.0.0.1:5432/test?schema=1x", "identifier"),
        ("postgresql://postgres@127.0.0.1:5432/test?schema=pg_gov", "reserved"),
        ("postgresql://postgres@127.0.0.1:5432/test?schema=information_schema", "reserved"),
        ("postgresql://postgres@127.0.0.1:5432/test?statement_timeout=2147484", "at most"),
        ("postgresql://postgres@127.0.0.1:5432/test?check_connections=maybe", "check_connections"),
        ("postgresql://postgres@127.0.0.1:5432/test?min_size=4&max_size=2", "min_size"),
    ],
)
async def test_malformed_urls_are_refused_before_connecting(url: str, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named.replace("?", r"\?")):
        await open_store(url, registry=sample_registry())


@pytest.mark.usefixtures("no_connect")
@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"pool_size": 3}, "pool_size"),
        ({"max_size": 0}, "max_size"),
        ({"min_size": -1}, "min_size"),
        ({"max_size": "3"}, "max_size"),
        ({"connect_timeout": float("nan")}, "connect_timeout"),
        ({"statement_timeout": -0.5}, "statement_timeout"),
        ({"statement_timeout": True}, "statement_timeout"),
        ({"connection_check_interval": -1}, "connection_check_interval"),
        ({"connection_check_interval": float("inf")}, "connection_check_interval"),
        ({"statement_timeout": 30 * 86400}, "statement_timeout must be at most"),
        ({"connection_check_interval": 3e6}, "connection_check_interval must be at most"),
        ({"schema": "pg_temp"}, "reserved"),
        ({"check_connections": 1}, "check_connections"),
        ({"write_flights": -1}, "write_flights"),
        ({"write_flights": "1"}, "write_flights"),
    ],
)
async def test_unknown_or_malformed_options_are_refused_before_connecting(
    options: dict[str, Any], named: str
) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/test"
    with pytest.raises(ConfigurationError, match=named):
        await PostgresStore.open(url, registry=sample_registry(), **options)


DIFFERENT_VALUES = [
    ("schema", "a", "b"),
    ("min_size", "2", 3),
    ("max_size", "3", 4),
    ("connect_timeout", "2", 2.5),
    ("statement_timeout", "5", 0),
    ("statement_timeout", "0", 5),
    ("connection_check_interval", "5", None),
    ("check_connections", "true", False),
    ("write_flights", "1", 2),
]


@pytest.mark.parametrize(("option", "in_url", "keyword"), DIFFERENT_VALUES)
def test_an_option_named_twice_with_different_values_is_refused(
    option: str, in_url: str, keyword: Any
) -> None:
    """As on SQLite and Redis: the message names the option and both values (never the
    URL's password)."""
    url = f"postgresql://postgres:s3cret@127.0.0.1:5432/test?{option}={in_url}"
    with pytest.raises(ConfigurationError) as caught:
        parse_url(url, {option: keyword})
    message = str(caught.value)
    assert f"PostgreSQL option {option!r}" in message
    assert f"{in_url!r} in the URL" in message
    assert f"{keyword!r} as a keyword argument" in message
    assert "s3cret" not in message


@pytest.mark.usefixtures("no_connect")
@pytest.mark.parametrize("opener", ["open_store", "Governance.open"])
@pytest.mark.parametrize(("option", "in_url", "keyword"), DIFFERENT_VALUES[:3])
async def test_an_option_named_twice_with_different_values_is_refused_before_connecting(
    opener: str, option: str, in_url: str, keyword: Any
) -> None:
    url = f"postgresql://postgres:s3cret@127.0.0.1:5432/test?{option}={in_url}"
    with pytest.raises(ConfigurationError, match=f"PostgreSQL option {option!r}") as caught:
        await open_through(opener, url, **{option: keyword})
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("option", "in_url", "keyword"),
    [
        ("schema", "s1", "s1"),
        ("min_size", "2", 2),
        ("max_size", "8", 8),
        ("connect_timeout", "2", 2.0),
        ("connect_timeout", "2.5", 2.5),
        ("statement_timeout", "0", None),
        ("statement_timeout", "none", 0),
        ("statement_timeout", "2", 2),
        ("connection_check_interval", "0", 0.0),
        ("connection_check_interval", "", None),
        ("check_connections", "1", True),
        ("check_connections", "false", False),
        ("write_flights", "2", 2),
    ],
)
def test_an_option_named_twice_with_the_same_value_is_accepted(
    option: str, in_url: str, keyword: Any
) -> None:
    """Values are compared once typed: ``?connect_timeout=2`` and ``connect_timeout=2.0``
    agree, as do ``?statement_timeout=0`` and ``statement_timeout=None`` (no limit)."""
    url = f"postgresql://postgres@127.0.0.1:5432/test?{option}={in_url}"
    _, both = parse_url(url, {option: keyword})
    assert both == parse_url(url, {})[1]
    assert both == parse_url("postgresql://postgres@127.0.0.1:5432/test", {option: keyword})[1]


@pytest.mark.parametrize(
    ("query", "keywords"),
    [
        ("&statement_timeout=0", {}),
        ("&statement_timeout=none", {}),
        ("", {"statement_timeout": 0}),
        ("&statement_timeout=0", {"statement_timeout": None}),
    ],
)
async def test_a_zero_statement_timeout_means_no_limit_in_either_form(
    postgres_url: str, schema: str, query: str, keywords: dict[str, Any]
) -> None:
    """0 disables the limit as it does in PostgreSQL, whether in the URL or a keyword."""
    url = with_schema(postgres_url, schema) + query
    store = await open_store(url, registry=sample_registry(), **keywords)
    assert isinstance(store, PostgresStore)
    try:
        async with store._db.connection() as conn:
            row = await (await conn.execute("SHOW statement_timeout")).fetchone()
        assert row == ("0",)
    finally:
        await store.aclose()


async def test_options_reach_the_pool_and_the_server(postgres_url: str, schema: str) -> None:
    url = with_schema(postgres_url, schema) + "&min_size=2&statement_timeout=5&write_flights=2"
    store = await open_store(url, registry=sample_registry(), min_size=2, max_size=4)
    assert isinstance(store, PostgresStore)
    try:
        pool = store._db.pool
        # min_size from both (the same value), max_size from the keyword alone
        assert (pool.min_size, pool.max_size) == (2, 4)
        assert store._writer._flights == 2
        async with store._db.connection() as conn:
            row = await (await conn.execute("SHOW statement_timeout")).fetchone()
        assert row == ("5s",)
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("query", "keywords", "shown"),
    [
        ("", {}, "1s"),
        ("&connection_check_interval=2.5", {}, "2500ms"),
        ("&connection_check_interval=0", {}, "0"),
        ("", {"connection_check_interval": None}, "0"),
        ("&connection_check_interval=0", {"connection_check_interval": None}, "0"),
    ],
)
async def test_the_server_checks_the_connection_during_statements_by_default(
    postgres_url: str, schema: str, query: str, keywords: dict[str, Any], shown: str
) -> None:
    """Every pooled connection has ``client_connection_check_interval`` (default 1 s; 0
    or None: no check), so a statement whose connection closed is aborted."""
    url = with_schema(postgres_url, schema) + query
    store = await open_store(url, registry=sample_registry(), **keywords)
    assert isinstance(store, PostgresStore)
    try:
        async with store._db.connection() as conn:
            row = await (await conn.execute("SHOW client_connection_check_interval")).fetchone()
        assert row == (shown,)
    finally:
        await store.aclose()


async def test_server_time_is_the_servers_clock(store: PostgresStore) -> None:
    now = await store.server_time()
    assert now is not None
    assert now.tzinfo is not None
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


# -- unreadable values ---------------------------------------------------------------------------


async def test_request_document_under_another_id_is_refused(
    postgres_url: str, store: PostgresStore
) -> None:
    await store.requests.create(sample_request("req-1"))
    await store.requests.create(sample_request("req-2"))
    s = store.schema
    await execute_sql(
        postgres_url,
        f'UPDATE "{s}".requests SET document = '
        f"(SELECT document FROM \"{s}\".requests WHERE request_id = 'req-2') "
        "WHERE request_id = 'req-1'",
    )
    with pytest.raises(StoredDataError) as caught:
        await store.requests.get("req-1")
    assert (caught.value.key, caught.value.field) == ("req-1", "requests.document")
    assert "req-2" in str(caught.value)


@pytest.mark.parametrize("version", ["abc", "", "-1", "1.5"])
async def test_state_version_that_is_not_a_counter_is_refused_on_read(
    postgres_url: str, store: PostgresStore, version: str
) -> None:
    await store.states.put(STATE_ID, SampleState("sample", 1), request_id="req-1")
    s = store.schema
    await execute_sql(postgres_url, f'UPDATE "{s}".states SET version = %s', (version,))
    await execute_sql(postgres_url, f'UPDATE "{s}".state_versions SET version = %s', (version,))
    with pytest.raises(StoredDataError) as caught:
        await store.states.get(STATE_ID)
    assert (caught.value.key, caught.value.field) == (STATE_ID, "states.version")
    with pytest.raises(StoredDataError):
        await store.states.version_by_request(STATE_ID, "req-1")


async def test_a_request_cannot_produce_a_second_version(
    postgres_url: str, store: PostgresStore
) -> None:
    one, two = await _seed(store)
    await store.committer.commit(_execution(one, two))
    before = await _snapshot(postgres_url, store.schema)
    with pytest.raises(ConcurrencyError):
        await store.states.put(
            STATE_ID, SampleState("sample", 3), expected_version="2", request_id="req-1"
        )
    assert await _snapshot(postgres_url, store.schema) == before


# -- upgrading a version-1 schema ------------------------------------------------------------------


async def test_version_1_schema_is_upgraded_with_numbered_decisions(
    postgres_url: str, schema: str
) -> None:
    registry = sample_registry()
    s = await migrated_to(postgres_url, schema, 1)
    requests = []
    for index in range(3):
        request = sample_request(f"req-{index}")
        for step in range(index):
            request = _decided(request, RequestStatus.PENDING, LifecycleDecision.SUBMITTED)
            del step
        requests.append(request)
    # Version 1 rows: decisions without sequence numbers, interleaved across requests.
    rows = [(r, d) for r in requests for d in r.decisions]
    rows.sort(key=lambda row: (row[1].timestamp, row[0].request_id))
    for request, decision in rows:
        data = registry.unstructure_decision(decision)
        data.pop("sequence", None)
        await execute_sql(
            postgres_url,
            f"INSERT INTO {s}.decisions (request_id, category, timestamp, document) "
            "VALUES (%s, %s, %s, %s)",
            (request.request_id, decision.category.value, decision.timestamp, json.dumps(data)),
        )
    store = await PostgresStore.open(postgres_url, registry=registry, schema=schema)
    try:
        for request in requests:
            logged = tuple(await store.decisions.for_request(request.request_id))
            assert logged == request.decisions
            assert [d.sequence for d in logged] == list(range(1, len(request.decisions) + 1))
            # Appending the whole log again adds nothing.
            await store.decisions.append(request.request_id, request.decisions)
            assert tuple(await store.decisions.for_request(request.request_id)) == logged
    finally:
        await store.aclose()
    versions = await execute_sql(postgres_url, f"SELECT version FROM {s}.schema_version")
    assert versions == [(version,) for version in range(1, SCHEMA_VERSION + 1)]


# -- the client side of a commit ---------------------------------------------------------------


@pytest.mark.parametrize(
    "documents",
    [["{}"], ['{"a":"caf\u00e9 \U0001f600"}', "", '"\\\\ \\" {,}"'], [str(n) for n in range(50)]],
)
def test_the_documents_array_is_what_psycopgs_binary_list_dumper_writes(
    documents: list[str],
) -> None:
    from psycopg.adapt import PyFormat, Transformer

    from mutator_governance.stores._postgres import _Documents, _DocumentsDumper

    generic = Transformer().get_dumper(documents, PyFormat.BINARY)
    ours = _DocumentsDumper(_Documents)
    assert ours.oid == generic.oid == 1009
    assert ours.dump(_Documents(documents)) == bytes(generic.dump(documents))


def test_an_empty_documents_array_is_a_zero_dimension_text_array() -> None:
    from mutator_governance.stores._postgres import _Documents, _DocumentsDumper

    assert _DocumentsDumper(_Documents).dump(_Documents()) == bytes(12 * [0])[:-1] + b"\x19"


@pytest.mark.parametrize(
    "meta",
    [
        {"r": [["r\u00e9", 3, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)]], "n": True, "s": None},
        {"t": [datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)]},
        {"t": [datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))]},
        {"lone": "\ud800", "big": 2**70},
    ],
)
def test_the_meta_text_is_the_stdlib_encoding(meta: dict[str, Any]) -> None:
    """orjson's text (or the stdlib's, for what orjson refuses) equals the stdlib's with every
    datetime written as its isoformat() text, so the server reads the same values."""
    from mutator_governance.stores._postgres import _instant, _json_text

    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, list):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    def instants(value: Any) -> Any:
        if isinstance(value, datetime):
            return _instant(value)
        if isinstance(value, list):
            return [instants(item) for item in value]
        if isinstance(value, dict):
            return {key: instants(item) for key, item in value.items()}
        return value

    expected = json.dumps(plain(meta), ensure_ascii=False, separators=(",", ":"))
    assert _json_text(instants(meta)) == expected


async def test_a_failed_statement_leaves_the_kept_cursor_usable(store: PostgresStore) -> None:
    """A refused commit runs on the connection's kept cursor; the next operations on that
    connection (the pool has one idle) read and write normally."""
    one, two = await _seed(store)
    stale = attrs.evolve(one, revision=one.revision + 7)
    with pytest.raises(RequestConcurrencyError):
        await store.committer.commit(_update(stale, two))
    (executed, _), read = await store.committer.commit_reading(_execution(one, two), STATE_ID)
    assert executed.status is RequestStatus.EXECUTED
    assert read == await store.states.get(STATE_ID)
    assert await store.requests.get(one.request_id) == executed


async def test_decision_documents_are_their_own_encoding_when_taken_from_the_request(
    store: PostgresStore, postgres_url: str, schema: str
) -> None:
    """New decisions are encoded once, inside their request's document; each decision row's
    document is still exactly what encoding the decision on its own writes, and a write
    whose new decisions are not its request's last ones encodes them on their own."""
    one, two = await _seed(store)
    registry = sample_registry()
    executed = _decided(one, RequestStatus.EXECUTED, LifecycleDecision.EXECUTED)
    executed = _decided(executed, RequestStatus.EXECUTED, LifecycleDecision.COMPENSATED)
    audit, history = _records(one)
    await store.committer.commit(
        GovernedCommit(
            (RequestWrite.update(one, executed),),
            StateWrite(STATE_ID, SampleState("sample", 2), "1", "2", "req-1"),
            (history,),
            (audit,),
        )
    )
    # A write naming decisions other than its request's tail (equal, not the same objects).
    stored_two = await store.requests.get("req-2")
    assert stored_two is not None
    extra = _decided(stored_two, RequestStatus.EXECUTED, LifecycleDecision.EXECUTED)
    copy = attrs.evolve(extra.decisions[-1])
    await store.committer.commit(
        GovernedCommit((RequestWrite(extra, stored_two.revision, (copy,)),))
    )
    rows = await execute_sql(
        postgres_url,
        f'SELECT request_id, sequence, document FROM "{schema}".decisions '
        "ORDER BY request_id, sequence",
    )
    expected = {
        (request.request_id, decision.sequence): registry.dumps(
            registry.unstructure_decision(decision)
        )
        for request in (executed, extra)
        for decision in request.decisions
    }
    assert {(rid, seq): doc for rid, seq, doc in rows} == expected
    assert len(expected) == len(one.decisions) + len(two.decisions) + 3
    assert await store.decisions.for_request("req-1") == executed.decisions


# -- the checkout and the socket wait ---------------------------------------------------------


async def test_consecutive_operations_reuse_one_connection_without_the_pool(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One operation after another takes the store's spare connection, not the pool's."""
    one, _ = await _seed(store)
    pool = store._db.pool
    taken: list[object] = []
    getconn = pool.getconn

    async def counted(*args: Any, **kwargs: Any) -> Any:
        taken.append(await getconn(*args, **kwargs))
        return taken[-1]

    monkeypatch.setattr(pool, "getconn", counted)
    for _ in range(10):
        assert await store.requests.get(one.request_id) == one
    assert len(taken) <= 1


async def test_more_concurrent_operations_than_connections_all_complete(
    postgres_url: str, schema: str
) -> None:
    """A connection the pool's waiters need goes back to the pool, not aside."""
    store = await PostgresStore.open(
        postgres_url, registry=sample_registry(), schema=schema, max_size=1, connect_timeout=2
    )
    try:
        one, _ = await _seed(store)
        read = await asyncio.gather(*(store.requests.get(one.request_id) for _ in range(4)))
        assert read == [one] * 4
    finally:
        await store.aclose()


async def test_every_checkout_is_checked_when_check_connections_is_on(
    postgres_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``check_connections`` no connection is kept aside: each goes through the pool's
    check."""
    store = await PostgresStore.open(
        postgres_url, registry=sample_registry(), schema=schema, check_connections=True
    )
    try:
        one, _ = await _seed(store)
        checked: list[object] = []
        check = store._db.pool._check
        assert check is not None

        async def counted(conn: Any) -> None:
            checked.append(conn)
            await check(conn)

        monkeypatch.setattr(store._db.pool, "_check", counted)
        for _ in range(3):
            assert await store.requests.get(one.request_id) == one
        assert len(checked) == 3
    finally:
        await store.aclose()


async def test_closing_the_store_closes_the_spare_connection(store: PostgresStore) -> None:
    one, _ = await _seed(store)
    assert await store.requests.get(one.request_id) == one
    spare = store._db.spare
    assert spare is not None
    await store.aclose()
    assert spare.closed
    assert store._db.spare is None


async def test_a_statement_waits_for_its_reply_without_a_timer(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's statements register their socket with the loop and arm no timer (psycopg's
    own wait arms a 0.1 s one per wait)."""
    one, _ = await _seed(store)
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    call_later = loop.call_later

    def counted(delay: float, *args: Any, **kwargs: Any) -> Any:
        timers.append(delay)
        return call_later(delay, *args, **kwargs)

    monkeypatch.setattr(loop, "call_later", counted)
    for _ in range(3):
        assert await store.requests.get(one.request_id) == one
    (written,) = await store.committer.commit(_update(one, one))
    assert written.status is RequestStatus.APPROVED
    assert timers == []


async def test_an_operation_cancelled_mid_statement_is_cancelled_on_the_server(
    store: PostgresStore, postgres_url: str, schema: str
) -> None:
    """A commit blocked on a row lock and cancelled by its caller is cancelled on the server
    too: it writes nothing once the lock goes, and the store keeps working."""
    one, two = await _seed(store)
    async with await psycopg.AsyncConnection.connect(postgres_url) as holder:
        await holder.execute(
            f'SELECT 1 FROM "{schema}".requests WHERE request_id = %s FOR UPDATE',
            (one.request_id,),
        )
        task = asyncio.ensure_future(store.committer.commit(_update(one, two)))
        await asyncio.sleep(0.5)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await holder.rollback()
    await anyio.sleep(0.2)
    assert await store.requests.get(one.request_id) == one
    (written,) = await store.committer.commit(_update(one, two))
    assert written.status is RequestStatus.APPROVED


async def test_a_write_cancelled_while_waiting_for_a_lock_never_lands(
    store: PostgresStore, postgres_url: str, schema: str
) -> None:
    """A write cancelled by a cancel scope while blocked on a row lock is not applied when
    the lock is released later: the statement is cancelled on the server (see the next
    test for the same without ``connection_check_interval``)."""
    await store.states.put(STATE_ID, SampleState("sample", 1))
    async with await psycopg.AsyncConnection.connect(postgres_url) as holder:
        await holder.execute(
            f'SELECT 1 FROM "{schema}".states WHERE state_id = %s FOR UPDATE', (STATE_ID,)
        )
        with anyio.move_on_after(0.5) as scope:
            await store.states.put(STATE_ID, SampleState("sample", 2), expected_version="1")
        assert scope.cancelled_caught
        await anyio.sleep(CHECK_INTERVAL + 0.5)  # the server checks the connection once
        await holder.commit()
    await anyio.sleep(0.5)  # an orphaned statement would have committed by now
    latest = await store.states.get(STATE_ID)
    assert latest is not None
    assert (latest.version, latest.state) == ("1", SampleState("sample", 1))


async def test_a_statement_cancelled_by_a_cancel_scope_is_cancelled_on_the_server(
    postgres_url: str, schema: str
) -> None:
    """Cancelled by a cancel scope while blocked on a row lock, a write is cancelled on the
    server before the caller goes on, whatever ``connection_check_interval``: anyio
    re-delivered the cancellation while psycopg sent its cancel request, so psycopg closed
    the connection, and the statement, left running on the server, committed once the lock
    was free (after the caller had been told it was cancelled). The connection is kept."""
    store = await PostgresStore.open(
        postgres_url, registry=sample_registry(), schema=schema, connection_check_interval=None
    )
    try:
        await store.states.put(STATE_ID, SampleState("sample", 1))
        async with await psycopg.AsyncConnection.connect(postgres_url) as holder:
            await holder.execute(
                f'SELECT 1 FROM "{schema}".states WHERE state_id = %s FOR UPDATE', (STATE_ID,)
            )
            with anyio.move_on_after(0.3) as scope:
                await store.states.put(STATE_ID, SampleState("sample", 2), expected_version="1")
            assert scope.cancelled_caught
            await holder.commit()
        await anyio.sleep(0.3)  # an orphaned statement would have committed by now
        latest = await store.states.get(STATE_ID)
        assert latest is not None
        assert (latest.version, latest.state) == ("1", SampleState("sample", 1))
        assert store._db.pool.get_stats().get("returns_bad", 0) == 0
    finally:
        await store.aclose()


@attrs.frozen
class _LongNamedAdd(pg_domain.Add):
    """``Add`` under another name (a registry knows each class once)."""


async def test_a_value_too_long_for_an_index_is_a_value_error_not_an_outage(
    postgres_url: str, schema: str
) -> None:
    """PostgreSQL refuses an index entry over 2,704 bytes (SQLSTATE 54000); the store
    called that an outage (StoreUnavailableError), which a caller or worker retries
    forever. An id over the limit is refused before the store is asked, as on every
    store; any other value too long for an index is the value's fault: ValueError."""
    letters = "".join(random.Random(9).choices(string.ascii_letters, k=3000))
    registry = pg_domain.registry()
    registry.register(_LongNamedAdd, name=letters)  # the mutation type is indexed
    url = with_schema(postgres_url, schema)
    async with Governance.open(url, registry=registry) as gov:
        with pytest.raises(ValueError, match="state_id must be at most 1,024 bytes"):
            await gov.states.put(letters[:1500], pg_domain.Counters())
        await gov.states.put("s", pg_domain.Counters())
        with pytest.raises(ValueError, match="index row size"):
            await gov.submit(
                _LongNamedAdd(key="a", amount=1), state_id="s", context=pg_domain.user("al")
            )
        assert (await gov.list()).items == ()
