"""Behaviour of interceptors: which hooks fire, in which order, and the error rule."""

from __future__ import annotations

import logging
from typing import Any

import anyio.lowlevel
import pytest

from mutator import (
    ExecutionContext,
    Interceptor,
    LoggingInterceptor,
    MutationContext,
    MutationEngine,
    MutationFailedError,
    MutationIntent,
    MutationResult,
    ResultStatus,
)

from ._domain import (
    Log,
    Raises,
    RecordingInterceptor,
    SetQuota,
    approval,
    deny,
    quotas,
    user,
)

pytestmark = pytest.mark.anyio


class Exploding(RecordingInterceptor):
    """Logs like :class:`RecordingInterceptor`, then raises from every hook."""

    def _record(self, hook: str) -> None:
        super()._record(hook)
        raise RuntimeError(f"{self.name} broke in {hook}")


class AsyncRecording(Interceptor):
    """An interceptor with async hooks."""

    name = "async-recording"

    def __init__(self, log: Log) -> None:
        self.log = log

    async def before(
        self, mutation: Any, state: Any, context: MutationContext, execution: ExecutionContext
    ) -> None:
        await anyio.lowlevel.checkpoint()
        self.log.append("async.before")

    async def after(
        self,
        mutation: Any,
        old_state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        await anyio.lowlevel.checkpoint()
        self.log.append("async.after")


class OnlyFor(RecordingInterceptor):
    """Runs only for mutations of one category."""

    def __init__(self, log: Log, category: str) -> None:
        super().__init__(log, f"only-{category}", prefix=True)
        self.category = category

    def should_run(self, intent: MutationIntent, context: MutationContext) -> bool:
        return intent.category == self.category


class BadFilter(RecordingInterceptor):
    """An interceptor whose should_run raises."""

    def should_run(self, intent: MutationIntent, context: MutationContext) -> bool:
        raise ValueError("filter broke")


def engine_with(*interceptors: Interceptor, policies: Any = ()) -> MutationEngine:
    return MutationEngine(interceptors=interceptors, policies=policies)


class TestHooks:
    async def test_success_fires_before_and_after(self) -> None:
        """A success fires before then after, with the result."""
        log: Log = []
        interceptor = RecordingInterceptor(log)
        result = await engine_with(interceptor).execute(SetQuota("a", 1), quotas())
        assert log == ["before", "after"]
        assert interceptor.results == [result]

    async def test_validation_failure_fires_after(self) -> None:
        """A validation failure fires after, with a result that is not ok."""
        log: Log = []
        interceptor = RecordingInterceptor(log)
        await engine_with(interceptor).execute(SetQuota("a", -1), quotas())
        assert log == ["before", "after"]
        assert interceptor.results[0].status is ResultStatus.VALIDATION_FAILED

    async def test_deny_fires_policy_blocked(self) -> None:
        """A denial fires policy_blocked instead of after."""
        log: Log = []
        interceptor = RecordingInterceptor(log)
        engine = engine_with(interceptor, policies=[deny("no")])
        await engine.execute(SetQuota("a", 1), quotas())
        assert log == ["before", "policy_blocked"]
        assert interceptor.results[0].status is ResultStatus.POLICY_BLOCKED

    async def test_approval_fires_policy_blocked(self) -> None:
        """An approval requirement fires policy_blocked."""
        log: Log = []
        interceptor = RecordingInterceptor(log)
        engine = engine_with(interceptor, policies=[approval("ask", "carol")])
        await engine.execute(SetQuota("a", 1), quotas())
        assert log == ["before", "policy_blocked"]
        assert interceptor.results[0].status is ResultStatus.APPROVAL_REQUIRED

    async def test_exception_fires_failed(self) -> None:
        """An exception from apply fires failed with the raised error."""
        log: Log = []
        interceptor = RecordingInterceptor(log)
        with pytest.raises(MutationFailedError) as caught:
            await engine_with(interceptor).execute(Raises(KeyError("k")), quotas())
        assert log == ["before", "failed"]
        assert interceptor.errors == [caught.value]

    async def test_async_hooks_are_awaited(self) -> None:
        """Async hooks are awaited in place."""
        log: Log = []
        await engine_with(AsyncRecording(log)).execute(SetQuota("a", 1), quotas())
        assert log == ["async.before", "async.after"]

    async def test_hooks_see_the_execution(self) -> None:
        """Hooks get the execution context carrying the execution id and state id."""
        seen: list[ExecutionContext] = []

        class Capture(Interceptor):
            def after(
                self,
                mutation: Any,
                old_state: Any,
                result: MutationResult[Any],
                context: MutationContext,
                execution: ExecutionContext,
            ) -> None:
                seen.append(execution)

        result = await engine_with(Capture()).execute(SetQuota("a", 1), quotas(), state_id="q")
        assert seen[0].execution_id == result.execution_id
        assert seen[0].state_id == "q"


class TestOrder:
    async def test_order_then_registration(self) -> None:
        """Hooks run by ascending order, ties in registration order."""
        log: Log = []
        engine = engine_with(
            RecordingInterceptor(log, "late", order=10, prefix=True),
            RecordingInterceptor(log, "first-tie", order=0, prefix=True),
            RecordingInterceptor(log, "early", order=-5, prefix=True),
            RecordingInterceptor(log, "second-tie", order=0, prefix=True),
        )
        await engine.execute(SetQuota("a", 1), quotas())
        assert log == [
            "early.before",
            "first-tie.before",
            "second-tie.before",
            "late.before",
            "early.after",
            "first-tie.after",
            "second-tie.after",
            "late.after",
        ]
        assert [i.name for i in engine.interceptors] == ["early", "first-tie", "second-tie", "late"]


class TestFiltering:
    async def test_should_run_selects_interceptors(self) -> None:
        """An interceptor whose should_run refuses sees no hook of that execution."""
        log: Log = []
        engine = engine_with(OnlyFor(log, "billing"), OnlyFor(log, "security"))
        await engine.execute(SetQuota("a", 1), quotas())
        assert log == ["only-billing.before", "only-billing.after"]

    async def test_raising_should_run_skips_that_interceptor(self, caplog: Any) -> None:
        """A should_run that raises is logged and that interceptor is skipped."""
        log: Log = []
        engine = engine_with(BadFilter(log, "bad", prefix=True), RecordingInterceptor(log))
        with caplog.at_level(logging.ERROR, logger="mutator.interceptors"):
            result = await engine.execute(SetQuota("a", 1), quotas())
        assert result.ok
        assert log == ["before", "after"]
        assert any("bad" in r.getMessage() for r in caplog.records)


class TestUnregister:
    async def test_unregister_interceptor(self) -> None:
        """An unregistered interceptor no longer sees executions."""
        log: Log = []
        engine = engine_with(
            RecordingInterceptor(log, "gone", prefix=True),
            RecordingInterceptor(log, "kept", prefix=True),
        )
        assert engine.unregister_interceptor("gone") == 1
        assert engine.unregister_interceptor("gone") == 0
        await engine.execute(SetQuota("a", 1), quotas())
        assert log == ["kept.before", "kept.after"]
        assert [i.name for i in engine.interceptors] == ["kept"]

    async def test_default_name_is_class_name(self) -> None:
        """An interceptor without a name is registered under its class name."""

        class Quiet(Interceptor):
            pass

        engine = engine_with(Quiet())
        assert engine.unregister_interceptor("Quiet") == 1
        assert engine.interceptors == ()


class TestErrorRule:
    @pytest.mark.parametrize(
        ("mutation", "policies", "hook"),
        [
            (SetQuota("a", 1), (), "after"),
            (SetQuota("a", -1), (), "after"),
            (SetQuota("a", 1), (deny("no"),), "policy_blocked"),
        ],
        ids=["success", "invalid", "denied"],
    )
    async def test_hook_errors_are_logged_and_outcome_unchanged(
        self, caplog: Any, mutation: Any, policies: Any, hook: str
    ) -> None:
        """A raising hook is logged on mutator.interceptors; others still run; outcome holds."""
        log: Log = []
        baseline = await engine_with(policies=policies).execute(mutation, quotas())
        engine = engine_with(
            Exploding(log, "boom", prefix=True),
            RecordingInterceptor(log, "calm", order=1, prefix=True),
            policies=policies,
        )
        with caplog.at_level(logging.ERROR, logger="mutator.interceptors"):
            result = await engine.execute(mutation, quotas(), state_id="q")
        assert result.status is baseline.status
        assert result.new_state == baseline.new_state
        assert log == ["boom.before", "calm.before", f"boom.{hook}", f"calm.{hook}"]
        messages = [r.getMessage() for r in caplog.records if r.name == "mutator.interceptors"]
        assert len(messages) == 2
        assert "before" in messages[0]
        assert hook in messages[1]
        assert all("boom" in m for m in messages)
        assert all(r.exc_info is not None for r in caplog.records)
        (entry,) = await engine.audit.entries("q")
        assert entry.outcome.value == result.status.value

    async def test_failed_hook_error_keeps_the_original_error(self, caplog: Any) -> None:
        """A raising failed hook is logged and the execution's own error still propagates."""
        log: Log = []
        engine = engine_with(
            Exploding(log, "boom", prefix=True),
            RecordingInterceptor(log, "calm", order=1, prefix=True),
        )
        with (
            caplog.at_level(logging.ERROR, logger="mutator.interceptors"),
            pytest.raises(MutationFailedError) as caught,
        ):
            await engine.execute(Raises(OSError("disk")), quotas())
        assert isinstance(caught.value.__cause__, OSError)
        assert log == ["boom.before", "calm.before", "boom.failed", "calm.failed"]
        assert len([r for r in caplog.records if r.name == "mutator.interceptors"]) == 2

    async def test_successful_commit_still_recorded_when_after_raises(self, caplog: Any) -> None:
        """A raising after hook does not prevent history."""
        engine = engine_with(Exploding([], "boom"))
        with caplog.at_level(logging.CRITICAL, logger="mutator.interceptors"):
            result = await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        assert result.ok
        assert len(await engine.history("q")) == 1


class TestLoggingInterceptor:
    async def test_one_line_per_success(self, caplog: Any) -> None:
        """A success logs one INFO line with operation, status, actor and change count."""
        engine = engine_with(LoggingInterceptor())
        with caplog.at_level(logging.INFO, logger="mutator"):
            result = await engine.execute(
                SetQuota("a", 1), quotas(), context=user("alice"), state_id="q"
            )
        (record,) = [r for r in caplog.records if r.name == "mutator"]
        message = record.getMessage()
        assert record.levelno == logging.INFO
        assert "quota.set" in message
        assert "succeeded" in message
        assert "actor=alice" in message
        assert "changes=1" in message
        assert str(result.execution_id) in message

    async def test_one_line_per_validation_failure(self, caplog: Any) -> None:
        """A validation failure logs one line with the error."""
        engine = engine_with(LoggingInterceptor())
        with caplog.at_level(logging.INFO, logger="mutator"):
            await engine.execute(SetQuota("a", -1), quotas())
        (record,) = [r for r in caplog.records if r.name == "mutator"]
        assert "validation_failed" in record.getMessage()
        assert "must not be negative" in record.getMessage()

    async def test_one_line_per_block(self, caplog: Any) -> None:
        """A denial logs one line naming the blocker."""
        engine = engine_with(LoggingInterceptor(), policies=[deny("freeze", "frozen")])
        with caplog.at_level(logging.INFO, logger="mutator"):
            await engine.execute(SetQuota("a", 1), quotas())
        (record,) = [r for r in caplog.records if r.name == "mutator"]
        assert "policy_blocked" in record.getMessage()
        assert "freeze: frozen" in record.getMessage()

    async def test_one_error_line_per_failure(self, caplog: Any) -> None:
        """A failure logs one ERROR line."""
        engine = engine_with(LoggingInterceptor())
        with caplog.at_level(logging.INFO, logger="mutator"), pytest.raises(MutationFailedError):
            await engine.execute(Raises(RuntimeError("kaput")), quotas())
        (record,) = [r for r in caplog.records if r.name == "mutator"]
        assert record.levelno == logging.ERROR
        assert "kaput" in record.getMessage()

    async def test_custom_logger_and_level(self, caplog: Any) -> None:
        """A given logger and level are used instead of the defaults."""
        logger = logging.getLogger("tests.custom")
        engine = engine_with(LoggingInterceptor(logger, level=logging.WARNING))
        with caplog.at_level(logging.INFO):
            await engine.execute(SetQuota("a", 1), quotas())
        (record,) = [r for r in caplog.records if r.name.startswith(("mutator", "tests"))]
        assert record.name == "tests.custom"
        assert record.levelno == logging.WARNING
