"""Interceptors observe executions through four hooks; they never change an outcome."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ._context import ExecutionContext, MutationContext
from ._deadline import DeadlineExpired, bounded
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
    - :meth:`failed`: when the execution raised (including timeouts).

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
        return True

    def before(
        self,
        mutation: Mutation[Any],
        state: Any,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> Awaitable[None] | None:
        return None

    def after(
        self,
        mutation: Mutation[Any],
        old_state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> Awaitable[None] | None:
        return None

    def policy_blocked(
        self,
        mutation: Mutation[Any],
        state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> Awaitable[None] | None:
        return None

    def failed(
        self,
        mutation: Mutation[Any],
        state: Any,
        error: BaseException,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> Awaitable[None] | None:
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
                _log.exception("interceptor %r failed in should_run", interceptor.name)
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
            _log.exception("interceptor %r failed in %s()", interceptor.name, hook)


class LoggingInterceptor(Interceptor):
    """Logs each execution through the standard :mod:`logging` module.

    One line per outcome on ``logger`` (default ``mutator``); changes are listed at DEBUG.
    """

    name = "logging"
    order = 1_000

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("mutator")
        self.level = level

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
            )

    def after(
        self,
        mutation: Mutation[Any],
        old_state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        if not self.logger.isEnabledFor(self.level):
            return
        self.logger.log(
            self.level,
            "mutation %s %s [%s] actor=%s state=%s changes=%d%s",
            mutation.intent.operation,
            result.status.value,
            execution.execution_id,
            context.actor_id,
            execution.state_id,
            len(result.changes),
            "" if result.ok else f" error={result.error_message}",
        )
        if self.logger.isEnabledFor(logging.DEBUG):
            for change in result.changes:
                self.logger.debug(
                    "  %s %s: %r -> %r",
                    change.type.value,
                    change.path,
                    change.old_value,
                    change.new_value,
                )

    def policy_blocked(
        self,
        mutation: Mutation[Any],
        state: Any,
        result: MutationResult[Any],
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        if self.logger.isEnabledFor(self.level):
            self.logger.log(
                self.level,
                "mutation %s %s [%s] actor=%s: %s",
                mutation.intent.operation,
                result.status.value,
                execution.execution_id,
                context.actor_id,
                result.error_message,
            )

    def failed(
        self,
        mutation: Mutation[Any],
        state: Any,
        error: BaseException,
        context: MutationContext,
        execution: ExecutionContext,
    ) -> None:
        self.logger.error(
            "mutation %s failed [%s] actor=%s: %s",
            mutation.intent.operation,
            execution.execution_id,
            context.actor_id,
            error,
        )
