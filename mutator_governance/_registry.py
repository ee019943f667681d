"""Stable names for mutation and state classes, and the converter that stores them."""

from __future__ import annotations

from typing import Any, TypeVar

from mutator import Mutation

from ._errors import UnknownMutationTypeError

__all__ = ["MutationRegistry"]

T = TypeVar("T")


class MutationRegistry:
    """Maps stable names to mutation (and state) classes so requests survive restarts.

    Register every mutation class that is submitted for governance::

        registry = MutationRegistry()
        registry.register(IncreaseQuota, name="quota.increase")

    The name defaults to the class's ``intent.operation``.
    """

    def __init__(self) -> None:
        self._mutations: dict[str, type[Mutation[Any]]] = {}
        self._mutation_names: dict[type[Any], str] = {}
        self._states: dict[str, type[Any]] = {}
        self._state_names: dict[type[Any], str] = {}

    def register(self, cls: type[T], *, name: str | None = None) -> type[T]:
        """Register a :class:`mutator.Mutation` subclass under ``name``; returns the class."""
        if not isinstance(cls, type) or not issubclass(cls, Mutation):
            raise TypeError(f"register() takes a Mutation subclass, got {cls!r}")
        if name is None:
            intent = getattr(cls, "intent", None)
            if intent is None:
                raise TypeError(f"{cls.__qualname__} has no intent; pass name=...")
            name = str(intent.operation)
        self._bind(self._mutations, self._mutation_names, cls, name, "mutation")
        return cls

    def register_state(self, cls: type[T], *, name: str | None = None) -> type[T]:
        """Register a state class (needed by durable state stores); returns the class."""
        if not isinstance(cls, type):
            raise TypeError(f"register_state() takes a class, got {cls!r}")
        self._bind(self._states, self._state_names, cls, name or cls.__qualname__, "state")
        return cls

    def name_of(self, mutation: Mutation[Any] | type[Mutation[Any]]) -> str:
        """The registered name of a mutation or mutation class."""
        cls = mutation if isinstance(mutation, type) else type(mutation)
        name = self._mutation_names.get(cls)
        if name is None:
            raise UnknownMutationTypeError(
                f"mutation class {cls.__qualname__} is not registered: call "
                f"registry.register({cls.__name__}, name=...)"
            )
        return name

    def class_of(self, name: str) -> type[Mutation[Any]]:
        """The mutation class registered as ``name``."""
        cls = self._mutations.get(name)
        if cls is None:
            known = ", ".join(sorted(self._mutations)) or "none"
            raise UnknownMutationTypeError(
                f"no mutation registered as {name!r} (registered: {known})"
            )
        return cls

    def state_name_of(self, cls: type[Any]) -> str | None:
        return self._state_names.get(cls)

    def state_class_of(self, name: str) -> type[Any] | None:
        return self._states.get(name)

    @property
    def mutation_names(self) -> tuple[str, ...]:
        return tuple(self._mutations)

    @staticmethod
    def _bind(
        by_name: dict[str, Any],
        by_class: dict[type[Any], str],
        cls: type[Any],
        name: str,
        kind: str,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a {kind} name must be a non-blank string")
        existing = by_name.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"{kind} name {name!r} is already registered to {existing.__qualname__}"
            )
        previous = by_class.get(cls)
        if previous is not None and previous != name:
            raise ValueError(f"{cls.__qualname__} is already registered as {previous!r}")
        by_name[name] = cls
        by_class[cls] = name
