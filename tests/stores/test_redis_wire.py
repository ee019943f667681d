"""The Redis store's hot path on the wire (``_redis_wire``): packing, kept connections.

Commands are packed exactly as redis-py packs them; a kept connection whose peer went
away is replaced before a command is written to it; a cancelled or failed command never
leaves its reply for the next one; error replies keep the connection; a bounded pool is
never held on to.
"""

from __future__ import annotations

import anyio
import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

import redis.asyncio as aioredis
import redis.exceptions

from mutator_governance import StoredDataError
from mutator_governance.stores import _redis_wire
from mutator_governance.stores._redis import RedisStore
from mutator_governance.stores._redis_wire import Evalsha, pack
from mutator_governance.testing import SampleState, sample_registry

from .test_redis import store_fixtures


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


prefix, store = store_fixtures(sample_registry)


@pytest.mark.parametrize(
    "command",
    [
        ("PING",),
        ("HGET", "p:request:a", "document"),
        ("EVALSHA", "0" * 40, 2, "k1", b"k2", "", b"", 0, -17, 12345678901234567890),
        ("SET", "caf\u00e9:\u2603", "\U0001f600" * 3, b"\x00\xff\r\n"),
        ("SET", "big", b"x" * 100_000),
        ("SET", memoryview(bytearray(b"key")), memoryview(b"value")),
        ("HSET", "p:k", "f", 7, "g", memoryview(bytearray(b"x" * 200))),
    ],
)
def test_pack_writes_what_redis_py_writes(command: tuple[object, ...]) -> None:
    connection = aioredis.Connection()
    assert pack(command) == b"".join(connection.pack_command(*command))  # type: ignore[arg-type]


SCRIPT = "return {KEYS[1], ARGV[1]}"
ODD_PARTS: list[str | bytes] = ["", b"", "caf\u00e9:\u2603", "\U0001f600", b"\x00\xff\r\n", "-1"]


