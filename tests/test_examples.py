"""Every registered example runs on asyncio and trio and produces its key outcome."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from examples import EXAMPLES, load
from mutator import ResultStatus
from mutator_governance import (
    ApprovalDecision,
    DecisionCategory,
    LifecycleDecision,
    PendingReason,
    RequestStatus,
    ResolutionOutcome,
    ResolutionStrategy,
)

ROOT = Path(__file__).resolve().parent.parent


def blocked_by(result: Any) -> list[str | None]:
    return [decision.policy_name for decision in result.blocking_decisions]


def check_approval_workflow(request: Any) -> None:
    assert request.status is RequestStatus.APPROVED
    granted = [d for d in request.decisions if d.code is ApprovalDecision.GRANTED]
    assert len(granted) == 2
    assert [d.context.actor_id for d in granted] == ["dana", "carol"]


def check_governed_execution(outcome: dict[str, Any]) -> None:
    first = outcome["first"]
    assert first.executed
    assert first.request.status is RequestStatus.EXECUTED
    assert first.request.resulting_state_version == first.resulting_version
    stale = outcome["stale"]
    assert not stale.executed
    assert stale.resolution.outcome is ResolutionOutcome.REQUIRES_RENEWED_APPROVAL
    assert stale.request.pending_reason is PendingReason.APPROVAL
    assert outcome["renewed"].executed
    compensation = outcome["compensation"]
    assert compensation.executed
    original = compensation.original
    assert original.request_id == first.request.request_id
    assert original.decisions[-1].code is LifecycleDecision.COMPENSATED
    assert compensation.request.request_id in {link.request_id for link in original.execution.links}
    assert outcome["final_flags"] == {"beta-search", "dark-mode"}


def check_billing_quotas(outcome: dict[str, Any]) -> None:
    emergency = outcome["emergency"]
    assert not emergency.ok
    assert emergency.final_state is None
    assert (emergency.success_count, emergency.failure_count) == (1, 1)
    assert blocked_by(emergency.failed) == ["MaxQuotaPolicy"]
    assert blocked_by(outcome["refund"]) == ["PreventNegativeQuotaPolicy"]
    reset = outcome["reset"]
    assert reset.ok
    assert reset.final_state.quotas == {"alice": 0, "bob": 0, "carol": 0}
    assert len(outcome["history"]) == 3  # the reset's steps only: the failed batch wrote none
    stats = outcome["statistics"]
    assert (stats.total_executed, stats.succeeded, stats.failed) == (6, 4, 2)


def check_feature_flags(outcome: dict[str, Any]) -> None:
    assert outcome["enabled"].ok
    assert outcome["correlation_id"] == "launch-42"
    assert outcome["disabled"].ok
    late = outcome["after_hours"]
    assert late.status is ResultStatus.POLICY_BLOCKED
    assert blocked_by(late) == ["CriticalFeatureFlagGovernance"]
    assert late.policy_decisions[0].metadata["composition.blocking"] == ("BusinessHoursPolicy",)
    batch = outcome["batch"]
    assert not batch.ok
    assert batch.final_state is None
    assert [r.status for r in batch.results] == [
        ResultStatus.SUCCEEDED,
        ResultStatus.SUCCEEDED,
        ResultStatus.POLICY_BLOCKED,
    ]
    assert "RequireTwoPersonApprovalPolicy" in (batch.failed.error_message or "")
    assert outcome["history_after_failed_batch"] == outcome["history_before_batch"] == 2
    assert outcome["retry"].ok
    assert outcome["history_after_retry"] == 6
    assert any("policy_blocked" in line for line in outcome["log_lines"])
    assert len(outcome["log_lines"]) == outcome["statistics"].total_executed


def check_iam_roles(outcome: dict[str, Any]) -> None:
    assert outcome["last_admin"].status is ResultStatus.POLICY_BLOCKED
    assert blocked_by(outcome["last_admin"]) == ["PreventLastAdminRemovalPolicy"]
    assert blocked_by(outcome["grant_without_approver"]) == ["RequireTwoPersonApprovalPolicy"]
    assert outcome["grant"].ok
    assert outcome["step_down"].ok
    migration = outcome["migration"]
    assert migration.ok
    roles = migration.final_state.roles
    assert roles["carol"] == {"developer", "manager"}
    assert roles["dave"] == {"developer", "admin"}


def check_workflow_approvals(outcome: dict[str, Any]) -> None:
    from examples.workflow_approvals import StepStatus, WorkflowRejected, WorkflowStarted

    happy = outcome["happy"]
    assert happy.status == "completed"
    assert [s.decided_by for s in happy.steps] == ["alice", "bob", "alice"]
    assert all(s.status is StepStatus.APPROVED for s in happy.steps)
    assert blocked_by(outcome["out_of_order"]) == ["EnforceOrderPolicy"]
    assert blocked_by(outcome["not_a_manager"]) == ["RequireManagerApprovalPolicy"]
    rejected = outcome["rejected"]
    assert rejected.new_state.status == "rejected"
    (alert,) = rejected.side_effects
    assert alert.requires_action
    assert alert.data_as(WorkflowRejected).approved_steps == ("team lead", "finance")
    started, cancelled = outcome["side_effects"]
    assert isinstance(started.data, WorkflowStarted)
    assert started.contract.name == "examples.workflow.started"
    assert cancelled.contract.name == "examples.workflow.rejected"
    assert cancelled.requires_action


def check_policy_composition(outcome: dict[str, Any]) -> None:
    all_ok = outcome["all_of"]
    assert all_ok.ok
    assert all_ok.new_state.audit == ("dana submitted 2.4.0 to staging",)
    assert {e.type for e in all_ok.side_effects} == {
        "audit.release_submitted",
        "release.approvals_checked",
    }
    assert outcome["any_of"].ok
    assert outcome["any_of"].policy_decisions[0].metadata["composition.winning"] == (
        "EmergencyOverridePolicy",
    )
    assert outcome["any_of_denied"].status is ResultStatus.POLICY_BLOCKED
    production = outcome["first_decisive_production"]
    assert production.status is ResultStatus.APPROVAL_REQUIRED
    assert production.policy_decisions[0].metadata["composition.policies"] == (
        "ProductionGuardPolicy",
    )
    assert [e.type for e in outcome["first_decisive_staging"].side_effects] == ["deploy.scheduled"]
    conflict = outcome["conflict"]
    assert conflict.key == "state"
    assert set(conflict.policies) == {"SetOwnerPolicy[alice]", "SetOwnerPolicy[bob]"}
    assert conflict.composition == "ReleaseOwnerConflictGate"


def check_request_lifecycle(outcome: dict[str, Any]) -> None:
    assert outcome["statuses"] == {
        "quota-increase": RequestStatus.APPROVED,
        "monthly-reset": RequestStatus.EXPIRED,
        "checkout-rollout": RequestStatus.CANCELED,
    }
    assert set(outcome["pending_all"]) == {"quota-increase", "monthly-reset", "checkout-rollout"}
    assert set(outcome["pending_quotas"]) == {"quota-increase", "monthly-reset"}
    assert outcome["expired"] == ("monthly-reset",)
    rollout = outcome["requests"]["checkout-rollout"]
    assert [d.code for d in rollout.decisions] == [
        LifecycleDecision.SUBMITTED,
        LifecycleDecision.APPROVED,
        LifecycleDecision.PENDING,
        LifecycleDecision.CANCELED,
    ]


def check_decision_taxonomy(outcome: dict[str, Any]) -> None:
    lifecycle, approval, resolution = (
        DecisionCategory.LIFECYCLE,
        DecisionCategory.APPROVAL,
        DecisionCategory.VERSION_RESOLUTION,
    )
    expected = {
        (lifecycle, "SUBMITTED"),
        (lifecycle, "PENDING"),
        (lifecycle, "APPROVED"),
        (lifecycle, "REJECTED"),
        (approval, "REQUESTED"),
        (approval, "GRANTED"),
        (approval, "REJECTED"),
        (resolution, "VALIDATED"),
        (resolution, "REJECTED_AS_STALE"),
        (resolution, "RENEWED_APPROVAL_REQUIRED"),
        (resolution, "REVALIDATION_REQUIRED"),
    }
    assert outcome["produced"] == expected


def check_versioned_resolution(outcome: dict[str, Any]) -> None:
    assert outcome["versions"] == ("1", "2")
    for resolution in outcome["matching"].values():
        assert resolution.outcome is ResolutionOutcome.EXECUTE_APPROVED_VERSION
        assert not resolution.is_stale
        assert resolution.request.status is RequestStatus.APPROVED
        assert resolution.request.expected_state_version == "1"
    stale = outcome["stale"]
    expected = {
        ResolutionStrategy.REJECT_STALE: (
            ResolutionOutcome.REJECTED_AS_STALE,
            RequestStatus.REJECTED,
            None,
            "1",
        ),
        ResolutionStrategy.REQUIRE_RENEWED_APPROVAL: (
            ResolutionOutcome.REQUIRES_RENEWED_APPROVAL,
            RequestStatus.PENDING,
            PendingReason.APPROVAL,
            "2",
        ),
        ResolutionStrategy.REVALIDATE_ON_LATEST_STATE: (
            ResolutionOutcome.REVALIDATE_ON_LATEST_STATE,
            RequestStatus.PENDING,
            PendingReason.REVALIDATION,
            "2",
        ),
    }
    for strategy, (result, status, reason, version) in expected.items():
        request = stale[strategy].request
        assert stale[strategy].is_stale
        assert stale[strategy].outcome is result
        assert (request.status, request.pending_reason) == (status, reason)
        assert request.expected_state_version == version
        assert request.revision == 2


def check_durable_sqlite(outcome: dict[str, Any]) -> None:
    assert outcome["status"] is RequestStatus.EXECUTED
    assert outcome["limit"] == 150
    assert outcome["history"] == 1
    assert outcome["decisions"] >= 5


def check_changed_mutation(outcome: dict[str, Any]) -> None:
    from examples.changed_mutation import RaiseQuota

    assert outcome["refused"]
    assert outcome["quarantined"]
    assert outcome["untouched"] == 100
    assert outcome["read_as"] == outcome["stored_as"] == RaiseQuota(50)
    assert (outcome["executed"], outcome["limit"]) == (True, 150)


def check_custom_store(outcome: dict[str, Any]) -> None:
    assert outcome["atomic"] is True
    assert outcome["status"] is RequestStatus.EXECUTED
    assert (outcome["limit"], outcome["version"]) == (150, "2")
    assert outcome["log_matches"]
    assert (outcome["history"], outcome["audit"], outcome["repaired"]) == (1, 1, 0)


def check_queries(outcome: dict[str, Any]) -> None:
    assert outcome["approval queue"] == ["grant", "rotate"]
    assert outcome["tagged prod"] == outcome["security and prod"] == ["rotate"]
    assert outcome["module-wide or wider"] == ["rotate", "quota"]
    assert outcome["ticket SEC-1"] == ["grant"]
    assert outcome["carol inbox"] == [("grant", "role:security"), ("rotate", "actor:carol")]
    assert outcome["sam inbox before"] == []
    assert outcome["sam inbox after"] == [("rotate", "role:sre")]
    assert outcome["open sre slots"] == ["rotate"]
    assert outcome["outcomes"] == [("quota", "EXECUTED")]


def check_redis_queries(outcome: dict[str, Any]) -> None:
    if "skipped" in outcome:
        assert outcome["skipped"].startswith("skipped: ")
    else:
        check_queries(outcome)


def check_postgres_grouped_writes(outcome: dict[str, Any]) -> None:
    if "skipped" in outcome:
        assert outcome["skipped"].startswith("skipped: ")
        return
    assert outcome["refused"] == ["raise-0"], "only the taken id is refused"
    assert outcome["executed"] == 60
    assert outcome["statuses"] == ["EXECUTED"]
    assert outcome["total_raise"] == 1 + sum(n % 5 + 1 for n in range(1, 60))


def check_observability(outcome: dict[str, Any]) -> None:
    if "skipped" in outcome:  # the OpenTelemetry SDK is not installed
        pytest.importorskip("opentelemetry.sdk")
        raise AssertionError(f"skipped although the SDK is installed: {outcome['skipped']}")
    *executions, request = outcome["spans"]
    assert request.name == "PUT /quotas/acme"
    assert [s.name for s in executions] == ["mutator.execute"] * 3
    assert all(s.parent.span_id == request.context.span_id for s in executions)
    statuses = [s.attributes["mutator.status"] for s in executions]
    assert statuses == ["succeeded", "policy_blocked", "failed"]
    assert [e.name for e in executions[1].events] == ["mutator.policy.denied"]
    assert executions[2].status.status_code.name == "ERROR"
    assert outcome["histogram"] == {
        "quota.set_limit/succeeded": 1,
        "quota.set_limit/policy_blocked": 1,
        "quota.set_limit/failed": 1,
    }
    assert outcome["statistics"].total_executed == 3
    assert "does not fit" in outcome["failure"]


def check_governance_observability(outcome: dict[str, Any]) -> None:
    if "skipped" in outcome:  # the OpenTelemetry SDK is not installed
        pytest.importorskip("opentelemetry.sdk")
        raise AssertionError(f"skipped although the SDK is installed: {outcome['skipped']}")
    spans = {s.name: s for s in outcome["spans"]}
    submit = spans["mutator.governance.submit"]
    assert submit.parent.span_id == spans["POST /quota-requests"].context.span_id
    for name in ("mutator.governance.approve", "mutator.governance.worker.execute"):
        assert [link.context.span_id for link in spans[name].links] == [submit.context.span_id]
    run, execute = spans["mutator.governance.worker.execute"], spans["mutator.governance.execute"]
    assert execute.parent.span_id == run.context.span_id
    assert spans["mutator.execute"].parent.span_id == execute.context.span_id
    assert outcome["request"].status.name == "EXECUTED"
    assert outcome["report"].executed == 1


def check_worker_fleet(outcome: dict[str, Any]) -> None:
    sqlite, memory = outcome["sqlite"], outcome["memory"]
    assert sqlite["executed"] == 4
    assert sqlite["quarantined"] == ["raise-2"]
    assert sqlite["healthy_executed"]
    assert (memory["outages"], memory["executed"]) == (2, 1)
    assert memory["status"] is RequestStatus.EXECUTED


CHECKS: dict[str, Callable[[Any], None]] = {
    "worker_fleet": check_worker_fleet,
    "durable_sqlite": check_durable_sqlite,
    "changed_mutation": check_changed_mutation,
    "custom_store": check_custom_store,
    "queries": check_queries,
    "redis_queries": check_redis_queries,
    "postgres_grouped_writes": check_postgres_grouped_writes,
    "observability": check_observability,
    "governance_observability": check_governance_observability,
    "approval_workflow": check_approval_workflow,
    "governed_execution": check_governed_execution,
    "billing_quotas": check_billing_quotas,
    "feature_flags": check_feature_flags,
    "iam_roles": check_iam_roles,
    "workflow_approvals": check_workflow_approvals,
    "policy_composition": check_policy_composition,
    "request_lifecycle": check_request_lifecycle,
    "decision_taxonomy": check_decision_taxonomy,
    "versioned_resolution": check_versioned_resolution,
}

CORE = ("billing_quotas", "feature_flags", "iam_roles", "workflow_approvals", "policy_composition")


def test_every_example_has_a_check() -> None:
    assert set(CHECKS) == set(EXAMPLES)


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(EXAMPLES))
async def test_example_key_outcome(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    outcome = await load(name)()
    CHECKS[name](outcome)
    printed = capsys.readouterr().out
    assert printed.strip()
    if name in CORE:
        assert "metrics:" in printed


@pytest.mark.parametrize("name", ["observability", "governance_observability"])
def test_observability_example_skips_in_one_line_without_the_sdk(name: str) -> None:
    code = (
        "import sys; sys.modules['opentelemetry.sdk'] = None\n"
        "import anyio; from examples import load\n"
        f"print(anyio.run(load({name!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    first, returned = done.stdout.splitlines()
    assert first.startswith("skipped: the OpenTelemetry SDK is not installed")
    assert "skipped" in returned


def test_running_all_examples_from_the_command_line() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    for name in EXAMPLES:
        assert f"] {name} ===" in completed.stdout
    assert f"{len(EXAMPLES)} example(s) ran." in completed.stdout
