"""The PostgreSQL store's worker seam: ready batches, wake-ups, quarantine and purge.

Every test uses its own schema (``t_<uuid>``) and drops it afterwards. psycopg's async
driver runs on asyncio only.
"""

from __future__ import annotations

import logging
import re
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import attrs
import psycopg
import pytest

from mutator_governance import (
    QUARANTINE_LOGGER,
    CompensationPlan,
    ExecutionClaim,
    ExecutionDetails,
    ExecutionKind,
    Governance,
    GovernanceStore,
    GovernedCommit,
    InMemoryRequestStore,
    MutationRequest,
    PendingReason,
    RequestAlreadyExistsError,
    RequestConcurrencyError,
    RequestQuery,
    RequestStatus,
    RequestWrite,
    StoredDataError,
    purgeable,
)
from mutator_governance.stores._postgres import PostgresRequestStore, PostgresStore
from mutator_governance.stores._postgres_schema import SCHEMA_VERSION
from mutator_governance.testing import (
    ReadyQueueContract,
    SampleState,
    sample_decision,
    sample_registry,
    sample_request,
)

from .test_postgres import drop_schema, execute_sql, insert_request_row, migrated_to
from .test_postgres import schema as schema  # the fixture

pytestmark = pytest.mark.postgres

BASE = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=60)

# How a test makes a stored request unreadable: (kind, SQL expression of the new document).
CORRUPTIONS: dict[str, str] = {
    "not-json": "'not json {'",
    "unknown-type": """replace(document, '"$type":"testing.sample"', '"$type":"nope.unknown"')""",
    "wrong-type": """replace(document, '"approval_round":1', '"approval_round":"one"')""",
}


@pytest.fixture
def anyio_backend() -> str:
    """psycopg's async driver runs on asyncio only."""
    return "asyncio"


async def corrupt(url: str, schema: str, request_id: str, kind: str = "not-json") -> None:
    """Make the stored request ``request_id`` unreadable in the way ``kind`` names."""
    await execute_sql(
        url,
        f'UPDATE "{schema}".requests SET document = {CORRUPTIONS[kind]} WHERE request_id = %s',
        (request_id,),
    )


@pytest.fixture
async def store(postgres_url: str, schema: str) -> AsyncIterator[PostgresStore]:
    """A store on a fresh schema with the sample registry."""
    opened = await PostgresStore.open(postgres_url, registry=sample_registry(), schema=schema)
    try:
        yield opened
    finally:
        await opened.aclose()


async def create(store: Any, *requests: MutationRequest) -> list[MutationRequest]:
    """Commit each of ``requests`` as new through ``store.committer`` (a store or Governance)."""
    stored: list[MutationRequest] = []
    for request in requests:
        stored += await store.committer.commit(GovernedCommit((RequestWrite.create(request),)))
    return stored


def ids(requests: Sequence[MutationRequest]) -> list[str]:
    return [r.request_id for r in requests]


# -- the contract ----------------------------------------------------------------------------


class PostgresContractStores:
    """Opens each contract store on its own schema, dropped after the test; ``corrupt``
    spoils a stored request with the subclass's ``corruption``."""

    corruption: ClassVar[str]

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture(autouse=True)
    async def _server(self, postgres_url: str) -> AsyncIterator[None]:
        self.url = postgres_url
        self.schemas: list[str] = []
        yield
        for name in self.schemas:
            await drop_schema(postgres_url, name)

    async def make_store(self) -> GovernanceStore:
        name = f"t_{uuid.uuid4().hex}"
        self.schemas.append(name)
        return await PostgresStore.open(self.url, registry=sample_registry(), schema=name)

    async def corrupt(self, store: GovernanceStore, request_id: str) -> None:
        assert isinstance(store, PostgresStore)
        await corrupt(self.url, store.schema, request_id, self.corruption)


class _PostgresReadyQueue(PostgresContractStores, ReadyQueueContract):
    pass


class TestReadyQueueWithInvalidJson(_PostgresReadyQueue):
    corruption = "not-json"


class TestReadyQueueWithUnknownMutationType(_PostgresReadyQueue):
    corruption = "unknown-type"


# -- reserve: one statement over the ready index --------------------------------------------


