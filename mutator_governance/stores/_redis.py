"""The Redis backend: requests, decisions, states, audit and history in one Redis database.

Asyncio only (it uses ``redis.asyncio``); install the ``redis`` extra. Open it with
:meth:`RedisStore.open` or through ``open_store("redis://host:port/db?prefix=name")``.

Keyspace (``p`` is the prefix, default ``mutator``; ``<x>`` is an escaped segment, see
:func:`escape_segment`)::

    p:meta                          HASH   schema -> store schema version
    p:request:<id>                  HASH   document (JSON), revision, member, indexes
    p:index:all                     ZSET   every request          (score 0, lex members)
    p:index:status:<status>         ZSET   requests by status
    p:index:reason:<reason>         ZSET   requests by pending reason (when set)
    p:index:state:<state id>        ZSET   requests by state
    p:index:actor:<actor id>        ZSET   requests by requesting actor (when set)
    p:decisions:<id>                LIST   a request's decisions, oldest first
    p:decisions-recent              ZSET   every decision, "<stamp>|<seq>|<record JSON>"
    p:decisions-recent:<category>   ZSET   the same, per decision category
    p:decisions-seq                 STRING the decision append counter
    p:state:<state id>              HASH   document (JSON), version, request_id
    p:state-produced:<state id>     HASH   request id -> version it produced
    p:audit                         LIST   every audit entry, oldest first
    p:audit:<state id>              LIST   one state's audit entries
    p:history:<state id>            LIST   one state's history, oldest first

Index members are ``"<created_at as 18-digit microseconds>|<request id>"`` in zero-score
sorted sets, so ``ZRANGEBYLEX`` yields requests by ``created_at`` then ``request_id`` (UTF-8
byte order is code point order) and cursors become lexicographic range bounds. Every
document carries a ``schema`` version; a document or store written by a newer schema is
refused with :class:`~mutator_governance.StoredDataError`.

All writes that must be atomic run as Lua scripts (:mod:`._redis_scripts`): create, replace
(compare-and-set on the revision, moving the request between index sets), state put
(compare-and-set on the version) and the governed commit (every check, then every write).
Reads are not snapshots across round trips: a listing sees each request as it was when its
document was fetched (requests are never deleted, so an index member without a document
is reported as corrupt data).
"""

from __future__ import annotations

import builtins
import contextlib
import heapq
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NoReturn, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import redis.asyncio as aioredis
import redis.exceptions

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
from . import _redis_scripts as scripts
from . import redact_url
from ._documents import decode, join_field, parse

__all__ = [
    "SCHEMA_VERSION",
    "RedisAuditSink",
    "RedisCommitter",
    "RedisDecisionHistory",
    "RedisHistoryStore",
    "RedisKeyspace",
    "RedisRequestStore",
    "RedisStateStore",
    "RedisStore",
    "escape_segment",
]

SCHEMA_VERSION: Final = 1
"""The document and keyspace schema this module writes (and the newest it reads)."""

BACKEND: Final = "redis"
_ORIGIN = datetime(1, 1, 1, tzinfo=UTC)
_MARGIN_US = 86_400_000_000  # one day, so offsets near year 1 stay non-negative
_STAMP_WIDTH = 18
_SEQ_WIDTH = 16
_RECORD_AT = _STAMP_WIDTH + 1 + _SEQ_WIDTH + 1
_ID_AT = _STAMP_WIDTH + 1
_BATCH = 256
_ESCAPED = frozenset("%:{}*?[]\\|")
_UNSAFE = re.compile(r"[%:{}*?\[\]\\|\s]")


def escape_segment(value: str) -> str:
    """``value`` with ``% : { } * ? [ ] \\ |``, whitespace and unprintables percent-encoded.

    Escaped segments contain no ``:``, so two different ids never produce the same key and
    no id can reach into another key shape (``a:b`` becomes ``a%3Ab``).
    """
    if _UNSAFE.search(value) is None and value.isprintable():
        return value
    out: list[str] = []
    for ch in value:
        if ch in _ESCAPED or ch.isspace() or not ch.isprintable():
            out.extend(f"%{byte:02X}" for byte in ch.encode("utf-8", "surrogatepass"))
        else:
            out.append(ch)
    return "".join(out)


def _stamp(moment: datetime) -> str:
    """``moment`` as fixed-width microseconds, so text order is instant order."""
    micros = (moment - _ORIGIN) // timedelta(microseconds=1) + _MARGIN_US
    return f"{micros:0{_STAMP_WIDTH}d}"


