"""A small governed domain for the governance tests.

``Quotas`` is the governed state and ``IncreaseQuota`` the registered mutation. ``Rules``
swaps the engine's policies per test (allow, deny, require approval with given
``PolicyRequirement`` objects), ``Clock`` is the controllable time source handed to
``Governance(clock=...)``, and the ``world`` fixture bundles a ready ``Governance`` whose
state store already holds ``quotas:acme`` at version "1".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import attrs
import pytest

from mutator import (
    Mutation,
    MutationContext,
    MutationEngine,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
)
from mutator_governance import (
    Governance,
    InMemoryRequestStore,
    MutationRegistry,
    MutationRequest,
    RequestConcurrencyError,
    RequestDecision,
)

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
"""Where every test clock starts."""

STATE_ID = "quotas:acme"
OTHER_STATE_ID = "quotas:beta"
REQUESTER = "alice"


@attrs.frozen
class Quotas:
    """The governed state: a quota per user."""

    quotas: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class IncreaseQuota(Mutation[Quotas]):
    """Raise one user's quota by ``amount``."""

    user: str
    amount: int
    intent: ClassVar[MutationIntent] = MutationIntent("quota.increase", category="billing")

    def apply(self, state: Quotas) -> Quotas:
        current = state.quotas.get(self.user, 0)
        return Quotas({**state.quotas, self.user: current + self.amount})


@attrs.frozen
class Unregistered(Mutation[Quotas]):
    """A mutation class nobody registered with the ``MutationRegistry``."""

    intent: ClassVar[MutationIntent] = MutationIntent("quota.unregistered")

    def apply(self, state: Quotas) -> Quotas:
        return state


class Fixed(MutationPolicy[Any]):
    """A policy that always returns ``decision``."""

    def __init__(self, name: str, decision: PolicyDecision) -> None:
        self.name = name
        self.decision = decision

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        return self.decision


class Rules:
    """The engine's policies, replaceable per test (no policy at all means "allowed")."""

    def __init__(self, engine: MutationEngine[Any]) -> None:
        self.engine = engine
        self.names: list[str] = []

    def set(self, *decisions: PolicyDecision) -> None:
        for name in self.names:
            self.engine.unregister_policy(name)
        self.names = [f"rule{i + 1}" for i in range(len(decisions))]
        for name, decision in zip(self.names, decisions, strict=True):
            self.engine.register_policy(Fixed(name, decision))

    def allow(self) -> None:
        self.set(PolicyDecision.allow("fine"))

    def deny(self, *reasons: str) -> None:
        self.set(*(PolicyDecision.deny(reason) for reason in reasons))

    def require(self, *requirements: PolicyRequirement, reason: str | None = None) -> None:
        self.set(PolicyDecision.require_approval(*requirements, reason=reason))


class Clock:
    """A settable clock for ``Governance(clock=...)``."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class InterposedStore:
    """Wraps a request store; ``before_replace`` runs (and may raise) before every replace."""

    def __init__(
        self,
        inner: Any,
        before_replace: Callable[[MutationRequest], Awaitable[None]] | None = None,
    ) -> None:
        self.inner = inner
        self.before_replace = before_replace
        self.replace_calls = 0

    async def replace(self, request: MutationRequest, *, expected_revision: int) -> MutationRequest:
        self.replace_calls += 1
        if self.before_replace is not None:
            await self.before_replace(request)
        return await self.inner.replace(request, expected_revision=expected_revision)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def yield_inside_replace() -> InterposedStore:
    """A store whose ``replace`` yields to other tasks between the caller's read and write."""

    async def pause(_: MutationRequest) -> None:
        await anyio.lowlevel.checkpoint()

    return InterposedStore(InMemoryRequestStore(), pause)


def losing_race_for(request_id: str) -> InterposedStore:
    """A store whose ``replace`` of ``request_id`` always loses a (simulated) race."""

    async def lose(request: MutationRequest) -> None:
        if request.request_id == request_id:
            raise RequestConcurrencyError(request_id, request.revision, request.revision + 1)

    return InterposedStore(InMemoryRequestStore(), lose)


@attrs.define
class World:
    """A governance instance with its engine, policies, clock and helpers."""

    gov: Governance
    engine: MutationEngine[Any]
    rules: Rules
    clock: Clock
    registry: MutationRegistry

    def ctx(
        self,
        actor: str,
        *,
        roles: Iterable[str] = (),
        groups: Iterable[str] = (),
        reason: str | None = None,
        at: datetime | None = None,
    ) -> MutationContext:
        """A user context stamped with the test clock's current time."""
        return MutationContext.user(
            actor,
            reason=reason or f"{actor} decides",
            roles=tuple(roles),
            groups=tuple(groups),
            timestamp=at or self.clock.now,
        )

    async def submit(
        self,
        mutation: Mutation[Any] | None = None,
        *,
        actor: str = REQUESTER,
        state_id: str = STATE_ID,
        **kwargs: Any,
    ) -> MutationRequest:
        """Submit ``mutation`` (default: +10 for bob) as ``actor``."""
        return await self.gov.submit(
            mutation or IncreaseQuota("bob", 10),
            state_id=state_id,
            context=self.ctx(actor, reason="please"),
            **kwargs,
        )

    async def history(self, request_id: str) -> tuple[RequestDecision, ...]:
        return tuple(await self.gov.decision_history(request_id))

    async def force(self, request: MutationRequest, **changes: Any) -> MutationRequest:
        """Store ``request`` with ``changes`` applied directly (bypassing the lifecycle)."""
        return await self.gov.requests.replace(
            attrs.evolve(request, **changes), expected_revision=request.revision
        )


async def build_world(**governance_kwargs: Any) -> World:
    """A fresh world; ``governance_kwargs`` go to ``Governance(...)``."""
    engine: MutationEngine[Any] = MutationEngine()
    registry = MutationRegistry()
    registry.register(IncreaseQuota, name="quota.increase")
    clock = governance_kwargs.pop("clock", None) or Clock()
    gov = Governance(engine, registry=registry, clock=clock, **governance_kwargs)
    await gov.states.put(STATE_ID, Quotas({"bob": 1}))
    await gov.states.put(OTHER_STATE_ID, Quotas({"eve": 5}))
    return World(gov, engine, Rules(engine), clock, registry)


@pytest.fixture
async def world() -> World:
    """A governance with in-memory stores, policies allowing everything, and two states."""
    return await build_world()


@pytest.fixture
def make_world() -> Callable[..., Awaitable[World]]:
    """Build a world with custom ``Governance`` arguments (stores, ``allow_self_approval``)."""
    return build_world


@pytest.fixture
def approved_request() -> MutationRequest:
    """A freshly submitted, policy-allowed (APPROVED) request, built without a test loop."""

    async def submit() -> MutationRequest:
        world = await build_world()
        return await world.submit()

    return anyio.run(submit)
