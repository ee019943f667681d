"""OpenTelemetry tracing and metrics for the mutation engine (extra ``otel``).

Install with ``pip install "mutator[otel]"`` (it needs only ``opentelemetry-api``; the
application brings the SDK and exporters) and turn it on with one call::

    from mutator.otel import instrument

    instrumentation = instrument(engine)  # global tracer/meter providers by default
    ...
    instrumentation.uninstrument()

Nothing in :mod:`mutator` imports this module: an engine that is not instrumented pays
nothing, whether the extra is installed or not.

Traces: one span ``mutator.execute`` (kind INTERNAL) per execution, a batch step included,
started once the execution holds its concurrency slot and current while it runs (spans
made by policies or ``apply`` are its children). Attributes: ``mutator.operation``,
``mutator.category``, ``mutator.risk``, ``mutator.mode``, ``mutator.execution_id``,
``mutator.state_id`` and ``mutator.correlation_id`` (when set), and at the end
``mutator.status``: ``succeeded``, ``validation_failed``, ``policy_blocked``,
``approval_required``, ``failed``, ``timed_out`` or ``cancelled``. A policy that denied
adds an event ``mutator.policy.denied``, one that required approval an event
``mutator.policy.approval_required`` (attributes ``mutator.policy.name``,
``mutator.policy.reason``, ``mutator.policy.severity``). A failure or timeout sets the span
status to ERROR, records the exception and sets ``error.type``; validation failures and
policy outcomes are results, not errors; a cancelled execution ends with an unset status.

Metrics (meter ``mutator``): the histogram ``mutator.execution.duration`` (seconds) and the
counter ``mutator.executions``, both with the attributes ``mutator.operation`` and
``mutator.status``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        'mutator.otel needs OpenTelemetry: pip install "mutator[otel]"', name=error.name
    ) from error

from . import __version__
from ._context import ExecutionContext, MutationContext
from ._engine import MutationEngine
from ._enums import MutationMode
from ._errors import ConfigurationError, ExecutionTimeoutError
from ._intent import MutationIntent
from ._interceptors import Interceptor
from ._metrics import InMemoryMetrics
from ._mutation import Mutation
from ._records import AuditOutcome
from ._results import MutationResult
from ._statistics import EngineStatistics
from ._tracecontext import capture_trace_context, trace_link
from .protocols import MetricsCollector

__all__ = [
    "DURATION_METRIC",
    "EXECUTIONS_METRIC",
    "SPAN_NAME",
    "Instrumentation",
    "OpenTelemetryMetrics",
    "TracingInterceptor",
    "capture_trace_context",
    "instrument",
    "trace_link",
]

SCOPE = "mutator"
"""Instrumentation scope name of the tracer and the meter."""

SPAN_NAME = "mutator.execute"
"""Name of the span of one execution."""

DURATION_METRIC = "mutator.execution.duration"
"""Histogram of execution durations in seconds, by operation and status."""

EXECUTIONS_METRIC = "mutator.executions"
"""Counter of executions, by operation and status."""

OPERATION = "mutator.operation"
CATEGORY = "mutator.category"
RISK = "mutator.risk"
MODE = "mutator.mode"
STATE_ID = "mutator.state_id"
STATUS = "mutator.status"
EXECUTION_ID = "mutator.execution_id"
CORRELATION_ID = "mutator.correlation_id"
POLICY_NAME = "mutator.policy.name"
POLICY_REASON = "mutator.policy.reason"
POLICY_SEVERITY = "mutator.policy.severity"

_BUCKETS = (
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_KEY = "mutator.otel.span"
_MAX_ATTRIBUTE_SETS = 4096

# The operation of the execution whose outcome the engine records next in this task: set
# by TracingInterceptor's closing hook, read by OpenTelemetryMetrics.record right after.
_operation: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mutator.otel.operation", default=None
)


class TracingInterceptor(Interceptor):
    """Opens one ``mutator.execute`` span per execution (see the module docstring).

    It runs first among interceptors (lowest ``order``), so its span covers the other
    interceptors' ``before`` hooks and closes before their ``after`` hooks.
    """

    name = "opentelemetry"
    order = -(2**31)

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        self._static: dict[tuple[type[Any], MutationMode], dict[str, str]] = {}

    def _describe(
        self, intent: MutationIntent, cls: type[Any], mode: MutationMode
    ) -> dict[str, str]:
        """The attributes every execution of mutation class ``cls`` in ``mode`` shares."""
        static = {
            OPERATION: intent.operation,
            CATEGORY: intent.category,
            RISK: intent.risk.name.lower(),
            MODE: mode.value,
        }
        if len(self._static) < _MAX_ATTRIBUTE_SETS:
            self._static[cls, mode] = static
        return static

    def before(
        self,
        mutation: Mutation[Any],
        state: Any,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        key = (type(mutation), context.mode)
        static = self._static.get(key)
        if static is None:
            static = self._describe(mutation.intent, *key)
        attributes = static.copy()
        attributes[EXECUTION_ID] = execution.execution_id
        if execution.state_id is not None:
            attributes[STATE_ID] = execution.state_id
        if context.correlation_id is not None:
            attributes[CORRELATION_ID] = context.correlation_id
        span = self.tracer.start_span(
            SPAN_NAME, kind=trace.SpanKind.INTERNAL, attributes=attributes
        )
        # An invalid span (no SDK) would only hide the caller's span from child spans.
        token = (
            otel_context.attach(trace.set_span_in_context(span))
            if span.get_span_context().is_valid
            else None
        )
        execution.data[_KEY] = (span, token)

    def after(
        self,
        mutation: Mutation[Any],
        old_state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        _operation.set(mutation.intent.operation)
        span = self._close(execution)
        if span is not None:
            span.set_attribute(STATUS, result.status.value)
            span.end()

    def policy_blocked(
        self,
        mutation: Mutation[Any],
        state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        _operation.set(mutation.intent.operation)
        span = self._close(execution)
        if span is None:
            return
        if span.is_recording():
            span.set_attribute(STATUS, result.status.value)
            for decision in result.policy_decisions:
                if decision.blocks:
                    event = "mutator.policy.denied"
                elif decision.needs_approval:
                    event = "mutator.policy.approval_required"
                else:
                    continue
                span.add_event(
                    event,
                    {
                        POLICY_NAME: decision.policy_name or "",
                        POLICY_REASON: decision.reason or "",
                        POLICY_SEVERITY: decision.severity.name.lower(),
                    },
                )
        span.end()

    def failed(
        self,
        mutation: Mutation[Any],
        state: Any,
        error: BaseException,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        _operation.set(mutation.intent.operation)
        span = self._close(execution)
        if span is None:
            return
        if span.is_recording():
            timed_out = isinstance(error, ExecutionTimeoutError)
            span.set_attributes(
                {STATUS: "timed_out" if timed_out else "failed", "error.type": _qualname(error)}
            )
            span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
        span.end()

    def cancelled(
        self,
        mutation: Mutation[Any],
        state: Any,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        span = self._close(execution)
        if span is not None:
            span.set_attribute(STATUS, "cancelled")
            span.end()

    @staticmethod
    def _close(execution: ExecutionContext) -> trace.Span | None:
        """Detach the execution's span from the current context and hand it back."""
        opened = execution.data.pop(_KEY, None)
        if opened is None:
            return None
        span, token = opened
        if token is not None:
            otel_context.detach(token)
        return span  # type: ignore[no-any-return]


