"""The Redis backend: contract suites, comparison with the in-memory reference, governance
end to end, restarts, key escaping, corrupt data, unavailability and exactly-once execution.

Every test uses its own key prefix (a uuid) in the database of ``redis_url`` (db 15 by
default) and deletes its keys afterwards. Asyncio only.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import anyio
import attrs
import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

import redis.asyncio as aioredis

from mutator import (
    AuditEntry,
    ConcurrencyError,
    HistoryEntry,
    Mutation,
    MutationContext,
    MutationIntent,
)
from mutator_governance import (
    DecisionHistory,
    Governance,
    GovernanceError,
    MutationRegistry,
    PendingReason,
    RequestAlreadyExistsError,
    RequestConcurrencyError,
    RequestQuery,
    RequestStatus,
    RequestStore,
    StateStore,
    StoredDataError,
    StoreUnavailableError,
)
from mutator_governance._commit_types import GovernedCommit, RequestWrite, StateWrite
from mutator_governance._decisions import numbered
from mutator_governance.stores import open_store
from mutator_governance.stores._redis import RedisStore, escape_segment
from mutator_governance.testing import (
    DecisionHistoryContract,
    RequestStoreContract,
    SampleState,
    StateStoreContract,
    make_store_comparison,
    sample_decision,
    sample_registry,
    sample_request,
)

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


async def _drop(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (SCAN, never KEYS)."""
    client = aioredis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}:*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                await client.delete(*batch)
                batch.clear()
        if batch:
            await client.delete(*batch)
    finally:
        await client.aclose()


async def _open(url: str, prefix: str, registry: MutationRegistry | None = None) -> RedisStore:
    return await RedisStore.open(url, registry=registry or sample_registry(), prefix=prefix)


class RedisFixtures:
    """Per-test prefix and cleanup for the contract subclasses (asyncio only)."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture(autouse=True)
    async def _redis_prefix(self, redis_url: str) -> AsyncIterator[None]:
        self.url = redis_url
        self.prefix = f"mutator-test-{uuid.uuid4().hex}"
        self.opened: list[RedisStore] = []
        yield
        for store in self.opened:
            await store.aclose()
        await _drop(redis_url, self.prefix)

    async def _store(self) -> RedisStore:
        store = await _open(self.url, self.prefix)
        self.opened.append(store)
        return store


class TestRedisRequestStore(RedisFixtures, RequestStoreContract):
    async def make_request_store(self) -> RequestStore:
        return (await self._store()).requests


class TestRedisDecisionHistory(RedisFixtures, DecisionHistoryContract):
    async def make_decision_history(self) -> DecisionHistory:
        return (await self._store()).decisions


class TestRedisStateStore(RedisFixtures, StateStoreContract):
    async def make_state_store(self) -> StateStore:
        return (await self._store()).states


# -- stateful comparison with the in-memory reference -----------------------------------------


class _Comparison:
    """Opens one store per example under a fresh prefix and drops it afterwards."""

    url: ClassVar[str] = ""
    open_stores: ClassVar[dict[int, RedisStore]] = {}

    @classmethod
    async def make(cls) -> RequestStore:
        store = await _open(cls.url, f"mutator-test-{uuid.uuid4().hex}")
        cls.open_stores[id(store.requests)] = store
        return store.requests

    @classmethod
    async def close(cls, requests: RequestStore) -> None:
        store = cls.open_stores.pop(id(requests))
        await store.aclose()
        await _drop(cls.url, store.prefix)


@pytest.fixture
def _comparison_url(redis_url: str) -> None:
    _Comparison.url = redis_url


_RedisComparison = make_store_comparison(
    _Comparison.make, close=_Comparison.close, backend="asyncio", name="RedisComparison"
)


@pytest.mark.usefixtures("_comparison_url")
class TestRedisComparison(_RedisComparison.TestCase):  # type: ignore[name-defined,misc]
    pass


# -- direct tests -------------------------------------------------------------------------------


@attrs.frozen
class Bump(Mutation[SampleState]):
    """Add ``by`` to the sample state's value (so a double execution shows)."""

    by: int = 1
    intent: ClassVar[MutationIntent] = MutationIntent("testing.bump", category="testing")

    def apply(self, state: SampleState) -> SampleState:
        return attrs.evolve(state, value=state.value + self.by)


