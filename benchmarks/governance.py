"""Governance scenarios, mirroring the reference's C.1 "Governance" benchmark classes.

Every operation that changes a request consumes a fresh one from a pool built in setup
(untimed): ``setup(ops)`` creates ``ops`` requests and the operation takes the next one.
Scenarios that execute a request give each pooled request its own state, because an
execution moves its state to the next version.

Baselines: ``governance.submit.single`` for creation, approval, expiry and lifecycle;
``governance.resolve.matching`` for resolution; ``governance.execute.matching`` for governed
execution; ``governance.query.pending`` for query reads; the in-memory store for the
per-backend scenarios (``governance.execute.backend.<name>.*``).

A store backend is one :class:`StoreBackend` entry in :data:`STORE_BACKENDS`: a factory
that opens the three stores (and optionally a committer) as an async context manager, and
an availability check that returns a one-line reason to skip it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import random
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from mutator import (
    EngineOptions,
    MutationContext,
    MutationEngine,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
)
from mutator_governance import (
    DecisionHistory,
    ExecutionCommitter,
    Governance,
    GovernedExecutionResult,
    InMemoryDecisionHistory,
    InMemoryRequestStore,
    InMemoryStateStore,
    MutationRegistry,
    MutationRequest,
    PendingReason,
    RequestQuery,
    RequestStatus,
    RequestStore,
    Resolution,
    ResolutionOutcome,
    ResolutionStrategy,
    StateStore,
)
from mutator_governance.stores import open_store

from .engine import Counter, IncrementCounter
from .harness import Fixture, Scenario, always_available

__all__ = ["SCENARIOS", "STORE_BACKENDS", "StoreBackend", "Stores"]

STATE_ID = "benchmark-counter"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
REQUESTER = MutationContext.user("alice", reason="benchmark request")
APPROVER = MutationContext.user("bob", reason="looks fine", roles=("sre",))
SECOND_APPROVER = MutationContext.user("carol", reason="agreed")
MUTATION = IncrementCounter()

SUBMIT = "governance.submit.single"
RESOLVE = "governance.resolve.matching"
EXECUTE = "governance.execute.matching"
QUERY = "governance.query.pending"


# -- store backends ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stores:
    """The stores a :class:`Governance` runs on (committer None = the default for them)."""

    requests: RequestStore
    decisions: DecisionHistory
    states: StateStore
    committer: ExecutionCommitter | None = None


@dataclass(frozen=True, slots=True)
class StoreBackend:
    """One store backend for the per-backend scenarios.

    ``open`` is an async context manager factory yielding fresh, empty :class:`Stores`
    (create a schema or key prefix, drop it on exit). ``unavailable`` returns a one-line
    reason to skip the backend (driver not installed, server not reachable), or None.
    """

    name: str
    summary: str
    open: Callable[[], contextlib.AbstractAsyncContextManager[Stores]]
    unavailable: Callable[[], str | None] = always_available


@contextlib.asynccontextmanager
async def memory_stores() -> AsyncIterator[Stores]:
    yield Stores(InMemoryRequestStore(), InMemoryDecisionHistory(), InMemoryStateStore())


POSTGRES_URL = os.environ.get("MUTATOR_TEST_POSTGRES_URL") or ""
REDIS_URL = os.environ.get("MUTATOR_TEST_REDIS_URL") or ""


def schema_url(schema: str) -> str:
    """``POSTGRES_URL`` naming ``schema`` (kept apart from any query it already has)."""
    return f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"


def _server_unavailable(name: str, url: str, port: int, module: str) -> str | None:
    """A one-line reason when no server is named, the driver is missing or it does not answer."""
    if not url:
        variable = "MUTATOR_TEST_POSTGRES_URL" if port == 5432 else "MUTATOR_TEST_REDIS_URL"
        return f"no {name} server named (set {variable})"
    try:
        importlib.import_module(module)
    except ImportError:
        return f"{name} driver not installed (pip install mutator[{name.lower()}])"
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or port), 1.0):
            return None
    except OSError:
        return f"{name} not reachable at {url}"


@contextlib.asynccontextmanager
async def durable_stores(url: str) -> AsyncIterator[Stores]:
    store = await open_store(url, registry=registry())
    try:
        yield Stores(store.requests, store.decisions, store.states, store.committer)
    finally:
        await store.aclose()


@contextlib.asynccontextmanager
async def sqlite_stores() -> AsyncIterator[Stores]:
    with tempfile.TemporaryDirectory() as folder:
        async with durable_stores(f"sqlite:///{folder}/bench.db") as stores:
            yield stores


@contextlib.asynccontextmanager
async def postgres_stores() -> AsyncIterator[Stores]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        async with durable_stores(schema_url(schema)) as stores:
            yield stores
    finally:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.asynccontextmanager
async def redis_stores() -> AsyncIterator[Stores]:
    import redis.asyncio as aioredis

    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    try:
        async with durable_stores(f"{REDIS_URL}?prefix={prefix}") as stores:
            yield stores
    finally:
        client = aioredis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


STORE_BACKENDS: tuple[StoreBackend, ...] = (
    StoreBackend("memory", "in-memory stores, atomic in-memory committer", memory_stores),
    StoreBackend("sqlite", "SQLite file (WAL), one transaction per commit", sqlite_stores),
    StoreBackend(
        "postgresql",
        "PostgreSQL on loopback, psycopg pool",
        postgres_stores,
        unavailable=functools.partial(
            _server_unavailable, "Postgres", POSTGRES_URL, 5432, "psycopg"
        ),
    ),
    StoreBackend(
        "redis",
        "Redis on loopback, Lua commits",
        redis_stores,
        unavailable=functools.partial(_server_unavailable, "Redis", REDIS_URL, 6379, "redis"),
    ),
)
MEMORY_BACKEND = STORE_BACKENDS[0].name


# -- domain --------------------------------------------------------------------------------


class RequireApproval(MutationPolicy[Any]):
    """Requires the given approvals for every mutation."""

    name = "require-approval"

    def __init__(self, *requirements: PolicyRequirement) -> None:
        self.decision = PolicyDecision.require_approval(*requirements, reason="needs sign-off")

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        return self.decision


class ByAmount(MutationPolicy[Any]):
    """amount 2 requires bob's approval, amount 3 is denied, anything else is allowed."""

    name = "by-amount"

    def __init__(self) -> None:
        self.approval = PolicyDecision.require_approval(PolicyRequirement.approval("bob"))
        self.denial = PolicyDecision.deny("amount 3 is not allowed")

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        amount = getattr(mutation, "amount", 1)
        if amount == 2:
            return self.approval
        if amount == 3:
            return self.denial
        return PolicyDecision.allow()


