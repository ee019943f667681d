"""The Redis backend: requests, decisions, states, audit and history in one Redis database.

Asyncio only (it uses ``redis.asyncio``); install the ``redis`` extra. Open it with
:meth:`RedisStore.open` or through ``open_store("redis://host:port/db?prefix=name")``;
the options (:class:`RedisOptions`) are keyword arguments or URL query parameters, and
one named both ways must have the same value in both.

Keyspace (``p`` is the prefix, default ``mutator``; ``<x>`` is an escaped segment, see
:func:`escape_segment`)::

    p:meta                          HASH   schema -> store schema version
    p:request:<id>                  HASH   document (JSON), revision, member, indexes
    p:index:all                     ZSET   every request          (score 0, lex members)
    p:index:status:<status>         ZSET   requests by status
    p:index:reason:<reason>         ZSET   requests by pending reason (when set)
    p:index:state:<state id>        ZSET   requests by state
    p:index:actor:<actor id>        ZSET   requests by requesting actor (when set)
    p:index:type:<mutation type>    ZSET   requests by mutation type
    p:index:compensates:<id>        ZSET   non-terminal compensations of request <id>
    p:ready:approved                ZSET   APPROVED requests (the worker's queue)
    p:ready:revalidation            ZSET   PENDING requests waiting for revalidation
    p:due                           ZSET   PENDING requests with a deadline, "<deadline>|<id>"
    p:updated:<status>              ZSET   terminal requests, "<updated_at>|<id>"
    p:reserved                      HASH   request id -> reserved-until stamp|owner
    p:quarantine                    HASH   request id -> quarantine entry (JSON)
    p:segments                      HASH   request id -> its escaped key segment
    p:decision-log:<id>             HASH   a request's decisions by sequence number
    p:decision-members:<id>         HASH   its members of the recent sets -> category set
    p:decisions-by-time             ZSET   every decision, "<stamp>|<n>|<record JSON>"
    p:decisions-by-time:<category>  ZSET   the same, per decision category
    p:decisions-seq                 STRING the decision append counter (<n> above)
    p:state:<state id>              HASH   document (JSON), version, request_id
    p:state-produced:<state id>     HASH   request id -> version it produced
    p:audit                         LIST   every audit entry, oldest first
    p:audit:<state id>              LIST   one state's audit entries
    p:history:<state id>            LIST   one state's history, oldest first

Index members are ``"<created_at as 18-digit microseconds>|<request id>"`` in zero-score
sorted sets, so ``ZRANGEBYLEX`` yields requests by ``created_at`` then ``request_id`` (UTF-8
byte order is code point order) and cursors become lexicographic range bounds. The expiry
set ``p:due`` has the same shape with the request's
:func:`~mutator_governance.expiry_deadline` in place of ``created_at`` (exact to the
microsecond over the whole ``datetime`` range, which a float score is not); a request hash's
``dmember`` field names the member it holds there (empty: none). Every
document carries a ``schema`` version; a document or store written by a newer schema is
refused with :class:`~mutator_governance.StoredDataError`. A store written by schema 1
(decision logs as lists), 2 (no ready, updated-at, mutation-type or compensation indexes)
or 3 (no expiry set) is upgraded when it is opened; run the upgrade with no older process
still writing (a schema-3 process would not enter the pending requests it creates in the
expiry set; documents are unchanged, still schema 3, so it can still read them).

Scripts find a request's keys through ``p:segments`` (Lua cannot escape ids the way
:func:`escape_segment` does). Commits that leave a request ready publish on the channel
``p:ready`` (:meth:`RedisRequestStore.wait_ready` listens on its own connection).

Every governance write is one call of the Lua script :data:`._redis_scripts.COMMIT`, all
or nothing: it checks every key's type and every precondition before its first write, so
a wrong-type key or a lost compare-and-set writes nothing. A worker's reservation and a
retention purge are one script call each (:data:`._redis_scripts.RESERVE`,
:data:`._redis_scripts.PURGE`); so is the repair of a stale expiry member
(:data:`._redis_scripts.DUE_FIX`). A request that cannot be read is quarantined (the
``p:quarantine`` hash) and skipped by every multi-row read. Redis errors become
:class:`~mutator_governance.StoredDataError` (bad data) or
:class:`~mutator_governance.StoreUnavailableError` (connection, timeout, server refusing
writes); a command is never resent after a failure, since a resent commit could land
twice or report a race it won. Reads are not snapshots across round trips: a listing sees
each request as it was when its document was fetched.

A listing walks one source in index order: the smallest indexed dimension of its query
(the union of that dimension's sets), or, when it bounds ``updated_at`` and the window is
small, the terminal requests the updated-at sets hold in that window plus every open
request. Members missing from the query's other indexed dimensions are dropped with
``ZMSCORE`` before any document is read, so a page reads the documents of requests every
index agrees on, never the terminal backlog of a dimension.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import contextlib
import functools
import heapq
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NoReturn, Self
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mutator import AuditEntry, ConcurrencyError, ConfigurationError, HistoryEntry, MutationHistory
from mutator.serialization import structure, unstructure

from .._arguments import check_id, check_key, check_version
from .._commit_types import GovernedCommit, RequestWrite, StateWrite
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
from .._retention import PurgeBatch, terminal_statuses
from . import _redis_scripts as scripts
from . import redact_url
from ._documents import RequestDocuments, decode, join_field, pace, paced, parse
from ._options import check_create, one_value_each, typed_alone
from ._redis_wire import Evalsha, Wire, pack
from ._runtime import running_library

__all__ = [
    "SCHEMA_VERSION",
    "RedisAuditSink",
    "RedisCommitter",
    "RedisDecisionHistory",
    "RedisHistoryStore",
    "RedisKeyspace",
    "RedisOptions",
    "RedisRequestStore",
    "RedisStateStore",
    "RedisStore",
    "escape_segment",
]

SCHEMA_VERSION: Final = 4
"""The keyspace schema this module writes (and the newest it reads)."""
_DOCUMENT_SCHEMA: Final = 3
"""The schema of the JSON documents it writes (and the newest it reads). Schema 4 only added
keys (the expiry set), so a schema-3 process still reads what it writes."""

BACKEND: Final = "redis"
URL_FORM: Final = (
    "redis://[user:password@]host[:port][/db][?db=n&prefix=name&socket_timeout=s"
    "&connect_timeout=s&max_connections=n&client_name=name] (or rediss:// for TLS, "
    "unix://[user[:password]@]/path/to/redis.sock[?db=n&password=...])"
)
_ORIGIN = datetime(1, 1, 1, tzinfo=UTC)
_MARGIN_US = 86_400_000_000  # one day, so offsets near year 1 stay non-negative
_SCHEMA: Final = str(_DOCUMENT_SCHEMA)
_STAMP_WIDTH = 18
_STAMP_FORMAT = f"%0{_STAMP_WIDTH}d"
_MICROSECOND = timedelta(microseconds=1)
_SEQ_WIDTH = 16
_RECORD_AT = _STAMP_WIDTH + 1 + _SEQ_WIDTH + 1
_ID_AT = _STAMP_WIDTH + 1
_BATCH = 256
_ESCAPED = frozenset("%:{}*?[]\\|")
_UNSAFE = re.compile(r"[%:{}*?\[\]\\|\s]")
_COUNTER = re.compile(r"(?:0|[1-9][0-9]*)\Z")
_GLOB = re.compile(r"([*?\[\]\\])")
# Redis replies that mean "the server cannot take this write now", not bad data.
_UNBOUNDED: Final = 2**31 - 1
"""The pool's limit for ``max_connections=None``: redis-py 5 meant none, recent releases
(8.2) bound the pool at 100 by default and fail the next command with "Too many
connections"."""
_UNAVAILABLE_REPLIES = ("BUSY", "NOREPLICAS")
"""Replies redis-py has no class for, told by their code: the server cannot take it now."""
# redis-py strips the code of the replies it has a class for (``OOM command not allowed``
# arrives as OutOfMemoryError("command not allowed ...")), so these are told by class:
# the server cannot take the command now, or not from this client; none is about data.
_UNAVAILABLE_ERRORS: Final = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterError,  # CLUSTERDOWN, MASTERDOWN
    redis.exceptions.ClusterCrossSlotError,
    redis.exceptions.AskError,  # and MOVED
    redis.exceptions.NoPermissionError,
)
_UPGRADE_WAIT = 60.0
"""Seconds an opening process waits for another one's upgrade before giving up."""
_UPGRADE_LEASE = 10.0
"""Seconds the upgrade lock lives unless renewed: the upgrading process renews it every
third of it, so a killed one frees it soon and a long upgrade keeps it throughout."""
_log = logging.getLogger("mutator.governance.redis")