async def _seed(
    url: str, schema: str, prefix: str, count: int, status: RequestStatus, **changes: Any
) -> None:
    """``count`` requests written straight into the table (bulk seeding), then VACUUM ANALYZE
    (so a plan's buffer counts hold no dead row versions of earlier rounds)."""
    registry = sample_registry()
    rows = []
    for i in range(count):
        request = sample_request(
            f"{prefix}-{i:05d}",
            status=status,
            created_at=BASE + timedelta(seconds=i),
            **changes,
        )
        rows.append(
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
            )
        )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        async with conn.cursor() as cursor:
            await cursor.executemany(
                f'INSERT INTO "{schema}".requests (request_id, state_id, status, pending_reason, '
                "actor_id, created_at, updated_at, document, mutation_type, revision) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 0)",
                rows,
            )
        await conn.execute(f'VACUUM ANALYZE "{schema}".requests')


class _Counting:
    """Wraps the store's row decoder to count the rows each reservation decodes."""

    def __init__(self, store: PostgresStore) -> None:
        self.decoded = 0
        db = store.requests._db
        original = db.request_from

        def counted(request_id: str, text: Any) -> MutationRequest:
            self.decoded += 1
            return original(request_id, text)

        db.request_from = counted  # type: ignore[method-assign]


async def _explain_reserve(url: str, store: PostgresStore, now: datetime) -> list[str]:
    """The plan of the reserving statement inside the store's ``reserve_ready`` call, as
    ``auto_explain`` reports it for nested statements (run and rolled back)."""
    notices: list[str] = []
    async with (
        await psycopg.AsyncConnection.connect(url) as conn,
        conn.transaction(force_rollback=True),
    ):
        conn.add_notice_handler(lambda notice: notices.append(notice.message_primary or ""))
        await conn.execute("LOAD 'auto_explain'")
        for name, value in (
            ("log_min_duration", "0"),
            ("log_analyze", "on"),
            ("log_buffers", "on"),
            ("log_timing", "off"),
            ("log_nested_statements", "on"),
            ("log_level", "notice"),
        ):
            await conn.execute(f"SET LOCAL auto_explain.{name} = {value}")
        await conn.execute(store.requests._reserve, ("explain", 10, now, now + LEASE, True))
    (plan,) = [text for text in notices if "FOR UPDATE OF r SKIP LOCKED" in text]
    return plan.splitlines()


def _scanned(plan: list[str]) -> int:
    """Rows the scan of the ready index visited: those it kept plus those filtered out."""
    at = next(i for i, line in enumerate(plan) if "Index Scan using requests_ready" in line)
    kept = int(re.search(r"actual[^)]*rows=(\d+)", plan[at]).group(1))  # type: ignore[union-attr]
    removed = 0
    for line in plan[at + 1 :]:
        if "->" in line:
            break
        if "Rows Removed by Filter:" in line:
            removed = int(line.split(":")[1])
    return kept + removed


