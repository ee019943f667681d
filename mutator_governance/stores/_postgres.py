"""PostgreSQL backend: requests, decisions, states, audit and history in one schema.

**asyncio only**: the store uses psycopg 3's async driver and ``psycopg_pool``; it cannot run
on trio. Install it with the ``postgres`` extra (``pip install mutator[postgres]``).

Everything lives in one PostgreSQL schema (``mutator`` unless ``schema=`` or a ``?schema=``
URL parameter names another), created and migrated on :meth:`PostgresStore.open` under a
transaction-scoped advisory lock, so several processes may open a fresh database at once.
The schema's version is kept in ``schema_version``; a database migrated by a newer release
is refused with :class:`~mutator_governance.StoredDataError` naming both versions.

Layout (schema version 9, see ``_postgres_schema``)::

    requests        request_id PK (COLLATE "C"), state_id, status, pending_reason, actor_id,
                    created_at, updated_at (timestamptz), revision, document (JSON text),
                    mutation_type, compensates (the original a compensation undoes),
                    reserved_by, reserved_until (a worker's reservation),
                    due_at (a pending request's expiry deadline)
    quarantine      request_id PK, field, error, detected_at: rows that cannot be read
    decisions       id bigserial, (request_id, sequence) unique, category, timestamp, document
    states          state_id PK, version, request_id, document
    state_versions  (state_id, request_id) PK, version: which request produced which version
    audit           id bigserial, state_id, executed_at, document
    history         id bigserial, state_id, executed_at, document
    schema_version  version, applied_at

Documents are JSON *text* written through the registry's converter (``jsonb`` would
reorder keys and lose the exact type of numbers such as ``1e300``), so values round-trip
exactly. Request queries are pushed down to SQL and ordered by ``created_at`` then
``request_id`` in code point order (``COLLATE "C"``); cursors are the ones of the in-memory
store.

Every governance operation is one call of the server-side function ``governed_commit``:
one statement, so one round trip and one transaction. Its parameters are one JSON text of
the rows' scalar columns and one binary text array of their documents (cheap to send), and
it can return a state row read after its writes: a claim reads the state it is about to
change in the same round trip (``commit_reading``). It locks the requests (in code point
order) and the state (``SELECT ... FOR UPDATE``), checks every revision, the state version
and that the request produced no version yet, and only then writes; a failed check or any
later error rolls the whole operation back. A claim (the request becomes EXECUTING, no state
written) commits with ``synchronous_commit = off``: losing it in a crash is harmless, since
the final commit checks the claimed revision. An unreadable row read by id raises
``StoredDataError``; a server that cannot be reached, a broken connection or a cancelled
statement raises ``StoreUnavailableError`` with the URL's password removed (the broken
connection is discarded and the pool's idle connections are checked; connections are not
checked on every checkout, which would cost a round trip per operation). The store keeps
one connection that came back healthy aside for its next operation, past the pool's
checkout (see ``_Checkout``), and its connections wait for the socket without psycopg's
per-wait timer (``_Connection``).

With ``write_flights=N`` (see :class:`PostgresOptions`) at most N write statements are in
flight at once; the writes that arrive meanwhile are sent together as one call of
``governed_commit_batch`` (one round trip, one transaction, one WAL flush), each written
and checked as its own ``governed_commit``.

Workers reserve ready requests in batches with one call of ``reserve_ready`` (an
``UPDATE ... FOR UPDATE SKIP LOCKED`` walking a partial index of the ready rows in order),
and wait for new ones with LISTEN on the schema's channel (``governed_commit`` notifies it
when it writes a ready request). A row
that cannot be read is quarantined and skipped by every multi-row read. ``purge`` deletes
old terminal requests with their decisions in one statement.

Options (:class:`PostgresOptions`) come from ``open`` keywords or URL query parameters.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import logging
import math
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import attrs
import psycopg
import psycopg.errors
from psycopg import pq
from psycopg.abc import PQGen
from psycopg.adapt import AdaptersMap, Dumper
from psycopg.waiting import Ready, Wait
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from mutator import (
    AuditEntry,
    ConcurrencyError,
    ConfigurationError,
    HistoryEntry,
    MutationHistory,
    MutatorError,
)
from mutator.serialization import structure, unstructure

from .._arguments import check_id, check_key, check_version
from .._commit_types import GovernedCommit, RequestWrite
from .._decisions import RequestDecision
from .._enums import DecisionCategory, PendingReason, RequestStatus
from .._errors import (
    RequestAlreadyExistsError,
    RequestConcurrencyError,
    RequestNotFoundError,
    StoredDataError,
    StoreNotFoundError,
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
from . import redact_url
from ._documents import RequestDocuments, decode, paced, parse
from ._options import check_create
from ._postgres_options import PostgresOptions, parse_url
from ._postgres_schema import (
    COMMIT_CODES,
    MIGRATIONS,
    READY_STATUSES,
    SCHEMA_VERSION,
    STORE_RELATIONS,
    ready_channel,
)
from ._runtime import running_library

__all__ = [
    "SCHEMA_VERSION",
    "PostgresAuditSink",
    "PostgresCommitter",
    "PostgresDecisionHistory",
    "PostgresHistoryStore",
    "PostgresOptions",
    "PostgresRequestStore",
    "PostgresStateStore",
    "PostgresStore",
]

BACKEND = "postgresql"

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

_log = logging.getLogger("mutator.governance.postgres")


def _orjson_encoder() -> Callable[[Any], bytes] | None:
    """orjson's encoder when it is installed (the ``fast`` extra), else None."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - the stdlib-only install
        return None
    return orjson.dumps


_orjson_dumps = _orjson_encoder()


class _Documents(list[str]):
    """The documents of one ``governed_commit`` call, sent by :class:`_DocumentsDumper`."""

    __slots__ = ()


_TEXT_OID = 25
_TEXT_ARRAY_OID = 1009
# A binary one-dimensional array: dimensions, has-null flag, element type, length and
# lower bound; then each element as its byte length and bytes.
_ARRAY_HEAD = struct.Struct("!iiiii")
_ARRAY_EMPTY = struct.pack("!iii", 0, 0, _TEXT_OID)
_ELEMENT_LENGTH = struct.Struct("!i")


class _DocumentsDumper(Dumper):
    """A binary ``text[]`` of :class:`_Documents` (non-NULL strings), built in one pass.

    psycopg's generic list dumper inspects the list and looks up the element dumper on
    every call, in Python; this writes the same bytes the binary list dumper writes for a
    flat list of strings.
    """

    format = pq.Format.BINARY
    oid = _TEXT_ARRAY_OID

    def __init__(self, cls: type, context: Any = None) -> None:
        super().__init__(cls, context)
        conn = self.connection
        self._encoding = conn.info.encoding if conn is not None else "utf-8"

    def dump(self, obj: Sequence[str]) -> bytes:
        if not obj:
            return _ARRAY_EMPTY
        encoding = self._encoding
        pack = _ELEMENT_LENGTH.pack
        data = [_ARRAY_HEAD.pack(1, 0, _TEXT_OID, len(obj), 1)]
        for text in obj:
            raw = text.encode(encoding)
            data.append(pack(len(raw)))
            data.append(raw)
        return b"".join(data)


_ADAPTERS = AdaptersMap(psycopg.adapters)
_ADAPTERS.register_dumper(_Documents, _DocumentsDumper)


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


# The key of a pooled connection's kept cursor in its ``__dict__`` (see _cursor).
_CURSOR = "_mutator_cursor"


def _cursor(conn: Connection) -> psycopg.AsyncCursor[tuple[Any, ...]]:
    """The cursor kept on ``conn`` for the hot statements (creating one per statement, as
    ``conn.execute`` does, costs as much as dumping the parameters). Its results are read
    inside the checkout: the next checkout of the connection runs its own statement on it.
    """
    cursor: psycopg.AsyncCursor[tuple[Any, ...]] | None = conn.__dict__.get(_CURSOR)
    if cursor is None or cursor.closed:
        cursor = conn.__dict__[_CURSOR] = conn.cursor()
    return cursor


async def _fetchone(conn: Connection, sql: str, params: Sequence[Any]) -> Any:
    """The first row of ``sql`` run on ``conn``'s kept cursor, or None."""
    cursor = _cursor(conn)
    await cursor.execute(sql, params)
    return await cursor.fetchone()


