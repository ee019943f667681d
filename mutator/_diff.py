"""Structural diff of two states into a :class:`ChangeSet`.

The engine calls :func:`diff` when a mutation returns a bare new state. States are usually
immutable and built with ``attrs.evolve``, so unchanged sub-objects are shared: identity is
checked before equality, and only the parts that are not the same object are walked.
"""

from __future__ import annotations

import dataclasses
import keyword
from collections.abc import Callable, Mapping
from itertools import compress, count, filterfalse, repeat
from operator import attrgetter, is_not
from typing import Any, Final

import attrs

from ._changes import EMPTY_CHANGES, ChangeSet, StateChange
from ._enums import ChangeType
from ._errors import StateDiffError
from ._trusted import builder, trusted

__all__ = ["diff", "differ"]

MAX_DEPTH: Final = 64
"""Containers nested deeper than this are reported as a :class:`StateDiffError` (cycles)."""

_BLOCK: Final = 256
"""Sequences longer than this are first compared slice by slice (C speed) to skip equal runs."""

_LEAF: Final = 0
_FIELDS: Final = 1
_MAPPING: Final = 2
_SEQUENCE: Final = 3
_SET: Final = 4

_Getter = Callable[[Any], tuple[Any, ...]]
_FieldsWalker = Callable[[Any, Any, str, int, list["StateChange"]], None]
"""Compares the fields of two instances of one class: (old, new, path, depth, out)."""
_Shape = tuple[int, tuple[str, ...], _FieldsWalker | None]

_MISSING: Final = object()

_SCALARS: Final = frozenset({int, float, complex, str, bytes, bool, type(None)})
"""Leaf types compared inline: built-in, never walked into, and == never raises."""

_MODIFIED: Final = ChangeType.MODIFIED
_change = trusted(StateChange)
_change_set = trusted(ChangeSet)
_CHANGE_BUILDER: Final = builder(StateChange)
_CHANGE_SET_BUILDER: Final = builder(ChangeSet)

_shapes: dict[type[Any], _Shape] = {}
"""Per-class kind and compared field names, computed once per class."""

_Root = Callable[[Any, Any], ChangeSet]
_roots: dict[type[Any], _Root] = {}
"""Per attrs class or dataclass: the whole diff of two of its instances, generated once."""


def diff(old: object, new: object) -> ChangeSet:
    """Return the changes that turn ``old`` into ``new``, one :class:`StateChange` per path.

    Raises :class:`StateDiffError` when a part of either state cannot be walked or compared.
    """
    if old is new:
        return EMPTY_CHANGES
    cls = type(old)
    if type(new) is cls:
        root = _roots.get(cls)
        if root is not None:
            # The common root: two instances of one attrs class or dataclass.
            return root(old, new)
    out: list[StateChange] = []
    try:
        _walk(old, new, "", 0, out)
    except RecursionError as exc:
        raise _too_deep(exc) from exc
    if cls not in _roots and type(new) is cls and _shape(cls)[0] == _FIELDS:
        _roots[cls] = _root(cls, _shapes[cls][1])
    return _change_set(tuple(out)) if out else EMPTY_CHANGES


def differ(cls: type[Any]) -> Callable[[Any, Any], ChangeSet]:
    """:func:`diff` for two instances of exactly ``cls`` (worked out once per class).

    For an attrs class or dataclass, its generated root; otherwise :func:`diff` itself.
    """
    root = _roots.get(cls)
    if root is None:
        if _shape(cls)[0] != _FIELDS:
            return diff
        root = _roots[cls] = _root(cls, _shapes[cls][1])
    return root


def _too_deep(exc: RecursionError) -> StateDiffError:
    return StateDiffError("", f"the state is nested too deeply to walk: {exc}")


def _shape(cls: type[Any]) -> _Shape:
    shape = _shapes.get(cls)
    if shape is None:
        shape = _shapes[cls] = _classify(cls)
    return shape


