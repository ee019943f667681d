"""Version resolution: what to do with a request whose state may have moved on."""

from __future__ import annotations

from datetime import datetime

import attrs

from mutator import MutationContext

from ._decisions import RequestDecision
from ._enums import (
    PendingReason,
    RequestStatus,
    ResolutionDecision,
    ResolutionOutcome,
    ResolutionStrategy,
)
from ._errors import RequestNotExecutableError
from ._request import MutationRequest
from ._transitions import record, transition
from ._workflow import fresh_round

__all__ = ["Resolution", "resolve_version"]


@attrs.frozen
class Resolution:
    """The outcome of resolving a request against the current state version."""

    request: MutationRequest
    outcome: ResolutionOutcome
    expected_version: str | None
    current_version: str
    is_stale: bool
    strategy: ResolutionStrategy

    @property
    def executes(self) -> bool:
        """Whether the resolution lets the request's mutation run."""
        return self.outcome.executes


def resolve_version(
    request: MutationRequest,
    current_version: str,
    strategy: ResolutionStrategy,
    context: MutationContext,
    *,
    at: datetime,
    claimed: bool = False,
) -> Resolution:
    """Resolve ``request`` against ``current_version`` following strategy table B.5.

    Only executable requests (APPROVED or pending REVALIDATION) can be resolved, and an
    EXECUTING one only by its executor (``claimed=True``); anything else raises
    :class:`RequestNotExecutableError`.
    """
    if not isinstance(current_version, str) or not current_version.strip():
        raise ValueError("current_version must be a non-blank string")
    if not isinstance(strategy, ResolutionStrategy):
        raise TypeError(f"strategy must be a ResolutionStrategy, got {strategy!r}")
    executing = request.status is RequestStatus.EXECUTING
    if not (request.is_executable or (claimed and executing)):
        raise RequestNotExecutableError(
            request.request_id,
            request.status,
            request.pending_reason,
            "only APPROVED or REVALIDATION-pending requests can be resolved",
        )
    expected = request.expected_state_version
    stale = bool(expected) and expected != current_version
    metadata = {
        "expected_state_version": expected or "",
        "current_state_version": current_version,
        "strategy": strategy.value,
    }

    def decided(code: ResolutionDecision, reason: str) -> RequestDecision:
        return RequestDecision(code, context, reason, at, metadata)

    if not stale:
        outcome = ResolutionOutcome.EXECUTE_APPROVED_VERSION
        resolved = record(
            request,
            [decided(ResolutionDecision.VALIDATED, f"state is at version {current_version}")],
            at=at,
        )
    else:
        why = f"approved against version {expected}, state is now at {current_version}"
        if strategy is ResolutionStrategy.REJECT_STALE:
            outcome = ResolutionOutcome.REJECTED_AS_STALE
            resolved = transition(
                request,
                RequestStatus.REJECTED,
                [decided(ResolutionDecision.REJECTED_AS_STALE, why)],
                at=at,
            )
        elif strategy is ResolutionStrategy.REQUIRE_RENEWED_APPROVAL:
            outcome = ResolutionOutcome.REQUIRES_RENEWED_APPROVAL
            changes, requested = fresh_round(request, context, at)
            decisions = [decided(ResolutionDecision.RENEWED_APPROVAL_REQUIRED, why), *requested]
            resolved = transition(
                request,
                RequestStatus.PENDING,
                decisions,
                at=at,
                pending_reason=PendingReason.APPROVAL,
                expected_state_version=current_version,
                **changes,
            )
        else:
            outcome = ResolutionOutcome.REVALIDATE_ON_LATEST_STATE
            decision = decided(ResolutionDecision.REVALIDATION_REQUIRED, why)
            if request.status is RequestStatus.APPROVED:
                resolved = transition(
                    request,
                    RequestStatus.PENDING,
                    [decision],
                    at=at,
                    pending_reason=PendingReason.REVALIDATION,
                    expected_state_version=current_version,
                )
            else:
                resolved = record(
                    request, [decision], at=at, expected_state_version=current_version
                )
    return Resolution(resolved, outcome, expected, current_version, stale, strategy)
