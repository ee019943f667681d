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

Files run in WAL mode with ``synchronous=FULL`` (configurable, see
:class:`~mutator_governance.stores._sqlite_options.SQLiteOptions`) and a busy timeout, so
several processes can share one database. Every operation costs at most one thread hop:
a write encodes its documents and runs its whole ``BEGIN IMMEDIATE`` transaction — any
failed check rolls it back whole — in one worker thread, on the store's one writing
connection, on a one-token write limiter. Work that needs no lock and no flush runs on
the event loop's thread at once, where it is cheaper than a hop: reads (a WAL reader takes
no lock) and the claim of a governed execution (committed without a flush of its own, on
a connection of its own that never checkpoints, with the state it will change read back
in the same transaction);
when the database is busy they hop too, reads on their own limiter, so writers queued on
the database lock never starve a read. An in-memory database (``sqlite:///:memory:``) is
private to its store and uses one connection for everything.

Workers reserve ready requests through a partial index of ready rows (the reservation
lives in the row until the request is next written) and expiry sweeps read the pending
requests that are due through another (each row stores its request's deadline); a
request row that cannot be read is recorded in the ``quarantine`` table and left out of
every multi-row read; retention deletes old terminal requests with their decisions in one
transaction.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import attrs

from mutator import AuditEntry, ConcurrencyError, HistoryEntry, MutationHistory
from mutator.serialization import structure, unstructure

from .._arguments import check_id, check_key, check_version
from .._commit_types import GovernedCommit, RequestWrite, StateWrite
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
from .._quarantine import QuarantinedRequest, quarantine_entry
from .._query import (
    DecisionRecord,
    RequestPage,
    RequestQuery,
    VersionedState,
    decode_cursor,
    encode_cursor,
    listing,
    next_version,
    pending_reason,
)
from .._registry import MutationRegistry
from .._request import MutationRequest, expiry_deadline
from .._retention import PurgeBatch
from ._documents import RequestDocuments, decode, pace, paced, parse
from ._sqlite_options import (
    MEMORY,
    SQLiteOptions,
    Synchronous,
    check_sqlite_file,
    parse_sqlite_url,
    sqlite_path,
)
from ._sqlite_schema import (
    DUE_ROWS,
    PENDING_ROWS,
    READY,
    SCHEMA_VERSION,
    TERMINAL_ROWS,
    migrate,
)

__all__ = [
    "SCHEMA_VERSION",
    "SQLiteAuditSink",
    "SQLiteCommitter",
    "SQLiteDecisionHistory",
    "SQLiteHistoryStore",
    "SQLiteOptions",
    "SQLiteRequestStore",
    "SQLiteStateStore",
    "SQLiteStore",
    "Synchronous",
    "sqlite_path",
]

T = TypeVar("T")
Row = tuple[Any, ...]
_Op = Callable[[sqlite3.Connection], T]

BACKEND = "sqlite"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_REQUEST_COLUMNS = "request_id, document"


def _micros(moment: datetime) -> int:
    """``moment`` as integer microseconds since the epoch (TypeError when naive).

    A datetime in :data:`~datetime.UTC` (every one the engine makes) skips the
    ``utcoffset()`` call: a third of the conversion.
    """
    tzinfo = moment.tzinfo
    if tzinfo is not UTC and (tzinfo is None or moment.utcoffset() is None):
        raise TypeError(f"expected a timezone-aware datetime, got {moment!r}")
    return (moment - _EPOCH) // _MICROSECOND


def _fetch_all(connection: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    cursor = connection.execute(sql, params)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


_INLINE_ROWS = 256
"""Reads of at most this many rows may run on the event loop's thread (see ``run_read``)."""


def _bulk(limit: int | None) -> bool:
    """Whether a read of at most ``limit`` rows (None: no limit) is a bulk read."""
    return limit is None or limit > _INLINE_ROWS


def _select_rows(sql: str, params: Sequence[Any] = ()) -> Callable[[sqlite3.Connection], list[Row]]:
    """A read of ``sql``'s raw rows (decoded afterwards, paced, on the event loop)."""
    return lambda connection: _fetch_all(connection, sql, params)


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


def _execute_many(connection: sqlite3.Connection, sql: str, rows: Iterable[Sequence[Any]]) -> int:
    """Run one statement per row; return the rows they changed together."""
    cursor = connection.executemany(sql, rows)
    try:
        return cursor.rowcount
    finally:
        cursor.close()


def _fetch_one(connection: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> Row | None:
    rows = _fetch_all(connection, sql, params)
    return rows[0] if rows else None


def _immediate(
    connection: sqlite3.Connection, operation: _Op[T], *, wait: bool
) -> tuple[bool, T | None]:
    """``operation`` in one ``BEGIN IMMEDIATE`` transaction on ``connection``.

    ``(False, None)`` when ``wait`` is false and the database lock is taken; any
    exception rolls the transaction back.
    """
    try:
        _execute(connection, "BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        message = str(error)
        if not wait and ("locked" in message or "busy" in message):
            return False, None
        raise
    try:
        result = operation(connection)
        if isinstance(result, sqlite3.Cursor):
            result.close()
            raise TypeError("a database operation must not return a cursor")
        _execute(connection, "COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.rollback()
        raise
    return True, result


class _Database:
    """Connections to one SQLite database, the threads that use them, and their limiters.

    Writes go through one connection under a lock, each in its own ``BEGIN IMMEDIATE``
    transaction, on threads from a one-token limiter (queued writers wait in the event
    loop, cancellably); reads take a pooled connection (autocommit, ``query_only``) on
    threads from their own ``pool_size``-token limiter. An in-memory database lives in its
    one connection, which serves reads too.
    """

    def __init__(self, path: str, options: SQLiteOptions) -> None:
        self.path = path
        self.memory = path == MEMORY
        self.options = options
        self.busy_timeout = options.busy_timeout
        self.pool_size = options.pool_size
        self.schema_version = 0
        # Claims may skip the WAL flush when commits flush (see SQLiteCommitter).
        self.relax_claims = not self.memory and options.synchronous in ("FULL", "EXTRA")
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._writer: sqlite3.Connection | None = None
        self._inline_lock = threading.Lock()
        self._inline: sqlite3.Connection | None = None
        # Relaxed writes (claims, reservations) tried at once on the event loop's thread.
        self._claim_lock = threading.Lock()
        self._claimer: sqlite3.Connection | None = None
        self._closed = False
        self._read_limiter: anyio.CapacityLimiter | None = None
        self._write_limiter: anyio.CapacityLimiter | None = None

    # -- connections (worker threads) --------------------------------------------------

    def _connect(
        self, *, reader: bool, wait: bool = True, claimer: bool = False
    ) -> sqlite3.Connection:
        """A new connection; a ``claimer`` never waits, flushes or checkpoints on its own."""
        timeout = self.busy_timeout if wait else 0.0
        try:
            connection = sqlite3.connect(
                self.path,
                timeout=timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=128,
            )
        except sqlite3.Error as error:
            raise StoreUnavailableError(
                f"cannot open the SQLite database {self.path!r}: {error}", url=self.path
            ) from error
        try:
            _execute(connection, f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if not self.memory:
                synchronous = self.options.synchronous
                if claimer:
                    synchronous = "NORMAL" if self.relax_claims else synchronous
                    # Checkpoints (and their flushes) stay on the writer's worker threads.
                    _execute(connection, "PRAGMA wal_autocheckpoint = 0")
                _execute(connection, f"PRAGMA synchronous = {synchronous}")
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
        with self._inline_lock:
            if self._inline is not None:
                idle.append(self._inline)
                self._inline = None
        with self._claim_lock:
            if self._claimer is not None:
                idle.append(self._claimer)
                self._claimer = None
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

    def write(self, operation: _Op[T], *, relaxed: bool = False) -> T:
        """Run ``operation`` in one ``BEGIN IMMEDIATE`` transaction (from a worker thread).

        Any exception rolls the transaction back; sqlite3 errors become governance errors.
        ``relaxed`` commits this transaction with ``synchronous=NORMAL`` (no WAL flush of
        its own; the next flushed commit makes it durable too).
        """
        with self._write_lock:
            done, result = self._transaction(operation, relaxed=relaxed, wait=True)
            assert done
            return result  # type: ignore[return-value]

    def write_now(self, operation: _Op[T]) -> tuple[bool, T | None]:
        """Try a relaxed ``operation`` at once on the calling thread, never waiting.

        ``(False, None)`` when the database lock is taken (nothing was written); the
        caller then hops to a worker thread with :meth:`write`. A file database runs it
        on its own claiming connection, whose settings (no busy timeout, no flush of its
        own when commits flush, no checkpoints) are fixed when it connects, so the
        transaction needs no statement of its own around it.
        """
        if self.memory:
            if not self._write_lock.acquire(blocking=False):
                return False, None
            try:
                return self._transaction(operation, relaxed=True, wait=False)
            finally:
                self._write_lock.release()
        if not self._claim_lock.acquire(blocking=False):
            return False, None
        try:
            if self._closed:
                raise self._closed_error()
            connection = self._claimer
            try:
                if connection is None:
                    connection = self._claimer = self._connect(
                        reader=False, wait=False, claimer=True
                    )
                return _immediate(connection, operation, wait=False)
            except sqlite3.Error as error:
                raise self._translate(error) from error
        finally:
            self._claim_lock.release()

    def _transaction(
        self, operation: _Op[T], *, relaxed: bool, wait: bool
    ) -> tuple[bool, T | None]:
        """One transaction on the writer (the write lock held by the caller)."""
        connection = self._writer
        if connection is None:
            raise self._closed_error()
        relax = relaxed and self.relax_claims
        try:
            if not wait:
                _execute(connection, "PRAGMA busy_timeout = 0")
            if relax:
                _execute(connection, "PRAGMA synchronous = NORMAL")
            try:
                done, result = _immediate(connection, operation, wait=wait)
            finally:
                if relax:
                    _execute(connection, f"PRAGMA synchronous = {self.options.synchronous}")
                if not wait:
                    _execute(connection, f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        except sqlite3.Error as error:
            raise self._translate(error) from error
        return done, result

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

    def _limiters(self) -> tuple[anyio.CapacityLimiter, anyio.CapacityLimiter]:
        if self._read_limiter is None or self._write_limiter is None:
            self._read_limiter = anyio.CapacityLimiter(self.pool_size)
            self._write_limiter = anyio.CapacityLimiter(1)
        return self._read_limiter, self._write_limiter

    async def start(self) -> None:
        """Open the database (one thread hop) and create the limiters on this event loop."""
        _, writes = self._limiters()
        await anyio.to_thread.run_sync(self.open, limiter=writes)

    def _read_now(self, operation: _Op[T]) -> tuple[bool, T | None]:
        """Try ``operation`` on the event loop's own reading connection, never waiting.

        A WAL reader needs no lock, so this almost always succeeds at once; the
        connection has no busy timeout, and when the database is busy (or the in-memory
        database's one connection is in use) it gives up: ``(False, None)``.
        """
        if self.memory:
            if not self._write_lock.acquire(blocking=False):
                return False, None
            try:
                if self._writer is None:
                    raise self._closed_error()
                try:
                    return True, self._no_cursor(operation(self._writer))
                except sqlite3.Error as error:
                    raise self._translate(error) from error
            finally:
                self._write_lock.release()
        if not self._inline_lock.acquire(blocking=False):
            return False, None
        try:
            if self._closed:
                raise self._closed_error()
            connection = self._inline
            if connection is None:
                connection = self._inline = self._connect(reader=True, wait=False)
            try:
                return True, self._no_cursor(operation(connection))
            except sqlite3.OperationalError as error:
                message = str(error)
                if "locked" in message or "busy" in message:
                    return False, None
                raise self._translate(error) from error
            except sqlite3.Error as error:
                raise self._translate(error) from error
        finally:
            self._inline_lock.release()

    async def run_read(
        self, operation: Callable[[sqlite3.Connection], T], *, bulk: bool = False
    ) -> T:
        """``operation`` on a reading connection: at once, or in one hop on the read limiter.

        Reads run on the event loop's thread when the database lets them at once (a WAL
        read takes no lock: tens of microseconds, cheaper than a thread hop), then yield
        to the loop; otherwise they hop to a worker thread on their own limiter. A
        ``bulk`` read (unbounded, or many rows) always hops: fetching thousands of rows
        takes milliseconds that must not hold the event loop.
        """
        if not bulk:
            done, result = self._read_now(operation)
            if done:
                await anyio.lowlevel.checkpoint()
                return result  # type: ignore[return-value]
        reads, _ = self._limiters()
        return await anyio.to_thread.run_sync(self.read, operation, limiter=reads)

    async def run_write(
        self, operation: Callable[[sqlite3.Connection], T], *, relaxed: bool = False
    ) -> T:
        """``operation`` in one transaction, in one hop on the write limiter."""
        _, writes = self._limiters()
        return await anyio.to_thread.run_sync(
            lambda: self.write(operation, relaxed=relaxed), limiter=writes
        )

    async def run_encoded_write(
        self,
        encode: Callable[[], Callable[[sqlite3.Connection], T]],
        *,
        relaxed: bool = False,
    ) -> T:
        """``encode()`` then its transaction, both in one worker thread (one hop).

        The documents are encoded before the write lock is taken, so encoding never
        holds up another writer. A ``relaxed`` write (a claim: no flush of its own) is
        first tried at once on the event loop's thread, where it costs tens of
        microseconds instead of a thread hop; when the writer or the database is busy
        it hops like any other write.
        """
        _, writes = self._limiters()
        if relaxed:
            operation = encode()
            done, result = self.write_now(operation)
            if done:
                await anyio.lowlevel.checkpoint()
                return result  # type: ignore[return-value]
            return await anyio.to_thread.run_sync(
                lambda: self.write(operation, relaxed=True), limiter=writes
            )

        def run() -> T:
            return self.write(encode(), relaxed=relaxed)

        return await anyio.to_thread.run_sync(run, limiter=writes)

    async def close_async(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)


class _Codec:
    """Documents in and out through the registry; unreadable ones raise StoredDataError.

    Requests and decisions are written through :class:`RequestDocuments`: each decision
    object is encoded once, though an operation writes it in its request's document and
    in its own row, and an execution writes the request twice (claim, then outcome).
    """

    def __init__(self, registry: MutationRegistry) -> None:
        self.registry = registry
        self.documents = RequestDocuments(registry)
        self._record_hooks: dict[type[Any], Callable[[Any], Any]] = {}

    def dumps(self, data: Any) -> str:
        """The registry's compact JSON (always encodable as UTF-8)."""
        return self.registry.dumps(data)

    def request(self, request: MutationRequest) -> str:
        """The registry's document of ``request`` (the same text)."""
        return self.documents.request(request)[0]

    def decision(self, decision: RequestDecision) -> str:
        """The registry's JSON of ``decision``, encoded once per decision object."""
        return self.documents.decision(decision)

    def value(self, value: Any) -> str:
        return self.dumps(self.registry.unstructure_value(value))

    def record(self, record: AuditEntry | HistoryEntry) -> str:
        """The JSON of an audit or history entry, through its class's hook.

        The hook is looked up once per class (what :func:`unstructure` dispatches to
        on every call); any failure takes :func:`unstructure`, which raises it located.
        """
        cls = record.__class__
        hook = self._record_hooks.get(cls)
        if hook is None:
            hook = self._record_hooks[cls] = self.registry.converter.get_unstructure_hook(cls)
        try:
            data = hook(record)
        except Exception:
            data = unstructure(self.registry.converter, record)
        return self.dumps(data)

    def read(
        self,
        document: Any,
        build: Callable[[Any], T],
        *,
        key: str | None,
        request_id: str | None = None,
    ) -> T:
        """A document read back through ``build`` (StoredDataError when unreadable)."""
        data = parse(self.registry, document, backend=BACKEND, key=key, request_id=request_id)
        return decode(build, data, backend=BACKEND, key=key, request_id=request_id)

    def read_request(self, row: Row) -> MutationRequest:
        request_id, document = row[0], row[1]
        request = self.read(
            document, self.registry.structure_request, key=request_id, request_id=request_id
        )
        if request.request_id != request_id:
            raise StoredDataError(
                f"the document stored under request {request_id!r} belongs to request "
                f"{request.request_id!r}",
                backend=BACKEND,
                key=request_id,
                field="request_id",
                request_id=request_id,
            )
        return request

    def read_decision(self, request_id: str, sequence: int, document: Any) -> RequestDecision:
        decision = self.read(
            document, self.registry.structure_decision, key=request_id, request_id=request_id
        )
        if decision.sequence != sequence:
            # Rows logged before schema version 2 have no sequence in their document.
            decision = attrs.evolve(decision, sequence=sequence)
        return decision

    def read_state(self, state_id: str, document: Any) -> Any:
        return self.read(document, self.registry.structure_value, key=state_id)

    def read_audit(self, key: str, document: Any) -> AuditEntry:
        converter = self.registry.converter
        return self.read(document, lambda data: structure(converter, data, AuditEntry), key=key)

    def read_history(self, key: str, document: Any) -> HistoryEntry:
        converter = self.registry.converter
        return self.read(document, lambda data: structure(converter, data, HistoryEntry), key=key)


def _version(state_id: str, raw: Any) -> str:
    """A stored state version, which must be a decimal counter (StoredDataError otherwise)."""
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and str(int(raw)) == raw:
        return raw
    raise StoredDataError(
        f"the stored version {raw!r} is not a decimal counter",
        backend=BACKEND,
        key=state_id,
        field="version",
    )


def _deadline_micros(request: MutationRequest) -> int | None:
    """The ``due_at`` column of ``request``: its :func:`expiry_deadline` in micros, or NULL."""
    deadline = expiry_deadline(request)
    return None if deadline is None else _micros(deadline)


def _request_row(codec: _Codec, request: MutationRequest) -> tuple[Any, ...]:
    """The column values of ``request`` (its revision and deadline included), in table order."""
    compensation = request.execution.compensation
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
        request.mutation_type,
        compensation.original_request_id if compensation is not None else None,
        _deadline_micros(request),
    )


_INSERT_REQUEST = (
    "INSERT INTO requests (request_id, state_id, status, pending_reason, actor_id, "
    "created_at, updated_at, revision, document, mutation_type, compensates, due_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A write that changes the status or pending reason drops the row's reservation (the
# request left the ready set, or came back to it); one that keeps them keeps it. On the
# right of SET, ``status`` and ``pending_reason`` are the old values; ?2 and ?3 the new.
_UPDATE_REQUEST = (
    "UPDATE requests SET state_id = ?, status = ?, pending_reason = ?, actor_id = ?, "
    "created_at = ?, updated_at = ?, revision = ?, document = ?, mutation_type = ?, "
    "compensates = ?, due_at = ?, "
    "reserved_by = CASE WHEN status = ?2 AND pending_reason IS ?3 THEN reserved_by END, "
    "reserved_until = CASE WHEN status = ?2 AND pending_reason IS ?3 THEN reserved_until END "
    "WHERE request_id = ? AND revision = ?"
)
_CREATE_REQUEST = _INSERT_REQUEST + " ON CONFLICT (request_id) DO NOTHING"
# The same update when the columns a request never changes (its state, actor, creation
# time, mutation type, compensated request) are as stored: it sets only the others, so
# SQLite leaves the indexes on those columns alone (4 of the 10 on ``requests``). Same
# parameters as _UPDATE_REQUEST.
_UPDATE_MUTABLE = (
    "UPDATE requests SET status = ?2, pending_reason = ?3, updated_at = ?6, revision = ?7, "
    "document = ?8, due_at = ?11, "
    "reserved_by = CASE WHEN status = ?2 AND pending_reason IS ?3 THEN reserved_by END, "
    "reserved_until = CASE WHEN status = ?2 AND pending_reason IS ?3 THEN reserved_until END "
    "WHERE request_id = ?12 AND revision = ?13 AND state_id = ?1 AND actor_id IS ?4 "
    "AND created_at = ?5 AND mutation_type IS ?9 AND compensates IS ?10"
)
_INSERT_DECISION = (
    "INSERT INTO decisions (request_id, sequence, category, timestamp, document) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id, sequence) DO NOTHING"
)
_INSERT_HISTORY = (
    "INSERT INTO history (execution_id, state_id, executed_at, document) VALUES (?, ?, ?, ?)"
)
_INSERT_AUDIT = (
    "INSERT INTO audit (execution_id, state_id, executed_at, document) VALUES (?, ?, ?, ?)"
)
_UPSERT_STATE = (
    "INSERT INTO states (state_id, version, request_id, document) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (state_id) DO UPDATE SET version = excluded.version, "
    "request_id = excluded.request_id, document = excluded.document"
)
_SELECT_STATE = "SELECT version, request_id, document FROM states WHERE state_id = ?"
_INSERT_STATE_VERSION = (
    "INSERT INTO state_versions (state_id, request_id, version) VALUES (?, ?, ?)"
)
_UPDATE_STATE = (
    "UPDATE states SET version = ?, request_id = ?, document = ? WHERE state_id = ? AND version = ?"
)
_INSERT_NEW_STATE = (
    "INSERT INTO states (state_id, version, request_id, document) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (state_id) DO NOTHING"
)
_RECORD_STATE_VERSION = _INSERT_STATE_VERSION + " ON CONFLICT (state_id, request_id) DO NOTHING"
_SELECT_PRODUCED = "SELECT version FROM state_versions WHERE state_id = ? AND request_id = ?"


def _update_params(row: tuple[Any, ...], expected_revision: int) -> tuple[Any, ...]:
    return (*row[1:], row[0], expected_revision)


def _create_request(connection: sqlite3.Connection, request_id: str, row: Sequence[Any]) -> None:
    """Insert a request row (RequestAlreadyExistsError when the id is taken)."""
    if not _execute(connection, _CREATE_REQUEST, row):
        raise RequestAlreadyExistsError(request_id)


def _update_request(
    connection: sqlite3.Connection, request_id: str, expected: int, params: Sequence[Any]
) -> None:
    """Update a request row at revision ``expected``, or raise why it cannot be.

    The row count checks the revision; only a write that matched nothing reads the row
    back (RequestNotFoundError or RequestConcurrencyError).
    """
    if _execute(connection, _UPDATE_MUTABLE, params):
        return
    if _execute(connection, _UPDATE_REQUEST, params):
        return
    _check_revision(connection, request_id, expected)
    raise RequestConcurrencyError(request_id, expected, None)  # pragma: no cover


def _stored_revision(connection: sqlite3.Connection, request_id: str) -> int | None:
    found = _fetch_one(
        connection, "SELECT revision FROM requests WHERE request_id = ?", (request_id,)
    )
    if found is None:
        return None
    revision = found[0]
    if type(revision) is not int:  # a row edited by hand: refuse it as unreadable
        raise StoredDataError(
            f"request {request_id!r} has a stored revision that is no integer: {revision!r}",
            backend=BACKEND,
            key=request_id,
            field="revision",
            request_id=request_id,
        )
    return revision


def _check_revision(connection: sqlite3.Connection, request_id: str, expected: int | None) -> None:
    """The stored revision is ``expected`` (None: the request does not exist yet)."""
    actual = _stored_revision(connection, request_id)
    if expected is None:
        if actual is not None:
            raise RequestAlreadyExistsError(request_id)
        return
    if actual is None:
        raise RequestNotFoundError(request_id)
    if actual != expected:
        raise RequestConcurrencyError(request_id, expected, actual)


def _decision_rows(
    codec: _Codec, request_id: str, decisions: Iterable[RequestDecision]
) -> list[tuple[Any, ...]]:
    rows = []
    for d in decisions:
        if d.sequence < 1:
            raise ValueError(
                f"decision {d} of request {request_id!r} has no sequence number "
                "(sequences count from 1 within a request)"
            )
        rows.append(
            (request_id, d.sequence, d.category.value, _micros(d.timestamp), codec.decision(d))
        )
    return rows


def _check_state(
    connection: sqlite3.Connection,
    state_id: str,
    expected_version: str | None,
    request_id: str | None,
) -> str:
    """Check the version and the producing request; returns the new version (no write)."""
    found = _fetch_one(connection, "SELECT version FROM states WHERE state_id = ?", (state_id,))
    actual = None if found is None else _version(state_id, found[0])
    if actual != expected_version:
        raise ConcurrencyError(
            f"state {state_id!r} is at version {actual!r}, expected {expected_version!r}",
            key=state_id,
            expected=expected_version,
            actual=actual,
        )
    if request_id is not None:
        produced = _fetch_one(
            connection,
            "SELECT version FROM state_versions WHERE state_id = ? AND request_id = ?",
            (state_id, request_id),
        )
        if produced is not None:
            raise ConcurrencyError(
                f"request {request_id!r} already produced version {produced[0]!r} of state "
                f"{state_id!r}; a request produces at most one version",
                key=state_id,
                expected=expected_version,
                actual=actual,
            )
    return next_version(expected_version)


def _write_state(
    connection: sqlite3.Connection,
    state_id: str,
    document: str,
    version: str,
    request_id: str | None,
) -> None:
    _execute(connection, _UPSERT_STATE, (state_id, version, request_id, document))
    if request_id is not None:
        _execute(connection, _INSERT_STATE_VERSION, (state_id, request_id, version))


def _is_counter(version: str) -> bool:
    return version.isascii() and version.isdigit() and str(int(version)) == version


def _put_state(
    connection: sqlite3.Connection,
    state_id: str,
    document: str,
    expected_version: str | None,
    request_id: str | None,
) -> str:
    """Write a state version if the state is at ``expected_version``; returns the new version.

    Two statements when nothing is wrong: the write compares the version, and the record
    of the producing request refuses a second one; only a write that matched nothing reads
    the rows back (:func:`_check_state`) to raise the precise ConcurrencyError.
    """
    if expected_version is not None and not _is_counter(expected_version):
        version = _check_state(connection, state_id, expected_version, request_id)
        _write_state(connection, state_id, document, version, request_id)
        return version
    version = next_version(expected_version)
    if expected_version is None:
        written = _execute(connection, _INSERT_NEW_STATE, (state_id, version, request_id, document))
    else:
        written = _execute(
            connection, _UPDATE_STATE, (version, request_id, document, state_id, expected_version)
        )
    if not written:
        _check_state(connection, state_id, expected_version, request_id)
        raise AssertionError("unreachable: the state check raises")  # pragma: no cover
    if request_id is not None and not _execute(
        connection, _RECORD_STATE_VERSION, (state_id, request_id, version)
    ):
        produced = _fetch_one(connection, _SELECT_PRODUCED, (state_id, request_id))
        raise ConcurrencyError(
            f"request {request_id!r} already produced version "
            f"{produced[0] if produced else None!r} of state {state_id!r}; a request produces "
            "at most one version",
            key=state_id,
            expected=expected_version,
            actual=expected_version,
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

    Statuses and pending reasons are left to :func:`_listing`. Rows it selects may still
    fail ``query.matches`` on the other dimensions (intent, metadata, side effects, ...),
    which :meth:`SQLiteRequestStore.list` checks in Python.
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

    if query.request_ids:
        within("request_id", query.request_ids)
    if query.state_ids:
        within("state_id", query.state_ids)
    if query.actor_ids:
        within("actor_id", query.actor_ids)
    if query.mutation_types:
        within("mutation_type", query.mutation_types)
    bound("created_at >= ?", query.created_from)
    bound("created_at <= ?", query.created_to)
    bound("updated_at >= ?", query.updated_from)
    bound("updated_at <= ?", query.updated_to)
    return " AND ".join(clauses), params


_NOT_QUARANTINED = (
    "NOT EXISTS (SELECT 1 FROM quarantine AS q WHERE q.request_id = requests.request_id)"
)
_SELECT_REQUESTS = "SELECT created_at, request_id, document FROM requests"
_ORDER = " ORDER BY created_at, request_id"


_NARROW_UPDATES = 5000
"""Terminal rows an update-time window may hold for a listing to search it (see _listing)."""

# How many terminal rows (up to a cap) were last updated within a window: a walk of at
# most that many entries of ``requests_by_updated``.
_UPDATED_WITHIN = (
    "SELECT count(*) FROM (SELECT 1 FROM requests INDEXED BY requests_by_updated "
    f"WHERE {TERMINAL_ROWS} AND updated_at >= ? AND updated_at <= ? LIMIT ?)"
)

# A branch of a listing: the table (with an index to use, if any), a filter, its values.
_Branch = tuple[str, str, list[Any]]


def _branches(
    query: RequestQuery, *, narrow_updates: bool
) -> tuple[list[_Branch], list[str], list[Any]]:
    """The listing's branches (none: one statement) and the filters every row must pass.

    Several statuses (or, without them, pending reasons) make one branch per value, each
    an ordered walk of ``requests_by_status`` (``requests_by_reason``). A narrow window of
    update time (``narrow_updates``, no reason asked for) makes one branch of the terminal
    rows updated in it, searched in ``requests_by_updated`` and sorted, and one per open
    status, an ordered walk of the open rows of that status.
    """
    statuses = sorted(status.value for status in query.statuses)
    reasons = sorted(reason.value for reason in query.pending_reasons)
    if narrow_updates and not reasons:
        wanted = statuses or sorted(status.value for status in RequestStatus)
        terminal = [s for s in wanted if RequestStatus(s).is_terminal]
        branches: list[_Branch] = []
        if terminal:
            clause, values = TERMINAL_ROWS, builtins.list[Any]()
            if statuses:
                within, values = _within("status", terminal)
                clause += f" AND {within}"
            branches.append(("requests INDEXED BY requests_by_updated", clause, values))
        branches.extend(("requests", "status = ?", [s]) for s in wanted if s not in terminal)
        return branches, [], []
    fixed: list[str] = []
    values = []
    branches = []
    for column, keys in (("status", statuses), ("pending_reason", reasons)):
        if len(keys) == 1:
            fixed.append(f"{column} = ?")
            values.extend(keys)
        elif keys and not branches:
            branches = [("requests", f"{column} = ?", [key]) for key in keys]
        elif keys:
            clause, found = _within(column, keys)
            fixed.append(clause)
            values.extend(found)
    return branches, fixed, values


def _listing(
    query: RequestQuery,
    where: str,
    params: Sequence[Any],
    limit: int,
    *,
    narrow_updates: bool = False,
) -> tuple[str, list[Any]]:
    """The statement reading the first ``limit`` rows of ``query`` matching ``where``.

    Statuses and pending reasons are compared with ``=``, one value per statement branch:
    several are read as one ordered walk of ``requests_by_status`` (or of
    ``requests_by_reason``) per value, merged (``UNION ALL`` of ``LIMIT``-ed branches).
    ``IN (...)`` has no index in ``created_at`` order, so SQLite walks
    ``requests_by_created`` instead: through the whole terminal backlog when the rows asked
    for are the newest ones (PENDING, APPROVED). With ``narrow_updates`` an update-time
    window is read as the terminal rows it holds and the open rows (see :func:`_branches`).
    """
    branches, fixed, values = _branches(query, narrow_updates=narrow_updates)
    clauses = [*fixed, *([where] if where else []), _NOT_QUARANTINED]
    values = [*values, *params]
    rest = " AND ".join(clauses)
    if not branches:
        return f"{_SELECT_REQUESTS} WHERE {rest}{_ORDER} LIMIT ?", [*values, limit]
    select = "SELECT created_at, request_id, document FROM"
    statements: list[str] = []
    merged: list[Any] = []
    for table, clause, keys in branches:
        statements.append(f"{select} {table} WHERE {clause} AND {rest}{_ORDER} LIMIT ?")
        merged += [*keys, *values, limit]
    if len(statements) == 1:
        return statements[0], merged
    union = " UNION ALL ".join(f"SELECT * FROM ({statement})" for statement in statements)
    return f"{union}{_ORDER} LIMIT ?", [*merged, limit]


_INSERT_QUARANTINE = (
    "INSERT INTO quarantine (request_id, field, error, detected_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (request_id) DO NOTHING"
)
_RESERVE = "UPDATE requests SET reserved_by = ?, reserved_until = ? WHERE request_id = ?"
_UNRESERVE = (
    "UPDATE requests SET reserved_by = NULL, reserved_until = NULL "
    "WHERE request_id = ? AND reserved_by = ?"
)
_TERMINAL = ", ".join(f"'{s.value}'" for s in RequestStatus if s.is_terminal)
# Walks the rows last updated before the cutoff in purge order and stops at the limit,
# however many recent terminal rows the store holds.
_PURGEABLE = (
    "SELECT request_id FROM requests AS r INDEXED BY requests_by_updated "
    f"WHERE {TERMINAL_ROWS} AND status IN ({{statuses}}) AND updated_at < ? "
    "AND NOT EXISTS (SELECT 1 FROM requests AS c WHERE c.compensates = r.request_id "
    f"AND c.status NOT IN ({_TERMINAL})) "
    "ORDER BY updated_at, request_id LIMIT ?"
)

# A row read by a multi-row read: its position (created_at micros, id) and the request,
# or the error that makes it unreadable.
_Read = tuple[int, str, MutationRequest | StoredDataError]
_Unreadable = tuple[str, StoredDataError]


def ready_sql(*, revalidation: bool, after: bool) -> str:
    """The statement :meth:`SQLiteRequestStore.reserve` selects ready rows with.

    Parameters: ``now`` (micros), then with ``after`` the position (micros, id) to continue
    from, then the limit. It walks the ``requests_ready`` partial index in order.
    """
    ready = READY if revalidation else f"status = '{RequestStatus.APPROVED.value}'"
    sql = (
        f"{_SELECT_REQUESTS} INDEXED BY requests_ready WHERE ({ready}) "
        f"AND (reserved_until IS NULL OR reserved_until <= ?) AND {_NOT_QUARANTINED}"
    )
    if after:
        sql += " AND (created_at, request_id) > (?, ?)"
    return sql + " ORDER BY created_at, request_id LIMIT ?"


def due_sql(*, after: bool) -> str:
    """The statement :meth:`SQLiteRequestStore.due` selects due rows with.

    Parameters: ``now`` (micros), then with ``after`` the position (micros, id) to continue
    from, then the limit. It walks the ``requests_due`` partial index in order.
    """
    sql = (
        "SELECT due_at, request_id, revision, document FROM requests INDEXED BY requests_due "
        f"WHERE {DUE_ROWS} AND due_at <= ? AND {_NOT_QUARANTINED}"
    )
    if after:
        sql += " AND (due_at, request_id) > (?, ?)"
    return sql + " ORDER BY due_at, request_id LIMIT ?"


# Corrects a stored deadline only if the row is still the one it was computed from.
_HEAL_DEADLINE = (
    "UPDATE requests SET due_at = ? WHERE request_id = ? AND revision = ? AND due_at IS ?"
)


@attrs.frozen
class _Due:
    """A request an expiry walk found due, at its position in the ``requests_due`` index."""

    due_at: int
    request: MutationRequest

    @property
    def position(self) -> tuple[int, str]:
        return self.due_at, self.request.request_id


@attrs.frozen
class _Stale:
    """A row whose stored deadline is not its request's: what to store instead, and where.

    ``request`` is kept only when it is due (to be returned once corrected): a first sweep
    after an upgrade walks every pending row, and holds none of the others.
    """

    request_id: str
    revision: int
    stored: int
    deadline: int | None
    request: MutationRequest | None


@attrs.define
class _DueWalk:
    """What one walk of the due rows met: due requests, stale deadlines, unreadable rows."""

    now: int
    due: list[_Due] = attrs.Factory(list)
    stale: list[_Stale] = attrs.Factory(list)
    unreadable: list[_Unreadable] = attrs.Factory(list)

    def add(self, codec: _Codec, row: Row) -> None:
        """Decode one ``(due_at, request_id, revision, document)`` row and sort it."""
        due_at, request_id, revision, document = row
        try:
            request = codec.read_request((request_id, document))
        except StoredDataError as error:
            self.unreadable.append((request_id, error))
            return
        deadline = _deadline_micros(request)
        if deadline == due_at:
            self.due.append(_Due(due_at, request))
        else:
            due = deadline is not None and deadline <= self.now
            self.stale.append(
                _Stale(request_id, revision, due_at, deadline, request if due else None)
            )


async def _walk_due(database: _Database, codec: _Codec, now: int, limit: int) -> _DueWalk:
    """Walk the due rows in index order until ``limit`` of them are due or none are left.

    Rows whose stored deadline is stale (rows from before schema version 6) do not count
    towards ``limit``: the walk goes on past them (all of them, on the first sweep after
    an upgrade), yielding to the event loop as it decodes.
    """
    walk = _DueWalk(now)
    position: tuple[int, str] | None = None
    while len(walk.due) < limit:
        want = limit - len(walk.due)
        params: list[Any] = [now, *(position or ()), want]
        sql = due_sql(after=position is not None)
        rows = await database.run_read(_select_rows(sql, params), bulk=_bulk(want))
        for index, row in enumerate(rows):
            await pace(index)
            walk.add(codec, row)
        if len(rows) < want:
            break
        position = (rows[-1][0], rows[-1][1])
    return walk


def _heal_transaction(
    stale: Sequence[_Stale], unreadable: Sequence[_Unreadable], detected_at: datetime
) -> Callable[[sqlite3.Connection], tuple[list[_Stale], list[_Unreadable]]]:
    """Store the real deadline of ``stale`` rows and quarantine ``unreadable`` ones.

    Returns the stale rows corrected (a row written since it was read keeps what its
    writer stored) and the rows newly quarantined.
    """

    def heal(connection: sqlite3.Connection) -> tuple[list[_Stale], list[_Unreadable]]:
        healed = [
            s
            for s in stale
            if _execute(
                connection, _HEAL_DEADLINE, (s.deadline, s.request_id, s.revision, s.stored)
            )
        ]
        return healed, _quarantine_rows(connection, unreadable, detected_at)

    return heal


def _decode_row(codec: _Codec, row: Row) -> _Read:
    """A ``(created_at, request_id, document)`` row decoded, or why it cannot be."""
    created_at, request_id, document = row
    try:
        return created_at, request_id, codec.read_request((request_id, document))
    except StoredDataError as error:
        return created_at, request_id, error


def _decode_rows(codec: _Codec, rows: Iterable[Row]) -> list[_Read]:
    """Each ``(created_at, request_id, document)`` row decoded, or why it cannot be."""
    return [_decode_row(codec, row) for row in rows]


def _unreadable(rows: Iterable[_Read]) -> list[_Unreadable]:
    return [(r[1], r[2]) for r in rows if isinstance(r[2], StoredDataError)]


def _readable(rows: Iterable[_Read]) -> list[MutationRequest]:
    return [r[2] for r in rows if isinstance(r[2], MutationRequest)]


def _quarantine_rows(
    connection: sqlite3.Connection, unreadable: Sequence[_Unreadable], detected_at: datetime
) -> list[_Unreadable]:
    """Record ``unreadable`` rows in quarantine; return those that were not there yet."""
    at = _micros(detected_at)
    return [
        (request_id, error)
        for request_id, error in unreadable
        if _execute(connection, _INSERT_QUARANTINE, (request_id, error.field, str(error), at))
    ]


def _announce(recorded: Sequence[_Unreadable], detected_at: datetime) -> None:
    """Log each newly quarantined row once (after its transaction committed)."""
    for request_id, error in recorded:
        quarantine_entry(request_id, error, detected_at)


def _purge_transaction(
    before: datetime, statuses: frozenset[RequestStatus], limit: int
) -> Callable[[sqlite3.Connection], PurgeBatch]:
    values = sorted(s.value for s in statuses)
    sql = _PURGEABLE.format(statuses=", ".join("?" * len(values)))
    params = [*values, _micros(before), limit]

    def purge(connection: sqlite3.Connection) -> PurgeBatch:
        ids = [row[0] for row in _fetch_all(connection, sql, params)]
        if not ids:
            return PurgeBatch()
        keys = [(request_id,) for request_id in ids]
        decisions = _execute_many(connection, "DELETE FROM decisions WHERE request_id = ?", keys)
        _execute_many(connection, "DELETE FROM quarantine WHERE request_id = ?", keys)
        _execute_many(connection, "DELETE FROM requests WHERE request_id = ?", keys)
        return PurgeBatch(tuple(ids), decisions)

    return purge


class SQLiteRequestStore:
    """Requests in the ``requests`` table, with compare-and-set on ``revision``.

    Filters, ordering (``created_at`` then ``request_id`` in code point order) and cursor
    pagination run in SQL. Implements :class:`~mutator_governance.RequestStore`,
    :class:`~mutator_governance.ReadyQueue` (reservations in the row, ready rows in a
    partial index), :class:`~mutator_governance.ExpiryIndex` (each row's deadline in
    ``due_at``, pending rows that have one in a partial index),
    :class:`~mutator_governance.QuarantineLog` (the ``quarantine``
    table) and :class:`~mutator_governance.RequestPurger` (decisions are deleted in the
    same transaction, so the decision log is no DecisionPurger).

    Multi-row reads (listings, pending, by state, reservations, due) leave out quarantined
    rows and quarantine each row they cannot read instead of raising; ``get`` raises
    StoredDataError for it.
    """

    def __init__(self, database: _Database, codec: _Codec) -> None:
        self._db = database
        self._codec = codec

    async def create(self, request: MutationRequest) -> MutationRequest:
        """Store a new request at revision 0 (RequestAlreadyExistsError when the id is taken)."""
        stored = request if request.revision == 0 else attrs.evolve(request, revision=0)
        codec = self._codec

        def encode() -> Callable[[sqlite3.Connection], None]:
            row = _request_row(codec, stored)

            def insert(connection: sqlite3.Connection) -> None:
                _create_request(connection, stored.request_id, row)

            return insert

        await self._db.run_encoded_write(encode)
        return stored

    async def replace(self, request: MutationRequest, *, expected_revision: int) -> MutationRequest:
        """Store ``request`` at ``expected_revision + 1`` if the stored revision still matches.

        Raises RequestConcurrencyError on a mismatch, RequestNotFoundError when unknown.
        """
        stored = attrs.evolve(request, revision=expected_revision + 1)
        codec = self._codec

        def encode() -> Callable[[sqlite3.Connection], None]:
            params = _update_params(_request_row(codec, stored), expected_revision)

            def update(connection: sqlite3.Connection) -> None:
                _update_request(connection, stored.request_id, expected_revision, params)

            return update

        await self._db.run_encoded_write(encode)
        return stored

    async def get(self, request_id: str) -> MutationRequest | None:
        """The stored request, or None (StoredDataError when it cannot be read; the row is
        quarantined, as a listing would)."""
        check_key("request_id", request_id)
        read = self._codec.read_request

        def select(connection: sqlite3.Connection) -> MutationRequest | None:
            row = _fetch_one(
                connection,
                f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE request_id = ?",
                (request_id,),
            )
            return None if row is None else read(row)

        try:
            return await self._db.run_read(select)
        except StoredDataError as error:
            await self._quarantine([(request_id, error)])
            raise

    async def by_state(self, state_id: str) -> Sequence[MutationRequest]:
        """Requests targeting ``state_id``, by ``created_at`` then id."""
        check_key("state_id", state_id)
        return _readable(await self._select("state_id = ?", [state_id]))

    async def pending(
        self, reason: PendingReason | None = None, *, state_id: str | None = None
    ) -> Sequence[MutationRequest]:
        """PENDING requests, optionally with one reason and for one state, ordered."""
        reason = pending_reason(reason)
        clauses = [PENDING_ROWS]
        params: builtins.list[Any] = []
        table = "requests"
        if reason is not None:
            # Its PENDING rows in order, the state checked in the index: bounded by the
            # open requests with that reason, whatever the state's history holds.
            table += " INDEXED BY requests_by_reason"
            clauses.append("pending_reason = ?")
            params.append(reason.value)
        if state_id is not None:
            clauses.append("state_id = ?")
            params.append(state_id)
        return _readable(await self._select(" AND ".join(clauses), params, table=table))

    async def list(
        self, query: RequestQuery | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> RequestPage:
        """A page of requests matching ``query``, ordered by ``created_at`` then id.

        Dimensions with a column are filtered in SQL; the rest of ``query.matches`` is
        checked on the rows, fetching further rows until the page is full. Rows skipped
        (unmatched or unreadable) still advance the position, so only the last page is
        ever short.
        """
        query = listing(query, limit)
        where, params = _where(query)
        position: tuple[int, str] | None = None
        if cursor is not None:
            moment, after = decode_cursor(cursor)
            position = (_micros(moment), after)
        narrow = await self._narrow_updates(query)
        found: builtins.list[MutationRequest] = []
        batch = limit + 1
        while True:
            clauses, values = ([where], builtins.list(params)) if where else ([], [])
            if position is not None:
                clauses.append("(created_at, request_id) > (?, ?)")
                values.extend(position)
            sql, values = _listing(
                query, " AND ".join(clauses), values, batch, narrow_updates=narrow
            )
            rows = await self._read(sql, values, batch)
            for created_at, request_id, request in rows:
                position = (created_at, request_id)
                if isinstance(request, MutationRequest) and query.matches(request):
                    found.append(request)
                    if len(found) > limit:
                        break
            if len(found) > limit or len(rows) < batch:
                break
            batch = min(batch * 2, 1000)
        items = found[:limit]
        more = len(found) > limit
        return RequestPage(items, encode_cursor(items[-1]) if more and items else None)

    async def _narrow_updates(self, query: RequestQuery) -> bool:
        """Whether ``query``'s update-time window holds few terminal rows.

        ``requests_by_updated`` holds terminal rows only, so a window of update time is
        otherwise a walk of every request in ``created_at`` order until a page is full:
        through the whole history for a recent window. A narrow one is searched and sorted
        instead; a broad one (most of the history) keeps the walk, which fills its pages
        early.
        """
        if (query.updated_from is None and query.updated_to is None) or query.pending_reasons:
            return False
        low = _micros(query.updated_from) if query.updated_from is not None else -(2**63)
        high = _micros(query.updated_to) if query.updated_to is not None else 2**63 - 1
        rows = await self._db.run_read(
            _select_rows(_UPDATED_WITHIN, (low, high, _NARROW_UPDATES + 1))
        )
        return bool(rows[0][0] <= _NARROW_UPDATES)

    async def _select(
        self,
        where: str,
        params: builtins.list[Any],
        limit: int | None = None,
        *,
        table: str = "requests",
    ) -> builtins.list[_Read]:
        """Rows of ``table`` matching ``where`` (quarantined ones left out), oldest first.

        Rows that cannot be read come back as their error and are quarantined.
        """
        select = f"SELECT created_at, request_id, document FROM {table}"
        sql = f"{select} WHERE {where + ' AND ' if where else ''}{_NOT_QUARANTINED}"
        sql += _ORDER
        if limit is not None:
            sql += " LIMIT ?"
            params = [*params, limit]
        return await self._read(sql, params, limit)

    async def _read(
        self, sql: str, params: Sequence[Any], limit: int | None
    ) -> builtins.list[_Read]:
        """The rows ``sql`` selects (at most ``limit``), decoded; unreadable ones quarantined."""
        codec = self._codec
        fetched = await self._db.run_read(_select_rows(sql, params), bulk=_bulk(limit))
        rows = await paced(fetched, lambda row: _decode_row(codec, row))
        unreadable = _unreadable(rows)
        if unreadable:
            await self._quarantine(unreadable)
        return rows

    async def _quarantine(self, unreadable: Sequence[_Unreadable]) -> None:
        """Record rows a read met unreadable; a busy database leaves it to the next read."""
        detected_at = datetime.now(UTC)
        try:
            recorded = await self._db.run_write(
                lambda c: _quarantine_rows(c, unreadable, detected_at)
            )
        except StoreUnavailableError:
            return
        _announce(recorded, detected_at)

    async def reserve(
        self,
        *,
        owner: str,
        limit: int,
        now: datetime,
        until: datetime,
        revalidation: bool = False,
    ) -> Sequence[MutationRequest]:
        """Reserve up to ``limit`` ready requests for ``owner``, in one transaction.

        Walks the ready rows oldest first (the ``requests_ready`` index), skipping those
        reserved past ``now`` and quarantined ones; a row it cannot read is quarantined in
        the same transaction and the walk goes on. See :class:`~mutator_governance.ReadyQueue`.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        codec = self._codec
        held = _micros(now)
        lease = _micros(until)
        detected_at = datetime.now(UTC)

        def transaction(
            connection: sqlite3.Connection,
        ) -> tuple[builtins.list[MutationRequest], builtins.list[_Unreadable]]:
            chosen: builtins.list[MutationRequest] = []
            unreadable: builtins.list[_Unreadable] = []
            position: tuple[int, str] | None = None
            while len(chosen) < limit:
                want = limit - len(chosen)
                params: builtins.list[Any] = [held]
                if position is not None:
                    params.extend(position)
                params.append(want)
                sql = ready_sql(revalidation=revalidation, after=position is not None)
                rows = _decode_rows(codec, _fetch_all(connection, sql, params))
                chosen.extend(_readable(rows))
                unreadable.extend(_unreadable(rows))
                if len(rows) < want:
                    break
                position = (rows[-1][0], rows[-1][1])
            if chosen:
                _execute_many(connection, _RESERVE, [(owner, lease, r.request_id) for r in chosen])
            return chosen, _quarantine_rows(connection, unreadable, detected_at)

        chosen, recorded = await self._db.run_encoded_write(lambda: transaction, relaxed=True)
        _announce(recorded, detected_at)
        return chosen

    async def unreserve(self, *, owner: str, request_ids: Sequence[str]) -> int:
        """Clear ``owner``'s reservations on ``request_ids`` in one transaction.

        A reservation lives on the request's row (``reserved_by``, ``reserved_until``),
        dropped by any write that makes the row stop being ready, so clearing the rows
        ``owner`` holds is all it takes. See :class:`~mutator_governance.ReservationRelease`.
        """
        rows = [(request_id, owner) for request_id in dict.fromkeys(request_ids)]
        if not rows:
            return 0
        return await self._db.run_write(
            lambda connection: _execute_many(connection, _UNRESERVE, rows), relaxed=True
        )

    async def due(self, *, now: datetime, limit: int) -> Sequence[MutationRequest]:
        """Up to ``limit`` PENDING requests whose deadline is at or before ``now``, in order.

        Walks the ``requests_due`` partial index (deadline, then id) from the earliest
        deadline, decoding only the rows it walks, on a reading connection. A row whose
        stored deadline is not its request's :func:`~mutator_governance.expiry_deadline`
        (every PENDING row written before schema version 6 starts at the earliest instant)
        is not handed out where it stands: its deadline is corrected, guarded by its
        revision so a concurrent write wins, and the request is returned at its real place
        if that is due. Unreadable rows are quarantined and skipped. See
        :class:`~mutator_governance.ExpiryIndex`.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        codec = self._codec
        held = _micros(now)
        walk = await _walk_due(self._db, codec, held, limit)
        found = walk.due
        if walk.stale or walk.unreadable:
            found = [*found, *await self._heal(walk)]
            found.sort(key=lambda d: d.position)
        return [d.request for d in found[:limit]]

    async def _heal(self, walk: _DueWalk) -> builtins.list[_Due]:
        """Correct ``walk``'s stale deadlines and quarantine its unreadable rows, at once.

        Returns the corrected requests that are due at the walk's ``now``. A busy database
        leaves both to the next sweep (and returns none).
        """
        detected_at = datetime.now(UTC)
        heal = _heal_transaction(walk.stale, walk.unreadable, detected_at)
        try:
            healed, recorded = await self._db.run_encoded_write(lambda: heal, relaxed=True)
        except StoreUnavailableError:
            return []
        _announce(recorded, detected_at)
        return [
            _Due(s.deadline, s.request)
            for s in healed
            if s.request is not None and s.deadline is not None
        ]

    async def quarantined(self) -> Sequence[QuarantinedRequest]:
        """Every quarantined request, oldest detection first."""

        def select(connection: sqlite3.Connection) -> builtins.list[QuarantinedRequest]:
            rows = _fetch_all(
                connection,
                "SELECT request_id, field, error, detected_at FROM quarantine "
                "ORDER BY detected_at, rowid",
            )
            return [
                QuarantinedRequest(row[0], BACKEND, row[1], row[2], _EPOCH + row[3] * _MICROSECOND)
                for row in rows
            ]

        return await self._db.run_read(select)

    async def release(self, request_id: str) -> bool:
        """Take ``request_id`` out of quarantine; True when it was quarantined."""
        deleted = await self._db.run_write(
            lambda c: _execute(c, "DELETE FROM quarantine WHERE request_id = ?", (request_id,))
        )
        return deleted > 0

    async def purge(
        self, *, before: datetime, statuses: frozenset[RequestStatus], limit: int
    ) -> PurgeBatch:
        """Delete up to ``limit`` purgeable requests with their decisions, in one transaction.

        Purgeable as :func:`~mutator_governance.purgeable` says, oldest ``updated_at``
        first; their quarantine entries go too. See :class:`~mutator_governance.RequestPurger`.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        if not statuses:
            return PurgeBatch()
        return await self._db.run_write(_purge_transaction(before, statuses, limit))


class SQLiteDecisionHistory:
    """Decisions in the ``decisions`` table, unique per ``(request_id, sequence)``.

    Implements :class:`~mutator_governance.DecisionHistory`.
    """

    def __init__(self, database: _Database, codec: _Codec) -> None:
        self._db = database
        self._codec = codec

    async def append(self, request_id: str, decisions: Sequence[RequestDecision]) -> None:
        """Append ``decisions`` to ``request_id``'s log, idempotently, in one transaction.

        A decision whose sequence number is already logged is skipped; one without a
        sequence number raises ValueError (nothing written).
        """
        for d in decisions:
            if d.sequence < 1:
                raise ValueError(
                    f"decision {d} of request {request_id!r} has no sequence number "
                    "(sequences count from 1 within a request)"
                )
        if not decisions:
            return
        codec = self._codec

        def encode() -> Callable[[sqlite3.Connection], int]:
            rows = _decision_rows(codec, request_id, decisions)
            return lambda c: _execute_many(c, _INSERT_DECISION, rows)

        await self._db.run_encoded_write(encode)

    async def for_request(self, request_id: str) -> Sequence[RequestDecision]:
        """Decisions of one request in sequence order."""
        check_key("request_id", request_id)
        read = self._codec.read_decision

        sql = "SELECT sequence, document FROM decisions WHERE request_id = ? ORDER BY sequence"
        rows = await self._db.run_read(_select_rows(sql, (request_id,)))
        return tuple(await paced(rows, lambda row: read(request_id, row[0], row[1])))

    async def recent(
        self, limit: int = 50, *, category: DecisionCategory | None = None
    ) -> Sequence[DecisionRecord]:
        """The newest decisions across requests: by timestamp, then newest appended, first."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        sql = "SELECT request_id, sequence, document FROM decisions"
        params: list[Any] = []
        if category is not None:
            sql += " WHERE category = ?"
            params.append(category.value)
        sql += " ORDER BY timestamp DESC, id DESC LIMIT ?"
        params.append(limit)
        read = self._codec.read_decision
        rows = await self._db.run_read(_select_rows(sql, params), bulk=_bulk(limit))
        return await paced(rows, lambda row: DecisionRecord(row[0], read(row[0], row[1], row[2])))


class SQLiteStateStore:
    """States in the ``states`` table with decimal-counter versions and compare-and-set.

    ``state_versions`` records which request produced which version; a request produces
    at most one version of a state. Implements :class:`~mutator_governance.StateStore`.
    """

    def __init__(self, database: _Database, codec: _Codec) -> None:
        self._db = database
        self._codec = codec

    async def get(self, state_id: str) -> VersionedState[Any] | None:
        """The state with its version and producing request, or None.

        A stored version that is not a decimal counter raises StoredDataError.
        """
        check_key("state_id", state_id)
        read = self._codec.read_state

        def select(connection: sqlite3.Connection) -> VersionedState[Any] | None:
            row = _fetch_one(connection, _SELECT_STATE, (state_id,))
            if row is None:
                return None
            version = _version(state_id, row[0])
            return VersionedState(read(state_id, row[2]), version, row[1])

        return await self._db.run_read(select)

    async def put(
        self,
        state_id: str,
        state: Any,
        *,
        expected_version: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Write ``state`` if it is at ``expected_version`` (None: it must not exist).

        Returns the new version; a mismatch, or a second version produced by
        ``request_id``, raises :class:`mutator.ConcurrencyError` and writes nothing; an id
        no store can keep raises ValueError.
        """
        check_id("state_id", state_id)
        check_version(expected_version)
        codec = self._codec

        def encode() -> Callable[[sqlite3.Connection], str]:
            document = codec.value(state)

            def put(connection: sqlite3.Connection) -> str:
                return _put_state(connection, state_id, document, expected_version, request_id)

            return put

        return await self._db.run_encoded_write(encode)

    async def version_by_request(self, state_id: str, request_id: str) -> str | None:
        """The version of ``state_id`` that ``request_id`` produced, if any."""
        row = await self._db.run_read(
            lambda c: _fetch_one(
                c,
                "SELECT version FROM state_versions WHERE state_id = ? AND request_id = ?",
                (state_id, request_id),
            )
        )
        return None if row is None else _version(state_id, row[0])


def _audit_row(codec: _Codec, entry: AuditEntry) -> tuple[Any, ...]:
    return (entry.execution_id, entry.state_id, _micros(entry.executed_at), codec.record(entry))


class SQLiteAuditSink:
    """The engine's audit entries in the ``audit`` table (implements :class:`mutator.AuditSink`)."""

    def __init__(self, database: _Database, codec: _Codec) -> None:
        self._db = database
        self._codec = codec

    async def record(self, entry: AuditEntry) -> None:
        """Persist ``entry``."""
        codec = self._codec

        def encode() -> Callable[[sqlite3.Connection], int]:
            row = _audit_row(codec, entry)
            return lambda c: _execute(c, _INSERT_AUDIT, row)

        await self._db.run_encoded_write(encode)

    async def entries(
        self,
        state_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEntry]:
        """Entries oldest first, optionally for one state and within inclusive bounds.

        Bounds without a state search ``audit_by_time`` and sort what they find: SQLite
        would otherwise read the whole table in id order to skip the sort.
        """
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
        if state_id is None and clauses:
            sql += " INDEXED BY audit_by_time"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY id"
        read = self._codec.read_audit
        rows = await self._db.run_read(_select_rows(sql, params), bulk=True)
        return await paced(rows, lambda row: read(row[0], row[1]))


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
        codec = self._codec

        def encode() -> Callable[[sqlite3.Connection], int]:
            row = _history_row(codec, entry)
            return lambda c: _execute(c, _INSERT_HISTORY, row)

        await self._db.run_encoded_write(encode)

    async def history(self, state_id: str) -> MutationHistory[Any]:
        """The whole history of ``state_id``, oldest first (empty when unknown)."""
        check_key("state_id", state_id)
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
        return await self._select(state_id, "", [], "id DESC LIMIT ?", limit)

    async def _select(
        self,
        state_id: str,
        where: str,
        params: list[Any],
        order: str,
        limit: int | None = None,
    ) -> list[HistoryEntry]:
        sql = f"SELECT document FROM history WHERE state_id = ?{where} ORDER BY {order}"
        values = [state_id, *params, *([] if limit is None else [limit])]
        read = self._codec.read_history
        rows = await self._db.run_read(_select_rows(sql, values), bulk=_bulk(limit))
        return await paced(rows, lambda row: read(state_id, row[0]))


def is_claim(commit: GovernedCommit) -> bool:
    """True for the claim of a governed execution: EXECUTING, and no state write."""
    return commit.state is None and commit.requests[0].request.status is RequestStatus.EXECUTING


def _request_writes(
    codec: _Codec, writes: Sequence[RequestWrite], stored: Sequence[MutationRequest]
) -> list[tuple[str, int | None, tuple[Any, ...], list[tuple[Any, ...]]]]:
    """Per request: id, expected revision, the statement's parameters, its decision rows."""
    result = []
    for write, request in zip(writes, stored, strict=True):
        row = _request_row(codec, request)
        expected = write.expected_revision
        params = row if expected is None else _update_params(row, expected)
        decisions = _decision_rows(codec, request.request_id, write.new_decisions)
        result.append((request.request_id, expected, params, decisions))
    return result


class SQLiteCommitter:
    """Writes each governance operation in one ``BEGIN IMMEDIATE`` transaction, one hop.

    Every request revision (or absence, for a create), the state version and the state's
    producing request are checked in the transaction, requests first; any mismatch raises
    RequestAlreadyExistsError, RequestNotFoundError, RequestConcurrencyError or
    :class:`mutator.ConcurrencyError` and rolls the transaction back, writing nothing.
    The requests, their decisions (idempotent per sequence number), the state, the
    history and the audit entries are committed together. :meth:`commit_reading` also
    reads a state back in the same transaction (a
    :class:`~mutator_governance.protocols.ReadingCommitter`).

    The claim of a governed execution (EXECUTING, no state write) commits without a WAL
    flush of its own when the store runs ``synchronous=FULL``: a claim lost in a power
    loss is harmless, since the final commit checks the claimed revision, and the next
    flushed commit makes it durable anyway. Implements
    :class:`~mutator_governance.ExecutionCommitter`.
    """

    atomic = True

    def __init__(self, database: _Database, codec: _Codec) -> None:
        self._db = database
        self._codec = codec

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        """Apply every write in ``commit`` atomically; return the stored requests in order."""
        stored = commit.stored()
        codec = self._codec

        def encode() -> Callable[[sqlite3.Connection], None]:
            return _commit_transaction(codec, commit, stored)

        await self._db.run_encoded_write(encode, relaxed=is_claim(commit))
        return stored

    async def commit_reading(
        self, commit: GovernedCommit, state_id: str
    ) -> tuple[tuple[MutationRequest, ...], VersionedState[Any] | None]:
        """Apply ``commit`` like :meth:`commit`, then read ``state_id`` in the same transaction.

        One transaction, at most one thread hop (none for a claim on an idle database).
        The state is decoded after the commit, like a read that follows it.
        """
        stored = commit.stored()
        codec = self._codec

        def encode() -> Callable[[sqlite3.Connection], Row | None]:
            write_all = _commit_transaction(codec, commit, stored)

            def write_and_read(connection: sqlite3.Connection) -> Row | None:
                write_all(connection)
                return _fetch_one(connection, _SELECT_STATE, (state_id,))

            return write_and_read

        row = await self._db.run_encoded_write(encode, relaxed=is_claim(commit))
        if row is None:
            return stored, None
        version = _version(state_id, row[0])
        return stored, VersionedState(codec.read_state(state_id, row[2]), version, row[1])


def _commit_transaction(
    codec: _Codec, commit: GovernedCommit, stored: Sequence[MutationRequest]
) -> Callable[[sqlite3.Connection], None]:
    """Encode ``commit`` (in the worker thread) and return its transaction body.

    Each request is written by a statement that matches its expected revision (or its
    absence) and checked by its row count; only a write that matched nothing reads the
    row back, to raise the precise error. Any error rolls the whole transaction back.
    """
    updates = _request_writes(codec, commit.requests, stored)
    state: StateWrite | None = commit.state
    state_document = codec.value(state.state) if state is not None else None
    history = [_history_row(codec, entry) for entry in commit.history]
    audit = [_audit_row(codec, entry) for entry in commit.audit]

    def write_all(connection: sqlite3.Connection) -> None:
        for request_id, expected, params, decisions in updates:
            if expected is None:
                _create_request(connection, request_id, params)
            else:
                _update_request(connection, request_id, expected, params)
            if decisions:
                _execute_many(connection, _INSERT_DECISION, decisions)
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
        for row in history:
            _execute(connection, _INSERT_HISTORY, row)
        for row in audit:
            _execute(connection, _INSERT_AUDIT, row)

    return write_all


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
        **options: Any,
    ) -> SQLiteStore:
        """Open (creating and migrating as needed) the database named by ``url``.

        ``url`` is ``sqlite:///relative.db``, ``sqlite:////absolute/path.db``,
        ``sqlite:///:memory:`` or a plain path; a relative path is resolved once, here, so
        the store keeps using the same file when the process changes directory. Options,
        as keyword arguments or URL query parameters
        (``sqlite:///gov.db?synchronous=NORMAL&busy_timeout=2``), are those of
        :class:`SQLiteOptions`: ``synchronous`` (``FULL`` default; ``NORMAL`` may roll
        back the last commits on a power loss, never a process crash), ``busy_timeout``
        (seconds a write waits for another process's lock before StoreUnavailableError,
        default 5) and ``pool_size`` (reading connections and concurrent reads, default
        4). A malformed URL or an unknown or malformed option raises
        :class:`mutator.ConfigurationError` before any file is opened, as does a ``file:``
        URI (see :func:`parse_sqlite_url`); a file that cannot be opened raises
        StoreUnavailableError naming its path and, for a directory that does not exist, a
        path that is a directory or a read-only file, the reason (:func:`check_sqlite_file`).
        """
        if not isinstance(registry, MutationRegistry):
            raise TypeError(f"registry must be a MutationRegistry, got {type(registry).__name__}")
        path, query = parse_sqlite_url(url)
        settings = SQLiteOptions.build(query, options)
        await anyio.to_thread.run_sync(check_sqlite_file, path)  # stat calls: a slow mount
        if path != MEMORY:
            # Each connection opens the path again: a relative one would follow os.chdir.
            path = await anyio.to_thread.run_sync(os.path.abspath, path)
        database = _Database(path, settings)
        await database.start()
        return cls(database, registry)

    @property
    def path(self) -> str:
        """The database file's absolute path (``":memory:"`` for an in-memory database)."""
        return self._db.path

    @property
    def options(self) -> SQLiteOptions:
        """The options the store was opened with."""
        return self._db.options

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
        """The atomic committer of every governance operation."""
        return self._committer

    async def server_time(self) -> datetime | None:
        """None: SQLite has no clock of its own; leases use the governance clock."""
        return None

    async def aclose(self) -> None:
        """Close every connection; the store is unusable afterwards (idempotent)."""
        await self._db.close_async()

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"SQLiteStore({self._db.path!r})"
