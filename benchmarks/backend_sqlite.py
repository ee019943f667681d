"""SQLite backend scenarios: governance operations against one raw commit, same driver path.

The baseline ``sqlite.raw_commit`` is what one operation cannot beat: one thread hop
(:func:`anyio.to_thread.run_sync`) running a one-row ``BEGIN IMMEDIATE`` / ``INSERT`` /
``COMMIT`` on a WAL file with ``synchronous=FULL``. The scenarios time ``submit``,
``approve``, ``execute`` (claim + commit) and the full round trip (submit → approve →
execute) through ``Governance.open("sqlite:///...")``.

``python -m benchmarks.backend_sqlite [--ops N] [--rounds R]`` runs them interleaved
(paired rounds, medians) and also counts, per operation, the write transactions
(``BEGIN`` statements on any connection), the statements, and the thread hops (calls of
``anyio.to_thread.run_sync``), by wrapping the driver, and the WAL frames (pages) each
operation appends, read from the WAL file with checkpoints held off.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import attrs

from mutator import (
    Mutation,
    MutationContext,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
)
from mutator_governance import Governance, MutationRegistry, RequestStatus

from .harness import Fixture, Scenario

__all__ = ["SCENARIOS", "main"]

RAW = "sqlite.raw_commit"
REQUESTER = MutationContext.user("alice", reason="benchmark")
APPROVER = MutationContext.user("bob", roles=["approver"])


@attrs.frozen
class Tally:
    """A governed counter."""

    value: int = 0


@attrs.frozen
class Bump(Mutation[Tally]):
    """Add one."""

    intent: ClassVar[MutationIntent] = MutationIntent("bench.bump", category="benchmark")

    def apply(self, state: Tally) -> Tally:
        return Tally(state.value + 1)


class NeedsApprover(MutationPolicy[Tally]):
    """Every bump needs one approver."""

    def evaluate(self, mutation: Any, state: Tally, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(
            PolicyRequirement.approval(role="approver"), reason="benchmark"
        )


def _registry() -> MutationRegistry:
    registry = MutationRegistry()
    registry.register(Bump, name="bench.bump")
    registry.register_state(Tally, name="bench.Tally")
    return registry


# -- counting the driver ----------------------------------------------------------------------

COUNTS: Counter[str] = Counter()


class CountingConnection(sqlite3.Connection):
    """Counts statements and write transactions on every connection the store opens."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        COUNTS["statements"] += 1
        if sql.lstrip().upper().startswith("BEGIN"):
            COUNTS["transactions"] += 1
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        COUNTS["statements"] += 1
        return super().executemany(sql, parameters)


@contextlib.contextmanager
def counting() -> Iterator[None]:
    """Route ``sqlite3.connect`` through :class:`CountingConnection`, count thread hops."""
    connect, run_sync = sqlite3.connect, anyio.to_thread.run_sync

    def counted_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", CountingConnection)
        return connect(*args, **kwargs)

    async def counted_run_sync(*args: Any, **kwargs: Any) -> Any:
        COUNTS["hops"] += 1
        return await run_sync(*args, **kwargs)

    sqlite3.connect = counted_connect  # type: ignore[assignment]
    anyio.to_thread.run_sync = counted_run_sync  # type: ignore[assignment]
    try:
        yield
    finally:
        sqlite3.connect = connect
        anyio.to_thread.run_sync = run_sync


# -- fixtures ---------------------------------------------------------------------------------


STORE_OPTIONS: dict[str, Any] = {}
"""Store options of every governance the scenarios open (``--synchronous``)."""


class _World:
    """A governance on a new SQLite file in a temporary directory."""

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        self.gov: Governance

    async def __aenter__(self) -> _World:
        folder = self._stack.enter_context(tempfile.TemporaryDirectory())
        self.gov = await self._stack.enter_async_context(
            Governance.open(f"sqlite:///{folder}/bench.db", registry=_registry(), **STORE_OPTIONS)
        )
        self.gov.engine.register_policy(NeedsApprover())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def states(self, count: int) -> list[str]:
        ids = [f"tally:{n}" for n in range(count)]
        for state_id in ids:
            await self.gov.states.put(state_id, Tally())
        return ids

    async def submitted(self, count: int) -> list[str]:
        return [
            (await self.gov.submit(Bump(), state_id=state_id, context=REQUESTER)).request_id
            for state_id in await self.states(count)
        ]

    async def approved(self, count: int) -> list[str]:
        ids = await self.submitted(count)
        for request_id in ids:
            await self.gov.approve(request_id, context=APPROVER)
        return ids