@pytest.mark.anyio
async def test_reserve_reads_the_ready_index_only_however_many_terminal_rows(
    postgres_url: str, store: PostgresStore, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = store.schema
    await _seed(postgres_url, schema, "approved", 200, RequestStatus.APPROVED)
    await _seed(
        postgres_url,
        schema,
        "again",
        100,
        RequestStatus.PENDING,
        pending_reason=PendingReason.REVALIDATION,
    )
    counting = _Counting(store)
    measured: dict[int, tuple[int, int, float, list[str]]] = {}
    for round_, (terminal, prefix) in enumerate(((1000, "done"), (5000, "older"))):
        await _seed(postgres_url, schema, prefix, terminal - round_ * 1000, RequestStatus.EXECUTED)
        now = BASE + LEASE * 2 * round_  # earlier reservations have run out
        plan = await _explain_reserve(postgres_url, store, now)
        counting.decoded = 0
        started = time.perf_counter()
        batch = await store.requests.reserve(
            owner=f"w{terminal}", limit=10, now=now, until=now + LEASE, revalidation=True
        )
        elapsed = time.perf_counter() - started
        measured[terminal] = (len(batch), counting.decoded, elapsed, plan)
    with capsys.disabled():
        for terminal, (returned, decoded, elapsed, plan) in measured.items():
            print(
                f"\n{terminal} terminal rows: reserve returned {returned}, decoded {decoded}, "
                f"{elapsed * 1000:.1f} ms, ready index rows visited {_scanned(plan)}"
            )
            print("\n".join(plan))
    assert measured[1000][:2] == measured[5000][:2] == (10, 10)
    for _, _, _, plan in measured.values():
        assert any("Index Scan using requests_ready" in line for line in plan), plan
        assert not any("Seq Scan on requests" in line for line in plan), plan
    # The pages touched do not grow with the terminal rows (5x as many).
    assert _scanned(measured[5000][3]) == _scanned(measured[1000][3]) == 10


@pytest.mark.anyio
async def test_reservers_in_separate_pools_take_disjoint_batches(
    postgres_url: str, schema: str
) -> None:
    stores = [
        await PostgresStore.open(postgres_url, registry=sample_registry(), schema=schema)
        for _ in range(4)
    ]
    try:
        created = await create(
            stores[0],
            *(
                sample_request(
                    f"r-{i:03d}",
                    status=RequestStatus.APPROVED,
                    created_at=BASE + timedelta(seconds=i),
                )
                for i in range(200)
            ),
        )
        handed: dict[str, list[str]] = {f"w{n}": [] for n in range(4)}

        async def drain(worker: str, opened: PostgresStore) -> None:
            while batch := await opened.requests.reserve(
                owner=worker, limit=7, now=BASE, until=BASE + LEASE
            ):
                handed[worker] += ids(batch)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for (worker, _), opened in zip(handed.items(), stores, strict=True):
                tg.start_soon(drain, worker, opened)
        every = [request_id for batch in handed.values() for request_id in batch]
        assert len(every) == len(set(every)) == 200
        assert sorted(every) == ids(created)
        assert sum(1 for batch in handed.values() if batch) > 1
        owners = await execute_sql(
            postgres_url, f'SELECT request_id, reserved_by FROM "{schema}".requests'
        )
        assert dict(owners) == {rid: worker for worker, batch in handed.items() for rid in batch}
    finally:
        for opened in stores:
            await opened.aclose()


@pytest.mark.anyio
async def test_a_status_change_drops_the_reservation_in_the_row(
    postgres_url: str, store: PostgresStore
) -> None:
    (request,) = await create(store, sample_request("r-1", status=RequestStatus.APPROVED))
    await store.requests.reserve(owner="w", limit=1, now=BASE, until=BASE + LEASE)
    s = f'"{store.schema}".requests'
    assert await execute_sql(postgres_url, f"SELECT reserved_by FROM {s}") == [("w",)]
    claim = ExecutionClaim("w", BASE, BASE + LEASE)
    claimed = attrs.evolve(request, status=RequestStatus.EXECUTING, claim=claim)
    await store.requests.replace(claimed, expected_revision=request.revision)
    assert await execute_sql(postgres_url, f"SELECT reserved_by, reserved_until FROM {s}") == [
        (None, None)
    ]


@pytest.mark.anyio
async def test_a_commit_that_keeps_the_status_keeps_the_reservation(
    postgres_url: str, store: PostgresStore
) -> None:
    (request,) = await create(store, sample_request("r-1", status=RequestStatus.APPROVED))
    await store.requests.reserve(owner="w", limit=1, now=BASE, until=BASE + LEASE)
    noted = attrs.evolve(request, metadata={"note": "still approved"})
    await store.committer.commit(GovernedCommit((RequestWrite(noted, request.revision, ()),)))
    s = f'"{store.schema}".requests'
    assert await execute_sql(postgres_url, f"SELECT reserved_by FROM {s}") == [("w",)]
    assert await store.requests.reserve(owner="v", limit=1, now=BASE, until=BASE + LEASE) == []


# -- wake-ups --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_approval_in_another_store_wakes_a_waiting_worker_fast(
    postgres_url: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    waiter = await PostgresStore.open(postgres_url, registry=sample_registry(), schema=schema)
    writer = await PostgresStore.open(postgres_url, registry=sample_registry(), schema=schema)
    latencies: list[float] = []
    try:
        assert await waiter.requests.wait_ready(0.05) is False
        woken_at: list[float] = []

        async def wait() -> None:
            woken = await waiter.requests.wait_ready(5.0)
            woken_at.append(time.perf_counter())
            assert woken

        for n in range(50):
            woken_at.clear()
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.01)
                request = sample_request(f"r-{n:03d}", status=RequestStatus.PENDING)
                (pending,) = await create(writer, request)
                # The pending request is not ready: only the approval wakes the waiter.
                approved = attrs.evolve(pending, status=RequestStatus.APPROVED, pending_reason=None)
                write = RequestWrite(approved, pending.revision, ())
                sent = time.perf_counter()  # the commit's round trip is part of the latency
                await writer.committer.commit(GovernedCommit((write,)))
            latencies.append(woken_at[0] - sent)
        # A pending (not ready) request wakes nobody.
        await create(writer, sample_request("quiet", status=RequestStatus.PENDING))
        assert await waiter.requests.wait_ready(0.2) is False
    finally:
        await waiter.aclose()
        await writer.aclose()
    ordered = sorted(latencies)
    median = statistics.median(ordered) * 1000
    p95 = ordered[int(len(ordered) * 0.95) - 1] * 1000
    with capsys.disabled():
        print(
            f"\nwake-up after commit over {len(ordered)}: median {median:.2f} ms, "
            f"p95 {p95:.2f} ms, max {ordered[-1] * 1000:.2f} ms"
        )
    assert median < 50


