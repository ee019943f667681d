"""Operations start from the copy of a request the governance last wrote or read.

On a store whose reads are round trips, ``approve``, ``reject``, ``cancel``, ``expire``,
``move_to_pending`` and ``execute`` skip reading a request this governance just wrote. The
copy is never trusted: when another process changed the request meanwhile, the write's
compare-and-set refuses it (or the operation's checks do), the stored request is read, and
the outcome, error included, is exactly that of reading first.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mutator import (
    InMemoryAuditSink,
    InMemoryHistoryStore,
    MutationContext,
    MutationEngine,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
)
from mutator_governance import (
    ApprovalStateError,
    Governance,
    GovernedCommit,
    InMemoryCommitter,
    InMemoryDecisionHistory,
    InMemoryRequestStore,
    InMemoryStateStore,
    InvalidTransitionError,
    LifecycleDecision,
    MutationRegistry,
    MutationRequest,
    PendingReason,
    RequestNotExecutableError,
    RequestStatus,
    StoredDataError,
    StoreUnavailableError,
)

from .conftest import STATE_ID, Clock, IncreaseQuota, Quotas, Rules, World, build_world

pytestmark = pytest.mark.anyio

Req = PolicyRequirement.approval


class ReadCountingStore:
    """A request store (not the in-memory class, so its reads count as round trips)
    that counts the reads an operation makes before it writes."""

    def __init__(self, inner: InMemoryRequestStore) -> None:
        self.inner = inner
        self.gets = 0

    async def get(self, request_id: str) -> MutationRequest | None:
        self.gets += 1
        request: MutationRequest | None = await self.inner.get(request_id)
        return request

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class OutageCommitter:
    """An atomic committer whose next ``outages`` commits fail as a lost connection would
    (after writing, so the caller cannot know whether they landed)."""

    atomic = True

    def __init__(self, inner: InMemoryCommitter) -> None:
        self.inner = inner
        self.outages = 0

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        stored = await self.inner.commit(commit)
        if self.outages:
            self.outages -= 1
            raise StoreUnavailableError("connection lost after the write", url="test://")
        return stored


class Shared:
    """One set of stores that several governances (processes, in effect) work on."""

    def __init__(self) -> None:
        self.requests = InMemoryRequestStore()
        self.decisions = InMemoryDecisionHistory()
        self.states: InMemoryStateStore[Any] = InMemoryStateStore()
        self.committer = OutageCommitter(
            InMemoryCommitter(
                self.requests,
                self.decisions,
                self.states,
                InMemoryHistoryStore(),
                InMemoryAuditSink(),
            )
        )
        self.clock = Clock()

    async def world(self) -> tuple[World, ReadCountingStore]:
        engine: MutationEngine[Any] = MutationEngine()
        registry = MutationRegistry()
        registry.register(IncreaseQuota, name="quota.increase")
        store = ReadCountingStore(self.requests)
        gov = Governance(
            engine,
            registry=registry,
            requests=store,  # type: ignore[arg-type]
            decisions=self.decisions,
            states=self.states,
            committer=self.committer,
            clock=self.clock,
        )
        if await self.states.get(STATE_ID) is None:
            await self.states.put(STATE_ID, Quotas({"bob": 1}))
        return World(gov, engine, Rules(engine), self.clock, registry), store

    async def processes(self) -> tuple[World, World]:
        """Two governances on these stores, as two processes: "here" and "there"."""
        return (await self.world())[0], (await self.world())[0]


@pytest.fixture
def shared() -> Shared:
    return Shared()


async def bob(world: World) -> int:
    state = await world.gov.states.get(STATE_ID)
    assert state is not None
    quotas: dict[str, int] = state.state.quotas
    return quotas["bob"]


class TestOneGovernance:
    async def test_execute_after_submit_reads_no_request(self, shared: Shared) -> None:
        world, store = await shared.world()
        request = await world.submit()
        result = await world.gov.execute(request.request_id)
        assert result.request.status is RequestStatus.EXECUTED
        assert store.gets == 0
        assert await bob(world) == 11

    async def test_approve_after_submit_reads_no_request(self, shared: Shared) -> None:
        world, store = await shared.world()
        world.rules.require(Req("carol"))
        request = await world.submit()
        approved = await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert approved.status is RequestStatus.APPROVED
        result = await world.gov.execute(request.request_id)
        assert store.gets == 0
        assert result.request.status is RequestStatus.EXECUTED
        assert result.request.decisions == tuple(
            await shared.decisions.for_request(request.request_id)
        )

    async def test_a_refusal_is_that_of_the_stored_request(self, shared: Shared) -> None:
        world, store = await shared.world()
        request = await world.submit()  # allowed: APPROVED at once
        with pytest.raises(ApprovalStateError, match="already APPROVED"):
            await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert store.gets == 1  # the copy refused it, so the stored request decided

    async def test_after_an_outage_the_next_operation_reads_the_request(
        self, shared: Shared
    ) -> None:
        world, store = await shared.world()
        world.rules.require(Req("carol"))
        request = await world.submit()
        shared.committer.outages = 1
        with pytest.raises(StoreUnavailableError):
            await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert store.gets == 0
        # the approval landed, but this governance could not know: it dropped its copy and
        # reads the request, so the retry gets the stored request's answer
        with pytest.raises(ApprovalStateError, match="already APPROVED"):
            await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert store.gets == 1

    async def test_in_memory_stores_keep_no_copies(self, world: World) -> None:
        request = await world.submit()
        reads = 0
        get = world.gov.requests.get

        async def counted(request_id: str) -> MutationRequest | None:
            nonlocal reads
            reads += 1
            return await get(request_id)

        world.gov.requests.get = counted  # type: ignore[method-assign]
        await world.gov.execute(request.request_id)
        assert reads == 1


class TestAnotherProcessChangedTheRequest:
    async def test_approve_of_a_request_approved_elsewhere_is_refused(self, shared: Shared) -> None:
        here, there = await shared.processes()
        here.rules.require(Req("carol"))
        request = await here.submit()
        await there.gov.approve(request.request_id, context=there.ctx("carol"))
        with pytest.raises(ApprovalStateError):
            await here.gov.approve(request.request_id, context=here.ctx("carol"))
        codes = [d.code for d in await here.history(request.request_id)]
        assert codes.count(LifecycleDecision.APPROVED) == 1

    async def test_approve_of_another_slot_lands_on_the_latest_request(
        self, shared: Shared
    ) -> None:
        here, there = await shared.processes()
        here.rules.require(Req("carol"), Req("dave"))
        request = await here.submit()
        await there.gov.approve(request.request_id, context=there.ctx("carol"))
        approved = await here.gov.approve(request.request_id, context=here.ctx("dave"))
        assert approved.status is RequestStatus.APPROVED
        assert {s.decided_by for s in approved.approval_requirements} == {"carol", "dave"}
        stored = await there.gov.get(request.request_id)
        assert stored.decisions == tuple(await shared.decisions.for_request(request.request_id))

    async def test_cancel_of_a_request_canceled_elsewhere_is_refused(self, shared: Shared) -> None:
        here, there = await shared.processes()
        here.rules.require(Req("carol"))
        request = await here.submit()
        await there.gov.cancel(request.request_id, context=there.ctx("alice"))
        with pytest.raises(InvalidTransitionError):
            await here.gov.cancel(request.request_id, context=here.ctx("alice"))

    async def test_execute_of_a_request_executed_elsewhere_runs_nothing(
        self, shared: Shared
    ) -> None:
        here, there = await shared.processes()
        request = await here.submit()
        await there.gov.execute(request.request_id)
        with pytest.raises(RequestNotExecutableError, match="already executed"):
            await here.gov.execute(request.request_id)
        assert await bob(here) == 11

    async def test_execute_of_a_request_canceled_elsewhere_runs_nothing(
        self, shared: Shared
    ) -> None:
        here, there = await shared.processes()
        request = await here.submit()
        await there.gov.cancel(request.request_id, context=there.ctx("alice"))
        with pytest.raises(RequestNotExecutableError):
            await here.gov.execute(request.request_id)
        assert await bob(here) == 1

    async def test_execute_of_a_request_sent_back_elsewhere_runs_the_latest(
        self, shared: Shared
    ) -> None:
        here, there = await shared.processes()
        here.rules.require(Req("carol"))
        request = await here.submit()
        await here.gov.approve(request.request_id, context=here.ctx("carol"))
        # there: back to approval and approved again; here still holds the first APPROVED copy
        await there.gov.move_to_pending(
            request.request_id, PendingReason.APPROVAL, context=there.ctx("carol")
        )
        await there.gov.approve(request.request_id, context=there.ctx("carol"))
        result = await here.gov.execute(request.request_id)
        assert result.request.status is RequestStatus.EXECUTED
        assert await bob(here) == 11
        stored = await there.gov.get(request.request_id)
        assert stored.decisions == tuple(await shared.decisions.for_request(request.request_id))


class TestUnreadableRows:
    async def test_a_failed_read_drops_the_copy(self, shared: Shared) -> None:
        world, store = await shared.world()
        world.rules.require(Req("carol"))
        request = await world.submit()
        get = store.inner.get

        async def unreadable(request_id: str) -> MutationRequest | None:
            raise StoredDataError(
                "unreadable", backend="test", key=f"request:{request_id}", field="document"
            )

        store.inner.get = unreadable  # type: ignore[method-assign]
        with pytest.raises(StoredDataError):
            await world.gov.get(request.request_id)
        with pytest.raises(StoredDataError):  # read again: the copy is gone
            await world.gov.approve(request.request_id, context=world.ctx("carol"))
        store.inner.get = get  # type: ignore[method-assign]
        assert (await world.gov.get(request.request_id)).status is RequestStatus.PENDING


class OddNeedsCarol(MutationPolicy[Any]):
    """An odd raise needs carol's approval; an even one is allowed."""

    name = "odd-needs-carol"

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        if mutation.amount % 2:
            return PolicyDecision.require_approval(Req("carol"))
        return PolicyDecision.allow("even")


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(("submit", "approve", "cancel", "execute", "send back")),
        st.integers(0, 1),  # which of the two processes
        st.integers(0, 5),  # which request
        st.sampled_from(("carol", "dave", "alice")),
    ),
    max_size=25,
)