def _member(created_at: datetime, request_id: str) -> bytes:
    """The index member of a request (lone surrogates kept, in code point order)."""
    return f"{_stamp(created_at)}|{request_id}".encode("utf-8", "surrogatepass")


@attrs.frozen
class RedisKeyspace:
    """Every key the backend uses, under ``prefix`` (see the module docstring)."""

    prefix: str

    def __attrs_post_init__(self) -> None:
        if not self.prefix or any(ch.isspace() for ch in self.prefix):
            raise ValueError(f"Redis key prefix must be non-blank without spaces: {self.prefix!r}")

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    def request(self, request_id: str) -> str:
        return f"{self.prefix}:request:{escape_segment(request_id)}"

    @property
    def index_all(self) -> str:
        return f"{self.prefix}:index:all"

    def index(self, dimension: str, value: str) -> str:
        return f"{self.prefix}:index:{dimension}:{escape_segment(value)}"

    def request_indexes(self, request: MutationRequest) -> list[str]:
        """The index sets holding ``request``."""
        keys = [
            self.index_all,
            self.index("status", request.status.value),
            self.index("state", request.state_id),
        ]
        if request.pending_reason is not None:
            keys.append(self.index("reason", request.pending_reason.value))
        if request.context.actor_id is not None:
            keys.append(self.index("actor", request.context.actor_id))
        return keys

    def decisions(self, request_id: str) -> str:
        return f"{self.prefix}:decisions:{escape_segment(request_id)}"

    def recent(self, category: DecisionCategory | None = None) -> str:
        if category is None:
            return f"{self.prefix}:decisions-recent"
        return f"{self.prefix}:decisions-recent:{escape_segment(category.value)}"

    @property
    def decision_seq(self) -> str:
        return f"{self.prefix}:decisions-seq"

    def state(self, state_id: str) -> str:
        return f"{self.prefix}:state:{escape_segment(state_id)}"

    def produced(self, state_id: str) -> str:
        return f"{self.prefix}:state-produced:{escape_segment(state_id)}"

    def audit(self, state_id: str | None = None) -> str:
        if state_id is None:
            return f"{self.prefix}:audit"
        return f"{self.prefix}:audit:{escape_segment(state_id)}"

    def history(self, state_id: str) -> str:
        return f"{self.prefix}:history:{escape_segment(state_id)}"


