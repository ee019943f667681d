"""Reading stored documents back, with one error rule for every backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio.lowlevel

from mutator.serialization import SerializationError

from .._decisions import RequestDecision
from .._errors import StoredDataError
from .._registry import MutationRegistry
from .._request import MutationRequest

__all__ = ["DECODE_CHUNK", "decode", "join_field", "new_decisions_data", "pace", "paced", "parse"]

T = TypeVar("T")
R = TypeVar("R")

DECODE_CHUNK = 64
"""Rows a bulk read decodes between two yields to the event loop (a few milliseconds)."""


async def pace(index: int) -> None:
    """Yield to the event loop before row ``index`` of a long decode, every
    :data:`DECODE_CHUNK` rows (see :func:`paced`; for loops that do more than build)."""
    if index and not index % DECODE_CHUNK:
        await anyio.lowlevel.checkpoint()


async def paced(rows: Sequence[R], build: Callable[[R], T]) -> list[T]:
    """``build(row)`` for each of ``rows``, yielding to the event loop between chunks.

    Decoding is CPU work on the event loop's thread: a listing of thousands of requests
    would otherwise hold the loop (every other task, a running execution's lease renewal,
    the worker's wake-ups) for as long as it takes, half a second for 5,000 requests.
    Paced, no chunk of :data:`DECODE_CHUNK` rows holds it longer than a few milliseconds;
    a read of one chunk or less never yields.
    """
    if len(rows) <= DECODE_CHUNK:
        return [build(row) for row in rows]
    built: list[T] = []
    for start in range(0, len(rows), DECODE_CHUNK):
        if start:
            await anyio.lowlevel.checkpoint()
        built.extend([build(row) for row in rows[start : start + DECODE_CHUNK]])
    return built


def join_field(field: str | None, path: str) -> str | None:
    """``field`` extended by a path inside the document (``document.status``)."""
    if not path:
        return field
    return f"{field}.{path}" if field else path


def parse(
    registry: MutationRegistry,
    text: Any,
    *,
    backend: str,
    key: str | None,
    field: str | None = None,
    request_id: str | None = None,
) -> Any:
    """The JSON data of a stored document (text or UTF-8 bytes).

    Anything that is not JSON text raises :class:`StoredDataError` naming the backend,
    key and field; it never surfaces as a driver or decoder exception.
    """
    try:
        if isinstance(text, bytes | bytearray | memoryview):
            text = bytes(text).decode("utf-8")
        if not isinstance(text, str):
            raise TypeError(f"expected JSON text, found {type(text).__name__}")
        return registry.loads(text)
    except (UnicodeDecodeError, ValueError, TypeError) as error:
        raise StoredDataError(
            f"not a JSON document: {error}",
            backend=backend,
            key=key,
            field=field,
            request_id=request_id,
        ) from error


def decode(
    build: Callable[[Any], T],
    data: Any,
    *,
    backend: str,
    key: str | None,
    field: str | None = None,
    request_id: str | None = None,
) -> T:
    """``build(data)``; a :class:`SerializationError` becomes :class:`StoredDataError`.

    The error's ``field`` is ``field`` extended by the path of the value that could not
    be read, so it names the exact place in the document.
    """
    try:
        return build(data)
    except SerializationError as error:
        raise StoredDataError(
            f"cannot be read: {error.problem}",
            backend=backend,
            key=key,
            field=join_field(field, error.path),
            request_id=request_id,
        ) from error


def new_decisions_data(
    data: dict[str, Any], request: MutationRequest, new: Sequence[RequestDecision]
) -> list[Any] | None:
    """The unstructured data of ``new`` taken from ``data`` (``request``'s own), or None.

    A write's new decisions are normally the last ones of its request, whose data has
    just encoded them with the same converter hook ``unstructure_decision`` uses: they are
    taken from there (not encoded twice) when they are those very objects, of exactly
    :class:`RequestDecision`; anything else is encoded on its own.
    """
    count = len(new)
    decisions = request.decisions
    encoded = data.get("decisions")
    if (
        not count
        or encoded.__class__ is not list
        or len(encoded) != len(decisions)
        or count > len(decisions)
    ):
        return None
    start = len(decisions) - count
    for offset, decision in enumerate(new):
        if decision is not decisions[start + offset] or decision.__class__ is not RequestDecision:
            return None
    assert isinstance(encoded, list)
    return encoded[start:]
