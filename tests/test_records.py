"""Behaviour of history, audit and metrics records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import attrs
import pytest

from mutator import (
    AuditEntry,
    AuditOutcome,
    ChangeSet,
    EngineOptions,
    HistoryEntry,
    InMemoryAuditSink,
    InMemoryHistoryStore,
    InMemoryMetrics,
    InvalidMutationError,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationHistory,
    MutationIntent,
    MutationMode,
    StateChange,
)
from mutator._metrics import percentile

from ._domain import Quotas, SetQuota, deny, quotas, with_quota

pytestmark = pytest.mark.anyio

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


@attrs.frozen
class AsyncSet(Mutation[Quotas]):
    """An async mutation (cannot be replayed without an explicit apply)."""

    user: str
    amount: int
    intent: ClassVar[MutationIntent] = MutationIntent("quota.async-set", category="ops")

    async def apply(self, state: Quotas) -> Quotas:
        return with_quota(state, self.user, self.amount)


def entry(
    execution_id: str,
    at: datetime,
    changes: list[StateChange],
    *,
    actor: str = "alice",
    reason: str | None = None,
    category: str = "billing",
    mutation: Any = None,
    state_id: str = "q",
) -> HistoryEntry:
    return HistoryEntry(
        execution_id,
        state_id,
        MutationIntent("op", category=category),
        MutationContext.user(actor, reason=reason),
        ChangeSet(changes),
        at,
        mutation=mutation,
    )


def audit_entry(execution_id: str, state_id: str | None, at: datetime) -> AuditEntry:
    return AuditEntry(
        execution_id,
        state_id,
        "Quotas",
        MutationIntent("op"),
        MutationContext.user("alice"),
        MutationMode.COMMIT,
        AuditOutcome.SUCCEEDED,
        at,
        0.001,
    )


async def committed_history(
    *mutations: Any, context: MutationContext | None = None
) -> tuple[MutationEngine, MutationHistory[Quotas], Quotas]:
    engine: MutationEngine = MutationEngine()
    state = quotas()
    for mutation in mutations:
        result = await engine.execute(mutation, state, context=context, state_id="q")
        assert result.ok
        state = result.new_state  # type: ignore[assignment]
    return engine, await engine.history("q"), state


class TestReplay:
    async def test_replay_reapplies_recorded_mutations(self) -> None:
        """replay re-applies each recorded mutation and reaches the committed state."""
        _, history, final = await committed_history(
            SetQuota("a", 1), SetQuota("b", 2), SetQuota("a", 5)
        )
        assert history.replay(quotas()) == final == quotas(a=5, b=2)

    async def test_replay_from_another_start(self) -> None:
        """replay folds over whatever initial state it is given."""
        _, history, _ = await committed_history(SetQuota("a", 1))
        assert history.replay(quotas(z=9)) == quotas(z=9, a=1)

    def test_replay_with_custom_apply(self) -> None:
        """A custom apply function is used instead of the recorded mutations."""
        history = MutationHistory(
            "q",
            [
                entry("1", T0, [StateChange("quotas.a", None, 1)]),
                entry("2", T0 + timedelta(seconds=1), [StateChange("quotas.b", None, 2)]),
            ],
        )
        seen: list[str] = []

        def apply(state: int, item: HistoryEntry) -> int:
            seen.append(item.execution_id)
            return state + len(item.changes)

        assert history.replay(0, apply) == 2
        assert seen == ["1", "2"]

    def test_replay_without_mutation_needs_apply(self) -> None:
        """An entry without a recorded mutation cannot be replayed implicitly."""
        history = MutationHistory("q", [entry("1", T0, [])])
        with pytest.raises(InvalidMutationError, match="apply="):
            history.replay(quotas())

    async def test_async_mutation_replay_needs_apply(self) -> None:
        """An async recorded mutation cannot be replayed synchronously."""
        _, history, _ = await committed_history(AsyncSet("a", 1))
        with pytest.raises(InvalidMutationError, match="async"):
            history.replay(quotas())

    async def test_replay_until_is_inclusive(self) -> None:
        """replay_until includes entries executed exactly at the bound and excludes later ones."""
        first = entry("1", T0, [], mutation=SetQuota("a", 1))
        second = entry("2", T0 + timedelta(minutes=1), [], mutation=SetQuota("b", 2))
        third = entry("3", T0 + timedelta(minutes=2), [], mutation=SetQuota("a", 3))
        history: MutationHistory[Quotas] = MutationHistory("q", [first, second, third])
        assert history.replay_until(quotas(), second.executed_at) == quotas(a=1, b=2)
        assert history.replay_until(quotas(), T0 - timedelta(seconds=1)) == quotas()
        assert history.replay_until(quotas(), third.executed_at) == quotas(a=3, b=2)

    async def test_engine_history_is_oldest_first(self) -> None:
        """The engine's history lists entries oldest first, with first_at and last_at."""
        _, history, _ = await committed_history(SetQuota("a", 1), SetQuota("a", 2))
        times = [e.executed_at for e in history.entries]
        assert times == sorted(times)
        assert history.first_at == times[0]
        assert history.last_at == times[-1]
        assert history.replay_until(quotas(), times[-1]) == quotas(a=2)
        assert MutationHistory("q").first_at is None


