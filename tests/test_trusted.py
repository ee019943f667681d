"""Trusted constructors build the same frozen values their public constructors would."""

from __future__ import annotations

import pickle
import weakref
from typing import Any

import attrs
import pytest

from mutator import (
    ChangeSet,
    ChangeType,
    MutationMode,
    MutationResult,
    ResultStatus,
    StateChange,
    ValidationResult,
)
from mutator._trusted import trusted


def _result(build: Any) -> MutationResult[int]:
    changes = ChangeSet.of(StateChange.modified("value", 1, 2))
    return build(  # type: ignore[no-any-return]
        ResultStatus.SUCCEEDED,
        2,
        changes,
        (),
        ValidationResult.ok(),
        (),
        (),
        "x-1",
        0.5,
        MutationMode.COMMIT,
        None,
        False,
    )


def test_the_value_is_an_instance_of_the_class_itself_and_equals_a_public_one() -> None:
    built = _result(trusted(MutationResult))
    public = _result(MutationResult)
    assert type(built) is MutationResult
    assert built == public
    assert hash(built) == hash(public)
    assert repr(built) == repr(public)
    assert pickle.loads(pickle.dumps(built)) == public
    assert attrs.evolve(built, duration=1.0).duration == 1.0
    weakref.ref(built)


def test_the_value_stays_frozen() -> None:
    built = trusted(StateChange)("a", 1, 2, ChangeType.MODIFIED)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        built.path = "b"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        del built.path  # type: ignore[misc]


def test_generic_and_abstract_base_classes_are_supported() -> None:
    change = trusted(StateChange)("a", 1, 2, ChangeType.MODIFIED)
    changes = trusted(ChangeSet)((change,))
    assert type(changes) is ChangeSet
    assert changes == ChangeSet.of(StateChange.modified("a", 1, 2))
    assert list(changes) == [change]


def test_no_converter_or_validator_runs() -> None:
    # The public constructor would convert the list to a tuple; a trusted one stores it as is.
    raw: Any = [StateChange.modified("a", 1, 2)]
    assert MutationResult(ResultStatus.SUCCEEDED, changes=raw).changes == ChangeSet.of(*raw)
    built = trusted(ChangeSet)(raw)
    assert built.changes is raw


def test_classes_it_cannot_build_are_refused() -> None:
    class Plain:
        pass

    @attrs.frozen(slots=False)
    class NoSlots:
        value: int

    with pytest.raises(TypeError, match="not an attrs class"):
        trusted(Plain)
    with pytest.raises(TypeError, match="not a slot"):
        trusted(NoSlots)
