"""PostgreSQL operator queries on a large history: fill a schema, explain every read.

``python -m benchmarks.postgres_query_plans`` fills a private schema of the server named
by ``MUTATOR_TEST_POSTGRES_URL`` (``--schema``, default ``scale_probe``; dropped at the end
unless ``--keep``) with ``--requests`` requests (default 200,000) in the mix of a service
that has run for a year: about 98 % terminal, a few thousand PENDING / APPROVED, 2,000
requesters, 20,000 states, created over 365 days, with their decisions, audit and history
entries. A sample of 216 requests is written through the store's own write path
(``Governance`` submit / approve / reject / cancel / expire / execute); every other row
is a copy of a sample row of the same status with a fresh request id, state id and
requester and every timestamp shifted (documents included), sent with ``COPY``; then
``VACUUM ANALYZE``.

Then every read the store offers an operator (listings with each filter and several
combinations, a cursor deep into the result, the inbox, approval and decision views,
decision, audit and history reads, the worker's reservation, the expiry sweep and a purge
batch) runs once through the store with its statements captured (the driver wrapped), and
each statement is run again under ``auto_explain`` (``ANALYZE``, ``BUFFERS``, nested
statements included, inside a transaction rolled back). Printed per read: the call's
wall time, each statement's server time and what its plan does (``seq`` a sequential
scan, ``sort`` a sort and how many rows it sorted, the indexes it used). ``--json PATH``
writes the same as JSON; ``--only`` runs the reads whose names contain a word;
``--reuse`` skips the fill when the schema already holds it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import random
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import attrs

from mutator import (
    MutationContext,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
)
from mutator_governance import (
    ApprovalQuery,
    DecisionCategory,
    DecisionQuery,
    Governance,
    MutationRegistry,
    PendingReason,
    RequestQuery,
    RequestStatus,
)

from .engine import Counter, IncrementCounter
from .governance import POSTGRES_URL, _server_unavailable, schema_url

__all__ = ["main"]

NOW = datetime.now(UTC).replace(microsecond=0)
YEAR = timedelta(days=365)
ACTORS = 2000
STATES = 20000
SAMPLE_ROUNDS = 6
"""Sample requests per (mutation type, outcome): 4 types x 9 outcomes x 6 = 216."""


@attrs.frozen
class Deploy(IncrementCounter):
    """A second mutation type (its own intent category)."""

    intent: ClassVar[MutationIntent] = MutationIntent("deploy.rollout", category="deploy")


@attrs.frozen
class RaiseQuota(IncrementCounter):
    """A third mutation type."""

    intent: ClassVar[MutationIntent] = MutationIntent("quota.increase", category="billing")


@attrs.frozen
class ToggleFlag(IncrementCounter):
    """A rare mutation type (1 % of the requests)."""

    intent: ClassVar[MutationIntent] = MutationIntent("flag.toggle", category="flags")


TYPES: tuple[tuple[type[IncrementCounter], str, float], ...] = (
    (IncrementCounter, "benchmark.counter.increment", 0.49),
    (Deploy, "deploy.rollout", 0.30),
    (RaiseQuota, "quota.increase", 0.20),
    (ToggleFlag, "flag.toggle", 0.01),
)

# The mix of a year-old service: share of the requests per outcome.
MIX: tuple[tuple[str, float], ...] = (
    ("executed", 0.72),
    ("rejected_policy", 0.05),
    ("rejected", 0.07),
    ("expired", 0.065),
    ("canceled", 0.07),
    ("pending", 0.0100),
    ("pending_due", 0.0050),
    ("pending_step2", 0.0025),
    ("approved", 0.0050),
)


def registry() -> MutationRegistry:
    reg = MutationRegistry()
    for cls, name, _ in TYPES:
        reg.register(cls, name=name)
    reg.register_state(Counter, name="benchmark.counter")
    return reg


class ByAmount(MutationPolicy[Any]):
    """amount 1: one "sre" approval; 2: bob then an "ops" member; 3: denied."""

    name = "probe-policy"

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        amount = getattr(mutation, "amount", 1)
        if amount == 3:
            return PolicyDecision.deny("amount 3 is not allowed")
        if amount == 2:
            return PolicyDecision.require_approval(
                PolicyRequirement.approval("bob", step=1),
                PolicyRequirement.approval(group="ops", step=2),
                reason="two steps",
            )
        return PolicyDecision.require_approval(
            PolicyRequirement.approval(role="sre"), reason="needs sign-off"
        )


REQUESTER = MutationContext.user("alice", reason="probe request")
APPROVER = MutationContext.user("bob", reason="looks fine", roles=("sre",))


# -- the sample, through the store's write path ----------------------------------------------


async def _sample(gov: Governance) -> None:
    """``SAMPLE_ROUNDS`` requests per mutation type and outcome, written by governance."""
    n = 0
    for cls, _, _ in TYPES:
        for _ in range(SAMPLE_ROUNDS):
            for outcome, _ in MIX:
                n += 1
                state_id = f"sample-{n}"
                await gov.states.put(state_id, Counter())
                amount = {"rejected_policy": 3, "pending_step2": 2}.get(outcome, 1)
                expires = NOW + timedelta(days=3) if outcome in ("pending_due", "expired") else None
                request = await gov.submit(
                    cls(amount=amount), state_id=state_id, context=REQUESTER, expires_at=expires
                )
                rid = request.request_id
                if outcome in ("executed", "approved"):
                    await gov.approve(rid, context=APPROVER)
                if outcome == "executed":
                    await gov.execute(rid)
                elif outcome == "rejected":
                    await gov.reject(rid, context=APPROVER, reason="not now")
                elif outcome == "canceled":
                    await gov.cancel(rid, context=REQUESTER, reason="changed my mind")
                elif outcome == "expired":
                    await gov.expire(rid, context=MutationContext.system("expiry sweep"))
                elif outcome == "pending_step2":
                    await gov.approve(rid, context=APPROVER)


# -- the bulk copy ---------------------------------------------------------------------------

_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?\+00:00")


@attrs.frozen
class _Sample:
    """A sample request: its texts split where a copy differs, and what picks it."""

    outcome: str
    mutation_type: str
    created: datetime
    pieces: dict[str, list[str]]
    stamps: tuple[datetime, ...]
    row: tuple[Any, ...] = ()
    """The request's table row, instants as datetimes (the SQL probes)."""
    execution_id: str | None = None


