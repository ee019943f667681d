"""Worker process of the fleet test: ``python -m tests.stores.fleet_worker URL``.

Opens the store at ``URL`` (the :mod:`tests.stores.pg_domain` registry), prints ``ready``,
waits for ``go`` on stdin (so every worker of the fleet starts at the same moment, after
its interpreter start-up), then runs ``Governance.run_worker(until_idle=True,
concurrency=4)`` with the default poll interval, revalidating on the latest state, and
prints the ``WorkerReport`` as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys

import anyio
import anyio.to_thread
import attrs

from mutator import MutationContext
from mutator_governance import Governance, ResolutionStrategy

from .pg_domain import registry


def _wait_for_go() -> None:
    for line in sys.stdin:
        if line.strip() == "go":
            return
    raise SystemExit("stdin closed before go")


async def drain(url: str) -> dict[str, int]:
    async with Governance.open(url, registry=registry()) as gov:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(_wait_for_go)
        report = await gov.run_worker(
            until_idle=True,
            concurrency=4,
            strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE,
            context=MutationContext.service(f"fleet-worker-{os.getpid()}"),
        )
    return attrs.asdict(report)


if __name__ == "__main__":
    print(json.dumps(anyio.run(drain, sys.argv[1])), flush=True)