@pytest.mark.anyio
async def test_waiting_survives_a_terminated_listener(
    postgres_url: str, store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    requests = store.requests
    assert await requests.wait_ready(0.05) is False
    listener = requests._listener._conn
    assert listener is not None
    await execute_sql(postgres_url, "SELECT pg_terminate_backend(%s)", (listener.info.backend_pid,))
    with caplog.at_level(logging.WARNING, logger="mutator.governance.postgres"):
        started = time.perf_counter()
        assert await requests.wait_ready(0.3) is False
        assert time.perf_counter() - started >= 0.25  # waited out, no busy loop
        # The loss is seen during that wait or the next one; then it reconnects and says
        # True (anything may have been missed meanwhile).
        answers = [await requests.wait_ready(0.3)]
        if answers[0] is False:
            answers.append(await requests.wait_ready(0.3))
        assert answers[-1] is True
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    # Listening again: an approval wakes it.
    woken: list[bool] = []

    async def wait() -> None:
        woken.append(await requests.wait_ready(5.0))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.05)
            await create(store, sample_request("r-1", status=RequestStatus.APPROVED))
    assert woken == [True]


@pytest.mark.anyio
async def test_closing_the_store_ends_a_wait_at_once(store: PostgresStore) -> None:
    assert await store.requests.wait_ready(0.01) is False
    woken: list[bool] = []

    async def wait() -> None:
        woken.append(await store.requests.wait_ready(30.0))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.05)
            await store.aclose()
    assert woken == [False]
    assert await store.requests.wait_ready(0.05) is False


# -- quarantine ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_poison_pills_in_every_status_never_stop_reads_or_sweeps(
    postgres_url: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={schema}"
    kinds = list(CORRUPTIONS)
    healthy: list[MutationRequest] = []
    bad: list[str] = []
    shapes: list[tuple[RequestStatus, PendingReason | None]] = [
        (status, None) for status in RequestStatus if status is not RequestStatus.PENDING
    ] + [(RequestStatus.PENDING, reason) for reason in PendingReason]
    store = await PostgresStore.open(postgres_url, registry=sample_registry(), schema=schema)
    try:
        n = 0
        for status, reason in shapes:
            for role in ("good", "bad", "good"):
                n += 1
                changes: dict[str, Any] = {}
                if status is RequestStatus.PENDING:
                    changes["expires_at"] = BASE + timedelta(hours=1)
                if status is RequestStatus.EXECUTING:
                    changes["claim"] = ExecutionClaim("gone", BASE, BASE + LEASE)
                request = sample_request(
                    f"{role}-{n:03d}",
                    status=status,
                    pending_reason=reason,
                    created_at=BASE + timedelta(seconds=n),
                    **changes,
                )
                (stored,) = await create(store, request)
                if role == "bad":
                    bad.append(stored.request_id)
                    await corrupt(postgres_url, schema, stored.request_id, kinds[n % len(kinds)])
                else:
                    healthy.append(stored)
        with caplog.at_level(logging.WARNING, logger=QUARANTINE_LOGGER):
            for _ in range(2):  # the second round finds them quarantined already
                listed: list[MutationRequest] = []
                cursor = None
                while True:
                    page = await store.requests.list(limit=4, cursor=cursor)
                    listed += page.items
                    if (cursor := page.next_cursor) is None:
                        break
                assert ids(listed) == ids(healthy)
                assert ids(await store.requests.by_state("sample:1")) == ids(healthy)
                assert ids(await store.requests.pending()) == [
                    r.request_id for r in healthy if r.status is RequestStatus.PENDING
                ]
                for reason in PendingReason:
                    assert ids(await store.requests.pending(reason)) == [
                        r.request_id for r in healthy if r.pending_reason is reason
                    ]
        newly = [r.getMessage() for r in caplog.records if r.name == QUARANTINE_LOGGER]
        assert len(newly) == len(bad)
        assert sorted(e.request_id for e in await store.requests.quarantined()) == sorted(bad)
        batch = await store.requests.reserve(
            owner="w", limit=100, now=BASE, until=BASE + LEASE, revalidation=True
        )
        assert ids(batch) == [
            r.request_id
            for r in healthy
            if r.status is RequestStatus.APPROVED or r.pending_reason is PendingReason.REVALIDATION
        ]
        for request_id in bad:
            with pytest.raises(StoredDataError):
                await store.requests.get(request_id)
    finally:
        await store.aclose()
    later = BASE + timedelta(days=1)
    async with Governance.open(url, registry=sample_registry()) as gov:
        swept = await gov.expire_due(now=later)
        assert sorted(ids(swept.expired)) == sorted(
            r.request_id for r in healthy if r.status is RequestStatus.PENDING
        )
        recovered = await gov.recover(now=later)
        settled = ids(recovered.released) + ids(recovered.finished)
        assert settled == [r.request_id for r in healthy if r.status is RequestStatus.EXECUTING]


