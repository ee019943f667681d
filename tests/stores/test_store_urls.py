"""The connection URLs users write, as each store's driver reads them.

Each form is either opened where it names (the socket, the database, the user) or refused
before connecting with a :class:`mutator.ConfigurationError` that says why, never shows a
password, and never leaves a file or key behind. PostgreSQL and Redis tests need the
servers named by ``MUTATOR_TEST_POSTGRES_URL`` / ``MUTATOR_TEST_REDIS_URL`` (see
``conftest.py``); the Redis tests that need a socket or an ACL user start their own
``redis-server`` (nothing kept on disk), so the shared server is never reconfigured.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mutator import ConfigurationError
from mutator_governance import Governance, StoreUnavailableError
from mutator_governance.stores import open_store, redact_url
from mutator_governance.stores._sqlite import SQLiteStore
from mutator_governance.stores._sqlite_options import parse_sqlite_url

from .pg_domain import Counters, registry

pytestmark = pytest.mark.anyio

SECRET = "sekret-Pa55"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- every backend -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "suggestion"),
    [
        ("postgresq://u:sekret-Pa55@db/app", "postgresql"),
        ("redis-tls://db:6379/0", "rediss"),
        ("sqllite:///gov.db", "sqlite"),
    ],
)
async def test_a_mistyped_scheme_names_the_known_schemes_and_the_likely_one(
    url: str, suggestion: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await open_store(url, registry=registry())
    message = str(caught.value)
    assert f"did you mean {suggestion}://" in message
    for scheme in ("sqlite://", "postgresql://", "postgres://", "redis://", "rediss://", "unix://"):
        assert scheme in message
    assert SECRET not in message


async def test_a_libpq_key_value_string_is_refused_without_showing_its_password() -> None:
    conninfo = f"host=127.0.0.1 dbname=test user=postgres password={SECRET}"
    with pytest.raises(ConfigurationError, match="key/value") as caught:
        await open_store(conninfo, registry=registry())
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u@db/app?password={SECRET}",
        f"redis://db:6379/0?password={SECRET}",
        f"host=db password={SECRET}",
        f"host=db password='{SECRET} x'",
    ],
)
def test_a_password_outside_the_user_part_is_masked_too(url: str) -> None:
    assert SECRET not in redact_url(url)


@pytest.mark.parametrize(
    "url", ["postgresql://u@127.0.0.1:1/app", "redis://127.0.0.1:1/0"], ids=["postgresql", "redis"]
)
@pytest.mark.parametrize("create", ["false", 0, None])
async def test_create_must_be_a_bool_before_connecting(url: str, create: Any) -> None:
    """``create="false"`` (from a configuration file) is truthy: it would create the store
    the caller meant to refuse. Refused before connecting (nothing listens on port 1)."""
    with pytest.raises(ConfigurationError, match="create must be True or False"):
        await open_store(url, registry=registry(), create=create)


@pytest.mark.parametrize(
    "url",
    ["memory://", "sqlite:///:memory:", "postgresql://u@127.0.0.1:1/app", "redis://127.0.0.1:1/0"],
    ids=["memory", "sqlite", "postgresql", "redis"],
)
@pytest.mark.parametrize("given", [None, type(registry())], ids=["none", "the-class"])
async def test_a_registry_that_is_not_one_is_a_type_error_on_every_backend(
    url: str, given: Any
) -> None:
    """Refused alike before connecting (nothing listens on port 1): the in-memory and
    PostgreSQL stores failed deep inside (``'NoneType' object has no attribute ...``)."""
    with pytest.raises(TypeError, match="registry must be a MutationRegistry"):
        await open_store(url, registry=given)
    with pytest.raises(TypeError, match="registry must be a MutationRegistry"):
        async with Governance.open(url, registry=given):
            pass


async def test_open_store_takes_a_path(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "gov.db", registry=registry())
    try:
        await store.states.put("c:1", Counters())
    finally:
        await store.aclose()
    assert (tmp_path / "gov.db").is_file()


# -- SQLite ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["sqlite:///~/gov.db", "~/gov.db", Path("~/gov.db")])
async def test_a_leading_tilde_is_the_home_directory(
    url: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert parse_sqlite_url(url)[0] == str(tmp_path / "gov.db")
    async with await SQLiteStore.open(url, registry=registry()):
        pass
    assert (tmp_path / "gov.db").is_file()
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("url", ["file:gov.db", "file:gov.db?mode=ro", "file:///tmp/gov.db"])
async def test_a_file_uri_is_refused_not_taken_as_a_file_name(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=r"file: URI.*sqlite:///"):
        await SQLiteStore.open(url, registry=registry())
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - a directory listing in a test


async def test_a_missing_directory_is_named_as_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(StoreUnavailableError, match=rf"directory {str(missing)!r} does not exist"):
        await SQLiteStore.open(f"sqlite:///{missing}/gov.db", registry=registry())
    assert not (tmp_path / "no").exists()


async def test_a_directory_is_not_taken_for_a_database_file(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="it is a directory"):
        await SQLiteStore.open(f"sqlite:///{tmp_path}", registry=registry())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
async def test_a_device_or_fifo_is_not_taken_for_a_database_file(tmp_path: Path) -> None:
    """Named as such, not as SQLite's "disk I/O error" (a failing disk, to the reader)."""
    fifo = tmp_path / "gov.db"
    os.mkfifo(fifo)
    for path in (fifo, Path(os.devnull)):
        with pytest.raises(StoreUnavailableError, match="it is not a regular file"):
            await SQLiteStore.open(f"sqlite:///{path}", registry=registry())


