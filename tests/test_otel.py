"""OpenTelemetry instrumentation of the engine: spans, events, statuses and metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import anyio
import attrs
import pytest

from mutator import (
    ConfigurationError,
    EngineOptions,
    ExecutionTimeoutError,
    InMemoryMetrics,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationFailedError,
    MutationIntent,
    MutationMode,
    RiskLevel,
)

from ._domain import Quotas, Raises, SetQuota, approval, deny, quotas, with_quota
from .conftest import MetricCapture, SpanCapture

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from mutator.otel import (
    DURATION_METRIC,
    EXECUTIONS_METRIC,
    SPAN_NAME,
    Instrumentation,
    OpenTelemetryMetrics,
    instrument,
)

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen
class Risky(Mutation[Quotas]):
    """A HIGH-risk quota change in the ``ops`` category."""

    user: str
    amount: int
    intent: ClassVar[MutationIntent] = MutationIntent(
        "quota.risky", category="ops", risk=RiskLevel.HIGH
    )

    def apply(self, state: Quotas) -> Quotas:
        return with_quota(state, self.user, self.amount)


@attrs.frozen
class Waits(Mutation[Quotas]):
    """An async apply that signals it started, then waits far longer than any test."""

    started: anyio.Event = attrs.field(eq=False)
    intent: ClassVar[MutationIntent] = MutationIntent("quota.waits")

    async def apply(self, state: Quotas) -> Quotas:
        self.started.set()
        await anyio.sleep(30)
        return state


@attrs.frozen
class Traced(Mutation[Quotas]):
    """An apply that opens a span of its own (a database call, say)."""

    tracer: Any = attrs.field(eq=False)
    intent: ClassVar[MutationIntent] = MutationIntent("quota.traced")

    async def apply(self, state: Quotas) -> Quotas:
        with self.tracer.start_as_current_span("db.write"):
            await anyio.lowlevel.checkpoint()
        return with_quota(state, "db", 1)


def instrumented(
    tracing: SpanCapture, metering: MetricCapture | None = None, **engine: Any
) -> tuple[MutationEngine, Instrumentation]:
    eng = MutationEngine(**engine)
    provider = metering.provider if metering is not None else None
    return eng, instrument(eng, tracer_provider=tracing.provider, meter_provider=provider)


class TestExecutionSpan:
    async def test_one_span_per_execution_with_its_attributes(self, tracing: SpanCapture) -> None:
        """A commit yields one INTERNAL span named mutator.execute describing the execution."""
        engine, _ = instrumented(tracing)
        context = MutationContext.user("alice", correlation_id="req-7")
        result = await engine.execute(Risky("a", 1), quotas(), context=context, state_id="q:1")
        (span,) = tracing.spans()
        assert span.name == SPAN_NAME
        assert span.kind is SpanKind.INTERNAL
        assert dict(span.attributes) == {
            "mutator.operation": "quota.risky",
            "mutator.category": "ops",
            "mutator.risk": "high",
            "mutator.mode": "commit",
            "mutator.state_id": "q:1",
            "mutator.execution_id": result.execution_id,
            "mutator.correlation_id": "req-7",
            "mutator.status": "succeeded",
        }
        assert span.status.status_code is StatusCode.UNSET
        assert span.end_time is not None

    async def test_absent_state_and_correlation_ids_are_not_attributes(
        self, tracing: SpanCapture
    ) -> None:
        """Without a state id or correlation id, those attributes are left out."""
        engine, _ = instrumented(tracing)
        context = MutationContext.user("alice", mode=MutationMode.SIMULATE)
        await engine.execute(SetQuota("a", 1), quotas(), context=context)
        (span,) = tracing.spans()
        assert "mutator.state_id" not in span.attributes
        assert "mutator.correlation_id" not in span.attributes
        assert span.attributes["mutator.mode"] == "simulate"

    async def test_each_batch_step_gets_a_span(self, tracing: SpanCapture) -> None:
        """A batch of three yields three execution spans, one per step, in order."""
        engine, _ = instrumented(tracing)
        steps = [SetQuota("a", 1), SetQuota("b", 2), SetQuota("c", 3)]
        batch = await engine.execute_batch(steps, quotas(), state_id="q")
        spans = tracing.spans(SPAN_NAME)
        assert [s.attributes["mutator.execution_id"] for s in spans] == [
            r.execution_id for r in batch.results
        ]

    async def test_span_is_a_child_of_the_callers_span_and_parent_of_apply_spans(
        self, tracing: SpanCapture
    ) -> None:
        """The execution span nests under the caller's span; spans opened in apply nest in it."""
        engine, _ = instrumented(tracing)
        tracer = tracing.provider.get_tracer("tests")
        with tracer.start_as_current_span("request") as request:
            await engine.execute(Traced(tracer), quotas(), state_id="q")
            assert trace.get_current_span() is request
        db, execute, outer = tracing.spans()
        assert (db.name, execute.name, outer.name) == ("db.write", SPAN_NAME, "request")
        assert db.parent.span_id == execute.context.span_id
        assert execute.parent.span_id == outer.context.span_id

    async def test_concurrent_executions_do_not_share_spans(self, tracing: SpanCapture) -> None:
        """Executions running at once in sibling tasks each get their own parentage."""
        engine, _ = instrumented(tracing)
        tracer = tracing.provider.get_tracer("tests")

        async def one(index: int) -> None:
            with tracer.start_as_current_span(f"task-{index}"):
                await engine.execute(Traced(tracer), quotas(), state_id=f"q{index}")

        async with anyio.create_task_group() as tg:
            for index in range(4):
                tg.start_soon(one, index)
        by_id = {s.context.span_id: s for s in tracing.spans()}
        executes = tracing.spans(SPAN_NAME)
        assert len(executes) == 4
        tasks = {by_id[s.parent.span_id].name for s in executes}
        assert tasks == {f"task-{i}" for i in range(4)}
        for db in tracing.spans("db.write"):
            assert by_id[db.parent.span_id].name == SPAN_NAME


