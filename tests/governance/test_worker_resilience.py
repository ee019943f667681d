"""The worker under load and faults: bounded tasks, constant reads, outages, parking, shutdown."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, ClassVar

import anyio
import attrs
import pytest

from mutator import ConfigurationError, Mutation, MutationIntent, PolicyRequirement
from mutator_governance import (
    WORKER_LOGGER,
    Backoff,
    InMemoryRequestStore,
    MutationRequest,
    QuarantinedRequest,
    RequestNotFoundError,
    RequestPage,
    RequestQuery,
    RequestStatus,
    ResolutionStrategy,
    StoredDataError,
    StoreUnavailableError,
    WorkerOutcome,
    WorkerOutcomeKind,
    WorkerProgress,
)

from ._execution_support import Blocking, Gate, Probe, Stores, world_over
from .conftest import STATE_ID, T0, IncreaseQuota, Quotas, World
from .test_worker import Tracked, Tracker, quotas_of, statuses, with_states

pytestmark = pytest.mark.anyio

S = RequestStatus
K = WorkerOutcomeKind
POLL = 0.01
FAST = Backoff(initial=0.001, maximum=0.01)


class CountingRequests(InMemoryRequestStore):
    """The in-memory request store (atomic commits kept), counting reads and batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.batches: list[int] = []

    async def reserve(self, **options: Any) -> Sequence[MutationRequest]:
        batch = await super().reserve(**options)
        self.batches.append(len(batch))
        return batch

    async def get(self, request_id: str) -> MutationRequest | None:
        self.calls["get"] += 1
        return await super().get(request_id)

    async def list(self, query: Any = None, **options: Any) -> RequestPage:
        self.calls["list"] += 1
        return await super().list(query, **options)

    async def pending(self, *args: Any, **kwargs: Any) -> Sequence[MutationRequest]:
        self.calls["pending"] += 1
        return await super().pending(*args, **kwargs)

    async def due(self, **options: Any) -> Sequence[MutationRequest]:
        self.calls["due"] += 1
        return await super().due(**options)


class Faults:
    """Raises StoreUnavailableError from chosen store methods while switched on."""

    def __init__(self, *methods: str, times: int = 3) -> None:
        self.methods = set(methods)
        self.left = dict.fromkeys(methods, times)
        self.raised: Counter[str] = Counter()

    async def before(self, label: str, method: str, args: Any, kwargs: Any) -> None:
        if method in self.methods and self.left[method] > 0:
            self.left[method] -= 1
            self.raised[method] += 1
            raise StoreUnavailableError(f"injected outage in {label}.{method}", url="memory://")


async def approved_on_fresh_states(world: World, count: int, tracker: Tracker) -> list[str]:
    ids = []
    for state_id in await with_states(world, count):
        request = await world.submit(Tracked(tracker, 1), state_id=state_id)
        assert request.status is S.APPROVED
        ids.append(request.request_id)
    return ids


@attrs.frozen
class Held(Mutation[Quotas]):
    """Adds ``amount`` to bob once ``gate`` opens."""

    gate: anyio.Event = attrs.field(eq=False)
    amount: int = 10
    intent: ClassVar[MutationIntent] = MutationIntent("quota.held")

    async def apply(self, state: Quotas) -> Quotas:
        await self.gate.wait()
        return Quotas({**state.quotas, "bob": state.quotas.get("bob", 0) + self.amount})


class ReservingAgain(InMemoryRequestStore):
    """Hands out ``again`` once more, as read before its claim, while it is EXECUTING: what
    a store does when a lost race gave a request back while its attempt was finishing."""

    def __init__(self) -> None:
        super().__init__()
        self.again: MutationRequest | None = None
        self.handed_again = anyio.Event()

    async def reserve(self, **options: Any) -> Sequence[MutationRequest]:
        batch = list(await super().reserve(**options))
        again = self.again
        if again is not None and not self.handed_again.is_set():
            current = await self.get(again.request_id)
            if current is not None and current.status is RequestStatus.EXECUTING:
                batch.append(again)
                self.handed_again.set()
        return batch


