"""Updates sent as edits of the stored request document (``_redis_edits``).

The document a commit stores is the whole document, byte for byte, whether it was sent
whole or as an edit; an edit of a document that was rewritten since the store saw it
writes nothing and the commit goes again with the whole document.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

from mutator import MutationContext
from mutator_governance import LifecycleDecision, RequestConcurrencyError, RequestStatus
from mutator_governance._commit_types import GovernedCommit, RequestWrite
from mutator_governance._decisions import RequestDecision
from mutator_governance._transitions import transition
from mutator_governance.stores._redis import RedisStore
from mutator_governance.stores._redis_edits import edit
from mutator_governance.testing import sample_request

from .test_redis import _open, store_fixtures

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

prefix, store = store_fixtures()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _moved(request: Any, status: RequestStatus, code: LifecycleDecision) -> Any:
    at = request.updated_at + timedelta(seconds=1)
    decision = RequestDecision(code, MutationContext.user("bob"), "test", at)
    return transition(request, status, [decision], at=at)


def _sent(store: RedisStore) -> list[list[Any]]:
    """Record the ARGV of every commit script call."""
    calls: list[list[Any]] = []
    real = store._b.run

    async def run(keys: Any, args: Any) -> Any:
        calls.append(list(args))
        return await real(keys, args)

    store._b.run = run  # type: ignore[method-assign]
    return calls


async def _stored_document(store: RedisStore, request_id: str) -> bytes:
    document: bytes = await store.client.hget(store.keys.request(request_id), "document")
    return document


def _whole(store: RedisStore, request: Any) -> bytes:
    b = store._b
    return b.dump("request", b.registry.unstructure_request(request))


@pytest.mark.anyio
async def test_updates_go_as_edits_and_are_stored_whole(store: RedisStore) -> None:
    created = sample_request("a", status=RequestStatus.APPROVED, created_at=T0)
    (a,) = await store.committer.commit(GovernedCommit((RequestWrite.create(created),)))
    calls = _sent(store)
    read = await store.requests.get("a")
    assert read == a
    claimed = _moved(a, RequestStatus.EXECUTING, LifecycleDecision.CLAIMED)
    (claimed,) = await store.committer.commit(GovernedCommit((RequestWrite.update(a, claimed),)))
    done = _moved(claimed, RequestStatus.EXECUTED, LifecycleDecision.EXECUTED)
    (done,) = await store.committer.commit(GovernedCommit((RequestWrite.update(claimed, done),)))
    assert await _stored_document(store, "a") == _whole(store, done)
    assert await store.requests.get("a") == done
    assert list(await store.decisions.for_request("a")) == list(done.decisions)
    # Both updates went as edits: far fewer bytes than the whole documents.
    for args, request in zip(calls, (claimed, done), strict=True):
        assert sum(len(arg) for arg in args) < len(_whole(store, request)), args


@pytest.mark.anyio
async def test_an_edit_of_a_rewritten_document_is_sent_again_whole(store: RedisStore) -> None:
    created = sample_request("a", status=RequestStatus.APPROVED, created_at=T0)
    (a,) = await store.committer.commit(GovernedCommit((RequestWrite.create(created),)))
    assert await store.requests.get("a") == a
    # Rewritten behind the store's back at the same revision: same length, other bytes.
    key = store.keys.request("a")
    stored = await _stored_document(store, "a")
    await store.client.hset(key, "document", stored.replace(b'"alice"', b'"ALICE"'))
    calls = _sent(store)
    claimed = _moved(a, RequestStatus.EXECUTING, LifecycleDecision.CLAIMED)
    (claimed,) = await store.committer.commit(GovernedCommit((RequestWrite.update(a, claimed),)))
    assert len(calls) == 2  # the edit was refused, then the whole document went
    assert await _stored_document(store, "a") == _whole(store, claimed)
    assert await store.requests.get("a") == claimed


@pytest.mark.anyio
async def test_a_stale_edit_still_reports_a_lost_race(
    store: RedisStore, redis_url: str, prefix: str
) -> None:
    """A request updated by another process fails on its revision, not on its document."""
    created = sample_request("a", status=RequestStatus.APPROVED, created_at=T0)
    (a,) = await store.committer.commit(GovernedCommit((RequestWrite.create(created),)))
    assert await store.requests.get("a") == a
    claimed = _moved(a, RequestStatus.EXECUTING, LifecycleDecision.CLAIMED)
    other = await _open(redis_url, prefix, store._b.registry)
    try:
        await other.committer.commit(GovernedCommit((RequestWrite.update(a, claimed),)))
    finally:
        await other.aclose()
    with pytest.raises(RequestConcurrencyError):
        await store.committer.commit(GovernedCommit((RequestWrite.update(a, claimed),)))


def test_an_edit_rebuilds_the_new_document_exactly() -> None:
    old = b'{"schema":3,"request":{"id":"a","status":"approved","decisions":[' + b"x" * 900
    new = old.replace(b"approved", b"executing") + b',{"new":1}],"tail":true}}'
    change = edit(old, new)
    assert change is not None
    rebuilt = b"".join(
        literal + old[start - 1 : start - 1 + length] for literal, start, length in change.parts
    )
    assert rebuilt + change.rest == new
    assert len(change.rest) + sum(len(p[0]) for p in change.parts) < len(new) - 900
    assert edit(b"short", b"other") is None
