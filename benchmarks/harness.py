"""Timing, statistics, results files and comparison for the benchmark suite.

A :class:`Scenario` builds a :class:`Fixture` (untimed) whose ``op`` is the operation to
time. For each scenario the harness runs, inside ONE ``anyio.run``:

1. calibration (full runs only): a small probe fixture times a few operations and picks
   ``K``, the number of operations per timed repeat, so that a repeat lasts about
   ``Settings.repeat_seconds``;
2. setup of a fresh fixture sized for every operation it will serve (warm-up + repeats);
   pools of pre-built objects (governance requests) are consumed one per operation;
3. warm-up rounds of ``K`` operations, each result checked by ``Fixture.check`` so a
   scenario cannot silently time an error path;
4. ``N`` repeats of a timed loop of ``K`` operations; the per-operation time of each repeat
   is recorded. After each repeat, a shorter repeat of the scenario's baseline (its own
   fixture, set up in the same event loop) is timed, so each repeat has a paired baseline
   measured moments later on the same machine state.

The report gives the median of the repeat values and their spread (quartiles and
min/max), and the median of the per-repeat ratios to the paired baseline (per mutation,
see :attr:`Scenario.mutations`): the number that holds on a noisy machine. Every baseline
also runs as a scenario of its own in the same process.
"""

from __future__ import annotations

import contextlib
import cProfile
import gc
import io
import itertools
import json
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import anyio

__all__ = [
    "BACKENDS",
    "FULL",
    "QUICK",
    "SCHEMA",
    "Fixture",
    "Measurement",
    "Result",
    "Run",
    "Scenario",
    "Settings",
    "Summary",
    "backend_unavailable",
    "compare",
    "format_compare",
    "format_table",
    "load_run",
    "measure",
    "paired_ratios",
    "plan",
    "profile",
    "quartiles",
    "run",
    "save_run",
    "select",
    "summarize",
]

SCHEMA = 1
"""Version of the results file layout; bump it when keys change meaning."""

BACKENDS = ("asyncio", "trio")

Op = Callable[[], Any]
"""One operation: called with no arguments; returns an awaitable unless the fixture is sync."""


# -- scenarios ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fixture:
    """What a scenario's setup built: the operation to time and how to check and close it.

    ``op`` is called once per timed operation. With ``is_async`` (the default) it returns
    an awaitable (an ``async def`` or a :func:`functools.partial` of one, to avoid a wrapper
    frame); otherwise it is a plain call, timed in a plain loop. ``check`` validates the
    result of every warm-up operation (raise to fail the scenario). ``close`` releases
    resources (connections, servers) after the scenario.
    """

    op: Op
    check: Callable[[Any], None] | None = None
    close: Callable[[], Awaitable[None]] | None = None
    is_async: bool = True


Setup = Callable[[int], Awaitable[Fixture]]
"""Builds a fresh fixture able to serve the given number of operations (untimed)."""


def always_available() -> str | None:
    """Availability check of scenarios that need nothing outside the process."""
    return None


@dataclass(frozen=True, slots=True)
class Scenario:
    """One benchmark: a name, its baseline's name and how to build its fixture.

    ``mutations`` is how many mutations one operation runs (a batch of 10 runs 10, eight
    parallel executions run 8); ratios are taken per mutation so a batch compares with a
    single direct call. ``reference`` is the published figure of the C# reference's
    matching benchmark, if any. ``engine`` scenarios run on every backend with
    ``--backend both``. ``unavailable`` returns a one-line reason to skip the scenario
    (a store server that is not reachable), or None.
    """

    name: str
    baseline: str
    setup: Setup
    summary: str
    mutations: int = 1
    reference: str | None = None
    engine: bool = False
    unavailable: Callable[[], str | None] = always_available


@dataclass(frozen=True, slots=True)
class Settings:
    """How long and how often to time each scenario."""

    repeats: int = 9
    warmup_rounds: int = 2
    repeat_seconds: float = 0.04
    min_ops: int = 10
    max_ops: int = 20_000
    probe_ops: int = 16
    fixed_ops: int | None = None

    @property
    def mode(self) -> str:
        return "quick" if self.fixed_ops is not None else "full"


FULL = Settings()
QUICK = Settings(repeats=3, warmup_rounds=1, fixed_ops=5)