@functools.lru_cache(maxsize=4096)
def escape_segment(value: str) -> str:
    """``value`` with ``% : { } * ? [ ] \\ |``, whitespace and unprintables percent-encoded.

    Escaped segments contain no ``:``, so two different ids never produce the same key and
    no id can reach into another key shape (``a:b`` becomes ``a%3Ab``). Memoized: a
    governed write escapes the same request and state ids for several keys.
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
    return _STAMP_FORMAT % ((moment - _ORIGIN) // _MICROSECOND + _MARGIN_US)


def _member(created_at: datetime, request_id: str) -> bytes:
    """The index member of a request (lone surrogates kept, in code point order)."""
    return f"{_stamp(created_at)}|{request_id}".encode("utf-8", "surrogatepass")


def _due_member(request: MutationRequest) -> bytes:
    """The expiry-set member of ``request`` (by its deadline), or empty when none expires."""
    deadline = expiry_deadline(request)
    return b"" if deadline is None else _member(deadline, request.request_id)


def _through(moment: datetime) -> bytes:
    """The exclusive upper lex bound of the members stamped at or before ``moment``."""
    return b"(" + f"{int(_stamp(moment)) + 1:0{_STAMP_WIDTH}d}".encode()


@attrs.frozen
class RedisKeyspace:
    """Every key the backend uses, under ``prefix`` (see the module docstring)."""

    prefix: str

    def __attrs_post_init__(self) -> None:
        if not self.prefix or any(ch.isspace() for ch in self.prefix):
            raise ConfigurationError(
                f"Redis key prefix must be non-blank without spaces: {self.prefix!r}"
            )

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    @property
    def upgrade_lock(self) -> str:
        return f"{self.prefix}:upgrade-lock"

    def request(self, request_id: str) -> str:
        return f"{self.prefix}:request:{escape_segment(request_id)}"

    @property
    def index_all(self) -> str:
        return f"{self.prefix}:index:all"

    def index(self, dimension: str, value: str) -> str:
        return f"{self.prefix}:index:{dimension}:{escape_segment(value)}"

    def request_indexes(self, request: MutationRequest) -> list[str]:
        """The index sets holding ``request`` (by its created-at member)."""
        keys = [
            self.index_all,
            self.index("status", request.status.value),
            self.index("state", request.state_id),
            self.index("type", request.mutation_type),
        ]
        if request.pending_reason is not None:
            keys.append(self.index("reason", request.pending_reason.value))
        if request.context.actor_id is not None:
            keys.append(self.index("actor", request.context.actor_id))
        compensation = request.execution.compensation
        if compensation is not None and not request.status.is_terminal:
            keys.append(self.index("compensates", compensation.original_request_id))
        if request.status is RequestStatus.APPROVED:
            keys.append(self.ready(revalidation=False))
        elif (
            request.status is RequestStatus.PENDING
            and request.pending_reason is PendingReason.REVALIDATION
        ):
            keys.append(self.ready(revalidation=True))
        return keys

    def updated_indexes(self, request: MutationRequest) -> list[str]:
        """The sets holding ``request`` by its updated-at member (terminal ones only)."""
        return [self.updated(request.status)] if request.status.is_terminal else []

    @property
    def due(self) -> str:
        """The expiry set: PENDING requests with a deadline, by deadline then id."""
        return f"{self.prefix}:due"

    def ready(self, *, revalidation: bool) -> str:
        return f"{self.prefix}:ready:{'revalidation' if revalidation else 'approved'}"

    @property
    def ready_channel(self) -> str:
        return f"{self.prefix}:ready"

    def updated(self, status: RequestStatus) -> str:
        return f"{self.prefix}:updated:{escape_segment(status.value)}"

    @property
    def reserved(self) -> str:
        return f"{self.prefix}:reserved"

    @property
    def quarantine(self) -> str:
        return f"{self.prefix}:quarantine"

    @property
    def segments(self) -> str:
        return f"{self.prefix}:segments"

    def decision_members(self, request_id: str) -> str:
        return f"{self.prefix}:decision-members:{escape_segment(request_id)}"

    def decisions(self, request_id: str) -> str:
        return f"{self.prefix}:decision-log:{escape_segment(request_id)}"

    def recent(self, category: DecisionCategory | None = None) -> str:
        if category is None:
            return f"{self.prefix}:decisions-by-time"
        return f"{self.prefix}:decisions-by-time:{escape_segment(category.value)}"

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

    # schema 1 keys, read only by the upgrade
    def v1_decisions_pattern(self) -> str:
        escaped = _GLOB.sub(r"\\\1", self.prefix)
        return f"{escaped}:decisions:*"

    def v1_recent(self, category: DecisionCategory | None = None) -> str:
        if category is None:
            return f"{self.prefix}:decisions-recent"
        return f"{self.prefix}:decisions-recent:{escape_segment(category.value)}"


# -- options ---------------------------------------------------------------------------------


def _seconds(name: str) -> Any:
    def check(_: Any, attribute: Any, value: float) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ConfigurationError(
                f"Redis option {name} must be a finite number of seconds > 0, got {value!r}"
            )

    return check


def _max_connections(_: Any, attribute: Any, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigurationError(
            f"Redis option max_connections must be an int >= 1 or None, got {value!r}"
        )


def _prefix(_: Any, attribute: Any, value: str) -> None:
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise ConfigurationError(
            f"Redis option prefix must be a non-blank string without spaces, got {value!r}"
        )


def _client_name(_: Any, attribute: Any, value: str | None) -> None:
    if value is not None and (
        not isinstance(value, str) or not value or any(ch.isspace() for ch in value)
    ):
        raise ConfigurationError(
            f"Redis option client_name must be a non-blank string without spaces, got {value!r}"
        )


@attrs.frozen
class RedisOptions:
    """How :class:`RedisStore` connects and where it keeps its keys.

    - ``prefix``: every key starts with ``<prefix>:`` (several deployments or test runs
      can share one database);
    - ``socket_timeout``: seconds a command may wait for its reply before
      :class:`~mutator_governance.StoreUnavailableError` (so a network partition during a
      shielded write cannot hang forever; a commit that timed out may have landed);
    - ``connect_timeout``: seconds to open a connection (and, with ``max_connections``,
      to wait for a free one);
    - ``max_connections``: the pool's limit (None: no limit). Unbounded, the hot path
      keeps the connections it used between calls; bounded, it lends each back after its
      command, so every path can reach the limit, and a command that finds every
      connection in use waits for one, at most ``connect_timeout`` seconds (then
      StoreUnavailableError, an outage the worker retries);
    - ``client_name``: the name every connection gives itself (``CLIENT SETNAME``), so an
      operator sees the store's connections in ``CLIENT LIST`` (None: unnamed).

    Each can be given to :meth:`RedisStore.open` (or ``open_store`` / ``Governance.open``)
    as a keyword argument or in the URL's query string (``?socket_timeout=2``). Named both
    ways an option must have the same value in both, compared typed (``?socket_timeout=2``
    and ``socket_timeout=2.0`` agree). Unknown or malformed options, and an option named
    both ways with different values, raise :class:`mutator.ConfigurationError`.
    """

    prefix: str = attrs.field(default="mutator", validator=_prefix)
    socket_timeout: float = attrs.field(default=10.0, validator=_seconds("socket_timeout"))
    connect_timeout: float = attrs.field(default=5.0, validator=_seconds("connect_timeout"))
    max_connections: int | None = attrs.field(default=None, validator=_max_connections)
    client_name: str | None = attrs.field(default=None, validator=_client_name)

    @classmethod
    def from_text(cls, values: Mapping[str, str], given: Mapping[str, Any]) -> RedisOptions:
        """Options from URL query ``values`` (text) and keyword arguments ``given``.

        An option named in both must have the same value in both once typed; different
        values raise ConfigurationError naming the option and both values, as on every
        backend. Errors in the URL's parameters name :data:`URL_FORM`.
        """
        names = {field.name for field in attrs.fields(cls)}
        for source, named in ((f"; expected {URL_FORM}", values), ("", given)):
            for name in named:
                if name not in names:
                    raise ConfigurationError(
                        f"unknown Redis store option {name!r}; "
                        f"accepted: {', '.join(sorted(names))}{source}"
                    )

        typed = functools.partial(typed_alone, cls)

        def from_url(name: str, text: str) -> Any:
            try:
                if name in ("socket_timeout", "connect_timeout"):
                    value: Any = float(text)
                elif name == "max_connections":
                    value = None if text.lower() in ("", "none") else int(text)
                else:
                    value = text
            except ValueError:
                raise ConfigurationError(
                    f"Redis URL parameter {name}={text!r} is malformed; expected {URL_FORM}"
                ) from None
            try:
                return typed(name, value)
            except ConfigurationError as error:
                raise ConfigurationError(f"{error}; expected {URL_FORM}") from None

        return cls(**one_value_each("Redis", values, given, from_text=from_url, from_keyword=typed))


@attrs.frozen
class _Target:
    """Where to connect, parsed and checked before any connection is made."""

    tls: bool
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    query: dict[str, str]
    unix_socket: str | None = None
    """The socket's path for ``unix://`` (then ``host`` and ``port`` are unused)."""


_DATABASE = re.compile(r"[0-9]+")
_MAX_DATABASE: Final = 2**31 - 1
"""The largest database number Redis reads (``SELECT`` takes a 32-bit int)."""


def _parse_url(url: str) -> _Target:
    """The connection target of ``url``; ConfigurationError naming :data:`URL_FORM`.

    The URL is read as redis-py's ``from_url`` reads it: ``redis://``, ``rediss://``
    (TLS) and ``unix:///path/to/socket``; user and password percent-decoded, also as
    ``?username=`` / ``?password=``; the database as the path (``/3``) or ``?db=3``.
    Where redis-py lets one source win, a part named twice with two values (``/3?db=4``,
    a password in the user part and in the query) is refused instead.
    """
    shown = redact_url(url) if isinstance(url, str) else repr(url)

    def refuse(problem: str) -> NoReturn:
        raise ConfigurationError(f"invalid Redis URL {shown!r}: {problem}; expected {URL_FORM}")

    if not isinstance(url, str):
        refuse("not a string")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        refuse(str(error))
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        refuse(f"unsupported scheme {parts.scheme!r}")
    if parts.fragment:
        refuse("a fragment is not allowed")
    query: dict[str, str] = {}
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        refuse("malformed query: each part is name=value")
    for name, value in pairs:
        if name in query:
            refuse(f"parameter {name!r} given twice")
        query[name] = value
    socket_path: str | None = None
    if scheme == "unix":
        socket_path = unquote(parts.path)
        if parts.hostname or port is not None or not socket_path.startswith("/"):
            refuse("a unix:// URL names the server's socket by its absolute path, no host")
        path = ""
    elif not parts.hostname:
        refuse("no host")
    else:
        path = parts.path.strip("/")
    databases = [text for text in (path, query.pop("db", None)) if text]
    for text in databases:
        if not _DATABASE.fullmatch(text):
            refuse(f"database {text!r} is not a number")
        if int(text) > _MAX_DATABASE:
            refuse(f"database {text} is out of range (0 to {_MAX_DATABASE})")
    if len({int(text) for text in databases}) > 1:
        refuse("the database is given twice, as the path and as ?db=, with two values")
    named = {
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password is not None else None,
    }
    for name, in_user_part in list(named.items()):
        if name in query:
            given = query.pop(name)
            if in_user_part is not None and given != in_user_part:
                refuse(f"the {name} is given twice, before '@' and as ?{name}=, with two values")
            named[name] = given
    return _Target(
        tls=scheme == "rediss",
        host=parts.hostname or "",
        port=6379 if port is None else port,
        db=int(databases[0]) if databases else 0,
        username=named["username"] or None,
        password=named["password"],
        query=query,
        unix_socket=socket_path,
    )


# -- the shared backend ------------------------------------------------------------------------


class _Guard:
    """The context manager of :meth:`_Backend.guard` (a class: cheaper than a generator).

    Connection failures, timeouts, read-only replicas, "cannot take this write now"
    replies (out of memory, a cluster down or resharding, a script busy) and refusals of
    this client (ACL) become StoreUnavailableError; any other error reply (a key of the
    wrong type, a script failing on what it read), StoredDataError at the key.
    """

    __slots__ = ("_b", "_key")

    def __init__(self, backend: _Backend, key: str | None) -> None:
        self._b = backend
        self._key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        if error is None or not isinstance(
            error, redis.exceptions.RedisError | ConnectionError | TimeoutError
        ):
            return
        if (
            isinstance(error, redis.exceptions.ResponseError)
            and not isinstance(error, _UNAVAILABLE_ERRORS)
            and not str(error).startswith(_UNAVAILABLE_REPLIES)
        ):
            raise StoredDataError(
                f"Redis refused the command: {error}", backend=BACKEND, key=self._key
            ) from error
        raise self._b.unavailable(error) from error


