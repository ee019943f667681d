"""Contract test suites for :class:`AuditSink`, :class:`HistoryStore` and :class:`MetricsCollector`.

Each suite is a plain pytest class whose name does not start with ``Test``, so pytest only
collects it through a subclass that implements the factory hook.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import ClassVar

import anyio
import anyio.lowlevel
import attrs
import pytest

from .._records import AuditEntry, AuditOutcome, MutationHistory
from .._statistics import EngineStatistics
from ..protocols import AuditSink, HistoryStore, MetricsCollector
from ._identical import assert_identical
from ._samples import (
    SAMPLE_BASE_TIME,
    sample_audit_entry,
    sample_history_entry,
    sample_rich_audit_entry,
    sample_rich_history_entry,
)

__all__ = ["AuditSinkContract", "HistoryStoreContract", "MetricsCollectorContract"]

CONCURRENT_WRITERS = 20

# State ids are opaque strings: separators, glob and SQL wildcards, quotes, spaces, non-ASCII.
OPAQUE_STATE_IDS = ("a:b", "a", "a:b:*", "x%_y", "it's", "space d", "état/ü", "[1]?")

_EAST = timezone(timedelta(hours=5, minutes=30))
_WEST = timezone(timedelta(hours=-4))


def _at(minutes: float, tz: timezone | None = None) -> datetime:
    moment = SAMPLE_BASE_TIME + timedelta(minutes=minutes)
    return moment if tz is None else moment.astimezone(tz)


def _ids(entries: object) -> list[str]:
    return [entry.execution_id for entry in entries]  # type: ignore[attr-defined]


# -- audit sink --------------------------------------------------------------------------------


@pytest.mark.anyio
class AuditSinkContract:
    """The behaviour every :class:`~mutator.AuditSink` must show.

    Subclass it in a test module under a name starting with ``Test`` and implement
    :meth:`make_audit_sink`; each test gets a new, empty sink from it (the ``audit_sink``
    fixture) and passes it to :meth:`close_audit_sink` afterwards::

        from mutator import AuditSink
        from mutator.testing import AuditSinkContract


        class TestMyAuditSink(AuditSinkContract):
            async def make_audit_sink(self) -> AuditSink:
                return await MyAuditSink.connect(URL)

            async def close_audit_sink(self, sink: AuditSink) -> None:
                await sink.aclose()

    The tests are ``async`` and marked ``anyio``: they run once per backend that the
    ``anyio_backend`` fixture in scope yields. A sink that only works on asyncio pins it in
    the subclass with an ``anyio_backend`` fixture returning ``"asyncio"``.

    Entries must round-trip exactly (see :func:`assert_identical`); a sink that serializes
    them must know :class:`SampleEffectPayload` (it is registered as a typed side-effect
    payload when :mod:`mutator.testing` is imported).
    """

    async def make_audit_sink(self) -> AuditSink:
        """Return a new, empty sink (override this)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement make_audit_sink()")

    async def close_audit_sink(self, sink: AuditSink) -> None:
        """Release ``sink`` after a test (override when it holds resources)."""

    @pytest.fixture
    async def audit_sink(self) -> AsyncIterator[AuditSink]:
        """The sink under test, from :meth:`make_audit_sink`."""
        sink = await self.make_audit_sink()
        try:
            yield sink
        finally:
            await self.close_audit_sink(sink)

    async def _record_catalog(self, sink: AuditSink) -> None:
        # (execution id, state id, minute); recorded in this order, not in time order.
        for execution_id, state_id, minute in (
            ("e1", "s:a", 0),
            ("e2", "s:b", 1),
            ("e3", None, 2),
            ("e4", "s:a", 3),
            ("e5", "s:a", 5),
            ("e6", "s:b", 4),
        ):
            await sink.record(sample_audit_entry(execution_id, state_id=state_id, minutes=minute))

    async def test_new_sink_is_empty(self, audit_sink: AuditSink) -> None:
        assert list(await audit_sink.entries()) == []
        assert list(await audit_sink.entries("s:a")) == []

    async def test_entries_come_back_in_record_order(self, audit_sink: AuditSink) -> None:
        await self._record_catalog(audit_sink)
        assert _ids(await audit_sink.entries()) == ["e1", "e2", "e3", "e4", "e5", "e6"]

    async def test_state_filter(self, audit_sink: AuditSink) -> None:
        await self._record_catalog(audit_sink)
        assert _ids(await audit_sink.entries("s:a")) == ["e1", "e4", "e5"]
        assert _ids(await audit_sink.entries("s:b")) == ["e2", "e6"]
        assert _ids(await audit_sink.entries("missing")) == []

    async def test_bounds_are_inclusive(self, audit_sink: AuditSink) -> None:
        await self._record_catalog(audit_sink)
        assert _ids(await audit_sink.entries(since=_at(3))) == ["e4", "e5", "e6"]
        assert _ids(await audit_sink.entries(until=_at(1))) == ["e1", "e2"]
        assert _ids(await audit_sink.entries(since=_at(1), until=_at(3))) == ["e2", "e3", "e4"]
        assert _ids(await audit_sink.entries(since=_at(4), until=_at(4))) == ["e6"]

    async def test_bounds_compare_instants_not_offsets(self, audit_sink: AuditSink) -> None:
        await self._record_catalog(audit_sink)
        found = await audit_sink.entries(since=_at(1, _EAST), until=_at(3, _WEST))
        assert _ids(found) == ["e2", "e3", "e4"]

    async def test_bounds_are_exact_to_the_microsecond(self, audit_sink: AuditSink) -> None:
        tick = timedelta(microseconds=1)
        for index, moment in enumerate((_at(0) - tick, _at(0), _at(0) + tick)):
            entry = attrs.evolve(sample_audit_entry(f"t{index}"), executed_at=moment)
            await audit_sink.record(entry)
        assert _ids(await audit_sink.entries(since=_at(0), until=_at(0))) == ["t1"]
        assert _ids(await audit_sink.entries(since=_at(0) + tick)) == ["t2"]
        assert _ids(await audit_sink.entries(until=_at(0) - tick)) == ["t0"]

    async def test_state_filter_and_bounds_combine(self, audit_sink: AuditSink) -> None:
        await self._record_catalog(audit_sink)
        assert _ids(await audit_sink.entries("s:a", since=_at(1))) == ["e4", "e5"]
        assert _ids(await audit_sink.entries("s:b", until=_at(3))) == ["e2"]
        assert _ids(await audit_sink.entries("s:a", since=_at(1), until=_at(4))) == ["e4"]

    async def test_empty_window_finds_nothing(self, audit_sink: AuditSink) -> None:
        await self._record_catalog(audit_sink)
        assert list(await audit_sink.entries(since=_at(4), until=_at(3))) == []
        assert list(await audit_sink.entries(since=_at(60))) == []

    async def test_reading_does_not_consume(self, audit_sink: AuditSink) -> None:
        await self._record_catalog(audit_sink)
        first = list(await audit_sink.entries())
        assert list(await audit_sink.entries()) == first
        assert len(first) == 6

    async def test_state_ids_are_opaque(self, audit_sink: AuditSink) -> None:
        for index, state_id in enumerate(OPAQUE_STATE_IDS):
            await audit_sink.record(sample_audit_entry(f"e{index}", state_id=state_id))
        for index, state_id in enumerate(OPAQUE_STATE_IDS):
            found = list(await audit_sink.entries(state_id))
            assert _ids(found) == [f"e{index}"], state_id
            assert found[0].state_id == state_id

    async def test_entry_without_state_is_kept(self, audit_sink: AuditSink) -> None:
        entry = sample_audit_entry("no-state", state_id=None)
        await audit_sink.record(entry)
        assert_identical([entry], list(await audit_sink.entries()))

    @pytest.mark.parametrize("outcome", list(AuditOutcome), ids=lambda o: o.value)
    async def test_every_outcome_round_trips(
        self, audit_sink: AuditSink, outcome: AuditOutcome
    ) -> None:
        entry = sample_audit_entry("e1", outcome=outcome)
        await audit_sink.record(entry)
        assert_identical([entry], list(await audit_sink.entries()))

    async def test_round_trip_every_field(self, audit_sink: AuditSink) -> None:
        entry = sample_rich_audit_entry()
        await audit_sink.record(entry)
        assert_identical([entry], list(await audit_sink.entries()))
        assert_identical([entry], list(await audit_sink.entries("sample:rich")))

    async def test_concurrent_records_keep_everything(self, audit_sink: AuditSink) -> None:
        entries = [
            sample_audit_entry(f"e{i:02d}", state_id=f"s:{i % 2}", minutes=i)
            for i in range(CONCURRENT_WRITERS)
        ]
        start = anyio.Event()

        async def writer(entry: AuditEntry) -> None:
            await start.wait()
            await audit_sink.record(entry)

        async with anyio.create_task_group() as group:
            for entry in entries:
                group.start_soon(writer, entry)
            await anyio.sleep(0.01)
            start.set()

        assert sorted(_ids(await audit_sink.entries())) == _ids(entries)
        assert sorted(_ids(await audit_sink.entries("s:0"))) == _ids(entries[::2])
        assert sorted(_ids(await audit_sink.entries("s:1"))) == _ids(entries[1::2])