async def _fetchall(conn: Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """The rows of ``sql`` run on ``conn``'s kept cursor."""
    cursor = _cursor(conn)
    await cursor.execute(sql, params)
    return await cursor.fetchall()


def _rolled_back(error: BaseException) -> bool:
    """Whether ``error`` is a deadlock or serialization failure (SQLSTATE class 40: the
    server rolled the transaction back whole; psycopg's ``DeadlockDetected`` is not a
    ``TransactionRollback``)."""
    return isinstance(error, psycopg.DatabaseError) and (error.sqlstate or "").startswith("40")


def _lost(error: psycopg.DatabaseError) -> bool:
    """Whether ``error`` is a lost connection or a server shutting down: the outcome of the
    statement is unknown. Any other error is the server's answer, having rolled the
    statement back (a deadlock, a refused value, a cancelled statement: SQLSTATE 57014)."""
    state = error.sqlstate
    return isinstance(error, psycopg.OperationalError) and (
        state is None or state.startswith("08") or (state.startswith("57") and state != "57014")
    )


_READY_R = Ready.R
_READY_W = Ready.W
_WAIT_R = Wait.R
_WAIT_W = Wait.W


class _Interrupted:
    """A statement's generator, suspended at ``state`` when ``error`` interrupted its wait,
    handed to psycopg's own wait: the first step raises ``error`` there, so psycopg does
    what it does for an interrupted wait (cancels the statement on the server and waits
    for the rest of the generator, which it resumes from ``state``)."""

    __slots__ = ("_error", "_gen", "_state")

    def __init__(self, gen: PQGen[Any], state: int, error: BaseException) -> None:
        self._gen = gen
        self._state = state
        self._error: BaseException | None = error

    def __iter__(self) -> _Interrupted:
        return self

    def __next__(self) -> int:
        error, self._error = self._error, None
        if error is not None:
            raise error
        return self._state

    def send(self, value: int) -> Any:
        return self._gen.send(value)


class _Connection(psycopg.AsyncConnection[tuple[Any, ...]]):
    """The pool's connections: psycopg's, waiting for the socket without a timer.

    psycopg's ``wait_async`` arms a 0.1 s timer on the event loop for every wait (a timer
    handle pushed on the loop's heap and cancelled), on top of registering the socket:
    about a tenth of a statement's client instructions. A wait without a timeout here only
    registers the socket; an interrupted wait (cancellation) goes on in psycopg's own
    ``wait``, which cancels the statement on the server and waits for it (at most 5 s
    each), shielded: a cancel scope delivers its cancellation again at every await, which
    made psycopg give up, close the connection and leave the statement running.
    """

    async def wait(
        self,
        gen: PQGen[Any],
        interval: float = 0.1,
        timeout: float | None = None,  # noqa: ASYNC109 - psycopg's signature
    ) -> Any:
        if timeout is not None:
            return await super().wait(gen, interval, timeout)
        try:
            state = next(gen)
        except StopIteration as done:
            return done.value
        fileno = self.pgconn.socket
        loop = asyncio.get_running_loop()
        ready = 0
        future: asyncio.Future[None] | None = None

        def wakeup(flag: int) -> None:
            nonlocal ready
            ready |= flag
            if future is not None and not future.done():
                future.set_result(None)

        while True:
            ready = 0
            reading = state & _WAIT_R
            writing = state & _WAIT_W
            if reading:
                loop.add_reader(fileno, wakeup, _READY_R)
            if writing:
                loop.add_writer(fileno, wakeup, _READY_W)
            interrupted: BaseException | None = None
            try:
                future = loop.create_future()
                await future
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit) as error:
                interrupted = error
            finally:
                future = None
                if reading:
                    loop.remove_reader(fileno)
                if writing:
                    loop.remove_writer(fileno)
            if interrupted is not None:
                rest: Any = _Interrupted(gen, state, interrupted)
                with anyio.CancelScope(shield=True):
                    return await super().wait(rest, interval)
            try:
                state = gen.send(ready)
            except StopIteration as done:
                return done.value


# How many operations the spare connection serves before it goes back through the pool
# (where the pool applies its own rules: lifetime, a drain, a closed pool).
_SPARE_USES = 1000
_IDLE = pq.TransactionStatus.IDLE


class _Checkout:
    """``async with db.connection() as conn``: a pooled connection, errors mapped.

    What ``pool.connection()`` does, without its generator-based context managers and
    the connection's own ``async with`` (the connections are in autocommit mode, so its
    commit on exit has nothing to do; the pool rolls back or discards a connection
    returned in any other state). Any failure while getting the connection, in the block
    or while returning it is mapped by :meth:`_Database.failed`.

    The store keeps one connection that came back healthy aside (``db.spare``) and hands
    it to the next checkout: the pool's ``getconn`` and ``putconn`` (a lock, statistics,
    log calls, a dozen coroutines) cost a fifth of a statement's client instructions.
    Other checkouts meanwhile use the pool, and while any of them waits for it every
    connection goes back to it. The spare goes back to the pool after
    ``_SPARE_USES`` operations, when an error has the pool's idle connections checked,
    and when the store closes; none is kept when every checkout must be checked
    (``check_connections``).
    """

    __slots__ = ("_conn", "_db")

    def __init__(self, db: _Database) -> None:
        self._db = db
        self._conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        db = self._db
        conn = db.spare
        if conn is not None:
            db.spare = None
            self._conn = conn
            return conn
        db.asking += 1
        try:
            self._conn = await db.pool.getconn(timeout=db.timeout)
        except Exception as error:
            await db.failed(error)
            raise
        finally:
            db.asking -= 1
        return self._conn

    async def __aexit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        conn, self._conn = self._conn, None
        assert conn is not None
        db = self._db
        if (
            error is None
            and db.spare is None
            and not db.asking
            and db.keep_spare
            and conn.pgconn.transaction_status == _IDLE
            and not db.pool.closed
        ):
            db.spare_uses += 1
            if db.spare_uses < _SPARE_USES:
                db.spare = conn
                return
            db.spare_uses = 0
        try:
            await db.pool.putconn(conn)
        except Exception as returned:  # replaces the block's error, as a finally would
            await db.failed(returned)
            raise
        if isinstance(error, Exception):
            await db.failed(error)


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
        connect: dict[str, Any] | None = None,
    ) -> None:
        self.checking = False
        self.write_flights = 0
        # The connection kept aside for the next checkout (see _Checkout).
        self.spare: Connection | None = None
        self.spare_uses = 0
        self.keep_spare = True
        # Checkouts waiting for the pool: a connection goes back to it while there are any.
        self.asking = 0
        self.connect = connect or {}
        self.pool = pool
        self.registry = registry
        self.documents = RequestDocuments(registry)
        self.schema = schema
        self.s = f'"{schema}"'
        self.url = url
        self.password = password
        self.timeout = timeout

    def redact(self, text: str) -> str:
        """``text`` without the URL's password."""
        return text.replace(self.password, "***") if self.password else text

    def unavailable(self, message: str, error: BaseException | None = None) -> NoReturn:
        """Raise StoreUnavailableError (the detail never carries the password)."""
        detail = self.redact(f"{message}: {error}" if error is not None else message)
        raise StoreUnavailableError(detail, url=self.url) from error

    def connection(self) -> _Checkout:
        """An autocommit connection from the pool (``async with``); driver failures become
        store errors.

        Connections are not checked on checkout (a round trip each time). A connection
        that fails is discarded by the pool (psycopg marks it broken), the operation
        raises StoreUnavailableError, and the pool's idle connections are checked then,
        so those broken by the same outage are replaced too.
        """
        return _Checkout(self)

    async def failed(self, error: BaseException) -> None:
        """Raise the store error for a driver failure ``error`` (return for any other)."""
        if isinstance(error, PoolTimeout):
            self.unavailable("no PostgreSQL connection available", error)
        if isinstance(error, PoolClosed):
            self.unavailable("the store is closed", error)
        if _rolled_back(error):
            # Deadlock or serialization failure: the transaction was rolled back whole.
            raise ConcurrencyError(f"PostgreSQL rolled back a transaction: {error}") from error
        if isinstance(error, psycopg.errors.QueryCanceled):
            self.unavailable("PostgreSQL cancelled the statement (statement_timeout)", error)
        if isinstance(error, psycopg.errors.ProgramLimitExceeded):
            # e.g. a value too long for an index entry: the value's fault, not an outage.
            raise ValueError(f"PostgreSQL refused a value: {error}") from error
        if isinstance(error, psycopg.OperationalError):
            await self._check_idle()
            if _lost(error):
                self.unavailable("PostgreSQL connection failed", error)
            # The server answered (out of disk, memory, connections...): the operation's
            # transaction rolled back, the connection is fine.
            self.unavailable(f"PostgreSQL failed the operation (SQLSTATE {error.sqlstate})", error)
        if isinstance(error, psycopg.DataError):
            # e.g. a NUL character in an indexed text column, or a datetime out of range.
            raise ValueError(f"PostgreSQL refused a value: {error}") from error
        if isinstance(error, psycopg.InterfaceError):
            self.unavailable("PostgreSQL connection failed", error)
        if isinstance(error, psycopg.DatabaseError):
            # Anything else the server refused: the operation's transaction rolled back.
            self.unavailable("PostgreSQL failed the operation", error)

    async def _check_idle(self) -> None:
        """Check the pool's idle connections once (after an error; never on the hot path)."""
        if self.checking:
            return
        self.checking = True
        try:
            with suppress(Exception):  # the original error is what the caller sees
                await self.release_spare()  # checked with the idle ones
            with suppress(Exception):
                await self.pool.check()
        finally:
            self.checking = False

    async def release_spare(self) -> None:
        """Return the spare connection to the pool (closed, if the pool is)."""
        conn, self.spare = self.spare, None
        if conn is not None:
            await self.pool.putconn(conn)

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
        state_id, status, reason, actor, created, updated, kind, original, due = _request_columns(
            stored
        )
        document, _ = self.documents.request(stored)
        return (state_id, status, reason, actor, created, updated, document, kind, original, due)

    def decision_from(self, sequence: int, request_id: str, text: Any) -> RequestDecision:
        key = f"decision {sequence} of request {request_id}"
        field = "decisions.document"
        data = self.load(text, key=key, field=field, request_id=request_id)
        decision: RequestDecision = decode(
            self.registry.structure_decision,
            data,
            backend=BACKEND,
            key=key,
            field=field,
            request_id=request_id,
        )
        # Rows migrated from schema version 1 carry their number in the column only.
        if decision.sequence != sequence:
            decision = attrs.evolve(decision, sequence=sequence)
        return decision

    def decision_rows(
        self, request_id: str, decisions: Sequence[RequestDecision]
    ) -> list[tuple[Any, ...]]:
        """Rows of ``decisions`` (ValueError when one is not numbered from 1)."""
        rows = []
        for decision in decisions:
            if type(decision.sequence) is not int or decision.sequence < 1:
                raise ValueError(
                    f"decision {decision} of request {request_id!r} has sequence "
                    f"{decision.sequence!r}; decisions are numbered from 1 within their request"
                )
            rows.append(
                (
                    request_id,
                    decision.sequence,
                    decision.category.value,
                    decision.timestamp,
                    self.documents.decision(decision),
                )
            )
        return rows

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