def _split(text: str, request_id: str, state_id: str) -> list[str]:
    """``text`` as literal pieces and markers: ``\\0i``/``\\0s``/``\\0a``/``\\0tN``."""
    text = text.replace(request_id, "\0i\0").replace(f'"{state_id}"', '"\0s\0"')
    text = text.replace('"actor_id":"alice"', '"actor_id":"\0a\0"')
    text = _STAMP.sub(lambda m: f"\0t{m.group(0)}\0", text)
    return text.split("\0")


def _sample_of(
    texts: dict[str, str],
    request_id: str,
    state_id: str,
    document: dict[str, Any],
    *,
    row: tuple[Any, ...] = (),
    execution_id: str | None = None,
) -> _Sample:
    """The sample request of ``document`` with its ``texts`` (request, decisions, entries);
    created at and mutation type taken from ``row`` when given."""
    pieces = {key: _split(text, request_id, state_id) for key, text in texts.items()}
    stamps = sorted(
        {datetime.fromisoformat(p[1:]) for ps in pieces.values() for p in ps[1::2] if p[0] == "t"}
    )
    return _Sample(
        _outcome(document),
        row[9] if row else document["mutation_type"],
        row[5] if row else datetime.fromisoformat(document["created_at"]),
        pieces,
        tuple(stamps),
        row,
        execution_id,
    )


def _texts(
    row: Sequence[Any], decisions: Sequence[Any], audit: Sequence[Any], history: Sequence[Any]
) -> dict[str, str]:
    """A sample's texts from the SQL tables: the request ``row``'s document, and the
    document (last column) of its decisions (``dN``: request id, sequence first) and of its
    state's audit and history entries (state id first)."""
    texts = {"request": row[8]}
    for d in decisions:
        if d[0] == row[0]:
            texts[f"d{d[1]}"] = d[-1]
    for kind, entries in (("audit", audit), ("history", history)):
        for e in entries:
            if e[0] == row[1]:
                texts[kind] = e[-1]
    return texts


def _build(
    pieces: list[str], request_id: str, state_id: str, actor: str, stamps: dict[str, str]
) -> str:
    out = []
    for k, piece in enumerate(pieces):
        if k % 2 == 0:
            out.append(piece)
        elif piece == "i":
            out.append(request_id)
        elif piece == "s":
            out.append(state_id)
        elif piece == "a":
            out.append(actor)
        else:
            out.append(stamps[piece[1:]])
    return "".join(out)


