"""The Redis backend's commit seam: one all-or-nothing script per operation.

The commit contract suite; fault injection at every key a commit writes (a wrong-type key
makes the script refuse before its first write); lost connections and timeouts; the
issue-11 rows (asyncio only, URLs and options refused before connecting, stored documents
under another id, non-counter versions); the server clock; the upgrade of a schema-1 store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import attrs
import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

import redis.asyncio as aioredis
import redis.exceptions

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
from mutator.serialization import unstructure
from mutator_governance import (
    DecisionCategory,
    Governance,
    GovernanceStore,
    LifecycleDecision,
    PendingReason,
    RequestStatus,
    StoredDataError,
    StoreUnavailableError,
)
from mutator_governance._commit_types import GovernedCommit, RequestWrite, StateWrite
from mutator_governance._decisions import RequestDecision, numbered
from mutator_governance._transitions import transition
from mutator_governance.stores import open_store
from mutator_governance.stores._redis import RedisOptions, RedisStore, _member
from mutator_governance.stores._redis_scripts import COMMIT
from mutator_governance.stores._redis_wire import pack
from mutator_governance.testing import (
    GovernanceStoreContract,
    SampleState,
    sample_decision,
    sample_registry,
    sample_request,
)

from .openers import open_through
from .test_redis import (
    Bump,
    RedisFixtures,
    _open,
    _registry,
    _user,
    _with_prefix,
    store_fixtures,
)

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
STATE_ID = "s:1"


class TestRedisGovernanceStore(RedisFixtures, GovernanceStoreContract):
    async def make_store(self) -> GovernanceStore:
        return await self._store()

    async def close_store(self, store: GovernanceStore) -> None:
        """Closed by the fixture (with the prefix's keys)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


prefix, store = store_fixtures()


# -- helpers --------------------------------------------------------------------------------


async def _snapshot(store: RedisStore) -> dict[bytes, Any]:
    """Every key under the store's prefix with its type and content."""
    client = store.client
    found: dict[bytes, Any] = {}
    async for key in client.scan_iter(match=f"{store.prefix}:*", count=500):
        kind = await client.type(key)
        if kind == b"string":
            found[key] = (kind, await client.get(key))
        elif kind == b"hash":
            found[key] = (kind, await client.hgetall(key))
        elif kind == b"list":
            found[key] = (kind, await client.lrange(key, 0, -1))
        elif kind == b"zset":
            found[key] = (kind, await client.zrange(key, 0, -1, withscores=True))
        else:
            raise AssertionError(f"unexpected {kind!r} at {key!r}")
    return found


async def _log_matches(store: RedisStore, request_id: str) -> None:
    request = await store.requests.get(request_id)
    logged = tuple(await store.decisions.for_request(request_id))
    assert logged == (() if request is None else request.decisions)


def _decided(request: Any, status: RequestStatus, code: LifecycleDecision) -> Any:
    at = request.updated_at + timedelta(seconds=1)
    decision = RequestDecision(code, MutationContext.user("bob"), "test", at)
    return transition(request, status, [decision], at=at)


def _records(request: Any) -> tuple[AuditEntry, HistoryEntry]:
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


async def _seed(store: RedisStore) -> tuple[Any, Any]:
    """A state at version 1, an approved request on it and a pending one (both logged)."""
    await store.states.put(STATE_ID, SampleState("s", 1))
    a = sample_request("a", state_id=STATE_ID, status=RequestStatus.APPROVED, created_at=T0)
    b = sample_request("b", state_id=STATE_ID, created_at=T0)
    (a,) = await store.committer.commit(GovernedCommit((RequestWrite.create(a),)))
    (b,) = await store.committer.commit(GovernedCommit((RequestWrite.create(b),)))
    return a, b


def _create(store: RedisStore, a: Any, b: Any) -> GovernedCommit:
    fresh = sample_request("c", state_id="s:2", actor_id="carol", created_at=T0)
    fresh = attrs.evolve(fresh, decisions=numbered([sample_decision(timestamp=T0)]))
    return GovernedCommit((RequestWrite.create(fresh),))


def _update(store: RedisStore, a: Any, b: Any) -> GovernedCommit:
    canceled = _decided(b, RequestStatus.CANCELED, LifecycleDecision.CANCELED)
    return GovernedCommit((RequestWrite.update(b, canceled),))


def _execution(store: RedisStore, a: Any, b: Any) -> GovernedCommit:
    executed = _decided(a, RequestStatus.EXECUTED, LifecycleDecision.EXECUTED)
    noted = attrs.evolve(b, metadata={"linked": True})
    audit, history = _records(a)
    return GovernedCommit(
        (RequestWrite.update(a, executed), RequestWrite.update(b, noted)),
        StateWrite(STATE_ID, SampleState("s", 2), "1", "2", "a"),
        (history,),
        (audit,),
    )


OPERATIONS: dict[str, Callable[[RedisStore, Any, Any], GovernedCommit]] = {
    "create": _create,
    "update": _update,
    "execution": _execution,
}


async def _kept_entries(store: RedisStore, commit: GovernedCommit) -> set[bytes]:
    """The index sets already holding a written request's member, which the script skips."""
    kept: set[bytes] = set()
    for write in commit.requests:
        key = store.keys.request(write.request.request_id)
        stored = await store.client.hmget(key, ["member", "indexes", "umember", "uindexes"])
        request = write.request
        for member, indexes, new_member, new_indexes in (
            (stored[0], stored[1], request.created_at, store.keys.request_indexes(request)),
            (stored[2], stored[3], request.updated_at, store.keys.updated_indexes(request)),
        ):
            if member and indexes and member == _member(new_member, request.request_id):
                kept |= set(indexes.split(b"\n")) & {k.encode() for k in new_indexes}
    return kept


async def _touched_keys(store: RedisStore, commit: GovernedCommit) -> list[bytes]:
    """Every key the commit's script reads or writes: its KEYS and the old index keys,
    except the index sets that already hold a written request's member (left alone)."""
    seen: list[Any] = []
    real = store._b.run

    async def record(keys: Any, args: Any) -> Any:
        seen.extend(keys)
        raise RuntimeError("recorded")

    store._b.run = record  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="recorded"):
            await store.committer.commit(commit)
    finally:
        store._b.run = real  # type: ignore[method-assign]
    keys = [k if isinstance(k, bytes) else k.encode() for k in seen]
    for write in commit.requests:
        key = store.keys.request(write.request.request_id)
        for field in ("indexes", "uindexes"):
            indexes = await store.client.hget(key, field)
            if indexes:
                keys += indexes.split(b"\n")
    kept = await _kept_entries(store, commit)
    return [key for key in dict.fromkeys(keys) if key not in kept]


