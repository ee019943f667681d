"""Query benchmarks: the first page of the operator's queries over a seeded store, per backend.

``governance.query.<backend>.<query>.<size>`` times one first page of 50 of

- ``approval_queue``: ``gov.list(RequestQuery.pending_approval_queue())``;
- ``inbox``: ``gov.inbox(context)`` of an approver holding the role most slots target;
- ``execution_outcomes``: ``gov.list_decisions(DecisionQuery.recent_execution_outcomes())``;
- ``mutation_type``: ``gov.list(RequestQuery(mutation_types={...}))``, one type of four;
- ``state_id``: ``gov.list(RequestQuery(state_ids={...}))``, the busiest of ~100 states;

over a store of 1,000 or 10,000 requests. The ``10k`` scenario's baseline is the ``1k``
one, so its ratio is the growth with the store, paired per repeat.

``governance.expiry.<backend>.<size>`` times one ``gov.expire_due()`` sweep over the same
seeds, at a moment when none of their pending requests is due: what every worker pays
every ``expire_every`` seconds for the approval backlog it holds (nothing, on a store with
an :class:`~mutator_governance.ExpiryIndex`).

The seed (untimed) is realistic rather than uniform: requests of four mutation types from
20 requesters on ~100 states (one of them hot), in the statuses a live system holds —
waiting for one or two approval steps or an external check, approved, executed (with
their resolution and execution decisions), rejected by an approver or by policy,
canceled. A few dozen template requests go through a real in-memory :class:`Governance`;
the seed clones them with new ids, requesters, states and times, and writes them through
the store's committer in commits of :data:`CHUNK` requests. Each store is seeded once per
process and reopened by every fixture (queries only read); PostgreSQL schemas and Redis
prefixes are dropped at exit. Server backends run only against servers someone named;
``--quick`` runs the 1k seeds on memory and SQLite only.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import functools
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import anyio
import attrs

from mutator import (
    EngineOptions,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
)
from mutator_governance import (
    DecisionQuery,
    Governance,
    GovernanceStore,
    GovernedCommit,
    MutationRegistry,
    MutationRequest,
    PendingReason,
    RequestQuery,
    RequestWrite,
)
from mutator_governance.stores import open_store

from .governance import POSTGRES_URL, REDIS_URL, STORE_BACKENDS, T0, schema_url
from .harness import Fixture, Scenario

__all__ = ["CHUNK", "PAGE", "QUERIES", "SIZES", "configure", "scenarios", "seed_requests"]

PAGE = 50
"""Requests (or views) per timed first page."""

SIZES = {"1k": 1_000, "10k": 10_000}
CHUNK = 500
"""Requests per seeding commit."""

STATES = 100
HOT_STATE = "account:0"
"""Gets one request in ten, so a state-id filter has a full first page at every size."""
ACTORS = 20
APPROVER = MutationContext.user("user-0", name="User 0", roles=("approver",))
"""The inbox's actor: holds the role most slots target, and submits 1 request in 20."""
NOW = T0 + timedelta(days=30)
"""The governance clock during the queries (after every seeded request)."""

_QUICK = [False]


def configure(*, quick: bool) -> None:
    """Quick runs (``--quick``) seed 1k requests on memory and SQLite only."""
    _QUICK[0] = quick


# -- domain --------------------------------------------------------------------------------


@attrs.frozen
class Account:
    """The state every seeded request targets."""

    limit: int = 0


@attrs.frozen
class AccountChange(Mutation[Account]):
    """Raises the limit; ``plan`` tells :class:`ByPlan` which path the request takes."""

    plan: str = "approve"
    intent: ClassVar[MutationIntent] = MutationIntent("account.change", category="accounts")

    def apply(self, state: Account) -> Account:
        return Account(state.limit + 1)


@attrs.frozen
class SetLimit(AccountChange):
    """Set a spending limit."""

    intent: ClassVar[MutationIntent] = MutationIntent(
        "account.set_limit", category="billing", tags=frozenset({"finance"})
    )


@attrs.frozen
class GrantAccess(AccountChange):
    """Grant a user access."""

    intent: ClassVar[MutationIntent] = MutationIntent(
        "account.grant_access", category="access", tags=frozenset({"security", "pii"})
    )


@attrs.frozen
class RotateKey(AccountChange):
    """Rotate an API key."""

    intent: ClassVar[MutationIntent] = MutationIntent(
        "account.rotate_key", category="access", tags=frozenset({"security"})
    )


