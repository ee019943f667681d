"""Ids the library draws: request and approval ids, claim tokens."""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator

__all__ = ["new_id", "new_token"]

_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (0x4000 << 64)


def new_id() -> str:
    """A random id exactly like ``uuid.uuid4().hex`` (version 4, RFC 4122 variant).

    Built from the same 16 random bytes without constructing a ``UUID`` (a third of the
    cost); used for request and approval ids.
    """
    return "%032x" % (int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET)


def _token_stream() -> Iterator[str]:
    """Claim tokens: a random per-process prefix and a counter (32 hex digits, like uuid4)."""
    return map(f"{secrets.token_hex(8)}%016x".__mod__, itertools.count(1))


_tokens = _token_stream()


def _reseed() -> None:
    global _tokens
    _tokens = _token_stream()


os.register_at_fork(after_in_child=_reseed)


def new_token() -> str:
    """A claim token unique across processes (a fork draws a new prefix)."""
    return next(_tokens)