async def test_a_read_only_database_file_is_refused_before_opening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Tests run as root here, who may write anything: the check is os.access's.)"""
    path = tmp_path / "gov.db"
    async with await SQLiteStore.open(path, registry=registry()):
        pass
    real = os.access

    def access(target: Any, mode: int, **kwargs: Any) -> bool:
        if Path(target) == path and mode & os.W_OK:
            return False
        return real(target, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(StoreUnavailableError, match="read-only"):
        await SQLiteStore.open(path, registry=registry())


# -- PostgreSQL --------------------------------------------------------------------------------

psycopg = pytest.importorskip("psycopg", reason="the postgres extra is not installed")

from mutator_governance.stores._postgres_options import parse_url  # noqa: E402

SOCKET_DIRECTORY = "/var/run/postgresql"


def _libpq(url: str) -> dict[str, Any]:
    return parse_url(url, {})[0]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://u@%2Fvar%2Frun%2Fpostgresql/app",
            {"host": "/var/run/postgresql", "dbname": "app", "user": "u", "port": "5432"},
        ),
        (
            "postgresql:///app?host=/var/run/postgresql&user=u",
            {"host": "/var/run/postgresql", "dbname": "app", "user": "u", "port": "5432"},
        ),
        (
            "postgresql://db/app?user=u&password=p%40ss&port=6543",
            {"host": "db", "dbname": "app", "user": "u", "password": "p@ss", "port": "6543"},
        ),
        (
            "postgresql://u@h1:5432,h2:5433,[::1]/app?target_session_attrs=read-write",
            {
                "host": "h1,h2,::1",
                "port": "5432,5433,5432",
                "dbname": "app",
                "user": "u",
                "target_session_attrs": "read-write",
            },
        ),
        (
            "postgres://u@DB.example/app?application_name=a+b&options=-c%20work_mem%3D8MB",
            {
                "host": "DB.example",
                "dbname": "app",
                "user": "u",
                "port": "5432",
                "application_name": "a+b",
                "options": "-c work_mem=8MB",
            },
        ),
    ],
)
def test_the_store_reads_a_url_as_libpq_does(url: str, expected: dict[str, Any]) -> None:
    assert _libpq(url) == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://u@db/app?host=elsewhere", "host"),
        ("postgresql://u@db:5432/app?port=5433", "port"),
        ("postgresql://u@db/app?dbname=other", "dbname"),
        ("postgresql://u@db/app?user=v", "user"),
        (f"postgresql://u:{SECRET}@db/app?password=other", "password"),
    ],
)
def test_a_part_named_twice_with_two_values_is_refused(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"{problem}.* twice") as caught:
        _libpq(url)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h1,/app",
        "postgresql://u@h1:5432,h2:x/app",
        "postgresql://u@db/app?port=0",
    ],
)
def test_an_empty_host_or_a_bad_port_in_a_list_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        _libpq(url)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{SECRET}%ZZ@db/app",
        f"postgresql://u@db/app?password={SECRET}&sslmod=disable",
        f"postgresql://u@db/app?password={SECRET}&password=x",
        f"postgresql://u@db/app?password={SECRET}&host=elsewhere#frag",
    ],
)
def test_a_refused_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _libpq(url)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "scheme", ["postgresql+psycopg", "postgresql+asyncpg", "postgres+psycopg2"]
)
async def test_a_sqlalchemy_dialect_url_is_refused_with_the_url_to_write(scheme: str) -> None:
    with pytest.raises(ConfigurationError, match=r"SQLAlchemy.*write postgresql://"):
        await open_store(f"{scheme}://u@db/app", registry=registry())


