"""Request documents sent as edits of the stored ones (see the commit script's ``base``).

An update's document mostly repeats the stored one: the request's identity, mutation and
context before its status, and its decision log, to which an update only appends. The
store keeps the last document it read or wrote per request (a few hundred, newest kept)
and sends an update as the ranges of that document to copy and the bytes in between. The
script checks the stored document's SHA-1 before it builds the new one, so an edit is
never applied to a document other than the one it was computed from; when it does not
match (the row was rewritten without a new revision), nothing is written and the store
sends the whole document instead.
"""

from __future__ import annotations

import hashlib

import attrs

__all__ = ["DocumentCache", "Edit", "edit"]

_LOG = b'"decisions":['
_MINIMUM = 512
"""Copied bytes below which the whole document is sent (an edit costs the server a hash)."""


def _shared(old: bytes, new: bytes, i: int, k: int) -> int:
    """How many bytes ``old[i:]`` and ``new[k:]`` have in common from their start."""
    low, high = 0, min(len(old) - i, len(new) - k)
    while low < high:
        middle = (low + high + 1) // 2
        if old[i : i + middle] == new[k : k + middle]:
            low = middle
        else:
            high = middle - 1
    return low


@attrs.frozen
class Edit:
    """``new`` as each part's literal then its copied range of ``old``, then ``rest``."""

    base: str
    """The SHA-1 (hex) of the stored document the ranges are copied from."""
    parts: tuple[tuple[bytes, int, int], ...]
    """Per part: the literal, the 1-based start of the copied range, its length."""
    rest: bytes

    def args(self) -> list[bytes | str]:
        """The script's ``base`` argument and the ones after it, but for ``rest``."""
        out: list[bytes | str] = [self.base, str(len(self.parts))]
        for literal, start, length in self.parts:
            out += [literal, str(start), str(length)]
        return out


def edit(old: bytes, new: bytes) -> Edit | None:
    """``new`` as an edit of ``old``: its common start, then the decision log's common run.

    None when the copied ranges would be too short to be worth it.
    """
    parts: list[tuple[bytes, int, int]] = []
    position = _shared(old, new, 0, 0)
    if position:
        parts.append((b"", 1, position))
    i, k = old.find(_LOG, position), new.find(_LOG, position)
    if i >= 0 and k >= 0:
        length = _shared(old, new, i, k)
        if length:
            parts.append((new[position:k], i + 1, length))
            position = k + length
    if sum(part[2] for part in parts) < _MINIMUM:
        return None
    return Edit(hashlib.sha1(old, usedforsecurity=False).hexdigest(), tuple(parts), new[position:])


class DocumentCache:
    """The last stored document seen per request key, with its revision (``limit`` kept)."""

    __slots__ = ("_documents", "_limit")

    def __init__(self, limit: int = 256) -> None:
        self._documents: dict[str, tuple[int, bytes]] = {}
        self._limit = limit

    def remember(self, key: str, revision: int, document: bytes) -> None:
        documents = self._documents
        documents.pop(key, None)
        documents[key] = (revision, document)
        if len(documents) > self._limit:
            del documents[next(iter(documents))]

    def at(self, key: str, revision: int) -> bytes | None:
        """The document stored at ``key`` at ``revision``, if it is the last one seen."""
        found = self._documents.get(key)
        return found[1] if found is not None and found[0] == revision else None

    def forget(self, key: str) -> None:
        self._documents.pop(key, None)
