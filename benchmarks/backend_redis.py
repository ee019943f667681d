"""Redis backend scenarios: governed operations against one raw script call.

Baseline ``redis.raw-script``: one ``EVALSHA`` of a one-key write script through the same
``redis.asyncio`` client the store uses (the floor of any Redis write). Scenarios, each on
a store opened with ``Governance.open`` (the store's own audit and history) under a fresh
key prefix, dropped afterwards:

- ``redis.submit``: a request that needs one approval (PENDING(APPROVAL));
- ``redis.approve``: the approval that makes a pooled request APPROVED;
- ``redis.execute``: governed execution (claim + final commit) of a pooled APPROVED
  request, one state per request, by the governance that approved it (it starts from its
  copy of the request);
- ``redis.execute-read-first``: the same by a governance holding no copy (another
  process), which reads the request first;
- ``redis.round-trip``: submit → approve → execute on a fresh state;
- ``redis.raw-two-scripts``: the raw script called twice, the floor the contract sets for
  an execution (guarantee 2: the request is claimed before the mutation runs, so an
  execution is a claim script, then a commit script).

They run only when a server is named (``MUTATOR_TEST_REDIS_URL``), like every server
scenario. ``python -m benchmarks.backend_redis`` prints the round trips and script calls
per operation, counted by wrapping the client's connections (not timed).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import uuid
from collections import Counter as Tally
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio

from mutator import MutationContext, MutationPolicy, PolicyDecision, PolicyRequirement
from mutator_governance import Governance, GovernedExecutionResult, MutationRequest, RequestStatus

from .engine import Counter, IncrementCounter
from .governance import _server_unavailable, another_process, registry
from .harness import Fixture, Scenario

__all__ = ["SCENARIOS", "count_round_trips"]

REDIS_URL = os.environ.get("MUTATOR_TEST_REDIS_URL") or ""
BASELINE = "redis.raw-script"
REQUESTER = MutationContext.user("alice", reason="benchmark request")
APPROVER = MutationContext.user("bob", reason="looks fine")
MUTATION = IncrementCounter()
RAW_SCRIPT = "redis.call('HSET', KEYS[1], 'value', ARGV[1]) return 1"


class _NeedsBob(MutationPolicy[Any]):
    name = "needs-bob"

    def __init__(self) -> None:
        self.decision = PolicyDecision.require_approval(PolicyRequirement.approval("bob"))

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        return self.decision


def _unavailable() -> str | None:
    return _server_unavailable("Redis", REDIS_URL, 6379, "redis")


def _url(prefix: str) -> str:
    return f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={prefix}"


async def _drop(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def _governance() -> AsyncIterator[Governance]:
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    try:
        async with Governance.open(_url(prefix), registry=registry()) as gov:
            gov.engine.register_policy(_NeedsBob())
            yield gov
    finally:
        await _drop(prefix)


def _consume(ids: list[str], call: Callable[..., Awaitable[Any]], **kwargs: Any) -> Any:
    source: Iterator[str] = iter(ids)

    def op() -> Awaitable[Any]:
        return call(next(source), **kwargs)

    return op


def _expect(status: RequestStatus) -> Callable[[Any], None]:
    def check(outcome: Any) -> None:
        request = outcome.request if isinstance(outcome, GovernedExecutionResult) else outcome
        if request.status is not status:
            raise AssertionError(f"expected {status.name}, got {request.status.name}")

    return check


async def _fixture(build: Callable[[Governance, int], Awaitable[Fixture]], ops: int) -> Fixture:
    stack = contextlib.AsyncExitStack()
    try:
        gov = await stack.enter_async_context(_governance())
        fixture = await build(gov, ops)
    except BaseException:
        await stack.aclose()
        raise
    return Fixture(fixture.op, fixture.check, close=stack.aclose)


async def _pending(gov: Governance, ops: int) -> list[MutationRequest]:
    requests = []
    for index in range(ops):
        state_id = f"bench-state-{index}"
        await gov.states.put(state_id, Counter())
        requests.append(await gov.submit(MUTATION, state_id=state_id, context=REQUESTER))
    return requests


async def _raw(ops: int, *, calls: int = 1) -> Fixture:
    """``calls`` EVALSHAs of a one-key write, through the same client path the store uses."""
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    stack = contextlib.AsyncExitStack()
    gov = await stack.enter_async_context(Governance.open(_url(prefix), registry=registry()))
    stack.push_async_callback(_drop, prefix)
    client = gov.requests._b.client  # type: ignore[attr-defined]
    script = client.register_script(RAW_SCRIPT)
    once = functools.partial(script, keys=[f"{prefix}:raw"], args=["1"])

    async def twice() -> Any:
        await once()
        return await once()

    op: Callable[[], Awaitable[Any]] = twice if calls == 2 else once

    def check(reply: Any) -> None:
        if int(reply) != 1:
            raise AssertionError(f"unexpected reply {reply!r}")

    return Fixture(op, check, close=stack.aclose)


async def _submit(gov: Governance, ops: int) -> Fixture:
    await gov.states.put("bench-state", Counter())
    op = functools.partial(gov.submit, MUTATION, state_id="bench-state", context=REQUESTER)
    return Fixture(op, _expect(RequestStatus.PENDING))


async def _approve(gov: Governance, ops: int) -> Fixture:
    ids = [r.request_id for r in await _pending(gov, ops)]
    return Fixture(_consume(ids, gov.approve, context=APPROVER), _expect(RequestStatus.APPROVED))


async def _execute(gov: Governance, ops: int) -> Fixture:
    ids = [r.request_id for r in await _pending(gov, ops)]
    for request_id in ids:
        await gov.approve(request_id, context=APPROVER)
    return Fixture(_consume(ids, gov.execute), _expect(RequestStatus.EXECUTED))


async def _execute_read_first(gov: Governance, ops: int) -> Fixture:
    """Execute APPROVED requests another process wrote (the request is read first)."""
    ids = [r.request_id for r in await _pending(gov, ops)]
    for request_id in ids:
        await gov.approve(request_id, context=APPROVER)
    executor = another_process(gov)
    return Fixture(_consume(ids, executor.execute), _expect(RequestStatus.EXECUTED))


async def _round_trip(gov: Governance, ops: int) -> Fixture:
    state_ids = [f"bench-state-{index}" for index in range(ops)]
    for state_id in state_ids:
        await gov.states.put(state_id, Counter())
    source = iter(state_ids)

    async def op() -> GovernedExecutionResult:
        request = await gov.submit(MUTATION, state_id=next(source), context=REQUESTER)
        await gov.approve(request.request_id, context=APPROVER)
        return await gov.execute(request.request_id)

    return Fixture(op, _expect(RequestStatus.EXECUTED))


OPERATIONS: dict[str, Callable[[Governance, int], Awaitable[Fixture]]] = {
    "redis.submit": _submit,
    "redis.approve": _approve,
    "redis.execute": _execute,
    "redis.execute-read-first": _execute_read_first,
    "redis.round-trip": _round_trip,
}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        BASELINE,
        BASELINE,
        _raw,
        "one EVALSHA of a one-key write script (the floor of a Redis write)",
        unavailable=_unavailable,
    ),
    Scenario(
        "redis.raw-two-scripts",
        BASELINE,
        functools.partial(_raw, calls=2),
        "two EVALSHAs of the raw script (an execution's floor: claim, then commit)",
        unavailable=_unavailable,
    ),
    *(
        Scenario(
            name,
            BASELINE,
            functools.partial(_fixture, build),
            (build.__doc__ or name).strip().splitlines()[0] if build.__doc__ else name,
            unavailable=_unavailable,
        )
        for name, build in OPERATIONS.items()
    ),
)


# -- round trips -----------------------------------------------------------------------------


@contextlib.contextmanager
def _counting() -> Iterator[Tally[str]]:
    """Count writes to a socket (round trips), script calls and bytes on every asyncio stream.

    Counted at ``asyncio.StreamWriter`` (what redis-py's connections and the store's hot
    path both write through), so a command is counted whichever path sends it.
    """
    import asyncio

    tally: Tally[str] = Tally()
    write, writelines = asyncio.StreamWriter.write, asyncio.StreamWriter.writelines

    def count(data: Any) -> None:
        tally["round trips"] += 1
        tally["scripts"] += bytes(data).count(b"EVALSHA")
        tally["bytes sent"] += len(data)

    def counted_write(self: asyncio.StreamWriter, data: Any) -> None:
        count(data)
        write(self, data)

    def counted_writelines(self: asyncio.StreamWriter, data: Any) -> None:
        lines = list(data)
        count(b"".join(bytes(line) for line in lines))
        writelines(self, lines)

    asyncio.StreamWriter.write = counted_write  # type: ignore[method-assign]
    asyncio.StreamWriter.writelines = counted_writelines  # type: ignore[method-assign,assignment]
    try:
        yield tally
    finally:
        asyncio.StreamWriter.write = write  # type: ignore[method-assign]
        asyncio.StreamWriter.writelines = writelines  # type: ignore[method-assign]


async def _server_usec(client: Any) -> float:
    """Microseconds Redis has spent executing commands (INFO commandstats), all clients."""
    stats = await client.info("commandstats")
    return float(sum(entry["usec"] for entry in stats.values()))


async def count_round_trips(ops: int = 200) -> dict[str, dict[str, float]]:
    """Per operation of each scenario (mean over ``ops``): round trips, script calls and
    bytes sent (counted on the client's connections), client CPU µs (``time.process_time``: what
    load on a shared machine blurs least) and Redis server µs (INFO commandstats).
    """
    import redis.asyncio as aioredis

    probe = aioredis.Redis.from_url(REDIS_URL)
    counts: dict[str, dict[str, float]] = {}
    try:
        for name, build in {BASELINE: None, **OPERATIONS}.items():
            fixture = await _raw(ops) if build is None else await _fixture(build, ops)
            try:
                server = await _server_usec(probe)
                cpu = time.process_time()
                with _counting() as tally:
                    for _ in range(ops):
                        await fixture.op()
                cpu = time.process_time() - cpu
                server = await _server_usec(probe) - server
                counts[name] = {
                    **{
                        kind: tally[kind] / ops for kind in ("round trips", "scripts", "bytes sent")
                    },
                    "client cpu us": cpu / ops * 1e6,
                    "server us": server / ops,
                }
            finally:
                assert fixture.close is not None
                await fixture.close()
    finally:
        await probe.aclose()
    return counts


def main() -> int:
    if reason := _unavailable():
        print(f"skipped: {reason}", file=sys.stderr)
        return 0
    print(f"Redis: {REDIS_URL}")
    for name, counts in anyio.run(count_round_trips).items():
        print(f"{name:20} " + "  ".join(f"{k}={v:.1f}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