class _RawCommit:
    """One thread hop running a one-row ``synchronous=FULL`` WAL commit.

    With ``claim``, each call first commits a one-row update on the event loop's thread
    with ``synchronous=NORMAL`` (no flush of its own), as the store claims a request: the
    floor the contract sets for an execution (guarantee 2 claims before the mutation runs).
    """

    def __init__(self, *, claim: bool = False) -> None:
        self._folder = tempfile.TemporaryDirectory()
        self.connection = sqlite3.connect(
            f"{self._folder.name}/raw.db", isolation_level=None, check_same_thread=False
        )
        self.connection.execute("PRAGMA journal_mode = WAL")
        self.connection.execute("PRAGMA synchronous = FULL")
        self.connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, document TEXT)")
        self.connection.execute("CREATE TABLE claim (id INTEGER PRIMARY KEY, n INTEGER)")
        self.connection.execute("INSERT INTO claim VALUES (1, 0)")
        self.row = 0
        self.claims: sqlite3.Connection | None = None
        if claim:
            self.claims = sqlite3.connect(f"{self._folder.name}/raw.db", isolation_level=None)
            self.claims.execute("PRAGMA synchronous = NORMAL")

    def _claim(self, claims: sqlite3.Connection) -> None:
        claims.execute("BEGIN IMMEDIATE")
        claims.execute("UPDATE claim SET n = n + 1 WHERE id = 1").close()
        claims.execute("COMMIT")

    def _commit(self) -> None:
        self.row += 1
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t VALUES (?, ?)", (self.row, "x" * 200)).close()
        connection.execute("COMMIT")

    async def __call__(self) -> None:
        if self.claims is not None:
            self._claim(self.claims)
        await anyio.to_thread.run_sync(self._commit)

    def close(self) -> None:
        if self.claims is not None:
            self.claims.close()
        self.connection.close()
        self._folder.cleanup()


Operation = Callable[[], Awaitable[Any]]


@contextlib.asynccontextmanager
async def operation(name: str, ops: int) -> AsyncIterator[Operation]:
    """An operation of scenario ``name`` that can run ``ops`` times (setup untimed)."""
    if name in ("raw_commit", "raw_claim_commit"):
        raw = _RawCommit(claim=name == "raw_claim_commit")
        try:
            yield raw
        finally:
            raw.close()
        return
    async with _World() as world:
        gov = world.gov
        if name == "submit":
            states = iter(await world.states(ops))

            async def op() -> Any:
                return await gov.submit(Bump(), state_id=next(states), context=REQUESTER)

        elif name == "approve":
            pending = iter(await world.submitted(ops))

            async def op() -> Any:
                return await gov.approve(next(pending), context=APPROVER)

        elif name == "execute":
            approved = iter(await world.approved(ops))

            async def op() -> Any:
                return await gov.execute(next(approved))

        elif name == "round_trip":
            states = iter(await world.states(ops))

            async def op() -> Any:
                request = await gov.submit(Bump(), state_id=next(states), context=REQUESTER)
                await gov.approve(request.request_id, context=APPROVER)
                return await gov.execute(request.request_id)

        else:
            raise ValueError(f"unknown operation {name!r}")
        yield op


NAMES = ("raw_commit", "submit", "approve", "execute", "round_trip")


# -- the harness's scenarios ------------------------------------------------------------------


async def _fixture(name: str, ops: int) -> Fixture:
    stack = contextlib.AsyncExitStack()
    op = await stack.enter_async_context(operation(name, ops + 64))

    def check(result: Any) -> None:
        if name == "execute" or name == "round_trip":
            assert result.request.status is RequestStatus.EXECUTED, result.request.status
        elif name == "approve":
            assert result.status is RequestStatus.APPROVED, result.status

    return Fixture(op, check, stack.aclose)