def _split_url(url: str, prefix: str | None) -> tuple[str, str]:
    """``url`` without its ``prefix`` query parameter, and the prefix to use."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    found = [value for name, value in query if name == "prefix"]
    rest = [(name, value) for name, value in query if name != "prefix"]
    clean = urlunsplit(parts._replace(query=urlencode(rest)))
    if prefix is None:
        prefix = found[-1] if found else "mutator"
    return clean, prefix


class _Backend:
    """What every component shares: the client, keyspace, codec and error mapping."""

    def __init__(
        self, client: aioredis.Redis, keys: RedisKeyspace, registry: MutationRegistry, url: str
    ) -> None:
        self.client = client
        self.keys = keys
        self.registry = registry
        self.url = url
        self.create_request = client.register_script(scripts.CREATE_REQUEST)
        self.replace_request = client.register_script(scripts.REPLACE_REQUEST)
        self.put_state = client.register_script(scripts.PUT_STATE)
        self.append_decisions = client.register_script(scripts.APPEND_DECISIONS)
        self.commit = client.register_script(scripts.COMMIT)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn connection failures and timeouts into StoreUnavailableError."""
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise StoreUnavailableError(
                f"Redis is unavailable: {type(error).__name__}: {error}", url=self.url
            ) from error
        except (ConnectionError, TimeoutError) as error:
            raise StoreUnavailableError(
                f"Redis is unavailable: {type(error).__name__}: {error}", url=self.url
            ) from error

    # -- documents ---------------------------------------------------------------------

    def dump(self, kind: str, data: Any) -> bytes:
        """UTF-8 JSON of ``{"schema": ..., kind: data}`` (the registry's encodable text)."""
        document = {"schema": SCHEMA_VERSION, kind: data}
        return self.registry.dumps(document).encode("utf-8")

    def load(self, raw: bytes | str, kind: str, *, key: str, field: str | None) -> Any:
        """The ``kind`` payload of a stored document, checked for its schema version."""
        document = parse(self.registry, raw, backend=BACKEND, key=key, field=field)
        if not isinstance(document, dict):
            raise StoredDataError("not a JSON object", backend=BACKEND, key=key, field=field)
        schema = document.get("schema")
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise StoredDataError(
                "missing schema version",
                backend=BACKEND,
                key=key,
                field=join_field(field, "schema"),
            )
        if schema > SCHEMA_VERSION:
            raise StoredDataError(
                f"written with schema {schema}; this version reads up to {SCHEMA_VERSION} "
                "(upgrade mutator)",
                backend=BACKEND,
                key=key,
                field=join_field(field, "schema"),
            )
        if kind not in document:
            raise StoredDataError(
                f"no {kind!r} in the document", backend=BACKEND, key=key, field=field
            )
        return document[kind]

    def structured(self, build: Any, data: Any, *, key: str, field: str | None) -> Any:
        return decode(build, data, backend=BACKEND, key=key, field=field)

    def request_from(self, raw: bytes | str, key: str) -> MutationRequest:
        data = self.load(raw, "request", key=key, field="document")
        request: MutationRequest = self.structured(
            lambda d: self.registry.structure_request(d, where="request"),
            data,
            key=key,
            field="document",
        )
        return request

    def decision_from(self, raw: bytes | str, key: str) -> RequestDecision:
        data = self.load(raw, "decision", key=key, field=None)
        decision: RequestDecision = self.structured(
            lambda d: self.registry.structure_decision(d, where="decision"),
            data,
            key=key,
            field=None,
        )
        return decision

    def decision_args(
        self, request_id: str, decisions: Sequence[RequestDecision]
    ) -> tuple[list[str], list[str | bytes]]:
        """The per-decision KEYS and ARGV of the decision-writing Lua helpers."""
        keys: list[str] = []
        args: list[str | bytes] = [str(len(decisions))]
        for decision in decisions:
            data = self.registry.unstructure_decision(decision)
            record = {"request_id": request_id, "decision": data}
            keys.append(self.keys.recent(decision.category))
            args += [
                self.dump("decision", data),
                _stamp(decision.timestamp),
                self.dump("record", record),
            ]
        return keys, args

    def request_args(
        self, request: MutationRequest, expected: int | None, revision: int
    ) -> tuple[list[str], list[str | bytes]]:
        """The KEYS and ARGV ``read_request`` consumes for writing ``request``."""
        stored = (
            request if request.revision == revision else attrs.evolve(request, revision=revision)
        )
        indexes = self.keys.request_indexes(stored)
        keys = [self.keys.request(request.request_id), self.keys.decisions(request.request_id)]
        args: list[str | bytes] = [
            "" if expected is None else str(expected),
            str(revision),
            self.dump("request", self.registry.unstructure_request(stored)),
            _member(stored.created_at, stored.request_id),
            str(len(indexes)),
        ]
        return keys + indexes, args

    def state_args(
        self,
        state_id: str,
        state: Any,
        expected_version: str | None,
        version: str,
        request_id: str | None,
    ) -> tuple[list[str], list[str | bytes]]:
        keys = [self.keys.state(state_id), self.keys.produced(state_id)]
        document = self.dump("state", self.registry.unstructure_value(state))
        args: list[str | bytes] = [
            "0" if expected_version is None else "1",
            expected_version or "",
            version,
            document,
            _raw(request_id or ""),
        ]
        return keys, args


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    return str(value)


def _raw(text: str) -> bytes:
    """``text`` as UTF-8, lone surrogates kept (ids are arbitrary Python strings)."""
    return text.encode("utf-8", "surrogatepass")


def _fail(reply: Sequence[Any], *, request_ids: Sequence[str], state: Any) -> NoReturn:
    """Raise the error a script's failure reply describes."""
    what = _text(reply[1])
    position = int(reply[2])
    exists = int(reply[3]) == 1
    actual = _text(reply[4])
    if what == "exists":
        raise RequestAlreadyExistsError(request_ids[0])
    if what == "request":
        request_id = request_ids[position - 1]
        if not exists:
            raise RequestNotFoundError(request_id)
        expected_revision = int(state[position - 1])
        raise RequestConcurrencyError(request_id, expected_revision, int(actual))
    state_id, expected = state
    actual_version = actual if exists else None
    raise ConcurrencyError(
        f"state {state_id!r} is at version {actual_version!r}, expected {expected!r}",
        key=state_id,
        expected=expected,
        actual=actual_version,
    )