# -- history store -----------------------------------------------------------------------------


@pytest.mark.anyio
class HistoryStoreContract:
    """The behaviour every :class:`~mutator.HistoryStore` must show.

    Subclass it under a name starting with ``Test`` and implement :meth:`make_history_store`
    (each test gets a new, empty store as the ``history_store`` fixture, then
    :meth:`close_history_store` releases it)::

        class TestMyHistoryStore(HistoryStoreContract):
            async def make_history_store(self) -> HistoryStore:
                return MyHistoryStore()

    The tests run on the backends of your ``anyio_backend`` fixture (see
    :class:`AuditSinkContract`). A store need not keep :attr:`HistoryEntry.mutation` (it is
    not part of an entry's equality); everything else must round-trip exactly.
    """

    async def make_history_store(self) -> HistoryStore:
        """Return a new, empty store (override this)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement make_history_store()")

    async def close_history_store(self, store: HistoryStore) -> None:
        """Release ``store`` after a test (override when it holds resources)."""

    @pytest.fixture
    async def history_store(self) -> AsyncIterator[HistoryStore]:
        """The store under test, from :meth:`make_history_store`."""
        store = await self.make_history_store()
        try:
            yield store
        finally:
            await self.close_history_store(store)

    async def _append_catalog(self, store: HistoryStore) -> None:
        for execution_id, state_id, minute in (
            ("h1", "s:a", 0),
            ("h2", "s:b", 1),
            ("h3", "s:a", 2),
            ("h4", "s:a", 3),
            ("h5", "s:b", 4),
            ("h6", "s:a", 5),
        ):
            entry = sample_history_entry(execution_id, state_id=state_id, minutes=minute)
            await store.append(entry)

    async def test_unknown_state_has_empty_history(self, history_store: HistoryStore) -> None:
        history = await history_store.history("missing")
        assert isinstance(history, MutationHistory)
        assert history.state_id == "missing"
        assert history.entries == ()
        await self._append_catalog(history_store)
        assert (await history_store.history("missing")).entries == ()

    async def test_state_ids_are_opaque(self, history_store: HistoryStore) -> None:
        for index, state_id in enumerate(OPAQUE_STATE_IDS):
            await history_store.append(sample_history_entry(f"h{index}", state_id=state_id))
        for index, state_id in enumerate(OPAQUE_STATE_IDS):
            history = await history_store.history(state_id)
            assert _ids(history.entries) == [f"h{index}"], state_id
            assert history.entries[0].state_id == state_id
            assert _ids(await history_store.recent(state_id, 5)) == [f"h{index}"], state_id
            window = await history_store.between(state_id, _at(-1), _at(1))
            assert _ids(window) == [f"h{index}"], state_id

    async def test_history_keeps_append_order(self, history_store: HistoryStore) -> None:
        await self._append_catalog(history_store)
        history = await history_store.history("s:a")
        assert history.state_id == "s:a"
        assert isinstance(history.entries, tuple)
        assert _ids(history.entries) == ["h1", "h3", "h4", "h6"]
        assert _ids((await history_store.history("s:b")).entries) == ["h2", "h5"]

    async def test_between_is_inclusive_oldest_first(self, history_store: HistoryStore) -> None:
        await self._append_catalog(history_store)
        assert _ids(await history_store.between("s:a", _at(2), _at(5))) == ["h3", "h4", "h6"]
        assert _ids(await history_store.between("s:a", _at(3), _at(3))) == ["h4"]
        assert _ids(await history_store.between("s:b", _at(0), _at(3))) == ["h2"]
        assert _ids(await history_store.between("missing", _at(0), _at(9))) == []

    async def test_between_compares_instants_not_offsets(self, history_store: HistoryStore) -> None:
        await self._append_catalog(history_store)
        found = await history_store.between("s:a", _at(2, _EAST), _at(3, _WEST))
        assert _ids(found) == ["h3", "h4"]

    async def test_between_is_exact_to_the_microsecond(self, history_store: HistoryStore) -> None:
        tick = timedelta(microseconds=1)
        for index, moment in enumerate((_at(0) - tick, _at(0), _at(0) + tick)):
            entry = attrs.evolve(sample_history_entry(f"t{index}"), executed_at=moment)
            await history_store.append(entry)
        assert _ids(await history_store.between("sample:1", _at(0), _at(0))) == ["t1"]
        assert _ids(await history_store.between("sample:1", _at(0) + tick, _at(1))) == ["t2"]
        assert _ids(await history_store.between("sample:1", _at(-1), _at(0) - tick)) == ["t0"]

    async def test_between_empty_window(self, history_store: HistoryStore) -> None:
        await self._append_catalog(history_store)
        assert list(await history_store.between("s:a", _at(3), _at(2))) == []
        assert list(await history_store.between("s:a", _at(60), _at(61))) == []

    async def test_recent_is_newest_first(self, history_store: HistoryStore) -> None:
        await self._append_catalog(history_store)
        assert _ids(await history_store.recent("s:a", 10)) == ["h6", "h4", "h3", "h1"]
        assert _ids(await history_store.recent("s:a", 2)) == ["h6", "h4"]
        assert _ids(await history_store.recent("s:b", 1)) == ["h5"]

    async def test_recent_follows_append_order_not_time(self, history_store: HistoryStore) -> None:
        for execution_id, minute in (("late", 9), ("early", 1), ("middle", 5)):
            await history_store.append(sample_history_entry(execution_id, minutes=minute))
        assert _ids(await history_store.recent("sample:1", 3)) == ["middle", "early", "late"]
        assert _ids((await history_store.history("sample:1")).entries) == [
            "late",
            "early",
            "middle",
        ]

    async def test_recent_limits(self, history_store: HistoryStore) -> None:
        await self._append_catalog(history_store)
        assert list(await history_store.recent("s:a", 0)) == []
        assert _ids(await history_store.recent("s:a", 4)) == ["h6", "h4", "h3", "h1"]
        assert list(await history_store.recent("missing", 5)) == []

    @pytest.mark.parametrize("limit", [-1, -10])
    async def test_recent_negative_limit_raises(
        self, history_store: HistoryStore, limit: int
    ) -> None:
        await self._append_catalog(history_store)
        with pytest.raises(ValueError):
            await history_store.recent("s:a", limit)

    async def test_round_trip_every_field(self, history_store: HistoryStore) -> None:
        entry = sample_rich_history_entry()
        await history_store.append(entry)
        assert_identical((entry,), (await history_store.history("sample:rich")).entries)
        assert_identical([entry], list(await history_store.recent("sample:rich", 1)))
        window = await history_store.between("sample:rich", entry.executed_at, entry.executed_at)
        assert_identical([entry], list(window))

    async def test_concurrent_appends_to_one_state_keep_everything(
        self, history_store: HistoryStore
    ) -> None:
        entries = [
            sample_history_entry(f"h{i:02d}", minutes=i, value=i) for i in range(CONCURRENT_WRITERS)
        ]
        start = anyio.Event()

        async def writer(index: int) -> None:
            await start.wait()
            await history_store.append(entries[index])

        async with anyio.create_task_group() as group:
            for index in range(CONCURRENT_WRITERS):
                group.start_soon(writer, index)
            await anyio.sleep(0.01)
            start.set()

        stored = (await history_store.history("sample:1")).entries
        assert sorted(_ids(stored)) == _ids(entries)
        assert _ids(await history_store.recent("sample:1", CONCURRENT_WRITERS)) == _ids(
            stored[::-1]
        )

    async def test_concurrent_appends_to_many_states_stay_apart(
        self, history_store: HistoryStore
    ) -> None:
        async with anyio.create_task_group() as group:
            for index in range(CONCURRENT_WRITERS):
                entry = sample_history_entry(f"h{index:02d}", state_id=f"s:{index % 4}")
                group.start_soon(history_store.append, entry)
        for state in range(4):
            found = _ids((await history_store.history(f"s:{state}")).entries)
            assert sorted(found) == [f"h{i:02d}" for i in range(state, CONCURRENT_WRITERS, 4)]


# -- metrics collector -------------------------------------------------------------------------


@pytest.mark.anyio
class MetricsCollectorContract:
    """The behaviour every :class:`~mutator.MetricsCollector` must show.

    Subclass it under a name starting with ``Test`` and implement
    :meth:`make_metrics_collector` (each test gets a new collector as the
    ``metrics_collector`` fixture)::

        class TestMyMetrics(MetricsCollectorContract):
            latency_window = 64  # the collector keeps the last 64 durations

            async def make_metrics_collector(self) -> MetricsCollector:
                return MyMetrics(window=64)

    Set :attr:`latency_window` to the number of most recent durations your collector's
    latency figures describe, or leave it None when it keeps them all (the window tests
    then only check that counts never shrink).
    """

    latency_window: ClassVar[int | None] = None
    """How many recent durations the latency figures cover (None: unbounded)."""

    async def make_metrics_collector(self) -> MetricsCollector:
        """Return a new collector that has recorded nothing (override this)."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must implement make_metrics_collector()"
        )

    async def close_metrics_collector(self, collector: MetricsCollector) -> None:
        """Release ``collector`` after a test (override when it holds resources)."""

    @pytest.fixture
    async def metrics_collector(self) -> AsyncIterator[MetricsCollector]:
        """The collector under test, from :meth:`make_metrics_collector`."""
        collector = await self.make_metrics_collector()
        try:
            yield collector
        finally:
            await self.close_metrics_collector(collector)

    async def test_record_is_a_plain_call(self, metrics_collector: MetricsCollector) -> None:
        assert not inspect.iscoroutinefunction(metrics_collector.record)
        assert metrics_collector.record(AuditOutcome.SUCCEEDED, 0.01) is None  # type: ignore[func-returns-value]
        assert metrics_collector.statistics().total_executed == 1

    async def test_nothing_recorded_is_all_zero(self, metrics_collector: MetricsCollector) -> None:
        assert metrics_collector.statistics() == EngineStatistics()

    async def test_counts_every_outcome(self, metrics_collector: MetricsCollector) -> None:
        outcomes = [*AuditOutcome, AuditOutcome.SUCCEEDED, AuditOutcome.SUCCEEDED]
        for outcome in outcomes:
            metrics_collector.record(outcome, 0.01)
        stats = metrics_collector.statistics()
        assert stats.total_executed == len(outcomes)
        assert stats.succeeded == 3
        assert stats.failed == len(outcomes) - 3
        assert stats.window == len(outcomes)

    async def test_latency_figures(self, metrics_collector: MetricsCollector) -> None:
        durations = [0.004, 0.001, 0.010, 0.002, 0.003, 0.020, 0.005]
        for duration in durations:
            metrics_collector.record(AuditOutcome.SUCCEEDED, duration)
        stats = metrics_collector.statistics()
        assert stats.minimum == min(durations)
        assert stats.maximum == max(durations)
        assert stats.mean == pytest.approx(sum(durations) / len(durations))
        assert stats.minimum <= stats.p50 <= stats.p95 <= stats.p99 <= stats.maximum
        assert stats.throughput >= 0.0

    async def test_constant_durations(self, metrics_collector: MetricsCollector) -> None:
        for _ in range(5):
            metrics_collector.record(AuditOutcome.FAILED, 0.25)
        stats = metrics_collector.statistics()
        figures = (stats.mean, stats.minimum, stats.maximum, stats.p50, stats.p95, stats.p99)
        assert figures == pytest.approx((0.25,) * 6)

    async def test_reading_does_not_change_anything(
        self, metrics_collector: MetricsCollector
    ) -> None:
        for duration in (0.1, 0.2, 0.3):
            metrics_collector.record(AuditOutcome.SUCCEEDED, duration)
        assert metrics_collector.statistics() == metrics_collector.statistics()

    async def test_window_bounds_latency_not_counts(
        self, metrics_collector: MetricsCollector
    ) -> None:
        window = self.latency_window
        extra = 5
        total = (window or 50) + extra
        for index in range(total):
            # The first ``extra`` samples are slow; a bounded window forgets them.
            metrics_collector.record(AuditOutcome.SUCCEEDED, 9.0 if index < extra else 0.5)
        stats = metrics_collector.statistics()
        assert stats.total_executed == total
        assert stats.succeeded == total
        if window is None:
            assert stats.window == total
            assert stats.maximum == 9.0
        else:
            assert stats.window == window
            assert stats.maximum == 0.5

    async def test_concurrent_recording_loses_nothing(
        self, metrics_collector: MetricsCollector
    ) -> None:
        per_task = 10

        async def producer(index: int) -> None:
            for step in range(per_task):
                outcome = AuditOutcome.SUCCEEDED if step % 2 else AuditOutcome.FAILED
                metrics_collector.record(outcome, 0.001 * (index + 1))
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as group:
            for index in range(CONCURRENT_WRITERS):
                group.start_soon(producer, index)

        stats = metrics_collector.statistics()
        assert stats.total_executed == CONCURRENT_WRITERS * per_task
        assert stats.succeeded == stats.failed == CONCURRENT_WRITERS * per_task // 2
