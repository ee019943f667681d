"""Typed edges of durable storage: inferred state registration, write-time refusal of what
cannot be read back, zoned datetimes, typed policies, engine options and public modules.

Every refusal asserts the exact error type, that the message names the field, option or
call to make, and that nothing was written (the store is compared before and after).
"""

from __future__ import annotations

import math
import pickle
import typing
import zoneinfo
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import attrs
import pytest

import mutator
import mutator_governance
from mutator import (
    AuditOutcome,
    ConfigurationError,
    EngineOptions,
    InvalidMutationError,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
    ResultStatus,
    SerializationError,
)
from mutator_governance import (
    ApprovalStateError,
    Governance,
    MutationRegistry,
    RequestStatus,
    UnknownMutationTypeError,
)

from ..stores.test_sqlite_commit import snapshot

NEW_YORK = ZoneInfo("America/New_York")


@attrs.frozen
class Quotas:
    limits: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class Other:
    value: int = 0


@attrs.frozen
class IncreaseQuota(Mutation[Quotas]):
    user: str
    amount: int
    intent: ClassVar[MutationIntent] = MutationIntent("quota.increase", category="billing")

    def apply(self, state: Quotas) -> Quotas:
        return Quotas({**state.limits, self.user: state.limits.get(self.user, 0) + self.amount})


@attrs.frozen
class BumpOther(Mutation[Other]):
    intent: ClassVar[MutationIntent] = MutationIntent("other.bump", category="test")

    def apply(self, state: Other) -> Other:
        return Other(state.value + 1)


@attrs.frozen
class ReturnsDict(Mutation[Quotas]):
    """The misuse: apply hands back a plain dict instead of the state class."""

    intent: ClassVar[MutationIntent] = MutationIntent("quota.as_dict", category="billing")

    def apply(self, state: Quotas) -> Any:
        return {"limits": dict(state.limits)}


class Opaque:
    """A plain class nobody registered."""


@attrs.frozen
class Blob:
    payload: int | str | bytes | None = None


@attrs.frozen
class Holder:
    thing: Opaque | None = None
    extra: Any = None
    label: str = ""


@attrs.frozen
class Stamped:
    at: datetime
    notes: dict[str, Any] = attrs.field(factory=dict)


