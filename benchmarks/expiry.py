"""An expiry sweep over many pending requests, none due: two source trees, paired.

``Governance.expire_due()`` on a SQLite file holding N pending requests whose deadlines are
a day away. Without an :class:`~mutator_governance.ExpiryIndex` the sweep reads and decodes
every pending request; with one it reads none. Each measurement runs in a fresh process
with ``PYTHONPATH`` set to one source tree, the trees alternating within every round::

    git archive b5f0502 | tar -x -C /tmp/base      # the tree to compare against
    python -m benchmarks.expiry --base /tmp/base --sizes 1000 10000 --rounds 3

prints, per tree and size, the median wall and CPU time of one sweep (the median over the
rounds of each process's median over ``--sweeps`` sweeps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASE = datetime(2026, 1, 1, tzinfo=UTC)


async def _measure(size: int, sweeps: int, folder: str) -> dict[str, Any]:
    """Fill a SQLite file with ``size`` pending requests and time ``sweeps`` sweeps."""
    import mutator_governance
    from mutator_governance import Governance
    from mutator_governance.stores import _sqlite
    from mutator_governance.testing import sample_registry, sample_request

    url = f"sqlite:///{folder}/expiry.db"
    later = BASE + timedelta(days=1)
    requests = [
        sample_request(f"r-{i:06d}", created_at=BASE, expires_at=later + timedelta(seconds=i))
        for i in range(size)
    ]
    store = await _sqlite.SQLiteStore.open(url, registry=sample_registry())
    try:
        codec = _sqlite._Codec(sample_registry())
        rows = [_sqlite._request_row(codec, r) for r in requests]
        await store._db.run_write(lambda c: _sqlite._execute_many(c, _sqlite._INSERT_REQUEST, rows))
    finally:
        await store.aclose()
    walls: list[float] = []
    cpus: list[float] = []
    async with Governance.open(url, registry=sample_registry()) as gov:
        await gov.expire_due(BASE)  # warm-up: connections, statement caches
        for _ in range(sweeps):
            wall, cpu = time.perf_counter(), time.process_time()
            sweep = await gov.expire_due(BASE)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            assert sweep.expired == ()
    return {
        "package": mutator_governance.__file__,
        "schema": _sqlite.SCHEMA_VERSION,
        "wall_s": statistics.median(walls),
        "cpu_s": statistics.median(cpus),
    }


def _worker(size: int, sweeps: int) -> None:
    import anyio

    with tempfile.TemporaryDirectory(prefix="mutator-expiry-") as folder:
        print(json.dumps(anyio.run(_measure, size, sweeps, folder)))


def _run(tree: Path, size: int, sweeps: int) -> dict[str, Any]:
    """One measurement in a fresh interpreter importing ``tree``'s packages."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--worker", "--sizes", str(size), "--sweeps", str(sweeps)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["package"].startswith(str(tree)):
        raise RuntimeError(f"{tree} was not imported: {result['package']}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.expiry")
    parser.add_argument("--base", type=Path, help="the source tree to compare against")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweeps", type=int, default=5)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.sizes[0], args.sweeps)
        return
    if args.base is None:
        parser.error("--base is required")
    trees = {"base": args.base.resolve(), "branch": ROOT}
    found: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for size in args.sizes:
            for name in order:
                result = _run(trees[name], size, args.sweeps)
                found.setdefault((name, size), []).append(result)
                print(
                    f"round {round_ + 1} {name:6} {size:>6}: wall {result['wall_s'] * 1e3:8.2f} ms"
                    f"  cpu {result['cpu_s'] * 1e3:8.2f} ms  (schema {result['schema']})",
                    file=sys.stderr,
                )
    print("| tree | pending | schema | sweep wall (median) | sweep CPU (median) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for (name, size), results in found.items():
        wall = statistics.median(r["wall_s"] for r in results) * 1e3
        cpu = statistics.median(r["cpu_s"] for r in results) * 1e3
        print(f"| {name} | {size:,} | {results[0]['schema']} | {wall:.2f} ms | {cpu:.2f} ms |")


if __name__ == "__main__":
    main()
