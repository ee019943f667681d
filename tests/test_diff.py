"""Behaviour of :func:`mutator._diff.diff`, the automatic change-set computation."""

from __future__ import annotations

import ast
import copy
import dataclasses
import enum
import re
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mutator._changes import EMPTY_CHANGES, ChangeSet, StateChange
from mutator._diff import MAX_DEPTH, diff
from mutator._enums import ChangeType
from mutator._errors import MutatorError, StateDiffError
from tests.strategies import (
    Box,
    Point,
    Tagged,
    json_states,
    mapping_keys,
    nested_states,
    state_pairs,
)

ADDED = ChangeType.ADDED
REMOVED = ChangeType.REMOVED
MODIFIED = ChangeType.MODIFIED
REPLACED = ChangeType.REPLACED

PROPERTY_SETTINGS = settings(
    max_examples=200, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@attrs.frozen
class Limits:
    max: int = 10
    min: int = 0


@attrs.frozen
class Account:
    quotas: Mapping[str, int] = attrs.field(factory=dict)
    limits: Limits = attrs.field(factory=Limits)
    slots: tuple[Any, ...] = ()
    revision: int = attrs.field(default=0, eq=False)


@attrs.frozen
class Item:
    name: str
    count: int = 0


@attrs.frozen
class Other:
    name: str


@attrs.define
class Slotted:
    value: int
    extra: int


@dataclasses.dataclass(frozen=True)
class Settings:
    mode: str
    retries: int = 3
    cache: Any = dataclasses.field(default=None, compare=False)


class Color(enum.StrEnum):
    RED = "red"


class Explosive:
    """A leaf whose equality check raises."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("cannot compare explosives")

    def __hash__(self) -> int:
        return 0


class Ambiguous:
    """A leaf whose ``==`` returns a value without a truth value, like a numpy array."""

    def __eq__(self, other: object) -> Any:
        return self

    def __bool__(self) -> bool:
        raise ValueError("truth value is ambiguous")

    __hash__ = object.__hash__


class BrokenMapping(Mapping[str, int]):
    """A mapping that fails while being iterated."""

    def __getitem__(self, key: str) -> int:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("iteration is broken")

    def __len__(self) -> int:
        return 1


def one(changes: ChangeSet) -> StateChange:
    assert len(changes) == 1, changes
    return changes[0]


class TestAttrsStates:
    def test_same_object_has_no_changes(self) -> None:
        """Diffing a state against itself returns the shared empty change set."""
        state = Account({"alice": 1})
        assert diff(state, state) is EMPTY_CHANGES

    def test_changed_field_is_reported_by_name(self) -> None:
        """A changed leaf field is MODIFIED at the field's name."""
        assert one(diff(Limits(max=1), Limits(max=2))) == StateChange.modified("max", 1, 2)

    def test_nested_fields_join_with_dots(self) -> None:
        """A field of a nested attrs value is reported at ``outer.inner``."""
        old = Account()
        new = attrs.evolve(old, limits=attrs.evolve(old.limits, max=99))
        assert one(diff(old, new)) == StateChange.modified("limits.max", 10, 99)

    def test_fields_excluded_from_eq_are_skipped(self) -> None:
        """Fields declared with ``eq=False`` never produce changes."""
        old = Account()
        assert diff(old, attrs.evolve(old, revision=7)) == EMPTY_CHANGES

    def test_shared_sub_objects_are_not_compared(self) -> None:
        """Sub-objects shared by identity are skipped without calling their ``==``."""
        old = Account(slots=(Explosive(), 1))
        new = attrs.evolve(old, limits=Limits(max=1))
        assert diff(old, new).paths() == ("limits.max",)

    def test_fields_are_reported_in_declaration_order(self) -> None:
        """Changes to several fields come out in field declaration order."""
        old = Account()
        new = Account(quotas={"bob": 1}, limits=Limits(min=-1), slots=(1,))
        assert diff(old, new).paths() == ("quotas.bob", "limits.min", "slots[0]")

    def test_dataclass_fields_are_walked(self) -> None:
        """Dataclass fields are walked like attrs fields, skipping ``compare=False``."""
        old = Settings("fast", cache=object())
        new = dataclasses.replace(old, retries=5, cache=object())
        assert one(diff(old, new)) == StateChange.modified("retries", 3, 5)

    def test_dataclass_nested_in_attrs(self) -> None:
        """A dataclass inside an attrs state is reported at ``field.name``."""
        old = Tagged("a", Settings("fast"))
        new = Tagged("a", Settings("slow"))
        assert one(diff(old, new)) == StateChange.modified("value.mode", "fast", "slow")


class TestMappings:
    def test_changed_value_uses_dotted_key(self) -> None:
        """An identifier-like key joins the path with a dot."""
        old = Account({"alice": 1, "bob": 2})
        new = attrs.evolve(old, quotas={"alice": 5, "bob": 2})
        assert one(diff(old, new)) == StateChange.modified("quotas.alice", 1, 5)

    def test_root_key_has_no_leading_dot(self) -> None:
        """At the root an identifier-like key is the whole path."""
        assert one(diff({"alice": 1}, {"alice": 2})) == StateChange.modified("alice", 1, 2)

    def test_non_identifier_string_key_uses_repr_in_brackets(self) -> None:
        """A string key that is not an identifier is written as ``[repr(key)]``."""
        old = Account({"a.b": 1})
        new = attrs.evolve(old, quotas={"a.b": 2})
        assert one(diff(old, new)).path == "quotas['a.b']"
        assert one(diff({"a.b": 1}, {"a.b": 2})).path == "['a.b']"

    def test_non_string_key_uses_repr_in_brackets(self) -> None:
        """A non-string key is written as ``[repr(key)]``."""
        assert one(diff({"quotas": {42: 1}}, {"quotas": {42: 2}})).path == "quotas[42]"
        assert one(diff({(1, 2): "a"}, {(1, 2): "b"})).path == "[(1, 2)]"

    def test_string_subclass_key_uses_its_text(self) -> None:
        """A ``str`` subclass key such as a ``StrEnum`` member is written by its text."""
        assert one(diff({Color.RED: 1}, {Color.RED: 2})).path == "red"

    def test_added_and_removed_keys(self) -> None:
        """Keys only in the new mapping are ADDED, keys only in the old one are REMOVED."""
        changes = diff({"alice": 1, "bob": 2}, {"bob": 2, "carol": 3})
        assert changes == ChangeSet.of(
            StateChange.removed("alice", 1), StateChange.added("carol", 3)
        )

    def test_removed_none_value_is_not_confused_with_missing(self) -> None:
        """Removing a key whose value is ``None`` is still reported as REMOVED."""
        assert one(diff({"a": None}, {})) == StateChange.removed("a", None)
        assert one(diff({}, {"a": None})) == StateChange.added("a", None)

    def test_key_order_does_not_matter(self) -> None:
        """Mappings with the same items in a different order have no changes."""
        assert diff({"a": 1, "b": 2}, {"b": 2, "a": 1}) == EMPTY_CHANGES

    def test_nested_mappings_join_paths(self) -> None:
        """Keys of nested mappings extend the path, mixing dots and brackets."""
        old = {"teams": {"core": {"a.b": [1]}}}
        new = {"teams": {"core": {"a.b": [2]}}}
        assert one(diff(old, new)).path == "teams.core['a.b'][0]"

    def test_mapping_types_compare_by_content(self) -> None:
        """A dict and a read-only view or OrderedDict with equal items have no changes."""
        items = {"alice": 1}
        assert diff(items, MappingProxyType(dict(items))) == EMPTY_CHANGES
        assert diff(OrderedDict(items), items) == EMPTY_CHANGES
        changed = diff(MappingProxyType(items), {"alice": 2})
        assert one(changed) == StateChange.modified("alice", 1, 2)


class TestSequences:
    def test_changed_index_uses_brackets(self) -> None:
        """A changed list item is reported at ``field[index]``."""
        old = Account(slots=(0, 0, 0, 0, 0))
        new = attrs.evolve(old, slots=(0, 0, 0, 7, 0))
        assert one(diff(old, new)) == StateChange.modified("slots[3]", 0, 7)

    def test_root_index_has_no_prefix(self) -> None:
        """At the root an index is the whole path."""
        assert one(diff([0, 1, 2, 3], [0, 1, 2, 4])).path == "[3]"

    def test_fields_of_items_follow_the_index(self) -> None:
        """A field of a sequence item is reported at ``field[index].name``."""
        old = {"items": [Item("a"), Item("b")]}
        new = {"items": [Item("z"), Item("b")]}
        assert one(diff(old, new)) == StateChange.modified("items[0].name", "a", "z")

    def test_nested_sequences_chain_brackets(self) -> None:
        """Items of nested sequences are reported at ``[i][j]``."""
        assert one(diff([[1, 2], [3, 4]], [[1, 2], [3, 5]])).path == "[1][1]"

    def test_trailing_items_added(self) -> None:
        """Items past the old length are ADDED at their index."""
        assert diff([1], [1, 2, 3]) == ChangeSet.of(
            StateChange.added("[1]", 2), StateChange.added("[2]", 3)
        )

    def test_trailing_items_removed(self) -> None:
        """Items past the new length are REMOVED at their index."""
        assert diff((1, 2, 3), (9,)) == ChangeSet.of(
            StateChange.modified("[0]", 1, 9),
            StateChange.removed("[1]", 2),
            StateChange.removed("[2]", 3),
        )

    def test_equal_but_distinct_items_have_no_changes(self) -> None:
        """Items that are different objects but compare equal produce no changes."""
        old = [{"a": [i]} for i in range(1000)]
        new = [{"a": [i]} for i in range(1000)]
        assert diff(old, new) == EMPTY_CHANGES

    def test_large_list_with_one_change(self) -> None:
        """A 16384-slot list differing in one slot gives exactly that one change."""
        old = [Item(str(i)) for i in range(16384)]
        new = list(old)
        new[12345] = Item("changed")
        assert one(diff(old, new)) == StateChange.modified("[12345].name", "12345", "changed")
        assert one(diff({"slots": old}, {"slots": new})).path == "slots[12345].name"

    def test_large_list_diff_is_fast(self) -> None:
        """Diffing a 16384-slot list with one change avoids a Python-level loop per slot."""
        old = list(range(16384))
        new = list(old)
        new[9000] = -1
        best = min(_elapsed(diff, old, new) for _ in range(10))
        assert best < 0.005

    def test_large_list_reports_raising_items_with_their_path(self) -> None:
        """In a long list, an item whose ``==`` raises is reported at its own index."""
        old: list[Any] = list(range(1000))
        new = list(old)
        old[700] = Explosive()
        new[700] = Explosive()
        with pytest.raises(StateDiffError) as caught:
            diff(old, new)
        assert caught.value.path == "[700]"


class TestSets:
    def test_elements_added_and_removed_at_the_set_path(self) -> None:
        """Each new element is ADDED and each dropped one REMOVED, at the set's own path."""
        old = {"tags": frozenset({"a", "b", "c"})}
        new = {"tags": frozenset({"c", "d", "e"})}
        assert diff(old, new) == ChangeSet.of(
            StateChange.removed("tags", "a"),
            StateChange.removed("tags", "b"),
            StateChange.added("tags", "d"),
            StateChange.added("tags", "e"),
        )

    def test_elements_are_sorted_by_repr(self) -> None:
        """Set changes are ordered by the repr of their elements."""
        changes = diff(set(), {10, 9, "x", None})
        assert [change.new_value for change in changes] == sorted([10, 9, "x", None], key=repr)

    def test_set_and_frozenset_compare_by_content(self) -> None:
        """A set and a frozenset with the same elements have no changes."""
        assert diff({1, 2}, frozenset({1, 2})) == EMPTY_CHANGES

    def test_equal_sets_have_no_changes(self) -> None:
        """Distinct but equal sets produce no changes."""
        assert diff({"s": {1, 2}}, {"s": {2, 1}}) == EMPTY_CHANGES


class TestReplacement:
    def test_different_attrs_classes_are_replaced(self) -> None:
        """Values of different attrs classes are REPLACED without recursing."""
        old = {"owner": Item("a")}
        new = {"owner": Other("a")}
        assert one(diff(old, new)) == StateChange.replaced("owner", Item("a"), Other("a"))

    def test_different_container_kinds_are_replaced(self) -> None:
        """A list replaced by a dict is one REPLACED change."""
        assert one(diff({"v": [1]}, {"v": {"a": 1}})).type is REPLACED

    def test_list_and_tuple_are_replaced(self) -> None:
        """A list and a tuple are different sequence types, so they are REPLACED."""
        assert one(diff({"v": [1, 2]}, {"v": (1, 2)})) == StateChange.replaced("v", [1, 2], (1, 2))

    def test_leaf_and_container_are_replaced(self) -> None:
        """A leaf replaced by a container (or the reverse) is REPLACED."""
        assert one(diff({"v": None}, {"v": {"a": 1}})).type is REPLACED
        assert one(diff({"v": frozenset({1})}, {"v": 1})).type is REPLACED

    def test_root_replacement_has_empty_path(self) -> None:
        """Replacing the whole state is reported at the root path ``""``."""
        assert one(diff(Item("a"), Other("a"))) == StateChange.replaced("", Item("a"), Other("a"))

    def test_leaves_of_different_types_are_compared_by_value(self) -> None:
        """Leaves of different types are MODIFIED when unequal and unchanged when equal."""
        assert one(diff({"v": 1}, {"v": "1"})) == StateChange.modified("v", 1, "1")
        assert diff({"v": 1}, {"v": 1.0}) == EMPTY_CHANGES


class TestErrors:
    def test_raising_comparison_names_the_path(self) -> None:
        """A leaf whose ``==`` raises gives a StateDiffError at its path, chained to the cause."""
        with pytest.raises(
            StateDiffError, match=r"quotas\.alice.*cannot compare explosives"
        ) as caught:
            diff({"quotas": {"alice": Explosive()}}, {"quotas": {"alice": Explosive()}})
        assert caught.value.path == "quotas.alice"
        assert isinstance(caught.value.__cause__, ValueError)
        assert isinstance(caught.value, MutatorError)

    def test_comparison_without_truth_value_is_reported(self) -> None:
        """A leaf whose ``==`` result has no truth value gives a StateDiffError."""
        with pytest.raises(StateDiffError, match="ambiguous") as caught:
            diff([Ambiguous()], [Ambiguous()])
        assert caught.value.path == "[0]"

    def test_cyclic_states_are_reported(self) -> None:
        """Two distinct cyclic states give a StateDiffError rather than a RecursionError."""
        old: list[Any] = []
        old.append(old)
        new: list[Any] = []
        new.append(new)
        with pytest.raises(StateDiffError, match="deeper than 64") as caught:
            diff(old, new)
        assert caught.value.path.startswith("[0][0]")

    def test_nesting_limit(self) -> None:
        """Nesting up to the limit is walked; one level deeper is a StateDiffError."""
        assert diff(_nest(MAX_DEPTH, 1), _nest(MAX_DEPTH, 2)).paths() == ("[0]" * MAX_DEPTH,)
        with pytest.raises(StateDiffError):
            diff(_nest(MAX_DEPTH + 1, 1), _nest(MAX_DEPTH + 1, 2))

    def test_deep_mappings_are_reported(self) -> None:
        """Deeply nested mappings give a StateDiffError naming a dotted path."""
        old: dict[str, Any] = {}
        new: dict[str, Any] = {}
        for _ in range(200):
            old, new = {"n": old}, {"n": new}
        new_leaf = new
        for _ in range(200):
            new_leaf = new_leaf["n"]
        new_leaf["x"] = 1
        with pytest.raises(StateDiffError) as caught:
            diff(old, new)
        assert caught.value.path.startswith("n.n.n")

    def test_unreadable_field_names_the_field(self) -> None:
        """A slotted attrs value with an unset field gives a StateDiffError naming it."""
        broken = object.__new__(Slotted)
        object.__setattr__(broken, "value", 1)
        with pytest.raises(StateDiffError) as caught:
            diff({"s": Slotted(1, 2)}, {"s": broken})
        assert caught.value.path == "s.extra"
        assert isinstance(caught.value.__cause__, AttributeError)

    def test_unwalkable_mapping_names_its_path(self) -> None:
        """A mapping that cannot be iterated gives a StateDiffError at its path."""
        with pytest.raises(StateDiffError, match="iteration is broken") as caught:
            diff({"m": BrokenMapping()}, {"m": BrokenMapping()})
        assert caught.value.path == "m"

    def test_unorderable_set_elements_do_not_escape(self) -> None:
        """Set elements whose comparison raises give a StateDiffError at the set's path."""
        with pytest.raises(StateDiffError) as caught:
            diff({"s": {Explosive()}}, {"s": {Explosive()}})
        assert caught.value.path == "s"


class TestProperties:
    @PROPERTY_SETTINGS
    @given(nested_states(mapping_keys()))
    def test_identical_and_copied_states_have_no_changes(self, state: Any) -> None:
        """A state diffed against itself or a deep copy of itself has no changes."""
        assert diff(state, state) == EMPTY_CHANGES
        assert diff(state, copy.deepcopy(state)) == EMPTY_CHANGES

    @PROPERTY_SETTINGS
    @given(state_pairs(reshape=False))
    def test_same_shape_changes_are_exactly_the_differing_leaves(self, pair: Any) -> None:
        """For same-shaped states the changed paths are exactly the leaf paths that differ."""
        old, new = pair
        flat_old, flat_new = flatten(old), flatten(new)
        assert flat_old.keys() == flat_new.keys()
        differing = {path for path in flat_old if flat_old[path] != flat_new[path]}
        changes = diff(old, new)
        assert set(changes.paths()) == differing
        _check_change_values(old, new, changes)

    @PROPERTY_SETTINGS
    @given(state_pairs())
    def test_changes_cover_exactly_the_differing_paths(self, pair: Any) -> None:
        """With added, removed and replaced parts, changes cover exactly the differing paths."""
        old, new = pair
        changes = diff(old, new)
        assert covered_paths(old, new, changes) == differing_paths(old, new)
        _check_change_values(old, new, changes)
        _check_disjoint(old, new, changes)

    @PROPERTY_SETTINGS
    @given(state_pairs())
    def test_no_changes_exactly_when_equal(self, pair: Any) -> None:
        """The diff is empty exactly when the two states compare equal."""
        old, new = pair
        assert (diff(old, new) == EMPTY_CHANGES) == (old == new)

    @PROPERTY_SETTINGS
    @given(state_pairs(kinds=frozenset({"dict", "list"})))
    def test_applying_changes_to_old_gives_new(self, pair: Any) -> None:
        """For dict/list states, applying the changes to the old state yields the new one."""
        old, new = pair
        assert apply_changes(old, diff(old, new)) == new

    @PROPERTY_SETTINGS
    @given(st.tuples(json_states(mapping_keys()), json_states(mapping_keys())))
    def test_applying_changes_between_unrelated_states(self, pair: Any) -> None:
        """Applying the changes between two unrelated JSON states turns one into the other."""
        old, new = pair
        assert apply_changes(old, diff(old, new)) == new

    @PROPERTY_SETTINGS
    @given(state_pairs())
    def test_diff_is_deterministic(self, pair: Any) -> None:
        """Diffing the same pair twice gives equal change sets in the same order."""
        old, new = pair
        assert diff(old, new) == diff(old, new)
        assert diff(old, new) == diff(copy.deepcopy(old), copy.deepcopy(new))


# Reference model: an independent, deliberately simple walk used to check diff().

_MISSING = object()


def join_key(path: str, key: object) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def compared_fields(value: Any) -> list[str] | None:
    if attrs.has(type(value)):
        return [field.name for field in attrs.fields(type(value)) if field.eq]
    if dataclasses.is_dataclass(value):
        return [field.name for field in dataclasses.fields(value) if field.compare]
    return None


def flatten(value: object, path: str = "") -> dict[str, tuple[str, Any]]:
    """Map every path to a token: ``("leaf", value)`` or a marker naming the container type."""
    flat: dict[str, tuple[str, Any]] = {}
    names = compared_fields(value)
    if names is not None:
        flat[path] = ("object", type(value))
        for name in names:
            flat.update(flatten(getattr(value, name), join_key(path, name)))
    elif isinstance(value, dict):
        flat[path] = ("dict", dict)
        for key, item in value.items():
            flat.update(flatten(item, join_key(path, key)))
    elif isinstance(value, list | tuple):
        flat[path] = ("sequence", type(value))
        for index, item in enumerate(value):
            flat.update(flatten(item, f"{path}[{index}]"))
    else:
        flat[path] = ("leaf", value)
    return flat


def differing_paths(old: object, new: object) -> set[str]:
    flat_old, flat_new = flatten(old), flatten(new)
    return {
        path
        for path in flat_old.keys() | flat_new.keys()
        if flat_old.get(path, _MISSING) != flat_new.get(path, _MISSING)
    }


def covered_paths(old: object, new: object, changes: ChangeSet) -> set[str]:
    """The reference paths each change accounts for."""
    covered: set[str] = set()
    for change in changes:
        if _is_set_change(old, new, change):
            covered.add(change.path)
            continue
        before = {} if change.type is ADDED else flatten(change.old_value, change.path)
        after = {} if change.type is REMOVED else flatten(change.new_value, change.path)
        covered |= {
            path
            for path in before.keys() | after.keys()
            if before.get(path, _MISSING) != after.get(path, _MISSING)
        }
    return covered


def _is_set_change(old: object, new: object, change: StateChange) -> bool:
    if change.type not in (ADDED, REMOVED):
        return False
    before, after = resolve(old, change.path), resolve(new, change.path)
    return isinstance(before, frozenset | set) and isinstance(after, frozenset | set)


def _check_change_values(old: object, new: object, changes: ChangeSet) -> None:
    for change in changes:
        if _is_set_change(old, new, change):
            container = resolve(old if change.type is REMOVED else new, change.path)
            element = change.old_value if change.type is REMOVED else change.new_value
            assert element in container
            continue
        if change.type is not ADDED:
            assert resolve(old, change.path) is change.old_value
        else:
            assert resolve(old, change.path) is _MISSING
        if change.type is not REMOVED:
            assert resolve(new, change.path) is change.new_value
        else:
            assert resolve(new, change.path) is _MISSING


def _check_disjoint(old: object, new: object, changes: ChangeSet) -> None:
    """No change lies inside another, and only set changes share a path."""
    paths = changes.paths()
    for path in paths:
        for other in paths:
            assert path == other or not _within(path, other), (path, other)
    for path in paths:
        at_path = changes.for_path(path)
        if len(at_path) > 1:
            assert all(_is_set_change(old, new, change) for change in at_path)


def _within(candidate: str, path: str) -> bool:
    rest = candidate[len(path) :]
    return candidate.startswith(path) and (rest == "" or rest[0] in ".[")


_NAME = re.compile(r"[^.\[]+")


def parse_path(path: str) -> list[tuple[str, Any]]:
    """Split a path into ``(".", name)`` and ``("[]", literal)`` steps."""
    steps: list[tuple[str, Any]] = []
    index = 0
    while index < len(path):
        if path[index] == "[":
            end = path.index("]", index)
            while True:
                text = path[index + 1 : end]
                try:
                    literal = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    pass
                else:
                    if repr(literal) == text:
                        break
                end = path.index("]", end + 1)
            steps.append(("[]", literal))
            index = end + 1
        else:
            if path[index] == ".":
                assert index > 0, path
                index += 1
            match = _NAME.match(path, index)
            assert match is not None, path
            steps.append((".", match.group()))
            index = match.end()
    return steps


def _step(value: Any, step: tuple[str, Any]) -> Any:
    kind, key = step
    if isinstance(value, dict):
        return value.get(key, _MISSING)
    if kind == "[]" and isinstance(value, list | tuple):
        return value[key] if 0 <= key < len(value) else _MISSING
    if kind == "." and compared_fields(value) is not None:
        return getattr(value, key, _MISSING)
    return _MISSING


def resolve(value: Any, path: str) -> Any:
    for step in parse_path(path):
        value = _step(value, step)
        if value is _MISSING:
            break
    return value


def apply_changes(old: Any, changes: ChangeSet) -> Any:
    """Apply changes to a copy of a dict/list state, setting, adding and removing by path."""
    root = copy.deepcopy(old)
    removals: list[tuple[int, list[Any]]] = []
    for change in changes:
        if change.path == "":
            assert change.type in (MODIFIED, REPLACED)
            root = copy.deepcopy(change.new_value)
            continue
        *parents, (_, key) = parse_path(change.path)
        container = root
        for step in parents:
            container = _step(container, step)
        value = copy.deepcopy(change.new_value)
        if change.type in (MODIFIED, REPLACED):
            container[key] = value
        elif change.type is ADDED and isinstance(container, list):
            assert key == len(container)
            container.append(value)
        elif change.type is ADDED:
            assert key not in container
            container[key] = value
        elif isinstance(container, list):
            removals.append((key, container))
        else:
            del container[key]
    for index, container in sorted(removals, key=lambda removal: -removal[0]):
        assert index == len(container) - 1
        del container[index]
    return root


def _nest(depth: int, leaf: object) -> Any:
    value: Any = leaf
    for _ in range(depth):
        value = [value]
    return value


def _elapsed(function: Any, *args: Any) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


class TestReferenceModel:
    def test_paths_round_trip(self) -> None:
        """The reference path parser resolves every path the reference flattening writes."""
        state = {"a.b": [{"x": 1}], 42: {"q']": Point(1, 2)}, "ok": Box(Tagged("l", 1))}
        for path in flatten(state):
            assert resolve(state, path) is not _MISSING, path