_REQUEST_COLUMNS = (
    "state_id, status, pending_reason, actor_id, created_at, updated_at, document, "
    "mutation_type, compensates, due_at"
)


class _ReadyListener:
    """The dedicated connection behind ``wait_ready``: LISTENs on the schema's channel.

    Opened on the first wait and kept between waits, so notifications that arrive
    between two calls wait in the connection for the next one.
    """

    def __init__(self, db: _Database, channel: str) -> None:
        self._db = db
        self._channel = channel
        self._conn: Connection | None = None
        self._lock = anyio.Lock()
        self._lost = False
        self._closed = False

    async def wait(self, seconds: float) -> bool:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        deadline = anyio.current_time() + seconds
        acquired = False
        with anyio.move_on_after(seconds):
            await self._lock.acquire()
            acquired = True
        if not acquired:  # another task waited all along on this connection
            return False
        try:
            try:
                return await self._wait(deadline)
            except psycopg.Error as error:
                await self._drop(error)
            if not self._closed:  # an outage: wait like a timeout, no busy polling
                await anyio.sleep(max(0.0, deadline - anyio.current_time()))
            return False
        finally:
            self._lock.release()

    async def _wait(self, deadline: float) -> bool:
        conn = self._conn
        if conn is None:
            # Not cut short by the wait's timeout (connect_timeout bounds it): a listener
            # left half set up would miss what it is there to hear.
            conn = await self._open()
            self._conn = conn
            if self._lost:
                _log.info("listening for ready requests again", extra={"operation": "listen"})
                self._lost = False
                return True  # whatever was committed during the outage went unheard
        woken = False
        remaining = max(0.0, deadline - anyio.current_time())
        async for _ in conn.notifies(timeout=remaining, stop_after=1):
            woken = True
        if woken:  # one wake-up covers every notification already received
            async for _ in conn.notifies(timeout=0):
                pass
        return woken

    async def _open(self) -> Connection:
        if self._closed:
            raise psycopg.InterfaceError("the store is closed")
        conn = await psycopg.AsyncConnection.connect(**self._db.connect)
        try:
            await conn.execute(f'LISTEN "{self._channel}"')
            if self._closed:  # closed while connecting
                raise psycopg.InterfaceError("the store is closed")
        except BaseException:
            with anyio.CancelScope(shield=True), suppress(Exception):
                await conn.close()
            raise
        return conn

    async def _drop(self, error: psycopg.Error) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                await conn.close()
        if not self._lost and not self._closed:
            self._lost = True
            _log.warning(
                "lost the connection listening for ready requests (%s); polling until it is back",
                self._db.redact(str(error)),
                extra={"operation": "listen", "backend": BACKEND},
            )

    async def aclose(self) -> None:
        """Close the connection (a wait in progress returns False at once)."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                await conn.close()


_TERMINAL = [status.value for status in RequestStatus if status.is_terminal]

# Keeps a request's reservation only while its status and reason stay (parameters: the
# new status and reason, twice).
_KEEP_RESERVATION = (
    "reserved_by = CASE WHEN status = %s AND pending_reason IS NOT DISTINCT FROM %s "
    "THEN reserved_by END, "
    "reserved_until = CASE WHEN status = %s AND pending_reason IS NOT DISTINCT FROM %s "
    "THEN reserved_until END"
)


class PostgresRequestStore:
    """Requests in the ``requests`` table; ``replace`` is a compare-and-set on ``revision``.

    Also a :class:`~mutator_governance.ReadyQueue` (one ``UPDATE ... FOR UPDATE SKIP
    LOCKED`` statement over the partial index of ready rows), a
    :class:`~mutator_governance.ReadySignal` (LISTEN on the schema's channel over one
    dedicated connection), a :class:`~mutator_governance.QuarantineLog` (the ``quarantine``
    table) and a :class:`~mutator_governance.RequestPurger` that deletes the requests'
    decisions in the same statement.
    """

    def __init__(self, db: _Database) -> None:
        self._db = db
        s = db.s
        self._channel = ready_channel(db.schema)
        # Plain writes notify the ready channel like governed_commit does.
        notify = (
            f"SELECT count(*), count(pg_notify('{self._channel}', '')) "
            f"FILTER (WHERE {READY_STATUSES}) FROM written"
        )
        self._insert = (
            f"WITH written AS (INSERT INTO {s}.requests (request_id, {_REQUEST_COLUMNS}, "
            "revision) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0) "
            f"RETURNING status, pending_reason) {notify}"
        )
        self._update = (
            f"WITH written AS (UPDATE {s}.requests SET {_KEEP_RESERVATION}, state_id = %s, "
            "status = %s, pending_reason = %s, actor_id = %s, created_at = %s, "
            "updated_at = %s, document = %s, mutation_type = %s, compensates = %s, "
            "due_at = %s, revision = revision + 1 WHERE request_id = %s AND revision = %s "
            f"RETURNING status, pending_reason) {notify}"
        )
        self._revision = f"SELECT revision FROM {s}.requests WHERE request_id = %s"
        self._get = f"SELECT document FROM {s}.requests WHERE request_id = %s"
        self._select = f"SELECT request_id, created_at, document FROM {s}.requests"
        self._order = ' ORDER BY created_at, request_id COLLATE "C"'
        self._reserve = (
            f"SELECT request_id, created_at, document FROM {s}.reserve_ready(%s, %s, %s, %s, %s)"
        )
        self._unreserve = (
            f"UPDATE {s}.requests SET reserved_by = NULL, reserved_until = NULL "
            "WHERE request_id = ANY(%s) AND reserved_by = %s"
        )
        self._due = (
            f"SELECT request_id, revision, document FROM {s}.requests AS r "
            "WHERE status = 'pending' AND due_at IS NOT NULL AND due_at <= %s "
            f"AND NOT EXISTS (SELECT 1 FROM {s}.quarantine AS q WHERE q.request_id = r.request_id) "
            'ORDER BY due_at, request_id COLLATE "C" LIMIT %s'
        )
        # A row whose deadline is not what its document says (written before the schema
        # knew deadlines) gets the right one, unless it changed since it was read.
        self._redate = (
            f"UPDATE {s}.requests AS r SET due_at = x.due FROM unnest(%s::text[], "
            "%s::bigint[], %s::timestamptz[]) AS x(id, revision, due) "
            "WHERE r.request_id = x.id AND r.revision = x.revision"
        )
        # Records unreadable rows (new ones come back) and drops their reservations, so a
        # released row can be reserved again at once.
        self._quarantine = (
            f"WITH added AS (INSERT INTO {s}.quarantine (request_id, field, error, detected_at) "
            "SELECT id, f, e, clock_timestamp() "
            "FROM unnest(%s::text[], %s::text[], %s::text[]) AS x(id, f, e) "
            "ON CONFLICT (request_id) DO NOTHING RETURNING request_id, detected_at), "
            f"freed AS (UPDATE {s}.requests SET reserved_by = NULL, reserved_until = NULL "
            "WHERE request_id = ANY(%s) AND reserved_by IS NOT NULL) "
            "SELECT request_id, detected_at FROM added"
        )
        self._quarantined = (
            f"SELECT request_id, field, error, detected_at FROM {s}.quarantine "
            'ORDER BY detected_at, request_id COLLATE "C"'
        )
        self._release = f"DELETE FROM {s}.quarantine WHERE request_id = %s"
        self._purge = (
            f"WITH doomed AS (SELECT request_id FROM {s}.requests AS r "
            "WHERE status = ANY(%s) AND updated_at < %s "
            f"AND NOT EXISTS (SELECT 1 FROM {s}.requests AS c "
            "WHERE c.compensates = r.request_id AND c.status <> ALL(%s)) "
            'ORDER BY updated_at, request_id COLLATE "C" LIMIT %s FOR UPDATE OF r SKIP LOCKED), '
            f"decisions AS (DELETE FROM {s}.decisions AS d USING doomed "
            "WHERE d.request_id = doomed.request_id RETURNING 1), "
            f"quarantined AS (DELETE FROM {s}.quarantine AS q USING doomed "
            "WHERE q.request_id = doomed.request_id), "
            f"gone AS (DELETE FROM {s}.requests AS r USING doomed "
            "WHERE r.request_id = doomed.request_id RETURNING r.request_id, r.updated_at) "
            "SELECT (SELECT count(*) FROM decisions), "
            'array(SELECT request_id FROM gone ORDER BY updated_at, request_id COLLATE "C")'
        )
        self._listener = _ReadyListener(db, self._channel)

    async def create(self, request: MutationRequest) -> MutationRequest:
        """Insert ``request`` at revision 0 (RequestAlreadyExistsError when the id is taken)."""
        stored = request if request.revision == 0 else attrs.evolve(request, revision=0)
        row = self._db.request_row(stored, 0)
        async with self._db.connection() as conn:
            try:
                await conn.execute(self._insert, (stored.request_id, *row))
            except psycopg.errors.UniqueViolation:
                raise RequestAlreadyExistsError(request.request_id) from None
        return stored

    async def replace(self, request: MutationRequest, *, expected_revision: int) -> MutationRequest:
        """Store ``request`` at ``expected_revision + 1`` if the stored one is at ``expected``.

        A change of status or pending reason drops the request's reservation.
        """
        stored = attrs.evolve(request, revision=expected_revision + 1)
        row = self._db.request_row(stored, expected_revision + 1)
        status, reason = row[1], row[2]
        params = (status, reason, status, reason, *row, request.request_id, expected_revision)
        async with self._db.connection() as conn:
            written = await (await conn.execute(self._update, params)).fetchone()
            if written is not None and written[0] == 1:
                return stored
            found = await (await conn.execute(self._revision, (request.request_id,))).fetchone()
        if found is None:
            raise RequestNotFoundError(request.request_id)
        raise RequestConcurrencyError(request.request_id, expected_revision, int(found[0]))

    async def get(self, request_id: str) -> MutationRequest | None:
        """The request, or None (StoredDataError when its row cannot be read; the row is
        quarantined, as a listing would)."""
        check_key("request_id", request_id)
        async with self._db.connection() as conn:
            row = await _fetchone(conn, self._get, (request_id,))
        if row is None:
            return None
        try:
            return self._db.request_from(request_id, row[0])
        except StoredDataError as error:
            with contextlib.suppress(StoreUnavailableError):  # the next read records it
                await self._set_aside([(request_id, error)])
            raise

    async def _rows(self, where: str, params: Sequence[Any], tail: str = "") -> list[Any]:
        """``(request_id, created_at, document)`` rows, ordered."""
        sql = self._select + (f" WHERE {where}" if where else "") + self._order + tail
        async with self._db.connection() as conn:
            return await (await conn.execute(sql, params)).fetchall()

    def _listing(
        self, query: RequestQuery, where: str, params: Sequence[Any], limit: int
    ) -> tuple[str, builtins.list[Any]]:
        """The statement reading the first ``limit`` rows of ``query`` matching ``where``.

        Statuses, pending reasons and mutation types are compared with ``=``, one value
        per statement branch: the first of them with several values is read as one
        ordered walk of its index (``requests_status``, ``requests_reason``,
        ``requests_mutation_type``) per value, merged (``UNION ALL`` of ``LIMIT``-ed
        branches). ``= ANY(...)`` has no index in ``created_at`` order, and the planner
        walks ``requests_order`` instead: through the whole terminal backlog when the
        rows asked for are the newest ones. Mutation types always come with a branch of
        their own for NULL: a row the upgrade to schema version 3 could not read (its
        type is checked in Python).
        """
        dimensions: tuple[tuple[str, Sequence[str | None]], ...] = (
            ("status", sorted(status.value for status in query.statuses)),
            ("pending_reason", sorted(reason.value for reason in query.pending_reasons)),
            (
                "mutation_type",
                [*sorted(query.mutation_types), None] if query.mutation_types else [],
            ),
        )
        fixed: builtins.list[str] = []
        fixed_values: builtins.list[Any] = []
        branches: builtins.list[tuple[str, builtins.list[Any]]] = []
        for column, wanted in dimensions:
            if len(wanted) == 1:
                fixed.append(f"{column} = %s")
                fixed_values.append(wanted[0])
            elif wanted and not branches:
                branches = [
                    (f"{column} IS NULL", []) if key is None else (f"{column} = %s", [key])
                    for key in wanted
                ]
            elif wanted:
                known = [key for key in wanted if key is not None]
                orphan = f" OR {column} IS NULL" if None in wanted else ""
                fixed.append(f"({column} = ANY(%s){orphan})")
                fixed_values.append(known)
        clauses = fixed + ([where] if where else [])
        values = [*fixed_values, *params]
        if not branches:
            sql = self._select + (" WHERE " + " AND ".join(clauses) if clauses else "")
            return sql + self._order + " LIMIT %s", [*values, limit]
        rest = "".join(f" AND {clause}" for clause in clauses)
        statements: builtins.list[str] = []
        merged: builtins.list[Any] = []
        for clause, keys in branches:
            statements.append(f"({self._select} WHERE {clause}{rest}{self._order} LIMIT %s)")
            merged += [*keys, *values, limit]
        union = " UNION ALL ".join(statements)
        return f"SELECT * FROM ({union}) AS merged{self._order} LIMIT %s", [*merged, limit]

    async def _every(self, where: str, params: Sequence[Any]) -> builtins.list[MutationRequest]:
        """Every readable request matching ``where``, ordered, read a page at a time.

        An unbounded listing (``pending()``, ``by_state``) reads and decodes
        :data:`_PAGE` rows per statement, so no single result holds the event loop while
        the driver parses it, however many rows match.
        """
        found: builtins.list[MutationRequest] = []
        position: tuple[Any, ...] = ()
        while True:
            clauses = [where] if where else []
            if position:
                clauses.append('(created_at, request_id COLLATE "C") > (%s, %s)')
            values = [*params, *position, _PAGE]
            rows = await self._rows(" AND ".join(clauses), values, " LIMIT %s")
            found.extend(await self._readable(rows))
            if len(rows) < _PAGE:
                return found
            request_id, created_at, _ = rows[-1]
            position = (created_at, request_id)

    async def _readable(self, rows: Sequence[Any]) -> builtins.list[MutationRequest]:
        """The requests of ``rows`` that can be read; the others are quarantined."""
        read = await paced(rows, self._read_row)
        found = [r for r in read if isinstance(r, MutationRequest)]
        bad = [
            (row[0], r)
            for row, r in zip(rows, read, strict=True)
            if not isinstance(r, MutationRequest)
        ]
        if bad:
            await self._set_aside(bad)
        return found

    def _read_row(self, row: Any) -> MutationRequest | StoredDataError:
        """The request of a ``(request_id, _, document, ...)`` row, or why it cannot be read."""
        try:
            return self._db.request_from(row[0], row[2])
        except StoredDataError as error:
            return error

    async def _set_aside(self, bad: Sequence[tuple[str, StoredDataError]]) -> None:
        """Quarantine ``bad`` rows; each newly quarantined one is logged once."""
        errors = dict(bad)
        ids = builtins.list(errors)
        params = (
            ids,
            [error.field for error in errors.values()],
            [str(error) for error in errors.values()],
            ids,
        )
        async with self._db.connection() as conn:
            added = await (await conn.execute(self._quarantine, params)).fetchall()
        for request_id, detected_at in added:
            quarantine_entry(request_id, errors[request_id], detected_at)

    async def by_state(self, state_id: str) -> Sequence[MutationRequest]:
        """Requests targeting ``state_id``, by ``created_at`` then id (unreadable ones
        quarantined and skipped)."""
        check_key("state_id", state_id)
        return await self._every("state_id = %s", (state_id,))

    async def pending(
        self, reason: PendingReason | None = None, *, state_id: str | None = None
    ) -> Sequence[MutationRequest]:
        """PENDING requests, optionally with one reason and for one state, ordered."""
        reason = pending_reason(reason)
        clauses = ["status = %s"]
        params: builtins.list[Any] = [RequestStatus.PENDING.value]
        if reason is not None:
            clauses.append("pending_reason = %s")
            params.append(reason.value)
        if state_id is not None:
            clauses.append("state_id = %s")
            params.append(state_id)
        return await self._every(" AND ".join(clauses), params)

    async def list(
        self, query: RequestQuery | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> RequestPage:
        """A page of requests matching ``query``, ordered by ``created_at`` then id.

        Dimensions with a column are filtered in SQL; the rest of ``query.matches`` is
        checked on the rows, fetching further rows until the page is full. Unreadable
        rows are quarantined and skipped.
        """
        query = listing(query, limit)
        where, params = _where(query)
        position = decode_cursor(cursor) if cursor is not None else None
        found: builtins.list[MutationRequest] = []
        matches = query.predicate()
        batch = limit + 1
        while True:
            clauses, values = ([where], builtins.list(params)) if where else ([], [])
            if position is not None:
                clauses.append('(created_at, request_id COLLATE "C") > (%s, %s)')
                values.extend(position)
            sql, values = self._listing(query, " AND ".join(clauses), values, batch)
            async with self._db.connection() as conn:
                rows = await (await conn.execute(sql, values)).fetchall()
            for request in await self._readable(rows):
                if matches(request):
                    found.append(request)
                    if len(found) > limit:
                        break
            if len(found) > limit or len(rows) < batch:
                break
            request_id, created_at, _ = rows[-1]
            position = (created_at, request_id)
            batch = min(batch * 2, 1000)
        items = tuple(found[:limit])
        more = len(found) > limit
        return RequestPage(items, encode_cursor(items[-1]) if more and items else None)

    # -- ReadyQueue, ReadySignal, QuarantineLog, RequestPurger ---------------------------

    async def reserve(
        self,
        *,
        owner: str,
        limit: int,
        now: datetime,
        until: datetime,
        revalidation: bool = False,
    ) -> Sequence[MutationRequest]:
        """Reserve up to ``limit`` ready requests for ``owner`` until ``until``, oldest first.

        One call of the schema's ``reserve_ready``: it walks the ``requests_ready`` index
        in order, locks the oldest ready, unreserved, unquarantined rows it can (``SKIP
        LOCKED``: concurrent reservers take other rows, never wait or fail) and stamps them;
        it reads as many index entries as it takes rows, however big the backlog. An
        unreadable row among them is
        quarantined, its reservation dropped, and left out.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        params = (owner, limit, now, until, bool(revalidation))
        async with self._db.connection() as conn:
            rows = await _fetchall(conn, self._reserve, params)
        rows.sort(key=_reserved_order)  # code point order of ids is the "C" collation's
        return await self._readable(rows)

    async def unreserve(self, *, owner: str, request_ids: Sequence[str]) -> int:
        """Clear ``owner``'s reservations on ``request_ids``: one statement.

        Clears ``reserved_by`` / ``reserved_until`` on the rows ``owner`` holds (found by
        primary key); any write that makes a row stop being ready has already dropped its
        reservation. See :class:`~mutator_governance.ReservationRelease`.
        """
        ids = builtins.list(dict.fromkeys(request_ids))
        if not ids:
            return 0
        async with self._db.connection() as conn:
            cursor = await conn.execute(self._unreserve, (ids, owner))
        return max(cursor.rowcount, 0)

    async def due(self, *, now: datetime, limit: int) -> Sequence[MutationRequest]:
        """Up to ``limit`` pending requests whose deadline is at or before ``now``.

        Reads the partial index of pending rows with a deadline (``requests_due``), earliest
        first, so a sweep reads only what it expires. A row whose stored deadline is wrong
        (written before the upgrade that added it) gets the right one and is returned only
        if that one is due; unreadable rows are quarantined and left out.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        due: builtins.list[tuple[datetime, str, MutationRequest]] = []
        while len(due) < limit:
            wanted = limit - len(due)
            async with self._db.connection() as conn:
                rows = await _fetchall(conn, self._due, (now, wanted))
            redated: builtins.list[tuple[str, int, datetime | None]] = []
            bad: builtins.list[tuple[str, StoredDataError]] = []
            read = await paced(rows, self._read_row)
            for (request_id, revision, _), request in zip(rows, read, strict=True):
                if isinstance(request, StoredDataError):
                    bad.append((request_id, request))
                    continue
                deadline = expiry_deadline(request)
                if deadline is not None and deadline <= now:
                    due.append((deadline, request_id, request))
                else:
                    redated.append((request_id, revision, deadline))
            if bad:
                await self._set_aside(bad)
            if redated:
                params = tuple(builtins.list(column) for column in zip(*redated, strict=True))
                async with self._db.connection() as conn:
                    await conn.execute(self._redate, params)
            if len(rows) < wanted:
                break
        due.sort(key=_due_order)
        return [request for _, _, request in due]

    async def wait_ready(self, seconds: float) -> bool:
        """Wait at most ``seconds`` for a commit that made a request ready (LISTEN/NOTIFY).

        True when notified since the previous call returned, False on timeout. The
        listening connection is opened on the first call (notifications before it are
        not seen) and is not one of the pool's. When it is lost the call waits out
        ``seconds`` and returns False (one WARNING per outage); a later call reconnects
        and returns True at once, since a notification may have been missed meanwhile.
        """
        return await self._listener.wait(seconds)

    async def quarantined(self) -> Sequence[QuarantinedRequest]:
        """Every quarantined request, oldest detection first."""
        async with self._db.connection() as conn:
            rows = await (await conn.execute(self._quarantined)).fetchall()
        return [
            QuarantinedRequest(request_id, BACKEND, field, error, detected_at)
            for request_id, field, error, detected_at in rows
        ]

    async def release(self, request_id: str) -> bool:
        """Take ``request_id`` out of quarantine; True when it was quarantined."""
        async with self._db.connection() as conn:
            cursor = await conn.execute(self._release, (request_id,))
        return cursor.rowcount == 1

    async def purge(
        self, *, before: datetime, statuses: frozenset[RequestStatus], limit: int
    ) -> PurgeBatch:
        """Delete up to ``limit`` purgeable requests with their decisions, in one statement.

        Purgeable as :func:`~mutator_governance.purgeable` says, oldest ``updated_at``
        first; rows being written at that moment are skipped (the next batch takes them).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        chosen = sorted(status.value for status in statuses)
        async with self._db.connection() as conn:
            row = await (
                await conn.execute(self._purge, (chosen, before, _TERMINAL, limit))
            ).fetchone()
        assert row is not None
        decisions, request_ids = row
        return PurgeBatch(tuple(request_ids), int(decisions))

    async def aclose(self) -> None:
        """Close the listening connection of :meth:`wait_ready` (the pool is the store's)."""
        await self._listener.aclose()


