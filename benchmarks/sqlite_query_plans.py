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
import contextlib
import functools
import json
import os
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from mutator_governance import Governance

from .postgres_query_plans import (
    MIX,
    SAMPLE_ROUNDS,
    TYPES,
    ByAmount,
    _Capture,
    _Copies,
    _print_read,
    _probe_main,
    _Sample,
    _sample,
    _sample_of,
    _texts,
    registry,
)

__all__ = ["main"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _at(micros: int | None) -> datetime | None:
    return None if micros is None else _EPOCH + timedelta(microseconds=micros)


def _micros(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - _EPOCH) // timedelta(microseconds=1)


_REQUEST_COLUMNS = (
    "request_id, state_id, status, pending_reason, actor_id, created_at, updated_at, "
    "revision, document, mutation_type, due_at"
)


def _templates(conn: sqlite3.Connection) -> dict[str, list[_Sample]]:
    """The sample rows (written by governance), by outcome."""
    rows = conn.execute(f"SELECT {_REQUEST_COLUMNS} FROM requests").fetchall()
    decisions = conn.execute(
        "SELECT request_id, sequence, document FROM decisions ORDER BY request_id, sequence"
    ).fetchall()
    audit = conn.execute("SELECT state_id, execution_id, document FROM audit").fetchall()
    history = conn.execute("SELECT state_id, execution_id, document FROM history").fetchall()
    found: dict[str, list[_Sample]] = {}
    for row in rows:
        texts = _texts(row, decisions, audit, history)
        # the execution of the state's last entry (audit, then history)
        executions = [e[1] for e in (*audit, *history) if e[0] == row[1]]
        shaped = (*row[:5], _at(row[5]), _at(row[6]), row[7], row[8], row[9], _at(row[10]))
        sample = _sample_of(
            texts,
            row[0],
            row[1],
            json.loads(row[8]),
            row=shaped,
            execution_id=executions[-1] if executions else None,
        )
        found.setdefault(sample.outcome, []).append(sample)
    return found


def _fill(conn: sqlite3.Connection, total: int, progress: Callable[[str], None]) -> None:
    """Copies of the sample rows until the file holds ``total`` requests."""
    copies = _Copies(_templates(conn), total)
    for done, batch in copies.batches(20000):
        requests = []
        for copy in batch:
            row = copy.request_row()
            requests.append(
                (*row[:5], _micros(row[5]), _micros(row[6]), *row[7:10], _micros(row[10]))
            )
        decisions = [
            (c.request_id, sequence, category, _micros(stamp), text)
            for c in batch
            for sequence, category, stamp, text in c.decisions()
        ]
        executions = [(c, c.execution()) for c in batch]
        ran = [
            (c.sample.execution_id, c.state_id, _micros(e[0]), *e[1:])
            for c, e in executions
            if e is not None
        ]
        _insert(
            conn,
            requests,
            decisions,
            [(eid, state_id, at, audit) for eid, state_id, at, _, audit in ran],
            [(eid, state_id, at, history) for eid, state_id, at, history, _ in ran],
            [(c.state_id, c.request_id, c.version) for c in batch if c.version is not None],
        )
        progress(f"  inserted {done:,} / {copies.count:,} requests")
    with conn:
        conn.executemany(
            "INSERT OR REPLACE INTO states (state_id, version, request_id, document) "
            "VALUES (?, ?, NULL, ?)",
            (
                (state_id, str(version), '{"$type":"benchmark.counter","value":{"value":1}}')
                for state_id, version in copies.versions.items()
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


class _SQLiteCapture(_Capture):
    """Records the statements the store's connections run while active."""

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
    capture = _SQLiteCapture()
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

                async def explain(sql: str, params: Any) -> dict[str, Any] | None:
                    if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
                        return None
                    return _explain(conn, sql, params)

                results = await capture.explained(gov, facts, args, explain, _print)
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
    _print_read(result, (8, ms, "sql"), flags, indexes)
    if plans:
        for statement in statements:
            print("   SQL:", statement["sql"][:400])
            for line in statement["plan"]:
                print("     ", line)


def main() -> int:
    return _probe_main(
        "python -m benchmarks.sqlite_query_plans",
        run,
        (("--path",), {"default": os.path.join(tempfile.gettempdir(), "mutator-sqlite-probe.db")}),
        "do not remove the file at the end",
        "keep a file already filled",
        (("--no-analyze",), {"dest": "analyze", "action": "store_false"}),
    )


if __name__ == "__main__":
    raise SystemExit(main())
