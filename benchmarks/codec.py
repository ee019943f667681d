"""Codec scenarios: one executed request document through the registry, as stores write it.

The document is the request a governed execution of ``governance.execute.backend.*``
leaves behind (submitted without a policy, so APPROVED at once, then claimed, validated
and EXECUTED: five decisions, ~3.7 kB of JSON). Encoding is
``registry.dumps(registry.unstructure_request(request))`` and decoding
``registry.structure_request(registry.loads(text))``: exactly what the SQLite, PostgreSQL
and Redis stores do per request row. The baseline is the stdlib ``json`` round trip of
the same plain data, so the ratio says what the codec costs beyond JSON itself.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from typing import Any

from mutator_governance import MutationRequest, RequestStatus

from . import governance as gov_scenarios
from .harness import Fixture, Scenario

__all__ = ["SCENARIOS", "executed_request"]

JSON_BASELINE = "codec.json.executed"
PREFIX = "codec.request.executed"


async def executed_request() -> tuple[Any, MutationRequest]:
    """The registry and an EXECUTED request, made by a real governed execution."""
    gov = gov_scenarios.governance()
    (request_id,) = await gov_scenarios.per_state_pool(gov, 1, stale=False)
    result = await gov.execute(request_id)
    if result.request.status is not RequestStatus.EXECUTED:
        raise AssertionError(f"setup did not execute: {result.request.status}")
    return gov.registry, result.request


def _expect(request: MutationRequest) -> Any:
    def check(outcome: Any) -> None:
        if isinstance(outcome, MutationRequest) and outcome != request:
            raise AssertionError("the document did not round-trip exactly")
        if isinstance(outcome, str) and not outcome.startswith("{"):
            raise AssertionError(f"not a JSON object: {outcome[:40]!r}")

    return check


DISTINCT = 2000
"""Documents cycled by the ``decode_distinct`` scenario: their ~18k timestamps overflow
the codec's caches (4,096 texts), so it measures decoding rows never seen before."""


def distinct_documents(text: str, count: int = DISTINCT) -> list[str]:
    """``count`` copies of ``text`` whose timestamps all differ (by microseconds)."""
    stamp = re.compile(r"\.(\d{6})\+00:00")

    def shifted(k: int) -> str:
        return stamp.sub(lambda m: f".{(int(m.group(1)) + k) % 1_000_000:06d}+00:00", text)

    return [shifted(k) for k in range(1, count + 1)]


async def codec(kind: str, ops: int) -> Fixture:
    """Encode, decode or both for the executed request document (sync, no event loop)."""
    registry, request = await executed_request()
    dumps, loads = registry.dumps, registry.loads
    unstructure, structure = registry.unstructure_request, registry.structure_request
    text = dumps(unstructure(request))
    data = json.loads(text)
    ops_by_kind = {
        "encode": lambda: dumps(unstructure(request)),
        "decode": lambda: structure(loads(text)),
        "round_trip": lambda: structure(loads(dumps(unstructure(request)))),
        "json": lambda: json.loads(json.dumps(data, separators=(",", ":"))),
    }
    if kind == "decode_distinct":
        texts = itertools.cycle(distinct_documents(text)).__next__

        def decode_distinct() -> MutationRequest:
            return structure(loads(texts()))

        def is_request(outcome: Any) -> None:
            if not isinstance(outcome, MutationRequest) or outcome.status is not request.status:
                raise AssertionError("a distinct document did not decode")

        return Fixture(decode_distinct, is_request, is_async=False)
    check = None if kind == "json" else _expect(request)
    return Fixture(ops_by_kind[kind], check, is_async=False)


def _scenarios() -> list[Scenario]:
    p = functools.partial
    out = [
        Scenario(
            JSON_BASELINE,
            JSON_BASELINE,
            p(codec, "json"),
            "stdlib json.dumps + json.loads of the executed request's plain data (~3.7 kB)",
        )
    ]
    for kind, summary in (
        ("encode", "unstructure_request + dumps of an EXECUTED request (5 decisions)"),
        ("decode", "loads + structure_request of the same document"),
        ("round_trip", "encode then decode, as a store write and read back"),
        (
            "decode_distinct",
            f"decode of {DISTINCT:,} documents with distinct timestamps, cycled (cache misses, "
            "as a listing reads new rows)",
        ),
    ):
        out.append(Scenario(f"{PREFIX}.{kind}", JSON_BASELINE, p(codec, kind), summary))
    return out


SCENARIOS: tuple[Scenario, ...] = tuple(_scenarios())
