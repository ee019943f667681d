"""One exception hierarchy rooted at :class:`MutatorError`."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConcurrencyError",
    "ConfigurationError",
    "ExecutionTimeoutError",
    "InvalidMutationError",
    "MutationFailedError",
    "MutatorError",
    "PolicyConflictError",
    "PolicyEvaluationError",
    "PolicyTimeoutError",
    "StateDiffError",
]


class MutatorError(Exception):
    """Base of every error this library raises.

    ``execution_id`` names the execution it happened in, when there was one.
    """

    execution_id: str | None

    def __init__(self, message: str, *, execution_id: str | None = None) -> None:
        super().__init__(message)
        self.execution_id = execution_id


class ConfigurationError(MutatorError, ValueError):
    """Options, policies or interceptors were configured inconsistently."""


class InvalidMutationError(MutatorError, TypeError):
    """A mutation, or what it returned, is not what the engine can work with."""


class StateDiffError(MutatorError, TypeError):
    """The engine could not walk a state to compute its change set."""

    def __init__(self, path: str, message: str, *, execution_id: str | None = None) -> None:
        where = path or "<root>"
        super().__init__(f"cannot diff state at {where}: {message}", execution_id=execution_id)
        self.path = path


class MutationFailedError(MutatorError):
    """The mutation's own code raised; the original exception is ``__cause__``."""

    def __init__(self, operation: str, cause: BaseException, *, execution_id: str | None) -> None:
        super().__init__(
            f"mutation {operation!r} failed: {type(cause).__name__}: {cause}",
            execution_id=execution_id,
        )
        self.operation = operation


class ExecutionTimeoutError(MutatorError, TimeoutError):
    """The mutation did not finish within ``EngineOptions.execution_timeout``."""

    def __init__(self, timeout: float, elapsed: float, *, execution_id: str | None) -> None:
        super().__init__(
            f"execution timed out after {elapsed:.3f}s (limit {timeout:.3f}s)",
            execution_id=execution_id,
        )
        self.timeout = timeout
        self.elapsed = elapsed


class PolicyEvaluationError(MutatorError):
    """A policy raised while evaluating; ``policy_name`` names it."""

    def __init__(self, policy_name: str, message: str, *, execution_id: str | None = None) -> None:
        super().__init__(f"policy {policy_name!r}: {message}", execution_id=execution_id)
        self.policy_name = policy_name


class PolicyTimeoutError(PolicyEvaluationError, TimeoutError):
    """A policy did not decide within ``EngineOptions.policy_timeout``."""

    def __init__(self, policy_name: str, timeout: float, *, execution_id: str | None = None):
        super().__init__(
            policy_name, f"no decision within {timeout:.3f}s", execution_id=execution_id
        )
        self.timeout = timeout


class PolicyConflictError(MutatorError):
    """Two policies wrote different values to the same modification key."""

    def __init__(
        self,
        key: str,
        policies: Sequence[str],
        *,
        composition: str | None = None,
        execution_id: str | None = None,
    ) -> None:
        where = f" in composition {composition!r}" if composition else ""
        super().__init__(
            f"policies {', '.join(map(repr, policies))} wrote conflicting values to {key!r}{where}",
            execution_id=execution_id,
        )
        self.key = key
        self.policies = tuple(policies)
        self.composition = composition


class ConcurrencyError(MutatorError):
    """A compare-and-set on a version or revision lost against a concurrent writer."""

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        expected: str | int | None = None,
        actual: str | int | None = None,
        execution_id: str | None = None,
    ) -> None:
        super().__init__(message, execution_id=execution_id)
        self.key = key
        self.expected = expected
        self.actual = actual
