"""The approval workflow as pure functions from a request to its next version."""

from __future__ import annotations

import functools
import unicodedata
from datetime import datetime
from typing import Any

import attrs

from mutator import MutationContext, PolicyRequirement

from ._approvals import (
    ApprovalRequirement,
    RejectionReason,
    evolve_slot,
    map_requirements,
    renew,
)
from ._decisions import RequestDecision, new_decision
from ._enums import (
    ApprovalDecision,
    ApprovalStatus,
    LifecycleDecision,
    PendingReason,
    RequestStatus,
)
from ._errors import (
    ApprovalError,
    ApprovalExpiredError,
    ApprovalNotFoundError,
    ApprovalStateError,
    ApprovalStepError,
    ApproverMismatchError,
    DuplicateApproverError,
    InvalidApprovalActionError,
    SelfApprovalError,
)
from ._request import MutationRequest
from ._transitions import record, transition

__all__ = [
    "approve_requirement",
    "decidable_slots",
    "expire_approvals",
    "fresh_round",
    "overdue",
    "reject_requirement",
    "same_actor",
    "slot_refusal",
]


def _slot_metadata(slot: ApprovalRequirement) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "approval_id": slot.approval_id,
        "step": slot.step,
        "target": slot.target,
        "required_approvals": slot.required_approvals,
        "round": slot.round,
    }
    if slot.quorum_group is not None:
        metadata["quorum_group"] = slot.quorum_group
    if slot.expires_at is not None:
        metadata["approval_expires_at"] = slot.expires_at
    return metadata


def _select(
    request: MutationRequest,
    approval_id: str | None,
    context: MutationContext,
    allow_self_approval: bool,
    at: datetime,
) -> ApprovalRequirement:
    """Pick the slot the actor decides, checking the reference's validation order."""
    rid = request.request_id
    if approval_id is not None and (not isinstance(approval_id, str) or not approval_id.strip()):
        raise ValueError("approval_id must be a non-blank string or None")
    if not isinstance(context, MutationContext):
        raise TypeError("context must be a MutationContext")
    if (
        request.status is not RequestStatus.PENDING
        or request.pending_reason is not PendingReason.APPROVAL
        or not request.approval_requirements
    ):
        where = request.status.name + (
            f"({request.pending_reason.name})" if request.pending_reason else ""
        )
        raise ApprovalStateError(
            f"request {rid!r} is {where}, not waiting for approvals", request_id=rid
        )
    actor = context.actor_id
    if approval_id is not None:
        slot = request.approval(approval_id)
        if slot is None:
            raise ApprovalNotFoundError(
                f"request {rid!r} has no approval {approval_id!r}",
                request_id=rid,
                approval_id=approval_id,
            )
        _check_slot(request, slot, context, allow_self_approval, at)
        return slot
    if not actor or not actor.strip():
        raise InvalidApprovalActionError("the deciding actor has no actor_id", request_id=rid)
    step = request.active_step
    candidates = [s for s in request.open_approvals if s.step == step and s.matches(context)]
    if not candidates:
        later = [s for s in request.open_approvals if s.matches(context)]
        if later:
            raise ApprovalStepError(
                f"actor {actor!r} approves in step {later[0].step}; step {step} comes first",
                request_id=rid,
                approval_id=later[0].approval_id,
            )
        raise ApprovalNotFoundError(
            f"actor {actor!r} has no open approval in step {step} of request {rid!r}",
            request_id=rid,
        )
    usable = [s for s in candidates if not _already_in_group(request, s, actor)]
    slot = (usable or candidates)[0]
    _check_slot(request, slot, context, allow_self_approval, at)
    return slot


@functools.lru_cache(maxsize=1024)
def _person(actor_id: str) -> str:
    return "".join(
        c
        for c in unicodedata.normalize("NFKC", actor_id).casefold()
        if not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf")
    )


def same_actor(a: str | None, b: str | None) -> bool:
    """Whether two actor ids may name one person, for the rules that keep people apart.

    The four-eyes rule and a quorum's distinct approvers compare ids after Unicode
    compatibility normalization and case folding, ignoring whitespace and invisible
    characters: ``"bob"``, ``"BOB"``, ``" bob"`` and ``"bob\\u200b"`` are one approver, so an
    identity layer that passes ids through unnormalized cannot let the requester approve,
    or one person fill a quorum twice. Approval slots still match their target exactly.
    """
    if a is None or b is None:
        return False
    return a == b or _person(a) == _person(b)


def _already_in_group(request: MutationRequest, slot: ApprovalRequirement, actor: str) -> bool:
    return slot.quorum_group is not None and any(
        other.quorum_group == slot.quorum_group
        and other.status is ApprovalStatus.APPROVED
        and same_actor(other.decided_by, actor)
        for other in request.approval_requirements
    )