class ReservingAfterRelease(InMemoryRequestStore):
    """While ``watch`` is EXECUTING, a reservation waits for its release, then reserves.

    The interleaving of two connections in one worker: the release of a request that lost
    its state race lands, the worker's next reservation (sent meanwhile on another
    connection) takes it, and its reply is handled before the release's.
    """

    def __init__(self) -> None:
        super().__init__()
        self.watch: str | None = None
        self.released = anyio.Event()
        self.batches: list[list[str]] = []

    async def reserve(self, **options: Any) -> Sequence[MutationRequest]:
        found = None if self.watch is None else await self.get(self.watch)
        if found is not None and found.status is RequestStatus.EXECUTING:
            with anyio.move_on_after(5):
                await self.released.wait()
        batch = await super().reserve(**options)
        self.batches.append([r.request_id for r in batch])
        return batch


class TestReservedAgain:
    async def test_a_request_reserved_during_its_own_attempt_runs_after_it(self) -> None:
        """Never twice at once, never dropped: it runs once its attempt is over (the stale
        copy then loses the claim's compare-and-set, so nothing runs twice)."""
        requests = ReservingAgain()
        world = await world_over(Stores(requests=requests))
        world.registry.register(Held)
        world.registry.register(Tracked)
        gate = anyio.Event()
        held_state, other_state = await with_states(world, 2)
        held = await world.submit(Held(gate), state_id=held_state)
        await world.submit(Tracked(Tracker()), state_id=other_state)
        requests.again = held
        outcomes: list[WorkerOutcome] = []

        async def open_gate() -> None:
            await requests.handed_again.wait()
            gate.set()

        async with anyio.create_task_group() as group:
            group.start_soon(open_gate)
            with anyio.fail_after(10):
                report = await world.gov.run_worker(
                    until_idle=True, concurrency=2, poll_interval=POLL, on_outcome=outcomes.append
                )

        assert requests.handed_again.is_set()
        assert (report.executed, report.skipped, report.errors) == (2, 1, 0)
        mine = [o.kind for o in outcomes if o.request_id == held.request_id]
        assert mine == [K.EXECUTED, K.SKIPPED]
        assert await quotas_of(world, held_state) == ({"bob": 11}, "2")
        assert set((await statuses(world)).values()) == {S.EXECUTED}

    async def test_a_request_released_by_a_lost_race_and_reserved_meanwhile_executes(
        self,
    ) -> None:
        """The real interleaving: a lost state race releases the request, the worker's
        concurrent reservation takes it while the attempt is still settling, and it then
        executes on the latest state (before: left APPROVED under our own reservation)."""
        inner = ReservingAfterRelease()
        stores = Stores(requests=inner)

        async def slow_release_reply(label: str, method: str, args: Any, kwargs: Any) -> None:
            if method != "replace":
                return
            request = args[0]
            if request.request_id == inner.watch and request.status is S.APPROVED:
                inner.released.set()
                await anyio.sleep(0.05)

        world = await world_over(
            stores, requests=Probe(inner, "requests", after=slow_release_reply)
        )
        gate = Gate()
        request = await world.submit(Blocking(gate, amount=5))
        assert request.status is S.APPROVED
        inner.watch = request.request_id
        outcomes: list[WorkerOutcome] = []

        async def race_the_state() -> None:
            await gate.reached.wait()
            await stores.states.put(STATE_ID, Quotas({"bob": 100}), expected_version="1")
            gate.opened.set()

        async with anyio.create_task_group() as group:
            group.start_soon(race_the_state)
            with anyio.fail_after(10):
                report = await world.gov.run_worker(
                    until_idle=True,
                    concurrency=2,
                    poll_interval=POLL,
                    strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE,
                    on_outcome=outcomes.append,
                )

        assert any(request.request_id in batch for batch in inner.batches[1:])
        assert [o.kind for o in outcomes] == [K.SKIPPED, K.EXECUTED]
        assert report.executed == 1
        assert (await world.gov.get(request.request_id)).status is S.EXECUTED
        assert await quotas_of(world, STATE_ID) == ({"bob": 105}, "3")