SINGLE = (PolicyRequirement.approval("bob"),)
TWO_STEP = (
    PolicyRequirement.approval("bob", step=1),
    PolicyRequirement.approval("carol", step=2),
)
ROLE_BASED = (PolicyRequirement.approval(role="sre", required_approvals=2),)


def registry() -> MutationRegistry:
    reg = MutationRegistry()
    reg.register(IncrementCounter, name="benchmark.counter.increment")
    reg.register_state(Counter, name="benchmark.counter")
    return reg


def governance(
    *policies: MutationPolicy[Any],
    stores: Stores | None = None,
    clock: Callable[[], datetime] | None = None,
    engine: MutationEngine | None = None,
) -> Governance:
    """A fresh Governance over a default-preset engine with in-memory audit and history."""
    eng = engine or MutationEngine(EngineOptions.default(), policies=policies)
    kwargs: dict[str, Any] = {}
    if stores is not None:
        kwargs.update(requests=stores.requests, decisions=stores.decisions, states=stores.states)
        if stores.committer is not None:
            kwargs["committer"] = stores.committer
    if clock is not None:
        kwargs["clock"] = clock
    return Governance(eng, registry=registry(), **kwargs)


async def world(*policies: MutationPolicy[Any], **kwargs: Any) -> Governance:
    """A Governance whose state store holds ``STATE_ID`` at version "1"."""
    gov = governance(*policies, **kwargs)
    await gov.states.put(STATE_ID, Counter())
    return gov