def _with(url: str, **parts: str) -> str:
    """``url`` (the test server's) with its host part or query replaced."""
    split = urlsplit(url)
    netloc = parts.get("netloc", split.netloc)
    query = parts.get("query", split.query)
    return f"{split.scheme}://{netloc}{split.path}" + (f"?{query}" if query else "")


@pytest.mark.skipif(
    not os.path.exists(f"{SOCKET_DIRECTORY}/.s.PGSQL.5432"),
    reason=f"no PostgreSQL socket in {SOCKET_DIRECTORY}",
)
@pytest.mark.parametrize("form", ["encoded-host", "host-parameter"])
async def test_postgres_opens_over_the_unix_socket(postgres_url: str, form: str) -> None:
    user = urlsplit(postgres_url).username
    if form == "encoded-host":
        url = _with(postgres_url, netloc=f"{user}@%2Fvar%2Frun%2Fpostgresql")
    else:
        url = _with(postgres_url, netloc="", query=f"host={SOCKET_DIRECTORY}&user={user}")
    schema = f"urls_{uuid.uuid4().hex[:8]}"
    async with Governance.open(url, registry=registry(), schema=schema) as gov:
        await gov.states.put("c:1", Counters())
        assert (await gov.states.get("c:1")) is not None
    await _drop(postgres_url, schema)


async def test_libpq_parameters_in_the_url_reach_the_server(postgres_url: str) -> None:
    name = f"mutator-urls-{uuid.uuid4().hex[:8]}"
    schema = f"urls_{uuid.uuid4().hex[:8]}"
    url = _with(postgres_url, query=f"application_name={name}&sslmode=disable&connect_timeout=3")
    async with (
        Governance.open(url, registry=registry(), schema=schema, min_size=1),
        await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn,
    ):
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name]
        )
        row = await cursor.fetchone()
        assert row is not None
        assert row[0] >= 1
    await _drop(postgres_url, schema)


