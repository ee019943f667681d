"""Every durable backend governs exactly as the in-memory reference does.

A hypothesis state machine drives two governances in lockstep — one on the in-memory
stores, one on SQLite (asyncio and trio), PostgreSQL, Redis, the user-written journal
store of ``examples/custom_store.py``, or SQLite stores composed with in-memory audit and
history (committed step by step) — with the same clock,
request ids and contexts: submissions that policies allow, deny or send to one- and
two-step approvals, approvals and rejections by the right and the wrong actors,
cancellations, expiry (by hand, by deadline sweeps and for overdue approvals), moves to
pending, supersession, executions under every resolution strategy (with the state moved
on behind a request's back), compensations, recovery and purges. After every step both
must have returned the same thing or raised the same error type, hold the same requests,
states, histories and audits, and on both each request's decision log must equal its
decisions.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from examples.custom_store import JournalStore
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
    CompensationPlan,
    DecisionQuery,
    Governance,
    MutationRegistry,
    MutationRequest,
    PendingReason,
    RequestQuery,
    ResolutionStrategy,
)
from mutator_governance.stores import open_store

from ..stores.conftest import postgres_url, redis_url  # noqa: F401  (fixtures)
from .conftest import T0, Clock

STATES = ("quota:a", "quota:b")
ACTORS = ("alice", "bob", "carol", "sec1", "sec2")
ROLES = ((), ("finance",), ("manager",))


@attrs.frozen
class Quota:
    """The governed state."""

    limit: int = 0


@attrs.frozen
class Raise(Mutation[Quota]):
    """Raise the limit by ``by``: up to 3 passes, 4-6 needs finance, 7-8 needs a
    quorum of two security approvers then a manager, 9 and more is denied."""

    by: int
    intent: ClassVar[MutationIntent] = MutationIntent("quota.raise", category="billing")

    def apply(self, state: Quota) -> Quota:
        if self.by == 0:
            raise ValueError("a raise of nothing")  # makes the execution FAILED
        return Quota(state.limit + self.by)


class Tiers(MutationPolicy[Quota]):
    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        by = getattr(mutation, "by", 0)
        if by >= 9:
            return PolicyDecision.deny("too large")
        if by >= 7:
            return PolicyDecision.require_approval(
                PolicyRequirement.approval(approvers=["sec1", "sec2", "bob"], required_approvals=2),
                PolicyRequirement.approval(role="manager", step=2),
                reason="security, then a manager",
            )
        if by >= 4 or state.limit + by > 30:
            return PolicyDecision.require_approval(
                PolicyRequirement.approval(role="finance"), reason="finance"
            )
        return PolicyDecision.allow()


def _registry() -> MutationRegistry:
    registry = MutationRegistry()
    registry.register(Raise, name="quota.raise")
    return registry


Composed = Callable[[Clock], contextlib.AbstractAsyncContextManager[Governance]]
"""A governance built from stores by hand, on the given clock."""

Opener = Callable[[Callable[..., Any]], contextlib.AbstractContextManager[str | Composed]]
"""Given the portal's ``call``, a context that yields a fresh durable store — a URL for
``Governance.open``, or a governance composed by hand — and deletes what it holds
afterwards."""

_RANDOM_ID = re.compile(r"[0-9a-f]{32}")
_PER_PROCESS = re.compile(r"[\w.-]+:\d+:[0-9a-f]{8}|[0-9a-f]{12}-[0-9a-f]{8}")
"""A governance's claimant name (host:pid:instance) and its execution ids."""


def _labelled(value: Any, labels: dict[str, str]) -> Any:
    """``value`` with every random 32-hex id replaced by its order of first appearance,
    and the names a governance gives itself and its executions by a placeholder."""
    if isinstance(value, str):
        value = _PER_PROCESS.sub("<own>", value)
        return _RANDOM_ID.sub(lambda m: labels.setdefault(m[0], f"<id{len(labels)}>"), value)
    if isinstance(value, dict):
        return {_labelled(k, labels): _labelled(v, labels) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_labelled(v, labels) for v in value]
    return value


def _first_difference(expected: Any, actual: Any, path: str = "") -> str:
    """The path of the first difference between two views, with both values there."""
    if attrs.has(type(expected)) and type(actual) is type(expected):
        expected, actual = (
            attrs.asdict(expected, recurse=False),
            attrs.asdict(actual, recurse=False),
        )
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual), key=str):
            if expected.get(key) != actual.get(key):
                return _first_difference(expected.get(key), actual.get(key), f"{path}.{key}")
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            if e != a:
                return _first_difference(e, a, f"{path}[{index}]")
    return f"{path or '<top>'}: memory {expected!r}, durable {actual!r}"


