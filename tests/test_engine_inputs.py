"""Behaviour on bad input: every mistake gets a clear error of the documented type."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import pytest

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
    MutationResult,
    MutatorError,
    PolicyDecision,
    ResultStatus,
    ValidationResult,
)

from ._domain import Quotas, RecordingInterceptor, Returns, SetQuota, quotas

pytestmark = pytest.mark.anyio


class NoIntent(Mutation[Quotas]):
    """A mutation subclass that forgot its intent."""

    def apply(self, state: Quotas) -> Quotas:
        return state


class NoApply(Mutation[Quotas]):
    """A mutation subclass that forgot apply."""

    intent: ClassVar[MutationIntent] = MutationIntent("no.apply")


class WrongValidate(Mutation[Quotas]):
    """A mutation whose validate returns a bool."""

    intent: ClassVar[MutationIntent] = MutationIntent("wrong.validate")

    def validate(self, state: Quotas) -> Any:
        return True

    def apply(self, state: Quotas) -> Quotas:
        return state


class LooksLikeAMutation:
    """Duck-typed, but not a Mutation."""

    intent = MutationIntent("duck")

    def apply(self, state: Any) -> Any:
        return state


class NotAPolicy:
    """Has a name but nothing else."""

    name = "imposter"


class StringPriority(MutationPolicy[Any]):
    priority = "high"  # type: ignore[assignment]

    def evaluate(self, mutation: Any, state: Any, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.allow()


def engine() -> MutationEngine:
    return MutationEngine()


class TestMutationChecks:
    async def test_non_mutation_is_rejected(self) -> None:
        """Executing an object that is not a Mutation names the expected base class."""
        with pytest.raises(InvalidMutationError, match="Mutation") as caught:
            await engine().execute(LooksLikeAMutation(), quotas())  # type: ignore[arg-type]
        assert "LooksLikeAMutation" in str(caught.value)

    async def test_non_mutation_in_batch_is_rejected_before_running(self) -> None:
        """A batch with a non-mutation fails before any step runs."""
        eng = engine()
        with pytest.raises(InvalidMutationError):
            await eng.execute_batch([SetQuota("a", 1), object()], quotas(), state_id="q")  # type: ignore[list-item]
        assert await eng.audit.entries() == []

    async def test_missing_intent_is_rejected(self) -> None:
        """A Mutation subclass without an intent is rejected with a hint."""
        with pytest.raises(InvalidMutationError, match="intent") as caught:
            await engine().execute(NoIntent(), quotas())
        assert "NoIntent" in str(caught.value)

    async def test_missing_apply_is_rejected(self) -> None:
        """A Mutation subclass that does not implement apply is rejected."""
        with pytest.raises(InvalidMutationError, match="apply"):
            await engine().execute(NoApply(), quotas())

    def test_non_intent_class_attribute_is_rejected(self) -> None:
        """Declaring something other than a MutationIntent as intent fails at class creation."""
        with pytest.raises(TypeError, match="MutationIntent"):

            class Bad(Mutation[Quotas]):
                intent = "quota.set"  # type: ignore[assignment]

    async def test_wrong_validate_type_names_validate(self) -> None:
        """validate returning the wrong type raises InvalidMutationError naming validate."""
        eng = engine()
        with pytest.raises(InvalidMutationError, match="validate") as caught:
            await eng.execute(WrongValidate(), quotas(), state_id="q")
        assert "WrongValidate" in str(caught.value)
        assert "bool" in str(caught.value)
        assert caught.value.execution_id is not None
        (entry,) = await eng.audit.entries("q")
        assert entry.outcome is AuditOutcome.FAILED

    async def test_apply_returning_none_is_rejected(self) -> None:
        """apply returning None for a non-None state raises InvalidMutationError."""
        eng = engine()
        with pytest.raises(InvalidMutationError, match="None"):
            await eng.execute(Returns(lambda s: None), quotas(), state_id="q")
        assert len(await eng.history("q")) == 0

    async def test_apply_returning_none_for_none_state_is_fine(self) -> None:
        """apply may return None when the state itself is None."""
        result = await engine().execute(Returns(lambda s: None), None)  # type: ignore[arg-type]
        assert result.ok
        assert result.new_state is None

    async def test_apply_returning_blocked_result_is_rejected(self) -> None:
        """apply may only return success or invalid results."""
        blocked: MutationResult[Quotas] = MutationResult(ResultStatus.POLICY_BLOCKED)
        with pytest.raises(InvalidMutationError, match="POLICY_BLOCKED"):
            await engine().execute(Returns(lambda s: blocked), quotas())

    def test_invalid_result_needs_errors(self) -> None:
        """MutationResult.invalid refuses a valid ValidationResult."""
        with pytest.raises(ValueError, match="errors"):
            MutationResult.invalid(ValidationResult.ok())


class TestOptions:
    @pytest.mark.parametrize("value", [0, -1, 1.5, True, "10"])
    def test_bad_max_concurrency(self, value: Any) -> None:
        """max_concurrency must be an int >= 1."""
        with pytest.raises(ConfigurationError, match="max_concurrency"):
            EngineOptions(max_concurrency=value)

    @pytest.mark.parametrize("field", ["execution_timeout", "policy_timeout"])
    @pytest.mark.parametrize("value", [0, -0.5, -10, True, "1"])
    def test_bad_timeouts(self, field: str, value: Any) -> None:
        """Timeouts must be positive numbers of seconds or None."""
        with pytest.raises(ConfigurationError, match=field):
            EngineOptions(**{field: value})

    def test_bad_metrics_window(self) -> None:
        """metrics_window must be at least one."""
        with pytest.raises(ConfigurationError, match="metrics_window"):
            EngineOptions(metrics_window=0)

    def test_configuration_error_is_a_value_error(self) -> None:
        """ConfigurationError can be caught as ValueError."""
        with pytest.raises(ValueError):
            EngineOptions(max_concurrency=0)

    def test_presets(self) -> None:
        """The presets are ordinary instances with the documented settings."""
        assert EngineOptions.default() == EngineOptions()
        strict = EngineOptions.strict()
        assert (strict.always_validate, strict.execution_timeout, strict.policy_timeout) == (
            True,
            30.0,
            5.0,
        )
        performance = EngineOptions.performance()
        assert not performance.always_validate
        assert performance.max_concurrency == 64

    def test_options_are_immutable(self) -> None:
        """Options cannot be changed after construction."""
        options = EngineOptions()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            options.max_concurrency = 1  # type: ignore[misc]

    def test_engine_rejects_non_options(self) -> None:
        """The engine refuses anything but EngineOptions as options."""
        with pytest.raises(TypeError, match="EngineOptions"):
            MutationEngine({"max_concurrency": 1})  # type: ignore[arg-type]


class TestRegistration:
    @pytest.mark.parametrize(
        "policy",
        [NotAPolicy(), StringPriority(), object(), "policy"],
        ids=["no-evaluate", "string-priority", "object", "string"],
    )
    def test_non_policy_is_a_type_error(self, policy: Any) -> None:
        """Registering something that cannot act as a policy raises TypeError."""
        with pytest.raises(TypeError):
            engine().register_policy(policy)

    def test_non_policy_in_constructor_is_a_type_error(self) -> None:
        """Policies passed to the constructor are checked the same way."""
        with pytest.raises(TypeError):
            MutationEngine(policies=[NotAPolicy()])  # type: ignore[list-item]

    def test_rejected_policy_is_not_registered(self) -> None:
        """A rejected registration leaves the policy list unchanged."""
        eng = engine()
        with pytest.raises(TypeError):
            eng.register_policy(NotAPolicy())  # type: ignore[arg-type]
        assert eng.policies == ()

    @pytest.mark.parametrize("interceptor", [object(), RecordingInterceptor, "logging"])
    def test_non_interceptor_is_a_type_error(self, interceptor: Any) -> None:
        """Registering a non-Interceptor (including the class itself) raises TypeError."""
        with pytest.raises(TypeError, match="Interceptor"):
            engine().register_interceptor(interceptor)


class TestContext:
    @pytest.mark.parametrize("context", ["bob", {"actor_id": "bob"}, 42])
    async def test_non_context_is_a_type_error(self, context: Any) -> None:
        """Passing something other than a MutationContext as context raises TypeError."""
        eng = engine()
        with pytest.raises(TypeError, match="MutationContext"):
            await eng.execute(SetQuota("a", 1), quotas(), context=context)
        with pytest.raises(TypeError, match="MutationContext"):
            await eng.execute_batch([SetQuota("a", 1)], quotas(), context=context)
        with pytest.raises(TypeError, match="MutationContext"):
            await eng.evaluate(SetQuota("a", 1), quotas(), context=context)
        assert await eng.audit.entries() == []

    async def test_default_context_is_system(self) -> None:
        """Without a context the execution is attributed to the system."""
        eng = engine()
        await eng.execute(SetQuota("a", 1), quotas(), state_id="q")
        (entry,) = await eng.audit.entries("q")
        assert entry.context.actor_id == "system"


class TestErrorHierarchy:
    @pytest.mark.parametrize(
        "error_type",
        [ConfigurationError, InvalidMutationError],
    )
    def test_library_errors_share_a_root(self, error_type: type[Exception]) -> None:
        """Errors the library raises on bad input derive from MutatorError."""
        assert issubclass(error_type, MutatorError)

    async def test_raised_errors_are_mutator_errors(self) -> None:
        """Each bad-input error raised by the engine can be caught as MutatorError."""
        attempts = [
            lambda: engine().execute(LooksLikeAMutation(), quotas()),  # type: ignore[arg-type]
            lambda: engine().execute(NoIntent(), quotas()),
            lambda: engine().execute(WrongValidate(), quotas()),
            lambda: engine().execute(Returns(lambda s: None), quotas()),
        ]
        for attempt in attempts:
            with pytest.raises(MutatorError):
                await attempt()
        with pytest.raises(MutatorError):
            EngineOptions(execution_timeout=-1)


class TestStateIds:
    """A state id keys the state's lock, its history and its audit entries: one that is not
    a string was taken as given (``state_id=123`` recorded a history under the number,
    a list failed deep inside with "unhashable type")."""

    @pytest.mark.parametrize("state_id", [123, 1.5, b"quota", ["quota"], object()], ids=repr)
    async def test_execute_refuses_a_state_id_that_is_not_a_string(self, state_id: Any) -> None:
        eng = engine()
        with pytest.raises(TypeError, match="state_id must be a string or None, got "):
            await eng.execute(SetQuota("a", 1), quotas(), state_id=state_id)
        with pytest.raises(TypeError, match="state_id must be a string or None, got "):
            await eng.execute_batch([SetQuota("a", 1)], quotas(), state_id=state_id)
        assert await eng.audit.entries() == []

    @pytest.mark.parametrize("state_id", [123, None, b"quota"], ids=repr)
    async def test_history_refuses_a_state_id_that_is_not_a_string(self, state_id: Any) -> None:
        with pytest.raises(TypeError, match="state_id must be a string, got "):
            await engine().history(state_id)
