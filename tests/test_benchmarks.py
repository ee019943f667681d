"""The benchmark suite runs, writes and compares results; its statistics are right.

Timings are never asserted: these tests only check that the harness works.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from benchmarks import worker
from benchmarks.harness import (
    QUICK,
    SCHEMA,
    Fixture,
    Scenario,
    plan,
    quartiles,
    run,
    select,
    summarize,
)
from benchmarks.instructions import Count, format_counts

ROOT = Path(__file__).resolve().parents[1]
COMMIT_SCENARIOS = {
    "engine.direct.counter",
    "engine.commit.performance_no_policy",
    "engine.commit.strict_policy",
}
RESULT_KEYS = {
    "name",
    "backend",
    "baseline",
    "summary",
    "mutations",
    "reference",
    "ops_per_repeat",
    "repeats_us",
    "median_us",
    "q1_us",
    "q3_us",
    "min_us",
    "max_us",
    "iqr_pct",
    "ops_per_sec",
    "ratio",
    "ratio_q1",
    "ratio_q3",
    "paired_baseline_us",
    "load1",
}


def benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    results = tmp_path_factory.mktemp("results")
    done = benchmarks("--quick", "--filter", "engine.commit", "--results-dir", str(results))
    return done, results


def results_file(directory: Path) -> Path:
    files = sorted(directory.glob("*.json"))
    assert len(files) == 1, files
    return files[0]


def test_quick_run_exits_zero_with_progress_and_table(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, _ = quick_run
    assert done.returncode == 0, done.stderr
    assert "[1/3] engine.direct.counter ... " in done.stderr
    assert "engine.commit.strict_policy ... " in done.stderr
    assert "median µs/op" in done.stdout
    assert "results: " in done.stdout


def test_quick_run_writes_results_with_expected_keys(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, directory = quick_run
    data = json.loads(results_file(directory).read_text())
    assert data["schema"] == SCHEMA
    assert data["mode"] == "quick"
    assert data["backend"] == "asyncio"
    for key in ("created_at", "argv", "settings", "machine", "wall_seconds", "skipped", "failed"):
        assert key in data
    assert {"python", "cpu_count"} <= set(data["machine"])
    assert data["failed"] == []
    assert {r["name"] for r in data["results"]} == COMMIT_SCENARIOS
    for result in data["results"]:
        assert set(result) == RESULT_KEYS
        assert len(result["repeats_us"]) == QUICK.repeats
        assert result["median_us"] > 0
        assert result["ratio"] > 0
    baseline = next(r for r in data["results"] if r["name"] == "engine.direct.counter")
    assert baseline["ratio"] == 1.0


def test_compare_against_an_earlier_results_file(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, directory = quick_run
    old = results_file(directory)
    done = benchmarks("--quick", "--filter", "engine.commit", "--no-save", "--compare", str(old))
    assert done.returncode == 0, done.stderr
    assert "new/old" in done.stdout
    compared = done.stdout.split("compared with", 1)[1]
    for name in COMMIT_SCENARIOS:
        assert name in compared


def test_compare_with_a_file_that_is_not_results_fails_cleanly(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"schema": 0}')
    done = benchmarks("--quick", "--no-save", "--compare", str(bogus))
    assert done.returncode == 2
    assert "not a schema-" in done.stderr


def test_quartiles_and_summary_of_a_known_list() -> None:
    values = [9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0]
    assert quartiles(values) == (3.0, 5.0, 7.0)
    summary = summarize(values)
    assert (summary.median, summary.q1, summary.q3) == (5.0, 3.0, 7.0)
    assert (summary.minimum, summary.maximum) == (1.0, 9.0)
    assert summary.iqr == 4.0
    assert summary.iqr_pct == pytest.approx(80.0)


def test_quartiles_of_even_and_single_lists() -> None:
    assert quartiles([1.0, 2.0, 3.0, 4.0]) == (1.75, 2.5, 3.25)
    assert quartiles([2.5]) == (2.5, 2.5, 2.5)
    with pytest.raises(ValueError):
        quartiles([])


async def _noop() -> None:
    return None


async def _setup(ops: int) -> Fixture:
    return Fixture(_noop)


async def _broken(ops: int) -> Fixture:
    def check(_: object) -> None:
        raise AssertionError("wrong outcome")

    return Fixture(_noop, check)


def test_selection_adds_baselines_and_both_runs_engine_scenarios_twice() -> None:
    base = Scenario("g.base", "g.base", _setup, "baseline", engine=True)
    engine = Scenario("g.engine", "g.base", _setup, "engine", engine=True)
    other = Scenario("h.other", "g.base", _setup, "not an engine scenario")
    assert [s.name for s in select([base, engine, other], ["engine"])] == ["g.base", "g.engine"]
    pairs = [(s.name, b) for s, b in plan([base, engine, other], "both")]
    assert pairs == [
        ("g.base", "asyncio"),
        ("g.engine", "asyncio"),
        ("h.other", "asyncio"),
        ("g.base", "trio"),
        ("g.engine", "trio"),
    ]


def test_unavailable_scenarios_are_skipped_and_failed_checks_reported() -> None:
    scenarios = [
        Scenario("g.base", "g.base", _setup, "baseline"),
        Scenario("g.remote", "g.base", _setup, "needs a server", unavailable=lambda: "no server"),
        Scenario("g.broken", "g.base", _broken, "checks fail"),
    ]
    progress = io.StringIO()
    outcome = run(scenarios, settings=QUICK, progress=progress)
    assert [r.name for r in outcome.results] == ["g.base"]
    assert outcome.results[0].ratio == 1.0
    assert outcome.skipped == [{"name": "g.remote", "backend": "asyncio", "reason": "no server"}]
    assert [f["name"] for f in outcome.failed] == ["g.broken"]
    lines = progress.getvalue().splitlines()
    assert lines[1] == "[2/3] g.remote ... skipped: no server"
    assert lines[2].startswith("[3/3] g.broken ... FAILED: AssertionError: wrong outcome")


def test_instructions_without_valgrind_says_so(tmp_path: Path) -> None:
    """--instructions on a machine without valgrind exits 2 with a one-line reason."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--instructions", "--filter", "engine.commit"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert done.returncode == 2
    assert "valgrind is not installed" in done.stderr


