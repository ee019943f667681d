"""Worker process of the cross-process exactly-once test.

``python -m tests.stores.pg_race_worker URL START`` waits until the wall-clock time
``START`` (so every worker races from the same moment), opens the store (creating the
schema if it is new), then executes approved requests
(and requests pending revalidation) until none is left, revalidating on the latest state.
Losing a race (a claim or a commit) is expected and retried. Prints one JSON line:
``{"executed": [...request ids this process executed...], "conflicts": n}``.

:func:`run_served` (a multiprocessing target; ``python -m tests.stores.pg_race_worker
serve URL`` does the same) runs ``Governance.run_worker`` (claims leased for ``LEASE``
seconds, stale claims recovered every second, revalidating on the latest state) until the
process is killed: the worker of the kill test.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

from mutator import ConcurrencyError
from mutator_governance import (
    Governance,
    PendingReason,
    RequestConcurrencyError,
    RequestNotExecutableError,
    RequestQuery,
    RequestStatus,
    ResolutionStrategy,
)

from .pg_domain import registry

LEASE = 2.0
"""Seconds a claim of a served worker holds before another worker may recover it."""


async def main(url: str, start: float) -> dict[str, object]:
    executed: list[str] = []
    conflicts = 0
    await asyncio.sleep(max(0.0, start - time.time()))
    async with Governance.open(url, registry=registry()) as gov:
        rng = random.Random()
        while True:
            ready = [
                r.request_id
                for r in (
                    await gov.requests.list(
                        RequestQuery(statuses={RequestStatus.APPROVED}), limit=1000
                    )
                ).items
            ]
            ready += [r.request_id for r in await gov.requests.pending(PendingReason.REVALIDATION)]
            if not ready:
                break
            rng.shuffle(ready)
            for request_id in ready:
                try:
                    outcome = await gov.execute(
                        request_id, strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE
                    )
                except (RequestConcurrencyError, RequestNotExecutableError, ConcurrencyError):
                    conflicts += 1
                    continue
                if outcome.executed:
                    executed.append(request_id)
    return {"executed": executed, "conflicts": conflicts}


async def serve(url: str, ready: str | None = None) -> None:
    async with Governance.open(url, registry=registry(), lease=LEASE, max_size=4) as gov:
        if ready is not None:
            with open(ready, "w") as marker:  # noqa: ASYNC230 - a tiny marker file
                marker.write("ready")
        await gov.run_worker(
            concurrency=1,
            poll_interval=0.05,
            strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE,
            recover_every=1.0,
        )


def run_served(url: str, ready: str | None = None) -> None:
    """Serve ``url`` until killed (the target of the kill test's worker processes).

    Creates the file ``ready`` once the store is open and the worker starts.
    """
    asyncio.run(serve(url, ready))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        run_served(sys.argv[2])
    else:
        print(json.dumps(asyncio.run(main(sys.argv[1], float(sys.argv[2])))))
