"""Reassigning an engine's options, sinks or metrics takes effect for the next execution."""

from __future__ import annotations

import pytest

from mutator import (
    AuditOutcome,
    EngineOptions,
    ExecutionTimeoutError,
    InMemoryAuditSink,
    InMemoryHistoryStore,
    MutationEngine,
    NullAuditSink,
    NullHistoryStore,
)
from mutator._metrics import InMemoryMetrics

from ._domain import SetQuota, quotas

pytestmark = pytest.mark.anyio


class CountingMetrics(InMemoryMetrics):
    """A subclass: the engine must call its record(), not write the window itself."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def record(self, outcome: AuditOutcome, duration: float) -> None:
        self.calls += 1
        super().record(outcome, duration)


class CountingAudit(InMemoryAuditSink):
    __slots__ = ("calls",)

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def record(self, entry: object) -> None:  # type: ignore[override]
        self.calls += 1
        await super().record(entry)  # type: ignore[arg-type]


async def test_replaced_metrics_receive_the_next_executions() -> None:
    engine = MutationEngine()
    first = engine.metrics
    await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
    replacement = CountingMetrics()
    engine.metrics = replacement
    await engine.execute(SetQuota("a", 2), quotas(), state_id="q")
    assert first.statistics().total_executed == 1  # type: ignore[attr-defined]
    assert replacement.calls == 1
    assert (await engine.statistics()).total_executed == 1


async def test_replaced_audit_and_history_receive_the_next_executions() -> None:
    engine = MutationEngine()
    await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
    audit, history = CountingAudit(), InMemoryHistoryStore(max_entries=5)
    engine.audit, engine.history_store = audit, history
    await engine.execute(SetQuota("a", 2), quotas(), state_id="q")
    assert audit.calls == 1
    assert len(audit.all()) == 1
    assert len(await history.history("q")) == 1
    engine.audit, engine.history_store = NullAuditSink(), NullHistoryStore()
    await engine.execute(SetQuota("a", 3), quotas(), state_id="q")
    assert audit.calls == 1
    assert len(await history.history("q")) == 1


async def test_bounded_audit_sink_counts_what_it_drops() -> None:
    engine = MutationEngine(audit=InMemoryAuditSink(max_entries=2))
    for amount in range(5):
        await engine.execute(SetQuota("a", amount), quotas(), state_id="q")
    assert len(engine.audit.all()) == 2  # type: ignore[attr-defined]
    assert engine.audit.dropped == 3  # type: ignore[attr-defined]


async def test_replaced_options_apply_to_the_next_execution() -> None:
    engine = MutationEngine(EngineOptions(always_validate=False))
    assert (await engine.execute(SetQuota("a", -1), quotas())).ok  # not validated
    engine.options = EngineOptions(always_validate=True, execution_timeout=1e-9)
    with pytest.raises(ExecutionTimeoutError):
        await engine.execute(SetQuota("a", 1), quotas())
    engine.options = EngineOptions(always_validate=True)
    assert not (await engine.execute(SetQuota("a", -1), quotas())).ok
    with pytest.raises(TypeError):
        engine.options = None  # type: ignore[assignment]


def test_execution_ids_are_a_prefix_and_at_least_eight_hex_digits() -> None:
    from itertools import islice

    from mutator._context import _id_stream, new_execution_id

    first, second = new_execution_id(), new_execution_id()
    assert first != second
    prefix = first.split("-")[0]
    assert len(prefix) == 12
    assert second.startswith(prefix + "-")
    near = list(islice(_id_stream((1 << 32) - 2), 4))
    start = near[0].split("-")[0]
    assert [i.split("-")[1] for i in near] == [
        f"{n:08x}" for n in range((1 << 32) - 2, (1 << 32) + 2)
    ]
    assert all(i.startswith(start + "-") for i in near)
    assert [i.split("-")[1] for i in islice(_id_stream(), 3)] == [
        "00000001",
        "00000002",
        "00000003",
    ]
