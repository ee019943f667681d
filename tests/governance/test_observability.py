"""Governance tracing, metrics and structured change logs (``mutator_governance.otel``).

Two ``Governance`` objects over the same in-memory stores stand for two processes (a
submitter and an approver running the worker): the worker's span must link to the submit
span only through the trace context stored on the request.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import attrs
import pytest

from mutator import (
    Mutation,
    MutationContext,
    MutationEngine,
    MutationIntent,
    PolicyDecision,
    PolicyRequirement,
)
from mutator.otel import instrument as instrument_engine
from mutator_governance import (
    CHANGES_LOGGER,
    ApprovalNotFoundError,
    Governance,
    InMemoryGovernanceStore,
    MutationRegistry,
    RequestStatus,
)

from .conftest import STATE_ID, Clock, IncreaseQuota, Quotas, Rules, build_world

pytest.importorskip("opentelemetry.sdk")
from mutator_governance.otel import instrument

pytestmark = pytest.mark.anyio


@attrs.frozen
class Explodes(Mutation[Quotas]):
    """A mutation whose ``apply`` always fails."""

    intent: ClassVar[MutationIntent] = MutationIntent("quota.explode")

    def apply(self, state: Quotas) -> Quotas:
        raise RuntimeError("boom")


def governance_over(store: InMemoryGovernanceStore, clock: Clock) -> Governance:
    """One "process": its own engine and registry over the shared stores."""
    engine: MutationEngine[Any] = MutationEngine(audit=store.audit, history=store.history)
    registry = MutationRegistry()
    registry.register(IncreaseQuota, name="quota.increase")
    registry.register(Explodes, name="quota.explode")
    return Governance(
        engine,
        registry=registry,
        requests=store.requests,
        decisions=store.decisions,
        states=store.states,
        committer=store.committer,
        audit=store.audit,
        clock=clock,
    )


def user(actor: str) -> MutationContext:
    return MutationContext.user(actor, reason=f"{actor} decides")


@pytest.fixture
async def processes(tracing: Any, metering: Any) -> tuple[Governance, Governance]:
    """A submitter and an approver-worker, both instrumented, sharing one store."""
    store = InMemoryGovernanceStore()
    clock = Clock()
    submitter, worker = governance_over(store, clock), governance_over(store, clock)
    for gov in (submitter, worker):
        Rules(gov.engine).set(PolicyDecision.require_approval(PolicyRequirement.approval("carol")))
        instrument(gov, tracer_provider=tracing.provider, meter_provider=metering.provider)
    instrument_engine(worker.engine, tracer_provider=tracing.provider)
    await store.states.put(STATE_ID, Quotas({"bob": 1}))
    return submitter, worker


def attribute(span: Any, key: str) -> Any:
    return span.attributes.get(key)


class TestTracing:
    async def test_worker_execution_links_to_the_submit_span_across_processes(
        self, processes: tuple[Governance, Governance], tracing: Any
    ) -> None:
        submitter, worker = processes
        request = await submitter.submit(
            IncreaseQuota("bob", 5), state_id=STATE_ID, context=user("alice")
        )
        assert request.trace_context["traceparent"]
        await worker.approve(request.request_id, context=user("carol"))
        report = await worker.run_worker(until_idle=True, poll_interval=0)
        assert report.executed == 1

        (submit,) = tracing.spans("mutator.governance.submit")
        (approve,) = tracing.spans("mutator.governance.approve")
        (run,) = tracing.spans("mutator.governance.worker.execute")
        (execute,) = tracing.spans("mutator.governance.execute")
        (claim,) = tracing.spans("mutator.governance.claim")
        (engine_span,) = tracing.spans("mutator.execute")
        for span in (submit, approve, run, execute):
            assert attribute(span, "mutator.governance.request_id") == request.request_id
        assert attribute(submit, "mutator.governance.actor") == "alice"
        assert attribute(submit, "mutator.governance.status") == "pending"
        assert attribute(approve, "mutator.governance.actor") == "carol"
        assert attribute(approve, "mutator.governance.status") == "approved"
        assert attribute(execute, "mutator.governance.status") == "executed"
        assert attribute(run, "mutator.governance.outcome") == "executed"
        # the worker starts a new trace that links back to the submit, as does the approval
        assert run.parent is None
        assert run.context.trace_id != submit.context.trace_id
        for span in (run, approve):
            assert [link.context.span_id for link in span.links] == [submit.context.span_id]
        # execute → claim, engine execution and commits nest under the worker span
        assert execute.parent.span_id == run.context.span_id
        assert claim.parent.span_id == execute.context.span_id
        assert engine_span.parent.span_id == execute.context.span_id
        commits = {
            attribute(s, "mutator.governance.operation"): s
            for s in tracing.spans("mutator.governance.commit")
            if s.context.trace_id == run.context.trace_id
        }
        assert commits["claimed"].parent.span_id == claim.context.span_id
        assert commits["executed"].parent.span_id == execute.context.span_id

    async def test_a_failing_mutation_marks_the_execute_span_as_error(
        self, processes: tuple[Governance, Governance], tracing: Any
    ) -> None:
        from opentelemetry.trace import StatusCode

        submitter, worker = processes
        for gov in processes:
            gov.engine.unregister_policy("rule1")
        request = await submitter.submit(Explodes(), state_id=STATE_ID, context=user("alice"))
        result = await worker.execute(request.request_id)
        assert result.request.status is RequestStatus.FAILED
        (execute,) = tracing.spans("mutator.governance.execute")
        assert execute.status.status_code is StatusCode.ERROR
        assert attribute(execute, "mutator.governance.status") == "failed"
        assert tracing.spans("mutator.execute")[0].status.status_code is StatusCode.ERROR

    async def test_an_operation_that_raises_records_the_error(
        self, processes: tuple[Governance, Governance], tracing: Any
    ) -> None:
        from opentelemetry.trace import StatusCode

        submitter, _ = processes
        request = await submitter.submit(
            IncreaseQuota("bob", 5), state_id=STATE_ID, context=user("alice")
        )
        with pytest.raises(ApprovalNotFoundError, match="no open approval"):
            await submitter.approve(request.request_id, context=user("alice"))
        (approve,) = tracing.spans("mutator.governance.approve")
        assert approve.status.status_code is StatusCode.ERROR
        assert attribute(approve, "error.type").startswith("mutator_governance.")

    async def test_no_spans_and_no_trace_context_without_instrumentation(
        self, tracing: Any
    ) -> None:
        world = await build_world()
        assert world.gov.telemetry is None
        instrumentation = instrument(world.gov, tracer_provider=tracing.provider)
        instrumentation.uninstrument()
        assert not instrumentation.active
        request = await world.submit()
        await world.gov.execute(request.request_id)
        assert request.trace_context == {}
        assert tracing.spans() == []


class TestMetrics:
    async def test_operations_worker_outcomes_claims_and_pending_gauge(
        self, processes: tuple[Governance, Governance], metering: Any
    ) -> None:
        submitter, worker = processes
        first = await submitter.submit(
            IncreaseQuota("bob", 5), state_id=STATE_ID, context=user("alice")
        )
        await submitter.submit(IncreaseQuota("bob", 6), state_id=STATE_ID, context=user("alice"))
        await worker.approve(first.request_id, context=user("carol"))
        await worker.run_worker(until_idle=True, poll_interval=0)

        operations = metering.points("mutator.governance.operations")
        op = "mutator.governance.operation"
        outcome = "mutator.governance.outcome"
        assert operations[frozenset({(op, "submit"), (outcome, "pending")})].value == 2
        assert operations[frozenset({(op, "approve"), (outcome, "approved")})].value == 1
        assert operations[frozenset({(op, "execute"), (outcome, "executed")})].value == 1
        executions = metering.points("mutator.governance.worker.executions")
        assert executions[frozenset({(outcome, "executed")})].value == 1
        assert next(iter(metering.points("mutator.governance.worker.claims").values())).value == 1
        # one gauge per meter: the first instrumented governance reports it
        assert submitter.telemetry is not None
        await submitter.telemetry.refresh(submitter.requests)
        pending = metering.points("mutator.governance.pending_approvals")
        assert next(iter(pending.values())).value == 1


class TestChangeLogs:
    async def test_every_state_change_logs_one_structured_record(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        world = await build_world()
        caplog.set_level(logging.INFO, logger=CHANGES_LOGGER)
        request = await world.submit()
        await world.gov.execute(request.request_id)
        records = [r for r in caplog.records if r.name == CHANGES_LOGGER]
        fields = [(r.operation, r.status, r.actor) for r in records]  # type: ignore[attr-defined]
        assert fields == [
            ("submitted", "approved", "alice"),
            ("claimed", "executing", "system"),
            ("executed", "executed", "system"),
        ]
        for record in records:
            assert record.levelno == logging.INFO
            assert record.request_id == request.request_id  # type: ignore[attr-defined]
            assert record.duration >= 0  # type: ignore[attr-defined]
            assert request.request_id in record.getMessage()

    async def test_the_actor_of_a_human_decision_is_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        world = await build_world()
        request = await world.submit()
        caplog.set_level(logging.INFO, logger=CHANGES_LOGGER)
        await world.gov.cancel(request.request_id, context=world.ctx("dave"))
        (record,) = [r for r in caplog.records if r.name == CHANGES_LOGGER]
        assert (record.operation, record.status, record.actor) == (  # type: ignore[attr-defined]
            "canceled",
            "canceled",
            "dave",
        )
