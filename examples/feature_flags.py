"""Feature flags: a two-person rule and business hours, composed into one gate, with logging.

Every flag change is HIGH risk. Two rules govern it, registered together as one ``all_of``
composition, ``CriticalFeatureFlagGovernance``:

* ``RequireTwoPersonApprovalPolicy``: disabling a critical flag (``new_checkout``,
  ``beta_features``) needs two distinct approvers in the context metadata ``approved_by``,
  not counting the actor;
* ``BusinessHoursPolicy``: HIGH-risk changes only between 09:00 and 17:00 UTC. It reads
  the time from a clock it is given, so this example is deterministic.

A ``LoggingInterceptor`` logs every execution; its lines are shown inline as ``[log]``.

Scenarios: enable ``new_checkout`` in business hours (with a correlation id, found again on
the history entry); disable a non-critical flag with approval metadata; the same kind of
change after hours (denied); and a four-toggle batch whose third step breaks the
two-person rule. A batch is all or nothing: the failed batch has no final state and writes
no history, while the same batch with a second approver commits all four steps.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, time
from typing import Any, ClassVar

import attrs

from mutator import (
    EngineOptions,
    EngineStatistics,
    LoggingInterceptor,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    RiskLevel,
    all_of,
)

STATE_ID = "flags:web"
CRITICAL_FLAGS = frozenset({"new_checkout", "beta_features"})
IN_HOURS = datetime(2025, 3, 11, 10, 30, tzinfo=UTC)
AFTER_HOURS = datetime(2025, 3, 11, 21, 15, tzinfo=UTC)


@attrs.frozen
class Flags:
    flags: dict[str, bool]


@attrs.frozen
class EnableFlag(Mutation[Flags]):
    flag: str
    intent: ClassVar[MutationIntent] = MutationIntent(
        "flag.enable", category="feature-flags", risk=RiskLevel.HIGH
    )

    def apply(self, state: Flags) -> Flags:
        return Flags({**state.flags, self.flag: True})


@attrs.frozen
class DisableFlag(Mutation[Flags]):
    flag: str
    intent: ClassVar[MutationIntent] = MutationIntent(
        "flag.disable", category="feature-flags", risk=RiskLevel.HIGH
    )

    def apply(self, state: Flags) -> Flags:
        return Flags({**state.flags, self.flag: False})


class ManualClock:
    """A clock the example sets by hand: ``clock()`` returns ``clock.now``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class RequireTwoPersonApprovalPolicy(MutationPolicy[Flags]):
    """Disabling a critical flag needs two approvers other than the actor."""

    def evaluate(self, mutation: Any, state: Flags, context: MutationContext) -> PolicyDecision:
        if not isinstance(mutation, DisableFlag) or mutation.flag not in CRITICAL_FLAGS:
            return PolicyDecision.allow()
        approvers = set(context.metadata.get("approved_by", ())) - {context.actor_id}
        if len(approvers) < 2:
            return PolicyDecision.deny(
                f"disabling {mutation.flag} needs 2 approvers besides the actor, "
                f"got {sorted(approvers)}"
            )
        return PolicyDecision.allow()


class BusinessHoursPolicy(MutationPolicy[Flags]):
    """HIGH-risk changes only between 09:00 and 17:00 UTC, by the injected clock."""

    def __init__(self, clock: ManualClock, opens: time = time(9), closes: time = time(17)):
        self.clock = clock
        self.opens = opens
        self.closes = closes

    def evaluate(self, mutation: Any, state: Flags, context: MutationContext) -> PolicyDecision:
        if mutation.intent.risk < RiskLevel.HIGH:
            return PolicyDecision.allow()
        now = self.clock().astimezone(UTC)
        if not self.opens <= now.time() < self.closes:
            hours = f"{self.opens:%H:%M}-{self.closes:%H:%M}"
            return PolicyDecision.deny(f"{now:%H:%M} UTC is outside business hours ({hours})")
        return PolicyDecision.allow()


