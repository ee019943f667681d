"""Worker fleet scenarios: ``Governance.run_worker`` in several processes on one store.

These are whole-run measurements, not operation loops, so they have their own runner
(:func:`run`), which ``python -m benchmarks`` calls after the harness's scenarios
(``--filter governance.worker`` runs only them). Every worker is a separate interpreter
(``python -m benchmarks.worker drain|serve URL``) with its own ``Governance.open``; the
parent opens its own store instance on the same URL.

- ``governance.worker.<backend>.<n>procs`` (n = 1, 2, 4): 1,000 APPROVED requests on 50
  states are seeded (untimed). n worker processes open their store, say ``ready`` and
  wait; the parent then sends ``go`` to all of them, and each runs
  ``run_worker(until_idle=True, concurrency=4, strategy=REVALIDATE_ON_LATEST_STATE)``
  with the default ``poll_interval``. Timed: from the start signal to the moment the
  last worker's ``run_worker`` returned (``time.monotonic`` is system-wide, so the
  children's clocks compare with the parent's; interpreter start-up, store opening and
  closing are excluded, the time to the last process exit is recorded too). Reported:
  executions/s, the scaling ratio to the 1-process run of the same backend in the same
  invocation, and the workers' CPU per execution (``time.process_time`` of every worker
  process over its ``run_worker`` call, summed, divided by the requests: whether added
  processes cost CPU, which on a machine shared with the server is what bounds the fleet).
  Afterwards every process must have exited 0 with no error and no failed request, the
  reports must add up to one execution per request, and the store must show every request
  EXECUTED, each state's sum, version and history length exact; otherwise the scenario
  fails.
- ``governance.worker.postgresql-grouped.<n>procs``: the same on PostgreSQL with the
  store option ``write_flights=1`` (one write statement in flight per process; the writes
  that arrive meanwhile share the next statement, transaction and WAL flush).
- ``governance.worker.<backend>.wakeup``: one worker process idles with the default
  ``poll_interval``; the parent approves a pending request (its own store instance) at a
  random moment and polls (every 5 ms) until the request is EXECUTED. Median and p95 over
  20 samples of approval-committed → EXECUTED seen.

The fleet runs keep the default poll interval although the worker sleeps it between
listings while requests are in flight (so the end of a run is seen up to one interval
late): a shorter one makes today's worker re-list the whole backlog that often, which
doubled the 1-process SQLite run (16 s at 1 s, 34 s at 0.05 s). Backends: a SQLite file,
and PostgreSQL / Redis when named (``--postgres URL`` / ``--redis URL`` or the
``MUTATOR_TEST_*`` variables). ``--quick`` runs the SQLite scenarios only, with 1 and 2
processes over 20 requests and 2 wake-up samples. Seeding, the children and the
verification all run on asyncio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

import anyio
import anyio.to_thread
import attrs

from mutator import MutationContext
from mutator_governance import Governance, RequestStatus, ResolutionStrategy

from . import backend_postgres, backend_redis
from .engine import Counter, IncrementCounter
from .governance import APPROVER, REQUESTER, SINGLE, RequireApproval, registry, schema_url
from .harness import _load1, _markdown, _table

__all__ = [
    "FULL",
    "QUICK",
    "SCENARIOS",
    "FleetResult",
    "FleetSettings",
    "WorkerScenario",
    "check_reports",
    "format_compare",
    "format_tables",
    "plan",
    "run",
    "seed",
    "select",
    "verify_drained",
]

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "governance.worker"
CONCURRENCY = 4
WAKEUP_POLL = 0.005
"""How often the parent looks at the request while waiting for the worker (seconds)."""
STRATEGY = ResolutionStrategy.REVALIDATE_ON_LATEST_STATE
DEADLINE = 600.0
"""Seconds after which the parent kills a fleet that has not finished."""


def default_poll_interval() -> float:
    """``Governance.run_worker``'s default ``poll_interval`` (what an idle worker waits)."""
    return float(inspect.signature(Governance.run_worker).parameters["poll_interval"].default)


