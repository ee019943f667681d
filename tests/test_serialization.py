"""Exact (un)structuring of core values through the project's cattrs converter."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import pickle
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from uuid import UUID

import attrs
import cattrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mutator._changes import ChangeSet, StateChange
from mutator._context import ExecutionContext, MutationContext
from mutator._effects import SideEffect, side_effect_payload
from mutator._enums import (
    ActorType,
    BlastRadiusScope,
    ChangeType,
    MutationMode,
    RiskLevel,
    Severity,
)
from mutator._errors import MutatorError
from mutator._intent import BlastRadius, MutationIntent
from mutator._policies import NOTHING, PolicyDecision, PolicyModification, PolicyRequirement
from mutator._records import AuditEntry, AuditOutcome, HistoryEntry
from mutator._serialization import (
    SerializationError,
    TypeRegistry,
    fields_unstructurer,
    make_converter,
    structure,
    unstructure,
)
from mutator._validation import ValidationIssue, ValidationResult

# ----------------------------------------------------------------- user classes


@attrs.frozen
class Address:
    """A plain attrs class nested inside a payload (not registered anywhere)."""

    street: str
    city: str
    located_at: datetime | None = None


@attrs.frozen
class Item:
    """A line of a shipment."""

    sku: str
    quantity: int
    price: Decimal


@side_effect_payload("tests.serialization.notification", version=1)
@attrs.frozen
class Notification:
    """A typed side-effect payload with an enum and a timestamp."""

    recipient: str
    sent_at: datetime
    priority: RiskLevel = RiskLevel.LOW


@side_effect_payload("tests.serialization.shipment", version=2)
@attrs.frozen
class Shipment:
    """A typed side-effect payload with nested attrs classes and free-form extras."""

    order_id: int
    destination: Address
    items: tuple[Item, ...] = ()
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Envelope:
    """A registered user value class carrying a payload nested inside it."""

    notification: Notification
    labels: tuple[str, ...] = ()
    extra: dict[str, Any] = attrs.field(factory=dict)


@dataclasses.dataclass(frozen=True)
class Money:
    """A registered dataclass value."""

    amount: Decimal
    currency: str


class Color(enum.Enum):
    """A registered user enum."""

    RED = "red"
    GREEN = "green"


@attrs.frozen
class Node:
    """A registered class that contains itself."""

    name: str
    children: tuple[Node, ...] = ()
    parent: Node | None = None


@attrs.frozen
class Ledger:
    """A user class with typed containers JSON cannot hold directly."""

    by_id: dict[int, str]
    pair: tuple[int, str]
    seen: frozenset[int]
    ratio: float


class Unregistered:
    """A class nobody registered."""


class Shade(enum.Enum):
    """An enum nobody registered."""

    DARK = 1


TYPES = TypeRegistry()
TYPES.register(Envelope, "tests.Envelope")
TYPES.register(Money, "tests.Money")
TYPES.register(Color, "tests.Color")
TYPES.register(Node, "tests.Node")
CONVERTER = make_converter(TYPES)

# ------------------------------------------------------------------- strategies

utc_offsets = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
)
timezones = st.just(UTC) | st.builds(timezone, utc_offsets)
aware_datetimes = st.datetimes(timezones=timezones)
any_datetimes = aware_datetimes | st.datetimes()
plain_text = st.text(max_size=12)
non_blank = st.text(min_size=1, max_size=12).filter(str.strip)
optional_text = st.none() | plain_text
core_enums = st.sampled_from(
    [*RiskLevel, *Severity, *ActorType, *MutationMode, *ChangeType, *BlastRadiusScope]
)
money = st.builds(
    Money, st.decimals(allow_nan=False, allow_infinity=False, places=2), st.sampled_from("€$")
)
big_ints = st.sampled_from([2**31, 2**32 + 1, 2**63, -(2**63) - 1, 2**100])

hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    big_ints,
    st.floats(allow_nan=False),
    plain_text,
    any_datetimes,
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.decimals(allow_nan=False),
    st.uuids(),
    st.binary(max_size=8),
    core_enums,
    st.sampled_from(Color),
    money,
)
hashables = st.recursive(
    hashable_leaves,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=5,
)
dollar_keys = st.text(max_size=5).map(lambda key: "$" + key)
any_values = st.recursive(
    hashable_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(plain_text, inner, max_size=3),
        st.dictionaries(plain_text | dollar_keys, inner, max_size=3),
        st.dictionaries(hashables, inner, max_size=3),
        st.sets(hashables, max_size=3),
        st.frozensets(hashables, max_size=3),
    ),
    max_leaves=12,
)
metadata = st.dictionaries(plain_text, any_values, max_size=4)

contexts = st.builds(
    MutationContext,
    actor_id=optional_text,
    actor_name=optional_text,
    actor_type=st.sampled_from(ActorType),
    reason=optional_text,
    mode=st.sampled_from(MutationMode),
    correlation_id=optional_text,
    causation_id=optional_text,
    session_id=optional_text,
    source_address=optional_text,
    user_agent=optional_text,
    timestamp=aware_datetimes,
    metadata=metadata,
)
blast_radii = st.builds(
    BlastRadius,
    st.sampled_from(BlastRadiusScope),
    st.none() | st.integers(min_value=0),
    optional_text,
)
intents = st.builds(
    MutationIntent,
    operation=non_blank,
    category=plain_text,
    description=optional_text,
    risk=st.sampled_from(RiskLevel),
    reversible=st.booleans(),
    blast_radius=st.none() | blast_radii,
    tags=st.frozensets(plain_text, max_size=4),
    metadata=metadata,
)
state_changes = st.builds(
    StateChange,
    path=plain_text,
    old_value=any_values,
    new_value=any_values,
    type=st.sampled_from(ChangeType),
)
change_sets = st.lists(state_changes, max_size=4).map(ChangeSet)
addresses = st.builds(Address, plain_text, plain_text, st.none() | aware_datetimes)
items = st.builds(
    Item, plain_text, st.integers(), st.decimals(allow_nan=False, allow_infinity=False)
)
notifications = st.builds(Notification, plain_text, aware_datetimes, st.sampled_from(RiskLevel))
shipments = st.builds(
    Shipment,
    st.integers(),
    addresses,
    st.lists(items, max_size=3).map(tuple),
    metadata,
)
payloads = notifications | shipments
side_effects = st.builds(
    SideEffect,
    type=non_blank,
    description=plain_text,
    severity=st.sampled_from(Severity),
    data=st.none() | payloads | st.dictionaries(plain_text, any_values, max_size=3) | any_values,
    requires_action=st.booleans(),
    timestamp=aware_datetimes,
)
requirements = st.builds(
    PolicyRequirement,
    type=plain_text,
    description=optional_text,
    approvers=st.lists(plain_text, max_size=3).map(tuple),
    role=optional_text,
    group=optional_text,
    required_approvals=st.integers(min_value=1, max_value=5),
    step=st.integers(min_value=1, max_value=5),
    expires_at=st.none() | aware_datetimes,
    reason=optional_text,
    data=metadata,
)
modifications = st.builds(
    PolicyModification,
    state=st.just(NOTHING) | any_values,
    side_effects=st.lists(side_effects, max_size=2).map(tuple),
)
decisions = st.builds(
    PolicyDecision,
    allowed=st.booleans(),
    reason=optional_text,
    policy_name=optional_text,
    severity=st.sampled_from(Severity),
    requirements=st.lists(requirements, max_size=2).map(tuple),
    modifications=st.none() | modifications,
    metadata=metadata,
)
validation_results = st.lists(
    st.builds(
        ValidationIssue,
        plain_text,
        plain_text,
        optional_text,
        st.sampled_from(Severity),
        any_values,
    ),
    max_size=3,
).map(ValidationResult.of)
audit_entries = st.builds(
    AuditEntry,
    execution_id=plain_text,
    state_id=optional_text,
    state_type=plain_text,
    intent=intents,
    context=contexts,
    mode=st.sampled_from(MutationMode),
    outcome=st.sampled_from(AuditOutcome),
    executed_at=aware_datetimes,
    duration=st.floats(min_value=0, allow_infinity=False),
    changes=change_sets,
    side_effects=st.lists(side_effects, max_size=2).map(tuple),
    policy_decisions=st.lists(decisions, max_size=2).map(tuple),
    error=optional_text,
)
history_entries = st.builds(
    HistoryEntry,
    execution_id=plain_text,
    state_id=plain_text,
    intent=intents,
    context=contexts,
    changes=change_sets,
    executed_at=aware_datetimes,
    duration=st.floats(min_value=0, allow_infinity=False),
    side_effects=st.lists(side_effects, max_size=2).map(tuple),
)

# ---------------------------------------------------------------------- helpers


def assert_json_native(data: Any, path: str = "") -> None:
    """Fail unless ``data`` is built only from dict, list, str, int, float, bool and None."""
    kind = type(data)
    if kind is dict:
        for key, value in data.items():
            assert type(key) is str, f"non-string key {key!r} at {path}"
            assert_json_native(value, f"{path}.{key}")
    elif kind is list:
        for index, value in enumerate(data):
            assert_json_native(value, f"{path}[{index}]")
    else:
        assert kind in (str, int, float, bool, type(None)), f"{kind.__name__} at {path}"


def assert_same(actual: Any, expected: Any, path: str = "") -> None:
    """Fail unless ``actual`` equals ``expected`` with the same types all the way down."""
    if isinstance(expected, Mapping):
        assert isinstance(actual, Mapping), path
        assert len(actual) == len(expected), path
        for key, value in expected.items():
            twin = _twin(actual.keys(), key, path)
            assert_same(twin, key, f"{path}<key>")
            assert_same(actual[twin], value, f"{path}[{key!r}]")
        return
    assert type(actual) is type(expected), f"{path}: {type(actual)} is not {type(expected)}"
    if isinstance(expected, list | tuple):
        assert len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{index}]")
    elif isinstance(expected, set | frozenset):
        assert len(actual) == len(expected), path
        for member in expected:
            assert_same(_twin(actual, member, path), member, f"{path}{{}}")
    elif isinstance(expected, float):
        assert repr(actual) == repr(expected), path
    elif isinstance(expected, datetime | time):
        assert actual == expected, path
        assert actual.utcoffset() == expected.utcoffset(), path
    elif attrs.has(type(expected)):
        for field in attrs.fields(type(expected)):
            if field.eq:
                name = field.name
                assert_same(getattr(actual, name), getattr(expected, name), f"{path}.{name}")
    elif dataclasses.is_dataclass(expected):
        assert actual == expected, path
    else:
        assert actual == expected, path


def _twin(candidates: Any, wanted: Any, path: str) -> Any:
    for candidate in candidates:
        if candidate == wanted and type(candidate) is type(wanted):
            return candidate
    raise AssertionError(f"{path}: no member equal to {wanted!r} of the same type")


def round_trip(value: Any, cls: Any) -> Any:
    """Check both the direct and the JSON text round trip of ``value`` as ``cls``."""
    data = unstructure(CONVERTER, value, unstructure_as=cls if cls is Any else None)
    assert_json_native(data)
    back = structure(CONVERTER, data, cls)
    assert back == value
    assert_same(back, value)
    text = json.dumps(data, allow_nan=False)
    again = structure(CONVERTER, json.loads(text), cls)
    assert again == value
    assert_same(again, value)
    return data


# ------------------------------------------------------------------------ tests


class TestTypeRegistry:
    """Stable names for classes that appear inside Any-typed values."""

    def test_register_and_look_up(self) -> None:
        """A registered class is found by its name and the name by the class."""
        types = TypeRegistry()
        assert types.register(Money, "money") is Money
        assert types.name_of(Money) == "money"
        assert types.class_of("money") is Money
        assert types.name_of(Unregistered) is None
        assert types.class_of("nothing") is None

    def test_core_types_are_preregistered(self) -> None:
        """Core enums and value classes are known under reserved names."""
        types = TypeRegistry()
        assert types.name_of(RiskLevel) == "mutator.RiskLevel"
        assert types.class_of("mutator.MutationContext") is MutationContext

    def test_duplicate_name_for_another_class_is_rejected(self) -> None:
        """One name cannot mean two classes."""
        types = TypeRegistry()
        types.register(Money, "value")
        with pytest.raises(ValueError, match="already registered to Money"):
            types.register(Envelope, "value")

    def test_second_name_for_a_class_is_rejected(self) -> None:
        """A class has one stable name."""
        types = TypeRegistry()
        types.register(Money, "money")
        with pytest.raises(ValueError, match="already registered as 'money'"):
            types.register(Money, "cash")

    def test_registering_again_is_a_no_op(self) -> None:
        """Repeating the same registration changes nothing."""
        types = TypeRegistry()
        types.register(Money, "money")
        types.register(Money, "money")
        assert types.class_of("money") is Money

    def test_reserved_prefix_and_unsupported_classes(self) -> None:
        """``mutator.`` names are reserved and plain classes cannot be registered."""
        types = TypeRegistry()
        with pytest.raises(ValueError, match="reserved"):
            types.register(Money, "mutator.Money")
        with pytest.raises(TypeError, match="enum, an attrs class or a dataclass"):
            types.register(Unregistered, "plain")
        with pytest.raises(ValueError, match="non-blank"):
            types.register(Money, " ")

    def test_registry_is_consulted_at_call_time(self) -> None:
        """Classes registered after the converter was made are still found."""
        types = TypeRegistry()
        converter = make_converter(types)
        with pytest.raises(SerializationError):
            unstructure(converter, [Money(Decimal("1"), "€")])
        types.register(Money, "money")
        data = unstructure(converter, [Money(Decimal("1"), "€")])
        back: Any = structure(converter, data, Any)
        assert back == [Money(Decimal("1"), "€")]


class TestAnyEncoding:
    """The tagged encoding of values held in Any-typed fields."""

    @pytest.mark.parametrize(
        ("value", "encoded"),
        [
            ("text", "text"),
            (7, 7),
            (2**100, 2**100),
            (True, True),
            (None, None),
            (1.5, 1.5),
            (math.inf, {"$float": "inf"}),
            (-math.inf, {"$float": "-inf"}),
            ([1, (2,)], [1, {"$tuple": [2]}]),
            ({"a": 1}, {"a": 1}),
            (MappingProxyType({"a": 1}), {"a": 1}),
            ({"$ref": 1}, {"$map": [["$ref", 1]]}),
            ({1: "a", (2, 3): "b"}, {"$map": [[1, "a"], [{"$tuple": [2, 3]}, "b"]]}),
            ((1, "a"), {"$tuple": [1, "a"]}),
            ({3, 1, 2}, {"$set": [1, 2, 3]}),
            (frozenset({"b", "a"}), {"$frozenset": ["a", "b"]}),
            (
                datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))),
                {"$datetime": "2024-05-01T12:30:00+02:00"},
            ),
            (datetime(2024, 5, 1, 12, 30), {"$datetime": "2024-05-01T12:30:00"}),
            (date(2024, 5, 1), {"$date": "2024-05-01"}),
            (time(8, 15), {"$time": "08:15:00"}),
            (timedelta(minutes=2), {"$timedelta": 120}),
            (timedelta(seconds=1, microseconds=500_000), {"$timedelta": 1.5}),
            (timedelta(days=10**8, microseconds=1), {"$timedelta": "8640000000000.000001"}),
            (Decimal("1.10"), {"$decimal": "1.10"}),
            (
                UUID("12345678-1234-5678-1234-567812345678"),
                {"$uuid": "12345678-1234-5678-1234-567812345678"},
            ),
            (b"\x00\xff", {"$bytes": "AP8="}),
            (RiskLevel.HIGH, {"$enum": "mutator.RiskLevel", "value": 2}),
            (Color.RED, {"$enum": "tests.Color", "value": "red"}),
            (
                Money(Decimal("9.99"), "€"),
                {"$type": "tests.Money", "value": {"amount": "9.99", "currency": "€"}},
            ),
        ],
    )
    def test_encoding_table(self, value: Any, encoded: Any) -> None:
        """Each kind of value has one documented encoding, and decodes back."""
        assert unstructure(CONVERTER, value, unstructure_as=Any) == encoded
        back = structure(CONVERTER, json.loads(json.dumps(encoded)), Any)
        assert_same(back, dict(value) if isinstance(value, MappingProxyType) else value)

    def test_nan_is_tagged(self) -> None:
        """NaN is stored as a tag, never as invalid JSON."""
        data = unstructure(CONVERTER, [math.nan])
        assert data == [{"$float": "nan"}]
        back: Any = structure(CONVERTER, data, Any)
        assert math.isnan(back[0])

    def test_set_order_is_deterministic(self) -> None:
        """Equal sets give equal documents whatever their iteration order."""
        first = unstructure(CONVERTER, {"x", "y", 3, (1, 2), None})
        second = unstructure(CONVERTER, {None, (1, 2), 3, "y", "x"})
        assert json.dumps(first) == json.dumps(second)

    def test_payload_is_tagged_with_its_contract(self) -> None:
        """A registered side-effect payload carries its contract name and version."""
        shipment = Shipment(1, Address("Main St", "Springfield"))
        data = unstructure(CONVERTER, shipment, unstructure_as=Any)
        assert data["$payload"] == "tests.serialization.shipment"
        assert data["version"] == 2
        assert data["value"]["destination"] == {
            "street": "Main St",
            "city": "Springfield",
            "located_at": None,
        }

    @given(any_values)
    def test_any_value_round_trips(self, value: Any) -> None:
        """Every supported value comes back equal and with the same types."""
        round_trip(value, Any)


class TestTypePreservation:
    """Types that plain JSON would lose survive the round trip."""

    def test_ints_stay_ints(self) -> None:
        """Small, 32-bit, 64-bit and big ints come back as ints, not floats or bools."""
        values = {"small": 1, "i32": 2**31 - 1, "i64": 2**63 - 1, "big": 2**200, "zero": 0}
        context = MutationContext(metadata=values)
        back = structure(CONVERTER, json.loads(json.dumps(unstructure(CONVERTER, context))), Any)
        assert back is not None
        again = round_trip(context, MutationContext)
        assert again["metadata"] == values
        restored = structure(CONVERTER, again, MutationContext)
        for key, value in values.items():
            assert type(restored.metadata[key]) is int
            assert restored.metadata[key] == value

    def test_tuples_stay_tuples_and_lists_stay_lists(self) -> None:
        """A tuple is not turned into a list, nor a list into a tuple."""
        change = StateChange.modified("slots", [1, 2], (1, 2))
        back = structure(CONVERTER, unstructure(CONVERTER, change), StateChange)
        assert type(back.old_value) is list
        assert type(back.new_value) is tuple

    def test_datetimes_stay_aware_with_their_offset(self) -> None:
        """A timestamp comes back as an aware datetime with the same UTC offset."""
        offset = timezone(timedelta(hours=-3, minutes=-30))
        stamp = datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=offset)
        context = MutationContext(timestamp=stamp, metadata={"at": stamp})
        data = round_trip(context, MutationContext)
        assert data["timestamp"] == "2024-02-29T23:59:59.999999-03:30"
        back = structure(CONVERTER, data, MutationContext)
        assert type(back.timestamp) is datetime
        assert back.timestamp.utcoffset() == timedelta(hours=-3, minutes=-30)
        assert back.metadata["at"].utcoffset() == timedelta(hours=-3, minutes=-30)

    def test_enums_stay_enums(self) -> None:
        """Enum fields and enum values inside metadata come back as members."""
        intent = MutationIntent(
            "op", risk=RiskLevel.CRITICAL, metadata={"color": Color.GREEN, "risk": RiskLevel.LOW}
        )
        data = round_trip(intent, MutationIntent)
        assert data["risk"] == 3
        assert type(data["risk"]) is int
        back = structure(CONVERTER, data, MutationIntent)
        assert back.risk is RiskLevel.CRITICAL
        assert back.metadata["color"] is Color.GREEN
        assert back.metadata["risk"] is RiskLevel.LOW

    def test_sets_keep_their_kind(self) -> None:
        """A set stays a set and a frozenset stays a frozenset."""
        context = MutationContext(metadata={"s": {1}, "f": frozenset({1})})
        back = structure(CONVERTER, unstructure(CONVERTER, context), MutationContext)
        assert type(back.metadata["s"]) is set
        assert type(back.metadata["f"]) is frozenset

    def test_mapping_fields_are_read_only_again(self) -> None:
        """Mapping fields come back as read-only views, as the classes build them."""
        context = MutationContext(metadata={"a": {"b": 1}})
        back = structure(CONVERTER, unstructure(CONVERTER, context), MutationContext)
        assert type(back.metadata) is MappingProxyType
        assert back.metadata == {"a": {"b": 1}}

    def test_nested_attrs_values_come_back_typed(self) -> None:
        """A registered class inside metadata comes back as an instance, not a dict."""
        envelope = Envelope(
            Notification("ops", datetime(2024, 1, 1, tzinfo=UTC), RiskLevel.HIGH),
            ("a", "b"),
            {"n": (1,)},
        )
        context = MutationContext(metadata={"envelope": envelope})
        back = structure(CONVERTER, unstructure(CONVERTER, context), MutationContext)
        assert type(back.metadata["envelope"]) is Envelope
        assert type(back.metadata["envelope"].notification) is Notification
        assert back.metadata["envelope"] == envelope

    def test_typed_non_finite_floats_are_tagged(self) -> None:
        """A non-finite float in a float field is stored as a tag, not invalid JSON."""
        run = ExecutionContext("e-1", datetime(2024, 1, 1, tzinfo=UTC), deadline=math.inf)
        data = unstructure(CONVERTER, run)
        assert data["deadline"] == {"$float": "inf"}
        assert structure(CONVERTER, json.loads(json.dumps(data)), ExecutionContext) == run


class TestContextRoundTrip:
    """MutationContext and ExecutionContext round-trip."""

    @given(contexts)
    def test_mutation_context(self, context: MutationContext) -> None:
        """Generated contexts, with arbitrary nested metadata, round-trip exactly."""
        round_trip(context, MutationContext)

    @given(plain_text, aware_datetimes, optional_text, st.dictionaries(plain_text, any_values))
    def test_execution_context(
        self, execution_id: str, started: datetime, state_id: str | None, data: dict[str, Any]
    ) -> None:
        """Execution contexts round-trip, scratch data included."""
        run = ExecutionContext(execution_id, started, state_id, 12.5, data)
        round_trip(run, ExecutionContext)
        back = structure(CONVERTER, unstructure(CONVERTER, run), ExecutionContext)
        assert_same(back.data, data)


class TestIntentRoundTrip:
    """MutationIntent and BlastRadius round-trip."""

    @given(intents)
    def test_intent(self, intent: MutationIntent) -> None:
        """Generated intents round-trip exactly."""
        round_trip(intent, MutationIntent)

    def test_tags_are_sorted(self) -> None:
        """Tags are stored as a sorted list, so equal intents give equal documents."""
        data = unstructure(CONVERTER, MutationIntent("op", tags={"b", "c", "a"}))
        assert data["tags"] == ["a", "b", "c"]


class TestChangesRoundTrip:
    """StateChange and ChangeSet round-trip."""

    @given(state_changes)
    def test_state_change(self, change: StateChange) -> None:
        """Old and new values of any supported type round-trip exactly."""
        round_trip(change, StateChange)

    @given(change_sets)
    def test_change_set(self, changes: ChangeSet) -> None:
        """Change sets keep their order and their values."""
        round_trip(changes, ChangeSet)


class TestSideEffectRoundTrip:
    """SideEffect data: typed payloads, dicts, None or any value."""

    @given(side_effects)
    def test_side_effect(self, effect: SideEffect) -> None:
        """Generated side effects round-trip exactly."""
        round_trip(effect, SideEffect)

    @given(shipments)
    def test_typed_payload_comes_back_as_its_class(self, shipment: Shipment) -> None:
        """A payload with nested attrs classes comes back as the same classes."""
        effect = SideEffect("ship", data=shipment, timestamp=datetime(2024, 1, 1, tzinfo=UTC))
        data = round_trip(effect, SideEffect)
        assert data["data"]["$payload"] == "tests.serialization.shipment"
        back = structure(CONVERTER, data, SideEffect)
        assert back.data_as(Shipment) == shipment
        assert type(back.data.destination) is Address
        assert all(type(item) is Item for item in back.data.items)

    def test_dict_and_none_data(self) -> None:
        """Plain dict data stays a dict and None stays None."""
        stamp = datetime(2024, 1, 1, tzinfo=UTC)
        for data in ({"to": "ops", "ids": (1, 2)}, None):
            effect = SideEffect("mail", data=data, timestamp=stamp)
            back = structure(CONVERTER, unstructure(CONVERTER, effect), SideEffect)
            assert_same(back.data, data)


class TestPolicyRoundTrip:
    """PolicyRequirement, PolicyModification and PolicyDecision round-trip."""

    @given(requirements)
    def test_requirement(self, requirement: PolicyRequirement) -> None:
        """Generated requirements round-trip exactly."""
        round_trip(requirement, PolicyRequirement)

    @given(decisions)
    def test_decision(self, decision: PolicyDecision) -> None:
        """Generated decisions with requirements and modifications round-trip exactly."""
        round_trip(decision, PolicyDecision)

    def test_absent_state_is_omitted(self) -> None:
        """NOTHING is stored as an absent key and comes back as NOTHING."""
        effect = SideEffect("audit", timestamp=datetime(2024, 1, 1, tzinfo=UTC))
        decision = PolicyDecision.modify(side_effects=[effect])
        data = round_trip(decision, PolicyDecision)
        assert "state" not in data["modifications"]
        back = structure(CONVERTER, data, PolicyDecision)
        assert back.modifications is not None
        assert back.modifications.state is NOTHING

    def test_none_state_is_not_absent(self) -> None:
        """A replacement state of None stays distinct from no replacement."""
        decision = PolicyDecision.modify(None)
        data = round_trip(decision, PolicyDecision)
        assert data["modifications"]["state"] is None
        back = structure(CONVERTER, data, PolicyDecision)
        assert back.modifications is not None
        assert back.modifications.replaces_state


class TestRecordsRoundTrip:
    """Audit and history entries, and validation results, round-trip."""

    @given(audit_entries)
    def test_audit_entry(self, entry: AuditEntry) -> None:
        """Audit entries round-trip with every nested value typed."""
        round_trip(entry, AuditEntry)

    @given(history_entries)
    def test_history_entry(self, entry: HistoryEntry) -> None:
        """History entries round-trip; the mutation object is not stored."""
        data = round_trip(entry, HistoryEntry)
        assert "mutation" not in data

    def test_history_entry_mutation_is_dropped(self) -> None:
        """A recorded mutation object is omitted and comes back as None."""
        entry = HistoryEntry(
            "e-1",
            "s-1",
            MutationIntent("op"),
            MutationContext(timestamp=datetime(2024, 1, 1, tzinfo=UTC)),
            ChangeSet(),
            datetime(2024, 1, 1, tzinfo=UTC),
            mutation=object(),  # type: ignore[arg-type]
        )
        back = structure(CONVERTER, unstructure(CONVERTER, entry), HistoryEntry)
        assert back.mutation is None
        assert back == entry

    @given(validation_results)
    def test_validation_result(self, result: ValidationResult) -> None:
        """Validation results round-trip, attempted values included."""
        round_trip(result, ValidationResult)


class TestUserClasses:
    """User attrs classes and dataclasses get the same exact treatment."""

    def test_self_referencing_class(self) -> None:
        """A class whose fields hold the class itself round-trips."""
        tree = Node("root", (Node("a", (Node("a1"),)), Node("b", parent=Node("root"))))
        round_trip(tree, Node)
        round_trip(MutationContext(metadata={"tree": tree}), MutationContext)

    def test_typed_containers(self) -> None:
        """Int-keyed dicts, fixed tuples and sets of a declared type survive JSON."""
        ledger = Ledger({2: "b", 1: "a"}, (7, "x"), frozenset({3, 1}), 0.5)
        data = round_trip(ledger, Ledger)
        assert data == {
            "by_id": [[2, "b"], [1, "a"]],
            "pair": [7, "x"],
            "seen": [1, 3],
            "ratio": 0.5,
        }

    def test_instance_can_be_tagged(self) -> None:
        """``unstructure_as=Any`` tags a registered instance so ``Any`` brings it back."""
        money = Money(Decimal("2.50"), "€")
        data = unstructure(CONVERTER, money, unstructure_as=Any)
        assert data["$type"] == "tests.Money"
        back: Any = structure(CONVERTER, data, Any)
        assert back == money


class TestUnstructureErrors:
    """Values that cannot be stored raise SerializationError naming the type and path."""

    def test_unregistered_class_in_metadata(self) -> None:
        """An unregistered class is named together with where it was found."""
        entry = MutationContext(metadata={"limit": {"rules": [1, Unregistered()]}})
        with pytest.raises(SerializationError) as caught:
            unstructure(CONVERTER, entry)
        error = caught.value
        assert error.path == "metadata.limit.rules[1]"
        assert "Unregistered" in str(error)
        assert "MutationRegistry.register_value" in str(error)
        assert isinstance(error, MutatorError)
        assert isinstance(error, ValueError)

    def test_path_through_nested_records(self) -> None:
        """The path runs from the outer record down to the value."""
        stamp = datetime(2024, 1, 1, tzinfo=UTC)
        effect = SideEffect("x", data={"obj": Unregistered()}, timestamp=stamp)
        decision = PolicyDecision.modify(side_effects=[effect])
        with pytest.raises(SerializationError) as caught:
            unstructure(CONVERTER, decision)
        assert caught.value.path == "modifications.side_effects[0].data.obj"

    def test_where_prefixes_the_path(self) -> None:
        """``where`` names the document the value was going into."""
        with pytest.raises(SerializationError) as caught:
            unstructure(CONVERTER, MutationContext(metadata={"x": Unregistered()}), where="ctx")
        assert caught.value.path == "ctx.metadata.x"

    def test_unregistered_enum(self) -> None:
        """Enums outside the core need registering too."""
        with pytest.raises(SerializationError, match="Shade"):
            unstructure(CONVERTER, StateChange("p", None, Shade.DARK))

    def test_naive_timestamp(self) -> None:
        """A naive datetime in a timestamp field is refused."""
        effect = SideEffect("x", timestamp=datetime(2024, 1, 1))
        with pytest.raises(SerializationError, match="timezone-aware") as caught:
            unstructure(CONVERTER, effect)
        assert caught.value.path == "timestamp"

    def test_unstorable_key(self) -> None:
        """A dict key that cannot be stored is reported with its position."""
        with pytest.raises(SerializationError) as caught:
            unstructure(CONVERTER, {"outer": {Unregistered(): 1}})
        assert caught.value.path.startswith("outer")


def _context_document() -> dict[str, Any]:
    context = MutationContext(timestamp=datetime(2024, 1, 1, tzinfo=UTC), metadata={"a": 1})
    data: dict[str, Any] = unstructure(CONVERTER, context)
    return data


class TestStructureErrors:
    """Malformed documents raise SerializationError with the path and the problem."""

    @pytest.mark.parametrize(
        ("change", "path", "problem"),
        [
            ({"metadata": {"limit": {"$type": "nope", "value": {}}}}, "metadata.limit", "nope"),
            ({"metadata": {"limit": {"$what": 1}}}, "metadata.limit", "unknown tag"),
            ({"metadata": {"limit": {"$tuple": 1}}}, "metadata.limit", "expects an array"),
            ({"metadata": {"a": {"$tuple": [], "b": 1}}}, "metadata.a", "malformed $tuple"),
            ({"metadata": {"a": {"$datetime": "soon"}}}, "metadata.a", "cannot parse"),
            ({"metadata": {"a": [1, {"$enum": "x", "value": 1}]}}, "metadata.a[1]", "unknown"),
            (
                {"metadata": {"a": {"$enum": "mutator.RiskLevel", "value": 9}}},
                "metadata.a",
                "not a valid RiskLevel",
            ),
            ({"metadata": {"a": {"$map": [[[1], 2]]}}}, "metadata.a[0]", "unhashable"),
            ({"metadata": [1]}, "metadata", "expected an object"),
            ({"actor_id": 5}, "actor_id", "expected a string"),
            ({"actor_type": "robot"}, "actor_type", "ActorType"),
            ({"mode": None}, "mode", "MutationMode"),
            ({"timestamp": "2024-01-01T00:00:00"}, "timestamp", "naive"),
            ({"timestamp": 17}, "timestamp", "ISO-8601"),
        ],
    )
    def test_malformed_context(self, change: dict[str, Any], path: str, problem: str) -> None:
        """Each malformed field is reported at its path."""
        document = {**_context_document(), **change}
        with pytest.raises(SerializationError) as caught:
            structure(CONVERTER, document, MutationContext)
        assert caught.value.path == path
        assert problem in caught.value.problem

    def test_missing_field(self) -> None:
        """A missing required field is named."""
        with pytest.raises(SerializationError) as caught:
            structure(CONVERTER, {"category": "x"}, MutationIntent)
        assert caught.value.path == "operation"
        assert "missing" in caught.value.problem

    def test_invalid_value_for_the_class(self) -> None:
        """A value the class itself rejects is reported, not raised raw."""
        with pytest.raises(SerializationError, match="non-blank"):
            structure(CONVERTER, {"operation": " "}, MutationIntent)

    def test_wrong_document_type(self) -> None:
        """A document that is not an object names the class it should have been."""
        with pytest.raises(SerializationError, match="expected an object for MutationContext"):
            structure(CONVERTER, [], MutationContext)

    def test_nested_paths_and_where(self) -> None:
        """Errors deep in a record carry the full path, prefixed by ``where``."""
        stamp = datetime(2024, 1, 1, tzinfo=UTC)
        entry = AuditEntry(
            "e-1",
            None,
            "dict",
            MutationIntent("op"),
            MutationContext(timestamp=stamp),
            MutationMode.COMMIT,
            AuditOutcome.SUCCEEDED,
            stamp,
            0.1,
            ChangeSet.of(StateChange.added("a", 1)),
            (SideEffect("x", data=Notification("ops", stamp), timestamp=stamp),),
        )
        document = unstructure(CONVERTER, entry)
        document["changes"]["changes"][0]["type"] = "teleported"
        del document["side_effects"][0]["data"]["value"]["recipient"]
        document["context"]["metadata"] = {"obj": {"$type": "tests.Nope", "value": {}}}
        with pytest.raises(SerializationError) as caught:
            structure(CONVERTER, document, AuditEntry, where="audit")
        paths = {path for path, _ in caught.value.errors}
        assert paths == {
            "audit.changes.changes[0].type",
            "audit.side_effects[0].data.recipient",
            "audit.context.metadata.obj",
        }
        assert caught.value.path in paths
        assert "audit.context.metadata.obj" in str(caught.value)

    def test_unknown_payload_contract(self) -> None:
        """A payload contract nobody registered is reported with its name and version."""
        document = {
            "type": "x",
            "timestamp": "2024-01-01T00:00:00+00:00",
            "data": {"$payload": "gone", "version": 3, "value": {}},
        }
        with pytest.raises(SerializationError, match="'gone' v3") as caught:
            structure(CONVERTER, document, SideEffect)
        assert caught.value.path == "data"

    def test_strict_scalars(self) -> None:
        """Strings are not coerced to numbers, nor numbers to strings or booleans."""
        for document in ({"operation": "x", "reversible": 1}, {"operation": "x", "tags": "ab"}):
            with pytest.raises(SerializationError):
                structure(CONVERTER, document, MutationIntent)
        with pytest.raises(SerializationError, match="expected a RiskLevel value"):
            structure(CONVERTER, {"operation": "x", "risk": True}, MutationIntent)

    def test_error_survives_pickling(self) -> None:
        """The error can cross process boundaries with its paths intact."""
        with pytest.raises(SerializationError) as caught:
            structure(CONVERTER, {"name": "n", "children": [{"name": 1}]}, Node)
        copy = pickle.loads(pickle.dumps(caught.value))
        assert copy.errors == caught.value.errors == (("children[0].name", copy.problem),)
        assert str(copy) == str(caught.value)

    def test_converter_is_a_cattrs_converter(self) -> None:
        """The converter is a plain cattrs converter, usable directly."""
        assert isinstance(CONVERTER, cattrs.Converter)
        context = MutationContext(timestamp=datetime(2024, 1, 1, tzinfo=UTC))
        assert CONVERTER.structure(CONVERTER.unstructure(context), MutationContext) == context


class TestCompiledPaths:
    """The compiled fast path gives what the constructors give, and refuses what they refuse."""

    def test_equal_instants_in_other_zones_keep_their_own_text(self) -> None:
        """Timestamps are cached by value only in UTC: 12:00Z and 13:00+01:00 stay apart."""
        utc = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
        plus_one = datetime(2024, 5, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
        assert utc == plus_one
        for first, second in ((utc, plus_one), (plus_one, utc)):
            for value in (first, second, first):
                context = MutationContext(timestamp=value, metadata={"at": value})
                data = unstructure(CONVERTER, context)
                assert data["timestamp"] == value.isoformat()
                assert data["metadata"]["at"] == {"$datetime": value.isoformat()}
                back = structure(CONVERTER, data, MutationContext)
                assert back.timestamp.utcoffset() == value.utcoffset()
                assert back.metadata["at"].utcoffset() == value.utcoffset()

    def test_a_naive_tagged_datetime_never_fills_an_aware_field(self) -> None:
        """``$datetime`` may be naive in Any values; the same text is refused for a timestamp."""
        naive = "2024-01-01T00:00:00"
        data = {**_context_document(), "metadata": {"at": {"$datetime": naive}}}
        back = structure(CONVERTER, data, MutationContext)
        assert back.metadata["at"] == datetime(2024, 1, 1)
        with pytest.raises(SerializationError, match="naive") as caught:
            structure(CONVERTER, {**_context_document(), "timestamp": naive}, MutationContext)
        assert caught.value.path == "timestamp"

    def test_structured_values_are_the_constructors(self) -> None:
        """Converters still apply: read-only mappings, the shared empty mapping, name sets."""
        intent = MutationIntent("ops.x", tags={"b", "a"}, metadata={"k": [1, {"n": 2}]})
        back = structure(CONVERTER, unstructure(CONVERTER, intent), MutationIntent)
        assert back == intent
        assert type(back) is MutationIntent
        assert isinstance(back.metadata, MappingProxyType)
        assert back.metadata == {"k": [1, {"n": 2}]}
        assert type(back.tags) is frozenset
        bare = structure(CONVERTER, unstructure(CONVERTER, MutationIntent("ops.y")), MutationIntent)
        assert bare.metadata is MutationIntent("ops.y").metadata
        # A blank tag is dropped by the intent's converter, as the constructor does.
        data = {**unstructure(CONVERTER, intent), "tags": ["a", " ", "b"]}
        assert structure(CONVERTER, data, MutationIntent).tags == frozenset({"a", "b"})
        with pytest.raises(AttributeError):
            back.operation = "other"  # type: ignore[misc]

    def test_validators_still_run(self) -> None:
        """A value the constructor's validator refuses is refused, at its field."""
        data = {**unstructure(CONVERTER, MutationIntent("ops.x")), "operation": " "}
        with pytest.raises(SerializationError, match="non-blank") as caught:
            structure(CONVERTER, data, MutationIntent)
        assert "MutationIntent.operation" in caught.value.problem

    def test_int_enum_fields_refuse_booleans_and_unknown_values(self) -> None:
        """IntEnum fields read ints by value; ``true`` and unknown numbers are refused."""
        data = unstructure(CONVERTER, MutationIntent("ops.x", risk=RiskLevel.HIGH))
        assert structure(CONVERTER, data, MutationIntent).risk is RiskLevel.HIGH
        for bad in (True, 99, 2.0):
            with pytest.raises(SerializationError) as caught:
                structure(CONVERTER, {**data, "risk": bad}, MutationIntent)
            assert caught.value.path == "risk"

    def test_dataclass_init_vars_and_hand_written_inits_get_keywords(self) -> None:
        """Fields go to a dataclass (InitVar parameters) or a custom ``__init__`` by name."""
        assert structure(CONVERTER, {"a": 1, "b": 2}, _WithInitVar) == _WithInitVar(a=1, b=2)
        assert structure(CONVERTER, {"b": "x", "a": 3}, _OwnInit) == _OwnInit(b="x", a=3)


