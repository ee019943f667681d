"""Durable backends: SQLite (embedded default), PostgreSQL and Redis.

``open_store(url, registry=...)`` picks the backend from the URL scheme:

- ``memory://`` (in-process, nothing durable)
- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``sqlite:///:memory:``
- ``postgresql://user:password@host:port/database`` (extra ``postgres``; asyncio only)
- ``redis://host:port/db`` (extra ``redis``; asyncio only)

Each backend implements :class:`~mutator_governance.protocols.GovernanceStore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from mutator import ConfigurationError

if TYPE_CHECKING:
    from .._registry import MutationRegistry
    from ..protocols import GovernanceStore

__all__ = ["open_store", "redact_url"]


def redact_url(url: str) -> str:
    """``url`` without its password, for error messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # as written: ``parts.port`` raises when invalid
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


ACCEPTED_FORMS = (
    "memory://, sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "postgresql://user@host:port/database or redis://host:port/db"
)


async def open_store(url: str, *, registry: MutationRegistry, **options: Any) -> GovernanceStore:
    """Open the backend named by ``url``'s scheme (see the module docstring).

    ``options`` are the backend's own (pool sizes, timeouts, ...), also accepted as URL
    query parameters; an option named both ways must have the same value in both
    (compared typed: ``?pool_size=8`` and ``pool_size=8`` agree). An unknown scheme, a
    malformed URL, an unknown or malformed option, or an option named both ways with
    different values raises :class:`mutator.ConfigurationError` before anything connects.
    ``create=False`` (PostgreSQL and Redis) refuses a schema or key prefix holding no store
    with :class:`~mutator_governance.StoreNotFoundError` instead of creating one there (the
    ``mutator`` command line opens stores this way).
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"a store URL is a non-empty string such as {ACCEPTED_FORMS}")
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as error:
        raise ConfigurationError(
            f"malformed store URL {redact_url(url)!r} ({error}); use {ACCEPTED_FORMS}"
        ) from None
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
    if scheme in ("postgresql", "postgres"):
        from ._postgres import PostgresStore

        return await PostgresStore.open(url, registry=registry, **options)
    if scheme in ("redis", "rediss"):
        from ._redis import RedisStore

        return await RedisStore.open(url, registry=registry, **options)
    raise ConfigurationError(f"unsupported store URL {redact_url(url)!r}: use {ACCEPTED_FORMS}")
