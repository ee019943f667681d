"""The library's cheap builders build exactly what the validating constructors build.

Governance builds its own requests, decisions, claims, approval slots and ids on every
operation without re-running validation it already did; these tests pin that the values
(and the errors for a bad clock) are the ones the public constructors produce.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import attrs
import pytest

from mutator import MutationContext, PolicyRequirement
from mutator_governance import (
    ApprovalStatus,
    ExecutionClaim,
    LifecycleDecision,
    MutationRequest,
    RequestDecision,
    RequestStatus,
)
from mutator_governance._approvals import evolve_slot, map_requirements
from mutator_governance._decisions import new_decision
from mutator_governance._ids import _reseed, new_id, new_token
from mutator_governance._request import new_claim, new_request

from .conftest import T0, IncreaseQuota, World

CTX = MutationContext.user("alice", reason="please", timestamp=T0)
NAIVE = datetime(2030, 1, 1, 12, 0)


class TestIds:
    def test_request_ids_are_uuid4_hex(self) -> None:
        """Ids look exactly like ``uuid.uuid4().hex``: version 4, RFC 4122 variant."""
        ids = {new_id() for _ in range(200)}
        assert len(ids) == 200
        for value in ids:
            parsed = uuid.UUID(value)
            assert parsed.hex == value
            assert parsed.version == 4
            assert parsed.variant == uuid.RFC_4122

    def test_claim_tokens_are_unique_and_a_fork_draws_a_new_prefix(self) -> None:
        """Tokens are 32 hex digits, never repeat, and a forked child starts a new stream."""
        tokens = [new_token() for _ in range(100)]
        assert len(set(tokens)) == 100
        assert all(len(t) == 32 and int(t, 16) >= 0 for t in tokens)
        _reseed()  # what a fork runs in the child
        assert new_token()[:16] != tokens[-1][:16]


class TestBuilders:
    def test_new_decision_is_the_constructed_decision(self) -> None:
        built = new_decision(LifecycleDecision.CLAIMED, CTX, "why", T0, {"k": 1}, 3)
        assert built == RequestDecision(LifecycleDecision.CLAIMED, CTX, "why", T0, {"k": 1}, 3)
        assert type(built) is RequestDecision
        with pytest.raises(TypeError):
            built.metadata["k"] = 2  # type: ignore[index]
        assert new_decision(LifecycleDecision.CLAIMED, CTX, None, T0) == RequestDecision(
            LifecycleDecision.CLAIMED, CTX, None, T0
        )

    def test_new_decision_refuses_a_naive_time_like_the_constructor(self) -> None:
        with pytest.raises(ValueError) as expected:
            RequestDecision(LifecycleDecision.CLAIMED, CTX, None, NAIVE)
        with pytest.raises(ValueError) as actual:
            new_decision(LifecycleDecision.CLAIMED, CTX, None, NAIVE)
        assert str(actual.value) == str(expected.value)

    def test_new_claim_is_the_constructed_claim(self) -> None:
        claim = new_claim("host:1", T0, T0 + timedelta(minutes=5), True)
        assert claim == ExecutionClaim(
            "host:1", T0, T0 + timedelta(minutes=5), revalidating=True, token=claim.token
        )
        with pytest.raises(ValueError, match="claimed_at must be a timezone-aware datetime"):
            new_claim("host:1", NAIVE, T0, False)

    def test_new_request_is_the_constructed_request(self) -> None:
        mutation = IncreaseQuota("bob", 1)
        fields = {
            "request_id": "r1",
            "state_id": "s1",
            "state_type": "Quotas",
            "mutation_type": "quota.increase",
            "mutation": mutation,
            "intent": mutation.intent,
            "context": CTX,
            "status": RequestStatus.CREATED,
            "created_at": T0,
            "updated_at": T0,
            "policy_requirements": [PolicyRequirement.approval("bob")],
            "expected_state_version": "1",
            "expires_at": None,
            "metadata": {"ticket": "T-1"},
            "trace_context": {},
        }
        built = new_request(dict(fields))
        assert built == MutationRequest(**fields)  # type: ignore[arg-type]
        assert type(built.policy_requirements) is tuple
        with pytest.raises(TypeError):
            new_request({**fields, "metadata": ["not", "a", "mapping"]})
        with pytest.raises(ValueError, match="created_at must be a timezone-aware"):
            new_request({**fields, "created_at": NAIVE})

    def test_evolve_slot_is_attrs_evolve(self) -> None:
        (slot,) = map_requirements([PolicyRequirement.approval("bob")])
        changes = {"status": ApprovalStatus.APPROVED, "decided_at": T0, "decided_by": "bob"}
        assert evolve_slot(slot, **changes) == attrs.evolve(slot, **changes)


class TestNaiveClock:
    """A clock without a timezone is refused with the constructors' own messages."""

    @pytest.mark.anyio
    async def test_submit_refuses_a_naive_clock(self, world: World) -> None:
        world.gov.clock = lambda: NAIVE
        with pytest.raises(ValueError, match="timestamp must be a timezone-aware datetime"):
            await world.submit()
        assert not (await world.gov.requests.list()).items

    @pytest.mark.anyio
    async def test_execute_refuses_a_naive_clock_before_claiming(self, world: World) -> None:
        request = await world.submit()
        assert request.status is RequestStatus.APPROVED
        world.gov.executor.ledger.clock = lambda: NAIVE
        with pytest.raises(ValueError, match="claimed_at must be a timezone-aware datetime"):
            await world.gov.execute(request.request_id)
        stored = await world.gov.requests.get(request.request_id)
        assert stored == request


class TestExecutionRecord:
    @pytest.mark.anyio
    async def test_decisions_are_numbered_and_the_revision_advances_once_per_write(
        self, world: World
    ) -> None:
        """CLAIMED, VALIDATED and EXECUTED follow the submit decisions, in two writes."""
        request = await world.submit()
        result = await world.gov.execute(request.request_id)
        final = result.request
        assert [d.sequence for d in final.decisions] == list(range(1, len(final.decisions) + 1))
        assert [d.code.name for d in final.decisions[len(request.decisions) :]] == [
            "CLAIMED",
            "VALIDATED",
            "EXECUTED",
        ]
        assert final.revision == request.revision + 2
        assert final == await world.gov.requests.get(request.request_id)
        assert tuple(await world.gov.decision_history(request.request_id)) == final.decisions
        assert result.resolution is not None
        assert result.resolution.request == final
