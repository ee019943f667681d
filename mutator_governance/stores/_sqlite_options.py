"""The options of the SQLite backend: from keyword arguments and URL query parameters.

``sqlite:///gov.db?synchronous=NORMAL&busy_timeout=2.5&pool_size=8`` and
``SQLiteStore.open("sqlite:///gov.db", synchronous="NORMAL", busy_timeout=2.5,
pool_size=8)`` mean the same. Naming an option both ways is accepted when the two values
agree once typed (``?busy_timeout=2`` and ``busy_timeout=2.0``); different values, an
unknown option or a malformed value raise :class:`mutator.ConfigurationError` before any
file is opened. PostgreSQL and Redis apply the same rule (``_options.one_value_each``).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Final, Literal, cast
from urllib.parse import parse_qsl, unquote

import attrs

from mutator import ConfigurationError

from .._errors import StoreUnavailableError
from ._options import LONGEST_MILLISECONDS, one_value_each, typed_alone

__all__ = [
    "MEMORY",
    "SQLiteOptions",
    "Synchronous",
    "check_sqlite_file",
    "parse_sqlite_url",
    "sqlite_path",
]

MEMORY: Final = ":memory:"

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
"""SQLite's ``PRAGMA synchronous`` levels (case-insensitive on input)."""

_SYNCHRONOUS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")
_ACCEPTED = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite:///:memory:, "
    "or a plain path (a str or a pathlib.Path)"
)


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{name} must be a finite number >= 0 seconds, got {value!r}")
    if value * 1000 > LONGEST_MILLISECONDS:
        raise ConfigurationError(
            f"{name} must be at most {LONGEST_MILLISECONDS / 1000} seconds (SQLite holds it "
            f"in 32-bit milliseconds), got {value!r}"
        )
    return float(value)


def _count(name: str, value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ConfigurationError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ConfigurationError(f"{name} must be >= 1, got {value!r}")
    return value


def _synchronous(value: Any) -> Synchronous:
    if not isinstance(value, str) or value.upper() not in _SYNCHRONOUS:
        raise ConfigurationError(
            f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {value!r}"
        )
    return cast(Synchronous, value.upper())


def _busy_timeout(value: Any) -> float:
    return _seconds("busy_timeout", value)


def _pool_size(value: Any) -> int:
    return _count("pool_size", value)


@attrs.frozen
class SQLiteOptions:
    """How a :class:`~mutator_governance.stores._sqlite.SQLiteStore` uses its database.

    - ``synchronous``: ``PRAGMA synchronous`` of every write (default ``FULL``: a commit
      that returned survives a power loss). ``NORMAL`` skips the WAL flush per commit:
      still never corrupt and still atomic, but the last commits before a power loss or
      OS crash (not a process crash) may be rolled back.
    - ``busy_timeout``: seconds a write waits for another process's lock before
      ``StoreUnavailableError`` (default 5, at most 2147483.647: SQLite's limit).
    - ``pool_size``: reading connections, and reads that run at once (default 4); reads
      never queue behind writes.
    """

    synchronous: Synchronous = attrs.field(default="FULL", converter=_synchronous)
    busy_timeout: float = attrs.field(default=5.0, converter=_busy_timeout)
    pool_size: int = attrs.field(default=4, converter=_pool_size)

    @classmethod
    def build(cls, query: dict[str, str], keywords: dict[str, Any]) -> SQLiteOptions:
        """Options from URL query parameters and keyword arguments (ConfigurationError).

        An option named both ways must have the same value in both, compared typed
        (``?pool_size=8`` and ``pool_size=8`` agree), as on every backend.
        """
        known = {field.name for field in attrs.fields(cls)}
        for source, names in (("URL query parameter", query), ("keyword option", keywords)):
            unknown = sorted(set(names) - known)
            if unknown:
                raise ConfigurationError(
                    f"unknown SQLite {source} {', '.join(map(repr, unknown))}; "
                    f"accepted: {', '.join(sorted(known))}"
                )

        typed = functools.partial(typed_alone, cls)
        return cls(**one_value_each("SQLite", query, keywords, from_text=typed, from_keyword=typed))


def parse_sqlite_url(url: str | os.PathLike[str]) -> tuple[str, dict[str, str]]:
    """The database path and the query parameters named by ``url``.

    ``sqlite:///relative.db`` is relative to the working directory,
    ``sqlite:////absolute/path.db`` absolute, ``sqlite:///:memory:`` (or ``sqlite://``)
    a private in-memory database (nothing durable: it goes with the store); anything
    that is not a ``sqlite:`` URL is a plain path (``str`` or ``os.PathLike``). The path
    is percent-decoded (``%20`` is a space) and a leading ``~`` or ``~user`` is the home
    directory, in a URL as in a plain path; a NUL character (``%00``) is refused. A
    ``file:`` URI is refused: SQLite's URI parameters (``mode=ro``, ``cache=shared``)
    would change what the store relies on, and read as a plain path it would name a file
    called ``file:...``. Malformed URLs raise :class:`mutator.ConfigurationError` naming
    the accepted forms.
    """
    if isinstance(url, os.PathLike):
        return _home(_no_nul(os.fspath(url), url)), {}
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"expected a SQLite URL or a path, got {url!r}: use {_ACCEPTED}")
    scheme, colon, rest = url.partition(":")
    if colon and scheme.lower() == "file":
        raise ConfigurationError(
            f"a file: URI ({url!r}) is not accepted (its SQLite URI parameters would change "
            f"how the store uses the file): use {_ACCEPTED}"
        )
    if not colon or scheme.lower() != "sqlite":
        return _home(_no_nul(url, url)), {}
    if not rest.startswith("//"):
        raise ConfigurationError(f"malformed SQLite URL {url!r}: use {_ACCEPTED}")
    host, _, path = rest[2:].partition("/")
    if host not in ("", "localhost"):
        raise ConfigurationError(
            f"SQLite URLs name no host, got {host!r} in {url!r}: use {_ACCEPTED}"
        )
    if "#" in path:
        raise ConfigurationError(f"SQLite URL {url!r} has a fragment: use {_ACCEPTED}")
    path, _, query = path.partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as error:
        raise ConfigurationError(f"malformed query in SQLite URL {url!r}: {error}") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise ConfigurationError(f"SQLite URL {url!r} names {name!r} twice")
        params[name] = value
    path = _no_nul(unquote(path), url)
    return (_home(path) if path else MEMORY), params


