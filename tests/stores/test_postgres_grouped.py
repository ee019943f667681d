"""Grouped writes on PostgreSQL (``write_flights``): writes that arrive while the store's
flights are all in flight wait and then share one ``governed_commit_batch`` statement.

Each test holds the first write in flight deterministically (another session holds a row
lock it needs), queues the writes under test behind it, then lets go. What a user relies
on: every write still gets exactly the outcome it would have had alone, nothing of a
failed write is visible, a cancelled waiter writes nothing, and batches of several
processes never deadlock.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import anyio
import attrs
import psycopg
import pytest

from mutator import ConcurrencyError
from mutator_governance import (
    GovernedCommit,
    LifecycleDecision,
    MutationRequest,
    RequestAlreadyExistsError,
    RequestConcurrencyError,
    RequestDecision,
    RequestStatus,
    RequestWrite,
    StateWrite,
    StoreUnavailableError,
)
from mutator_governance.stores._postgres import PostgresStore, _Writer
from mutator_governance.testing import SampleState, sample_registry, sample_request

from .test_postgres import anyio_backend as anyio_backend  # the fixtures
from .test_postgres import execute_sql, with_schema
from .test_postgres import schema as schema
from .test_postgres_commit import _inject

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]


async def _open(postgres_url: str, schema: str) -> PostgresStore:
    url = with_schema(postgres_url, schema) + "&write_flights=1"
    return await PostgresStore.open(url, registry=sample_registry())


@pytest.fixture
async def store(postgres_url: str, schema: str) -> AsyncIterator[PostgresStore]:
    """A store whose writes go one statement at a time (``write_flights=1``)."""
    opened = await _open(postgres_url, schema)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every group of writes sent together."""
    sizes: list[int] = []
    together = _Writer._together

    async def spy(self: _Writer, batch: list[Any]) -> Any:
        sizes.append(len(batch))
        return await together(self, batch)

    monkeypatch.setattr(_Writer, "_together", spy)
    return sizes