# -- scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """How big the fleet runs are."""

    requests: int = 1000
    states: int = 50
    processes: tuple[int, ...] = (1, 2, 4)
    wakeup_samples: int = 20
    backends: tuple[str, ...] | None = None
    """Backends this mode runs (None: all that are available)."""


FULL = FleetSettings()
QUICK = FleetSettings(
    requests=20, states=5, processes=(1, 2), wakeup_samples=2, backends=("sqlite",)
)


@contextlib.asynccontextmanager
async def _sqlite_location() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        yield f"sqlite:///{folder}/fleet.db"


@contextlib.asynccontextmanager
async def _postgres_location() -> AsyncIterator[str]:
    async with backend_postgres._schema() as schema:
        yield schema_url(schema)


@contextlib.asynccontextmanager
async def _postgres_grouped_location() -> AsyncIterator[str]:
    async with backend_postgres._schema() as schema:
        yield f"{schema_url(schema)}&write_flights={GROUPED_FLIGHTS}"


@contextlib.asynccontextmanager
async def _redis_location() -> AsyncIterator[str]:
    prefix = f"bench-fleet-{uuid.uuid4().hex[:12]}"
    try:
        yield backend_redis._url(prefix)
    finally:
        await backend_redis._drop(prefix)


def _always() -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Backend:
    """Where the fleet's store lives: a fresh, empty location per scenario, dropped after."""

    name: str
    location: Callable[[], contextlib.AbstractAsyncContextManager[str]]
    unavailable: Callable[[], str | None] = _always
    wakeup: bool = True
    """Whether the wake-up scenario runs on it (not for a variant of another backend)."""


# The PostgreSQL store's ``write_flights`` of the grouped fleet (a fleet's setting: its
# concurrent writes share statements and WAL flushes; see PostgresOptions).
GROUPED_FLIGHTS = 1

BACKENDS = (
    Backend("sqlite", _sqlite_location),
    Backend("postgresql", _postgres_location, backend_postgres.unavailable),
    Backend(
        "postgresql-grouped",
        _postgres_grouped_location,
        backend_postgres.unavailable,
        wakeup=False,
    ),
    Backend("redis", _redis_location, backend_redis._unavailable),
)


@dataclass(frozen=True, slots=True)
class WorkerScenario:
    """A fleet run (``processes`` workers draining the backlog) or, with 0, the wake-up."""

    backend: Backend
    processes: int

    @property
    def name(self) -> str:
        kind = "wakeup" if self.processes == 0 else f"{self.processes}procs"
        return f"{PREFIX}.{self.backend.name}.{kind}"

    @property
    def baseline(self) -> str:
        """The 1-process run the scaling ratio divides by (itself for wake-up and n = 1)."""
        if self.processes <= 1:
            return self.name
        return f"{PREFIX}.{self.backend.name}.1procs"

    @property
    def summary(self) -> str:
        if self.processes == 0:
            return "idle worker (default poll interval): approval committed → EXECUTED"
        return f"{self.processes} worker process(es), concurrency {CONCURRENCY}, drain the backlog"


SCENARIOS: tuple[WorkerScenario, ...] = tuple(
    WorkerScenario(backend, processes)
    for backend in BACKENDS
    for processes in (1, 2, 4, 0)
    if processes or backend.wakeup
)


def select(filters: Sequence[str] = ()) -> list[WorkerScenario]:
    """Scenarios whose name contains any of ``filters`` (all without), plus their baselines."""
    wanted = {s.name for s in SCENARIOS if not filters or any(f in s.name for f in filters)}
    wanted |= {s.baseline for s in SCENARIOS if s.name in wanted}
    return [s for s in SCENARIOS if s.name in wanted]


# -- results ---------------------------------------------------------------------------------


