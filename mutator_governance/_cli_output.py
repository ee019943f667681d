"""What the ``mutator`` command line prints: aligned tables and its stable JSON documents."""

from __future__ import annotations

import enum
import errno
import json
import sys
from collections.abc import Mapping, Sequence, Set
from datetime import datetime
from typing import Any

import attrs

from mutator import ChangeType, HistoryEntry, StateChange

from ._approvals import ApprovalRequirement
from ._decisions import RequestDecision
from ._execution import GovernedExecutionResult
from ._query_views import ApprovalView
from ._request import MutationRequest

__all__ = [
    "Output",
    "OutputLostError",
    "age",
    "approval_json",
    "clean",
    "change_text",
    "data",
    "decision_json",
    "governed_request",
    "history_json",
    "inbox_json",
    "outcome_json",
    "outcome_line",
    "operation",
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


def governed_request(entry: HistoryEntry) -> str | None:
    """The governance request whose execution committed ``entry`` (None: a plain engine
    commit)."""
    found = entry.context.metadata.get("governance_request_id")
    return found if isinstance(found, str) else None


_SHOWN = 40
"""The longest value a history line shows before eliding it (``--json`` has it whole)."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def change_text(change: StateChange) -> str:
    """``limit: 100 -> 110``; an added or removed path shows only the value it has."""
    if change.type is ChangeType.ADDED:
        return f"{change.path}: + {_short(change.new_value)}"
    if change.type is ChangeType.REMOVED:
        return f"{change.path}: - {_short(change.old_value)}"
    return f"{change.path}: {_short(change.old_value)} -> {_short(change.new_value)}"


def history_json(entry: HistoryEntry) -> dict[str, Any]:
    """The ``--json`` object of one committed mutation of a state."""
    return {
        "execution_id": entry.execution_id,
        "request_id": governed_request(entry),
        "executed_at": _when(entry.executed_at),
        "actor": entry.context.actor_id,
        "reason": entry.context.reason,
        "operation": entry.intent.operation,
        "changes": [
            {
                "path": change.path,
                "type": change.type.value,
                "old_value": data(change.old_value),
                "new_value": data(change.new_value),
            }
            for change in entry.changes.changes
        ],
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


class OutputLostError(Exception):
    """Standard output could not be written (its reader went away, its disk is full): the
    command stops, since nothing it prints reaches anyone."""

    def __init__(self, error: OSError) -> None:
        super().__init__(f"cannot write the output: {error}")
        self.error = error


class Output:
    """Prints human text or JSON documents."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, human: str, document: Any) -> None:
        """Print ``document`` as JSON with ``--json`` (nothing when None), else ``human``
        (:class:`OutputLostError` when standard output cannot be written)."""
        if self.as_json:
            text = json.dumps(document, sort_keys=True) if document is not None else ""
        else:
            text = human
        if not text:
            return
        if sys.stdout is None:  # started with standard output closed (``>&-``)
            raise OutputLostError(OSError(errno.EBADF, "standard output is closed"))
        try:
            print(text, flush=True)
        except OSError as error:
            raise OutputLostError(error) from error


def data(value: Any) -> Any:
    """``value`` as JSON data, all the way down: attrs classes and mappings as objects,
    sequences and sets as arrays, enums by value, datetimes as ISO text, the rest as
    text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if attrs.has(type(value)):
        return {k: data(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, Mapping):
        return {str(k): data(v) for k, v in value.items()}
    if isinstance(value, Sequence | Set) and not isinstance(value, bytes | bytearray):
        return [data(v) for v in value]
    if isinstance(value, enum.Enum):
        return data(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