def _classify(cls: type[Any]) -> _Shape:
    if attrs.has(cls):
        names = tuple(field.name for field in attrs.fields(cls) if field.eq)
        return _FIELDS, names, _fields_walker(cls, names)
    if dataclasses.is_dataclass(cls):
        names = tuple(field.name for field in dataclasses.fields(cls) if field.compare)
        return _FIELDS, names, _fields_walker(cls, names)
    if issubclass(cls, Mapping):
        return _MAPPING, (), None
    if issubclass(cls, (list, tuple)):
        return _SEQUENCE, (), None
    if issubclass(cls, (set, frozenset)):
        return _SET, (), None
    return _LEAF, (), None


def _read_fields(names: tuple[str, ...], indent: str, path: str) -> list[str]:
    """Generated lines reading every field of ``old`` and ``new`` into ``o<i>``/``n<i>``.

    A field that cannot be read raises the located error for ``path`` (an expression).
    """
    if not names:
        return []
    lines = [f"{indent}try:"]
    for index, name in enumerate(names):
        lines += [f"{indent}    o{index} = old.{name}", f"{indent}    n{index} = new.{name}"]
    return [
        *lines,
        f"{indent}except Exception as exc:",
        f"{indent}    raise _unreadable_field(old, new, _names, {path}, exc) from exc",
    ]


def _fields_walker(cls: type[Any], names: tuple[str, ...]) -> _FieldsWalker:
    """A walker of ``cls``'s compared fields, generated once per class.

    Every field is read with a plain attribute access; fields holding the same object are
    skipped, built-in scalars (:data:`_SCALARS`) are compared inline, anything else is
    walked. Unusual field names fall back to the generic walker.
    """
    if not all(name.isidentifier() and not keyword.iskeyword(name) for name in names):
        getter = _getter(names)
        return lambda old, new, path, depth, out: _walk_fields(
            old, new, names, getter, path, depth, out
        )
    lines = ["def walk(old, new, path, depth, out):", *_read_fields(names, "    ", "path")]
    for index, name in enumerate(names):
        o, n, where = f"o{index}", f"n{index}", f'(f"{{path}}.{name}" if path else "{name}")'
        lines += [
            f"    if {o} is not {n}:",
            f"        kind = type({o})",
            f"        if kind in _SCALARS and type({n}) is kind:",
            f"            if {o} != {n}:",
            f"                out.append(_change({where}, {o}, {n}, _MODIFIED))",
            "        else:",
            f"            _walk({o}, {n}, {where}, depth + 1, out)",
        ]
    lines.append("    return None")
    namespace: dict[str, Any] = {
        "_names": names,
        "_SCALARS": _SCALARS,
        "_MODIFIED": _MODIFIED,
        "_change": _change,
        "_walk": _walk,
        "_unreadable_field": _unreadable_field,
    }
    exec("\n".join(lines), namespace)  # generated from identifiers only
    walk: _FieldsWalker = namespace["walk"]
    walk.__qualname__ = f"diff.fields({cls.__qualname__})"
    return walk


def _root(cls: type[Any], names: tuple[str, ...]) -> _Root:
    """The whole diff of two instances of ``cls``, generated once per class.

    Like :func:`_fields_walker` at the root, and it also builds the :class:`StateChange`
    values of changed scalar fields and the resulting :class:`ChangeSet` inline (trusted
    construction, see :mod:`mutator._trusted`).
    """
    if not all(name.isidentifier() and not keyword.iskeyword(name) for name in names):
        walk = _shapes[cls][2]
        assert walk is not None

        def generic(old: Any, new: Any) -> ChangeSet:
            out: list[StateChange] = []
            try:
                walk(old, new, "", 0, out)
            except RecursionError as exc:
                raise _too_deep(exc) from exc
            return _change_set(tuple(out)) if out else EMPTY_CHANGES

        return generic
    lines = ["def root(old, new):", "    out = []", "    try:"]
    lines += _read_fields(names, "        ", "''")
    for index, name in enumerate(names):
        o, n = f"o{index}", f"n{index}"
        lines += [
            f"        if {o} is not {n}:",
            f"            kind = type({o})",
            f"            if kind in _SCALARS and type({n}) is kind:",
            f"                if {o} != {n}:",
            "                    change = _ChangeBuilder()",
            f"                    change.path = {name!r}",
            f"                    change.old_value = {o}",
            f"                    change.new_value = {n}",
            "                    change.type = _MODIFIED",
            "                    change.__class__ = _StateChange",
            "                    out.append(change)",
            "            else:",
            f"                _walk({o}, {n}, {name!r}, 1, out)",
        ]
    lines += [
        "    except RecursionError as exc:",
        "        raise _too_deep(exc) from exc",
        "    if not out:",
        "        return _EMPTY",
        "    changes = _ChangeSetBuilder()",
        "    changes.changes = tuple(out)",
        "    changes.__class__ = _ChangeSet",
        "    return changes",
    ]
    namespace: dict[str, Any] = {
        "_names": names,
        "_SCALARS": _SCALARS,
        "_MODIFIED": _MODIFIED,
        "_EMPTY": EMPTY_CHANGES,
        "_ChangeBuilder": _CHANGE_BUILDER,
        "_StateChange": StateChange,
        "_ChangeSetBuilder": _CHANGE_SET_BUILDER,
        "_ChangeSet": ChangeSet,
        "_walk": _walk,
        "_unreadable_field": _unreadable_field,
        "_too_deep": _too_deep,
    }
    exec("\n".join(lines), namespace)  # generated from identifiers only
    root: _Root = namespace["root"]
    root.__qualname__ = f"diff.root({cls.__qualname__})"
    return root


