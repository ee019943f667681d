"""Stable names for mutation and state classes, and the converter that stores them."""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs

from mutator import Mutation, SerializationError
from mutator.serialization import TypeRegistry, make_converter, structure, unstructure

from ._decisions import _CATEGORIES, _CODES, DecisionCode, RequestDecision, code_for
from ._enums import DecisionCategory
from ._errors import UnknownMutationTypeError
from ._request import MutationRequest

__all__ = ["MutationRegistry"]

T = TypeVar("T")

Upgrade = Callable[[dict[str, Any]], Mapping[str, Any]]
"""Turns a stored mutation's fields (JSON data) into fields of its class as it is now."""


@attrs.frozen
class _MutationReader:
    """What reading a stored mutation of one registered name checks and changes first."""

    cls: type[Any]
    fields: frozenset[str] | None
    upgrade: Upgrade | None


def _field_names(cls: type[Any]) -> frozenset[str] | None:
    """The keys a stored ``cls`` may hold (None: a class whose shape the registry cannot see)."""
    if attrs.has(cls):
        return frozenset(field.name for field in attrs.fields(cls))
    if dataclasses.is_dataclass(cls):
        return frozenset(field.name for field in dataclasses.fields(cls))
    return None


def _stdlib_dumps(data: Any) -> str:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text


def _stdlib_loads(text: str | bytes) -> Any:
    return json.loads(text)


_DIGITS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))  # digit -> "0"
_LONG_NUMBER = b"0" * 19


def _json_codec() -> tuple[str, Callable[[Any], str], Callable[[str | bytes], Any]]:
    """orjson when it is installed (the ``fast`` extra), else the stdlib ``json``.

    Both give text that reads back to the same data; orjson hands anything it refuses
    (lone surrogates, integers beyond 64 bits, non-string keys, subclasses) to the stdlib,
    so the two fail or succeed alike.
    """
    try:
        import orjson
    except ImportError:  # pragma: no cover - the stdlib-only install
        return "json", _stdlib_dumps, _stdlib_loads
    encode, decode = orjson.dumps, orjson.loads
    options = (
        orjson.OPT_PASSTHROUGH_DATACLASS
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_SUBCLASS
    )

    def dumps(data: Any) -> str:
        try:
            return encode(data, option=options).decode("utf-8")
        except TypeError:
            return _stdlib_dumps(data)

    def loads(text: str | bytes) -> Any:
        raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        if _LONG_NUMBER in raw.translate(_DIGITS):
            # orjson reads integers beyond 64 bits as floats: 19+ digits go to the stdlib.
            return json.loads(text)
        try:
            return decode(text)
        except ValueError:  # lone-surrogate escapes, NaN: the stdlib decides
            return json.loads(text)

    return "orjson", dumps, loads


JSON_LIBRARY, _dumps, _loads = _json_codec()


