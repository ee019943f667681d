"""Grouped writes on PostgreSQL: a busy process shares statements and WAL flushes.

``write_flights=1`` (a URL parameter or a ``Governance.open`` keyword) lets one write
statement of this process be in flight at a time; the writes that arrive meanwhile wait
and go together as the next statement, each still checked and written as its own
operation. Here 60 quota raises are submitted by 60 concurrent callers, one is refused
(its id is taken) without affecting the others, and a worker executes the rest.

Runs when ``MUTATOR_POSTGRES_URL`` (or ``MUTATOR_TEST_POSTGRES_URL``) names a PostgreSQL
server and skips with a one-line reason otherwise. Everything it writes lives in a fresh
schema, dropped at the end.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio

from mutator import MutationContext
from mutator_governance import Governance, RequestAlreadyExistsError, ResolutionStrategy

from ._servers import server_url, skip_reason
from .worker_fleet import Quota, RaiseQuota, make_registry

billing = MutationContext.user("billing-bot", roles=["billing"])


async def main() -> dict[str, Any]:
    url = server_url("MUTATOR_POSTGRES_URL", "MUTATOR_TEST_POSTGRES_URL")
    reason = skip_reason(
        url, variable="MUTATOR_POSTGRES_URL", store="PostgreSQL", scheme="postgresql"
    )
    if url is None or reason is not None:
        print(reason)
        return {"skipped": reason}
    schema = f"mutator_example_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in url else "?"
    print(f"postgresql store in schema {schema}, write_flights=1")
    try:
        async with Governance.open(
            f"{url}{separator}schema={schema}&write_flights=1", registry=make_registry()
        ) as gov:
            return await _raise_quotas(gov)
    finally:
        await _drop(url, schema)


async def _raise_quotas(gov: Governance) -> dict[str, Any]:
    tenants = [f"quota:tenant-{n}" for n in range(6)]
    for state_id in tenants:
        await gov.states.put(state_id, Quota(limit=100))
    await gov.submit(RaiseQuota(by=1), state_id=tenants[0], context=billing, request_id="raise-0")
    refused: list[str] = []

    async def submit(n: int) -> None:
        try:
            await gov.submit(
                RaiseQuota(by=n % 5 + 1),
                state_id=tenants[n % len(tenants)],
                context=billing,
                request_id=f"raise-{n}",
            )
        except RequestAlreadyExistsError as error:
            refused.append(error.request_id or "")

    async with anyio.create_task_group() as group:
        for n in range(60):  # raise-0 exists already: that one write is refused alone
            group.start_soon(submit, n)
    print(f"  60 concurrent submits: {len(refused)} refused ({', '.join(refused)})")
    # Raises of one tenant commute: each runs on the tenant's latest quota.
    report = await gov.run_worker(
        until_idle=True, concurrency=8, strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE
    )
    print(f"  worker: {report.executed} executed")
    limits = {}
    for state_id in tenants:
        current = await gov.states.get(state_id)
        assert current is not None
        limits[state_id] = current.state.limit
    print(f"  limits: {sorted(limits.values())}")
    requests = (await gov.requests.list(limit=100)).items
    return {
        "refused": refused,
        "executed": report.executed,
        "statuses": sorted({r.status.name for r in requests}),
        "total_raise": sum(limits.values()) - 100 * len(tenants),
    }


async def _drop(url: str, schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    anyio.run(main)
