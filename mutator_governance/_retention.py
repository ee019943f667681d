"""Retention: which terminal requests may be deleted, and what a purge deleted.

A request is purgeable when its status is one of the purged (terminal) statuses, it was
last updated before the cutoff, and no live compensation links it: an EXECUTED request
whose compensation request is not terminal yet is kept, so the compensation can still
link back to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import attrs

from ._enums import RequestStatus
from ._request import MutationRequest

__all__ = ["TERMINAL_STATUSES", "PurgeBatch", "PurgeReport", "purgeable", "terminal_statuses"]

TERMINAL_STATUSES: frozenset[RequestStatus] = frozenset(s for s in RequestStatus if s.is_terminal)
"""Every terminal status: what :meth:`Governance.purge` deletes by default."""


def terminal_statuses(
    statuses: Iterable[RequestStatus] | RequestStatus,
) -> frozenset[RequestStatus]:
    """``statuses`` as a frozenset; ValueError unless each is a terminal RequestStatus."""
    if isinstance(statuses, str | bytes) or not isinstance(statuses, Iterable | RequestStatus):
        raise TypeError(
            f"statuses must be a RequestStatus or an iterable of them, got {statuses!r}"
        )
    chosen = frozenset((statuses,) if isinstance(statuses, RequestStatus) else statuses)
    for status in chosen:
        if not isinstance(status, RequestStatus):
            raise TypeError(f"statuses must hold RequestStatus members, got {status!r}")
        if not status.is_terminal:
            raise ValueError(f"only terminal requests are purged, not {status.name}")
    if not chosen:
        raise ValueError("statuses must name at least one terminal status")
    return chosen


@attrs.frozen
class PurgeBatch:
    """What one store-level purge call deleted: the request ids and their decision count."""

    request_ids: tuple[str, ...] = ()
    decisions: int = 0


@attrs.frozen
class PurgeReport:
    """What :meth:`Governance.purge` deleted: requests, decisions, and the batches it took."""

    requests: int = 0
    decisions: int = 0
    batches: int = 0
    cutoff: datetime | None = None


def purgeable(
    requests: Iterable[MutationRequest],
    *,
    before: datetime,
    statuses: frozenset[RequestStatus],
    limit: int,
) -> list[MutationRequest]:
    """The oldest ``limit`` purgeable requests among ``requests`` (see the module docstring).

    The reference predicate every store's purge must agree with; ``requests`` must hold
    every stored request (compensation links are looked up among them).
    """
    everything = list(requests)
    live_originals = {
        r.execution.compensation.original_request_id
        for r in everything
        if r.execution.compensation is not None and not r.status.is_terminal
    }
    chosen = [
        r
        for r in everything
        if r.status in statuses and r.updated_at < before and r.request_id not in live_originals
    ]
    chosen.sort(key=lambda r: (r.updated_at, r.request_id))
    return chosen[:limit]
