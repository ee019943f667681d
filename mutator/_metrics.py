"""The in-memory metrics collector: bounded memory, interpolated percentiles."""

from __future__ import annotations

import time
from collections import deque

from ._records import AuditOutcome
from ._statistics import EngineStatistics

__all__ = ["InMemoryMetrics", "percentile"]

_clock = time.perf_counter
"""The clock of the window's stamps: the one the engine times executions with, so an
inlined record can stamp the end of its own timing instead of reading a clock again."""


def percentile(ordered: list[float], fraction: float) -> float:
    """Linear-interpolated percentile of an ascending list (0 for an empty one)."""
    if not ordered:
        return 0.0
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class InMemoryMetrics:
    """Keeps the last ``window`` durations and running counters.

    Memory stays bounded however many executions are recorded; ``throughput`` is
    executions per second over the time spanned by the window.
    """

    __slots__ = ("_durations", "_stamps", "_succeeded", "_total")

    def __init__(self, window: int = 10_000) -> None:
        if window < 1:
            raise ValueError("metrics window must be >= 1")
        self._durations: deque[float] = deque(maxlen=window)
        self._stamps: deque[float] = deque(maxlen=window)
        self._total = 0
        self._succeeded = 0

    def record(self, outcome: AuditOutcome, duration: float) -> None:
        """Count one execution and keep its duration (seconds) in the window."""
        self._durations.append(duration)
        self._stamps.append(_clock())
        self._total += 1
        if outcome is AuditOutcome.SUCCEEDED:
            self._succeeded += 1

    def statistics(self) -> EngineStatistics:
        """Counters since creation; duration figures and throughput over the window."""
        ordered = sorted(self._durations)
        n = len(ordered)
        if not n:
            return EngineStatistics()
        span = self._stamps[-1] - self._stamps[0]
        return EngineStatistics(
            total_executed=self._total,
            succeeded=self._succeeded,
            failed=self._total - self._succeeded,
            window=n,
            mean=sum(ordered) / n,
            minimum=ordered[0],
            maximum=ordered[-1],
            p50=percentile(ordered, 0.50),
            p95=percentile(ordered, 0.95),
            p99=percentile(ordered, 0.99),
            throughput=(n - 1) / span if span > 0 else 0.0,
        )
