"""Service fixtures for the durable-store tests.

PostgreSQL and Redis tests run only against servers someone named:
``MUTATOR_TEST_POSTGRES_URL`` and ``MUTATOR_TEST_REDIS_URL``. Without the variable (or
when the named server does not answer) they skip with a one-line reason — a test never
writes to a server nobody named. CI sets both and ``MUTATOR_REQUIRE_SERVICES=1``, so a
missing server fails the run instead of silently skipping.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get("MUTATOR_TEST_POSTGRES_URL") or None
REDIS_URL = os.environ.get("MUTATOR_TEST_REDIS_URL") or None
REQUIRE_SERVICES = os.environ.get("MUTATOR_REQUIRE_SERVICES") == "1"


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1.0
        ):
            return True
    except OSError:
        return False


def _need(name: str, url: str | None, default_port: int, variable: str) -> str:
    if url is not None and _answers(url, default_port):
        return url
    reason = (
        f"{name} tests need {variable} (no server was named)"
        if url is None
        else f"{name} is not reachable at {url} (named by {variable})"
    )
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}; MUTATOR_REQUIRE_SERVICES=1 requires it")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server URL (tests skip or fail when it does not answer)."""
    return _need("PostgreSQL", POSTGRES_URL, 5432, "MUTATOR_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server URL (tests skip or fail when it does not answer)."""
    return _need("Redis", REDIS_URL, 6379, "MUTATOR_TEST_REDIS_URL")


REDIS_SERVER = shutil.which("redis-server")


def _free_port() -> int:
    """A free port whose port + 10,000 (a cluster node's bus) is free too, both below
    Linux's ephemeral range (32,768 and up), where a burst of client sockets could take
    the bus port between this check and the server's start."""
    for port in random.sample(range(20_000, 22_700), 200):
        with socket.socket() as probe, socket.socket() as bus, contextlib.suppress(OSError):
            probe.bind(("127.0.0.1", port))
            bus.bind(("127.0.0.1", port + 10_000))
            return port
    raise AssertionError("no free port")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., dict[str, Any]]]:
    """Start private ``redis-server``s with extra arguments, each on a free port and a
    socket in ``tmp_path``; return ``{"port": ..., "socket": ...}``. Stopped after the test.
    """
    if REDIS_SERVER is None:
        reason = "redis-server is not installed"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason}; MUTATOR_REQUIRE_SERVICES=1 requires it")
        pytest.skip(reason)
    import redis
    import redis.exceptions

    started: list[subprocess.Popen[bytes]] = []

    def start(*arguments: str) -> dict[str, Any]:
        port = _free_port()
        path = tmp_path / f"redis-{port}.sock"
        process = subprocess.Popen(
            [
                REDIS_SERVER,
                *("--port", str(port), "--bind", "127.0.0.1", "--unixsocket", str(path)),
                *("--save", "", "--appendonly", "no", "--dir", str(tmp_path), *arguments),
            ],
            stdout=subprocess.DEVNULL,
        )
        started.append(process)
        client = redis.Redis(unix_socket_path=str(path))
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except (redis.exceptions.ConnectionError, redis.exceptions.AuthenticationError):
                if process.poll() is not None:
                    raise AssertionError(f"redis-server {arguments} exited") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
            except redis.exceptions.ResponseError:
                break  # up, and refusing the unauthenticated PING
        return {"port": port, "socket": str(path)}

    yield start
    for process in started:
        process.terminate()
        process.wait(10)
