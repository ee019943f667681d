"""Workflow approvals: ordered steps, manager-only approvers, and typed side effects.

The state is one approval workflow: its id, initiator, status and ordered steps. Starting
a workflow (MEDIUM risk) announces a ``workflow.started`` side effect; approving a step is
HIGH risk; rejecting the whole workflow is CRITICAL and announces a critical
``workflow.rejected`` side effect that requires action. Both side effects carry typed
payload classes registered with ``side_effect_payload``, so they keep their class when
stored and read back.

* ``EnforceOrderPolicy``: step k may only be approved once step k-1 is approved;
* ``RequireManagerApprovalPolicy``: only managers (``alice``, ``bob``) approve steps.

Scenarios: the happy path approves three steps in order (an out-of-order attempt is
blocked); in the rejected path a non-manager's approval is blocked and the security lead
rejects the workflow; the side-effects scenario shows the typed payloads.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

import attrs

from mutator import (
    EngineOptions,
    EngineStatistics,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationIntent,
    MutationPolicy,
    MutationResult,
    PolicyDecision,
    RiskLevel,
    SideEffect,
    side_effect_payload,
)

MANAGERS = frozenset({"alice", "bob"})


class StepStatus(enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


@attrs.frozen
class Step:
    name: str
    status: StepStatus = StepStatus.PENDING
    decided_by: str | None = None


@attrs.frozen
class Workflow:
    workflow_id: str | None = None
    initiator: str | None = None
    status: str = "not started"
    steps: tuple[Step, ...] = ()


@side_effect_payload("examples.workflow.started", version=1)
@attrs.frozen
class WorkflowStarted:
    workflow_id: str
    initiator: str
    steps: tuple[str, ...]


@side_effect_payload("examples.workflow.rejected", version=1)
@attrs.frozen
class WorkflowRejected:
    workflow_id: str
    rejected_by: str
    reason: str
    approved_steps: tuple[str, ...]


@attrs.frozen
class StartWorkflow(Mutation[Workflow]):
    workflow_id: str
    initiator: str
    steps: tuple[str, ...]
    intent: ClassVar[MutationIntent] = MutationIntent(
        "workflow.start", category="workflow", risk=RiskLevel.MEDIUM
    )

    def apply(self, state: Workflow) -> MutationResult[Workflow]:
        started = Workflow(
            self.workflow_id, self.initiator, "in progress", tuple(Step(s) for s in self.steps)
        )
        announce = SideEffect(
            "workflow.started",
            f"{self.initiator} started {self.workflow_id}",
            data=WorkflowStarted(self.workflow_id, self.initiator, self.steps),
        )
        return MutationResult.success(started, side_effects=[announce])


@attrs.frozen
class ApproveStep(Mutation[Workflow]):
    index: int
    approver: str
    intent: ClassVar[MutationIntent] = MutationIntent(
        "workflow.approve_step", category="workflow", risk=RiskLevel.HIGH
    )

    def apply(self, state: Workflow) -> Workflow:
        steps = list(state.steps)
        steps[self.index] = attrs.evolve(
            steps[self.index], status=StepStatus.APPROVED, decided_by=self.approver
        )
        done = all(step.status is StepStatus.APPROVED for step in steps)
        return attrs.evolve(state, steps=tuple(steps), status="completed" if done else state.status)


@attrs.frozen
class RejectWorkflow(Mutation[Workflow]):
    rejected_by: str
    reason: str
    intent: ClassVar[MutationIntent] = MutationIntent(
        "workflow.reject", category="workflow", risk=RiskLevel.CRITICAL
    )

    def apply(self, state: Workflow) -> MutationResult[Workflow]:
        steps = tuple(
            attrs.evolve(s, status=StepStatus.REJECTED, decided_by=self.rejected_by)
            if s.status is StepStatus.PENDING
            else s
            for s in state.steps
        )
        assert state.workflow_id is not None
        alert = SideEffect.critical(
            "workflow.rejected",
            f"{self.rejected_by} rejected {state.workflow_id}: notify the initiator",
            WorkflowRejected(
                state.workflow_id,
                self.rejected_by,
                self.reason,
                tuple(s.name for s in state.steps if s.status is StepStatus.APPROVED),
            ),
        )
        rejected = attrs.evolve(state, steps=steps, status="rejected")
        return MutationResult.success(rejected, side_effects=[alert])


class EnforceOrderPolicy(MutationPolicy[Workflow]):
    """Steps are approved in order."""

    priority = 100

    def evaluate(self, mutation: Any, state: Workflow, context: MutationContext) -> PolicyDecision:
        if not isinstance(mutation, ApproveStep) or mutation.index == 0:
            return PolicyDecision.allow()
        previous = state.steps[mutation.index - 1]
        if previous.status is not StepStatus.APPROVED:
            return PolicyDecision.deny(f"step {previous.name!r} must be approved first")
        return PolicyDecision.allow()


class RequireManagerApprovalPolicy(MutationPolicy[Workflow]):
    """Only managers approve workflow steps."""

    priority = 90

    def evaluate(self, mutation: Any, state: Workflow, context: MutationContext) -> PolicyDecision:
        if isinstance(mutation, ApproveStep) and mutation.approver not in MANAGERS:
            return PolicyDecision.deny(f"{mutation.approver} is not a manager")
        return PolicyDecision.allow()


def show_metrics(stats: EngineStatistics) -> None:
    print("metrics:")
    print(
        f"  executed={stats.total_executed} succeeded={stats.succeeded} failed={stats.failed} "
        f"p50={stats.p50 * 1000:.2f}ms p95={stats.p95 * 1000:.2f}ms"
    )


def show(workflow: Workflow) -> None:
    print(f"  {workflow.workflow_id} ({workflow.status}):")
    for number, step in enumerate(workflow.steps, 1):
        by = f" by {step.decided_by}" if step.decided_by else ""
        print(f"    {number}. {step.name:<10} {step.status.name}{by}")


def show_side_effect(effect: SideEffect) -> None:
    contract = effect.contract
    label = f"{contract.name} v{contract.version}" if contract else "untyped"
    severity = effect.severity.name
    print(f"  side effect {effect.type} [{severity}] requires_action={effect.requires_action}")
    print(f"    payload {type(effect.data).__name__} ({label}): {effect.data}")


async def approve(
    engine: MutationEngine, state: Workflow, index: int, approver: str
) -> MutationResult[Workflow]:
    context = MutationContext.user(approver, reason=f"approve step {index + 1}")
    result = await engine.execute(
        ApproveStep(index, approver), state, context=context, state_id=state.workflow_id
    )
    outcome = "approved" if result.ok else f"{result.status.name}: {result.error_message}"
    print(f"  {approver} approves step {index + 1}: {outcome}")
    return result


async def start(
    engine: MutationEngine, workflow_id: str, initiator: str
) -> MutationResult[Workflow]:
    context = MutationContext.user(initiator, reason="new purchase order")
    return await engine.execute(
        StartWorkflow(workflow_id, initiator, ("team lead", "finance", "director")),
        Workflow(),
        context=context,
        state_id=workflow_id,
    )


async def main() -> dict[str, Any]:
    engine: MutationEngine = MutationEngine(
        EngineOptions.strict(), policies=[EnforceOrderPolicy(), RequireManagerApprovalPolicy()]
    )

    print("1) happy path")
    started = await start(engine, "PO-1001", "erin")
    assert started.new_state is not None
    state = started.new_state
    out_of_order = await approve(engine, state, 2, "alice")
    for index, approver in enumerate(["alice", "bob", "alice"]):
        result = await approve(engine, state, index, approver)
        assert result.new_state is not None
        state = result.new_state
    show(state)
    happy = state

    print("2) rejected path")
    started = await start(engine, "PO-1002", "frank")
    assert started.new_state is not None
    state = started.new_state
    for index, approver in enumerate(["alice", "bob"]):
        result = await approve(engine, state, index, approver)
        assert result.new_state is not None
        state = result.new_state
    not_a_manager = await approve(engine, state, 2, "mallory")
    lead = MutationContext.user("sam", roles=["security-lead"], reason="vendor failed review")
    rejected = await engine.execute(
        RejectWorkflow("sam", "vendor failed the security review"),
        state,
        context=lead,
        state_id=state.workflow_id,
    )
    assert rejected.new_state is not None
    print(f"  security lead sam rejects the workflow: {rejected.status.name}")
    show(rejected.new_state)
    for effect in rejected.side_effects:
        show_side_effect(effect)

    print("3) side effects with typed payloads")
    started = await start(engine, "PO-1003", "gina")
    assert started.new_state is not None
    lead = MutationContext.user("sam", roles=["security-lead"], reason="duplicate order")
    cancelled = await engine.execute(
        RejectWorkflow("sam", "duplicate of PO-1001"),
        started.new_state,
        context=lead,
        state_id="PO-1003",
    )
    effects = started.side_effects + cancelled.side_effects
    for effect in effects:
        show_side_effect(effect)
    rejection = cancelled.side_effects[0].data_as(WorkflowRejected)
    assert rejection is not None
    print(f"  typed access: data_as(WorkflowRejected).reason = {rejection.reason!r}")
    history = await engine.history("PO-1003")
    recorded = [effect.type for entry in history.entries for effect in entry.side_effects]
    print(f"  recorded in history: {recorded}")

    stats = await engine.statistics()
    show_metrics(stats)
    return {
        "happy": happy,
        "out_of_order": out_of_order,
        "not_a_manager": not_a_manager,
        "rejected": rejected,
        "side_effects": effects,
        "statistics": stats,
    }