@pytest.mark.anyio
async def test_a_reservation_never_hands_out_a_quarantined_row_even_if_repaired(
    postgres_url: str, store: PostgresStore
) -> None:
    (request,) = await create(store, sample_request("r-1", status=RequestStatus.APPROVED))
    s = f'"{store.schema}".requests'
    (original,) = await execute_sql(postgres_url, f"SELECT document FROM {s}")
    await corrupt(postgres_url, store.schema, "r-1")
    assert await store.requests.reserve(owner="w", limit=5, now=BASE, until=BASE + LEASE) == []
    assert await execute_sql(postgres_url, f"SELECT reserved_by FROM {s}") == [(None,)]
    await execute_sql(postgres_url, f"UPDATE {s} SET document = %s", original)
    assert await store.requests.reserve(owner="w", limit=5, now=BASE, until=BASE + LEASE) == []
    assert await store.requests.release("r-1") is True
    again = await store.requests.reserve(owner="w", limit=5, now=BASE, until=BASE + LEASE)
    assert list(again) == [request]
    assert await store.requests.quarantined() == []


# -- mutation_types pushed down --------------------------------------------------------------


@pytest.mark.anyio
async def test_mutation_types_filter_uses_the_column(
    postgres_url: str, store: PostgresStore
) -> None:
    created = await create(
        store, *(sample_request(f"r-{i}", created_at=BASE + timedelta(seconds=i)) for i in range(3))
    )
    s = f'"{store.schema}".requests'
    assert await execute_sql(postgres_url, f"SELECT DISTINCT mutation_type FROM {s}") == [
        ("testing.sample",)
    ]
    page = await store.requests.list(RequestQuery(mutation_types={"testing.sample"}))
    assert ids(page.items) == ids(created)
    assert (await store.requests.list(RequestQuery(mutation_types={"other"}))).items == ()
    # A row the upgrade could not read has no mutation_type: read and checked, not lost.
    await execute_sql(postgres_url, f"UPDATE {s} SET mutation_type = NULL WHERE request_id = 'r-1'")
    page = await store.requests.list(RequestQuery(mutation_types={"testing.sample"}))
    assert ids(page.items) == ids(created)


# -- purge -----------------------------------------------------------------------------------


def _aged(request_id: str, status: RequestStatus, age_days: int, **changes: Any) -> MutationRequest:
    at = BASE - timedelta(days=age_days)
    decisions = tuple(attrs.evolve(sample_decision(timestamp=at), sequence=n) for n in range(1, 3))
    return sample_request(
        request_id,
        status=status,
        created_at=at - timedelta(days=1),
        updated_at=at,
        decisions=decisions,
        **changes,
    )


def _compensating(request_id: str, original: str, status: RequestStatus) -> MutationRequest:
    plan = CompensationPlan(original)
    execution = ExecutionDetails(kind=ExecutionKind.COMPENSATION, compensation=plan)
    return _aged(request_id, status, 1, execution=execution)


