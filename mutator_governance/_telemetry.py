"""The hooks governance calls when it is instrumented, and the decorator that calls them.

Nothing here imports OpenTelemetry: :mod:`mutator_governance.otel` implements
:class:`Telemetry`. An object that is not instrumented holds ``telemetry = None`` and each
observed call costs one attribute check.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

if TYPE_CHECKING:
    from ._commit_types import GovernedCommit
    from ._request import MutationRequest
    from .protocols import RequestStore

__all__ = ["Observed", "Telemetry", "observed"]

P = ParamSpec("P")
R = TypeVar("R")


class Telemetry(Protocol):
    """What an instrumentation does at each governance seam (see ``mutator_governance.otel``)."""

    async def operation(
        self,
        name: str,
        call: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """Run one facade or executor operation ``call(*args, **kwargs)`` inside its span."""

    def capture(self) -> Mapping[str, str]:
        """The W3C trace context to store on a request being submitted."""

    def loaded(self, request: MutationRequest) -> None:
        """A request was loaded by the running operation: link its span to the submit."""

    async def commit(
        self, commit: GovernedCommit, call: Callable[[], Awaitable[tuple[MutationRequest, ...]]]
    ) -> tuple[MutationRequest, ...]:
        """Run one ledger commit inside its span."""

    async def worker_execution(
        self, request: MutationRequest, call: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Run one worker execution of ``request`` inside its span (linked to the submit)."""

    def worker_outcome(self, outcome: str) -> None:
        """Count one worker execution's outcome."""

    async def refresh(self, requests: RequestStore) -> None:
        """Recount what the pending-approval gauge reports."""


class Observed(Protocol):
    """An object whose operations :func:`observed` wraps: it holds ``telemetry``."""

    telemetry: Telemetry | None


S = TypeVar("S", bound=Observed)


def observed(
    name: str,
) -> Callable[
    [Callable[Concatenate[S, P], Awaitable[R]]], Callable[Concatenate[S, P], Awaitable[R]]
]:
    """Decorate an async method: traced as operation ``name`` when ``self.telemetry`` is set."""

    def wrap(
        method: Callable[Concatenate[S, P], Awaitable[R]],
    ) -> Callable[Concatenate[S, P], Awaitable[R]]:
        @functools.wraps(method)
        async def call(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            telemetry = self.telemetry
            if telemetry is None:
                return await method(self, *args, **kwargs)
            result: R = await telemetry.operation(name, method, (self, *args), kwargs)
            return result

        return call

    return wrap