@pytest.fixture(params=["kept", "fresh"])
def packer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way :class:`Evalsha` packs a short part: kept from an earlier call, or fresh."""
    if request.param == "fresh":
        monkeypatch.setattr(_redis_wire, "_KEPT", {})
    else:
        _redis_wire._KEPT.clear()
        for part in [*ODD_PARTS, "k", "a", "k1", b"k2", "\u2603" * 4]:
            _redis_wire._kept(part)
    return str(request.param)


@pytest.mark.parametrize(
    ("fixed_keys", "fixed_args", "keys", "args"),
    [
        ((), (), (), ()),
        ((), (), ("k",), ("a",)),
        (("p:seq", "p:caf\u00e9"), ("p:ready", "3"), (), ()),
        (("p:seq",), ("3",), ("k1", b"k2", "", "\u2603" * 4), ODD_PARTS),
        (("p:seq",), (), ODD_PARTS, ("x" * 70_000, b"y" * 100_000)),
        ((), (), ("k" * 160, b"k" * 161), ("\u2603" * 54, "\u2603" * 53, b"a" * 160)),
    ],
)
def test_evalsha_writes_what_redis_py_writes(
    packer: str,
    fixed_keys: tuple[str, ...],
    fixed_args: tuple[str, ...],
    keys: tuple[str | bytes, ...],
    args: tuple[str | bytes, ...],
) -> None:
    script = Evalsha(SCRIPT, keys=fixed_keys, args=fixed_args)
    all_keys = (*fixed_keys, *keys)
    command = ("EVALSHA", script.sha, len(all_keys), *all_keys, *fixed_args, *args)
    connection = aioredis.Connection()
    assert script.pack(keys, args) == b"".join(connection.pack_command(*command))
    assert script.pack(list(keys), list(args)) == pack(command)


def test_the_kept_parts_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_redis_wire, "_KEPT", {})
    script = Evalsha(SCRIPT)
    for n in range(_redis_wire._KEPT_LIMIT + 10):
        script.pack([f"k{n}"], [])
    assert 0 < len(_redis_wire._KEPT) <= _redis_wire._KEPT_LIMIT


def test_evalsha_names_the_script_as_redis_does() -> None:
    script = Evalsha(SCRIPT)
    assert script.sha == aioredis.Redis().register_script(SCRIPT).sha
    assert script.source == SCRIPT


def test_evalsha_refuses_text_that_is_not_utf8(packer: str) -> None:
    with pytest.raises(UnicodeEncodeError):
        Evalsha(SCRIPT, keys=["k"]).pack(["\ud800"], [])


@pytest.mark.parametrize("value", [1.5, True, None, object()])
def test_pack_refuses_what_it_cannot_encode(value: object) -> None:
    with pytest.raises(TypeError, match="cannot send"):
        pack(("SET", "k", value))  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_kept_connection_killed_by_the_server_is_replaced(
    store: RedisStore, redis_url: str
) -> None:
    await store.states.put("s:1", SampleState("s", 1))
    first = await store._b.call("CLIENT", "ID")
    admin = aioredis.Redis.from_url(redis_url)
    try:
        assert await admin.execute_command("CLIENT", "KILL", "ID", first) == 1  # type: ignore[no-untyped-call]
    finally:
        await admin.aclose()
    await anyio.sleep(0.05)  # the loop sees the peer's EOF
    state = await store.states.get("s:1")
    assert state is not None
    assert state.state == SampleState("s", 1)
    assert await store._b.call("CLIENT", "ID") != first


@pytest.mark.anyio
async def test_a_cancelled_command_never_leaves_its_reply_behind(
    store: RedisStore, prefix: str
) -> None:
    with anyio.move_on_after(0.2):
        await store._b.call("BLPOP", f"{prefix}:never", "5")
    assert await store._b.call("ECHO", "after") == b"after"
    assert await store._b.call("PING") == b"PONG"


@pytest.mark.anyio
async def test_an_error_reply_is_raised_and_the_connection_kept(
    store: RedisStore, prefix: str
) -> None:
    await store._b.call("SET", f"{prefix}:text", "x")
    first = await store._b.call("CLIENT", "ID")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await store._b.call("HGET", f"{prefix}:text", "field")
    assert await store._b.call("CLIENT", "ID") == first
    await store._b.call("SET", store.keys.state("t"), "x")
    with pytest.raises(StoredDataError):
        await store.states.get("t")
    assert await store._b.call("CLIENT", "ID") == first


@pytest.mark.anyio
async def test_concurrent_commands_each_get_their_own_reply(store: RedisStore) -> None:
    replies: dict[int, object] = {}

    async def echo(n: int) -> None:
        replies[n] = await store._b.call("ECHO", str(n))

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(echo, n)
    assert replies == {n: str(n).encode() for n in range(50)}


@pytest.mark.anyio
async def test_a_bounded_pool_is_lent_back_after_each_command(redis_url: str, prefix: str) -> None:
    store = await RedisStore.open(
        redis_url, registry=sample_registry(), prefix=prefix, max_connections=2
    )
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(store.states.get, "s:1")
        pool = store.client.connection_pool
        assert not pool._in_use_connections
        # Both connections are free for the driver's own paths (listings use pipelines).
        assert (await store.requests.list()).items == ()
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_commands_share_one_deadline_timer(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    await store._b.call("PING")
    timers: list[float] = []
    call_at = loop.call_at

    def counted(when: float, *args: object, **kwargs: object) -> asyncio.TimerHandle:
        timers.append(when)
        return call_at(when, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "call_at", counted)
    for _ in range(30):
        await store._b.call("PING")
    # The deadline watch armed by the first command covers the next ones: no timer each.
    assert len(timers) <= 1
    await store._b.wire.aclose()
    assert not store._b.wire._watches  # closed, it leaves no timer behind


@pytest.mark.anyio
async def test_only_the_command_past_its_deadline_times_out(redis_url: str, prefix: str) -> None:
    import asyncio

    store = await RedisStore.open(
        redis_url, registry=sample_registry(), prefix=prefix, socket_timeout=0.3
    )
    replies: list[bytes] = []
    timed_out: list[BaseException] = []

    async def stall() -> None:
        try:
            await store._b.call("BLPOP", f"{prefix}:never", "5")
        except redis.exceptions.TimeoutError as error:
            timed_out.append(error)
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0  # the timeout's cancellation was taken back
        replies.append(await store._b.call("ECHO", "after"))

    async def chatter() -> None:
        for n in range(6):
            replies.append(await store._b.call("ECHO", str(n)))
            await anyio.sleep(0.1)

    try:
        with anyio.fail_after(3):
            async with anyio.create_task_group() as tg:
                tg.start_soon(stall)
                tg.start_soon(chatter)
    finally:
        await store.aclose()
    assert len(timed_out) == 1
    assert sorted(replies) == sorted([str(n).encode() for n in range(6)] + [b"after"])