@pytest.mark.anyio
async def test_purge_deletes_old_terminal_requests_with_their_decisions(
    postgres_url: str, schema: str
) -> None:
    requests = [
        _aged("old-executed", RequestStatus.EXECUTED, 40),
        _aged("old-rejected", RequestStatus.REJECTED, 35),
        _aged("old-failed", RequestStatus.FAILED, 50),
        _aged("old-expired", RequestStatus.EXPIRED, 31),
        _aged("new-executed", RequestStatus.EXECUTED, 5),
        _aged("old-pending", RequestStatus.PENDING, 60),
        _aged("old-approved", RequestStatus.APPROVED, 60),
        _aged("old-executing", RequestStatus.EXECUTING, 60),
        _aged("kept-original", RequestStatus.EXECUTED, 45),
        _compensating("live-compensation", "kept-original", RequestStatus.PENDING),
        _aged("freed-original", RequestStatus.EXECUTED, 44),
        _compensating("done-compensation", "freed-original", RequestStatus.EXECUTED),
    ]
    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={schema}"
    reference = InMemoryRequestStore()
    for request in requests:
        await reference.create(request)
    cutoff = BASE - timedelta(days=30)
    terminal = frozenset(s for s in RequestStatus if s.is_terminal)
    expected = purgeable(requests, before=cutoff, statuses=terminal, limit=100)
    assert {r.request_id for r in expected} == {
        "old-executed",
        "old-rejected",
        "old-failed",
        "old-expired",
        "freed-original",
    }
    async with Governance.open(url, registry=sample_registry()) as gov:
        store = gov.requests
        assert isinstance(store, PostgresRequestStore)
        await create(gov, *requests)
        first = await store.purge(before=cutoff, statuses=terminal, limit=2)
        reference_first = await reference.purge(before=cutoff, statuses=terminal, limit=2)
        assert first.request_ids == reference_first.request_ids == ("old-failed", "freed-original")
        assert first.decisions == 4
        report = await gov.purge(older_than=timedelta(days=30), now=BASE, batch_size=2)
        assert (report.requests, report.decisions) == (3, 6)
        remaining = {r.request_id for r in (await gov.list(limit=100)).items}
        assert remaining == {r.request_id for r in requests} - {r.request_id for r in expected}
        for request in expected:
            assert await gov.decisions.for_request(request.request_id) == ()
        assert len(await gov.decisions.for_request("kept-original")) == 2
        assert len(await gov.decisions.for_request("old-pending")) == 2
        # The compensation finishing frees its original for the next purge.
        live = await store.get("live-compensation")
        assert live is not None
        done = attrs.evolve(live, status=RequestStatus.EXECUTED, pending_reason=None)
        await gov.committer.commit(GovernedCommit((RequestWrite(done, live.revision, ()),)))
        again = await store.purge(before=cutoff, statuses=terminal, limit=10)
        assert again.request_ids == ("kept-original",)
        only_failed = await store.purge(
            before=BASE, statuses=frozenset({RequestStatus.FAILED}), limit=10
        )
        assert only_failed.request_ids == ()


@pytest.mark.anyio
async def test_purge_also_forgets_a_quarantined_row(
    postgres_url: str, store: PostgresStore
) -> None:
    await create(store, _aged("old", RequestStatus.EXECUTED, 40))
    await corrupt(postgres_url, store.schema, "old")
    assert (await store.requests.list()).items == ()
    assert len(await store.requests.quarantined()) == 1
    terminal = frozenset({RequestStatus.EXECUTED})
    batch = await store.requests.purge(before=BASE, statuses=terminal, limit=10)
    assert batch.request_ids == ("old",)
    assert await store.requests.quarantined() == []


# -- upgrading a version-2 schema ------------------------------------------------------------


@pytest.mark.anyio
async def test_version_2_schema_with_rows_is_upgraded(postgres_url: str, schema: str) -> None:
    registry = sample_registry()
    s = await migrated_to(postgres_url, schema, 2)
    rows = {
        "original": _aged("original", RequestStatus.EXECUTED, 40),
        # A NUL character in the document: the server's JSON operators refuse it.
        "compensation": attrs.evolve(
            _compensating("compensation", "original", RequestStatus.PENDING),
            metadata={"note": "nul\x00here"},
        ),
        "approved": sample_request("approved", status=RequestStatus.APPROVED, created_at=BASE),
        "broken": sample_request("broken", status=RequestStatus.APPROVED, created_at=BASE),
    }
    for request in rows.values():
        document = registry.dumps(registry.unstructure_request(request))
        if request.request_id == "broken":
            document = "not json {"
        await execute_sql(
            postgres_url,
            f"INSERT INTO {s}.requests (request_id, state_id, status, pending_reason, actor_id, "
            "created_at, updated_at, revision, document) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, 0, %s)",
            (
                request.request_id,
                request.state_id,
                request.status.value,
                None if request.pending_reason is None else request.pending_reason.value,
                request.context.actor_id,
                request.created_at,
                request.updated_at,
                document,
            ),
        )
    store = await PostgresStore.open(postgres_url, registry=registry, schema=schema)
    try:
        columns = await execute_sql(
            postgres_url,
            f"SELECT request_id, mutation_type, compensates, reserved_by FROM {s}.requests "
            "ORDER BY request_id",
        )
        assert columns == [
            ("approved", "testing.sample", None, None),
            ("broken", None, None, None),
            ("compensation", "testing.sample", "original", None),
            ("original", "testing.sample", None, None),
        ]
        listed = await store.requests.list(RequestQuery(mutation_types={"testing.sample"}))
        assert sorted(ids(listed.items)) == ["approved", "compensation", "original"]
        assert [e.request_id for e in await store.requests.quarantined()] == ["broken"]
        batch = await store.requests.reserve(owner="w", limit=5, now=BASE, until=BASE + LEASE)
        assert ids(batch) == ["approved"]
        terminal = frozenset({RequestStatus.EXECUTED})
        kept = await store.requests.purge(before=BASE, statuses=terminal, limit=5)
        assert kept.request_ids == ()  # its compensation is still pending
        # The new governed_commit is in place: it writes the new columns and notifies.
        assert await store.requests.wait_ready(0.01) is False
        fresh = sample_request("fresh", status=RequestStatus.APPROVED, created_at=BASE)
        await create(store, fresh)
        assert await store.requests.wait_ready(2.0) is True
    finally:
        await store.aclose()
    versions = await execute_sql(postgres_url, f"SELECT version FROM {s}.schema_version")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


