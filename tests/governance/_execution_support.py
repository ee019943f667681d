"""Shared helpers for the governed-execution tests.

Mutations with interesting behaviour (raising, blocking, invalid, irreversible, simulate
differing from apply), a builder for a ``World`` with a custom engine and stores, store
proxies that can block or crash at a chosen call, and small assertion helpers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import attrs

from mutator import (
    EngineOptions,
    InMemoryAuditSink,
    InMemoryHistoryStore,
    Mutation,
    MutationEngine,
    MutationIntent,
    ValidationResult,
)
from mutator_governance import (
    Governance,
    InMemoryDecisionHistory,
    InMemoryRequestStore,
    InMemoryStateStore,
    MutationRegistry,
    MutationRequest,
    RequestDecision,
)

from .conftest import OTHER_STATE_ID, STATE_ID, Clock, IncreaseQuota, Quotas, Rules, World

LEASE = 300.0
"""The lease every test governance uses (seconds)."""


# -- mutations ---------------------------------------------------------------------------


class Gate:
    """A pair of events: ``reached`` is set when code arrives, it then waits for ``opened``."""

    def __init__(self) -> None:
        self.reached = anyio.Event()
        self.opened = anyio.Event()
        self.arrivals = 0

    async def pass_through(self) -> None:
        self.arrivals += 1
        self.reached.set()
        await self.opened.wait()


@attrs.frozen
class DecreaseQuota(Mutation[Quotas]):
    """Lower one user's quota by ``amount`` (the compensating mutation)."""

    user: str
    amount: int
    intent: ClassVar[MutationIntent] = MutationIntent("quota.decrease", category="billing")

    def apply(self, state: Quotas) -> Quotas:
        return Quotas({**state.quotas, self.user: state.quotas.get(self.user, 0) - self.amount})


@attrs.frozen
class ResetQuota(Mutation[Quotas]):
    """Drop a user's quota: declared irreversible."""

    user: str
    intent: ClassVar[MutationIntent] = MutationIntent(
        "quota.reset", category="billing", reversible=False
    )

    def apply(self, state: Quotas) -> Quotas:
        return Quotas({k: v for k, v in state.quotas.items() if k != self.user})


@attrs.frozen
class Explode(Mutation[Quotas]):
    """A mutation whose apply raises."""

    message: str = "boom"
    intent: ClassVar[MutationIntent] = MutationIntent("quota.explode")

    def apply(self, state: Quotas) -> Quotas:
        raise RuntimeError(self.message)


@attrs.frozen
class NegativeQuota(Mutation[Quotas]):
    """A mutation its own validation rejects."""

    user: str = "bob"
    intent: ClassVar[MutationIntent] = MutationIntent("quota.negative")

    def validate(self, state: Quotas) -> ValidationResult:
        return ValidationResult.error(f"quotas.{self.user}", "must not be negative")

    def apply(self, state: Quotas) -> Quotas:
        return Quotas({**state.quotas, self.user: -1})


@attrs.frozen
class SimulateDiffers(Mutation[Quotas]):
    """``apply`` adds ``amount``; ``simulate`` writes a marker instead."""

    user: str = "bob"
    amount: int = 10
    intent: ClassVar[MutationIntent] = MutationIntent("quota.simulate_differs")

    def apply(self, state: Quotas) -> Quotas:
        return Quotas({**state.quotas, self.user: state.quotas.get(self.user, 0) + self.amount})

    def simulate(self, state: Quotas) -> Quotas:
        return Quotas({**state.quotas, "simulated": 1})


@attrs.frozen
class Blocking(Mutation[Quotas]):
    """An async apply that waits at ``gate`` before adding ``amount``."""

    gate: Gate = attrs.field(eq=False)
    user: str = "bob"
    amount: int = 10
    intent: ClassVar[MutationIntent] = MutationIntent("quota.blocking")

    async def apply(self, state: Quotas) -> Quotas:
        await self.gate.pass_through()
        return Quotas({**state.quotas, self.user: state.quotas.get(self.user, 0) + self.amount})


@attrs.frozen
class Sleepy(Mutation[Quotas]):
    """An async apply that sleeps ``seconds`` (to run into the execution timeout)."""

    seconds: float = 30.0
    intent: ClassVar[MutationIntent] = MutationIntent("quota.sleepy")

    async def apply(self, state: Quotas) -> Quotas:
        await anyio.sleep(self.seconds)
        return Quotas({**state.quotas, "slept": 1})


