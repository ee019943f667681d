"""SQLite operator queries on a large history: fill a store file, explain every read.

``python -m benchmarks.sqlite_query_plans`` fills a SQLite store file (``--path``, default
a temporary file, removed at the end unless ``--keep``) with ``--requests`` requests
(default 200,000) in the mix of a service that has run for a year, the same mix as
:mod:`benchmarks.postgres_query_plans`: a sample of 216 requests written through
``Governance`` (submit / approve / reject / cancel / expire / execute), every other row a
copy of a sample row of the same outcome with a fresh request id, state id and requester
and every timestamp shifted (documents included), inserted with raw SQL in the store's
own row shape; then ``ANALYZE`` (``--no-analyze`` leaves the file as the store leaves it:
the store never analyses).

Then every read of the PostgreSQL probe runs once to warm up and once with the driver
wrapped (``sqlite3.connect`` hands out connections whose ``execute`` records each
statement), and each statement it sent is run again under ``EXPLAIN QUERY PLAN`` and
timed on a connection of its own. Printed per read: the call's wall time, the statements'
time, ``SCAN`` when a plan reads a whole table (or walks a whole index), ``SORT`` when it
sorts, and the indexes it searches. ``--json PATH`` writes the same as JSON; ``--only``
runs the reads whose names contain a word; ``--reuse`` keeps a file already filled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from mutator_governance import Governance

from .postgres_query_plans import (
    MIX,
    NOW,
    SAMPLE_ROUNDS,
    TYPES,
    ByAmount,
    _build,
    _created,
    _moved,
    _outcome,
    _reads,
    _sample,
    _size,
    _split,
    registry,
)

__all__ = ["main"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATES = 20000
_ACTORS = 2000


def _at(micros: int | None) -> datetime | None:
    return None if micros is None else _EPOCH + timedelta(microseconds=micros)


def _micros(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - _EPOCH) // timedelta(microseconds=1)


@attrs.frozen
class _Template:
    """A sample request with its rows, split where a copy differs."""

    outcome: str
    created: datetime
    row: tuple[Any, ...]
    pieces: dict[str, list[str]]
    stamps: tuple[datetime, ...]
    execution_id: str | None


_REQUEST_COLUMNS = (
    "request_id, state_id, status, pending_reason, actor_id, created_at, updated_at, "
    "revision, document, mutation_type, due_at"
)


def _templates(conn: sqlite3.Connection) -> dict[str, list[_Template]]:
    """The sample rows (written by governance), by outcome."""
    rows = conn.execute(f"SELECT {_REQUEST_COLUMNS} FROM requests").fetchall()
    decisions = conn.execute(
        "SELECT request_id, sequence, document FROM decisions ORDER BY request_id, sequence"
    ).fetchall()
    audit = conn.execute("SELECT state_id, execution_id, document FROM audit").fetchall()
    history = conn.execute("SELECT state_id, execution_id, document FROM history").fetchall()
    found: dict[str, list[_Template]] = {}
    for row in rows:
        rid, state_id = row[0], row[1]
        texts = {"request": row[8]}
        for d in decisions:
            if d[0] == rid:
                texts[f"d{d[1]}"] = d[2]
        execution_id = None
        for kind, entries in (("audit", audit), ("history", history)):
            for e in entries:
                if e[0] == state_id:
                    texts[kind] = e[2]
                    execution_id = e[1]
        pieces = {key: _split(text, rid, state_id) for key, text in texts.items()}
        stamps = sorted(
            {
                datetime.fromisoformat(p[1:])
                for ps in pieces.values()
                for p in ps[1::2]
                if p[0] == "t"
            }
        )
        shaped = (*row[:5], _at(row[5]), _at(row[6]), row[7], row[8], row[9], _at(row[10]))
        created = _at(row[5])
        assert created is not None
        found.setdefault(_outcome(json.loads(row[8])), []).append(
            _Template(
                _outcome(json.loads(row[8])), created, shaped, pieces, tuple(stamps), execution_id
            )
        )
    return found


def _fill(conn: sqlite3.Connection, total: int, progress: Callable[[str], None]) -> None:
    """Copies of the sample rows until the file holds ``total`` requests."""
    templates = _templates(conn)
    have = sum(len(t) for t in templates.values())
    rng = random.Random(20261204)
    outcomes = [o for o, _ in MIX]
    weights = [w for _, w in MIX]
    by_type: dict[str, dict[str, list[_Template]]] = {}
    for outcome, items in templates.items():
        for t in items:
            by_type.setdefault(outcome, {}).setdefault(t.row[9], []).append(t)
    type_names = [name for _, name, _ in TYPES]
    type_weights = [w for _, _, w in TYPES]
    versions: dict[str, int] = {}
    requests: list[tuple[Any, ...]] = []
    decisions: list[tuple[Any, ...]] = []
    audit: list[tuple[Any, ...]] = []
    history: list[tuple[Any, ...]] = []
    state_versions: list[tuple[Any, ...]] = []
    count = total - have
    for n in range(count):
        outcome = rng.choices(outcomes, weights)[0]
        mutation_type = rng.choices(type_names, type_weights)[0]
        t = rng.choice(by_type[outcome].get(mutation_type) or templates[outcome])
        rid = uuid.uuid4().hex
        busy = rng.random() < 0.3  # a few busy states and requesters, a long tail
        state_id = f"tenant-{rng.randrange(200 if busy else _STATES)}:counter"
        actor = f"user-{rng.randrange(50 if rng.random() < 0.3 else _ACTORS)}"
        created = _created(outcome, rng)
        shift = created - t.created
        delay = timedelta(seconds=rng.uniform(0, 4 * 3600)) if outcome != "pending" else timedelta()
        moved = functools.partial(_moved, submitted=t.created, shift=shift, delay=delay)
        stamps = {stamp.isoformat(): moved(stamp).isoformat() for stamp in t.stamps}
        row = t.row
        requests.append(
            (
                rid,
                state_id,
                row[2],
                row[3],
                actor,
                _micros(moved(row[5])),
                _micros(moved(row[6])),
                row[7],
                _build(t.pieces["request"], rid, state_id, actor, stamps),
                row[9],
                None if row[10] is None else _micros(moved(row[10])),
            )
        )
        for key, pieces in t.pieces.items():
            if key.startswith("d"):
                text = _build(pieces, rid, state_id, actor, stamps)
                data = json.loads(text)
                stamp = datetime.fromisoformat(data["timestamp"])
                decisions.append(
                    (rid, int(key[1:]), data["code"]["category"], _micros(stamp), text)
                )
        if "history" in t.pieces:
            executed = _build(t.pieces["history"], rid, state_id, actor, stamps)
            at = _micros(datetime.fromisoformat(json.loads(executed)["executed_at"]))
            history.append((t.execution_id, state_id, at, executed))
            entry = _build(t.pieces["audit"], rid, state_id, actor, stamps)
            audit.append((t.execution_id, state_id, at, entry))
            versions[state_id] = versions.get(state_id, 1) + 1
            state_versions.append((state_id, rid, str(versions[state_id])))
        if len(requests) >= 20000 or n == count - 1:
            _insert(conn, requests, decisions, audit, history, state_versions)
            progress(f"  inserted {n + 1:,} / {count:,} requests")
            requests, decisions, audit, history, state_versions = [], [], [], [], []
    with conn:
        conn.executemany(
            "INSERT OR REPLACE INTO states (state_id, version, request_id, document) "
            "VALUES (?, ?, NULL, ?)",
            (
                (state_id, str(version), '{"$type":"benchmark.counter","value":{"value":1}}')
                for state_id, version in versions.items()
            ),
        )


def _insert(conn: sqlite3.Connection, *tables: list[tuple[Any, ...]]) -> None:
    requests, decisions, audit, history, state_versions = tables
    history.sort(key=lambda r: r[2])  # appended in execution order
    audit.sort(key=lambda r: r[2])
    decisions.sort(key=lambda r: r[3])
    requests.sort(key=lambda r: r[5])
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO requests ({_REQUEST_COLUMNS}) VALUES ({', '.join('?' * 11)})", requests
    )
    conn.executemany(
        "INSERT INTO decisions (request_id, sequence, category, timestamp, document) "
        "VALUES (?, ?, ?, ?, ?)",
        decisions,
    )
    for table, rows in (("audit", audit), ("history", history)):
        conn.executemany(
            f"INSERT INTO {table} (execution_id, state_id, executed_at, document) "
            "VALUES (?, ?, ?, ?)",
            rows,
        )
    conn.executemany(
        "INSERT OR REPLACE INTO state_versions (state_id, request_id, version) VALUES (?, ?, ?)",
        state_versions,
    )
    conn.execute("COMMIT")


# -- capture and explain ---------------------------------------------------------------------


class _Capture:
    """Records the statements the store's connections run while active."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []
        self.active = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        capture = self

        class Recording(sqlite3.Connection):
            def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
                if capture.active:
                    capture.statements.append((sql, tuple(parameters)))
                return super().execute(sql, parameters)

        original = sqlite3.connect
        sqlite3.connect = functools.partial(original, factory=Recording)  # type: ignore[assignment]
        try:
            yield
        finally:
            sqlite3.connect = original