def _registry() -> MutationRegistry:
    registry = sample_registry()
    registry.register(Bump, name="testing.bump")
    return registry


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def store_fixtures(registry: Callable[[], MutationRegistry] = _registry) -> tuple[Any, Any]:
    """A Redis test module's ``prefix`` (a fresh key prefix, dropped after the test) and
    ``store`` (opened on it with ``registry()``) fixtures: ``prefix, store = ...``."""

    @pytest.fixture
    async def prefix(redis_url: str) -> AsyncIterator[str]:
        name = f"mutator-test-{uuid.uuid4().hex}"
        yield name
        await _drop(redis_url, name)

    @pytest.fixture
    async def store(redis_url: str, prefix: str) -> AsyncIterator[RedisStore]:
        opened = await _open(redis_url, prefix, registry())
        yield opened
        await opened.aclose()

    return prefix, store


prefix, store = store_fixtures()


def _user(actor: str, at: datetime = T0) -> MutationContext:
    return MutationContext.user(actor, reason=f"{actor} decides", timestamp=at)


@pytest.mark.anyio
async def test_open_store_dispatch_and_url_prefix(redis_url: str, prefix: str) -> None:
    opened = await open_store(_with_prefix(redis_url, prefix), registry=sample_registry())
    try:
        assert isinstance(opened, RedisStore)
        assert opened.prefix == prefix
        await opened.requests.create(sample_request("r1"))
        assert await opened.client.hget(f"{prefix}:meta", "schema") == b"4"
        assert await opened.client.exists(f"{prefix}:request:r1") == 1
    finally:
        await opened.aclose()


@pytest.mark.anyio
async def test_blank_prefix_is_refused(redis_url: str) -> None:
    with pytest.raises(ValueError):
        await RedisStore.open(redis_url, registry=sample_registry(), prefix=" ")


@pytest.mark.anyio
async def test_governance_end_to_end(redis_url: str, prefix: str) -> None:
    registry = _registry()
    url = _with_prefix(redis_url, prefix)
    async with Governance.open(url, registry=registry) as gov:
        await gov.states.put("counter:1", SampleState("c", 0))
        request = await gov.submit(
            Bump(5),
            state_id="counter:1",
            context=_user("alice"),
            pending_reason=PendingReason.EXTERNAL_CHECK,
        )
        assert request.status is RequestStatus.PENDING
        assert [r.request_id for r in await gov.pending(PendingReason.EXTERNAL_CHECK)] == [
            request.request_id
        ]
        approved = await gov.approve(request.request_id, context=_user("bob"))
        assert approved.status is RequestStatus.APPROVED
        result = await gov.execute(request.request_id)
        assert result.executed
        assert result.resulting_version == "2"

    async with Governance.open(url, registry=registry) as gov:
        executed = await gov.get(request.request_id)
        assert executed.status is RequestStatus.EXECUTED
        state = await gov.states.get("counter:1")
        assert state is not None
        assert state.state == SampleState("c", 5)
        assert state.version == "2"
        assert state.request_id == request.request_id
        assert await gov.states.version_by_request("counter:1", request.request_id) == "2"
        codes = [d.code.name for d in await gov.decision_history(request.request_id)]
        assert codes[0] == "SUBMITTED"
        assert "APPROVED" in codes
        assert codes[-1] == "EXECUTED"
        listed = await gov.list(RequestQuery(statuses={RequestStatus.EXECUTED}))
        assert [r.request_id for r in listed.items] == [request.request_id]
        assert list(await gov.pending()) == []

    reopened = await _open(redis_url, prefix, registry)
    try:
        history = await reopened.history.history("counter:1")
        assert len(history) == 1
        audit = await reopened.audit.entries("counter:1")
        assert audit
        assert [e.execution_id for e in await reopened.audit.entries()] == [
            e.execution_id for e in audit
        ]
    finally:
        await reopened.aclose()


@pytest.mark.anyio
async def test_restart_loses_nothing(redis_url: str, prefix: str) -> None:
    first = await _open(redis_url, prefix)
    created = await first.requests.create(sample_request("r1", state_id="s:1"))
    replaced = await first.requests.replace(
        attrs.evolve(created, status=RequestStatus.APPROVED, pending_reason=None),
        expected_revision=0,
    )
    await first.requests.create(sample_request("r2", state_id="s:1", created_at=T0))
    await first.decisions.append("r1", numbered([sample_decision(timestamp=T0)]))
    await first.states.put("s:1", SampleState("s", 3), request_id="r1")
    await first.aclose()

    second = await _open(redis_url, prefix)
    try:
        assert await second.requests.get("r1") == replaced
        assert [r.request_id for r in await second.requests.by_state("s:1")] == ["r1", "r2"]
        assert [r.request_id for r in await second.requests.pending()] == ["r2"]
        assert list(await second.decisions.for_request("r1")) == list(
            numbered([sample_decision(timestamp=T0)])
        )
        state = await second.states.get("s:1")
        assert state is not None
        assert (state.state, state.version, state.request_id) == (SampleState("s", 3), "1", "r1")
        with pytest.raises(RequestConcurrencyError):
            await second.requests.replace(replaced, expected_revision=0)
    finally:
        await second.aclose()


