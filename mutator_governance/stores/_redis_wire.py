"""The Redis backend's hot path on the wire: one packed command, one reply, no extras.

redis-py's generic path costs more client CPU than a loopback round trip: the pool takes a
lock, records observability counters and probes the socket on every checkout and release,
``send_packed_command`` wraps each write in a task (``asyncio.wait_for``) and the packer
encodes argument by argument. :class:`Wire` keeps the connections it borrowed from the
client's pool between calls (they stay counted as in use by the pool, which closes them
with the client) and sends each command as one ``bytes`` (:func:`pack`), reading the reply
with the connection's own parser, under one ``socket_timeout`` for the write and the read
(kept by one deadline timer per loop for every command in flight, not a timer per command:
``asyncio.timeout`` cost about a quarter of a round trip's client instructions).

The guarantees of the generic path are kept: a connection whose reply was not read whole
(cancelled, timed out, dropped) is disconnected and never reused; one whose peer has gone
(EOF, closing transport) is reconnected before a command is written to it, so a command is
never resent after a failure; error replies are raised as redis-py's ``ResponseError``
subclasses (``NoScriptError``, ``ReadOnlyError`` ...), and failures as its
``ConnectionError`` / ``TimeoutError``. When the user bounds the pool (``max_connections``)
no connection is kept between calls, so the other paths are never starved of one.

Script calls are packed by :class:`Evalsha`: the leading KEYS and ARGV that never change
for a store (its fixed key names) are packed once; of the parts that change per call, the
short ones (key names, counts, members) are kept packed by value and the long ones
(documents) are joined in without an intermediate copy. The bytes are the same as
:func:`pack` writes for the whole command.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import redis.exceptions

__all__ = ["Evalsha", "Wire", "pack"]


def pack(command: Sequence[bytes | str | int]) -> bytes:
    """``command`` in the Redis protocol (RESP2), as one ``bytes``.

    Text is UTF-8 (strict, like redis-py's encoder); ``int`` is written in decimal.
    """
    out = [b"*%d\r\n" % len(command)]
    try:
        _bulks(command, out)  # type: ignore[arg-type]
    except (TypeError, AttributeError, ValueError):  # a part not exactly str or bytes
        out = [out[0]]
        _bulks([_coerce(arg) for arg in command], out)
    return b"".join(out)


def _python_bulk(parts: tuple[str | bytes, ...]) -> bytes:
    """``parts`` as consecutive RESP2 bulk strings (no leading count)."""
    return pack(parts).split(b"\n", 1)[1]


_KEPT: dict[str | bytes, bytes] = {}
"""Short parts as packed, by value: key names, counts, members repeat from call to call."""
_KEPT_LIMIT = 4096
_KEEP_UP_TO = 160  # longer parts (documents) are packed each time, never hashed


def _kept(part: str | bytes) -> bytes:
    """``part`` packed as a bulk string, and kept in :data:`_KEPT` for the next call."""
    raw = part if part.__class__ is bytes else part.encode()  # type: ignore[union-attr]
    if len(_KEPT) >= _KEPT_LIMIT:
        _KEPT.clear()
    packed = _KEPT[part] = b"$%d\r\n%b\r\n" % (len(raw), raw)
    return packed


def _bulks(parts: Sequence[str | bytes], out: list[bytes]) -> None:
    """Append ``parts`` to ``out`` as RESP2 bulk strings (text as strict UTF-8).

    Measured under callgrind, this costs about half of hiredis's C packer for a commit
    script's ~45 parts: a short part is a dict hit, a long one is not copied until the
    command is joined.
    """
    kept = _KEPT
    for part in parts:
        if len(part) > _KEEP_UP_TO:
            raw = part if part.__class__ is bytes else part.encode()  # type: ignore[union-attr]
            out += (b"$%d\r\n" % len(raw), raw, b"\r\n")
        else:
            packed = kept.get(part)
            out.append(_kept(part) if packed is None else packed)


class Evalsha:
    """``EVALSHA`` of one script whose leading KEYS and ARGV never change, packed once.

    :meth:`pack` writes ``EVALSHA sha numkeys *fixed_keys *keys *fixed_args *args`` (what
    :func:`pack` writes for that command) and packs only ``keys`` and ``args`` per call:
    the commit script's seven fixed keys and two fixed arguments cost nothing after the
    first. Per-call parts are text (UTF-8, strict) or bytes.
    """

    __slots__ = ("_args", "_count", "_head", "_keys", "_nkeys", "sha", "source")

    def __init__(self, source: str, *, keys: Sequence[str] = (), args: Sequence[str] = ()) -> None:
        """``source``'s calls, each starting its KEYS with ``keys`` and its ARGV with ``args``."""
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._head = _python_bulk(("EVALSHA", self.sha))
        self._keys = _python_bulk(tuple(keys))
        self._args = _python_bulk(tuple(args))
        self._nkeys = len(keys)
        self._count = 3 + len(keys) + len(args)

    def pack(self, keys: Sequence[str | bytes], args: Sequence[str | bytes]) -> bytes:
        """The whole command for these per-call ``keys`` and ``args``, as one ``bytes``."""
        numkeys = b"%d" % (self._nkeys + len(keys))
        out = [
            b"*%d\r\n%b$%d\r\n%b\r\n%b"
            % (self._count + len(keys) + len(args), self._head, len(numkeys), numkeys, self._keys)
        ]
        _bulks(keys, out)
        out.append(self._args)
        _bulks(args, out)
        return b"".join(out)


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


class _Flight:
    """One command in flight under the wire's deadline watch."""

    __slots__ = ("cancelling", "deadline", "expired", "loop", "task")

    def __init__(
        self, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop, deadline: float
    ) -> None:
        self.task = task
        self.loop = loop
        self.deadline = deadline
        self.cancelling = task.cancelling()
        self.expired = False


class Wire:
    """Packed commands on connections borrowed from ``pool`` and kept between calls.

    Each command must complete within ``socket_timeout``, as under ``asyncio.timeout``,
    but without a timer per command: the commands in flight are kept in a set, and one
    timer per loop (armed at the nearest deadline, and only then) cancels those past
    theirs. Cancelling is :func:`asyncio.timeout`'s: the watch cancels the command's task,
    and the command turns that cancellation (and only that one) into a timeout.
    """

    __slots__ = ("_flights", "_idle", "_keep", "_pool", "_timeout", "_watches", "_where")

    def __init__(self, pool: Any, *, keep: bool) -> None:
        """Commands on ``pool``'s connections; ``keep`` them between calls, or lend them back."""
        self._pool = pool
        kwargs = pool.connection_kwargs
        self._timeout: float | None = kwargs.get("socket_timeout")
        self._where = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        self._keep = keep
        self._idle: list[Any] = []
        self._flights: set[_Flight] = set()
        self._watches: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}

    async def call(self, packed: bytes) -> Any:
        """Send ``packed`` (one command) and return its reply; error replies are raised."""
        idle = self._idle
        connection = idle.pop() if idle else None
        if connection is None or not _usable(connection):
            if connection is not None:
                await self._give_back(connection, broken=True)
            connection = await self._pool.get_connection()
        flight = self._watch()
        try:
            try:
                writer = connection._writer
                writer.write(packed)
                if writer.transport.get_write_buffer_size():
                    await writer.drain()
                reply = await connection._parser.read_response()
            finally:
                if flight is not None:
                    self._flights.discard(flight)
        except asyncio.CancelledError:
            if (
                flight is not None
                and flight.expired
                and flight.task.uncancel() <= flight.cancelling
            ):
                await self._give_back(connection, broken=True)
                raise redis.exceptions.TimeoutError(f"Timeout reading from {self._where}") from None
            await self._give_back(connection, broken=True)
            raise
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

    def _watch(self) -> _Flight | None:
        """Put the calling task's command under the deadline watch (None: no timeout)."""
        timeout = self._timeout
        if timeout is None:
            return None
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:  # pragma: no cover - a coroutine always runs in a task on asyncio
            return None
        flight = _Flight(task, loop, loop.time() + timeout)
        self._flights.add(flight)
        if loop not in self._watches:
            deadline = flight.deadline
            self._watches[loop] = loop.call_at(deadline, self._expire, loop, deadline)
        return flight

    def _expire(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Cancel the commands on ``loop`` due by now (the timer was set for ``when``: the
        loop may run it a clock tick early); watch for the nearest other."""
        del self._watches[loop]
        now = max(loop.time(), when)
        nearest: float | None = None
        for flight in self._flights:
            if flight.loop is not loop or flight.expired:
                continue
            if flight.deadline <= now:
                flight.expired = True
                flight.task.cancel()
            elif nearest is None or flight.deadline < nearest:
                nearest = flight.deadline
        if nearest is not None:
            self._watches[loop] = loop.call_at(nearest, self._expire, loop, nearest)

    async def _give_back(self, connection: Any, *, broken: bool) -> None:
        """Return ``connection`` to the pool (disconnected first when ``broken``)."""
        try:
            if broken:
                await connection.disconnect(nowait=True)
        finally:
            await self._pool.release(connection)

    async def aclose(self) -> None:
        """Lend every kept connection back to the pool (which the client then closes); with
        no command in flight, drop the deadline watch (a closed store leaves no timer)."""
        if not self._flights:
            for handle in self._watches.values():
                handle.cancel()
            self._watches.clear()
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._give_back(connection, broken=False)
