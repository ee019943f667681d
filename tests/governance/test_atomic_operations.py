"""Every governance operation is one atomic write; claims are fenced; the audit tells the truth.

The in-memory stores sit behind a counting committer, so each test can see how many
commits an operation made, and that nothing reached a store outside of them.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mutator import AuditOutcome, ConcurrencyError, PolicyRequirement
from mutator_governance import (
    GovernedCommit,
    InMemoryCommitter,
    InvalidTransitionError,
    LifecycleDecision,
    MutationRequest,
    PendingReason,
    RequestStatus,
    SequentialCommitter,
    StoreUnavailableError,
)

from ._execution_support import (
    Blocking,
    DecreaseQuota,
    Explode,
    Gate,
    Probe,
    Stores,
    codes_of,
    past_lease,
    seed,
    world_over,
)
from .conftest import STATE_ID, World

pytestmark = pytest.mark.anyio

S = RequestStatus
L = LifecycleDecision


class CountingCommitter:
    """Counts commits; when ``fail`` returns an error for a commit, raises it instead."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.atomic = inner.atomic
        self.commits: list[GovernedCommit] = []
        self.fail: Any = None

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        if self.fail is not None:
            error = self.fail(commit)
            if error is not None:
                raise error
        self.commits.append(commit)
        return await self.inner.commit(commit)


class WriteSpy:
    """Records every write method called on a store directly (outside the committer)."""

    def __init__(self) -> None:
        self.direct: list[str] = []

    async def before(self, label: str, method: str, args: Any, kwargs: Any) -> None:
        if method in ("create", "replace", "append", "put"):
            self.direct.append(f"{label}.{method}")


async def counted_world(stores: Stores | None = None) -> tuple[World, CountingCommitter, WriteSpy]:
    stores = stores or Stores()
    await seed(stores)
    spy = WriteSpy()
    committer = CountingCommitter(
        InMemoryCommitter(
            stores.requests, stores.decisions, stores.states, stores.history, stores.audit
        )
    )
    world = await world_over(
        stores,
        requests=Probe(stores.requests, "requests", spy.before),
        decisions=Probe(stores.decisions, "decisions", spy.before),
        states=Probe(stores.states, "states", spy.before),
        committer=committer,
    )
    return world, committer, spy


async def assert_log_matches(world: World, request_id: str) -> MutationRequest:
    request = await world.gov.get(request_id)
    assert tuple(await world.gov.decisions.for_request(request_id)) == request.decisions
    assert [d.sequence for d in request.decisions] == list(range(1, len(request.decisions) + 1))
    return request