async def _schema_at(
    postgres_url: str, schema: str, registry: Any, version: int
) -> tuple[MutationRequest, SampleState]:
    """A schema migrated only to ``version``, holding one APPROVED request and its state."""
    s = await migrated_to(postgres_url, schema, version)
    request = sample_request("old", status=RequestStatus.APPROVED, created_at=BASE)
    await insert_request_row(postgres_url, s, registry, request)
    state = SampleState("sample", 7)
    await execute_sql(
        postgres_url,
        f"INSERT INTO {s}.states (state_id, version, request_id, document) "
        "VALUES (%s, '3', NULL, %s)",
        (request.state_id, registry.dumps(registry.unstructure_value(state))),
    )
    return request, state


# -- upgrading a version-3 schema ------------------------------------------------------------


@pytest.mark.anyio
async def test_version_3_schema_is_upgraded_to_the_reading_commit(
    postgres_url: str, schema: str
) -> None:
    s = f'"{schema}"'
    registry = sample_registry()
    request, state = await _schema_at(postgres_url, schema, registry, 3)
    store = await PostgresStore.open(postgres_url, registry=registry, schema=schema)
    try:
        functions = await execute_sql(
            postgres_url,
            "SELECT pg_get_function_identity_arguments(p.oid) FROM pg_proc AS p "
            "JOIN pg_namespace AS n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s AND p.proname = 'governed_commit'",
            (schema,),
        )
        assert functions == [("meta text, documents text[], read_state text",)]
        stored = await store.requests.get("old")
        assert stored == request
        claimed = attrs.evolve(request, status=RequestStatus.EXECUTING)
        (written,), read = await store.committer.commit_reading(
            GovernedCommit((RequestWrite(claimed, request.revision, ()),)), request.state_id
        )
        assert written.revision == 1
        assert await store.requests.get("old") == written
        assert read is not None
        assert (read.state, read.version, read.request_id) == (state, "3", None)
    finally:
        await store.aclose()
    versions = await execute_sql(postgres_url, f"SELECT version FROM {s}.schema_version")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


# -- upgrading a version-4 schema ------------------------------------------------------------


async def _lz4_supported(url: str) -> bool:
    try:
        await execute_sql(url, "CREATE TEMPORARY TABLE lz4_probe (x text COMPRESSION lz4)")
    except psycopg.errors.FeatureNotSupported:
        return False
    return True


@pytest.mark.anyio
async def test_version_4_schema_is_upgraded_in_place(postgres_url: str, schema: str) -> None:
    s = f'"{schema}"'
    registry = sample_registry()
    request, state = await _schema_at(postgres_url, schema, registry, 4)
    store = await PostgresStore.open(postgres_url, registry=registry, schema=schema)
    try:
        functions = await execute_sql(
            postgres_url,
            "SELECT p.proname, pg_get_function_identity_arguments(p.oid) FROM pg_proc AS p "
            "JOIN pg_namespace AS n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s ORDER BY p.proname",
            (schema,),
        )
        assert functions == [
            ("governed_commit", "meta text, documents text[], read_state text"),
            (
                "governed_commit_batch",
                "metas text[], documents text[], firsts integer[], read_states text[], "
                "lock_requests text[], lock_states text[], create_requests text[], "
                "create_states text[], durable boolean",
            ),
            (
                "reserve_ready",
                "p_owner text, p_limit integer, p_now timestamp with time zone, "
                "p_until timestamp with time zone, p_revalidation boolean",
            ),
        ]
        compression = await execute_sql(
            postgres_url,
            "SELECT attcompression FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = 'document'",
            (f"{s}.requests",),
        )
        assert compression == [("l" if await _lz4_supported(postgres_url) else "",)]
        # The old row is read, reserved and claimed by the new functions.
        assert await store.requests.get("old") == request
        (reserved,) = await store.requests.reserve(
            owner="w", limit=5, now=BASE, until=BASE + LEASE, revalidation=True
        )
        assert reserved == request
        claimed = attrs.evolve(request, status=RequestStatus.EXECUTING)
        (written,), read = await store.committer.commit_reading(
            GovernedCommit((RequestWrite(claimed, request.revision, ()),)), request.state_id
        )
        assert written.revision == 1
        assert await store.requests.get("old") == written
        assert read is not None
        assert (read.state, read.version, read.request_id) == (state, "3", None)
        # A stale revision is still refused, and nothing is written.
        with pytest.raises(RequestConcurrencyError):
            await store.committer.commit(
                GovernedCommit((RequestWrite(claimed, request.revision, ()),))
            )
        assert await store.requests.get("old") == written
        # A ready write still notifies in its own transaction.
        assert await store.requests.wait_ready(0.01) is False
        await create(store, sample_request("fresh", status=RequestStatus.APPROVED, created_at=BASE))
        assert await store.requests.wait_ready(2.0) is True
    finally:
        await store.aclose()
    versions = await execute_sql(postgres_url, f"SELECT version FROM {s}.schema_version")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


