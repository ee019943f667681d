"""A request's stored W3C trace context survives every durable store (it is in the document)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from mutator_governance import MutationRequest
from mutator_governance.stores import open_store
from mutator_governance.testing import sample_registry, sample_rich_request

pytestmark = pytest.mark.anyio

TRACE = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=value",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
async def store_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A fresh store URL per backend, cleaned up afterwards."""
    name = f"t_{uuid.uuid4().hex}"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gov.db'}", {}
    elif request.param == "postgresql":
        from .test_postgres import drop_schema

        url = request.getfixturevalue("postgres_url")
        yield url, {"schema": name}
        await drop_schema(url, name)
    else:
        from .test_redis import _drop

        url = request.getfixturevalue("redis_url")
        yield url, {"prefix": name}
        await _drop(url, name)


async def test_trace_context_round_trips(store_url: tuple[str, dict[str, Any]]) -> None:
    url, options = store_url
    request: MutationRequest = attrs.evolve(sample_rich_request("r1"), trace_context=TRACE)
    store = await open_store(url, registry=sample_registry(), **options)
    try:
        await store.requests.create(request)
        stored = await store.requests.get("r1")
    finally:
        await store.aclose()
    assert stored is not None
    assert dict(stored.trace_context) == TRACE
