"""The worker: executes ready requests in bounded batches and never stops for one bad thing.

Each poll reserves a batch at the store (:class:`~mutator_governance.ReadyQueue`: one
operation, disjoint across processes) or, for a store without one, pages through the
approved requests. At most ``concurrency`` executions run at once; a store outage backs
off and retries, a request that raised is parked instead of retried in a loop, and
housekeeping (claim recovery, expiry, retention) runs on its own intervals. Cancelling
the worker stops claiming and gives in-flight executions ``grace`` seconds to finish
before their claims are released, and gives back
(:class:`~mutator_governance.ReservationRelease`) any reservation it did not start.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import attrs

from mutator import ConcurrencyError, ConfigurationError, MutationContext

from ._arguments import check_count, check_seconds, check_span
from ._enums import PendingReason, RequestStatus, ResolutionStrategy
from ._errors import (
    RequestClaimedError,
    RequestConcurrencyError,
    RequestNotExecutableError,
    RequestNotFoundError,
    outage_in,
)
from ._query import RequestQuery
from ._request import MutationRequest
from .protocols import QuarantineLog, ReadyQueue, ReadySignal, ReservationRelease

if TYPE_CHECKING:
    from ._execution import GovernedExecutionManager, GovernedExecutionResult

__all__ = [
    "WORKER_LOGGER",
    "Backoff",
    "WorkerOutcome",
    "WorkerOutcomeKind",
    "WorkerProgress",
    "WorkerReport",
    "run_worker",
]

WORKER_LOGGER = "mutator.governance.worker"
"""The worker's logger: one INFO record per outcome, WARNING for outages and parked requests."""

_log = logging.getLogger(WORKER_LOGGER)


class WorkerOutcomeKind(enum.Enum):
    """What one execution attempt by the worker came to."""

    EXECUTED = "executed"
    """The mutation ran and its state was committed."""
    NOT_EXECUTED = "not_executed"
    """Resolution or policies stopped it (stale, rejected, pending approvals again)."""
    FAILED = "failed"
    """The mutation itself failed: the request is FAILED."""
    SKIPPED = "skipped"
    """Someone else claimed or decided it first; nothing to do."""
    RETRIED = "retried"
    """A store outage interrupted it; the worker retries it after a backoff."""
    ERROR = "errors"
    """It raised an unexpected error; it is parked, not retried in a loop."""


@attrs.frozen
class WorkerOutcome:
    """One execution attempt: the request, what it came to, and how long it took.

    ``status`` is the request's status afterwards when known; ``result`` the execution's
    result when it ran to an outcome; ``error`` the exception of a skipped, retried or
    errored attempt.
    """

    request_id: str
    kind: WorkerOutcomeKind
    duration: float
    status: RequestStatus | None = None
    error: BaseException | None = attrs.field(default=None, eq=False, repr=False)
    result: GovernedExecutionResult | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class WorkerReport:
    """Counts of what a worker did: outcomes by kind, housekeeping and outages.

    ``quarantined`` is the number of quarantined requests the store reported at the last
    housekeeping (they are skipped, never executed); ``outages`` counts store operations
    that failed with an outage and were retried after a backoff; ``purged`` counts the
    requests its retention purges deleted.
    """

    executed: int = 0
    not_executed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    retried: int = 0
    recovered: int = 0
    expired: int = 0
    quarantined: int = 0
    outages: int = 0
    purged: int = 0


_COUNTED = {
    WorkerOutcomeKind.EXECUTED: "executed",
    WorkerOutcomeKind.NOT_EXECUTED: "not_executed",
    WorkerOutcomeKind.FAILED: "failed",
    WorkerOutcomeKind.SKIPPED: "skipped",
    WorkerOutcomeKind.RETRIED: "retried",
    WorkerOutcomeKind.ERROR: "errors",
}


