"""What apply may return: an instance of the state's class or of a declared result type."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import pytest

from mutator import (
    AuditOutcome,
    InvalidMutationError,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationIntent,
    MutationMode,
    MutationResult,
)

from ._domain import Other, Quotas, Returns, quotas

pytestmark = pytest.mark.anyio


@attrs.frozen
class ReturnsDict(Mutation[Quotas]):
    """The misuse: apply hands back a plain dict instead of the attrs state."""

    intent: ClassVar[MutationIntent] = MutationIntent("quota.as_dict")

    def apply(self, state: Quotas) -> Any:
        return {"quotas": dict(state.quotas), "owner": state.owner}


@attrs.frozen
class MigratesToOther(Mutation[Quotas]):
    """A mutation that declares it may return another state class."""

    intent: ClassVar[MutationIntent] = MutationIntent("quota.migrate")
    result_types: ClassVar[tuple[type[Any], ...]] = (Other,)

    def apply(self, state: Quotas) -> Any:
        return Other(sum(state.quotas.values()))


class TestResultTypes:
    async def test_dict_instead_of_state_is_a_typed_error_and_nothing_succeeds(self) -> None:
        """A dict from apply raises InvalidMutationError naming the mutation and both types."""
        engine = MutationEngine()
        with pytest.raises(InvalidMutationError) as caught:
            await engine.execute(ReturnsDict(), quotas(a=1), state_id="q")
        message = str(caught.value)
        assert "ReturnsDict.apply" in message
        assert "dict" in message
        assert "Quotas" in message
        assert caught.value.execution_id is not None
        assert len(await engine.history("q")) == 0
        (entry,) = await engine.audit.entries("q")
        assert entry.outcome is AuditOutcome.FAILED
        assert entry.execution_id == caught.value.execution_id
        stats = await engine.statistics()
        assert (stats.total_executed, stats.succeeded) == (1, 0)

    async def test_wrong_type_inside_a_success_result_is_refused(self) -> None:
        """MutationResult.success carrying a dict is refused the same way."""
        engine = MutationEngine()
        wrapped = Returns(lambda s: MutationResult.success({"quotas": {}}))
        with pytest.raises(InvalidMutationError, match="dict"):
            await engine.execute(wrapped, quotas(), state_id="q")
        assert len(await engine.history("q")) == 0

    async def test_simulate_is_checked_too(self) -> None:
        """A simulation returning the wrong type names simulate."""
        context = MutationContext.user("alice", mode=MutationMode.SIMULATE)
        with pytest.raises(InvalidMutationError, match=r"ReturnsDict\.simulate"):
            await MutationEngine().execute(ReturnsDict(), quotas(), context=context)

    async def test_declared_result_type_is_accepted(self) -> None:
        """A class listed in result_types may be returned and is recorded as a success."""
        engine = MutationEngine()
        result = await engine.execute(MigratesToOther(), quotas(a=2, b=3), state_id="q")
        assert result.ok
        assert result.new_state == Other(5)
        assert len(await engine.history("q")) == 1

    async def test_subclass_of_the_state_class_is_accepted(self) -> None:
        """An instance of a subclass of the state's class is an instance of it."""

        @attrs.frozen
        class SpecialQuotas(Quotas):
            pass

        result = await MutationEngine().execute(
            Returns(lambda s: SpecialQuotas(dict(s.quotas))), quotas(a=1)
        )
        assert result.ok
        assert type(result.new_state) is SpecialQuotas

    async def test_batch_step_returning_the_wrong_type_fails_the_batch(self) -> None:
        """In a batch the error names the step and no step reaches history."""
        engine = MutationEngine()
        with pytest.raises(InvalidMutationError) as caught:
            await engine.execute_batch(
                [Returns(lambda s: s), ReturnsDict()], quotas(), state_id="q"
            )
        assert any("step 2 of 2" in note for note in caught.value.__notes__)
        assert len(await engine.history("q")) == 0

    async def test_deferred_execution_returns_the_error(self) -> None:
        """execute_deferred hands the error back with a FAILED audit entry and no history."""
        engine = MutationEngine()
        deferred = await engine.execute_deferred(
            ReturnsDict(), quotas(), context=MutationContext.user("alice"), state_id="q"
        )
        assert deferred.result is None
        assert isinstance(deferred.error, InvalidMutationError)
        assert "dict" in str(deferred.error)
        assert deferred.history is None
        assert deferred.audit is not None
        assert deferred.audit.outcome is AuditOutcome.FAILED
        assert await engine.audit.entries() == []

    def test_result_types_must_be_a_tuple_of_classes(self) -> None:
        """Declaring something else fails when the class is created."""
        with pytest.raises(TypeError, match="result_types"):

            class Bad(Mutation[Quotas]):
                intent: ClassVar[MutationIntent] = MutationIntent("bad")
                result_types: ClassVar[Any] = ("Other",)