class MutationRegistry:
    """Maps stable names to mutation (and state) classes so requests survive restarts.

    Register every mutation class that is submitted for governance::

        registry = MutationRegistry()
        registry.register(IncreaseQuota, name="quota.increase")

    The name defaults to the class's ``intent.operation``. The registry also owns the
    cattrs converter that turns requests, decisions and states into plain JSON data and
    back, exactly (see :mod:`mutator._serialization` for the encoding).
    """

    def __init__(self) -> None:
        self._mutations: dict[str, type[Mutation[Any]]] = {}
        self._mutation_names: dict[type[Any], str] = {}
        self._readers: dict[str, _MutationReader] = {}
        self._states: dict[str, type[Any]] = {}
        self._state_names: dict[type[Any], str] = {}
        self.types = TypeRegistry()
        self._inferred: set[type[Any]] = set()
        self._converter: cattrs.Converter | None = None
        self._request_hooks: tuple[Callable[[Any], Any], Callable[[Any, Any], Any]] | None = None

    def register(
        self,
        cls: type[T],
        *,
        name: str | None = None,
        state_name: str | None = None,
        upgrade: Upgrade | None = None,
    ) -> type[T]:
        """Register a :class:`mutator.Mutation` subclass under ``name``; returns the class.

        The state class of ``Mutation[Quotas]`` (``Quotas``) is registered as a state type
        too, under ``state_name`` (default: the name it already has, else its qualname),
        unless the generic parameter is ``Any`` or not an attrs class, dataclass or enum.
        A later :meth:`register_state` with an explicit name replaces a defaulted one.

        A request executes the mutation that was approved, so a stored mutation holding a
        field its class no longer declares is not read (the request is quarantined)
        rather than read without it. When a class changes while requests of it are
        stored, ``upgrade`` says what their fields become: it is called with a copy of
        each stored mutation's fields (JSON data, as :meth:`unstructure_value` encodes
        values) before it is read, and returns the fields of the class as it is now; it
        must return fields that are already current unchanged. The request keeps the
        upgraded mutation the next time it is written.
        """
        if upgrade is not None and not callable(upgrade):
            raise TypeError(f"upgrade must be a callable, got {upgrade!r}")
        if not isinstance(cls, type) or not issubclass(cls, Mutation):
            raise TypeError(
                f"MutationRegistry.register() takes a Mutation subclass, got {cls!r}; "
                "register state classes with MutationRegistry.register_state and other "
                "classes with MutationRegistry.register_value"
            )
        if name is None:
            intent = getattr(cls, "intent", None)
            if intent is None:
                raise TypeError(f"{cls.__qualname__} has no intent; pass name=...")
            name = str(intent.operation)
        state = _state_class_of(cls)
        inferred_name = state_name is None
        if state is not None:
            state_name = self._state_name_for(state, state_name)
        elif state_name is not None:
            raise TypeError(
                f"{cls.__qualname__} declares no state class (Mutation[State]); register "
                "the state with MutationRegistry.register_state instead of state_name=..."
            )
        self._check_free(self._mutations, self._mutation_names, cls, name, "mutation")
        self._check_type_name(cls, name)
        if state is not None and state_name is not None:
            self._check_free(self._states, self._state_names, state, state_name, "state")
            self._check_type_name(state, state_name)
        self.types.register(cls, name)
        self._bind(self._mutations, self._mutation_names, cls, name, "mutation")
        if upgrade is None and name in self._readers:  # registered again: keep its upgrade
            upgrade = self._readers[name].upgrade
        self._readers[name] = _MutationReader(cls, _field_names(cls), upgrade)
        if state is not None and state_name is not None and state not in self._state_names:
            self.register_state(state, name=state_name)
            if inferred_name:
                self._inferred.add(state)
        return cls

    def _check_type_name(self, cls: type[Any], name: str) -> None:
        holder = self.types.class_of(name)
        if holder is not None and holder is not cls:
            raise ValueError(f"type name {name!r} is already registered to {holder.__qualname__}")

    def _state_name_for(self, state: type[Any], given: str | None) -> str:
        known = self._state_names.get(state) or self.types.name_of(state)
        if given is None:
            return known or state.__qualname__
        if known is not None and known != given:
            raise ValueError(
                f"state class {state.__qualname__} is already registered as {known!r}, "
                f"not {given!r}"
            )
        return given

    def register_state(self, cls: type[T], *, name: str | None = None) -> type[T]:
        """Register a state class (needed by durable state stores); returns the class.

        Registering the same class under the same name again is a no-op.
        """
        if not isinstance(cls, type):
            raise TypeError(f"register_state() takes a class, got {cls!r}")
        name = name or cls.__qualname__
        if cls in self._inferred and self._state_names.get(cls) != name:
            # Named from a Mutation[State] parameter: an explicit name replaces that one.
            self._inferred.discard(cls)
            del self._states[self._state_names.pop(cls)]
            self.types.forget(cls)
        self._check_free(self._states, self._state_names, cls, name, "state")
        self.types.register(cls, name)
        self._bind(self._states, self._state_names, cls, name, "state")
        return cls

    def register_value(self, cls: type[T], *, name: str) -> type[T]:
        """Register another class that appears inside states, metadata or payloads."""
        self.types.register(cls, name)
        return cls

    # -- serialization -------------------------------------------------------------------

    @property
    def converter(self) -> cattrs.Converter:
        """The cattrs converter for requests, decisions, states and core values."""
        if self._converter is None:
            self._converter = self._build_converter()
        return self._converter

    def unstructure_request(self, request: MutationRequest) -> dict[str, Any]:
        """``request`` as plain JSON data (its mutation is stored by registered name)."""
        if request.__class__ is MutationRequest:
            try:
                fast: dict[str, Any] = self._hooks()[0](request)
            except Exception:  # the located pass below says where and why
                pass
            else:
                return fast
        data: dict[str, Any] = unstructure(
            self.converter, request, where=f"request {request.request_id}"
        )
        return data

    def structure_request(self, data: Any, *, where: str = "") -> MutationRequest:
        """A request from :meth:`unstructure_request` data; raises SerializationError."""
        try:
            request: MutationRequest = self._hooks()[1](data, MutationRequest)
        except Exception:  # the located pass below says where and why
            return structure(self.converter, data, MutationRequest, where=where)
        return request

    def _hooks(self) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]:
        """The converter's request hooks, looked up once (what ``structure``/``unstructure``
        call after dispatch; on any error those functions run again to locate it)."""
        hooks = self._request_hooks
        if hooks is None:
            converter = self.converter
            hooks = self._request_hooks = (
                converter.get_unstructure_hook(MutationRequest),
                converter.get_structure_hook(MutationRequest),
            )
        return hooks

    def unstructure_decision(self, decision: RequestDecision) -> dict[str, Any]:
        """``decision`` as plain JSON data."""
        data: dict[str, Any] = unstructure(self.converter, decision)
        return data

    def structure_decision(self, data: Any, *, where: str = "") -> RequestDecision:
        """A decision from :meth:`unstructure_decision` data; raises SerializationError."""
        return structure(self.converter, data, RequestDecision, where=where)

    def unstructure_value(self, value: Any) -> Any:
        """Any value (a state, a payload) with the tagged, type-preserving encoding."""
        return unstructure(self.converter, value, unstructure_as=Any)

    def structure_value(self, data: Any, *, where: str = "") -> Any:
        """A value from :meth:`unstructure_value` data; raises SerializationError."""
        value: Any = structure(self.converter, data, typing.cast(type[Any], Any), where=where)
        return value

    def dumps(self, data: Any) -> str:
        """Compact JSON text of unstructured data (what durable stores write).

        The text always encodes as UTF-8: strings holding lone surrogates fall back to
        ``\\u`` escapes. Uses orjson when it is installed (the ``fast`` extra), the
        stdlib ``json`` otherwise; both read back to the same data.
        """
        return _dumps(data)

    @staticmethod
    def loads(text: str | bytes) -> Any:
        """The data of JSON text written by :meth:`dumps` (orjson when installed)."""
        return _loads(text)

    def _build_converter(self) -> cattrs.Converter:
        converter = make_converter(self.types)
        encode = converter.get_unstructure_hook(Any)
        decode = converter.get_structure_hook(Any)

        def is_mutation(tp: Any) -> bool:
            return (typing.get_origin(tp) or tp) is Mutation

        def mutation_in(data: Any, _: Any) -> Mutation[Any]:
            if data.__class__ is dict:
                name = data.get("$type")
                if name.__class__ is str:
                    data = self._read_mutation(name, data)
            value = decode(data, Any)
            if not isinstance(value, Mutation):
                raise TypeError(f"expected a registered mutation, got {type(value).__name__}")
            return value

        categories = {cls: category.value for cls, category in _CATEGORIES.items()}
        codes = {category.value: cls.__members__ for category, cls in _CODES.items()}

        def code_out(code: DecisionCode) -> dict[str, str]:
            return {"category": categories[code.__class__], "code": code._name_}

        def code_in(data: Any, _: Any) -> DecisionCode:
            try:
                code: DecisionCode = codes[data["category"]][data["code"]]
            except (KeyError, TypeError, IndexError):
                pass
            else:
                return code
            if not isinstance(data, dict):
                raise TypeError(f"expected a decision code object, got {type(data).__name__}")
            return code_for(DecisionCategory(data["category"]), data["code"])

        converter.register_unstructure_hook_func(is_mutation, encode)
        converter.register_structure_hook_func(is_mutation, mutation_in)
        converter.register_unstructure_hook_func(lambda tp: tp == DecisionCode, code_out)
        converter.register_structure_hook_func(lambda tp: tp == DecisionCode, code_in)
        return converter

    def _read_mutation(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` of a stored mutation named ``name``, upgraded and checked for retired fields."""
        reader = self._readers.get(name)
        if reader is None:
            known = ", ".join(sorted(self._mutations)) or "none"
            raise SerializationError(
                "",
                f"no mutation registered as {name[:100]!r} (registered: {known}); "
                "register its class with MutationRegistry.register(cls, name=...)",
            )
        fields = data.get("value")
        if fields.__class__ is not dict:
            return data
        if reader.upgrade is not None:
            try:
                upgraded = reader.upgrade(dict(fields))
            except Exception as exc:
                raise SerializationError(
                    "", f"upgrade of stored mutation {name!r} raised {type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(upgraded, Mapping):
                raise SerializationError(
                    "",
                    f"upgrade of stored mutation {name!r} returned "
                    f"{type(upgraded).__name__}, not a mapping of fields",
                )
            fields = dict(upgraded)
            data = {**data, "value": fields}
        if reader.fields is not None:
            retired = fields.keys() - reader.fields
            if retired:
                listed = ", ".join(repr(key)[:100] for key in sorted(retired, key=str))
                cls_name = reader.cls.__qualname__
                raise SerializationError(
                    "",
                    f"stored mutation {name!r} holds fields {cls_name} does not declare: "
                    f"{listed}; a request runs as it was approved, so it is not read "
                    f"without them: register {cls_name} with upgrade=... to say what "
                    "they become",
                )
        return data

    def name_of(self, mutation: Mutation[Any] | type[Mutation[Any]]) -> str:
        """The registered name of a mutation or mutation class."""
        cls = mutation if isinstance(mutation, type) else type(mutation)
        name = self._mutation_names.get(cls)
        if name is None:
            raise UnknownMutationTypeError(
                f"mutation class {cls.__qualname__} is not registered: call "
                f"MutationRegistry.register({cls.__name__}, name=...)"
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
        """The name ``cls`` is registered under as a state, or None."""
        return self._state_names.get(cls)

    def state_class_of(self, name: str) -> type[Any] | None:
        """The state class registered as ``name``, or None."""
        return self._states.get(name)

    @property
    def mutation_names(self) -> tuple[str, ...]:
        """The names of the registered mutations, in registration order."""
        return tuple(self._mutations)

    @classmethod
    def _bind(
        cls_,
        by_name: dict[str, Any],
        by_class: dict[type[Any], str],
        cls: type[Any],
        name: str,
        kind: str,
    ) -> None:
        cls_._check_free(by_name, by_class, cls, name, kind)
        by_name[name] = cls
        by_class[cls] = name

    @staticmethod
    def _check_free(
        by_name: dict[str, Any],
        by_class: dict[type[Any], str],
        cls: type[Any],
        name: str,
        kind: str,
    ) -> None:
        """Raise unless ``cls`` may be bound to ``name`` (unbound, or bound to each other)."""
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


def _state_class_of(cls: type[Any]) -> type[Any] | None:
    """``S`` of the nearest ``Mutation[S]`` base of ``cls``, when it is a storable class."""
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            origin = typing.get_origin(base)
            if not (isinstance(origin, type) and issubclass(origin, Mutation)):
                continue
            arguments = typing.get_args(base)
            state = arguments[0] if arguments else None
            if isinstance(state, type) and (
                attrs.has(state) or dataclasses.is_dataclass(state) or issubclass(state, enum.Enum)
            ):
                return state
            return None
    return None