def _moved(stamp: datetime, *, submitted: datetime, shift: timedelta, delay: timedelta) -> datetime:
    """A sample's instant in a copy: shifted, and later still when after the submission."""
    return stamp + shift + (delay if stamp > submitted else timedelta())


async def _templates(conn: Any, s: str) -> dict[str, list[_Sample]]:
    rows = await (
        await conn.execute(
            f"SELECT request_id, state_id, status, pending_reason, actor_id, created_at, "
            f"updated_at, revision, document, mutation_type, due_at FROM {s}.requests"
        )
    ).fetchall()
    decisions = await (
        await conn.execute(
            f"SELECT request_id, sequence, category, timestamp, document FROM {s}.decisions "
            "ORDER BY request_id, sequence"
        )
    ).fetchall()
    audit = await (
        await conn.execute(f"SELECT state_id, executed_at, document FROM {s}.audit")
    ).fetchall()
    history = await (
        await conn.execute(f"SELECT state_id, executed_at, document FROM {s}.history")
    ).fetchall()
    found: dict[str, list[_Sample]] = {}
    for row in rows:
        texts = _texts(row, decisions, audit, history)
        sample = _sample_of(texts, row[0], row[1], json.loads(row[8]), row=row)
        found.setdefault(sample.outcome, []).append(sample)
    return found


def _outcome(document: dict[str, Any]) -> str:
    status = document["status"]
    if status == "rejected":
        policy = any(d["code"]["code"] == "POLICY_BLOCKED" for d in document["decisions"])
        denied = not document["approval_requirements"]
        return "rejected_policy" if policy or denied else "rejected"
    if status == "pending":
        if any(a["status"] == "approved" for a in document["approval_requirements"]):
            return "pending_step2"
        return "pending_due" if document["expires_at"] else "pending"
    return {"canceled": "canceled", "cancelled": "canceled"}.get(status, status)


def _created(outcome: str, rng: random.Random) -> datetime:
    """When a copy was created: over the year when terminal; recent when still open."""
    if outcome in ("pending", "pending_step2"):
        return NOW - timedelta(seconds=rng.uniform(60, 30 * 86400))
    if outcome == "pending_due":
        return NOW - timedelta(seconds=rng.uniform(60, 5 * 86400))
    if outcome == "approved":
        return NOW - timedelta(seconds=rng.uniform(60, 86400))
    return NOW - timedelta(seconds=rng.uniform(86400, YEAR.total_seconds()))


@attrs.frozen
class _Copy:
    """One copy of a sample request: fresh ids and requester, every instant moved."""

    sample: _Sample
    outcome: str
    request_id: str
    state_id: str
    actor: str
    moved: Callable[[datetime], datetime]
    stamps: dict[str, str]
    """The sample's instants (ISO text) and the copy's."""
    version: str | None
    """The state's version after this copy executed (``None``: not executed)."""

    def build(self, key: str) -> str:
        """The copy's text of the sample's ``key`` (``request``, ``dN``, ``audit``, ...)."""
        return _build(
            self.sample.pieces[key], self.request_id, self.state_id, self.actor, self.stamps
        )

    def request_row(self) -> tuple[Any, ...]:
        """The sample's request row for the copy, instants as datetimes."""
        row, moved = self.sample.row, self.moved
        return (
            self.request_id,
            self.state_id,
            row[2],
            row[3],
            self.actor,
            moved(row[5]),
            moved(row[6]),
            row[7],
            self.build("request"),
            row[9],
            None if row[10] is None else moved(row[10]),
        )

    def decisions(self) -> Iterator[tuple[int, str, datetime, str]]:
        """(sequence, category, timestamp, document) of each decision."""
        for key in self.sample.pieces:
            if key.startswith("d"):
                text = self.build(key)
                data = json.loads(text)
                stamp = datetime.fromisoformat(data["timestamp"])
                yield int(key[1:]), data["code"]["category"], stamp, text

    def execution(self) -> tuple[datetime, str, str] | None:
        """(executed at, history entry, audit entry) when the copy executed."""
        if "history" not in self.sample.pieces:
            return None
        executed = self.build("history")
        at = datetime.fromisoformat(json.loads(executed)["executed_at"])
        return at, executed, self.build("audit")


