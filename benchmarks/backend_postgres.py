"""PostgreSQL backend scenarios: governance operations against one raw commit.

Every scenario runs ``Governance.open`` on its own schema (dropped afterwards) of the server
named by ``MUTATOR_TEST_POSTGRES_URL`` (skipped when none is named). The baseline,
``backend.postgresql.raw_commit``, is one one-row ``INSERT`` through psycopg's async driver
on an autocommit connection: the floor a durable write can reach through the same driver
path. The ratios of ``execute`` (claim + final commit), ``submit``, ``approve`` and the
full round trip (submit → approve → execute) to it are what issue 9 targets.
``raw_claim_commit`` is the floor the contract sets for an execution: guarantee 2 makes
the executor claim the request before it runs the mutation, so an execution is at least a
write that need not be flushed (a one-row ``UPDATE … RETURNING`` with
``synchronous_commit = off``), then one flushed commit (the raw ``INSERT``).
``execute`` runs requests the same governance submitted (it starts from its copy);
``execute_read_first`` runs them from a governance that holds no copy (another process),
so it reads each request first.

``python -m benchmarks.backend_postgres`` counts round trips and transactions per operation
by wrapping the driver (every statement sent is one round trip; a statement outside a
transaction block is one transaction, a transaction block is one), and prints them with the
server's CPU time per operation: the ``/proc/<pid>/schedstat`` run time of the backends
that served the statements (only when the server runs on this machine; the worker's
throughput on two cores is bounded by client and server CPU together).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from mutator_governance import Governance, GovernedExecutionResult, MutationRequest, RequestStatus

from .engine import Counter
from .governance import (
    APPROVER,
    MUTATION,
    POSTGRES_URL,
    REQUESTER,
    SINGLE,
    RequireApproval,
    _server_unavailable,
    another_process,
    expect_execution,
    expect_request,
    registry,
    schema_url,
)
from .harness import Fixture, Scenario

__all__ = ["SCENARIOS", "count_round_trips"]

RAW = "backend.postgresql.raw_commit"

unavailable = functools.partial(_server_unavailable, "Postgres", POSTGRES_URL, 5432, "psycopg")


@contextlib.asynccontextmanager
async def _schema() -> AsyncIterator[str]:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


async def _opened(stack: contextlib.AsyncExitStack, *, approval: bool) -> Governance:
    schema = await stack.enter_async_context(_schema())
    gov: Governance = await stack.enter_async_context(
        Governance.open(schema_url(schema), registry=registry())
    )
    if approval:
        gov.engine.register_policy(RequireApproval(*SINGLE))
    return gov


async def _states(gov: Governance, ops: int) -> list[str]:
    state_ids = [f"bench-state-{i}" for i in range(ops)]
    for state_id in state_ids:
        await gov.states.put(state_id, Counter())
    return state_ids


def _next(items: list[str], call: Callable[[str], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    source = iter(items)
    return lambda: call(next(source))


async def _fixture(
    build: Callable[[contextlib.AsyncExitStack, int], Awaitable[Fixture]], ops: int
) -> Fixture:
    stack = contextlib.AsyncExitStack()
    try:
        fixture = await build(stack, ops)
    except BaseException:
        await stack.aclose()
        raise
    return Fixture(fixture.op, fixture.check, close=stack.aclose)


async def _raw(stack: contextlib.AsyncExitStack, ops: int) -> Fixture:
    import psycopg

    schema = await stack.enter_async_context(_schema())
    conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    stack.push_async_callback(conn.close)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.execute(f'CREATE TABLE "{schema}".raw (id bigserial PRIMARY KEY, document text)')
    sql = f'INSERT INTO "{schema}".raw (document) VALUES (%s)'
    document = '{"benchmark": "one row"}'
    return Fixture(functools.partial(conn.execute, sql, (document,)))


async def _raw_claim_commit(stack: contextlib.AsyncExitStack, ops: int) -> Fixture:
    import psycopg

    schema = await stack.enter_async_context(_schema())
    conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    stack.push_async_callback(conn.close)
    claims = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    stack.push_async_callback(claims.close)
    await claims.execute("SET synchronous_commit = off")
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.execute(f'CREATE TABLE "{schema}".raw (id bigserial PRIMARY KEY, document text)')
    await conn.execute(f'CREATE TABLE "{schema}".claim (id bigint PRIMARY KEY, n bigint)')
    await conn.execute(
        f'INSERT INTO "{schema}".claim SELECT i, 0 FROM generate_series(1, %s) AS i', (ops,)
    )
    claim = f'UPDATE "{schema}".claim SET n = n + 1 WHERE id = %s RETURNING n'
    insert = f'INSERT INTO "{schema}".raw (document) VALUES (%s)'
    document = '{"benchmark": "one row"}'
    rows = iter(range(1, ops + 1))

    async def op() -> None:
        await (await claims.execute(claim, (next(rows),))).fetchone()
        await conn.execute(insert, (document,))

    return Fixture(op)


async def _submit(stack: contextlib.AsyncExitStack, ops: int) -> Fixture:
    gov = await _opened(stack, approval=True)
    await gov.states.put("bench-state", Counter())
    return Fixture(
        functools.partial(gov.submit, MUTATION, state_id="bench-state", context=REQUESTER),
        expect_request(RequestStatus.PENDING),
    )


async def _approve(stack: contextlib.AsyncExitStack, ops: int) -> Fixture:
    gov = await _opened(stack, approval=True)
    await gov.states.put("bench-state", Counter())
    ids = [
        (await gov.submit(MUTATION, state_id="bench-state", context=REQUESTER)).request_id
        for _ in range(ops)
    ]
    return Fixture(
        _next(ids, functools.partial(gov.approve, context=APPROVER)),
        expect_request(RequestStatus.APPROVED),
    )


async def _execute(stack: contextlib.AsyncExitStack, ops: int) -> Fixture:
    gov = await _opened(stack, approval=False)
    ids = [
        (await gov.submit(MUTATION, state_id=state_id, context=REQUESTER)).request_id
        for state_id in await _states(gov, ops)
    ]
    return Fixture(_next(ids, gov.execute), expect_execution(True, RequestStatus.EXECUTED))


async def _execute_read_first(stack: contextlib.AsyncExitStack, ops: int) -> Fixture:
    gov = await _opened(stack, approval=False)
    ids = [
        (await gov.submit(MUTATION, state_id=state_id, context=REQUESTER)).request_id
        for state_id in await _states(gov, ops)
    ]
    executor = another_process(gov)
    return Fixture(_next(ids, executor.execute), expect_execution(True, RequestStatus.EXECUTED))


async def _round_trip(stack: contextlib.AsyncExitStack, ops: int) -> Fixture:
    gov = await _opened(stack, approval=True)
    source = iter(await _states(gov, ops))

    async def op() -> GovernedExecutionResult:
        request: MutationRequest = await gov.submit(
            MUTATION, state_id=next(source), context=REQUESTER
        )
        await gov.approve(request.request_id, context=APPROVER)
        return await gov.execute(request.request_id)

    return Fixture(op, expect_execution(True, RequestStatus.EXECUTED))


BUILDERS: dict[str, Callable[[contextlib.AsyncExitStack, int], Awaitable[Fixture]]] = {
    "raw_commit": _raw,
    "raw_claim_commit": _raw_claim_commit,
    "execute": _execute,
    "execute_read_first": _execute_read_first,
    "submit": _submit,
    "approve": _approve,
    "round_trip": _round_trip,
}

SUMMARIES = {
    "raw_commit": "one-row INSERT, psycopg async autocommit (the floor; baseline)",
    "raw_claim_commit": "an unflushed one-row UPDATE, then the raw INSERT (an execution's floor)",
    "execute": "governed execute of an APPROVED request this governance submitted",
    "execute_read_first": "governed execute of an APPROVED request another process wrote",
    "submit": "submit → PENDING(APPROVAL), one approval slot",
    "approve": "approve the only slot → APPROVED",
    "round_trip": "submit → approve → execute on a fresh state",
}

SCENARIOS: tuple[Scenario, ...] = tuple(
    Scenario(
        f"backend.postgresql.{kind}",
        RAW,
        functools.partial(_fixture, build),
        SUMMARIES[kind],
        unavailable=unavailable,
    )
    for kind, build in BUILDERS.items()
)


# -- round trips and transactions per operation ----------------------------------------------


class _Counter:
    """Counts statements (round trips) and transactions by wrapping psycopg's async API."""

    def __init__(self) -> None:
        self.round_trips = 0
        self.transactions = 0
        self.active = False
        self.backends: set[int] = set()

    def server_ns(self) -> dict[int, int]:
        """CPU nanoseconds each live backend seen so far has run (none when unreadable)."""
        times: dict[int, int] = {}
        for pid in self.backends:
            try:
                with open(f"/proc/{pid}/schedstat") as stat:
                    times[pid] = int(stat.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # gone, or the server runs elsewhere
        return times

    @contextlib.contextmanager
    def installed(self) -> Any:
        import psycopg
        from psycopg import pq

        cursor_execute = psycopg.AsyncCursor.execute
        cursor_many = psycopg.AsyncCursor.executemany
        transaction = psycopg.AsyncConnection.transaction
        counter = self

        async def execute(cur: Any, *args: Any, **kwargs: Any) -> Any:
            counter.backends.add(cur.connection.info.backend_pid)
            if counter.active:
                counter.round_trips += 1
                idle = cur.connection.info.transaction_status == pq.TransactionStatus.IDLE
                if idle and args and args[0] != "":  # "" is the pool's connection check
                    counter.transactions += 1
            return await cursor_execute(cur, *args, **kwargs)

        async def executemany(cur: Any, *args: Any, **kwargs: Any) -> Any:
            if counter.active:
                counter.round_trips += 1  # pipelined: one sync
            return await cursor_many(cur, *args, **kwargs)

        @contextlib.asynccontextmanager
        async def counted_transaction(conn: Any, *args: Any, **kwargs: Any) -> Any:
            if counter.active and conn.info.transaction_status == pq.TransactionStatus.IDLE:
                counter.transactions += 1
                counter.round_trips += 2  # BEGIN and COMMIT
            async with transaction(conn, *args, **kwargs) as tx:
                yield tx

        patches = (
            (psycopg.AsyncCursor, "execute", execute, cursor_execute),
            (psycopg.AsyncCursor, "executemany", executemany, cursor_many),
            (psycopg.AsyncConnection, "transaction", counted_transaction, transaction),
        )
        for owner, name, wrapper, _ in patches:
            setattr(owner, name, wrapper)
        try:
            yield self
        finally:
            for owner, name, _, original in patches:
                setattr(owner, name, original)


async def count_round_trips(ops: int = 20) -> dict[str, tuple[float, float, float | None]]:
    """Round trips, transactions and server CPU µs per operation of every scenario
    (averaged over ``ops``; the CPU is None when the server's processes are not readable)."""
    counts: dict[str, tuple[float, float, float | None]] = {}
    counter = _Counter()
    with counter.installed():
        for kind, build in BUILDERS.items():
            fixture = await _fixture(build, ops + 2)
            try:
                await fixture.op()
                await fixture.op()
                counter.round_trips = counter.transactions = 0
                counter.active = True
                before = counter.server_ns()
                for _ in range(ops):
                    await fixture.op()
                after = counter.server_ns()
                counter.active = False
                spent = [ns - before.get(pid, 0) for pid, ns in after.items()]
                cpu = sum(spent) / ops / 1000 if after else None
                counts[kind] = (counter.round_trips / ops, counter.transactions / ops, cpu)
            finally:
                assert fixture.close is not None
                await fixture.close()
    return counts


def main() -> int:
    reason = unavailable()
    if reason is not None:
        print(f"skipped: {reason}", file=sys.stderr)
        return 0
    print(f"PostgreSQL at {POSTGRES_URL}")
    counts = asyncio.run(count_round_trips())
    print(f"{'operation':<19} {'round trips':>12} {'transactions':>13} {'server CPU µs':>14}")
    for kind, (trips, transactions, cpu) in counts.items():
        shown = "n/a" if cpu is None else f"{cpu:.0f}"
        print(f"{kind:<19} {trips:>12.1f} {transactions:>13.1f} {shown:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
