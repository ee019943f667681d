"""W3C trace context as plain data: capture it where work starts, link to it where it ends.

A durable request outlives the span that submitted it; storing the submitter's trace
context as a ``dict[str, str]`` (``traceparent`` and, when set, ``tracestate``) lets a later
span in any process link back to it. Both helpers work without OpenTelemetry installed (they
then capture nothing and link nothing), and never import it themselves: with no
``opentelemetry`` module loaded there is no current span to capture.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Link

__all__ = ["capture_trace_context", "trace_link"]

_propagator: Any = None


def _w3c() -> Any:
    """The W3C TraceContext propagator, or None while OpenTelemetry is not loaded."""
    global _propagator
    if _propagator is None:
        if "opentelemetry.trace" not in sys.modules:
            return None
        try:
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:  # pragma: no cover - a broken installation
            return None
        _propagator = TraceContextTextMapPropagator()
    return _propagator


def capture_trace_context() -> dict[str, str]:
    """The current span's W3C trace context (``traceparent``/``tracestate``), or ``{}``.

    Empty when OpenTelemetry is not installed or not in use, or when no valid span is
    current. Uses the W3C format whatever the globally configured propagator is, so what is
    stored stays readable by every process.
    """
    propagator = _w3c()
    if propagator is None:
        return {}
    carrier: dict[str, str] = {}
    propagator.inject(carrier)
    return carrier


def trace_link(
    carrier: Mapping[str, str] | None, attributes: Mapping[str, str] | None = None
) -> Link | None:
    """A span :class:`~opentelemetry.trace.Link` to the context captured in ``carrier``.

    None when ``carrier`` is empty or holds no valid ``traceparent``, or when OpenTelemetry
    is not in use. Pass the links to ``tracer.start_span(..., links=[...])``.
    """
    if not carrier:
        return None
    propagator = _w3c()
    if propagator is None:
        return None
    from opentelemetry.trace import Link, get_current_span

    span_context = get_current_span(propagator.extract(dict(carrier))).get_span_context()
    if not span_context.is_valid:
        return None
    return Link(span_context, dict(attributes) if attributes else None)
