"""Recorded changes: one ``StateChange`` per path, collected in an immutable ``ChangeSet``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import attrs

from ._enums import ChangeType

__all__ = ["ChangeSet", "StateChange"]


@attrs.frozen
class StateChange:
    """One change at one path, e.g. ``quotas.alice`` or ``slots[3]``."""

    path: str
    old_value: Any = None
    new_value: Any = None
    type: ChangeType = ChangeType.MODIFIED

    @classmethod
    def modified(cls, path: str, old_value: Any, new_value: Any) -> StateChange:
        """A change of the value at ``path`` from ``old_value`` to ``new_value``."""
        return cls(path, old_value, new_value, ChangeType.MODIFIED)

    @classmethod
    def added(cls, path: str, value: Any) -> StateChange:
        """A new ``value`` at ``path``, where there was none."""
        return cls(path, None, value, ChangeType.ADDED)

    @classmethod
    def removed(cls, path: str, old_value: Any) -> StateChange:
        """The value at ``path`` removed (it was ``old_value``)."""
        return cls(path, old_value, None, ChangeType.REMOVED)

    @classmethod
    def replaced(cls, path: str, old_value: Any, new_value: Any) -> StateChange:
        """The value at ``path`` replaced wholesale (not edited in place)."""
        return cls(path, old_value, new_value, ChangeType.REPLACED)

    @classmethod
    def moved(cls, path: str, old_value: Any, new_value: Any) -> StateChange:
        """A MOVED change at ``path``, from ``old_value`` to ``new_value``.

        For mutations that report their own changes; the diff never produces one.
        """
        return cls(path, old_value, new_value, ChangeType.MOVED)


def _changes(value: Iterable[StateChange]) -> tuple[StateChange, ...]:
    changes = tuple(value)
    for change in changes:
        if not isinstance(change, StateChange):
            raise TypeError(f"a ChangeSet holds StateChange values, got {type(change).__name__}")
    return changes


@attrs.frozen
class ChangeSet(Sequence[StateChange]):
    """An immutable, ordered sequence of :class:`StateChange` values."""

    changes: tuple[StateChange, ...] = attrs.field(default=(), converter=_changes)

    @classmethod
    def of(cls, *changes: StateChange) -> ChangeSet:
        """A change set of the given changes, in the order given."""
        return cls(changes)

    def __len__(self) -> int:
        return len(self.changes)

    def __iter__(self) -> Iterator[StateChange]:
        return iter(self.changes)

    def __bool__(self) -> bool:
        return bool(self.changes)

    @overload
    def __getitem__(self, index: int) -> StateChange: ...
    @overload
    def __getitem__(self, index: slice) -> ChangeSet: ...
    def __getitem__(self, index: int | slice) -> StateChange | ChangeSet:
        if isinstance(index, slice):
            return ChangeSet(self.changes[index])
        return self.changes[index]

    def __add__(self, other: ChangeSet) -> ChangeSet:
        if not isinstance(other, ChangeSet):
            return NotImplemented
        if not other.changes:
            return self
        if not self.changes:
            return other
        return ChangeSet._trusted(self.changes + other.changes)

    def paths(self) -> tuple[str, ...]:
        """Changed paths, distinct, in first-seen order."""
        return tuple(dict.fromkeys(change.path for change in self.changes))

    def for_path(self, path: str) -> tuple[StateChange, ...]:
        """Changes recorded at exactly ``path``."""
        return tuple(change for change in self.changes if change.path == path)

    def touches(self, path: str) -> bool:
        """Whether ``path`` or anything below it changed."""
        return any(_within(change.path, path) for change in self.changes)

    @classmethod
    def _trusted(cls, changes: tuple[StateChange, ...]) -> ChangeSet:
        instance = object.__new__(cls)
        object.__setattr__(instance, "changes", changes)
        return instance


def _within(candidate: str, path: str) -> bool:
    if not candidate.startswith(path):
        return False
    rest = candidate[len(path) :]
    return rest == "" or rest[0] in ".["


EMPTY_CHANGES = ChangeSet()