def _qualname(error: BaseException) -> str:
    """The ``error.type`` of an exception: its public, fully qualified class name."""
    cls = type(error)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module.startswith("mutator._"):
        module = "mutator"
    return f"{module}.{cls.__qualname__}"


class OpenTelemetryMetrics:
    """A :class:`~mutator.MetricsCollector` that exports through the OpenTelemetry metrics API.

    Each sample goes to the histogram ``mutator.execution.duration`` and the counter
    ``mutator.executions`` (attribute ``mutator.status``, plus ``mutator.operation`` when
    the engine also runs a :class:`TracingInterceptor`, as :func:`instrument` sets up), and
    is forwarded to ``inner`` (an :class:`~mutator.InMemoryMetrics` by default), which
    answers :meth:`statistics` — so ``engine.statistics()`` keeps its meaning.
    """

    __slots__ = ("_attribute_sets", "_count", "_duration", "inner")

    def __init__(
        self,
        meter_provider: otel_metrics.MeterProvider | None = None,
        *,
        inner: MetricsCollector | None = None,
    ) -> None:
        meter = otel_metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            DURATION_METRIC,
            unit="s",
            description="Duration of mutation executions",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self._count = meter.create_counter(
            EXECUTIONS_METRIC, unit="{execution}", description="Mutation executions"
        )
        self.inner: MetricsCollector = inner if inner is not None else InMemoryMetrics()
        self._attribute_sets: dict[tuple[AuditOutcome, str | None], Mapping[str, str]] = {}

    def record(self, outcome: AuditOutcome, duration: float) -> None:
        key = (outcome, _operation.get())
        attributes = self._attribute_sets.get(key)
        if attributes is None:
            attributes = {STATUS: outcome.value}
            if key[1] is not None:
                attributes[OPERATION] = key[1]
            if len(self._attribute_sets) < _MAX_ATTRIBUTE_SETS:
                self._attribute_sets[key] = attributes
        self._duration.record(duration, attributes)
        self._count.add(1, attributes)
        self.inner.record(outcome, duration)

    def statistics(self) -> EngineStatistics:
        """What ``inner`` aggregated (the OpenTelemetry instruments are write-only)."""
        return self.inner.statistics()


