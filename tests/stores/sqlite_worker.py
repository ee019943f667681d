"""A counter domain for the SQLite tests, and the worker process of the exactly-once race.

``python -m tests.stores.sqlite_worker PATH START BACKEND`` opens the SQLite file ``PATH``,
waits until the wall-clock time ``START`` (so every worker races from the same moment),
then executes approved requests (and requests pending revalidation) until none is left,
revalidating on the latest state, on the anyio backend ``BACKEND`` (asyncio or trio).
Losing a race (for the claim or for the commit) is expected and retried. Prints one JSON
line: ``{"executed": [...request ids this process executed...], "conflicts": n}``.

``python -m tests.stores.sqlite_worker serve PATH BACKEND LEASE`` runs ``gov.run_worker``
on the SQLite file ``PATH`` (claims leased for ``LEASE`` seconds, stale claims recovered
every second) until it is killed: the worker of the kill test.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any, ClassVar

import anyio
import attrs
import sniffio

from mutator import ConcurrencyError, Mutation, MutationContext, MutationIntent
from mutator_governance import (
    Backoff,
    Governance,
    MutationRegistry,
    PendingReason,
    RequestConcurrencyError,
    RequestNotExecutableError,
    RequestQuery,
    RequestStatus,
    ResolutionStrategy,
)


@attrs.frozen
class Counter:
    """A governed counter."""

    value: int = 0


@attrs.frozen
class Increment(Mutation[Counter]):
    """Add ``by`` to the counter."""

    by: int = 1
    intent: ClassVar[MutationIntent] = MutationIntent("counter.increment", category="testing")

    def apply(self, state: Counter) -> Counter:
        return Counter(state.value + self.by)


def registry() -> MutationRegistry:
    """A registry that knows the counter domain."""
    registry = MutationRegistry()
    registry.register(Increment, name="counter.increment")
    registry.register_state(Counter, name="testing.Counter")
    return registry


async def race(path: str, start: float) -> dict[str, Any]:
    executed: list[str] = []
    conflicts = 0
    async with Governance.open(f"sqlite:///{path}", registry=registry()) as gov:
        await anyio.sleep(max(0.0, start - time.time()))
        rng = random.Random()
        context = MutationContext.service("race-worker")
        while True:
            page = await gov.requests.list(
                RequestQuery(statuses={RequestStatus.APPROVED}), limit=1000
            )
            ready = [r.request_id for r in page.items]
            ready += [r.request_id for r in await gov.requests.pending(PendingReason.REVALIDATION)]
            if not ready:
                break
            rng.shuffle(ready)
            for request_id in ready:
                try:
                    outcome = await gov.execute(
                        request_id,
                        context=context,
                        strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE,
                    )
                except (RequestConcurrencyError, RequestNotExecutableError, ConcurrencyError):
                    conflicts += 1
                    continue
                if outcome.executed:
                    executed.append(request_id)
    return {"executed": executed, "conflicts": conflicts}


async def serve(path: str, lease: float) -> None:
    async with Governance.open(f"sqlite:///{path}", registry=registry(), lease=lease) as gov:
        await gov.run_worker(
            concurrency=4,
            poll_interval=0.05,
            strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE,
            context=MutationContext.service(f"kill-worker-{sniffio.current_async_library()}"),
            recover_every=1.0,
            # A reservation lasts max(lease, backoff.maximum): with the default 30 s, rows
            # reserved by a worker killed late in the run stay out of reach past the
            # test's deadline.
            backoff=Backoff(initial=0.1, maximum=lease),
        )


if __name__ == "__main__" and sys.argv[1] == "serve":
    anyio.run(serve, sys.argv[2], float(sys.argv[4]), backend=sys.argv[3])
elif __name__ == "__main__":
    database, moment, backend = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    result = anyio.run(race, database, moment, backend=backend)
    print(json.dumps(result))