@attrs.frozen
class ResizeQuota(AccountChange):
    """Resize a quota."""

    intent: ClassVar[MutationIntent] = MutationIntent(
        "account.resize_quota", category="capacity", tags=frozenset({"ops"})
    )


MUTATIONS: dict[str, type[AccountChange]] = {
    "account.set_limit": SetLimit,
    "account.grant_access": GrantAccess,
    "account.rotate_key": RotateKey,
    "account.resize_quota": ResizeQuota,
}
FILTERED_TYPE = "account.rotate_key"


def registry() -> MutationRegistry:
    reg = MutationRegistry()
    for name, cls in MUTATIONS.items():
        reg.register(cls, name=name)
    reg.register_state(Account, name="bench.Account")
    return reg


class ByPlan(MutationPolicy[Any]):
    """``deny`` → denied, ``two_step`` → an approver then a lead, ``allow`` → allowed,
    anything else → one approver (by role)."""

    name = "by-plan"

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        plan = getattr(mutation, "plan", "approve")
        if plan == "deny":
            return PolicyDecision.deny("over the account's ceiling")
        if plan == "allow":
            return PolicyDecision.allow()
        if plan == "two_step":
            return PolicyDecision.require_approval(
                PolicyRequirement.approval(role="approver", step=1),
                PolicyRequirement.approval("lead", step=2),
                reason="large change",
            )
        return PolicyDecision.require_approval(
            PolicyRequirement.approval(role="approver"), reason="needs sign-off"
        )


def _governance(store: GovernanceStore | None = None) -> Governance:
    engine = MutationEngine(EngineOptions.default(), policies=[ByPlan()])
    kwargs: dict[str, Any] = {}
    if store is not None:
        kwargs.update(
            requests=store.requests,
            decisions=store.decisions,
            states=store.states,
            committer=store.committer,
        )
    return Governance(engine, registry=registry(), clock=lambda: NOW, **kwargs)


# -- the seed --------------------------------------------------------------------------------

OUTCOMES: dict[str, int] = {
    "pending_approval": 22,
    "pending_two_step": 6,
    "pending_external": 5,
    "approved": 10,
    "executed": 35,
    "rejected_by_approver": 7,
    "denied": 5,
    "canceled": 10,
}
"""Share (in %) of each path through the lifecycle in the seed."""

_TEMPLATE_REQUESTER = MutationContext.user("template-requester", reason="seed")
_REVIEWER = MutationContext.user("reviewer", roles=("approver",), reason="looks fine")
_LEAD = MutationContext.user("lead", reason="agreed")


async def _template(gov: Governance, cls: type[AccountChange], outcome: str) -> MutationRequest:
    """One request of mutation ``cls`` driven through ``outcome`` by a real governance."""
    state_id = f"template:{uuid.uuid4().hex}"
    await gov.states.put(state_id, Account())
    plan = {"denied": "deny", "pending_external": "allow", "pending_two_step": "two_step"}
    submitted = await gov.submit(
        cls(plan=plan.get(outcome, "approve")),
        state_id=state_id,
        context=_TEMPLATE_REQUESTER,
        pending_reason=PendingReason.EXTERNAL_CHECK if outcome == "pending_external" else None,
        metadata={"ticket": "OPS-1"},
    )
    request_id = submitted.request_id
    if outcome in ("approved", "executed"):
        await gov.approve(request_id, context=_REVIEWER)
    if outcome == "pending_two_step":
        await gov.approve(request_id, context=_REVIEWER)  # step 1 of 2: still pending
    if outcome == "executed":
        await gov.execute(request_id)
    elif outcome == "rejected_by_approver":
        await gov.reject(request_id, context=_REVIEWER, reason="not now")
    elif outcome == "canceled":
        await gov.cancel(request_id, context=_TEMPLATE_REQUESTER, reason="changed my mind")
    found = await gov.requests.get(request_id)
    assert found is not None
    return found


async def _templates() -> dict[tuple[str, str], MutationRequest]:
    gov = _governance()
    return {
        (name, outcome): await _template(gov, cls, outcome)
        for name, cls in MUTATIONS.items()
        for outcome in OUTCOMES
    }


def _moved(moment: datetime | None, by: timedelta) -> datetime | None:
    return None if moment is None else moment + by


