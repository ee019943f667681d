"""An expiry sweep over many pending requests, none due: one or two source trees, paired.

With ``--read pending`` the timed call is ``requests.pending()`` over the same requests
instead (every one of them read and decoded), and each child also reports the longest
time the event loop went without running another task during the call (a task sleeping
1 ms notes the gaps; garbage collection is off during the call, so the figure is the
store's own, not CPython's generation-2 collections). ::

    python -m benchmarks.expiry --read pending --base /tmp/base --backend sqlite --sizes 5000

``Governance.expire_due()`` on a store holding N PENDING requests whose deadlines are all
a day or more ahead. A store without an :class:`~mutator_governance.ExpiryIndex` makes the
sweep read and decode every pending request (``pending()``); with one it reads only what
is due (``due()``), here nothing. ::

    git archive b5f0502 | tar -x -C /tmp/base      # the tree to compare against
    python -m benchmarks.expiry --base /tmp/base --sizes 1000 10000 --rounds 3

Each measurement of a (tree, backend, size) runs in a fresh interpreter with
``PYTHONPATH`` set to that tree (and the script's own folder kept off ``sys.path``), so
every tree runs its own packages; the child reports the package it imported and the run
stops if it is not the tree's. Within every round the trees alternate, the first one
changing from round to round, so load on the machine falls on both alike. Without
``--base`` only this tree is measured.

For every measurement this process makes a fresh store and drops it afterwards, also when
the child fails: a SQLite file in a temporary folder, a PostgreSQL schema of the server
named by ``MUTATOR_TEST_POSTGRES_URL`` or a key prefix on the Redis server named by
``MUTATOR_TEST_REDIS_URL``. The child opens ``Governance.open(url)`` on it, writes the N
requests through the store's committer (``GovernedCommit`` of ``RequestWrite.create``,
100 requests a commit, so every store indexes them as it would a submission), sweeps once
to warm connections and statement caches, then times ``--sweeps`` sweeps and checks each
expired and skipped nothing. Per sweep it takes:

- wall time (``time.perf_counter``) and the client's CPU (``time.process_time``; on SQLite
  this includes the database's work, which runs in the process);
- the server's CPU: on Redis the ``INFO cpu`` delta (``used_cpu_sys + used_cpu_user``, the
  whole server: other clients' commands count too); on PostgreSQL the run time in
  ``/proc/<pid>/schedstat`` of the backends that served the sweep's statements (each
  backend's time is taken when it first runs a statement in the sweep, as
  ``benchmarks.backend_postgres`` does; none when the server runs on another machine).

The table gives, per backend, size and tree, the median over the rounds of each child's
median over its sweeps, and which read the sweep used. Progress lines go to stderr.
The child uses only APIs that b5f0502 already has (``Governance.open``, ``GovernedCommit``,
``RequestWrite``, ``ExpiryIndex``, ``mutator_governance.testing.sample_request``), so an
older tree can be the base.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2030, 1, 1, tzinfo=UTC)
SEED_BATCH = 100


class Backend(enum.Enum):
    """The stores a sweep is measured on."""

    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"
    REDIS = "redis"


@attrs.frozen
class Sample:
    """What one child measured: medians over its sweeps (ms), and what it ran."""

    package: str
    reads: str
    wall_ms: float
    cpu_ms: float
    server_ms: float | None
    stall_ms: float | None = None


# -- the child: one tree, one backend, one size -------------------------------------------


class _PostgresBackends:
    """CPU run time of the PostgreSQL backends that serve statements during a window.

    Wraps psycopg's ``AsyncCursor.execute`` (which ``AsyncConnection.execute`` uses too) to
    learn each statement's backend pid; a backend's ``/proc/<pid>/schedstat`` run time is
    read when the window opens, or when it first runs a statement inside the window.
    """

    def __init__(self) -> None:
        self.known: set[int] = set()
        self.window: dict[int, int] | None = None
        self.unreadable = False

    @staticmethod
    def _run_ns(pid: int) -> int | None:
        try:
            with open(f"/proc/{pid}/schedstat") as stat:
                return int(stat.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None  # gone, or the server runs on another machine

    def seen(self, pid: int) -> None:
        self.known.add(pid)
        if self.window is not None and pid not in self.window:
            ns = self._run_ns(pid)
            self.unreadable |= ns is None
            self.window[pid] = ns or 0

    def install(self) -> None:
        import psycopg

        execute = psycopg.AsyncCursor.execute
        backends = self

        async def recorded(cursor: Any, *args: Any, **kwargs: Any) -> Any:
            backends.seen(cursor.connection.info.backend_pid)
            return await execute(cursor, *args, **kwargs)

        psycopg.AsyncCursor.execute = recorded  # type: ignore[method-assign]

    async def start(self) -> None:
        """Open a window on the live backends seen so far (a closed one serves nothing)."""
        self.unreadable = False
        times = {pid: self._run_ns(pid) for pid in self.known}
        self.window = {pid: ns for pid, ns in times.items() if ns is not None}

    async def stop(self) -> float | None:
        """Milliseconds the window's backends ran, or None when one could not be read."""
        assert self.window is not None
        spent = 0
        for pid, ns in self.window.items():
            now = self._run_ns(pid)
            self.unreadable |= now is None
            spent += (now or ns) - ns
        self.window = None
        return None if self.unreadable else spent / 1e6

    async def aclose(self) -> None:
        return None