def another_process(gov: Governance) -> Governance:
    """A governance on ``gov``'s stores that holds none of its copies of requests: it
    reads a request before it operates on it, as a process that did not write it last."""
    return Governance(
        gov.engine,
        registry=gov.registry,
        requests=gov.requests,
        decisions=gov.decisions,
        states=gov.states,
        committer=gov.committer,
        audit=gov.audit,
        history=gov.history_store,
        clock=gov.clock,
    )


async def pool(gov: Governance, ops: int, **submit: Any) -> list[str]:
    """Submit ``ops`` requests for ``STATE_ID``; return their ids."""
    ids = []
    for _ in range(ops):
        request = await gov.submit(MUTATION, state_id=STATE_ID, context=REQUESTER, **submit)
        ids.append(request.request_id)
    return ids


async def bump(gov: Governance, state_id: str, times: int = 1) -> None:
    """Move a state ``times`` versions on (so requests evaluated before are stale)."""
    current = await gov.states.get(state_id)
    if current is None:
        raise AssertionError(f"no state {state_id!r}")
    version = current.version
    for _ in range(times):
        version = await gov.states.put(state_id, current.state, expected_version=version)


def consume(
    ids: list[str], call: Callable[..., Awaitable[Any]], **kwargs: Any
) -> Callable[[], Awaitable[Any]]:
    """An operation that calls ``call(next id, **kwargs)``; fails clearly when drained."""
    source: Iterator[str] = iter(ids)

    def op() -> Awaitable[Any]:
        try:
            request_id = next(source)
        except StopIteration:
            raise RuntimeError("the request pool is exhausted: setup(ops) built too few") from None
        return call(request_id, **kwargs)

    return op


def expect_request(
    status: RequestStatus, reason: PendingReason | None = None, approvals: int | None = None
) -> Callable[[MutationRequest], None]:
    def check(request: MutationRequest) -> None:
        if request.status is not status or (reason and request.pending_reason is not reason):
            raise AssertionError(
                f"expected {status.name}/{reason}, got {request.status.name}/"
                f"{request.pending_reason}"
            )
        if approvals is not None and len(request.approval_requirements) != approvals:
            raise AssertionError(f"expected {approvals} approval slots: {request!r}")

    return check


def expect_resolution(outcome: ResolutionOutcome) -> Callable[[Resolution], None]:
    def check(resolution: Resolution) -> None:
        if resolution.outcome is not outcome:
            raise AssertionError(f"expected {outcome.name}, got {resolution.outcome.name}")

    return check


def expect_execution(
    executed: bool, status: RequestStatus
) -> Callable[[GovernedExecutionResult], None]:
    def check(result: GovernedExecutionResult) -> None:
        if result.executed is not executed or result.request.status is not status:
            raise AssertionError(
                f"expected executed={executed}/{status.name}, got "
                f"{result.executed}/{result.request.status.name}"
            )

    return check


# -- setups: creation, approvals, expiry, lifecycle ----------------------------------------


async def submit(
    requirements: tuple[PolicyRequirement, ...],
    slots: int,
    pending_reason: PendingReason | None,
    ops: int,
) -> Fixture:
    """One ``submit`` per operation (nothing to pool: every call creates a request)."""
    policies = (RequireApproval(*requirements),) if requirements else ()
    gov = await world(*policies)
    run = functools.partial(
        gov.submit, MUTATION, state_id=STATE_ID, context=REQUESTER, pending_reason=pending_reason
    )
    if requirements:
        check = expect_request(RequestStatus.PENDING, PendingReason.APPROVAL, slots)
    else:
        check = expect_request(RequestStatus.PENDING, pending_reason)
    return Fixture(run, check)


async def approval(
    requirements: tuple[PolicyRequirement, ...],
    action: str,
    expected: RequestStatus,
    ops: int,
) -> Fixture:
    """Approval decisions on pooled PENDING(APPROVAL) requests."""
    gov = await world(RequireApproval(*requirements))
    ids = await pool(gov, ops)
    if action == "second":
        for request_id in ids:
            await gov.approve(request_id, context=APPROVER)
    if action == "reject":
        op = consume(ids, gov.reject, context=APPROVER, reason="not now")
    else:
        approver = SECOND_APPROVER if action == "second" else APPROVER
        op = consume(ids, gov.approve, context=approver)
    return Fixture(op, expect_request(expected))