class TestTimeline:
    def test_timeline_includes_sub_paths_in_order(self) -> None:
        """timeline(path) lists changes at the path and below it, oldest first."""
        history = MutationHistory(
            "q",
            [
                entry(
                    "1",
                    T0,
                    [StateChange("quotas.alice", 0, 1), StateChange("owner", "x", "y")],
                    actor="carol",
                    reason="onboarding",
                ),
                entry("2", T0 + timedelta(seconds=5), [StateChange("quotas", {}, {"b": 1})]),
                entry(
                    "3",
                    T0 + timedelta(seconds=9),
                    [StateChange("slots[2]", 1, 2), StateChange("quotas.bob.limit", 1, 2)],
                    actor="dan",
                ),
                entry("4", T0 + timedelta(seconds=12), [StateChange("quotas_archive", 1, 2)]),
            ],
        )
        timeline = history.timeline("quotas")
        assert [t.change.path for t in timeline] == ["quotas.alice", "quotas", "quotas.bob.limit"]
        assert [t.execution_id for t in timeline] == ["1", "2", "3"]
        assert [t.actor_id for t in timeline] == ["carol", "alice", "dan"]
        assert timeline[0].reason == "onboarding"
        assert [t.executed_at for t in timeline] == sorted(t.executed_at for t in timeline)

    def test_timeline_includes_indexed_sub_paths(self) -> None:
        """A sequence path's indexed children belong to its timeline."""
        history = MutationHistory(
            "q", [entry("1", T0, [StateChange("slots[2]", 1, 2), StateChange("slotsx", 1, 2)])]
        )
        assert [t.change.path for t in history.timeline("slots")] == ["slots[2]"]

    async def test_timeline_from_engine(self) -> None:
        """The engine's history gives a per-path timeline with actor and reason."""
        context = MutationContext.user("alice", reason="raise limit")
        _, history, _ = await committed_history(
            SetQuota("a", 1), SetQuota("b", 1), SetQuota("a", 3), context=context
        )
        timeline = history.timeline("quotas.a")
        assert [(t.change.old_value, t.change.new_value) for t in timeline] == [(None, 1), (1, 3)]
        assert {(t.actor_id, t.reason) for t in timeline} == {("alice", "raise limit")}


class TestHistoryStatistics:
    def test_statistics(self) -> None:
        """statistics counts mutations, unique actors, categories and average changes."""
        history = MutationHistory(
            "q",
            [
                entry("1", T0, [StateChange("a"), StateChange("b")], actor="x", category="billing"),
                entry("2", T0, [StateChange("a")], actor="y", category="billing"),
                entry("3", T0, [], actor="x", category="ops"),
            ],
        )
        stats = history.statistics()
        assert stats.total_mutations == 3
        assert stats.unique_actors == 2
        assert stats.by_category == {"billing": 2, "ops": 1}
        assert stats.average_changes == pytest.approx(1.0)

    def test_empty_statistics(self) -> None:
        """An empty history has zero statistics and no division error."""
        stats = MutationHistory("q").statistics()
        assert (stats.total_mutations, stats.unique_actors, stats.average_changes) == (0, 0, 0.0)
        assert stats.by_category == {}


class TestHistoryStore:
    async def test_between_is_inclusive(self) -> None:
        """between returns entries within inclusive bounds, oldest first."""
        store = InMemoryHistoryStore()
        for index in range(5):
            await store.append(entry(str(index), T0 + timedelta(minutes=index), []))
        await store.append(entry("other", T0 + timedelta(minutes=2), [], state_id="other"))
        found = await store.between("q", T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))
        assert [e.execution_id for e in found] == ["1", "2", "3"]
        assert await store.between("missing", T0, T0 + timedelta(days=1)) == []

    async def test_recent_is_newest_first(self) -> None:
        """recent returns at most limit entries, newest first."""
        store = InMemoryHistoryStore()
        for index in range(5):
            await store.append(entry(str(index), T0 + timedelta(minutes=index), []))
        assert [e.execution_id for e in await store.recent("q", 3)] == ["4", "3", "2"]
        assert [e.execution_id for e in await store.recent("q", 10)] == ["4", "3", "2", "1", "0"]
        assert await store.recent("q", 0) == []
        assert await store.recent("missing", 3) == []

    async def test_recent_rejects_negative_limit(self) -> None:
        """A negative limit is an error, not a surprising slice."""
        with pytest.raises(ValueError):
            await InMemoryHistoryStore().recent("q", -1)

    async def test_history_is_per_state(self) -> None:
        """Each state id has its own history, oldest first."""
        store = InMemoryHistoryStore()
        await store.append(entry("1", T0, [], state_id="a"))
        await store.append(entry("2", T0, [], state_id="b"))
        await store.append(entry("3", T0, [], state_id="a"))
        assert [e.execution_id for e in (await store.history("a")).entries] == ["1", "3"]
        assert len(await store.history("unknown")) == 0
        assert store.state_ids() == ("a", "b")


