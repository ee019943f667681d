"""One expiry sweep on Redis with a backlog of pending requests of which none is due.

``python benchmarks/expiry_sweep.py MAIN_TREE BRANCH_TREE [N ...]`` runs, for each ``N``
(default 1,000 and 10,000), the sweep of each tree in turn, paired in one run: a child
process per (tree, N) with ``PYTHONPATH`` set to the tree fills a fresh key prefix with
``N`` PENDING requests whose deadlines are all in the future, then times
``Governance.expire_due()`` (one warm-up, then the median of 7 sweeps): wall clock, the
client's CPU (``time.process_time``) and the Redis server's CPU (``INFO cpu`` delta, the
whole server). A tree without an expiry index falls back to reading every pending
request; one with it reads only what is due. Needs ``MUTATOR_TEST_REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2030, 1, 1, tzinfo=UTC)
SWEEPS = 7


async def _server_cpu(client: Any) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _child(url: str, count: int) -> dict[str, Any]:
    """Fill a fresh prefix with ``count`` pending requests, time the sweeps, drop it."""
    from mutator_governance import Governance
    from mutator_governance._commit_types import GovernedCommit, RequestWrite
    from mutator_governance.stores._redis import RedisStore
    from mutator_governance.testing import sample_registry, sample_request

    prefix = f"mutator-bench-expiry-{uuid.uuid4().hex}"
    store = await RedisStore.open(url, registry=sample_registry(), prefix=prefix)
    limiter = asyncio.Semaphore(32)

    async def create(n: int) -> None:
        request = sample_request(
            f"r{n:06d}", created_at=T0, expires_at=T0 + timedelta(days=1, seconds=n)
        )
        async with limiter:
            await store.committer.commit(GovernedCommit((RequestWrite.create(request),)))

    try:
        await asyncio.gather(*(create(n) for n in range(count)))
        separator = "&" if "?" in url else "?"
        async with Governance.open(
            f"{url}{separator}prefix={prefix}", registry=sample_registry()
        ) as gov:
            await gov.expire_due(now=T0)
            walls, cpus, servers = [], [], []
            for _ in range(SWEEPS):
                server = await _server_cpu(store.client)
                cpu, wall = time.process_time(), time.perf_counter()
                swept = await gov.expire_due(now=T0)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
                servers.append(await _server_cpu(store.client) - server)
                if swept.expired or swept.skipped:
                    raise RuntimeError(f"nothing should be due: {swept}")
        return {
            "wall_ms": statistics.median(walls) * 1000,
            "cpu_ms": statistics.median(cpus) * 1000,
            "server_ms": statistics.median(servers) * 1000,
        }
    finally:
        keys = [key async for key in store.client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await store.client.delete(*keys[start : start + 1000])
        await store.aclose()


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--child":
        result = asyncio.run(_child(os.environ["MUTATOR_TEST_REDIS_URL"], int(argv[1])))
        print(json.dumps(result))
        return
    trees, counts = argv[:2], [int(n) for n in argv[2:]] or [1000, 10_000]
    for count in counts:
        for tree in trees:
            env = {**os.environ, "PYTHONPATH": tree}
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(count)],
                env=env,
                cwd=tree,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(
                f"N={count:>6}  {tree:<28} wall {result['wall_ms']:9.2f} ms  "
                f"client cpu {result['cpu_ms']:9.2f} ms  server cpu {result['server_ms']:8.2f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
