"""Bounded in-memory audit sink and history store: the oldest entries go first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from hypothesis import given

from mutator import (
    ConfigurationError,
    EngineOptions,
    InMemoryAuditSink,
    InMemoryHistoryStore,
    MutationEngine,
)

from ._domain import SetQuota, quotas
from .strategies import append_runs
from .test_records import audit_entry, entry

pytestmark = pytest.mark.anyio

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def at(index: int) -> datetime:
    return T0 + timedelta(minutes=index)


class TestBoundedAuditSink:
    async def test_keeps_the_newest_entries_oldest_first(self) -> None:
        """Past max_entries each record drops the oldest entry; dropped counts them."""
        sink = InMemoryAuditSink(max_entries=3)
        for index in range(5):
            await sink.record(audit_entry(str(index), "a", at(index)))
        assert [e.execution_id for e in sink.all()] == ["2", "3", "4"]
        assert [e.execution_id for e in await sink.entries("a", since=at(3))] == ["3", "4"]
        assert sink.dropped == 2

    async def test_unbounded_by_default(self) -> None:
        """Without max_entries nothing is ever dropped."""
        sink = InMemoryAuditSink()
        for index in range(50):
            await sink.record(audit_entry(str(index), None, at(index)))
        assert len(sink.all()) == 50
        assert (sink.max_entries, sink.dropped) == (None, 0)

    @pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
    def test_rejects_a_bound_that_is_not_a_positive_int(self, bad: Any) -> None:
        """A bound below 1 or of the wrong type is a ConfigurationError."""
        with pytest.raises(ConfigurationError, match="max_entries"):
            InMemoryAuditSink(max_entries=bad)
        with pytest.raises(ConfigurationError, match="max_entries"):
            InMemoryHistoryStore(max_entries=bad)


class TestBoundedHistoryStore:
    async def test_drops_the_oldest_entry_of_the_whole_store(self) -> None:
        """The bound spans all states: the store's oldest entry goes, whatever its state."""
        store = InMemoryHistoryStore(max_entries=3)
        for index, state_id in enumerate(["a", "b", "a", "a"]):
            await store.append(entry(str(index), at(index), [], state_id=state_id))
        assert [e.execution_id for e in (await store.history("a")).entries] == ["2", "3"]
        assert [e.execution_id for e in (await store.history("b")).entries] == ["1"]
        await store.append(entry("4", at(4), [], state_id="a"))
        assert len(await store.history("b")) == 0
        assert store.state_ids() == ("a",)
        assert store.dropped == 2

    async def test_queries_see_only_kept_entries(self) -> None:
        """recent and between never return a dropped entry, even before compaction."""
        store = InMemoryHistoryStore(max_entries=4)
        for index in range(7):
            await store.append(entry(str(index), at(index), [], state_id="q"))
        assert [e.execution_id for e in await store.recent("q", 10)] == ["6", "5", "4", "3"]
        assert [e.execution_id for e in await store.recent("q", 2)] == ["6", "5"]
        found = await store.between("q", T0, at(100))
        assert [e.execution_id for e in found] == ["3", "4", "5", "6"]

    async def test_replay_of_a_trimmed_history_from_the_state_before_it(self) -> None:
        """The kept entries replay from the state their first entry was applied to."""
        store = InMemoryHistoryStore(max_entries=2)
        engine = MutationEngine(EngineOptions.performance(), history=store)
        states = [quotas()]
        for amount in (1, 2, 3, 4):
            result = await engine.execute(SetQuota("alice", amount), states[-1], state_id="q")
            states.append(result.new_state)
        history = await engine.history("q")
        assert [e.mutation for e in history.entries] == [SetQuota("alice", 3), SetQuota("alice", 4)]
        assert history.replay(states[2]) == states[-1]

    @given(append_runs())
    def test_matches_a_model_of_the_last_appends(self, run: tuple[int, list[str]]) -> None:
        """For any run, the store holds exactly the last max_entries appends, per state."""
        bound, state_ids = run

        async def check() -> None:
            store = InMemoryHistoryStore(max_entries=bound)
            for index, state_id in enumerate(state_ids):
                await store.append(entry(str(index), at(index), [], state_id=state_id))
            kept = list(enumerate(state_ids))[-bound:] if state_ids else []
            for state_id in "abc":
                expected = [str(i) for i, s in kept if s == state_id]
                history = await store.history(state_id)
                assert [e.execution_id for e in history.entries] == expected
                recent = await store.recent(state_id, 3)
                assert [e.execution_id for e in recent] == expected[::-1][:3]
            assert set(store.state_ids()) == {s for _, s in kept}
            assert store.dropped == max(0, len(state_ids) - bound)

        anyio.run(check)
