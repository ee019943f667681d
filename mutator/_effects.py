"""Side effects a mutation or policy announces; the engine records them, never runs them."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import attrs

from ._context import utc_now
from ._enums import Severity

__all__ = ["SideEffect", "SideEffectContract", "side_effect_payload", "payload_contract"]

T = TypeVar("T")


@attrs.frozen
class SideEffectContract:
    """The stable name and version under which a typed payload class is stored."""

    name: str
    version: int = 1


_by_class: dict[type[Any], SideEffectContract] = {}
_by_contract: dict[tuple[str, int], type[Any]] = {}


def side_effect_payload(name: str, *, version: int = 1) -> Callable[[type[T]], type[T]]:
    """Class decorator: register an attrs class as a typed side-effect payload.

    Registered payloads round-trip through the project's converter as their own class
    (``SideEffect.data`` comes back as an instance, not a dict).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a side-effect payload contract needs a non-blank name")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"contract version must be a positive int, got {version!r}")

    def register(cls: type[T]) -> type[T]:
        is_attrs: bool = attrs.has(cls)
        if not is_attrs:
            raise TypeError(f"{cls.__qualname__} must be an attrs class to be a payload")
        contract = SideEffectContract(name, version)
        existing = _by_contract.get((name, version))
        if existing is not None and existing is not cls:
            raise ValueError(
                f"payload contract {name!r} v{version} is already registered "
                f"to {existing.__qualname__}"
            )
        _by_class[cls] = contract
        _by_contract[(name, version)] = cls
        return cls

    return register


def payload_contract(data: object) -> SideEffectContract | None:
    """The contract registered for ``data``'s class, if any."""
    return _by_class.get(type(data))


def payload_class(contract: SideEffectContract) -> type[Any] | None:
    """The class registered under ``contract``, if any."""
    return _by_contract.get((contract.name, contract.version))


@attrs.frozen
class SideEffect:
    """Something outside the state that should happen because of a mutation.

    A ``CRITICAL`` side effect always requires action. ``data`` may be a registered typed
    payload (see :func:`side_effect_payload`), a mapping, or None.
    """

    type: str
    description: str = ""
    severity: Severity = Severity.INFO
    data: Any = None
    requires_action: bool = False
    timestamp: datetime = attrs.field(factory=utc_now)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type.strip():
            raise ValueError("SideEffect.type must be a non-blank string")
        if self.severity is Severity.CRITICAL and not self.requires_action:
            object.__setattr__(self, "requires_action", True)
        if isinstance(self.data, Mapping):
            object.__setattr__(self, "data", dict(self.data))

    @classmethod
    def critical(cls, type: str, description: str = "", data: Any = None) -> SideEffect:
        """A critical side effect (always requires action)."""
        return cls(type, description, Severity.CRITICAL, data, True)

    @property
    def contract(self) -> SideEffectContract | None:
        """The typed-payload contract of ``data``, if it is a registered payload."""
        return payload_contract(self.data)

    def data_as(self, cls: builtins.type[T]) -> T | None:
        """``data`` if it is an instance of ``cls``, else None."""
        return self.data if isinstance(self.data, cls) else None
