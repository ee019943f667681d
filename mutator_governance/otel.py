"""OpenTelemetry tracing and metrics for governance (extra ``otel``).

One call turns it on, like :func:`mutator.otel.instrument` for the engine::

    from mutator_governance.otel import instrument

    instrumentation = instrument(gov)  # global tracer/meter providers by default
    ...
    instrumentation.uninstrument()

or, for as long as the governance is open (``engine=True`` instruments its engine too)::

    async with Governance.open(url, registry=registry, instrumentation=instrument) as gov:
        ...

A :class:`~mutator_governance.Governance` that is not instrumented pays one attribute check
per operation and never imports OpenTelemetry. Instrument every process (submitters,
approvers, workers) to link them.

Traces (tracer ``mutator.governance``): a span ``mutator.governance.<operation>`` for
``submit``, ``approve``, ``reject``, ``cancel``, ``expire``, ``supersede``,
``move_to_pending``, ``resolve``, ``execute``, ``claim``, ``recover``, ``compensate`` and
``purge``; ``mutator.governance.commit`` for every ledger commit (its child);
``mutator.governance.worker.execute`` for each execution a worker runs (a new trace, the
parent of its ``execute`` span). Attributes: ``mutator.governance.request_id``,
``.operation``, ``.actor`` (when known) and at the end ``.status`` (the request's status) —
plus ``mutator.governance.outcome`` on worker spans. The submit span's W3C trace context is
stored on the request (:attr:`MutationRequest.trace_context`); spans that load a stored
request (approve, reject, cancel, execute, ...) and worker spans LINK to it, in any
process. An exception sets the span status to ERROR and ``error.type``; so does an
``execute`` whose mutation failed (the request ends FAILED). Instrument the
engine too (``engine=True``, or :func:`mutator.otel.instrument`) and its
``mutator.execute`` span nests under the governed execution.

Metrics (meter ``mutator.governance``): counter ``mutator.governance.operations`` by
``mutator.governance.operation`` and ``mutator.governance.outcome`` (the resulting status,
or ``error``); observable gauge ``mutator.governance.pending_approvals`` (the count last
taken by :meth:`GovernanceInstrumentation.refresh`, which a worker calls on each recovery
pass); counters ``mutator.governance.worker.claims``, ``mutator.governance.worker.executions``
(by outcome: ``executed``, ``not_executed``, ``failed``, ``skipped``, ``errors``) and
``mutator.governance.worker.retries`` (claims released so the request runs again).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        'mutator_governance.otel needs OpenTelemetry: pip install "mutator[otel]"',
        name=error.name,
    ) from error

from mutator import MutationContext, __version__, capture_trace_context, trace_link
from mutator.otel import Instrumentation as EngineInstrumentation
from mutator.otel import instrument as instrument_engine

from ._commit_types import GovernedCommit
from ._enums import LifecycleDecision, PendingReason, RequestStatus
from ._execution import GovernedExecutionResult
from ._governance import Governance
from ._ledger import operation_of
from ._request import MutationRequest
from ._retention import PurgeReport
from .protocols import RequestStore

__all__ = ["GovernanceInstrumentation", "GovernanceTelemetry", "instrument"]

SCOPE = "mutator.governance"
"""Instrumentation scope name of the tracer and the meter."""

REQUEST_ID = "mutator.governance.request_id"
OPERATION = "mutator.governance.operation"
STATUS = "mutator.governance.status"
ACTOR = "mutator.governance.actor"
OUTCOME = "mutator.governance.outcome"

OPERATIONS_METRIC = "mutator.governance.operations"
PENDING_METRIC = "mutator.governance.pending_approvals"
CLAIMS_METRIC = "mutator.governance.worker.claims"
EXECUTIONS_METRIC = "mutator.governance.worker.executions"
RETRIES_METRIC = "mutator.governance.worker.retries"

_NAMES: dict[str, str] = {}

# The span of the governance operation running in this task (links are added to it) and
# the trace contexts it already links to.
_current: contextvars.ContextVar[tuple[trace.Span, set[str]] | None] = contextvars.ContextVar(
    "mutator.governance.otel.span", default=None
)


def _span_name(operation: str) -> str:
    name = _NAMES.get(operation)
    if name is None:
        name = _NAMES[operation] = f"{SCOPE}.{operation}"
    return name


def _qualname(error: BaseException) -> str:
    cls = type(error)
    module = cls.__module__
    if module.startswith("mutator_governance._"):
        module = "mutator_governance"
    elif module.startswith("mutator._"):
        module = "mutator"
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _request_of(result: object) -> MutationRequest | None:
    if isinstance(result, MutationRequest):
        return result
    if isinstance(result, GovernedExecutionResult):
        return result.request
    if type(result) is tuple and result and isinstance(result[0], MutationRequest):
        return result[0]  # a claim: (the claimed request, the state it read)
    request = getattr(result, "request", None)
    return request if isinstance(request, MutationRequest) else None


class GovernanceTelemetry:
    """The OpenTelemetry implementation of governance's telemetry hooks."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: otel_metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        meter = otel_metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
        self._operations = meter.create_counter(
            OPERATIONS_METRIC, unit="{operation}", description="Governance operations"
        )
        self._claims = meter.create_counter(
            CLAIMS_METRIC, unit="{claim}", description="Requests claimed for execution"
        )
        self._executions = meter.create_counter(
            EXECUTIONS_METRIC, unit="{execution}", description="Worker executions by outcome"
        )
        self._retries = meter.create_counter(
            RETRIES_METRIC, unit="{request}", description="Claims released to run again"
        )
        self.pending_approvals: int | None = None
        meter.create_observable_gauge(
            PENDING_METRIC,
            callbacks=[self._observe_pending],
            unit="{request}",
            description="Requests pending approval (as last counted)",
        )

    def _observe_pending(self, _: Any) -> Iterable[otel_metrics.Observation]:
        if self.pending_approvals is None:
            return ()
        return (otel_metrics.Observation(self.pending_approvals),)

    async def operation(
        self,
        name: str,
        call: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        attributes: dict[str, str] = {OPERATION: name}
        if len(args) > 1 and isinstance(args[1], str):
            attributes[REQUEST_ID] = args[1]
        context = kwargs.get("context")
        if isinstance(context, MutationContext) and context.actor_id is not None:
            attributes[ACTOR] = context.actor_id
        with self.tracer.start_as_current_span(
            _span_name(name),
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            token = _current.set((span, set()))
            try:
                result = await call(*args, **kwargs)
            except BaseException as error:
                _current.reset(token)
                if isinstance(error, Exception):
                    span.set_attribute("error.type", _qualname(error))
                    span.record_exception(error)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
                    self._operations.add(1, {OPERATION: name, OUTCOME: "error"})
                raise
            _current.reset(token)
            request = _request_of(result)
            outcome = "ok"
            if request is not None:
                outcome = request.status.value
                span.set_attribute(REQUEST_ID, request.request_id)
                span.set_attribute(STATUS, outcome)
                if name == "execute" and request.status is RequestStatus.FAILED:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, "the mutation failed"))
            elif isinstance(result, PurgeReport):
                span.set_attribute("mutator.governance.purged", result.requests)
            self._operations.add(1, {OPERATION: name, OUTCOME: outcome})
            return result

    def capture(self) -> Mapping[str, str]:
        return capture_trace_context()

    def loaded(self, request: MutationRequest) -> None:
        current = _current.get()
        if current is None or not request.trace_context:
            return
        span, linked = current
        parent = request.trace_context.get("traceparent", "")
        if parent in linked or not span.is_recording():
            return
        linked.add(parent)
        link = trace_link(request.trace_context)
        if link is not None:
            span.add_link(link.context, {"mutator.governance.link": "submit"})

    async def commit(
        self, commit: GovernedCommit, call: Callable[[], Awaitable[tuple[MutationRequest, ...]]]
    ) -> tuple[MutationRequest, ...]:
        first = commit.requests[0]
        operation = operation_of(first)
        with self.tracer.start_as_current_span(
            _span_name("commit"),
            attributes={REQUEST_ID: first.request.request_id, OPERATION: operation},
        ) as span:
            stored = await call()
            span.set_attribute(STATUS, stored[0].status.value)
        for write in commit.requests:
            for new in write.new_decisions:
                if new.code is LifecycleDecision.CLAIMED:
                    self._claims.add(1)
                elif new.code is LifecycleDecision.RELEASED:
                    self._retries.add(1)
        return stored

    async def worker_execution(
        self, request: MutationRequest, call: Callable[[], Awaitable[Any]]
    ) -> Any:
        link = trace_link(request.trace_context, {"mutator.governance.link": "submit"})
        with self.tracer.start_as_current_span(
            _span_name("worker.execute"),
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            attributes={REQUEST_ID: request.request_id, OPERATION: "execute"},
            links=[link] if link is not None else None,
        ) as span:
            outcome = await call()
            span.set_attribute(OUTCOME, str(outcome))
            if outcome == "errors":
                span.set_status(trace.Status(trace.StatusCode.ERROR, "execution raised"))
            return outcome

    def worker_outcome(self, outcome: str) -> None:
        self._executions.add(1, {OUTCOME: outcome})

    async def refresh(self, requests: RequestStore) -> None:
        self.pending_approvals = len(await requests.pending(PendingReason.APPROVAL))