@dataclass(slots=True)
class FleetResult:
    """What one scenario measured (fleet fields or wake-up fields are None for the other)."""

    name: str
    backend: str
    processes: int
    requests: int
    load1: float | None
    seconds: float | None = None
    exit_seconds: float | None = None
    start_lag_seconds: float | None = None
    executions_per_sec: float | None = None
    scaling: float | None = None
    lost_claims: int | None = None
    client_cpu_ms: float | None = None
    per_process: list[int] = field(default_factory=list)
    poll_interval: float | None = None
    latency_median_ms: float | None = None
    latency_p95_ms: float | None = None
    latencies_ms: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- worker processes ------------------------------------------------------------------------


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _wait_for(word: str) -> bool:
    """Block until ``word`` arrives on stdin; False at EOF (the parent is gone)."""
    return any(line.strip() == word for line in sys.stdin)


async def drain(url: str, concurrency: int, poll_interval: float) -> dict[str, Any]:
    """A fleet worker: open the store, say ready, wait for go, run the worker until idle."""
    async with Governance.open(url, registry=registry()) as gov:
        _say("ready")
        if not await anyio.to_thread.run_sync(_wait_for, "go"):
            raise SystemExit("stdin closed before go")
        started = time.monotonic()
        cpu = time.process_time()
        report = await gov.run_worker(
            until_idle=True,
            concurrency=concurrency,
            poll_interval=poll_interval,
            strategy=STRATEGY,
            context=MutationContext.service(f"fleet-worker-{os.getpid()}"),
        )
        finished = time.monotonic()
        cpu = time.process_time() - cpu
    return {**attrs.asdict(report), "started": started, "finished": finished, "cpu": cpu}


async def serve(url: str) -> None:
    """The wake-up worker: run with the default poll interval until ``stop`` on stdin."""
    async with Governance.open(url, registry=registry()) as gov:
        gov.engine.register_policy(RequireApproval(*SINGLE))
        async with anyio.create_task_group() as group:
            group.start_soon(gov.run_worker)
            _say("ready")
            await anyio.to_thread.run_sync(_wait_for, "stop", abandon_on_cancel=True)
            group.cancel_scope.cancel()


def _environment() -> dict[str, str]:
    """This checkout first on the children's path (an installed copy must not win)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


@dataclass(slots=True)
class _Child:
    process: subprocess.Popen[str]
    errors: IO[str]

    @classmethod
    def start(cls, *args: str) -> _Child:
        errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by close()
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", *args],
            cwd=ROOT,
            env=_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        return cls(process, errors)

    def stderr(self) -> str:
        self.errors.seek(0)
        return self.errors.read()[-4000:]

    def expect(self, word: str) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip() == word:
                return
        self.process.wait()
        raise RuntimeError(
            f"worker process exited with {self.process.returncode} before saying {word!r}:\n"
            f"{self.stderr()}"
        )

    def send(self, word: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def finish(self) -> str:
        """Close stdin, read the rest of stdout and wait for the exit; fail unless 0."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        out = self.process.stdout.read()
        self.process.wait()
        if self.process.returncode != 0:
            raise RuntimeError(
                f"worker process exited with {self.process.returncode}:\n{self.stderr()}"
            )
        return out

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self.errors.close()


def _run_fleet(
    url: str, processes: int, poll_interval: float
) -> tuple[float, float, float, list[dict[str, Any]]]:
    """Start the workers, release them at once; (seconds, exit seconds, start lag, reports)."""
    children: list[_Child] = []

    def kill_all() -> None:
        for child in children:
            child.process.kill()

    watchdog = threading.Timer(DEADLINE, kill_all)
    watchdog.start()
    try:
        children.extend(
            _Child.start("drain", url, str(CONCURRENCY), str(poll_interval))
            for _ in range(processes)
        )
        for child in children:
            child.expect("ready")
        began = time.monotonic()
        for child in children:
            child.send("go")
        reports = [json.loads(child.finish().strip().splitlines()[-1]) for child in children]
        exited = time.monotonic() - began
    finally:
        watchdog.cancel()
        for child in children:
            child.close()
    seconds = max(r["finished"] for r in reports) - began
    lag = max(r["started"] for r in reports) - began
    return seconds, exited, lag, reports


# -- seeding and verifying -------------------------------------------------------------------


def plan(requests: int, states: int) -> dict[str, tuple[str, int]]:
    """Request id → (state id, amount) of the seeded backlog."""
    return {f"fleet-{i:05d}": (f"fleet-state-{i % states:03d}", i % 7 + 1) for i in range(requests)}