class TestBoundedWork:
    @pytest.mark.parametrize("concurrency", [1, 3, 8])
    async def test_a_backlog_runs_within_the_limit_with_constant_reads(
        self, concurrency: int
    ) -> None:
        """2,000 ready requests: never more executions than the limit, one row read each."""
        counting = CountingRequests()
        world = await world_over(Stores(requests=counting))
        world.registry.register(Tracked)
        tracker = Tracker()
        ids = await approved_on_fresh_states(world, 2000, tracker)
        counting.calls.clear()
        progress = WorkerProgress()
        peaks: list[int] = []

        report = await world.gov.run_worker(
            until_idle=True,
            concurrency=concurrency,
            poll_interval=POLL,
            progress=progress,
            on_outcome=lambda _: peaks.append(progress.in_flight),
        )

        assert report.executed == len(ids) == 2000
        assert tracker.peak <= concurrency
        assert max(peaks) <= concurrency
        # every request reached the worker through one reservation, in batches
        reserved = counting.batches
        assert sum(reserved) == 2000
        assert max(reserved) <= concurrency
        assert len(reserved) <= 2000 // concurrency + concurrency + 2
        # besides reservations: one recovery sweep (list), one expiry sweep (through the
        # store's expiry index: one batch of due requests)
        assert counting.calls == {"list": 1, "due": 1}


class TestOutages:
    async def test_outages_while_polling_and_committing_are_retried(self) -> None:
        """Reserve, claim and commit fail for a while: the worker backs off and drains all."""
        stores = Stores()
        faults = Faults("reserve", "replace", times=4)
        world = await world_over(
            stores, requests=Probe(stores.requests, "requests", before=faults.before)
        )
        ids = [
            (await world.submit(IncreaseQuota("bob", 1), state_id=state_id)).request_id
            for state_id in await with_states(world, 12)
        ]

        report = await world.gov.run_worker(
            until_idle=True, concurrency=3, poll_interval=POLL, backoff=FAST
        )

        assert faults.raised == {"reserve": 4, "replace": 4}
        assert report.executed == 12
        assert report.outages >= 4
        assert report.retried >= 1
        found = await statuses(world)
        assert {found[i] for i in ids} == {S.EXECUTED}
        for state_id in [f"quotas:s{i}" for i in range(12)]:
            assert await quotas_of(world, state_id) == ({"bob": 2}, "2")

    async def test_an_outage_in_housekeeping_does_not_stop_the_worker(self) -> None:
        stores = Stores()
        faults = Faults("list", "due", times=2)
        world = await world_over(
            stores, requests=Probe(stores.requests, "requests", before=faults.before)
        )
        request = await world.submit()

        report = await world.gov.run_worker(until_idle=True, poll_interval=POLL, backoff=FAST)

        assert report.executed == 1
        assert report.outages >= 2
        assert (await world.gov.get(request.request_id)).status is S.EXECUTED

    async def test_a_request_failing_transiently_is_retried_until_it_runs(self) -> None:
        stores = Stores()
        world = await world_over(stores)
        request = await world.submit()
        failures = 3

        async def flaky(label: str, method: str, args: Any, kwargs: Any) -> None:
            nonlocal failures
            if method == "get" and failures > 0:
                failures -= 1
                raise StoreUnavailableError("state store unreachable", url="memory://")

        world.gov.executor.ledger.states = Probe(stores.states, "states", before=flaky)  # type: ignore[misc]
        outcomes: list[WorkerOutcome] = []

        report = await world.gov.run_worker(
            until_idle=True, poll_interval=POLL, backoff=FAST, on_outcome=outcomes.append
        )

        assert [o.kind for o in outcomes] == [K.RETRIED] * 3 + [K.EXECUTED]
        assert (report.retried, report.executed) == (3, 1)
        stored = await world.gov.get(request.request_id)
        assert stored.status is S.EXECUTED
        assert await quotas_of(world, STATE_ID) == ({"bob": 11}, "2")


class TestParking:
    async def test_a_request_that_raises_is_parked_not_retried_in_a_loop(
        self, world: World
    ) -> None:
        broken = await world.submit()
        await world.force(broken, state_id="quotas:gone")
        outcomes: list[WorkerOutcome] = []

        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: world.gov.run_worker(poll_interval=POLL, on_outcome=outcomes.append)
            )
            await anyio.sleep(0.3)
            tg.cancel_scope.cancel()

        assert [(o.request_id, o.kind) for o in outcomes] == [(broken.request_id, K.ERROR)]
        assert (await world.gov.get(broken.request_id)).status is S.APPROVED