class TestOutcomes:
    async def test_denial_adds_an_event_and_is_not_an_error(self, tracing: SpanCapture) -> None:
        """A denying policy adds mutator.policy.denied; the status attribute says blocked."""
        engine, _ = instrumented(tracing, policies=[deny("freeze", "frozen for audit")])
        await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        (span,) = tracing.spans()
        assert span.attributes["mutator.status"] == "policy_blocked"
        assert span.status.status_code is StatusCode.UNSET
        (event,) = span.events
        assert event.name == "mutator.policy.denied"
        assert dict(event.attributes) == {
            "mutator.policy.name": "freeze",
            "mutator.policy.reason": "frozen for audit",
            "mutator.policy.severity": "error",
        }

    async def test_approval_requirement_adds_an_event(self, tracing: SpanCapture) -> None:
        """A policy requiring approval adds mutator.policy.approval_required."""
        engine, _ = instrumented(tracing, policies=[approval("two-person", "carol")])
        await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        (span,) = tracing.spans()
        assert span.attributes["mutator.status"] == "approval_required"
        assert [e.name for e in span.events] == ["mutator.policy.approval_required"]
        assert span.events[0].attributes["mutator.policy.name"] == "two-person"

    async def test_validation_failure_is_a_result_not_an_error(self, tracing: SpanCapture) -> None:
        """An invalid mutation ends its span with status validation_failed, unset span status."""
        engine, _ = instrumented(tracing)
        await engine.execute(SetQuota("a", -1), quotas(), state_id="q")
        (span,) = tracing.spans()
        assert span.attributes["mutator.status"] == "validation_failed"
        assert span.status.status_code is StatusCode.UNSET
        assert span.events == ()

    async def test_failing_mutation_marks_the_span_as_error(self, tracing: SpanCapture) -> None:
        """A mutation that raises ends its span with ERROR status and the exception recorded."""
        engine, _ = instrumented(tracing)
        with pytest.raises(MutationFailedError):
            await engine.execute(Raises(RuntimeError("disk on fire")), quotas(), state_id="q")
        (span,) = tracing.spans()
        assert span.status.status_code is StatusCode.ERROR
        assert "disk on fire" in (span.status.description or "")
        assert span.attributes["mutator.status"] == "failed"
        assert span.attributes["error.type"] == "mutator.MutationFailedError"
        (event,) = span.events
        assert event.name == "exception"
        assert "disk on fire" in event.attributes["exception.message"]

    async def test_timeout_marks_the_span_as_error(self, tracing: SpanCapture) -> None:
        """An execution that runs out of time ends its span as ERROR with status timed_out."""
        engine, _ = instrumented(tracing, options=EngineOptions(execution_timeout=0.05))
        with pytest.raises(ExecutionTimeoutError):
            await engine.execute(Waits(anyio.Event()), quotas(), state_id="q")
        (span,) = tracing.spans()
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["mutator.status"] == "timed_out"

    async def test_cancellation_ends_the_span_without_error(self, tracing: SpanCapture) -> None:
        """A cancelled execution ends its span, status unset, mutator.status=cancelled."""
        engine, _ = instrumented(tracing)
        tracer = tracing.provider.get_tracer("tests")
        started = anyio.Event()
        after_cancel: list[Any] = []

        async def caller(scope: anyio.CancelScope) -> None:
            with tracer.start_as_current_span("caller") as caller_span:
                with scope:
                    await engine.execute(Waits(started), quotas(), state_id="q")
                after_cancel.append(trace.get_current_span() is caller_span)

        scope = anyio.CancelScope()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(caller, scope)
                await started.wait()
                scope.cancel()
        execute = tracing.spans(SPAN_NAME)[0]
        assert execute.attributes["mutator.status"] == "cancelled"
        assert execute.status.status_code is StatusCode.UNSET
        assert after_cancel == [True]  # the caller's context is restored