@pytest.fixture
def alone(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The meta text of every write sent as its own statement."""
    sent: list[str] = []
    one = _Writer._alone

    async def spy(self: _Writer, write: Any) -> Any:
        sent.append(write.meta)
        return await one(self, write)

    monkeypatch.setattr(_Writer, "_alone", spy)
    return sent


# -- helpers -----------------------------------------------------------------------------------


_DECISIONS = {
    RequestStatus.APPROVED: LifecycleDecision.APPROVED,
    RequestStatus.CANCELED: LifecycleDecision.CANCELED,
}


def _decided(request: MutationRequest, status: RequestStatus) -> MutationRequest:
    at = request.updated_at + timedelta(seconds=1)
    decision = RequestDecision(_DECISIONS[status], request.context, "test", at)
    return attrs.evolve(
        request,
        status=status,
        pending_reason=None,
        updated_at=at,
        decisions=(*request.decisions, decision),
    )


def _create(request_id: str) -> GovernedCommit:
    return GovernedCommit((RequestWrite.create(sample_request(request_id)),))


async def _created(store: PostgresStore, request_id: str) -> MutationRequest:
    (stored,) = await store.committer.commit(_create(request_id))
    return stored


async def _snapshot(url: str, schema: str) -> dict[str, list[Any]]:
    s = f'"{schema}"'
    return {
        table: await execute_sql(url, f"SELECT * FROM {s}.{table} ORDER BY 1, 2")
        for table in ("requests", "decisions", "states", "state_versions", "audit", "history")
    }


async def _logs_match(store: PostgresStore) -> None:
    page = await store.requests.list(limit=1000)
    for request in page.items:
        assert tuple(await store.decisions.for_request(request.request_id)) == request.decisions


_BAD = "NEW.request_id = 'bad'"
"""The rows a fault is injected for."""


async def _deadlocks(url: str) -> int:
    ((count,),) = await execute_sql(
        url, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(count)


@attrs.define
class _Gate:
    """Another session's lock on a request row: the write of that row waits for it."""

    connection: psycopg.AsyncConnection[Any]

    @classmethod
    async def hold(cls, url: str, schema: str, request_id: str) -> _Gate:
        connection = await psycopg.AsyncConnection.connect(url)
        await connection.execute(
            f'SELECT 1 FROM "{schema}".requests WHERE request_id = %s FOR UPDATE',
            (request_id,),
        )
        return cls(connection)

    async def open(self) -> None:
        await self.connection.rollback()
        await self.connection.close()


async def _wait_until(check: Any) -> None:
    """Poll ``check`` (the writer's own counters: nothing to wait on but time)."""
    with anyio.fail_after(10):
        while not check():  # noqa: ASYNC110
            await anyio.sleep(0.005)


async def _together(
    store: PostgresStore,
    url: str,
    commits: Sequence[GovernedCommit],
    *,
    cancel: frozenset[int] = frozenset(),
    gate_id: str = "gate",
    queued: anyio.Event | None = None,
    go: anyio.Event | None = None,
) -> list[Any]:
    """Run ``commits`` as one group: each outcome (stored requests or the error raised).

    A write of the request ``gate_id`` (created here) is held in flight by another
    session until every commit waits behind it; the commits listed in ``cancel`` are
    cancelled while they wait. With ``queued`` and ``go``, set ``queued`` once they wait
    and let the gate go only when ``go`` is set.
    """
    gate = await _created(store, gate_id)
    held = await _Gate.hold(url, store.schema, gate_id)
    writer = store._writer
    outcomes: list[Any] = [None] * len(commits)
    scopes = [anyio.CancelScope() for _ in commits]

    async def run(index: int, commit: GovernedCommit) -> None:
        with scopes[index]:
            try:
                outcomes[index] = await store.committer.commit(commit)
            except Exception as error:
                outcomes[index] = error
            return
        outcomes[index] = "cancelled"

    opened = GovernedCommit((RequestWrite.update(gate, _decided(gate, RequestStatus.APPROVED)),))
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(store.committer.commit, opened)
            await _wait_until(lambda: writer._flying == 1)
            for index, commit in enumerate(commits):
                group.start_soon(run, index, commit)
            await _wait_until(lambda: len(writer._waiting) == len(commits))
            for index in cancel:
                scopes[index].cancel()
            await _wait_until(lambda: len(writer._waiting) == len(commits) - len(cancel))
            if queued is not None and go is not None:
                queued.set()
                await go.wait()
            await held.open()
    finally:
        if not held.connection.closed:
            await held.open()
    return outcomes


# -- grouping ----------------------------------------------------------------------------------


async def test_writes_that_wait_for_a_flight_share_one_statement(
    postgres_url: str, store: PostgresStore, batches: list[int]
) -> None:
    ids = [f"req-{n}" for n in range(5)]
    outcomes = await _together(store, postgres_url, [_create(i) for i in ids])
    assert batches == [5]
    for request_id, outcome in zip(ids, outcomes, strict=True):
        (stored,) = outcome
        assert stored.request_id == request_id
        assert await store.requests.get(request_id) == stored
    await _logs_match(store)


async def test_writers_ready_at_the_same_moment_share_the_first_flight(
    store: PostgresStore, batches: list[int], alone: list[str]
) -> None:
    """A worker starts a batch of claims at once: they go as one statement, not as one
    alone and the rest together."""
    async with anyio.create_task_group() as group:
        for n in range(4):
            group.start_soon(store.committer.commit, _create(f"req-{n}"))
    assert batches == [4]
    assert alone == []
    for n in range(4):
        assert await store.requests.get(f"req-{n}") is not None


async def test_a_write_alone_is_not_grouped(store: PostgresStore, batches: list[int]) -> None:
    for n in range(3):
        await _created(store, f"req-{n}")
    assert batches == []


async def test_each_write_of_a_group_gets_the_error_it_would_get_alone(
    postgres_url: str, store: PostgresStore, batches: list[int], alone: list[str]
) -> None:
    await store.states.put("sample:1", SampleState("sample", 1))
    existing = await _created(store, "existing")
    moved = await _created(store, "moved")
    await store.committer.commit(
        GovernedCommit((RequestWrite.update(moved, _decided(moved, RequestStatus.APPROVED)),))
    )
    stale_state = StateWrite("sample:1", SampleState("sample", 9), "7", "8", None)
    commits = [
        _create("fresh-1"),
        _create(existing.request_id),
        GovernedCommit((RequestWrite.update(moved, _decided(moved, RequestStatus.CANCELED)),)),
        GovernedCommit((), stale_state),
        _create("fresh-2"),
    ]
    before = await _snapshot(postgres_url, store.schema)
    sent = len(alone)
    outcomes = await _together(store, postgres_url, commits)
    assert batches == [5]
    assert len(alone) == sent + 2, "the gate's creation and write; the group in one statement"
    assert [o[0].request_id for o in (outcomes[0], outcomes[4])] == ["fresh-1", "fresh-2"]
    assert isinstance(outcomes[1], RequestAlreadyExistsError)
    assert isinstance(outcomes[2], RequestConcurrencyError)
    assert (outcomes[2].expected_revision, outcomes[2].actual_revision) == (0, 1)
    assert isinstance(outcomes[3], ConcurrencyError)
    assert not isinstance(outcomes[3], RequestConcurrencyError)
    after = await _snapshot(postgres_url, store.schema)
    # The failed writes left nothing; only the gate and the two new requests changed.
    assert after["states"] == before["states"]
    assert after["state_versions"] == before["state_versions"]
    stored_moved = await store.requests.get("moved")
    assert stored_moved is not None
    assert stored_moved.status is RequestStatus.APPROVED
    await _logs_match(store)


async def test_a_server_error_in_a_group_falls_back_to_one_statement_per_write(
    postgres_url: str, store: PostgresStore, batches: list[int], alone: list[str]
) -> None:
    await _inject(postgres_url, store.schema, "requests", "INSERT", "fail", when=_BAD)
    outcomes = await _together(
        store, postgres_url, [_create("ok-1"), _create("bad"), _create("ok-2")]
    )
    assert batches == [3]
    assert isinstance(outcomes[1], StoreUnavailableError)
    assert "injected fault" in str(outcomes[1])
    assert [outcomes[0][0].request_id, outcomes[2][0].request_id] == ["ok-1", "ok-2"]
    assert await store.requests.get("bad") is None
    assert await store.decisions.for_request("bad") == ()
    await _logs_match(store)


async def test_a_write_whose_text_cannot_be_sent_fails_alone(
    postgres_url: str, store: PostgresStore, batches: list[int]
) -> None:
    """A lone surrogate cannot be encoded: the group is never sent, and only that write
    fails (with the error it raises alone); the others are written."""
    bad = GovernedCommit((RequestWrite.create(sample_request("bad", actor_id="x\ud800")),))
    outcomes = await _together(store, postgres_url, [_create("ok-1"), bad, _create("ok-2")])
    assert batches == [3]
    assert isinstance(outcomes[1], UnicodeEncodeError)
    assert [outcomes[0][0].request_id, outcomes[2][0].request_id] == ["ok-1", "ok-2"]
    assert await store.requests.get("bad") is None
    await _logs_match(store)


async def test_a_group_cancelled_by_statement_timeout_goes_again_alone(
    postgres_url: str, schema: str, batches: list[int]
) -> None:
    """One write waits for a row another session holds: the group's statement times out,
    and the other writes are written alone instead of all failing with it."""
    url = with_schema(postgres_url, schema) + "&write_flights=1&statement_timeout=0.5"
    store = await PostgresStore.open(url, registry=sample_registry())
    try:
        locked = await _created(store, "locked")
        held = await _Gate.hold(postgres_url, schema, "locked")
        try:
            approve = RequestWrite.update(locked, _decided(locked, RequestStatus.APPROVED))
            outcomes = await _together(
                store, postgres_url, [GovernedCommit((approve,)), _create("ok-1"), _create("ok-2")]
            )
        finally:
            await held.open()
        assert batches == [3]
        assert isinstance(outcomes[0], StoreUnavailableError)
        assert "statement_timeout" in str(outcomes[0])
        assert [outcomes[1][0].request_id, outcomes[2][0].request_id] == ["ok-1", "ok-2"]
        await _logs_match(store)
    finally:
        await store.aclose()


async def test_a_writer_cancelled_while_waiting_writes_nothing(
    postgres_url: str, store: PostgresStore, batches: list[int]
) -> None:
    ids = ["req-0", "req-1", "req-2"]
    outcomes = await _together(
        store, postgres_url, [_create(i) for i in ids], cancel=frozenset({1})
    )
    assert outcomes[1] == "cancelled"
    assert batches == [2]
    assert await store.requests.get("req-1") is None
    assert await store.requests.get("req-0") is not None
    assert await store.requests.get("req-2") is not None
    assert store._writer._waiting == type(store._writer._waiting)()


async def test_a_connection_lost_mid_group_fails_its_writes_and_writes_none_of_them(
    postgres_url: str, store: PostgresStore, batches: list[int]
) -> None:
    await _inject(postgres_url, store.schema, "requests", "INSERT", "die", when=_BAD)
    outcomes = await _together(
        store, postgres_url, [_create("ok-1"), _create("bad"), _create("ok-2")]
    )
    assert batches == [3]
    assert all(isinstance(o, StoreUnavailableError) for o in outcomes)
    # Each writer raised its own error (one object raised by several tasks would mix
    # their tracebacks), saying the same.
    assert len({id(o) for o in outcomes}) == 3
    assert len({str(o) for o in outcomes}) == 1
    assert all(o.url == outcomes[0].url for o in outcomes)
    for request_id in ("ok-1", "bad", "ok-2"):
        assert await store.requests.get(request_id) is None
    await execute_sql(postgres_url, f'DROP TRIGGER fault ON "{store.schema}".requests')
    # The store goes on: the same writes land afterwards.
    for request_id in ("ok-1", "bad", "ok-2"):
        await _created(store, request_id)
    await _logs_match(store)


async def _crossed(
    url: str,
    stores: Sequence[PostgresStore],
    writes: Sequence[Sequence[GovernedCommit]],
    round_: int,
) -> list[list[Any]]:
    """Queue ``writes[i]`` in ``stores[i]``, then let every group go at once."""
    queued = [anyio.Event() for _ in stores]
    go = anyio.Event()
    results: list[list[Any]] = [[] for _ in stores]

    async def group(index: int) -> None:
        results[index] = await _together(
            stores[index],
            url,
            writes[index],
            gate_id=f"gate-{round_}-{index}",
            queued=queued[index],
            go=go,
        )

    async with anyio.create_task_group() as tasks:
        for index in range(len(stores)):
            tasks.start_soon(group, index)
        for event in queued:
            await event.wait()
        go.set()
    return results


@contextlib.asynccontextmanager
async def _two_processes(url: str, schema: str) -> AsyncIterator[list[PostgresStore]]:
    """Two grouping stores on one schema (two processes, as far as the server can tell);
    the server must have counted no deadlock by the end of the block."""
    stores = [await _open(url, schema) for _ in range(2)]
    try:
        deadlocks = await _deadlocks(url)
        yield stores
        assert await _deadlocks(url) == deadlocks
    finally:
        for store in stores:
            await store.aclose()


async def _slowly(url: str, schema: str, table: str, event: str) -> None:
    """Each ``event`` on a row of ``table`` (but the gates) takes a while, so both groups
    hold their first row before either asks for its second."""
    column = f"{table[:-1]}_id"
    when = f"NEW.{column} NOT LIKE 'gate%%'"
    await _inject(url, schema, table, event, "slow", when=when)


async def test_crossed_groups_of_two_stores_do_not_deadlock(postgres_url: str, schema: str) -> None:
    """Two processes' groups write the same states in opposite orders at the same moment:
    every group takes its locks in one order, so the server has no deadlock to break."""
    async with _two_processes(postgres_url, schema) as stores:
        for state_id in ("a", "b"):
            await stores[0].states.put(state_id, SampleState(state_id, 0))
        await _slowly(postgres_url, schema, "states", "UPDATE")
        for round_ in range(3):
            expected, new = str(round_ + 1), str(round_ + 2)
            writes = [
                [
                    GovernedCommit((), StateWrite(s, SampleState(s, round_), expected, new, None))
                    for s in order
                ]
                for order in ("ab", "ba")
            ]
            results = await _crossed(postgres_url, stores, writes, round_)
            # Each state was written once per round, by one of the two groups.
            for state_id in ("a", "b"):
                state = await stores[0].states.get(state_id)
                assert state is not None
                assert state.version == new
            failed = [o for r in results for o in r if isinstance(o, Exception)]
            assert len(failed) == 2
            assert all(isinstance(o, ConcurrencyError) for o in failed), failed


async def test_crossed_groups_creating_the_same_states_do_not_deadlock(
    postgres_url: str, schema: str
) -> None:
    """Two processes' groups create the same new states in opposite orders: rows that do
    not exist yet cannot be locked, so without locking their ids the server would have a
    deadlock to break (a second's stall, then every write again alone)."""
    async with _two_processes(postgres_url, schema) as stores:
        await _slowly(postgres_url, schema, "states", "INSERT")
        for round_ in range(2):
            writes = [
                [
                    GovernedCommit(
                        (), StateWrite(f"{s}{round_}", SampleState(s, n), None, "1", None)
                    )
                    for s in order
                ]
                for n, order in enumerate(("ab", "ba"))
            ]
            results = await _crossed(postgres_url, stores, writes, round_)
            # One group created both states; the other found them created.
            assert sorted(isinstance(r[0], tuple) for r in results) == [False, True]
            for outcomes in results:
                assert len({type(o) for o in outcomes}) == 1
            failed = [o for r in results for o in r if isinstance(o, Exception)]
            assert all(isinstance(o, ConcurrencyError) for o in failed), failed


async def test_crossed_groups_creating_the_same_requests_do_not_deadlock(
    postgres_url: str, schema: str
) -> None:
    """The same for requests: two processes submit the same ids in opposite orders."""
    async with _two_processes(postgres_url, schema) as stores:
        await _slowly(postgres_url, schema, "requests", "INSERT")
        writes = [[_create(f"req-{x}") for x in order] for order in ("ab", "ba")]
        results = await _crossed(postgres_url, stores, writes, 0)
        failed = [o for r in results for o in r if isinstance(o, Exception)]
        assert len(failed) == 2
        assert all(isinstance(o, RequestAlreadyExistsError) for o in failed), failed
