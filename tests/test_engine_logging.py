"""Structured log records of the engine: extra= fields, templates, logger names."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, ClassVar

import anyio
import attrs
import pytest

from mutator import (
    EngineOptions,
    ExecutionContext,
    ExecutionTimeoutError,
    Interceptor,
    LoggingInterceptor,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationFailedError,
    MutationIntent,
)

from ._domain import Log, Quotas, Raises, RecordingInterceptor, SetQuota, deny, quotas

pytestmark = pytest.mark.anyio

OUTCOME_FIELDS = {
    "execution_id",
    "operation",
    "category",
    "mode",
    "state_id",
    "actor_id",
    "correlation_id",
    "status",
    "duration",
    "changes",
    "error",
}


@attrs.frozen
class Waits(Mutation[Quotas]):
    """An async apply that signals it started, then waits far longer than any test."""

    started: anyio.Event = attrs.field(eq=False)
    intent: ClassVar[MutationIntent] = MutationIntent("quota.waits")

    async def apply(self, state: Quotas) -> Quotas:
        self.started.set()
        await anyio.sleep(30)
        return state


class CancelRecording(RecordingInterceptor):
    """Also logs the cancelled hook."""

    def cancelled(
        self, mutation: Any, state: Any, context: MutationContext, execution: ExecutionContext
    ) -> None:
        self._record("cancelled")


def logged(caplog: pytest.LogCaptureFixture, name: str = "mutator") -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name]


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: getattr(record, key) for key in OUTCOME_FIELDS}


async def cancel_while_running(engine: MutationEngine) -> None:
    started = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(engine.execute, Waits(started), quotas(), state_id="q"))
            await started.wait()
            tg.cancel_scope.cancel()


class TestLoggingInterceptorFields:
    async def test_success_record_carries_every_field(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A commit logs one INFO record whose extra fields describe the execution."""
        caplog.set_level(logging.INFO, logger="mutator")
        engine = MutationEngine(interceptors=[LoggingInterceptor()])
        context = MutationContext.user("alice", correlation_id="req-1")
        result = await engine.execute(SetQuota("a", 1), quotas(), context=context, state_id="q")
        (record,) = logged(caplog)
        assert fields(record) == {
            "execution_id": result.execution_id,
            "operation": "quota.set",
            "category": "billing",
            "mode": "commit",
            "state_id": "q",
            "actor_id": "alice",
            "correlation_id": "req-1",
            "status": "succeeded",
            "duration": result.duration,
            "changes": 1,
            "error": None,
        }

    async def test_messages_are_templates_not_preformatted(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Values travel as args and fields; the message template holds none of them."""
        caplog.set_level(logging.DEBUG, logger="mutator")
        engine = MutationEngine(interceptors=[LoggingInterceptor()], policies=[deny("freeze")])
        await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        engine.unregister_policy("freeze")
        await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        records = logged(caplog)
        assert len(records) == 5  # start + blocked; start + succeeded + its one change
        for record in records:
            assert record.args
            assert "quota.set" not in str(record.msg)
            assert record.execution_id not in str(record.msg)  # type: ignore[attr-defined]

    async def test_change_records_at_debug_name_their_path(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """At DEBUG each change is one record with the path and execution id as fields."""
        caplog.set_level(logging.DEBUG, logger="mutator")
        engine = MutationEngine(interceptors=[LoggingInterceptor()])
        result = await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        (change,) = [r for r in logged(caplog) if hasattr(r, "path")]
        assert (change.path, change.change_type) == ("quotas.a", "added")
        assert change.execution_id == result.execution_id

    @pytest.mark.parametrize(
        ("mutation", "status", "error"),
        [
            (SetQuota("a", -1), "validation_failed", "must not be negative"),
            (SetQuota("a", 1), "policy_blocked", "freeze"),
        ],
    )
    async def test_non_success_records_carry_status_and_reason(
        self, caplog: pytest.LogCaptureFixture, mutation: Any, status: str, error: str
    ) -> None:
        """Validation failures and policy blocks log their status and one-line reason."""
        caplog.set_level(logging.INFO, logger="mutator")
        policies = [deny("freeze", "frozen")] if status == "policy_blocked" else []
        engine = MutationEngine(interceptors=[LoggingInterceptor()], policies=policies)
        await engine.execute(mutation, quotas(), state_id="q")
        (record,) = logged(caplog)
        assert record.levelno == logging.INFO
        assert record.status == status  # type: ignore[attr-defined]
        assert error in record.error  # type: ignore[attr-defined]

    async def test_failure_logs_an_error_with_fields(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A raising mutation logs at ERROR with status failed and the error text."""
        caplog.set_level(logging.INFO, logger="mutator")
        engine = MutationEngine(interceptors=[LoggingInterceptor()])
        with pytest.raises(MutationFailedError):
            await engine.execute(Raises(RuntimeError("kaput")), quotas(), state_id="q")
        (record,) = logged(caplog)
        assert record.levelno == logging.ERROR
        assert record.status == "failed"  # type: ignore[attr-defined]
        assert "kaput" in record.error  # type: ignore[attr-defined]
        assert record.duration >= 0  # type: ignore[attr-defined]

    async def test_timeout_logs_status_timed_out(self, caplog: pytest.LogCaptureFixture) -> None:
        """A timed-out execution logs status timed_out."""
        caplog.set_level(logging.INFO, logger="mutator")
        engine = MutationEngine(
            EngineOptions(execution_timeout=0.05), interceptors=[LoggingInterceptor()]
        )
        with pytest.raises(ExecutionTimeoutError):
            await engine.execute(Waits(anyio.Event()), quotas(), state_id="q")
        (record,) = logged(caplog)
        assert record.status == "timed_out"  # type: ignore[attr-defined]
        assert record.duration >= 0.05  # type: ignore[attr-defined]

    async def test_cancellation_logs_status_cancelled(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A cancelled execution logs one record at the interceptor's level, not an error."""
        caplog.set_level(logging.INFO, logger="mutator")
        engine = MutationEngine(interceptors=[LoggingInterceptor()])
        await cancel_while_running(engine)
        (record,) = logged(caplog)
        assert record.levelno == logging.INFO
        assert record.status == "cancelled"  # type: ignore[attr-defined]


class TestCancelledHook:
    async def test_cancelled_hook_runs_once_and_failed_does_not(self) -> None:
        """Cancelling the caller runs before then cancelled; no failed, no after."""
        log: Log = []
        engine = MutationEngine(interceptors=[CancelRecording(log)])
        await cancel_while_running(engine)
        assert log == ["before", "cancelled"]

    async def test_cancelled_hook_errors_are_swallowed(self) -> None:
        """A raising cancelled hook is logged; cancellation still propagates unchanged."""

        class Broken(Interceptor):
            def cancelled(self, *args: Any) -> None:
                raise RuntimeError("broken hook")

        engine = MutationEngine(interceptors=[Broken()])
        await cancel_while_running(engine)  # would raise if the hook's error escaped
        assert (await engine.statistics()).total_executed == 0


class TestInterceptorErrorRecords:
    async def test_hook_error_record_names_interceptor_hook_and_execution(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """mutator.interceptors logs a failing hook with its name, hook and execution id."""

        class Broken(Interceptor):
            name = "broken"

            def after(self, *args: Any) -> None:
                raise RuntimeError("boom")

        engine = MutationEngine(interceptors=[Broken()])
        result = await engine.execute(SetQuota("a", 1), quotas(), state_id="q")
        (record,) = logged(caplog, "mutator.interceptors")
        assert record.levelno == logging.ERROR
        assert (record.interceptor, record.hook) == ("broken", "after")  # type: ignore[attr-defined]
        assert record.execution_id == result.execution_id  # type: ignore[attr-defined]
        assert record.exc_info is not None