async def expiry(ops: int) -> Fixture:
    """``expire_due`` over a store holding one request whose approval expired 5 min ago.

    The sweep reads every pending request, so each operation gets its own Governance
    (sharing one engine) holding exactly one such request.
    """
    engine = MutationEngine(
        EngineOptions.default(),
        policies=[
            RequireApproval(PolicyRequirement.approval("bob", expires_at=T0 + timedelta(minutes=1)))
        ],
    )
    sweep_at = T0 + timedelta(minutes=6)
    govs = []
    for _ in range(ops):
        gov = await world(engine=engine, clock=lambda: T0)
        await pool(gov, 1)
        govs.append(gov)
    source = iter(govs)

    def op() -> Awaitable[Any]:
        return next(source).expire_due(sweep_at)

    def check(sweep: Any) -> None:
        if len(sweep.expired) != 1 or sweep.skipped:
            raise AssertionError(f"expected one expired request: {sweep!r}")

    return Fixture(op, check)


async def lifecycle(action: str, expected: RequestStatus, ops: int) -> Fixture:
    """Lifecycle transitions of pooled PENDING(EXTERNAL_CHECK) requests."""
    gov = await world()
    ids = await pool(gov, ops, pending_reason=PendingReason.EXTERNAL_CHECK)
    if action == "approve":
        op = consume(ids, gov.approve, context=APPROVER)
    elif action == "reject":
        op = consume(ids, gov.reject, context=APPROVER, reason="external check failed")
    else:
        op = consume(ids, gov.cancel, context=REQUESTER, reason="no longer needed")
    return Fixture(op, expect_request(expected))


# -- setups: resolution and execution ------------------------------------------------------


async def resolution(stale: bool, strategy: ResolutionStrategy, ops: int) -> Fixture:
    """``resolve`` of pooled APPROVED requests (the state moved on when ``stale``)."""
    gov = await world()
    ids = await pool(gov, ops)
    if stale:
        await bump(gov, STATE_ID)
    outcome = (
        ResolutionOutcome.EXECUTE_APPROVED_VERSION
        if not stale
        else ResolutionOutcome.REJECTED_AS_STALE
        if strategy is ResolutionStrategy.REJECT_STALE
        else ResolutionOutcome.REVALIDATE_ON_LATEST_STATE
    )
    return Fixture(consume(ids, gov.resolve, strategy=strategy), expect_resolution(outcome))


async def per_state_pool(gov: Governance, ops: int, *, stale: bool) -> list[str]:
    """One APPROVED request per state (``bench-state-<i>`` at version 1, or 2 when stale)."""
    ids = []
    for index in range(ops):
        state_id = f"bench-state-{index}"
        await gov.states.put(state_id, Counter())
        request = await gov.submit(MUTATION, state_id=state_id, context=REQUESTER)
        if stale:
            await bump(gov, state_id)
        ids.append(request.request_id)
    return ids


async def execution(stale: bool, strategy: ResolutionStrategy, ops: int) -> Fixture:
    """Governed ``execute`` of pooled APPROVED requests."""
    gov = await world()
    if stale and strategy is ResolutionStrategy.REJECT_STALE:
        # Rejected without running: the state never moves, so one state serves all.
        ids = await pool(gov, ops)
        await bump(gov, STATE_ID)
        check = expect_execution(False, RequestStatus.REJECTED)
    else:
        ids = await per_state_pool(gov, ops, stale=stale)
        check = expect_execution(True, RequestStatus.EXECUTED)
    return Fixture(consume(ids, gov.execute, strategy=strategy), check)


# -- setups: queries -----------------------------------------------------------------------

SEEDED = {"pending_approval": 80, "external_check": 40, "approved": 50, "rejected": 30}