async def _spoil(store: RedisStore, key: bytes) -> None:
    """Replace ``key`` by a value of the wrong type for it."""
    kind = await store.client.type(key)
    await store.client.delete(key)
    if kind in (b"string", "string") or key.endswith(b":decisions-seq"):
        await store.client.rpush(key, b"not a counter")
    else:
        await store.client.set(key, b"wrong type")


# -- all or nothing -------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
async def test_a_wrong_type_key_anywhere_writes_nothing(store: RedisStore, operation: str) -> None:
    a, b = await _seed(store)
    commit = OPERATIONS[operation](store, a, b)
    keys = await _touched_keys(store, commit)
    assert len(keys) >= 5
    for key in keys:
        before = await _snapshot(store)
        saved = await store.client.dump(key)
        await _spoil(store, key)
        spoiled = await _snapshot(store)
        with pytest.raises(StoredDataError) as caught:
            await store.committer.commit(commit)
        assert caught.value.key == key.decode("utf-8", "surrogatepass")
        assert caught.value.backend == "redis"
        assert await _snapshot(store) == spoiled, f"the commit wrote something with {key!r} spoiled"
        await store.client.delete(key)
        if saved is not None:
            await store.client.restore(key, 0, saved)
        assert await _snapshot(store) == before
    stored = await store.committer.commit(commit)
    assert [r.request_id for r in stored] == [w.request.request_id for w in commit.requests]
    for request_id in ("a", "b", "c"):
        await _log_matches(store, request_id)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "counter",
    [b"9223372036854775807", b"99999999999999999999", b"1000000000000000", b"007", b"-1", b""],
)
async def test_a_decision_counter_incr_would_refuse_writes_nothing(
    store: RedisStore, counter: bytes
) -> None:
    """A counter INCR cannot advance (overflow, leading zeros, signs) is refused up front."""
    a, b = await _seed(store)
    seq_key = store.keys.decision_seq
    await store.client.set(seq_key, counter)
    spoiled = await _snapshot(store)
    commit = OPERATIONS["execution"](store, a, b)
    with pytest.raises(StoredDataError) as caught:
        await store.committer.commit(commit)
    assert caught.value.key == seq_key
    assert await _snapshot(store) == spoiled
    await store.client.set(seq_key, b"41")
    await store.committer.commit(commit)
    for request_id in ("a", "b", "c"):
        await _log_matches(store, request_id)


@pytest.mark.anyio
async def test_a_claim_reading_a_wrong_type_state_writes_nothing(store: RedisStore) -> None:
    """The state a claim reads back is type-checked with the keys it writes."""
    a, _ = await _seed(store)
    claimed = _decided(a, RequestStatus.EXECUTING, LifecycleDecision.CLAIMED)
    claim = GovernedCommit((RequestWrite.update(a, claimed),))
    key = store.keys.state("s:other")
    await store.client.rpush(key, b"not a hash")
    spoiled = await _snapshot(store)
    with pytest.raises(StoredDataError) as caught:
        await store.committer.commit_reading(claim, "s:other")
    assert caught.value.key == key
    assert await _snapshot(store) == spoiled
    await store.client.delete(key)
    (stored,), state = await store.committer.commit_reading(claim, STATE_ID)
    assert stored.status is RequestStatus.EXECUTING
    assert state is not None
    assert (state.state, state.version) == (SampleState("s", 1), "1")
    await _log_matches(store, "a")


