"""A long-running process: what one governed operation leaves behind once it returned."""

from __future__ import annotations

import contextvars
import gc
import weakref

import pytest

from .conftest import World

pytestmark = pytest.mark.anyio


class Scoped:
    """A request-scoped value (a span, a session) the caller holds in a context variable."""


_scoped: contextvars.ContextVar[Scoped | None] = contextvars.ContextVar("scoped", default=None)


async def test_an_execution_keeps_nothing_of_the_callers_context(world: World) -> None:
    """What the caller's context holds (an OpenTelemetry span...) is freed once execute returns.

    The lease renewal armed for each execution once kept a copy of that context until the
    lease's third ran out (100 s), or for good on a loop that never went idle.
    """
    gone: list[weakref.ref[Scoped]] = []
    for _ in range(3):
        request = await world.submit()
        value = Scoped()
        gone.append(weakref.ref(value))
        token = _scoped.set(value)
        try:
            outcome = await world.gov.execute(request.request_id)
        finally:
            _scoped.reset(token)
        assert outcome.request.status.name == "EXECUTED"
        del value
    gc.collect()
    assert [ref() for ref in gone] == [None, None, None]