async def seed(url: str, backlog: Mapping[str, tuple[str, int]]) -> None:
    """Create the states and submit the backlog (no policy: every request is APPROVED)."""
    async with Governance.open(url, registry=registry()) as gov:
        for state_id in sorted({s for s, _ in backlog.values()}):
            await gov.states.put(state_id, Counter())
        limiter = anyio.CapacityLimiter(8)

        async def submit(request_id: str, state_id: str, amount: int) -> None:
            async with limiter:
                request = await gov.submit(
                    IncrementCounter(amount),
                    state_id=state_id,
                    context=REQUESTER,
                    request_id=request_id,
                )
            if request.status is not RequestStatus.APPROVED:
                raise AssertionError(f"seeded {request_id} is {request.status.name}")

        async with anyio.create_task_group() as group:
            for request_id, (state_id, amount) in backlog.items():
                group.start_soon(submit, request_id, state_id, amount)


async def verify_drained(url: str, backlog: Mapping[str, tuple[str, int]]) -> None:
    """Every request EXECUTED once: statuses, each state's sum, version and history length.

    Raises AssertionError naming what is wrong.
    """
    async with Governance.open(url, registry=registry()) as gov:
        page = await gov.requests.list(limit=len(backlog) + 1)
        statuses = Tally(r.status.name for r in page.items)
        if len(page.items) != len(backlog) or statuses != {"EXECUTED": len(backlog)}:
            raise AssertionError(f"expected {len(backlog)} EXECUTED requests, found {statuses}")
        by_state: dict[str, list[int]] = {}
        for state_id, amount in backlog.values():
            by_state.setdefault(state_id, []).append(amount)
        for state_id, amounts in by_state.items():
            current = await gov.states.get(state_id)
            history = await gov.engine.history_store.history(state_id)
            found = (
                None if current is None else (current.state, current.version),
                len(history),
            )
            wanted = ((Counter(sum(amounts)), str(len(amounts) + 1)), len(amounts))
            if found != wanted:
                raise AssertionError(
                    f"{state_id}: (state, version), history length {found}, expected {wanted}"
                )


def check_reports(reports: Sequence[Mapping[str, Any]], requests: int) -> None:
    """The workers' reports add up to one execution per request, with no error or failure."""
    executed = sum(r["executed"] for r in reports)
    troubles = {k: sum(r[k] for r in reports) for k in ("errors", "failed", "not_executed")}
    if executed != requests or any(troubles.values()):
        raise AssertionError(
            f"workers reported {executed} executions of {requests} requests, {troubles}"
        )


async def fleet(
    backend: Backend, processes: int, settings: FleetSettings
) -> tuple[float, float, float, list[dict[str, Any]]]:
    """Seed a fresh location, run the fleet, verify; (seconds, exit s, start lag, reports)."""
    backlog = plan(settings.requests, settings.states)
    async with backend.location() as url:
        await seed(url, backlog)
        poll_interval = default_poll_interval()
        outcome = await anyio.to_thread.run_sync(_run_fleet, url, processes, poll_interval)
        check_reports(outcome[3], settings.requests)
        await verify_drained(url, backlog)
    return outcome


