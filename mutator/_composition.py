"""Policy composition: several child policies that decide as one policy."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import attrs

from ._enums import Severity
from ._errors import PolicyConflictError
from ._evaluation import check_policy, decide, merge_modifications, sort_policies
from ._policies import MutationPolicy, PolicyDecision

if TYPE_CHECKING:
    from ._context import MutationContext
    from ._mutation import Mutation

__all__ = ["CompositionMode", "ComposedPolicy", "all_of", "any_of", "first_decisive"]

MODE_KEY = "composition.mode"
POLICIES_KEY = "composition.policies"
WINNING_KEY = "composition.winning"
BLOCKING_KEY = "composition.blocking"
_RESERVED_PREFIX = "composition."


class CompositionMode(enum.Enum):
    """How a :class:`ComposedPolicy` combines the decisions of its children."""

    ALL_OF = "all_of"
    ANY_OF = "any_of"
    FIRST_DECISIVE = "first_decisive"


class ComposedPolicy(MutationPolicy[Any]):
    """One policy built from child policies, evaluated in engine order (priority, then name).

    * ``ALL_OF``: blocked if any child denies, else needs approval if any child does,
      else allowed.
    * ``ANY_OF``: allowed if any child allows; otherwise blocked if any child denies,
      else needs approval.
    * ``FIRST_DECISIVE``: the first child that does not allow, or that carries
      modifications or requirements, decides alone; allowed if none does.

    The composed decision is named after the composition; its severity is the highest of
    the contributing children, its requirements theirs (when it needs approval), its
    modifications theirs merged (when allowed) and its metadata every evaluated child's,
    merged, plus the ``composition.*`` keys. Children whose ``state_type`` does not match
    the state are skipped, as the engine would skip them.
    """

    def __init__(
        self,
        name: str,
        mode: CompositionMode | str,
        policies: Iterable[MutationPolicy[Any]],
        *,
        priority: int = 0,
        description: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a policy composition needs a non-blank name, got {name!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"composition {name!r} needs an int priority, got {priority!r}")
        if description is not None and not isinstance(description, str):
            raise TypeError(f"composition {name!r}: description must be a str or None")
        children = list(policies)
        if not children:
            raise ValueError(f"composition {name!r} needs at least one policy")
        self.name = name
        self.priority = priority
        self.state_type = None
        self.description = description
        self.mode = CompositionMode(mode)
        self.policies: tuple[MutationPolicy[Any], ...] = tuple(
            sort_policies(check_policy(child) for child in children)
        )

    def __repr__(self) -> str:
        names = [policy.name for policy in self.policies]
        return f"ComposedPolicy({self.name!r}, {self.mode.value}, {names!r})"

    async def evaluate(
        self, mutation: Mutation[Any], state: Any, context: MutationContext
    ) -> PolicyDecision:
        """Evaluate the children and compose their decisions."""
        first_decisive = self.mode is CompositionMode.FIRST_DECISIVE
        decisions: list[PolicyDecision] = []
        for child in self.policies:
            if child.state_type is not None and not isinstance(state, child.state_type):
                continue
            decision = await decide(child, mutation, state, context, None)
            if decision.policy_name != child.name:
                decision = attrs.evolve(decision, policy_name=child.name)
            decisions.append(decision)
            if first_decisive and _decisive(decision):
                return self._compose(decisions, [decision])
        return self._compose(decisions, self._contributors(decisions))

    def _contributors(self, decisions: list[PolicyDecision]) -> list[PolicyDecision]:
        if self.mode is CompositionMode.ALL_OF:
            blockers = [d for d in decisions if d.blocks]
            if blockers:
                return blockers
            return [d for d in decisions if d.needs_approval] or decisions
        if self.mode is CompositionMode.ANY_OF:
            return [d for d in decisions if d.allowed] or decisions
        return decisions  # FIRST_DECISIVE with no decisive child

    def _compose(
        self, decisions: list[PolicyDecision], contributors: list[PolicyDecision]
    ) -> PolicyDecision:
        allowed = all(d.allowed for d in contributors)
        blocks = not allowed and any(d.blocks for d in contributors)
        if allowed:
            named, verb = contributors, "allowed by"
        elif blocks:
            named, verb = [d for d in contributors if d.blocks], "blocked by"
        else:
            named = [d for d in contributors if d.needs_approval]
            verb = "approval required by"
        requirements = () if allowed or blocks else tuple(r for d in named for r in d.requirements)
        modifications = (
            merge_modifications(contributors, composition=self.name) if allowed else None
        )
        metadata = self._merge_metadata(decisions)
        metadata[MODE_KEY] = self.mode.value
        metadata[POLICIES_KEY] = _names(decisions)
        metadata[WINNING_KEY] = _names(contributors) if allowed else ()
        metadata[BLOCKING_KEY] = _names(d for d in decisions if not d.allowed)
        return PolicyDecision(
            allowed,
            self._reason(verb, named, explain=not allowed),
            self.name,
            max((d.severity for d in contributors), default=Severity.INFO),
            requirements,
            modifications,
            cast(Any, metadata),  # mypy cannot infer the generic freeze_mapping converter
        )

    def _reason(self, verb: str, named: Sequence[PolicyDecision], *, explain: bool) -> str:
        if not named:
            return f"no policy in composition {self.name!r} applies"
        text = f"{verb} {', '.join(_names(named))}"
        reasons = dict.fromkeys(d.reason for d in named if d.reason and d.reason.strip())
        if explain and reasons:
            text += ": " + "; ".join(r for r in reasons if r)
        return text

    def _merge_metadata(self, decisions: list[PolicyDecision]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for decision in decisions:
            for key, value in decision.metadata.items():
                if isinstance(key, str) and key.startswith(_RESERVED_PREFIX):
                    continue  # a nested composition's own keys; ours replace them
                if key in merged and not _equal(merged[key], value):
                    writers = _names(d for d in decisions if key in d.metadata)
                    raise PolicyConflictError(f"metadata:{key}", writers, composition=self.name)
                merged.setdefault(key, value)
        return merged


def _decisive(decision: PolicyDecision) -> bool:
    """Stops ``FIRST_DECISIVE``; empty requirements do not count (unlike the reference)."""
    return not decision.allowed or decision.modifications is not None or bool(decision.requirements)


def _names(decisions: Iterable[PolicyDecision]) -> tuple[str, ...]:
    return tuple(d.policy_name or "<unnamed>" for d in decisions)


def _equal(left: Any, right: Any) -> bool:
    if left is right:
        return True
    try:
        return bool(left == right)
    except Exception:
        return False


def all_of(
    name: str, *policies: MutationPolicy[Any], priority: int = 0, description: str | None = None
) -> ComposedPolicy:
    """A policy that allows only when every child allows."""
    return ComposedPolicy(
        name, CompositionMode.ALL_OF, policies, priority=priority, description=description
    )


def any_of(
    name: str, *policies: MutationPolicy[Any], priority: int = 0, description: str | None = None
) -> ComposedPolicy:
    """A policy that allows when at least one child allows."""
    return ComposedPolicy(
        name, CompositionMode.ANY_OF, policies, priority=priority, description=description
    )


def first_decisive(
    name: str, *policies: MutationPolicy[Any], priority: int = 0, description: str | None = None
) -> ComposedPolicy:
    """A policy decided by the first child (in priority order) with something to say."""
    return ComposedPolicy(
        name, CompositionMode.FIRST_DECISIVE, policies, priority=priority, description=description
    )