def _clone(
    template: MutationRequest, request_id: str, state_id: str, actor: str, created: datetime
) -> MutationRequest:
    """``template`` as if ``actor`` had submitted it for ``state_id`` at ``created``."""
    shift = created - template.created_at
    requester = attrs.evolve(
        template.context, actor_id=actor, actor_name=actor.title(), timestamp=created
    )
    template_actor = template.context.actor_id
    decisions = tuple(
        attrs.evolve(
            d,
            timestamp=d.timestamp + shift,
            context=requester if d.context.actor_id == template_actor else d.context,
        )
        for d in template.decisions
    )
    approvals = tuple(
        attrs.evolve(
            a,
            approval_id=f"{request_id}-{n}",
            decided_at=_moved(a.decided_at, shift),
            expires_at=_moved(a.expires_at, shift),
        )
        for n, a in enumerate(template.approval_requirements)
    )
    return attrs.evolve(
        template,
        request_id=request_id,
        state_id=state_id,
        context=requester,
        created_at=created,
        updated_at=template.updated_at + shift,
        executed_at=_moved(template.executed_at, shift),
        decisions=decisions,
        approval_requirements=approvals,
        claim=None,
        revision=0,
    )


async def seed_requests(size: int) -> list[MutationRequest]:
    """``size`` requests in the seed's mix (deterministic but for the template ids)."""
    templates = await _templates()
    rng = random.Random(size)
    outcomes = rng.choices(list(OUTCOMES), weights=list(OUTCOMES.values()), k=size)
    types = list(MUTATIONS)
    seeded = []
    for n, outcome in enumerate(outcomes):
        state = 0 if rng.random() < 0.1 else rng.randrange(1, STATES)
        seeded.append(
            _clone(
                templates[rng.choice(types), outcome],
                f"req-{n:06d}",
                f"account:{state}",
                f"user-{rng.randrange(ACTORS)}",
                T0 + timedelta(seconds=30 * n),
            )
        )
    return seeded


_SEEDS: dict[int, list[MutationRequest]] = {}


async def _seed(size: int) -> list[MutationRequest]:
    if size not in _SEEDS:
        _SEEDS[size] = await seed_requests(size)
    return _SEEDS[size]


async def _write(store: GovernanceStore, requests: Sequence[MutationRequest]) -> None:
    for start in range(0, len(requests), CHUNK):
        chunk = requests[start : start + CHUNK]
        await store.committer.commit(GovernedCommit(tuple(RequestWrite.create(r) for r in chunk)))


# -- seeded stores, reopened per fixture ---------------------------------------------------------


class _Seeded:
    """Stores seeded once per process; their URLs, and how to remove them at exit."""

    def __init__(self) -> None:
        self.urls: dict[tuple[str, int], str] = {}
        self._folder: str | None = None
        self._schemas: list[str] = []
        self._prefixes: list[str] = []

    def _fresh_url(self, backend: str, size: int) -> str:
        name = f"bench_query_{uuid.uuid4().hex[:10]}"
        if backend == "sqlite":
            if self._folder is None:
                self._folder = tempfile.mkdtemp(prefix="mutator-query-bench-")
            return f"sqlite:///{self._folder}/{size}.db"
        if backend == "postgresql":
            self._schemas.append(name)
            return schema_url(name)
        if backend == "redis":
            self._prefixes.append(name)
            return f"{REDIS_URL}?prefix={name}"
        raise ValueError(f"unknown backend {backend!r}")

    @contextlib.asynccontextmanager
    async def open(self, backend: str, size: int) -> Any:
        """A store of ``backend`` holding the seed of ``size`` (seeded on first use)."""
        requests = await _seed(size)
        if backend == "memory":
            store = await open_store("memory://", registry=registry())
            await _write(store, requests)
        else:
            url = self.urls.get((backend, size))
            if url is None:
                url = self._fresh_url(backend, size)
                store = await open_store(url, registry=registry())
                try:
                    await _write(store, requests)
                except BaseException:
                    await store.aclose()
                    raise
                self.urls[backend, size] = url
            else:
                store = await open_store(url, registry=registry())
        try:
            yield store
        finally:
            await store.aclose()

    def remove(self) -> None:
        """Drop the schemas and keys this process seeded, and the SQLite files."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        if self._schemas:
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                for schema in self._schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        if self._prefixes:
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            try:
                for prefix in self._prefixes:
                    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
                    for start in range(0, len(keys), 1000):
                        client.delete(*keys[start : start + 1000])
            finally:
                client.close()


SEEDED = _Seeded()
atexit.register(SEEDED.remove)


# -- the queries -------------------------------------------------------------------------------


Query = Callable[[Governance], Awaitable[Any]]


def _keys(page: Any) -> list[Any]:
    """What identifies a page's items: request ids, (request, approval) or (request, index)."""
    out: list[Any] = []
    for item in page.items:
        if isinstance(item, MutationRequest):
            out.append(item.request_id)
        elif hasattr(item, "approval"):
            out.append((item.request.request_id, item.approval.approval_id))
        else:
            out.append((item.request.request_id, item.index))
    return out