class TestHousekeeping:
    async def test_the_worker_expires_overdue_requests(self, world: World) -> None:
        world.rules.require(PolicyRequirement.approval("carol"))
        overdue = await world.submit(expires_at=world.clock.now + timedelta(minutes=5))
        world.clock.advance(minutes=10)

        report = await world.gov.run_worker(until_idle=True, poll_interval=POLL)

        assert report.expired == 1
        assert (await world.gov.get(overdue.request_id)).status is S.EXPIRED

    async def test_every_outcome_is_logged_at_info(
        self, world: World, caplog: pytest.LogCaptureFixture
    ) -> None:
        request = await world.submit()
        with caplog.at_level(logging.INFO, logger=WORKER_LOGGER):
            await world.gov.run_worker(until_idle=True, poll_interval=POLL)

        (record,) = [r for r in caplog.records if r.name == WORKER_LOGGER]
        assert record.levelno == logging.INFO
        assert record.__dict__["request_id"] == request.request_id
        assert record.__dict__["operation"] == "execute"
        assert record.__dict__["outcome"] == "executed"
        assert record.__dict__["status"] == "executed"
        assert record.__dict__["duration"] >= 0


class TestShutdown:
    async def test_in_flight_work_finishes_within_the_grace_period(self) -> None:
        world = await world_over()
        gate = Gate()
        request = await world.submit(Blocking(gate))
        progress = WorkerProgress()

        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: world.gov.run_worker(poll_interval=POLL, grace=5, progress=progress)
            )
            await gate.reached.wait()
            tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.05)  # the worker is cancelled; its execution still runs
            gate.opened.set()

        assert (await world.gov.get(request.request_id)).status is S.EXECUTED
        assert progress.report.executed == 1
        assert progress.in_flight == 0

    async def test_work_past_the_grace_period_is_released(self) -> None:
        world = await world_over()
        gate = Gate()
        request = await world.submit(Blocking(gate))
        progress = WorkerProgress()

        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: world.gov.run_worker(poll_interval=POLL, grace=0.05, progress=progress)
            )
            await gate.reached.wait()
            tg.cancel_scope.cancel()

        page = await world.gov.list(RequestQuery(statuses={S.EXECUTING}))
        assert page.items == ()
        assert (await world.gov.get(request.request_id)).status is S.APPROVED
        assert progress.report.executed == 0
        assert await quotas_of(world, STATE_ID) == ({"bob": 1}, "1")


class TestSharedStore:
    async def test_workers_sharing_a_store_take_disjoint_batches(self) -> None:
        """Three workers over one store: every request runs once and nobody loses a claim."""
        stores = Stores()
        worlds = [await world_over(stores) for _ in range(3)]
        ids = [
            (await worlds[0].submit(IncreaseQuota("bob", 1), state_id=state_id)).request_id
            for state_id in await with_states(worlds[0], 60)
        ]
        reports = []

        async def run(world: World) -> None:
            reports.append(
                await world.gov.run_worker(until_idle=True, concurrency=4, poll_interval=POLL)
            )

        async with anyio.create_task_group() as tg:
            for world in worlds:
                tg.start_soon(run, world)

        assert sum(r.executed for r in reports) == len(ids)
        assert sum(r.skipped for r in reports) == 0
        total = 0
        for i in range(60):
            quotas, _ = await quotas_of(worlds[0], f"quotas:s{i}")
            total += quotas["bob"]
        assert total == 60 * 2


class TestOptions:
    @pytest.mark.parametrize(
        ("initial", "maximum"),
        [(0, 1), (-1, 1), (2, 1), (float("nan"), 1), (1, True), (1, 1e12)],
    )
    def test_a_bad_backoff_is_refused(self, initial: float, maximum: float) -> None:
        with pytest.raises(ConfigurationError, match="Backoff"):
            Backoff(initial=initial, maximum=maximum)

    def test_backoff_doubles_up_to_its_maximum_with_jitter(self) -> None:
        backoff = Backoff(initial=1, maximum=8)
        for attempt, cap in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8)]:
            delay = backoff.delay(attempt)
            assert cap / 2 <= delay <= cap

    @pytest.mark.parametrize("option", ["grace", "expire_every"])
    async def test_a_bad_interval_is_refused(self, world: World, option: str) -> None:
        with pytest.raises(ConfigurationError, match=option):
            await world.gov.run_worker(until_idle=True, **{option: -1})

    async def test_the_quarantine_count_is_reported(self) -> None:
        """The report counts what the store's quarantine log holds; gov.quarantined lists it."""
        entry = QuarantinedRequest("damaged", "memory", "document", "not JSON", T0)

        class OneDamagedRow(InMemoryRequestStore):
            async def quarantined(self) -> Sequence[QuarantinedRequest]:
                return (entry,)

        world = await world_over(Stores(requests=OneDamagedRow()))
        await world.submit()

        report = await world.gov.run_worker(until_idle=True, poll_interval=POLL)

        assert (report.executed, report.quarantined) == (1, 1)
        assert await world.gov.quarantined() == (entry,)