class _RedisServer:
    """CPU time of the whole Redis server during a window (``INFO cpu``)."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.from_url(url)
        self.before = 0.0

    async def _cpu_s(self) -> float:
        info = await self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    async def start(self) -> None:
        self.before = await self._cpu_s()

    async def stop(self) -> float | None:
        return (await self._cpu_s() - self.before) * 1000

    async def aclose(self) -> None:
        await self.client.aclose()


class _NoServer:
    """SQLite runs in the client: its work is in the client's CPU."""

    async def start(self) -> None:
        return None

    async def stop(self) -> float | None:
        return None

    async def aclose(self) -> None:
        return None


def _server_probe(backend: Backend, server: str) -> _PostgresBackends | _RedisServer | _NoServer:
    """What reads the server's CPU on ``backend`` (installed before the store opens)."""
    if backend is Backend.POSTGRESQL:
        backends = _PostgresBackends()
        backends.install()
        return backends
    if backend is Backend.REDIS:
        return _RedisServer(server)
    return _NoServer()


async def _seed(gov: Any, size: int) -> None:
    """``size`` PENDING requests created at T0, due a day (plus i seconds) later."""
    from mutator_governance import GovernedCommit, RequestWrite
    from mutator_governance.testing import sample_request

    later = T0 + timedelta(days=1)
    for start in range(0, size, SEED_BATCH):
        writes = [
            RequestWrite.create(
                sample_request(f"r-{i:06d}", created_at=T0, expires_at=later + timedelta(seconds=i))
            )
            for i in range(start, min(start + SEED_BATCH, size))
        ]
        await gov.committer.commit(GovernedCommit(tuple(writes)))