class Instrumentation:
    """What :func:`instrument` installed on one engine; :meth:`uninstrument` removes it."""

    __slots__ = ("engine", "interceptor", "metrics")

    def __init__(
        self,
        engine: MutationEngine,
        interceptor: TracingInterceptor,
        metrics: OpenTelemetryMetrics,
    ) -> None:
        self.engine = engine
        self.interceptor = interceptor
        self.metrics = metrics

    @property
    def active(self) -> bool:
        """Whether the engine still carries this instrumentation."""
        return any(i is self.interceptor for i in self.engine.interceptors)

    def uninstrument(self) -> None:
        """Remove the tracing interceptor and restore the engine's own metrics collector.

        Idempotent. Executions already running finish their spans.
        """
        if self.active:
            self.engine.unregister_interceptor(self.interceptor.name)
        if self.engine.metrics is self.metrics:
            self.engine.metrics = self.metrics.inner


def instrument(
    engine: MutationEngine,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: otel_metrics.MeterProvider | None = None,
) -> Instrumentation:
    """Trace and meter every execution of ``engine`` through OpenTelemetry.

    Registers a :class:`TracingInterceptor` and wraps ``engine.metrics`` in an
    :class:`OpenTelemetryMetrics` that forwards to it (``engine.statistics()`` is unchanged).
    Without providers the globally configured ones are used (no-ops until the application
    sets an SDK up). Raises :class:`~mutator.ConfigurationError` when the engine is already
    instrumented.
    """
    if not isinstance(engine, MutationEngine):
        raise TypeError(f"instrument() takes a MutationEngine, got {type(engine).__name__}")
    if any(i.name == TracingInterceptor.name for i in engine.interceptors):
        raise ConfigurationError("this engine is already instrumented with OpenTelemetry")
    interceptor = TracingInterceptor(tracer_provider)
    collector = OpenTelemetryMetrics(meter_provider, inner=engine.metrics)
    engine.register_interceptor(interceptor)
    engine.metrics = collector
    return Instrumentation(engine, interceptor, collector)
