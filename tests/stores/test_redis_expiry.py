"""The Redis store's expiry index: the ``ExpiryIndex`` contract, the expiry set kept by
every script, repair of stale members, the schema-4 upgrade and the cost of a sweep.
Asyncio only; each test has its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

from mutator_governance import (
    ApprovalRequirement,
    Governance,
    RequestStatus,
    StoredDataError,
    expiry_deadline,
)
from mutator_governance._request import MutationRequest
from mutator_governance.stores._redis import RedisStore, _stamp
from mutator_governance.testing import ExpiryIndexContract, sample_registry, sample_request

from .test_redis import _open, _with_prefix, store_fixtures
from .test_redis_ready import RedisContractStores, _bulk, _commit, _decided, _move, _spoil

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


prefix, store = store_fixtures(sample_registry)


class _ExpiryContract(RedisContractStores, ExpiryIndexContract):
    pass


class TestRedisExpiryIndex(_ExpiryContract):
    how = "json"


class TestRedisExpiryIndexUnknownType(_ExpiryContract):
    how = "type"


def _ids(requests: Sequence[MutationRequest]) -> list[str]:
    return [r.request_id for r in requests]


def _slot(approval_id: str, expires_at: datetime | None) -> ApprovalRequirement:
    return ApprovalRequirement(approval_id, role="sre", expires_at=expires_at)


async def _due_set(store: RedisStore) -> list[str]:
    """The request ids in the expiry set, in its order."""
    members = await store.client.zrange(store.keys.due, 0, -1)
    return [m[19:].decode() for m in members]


# -- the set follows every write -----------------------------------------------------------------


@pytest.mark.anyio
async def test_the_expiry_set_holds_exactly_the_pending_requests_with_a_deadline(
    store: RedisStore,
) -> None:
    await _commit(store, sample_request("own", created_at=T0, expires_at=T0 + 2 * HOUR))
    await _commit(
        store,
        sample_request("slot", created_at=T0, approval_requirements=(_slot("a", T0 + HOUR),)),
    )
    await _commit(store, sample_request("never", created_at=T0))
    await _commit(
        store, sample_request("approved", status=RequestStatus.APPROVED, expires_at=T0 + HOUR)
    )
    assert await _due_set(store) == ["slot", "own"]
    own = await store.requests.get("own")
    assert own is not None
    await _move(store, own, RequestStatus.CANCELED)
    assert await _due_set(store) == ["slot"]
    assert await store.client.hget(store.keys.request("own"), "dmember") == b""


@pytest.mark.anyio
async def test_a_wrong_type_expiry_set_makes_a_commit_write_nothing(store: RedisStore) -> None:
    await store.client.set(store.keys.due, b"wrong type")
    with pytest.raises(StoredDataError) as caught:
        await _commit(store, sample_request("r", created_at=T0, expires_at=T0))
    assert caught.value.key == store.keys.due
    assert await store.client.exists(store.keys.request("r")) == 0
    await store.client.delete(store.keys.due)
    await _commit(store, sample_request("r", created_at=T0, expires_at=T0))
    assert _ids(await store.requests.due(now=T0, limit=5)) == ["r"]


@pytest.mark.anyio
async def test_purge_removes_a_leftover_expiry_member(store: RedisStore) -> None:
    """A terminal request still in the expiry set (written by an older process) leaves it
    when purged, like every other index."""
    await _commit(store, _decided("old", RequestStatus.EXECUTED, T0))
    leftover = f"{'0' * 18}|old".encode()
    await store.client.zadd(store.keys.due, {leftover: 0})
    await store.client.hset(store.keys.request("old"), "dmember", leftover)
    batch = await store.requests.purge(
        before=T0 + HOUR, statuses=frozenset({RequestStatus.EXECUTED}), limit=5
    )
    assert batch.request_ids == ("old",)
    assert await store.client.zcard(store.keys.due) == 0


# -- due(): reads and repairs --------------------------------------------------------------------


@pytest.mark.anyio
async def test_due_refuses_a_limit_that_is_not_a_positive_int(store: RedisStore) -> None:
    for limit in (0, -3, True, 1.5, "2"):
        with pytest.raises(ValueError, match="limit"):
            await store.requests.due(now=T0, limit=limit)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_stale_members_are_repaired_and_not_returned(store: RedisStore) -> None:
    """Members that disagree with their request: one whose request is gone, one whose request
    left PENDING behind the index's back, one with a wrong deadline."""
    for n in range(4):
        await _commit(
            store, sample_request(f"r{n}", created_at=T0, expires_at=T0 + n * timedelta(minutes=1))
        )
    client, keys = store.client, store.keys
    await client.delete(keys.request("r0"))  # gone
    r1 = await store.requests.get("r1")
    assert r1 is not None
    moved = await _move(store, r1, RequestStatus.CANCELED)
    # As an older process would have left it: the document moved, the index did not.
    await client.zadd(keys.due, {f"{_stamp(T0 + timedelta(minutes=1))}|r1": 0})
    await client.hset(keys.request("r1"), "dmember", b"")
    # r2's member says an hour too early.
    right = await client.hget(keys.request("r2"), "dmember")
    wrong = f"{_stamp(T0 - HOUR)}|r2".encode()
    await client.zrem(keys.due, right)
    await client.zadd(keys.due, {wrong: 0})
    assert await _due_set(store) == ["r2", "r0", "r1", "r3"]

    assert _ids(await store.requests.due(now=T0 + HOUR, limit=10)) == ["r3"]
    assert await client.zrange(keys.due, 0, -1) == [right, await _member_of(store, "r3")]
    assert await client.hget(keys.request("r2"), "dmember") == right
    assert await store.requests.get("r1") == moved
    assert _ids(await store.requests.due(now=T0 + HOUR, limit=10)) == ["r2", "r3"]
    assert await store.requests.quarantined() == []