class TestAuditSink:
    async def test_entries_filter_by_state(self) -> None:
        """entries(state_id) keeps only that state's entries."""
        sink = InMemoryAuditSink()
        await sink.record(audit_entry("1", "a", T0))
        await sink.record(audit_entry("2", "b", T0))
        await sink.record(audit_entry("3", None, T0))
        assert [e.execution_id for e in await sink.entries("a")] == ["1"]
        assert [e.execution_id for e in await sink.entries()] == ["1", "2", "3"]

    async def test_entries_filter_by_time_inclusive(self) -> None:
        """since/until bound executed_at inclusively."""
        sink = InMemoryAuditSink()
        for index in range(4):
            await sink.record(audit_entry(str(index), "a", T0 + timedelta(hours=index)))
        since, until = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
        assert [e.execution_id for e in await sink.entries(since=since)] == ["1", "2", "3"]
        assert [e.execution_id for e in await sink.entries(until=until)] == ["0", "1", "2"]
        assert [e.execution_id for e in await sink.entries("a", since=since, until=until)] == [
            "1",
            "2",
        ]

    async def test_engine_audits_every_attempt_per_state(self) -> None:
        """Engine audit entries can be filtered by state and time."""
        engine: MutationEngine = MutationEngine(policies=[deny("never", "x")])
        before = datetime.now(UTC)
        await engine.execute(SetQuota("a", 1), quotas(), state_id="s1")
        await engine.execute(SetQuota("a", 1), quotas(), state_id="s2")
        after = datetime.now(UTC)
        assert len(await engine.audit.entries("s1")) == 1
        assert len(await engine.audit.entries(since=before, until=after)) == 2
        assert await engine.audit.entries(since=after + timedelta(seconds=1)) == []


class TestEngineStatistics:
    async def test_default_options_report_statistics(self) -> None:
        """With default options the engine reports counts and ordered percentiles."""
        engine: MutationEngine = MutationEngine()
        for index in range(20):
            await engine.execute(SetQuota("a", index - 2), quotas())
        stats = await engine.statistics()
        assert stats.total_executed == 20
        assert stats.succeeded == 18
        assert stats.failed == 2
        assert stats.mean > 0
        assert stats.minimum <= stats.p50 <= stats.p95 <= stats.p99 <= stats.maximum

    async def test_fresh_engine_statistics_are_zero(self) -> None:
        """A fresh engine reports zero executions."""
        stats = await MutationEngine().statistics()
        assert stats.total_executed == 0
        assert stats.mean == 0

    async def test_metrics_window_option_bounds_the_window(self) -> None:
        """EngineOptions.metrics_window bounds the latency window."""
        engine: MutationEngine = MutationEngine(EngineOptions(metrics_window=3))
        for index in range(5):
            await engine.execute(SetQuota("a", index), quotas())
        stats = await engine.statistics()
        assert (stats.total_executed, stats.window) == (5, 3)


class TestInMemoryMetrics:
    def test_bounded_memory(self) -> None:
        """After 1000 records a window of 10 keeps 10 samples but counts all 1000."""
        metrics = InMemoryMetrics(window=10)
        for index in range(1000):
            outcome = AuditOutcome.SUCCEEDED if index % 4 else AuditOutcome.FAILED
            metrics.record(outcome, float(index))
        stats = metrics.statistics()
        assert stats.window == 10
        assert stats.total_executed == 1000
        assert stats.succeeded == 750
        assert stats.failed == 250
        assert stats.minimum == 990.0
        assert stats.maximum == 999.0
        assert stats.mean == pytest.approx(994.5)

    def test_percentiles_interpolate(self) -> None:
        """Percentiles interpolate linearly between ranks."""
        ordered = [1.0, 2.0, 3.0, 4.0]
        assert percentile(ordered, 0.5) == pytest.approx(2.5)
        assert percentile(ordered, 0.0) == 1.0
        assert percentile(ordered, 1.0) == 4.0
        assert percentile(ordered, 0.95) == pytest.approx(3.85)
        assert percentile([5.0], 0.99) == 5.0
        assert percentile([], 0.5) == 0.0

    def test_statistics_use_interpolated_percentiles(self) -> None:
        """The collector's p50/p95/p99 are the interpolated percentiles of its window."""
        metrics = InMemoryMetrics()
        for duration in [0.4, 0.1, 0.3, 0.2]:
            metrics.record(AuditOutcome.SUCCEEDED, duration)
        stats = metrics.statistics()
        assert stats.p50 == pytest.approx(0.25)
        assert stats.p95 == pytest.approx(0.385)
        assert stats.p99 == pytest.approx(0.397)

    def test_window_must_be_positive(self) -> None:
        """A zero window is rejected."""
        with pytest.raises(ValueError):
            InMemoryMetrics(window=0)