def _check_slot(
    request: MutationRequest,
    slot: ApprovalRequirement,
    context: MutationContext,
    allow_self_approval: bool,
    at: datetime,
) -> None:
    refusal = slot_refusal(request, slot, context, allow_self_approval=allow_self_approval, at=at)
    if refusal is not None:
        raise refusal


def slot_refusal(
    request: MutationRequest,
    slot: ApprovalRequirement,
    context: MutationContext,
    *,
    allow_self_approval: bool,
    at: datetime,
) -> ApprovalError | None:
    """Why the actor of ``context`` may not decide ``slot`` now, or None when they may.

    The one rule behind approving, rejecting and the approver inbox: the slot is open and
    not expired, the actor has an id and is its target, it is in the active step, the
    actor did not submit the request (four-eyes, unless allowed) and did not already
    approve in its quorum group.
    """
    rid, aid = request.request_id, slot.approval_id
    if slot.status is not ApprovalStatus.PENDING:
        return InvalidApprovalActionError(
            f"approval {aid!r} of request {rid!r} is already {slot.status.name}",
            request_id=rid,
            approval_id=aid,
        )
    if slot.is_expired(at):
        assert slot.expires_at is not None
        return ApprovalExpiredError(rid, aid, slot.expires_at)
    actor = context.actor_id
    if not actor or not actor.strip():
        return InvalidApprovalActionError(
            "the deciding actor has no actor_id", request_id=rid, approval_id=aid
        )
    if not slot.matches(context):
        return ApproverMismatchError(
            f"actor {actor!r} is not {slot.target} required by approval {aid!r}",
            request_id=rid,
            approval_id=aid,
        )
    if slot.step != request.active_step:
        return ApprovalStepError(
            f"approval {aid!r} is in step {slot.step}; step {request.active_step} comes first",
            request_id=rid,
            approval_id=aid,
        )
    if not allow_self_approval and same_actor(actor, request.requester):
        alias = "" if actor == request.requester else f" (as {request.requester!r})"
        return SelfApprovalError(
            f"actor {actor!r} submitted request {rid!r}{alias} and may not decide it (four-eyes)",
            request_id=rid,
            approval_id=aid,
        )
    if _already_in_group(request, slot, actor):
        return DuplicateApproverError(
            f"actor {actor!r} already approved quorum group {slot.quorum_group!r}",
            request_id=rid,
            approval_id=aid,
        )
    return None


def overdue(request: MutationRequest, at: datetime) -> ApprovalStateError | None:
    """Why ``request`` takes no approval at ``at``: it is pending past its own deadline,
    so the expiry sweep ends it, whether or not the sweep has run yet (None otherwise)."""
    deadline = request.expires_at
    if request.status is not RequestStatus.PENDING or deadline is None or deadline > at:
        return None
    return ApprovalStateError(
        f"request {request.request_id!r} expired at {deadline.isoformat()}: it takes no "
        "approval; the expiry sweep (expire_due) ends it",
        request_id=request.request_id,
    )


def decidable_slots(
    request: MutationRequest,
    context: MutationContext,
    *,
    allow_self_approval: bool,
    at: datetime,
) -> tuple[ApprovalRequirement, ...]:
    """The open slots of ``request``'s active step that the actor of ``context`` may decide.

    Empty unless the request is pending for approval; see :func:`slot_refusal`.
    """
    if (
        request.status is not RequestStatus.PENDING
        or request.pending_reason is not PendingReason.APPROVAL
        or overdue(request, at) is not None
    ):
        return ()
    step = request.active_step
    return tuple(
        slot
        for slot in request.open_approvals
        if slot.step == step
        and slot.matches(context)
        and slot_refusal(request, slot, context, allow_self_approval=allow_self_approval, at=at)
        is None
    )