@pytest.mark.anyio
async def test_an_execution_stores_each_document_in_its_full_form(store: RedisStore) -> None:
    """The script wraps each decision's JSON (sent once) and repeats the audit document.

    Log documents, recent-set records and both audit lists hold exactly what the client
    would have sent whole: ``{"schema": 3, kind: ...}`` around the registry's JSON.
    """
    a, b = await _seed(store)
    commit = _execution(store, a, b)
    await store.committer.commit(commit)
    registry, client, keys = store._b.registry, store.client, store.keys
    (audit,) = commit.audit
    for write in commit.requests:
        request_id = write.request.request_id
        owner = registry.dumps(request_id)
        log = await client.hgetall(keys.decisions(request_id))
        members = await client.zrange(keys.recent(), 0, -1)
        for decision in write.new_decisions:
            payload = registry.dumps(registry.unstructure_decision(decision))
            document = f'{{"schema":3,"decision":{payload}}}'.encode()
            assert log[str(decision.sequence).encode()] == document
            record = f'{{"schema":3,"record":{{"request_id":{owner},"decision":{payload}}}}}'
            assert [m for m in members if m.endswith(record.encode())]
    entry = f'{{"schema":3,"entry":{registry.dumps(unstructure(registry.converter, audit))}}}'
    assert await client.lrange(keys.audit(), 0, -1) == [entry.encode()]
    assert await client.lrange(keys.audit(STATE_ID), 0, -1) == [entry.encode()]
    assert list(await store.audit.entries(STATE_ID)) == [audit]


@pytest.mark.anyio
async def test_malformed_counters_write_nothing(store: RedisStore) -> None:
    a, b = await _seed(store)
    commit = _execution(store, a, b)
    before = await _snapshot(store)
    for key, field, value in [
        (store.keys.request("a"), "revision", "x"),
        (store.keys.state(STATE_ID), "version", "abc"),
    ]:
        saved = await store.client.hget(key, field)
        await store.client.hset(key, field, value)
        spoiled = await _snapshot(store)
        with pytest.raises(StoredDataError) as caught:
            await store.committer.commit(commit)
        assert (caught.value.key, caught.value.field) == (key, field)
        assert await _snapshot(store) == spoiled
        assert saved is not None
        await store.client.hset(key, field, saved)
    await store.client.set(store.keys.decision_seq, "seven")
    with pytest.raises(StoredDataError):
        await store.committer.commit(commit)
    await store.client.delete(store.keys.decision_seq)
    assert await _snapshot(store) == {
        k: v for k, v in before.items() if k != store.keys.decision_seq.encode()
    }


@pytest.mark.anyio
async def test_execute_with_a_wrong_type_key_executes_nothing(redis_url: str, prefix: str) -> None:
    """Issue 9: the history key of the state is a string; the commit used to write the
    request and the state before failing on it."""
    registry = _registry()
    async with Governance.open(_with_prefix(redis_url, prefix), registry=registry) as gov:
        await gov.states.put("c:1", SampleState("c", 0))
        request = await gov.submit(Bump(1), state_id="c:1", context=_user("alice"))
        store = await _open(redis_url, prefix, registry)
        try:
            await store.client.set(store.keys.history("c:1"), "not a list")
            with pytest.raises(StoredDataError) as caught:
                await gov.execute(request.request_id)
            assert caught.value.key == store.keys.history("c:1")
            after = await gov.get(request.request_id)
            assert after.status is not RequestStatus.EXECUTED
            assert after.status is not RequestStatus.FAILED
            state = await gov.states.get("c:1")
            assert state is not None
            assert (state.state.value, state.version) == (0, "1")
            assert await gov.states.version_by_request("c:1", request.request_id) is None
            assert list(await store.audit.entries("c:1")) == []
            await _log_matches(store, request.request_id)
        finally:
            await store.aclose()


Send = Callable[[bytes], Awaitable[Any]]


class _FaultyWire:
    """The store's wire (every command it sends, packed) with ``fault`` around each send."""

    def __init__(self, real: Any, fault: Callable[[Send, bytes], Awaitable[Any]]) -> None:
        self._real = real
        self._fault = fault

    async def call(self, packed: bytes) -> Any:
        return await self._fault(self._real.call, packed)

    async def aclose(self) -> None:
        await self._real.aclose()


def _name(packed: bytes) -> bytes:
    """The name of a packed command (``*<n> $<len> <name> ...``)."""
    return packed.split(b"\r\n", 3)[2]


