"""The SQLite schema of :class:`~mutator_governance.stores._sqlite.SQLiteStore` and its migrations.

Times are stored as integer microseconds since the Unix epoch (UTC), so they sort and
compare by instant whatever offset they were written with; documents are the registry's
compact JSON. ``schema_version`` holds one row per applied migration; the highest is the
database's version.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta

from .._errors import StoredDataError

__all__ = [
    "DUE_ROWS",
    "MIGRATIONS",
    "PENDING_ROWS",
    "READY",
    "REASON_ROWS",
    "SCHEMA_VERSION",
    "STALE_DEADLINE",
    "TERMINAL_ROWS",
    "migrate",
]

_V1 = (
    """
    CREATE TABLE requests (
        request_id     TEXT    NOT NULL PRIMARY KEY,
        state_id       TEXT    NOT NULL,
        status         TEXT    NOT NULL,
        pending_reason TEXT,
        actor_id       TEXT,
        created_at     INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL,
        revision       INTEGER NOT NULL,
        document       TEXT    NOT NULL
    )
    """,
    "CREATE INDEX requests_by_created ON requests (created_at, request_id)",
    "CREATE INDEX requests_by_status ON requests (status, created_at, request_id)",
    "CREATE INDEX requests_by_pending ON requests "
    "(pending_reason, status, state_id, created_at, request_id)",
    "CREATE INDEX requests_by_state ON requests (state_id, created_at, request_id)",
    "CREATE INDEX requests_by_actor ON requests (actor_id, created_at, request_id)",
    "CREATE INDEX requests_by_updated ON requests (updated_at)",
    """
    CREATE TABLE decisions (
        id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
        request_id TEXT    NOT NULL,
        category   TEXT    NOT NULL,
        timestamp  INTEGER NOT NULL,
        document   TEXT    NOT NULL
    )
    """,
    "CREATE INDEX decisions_by_request ON decisions (request_id, id)",
    "CREATE INDEX decisions_by_time ON decisions (timestamp, id)",
    "CREATE INDEX decisions_by_category ON decisions (category, timestamp, id)",
    """
    CREATE TABLE states (
        state_id   TEXT NOT NULL PRIMARY KEY,
        version    TEXT NOT NULL,
        request_id TEXT,
        document   TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE state_versions (
        state_id   TEXT NOT NULL,
        request_id TEXT NOT NULL,
        version    TEXT NOT NULL,
        PRIMARY KEY (state_id, request_id)
    )
    """,
    """
    CREATE TABLE audit (
        id           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
        execution_id TEXT    NOT NULL,
        state_id     TEXT,
        executed_at  INTEGER NOT NULL,
        document     TEXT    NOT NULL
    )
    """,
    "CREATE INDEX audit_by_state ON audit (state_id, id)",
    "CREATE INDEX audit_by_time ON audit (executed_at, id)",
    """
    CREATE TABLE history (
        id           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
        execution_id TEXT    NOT NULL,
        state_id     TEXT    NOT NULL,
        executed_at  INTEGER NOT NULL,
        document     TEXT    NOT NULL
    )
    """,
    "CREATE INDEX history_by_state ON history (state_id, id)",
)

_V2 = (
    # Decisions are numbered within their request and logged once per number; rows of a
    # version 1 log take their number from their position in the request's log.
    """
    CREATE TABLE decisions_v2 (
        id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
        request_id TEXT    NOT NULL,
        sequence   INTEGER NOT NULL CHECK (sequence >= 1),
        category   TEXT    NOT NULL,
        timestamp  INTEGER NOT NULL,
        document   TEXT    NOT NULL,
        UNIQUE (request_id, sequence)
    )
    """,
    """
    INSERT INTO decisions_v2 (id, request_id, sequence, category, timestamp, document)
    SELECT id, request_id, ROW_NUMBER() OVER (PARTITION BY request_id ORDER BY id),
           category, timestamp, document
    FROM decisions
    """,
    "DROP TABLE decisions",
    "ALTER TABLE decisions_v2 RENAME TO decisions",
    "CREATE INDEX decisions_by_time ON decisions (timestamp, id)",
    "CREATE INDEX decisions_by_category ON decisions (category, timestamp, id)",
)


def _from_document(path: str) -> str:
    """The text at ``path`` in the stored document, NULL when it is not JSON or not text.

    CASE evaluates lazily, so ``json_type`` never sees a document that is not JSON: a row
    that cannot be parsed gets NULL and never fails the upgrade.
    """
    return (
        f"CASE WHEN json_valid(document) THEN CASE WHEN json_type(document, '{path}') = 'text' "
        f"THEN json_extract(document, '{path}') END END"
    )


_PENDING = "pending"
"""``RequestStatus.PENDING.value``, the predicate of the ``requests_by_pending`` index."""

READY = "status = 'approved' OR (status = 'pending' AND pending_reason = 'revalidation')"
"""The rows a worker may reserve (the predicate of the ``requests_ready`` partial index)."""

_V3 = (
    # The registered mutation type (filtered in SQL), the original request a compensation
    # links (retention keeps it while the compensation lives), and a worker's reservation.
    "ALTER TABLE requests ADD COLUMN mutation_type TEXT",
    "ALTER TABLE requests ADD COLUMN compensates TEXT",
    "ALTER TABLE requests ADD COLUMN reserved_by TEXT",
    "ALTER TABLE requests ADD COLUMN reserved_until INTEGER",
    f"UPDATE requests SET mutation_type = {_from_document('$.mutation_type')}, "
    f"compensates = {_from_document('$.execution.compensation.original_request_id')}",
    "CREATE INDEX requests_by_mutation_type ON requests (mutation_type, created_at, request_id)",
    "CREATE INDEX requests_by_compensates ON requests (compensates, status) "
    "WHERE compensates IS NOT NULL",
    # Only ready rows are indexed, so a reservation never walks terminal or pending rows.
    "CREATE INDEX requests_ready ON requests (created_at, request_id, status, reserved_until) "
    f"WHERE {READY}",
    "DROP INDEX requests_by_updated",
    "CREATE INDEX requests_by_updated ON requests (updated_at, request_id)",
    """
    CREATE TABLE quarantine (
        request_id  TEXT    NOT NULL PRIMARY KEY,
        field       TEXT,
        error       TEXT    NOT NULL,
        detected_at INTEGER NOT NULL
    )
    """,
)

_V4 = (
    # Only PENDING rows are indexed by pending reason (what ``pending()`` walks), so an
    # execution (APPROVED -> EXECUTING -> EXECUTED) never moves an entry of this index
    # and an approval only removes one: fewer pages written per commit.
    "DROP INDEX requests_by_pending",
    "CREATE INDEX requests_by_pending ON requests "
    f"(pending_reason, state_id, created_at, request_id) WHERE status = '{_PENDING}'",
)

_TERMINAL_IN = "status IN ('rejected', 'canceled', 'expired', 'superseded', 'executed', 'failed')"
"""The terminal statuses as version 5 indexed them (a list SQLite builds a table for)."""


def _without_autoincrement(
    table: str, columns: str, copied: str, indexes: tuple[str, ...]
) -> tuple[str, ...]:
    """Rebuild ``table`` with a plain ``INTEGER PRIMARY KEY`` (rows keep their ids)."""
    return (
        f"CREATE TABLE {table}_v5 ({columns})",
        f"INSERT INTO {table}_v5 ({copied}) SELECT {copied} FROM {table}",
        f"DROP TABLE {table}",
        f"ALTER TABLE {table}_v5 RENAME TO {table}",
        *indexes,
    )


_V5 = (
    # Only terminal rows are indexed by update time (what a purge walks), so submitting,
    # approving and claiming never move an entry of it and a final commit adds one.
    "DROP INDEX requests_by_updated",
    f"CREATE INDEX requests_by_updated ON requests (updated_at, request_id) WHERE {_TERMINAL_IN}",
    # No AUTOINCREMENT: a new row still takes an id above every stored one (the order the
    # reads rely on), and a commit no longer writes the ``sqlite_sequence`` page.
    *_without_autoincrement(
        "decisions",
        "id INTEGER NOT NULL PRIMARY KEY, request_id TEXT NOT NULL, "
        "sequence INTEGER NOT NULL CHECK (sequence >= 1), category TEXT NOT NULL, "
        "timestamp INTEGER NOT NULL, document TEXT NOT NULL, UNIQUE (request_id, sequence)",
        "id, request_id, sequence, category, timestamp, document",
        (
            "CREATE INDEX decisions_by_time ON decisions (timestamp, id)",
            "CREATE INDEX decisions_by_category ON decisions (category, timestamp, id)",
        ),
    ),
    *_without_autoincrement(
        "audit",
        "id INTEGER NOT NULL PRIMARY KEY, execution_id TEXT NOT NULL, state_id TEXT, "
        "executed_at INTEGER NOT NULL, document TEXT NOT NULL",
        "id, execution_id, state_id, executed_at, document",
        (
            "CREATE INDEX audit_by_state ON audit (state_id, id)",
            "CREATE INDEX audit_by_time ON audit (executed_at, id)",
        ),
    ),
    *_without_autoincrement(
        "history",
        "id INTEGER NOT NULL PRIMARY KEY, execution_id TEXT NOT NULL, state_id TEXT NOT NULL, "
        "executed_at INTEGER NOT NULL, document TEXT NOT NULL",
        "id, execution_id, state_id, executed_at, document",
        ("CREATE INDEX history_by_state ON history (state_id, id)",),
    ),
    # Which request produced which version is looked up by its key only: one b-tree
    # (WITHOUT ROWID) instead of a table and its key's index, one page less per write.
    """
    CREATE TABLE state_versions_v5 (
        state_id   TEXT NOT NULL,
        request_id TEXT NOT NULL,
        version    TEXT NOT NULL,
        PRIMARY KEY (state_id, request_id)
    ) WITHOUT ROWID
    """,
    "INSERT INTO state_versions_v5 (state_id, request_id, version) "
    "SELECT state_id, request_id, version FROM state_versions",
    "DROP TABLE state_versions",
    "ALTER TABLE state_versions_v5 RENAME TO state_versions",
)

DUE_ROWS = f"status = '{_PENDING}' AND due_at IS NOT NULL"
"""The rows an expiry sweep may have to expire (the ``requests_due`` partial index)."""

STALE_DEADLINE = (datetime.min.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
    microseconds=1
)
"""The earliest instant a deadline can name (0001-01-01, in microseconds since the epoch).

Version 6 gives it to every PENDING row it finds, so the first expiry sweep reads each
once and stores its real deadline (or NULL) instead: the deadline needs the decoded
request, which SQL cannot compute from the document.
"""

_V6 = (
    # A request's expiry deadline (``expiry_deadline``: NULL unless it is PENDING with
    # something that expires), so a sweep walks only the pending rows that are due.
    "ALTER TABLE requests ADD COLUMN due_at INTEGER",
    f"UPDATE requests SET due_at = {STALE_DEADLINE} WHERE status = '{_PENDING}'",
    f"CREATE INDEX requests_due ON requests (due_at, request_id) WHERE {DUE_ROWS}",
)

TERMINAL_ROWS = (
    "(status = 'rejected' OR status = 'canceled' OR status = 'expired' "
    "OR status = 'superseded' OR status = 'executed' OR status = 'failed')"
)
"""The terminal statuses, as the ``requests_by_updated`` partial index states them.

Comparisons, not ``IN (...)``: SQLite checks a partial index's predicate on every row a
statement writes (twice per update), and builds an ephemeral table for an ``IN`` list
each time, which cost a request's insert or update more than the rest of its indexes.
"""

_V7 = (
    # The same index, its predicate stated without a list (see TERMINAL_ROWS).
    "DROP INDEX requests_by_updated",
    f"CREATE INDEX requests_by_updated ON requests (updated_at, request_id) WHERE {TERMINAL_ROWS}",
)

REASON_ROWS = "pending_reason IS NOT NULL"
"""The rows indexed by pending reason (the predicate of ``requests_by_reason``)."""

_V8 = (
    # The pending-reason index keyed on the reason's presence instead of the PENDING
    # status: the same rows (only a PENDING request has a reason), so a write maintains as
    # many entries as before, but any ``pending_reason = ?`` implies the predicate, and
    # its columns follow the listing order, so a listing by reason alone (no status) walks
    # it in ``created_at`` order instead of every request from the oldest. The state id
    # comes last: ``pending(reason, state_id=...)`` checks it in the index, reading no
    # other row.
    "CREATE INDEX requests_by_reason ON requests "
    f"(pending_reason, created_at, request_id, state_id) WHERE {REASON_ROWS}",
    "DROP INDEX requests_by_pending",
)

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: _V1,
    2: _V2,
    3: _V3,
    4: _V4,
    5: _V5,
    6: _V6,
    7: _V7,
    8: _V8,
}
"""Schema version -> the statements that migrate the version before it to it."""

PENDING_ROWS = f"status = '{_PENDING}'"
"""The rows :meth:`~mutator_governance.stores._sqlite.SQLiteRequestStore.pending` reads."""

SCHEMA_VERSION = max(MIGRATIONS)
"""The schema version this library writes (and the newest it can read)."""


_CREATED = re.compile(r"CREATE (?:TABLE|INDEX) (\w+)")

STORE_NAMES = frozenset(
    name
    for statements in MIGRATIONS.values()
    for statement in statements
    for name in _CREATED.findall(statement)
)
"""Every table and index name the migrations create."""


def _not_a_store(connection: sqlite3.Connection, path: str) -> StoredDataError | None:
    """The refusal of a database some other application wrote, or None.

    A ``schema_version`` that is not this library's table, or, with no version recorded,
    a table or index under a name the migrations would create: migrating would fail
    halfway or write into another application's tables.
    """
    rows = connection.execute(
        "SELECT type, name FROM sqlite_master WHERE name = 'schema_version'"
    ).fetchall()
    columns = {row[1] for row in connection.execute("PRAGMA table_info(schema_version)")}
    if rows and (rows[0][0] != "table" or not {"version", "applied_at"} <= columns):
        return StoredDataError(
            f"the database holds a {rows[0][0]} named schema_version that is not this "
            "library's: is it another application's database?",
            backend="sqlite",
            key=path,
            field="schema_version",
        )
    if rows and connection.execute("SELECT 1 FROM schema_version LIMIT 1").fetchone():
        return None
    taken = sorted(
        row[0]
        for row in connection.execute("SELECT name FROM sqlite_master")
        if row[0] in STORE_NAMES
    )
    if not taken:
        return None
    return StoredDataError(
        f"the database holds no governance store but has {', '.join(taken)}, named as the "
        "store's own tables and indexes: is it another application's database?",
        backend="sqlite",
        key=path,
    )


def migrate(connection: sqlite3.Connection, path: str) -> int:
    """Bring the database up to :data:`SCHEMA_VERSION` in one immediate transaction.

    Returns the version. A database written by a newer schema raises StoredDataError
    naming both versions and changes nothing, as does one holding another application's
    tables under the store's names (:func:`_not_a_store`). ``connection`` must be in
    autocommit mode.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        refusal = _not_a_store(connection, path)
        if refusal is not None:
            raise refusal
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER NOT NULL PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        row = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()
        found = row[0] if row is not None and row[0] is not None else 0
        if not isinstance(found, int):
            raise StoredDataError(
                f"schema_version holds {found!r}, not an integer version",
                backend="sqlite",
                key=path,
                field="schema_version.version",
            )
        if found > SCHEMA_VERSION:
            raise StoredDataError(
                f"the database has schema version {found}, newer than version "
                f"{SCHEMA_VERSION} that this library supports; upgrade mutator to open it",
                backend="sqlite",
                key=path,
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (version, datetime.now(UTC).isoformat()),
            )
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
