"""What the ``mutator`` command line prints: aligned tables and its stable JSON documents."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs

from ._approvals import ApprovalRequirement
from ._decisions import RequestDecision
from ._execution import GovernedExecutionResult
from ._query_views import ApprovalView
from ._request import MutationRequest

__all__ = [
    "Output",
    "age",
    "approval_json",
    "clean",
    "decision_json",
    "inbox_json",
    "outcome_json",
    "outcome_line",
    "operation",
    "plain",
    "request_json",
    "status",
    "table",
]


# -- output --------------------------------------------------------------------------------


def clean(text: str) -> str:
    """``text`` with every unprintable character escaped (``\\n``, ``\\x1b``, ``\\u202e``).

    Ids, reasons and actor names come from requesters: printed raw, a newline could forge
    a table row (an approval that never happened) and an escape sequence could hide text
    from the operator reading it. JSON output escapes them already.
    """
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode()
        for c in text
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, trailing spaces trimmed; cells :func:`clean`."""
    rows = [[clean(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def age(moment: datetime, now: datetime) -> str:
    """How long ago ``moment`` was, coarsely: ``<1m``, ``5m``, ``3h``, ``2d``."""
    seconds = (now - moment).total_seconds()
    if seconds < 60:
        return "<1m"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return "<1m"  # pragma: no cover


def status(request: MutationRequest) -> str:
    """``pending/approval``, ``executed``: the status value and any pending reason."""
    reason = request.pending_reason
    return request.status.value + (f"/{reason.value}" if reason is not None else "")


def operation(request: MutationRequest) -> str:
    """The mutation type, and the intent's operation when it differs."""
    name = request.intent.operation
    if name == request.mutation_type:
        return name
    return f"{request.mutation_type} ({name})"


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def request_json(request: MutationRequest) -> dict[str, Any]:
    """The ``--json`` object of a request."""
    return {
        "request_id": request.request_id,
        "status": request.status.value,
        "pending_reason": request.pending_reason.value if request.pending_reason else None,
        "mutation_type": request.mutation_type,
        "operation": request.intent.operation,
        "category": request.intent.category,
        "state_id": request.state_id,
        "requester": request.requester,
        "created_at": _when(request.created_at),
        "updated_at": _when(request.updated_at),
        "active_step": request.active_step,
    }


def approval_json(approval: ApprovalRequirement) -> dict[str, Any]:
    """The ``--json`` object of an approval slot."""
    return {
        "approval_id": approval.approval_id,
        "step": approval.step,
        "target": approval.target,
        "status": approval.status.value,
        "quorum_group": approval.quorum_group,
        "required_approvals": approval.required_approvals,
        "expires_at": _when(approval.expires_at),
        "decided_by": approval.decided_by,
        "decided_at": _when(approval.decided_at),
    }


def decision_json(decision: RequestDecision) -> dict[str, Any]:
    """The ``--json`` object of a decision."""
    return {
        "category": decision.category.value,
        "code": decision.code.name,
        "actor": decision.context.actor_id,
        "reason": decision.reason,
        "timestamp": _when(decision.timestamp),
    }


def inbox_json(view: ApprovalView) -> dict[str, Any]:
    """The ``--json`` object of an inbox entry: its request and approval slot."""
    return {"request": request_json(view.request), "approval": approval_json(view.approval)}


def outcome_json(outcome: GovernedExecutionResult) -> dict[str, Any]:
    """The ``--json`` object of one execution outcome."""
    resolution = outcome.resolution
    return {
        "request_id": outcome.request.request_id,
        "executed": outcome.executed,
        "status": outcome.request.status.value,
        "pending_reason": (
            outcome.request.pending_reason.value if outcome.request.pending_reason else None
        ),
        "resolution": resolution.outcome.value if resolution is not None else None,
        "resulting_version": outcome.resulting_version,
    }


def outcome_line(outcome: GovernedExecutionResult) -> str:
    """One human line for an execution outcome: ``req-1: executed (version 2)``."""
    request = outcome.request
    line = f"{clean(request.request_id)}: {status(request)}"
    if outcome.executed:
        return f"{line} (version {outcome.resulting_version})"
    if outcome.resolution is not None and not outcome.resolution.executes:
        return f"{line} ({outcome.resolution.outcome.value})"
    last = request.last_decision
    return f"{line}: {clean(last.reason)}" if last is not None and last.reason else line


class Output:
    """Prints human text or JSON documents."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, human: str, document: Any) -> None:
        """Print ``document`` as JSON with ``--json`` (nothing when None), else ``human``."""
        if self.as_json:
            if document is not None:
                print(json.dumps(document, sort_keys=True), flush=True)
        elif human:
            print(human, flush=True)


def plain(item: Any) -> Any:
    """``item`` as JSON-ready data (attrs classes as objects, datetimes as ISO text)."""
    if attrs.has(type(item)):
        return {k: plain(v) for k, v in attrs.asdict(item, recurse=False).items()}
    if isinstance(item, datetime):
        return item.isoformat()
    if isinstance(item, str | int | float | bool) or item is None:
        return item
    return str(item)