async def wakeup(backend: Backend, samples: int, poll_interval: float) -> list[float]:
    """Seconds from each approval to its request seen EXECUTED by an idle worker."""
    rng = random.Random()
    timeout = max(10.0, 5 * poll_interval)
    async with (
        backend.location() as url,
        Governance.open(url, registry=registry()) as gov,
    ):
        gov.engine.register_policy(RequireApproval(*SINGLE))
        pending = []
        for index in range(samples):
            state_id = f"wake-{index:03d}"
            await gov.states.put(state_id, Counter())
            request = await gov.submit(IncrementCounter(), state_id=state_id, context=REQUESTER)
            if request.status is not RequestStatus.PENDING:
                raise AssertionError(f"expected PENDING, got {request.status.name}")
            pending.append(request.request_id)
        child = _Child.start("serve", url)
        latencies = []
        try:
            await anyio.to_thread.run_sync(child.expect, "ready")
            for request_id in pending:
                # A random phase of the worker's poll cycle for every sample.
                await anyio.sleep(rng.uniform(0.0, poll_interval))
                approved = await gov.approve(request_id, context=APPROVER)
                if approved.status is not RequestStatus.APPROVED:
                    raise AssertionError(f"expected APPROVED, got {approved.status.name}")
                began = time.monotonic()
                while True:
                    current = await gov.requests.get(request_id)
                    assert current is not None
                    if current.status is RequestStatus.EXECUTED:
                        break
                    if current.status.is_terminal:
                        raise AssertionError(f"{request_id} ended {current.status.name}")
                    if time.monotonic() - began > timeout:
                        raise AssertionError(f"{request_id} not executed within {timeout} s")
                    await anyio.sleep(WAKEUP_POLL)
                latencies.append(time.monotonic() - began)
            child.send("stop")
            await anyio.to_thread.run_sync(child.finish)
        finally:
            child.close()
        for index in range(samples):
            moved = await gov.states.get(f"wake-{index:03d}")
            if moved is None or moved.state != Counter(1):
                raise AssertionError(f"wake-{index:03d} is {moved}, expected one increment")
    return latencies


def _p95(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


# -- running ---------------------------------------------------------------------------------


@dataclass(slots=True)
class FleetRun:
    """What :func:`run` measured, skipped and failed."""

    results: list[FleetResult] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "results": [r.to_json() for r in self.results],
            "skipped": self.skipped,
            "failed": self.failed,
        }


def _included(scenario: WorkerScenario, settings: FleetSettings) -> bool:
    """Whether ``settings`` run ``scenario`` at all (``--quick`` runs a subset)."""
    if settings.backends is not None and scenario.backend.name not in settings.backends:
        return False
    return scenario.processes == 0 or scenario.processes in settings.processes


