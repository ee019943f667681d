"""Reading stored documents back, with one error rule for every backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mutator.serialization import SerializationError

from .._errors import StoredDataError
from .._registry import MutationRegistry

__all__ = ["decode", "join_field", "parse"]

T = TypeVar("T")


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