class _Copies:
    """The copies of ``samples`` that bring the history to ``total`` requests, in batches.

    Every probe draws the same copies for the same samples (one seeded generator);
    ``versions`` ends with each executed state's last version.
    """

    def __init__(self, samples: dict[str, list[_Sample]], total: int) -> None:
        self.samples = samples
        self.count = total - sum(len(t) for t in samples.values())
        self.versions: dict[str, int] = {}

    def __iter__(self) -> Iterator[_Copy]:
        samples = self.samples
        rng = random.Random(20261204)
        outcomes = [o for o, _ in MIX]
        weights = [w for _, w in MIX]
        by_type: dict[str, dict[str, list[_Sample]]] = {}
        for outcome, items in samples.items():
            for t in items:
                by_type.setdefault(outcome, {}).setdefault(t.mutation_type, []).append(t)
        type_names = [name for _, name, _ in TYPES]
        type_weights = [w for _, _, w in TYPES]
        for _ in range(self.count):
            outcome = rng.choices(outcomes, weights)[0]
            mutation_type = rng.choices(type_names, type_weights)[0]
            t = rng.choice(by_type[outcome].get(mutation_type) or samples[outcome])
            rid = uuid.uuid4().hex
            busy = rng.random() < 0.3  # a few busy states and requesters, a long tail
            state_id = f"tenant-{rng.randrange(200 if busy else STATES)}:counter"
            actor = f"user-{rng.randrange(50 if rng.random() < 0.3 else ACTORS)}"
            shift = _created(outcome, rng) - t.created
            delay = (
                timedelta(seconds=rng.uniform(0, 4 * 3600)) if outcome != "pending" else timedelta()
            )
            moved = functools.partial(_moved, submitted=t.created, shift=shift, delay=delay)
            stamps = {stamp.isoformat(): moved(stamp).isoformat() for stamp in t.stamps}
            version = None
            if "history" in t.pieces:
                self.versions[state_id] = self.versions.get(state_id, 1) + 1
                version = str(self.versions[state_id])
            yield _Copy(t, outcome, rid, state_id, actor, moved, stamps, version)

    def batches(self, size: int) -> Iterator[tuple[int, list[_Copy]]]:
        """Lists of ``size`` copies (the last one shorter), each with the copies so far."""
        batch: list[_Copy] = []
        for n, copy in enumerate(self):
            batch.append(copy)
            if len(batch) >= size or n == self.count - 1:
                yield n + 1, batch
                batch = []


async def _bulk(conn: Any, s: str, total: int, progress: Callable[[str], None]) -> None:
    """Copies of the sample rows until the schema holds ``total`` requests."""
    copies = _Copies(await _templates(conn, s), total)
    for done, batch in copies.batches(20000):
        decisions = [(c.request_id, *d) for c in batch for d in c.decisions()]
        executions = [(c, c.execution()) for c in batch]
        ran = [(c.state_id, *e) for c, e in executions if e is not None]
        await _copy(
            conn,
            s,
            [c.request_row() for c in batch],
            decisions,
            [(state_id, at, audit) for state_id, at, _, audit in ran],
            [(state_id, at, history) for state_id, at, history, _ in ran],
            [(c.state_id, c.request_id, c.version) for c in batch if c.version is not None],
        )
        progress(f"  copied {done:,} / {copies.count:,} requests")
    async with conn.cursor().copy(
        f"COPY {s}.states (state_id, version, request_id, document) FROM STDIN"
    ) as copy:
        for state_id, version in copies.versions.items():
            await copy.write_row(
                (state_id, str(version), None, '{"$type":"benchmark.counter","value":{"value":1}}')
            )


async def _copy(conn: Any, s: str, *tables: list[tuple[Any, ...]]) -> None:
    requests, decisions, audit, history, state_versions = tables
    history.sort(key=lambda r: r[1])  # appended in execution order
    audit.sort(key=lambda r: r[1])
    decisions.sort(key=lambda r: r[3])
    targets = (
        (
            "requests (request_id, state_id, status, pending_reason, actor_id, created_at, "
            "updated_at, revision, document, mutation_type, due_at)",
            sorted(requests, key=lambda r: r[5]),
        ),
        ("decisions (request_id, sequence, category, timestamp, document)", decisions),
        ("audit (state_id, executed_at, document)", audit),
        ("history (state_id, executed_at, document)", history),
        ("state_versions (state_id, request_id, version)", state_versions),
    )
    async with conn.transaction():
        for target, rows in targets:
            async with conn.cursor().copy(f"COPY {s}.{target} FROM STDIN") as copy:
                for r in rows:
                    await copy.write_row(r)


# -- capture and explain ---------------------------------------------------------------------

Read = Callable[[Governance], Awaitable[Any]]