class TestOneCommitPerOperation:
    async def test_lifecycle_operations_are_one_commit_each(self) -> None:
        """submit, approve, move to pending, reject, cancel, supersede: one commit each."""
        world, committer, spy = await counted_world()
        world.rules.require(PolicyRequirement.approval("carol"))
        first = await world.submit()
        assert len(committer.commits) == 1
        approved = await world.gov.approve(first.request_id, context=world.ctx("carol"))
        assert approved.status is S.APPROVED
        assert len(committer.commits) == 2
        pending = await world.gov.move_to_pending(
            first.request_id, PendingReason.EXTERNAL_CHECK, context=world.ctx("carol")
        )
        assert pending.status is S.PENDING
        assert len(committer.commits) == 3
        await world.gov.cancel(first.request_id, context=world.ctx("carol"))
        assert len(committer.commits) == 4
        second = await world.submit()
        third = await world.submit()
        await world.gov.reject(second.request_id, context=world.ctx("carol"))
        await world.gov.supersede(third.request_id, first.request_id, context=world.ctx("carol"))
        assert len(committer.commits) == 8
        assert spy.direct == []
        for request in (first, second, third):
            await assert_log_matches(world, request.request_id)

    async def test_execution_is_a_claim_and_one_commit_with_state_history_and_audit(
        self,
    ) -> None:
        world, committer, spy = await counted_world()
        request = await world.submit()
        before = len(committer.commits)
        outcome = await world.gov.execute(request.request_id)
        assert outcome.executed
        claim, final = committer.commits[before:]
        assert claim.requests[0].request.status is S.EXECUTING
        assert (claim.state, claim.audit, claim.history) == (None, (), ())
        assert final.state is not None
        assert [e.outcome for e in final.audit] == [AuditOutcome.SUCCEEDED]
        assert len(final.history) == 1
        assert spy.direct == []
        await assert_log_matches(world, request.request_id)

    async def test_compensation_and_expiry_are_one_commit_each(self) -> None:
        world, committer, spy = await counted_world()
        request = await world.submit()
        await world.gov.execute(request.request_id)
        count = len(committer.commits)
        compensation = await world.gov.compensate(
            request.request_id, DecreaseQuota("bob", 10), context=world.ctx("carol")
        )
        assert len(committer.commits) == count + 1
        await world.gov.execute(compensation.request_id)
        assert len(committer.commits) == count + 3
        # the compensation's commit links the original in the same write
        assert len(committer.commits[-1].requests) == 2
        expiring = await world.submit(expires_at=world.clock.now)
        await world.gov.move_to_pending(
            expiring.request_id, PendingReason.SCHEDULE, context=world.ctx("carol")
        )
        count = len(committer.commits)
        sweep = await world.gov.expire_due()
        assert [r.request_id for r in sweep.expired] == [expiring.request_id]
        assert len(committer.commits) == count + 1
        assert spy.direct == []
        for rid in (request.request_id, compensation.request_id, expiring.request_id):
            await assert_log_matches(world, rid)


