"""Evaluating every applicable policy and merging what they decided."""

from __future__ import annotations

import functools
import math
import operator
import time
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
import attrs

from ._context import MutationContext
from ._deadline import DeadlineExpired, current_time, is_awaitable
from ._effects import SideEffect
from ._enums import ResultStatus
from ._errors import MutatorError, PolicyConflictError, PolicyEvaluationError, PolicyTimeoutError
from ._policies import (
    _ALLOW,
    NOTHING,
    MutationPolicy,
    PolicyDecision,
    PolicyModification,
    PolicyRequirement,
)

__all__ = [
    "PolicyEvaluation",
    "PolicySet",
    "allow_prefix",
    "allowed_evaluation",
    "evaluate_policies",
    "evaluate_rest",
    "merge_modifications",
]


@attrs.frozen
class PolicyEvaluation:
    """The combined verdict of every policy that applied, in evaluation order.

    Blocked when any decision denies; otherwise approval is required when any decision
    carries requirements; otherwise allowed, with the merged ``modification``.
    """

    decisions: tuple[PolicyDecision, ...] = ()
    modification: PolicyModification | None = None

    @property
    def blockers(self) -> tuple[PolicyDecision, ...]:
        """The decisions that deny the mutation outright."""
        return tuple(d for d in self.decisions if d.blocks)

    @property
    def requirements(self) -> tuple[PolicyRequirement, ...]:
        """Every requirement of the decisions that ask for approval, in order."""
        return tuple(r for d in self.decisions if d.needs_approval for r in d.requirements)

    @property
    def status(self) -> ResultStatus:
        """The outcome the decisions lead to.

        POLICY_BLOCKED if any decision blocks, else APPROVAL_REQUIRED if any asks for
        approval, else SUCCEEDED.
        """
        if any(d.blocks for d in self.decisions):
            return ResultStatus.POLICY_BLOCKED
        if any(d.needs_approval for d in self.decisions):
            return ResultStatus.APPROVAL_REQUIRED
        return ResultStatus.SUCCEEDED

    @property
    def allowed(self) -> bool:
        """True when every decision allows the mutation (no denial, no approval asked)."""
        return all(d.allowed for d in self.decisions)


ALLOWED = PolicyEvaluation()


def sort_policies(policies: Iterable[MutationPolicy[Any]]) -> list[MutationPolicy[Any]]:
    """Evaluation order: priority descending, then name; ties keep registration order."""
    return sorted(policies, key=lambda p: (-p.priority, p.name))


def check_policy(policy: object) -> MutationPolicy[Any]:
    """Reject objects that cannot act as a policy, with a message that says why."""
    name = getattr(policy, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"a policy needs a non-empty str name, {policy!r} has {name!r}")
    priority = getattr(policy, "priority", None)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"policy {name!r} needs an int priority, has {priority!r}")
    state_type = getattr(policy, "state_type", None)
    if state_type is not None and not isinstance(state_type, type):
        raise TypeError(f"policy {name!r}: state_type must be a class or None")
    if not callable(getattr(policy, "evaluate", None)):
        raise TypeError(f"policy {name!r} has no evaluate(mutation, state, context) method")
    return policy  # type: ignore[return-value]


class PolicySet:
    """Registered policies with a per-state-type cache of the applicable, ordered ones."""

    __slots__ = ("_by_type", "_policies")

    def __init__(self) -> None:
        self._policies: list[MutationPolicy[Any]] = []
        self._by_type: dict[type[Any], tuple[MutationPolicy[Any], ...]] = {}

    def add(self, policy: MutationPolicy[Any]) -> None:
        self._policies.append(check_policy(policy))
        self._by_type.clear()

    def remove(self, name: str) -> int:
        before = len(self._policies)
        self._policies = [p for p in self._policies if p.name != name]
        self._by_type.clear()
        return before - len(self._policies)

    def __len__(self) -> int:
        return len(self._policies)

    def all(self) -> tuple[MutationPolicy[Any], ...]:
        return tuple(sort_policies(self._policies))

    def applicable(self, state_type: type[Any]) -> tuple[MutationPolicy[Any], ...]:
        cached = self._by_type.get(state_type)
        if cached is None:
            cached = tuple(
                p
                for p in sort_policies(self._policies)
                if p.state_type is None or issubclass(state_type, p.state_type)
            )
            self._by_type[state_type] = cached
        return cached