class WorkerProgress:
    """A live view of a running worker; pass one to ``run_worker(progress=...)``.

    :attr:`report` is current while the worker runs and final after it stops, also when
    it was cancelled (``run_worker`` returns nothing then).
    """

    __slots__ = ("_counts", "in_flight")

    def __init__(self) -> None:
        self._counts: dict[str, int] = dict.fromkeys(attrs.fields_dict(WorkerReport), 0)
        self.in_flight = 0
        """Executions running now."""

    @property
    def report(self) -> WorkerReport:
        """The counts so far."""
        return WorkerReport(**self._counts)

    def _add(self, name: str, amount: int = 1) -> None:
        self._counts[name] += amount

    def _set(self, name: str, value: int) -> None:
        self._counts[name] = value


@attrs.frozen
class Backoff:
    """Exponential backoff with jitter: ``initial`` doubling up to ``maximum`` seconds.

    Each delay is drawn between half and all of the capped exponential, so workers that
    failed together do not retry together.
    """

    initial: float = 0.5
    maximum: float = 30.0

    def __attrs_post_init__(self) -> None:
        for name in ("initial", "maximum"):
            check_seconds(f"Backoff.{name}", getattr(self, name))
            check_span(f"Backoff.{name}", getattr(self, name))  # a reservation lasts as long
        if self.maximum < self.initial:
            raise ConfigurationError(
                f"Backoff.maximum ({self.maximum!r}) must be >= initial ({self.initial!r})"
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        capped = min(self.maximum, self.initial * 2.0 ** min(attempt - 1, 32))
        jitter: float = random.uniform(0.5, 1.0)
        return capped * jitter


_LOST_RACE = (
    RequestConcurrencyError,
    RequestNotExecutableError,
    RequestClaimedError,
    RequestNotFoundError,
    ConcurrencyError,
)

_POLL_FLOOR = 0.01
"""The shortest wait, in seconds, of a worker waiting to poll again (``poll_interval=0``).

Without it a waiting worker would read the store in a busy loop (a whole core and tens of
thousands of reads a second). 10 ms is about the wake-up latency of the stores that push
(PostgreSQL LISTEN/NOTIFY and Redis pub/sub: 6-11 ms measured), 100 polls a second cost
an idle worker little, and a finished execution still wakes the worker at once.
"""

_SIGNAL_PAUSE = 0.05
"""The shortest pause, in seconds, before asking again a ready signal that returned at once
without a wake-up (a store whose listening connection is down answers at once)."""

_GIVE_BACK_SECONDS = 5.0
"""How long a stopping worker waits for the store to take back its unstarted reservations."""

_RESERVE_SECONDS = 10.0
"""How long a reservation may take, and run on once the worker is cancelled: the store may
have made it already (a PostgreSQL statement committed while its reply was on the way),
and only a worker that gets the reply can give the reservation back."""

Housekeeping = Callable[[], Awaitable[int]]
"""A periodic sweep the worker runs; returns how many requests it settled."""


@attrs.frozen
class _Chore:
    name: str
    every: float
    run: Housekeeping
    counter: str | None


class _Worker:
    """One run of :func:`run_worker` (the loop's state lives here, not in closures)."""

    def __init__(
        self,
        manager: GovernedExecutionManager,
        *,
        concurrency: int,
        poll_interval: float,
        strategy: ResolutionStrategy,
        context: MutationContext,
        until_idle: bool,
        chores: Sequence[_Chore],
        backoff: Backoff,
        grace: float,
        progress: WorkerProgress,
        on_outcome: Callable[[WorkerOutcome], object] | None,
    ) -> None:
        self.manager = manager
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.strategy = strategy
        self.revalidation = strategy is ResolutionStrategy.REVALIDATE_ON_LATEST_STATE
        self.context = context
        self.until_idle = until_idle
        self.chores = chores
        self.backoff = backoff
        self.grace = grace
        self.progress = progress
        self.on_outcome = on_outcome
        requests = manager.ledger.requests
        self.queue = requests if isinstance(requests, ReadyQueue) else None
        self.signal = requests if isinstance(requests, ReadySignal) else None
        self.quarantine = requests if isinstance(requests, QuarantineLog) else None
        self.release = (
            requests
            if self.queue is not None and isinstance(requests, ReservationRelease)
            else None
        )
        self.buffer: deque[MutationRequest] = deque()
        self.requeued: dict[str, MutationRequest] = {}
        """Reserved again while an attempt of theirs was still running (see _refill)."""
        self.stopping = False
        self.unstarted: dict[str, None] = {}
        """Reserved but never started when the worker stopped: to give back (in order)."""
        self.given_back: set[str] = set()
        self.in_flight: set[str] = set()
        self.scopes: set[anyio.CancelScope] = set()
        self.retries: dict[str, tuple[float, int]] = {}
        self.parked: dict[str, float] = {}
        self.next_chore = dict.fromkeys((chore.name for chore in chores), 0.0)
        self.chore_failures = dict.fromkeys((chore.name for chore in chores), 0)
        self.reserve_failures = 0
        self.resume_at = 0.0
        self.wake = anyio.Event()

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> WorkerReport:
        try:
            async with anyio.create_task_group() as tg:
                if self.signal is not None and not self.until_idle:
                    tg.start_soon(self._listen, self.signal)
                try:
                    await self._loop(tg)
                except anyio.get_cancelled_exc_class():
                    self._shut_down()
                    raise
                finally:
                    # What was reserved and not started goes back now, while in-flight
                    # executions finish, so other workers can take it at once.
                    await self._give_back()
                    with anyio.CancelScope(shield=True), anyio.move_on_after(self.grace + 1):
                        await self._count_quarantined()
                tg.cancel_scope.cancel()
        finally:
            await self._give_back()  # a retry an execution scheduled during the grace period
        return self.progress.report

    async def _loop(self, tg: anyio.abc.TaskGroup) -> None:
        while True:
            now = anyio.current_time()
            await self._housekeeping(now)
            # A store call (housekeeping, a reservation in a worker thread) may return after
            # the worker was cancelled: start nothing then (shutdown gives the batch back).
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._start_due_retries(tg, now)
            drained = True
            if self._free() > 0 and now >= self.resume_at:
                if not self.buffer:
                    drained = await self._refill()
                    await anyio.lowlevel.checkpoint_if_cancelled()
                while self.buffer and self._free() > 0:
                    self._start(tg, self.buffer.popleft(), None)
            elif now < self.resume_at:
                drained = False
            if self.until_idle and self._idle(drained):
                return
            if self.buffer and self._free() > 0:
                continue
            await self._wait(self._timeout(now, drained))

    def _free(self) -> int:
        return self.concurrency - len(self.in_flight)

    def _idle(self, drained: bool) -> bool:
        return (
            drained
            and not self.buffer
            and not self.in_flight
            and not self.retries
            and not self.requeued
        )

    def _timeout(self, now: float, drained: bool) -> float:
        if self.resume_at > now:
            waits = [self.resume_at - now]  # backing off after a failed reservation
        elif self.buffer or not drained:
            # slots are full (a completion wakes us) or more may be ready right away
            waits = [max(self.poll_interval, _POLL_FLOOR) if self._free() <= 0 else 0.0]
        else:
            # nothing to start: poll again later, never in a busy loop (poll_interval=0)
            waits = [max(self.poll_interval * random.uniform(0.8, 1.2), _POLL_FLOOR)]
        waits.extend(due - now for due, _ in self.retries.values())
        waits.extend(due - now for due in self.next_chore.values())
        return max(0.0, min(waits))

    async def _wait(self, seconds: float) -> None:
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self.wake.wait()
        else:
            await anyio.lowlevel.checkpoint()
        self.wake = anyio.Event()

    async def _listen(self, signal: ReadySignal) -> None:
        """Wake the loop when the store says a request became ready."""
        while True:
            started = anyio.current_time()
            woken = await signal.wait_ready(max(self.poll_interval, 1.0))
            if woken:
                self.wake.set()
            elif anyio.current_time() - started < _SIGNAL_PAUSE:
                # It could not wait (its connection is down, say): ask again later, never
                # in a busy loop, whatever the poll interval.
                await anyio.sleep(max(min(self.poll_interval, 1.0), _SIGNAL_PAUSE))

    def _shut_down(self) -> None:
        """Stop claiming; give in-flight executions ``grace`` seconds, then cancel them.

        The requests reserved and not started are set aside for :meth:`_give_back`.
        """
        self.stopping = True
        self.unstarted.update(dict.fromkeys(r.request_id for r in self.buffer))
        self.unstarted.update(dict.fromkeys(self.requeued))
        self.buffer.clear()
        self.requeued.clear()
        deadline = anyio.current_time() + self.grace
        for scope in self.scopes:
            scope.deadline = min(scope.deadline, deadline)

    async def _give_back(self) -> None:
        """Give back the reservations this worker holds on requests it will not start.

        Those set aside at shutdown, still buffered or waiting for a retry; each id once.
        Shielded and bounded (it runs while the worker is cancelled); a failure is logged
        at WARNING, never raised: the reservations then run out on their own.
        """
        if self.release is None:
            return
        candidates = [
            *self.unstarted,
            *(r.request_id for r in self.buffer),
            *self.requeued,
            *self.retries,
        ]
        ids = [i for i in dict.fromkeys(candidates) if i not in self.given_back]
        if not ids:
            return
        self.given_back.update(ids)
        cleared = 0
        failure: BaseException | None = None
        with anyio.CancelScope(shield=True), anyio.move_on_after(_GIVE_BACK_SECONDS) as bound:
            try:
                cleared = await self.release.unreserve(
                    owner=self.manager.executor_id, request_ids=ids
                )
            except Exception as error:
                failure = error
        if bound.cancelled_caught or failure is not None:
            _log.warning(
                "giving back %d unstarted reservations failed (%s); other workers take "
                "them when the reservations run out",
                len(ids),
                "timed out" if failure is None else repr(failure),
                exc_info=failure,
                extra={"operation": "unreserve", "outcome": "errors"},
            )
            return
        _log.info(
            "gave back %d of %d unstarted reservations",
            cleared,
            len(ids),
            extra={"operation": "unreserve", "outcome": "released"},
        )

    # -- finding work --------------------------------------------------------------------

    async def _refill(self) -> bool:
        """Reserve a batch of ``concurrency`` ready requests; True when the store had no
        more to give.

        A whole batch, not just the free slots: one reservation per batch instead of one
        per freed slot (each is a store round trip, ~0.4 ms of PostgreSQL CPU). What the
        slots cannot start yet waits in the buffer, reserved for this worker; a stopping
        worker gives it back (:meth:`_give_back`).
        """
        wanted = self.concurrency
        try:
            batch = await self._reserve(wanted)
        except Exception as error:
            self.reserve_failures += 1
            delay = self.backoff.delay(self.reserve_failures)
            self.resume_at = anyio.current_time() + delay
            if outage_in(error) is not None:
                self._outage("reserve", error, delay)
            else:
                _log.exception(
                    "finding ready requests failed; retrying in %.2f s",
                    delay,
                    extra={"operation": "reserve", "outcome": "errors", "delay": delay},
                )
            return False
        self.reserve_failures = 0
        now = anyio.current_time()
        for request in batch:
            request_id = request.request_id
            if request_id in self.in_flight:
                # Its attempt running now gave it back (a lost race released the claim)
                # and this reservation holds it: run it again once that attempt is over.
                self.requeued[request_id] = request
                continue
            if request_id in self.retries:
                continue
            if self.parked.get(request_id, 0.0) > now:
                continue
            self.parked.pop(request_id, None)
            self.buffer.append(request)
        return len(batch) < wanted

    async def _reserve(self, limit: int) -> Sequence[MutationRequest]:
        manager = self.manager
        if self.queue is not None:
            now = manager.clock()
            until = now + max(manager.lease, timedelta(seconds=self.backoff.maximum))
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + _RESERVE_SECONDS
                return await self.queue.reserve(
                    owner=manager.executor_id,
                    limit=limit,
                    now=now,
                    until=until,
                    revalidation=self.revalidation,
                )
            raise TimeoutError(f"reserving ready requests took over {_RESERVE_SECONDS:g} s")
        return await self._scan(limit)

    async def _scan(self, limit: int) -> list[MutationRequest]:
        """Ready requests of a store without a ReadyQueue, skipping what this worker holds."""
        now = anyio.current_time()
        held = (
            self.in_flight
            | self.retries.keys()
            | {request_id for request_id, due in self.parked.items() if due > now}
        )
        found: list[MutationRequest] = []
        queries = [RequestQuery(statuses={RequestStatus.APPROVED})]
        if self.revalidation:
            queries.append(
                RequestQuery(
                    statuses={RequestStatus.PENDING},
                    pending_reasons={PendingReason.REVALIDATION},
                )
            )
        requests = self.manager.ledger.requests
        for query in queries:
            cursor = None
            while len(found) < limit:
                page = await requests.list(query, limit=limit + len(held), cursor=cursor)
                found.extend(r for r in page.items if r.request_id not in held)
                cursor = page.next_cursor
                if cursor is None:
                    break
        return found[:limit]

    def _start_due_retries(self, tg: anyio.abc.TaskGroup, now: float) -> None:
        for request_id, (due, attempt) in list(self.retries.items()):
            if self._free() <= 0:
                return
            if due <= now:
                del self.retries[request_id]
                self._start(tg, request_id, attempt)

    # -- executing -----------------------------------------------------------------------

    def _start(
        self, tg: anyio.abc.TaskGroup, work: MutationRequest | str, attempt: int | None
    ) -> None:
        request_id = work if isinstance(work, str) else work.request_id
        self.in_flight.add(request_id)
        self.progress.in_flight = len(self.in_flight)
        tg.start_soon(self._execute, work, attempt or 0)

    async def _execute(self, work: MutationRequest | str, attempt: int) -> None:
        request_id = work if isinstance(work, str) else work.request_id
        # Shielded so cancelling the worker does not interrupt it; shutdown sets a deadline.
        scope = anyio.CancelScope(shield=True)
        self.scopes.add(scope)
        started = anyio.current_time()
        try:
            with scope:
                outcome = await self._attempt(work, attempt, started)
            if scope.cancelled_caught:
                outcome = WorkerOutcome(
                    request_id, WorkerOutcomeKind.SKIPPED, anyio.current_time() - started
                )
            self._record(outcome)
        finally:
            self.scopes.discard(scope)
            self.in_flight.discard(request_id)
            again = self.requeued.pop(request_id, None)
            if again is not None and self._may_run_again(request_id):
                self.buffer.appendleft(again)
            self.progress.in_flight = len(self.in_flight)
            self.wake.set()

    def _may_run_again(self, request_id: str) -> bool:
        """Whether a request reserved during its own attempt may run now (not when the
        worker stops, the attempt parked it, or a retry of it is scheduled)."""
        if self.stopping or request_id in self.retries:
            return False
        return self.parked.get(request_id, 0.0) <= anyio.current_time()

    async def _attempt(
        self, work: MutationRequest | str, attempt: int, started: float
    ) -> WorkerOutcome:
        manager = self.manager
        telemetry = manager.telemetry
        request_id = work if isinstance(work, str) else work.request_id

        async def call() -> WorkerOutcome:
            try:
                if isinstance(work, str):
                    result = await manager.execute(
                        work, context=self.context, strategy=self.strategy
                    )
                else:
                    result = await manager.execute_reserved(
                        work, context=self.context, strategy=self.strategy
                    )
            except Exception as error:
                return self._failed(request_id, attempt, started, error)
            return self._result(result, started)

        if telemetry is None:
            return await call()
        if isinstance(work, MutationRequest):
            anchor = work
        else:
            # A retry holds only the id: its span is anchored on the request read now, a
            # read that fails like the execution would (outage, gone, unreadable).
            try:
                anchor = await manager.ledger.load(work)
            except Exception as error:
                failed = self._failed(request_id, attempt, started, error)
                telemetry.worker_outcome(failed.kind.value)
                return failed
        seen: list[WorkerOutcome] = []

        async def traced() -> str:
            seen.append(await call())
            return seen[0].kind.value

        kind = await telemetry.worker_execution(anchor, traced)
        telemetry.worker_outcome(kind)
        return seen[0]

    def _failed(
        self, request_id: str, attempt: int, started: float, error: Exception
    ) -> WorkerOutcome:
        """What an attempt that raised ``error`` comes to: a lost race is skipped, an
        outage retried after a backoff, anything else parked."""
        if isinstance(error, _LOST_RACE):
            return self._outcome(request_id, WorkerOutcomeKind.SKIPPED, started, error=error)
        if outage_in(error) is not None:
            return self._retry(request_id, attempt + 1, started, error)
        return self._park(request_id, started, error)

    def _outcome(
        self,
        request_id: str,
        kind: WorkerOutcomeKind,
        started: float,
        *,
        status: RequestStatus | None = None,
        error: BaseException | None = None,
        result: GovernedExecutionResult | None = None,
    ) -> WorkerOutcome:
        duration = anyio.current_time() - started
        return WorkerOutcome(request_id, kind, duration, status, error, result)

    def _result(self, result: GovernedExecutionResult, started: float) -> WorkerOutcome:
        request = result.request
        if result.executed:
            kind = WorkerOutcomeKind.EXECUTED
        elif request.status is RequestStatus.FAILED:
            kind = WorkerOutcomeKind.FAILED
        else:
            kind = WorkerOutcomeKind.NOT_EXECUTED
        return self._outcome(
            request.request_id, kind, started, status=request.status, result=result
        )

    def _retry(
        self, request_id: str, attempt: int, started: float, error: BaseException
    ) -> WorkerOutcome:
        delay = self.backoff.delay(attempt)
        self.retries[request_id] = (anyio.current_time() + delay, attempt)
        self._outage(f"execute {request_id}", error, delay)
        return self._outcome(request_id, WorkerOutcomeKind.RETRIED, started, error=error)

    def _park(self, request_id: str, started: float, error: BaseException) -> WorkerOutcome:
        park = self.manager.lease.total_seconds()
        self.parked[request_id] = anyio.current_time() + park
        _log.warning(
            "request %s raised %s; parked for %.0f s instead of retrying it at once",
            request_id,
            type(error).__name__,
            park,
            exc_info=error,
            extra={"request_id": request_id, "operation": "execute", "outcome": "errors"},
        )
        return self._outcome(request_id, WorkerOutcomeKind.ERROR, started, error=error)

    def _record(self, outcome: WorkerOutcome) -> None:
        self.progress._add(_COUNTED[outcome.kind])
        if _log.isEnabledFor(logging.INFO):
            _log.info(
                "%s %s in %.1f ms",
                outcome.request_id,
                outcome.kind.value,
                outcome.duration * 1000,
                extra={
                    "request_id": outcome.request_id,
                    "operation": "execute",
                    "outcome": outcome.kind.value,
                    "status": outcome.status.value if outcome.status is not None else None,
                    "duration": outcome.duration,
                },
            )
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome)
            except Exception:
                _log.exception("the worker's on_outcome callback raised; ignoring it")

    # -- housekeeping --------------------------------------------------------------------

    async def _housekeeping(self, now: float) -> None:
        for chore in self.chores:
            if now < self.next_chore[chore.name]:
                continue
            try:
                settled = await chore.run()
            except Exception as error:
                if outage_in(error) is None:
                    self.next_chore[chore.name] = now + chore.every
                    _log.exception(
                        "worker housekeeping %s failed", chore.name, extra={"operation": chore.name}
                    )
                    continue
                self.chore_failures[chore.name] += 1
                delay = min(self.backoff.delay(self.chore_failures[chore.name]), chore.every)
                self.next_chore[chore.name] = now + delay
                self._outage(chore.name, error, delay)
                continue
            self.chore_failures[chore.name] = 0
            self.next_chore[chore.name] = now + chore.every
            if chore.counter is not None:
                self.progress._add(chore.counter, settled)
        if self.quarantine is not None and now >= self.next_chore.get("quarantine", 0.0):
            every = min((chore.every for chore in self.chores), default=30.0)
            self.next_chore["quarantine"] = now + every
            await self._count_quarantined()

    async def _count_quarantined(self) -> None:
        """Report how many requests the store holds in quarantine (never raises)."""
        if self.quarantine is None:
            return
        try:
            self.progress._set("quarantined", len(await self.quarantine.quarantined()))
        except Exception as error:
            if outage_in(error) is not None:
                self._outage("quarantine listing", error, 0.0)
            else:
                _log.exception("listing quarantined requests failed")

    def _outage(self, what: str, error: BaseException, delay: float) -> None:
        self.progress._add("outages")
        _log.warning(
            "store unavailable during %s (%s); retrying in %.2f s",
            what,
            error,
            delay,
            extra={"operation": what.split(" ", 1)[0], "outcome": "outage", "delay": delay},
        )


