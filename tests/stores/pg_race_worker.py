"""Worker process of the cross-process exactly-once test.

``python -m tests.stores.pg_race_worker URL START`` waits until the wall-clock time
``START`` (so every worker races from the same moment), opens the store (creating the
schema if it is new), then executes approved requests
(and requests pending revalidation) until none is left, revalidating on the latest state.
Losing a race (a claim or a commit) is expected and retried. Prints one JSON line:
``{"executed": [...request ids this process executed...], "conflicts": n}``.
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


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], float(sys.argv[2])))))