@pytest.mark.anyio
async def test_ids_with_separators_do_not_collide(store: RedisStore) -> None:
    tricky = ["a:b", "a", "a%3Ab", "{a}:b", "a b", "all", "status:pending", "a\nb", "*"]
    for index, rid in enumerate(tricky):
        await store.requests.create(
            sample_request(rid, state_id=rid, created_at=T0 + timedelta(seconds=index))
        )
        await store.states.put(rid, SampleState(rid, index))
    for index, rid in enumerate(tricky):
        got = await store.requests.get(rid)
        assert got is not None
        assert got.request_id == rid
        assert [r.request_id for r in await store.requests.by_state(rid)] == [rid]
        state = await store.states.get(rid)
        assert state is not None
        assert state.state == SampleState(rid, index)
    assert [r.request_id for r in (await store.requests.list()).items] == tricky
    keys = {
        k.decode() if isinstance(k, bytes) else k
        async for k in store.client.scan_iter(match=f"{store.prefix}:*")
    }
    assert f"{store.prefix}:request:a%3Ab" in keys
    assert f"{store.prefix}:request:a%253Ab" in keys
    assert f"{store.prefix}:state:%7Ba%7D%3Ab" in keys
    for key in keys:
        rest = key[len(store.prefix) + 1 :]
        assert not any(ch.isspace() for ch in rest)
    assert escape_segment("a:b") != escape_segment("a%3Ab")


@pytest.mark.anyio
async def test_corrupt_document_names_the_key(store: RedisStore) -> None:
    await store.requests.create(sample_request("r1", state_id="s:1"))
    key = f"{store.prefix}:request:r1"
    await store.client.hset(key, "document", "{not json")
    with pytest.raises(StoredDataError) as caught:
        await store.requests.get("r1")
    assert caught.value.key == key
    assert caught.value.backend == "redis"
    assert caught.value.field == "document"
    # A listing skips it and quarantines it, once.
    assert await store.requests.by_state("s:1") == []
    assert await store.requests.by_state("s:1") == []
    (entry,) = await store.requests.quarantined()
    assert (entry.request_id, entry.backend, entry.field) == ("r1", "redis", "document")
    assert key in entry.error

    await store.client.hset(key, "document", '{"schema": 1, "request": {"request_id": 5}}')
    with pytest.raises(StoredDataError) as caught:
        await store.requests.get("r1")
    assert caught.value.key == key


@pytest.mark.anyio
async def test_newer_schema_is_refused(store: RedisStore, redis_url: str) -> None:
    await store.requests.create(sample_request("r1"))
    key = f"{store.prefix}:request:r1"
    await store.client.hset(key, "document", '{"schema": 99, "request": {}}')
    with pytest.raises(StoredDataError, match="schema 99"):
        await store.requests.get("r1")
    await store.client.hset(f"{store.prefix}:meta", "schema", "99")
    with pytest.raises(StoredDataError, match="schema 99"):
        await _open(redis_url, store.prefix)


@pytest.mark.anyio
@pytest.mark.parametrize("prefix_of", ["{}", "{}*"], ids=["plain", "glob"])
async def test_a_prefix_holding_another_applications_keys_is_refused_untouched(
    redis_url: str, prefix_of: str
) -> None:
    """Keys under the prefix and no store there: StoredDataError, nothing written (it
    created a store whose every write then failed on the keys' types). A prefix with glob
    characters looks only at its own keys, not at those it would match as a pattern."""
    prefix = prefix_of.format(f"t_{uuid.uuid4().hex}")
    client = aioredis.Redis.from_url(redis_url)
    try:
        if prefix.endswith("*"):
            await client.set(f"{prefix[:-1]}x:index:all", "a neighbour's key")
            store = await _open(redis_url, prefix)
            await store.aclose()
            assert await client.exists(f"{prefix}:meta") == 1
        await client.set(f"{prefix}:index:all", "not ours")
        await client.delete(f"{prefix}:meta")
        with pytest.raises(StoredDataError, match="another application") as caught:
            await _open(redis_url, prefix)
        assert "index:all" in str(caught.value)
        assert await client.exists(f"{prefix}:meta") == 0
        assert await client.get(f"{prefix}:index:all") == b"not ours"
    finally:
        await _drop(redis_url, prefix)
        await client.delete(f"{prefix.rstrip('*')}x:index:all")
        await client.aclose()