@pytest.mark.anyio
async def test_a_lost_connection_before_the_script_writes_nothing(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await _seed(store)
    before = await _snapshot(store)

    async def refuse(send: Send, packed: bytes) -> Any:
        if _name(packed) == b"EVALSHA":
            raise redis.exceptions.ConnectionError("connection reset by peer")
        return await send(packed)

    monkeypatch.setattr(store._b, "wire", _FaultyWire(store._b.wire, refuse))
    with pytest.raises(StoreUnavailableError):
        await store.committer.commit(_execution(store, a, b))
    assert await _snapshot(store) == before


@pytest.mark.anyio
async def test_a_lost_reply_leaves_the_commit_whole(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await _seed(store)

    async def lose_reply(send: Send, packed: bytes) -> Any:
        reply = await send(packed)
        if _name(packed) == b"EVALSHA":
            raise redis.exceptions.TimeoutError("Timeout reading from socket")
        return reply

    monkeypatch.setattr(store._b, "wire", _FaultyWire(store._b.wire, lose_reply))
    with pytest.raises(StoreUnavailableError):
        await store.committer.commit(_execution(store, a, b))
    monkeypatch.undo()
    executed = await store.requests.get("a")
    assert executed is not None
    assert executed.status is RequestStatus.EXECUTED
    state = await store.states.get(STATE_ID)
    assert state is not None
    assert state.version == "2"
    assert len(await store.audit.entries(STATE_ID)) == 1
    assert len((await store.history.history(STATE_ID)).entries) == 1
    await _log_matches(store, "a")


@pytest.mark.anyio
async def test_a_script_missing_from_the_server_cache_is_loaded_again(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await _seed(store)
    sent: list[bytes] = []

    async def forgetful(send: Send, packed: bytes) -> Any:
        sent.append(packed)
        if _name(packed) == b"EVALSHA" and len(sent) == 1:
            raise redis.exceptions.NoScriptError("NOSCRIPT No matching script.")
        return await send(packed)

    monkeypatch.setattr(store._b, "wire", _FaultyWire(store._b.wire, forgetful))
    (stored,) = await store.committer.commit(_update(store, a, b))
    # The script is loaded, then the very command the server refused is sent again.
    refused = sent[0]
    assert _name(refused) == b"EVALSHA"
    assert sent[1:] == [pack(("SCRIPT", "LOAD", COMMIT)), refused]
    assert stored.status is RequestStatus.CANCELED
    assert await store.requests.get("b") == stored


@pytest.mark.anyio
async def test_a_stalled_server_times_out_instead_of_hanging(redis_url: str, prefix: str) -> None:
    store = await RedisStore.open(
        redis_url, registry=sample_registry(), prefix=prefix, socket_timeout=0.2
    )
    pauser = aioredis.Redis.from_url(redis_url)
    try:
        a, b = await _seed(store)
        await pauser.execute_command("CLIENT", "PAUSE", "700", "WRITE")
        # Without the timeout the call would wait out the pause and succeed.
        with pytest.raises(StoreUnavailableError, match="Timeout"):
            await store.committer.commit(_update(store, a, b))
    finally:
        await pauser.execute_command("CLIENT", "UNPAUSE")
        await pauser.aclose()
    try:
        # The paused command ran after the pause, whole, or not at all.
        latest = await store.requests.get("b")
        assert latest is not None
        assert latest.status in (RequestStatus.PENDING, RequestStatus.CANCELED)
        await _log_matches(store, "b")
    finally:
        await store.aclose()


# -- decision log ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_commit_logs_each_sequence_once(store: RedisStore) -> None:
    _, b = await _seed(store)
    canceled = _decided(b, RequestStatus.CANCELED, LifecycleDecision.CANCELED)
    # A write that re-sends an already logged decision with the new one logs only the new.
    write = RequestWrite(canceled, b.revision, canceled.decisions)
    await store.committer.commit(GovernedCommit((write,)))
    await _log_matches(store, "b")
    recent = await store.decisions.recent(100)
    assert sorted(r.decision.sequence for r in recent if r.request_id == "b") == [
        d.sequence for d in canceled.decisions
    ]


@pytest.mark.anyio
async def test_unnumbered_decisions_are_refused_before_writing(store: RedisStore) -> None:
    _, b = await _seed(store)
    before = await _snapshot(store)
    canceled = _decided(b, RequestStatus.CANCELED, LifecycleDecision.CANCELED)
    unnumbered = attrs.evolve(canceled.decisions[-1], sequence=0)
    with pytest.raises(ValueError, match="sequence"):
        await store.committer.commit(GovernedCommit((RequestWrite(canceled, 0, (unnumbered,)),)))
    assert await _snapshot(store) == before


@pytest.mark.anyio
async def test_a_second_version_from_one_request_is_refused_in_a_commit(
    store: RedisStore,
) -> None:
    a, b = await _seed(store)
    await store.states.put(STATE_ID, SampleState("s", 2), expected_version="1", request_id="a")
    before = await _snapshot(store)
    with pytest.raises(ConcurrencyError, match="already produced"):
        await store.committer.commit(
            attrs.evolve(
                _execution(store, a, b),
                state=StateWrite(STATE_ID, SampleState("s", 3), "2", "3", "a"),
            )
        )
    assert await _snapshot(store) == before


# -- stored data ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_document_under_another_id_is_stored_data_error(store: RedisStore) -> None:
    await store.requests.create(sample_request("r1", state_id="s:1", created_at=T0))
    await store.requests.create(sample_request("r2", state_id="s:1", created_at=T0))
    key = store.keys.request("r1")
    other = await store.client.hget(store.keys.request("r2"), "document")
    await store.client.hset(key, "document", other)
    with pytest.raises(StoredDataError) as caught:
        await store.requests.get("r1")
    assert (caught.value.key, caught.value.field) == (key, "document.request_id")
    assert "'r2'" in str(caught.value)
    # Listings neither raise nor drop it silently: it is quarantined.
    assert [r.request_id for r in await store.requests.by_state("s:1")] == ["r2"]
    assert [r.request_id for r in (await store.requests.list()).items] == ["r2"]
    (entry,) = await store.requests.quarantined()
    assert (entry.request_id, entry.field) == ("r1", "document.request_id")


@pytest.mark.anyio
async def test_a_version_that_is_not_a_counter_is_stored_data_error(store: RedisStore) -> None:
    await store.states.put("s:1", SampleState("s", 1))
    key = store.keys.state("s:1")
    await store.client.hset(key, "version", "abc")
    before = await _snapshot(store)
    with pytest.raises(StoredDataError) as caught:
        await store.states.get("s:1")
    assert (caught.value.key, caught.value.field) == (key, "version")
    with pytest.raises(StoredDataError):
        await store.states.put("s:1", SampleState("s", 2), expected_version="abc")
    assert await _snapshot(store) == before


@pytest.mark.anyio
async def test_wrong_type_keys_on_read_are_stored_data_errors(store: RedisStore) -> None:
    await store.client.set(store.keys.request("r1"), "x")
    with pytest.raises(StoredDataError) as caught:
        await store.requests.get("r1")
    assert caught.value.key == store.keys.request("r1")
    await store.client.set(store.keys.decisions("r1"), "x")
    with pytest.raises(StoredDataError):
        await store.decisions.for_request("r1")
    await store.client.set(store.keys.history("s"), "x")
    with pytest.raises(StoredDataError):
        await store.history.history("s")


@pytest.mark.anyio
async def test_a_wrong_type_meta_key_is_refused_at_open(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set(f"{prefix}:meta", "2")
    finally:
        await client.aclose()
    with pytest.raises(StoredDataError) as caught:
        await _open(redis_url, prefix)
    assert caught.value.key == f"{prefix}:meta"


@pytest.mark.anyio
async def test_a_stored_request_holds_the_registry_encoding_of_it(store: RedisStore) -> None:
    import json

    async def stored_document() -> Any:
        raw = await store.client.hget(store.keys.request("d"), "document")
        assert raw is not None
        return json.loads(raw)

    first = sample_decision(timestamp=T0, reason="caf\u00e9 \ud800", metadata={"n": [1, "x"]})
    request = attrs.evolve(
        sample_request("d", state_id="s:3", created_at=T0), decisions=numbered([first])
    )
    (stored,) = await store.committer.commit(GovernedCommit((RequestWrite.create(request),)))
    approved = _decided(stored, RequestStatus.APPROVED, LifecycleDecision.APPROVED)
    (stored,) = await store.committer.commit(
        GovernedCommit((RequestWrite.update(stored, approved),))
    )
    # Written from the store's own copies (earlier decisions kept), then from a read
    # (every decision new to the store): the same data as the registry's encoding.
    expected = {"schema": 3, "request": store._b.registry.unstructure_request(stored)}
    assert await stored_document() == json.loads(json.dumps(expected))
    read = await store.requests.get("d")
    assert read == stored
    canceled = _decided(read, RequestStatus.CANCELED, LifecycleDecision.CANCELED)
    (stored,) = await store.committer.commit(GovernedCommit((RequestWrite.update(read, canceled),)))
    expected = {"schema": 3, "request": store._b.registry.unstructure_request(stored)}
    assert await stored_document() == json.loads(json.dumps(expected))
    assert await store.requests.get("d") == stored
    await _log_matches(store, "d")


@pytest.mark.anyio
async def test_a_write_encodes_only_the_decisions_not_encoded_before(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, b = await _seed(store)
    documents = store._b.documents
    hook = store._b.registry.converter.get_unstructure_hook(RequestDecision)
    encoded: list[RequestDecision] = []

    def counting(decision: RequestDecision) -> Any:
        encoded.append(decision)
        return hook(decision)

    monkeypatch.setattr(documents, "_hook", counting)
    approved = _decided(b, RequestStatus.APPROVED, LifecycleDecision.APPROVED)
    (approved,) = await store.committer.commit(GovernedCommit((RequestWrite.update(b, approved),)))
    encoded.clear()
    canceled = _decided(approved, RequestStatus.CANCELED, LifecycleDecision.CANCELED)
    await store.committer.commit(GovernedCommit((RequestWrite.update(approved, canceled),)))
    # The request's earlier decisions were encoded by the previous write: only the new one.
    assert encoded == [canceled.decisions[-1]]
    await _log_matches(store, "b")


# -- opening: URLs, options, event loop -----------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "redis://:::@/",
        "redis://",
        "redis:///0",
        "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1:6379/zero",
        "http://127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/0#frag",
        "redis://127.0.0.1:6379/0?socket_timeout=soon",
        "redis://127.0.0.1:6379/0?socket_timeout=nan",
        "redis://127.0.0.1:6379/0?connect_timeout=-1",
        "redis://127.0.0.1:6379/0?max_connections=0",
        "redis://127.0.0.1:6379/0?prefix=",
        "redis://127.0.0.1:6379/0?ssl_cert_reqs=none",
        "redis://127.0.0.1:6379/0?prefix=a&prefix=b",
    ],
)
async def test_malformed_urls_are_refused_before_connecting(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_connection(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a client was built for a refused URL")

    monkeypatch.setattr(aioredis, "Redis", no_connection)
    with pytest.raises(ConfigurationError) as caught:
        await RedisStore.open(url, registry=sample_registry())
    assert isinstance(caught.value, ValueError)
    assert "redis://[user:password@]host" in str(caught.value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "options",
    [
        {"socket_timeout": 0},
        {"socket_timeout": float("inf")},
        {"socket_timeout": "1"},
        {"connect_timeout": True},
        {"max_connections": 0},
        {"prefix": "has space"},
        {"pool_size": 4},
    ],
)
async def test_malformed_or_unknown_options_are_refused(
    options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_connection(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a client was built for refused options")

    monkeypatch.setattr(aioredis, "Redis", no_connection)
    with pytest.raises(ConfigurationError, match=next(iter(options))):
        await open_store("redis://127.0.0.1:6379/15", registry=sample_registry(), **options)


DIFFERENT_VALUES = [
    ("prefix", "a", "b"),
    ("socket_timeout", "2", 3),
    ("socket_timeout", "2", 2.5),
    ("connect_timeout", "1.5", 2),
    ("max_connections", "7", 8),
    ("max_connections", "none", 8),
    ("client_name", "worker-1", "worker-2"),
]


@pytest.mark.parametrize(("option", "in_url", "keyword"), DIFFERENT_VALUES)
def test_an_option_named_twice_with_different_values_is_refused(
    option: str, in_url: str, keyword: Any
) -> None:
    """As on SQLite and PostgreSQL: the message names the option and both values."""
    with pytest.raises(ConfigurationError) as caught:
        RedisOptions.from_text({option: in_url}, {option: keyword})
    message = str(caught.value)
    assert f"Redis option {option!r}" in message
    assert f"{in_url!r} in the URL" in message
    assert f"{keyword!r} as a keyword argument" in message


@pytest.mark.anyio
@pytest.mark.parametrize("opener", ["open_store", "Governance.open"])
@pytest.mark.parametrize(("option", "in_url", "keyword"), DIFFERENT_VALUES)
async def test_an_option_named_twice_with_different_values_is_refused_before_connecting(
    opener: str, option: str, in_url: str, keyword: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_connection(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a client was built for refused options")

    monkeypatch.setattr(aioredis, "Redis", no_connection)
    url = f"redis://:s3cret@127.0.0.1:6379/15?{option}={in_url}"
    with pytest.raises(ConfigurationError, match=f"Redis option {option!r}") as caught:
        await open_through(opener, url, **{option: keyword})
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("option", "in_url", "keyword"),
    [
        ("prefix", "p", "p"),
        ("socket_timeout", "2", 2.0),
        ("socket_timeout", "2.0", 2),
        ("connect_timeout", "1.5", 1.5),
        ("max_connections", "7", 7),
        ("max_connections", "none", None),
        ("max_connections", "", None),
        ("client_name", "worker-1", "worker-1"),
    ],
)
def test_an_option_named_twice_with_the_same_value_is_accepted(
    option: str, in_url: str, keyword: Any
) -> None:
    """Values are compared once typed: ``?socket_timeout=2`` and ``socket_timeout=2.0``
    agree."""
    both = RedisOptions.from_text({option: in_url}, {option: keyword})
    assert both == RedisOptions.from_text({option: in_url}, {})
    assert both == RedisOptions.from_text({}, {option: keyword})


@pytest.mark.anyio
async def test_options_reach_the_client(redis_url: str, prefix: str) -> None:
    url = f"{_with_prefix(redis_url, prefix)}&socket_timeout=3.5&max_connections=7"
    opened = await open_store(url, registry=sample_registry(), connect_timeout=1.5)
    try:
        assert isinstance(opened, RedisStore)
        assert (opened.options.socket_timeout, opened.options.connect_timeout) == (3.5, 1.5)
        kwargs = opened.client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 3.5
        assert kwargs["socket_connect_timeout"] == 1.5
        assert opened.client.connection_pool.max_connections == 7
        assert opened.prefix == prefix
    finally:
        await opened.aclose()
    # An option named in the URL and as a keyword with the same value is accepted; the
    # defaults bound every command.
    async with Governance.open(url, registry=sample_registry(), socket_timeout=3.5) as gov:
        assert gov.states is not None
    default = await _open(redis_url, prefix)
    try:
        assert default.options.socket_timeout == 10.0
        assert default.client.connection_pool.connection_kwargs["socket_timeout"] == 10.0
    finally:
        await default.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "operations"),
    [("", 150), ("&max_connections=3", 60)],
    ids=["no limit", "bounded"],
)
async def test_a_burst_of_operations_all_land(
    redis_url: str, prefix: str, query: str, operations: int
) -> None:
    """With no ``max_connections`` the pool has no limit, and a bounded pool makes a
    command wait for a free connection: 150 (or 60 on 3 connections) operations at once
    all land. redis-py's own pool failed the 101st (the 4th) at once with "Too many
    connections"."""
    url = _with_prefix(redis_url, prefix) + query
    async with Governance.open(url, registry=_registry()) as gov:
        failures: list[BaseException] = []

        executed: list[str] = []

        async def one(n: int) -> None:
            try:
                await gov.states.put(f"burst:{n}", SampleState())
                request = await gov.submit(Bump(), state_id=f"burst:{n}", context=_user("al"))
                result = await gov.execute(request.request_id)
                executed.append(result.request.status.value)
            except Exception as error:
                failures.append(error)

        async with anyio.create_task_group() as group:
            for n in range(operations):
                group.start_soon(one, n)
        assert failures == []
        assert executed == ["executed"] * operations


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_opening_under_trio_says_asyncio_only(anyio_backend: str) -> None:
    with pytest.raises(ConfigurationError, match="asyncio-only"):
        await RedisStore.open("redis://127.0.0.1:6379/15", registry=sample_registry())
    with pytest.raises(ConfigurationError, match="asyncio-only"):
        await open_store("redis://127.0.0.1:6379/15", registry=sample_registry())


@pytest.mark.anyio
async def test_server_time_is_the_redis_clock(store: RedisStore) -> None:
    seconds, micros = await store.client.time()
    now = await store.server_time()
    assert now is not None
    assert now.tzinfo is UTC
    assert abs(now.timestamp() - (seconds + micros / 1e6)) < 5
    assert abs(now - datetime.now(UTC)) < timedelta(minutes=5)


# -- schema 1 upgrade -----------------------------------------------------------------------


async def _write_v1_store(redis_url: str, prefix: str) -> list[RequestDecision]:
    """A schema-1 keyspace: decision logs as lists, recent sets without sequence numbers."""
    registry = sample_registry()
    decisions = [
        sample_decision(LifecycleDecision.SUBMITTED, timestamp=T0),
        sample_decision(LifecycleDecision.CANCELED, timestamp=T0 + timedelta(seconds=1)),
    ]
    other = sample_decision(LifecycleDecision.SUBMITTED, actor_id="bob", timestamp=T0)
    client = aioredis.Redis.from_url(redis_url)
    counter = 0

    def dump(kind: str, data: Any) -> bytes:
        return registry.dumps({"schema": 1, kind: data}).encode()

    try:
        await client.hset(f"{prefix}:meta", "schema", "1")
        for request_id, items in (("r1", decisions), ("r:2", [other])):
            for decision in items:
                data = registry.unstructure_decision(decision)
                data.pop("sequence", None)
                escaped = request_id.replace(":", "%3A")
                await client.rpush(f"{prefix}:decisions:{escaped}", dump("decision", data))
                counter += 1
                stamp = (decision.timestamp - datetime(1, 1, 1, tzinfo=UTC)) // timedelta(
                    microseconds=1
                ) + 86_400_000_000
                member = f"{stamp:018d}|{counter:016d}|".encode() + dump(
                    "record", {"request_id": request_id, "decision": data}
                )
                await client.zadd(f"{prefix}:decisions-recent", {member: 0})
                category = decision.category.value
                await client.zadd(f"{prefix}:decisions-recent:{category}", {member: 0})
        await client.set(f"{prefix}:decisions-seq", counter)
    finally:
        await client.aclose()
    return decisions


@pytest.mark.anyio
async def test_a_schema_1_store_is_upgraded_on_open(redis_url: str, prefix: str) -> None:
    decisions = await _write_v1_store(redis_url, prefix)
    store = await _open(redis_url, prefix)
    try:
        assert await store.client.hget(store.keys.meta, "schema") == b"4"
        assert list(await store.decisions.for_request("r1")) == list(numbered(decisions))
        assert [d.sequence for d in await store.decisions.for_request("r:2")] == [1]
        recent = await store.decisions.recent()
        assert [(r.request_id, r.decision.sequence) for r in recent] == [
            ("r1", 2),
            ("r:2", 1),
            ("r1", 1),
        ]
        lifecycle = await store.decisions.recent(category=DecisionCategory.LIFECYCLE)
        assert len(lifecycle) == 3
        leftovers = [k async for k in store.client.scan_iter(match=f"{prefix}:decisions-recent*")]
        leftovers += [k async for k in store.client.scan_iter(match=f"{prefix}:decisions:*")]
        assert leftovers == []
        # Appending after the upgrade is idempotent by sequence and keeps the order.
        more = numbered([sample_decision(timestamp=T0 + timedelta(seconds=9))], 2)
        await store.decisions.append("r1", [*numbered(decisions), *more])
        assert [d.sequence for d in await store.decisions.for_request("r1")] == [1, 2, 3]
        assert len(await store.decisions.recent(100)) == 4
    finally:
        await store.aclose()
    again = await _open(redis_url, prefix)
    try:
        assert [d.sequence for d in await again.decisions.for_request("r1")] == [1, 2, 3]
    finally:
        await again.aclose()


@pytest.mark.anyio
async def test_concurrent_opens_upgrade_once(redis_url: str, prefix: str) -> None:
    import anyio

    await _write_v1_store(redis_url, prefix)
    opened: list[RedisStore] = []

    async def open_one() -> None:
        opened.append(await _open(redis_url, prefix))

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(open_one)
    try:
        for store in opened:
            assert len(await store.decisions.recent(100)) == 3
            assert [d.sequence for d in await store.decisions.for_request("r1")] == [1, 2]
    finally:
        for store in opened:
            await store.aclose()


@pytest.mark.anyio
async def test_an_upgrade_longer_than_its_lock_lease_is_never_joined_by_another_process(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upgrade lock is renewed while one process upgrades: another process waits (and
    gives up clearly), never starting the same upgrade once the first lease ran out."""
    import asyncio

    from mutator_governance.stores import _redis

    await _write_v1_store(redis_url, prefix)
    monkeypatch.setattr(_redis, "_UPGRADE_WAIT", 0.6)
    monkeypatch.setattr(_redis, "_UPGRADE_LEASE", 0.3, raising=False)
    copies: list[str] = []
    copy_v1 = _redis._copy_v1

    async def slow_copy(backend: Any) -> Any:
        copies.append(backend.keys.prefix)
        await asyncio.sleep(1.5)
        return await copy_v1(backend)

    monkeypatch.setattr(_redis, "_copy_v1", slow_copy)
    first = asyncio.create_task(_open(redis_url, prefix))
    await asyncio.sleep(0.1)
    with pytest.raises(StoreUnavailableError, match="another process has been upgrading"):
        await _open(redis_url, prefix)
    store = await first
    try:
        assert copies == [prefix]
        assert [d.sequence for d in await store.decisions.for_request("r1")] == [1, 2]
        assert await store.client.exists(store.keys.upgrade_lock) == 0
    finally:
        await store.aclose()


_ = (Awaitable, StateWrite)


# -- the log invariant through the governance API -----------------------------------------


@pytest.mark.anyio
async def test_every_governance_operation_keeps_the_log_equal_to_the_request(
    redis_url: str, prefix: str
) -> None:
    registry = _registry()
    async with Governance.open(_with_prefix(redis_url, prefix), registry=registry) as gov:
        store = await _open(redis_url, prefix, registry)
        seen: set[str] = set()

        async def step(request: Any) -> Any:
            seen.add(request.request_id)
            for request_id in seen:
                await _log_matches(store, request_id)
            return request

        try:
            await gov.states.put("c:1", SampleState("c", 0))
            alice = _user("alice")
            first = await step(await gov.submit(Bump(1), state_id="c:1", context=alice))
            pending = await step(
                await gov.submit(
                    Bump(2),
                    state_id="c:1",
                    context=alice,
                    pending_reason=PendingReason.EXTERNAL_CHECK,
                )
            )
            await step(await gov.approve(pending.request_id, context=_user("bob")))
            await step(
                await gov.move_to_pending(
                    pending.request_id, PendingReason.EXTERNAL_CHECK, context=_user("bob")
                )
            )
            await step(await gov.cancel(pending.request_id, context=alice))
            third = await step(
                await gov.submit(
                    Bump(3),
                    state_id="c:1",
                    context=alice,
                    pending_reason=PendingReason.EXTERNAL_CHECK,
                )
            )
            await step(await gov.expire(third.request_id, context=alice))
            result = await gov.execute(first.request_id)
            assert result.executed
            await step(result.request)
            fourth = await step(
                await gov.submit(
                    Bump(4),
                    state_id="c:1",
                    context=alice,
                    pending_reason=PendingReason.EXTERNAL_CHECK,
                )
            )
            await step(await gov.supersede(fourth.request_id, first.request_id, context=alice))
            swept = await gov.recover()
            assert swept is not None
            for request_id in seen:
                await _log_matches(store, request_id)
            assert await gov.repair_decision_log() == 0
            codes = [d.code.name for d in await gov.decision_history(first.request_id)]
            assert codes[0] == "SUBMITTED"
            assert codes[-1] == "EXECUTED"
            assert len(await store.audit.entries("c:1")) == 1
            assert len((await store.history.history("c:1")).entries) == 1
        finally:
            await store.aclose()