def _getter(names: tuple[str, ...]) -> _Getter:
    """A C-level reader of all compared fields at once, always returning a tuple."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        single = attrgetter(names[0])
        return lambda obj: (single(obj),)
    return attrgetter(*names)


def _walk(old: Any, new: Any, path: str, depth: int, out: list[StateChange]) -> None:
    cls = type(old)
    kind, _, walk_fields = _shapes.get(cls) or _shape(cls)
    if type(new) is not cls:
        new_kind = _shape(type(new))[0]
        # Mappings and sets compare by content across concrete types (dict == MappingProxyType).
        if kind != new_kind or kind not in (_LEAF, _MAPPING, _SET):
            out.append(_change(path, old, new, ChangeType.REPLACED))
            return
    if kind == _LEAF:
        _compare_leaf(old, new, path, out)
        return
    if depth >= MAX_DEPTH:
        raise StateDiffError(
            path, f"the state is nested deeper than {MAX_DEPTH} levels (is it cyclic?)"
        )
    if kind == _FIELDS:
        assert walk_fields is not None
        walk_fields(old, new, path, depth, out)
    elif kind == _MAPPING:
        _walk_mapping(old, new, path, depth, out)
    elif kind == _SEQUENCE:
        _walk_sequence(old, new, path, depth, out)
    else:
        _walk_set(old, new, path, out)


def _compare_leaf(old: Any, new: Any, path: str, out: list[StateChange]) -> None:
    try:
        equal = bool(old == new)
    except Exception as exc:
        raise StateDiffError(
            path,
            f"comparing {type(old).__name__} with {type(new).__name__} raised "
            f"{type(exc).__name__}: {exc}",
        ) from exc
    if not equal:
        out.append(_change(path, old, new, _MODIFIED))


def _walk_fields(
    old: Any,
    new: Any,
    names: tuple[str, ...],
    getter: _Getter,
    path: str,
    depth: int,
    out: list[StateChange],
) -> None:
    try:
        old_values = getter(old)
        new_values = getter(new)
    except Exception as exc:
        raise _unreadable_field(old, new, names, path, exc) from exc
    for index in compress(count(), map(is_not, old_values, new_values)):
        name = names[index]
        old_value = old_values[index]
        new_value = new_values[index]
        kind = type(old_value)
        if kind in _SCALARS and type(new_value) is kind:
            # A leaf whose == cannot raise: compared here instead of by _walk.
            if old_value != new_value:
                out.append(
                    _change(f"{path}.{name}" if path else name, old_value, new_value, _MODIFIED)
                )
            continue
        _walk(old_value, new_value, f"{path}.{name}" if path else name, depth + 1, out)


def _unreadable_field(
    old: Any, new: Any, names: tuple[str, ...], path: str, exc: Exception
) -> StateDiffError:
    """Name the first field that cannot be read, for a precise error path."""
    for name in names:
        for obj in (old, new):
            try:
                getattr(obj, name)
            except Exception as field_exc:
                where = f"{path}.{name}" if path else name
                return StateDiffError(
                    where,
                    f"cannot read field {name!r} of {type(obj).__name__}: "
                    f"{type(field_exc).__name__}: {field_exc}",
                )
    return StateDiffError(path, f"cannot read fields: {type(exc).__name__}: {exc}")


def _key_path(path: str, key: object) -> str:
    if isinstance(key, str):
        text = str.__str__(key)
        if text.isidentifier():
            return f"{path}.{text}" if path else text
        return f"{path}[{text!r}]"
    return f"{path}[{key!r}]"


def _walk_mapping(
    old: Mapping[Any, Any], new: Mapping[Any, Any], path: str, depth: int, out: list[StateChange]
) -> None:
    try:
        candidates = list(
            compress(old.keys(), map(is_not, old.values(), map(new.get, old, repeat(_MISSING))))
        )
    except Exception as exc:
        raise StateDiffError(path, f"cannot iterate mapping: {type(exc).__name__}: {exc}") from exc
    removed = 0
    for key in candidates:
        try:
            key_path = _key_path(path, key)
            old_value = old[key]
            new_value = new.get(key, _MISSING)
        except Exception as exc:
            raise StateDiffError(
                path, f"cannot read key {key!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if new_value is _MISSING:
            removed += 1
            out.append(_change(key_path, old_value, None, ChangeType.REMOVED))
        else:
            _walk(old_value, new_value, key_path, depth + 1, out)
    if len(new) == len(old) - removed:
        return
    try:
        added = [
            _change(_key_path(path, key), None, new[key], ChangeType.ADDED)
            for key in filterfalse(old.__contains__, new)
        ]
    except Exception as exc:
        raise StateDiffError(path, f"cannot iterate mapping: {type(exc).__name__}: {exc}") from exc
    out.extend(added)


def _differing_indices(old: Any, new: Any, length: int) -> list[int]:
    """Indices below ``length`` whose items may differ, found without a Python-level loop.

    Long sequences are compared block by block first, so runs of equal items are skipped;
    within the remaining blocks every item that is not the same object is a candidate.
    """
    if length <= _BLOCK:
        return list(compress(count(), map(is_not, old, new)))
    indices: list[int] = []
    for start in range(0, length, _BLOCK):
        stop = min(start + _BLOCK, length)
        old_block = old[start:stop]
        new_block = new[start:stop]
        try:
            equal = old_block == new_block
        except Exception:
            equal = False  # an item's == raised; the per-item walk reports it with its path
        if not equal:
            indices.extend(compress(count(start), map(is_not, old_block, new_block)))
    return indices


def _walk_sequence(old: Any, new: Any, path: str, depth: int, out: list[StateChange]) -> None:
    old_length = len(old)
    new_length = len(new)
    common = min(old_length, new_length)
    for index in _differing_indices(old, new, common):
        old_value = old[index]
        new_value = new[index]
        kind = type(old_value)
        if kind in _SCALARS and type(new_value) is kind:
            if old_value != new_value:
                out.append(_change(f"{path}[{index}]", old_value, new_value, _MODIFIED))
            continue
        _walk(old_value, new_value, f"{path}[{index}]", depth + 1, out)
    if new_length > common:
        out.extend(
            _change(f"{path}[{index}]", None, new[index], ChangeType.ADDED)
            for index in range(common, new_length)
        )
    elif old_length > common:
        out.extend(
            _change(f"{path}[{index}]", old[index], None, ChangeType.REMOVED)
            for index in range(common, old_length)
        )


def _walk_set(old: Any, new: Any, path: str, out: list[StateChange]) -> None:
    try:
        removed = sorted(old - new, key=repr)
        added = sorted(new - old, key=repr)
    except Exception as exc:
        raise StateDiffError(path, f"cannot compare sets: {type(exc).__name__}: {exc}") from exc
    out.extend(_change(path, element, None, ChangeType.REMOVED) for element in removed)
    out.extend(_change(path, None, element, ChangeType.ADDED) for element in added)
