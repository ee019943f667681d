"""The lifecycle transition table: every (from, to) pair, its PENDING rules, and the facade."""

from __future__ import annotations

import itertools
from datetime import timedelta

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mutator import MutationContext, MutatorError
from mutator_governance import (
    ALLOWED_TRANSITIONS,
    ApprovalStateError,
    ExecutionClaim,
    GovernanceError,
    InvalidTransitionError,
    LifecycleDecision,
    MutationRequest,
    PendingReason,
    RequestDecision,
    RequestStatus,
    can_transition,
    transition,
)
from mutator_governance._decisions import numbered

from .conftest import T0, World

pytestmark = pytest.mark.anyio

S = RequestStatus
P = PendingReason

# The table as specified (reference B.3 plus the execution edges), written out
# independently of the library's ALLOWED_TRANSITIONS.
EXPECTED: dict[RequestStatus, set[RequestStatus]] = {
    S.CREATED: {S.PENDING, S.APPROVED, S.REJECTED, S.CANCELED, S.SUPERSEDED},
    S.PENDING: {S.APPROVED, S.REJECTED, S.CANCELED, S.EXPIRED, S.SUPERSEDED, S.EXECUTING},
    S.APPROVED: {S.PENDING, S.REJECTED, S.CANCELED, S.SUPERSEDED, S.EXECUTED, S.EXECUTING},
    S.EXECUTING: {S.EXECUTED, S.FAILED, S.REJECTED, S.APPROVED, S.PENDING},
    S.REJECTED: set(),
    S.CANCELED: set(),
    S.EXPIRED: set(),
    S.SUPERSEDED: set(),
    S.EXECUTED: set(),
    S.FAILED: set(),
}
# EXECUTING -> PENDING: APPROVAL when resolution asks for renewed approval, REVALIDATION
# when the executor releases the claim of a request it took from PENDING(REVALIDATION).
RETURNS_FROM_EXECUTING = {P.APPROVAL, P.REVALIDATION}
TERMINAL = {s for s, targets in EXPECTED.items() if not targets}
PAIRS = list(itertools.product(RequestStatus, RequestStatus))
ALLOWED_PAIRS = [(a, b) for a, b in PAIRS if b in EXPECTED[a]]
REFUSED_PAIRS = [(a, b) for a, b in PAIRS if b not in EXPECTED[a]]
AT = T0 + timedelta(hours=3)
CLAIM = ExecutionClaim("worker-1", T0, T0 + timedelta(minutes=5))


def _pair_id(pair: tuple[RequestStatus, RequestStatus]) -> str:
    return f"{pair[0].name}->{pair[1].name}"


def in_status(request: MutationRequest, status: RequestStatus) -> MutationRequest:
    """``request`` put directly into ``status`` (PENDING waits for REVALIDATION)."""
    return attrs.evolve(
        request,
        status=status,
        pending_reason=P.REVALIDATION if status is S.PENDING else None,
        claim=CLAIM if status is S.EXECUTING else None,
        expires_at=T0 + timedelta(days=1),
    )


def note(code: LifecycleDecision = LifecycleDecision.PENDING) -> RequestDecision:
    return RequestDecision(code, MutationContext.system("test"), "moved", AT)


def reason_for(source: RequestStatus, target: RequestStatus) -> PendingReason | None:
    """The pending reason to pass: APPROVAL for a PENDING target (legal from EXECUTING too).

    PENDING -> PENDING uses EXTERNAL_CHECK: only REVALIDATION -> APPROVAL (renewal) re-pends.
    """
    if target is not S.PENDING:
        return None
    return P.EXTERNAL_CHECK if source is S.PENDING else P.APPROVAL


