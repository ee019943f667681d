"""The PostgreSQL store behind a connection pooler that refuses what PgBouncer refuses.

:class:`Pooler` stands between the store and the test server and speaks the start of
PostgreSQL's wire protocol as PgBouncer does: it declines TLS, refuses a startup message
that carries the ``options`` parameter (``unsupported startup parameter: options``), or,
once told to, refuses every further connection as a full server does; anything else it
forwards byte for byte. (Checked by hand against PgBouncer 1.18 in session mode: the same
messages, and the same outcomes as these tests.)
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
from anyio.abc import ByteStream, SocketStream, TaskGroup

from mutator import ConfigurationError
from mutator_governance import Governance, StoreUnavailableError
from mutator_governance.stores._postgres import PostgresRequestStore, PostgresStore
from mutator_governance.testing import sample_registry

from .pg_domain import Add, Counters, registry, user
from .test_postgres import anyio_backend as anyio_backend  # the fixtures
from .test_postgres import schema as schema
from .test_postgres import with_schema

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]

_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104


def _error(code: str, message: str) -> bytes:
    """A FATAL ErrorResponse message."""
    fields = b"".join(
        kind + text.encode() + b"\0"
        for kind, text in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


async def _receive_exactly(stream: ByteStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += await stream.receive(size - len(data))
    return data


class Pooler:
    """A TCP proxy in front of the test server that refuses as PgBouncer does."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.refuse_after: int | None = None
        self.startups: list[dict[str, str]] = []

    async def serve(self, group: TaskGroup) -> int:
        """Listen on a free local port (returned) until ``group`` is cancelled."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        group.start_soon(self._serve, listener)
        port: int = listener.extra(anyio.abc.SocketAttribute.local_port)
        return port

    async def _serve(self, listener: anyio.abc.Listener[SocketStream]) -> None:
        async with listener:
            await listener.serve(self._client)

    async def _client(self, client: SocketStream) -> None:
        async with client:
            while True:
                head = await _receive_exactly(client, 8)
                length, code = struct.unpack("!ii", head)
                if code in (_SSL_REQUEST, _GSS_REQUEST):
                    await client.send(b"N")
                    continue
                break
            body = await _receive_exactly(client, length - 8)
            pairs = body.rstrip(b"\0").split(b"\0")
            params = {k.decode(): v.decode() for k, v in zip(pairs[::2], pairs[1::2], strict=True)}
            self.startups.append(params)
            if self.refuse_after is not None and len(self.startups) > self.refuse_after:
                await client.send(_error("53300", "sorry, too many clients already"))
                return
            if "options" in params:
                await client.send(_error("08P01", "unsupported startup parameter: options"))
                return
            async with await anyio.connect_tcp(self.host, self.port) as server:
                await server.send(head + body)
                async with anyio.create_task_group() as pipes:
                    pipes.start_soon(self._pipe, client, server, pipes)
                    await self._pipe(server, client, pipes)

    @staticmethod
    async def _pipe(source: ByteStream, sink: ByteStream, pipes: TaskGroup) -> None:
        try:
            while True:
                await sink.send(await source.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pipes.cancel_scope.cancel()


@pytest.fixture
async def pooler(postgres_url: str) -> AsyncIterator[tuple[Pooler, str]]:
    """A pooler in front of the test server, and the test server's URL through it."""
    parts = urlsplit(postgres_url)
    proxy = Pooler(parts.hostname or "127.0.0.1", parts.port or 5432)
    async with anyio.create_task_group() as group:
        port = await proxy.serve(group)
        netloc = parts.netloc.rsplit("@", 1)
        address = f"127.0.0.1:{port}"
        netloc_through = f"{netloc[0]}@{address}" if len(netloc) == 2 else address
        yield proxy, parts._replace(netloc=netloc_through).geturl()
        group.cancel_scope.cancel()


async def test_behind_a_pooler_that_refuses_startup_options_the_store_opens_and_works(
    pooler: tuple[Pooler, str], schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The default connection check needs the ``options`` startup parameter; behind a
    pooler that refuses it, the store opens without the check (saying so) and works."""
    proxy, url = pooler
    with caplog.at_level(logging.WARNING, logger="mutator.governance.postgres"):
        async with Governance.open(with_schema(url, schema), registry=registry()) as gov:
            await gov.states.put("counters", Counters())
            request = await gov.submit(
                Add(key="a", amount=3), state_id="counters", context=user("alice")
            )
            result = await gov.execute(request.request_id)
            assert result.request.status.value == "executed"
            stored = await gov.states.get("counters")
            assert stored is not None
            assert stored.state.values == {"a": 3}
    assert "connection_check_interval is not set" in caplog.text
    assert any("options" in startup for startup in proxy.startups), "the check was asked for"


async def test_behind_such_a_pooler_a_statement_timeout_is_refused_at_once_with_the_reason(
    pooler: tuple[Pooler, str], schema: str
) -> None:
    """A statement timeout the user asked for is never dropped quietly; and the store says
    why at once, where the pool would retry until its timeout and report only that."""
    _, url = pooler
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="statement_timeout on the database role"):
        await PostgresStore.open(
            with_schema(url, schema),
            registry=sample_registry(),
            statement_timeout=5,
            connect_timeout=30,
        )
    assert time.monotonic() - started < 10


async def test_a_pool_connection_refused_for_another_reason_is_reported_at_once(
    pooler: tuple[Pooler, str], schema: str
) -> None:
    """The server accepts the connection that migrates the schema, then refuses every
    other: its own reason is reported at once, not the pool's timeout."""
    proxy, url = pooler
    proxy.refuse_after = 1
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="too many clients"):
        await PostgresStore.open(
            with_schema(url, schema), registry=sample_registry(), connect_timeout=30
        )
    assert time.monotonic() - started < 10


async def _prepared_after_operations(url: str, state_id: str) -> int:
    """Prepared statements the store's one connection holds after a few executions."""
    async with Governance.open(url, registry=registry(), max_size=1) as gov:
        await gov.states.put(state_id, Counters())
        for _ in range(8):
            request = await gov.submit(
                Add(key="a", amount=1), state_id=state_id, context=user("alice")
            )
            await gov.execute(request.request_id)
        store = gov.requests
        assert isinstance(store, PostgresRequestStore)
        async with store._db.connection() as conn:
            cursor = await conn.execute("SELECT count(*) FROM pg_prepared_statements")
            row = await cursor.fetchone()
    assert row is not None
    prepared: int = row[0]
    return prepared


async def test_with_prepare_threshold_none_the_server_holds_no_prepared_statement(
    postgres_url: str, schema: str
) -> None:
    """What a pooler in transaction mode needs: every statement goes unprepared (and
    psycopg's default prepares the statements an operation repeats)."""
    url = with_schema(postgres_url, schema)
    assert await _prepared_after_operations(url, "default") > 0
    assert await _prepared_after_operations(url + "&prepare_threshold=none", "never") == 0


@pytest.mark.parametrize(
    ("options", "query"),
    [
        ({"prepare_threshold": -1}, ""),
        ({"prepare_threshold": True}, ""),
        ({"prepare_threshold": "5"}, ""),
        ({}, "?prepare_threshold=often"),
    ],
)
async def test_a_malformed_prepare_threshold_is_refused_before_connecting(
    options: dict[str, Any], query: str
) -> None:
    with pytest.raises(ConfigurationError, match=r"prepare_threshold(=.* is malformed| must be)"):
        await PostgresStore.open(
            "postgresql://postgres@127.0.0.1:1/test" + query,
            registry=sample_registry(),
            **options,
        )