def run(
    scenarios: Sequence[WorkerScenario],
    settings: FleetSettings = FULL,
    progress: TextIO | None = None,
) -> FleetRun:
    """Run each scenario (its own event loop and store location), with progress lines."""
    out = progress if progress is not None else sys.stderr
    outcome = FleetRun()
    scenarios = [s for s in scenarios if _included(s, settings)]
    rates: dict[str, float] = {}
    width = len(str(len(scenarios)))
    poll_interval = default_poll_interval()
    for index, scenario in enumerate(scenarios, 1):
        print(f"[{index:>{width}}/{len(scenarios)}] {scenario.name} ... ", end="", file=out)
        out.flush()
        reason = scenario.backend.unavailable()
        if reason is not None:
            print(f"skipped: {reason}", file=out, flush=True)
            outcome.skipped.append({"name": scenario.name, "reason": reason})
            continue
        began = time.perf_counter()
        try:
            if scenario.processes == 0:
                latencies = anyio.run(
                    wakeup, scenario.backend, settings.wakeup_samples, poll_interval
                )
            else:
                seconds, exited, lag, reports = anyio.run(
                    fleet, scenario.backend, scenario.processes, settings
                )
        except Exception as error:
            text = f"{type(error).__name__}: {error}"
            print(f"FAILED: {text}", file=out, flush=True)
            outcome.failed.append({"name": scenario.name, "error": text})
            continue
        took = time.perf_counter() - began
        if scenario.processes == 0:
            result = FleetResult(
                scenario.name,
                scenario.backend.name,
                1,
                len(latencies),
                _load1(),
                poll_interval=poll_interval,
                latency_median_ms=1000 * statistics.median(latencies),
                latency_p95_ms=1000 * _p95(latencies),
                latencies_ms=[round(1000 * s, 3) for s in latencies],
            )
            print(
                f"median {result.latency_median_ms:.1f} ms  p95 {result.latency_p95_ms:.1f} ms  "
                f"({len(latencies)} samples, poll_interval {poll_interval:g} s, {took:.1f} s)",
                file=out,
                flush=True,
            )
        else:
            rate = settings.requests / seconds
            rates[scenario.name] = rate
            base = rates.get(scenario.baseline)
            result = FleetResult(
                scenario.name,
                scenario.backend.name,
                scenario.processes,
                settings.requests,
                _load1(),
                seconds=seconds,
                exit_seconds=exited,
                start_lag_seconds=lag,
                executions_per_sec=rate,
                scaling=None if base is None else rate / base,
                lost_claims=sum(r["skipped"] for r in reports),
                client_cpu_ms=1000 * sum(r["cpu"] for r in reports) / settings.requests,
                per_process=[r["executed"] for r in reports],
                poll_interval=poll_interval,
            )
            shown = "—" if result.scaling is None else f"{result.scaling:.2f}"
            print(
                f"{rate:,.0f} executions/s  scaling {shown}  ({settings.requests} requests in "
                f"{seconds:.2f} s, per process {result.per_process}, {result.lost_claims} lost "
                f"claims, worker CPU {result.client_cpu_ms:.2f} ms per execution, {took:.1f} s)",
                file=out,
                flush=True,
            )
        outcome.results.append(result)
    return outcome


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def format_tables(outcome: FleetRun, *, markdown: bool = False) -> str:
    """The fleet table (executions/s, scaling) and the wake-up table (median, p95)."""
    render = _markdown if markdown else _table
    parts = []
    fleet_rows = [
        [
            r.name,
            str(r.processes),
            str(r.requests),
            _cell(r.seconds, ".2f"),
            _cell(r.executions_per_sec, ",.0f"),
            _cell(r.scaling, ".2f"),
            str(r.lost_claims),
            _cell(r.client_cpu_ms, ".2f"),
            _cell(r.load1, ".2f"),
        ]
        for r in outcome.results
        if r.executions_per_sec is not None
    ]
    if fleet_rows:
        headers = [
            "scenario",
            "procs",
            "requests",
            "seconds",
            "executions/s",
            "scaling",
            "lost claims",
            "worker CPU ms/exec",
            "load1",
        ]
        parts.append(render(headers, fleet_rows, {1, 2, 3, 4, 5, 6, 7, 8}))
    wake_rows = [
        [
            r.name,
            str(r.requests),
            _cell(r.poll_interval, "g"),
            _cell(r.latency_median_ms, ".1f"),
            _cell(r.latency_p95_ms, ".1f"),
            _cell(r.load1, ".2f"),
        ]
        for r in outcome.results
        if r.latency_median_ms is not None
    ]
    if wake_rows:
        headers = ["scenario", "samples", "poll_interval s", "median ms", "p95 ms", "load1"]
        parts.append(render(headers, wake_rows, {1, 2, 3, 4, 5}))
    return "\n\n".join(parts) if parts else "(no worker results)"


def format_compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """new/old of executions/s and of wake-up medians, per scenario in both runs."""
    before = {r["name"]: r for r in old.get("results", ())}
    rows = []
    for r in new.get("results", ()):
        o = before.get(r["name"])
        if o is None:
            continue
        key = "executions_per_sec" if r["executions_per_sec"] is not None else "latency_median_ms"
        if o.get(key) is None or r[key] is None:
            continue
        unit = "executions/s" if key == "executions_per_sec" else "median ms"
        rows.append([r["name"], unit, f"{o[key]:,.1f}", f"{r[key]:,.1f}", f"{r[key] / o[key]:.2f}"])
    if not rows:
        return "worker scenarios: none in common with the old run"
    table = _table(["scenario", "measure", "old", "new", "new/old"], rows, {2, 3, 4})
    return "worker scenarios (executions/s: higher is better; median ms: lower)\n" + table


def _child_main(argv: Sequence[str]) -> None:
    mode, url = argv[0], argv[1]
    if mode == "drain":
        report = anyio.run(drain, url, int(argv[2]), float(argv[3]))
        _say(json.dumps(report))
    elif mode == "serve":
        anyio.run(serve, url)
    else:
        raise SystemExit(f"unknown mode {mode!r}: drain URL CONCURRENCY POLL | serve URL")


if __name__ == "__main__":
    _child_main(sys.argv[1:])
