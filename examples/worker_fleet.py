"""A worker that keeps going: a quarantined row and a store outage do not stop it.

1. On a SQLite file, five approved quota raises wait for the worker; one of their rows was
   damaged (say, by a bad manual fix). The worker executes the four healthy ones; the
   damaged row is quarantined and listed by ``gov.quarantined()`` instead of stopping
   every listing and worker.
2. A store that is briefly unreachable (its first two polls fail) makes the worker back
   off and retry; nothing is lost and the report counts the outages.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from mutator import Mutation, MutationContext, MutationEngine, MutationIntent
from mutator_governance import (
    Backoff,
    Governance,
    InMemoryRequestStore,
    MutationRegistry,
    MutationRequest,
    RequestStatus,
    StoreUnavailableError,
    WorkerOutcome,
)


@attrs.frozen
class Quota:
    limit: int


@attrs.frozen
class RaiseQuota(Mutation[Quota]):
    by: int
    intent: ClassVar[MutationIntent] = MutationIntent("quota.raise", category="billing")

    def apply(self, state: Quota) -> Quota:
        return Quota(state.limit + self.by)


def make_registry() -> MutationRegistry:
    registry = MutationRegistry()
    registry.register(RaiseQuota, name="quota.raise")
    registry.register_state(Quota, name="billing.Quota")
    return registry


def printed(outcome: WorkerOutcome) -> None:
    print(f"    {outcome.request_id}: {outcome.kind.value}")


async def quarantine_on_sqlite(directory: Path) -> dict[str, Any]:
    path = directory / "governance.db"
    requester = MutationContext.user("dev", reason="more headroom")
    async with Governance.open(f"sqlite:///{path}", registry=make_registry()) as gov:
        ids = []
        for n in range(5):
            await gov.states.put(f"quota:team-{n}", Quota(100))
            request = await gov.submit(
                RaiseQuota(10),
                state_id=f"quota:team-{n}",
                context=requester,
                request_id=f"raise-{n}",
            )
            ids.append(request.request_id)
        with sqlite3.connect(path) as damage:
            damage.execute(
                "UPDATE requests SET document = '{\"half a' WHERE request_id = ?", (ids[2],)
            )
        print("  worker over 5 approved requests, one of them damaged:")
        report = await gov.run_worker(until_idle=True, poll_interval=0.01, on_outcome=printed)
        print(f"  executed {report.executed}; quarantined {report.quarantined}")
        quarantined = await gov.quarantined()
        for entry in quarantined:
            print(f"  quarantined {entry.request_id} ({entry.backend}): {entry.error}")
        statuses = {
            request_id: (await gov.get(request_id)).status
            for request_id in ids
            if request_id != ids[2]
        }
        return {
            "executed": report.executed,
            "quarantined": [entry.request_id for entry in quarantined],
            "healthy_executed": set(statuses.values()) == {RequestStatus.EXECUTED},
        }


class FlakyRequests(InMemoryRequestStore):
    """In-memory requests whose first ``failures`` polls find the store unreachable."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def reserve(self, **options: Any) -> Sequence[MutationRequest]:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailableError("database restarting", url="memory://")
        return await super().reserve(**options)


async def outage_in_memory() -> dict[str, Any]:
    gov = Governance(MutationEngine(), registry=make_registry(), requests=FlakyRequests(2))
    requester = MutationContext.user("dev", reason="more headroom")
    await gov.states.put("quota:acme", Quota(100))
    request = await gov.submit(RaiseQuota(5), state_id="quota:acme", context=requester)
    print("  worker while the store is unreachable for its first two polls:")
    report = await gov.run_worker(
        until_idle=True, poll_interval=0.01, backoff=Backoff(initial=0.01, maximum=0.1)
    )
    status = (await gov.get(request.request_id)).status
    print(f"  outages {report.outages}; executed {report.executed}; request is {status.name}")
    return {"outages": report.outages, "executed": report.executed, "status": status}


async def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mutator-example-") as directory:
        print("1) a damaged row is quarantined, the rest execute")
        sqlite = await quarantine_on_sqlite(Path(directory))
    print("2) an outage is retried with backoff")
    memory = await outage_in_memory()
    return {"sqlite": sqlite, "memory": memory}


if __name__ == "__main__":
    import anyio

    anyio.run(main)
