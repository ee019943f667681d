"""Exact (un)structuring of core values for durable stores.

:func:`make_converter` builds one :class:`cattrs.Converter` whose ``unstructure`` output is
plain JSON (dict, list, str, int, float, bool, None) and whose ``structure`` gives back the
same values with their types: ints stay ints, tuples stay tuples, timestamps stay aware
datetimes, enums stay enums and nested attrs classes stay instances.

Typed fields are written plainly (enums by value, datetimes as ISO-8601 strings, sets as
sorted lists). Values of ``Any``-typed fields (metadata values, state change values, side
effect data, replacement states) carry a small tag where JSON alone would lose the type:

======================================  ==========================================
value                                   encoding
======================================  ==========================================
str, int, bool, None, finite float      itself
NaN, inf, -inf                          ``{"$float": "nan" | "inf" | "-inf"}``
list                                    list of encoded items
dict with str keys, none starting "$"   dict of encoded values (MappingProxyType too)
any other dict                          ``{"$map": [[key, value], ...]}``
tuple                                   ``{"$tuple": [...]}``
set / frozenset                         ``{"$set": [...]}`` / ``{"$frozenset": [...]}``
datetime / date / time                  ``{"$datetime" | "$date" | "$time": iso}``
timedelta                               ``{"$timedelta": seconds}``
Decimal / UUID                          ``{"$decimal" | "$uuid": str}``
bytes                                   ``{"$bytes": base64}``
enum of a registered class              ``{"$enum": name, "value": value}``
registered attrs class / dataclass      ``{"$type": name, "value": {...}}``
side-effect payload                     ``{"$payload": name, "version": n, "value": {...}}``
======================================  ==========================================

Fields typed as a union of several types (``int | str | bytes | None``) hold the tagged
encoding too, so every member reads back as itself. Aware datetimes with a
:class:`zoneinfo.ZoneInfo` zone are written ``<ISO 8601>[<zone key>]`` and read back in
that zone, with the ``fold`` the offset implies.

Anything else (a value of an unregistered class, a value that does not match its
field's declared type) raises :class:`SerializationError` naming the field path, when
the value is written; register classes with ``MutationRegistry.register_value`` (or
``MutationRegistry.register_state`` for state classes).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import importlib
import json
import math
import re
import threading
import types
import typing
from collections.abc import (
    Callable,
    Collection,
    Mapping,
    MutableMapping,
    MutableSequence,
    MutableSet,
)
from collections.abc import Sequence as AbcSequence
from collections.abc import Set as AbstractSet
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from operator import attrgetter
from typing import Any, NoReturn, TypeVar, Union
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import cattrs
from cattrs.errors import ClassValidationError, IterableValidationError
from cattrs.fns import identity
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._changes import ChangeSet, StateChange
from ._composition import CompositionMode
from ._context import ExecutionContext, MutationContext, aware, optional_aware
from ._effects import SideEffect, SideEffectContract, payload_class, payload_contract
from ._enums import (
    ActorType,
    BlastRadiusScope,
    ChangeType,
    MutationMode,
    ResultStatus,
    RiskLevel,
    Severity,
)
from ._errors import MutatorError
from ._freeze import EMPTY_MAPPING, freeze_mapping, name_set, names, to_frozenset, to_tuple
from ._intent import BlastRadius, MutationIntent
from ._mutation import Mutation
from ._policies import NOTHING, PolicyDecision, PolicyModification, PolicyRequirement
from ._records import AuditEntry, AuditOutcome, HistoryEntry, HistoryStatistics, TimelineEntry
from ._trusted import trusted
from ._validation import ValidationIssue, ValidationResult

__all__ = [
    "SerializationError",
    "TypeRegistry",
    "fields_unstructurer",
    "make_converter",
    "unstructure",
    "structure",
]

T = TypeVar("T")
_Clock = TypeVar("_Clock", datetime, time)

Unstructure = Callable[[Any], Any]
Structure = Callable[[Any, Any], Any]

_NONE_TYPE = type(None)
_JSON_SCALARS = (str, int, float, bool, _NONE_TYPE)
_RESERVED_PREFIX = "mutator."
_CORE_TYPES: tuple[type[Any], ...] = (
    ActorType,
    AuditOutcome,
    BlastRadiusScope,
    ChangeType,
    MutationMode,
    ResultStatus,
    RiskLevel,
    Severity,
    AuditEntry,
    BlastRadius,
    ChangeSet,
    ExecutionContext,
    HistoryEntry,
    HistoryStatistics,
    MutationContext,
    MutationIntent,
    PolicyDecision,
    PolicyModification,
    PolicyRequirement,
    SideEffect,
    SideEffectContract,
    StateChange,
    TimelineEntry,
    ValidationIssue,
    ValidationResult,
    CompositionMode,
)
# Names that annotations of core classes use only under TYPE_CHECKING.
_LOCALNS: dict[str, Any] = {"Mutation": Mutation}
# Fields that are not part of a stored value (structured back as their default).
_OMITTED: dict[type[Any], frozenset[str]] = {HistoryEntry: frozenset({"mutation"})}


# --------------------------------------------------------------------------- errors


class SerializationError(MutatorError, ValueError):
    """A value could not be unstructured, or a document could not be structured.

    ``path`` names where in the document (``"context.metadata.limit"``, ``"changes[2]"``;
    empty for the root) and ``problem`` what went wrong; ``errors`` holds every
    ``(path, problem)`` pair when structuring found more than one.
    """

    errors: tuple[tuple[str, str], ...]

    def __init__(self, path: str, problem: str, *, execution_id: str | None = None) -> None:
        self.errors = ((path, problem),)
        super().__init__(self._render(), execution_id=execution_id)

    @property
    def path(self) -> str:
        """Where the (first) problem is, e.g. ``"context.metadata.limit"``."""
        return self.errors[0][0]

    @property
    def problem(self) -> str:
        """What the (first) problem is."""
        return self.errors[0][1]

    @classmethod
    def _of(cls, errors: list[tuple[str, str]]) -> SerializationError:
        error = cls(*errors[0])
        error._set(tuple(errors))
        return error

    def _push(self, segment: str) -> None:
        """Prefix every path with ``segment`` (the error left a nested value)."""
        if segment:
            self._set(tuple((_join(segment, path), problem) for path, problem in self.errors))

    def _set(self, errors: tuple[tuple[str, str], ...]) -> None:
        self.errors = errors
        self.args = (self._render(),)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_error, (self.errors, self.execution_id))

    def _render(self) -> str:
        shown = [f"{path or '<root>'}: {problem}" for path, problem in self.errors[:5]]
        if len(self.errors) > 5:
            shown.append(f"and {len(self.errors) - 5} more")
        return "; ".join(shown)


def _restore_error(
    errors: tuple[tuple[str, str], ...], execution_id: str | None
) -> SerializationError:
    error = SerializationError(*errors[0], execution_id=execution_id)
    error._set(errors)
    return error


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    if path[0] == "[":
        return prefix + path
    return f"{prefix}.{path}"


def _key_segment(key: object) -> str:
    if type(key) is str and key.isidentifier():
        return key
    return f"[{key!r}]"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    kind = type(value)
    if kind is bool:
        return "boolean"
    if kind is int or kind is float:
        return f"number {value!r}"
    if kind is str:
        return f"string {_short(value)}"
    if kind is list:
        return "array"
    if kind is dict:
        return "object"
    return kind.__qualname__


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(cls: object) -> str:
    if isinstance(cls, type):
        return cls.__qualname__
    return repr(cls).replace("typing.", "")


def _describe(exc: BaseException, expected: object) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, cattrs.StructureHandlerNotFoundError):
        return str(exc)
    detail = f"{type(exc).__name__}: {exc}"
    if expected is None:
        return detail
    return f"invalid value for {_type_name(expected)} ({detail})"


def _relocate(exc: BaseException, segment: str) -> SerializationError:
    """``exc`` as a :class:`SerializationError` one level below ``segment``."""
    if isinstance(exc, SerializationError):
        exc._push(segment)
        return exc
    if isinstance(exc, ClassValidationError | IterableValidationError):
        error = _from_cattrs(exc, segment)
    else:
        error = SerializationError(segment, _describe(exc, None))
    error.__cause__ = exc
    return error


def _reraise(exc: BaseException, segment: str) -> NoReturn:
    """Raise ``exc`` (being handled) as a :class:`SerializationError` below ``segment``."""
    error = _relocate(exc, segment)
    if error is exc:
        raise error
    raise error from exc


def _from_cattrs(
    exc: ClassValidationError | IterableValidationError, where: str
) -> SerializationError:
    """Flatten a cattrs exception group, keeping each leaf's path (via transform_error)."""
    leaves: list[tuple[BaseException, object]] = []

    def token(leaf: BaseException, expected: object) -> str:
        leaves.append((leaf, expected))
        return str(len(leaves) - 1)

    errors: list[tuple[str, str]] = []
    for line in cattrs.transform_error(exc, path="", format_exception=token):
        index, _, path = line.partition(" @ ")
        leaf, expected = leaves[int(index)]
        path = _join(where, path.removeprefix("."))
        if isinstance(leaf, SerializationError):
            errors.extend((_join(path, sub), problem) for sub, problem in leaf.errors)
        else:
            errors.append((path, _describe(leaf, expected)))
    return SerializationError._of(errors or [(where, str(exc))])