class PrintingHandler(logging.Handler):
    """Prints each log record inline and keeps its message."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        self.lines.append(line)
        print(f"    [log] {line}")


def show_metrics(stats: EngineStatistics) -> None:
    print("metrics:")
    print(
        f"  executed={stats.total_executed} succeeded={stats.succeeded} failed={stats.failed} "
        f"p50={stats.p50 * 1000:.2f}ms p95={stats.p95 * 1000:.2f}ms"
    )


async def main() -> dict[str, Any]:
    logger = logging.getLogger("examples.feature_flags")
    level = logger.level
    logger.setLevel(logging.INFO)
    handler = PrintingHandler()
    logger.addHandler(handler)
    try:
        return await run(logger, handler)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def run(logger: logging.Logger, handler: PrintingHandler) -> dict[str, Any]:
    clock = ManualClock(IN_HOURS)
    gate = all_of(
        "CriticalFeatureFlagGovernance",
        RequireTwoPersonApprovalPolicy(),
        BusinessHoursPolicy(clock),
        priority=200,
    )
    engine: MutationEngine = MutationEngine(
        EngineOptions.strict(), policies=[gate], interceptors=[LoggingInterceptor(logger)]
    )
    state = Flags(
        {"new_checkout": False, "legacy_checkout": True, "beta_features": True, "old_search": True}
    )
    print(f"start: {state.flags}")

    print(f"1) enable new_checkout at {clock():%H:%M} UTC")
    dev = MutationContext.user("dana", reason="launch new checkout", correlation_id="launch-42")
    enabled = await engine.execute(
        EnableFlag("new_checkout"), state, context=dev, state_id=STATE_ID
    )
    print(f"  {enabled.status.name}: {list(enabled.changes.paths())}")
    state = enabled.new_state or state
    entry = (await engine.history(STATE_ID)).entries[-1]
    print(
        f"  history entry: {entry.intent.operation} correlation_id={entry.context.correlation_id}"
    )

    print("2) disable legacy_checkout (not critical) with approval metadata")
    ops = MutationContext.user("omar", metadata={"approved_by": ["pat"]}, reason="cleanup")
    disabled = await engine.execute(
        DisableFlag("legacy_checkout"), state, context=ops, state_id=STATE_ID
    )
    print(f"  {disabled.status.name}: {list(disabled.changes.paths())}")
    state = disabled.new_state or state

    clock.now = AFTER_HOURS
    print(f"3) enable dark_mode at {clock():%H:%M} UTC")
    late = await engine.execute(EnableFlag("dark_mode"), state, context=dev, state_id=STATE_ID)
    print(f"  {late.status.name}: {late.error_message}")
    blocking = late.policy_decisions[0].metadata["composition.blocking"]
    print(f"  children that said no: {list(blocking)}")

    clock.now = IN_HOURS
    toggles: list[EnableFlag | DisableFlag] = [
        EnableFlag("dark_mode"),
        DisableFlag("old_search"),
        DisableFlag("beta_features"),
        EnableFlag("search_v2"),
    ]
    before = len(await engine.history(STATE_ID))
    print("4) batch of four toggles by rita, approved_by=[bob, rita] (the actor does not count)")
    release = MutationContext.user("rita", metadata={"approved_by": ["bob", "rita"]})
    batch = await engine.execute_batch(toggles, state, context=release, state_id=STATE_ID)
    for mutation, result in zip(toggles, batch.results, strict=False):
        print(f"  {mutation.intent.operation} {mutation.flag}: {result.status.name}")
    print(f"  not run: {[m.flag for m in toggles[len(batch.results) :]]}")
    after_failed = len(await engine.history(STATE_ID))
    print(
        f"  batch ok={batch.ok} succeeded={batch.success_count} failed={batch.failure_count} "
        f"final_state={batch.final_state} history entries {before} -> {after_failed}"
    )

    print("5) the same batch with a second approver (bob, carol)")
    approved = attrs.evolve(release, metadata={"approved_by": ["bob", "carol"]})
    retry = await engine.execute_batch(toggles, state, context=approved, state_id=STATE_ID)
    after_retry = len(await engine.history(STATE_ID))
    assert retry.final_state is not None
    print(f"  batch ok={retry.ok} history entries {after_failed} -> {after_retry}")
    print(f"final flags: {retry.final_state.flags}")

    stats = await engine.statistics()
    show_metrics(stats)
    return {
        "enabled": enabled,
        "correlation_id": entry.context.correlation_id,
        "disabled": disabled,
        "after_hours": late,
        "batch": batch,
        "history_before_batch": before,
        "history_after_failed_batch": after_failed,
        "retry": retry,
        "history_after_retry": after_retry,
        "log_lines": tuple(handler.lines),
        "statistics": stats,
    }
