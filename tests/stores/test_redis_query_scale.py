"""Redis listings over a terminal backlog: what a page reads follows the open work and the
page, never the 20,000 old terminal requests. Asyncio only; each test has its own key
prefix and deletes its keys afterwards.

Commands and reply elements are counted on the client's connections (every reply read).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

from benchmarks.redis_replies import counting
from mutator_governance import RequestQuery, RequestStatus
from mutator_governance._request import MutationRequest
from mutator_governance.stores._redis import RedisStore
from mutator_governance.testing import sample_registry, sample_request

from .test_redis import store_fixtures

NOW = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)
BACKLOG = 20_000
TERMINAL = (
    RequestStatus.EXECUTED,
    RequestStatus.REJECTED,
    RequestStatus.CANCELED,
    RequestStatus.EXPIRED,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


prefix, store = store_fixtures(sample_registry)


async def _fill(store: RedisStore, requests: Sequence[MutationRequest]) -> None:
    """Create ``requests`` with the store's own commit script, a thousand per round trip."""
    b = store._b
    await b.client.script_load(b.script.source)
    connection = await b.client.connection_pool.get_connection()
    try:
        for start in range(0, len(requests), 1000):
            chunk = requests[start : start + 1000]
            packed = []
            for request in chunk:
                keys, args = b.section("create", request.request_id, request, None, ())
                packed.append(b.script.pack(keys, ["1", *args, "0", "0", "0"]))
            await connection.send_packed_command(b"".join(packed), check_health=False)
            for _ in chunk:
                reply = await connection.read_response()
                assert int(reply[0]) == 1, reply
    finally:
        await b.client.connection_pool.release(connection)


def _backlog(busy_every: int = 10) -> list[MutationRequest]:
    """20,000 terminal requests created and finished over the past year; every
    ``busy_every``-th by ``busy``, the others by one of 500 requesters."""
    out = []
    for n in range(BACKLOG):
        created = NOW - timedelta(days=365) + timedelta(minutes=25 * n)
        out.append(
            sample_request(
                f"old-{n:05d}",
                status=TERMINAL[n % len(TERMINAL)],
                actor_id="busy" if n % busy_every == 0 else f"user-{n % 500}",
                state_id=f"state-{n % 97}",
                created_at=created,
                updated_at=created + timedelta(minutes=5),
            )
        )
    return out


def _ids(requests: Sequence[MutationRequest]) -> list[str]:
    return [r.request_id for r in requests]


@pytest.mark.anyio
async def test_a_listing_by_recent_update_reads_the_window_not_the_backlog(
    store: RedisStore,
) -> None:
    recent = [
        sample_request(
            f"new-{n:02d}",
            status=TERMINAL[n % len(TERMINAL)],
            created_at=NOW - timedelta(minutes=50 - n),
            updated_at=NOW - timedelta(minutes=30 - n // 2),
        )
        for n in range(20)
    ]
    pending = [
        sample_request(f"open-{n:02d}", created_at=NOW - timedelta(days=3)) for n in range(10)
    ]
    await _fill(store, [*_backlog(), *recent, *pending])
    hour = NOW - timedelta(hours=1)

    with counting() as tally:
        page = await store.requests.list(RequestQuery(updated_from=hour), limit=50)
    assert _ids(page.items) == _ids(recent)
    assert tally["commands"] < 100, tally
    assert tally["elements"] < 500, tally

    with counting() as tally:
        executed = await store.requests.list(
            RequestQuery(statuses={RequestStatus.EXECUTED}, updated_from=hour), limit=50
        )
    assert _ids(executed.items) == _ids(r for r in recent if r.status is RequestStatus.EXECUTED)
    assert tally["commands"] < 50, tally
    assert tally["elements"] < 100, tally


@pytest.mark.anyio
async def test_a_past_update_window_is_paged_in_created_order(store: RedisStore) -> None:
    requests = _backlog()
    await _fill(store, requests)
    start, end = NOW - timedelta(days=200), NOW - timedelta(days=199)
    wanted = [r for r in requests if start <= r.updated_at <= end]
    query = RequestQuery(updated_from=start, updated_to=end)

    with counting() as tally:
        first = await store.requests.list(query, limit=30)
    second = await store.requests.list(query, limit=30, cursor=first.next_cursor)
    assert _ids([*first.items, *second.items]) == _ids(wanted)
    assert second.next_cursor is None
    assert tally["elements"] < 500, tally


@pytest.mark.anyio
async def test_open_requests_of_a_busy_requester_read_no_terminal_document(
    store: RedisStore,
) -> None:
    backlog = _backlog()  # busy: 2,000 terminal requests
    queue = [
        sample_request(f"queue-{n:04d}", actor_id=f"user-{n}", created_at=NOW - timedelta(days=2))
        for n in range(2_500)
    ]
    mine = [
        sample_request(f"mine-{n}", actor_id="busy", created_at=NOW - timedelta(days=1, hours=n))
        for n in range(3)
    ]
    await _fill(store, [*backlog, *queue, *mine])

    with counting() as tally:
        page = await store.requests.list(
            RequestQuery(statuses={RequestStatus.PENDING}, actor_ids={"busy"}), limit=50
        )
    assert _ids(page.items) == _ids(sorted(mine, key=lambda r: r.created_at))
    # the requester's 2,000 index members are checked against the pending set in a few
    # round trips; only the three matching documents are read
    assert tally["commands"] < 40, tally

    with counting() as tally:
        by_state = await store.requests.list(
            RequestQuery(statuses={RequestStatus.PENDING}, state_ids={"state-5"}), limit=50
        )
    assert by_state.items == ()
    assert tally["commands"] < 20, tally


@pytest.mark.anyio
async def test_a_server_without_zmscore_lists_the_same_requests(store: RedisStore) -> None:
    """Before 6.2 Redis has no ``ZMSCORE``: listings ask member by member, same result."""
    requests = [
        sample_request(
            f"r-{n:03d}",
            status=TERMINAL[n % len(TERMINAL)] if n % 3 else RequestStatus.PENDING,
            actor_id=f"user-{n % 4}",
            state_id=f"state-{n % 5}",
            created_at=NOW - timedelta(hours=n),
            updated_at=NOW - timedelta(hours=n) + timedelta(minutes=5),
        )
        for n in range(120)
    ]
    await _fill(store, requests)
    queries = [
        RequestQuery(statuses={RequestStatus.PENDING}, actor_ids={"user-1", "user-2"}),
        RequestQuery(actor_ids={"user-3"}, state_ids={"state-2", "state-4"}),
        RequestQuery(updated_from=NOW - timedelta(hours=30), actor_ids={"user-0"}),
    ]
    with_zmscore = [(await store.requests.list(q, limit=500)).items for q in queries]
    assert all(with_zmscore), with_zmscore
    store._b.has_zmscore = False
    without = [(await store.requests.list(q, limit=500)).items for q in queries]
    assert without == with_zmscore


@pytest.mark.parametrize(
    ("text", "has"),
    [("7.0.15", True), ("6.2.0", True), ("6.0.16", False), ("5.0.7", False), ("x", False)],
)
def test_zmscore_is_taken_from_the_servers_version(text: str, has: bool) -> None:
    from mutator_governance.stores._redis import _version

    assert (_version(text) >= (6, 2)) is has