def _fail(problem: str) -> NoReturn:
    raise SerializationError("", problem)


_REGISTER_HINT = (
    "MutationRegistry.register_value(cls, name=...) "
    "(MutationRegistry.register_state for a state class)"
)


def _unregistered(kind: type[Any]) -> str:
    return (
        f"cannot serialize a value of type {kind.__module__}.{kind.__qualname__}: "
        f"register it with {_REGISTER_HINT}"
    )


# ------------------------------------------------------------------------- registry


class TypeRegistry:
    """Stable names for classes whose instances may appear inside ``Any``-typed values.

    Register enums, attrs classes and dataclasses (mutation classes, state classes, user
    value classes); the core enums and value classes are registered as ``mutator.<Name>``.
    """

    __slots__ = ("_by_class", "_by_name")

    def __init__(self) -> None:
        self._by_name: dict[str, type[Any]] = {}
        self._by_class: dict[type[Any], str] = {}
        for cls in _CORE_TYPES:
            self._add(cls, _RESERVED_PREFIX + cls.__name__)

    def register(self, cls: type[T], name: str) -> type[T]:
        """Store instances of ``cls`` under ``name``; returns ``cls``."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a registered type needs a non-blank name")
        if not (_is_enum(cls) or _is_model(cls)):
            raise TypeError(f"{cls!r} must be an enum, an attrs class or a dataclass")
        if self._by_name.get(name) is cls and self._by_class.get(cls) == name:
            return cls
        if name.startswith(_RESERVED_PREFIX):
            raise ValueError(f"type names starting with {_RESERVED_PREFIX!r} are reserved")
        self._add(cls, name)
        return cls

    def _add(self, cls: type[Any], name: str) -> None:
        existing = self._by_name.get(name)
        if existing is not None:
            raise ValueError(f"type name {name!r} is already registered to {existing.__qualname__}")
        previous = self._by_class.get(cls)
        if previous is not None:
            raise ValueError(f"{cls.__qualname__} is already registered as {previous!r}")
        self._by_name[name] = cls
        self._by_class[cls] = name

    def forget(self, cls: type[Any]) -> None:
        """Drop the registration of ``cls`` (so it can be registered under another name)."""
        name = self._by_class.pop(cls, None)
        if name is not None:
            del self._by_name[name]

    def name_of(self, cls: type[Any]) -> str | None:
        """The name ``cls`` is registered under, if any."""
        return self._by_class.get(cls)

    def class_of(self, name: str) -> type[Any] | None:
        """The class registered under ``name``, if any."""
        return self._by_name.get(name)


# ------------------------------------------------------------------ scalar encodings


def _iso(value: date | time) -> str:
    return value.isoformat()


def _aware_out(value: datetime) -> str:
    if not isinstance(value, datetime):
        _fail(f"expected a datetime, got {type(value).__qualname__}")
    if value.utcoffset() is None:
        _fail(f"naive datetime {value.isoformat()}; timestamps must be timezone-aware")
    return _datetime_text(value)


def _datetime_text(value: datetime) -> str:
    """ISO 8601, with ``[zone key]`` for a ZoneInfo zone; other zone kinds are refused."""
    zone = value.tzinfo
    if zone is None or zone.__class__ is timezone:
        return value.isoformat()
    if isinstance(zone, ZoneInfo):
        if zone.key is None:
            _fail(
                f"datetime {value.isoformat()} has a ZoneInfo read from a file (no key): "
                "it cannot be read back; use ZoneInfo(<zone name>)"
            )
        return f"{value.isoformat()}[{zone.key}]"
    _fail(
        f"datetime {value.isoformat()} has a {type(zone).__qualname__} zone, which cannot be "
        "read back exactly: use datetime.timezone or zoneinfo.ZoneInfo"
    )


def _time_text(value: time) -> str:
    if value.tzinfo is not None and value.tzinfo.__class__ is not timezone:
        _fail(
            f"time {value.isoformat()} has a {type(value.tzinfo).__qualname__} zone, whose "
            "offset depends on the date, so it cannot be read back exactly: store a datetime, "
            "or a time with datetime.timezone"
        )
    return value.isoformat()


def _text(data: object, what: str) -> str:
    if type(data) is not str:
        _fail(f"expected {what}, got {_json_type(data)}")
    return data


_SUBSECOND_OFFSET = re.compile(r"([+-])(\d\d):(\d\d):(\d\d)\.(\d{6})$")


def _with_exact_offset(value: _Clock, text: str) -> _Clock:
    """Repair a sub-second UTC offset that ``fromisoformat`` reads as UTC (CPython 3.11)."""
    if text[-7:-6] == "." and value.utcoffset() == timedelta(0):
        match = _SUBSECOND_OFFSET.search(text)
        if match is not None:
            sign, hours, minutes, seconds, micros = match.groups()
            offset = timedelta(
                hours=int(hours),
                minutes=int(minutes),
                seconds=int(seconds),
                microseconds=int(micros),
            )
            return value.replace(tzinfo=timezone(-offset if sign == "-" else offset))
    return value


def _datetime_from(text: str) -> datetime:
    if text[-1:] == "]":
        return _zoned_from(text)
    return _with_exact_offset(datetime.fromisoformat(text), text)


def _zoned_from(text: str) -> datetime:
    """``<ISO 8601 with offset>[<zone key>]`` in that zone, with the fold its offset implies."""
    base, _, key = text[:-1].partition("[")
    fixed = _with_exact_offset(datetime.fromisoformat(base), base)
    offset = fixed.utcoffset()
    if offset is None:
        raise ValueError("a zoned datetime needs its UTC offset")
    try:
        zone = ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {key!r}") from exc
    for fold in (0, 1):
        value = fixed.replace(tzinfo=zone, fold=fold)
        if value.utcoffset() == offset:
            return value
    raise ValueError(f"offset {offset} is not an offset of {key} at that time")


def _time_from(text: str) -> time:
    return _with_exact_offset(time.fromisoformat(text), text)


def _aware_in(data: object, _: object = None) -> datetime:
    value = _parse(_datetime_from, _text(data, "an ISO-8601 datetime string"))
    if value.utcoffset() is None:
        _fail(f"naive datetime {data!r}; timestamps must carry a UTC offset")
    return value


def _parse(parse: Callable[[str], T], text: str) -> T:
    try:
        return parse(text)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise SerializationError("", f"cannot parse {_short(text)}: {exc}") from exc


_MICROS = 1_000_000


def _seconds_out(value: timedelta) -> int | float | str:
    whole = value.days * 86_400 + value.seconds
    if not value.microseconds:
        return whole
    seconds = value.total_seconds()
    if timedelta(seconds=seconds) == value:
        return seconds
    micros = whole * _MICROS + value.microseconds
    sign = "-" if micros < 0 else ""
    quotient, remainder = divmod(abs(micros), _MICROS)
    return f"{sign}{quotient}.{remainder:06d}"


def _seconds_in(data: object, _: object = None) -> timedelta:
    kind = type(data)
    try:
        if kind is int or kind is float:
            return timedelta(seconds=data)  # type: ignore[arg-type]
        if kind is str:
            micros = Decimal(data) * _MICROS  # type: ignore[arg-type]
            if micros != micros.to_integral_value():
                raise ValueError("finer than a microsecond")
            return timedelta(microseconds=int(micros))
    except (ValueError, TypeError, ArithmeticError, InvalidOperation) as exc:
        raise SerializationError("", f"invalid duration {_short(data)}: {exc}") from exc
    _fail(f"expected a duration in seconds, got {_json_type(data)}")


_FLOAT_NAMES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _float_out(value: float) -> float | dict[str, str]:
    if math.isfinite(value):
        return value
    return {"$float": "nan" if value != value else ("inf" if value > 0 else "-inf")}


def _float_in(data: object) -> float:
    if type(data) is float:
        return data
    if type(data) is int:
        return float(data)
    if type(data) is dict and len(data) == 1:
        name = data.get("$float")
        if isinstance(name, str) and name in _FLOAT_NAMES:
            return _FLOAT_NAMES[name]
    _fail(f"expected a number, got {_json_type(data)}")


def _decimal_in(data: object, _: object = None) -> Decimal:
    return _parse(Decimal, _text(data, "a decimal string"))


def _uuid_in(data: object, _: object = None) -> UUID:
    return _parse(UUID, _text(data, "a UUID string"))


def _bytes_out(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _bytes_in(data: object, _: object = None) -> bytes:
    return _parse(_b64decode, _text(data, "a base64 string"))


def _sort_key(item: object) -> str:
    return json.dumps(item, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------- type helpers

_SEQUENCES: dict[object, Callable[[list[Any]], Any]] = {
    list: list,
    tuple: tuple,
    AbcSequence: tuple,
    MutableSequence: list,
    frozenset: frozenset,
    AbstractSet: frozenset,
    set: set,
    MutableSet: set,
}
_SETS = frozenset({frozenset, AbstractSet, set, MutableSet})
_MAPPINGS = frozenset({dict, Mapping, MutableMapping, types.MappingProxyType})


def _origin(tp: object) -> object:
    return typing.get_origin(tp) or tp


def _is_sequence(tp: object) -> bool:
    return _origin(tp) in _SEQUENCES


def _is_mapping(tp: object) -> bool:
    return _origin(tp) in _MAPPINGS


def _is_enum(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _is_model(tp: object) -> bool:
    return isinstance(tp, type) and (attrs.has(tp) or dataclasses.is_dataclass(tp))


def _is_optional(tp: object) -> bool:
    if typing.get_origin(tp) not in (Union, types.UnionType):
        return False
    args = typing.get_args(tp)
    return len(args) == 2 and _NONE_TYPE in args


def _any_valued(tp: object) -> bool:
    args = typing.get_args(tp)
    return not args or args[-1] is Any


def _without_typevars(tp: Any) -> Any:
    """``tp`` with unbound type variables replaced by ``Any``."""
    if isinstance(tp, TypeVar):
        return Any
    args = typing.get_args(tp)
    if not args:
        return tp
    new = tuple(_without_typevars(arg) for arg in args)
    if new == args:
        return tp
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return Union[new]  # noqa: UP007
    if isinstance(tp, types.GenericAlias):
        return types.GenericAlias(origin, new)
    return tp.copy_with(new)


def _with_any(cls: type[Any]) -> Any:
    """A generic class with its type parameters bound to ``Any``; other classes as is."""
    parameters = getattr(cls, "__parameters__", ())
    return cls[tuple(Any for _ in parameters)] if parameters else cls


def _field_types(cls: type[Any]) -> dict[str, Any]:
    if attrs.has(cls):
        attrs.resolve_types(cls, localns=_LOCALNS)
        return {field.name: field.type for field in attrs.fields(cls)}
    hints = typing.get_type_hints(cls, localns=_LOCALNS)
    return {field.name: hints[field.name] for field in dataclasses.fields(cls)}


# ------------------------------------------------------------------------ converter


def make_converter(types: TypeRegistry | None = None) -> cattrs.Converter:
    """A converter that (un)structures core values exactly, to and from plain JSON.

    ``types`` names the user classes that may appear inside ``Any``-typed values; it is
    consulted at call time, so classes may be registered after the converter is built.
    """
    registry = types if types is not None else TypeRegistry()
    converter = cattrs.Converter(detailed_validation=True)
    _Hooks(converter, registry).install()
    return converter


class _Hooks:
    """Builds and registers every hook of one converter."""

    encode_dict: Callable[[Mapping[Any, Any]], Any]

    def __init__(self, converter: cattrs.Converter, registry: TypeRegistry) -> None:
        self.converter = converter
        self.registry = registry
        self.class_un: dict[type[Any], Unstructure] = {}
        self.class_st: dict[type[Any], Structure] = {}
        self.enums_un: dict[type[enum.Enum], Unstructure] = {}
        self.enums_st: dict[type[enum.Enum], Structure] = {}
        self.building_un: set[type[Any]] = set()
        self.building_st: set[type[Any]] = set()
        # > 0 while a located (error-reporting) pass runs: compiled functions defer to it.
        self.locating = 0
        self._locating_lock = threading.Lock()
        self.encode = self._make_encoder()
        self.decode = self._make_decoder()

    def enter_located(self) -> None:
        """Start a located pass (any thread): compiled functions defer to it meanwhile."""
        with self._locating_lock:
            self.locating += 1

    def leave_located(self) -> None:
        with self._locating_lock:
            self.locating -= 1

    def install(self) -> None:
        c = self.converter
        scalars: tuple[tuple[type[Any], Unstructure, Structure], ...] = (
            (datetime, _aware_out, _aware_in),
            (date, _iso, lambda d, _: _parse(date.fromisoformat, _text(d, "an ISO date"))),
            (time, _time_text, lambda d, _: _parse(_time_from, _text(d, "an ISO time"))),
            (timedelta, _seconds_out, _seconds_in),
            (Decimal, str, _decimal_in),
            (UUID, str, _uuid_in),
            (bytes, _bytes_out, _bytes_in),
        )
        for cls, out, back in scalars:
            c.register_unstructure_hook(cls, out)
            c.register_structure_hook(cls, back)
        c.register_unstructure_hook(float, _float_out)
        c.register_structure_hook(str, self._strict(str, "a string"))
        c.register_structure_hook(int, self._strict(int, "an integer"))
        c.register_structure_hook(bool, self._strict(bool, "a boolean"))
        c.register_structure_hook(float, self._float_st)
        c.register_unstructure_hook(Any, self.encode)
        c.register_structure_hook(Any, lambda data, _: self.decode(data))
        c.register_unstructure_hook_factory(_is_enum, self.enum_un)
        c.register_structure_hook_factory(_is_enum, self.enum_st)
        c.register_unstructure_hook_factory(_is_union, self._union_un)
        c.register_structure_hook_factory(_is_union, self._union_st)
        c.register_unstructure_hook_factory(_is_optional, self._optional_un)
        c.register_structure_hook_factory(_is_optional, self._optional_st)
        c.register_unstructure_hook_factory(_is_sequence, self._sequence_un)
        c.register_structure_hook_factory(_is_sequence, self._sequence_st)
        c.register_unstructure_hook_factory(_is_mapping, self._mapping_un)
        c.register_structure_hook_factory(_is_mapping, self._mapping_st)
        c.register_unstructure_hook_factory(_is_model, self._model_un)
        c.register_structure_hook_factory(_is_model, self._model_st)

    # -- typed values ---------------------------------------------------------------

    def unhook(self, tp: Any) -> Unstructure:
        """The unstructure hook for a declared type (enums by value, Any tagged)."""
        if tp is Any or isinstance(tp, TypeVar):
            return self.encode
        if _is_enum(tp):
            return self.enum_un(tp)
        if tp in self.building_un:  # a class that contains itself: look it up on use
            return lambda value: self.model_un(tp)(value)
        if tp is str or tp is int or tp is bool:
            return _CHECKED[tp]
        if tp is object:
            return self.encode
        hook = self.converter.get_unstructure_hook(tp)
        if hook is identity and isinstance(tp, type) and tp not in _JSON_SCALARS:
            return _refuse(tp)
        return hook

    def sthook(self, tp: Any) -> Structure:
        """The structure hook for a declared type."""
        if tp is Any or tp is object or isinstance(tp, TypeVar):
            return self._decode_st
        if tp in self.building_st:
            return lambda data, cls: self.model_st(tp)(data, cls)
        return self.converter.get_structure_hook(tp)

    def _decode_st(self, data: Any, _: object) -> Any:
        return self.decode(data)

    def _strict(self, kind: type[Any], what: str) -> Structure:
        def check(data: Any, cls: Any) -> Any:
            if type(data) is kind and cls is kind:
                return data
            if cls is not kind and _is_enum(cls):  # e.g. an IntEnum or a StrEnum
                return self.enum_st(cls)(data, cls)
            if type(data) is not kind:
                _fail(f"expected {what}, got {_json_type(data)}")
            return cls(data)

        return check

    def _float_st(self, data: Any, cls: Any) -> Any:
        if cls is not float and _is_enum(cls):
            return self.enum_st(cls)(data, cls)
        return _float_in(data)

    def enum_un(self, cls: type[enum.Enum]) -> Unstructure:
        hook = self.enums_un.get(cls)
        if hook is None:
            hook = self.enums_un[cls] = self._enum_un(cls)
        return hook

    def enum_st(self, cls: type[enum.Enum]) -> Structure:
        hook = self.enums_st.get(cls)
        if hook is None:
            hook = self.enums_st[cls] = self._enum_st(cls)
        return hook

    def _enum_un(self, cls: type[enum.Enum]) -> Unstructure:
        if all(type(member.value) in _JSON_SCALARS for member in cls):
            return attrgetter("_value_")
        encode = self.encode
        return lambda member: encode(member._value_)

    def _enum_st(self, cls: type[enum.Enum]) -> Structure:
        plain = all(type(member.value) in _JSON_SCALARS for member in cls)
        table = {(type(m.value), m.value): m for m in cls} if plain else {}
        kinds = {type(m.value) for m in cls}
        decode = self.decode

        def structure_enum(data: Any, _: object) -> enum.Enum:
            if plain:
                try:
                    member = table.get((type(data), data))
                except TypeError:
                    member = None
                if member is not None:
                    return member
                if type(data) not in kinds:
                    _fail(f"expected a {cls.__qualname__} value, got {_json_type(data)}")
            else:
                data = decode(data)
            try:
                return cls(data)
            except ValueError:
                _fail(f"{_short(data)} is not a valid {cls.__qualname__}")

        return structure_enum

    def _union_un(self, tp: Any) -> Unstructure:
        """A union of several types holds the tagged encoding: each member reads back as
        itself. A value of none of the members is refused."""
        classes, encode = _runtime_classes(tp), self.encode

        def unstructure_union(value: Any) -> Any:
            if not isinstance(value, classes):
                _fail(
                    f"expected {_type_name(tp)}, got {type(value).__qualname__} "
                    f"{_short(value)}: it could not be read back as the declared type"
                )
            return encode(value)

        return unstructure_union

    def _union_st(self, tp: Any) -> Structure:
        classes, decode = _runtime_classes(tp), self.decode

        def structure_union(data: Any, _: object) -> Any:
            value = decode(data)
            if not isinstance(value, classes):
                _fail(f"expected {_type_name(tp)}, got {_json_type(data)}")
            return value

        return structure_union

    def _optional_un(self, tp: Any) -> Unstructure:
        inner = self.unhook(next(arg for arg in typing.get_args(tp) if arg is not _NONE_TYPE))
        if inner is identity:
            return identity
        return lambda value: None if value is None else inner(value)

    def _optional_st(self, tp: Any) -> Structure:
        inner_type = next(arg for arg in typing.get_args(tp) if arg is not _NONE_TYPE)
        inner = self.sthook(inner_type)

        def structure_optional(data: Any, _: object) -> Any:
            if data is None or type(data) is inner_type:
                return data
            return inner(data, inner_type)

        def structure_optional_value(data: Any, _: object) -> Any:
            return None if data is None else inner(data, inner_type)

        return structure_optional if inner_type in (str, int, bool) else structure_optional_value

    def _sequence_un(self, tp: Any) -> Unstructure:
        args = typing.get_args(tp)
        if _origin(tp) is tuple and args and args[-1] is not Ellipsis:
            return self._fixed_tuple_un(args)
        item = self.unhook(args[0] if args else Any)
        is_set = _origin(tp) in _SETS

        def unstructure_items(values: Any) -> list[Any]:
            out: list[Any] = []
            append = out.append
            try:
                for value in values:
                    append(item(value))
            except Exception as exc:
                _reraise(exc, f"[{len(out)}]")
            if is_set:
                out.sort(key=_sort_key)
            return out

        if item is identity and not is_set:
            return list
        if item is identity and args and args[0] is str:
            return sorted
        return unstructure_items

    def _fixed_tuple_un(self, args: tuple[Any, ...]) -> Unstructure:
        items = [self.unhook(arg) for arg in args]

        def unstructure_tuple(values: Any) -> list[Any]:
            if len(values) != len(items):
                _fail(f"expected a tuple of {len(items)} items, got {len(values)}")
            out: list[Any] = []
            try:
                for item, value in zip(items, values, strict=True):
                    out.append(item(value))
            except Exception as exc:
                _reraise(exc, f"[{len(out)}]")
            return out

        return unstructure_tuple

    def _sequence_st(self, tp: Any) -> Structure:
        args = typing.get_args(tp)
        origin = _origin(tp)
        variadic = not (origin is tuple and args and args[-1] is not Ellipsis)
        if variadic:
            item_type = args[0] if args else Any
            items = [(self.sthook(item_type), item_type)]
        else:
            items = [(self.sthook(arg), arg) for arg in args]
        build = _SEQUENCES[origin]

        def structure_items(data: Any, _: object) -> Any:
            if type(data) is not list:
                _fail(f"expected an array, got {_json_type(data)}")
            if not variadic and len(data) != len(items):
                _fail(f"expected an array of {len(items)} items, got {len(data)}")
            out: list[Any] = []
            append = out.append
            try:
                if variadic:
                    hook, item_type = items[0]
                    for value in data:
                        append(hook(value, item_type))
                else:
                    for (hook, item_type), value in zip(items, data, strict=True):
                        append(hook(value, item_type))
            except Exception as exc:
                _reraise(exc, f"[{len(out)}]")
            try:
                return build(out)
            except TypeError as exc:
                raise SerializationError("", f"cannot build {_type_name(tp)}: {exc}") from exc

        return structure_items

    def _mapping_un(self, tp: Any) -> Unstructure:
        if _any_valued(tp):
            encode_dict = self.encode_dict

            def unstructure_any_mapping(value: Any) -> Any:
                if type(value) is not dict and not isinstance(value, Mapping):
                    _fail(f"expected a mapping, got {type(value).__qualname__}")
                return encode_dict(value)

            return unstructure_any_mapping
        key_type, value_type = typing.get_args(tp)
        key, item = self.unhook(key_type), self.unhook(value_type)
        if key_type is str:

            def unstructure_object(value: Any) -> dict[str, Any]:
                out: dict[str, Any] = {}
                for k, v in value.items():
                    if type(k) is not str:
                        _fail(f"expected string keys, got {type(k).__qualname__} {_short(k)}")
                    try:
                        out[k] = item(v)
                    except Exception as exc:
                        _reraise(exc, _key_segment(k))
                return out

            return unstructure_object

        def unstructure_pairs(value: Any) -> list[list[Any]]:
            out: list[list[Any]] = []
            for k, v in value.items():
                try:
                    out.append([key(k), item(v)])
                except Exception as exc:
                    _reraise(exc, _key_segment(k))
            return out

        return unstructure_pairs

    def _mapping_st(self, tp: Any) -> Structure:
        origin = _origin(tp)
        build: Callable[[dict[Any, Any]], Any] = (
            types.MappingProxyType if origin is types.MappingProxyType else dict
        )
        if _any_valued(tp):
            decode = self.decode

            def structure_any_mapping(data: Any, _: object) -> Any:
                value = decode(data)
                if type(value) is not dict:
                    _fail(f"expected an object, got {_json_type(data)}")
                return build(value)

            return structure_any_mapping
        key_type, value_type = typing.get_args(tp)
        key, item = self.sthook(key_type), self.sthook(value_type)
        if key_type is str:

            def structure_object(data: Any, _: object) -> Any:
                if type(data) is not dict:
                    _fail(f"expected an object, got {_json_type(data)}")
                out: dict[str, Any] = {}
                for k, v in data.items():
                    try:
                        out[k] = item(v, value_type)
                    except Exception as exc:
                        _reraise(exc, _key_segment(k))
                return build(out)

            return structure_object

        def structure_pairs(data: Any, _: object) -> Any:
            if type(data) is not list:
                _fail(f"expected an array of [key, value] pairs, got {_json_type(data)}")
            out: dict[Any, Any] = {}
            for index, pair in enumerate(data):
                try:
                    if type(pair) is not list or len(pair) != 2:
                        _fail(f"expected a [key, value] pair, got {_json_type(pair)}")
                    out[key(pair[0], key_type)] = item(pair[1], value_type)
                except Exception as exc:
                    _reraise(exc, f"[{index}]")
            return build(out)

        return structure_pairs

    # -- attrs classes and dataclasses ---------------------------------------------

    def _model_un(self, cls: type[Any]) -> Unstructure:
        if cls is PolicyModification:
            return self._modification_un()
        self.building_un.add(cls)
        try:
            return self._generate_un(cls)
        finally:
            self.building_un.discard(cls)

    def _generate_un(self, cls: type[Any]) -> Unstructure:
        omitted = _OMITTED.get(cls, frozenset())
        overrides: dict[str, Any] = {}
        for name, tp in _field_types(cls).items():
            if name in omitted:
                overrides[name] = override(omit=True)
                continue
            hook = self.unhook(_without_typevars(tp))
            if hook is not identity:
                overrides[name] = override(unstruct_hook=_within(hook, name))
        located = make_dict_unstructure_fn(_with_any(cls), self.converter, **overrides)
        return _Compiler(self, cls).unstructure(located)

    def _model_st(self, cls: type[Any]) -> Structure:
        if cls is PolicyModification:
            return self._modification_st()
        self.building_st.add(cls)
        try:
            return self._generate_st(cls)
        finally:
            self.building_st.discard(cls)

    def _generate_st(self, cls: type[Any]) -> Structure:
        omitted = _OMITTED.get(cls, frozenset())
        overrides: dict[str, Any] = {}
        for name, tp in _field_types(cls).items():
            if name in omitted:
                overrides[name] = override(omit=True)
                continue
            bare = _without_typevars(tp)
            if bare is not tp or bare is object:
                overrides[name] = override(struct_hook=self.sthook(bare))
        generated = make_dict_structure_fn(_with_any(cls), self.converter, **overrides)

        def structure_model(data: Any, _: object) -> Any:
            """The located path: every problem of ``data`` with its field path."""
            if type(data) is not dict:
                _fail(f"expected an object for {cls.__qualname__}, got {_json_type(data)}")
            try:
                return generated(data, cls)
            except (ClassValidationError, SerializationError):
                raise
            except Exception as exc:
                raise SerializationError("", f"invalid {cls.__qualname__}: {exc}") from exc

        return _Compiler(self, cls).structure(structure_model)

    def _modification_un(self) -> Unstructure:
        effects = _within(self.unhook(tuple[SideEffect, ...]), "side_effects")
        state = _within(self.encode, "state")

        def unstructure_modification(value: PolicyModification) -> dict[str, Any]:
            out = {"side_effects": effects(value.side_effects)}
            if value.state is not NOTHING:
                out["state"] = state(value.state)
            return out

        return unstructure_modification

    def _modification_st(self) -> Structure:
        effects_type = tuple[SideEffect, ...]
        effects = self.sthook(effects_type)
        decode = self.decode

        def structure_modification(data: Any, _: object) -> PolicyModification:
            if type(data) is not dict:
                _fail(f"expected an object for PolicyModification, got {_json_type(data)}")
            state = NOTHING
            if "state" in data:
                try:
                    state = decode(data["state"])
                except Exception as exc:
                    _reraise(exc, "state")
            try:
                side_effects = effects(data.get("side_effects", []), effects_type)
            except Exception as exc:
                _reraise(exc, "side_effects")
            return PolicyModification(state, side_effects)

        return structure_modification

    def model_un(self, cls: type[Any]) -> Unstructure:
        hook = self.class_un.get(cls)
        if hook is None:
            hook = self.class_un[cls] = self.converter.get_unstructure_hook(cls)
        return hook

    def model_st(self, cls: type[Any]) -> Structure:
        hook = self.class_st.get(cls)
        if hook is None:
            hook = self.class_st[cls] = self.converter.get_structure_hook(cls)
        return hook

    # -- Any-typed values -----------------------------------------------------------

    def _make_encoder(self) -> Unstructure:
        registry, model_un, enum_un = self.registry, self.model_un, self.enum_un

        def encode(value: Any) -> Any:
            kind = type(value)
            if kind is str or kind is int or kind is bool or value is None:
                return value
            if kind is float:
                return value if math.isfinite(value) else _float_out(value)
            if kind is list:
                return encode_items(value)
            if kind is dict or kind is types.MappingProxyType:
                return encode_dict(value)
            tagged = simple.get(kind)
            if tagged is not None:
                return tagged(value)
            contract = payload_contract(value)
            if contract is not None:
                return {
                    "$payload": contract.name,
                    "version": contract.version,
                    "value": model_un(kind)(value),
                }
            name = registry.name_of(kind)
            if name is not None:
                if isinstance(value, enum.Enum):
                    return {"$enum": name, "value": enum_un(kind)(value)}
                return {"$type": name, "value": model_un(kind)(value)}
            _fail(_unregistered(kind))

        def encode_items(values: Any) -> list[Any]:
            out: list[Any] = []
            append = out.append
            try:
                for value in values:
                    append(encode(value))
            except Exception as exc:
                _reraise(exc, f"[{len(out)}]")
            return out

        def encode_set(tag: str) -> Unstructure:
            def encode_members(values: Any) -> dict[str, Any]:
                return {tag: sorted(encode_items(values), key=_sort_key)}

            return encode_members

        def encode_dict(value: Mapping[Any, Any]) -> Any:
            out: dict[str, Any] = {}
            for key, item in value.items():
                if key.__class__ is not str or key[:1] == "$":
                    return encode_map(value)
                kind = item.__class__
                if kind is str or kind is int or kind is bool or item is None:
                    out[key] = item
                    continue
                try:
                    out[key] = encode(item)
                except Exception as exc:
                    _reraise(exc, _key_segment(key))
            return out

        def encode_map(value: Mapping[Any, Any]) -> dict[str, Any]:
            pairs = []
            for key, item in value.items():
                try:
                    pairs.append([encode(key), encode(item)])
                except Exception as exc:
                    _reraise(exc, _key_segment(key))
            return {"$map": pairs}

        simple: dict[type[Any], Unstructure] = {
            tuple: lambda v: {"$tuple": encode_items(v)},
            frozenset: encode_set("$frozenset"),
            set: encode_set("$set"),
            datetime: lambda v: {
                "$datetime": (_FORMATTED.get(v) if v.tzinfo is UTC else None) or _tagged_text(v)
            },
            date: lambda v: {"$date": v.isoformat()},
            time: lambda v: {"$time": _time_text(v)},
            timedelta: lambda v: {"$timedelta": _seconds_out(v)},
            Decimal: lambda v: {"$decimal": str(v)},
            UUID: lambda v: {"$uuid": str(v)},
            bytes: lambda v: {"$bytes": _bytes_out(v)},
        }
        self.encode_dict = encode_dict
        return encode

    def _make_decoder(self) -> Callable[[Any], Any]:
        registry, model_st, enum_st = self.registry, self.model_st, self.enum_st

        def decode(data: Any) -> Any:
            kind = type(data)
            if kind is str or kind is int or kind is bool or data is None or kind is float:
                return data
            if kind is list:
                return decode_items(data)
            if kind is dict:
                out = {}
                for key, item in data.items():
                    if type(key) is not str:
                        _fail(f"object keys must be strings, got {_short(key)}")
                    if key[:1] == "$":
                        return decode_tagged(data, key)
                    kind = item.__class__
                    if kind is str or kind is int or kind is bool or item is None or kind is float:
                        out[key] = item
                        continue
                    try:
                        out[key] = decode(item)
                    except Exception as exc:
                        _reraise(exc, _key_segment(key))
                return out
            _fail(f"unexpected {kind.__qualname__} in a document")

        def decode_items(data: list[Any]) -> list[Any]:
            out: list[Any] = []
            append = out.append
            try:
                for item in data:
                    append(decode(item))
            except Exception as exc:
                _reraise(exc, f"[{len(out)}]")
            return out

        def decode_tagged(data: dict[str, Any], tag: str) -> Any:
            spec = tags.get(tag)
            if spec is None:
                _fail(f"unknown tag {tag!r}")
            keys, parse = spec
            if data.keys() != keys:
                extra = sorted(data.keys() - keys) or sorted(keys - data.keys())
                _fail(f"malformed {tag} value: unexpected or missing keys {extra}")
            try:
                return parse(data)
            except SerializationError:
                raise
            except Exception as exc:
                raise SerializationError("", f"invalid {tag} value: {exc}") from exc

        def array(data: dict[str, Any], tag: str) -> list[Any]:
            items = data[tag]
            if type(items) is not list:
                _fail(f"{tag} expects an array, got {_json_type(items)}")
            return decode_items(items)

        def decode_map(data: dict[str, Any]) -> dict[Any, Any]:
            pairs = data["$map"]
            if type(pairs) is not list:
                _fail(f"$map expects an array of [key, value] pairs, got {_json_type(pairs)}")
            out = {}
            for index, pair in enumerate(pairs):
                if type(pair) is not list or len(pair) != 2:
                    raise SerializationError(f"[{index}]", "expected a [key, value] pair")
                try:
                    key = decode(pair[0])
                    hash(key)
                except Exception as exc:
                    _reraise(exc, f"[{index}]")
                try:
                    out[key] = decode(pair[1])
                except Exception as exc:
                    _reraise(exc, _key_segment(key))
            return out

        def decode_enum(data: dict[str, Any]) -> enum.Enum:
            cls = named(data["$enum"], "$enum")
            if not _is_enum(cls):
                _fail(f"{data['$enum']!r} does not name an enum")
            result: enum.Enum = enum_st(cls)(data["value"], cls)
            return result

        def decode_type(data: dict[str, Any]) -> Any:
            cls = named(data["$type"], "$type")
            if _is_enum(cls):
                _fail(f"{data['$type']!r} names an enum; expected $enum")
            return structure_as(cls, data["value"])

        def decode_payload(data: dict[str, Any]) -> Any:
            name, version = data["$payload"], data["version"]
            if type(name) is not str or type(version) is not int:
                _fail("$payload expects a string name and an integer version")
            cls = payload_class(SideEffectContract(name, version))
            if cls is None:
                _fail(f"unknown side-effect payload contract {name!r} v{version}")
            return structure_as(cls, data["value"])

        def named(name: object, tag: str) -> type[Any]:
            cls = registry.class_of(name) if isinstance(name, str) else None
            if cls is None:
                _fail(
                    f"unknown {tag} name {_short(name)}: register the class with {_REGISTER_HINT}"
                )
            return cls

        def structure_as(cls: type[Any], value: Any) -> Any:
            try:
                return model_st(cls)(value, cls)
            except Exception as exc:
                _reraise(exc, "")

        def text(parse: Callable[[str], Any], tag: str) -> Callable[[dict[str, Any]], Any]:
            return lambda data: _parse(parse, _text(data[tag], f"a string in {tag}"))

        def single(tag: str, parse: Callable[[dict[str, Any]], Any]) -> tuple[Any, Any]:
            return frozenset({tag}), parse

        def nonfinite(data: dict[str, Any]) -> float:
            name = data["$float"]
            if type(name) is not str or name not in _FLOAT_NAMES:
                _fail(f"$float expects 'nan', 'inf' or '-inf', got {_short(name)}")
            return _FLOAT_NAMES[name]

        tags: dict[str, tuple[frozenset[str], Callable[[dict[str, Any]], Any]]] = {
            "$map": single("$map", decode_map),
            "$tuple": single("$tuple", lambda d: tuple(array(d, "$tuple"))),
            "$set": single("$set", lambda d: set(array(d, "$set"))),
            "$frozenset": single("$frozenset", lambda d: frozenset(array(d, "$frozenset"))),
            "$datetime": single("$datetime", text(_datetime_cached, "$datetime")),
            "$date": single("$date", text(date.fromisoformat, "$date")),
            "$time": single("$time", text(_time_from, "$time")),
            "$timedelta": single("$timedelta", lambda d: _seconds_in(d["$timedelta"])),
            "$decimal": single("$decimal", text(Decimal, "$decimal")),
            "$uuid": single("$uuid", text(UUID, "$uuid")),
            "$bytes": single("$bytes", text(_b64decode, "$bytes")),
            "$float": single("$float", nonfinite),
            "$enum": (frozenset({"$enum", "value"}), decode_enum),
            "$type": (frozenset({"$type", "value"}), decode_type),
            "$payload": (frozenset({"$payload", "version", "value"}), decode_payload),
        }
        return decode


# ----------------------------------------------------------------- write-time checks


def _checked_scalar(kind: type[Any], what: str) -> Unstructure:
    """A declared ``str``/``int``/``bool`` field: the value must read back as one."""

    def check(value: Any) -> Any:
        if value.__class__ is kind:
            return value
        if kind is not bool and isinstance(value, kind) and not isinstance(value, bool):
            return kind.__str__(value) if kind is str else int(value)  # e.g. a StrEnum
        _fail(f"expected {what}, got {type(value).__qualname__} {_short(value)}")

    return check


_CHECKED: dict[type[Any], Unstructure] = {
    str: _checked_scalar(str, "a string"),
    int: _checked_scalar(int, "an integer"),
    bool: _checked_scalar(bool, "a boolean"),
}


def _refuse(declared: type[Any]) -> Unstructure:
    """A field declared as a plain class that no store can read back."""

    def refuse(value: Any) -> NoReturn:
        _fail(_unregistered(type(value) if isinstance(value, declared) else declared))

    return refuse


def _is_union(tp: object) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and not _is_optional(tp)


def _runtime_classes(tp: Any) -> tuple[type[Any], ...]:
    """The classes an instance of union ``tp`` may have (for write and read checks)."""
    out: list[type[Any]] = []
    for member in typing.get_args(tp):
        origin = _origin(member)
        if origin is Any or isinstance(member, TypeVar):
            return (object,)
        if _is_union(member) or _is_optional(member):
            out.extend(_runtime_classes(member))
        elif isinstance(origin, type):
            out.append(origin)
        else:
            return (object,)
    return tuple(out)


# ------------------------------------------------------------------ compiled fast path


_Field = tuple[str, str, str, "str | None", str]
"""A field of compiled structure code: name, init argument, expression, what it makes, var."""


class _Mismatch(Exception):
    """Raised by compiled code: a value the fast path does not take (the located path decides)."""


def _fields_of(cls: type[Any]) -> list[tuple[str, str, Any, bool]]:
    """``(attribute, init argument, declared type, init)`` of every field of ``cls``."""
    types = _field_types(cls)
    if attrs.has(cls):
        return [(f.name, f.alias or f.name, types[f.name], f.init) for f in attrs.fields(cls)]
    return [(f.name, f.name, types[f.name], f.init) for f in dataclasses.fields(cls)]


_PARSED: dict[str, datetime] = {}
"""Recently read timestamps by text (datetimes are immutable; documents repeat them)."""
_PARSED_LIMIT = 4096
_WRITTEN_LIMIT = 256
"""Frozen text-only values (contexts) whose output is kept per class, by identity."""


def _aware_in_fast(text: Any) -> datetime:
    """:func:`_aware_in` for the common case (``...±HH:MM``, read exactly by fromisoformat)."""
    if text.__class__ is str and len(text) > 6 and text[-3] == ":" and text[-6] in "+-":
        value = datetime.fromisoformat(text)
        if value.tzinfo is not None:
            if len(_PARSED) >= _PARSED_LIMIT:
                _PARSED.clear()
            _PARSED[text] = value
            return value
    return _aware_in(text)


_FORMATTED: dict[datetime, str] = {}
"""Recently written UTC timestamps by value (plain datetimes in ``timezone.utc`` only:
equal ones then have equal fields, so equal text; ``isoformat`` is costly)."""


def _tagged_text(value: datetime) -> str:
    """:func:`_datetime_text` of an ``Any``-typed (plain) datetime, kept when in UTC."""
    if value.tzinfo is UTC:
        return _aware_out_fast(value)
    return _datetime_text(value)


def _datetime_cached(text: str) -> datetime:
    """:func:`_datetime_from` through :data:`_PARSED` (aware ``...±HH:MM`` text only)."""
    value = _PARSED.get(text)
    if value is None:
        value = _datetime_from(text)
        if value.tzinfo is not None and text[-3] == ":" and text[-6] in "+-":
            if len(_PARSED) >= _PARSED_LIMIT:
                _PARSED.clear()
            _PARSED[text] = value
    return value


def _aware_out_fast(value: Any) -> str:
    """:func:`_aware_out`, keeping the text of plain UTC datetimes in :data:`_FORMATTED`."""
    if value.__class__ is datetime:
        zone = value.tzinfo
        if zone is UTC:
            text = value.isoformat()
            if len(_FORMATTED) >= _PARSED_LIMIT:
                _FORMATTED.clear()
            _FORMATTED[value] = text
            return text
        if zone.__class__ is timezone:
            return value.isoformat()
    return _aware_out(value)


def _scalar_items(kind: type[Any]) -> Callable[[Any], list[Any]]:
    def items(values: Any) -> list[Any]:
        out = list(values)
        for value in out:
            if value.__class__ is not kind:
                raise _Mismatch
        return out

    return items


def _is_frozen(cls: type[Any]) -> bool:
    if attrs.has(cls):
        return getattr(cls.__setattr__, "__name__", "") == "_frozen_setattrs"
    params = getattr(cls, "__dataclass_params__", None)
    return bool(params is not None and params.frozen)


def _memo_kind(tp: Any) -> str | None:
    """How a field takes part in memoizing: "text" (str-like), "map" (Any mapping) or None."""
    if _is_optional(tp):
        tp = next(arg for arg in typing.get_args(tp) if arg is not _NONE_TYPE)
    if tp is str or tp is datetime:
        return "text"
    if _is_enum(tp) and tp and all(type(member.value) is str for member in tp):
        return "text"
    if _is_mapping(tp) and _any_valued(tp):
        return "map"
    return None


class _Compiler:
    """Straight-line (un)structure functions for one attrs class or dataclass.

    The generated code reads every field, checks the simple ones inline (exact types,
    enum members, fixed-offset datetimes) and calls the converter's hooks for the rest,
    with no per-field wrappers. On anything unexpected it runs the *located* path (the
    per-field hooks that name the path of every problem) with the converter in locating
    mode, so nested classes skip their own fast attempt; the located path raises the
    error, or returns the value where the fast path was merely stricter. Both paths give
    equal results on every value the fast path accepts.
    """

    def __init__(self, hooks: _Hooks, cls: type[Any]) -> None:
        self.hooks = hooks
        self.cls = cls
        self.scope: dict[str, Any] = {"_Mismatch": _Mismatch, "H": hooks, "cls": cls}
        self.fields = [
            field for field in _fields_of(cls) if field[0] not in _OMITTED.get(cls, frozenset())
        ]
        # Frozen classes of text fields and Any mappings repeat within documents (the
        # contexts of decisions): values written recently are kept by identity (MU) and
        # the last value read (M), and reused when the next one is the same object
        # (unstructure) or equal data with empty mappings (structure; text compares
        # exactly, unlike numbers where 1 == True). Only values with empty mappings are
        # kept: the rest is immutable, so their output never changes.
        kinds = [_memo_kind(_without_typevars(field[2])) for field in self.fields]
        self.memo = _is_frozen(cls) and None not in kinds and all(f[3] for f in self.fields)
        self.maps = [f"v{i}" for i, kind in enumerate(kinds) if kind == "map"]
        self.map_names = [self.fields[i][0] for i, kind in enumerate(kinds) if kind == "map"]
        self.scope["M"] = [(None, None)]
        self.scope["MU"] = {}  # id -> (instance, output): values written recently
        self.scope["MU_LIMIT"] = _WRITTEN_LIMIT
        self.scope["id"] = id

    def st_memo_store(self) -> list[str]:
        """Keep ``(copy of the data, value)`` when every mapping field is empty."""
        if not self.memo:
            return []
        empty = " and ".join(f"not {var}" for var in self.maps) or "True"
        resets = "".join(f"; kept[{name!r}] = {{}}" for name in self.map_names)
        return [
            f"        if {empty}:",
            f"            kept = o.copy(){resets}",
            "            M[0] = (kept, value)",
        ]

    def bind(self, value: Any) -> str:
        key = f"g{len(self.scope)}"
        self.scope[key] = value
        return key

    def define(self, name: str, lines: list[str]) -> Any:
        source = "\n".join(lines)
        filename = f"<mutator compiled {name} {self.cls.__module__}.{self.cls.__qualname__}>"
        exec(compile(source, filename, "exec"), self.scope)
        return self.scope[name]

    # -- unstructure --------------------------------------------------------------------

    def un_items(
        self, indent: str, names: Collection[str] | None, constants: Mapping[str, Any]
    ) -> tuple[list[str], list[str], list[str]]:
        """The reads, type checks and dict items of the fields ``names`` (all for None),
        ``constants`` in place of their fields, in declaration order."""
        reads: list[str] = []
        checks: list[str] = []
        items: list[str] = []
        for index, (name, _, tp, _) in enumerate(self.fields):
            if name in constants:
                items.append(f"{name!r}: {self.bind(constants[name])}")
            elif names is None or name in names:
                var = f"v{index}"
                reads.append(f"{indent}{var} = i.{name}")
                check, expr = self.un_field(_without_typevars(tp), var)
                if check:
                    checks.append(check)
                items.append(f"{name!r}: {expr}")
        return reads, checks, items

    def unstructure(self, located: Unstructure) -> Unstructure:
        reads, checks, items = self.un_items("        ", None, {})
        self.scope["located"] = located
        guard = ["        if " + " or ".join(checks) + ":", "            raise _Mismatch"]
        lines = [
            "def unstructure_fast(i):",
            "    if H.locating:",
            "        return located(i)",
            *(self.un_memo_hit() if self.memo else []),
            "    try:",
            *reads,
            *(guard if checks else []),
            "        out = {" + ", ".join(items) + "}",
            *self.un_memo_store(),
            "        return out",
            "    except Exception:",
            "        H.enter_located()",
            "        try:",
            "            return located(i)",
            "        finally:",
            "            H.leave_located()",
        ]
        fast = self.define("unstructure_fast", lines)
        fast.fields_unstructurer = self.unstructure_fields
        return fast  # type: ignore[no-any-return]

    def unstructure_fields(
        self, names: Collection[str], constants: Mapping[str, Any]
    ) -> Unstructure:
        """The fields ``names`` of an instance as the unstructure function writes them (in
        declaration order, ``constants`` in place of their fields); raises on anything
        that function would not take its fast path for."""
        reads, checks, items = self.un_items("    ", names, constants)
        guard = ["    if " + " or ".join(checks) + ":", "        raise _Mismatch"]
        lines = [
            "def unstructure_fields(i):",
            *reads,
            *(guard if checks else []),
            "    return {" + ", ".join(items) + "}",
        ]
        return self.define("unstructure_fields", lines)  # type: ignore[no-any-return]

    def un_memo_store(self) -> list[str]:
        """Keep ``(instance, output copy)`` when every mapping field is empty."""
        if not self.memo:
            return []
        empty = " and ".join(f"not {var}" for var in self.maps) or "True"
        return [
            f"        if {empty}:",
            "            if len(MU) >= MU_LIMIT:",
            "                MU.clear()",
            "            MU[id(i)] = (i, out.copy())",
        ]

    def un_memo_hit(self) -> list[str]:
        resets = "".join(f"; out[{name!r}] = {{}}" for name in self.map_names)
        return [
            "    kept = MU.get(id(i))",
            "    if kept is not None and kept[0] is i:",
            f"        out = kept[1].copy(){resets}",
            "        return out",
        ]

    def un_field(self, tp: Any, var: str) -> tuple[str | None, str]:
        if tp is str or tp is int or tp is bool:
            return f"{var}.__class__ is not {tp.__name__}", var
        if _is_optional(tp):
            inner = next(arg for arg in typing.get_args(tp) if arg is not _NONE_TYPE)
            check, expr = self.un_field(inner, var)
            guarded = f"({var} is not None and {check})" if check else None
            return guarded, var if expr == var else f"(None if {var} is None else {expr})"
        if _is_enum(tp) and all(type(member.value) in _JSON_SCALARS for member in tp):
            return f"{var}.__class__ is not {self.bind(tp)}", f"{var}._value_"
        if tp is datetime:
            dt, utc = self.bind(datetime), self.bind(UTC)
            cached, slow = self.bind(_FORMATTED), self.bind(_aware_out_fast)
            hit = f"{var}.__class__ is {dt} and {var}.tzinfo is {utc}"
            return None, f"(({cached}.get({var}) if {hit} else None) or {slow}({var}))"
        if tp is Any:
            return None, f"{self.bind(self.hooks.encode)}({var})"
        origin = _origin(tp)
        args = typing.get_args(tp)
        variadic = origin is not tuple or not args or args[-1] is Ellipsis
        if _is_sequence(tp) and origin not in _SETS and variadic:
            item = args[0] if args else Any
            if item is str or item is int or item is bool:
                return None, f"{self.bind(_scalar_items(item))}({var})"
            hook = self.bind(self.hooks.unhook(item))
            check = f"({var}.__class__ is not tuple and {var}.__class__ is not list)"
            return check, f"[{hook}(e) for e in {var}]"
        if _is_mapping(tp) and _any_valued(tp):
            proxy = self.bind(types.MappingProxyType)
            check = f"({var}.__class__ is not dict and {var}.__class__ is not {proxy})"
            return check, f"({self.bind(self.hooks.encode_dict)}({var}) if {var} else {{}})"
        return None, f"{self.bind(self.hooks.unhook(tp))}({var})"

    # -- structure ----------------------------------------------------------------------

    def structure(self, located: Structure) -> Structure:
        reads: list[str] = []
        checks: list[str] = []
        fields: list[_Field] = []
        for index, (name, alias, tp, init) in enumerate(self.fields):
            if not init:
                continue
            var = f"v{index}"
            reads.append(f"        {var} = o[{name!r}]")
            check, expr, made = self.st_field(_without_typevars(tp), var)
            if check:
                checks.append(check)
            fields.append((name, alias, expr, made, var))
        self.scope["located"] = located
        build = self.trusted_build(fields) or self.init_build(fields)
        guard = ["        if " + " or ".join(checks) + ":", "            raise _Mismatch"]
        lines = [
            "def structure_fast(o, t):",
            "    if o.__class__ is not dict or H.locating:",
            "        return located(o, t)",
            *(
                ["    kept = M[0]", "    if o == kept[0]:", "        return kept[1]"]
                if self.memo
                else []
            ),
            "    try:",
            *reads,
            *(guard if checks else []),
            *build,
            *self.st_memo_store(),
            "        return value",
            "    except Exception:",
            "        H.enter_located()",
            "        try:",
            "            return located(o, t)",
            "        finally:",
            "            H.leave_located()",
        ]
        return self.define("structure_fast", lines)  # type: ignore[no-any-return]

    def init_build(self, fields: list[_Field]) -> list[str]:
        """``cls(...)``: the constructor converts and validates. Arguments are positional
        only for attrs' generated ``__init__`` (its parameters are the init fields in
        order); a dataclass (``InitVar`` parameters) or a hand-written ``__init__`` gets
        keywords, as before."""
        positional = _generated_init(self.cls)
        kw_only = (
            {f.name for f in attrs.fields(self.cls) if f.kw_only or not f.init}
            if positional
            else set()
        )
        arguments: list[str] = []
        keywords = not positional
        for name, alias, expr, _, _ in fields:
            keywords = keywords or name in kw_only
            arguments.append(f"{alias}={expr}" if keywords else expr)
        return ["        value = cls(" + ", ".join(arguments) + ")"]

    def trusted_build(self, fields: list[_Field]) -> list[str] | None:
        """The instance built by :func:`trusted`, when that gives what ``cls(...)`` would.

        Only for attrs classes with the generated ``__init__`` (no pre/post init hook, no
        cached hash, every field an init argument). Converters the fast path already
        satisfies (a tuple for ``to_tuple``, a fresh dict for ``freeze_mapping``) and the
        ``aware`` validators of parsed datetimes are skipped; every other converter and
        validator runs, as ``__init__`` would run it.
        """
        build = _trusted_builder(self.cls)
        if build is None or len(fields) != len(self.fields):
            return None
        attributes = {a.name: a for a in attrs.fields(self.cls)}
        arguments: list[str] = []
        validations: list[str] = []
        for name, _, expr, made, var in fields:
            attribute = attributes[name]
            converter = attribute.converter
            if converter is not None:
                converted = self.converted(converter, expr, made, var)
                if converted is None:
                    return None
                expr = converted
            arguments.append(expr)
            validator = attribute.validator
            if validator is None or (validator is aware and made == "aware"):
                continue
            if validator is optional_aware and made in ("aware", "aware?"):
                continue
            call = f"{self.bind(validator)}(value, {self.bind(attribute)}, value.{name})"
            validations.append(f"            {call}")
        lines = [f"        value = {self.bind(build)}(" + ", ".join(arguments) + ")"]
        if validations:
            lines += [f"        if {self.bind(_ATTRS_CONFIG)}._run_validators:", *validations]
        return lines

    def converted(self, converter: Any, expr: str, made: str | None, var: str) -> str | None:
        """``expr`` through ``converter`` (None: a converter only ``__init__`` can run)."""
        if not callable(converter) or isinstance(converter, attrs.Converter):
            return None
        if converter is to_tuple and made == "tuple":
            return expr
        if converter is freeze_mapping and made == "fresh dict":
            frozen = self.bind(EMPTY_MAPPING)
            return f"({self.bind(self._frozen_in)}({var}) if {var} else {frozen})"
        empty = _EMPTY_MADE.get(made or "")
        if converter in _PURE_CONVERTERS and empty is not None:
            # Built from an array: an empty one converts to a constant.
            constant = self.bind(converter(empty))
            return f"({self.bind(converter)}({expr}) if {var} else {constant})"
        return f"{self.bind(converter)}({expr})"

    def st_field(self, tp: Any, var: str) -> tuple[str | None, str, str | None]:
        """``(check, expression, made)``: ``made`` says what the expression builds."""
        if tp is str or tp is int or tp is bool:
            return f"{var}.__class__ is not {tp.__name__}", var, "exact"
        if _is_optional(tp):
            inner = next(arg for arg in typing.get_args(tp) if arg is not _NONE_TYPE)
            check, expr, made = self.st_field(inner, var)
            guarded = f"({var} is not None and {check})" if check else None
            if expr != var:
                expr = f"(None if {var} is None else {expr})"
            return guarded, expr, "aware?" if made == "aware" else None
        if _is_enum(tp) and tp and all(type(member.value) is str for member in tp):
            table = self.bind({member.value: member for member in tp})
            return f"{var}.__class__ is not str", f"{table}[{var}]", "exact"
        if _is_enum(tp) and tp and all(type(member.value) is int for member in tp):
            table = self.bind({member.value: member for member in tp})
            return f"{var}.__class__ is not int", f"{table}[{var}]", "exact"
        if tp is datetime:
            cached, parse = self.bind(_PARSED), self.bind(_aware_in_fast)
            return None, f"({cached}.get({var}) or {parse}({var}))", "aware"
        if tp is Any:
            return None, f"{self.bind(self.hooks.decode)}({var})", None
        origin = _origin(tp)
        args = typing.get_args(tp)
        variadic = origin is not tuple or not args or args[-1] is Ellipsis
        if _is_sequence(tp) and variadic:
            item = args[0] if args else Any
            build = _SEQUENCES[origin]
            built = build.__name__
            check = f"{var}.__class__ is not list"
            if item is str or item is int or item is bool:
                expr = f"{built}({self.bind(_scalar_items(item))}({var}))"
                return check, expr, built
            if origin in _SETS:
                return None, f"{self.bind(self.hooks.sthook(tp))}({var}, {self.bind(tp)})", None
            hook, kind = self.bind(self.hooks.sthook(item)), self.bind(item)
            return check, f"{built}([{hook}(e, {kind}) for e in {var}])", built
        if _is_mapping(tp) and _any_valued(tp) and origin is not types.MappingProxyType:
            check = f"{var}.__class__ is not dict"
            expr = f"({self.bind(self._any_mapping_in)}({var}) if {var} else {{}})"
            return check, expr, "fresh dict"
        return None, f"{self.bind(self.hooks.sthook(tp))}({var}, {self.bind(tp)})", None

    def _any_mapping_in(self, data: Any) -> dict[str, Any]:
        value = self.hooks.decode(data)
        if value.__class__ is not dict:
            raise _Mismatch
        return value

    def _frozen_in(self, data: Any) -> Mapping[str, Any]:
        """:func:`freeze_mapping` of a decoded mapping (a fresh dict: no copy needed)."""
        value = self.hooks.decode(data)
        if value.__class__ is not dict:
            raise _Mismatch
        return types.MappingProxyType(value) if value else EMPTY_MAPPING


_ATTRS_CONFIG: Any = importlib.import_module("attr._config")  # attrs' run-validators switch
_EMPTY_MADE: dict[str, Any] = {"tuple": (), "list": [], "frozenset": frozenset(), "set": set()}
_PURE_CONVERTERS = frozenset({to_tuple, to_frozenset, name_set, names})


def _generated_init(cls: type[Any]) -> bool:
    """``cls`` is an attrs class whose ``__init__`` attrs generated."""
    init = getattr(cls.__init__, "__code__", None)
    return attrs.has(cls) and init is not None and init.co_filename.startswith("<attrs generated")


def _trusted_builder(cls: type[Any]) -> Callable[..., Any] | None:
    """:func:`trusted` for ``cls`` when its ``__init__`` only stores, converts and validates."""
    if cls in _OMITTED or not _generated_init(cls):
        return None
    if typing.cast(Any, cls).__new__ is not object.__new__:
        return None
    if hasattr(cls, "__attrs_post_init__") or hasattr(cls, "__attrs_pre_init__"):
        return None
    if any("_attrs_cached_hash" in getattr(k, "__slots__", ()) for k in cls.__mro__):
        return None
    if not all(field.init for field in attrs.fields(cls)):
        return None
    try:
        return trusted(cls)
    except TypeError:  # not slotted, or a field name a builder cannot store
        return None


def _within(hook: Unstructure, name: str) -> Unstructure:
    """``hook``, with errors located below field ``name``."""

    def unstructure_field(value: Any) -> Any:
        try:
            return hook(value)
        except Exception as exc:
            _reraise(exc, name)

    return unstructure_field


# -------------------------------------------------------------------- entry points


def fields_unstructurer(
    converter: cattrs.Converter,
    cls: type[Any],
    names: Collection[str],
    constants: Mapping[str, Any] | None = None,
) -> Callable[[Any], dict[str, Any]] | None:
    """A function giving the fields ``names`` of a ``cls`` instance as :func:`unstructure`
    gives them, in declaration order, with ``constants`` in place of their fields.

    For writers that put a document together from parts (a part that does not change is
    encoded once): the parts' keys and values are exactly the whole document's. It raises
    on any value the whole document's fast path would not take (then unstructure the
    whole to get the located error). None when ``cls`` has no compiled function.
    """
    compile_fields = getattr(converter.get_unstructure_hook(cls), "fields_unstructurer", None)
    if compile_fields is None:
        return None
    built: Callable[[Any], dict[str, Any]] = compile_fields(names, constants or {})
    return built


def unstructure(
    converter: cattrs.Converter, obj: object, *, unstructure_as: Any = None, where: str = ""
) -> Any:
    """``obj`` as plain JSON data.

    Without ``unstructure_as``, instances of attrs classes and dataclasses are unstructured
    as their class (structure them back with that class) and any other value with the
    tagged ``Any`` encoding (structure it back with ``cls=Any``); pass ``unstructure_as=Any``
    to tag a registered class instance too. Failures raise :class:`SerializationError`
    with paths prefixed by ``where``.
    """
    if unstructure_as is None:
        cls = type(obj)
        unstructure_as = cls if _is_model(cls) else Any
    try:
        return converter.unstructure(obj, unstructure_as=unstructure_as)
    except Exception as exc:
        _reraise(exc, where)


def structure(converter: cattrs.Converter, data: Any, cls: type[T], *, where: str = "") -> T:
    """``data`` (as produced by :func:`unstructure`) as an instance of ``cls``.

    Any failure, including cattrs' exception groups, raises :class:`SerializationError`
    naming the path (prefixed by ``where``) and the problem.
    """
    try:
        return converter.structure(data, cls)
    except Exception as exc:
        _reraise(exc, where)