def url_of(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/gov.db"


def database(tmp_path: Path) -> Any:
    """Every row of every table of the governance's SQLite file (read by another connection)."""
    return snapshot(tmp_path / "gov.db")


def registry(*states: type[Any]) -> MutationRegistry:
    reg = MutationRegistry()
    reg.register(IncreaseQuota)
    for state in states:
        reg.register_state(state)
    return reg


# -- 1. registering a mutation registers its state class ----------------------------------


class TestInferredStateRegistration:
    def test_register_names_the_generic_state_class_by_qualname(self) -> None:
        """register(IncreaseQuota) registers Quotas (from Mutation[Quotas]) as a state type."""
        reg = MutationRegistry()
        reg.register(IncreaseQuota)
        assert reg.state_name_of(Quotas) == "Quotas"
        assert reg.state_class_of("Quotas") is Quotas

    def test_state_name_can_be_given_and_registering_again_is_fine(self) -> None:
        """state_name= names it; register_state with the same name again changes nothing."""
        reg = MutationRegistry()
        reg.register(IncreaseQuota, state_name="billing.quotas")
        assert reg.register_state(Quotas, name="billing.quotas") is Quotas
        assert reg.state_name_of(Quotas) == "billing.quotas"

    def test_explicit_register_state_replaces_an_inferred_name(self) -> None:
        """register_state(Quotas, name=...) after the inference wins (the usual old order)."""
        reg = MutationRegistry()
        reg.register(IncreaseQuota)
        reg.register_state(Quotas, name="billing.quotas")
        assert reg.state_name_of(Quotas) == "billing.quotas"
        assert reg.state_class_of("Quotas") is None

    def test_conflicting_state_name_is_refused_and_registers_nothing(self) -> None:
        """A second, different explicit name is a ValueError naming both; nothing changes."""
        reg = MutationRegistry()
        reg.register_state(Quotas, name="billing.quotas")
        with pytest.raises(ValueError, match=r"billing\.quotas") as caught:
            reg.register(IncreaseQuota, state_name="other.name")
        assert "other.name" in str(caught.value)
        assert reg.mutation_names == ()
        assert reg.state_name_of(Quotas) == "billing.quotas"

    def test_hints_name_the_public_calls(self) -> None:
        """Errors name MutationRegistry.register / register_value, never TypeRegistry."""
        reg = MutationRegistry()
        with pytest.raises(UnknownMutationTypeError, match=r"MutationRegistry\.register\("):
            reg.name_of(IncreaseQuota)
        with pytest.raises(SerializationError) as caught:
            reg.unstructure_value(Quotas())
        assert "MutationRegistry.register_value" in str(caught.value)
        assert "MutationRegistry.register_state" in str(caught.value)
        assert "TypeRegistry" not in str(caught.value)

    @pytest.mark.anyio
    async def test_inferred_state_is_stored_and_read_back(self, tmp_path: Path) -> None:
        """With only register(IncreaseQuota), a durable store keeps Quotas exactly."""
        async with Governance.open(url_of(tmp_path), registry=registry()) as gov:
            await gov.states.put("q", Quotas({"alice": 3}))
            stored = await gov.states.get("q")
        assert stored is not None
        assert stored.state == Quotas({"alice": 3})


# -- 2. what cannot be read back is refused at write --------------------------------------


@pytest.mark.anyio
class TestRefusedAtWrite:
    async def test_bytes_in_a_union_field_round_trip_exactly(self, tmp_path: Path) -> None:
        """A field typed int | str | bytes | None holding bytes reads back as those bytes."""
        async with Governance.open(url_of(tmp_path), registry=registry(Blob)) as gov:
            for index, payload in enumerate((b"\x00raw", 7, "text", None)):
                await gov.states.put(f"b{index}", Blob(payload))
                stored = await gov.states.get(f"b{index}")
                assert stored is not None
                assert stored.state == Blob(payload)
                assert type(stored.state.payload) is type(payload)

    async def test_union_field_of_no_declared_type_is_refused(self, tmp_path: Path) -> None:
        """A float in an int | str | bytes | None field: SerializationError at 'payload'."""
        async with Governance.open(url_of(tmp_path), registry=registry(Blob)) as gov:
            await gov.states.put("b", Blob(1))
            before = database(tmp_path)
            with pytest.raises(SerializationError) as caught:
                await gov.states.put("b", Blob(1.5), expected_version="1")  # type: ignore[arg-type]
            assert caught.value.path == "payload"
            assert "int | str | bytes | None" in str(caught.value)
            assert database(tmp_path) == before

    async def test_unregistered_plain_class_is_refused_with_path(self, tmp_path: Path) -> None:
        """An Opaque in a typed or an Any field: SerializationError naming path and call."""
        async with Governance.open(url_of(tmp_path), registry=registry(Holder)) as gov:
            before = database(tmp_path)
            for state, path in (
                (Holder(thing=Opaque()), "thing"),
                (Holder(extra=[Opaque()]), "extra[0]"),
            ):
                with pytest.raises(SerializationError) as caught:
                    await gov.states.put("h", state)
                assert caught.value.path == path
                assert "Opaque" in str(caught.value)
                assert "MutationRegistry.register_value" in str(caught.value)
                assert database(tmp_path) == before

    async def test_scalar_of_the_wrong_type_is_refused(self, tmp_path: Path) -> None:
        """An int in a str field would not read back: SerializationError at 'label'."""
        async with Governance.open(url_of(tmp_path), registry=registry(Holder)) as gov:
            before = database(tmp_path)
            with pytest.raises(SerializationError) as caught:
                await gov.states.put("h", Holder(label=5))  # type: ignore[arg-type]
            assert caught.value.path == "label"
            assert "expected a string" in str(caught.value)
            assert database(tmp_path) == before


# -- the other misuse rows, on a durable store -----------------------------------------------


class NeedsCarol(MutationPolicy[Quotas]):
    """One approval slot, for carol."""

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(PolicyRequirement.approval("carol"))


@pytest.mark.anyio
class TestDurableMisuse:
    async def test_apply_returning_a_dict_fails_the_request_and_commits_no_state(
        self, tmp_path: Path
    ) -> None:
        """InvalidMutationError naming the mutation and both types; state and history kept."""
        reg = registry()
        reg.register(ReturnsDict)
        async with Governance.open(url_of(tmp_path), registry=reg) as gov:
            await gov.states.put("q", Quotas({"alice": 3}))
            request = await gov.submit(
                ReturnsDict(), state_id="q", context=MutationContext.user("al")
            )
            before = database(tmp_path)
            outcome = await gov.execute(request.request_id)
            after = database(tmp_path)
            assert outcome.request.status is RequestStatus.FAILED
            assert not outcome.executed
            failed = outcome.request.decisions[-1]
            assert failed.metadata["failure_type"] == InvalidMutationError.__name__
            assert failed.reason is not None
            for name in ("ReturnsDict.apply", "dict", "Quotas", "result_types"):
                assert name in failed.reason
            for table in ("states", "state_versions", "history"):
                assert after[table] == before[table], table
            (audited,) = await gov.audit.entries("q")
            assert audited.outcome is AuditOutcome.FAILED
            stored = await gov.states.get("q")
            assert stored is not None
            assert (stored.version, stored.state) == ("1", Quotas({"alice": 3}))
            later = await gov.submit(
                IncreaseQuota("bob", 1), state_id="q", context=MutationContext.user("al")
            )
            assert later.state_type == "Quotas"

    async def test_approving_a_single_slot_request_twice_writes_nothing(
        self, tmp_path: Path
    ) -> None:
        """The second approval by the same person: ApprovalStateError, already APPROVED."""
        async with Governance.open(
            url_of(tmp_path), registry=registry(), policies=[NeedsCarol()]
        ) as gov:
            await gov.states.put("q", Quotas())
            request = await gov.submit(
                IncreaseQuota("bob", 1), state_id="q", context=MutationContext.user("al")
            )
            assert request.status is RequestStatus.PENDING
            carol = MutationContext.user("carol")
            approved = await gov.approve(request.request_id, context=carol)
            assert approved.status is RequestStatus.APPROVED
            before = database(tmp_path)
            with pytest.raises(ApprovalStateError) as caught:
                await gov.approve(request.request_id, context=carol)
            assert "already APPROVED" in str(caught.value)
            assert request.request_id in str(caught.value)
            assert database(tmp_path) == before


# -- 3. zoned datetimes ---------------------------------------------------------------------


@pytest.mark.anyio
class TestZonedDatetimes:
    async def test_zoneinfo_and_fold_round_trip_exactly(self, tmp_path: Path) -> None:
        """ZoneInfo datetimes (both sides of a DST fold) come back in their zone, equal."""
        first = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK)
        second = first.replace(fold=1)
        async with Governance.open(url_of(tmp_path), registry=registry(Stamped)) as gov:
            for index, stamp in enumerate((first, second)):
                state = Stamped(stamp, {"seen": stamp, "tuple": (stamp,)})
                await gov.states.put(f"s{index}", state)
                stored = await gov.states.get(f"s{index}")
                assert stored is not None
                assert stored.state == state
                for back in (stored.state.at, stored.state.notes["seen"]):
                    assert back.tzinfo is NEW_YORK
                    assert back.fold == stamp.fold
                    assert back.utcoffset() == stamp.utcoffset()

    async def test_unreadable_zones_are_refused_at_write(self, tmp_path: Path) -> None:
        """A keyless ZoneInfo or a zoned time cannot be read back: refused, nothing written."""
        keyless = _keyless_zone()
        async with Governance.open(url_of(tmp_path), registry=registry(Stamped)) as gov:
            before = database(tmp_path)
            for state, path in (
                (Stamped(datetime(2026, 1, 1, tzinfo=keyless)), "at"),
                (
                    Stamped(datetime(2026, 1, 1, tzinfo=UTC), {"t": time(1, tzinfo=NEW_YORK)}),
                    "notes.t",
                ),
            ):
                with pytest.raises(SerializationError) as caught:
                    await gov.states.put("s", state)
                assert caught.value.path == path
                assert "cannot" in str(caught.value)
                assert database(tmp_path) == before


