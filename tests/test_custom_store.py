"""The user-written journal store in ``examples/custom_store.py`` passes every shipped suite.

Each test opens the store on a new file in its own ``tmp_path``, on asyncio and trio. A
second store on the same file stands for a second process: it sees every write through the
journal, and a torn last line (a writer that died mid-write) is never seen.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import anyio
import attrs
import pytest

from examples.custom_store import JournalStore
from mutator import AuditSink, HistoryStore
from mutator.testing import AuditSinkContract, HistoryStoreContract
from mutator_governance import (
    DecisionHistory,
    GovernanceStore,
    GovernedCommit,
    RequestAlreadyExistsError,
    RequestConcurrencyError,
    RequestStatus,
    RequestStore,
    RequestWrite,
    StateStore,
)
from mutator_governance.testing import (
    DecisionHistoryContract,
    GovernanceStoreContract,
    RequestStoreContract,
    SampleState,
    StateStoreContract,
    make_store_comparison,
    sample_registry,
    sample_request,
)


class _Journal:
    """Each test gets a store on a new journal file; closing the seam closes the store."""

    path: Path
    opened: JournalStore

    @pytest.fixture(autouse=True)
    def _journal_path(self, tmp_path: Path) -> None:
        self.path = tmp_path / "governance.jsonl"

    def _open(self) -> JournalStore:
        self.opened = JournalStore(self.path, registry=sample_registry(), fsync=False)
        return self.opened

    async def _close(self) -> None:
        await self.opened.aclose()


class TestJournalRequestStore(_Journal, RequestStoreContract):
    async def make_request_store(self) -> RequestStore:
        return self._open().requests

    async def close_request_store(self, store: RequestStore) -> None:
        await self._close()


class TestJournalDecisionHistory(_Journal, DecisionHistoryContract):
    async def make_decision_history(self) -> DecisionHistory:
        return self._open().decisions

    async def close_decision_history(self, history: DecisionHistory) -> None:
        await self._close()


class TestJournalStateStore(_Journal, StateStoreContract):
    async def make_state_store(self) -> StateStore:
        return self._open().states

    async def close_state_store(self, store: StateStore) -> None:
        await self._close()


class TestJournalAuditSink(_Journal, AuditSinkContract):
    async def make_audit_sink(self) -> AuditSink:
        return self._open().audit

    async def close_audit_sink(self, sink: AuditSink) -> None:
        await self._close()


class TestJournalHistoryStore(_Journal, HistoryStoreContract):
    async def make_history_store(self) -> HistoryStore:
        return self._open().history

    async def close_history_store(self, store: HistoryStore) -> None:
        await self._close()


class TestJournalGovernanceStore(_Journal, GovernanceStoreContract):
    async def make_store(self) -> GovernanceStore:
        return self._open()


class TestJournalDurability(_Journal):
    @pytest.mark.anyio
    async def test_the_committer_says_it_is_atomic(self) -> None:
        store = self._open()
        try:
            assert store.committer.atomic is True
        finally:
            await self._close()

    @pytest.mark.anyio
    async def test_a_second_store_on_the_file_sees_every_commit(self) -> None:
        first = self._open()
        second = JournalStore(self.path, registry=sample_registry(), fsync=False)
        try:
            await first.states.put("sample:1", SampleState("sample", 1))
            request = sample_request("req-1", status=RequestStatus.APPROVED)
            await first.committer.commit(GovernedCommit((RequestWrite.create(request),)))
            assert await second.requests.get("req-1") == await first.requests.get("req-1")
            assert await second.decisions.for_request("req-1") == request.decisions
            with pytest.raises(RequestAlreadyExistsError):
                await second.committer.commit(GovernedCommit((RequestWrite.create(request),)))
        finally:
            await second.aclose()
            await self._close()

    @pytest.mark.anyio
    async def test_a_torn_last_line_never_landed_and_is_cut_off(self) -> None:
        store = self._open()
        await store.states.put("sample:1", SampleState("sample", 1))
        await self._close()
        whole = self.path.read_bytes()
        with self.path.open("ab") as file:  # a writer died halfway through its line
            file.write(b'{"state": {"id": "sample:1", "value"')
        reopened = self._open()
        try:
            current = await reopened.states.get("sample:1")
            assert current is not None
            assert current.version == "1"
            version = await reopened.states.put(
                "sample:1", SampleState("sample", 2), expected_version="1"
            )
            assert version == "2"
            lines = self.path.read_bytes().splitlines()
            assert self.path.read_bytes().startswith(whole)
            assert [json.loads(line)["state"]["version"] for line in lines] == ["1", "2"]
        finally:
            await self._close()

    @pytest.mark.anyio
    async def test_writers_on_two_stores_race_through_the_file_lock(self) -> None:
        stores = [self._open(), JournalStore(self.path, registry=sample_registry(), fsync=False)]
        try:
            request = sample_request("req-1", status=RequestStatus.APPROVED)
            created = await stores[0].requests.create(request)
            won: list[int] = []

            async def replace(n: int) -> None:
                changed = attrs.evolve(created, metadata={"writer": n})
                try:
                    await stores[n % 2].requests.replace(changed, expected_revision=0)
                except RequestConcurrencyError:
                    return
                won.append(n)

            async with anyio.create_task_group() as group:
                for n in range(12):
                    group.start_soon(replace, n)
            assert len(won) == 1
            for store in stores:
                stored = await store.requests.get("req-1")
                assert stored is not None
                assert (stored.revision, stored.metadata) == (1, {"writer": won[0]})
        finally:
            await stores[1].aclose()
            await self._close()


# -- stateful comparison with the in-memory reference ------------------------------------------

_OPEN: dict[int, tuple[JournalStore, str]] = {}


def _fresh_requests() -> RequestStore:
    directory = tempfile.mkdtemp(prefix="mutator-journal-")
    store = JournalStore(f"{directory}/cmp.jsonl", registry=sample_registry(), fsync=False)
    _OPEN[id(store.requests)] = (store, directory)
    return store.requests


async def _close(requests: RequestStore) -> None:
    store, directory = _OPEN.pop(id(requests))
    await store.aclose()
    shutil.rmtree(directory, ignore_errors=True)


TestJournalComparisonAsyncio = make_store_comparison(
    _fresh_requests, close=_close, backend="asyncio", name="JournalComparisonAsyncio"
).TestCase

TestJournalComparisonTrio = make_store_comparison(
    _fresh_requests, close=_close, backend="trio", name="JournalComparisonTrio"
).TestCase
