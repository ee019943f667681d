"""What a mutation means: its intent, risk and reach."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._enums import BlastRadiusScope, RiskLevel
from ._freeze import freeze_mapping, name_set

__all__ = ["BlastRadius", "MutationIntent"]


@attrs.frozen
class BlastRadius:
    """An estimate of how much a mutation touches."""

    scope: BlastRadiusScope = BlastRadiusScope.SINGLE
    estimated_affected: int | None = None
    description: str | None = None

    @classmethod
    def single(cls, description: str | None = None) -> BlastRadius:
        """Touches one entity."""
        return cls(BlastRadiusScope.SINGLE, 1, description)

    @classmethod
    def module(cls, description: str | None = None) -> BlastRadius:
        """Touches one module or tenant's worth of entities."""
        return cls(BlastRadiusScope.MODULE, None, description)

    @classmethod
    def system(cls, description: str | None = None) -> BlastRadius:
        """Touches a whole system."""
        return cls(BlastRadiusScope.SYSTEM, None, description)

    @classmethod
    def global_(cls, description: str | None = None) -> BlastRadius:
        """Touches everything (``global`` is a keyword, hence the underscore)."""
        return cls(BlastRadiusScope.GLOBAL, None, description)


def _operation(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"MutationIntent.{attribute.name} must be a non-blank string")


@attrs.frozen
class MutationIntent:
    """The declared meaning of a mutation type: operation, category, risk and reach.

    Declared once per mutation class (``intent: ClassVar[MutationIntent] = ...``); the engine
    copies it into audit and history entries, and policies and governance queries read it.
    """

    operation: str = attrs.field(validator=_operation)
    category: str = "general"
    description: str | None = None
    risk: RiskLevel = RiskLevel.LOW
    reversible: bool = True
    blast_radius: BlastRadius | None = None
    tags: frozenset[str] = attrs.field(default=frozenset(), converter=name_set)
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=freeze_mapping, hash=False)
