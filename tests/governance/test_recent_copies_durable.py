"""Copies made stale by another process, on the durable stores (SQLite, PostgreSQL, Redis).

Two governances opened on one store act as two processes: the one that submitted a request
holds its copy; the other changes the request; every operation the first then starts from
its copy ends exactly as if it had read the request first.
"""

from __future__ import annotations

import pytest

from mutator_governance import InvalidTransitionError, RequestNotExecutableError, RequestStatus

from . import test_stored_documents as documents
from .test_stored_documents import ACCOUNT, STATE_ID, Durable, Rename, opened, user

# the durable stores' fixtures (a SQLite file, a PostgreSQL schema, a Redis prefix)
case = documents.case
anyio_backend = documents.anyio_backend
durable = documents.durable
postgres_url = documents.postgres_url
redis_url = documents.redis_url

pytestmark = pytest.mark.anyio


async def test_an_execution_elsewhere_leaves_nothing_to_run_here(durable: Durable) -> None:
    async with opened(durable) as here, opened(durable) as there:
        await here.states.put(STATE_ID, ACCOUNT)
        request = await here.submit(Rename("bea"), state_id=STATE_ID, context=user("al"))
        done = await there.execute(request.request_id)
        assert done.request.status is RequestStatus.EXECUTED
        with pytest.raises(RequestNotExecutableError, match="already executed"):
            await here.execute(request.request_id)
        with pytest.raises(InvalidTransitionError):
            await here.cancel(request.request_id, context=user("al"))
        state = await here.states.get(STATE_ID)
        assert state is not None
        assert (state.state.owner_name, state.version) == ("bea", "2")
        stored = await here.get(request.request_id)
        assert stored == done.request
        assert tuple(await here.decisions.for_request(request.request_id)) == stored.decisions


async def test_a_cancel_elsewhere_is_what_an_execution_here_finds(durable: Durable) -> None:
    async with opened(durable) as here, opened(durable) as there:
        await here.states.put(STATE_ID, ACCOUNT)
        request = await here.submit(Rename("bea"), state_id=STATE_ID, context=user("al"))
        canceled = await there.cancel(request.request_id, context=user("al"))
        with pytest.raises(RequestNotExecutableError):
            await here.execute(request.request_id)
        state = await here.states.get(STATE_ID)
        assert state is not None
        assert (state.state.owner_name, state.version) == ("ann", "1")
        assert await here.get(request.request_id) == canceled
