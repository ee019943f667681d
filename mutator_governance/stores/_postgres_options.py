"""Options of the PostgreSQL store, from ``open`` keywords and URL query parameters.

Everything is validated before connecting: a malformed URL, an unknown or malformed
option, or an option named both in the URL and as a keyword with different values raises
:class:`mutator.ConfigurationError` (a ``ValueError``) naming the accepted form or the
option. Named both ways with the same value (compared typed: ``?connect_timeout=2`` and
``connect_timeout=2.0`` agree) an option is accepted, as on every backend. The URL is
read as libpq reads it (see :func:`parse_url`). Only what the URL names is used: host,
database and user must be in the URL, so libpq never falls back to its defaults (the
Unix socket, the OS user, the database named after it).
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import unquote

import attrs
import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from mutator import ConfigurationError

from . import KEY_VALUE_STRING, redact_url, url_scheme
from ._options import LONGEST_MILLISECONDS, one_value_each, typed_alone

__all__ = ["DEFAULT_SCHEMA", "PostgresOptions", "parse_url"]

DEFAULT_SCHEMA = "mutator"

ACCEPTED_FORM = (
    "postgresql://user[:password]@host[:port][,host2[:port2]...]/database[?option=value&...] "
    "(or postgres://)"
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _schema(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ConfigurationError(
            f"schema {value!r} must be an identifier: letters, digits and '_', "
            "not starting with a digit, at most 63 characters"
        )
    if value.startswith("pg_") or value == "information_schema":
        raise ConfigurationError(
            f"schema {value!r} is reserved for PostgreSQL's own system schemas "
            "(names starting with 'pg_', and information_schema); name another"
        )


def _size(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or value < 0:
        raise ConfigurationError(f"{attribute.name} must be an int >= 0, got {value!r}")


def _seconds(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None and attribute.name != "connect_timeout":
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{attribute.name} must be > 0 seconds, got {value!r}")
    if attribute.name != "connect_timeout" and value * 1000 > LONGEST_MILLISECONDS:
        raise ConfigurationError(
            f"{attribute.name} must be at most {LONGEST_MILLISECONDS / 1000} seconds "
            f"(PostgreSQL holds it in 32-bit milliseconds), got {value!r}"
        )


def _no_limit(value: Any) -> Any:
    """``statement_timeout=0`` means no limit (and ``connection_check_interval=0`` no
    check), as they do in PostgreSQL itself."""
    if not isinstance(value, bool) and isinstance(value, int | float) and value == 0:
        return None
    return value


def _threshold(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (type(value) is not int or value < 0):
        raise ConfigurationError(
            f"{attribute.name} must be an int >= 0 or None (never prepare), got {value!r}"
        )


def _flag(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{attribute.name} must be a bool, got {value!r}")


@attrs.frozen
class PostgresOptions:
    """How :class:`~mutator_governance.stores._postgres.PostgresStore` connects.

    Each option is an ``open`` keyword and a URL query parameter of the same name
    (``?max_size=20&statement_timeout=5``). Named both ways it must have the same value
    (``?statement_timeout=0`` and ``statement_timeout=None`` agree); different values
    raise :class:`mutator.ConfigurationError` naming the option and both.

    - ``schema``: the PostgreSQL schema holding the tables (an identifier, not a system
      schema's: neither ``pg_...`` nor ``information_schema``).
    - ``min_size`` / ``max_size``: the connection pool's bounds.
    - ``connect_timeout``: seconds to connect, and to wait for a pooled connection.
    - ``statement_timeout``: seconds a statement may run before the server cancels it
      (None or 0: no limit; at most 2147483.647, PostgreSQL's limit); a cancelled
      operation writes nothing.
    - ``connection_check_interval``: seconds between the server's checks, while a
      statement runs, that the store's connection is still open (PostgreSQL's
      ``client_connection_check_interval``; None or 0: no check; at most 2147483.647;
      ignored by servers before 14). A statement whose caller was cancelled (a cancel
      scope) is cancelled on the server before the caller goes on; should that cancel not
      get through (the server does not answer it within psycopg's 5 s), the connection is
      closed, and the check aborts the statement then, where it would otherwise wait on
      (say on a row lock) and commit.
    - ``check_connections``: check every connection on checkout (a round trip each time;
      the store then keeps no connection aside between operations).
      Off by default: a broken connection fails its operation with
      ``StoreUnavailableError``, is discarded, and the pool's idle connections are checked
      then.
    - ``write_flights``: at most this many write statements of one store in flight at once
      (0: no limit). Writes arriving while they are all in flight wait and then go
      together as one statement and one transaction (group commit), each checked and
      written as its own operation: under concurrent load, fewer round trips and WAL
      flushes per operation. A write that finds a free flight waits one turn of the event
      loop for writers ready at the same moment. Worth it when several processes share
      one server's CPUs; one process alone runs faster without it (0).
    - ``prepare_threshold``: how many times a statement runs on a connection before it is
      prepared on the server (psycopg's ``prepare_threshold``, default 5; None or
      ``?prepare_threshold=none``: never). A pooler in transaction mode that does not keep
      prepared statements (PgBouncer before 1.21, or without ``max_prepared_statements``)
      needs None: each transaction may run on another server connection.

    Behind a pooler that refuses the ``options`` startup parameter (PgBouncer does), the
    store opens without ``connection_check_interval`` (logging a warning) and refuses a
    ``statement_timeout``, which only a role setting can then give.
    """

    schema: str = attrs.field(default=DEFAULT_SCHEMA, validator=_schema)
    min_size: int = attrs.field(default=1, validator=_size)
    max_size: int = attrs.field(default=10, validator=_size)
    connect_timeout: float = attrs.field(default=10.0, validator=_seconds)
    statement_timeout: float | None = attrs.field(
        default=None, converter=_no_limit, validator=_seconds
    )
    connection_check_interval: float | None = attrs.field(
        default=1.0, converter=_no_limit, validator=_seconds
    )
    check_connections: bool = attrs.field(default=False, validator=_flag)
    write_flights: int = attrs.field(default=0, validator=_size)
    prepare_threshold: int | None = attrs.field(default=5, validator=_threshold)

    def __attrs_post_init__(self) -> None:
        if self.max_size < max(1, self.min_size):
            raise ConfigurationError(
                "pool sizes must satisfy 0 <= min_size <= max_size and max_size >= 1, "
                f"got min_size={self.min_size}, max_size={self.max_size}"
            )


_OPTION_NAMES = frozenset(field.name for field in attrs.fields(PostgresOptions))
_LIBPQ_NAMES = frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def _from_text(name: str, text: str) -> Any:
    """The typed value of URL parameter ``name`` (validated by PostgresOptions)."""
    try:
        if name in ("min_size", "max_size", "write_flights"):
            return int(text)
        if name == "prepare_threshold":
            return None if text.lower() == "none" else int(text)
        if name in ("connect_timeout", "statement_timeout", "connection_check_interval"):
            if name != "connect_timeout" and text.lower() in ("", "none", "0"):
                return None
            return float(text)
        if name == "check_connections":
            flag = {"true": True, "1": True, "false": False, "0": False}.get(text.lower())
            if flag is None:
                raise ValueError(text)
            return flag
    except ValueError:
        raise ConfigurationError(
            f"URL parameter {name}={text!r} is malformed (see PostgresOptions)"
        ) from None
    return text


def _alone(name: str, value: Any) -> Any:
    """``value`` as PostgresOptions holds option ``name``: converted and checked on its own.

    The pool sizes (no converter) go through their own validator here, since the rule
    relating the two (``min_size <= max_size``) needs both and is checked once the whole
    options are built.
    """
    if name in ("min_size", "max_size"):
        _size(None, attrs.fields_dict(PostgresOptions)[name], value)
        return value
    return typed_alone(PostgresOptions, name, value)


def _from_url(name: str, text: str) -> Any:
    """The typed value of URL parameter ``name``, checked on its own (see :func:`_alone`)."""
    return _alone(name, _from_text(name, text))


def _refusal(problem: str) -> ConfigurationError:
    return ConfigurationError(f"{problem}; expected {ACCEPTED_FORM}")


def _libpq_parse(url: str, safe: str, secret: bool) -> dict[str, str]:
    """What libpq reads in ``url`` (psycopg's ``conninfo_to_dict``), as ConfigurationError
    when it cannot; libpq's own message is left out when the URL holds a password, which
    it may quote."""
    try:
        parsed = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        detail = "libpq cannot parse it" if secret else str(error).strip()
        raise _refusal(f"malformed PostgreSQL URL {safe!r} ({detail})") from None
    return {name: str(value) for name, value in parsed.items() if value is not None}


def _ports(hosts: list[str], port: str, safe: str) -> str:
    """libpq's ``port`` for ``hosts``: one port for all, or one per host; an empty entry
    is 5432 (not ``PGPORT``: only what the URL names is used)."""
    entries = port.split(",") if port else [""]
    if len(entries) not in (1, len(hosts)):
        raise _refusal(f"PostgreSQL URL {safe!r} names {len(hosts)} hosts but {len(entries)} ports")
    ports = [entry.strip() or "5432" for entry in entries]
    for entry in ports:
        if not entry.isascii() or not entry.isdigit() or not 0 < int(entry) < 65536:
            raise _refusal(f"PostgreSQL URL {safe!r} has an invalid port {entry!r}")
    return ",".join(ports)


def parse_url(url: str, options: dict[str, Any]) -> tuple[dict[str, Any], PostgresOptions]:
    """libpq connection keywords named by ``url``, and the store options.

    ``url`` is read as libpq (psycopg) reads it: ``postgres://`` or ``postgresql://``;
    percent-encoded user, password and database; a host that is a Unix socket directory
    (``%2Fvar%2Frun%2Fpostgresql``, or ``?host=/var/run/postgresql``); ``[::1]``; several
    ``host:port`` pairs for libpq to try in turn; any libpq connection parameter in the
    query, ``host``, ``port``, ``dbname``, ``user`` and ``password`` included. A part named
    both in the URL's body and in its query must have the same value in both (libpq would
    let the query win unseen). Host, database and user must be named, so libpq never
    falls back to its defaults (the Unix socket, the OS user, the database named after it).

    ``options`` are the ``open`` keywords. An option may also be a URL query parameter;
    named both ways, its two values must agree once typed. Raises ConfigurationError for a
    malformed URL, a libpq key/value string (write a URL), SQLAlchemy's
    ``postgresql+driver://``, an unknown or malformed option, or an option named both
    ways with different values (naming it and both values, never a password).
    """
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        raise ConfigurationError(
            f"unknown PostgreSQL store option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(_OPTION_NAMES))}"
        )
    if not isinstance(url, str):
        raise _refusal(f"a PostgreSQL URL is a str, got {type(url).__name__}")
    safe = redact_url(url)
    name = url_scheme(url)
    if name is None and "=" in url:
        raise ConfigurationError(KEY_VALUE_STRING)
    name = name or ""
    if name.partition("+")[0] in ("postgresql", "postgres") and "+" in name:
        rest = safe[len(name) + 1 :].removeprefix("//")
        raise ConfigurationError(
            f"{name}:// is SQLAlchemy's form, naming a driver; the store always connects "
            f"with psycopg: write postgresql://{rest}"
        )
    if name not in ("postgresql", "postgres"):
        raise _refusal(f"not a PostgreSQL URL: {safe!r}")
    if "#" in url:
        raise _refusal(
            f"PostgreSQL URL {safe!r} has a fragment ('#'): write a '#' in a password as %23"
        )
    body, _, query = url.partition("?")
    in_url: dict[str, str] = {}
    kept: list[str] = []
    named: set[str] = set()
    for segment in query.split("&") if query else ():
        key, equals, value = segment.partition("=")
        key = unquote(key)
        if not equals or not key:
            raise _refusal(f"malformed query in PostgreSQL URL {safe!r}: each part is name=value")
        if key in named:
            raise ConfigurationError(f"URL parameter {key!r} is given twice in {safe!r}")
        named.add(key)
        if key in _OPTION_NAMES:
            in_url[key] = unquote(value)
        elif key in _LIBPQ_NAMES:
            kept.append(segment)
        else:
            raise ConfigurationError(
                f"unknown URL parameter {key!r} in {safe!r}; accepted: the store options "
                f"({', '.join(sorted(_OPTION_NAMES))}) and libpq connection parameters"
            )
    chosen = one_value_each("PostgreSQL", in_url, options, from_text=_from_url, from_keyword=_alone)
    secret = safe != url
    params = _libpq_parse(body, safe, secret)
    if kept:
        given = _libpq_parse(f"postgresql://?{'&'.join(kept)}", safe, secret)
        twice = sorted(key for key in given if key in params and params[key] != given[key])
        if twice:
            raise _refusal(
                f"PostgreSQL URL {safe!r} names {', '.join(twice)} twice, with two values "
                "(in the URL's body and as a query parameter)"
            )
        params.update(given)
    hosts = params.get("host", params.get("hostaddr", "")).split(",")
    database = params.get("dbname", "")
    missing = [
        part
        for part, value in (
            ("host", all(hosts)),
            ("database", database),
            ("user", params.get("user")),
        )
        if not value
    ]
    if missing or "/" in database:
        what = f"no {', '.join(missing)}" if missing else "a database name with '/'"
        raise _refusal(f"malformed PostgreSQL URL {safe!r}: {what}")
    keywords: dict[str, Any] = {**params, "port": _ports(hosts, params.get("port", ""), safe)}
    try:
        store_options = PostgresOptions(**chosen)
    except TypeError as error:  # pragma: no cover - names are checked above
        raise ConfigurationError(str(error)) from None
    return keywords, store_options