# -- upgrading a version-5 schema ------------------------------------------------------------


@pytest.mark.anyio
async def test_version_5_schema_is_upgraded_in_place(postgres_url: str, schema: str) -> None:
    s = f'"{schema}"'
    registry = sample_registry()
    request, _ = await _schema_at(postgres_url, schema, registry, 5)
    at = BASE + timedelta(seconds=1)
    logged = [attrs.evolve(sample_decision(timestamp=at), sequence=n) for n in (1, 2)]
    await execute_sql(
        postgres_url,
        f"INSERT INTO {s}.decisions (request_id, sequence, category, timestamp, document) "
        "VALUES (%s, 1, %s, %s, %s)",
        (
            request.request_id,
            logged[0].category.value,
            at,
            registry.dumps(registry.unstructure_decision(logged[0])),
        ),
    )
    store = await PostgresStore.open(postgres_url, registry=registry, schema=schema)
    try:
        keys = await execute_sql(
            postgres_url,
            "SELECT c.conrelid::regclass::text, "
            "array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(n, o) "
            "JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o) "
            "FROM pg_constraint AS c JOIN pg_namespace AS n ON n.oid = c.connamespace "
            "WHERE n.nspname = %s AND c.contype IN ('p', 'u') "
            "AND c.conrelid::regclass::text LIKE '%%.decisions' OR "
            "n.nspname = %s AND c.contype IN ('p', 'u') "
            "AND c.conrelid::regclass::text LIKE '%%.history' ORDER BY 1",
            (schema, schema),
        )
        assert [(table.rsplit(".", 1)[1], columns) for table, columns in keys] == [
            ("decisions", ["request_id", "sequence"]),
            ("history", ["state_id", "id"]),
        ]
        collations = await execute_sql(
            postgres_url,
            "SELECT count(*) FILTER (WHERE co.collname <> 'C') FROM pg_attribute AS a "
            "JOIN pg_class AS t ON t.oid = a.attrelid "
            "JOIN pg_namespace AS n ON n.oid = t.relnamespace "
            "JOIN pg_collation AS co ON co.oid = a.attcollation "
            "WHERE n.nspname = %s AND t.relkind = 'r' AND a.attnum > 0 AND ("
            "a.attname IN ('state_id', 'request_id', 'status', 'pending_reason', 'actor_id', "
            "'mutation_type', 'category')) "
            "AND NOT (t.relname = 'states' AND a.attname = 'request_id')",  # not a key
            (schema,),
        )
        assert collations == [(0,)]
        # The old rows are read; the logged decision keeps its place, the missing one is added.
        assert await store.requests.get("old") == request
        await store.decisions.append(request.request_id, logged)
        assert [d.sequence for d in await store.decisions.for_request("old")] == [1, 2]
        assert len(await store.decisions.recent(10)) == 2
        # A new request is created once; a second create of its id is refused (MU001).
        fresh = sample_request("fresh", status=RequestStatus.PENDING, created_at=BASE)
        await store.committer.commit(GovernedCommit((RequestWrite(fresh, None, ()),)))
        with pytest.raises(RequestAlreadyExistsError):
            await store.committer.commit(GovernedCommit((RequestWrite(fresh, None, ()),)))
        assert await store.requests.get("fresh") == fresh
        found = await store.requests.by_state(request.state_id)
        assert [r.request_id for r in found] == ["fresh", "old"]  # same created_at: by id
    finally:
        await store.aclose()
    versions = await execute_sql(postgres_url, f"SELECT version FROM {s}.schema_version")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
