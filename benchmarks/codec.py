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
import json
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
    ):
        out.append(Scenario(f"{PREFIX}.{kind}", JSON_BASELINE, p(codec, kind), summary))
    return out


SCENARIOS: tuple[Scenario, ...] = tuple(_scenarios())
