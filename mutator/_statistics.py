"""Aggregate execution statistics."""

from __future__ import annotations

import attrs

__all__ = ["EngineStatistics"]


@attrs.frozen
class EngineStatistics:
    """Execution counts and latency percentiles (seconds) over the metrics window.

    ``total_executed`` counts every recorded execution since the collector started;
    the latency figures describe the most recent ``window`` executions.
    """

    total_executed: int = 0
    succeeded: int = 0
    failed: int = 0
    window: int = 0
    mean: float = 0.0
    minimum: float = 0.0
    maximum: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    throughput: float = 0.0
