"""Runnable examples: ``python -m examples`` runs them all, ``python -m examples NAME`` one.

Each example module exposes ``async def main() -> Outcome``: it prints a short account of
what happened and returns the key facts, which the test suite checks.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

EXAMPLES: dict[str, str] = {
    "approval_workflow": "examples.approval_workflow",
    "governed_execution": "examples.governed_execution",
    "billing_quotas": "examples.billing_quotas",
    "feature_flags": "examples.feature_flags",
    "iam_roles": "examples.iam_roles",
    "workflow_approvals": "examples.workflow_approvals",
    "policy_composition": "examples.policy_composition",
    "request_lifecycle": "examples.request_lifecycle",
    "decision_taxonomy": "examples.decision_taxonomy",
    "versioned_resolution": "examples.versioned_resolution",
    "durable_sqlite": "examples.durable_sqlite",
    "changed_mutation": "examples.changed_mutation",
    "custom_store": "examples.custom_store",
    "worker_fleet": "examples.worker_fleet",
    "queries": "examples.queries",
    "redis_queries": "examples.redis_queries",
    "postgres_grouped_writes": "examples.postgres_grouped_writes",
    "observability": "examples.observability",
    "governance_observability": "examples.governance_observability",
}
"""Example name -> module; the order is the order ``python -m examples`` runs them in."""


def load(name: str) -> Callable[[], Awaitable[Any]]:
    """The ``main`` coroutine function of example ``name``."""
    if name not in EXAMPLES:
        known = ", ".join(EXAMPLES)
        raise SystemExit(f"unknown example {name!r}; choose one of: {known}")
    module = importlib.import_module(EXAMPLES[name])
    main: Callable[[], Awaitable[Any]] = module.main
    return main