QUERIES: dict[str, tuple[Query, str]] = {
    "approval_queue": (
        lambda gov: gov.list(RequestQuery.pending_approval_queue(), limit=PAGE),
        "list(RequestQuery.pending_approval_queue())",
    ),
    "inbox": (
        lambda gov: gov.inbox(APPROVER, limit=PAGE),
        "inbox(user-0, role approver)",
    ),
    "execution_outcomes": (
        lambda gov: gov.list_decisions(DecisionQuery.recent_execution_outcomes(), limit=PAGE),
        "list_decisions(DecisionQuery.recent_execution_outcomes())",
    ),
    "mutation_type": (
        lambda gov: gov.list(RequestQuery(mutation_types={FILTERED_TYPE}), limit=PAGE),
        f"list(mutation_types={{{FILTERED_TYPE!r}}})",
    ),
    "state_id": (
        lambda gov: gov.list(RequestQuery(state_ids={HOT_STATE}), limit=PAGE),
        f"list(state_ids={{{HOT_STATE!r}}})",
    ),
}

_EXPECTED: dict[tuple[str, int], list[Any]] = {}


async def _expected(query: str, size: int) -> list[Any]:
    """The first page's keys on the in-memory reference store."""
    if (query, size) not in _EXPECTED:
        async with SEEDED.open("memory", size) as store:
            page = await QUERIES[query][0](_governance(store))
        _EXPECTED[query, size] = _keys(page)
    return _EXPECTED[query, size]


async def _fixture(backend: str, query: str, size: int, ops: int) -> Fixture:
    expected = await _expected(query, size)
    if len(expected) != PAGE:
        raise AssertionError(f"{query} has {len(expected)} items on its first page, not {PAGE}")
    stack = contextlib.AsyncExitStack()
    store = await stack.enter_async_context(SEEDED.open(backend, size))
    gov = _governance(store)

    def check(page: Any) -> None:
        if _keys(page) != expected:
            raise AssertionError(f"{backend} answers {query} unlike the in-memory reference")

    return Fixture(functools.partial(QUERIES[query][0], gov), check, stack.aclose)


@dataclass(frozen=True, slots=True)
class _Availability:
    """Skips full-run-only scenarios in quick runs, then asks the backend."""

    full_only: bool
    backend: Callable[[], str | None]

    def __call__(self) -> str | None:
        if self.full_only and _QUICK[0]:
            return "full runs only (--quick seeds 1k requests on memory and SQLite)"
        return self.backend()


async def _sweep_fixture(backend: str, size: int, ops: int) -> Fixture:
    stack = contextlib.AsyncExitStack()
    store = await stack.enter_async_context(SEEDED.open(backend, size))
    gov = _governance(store)

    def check(sweep: Any) -> None:
        if sweep.expired or sweep.skipped:
            raise AssertionError(f"{backend} expired seeded requests none of which is due")

    return Fixture(gov.expire_due, check, stack.aclose)


def scenarios() -> tuple[Scenario, ...]:
    """``governance.query.<backend>.<query>.<size>`` and ``governance.expiry.<backend>.<size>``;
    each 10k one paired with its 1k one."""
    out = []
    for backend in STORE_BACKENDS:
        server = backend.name not in ("memory", "sqlite")
        name = f"governance.expiry.{backend.name}"
        for size, count in SIZES.items():
            out.append(
                Scenario(
                    f"{name}.{size}",
                    f"{name}.1k",
                    functools.partial(_sweep_fixture, backend.name, count),
                    f"expire_due() over {count:,} requests, none due ({backend.summary})",
                    unavailable=_Availability(server or size != "1k", backend.unavailable),
                )
            )
        for query, (_, summary) in QUERIES.items():
            name = f"governance.query.{backend.name}.{query}"
            for size, count in SIZES.items():
                out.append(
                    Scenario(
                        f"{name}.{size}",
                        f"{name}.1k",
                        functools.partial(_fixture, backend.name, query, count),
                        f"first page of {PAGE}: {summary} over {count:,} requests "
                        f"({backend.summary})",
                        unavailable=_Availability(server or size != "1k", backend.unavailable),
                    )
                )
    return tuple(out)