_PAGE = 500
"""Rows an unbounded request listing reads per statement."""


def _due_order(entry: tuple[datetime, str, MutationRequest]) -> tuple[datetime, str]:
    return entry[0], entry[1]


def _reserved_order(row: Any) -> tuple[Any, str]:
    return row[1], row[0]


def _where(query: RequestQuery) -> tuple[str, list[Any]]:
    """The SQL filter for the dimensions of ``query`` that have columns, and its parameters.

    Statuses, pending reasons and mutation types are left to
    :meth:`PostgresRequestStore._listing`.

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
    """Decisions in the ``decisions`` table, unique by ``(request_id, sequence)``.

    Appending is idempotent: a decision whose sequence number is logged already is skipped,
    so a repair re-sending decisions appends exactly the missing ones.
    """

    def __init__(self, db: _Database) -> None:
        self._db = db
        s = db.s
        self._insert = (
            f"INSERT INTO {s}.decisions (request_id, sequence, category, timestamp, document) "
            "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::timestamptz[], "
            "%s::text[]) ON CONFLICT (request_id, sequence) DO NOTHING"
        )
        self._for_request = (
            f"SELECT sequence, document FROM {s}.decisions WHERE request_id = %s ORDER BY sequence"
        )
        self._recent = f"SELECT sequence, request_id, document FROM {s}.decisions"

    async def append(self, request_id: str, decisions: Sequence[RequestDecision]) -> None:
        """Append ``decisions`` to ``request_id``'s log in one statement, skipping logged
        sequence numbers (ValueError for a decision numbered below 1)."""
        rows = self._db.decision_rows(request_id, decisions)
        if not rows:
            return
        columns = [list(column) for column in zip(*rows, strict=True)]
        async with self._db.connection() as conn:
            await conn.execute(self._insert, columns)

    async def for_request(self, request_id: str) -> Sequence[RequestDecision]:
        """Decisions of one request in sequence order."""
        check_key("request_id", request_id)
        async with self._db.connection() as conn:
            rows = await (await conn.execute(self._for_request, (request_id,))).fetchall()
        return tuple(
            await paced(rows, lambda row: self._db.decision_from(row[0], request_id, row[1]))
        )

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
        decision_from = self._db.decision_from
        return await paced(
            rows, lambda row: DecisionRecord(row[1], decision_from(row[0], row[1], row[2]))
        )


class PostgresStateStore:
    """States with decimal-counter versions ("1", "2", ...) and compare-and-set writes."""

    def __init__(self, db: _Database, writer: _Writer) -> None:
        self._db = db
        self._writer = writer
        s = db.s
        self._get = f"SELECT version, request_id, document FROM {s}.states WHERE state_id = %s"
        self._version_by_request = (
            f"SELECT version FROM {s}.state_versions WHERE state_id = %s AND request_id = %s"
        )

    async def get(self, state_id: str) -> VersionedState[Any] | None:
        """The state with its version and producing request, or None.

        A stored version that is not a decimal counter raises StoredDataError.
        """
        check_key("state_id", state_id)
        async with self._db.connection() as conn:
            row = await _fetchone(conn, self._get, (state_id,))
        if row is None:
            return None
        version, request_id, text = row
        _check_version(state_id, version, "states.version")
        return VersionedState(self._db.state_from(state_id, text), version, request_id)

    async def put(
        self,
        state_id: str,
        state: Any,
        *,
        expected_version: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Write ``state`` as the version after ``expected_version`` (None creates it).

        ConcurrencyError (nothing written) when the state moved, or when ``request_id``
        already produced a version of it; ValueError for an id no store can keep.
        """
        check_id("state_id", state_id)
        check_version(expected_version)
        try:
            version = next_version(expected_version)
        except ValueError:
            # No stored version is ever anything but a counter: the state has moved.
            current = await self.get(state_id)
            actual = None if current is None else current.version
            raise _state_conflict(state_id, expected_version, actual) from None
        document = self._db.dumps(self._db.registry.unstructure_value(state))
        write = _StateRow(state_id, expected_version, version, request_id, document)
        await self._writer.write((), write, (), (), durable=True)
        return version

    async def version_by_request(self, state_id: str, request_id: str) -> str | None:
        """The version of ``state_id`` that ``request_id`` produced, if any."""
        async with self._db.connection() as conn:
            row = await (
                await conn.execute(self._version_by_request, (state_id, request_id))
            ).fetchone()
        if row is None:
            return None
        _check_version(state_id, row[0], "state_versions.version")
        return str(row[0])