async def queries(kind: str, ops: int) -> Fixture:
    """Reads over ~200 seeded requests of mixed status on four states."""
    gov = governance(ByAmount())
    state_ids = [f"query-state-{i}" for i in range(4)]
    for state_id in state_ids:
        await gov.states.put(state_id, Counter())
    plan = [kind for kind, count in SEEDED.items() for _ in range(count)]
    random.Random(7).shuffle(plan)
    for index, seeded in enumerate(plan):
        amount = {"pending_approval": 2, "rejected": 3}.get(seeded, 1)
        await gov.submit(
            IncrementCounter(amount),
            state_id=state_ids[index % len(state_ids)],
            context=REQUESTER,
            pending_reason=PendingReason.EXTERNAL_CHECK if seeded == "external_check" else None,
        )
    run: Callable[[], Awaitable[Any]]
    if kind == "pending":
        run = functools.partial(gov.pending)
        expected = SEEDED["pending_approval"] + SEEDED["external_check"]
    elif kind == "pending_approval":
        run = functools.partial(gov.pending, PendingReason.APPROVAL)
        expected = SEEDED["pending_approval"]
    else:
        query = RequestQuery(statuses={RequestStatus.APPROVED, RequestStatus.REJECTED})
        run = functools.partial(gov.list, query, limit=64)
        expected = 64

    def check(found: Any) -> None:
        items = found.items if hasattr(found, "items") else found
        if len(items) != expected:
            raise AssertionError(f"expected {expected} requests, got {len(items)}")

    return Fixture(run, check)


# -- setups: per store backend -------------------------------------------------------------


async def backend_execute(backend: StoreBackend, ops: int) -> Fixture:
    """Governed execution of pooled APPROVED requests (one state each) on ``backend``."""
    stack = contextlib.AsyncExitStack()
    stores = await stack.enter_async_context(backend.open())
    try:
        gov = governance(stores=stores)
        ids = await per_state_pool(gov, ops, stale=False)
    except BaseException:
        await stack.aclose()
        raise
    return Fixture(
        consume(ids, gov.execute),
        expect_execution(True, RequestStatus.EXECUTED),
        close=stack.aclose,
    )


async def backend_round_trip(backend: StoreBackend, ops: int) -> Fixture:
    """submit → approve (one approver) → execute, each on a fresh state, on ``backend``."""
    stack = contextlib.AsyncExitStack()
    stores = await stack.enter_async_context(backend.open())
    try:
        gov = governance(RequireApproval(*SINGLE), stores=stores)
        state_ids = [f"bench-state-{i}" for i in range(ops)]
        for state_id in state_ids:
            await gov.states.put(state_id, Counter())
    except BaseException:
        await stack.aclose()
        raise
    source = iter(state_ids)

    async def op() -> GovernedExecutionResult:
        request = await gov.submit(MUTATION, state_id=next(source), context=REQUESTER)
        await gov.approve(request.request_id, context=APPROVER)
        return await gov.execute(request.request_id)

    return Fixture(op, expect_execution(True, RequestStatus.EXECUTED), close=stack.aclose)


# -- the scenarios -------------------------------------------------------------------------


