"""Interceptors observe executions through five hooks; they never change an outcome.

Loggers: ``mutator.interceptors`` reports a hook that raised (ERROR, with the traceback;
``extra`` fields ``interceptor``, ``hook``, ``execution_id``); :class:`LoggingInterceptor`
writes one record per execution outcome to ``mutator`` (or the logger it is given).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ._context import ExecutionContext, MutationContext, utc_now
from ._deadline import DeadlineExpired, bounded
from ._errors import ExecutionTimeoutError
from ._intent import MutationIntent

if TYPE_CHECKING:
    from ._mutation import Mutation
    from ._results import MutationResult

__all__ = ["Interceptor", "InterceptorChain", "LoggingInterceptor"]

_log = logging.getLogger("mutator.interceptors")


class Interceptor:
    """Base class for interceptors; override only the hooks you need (sync or async).

    Hooks run in ascending ``order`` (ties in registration order) and only when
    :meth:`should_run` accepts the execution:

    - :meth:`before`: after the concurrency slot is taken, before policies;
    - :meth:`after`: for every result that reached validation (``result.ok`` tells
      success from a validation failure);
    - :meth:`policy_blocked`: when policies denied the mutation or required approval;
    - :meth:`failed`: when the execution raised (including timeouts);
    - :meth:`cancelled`: when the caller cancelled the execution before it produced a result
      (it is neither audited nor a failure; the hook runs shielded and must not block).

    The rule for errors: an exception raised by a hook is logged on the
    ``mutator.interceptors`` logger and swallowed; the other interceptors still run and the
    execution's outcome is unchanged. Cancellation always propagates.
    """

    name: str = ""
    order: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__

    def should_run(self, intent: MutationIntent, context: MutationContext) -> bool:
        """Whether this interceptor's hooks run for this execution (default: always)."""
        return True

    def before(
        self,
        mutation: Mutation[Any],
        state: Any,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> Awaitable[None] | None:
        """Runs before the policies; may be sync or async (its errors are logged only)."""
        return None

    def after(
        self,
        mutation: Mutation[Any],
        old_state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> Awaitable[None] | None:
        """Runs for every result that reached validation; may be sync or async."""
        return None

    def policy_blocked(
        self,
        mutation: Mutation[Any],
        state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> Awaitable[None] | None:
        """Runs when policies denied the mutation or required approval."""
        return None

    def failed(
        self,
        mutation: Mutation[Any],
        state: Any,
        error: BaseException,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> Awaitable[None] | None:
        """Runs when the execution raised (timeouts included); ``error`` is what it raised."""
        return None

    def cancelled(
        self,
        mutation: Mutation[Any],
        state: Any,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> Awaitable[None] | None:
        """The caller cancelled the execution (not a failure); runs shielded."""
        return None


class InterceptorChain:
    """The registered interceptors in run order, with the error rule applied."""

    __slots__ = ("_interceptors", "_registered")

    def __init__(self) -> None:
        self._registered: list[Interceptor] = []
        self._interceptors: tuple[Interceptor, ...] = ()

    def add(self, interceptor: Interceptor) -> None:
        if not isinstance(interceptor, Interceptor):
            raise TypeError(
                f"interceptors derive from mutator.Interceptor, got {type(interceptor).__name__}"
            )
        self._registered.append(interceptor)
        self._interceptors = tuple(sorted(self._registered, key=lambda i: i.order))

    def remove(self, name: str) -> int:
        before = len(self._registered)
        self._registered = [i for i in self._registered if i.name != name]
        self._interceptors = tuple(sorted(self._registered, key=lambda i: i.order))
        return before - len(self._registered)

    @property
    def interceptors(self) -> tuple[Interceptor, ...]:
        return self._interceptors

    def active(self, intent: MutationIntent, context: MutationContext) -> tuple[Interceptor, ...]:
        selected = []
        for interceptor in self._interceptors:
            try:
                if interceptor.should_run(intent, context):
                    selected.append(interceptor)
            except Exception:
                _log.exception(
                    "interceptor %r failed in should_run",
                    interceptor.name,
                    extra={"interceptor": interceptor.name, "hook": "should_run"},
                )
        return tuple(selected)


async def run_hook(
    interceptors: tuple[Interceptor, ...], hook: str, *args: Any, deadline: float | None = None
) -> None:
    """Call ``hook`` on each interceptor in order; log and swallow their errors.

    Awaited hooks run under ``deadline``; running out of it propagates.
    """
    for interceptor in interceptors:
        try:
            outcome = getattr(interceptor, hook)(*args)
            if inspect.isawaitable(outcome):
                await bounded(outcome, deadline)
        except DeadlineExpired:
            raise
        except Exception:
            execution = args[-1] if args else None
            _log.exception(
                "interceptor %r failed in %s()",
                interceptor.name,
                hook,
                extra={
                    "interceptor": interceptor.name,
                    "hook": hook,
                    "execution_id": getattr(execution, "execution_id", None),
                },
            )


def _elapsed(execution: ExecutionContext) -> float:
    """Seconds since the execution started (for outcomes that carry no result)."""
    return (utc_now() - execution.started_at).total_seconds()


class LoggingInterceptor(Interceptor):
    """Logs each execution through the standard :mod:`logging` module, one record per outcome.

    Records go to ``logger`` (default: the ``mutator`` logger) at ``level`` (failures at
    ERROR); the start of an execution and each change are logged at DEBUG. Records carry
    ``extra`` fields that JSON formatters and structlog's ``ExtraAdder`` pick up as they
    are: ``execution_id``, ``operation``, ``category``, ``mode``, ``state_id``,
    ``actor_id``, ``correlation_id``; outcome records add ``status`` (``succeeded``,
    ``validation_failed``, ``policy_blocked``, ``approval_required``, ``failed``,
    ``timed_out`` or ``cancelled``), ``duration`` (seconds), ``changes`` (a count) and
    ``error`` (the one-line reason of a non-success, else None). Change records carry
    ``execution_id``, ``operation``, ``state_id``, ``path`` and ``change_type``.
    """

    name = "logging"
    order = 1_000

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("mutator")
        self.level = level

    @staticmethod
    def _fields(
        mutation: Mutation[Any], context: MutationContext, execution: ExecutionContext
    ) -> dict[str, Any]:
        intent = mutation.intent
        return {
            "execution_id": execution.execution_id,
            "operation": intent.operation,
            "category": intent.category,
            "mode": context.mode.value,
            "state_id": execution.state_id,
            "actor_id": context.actor_id,
            "correlation_id": context.correlation_id,
        }

    def before(
        self,
        mutation: Mutation[Any],
        state: Any,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(
                "mutation %s starting [%s] actor=%s state=%s",
                mutation.intent.operation,
                execution.execution_id,
                context.actor_id,
                execution.state_id,
                extra=self._fields(mutation, context, execution),
            )

    def after(
        self,
        mutation: Mutation[Any],
        old_state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        """Log the outcome, and each change at DEBUG."""
        self._outcome(mutation, result, context, execution)
        if result.changes and self.logger.isEnabledFor(logging.DEBUG):
            for change in result.changes:
                self.logger.debug(
                    "  %s %s: %r -> %r",
                    change.type.value,
                    change.path,
                    change.old_value,
                    change.new_value,
                    extra={
                        "execution_id": execution.execution_id,
                        "operation": mutation.intent.operation,
                        "state_id": execution.state_id,
                        "path": change.path,
                        "change_type": change.type.value,
                    },
                )

    def policy_blocked(
        self,
        mutation: Mutation[Any],
        state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        """Log the outcome (status ``policy_blocked`` or ``approval_required``)."""
        self._outcome(mutation, result, context, execution)

    def failed(
        self,
        mutation: Mutation[Any],
        state: Any,
        error: BaseException,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        """Log the error at ERROR (status ``failed`` or ``timed_out``)."""
        if not self.logger.isEnabledFor(logging.ERROR):
            return
        status = "timed_out" if isinstance(error, ExecutionTimeoutError) else "failed"
        fields = self._fields(mutation, context, execution)
        fields.update(status=status, duration=_elapsed(execution), changes=0, error=str(error))
        self.logger.error(
            "mutation %s %s [%s] actor=%s state=%s: %s",
            fields["operation"],
            status,
            execution.execution_id,
            context.actor_id,
            execution.state_id,
            error,
            extra=fields,
        )

    def cancelled(
        self,
        mutation: Mutation[Any],
        state: Any,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        """Log the cancellation at the interceptor's level (status ``cancelled``)."""
        if not self.logger.isEnabledFor(self.level):
            return
        fields = self._fields(mutation, context, execution)
        fields.update(status="cancelled", duration=_elapsed(execution), changes=0, error=None)
        self.logger.log(
            self.level,
            "mutation %s cancelled [%s] actor=%s state=%s",
            fields["operation"],
            execution.execution_id,
            context.actor_id,
            execution.state_id,
            extra=fields,
        )

    def _outcome(
        self,
        mutation: Mutation[Any],
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        if not self.logger.isEnabledFor(self.level):
            return
        fields = self._fields(mutation, context, execution)
        error = result.error_message
        fields.update(
            status=result.status.value,
            duration=result.duration,
            changes=len(result.changes),
            error=error,
        )
        if error is None:
            self.logger.log(
                self.level,
                "mutation %s %s [%s] actor=%s state=%s changes=%d",
                fields["operation"],
                fields["status"],
                execution.execution_id,
                context.actor_id,
                execution.state_id,
                fields["changes"],
                extra=fields,
            )
        else:
            self.logger.log(
                self.level,
                "mutation %s %s [%s] actor=%s state=%s: %s",
                fields["operation"],
                fields["status"],
                execution.execution_id,
                context.actor_id,
                execution.state_id,
                error,
                extra=fields,
            )