async def run_worker(
    manager: GovernedExecutionManager,
    *,
    concurrency: int = 4,
    poll_interval: float = 1.0,
    strategy: ResolutionStrategy = ResolutionStrategy.REJECT_STALE,
    context: MutationContext | None = None,
    until_idle: bool = False,
    recover_every: float = 30.0,
    expire: Housekeeping | None = None,
    expire_every: float = 30.0,
    purge: Housekeeping | None = None,
    purge_every: float = 3600.0,
    backoff: Backoff | None = None,
    grace: float = 10.0,
    progress: WorkerProgress | None = None,
    on_outcome: Callable[[WorkerOutcome], object] | None = None,
) -> WorkerReport:
    """Run the worker of ``manager`` (see :meth:`GovernedExecutionManager.run_worker`)."""
    check_count("concurrency", concurrency)
    check_seconds("poll_interval", poll_interval, allow_zero=True)
    check_seconds("recover_every", recover_every)
    check_seconds("expire_every", expire_every)
    check_seconds("purge_every", purge_every)
    check_seconds("grace", grace, allow_zero=True)
    if backoff is not None and not isinstance(backoff, Backoff):
        raise ConfigurationError(f"backoff must be a Backoff, got {backoff!r}")
    if not isinstance(strategy, ResolutionStrategy):  # else every request is claimed, then fails
        raise ConfigurationError(f"strategy must be a ResolutionStrategy, got {strategy!r}")
    if context is not None and not isinstance(context, MutationContext):
        raise ConfigurationError(f"context must be a MutationContext, got {context!r}")
    context = context or MutationContext.system("governance worker", timestamp=manager.clock())

    async def recover() -> int:
        sweep = await manager.recover_stale_claims(context=context)
        if manager.telemetry is not None:
            await manager.telemetry.refresh(manager.ledger.requests)
        return len(sweep.finished) + len(sweep.released)

    chores = [_Chore("recover", recover_every, recover, "recovered")]
    if expire is not None:
        chores.append(_Chore("expire", expire_every, expire, "expired"))
    if purge is not None:
        chores.append(_Chore("purge", purge_every, purge, "purged"))
    worker = _Worker(
        manager,
        concurrency=concurrency,
        poll_interval=poll_interval,
        strategy=strategy,
        context=context,
        until_idle=until_idle,
        chores=chores,
        backoff=backoff or Backoff(),
        grace=grace,
        progress=progress if progress is not None else WorkerProgress(),
        on_outcome=on_outcome,
    )
    return await worker.run()