_TIMINGS = frozenset({"started_at", "completed_at", "duration", "execution_id"})
"""What the engine stamps on its results by the wall clock, not the governance clock."""


@attrs.frozen
class _Outcome:
    value: Any = None
    error: type[BaseException] | None = None


class GovernanceParity(RuleBasedStateMachine):
    """Two governances, the in-memory reference and ``open_durable()``'s, in lockstep."""

    open_durable: ClassVar[Opener]
    backend: ClassVar[str] = "asyncio"
    purges: ClassVar[bool] = True
    """Whether the durable store can purge (the journal store is no RequestPurger)."""

    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock(T0)
        self.submitted = 0
        self._stack = contextlib.ExitStack()
        try:
            self.portal: BlockingPortal = self._stack.enter_context(
                start_blocking_portal(self.backend)
            )
            where = self._stack.enter_context(type(self).open_durable(self.portal.call))
            self.govs = [self._open("memory://"), self._open(where)]
            for state_id in STATES:
                for gov in self.govs:
                    self.portal.call(gov.states.put, state_id, Quota())
        except BaseException:
            self._stack.close()
            raise

    def _open(self, where: str | Composed) -> Governance:
        opened = (
            Governance.open(
                where, registry=_registry(), policies=[Tiers()], clock=self.clock, lease=60.0
            )
            if isinstance(where, str)
            else where(self.clock)
        )
        return self._stack.enter_context(self.portal.wrap_async_context_manager(opened))

    def teardown(self) -> None:
        self._stack.close()

    # -- running and comparing ------------------------------------------------------------

    def _both(self, label: str, call: Callable[[Governance], Awaitable[Any]]) -> Any:
        outcomes = []
        for gov in self.govs:
            try:
                outcomes.append(_Outcome(value=self._view(self.portal.call(call, gov))))
            except Exception as error:
                outcomes.append(_Outcome(error=type(error)))
        reference, durable = outcomes
        if durable != reference:
            where = (
                f"the error: memory {reference.error}, durable {durable.error}"
                if durable.error is not reference.error
                else _first_difference(reference.value, durable.value)
            )
            raise AssertionError(f"{label}: the durable store differs from memory at {where}")
        return reference.value

    def _view(self, value: Any) -> Any:
        """What must be equal across backends: documents with random ids labelled."""
        registry = self.govs[0].registry
        if isinstance(value, MutationRequest):
            document = registry.unstructure_request(value)
            document.pop("trace_context", None)
            document.pop("claim", None)
            return _labelled(document, {})
        if attrs.has(type(value)):
            fields = attrs.asdict(value, recurse=False)
            return {k: self._view(v) for k, v in fields.items() if k not in _TIMINGS}
        if isinstance(value, Mapping):
            return {k: self._view(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._view(v) for v in value]
        if isinstance(value, str):
            return _labelled(value, {})
        return value

    def _context(self, actor: str, roles: tuple[str, ...] = ()) -> MutationContext:
        return MutationContext.user(
            actor, reason=f"{actor} decides", roles=roles, timestamp=self.clock.now
        )

    # -- rules ----------------------------------------------------------------------------

    @rule(
        target=requests,
        by=st.integers(0, 10),
        state_id=st.sampled_from(STATES),
        actor=st.sampled_from(ACTORS),
        pending=st.none() | st.just(PendingReason.EXTERNAL_CHECK),
        expires_in=st.none() | st.integers(1, 120),
    )
    def submit(
        self,
        by: int,
        state_id: str,
        actor: str,
        pending: PendingReason | None,
        expires_in: int | None,
    ) -> str:
        self.submitted += 1
        request_id = f"r{self.submitted}"
        context = self._context(actor)
        deadline = None if expires_in is None else self.clock.now + timedelta(minutes=expires_in)
        self._both(
            "submit",
            lambda gov: gov.submit(
                Raise(by),
                state_id=state_id,
                context=context,
                pending_reason=pending,
                expires_at=deadline,
                request_id=request_id,
            ),
        )
        return request_id

    @rule(request_id=requests, actor=st.sampled_from(ACTORS), roles=st.sampled_from(ROLES))
    def approve(self, request_id: str, actor: str, roles: tuple[str, ...]) -> None:
        context = self._context(actor, roles)
        self._both("approve", lambda gov: gov.approve(request_id, context=context, reason="ok"))

    @rule(request_id=requests, actor=st.sampled_from(ACTORS), roles=st.sampled_from(ROLES))
    def reject(self, request_id: str, actor: str, roles: tuple[str, ...]) -> None:
        context = self._context(actor, roles)
        self._both("reject", lambda gov: gov.reject(request_id, context=context, reason="no"))

    @rule(request_id=requests, actor=st.sampled_from(ACTORS))
    def cancel(self, request_id: str, actor: str) -> None:
        context = self._context(actor)
        self._both("cancel", lambda gov: gov.cancel(request_id, context=context))

    @rule(request_id=requests)
    def expire(self, request_id: str) -> None:
        context = self._context("carol")
        self._both("expire", lambda gov: gov.expire(request_id, context=context))

    @rule(
        request_id=requests,
        reason=st.sampled_from([PendingReason.EXTERNAL_CHECK, PendingReason.SCHEDULE]),
    )
    def move_to_pending(self, request_id: str, reason: PendingReason) -> None:
        context = self._context("carol")
        self._both(
            "move_to_pending",
            lambda gov: gov.move_to_pending(request_id, reason, context=context, note="hold"),
        )

    @rule(request_id=requests, by=requests)
    def supersede(self, request_id: str, by: str) -> None:
        context = self._context("carol")
        self._both("supersede", lambda gov: gov.supersede(request_id, by, context=context))

    @rule(request_id=requests, strategy=st.sampled_from(ResolutionStrategy))
    def execute(self, request_id: str, strategy: ResolutionStrategy) -> None:
        context = self._context("worker")
        self._both(
            "execute", lambda gov: gov.execute(request_id, context=context, strategy=strategy)
        )

    @rule(request_id=requests, by=st.integers(1, 3))
    def compensate(self, request_id: str, by: int) -> None:
        context = self._context("carol")
        plan = CompensationPlan(request_id, reason="undo")
        self._both(
            "compensate", lambda gov: gov.compensate(request_id, Raise(by), plan, context=context)
        )

    @rule(state_id=st.sampled_from(STATES), by=st.integers(1, 5))
    def move_state_on(self, state_id: str, by: int) -> None:
        """Someone changes the state outside governance, so waiting requests go stale."""

        async def put(gov: Governance) -> str:
            current = await gov.states.get(state_id)
            assert current is not None
            new = Quota(current.state.limit + by)
            return await gov.states.put(state_id, new, expected_version=current.version)

        self._both("states.put", put)

    @rule(minutes=st.integers(1, 90))
    def time_passes(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)

    @rule()
    def expire_due(self) -> None:
        self._both("expire_due", lambda gov: gov.expire_due())

    @rule()
    def recover(self) -> None:
        self._both("recover", lambda gov: gov.recover())

    @precondition(lambda self: self.purges)
    @rule(minutes=st.integers(0, 120))
    def purge(self, minutes: int) -> None:
        self._both("purge", lambda gov: gov.purge(older_than=timedelta(minutes=minutes)))

    @rule(actor=st.sampled_from(ACTORS), roles=st.sampled_from(ROLES))
    def inbox(self, actor: str, roles: tuple[str, ...]) -> None:
        context = self._context(actor, roles)
        self._both("inbox", lambda gov: gov.inbox(context, limit=50))

    @rule(
        query=st.sampled_from(
            [
                RequestQuery.pending(),
                RequestQuery.pending_approval_queue(),
                RequestQuery.recent_approvals(),
                RequestQuery(state_ids={STATES[0]}),
            ]
        ),
        limit=st.integers(1, 5),
    )
    def list_requests(self, query: RequestQuery, limit: int) -> None:
        async def walk(gov: Governance) -> list[MutationRequest]:
            return await _every_page(lambda cursor: gov.list(query, limit=limit, cursor=cursor))

        self._both("list", walk)

    @rule(
        query=st.sampled_from(
            [
                DecisionQuery.recent_execution_outcomes(),
                DecisionQuery.recent_version_resolutions(),
                DecisionQuery(actor_ids={"carol"}),
            ]
        ),
        limit=st.integers(1, 5),
    )
    def list_decisions(self, query: DecisionQuery, limit: int) -> None:
        async def walk(gov: Governance) -> list[Any]:
            return await _every_page(
                lambda cursor: gov.list_decisions(query, limit=limit, cursor=cursor)
            )

        self._both("list_decisions", walk)

    # -- what holds after every step ------------------------------------------------------

    @invariant()
    def same_requests_and_exact_logs(self) -> None:
        async def everything(gov: Governance) -> list[MutationRequest]:
            page = await gov.list(RequestQuery(), limit=1000)
            logs = [tuple(await gov.decisions.for_request(r.request_id)) for r in page.items]
            for request, log in zip(page.items, logs, strict=True):
                assert log == request.decisions, f"{request.request_id}: log differs"
            return list(page.items)

        self._both("list", everything)

    @invariant()
    def same_states_histories_and_audits(self) -> None:
        async def states(gov: Governance) -> list[Any]:
            seen: list[Any] = []
            for state_id in STATES:
                current = await gov.states.get(state_id)
                history = await gov.engine.history_store.history(state_id)
                seen.append((current, [e.context.correlation_id for e in history.entries]))
            audit = await gov.engine.audit.entries()
            seen.append(sorted((e.correlation_id or "", e.outcome.name) for e in audit))
            return seen

        self._both("states", states)


async def _every_page(page: Callable[[str | None], Awaitable[Any]]) -> list[Any]:
    """Every item of a listing, page by page (each backend follows its own cursors)."""
    items: list[Any] = []
    cursor = None
    while True:
        current = await page(cursor)
        items += current.items
        cursor = current.next_cursor
        if cursor is None:
            return items


def _sqlite(tmp_path: Path) -> Opener:
    @contextlib.contextmanager
    def open_durable(call: Callable[..., Any]) -> Iterator[str]:
        yield f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"

    return open_durable


def _composed(compose: Composed) -> Opener:
    """The opener of a governance composed by hand (it deletes its own files)."""

    @contextlib.contextmanager
    def open_durable(call: Callable[..., Any]) -> Iterator[Composed]:
        yield compose

    return open_durable


def _journal(tmp_path: Path) -> Opener:
    """The user-written store of ``examples/custom_store.py``, with its own committer."""

    @contextlib.asynccontextmanager
    async def compose(clock: Clock) -> AsyncIterator[Governance]:
        store = JournalStore(
            tmp_path / f"{uuid.uuid4().hex}.jsonl", registry=_registry(), fsync=False
        )
        try:
            gov = store.governance(clock=clock, lease=60.0)
            gov.engine.register_policy(Tiers())
            yield gov
        finally:
            await store.aclose()

    return _composed(compose)


def _sequential(tmp_path: Path) -> Opener:
    """SQLite's request, decision and state stores with the engine's in-memory audit and
    history: no shared transaction, so the governance commits step by step
    (:class:`~mutator_governance.SequentialCommitter`) and repairs the decision log."""

    @contextlib.asynccontextmanager
    async def compose(clock: Clock) -> AsyncIterator[Governance]:
        url = f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
        store = await open_store(url, registry=_registry())
        try:
            yield Governance(
                MutationEngine(policies=[Tiers()]),
                registry=_registry(),
                requests=store.requests,
                decisions=store.decisions,
                states=store.states,
                clock=clock,
                lease=60.0,
            )
        finally:
            await store.aclose()

    return _composed(compose)


def _postgres(server: str) -> Opener:
    from ..stores.test_postgres import drop_schema, new_schema, with_schema

    @contextlib.contextmanager
    def open_durable(call: Callable[..., Any]) -> Iterator[str]:
        schema = new_schema()
        try:
            yield with_schema(server, schema)
        finally:
            call(drop_schema, server, schema)

    return open_durable


def _redis(server: str) -> Opener:
    from ..stores.test_redis import _drop

    @contextlib.contextmanager
    def open_durable(call: Callable[..., Any]) -> Iterator[str]:
        prefix = f"mutator-parity-{uuid.uuid4().hex}"
        try:
            yield f"{server}{'&' if '?' in server else '?'}prefix={prefix}"
        finally:
            call(_drop, server, prefix)

    return open_durable


PARITY = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize(
    ("kind", "backend"),
    [
        ("sqlite", "asyncio"),
        ("sqlite", "trio"),
        ("postgresql", "asyncio"),
        ("redis", "asyncio"),
        ("journal", "trio"),
        ("sequential", "asyncio"),
    ],
    ids=["sqlite-asyncio", "sqlite-trio", "postgresql", "redis", "custom-journal", "sequential"],
)
def test_every_backend_governs_as_memory_does(
    kind: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        opener = _sqlite(tmp_path)
    elif kind == "journal":
        opener = _journal(tmp_path)
    elif kind == "sequential":
        opener = _sequential(tmp_path)
    elif kind == "postgresql":
        opener = _postgres(request.getfixturevalue("postgres_url"))
    else:
        opener = _redis(request.getfixturevalue("redis_url"))

    class Parity(GovernanceParity):
        open_durable = staticmethod(opener)  # type: ignore[assignment]

    Parity.backend = backend
    Parity.purges = kind != "journal"
    run_state_machine_as_test(Parity, settings=PARITY)
