"""A committer that reads the state back with the claim is used for it: one call, not two."""

from __future__ import annotations

from typing import Any

import pytest

from mutator_governance import ExecutionCommitter, GovernedCommit, MutationRequest, VersionedState

from .conftest import STATE_ID, World
from .test_worker import quotas_of

pytestmark = pytest.mark.anyio


class CountingStates:
    """The state store, counting ``get`` calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gets = 0

    async def get(self, state_id: str) -> VersionedState[Any] | None:
        self.gets += 1
        state: VersionedState[Any] | None = await self.inner.get(state_id)
        return state

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class ReadingCommitter:
    """Commits through ``inner`` and reads the state back in the same call (like a server)."""

    atomic = True

    def __init__(self, inner: ExecutionCommitter, states: Any) -> None:
        self.inner = inner
        self.states = states
        self.reads = 0

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        return await self.inner.commit(commit)

    async def commit_reading(
        self, commit: GovernedCommit, state_id: str
    ) -> tuple[tuple[MutationRequest, ...], VersionedState[Any] | None]:
        self.reads += 1
        stored = await self.inner.commit(commit)
        return stored, await self.states.get(state_id)


async def test_an_execution_claims_and_reads_its_state_in_one_call(world: World) -> None:
    ledger = world.gov.executor.ledger
    plain = ledger.committer
    states = CountingStates(ledger.states)
    ledger.states = states  # type: ignore[assignment]
    reading = ReadingCommitter(plain, world.gov.states)
    ledger.committer = reading
    assert ledger.reads_with_commit

    result = await world.gov.execute((await world.submit()).request_id)

    assert result.executed is True
    assert reading.reads == 1
    assert states.gets == 0
    assert await quotas_of(world, STATE_ID) == ({"bob": 11}, "2")


async def test_a_committer_swapped_in_later_decides_how_the_claim_reads(world: World) -> None:
    ledger = world.gov.executor.ledger
    plain = ledger.committer
    reading = ReadingCommitter(plain, world.gov.states)
    ledger.committer = reading
    ledger.committer = plain
    states = CountingStates(ledger.states)
    ledger.states = states  # type: ignore[assignment]

    result = await world.gov.execute((await world.submit()).request_id)

    assert result.executed is True
    assert not ledger.reads_with_commit
    assert reading.reads == 0
    assert states.gets == 1
