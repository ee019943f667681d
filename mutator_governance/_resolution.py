"""Version resolution: what to do with a request whose state may have moved on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from mutator import MutationContext

from ._decisions import RequestDecision, new_decision
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

__all__ = ["Resolution", "Verdict", "judge", "resolve_version"]


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


@attrs.frozen
class Verdict:
    """What resolution decided, before it is applied to the request.

    ``target`` is the status the request moves to (None: it keeps its status), with
    ``decisions`` appended and ``changes`` made. A governed execution folds an executing
    verdict into its final write instead of building the resolved request on its own.
    """

    outcome: ResolutionOutcome
    expected_version: str | None
    current_version: str
    is_stale: bool
    strategy: ResolutionStrategy
    decisions: tuple[RequestDecision, ...]
    target: RequestStatus | None = None
    pending_reason: PendingReason | None = None
    changes: dict[str, Any] = attrs.field(factory=dict)

    def apply(self, request: MutationRequest, *, at: datetime, **extra: Any) -> MutationRequest:
        """``request`` resolved: moved to ``target`` (or recorded), with ``extra`` changes."""
        if self.target is None:
            return record(request, self.decisions, at=at, **self.changes, **extra)
        return transition(
            request,
            self.target,
            self.decisions,
            at=at,
            pending_reason=self.pending_reason,
            **self.changes,
            **extra,
        )

    def resolution(self, request: MutationRequest) -> Resolution:
        """The :class:`Resolution` reporting this verdict with ``request``."""
        return Resolution(
            request,
            self.outcome,
            self.expected_version,
            self.current_version,
            self.is_stale,
            self.strategy,
        )


# Hot paths read enum members from module globals: on Python 3.11 an attribute of an enum
# class is read through EnumType's __getattr__ hook, about 800 instructions each time.
_EXECUTING = RequestStatus.EXECUTING
_EXECUTE_APPROVED_VERSION = ResolutionOutcome.EXECUTE_APPROVED_VERSION
_VALIDATED = ResolutionDecision.VALIDATED


def judge(
    request: MutationRequest,
    current_version: str,
    strategy: ResolutionStrategy,
    context: MutationContext,
    *,
    at: datetime,
    claimed: bool = False,
) -> Verdict:
    """Resolve ``request`` against ``current_version`` following strategy table B.5.

    Only executable requests (APPROVED or pending REVALIDATION) can be resolved, and an
    EXECUTING one only by its executor (``claimed=True``); anything else raises
    :class:`RequestNotExecutableError`. An executing verdict of a claimed request always
    keeps its status (``target`` None).
    """
    if not isinstance(current_version, str) or not current_version.strip():
        raise ValueError("current_version must be a non-blank string")
    if not isinstance(strategy, ResolutionStrategy):
        raise TypeError(f"strategy must be a ResolutionStrategy, got {strategy!r}")
    executing = request.status is _EXECUTING
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
    sequence = len(request.decisions) + 1

    def verdict(
        outcome: ResolutionOutcome,
        code: ResolutionDecision,
        reason: str,
        target: RequestStatus | None = None,
        pending_reason: PendingReason | None = None,
        more: tuple[RequestDecision, ...] = (),
        **changes: Any,
    ) -> Verdict:
        decision = new_decision(code, context, reason, at, metadata, sequence)
        return Verdict(
            outcome,
            expected,
            current_version,
            stale,
            strategy,
            (decision, *more),
            target,
            pending_reason,
            changes,
        )

    if not stale:
        return verdict(
            _EXECUTE_APPROVED_VERSION,
            _VALIDATED,
            f"state is at version {current_version}",
        )
    why = f"approved against version {expected}, state is now at {current_version}"
    if strategy is ResolutionStrategy.REJECT_STALE:
        return verdict(
            ResolutionOutcome.REJECTED_AS_STALE,
            ResolutionDecision.REJECTED_AS_STALE,
            why,
            RequestStatus.REJECTED,
        )
    if strategy is ResolutionStrategy.REQUIRE_RENEWED_APPROVAL:
        changes, requested = fresh_round(request, context, at)
        return verdict(
            ResolutionOutcome.REQUIRES_RENEWED_APPROVAL,
            ResolutionDecision.RENEWED_APPROVAL_REQUIRED,
            why,
            RequestStatus.PENDING,
            PendingReason.APPROVAL,
            tuple(requested),
            expected_state_version=current_version,
            **changes,
        )
    return verdict(
        ResolutionOutcome.REVALIDATE_ON_LATEST_STATE,
        ResolutionDecision.REVALIDATION_REQUIRED,
        why,
        RequestStatus.PENDING if request.status is RequestStatus.APPROVED else None,
        PendingReason.REVALIDATION if request.status is RequestStatus.APPROVED else None,
        expected_state_version=current_version,
    )


def resolve_version(
    request: MutationRequest,
    current_version: str,
    strategy: ResolutionStrategy,
    context: MutationContext,
    *,
    at: datetime,
    claimed: bool = False,
) -> Resolution:
    """Resolve ``request`` and apply the verdict (see :func:`judge`)."""
    verdict = judge(request, current_version, strategy, context, at=at, claimed=claimed)
    return verdict.resolution(verdict.apply(request, at=at))
