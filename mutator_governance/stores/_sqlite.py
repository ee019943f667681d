"""The embedded SQLite backend: requests, decisions, states, audit and history in one file.

:class:`SQLiteStore` implements :class:`~mutator_governance.protocols.GovernanceStore`
with the standard library's :mod:`sqlite3`, run on worker threads through
:func:`anyio.to_thread.run_sync`, so it works on asyncio and on trio::

    store = await SQLiteStore.open("sqlite:///governance.db", registry=registry)
    try:
        ...
    finally:
        await store.aclose()

or, more commonly, ``Governance.open("sqlite:///governance.db", registry=registry)``.

Files run in WAL mode with ``synchronous=NORMAL`` and a busy timeout, so several processes
can share one database. Each store writes through one connection, one immediate
transaction at a time, and reads through a small pool of connections; an in-memory
database (``sqlite:///:memory:``) is private to its store and uses one connection for
everything. Every compare-and-set, and every governed commit, is one ``BEGIN IMMEDIATE``
transaction that checks before it writes: a lost race writes nothing.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import unquote

import anyio
import attrs

from mutator import AuditEntry, ConcurrencyError, HistoryEntry, MutationHistory
from mutator.serialization import structure, unstructure

from .._commit_types import GovernedCommit
from .._decisions import RequestDecision
from .._enums import DecisionCategory, PendingReason, RequestStatus
from .._errors import (
    GovernanceError,
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
from ._documents import decode, parse
from ._sqlite_schema import SCHEMA_VERSION, migrate

__all__ = [
    "SCHEMA_VERSION",
    "SQLiteAuditSink",
    "SQLiteCommitter",
    "SQLiteDecisionHistory",
    "SQLiteHistoryStore",
    "SQLiteRequestStore",
    "SQLiteStateStore",
    "SQLiteStore",
    "sqlite_path",
]

T = TypeVar("T")
Row = tuple[Any, ...]
_Op = Callable[[sqlite3.Connection], T]

BACKEND = "sqlite"
MEMORY = ":memory:"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_REQUEST_COLUMNS = "request_id, document"


def sqlite_path(url: str | os.PathLike[str]) -> str:
    """The database path named by ``url``.

    ``sqlite:///relative.db`` is relative to the working directory,
    ``sqlite:////absolute/path.db`` absolute, ``sqlite:///:memory:`` (or ``sqlite://``) an
    in-memory database; anything that is not a ``sqlite:`` URL is taken as a plain path.
    """
    if isinstance(url, os.PathLike):
        return os.fspath(url)
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"expected a sqlite:/// URL or a path, got {url!r}")
    scheme, colon, rest = url.partition(":")
    if not colon or scheme.lower() != "sqlite":
        return url
    if not rest.startswith("//"):
        raise ValueError(f"malformed SQLite URL {url!r}: use sqlite:///relative/path.db")
    host, _, path = rest[2:].partition("/")
    if host not in ("", "localhost"):
        raise ValueError(f"SQLite URLs name no host, got {host!r} in {url!r}")
    if "?" in path or "#" in path:
        raise ValueError(
            f"SQLite URL {url!r} has a query or fragment; pass options as keyword arguments"
        )
    path = unquote(path)
    return path or MEMORY


def _micros(moment: datetime) -> int:
    """``moment`` as integer microseconds since the epoch (TypeError when naive)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise TypeError(f"expected a timezone-aware datetime, got {moment!r}")
    return (moment - _EPOCH) // _MICROSECOND


