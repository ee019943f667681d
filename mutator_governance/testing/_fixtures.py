"""A tiny built-in domain and builders for requests and decisions used by the contract suites.

The suites must not depend on a user's mutations, so they use :class:`SampleState`,
:class:`SampleMutation` and :class:`SamplePayload`. A durable backend that stores mutations
and states through a :class:`~mutator_governance.MutationRegistry` can get one that knows
them from :func:`sample_registry`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import attrs

from mutator import (
    BlastRadius,
    BlastRadiusScope,
    Mutation,
    MutationContext,
    MutationIntent,
    PolicyRequirement,
    RiskLevel,
    Severity,
    SideEffect,
    side_effect_payload,
)
from mutator.values import to_tuple, utc_now

from .._approvals import ApprovalRequirement, RejectionReason
from .._decisions import DecisionCode, RequestDecision
from .._enums import (
    ApprovalDecision,
    ApprovalStatus,
    CompensationKind,
    CompensationTrigger,
    ExecutionKind,
    LifecycleDecision,
    LinkType,
    PendingReason,
    RequestStatus,
    ResolutionDecision,
)
from .._registry import MutationRegistry
from .._request import (
    CompensationPlan,
    ExecutionClaim,
    ExecutionDetails,
    ExecutionLink,
    MutationRequest,
)

__all__ = [
    "SAMPLE_MUTATION_TYPE",
    "SAMPLE_STATE_TYPE",
    "SamplePayload",
    "SampleMutation",
    "SampleState",
    "sample_decision",
    "sample_registry",
    "sample_request",
    "sample_rich_request",
]

SAMPLE_MUTATION_TYPE = "testing.sample"
"""The registry name of :class:`SampleMutation` (and ``mutation_type`` of sample requests)."""

SAMPLE_STATE_TYPE = "testing.SampleState"
"""The ``state_type`` of sample requests (the state class name, as ``Governance.submit`` does)."""

SAMPLE_STATE_ID = "sample:1"

_IST = timezone(timedelta(hours=5, minutes=30))
_BRT = timezone(timedelta(hours=-3))


@attrs.frozen
class SampleState:
    """The state type of the contract suites."""

    name: str = "sample"
    value: int = 0
    tags: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)


@attrs.frozen
class SampleMutation(Mutation[SampleState]):
    """Sets :attr:`SampleState.value`; the mutation type of every sample request."""

    value: int = 1
    note: str | None = None
    labels: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)
    intent: ClassVar[MutationIntent] = MutationIntent(
        "testing.sample.set",
        category="testing",
        description="Set the value of a sample state",
        tags=frozenset({"testing"}),
    )

    def apply(self, state: SampleState) -> SampleState:
        return attrs.evolve(state, value=self.value)


@side_effect_payload("mutator.testing.sample", version=1)
@attrs.frozen
class SamplePayload:
    """A typed side-effect payload; it must come back from a store as this class."""

    channel: str
    attempts: int = 1
    recipients: tuple[str, ...] = attrs.field(default=(), converter=to_tuple)


def sample_registry() -> MutationRegistry:
    """A new registry with :class:`SampleMutation` and :class:`SampleState` registered."""
    registry = MutationRegistry()
    registry.register(SampleMutation, name=SAMPLE_MUTATION_TYPE)
    registry.register_state(SampleState, name=SAMPLE_STATE_TYPE)
    return registry


def sample_decision(
    code: DecisionCode = LifecycleDecision.SUBMITTED,
    *,
    actor_id: str = "alice",
    reason: str | None = None,
    timestamp: datetime | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> RequestDecision:
    """A decision by user ``actor_id`` (with role ``operator``) at ``timestamp`` (default now)."""
    moment = timestamp if timestamp is not None else utc_now()
    context = MutationContext.user(actor_id, reason=reason, roles=("operator",), timestamp=moment)
    return RequestDecision(code, context, reason, moment, metadata or {})


def sample_request(
    request_id: str | None = None,
    *,
    state_id: str = SAMPLE_STATE_ID,
    status: RequestStatus = RequestStatus.PENDING,
    pending_reason: PendingReason | None = None,
    actor_id: str = "alice",
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    value: int = 1,
    metadata: Mapping[str, Any] | None = None,
    **changes: Any,
) -> MutationRequest:
    """A valid request for :class:`SampleMutation` ``(value)`` on ``state_id``.

    ``request_id`` defaults to a random hex id, ``created_at`` to now and ``updated_at`` to
    ``created_at``. A ``PENDING`` request without ``pending_reason`` waits for ``APPROVAL``.
    Any other :class:`~mutator_governance.MutationRequest` field can be given in
    ``changes`` (``decisions=...``, ``claim=...``, ``revision=...``).
    """
    created = created_at if created_at is not None else utc_now()
    if status is RequestStatus.PENDING and pending_reason is None:
        pending_reason = PendingReason.APPROVAL
    mutation = SampleMutation(value)
    request = MutationRequest(
        request_id=request_id if request_id is not None else uuid.uuid4().hex,
        state_id=state_id,
        state_type=SAMPLE_STATE_TYPE,
        mutation_type=SAMPLE_MUTATION_TYPE,
        mutation=mutation,
        intent=mutation.intent,
        context=MutationContext.user(actor_id, reason="contract test", timestamp=created),
        status=status,
        created_at=created,
        updated_at=updated_at if updated_at is not None else created,
        pending_reason=pending_reason,
        metadata=metadata or {},
    )
    return attrs.evolve(request, **changes) if changes else request


def sample_rich_request(
    request_id: str | None = None, *, state_id: str = SAMPLE_STATE_ID
) -> MutationRequest:
    """A request with every optional field set, for round-trip tests of durable stores.

    Datetimes use several UTC offsets (with microseconds); metadata holds ints (one beyond
    2**53), floats (whole and huge ones too), bools, None, unicode text, tuples, lists and
    nested mappings; there are policy and approval requirements (with a structured
    rejection), decisions of each category with metadata, side effects, a claim,
    compensation execution details and a W3C trace context.
    """
    created = datetime(2024, 3, 10, 8, 15, 30, 123456, tzinfo=_IST)
    updated = datetime(2024, 3, 10, 4, 45, 1, 654321, tzinfo=UTC)
    context = MutationContext.user(
        "alice",
        name="Alice Example",
        reason="raise the sample value",
        roles=("sre", "operator"),
        groups=("platform",),
        correlation_id="corr-1",
        causation_id="cause-1",
        session_id="session-1",
        source_address="192.0.2.10",
        user_agent="contract-suite/1.0",
        timestamp=datetime(2024, 3, 9, 23, 59, 59, 999999, tzinfo=_BRT),
        metadata={"ticket": 4711, "ratio": 0.25, "urgent": True, "nothing": None},
    )
    intent = MutationIntent(
        "testing.sample.set",
        category="testing",
        description="a richer intent than the class default",
        risk=RiskLevel.HIGH,
        reversible=False,
        blast_radius=BlastRadius(BlastRadiusScope.MODULE, 12, "one module"),
        tags=frozenset({"testing", "rich"}),
        metadata={"owner": "team-a", "weight": 3},
    )
    approver = MutationContext.user("carol", roles=("sre",))
    approvals = (
        ApprovalRequirement(
            approval_id="approval-1",
            step=1,
            approver_id="carol",
            quorum_group="r2-s1-q1",
            required_approvals=2,
            expires_at=datetime(2024, 3, 12, 0, 0, tzinfo=_BRT),
            status=ApprovalStatus.APPROVED,
            round=2,
            description="two of carol, dave or an sre",
            decided_at=datetime(2024, 3, 10, 3, 0, 0, 1, tzinfo=UTC),
            decided_by="carol",
            decision_reason="looks right",
        ),
        ApprovalRequirement(
            approval_id="approval-2",
            step=1,
            approver_id="dave",
            quorum_group="r2-s1-q1",
            required_approvals=2,
            status=ApprovalStatus.REJECTED,
            round=2,
            decided_at=datetime(2024, 3, 10, 3, 30, tzinfo=UTC),
            decided_by="dave",
            rejection=RejectionReason(
                "risk", "too risky today", category="change-freeze", metadata={"score": 7}
            ),
        ),
        ApprovalRequirement(approval_id="approval-3", step=2, role="sre", round=2, group=None),
        ApprovalRequirement(
            approval_id="approval-4",
            step=2,
            group="platform",
            status=ApprovalStatus.SATISFIED,
            round=2,
        ),
    )
    decisions = (
        RequestDecision(LifecycleDecision.SUBMITTED, context, context.reason, created),
        RequestDecision(
            ApprovalDecision.REQUESTED,
            MutationContext.system(correlation_id="corr-1"),
            None,
            created,
            {"approval_ids": ("approval-1", "approval-2"), "round": 2},
        ),
        RequestDecision(
            ApprovalDecision.GRANTED,
            approver,
            "looks right",
            datetime(2024, 3, 10, 3, 0, 0, 1, tzinfo=UTC),
            {"approval_id": "approval-1", "step": 1, "weight": 0.5},
        ),
        RequestDecision(
            ResolutionDecision.VALIDATED,
            MutationContext.system(correlation_id="corr-1"),
            None,
            datetime(2024, 3, 10, 4, 0, tzinfo=_IST),
            {"expected_version": "3", "actual_version": "3", "strategy": None},
        ),
        RequestDecision(
            LifecycleDecision.REJECTED,
            MutationContext.system(correlation_id="corr-1"),
            "p1: denied; p2: denied",
            datetime(2024, 3, 10, 4, 30, tzinfo=UTC),
            {"blocking_policies": ("p1", "p2")},
        ),
    )
    compensation = CompensationPlan(
        "original-1",
        kind=CompensationKind.FORWARD_CORRECTION,
        trigger=CompensationTrigger.BATCH_FAILURE,
        batch_id="batch-1",
        related_request_ids=("original-1", "original-2"),
        reason="undo the batch",
    )
    link = ExecutionLink(
        "original-1",
        LinkType.COMPENSATES,
        ExecutionKind.COMPENSATION,
        datetime(2024, 3, 10, 4, 40, tzinfo=_BRT),
        CompensationKind.FORWARD_CORRECTION,
        CompensationTrigger.BATCH_FAILURE,
        "batch-1",
    )
    return MutationRequest(
        request_id=request_id if request_id is not None else uuid.uuid4().hex,
        state_id=state_id,
        state_type=SAMPLE_STATE_TYPE,
        mutation_type=SAMPLE_MUTATION_TYPE,
        mutation=SampleMutation(42, "rich", ("x", "y")),
        intent=intent,
        context=context,
        status=RequestStatus.EXECUTING,
        created_at=created,
        updated_at=updated,
        pending_reason=None,
        policy_requirements=(
            PolicyRequirement.approval(
                approvers=("carol", "dave"),
                role="sre",
                required_approvals=2,
                expires_at=datetime(2024, 3, 12, tzinfo=_BRT),
                reason="two eyes",
            ),
            PolicyRequirement(
                type="external_check",
                description="ticket must be open",
                data={"ticket": 4711, "systems": ("billing", "crm"), "strict": False},
            ),
        ),
        approval_requirements=approvals,
        decisions=decisions,
        revision=0,
        expected_state_version="3",
        resulting_state_version="4",
        expires_at=datetime(2024, 3, 17, 8, 0, tzinfo=_BRT),
        executed_at=datetime(2024, 3, 10, 4, 44, 59, 500000, tzinfo=UTC),
        metadata={
            "int": 7,
            "negative": -3,
            "big": 2**53 + 1,
            "float": 1.25,
            "whole_float": 2.0,
            "huge_float": 1e300,
            "bool": True,
            "none": None,
            "text": 'ünïcode ✓ "quoted" \\ back',
            "tuple": (1, "two", (3.0, None)),
            "list": [1, [2, 3]],
            "nested": {"inner": {"n": 1, "pair": (True, False)}},
            "empty": {},
        },
        side_effects=(
            SideEffect(
                "email",
                "notify the owner",
                Severity.WARNING,
                {"to": "owner@example.com", "count": 2},
                timestamp=datetime(2024, 3, 10, 4, 45, tzinfo=UTC),
            ),
            SideEffect(
                "page",
                "wake someone up",
                Severity.CRITICAL,
                None,
                True,
                datetime(2024, 3, 10, 10, 15, tzinfo=_IST),
            ),
        ),
        execution=ExecutionDetails(ExecutionKind.COMPENSATION, compensation, (link,)),
        claim=ExecutionClaim(
            "worker-1",
            datetime(2024, 3, 10, 4, 44, tzinfo=UTC),
            datetime(2024, 3, 10, 4, 49, tzinfo=UTC),
            revalidating=True,
            token="claim-token-1",
        ),
        approval_round=2,
        trace_context={
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "vendor=opaque",
        },
    )
