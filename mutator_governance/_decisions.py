"""Request decisions: the append-only record of everything that happened to a request."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import attrs

from mutator import MutationContext
from mutator.values import aware, freeze_mapping, trusted, utc_now

from ._copying import attrs_copier
from ._enums import ApprovalDecision, DecisionCategory, LifecycleDecision, ResolutionDecision

__all__ = [
    "DecisionCode",
    "RequestDecision",
    "category_of",
    "code_for",
    "new_decision",
    "numbered",
    "system_context",
]

DecisionCode = LifecycleDecision | ApprovalDecision | ResolutionDecision
"""Any decision code: a member of one of the three decision enums (one per category)."""

_CATEGORIES: dict[type[Any], DecisionCategory] = {
    LifecycleDecision: DecisionCategory.LIFECYCLE,
    ApprovalDecision: DecisionCategory.APPROVAL,
    ResolutionDecision: DecisionCategory.VERSION_RESOLUTION,
}
_CODES: dict[DecisionCategory, type[Any]] = {v: k for k, v in _CATEGORIES.items()}


def category_of(code: DecisionCode) -> DecisionCategory:
    """The category a decision code belongs to."""
    return _CATEGORIES[type(code)]


def code_for(category: DecisionCategory, name: str) -> DecisionCode:
    """Look up a code by category and member name (raises ValueError when unknown)."""
    enum_class = _CODES[category]
    try:
        code: DecisionCode = enum_class[name]
    except KeyError:
        raise ValueError(f"unknown {category.name} decision code {name!r}") from None
    return code


def _code(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) not in _CATEGORIES:
        raise TypeError(f"decision code must be a decision enum member, got {value!r}")


@attrs.frozen
class RequestDecision:
    """One decision about a request: its code, who made it, why, when, and details.

    ``sequence`` is the decision's position in its request, counted from 1; the request
    numbers its decisions as they are appended (0 means "not numbered yet"). Decision logs
    store ``(request_id, sequence)`` uniquely, so appending the same decision twice is a
    no-op and a repair appends exactly the missing sequence numbers.
    """

    code: DecisionCode = attrs.field(validator=_code)
    context: MutationContext
    reason: str | None = None
    timestamp: datetime = attrs.field(factory=utc_now, validator=aware)
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=freeze_mapping, hash=False)
    sequence: int = 0

    @property
    def category(self) -> DecisionCategory:
        """The category of ``code``: lifecycle, approval or version resolution."""
        return _CATEGORIES[type(self.code)]

    def __str__(self) -> str:
        who = self.context.actor_id or self.context.actor_type.value
        why = f": {self.reason}" if self.reason else ""
        return f"{self.category.name}/{self.code.name} by {who}{why}"


_build_decision = trusted(RequestDecision)
assert [a.name for a in attrs.fields(RequestDecision)][-1] == "sequence"
_TIMESTAMP = attrs.fields(RequestDecision).timestamp


def new_decision(
    code: DecisionCode,
    context: MutationContext,
    reason: str | None,
    at: datetime,
    metadata: Mapping[str, Any] | None = None,
    sequence: int = 0,
) -> RequestDecision:
    """A decision made by the library itself: what ``RequestDecision(...)`` builds, cheaper.

    For the library's own paths, whose ``code`` is always a decision enum member: only the
    timestamp is checked (it comes from a user-supplied clock; same error as the
    constructor) and the metadata frozen. ``sequence`` saves the renumbering copy when the
    caller knows the decision's position.
    """
    aware(None, _TIMESTAMP, at)
    built: RequestDecision = _build_decision(
        code, context, reason, at, freeze_mapping(metadata), sequence
    )
    return built


def _renumbered(d: RequestDecision, sequence: int) -> RequestDecision:
    """``d`` with ``sequence`` (its other fields were validated when it was built)."""
    built: RequestDecision = _build_decision(
        d.code, d.context, d.reason, d.timestamp, d.metadata, sequence
    )
    return built


def numbered(decisions: Iterable[RequestDecision], start: int = 0) -> tuple[RequestDecision, ...]:
    """``decisions`` numbered ``start + 1``, ``start + 2``, ... (copies only where needed)."""
    result = decisions if type(decisions) is tuple else tuple(decisions)
    if not result or (
        result[0].sequence == start + 1 and result[-1].sequence == start + len(result)
    ):
        return result
    return tuple(
        d if d.sequence == start + i else _renumbered(d, start + i) for i, d in enumerate(result, 1)
    )


_copy_context = attrs_copier(MutationContext)
_SYSTEM = MutationContext.system(correlation_id="template")
_SYSTEM_EXECUTING = MutationContext.system("governed execution", correlation_id="template")


def system_context(request_id: str, at: datetime, *, executing: bool = False) -> MutationContext:
    """The system's own context for a decision on ``request_id``, stamped ``at``.

    ``at`` is the governance clock's reading, as for the decision itself, so a system
    decision's context and timestamp agree (and follow the store's clock where the
    governance does). ``executing``: the context of an execution nobody gave one to.
    """
    template = _SYSTEM_EXECUTING if executing else _SYSTEM
    context: MutationContext = _copy_context(
        template, {"correlation_id": request_id, "timestamp": at}
    )
    return context