def _scenario(name: str, summary: str) -> Scenario:
    return Scenario(f"sqlite.{name}", RAW, functools.partial(_fixture, name), summary)


SCENARIOS: tuple[Scenario, ...] = (
    _scenario("raw_commit", "one thread hop + one-row BEGIN/INSERT/COMMIT, WAL, synchronous=FULL"),
    _scenario(
        "raw_claim_commit",
        "an unflushed one-row commit on the loop, then the raw commit (an execution's floor)",
    ),
    _scenario("submit", "Governance.submit on a SQLite file → PENDING(APPROVAL)"),
    _scenario("approve", "Governance.approve of the only slot → APPROVED"),
    _scenario("execute", "Governance.execute of an APPROVED request (claim + commit)"),
    _scenario("round_trip", "submit → approve → execute"),
)


# -- paired measurement with counts -----------------------------------------------------------


async def measure(ops: int, rounds: int) -> dict[str, dict[str, float]]:
    """Per operation: median µs over ``rounds`` interleaved rounds, and driver counts."""
    timings: dict[str, list[float]] = {name: [] for name in NAMES}
    counts: dict[str, Counter[str]] = {name: Counter() for name in NAMES}
    with counting():
        for _ in range(rounds):
            for name in NAMES:
                async with operation(name, ops + 8) as op:
                    for _ in range(8):  # warm-up
                        await op()
                    COUNTS.clear()
                    started = time.perf_counter()
                    for _ in range(ops):
                        await op()
                    timings[name].append((time.perf_counter() - started) / ops * 1e6)
                    counts[name] += COUNTS
    raw = statistics.median(timings["raw_commit"])
    result = {}
    for name in NAMES:
        micros = statistics.median(timings[name])
        per_op = {k: v / (ops * rounds) for k, v in counts[name].items()}
        result[name] = {
            "us": micros,
            "ratio": micros / raw,
            "transactions": per_op.get("transactions", 0.0),
            "statements": per_op.get("statements", 0.0),
            "hops": per_op.get("hops", 0.0),
        }
    return result


def _wal_frames(path: str) -> int:
    """Frames in the WAL file of the database at ``path`` (its header, then frames)."""
    with contextlib.suppress(FileNotFoundError), open(f"{path}-wal", "rb") as wal:
        header = wal.read(32)
        if len(header) < 32:
            return 0
        page_size = int.from_bytes(header[8:12], "big")
        wal.seek(0, 2)
        return (wal.tell() - 32) // (24 + page_size)
    return 0


async def frames(ops: int) -> dict[str, float]:
    """WAL frames (pages) written per operation, checkpoints held off (untimed).

    The WAL is truncated before the counted operations and no connection checkpoints
    while they run, so every frame they append stays in the file to be counted.
    """
    result = {}
    for name in NAMES:
        async with operation(name, ops + 8) as op:
            for _ in range(8):
                await op()
            if isinstance(op, _RawCommit):
                path, writer = f"{op._folder.name}/raw.db", op.connection
            else:
                database = next(
                    cell.cell_contents.requests._db
                    for cell in op.__closure__ or ()
                    if isinstance(cell.cell_contents, Governance)
                )
                path, writer = database.path, database._writer
            writer.execute("PRAGMA wal_autocheckpoint = 0")
            writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for _ in range(ops):
                await op()
            result[name] = _wal_frames(path) / ops
    return result


def main(argv: list[str] | None = None) -> None:
    """Print the paired measurement as a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backend_sqlite")
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--synchronous", help="the store's synchronous option (default: the store's default)"
    )
    args = parser.parse_args(argv)
    if args.synchronous:
        STORE_OPTIONS["synchronous"] = args.synchronous
    result = anyio.run(measure, args.ops, args.rounds, backend=args.backend)
    pages = anyio.run(frames, args.ops, backend=args.backend)
    print(
        "| operation | µs/op | x raw commit | transactions/op | statements/op | hops/op "
        "| WAL frames/op |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in result.items():
        print(
            f"| {name} | {row['us']:.0f} | {row['ratio']:.2f} | {row['transactions']:.2f} "
            f"| {row['statements']:.1f} | {row['hops']:.2f} | {pages[name]:.1f} |"
        )


if __name__ == "__main__":
    main()
