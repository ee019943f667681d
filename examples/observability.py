"""Observability: the spans and metrics of engine executions, printed by OpenTelemetry.

An application span ``PUT /quotas/acme`` wraps three executions of one engine instrumented
with ``mutator.otel.instrument``: a committed quota change, one blocked by a policy (its
span carries a ``mutator.policy.denied`` event) and one whose ``apply`` raises (its span is
marked as an error). The console exporter prints each span as it ends, one line each; the
SDK's in-memory metric reader then shows the duration histogram by operation and status,
while ``engine.statistics()`` keeps working as before.

Needs the OpenTelemetry SDK (``pip install "mutator[otel]" opentelemetry-sdk``); without it
the example prints one line saying so and returns.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import attrs

from mutator import (
    Mutation,
    MutationContext,
    MutationEngine,
    MutationFailedError,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    RiskLevel,
)

STATE_ID = "quotas:acme"


@attrs.frozen
class Quotas:
    limits: dict[str, int]


@attrs.frozen
class SetLimit(Mutation[Quotas]):
    user: str
    limit: int
    intent: ClassVar[MutationIntent] = MutationIntent(
        "quota.set_limit", category="billing", risk=RiskLevel.MEDIUM
    )

    def apply(self, state: Quotas) -> Quotas:
        if self.limit > 10_000:
            raise OverflowError(f"limit {self.limit} does not fit the billing plan")
        return Quotas({**state.limits, self.user: self.limit})


class NoQuotaForBots(MutationPolicy[Quotas]):
    name = "NoQuotaForBots"

    def evaluate(self, mutation: Any, state: Quotas, context: MutationContext) -> PolicyDecision:
        if mutation.user.endswith("-bot"):
            return PolicyDecision.deny("bots get no quota")
        return PolicyDecision.allow()


def one_line(span: Any) -> str:
    """The console exporter's formatter: one line per span (the default is JSON)."""
    parent = f"{span.parent.span_id:016x}" if span.parent else "-"
    attributes = {k: v for k, v in span.attributes.items() if k != "mutator.execution_id"}
    events = [event.name for event in span.events]
    return (
        f"  span {span.name} id={span.context.span_id:016x} parent={parent} "
        f"status={span.status.status_code.name} {attributes}"
        + (f" events={events}" if events else "")
        + "\n"
    )


async def main() -> dict[str, Any]:
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        reason = (
            "skipped: the OpenTelemetry SDK is not installed "
            '(pip install "mutator[otel]" opentelemetry-sdk)'
        )
        print(reason)
        return {"skipped": reason}

    from mutator.otel import DURATION_METRIC, instrument

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout, formatter=one_line))
    )
    kept = InMemorySpanExporter()  # what the test suite checks
    tracer_provider.add_span_processor(SimpleSpanProcessor(kept))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    engine = MutationEngine(policies=[NoQuotaForBots()])
    instrumentation = instrument(
        engine, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    state = Quotas({"alice": 100})
    context = MutationContext.user("carol", reason="plan upgrade", correlation_id="req-42")
    tracer = tracer_provider.get_tracer("examples.observability")

    print("spans (printed as each one ends):")
    with tracer.start_as_current_span("PUT /quotas/acme"):
        done = await engine.execute(
            SetLimit("alice", 500), state, context=context, state_id=STATE_ID
        )
        blocked = await engine.execute(
            SetLimit("crawler-bot", 50), done.new_state, context=context, state_id=STATE_ID
        )
        try:
            await engine.execute(
                SetLimit("bob", 50_000), done.new_state, context=context, state_id=STATE_ID
            )
        except MutationFailedError as error:
            failure = str(error)
    instrumentation.uninstrument()

    print("metrics:")
    data = reader.get_metrics_data()
    histogram: dict[str, int] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == DURATION_METRIC:
                    for point in metric.data.data_points:
                        labels = point.attributes
                        key = f"{labels['mutator.operation']}/{labels['mutator.status']}"
                        histogram[key] = point.count
                        print(f"  {DURATION_METRIC}{{{key}}} count={point.count}")
    statistics = await engine.statistics()
    print(
        f"  engine.statistics(): {statistics.total_executed} executed, "
        f"{statistics.succeeded} succeeded"
    )
    tracer_provider.shutdown()
    meter_provider.shutdown()
    return {
        "spans": kept.get_finished_spans(),
        "histogram": histogram,
        "statistics": statistics,
        "blocked": blocked,
        "failure": failure,
    }
