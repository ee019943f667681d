"""Crashes at every write of a governed execution: never applied twice, never half recorded.

The stores are wrapped so that one chosen write raises ``Crash`` before it lands. Each step
is a separate write because the governance commits through ``SequentialCommitter``. Two
failure modes are covered: a *process crash* (after the crash every further call of that
process fails, and a new ``Governance`` is built over the same underlying stores) and a
*transient failure* (only that one write fails; the process carries on).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from mutator import MutationContext
from mutator_governance import (
    Governance,
    LifecycleDecision,
    LinkType,
    RequestClaimedError,
    RequestNotExecutableError,
    RequestStatus,
    ResolutionDecision,
    ResolutionOutcome,
    ResolutionStrategy,
    SequentialCommitter,
)

from ._execution_support import (
    DecreaseQuota,
    Probe,
    Stores,
    appended,
    codes_of,
    make_governance,
    past_lease,
    seed,
    stored_request,
)
from .conftest import STATE_ID, Clock, IncreaseQuota, Quotas

pytestmark = pytest.mark.anyio

S = RequestStatus
L = LifecycleDecision


class Crash(Exception):
    """A simulated infrastructure failure at one write."""


@attrs.frozen
class Point:
    """One write of a governed execution, recognised by store, method and arguments."""

    label: str
    method: str
    match: Callable[[tuple[Any, ...], dict[str, Any]], bool]
    state_written: bool
    """Whether the request's new state has landed when this write crashes."""


POINTS: dict[str, Point] = {
    "claim": Point(
        "requests", "replace", lambda a, k: stored_request(a).status is S.EXECUTING, False
    ),
    "claim-decision": Point(
        "decisions", "append", lambda a, k: L.CLAIMED in codes_of(appended(a)), False
    ),
    "resolution": Point(
        "requests",
        "replace",
        lambda a, k: (
            codes_of(stored_request(a).decisions[-1:]) == [ResolutionDecision.REJECTED_AS_STALE]
        ),
        False,
    ),
    "state": Point("states", "put", lambda a, k: k.get("request_id") is not None, False),
    "terminal": Point(
        "requests", "replace", lambda a, k: stored_request(a).status is S.EXECUTED, True
    ),
    "decision": Point(
        "decisions", "append", lambda a, k: L.EXECUTED in codes_of(appended(a)), True
    ),
}
STALE_POINTS = {"resolution"}
"""Points only reached when the state moved (resolution writes only for non-executing outcomes)."""