class TestInstrumentation:
    async def test_no_spans_when_not_instrumented(self, tracing: SpanCapture) -> None:
        """An engine that was never instrumented emits nothing, even inside a traced request."""
        engine = MutationEngine()
        with tracing.provider.get_tracer("tests").start_as_current_span("request"):
            await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        assert [s.name for s in tracing.spans()] == ["request"]

    async def test_without_an_sdk_the_callers_span_stays_current(
        self, tracing: SpanCapture
    ) -> None:
        """With the API's no-op provider, spans opened in apply still nest in the caller's."""
        engine = MutationEngine()
        instrument(engine, tracer_provider=trace.NoOpTracerProvider())
        tracer = tracing.provider.get_tracer("tests")
        with tracer.start_as_current_span("request"):
            await engine.execute(Traced(tracer), quotas(), state_id="q")
        db, request = tracing.spans()
        assert (db.name, request.name) == ("db.write", "request")
        assert db.parent.span_id == request.context.span_id

    async def test_uninstrument_stops_spans_and_restores_metrics(
        self, tracing: SpanCapture
    ) -> None:
        """After uninstrument the engine emits no span and has its own collector back."""
        engine = MutationEngine()
        own = engine.metrics
        instrumentation = instrument(engine, tracer_provider=tracing.provider)
        await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        instrumentation.uninstrument()
        instrumentation.uninstrument()
        await engine.execute(SetQuota("a", 2), quotas(), state_id="q")
        assert len(tracing.spans()) == 1
        assert engine.metrics is own
        assert engine.interceptors == ()
        assert not instrumentation.active
        assert (await engine.statistics()).total_executed == 2

    def test_instrumenting_twice_is_a_configuration_error(self, tracing: SpanCapture) -> None:
        """A second instrument() on the same engine is refused."""
        engine = MutationEngine()
        instrument(engine, tracer_provider=tracing.provider)
        with pytest.raises(ConfigurationError, match="already instrumented"):
            instrument(engine, tracer_provider=tracing.provider)

    def test_instrument_takes_an_engine(self) -> None:
        """Anything but a MutationEngine is a TypeError naming what was passed."""
        with pytest.raises(TypeError, match="MutationEngine, got str"):
            instrument("engine")  # type: ignore[arg-type]

    def test_missing_extra_names_the_install_command(self) -> None:
        """Without OpenTelemetry, importing mutator.otel says how to install it."""
        code = "import sys; sys.modules['opentelemetry'] = None; import mutator.otel"
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert done.returncode == 1
        assert 'pip install "mutator[otel]"' in done.stderr

    def test_core_never_imports_opentelemetry(self) -> None:
        """Running an engine (and importing governance) loads no OpenTelemetry module."""
        code = (
            "import sys, anyio, mutator, mutator_governance\n"
            "from tests._domain import SetQuota, quotas\n"
            "anyio.run(mutator.MutationEngine().execute, SetQuota('a', 1), quotas())\n"
            "assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n"
            "assert mutator.capture_trace_context() == {}\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr


class TestMetrics:
    async def test_duration_and_count_by_operation_and_status(
        self, tracing: SpanCapture, metering: MetricCapture
    ) -> None:
        """Every execution lands in the histogram and the counter under operation and status."""
        engine, _ = instrumented(tracing, metering)
        await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        await engine.execute(SetQuota("a", 2), quotas(), state_id="q")
        await engine.execute(SetQuota("a", -1), quotas(), state_id="q")
        await engine.execute(Risky("a", 1), quotas(), state_id="q")

        def key(operation: str, status: str) -> frozenset[tuple[str, str]]:
            return frozenset({("mutator.operation", operation), ("mutator.status", status)})

        expected = {
            key("quota.set", "succeeded"): 2,
            key("quota.set", "validation_failed"): 1,
            key("quota.risky", "succeeded"): 1,
        }
        durations = metering.points(DURATION_METRIC)
        counts = metering.points(EXECUTIONS_METRIC)
        assert {k: p.count for k, p in durations.items()} == expected
        assert {k: p.value for k, p in counts.items()} == expected
        assert all(p.sum > 0 for p in durations.values())

    async def test_failures_timeouts_and_blocks_are_counted_apart(
        self, tracing: SpanCapture, metering: MetricCapture
    ) -> None:
        """Failed, timed-out and policy-blocked executions each have their own data point."""
        engine, _ = instrumented(tracing, metering, options=EngineOptions(execution_timeout=0.05))
        with pytest.raises(MutationFailedError):
            await engine.execute(Raises(RuntimeError("x")), quotas(), state_id="q")
        with pytest.raises(ExecutionTimeoutError):
            await engine.execute(Waits(anyio.Event()), quotas(), state_id="q")
        engine.register_policy(deny("freeze"))
        await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        points = metering.points(EXECUTIONS_METRIC)
        counts = {dict(k)["mutator.status"]: p.value for k, p in points.items()}
        assert counts == {"failed": 1, "timed_out": 1, "policy_blocked": 1}

    async def test_nested_executions_keep_their_own_operation(
        self, tracing: SpanCapture, metering: MetricCapture
    ) -> None:
        """An execution run from inside another's apply is counted under its own operation."""
        inner, _ = instrumented(tracing, metering)

        @attrs.frozen
        class Outer(Mutation[Quotas]):
            intent: ClassVar[MutationIntent] = MutationIntent("quota.outer")

            async def apply(self, state: Quotas) -> Quotas:
                result = await inner.execute(SetQuota("a", 1), state, state_id="inner")
                return result.new_state  # type: ignore[return-value]

        outer, _ = instrumented(tracing, metering)
        await outer.execute(Outer(), quotas(), state_id="outer")
        operations = sorted(
            dict(k)["mutator.operation"] for k in metering.points(EXECUTIONS_METRIC)
        )
        assert operations == ["quota.outer", "quota.set"]
        set_span, outer_span = tracing.spans(SPAN_NAME)
        assert set_span.parent.span_id == outer_span.context.span_id

    async def test_statistics_keep_their_meaning(
        self, tracing: SpanCapture, metering: MetricCapture
    ) -> None:
        """engine.statistics() still counts every execution once instrumented."""
        engine, _ = instrumented(tracing, metering)
        await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        await engine.execute(SetQuota("a", -1), quotas(), state_id="q")
        stats = await engine.statistics()
        assert (stats.total_executed, stats.succeeded, stats.failed) == (2, 1, 1)
        assert stats.p50 > 0

    async def test_collector_on_its_own_records_by_status(self, metering: MetricCapture) -> None:
        """Passed as metrics= without instrument(), samples carry the status only."""
        inner = InMemoryMetrics()
        engine = MutationEngine(metrics=OpenTelemetryMetrics(metering.provider, inner=inner))
        await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        (attributes,) = metering.points(DURATION_METRIC)
        assert dict(attributes) == {"mutator.status": "succeeded"}
        assert inner.statistics().total_executed == 1
