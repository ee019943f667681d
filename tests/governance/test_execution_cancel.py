"""Cancelling the caller at every await point of a governed execution.

A chosen call (a store method, the mutation's async apply, or the commit) parks on an
event; once it is reached the caller's cancel scope is cancelled from outside. Whatever
the point, the request ends untouched, released or fully executed: never EXECUTING, and
never with a state change that is not recorded as EXECUTED.
"""

from __future__ import annotations

from typing import Any

import anyio
import attrs
import pytest

from mutator import MutationContext
from mutator_governance import (
    GovernedCommit,
    InMemoryCommitter,
    LifecycleDecision,
    MutationRequest,
    PendingReason,
    RequestStatus,
)

from ._execution_support import (
    Blocking,
    Gate,
    Probe,
    Stores,
    codes_of,
    make_governance,
    seed,
)
from .conftest import STATE_ID, IncreaseQuota

pytestmark = pytest.mark.anyio

S = RequestStatus
L = LifecycleDecision


class Parker:
    """A probe hook that parks the first call matching ``(label, method, predicate)``."""

    def __init__(self) -> None:
        self.target: tuple[str, str, Any, str] | None = None
        self.gate = Gate()

    def arm(self, label: str, method: str, when: str = "before", match: Any = None) -> None:
        self.target = (label, method, match or (lambda args, kwargs: True), when)

    async def _maybe_park(
        self, when: str, label: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        target = self.target
        if target is None or (label, method, when) != (target[0], target[1], target[3]):
            return
        if target[2](args, kwargs):
            self.target = None
            await self.gate.pass_through()

    async def before(self, label: str, method: str, args: Any, kwargs: Any) -> None:
        await self._maybe_park("before", label, method, args, kwargs)

    async def after(self, label: str, method: str, args: Any, kwargs: Any) -> None:
        await self._maybe_park("after", label, method, args, kwargs)


class ParkingCommitter:
    """Wraps a committer; when armed, the first commit writing a request with status
    ``armed`` parks on ``gate`` before committing."""

    def __init__(self, inner: InMemoryCommitter, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate
        self.armed: RequestStatus | None = None

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        if self.armed is not None and commit.requests[0].request.status is self.armed:
            self.armed = None
            await self.gate.pass_through()
        return await self.inner.commit(commit)


@attrs.define
class Setup:
    stores: Stores
    parker: Parker
    committer: ParkingCommitter
    gov: Any
    request: MutationRequest


async def setup(mutation: Any = None) -> Setup:
    stores = Stores()
    await seed(stores)
    parker = Parker()
    engine = stores.engine()
    committer = ParkingCommitter(
        InMemoryCommitter(
            stores.requests, stores.decisions, stores.states, engine.history_store, engine.audit
        ),
        parker.gate,
    )

    def governance() -> Any:
        return make_governance(
            stores,
            engine=engine,
            requests=Probe(stores.requests, "requests", parker.before, parker.after),
            decisions=Probe(stores.decisions, "decisions", parker.before, parker.after),
            states=Probe(stores.states, "states", parker.before, parker.after),
            committer=committer,
        )

    request = await governance().submit(
        mutation or IncreaseQuota("bob", 10),
        state_id=STATE_ID,
        context=MutationContext.user("alice", reason="please"),
    )
    # executed by another governance than the submitter's, so it starts by reading it
    return Setup(stores, parker, committer, governance(), request)


async def arm(case: str, world: Setup) -> Gate:
    """Arm the parking point named ``case``; returns the gate it parks on."""
    parker = world.parker
    if case == "request load":
        parker.arm("requests", "get")
    elif case == "claim commit":
        world.committer.armed = S.EXECUTING
    elif case == "state load":
        parker.arm("states", "get")
    elif case == "commit":
        world.committer.armed = S.EXECUTED
    elif case != "async apply":
        raise AssertionError(case)
    return parker.gate


async def cancel_at(world: Setup, gate: Gate, *, open_after_cancel: bool) -> dict[str, Any]:
    """Run ``execute`` in a cancel scope and cancel it once ``gate`` is reached."""
    outcome: dict[str, Any] = {}
    scope = anyio.CancelScope()

    async def run() -> None:
        with scope:
            outcome["result"] = await world.gov.execute(world.request.request_id)
        outcome["cancelled"] = scope.cancelled_caught

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await gate.reached.wait()
        scope.cancel()
        if open_after_cancel:
            gate.opened.set()
    return outcome


async def assert_clean(world: Setup) -> MutationRequest:
    """Untouched, released or executed; a state change only together with EXECUTED."""
    rid = world.request.request_id
    request = await world.stores.requests.get(rid)
    assert request is not None
    produced = await world.stores.states.version_by_request(STATE_ID, rid)
    current = await world.stores.states.get(STATE_ID)
    assert current is not None
    entries = (await world.stores.history.history(STATE_ID)).entries
    assert request.status is not S.EXECUTING
    assert request.claim is None
    if request.status is S.EXECUTED:
        assert produced == request.resulting_state_version == current.version == "2"
        assert current.state.quotas == {"bob": 11}
        assert len(entries) == 1
    else:
        assert request.status is S.APPROVED
        assert produced is None
        assert (current.state.quotas, current.version) == ({"bob": 1}, "1")
        assert entries == ()
        new = codes_of(request.decisions[len(world.request.decisions) :])
        assert new in ([], [L.CLAIMED, L.RELEASED])
    assert tuple(await world.stores.decisions.for_request(rid)) == request.decisions
    return request


class TestCancellation:
    @pytest.mark.parametrize(
        ("case", "expected"),
        [
            ("request load", "untouched"),
            ("claim commit", "released"),
            ("state load", "released"),
            ("async apply", "released"),
            ("commit", "executed"),
        ],
    )
    async def test_cancelled_execution_is_never_half_done(self, case: str, expected: str) -> None:
        """Cancelled at any await, the request is untouched, released or fully executed."""
        gate = Gate()
        world = await setup(Blocking(gate) if case == "async apply" else None)
        if case != "async apply":
            gate = await arm(case, world)

        # the claim and the commit are shielded: they finish even when cancelled mid-write
        shielded = case in ("claim commit", "commit")
        outcome = await cancel_at(world, gate, open_after_cancel=shielded)

        request = await assert_clean(world)
        new = codes_of(request.decisions[len(world.request.decisions) :])
        if expected == "untouched":
            assert request == world.request
            assert outcome == {"cancelled": True}
        elif expected == "released":
            assert new == [L.CLAIMED, L.RELEASED]
            assert outcome == {"cancelled": True}
        else:
            assert request.status is S.EXECUTED
            if "result" in outcome:
                assert outcome["result"].request == request

        if request.status is S.APPROVED:
            gate.opened.set()
            again = await world.gov.execute(world.request.request_id)
            assert again.executed is True
            await assert_clean(world)


class TestSequentialCommitCancellation:
    """Over stores sharing no transaction, a cancellation once the first write of an
    operation started lets the operation's remaining writes land: the request and its
    decision log never disagree."""

    @pytest.mark.parametrize("operation", ["submit", "approve", "cancel"])
    async def test_an_operation_cancelled_between_its_writes_lands_whole(
        self, operation: str
    ) -> None:
        """Cancelled while its decisions were being appended, the request was already
        written: the log used to stay behind it until ``recover()`` repaired it."""
        stores = Stores()
        await seed(stores)
        parker = Parker()
        gov = make_governance(
            stores, decisions=Probe(stores.decisions, "decisions", parker.before, parker.after)
        )
        alice = MutationContext.user("alice", reason="please")
        pending = await gov.submit(IncreaseQuota("bob", 10), state_id=STATE_ID, context=alice)
        if operation == "approve":
            pending = await gov.move_to_pending(
                pending.request_id, PendingReason.MANUAL_REVIEW, context=alice
            )
        parker.arm("decisions", "append")
        scope = anyio.CancelScope()

        async def run() -> None:
            with scope:
                if operation == "submit":
                    await gov.submit(
                        IncreaseQuota("bob", 1), state_id=STATE_ID, context=alice, request_id="r"
                    )
                elif operation == "approve":
                    await gov.approve(pending.request_id, context=MutationContext.user("bob"))
                else:
                    await gov.cancel(pending.request_id, context=alice)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await parker.gate.reached.wait()
            scope.cancel()
            parker.gate.opened.set()
        request_id = "r" if operation == "submit" else pending.request_id
        stored = await stores.requests.get(request_id)
        assert stored is not None
        assert tuple(await stores.decisions.for_request(request_id)) == stored.decisions
