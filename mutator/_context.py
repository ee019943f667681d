"""Who asks for a mutation and why, and one run of it.

``MutationContext`` is the semantic context; ``ExecutionContext`` describes one execution.
"""

from __future__ import annotations

import itertools
import os
import secrets
import struct
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import attrs

from ._enums import ActorType, MutationMode
from ._freeze import freeze_mapping, names

__all__ = ["ExecutionContext", "MutationContext", "new_execution_id", "utc_now"]


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def aware(_: Any, attribute: attrs.Attribute[Any], value: datetime) -> None:
    """attrs validator: ``value`` is a timezone-aware datetime."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{attribute.name} must be a timezone-aware datetime, got {value!r}")


def optional_aware(instance: Any, attribute: attrs.Attribute[Any], value: datetime | None) -> None:
    """attrs validator: None or a timezone-aware datetime."""
    if value is not None:
        aware(instance, attribute, value)


@attrs.frozen
class MutationContext:
    """The semantic context of a mutation: who, why, in which mode, correlated with what.

    Build one with :meth:`user`, :meth:`service` or :meth:`system`; derive variants with
    :func:`attrs.evolve` (it is immutable). Roles and groups used by approval targeting live
    in ``metadata["roles"]`` and ``metadata["groups"]``.
    """

    actor_id: str | None = None
    actor_name: str | None = None
    actor_type: ActorType = ActorType.UNKNOWN
    reason: str | None = None
    mode: MutationMode = MutationMode.COMMIT
    correlation_id: str | None = None
    causation_id: str | None = None
    session_id: str | None = None
    source_address: str | None = None
    user_agent: str | None = None
    timestamp: datetime = attrs.field(factory=utc_now, validator=aware)
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=freeze_mapping, hash=False)

    @classmethod
    def user(
        cls,
        actor_id: str,
        *,
        name: str | None = None,
        reason: str | None = None,
        roles: str | Iterable[str] = (),
        groups: str | Iterable[str] = (),
        **fields: Any,
    ) -> MutationContext:
        """A context for a human user; ``roles``/``groups`` go into metadata for approvals."""
        return cls._actor(actor_id, ActorType.USER, name, reason, roles, groups, fields)

    @classmethod
    def service(
        cls,
        service_id: str,
        *,
        reason: str | None = None,
        name: str | None = None,
        roles: str | Iterable[str] = (),
        groups: str | Iterable[str] = (),
        **fields: Any,
    ) -> MutationContext:
        """A context for another service acting on its own behalf."""
        return cls._actor(service_id, ActorType.SERVICE, name, reason, roles, groups, fields)

    @classmethod
    def system(
        cls,
        reason: str | None = None,
        *,
        correlation_id: str | None = None,
        **fields: Any,
    ) -> MutationContext:
        """A context for the system itself; a correlation id is generated when none is given."""
        return cls(
            actor_id="system",
            actor_type=ActorType.SYSTEM,
            reason=reason,
            correlation_id=correlation_id or uuid.uuid4().hex,
            **fields,
        )

    @classmethod
    def _actor(
        cls,
        actor_id: str,
        actor_type: ActorType,
        name: str | None,
        reason: str | None,
        roles: str | Iterable[str],
        groups: str | Iterable[str],
        fields: dict[str, Any],
    ) -> MutationContext:
        if not isinstance(actor_id, str) or not actor_id.strip():
            raise ValueError("actor_id must be a non-blank string")
        metadata = dict(fields.pop("metadata", None) or {})
        if roles:
            metadata["roles"] = names(roles)
        if groups:
            metadata["groups"] = names(groups)
        return cls(
            actor_id=actor_id,
            actor_name=name,
            actor_type=actor_type,
            reason=reason,
            metadata=metadata,
            **fields,
        )

    @property
    def roles(self) -> tuple[str, ...]:
        """Roles of the actor (``metadata["roles"]``)."""
        return _strings(self.metadata.get("roles"))

    @property
    def groups(self) -> tuple[str, ...]:
        """Groups of the actor (``metadata["groups"]``)."""
        return _strings(self.metadata.get("groups"))


def _strings(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(v for v in value if isinstance(v, str))
    return ()


_BLOCK = 256
"""Execution ids made at a time (one block of counters, one ``struct.pack``)."""
_PACK_BLOCK = struct.Struct(f">{_BLOCK}I").pack


def _id_stream(first: int = 1) -> Iterator[str]:
    """Execution ids: a random per-process prefix and a counter in (at least) 8 hex digits.

    Made entirely in C (no Python frame, so no other thread runs in between). Up to
    2**32 - 1 the counters are made :data:`_BLOCK` at a time: packed as 4-byte big-endian
    words, written out in hex with a space between words, the prefix put before each
    word and the text split into ids (the same text as ``%08x``, for a fraction of one
    call per id); the last partial block word by word; beyond 2**32 with ``%08x``.
    """
    prefix = f"{secrets.token_hex(6)}-"
    limit = 1 << 32
    whole = max(0, limit - first) // _BLOCK * _BLOCK  # counters made a block at a time
    repeat = itertools.repeat
    counters = map(
        range, range(first, first + whole, _BLOCK), range(first + _BLOCK, limit + 1, _BLOCK)
    )
    words = map(bytes.hex, itertools.starmap(_PACK_BLOCK, counters), repeat(" "), repeat(4))
    texts = map(str.replace, map(prefix.__add__, words), repeat(" "), repeat(" " + prefix))
    big: Literal["big"] = "big"
    tail = map(int.to_bytes, range(first + whole, limit), repeat(4), repeat(big))
    return itertools.chain(
        itertools.chain.from_iterable(map(str.split, texts)),
        map(prefix.__add__, map(bytes.hex, tail)),
        map(f"{prefix}%08x".__mod__, itertools.count(max(first, limit))),
    )


_ids = _id_stream()


def _reseed() -> None:
    global _ids
    _ids = _id_stream()


os.register_at_fork(after_in_child=_reseed)


def new_execution_id() -> str:
    """A new execution id: a random per-process prefix and a counter, unique across processes."""
    return next(_ids)


@attrs.frozen
class ExecutionContext:
    """One run of one mutation: created by the engine, handed to interceptors.

    ``deadline`` is on the event loop clock (``anyio.current_time()``) or None; ``data`` is a
    scratch dictionary interceptors may use to pass values between their hooks.
    """

    execution_id: str
    started_at: datetime
    state_id: str | None = None
    deadline: float | None = None
    data: dict[str, Any] = attrs.field(factory=dict, eq=False)
