"""Command line: ``python -m benchmarks [--quick] [--filter S] [--backend B] [--compare OLD]``.

Server scenarios (PostgreSQL, Redis) run only against servers someone named, with
``--postgres URL`` / ``--redis URL`` or ``MUTATOR_TEST_POSTGRES_URL`` /
``MUTATOR_TEST_REDIS_URL``; the run prints which ones it uses. Progress goes to stderr
(one line per scenario), the results table to stdout, and the results to
``benchmarks/results/<UTC timestamp>.json``. Exit status: 0 when every selected scenario
ran or was skipped with a reason, 1 when one failed, 2 on bad arguments. The worker fleet
scenarios (``governance.worker.*``, :mod:`benchmarks.worker`) are whole runs with their
own runner and tables, run after the harness's scenarios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

SERVER_FLAGS = {"--postgres": "MUTATOR_TEST_POSTGRES_URL", "--redis": "MUTATOR_TEST_REDIS_URL"}


def _name_servers(argv: Sequence[str]) -> None:
    """Apply ``--postgres URL`` / ``--redis URL`` before the scenario modules read them."""
    for index, word in enumerate(argv):
        flag, _, value = word.partition("=")
        if flag in SERVER_FLAGS:
            if not value and index + 1 < len(argv):
                value = argv[index + 1]
            if value:
                os.environ[SERVER_FLAGS[flag]] = value


_name_servers(sys.argv[1:])

# The scenario modules read the server URLs when imported, hence after _name_servers.
from mutator_governance.stores import redact_url  # noqa: E402

from . import (  # noqa: E402
    backend_postgres,
    backend_redis,
    backend_sqlite,
    codec,
    engine,
    governance,
    instructions,
    otel,
    query,
    worker,
)
from .harness import (  # noqa: E402
    FULL,
    QUICK,
    Scenario,
    format_compare,
    format_table,
    load_run,
    profile,
    run,
    save_run,
    select,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def scenarios() -> tuple[Scenario, ...]:
    """Every registered scenario, baselines first within each group."""
    return (
        engine.SCENARIOS
        + governance.SCENARIOS
        + otel.SCENARIOS
        + codec.SCENARIOS
        + backend_sqlite.SCENARIOS
        + backend_postgres.SCENARIOS
        + backend_redis.SCENARIOS
        + query.scenarios()
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of the mutator engine and governance (see benchmarks/README.md).",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke pass: 5 operations x 3 repeats per scenario; the times mean nothing",
    )
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="SUBSTRING",
        help="run scenarios whose name contains SUBSTRING (repeatable; baselines are added)",
    )
    p.add_argument(
        "--backend",
        choices=("asyncio", "trio", "both"),
        default="asyncio",
        help="event loop; 'both' runs the engine scenarios on asyncio and trio",
    )
    p.add_argument(
        "--compare",
        type=Path,
        metavar="OLD.json",
        help="after the run, print new/old per scenario against an earlier results file",
    )
    p.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        metavar="DIR",
        help=f"where to write the results file (default {RESULTS_DIR})",
    )
    p.add_argument("--no-save", action="store_true", help="do not write a results file")
    p.add_argument(
        "--postgres",
        metavar="URL",
        help="run the PostgreSQL scenarios against this server (else MUTATOR_TEST_POSTGRES_URL)",
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        help="run the Redis scenarios against this server (else MUTATOR_TEST_REDIS_URL)",
    )
    p.add_argument("--repeats", type=int, help="timed repeats per scenario (default 9)")
    p.add_argument(
        "--markdown", action="store_true", help="print tables as Markdown (with C# references)"
    )
    p.add_argument("--list", action="store_true", help="list the selected scenarios and exit")
    p.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the timed loop of each selected scenario (no timing, no results file)",
    )
    p.add_argument("--profile-ops", type=int, default=2000, help="operations to profile")
    p.add_argument("--profile-top", type=int, default=25, help="functions to list per sort")
    p.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per operation under valgrind's callgrind (no timing)",
    )
    p.add_argument(
        "--instructions-ops",
        type=int,
        default=2000,
        metavar="N",
        help="operations counted per scenario with --instructions (default 2000)",
    )
    p.add_argument(
        "--instructions-warmup",
        type=int,
        default=50,
        metavar="N",
        help="checked operations before counting (default 50)",
    )
    # Internal: the process valgrind runs for --instructions.
    p.add_argument("--callgrind-child", metavar="SCENARIO", help=argparse.SUPPRESS)
    p.add_argument("--setup-only", action="store_true", help=argparse.SUPPRESS)
    return p


def count_instructions(args: argparse.Namespace, selected: list[Scenario]) -> int:
    """``--instructions``: callgrind counts per operation, with ratios to the baselines."""
    reason = instructions.valgrind_unavailable()
    if reason is not None:
        print(f"cannot count instructions: {reason}", file=sys.stderr)
        return 2
    if args.instructions_ops < 1 or args.instructions_warmup < 0:
        print("--instructions-ops must be >= 1 and --instructions-warmup >= 0", file=sys.stderr)
        return 2
    backend = "asyncio" if args.backend == "both" else args.backend
    counts, failed = instructions.count_scenarios(
        selected, backend=backend, ops=args.instructions_ops, warmup=args.instructions_warmup
    )
    print(instructions.format_counts(counts, markdown=args.markdown))
    print(
        f"\n{len(counts)} scenario(s), {args.instructions_ops} operations each under callgrind "
        f"({backend}); ratio = instructions per mutation / baseline's"
    )
    for failure in failed:
        print(f"FAILED {failure['name']}@{failure['backend']}: {failure['error']}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.callgrind_child is not None:
        by_name = {s.name: s for s in scenarios()}
        instructions.run_child(
            by_name[args.callgrind_child],
            backend=args.backend,
            ops=args.instructions_ops,
            warmup=args.instructions_warmup,
            setup_only=args.setup_only,
        )
        sys.stdout.flush()
        os._exit(0)  # skip interpreter teardown: its cost would depend on what the run kept
    selected = select(scenarios(), args.filter)
    fleet = worker.select(args.filter)
    if (
        args.filter
        and not fleet
        and not any(any(f in s.name for f in args.filter) for s in selected)
    ):
        print(f"no scenario matches {args.filter!r}; see --list", file=sys.stderr)
        return 2
    if args.list:
        for s in selected:
            ref = f"  [C#: {s.reference}]" if s.reference else ""
            print(f"{s.name}  (baseline {s.baseline}) — {s.summary}{ref}")
        for w in fleet:
            print(f"{w.name}  (baseline {w.baseline}) — {w.summary}")
        return 0
    for flag, variable in SERVER_FLAGS.items():
        named = os.environ.get(variable)
        name = flag.removeprefix("--")
        shown = redact_url(named) if named else f"not named (pass {flag} URL to run them)"
        print(f"{name} scenarios: {shown}", file=sys.stderr)
    if args.instructions:
        return count_instructions(args, selected)
    if args.profile:
        backend = "asyncio" if args.backend == "both" else args.backend
        wanted = [s for s in selected if not args.filter or any(f in s.name for f in args.filter)]
        print(profile(wanted, backend=backend, ops=args.profile_ops, top=args.profile_top))
        return 0
    old = None
    if args.compare is not None:
        try:
            old = load_run(args.compare)
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
    settings = QUICK if args.quick else FULL
    query.configure(quick=args.quick)
    if args.repeats is not None:
        if args.repeats < 1:
            print("--repeats must be >= 1", file=sys.stderr)
            return 2
        settings = dataclasses.replace(settings, repeats=args.repeats)
    outcome = run(selected, backend=args.backend, settings=settings, argv=argv)
    fleet_outcome = worker.run(fleet, worker.QUICK if args.quick else worker.FULL)
    if selected:
        print(format_table(outcome, markdown=args.markdown, references=args.markdown))
        print(
            f"\n{len(outcome.results)} scenario(s) in {outcome.wall_seconds:.1f} s "
            f"({settings.mode} run, {args.backend}); ratio = per-mutation time / baseline's",
        )
    if fleet:
        print(
            ("\n" if selected else "") + worker.format_tables(fleet_outcome, markdown=args.markdown)
        )
        print(
            f"\n{len(fleet_outcome.results)} worker scenario(s) (asyncio); "
            "scaling = executions/s / the 1-process run's"
        )
    skipped = outcome.skipped + fleet_outcome.skipped
    if skipped:
        print(f"skipped: {', '.join(s['name'] for s in skipped)}")
    if not args.no_save:
        path = save_run(outcome, args.results_dir)
        if fleet:
            data = json.loads(path.read_text())
            data["worker"] = fleet_outcome.to_json()
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        print(f"results: {path}")
    if old is not None:
        print()
        print(format_compare(old, outcome.to_json(), markdown=args.markdown))
        if fleet and "worker" in old:
            print()
            print(worker.format_compare(old["worker"], fleet_outcome.to_json()))
    for failure in outcome.failed:
        print(f"FAILED {failure['name']}@{failure['backend']}: {failure['error']}")
    for failure in fleet_outcome.failed:
        print(f"FAILED {failure['name']}: {failure['error']}")
    return 1 if outcome.failed or fleet_outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