@pytest.mark.anyio
async def test_an_orphan_index_member_is_quarantined(store: RedisStore) -> None:
    await store.requests.create(sample_request("r1", state_id="s:1"))
    await store.requests.create(sample_request("r2", state_id="s:1"))
    await store.client.delete(f"{store.prefix}:request:r1")
    assert [r.request_id for r in await store.requests.by_state("s:1")] == ["r2"]
    (entry,) = await store.requests.quarantined()
    assert entry.request_id == "r1"
    assert "orphan" in entry.error


@pytest.mark.anyio
async def test_unreachable_server_is_unavailable() -> None:
    url = "redis://user:s3cret-pw@127.0.0.1:1/0"
    with pytest.raises(StoreUnavailableError) as caught:
        await RedisStore.open(url, registry=sample_registry())
    assert "s3cret-pw" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)


@pytest.mark.anyio
async def test_duplicate_create_raises_domain_error(store: RedisStore) -> None:
    await store.requests.create(sample_request("r1"))
    with pytest.raises(RequestAlreadyExistsError):
        await store.requests.create(sample_request("r1"))


@pytest.mark.anyio
async def test_replace_moves_index_membership(store: RedisStore) -> None:
    created = await store.requests.create(
        sample_request("r1", state_id="s:1", pending_reason=PendingReason.QUOTA)
    )
    prefix = store.prefix
    assert await store.client.zcard(f"{prefix}:index:reason:quota") == 1
    moved = attrs.evolve(
        created, status=RequestStatus.APPROVED, pending_reason=None, state_id="s:2"
    )
    await store.requests.replace(moved, expected_revision=0)
    assert await store.client.zcard(f"{prefix}:index:reason:quota") == 0
    assert await store.client.zcard(f"{prefix}:index:status:pending") == 0
    assert await store.client.zcard(f"{prefix}:index:state:s%3A1") == 0
    assert await store.client.zcard(f"{prefix}:index:status:approved") == 1
    assert await store.client.zcard(f"{prefix}:index:state:s%3A2") == 1
    assert await store.client.zcard(f"{prefix}:index:all") == 1


