"""Soak run: does a long-running process stay flat in memory, throughput and handles?

``python -m benchmarks.soak --url sqlite:///soak.db --workload governed --ops 50000`` runs
one workload for ``--ops`` operations and prints a sample every ``--every`` operations:
RSS, ``tracemalloc`` (with ``--tracemalloc``), open file descriptors, threads, asyncio
tasks and the rate of the last interval; at the end, the growth per 10,000 operations
and the rate of the last decile against the first (an O(n) scan in a per-operation path
shows there). Workloads:

- ``governed``: submit → approve → execute, over ``--states`` states (one for a hot state);
- ``worker``: submit and approve ``--every`` requests, then a worker drains them, repeated;
- ``engine``: the plain ``MutationEngine.execute`` with its default audit and history;
- ``open``: ``Governance.open``/close cycles (each submits and executes one request);
- ``open-fail``: opens of ``--url`` that fail (a refused server, a bad option).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from mutator import (
    InMemoryAuditSink,
    InMemoryHistoryStore,
    MutationContext,
    MutationEngine,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
)
from mutator_governance import Governance, MutationRegistry

from .engine import Counter, IncrementCounter

REQUESTER = MutationContext.user("alice", reason="soak")
APPROVER = MutationContext.user("bob", reason="soak", roles=("sre",))


class NeedsSre(MutationPolicy[Any]):
    """Every increment needs one SRE approval."""

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(PolicyRequirement.approval(role="sre"))


def make_registry() -> MutationRegistry:
    registry = MutationRegistry()
    registry.register(IncrementCounter, name="benchmark.counter.increment")
    registry.register_state(Counter, name="benchmark.counter")
    return registry


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tasks() -> int:
    try:
        import asyncio

        return len(asyncio.all_tasks())
    except RuntimeError:  # not on asyncio
        return -1


@dataclass
class Sample:
    ops: int
    seconds: float
    cpu: float
    rss_kib: int
    traced_kib: int
    fds: int
    threads: int
    tasks: int


@dataclass
class Soak:
    """Samples taken every ``every`` operations of ``ops``.

    With ``top``, a ``tracemalloc`` snapshot is kept after the first interval (warm-up)
    and at the end, to show what grew in between.
    """

    every: int
    ops: int
    trace: bool
    top: int = 0
    samples: list[Sample] = field(default_factory=list)
    snapshots: list[tracemalloc.Snapshot] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    paused_wall: float = 0.0
    paused_cpu: float = 0.0

    def sample(self, ops: int) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] // 1024 if self.trace else 0
        sample = Sample(
            ops,
            wall - self.started - self.paused_wall,
            cpu - self.paused_cpu,
            rss_kib(),
            traced,
            len(os.listdir("/proc/self/fd")),
            threading.active_count(),
            tasks(),
        )
        previous = self.samples[-1] if self.samples else None
        self.samples.append(sample)
        if self.top and (len(self.samples) == 2 or ops >= self.ops):
            self.snapshots.append(tracemalloc.take_snapshot())
        # The rates leave out the sampling itself (a full collection grows with the heap).
        self.paused_wall += time.perf_counter() - wall
        self.paused_cpu += time.process_time() - cpu
        rate = cpu_rate = 0.0
        if previous and sample.cpu > previous.cpu:
            rate = (ops - previous.ops) / (sample.seconds - previous.seconds)
            cpu_rate = (ops - previous.ops) / (sample.cpu - previous.cpu)
        print(
            f"{ops:>8} ops {sample.seconds:7.1f} s  {rate:7.0f} ops/s {cpu_rate:7.0f} ops/cpu-s"
            f"  rss {sample.rss_kib:>7} KiB"
            f"  traced {sample.traced_kib:>7} KiB  fds {sample.fds:>4}  threads {sample.threads:>3}"
            f"  tasks {sample.tasks:>3}",
            file=sys.stderr,
            flush=True,
        )

    def summary(self) -> str:
        """Growth per 10k operations after the first sample, and first vs last decile rate."""
        if len(self.samples) < 3:
            return "too few samples"
        first, last = self.samples[1], self.samples[-1]  # the first interval warms up
        per = 10_000 / max(1, last.ops - first.ops)
        n = len(self.samples) - 1
        decile = max(1, n // 10)

        def rate(a: Sample, b: Sample) -> float:
            # Per CPU second of this process: the machine is shared, wall time is noisy.
            return (b.ops - a.ops) / (b.cpu - a.cpu)

        head = rate(self.samples[0], self.samples[decile])
        tail = rate(self.samples[-1 - decile], self.samples[-1])
        return (
            f"rss {(last.rss_kib - first.rss_kib) * per:+.0f} KiB/10k ops, "
            f"traced {(last.traced_kib - first.traced_kib) * per:+.0f} KiB/10k ops; "
            f"ops/cpu-s first decile {head:.0f}, last decile {tail:.0f} ({tail / head - 1:+.0%}); "
            f"fds {first.fds}->{last.fds}, threads {first.threads}->{last.threads}, "
            f"tasks {first.tasks}->{last.tasks}"
        )


REGISTRY = make_registry()


async def open_governance(url: str) -> Any:
    return Governance.open(url, registry=REGISTRY, policies=[NeedsSre()])


async def put_states(gov: Governance, states: int) -> None:
    for index in range(states):
        if await gov.states.get(f"s{index}") is None:  # a rerun on a durable store
            await gov.states.put(f"s{index}", Counter())


async def governed(args: argparse.Namespace, soak: Soak) -> None:
    async with await open_governance(args.url) as gov:
        await put_states(gov, args.states)
        for op in range(1, args.ops + 1):
            state_id = f"s{op % args.states}"
            request = await gov.submit(IncrementCounter(), state_id=state_id, context=REQUESTER)
            await gov.approve(request.request_id, context=APPROVER)
            await gov.execute(request.request_id)
            if op % soak.every == 0:
                soak.sample(op)


async def worker(args: argparse.Namespace, soak: Soak) -> None:
    async with await open_governance(args.url) as gov:
        await put_states(gov, args.states)
        op = 0
        while op < args.ops:
            for _ in range(soak.every):
                op += 1
                state_id = f"s{op % args.states}"
                request = await gov.submit(IncrementCounter(), state_id=state_id, context=REQUESTER)
                await gov.approve(request.request_id, context=APPROVER)
            report = await gov.run_worker(concurrency=4, poll_interval=0, until_idle=True)
            if report.executed + report.not_executed != soak.every:
                print(f"worker: {report}", file=sys.stderr)
            soak.sample(op)


async def engine(args: argparse.Namespace, soak: Soak) -> None:
    engine = (
        MutationEngine(
            audit=InMemoryAuditSink(max_entries=args.bounded),
            history=InMemoryHistoryStore(max_entries=args.bounded),
        )
        if args.bounded
        else MutationEngine()
    )
    states = [Counter() for _ in range(args.states)]
    for op in range(1, args.ops + 1):
        index = op % args.states
        result = await engine.execute(
            IncrementCounter(), states[index], context=REQUESTER, state_id=f"s{index}"
        )
        states[index] = result.new_state
        if op % soak.every == 0:
            soak.sample(op)


async def open_close(args: argparse.Namespace, soak: Soak) -> None:
    for op in range(1, args.ops + 1):
        async with await open_governance(args.url) as gov:
            if await gov.states.get("s") is None:
                await gov.states.put("s", Counter())
            request = await gov.submit(IncrementCounter(), state_id="s", context=REQUESTER)
            await gov.approve(request.request_id, context=APPROVER)
            await gov.execute(request.request_id)
        if op % soak.every == 0:
            soak.sample(op)


async def open_fail(args: argparse.Namespace, soak: Soak) -> None:
    for op in range(1, args.ops + 1):
        try:
            async with await open_governance(args.url):
                pass
        except Exception as error:
            if op == 1:
                print(f"open fails: {type(error).__name__}: {error}", file=sys.stderr)
        else:
            raise SystemExit(f"{args.url} opened: this workload needs a URL that fails")
        if op % soak.every == 0:
            soak.sample(op)


WORKLOADS: dict[str, Callable[[argparse.Namespace, Soak], Awaitable[None]]] = {
    "governed": governed,
    "worker": worker,
    "engine": engine,
    "open": open_close,
    "open-fail": open_fail,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--url", default="memory://", help="store URL (default memory://)")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="governed")
    parser.add_argument("--ops", type=int, default=20_000, help="operations (default 20000)")
    parser.add_argument("--every", type=int, default=2_000, help="sample interval (2000)")
    parser.add_argument("--states", type=int, default=1_000, help="distinct states (1000)")
    parser.add_argument(
        "--bounded", type=int, default=0, help="engine: bound the in-memory audit and history"
    )
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--tracemalloc", action="store_true", help="trace allocations")
    parser.add_argument("--top", type=int, default=0, help="print the N biggest growths")
    args = parser.parse_args(argv)
    if args.tracemalloc:
        tracemalloc.start(8 if args.top else 1)
    soak = Soak(args.every, args.ops, args.tracemalloc, args.top if args.tracemalloc else 0)

    async def run() -> None:
        soak.sample(0)
        await WORKLOADS[args.workload](args, soak)

    anyio.run(run, backend=args.backend)
    print(f"{args.workload} {args.url} {args.backend} {args.ops} ops: {soak.summary()}", flush=True)
    if len(soak.snapshots) == 2:
        growth = soak.snapshots[1].compare_to(soak.snapshots[0], "traceback")
        growth.sort(key=lambda stat: stat.size_diff, reverse=True)
        for stat in growth[: args.top]:
            print(stat, *stat.traceback.format()[-8:], sep="\n  ")


if __name__ == "__main__":
    main()
