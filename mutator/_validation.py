"""Validation outcomes: errors block, warnings and info never do."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from ._enums import Severity
from ._freeze import to_tuple

__all__ = ["ValidationIssue", "ValidationResult"]


def _text(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"ValidationIssue.{attribute.name} must be a string, got {value!r}")


@attrs.frozen
class ValidationIssue:
    """One finding at one path."""

    path: str = attrs.field(validator=_text)
    message: str = attrs.field(validator=_text)
    code: str | None = None
    severity: Severity = Severity.ERROR
    attempted_value: Any = None

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        code = f" [{self.code}]" if self.code else ""
        return f"{where}{self.message}{code}"


@attrs.frozen
class ValidationResult:
    """Immutable result of validating a mutation against a state.

    Combine results with ``+``; ``is_valid`` is true when there are no errors.
    """

    issues: tuple[ValidationIssue, ...] = attrs.field(default=(), converter=to_tuple)

    @classmethod
    def ok(cls) -> ValidationResult:
        """A result with no issues."""
        return _VALID

    @classmethod
    def error(cls, path: str, message: str, code: str | None = None) -> ValidationResult:
        """A result with one blocking error at ``path``."""
        return cls((ValidationIssue(path, message, code, Severity.ERROR),))

    @classmethod
    def warning(cls, path: str, message: str, code: str | None = None) -> ValidationResult:
        """A result with one warning at ``path`` (it does not block)."""
        return cls((ValidationIssue(path, message, code, Severity.WARNING),))

    @classmethod
    def info(cls, path: str, message: str, code: str | None = None) -> ValidationResult:
        """A result with one informational note at ``path`` (it does not block)."""
        return cls((ValidationIssue(path, message, code, Severity.INFO),))

    @classmethod
    def of(cls, issues: Iterable[ValidationIssue]) -> ValidationResult:
        """A result holding ``issues`` in the given order."""
        return cls(tuple(issues))

    def __add__(self, other: ValidationResult) -> ValidationResult:
        if not isinstance(other, ValidationResult):
            return NotImplemented
        if not other.issues:
            return self
        if not self.issues:
            return other
        return ValidationResult(self.issues + other.issues)

    @property
    def is_valid(self) -> bool:
        """True when no issue is an error (warnings and info never block)."""
        return not any(issue.severity >= Severity.ERROR for issue in self.issues)

    @property
    def errors(self) -> tuple[ValidationIssue, ...]:
        """The issues of severity ERROR or above, in order."""
        return tuple(i for i in self.issues if i.severity >= Severity.ERROR)

    @property
    def warnings(self) -> tuple[ValidationIssue, ...]:
        """The WARNING issues, in order."""
        return tuple(i for i in self.issues if i.severity is Severity.WARNING)

    @property
    def infos(self) -> tuple[ValidationIssue, ...]:
        """The INFO issues, in order."""
        return tuple(i for i in self.issues if i.severity is Severity.INFO)

    def summary(self) -> str:
        """All error messages joined by ``"; "`` (empty when valid)."""
        return "; ".join(str(issue) for issue in self.errors)


_VALID = ValidationResult()
