"""PostgreSQL backend: requests, decisions, states, audit and history in one schema.

**asyncio only**: the store uses psycopg 3's async driver and ``psycopg_pool``; it cannot run
on trio. Install it with the ``postgres`` extra (``pip install mutator[postgres]``).

Everything lives in one PostgreSQL schema (``mutator`` unless ``schema=`` or a ``?schema=``
URL parameter names another), created and migrated on :meth:`PostgresStore.open` under a
transaction-scoped advisory lock, so several processes may open a fresh database at once.
The schema's version is kept in ``schema_version``; a database migrated by a newer release
is refused with :class:`~mutator_governance.StoredDataError` naming both versions.

Layout (schema version 1)::

    requests        request_id PK (COLLATE "C"), state_id, status, pending_reason, actor_id,
                    created_at, updated_at (timestamptz), revision, document (JSON text)
    decisions       id bigserial, request_id, category, timestamp, document
    states          state_id PK, version, request_id, document
    state_versions  (state_id, request_id) PK, version: which request produced which version
    audit           id bigserial, state_id, executed_at, document
    history         id bigserial, state_id, executed_at, document
    schema_version  version, applied_at

Documents are JSON *text* written through the registry's converter (``jsonb`` would
reorder keys and lose the exact type of numbers such as ``1e300``), so values round-trip
exactly. Request queries are pushed down to SQL and ordered by ``created_at`` then
``request_id`` in code point order (``COLLATE "C"``); cursors are the ones of the in-memory
store. A governed commit is one transaction that locks the requests and the state
(``SELECT ... FOR UPDATE``), checks every revision and the state version, then writes; any
mismatch rolls it back. An unreadable row raises ``StoredDataError``; a server that cannot
be reached raises ``StoreUnavailableError`` with the URL's password removed.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from mutator import AuditEntry, ConcurrencyError, HistoryEntry, MutationHistory
from mutator.serialization import structure, unstructure

from .._commit_types import GovernedCommit
from .._decisions import RequestDecision
from .._enums import DecisionCategory, PendingReason, RequestStatus
from .._errors import (
    RequestAlreadyExistsError,
    RequestConcurrencyError,
    RequestNotFoundError,
    StoredDataError,
    StoreUnavailableError,
)
from .._query import (
    DecisionRecord,
    RequestPage,
    RequestQuery,
    VersionedState,
    decode_cursor,
    encode_cursor,
    next_version,
)
from .._registry import MutationRegistry
from .._request import MutationRequest
from . import redact_url
from ._documents import decode, parse

__all__ = [
    "SCHEMA_VERSION",
    "PostgresAuditSink",
    "PostgresCommitter",
    "PostgresDecisionHistory",
    "PostgresHistoryStore",
    "PostgresRequestStore",
    "PostgresStateStore",
    "PostgresStore",
]

BACKEND = "postgresql"

SCHEMA_VERSION = 1
"""The schema version this release writes and reads."""

DEFAULT_SCHEMA = "mutator"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

# Each migration brings the schema from version ``index`` to ``index + 1``; "{s}" is the
# quoted schema name.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE {s}.requests (
            request_id text COLLATE "C" PRIMARY KEY,
            state_id text NOT NULL,
            status text NOT NULL,
            pending_reason text,
            actor_id text,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            revision bigint NOT NULL,
            document text NOT NULL
        )""",
        "CREATE INDEX requests_order ON {s}.requests (created_at, request_id)",
        "CREATE INDEX requests_status ON {s}.requests (status, created_at, request_id)",
        """CREATE INDEX requests_pending ON {s}.requests (pending_reason, created_at, request_id)
            WHERE status = 'pending'""",
        "CREATE INDEX requests_state ON {s}.requests (state_id, created_at, request_id)",
        "CREATE INDEX requests_actor ON {s}.requests (actor_id, created_at, request_id)",
        "CREATE INDEX requests_updated ON {s}.requests (updated_at)",
        """CREATE TABLE {s}.decisions (
            id bigserial PRIMARY KEY,
            request_id text NOT NULL,
            category text NOT NULL,
            timestamp timestamptz NOT NULL,
            document text NOT NULL
        )""",
        "CREATE INDEX decisions_request ON {s}.decisions (request_id, id)",
        "CREATE INDEX decisions_recent ON {s}.decisions (timestamp DESC, id DESC)",
        """CREATE INDEX decisions_category
            ON {s}.decisions (category, timestamp DESC, id DESC)""",
        """CREATE TABLE {s}.states (
            state_id text PRIMARY KEY,
            version text NOT NULL,
            request_id text,
            document text NOT NULL
        )""",
        """CREATE TABLE {s}.state_versions (
            state_id text NOT NULL,
            request_id text NOT NULL,
            version text NOT NULL,
            PRIMARY KEY (state_id, request_id)
        )""",
        """CREATE TABLE {s}.audit (
            id bigserial PRIMARY KEY,
            state_id text,
            executed_at timestamptz NOT NULL,
            document text NOT NULL
        )""",
        "CREATE INDEX audit_state ON {s}.audit (state_id, id)",
        "CREATE INDEX audit_executed ON {s}.audit (executed_at)",
        """CREATE TABLE {s}.history (
            id bigserial PRIMARY KEY,
            state_id text NOT NULL,
            executed_at timestamptz NOT NULL,
            document text NOT NULL
        )""",
        "CREATE INDEX history_state ON {s}.history (state_id, id)",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION


def split_url(url: str) -> tuple[str, str | None]:
    """``url`` without its ``schema`` query parameter (libpq refuses it), and that schema."""
    parts = urlsplit(url)
    schema: str | None = None
    kept: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), schema


def _advisory_key(schema: str) -> int:
    """A stable signed 64-bit advisory lock key for migrating ``schema``."""
    digest = hashlib.sha256(f"mutator.schema:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _Database:
    """What every sub-store shares: the pool, the registry, the schema and error mapping."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Connection],
        *,
        registry: MutationRegistry,
        schema: str,
        url: str,
        password: str | None,
        timeout: float,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.schema = schema
        self.s = f'"{schema}"'
        self.url = url
        self.password = password
        self.timeout = timeout

    def unavailable(self, message: str, error: BaseException | None = None) -> NoReturn:
        """Raise StoreUnavailableError (the detail never carries the password)."""
        detail = f"{message}: {error}" if error is not None else message
        if self.password:
            detail = detail.replace(self.password, "***")
        raise StoreUnavailableError(detail, url=self.url) from error

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """An autocommit connection from the pool; driver failures become store errors."""
        try:
            async with self.pool.connection(timeout=self.timeout) as conn:
                yield conn
        except PoolTimeout as error:
            self.unavailable("no PostgreSQL connection available", error)
        except PoolClosed as error:
            self.unavailable("the store is closed", error)
        except psycopg.errors.TransactionRollback as error:
            # Deadlock or serialization failure: the transaction was rolled back whole.
            raise ConcurrencyError(f"PostgreSQL rolled back a transaction: {error}") from error
        except psycopg.OperationalError as error:
            self.unavailable("PostgreSQL connection failed", error)
        except psycopg.DataError as error:
            # e.g. a NUL character in an indexed text column, or a datetime out of range.
            raise ValueError(f"PostgreSQL refused a value: {error}") from error

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection inside one transaction (rolled back when the block raises)."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    # -- documents -----------------------------------------------------------------------

    def dumps(self, data: Any) -> str:
        return self.registry.dumps(data)

    def load(self, text: Any, *, key: str, field: str, request_id: str | None = None) -> Any:
        """Parse the JSON text of one column; StoredDataError when it is not JSON."""
        return parse(
            self.registry, text, backend=BACKEND, key=key, field=field, request_id=request_id
        )

    def request_from(self, request_id: str, text: Any) -> MutationRequest:
        field = "requests.document"
        data = self.load(text, key=request_id, field=field, request_id=request_id)
        request = decode(
            self.registry.structure_request,
            data,
            backend=BACKEND,
            key=request_id,
            field=field,
            request_id=request_id,
        )
        if request.request_id != request_id:
            raise StoredDataError(
                f"the document belongs to request {request.request_id!r}",
                backend=BACKEND,
                key=request_id,
                field=field,
                request_id=request_id,
            )
        return request

    def request_row(self, request: MutationRequest, revision: int) -> tuple[Any, ...]:
        """Column values of ``request`` at ``revision``: indexed columns, then the document."""
        stored = (
            request if request.revision == revision else attrs.evolve(request, revision=revision)
        )
        document = self.dumps(self.registry.unstructure_request(stored))
        return (
            stored.state_id,
            stored.status.value,
            stored.pending_reason.value if stored.pending_reason is not None else None,
            stored.context.actor_id,
            stored.created_at,
            stored.updated_at,
            document,
        )

    def decision_from(self, row_id: int, request_id: str, text: Any) -> RequestDecision:
        key = f"decision {row_id} of request {request_id}"
        field = "decisions.document"
        data = self.load(text, key=key, field=field, request_id=request_id)
        return decode(
            self.registry.structure_decision,
            data,
            backend=BACKEND,
            key=key,
            field=field,
            request_id=request_id,
        )

    def decision_rows(
        self, request_id: str, decisions: Sequence[RequestDecision]
    ) -> list[tuple[Any, ...]]:
        return [
            (
                request_id,
                decision.category.value,
                decision.timestamp,
                self.dumps(self.registry.unstructure_decision(decision)),
            )
            for decision in decisions
        ]

    def state_from(self, state_id: str, text: Any) -> Any:
        data = self.load(text, key=state_id, field="states.document")
        return decode(
            self.registry.structure_value,
            data,
            backend=BACKEND,
            key=state_id,
            field="states.document",
        )

    def record_from(self, table: str, row_id: int, text: Any, cls: type[Any]) -> Any:
        key = f"{table} {row_id}"
        field = f"{table}.document"
        data = self.load(text, key=key, field=field)
        converter = self.registry.converter
        return decode(
            lambda d: structure(converter, d, cls), data, backend=BACKEND, key=key, field=field
        )

    def record_document(self, record: AuditEntry | HistoryEntry) -> str:
        return self.dumps(unstructure(self.registry.converter, record))


_REQUEST_COLUMNS = "state_id, status, pending_reason, actor_id, created_at, updated_at, document"


class PostgresRequestStore:
    """Requests in the ``requests`` table; ``replace`` is a compare-and-set on ``revision``."""

    def __init__(self, db: _Database) -> None:
        self._db = db
        s = db.s
        self._insert = (
            f"INSERT INTO {s}.requests (request_id, {_REQUEST_COLUMNS}, revision) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0)"
        )
        self._update = (
            f"UPDATE {s}.requests SET state_id = %s, status = %s, pending_reason = %s, "
            "actor_id = %s, created_at = %s, updated_at = %s, document = %s, "
            "revision = revision + 1 WHERE request_id = %s AND revision = %s"
        )
        self._revision = f"SELECT revision FROM {s}.requests WHERE request_id = %s"
        self._get = f"SELECT document FROM {s}.requests WHERE request_id = %s"
        self._select = f"SELECT request_id, document FROM {s}.requests"
        self._order = ' ORDER BY created_at, request_id COLLATE "C"'

    @property
    def update_sql(self) -> str:
        return self._update

    async def create(self, request: MutationRequest) -> MutationRequest:
        """Insert ``request`` at revision 0 (RequestAlreadyExistsError when the id is taken)."""
        stored = request if request.revision == 0 else attrs.evolve(request, revision=0)
        row = self._db.request_row(stored, 0)
        try:
            async with self._db.connection() as conn:
                await conn.execute(self._insert, (stored.request_id, *row))
        except psycopg.errors.UniqueViolation:
            raise RequestAlreadyExistsError(request.request_id) from None
        return stored

    async def replace(self, request: MutationRequest, *, expected_revision: int) -> MutationRequest:
        """Store ``request`` at ``expected_revision + 1`` if the stored one is at ``expected``."""
        stored = attrs.evolve(request, revision=expected_revision + 1)
        row = self._db.request_row(stored, expected_revision + 1)
        async with self._db.connection() as conn:
            cursor = await conn.execute(self._update, (*row, request.request_id, expected_revision))
            if cursor.rowcount == 1:
                return stored
            found = await (await conn.execute(self._revision, (request.request_id,))).fetchone()
        if found is None:
            raise RequestNotFoundError(request.request_id)
        raise RequestConcurrencyError(request.request_id, expected_revision, int(found[0]))

    async def get(self, request_id: str) -> MutationRequest | None:
        """The request, or None."""
        async with self._db.connection() as conn:
            row = await (await conn.execute(self._get, (request_id,))).fetchone()
        return None if row is None else self._db.request_from(request_id, row[0])

    async def _fetch(self, where: str, params: Sequence[Any], tail: str = "") -> list[Any]:
        sql = self._select + (f" WHERE {where}" if where else "") + self._order + tail
        async with self._db.connection() as conn:
            rows = await (await conn.execute(sql, params)).fetchall()
        return [self._db.request_from(rid, text) for rid, text in rows]

    async def by_state(self, state_id: str) -> Sequence[MutationRequest]:
        """Requests targeting ``state_id``, by ``created_at`` then id."""
        return await self._fetch("state_id = %s", (state_id,))

    async def pending(
        self, reason: PendingReason | None = None, *, state_id: str | None = None
    ) -> Sequence[MutationRequest]:
        """PENDING requests, optionally with one reason and for one state, ordered."""
        clauses = ["status = %s"]
        params: list[Any] = [RequestStatus.PENDING.value]
        if reason is not None:
            clauses.append("pending_reason = %s")
            params.append(reason.value)
        if state_id is not None:
            clauses.append("state_id = %s")
            params.append(state_id)
        return await self._fetch(" AND ".join(clauses), params)

    async def list(
        self, query: RequestQuery | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> RequestPage:
        """A page of requests matching ``query``, ordered by ``created_at`` then id.

        Dimensions with a column are filtered in SQL; the rest of ``query.matches`` is
        checked on the rows, fetching further rows until the page is full.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        query = query or RequestQuery()
        where, params = _where(query)
        position = decode_cursor(cursor) if cursor is not None else None
        found: builtins.list[MutationRequest] = []
        batch = limit + 1
        while True:
            clauses, values = ([where], builtins.list(params)) if where else ([], [])
            if position is not None:
                clauses.append('(created_at, request_id COLLATE "C") > (%s, %s)')
                values.extend(position)
            values.append(batch)
            rows = await self._fetch(" AND ".join(clauses), values, " LIMIT %s")
            for request in rows:
                position = (request.created_at, request.request_id)
                if query.matches(request):
                    found.append(request)
                    if len(found) > limit:
                        break
            if len(found) > limit or len(rows) < batch:
                break
            batch = min(batch * 2, 1000)
        items = tuple(found[:limit])
        more = len(found) > limit
        return RequestPage(items, encode_cursor(items[-1]) if more and items else None)


def _where(query: RequestQuery) -> tuple[str, list[Any]]:
    """The SQL filter for the dimensions of ``query`` that have columns, and its parameters.

    Rows it selects may still fail ``query.matches`` on the other dimensions, which
    :meth:`PostgresRequestStore.list` checks in Python.
    """
    clauses: list[str] = []
    params: list[Any] = []

    def any_of(column: str, values: list[str]) -> None:
        clauses.append(f"{column} = ANY(%s)")
        params.append(values)

    if query.request_ids:
        any_of("request_id", sorted(query.request_ids))
    if query.statuses:
        any_of("status", [s.value for s in query.statuses])
    if query.pending_reasons:
        any_of("pending_reason", [r.value for r in query.pending_reasons])
    if query.state_ids:
        any_of("state_id", sorted(query.state_ids))
    if query.actor_ids:
        any_of("actor_id", sorted(query.actor_ids))
    bounds: tuple[tuple[str, str, datetime | None], ...] = (
        ("created_at", ">=", query.created_from),
        ("created_at", "<=", query.created_to),
        ("updated_at", ">=", query.updated_from),
        ("updated_at", "<=", query.updated_to),
    )
    for column, operator, bound in bounds:
        if bound is not None:
            clauses.append(f"{column} {operator} %s")
            params.append(bound)
    return " AND ".join(clauses), params


class PostgresDecisionHistory:
    """Decisions in the ``decisions`` table, append order kept by a ``bigserial`` id."""

    def __init__(self, db: _Database) -> None:
        self._db = db
        s = db.s
        self.insert_sql = (
            f"INSERT INTO {s}.decisions (request_id, category, timestamp, document) "
            "VALUES (%s, %s, %s, %s)"
        )
        self._for_request = (
            f"SELECT id, document FROM {s}.decisions WHERE request_id = %s ORDER BY id"
        )
        self._recent = f"SELECT id, request_id, document FROM {s}.decisions"

    async def append(self, request_id: str, decisions: Sequence[RequestDecision]) -> None:
        """Append ``decisions`` to ``request_id``'s log, all or none."""
        rows = self._db.decision_rows(request_id, decisions)
        if not rows:
            return
        async with self._db.transaction() as conn, conn.cursor() as cursor:
            await cursor.executemany(self.insert_sql, rows)

    async def for_request(self, request_id: str) -> Sequence[RequestDecision]:
        """Decisions of one request, oldest first."""
        async with self._db.connection() as conn:
            rows = await (await conn.execute(self._for_request, (request_id,))).fetchall()
        return tuple(self._db.decision_from(row_id, request_id, text) for row_id, text in rows)

    async def recent(
        self, limit: int = 50, *, category: DecisionCategory | None = None
    ) -> Sequence[DecisionRecord]:
        """The newest decisions across requests, newest first (ties: newest append first)."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if limit == 0:
            return []
        sql = self._recent
        params: list[Any] = []
        if category is not None:
            sql += " WHERE category = %s"
            params.append(category.value)
        sql += " ORDER BY timestamp DESC, id DESC LIMIT %s"
        params.append(limit)
        async with self._db.connection() as conn:
            rows = await (await conn.execute(sql, params)).fetchall()
        return [
            DecisionRecord(request_id, self._db.decision_from(row_id, request_id, text))
            for row_id, request_id, text in rows
        ]


class PostgresStateStore:
    """States with decimal-counter versions ("1", "2", ...) and compare-and-set writes."""

    def __init__(self, db: _Database) -> None:
        self._db = db
        s = db.s
        self._get = f"SELECT version, request_id, document FROM {s}.states WHERE state_id = %s"
        self.lock_sql = f"SELECT version FROM {s}.states WHERE state_id = %s FOR UPDATE"
        self._insert = (
            f"INSERT INTO {s}.states (state_id, version, request_id, document) "
            "VALUES (%s, %s, %s, %s)"
        )
        self._update = (
            f"UPDATE {s}.states SET version = %s, request_id = %s, document = %s "
            "WHERE state_id = %s"
        )
        self._produced = (
            f"INSERT INTO {s}.state_versions (state_id, request_id, version) "
            "VALUES (%s, %s, %s) ON CONFLICT (state_id, request_id) "
            "DO UPDATE SET version = EXCLUDED.version"
        )
        self._version_by_request = (
            f"SELECT version FROM {s}.state_versions WHERE state_id = %s AND request_id = %s"
        )

    async def get(self, state_id: str) -> VersionedState | None:
        """The state with its version and producing request, or None."""
        async with self._db.connection() as conn:
            row = await (await conn.execute(self._get, (state_id,))).fetchone()
        if row is None:
            return None
        version, request_id, text = row
        return VersionedState(self._db.state_from(state_id, text), version, request_id)

    async def put(
        self,
        state_id: str,
        state: Any,
        *,
        expected_version: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Write ``state`` as the version after ``expected_version`` (None creates it)."""
        document = self._db.dumps(self._db.registry.unstructure_value(state))
        async with self._db.transaction() as conn:
            return await self.write(conn, state_id, document, expected_version, request_id)

    async def check(self, conn: Connection, state_id: str, expected_version: str | None) -> bool:
        """Lock the state row; ConcurrencyError unless it is at ``expected_version``.

        Returns whether the row exists.
        """
        row = await (await conn.execute(self.lock_sql, (state_id,))).fetchone()
        actual = None if row is None else str(row[0])
        if actual != expected_version:
            raise _state_conflict(state_id, expected_version, actual)
        return row is not None

    async def write(
        self,
        conn: Connection,
        state_id: str,
        document: str,
        expected_version: str | None,
        request_id: str | None,
        *,
        checked: bool | None = None,
    ) -> str:
        """Check (unless ``checked`` tells whether the row exists) and write, in ``conn``'s
        transaction; returns the new version."""
        exists = await self.check(conn, state_id, expected_version) if checked is None else checked
        version = next_version(expected_version)
        if exists:
            await conn.execute(self._update, (version, request_id, document, state_id))
        else:
            try:
                async with conn.transaction():
                    await conn.execute(self._insert, (state_id, version, request_id, document))
            except psycopg.errors.UniqueViolation:
                # Created concurrently between our lock attempt and the insert.
                row = await (await conn.execute(self._get, (state_id,))).fetchone()
                raise _state_conflict(
                    state_id, expected_version, None if row is None else row[0]
                ) from None
        if request_id is not None:
            await conn.execute(self._produced, (state_id, request_id, version))
        return version

    async def version_by_request(self, state_id: str, request_id: str) -> str | None:
        """The version of ``state_id`` that ``request_id`` produced, if any."""
        async with self._db.connection() as conn:
            row = await (
                await conn.execute(self._version_by_request, (state_id, request_id))
            ).fetchone()
        return None if row is None else str(row[0])


def _state_conflict(state_id: str, expected: str | None, actual: str | None) -> ConcurrencyError:
    return ConcurrencyError(
        f"state {state_id!r} is at version {actual!r}, expected {expected!r}",
        key=state_id,
        expected=expected,
        actual=actual,
    )


class PostgresAuditSink:
    """Audit entries in the ``audit`` table, oldest first."""

    def __init__(self, db: _Database) -> None:
        self._db = db
        self._insert = (
            f"INSERT INTO {db.s}.audit (state_id, executed_at, document) VALUES (%s, %s, %s)"
        )
        self._select = f"SELECT id, document FROM {db.s}.audit"

    async def record(self, entry: AuditEntry) -> None:
        """Persist ``entry``."""
        document = self._db.record_document(entry)
        async with self._db.connection() as conn:
            await conn.execute(self._insert, (entry.state_id, entry.executed_at, document))

    async def entries(
        self,
        state_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEntry]:
        """Entries (oldest first), optionally for one state and within inclusive bounds."""
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("state_id = %s", state_id),
            ("executed_at >= %s", since),
            ("executed_at <= %s", until),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        sql = self._select + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY id"
        async with self._db.connection() as conn:
            rows = await (await conn.execute(sql, params)).fetchall()
        return [self._db.record_from("audit", row_id, text, AuditEntry) for row_id, text in rows]


class PostgresHistoryStore:
    """Each state's committed history in the ``history`` table, in append order."""

    def __init__(self, db: _Database) -> None:
        self._db = db
        self.insert_sql = (
            f"INSERT INTO {db.s}.history (state_id, executed_at, document) VALUES (%s, %s, %s)"
        )
        self._select = f"SELECT id, document FROM {db.s}.history WHERE state_id = %s"

    def row(self, entry: HistoryEntry) -> tuple[Any, ...]:
        return (entry.state_id, entry.executed_at, self._db.record_document(entry))

    async def append(self, entry: HistoryEntry) -> None:
        """Append ``entry`` to its state's history."""
        row = self.row(entry)
        async with self._db.connection() as conn:
            await conn.execute(self.insert_sql, row)

    async def _entries(self, tail: str, params: Sequence[Any]) -> list[HistoryEntry]:
        async with self._db.connection() as conn:
            rows = await (await conn.execute(self._select + tail, params)).fetchall()
        return [
            self._db.record_from("history", row_id, text, HistoryEntry) for row_id, text in rows
        ]

    async def history(self, state_id: str) -> MutationHistory[Any]:
        """The whole history of ``state_id`` (empty when unknown)."""
        return MutationHistory(state_id, tuple(await self._entries(" ORDER BY id", (state_id,))))

    async def between(
        self, state_id: str, start: datetime, end: datetime
    ) -> Sequence[HistoryEntry]:
        """Entries executed within the inclusive bounds, oldest first."""
        return await self._entries(
            " AND executed_at >= %s AND executed_at <= %s ORDER BY id", (state_id, start, end)
        )

    async def recent(self, state_id: str, limit: int) -> Sequence[HistoryEntry]:
        """At most ``limit`` newest entries, newest first."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if limit == 0:
            return []
        return await self._entries(" ORDER BY id DESC LIMIT %s", (state_id, limit))


class PostgresCommitter:
    """Writes a governed execution in one transaction: checks first, then every write.

    The requests (in id order, so concurrent commits cannot deadlock) and then the state
    are locked with ``SELECT ... FOR UPDATE``; every expected revision and the expected
    state version are checked before anything is written. A mismatch raises
    RequestConcurrencyError (or RequestNotFoundError) or :class:`mutator.ConcurrencyError`
    and rolls the transaction back, so nothing is written.
    """

    def __init__(
        self,
        db: _Database,
        requests: PostgresRequestStore,
        decisions: PostgresDecisionHistory,
        states: PostgresStateStore,
        history: PostgresHistoryStore,
    ) -> None:
        self._db = db
        self._requests = requests
        self._decisions = decisions
        self._states = states
        self._history = history
        self._lock_requests = (
            f"SELECT request_id, revision FROM {db.s}.requests "
            'WHERE request_id = ANY(%s) ORDER BY request_id COLLATE "C" FOR UPDATE'
        )

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        """Apply every write in ``commit``; return the stored requests in order."""
        db = self._db
        stored = tuple(
            attrs.evolve(w.request, revision=w.expected_revision + 1) for w in commit.requests
        )
        request_rows = [
            (*db.request_row(s, s.revision), w.request.request_id, w.expected_revision)
            for w, s in zip(commit.requests, stored, strict=True)
        ]
        decision_rows = [
            row
            for w in commit.requests
            for row in db.decision_rows(w.request.request_id, w.new_decisions)
        ]
        history_rows = [self._history.row(entry) for entry in commit.history]
        state = commit.state
        state_document = (
            db.dumps(db.registry.unstructure_value(state.state)) if state is not None else None
        )
        if state is not None and next_version(state.expected_version) != state.new_version:
            raise ValueError(
                f"state write expects version {state.new_version!r} after "
                f"{state.expected_version!r}: versions must be decimal counters (next_version)"
            )
        async with db.transaction() as conn:
            ids = [w.request.request_id for w in commit.requests]
            rows = await (await conn.execute(self._lock_requests, (ids,))).fetchall()
            revisions = {rid: int(revision) for rid, revision in rows}
            for write in commit.requests:
                request_id = write.request.request_id
                if request_id not in revisions:
                    raise RequestNotFoundError(request_id)
                if revisions[request_id] != write.expected_revision:
                    raise RequestConcurrencyError(
                        request_id, write.expected_revision, revisions[request_id]
                    )
            exists: bool | None = None
            if state is not None:
                exists = await self._states.check(conn, state.state_id, state.expected_version)
            # Every check passed and every row is locked: write.
            if state is not None:
                assert state_document is not None
                await self._states.write(
                    conn,
                    state.state_id,
                    state_document,
                    state.expected_version,
                    state.request_id,
                    checked=exists,
                )
            async with conn.cursor() as cursor:
                await cursor.executemany(self._requests.update_sql, request_rows)
                if decision_rows:
                    await cursor.executemany(self._decisions.insert_sql, decision_rows)
                if history_rows:
                    await cursor.executemany(self._history.insert_sql, history_rows)
        return stored


class PostgresStore:
    """A :class:`~mutator_governance.protocols.GovernanceStore` on PostgreSQL (asyncio only).

    Open it with :meth:`open` (or ``open_store("postgresql://...")`` /
    ``Governance.open(...)``), close it with :meth:`aclose`. Every sub-store shares one
    ``psycopg_pool.AsyncConnectionPool``; ``committer`` writes a governed execution in one
    transaction. The store only runs on asyncio (psycopg's async driver), not on trio.
    """

    def __init__(self, db: _Database) -> None:
        self._db = db
        self._requests = PostgresRequestStore(db)
        self._decisions = PostgresDecisionHistory(db)
        self._states = PostgresStateStore(db)
        self._audit = PostgresAuditSink(db)
        self._history = PostgresHistoryStore(db)
        self._committer = PostgresCommitter(
            db, self._requests, self._decisions, self._states, self._history
        )

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        registry: MutationRegistry,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 10.0,
        check_connections: bool = True,
    ) -> PostgresStore:
        """Connect to ``url``, create or migrate the schema, and open the connection pool.

        ``schema`` defaults to the URL's ``?schema=`` parameter, else ``"mutator"``; it must
        be a plain identifier. ``min_size``/``max_size`` size the pool; ``connect_timeout``
        (seconds) bounds connecting and waiting for a pooled connection.
        ``check_connections`` checks each pooled connection before use, so connections
        broken by a server restart are replaced instead of failing once.

        Raises StoreUnavailableError (password removed) when the server cannot be reached,
        StoredDataError when the database was migrated by a newer release, ValueError for
        a bad schema name or pool size, RuntimeError outside asyncio.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("PostgresStore runs on asyncio only (psycopg async)") from None
        conninfo, url_schema = split_url(url)
        schema = schema or url_schema or DEFAULT_SCHEMA
        if not _IDENTIFIER.fullmatch(schema):
            raise ValueError(
                f"schema {schema!r} must be an identifier: letters, digits and '_', "
                "not starting with a digit, at most 63 characters"
            )
        if min_size < 0 or max_size < max(1, min_size):
            raise ValueError("pool sizes must satisfy 0 <= min_size <= max_size, max_size >= 1")
        safe_url = redact_url(url)
        password = urlsplit(url).password
        timeout = connect_timeout
        libpq_timeout = max(1, round(timeout))
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, "connect_timeout": libpq_timeout},
            open=False,
            timeout=timeout,
            check=AsyncConnectionPool.check_connection if check_connections else None,
            name=f"mutator:{schema}",
        )
        db = _Database(
            pool, registry=registry, schema=schema, url=safe_url, password=password, timeout=timeout
        )
        try:
            conn = await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, connect_timeout=libpq_timeout
            )
        except psycopg.Error as error:
            db.unavailable("cannot connect to PostgreSQL", error)
        try:
            async with conn:
                await _migrate(conn, schema, safe_url)
        except psycopg.Error as error:
            db.unavailable(f"cannot create or migrate the schema {schema!r}", error)
        try:
            await pool.open(wait=True, timeout=timeout)
        except (PoolTimeout, psycopg.OperationalError) as error:
            await pool.close()
            db.unavailable("cannot open the PostgreSQL connection pool", error)
        return cls(db)

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding the tables."""
        return self._db.schema

    @property
    def requests(self) -> PostgresRequestStore:
        return self._requests

    @property
    def decisions(self) -> PostgresDecisionHistory:
        return self._decisions

    @property
    def states(self) -> PostgresStateStore:
        return self._states

    @property
    def audit(self) -> PostgresAuditSink:
        return self._audit

    @property
    def history(self) -> PostgresHistoryStore:
        return self._history

    @property
    def committer(self) -> PostgresCommitter:
        return self._committer

    async def aclose(self) -> None:
        """Close the pool; the store is unusable afterwards (idempotent)."""
        await self._db.pool.close()

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _migrate(conn: Connection, schema: str, url: str) -> None:
    """Create or upgrade ``schema`` to SCHEMA_VERSION under an advisory transaction lock."""
    s = f'"{schema}"'
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_advisory_key(schema),))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.schema_version ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = await (await conn.execute(f"SELECT max(version) FROM {s}.schema_version")).fetchone()
        current = int(row[0]) if row is not None and row[0] is not None else 0
        if current > SCHEMA_VERSION:
            raise StoredDataError(
                f"the database schema {schema!r} is at version {current}, newer than version "
                f"{SCHEMA_VERSION} which this release of mutator supports; upgrade mutator "
                f"({url})",
                backend=BACKEND,
                key=f"{schema}.schema_version",
                field="version",
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version - 1]:
                await conn.execute(statement.format(s=s))
            await conn.execute(f"INSERT INTO {s}.schema_version (version) VALUES (%s)", (version,))