@pytest.mark.anyio
async def test_a_repair_never_undoes_a_write_that_came_after_the_read(store: RedisStore) -> None:
    """The repair script runs only while the request is at the revision that was read."""
    await _commit(store, sample_request("r", created_at=T0, expires_at=T0))
    keys, b = store.keys, store._b
    member = await _member_of(store, "r")
    applied = await b.evalsha(b.due_fix_script, [keys.request("r"), keys.due], [b"7", member, b""])
    assert applied == 0
    assert await store.client.zrange(keys.due, 0, -1) == [member]
    applied = await b.evalsha(b.due_fix_script, [keys.request("r"), keys.due], [b"", member, b""])
    assert applied == 0  # it exists: "gone" does not hold either


@pytest.mark.anyio
async def test_due_skips_quarantined_requests_unread(store: RedisStore) -> None:
    for n in range(3):
        await _commit(store, sample_request(f"r{n}", created_at=T0, expires_at=T0))
    await _spoil(store, "r1", "field")
    assert _ids(await store.requests.due(now=T0, limit=10)) == ["r0", "r2"]
    decoded = _count_decodes(store)
    assert _ids(await store.requests.due(now=T0, limit=10)) == ["r0", "r2"]
    assert decoded == ["r0", "r2"]
    assert [e.request_id for e in await store.requests.quarantined()] == ["r1"]


@pytest.mark.anyio
async def test_a_wrong_type_request_key_is_quarantined_not_raised(store: RedisStore) -> None:
    for n in range(2):
        await _commit(store, sample_request(f"r{n}", created_at=T0, expires_at=T0))
    await store.client.delete(store.keys.request("r0"))
    await store.client.set(store.keys.request("r0"), b"not a hash")
    assert _ids(await store.requests.due(now=T0, limit=10)) == ["r1"]
    assert [e.request_id for e in await store.requests.quarantined()] == ["r0"]


@pytest.mark.anyio
async def test_due_decodes_only_the_due_requests_of_a_large_backlog(store: RedisStore) -> None:
    backlog = [
        sample_request(
            f"wait-{n:04d}",
            created_at=T0,
            expires_at=T0 + timedelta(days=1, seconds=n) if n % 2 else None,
            approval_requirements=(_slot("a", T0 + timedelta(days=2)),) if n % 3 else (),
        )
        for n in range(1000)
    ]
    due = [
        sample_request("due-own", created_at=T0, expires_at=T0 - HOUR),
        sample_request("due-slot", created_at=T0, approval_requirements=(_slot("a", T0),)),
        sample_request("due-both", created_at=T0, expires_at=T0, approval_requirements=()),
    ]
    await _bulk(store, [*backlog, *due])
    decoded = _count_decodes(store)
    commands = _count_commands(store)
    found = await store.requests.due(now=T0, limit=256)
    assert _ids(found) == ["due-own", "due-both", "due-slot"]
    assert sorted(decoded) == sorted(_ids(due))
    assert commands == ["ZRANGEBYLEX"]  # and one pipeline for the three documents
    assert all((d := expiry_deadline(r)) is not None and d <= T0 for r in found)
    decoded.clear()
    commands.clear()
    assert await store.requests.due(now=T0 - 2 * HOUR, limit=256) == []
    assert (decoded, commands) == ([], ["ZRANGEBYLEX"])