class TestTable:
    def test_allowed_transitions_constant_matches_the_specified_table(self) -> None:
        """The exported ALLOWED_TRANSITIONS is exactly the specified table."""
        assert {k: set(v) for k, v in ALLOWED_TRANSITIONS.items()} == EXPECTED

    def test_terminal_statuses_are_the_ones_without_exits(self) -> None:
        """RequestStatus.is_terminal agrees with the statuses that have no outgoing edge."""
        assert {s for s in RequestStatus if s.is_terminal} == TERMINAL

    @pytest.mark.parametrize("pair", ALLOWED_PAIRS, ids=_pair_id)
    def test_allowed_pair_moves_and_appends_decisions(
        self, approved_request: MutationRequest, pair: tuple[RequestStatus, RequestStatus]
    ) -> None:
        """An allowed move sets the status, appends the decisions and stamps updated_at."""
        source, target = pair
        request = in_status(approved_request, source)
        decisions = [note(), note(LifecycleDecision.APPROVED)]
        reason = reason_for(source, target)

        assert can_transition(request, target, reason) is None
        moved = transition(request, target, decisions, at=AT, pending_reason=reason)

        assert moved.status is target
        assert moved.decisions == request.decisions + numbered(decisions, len(request.decisions))
        assert [d.sequence for d in moved.decisions] == list(range(1, len(moved.decisions) + 1))
        assert moved.updated_at == AT
        assert moved.pending_reason is reason
        assert moved.revision == request.revision
        assert moved.request_id == request.request_id
        # leaving EXECUTING drops the claim; reaching a terminal status clears the expiry
        assert moved.claim == (request.claim if target is S.EXECUTING else None)
        assert moved.expires_at == (None if target.is_terminal else request.expires_at)
        # the input is untouched
        assert request.status is source

    @pytest.mark.parametrize("pair", REFUSED_PAIRS, ids=_pair_id)
    def test_refused_pair_raises_and_changes_nothing(
        self, approved_request: MutationRequest, pair: tuple[RequestStatus, RequestStatus]
    ) -> None:
        """A move outside the table raises InvalidTransitionError naming request, from and to."""
        source, target = pair
        request = in_status(approved_request, source)
        reason = reason_for(source, target)

        assert can_transition(request, target, reason) is not None
        with pytest.raises(InvalidTransitionError) as caught:
            transition(request, target, [note()], at=AT, pending_reason=reason)

        error = caught.value
        assert (error.request_id, error.current, error.target) == (
            request.request_id,
            source,
            target,
        )
        assert isinstance(error, GovernanceError)
        assert isinstance(error, MutatorError)
        assert source.name in str(error)
        assert target.name in str(error)

    @pytest.mark.parametrize("status", list(RequestStatus), ids=lambda s: s.name)
    def test_same_status_transition_is_refused(
        self, approved_request: MutationRequest, status: RequestStatus
    ) -> None:
        """Moving to the status a request already has is never allowed."""
        request = in_status(approved_request, status)
        reason = P.REVALIDATION if status is S.PENDING else P.APPROVAL
        with pytest.raises(InvalidTransitionError):
            transition(request, status, [note()], at=AT, pending_reason=reason)

    def test_revalidating_request_can_be_sent_for_renewed_approval(
        self, approved_request: MutationRequest
    ) -> None:
        """PENDING(REVALIDATION) may re-pend as PENDING(APPROVAL), the renewal edge."""
        request = in_status(approved_request, S.PENDING)
        moved = transition(request, S.PENDING, [note()], at=AT, pending_reason=P.APPROVAL)
        assert (moved.status, moved.pending_reason) == (S.PENDING, P.APPROVAL)


class TestPendingEdges:
    @pytest.mark.parametrize("reason", list(PendingReason), ids=lambda r: r.name)
    def test_executing_returns_to_pending_only_for_approval_or_revalidation(
        self, approved_request: MutationRequest, reason: PendingReason
    ) -> None:
        """EXECUTING -> PENDING is legal only for APPROVAL (renewal) or REVALIDATION (release)."""
        request = in_status(approved_request, S.EXECUTING)
        if reason in RETURNS_FROM_EXECUTING:
            moved = transition(request, S.PENDING, [note()], at=AT, pending_reason=reason)
            assert (moved.status, moved.pending_reason, moved.claim) == (S.PENDING, reason, None)
        else:
            with pytest.raises(InvalidTransitionError) as caught:
                transition(request, S.PENDING, [note()], at=AT, pending_reason=reason)
            assert (caught.value.current, caught.value.target) == (S.EXECUTING, S.PENDING)

    @pytest.mark.parametrize("reason", list(PendingReason), ids=lambda r: r.name)
    def test_pending_is_claimed_for_execution_only_from_revalidation(
        self, approved_request: MutationRequest, reason: PendingReason
    ) -> None:
        """PENDING -> EXECUTING is legal only while pending REVALIDATION."""
        request = attrs.evolve(approved_request, status=S.PENDING, pending_reason=reason)
        if reason is P.REVALIDATION:
            moved = transition(request, S.EXECUTING, [note()], at=AT, claim=CLAIM)
            assert (moved.status, moved.pending_reason, moved.claim) == (
                S.EXECUTING,
                None,
                CLAIM,
            )
        else:
            with pytest.raises(InvalidTransitionError) as caught:
                transition(request, S.EXECUTING, [note()], at=AT, claim=CLAIM)
            assert (caught.value.current, caught.value.target) == (S.PENDING, S.EXECUTING)

    @pytest.mark.parametrize("source", [S.CREATED, S.APPROVED, S.EXECUTING], ids=lambda s: s.name)
    def test_pending_target_requires_a_reason(
        self, approved_request: MutationRequest, source: RequestStatus
    ) -> None:
        """Moving to PENDING without a pending reason is refused from every source."""
        request = in_status(approved_request, source)
        with pytest.raises(InvalidTransitionError):
            transition(request, S.PENDING, [note()], at=AT)

    @pytest.mark.parametrize(
        "target", [S.APPROVED, S.REJECTED, S.CANCELED, S.EXPIRED], ids=lambda s: s.name
    )
    def test_leaving_pending_clears_the_reason(
        self, approved_request: MutationRequest, target: RequestStatus
    ) -> None:
        """Once a request leaves PENDING its pending reason is cleared."""
        request = attrs.evolve(approved_request, status=S.PENDING, pending_reason=P.QUOTA)
        moved = transition(request, target, [note()], at=AT, pending_reason=P.QUOTA)
        assert moved.pending_reason is None