@dataclasses.dataclass(frozen=True)
class _WithInitVar:
    a: int
    scale: dataclasses.InitVar[int] = 1
    b: int = 0


@attrs.frozen(init=False)
class _OwnInit:
    a: int
    b: str

    def __init__(self, b: str, a: int) -> None:
        self.__attrs_init__(a, b)


def test_fields_unstructurer_gives_the_fields_as_unstructure_does() -> None:
    """Parts of an instance, put together, are its unstructured data; a constant takes its
    field's place; a value the fast path refuses raises; a class without a compiled
    function has none."""
    converter = make_converter()
    context = MutationContext.user("alice", reason="why", metadata={"k": [1, 2]})
    whole = unstructure(converter, context)
    names = [field.name for field in attrs.fields(MutationContext)]
    head = fields_unstructurer(converter, MutationContext, names[:3])
    tail = fields_unstructurer(converter, MutationContext, names[3:], {"reason": "marked"})
    assert head is not None
    assert tail is not None
    assert list(head(context)) == names[:3]
    assert {**head(context), **tail(context)} == {**whole, "reason": "marked"}
    assert list({**head(context), **tail(context)}) == list(whole)
    broken = attrs.evolve(context, actor_id="alice")
    object.__setattr__(broken, "actor_id", 5)
    with pytest.raises(Exception):  # noqa: B017 - whatever the fast path raises
        head(broken)
    assert fields_unstructurer(converter, dict, ["a"]) is None