class GovernanceInstrumentation:
    """What :func:`instrument` installed on one governance; :meth:`uninstrument` removes it.

    ``engine`` is the engine's :class:`mutator.otel.Instrumentation` when ``instrument``
    was called with ``engine=True`` (None otherwise).
    """

    __slots__ = ("engine", "governance", "telemetry")

    def __init__(
        self,
        governance: Governance,
        telemetry: GovernanceTelemetry,
        engine: EngineInstrumentation | None = None,
    ) -> None:
        self.governance = governance
        self.telemetry = telemetry
        self.engine = engine

    @property
    def active(self) -> bool:
        """Whether the governance still carries this instrumentation."""
        return self.governance.telemetry is self.telemetry

    async def refresh(self) -> None:
        """Count the requests pending approval now (the gauge reports the last count)."""
        await self.telemetry.refresh(self.governance.requests)

    def uninstrument(self) -> None:
        """Remove the hooks (and the engine's, if installed with them); idempotent.

        Operations already running finish their spans.
        """
        if self.active:
            _install(self.governance, None)
        if self.engine is not None:
            self.engine.uninstrument()


def _install(governance: Governance, telemetry: GovernanceTelemetry | None) -> None:
    governance.telemetry = telemetry
    governance.executor.telemetry = telemetry
    governance.executor.ledger.telemetry = telemetry


def instrument(
    governance: Governance,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: otel_metrics.MeterProvider | None = None,
    engine: bool = False,
) -> GovernanceInstrumentation:
    """Trace and meter every operation of ``governance`` through OpenTelemetry.

    Without providers the globally configured ones are used. With ``engine=True`` the
    governance's engine is instrumented too (:func:`mutator.otel.instrument`, same
    providers), so its ``mutator.execute`` spans nest under the governed executions.
    Raises :class:`~mutator.ConfigurationError` when the governance (or, with
    ``engine=True``, its engine) is already instrumented; nothing is installed then.
    Pass it to :meth:`Governance.open` as ``instrumentation=`` to instrument a governance
    for as long as it is open.
    """
    from mutator import ConfigurationError

    if not isinstance(governance, Governance):
        raise TypeError(f"instrument() takes a Governance, got {type(governance).__name__}")
    if governance.telemetry is not None:
        raise ConfigurationError("this governance is already instrumented with OpenTelemetry")
    engine_instrumentation = (
        instrument_engine(
            governance.engine, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        if engine
        else None
    )
    telemetry = GovernanceTelemetry(tracer_provider, meter_provider)
    _install(governance, telemetry)
    return GovernanceInstrumentation(governance, telemetry, engine_instrumentation)
