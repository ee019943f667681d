"""Policies decide whether a mutation may run: allow, deny, require approval or modify."""

from __future__ import annotations

import enum
import typing
from collections.abc import Awaitable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from ._effects import SideEffect
from ._enums import Severity
from ._freeze import freeze_mapping, names, to_tuple

if TYPE_CHECKING:
    from ._context import MutationContext
    from ._mutation import Mutation

__all__ = [
    "NOTHING",
    "MutationPolicy",
    "PolicyDecision",
    "PolicyModification",
    "PolicyRequirement",
]

StateT = TypeVar("StateT")


class _Nothing(enum.Enum):
    NOTHING = "NOTHING"

    def __repr__(self) -> str:
        return "NOTHING"


NOTHING: Any = _Nothing.NOTHING
"""Marker for "no replacement state" in :class:`PolicyModification`."""

APPROVAL = "approval"


def _positive(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"PolicyRequirement.{attribute.name} must be an int >= 1, got {value!r}")


@attrs.frozen
class PolicyRequirement:
    """Something that must happen before a mutation may run, most often an approval.

    For approvals the targets are ``approvers`` (actor ids), ``role`` and ``group``;
    ``required_approvals`` is the quorum among them and ``step`` orders requirements.
    """

    type: str = APPROVAL
    description: str | None = None
    approvers: tuple[str, ...] = attrs.field(default=(), converter=names)
    role: str | None = None
    group: str | None = None
    required_approvals: int = attrs.field(default=1, validator=_positive)
    step: int = attrs.field(default=1, validator=_positive)
    expires_at: datetime | None = None
    reason: str | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=freeze_mapping, hash=False)

    @classmethod
    def approval(
        cls,
        approver: str | None = None,
        *,
        approvers: str | Iterable[str] = (),
        role: str | None = None,
        group: str | None = None,
        required_approvals: int = 1,
        step: int = 1,
        expires_at: datetime | None = None,
        reason: str | None = None,
    ) -> PolicyRequirement:
        """An approval by ``approver``/``approvers``, anyone with ``role``, or ``group`` members."""
        targets = names(approvers)
        if approver is not None and approver.strip():
            targets = (approver, *(a for a in targets if a != approver))
        if not targets and role is None and group is None:
            raise ValueError("an approval requirement needs an approver, a role or a group")
        if expires_at is not None and expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        return cls(
            APPROVAL,
            reason,
            targets,
            role,
            group,
            required_approvals,
            step,
            expires_at,
            reason,
        )

    @property
    def is_approval(self) -> bool:
        """True when this requirement is an approval."""
        return self.type == APPROVAL


@attrs.frozen
class PolicyModification:
    """Changes a policy makes to a successful result: a replacement state, extra side effects."""

    state: Any = NOTHING
    side_effects: tuple[SideEffect, ...] = attrs.field(default=(), converter=to_tuple)

    @property
    def replaces_state(self) -> bool:
        """True when the policy gives a replacement state."""
        return self.state is not NOTHING


def _requirements(value: Iterable[PolicyRequirement]) -> tuple[PolicyRequirement, ...]:
    requirements = tuple(value)
    for requirement in requirements:
        if not isinstance(requirement, PolicyRequirement):
            raise TypeError(f"expected PolicyRequirement, got {type(requirement).__name__}")
    return requirements


@attrs.frozen
class PolicyDecision:
    """What one policy decided.

    A decision that is not ``allowed`` blocks unless it carries ``requirements``, in which
    case it asks for approval instead.
    """

    allowed: bool
    reason: str | None = None
    policy_name: str | None = None
    severity: Severity = Severity.INFO
    requirements: tuple[PolicyRequirement, ...] = attrs.field(default=(), converter=_requirements)
    modifications: PolicyModification | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=freeze_mapping, hash=False)

    @classmethod
    def allow(
        cls, reason: str | None = None, *, metadata: Mapping[str, Any] | None = None
    ) -> PolicyDecision:
        """Let the mutation run (one shared instance when there is no reason or metadata)."""
        if reason is None and not metadata:
            return _ALLOW
        return cls(True, reason, metadata=metadata or {})

    @classmethod
    def deny(
        cls,
        reason: str,
        *,
        severity: Severity = Severity.ERROR,
        metadata: Mapping[str, Any] | None = None,
    ) -> PolicyDecision:
        """Block the mutation; ``severity`` must be ERROR or CRITICAL (ValueError otherwise)."""
        if severity < Severity.ERROR:
            raise ValueError("a denial has severity ERROR or CRITICAL")
        return cls(False, reason, severity=severity, metadata=metadata or {})

    @classmethod
    def deny_critical(
        cls, reason: str, *, metadata: Mapping[str, Any] | None = None
    ) -> PolicyDecision:
        """Block the mutation with severity CRITICAL."""
        return cls(False, reason, severity=Severity.CRITICAL, metadata=metadata or {})

    @classmethod
    def require_approval(
        cls,
        *requirements: PolicyRequirement,
        reason: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> PolicyDecision:
        """Hold the mutation until ``requirements`` are met (at least one)."""
        if not requirements:
            raise ValueError("require_approval needs at least one PolicyRequirement")
        return cls(
            False, reason or "approval required", requirements=requirements, metadata=metadata or {}
        )

    @classmethod
    def modify(
        cls,
        state: Any = NOTHING,
        *,
        side_effects: Iterable[SideEffect] = (),
        reason: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> PolicyDecision:
        """Allow the mutation, replacing its resulting state and/or adding side effects."""
        modification = PolicyModification(state, tuple(side_effects))
        if not modification.replaces_state and not modification.side_effects:
            raise ValueError("modify() needs a replacement state or side effects")
        return cls(True, reason, modifications=modification, metadata=metadata or {})

    @property
    def blocks(self) -> bool:
        """Denied outright (not allowed and nothing to approve)."""
        return not self.allowed and not self.requirements

    @property
    def needs_approval(self) -> bool:
        """Not allowed, but approvable: the decision carries requirements."""
        return not self.allowed and bool(self.requirements)


_ALLOW = PolicyDecision(True)


class MutationPolicy(Generic[StateT]):
    """Base class for policies.

    Set ``name`` (defaults to the class name), ``priority`` (higher runs first) and
    ``state_type`` (the policy applies to states that are instances of it; None = all), and
    implement :meth:`evaluate`, plainly or as ``async def``. A subclass of
    ``MutationPolicy[Quotas]`` gets ``state_type = Quotas`` from its generic parameter
    unless it sets ``state_type`` itself.
    """

    __slots__ = ()

    name: str = ""
    priority: int = 0
    state_type: type[Any] | None = None
    description: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__
        if "state_type" not in cls.__dict__:
            inferred = _generic_state_type(cls)
            if inferred is not None:
                cls.state_type = inferred

    def evaluate(
        self, mutation: Mutation[StateT], state: StateT, context: MutationContext
    ) -> PolicyDecision | Awaitable[PolicyDecision]:
        """Decide whether ``mutation`` may run on ``state`` (plainly or as ``async def``)."""
        raise NotImplementedError(f"{type(self).__name__}.evaluate is not implemented")


def _generic_state_type(cls: type[Any]) -> type[Any] | None:
    """The class ``C`` of a direct ``MutationPolicy[C]`` base, if there is one."""
    for base in getattr(cls, "__orig_bases__", ()):
        origin = typing.get_origin(base)
        if not (isinstance(origin, type) and issubclass(origin, MutationPolicy)):
            continue
        for argument in typing.get_args(base):
            argument = typing.get_origin(argument) or argument
            if isinstance(argument, type) and argument not in (object, Any):
                return argument
    return None