@pytest.mark.anyio
async def test_due_pages_through_more_than_one_batch(store: RedisStore, redis_url: str) -> None:
    requests = [
        sample_request(f"r{n:03d}", created_at=T0, expires_at=T0 - timedelta(seconds=n % 7))
        for n in range(300)
    ]
    await _bulk(store, requests)
    expected = [r.request_id for r in sorted(requests, key=lambda r: (r.expires_at, r.request_id))]
    assert _ids(await store.requests.due(now=T0, limit=300)) == expected
    assert _ids(await store.requests.due(now=T0, limit=5)) == expected[:5]
    async with Governance.open(
        _with_prefix(redis_url, store.prefix), registry=sample_registry()
    ) as gov:
        swept = await gov.expire_due(now=T0)
    assert sorted(_ids(swept.expired)) == sorted(expected)
    assert await store.client.zcard(store.keys.due) == 0


# -- the schema-4 upgrade ----------------------------------------------------------------------


async def _downgrade_to_v3(store: RedisStore) -> None:
    """Turn the store's keyspace back into what schema 3 wrote (no expiry set)."""
    client, keys = store.client, store.keys
    await client.delete(keys.due)
    async for key in client.scan_iter(match=f"{keys.prefix}:request:*", count=500):
        await client.hdel(key, "dmember")
    await client.hset(keys.meta, "schema", "3")


@pytest.mark.anyio
async def test_a_schema_3_store_is_upgraded_and_expire_due_expires_exactly_the_past_due(
    store: RedisStore, redis_url: str
) -> None:
    past = [
        sample_request("past-own", created_at=T0, expires_at=T0 - HOUR),
        sample_request("past-slot", created_at=T0, approval_requirements=(_slot("a", T0),)),
    ]
    future = [
        sample_request(
            f"future-{n:03d}",
            created_at=T0 + timedelta(seconds=n),
            expires_at=T0 + timedelta(minutes=n + 1),
        )
        for n in range(300)  # more than one upgrade batch
    ]
    others = [
        sample_request("never", created_at=T0),
        sample_request("approved", status=RequestStatus.APPROVED, expires_at=T0 - HOUR),
        sample_request("bad", created_at=T0, expires_at=T0 - HOUR),
    ]
    await _bulk(store, [*past, *future, *others])
    await _spoil(store, "bad", "json")
    await _downgrade_to_v3(store)

    upgraded = await _open(redis_url, store.prefix)
    try:
        assert await upgraded.client.hget(upgraded.keys.meta, "schema") == b"4"
        assert len(await _due_set(upgraded)) == len(past) + len(future)
        assert [e.request_id for e in await upgraded.requests.quarantined()] == ["bad"]
    finally:
        await upgraded.aclose()
    async with Governance.open(
        _with_prefix(redis_url, store.prefix), registry=sample_registry()
    ) as gov:
        swept = await gov.expire_due(now=T0)
        assert sorted(_ids(swept.expired)) == ["past-own", "past-slot"]
        assert swept.skipped == ()
        later = await gov.expire_due(now=T0 + timedelta(minutes=3))
        assert _ids(later.expired) == ["future-000", "future-001", "future-002"]
    assert len(await _due_set(store)) == len(future) - 3


@pytest.mark.anyio
async def test_the_upgrade_leaves_alone_a_request_written_since_it_was_read(
    store: RedisStore,
) -> None:
    """Its script enters a request only at the revision read and without ``dmember``."""
    await _commit(store, sample_request("r", created_at=T0, expires_at=T0))
    await _downgrade_to_v3(store)
    keys, b = store.keys, store._b
    member = f"{_stamp(T0)}|r".encode()
    assert await b.evalsha(b.upgrade_due_script, [keys.due, keys.request("r")], [b"1", member]) == 0
    await store.client.hset(keys.request("r"), "dmember", b"")
    assert await b.evalsha(b.upgrade_due_script, [keys.due, keys.request("r")], [b"0", member]) == 0
    assert await store.client.zcard(keys.due) == 0
    await store.client.hdel(keys.request("r"), "dmember")
    assert await b.evalsha(b.upgrade_due_script, [keys.due, keys.request("r")], [b"0", member]) == 1
    assert await _due_set(store) == ["r"]


# -- helpers -----------------------------------------------------------------------------------


async def _member_of(store: RedisStore, request_id: str) -> bytes:
    member = await store.client.hget(store.keys.request(request_id), "dmember")
    assert member
    return bytes(member)


def _count_decodes(store: RedisStore) -> list[str]:
    """The ids of every request document ``store`` decodes from now on."""
    decoded: list[str] = []
    real = store._b.request_from

    def spy(raw: Any, key: str, request_id: str) -> MutationRequest:
        decoded.append(request_id)
        return real(raw, key, request_id)

    store._b.request_from = spy  # type: ignore[method-assign]
    return decoded


def _count_commands(store: RedisStore) -> list[str]:
    """The names of the single commands ``store`` sends on its hot path from now on."""
    sent: list[str] = []
    real = store._b.call

    async def spy(*command: Any) -> Any:
        sent.append(str(command[0]))
        return await real(*command)

    store._b.call = spy  # type: ignore[method-assign]
    return sent
