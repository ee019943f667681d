"""Reading stored documents back, with one error rule for every backend."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio.lowlevel
import attrs

from mutator.serialization import SerializationError, fields_unstructurer

from .._decisions import RequestDecision
from .._errors import StoredDataError
from .._registry import MutationRegistry
from .._request import MutationRequest, copy_request

__all__ = [
    "DECODE_CHUNK",
    "RequestDocuments",
    "decode",
    "join_field",
    "new_decisions_data",
    "pace",
    "paced",
    "parse",
]

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


_DECISIONS_KEPT = 2048
"""Decisions whose JSON a :class:`RequestDocuments` keeps before it starts over."""
_HEADS_KEPT = 2048
"""Requests whose head a :class:`RequestDocuments` keeps before it starts over."""
_NO_DECISIONS: dict[str, Any] = {"decisions": ()}
_Fields = Callable[[Any], dict[str, Any]]
_HEAD = ("request_id", "state_id", "state_type", "mutation_type", "mutation", "intent", "context")
"""A request's first fields, in order: what it was submitted with, never changed."""
_TAIL = tuple(field.name for field in attrs.fields(MutationRequest) if field.name not in _HEAD)
assert [field.name for field in attrs.fields(MutationRequest)][: len(_HEAD)] == list(_HEAD)


class RequestDocuments:
    """The registry's JSON of requests and decisions, each decision encoded once.

    A request's decisions never change once made, and every write of a request carries
    all of them (its document) while the objects themselves travel from write to write
    (a claim's decisions are its commit's first ones): so each decision object is
    encoded once while it is kept, by identity (the object is held, so its id is not
    reused). So is a request's head (its id, state, mutation, intent and context, the
    same objects in every copy of it). A request's text is the registry's own document
    of it, the same text, with the kept parts put in place. Safe from any thread: a lost
    race only encodes a part twice.
    """

    def __init__(self, registry: MutationRegistry) -> None:
        self.registry = registry
        self._kept: dict[int, tuple[RequestDecision, str]] = {}
        self._heads: dict[str, tuple[Any, Any, Any, str, str, str, str]] = {}
        self._hook: Callable[[Any], Any] | None = None
        marker = f"mutator-decisions-{uuid.uuid4().hex}"
        self._marker = marker
        self._marker_json = registry.dumps(marker)
        self._parts: tuple[_Fields, _Fields] | None = None

    def _compiled(self) -> tuple[_Fields, _Fields] | None:
        """The functions giving a request's head, and the rest with the marker (on first
        use: they compile against the registry's converter), or None if it has none."""
        parts = self._parts
        if parts is None:
            converter = self.registry.converter
            head = fields_unstructurer(converter, MutationRequest, _HEAD)
            tail = fields_unstructurer(
                converter, MutationRequest, _TAIL, {"decisions": self._marker}
            )
            if head is None or tail is None:
                return None
            parts = self._parts = (head, tail)
        return parts

    def _document(self, request: MutationRequest, texts: list[str]) -> str | None:
        """The document of ``request`` from its kept head, the rest of its fields and its
        decisions' ``texts``; None when it cannot be put together so."""
        parts = self._compiled()
        if parts is None:
            return None
        marker = self._marker_json
        before, found, after = self.registry.dumps(parts[1](request)).partition(marker)
        if not found or marker in after:
            return None
        return f"{self._head(request, parts[0])},{before[1:]}[{','.join(texts)}]{after}"

    def _head(self, request: MutationRequest, build: _Fields) -> str:
        """The JSON of the request's head fields, without the closing brace (kept)."""
        request_id = request.request_id
        kept = self._heads.get(request_id)
        if (
            kept is not None
            and kept[0] is request.mutation
            and kept[1] is request.intent
            and kept[2] is request.context
            and kept[3] == request.state_id
            and kept[4] == request.state_type
            and kept[5] == request.mutation_type
        ):
            return kept[6]
        text = self.registry.dumps(build(request))[:-1]
        heads = self._heads
        if len(heads) >= _HEADS_KEPT:
            heads.clear()
        heads[request_id] = (
            request.mutation,
            request.intent,
            request.context,
            request.state_id,
            request.state_type,
            request.mutation_type,
            text,
        )
        return text

    def decision(self, decision: RequestDecision) -> str:
        """The JSON of ``decision``, encoded once while kept (a subclass every time)."""
        registry = self.registry
        if decision.__class__ is not RequestDecision:
            return registry.dumps(registry.unstructure_decision(decision))
        kept = self._kept.get(id(decision))
        if kept is not None and kept[0] is decision:
            return kept[1]
        hook = self._hook
        if hook is None:
            hook = self._hook = registry.converter.get_unstructure_hook(RequestDecision)
        try:
            data = hook(decision)
        except Exception:  # the located pass says where and why
            data = registry.unstructure_decision(decision)
        return self._keep(decision, registry.dumps(data))

    def _keep(self, decision: RequestDecision, text: str) -> str:
        kept = self._kept
        if len(kept) >= _DECISIONS_KEPT:
            kept.clear()
        kept[id(decision)] = (decision, text)
        return text

    def request(self, request: MutationRequest) -> tuple[str, Sequence[str] | None]:
        """The registry's document of ``request``, and the JSON of each of its decisions
        (then kept: :meth:`decision` finds them).

        When most of its decisions are new here (a request read from the store), the
        whole request is unstructured at once (cheaper than decision by decision) and its
        decisions' texts kept from that. A request or decision of a subclass (its hooks may
        differ), or any failure, takes the registry's own path, which raises the located
        error; the decisions' texts are then None.
        """
        decisions = request.decisions
        registry = self.registry
        if not decisions or request.__class__ is not MutationRequest:
            return registry.dumps(registry.unstructure_request(request)), None
        kept = self._kept
        missing = 0
        for decision in decisions:
            if decision.__class__ is not RequestDecision:
                return registry.dumps(registry.unstructure_request(request)), None
            found = kept.get(id(decision))
            if found is None or found[0] is not decision:
                missing += 1
        try:
            if missing > 1 and missing * 3 >= len(decisions) * 2:
                data = registry.unstructure_request(request)
                items = data["decisions"]
                texts = [
                    self._keep(decision, registry.dumps(item))
                    for decision, item in zip(decisions, items, strict=True)
                ]
            else:
                texts = [self.decision(decision) for decision in decisions]
                document = self._document(request, texts)
                if document is not None:
                    return document, texts
                data = registry.unstructure_request(copy_request(request, _NO_DECISIONS))
            data["decisions"] = self._marker
            head, found_marker, tail = registry.dumps(data).partition(self._marker_json)
            if found_marker and self._marker_json not in tail:
                return f"{head}[{','.join(texts)}]{tail}", texts
        except Exception:  # the registry's pass below raises it, located
            pass
        return registry.dumps(registry.unstructure_request(request)), None