def _fetch_all(connection: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    cursor = connection.execute(sql, params)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


def _execute(connection: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> int:
    """Run one statement and return its row count.

    Cursors never leave the worker thread: one dropped on another thread would reset a
    cached statement while this connection is in use there.
    """
    cursor = connection.execute(sql, params)
    try:
        return cursor.rowcount
    finally:
        cursor.close()


def _execute_many(connection: sqlite3.Connection, sql: str, rows: Iterable[Sequence[Any]]) -> None:
    cursor = connection.executemany(sql, rows)
    cursor.close()


def _fetch_one(connection: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> Row | None:
    rows = _fetch_all(connection, sql, params)
    return rows[0] if rows else None


class _Database:
    """Connections to one SQLite database and the threads that use them.

    Writes go through one connection under a lock, each in its own ``BEGIN IMMEDIATE``
    transaction; reads take a pooled connection (autocommit, ``query_only``). An
    in-memory database lives in its one connection, which serves reads too.
    """

    def __init__(self, path: str, *, busy_timeout: float, pool_size: int) -> None:
        self.path = path
        self.memory = path == MEMORY
        self.busy_timeout = busy_timeout
        self.pool_size = pool_size
        self.schema_version = 0
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._writer: sqlite3.Connection | None = None
        self._closed = False

    # -- connections (worker threads) --------------------------------------------------

    def _connect(self, *, reader: bool) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=128,
            )
        except sqlite3.Error as error:
            raise StoreUnavailableError(
                f"cannot open the SQLite database {self.path!r}: {error}", url=self.path
            ) from error
        try:
            _execute(connection, f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if not self.memory:
                _execute(connection, "PRAGMA synchronous = NORMAL")
            if reader:
                _execute(connection, "PRAGMA query_only = ON")
        except BaseException as error:
            connection.close()
            if isinstance(error, sqlite3.Error):
                raise self._translate(error) from error
            raise
        return connection

    def open(self) -> None:
        """Connect the writer, switch files to WAL and migrate the schema."""
        connection = self._connect(reader=False)
        try:
            try:
                if not self.memory:
                    mode = _fetch_one(connection, "PRAGMA journal_mode")
                    if mode is None or str(mode[0]).lower() != "wal":
                        _fetch_all(connection, "PRAGMA journal_mode = WAL")
                self.schema_version = migrate(connection, self.path)
            except sqlite3.Error as error:
                raise self._translate(error) from error
        except BaseException:
            connection.close()
            raise
        self._writer = connection

    def close(self) -> None:
        with self._write_lock:
            self._closed = True
            writer, self._writer = self._writer, None
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        if writer is not None:
            writer.close()

    def _closed_error(self) -> StoreUnavailableError:
        return StoreUnavailableError("the SQLite store is closed", url=self.path)

    def _translate(self, error: sqlite3.Error) -> GovernanceError:
        message = str(error)
        if isinstance(error, sqlite3.OperationalError):
            if "locked" in message or "busy" in message:
                return StoreUnavailableError(
                    f"the SQLite database stayed locked longer than the busy timeout of "
                    f"{self.busy_timeout:g}s ({message})",
                    url=self.path,
                )
            return StoreUnavailableError(f"SQLite error: {message}", url=self.path)
        if isinstance(error, sqlite3.DatabaseError):
            return StoredDataError(
                f"the database cannot be read: {message}", backend=BACKEND, key=self.path
            )
        return StoreUnavailableError(f"SQLite error: {message}", url=self.path)

    def read(self, operation: _Op[T]) -> T:
        """Run ``operation`` on a reading connection (call from a worker thread)."""
        if self.memory:
            with self._write_lock:
                if self._writer is None:
                    raise self._closed_error()
                try:
                    return self._no_cursor(operation(self._writer))
                except sqlite3.Error as error:
                    raise self._translate(error) from error
        connection = self._take_reader()
        try:
            return self._no_cursor(operation(connection))
        except sqlite3.Error as error:
            raise self._translate(error) from error
        finally:
            self._give_back(connection)

    def write(self, operation: _Op[T]) -> T:
        """Run ``operation`` in one ``BEGIN IMMEDIATE`` transaction (from a worker thread).

        Any exception rolls the transaction back; sqlite3 errors become governance errors.
        """
        with self._write_lock:
            connection = self._writer
            if connection is None:
                raise self._closed_error()
            try:
                _execute(connection, "BEGIN IMMEDIATE")
                try:
                    result = self._no_cursor(operation(connection))
                    _execute(connection, "COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        _execute(connection, "ROLLBACK")
                    raise
            except sqlite3.Error as error:
                raise self._translate(error) from error
            return result

    def _take_reader(self) -> sqlite3.Connection:
        with self._pool_lock:
            if self._closed:
                raise self._closed_error()
            if self._idle:
                return self._idle.pop()
        return self._connect(reader=True)

    def _give_back(self, connection: sqlite3.Connection) -> None:
        with self._pool_lock:
            if not self._closed and len(self._idle) < self.pool_size:
                self._idle.append(connection)
                return
        connection.close()

    @staticmethod
    def _no_cursor(result: T) -> T:
        if isinstance(result, sqlite3.Cursor):
            result.close()
            raise TypeError("a database operation must not return a cursor")
        return result

    # -- from the event loop -------------------------------------------------------------

    async def run_read(self, operation: _Op[T]) -> T:
        return await anyio.to_thread.run_sync(self.read, operation)

    async def run_write(self, operation: _Op[T]) -> T:
        return await anyio.to_thread.run_sync(self.write, operation)


class _Codec:
    """Documents in and out through the registry; unreadable ones raise StoredDataError."""

    def __init__(self, registry: MutationRegistry) -> None:
        self.registry = registry

    def dumps(self, data: Any) -> str:
        """The registry's compact JSON (always encodable as UTF-8)."""
        return self.registry.dumps(data)

    def request(self, request: MutationRequest) -> str:
        return self.dumps(self.registry.unstructure_request(request))

    def decision(self, decision: RequestDecision) -> str:
        return self.dumps(self.registry.unstructure_decision(decision))

    def value(self, value: Any) -> str:
        return self.dumps(self.registry.unstructure_value(value))

    def record(self, record: AuditEntry | HistoryEntry) -> str:
        return self.dumps(unstructure(self.registry.converter, record))

    def read(
        self,
        document: Any,
        build: Callable[[Any], T],
        *,
        what: str,
        key: str | None,
        request_id: str | None = None,
    ) -> T:
        """A ``what`` document read back through ``build`` (StoredDataError when unreadable)."""
        data = parse(self.registry, document, backend=BACKEND, key=key, request_id=request_id)
        return decode(build, data, backend=BACKEND, key=key, request_id=request_id)

    def read_request(self, row: Row) -> MutationRequest:
        request_id, document = row[0], row[1]
        return self.read(
            document,
            self.registry.structure_request,
            what="request",
            key=request_id,
            request_id=request_id,
        )

    def read_decision(self, request_id: str, document: Any) -> RequestDecision:
        return self.read(
            document,
            self.registry.structure_decision,
            what="decision",
            key=request_id,
            request_id=request_id,
        )

    def read_state(self, state_id: str, document: Any) -> Any:
        return self.read(document, self.registry.structure_value, what="state", key=state_id)

    def read_audit(self, key: str, document: Any) -> AuditEntry:
        converter = self.registry.converter
        return self.read(
            document, lambda data: structure(converter, data, AuditEntry), what="audit", key=key
        )

    def read_history(self, key: str, document: Any) -> HistoryEntry:
        converter = self.registry.converter
        return self.read(
            document,
            lambda data: structure(converter, data, HistoryEntry),
            what="history",
            key=key,
        )


def _request_row(codec: _Codec, request: MutationRequest) -> tuple[Any, ...]:
    """The column values of ``request`` (its revision included), in table order."""
    return (
        request.request_id,
        request.state_id,
        request.status.value,
        request.pending_reason.value if request.pending_reason is not None else None,
        request.context.actor_id,
        _micros(request.created_at),
        _micros(request.updated_at),
        request.revision,
        codec.request(request),
    )


_INSERT_REQUEST = (
    "INSERT INTO requests (request_id, state_id, status, pending_reason, actor_id, "
    "created_at, updated_at, revision, document) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (request_id) DO NOTHING"
)
_UPDATE_REQUEST = (
    "UPDATE requests SET state_id = ?, status = ?, pending_reason = ?, actor_id = ?, "
    "created_at = ?, updated_at = ?, revision = ?, document = ? "
    "WHERE request_id = ? AND revision = ?"
)
_INSERT_DECISION = (
    "INSERT INTO decisions (request_id, category, timestamp, document) VALUES (?, ?, ?, ?)"
)


def _update_params(row: tuple[Any, ...], expected_revision: int) -> tuple[Any, ...]:
    return (*row[1:], row[0], expected_revision)


def _stored_revision(connection: sqlite3.Connection, request_id: str) -> int | None:
    found = _fetch_one(
        connection, "SELECT revision FROM requests WHERE request_id = ?", (request_id,)
    )
    return None if found is None else int(found[0])


def _check_revision(connection: sqlite3.Connection, request_id: str, expected: int) -> None:
    actual = _stored_revision(connection, request_id)
    if actual is None:
        raise RequestNotFoundError(request_id)
    if actual != expected:
        raise RequestConcurrencyError(request_id, expected, actual)


def _decision_rows(
    codec: _Codec, request_id: str, decisions: Iterable[RequestDecision]
) -> list[tuple[Any, ...]]:
    return [
        (request_id, d.category.value, _micros(d.timestamp), codec.decision(d)) for d in decisions
    ]


def _state_version(connection: sqlite3.Connection, state_id: str) -> str | None:
    found = _fetch_one(connection, "SELECT version FROM states WHERE state_id = ?", (state_id,))
    return None if found is None else str(found[0])


def _put_state(
    connection: sqlite3.Connection,
    state_id: str,
    document: str,
    expected_version: str | None,
    request_id: str | None,
) -> str:
    """Check the version, then write the state; returns the new version (caller's tx)."""
    actual = _state_version(connection, state_id)
    if actual != expected_version:
        raise ConcurrencyError(
            f"state {state_id!r} is at version {actual!r}, expected {expected_version!r}",
            key=state_id,
            expected=expected_version,
            actual=actual,
        )
    version = next_version(expected_version)
    _execute(
        connection,
        "INSERT INTO states (state_id, version, request_id, document) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (state_id) DO UPDATE SET version = excluded.version, "
        "request_id = excluded.request_id, document = excluded.document",
        (state_id, version, request_id, document),
    )
    if request_id is not None:
        _execute(
            connection,
            "INSERT OR REPLACE INTO state_versions (state_id, request_id, version) "
            "VALUES (?, ?, ?)",
            (state_id, request_id, version),
        )
    return version


def _within(column: str, values: Iterable[Any]) -> tuple[str, list[Any]]:
    """``column IN (...)``, matching NULL too when None is among ``values``."""
    values = list(values)
    present = sorted({v for v in values if v is not None})
    parts = []
    if present:
        parts.append(f"{column} IN ({', '.join('?' * len(present))})")
    if None in values:
        parts.append(f"{column} IS NULL")
    return "(" + " OR ".join(parts) + ")", present


def _where(query: RequestQuery) -> tuple[str, list[Any]]:
    """The SQL filter for the dimensions of ``query`` that have columns, and its parameters.

    Rows it selects may still fail ``query.matches`` on the other dimensions (intent,
    metadata, side effects, ...), which :meth:`SQLiteRequestStore.list` checks in Python.
    """
    clauses: list[str] = []
    params: list[Any] = []

    def within(column: str, values: Iterable[Any]) -> None:
        clause, values_ = _within(column, values)
        clauses.append(clause)
        params.extend(values_)

    def bound(clause: str, moment: datetime | None) -> None:
        if moment is not None:
            clauses.append(clause)
            params.append(_micros(moment))

    if query.statuses:
        within("status", (s.value for s in query.statuses))
    if query.pending_reasons:
        within(
            "pending_reason",
            [r.value if r is not None else None for r in query.pending_reasons],
        )
    if query.request_ids:
        within("request_id", query.request_ids)
    if query.state_ids:
        within("state_id", query.state_ids)
    if query.actor_ids:
        within("actor_id", query.actor_ids)
    bound("created_at >= ?", query.created_from)
    bound("created_at <= ?", query.created_to)
    bound("updated_at >= ?", query.updated_from)
    bound("updated_at <= ?", query.updated_to)
    return " AND ".join(clauses), params


class SQLiteRequestStore:
    """Requests in the ``requests`` table, with compare-and-set on ``revision``.

    Filters, ordering (``created_at`` then ``request_id`` in code point order) and cursor
    pagination run in SQL. Implements :class:`~mutator_governance.RequestStore`.
    """

    def __init__(self, database: _Database, codec: _Codec) -> None:
        self._db = database
        self._codec = codec

    async def create(self, request: MutationRequest) -> MutationRequest:
        """Store a new request at revision 0 (RequestAlreadyExistsError when the id is taken)."""
        stored = request if request.revision == 0 else attrs.evolve(request, revision=0)
        row = _request_row(self._codec, stored)

        def insert(connection: sqlite3.Connection) -> None:
            if _execute(connection, _INSERT_REQUEST, row) == 0:
                raise RequestAlreadyExistsError(stored.request_id)

        await self._db.run_write(insert)
        return stored

    async def replace(self, request: MutationRequest, *, expected_revision: int) -> MutationRequest:
        """Store ``request`` at ``expected_revision + 1`` if the stored revision still matches.

        Raises RequestConcurrencyError on a mismatch, RequestNotFoundError when unknown.
        """
        stored = attrs.evolve(request, revision=expected_revision + 1)
        params = _update_params(_request_row(self._codec, stored), expected_revision)

        def update(connection: sqlite3.Connection) -> None:
            if _execute(connection, _UPDATE_REQUEST, params) == 0:
                _check_revision(connection, stored.request_id, expected_revision)
                raise AssertionError("unreachable: the revision matched but nothing was updated")

        await self._db.run_write(update)
        return stored

    async def get(self, request_id: str) -> MutationRequest | None:
        """The stored request, or None."""
        row = await self._db.run_read(
            lambda c: _fetch_one(
                c, f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE request_id = ?", (request_id,)
            )
        )
        return None if row is None else self._codec.read_request(row)

    async def by_state(self, state_id: str) -> Sequence[MutationRequest]:
        """Requests targeting ``state_id``, by ``created_at`` then id."""
        return await self._select("state_id = ?", [state_id])

    async def pending(
        self, reason: PendingReason | None = None, *, state_id: str | None = None
    ) -> Sequence[MutationRequest]:
        """PENDING requests, optionally with one reason and for one state, ordered."""
        clauses = ["status = ?"]
        params: builtins.list[Any] = [RequestStatus.PENDING.value]
        if reason is not None:
            clauses.append("pending_reason = ?")
            params.append(reason.value)
        if state_id is not None:
            clauses.append("state_id = ?")
            params.append(state_id)
        return await self._select(" AND ".join(clauses), params)

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
                clauses.append("(created_at, request_id) > (?, ?)")
                values.extend((_micros(position[0]), position[1]))
            rows = await self._rows(" AND ".join(clauses), values, batch)
            for row in rows:
                request = self._codec.read_request(row)
                position = (request.created_at, request.request_id)
                if query.matches(request):
                    found.append(request)
                    if len(found) > limit:
                        break
            if len(found) > limit or len(rows) < batch:
                break
            batch = min(batch * 2, 1000)
        items = found[:limit]
        more = len(found) > limit
        return RequestPage(items, encode_cursor(items[-1]) if more and items else None)

    async def _rows(
        self, where: str, params: builtins.list[Any], limit: int | None = None
    ) -> builtins.list[Row]:
        sql = f"SELECT {_REQUEST_COLUMNS} FROM requests"
        if where:
            sql += f" WHERE {where}"
        sql += " ORDER BY created_at, request_id"
        if limit is not None:
            sql += " LIMIT ?"
            params = [*params, limit]
        return await self._db.run_read(lambda c: _fetch_all(c, sql, params))

    async def _select(
        self, where: str, params: builtins.list[Any]
    ) -> builtins.list[MutationRequest]:
        return [self._codec.read_request(row) for row in await self._rows(where, params)]


class SQLiteDecisionHistory:
    """Decisions in the ``decisions`` table, in insertion order.

    Implements :class:`~mutator_governance.DecisionHistory`.
    """

    def __init__(self, database: _Database, codec: _Codec) -> None:
        self._db = database
        self._codec = codec

    async def append(self, request_id: str, decisions: Sequence[RequestDecision]) -> None:
        """Append ``decisions`` to ``request_id``'s log, in one transaction."""
        rows = _decision_rows(self._codec, request_id, decisions)
        if rows:
            await self._db.run_write(lambda c: _execute_many(c, _INSERT_DECISION, rows))

    async def for_request(self, request_id: str) -> Sequence[RequestDecision]:
        """Decisions of one request, oldest (first appended) first."""
        rows = await self._db.run_read(
            lambda c: _fetch_all(
                c, "SELECT document FROM decisions WHERE request_id = ? ORDER BY id", (request_id,)
            )
        )
        return tuple(self._codec.read_decision(request_id, row[0]) for row in rows)

    async def recent(
        self, limit: int = 50, *, category: DecisionCategory | None = None
    ) -> Sequence[DecisionRecord]:
        """The newest decisions across requests: by timestamp, then newest appended, first."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        sql = "SELECT request_id, document FROM decisions"
        params: list[Any] = []
        if category is not None:
            sql += " WHERE category = ?"
            params.append(category.value)
        sql += " ORDER BY timestamp DESC, id DESC LIMIT ?"
        params.append(limit)
        rows = await self._db.run_read(lambda c: _fetch_all(c, sql, params))
        return [DecisionRecord(row[0], self._codec.read_decision(row[0], row[1])) for row in rows]


class SQLiteStateStore:
    """States in the ``states`` table with decimal-counter versions and compare-and-set.

    ``state_versions`` records which request produced which version. Implements
    :class:`~mutator_governance.StateStore`.
    """

    def __init__(self, database: _Database, codec: _Codec) -> None:
        self._db = database
        self._codec = codec

    async def get(self, state_id: str) -> VersionedState | None:
        """The state with its version and producing request, or None."""
        row = await self._db.run_read(
            lambda c: _fetch_one(
                c,
                "SELECT version, request_id, document FROM states WHERE state_id = ?",
                (state_id,),
            )
        )
        if row is None:
            return None
        return VersionedState(self._codec.read_state(state_id, row[2]), str(row[0]), row[1])

    async def put(
        self,
        state_id: str,
        state: Any,
        *,
        expected_version: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Write ``state`` if it is at ``expected_version`` (None: it must not exist).

        Returns the new version; a mismatch raises :class:`mutator.ConcurrencyError`.
        """
        document = self._codec.value(state)
        return await self._db.run_write(
            lambda c: _put_state(c, state_id, document, expected_version, request_id)
        )

    async def version_by_request(self, state_id: str, request_id: str) -> str | None:
        """The version of ``state_id`` that ``request_id`` produced, if any."""
        row = await self._db.run_read(
            lambda c: _fetch_one(
                c,
                "SELECT version FROM state_versions WHERE state_id = ? AND request_id = ?",
                (state_id, request_id),
            )
        )
        return None if row is None else str(row[0])


class SQLiteAuditSink:
    """The engine's audit entries in the ``audit`` table (implements :class:`mutator.AuditSink`)."""

    def __init__(self, database: _Database, codec: _Codec) -> None:
        self._db = database
        self._codec = codec

    async def record(self, entry: AuditEntry) -> None:
        """Persist ``entry``."""
        params = (
            entry.execution_id,
            entry.state_id,
            _micros(entry.executed_at),
            self._codec.record(entry),
        )
        await self._db.run_write(
            lambda c: _execute(
                c,
                "INSERT INTO audit (execution_id, state_id, executed_at, document) "
                "VALUES (?, ?, ?, ?)",
                params,
            )
        )

    async def entries(
        self,
        state_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEntry]:
        """Entries oldest first, optionally for one state and within inclusive bounds."""
        clauses: list[str] = []
        params: list[Any] = []
        if state_id is not None:
            clauses.append("state_id = ?")
            params.append(state_id)
        if since is not None:
            clauses.append("executed_at >= ?")
            params.append(_micros(since))
        if until is not None:
            clauses.append("executed_at <= ?")
            params.append(_micros(until))
        sql = "SELECT execution_id, document FROM audit"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY id"
        rows = await self._db.run_read(lambda c: _fetch_all(c, sql, params))
        return [self._codec.read_audit(row[0], row[1]) for row in rows]


_INSERT_HISTORY = (
    "INSERT INTO history (execution_id, state_id, executed_at, document) VALUES (?, ?, ?, ?)"
)


def _history_row(codec: _Codec, entry: HistoryEntry) -> tuple[Any, ...]:
    return (entry.execution_id, entry.state_id, _micros(entry.executed_at), codec.record(entry))


class SQLiteHistoryStore:
    """Committed history in the ``history`` table (implements :class:`mutator.HistoryStore`).

    Entries come back without their ``mutation`` (it is not stored).
    """

    def __init__(self, database: _Database, codec: _Codec) -> None:
        self._db = database
        self._codec = codec

    async def append(self, entry: HistoryEntry) -> None:
        """Append ``entry`` to its state's history."""
        row = _history_row(self._codec, entry)
        await self._db.run_write(lambda c: _execute(c, _INSERT_HISTORY, row))

    async def history(self, state_id: str) -> MutationHistory[Any]:
        """The whole history of ``state_id``, oldest first (empty when unknown)."""
        return MutationHistory(state_id, await self._select(state_id, "", [], "id"))

    async def between(
        self, state_id: str, start: datetime, end: datetime
    ) -> Sequence[HistoryEntry]:
        """Entries executed within the inclusive bounds, oldest first."""
        return await self._select(
            state_id,
            " AND executed_at >= ? AND executed_at <= ?",
            [_micros(start), _micros(end)],
            "id",
        )

    async def recent(self, state_id: str, limit: int) -> Sequence[HistoryEntry]:
        """At most ``limit`` newest entries, newest first."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        return await self._select(state_id, "", [], "id DESC LIMIT ?", [limit])

    async def _select(
        self,
        state_id: str,
        where: str,
        params: list[Any],
        order: str,
        tail: list[Any] | None = None,
    ) -> list[HistoryEntry]:
        sql = f"SELECT document FROM history WHERE state_id = ?{where} ORDER BY {order}"
        values = [state_id, *params, *(tail or [])]
        rows = await self._db.run_read(lambda c: _fetch_all(c, sql, values))
        return [self._codec.read_history(state_id, row[0]) for row in rows]


class SQLiteCommitter:
    """Writes a governed execution in one ``BEGIN IMMEDIATE`` transaction.

    Every expected request revision and the expected state version are checked first; any
    mismatch rolls back and raises RequestConcurrencyError (or RequestNotFoundError) or
    :class:`mutator.ConcurrencyError`, writing nothing. Then the state (and the version
    it produced for its request), the requests, their decisions and the history entries
    are written and committed together. Implements
    :class:`~mutator_governance.ExecutionCommitter`.
    """

    def __init__(self, database: _Database, codec: _Codec) -> None:
        self._db = database
        self._codec = codec

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        """Apply every write in ``commit`` atomically; return the stored requests in order."""
        codec = self._codec
        stored = tuple(
            attrs.evolve(write.request, revision=write.expected_revision + 1)
            for write in commit.requests
        )
        updates = [
            (
                request.request_id,
                write.expected_revision,
                _update_params(_request_row(codec, request), write.expected_revision),
                _decision_rows(codec, request.request_id, write.new_decisions),
            )
            for write, request in zip(commit.requests, stored, strict=True)
        ]
        state = commit.state
        state_document = codec.value(state.state) if state is not None else None
        history = [_history_row(codec, entry) for entry in commit.history]

        def write_all(connection: sqlite3.Connection) -> None:
            for request_id, expected, _, _ in updates:
                _check_revision(connection, request_id, expected)
            if state is not None:
                assert state_document is not None
                version = _put_state(
                    connection,
                    state.state_id,
                    state_document,
                    state.expected_version,
                    state.request_id,
                )
                if version != state.new_version:
                    raise ValueError(
                        f"the state store produced version {version!r}, expected "
                        f"{state.new_version!r}: versions must be decimal counters "
                        "(see next_version)"
                    )
            for _, _, params, decisions in updates:
                _execute(connection, _UPDATE_REQUEST, params)
                if decisions:
                    _execute_many(connection, _INSERT_DECISION, decisions)
            if history:
                _execute_many(connection, _INSERT_HISTORY, history)

        await self._db.run_write(write_all)
        return stored


class SQLiteStore:
    """Everything governance keeps, in one SQLite database (a GovernanceStore).

    Open it with :meth:`open` (or through ``open_store`` / ``Governance.open``) and close
    it with :meth:`aclose` or ``async with``. The schema is created and migrated on open;
    a database written by a newer schema version is refused with a StoredDataError.
    """

    def __init__(self, database: _Database, registry: MutationRegistry) -> None:
        """Use :meth:`open`; this wires the stores to an opened database."""
        self._db = database
        self.registry = registry
        codec = _Codec(registry)
        self._requests = SQLiteRequestStore(database, codec)
        self._decisions = SQLiteDecisionHistory(database, codec)
        self._states = SQLiteStateStore(database, codec)
        self._audit = SQLiteAuditSink(database, codec)
        self._history = SQLiteHistoryStore(database, codec)
        self._committer = SQLiteCommitter(database, codec)

    @classmethod
    async def open(
        cls,
        url: str | os.PathLike[str],
        *,
        registry: MutationRegistry,
        busy_timeout: float = 5.0,
        pool_size: int = 4,
    ) -> SQLiteStore:
        """Open (creating and migrating as needed) the database named by ``url``.

        ``url`` is ``sqlite:///relative.db``, ``sqlite:////absolute/path.db``,
        ``sqlite:///:memory:`` or a plain path. ``busy_timeout`` is how many seconds a
        write waits for another connection's lock before StoreUnavailableError;
        ``pool_size`` how many idle reading connections are kept. A file that cannot be
        opened raises StoreUnavailableError naming its path.
        """
        if not isinstance(registry, MutationRegistry):
            raise TypeError(f"registry must be a MutationRegistry, got {type(registry).__name__}")
        if busy_timeout < 0:
            raise ValueError("busy_timeout must be >= 0 seconds")
        if pool_size < 0:
            raise ValueError("pool_size must be >= 0")
        database = _Database(sqlite_path(url), busy_timeout=busy_timeout, pool_size=pool_size)
        await anyio.to_thread.run_sync(database.open)
        return cls(database, registry)

    @property
    def path(self) -> str:
        """The database file (``":memory:"`` for an in-memory database)."""
        return self._db.path

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        return self._db.schema_version

    @property
    def requests(self) -> SQLiteRequestStore:
        """The request store."""
        return self._requests

    @property
    def decisions(self) -> SQLiteDecisionHistory:
        """The decision history."""
        return self._decisions

    @property
    def states(self) -> SQLiteStateStore:
        """The state store."""
        return self._states

    @property
    def audit(self) -> SQLiteAuditSink:
        """The engine's audit sink."""
        return self._audit

    @property
    def history(self) -> SQLiteHistoryStore:
        """The engine's history store."""
        return self._history

    @property
    def committer(self) -> SQLiteCommitter:
        """The atomic committer of governed executions."""
        return self._committer

    async def aclose(self) -> None:
        """Close every connection; the store is unusable afterwards (idempotent)."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._db.close)

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"SQLiteStore({self._db.path!r})"
