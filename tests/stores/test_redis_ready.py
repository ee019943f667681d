"""The Redis store's worker seams: ready batches, wake-ups, quarantine, retention purge,
the schema-3 upgrade and the mutation-type index. Asyncio only; each test has its own
key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

from mutator import MutationContext
from mutator_governance import (
    QUARANTINE_LOGGER,
    Governance,
    GovernanceStore,
    PendingReason,
    PurgeBatch,
    RequestQuery,
    RequestStatus,
    StoredDataError,
    purgeable,
)
from mutator_governance._commit_types import GovernedCommit, RequestWrite
from mutator_governance._decisions import RequestDecision, numbered
from mutator_governance._enums import ExecutionKind, LifecycleDecision
from mutator_governance._request import CompensationPlan, ExecutionDetails, MutationRequest
from mutator_governance._transitions import transition
from mutator_governance.stores._redis import RedisStore
from mutator_governance.testing import ReadyQueueContract, sample_registry, sample_request

from .test_redis import RedisFixtures, _open, _with_prefix, store_fixtures

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


prefix, store = store_fixtures(sample_registry)


async def _spoil(store: RedisStore, request_id: str, how: str) -> None:
    """Make one stored request unreadable: bad JSON, unknown type or a wrong-type field."""
    key = store.keys.request(request_id)
    raw = await store.client.hget(key, "document")
    assert raw is not None
    if how == "json":
        await store.client.hset(key, "document", b"{not json" + raw)
        return
    document = json.loads(raw)
    if how == "type":
        document["request"]["mutation_type"] = "nobody.registered.this"
        document["request"]["mutation"]["$type"] = "nobody.registered.this"
    else:
        document["request"]["state_id"] = ["not", "a", "string"]
    await store.client.hset(key, "document", json.dumps(document))


class RedisContractStores(RedisFixtures):
    """Contract stores on fresh prefixes (the fixture closes them); ``corrupt`` spoils a
    stored request the subclass's ``how``."""

    how = "json"

    async def make_store(self) -> GovernanceStore:
        return await self._store()

    async def close_store(self, store: GovernanceStore) -> None:
        """The fixture closes every opened store."""

    async def corrupt(self, store: GovernanceStore, request_id: str) -> None:
        assert isinstance(store, RedisStore)
        await _spoil(store, request_id, self.how)


class _ReadyContract(RedisContractStores, ReadyQueueContract):
    pass


class TestRedisReadyQueue(_ReadyContract):
    how = "json"


class TestRedisReadyQueueUnknownType(_ReadyContract):
    how = "type"


def _ids(requests: Sequence[MutationRequest]) -> list[str]:
    return [r.request_id for r in requests]


async def _commit(store: RedisStore, request: MutationRequest) -> MutationRequest:
    (stored,) = await store.committer.commit(GovernedCommit((RequestWrite.create(request),)))
    return stored


async def _move(
    store: RedisStore, request: MutationRequest, status: RequestStatus, **changes: Any
) -> MutationRequest:
    at = request.updated_at + timedelta(seconds=1)
    decision = RequestDecision(LifecycleDecision.RELEASED, MutationContext.system("t"), "t", at)
    moved = transition(request, status, [decision], at=at, **changes)
    (stored,) = await store.committer.commit(GovernedCommit((RequestWrite.update(request, moved),)))
    return stored


async def _reserve(store: RedisStore, limit: int, **options: Any) -> Sequence[MutationRequest]:
    now = options.pop("now", T0)
    return await store.requests.reserve(
        owner=options.pop("owner", "w"), limit=limit, now=now, until=now + LEASE, **options
    )