@attrs.frozen
class YieldingIncrease(Mutation[Quotas]):
    """Like ``IncreaseQuota`` but yields to other tasks inside apply."""

    user: str = "bob"
    amount: int = 10
    intent: ClassVar[MutationIntent] = MutationIntent("quota.yielding")

    async def apply(self, state: Quotas) -> Quotas:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        return Quotas({**state.quotas, self.user: state.quotas.get(self.user, 0) + self.amount})


MUTATIONS: tuple[type[Mutation[Any]], ...] = (
    DecreaseQuota,
    ResetQuota,
    Explode,
    NegativeQuota,
    SimulateDiffers,
    Blocking,
    Sleepy,
    YieldingIncrease,
)


def registry() -> MutationRegistry:
    """A registry knowing ``IncreaseQuota`` and every mutation of this module."""
    reg = MutationRegistry()
    reg.register(IncreaseQuota, name="quota.increase")
    for cls in MUTATIONS:
        reg.register(cls)
    return reg


# -- stores ------------------------------------------------------------------------------


@attrs.define
class Stores:
    """The underlying in-memory stores of one "deployment" (shared by every process)."""

    requests: InMemoryRequestStore = attrs.Factory(InMemoryRequestStore)
    decisions: InMemoryDecisionHistory = attrs.Factory(InMemoryDecisionHistory)
    states: InMemoryStateStore = attrs.Factory(InMemoryStateStore)
    history: InMemoryHistoryStore = attrs.Factory(InMemoryHistoryStore)
    audit: InMemoryAuditSink = attrs.Factory(InMemoryAuditSink)

    def engine(self, options: EngineOptions | None = None) -> MutationEngine[Any]:
        """A new engine (a new "process") writing to the shared audit and history."""
        return MutationEngine(options, audit=self.audit, history=self.history)


Hook = Callable[[str, str, tuple[Any, ...], dict[str, Any]], Awaitable[None]]


class Probe:
    """Wraps a store; ``before``/``after`` hooks run around each of its async methods.

    ``label`` names the store ("requests", "decisions", "states") for the hooks. ``after``
    runs once the inner call returned, i.e. after the write landed.
    """

    def __init__(
        self, inner: Any, label: str, before: Hook | None = None, after: Hook | None = None
    ) -> None:
        self.inner = inner
        self.label = label
        self.before = before
        self.after = after

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.before is not None:
                await self.before(self.label, name, args, kwargs)
            result = await attr(*args, **kwargs)
            if self.after is not None:
                await self.after(self.label, name, args, kwargs)
            return result

        return call


async def checkpoint_hook(label: str, method: str, args: Any, kwargs: Any) -> None:
    """A ``before`` hook that lets other tasks run between a read and the write after it."""
    await anyio.lowlevel.checkpoint()


def codes_of(decisions: Any) -> list[Any]:
    return [d.code for d in decisions]


def stored_request(args: tuple[Any, ...]) -> MutationRequest:
    """The request passed to ``RequestStore.replace``."""
    request = args[0]
    assert isinstance(request, MutationRequest)
    return request


def appended(args: tuple[Any, ...]) -> tuple[RequestDecision, ...]:
    """The decisions passed to ``DecisionHistory.append``."""
    return tuple(args[1])


# -- worlds ------------------------------------------------------------------------------


def make_governance(
    stores: Stores,
    *,
    engine: MutationEngine[Any] | None = None,
    clock: Clock | None = None,
    **kwargs: Any,
) -> Governance:
    """A governance over ``stores`` (wrapped or not through ``kwargs``)."""
    kwargs.setdefault("requests", stores.requests)
    kwargs.setdefault("decisions", stores.decisions)
    kwargs.setdefault("states", stores.states)
    return Governance(
        engine if engine is not None else stores.engine(),
        registry=registry(),
        clock=clock or Clock(),
        lease=LEASE,
        **kwargs,
    )


async def seed(stores: Stores) -> None:
    """Create the two governed states at version "1"."""
    await stores.states.put(STATE_ID, Quotas({"bob": 1}))
    await stores.states.put(OTHER_STATE_ID, Quotas({"eve": 5}))


async def world_over(
    stores: Stores | None = None,
    *,
    options: EngineOptions | None = None,
    clock: Clock | None = None,
    **kwargs: Any,
) -> World:
    """A ``World`` (see conftest) over ``stores`` with this module's mutations registered."""
    stores = stores or Stores()
    if await stores.states.get(STATE_ID) is None:
        await seed(stores)
    engine = stores.engine(options)
    clock = clock or Clock()
    gov = make_governance(stores, engine=engine, clock=clock, **kwargs)
    return World(gov, engine, Rules(engine), clock, gov.registry)


def past_lease(clock: Clock) -> Any:
    """A time after the lease of any claim taken at ``clock.now``."""
    return clock.now + timedelta(seconds=LEASE + 1)