def approve_requirement(
    request: MutationRequest,
    approval_id: str | None,
    context: MutationContext,
    *,
    reason: str | None,
    at: datetime,
    allow_self_approval: bool = False,
    revision: int | None = None,
) -> MutationRequest:
    """Approve one slot; fill its quorum; approve the request when every slot is done.

    ``revision`` is the revision the result is stored at, when the caller knows it.
    """
    slot = _select(request, approval_id, context, allow_self_approval, at)
    decided = evolve_slot(
        slot,
        status=ApprovalStatus.APPROVED,
        decided_at=at,
        decided_by=context.actor_id,
        decision_reason=reason or context.reason,
    )
    slots = [
        decided if s.approval_id == slot.approval_id else s for s in request.approval_requirements
    ]
    sequence = len(request.decisions) + 1
    decisions = [
        new_decision(
            ApprovalDecision.GRANTED,
            context,
            reason or context.reason,
            at,
            _slot_metadata(decided),
            sequence,
        )
    ]
    if slot.quorum_group is not None:
        group = [s for s in slots if s.quorum_group == slot.quorum_group]
        approved = sum(1 for s in group if s.status is ApprovalStatus.APPROVED)
        if approved >= slot.required_approvals and any(s.is_open for s in group):
            slots = [
                evolve_slot(s, status=ApprovalStatus.SATISFIED, decided_at=at)
                if s.quorum_group == slot.quorum_group and s.is_open
                else s
                for s in slots
            ]
            decisions.append(
                new_decision(
                    ApprovalDecision.QUORUM_SATISFIED,
                    context,
                    f"{approved} of {len(group)} approvals in quorum group {slot.quorum_group}",
                    at,
                    {
                        "quorum_group": slot.quorum_group,
                        "required_approvals": slot.required_approvals,
                    },
                    sequence + 1,
                )
            )
    stored: dict[str, Any] = {} if revision is None else {"revision": revision}
    if all(s.is_fulfilled for s in slots):
        decisions.append(
            new_decision(
                LifecycleDecision.APPROVED,
                context,
                "all approval requirements fulfilled",
                at,
                None,
                sequence + len(decisions),
            )
        )
        return transition(
            request,
            RequestStatus.APPROVED,
            decisions,
            at=at,
            approval_requirements=slots,
            **stored,
        )
    return record(request, decisions, at=at, approval_requirements=slots, **stored)


def reject_requirement(
    request: MutationRequest,
    approval_id: str | None,
    context: MutationContext,
    *,
    reason: str | None,
    rejection: RejectionReason | None,
    at: datetime,
    allow_self_approval: bool = False,
) -> MutationRequest:
    """Reject one slot, which rejects the whole request."""
    slot = _select(request, approval_id, context, allow_self_approval, at)
    why = reason or (rejection.message if rejection else None) or context.reason
    decided = attrs.evolve(
        slot,
        status=ApprovalStatus.REJECTED,
        decided_at=at,
        decided_by=context.actor_id,
        decision_reason=why,
        rejection=rejection,
    )
    slots = [
        decided if s.approval_id == slot.approval_id else s for s in request.approval_requirements
    ]
    metadata = _slot_metadata(decided)
    if rejection is not None:
        metadata["rejection_code"] = rejection.code
        if rejection.category is not None:
            metadata["rejection_category"] = rejection.category
    decisions = [
        RequestDecision(ApprovalDecision.REJECTED, context, why, at, metadata),
        RequestDecision(
            LifecycleDecision.REJECTED, context, why or f"rejected by {context.actor_id}", at
        ),
    ]
    return transition(
        request, RequestStatus.REJECTED, decisions, at=at, approval_requirements=slots
    )


def expire_approvals(
    request: MutationRequest, now: datetime, context: MutationContext
) -> MutationRequest | None:
    """Expire open slots whose deadline passed; the request then becomes EXPIRED."""
    if request.status is not RequestStatus.PENDING:
        return None
    due = [s for s in request.open_approvals if s.is_expired(now)]
    if not due:
        return None
    due_ids = {s.approval_id for s in due}
    slots = [
        attrs.evolve(s, status=ApprovalStatus.EXPIRED, decided_at=now)
        if s.approval_id in due_ids
        else s
        for s in request.approval_requirements
    ]
    decisions = [
        RequestDecision(
            ApprovalDecision.EXPIRED,
            context,
            f"approval {s.target} expired",
            now,
            _slot_metadata(s),
        )
        for s in due
    ]
    decisions.append(
        RequestDecision(LifecycleDecision.EXPIRED, context, "an approval requirement expired", now)
    )
    return transition(
        request, RequestStatus.EXPIRED, decisions, at=now, approval_requirements=slots
    )


def fresh_round(
    request: MutationRequest,
    context: MutationContext,
    at: datetime,
    requirements: tuple[PolicyRequirement, ...] | None = None,
) -> tuple[dict[str, Any], list[RequestDecision]]:
    """A new round of approval slots, as request field changes plus its REQUESTED decision.

    The slots come from ``requirements`` when given, else the request's current slots are
    renewed (new ids, all pending), else its policy requirements are mapped. Earlier
    approvals never count towards the new round.
    """
    round_ = request.approval_round + 1
    if requirements is not None:
        approvals = map_requirements(requirements, round=round_)
    elif request.approval_requirements:
        approvals = renew(request.approval_requirements, round_)
    else:
        approvals = map_requirements(request.policy_requirements, round=round_)
    changes: dict[str, Any] = {"approval_requirements": approvals, "approval_round": round_}
    decisions = []
    if approvals:
        decisions.append(
            RequestDecision(
                ApprovalDecision.REQUESTED,
                context,
                f"approval round {round_}",
                at,
                {"approval_requirement_count": len(approvals), "round": round_},
            )
        )
    return changes, decisions
