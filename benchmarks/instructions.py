"""Instructions per operation under valgrind's callgrind: a figure machine load does not move.

For each scenario the runner starts two child processes under
``valgrind --tool=callgrind``, both running ``python -m benchmarks --callgrind-child``:

- the **full** run sets up a fixture, runs ``warmup`` checked operations, then ``ops``
  operations in the harness's timing loop;
- the **setup-only** run does exactly the same except the last step.

Instructions per operation = (full - setup-only) / ``ops``: interpreter start-up, imports,
setup and warm-up cancel out. ``PYTHONHASHSEED`` is fixed so both runs hash alike. Ratios
are taken per mutation against the scenario's baseline, counted the same way.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import anyio

from .harness import Scenario, _checked, _close, _markdown, _table, _timed

__all__ = [
    "Count",
    "count",
    "count_scenarios",
    "format_counts",
    "run_child",
    "valgrind_unavailable",
]

ROOT = Path(__file__).resolve().parents[1]
_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def valgrind_unavailable() -> str | None:
    """A one-line reason why instructions cannot be counted here, or None."""
    if shutil.which("valgrind") is None:
        return (
            "valgrind is not installed (apt-get install valgrind): instruction counts need "
            "valgrind --tool=callgrind"
        )
    return None


# -- the child ---------------------------------------------------------------------------


async def _serve(scenario: Scenario, ops: int, warmup: int, setup_ops: int) -> None:
    fixture = await scenario.setup(setup_ops)
    try:
        await _checked(fixture, warmup)
        # As in the timed runs: setup objects leave the collector's view, so a collection
        # during the counted loop costs what the loop's own garbage costs.
        gc.collect()
        gc.freeze()
        if ops:
            await _timed(fixture, ops)
    finally:
        await _close(fixture)


def run_child(scenario: Scenario, *, backend: str, ops: int, warmup: int, setup_only: bool) -> None:
    """What the process under callgrind runs: set up for ``warmup + ops``, warm up, run."""
    anyio.run(_serve, scenario, 0 if setup_only else ops, warmup, warmup + ops, backend=backend)


# -- the parent --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Count:
    """Instructions per operation and per mutation of one scenario on one backend."""

    name: str
    backend: str
    baseline: str
    mutations: int
    ops: int
    per_op: float
    ratio: float | None = None

    @property
    def per_mutation(self) -> float:
        return self.per_op / self.mutations


def _instructions(
    name: str, backend: str, ops: int, warmup: int, workdir: Path, *, setup_only: bool
) -> int:
    out = workdir / f"callgrind.{os.getpid()}.{int(setup_only)}.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        "--dump-instr=no",
        sys.executable,
        "-m",
        "benchmarks",
        "--callgrind-child",
        name,
        "--backend",
        backend,
        "--instructions-ops",
        str(ops),
        "--instructions-warmup",
        str(warmup),
        *(["--setup-only"] if setup_only else []),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"callgrind run of {name} failed ({done.returncode}): {tail}")
    try:
        match = _TOTALS.search(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    if match is None:
        raise RuntimeError(f"no instruction total in callgrind's output for {name}")
    return int(match.group(1))


def count(scenario: Scenario, *, backend: str, ops: int, warmup: int, workdir: Path) -> Count:
    """Instructions per operation of ``scenario`` (two callgrind runs, subtracted)."""
    full = _instructions(scenario.name, backend, ops, warmup, workdir, setup_only=False)
    setup = _instructions(scenario.name, backend, ops, warmup, workdir, setup_only=True)
    return Count(
        scenario.name, backend, scenario.baseline, scenario.mutations, ops, (full - setup) / ops
    )


def count_scenarios(
    scenarios: Sequence[Scenario],
    *,
    backend: str,
    ops: int,
    warmup: int,
    progress: TextIO | None = None,
) -> tuple[list[Count], list[dict[str, str]]]:
    """Count every scenario (baselines included) and add ratios; (counts, failures)."""
    out = progress if progress is not None else sys.stderr
    counts: dict[str, Count] = {}
    failed: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="mutator-callgrind-") as tmp:
        for index, scenario in enumerate(scenarios, 1):
            print(f"[{index}/{len(scenarios)}] {scenario.name} ... ", end="", file=out, flush=True)
            reason = scenario.unavailable()
            if reason is not None:
                print(f"skipped: {reason}", file=out, flush=True)
                continue
            try:
                counted = count(
                    scenario, backend=backend, ops=ops, warmup=warmup, workdir=Path(tmp)
                )
            except RuntimeError as error:
                print(f"FAILED: {error}", file=out, flush=True)
                failed.append({"name": scenario.name, "backend": backend, "error": str(error)})
                continue
            counts[scenario.name] = counted
            print(f"{counted.per_op:,.0f} instructions/op", file=out, flush=True)
    out_counts = []
    for counted in counts.values():
        base = counts.get(counted.baseline)
        ratio = None
        if base is not None and base.per_mutation > 0:
            ratio = counted.per_mutation / base.per_mutation
        out_counts.append(
            Count(
                counted.name,
                counted.backend,
                counted.baseline,
                counted.mutations,
                counted.ops,
                counted.per_op,
                ratio,
            )
        )
    return out_counts, failed


def format_counts(counts: Sequence[Count], *, markdown: bool = False) -> str:
    """A table of instructions per operation, per mutation and the ratio to the baseline."""
    if not counts:
        return "(no results)"
    headers = ["scenario", "baseline", "instructions/op", "per mutation", "ratio"]
    rows = [
        [
            c.name,
            c.baseline,
            f"{c.per_op:,.0f}",
            f"{c.per_mutation:,.0f}",
            "—" if c.ratio is None else f"{c.ratio:.2f}",
        ]
        for c in counts
    ]
    return (_markdown if markdown else _table)(headers, rows, {2, 3, 4})