def _scenarios() -> list[Scenario]:
    p = functools.partial
    R = RequestStatus
    out = [
        Scenario(
            SUBMIT,
            SUBMIT,
            p(submit, SINGLE, 1, None),
            "submit → PENDING(APPROVAL) with one approval slot (policy dry run, store, decisions)",
            reference="PendingApproval_SingleRequest (no published figure)",
        ),
        Scenario(
            "governance.submit.two_step",
            SUBMIT,
            p(submit, TWO_STEP, 2, None),
            "submit → PENDING(APPROVAL) with two ordered approval steps",
        ),
        Scenario(
            "governance.submit.role_based",
            SUBMIT,
            p(submit, ROLE_BASED, 2, None),
            "submit → PENDING(APPROVAL), role 'sre' with a quorum of 2 (two slots)",
        ),
        Scenario(
            "governance.submit.external_check",
            SUBMIT,
            p(submit, (), 0, PendingReason.EXTERNAL_CHECK),
            "submit with no policy → PENDING(EXTERNAL_CHECK)",
        ),
        Scenario(
            "governance.approval.grant_single",
            SUBMIT,
            p(approval, SINGLE, "grant", R.APPROVED),
            "approve the only slot → request APPROVED",
        ),
        Scenario(
            "governance.approval.first_of_two",
            SUBMIT,
            p(approval, TWO_STEP, "grant", R.PENDING),
            "approve step 1 of 2 → request stays PENDING",
        ),
        Scenario(
            "governance.approval.second_of_two",
            SUBMIT,
            p(approval, TWO_STEP, "second", R.APPROVED),
            "approve step 2 of 2 (step 1 approved in setup) → request APPROVED",
        ),
        Scenario(
            "governance.approval.reject",
            SUBMIT,
            p(approval, SINGLE, "reject", R.REJECTED),
            "reject through the approval slot → request REJECTED",
        ),
        Scenario(
            "governance.expiry.sweep_one",
            SUBMIT,
            expiry,
            "expire_due over a store with 1 request whose approval expired 5 minutes ago",
        ),
        Scenario(
            "governance.lifecycle.approve",
            SUBMIT,
            p(lifecycle, "approve", R.APPROVED),
            "approve a PENDING(EXTERNAL_CHECK) request → APPROVED",
        ),
        Scenario(
            "governance.lifecycle.reject",
            SUBMIT,
            p(lifecycle, "reject", R.REJECTED),
            "reject a PENDING(EXTERNAL_CHECK) request → REJECTED",
        ),
        Scenario(
            "governance.lifecycle.cancel",
            SUBMIT,
            p(lifecycle, "cancel", R.CANCELED),
            "cancel a PENDING(EXTERNAL_CHECK) request → CANCELED",
        ),
        Scenario(
            RESOLVE,
            RESOLVE,
            p(resolution, False, ResolutionStrategy.REJECT_STALE),
            "resolve an APPROVED request, state still at its version → execute",
        ),
        Scenario(
            "governance.resolve.stale_reject",
            RESOLVE,
            p(resolution, True, ResolutionStrategy.REJECT_STALE),
            "resolve a stale request with REJECT_STALE → REJECTED",
        ),
        Scenario(
            "governance.resolve.revalidate",
            RESOLVE,
            p(resolution, True, ResolutionStrategy.REVALIDATE_ON_LATEST_STATE),
            "resolve a stale request with REVALIDATE_ON_LATEST_STATE → PENDING(REVALIDATION)",
        ),
        Scenario(
            EXECUTE,
            EXECUTE,
            p(execution, False, ResolutionStrategy.REJECT_STALE),
            "execute an APPROVED request at its version: claim, resolve, run, commit",
        ),
        Scenario(
            "governance.execute.stale_rejected",
            EXECUTE,
            p(execution, True, ResolutionStrategy.REJECT_STALE),
            "execute a stale request with REJECT_STALE → REJECTED, engine not called",
        ),
        Scenario(
            "governance.execute.revalidate",
            EXECUTE,
            p(execution, True, ResolutionStrategy.REVALIDATE_ON_LATEST_STATE),
            "execute a stale request with REVALIDATE_ON_LATEST_STATE → runs on the latest state",
        ),
        Scenario(
            QUERY,
            QUERY,
            p(queries, "pending"),
            "pending() over 200 seeded requests (120 pending)",
        ),
        Scenario(
            "governance.query.pending_approval",
            QUERY,
            p(queries, "pending_approval"),
            "pending(PendingReason.APPROVAL): the approval queue (80 of 200)",
        ),
        Scenario(
            "governance.query.list_filtered",
            QUERY,
            p(queries, "list"),
            "list(statuses APPROVED|REJECTED, limit 64) over 200 seeded requests",
        ),
    ]
    for backend in STORE_BACKENDS:
        for kind, setup, summary in (
            ("execute", backend_execute, "governed execute of an APPROVED request"),
            ("round_trip", backend_round_trip, "submit → approve → execute on a fresh state"),
        ):
            out.append(
                Scenario(
                    f"governance.execute.backend.{backend.name}.{kind}",
                    f"governance.execute.backend.{MEMORY_BACKEND}.{kind}",
                    p(setup, backend),
                    f"{summary} ({backend.summary})",
                    unavailable=backend.unavailable,
                )
            )
    return out


SCENARIOS: tuple[Scenario, ...] = tuple(_scenarios())