async def _drop(postgres_url: str, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- Redis -------------------------------------------------------------------------------------

redis = pytest.importorskip("redis", reason="the redis extra is not installed")

from mutator_governance.stores._redis import _parse_url  # noqa: E402


@pytest.mark.parametrize(
    ("url", "db"),
    [
        ("redis://db:6379?db=3", 3),
        ("redis://db:6379/?db=3", 3),
        ("redis://db:6379/3?db=3", 3),
        ("redis://db:6379/3", 3),
        ("redis://db", 0),
    ],
)
def test_the_database_is_the_path_or_the_db_parameter(url: str, db: int) -> None:
    assert _parse_url(url).db == db


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://db:6379/3?db=4", "twice"),
        ("redis://db/\u0663", "not a number"),
        ("redis://db/?db=-1", "not a number"),
        ("redis://db/99999999999", "out of range"),
        (f"redis://:{SECRET}@db/0?password=other", "twice"),
        ("unix://", "socket"),
        ("unix://relative.sock", "socket"),
    ],
)
def test_a_malformed_redis_target_is_refused(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as caught:
        _parse_url(url)
    assert SECRET not in str(caught.value)


def test_a_password_may_be_a_query_parameter() -> None:
    target = _parse_url(f"unix:///run/redis.sock?db=2&password={SECRET}")
    assert (target.unix_socket, target.db, target.password) == ("/run/redis.sock", 2, SECRET)
    assert _parse_url(f"redis://db/0?password={SECRET}").password == SECRET


async def test_a_database_the_server_does_not_have_is_a_configuration_error(
    redis_url: str,
) -> None:
    parts = urlsplit(redis_url)
    url = f"redis://{parts.netloc}/16000"
    with pytest.raises(ConfigurationError, match="database 16000"):
        await open_store(url, registry=registry(), prefix=f"urls-{uuid.uuid4().hex[:8]}")


async def test_rediss_asks_for_tls_and_fails_clearly_against_a_plain_server(
    redis_url: str,
) -> None:
    parts = urlsplit(redis_url)
    assert _parse_url(f"rediss://{parts.netloc}/12").tls
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="TLS"):
        await open_store(
            f"rediss://{parts.netloc}/12", registry=registry(), connect_timeout=1, socket_timeout=1
        )
    assert time.monotonic() - started < 5


async def test_redis_opens_on_ipv6_loopback(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("the test server is not on this host")
    try:
        socket.create_connection(("::1", parts.port or 6379), timeout=1).close()
    except OSError:
        pytest.skip("the test server does not listen on ::1")
    prefix = f"urls-{uuid.uuid4().hex[:8]}"
    url = f"redis://[::1]:{parts.port or 6379}{parts.path}"
    store: Any = await open_store(url, registry=registry(), prefix=prefix)
    try:
        await store.states.put("c:1", Counters())
        await store.client.unlink(*[key async for key in store.client.scan_iter(f"{prefix}:*")])
    finally:
        await store.aclose()


async def test_redis_opens_over_a_unix_socket_in_the_named_database(
    private_redis: Callable[..., dict[str, Any]],
) -> None:
    server = private_redis()
    async with Governance.open(f"unix://{server['socket']}?db=3", registry=registry()) as gov:
        await gov.states.put("c:1", Counters())
    assert redis.Redis(unix_socket_path=server["socket"], db=3).exists("mutator:meta")
    assert not redis.Redis(unix_socket_path=server["socket"], db=0).exists("mutator:meta")


async def test_an_acl_user_with_an_encoded_password_is_who_the_store_connects_as(
    private_redis: Callable[..., dict[str, Any]],
) -> None:
    server = private_redis()
    admin = redis.Redis(unix_socket_path=server["socket"])
    admin.acl_setuser(
        "alice", enabled=True, passwords=["+p@ss/w"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    admin.acl_setuser("default", enabled=True, passwords=["+other"])
    url = f"redis://alice:p%40ss%2Fw@127.0.0.1:{server['port']}/2"
    store: Any = await open_store(url, registry=registry())
    try:
        assert await store.client.acl_whoami() in ("alice", b"alice")
        await store.states.put("c:1", Counters())
    finally:
        await store.aclose()
    wrong = f"redis://alice:{SECRET}@127.0.0.1:{server['port']}/2"
    with pytest.raises(StoreUnavailableError) as caught:
        await open_store(wrong, registry=registry())
    assert SECRET not in str(caught.value)
    socket_url = f"unix://alice@{server['socket']}?db=2&password=p%40ss%2Fw"
    async with Governance.open(socket_url, registry=registry()) as gov:
        assert (await gov.states.get("c:1")) is not None
