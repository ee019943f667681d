"""The contract of the commit seam: every governance operation is one atomic write."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import attrs
import pytest

from mutator import (
    AuditEntry,
    AuditOutcome,
    ChangeSet,
    ConcurrencyError,
    HistoryEntry,
    MutationContext,
    MutationMode,
)

from .._commit_types import GovernedCommit, RequestWrite, StateWrite
from .._decisions import RequestDecision
from .._enums import LifecycleDecision, RequestStatus
from .._errors import RequestAlreadyExistsError, RequestConcurrencyError, RequestNotFoundError
from .._request import MutationRequest
from .._transitions import transition
from ..protocols import GovernanceStore, ReadingCommitter
from ._fixtures import SAMPLE_STATE_ID, SampleState, sample_request
from ._store_under_test import StoreUnderTest, implementing

__all__ = ["GovernanceStoreContract"]

CONCURRENT_WRITERS = 12


def _decided(request: MutationRequest, status: RequestStatus, code: LifecycleDecision) -> Any:
    at = request.updated_at + timedelta(seconds=1)
    decision = RequestDecision(code, MutationContext.user("bob"), "contract", at)
    return transition(request, status, [decision], at=at)


def _records(request: MutationRequest) -> tuple[AuditEntry, HistoryEntry]:
    mutation = request.mutation
    context = MutationContext.user("alice", mode=MutationMode.COMMIT)
    at = request.updated_at
    audit = AuditEntry(
        f"exec-{request.request_id}",
        request.state_id,
        "SampleState",
        mutation.intent,
        context,
        MutationMode.COMMIT,
        AuditOutcome.SUCCEEDED,
        at,
        0.001,
    )
    history = HistoryEntry(
        f"exec-{request.request_id}",
        request.state_id,
        mutation.intent,
        context,
        ChangeSet(),
        at,
        0.001,
        (),
        mutation,
    )
    return audit, history


@pytest.mark.anyio
class GovernanceStoreContract(StoreUnderTest):
    """What every :class:`~mutator_governance.protocols.GovernanceStore` must do.

    Subclass it under a name pytest collects and implement :meth:`make_store` (a new,
    empty store per test; override :meth:`close_store` to release it). The suite checks
    that each :class:`GovernedCommit` — the one write of every governance operation —
    lands whole or not at all, that a lost compare-and-set writes nothing (no decision,
    no state, no audit or history entry), that a request produces at most one state
    version, and that the decision log always equals the request's decisions.
    """

    async def _seeded(self, store: GovernanceStore, request_id: str = "req-1") -> MutationRequest:
        await store.states.put(SAMPLE_STATE_ID, SampleState("sample", 1))
        request = sample_request(request_id, status=RequestStatus.APPROVED)
        (created,) = await store.committer.commit(GovernedCommit((RequestWrite.create(request),)))
        return created

    async def _log_matches(self, store: GovernanceStore, request_id: str) -> None:
        request = await store.requests.get(request_id)
        assert request is not None
        assert tuple(await store.decisions.for_request(request_id)) == request.decisions

    async def test_create_stores_request_and_its_decisions(self, store: GovernanceStore) -> None:
        created = await self._seeded(store)
        assert created.revision == 0
        assert await store.requests.get("req-1") == created
        await self._log_matches(store, "req-1")

    async def test_create_twice_raises_and_changes_nothing(self, store: GovernanceStore) -> None:
        created = await self._seeded(store)
        again = attrs.evolve(created, metadata={"second": True})
        with pytest.raises(RequestAlreadyExistsError):
            await store.committer.commit(GovernedCommit((RequestWrite.create(again),)))
        assert await store.requests.get("req-1") == created
        await self._log_matches(store, "req-1")

    async def test_update_advances_revision_and_logs_new_decisions(
        self, store: GovernanceStore
    ) -> None:
        created = await self._seeded(store)
        canceled = _decided(created, RequestStatus.CANCELED, LifecycleDecision.CANCELED)
        (stored,) = await store.committer.commit(
            GovernedCommit((RequestWrite.update(created, canceled),))
        )
        assert stored.revision == 1
        assert stored.status is RequestStatus.CANCELED
        assert await store.requests.get("req-1") == stored
        await self._log_matches(store, "req-1")

    async def test_stale_revision_writes_nothing(self, store: GovernanceStore) -> None:
        created = await self._seeded(store)
        canceled = _decided(created, RequestStatus.CANCELED, LifecycleDecision.CANCELED)
        await store.committer.commit(GovernedCommit((RequestWrite.update(created, canceled),)))
        before = await store.requests.get("req-1")
        rejected = _decided(created, RequestStatus.REJECTED, LifecycleDecision.REJECTED)
        audit, history = _records(created)
        write = StateWrite(SAMPLE_STATE_ID, SampleState("sample", 2), "1", "2", "req-1")
        with pytest.raises(RequestConcurrencyError):
            await store.committer.commit(
                GovernedCommit(
                    (RequestWrite.update(created, rejected),), write, (history,), (audit,)
                )
            )
        assert await store.requests.get("req-1") == before
        await self._log_matches(store, "req-1")
        current = await store.states.get(SAMPLE_STATE_ID)
        assert current is not None
        assert current.version == "1"
        assert await store.states.version_by_request(SAMPLE_STATE_ID, "req-1") is None
        assert list(await store.audit.entries(SAMPLE_STATE_ID)) == []
        assert (await store.history.history(SAMPLE_STATE_ID)).entries == ()

    async def test_unknown_request_writes_nothing(self, store: GovernanceStore) -> None:
        created = await self._seeded(store)
        ghost = attrs.evolve(created, request_id="ghost")
        canceled = _decided(created, RequestStatus.CANCELED, LifecycleDecision.CANCELED)
        with pytest.raises(RequestNotFoundError):
            await store.committer.commit(
                GovernedCommit(
                    (
                        RequestWrite.update(created, canceled),
                        RequestWrite.update(ghost, ghost),
                    )
                )
            )
        assert await store.requests.get("req-1") == created
        await self._log_matches(store, "req-1")

    async def test_execution_commit_lands_whole(self, store: GovernanceStore) -> None:
        created = await self._seeded(store)
        other = sample_request("req-2", status=RequestStatus.APPROVED)
        (linked,) = await store.committer.commit(GovernedCommit((RequestWrite.create(other),)))
        executed = _decided(created, RequestStatus.EXECUTED, LifecycleDecision.EXECUTED)
        noted = attrs.evolve(linked, metadata={"linked": True})
        audit, history = _records(created)
        stored = await store.committer.commit(
            GovernedCommit(
                (RequestWrite.update(created, executed), RequestWrite.update(linked, noted)),
                StateWrite(SAMPLE_STATE_ID, SampleState("sample", 2), "1", "2", "req-1"),
                (history,),
                (audit,),
            )
        )
        assert [r.revision for r in stored] == [1, 1]
        assert stored[0].status is RequestStatus.EXECUTED
        assert stored[1].metadata == {"linked": True}
        current = await store.states.get(SAMPLE_STATE_ID)
        assert current is not None
        assert (current.state, current.version) == (SampleState("sample", 2), "2")
        assert await store.states.version_by_request(SAMPLE_STATE_ID, "req-1") == "2"
        assert [e.execution_id for e in await store.audit.entries(SAMPLE_STATE_ID)] == [
            "exec-req-1"
        ]
        assert [e.execution_id for e in (await store.history.history(SAMPLE_STATE_ID)).entries] == [
            "exec-req-1"
        ]
        await self._log_matches(store, "req-1")
        await self._log_matches(store, "req-2")

    async def test_stale_state_version_writes_nothing(self, store: GovernanceStore) -> None:
        created = await self._seeded(store)
        executed = _decided(created, RequestStatus.EXECUTED, LifecycleDecision.EXECUTED)
        audit, history = _records(created)
        with pytest.raises(ConcurrencyError):
            await store.committer.commit(
                GovernedCommit(
                    (RequestWrite.update(created, executed),),
                    StateWrite(SAMPLE_STATE_ID, SampleState("sample", 9), "7", "8", "req-1"),
                    (history,),
                    (audit,),
                )
            )
        assert await store.requests.get("req-1") == created
        await self._log_matches(store, "req-1")
        current = await store.states.get(SAMPLE_STATE_ID)
        assert current is not None
        assert current.version == "1"
        assert list(await store.audit.entries(SAMPLE_STATE_ID)) == []

    async def test_a_request_produces_at_most_one_version(self, store: GovernanceStore) -> None:
        await self._seeded(store)
        version = await store.states.put(
            SAMPLE_STATE_ID, SampleState("sample", 2), expected_version="1", request_id="req-1"
        )
        assert version == "2"
        with pytest.raises(ConcurrencyError):
            await store.states.put(
                SAMPLE_STATE_ID, SampleState("sample", 3), expected_version="2", request_id="req-1"
            )
        current = await store.states.get(SAMPLE_STATE_ID)
        assert current is not None
        assert current.version == "2"
        assert await store.states.version_by_request(SAMPLE_STATE_ID, "req-1") == "2"

    async def test_racing_operations_on_one_request_land_once(self, store: GovernanceStore) -> None:
        created = await self._seeded(store)
        landed: list[MutationRequest] = []
        lost = 0

        async def cancel(n: int) -> None:
            nonlocal lost
            at = created.updated_at + timedelta(seconds=1)
            decision = RequestDecision(
                LifecycleDecision.CANCELED, MutationContext.user(f"actor-{n}"), str(n), at
            )
            after = transition(created, RequestStatus.CANCELED, [decision], at=at)
            try:
                landed.extend(
                    await store.committer.commit(
                        GovernedCommit((RequestWrite.update(created, after),))
                    )
                )
            except RequestConcurrencyError:
                lost += 1

        async with anyio.create_task_group() as group:
            for n in range(CONCURRENT_WRITERS):
                group.start_soon(cancel, n)
        assert len(landed) == 1
        assert lost == CONCURRENT_WRITERS - 1
        assert await store.requests.get("req-1") == landed[0]
        await self._log_matches(store, "req-1")

    # -- ReadingCommitter (optional): a commit that reads a state back in one round trip --

    async def test_commit_reading_returns_the_commit_and_the_state(
        self, store: GovernanceStore
    ) -> None:
        reading: ReadingCommitter = implementing(store.committer, ReadingCommitter)
        created = await self._seeded(store)
        claimed = _decided(created, RequestStatus.EXECUTING, LifecycleDecision.CLAIMED)
        (stored,), state = await reading.commit_reading(
            GovernedCommit((RequestWrite.update(created, claimed),)), SAMPLE_STATE_ID
        )
        assert stored.revision == 1
        assert await store.requests.get("req-1") == stored
        assert state == await store.states.get(SAMPLE_STATE_ID)
        assert state is not None
        assert (state.state, state.version) == (SampleState("sample", 1), "1")
        await self._log_matches(store, "req-1")

    async def test_commit_reading_reads_none_for_an_unknown_state(
        self, store: GovernanceStore
    ) -> None:
        reading: ReadingCommitter = implementing(store.committer, ReadingCommitter)
        created = await self._seeded(store)
        claimed = _decided(created, RequestStatus.EXECUTING, LifecycleDecision.CLAIMED)
        (stored,), state = await reading.commit_reading(
            GovernedCommit((RequestWrite.update(created, claimed),)), "no-such-state"
        )
        assert state is None
        assert stored.status is RequestStatus.EXECUTING

    async def test_commit_reading_that_loses_writes_nothing(self, store: GovernanceStore) -> None:
        reading: ReadingCommitter = implementing(store.committer, ReadingCommitter)
        created = await self._seeded(store)
        canceled = _decided(created, RequestStatus.CANCELED, LifecycleDecision.CANCELED)
        await store.committer.commit(GovernedCommit((RequestWrite.update(created, canceled),)))
        before = await store.requests.get("req-1")
        claimed = _decided(created, RequestStatus.EXECUTING, LifecycleDecision.CLAIMED)
        with pytest.raises(RequestConcurrencyError):
            await reading.commit_reading(
                GovernedCommit((RequestWrite.update(created, claimed),)), SAMPLE_STATE_ID
            )
        assert await store.requests.get("req-1") == before
        await self._log_matches(store, "req-1")
