"""Service fixtures for the durable-store tests.

PostgreSQL and Redis tests run only against servers someone named:
``MUTATOR_TEST_POSTGRES_URL`` and ``MUTATOR_TEST_REDIS_URL``. Without the variable (or
when the named server does not answer) they skip with a one-line reason — a test never
writes to a server nobody named. CI sets both and ``MUTATOR_REQUIRE_SERVICES=1``, so a
missing server fails the run instead of silently skipping.
"""

from __future__ import annotations

import os
import socket
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