def _check_version(state_id: str, version: Any, field: str) -> None:
    if not (isinstance(version, str) and version.isascii() and version.isdigit()):
        raise StoredDataError(
            f"the stored version {version!r} is not a decimal counter",
            backend=BACKEND,
            key=state_id,
            field=field,
        )


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
        record_from = self._db.record_from
        return await paced(rows, lambda row: record_from("audit", row[0], row[1], AuditEntry))


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
        record_from = self._db.record_from
        return await paced(rows, lambda row: record_from("history", row[0], row[1], HistoryEntry))

    async def history(self, state_id: str) -> MutationHistory[Any]:
        """The whole history of ``state_id`` (empty when unknown)."""
        check_key("state_id", state_id)
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


@attrs.frozen
class _StateRow:
    """A state write with its encoded document."""

    state_id: str
    expected_version: str | None
    version: str
    request_id: str | None
    document: str


@attrs.define(eq=False)
class _Write:
    """One operation's ``governed_commit`` arguments, and what its errors are mapped from."""

    meta: str
    documents: _Documents
    read_state: str | None
    durable: bool
    requests: Sequence[tuple[RequestWrite, MutationRequest]]
    state: _StateRow | None
    future: asyncio.Future[tuple[Any, ...] | None] | None = None
    sent: bool = False


