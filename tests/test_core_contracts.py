"""The in-memory audit sink, history store and metrics collector pass the core contract suites.

They run on asyncio and trio (the project's ``anyio_backend`` fixture). A deliberately
broken store shows each suite can fail.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mutator import (
    AuditSink,
    HistoryEntry,
    HistoryStore,
    InMemoryAuditSink,
    InMemoryHistoryStore,
    InMemoryMetrics,
    MetricsCollector,
)
from mutator.testing import (
    AuditSinkContract,
    HistoryStoreContract,
    MetricsCollectorContract,
)


class TestInMemoryAuditSink(AuditSinkContract):
    async def make_audit_sink(self) -> AuditSink:
        return InMemoryAuditSink()


class TestInMemoryHistoryStore(HistoryStoreContract):
    async def make_history_store(self) -> HistoryStore:
        return InMemoryHistoryStore()


class TestInMemoryMetrics(MetricsCollectorContract):
    async def make_metrics_collector(self) -> MetricsCollector:
        return InMemoryMetrics()


class TestInMemoryMetricsSmallWindow(MetricsCollectorContract):
    latency_window = 8

    async def make_metrics_collector(self) -> MetricsCollector:
        return InMemoryMetrics(window=8)


class _OldestFirstByTime(InMemoryHistoryStore):
    """Sorts ``recent`` by execution time instead of append order: a contract violation."""

    __slots__ = ()

    async def recent(self, state_id: str, limit: int) -> Sequence[HistoryEntry]:
        entries = (await self.history(state_id)).entries
        return sorted(entries, key=lambda e: e.executed_at, reverse=True)[:limit]


@pytest.mark.anyio
async def test_history_suite_catches_a_store_that_reorders() -> None:
    """The suite is not vacuous: a store ordering by time instead of append order fails it."""
    suite = HistoryStoreContract()
    store = _OldestFirstByTime()
    with pytest.raises(AssertionError):
        await suite.test_recent_follows_append_order_not_time(store)


def test_suites_are_not_collected_on_their_own() -> None:
    """Only subclasses named ``Test...`` run; the shipped classes are not test classes."""
    for suite in (AuditSinkContract, HistoryStoreContract, MetricsCollectorContract):
        assert not suite.__name__.startswith("Test")


@pytest.mark.anyio
async def test_missing_factory_hook_says_what_to_implement() -> None:
    """A subclass that forgets its factory gets a NotImplementedError naming the hook."""

    class Forgetful(AuditSinkContract):
        pass

    with pytest.raises(NotImplementedError, match="make_audit_sink"):
        await Forgetful().make_audit_sink()