# -- statistics ---------------------------------------------------------------------------


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile (inclusive method, as in spreadsheets)."""
    if not values:
        raise ValueError("quartiles of an empty sequence")
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, statistics.median(values), q3


@dataclass(frozen=True, slots=True)
class Summary:
    """Median and spread of per-operation times (µs), one value per timed repeat."""

    median: float
    q1: float
    q3: float
    minimum: float
    maximum: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def iqr_pct(self) -> float:
        """The interquartile range as a percentage of the median."""
        return 100.0 * self.iqr / self.median if self.median else 0.0


def summarize(values: Sequence[float]) -> Summary:
    """Summarize per-operation times of the repeats."""
    q1, median, q3 = quartiles(values)
    return Summary(median, q1, q3, min(values), max(values))


# -- measuring ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measurement:
    """Raw outcome of timing one scenario: µs/op per repeat, and of its paired baseline.

    ``baseline_us[i]`` was timed right after ``repeats_us[i]`` in the same event loop, so
    both saw the same machine; ``None`` when the scenario is its own baseline or its
    baseline could not run.
    """

    ops_per_repeat: int
    repeats_us: tuple[float, ...]
    baseline_ops: int = 0
    baseline_us: tuple[float, ...] | None = None


async def _timed_async(op: Op, ops: int) -> float:
    clock = time.perf_counter_ns
    start = clock()
    for _ in itertools.repeat(None, ops):
        await op()
    return (clock() - start) / ops / 1000.0


def _timed_sync(op: Op, ops: int) -> float:
    clock = time.perf_counter_ns
    start = clock()
    for _ in itertools.repeat(None, ops):
        op()
    return (clock() - start) / ops / 1000.0


async def _timed(fixture: Fixture, ops: int) -> float:
    if fixture.is_async:
        return await _timed_async(fixture.op, ops)
    return _timed_sync(fixture.op, ops)


async def _checked(fixture: Fixture, ops: int) -> None:
    """Run ``ops`` operations untimed, checking each result."""
    for _ in range(ops):
        outcome = fixture.op()
        if fixture.is_async:
            outcome = await outcome
        if fixture.check is not None:
            fixture.check(outcome)


async def _close(fixture: Fixture) -> None:
    if fixture.close is not None:
        with anyio.CancelScope(shield=True):
            await fixture.close()


async def _calibrate(scenario: Scenario, settings: Settings, seconds: float) -> int:
    """Pick operations per repeat from a probe fixture (first operation untimed)."""
    if settings.fixed_ops is not None:
        return settings.fixed_ops
    probe = await scenario.setup(settings.probe_ops)
    try:
        await _checked(probe, 1)
        per_op_us = await _timed(probe, settings.probe_ops - 1)
    finally:
        await _close(probe)
    wanted = int(seconds * 1e6 / max(per_op_us, 1e-3))
    return max(settings.min_ops, min(settings.max_ops, wanted))


async def measure(
    scenario: Scenario, settings: Settings, baseline: Scenario | None = None
) -> Measurement:
    """Calibrate, set up, warm up and time one scenario (call inside an event loop).

    With a ``baseline``, its fixture is set up in the same event loop and one shorter
    repeat of it (a quarter of the scenario's repeat time) is timed after each repeat of
    the scenario: the ratio is then taken between measurements made moments apart.
    """
    rounds = settings.warmup_rounds + settings.repeats
    ops = await _calibrate(scenario, settings, settings.repeat_seconds)
    base_ops = 0
    if baseline is not None:
        base_ops = await _calibrate(baseline, settings, settings.repeat_seconds / 4)
    times: list[float] = []
    base_times: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        fixture = await scenario.setup(ops * rounds)
        stack.push_async_callback(_close, fixture)
        paired = None
        if baseline is not None:
            paired = await baseline.setup(base_ops * rounds)
            stack.push_async_callback(_close, paired)
        # Setup objects (pools, seeded stores) are moved out of the collector's view so
        # that a big pool does not make the collections during the timed loops slower.
        gc.collect()
        gc.freeze()
        try:
            for _ in range(settings.warmup_rounds):
                await _checked(fixture, ops)
                if paired is not None:
                    await _checked(paired, base_ops)
            for _ in range(settings.repeats):
                gc.collect()
                times.append(await _timed(fixture, ops))
                if paired is not None:
                    gc.collect()
                    base_times.append(await _timed(paired, base_ops))
        finally:
            gc.unfreeze()
    return Measurement(
        ops, tuple(times), base_ops, tuple(base_times) if baseline is not None else None
    )


def backend_unavailable(backend: str) -> str | None:
    """A one-line reason why ``backend`` cannot run here, or None."""
    if backend == "trio":
        try:
            import trio  # noqa: F401
        except ImportError:
            return "trio is not installed (pip install trio)"
    return None


# -- selecting and running -----------------------------------------------------------------


def select(scenarios: Sequence[Scenario], filters: Sequence[str] = ()) -> list[Scenario]:
    """Scenarios whose name contains any of ``filters`` (all without), plus their baselines.

    Registry order is kept. Raises KeyError when a scenario names an unknown baseline.
    """
    by_name = {s.name: s for s in scenarios}
    wanted = {s.name for s in scenarios if not filters or any(f in s.name for f in filters)}
    pending = list(wanted)
    while pending:
        name = pending.pop()
        baseline = by_name[name].baseline
        if baseline not in by_name:
            raise KeyError(f"scenario {name!r} names unknown baseline {baseline!r}")
        if baseline not in wanted:
            wanted.add(baseline)
            pending.append(baseline)
    return [s for s in scenarios if s.name in wanted]


def plan(scenarios: Sequence[Scenario], backend: str) -> list[tuple[Scenario, str]]:
    """(scenario, backend) pairs to run; ``both`` runs engine scenarios on every backend."""
    if backend != "both":
        return [(s, backend) for s in scenarios]
    pairs = [(s, BACKENDS[0]) for s in scenarios]
    pairs += [(s, b) for b in BACKENDS[1:] for s in scenarios if s.engine]
    return pairs


@dataclass(frozen=True, slots=True)
class Result:
    """One timed scenario on one backend, with its ratio to its baseline.

    ``ratio`` is the median over repeats of (scenario µs per mutation) / (paired baseline
    µs per mutation), ``ratio_q1``/``ratio_q3`` its quartiles; ``paired_baseline_us`` the
    median of the baseline repeats timed alongside. All None when the baseline could not
    run; 1.0 for a scenario that is its own baseline.
    """

    name: str
    backend: str
    baseline: str
    summary_text: str
    mutations: int
    reference: str | None
    ops_per_repeat: int
    repeats_us: tuple[float, ...]
    stats: Summary
    load1: float | None = None
    ratio: float | None = None
    ratio_q1: float | None = None
    ratio_q3: float | None = None
    paired_baseline_us: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.backend)

    @property
    def ops_per_sec(self) -> float:
        return 1e6 / self.stats.median if self.stats.median else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "baseline": self.baseline,
            "summary": self.summary_text,
            "mutations": self.mutations,
            "reference": self.reference,
            "ops_per_repeat": self.ops_per_repeat,
            "repeats_us": list(self.repeats_us),
            "median_us": self.stats.median,
            "q1_us": self.stats.q1,
            "q3_us": self.stats.q3,
            "min_us": self.stats.minimum,
            "max_us": self.stats.maximum,
            "iqr_pct": self.stats.iqr_pct,
            "ops_per_sec": self.ops_per_sec,
            "ratio": self.ratio,
            "ratio_q1": self.ratio_q1,
            "ratio_q3": self.ratio_q3,
            "paired_baseline_us": self.paired_baseline_us,
            "load1": self.load1,
        }


def paired_ratios(
    measured: Measurement, mutations: int, baseline_mutations: int
) -> tuple[float, float, float] | None:
    """Quartiles (q1, median, q3) of the per-repeat, per-mutation ratios to the baseline."""
    if not measured.baseline_us:
        return None
    per = [
        (t / mutations) / (b / baseline_mutations)
        for t, b in zip(measured.repeats_us, measured.baseline_us, strict=True)
        if b > 0
    ]
    return quartiles(per) if per else None


@dataclass(slots=True)
class Run:
    """Everything one invocation measured, skipped or failed."""

    settings: Settings
    backend: str
    results: list[Result] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    wall_seconds: float = 0.0
    argv: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        """Whether labels carry the backend (several backends in one run)."""
        return len({r.backend for r in self.results}) > 1 or self.backend == "both"

    def label(self, name: str, backend: str) -> str:
        return f"{name}@{backend}" if self.labelled else name

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "created_at": self.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "mode": self.settings.mode,
            "backend": self.backend,
            "argv": self.argv,
            "wall_seconds": round(self.wall_seconds, 3),
            "settings": {
                "repeats": self.settings.repeats,
                "warmup_rounds": self.settings.warmup_rounds,
                "repeat_seconds": self.settings.repeat_seconds,
                "min_ops": self.settings.min_ops,
                "max_ops": self.settings.max_ops,
                "fixed_ops": self.settings.fixed_ops,
            },
            "machine": machine(),
            "results": [r.to_json() for r in self.results],
            "skipped": self.skipped,
            "failed": self.failed,
        }


def _load1() -> float | None:
    """The 1-minute load average (how busy the machine was), where the OS reports it."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def format_us(value: float) -> str:
    """µs with about three significant digits."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.1f}"
    if value >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


def run(
    scenarios: Sequence[Scenario],
    *,
    backend: str = "asyncio",
    settings: Settings = FULL,
    progress: TextIO | None = None,
    argv: Sequence[str] = (),
) -> Run:
    """Run ``scenarios`` (each in its own event loop, paired with its baseline)."""
    out = progress if progress is not None else sys.stderr
    outcome = Run(settings, backend, argv=list(argv))
    by_name = {s.name: s for s in scenarios}
    pairs = plan(scenarios, backend)
    width = len(str(len(pairs)))
    started = time.perf_counter()
    for index, (scenario, on) in enumerate(pairs, 1):
        label = outcome.label(scenario.name, on)
        print(f"[{index:>{width}}/{len(pairs)}] {label} ... ", end="", file=out, flush=True)
        reason = scenario.unavailable() or backend_unavailable(on)
        if reason is not None:
            print(f"skipped: {reason}", file=out, flush=True)
            outcome.skipped.append({"name": scenario.name, "backend": on, "reason": reason})
            continue
        baseline = by_name.get(scenario.baseline)
        if baseline is scenario or (baseline is not None and baseline.unavailable()):
            baseline = None
        began = time.perf_counter()
        try:
            measured = anyio.run(measure, scenario, settings, baseline, backend=on)
        except Exception as error:
            print(f"FAILED: {type(error).__name__}: {error}", file=out, flush=True)
            outcome.failed.append(
                {"name": scenario.name, "backend": on, "error": f"{type(error).__name__}: {error}"}
            )
            continue
        stats = summarize(measured.repeats_us)
        if scenario.baseline == scenario.name:
            ratios: tuple[float, float, float] | None = (1.0, 1.0, 1.0)
        elif baseline is not None:
            ratios = paired_ratios(measured, scenario.mutations, baseline.mutations)
        else:
            ratios = None
        shown = "—" if ratios is None else f"{ratios[1]:.2f}"
        print(
            f"{format_us(stats.median)} µs  ratio {shown}  (±{stats.iqr_pct / 2:.1f}%, "
            f"{measured.ops_per_repeat} ops x {len(measured.repeats_us)}, "
            f"{time.perf_counter() - began:.1f} s)",
            file=out,
            flush=True,
        )
        outcome.results.append(
            Result(
                scenario.name,
                on,
                scenario.baseline,
                scenario.summary,
                scenario.mutations,
                scenario.reference,
                measured.ops_per_repeat,
                measured.repeats_us,
                stats,
                _load1(),
                ratio=None if ratios is None else ratios[1],
                ratio_q1=None if ratios is None else ratios[0],
                ratio_q3=None if ratios is None else ratios[2],
                paired_baseline_us=(
                    statistics.median(measured.baseline_us) if measured.baseline_us else None
                ),
            )
        )
    outcome.wall_seconds = time.perf_counter() - started
    return outcome


# -- reporting -----------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    align = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = [headers, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _ratio_text(r: Result) -> str:
    if r.ratio is None:
        return "—"
    if r.ratio_q1 is None or r.ratio_q3 is None or r.baseline == r.name:
        return f"{r.ratio:.2f}"
    return f"{r.ratio:.2f} ({r.ratio_q1:.2f}-{r.ratio_q3:.2f})"


def format_table(outcome: Run, *, markdown: bool = False, references: bool = False) -> str:
    """The results table: median µs/op, spread, ops/s and ratio to baseline (per mutation)."""
    headers = ["scenario", "baseline", "median µs/op", "spread µs (q1-q3, ±IQR/2)", "ops/s"]
    headers.append("ratio (q1-q3)")
    if references:
        headers.append("reference (C#, µs)")
    rows = []
    for r in outcome.results:
        s = r.stats
        row = [
            outcome.label(r.name, r.backend),
            outcome.label(r.baseline, r.backend),
            format_us(s.median),
            f"{format_us(s.q1)}-{format_us(s.q3)} (±{s.iqr_pct / 2:.1f}%)",
            f"{r.ops_per_sec:,.0f}",
            _ratio_text(r),
        ]
        if references:
            row.append(r.reference or "")
        rows.append(row)
    if not rows:
        return "(no results)"
    render = _markdown if markdown else _table
    return render(headers, rows, {2, 4, 5})


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": None,
        "memory_total_kb": None,
        "loadavg": None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_total_kb"] = int(line.split()[1])
                break
    except OSError:
        pass
    with contextlib.suppress(OSError):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return info


def save_run(outcome: Run, directory: Path) -> Path:
    """Write ``<UTC timestamp>.json`` into ``directory`` (never overwriting) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = outcome.created_at.strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{stem}.json"
    for n in itertools.count(2):
        if not path.exists():
            break
        path = directory / f"{stem}-{n}.json"
    path.write_text(json.dumps(outcome.to_json(), indent=2, ensure_ascii=False) + "\n")
    return path


def load_run(path: Path) -> dict[str, Any]:
    """Read a results file written by :func:`save_run` (ValueError when it is not one)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read results file {path}: {error}") from error
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a schema-{SCHEMA} benchmark results file")
    return data


@dataclass(frozen=True, slots=True)
class Comparison:
    """One scenario measured in an old and a new run."""

    name: str
    backend: str
    old_us: float
    new_us: float
    old_ratio: float | None
    new_ratio: float | None

    @property
    def change(self) -> float:
        """new/old of the medians (raw; sensitive to machine load)."""
        return self.new_us / self.old_us

    @property
    def relative_change(self) -> float | None:
        """new/old of the ratios to baseline (the load-independent signal)."""
        if not self.old_ratio or self.new_ratio is None:
            return None
        return self.new_ratio / self.old_ratio


def compare(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> tuple[list[Comparison], list[str], list[str]]:
    """Scenarios in both runs, names only in the new one, names only in the old one."""

    def index(data: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
        return {(r["name"], r["backend"]): r for r in data.get("results", ())}

    before, after = index(old), index(new)
    both = [
        Comparison(
            key[0],
            key[1],
            float(before[key]["median_us"]),
            float(r["median_us"]),
            before[key].get("ratio"),
            r.get("ratio"),
        )
        for key, r in after.items()
        if key in before
    ]
    only_new = [f"{n}@{b}" for (n, b) in after if (n, b) not in before]
    only_old = [f"{n}@{b}" for (n, b) in before if (n, b) not in after]
    return both, only_new, only_old


def format_compare(
    old: Mapping[str, Any], new: Mapping[str, Any], *, markdown: bool = False
) -> str:
    """A table of new/old per scenario, raw and relative to each run's baseline."""
    rows_, only_new, only_old = compare(old, new)
    labelled = len({c.backend for c in rows_}) > 1
    headers = ["scenario", "old µs/op", "new µs/op", "new/old", "new/old vs baseline"]
    rows = [
        [
            f"{c.name}@{c.backend}" if labelled else c.name,
            format_us(c.old_us),
            format_us(c.new_us),
            f"{c.change:.2f}",
            "—" if c.relative_change is None else f"{c.relative_change:.2f}",
        ]
        for c in rows_
    ]
    head = (
        f"compared with {old.get('created_at', '?')} ({old.get('mode', '?')} run) — "
        "new/old < 1 is faster; 'vs baseline' divides out machine load"
    )
    parts = [head, (_markdown if markdown else _table)(headers, rows, {1, 2, 3, 4})]
    if not rows:
        parts[1] = "(no scenario in common)"
    if only_new:
        parts.append(f"not in the old run: {', '.join(only_new)}")
    if only_old:
        parts.append(f"not in this run: {', '.join(only_old)}")
    return "\n".join(parts)


# -- profiling -----------------------------------------------------------------------------


async def _profiled(scenario: Scenario, ops: int, top: int) -> str:
    fixture = await scenario.setup(ops + min(ops, 100))
    profiler = cProfile.Profile()
    try:
        await _checked(fixture, min(ops, 100))
        gc.collect()
        profiler.enable()
        await _timed(fixture, ops)
        profiler.disable()
    finally:
        await _close(fixture)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.strip_dirs()
    text.write(f"== {scenario.name}: {ops} operations, top {top} by cumulative time ==\n")
    stats.sort_stats("cumulative").print_stats(top)
    text.write(f"== {scenario.name}: top {top} by own time ==\n")
    stats.sort_stats("tottime").print_stats(top)
    return text.getvalue()


def profile(scenarios: Iterable[Scenario], *, backend: str, ops: int, top: int) -> str:
    """cProfile the timed loop of each scenario (setup and warm-up excluded)."""
    return "\n".join(
        anyio.run(_profiled, scenario, ops, top, backend=backend) for scenario in scenarios
    )
