"""Engine options and their presets."""

from __future__ import annotations

import math
from typing import Any

import attrs

from ._errors import ConfigurationError

__all__ = ["EngineOptions"]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _seconds(_: Any, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    if value is None:
        return
    if not _number(value) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(
            f"EngineOptions.{attribute.name} must be a finite number of seconds > 0 or None, "
            f"got {value!r}"
        )


def _at_least_one(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"EngineOptions.{attribute.name} must be an int >= 1, got {value!r}"
        )


def _flag(_: Any, attribute: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(f"EngineOptions.{attribute.name} must be a bool, got {value!r}")


@attrs.frozen
class EngineOptions:
    """How the engine runs mutations.

    ``always_validate``: validate in COMMIT mode too (validation always runs for SIMULATE
    and VALIDATE). ``execution_timeout``: seconds for one execution from the moment it holds
    its concurrency slot until its result is decided (before-hooks, policies, validation
    and apply/simulate); awaited work is interrupted, synchronous work is checked when it
    returns. Recording (audit, history) is not counted. ``policy_timeout``: seconds for
    each policy, within the execution's budget. ``max_concurrency``: executions running at
    once across all states. ``metrics_window``: executions kept for percentiles.

    Bad values (NaN, infinite, zero or negative timeouts, non-integer counts, a non-bool
    flag) raise :class:`ConfigurationError` naming the option, at construction.
    """

    always_validate: bool = attrs.field(default=True, validator=_flag)
    execution_timeout: float | None = attrs.field(default=None, validator=_seconds)
    policy_timeout: float | None = attrs.field(default=None, validator=_seconds)
    max_concurrency: int = attrs.field(default=10, validator=_at_least_one)
    metrics_window: int = attrs.field(default=10_000, validator=_at_least_one)

    @classmethod
    def default(cls) -> EngineOptions:
        """Validate on commit, no timeouts, ten executions at once."""
        return cls()

    @classmethod
    def strict(cls) -> EngineOptions:
        """Validate on commit, 30 s execution and 5 s policy timeouts."""
        return cls(always_validate=True, execution_timeout=30.0, policy_timeout=5.0)

    @classmethod
    def performance(cls) -> EngineOptions:
        """Skip validation on commit, no timeouts, 64 executions at once."""
        return cls(always_validate=False, max_concurrency=64)