@functools.lru_cache(maxsize=4096)
def _allowed_by(name: str) -> PolicyDecision:
    """The plain allow decision of the policy called ``name`` (shared, immutable)."""
    return PolicyDecision(True, None, name)


def allowed_evaluation(policies: Sequence[MutationPolicy[Any]]) -> PolicyEvaluation:
    """The evaluation of ``policies`` when every one returns the shared allow decision.

    Computed once per policy set; the engine hands it out whenever that is what happened.
    """
    return PolicyEvaluation(tuple(_allowed_by(policy.name) for policy in policies))


def call_policy(
    policy: MutationPolicy[Any],
    mutation: Any,
    state: Any,
    context: MutationContext,
    execution_id: str | None,
) -> Any:
    """``policy.evaluate(...)``, with what it raises turned into a policy error."""
    try:
        return policy.evaluate(mutation, state, context)
    except (MutatorError, DeadlineExpired) as error:
        if isinstance(error, MutatorError) and error.execution_id is None:
            error.execution_id = execution_id
        raise
    except Exception as error:
        raise PolicyEvaluationError(
            policy.name, f"{type(error).__name__}: {error}", execution_id=execution_id
        ) from error


def allow_prefix(
    policies: Sequence[MutationPolicy[Any]],
    mutation: Any,
    state: Any,
    context: MutationContext,
    limit: float | None,
    execution_id: str | None,
) -> tuple[int, Any, float]:
    """Evaluate policies in order while each one synchronously returns the shared allow.

    Returns ``(index, outcome, called_at)``: the first policy that returned anything else,
    what it returned (not yet awaited or checked) and when it was called
    (``time.perf_counter``); ``index == len(policies)`` when every policy allowed. A policy
    that raises or runs past ``limit`` raises here, as in :func:`decide`.
    """
    clock = time.perf_counter
    called_at = clock() if limit is not None else 0.0
    for index, policy in enumerate(policies):
        try:  # call_policy, inlined
            outcome = policy.evaluate(mutation, state, context)
        except (MutatorError, DeadlineExpired) as error:
            if isinstance(error, MutatorError) and error.execution_id is None:
                error.execution_id = execution_id
            raise
        except Exception as error:
            raise PolicyEvaluationError(
                policy.name, f"{type(error).__name__}: {error}", execution_id=execution_id
            ) from error
        if outcome is not _ALLOW:
            return index, outcome, called_at
        if limit is not None:
            now = clock()
            if now - called_at > limit:
                raise PolicyTimeoutError(policy.name, limit, execution_id=execution_id)
            called_at = now
    return len(policies), None, called_at


async def settle(
    policy: MutationPolicy[Any],
    outcome: Any,
    called_at: float,
    limit: float | None,
    execution_id: str | None = None,
    deadline: float | None = None,
) -> PolicyDecision:
    """Turn what ``policy.evaluate`` returned at ``called_at`` into its named decision.

    An awaitable is awaited within the policy's ``limit`` (seconds) and the execution's
    ``deadline`` (event-loop clock; running past it raises :class:`DeadlineExpired` for the
    engine); a plain value is checked against ``limit`` after the fact.
    """
    name = policy.name
    decision = outcome
    try:
        if decision is _ALLOW or type(decision) is PolicyDecision:
            pass
        elif is_awaitable(decision):
            if limit is None and deadline is None:
                decision = await decision
            else:
                ends = min(
                    math.inf if limit is None else current_time() + limit,
                    math.inf if deadline is None else deadline,
                )
                with anyio.CancelScope(deadline=ends) as scope:
                    decision = await decision
                if scope.cancelled_caught:
                    if deadline is not None and current_time() >= deadline:
                        raise DeadlineExpired
                    assert limit is not None
                    raise PolicyTimeoutError(name, limit, execution_id=execution_id)
            limit = None  # an awaited decision was bounded by its cancel scope
        if limit is not None and time.perf_counter() - called_at > limit:
            raise PolicyTimeoutError(name, limit, execution_id=execution_id)
    except (MutatorError, DeadlineExpired) as error:
        if isinstance(error, MutatorError) and error.execution_id is None:
            error.execution_id = execution_id
        raise
    except Exception as error:
        raise PolicyEvaluationError(
            name, f"{type(error).__name__}: {error}", execution_id=execution_id
        ) from error
    if decision is _ALLOW:
        return _allowed_by(name)
    if not isinstance(decision, PolicyDecision):
        raise PolicyEvaluationError(
            name,
            f"evaluate() returned {type(decision).__name__}, expected PolicyDecision",
            execution_id=execution_id,
        )
    named: PolicyDecision = decision
    if named.policy_name is None:
        named = attrs.evolve(named, policy_name=name)
    return named


