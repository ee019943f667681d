"""The PostgreSQL schema: migrations and the one-round-trip commit function.

Each entry of :data:`MIGRATIONS` brings a schema from version ``index`` to ``index + 1``;
``{s}`` is the quoted schema name. Version 2 numbers decisions within their request
(``(request_id, sequence)`` unique, existing rows numbered by their order per request) and
adds ``governed_commit``: one server-side function that checks and writes a whole
governance operation, so every operation is one statement — one round trip, one
transaction — whatever it writes.

Version 3 serves competing workers and retention: ``reserved_by`` / ``reserved_until``
(a request's reservation, cleared by any write that changes its status), a partial index
on the ready rows (``requests_ready``), ``mutation_type`` and ``compensates`` (the
original a compensation request undoes) read from the document, the ``quarantine`` table
of unreadable rows, and a ``governed_commit`` that notifies the schema's channel
(:func:`ready_channel`) when it writes a ready request. ``{s}`` and ``{channel}`` are
substituted when migrating.

Version 4 cuts the client's cost of a commit: ``governed_commit(meta text, documents text[],
read_state text)`` takes the scalar columns of every row as one small JSON text (parsed
once as ``jsonb`` on the server) and the documents as one binary text array, instead of
26 typed arrays that psycopg dumps element by element; and it returns ``read_state``'s row
as read after its writes, so a claim reads the state it will change in the same round
trip (:class:`~mutator_governance.protocols.ReadingCommitter`).

Version 5 cuts the server's cost of the worker's path. ``reserve_ready`` reserves a batch
by walking the ``requests_ready`` index in order (its planner settings forbid the bitmap
plan a fresh or unanalysed table gets, which reads and sorts every ready row and every dead
index entry of a backlog on each reservation). ``governed_commit`` takes the lock order and
whether to notify from ``meta`` (no query to sort the rows or find a ready one), and request
documents are compressed with lz4 where the server supports it.

Version 6 cuts the server's cost of every write (measured with callgrind and the server
backends' CPU time: most of a commit is heap and index writes, not the function's own
logic). The text key columns compare by code point (``COLLATE "C"``: no locale-aware
comparison in every index descent; equality is unchanged). A decision is keyed by its
primary key ``(request_id, sequence)`` alone (the surrogate ``id`` keeps its sequence
and still orders ties, but no longer has an index of its own), a history entry by
``(state_id, id)`` (the index every history query already used): each write maintains
one index fewer. ``governed_commit`` inserts a new request with ``ON CONFLICT DO
NOTHING`` instead of locking-then-inserting (one statement fewer; a concurrent creator
of the same id now also yields ``MU001``).

Version 7 indexes each pending request's expiry deadline (``due_at``, partial index
``requests_due``), so an expiry sweep reads only the requests it expires.

Version 8 adds ``governed_commit_batch``: several operations in one statement and one
transaction, each checked and written as its own ``governed_commit`` (a failed check rolls
back only that operation), so writers that run at once share one round trip and one WAL
flush. It first locks the batch's requests, then its states, each in code point order:
the order every ``governed_commit`` takes, so batches never deadlock with each other or
with single operations. The ids of rows it may create (not there yet, so not lockable)
are locked as transaction advisory locks, in one order too.

Version 9 indexes the pending reason for every row that has one (``requests_reason``,
partial on ``pending_reason IS NOT NULL``) instead of the rows whose status is PENDING
(``requests_pending``, dropped): the same rows (only a PENDING request has a reason), so
a write maintains as many index entries as before, but a listing filtered by reason
alone, without a status, now has an index in ``created_at`` order (the old predicate
could not be proven from ``pending_reason = ...``, so the planner walked every request
from the oldest). It also declares that the status and the reason depend on each other
(extended statistics ``requests_status_reason``, built by ``ANALYZE``; nothing is written
per operation): the planner multiplied their selectivities, so it thought a few dozen
requests were pending for approval out of thousands and sorted them all for every page
of the inbox instead of walking ``requests_reason`` in order.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "COMMIT_CODES",
    "MIGRATIONS",
    "READY_STATUSES",
    "SCHEMA_VERSION",
    "STORE_RELATIONS",
    "ready_channel",
]

SCHEMA_VERSION = 9
"""The schema version this release writes and reads."""

COMMIT_CODES = {
    "exists": "MU001",
    "missing": "MU002",
    "revision": "MU003",
    "version": "MU004",
    "produced": "MU005",
}
"""SQLSTATEs ``governed_commit`` raises when a check fails (nothing is written)."""

_V1: tuple[str, ...] = (
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
)

# Checks first (every request row locked in code point order, so concurrent commits cannot
# deadlock; then the state row), writes after: a failed check raises before anything is
# written, and the statement's implicit transaction rolls back whatever a later failure
# interrupts. ``durable = false`` (a claim) commits without waiting for the WAL flush.
_COMMIT_FUNCTION = """CREATE FUNCTION {s}.governed_commit(
    durable boolean,
    r_ids text[], r_expected bigint[], r_state_ids text[], r_statuses text[],
    r_reasons text[], r_actors text[], r_created timestamptz[], r_updated timestamptz[],
    r_documents text[],
    d_request_ids text[], d_sequences bigint[], d_categories text[],
    d_timestamps timestamptz[], d_documents text[],
    s_id text, s_expected text, s_version text, s_request_id text, s_document text,
    h_state_ids text[], h_executed timestamptz[], h_documents text[],
    a_state_ids text[], a_executed timestamptz[], a_documents text[]
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    n integer := coalesce(array_length(r_ids, 1), 0);
    found_revision bigint;
    i integer;
    actual text;
    state_exists boolean := false;
BEGIN
    IF NOT durable THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    -- One primary-key lookup per request (never a scan), in code point order.
    FOR i IN SELECT o FROM unnest(r_ids) WITH ORDINALITY AS x(id, o) ORDER BY id COLLATE "C"
    LOOP
        SELECT revision INTO found_revision FROM {s}.requests WHERE request_id = r_ids[i]
            FOR UPDATE;
        IF r_expected[i] IS NULL THEN
            IF FOUND THEN
                RAISE EXCEPTION 'request exists' USING ERRCODE = 'MU001', DETAIL = r_ids[i];
            END IF;
        ELSIF NOT FOUND THEN
            RAISE EXCEPTION 'request missing' USING ERRCODE = 'MU002', DETAIL = r_ids[i];
        ELSIF found_revision <> r_expected[i] THEN
            RAISE EXCEPTION 'revision moved' USING ERRCODE = 'MU003',
                DETAIL = json_build_array(r_ids[i], r_expected[i], found_revision)::text;
        END IF;
    END LOOP;
    IF s_id IS NOT NULL THEN
        SELECT version INTO actual FROM {s}.states WHERE state_id = s_id FOR UPDATE;
        state_exists := FOUND;
        IF actual IS DISTINCT FROM s_expected THEN
            RAISE EXCEPTION 'state version moved' USING ERRCODE = 'MU004', DETAIL = s_id,
                HINT = json_build_array(actual)::text;
        END IF;
        IF s_request_id IS NOT NULL AND EXISTS (
            SELECT 1 FROM {s}.state_versions WHERE state_id = s_id AND request_id = s_request_id
        ) THEN
            RAISE EXCEPTION 'request already produced a version' USING ERRCODE = 'MU005',
                DETAIL = s_id, HINT = s_request_id;
        END IF;
        IF state_exists THEN
            UPDATE {s}.states SET version = s_version, request_id = s_request_id,
                document = s_document WHERE state_id = s_id;
        ELSE
            INSERT INTO {s}.states (state_id, version, request_id, document)
                VALUES (s_id, s_version, s_request_id, s_document);
        END IF;
        IF s_request_id IS NOT NULL THEN
            INSERT INTO {s}.state_versions (state_id, request_id, version)
                VALUES (s_id, s_request_id, s_version);
        END IF;
    END IF;
    FOR i IN 1 .. n LOOP
        IF r_expected[i] IS NULL THEN
            INSERT INTO {s}.requests (request_id, state_id, status, pending_reason, actor_id,
                created_at, updated_at, revision, document)
            VALUES (r_ids[i], r_state_ids[i], r_statuses[i], r_reasons[i], r_actors[i],
                r_created[i], r_updated[i], 0, r_documents[i]);
        ELSE
            UPDATE {s}.requests SET state_id = r_state_ids[i], status = r_statuses[i],
                pending_reason = r_reasons[i], actor_id = r_actors[i],
                created_at = r_created[i], updated_at = r_updated[i],
                document = r_documents[i], revision = revision + 1
            WHERE request_id = r_ids[i];
        END IF;
    END LOOP;
    IF coalesce(array_length(d_request_ids, 1), 0) > 0 THEN
        INSERT INTO {s}.decisions (request_id, sequence, category, timestamp, document)
        SELECT r, q, c, t, d
        FROM unnest(d_request_ids, d_sequences, d_categories, d_timestamps, d_documents)
            WITH ORDINALITY AS x(r, q, c, t, d, o)
        ORDER BY o
        ON CONFLICT (request_id, sequence) DO NOTHING;
    END IF;
    IF coalesce(array_length(h_state_ids, 1), 0) > 0 THEN
        INSERT INTO {s}.history (state_id, executed_at, document)
        SELECT st, e, d FROM unnest(h_state_ids, h_executed, h_documents)
            WITH ORDINALITY AS x(st, e, d, o)
        ORDER BY o;
    END IF;
    IF coalesce(array_length(a_executed, 1), 0) > 0 THEN
        INSERT INTO {s}.audit (state_id, executed_at, document)
        SELECT st, e, d FROM unnest(a_state_ids, a_executed, a_documents)
            WITH ORDINALITY AS x(st, e, d, o)
        ORDER BY o;
    END IF;
END
$fn$"""

_V2: tuple[str, ...] = (
    "ALTER TABLE {s}.decisions ADD COLUMN sequence bigint",
    """UPDATE {s}.decisions AS d SET sequence = n.sequence
        FROM (SELECT id, row_number() OVER (PARTITION BY request_id ORDER BY id) AS sequence
              FROM {s}.decisions) AS n
        WHERE d.id = n.id""",
    "ALTER TABLE {s}.decisions ALTER COLUMN sequence SET NOT NULL",
    "ALTER TABLE {s}.decisions ADD CONSTRAINT decisions_sequence_positive CHECK (sequence >= 1)",
    "DROP INDEX {s}.decisions_request",
    """ALTER TABLE {s}.decisions
        ADD CONSTRAINT decisions_request_sequence UNIQUE (request_id, sequence)""",
    _COMMIT_FUNCTION,
)

READY_STATUSES = "status = 'approved' OR (status = 'pending' AND pending_reason = 'revalidation')"
"""The SQL condition of a ready request (the predicate of the ``requests_ready`` index)."""


def ready_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which commits to ``schema`` announce ready requests.

    Channel names are identifiers of at most 63 bytes: a long schema name is hashed.
    """
    channel = f"mutator_ready_{schema}"
    if len(channel) <= 63:
        return channel
    return "mutator_ready_" + hashlib.sha256(schema.encode()).hexdigest()[:40]


def _rewrite(text: str, *changes: tuple[str, str]) -> str:
    """``text`` with each ``(old, new)`` applied once (a missing ``old`` is a bug here)."""
    for old, new in changes:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


_OLD_COMMIT_SIGNATURE = """{s}.governed_commit(boolean, text[], bigint[], text[], text[], text[],
    text[], timestamptz[], timestamptz[], text[], text[], bigint[], text[], timestamptz[], text[],
    text, text, text, text, text, text[], timestamptz[], text[], text[], timestamptz[], text[])"""

# Version 3: the request rows also carry mutation_type and compensates (read by the caller,
# never parsed here: the server's JSON operators refuse documents holding \u0000), a write
# that changes the status or reason drops the reservation, and a ready request notifies.
_COMMIT_FUNCTION_V3 = _rewrite(
    _COMMIT_FUNCTION,
    ("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"),
    (
        "    r_documents text[],\n",
        "    r_documents text[], r_mutation_types text[], r_compensates text[],\n",
    ),
    (
        "created_at, updated_at, revision, document)\n",
        "created_at, updated_at, revision, document, mutation_type, compensates)\n",
    ),
    (
        "r_created[i], r_updated[i], 0, r_documents[i]);",
        "r_created[i], r_updated[i], 0, r_documents[i], r_mutation_types[i],\n"
        "                r_compensates[i]);",
    ),
    (
        "document = r_documents[i], revision = revision + 1\n",
        "document = r_documents[i], revision = revision + 1,\n"
        "                mutation_type = r_mutation_types[i], compensates = r_compensates[i],\n"
        "                reserved_by = CASE WHEN status = r_statuses[i] AND pending_reason\n"
        "                    IS NOT DISTINCT FROM r_reasons[i] THEN reserved_by END,\n"
        "                reserved_until = CASE WHEN status = r_statuses[i] AND pending_reason\n"
        "                    IS NOT DISTINCT FROM r_reasons[i] THEN reserved_until END\n",
    ),
    (
        "    END IF;\nEND\n$fn$",
        "    END IF;\n"
        "    IF EXISTS (SELECT 1 FROM unnest(r_statuses, r_reasons) AS x(status, pending_reason)\n"
        f"            WHERE {READY_STATUSES}) THEN\n"
        "        PERFORM pg_notify('{channel}', '');\n"
        "    END IF;\n"
        "END\n$fn$",
    ),
)

# Reads one field of a stored document for the backfill; NULL when the document is
# unreadable (an upgrade never fails on a bad row). The server's JSON operators refuse a
# document holding the escape \u0000 anywhere: such a document is read again without it.
_DOCUMENT_FIELD = """CREATE FUNCTION {s}.mutator_document_field(document text, path text[])
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    RETURN document::json #>> path;
EXCEPTION WHEN others THEN
    BEGIN
        RETURN replace(document, '\\u0000', '\\ufffd')::json #>> path;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END;
END
$fn$"""

_V3: tuple[str, ...] = (
    """ALTER TABLE {s}.requests ADD COLUMN mutation_type text,
        ADD COLUMN compensates text COLLATE "C",
        ADD COLUMN reserved_by text,
        ADD COLUMN reserved_until timestamptz""",
    _DOCUMENT_FIELD,
    """UPDATE {s}.requests SET
        mutation_type = {s}.mutator_document_field(document, ARRAY['mutation_type']),
        compensates = {s}.mutator_document_field(
            document, ARRAY['execution', 'compensation', 'original_request_id'])""",
    "DROP FUNCTION {s}.mutator_document_field(text, text[])",
    "CREATE INDEX requests_mutation_type ON {s}.requests (mutation_type, created_at, request_id)",
    "CREATE INDEX requests_compensates ON {s}.requests (compensates) WHERE compensates IS NOT NULL",
    "CREATE INDEX requests_ready ON {s}.requests (created_at, request_id) WHERE " + READY_STATUSES,
    """CREATE TABLE {s}.quarantine (
        request_id text COLLATE "C" PRIMARY KEY,
        field text,
        error text NOT NULL,
        detected_at timestamptz NOT NULL
    )""",
    "CREATE INDEX quarantine_detected ON {s}.quarantine (detected_at, request_id)",
    "DROP FUNCTION " + _OLD_COMMIT_SIGNATURE,
    _COMMIT_FUNCTION_V3,
)

_V3_COMMIT_SIGNATURE = """{s}.governed_commit(boolean, text[], bigint[], text[], text[], text[],
    text[], timestamptz[], timestamptz[], text[], text[], text[], text[], bigint[], text[],
    timestamptz[], text[], text, text, text, text, text, text[], timestamptz[], text[], text[],
    timestamptz[], text[])"""

# Version 4. ``meta`` is a JSON object (built by ``_postgres._Writer``):
#   "durable": false for a claim (commits without waiting for the WAL flush);
#   "r": request rows [id, expected revision or null, state_id, status, reason, actor,
#        created_at, updated_at, mutation_type, compensates, document index];
#   "d": decision rows [request_id, sequence, category, timestamp, document index];
#   "s": the state write [id, expected version, version, request_id, document index] or null;
#   "h" / "a": history / audit rows [state_id, executed_at, document index].
# Document indexes are 1-based positions in ``documents``. Same checks, same order, same
# writes as version 3; then ``read_state``'s row (none when NULL or unknown).
_COMMIT_FUNCTION_V4 = """CREATE FUNCTION {s}.governed_commit(
    meta text, documents text[], read_state text
) RETURNS SETOF {s}.states LANGUAGE plpgsql AS $fn$
DECLARE
    p jsonb := meta::jsonb;
    reqs jsonb := p->'r';
    st jsonb := p->'s';
    r jsonb;
    n integer := jsonb_array_length(p->'r');
    found_revision bigint;
    i integer;
    actual text;
    state_exists boolean := false;
    s_id text := st->>0;
    s_request_id text := st->>3;
BEGIN
    IF NOT (p->'durable')::boolean THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    -- One primary-key lookup per request (never a scan), in code point order.
    FOR i IN SELECT o - 1 FROM jsonb_array_elements(reqs) WITH ORDINALITY AS x(e, o)
        ORDER BY (e->>0) COLLATE "C"
    LOOP
        r := reqs->i;
        SELECT revision INTO found_revision FROM {s}.requests WHERE request_id = r->>0
            FOR UPDATE;
        IF r->>1 IS NULL THEN
            IF FOUND THEN
                RAISE EXCEPTION 'request exists' USING ERRCODE = 'MU001', DETAIL = r->>0;
            END IF;
        ELSIF NOT FOUND THEN
            RAISE EXCEPTION 'request missing' USING ERRCODE = 'MU002', DETAIL = r->>0;
        ELSIF found_revision <> (r->>1)::bigint THEN
            RAISE EXCEPTION 'revision moved' USING ERRCODE = 'MU003',
                DETAIL = json_build_array(r->>0, (r->>1)::bigint, found_revision)::text;
        END IF;
    END LOOP;
    IF s_id IS NOT NULL THEN
        SELECT version INTO actual FROM {s}.states WHERE state_id = s_id FOR UPDATE;
        state_exists := FOUND;
        IF actual IS DISTINCT FROM st->>1 THEN
            RAISE EXCEPTION 'state version moved' USING ERRCODE = 'MU004', DETAIL = s_id,
                HINT = json_build_array(actual)::text;
        END IF;
        IF s_request_id IS NOT NULL AND EXISTS (
            SELECT 1 FROM {s}.state_versions WHERE state_id = s_id AND request_id = s_request_id
        ) THEN
            RAISE EXCEPTION 'request already produced a version' USING ERRCODE = 'MU005',
                DETAIL = s_id, HINT = s_request_id;
        END IF;
        IF state_exists THEN
            UPDATE {s}.states SET version = st->>2, request_id = s_request_id,
                document = documents[(st->>4)::integer] WHERE state_id = s_id;
        ELSE
            INSERT INTO {s}.states (state_id, version, request_id, document)
                VALUES (s_id, st->>2, s_request_id, documents[(st->>4)::integer]);
        END IF;
        IF s_request_id IS NOT NULL THEN
            INSERT INTO {s}.state_versions (state_id, request_id, version)
                VALUES (s_id, s_request_id, st->>2);
        END IF;
    END IF;
    FOR i IN 0 .. n - 1 LOOP
        r := reqs->i;
        IF r->>1 IS NULL THEN
            INSERT INTO {s}.requests (request_id, state_id, status, pending_reason, actor_id,
                created_at, updated_at, revision, document, mutation_type, compensates)
            VALUES (r->>0, r->>2, r->>3, r->>4, r->>5, (r->>6)::timestamptz,
                (r->>7)::timestamptz, 0, documents[(r->>10)::integer], r->>8, r->>9);
        ELSE
            UPDATE {s}.requests SET state_id = r->>2, status = r->>3,
                pending_reason = r->>4, actor_id = r->>5,
                created_at = (r->>6)::timestamptz, updated_at = (r->>7)::timestamptz,
                document = documents[(r->>10)::integer], revision = revision + 1,
                mutation_type = r->>8, compensates = r->>9,
                reserved_by = CASE WHEN status = r->>3 AND pending_reason
                    IS NOT DISTINCT FROM r->>4 THEN reserved_by END,
                reserved_until = CASE WHEN status = r->>3 AND pending_reason
                    IS NOT DISTINCT FROM r->>4 THEN reserved_until END
            WHERE request_id = r->>0;
        END IF;
    END LOOP;
    IF jsonb_array_length(p->'d') > 0 THEN
        INSERT INTO {s}.decisions (request_id, sequence, category, timestamp, document)
        SELECT e->>0, (e->>1)::bigint, e->>2, (e->>3)::timestamptz,
            documents[(e->>4)::integer]
        FROM jsonb_array_elements(p->'d') WITH ORDINALITY AS x(e, o)
        ORDER BY o
        ON CONFLICT (request_id, sequence) DO NOTHING;
    END IF;
    IF jsonb_array_length(p->'h') > 0 THEN
        INSERT INTO {s}.history (state_id, executed_at, document)
        SELECT e->>0, (e->>1)::timestamptz, documents[(e->>2)::integer]
        FROM jsonb_array_elements(p->'h') WITH ORDINALITY AS x(e, o)
        ORDER BY o;
    END IF;
    IF jsonb_array_length(p->'a') > 0 THEN
        INSERT INTO {s}.audit (state_id, executed_at, document)
        SELECT e->>0, (e->>1)::timestamptz, documents[(e->>2)::integer]
        FROM jsonb_array_elements(p->'a') WITH ORDINALITY AS x(e, o)
        ORDER BY o;
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(reqs) AS x(e)
            WHERE e->>3 = 'approved' OR (e->>3 = 'pending' AND e->>4 = 'revalidation')) THEN
        PERFORM pg_notify('{channel}', '');
    END IF;
    IF read_state IS NOT NULL THEN
        RETURN QUERY SELECT * FROM {s}.states WHERE state_id = read_state;
    END IF;
END
$fn$"""

_V4: tuple[str, ...] = ("DROP FUNCTION " + _V3_COMMIT_SIGNATURE, _COMMIT_FUNCTION_V4)

# Version 5: ``meta`` also carries "o", the 0-based indexes of "r" in code point order of
# their ids (the order rows are locked in), and "n", true when a request row is written
# ready (the caller decides with the READY_STATUSES condition): no query sorts the rows or
# looks for a ready one. An update is its own check (``WHERE revision = expected``: it
# locks the row, waiting for a concurrent writer and re-checking its revision); the reason
# it found nothing is looked up only then. Same checks in the same order as version 4
# (requests in lock order, then the state version, then whether the request already
# produced a version), same errors, same writes; a failed check raises, and the statement
# rolls back whatever was written before it.
_COMMIT_FUNCTION_V5 = """CREATE OR REPLACE FUNCTION {s}.governed_commit(
    meta text, documents text[], read_state text
) RETURNS SETOF {s}.states LANGUAGE plpgsql AS $fn$
DECLARE
    p jsonb := meta::jsonb;
    reqs jsonb := p->'r';
    locks jsonb := p->'o';
    st jsonb := p->'s';
    r jsonb;
    n integer := jsonb_array_length(p->'r');
    found_revision bigint;
    k integer;
    actual text;
    s_id text := st->>0;
    s_request_id text := st->>3;
BEGIN
    IF NOT (p->'durable')::boolean THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    FOR k IN 0 .. n - 1 LOOP
        r := reqs->((locks->>k)::integer);
        IF r->>1 IS NULL THEN
            PERFORM FROM {s}.requests WHERE request_id = r->>0 FOR UPDATE;
            IF FOUND THEN
                RAISE EXCEPTION 'request exists' USING ERRCODE = 'MU001', DETAIL = r->>0;
            END IF;
            INSERT INTO {s}.requests (request_id, state_id, status, pending_reason, actor_id,
                created_at, updated_at, revision, document, mutation_type, compensates)
            VALUES (r->>0, r->>2, r->>3, r->>4, r->>5, (r->>6)::timestamptz,
                (r->>7)::timestamptz, 0, documents[(r->>10)::integer], r->>8, r->>9);
        ELSE
            UPDATE {s}.requests SET state_id = r->>2, status = r->>3,
                pending_reason = r->>4, actor_id = r->>5,
                created_at = (r->>6)::timestamptz, updated_at = (r->>7)::timestamptz,
                document = documents[(r->>10)::integer], revision = revision + 1,
                mutation_type = r->>8, compensates = r->>9,
                reserved_by = CASE WHEN status = r->>3 AND pending_reason
                    IS NOT DISTINCT FROM r->>4 THEN reserved_by END,
                reserved_until = CASE WHEN status = r->>3 AND pending_reason
                    IS NOT DISTINCT FROM r->>4 THEN reserved_until END
            WHERE request_id = r->>0 AND revision = (r->>1)::bigint;
            IF NOT FOUND THEN
                SELECT revision INTO found_revision FROM {s}.requests
                    WHERE request_id = r->>0;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'request missing' USING ERRCODE = 'MU002', DETAIL = r->>0;
                END IF;
                RAISE EXCEPTION 'revision moved' USING ERRCODE = 'MU003',
                    DETAIL = json_build_array(r->>0, (r->>1)::bigint, found_revision)::text;
            END IF;
        END IF;
    END LOOP;
    IF s_id IS NOT NULL THEN
        IF st->>1 IS NOT NULL THEN
            UPDATE {s}.states SET version = st->>2, request_id = s_request_id,
                document = documents[(st->>4)::integer]
            WHERE state_id = s_id AND version = st->>1;
        END IF;
        IF st->>1 IS NULL OR NOT FOUND THEN
            SELECT version INTO actual FROM {s}.states WHERE state_id = s_id FOR UPDATE;
            IF actual IS DISTINCT FROM st->>1 THEN
                RAISE EXCEPTION 'state version moved' USING ERRCODE = 'MU004',
                    DETAIL = s_id, HINT = json_build_array(actual)::text;
            END IF;
            INSERT INTO {s}.states (state_id, version, request_id, document)
                VALUES (s_id, st->>2, s_request_id, documents[(st->>4)::integer]);
        END IF;
        IF s_request_id IS NOT NULL THEN
            INSERT INTO {s}.state_versions (state_id, request_id, version)
                VALUES (s_id, s_request_id, st->>2) ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'request already produced a version' USING ERRCODE = 'MU005',
                    DETAIL = s_id, HINT = s_request_id;
            END IF;
        END IF;
    END IF;
    IF jsonb_array_length(p->'d') > 0 THEN
        INSERT INTO {s}.decisions (request_id, sequence, category, timestamp, document)
        SELECT e->>0, (e->>1)::bigint, e->>2, (e->>3)::timestamptz,
            documents[(e->>4)::integer]
        FROM jsonb_array_elements(p->'d') WITH ORDINALITY AS x(e, o)
        ORDER BY o
        ON CONFLICT (request_id, sequence) DO NOTHING;
    END IF;
    IF jsonb_array_length(p->'h') > 0 THEN
        INSERT INTO {s}.history (state_id, executed_at, document)
        SELECT e->>0, (e->>1)::timestamptz, documents[(e->>2)::integer]
        FROM jsonb_array_elements(p->'h') WITH ORDINALITY AS x(e, o)
        ORDER BY o;
    END IF;
    IF jsonb_array_length(p->'a') > 0 THEN
        INSERT INTO {s}.audit (state_id, executed_at, document)
        SELECT e->>0, (e->>1)::timestamptz, documents[(e->>2)::integer]
        FROM jsonb_array_elements(p->'a') WITH ORDINALITY AS x(e, o)
        ORDER BY o;
    END IF;
    IF (p->'n')::boolean THEN
        PERFORM pg_notify('{channel}', '');
    END IF;
    IF read_state IS NOT NULL THEN
        RETURN QUERY SELECT * FROM {s}.states WHERE state_id = read_state;
    END IF;
END
$fn$"""

# Reserves up to ``p_limit`` ready rows for ``p_owner``, oldest first (see
# ``PostgresRequestStore.reserve``). The planner settings make the only cheap plan an
# ordered walk of ``requests_ready`` that stops after ``p_limit`` rows; they hold while the
# function runs. A lost reservation is harmless: it commits without waiting for the WAL.
_RESERVE_FUNCTION = """CREATE FUNCTION {s}.reserve_ready(
    p_owner text, p_limit integer, p_now timestamptz, p_until timestamptz,
    p_revalidation boolean
) RETURNS TABLE (request_id text, created_at timestamptz, document text)
LANGUAGE plpgsql
SET enable_bitmapscan = off SET enable_seqscan = off SET enable_sort = off
AS $fn$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY WITH chosen AS (SELECT r.request_id FROM {s}.requests AS r
        WHERE (r.status = 'approved' OR (p_revalidation AND r.status = 'pending'
            AND r.pending_reason = 'revalidation'))
        AND (r.reserved_until IS NULL OR r.reserved_until <= p_now)
        AND NOT EXISTS (SELECT 1 FROM {s}.quarantine AS q WHERE q.request_id = r.request_id)
        ORDER BY r.created_at, r.request_id COLLATE "C" LIMIT p_limit
        FOR UPDATE OF r SKIP LOCKED)
    UPDATE {s}.requests AS r SET reserved_by = p_owner, reserved_until = p_until
    FROM chosen WHERE r.request_id = chosen.request_id
    RETURNING r.request_id, r.created_at, r.document;
END
$fn$"""

# lz4 compresses a request document several times faster than the default pglz; a server
# built without lz4 keeps pglz (the upgrade never fails on it).
_LZ4_DOCUMENTS = """DO $do$
BEGIN
    ALTER TABLE {s}.requests ALTER COLUMN document SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;
END
$do$"""

_V5: tuple[str, ...] = (_COMMIT_FUNCTION_V5, _RESERVE_FUNCTION, _LZ4_DOCUMENTS)

# Version 6: a new request is written with ON CONFLICT DO NOTHING, the check after it
# (one statement instead of a locking read and an insert); otherwise version 5.
_COMMIT_FUNCTION_V6 = _rewrite(
    _COMMIT_FUNCTION_V5,
    (
        """            PERFORM FROM {s}.requests WHERE request_id = r->>0 FOR UPDATE;
            IF FOUND THEN
                RAISE EXCEPTION 'request exists' USING ERRCODE = 'MU001', DETAIL = r->>0;
            END IF;
""",
        "",
    ),
    (
        "r->>8, r->>9);\n",
        "r->>8, r->>9)\n"
        "            ON CONFLICT (request_id) DO NOTHING;\n"
        "            IF NOT FOUND THEN\n"
        "                RAISE EXCEPTION 'request exists' USING ERRCODE = 'MU001',\n"
        "                    DETAIL = r->>0;\n"
        "            END IF;\n",
    ),
)

_V6: tuple[str, ...] = (
    """ALTER TABLE {s}.requests ALTER COLUMN state_id TYPE text COLLATE "C",
        ALTER COLUMN status TYPE text COLLATE "C",
        ALTER COLUMN pending_reason TYPE text COLLATE "C",
        ALTER COLUMN actor_id TYPE text COLLATE "C",
        ALTER COLUMN mutation_type TYPE text COLLATE "C" """,
    """ALTER TABLE {s}.decisions ALTER COLUMN request_id TYPE text COLLATE "C",
        ALTER COLUMN category TYPE text COLLATE "C" """,
    'ALTER TABLE {s}.states ALTER COLUMN state_id TYPE text COLLATE "C"',
    """ALTER TABLE {s}.state_versions ALTER COLUMN state_id TYPE text COLLATE "C",
        ALTER COLUMN request_id TYPE text COLLATE "C" """,
    'ALTER TABLE {s}.history ALTER COLUMN state_id TYPE text COLLATE "C"',
    'ALTER TABLE {s}.audit ALTER COLUMN state_id TYPE text COLLATE "C"',
    "ALTER TABLE {s}.decisions DROP CONSTRAINT decisions_pkey",
    """ALTER TABLE {s}.decisions DROP CONSTRAINT decisions_request_sequence,
        ADD CONSTRAINT decisions_pkey PRIMARY KEY (request_id, sequence)""",
    "ALTER TABLE {s}.history DROP CONSTRAINT history_pkey",
    "DROP INDEX {s}.history_state",
    "ALTER TABLE {s}.history ADD CONSTRAINT history_pkey PRIMARY KEY (state_id, id)",
    _COMMIT_FUNCTION_V6,
)

# Version 7: a request row also carries its expiry deadline (``due_at``: what
# ``expiry_deadline`` gives, the 12th element of a "r" row), indexed for the pending rows
# that have one, so an expiry sweep reads only what is due. Rows pending at the upgrade get
# the earliest instant: the first sweep reads them and writes their real deadline.
_COMMIT_FUNCTION_V7 = _rewrite(
    _COMMIT_FUNCTION_V6,
    (
        "created_at, updated_at, revision, document, mutation_type, compensates)\n",
        "created_at, updated_at, revision, document, mutation_type, compensates,\n"
        "                due_at)\n",
    ),
    (
        "r->>8, r->>9)\n",
        "r->>8, r->>9, (r->>11)::timestamptz)\n",
    ),
    (
        "                mutation_type = r->>8, compensates = r->>9,\n",
        "                mutation_type = r->>8, compensates = r->>9,\n"
        "                due_at = (r->>11)::timestamptz,\n",
    ),
)

_V7: tuple[str, ...] = (
    "ALTER TABLE {s}.requests ADD COLUMN due_at timestamptz",
    "UPDATE {s}.requests SET due_at = '-infinity' WHERE status = 'pending'",
    """CREATE INDEX requests_due ON {s}.requests (due_at, request_id)
        WHERE status = 'pending' AND due_at IS NOT NULL""",
    _COMMIT_FUNCTION_V7,
)

# Version 8: operations written together. Item ``k`` is ``governed_commit(metas[k],
# documents[firsts[k]:firsts[k + 1] - 1], read_states[k])`` inside its own subtransaction;
# a failed check or a unique violation is returned as the item's ``code`` (with the
# error's detail, hint and constraint) instead of aborting the others, and any other
# error aborts the whole statement. The batch waits for the WAL flush when ``durable``,
# whatever its items' own settings. Before any write it locks its existing requests, then
# its existing states (code point order), then, for the ids it may create (the client
# names them: requests written without an expected revision, states without an expected
# version), a transaction advisory lock per id hash (requests, then states; hash order):
# a row not yet created cannot be locked, and two batches creating the same ids in
# opposite orders would otherwise deadlock on each other's uncommitted inserts. A batch
# that creates nothing (a worker's claims and commits) skips those steps.
_BATCH_FUNCTION = """CREATE FUNCTION {s}.governed_commit_batch(
    metas text[], documents text[], firsts integer[], read_states text[],
    lock_requests text[], lock_states text[], create_requests text[], create_states text[],
    durable boolean
) RETURNS TABLE (item integer, code text, detail text, hint text, constraint_name text,
    version text, request_id text, document text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    setting text := current_setting('synchronous_commit');
    k integer;
    missing integer;
    st {s}.states;
    wrote boolean;
BEGIN
    IF cardinality(lock_requests) > 0 THEN
        PERFORM FROM {s}.requests AS r WHERE r.request_id = ANY(lock_requests)
            ORDER BY r.request_id FOR UPDATE;
    END IF;
    IF cardinality(lock_states) > 0 THEN
        PERFORM FROM {s}.states AS t WHERE t.state_id = ANY(lock_states)
            ORDER BY t.state_id FOR UPDATE;
    END IF;
    IF cardinality(create_requests) > 0 THEN
        FOR missing IN SELECT DISTINCT hashtext(u.id) FROM unnest(create_requests) AS u(id)
                WHERE NOT EXISTS (SELECT FROM {s}.requests AS r WHERE r.request_id = u.id)
                ORDER BY 1 LOOP
            PERFORM pg_advisory_xact_lock(hashtext('{s}.requests'), missing);
        END LOOP;
    END IF;
    IF cardinality(create_states) > 0 THEN
        FOR missing IN SELECT DISTINCT hashtext(u.id) FROM unnest(create_states) AS u(id)
                WHERE NOT EXISTS (SELECT FROM {s}.states AS t WHERE t.state_id = u.id)
                ORDER BY 1 LOOP
            PERFORM pg_advisory_xact_lock(hashtext('{s}.states'), missing);
        END LOOP;
    END IF;
    FOR k IN 1 .. coalesce(array_length(metas, 1), 0) LOOP
        item := k;
        code := NULL; detail := NULL; hint := NULL; constraint_name := NULL;
        version := NULL; request_id := NULL; document := NULL;
        BEGIN
            wrote := false;
            FOR st IN SELECT * FROM {s}.governed_commit(metas[k],
                    documents[firsts[k]:firsts[k + 1] - 1], read_states[k]) LOOP
                version := st.version; request_id := st.request_id;
                document := st.document;
                wrote := true;
                RETURN NEXT;
            END LOOP;
            IF NOT wrote THEN
                RETURN NEXT;
            END IF;
        EXCEPTION WHEN SQLSTATE 'MU001' OR SQLSTATE 'MU002' OR SQLSTATE 'MU003'
                OR SQLSTATE 'MU004' OR SQLSTATE 'MU005' OR unique_violation THEN
            GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL,
                hint = PG_EXCEPTION_HINT, constraint_name = CONSTRAINT_NAME;
            RETURN NEXT;
        END;
    END LOOP;
    PERFORM set_config('synchronous_commit', CASE WHEN durable THEN setting ELSE 'off' END,
        true);
END
$fn$"""

_V8: tuple[str, ...] = (_BATCH_FUNCTION,)

# Version 9: the pending-reason index keyed on the reason's presence (see the module
# docstring); a strict comparison on the reason implies the predicate, even with the
# reason a parameter of a generic plan.
_V9: tuple[str, ...] = (
    """CREATE INDEX requests_reason ON {s}.requests (pending_reason, created_at, request_id)
        WHERE pending_reason IS NOT NULL""",
    "DROP INDEX {s}.requests_pending",
    """CREATE STATISTICS {s}.requests_status_reason (dependencies)
        ON status, pending_reason FROM {s}.requests""",
    "ANALYZE {s}.requests",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9)
"""Statements bringing the schema from version ``index`` to ``index + 1``."""

assert len(MIGRATIONS) == SCHEMA_VERSION

STORE_RELATIONS = tuple(
    sorted(
        {
            name
            for statements in MIGRATIONS
            for statement in statements
            for name in re.findall(
                r"CREATE (?:TABLE|INDEX|STATISTICS) (?:\{s\}\.)?(\w+)", statement
            )
        }
    )
)
"""Every table, index and statistics object the migrations create by name."""