# -- requests ------------------------------------------------------------------------------


class RedisRequestStore:
    """Requests as hashes with a JSON document, indexed by zero-score sorted sets."""

    def __init__(self, backend: _Backend) -> None:
        self._b = backend

    async def create(self, request: MutationRequest) -> MutationRequest:
        stored = request if request.revision == 0 else attrs.evolve(request, revision=0)
        keys, args = self._b.request_args(stored, None, 0)
        with self._b.guard():
            reply = await self._b.create_request(keys=keys, args=args)
        if int(reply[0]) != 1:
            _fail(reply, request_ids=[request.request_id], state=None)
        return stored

    async def replace(self, request: MutationRequest, *, expected_revision: int) -> MutationRequest:
        stored = attrs.evolve(request, revision=expected_revision + 1)
        keys, args = self._b.request_args(stored, expected_revision, expected_revision + 1)
        with self._b.guard():
            reply = await self._b.replace_request(keys=keys, args=args)
        if int(reply[0]) != 1:
            _fail(reply, request_ids=[request.request_id], state=[expected_revision])
        return stored

    async def get(self, request_id: str) -> MutationRequest | None:
        key = self._b.keys.request(request_id)
        with self._b.guard():
            raw = await self._b.client.hget(key, "document")
        return None if raw is None else self._b.request_from(raw, key)

    async def by_state(self, state_id: str) -> Sequence[MutationRequest]:
        return await self._select(RequestQuery(state_ids={state_id}), None, None)

    async def pending(
        self, reason: PendingReason | None = None, *, state_id: str | None = None
    ) -> Sequence[MutationRequest]:
        query = RequestQuery(
            statuses={RequestStatus.PENDING},
            pending_reasons={reason} if reason is not None else (),
            state_ids={state_id} if state_id is not None else (),
        )
        return await self._select(query, None, None)

    async def list(
        self, query: RequestQuery | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> RequestPage:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        after = decode_cursor(cursor) if cursor is not None else None
        found = await self._select(query or RequestQuery(), limit + 1, after)
        items = found[:limit]
        more = len(found) > limit
        return RequestPage(items, encode_cursor(items[-1]) if more and items else None)

    # -- query execution -----------------------------------------------------------------

    async def _plan(self, query: RequestQuery) -> builtins.list[str]:
        """The index keys whose union holds every match: the smallest dimension's keys."""
        keys = self._b.keys
        options: builtins.list[builtins.list[str]] = []
        if query.statuses:
            options.append([keys.index("status", s.value) for s in query.statuses])
        if query.pending_reasons:
            options.append([keys.index("reason", r.value) for r in query.pending_reasons])
        if query.state_ids:
            options.append([keys.index("state", s) for s in query.state_ids])
        if query.actor_ids:
            options.append([keys.index("actor", a) for a in query.actor_ids])
        if not options:
            return [keys.index_all]
        if len(options) == 1:
            return options[0]
        with self._b.guard():
            async with self._b.client.pipeline(transaction=False) as pipe:
                for option in options:
                    for key in option:
                        pipe.zcard(key)
                sizes = iter(await pipe.execute())
        totals = [sum(int(next(sizes)) for _ in option) for option in options]
        return options[totals.index(min(totals))]

    async def _select(
        self,
        query: RequestQuery,
        want: int | None,
        after: tuple[datetime, str] | None,
    ) -> builtins.list[MutationRequest]:
        """Up to ``want`` matches of ``query`` after ``after``, in order."""
        index_keys = await self._plan(query)
        low = b"-"
        if query.created_from is not None:
            low = b"[" + _stamp(query.created_from).encode()
        if after is not None:
            position = _member(*after)
            if low == b"-" or position >= low[1:]:
                low = b"(" + position
        high = b"+"
        if query.created_to is not None:
            high = b"(" + f"{int(_stamp(query.created_to)) + 1:0{_STAMP_WIDTH}d}".encode()
        batch = _BATCH if want is None else min(max(want, 16), _BATCH)
        found: builtins.list[MutationRequest] = []
        async for members in self._scan(index_keys, low, high, batch):
            for request, member in zip(await self._fetch(members), members, strict=True):
                if _member(request.created_at, request.request_id) != member:
                    continue  # moved concurrently; it is listed at its new position
                if query.matches(request):
                    found.append(request)
                    if want is not None and len(found) >= want:
                        return found
        return found

    async def _scan(
        self, keys: Sequence[str], low: bytes, high: bytes, batch: int
    ) -> AsyncIterator[builtins.list[bytes]]:
        """Members of the union of ``keys`` within the lex range, in order, in batches."""
        bound = low
        while True:
            with self._b.guard():
                async with self._b.client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.zrangebylex(key, bound, high, start=0, num=batch)
                    results: builtins.list[builtins.list[bytes]] = await pipe.execute()
            full = [result for result in results if len(result) >= batch]
            merged = list(heapq.merge(*results))
            if full:
                ceiling = min(result[-1] for result in full)
                merged = [member for member in merged if member <= ceiling]
            if merged:
                yield merged
            if not full or not merged:
                return
            bound = b"(" + merged[-1]

    async def _fetch(self, members: Sequence[bytes]) -> builtins.list[MutationRequest]:
        """The documents of index ``members``; a missing one is corrupt data."""
        ids = [member[_ID_AT:].decode("utf-8", "surrogatepass") for member in members]
        keys = [self._b.keys.request(request_id) for request_id in ids]
        with self._b.guard():
            async with self._b.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(key, "document")
                raws = await pipe.execute()
        requests: builtins.list[MutationRequest] = []
        for key, raw in zip(keys, raws, strict=True):
            if raw is None:
                raise StoredDataError(
                    "indexed request has no document (orphan index member)",
                    backend=BACKEND,
                    key=key,
                    field="document",
                )
            requests.append(self._b.request_from(raw, key))
        return requests


# -- decisions ------------------------------------------------------------------------------


class RedisDecisionHistory:
    """Per-request decision lists plus lex-ordered sets for the newest decisions."""

    def __init__(self, backend: _Backend) -> None:
        self._b = backend

    async def append(self, request_id: str, decisions: Sequence[RequestDecision]) -> None:
        if not decisions:
            return
        keys = self._b.keys
        decision_keys, args = self._b.decision_args(request_id, decisions)
        with self._b.guard():
            await self._b.append_decisions(
                keys=[keys.decision_seq, keys.recent(), keys.decisions(request_id), *decision_keys],
                args=args,
            )

    async def for_request(self, request_id: str) -> Sequence[RequestDecision]:
        key = self._b.keys.decisions(request_id)
        with self._b.guard():
            raws = await self._b.client.lrange(key, 0, -1)
        return tuple(self._b.decision_from(raw, key) for raw in raws)

    async def recent(
        self, limit: int = 50, *, category: DecisionCategory | None = None
    ) -> Sequence[DecisionRecord]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if limit == 0:
            return ()
        key = self._b.keys.recent(category)
        with self._b.guard():
            members = await self._b.client.zrevrangebylex(key, "+", "-", start=0, num=limit)
        records: list[DecisionRecord] = []
        for member in members:
            record = self._b.load(member[_RECORD_AT:], "record", key=key, field=None)
            if not isinstance(record, dict) or not isinstance(record.get("request_id"), str):
                raise StoredDataError(
                    "not a decision record", backend=BACKEND, key=key, field="record"
                )
            data, request_id = record.get("decision"), record["request_id"]
            decision: RequestDecision = self._b.structured(
                lambda d: self._b.registry.structure_decision(d, where="decision"),
                data,
                key=key,
                field=None,
            )
            records.append(DecisionRecord(request_id, decision))
        return records


# -- states -----------------------------------------------------------------------------------


class RedisStateStore:
    """States as hashes (document, decimal version, producing request)."""

    def __init__(self, backend: _Backend) -> None:
        self._b = backend

    async def get(self, state_id: str) -> VersionedState | None:
        key = self._b.keys.state(state_id)
        with self._b.guard():
            raw, version, request_id = await self._b.client.hmget(
                key, ["document", "version", "request_id"]
            )
        if raw is None:
            return None
        if version is None:
            raise StoredDataError("state has no version", backend=BACKEND, key=key, field="version")
        data = self._b.load(raw, "state", key=key, field="document")
        state = self._b.structured(
            lambda d: self._b.registry.structure_value(d, where="state"),
            data,
            key=key,
            field="document",
        )
        return VersionedState(
            state, _text(version), None if request_id is None else _text(request_id)
        )

    async def put(
        self,
        state_id: str,
        state: Any,
        *,
        expected_version: str | None = None,
        request_id: str | None = None,
    ) -> str:
        try:
            version = next_version(expected_version)
        except ValueError:
            version = ""  # no stored version is like this: the script's check fails
        keys, args = self._b.state_args(state_id, state, expected_version, version, request_id)
        with self._b.guard():
            reply = await self._b.put_state(keys=keys, args=args)
        if int(reply[0]) != 1:
            _fail(reply, request_ids=(), state=(state_id, expected_version))
        return version

    async def version_by_request(self, state_id: str, request_id: str) -> str | None:
        with self._b.guard():
            version = await self._b.client.hget(self._b.keys.produced(state_id), _raw(request_id))
        return None if version is None else _text(version)


# -- audit and history ------------------------------------------------------------------------


class RedisAuditSink:
    """Audit entries in a global list and per-state lists, oldest first."""

    def __init__(self, backend: _Backend) -> None:
        self._b = backend

    async def record(self, entry: AuditEntry) -> None:
        document = self._b.dump("entry", unstructure(self._b.registry.converter, entry))
        keys = self._b.keys
        with self._b.guard():
            async with self._b.client.pipeline(transaction=True) as pipe:
                pipe.rpush(keys.audit(), document)
                if entry.state_id is not None:
                    pipe.rpush(keys.audit(entry.state_id), document)
                await pipe.execute()

    async def entries(
        self,
        state_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEntry]:
        key = self._b.keys.audit(state_id)
        with self._b.guard():
            raws = await self._b.client.lrange(key, 0, -1)
        entries = [_entry(self._b, raw, key, AuditEntry) for raw in raws]
        return [
            entry
            for entry in entries
            if (since is None or entry.executed_at >= since)
            and (until is None or entry.executed_at <= until)
        ]


class RedisHistoryStore:
    """Each state's committed history in a list, oldest first."""

    def __init__(self, backend: _Backend) -> None:
        self._b = backend

    async def append(self, entry: HistoryEntry) -> None:
        key = self._b.keys.history(entry.state_id)
        with self._b.guard():
            await self._b.client.rpush(key, _history_document(self._b, entry))

    async def history(self, state_id: str) -> MutationHistory[Any]:
        return MutationHistory(state_id, tuple(await self._range(state_id, 0, -1)))

    async def between(
        self, state_id: str, start: datetime, end: datetime
    ) -> Sequence[HistoryEntry]:
        return [e for e in await self._range(state_id, 0, -1) if start <= e.executed_at <= end]

    async def recent(self, state_id: str, limit: int) -> Sequence[HistoryEntry]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if limit == 0:
            return []
        return (await self._range(state_id, -limit, -1))[::-1]

    async def _range(self, state_id: str, start: int, end: int) -> list[HistoryEntry]:
        key = self._b.keys.history(state_id)
        with self._b.guard():
            raws = await self._b.client.lrange(key, start, end)
        return [_entry(self._b, raw, key, HistoryEntry) for raw in raws]


def _history_document(backend: _Backend, entry: HistoryEntry) -> bytes:
    return backend.dump("entry", unstructure(backend.registry.converter, entry))


def _entry(backend: _Backend, raw: bytes | str, key: str, cls: type[Any]) -> Any:
    data = backend.load(raw, "entry", key=key, field=None)
    return backend.structured(
        lambda d: structure(backend.registry.converter, d, cls, where="entry"),
        data,
        key=key,
        field=None,
    )


# -- commit ------------------------------------------------------------------------------------


class RedisCommitter:
    """The governed commit as one Lua script: every check first, then every write."""

    def __init__(self, backend: _Backend) -> None:
        self._b = backend

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        b = self._b
        keys: list[str] = [b.keys.decision_seq, b.keys.recent()]
        args: list[str | bytes] = [str(len(commit.requests))]
        stored: list[MutationRequest] = []
        for write in commit.requests:
            revision = write.expected_revision + 1
            request = attrs.evolve(write.request, revision=revision)
            request_keys, request_args = b.request_args(request, write.expected_revision, revision)
            decision_keys, decision_args = b.decision_args(request.request_id, write.new_decisions)
            keys += request_keys + decision_keys
            args += request_args + decision_args
            stored.append(request)
        state_check: tuple[str, str | None] | None = None
        if commit.state is None:
            args.append("0")
        else:
            s = commit.state
            if s.new_version != next_version(s.expected_version):
                raise ValueError(
                    f"state version {s.new_version!r} does not follow {s.expected_version!r}: "
                    "versions must be decimal counters (see next_version)"
                )
            state_keys, state_args = b.state_args(
                s.state_id, s.state, s.expected_version, s.new_version, s.request_id
            )
            keys += state_keys
            args += ["1", *state_args]
            state_check = (s.state_id, s.expected_version)
        args.append(str(len(commit.history)))
        for entry in commit.history:
            keys.append(b.keys.history(entry.state_id))
            args.append(_history_document(b, entry))
        with b.guard():
            reply = await b.commit(keys=keys, args=args)
        if int(reply[0]) != 1:
            ids = [w.request.request_id for w in commit.requests]
            if _text(reply[1]) == "state":
                _fail(reply, request_ids=ids, state=state_check)
            _fail(reply, request_ids=ids, state=[w.expected_revision for w in commit.requests])
        return tuple(stored)


# -- the store -----------------------------------------------------------------------------------


class RedisStore:
    """A :class:`~mutator_governance.protocols.GovernanceStore` on one Redis database.

    Asyncio only (``redis.asyncio``). Open it with :meth:`open`; all keys live under a
    configurable prefix (``prefix=`` or ``?prefix=`` in the URL, default ``mutator``) so
    several deployments or test runs can share one database. ``committer`` writes a
    governed execution (state, requests with their index changes, decisions, history) in
    one Lua script, all or nothing. Connection failures raise
    :class:`~mutator_governance.StoreUnavailableError` (with the password removed from the
    URL); unreadable data raises :class:`~mutator_governance.StoredDataError` naming the key.
    """

    def __init__(self, backend: _Backend) -> None:
        self._b = backend
        self._requests = RedisRequestStore(backend)
        self._decisions = RedisDecisionHistory(backend)
        self._states = RedisStateStore(backend)
        self._audit = RedisAuditSink(backend)
        self._history = RedisHistoryStore(backend)
        self._committer = RedisCommitter(backend)

    @classmethod
    async def open(cls, url: str, *, registry: MutationRegistry, prefix: str | None = None) -> Self:
        """Connect to ``redis://[user:password@]host:port/db[?prefix=name]`` and check the
        store's schema version (recorded in ``<prefix>:meta`` on first use).

        ``prefix`` (argument, else the URL's ``prefix`` parameter, else ``"mutator"``) must
        be non-blank without whitespace. Raises StoreUnavailableError when Redis does not
        answer and StoredDataError when the store was written by a newer schema.
        """
        clean, chosen = _split_url(url, prefix)
        keys = RedisKeyspace(chosen)
        shown = redact_url(url)
        try:
            client = aioredis.Redis.from_url(clean, decode_responses=False)
        except ValueError as error:
            raise ValueError(f"invalid Redis URL {shown!r}: {error}") from None
        backend = _Backend(client, keys, registry, shown)
        try:
            with backend.guard():
                await client.hsetnx(keys.meta, "schema", str(SCHEMA_VERSION))
                found = await client.hget(keys.meta, "schema")
            try:
                schema = int(_text(found))
            except (TypeError, ValueError):
                raise StoredDataError(
                    f"invalid schema version {found!r}",
                    backend=BACKEND,
                    key=keys.meta,
                    field="schema",
                ) from None
            if schema > SCHEMA_VERSION:
                raise StoredDataError(
                    f"store written with schema {schema}; this version reads up to "
                    f"{SCHEMA_VERSION} (upgrade mutator)",
                    backend=BACKEND,
                    key=keys.meta,
                    field="schema",
                )
        except BaseException:
            await client.aclose()
            raise
        return cls(backend)

    @property
    def prefix(self) -> str:
        return self._b.keys.prefix

    @property
    def keys(self) -> RedisKeyspace:
        return self._b.keys

    @property
    def client(self) -> aioredis.Redis:
        """The underlying ``redis.asyncio`` client (for diagnostics and tests)."""
        return self._b.client

    @property
    def requests(self) -> RedisRequestStore:
        return self._requests

    @property
    def decisions(self) -> RedisDecisionHistory:
        return self._decisions

    @property
    def states(self) -> RedisStateStore:
        return self._states

    @property
    def audit(self) -> RedisAuditSink:
        return self._audit

    @property
    def history(self) -> RedisHistoryStore:
        return self._history

    @property
    def committer(self) -> RedisCommitter:
        return self._committer

    async def aclose(self) -> None:
        """Close the connection pool; the store is unusable afterwards."""
        await self._b.client.aclose()