async def _terminal_requests(world: World) -> dict[RequestStatus, MutationRequest]:
    """One stored request per terminal status, reached through the facade where it can be."""
    carol = world.ctx("carol")
    world.rules.deny("over budget")
    rejected = await world.submit()
    world.rules.set()
    canceled = await world.gov.cancel((await world.submit()).request_id, context=carol)
    pending = await world.submit(pending_reason=P.EXTERNAL_CHECK)
    expired = await world.gov.expire(pending.request_id, context=carol)
    newer = await world.submit()
    superseded = await world.gov.supersede(
        (await world.submit()).request_id, newer.request_id, context=carol
    )
    executed = await world.force(await world.submit(), status=S.EXECUTED)
    failed = await world.force(await world.submit(), status=S.FAILED)
    found = {
        S.REJECTED: rejected,
        S.CANCELED: canceled,
        S.EXPIRED: expired,
        S.SUPERSEDED: superseded,
        S.EXECUTED: executed,
        S.FAILED: failed,
    }
    assert {s: r.status for s, r in found.items()} == {s: s for s in found}
    return found


FACADE_OPS = ["cancel", "expire", "supersede", "approve", "reject", "move_to_pending"]


class TestFacadeRefusesTerminal:
    @pytest.mark.parametrize("op", FACADE_OPS)
    async def test_terminal_requests_refuse_every_lifecycle_operation(
        self, world: World, op: str
    ) -> None:
        """Every lifecycle operation on a terminal request raises and leaves it as stored."""
        terminal = await _terminal_requests(world)
        other = await world.submit()
        dave = world.ctx("dave")
        for status, request in terminal.items():
            before = await world.gov.get(request.request_id)
            history = await world.history(request.request_id)
            rid = request.request_id
            if op == "supersede":
                attempt = world.gov.supersede(rid, other.request_id, context=dave)
            elif op == "move_to_pending":
                attempt = world.gov.move_to_pending(rid, P.MANUAL_REVIEW, context=dave)
            else:
                attempt = getattr(world.gov, op)(rid, context=dave)
            with pytest.raises(InvalidTransitionError) as caught:
                await attempt
            assert (caught.value.request_id, caught.value.current) == (rid, status)
            after = await world.gov.get(rid)
            assert after == before
            assert after.revision == before.revision
            assert await world.history(rid) == history

    async def test_approving_an_approved_request_says_it_is_already_approved(
        self, world: World
    ) -> None:
        """Approving an APPROVED request raises ApprovalStateError and keeps its revision."""
        request = await world.submit()
        with pytest.raises(ApprovalStateError, match="already APPROVED"):
            await world.gov.approve(request.request_id, context=world.ctx("carol"))
        assert (await world.gov.get(request.request_id)).revision == 0

    async def test_expiring_an_approved_request_is_refused(self, world: World) -> None:
        """APPROVED -> EXPIRED is not in the table, so expire() refuses it."""
        request = await world.submit()
        with pytest.raises(InvalidTransitionError):
            await world.gov.expire(request.request_id, context=world.ctx("carol"))
        assert (await world.gov.get(request.request_id)).status is S.APPROVED


attempts = st.lists(
    st.tuples(st.sampled_from(RequestStatus), st.none() | st.sampled_from(PendingReason)),
    max_size=25,
)


def _legal(request: MutationRequest, target: RequestStatus, reason: PendingReason | None) -> bool:
    """The specified rules, independent of the library."""
    source = request.status
    if source is S.PENDING and target is S.PENDING:
        # renewal: a request awaiting revalidation gets a fresh approval round
        return request.pending_reason is P.REVALIDATION and reason is P.APPROVAL
    if target not in EXPECTED[source]:
        return False
    if target is S.PENDING and reason is None:
        return False
    if source is S.PENDING and target is S.EXECUTING:
        return request.pending_reason is P.REVALIDATION
    if source is S.EXECUTING and target is S.PENDING:
        return reason in RETURNS_FROM_EXECUTING
    return True


class TestRandomWalks:
    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(start=st.sampled_from(RequestStatus), steps=attempts)
    def test_random_attempts_follow_the_table_and_terminal_is_absorbing(
        self, approved_request: MutationRequest, start: RequestStatus, steps: list
    ) -> None:
        """Any sequence of attempts only takes specified edges, and terminal statuses absorb."""
        request = in_status(approved_request, start)
        for target, reason in steps:
            was_terminal = request.status.is_terminal
            if not _legal(request, target, reason):
                with pytest.raises(InvalidTransitionError) as caught:
                    transition(request, target, [note()], at=AT, pending_reason=reason)
                assert (caught.value.current, caught.value.target) == (request.status, target)
                continue
            moved = transition(request, target, [note()], at=AT, pending_reason=reason)
            assert not was_terminal
            assert moved.status in EXPECTED[request.status] | {request.status}
            assert len(moved.decisions) == len(request.decisions) + 1
            request = moved