class Injector:
    """Raises ``Crash`` at the armed point; after a process crash every call fails."""

    def __init__(self, *, process_dies: bool) -> None:
        self.point: Point | None = None
        self.process_dies = process_dies
        self.fired = False
        self.dead = False

    async def before(
        self, label: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if self.dead:
            raise Crash("the process is gone")
        point = self.point
        if (
            point is not None
            and not self.fired
            and (label, method) == (point.label, point.method)
            and point.match(args, kwargs)
        ):
            self.fired = True
            self.dead = self.process_dies
            raise Crash(f"crash at {label}.{method}")


@attrs.define
class Deployment:
    """Underlying stores, the crashing governance over them and the request under test."""

    stores: Stores
    clock: Clock
    injector: Injector
    gov: Governance
    request_id: str = ""
    base: int = 1
    base_version: int = 1

    def restart(self) -> Governance:
        """The governance that runs after the failure (a new process, or the same one)."""
        if self.injector.process_dies:
            # the same deployment, so the same kind of committer: one sharing no transaction
            engine = self.stores.engine()
            return make_governance(
                self.stores,
                engine=engine,
                clock=self.clock,
                committer=SequentialCommitter(
                    self.stores.requests,
                    self.stores.decisions,
                    self.stores.states,
                    engine.history_store,
                    engine.audit,
                ),
            )
        return self.gov

    async def request(self) -> Any:
        request = await self.stores.requests.get(self.request_id)
        assert request is not None
        return request

    async def check_consistent(self) -> Any:
        """No half-recorded outcome and at most one application of the request."""
        request = await self.request()
        produced = await self.stores.states.version_by_request(STATE_ID, self.request_id)
        if request.status is S.EXECUTED:
            assert produced is not None
            assert request.resulting_state_version == produced
        elif request.status is not S.EXECUTING:
            assert produced is None, f"{request.status.name} but the state holds its version"
            assert request.resulting_state_version is None
        current = await self.stores.states.get(STATE_ID)
        assert current is not None
        applied = 0 if produced is None else 1
        assert current.state.quotas["bob"] == self.base + 10 * applied
        assert current.version == str(self.base_version + applied)
        return request


async def deployment(*, process_dies: bool, stale: bool = False) -> Deployment:
    """A governance over crash-injecting stores with one approved request (+10 for bob)."""
    stores = Stores()
    await seed(stores)
    clock = Clock()
    injector = Injector(process_dies=process_dies)
    requests = Probe(stores.requests, "requests", before=injector.before)
    decisions = Probe(stores.decisions, "decisions", before=injector.before)
    states = Probe(stores.states, "states", before=injector.before)
    engine = stores.engine()
    gov = make_governance(
        stores,
        engine=engine,
        clock=clock,
        requests=requests,
        decisions=decisions,
        states=states,
        committer=SequentialCommitter(
            requests, decisions, states, engine.history_store, engine.audit
        ),
    )
    world = Deployment(stores, clock, injector, gov)
    request = await gov.submit(
        IncreaseQuota("bob", 10),
        state_id=STATE_ID,
        context=MutationContext.user("alice", reason="test"),
    )
    world.request_id = request.request_id
    if stale:
        await stores.states.put(STATE_ID, Quotas({"bob": 100}), expected_version="1")
        world.base, world.base_version = 100, 2
    return world


async def crash(world: Deployment, point: str) -> None:
    """Run the execution until it crashes at ``point``."""
    world.injector.point = POINTS[point]
    with pytest.raises(Crash):
        await world.gov.execute(world.request_id)
    assert world.injector.fired, f"the execution never reached {point}"


async def recover(world: Deployment) -> tuple[Governance, Any]:
    gov = world.restart()
    world.clock.now = past_lease(world.clock)
    sweep = await gov.recover(now=world.clock.now)
    return gov, sweep


MODES = [pytest.param(True, id="process-crash"), pytest.param(False, id="transient")]


def _cases() -> list[Any]:
    """Every crash point, with the process dying or the write failing transiently."""
    return [
        pytest.param(name, mode.values[0], id=f"{name}-{mode.id}")
        for name in POINTS
        for mode in MODES
    ]


class TestCrashPoints:
    @pytest.mark.parametrize(("point", "process_dies"), _cases())
    async def test_crash_then_recovery_applies_exactly_once(
        self, point: str, process_dies: bool
    ) -> None:
        """After a crash at any write, recovery and a retry leave exactly one application."""
        stale = point in STALE_POINTS
        world = await deployment(process_dies=process_dies, stale=stale)
        expected_written = POINTS[point].state_written

        await crash(world, point)
        crashed = await world.check_consistent()
        assert (
            await world.stores.states.version_by_request(STATE_ID, world.request_id) is not None
        ) == expected_written

        gov, sweep = await recover(world)
        recovered = await world.check_consistent()
        if expected_written:
            assert recovered.status is S.EXECUTED
            assert recovered.resulting_state_version == "2"
        else:
            assert recovered.status is S.APPROVED
        if crashed.status is S.EXECUTING:
            handled = sweep.finished if expected_written else sweep.released
            assert [r.request_id for r in handled] == [world.request_id]

        if recovered.status is S.EXECUTED:
            with pytest.raises(RequestNotExecutableError):
                await gov.execute(world.request_id)
        else:
            result = await gov.execute(world.request_id)
            if stale:
                assert result.resolution is not None
                assert result.resolution.outcome is ResolutionOutcome.REJECTED_AS_STALE
                assert result.executed is False
            else:
                assert (result.executed, result.resulting_version) == (True, "2")

        final = await world.check_consistent()
        assert final.status is (S.REJECTED if stale else S.EXECUTED)
        if not stale:
            assert final.resulting_state_version == "2"
            assert await world.stores.states.version_by_request(STATE_ID, world.request_id) == "2"

    async def test_crashed_claim_blocks_others_until_its_lease_expires(self) -> None:
        """A crashed executor's claim refuses other executors until recovery after the lease."""
        world = await deployment(process_dies=True)
        await crash(world, "state")
        other = world.restart()

        with pytest.raises(RequestClaimedError):
            await other.execute(world.request_id)
        early = await other.recover_stale_claims(now=world.clock.now)
        assert early.released == early.finished == ()
        assert (await world.request()).status is S.EXECUTING

        world.clock.now = past_lease(world.clock)
        sweep = await other.recover_stale_claims(now=world.clock.now)
        assert [r.request_id for r in sweep.released] == [world.request_id]
        released = await world.request()
        assert released.status is S.APPROVED
        assert codes_of(released.decisions)[-2:] == [L.CLAIMED, L.RELEASED]
        result = await other.execute(world.request_id)
        assert result.executed is True
        await world.check_consistent()

    async def test_failed_request_write_does_not_allow_a_second_application(self) -> None:
        """After the state landed but the request write failed, a retry must not apply again."""
        world = await deployment(process_dies=False)
        await crash(world, "terminal")

        with contextlib.suppress(RequestNotExecutableError):
            await world.gov.execute(
                world.request_id, strategy=ResolutionStrategy.REVALIDATE_ON_LATEST_STATE
            )

        current = await world.stores.states.get(STATE_ID)
        assert current is not None
        assert current.state.quotas["bob"] == 11


class TestRecordsAfterRecovery:
    @pytest.mark.parametrize(("point", "process_dies"), _cases())
    async def test_decision_log_matches_request_after_recovery(
        self, point: str, process_dies: bool
    ) -> None:
        """Once recovered and retried, the decision log holds exactly the request's decisions."""
        world = await deployment(process_dies=process_dies, stale=point in STALE_POINTS)
        await crash(world, point)
        gov, _ = await recover(world)
        request = await world.request()
        if request.status is not S.EXECUTED:
            await gov.execute(world.request_id)
            request = await world.request()

        logged = tuple(await world.stores.decisions.for_request(world.request_id))
        assert logged == request.decisions

    @pytest.mark.parametrize("point", ["terminal", "decision"])
    @pytest.mark.xfail(
        reason=(
            "known limitation of non-transactional stores (documented on "
            "SequentialCommitter): the engine HistoryEntry travels only in the GovernedCommit; "
            "recovery finishes the request EXECUTED without the history entry"
        ),
        strict=True,
    )
    async def test_recovered_execution_appears_in_engine_history(self, point: str) -> None:
        """A mutation whose state landed before a crash is in the engine history once recovered."""
        world = await deployment(process_dies=True)
        await crash(world, point)
        await recover(world)

        assert (await world.request()).status is S.EXECUTED
        entries = (await world.stores.history.history(STATE_ID)).entries
        assert len(entries) == 1


class TestCompensationCrash:
    @pytest.mark.parametrize("write", ["compensation", "original"])
    async def test_recovered_compensation_links_the_original(self, write: str) -> None:
        """A compensation whose state landed before a crash still links its original."""
        world = await deployment(process_dies=True)
        original = (await world.gov.execute(world.request_id)).request
        comp = await world.gov.compensate(
            original.request_id,
            DecreaseQuota("bob", 10),
            context=MutationContext.user("ops", reason="undo"),
        )
        target = comp.request_id if write == "compensation" else original.request_id

        def commit_write(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
            request = stored_request(args)
            return request.request_id == target and request.status is S.EXECUTED

        world.injector.point = Point("requests", "replace", commit_write, True)
        with pytest.raises(Crash):
            await world.gov.execute(comp.request_id)

        gov, _ = await recover(world)

        finished = await gov.get(comp.request_id)
        assert finished.status is S.EXECUTED
        linked = await gov.get(original.request_id)
        assert [(link.request_id, link.type) for link in linked.execution.links] == [
            (comp.request_id, LinkType.COMPENSATED_BY)
        ]
        assert codes_of(linked.decisions)[-1] is L.COMPENSATED
