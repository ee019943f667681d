"""The Redis backend's hot path on the wire: one packed command, one reply, no extras.

redis-py's generic path costs more client CPU than a loopback round trip: the pool takes a
lock, records observability counters and probes the socket on every checkout and release,
``send_packed_command`` wraps each write in a task (``asyncio.wait_for``) and the packer
encodes argument by argument. :class:`Wire` keeps the connections it borrowed from the
client's pool between calls (they stay counted as in use by the pool, which closes them
with the client) and sends each command as one ``bytes`` (:func:`pack`), reading the reply
with the connection's own parser, under one ``socket_timeout`` for the write and the read.

The guarantees of the generic path are kept: a connection whose reply was not read whole
(cancelled, timed out, dropped) is disconnected and never reused; one whose peer has gone
(EOF, closing transport) is reconnected before a command is written to it, so a command is
never resent after a failure; error replies are raised as redis-py's ``ResponseError``
subclasses (``NoScriptError``, ``ReadOnlyError`` ...), and failures as its
``ConnectionError`` / ``TimeoutError``. When the user bounds the pool (``max_connections``)
no connection is kept between calls, so the other paths are never starved of one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.exceptions

__all__ = ["Wire", "pack"]


def pack(command: Sequence[bytes | str | int]) -> bytes:
    """``command`` in the Redis protocol (RESP2), as one ``bytes``.

    Text is UTF-8 (strict, like redis-py's encoder); ``int`` is written in decimal.
    """
    parts = [
        b"$%d\r\n%b\r\n" % (len(arg), arg)
        for arg in [
            arg if type(arg) is bytes else arg.encode() if type(arg) is str else _coerce(arg)
            for arg in command
        ]
    ]
    return b"*%d\r\n%b" % (len(parts), b"".join(parts))


def _coerce(arg: object) -> bytes:
    """The bytes of an argument that is not exactly ``bytes``, ``str`` or ``int``."""
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bytes | bytearray | memoryview):
        return bytes(arg)
    if isinstance(arg, int) and not isinstance(arg, bool):
        return b"%d" % arg
    raise TypeError(f"cannot send {type(arg).__name__} to Redis: {arg!r}")


def _usable(connection: Any) -> bool:
    """Whether an idle connection can take a command: connected, its peer still there."""
    writer = connection._writer
    reader = connection._reader
    return (
        writer is not None
        and reader is not None
        and not writer.transport.is_closing()
        and not reader.at_eof()
    )


class Wire:
    """Packed commands on connections borrowed from ``pool`` and kept between calls."""

    __slots__ = ("_idle", "_keep", "_pool", "_timeout", "_where")

    def __init__(self, pool: Any, *, keep: bool) -> None:
        """Commands on ``pool``'s connections; ``keep`` them between calls, or lend them back."""
        self._pool = pool
        kwargs = pool.connection_kwargs
        self._timeout: float | None = kwargs.get("socket_timeout")
        self._where = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        self._keep = keep
        self._idle: list[Any] = []

    async def call(self, packed: bytes) -> Any:
        """Send ``packed`` (one command) and return its reply; error replies are raised."""
        idle = self._idle
        connection = idle.pop() if idle else None
        if connection is None or not _usable(connection):
            if connection is not None:
                await self._give_back(connection, broken=True)
            connection = await self._pool.get_connection()
        try:
            async with asyncio.timeout(self._timeout):
                writer = connection._writer
                writer.write(packed)
                if writer.transport.get_write_buffer_size():
                    await writer.drain()
                reply = await connection._parser.read_response()
        except TimeoutError:
            await self._give_back(connection, broken=True)
            raise redis.exceptions.TimeoutError(f"Timeout reading from {self._where}") from None
        except OSError as error:
            await self._give_back(connection, broken=True)
            raise redis.exceptions.ConnectionError(
                f"Error while talking to {self._where}: {error}"
            ) from error
        except BaseException:
            await self._give_back(connection, broken=True)
            raise
        if self._keep:
            idle.append(connection)
        else:
            await self._pool.release(connection)
        if isinstance(reply, redis.exceptions.ResponseError):
            raise reply
        return reply

    async def _give_back(self, connection: Any, *, broken: bool) -> None:
        """Return ``connection`` to the pool (disconnected first when ``broken``)."""
        try:
            if broken:
                await connection.disconnect(nowait=True)
        finally:
            await self._pool.release(connection)

    async def aclose(self) -> None:
        """Lend every kept connection back to the pool (which the client then closes)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._give_back(connection, broken=False)