class _Capture:
    """Records the statements a probe's driver sends while active (``installed`` wraps it)."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []
        self.active = False

    def installed(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    async def measure(self, read: Read, gov: Governance) -> tuple[Any, float]:
        """``read`` warmed up, then run with its statements recorded: its result, wall ms."""
        await read(gov)  # warm: plans cached, pages in memory
        self.statements.clear()
        self.active = True
        started = time.perf_counter()
        out = await read(gov)
        wall = (time.perf_counter() - started) * 1000
        self.active = False
        return out, wall

    async def explained(
        self,
        gov: Governance,
        facts: dict[str, Any],
        args: argparse.Namespace,
        explain: Callable[[str, Any], Awaitable[dict[str, Any] | None]],
        show: Callable[[dict[str, Any], bool], None],
    ) -> list[dict[str, Any]]:
        """Each read (of those ``--only`` names) measured, and each statement it sent that
        ``explain`` explains; every result shown as it comes (``--plans``: with plans)."""
        results = []
        for name, read in _selected(_reads(facts), args.only):
            out, wall = await self.measure(read, gov)
            explained = []
            for sql, params in list(self.statements):
                found = await explain(sql, params)
                if found is not None:
                    explained.append({"sql": sql, **found})
            results.append(
                {"read": name, "wall_ms": wall, "rows": _size(out), "statements": explained}
            )
            show(results[-1], args.plans)
        return results


def _selected(reads: list[tuple[str, Read]], only: Sequence[str]) -> list[tuple[str, Read]]:
    """The reads whose names contain a word of ``only`` (all when it is empty)."""
    return [(name, read) for name, read in reads if not only or any(w in name for w in only)]


class _PsycopgCapture(_Capture):
    """Records the statements psycopg's async cursors send while active."""

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import psycopg

        original = psycopg.AsyncCursor.execute
        capture = self

        async def execute(cur: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
            if capture.active:
                capture.statements.append((str(query), params))
            return await original(cur, query, params, **kwargs)

        psycopg.AsyncCursor.execute = execute  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            psycopg.AsyncCursor.execute = original  # type: ignore[method-assign]


_DURATION = re.compile(r"duration: ([\d.]+) ms\s+plan:", re.S)


def _summary(plan: str) -> dict[str, Any]:
    """What a text plan does: sequential scans, sorts, indexes used."""
    seq = sorted(set(re.findall(r"Seq Scan on (\w+)", plan)))
    sorts = re.findall(r"->\s+Sort .*?rows=(\d+) loops=(\d+)", plan) + re.findall(
        r"^\s*Sort .*?rows=(\d+) loops=(\d+)", plan, re.M
    )
    sorted_rows = [int(r) * int(loops) for r, loops in sorts]
    indexes = sorted(set(re.findall(r"Index (?:Only )?Scan(?: Backward)? using (\w+)", plan)))
    indexes += sorted(set(re.findall(r"Bitmap Index Scan on (\w+)", plan)))
    return {"seq": seq, "sort": sorted_rows, "indexes": indexes}


async def _explain(conn: Any, sql: str, params: Any) -> list[dict[str, Any]]:
    """Run ``sql`` under auto_explain (rolled back); its plans, nested ones included."""
    notices: list[str] = []

    def keep(diag: Any) -> None:
        if diag.message_primary and "plan:" in diag.message_primary:
            notices.append(diag.message_primary)

    conn.add_notice_handler(keep)
    try:
        async with conn.transaction(force_rollback=True):
            await conn.execute("SET LOCAL client_min_messages = log")
            await conn.execute(sql, params)
    finally:
        conn.remove_notice_handler(keep)
    plans = []
    for text in notices:
        match = _DURATION.search(text)
        body = text[match.end() :] if match else text
        plans.append(
            {"ms": float(match.group(1)) if match else None, **_summary(body), "plan": body.strip()}
        )
    return plans


# -- the reads -------------------------------------------------------------------------------


def _reads(facts: dict[str, Any]) -> list[tuple[str, Read]]:
    from mutator_governance._query import encode_position

    actor, state_id, rid = facts["actor"], facts["state_id"], facts["request_id"]
    rare_actor = facts["rare_actor"]
    week = (NOW - timedelta(days=200), NOW - timedelta(days=193))
    deep = encode_position(*facts["deep"])
    bob = MutationContext.user("bob", roles=("sre",))
    ops = MutationContext.user("dave", groups=("ops",))
    terminal = frozenset(s for s in RequestStatus if s.is_terminal)

    def listing(limit: int = 50, cursor: str | None = None, **filters: Any) -> Read:
        return lambda gov: gov.list(RequestQuery(**filters), limit=limit, cursor=cursor)

    async def pages(gov: Governance) -> int:
        """The CLI paging through 20 pages of ``requests list``."""
        cursor, n = None, 0
        for _ in range(20):
            page = await gov.list(RequestQuery(), limit=50, cursor=cursor)
            n += len(page.items)
            cursor = page.next_cursor
        return n

    async def reserve(gov: Governance) -> Any:
        store: Any = gov.requests
        got = await store.reserve(owner="probe", limit=8, now=NOW, until=NOW + timedelta(minutes=1))
        await store.unreserve(owner="probe", request_ids=[r.request_id for r in got])
        return got

    return [
        ("list: no filter, first page", listing()),
        ("list: no filter, cursor at 75 %", listing(cursor=deep)),
        ("list: 20 pages in a row", pages),
        ("list: status pending", listing(statuses={RequestStatus.PENDING})),
        ("list: status approved", listing(statuses={RequestStatus.APPROVED})),
        ("list: status executing", listing(statuses={RequestStatus.EXECUTING}, limit=200)),
        ("list: status executed", listing(statuses={RequestStatus.EXECUTED})),
        (
            "list: status executed, cursor at 75 %",
            listing(statuses={RequestStatus.EXECUTED}, cursor=deep),
        ),
        (
            "list: status pending+approved",
            listing(statuses={RequestStatus.PENDING, RequestStatus.APPROVED}),
        ),
        (
            "list: status rejected+expired",
            listing(statuses={RequestStatus.REJECTED, RequestStatus.EXPIRED}),
        ),
        ("list: status failed (none)", listing(statuses={RequestStatus.FAILED})),
        ("list: pending reason approval", listing(pending_reasons={PendingReason.APPROVAL})),
        ("list: requester (busy)", listing(actor_ids={actor})),
        ("list: requester (rare)", listing(actor_ids={rare_actor})),
        ("list: state id", listing(state_ids={state_id})),
        ("list: mutation type (1 %)", listing(mutation_types={"flag.toggle"})),
        ("list: mutation type (49 %)", listing(mutation_types={"benchmark.counter.increment"})),
        ("list: created in a week", listing(created_from=week[0], created_to=week[1])),
        ("list: created since a week", listing(created_from=NOW - timedelta(days=7))),
        ("list: updated in the last hour", listing(updated_from=NOW - timedelta(hours=1))),
        ("list: updated in a week", listing(updated_from=week[0], updated_to=week[1])),
        ("list: request ids", listing(request_ids={rid})),
        (
            "list: status pending + requester",
            listing(statuses={RequestStatus.PENDING}, actor_ids={actor}),
        ),
        (
            "list: status pending + state id",
            listing(statuses={RequestStatus.PENDING}, state_ids={state_id}),
        ),
        (
            "list: status executed + requester",
            listing(statuses={RequestStatus.EXECUTED}, actor_ids={actor}),
        ),
        (
            "list: status rejected + created in a week",
            listing(statuses={RequestStatus.REJECTED}, created_from=week[0], created_to=week[1]),
        ),
        (
            "list: requester + created in a week",
            listing(actor_ids={actor}, created_from=week[0], created_to=week[1]),
        ),
        (
            "list: mutation type + status pending",
            listing(mutation_types={"deploy.rollout"}, statuses={RequestStatus.PENDING}),
        ),
        ("list: intent category (Python-side)", listing(intent_categories={"flags"})),
        ("pending(): all pending", lambda gov: gov.pending()),
        (
            "pending(approval, state id)",
            lambda gov: gov.pending(PendingReason.APPROVAL, state_id=state_id),
        ),
        (
            "list: pending approval queue preset",
            listing(**attrs.asdict(RequestQuery.pending_approval_queue(), recurse=False)),
        ),
        ("inbox: bob (role sre)", lambda gov: gov.inbox(bob, limit=50)),
        ("inbox: dave (group ops)", lambda gov: gov.inbox(ops, limit=50)),
        (
            "list_approvals: pending",
            lambda gov: gov.list_approvals(ApprovalQuery.pending(), limit=50),
        ),
        (
            "list_decisions: execution outcomes",
            lambda gov: gov.list_decisions(DecisionQuery.recent_execution_outcomes(), limit=50),
        ),
        (
            "list_decisions: requester's decisions",
            lambda gov: gov.list_decisions(
                DecisionQuery(request=RequestQuery(actor_ids={rare_actor})), limit=50
            ),
        ),
        ("decisions.recent(50)", lambda gov: gov.decisions.recent(50)),
        (
            "decisions.recent(50, approval)",
            lambda gov: gov.decisions.recent(50, category=DecisionCategory.APPROVAL),
        ),
        ("decisions.for_request", lambda gov: gov.decisions.for_request(rid)),
        ("get", lambda gov: gov.get(rid)),
        ("by_state", lambda gov: gov.requests.by_state(state_id)),
        ("audit.entries(state)", lambda gov: gov.audit.entries(state_id)),  # type: ignore[attr-defined]
        (
            "audit.entries(last hour)",
            lambda gov: gov.audit.entries(since=NOW - timedelta(hours=1)),  # type: ignore[attr-defined]
        ),
        (
            "audit.entries(state, a week)",
            lambda gov: gov.audit.entries(state_id, since=week[0], until=week[1]),  # type: ignore[attr-defined]
        ),
        ("history.history(state)", lambda gov: gov.history_store.history(state_id)),
        (
            "history.between(state, a week)",
            lambda gov: gov.history_store.between(state_id, week[0], week[1]),
        ),
        ("history.recent(state, 10)", lambda gov: gov.history_store.recent(state_id, 10)),
        ("worker: reserve 8", reserve),
        (
            "worker: ready listing",
            listing(limit=8, statuses={RequestStatus.APPROVED}),
        ),
        ("expiry: due sweep", lambda gov: gov.requests.due(now=NOW + timedelta(days=2), limit=100)),  # type: ignore[attr-defined]
        (
            "purge: 500 older than 90 days",
            lambda gov: gov.requests.purge(  # type: ignore[attr-defined]
                before=NOW - timedelta(days=90), statuses=terminal, limit=500
            ),
        ),
    ]


async def _facts(conn: Any, s: str) -> dict[str, Any]:
    """Ids and positions the reads ask for (a busy requester, a busy state, ...)."""

    async def one(sql: str) -> Any:
        return await (await conn.execute(sql)).fetchone()

    actor = (
        await one(f"SELECT actor_id FROM {s}.requests GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
    )[0]
    rare = (
        await one(
            f"SELECT actor_id FROM {s}.requests GROUP BY 1 HAVING count(*) BETWEEN 20 AND 60 "
            "ORDER BY 1 LIMIT 1"
        )
    )[0]
    state = (
        await one(f"SELECT state_id FROM {s}.requests GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
    )[0]
    rid = (await one(f"SELECT request_id FROM {s}.requests WHERE status = 'executed' LIMIT 1"))[0]
    deep = await one(
        f"SELECT created_at, request_id FROM {s}.requests ORDER BY created_at, request_id "
        f"OFFSET (SELECT count(*) * 3 / 4 FROM {s}.requests) LIMIT 1"
    )
    return {
        "actor": actor,
        "rare_actor": rare,
        "state_id": state,
        "request_id": rid,
        "deep": tuple(deep),
    }


@contextlib.asynccontextmanager
async def _connection() -> AsyncIterator[Any]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        yield conn


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    schema = args.schema
    s = f'"{schema}"'
    engine_policies = [ByAmount()]
    if not args.reuse:
        async with _connection() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
    reg = registry()
    async with Governance.open(schema_url(schema), registry=reg) as gov:
        for policy in engine_policies:
            gov.engine.register_policy(policy)
        async with _connection() as conn:
            held = (await (await conn.execute(f"SELECT count(*) FROM {s}.requests")).fetchone())[0]
            if not (args.reuse and held):
                started = time.perf_counter()
                sample = SAMPLE_ROUNDS * len(TYPES) * len(MIX)
                progress(f"sample through the write path ({sample} requests)")
                await _sample(gov)
                progress(f"bulk copy up to {args.requests:,} requests")
                await conn.execute("SET synchronous_commit = off")
                await _bulk(conn, s, args.requests, progress)
                progress("VACUUM ANALYZE")
                for table in (
                    "requests",
                    "decisions",
                    "audit",
                    "history",
                    "states",
                    "state_versions",
                ):
                    await conn.execute(f"VACUUM ANALYZE {s}.{table}")
                progress(f"filled in {time.perf_counter() - started:.0f} s")
            sizes = await (
                await conn.execute(
                    "SELECT relname, reltuples::bigint, "
                    "pg_size_pretty(pg_total_relation_size(c.oid)) "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND relkind = 'r' ORDER BY 1",
                    (schema,),
                )
            ).fetchall()
            for name, rows, size in sizes:
                progress(f"  {name}: {rows:,} rows, {size}")
            facts = await _facts(conn, s)
            await conn.execute("LOAD 'auto_explain'")
            await conn.execute("SET auto_explain.log_min_duration = 0")
            await conn.execute("SET auto_explain.log_analyze = on")
            await conn.execute("SET auto_explain.log_buffers = on")
            await conn.execute("SET auto_explain.log_nested_statements = on")
            await conn.execute("SET auto_explain.log_timing = on")
            await conn.execute(f"SET search_path = {s}")
            capture = _PsycopgCapture()

            async def explain(sql: str, params: Any) -> dict[str, Any] | None:
                if sql.lstrip().upper().startswith(("SELECT CLOCK", "SET")):
                    return None
                return {"plans": await _explain(conn, sql, params)}

            with capture.installed():
                results = await capture.explained(gov, facts, args, explain, _print)
    if not args.keep:
        async with _connection() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
            progress(f"dropped {schema}")
    return results


def _size(out: Any) -> Any:
    items = getattr(out, "items", None)
    if items is not None:
        return len(items)
    if isinstance(out, list | tuple):
        return len(out)
    entries = getattr(out, "entries", None)
    if entries is not None:
        return len(entries)
    return None


def _print(result: dict[str, Any], plans: bool) -> None:
    statements = result["statements"]
    flags = []
    server = 0.0
    for statement in statements:
        for plan in statement["plans"][-1:]:
            server += plan["ms"] or 0.0
        for plan in statement["plans"]:
            if plan["seq"]:
                flags.append("SEQ " + ",".join(plan["seq"]))
            big = [n for n in plan["sort"] if n > 1000]
            if big:
                flags.append(f"SORT {max(big):,}")
    indexes = sorted({i for st in statements for p in st["plans"] for i in p["indexes"]})
    _print_read(result, (9, server, "server"), sorted(set(flags)), indexes)
    if plans:
        for statement in statements:
            print("   SQL:", statement["sql"][:300])
            for plan in statement["plans"]:
                print("   " + plan["plan"].replace("\n", "\n   "))


def _print_read(
    result: dict[str, Any], sql: tuple[int, float, str], flags: list[str], indexes: list[str]
) -> None:
    """A read's line: wall time, ``sql`` (width, ms, what) time, statements, rows, flags."""
    width, ms, what = sql
    print(
        f"{result['read']:<44} {result['wall_ms']:>{width}.1f} ms wall {ms:>{width}.1f} ms {what} "
        f"{len(result['statements']):>3} stmt rows={result['rows']} {' '.join(flags)} "
        f"[{', '.join(indexes)}]",
        flush=True,
    )


Option = tuple[tuple[str, ...], dict[str, Any]]
"""An option of a probe's command line: ``add_argument``'s flags and keywords."""


def _reads_document(args: argparse.Namespace, results: Any) -> dict[str, Any]:
    return {"at": NOW.isoformat(), "requests": args.requests, "reads": results}


def _probe_main(
    prog: str,
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, Any]],
    where: Option,
    keep: str,
    reuse: str,
    *extra: Option,
    plans: bool = True,
    server: tuple[str, str, int, str] | None = None,
    document: Callable[[argparse.Namespace, Any], Any] = _reads_document,
) -> int:
    """A probe's command line: ``--requests``, ``where`` it fills, ``--keep`` and ``--reuse``
    (their help), its ``extra`` options, ``--only``, ``--plans`` (when it prints plans) and
    ``--json``; skipped when its ``server`` does not answer
    (:func:`benchmarks.governance._server_unavailable`'s arguments)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument(*where[0], **where[1])
    parser.add_argument("--keep", action="store_true", help=keep)
    parser.add_argument("--reuse", action="store_true", help=reuse)
    for flags, keywords in extra:
        parser.add_argument(*flags, **keywords)
    parser.add_argument("--only", nargs="*", default=[], help="reads whose names contain a word")
    if plans:
        parser.add_argument("--plans", action="store_true", help="print every plan")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    reason = server and _server_unavailable(*server)
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 0
    results = asyncio.run(run(args))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(document(args, results), out, indent=1, default=str)
    return 0


def main() -> int:
    return _probe_main(
        "python -m benchmarks.postgres_query_plans",
        run,
        (("--schema",), {"default": "scale_probe"}),
        "do not drop the schema at the end",
        "keep a schema already filled",
        server=("Postgres", POSTGRES_URL, 5432, "psycopg"),
    )


if __name__ == "__main__":
    raise SystemExit(main())
