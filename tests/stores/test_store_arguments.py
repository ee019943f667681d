"""Every store's reads and writes by id check their arguments alike.

A store is used directly too (``gov.states.get``, ``gov.requests.get``). Before, an id of
another type was a ``StoreUnavailableError`` on PostgreSQL ("operator does not exist: text
= smallint", as if the server were down: a worker would back off and retry it forever), a
bare ``TypeError`` from the driver on Redis and a silent ``None`` in memory and on SQLite.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mutator_governance import Governance
from mutator_governance.testing import sample_registry

from .test_postgres import drop_schema, with_schema
from .test_redis import _drop, _with_prefix

pytestmark = pytest.mark.anyio

BACKENDS = ["memory", "sqlite", "postgresql", "redis"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
async def gov(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Governance]:
    name = f"t_{uuid.uuid4().hex}"
    backend = request.param
    if backend == "memory":
        url = "memory://"
    elif backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'gov.db'}"
    elif backend == "postgresql":
        base = request.getfixturevalue("postgres_url")
        url = with_schema(base, name)
    else:
        base = request.getfixturevalue("redis_url")
        url = _with_prefix(base, name)
    try:
        async with Governance.open(url, registry=sample_registry()) as opened:
            yield opened
    finally:
        if backend == "postgresql":
            await drop_schema(base, name)
        elif backend == "redis":
            await _drop(base, name)


Lookup = Callable[[Governance, Any], Awaitable[Any]]

LOOKUPS: dict[str, tuple[str, Lookup]] = {
    "states.get": ("state_id", lambda gov, v: gov.states.get(v)),
    "requests.get": ("request_id", lambda gov, v: gov.requests.get(v)),
    "requests.by_state": ("state_id", lambda gov, v: gov.requests.by_state(v)),
    "decisions.for_request": ("request_id", lambda gov, v: gov.decisions.for_request(v)),
    "history": ("state_id", lambda gov, v: gov.history(v)),
}


@pytest.mark.parametrize("lookup", list(LOOKUPS))
@pytest.mark.parametrize("value", [123, None, b"acme", ["acme"]], ids=repr)
async def test_a_lookup_refuses_an_id_that_is_not_a_string(
    gov: Governance, lookup: str, value: Any
) -> None:
    name, call = LOOKUPS[lookup]
    with pytest.raises((TypeError, ValueError), match=f"{name} must be a "):
        await call(gov, value)


@pytest.mark.parametrize("expected", [1, 1.0, b"1"], ids=repr)
async def test_a_state_write_refuses_an_expected_version_of_another_type(
    gov: Governance, expected: Any
) -> None:
    """Not a ConcurrencyError ("expected 1"), which a caller would retry."""
    await gov.states.put("acme", {"n": 1})
    with pytest.raises(TypeError, match="expected_version must be a string or None"):
        await gov.states.put("acme", {"n": 2}, expected_version=expected)
    current = await gov.states.get("acme")
    assert current is not None
    assert (current.state, current.version) == ({"n": 1}, "1")


@pytest.mark.parametrize("gov", ["sqlite", "postgresql", "redis"], indirect=True)
@pytest.mark.parametrize("value", [123, None, b"acme"], ids=repr)
async def test_a_durable_history_store_refuses_an_id_that_is_not_a_string(
    gov: Governance, value: Any
) -> None:
    """The store's own history, which the engine writes to (the facade checks too)."""
    with pytest.raises(TypeError, match="state_id must be a string"):
        await gov.history_store.history(value)