def seen(outcome: Any) -> Any:
    """What must agree between the two worlds (ids, claimants and slot ids are their own)."""
    if isinstance(outcome, BaseException):
        return type(outcome).__name__
    request = getattr(outcome, "request", outcome)
    return (
        request.status,
        request.pending_reason,
        request.revision,
        tuple(d.code for d in request.decisions),
        tuple((s.step, s.status, s.decided_by) for s in request.approval_requirements),
    )


class TestAgainstReadingFirst:
    """Two processes sharing stores, each starting from its copies, against one governance
    on in-memory stores (which keeps no copies): every operation ends the same."""

    @settings(max_examples=200, deadline=None)
    @given(operations=OPERATIONS)
    # the interleavings a stale copy meets, besides what the search finds
    @example([("submit", 0, 0, "alice"), ("approve", 1, 0, "carol"), ("execute", 0, 0, "al")])
    @example([("submit", 0, 1, "alice"), ("execute", 1, 0, "al"), ("execute", 0, 0, "al")])
    @example([("submit", 0, 0, "alice"), ("cancel", 1, 0, "al"), ("approve", 0, 0, "carol")])
    @example(
        [
            ("submit", 0, 0, "alice"),
            ("approve", 0, 0, "carol"),
            ("send back", 1, 0, "carol"),
            ("execute", 0, 0, "al"),
        ]
    )
    async def test_every_outcome_is_that_of_reading_first(
        self, operations: list[tuple[str, int, int, str]]
    ) -> None:
        shared = Shared()
        processes = await shared.processes()
        reference = await build_world(clock=Clock())
        for world in (*processes, reference):
            world.engine.register_policy(OddNeedsCarol())
        ids: list[str] = []
        for number, (kind, which, pick, actor) in enumerate(operations):
            if kind == "submit":
                ids.append(f"request-{number}")
            elif not ids:
                continue
            request_id = ids[-1] if kind == "submit" else ids[pick % len(ids)]
            outcomes = []
            for world in (processes[which], reference):
                gov = world.gov
                context = world.ctx(actor)
                call: Any
                if kind == "submit":
                    mutation = IncreaseQuota("bob", pick + 1)
                    call = gov.submit(
                        mutation, state_id=STATE_ID, context=context, request_id=request_id
                    )
                elif kind == "approve":
                    call = gov.approve(request_id, context=context)
                elif kind == "cancel":
                    call = gov.cancel(request_id, context=context)
                elif kind == "execute":
                    call = gov.execute(request_id)
                else:
                    call = gov.move_to_pending(request_id, PendingReason.APPROVAL, context=context)
                try:
                    outcomes.append(seen(await call))
                except Exception as error:  # the error must be the same one
                    outcomes.append(seen(error))
            assert outcomes[0] == outcomes[1], (kind, which, request_id)
        for request_id in ids:
            stored = await processes[0].gov.get(request_id)
            assert seen(stored) == seen(await reference.gov.get(request_id))
            assert stored.decisions == tuple(await shared.decisions.for_request(request_id))
        assert await bob(processes[1]) == await bob(reference)
