"""Behaviour of one execution through the engine pipeline: order, modes, results, records."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import attrs
import attrs.exceptions
import pytest

from mutator import (
    AuditOutcome,
    ChangeSet,
    ChangeType,
    EngineOptions,
    ExecutionTimeoutError,
    MutationContext,
    MutationEngine,
    MutationFailedError,
    MutationMode,
    MutationResult,
    PolicyDecision,
    ResultStatus,
    SideEffect,
    StateChange,
    ValidationResult,
)

from ._domain import (
    AsyncFixed,
    AsyncRecorded,
    Fixed,
    Log,
    Quotas,
    Raises,
    Recorded,
    RecordingAudit,
    RecordingHistory,
    RecordingInterceptor,
    Returns,
    SetQuota,
    allow,
    approval,
    deny,
    quotas,
    user,
)

pytestmark = pytest.mark.anyio


def in_mode(mode: MutationMode) -> MutationContext:
    return attrs.evolve(user(), mode=mode)


def recording_engine(log: Log, options: EngineOptions | None = None) -> MutationEngine:
    return MutationEngine(
        options,
        audit=RecordingAudit(log),
        history=RecordingHistory(log),
        policies=[allow("low", priority=1, log=log), allow("high", priority=5, log=log)],
        interceptors=[RecordingInterceptor(log)],
    )


class TestPipelineOrder:
    async def test_steps_run_in_documented_order(self) -> None:
        """A commit runs before → policies → validate → apply → after → audit → history."""
        log: Log = []
        engine = recording_engine(log)
        result = await engine.execute(Recorded(log), quotas(), context=user(), state_id="q")
        assert result.ok
        assert log == [
            "before",
            "policy:high",
            "policy:low",
            "validate",
            "apply",
            "after",
            "audit",
            "history",
        ]

    async def test_async_steps_run_in_documented_order(self) -> None:
        """Async validate/apply keep the same pipeline order as sync ones."""
        log: Log = []
        engine = recording_engine(log)
        result = await engine.execute(AsyncRecorded(log), quotas(), context=user(), state_id="q")
        assert result.ok
        assert log == [
            "before",
            "policy:high",
            "policy:low",
            "validate",
            "apply",
            "after",
            "audit",
            "history",
        ]

    async def test_validation_runs_once_per_commit(self) -> None:
        """Validation is called exactly once for one commit with default options."""
        log: Log = []
        engine: MutationEngine = MutationEngine()
        await engine.execute(Recorded(log), quotas(), state_id="q")
        assert log.count("validate") == 1
        assert log.count("apply") == 1

    async def test_validation_failure_stops_before_apply(self) -> None:
        """An invalid mutation is never applied and leaves no history."""
        log: Log = []
        engine = recording_engine(log)
        result = await engine.execute(Recorded(log, valid=False), quotas(), state_id="q")
        assert result.status is ResultStatus.VALIDATION_FAILED
        assert "apply" not in log
        assert log[-2:] == ["after", "audit"]


class TestValidationSkipping:
    async def test_performance_preset_skips_validation_on_commit(self) -> None:
        """With always_validate off a COMMIT does not call validate at all."""
        log: Log = []
        engine: MutationEngine = MutationEngine(EngineOptions.performance())
        result = await engine.execute(Recorded(log, valid=False), quotas())
        assert result.ok
        assert log == ["apply"]

    @pytest.mark.parametrize("mode", [MutationMode.SIMULATE, MutationMode.VALIDATE])
    async def test_performance_preset_still_validates_other_modes(self, mode: MutationMode) -> None:
        """SIMULATE and VALIDATE validate even when always_validate is off."""
        log: Log = []
        engine: MutationEngine = MutationEngine(EngineOptions.performance())
        result = await engine.execute(Recorded(log, valid=False), quotas(), context=in_mode(mode))
        assert result.status is ResultStatus.VALIDATION_FAILED
        assert log == ["validate"]


class TestModes:
    async def test_simulate_calls_simulate_not_apply(self) -> None:
        """SIMULATE runs simulate, returns the previewed state and writes no history."""
        log: Log = []
        engine: MutationEngine = MutationEngine()
        state = quotas(alice=1)
        result = await engine.execute(
            Recorded(log, amount=7),
            state,
            context=in_mode(MutationMode.SIMULATE),
            state_id="q",
        )
        assert log == ["validate", "simulate"]
        assert result.ok
        assert result.mode is MutationMode.SIMULATE
        assert result.new_state == quotas(alice=7)
        assert result.changes.paths() == ("quotas.alice",)
        assert len(await engine.history("q")) == 0

    async def test_default_simulate_is_apply(self) -> None:
        """A mutation without its own simulate previews with apply."""
        engine: MutationEngine = MutationEngine()
        result = await engine.execute(
            SetQuota("bob", 3), quotas(), context=in_mode(MutationMode.SIMULATE)
        )
        assert result.ok
        assert result.new_state == quotas(bob=3)

    async def test_validate_mode_returns_input_state_without_applying(self) -> None:
        """VALIDATE returns the unchanged input state, no changes, and never calls apply."""
        log: Log = []
        engine: MutationEngine = MutationEngine()
        state = quotas(alice=1)
        result = await engine.execute(
            Recorded(log, amount=9),
            state,
            context=in_mode(MutationMode.VALIDATE),
            state_id="q",
        )
        assert result.ok
        assert result.new_state is state
        assert len(result.changes) == 0
        assert log == ["validate"]
        assert len(await engine.history("q")) == 0

    async def test_async_simulate_is_awaited(self) -> None:
        """An async simulate is awaited and its state returned."""
        log: Log = []
        engine: MutationEngine = MutationEngine()
        result = await engine.execute(
            AsyncRecorded(log, amount=4), quotas(), context=in_mode(MutationMode.SIMULATE)
        )
        assert result.new_state == quotas(alice=4)
        assert log == ["validate", "simulate"]


class TestSyncAndAsync:
    @pytest.mark.parametrize("mutation_cls", [Recorded, AsyncRecorded])
    @pytest.mark.parametrize("policy_cls", [Fixed, AsyncFixed])
    async def test_every_combination_commits(
        self, mutation_cls: type[Any], policy_cls: type[Fixed]
    ) -> None:
        """Sync and async validate/apply and policies all produce the same successful result."""
        log: Log = []
        engine: MutationEngine = MutationEngine(
            policies=[policy_cls("p", PolicyDecision.allow(), log=log)]
        )
        result = await engine.execute(mutation_cls(log, amount=2), quotas())
        assert result.ok
        assert result.new_state == quotas(alice=2)
        assert log == ["policy:p", "validate", "apply"]

    async def test_async_invalid_validation_blocks(self) -> None:
        """An async validate returning errors yields VALIDATION_FAILED."""
        log: Log = []
        engine: MutationEngine = MutationEngine()
        result = await engine.execute(AsyncRecorded(log, valid=False), quotas())
        assert result.status is ResultStatus.VALIDATION_FAILED
        assert result.validation.errors[0].message == "rejected by validate"


class TestChanges:
    async def test_bare_state_is_diffed_into_paths(self) -> None:
        """Returning a bare state yields a ChangeSet with nested paths like quotas.alice."""
        engine: MutationEngine = MutationEngine()
        result = await engine.execute(SetQuota("alice", 5), quotas(alice=1, bob=2))
        assert isinstance(result.changes, ChangeSet)
        assert list(result.changes) == [StateChange("quotas.alice", 1, 5, ChangeType.MODIFIED)]

    async def test_new_key_is_an_addition(self) -> None:
        """A quota for a new user is recorded as ADDED at its path."""
        engine: MutationEngine = MutationEngine()
        result = await engine.execute(SetQuota("carol", 3), quotas(alice=1))
        assert list(result.changes) == [StateChange.added("quotas.carol", 3)]

    async def test_unchanged_state_has_no_changes(self) -> None:
        """Returning the same state records no changes."""
        engine: MutationEngine = MutationEngine()
        result = await engine.execute(Returns(lambda s: s), quotas(alice=1))
        assert result.ok
        assert len(result.changes) == 0

    async def test_explicit_changes_and_side_effects_are_kept(self) -> None:
        """MutationResult.success with explicit changes keeps them instead of diffing."""
        explicit = StateChange("custom.path", "a", "b")
        effect = SideEffect("notify", "tell alice")

        def outcome(state: Quotas) -> MutationResult[Quotas]:
            return MutationResult.success(
                Quotas({"alice": 99}), changes=[explicit], side_effects=[effect]
            )

        engine: MutationEngine = MutationEngine()
        result = await engine.execute(Returns(outcome), quotas(alice=1))
        assert result.ok
        assert result.new_state == quotas(alice=99)
        assert list(result.changes) == [explicit]
        assert result.side_effects == (effect,)

    async def test_success_without_changes_is_diffed(self) -> None:
        """MutationResult.success without changes lets the engine diff the states."""
        engine: MutationEngine = MutationEngine()
        result = await engine.execute(
            Returns(lambda s: MutationResult.success(Quotas({"alice": 2}))), quotas(alice=1)
        )
        assert result.changes.paths() == ("quotas.alice",)

    async def test_explicit_empty_changes_stay_empty(self) -> None:
        """An explicit empty change list is respected even when the state differs."""
        engine: MutationEngine = MutationEngine()
        result = await engine.execute(
            Returns(lambda s: MutationResult.success(Quotas({"alice": 2}), changes=[])),
            quotas(alice=1),
        )
        assert result.ok
        assert len(result.changes) == 0


class TestInvalidFromApply:
    async def test_invalid_result_from_apply_is_a_validation_failure(self) -> None:
        """MutationResult.invalid from apply yields VALIDATION_FAILED with its issues."""
        refusal = ValidationResult.error("quotas.alice", "over the limit", code="limit")
        engine: MutationEngine = MutationEngine()
        result = await engine.execute(
            Returns(lambda s: MutationResult.invalid(refusal)), quotas(), state_id="q"
        )
        assert not result.ok
        assert result.status is ResultStatus.VALIDATION_FAILED
        assert result.new_state is None
        assert result.validation.errors == refusal.errors
        assert "over the limit" in (result.error_message or "")

    async def test_invalid_result_from_apply_is_not_audited_as_success(self) -> None:
        """A refusal from apply is audited as VALIDATION_FAILED and never recorded in history."""
        refusal = ValidationResult.error("x", "no")
        engine: MutationEngine = MutationEngine()
        await engine.execute(
            Returns(lambda s: MutationResult.invalid(refusal)), quotas(), state_id="q"
        )
        (entry,) = engine.audit.all()  # type: ignore[attr-defined]
        assert entry.outcome is AuditOutcome.VALIDATION_FAILED
        assert not entry.succeeded
        assert entry.error == "x: no"
        assert len(await engine.history("q")) == 0


class TestHistory:
    async def test_successful_commit_with_state_id_is_recorded(self) -> None:
        """A successful commit with a state_id appends one history entry."""
        engine: MutationEngine = MutationEngine()
        context = user("alice")
        result = await engine.execute(SetQuota("a", 1), quotas(), context=context, state_id="q")
        history = await engine.history("q")
        (entry,) = history.entries
        assert entry.execution_id == result.execution_id
        assert entry.state_id == "q"
        assert entry.intent == SetQuota.intent
        assert entry.context == context
        assert entry.changes == result.changes

    async def test_commit_without_state_id_writes_no_history(self) -> None:
        """Without a state_id nothing is written to any history."""
        engine: MutationEngine = MutationEngine()
        await engine.execute(SetQuota("a", 1), quotas())
        assert engine.history_store.state_ids() == ()  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        "policy",
        [deny("no"), approval("ask", "carol")],
        ids=["denied", "approval"],
    )
    async def test_non_success_writes_no_history(self, policy: Fixed) -> None:
        """Blocked or approval-required executions write no history."""
        engine: MutationEngine = MutationEngine(policies=[policy])
        result = await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        assert not result.ok
        assert len(await engine.history("q")) == 0

    async def test_validation_failure_writes_no_history(self) -> None:
        """A validation failure writes no history."""
        engine: MutationEngine = MutationEngine()
        await engine.execute(SetQuota("a", -1), quotas(), state_id="q")
        assert len(await engine.history("q")) == 0


class TestAudit:
    async def outcome_of(self, engine: MutationEngine, mutation: Any) -> AuditOutcome:
        with contextlib.suppress(MutationFailedError, ExecutionTimeoutError):
            await engine.execute(mutation, quotas(), context=user(), state_id="q")
        entries = await engine.audit.entries("q")
        assert len(entries) == 1
        return entries[0].outcome

    async def test_success_is_audited(self) -> None:
        """A success is audited as SUCCEEDED."""
        engine: MutationEngine = MutationEngine()
        assert await self.outcome_of(engine, SetQuota("a", 1)) is AuditOutcome.SUCCEEDED

    async def test_validation_failure_is_audited(self) -> None:
        """A validation failure is audited as VALIDATION_FAILED."""
        engine: MutationEngine = MutationEngine()
        outcome = await self.outcome_of(engine, SetQuota("a", -1))
        assert outcome is AuditOutcome.VALIDATION_FAILED

    async def test_denial_is_audited(self) -> None:
        """A denial is audited as POLICY_BLOCKED."""
        engine: MutationEngine = MutationEngine(policies=[deny("no")])
        outcome = await self.outcome_of(engine, SetQuota("a", 1))
        assert outcome is AuditOutcome.POLICY_BLOCKED

    async def test_approval_is_audited(self) -> None:
        """An approval requirement is audited as APPROVAL_REQUIRED."""
        engine: MutationEngine = MutationEngine(policies=[approval("ask", "carol")])
        outcome = await self.outcome_of(engine, SetQuota("a", 1))
        assert outcome is AuditOutcome.APPROVAL_REQUIRED

    async def test_failure_is_audited(self) -> None:
        """An exception from apply is audited as FAILED."""
        engine: MutationEngine = MutationEngine()
        outcome = await self.outcome_of(engine, Raises(RuntimeError("x")))
        assert outcome is AuditOutcome.FAILED

    async def test_timeout_is_audited(self) -> None:
        """A timed-out execution is audited as TIMED_OUT."""
        engine: MutationEngine = MutationEngine(EngineOptions(execution_timeout=0.05))

        def slow(state: Quotas) -> Quotas:
            time.sleep(0.1)
            return state

        outcome = await self.outcome_of(engine, Returns(slow))
        assert outcome is AuditOutcome.TIMED_OUT

    async def test_entry_has_both_timestamps_and_details(self) -> None:
        """An entry carries the request timestamp, the execution timestamp and the details."""
        engine: MutationEngine = MutationEngine()
        context = user("alice", correlation_id="corr-1")
        result = await engine.execute(SetQuota("a", 1), quotas(), context=context, state_id="q")
        (entry,) = await engine.audit.entries("q")
        assert entry.context.timestamp == context.timestamp
        assert entry.executed_at >= context.timestamp
        assert entry.executed_at <= result.completed_at
        assert entry.execution_id == result.execution_id
        assert entry.state_type == "Quotas"
        assert entry.mode is MutationMode.COMMIT
        assert entry.intent == SetQuota.intent
        assert entry.changes == result.changes
        assert entry.correlation_id == "corr-1"
        assert entry.error is None

    async def test_blocked_entry_names_the_blocker(self) -> None:
        """A blocked attempt is audited with its decisions and reason."""
        engine: MutationEngine = MutationEngine(policies=[deny("freeze", "frozen")])
        await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        (entry,) = await engine.audit.entries("q")
        assert not entry.succeeded
        assert entry.error == "freeze: frozen"
        assert [d.policy_name for d in entry.policy_decisions] == ["freeze"]


class TestResultFields:
    async def test_success_fields(self) -> None:
        """A successful result carries state, changes, validation, decisions, id and duration."""
        engine: MutationEngine = MutationEngine(policies=[allow("p")])
        result = await engine.execute(SetQuota("alice", 2), quotas(alice=1))
        assert result.ok
        assert result.status is ResultStatus.SUCCEEDED
        assert result.new_state == quotas(alice=2)
        assert result.changes.paths() == ("quotas.alice",)
        assert result.side_effects == ()
        assert result.validation.is_valid
        assert [d.policy_name for d in result.policy_decisions] == ["p"]
        assert result.requirements == ()
        assert isinstance(result.execution_id, str)
        assert result.execution_id
        assert result.duration > 0
        assert result.error_message is None

    async def test_blocked_result_has_no_state(self) -> None:
        """A blocked result has no new state and is not ok."""
        engine: MutationEngine = MutationEngine(policies=[deny("p")])
        result = await engine.execute(SetQuota("alice", 2), quotas(alice=1))
        assert not result.ok
        assert result.new_state is None
        assert len(result.changes) == 0
        assert result.execution_id is not None

    async def test_execution_ids_are_unique(self) -> None:
        """Every execution gets its own id."""
        engine: MutationEngine = MutationEngine()
        ids = {(await engine.execute(SetQuota("a", i), quotas())).execution_id for i in range(50)}
        assert len(ids) == 50

    async def test_result_is_immutable(self) -> None:
        """Assigning to a result field raises FrozenInstanceError."""
        engine: MutationEngine = MutationEngine()
        result = await engine.execute(SetQuota("a", 1), quotas())
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            result.new_state = quotas()  # type: ignore[misc]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            result.changes.changes = ()  # type: ignore[misc]

    async def test_default_validation_is_not_shared_mutable(self) -> None:
        """ValidationResult.ok() is frozen and combining it never changes it."""
        ok = ValidationResult.ok()
        combined = ok + ValidationResult.error("x", "bad")
        assert not combined.is_valid
        assert ValidationResult.ok().is_valid
        assert ValidationResult.ok().issues == ()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            ok.issues = ()  # type: ignore[misc]