def _keyless_zone() -> ZoneInfo:
    for root in zoneinfo.TZPATH:
        path = Path(root) / "America" / "New_York"
        if path.exists():
            with path.open("rb") as file:
                return ZoneInfo.from_file(file)
    pytest.skip("no system time zone files to read a keyless ZoneInfo from")


# -- 4. typed policies ----------------------------------------------------------------------


class DenyQuotas(MutationPolicy[Quotas]):
    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.deny("no quota changes")


class DenyOthersExplicitly(MutationPolicy[Quotas]):
    state_type = Other

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.deny("no other changes")


class TestTypedPolicies:
    def test_generic_parameter_sets_state_type(self) -> None:
        """MutationPolicy[Quotas] subclasses get state_type = Quotas; an explicit one wins."""
        assert DenyQuotas.state_type is Quotas
        assert DenyOthersExplicitly.state_type is Other

        class Inherited(DenyQuotas):
            pass

        assert Inherited.state_type is Quotas

    @pytest.mark.anyio
    async def test_policy_judges_only_its_state_type(self) -> None:
        """The Quotas policy blocks Quotas mutations and leaves Other states alone."""
        engine: MutationEngine = MutationEngine(policies=[DenyQuotas()])
        blocked = await engine.execute(IncreaseQuota("a", 1), Quotas())
        passed = await engine.execute(BumpOther(), Other())
        assert blocked.status is ResultStatus.POLICY_BLOCKED
        assert passed.status is ResultStatus.SUCCEEDED


