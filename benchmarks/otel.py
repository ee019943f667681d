"""What OpenTelemetry instrumentation costs: ``engine.commit.strict_policy`` with it on and off.

Every scenario here has ``engine.commit.strict_policy`` as its baseline, so its ratio reads
"the instrumented engine costs this many uninstrumented executions":

- ``otel.strict_policy.installed_off``: ``mutator.otel`` and the SDK imported, an SDK tracer
  provider set up, the engine not instrumented (target <= 1.02);
- ``otel.strict_policy.noop_providers``: ``instrument(engine)`` against the API's no-op
  tracer and meter providers (an application without an SDK);
- ``otel.strict_policy.sampled_out``: ``instrument(engine)`` with an SDK tracer provider
  whose sampler records nothing (``ALWAYS_OFF``), no-op meter: a trace that is not sampled;
- ``otel.strict_policy.tracing_on``: ``instrument(engine)`` with an SDK tracer provider
  whose span processor drops every finished span (no export cost), no-op meter
  (target <= 1.3);
- ``otel.strict_policy.tracing_metrics_on``: as above plus an SDK meter provider with an
  in-memory reader that is never collected during the run.

The scenarios are skipped with a reason when ``opentelemetry-sdk`` is not installed.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from mutator import EngineOptions, MutationEngine, MutationMode

from .engine import Allow, Counter, IncrementCounter, execute
from .harness import Scenario

__all__ = ["SCENARIOS"]

BASELINE = "engine.commit.strict_policy"


def _sdk_missing() -> str | None:
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        return 'opentelemetry-sdk is not installed (pip install -e ".[dev]")'
    return None


def _make_engine(setup: str) -> MutationEngine:
    """A strict engine with one allow policy, instrumented as ``setup`` says."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from mutator.otel import instrument

    engine = MutationEngine(EngineOptions.strict(), policies=[Allow()])
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SpanProcessor())  # the base class drops every span
    if setup == "installed_off":
        return engine
    if setup == "noop_providers":
        instrument(
            engine,
            tracer_provider=trace.NoOpTracerProvider(),
            meter_provider=metrics.NoOpMeterProvider(),
        )
    elif setup == "sampled_out":
        instrument(
            engine,
            tracer_provider=TracerProvider(sampler=ALWAYS_OFF),
            meter_provider=metrics.NoOpMeterProvider(),
        )
    elif setup == "tracing_on":
        instrument(
            engine, tracer_provider=tracer_provider, meter_provider=metrics.NoOpMeterProvider()
        )
    else:
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        instrument(engine, tracer_provider=tracer_provider, meter_provider=meter_provider)
    return engine


def _scenario(setup: str, summary: str) -> Scenario:
    factory: Any = functools.partial(_make_engine, setup)
    return Scenario(
        f"otel.strict_policy.{setup}",
        BASELINE,
        functools.partial(execute, factory, IncrementCounter(), Counter(), MutationMode.COMMIT),
        summary,
        engine=True,
        unavailable=_sdk_missing,
    )


SCENARIOS: tuple[Scenario, ...] = (
    _scenario("installed_off", "strict_policy, OpenTelemetry SDK loaded, engine not instrumented"),
    _scenario("noop_providers", "strict_policy, instrument() with the API's no-op providers"),
    _scenario("sampled_out", "strict_policy, instrument() with an SDK sampling nothing"),
    _scenario("tracing_on", "strict_policy, instrument() with an SDK tracer dropping spans"),
    _scenario(
        "tracing_metrics_on", "strict_policy, SDK tracer dropping spans + SDK meter provider"
    ),
)
