"""Small shared domain for the engine behaviour tests: a quota state, mutations and policies.

Everything here records what it is asked to do into a plain list of strings (a "log"), so
tests can assert the exact order in which the engine called user code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import attrs

from mutator import (
    AuditEntry,
    ExecutionContext,
    HistoryEntry,
    InMemoryAuditSink,
    InMemoryHistoryStore,
    Interceptor,
    Mutation,
    MutationContext,
    MutationIntent,
    MutationPolicy,
    MutationResult,
    PolicyDecision,
    PolicyRequirement,
    ValidationResult,
)

Log = list[str]


@attrs.frozen
class Quotas:
    """The state under test: a quota per user."""

    quotas: dict[str, int] = attrs.field(factory=dict)
    owner: str = "acme"


@attrs.frozen
class Other:
    """A second state type, for ``state_type`` filtering."""

    value: int = 0


def quotas(**values: int) -> Quotas:
    return Quotas(dict(values))


def with_quota(state: Quotas, user: str, amount: int) -> Quotas:
    return attrs.evolve(state, quotas={**state.quotas, user: amount})


@attrs.frozen
class SetQuota(Mutation[Quotas]):
    """Sets one user's quota; a negative amount is invalid."""

    user: str
    amount: int
    intent: ClassVar[MutationIntent] = MutationIntent("quota.set", category="billing")

    def validate(self, state: Quotas) -> ValidationResult:
        if self.amount < 0:
            return ValidationResult.error(f"quotas.{self.user}", "must not be negative")
        return ValidationResult.ok()

    def apply(self, state: Quotas) -> Quotas:
        return with_quota(state, self.user, self.amount)


@attrs.frozen
class Recorded(Mutation[Quotas]):
    """Sets a quota and logs every call the engine makes into it."""

    log: Log = attrs.field(eq=False)
    user: str = "alice"
    amount: int = 1
    valid: bool = True
    intent: ClassVar[MutationIntent] = MutationIntent("quota.recorded", category="billing")

    def validate(self, state: Quotas) -> ValidationResult:
        self.log.append("validate")
        if self.valid:
            return ValidationResult.ok()
        return ValidationResult.error("amount", "rejected by validate")

    def apply(self, state: Quotas) -> Quotas:
        self.log.append("apply")
        return with_quota(state, self.user, self.amount)

    def simulate(self, state: Quotas) -> Quotas:
        self.log.append("simulate")
        return with_quota(state, self.user, self.amount)


@attrs.frozen
class AsyncRecorded(Mutation[Quotas]):
    """Like :class:`Recorded`, with ``async def`` validate, apply and simulate."""

    log: Log = attrs.field(eq=False)
    user: str = "alice"
    amount: int = 1
    valid: bool = True
    intent: ClassVar[MutationIntent] = MutationIntent("quota.async", category="billing")

    async def validate(self, state: Quotas) -> ValidationResult:
        await anyio.lowlevel.checkpoint()
        self.log.append("validate")
        if self.valid:
            return ValidationResult.ok()
        return ValidationResult.error("amount", "rejected by validate")

    async def apply(self, state: Quotas) -> Quotas:
        await anyio.lowlevel.checkpoint()
        self.log.append("apply")
        return with_quota(state, self.user, self.amount)

    async def simulate(self, state: Quotas) -> Quotas:
        await anyio.lowlevel.checkpoint()
        self.log.append("simulate")
        return with_quota(state, self.user, self.amount)


@attrs.frozen
class Returns(Mutation[Quotas]):
    """Whatever ``outcome(state)`` returns is what apply returns."""

    outcome: Callable[[Quotas], Any] = attrs.field(eq=False)
    intent: ClassVar[MutationIntent] = MutationIntent("quota.returns", category="misc")

    def apply(self, state: Quotas) -> Any:
        return self.outcome(state)


@attrs.frozen
class Raises(Mutation[Quotas]):
    """An apply that raises ``error``."""

    error: Exception = attrs.field(eq=False)
    intent: ClassVar[MutationIntent] = MutationIntent("quota.raises", category="misc")

    def apply(self, state: Quotas) -> Quotas:
        raise self.error


class Fixed(MutationPolicy[Any]):
    """A policy that always returns the same decision and logs ``policy:<name>``."""

    def __init__(
        self,
        name: str,
        decision: Any = None,
        *,
        priority: int = 0,
        state_type: type[Any] | None = None,
        log: Log | None = None,
    ) -> None:
        self.name = name
        self.priority = priority
        self.state_type = state_type
        self.decision = PolicyDecision.allow() if decision is None else decision
        self.log = log if log is not None else []
        self.calls = 0

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> Any:
        self.calls += 1
        self.log.append(f"policy:{self.name}")
        return self.decision


class AsyncFixed(Fixed):
    """Like :class:`Fixed`, deciding in an ``async def``."""

    async def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> Any:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        return super().evaluate(mutation, state, context)


def allow(name: str, *, priority: int = 0, log: Log | None = None) -> Fixed:
    return Fixed(name, PolicyDecision.allow(), priority=priority, log=log)


def deny(name: str, reason: str = "no", *, priority: int = 0, log: Log | None = None) -> Fixed:
    return Fixed(name, PolicyDecision.deny(reason), priority=priority, log=log)


def approval(name: str, approver: str, *, priority: int = 0, log: Log | None = None) -> Fixed:
    decision = PolicyDecision.require_approval(
        PolicyRequirement.approval(approver), reason=f"{name} wants {approver}"
    )
    return Fixed(name, decision, priority=priority, log=log)


class RecordingInterceptor(Interceptor):
    """Logs each hook as ``<hook>`` (or ``<name>.<hook>`` when ``prefix`` is set)."""

    def __init__(
        self, log: Log, name: str = "recording", *, order: int = 0, prefix: bool = False
    ) -> None:
        self.log = log
        self.name = name
        self.order = order
        self.prefix = prefix
        self.errors: list[BaseException] = []
        self.results: list[MutationResult[Any]] = []

    def _record(self, hook: str) -> None:
        self.log.append(f"{self.name}.{hook}" if self.prefix else hook)

    def before(
        self, mutation: Any, state: Any, context: MutationContext, execution: ExecutionContext
    ) -> None:
        self._record("before")

    def after(
        self,
        mutation: Any,
        old_state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        self.results.append(result)
        self._record("after")

    def policy_blocked(
        self,
        mutation: Any,
        state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        self.results.append(result)
        self._record("policy_blocked")

    def failed(
        self,
        mutation: Any,
        state: Any,
        error: BaseException,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        self.errors.append(error)
        self._record("failed")


class RecordingAudit(InMemoryAuditSink):
    """An in-memory audit sink that also logs ``audit`` when it records."""

    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log

    async def record(self, entry: AuditEntry) -> None:
        self.log.append("audit")
        await super().record(entry)


class RecordingHistory(InMemoryHistoryStore):
    """An in-memory history store that also logs ``history`` when it appends."""

    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log

    async def append(self, entry: HistoryEntry) -> None:
        self.log.append("history")
        await super().append(entry)


def user(actor_id: str = "bob", **fields: Any) -> MutationContext:
    return MutationContext.user(actor_id, reason="test", **fields)
