"""Decisions racing on one request, on every durable store: each lost race reads the
request again and decides on it, so concurrent approvers all land (as in memory) and a
decision that no longer holds fails as it would have, had it been made second."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mutator import MutationContext, MutationPolicy, PolicyDecision, PolicyRequirement
from mutator_governance import (
    ApprovalStatus,
    InvalidTransitionError,
    LifecycleDecision,
    RequestStatus,
)
from mutator_governance._governance import DECISION_ATTEMPTS

from . import test_stored_documents as documents
from .test_stored_documents import ACCOUNT, STATE_ID, Durable, Rename, opened, user

# the durable stores' fixtures (a SQLite file, a PostgreSQL schema, a Redis prefix)
case = documents.case
anyio_backend = documents.anyio_backend
durable = documents.durable
postgres_url = documents.postgres_url
redis_url = documents.redis_url

pytestmark = pytest.mark.anyio

APPROVERS = [f"approver-{i}" for i in range(DECISION_ATTEMPTS)]


class EveryApprover(MutationPolicy[Any]):
    """Every rename needs each of :data:`APPROVERS`."""

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(
            *(PolicyRequirement.approval(actor) for actor in APPROVERS), reason="all of them"
        )


async def test_concurrent_approvals_by_different_approvers_all_land(durable: Durable) -> None:
    async with opened(durable) as gov:
        gov.engine.register_policy(EveryApprover())
        await gov.states.put(STATE_ID, ACCOUNT)
        request = await gov.submit(Rename("bea"), state_id=STATE_ID, context=user("ann"))
        errors: list[BaseException] = []

        async def approve(actor: str) -> None:
            try:
                await gov.approve(request.request_id, context=user(actor))
            except Exception as error:  # collected: the assertion names them
                errors.append(error)

        async with anyio.create_task_group() as tg:
            for actor in APPROVERS:
                tg.start_soon(approve, actor)

        assert errors == []
        final = await gov.get(request.request_id)
        assert final.status is RequestStatus.APPROVED
        assert {slot.status for slot in final.approval_requirements} == {ApprovalStatus.APPROVED}
        assert [d.code for d in final.decisions].count(LifecycleDecision.APPROVED) == 1
        assert final.revision == len(APPROVERS)
        assert tuple(await gov.decisions.for_request(request.request_id)) == final.decisions


async def test_a_decision_that_no_longer_holds_fails_after_the_race(durable: Durable) -> None:
    """Cancel and approve at once: one lands; the other is refused on the stored request
    (InvalidTransitionError or the approval's own refusal), never a concurrency error."""
    async with opened(durable) as gov:
        gov.engine.register_policy(EveryApprover())
        await gov.states.put(STATE_ID, ACCOUNT)
        request = await gov.submit(Rename("bea"), state_id=STATE_ID, context=user("ann"))
        outcomes: dict[str, BaseException | None] = {}

        async def attempt(name: str, call: Any) -> None:
            try:
                await call()
            except Exception as error:
                outcomes[name] = error
            else:
                outcomes[name] = None

        async with anyio.create_task_group() as tg:
            tg.start_soon(
                attempt,
                "cancel",
                lambda: gov.cancel(request.request_id, context=user("ann")),
            )
            tg.start_soon(
                attempt,
                "approve",
                lambda: gov.approve(request.request_id, context=user(APPROVERS[0])),
            )

        final = await gov.get(request.request_id)
        assert final.status is RequestStatus.CANCELED
        assert outcomes["cancel"] is None
        if outcomes["approve"] is not None:  # it came second
            assert isinstance(outcomes["approve"], InvalidTransitionError | ValueError), outcomes
        assert tuple(await gov.decisions.for_request(request.request_id)) == final.decisions