# -- 5. engine options ------------------------------------------------------------------------


class TestEngineOptions:
    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("execution_timeout", math.nan),
            ("execution_timeout", math.inf),
            ("execution_timeout", 0),
            ("execution_timeout", -1.0),
            ("execution_timeout", "5"),
            ("execution_timeout", True),
            ("policy_timeout", math.nan),
            ("policy_timeout", -math.inf),
            ("max_concurrency", 0),
            ("max_concurrency", 1.5),
            ("max_concurrency", True),
            ("metrics_window", "10"),
            ("always_validate", "yes"),
        ],
    )
    def test_bad_option_is_refused_naming_it(self, option: str, value: Any) -> None:
        """A meaningless value raises ConfigurationError (a ValueError) naming the option."""
        with pytest.raises(ConfigurationError) as caught:
            EngineOptions(**{option: value})
        assert isinstance(caught.value, ValueError)
        assert f"EngineOptions.{option}" in str(caught.value)


# -- 6. public modules ------------------------------------------------------------------------


class TestPublicModules:
    @pytest.mark.parametrize("package", [mutator, mutator_governance])
    def test_public_names_show_their_package(self, package: Any) -> None:
        """Every exported class and function says it lives in the package, not a private module."""
        for name in package.__all__:
            value = getattr(package, name)
            if isinstance(value, type) or (callable(value) and hasattr(value, "__code__")):
                assert value.__module__ == package.__name__, name
                if isinstance(value, type):
                    typing.get_type_hints(value)  # annotations still resolve

    def test_reprs_and_pickles_use_the_public_module(self) -> None:
        """Reprs name mutator.X; pickled values and errors load back."""
        assert repr(EngineOptions) == "<class 'mutator.EngineOptions'>"
        options = EngineOptions(execution_timeout=1.5)
        assert pickle.loads(pickle.dumps(options)) == options
        error = pickle.loads(pickle.dumps(ConfigurationError("bad")))
        assert type(error) is ConfigurationError
        status = mutator_governance.RequestStatus.EXECUTED
        assert pickle.loads(pickle.dumps(status)) is status