class _Writer:
    """Calls ``governed_commit``: one statement writes a whole operation or nothing.

    At most ``flights`` write statements are in flight at once (0: no limit); the writes
    that arrive meanwhile wait and are then sent together, as one
    ``governed_commit_batch`` statement (one round trip, one transaction, one WAL flush),
    each still checked and written as its own operation. A write that finds a free
    flight first lets the event loop run once, so writers ready at the same moment go
    with it; if none came, it is sent alone.
    """

    def __init__(self, db: _Database, flights: int = 0) -> None:
        self._db = db
        # The scalar columns travel as one JSON text (one parameter, dumped by the C
        # encoder) and the documents as one binary text array (%b: the text array format
        # would escape every quote of the JSON through a Python-level regex callback).
        self._sql = f"SELECT version, request_id, document FROM {db.s}.governed_commit(%s, %b, %s)"
        self._batch_sql = (
            "SELECT code, detail, hint, constraint_name, version, request_id, document "
            f"FROM {db.s}.governed_commit_batch(%s, %b, %s, %s, %s, %s, %s, %s, %s)"
        )
        self._flights = flights
        self._flying = 0
        self._waiting: deque[_Write] = deque()
        self._batches: set[asyncio.Task[None]] = set()

    async def write(
        self,
        requests: Sequence[tuple[RequestWrite, MutationRequest]],
        state: _StateRow | None,
        history: Sequence[HistoryEntry],
        audit: Sequence[AuditEntry],
        *,
        durable: bool,
        read_state: str | None = None,
    ) -> tuple[Any, ...] | None:
        """Check and write everything in one statement; typed errors when a check fails.

        Returns ``read_state``'s row ``(version, request_id, document)`` as read after the
        writes, or None (no such state, or none asked for).
        """
        db = self._db
        documents = _Documents()
        request_rows: list[list[Any]] = []
        decision_rows: list[list[Any]] = []
        for write, stored in requests:
            request_id = write.request.request_id
            documents.append(db.documents.request(stored)[0])
            state_id, status, reason, actor, created, updated, kind, original, due = (
                _request_columns(stored)
            )
            request_rows.append(
                [
                    request_id,
                    write.expected_revision,
                    state_id,
                    status,
                    reason,
                    actor,
                    _instant(created),
                    _instant(updated),
                    kind,
                    original,
                    len(documents),
                    None if due is None else _instant(due),
                ]
            )
            new = write.new_decisions
            for _, sequence, category, timestamp, text in db.decision_rows(request_id, new):
                documents.append(text)
                decision_rows.append(
                    [request_id, sequence, category, _instant(timestamp), len(documents)]
                )
        state_row: list[Any] | None = None
        if state is not None:
            documents.append(state.document)
            state_row = [
                state.state_id,
                state.expected_version,
                state.version,
                state.request_id,
                len(documents),
            ]
        records: list[list[list[Any]]] = [[], []]
        for rows, entries in ((records[0], history), (records[1], audit)):
            for entry in entries:
                documents.append(db.record_document(entry))
                rows.append([entry.state_id, _instant(entry.executed_at), len(documents)])
        ids = [row[0] for row in request_rows]
        meta = _json_text(
            {
                "durable": durable,
                "o": sorted(range(len(ids)), key=ids.__getitem__),
                "n": any(_ready(row[3], row[4]) for row in request_rows),
                "r": request_rows,
                "d": decision_rows,
                "s": state_row,
                "h": records[0],
                "a": records[1],
            }
        )
        pending = _Write(meta, documents, read_state, durable, requests, state)
        flights = self._flights
        if not flights:
            return await self._alone(pending)
        pending.future = asyncio.get_running_loop().create_future()
        if self._flying < flights:
            self._flying += 1
            try:
                # One turn of the loop lets the writers that are ready now (a worker's
                # batch of claims, say) join this flight; a write still alone goes alone.
                await asyncio.sleep(0)
                if not self._waiting:
                    return await self._alone(pending)
                self._waiting.appendleft(pending)
            finally:
                self._landed()  # the flight ended, or goes on as a group, this write first
        else:
            self._waiting.append(pending)
        try:
            return await pending.future
        finally:
            if not pending.sent:  # cancelled while waiting: never sent, nothing written
                self._waiting.remove(pending)

    async def _alone(self, write: _Write) -> tuple[Any, ...] | None:
        """Send ``write`` as its own ``governed_commit`` statement."""
        async with self._db.connection() as conn:
            try:
                row: tuple[Any, ...] | None = await _fetchone(
                    conn, self._sql, (write.meta, write.documents, write.read_state)
                )
                return row
            except psycopg.errors.UniqueViolation as error:
                raise _unique_violation(
                    error.diag.constraint_name or "", str(error), write.requests, write.state
                ) from None
            except psycopg.DatabaseError as error:
                diag = error.diag
                mapped = _check_failed(
                    error.sqlstate, diag.message_detail, diag.message_hint, write.state
                )
                if mapped is None:
                    raise
                raise mapped from None

    def _landed(self) -> None:
        """A flight ended: send what waits, together, while flights are free."""
        self._flying -= 1
        waiting = self._waiting
        while waiting and self._flying < self._flights:
            batch = [waiting.popleft() for _ in range(min(len(waiting), _BATCH_LIMIT))]
            for write in batch:
                write.sent = True
            self._flying += 1
            task = asyncio.get_running_loop().create_task(self._fly(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _fly(self, batch: list[_Write]) -> None:
        """Send ``batch`` and hand each waiting writer its own outcome."""
        try:
            outcomes = await self._together(batch)
        except Exception as error:
            outcomes = [error, *(_copy_of(error) for _ in batch[1:])]
        except BaseException:
            for write in batch:
                assert write.future is not None
                write.future.cancel()
            raise
        finally:
            self._landed()
        for write, outcome in zip(batch, outcomes, strict=True):
            _settle(write, outcome)

    async def aclose(self) -> None:
        """Wait for the batches in flight (their writers are waiting for them)."""
        while self._batches:
            await asyncio.wait(tuple(self._batches))

    async def _together(self, batch: list[_Write]) -> list[tuple[Any, ...] | BaseException | None]:
        """Each write's row or error, from one ``governed_commit_batch`` statement.

        A server error that is not one write's failed check (a refused value, a deadlock,
        a statement_timeout) rolls the statement back whole, and a write whose text the
        connection cannot encode stops the statement before it is sent; the writes are then
        sent one by one, so each gets exactly the outcome it would have had alone. Only a
        lost connection fails them all (the statement may have committed).
        """
        if len(batch) == 1:
            return [await _captured(self._alone(batch[0]))]
        documents = _Documents()
        firsts: list[int] = []
        for write in batch:
            firsts.append(len(documents) + 1)
            documents.extend(write.documents)
        firsts.append(len(documents) + 1)
        lock_requests = sorted({w.request.request_id for write in batch for w, _ in write.requests})
        lock_states = sorted({write.state.state_id for write in batch if write.state})
        create_requests = sorted(
            {
                w.request.request_id
                for write in batch
                for w, _ in write.requests
                if w.expected_revision is None
            }
        )
        create_states = sorted(
            {
                write.state.state_id
                for write in batch
                if write.state is not None and write.state.expected_version is None
            }
        )
        params = (
            [write.meta for write in batch],
            documents,
            firsts,
            [write.read_state for write in batch],
            lock_requests,
            lock_states,
            create_requests,
            create_states,
            any(write.durable for write in batch),
        )
        rows: list[Any] | None = None
        async with self._db.connection() as conn:
            try:
                rows = await _fetchall(conn, self._batch_sql, params)
            except UnicodeEncodeError:
                pass  # one write's text (a lone surrogate...): nothing was sent
            except psycopg.DatabaseError as error:
                if _lost(error):
                    raise
        if rows is None:
            return [await _captured(self._alone(write)) for write in batch]
        outcomes: list[tuple[Any, ...] | BaseException | None] = []
        for write, (code, detail, hint, constraint, *found) in zip(batch, rows, strict=True):
            if code is None:
                outcomes.append(None if found[0] is None else tuple(found))
            elif code == _UNIQUE_VIOLATION:
                outcomes.append(
                    _unique_violation(constraint or "", detail or "", write.requests, write.state)
                )
            else:
                mapped = _check_failed(code, detail, hint, write.state)
                assert mapped is not None  # the function returns only these codes
                outcomes.append(mapped)
        return outcomes


# The most writes one batch statement carries; more wait for the next free flight.
_BATCH_LIMIT = 32
_UNIQUE_VIOLATION = "23505"


async def _captured(call: Awaitable[tuple[Any, ...] | None]) -> tuple[Any, ...] | Exception | None:
    """``call``'s row, or the error it raised (a batch hands each writer its own)."""
    try:
        return await call
    except Exception as error:
        return error


def _copy_of(error: Exception) -> Exception:
    """Another instance of the store error ``error`` for another writer of its group: one
    object raised in several tasks would mix their tracebacks and contexts. Other errors
    are shared as they are."""
    if not isinstance(error, MutatorError):
        return error
    kind = type(error)
    copied = kind.__new__(kind, *error.args)
    copied.__dict__.update(error.__dict__)
    copied.__cause__ = error.__cause__
    copied.__context__ = error.__context__
    copied.__suppress_context__ = error.__suppress_context__
    return copied.with_traceback(error.__traceback__)


def _settle(write: _Write, outcome: tuple[Any, ...] | BaseException | None) -> None:
    """Wake ``write``'s writer with its outcome (unless it was cancelled meanwhile)."""
    future = write.future
    assert future is not None
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _request_columns(request: MutationRequest) -> tuple[Any, ...]:
    """The indexed columns of ``request``'s row: state id, status, pending reason, actor,
    created and updated times, mutation type, the request a compensation undoes and the
    expiry deadline."""
    reason = request.pending_reason
    compensation = request.execution.compensation
    return (
        request.state_id,
        request.status.value,
        reason.value if reason is not None else None,
        request.context.actor_id,
        request.created_at,
        request.updated_at,
        request.mutation_type,
        compensation.original_request_id if compensation is not None else None,
        expiry_deadline(request),
    )


def _ready(status: str, reason: str | None) -> bool:
    """Whether a request row written with ``status`` and ``reason`` is ready (READY_STATUSES)."""
    return status == "approved" or (status == "pending" and reason == "revalidation")


def _instant(value: datetime) -> Any:
    """A timestamp of the meta JSON: a plain UTC datetime as is (orjson writes exactly its
    ``isoformat()`` text, without the cost of formatting it in Python), else its text."""
    return value if value.__class__ is datetime and value.tzinfo is UTC else value.isoformat()


# Keeps every character as is (psycopg encodes the text like any other parameter) and
# writes no spaces; datetimes left by _instant are written as their isoformat() text.
_stdlib_json_text = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=datetime.isoformat
).encode


def _json_text(data: Any) -> str:
    """The meta JSON text of ``governed_commit`` (orjson when installed, else the stdlib).

    orjson refuses what the stdlib writes (lone surrogates, integers beyond 64 bits): those
    go to the stdlib encoder, so the two fail or succeed alike.
    """
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps(data).decode("utf-8")
        except TypeError:
            pass
    return _stdlib_json_text(data)


_CODES = {code: name for name, code in COMMIT_CODES.items()}


def _check_failed(
    sqlstate: str | None, detail: str | None, hint: str | None, state: _StateRow | None
) -> Exception | None:
    """The typed error for a failed ``governed_commit`` check (None: not a check)."""
    name = _CODES.get(sqlstate or "")
    if name is None:
        return None
    detail = detail or ""
    hint = hint or ""
    if name == "exists":
        return RequestAlreadyExistsError(detail)
    if name == "missing":
        return RequestNotFoundError(detail)
    if name == "revision":
        request_id, expected_revision, actual_revision = json.loads(detail)
        return RequestConcurrencyError(request_id, expected_revision, actual_revision)
    expected = state.expected_version if state is not None else None
    if name == "version":
        (actual,) = json.loads(hint)
        return _state_conflict(detail, expected, actual)
    return ConcurrencyError(
        f"request {hint!r} already produced a version of state {detail!r}",
        key=detail,
        expected=expected,
        actual=expected,
    )


def _unique_violation(
    constraint: str,
    error: str,
    requests: Sequence[tuple[RequestWrite, MutationRequest]],
    state: _StateRow | None,
) -> Exception:
    """A row created concurrently between the checks and the insert (``constraint``)."""
    if constraint.startswith("requests"):
        created = [w.request.request_id for w, _ in requests if w.expected_revision is None]
        return RequestAlreadyExistsError(created[0] if created else "?")
    if state is not None:
        return ConcurrencyError(
            f"state {state.state_id!r} was written concurrently: {error}",
            key=state.state_id,
            expected=state.expected_version,
            actual=None,
        )
    return ConcurrencyError(f"PostgreSQL refused a duplicate row: {error}")


class PostgresCommitter:
    """Writes one governance operation in one transaction: checks first, then every write.

    Also a :class:`~mutator_governance.protocols.ReadingCommitter`: ``commit_reading``
    returns a state read after the writes by the same statement.

    The operation is one call of the schema's ``governed_commit`` function (one statement,
    one round trip). It writes the requests (in id order, so concurrent commits cannot
    deadlock; each update only at its expected revision) and then the state (only at its
    expected version, and only if the request produced no version of it yet). A mismatch
    raises RequestAlreadyExistsError, RequestConcurrencyError, RequestNotFoundError or
    :class:`mutator.ConcurrencyError` and the statement rolls back: nothing is written.
    A claim (``requests[0]`` becomes EXECUTING, no state write) does not wait for the WAL
    flush.
    """

    atomic = True

    def __init__(self, db: _Database, writer: _Writer) -> None:
        self._db = db
        self._writer = writer

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        """Apply every write in ``commit``; return the stored requests in order."""
        stored, _ = await self._commit(commit, None)
        return stored

    async def commit_reading(
        self, commit: GovernedCommit, state_id: str
    ) -> tuple[tuple[MutationRequest, ...], VersionedState[Any] | None]:
        """Apply ``commit`` and read ``state_id`` after its writes, in the same statement.

        Raises what :meth:`commit` raises (nothing written, nothing read); the state is
        None when ``state_id`` holds none.
        """
        return await self._commit(commit, state_id)

    async def _commit(
        self, commit: GovernedCommit, read_state: str | None
    ) -> tuple[tuple[MutationRequest, ...], VersionedState[Any] | None]:
        db = self._db
        stored = commit.stored()
        state = commit.state
        row: _StateRow | None = None
        if state is not None:
            if next_version(state.expected_version) != state.new_version:
                raise ValueError(
                    f"state write expects version {state.new_version!r} after "
                    f"{state.expected_version!r}: versions must be decimal counters "
                    "(next_version)"
                )
            document = db.dumps(db.registry.unstructure_value(state.state))
            row = _StateRow(
                state.state_id,
                state.expected_version,
                state.new_version,
                state.request_id,
                document,
            )
        durable = not (
            state is None
            and bool(commit.requests)
            and commit.requests[0].request.status is RequestStatus.EXECUTING
        )
        found = await self._writer.write(
            tuple(zip(commit.requests, stored, strict=True)),
            row,
            commit.history,
            commit.audit,
            durable=durable,
            read_state=read_state,
        )
        if found is None or read_state is None:
            return stored, None
        version, request_id, text = found
        _check_version(read_state, version, "states.version")
        return stored, VersionedState(db.state_from(read_state, text), version, request_id)


class PostgresStore:
    """A :class:`~mutator_governance.protocols.GovernanceStore` on PostgreSQL (asyncio only).

    Open it with :meth:`open` (or ``open_store("postgresql://...")`` /
    ``Governance.open(...)``), close it with :meth:`aclose`. Every sub-store shares one
    ``psycopg_pool.AsyncConnectionPool``; ``committer`` writes each governance operation
    in one transaction of one statement. The store only runs on asyncio (psycopg's async
    driver), not on trio.
    """

    def __init__(self, db: _Database) -> None:
        self._db = db
        writer = self._writer = _Writer(db, db.write_flights)
        self._requests = PostgresRequestStore(db)
        self._decisions = PostgresDecisionHistory(db)
        self._states = PostgresStateStore(db, writer)
        self._audit = PostgresAuditSink(db)
        self._history = PostgresHistoryStore(db)
        self._committer = PostgresCommitter(db, writer)
        self._server_time = "SELECT clock_timestamp()"

    @classmethod
    async def open(
        cls, url: str, *, registry: MutationRegistry, create: bool = True, **options: Any
    ) -> PostgresStore:
        """Connect to ``url``, create or migrate the schema, and open the connection pool.

        ``url`` is ``postgresql://user[:password]@host[:port]/database``; only what it names
        is used (no libpq defaults for host, user or database). ``options`` are the fields
        of :class:`PostgresOptions` (``schema``, ``min_size``, ``max_size``,
        ``connect_timeout``, ``statement_timeout``, ``connection_check_interval``,
        ``check_connections``, ``write_flights``, ``prepare_threshold``), also accepted as
        URL query parameters (named both ways, an option must have the same value in
        both); other query parameters must be libpq connection parameters.

        With ``create=False`` a schema holding no store (no ``schema_version`` table) is
        refused with :class:`StoreNotFoundError` before anything is written: what an
        operator's tool uses so that a mistyped schema is an error, not a new empty store.

        Raises ConfigurationError (a ValueError) for a malformed URL, an unknown or
        malformed option, an option named in the URL and as a keyword with different
        values, or when called outside asyncio — all before connecting — and for a
        ``statement_timeout`` the server cannot take (a pooler that refuses startup options);
        StoreUnavailableError (password removed) when the server cannot be reached;
        StoredDataError when the database was migrated by a newer release.
        """
        if not isinstance(registry, MutationRegistry):
            raise TypeError(f"registry must be a MutationRegistry, got {type(registry).__name__}")
        library = running_library()
        if library != "asyncio":
            raise ConfigurationError(
                "the PostgreSQL store runs on asyncio only (psycopg's async driver); "
                f"it cannot be opened under {library}"
            )
        keywords, opts = parse_url(url, options)
        check_create(create)
        schema = opts.schema
        safe_url = redact_url(url)
        password = keywords.get("password")
        timeout = opts.connect_timeout
        connect = {
            **keywords,
            "context": _ADAPTERS,
            "autocommit": True,
            "connect_timeout": max(1, round(timeout)),
            "prepare_threshold": opts.prepare_threshold,
        }
        settings: dict[str, int] = {}
        if opts.statement_timeout is not None:
            settings["statement_timeout"] = max(1, round(opts.statement_timeout * 1000))

        def unavailable(message: str, error: BaseException) -> NoReturn:
            # as _Database.unavailable: the pool is built once the server's settings are known
            detail = f"{message}: {error}"
            raise StoreUnavailableError(
                detail.replace(password, "***") if password else detail, url=safe_url
            ) from error

        try:
            conn = await psycopg.AsyncConnection.connect(
                **{**keywords, "connect_timeout": max(1, round(timeout))},
                autocommit=True,
                prepare_threshold=opts.prepare_threshold,
            )
        except psycopg.Error as error:
            unavailable("cannot connect to PostgreSQL", error)
        try:
            async with conn:
                if not create:
                    await _require_store(conn, schema, safe_url)
                await _migrate(conn, schema, safe_url)
                if opts.connection_check_interval is not None:
                    interval = max(1, round(opts.connection_check_interval * 1000))
                    if await _accepts_connection_check(conn, interval):
                        settings["client_connection_check_interval"] = interval
        except psycopg.Error as error:
            unavailable(f"cannot create or migrate the schema {schema!r}", error)
        if settings:
            startup = " ".join(
                [keywords.get("options", ""), *(f"-c {k}={v}" for k, v in settings.items())]
            ).strip()
            try:
                taken = await _startup_options_taken({**connect, "options": startup}, connect)
            except psycopg.Error as error:
                unavailable("cannot open the PostgreSQL connection pool", error)
            if taken:
                connect["options"] = startup
            elif "statement_timeout" in settings:
                raise ConfigurationError(
                    f"the server at {safe_url} refused the startup parameter 'options' "
                    "that sets statement_timeout on each connection (a connection pooler "
                    "such as PgBouncer does): set statement_timeout on the database role "
                    "instead (ALTER ROLE … SET statement_timeout = …) and leave the option "
                    "unset"
                )
            else:
                _log.warning(
                    "the server refused the startup parameter 'options' (a connection "
                    "pooler such as PgBouncer does); connection_check_interval is not set "
                    "on the store's connections (%s)",
                    safe_url,
                )
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            "",
            min_size=opts.min_size,
            max_size=opts.max_size,
            kwargs=connect,
            open=False,
            timeout=timeout,
            check=AsyncConnectionPool.check_connection if opts.check_connections else None,
            connection_class=_Connection,
            name=f"mutator:{schema}",
        )
        db = _Database(
            pool,
            registry=registry,
            schema=schema,
            url=safe_url,
            password=password,
            timeout=timeout,
            connect=connect,
        )
        db.write_flights = opts.write_flights
        db.keep_spare = not opts.check_connections
        try:
            await pool.open(wait=True, timeout=timeout)
        except BaseException as error:
            # Cancelled too: a pool left open keeps its tasks and connections for good.
            with anyio.CancelScope(shield=True):
                await pool.close()
            if isinstance(error, PoolTimeout | psycopg.OperationalError):
                db.unavailable("cannot open the PostgreSQL connection pool", error)
            raise
        return cls(db)

    async def server_time(self) -> datetime | None:
        """The server's clock (``clock_timestamp()``), for judging leases by one clock."""
        async with self._db.connection() as conn:
            row = await (await conn.execute(self._server_time)).fetchone()
        assert row is not None
        value: datetime = row[0]
        return value

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
        """Close the pool and the listening connection; the store is unusable afterwards
        (idempotent)."""
        await self._writer.aclose()
        await self._requests.aclose()
        await self._db.release_spare()
        await self._db.pool.close()
        await self._db.release_spare()  # one returned meanwhile: closed with the pool

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _startup_options_taken(with_options: dict[str, Any], without: dict[str, Any]) -> bool:
    """Whether the server accepts a connection whose startup ``options`` set the store's
    settings; False when it accepts one only without them.

    A connection pooler such as PgBouncer refuses the ``options`` startup parameter, and
    the pool would retry until its timeout and then report only that it timed out. When
    neither connection is accepted, the first one's error is raised.
    """
    try:
        conn = await psycopg.AsyncConnection.connect(**with_options)
    except psycopg.Error as refused:
        try:
            conn = await psycopg.AsyncConnection.connect(**without)
        except psycopg.Error:
            raise refused from None
        await conn.close()
        return False
    await conn.close()
    return True