_SCAN = re.compile(r"\bSCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?")
_INDEX = re.compile(r"USING (?:COVERING |PRIMARY KEY|INTEGER PRIMARY KEY)?\s*(?:INDEX )?(\w+)?")


def _explain(conn: sqlite3.Connection, sql: str, params: Any) -> dict[str, Any]:
    """The statement's plan (``EXPLAIN QUERY PLAN``) and its time run again on ``conn``."""
    plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    started = time.perf_counter()
    rows = len(conn.execute(sql, params).fetchall())
    ms = (time.perf_counter() - started) * 1000
    scans = []
    for line in plan:
        found = _SCAN.search(line)
        if found and found.group(1) not in ("CONSTANT", "merged", "q", "c"):
            scans.append(found.group(1) + (f" by {found.group(2)}" if found.group(2) else ""))
    indexes = sorted(
        {
            m.group(1)
            for line in plan
            if "SEARCH" in line
            for m in [_INDEX.search(line)]
            if m and m.group(1)
        }
    )
    sort = any("TEMP B-TREE" in line for line in plan)
    return {"plan": plan, "ms": ms, "rows": rows, "scans": scans, "indexes": indexes, "sort": sort}


async def _facts(conn: sqlite3.Connection) -> dict[str, Any]:
    """Ids and positions the reads ask for (a busy requester, a busy state, ...)."""

    def one(sql: str) -> Any:
        return conn.execute(sql).fetchone()

    actor = one("SELECT actor_id FROM requests GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")[0]
    rare = one(
        "SELECT actor_id FROM requests GROUP BY 1 HAVING count(*) BETWEEN 20 AND 60 "
        "ORDER BY 1 LIMIT 1"
    )[0]
    state = one("SELECT state_id FROM requests GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")[0]
    rid = one("SELECT request_id FROM requests WHERE status = 'executed' LIMIT 1")[0]
    micros, deep_id = one(
        "SELECT created_at, request_id FROM requests ORDER BY created_at, request_id "
        "LIMIT 1 OFFSET (SELECT count(*) * 3 / 4 FROM requests)"
    )
    at = _at(micros)
    return {
        "actor": actor,
        "rare_actor": rare,
        "state_id": state,
        "request_id": rid,
        "deep": (at, deep_id),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    path = args.path
    filled = args.reuse and os.path.exists(path)  # noqa: ASYNC240 (before any read runs)
    if not filled:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)
    url = f"sqlite:///{path}"
    capture = _Capture()
    results: list[dict[str, Any]] = []
    with capture.installed():
        async with Governance.open(url, registry=registry()) as gov:
            gov.engine.register_policy(ByAmount())
            if not filled:
                started = time.perf_counter()
                sample = SAMPLE_ROUNDS * len(TYPES) * len(MIX)
                progress(f"sample through the write path ({sample} requests)")
                await _sample(gov)
                conn = sqlite3.connect(path, isolation_level=None, timeout=30)
                try:
                    conn.execute("PRAGMA synchronous = OFF")
                    progress(f"raw inserts up to {args.requests:,} requests")
                    _fill(conn, args.requests, progress)
                    if args.analyze:
                        progress("ANALYZE")
                        conn.execute("ANALYZE")
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    conn.close()
                progress(f"filled in {time.perf_counter() - started:.0f} s")
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                for table in ("requests", "decisions", "audit", "history", "states"):
                    count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    progress(f"  {table}: {count:,} rows")
                size = os.path.getsize(path)  # noqa: ASYNC240 (between reads, not timed)
                progress(f"  file: {size / 2**20:,.0f} MiB")
                facts = await _facts(conn)
                for name, read in _reads(facts):
                    if args.only and not any(word in name for word in args.only):
                        continue
                    await read(gov)  # warm: pages in the cache
                    capture.statements.clear()
                    capture.active = True
                    started = time.perf_counter()
                    out = await read(gov)
                    wall = (time.perf_counter() - started) * 1000
                    capture.active = False
                    explained = []
                    for sql, params in capture.statements:
                        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
                            continue
                        explained.append({"sql": sql, **_explain(conn, sql, params)})
                    results.append(
                        {"read": name, "wall_ms": wall, "rows": _size(out), "statements": explained}
                    )
                    _print(results[-1], args.plans)
            finally:
                conn.close()
    if not args.keep and not args.reuse:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)
        progress(f"removed {path}")
    return results