class TestFencedClaims:
    @pytest.mark.parametrize("operation", ["approve", "reject", "cancel", "move", "supersede"])
    async def test_an_executing_request_refuses_every_other_move(self, operation: str) -> None:
        """Only its executor (or recovery after the lease) moves an EXECUTING request."""
        gate = Gate()
        world, _, _ = await counted_world()
        request = await world.submit(Blocking(gate))
        other = await world.submit()
        ctx = world.ctx("carol")
        calls = {
            "approve": lambda: world.gov.approve(request.request_id, context=ctx),
            "reject": lambda: world.gov.reject(request.request_id, context=ctx),
            "cancel": lambda: world.gov.cancel(request.request_id, context=ctx),
            "move": lambda: world.gov.move_to_pending(
                request.request_id, PendingReason.APPROVAL, context=ctx
            ),
            "supersede": lambda: world.gov.supersede(
                request.request_id, other.request_id, context=ctx
            ),
        }
        results: list[Any] = []

        async def run() -> None:
            results.append(await world.gov.execute(request.request_id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await gate.reached.wait()
            claimed = await world.gov.get(request.request_id)
            assert claimed.status is S.EXECUTING
            with pytest.raises(InvalidTransitionError, match="being executed"):
                await calls[operation]()
            assert await world.gov.get(request.request_id) == claimed
            gate.opened.set()
        assert results[0].executed
        assert codes_of(results[0].request.decisions).count(L.CLAIMED) == 1
        await assert_log_matches(world, request.request_id)


class TestAuditTellsTheTruth:
    async def test_a_commit_that_loses_its_race_leaves_no_success_audit(self) -> None:
        world, committer, _ = await counted_world()
        request = await world.submit()
        stores_states = world.gov.states
        # another writer moves the state between the engine run and the commit
        real_commit = committer.inner.commit

        async def racing_commit(commit: GovernedCommit) -> tuple[MutationRequest, ...]:
            if commit.state is not None:
                current = await stores_states.get(STATE_ID)
                assert current is not None
                await committer.inner.states.put(
                    STATE_ID, current.state, expected_version=current.version
                )
            return await real_commit(commit)

        committer.inner.commit = racing_commit
        with pytest.raises(ConcurrencyError):
            await world.gov.execute(request.request_id)
        after = await assert_log_matches(world, request.request_id)
        assert after.status is S.APPROVED
        assert codes_of(after.decisions)[-2:] == [L.CLAIMED, L.RELEASED]
        audit = world.engine.audit.all()  # type: ignore[attr-defined]
        assert AuditOutcome.SUCCEEDED not in [e.outcome for e in audit]
        assert (await world.gov.history(STATE_ID)).entries == ()

    async def test_a_store_outage_at_the_commit_releases_and_propagates(self) -> None:
        world, committer, _ = await counted_world()
        request = await world.submit()
        outages = 0

        def outage(commit: GovernedCommit) -> Exception | None:
            nonlocal outages
            if commit.state is not None:
                outages += 1
                return StoreUnavailableError("connection lost", url="test://")
            return None

        committer.fail = outage
        with pytest.raises(StoreUnavailableError):
            await world.gov.execute(request.request_id)
        released = await assert_log_matches(world, request.request_id)
        assert released.status is S.APPROVED
        assert L.FAILED not in codes_of(released.decisions)
        assert outages == 1
        committer.fail = None
        again = await world.gov.execute(request.request_id)
        assert again.executed

    async def test_a_failing_audit_write_never_fails_the_request(self) -> None:
        """SequentialCommitter: the audit write is after the request; EXECUTED stands."""
        stores = Stores()
        await seed(stores)

        class BrokenAudit:
            async def record(self, entry: Any) -> None:
                raise StoreUnavailableError("audit store down", url="test://")

            async def entries(self, *args: Any, **kwargs: Any) -> list[Any]:
                return []

        world = await world_over(
            stores,
            committer=SequentialCommitter(
                stores.requests, stores.decisions, stores.states, stores.history, BrokenAudit()
            ),
        )
        request = await world.submit()
        with pytest.raises(StoreUnavailableError):
            await world.gov.execute(request.request_id)
        final = await world.gov.get(request.request_id)
        assert final.status is S.EXECUTED
        current = await stores.states.get(STATE_ID)
        assert current is not None
        assert current.state.quotas == {"bob": 11}

    async def test_a_failing_mutation_is_failed_with_its_audit_entry(self) -> None:
        world, committer, _ = await counted_world()
        request = await world.submit(Explode())
        outcome = await world.gov.execute(request.request_id)
        assert outcome.request.status is S.FAILED
        assert [e.outcome for e in committer.commits[-1].audit] == [AuditOutcome.FAILED]


class TestSequentialFallback:
    """Stores that share no transaction still apply a mutation at most once."""

    async def _world(self) -> tuple[World, Stores, Gate, list[str], Any]:
        stores = Stores()
        await seed(stores)
        gate = Gate()
        parked: list[str] = []

        async def park_first_state_put(label: str, method: str, args: Any, kw: Any) -> None:
            if method == "put" and kw.get("request_id") and not parked:
                parked.append(kw["request_id"])
                await gate.pass_through()

        states = Probe(stores.states, "states", park_first_state_put)

        async def process(clock: Any = None) -> World:
            """A governance of its own (another process) over the same stores."""
            return await world_over(
                stores,
                clock=clock,
                states=states,
                committer=SequentialCommitter(
                    stores.requests, stores.decisions, states, stores.history, stores.audit
                ),
            )

        return await process(), stores, gate, parked, process

    async def test_recovery_between_revision_check_and_state_write_applies_once(
        self,
    ) -> None:
        world, stores, gate, _, process = await self._world()
        other = await process(world.clock)
        request = await world.submit()
        errors: list[BaseException] = []

        async def first_executor() -> None:
            try:
                await world.gov.execute(request.request_id)
            except Exception as error:
                errors.append(error)

        async with anyio.create_task_group() as tg:
            tg.start_soon(first_executor)
            await gate.reached.wait()
            # the executor checked the revision and is about to write the state:
            # recovery after the lease releases the claim, and a second executor runs it
            sweep = await world.gov.recover(past_lease(world.clock))
            assert [r.request_id for r in sweep.released] == [request.request_id]
            second = await other.gov.execute(request.request_id)
            assert second.executed
            gate.opened.set()
        assert len(errors) == 1
        final = await world.gov.get(request.request_id)
        assert final.status is S.EXECUTED
        current = await stores.states.get(STATE_ID)
        assert current is not None
        assert (current.state.quotas, current.version) == ({"bob": 11}, "2")
        assert len((await stores.history.history(STATE_ID)).entries) == 1

    async def test_a_state_written_by_a_lost_executor_is_finished_not_reapplied(self) -> None:
        world, stores, gate, _, _ = await self._world()
        request = await world.submit()
        errors: list[BaseException] = []

        async def first_executor() -> None:
            try:
                await world.gov.execute(request.request_id)
            except Exception as error:
                errors.append(error)

        async with anyio.create_task_group() as tg:
            tg.start_soon(first_executor)
            await gate.reached.wait()
            await world.gov.recover(past_lease(world.clock))
            gate.opened.set()  # the lost executor writes the state, then loses the request
        assert len(errors) == 1
        assert (await world.gov.get(request.request_id)).status is S.APPROVED
        again = await world.gov.execute(request.request_id)
        assert again.request.status is S.EXECUTED
        current = await stores.states.get(STATE_ID)
        assert current is not None
        assert (current.state.quotas, current.version) == ({"bob": 11}, "2")

    async def test_concurrent_repairs_restore_exactly_the_missing_decisions(self) -> None:
        stores = Stores()
        await seed(stores)
        dropped = 0

        async def drop_one_append(label: str, method: str, args: Any, kw: Any) -> None:
            nonlocal dropped
            if method == "append" and dropped == 0 and len(args[1]) > 0:
                dropped += 1
                raise StoreUnavailableError("log write lost", url="test://")

        decisions = Probe(stores.decisions, "decisions", drop_one_append)
        world = await world_over(
            stores,
            decisions=decisions,
            committer=SequentialCommitter(
                stores.requests, decisions, stores.states, stores.history, stores.audit
            ),
        )
        with pytest.raises(StoreUnavailableError):
            await world.submit(request_id="r-1")  # the request lands, its log write does not
        assert dropped == 1
        request = approved = await world.gov.get("r-1")
        assert tuple(await stores.decisions.for_request(request.request_id)) == ()
        await world.gov.execute(request.request_id)
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(world.gov.repair_decision_log)
        final = await world.gov.get(request.request_id)
        assert tuple(await stores.decisions.for_request(request.request_id)) == final.decisions
        assert final.decisions[: len(approved.decisions)] == approved.decisions


class TestLeaseRenewal:
    async def test_a_long_execution_renews_its_lease(self) -> None:
        gate = Gate()
        stores = Stores()
        world = await world_over(stores)
        executor = world.gov.executor
        executor.lease = type(executor.lease)(seconds=0.15)
        request = await world.submit(Blocking(gate))
        results: list[Any] = []

        async def run() -> None:
            results.append(await world.gov.execute(request.request_id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await gate.reached.wait()
            claimed = await world.gov.get(request.request_id)
            world.clock.advance(seconds=10)
            await anyio.sleep(0.2)
            renewed = await world.gov.get(request.request_id)
            assert renewed.revision > claimed.revision
            assert renewed.claim is not None
            assert claimed.claim is not None
            assert renewed.claim.lease_until > claimed.claim.lease_until
            assert renewed.claim.token == claimed.claim.token
            # recovery at the renewed clock finds a live claim
            sweep = await world.gov.recover(world.clock.now)
            assert sweep.released == ()
            gate.opened.set()
        assert results[0].executed
        await assert_log_matches(world, request.request_id)

    async def test_a_mutation_ending_while_its_renewal_is_written_still_commits(self) -> None:
        """The renewal's write is shielded: when the mutation ends while it is in flight
        (landed in the store, its reply still on the way), the execution waits for it and
        commits on the renewed revision. On asyncio the renewal was cancelled through its
        shield: the write landed unseen and the commit failed with RequestConcurrencyError."""
        gate = Gate()
        landed = anyio.Event()
        stores = Stores()
        await seed(stores)

        class SlowReply(CountingCommitter):
            async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
                write = commit.requests[0]
                renewal = write.request.status is S.EXECUTING and not write.new_decisions
                stored = await super().commit(commit)
                if renewal and not landed.is_set():
                    landed.set()
                    await anyio.sleep(0.05)
                return stored

        inner = InMemoryCommitter(
            stores.requests, stores.decisions, stores.states, stores.history, stores.audit
        )
        world = await world_over(stores, committer=SlowReply(inner))
        executor = world.gov.executor
        executor.lease = type(executor.lease)(seconds=0.15)
        request = await world.submit(Blocking(gate))
        results: list[Any] = []

        async def run() -> None:
            results.append(await world.gov.execute(request.request_id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await landed.wait()
            gate.opened.set()
        assert results[0].executed
        executed = await assert_log_matches(world, request.request_id)
        assert executed.status is S.EXECUTED

    async def test_executions_started_apart_are_each_renewed_and_a_short_one_is_not(
        self,
    ) -> None:
        """The renewals' one timer starts each long execution's renewal when it is due (the
        second after the first's) and never one of an execution that already ended."""
        from .conftest import Quotas

        first_gate, second_gate = Gate(), Gate()
        world = await world_over(Stores())
        executor = world.gov.executor
        executor.lease = type(executor.lease)(seconds=1.2)  # renewed 0.4 s after the claim
        await world.gov.states.put("other", Quotas({"bob": 1}))
        await world.gov.states.put("short", Quotas({"bob": 1}))
        first = await world.submit(Blocking(first_gate))
        second = await world.submit(Blocking(second_gate), state_id="other")
        short = await world.submit(state_id="short")

        async def revision(request_id: str) -> int:
            return (await world.gov.get(request_id)).revision

        async with anyio.create_task_group() as tg:
            tg.start_soon(world.gov.execute, first.request_id)
            await first_gate.reached.wait()
            await anyio.sleep(0.2)
            tg.start_soon(world.gov.execute, second.request_id)
            await second_gate.reached.wait()
            claimed = await revision(first.request_id), await revision(second.request_id)
            done = await world.gov.execute(short.request_id)
            await anyio.sleep(0.3)  # the first is due, the second not yet
            assert await revision(first.request_id) > claimed[0]
            assert await revision(second.request_id) == claimed[1]
            await anyio.sleep(0.3)
            assert await revision(second.request_id) > claimed[1]
            first_gate.opened.set()
            second_gate.opened.set()
        assert (await world.gov.get(short.request_id)).revision == done.request.revision
        for request in (first, second, short):
            assert (await world.gov.get(request.request_id)).status is RequestStatus.EXECUTED
            await assert_log_matches(world, request.request_id)


class TestOnlyTheMutationFails:
    async def test_a_policy_that_cannot_be_evaluated_releases_the_claim(self) -> None:
        """A raising policy is not the mutation's fault: the request is released, not FAILED."""
        from mutator import MutationPolicy, PolicyDecision, PolicyEvaluationError

        world, _, _ = await counted_world()
        request = await world.submit()

        class Broken(MutationPolicy[Any]):
            name = "broken"

            def evaluate(self, mutation: Any, state: Any, context: Any) -> PolicyDecision:
                raise RuntimeError("policy backend down")

        world.engine.register_policy(Broken())
        with pytest.raises(PolicyEvaluationError) as caught:
            await world.gov.execute(request.request_id)
        assert caught.value.__cause__ is not caught.value
        released = await assert_log_matches(world, request.request_id)
        assert released.status is S.APPROVED
        assert L.FAILED not in codes_of(released.decisions)
        world.engine.unregister_policy("broken")
        assert (await world.gov.execute(request.request_id)).executed