async def _accepts_connection_check(conn: Connection, milliseconds: int) -> bool:
    """Whether the server takes ``client_connection_check_interval`` (PostgreSQL 14 and
    later, on platforms that can check a socket; a normal user may set it)."""
    try:
        await conn.execute(f"SET client_connection_check_interval = {milliseconds}")
    except (psycopg.errors.UndefinedObject, psycopg.errors.InvalidParameterValue):
        return False
    await conn.execute("RESET client_connection_check_interval")
    return True


async def _require_store(conn: Connection, schema: str, url: str) -> None:
    """Refuse ``schema`` unless it holds the store's ``schema_version`` table (read only)."""
    found = await (
        await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".schema_version',))
    ).fetchone()
    if found is None or not found[0]:
        raise StoreNotFoundError(
            f"no governance store in the PostgreSQL schema {schema!r} (no schema_version table)",
            where=schema,
            url=url,
        )


async def _not_a_store(conn: Connection, schema: str, url: str) -> StoredDataError | None:
    """The refusal of a schema some other application wrote, or None.

    A ``schema_version`` that is not the store's table (another kind of relation, or
    without an integer ``version`` and an ``applied_at``), or, with no version recorded,
    a relation or statistics object under a name the migrations would create: migrating
    would fail halfway or write into another application's tables.
    """
    row = await (
        await conn.execute(
            "SELECT c.relkind::text, array(SELECT a.attname::text || ' ' || "
            "format_type(a.atttypid, NULL) FROM pg_attribute a WHERE a.attrelid = c.oid "
            "AND a.attnum > 0 AND NOT a.attisdropped) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = 'schema_version'",
            (schema,),
        )
    ).fetchone()
    if row is not None and (
        row[0] != "r" or not {"version integer", "applied_at timestamp with time zone"} <= {*row[1]}
    ):
        return StoredDataError(
            f"the PostgreSQL schema {schema!r} holds a schema_version that is not the store's "
            f"table: is it another application's schema? ({url})",
            backend=BACKEND,
            key=f"{schema}.schema_version",
        )
    if row is not None:
        versions = await (
            await conn.execute(f'SELECT 1 FROM "{schema}".schema_version LIMIT 1')
        ).fetchone()
        if versions is not None:
            return None
    taken = await (
        await conn.execute(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %(schema)s "
            "AND c.relname = ANY(%(names)s) UNION SELECT x.stxname::text FROM "
            "pg_statistic_ext x JOIN pg_namespace n ON n.oid = x.stxnamespace "
            "WHERE n.nspname = %(schema)s AND x.stxname = ANY(%(names)s) ORDER BY 1",
            {"schema": schema, "names": list(STORE_RELATIONS)},
        )
    ).fetchall()
    if not taken:
        return None
    return StoredDataError(
        f"the PostgreSQL schema {schema!r} holds no governance store but has "
        f"{', '.join(name for (name,) in taken)}, named as the store's own tables and "
        f"indexes: is it another application's schema? ({url})",
        backend=BACKEND,
        key=schema,
    )


async def _migrate(conn: Connection, schema: str, url: str) -> None:
    """Create or upgrade ``schema`` to SCHEMA_VERSION under an advisory transaction lock.

    A schema holding another application's relations under the store's names is refused
    with StoredDataError before anything is created (:func:`_not_a_store`).
    """
    s = f'"{schema}"'
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_advisory_key(schema),))
        refusal = await _not_a_store(conn, schema, url)
        if refusal is not None:
            raise refusal
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
            for statement in MIGRATIONS[version - 1]:
                await conn.execute(statement.format(s=s, channel=ready_channel(schema)))
            await conn.execute(f"INSERT INTO {s}.schema_version (version) VALUES (%s)", (version,))