def _print(result: dict[str, Any], plans: bool) -> None:
    statements = result["statements"]
    flags = sorted(
        {f"SCAN {scan}" for st in statements for scan in st["scans"]}
        | ({"SORT"} if any(st["sort"] for st in statements) else set())
    )
    ms = sum(st["ms"] for st in statements)
    indexes = sorted({i for st in statements for i in st["indexes"]})
    print(
        f"{result['read']:<44} {result['wall_ms']:>8.1f} ms wall {ms:>8.1f} ms sql "
        f"{len(statements):>3} stmt rows={result['rows']} {' '.join(flags)} "
        f"[{', '.join(indexes)}]",
        flush=True,
    )
    if plans:
        for statement in statements:
            print("   SQL:", statement["sql"][:400])
            for line in statement["plan"]:
                print("     ", line)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sqlite_query_plans")
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument(
        "--path", default=os.path.join(tempfile.gettempdir(), "mutator-sqlite-probe.db")
    )
    parser.add_argument("--keep", action="store_true", help="do not remove the file at the end")
    parser.add_argument("--reuse", action="store_true", help="keep a file already filled")
    parser.add_argument("--no-analyze", dest="analyze", action="store_false")
    parser.add_argument("--only", nargs="*", default=[], help="reads whose names contain a word")
    parser.add_argument("--plans", action="store_true", help="print every plan")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {"at": NOW.isoformat(), "requests": args.requests, "reads": results},
                out,
                indent=1,
                default=str,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