class _Backend:
    """What every component shares: the client, keyspace, codec and error mapping."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: RedisKeyspace,
        registry: MutationRegistry,
        url: str,
        *,
        keep_connections: bool = True,
    ) -> None:
        self.client = client
        self.keys = keys
        self.registry = registry
        self.url = url
        self.wire = Wire(client.connection_pool, keep=keep_connections)
        self.documents = RequestDocuments(registry)
        # The commit script's leading KEYS and ARGV (see _redis_scripts.COMMIT), packed once.
        self.script = Evalsha(
            scripts.COMMIT,
            keys=[
                keys.decision_seq,
                keys.recent(),
                keys.ready(revalidation=False),
                keys.ready(revalidation=True),
                keys.reserved,
                keys.segments,
                keys.due,
            ],
            args=[keys.ready_channel, _SCHEMA],
        )
        self.reserve_script = Evalsha(scripts.RESERVE)
        self.unreserve_script = Evalsha(scripts.UNRESERVE)
        self.purge_script = Evalsha(scripts.PURGE)
        self.upgrade_script = Evalsha(scripts.UPGRADE_REQUEST)
        self.due_fix_script = Evalsha(scripts.DUE_FIX)
        self.upgrade_due_script = Evalsha(scripts.UPGRADE_DUE)
        self.has_zmscore = True
        """Whether the server has ``ZMSCORE`` (6.2+); :func:`_check_server` finds out."""

    def guard(self, key: str | None = None) -> _Guard:
        """Turn driver errors into StoreUnavailableError or StoredDataError (at ``key``)."""
        return _Guard(self, key)

    def unavailable(self, error: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"Redis is unavailable: {type(error).__name__}: {error}", url=self.url
        )

    async def call(self, *command: Any) -> Any:
        """One command on the hot path (:class:`._redis_wire.Wire`), its raw RESP2 reply.

        Errors are raised as redis-py's; a connection whose reply was not read whole
        (cancelled, timed out, dropped) is disconnected, never reused.
        """
        return await self.wire.call(pack(command))

    async def evalsha(
        self, script: Evalsha, keys: Sequence[str | bytes], args: Sequence[str | bytes]
    ) -> Any:
        """One call of ``script`` (after its fixed keys and arguments), loading it again if
        the server forgot it.

        A ``NOSCRIPT`` reply means nothing ran, so the same packed command is sent again
        once the script is loaded.
        """
        packed = script.pack(keys, args)
        with self.guard():
            try:
                return await self.wire.call(packed)
            except redis.exceptions.NoScriptError:
                await self.call("SCRIPT", "LOAD", script.source)
                return await self.wire.call(packed)

    async def run(self, keys: Sequence[str | bytes], args: Sequence[str | bytes]) -> Any:
        """One call of the commit script (see :mod:`._redis_scripts`), given the keys and
        arguments that follow its fixed ones."""
        reply = await self.evalsha(self.script, keys, args)
        if int(reply[0]) != 1:
            what = _text(reply[1])
            if what == "type":
                raise StoredDataError(
                    f"holds a {_text(reply[3])}, expected a {_text(reply[4])} (nothing was "
                    "written)",
                    backend=BACKEND,
                    key=_text(reply[2]),
                )
            if what == "data":
                raise StoredDataError(
                    f"{_text(reply[4])} (nothing was written)",
                    backend=BACKEND,
                    key=_text(reply[2]),
                    field=_text(reply[3]) or None,
                )
        return reply

    # -- documents ---------------------------------------------------------------------

    def dump(self, kind: str, data: Any) -> bytes:
        """UTF-8 JSON of ``{"schema": ..., kind: data}`` (the registry's encodable text)."""
        return self.wrap(kind, self.registry.dumps(data).encode("utf-8"))

    @staticmethod
    def wrap(kind: str, encoded: bytes) -> bytes:
        """``{"schema": ..., kind: <encoded JSON>}`` without encoding the payload again."""
        return b'{"schema":%d,"%s":%s}' % (_DOCUMENT_SCHEMA, kind.encode(), encoded)

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
        if schema > _DOCUMENT_SCHEMA:
            raise StoredDataError(
                f"written with schema {schema}; this version reads up to {_DOCUMENT_SCHEMA} "
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

    def request_from(self, raw: bytes | str, key: str, request_id: str) -> MutationRequest:
        """The request stored at ``key``, which must be ``request_id``'s."""
        data = self.load(raw, "request", key=key, field="document")
        request: MutationRequest = self.structured(
            lambda d: self.registry.structure_request(d, where="request"),
            data,
            key=key,
            field="document",
        )
        if request.request_id != request_id:
            raise StoredDataError(
                f"holds request {request.request_id!r}, not {request_id!r}",
                backend=BACKEND,
                key=key,
                field="document.request_id",
                request_id=request_id,
            )
        return request

    def state_from(
        self, key: str, raw: bytes | None, version: bytes | None, request_id: bytes | None
    ) -> VersionedState[Any] | None:
        """The state of a state hash's fields (None when it has no document)."""
        if raw is None:
            return None
        if version is None:
            raise StoredDataError("state has no version", backend=BACKEND, key=key, field="version")
        text = _text(version)
        if _COUNTER.match(text) is None:
            raise StoredDataError(
                f"version {text!r} is not a decimal counter",
                backend=BACKEND,
                key=key,
                field="version",
            )
        data = self.load(raw, "state", key=key, field="document")
        state = self.structured(
            lambda d: self.registry.structure_value(d, where="state"),
            data,
            key=key,
            field="document",
        )
        return VersionedState(state, text, None if request_id is None else _text(request_id))

    def decision_from(self, raw: bytes | str, key: str) -> RequestDecision:
        data = self.load(raw, "decision", key=key, field=None)
        decision: RequestDecision = self.structured(
            lambda d: self.registry.structure_decision(d, where="decision"),
            data,
            key=key,
            field=None,
        )
        return decision

    # -- script arguments ----------------------------------------------------------------

    def decision_args(
        self,
        request_id: str,
        decisions: Sequence[RequestDecision],
    ) -> tuple[list[str], list[str | bytes]]:
        """The per-decision KEYS and ARGV of a script section (each decision's JSON is
        the one its request's document was written with, see :class:`RequestDocuments`)."""
        keys: list[str] = []
        owner = self.registry.dumps(request_id).encode()
        args: list[str | bytes] = [str(len(decisions)), owner]
        documents = self.documents
        for decision in decisions:
            sequence = decision.sequence
            if type(sequence) is not int or sequence < 1:
                raise ValueError(
                    f"decision {decision} of request {request_id!r} has no sequence number "
                    f"(sequence {sequence!r}; decisions are numbered from 1)"
                )
            encoded = documents.decision(decision).encode("utf-8")
            keys.append(self.keys.recent(decision.category))
            args += [str(sequence), encoded, _stamp(decision.timestamp)]
        return keys, args

    def section(
        self,
        mode: str,
        request_id: str,
        request: MutationRequest | None,
        expected: int | None,
        decisions: Sequence[RequestDecision],
    ) -> tuple[list[str], list[str | bytes]]:
        """The KEYS and ARGV of one script section (``mode`` create, update or log)."""
        request_key = self.keys.request(request_id)
        logs = [self.keys.decisions(request_id), self.keys.decision_members(request_id)]
        if request is None:
            keys = [request_key, *logs]
            args: list[str | bytes] = [mode, "", "", "", "", "", "", "0", "", "0"]
        else:
            document = self.wrap("request", self.documents.request(request)[0].encode("utf-8"))
            indexes = self.keys.request_indexes(request)
            updated = self.keys.updated_indexes(request)
            keys = [request_key, *logs, *indexes, *updated]
            args = [
                mode,
                "" if expected is None else str(expected),
                str(request.revision),
                document,
                _member(request.created_at, request_id),
                escape_segment(request_id),
                _due_member(request),
                str(len(indexes)),
                _member(request.updated_at, request_id) if updated else b"",
                str(len(updated)),
            ]
        decision_keys, decision_args = self.decision_args(request_id, decisions)
        return keys + decision_keys, args + decision_args

    def state_args(self, write: StateWrite | None) -> tuple[list[str], list[str | bytes]]:
        if write is None:
            return [], ["0"]
        keys = [self.keys.state(write.state_id), self.keys.produced(write.state_id)]
        document = self.dump("state", self.registry.unstructure_value(write.state))
        args: list[str | bytes] = [
            "1",
            "0" if write.expected_version is None else "1",
            write.expected_version or "",
            write.new_version,
            document,
            _raw(write.request_id or ""),
        ]
        return keys, args


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    return str(value)


def _raw(text: str) -> bytes:
    """``text`` as UTF-8, lone surrogates kept (ids are arbitrary Python strings)."""
    return text.encode("utf-8", "surrogatepass")


def _fail(
    reply: Sequence[Any],
    *,
    request_ids: Sequence[str],
    revisions: Sequence[int | None],
    state: StateWrite | None,
) -> NoReturn:
    """Raise the error a script's failure reply describes."""
    what = _text(reply[1])
    position = int(reply[2])
    exists = int(reply[3]) == 1
    actual = _text(reply[4])
    if what == "exists":
        raise RequestAlreadyExistsError(request_ids[position - 1])
    if what == "request":
        request_id = request_ids[position - 1]
        if not exists:
            raise RequestNotFoundError(request_id)
        expected_revision = revisions[position - 1]
        raise RequestConcurrencyError(request_id, expected_revision or 0, int(actual))
    assert state is not None, reply
    if what == "produced":
        raise ConcurrencyError(
            f"request {state.request_id!r} already produced version {actual!r} of state "
            f"{state.state_id!r}; a request produces at most one version",
            key=state.state_id,
            expected=state.expected_version,
            actual=actual,
        )
    actual_version = actual if exists else None
    raise ConcurrencyError(
        f"state {state.state_id!r} is at version {actual_version!r}, "
        f"expected {state.expected_version!r}",
        key=state.state_id,
        expected=state.expected_version,
        actual=actual_version,
    )


async def _write(
    b: _Backend,
    requests: Sequence[RequestWrite],
    state: StateWrite | None = None,
    entries: Sequence[tuple[str, bytes]] = (),
    *,
    log_only: tuple[str, Sequence[RequestDecision]] | None = None,
) -> tuple[MutationRequest, ...]:
    """One script call writing ``requests``, ``state`` and list ``entries`` (key, document)."""
    stored, _ = await _script(b, requests, state, entries, log_only=log_only)
    return stored


async def _script(
    b: _Backend,
    requests: Sequence[RequestWrite],
    state: StateWrite | None = None,
    entries: Sequence[tuple[str, bytes]] = (),
    *,
    log_only: tuple[str, Sequence[RequestDecision]] | None = None,
    read: str | None = None,
) -> tuple[tuple[MutationRequest, ...], Any]:
    """:func:`_write`, reading the hash at key ``read`` back after the writes; the reply."""
    keys: list[str | bytes] = []
    args: list[str | bytes] = [str(len(requests) + (log_only is not None))]
    stored: list[MutationRequest] = []
    for write in requests:
        request = write.request
        revision = write.stored_revision
        if request.revision != revision:
            request = attrs.evolve(request, revision=revision)
        mode = "create" if write.expected_revision is None else "update"
        section_keys, section_args = b.section(
            mode, request.request_id, request, write.expected_revision, write.new_decisions
        )
        keys += section_keys
        args += section_args
        stored.append(request)
    if log_only is not None:
        section_keys, section_args = b.section("log", log_only[0], None, None, log_only[1])
        keys += section_keys
        args += section_args
    state_keys, state_args = b.state_args(state)
    keys += state_keys
    args += state_args
    args.append(str(len(entries)))
    previous = None
    for key, document in entries:
        keys.append(key)
        args.append(b"" if document is previous else document)
        previous = document
    if read is None:
        args.append("0")
    else:
        keys.append(read)
        args.append("1")
    reply = await b.run(keys, args)
    if int(reply[0]) != 1:
        _fail(
            reply,
            request_ids=[w.request.request_id for w in requests],
            revisions=[w.expected_revision for w in requests],
            state=state,
        )
    return tuple(stored), reply


async def _request_rows(
    b: _Backend, request_keys: Sequence[str], ids: Sequence[str], fields: Sequence[str]
) -> tuple[list[Any], list[Any]]:
    """``fields`` of each request hash and whether each id is quarantined, in one round trip.

    A request key holding another type gives a StoredDataError in place of its row (so
    the caller quarantines it); any other error is raised.
    """
    with b.guard():
        async with b.client.pipeline(transaction=False) as pipe:
            for key in request_keys:
                pipe.hmget(key, list(fields))
            pipe.hmget(b.keys.quarantine, [_raw(request_id) for request_id in ids])
            *rows, held = await pipe.execute(raise_on_error=False)
    with b.guard(b.keys.quarantine):
        if isinstance(held, Exception):
            raise held
    out: list[Any] = []
    for key, request_id, row in zip(request_keys, ids, rows, strict=True):
        if isinstance(row, redis.exceptions.ResponseError) and str(row).startswith("WRONGTYPE"):
            row = StoredDataError(
                f"not a request hash: {row}", backend=BACKEND, key=key, request_id=request_id
            )
        elif isinstance(row, Exception):
            with b.guard(key):
                raise row
        out.append(row)
    return out, held


async def _quarantine(b: _Backend, bad: Sequence[tuple[str, StoredDataError]]) -> int:
    """Record ``bad`` rows (id, why), dropping their reservations; log the new ones.

    Returns how many were newly quarantined.
    """
    key = b.keys.quarantine
    detected = datetime.now(UTC)
    with b.guard(key):
        async with b.client.pipeline(transaction=False) as pipe:
            for request_id, error in bad:
                entry = {
                    "field": error.field,
                    "error": str(error),
                    "detected_at": detected.isoformat(),
                }
                pipe.hsetnx(key, _raw(request_id), b.dump("quarantine", entry))
                pipe.hdel(b.keys.reserved, _raw(request_id))
            added = (await pipe.execute())[::2]
    fresh = 0
    for (request_id, error), new in zip(bad, added, strict=True):
        if new:
            fresh += 1
            quarantine_entry(request_id, error, detected)
    return fresh


# -- requests ------------------------------------------------------------------------------

_UPDATED_MAX: Final = 20_000
"""A query bounding ``updated_at`` reads the updated-at window when it holds at most this
many requests (and fewer than any indexed dimension); a broader window is walked in
created-at order like any other query."""
_FILTERED_BATCH: Final = 1024
"""The largest batch of index members walked per round trip when other dimensions filter
them (``ZMSCORE`` before any document is read)."""
_MEMBER_BATCH: Final = 2048
"""Request hashes asked for their index member per round trip."""


@attrs.frozen
class _Plan:
    """A listing's source (the union of ``keys``, or ``members`` already in index order)
    and the indexed dimensions each walked member must also be in."""

    keys: tuple[str, ...]
    filters: tuple[tuple[str, ...], ...] = ()
    members: tuple[bytes, ...] | None = None


def _updated_window(query: RequestQuery) -> tuple[bytes, bytes] | None:
    """The lex range of the updated-at sets ``query`` bounds, or None when unbounded."""
    if query.updated_from is None and query.updated_to is None:
        return None
    low = b"-" if query.updated_from is None else b"[" + _stamp(query.updated_from).encode()
    high = b"+" if query.updated_to is None else _through(query.updated_to)
    return low, high


async def _within(
    members: Sequence[bytes], low: bytes, high: bytes, batch: int
) -> AsyncIterator[builtins.list[bytes]]:
    """The sorted ``members`` within the lex range (``-``/``+``, ``[x``, ``(x``), in batches."""
    start = 0
    if low != b"-":
        bound = low[1:]
        position = bisect.bisect_left(members, bound)
        if low[:1] == b"(" and position < len(members) and members[position] == bound:
            position += 1
        start = position
    end = len(members)
    if high != b"+":
        bound = high[1:]
        end = (
            bisect.bisect_left(members, bound)
            if high[:1] == b"("
            else bisect.bisect_right(members, bound)
        )
    for index in range(start, end, batch):
        yield list(members[index : min(index + batch, end)])


class RedisRequestStore:
    """Requests as hashes with a JSON document, indexed by zero-score sorted sets.

    Also a :class:`~mutator_governance.ReadyQueue` (the ready sets, one script per batch),
    a :class:`~mutator_governance.ReadySignal` (pub/sub on its own connection), a
    :class:`~mutator_governance.QuarantineLog` (a hash of unreadable request ids) and a
    :class:`~mutator_governance.RequestPurger` (one script per batch, decisions included).
    """

    def __init__(self, backend: _Backend) -> None:
        self._b = backend
        self._listener = _ReadyListener(backend)

    async def create(self, request: MutationRequest) -> MutationRequest:
        (stored,) = await _write(self._b, [RequestWrite(request, None, ())])
        return stored

    async def replace(self, request: MutationRequest, *, expected_revision: int) -> MutationRequest:
        (stored,) = await _write(self._b, [RequestWrite(request, expected_revision, ())])
        return stored

    async def get(self, request_id: str) -> MutationRequest | None:
        """The request, or None (StoredDataError when it cannot be read; it is then
        quarantined, as a listing would)."""
        key = self._b.keys.request(check_key("request_id", request_id))
        with self._b.guard(key):
            raw = await self._b.call("HGET", key, "document")
        if raw is None:
            return None
        try:
            return self._b.request_from(raw, key, request_id)
        except StoredDataError as error:
            with contextlib.suppress(StoreUnavailableError):  # the next read records it
                await self._quarantine([(request_id, error)])
            raise

    async def by_state(self, state_id: str) -> Sequence[MutationRequest]:
        check_key("state_id", state_id)
        return await self._select(RequestQuery(state_ids={state_id}), None, None)

    async def pending(
        self, reason: PendingReason | None = None, *, state_id: str | None = None
    ) -> Sequence[MutationRequest]:
        reason = pending_reason(reason)
        query = RequestQuery(
            statuses={RequestStatus.PENDING},
            pending_reasons={reason} if reason is not None else (),
            state_ids={state_id} if state_id is not None else (),
        )
        return await self._select(query, None, None)

    async def list(
        self, query: RequestQuery | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> RequestPage:
        query = listing(query, limit)
        after = decode_cursor(cursor) if cursor is not None else None
        if query.request_ids and len(query.request_ids) <= _BATCH:
            found = await self._named(query, after)
        else:
            found = await self._select(query, limit + 1, after)
        items = found[:limit]
        more = len(found) > limit
        return RequestPage(items, encode_cursor(items[-1]) if more and items else None)

    # -- the worker's seams --------------------------------------------------------------

    async def reserve(
        self,
        *,
        owner: str,
        limit: int,
        now: datetime,
        until: datetime,
        revalidation: bool = False,
    ) -> Sequence[MutationRequest]:
        """Reserve up to ``limit`` ready requests, oldest first: one script per call.

        The script walks the ready set(s) from the oldest member, so its cost follows the
        requests handed out and those reserved by others, never the terminal rows. A
        returned row that cannot be read is quarantined and the script runs again for
        the places it took (at most once per newly quarantined row).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        keys = self._b.keys
        chosen: builtins.list[MutationRequest] = []
        while True:
            reply = await self._b.evalsha(
                self._b.reserve_script,
                [
                    keys.ready(revalidation=False),
                    keys.ready(revalidation=True),
                    keys.reserved,
                    keys.quarantine,
                    keys.segments,
                ],
                [
                    _stamp(now),
                    _stamp(until),
                    str(limit - len(chosen)),
                    "1" if revalidation else "0",
                    keys.prefix,
                    _raw(owner),
                ],
            )
            pairs = reply[1:]
            bad: builtins.list[tuple[str, StoredDataError]] = []
            for raw_id, raw in zip(pairs[::2], pairs[1::2], strict=True):
                request_id = _text(raw_id)
                key = keys.request(request_id)
                try:
                    if raw is None:
                        raise StoredDataError(
                            "ready request has no document",
                            backend=BACKEND,
                            key=key,
                            field="document",
                        )
                    request = self._b.request_from(raw, key, request_id)
                except StoredDataError as error:
                    bad.append((request_id, error))
                    continue
                if request.status is RequestStatus.APPROVED or (
                    revalidation
                    and request.status is RequestStatus.PENDING
                    and request.pending_reason is PendingReason.REVALIDATION
                ):
                    chosen.append(request)
            if not bad or not await self._quarantine(bad) or until <= now:
                return chosen
            if len(chosen) >= limit:
                return chosen

    async def unreserve(self, *, owner: str, request_ids: Sequence[str]) -> int:
        """Clear ``owner``'s reservations on ``request_ids``: one script call.

        :data:`._redis_scripts.UNRESERVE` deletes the entries of the reservation hash whose
        recorded owner is ``owner``; a write that makes a request stop being ready has
        already deleted its entry. See :class:`~mutator_governance.ReservationRelease`.
        """
        ids = [_raw(request_id) for request_id in dict.fromkeys(request_ids)]
        if not ids:
            return 0
        keys = self._b.keys
        reply = await self._b.evalsha(
            self._b.unreserve_script, [keys.reserved], [_raw(owner), *ids]
        )
        return int(reply)

    async def due(self, *, now: datetime, limit: int) -> Sequence[MutationRequest]:
        """Up to ``limit`` PENDING requests due at ``now``, by deadline then id (an ExpiryIndex).

        Reads the expiry set up to ``now`` and only the requests it names, so a sweep's cost
        follows what is due, never the approval backlog. A member that disagrees with its
        request (gone, no longer PENDING, another deadline) is set right by
        :data:`._redis_scripts.DUE_FIX` under the revision read and not returned; an
        unreadable request is quarantined and skipped, a quarantined one skipped unread.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        key = self._b.keys.due
        low, high = b"-", _through(now)
        found: builtins.list[MutationRequest] = []
        while len(found) < limit:
            want = min(limit - len(found), _BATCH)
            with self._b.guard(key):
                members = await self._b.call("ZRANGEBYLEX", key, low, high, "LIMIT", 0, want)
            if members:
                found += await self._due_rows(members)
            if len(members) < want:
                break
            low = b"(" + members[-1]
        return found

    async def _due_rows(self, members: Sequence[bytes]) -> builtins.list[MutationRequest]:
        """The requests of expiry ``members`` that agree with them, in order.

        Stale members are set right (see :meth:`due`); unreadable requests quarantined.
        """
        b = self._b
        ids = [member[_ID_AT:].decode("utf-8", "surrogatepass") for member in members]
        request_keys = [b.keys.request(request_id) for request_id in ids]
        rows, held = await _request_rows(b, request_keys, ids, ("document", "revision"))
        requests: builtins.list[MutationRequest] = []
        bad: builtins.list[tuple[str, StoredDataError]] = []
        stale: builtins.list[tuple[str, bytes, bytes, bytes]] = []
        for index, (request_id, key, member, row, quarantined) in enumerate(
            zip(ids, request_keys, members, rows, held, strict=True)
        ):
            await pace(index)  # a long batch never holds the loop
            if quarantined is not None:
                continue
            if isinstance(row, StoredDataError):
                bad.append((request_id, row))
                continue
            raw, revision = row
            if raw is None and revision is None:
                stale.append((key, b"", member, b""))  # the request is gone
                continue
            try:
                if raw is None:
                    raise StoredDataError(
                        "pending request has no document",
                        backend=BACKEND,
                        key=key,
                        field="document",
                        request_id=request_id,
                    )
                request = b.request_from(raw, key, request_id)
            except StoredDataError as error:
                bad.append((request_id, error))
                continue
            right = _due_member(request)
            if right != member:
                stale.append((key, revision or b"", member, right))
                continue
            requests.append(request)
        for key, revision, member, right in stale:
            await b.evalsha(b.due_fix_script, [key, b.keys.due], [revision, member, right])
        if bad:
            await self._quarantine(bad)
        return requests

    async def wait_ready(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a commit that left a request ready (any process).

        Listens on the store's ready channel on a dedicated connection that stays
        subscribed between calls, so a signal published between two calls wakes the next
        one at once. A lost connection returns False (logged once at WARNING). A call that
        (re)connects returns True at once: signals published while nobody listened are
        lost, so the caller should look. Several tasks may wait at once: a signal wakes
        them all.
        """
        return await self._listener.wait(seconds)

    async def quarantined(self) -> Sequence[QuarantinedRequest]:
        """Every quarantined request, oldest detection first."""
        key = self._b.keys.quarantine
        with self._b.guard(key):
            entries = await self._b.client.hgetall(key)
        found: builtins.list[QuarantinedRequest] = []
        for raw_id, raw in entries.items():
            request_id = _text(raw_id)
            data = self._b.load(raw, "quarantine", key=key, field=request_id)
            try:
                found.append(
                    QuarantinedRequest(
                        request_id,
                        BACKEND,
                        data["field"],
                        data["error"],
                        datetime.fromisoformat(data["detected_at"]),
                    )
                )
            except (KeyError, TypeError, ValueError) as error:
                raise StoredDataError(
                    f"not a quarantine entry: {error}", backend=BACKEND, key=key, field=request_id
                ) from error
        found.sort(key=lambda e: (e.detected_at, e.request_id))
        return found

    async def release(self, request_id: str) -> bool:
        """Take ``request_id`` out of quarantine; True when it was quarantined."""
        key = self._b.keys.quarantine
        with self._b.guard(key):
            return bool(await self._b.call("HDEL", key, _raw(request_id)))

    async def _quarantine(self, bad: Sequence[tuple[str, StoredDataError]]) -> int:
        """Record ``bad`` rows (id, why), dropping their reservations; log the new ones.

        Returns how many were newly quarantined.
        """
        return await _quarantine(self._b, bad)

    async def purge(
        self, *, before: datetime, statuses: frozenset[RequestStatus], limit: int
    ) -> PurgeBatch:
        """Delete up to ``limit`` purgeable requests with their decisions, in one script.

        Walks the updated-at sets of ``statuses`` from the oldest; each deleted request
        leaves every index, its decision log (counted) and its recent-decision members.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        keys = self._b.keys
        chosen = sorted(terminal_statuses(statuses), key=lambda s: s.value)
        reply = await self._b.evalsha(
            self._b.purge_script,
            [
                keys.reserved,
                keys.quarantine,
                keys.segments,
                keys.recent(),
                keys.due,
                *(keys.updated(status) for status in chosen),
            ],
            [_stamp(before), str(limit), keys.prefix],
        )
        return PurgeBatch(tuple(_text(i) for i in reply[1]), int(reply[0]))

    # -- query execution -----------------------------------------------------------------

    async def _route(self, query: RequestQuery) -> _Plan:
        """Where the matches of ``query`` are read from: the smallest source, the other
        indexed dimensions as membership filters.

        Sources are each indexed dimension (the union of its value sets) and, for a query
        bounding ``updated_at``, the terminal requests updated in that window (the
        updated-at sets) plus every non-terminal request (no set orders those by
        ``updated_at``; they are the open work, never the backlog).
        """
        keys = self._b.keys
        options: builtins.list[tuple[str, ...]] = []
        if query.statuses:
            options.append(tuple(keys.index("status", s.value) for s in query.statuses))
        if query.pending_reasons:
            options.append(tuple(keys.index("reason", r.value) for r in query.pending_reasons))
        if query.state_ids:
            options.append(tuple(keys.index("state", s) for s in query.state_ids))
        if query.actor_ids:
            options.append(tuple(keys.index("actor", a) for a in query.actor_ids))
        if query.mutation_types:
            options.append(tuple(keys.index("type", t) for t in query.mutation_types))
        window = _updated_window(query)
        if not options and window is None:
            return _Plan((keys.index_all,))
        if len(options) == 1 and window is None:
            return _Plan(options[0])
        statuses = sorted(query.statuses or RequestStatus, key=lambda s: s.value)
        terminal = [keys.updated(s) for s in statuses if s.is_terminal]
        open_sets = [keys.index("status", s.value) for s in statuses if not s.is_terminal]
        with self._b.guard():
            async with self._b.client.pipeline(transaction=False) as pipe:
                for option in options:
                    for key in option:
                        pipe.zcard(key)
                if window is not None:
                    for key in terminal:
                        pipe.zlexcount(key, *window)
                    for key in open_sets:
                        pipe.zcard(key)
                sizes = iter(await pipe.execute())
        totals = [sum(int(next(sizes)) for _ in option) for option in options]
        by_updated = sum(int(size) for size in sizes) if window is not None else None
        smallest = min(totals) if totals else None
        if (
            window is not None
            and by_updated is not None
            and by_updated <= _UPDATED_MAX
            and (smallest is None or by_updated < smallest)
        ):
            members = await self._updated_members(window, terminal, open_sets)
            return _Plan((), tuple(options), members)
        if smallest is None:
            return _Plan((keys.index_all,))
        chosen = totals.index(smallest)
        return _Plan(options[chosen], tuple(options[:chosen] + options[chosen + 1 :]))

    async def _updated_members(
        self,
        window: tuple[bytes, bytes],
        terminal: Sequence[str],
        open_sets: Sequence[str],
    ) -> tuple[bytes, ...]:
        """The index members (created-at order) of the terminal requests updated within
        ``window`` and of every request in ``open_sets``."""
        b = self._b
        with b.guard():
            async with b.client.pipeline(transaction=False) as pipe:
                for key in terminal:
                    pipe.zrangebylex(key, *window)
                for key in open_sets:
                    pipe.zrangebylex(key, b"-", b"+")
                replies = await pipe.execute()
        updated = [member for reply in replies[: len(terminal)] for member in reply]
        found = [member for reply in replies[len(terminal) :] for member in reply]
        for start in range(0, len(updated), _MEMBER_BATCH):
            chunk = updated[start : start + _MEMBER_BATCH]
            with b.guard():
                async with b.client.pipeline(transaction=False) as pipe:
                    for member in chunk:
                        request_id = member[_ID_AT:].decode("utf-8", "surrogatepass")
                        pipe.hget(b.keys.request(request_id), "member")
                    found += [bytes(m) for m in await pipe.execute() if m is not None]
        return tuple(sorted(set(found)))

    async def _select(
        self,
        query: RequestQuery,
        want: int | None,
        after: tuple[datetime, str] | None,
    ) -> builtins.list[MutationRequest]:
        """Up to ``want`` matches of ``query`` after ``after``, in order.

        Walks the plan's source in index order; members missing from another indexed
        dimension are dropped by ``ZMSCORE`` before any document is read, so documents
        are read only for requests every index agrees on.
        """
        plan = await self._route(query)
        low = b"-"
        if query.created_from is not None:
            low = b"[" + _stamp(query.created_from).encode()
        if after is not None:
            position = _member(*after)
            if low == b"-" or position >= low[1:]:
                low = b"(" + position
        high = b"+"
        if query.created_to is not None:
            high = _through(query.created_to)
        batch = _BATCH if want is None else min(max(want, 16), _BATCH)
        found: builtins.list[MutationRequest] = []
        matches = query.predicate()
        if plan.members is not None:
            source = _within(plan.members, low, high, _BATCH)
        else:
            grow_to = _FILTERED_BATCH if plan.filters else 0
            source = self._scan(plan.keys, low, high, batch, grow_to)
        async for walked in source:
            members = await self._present(walked, plan.filters)
            for start in range(0, len(members), batch):
                for request in await self._fetch(members[start : start + batch]):
                    if matches(request):
                        found.append(request)
                        if want is not None and len(found) >= want:
                            return found
        return found

    async def _present(
        self, members: builtins.list[bytes], filters: Sequence[Sequence[str]]
    ) -> builtins.list[bytes]:
        """``members`` held by at least one set of every dimension in ``filters``."""
        if not filters or not members:
            return members
        with self._b.guard():
            async with self._b.client.pipeline(transaction=False) as pipe:
                for dimension in filters:
                    for key in dimension:
                        if self._b.has_zmscore:
                            pipe.execute_command("ZMSCORE", key, *members)
                        else:
                            for member in members:
                                pipe.zscore(key, member)
                raw = await pipe.execute()
        if not self._b.has_zmscore:  # one reply per member: regroup them per key
            raw = [raw[at : at + len(members)] for at in range(0, len(raw), len(members))]
        replies = iter(raw)
        keep = [True] * len(members)
        for dimension in filters:
            held = [False] * len(members)
            for _ in dimension:
                for index, score in enumerate(next(replies)):
                    if score is not None:
                        held[index] = True
            keep = [k and h for k, h in zip(keep, held, strict=True)]
        return [member for member, k in zip(members, keep, strict=True) if k]

    async def _scan(
        self, keys: Sequence[str], low: bytes, high: bytes, batch: int, grow_to: int = 0
    ) -> AsyncIterator[builtins.list[bytes]]:
        """Members of the union of ``keys`` within the lex range, in order, in batches
        (each four times the last, up to ``grow_to``, when that is larger)."""
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
            batch = max(batch, min(batch * 4, grow_to))

    async def _named(
        self, query: RequestQuery, after: tuple[datetime, str] | None
    ) -> builtins.list[MutationRequest]:
        """The matches of a query naming its request ids: read by key, not from an index."""
        keys = self._b.keys
        ids = sorted(query.request_ids)
        with self._b.guard():
            async with self._b.client.pipeline(transaction=False) as pipe:
                for request_id in ids:
                    pipe.hget(keys.request(request_id), "member")
                found = await pipe.execute()
        members = sorted(bytes(member) for member in found if member is not None)
        if after is not None:
            position = _member(*after)
            members = [m for m in members if m > position]
        if not members:
            return []
        return [r for r in await self._fetch(members) if query.matches(r)]

    async def _fetch(self, members: Sequence[bytes]) -> builtins.list[MutationRequest]:
        """The readable requests of index ``members``, in order; the others quarantined.

        Quarantined ids are skipped unread. A member without a document was purged after
        the index was read, unless the index still holds it (then it is an orphan, and
        quarantined like an unreadable document).
        """
        keys = self._b.keys
        ids = [member[_ID_AT:].decode("utf-8", "surrogatepass") for member in members]
        request_keys = [keys.request(request_id) for request_id in ids]
        with self._b.guard():
            async with self._b.client.pipeline(transaction=False) as pipe:
                for key in request_keys:
                    pipe.hget(key, "document")
                pipe.hmget(keys.quarantine, [_raw(request_id) for request_id in ids])
                *raws, held = await pipe.execute()
        requests: builtins.list[MutationRequest] = []
        bad: builtins.list[tuple[str, StoredDataError]] = []
        missing: builtins.list[tuple[str, str, bytes]] = []
        for index, (request_id, key, raw, member, quarantined) in enumerate(
            zip(ids, request_keys, raws, members, held, strict=True)
        ):
            await pace(index)  # a long batch never holds the loop
            if quarantined is not None:
                continue
            if raw is None:
                missing.append((request_id, key, member))
                continue
            try:
                request = self._b.request_from(raw, key, request_id)
                if _member(request.created_at, request_id) != member:
                    raise StoredDataError(
                        f"indexed under created_at {_text(member[:_STAMP_WIDTH])} but the "
                        f"document says {request.created_at.isoformat()}",
                        backend=BACKEND,
                        key=key,
                        field="document.created_at",
                        request_id=request_id,
                    )
            except StoredDataError as error:
                bad.append((request_id, error))
                continue
            requests.append(request)
        if missing:
            with self._b.guard():
                async with self._b.client.pipeline(transaction=False) as pipe:
                    for _, _, member in missing:
                        pipe.zscore(keys.index_all, member)
                    still = await pipe.execute()
            for (request_id, key, _), score in zip(missing, still, strict=True):
                if score is not None:
                    bad.append(
                        (
                            request_id,
                            StoredDataError(
                                "indexed request has no document (orphan index member)",
                                backend=BACKEND,
                                key=key,
                                field="document",
                                request_id=request_id,
                            ),
                        )
                    )
        if bad:
            await self._quarantine(bad)
        return requests


class _ReadyListener:
    """The ready channel's subscriber: one dedicated connection, kept between waits.

    Waiters take turns on the connection; a signal read by one also wakes every waiter
    that was queued behind it (``_signals`` counts the signals read).
    """

    def __init__(self, backend: _Backend) -> None:
        self._b = backend
        self._connection: Any = None
        self._warned = False
        self._signals = 0
        self._lock = asyncio.Lock()

    async def wait(self, seconds: float) -> bool:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(f"seconds must be a number >= 0, got {seconds!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        seen = self._signals
        try:
            async with asyncio.timeout(seconds):
                await self._lock.acquire()
        except TimeoutError:
            return self._signals != seen
        try:
            if self._signals != seen:
                return True
            return await self._wait(loop, deadline)
        finally:
            self._lock.release()

    async def _wait(self, loop: asyncio.AbstractEventLoop, deadline: float) -> bool:
        if self._connection is None or not self._connection.is_connected:
            try:
                async with asyncio.timeout(max(deadline - loop.time(), 0.1)):
                    await self._subscribe()
            except asyncio.CancelledError:
                await self._drop()
                raise
            except (redis.exceptions.RedisError, OSError, TimeoutError) as error:
                await self._lost(error)
                # Nobody to listen to: wait out the time like a timeout, never spin.
                await asyncio.sleep(max(deadline - loop.time(), 0.0))
                return False
            if self._warned:
                self._warned = False
                _log.info("ready channel of %s is back", self._b.keys.prefix)
            # Whatever was published before this subscription is lost: say "look".
            self._signals += 1
            return True
        woken = False
        try:
            while True:
                remaining = 0.0 if woken else max(deadline - loop.time(), 0.0)
                message = await self._connection.read_response(timeout=remaining, push_request=True)
                if message is None:
                    return woken
                if _is_signal(message) and not woken:
                    woken = True
                    self._signals += 1
        except asyncio.CancelledError:
            await self._drop()
            raise
        except (redis.exceptions.RedisError, OSError, TimeoutError) as error:
            await self._lost(error)
            return False  # at once: the caller polls, the next call reconnects

    async def _lost(self, error: BaseException) -> None:
        await self._drop()
        if not self._warned:
            self._warned = True
            _log.warning(
                "ready channel of %s lost (%s: %s); workers poll until it is back",
                self._b.keys.prefix,
                type(error).__name__,
                error,
            )

    async def _subscribe(self) -> None:
        pool = self._b.client.connection_pool
        connection = pool.connection_class(**pool.connection_kwargs)
        self._connection = connection
        await connection.connect()  # type: ignore[no-untyped-call]
        await connection.send_command("SUBSCRIBE", self._b.keys.ready_channel)
        while True:
            reply = await connection.read_response(push_request=True)
            if isinstance(reply, list) and _text(reply[0]) == "subscribe":
                return

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect()

    async def aclose(self) -> None:
        await self._drop()


def _is_signal(message: Any) -> bool:
    return isinstance(message, list) and len(message) == 3 and _text(message[0]) == "message"


# -- decisions ------------------------------------------------------------------------------


class RedisDecisionHistory:
    """Per-request logs hashed by sequence number, plus lex-ordered sets for the newest."""

    def __init__(self, backend: _Backend) -> None:
        self._b = backend

    async def append(self, request_id: str, decisions: Sequence[RequestDecision]) -> None:
        if not decisions:
            return
        await _write(self._b, (), log_only=(request_id, decisions))

    async def for_request(self, request_id: str) -> Sequence[RequestDecision]:
        key = self._b.keys.decisions(check_key("request_id", request_id))
        with self._b.guard(key):
            reply = await self._b.call("HGETALL", key)
        pairs = (
            reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
        )
        numbered: list[tuple[int, Any]] = []
        for field, raw in pairs:
            text = _text(field)
            if _COUNTER.match(text) is None or text == "0":
                raise StoredDataError(
                    "decision log field is not a sequence number",
                    backend=BACKEND,
                    key=key,
                    field=text,
                )
            numbered.append((int(text), raw))
        numbered.sort(key=lambda item: item[0])
        decisions: list[RequestDecision] = []
        for sequence, raw in numbered:
            decision = self._b.decision_from(raw, key)
            if decision.sequence != sequence:
                raise StoredDataError(
                    f"decision numbered {decision.sequence} is logged as {sequence}",
                    backend=BACKEND,
                    key=key,
                    field=f"{sequence}.sequence",
                )
            decisions.append(decision)
        return tuple(decisions)

    async def recent(
        self, limit: int = 50, *, category: DecisionCategory | None = None
    ) -> Sequence[DecisionRecord]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if limit == 0:
            return ()
        key = self._b.keys.recent(category)
        with self._b.guard(key):
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
                field="record.decision",
            )
            records.append(DecisionRecord(request_id, decision))
        return records


# -- states -----------------------------------------------------------------------------------


class RedisStateStore:
    """States as hashes (document, decimal version, producing request)."""

    def __init__(self, backend: _Backend) -> None:
        self._b = backend

    async def get(self, state_id: str) -> VersionedState[Any] | None:
        key = self._b.keys.state(check_key("state_id", state_id))
        with self._b.guard(key):
            raw, version, request_id = await self._b.call(
                "HMGET", key, "document", "version", "request_id"
            )
        return self._b.state_from(key, raw, version, request_id)

    async def put(
        self,
        state_id: str,
        state: Any,
        *,
        expected_version: str | None = None,
        request_id: str | None = None,
    ) -> str:
        check_id("state_id", state_id)
        check_version(expected_version)
        try:
            version = next_version(expected_version)
        except ValueError:
            version = ""  # no stored version is like this: the script's check fails
        write = StateWrite(state_id, state, expected_version, version, request_id or "")
        await _write(self._b, (), write)
        return version

    async def version_by_request(self, state_id: str, request_id: str) -> str | None:
        key = self._b.keys.produced(state_id)
        with self._b.guard(key):
            version = await self._b.call("HGET", key, _raw(request_id))
        return None if version is None else _text(version)


# -- audit and history ------------------------------------------------------------------------


def _audit_entries(b: _Backend, entry: AuditEntry) -> list[tuple[str, bytes]]:
    document = b.dump("entry", unstructure(b.registry.converter, entry))
    entries = [(b.keys.audit(), document)]
    if entry.state_id is not None:
        entries.append((b.keys.audit(entry.state_id), document))
    return entries


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


class RedisAuditSink:
    """Audit entries in a global list and per-state lists, oldest first."""

    def __init__(self, backend: _Backend) -> None:
        self._b = backend

    async def record(self, entry: AuditEntry) -> None:
        await _write(self._b, (), None, _audit_entries(self._b, entry))

    async def entries(
        self,
        state_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEntry]:
        key = self._b.keys.audit(state_id)
        with self._b.guard(key):
            raws = await self._b.client.lrange(key, 0, -1)
        entries = await paced(raws, lambda raw: _entry(self._b, raw, key, AuditEntry))
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
        await _write(self._b, (), None, [(key, _history_document(self._b, entry))])

    async def history(self, state_id: str) -> MutationHistory[Any]:
        check_key("state_id", state_id)
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
        with self._b.guard(key):
            raws = await self._b.client.lrange(key, start, end)
        return await paced(raws, lambda raw: _entry(self._b, raw, key, HistoryEntry))


# -- commit ------------------------------------------------------------------------------------


class RedisCommitter:
    """Every governance operation as one call of the commit script, all or nothing.

    Also a :class:`~mutator_governance.protocols.ReadingCommitter`: the script reads the
    state back after its writes, so a claim and the state it will change are one round trip.
    """

    atomic = True

    def __init__(self, backend: _Backend) -> None:
        self._b = backend

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        stored, _ = await self._run(commit, None)
        return stored

    async def commit_reading(
        self, commit: GovernedCommit, state_id: str
    ) -> tuple[tuple[MutationRequest, ...], VersionedState[Any] | None]:
        """Apply ``commit`` and read ``state_id``'s state in the same script call."""
        key = self._b.keys.state(state_id)
        stored, reply = await self._run(commit, key)
        return stored, self._b.state_from(key, reply[1], reply[2], reply[3])

    async def _run(
        self, commit: GovernedCommit, read: str | None
    ) -> tuple[tuple[MutationRequest, ...], Any]:
        b = self._b
        s = commit.state
        if s is not None and s.new_version != next_version(s.expected_version):
            raise ValueError(
                f"state version {s.new_version!r} does not follow {s.expected_version!r}: "
                "versions must be decimal counters (see next_version)"
            )
        entries = [
            (b.keys.history(entry.state_id), _history_document(b, entry))
            for entry in commit.history
        ]
        for record in commit.audit:
            entries += _audit_entries(b, record)
        return await _script(b, commit.requests, s, entries, read=read)


async def _keys_under(client: aioredis.Redis, prefix: str) -> list[str]:
    """A few keys under ``prefix:``, read before a store is created there (none: free).

    A prefix another application already uses would otherwise get a store whose every
    read and write then fails on keys of the wrong type. One SCAN of the database, once,
    when a store is created.
    """
    match = _GLOB.sub(r"\\\1", prefix) + ":*"
    cursor = 0
    while True:
        cursor, found = await client.scan(cursor, match=match, count=1000)
        if found:
            return [_text(key) for key in found[:3]]
        if cursor == 0:
            return []


# -- schema upgrade ----------------------------------------------------------------------------

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end"
_RENEW = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
)


async def _keep_upgrade_lock(b: _Backend, token: str) -> None:
    """Renew the upgrade lock ``token`` holds until cancelled (see :data:`_UPGRADE_LEASE`).

    An outage ends the renewal quietly: the upgrade's own commands fail then too.
    """
    keys, client = b.keys, b.client
    lease = int(_UPGRADE_LEASE * 1000)
    with contextlib.suppress(StoreUnavailableError):
        while True:
            await asyncio.sleep(_UPGRADE_LEASE / 3)
            with b.guard(keys.upgrade_lock):
                await client.eval(_RENEW, 1, keys.upgrade_lock, token, lease)


async def _upgrade(b: _Backend) -> None:
    """Bring a store written by an older schema up to :data:`SCHEMA_VERSION`, step by step.

    Schema 1 to 2 rewrites the decision logs (:func:`_copy_v1`); 2 to 3 indexes every
    request for the worker and retention (:func:`_index_v2`); 3 to 4 enters the pending
    requests with a deadline in the expiry set (:func:`_index_v3`). One process upgrades under a
    lock (renewed while it works, see :data:`_UPGRADE_LEASE`) while others wait; each step
    records its schema when done, so a crash leaves the store at the last finished step and
    the next open goes on from there.
    """
    keys, client = b.keys, b.client
    token = uuid.uuid4().hex
    deadline = time.monotonic() + _UPGRADE_WAIT
    while True:
        with b.guard(keys.upgrade_lock):
            if await client.set(keys.upgrade_lock, token, nx=True, px=int(_UPGRADE_LEASE * 1000)):
                break
            found = await client.hget(keys.meta, "schema")
        if found is not None and _text(found) == str(SCHEMA_VERSION):
            return
        if time.monotonic() > deadline:
            raise StoreUnavailableError(
                f"another process has been upgrading the Redis store {keys.prefix!r} for "
                f"more than {_UPGRADE_WAIT:g}s",
                url=b.url,
            )
        await asyncio.sleep(0.05)
    renewal = asyncio.ensure_future(_keep_upgrade_lock(b, token))
    try:
        while True:
            with b.guard(keys.meta):
                schema = _text(await client.hget(keys.meta, "schema"))
            if schema == "1":
                old_keys = await _copy_v1(b)
                with b.guard(keys.meta):
                    await client.hset(keys.meta, "schema", "2")
                if old_keys:
                    with b.guard():
                        await client.delete(*old_keys)
            elif schema == "2":
                await _index_v2(b)
                with b.guard(keys.meta):
                    await client.hset(keys.meta, "schema", "3")
            elif schema == "3":
                await _index_v3(b)
                with b.guard(keys.meta):
                    await client.hset(keys.meta, "schema", "4")
            else:
                return
    finally:
        renewal.cancel()
        await asyncio.wait([renewal])
        with b.guard(keys.upgrade_lock):
            await client.eval(_RELEASE, 1, keys.upgrade_lock, token)


async def _index_v2(b: _Backend) -> None:
    """Give every schema-2 request its schema-3 indexes and every decision its owner.

    Builds the ready sets, the updated-at and mutation-type indexes, the compensation
    links and the key segments from the stored documents (one script per request, which
    leaves alone a request a schema-3 commit already wrote); an unreadable document is
    skipped, never failing the upgrade (listings quarantine it later). Then records which
    recent-decision members belong to which request, so a purge can remove them.
    """
    keys, client = b.keys, b.client
    escaped = _GLOB.sub(r"\\\1", keys.prefix)
    with b.guard():
        request_keys = [
            _text(key)
            async for key in client.scan_iter(match=f"{escaped}:request:*", count=500, _type="hash")
        ]
    for start in range(0, len(request_keys), _BATCH):
        chunk = request_keys[start : start + _BATCH]
        with b.guard():
            async with client.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.hmget(key, "document", "revision", "member")
                rows = await pipe.execute()
        for key, row in zip(chunk, rows, strict=True):
            await _index_request(b, key, *row)
    for category_key in (keys.recent(category) for category in DecisionCategory):
        with b.guard(category_key):
            members: list[Any] = await client.zrange(category_key, 0, -1)
        owners: list[tuple[str, bytes]] = []
        for member in members:
            try:
                record = b.load(member[_RECORD_AT:], "record", key=category_key, field=None)
                request_id = record["request_id"]
            except (StoredDataError, TypeError, KeyError):
                continue
            if isinstance(request_id, str):
                owners.append((request_id, member))
        for start in range(0, len(owners), _BATCH):
            with b.guard():
                async with client.pipeline(transaction=False) as pipe:
                    for request_id, member in owners[start : start + _BATCH]:
                        pipe.hset(keys.decision_members(request_id), member, category_key)
                    await pipe.execute()


async def _index_v3(b: _Backend) -> None:
    """Enter every schema-3 PENDING request that has a deadline in the expiry set.

    Walks the PENDING status index in batches of ``_BATCH`` members: one round trip reads
    a batch's documents, the deadlines are computed here, and one
    :data:`._redis_scripts.UPGRADE_DUE` call enters the batch (leaving alone a request a
    schema-4 commit wrote meanwhile). An unreadable request is quarantined and skipped,
    never failing the upgrade.
    """
    keys = b.keys
    index = keys.index("status", RequestStatus.PENDING.value)
    low = b"-"
    while True:
        with b.guard(index):
            members: list[bytes] = await b.call("ZRANGEBYLEX", index, low, b"+", "LIMIT", 0, _BATCH)
        if not members:
            return
        ids = [member[_ID_AT:].decode("utf-8", "surrogatepass") for member in members]
        request_keys = [keys.request(request_id) for request_id in ids]
        rows, _ = await _request_rows(b, request_keys, ids, ("document", "revision", "dmember"))
        entered: list[str] = []
        args: list[str | bytes] = []
        bad: list[tuple[str, StoredDataError]] = []
        for request_id, key, row in zip(ids, request_keys, rows, strict=True):
            if isinstance(row, StoredDataError):
                bad.append((request_id, row))
                continue
            raw, revision, written = row
            if raw is None or revision is None or written is not None:
                continue  # gone, malformed (listings quarantine it) or written by schema 4
            try:
                request = b.request_from(raw, key, request_id)
            except StoredDataError as error:
                bad.append((request_id, error))
                continue
            member = _due_member(request)
            if member:
                entered.append(key)
                args += [revision, member]
        if entered:
            await b.evalsha(b.upgrade_due_script, [keys.due, *entered], args)
        if bad:
            with contextlib.suppress(StoredDataError):
                await _quarantine(b, bad)
        if len(members) < _BATCH:
            return
        low = b"(" + members[-1]


async def _index_request(b: _Backend, key: str, raw: Any, revision: Any, member: Any) -> None:
    """Index one schema-2 request hash for schema 3 (skipped when it cannot be read)."""
    keys = b.keys
    if raw is None or revision is None or member is None:
        return
    request_id = _text(member)[_ID_AT:]
    if keys.request(request_id) != key:
        return
    try:
        request = b.request_from(raw, key, request_id)
    except StoredDataError:
        return
    indexes = keys.request_indexes(request)
    updated = keys.updated_indexes(request)
    args: list[str | bytes] = [
        revision,
        _member(request.created_at, request_id),
        _member(request.updated_at, request_id) if updated else b"",
        str(len(indexes)),
        *indexes,
        str(len(updated)),
        *updated,
        _raw(request_id),
        escape_segment(request_id),
    ]
    await b.evalsha(b.upgrade_script, [key, keys.segments], args)


async def _copy_v1(b: _Backend) -> list[str]:
    """Write the schema-2 decision keys from the schema-1 ones; return the old keys."""
    keys, client = b.keys, b.client
    old_prefix = f"{keys.prefix}:decisions:"
    new_prefix = f"{keys.prefix}:decision-log:"
    with b.guard():
        old_logs = [
            _text(key)
            async for key in client.scan_iter(
                match=keys.v1_decisions_pattern(), count=500, _type="list"
            )
        ]
    for old in old_logs:
        with b.guard(old):
            raws = await client.lrange(old, 0, -1)
        mapping: dict[Any, Any] = {}
        for position, raw in enumerate(raws, 1):
            data = b.load(raw, "decision", key=old, field=None)
            if not isinstance(data, dict):
                raise StoredDataError("not a decision", backend=BACKEND, key=old, field=None)
            mapping[str(position)] = b.dump("decision", {**data, "sequence": position})
        new = new_prefix + old[len(old_prefix) :]
        with b.guard(new):
            async with client.pipeline(transaction=True) as pipe:
                pipe.delete(new)
                if mapping:
                    pipe.hset(new, mapping=mapping)
                await pipe.execute()
    old_recent = keys.v1_recent()
    with b.guard(old_recent):
        members: list[Any] = await client.zrange(old_recent, 0, -1)
    parsed: list[tuple[int, bytes, str, dict[str, Any]]] = []
    for member in members:
        record = b.load(member[_RECORD_AT:], "record", key=old_recent, field=None)
        if not isinstance(record, dict) or not isinstance(record.get("request_id"), str):
            raise StoredDataError(
                "not a decision record", backend=BACKEND, key=old_recent, field="record"
            )
        parsed.append(
            (int(member[_STAMP_WIDTH + 1 : _RECORD_AT - 1]), member, record["request_id"], record)
        )
    parsed.sort(key=lambda item: item[0])
    counters: dict[str, int] = {}
    renamed: dict[bytes, bytes] = {}
    for _, member, request_id, record in parsed:
        counters[request_id] = sequence = counters.get(request_id, 0) + 1
        decision = {**record["decision"], "sequence": sequence}
        text = b.dump("record", {"request_id": request_id, "decision": decision})
        renamed[member] = member[:_RECORD_AT] + text
    targets = [(old_recent, keys.recent())] + [
        (keys.v1_recent(category), keys.recent(category)) for category in DecisionCategory
    ]
    for old, new in targets:
        with b.guard(old):
            old_members: list[Any] = await client.zrange(old, 0, -1)
        new_members = {renamed.get(member, member): 0 for member in old_members}
        with b.guard(new):
            async with client.pipeline(transaction=True) as pipe:
                pipe.delete(new)
                if new_members:
                    pipe.zadd(new, new_members)
                await pipe.execute()
    return [*old_logs, *(old for old, _ in targets)]


# -- the store -----------------------------------------------------------------------------------


def _version(text: object) -> tuple[int, ...]:
    """``redis_version`` as numbers (``(0,)`` when it is not one)."""
    parts = re.findall(r"\d+", str(text))[:3]
    return tuple(int(part) for part in parts) or (0,)


async def _check_server(client: aioredis.Redis, url: str) -> bool:
    """Refuse a Redis Cluster node, and warn when the server may evict the store's keys.

    Returns whether the server has ``ZMSCORE`` (Redis 6.2 and later; assumed when
    ``INFO`` is not answered); listings ask older servers member by member instead.

    Every script of the store writes keys that hash to different slots, which a cluster
    refuses (CROSSSLOT) even when one node holds them all. A server that does not answer
    ``INFO`` (a managed service that renamed it) is taken as it comes; if it is a cluster
    after all, its refusals are StoreUnavailableError, never StoredDataError.
    """
    try:
        info = await client.info()  # the default sections hold Server, Cluster and Memory
    except redis.exceptions.ResponseError:
        return True
    if str(info.get("cluster_enabled", "0")) == "1":
        raise ConfigurationError(
            f"{url} is a Redis Cluster node, and the Redis store needs a standalone server "
            "(a primary, with replicas if you like): its scripts write keys in many hash "
            "slots, which a cluster refuses"
        )
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if str(info.get("maxmemory", "0")) != "0" and policy.startswith("allkeys-"):
        _log.warning(
            "Redis at %s evicts any key when full (maxmemory-policy %s): requests, decisions "
            "and states of the store may vanish; use noeviction",
            url,
            policy,
            extra={"operation": "open"},
        )
    return _version(info.get("redis_version", "7")) >= (6, 2)


class RedisStore:
    """A :class:`~mutator_governance.protocols.GovernanceStore` on one Redis database.

    Asyncio only (``redis.asyncio``). Open it with :meth:`open`; all keys live under a
    configurable prefix (``prefix=`` or ``?prefix=`` in the URL, default ``mutator``) so
    several deployments or test runs can share one database. ``committer`` writes every
    governance operation (state, requests with their index changes, decisions, history,
    audit) in one Lua script, all or nothing. Connection failures and timeouts raise
    :class:`~mutator_governance.StoreUnavailableError` (with the password removed from the
    URL); unreadable data and wrong-type keys raise
    :class:`~mutator_governance.StoredDataError` naming the key.
    """

    def __init__(self, backend: _Backend, options: RedisOptions) -> None:
        self._b = backend
        self._options = options
        self._requests = RedisRequestStore(backend)
        self._decisions = RedisDecisionHistory(backend)
        self._states = RedisStateStore(backend)
        self._audit = RedisAuditSink(backend)
        self._history = RedisHistoryStore(backend)
        self._committer = RedisCommitter(backend)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        registry: MutationRegistry,
        prefix: str | None = None,
        socket_timeout: float | None = None,
        connect_timeout: float | None = None,
        max_connections: int | None = None,
        create: bool = True,
        **unknown: Any,
    ) -> Self:
        """Connect to ``url`` (see :data:`URL_FORM`) and check the store's schema version.

        Options (:class:`RedisOptions`) come from the keyword arguments or the URL's query
        parameters, else their defaults; an option named both ways must have the same value
        in both. The URL and the options are checked before connecting: a malformed URL, an
        unknown or malformed option, an option named both ways with different values, or
        opening outside asyncio raises :class:`mutator.ConfigurationError`. Only what the
        URL names is used (no environment, no default host). Raises StoreUnavailableError
        when Redis does not answer and StoredDataError when the store was written by a
        newer schema, or when no store exists under the prefix yet but other keys do
        (another application's). A store of an older schema is upgraded in place. With
        ``create=False`` a prefix holding no store (no ``<prefix>:meta`` key) is refused
        with :class:`StoreNotFoundError` before anything is written: what an operator's
        tool uses so that a mistyped prefix is an error, not a new empty store.
        """
        if not isinstance(registry, MutationRegistry):
            raise TypeError(f"registry must be a MutationRegistry, got {type(registry).__name__}")
        target = _parse_url(url)
        named = {
            "prefix": prefix,
            "socket_timeout": socket_timeout,
            "connect_timeout": connect_timeout,
            "max_connections": max_connections,
        }
        given = {**unknown, **{name: v for name, v in named.items() if v is not None}}
        options = RedisOptions.from_text(target.query, given)
        check_create(create)
        library = running_library()
        if library != "asyncio":
            raise ConfigurationError(
                f"the Redis store is asyncio-only (redis.asyncio) and cannot run under "
                f"{library}; use asyncio, or sqlite:// on trio"
            )
        keys = RedisKeyspace(options.prefix)
        where: dict[str, Any] = (
            {"unix_socket_path": target.unix_socket}
            if target.unix_socket is not None
            else {"host": target.host, "port": target.port, "ssl": target.tls}
        )
        client = aioredis.Redis(
            **where,
            db=target.db,
            username=target.username,
            password=target.password,
            socket_timeout=options.socket_timeout,
            socket_connect_timeout=options.connect_timeout,
            max_connections=options.max_connections or _UNBOUNDED,
            client_name=options.client_name,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )
        if options.max_connections is not None:
            # Bounded: a command finding every connection in use waits for one (at most
            # connect_timeout), as the PostgreSQL pool does, instead of failing at once.
            pool = client.connection_pool
            client.connection_pool = aioredis.BlockingConnectionPool(
                connection_class=pool.connection_class,
                max_connections=options.max_connections,
                timeout=options.connect_timeout,
                **pool.connection_kwargs,
            )
        backend = _Backend(
            client,
            keys,
            registry,
            redact_url(url),
            keep_connections=options.max_connections is None,
        )
        answered = False  # until the server replies, a TLS failure is the handshake's
        try:
            with backend.guard(keys.meta):
                backend.has_zmscore = await _check_server(client, redact_url(url))
                answered = True
                found = await client.hget(keys.meta, "schema")
                if found is None and not create:
                    raise StoreNotFoundError(
                        f"no governance store under the Redis key prefix {options.prefix!r} "
                        f"(no {keys.meta!r} key)",
                        where=options.prefix,
                        url=redact_url(url),
                    )
                if found is None:
                    taken = await _keys_under(client, keys.prefix)
                    if taken and await client.hget(keys.meta, "schema") is None:
                        raise StoredDataError(
                            f"the key prefix {options.prefix!r} holds no governance store "
                            f"but has keys under it ({', '.join(map(repr, taken))}): does "
                            "another application use it? Give the store another prefix",
                            backend=BACKEND,
                            key=keys.meta,
                        )
                    await client.hsetnx(keys.meta, "schema", str(SCHEMA_VERSION))
                    found = await client.hget(keys.meta, "schema")
            text = "" if found is None else _text(found)
            if _COUNTER.match(text) is None or text == "0":
                raise StoredDataError(
                    f"invalid schema version {found!r}",
                    backend=BACKEND,
                    key=keys.meta,
                    field="schema",
                )
            schema = int(text)
            if schema > SCHEMA_VERSION:
                raise StoredDataError(
                    f"store written with schema {schema}; this version reads up to "
                    f"{SCHEMA_VERSION} (upgrade mutator)",
                    backend=BACKEND,
                    key=keys.meta,
                    field="schema",
                )
            if schema < SCHEMA_VERSION:
                await _upgrade(backend)
        except BaseException as error:
            await client.aclose()
            if isinstance(error, StoredDataError) and "DB index is out of range" in str(
                error.__cause__
            ):
                raise ConfigurationError(
                    f"the Redis server at {redact_url(url)} has no database {target.db} "
                    "(it numbers its databases from 0 to its 'databases' setting - 1)"
                ) from None
            if target.tls and isinstance(error, StoreUnavailableError) and not answered:
                cause = error.__cause__
                raise StoreUnavailableError(
                    f"cannot open a TLS connection (rediss://) to {target.host}:{target.port}; "
                    f"does the server serve TLS on that port? ({type(cause).__name__}: {cause})",
                    url=redact_url(url),
                ) from cause
            raise
        return cls(backend, options)

    @property
    def options(self) -> RedisOptions:
        """The options the store was opened with."""
        return self._options

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self._b.keys.prefix

    @property
    def keys(self) -> RedisKeyspace:
        """Every key the store uses."""
        return self._b.keys

    @property
    def client(self) -> aioredis.Redis:
        """The underlying ``redis.asyncio`` client (for diagnostics and tests)."""
        return self._b.client

    @property
    def requests(self) -> RedisRequestStore:
        """The request store."""
        return self._requests

    @property
    def decisions(self) -> RedisDecisionHistory:
        """The decision log."""
        return self._decisions

    @property
    def states(self) -> RedisStateStore:
        """The state store."""
        return self._states

    @property
    def audit(self) -> RedisAuditSink:
        """The audit sink."""
        return self._audit

    @property
    def history(self) -> RedisHistoryStore:
        """The history store."""
        return self._history

    @property
    def committer(self) -> RedisCommitter:
        """The atomic committer (one script per operation)."""
        return self._committer

    async def server_time(self) -> datetime | None:
        """The Redis server's clock (``TIME``), aware in UTC: judge leases by it."""
        with self._b.guard():
            seconds, micros = await self._b.client.time()
        return datetime.fromtimestamp(int(seconds), UTC) + timedelta(microseconds=int(micros))

    async def aclose(self) -> None:
        """Close the connection pool and the ready listener; the store is unusable afterwards."""
        await self._requests._listener.aclose()
        await self._b.wire.aclose()
        await self._b.client.aclose()
