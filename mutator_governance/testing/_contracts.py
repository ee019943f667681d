"""Contract test suites for :class:`RequestStore`, :class:`DecisionHistory` and :class:`StateStore`.

Each suite is a plain pytest class whose name does not start with ``Test``, so pytest only
collects it through a subclass that implements the factory hook.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import anyio
import attrs
import pytest

from mutator import ConcurrencyError, SideEffect
from mutator.testing import assert_identical

from .._decisions import RequestDecision, numbered
from .._enums import (
    ApprovalDecision,
    DecisionCategory,
    LifecycleDecision,
    PendingReason,
    RequestStatus,
    ResolutionDecision,
)
from .._errors import RequestAlreadyExistsError, RequestConcurrencyError, RequestNotFoundError
from .._query import DecisionRecord, RequestQuery, VersionedState
from .._request import MutationRequest
from ..protocols import DecisionHistory, RequestStore, StateStore
from ._fixtures import (
    SamplePayload,
    SampleState,
    sample_decision,
    sample_request,
    sample_rich_request,
)

__all__ = ["DecisionHistoryContract", "RequestStoreContract", "StateStoreContract"]

CONCURRENT_WRITERS = 20

BASE = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)
_EAST = timezone(timedelta(hours=5, minutes=30))
_WEST = timezone(timedelta(hours=-4))


def _at(minutes: float, tz: timezone = UTC) -> datetime:
    return (BASE + timedelta(minutes=minutes)).astimezone(tz)


def _ids(requests: Any) -> list[str]:
    return [r.request_id for r in requests]


# -- request store -------------------------------------------------------------------------

# (request_id, state_id, status, pending_reason, actor_id, created minute, updated minute)
_CATALOG: tuple[tuple[str, str, RequestStatus, PendingReason | None, str, int, int], ...] = (
    ("r01", "s:a", RequestStatus.PENDING, PendingReason.APPROVAL, "alice", 0, 10),
    ("r02", "s:a", RequestStatus.PENDING, PendingReason.EXTERNAL_CHECK, "bob", 1, 1),
    ("r03", "s:b", RequestStatus.APPROVED, None, "alice", 2, 20),
    ("r04", "s:b", RequestStatus.EXECUTED, None, "carol", 3, 30),
    ("r05", "s:c", RequestStatus.REJECTED, None, "bob", 4, 4),
    ("r06", "s:a", RequestStatus.PENDING, PendingReason.SCHEDULE, "carol", 5, 50),
    ("r07", "s:c", RequestStatus.CANCELED, None, "alice", 6, 6),
    ("r08", "s:b", RequestStatus.PENDING, PendingReason.APPROVAL, "dave", 7, 7),
)
_ALL = [row[0] for row in _CATALOG]

_QUERIES: list[tuple[str, RequestQuery, list[str]]] = [
    ("empty", RequestQuery(), _ALL),
    ("status", RequestQuery(statuses={RequestStatus.PENDING}), ["r01", "r02", "r06", "r08"]),
    (
        "statuses",
        RequestQuery(statuses={RequestStatus.APPROVED, RequestStatus.EXECUTED}),
        ["r03", "r04"],
    ),
    ("status-none", RequestQuery(statuses={RequestStatus.EXPIRED}), []),
    ("reason", RequestQuery(pending_reasons={PendingReason.APPROVAL}), ["r01", "r08"]),
    (
        "reasons",
        RequestQuery(pending_reasons={PendingReason.EXTERNAL_CHECK, PendingReason.SCHEDULE}),
        ["r02", "r06"],
    ),
    ("state", RequestQuery(state_ids={"s:b"}), ["r03", "r04", "r08"]),
    ("states", RequestQuery(state_ids={"s:a", "s:c"}), ["r01", "r02", "r05", "r06", "r07"]),
    ("state-none", RequestQuery(state_ids={"missing"}), []),
    ("actor", RequestQuery(actor_ids={"alice"}), ["r01", "r03", "r07"]),
    ("actors", RequestQuery(actor_ids={"bob", "dave"}), ["r02", "r05", "r08"]),
    ("created-from", RequestQuery(created_from=_at(3)), ["r04", "r05", "r06", "r07", "r08"]),
    ("created-to", RequestQuery(created_to=_at(3)), ["r01", "r02", "r03", "r04"]),
    ("created-range", RequestQuery(created_from=_at(2), created_to=_at(4)), ["r03", "r04", "r05"]),
    (
        "created-range-offsets",
        RequestQuery(created_from=_at(2, _EAST), created_to=_at(4, _WEST)),
        ["r03", "r04", "r05"],
    ),
    ("created-point", RequestQuery(created_from=_at(5), created_to=_at(5)), ["r06"]),
    ("updated-from", RequestQuery(updated_from=_at(20)), ["r03", "r04", "r06"]),
    ("updated-to", RequestQuery(updated_to=_at(7)), ["r02", "r05", "r07", "r08"]),
    ("updated-range", RequestQuery(updated_from=_at(6), updated_to=_at(10)), ["r01", "r07", "r08"]),
    (
        "combined",
        RequestQuery(
            statuses={RequestStatus.PENDING}, state_ids={"s:a"}, actor_ids={"alice", "carol"}
        ),
        ["r01", "r06"],
    ),
    (
        "combined-reason-updated",
        RequestQuery(pending_reasons={PendingReason.APPROVAL}, updated_from=_at(8)),
        ["r01"],
    ),
]


def _cursor(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


_INVALID_CURSORS = [
    "not a cursor!",
    "",
    _cursor([1, 2]),
    _cursor({"created_at": "2024-06-01T09:00:00+00:00"}),
    _cursor(["2024-06-01T09:00:00", "r01"]),
    _cursor(["2024-06-01T09:00:00+00:00", 7]),
]


@pytest.mark.anyio
class RequestStoreContract:
    """The behaviour every :class:`~mutator_governance.RequestStore` must show.

    Subclass it in a test module under a name starting with ``Test`` and implement
    :meth:`make_request_store`; each test gets a new, empty store from it and passes it to
    :meth:`close_request_store` afterwards::

        from mutator_governance.testing import RequestStoreContract


        class TestSQLiteRequestStore(RequestStoreContract):
            async def make_request_store(self) -> RequestStore:
                return await SQLiteRequestStore.open(":memory:", registry=sample_registry())

            async def close_request_store(self, store: RequestStore) -> None:
                await store.aclose()

    The tests are ``async`` and marked ``anyio`` (the anyio pytest plugin must be active,
    e.g. ``-p anyio``): they run once per backend the ``anyio_backend`` fixture in scope
    yields. anyio's built-in fixture yields asyncio, and in recent anyio releases trio too
    when trio is installed. A store that only works on asyncio (asyncpg, redis.asyncio, ...)
    pins it in the subclass::

        class TestPostgresRequestStore(RequestStoreContract):
            @pytest.fixture
            def anyio_backend(self) -> str:
                return "asyncio"

            async def make_request_store(self) -> RequestStore: ...

    A subclass can also take other fixtures into the hooks through an autouse fixture
    that stores them on ``self`` (pytest makes one instance per test).

    Stores that keep mutations as data must know :class:`SampleMutation` and
    :class:`SampleState`: build them with :func:`sample_registry`. Values must round-trip
    exactly (see :func:`assert_identical`), and ordering is by the instant of
    ``created_at``, then by ``request_id`` in code point order.
    """

    async def make_request_store(self) -> RequestStore:
        """Return a new, empty store (override this)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement make_request_store()")

    async def close_request_store(self, store: RequestStore) -> None:
        """Release ``store`` after a test (override when the store holds resources)."""

    @pytest.fixture
    async def request_store(self) -> AsyncIterator[RequestStore]:
        """The store under test, from :meth:`make_request_store`."""
        store = await self.make_request_store()
        try:
            yield store
        finally:
            await self.close_request_store(store)

    async def _catalog(self, store: RequestStore) -> dict[str, MutationRequest]:
        """Create the eight catalog requests (in a scrambled order) and return them by id."""
        requests = {
            rid: sample_request(
                rid,
                state_id=state_id,
                status=status,
                pending_reason=reason,
                actor_id=actor,
                created_at=_at(created),
                updated_at=_at(updated),
            )
            for rid, state_id, status, reason, actor, created, updated in _CATALOG
        }
        for rid in ("r05", "r02", "r08", "r01", "r07", "r03", "r06", "r04"):
            await store.create(requests[rid])
        return requests

    # -- create and get -----------------------------------------------------------------

    async def test_create_returns_revision_zero(self, request_store: RequestStore) -> None:
        request = sample_request("req-1")
        created = await request_store.create(request)
        assert created.revision == 0
        assert created == request
        assert await request_store.get("req-1") == request

    async def test_create_resets_revision(self, request_store: RequestStore) -> None:
        request = sample_request("req-1", revision=7)
        created = await request_store.create(request)
        assert created.revision == 0
        assert created == attrs.evolve(request, revision=0)
        stored = await request_store.get("req-1")
        assert stored is not None
        assert stored.revision == 0

    async def test_create_duplicate_raises(self, request_store: RequestStore) -> None:
        first = sample_request("req-1", value=1)
        await request_store.create(first)
        with pytest.raises(RequestAlreadyExistsError) as caught:
            await request_store.create(sample_request("req-1", value=2))
        assert caught.value.request_id == "req-1"
        assert await request_store.get("req-1") == first

    async def test_get_unknown_returns_none(self, request_store: RequestStore) -> None:
        assert await request_store.get("missing") is None
        await request_store.create(sample_request("req-1"))
        assert await request_store.get("missing") is None

    async def test_requests_are_independent(self, request_store: RequestStore) -> None:
        one = sample_request("req-1", value=1)
        two = sample_request("req-2", value=2)
        await request_store.create(one)
        await request_store.create(two)
        await request_store.replace(attrs.evolve(one, metadata={"x": 1}), expected_revision=0)
        assert await request_store.get("req-2") == two

    # -- replace ------------------------------------------------------------------------

    async def test_replace_advances_revision(self, request_store: RequestStore) -> None:
        request = await request_store.create(sample_request("req-1"))
        approved = attrs.evolve(
            request,
            status=RequestStatus.APPROVED,
            pending_reason=None,
            updated_at=request.updated_at + timedelta(minutes=1),
            metadata={"approved_by": "carol"},
        )
        stored = await request_store.replace(approved, expected_revision=0)
        assert stored.revision == 1
        assert stored == attrs.evolve(approved, revision=1)
        assert await request_store.get("req-1") == stored

        executed = attrs.evolve(stored, status=RequestStatus.EXECUTED)
        again = await request_store.replace(executed, expected_revision=1)
        assert again.revision == 2
        assert again == attrs.evolve(executed, revision=2)
        assert await request_store.get("req-1") == again

    async def test_replace_ignores_revision_of_given_request(
        self, request_store: RequestStore
    ) -> None:
        request = await request_store.create(sample_request("req-1"))
        stored = await request_store.replace(
            attrs.evolve(request, revision=41, metadata={"k": 1}), expected_revision=0
        )
        assert stored.revision == 1
        fetched = await request_store.get("req-1")
        assert fetched is not None
        assert fetched.revision == 1

    async def test_replace_with_stale_revision_raises(self, request_store: RequestStore) -> None:
        request = await request_store.create(sample_request("req-1"))
        current = await request_store.replace(
            attrs.evolve(request, metadata={"step": 1}), expected_revision=0
        )
        with pytest.raises(RequestConcurrencyError) as caught:
            await request_store.replace(
                attrs.evolve(request, metadata={"step": "stale"}), expected_revision=0
            )
        assert caught.value.request_id == "req-1"
        assert caught.value.expected_revision == 0
        assert caught.value.actual_revision == 1
        assert await request_store.get("req-1") == current

    async def test_replace_with_future_revision_raises(self, request_store: RequestStore) -> None:
        request = await request_store.create(sample_request("req-1"))
        with pytest.raises(RequestConcurrencyError) as caught:
            await request_store.replace(
                attrs.evolve(request, status=RequestStatus.APPROVED), expected_revision=3
            )
        assert caught.value.expected_revision == 3
        assert caught.value.actual_revision == 0
        assert await request_store.get("req-1") == request

    async def test_replace_unknown_raises_not_found(self, request_store: RequestStore) -> None:
        with pytest.raises(RequestNotFoundError) as caught:
            await request_store.replace(sample_request("missing"), expected_revision=0)
        assert caught.value.request_id == "missing"
        assert await request_store.get("missing") is None

    async def test_concurrent_replace_has_one_winner(self, request_store: RequestStore) -> None:
        request = await request_store.create(sample_request("req-1"))
        start = anyio.Event()
        winners: list[MutationRequest] = []
        losers: list[RequestConcurrencyError] = []

        async def writer(index: int) -> None:
            await start.wait()
            try:
                stored = await request_store.replace(
                    attrs.evolve(request, metadata={"writer": index}), expected_revision=0
                )
            except RequestConcurrencyError as error:
                losers.append(error)
            else:
                winners.append(stored)

        async with anyio.create_task_group() as group:
            for index in range(CONCURRENT_WRITERS):
                group.start_soon(writer, index)
            await anyio.sleep(0.01)
            start.set()

        assert len(winners) == 1
        assert len(losers) == CONCURRENT_WRITERS - 1
        assert all(e.expected_revision == 0 and e.actual_revision == 1 for e in losers)
        assert await request_store.get("req-1") == winners[0]
        assert winners[0].revision == 1

    async def test_concurrent_create_has_one_winner(self, request_store: RequestStore) -> None:
        start = anyio.Event()
        winners: list[MutationRequest] = []
        losers: list[RequestAlreadyExistsError] = []

        async def creator(index: int) -> None:
            await start.wait()
            try:
                stored = await request_store.create(sample_request("req-1", value=index))
            except RequestAlreadyExistsError as error:
                losers.append(error)
            else:
                winners.append(stored)

        async with anyio.create_task_group() as group:
            for index in range(CONCURRENT_WRITERS):
                group.start_soon(creator, index)
            await anyio.sleep(0.01)
            start.set()

        assert len(winners) == 1
        assert len(losers) == CONCURRENT_WRITERS - 1
        assert await request_store.get("req-1") == winners[0]

    # -- by_state and pending -----------------------------------------------------------

    async def test_by_state_orders_by_created_instant_then_id(
        self, request_store: RequestStore
    ) -> None:
        # Offsets make the text order of the timestamps differ from their instant order.
        rows = [
            ("b-late", _at(180)),
            ("z-micro", _at(60) + timedelta(microseconds=1)),
            ("c-tie", _at(60, _WEST)),
            ("a-early", _at(-90, _EAST)),
            ("a-tie", _at(60)),
        ]
        for rid, created in rows:
            await request_store.create(sample_request(rid, state_id="s:1", created_at=created))
        await request_store.create(sample_request("other", state_id="s:2", created_at=_at(0)))

        found = await request_store.by_state("s:1")
        assert _ids(found) == ["a-early", "a-tie", "c-tie", "z-micro", "b-late"]
        assert _ids(await request_store.by_state("s:2")) == ["other"]
        assert list(await request_store.by_state("missing")) == []

    async def test_ties_are_ordered_by_request_id_code_points(
        self, request_store: RequestStore
    ) -> None:
        ids = ["élan", "alpha_2", "9", "Zed", "alpha-2", "10", "alpha"]
        for rid in ids:
            await request_store.create(sample_request(rid, created_at=BASE))
        expected = sorted(ids)
        assert expected == ["10", "9", "Zed", "alpha", "alpha-2", "alpha_2", "élan"]
        assert _ids(await request_store.by_state("sample:1")) == expected
        assert _ids(await request_store.pending()) == expected
        assert _ids((await request_store.list()).items) == expected
        walked: list[str] = []
        cursor: str | None = None
        while True:
            page = await request_store.list(limit=2, cursor=cursor)
            walked.extend(_ids(page.items))
            cursor = page.next_cursor
            if cursor is None:
                break
        assert walked == expected

    async def test_by_state_returns_current_revisions(self, request_store: RequestStore) -> None:
        request = await request_store.create(sample_request("req-1", state_id="s:1"))
        stored = await request_store.replace(
            attrs.evolve(request, status=RequestStatus.APPROVED, pending_reason=None),
            expected_revision=0,
        )
        assert list(await request_store.by_state("s:1")) == [stored]

    async def test_pending(self, request_store: RequestStore) -> None:
        catalog = await self._catalog(request_store)
        found = await request_store.pending()
        assert _ids(found) == ["r01", "r02", "r06", "r08"]
        assert list(found) == [catalog[rid] for rid in ("r01", "r02", "r06", "r08")]

    async def test_pending_with_reason(self, request_store: RequestStore) -> None:
        await self._catalog(request_store)
        assert _ids(await request_store.pending(PendingReason.APPROVAL)) == ["r01", "r08"]
        assert _ids(await request_store.pending(PendingReason.SCHEDULE)) == ["r06"]
        assert _ids(await request_store.pending(PendingReason.QUOTA)) == []

    async def test_pending_with_state_id(self, request_store: RequestStore) -> None:
        await self._catalog(request_store)
        assert _ids(await request_store.pending(state_id="s:a")) == ["r01", "r02", "r06"]
        assert _ids(await request_store.pending(state_id="s:c")) == []
        assert _ids(await request_store.pending(state_id="missing")) == []

    async def test_pending_with_reason_and_state_id(self, request_store: RequestStore) -> None:
        await self._catalog(request_store)
        found = await request_store.pending(PendingReason.APPROVAL, state_id="s:b")
        assert _ids(found) == ["r08"]
        found = await request_store.pending(PendingReason.EXTERNAL_CHECK, state_id="s:b")
        assert _ids(found) == []

    async def test_pending_follows_replace(self, request_store: RequestStore) -> None:
        catalog = await self._catalog(request_store)
        await request_store.replace(
            attrs.evolve(catalog["r01"], status=RequestStatus.APPROVED, pending_reason=None),
            expected_revision=0,
        )
        await request_store.replace(
            attrs.evolve(
                catalog["r03"],
                status=RequestStatus.PENDING,
                pending_reason=PendingReason.REVALIDATION,
            ),
            expected_revision=0,
        )
        assert _ids(await request_store.pending()) == ["r02", "r03", "r06", "r08"]
        assert _ids(await request_store.pending(PendingReason.APPROVAL)) == ["r08"]
        assert _ids(await request_store.pending(PendingReason.REVALIDATION)) == ["r03"]

    # -- list -----------------------------------------------------------------------------

    async def test_list_empty_store(self, request_store: RequestStore) -> None:
        page = await request_store.list()
        assert tuple(page.items) == ()
        assert page.next_cursor is None

    async def test_list_without_query(self, request_store: RequestStore) -> None:
        catalog = await self._catalog(request_store)
        page = await request_store.list()
        assert isinstance(page.items, tuple)
        assert list(page.items) == [catalog[rid] for rid in _ALL]
        assert page.next_cursor is None
        assert (await request_store.list(None)).items == page.items

    @pytest.mark.parametrize(
        ("query", "expected"),
        [(query, expected) for _, query, expected in _QUERIES],
        ids=[name for name, _, _ in _QUERIES],
    )
    async def test_list_filters(
        self, request_store: RequestStore, query: RequestQuery, expected: list[str]
    ) -> None:
        catalog = await self._catalog(request_store)
        assert [rid for rid in _ALL if query.matches(catalog[rid])] == expected
        page = await request_store.list(query)
        assert _ids(page.items) == expected
        assert list(page.items) == [catalog[rid] for rid in expected]
        assert page.next_cursor is None

    @pytest.mark.parametrize("limit", [1, 2, 3, 4, 7, 8, 9, 100])
    async def test_list_pagination(self, request_store: RequestStore, limit: int) -> None:
        await self._catalog(request_store)
        pages: list[list[str]] = []
        cursor: str | None = None
        while True:
            page = await request_store.list(limit=limit, cursor=cursor)
            assert len(page.items) <= limit
            pages.append(_ids(page.items))
            cursor = page.next_cursor
            if cursor is None:
                break
            assert len(pages) <= len(_ALL), "pagination does not terminate"
        assert [rid for ids in pages for rid in ids] == _ALL
        assert all(len(ids) == limit for ids in pages[:-1])
        # A full last page still ends the walk: no trailing empty page.
        assert pages[-1]
        assert len(pages) == -(-len(_ALL) // limit)

    async def test_list_pagination_with_query(self, request_store: RequestStore) -> None:
        await self._catalog(request_store)
        query = RequestQuery(statuses={RequestStatus.PENDING, RequestStatus.APPROVED})
        first = await request_store.list(query, limit=2)
        assert _ids(first.items) == ["r01", "r02"]
        assert first.next_cursor is not None
        second = await request_store.list(query, limit=2, cursor=first.next_cursor)
        assert _ids(second.items) == ["r03", "r06"]
        assert second.next_cursor is not None
        third = await request_store.list(query, limit=2, cursor=second.next_cursor)
        assert _ids(third.items) == ["r08"]
        assert third.next_cursor is None

    async def test_cursor_is_a_position_not_an_offset(self, request_store: RequestStore) -> None:
        await self._catalog(request_store)
        first = await request_store.list(limit=3)
        assert _ids(first.items) == ["r01", "r02", "r03"]
        assert first.next_cursor is not None
        # Requests created later land before and after the cursor's position.
        await request_store.create(sample_request("r00", created_at=_at(-1)))
        await request_store.create(sample_request("r09", created_at=_at(8)))
        rest = await request_store.list(limit=100, cursor=first.next_cursor)
        assert _ids(rest.items) == ["r04", "r05", "r06", "r07", "r08", "r09"]
        assert rest.next_cursor is None

    async def test_cursor_of_last_item_gives_empty_page(self, request_store: RequestStore) -> None:
        await self._catalog(request_store)
        first = await request_store.list(limit=7)
        assert first.next_cursor is not None
        second = await request_store.list(limit=1, cursor=first.next_cursor)
        assert _ids(second.items) == ["r08"]
        assert second.next_cursor is None

    @pytest.mark.parametrize("cursor", _INVALID_CURSORS)
    async def test_list_invalid_cursor_raises(
        self, request_store: RequestStore, cursor: str
    ) -> None:
        await self._catalog(request_store)
        with pytest.raises(ValueError):
            await request_store.list(cursor=cursor)

    @pytest.mark.parametrize("limit", [0, -1])
    async def test_list_limit_below_one_raises(
        self, request_store: RequestStore, limit: int
    ) -> None:
        await self._catalog(request_store)
        with pytest.raises(ValueError):
            await request_store.list(limit=limit)

    # -- exact round trips ------------------------------------------------------------------

    async def _round_trip(self, store: RequestStore, request: MutationRequest) -> None:
        created = await store.create(request)
        assert_identical(request, created, "create()")
        fetched = await store.get(request.request_id)
        assert fetched is not None
        assert_identical(request, fetched, "get()")
        changed = attrs.evolve(request, updated_at=request.updated_at + timedelta(seconds=1))
        replaced = await store.replace(changed, expected_revision=0)
        assert_identical(attrs.evolve(changed, revision=1), replaced, "replace()")
        fetched = await store.get(request.request_id)
        assert fetched is not None
        assert_identical(attrs.evolve(changed, revision=1), fetched, "get() after replace()")

    async def test_round_trip_datetimes(self, request_store: RequestStore) -> None:
        rich = sample_rich_request()
        request = sample_request(
            "req-1",
            created_at=rich.created_at,
            updated_at=rich.updated_at,
            expires_at=rich.expires_at,
            executed_at=rich.executed_at,
            context=rich.context,
        )
        await self._round_trip(request_store, request)

    async def test_round_trip_metadata_types(self, request_store: RequestStore) -> None:
        request = sample_request("req-1", metadata=sample_rich_request().metadata)
        await self._round_trip(request_store, request)
        stored = await request_store.get("req-1")
        assert stored is not None
        assert type(stored.metadata["int"]) is int
        assert type(stored.metadata["big"]) is int
        assert type(stored.metadata["bool"]) is bool
        assert type(stored.metadata["tuple"]) is tuple
        assert type(stored.metadata["list"]) is list

    async def test_round_trip_mutation_and_intent(self, request_store: RequestStore) -> None:
        rich = sample_rich_request()
        request = sample_request("req-1", mutation=rich.mutation, intent=rich.intent)
        await self._round_trip(request_store, request)

    async def test_round_trip_requirements(self, request_store: RequestStore) -> None:
        rich = sample_rich_request()
        request = sample_request(
            "req-1",
            policy_requirements=rich.policy_requirements,
            approval_requirements=rich.approval_requirements,
            approval_round=rich.approval_round,
        )
        await self._round_trip(request_store, request)

    async def test_round_trip_decisions(self, request_store: RequestStore) -> None:
        request = sample_request("req-1", decisions=sample_rich_request().decisions)
        await self._round_trip(request_store, request)

    async def test_round_trip_side_effects(self, request_store: RequestStore) -> None:
        request = sample_request("req-1", side_effects=sample_rich_request().side_effects)
        await self._round_trip(request_store, request)

    async def test_round_trip_typed_side_effect_payload(self, request_store: RequestStore) -> None:
        effect = SideEffect(
            "notify",
            "typed payload",
            data=SamplePayload("email", 3, ("ops", "owner")),
            timestamp=BASE,
        )
        await self._round_trip(request_store, sample_request("req-1", side_effects=(effect,)))
        stored = await request_store.get("req-1")
        assert stored is not None
        assert stored.side_effects[0].data_as(SamplePayload) == effect.data

    async def test_round_trip_claim_and_execution(self, request_store: RequestStore) -> None:
        rich = sample_rich_request()
        request = sample_request(
            "req-1",
            status=RequestStatus.EXECUTING,
            claim=rich.claim,
            execution=rich.execution,
            expected_state_version=rich.expected_state_version,
            resulting_state_version=rich.resulting_state_version,
        )
        await self._round_trip(request_store, request)

    async def test_round_trip_everything(self, request_store: RequestStore) -> None:
        request = sample_rich_request("req-1")
        await self._round_trip(request_store, request)
        expected = await request_store.get("req-1")
        assert expected is not None
        assert_identical([expected], list(await request_store.by_state(request.state_id)))
        assert_identical([expected], list((await request_store.list()).items))
        pending = attrs.evolve(
            expected, status=RequestStatus.PENDING, pending_reason=PendingReason.MANUAL_REVIEW
        )
        stored = await request_store.replace(pending, expected_revision=expected.revision)
        assert_identical([stored], list(await request_store.pending()))

    async def test_round_trip_unset_optionals(self, request_store: RequestStore) -> None:
        request = sample_request(
            "req-1", status=RequestStatus.CREATED, pending_reason=None, metadata={}
        )
        assert request.pending_reason is None
        assert request.claim is None
        assert request.expires_at is None
        await self._round_trip(request_store, request)


# -- decision history ------------------------------------------------------------------------


@pytest.mark.anyio
class DecisionHistoryContract:
    """The behaviour every :class:`~mutator_governance.DecisionHistory` must show.

    Subclass it under a name starting with ``Test`` and implement
    :meth:`make_decision_history` (a new, empty history per test); override
    :meth:`close_decision_history` to release it::

        class TestSQLiteDecisionHistory(DecisionHistoryContract):
            async def make_decision_history(self) -> DecisionHistory:
                return await SQLiteDecisionHistory.open(":memory:")

    The tests run on the backends of your ``anyio_backend`` fixture; an asyncio-only
    history overrides it in the subclass to return ``"asyncio"`` (see
    :class:`RequestStoreContract`). ``recent`` is newest first by decision timestamp;
    decisions with equal timestamps come newest-appended first.
    """

    async def make_decision_history(self) -> DecisionHistory:
        """Return a new, empty decision history (override this)."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must implement make_decision_history()"
        )

    async def close_decision_history(self, history: DecisionHistory) -> None:
        """Release ``history`` after a test (override when it holds resources)."""

    @pytest.fixture
    async def decision_history(self) -> AsyncIterator[DecisionHistory]:
        """The history under test, from :meth:`make_decision_history`."""
        history = await self.make_decision_history()
        try:
            yield history
        finally:
            await self.close_decision_history(history)

    async def test_for_request_is_in_sequence_order(
        self, decision_history: DecisionHistory
    ) -> None:
        first = numbered(
            [
                sample_decision(LifecycleDecision.SUBMITTED, timestamp=_at(0)),
                sample_decision(ApprovalDecision.REQUESTED, timestamp=_at(0)),
            ]
        )
        # Appended later but stamped earlier: for_request keeps sequence order.
        second = numbered(
            [sample_decision(ApprovalDecision.GRANTED, actor_id="carol", timestamp=_at(-5))], 2
        )
        await decision_history.append("req-1", first)
        await decision_history.append("req-1", second)
        assert list(await decision_history.for_request("req-1")) == [*first, *second]

    async def test_append_is_idempotent_per_sequence(
        self, decision_history: DecisionHistory
    ) -> None:
        decisions = numbered(
            [sample_decision(timestamp=_at(i), metadata={"n": i}) for i in range(4)]
        )
        await decision_history.append("req-1", decisions[:2])
        # A repair that re-sends logged decisions appends only the missing ones.
        await decision_history.append("req-1", decisions)
        await decision_history.append("req-1", decisions[1:3])
        assert list(await decision_history.for_request("req-1")) == list(decisions)
        assert len(await decision_history.recent(100)) == 4

    async def test_append_fills_a_hole(self, decision_history: DecisionHistory) -> None:
        decisions = numbered([sample_decision(timestamp=_at(i)) for i in range(3)])
        await decision_history.append("req-1", [decisions[0], decisions[2]])
        await decision_history.append("req-1", [decisions[1]])
        assert list(await decision_history.for_request("req-1")) == list(decisions)

    async def test_append_refuses_unnumbered_decisions(
        self, decision_history: DecisionHistory
    ) -> None:
        with pytest.raises(ValueError, match="sequence"):
            await decision_history.append("req-1", [sample_decision(timestamp=_at(0))])
        assert list(await decision_history.for_request("req-1")) == []

    async def test_for_request_separates_requests(self, decision_history: DecisionHistory) -> None:
        (one,) = numbered([sample_decision(LifecycleDecision.SUBMITTED, timestamp=_at(0))])
        (two,) = numbered([sample_decision(LifecycleDecision.CANCELED, timestamp=_at(1))])
        await decision_history.append("req-1", [one])
        await decision_history.append("req-2", [two])
        assert list(await decision_history.for_request("req-1")) == [one]
        assert list(await decision_history.for_request("req-2")) == [two]

    async def test_for_request_unknown_is_empty(self, decision_history: DecisionHistory) -> None:
        assert list(await decision_history.for_request("missing")) == []
        await decision_history.append("req-1", numbered([sample_decision(timestamp=_at(0))]))
        assert list(await decision_history.for_request("missing")) == []

    async def test_append_nothing(self, decision_history: DecisionHistory) -> None:
        await decision_history.append("req-1", [])
        assert list(await decision_history.for_request("req-1")) == []
        assert list(await decision_history.recent()) == []

    async def test_recent_is_newest_first(self, decision_history: DecisionHistory) -> None:
        a, b, d = numbered(
            [
                sample_decision(LifecycleDecision.SUBMITTED, timestamp=_at(0)),
                sample_decision(ApprovalDecision.GRANTED, timestamp=_at(2, _EAST)),
                sample_decision(ResolutionDecision.VALIDATED, timestamp=_at(3)),
            ]
        )
        (c,) = numbered([sample_decision(LifecycleDecision.SUBMITTED, timestamp=_at(1, _WEST))])
        await decision_history.append("req-1", [a, b])
        await decision_history.append("req-2", [c])
        await decision_history.append("req-1", [d])
        recent = await decision_history.recent()
        assert list(recent) == [
            DecisionRecord("req-1", d),
            DecisionRecord("req-1", b),
            DecisionRecord("req-2", c),
            DecisionRecord("req-1", a),
        ]

    async def test_recent_ties_newest_append_first(self, decision_history: DecisionHistory) -> None:
        made = [
            sample_decision(LifecycleDecision.SUBMITTED, actor_id=f"actor-{i}", timestamp=_at(0))
            for i in range(4)
        ]
        decisions = [*numbered(made[:2]), *numbered(made[2:])]
        await decision_history.append("req-1", decisions[:2])
        await decision_history.append("req-2", decisions[2:])
        recent = await decision_history.recent()
        assert [r.decision for r in recent] == decisions[::-1]
        assert [r.request_id for r in recent] == ["req-2", "req-2", "req-1", "req-1"]

    async def test_recent_limit(self, decision_history: DecisionHistory) -> None:
        decisions = [numbered([sample_decision(timestamp=_at(i))], i // 3)[0] for i in range(60)]
        for index, decision in enumerate(decisions):
            await decision_history.append(f"req-{index % 3}", [decision])
        newest_first = decisions[::-1]
        assert [r.decision for r in await decision_history.recent()] == newest_first[:50]
        assert [r.decision for r in await decision_history.recent(3)] == newest_first[:3]
        assert [r.decision for r in await decision_history.recent(100)] == newest_first
        assert list(await decision_history.recent(0)) == []

    async def test_recent_negative_limit_raises(self, decision_history: DecisionHistory) -> None:
        with pytest.raises(ValueError):
            await decision_history.recent(-1)

    async def test_recent_by_category(self, decision_history: DecisionHistory) -> None:
        submitted, requested, granted = numbered(
            [
                sample_decision(LifecycleDecision.SUBMITTED, timestamp=_at(0)),
                sample_decision(ApprovalDecision.REQUESTED, timestamp=_at(1)),
                sample_decision(ApprovalDecision.GRANTED, timestamp=_at(2)),
            ]
        )
        validated, executed = numbered(
            [
                sample_decision(ResolutionDecision.VALIDATED, timestamp=_at(3)),
                sample_decision(LifecycleDecision.EXECUTED, timestamp=_at(4)),
            ]
        )
        await decision_history.append("req-1", [submitted, requested, granted])
        await decision_history.append("req-2", [validated, executed])

        def picked(records: Any) -> list[RequestDecision]:
            return [r.decision for r in records]

        lifecycle = await decision_history.recent(category=DecisionCategory.LIFECYCLE)
        assert picked(lifecycle) == [executed, submitted]
        approval = await decision_history.recent(category=DecisionCategory.APPROVAL)
        assert picked(approval) == [granted, requested]
        assert [r.request_id for r in approval] == ["req-1", "req-1"]
        resolution = await decision_history.recent(category=DecisionCategory.VERSION_RESOLUTION)
        assert picked(resolution) == [validated]
        limited = await decision_history.recent(1, category=DecisionCategory.APPROVAL)
        assert picked(limited) == [granted]

    async def test_concurrent_appends_keep_everything(
        self, decision_history: DecisionHistory
    ) -> None:
        decisions = numbered(
            [
                sample_decision(timestamp=_at(i), metadata={"writer": i})
                for i in range(CONCURRENT_WRITERS)
            ]
        )

        async with anyio.create_task_group() as group:
            for decision in decisions:
                group.start_soon(decision_history.append, "req-1", [decision])

        stored = list(await decision_history.for_request("req-1"))
        assert stored == list(decisions)
        recent = await decision_history.recent(CONCURRENT_WRITERS)
        assert [r.decision for r in recent] == list(decisions[::-1])

    async def test_concurrent_repairs_append_once(self, decision_history: DecisionHistory) -> None:
        decisions = numbered([sample_decision(timestamp=_at(i)) for i in range(5)])
        await decision_history.append("req-1", decisions[:1])

        async with anyio.create_task_group() as group:
            for _ in range(CONCURRENT_WRITERS):
                group.start_soon(decision_history.append, "req-1", decisions)

        assert list(await decision_history.for_request("req-1")) == list(decisions)
        assert len(await decision_history.recent(100)) == len(decisions)

    async def test_round_trip(self, decision_history: DecisionHistory) -> None:
        decisions = list(sample_rich_request().decisions)
        await decision_history.append("req-1", decisions)
        assert_identical(decisions, list(await decision_history.for_request("req-1")))
        # Newest first; equal timestamps newest-appended first.
        by_time = sorted(enumerate(decisions), key=lambda p: (p[1].timestamp, p[0]), reverse=True)
        recent = list(await decision_history.recent())
        assert_identical([DecisionRecord("req-1", d) for _, d in by_time], recent)


# -- state store -------------------------------------------------------------------------------


@pytest.mark.anyio
class StateStoreContract:
    """The behaviour every :class:`~mutator_governance.StateStore` must show.

    Subclass it under a name starting with ``Test`` and implement
    :meth:`make_state_store` (a new, empty store per test); override
    :meth:`close_state_store` to release it::

        class TestSQLiteStateStore(StateStoreContract):
            async def make_state_store(self) -> StateStore:
                return await SQLiteStateStore.open(":memory:", registry=sample_registry())

    States written by the suite are :class:`SampleState` instances. The tests run on the
    backends of your ``anyio_backend`` fixture; an asyncio-only store overrides it in the
    subclass to return ``"asyncio"`` (see :class:`RequestStoreContract`). Versions are
    opaque strings; a store must never hand out the same version twice for one state.
    """

    async def make_state_store(self) -> StateStore[Any]:
        """Return a new, empty state store (override this)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement make_state_store()")

    async def close_state_store(self, store: StateStore[Any]) -> None:
        """Release ``store`` after a test (override when it holds resources)."""

    @pytest.fixture
    async def state_store(self) -> AsyncIterator[StateStore[Any]]:
        """The store under test, from :meth:`make_state_store`."""
        store = await self.make_state_store()
        try:
            yield store
        finally:
            await self.close_state_store(store)

    async def test_create_and_get(self, state_store: StateStore[Any]) -> None:
        state = SampleState("quota", 3, ("a", "b"))
        version = await state_store.put("s:1", state)
        assert isinstance(version, str)
        assert version
        current = await state_store.get("s:1")
        assert current == VersionedState(state, version, None)
        assert current is not None
        assert_identical(state, current.state)

    async def test_get_unknown_returns_none(self, state_store: StateStore[Any]) -> None:
        assert await state_store.get("missing") is None
        await state_store.put("s:1", SampleState())
        assert await state_store.get("missing") is None

    async def test_create_with_request_id(self, state_store: StateStore[Any]) -> None:
        version = await state_store.put("s:1", SampleState(), request_id="req-1")
        assert await state_store.get("s:1") == VersionedState(SampleState(), version, "req-1")
        assert await state_store.version_by_request("s:1", "req-1") == version

    async def test_put_with_current_version(self, state_store: StateStore[Any]) -> None:
        first = await state_store.put("s:1", SampleState(value=1))
        second = await state_store.put(
            "s:1", SampleState(value=2), expected_version=first, request_id="req-2"
        )
        assert isinstance(second, str)
        assert second != first
        assert await state_store.get("s:1") == VersionedState(SampleState(value=2), second, "req-2")
        third = await state_store.put("s:1", SampleState(value=3), expected_version=second)
        assert third not in (first, second)
        assert await state_store.get("s:1") == VersionedState(SampleState(value=3), third, None)

    async def test_versions_never_repeat(self, state_store: StateStore[Any]) -> None:
        versions = [await state_store.put("s:1", SampleState(value=0))]
        for value in range(1, 10):
            versions.append(
                await state_store.put(
                    "s:1", SampleState(value=value % 2), expected_version=versions[-1]
                )
            )
        assert len(set(versions)) == len(versions)

    async def test_put_with_wrong_version_raises(self, state_store: StateStore[Any]) -> None:
        first = await state_store.put("s:1", SampleState(value=1))
        second = await state_store.put("s:1", SampleState(value=2), expected_version=first)
        for wrong in (first, "no-such-version"):
            with pytest.raises(ConcurrencyError) as caught:
                await state_store.put("s:1", SampleState(value=9), expected_version=wrong)
            assert caught.value.expected == wrong
            assert caught.value.actual == second
        assert await state_store.get("s:1") == VersionedState(SampleState(value=2), second, None)

    async def test_create_twice_raises(self, state_store: StateStore[Any]) -> None:
        version = await state_store.put("s:1", SampleState(value=1), request_id="req-1")
        with pytest.raises(ConcurrencyError) as caught:
            await state_store.put("s:1", SampleState(value=2), request_id="req-2")
        assert caught.value.expected is None
        assert caught.value.actual == version
        assert await state_store.get("s:1") == VersionedState(
            SampleState(value=1), version, "req-1"
        )
        assert await state_store.version_by_request("s:1", "req-2") is None

    async def test_put_expecting_a_version_of_a_missing_state_raises(
        self, state_store: StateStore[Any]
    ) -> None:
        with pytest.raises(ConcurrencyError) as caught:
            await state_store.put("s:1", SampleState(), expected_version="1")
        assert caught.value.expected == "1"
        assert caught.value.actual is None
        assert await state_store.get("s:1") is None

    async def test_states_are_independent(self, state_store: StateStore[Any]) -> None:
        one = await state_store.put("s:1", SampleState(value=1))
        two = await state_store.put("s:2", SampleState(value=2))
        await state_store.put("s:1", SampleState(value=3), expected_version=one)
        assert await state_store.get("s:2") == VersionedState(SampleState(value=2), two, None)

    async def test_version_by_request(self, state_store: StateStore[Any]) -> None:
        first = await state_store.put("s:1", SampleState(value=1), request_id="req-1")
        second = await state_store.put(
            "s:1", SampleState(value=2), expected_version=first, request_id="req-2"
        )
        await state_store.put("s:1", SampleState(value=3), expected_version=second)
        assert await state_store.version_by_request("s:1", "req-1") == first
        assert await state_store.version_by_request("s:1", "req-2") == second
        assert await state_store.version_by_request("s:1", "req-3") is None
        assert await state_store.version_by_request("s:2", "req-1") is None
        assert await state_store.version_by_request("missing", "req-1") is None

    async def test_concurrent_puts_have_one_winner(self, state_store: StateStore[Any]) -> None:
        base = await state_store.put("s:1", SampleState(value=-1))
        start = anyio.Event()
        winners: list[tuple[int, str]] = []
        losers: list[ConcurrencyError] = []

        async def writer(index: int) -> None:
            await start.wait()
            try:
                version = await state_store.put(
                    "s:1",
                    SampleState(value=index),
                    expected_version=base,
                    request_id=f"req-{index}",
                )
            except ConcurrencyError as error:
                losers.append(error)
            else:
                winners.append((index, version))

        async with anyio.create_task_group() as group:
            for index in range(CONCURRENT_WRITERS):
                group.start_soon(writer, index)
            await anyio.sleep(0.01)
            start.set()

        assert len(winners) == 1
        assert len(losers) == CONCURRENT_WRITERS - 1
        index, version = winners[0]
        assert version != base
        assert await state_store.get("s:1") == VersionedState(
            SampleState(value=index), version, f"req-{index}"
        )
        assert await state_store.version_by_request("s:1", f"req-{index}") == version