# -- quarantine -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_poison_pills_in_every_status_stop_nothing(
    store: RedisStore, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    healthy: list[MutationRequest] = []
    poison: list[str] = []
    ways = ["json", "type", "field"]
    for n, status in enumerate(RequestStatus):
        for kind in ("ok", "bad"):
            request_id = f"{status.value}-{kind}"
            reason = PendingReason.REVALIDATION if status is RequestStatus.PENDING else None
            request = sample_request(
                request_id,
                status=status,
                pending_reason=reason,
                created_at=T0 + timedelta(seconds=2 * n + (kind == "bad")),
                expires_at=T0 if status is RequestStatus.PENDING else None,
            )
            stored = await _commit(store, request)
            if kind == "ok":
                healthy.append(stored)
            else:
                await _spoil(store, request_id, ways[n % len(ways)])
                poison.append(request_id)
    caplog.set_level(logging.WARNING, logger=QUARANTINE_LOGGER)

    pages: list[str] = []
    cursor = None
    while True:
        page = await store.requests.list(limit=2, cursor=cursor)
        pages += _ids(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == _ids(healthy)
    assert _ids(await store.requests.pending()) == ["pending-ok"]
    assert len(await store.requests.by_state(healthy[0].state_id)) == len(healthy)
    batch = await _reserve(store, 10, revalidation=True)
    assert _ids(batch) == ["pending-ok", "approved-ok"]
    logged = [r for r in caplog.records if r.name == QUARANTINE_LOGGER]
    assert sorted(r.request_id for r in logged) == sorted(poison)  # type: ignore[attr-defined]
    assert sorted(e.request_id for e in await store.requests.quarantined()) == sorted(poison)
    for request_id in poison:
        with pytest.raises(StoredDataError):
            await store.requests.get(request_id)

    async with Governance.open(
        _with_prefix(redis_url, store.prefix), registry=sample_registry()
    ) as gov:
        swept = await gov.expire_due(now=T0 + timedelta(days=1))
        assert [r.request_id for r in swept.expired] == ["pending-ok"]
        await gov.recover(now=T0 + timedelta(days=1))
    assert len(await store.requests.quarantined()) == len(poison)
    assert len(logged) == len(poison)  # each quarantined once


@pytest.mark.anyio
async def test_a_document_under_another_id_is_quarantined_not_dropped(store: RedisStore) -> None:
    a = await _commit(store, sample_request("a", status=RequestStatus.APPROVED, created_at=T0))
    await _commit(store, sample_request("b", status=RequestStatus.APPROVED, created_at=T0))
    other = await store.client.hget(store.keys.request("b"), "document")
    await store.client.hset(store.keys.request(a.request_id), "document", other)
    assert _ids(await _reserve(store, 10)) == ["b"]
    (entry,) = await store.requests.quarantined()
    assert (entry.request_id, entry.field) == ("a", "document.request_id")
    assert await store.requests.release("a") is True
    assert _ids((await store.requests.list()).items) == ["b"]
    assert [e.request_id for e in await store.requests.quarantined()] == ["a"]


# -- ready batches ----------------------------------------------------------------------------


async def _bulk(store: RedisStore, requests: Sequence[MutationRequest]) -> None:
    limiter = anyio.Semaphore(32)

    async def one(request: MutationRequest) -> None:
        async with limiter:
            await _commit(store, request)

    async with anyio.create_task_group() as tg:
        for request in requests:
            tg.start_soon(one, request)


@pytest.mark.anyio
async def test_reserve_reads_do_not_grow_with_terminal_requests(store: RedisStore) -> None:
    ready = [
        sample_request(f"ready-{i:03d}", status=RequestStatus.APPROVED, created_at=T0)
        for i in range(50)
    ]
    await _bulk(store, ready)
    real = store._b.evalsha
    reads: list[int] = []

    async def spy(script: Any, keys: Any, args: Any) -> Any:
        reply = await real(script, keys, args)
        if script is store._b.reserve_script:
            reads.append(int(reply[0]))
        return reply

    store._b.evalsha = spy  # type: ignore[method-assign]
    await _reserve(store, 1)  # loads the script
    await store.client.delete(store.keys.reserved)
    measured: dict[int, tuple[list[int], float]] = {}
    done = 0
    for terminal in (1000, 5000):
        await _bulk(
            store,
            [
                sample_request(
                    f"done-{i:05d}",
                    status=RequestStatus.EXECUTED,
                    created_at=T0 - timedelta(seconds=i),
                )
                for i in range(done, terminal)
            ],
        )
        done = terminal
        reads.clear()
        started = time.perf_counter()
        for _ in range(5):  # each round skips the ones the earlier rounds hold
            batch = await _reserve(store, 10, owner=f"w{terminal}")
            assert len(batch) == 10
        elapsed = (time.perf_counter() - started) / 5
        measured[terminal] = (list(reads), elapsed)
        await store.client.delete(store.keys.reserved)
    print(f"reads per reserve and seconds: {measured}")
    assert measured[1000][0] == measured[5000][0]
    assert measured[1000][0][0] < measured[1000][0][-1]  # reservations held by others cost


@pytest.mark.anyio
async def test_four_reservers_on_separate_clients_take_disjoint_batches(
    store: RedisStore, redis_url: str
) -> None:
    await _bulk(
        store,
        [
            sample_request(f"r-{i:03d}", status=RequestStatus.APPROVED, created_at=T0)
            for i in range(60)
        ],
    )
    others = [await _open(redis_url, store.prefix) for _ in range(4)]
    taken: list[list[str]] = [[] for _ in others]
    try:

        async def work(n: int) -> None:
            for _ in range(5):
                taken[n] += _ids(await _reserve(others[n], 3, owner=f"w{n}"))

        async with anyio.create_task_group() as tg:
            for n in range(len(others)):
                tg.start_soon(work, n)
    finally:
        for other in others:
            await other.aclose()
    handed = [i for batch in taken for i in batch]
    assert len(handed) == len(set(handed)) == 60
    assert all(len(batch) == 15 for batch in taken)


# -- wake-ups ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_approval_from_another_instance_wakes_within_50ms(
    store: RedisStore, redis_url: str
) -> None:
    other = await _open(redis_url, store.prefix)
    latencies: list[float] = []
    woke: list[float] = []

    async def wait() -> None:
        assert await store.requests.wait_ready(5.0) is True
        woke.append(time.perf_counter())

    try:
        await store.requests.wait_ready(0.05)  # the first call subscribes
        for n in range(50):
            pending = await _commit(other, sample_request(f"p-{n}", created_at=T0))
            woke.clear()
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.01)
                started = time.perf_counter()
                await _move(other, pending, RequestStatus.APPROVED)
            latencies.append(woke[0] - started)
    finally:
        await other.aclose()
    latencies.sort()
    median = statistics.median(latencies)
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(
        f"wake-up latency ms: median {median * 1000:.2f} p95 {p95 * 1000:.2f} "
        f"max {latencies[-1] * 1000:.2f}"
    )
    assert median < 0.05
    assert p95 < 0.05