async def decide(
    policy: MutationPolicy[Any],
    mutation: Any,
    state: Any,
    context: MutationContext,
    limit: float | None,
    execution_id: str | None = None,
    deadline: float | None = None,
) -> PolicyDecision:
    """Run one policy within its time limit and turn its failures into policy errors.

    ``limit`` is the policy's own budget in seconds; ``deadline`` (event-loop clock) is the
    execution's, and running past it raises :class:`DeadlineExpired` for the engine.
    """
    called_at = time.perf_counter() if limit is not None else 0.0
    outcome = call_policy(policy, mutation, state, context, execution_id)
    return await settle(policy, outcome, called_at, limit, execution_id, deadline)


async def evaluate_policies(
    policies: Sequence[MutationPolicy[Any]],
    mutation: Any,
    state: Any,
    context: MutationContext,
    limit: float | None,
    execution_id: str | None = None,
    deadline: float | None = None,
) -> PolicyEvaluation:
    """Evaluate every policy in order and merge their modifications."""
    if not policies:
        return ALLOWED
    decisions = [
        await decide(policy, mutation, state, context, limit, execution_id, deadline)
        for policy in policies
    ]
    return _combine(decisions, execution_id)


async def evaluate_rest(
    policies: Sequence[MutationPolicy[Any]],
    index: int,
    outcome: Any,
    called_at: float,
    mutation: Any,
    state: Any,
    context: MutationContext,
    limit: float | None,
    execution_id: str | None = None,
    deadline: float | None = None,
    allowed: PolicyEvaluation | None = None,
) -> PolicyEvaluation:
    """Finish an evaluation that :func:`allow_prefix` stopped at ``index`` with ``outcome``.

    ``allowed`` is :func:`allowed_evaluation` of ``policies``: it is returned itself when
    every policy allowed with the shared allow (awaited or not), as the engine's plan does
    for policies that allow synchronously.
    """
    decisions = [_allowed_by(policy.name) for policy in policies[:index]]
    decisions.append(
        await settle(policies[index], outcome, called_at, limit, execution_id, deadline)
    )
    decisions.extend(
        [
            await decide(policy, mutation, state, context, limit, execution_id, deadline)
            for policy in policies[index + 1 :]
        ]
    )
    if allowed is not None and all(map(operator.is_, decisions, allowed.decisions)):
        return allowed
    return _combine(decisions, execution_id)


def _combine(decisions: list[PolicyDecision], execution_id: str | None) -> PolicyEvaluation:
    modification = None
    if any(d.modifications is not None for d in decisions):
        modification = merge_modifications(decisions, execution_id=execution_id)
    return PolicyEvaluation(tuple(decisions), modification)


def merge_modifications(
    decisions: Iterable[PolicyDecision],
    *,
    composition: str | None = None,
    execution_id: str | None = None,
) -> PolicyModification | None:
    """Merge modifications: side effects concatenate, replacement states must agree.

    Two decisions replacing the state with unequal values raise :class:`PolicyConflictError`
    naming the key ``"state"`` and every policy that wrote it.
    """
    state: Any = NOTHING
    writers: list[str] = []
    side_effects: list[SideEffect] = []
    conflict = False
    seen = False
    for decision in decisions:
        modification = decision.modifications
        if modification is None:
            continue
        seen = True
        side_effects.extend(modification.side_effects)
        if modification.replaces_state:
            if writers and not _same(state, modification.state):
                conflict = True
            if not writers:
                state = modification.state
            writers.append(decision.policy_name or "<unnamed>")
    if conflict:
        raise PolicyConflictError(
            "state", writers, composition=composition, execution_id=execution_id
        )
    if not seen:
        return None
    return PolicyModification(state, tuple(side_effects))


def _same(left: Any, right: Any) -> bool:
    if left is right:
        return True
    try:
        return bool(left == right)
    except Exception:
        return False