class TestBackoffWaits:
    async def test_a_worker_backing_off_sleeps_instead_of_spinning(self) -> None:
        """While the store is down the loop waits out each backoff without burning CPU."""
        stores = Stores()
        faults = Faults("reserve", times=3)
        world = await world_over(
            stores, requests=Probe(stores.requests, "requests", before=faults.before)
        )
        await world.submit()
        wall, cpu = time.perf_counter(), time.process_time()

        report = await world.gov.run_worker(
            until_idle=True, poll_interval=POLL, backoff=Backoff(initial=0.2, maximum=0.2)
        )

        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert (report.executed, report.outages) == (1, 3)
        assert wall >= 0.3  # three backoffs of 0.1-0.2 s were waited out
        assert cpu < wall / 2


class RecordingTelemetry:
    """A :class:`~mutator_governance._telemetry.Telemetry` that runs every call as it is and
    records the worker's executions and outcomes."""

    def __init__(self) -> None:
        self.executions: list[str] = []
        self.outcomes: list[str] = []

    async def operation(self, name: str, call: Any, args: Any, kwargs: Any) -> Any:
        return await call(*args, **kwargs)

    def capture(self) -> dict[str, str]:
        return {}

    def loaded(self, request: MutationRequest) -> None:
        pass

    async def commit(self, commit: Any, call: Any) -> Any:
        return await call()

    async def worker_execution(self, request: MutationRequest, call: Any) -> Any:
        self.executions.append(request.request_id)
        return await call()

    def worker_outcome(self, outcome: str) -> None:
        self.outcomes.append(outcome)

    async def refresh(self, requests: Any) -> None:
        pass


class TestInstrumentedRetries:
    """With telemetry on, a retry loads its request (the span's anchor) before executing;
    that read fails like the execution would. Before: its error escaped the worker's task
    group and killed ``run_worker``."""

    @pytest.mark.parametrize(
        ("error", "then"),
        [
            (StoreUnavailableError("store flapping", url="memory://"), [K.RETRIED, K.EXECUTED]),
            (StoredDataError("not a JSON document", backend="memory"), [K.ERROR]),
            (RequestNotFoundError("purged meanwhile"), [K.SKIPPED]),
        ],
        ids=["outage", "unreadable", "gone"],
    )
    async def test_a_failed_read_of_a_retried_request_is_classified_like_its_execution(
        self, error: Exception, then: list[WorkerOutcomeKind]
    ) -> None:
        stores = Stores()
        target: list[str] = []
        fail = {"replace": 1, "get": 0}

        async def flaky(label: str, method: str, args: Any, kwargs: Any) -> None:
            if method not in fail or fail[method] < 1 or not target:
                return
            request_id = args[0] if method == "get" else args[0].request_id
            if request_id != target[0]:
                return
            fail[method] -= 1
            if method == "replace":
                raise StoreUnavailableError("commit outage", url="memory://")
            raise error

        world = await world_over(stores, requests=Probe(stores.requests, "requests", before=flaky))
        telemetry = RecordingTelemetry()
        world.gov.executor.telemetry = telemetry
        other = await world.submit(
            IncreaseQuota("bob", 1), state_id=(await with_states(world, 1))[0]
        )
        request = await world.submit()
        target.append(request.request_id)
        outcomes: list[WorkerOutcome] = []

        def arm(outcome: WorkerOutcome) -> None:
            outcomes.append(outcome)
            if outcome.kind is K.RETRIED and "armed" not in fail:
                fail["armed"] = 1
                fail["get"] = 1  # the retry's read of its request fails once

        with anyio.fail_after(10):
            report = await world.gov.run_worker(
                until_idle=True, concurrency=1, poll_interval=POLL, backoff=FAST, on_outcome=arm
            )

        mine = [o.kind for o in outcomes if o.request_id == request.request_id]
        assert mine == [K.RETRIED, *then]
        assert fail["get"] == 0
        assert telemetry.outcomes == [o.kind.value for o in outcomes]
        assert (await world.gov.get(other.request_id)).status is S.EXECUTED
        assert report.executed == 1 + then.count(K.EXECUTED)
        expected = S.EXECUTED if then[-1] is K.EXECUTED else S.APPROVED
        assert (await world.gov.get(request.request_id)).status is expected