# -- paired measurement (python -m benchmarks.query) ----------------------------------------


@contextlib.contextmanager
def counting(counts: collections.Counter[str]) -> Iterator[None]:
    """Count requests decoded from a store and requests checked by ``RequestQuery.matches``."""
    structure, matches = MutationRegistry.structure_request, RequestQuery.matches

    def decoded(self: MutationRegistry, data: Any, *, where: str = "") -> MutationRequest:
        counts["decoded"] += 1
        return structure(self, data, where=where)

    def checked(self: RequestQuery, request: MutationRequest) -> bool:
        counts["checked"] += 1
        return matches(self, request)

    MutationRegistry.structure_request = decoded  # type: ignore[method-assign]
    RequestQuery.matches = checked  # type: ignore[method-assign]
    try:
        yield
    finally:
        MutationRegistry.structure_request = structure  # type: ignore[method-assign]
        RequestQuery.matches = matches  # type: ignore[method-assign]


async def _time_page(fixture: Fixture, budget: float, max_ops: int) -> dict[str, float]:
    """One counted first page, then wall and process CPU µs per page over ``budget`` seconds
    (at least 2 pages, at most ``max_ops``)."""
    counts: collections.Counter[str] = collections.Counter()
    with counting(counts):
        first = await fixture.op()
    if fixture.check is not None:
        fixture.check(first)
    ops, started, cpu = 0, time.perf_counter(), time.process_time()
    while ops < 2 or (ops < max_ops and time.perf_counter() - started < budget):
        await fixture.op()
        ops += 1
    wall = (time.perf_counter() - started) / ops * 1e6
    return {"wall": wall, "cpu": (time.process_time() - cpu) / ops * 1e6, **counts}


Row = dict[str, dict[str, float]]


async def measure(
    backends: Sequence[str], rounds: int, budget: float, max_ops: int
) -> dict[tuple[str, str], Row]:
    """Per backend and query and size: medians over interleaved rounds (see :func:`main`)."""
    samples: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    for _ in range(rounds):
        for backend in backends:
            for query in QUERIES:
                for size, count in SIZES.items():
                    fixture = await _fixture(backend, query, count, 1)
                    try:
                        sample = await _time_page(fixture, budget, max_ops)
                    finally:
                        assert fixture.close is not None
                        await fixture.close()
                    samples.setdefault((backend, query, size), []).append(sample)
    keys = ("wall", "cpu", "decoded", "checked")
    return {
        (backend, query): {
            size: {
                key: statistics.median(s.get(key, 0.0) for s in samples[backend, query, size])
                for key in keys
            }
            for size in SIZES
        }
        for backend in backends
        for query in QUERIES
    }


def main(argv: list[str] | None = None) -> None:
    """Print µs per first page at 1k and 10k, their ratio and the rows read, as Markdown.

    Wall time is what a caller waits; process CPU time (the client's, SQLite's reads
    included) moves less on a busy machine; ``decoded`` counts requests a store decoded
    for the page and ``checked`` the requests ``RequestQuery.matches`` looked at (the
    in-memory store checks every request; durable stores the rows their query returned).
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.query")
    parser.add_argument("--backend", action="append", dest="backends", metavar="NAME")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--budget", type=float, default=0.3, help="seconds per timing")
    parser.add_argument("--max-ops", type=int, default=200, help="pages per timing at most")
    args = parser.parse_args(argv)
    names = args.backends or [b.name for b in STORE_BACKENDS if b.unavailable() is None]
    result = anyio.run(measure, names, args.rounds, args.budget, args.max_ops)
    print(
        "| backend | query | wall µs 1k | wall µs 10k | 10k/1k | CPU µs 1k | CPU µs 10k "
        "| 10k/1k | decoded 1k / 10k | checked 1k / 10k |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (backend, query), row in result.items():
        small, large = row["1k"], row["10k"]
        print(
            f"| {backend} | {query} | {small['wall']:,.0f} | {large['wall']:,.0f} "
            f"| {large['wall'] / small['wall']:.2f} | {small['cpu']:,.0f} | {large['cpu']:,.0f} "
            f"| {large['cpu'] / small['cpu']:.2f} "
            f"| {small['decoded']:,.0f} / {large['decoded']:,.0f} "
            f"| {small['checked']:,.0f} / {large['checked']:,.0f} |"
        )


if __name__ == "__main__":
    main()