@pytest.mark.anyio
async def test_a_signal_between_two_waits_is_kept(store: RedisStore) -> None:
    await store.requests.wait_ready(0.05)
    assert await store.requests.wait_ready(0.05) is False
    await _commit(store, sample_request("a", status=RequestStatus.APPROVED))
    await anyio.sleep(0.2)  # the signal arrives while nobody waits
    assert await store.requests.wait_ready(1.0) is True
    assert await store.requests.wait_ready(0.05) is False
    await _commit(store, sample_request("b", status=RequestStatus.PENDING))
    assert await store.requests.wait_ready(0.05) is False


@pytest.mark.anyio
async def test_a_killed_listener_connection_recovers(
    store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mutator.governance.redis")
    await store.requests.wait_ready(0.05)
    connection = store.requests._listener._connection
    host, port = connection._writer.get_extra_info("sockname")[:2]
    killed = await store.client.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
    assert killed
    started = time.perf_counter()
    assert await store.requests.wait_ready(5.0) is False
    assert time.perf_counter() - started < 1.0  # the loss is reported at once
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "lost" in warning.getMessage()
    assert await store.requests.wait_ready(1.0) is True  # reconnected: look once
    assert await store.requests.wait_ready(0.05) is False
    await _commit(store, sample_request("a", status=RequestStatus.APPROVED))
    assert await store.requests.wait_ready(1.0) is True


@pytest.mark.anyio
async def test_an_unreachable_server_makes_wait_ready_time_out_not_raise(
    store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mutator.governance.redis")
    settings = store.client.connection_pool.connection_kwargs
    real_port = settings["port"]
    settings["port"] = 1
    try:
        for _ in range(3):
            started = time.perf_counter()
            assert await store.requests.wait_ready(0.2) is False
            assert time.perf_counter() - started >= 0.15  # waited, did not spin
    finally:
        settings["port"] = real_port
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert await store.requests.wait_ready(1.0) is True
    assert await store.requests.wait_ready(0.05) is False


@pytest.mark.anyio
async def test_one_signal_wakes_every_waiting_task(store: RedisStore) -> None:
    await store.requests.wait_ready(0.05)
    woken: list[bool] = []

    async def wait() -> None:
        woken.append(await store.requests.wait_ready(5.0))

    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(wait)
            await anyio.sleep(0.05)
            await _commit(store, sample_request("a", status=RequestStatus.APPROVED))
    assert woken == [True, True, True]


# -- retention purge ---------------------------------------------------------------------------


def _decided(request_id: str, status: RequestStatus, at: datetime, **changes: Any) -> Any:
    decisions = numbered(
        [
            RequestDecision(LifecycleDecision.SUBMITTED, MutationContext.system("t"), "t", at),
            RequestDecision(LifecycleDecision.RELEASED, MutationContext.system("t"), "t", at),
        ]
    )
    return sample_request(
        request_id, status=status, created_at=at, updated_at=at, decisions=decisions, **changes
    )


async def _members_by_key(store: RedisStore) -> dict[str, list[str]]:
    """The request ids in every request index of the store (index, ready and updated sets)."""
    found: dict[str, list[str]] = {}
    for pattern in ("index:*", "ready:*", "updated:*"):
        async for key in store.client.scan_iter(match=f"{store.prefix}:{pattern}", count=500):
            members = await store.client.zrange(key, 0, -1)
            found[key.decode()] = [m[19:].decode() for m in members]
    return found


async def _assert_consistent(store: RedisStore, gone: set[str]) -> None:
    """No index, log, reservation, segment or recent decision mentions a purged request."""
    for key, ids in (await _members_by_key(store)).items():
        for request_id in ids:
            assert request_id not in gone, f"{request_id} left in {key}"
            assert await store.client.exists(store.keys.request(request_id)), key
    for request_id in gone:
        assert not await store.client.exists(
            store.keys.request(request_id),
            store.keys.decisions(request_id),
            store.keys.decision_members(request_id),
        )
        assert not await store.client.hexists(store.keys.segments, request_id)
    assert not {r.request_id for r in await store.decisions.recent(1000)} & gone
    listed = {r.request_id for r in (await store.requests.list(limit=1000)).items}
    assert not listed & gone


@pytest.mark.anyio
async def test_purge_deletes_old_terminal_requests_with_decisions_and_every_index(
    store: RedisStore, redis_url: str
) -> None:
    old, recent = T0, T0 + timedelta(days=30)
    requests = [
        _decided("old-executed", RequestStatus.EXECUTED, old, actor_id="bob"),
        _decided("old-rejected", RequestStatus.REJECTED, old + timedelta(seconds=1)),
        _decided("old-canceled", RequestStatus.CANCELED, old + timedelta(seconds=2)),
        _decided("old-pending", RequestStatus.PENDING, old),
        _decided("old-approved", RequestStatus.APPROVED, old),
        _decided("new-executed", RequestStatus.EXECUTED, recent),
        _decided("original", RequestStatus.EXECUTED, old),
        _decided(
            "undo",
            RequestStatus.PENDING,
            old + timedelta(seconds=3),
            execution=ExecutionDetails(
                ExecutionKind.COMPENSATION, CompensationPlan(original_request_id="original")
            ),
        ),
    ]
    for request in requests:
        await _commit(store, request)
    await _reserve(store, 5)
    before = old + timedelta(days=1)
    statuses = frozenset(s for s in RequestStatus if s.is_terminal)
    expected = purgeable(requests, before=before, statuses=statuses, limit=100)
    assert {r.request_id for r in expected} == {"old-executed", "old-rejected", "old-canceled"}

    first = await store.requests.purge(before=before, statuses=statuses, limit=2)
    assert first.request_ids == ("old-executed", "old-rejected")  # oldest updated first
    assert first.decisions == 4
    async with Governance.open(
        _with_prefix(redis_url, store.prefix), registry=sample_registry()
    ) as gov:
        report = await gov.purge(older_than=timedelta(days=29), now=recent, batch_size=2)
        assert (report.requests, report.decisions) == (1, 2)
        gone = {"old-executed", "old-rejected", "old-canceled"}
        await _assert_consistent(store, gone)
        kept = {r.request_id for r in (await store.requests.list(limit=100)).items}
        assert kept == {r.request_id for r in requests} - gone
        assert len(await store.decisions.for_request("original")) == 2

        # Once the compensation is terminal, its original goes too.
        undo = await store.requests.get("undo")
        assert undo is not None
        await _move(store, undo, RequestStatus.CANCELED)
        report = await gov.purge(older_than=timedelta(days=29), now=recent)
        assert report.requests == 2  # the original and the canceled compensation
        await _assert_consistent(store, gone | {"original", "undo"})
    assert {r.request_id for r in (await store.requests.list(limit=100)).items} == {
        "old-pending",
        "old-approved",
        "new-executed",
    }
    assert _ids(await _reserve(store, 5, now=T0 + LEASE * 2)) == ["old-approved"]


@pytest.mark.anyio
async def test_purge_limit_below_one_is_refused(store: RedisStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.requests.purge(before=T0, statuses=frozenset({RequestStatus.EXECUTED}), limit=0)


# -- mutation-type index -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_mutation_types_are_answered_from_their_index(store: RedisStore) -> None:
    for n in range(5):
        await _commit(store, sample_request(f"r{n}", created_at=T0 + timedelta(seconds=n)))
    wanted = RequestQuery(mutation_types={"testing.sample"}, statuses={RequestStatus.PENDING})
    route = await store.requests._route(RequestQuery(mutation_types={"other"}))
    assert route.keys == (store.keys.index("type", "other"),)
    assert _ids((await store.requests.list(wanted, limit=3)).items) == ["r0", "r1", "r2"]
    assert (await store.requests.list(RequestQuery(mutation_types={"other"}))).items == ()
    assert await store.client.zcard(store.keys.index("type", "testing.sample")) == 5


# -- schema 3 upgrade --------------------------------------------------------------------------


async def _downgrade_to_v2(store: RedisStore) -> None:
    """Turn the store's keyspace back into what schema 2 wrote."""
    client, keys = store.client, store.keys
    for pattern in (
        "index:type:*",
        "index:compensates:*",
        "ready:*",
        "updated:*",
        "decision-members:*",
        "due",
    ):
        async for key in client.scan_iter(match=f"{keys.prefix}:{pattern}", count=500):
            await client.delete(key)
    await client.delete(keys.segments, keys.reserved, keys.quarantine)
    v3 = (":index:type:", ":index:compensates:", ":ready:")
    async for key in client.scan_iter(match=f"{keys.prefix}:request:*", count=500):
        indexes = (await client.hget(key, "indexes") or b"").decode()
        kept = [k for k in indexes.split("\n") if not any(part in k for part in v3)]
        await client.hset(key, "indexes", "\n".join(kept))
        await client.hdel(key, "umember", "uindexes", "dmember")
        document = await client.hget(key, "document")
        await client.hset(key, "document", document.replace(b'{"schema":3', b'{"schema":2'))
    await client.hset(keys.meta, "schema", "2")


@pytest.mark.anyio
async def test_a_schema_2_store_is_upgraded_on_open(store: RedisStore, redis_url: str) -> None:
    await _commit(store, sample_request("p", created_at=T0))
    await _commit(store, sample_request("a", status=RequestStatus.APPROVED, created_at=T0))
    await _commit(
        store,
        sample_request(
            "v",
            pending_reason=PendingReason.REVALIDATION,
            created_at=T0 + timedelta(seconds=1),
            expires_at=T0 + timedelta(hours=1),
        ),
    )
    await _commit(store, _decided("x", RequestStatus.EXECUTED, T0))
    await _commit(store, sample_request("bad", status=RequestStatus.APPROVED, created_at=T0))
    await _spoil(store, "bad", "json")
    await _downgrade_to_v2(store)
    assert not [k for k in await _members_by_key(store) if ":ready:" in k or ":type:" in k]

    upgraded = await _open(redis_url, store.prefix)
    try:
        assert await upgraded.client.hget(upgraded.keys.meta, "schema") == b"4"
        requests = upgraded.requests
        assert _ids(await _reserve(upgraded, 10, revalidation=True)) == ["a", "v"]
        query = RequestQuery(mutation_types={"testing.sample"})
        assert _ids((await requests.list(query)).items) == ["a", "p", "x", "v"]
        batch = await requests.purge(
            before=T0 + timedelta(days=1), statuses=frozenset({RequestStatus.EXECUTED}), limit=10
        )
        assert batch == PurgeBatch(("x",), 2)
        await _assert_consistent(upgraded, {"x"})
        assert [e.request_id for e in await requests.quarantined()] == ["bad"]
        assert _ids(await requests.due(now=T0 + timedelta(days=1), limit=10)) == ["v"]
    finally:
        await upgraded.aclose()