def _no_nul(path: str, url: object) -> str:
    """``path``, refused when it holds a NUL character (``%00``), which no file name can."""
    if "\0" in path:
        raise ConfigurationError(
            f"the SQLite database path in {url!r} holds a NUL character, which no file "
            "name can hold"
        )
    return path


def _home(path: str) -> str:
    """``path`` with a leading ``~`` or ``~user`` made the home directory."""
    return os.path.expanduser(path) if path.startswith("~") else path


def check_sqlite_file(path: str) -> None:
    """Refuse a database ``path`` the store could not use, saying why.

    A directory that does not exist (the store creates the file, never its directory),
    a path that is a directory or no regular file (``/dev/null``, a FIFO), and a file or
    directory the process may not write (the
    store writes the file, and its ``-wal`` and ``-shm`` files beside it) raise
    :class:`~mutator_governance.StoreUnavailableError` naming the path and the reason,
    before anything is opened, instead of SQLite's "unable to open database file". They
    are the file system's state, not the URL's: a volume mounted later or a permission
    granted later makes the same URL work, so they are not ConfigurationError.
    """
    if path == MEMORY:
        return
    directory = os.path.dirname(path) or os.curdir
    problem = None
    if not os.path.isdir(directory):
        problem = (
            f"the directory {directory!r} does not exist (the store creates the database "
            "file, not its directory)"
        )
    elif os.path.isdir(path):
        problem = "it is a directory; name a file in it"
    elif os.path.exists(path) and not os.path.isfile(path):
        problem = "it is not a regular file (a device, a FIFO or a socket)"
    elif os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        problem = "the file is read-only for this process, and the store writes to it"
    elif not os.access(directory, os.W_OK | os.X_OK):
        problem = (
            f"the directory {directory!r} is read-only for this process, and the store "
            "writes its journal files beside the database"
        )
    if problem is not None:
        raise StoreUnavailableError(
            f"cannot open the SQLite database {path!r}: {problem}", url=path
        )


def sqlite_path(url: str | os.PathLike[str]) -> str:
    """The database path named by ``url`` (its query parameters must be known options)."""
    path, query = parse_sqlite_url(url)
    SQLiteOptions.build(query, {})
    return path