def test_instruction_counts_are_reported_per_mutation_with_ratio() -> None:
    """A batch of 10 is reported per operation and per mutation, with its ratio."""
    base = Count("base", "asyncio", "base", 1, 100, 1_000.0)
    batch = Count("batch", "asyncio", "base", 10, 100, 50_000.0, ratio=5.0)
    assert batch.per_mutation == 5_000.0
    table = format_counts([base, batch])
    assert "50,000" in table
    assert "5.00" in table


@pytest.mark.slow
def test_quick_worker_run_verifies_and_reports_the_fleet(tmp_path: Path) -> None:
    """--quick runs the SQLite fleet (1 and 2 processes) and the wake-up, and saves them."""
    done = benchmarks("--quick", "--filter", "governance.worker", "--results-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "[1/3] governance.worker.sqlite.1procs ... " in done.stderr
    assert "executions/s" in done.stdout
    assert "median ms" in done.stdout
    data = json.loads(results_file(tmp_path).read_text())
    assert data["results"] == []
    fleet = data["worker"]
    assert fleet["failed"] == []
    by_name = {r["name"]: r for r in fleet["results"]}
    assert set(by_name) == {
        "governance.worker.sqlite.1procs",
        "governance.worker.sqlite.2procs",
        "governance.worker.sqlite.wakeup",
    }
    one, two = (
        by_name["governance.worker.sqlite.1procs"],
        by_name["governance.worker.sqlite.2procs"],
    )
    assert one["scaling"] == 1.0
    assert two["scaling"] == pytest.approx(two["executions_per_sec"] / one["executions_per_sec"])
    assert sum(two["per_process"]) == two["requests"] == 20
    assert one["client_cpu_ms"] > 0
    assert two["client_cpu_ms"] > 0
    wake = by_name["governance.worker.sqlite.wakeup"]
    assert len(wake["latencies_ms"]) == 2
    assert 0 < wake["latency_median_ms"] <= wake["latency_p95_ms"]


def test_worker_selection_adds_the_one_process_baseline() -> None:
    names = [s.name for s in worker.select(["redis.4procs"])]
    assert names == ["governance.worker.redis.1procs", "governance.worker.redis.4procs"]


def test_worker_verification_fails_on_an_undrained_backlog(tmp_path: Path) -> None:
    """A fleet run that left work undone (or whose workers erred) fails its scenario."""
    url = f"sqlite:///{tmp_path}/fleet.db"
    backlog = worker.plan(4, 2)

    async def seed_and_verify() -> None:
        await worker.seed(url, backlog)
        await worker.verify_drained(url, backlog)

    with pytest.raises(AssertionError, match="expected 4 EXECUTED requests"):
        anyio.run(seed_and_verify)
    report = {"executed": 4, "errors": 1, "failed": 0, "not_executed": 0}
    with pytest.raises(AssertionError, match="'errors': 1"):
        worker.check_reports([report], 4)


def test_worker_compare_gives_new_over_old_per_scenario() -> None:
    def row(name: str, rate: float | None, median: float | None) -> dict[str, object]:
        return {"name": name, "executions_per_sec": rate, "latency_median_ms": median}

    old = {"results": [row("w.1procs", 40.0, None), row("w.wakeup", None, 500.0)]}
    new = {
        "results": [
            row("w.1procs", 100.0, None),
            row("w.wakeup", None, 5.0),
            row("w.2procs", 150.0, None),
        ]
    }
    text = worker.format_compare(old, new)
    lines = {line.split()[0]: line.split() for line in text.splitlines()[3:]}
    assert set(lines) == {"w.1procs", "w.wakeup"}
    assert lines["w.1procs"][-1] == "2.50"
    assert lines["w.wakeup"][-1] == "0.01"


def test_query_scenarios_answer_like_the_reference_and_quick_runs_skip_big_seeds() -> None:
    """Each query's first page on SQLite equals the in-memory one; --quick seeds 1k only."""
    from benchmarks import query

    wanted = {
        f"governance.query.{backend}.{name}.{size}"
        for backend in ("sqlite", "postgresql")
        for name in query.QUERIES
        for size in query.SIZES
    }
    selected = [s for s in query.scenarios() if s.name in wanted]
    query.configure(quick=True)
    try:
        outcome = run(selected, settings=QUICK, progress=io.StringIO())
    finally:
        query.configure(quick=False)
    assert outcome.failed == []
    assert {r.name for r in outcome.results} == {
        f"governance.query.sqlite.{name}.1k" for name in query.QUERIES
    }
    skipped = {s["name"] for s in outcome.skipped}
    assert skipped == wanted - {r.name for r in outcome.results}
    assert all("full runs only" in s["reason"] for s in outcome.skipped)


def test_query_seed_holds_the_mix_operators_see() -> None:
    """The seed spans every outcome path, four mutation types, ~100 states and 20 actors."""
    import anyio

    from benchmarks import query
    from mutator_governance import PendingReason, RequestStatus

    seeded = anyio.run(query.seed_requests, 1_000)
    assert len({r.request_id for r in seeded}) == 1_000
    assert {r.status for r in seeded} == {
        RequestStatus.PENDING,
        RequestStatus.APPROVED,
        RequestStatus.EXECUTED,
        RequestStatus.REJECTED,
        RequestStatus.CANCELED,
    }
    assert {r.pending_reason for r in seeded if r.status is RequestStatus.PENDING} == {
        PendingReason.APPROVAL,
        PendingReason.EXTERNAL_CHECK,
    }
    assert {r.mutation_type for r in seeded} == set(query.MUTATIONS)
    assert 90 <= len({r.state_id for r in seeded}) <= query.STATES
    assert len({r.context.actor_id for r in seeded}) == query.ACTORS
    hot = sum(r.state_id == query.HOT_STATE for r in seeded)
    assert hot >= 2 * query.PAGE


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("postgresql://pg@db/test", "postgresql://pg@db/test?schema=bench_x"),
        (
            "postgresql://pg@/test?host=/var/run/postgresql",
            "postgresql://pg@/test?host=/var/run/postgresql&schema=bench_x",
        ),
    ],
)
def test_a_benchmark_schema_joins_the_server_url_query(
    monkeypatch: pytest.MonkeyPatch, server: str, expected: str
) -> None:
    from benchmarks import governance

    monkeypatch.setattr(governance, "POSTGRES_URL", server)
    assert governance.schema_url("bench_x") == expected


def _expiry_tool(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks.expiry`` on SQLite, this tree alone, one round of one read."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.expiry",
            *("--backend", "sqlite", "--rounds", "1", "--sweeps", "1", *args),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_expiry_sweep_tool_measures_this_tree_on_sqlite_and_prints_the_table() -> None:
    """Without --base the tool runs this tree alone; a SQLite store reads its expiry index."""
    done = _expiry_tool("--sizes", "20")
    assert done.returncode == 0, done.stderr
    assert "round 1 sqlite" in done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == (
        "| backend | pending | tree | reads | wall | client CPU | server CPU | loop stall |"
    )
    assert len(lines) == 3
    assert lines[2].startswith("| sqlite | 20 | this | due() | ")
    assert " | n/a | " in lines[2]


def test_expiry_tool_times_pending_listings_with_the_loop_stall() -> None:
    """``--read pending`` lists every seeded request and reports the longest loop stall."""
    done = _expiry_tool("--read", "pending", "--sizes", "300")
    assert done.returncode == 0, done.stderr
    row = done.stdout.strip().splitlines()[2]
    assert row.startswith("| sqlite | 300 | this | pending() | ")
    assert row.endswith(" ms |"), row
