"""The ``Mutation`` base class users subclass (usually as frozen attrs classes)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ._intent import MutationIntent
from ._validation import ValidationResult

if TYPE_CHECKING:
    from ._results import MutationResult

__all__ = ["Mutation"]

StateT = TypeVar("StateT")


class Mutation(Generic[StateT]):
    """A typed change to a state of type ``StateT``.

    Subclasses declare ``intent`` as a class attribute and implement :meth:`apply`, which
    returns the new state (the engine diffs it against the old one) or a
    :class:`MutationResult` with explicit changes and side effects. :meth:`validate`
    defaults to valid and :meth:`simulate` to :meth:`apply`. Any of them may be
    ``async def``. Mutations must not modify the state they are given.

    The new state must be an instance of the input state's class: the engine refuses
    anything else with :class:`InvalidMutationError` and records nothing as success. A
    mutation that legitimately returns another class (a migration to a new state class,
    say) lists it in ``result_types``.
    """

    __slots__ = ()

    intent: ClassVar[MutationIntent]
    result_types: ClassVar[tuple[type[Any], ...]] = ()
    """Classes ``apply``/``simulate`` may return besides the input state's class."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        intent = cls.__dict__.get("intent")
        if intent is not None and not isinstance(intent, MutationIntent):
            raise TypeError(
                f"{cls.__qualname__}.intent must be a MutationIntent, got {type(intent).__name__}"
            )
        result_types = cls.__dict__.get("result_types", ())
        if not isinstance(result_types, tuple) or not all(
            isinstance(kind, type) for kind in result_types
        ):
            raise TypeError(
                f"{cls.__qualname__}.result_types must be a tuple of classes, got {result_types!r}"
            )

    def validate(self, state: StateT) -> ValidationResult | Awaitable[ValidationResult]:
        """Check the mutation against ``state``; the default accepts everything."""
        return ValidationResult.ok()

    def apply(
        self, state: StateT
    ) -> StateT | MutationResult[StateT] | Awaitable[StateT | MutationResult[StateT]]:
        """Return the new state (never modify ``state`` in place)."""
        raise NotImplementedError(f"{type(self).__qualname__}.apply is not implemented")

    def simulate(
        self, state: StateT
    ) -> StateT | MutationResult[StateT] | Awaitable[StateT | MutationResult[StateT]]:
        """Preview the mutation; defaults to :meth:`apply`."""
        return self.apply(state)