@pytest.mark.anyio
async def test_list_uses_created_bounds_and_filters(store: RedisStore) -> None:
    for minute in range(10):
        await store.requests.create(
            sample_request(
                f"r{minute}",
                state_id="s:1" if minute % 2 else "s:2",
                created_at=T0 + timedelta(minutes=minute),
                actor_id="bob" if minute % 3 == 0 else "alice",
            )
        )
    query = RequestQuery(
        state_ids={"s:1"},
        actor_ids={"alice"},
        created_from=T0 + timedelta(minutes=2),
        created_to=T0 + timedelta(minutes=7),
    )
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.requests.list(query, limit=1, cursor=cursor)
        ids += [r.request_id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert ids == ["r5", "r7"]


@pytest.mark.anyio
async def test_audit_and_history_round_trip(store: RedisStore, redis_url: str) -> None:
    registry = _registry()
    async with Governance.open(_with_prefix(redis_url, store.prefix), registry=registry) as gov:
        await gov.states.put("c:1", SampleState("c", 0))
        for _ in range(3):
            request = await gov.submit(Bump(1), state_id="c:1", context=_user("alice"))
            assert (await gov.execute(request.request_id)).executed
    entries = await store.history.history("c:1")
    assert len(entries) == 3
    assert all(isinstance(e, HistoryEntry) for e in entries.entries)
    newest = await store.history.recent("c:1", 2)
    assert [e.execution_id for e in newest] == [e.execution_id for e in entries.entries[::-1][:2]]
    first = entries.entries[0].executed_at
    assert len(await store.history.between("c:1", first, first)) == 1
    audit = await store.audit.entries("c:1")
    assert all(isinstance(e, AuditEntry) for e in audit)
    assert len(await store.audit.entries("c:1", since=audit[-1].executed_at)) >= 1
    with pytest.raises(ValueError):
        await store.history.recent("c:1", -1)


@pytest.mark.anyio
async def test_commit_is_all_or_nothing(store: RedisStore) -> None:
    await store.states.put("s:1", SampleState("s", 0))
    a = await store.requests.create(sample_request("a", state_id="s:1"))
    b = await store.requests.create(sample_request("b", state_id="s:1"))
    (decision,) = numbered([sample_decision(timestamp=T0)])
    done = attrs.evolve(a, status=RequestStatus.EXECUTED, pending_reason=None)
    stale = GovernedCommit(
        requests=(
            RequestWrite(done, 0, (decision,)),
            RequestWrite(b, 5, ()),
        ),
        state=StateWrite("s:1", SampleState("s", 1), "1", "2", "a"),
    )
    with pytest.raises(RequestConcurrencyError) as caught:
        await store.committer.commit(stale)
    assert caught.value.request_id == "b"
    wrong_state = GovernedCommit(
        requests=(RequestWrite(done, 0, (decision,)),),
        state=StateWrite("s:1", SampleState("s", 1), "7", "8", "a"),
    )
    with pytest.raises(ConcurrencyError):
        await store.committer.commit(wrong_state)
    assert await store.requests.get("a") == a
    assert list(await store.decisions.for_request("a")) == []
    state = await store.states.get("s:1")
    assert state is not None
    assert state.version == "1"

    good = GovernedCommit(
        requests=(RequestWrite(done, 0, (decision,)),),
        state=StateWrite("s:1", SampleState("s", 1), "1", "2", "a"),
    )
    (stored,) = await store.committer.commit(good)
    assert stored.revision == 1
    assert await store.requests.get("a") == stored
    assert list(await store.decisions.for_request("a")) == [decision]
    assert [r.request_id for r in await store.decisions.recent()] == ["a"]
    assert await store.states.version_by_request("s:1", "a") == "2"
    assert [r.request_id for r in await store.requests.pending()] == ["b"]


@pytest.mark.anyio
async def test_exactly_once_across_two_governances(redis_url: str, prefix: str) -> None:
    url = _with_prefix(redis_url, prefix)
    registry = _registry()
    async with (
        Governance.open(url, registry=registry) as first,
        Governance.open(url, registry=registry) as second,
    ):
        await first.states.put("c:1", SampleState("c", 0))
        request = await first.submit(Bump(1), state_id="c:1", context=_user("alice"))
        executed: list[bool] = []
        refused: list[BaseException] = []

        async def run(gov: Governance) -> None:
            try:
                result = await gov.execute(request.request_id)
            except GovernanceError as error:
                refused.append(error)
            else:
                executed.append(result.executed)

        async with anyio.create_task_group() as group:
            for index in range(50):
                group.start_soon(run, first if index % 2 else second)

        assert executed.count(True) == 1
        assert len(executed) + len(refused) == 50
        state = await first.states.get("c:1")
        assert state is not None
        assert (state.state.value, state.version) == (1, "2")
        assert (await first.get(request.request_id)).status is RequestStatus.EXECUTED
    reopened = await _open(redis_url, prefix, registry)
    try:
        assert len(await reopened.history.history("c:1")) == 1
    finally:
        await reopened.aclose()


@pytest.mark.anyio
async def test_lone_surrogates_round_trip(store: RedisStore) -> None:
    """Python strings may hold lone surrogates, which UTF-8 cannot: they still round-trip
    in documents and in the ids the request store is given directly (a state id with one
    is refused by ``states.put``, as on every store)."""
    rid = "r\ud800x"
    request = sample_request(rid, state_id="s\udfff", metadata={"a": "\ud800"}, created_at=T0)
    await store.requests.create(request)
    await store.requests.create(sample_request("r\ue000", state_id="s\udfff", created_at=T0))
    await store.requests.create(sample_request("r\ud7ff", state_id="s\udfff", created_at=T0))
    assert await store.requests.get(rid) == request
    assert [r.request_id for r in await store.requests.by_state("s\udfff")] == sorted(
        ["r\ud800x", "r\ue000", "r\ud7ff"]
    )
    with pytest.raises(ValueError, match="no lone surrogates"):
        await store.states.put("s\udfff", SampleState(), request_id=rid)  # as on every store
    await store.states.put("s", SampleState("\udc00", 1), request_id=rid)
    state = await store.states.get("s")
    assert state is not None
    assert (state.state, state.request_id) == (SampleState("\udc00", 1), rid)
    assert await store.states.version_by_request("s", rid) == "1"
    await store.decisions.append(rid, numbered([sample_decision(reason="\ud800", timestamp=T0)]))
    assert [r.request_id for r in await store.decisions.recent()] == [rid]
