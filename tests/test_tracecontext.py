"""W3C trace context captured as plain data, and span links built back from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mutator import capture_trace_context, trace_link

from .conftest import SpanCapture

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

ROOT = Path(__file__).resolve().parent.parent


def hex_ids(context: SpanContext) -> tuple[str, str]:
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class TestCapture:
    def test_captures_the_current_span_as_traceparent(self, tracing: SpanCapture) -> None:
        """Inside a span the carrier holds a W3C traceparent naming that span."""
        with tracing.provider.get_tracer("tests").start_as_current_span("submit") as span:
            carrier = capture_trace_context()
        trace_id, span_id = hex_ids(span.get_span_context())
        assert set(carrier) == {"traceparent"}
        version, traced, parent, flags = carrier["traceparent"].split("-")
        assert (version, traced, parent) == ("00", trace_id, span_id)
        assert int(flags, 16) & 0x01  # sampled

    def test_keeps_the_tracestate(self) -> None:
        """A vendor tracestate travels with the traceparent."""
        context = SpanContext(
            0x1234,
            0x99,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=TraceState([("vendor", "v1")]),
        )
        with trace.use_span(NonRecordingSpan(context)):
            carrier = capture_trace_context()
        assert carrier["tracestate"] == "vendor=v1"
        assert carrier["traceparent"].startswith("00-" + "0" * 28 + "1234-")

    def test_captures_nothing_outside_a_span(self) -> None:
        """Without a current span the carrier is empty (and plain data)."""
        assert capture_trace_context() == {}


class TestLink:
    def test_links_back_to_the_captured_span(self, tracing: SpanCapture) -> None:
        """A span started elsewhere with the link points at the captured span."""
        tracer = tracing.provider.get_tracer("tests")
        with tracer.start_as_current_span("submit") as submit:
            carrier = capture_trace_context()
        other = TracerProvider()  # another process, as far as the data goes
        link = trace_link(dict(carrier), {"mutator.link": "submit"})
        assert link is not None
        with other.get_tracer("worker").start_as_current_span("execute", links=[link]) as worker:
            pass
        (linked,) = worker.links  # type: ignore[attr-defined]
        assert hex_ids(linked.context) == hex_ids(submit.get_span_context())
        assert linked.context.is_remote
        assert dict(linked.attributes) == {"mutator.link": "submit"}
        assert worker.get_span_context().trace_id != submit.get_span_context().trace_id

    @pytest.mark.parametrize(
        "carrier",
        [
            None,
            {},
            {"traceparent": "garbage"},
            {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
        ],
    )
    def test_no_link_from_an_empty_or_invalid_carrier(self, carrier: dict[str, str] | None) -> None:
        """Nothing valid to link to gives None, never an error."""
        assert trace_link(carrier) is None


def test_both_are_no_ops_without_opentelemetry() -> None:
    """Without OpenTelemetry installed, capture gives {} and link gives None."""
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "sys.modules['opentelemetry.trace'] = None\n"
        "from mutator import capture_trace_context, trace_link\n"
        "assert capture_trace_context() == {}\n"
        "assert trace_link({'traceparent': '00-" + "1" * 32 + "-" + "2" * 16 + "-01'}) is None\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