class _StallWatch:
    """The longest gap between the turns of a task that sleeps 1 ms at a time."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: Any = None

    async def _tick(self) -> None:
        import asyncio

        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    async def __aenter__(self) -> _StallWatch:
        import asyncio

        self._task = asyncio.ensure_future(self._tick())
        await asyncio.sleep(0.005)  # the ticker is running before the call starts
        self.longest = 0.0
        return self

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        await asyncio.sleep(0.002)  # the ticker's turn: it notes the gap the call ended with
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _child(
    backend: Backend, url: str, server: str, size: int, sweeps: int, read: str
) -> Sample:
    """Seed the store at ``url``, warm up, and time ``sweeps`` reads (sweeps with nothing
    due, or ``pending()`` listings of every request)."""
    import gc

    import mutator_governance
    from mutator_governance import ExpiryIndex, Governance
    from mutator_governance.testing import sample_registry

    probe = _server_probe(backend, server)
    walls: list[float] = []
    cpus: list[float] = []
    servers: list[float] = []
    stalls: list[float] = []
    try:
        async with Governance.open(url, registry=sample_registry()) as gov:
            await _seed(gov, size)

            async def once() -> None:
                if read == "pending":
                    listed = await gov.requests.pending()
                    if len(listed) != size:
                        raise RuntimeError(f"pending() listed {len(listed)} of {size}")
                    return
                swept = await gov.expire_due(now=T0)
                if swept.expired or swept.skipped:
                    raise RuntimeError(f"nothing should be due: {swept}")

            await once()  # warm-up: connections, statement caches
            for _ in range(sweeps):
                gc.collect()
                gc.disable()
                try:
                    async with _StallWatch() as watch:
                        await probe.start()
                        cpu, wall = time.process_time(), time.perf_counter()
                        await once()
                        walls.append(time.perf_counter() - wall)
                        cpus.append(time.process_time() - cpu)
                        spent = await probe.stop()
                finally:
                    gc.enable()
                stalls.append(watch.longest)
                if spent is not None:
                    servers.append(spent)
            if read == "pending":
                reads = "pending()"
            else:
                reads = "due()" if isinstance(gov.requests, ExpiryIndex) else "pending()"
    finally:
        await probe.aclose()
    return Sample(
        package=mutator_governance.__file__ or "",
        reads=reads,
        wall_ms=statistics.median(walls) * 1000,
        cpu_ms=statistics.median(cpus) * 1000,
        server_ms=statistics.median(servers) if len(servers) == sweeps else None,
        stall_ms=statistics.median(stalls) * 1000,
    )


def _child_main(args: argparse.Namespace) -> None:
    import asyncio

    sample = asyncio.run(
        _child(
            Backend(args.backend[0]), args.url, args.server, args.sizes[0], args.sweeps, args.read
        )
    )
    print(json.dumps(attrs.asdict(sample)))


# -- the parent: stores, trees, rounds, table ---------------------------------------------


@attrs.frozen
class Tree:
    """A source tree whose packages a child imports."""

    name: str
    path: Path


@attrs.frozen
class Store:
    """A fresh store for one child: its URL, and the server a child reads CPU from."""

    url: str
    server: str


class ChildFailed(RuntimeError):
    """A child exited non-zero, or did not import the tree it was given."""


@contextlib.contextmanager
def _fresh_store(backend: Backend) -> Iterator[Store]:
    """A new SQLite file, PostgreSQL schema or Redis prefix, dropped on the way out."""
    from benchmarks.governance import POSTGRES_URL, REDIS_URL, schema_url

    name = f"bench_expiry_{uuid.uuid4().hex[:12]}"
    if backend is Backend.SQLITE:
        with tempfile.TemporaryDirectory(prefix="mutator-expiry-") as folder:
            yield Store(f"sqlite:///{folder}/expiry.db", "")
    elif backend is Backend.POSTGRESQL:
        import psycopg

        try:
            yield Store(schema_url(name), POSTGRES_URL)
        finally:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    else:
        import redis

        try:
            yield Store(f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={name}", REDIS_URL)
        finally:
            client = redis.Redis.from_url(REDIS_URL)
            try:
                keys = list(client.scan_iter(match=f"{name}:*", count=1000))
                for start in range(0, len(keys), 1000):
                    client.delete(*keys[start : start + 1000])
            finally:
                client.close()


def _measure(tree: Tree, backend: Backend, size: int, sweeps: int, read: str) -> Sample:
    """One measurement in a fresh interpreter importing ``tree``'s packages."""
    with _fresh_store(backend) as store:
        command = [
            sys.executable,
            "-P",  # keep benchmarks/ (this file's folder) off sys.path
            __file__,
            "--child",
            "--backend",
            backend.value,
            "--url",
            store.url,
            "--server",
            store.server,
            "--sizes",
            str(size),
            "--sweeps",
            str(sweeps),
            "--read",
            read,
        ]
        env = {**os.environ, "PYTHONPATH": str(tree.path)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ChildFailed(f"{tree.name} {backend.value} {size}: {done.stderr.strip()[-2000:]}")
    sample = Sample(**json.loads(done.stdout.strip().splitlines()[-1]))
    if not sample.package.startswith(str(tree.path)):
        raise ChildFailed(f"{tree.path} was not imported: {sample.package}")
    return sample


def _backends(chosen: list[str] | None, parser: argparse.ArgumentParser) -> list[Backend]:
    """The chosen backends (each must be reachable), or SQLite and every server named."""
    from benchmarks.governance import POSTGRES_URL, REDIS_URL, _server_unavailable

    def unavailable(backend: Backend) -> str | None:
        if backend is Backend.POSTGRESQL:
            return _server_unavailable("Postgres", POSTGRES_URL, 5432, "psycopg")
        if backend is Backend.REDIS:
            return _server_unavailable("Redis", REDIS_URL, 6379, "redis")
        return None

    if chosen:
        backends = list(dict.fromkeys(Backend(name) for name in chosen))
        for backend in backends:
            reason = unavailable(backend)
            if reason is not None:
                parser.error(f"--backend {backend.value}: {reason}")
        return backends
    backends = []
    for backend in Backend:
        reason = unavailable(backend)
        if reason is None:
            backends.append(backend)
        elif (backend is Backend.REDIS and REDIS_URL) or (
            backend is Backend.POSTGRESQL and POSTGRES_URL
        ):
            print(f"skipped {backend.value}: {reason}", file=sys.stderr)
    return backends


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _table(found: dict[tuple[Backend, int, str], list[Sample]]) -> str:
    lines = [
        "| backend | pending | tree | reads | wall | client CPU | server CPU | loop stall |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for (backend, size, tree), samples in found.items():
        servers = [s.server_ms for s in samples if s.server_ms is not None]
        lines.append(
            f"| {backend.value} | {size:,} | {tree} | {samples[0].reads} "
            f"| {_ms(statistics.median(s.wall_ms for s in samples))} "
            f"| {_ms(statistics.median(s.cpu_ms for s in samples))} "
            f"| {_ms(statistics.median(servers) if servers else None)} "
            f"| {_ms(statistics.median(s.stall_ms or 0.0 for s in samples))} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.expiry",
        description="Time expire_due() over N pending requests, none due, paired across trees.",
    )
    parser.add_argument(
        "--backend",
        action="append",
        choices=[b.value for b in Backend],
        help="repeatable; default: sqlite and every server named by MUTATOR_TEST_*_URL",
    )
    parser.add_argument("--base", type=Path, help="the source tree to compare against")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweeps", type=int, default=5, help="timed reads per child")
    parser.add_argument(
        "--read",
        choices=["expire_due", "pending"],
        default="expire_due",
        help="what each timed read is: an expiry sweep (default) or a pending() listing",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--server", default="", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.child:
        _child_main(args)
        return 0
    if min(args.sizes) < 0 or args.rounds < 1 or args.sweeps < 1:
        parser.error("--sizes must be >= 0, --rounds and --sweeps >= 1")
    if args.base is not None and not (args.base / "mutator_governance").is_dir():
        parser.error(f"--base {args.base}: no mutator_governance package there")
    backends = _backends(args.backend, parser)
    trees = [Tree("this", ROOT)]
    if args.base is not None:
        trees.insert(0, Tree("base", args.base.resolve()))
    found: dict[tuple[Backend, int, str], list[Sample]] = {}
    try:
        for round_ in range(args.rounds):
            order = trees if round_ % 2 == 0 else trees[::-1]
            for backend in backends:
                for size in args.sizes:
                    for tree in order:
                        sample = _measure(tree, backend, size, args.sweeps, args.read)
                        found.setdefault((backend, size, tree.name), []).append(sample)
                        print(
                            f"round {round_ + 1} {backend.value:10} {size:>6} {tree.name:4} "
                            f"{sample.reads:9}: wall {_ms(sample.wall_ms)}  "
                            f"cpu {_ms(sample.cpu_ms)}  server {_ms(sample.server_ms)}  "
                            f"stall {_ms(sample.stall_ms)}",
                            file=sys.stderr,
                            flush=True,
                        )
    except ChildFailed as failure:
        print(f"failed: {failure}", file=sys.stderr)
        return 1
    if args.base is not None:
        print(f"base: {trees[0].path}\n")
    print(_table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
