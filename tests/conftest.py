"""Shared fixtures: every async core/governance test runs on asyncio and on trio."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run the requesting anyio test once per backend."""
    return str(request.param)


@dataclasses.dataclass(frozen=True)
class SpanCapture:
    """An SDK tracer provider and the in-memory exporter its finished spans go to."""

    provider: Any
    exporter: Any

    def spans(self, name: str | None = None) -> list[Any]:
        """Finished spans (optionally only those called ``name``), in the order they ended."""
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]


@dataclasses.dataclass(frozen=True)
class MetricCapture:
    """An SDK meter provider and the in-memory reader that collects from it."""

    provider: Any
    reader: Any

    def points(self, metric: str) -> dict[frozenset[tuple[str, Any]], Any]:
        """The data points of ``metric`` keyed by their attribute set."""
        data = self.reader.get_metrics_data()
        found: dict[frozenset[tuple[str, Any]], Any] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric:
                        for point in item.data.data_points:
                            found[frozenset(point.attributes.items())] = point
        return found


@pytest.fixture
def tracing() -> Iterator[SpanCapture]:
    """An SDK tracer provider whose finished spans are kept in memory."""
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    capture = SpanCapture(sdk.TracerProvider(), InMemorySpanExporter())
    capture.provider.add_span_processor(SimpleSpanProcessor(capture.exporter))
    yield capture
    capture.provider.shutdown()


@pytest.fixture
def metering() -> Iterator[MetricCapture]:
    """An SDK meter provider read by an in-memory metric reader."""
    sdk = pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    capture = MetricCapture(sdk.MeterProvider(metric_readers=[reader]), reader)
    yield capture
    capture.provider.shutdown()
