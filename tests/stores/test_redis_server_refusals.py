"""What the Redis store makes of a server that refuses (full, a cluster, an ACL) or may evict.

Each test starts its own ``redis-server`` (on a free port, nothing kept on disk) in the
state it needs, so the shared test server is never reconfigured. A refusal that says
nothing about the stored data is a StoreUnavailableError, which the worker retries as an
outage, never a StoredDataError, which it parks as unreadable.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

import redis
import redis.exceptions
from redis._parsers.base import BaseParser

from mutator import ConfigurationError
from mutator_governance import (
    Governance,
    MutationRequest,
    RequestStatus,
    StoredDataError,
    StoreUnavailableError,
)
from mutator_governance.stores._redis import _Guard

from .pg_domain import Add, Counters, RequireCarol, registry, user

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def start_server(private_redis: Callable[..., dict[str, Any]]) -> Callable[..., int]:
    """Start a private ``redis-server`` with extra arguments; return its port."""
    return lambda *arguments: int(private_redis(*arguments)["port"])


def _fill(port: int) -> None:
    """Leave the server with half the memory it uses: every write is refused (OOM)."""
    client = redis.Redis(host="127.0.0.1", port=port)
    client.set("filler", "x" * 2_000_000)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used // 2)


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _make_room(port: int) -> None:
    redis.Redis(host="127.0.0.1", port=port).config_set("maxmemory", 0)


async def _approved(gov: Governance, *, amount: int) -> MutationRequest:
    """An APPROVED request adding ``amount`` to counter ``a`` of a new state."""
    gov.engine.register_policy(RequireCarol())
    await gov.states.put("counters", Counters())
    request = await gov.submit(Add(key="a", amount=amount), state_id="counters", context=user("al"))
    approved = await gov.approve(request.request_id, context=user("carol"))
    assert approved.status is RequestStatus.APPROVED
    return approved


async def test_a_full_server_is_an_outage_for_every_write(start_server: Callable[..., int]) -> None:
    port = start_server("--maxmemory-policy", "noeviction")
    url = f"redis://127.0.0.1:{port}/0?prefix=full"
    async with Governance.open(url, registry=registry()) as gov:
        request = await _approved(gov, amount=1)
        _fill(port)
        with pytest.raises(StoreUnavailableError, match="memory"):
            await gov.execute(request.request_id)
        with pytest.raises(StoreUnavailableError, match="memory"):
            await gov.submit(Add(key="b", amount=1), state_id="counters", context=user("al"))


async def test_a_full_server_leaves_the_request_approved_until_it_has_room(
    start_server: Callable[..., int],
) -> None:
    port = start_server("--maxmemory-policy", "noeviction")
    url = f"redis://127.0.0.1:{port}/0?prefix=full"
    async with Governance.open(url, registry=registry()) as gov:
        request = await _approved(gov, amount=2)
        _fill(port)
        with pytest.raises(StoreUnavailableError):
            await gov.execute(request.request_id)
        assert (await gov.get(request.request_id)).status is RequestStatus.APPROVED
        _make_room(port)
        result = await gov.execute(request.request_id)
        assert result.request.status is RequestStatus.EXECUTED
        stored = await gov.states.get("counters")
        assert stored is not None
        assert stored.state.values == {"a": 2}


async def test_a_cluster_node_is_refused_when_the_store_opens(
    start_server: Callable[..., int],
) -> None:
    port = start_server(
        "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{os.getpid()}.conf"
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    _wait_until(lambda: b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"))
    with pytest.raises(ConfigurationError, match="Redis Cluster node"):
        async with Governance.open(f"redis://127.0.0.1:{port}/0", registry=registry()):
            pass
    assert client.dbsize() == 0, "nothing was written"


async def test_a_command_the_acl_denies_is_an_outage(start_server: Callable[..., int]) -> None:
    port = start_server()
    admin = redis.Redis(host="127.0.0.1", port=port)
    admin.execute_command("ACL", "SETUSER", "app", "on", ">secret", "~*", "+@all")
    url = f"redis://app:secret@127.0.0.1:{port}/0?prefix=acl"
    async with Governance.open(url, registry=registry()) as gov:
        await gov.states.put("counters", Counters())
        admin.execute_command("ACL", "SETUSER", "app", "-evalsha")
        with pytest.raises(StoreUnavailableError, match="permission"):
            await gov.submit(Add(key="a", amount=1), state_id="counters", context=user("al"))


@pytest.mark.parametrize(
    ("reply", "outage"),
    [
        ("OOM command not allowed when used memory > 'maxmemory'.", True),
        ("CLUSTERDOWN The cluster is down", True),
        ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", True),
        ("TRYAGAIN Multiple keys request during rehashing of slot", True),
        ("CROSSSLOT Keys in request don't hash to the same slot", True),
        ("MOVED 3999 127.0.0.1:6381", True),
        ("READONLY You can't write against a read only replica.", True),
        ("BUSY Redis is busy running a script.", True),
        ("NOREPLICAS Not enough good replicas to write.", True),
        ("NOPERM User app has no permissions to run the 'evalsha' command", True),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", False),
        ("ERR user_script:12: Script attempted to access nonexistent global variable", False),
    ],
)
def test_each_error_reply_is_told_apart_as_redis_py_raises_it(reply: str, outage: bool) -> None:
    """The classification of every refusal, through redis-py's own reply parser (which
    strips the code of the replies it has a class for)."""
    error = BaseParser.parse_error(reply)
    expected = StoreUnavailableError if outage else StoredDataError
    with pytest.raises(expected), _Guard(_Unavailable(), "key"):  # type: ignore[arg-type]
        raise error


class _Unavailable:
    """The one thing a guard asks of its backend."""

    def unavailable(self, error: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(f"Redis is unavailable: {error}", url="redis://test")


@pytest.mark.parametrize(
    ("policy", "warned"),
    [
        ("allkeys-lru", True),
        ("allkeys-random", True),
        ("noeviction", False),
        ("volatile-lru", False),
    ],
)
async def test_a_server_that_may_evict_any_key_is_named_in_a_warning(
    start_server: Callable[..., int],
    caplog: pytest.LogCaptureFixture,
    policy: str,
    warned: bool,
) -> None:
    """The store sets no expiry on its keys, so only an ``allkeys-*`` policy can drop them."""
    port = start_server("--maxmemory", "100mb", "--maxmemory-policy", policy)
    with caplog.at_level(logging.WARNING, logger="mutator.governance.redis"):
        async with Governance.open(f"redis://127.0.0.1:{port}/0", registry=registry()):
            pass
    assert ("evicts any key" in caplog.text) is warned
