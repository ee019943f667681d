"""Durable backends: SQLite (embedded default), PostgreSQL and Redis.

``open_store(url, registry=...)`` picks the backend from the URL scheme:

- ``memory://`` (in-process, nothing durable)
- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``sqlite:///:memory:``,
  or a :class:`pathlib.Path`
- ``postgresql://user:password@host:port/database`` or ``postgres://...`` (extra
  ``postgres``; asyncio only)
- ``redis://host:port/db``, ``rediss://...`` (TLS) or ``unix:///path/to/redis.sock?db=n``
  (extra ``redis``; asyncio only)

Each backend implements :class:`~mutator_governance.protocols.GovernanceStore`.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from mutator import ConfigurationError

if TYPE_CHECKING:
    from .._registry import MutationRegistry
    from ..protocols import GovernanceStore

__all__ = ["open_store", "redact_url"]


# ``password=...`` in a query string or a libpq key/value string (quoted or not).
_PASSWORD_PARAMETER = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|[^&\s#]*)")


def redact_url(url: str) -> str:
    """``url`` without its password, for error messages and logs.

    The password is masked wherever a driver would read one: in the user part
    (``user:***@host``), as a query parameter (``?password=***``) and in a libpq
    key/value string (``password=***``).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]  # as written: ``parts.port`` raises when invalid
        user = f"{parts.username}:***@" if parts.username else ""
        url = urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
    return _PASSWORD_PARAMETER.sub(r"\1***", url)


ACCEPTED_FORMS = (
    "memory://, sqlite:///relative/path.db, sqlite:////absolute/path.db (or a pathlib.Path), "
    "postgresql://user@host:port/database (or postgres://), redis://host:port/db, "
    "rediss:// (TLS) or unix:///path/to/redis.sock?db=n"
)
_SCHEMES = ("memory", "sqlite", "postgresql", "postgres", "redis", "rediss", "unix")
# ``scheme:`` at the start, as RFC 3986 spells a scheme.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")

KEY_VALUE_STRING = (
    "a libpq key/value connection string (host=... dbname=...) is not a store URL; "
    "write it as postgresql://user:password@host:port/database?parameter=value"
)
"""The refusal of ``"host=... dbname=..."``, wherever a store URL is read."""


def url_scheme(url: str) -> str | None:
    """The scheme ``url`` starts with, lower-cased, or None when it names none."""
    match = _SCHEME.match(url)
    return None if match is None else match.group(1).lower()


def _unsupported(url: str) -> ConfigurationError:
    """The error for a string that names no scheme this library knows."""
    scheme = url_scheme(url)
    if scheme is None and "=" in url:
        return ConfigurationError(f"{KEY_VALUE_STRING} (store URLs: {ACCEPTED_FORMS})")
    if scheme is None:
        return ConfigurationError(
            f"unsupported store URL {redact_url(url)!r}: it names no scheme; use {ACCEPTED_FORMS}"
        )
    if scheme == "file":
        return ConfigurationError(
            f"a file: URI ({redact_url(url)!r}) is not a store URL; a SQLite database is "
            "sqlite:///relative/path.db, sqlite:////absolute/path.db or a pathlib.Path"
        )
    close = difflib.get_close_matches(scheme, _SCHEMES, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}://? " if close else ""
    return ConfigurationError(
        f"unsupported store URL {redact_url(url)!r}: unknown scheme {scheme!r}; {hint}"
        f"use {ACCEPTED_FORMS}"
    )


# The distribution's optional dependencies, by the extra that installs them.
_EXTRA_MODULES = {
    "postgres": ("psycopg", "psycopg_pool", "psycopg_binary", "psycopg_c"),
    "redis": ("redis", "hiredis"),
}


@contextlib.contextmanager
def _driver_of(backend: str, extra: str) -> Iterator[None]:
    """Import a backend's module; a driver that is not installed names the extra to install.

    Only an import of the extra's own modules (or a driver failing to load its native
    part, such as psycopg without libpq) is reported so; any other import error is a
    defect of this library and propagates as it is.
    """
    try:
        yield
    except ImportError as error:
        missing = (error.name or "").partition(".")[0]
        if error.name is not None and missing not in _EXTRA_MODULES[extra]:
            raise
        raise ConfigurationError(
            f"the {backend} store needs the {extra!r} extra: "
            f'pip install "mutator[{extra}]" ({type(error).__name__}: {error})'
        ) from error


async def open_store(
    url: str | os.PathLike[str], *, registry: MutationRegistry, **options: Any
) -> GovernanceStore:
    """Open the backend named by ``url``'s scheme (see the module docstring).

    ``options`` are the backend's own (pool sizes, timeouts, ...), also accepted as URL
    query parameters; an option named both ways must have the same value in both
    (compared typed: ``?pool_size=8`` and ``pool_size=8`` agree). An unknown scheme, a
    malformed URL, an unknown or malformed option, or an option named both ways with
    different values raises :class:`mutator.ConfigurationError` before anything connects.
    ``create=False`` (PostgreSQL and Redis) refuses a schema or key prefix holding no store
    with :class:`~mutator_governance.StoreNotFoundError` instead of creating one there (the
    ``mutator`` command line opens stores this way).
    A :class:`pathlib.Path` (any ``os.PathLike``) names a SQLite file. A string must start
    with a scheme: a plain path, a ``file:`` URI or a libpq key/value string is refused,
    naming the forms to write (and never showing a password). A ``registry`` that is not a
    :class:`~mutator_governance.MutationRegistry` raises TypeError, on every backend.
    """
    from .._registry import MutationRegistry

    if not isinstance(registry, MutationRegistry):
        raise TypeError(f"registry must be a MutationRegistry, got {type(registry).__name__}")
    if isinstance(url, os.PathLike):
        from ._sqlite import SQLiteStore

        return await SQLiteStore.open(url, registry=registry, **options)
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"a store URL is a non-empty string such as {ACCEPTED_FORMS}")
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as error:
        raise ConfigurationError(
            f"malformed store URL {redact_url(url)!r} ({error}); use {ACCEPTED_FORMS}"
        ) from None
    if url_scheme(url) is None:
        raise _unsupported(url)
    if scheme == "memory":
        from .._commit import InMemoryGovernanceStore

        parts = urlsplit(url)
        named = sorted({*options, *(name for name, _ in parse_qsl(parts.query, True))})
        if named:
            raise ConfigurationError(
                f"the in-memory store takes no options, got {', '.join(named)}"
            )
        if parts.netloc or parts.path not in ("", "/"):
            raise ConfigurationError(
                f"the in-memory store's URL is memory:// alone, got {redact_url(url)!r}"
            )
        return InMemoryGovernanceStore()
    if scheme == "sqlite":
        from ._sqlite import SQLiteStore

        return await SQLiteStore.open(url, registry=registry, **options)
    if scheme.partition("+")[0] in ("postgresql", "postgres"):
        # postgresql+driver:// (SQLAlchemy's form) too, so that it is refused with the hint
        with _driver_of("PostgreSQL", "postgres"):
            from ._postgres import PostgresStore

        return await PostgresStore.open(url, registry=registry, **options)
    if scheme in ("redis", "rediss", "unix"):
        with _driver_of("Redis", "redis"):
            from ._redis import RedisStore

        return await RedisStore.open(url, registry=registry, **options)
    raise _unsupported(url)
