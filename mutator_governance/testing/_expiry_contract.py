"""The contract of the expiry sweep's seam: the pending requests whose deadline passed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from mutator import MutationContext

from .._approvals import ApprovalRequirement
from .._commit_types import GovernedCommit, RequestWrite
from .._decisions import RequestDecision
from .._enums import ApprovalStatus, LifecycleDecision, PendingReason, RequestStatus
from .._errors import StoredDataError
from .._request import MutationRequest, expiry_deadline
from .._transitions import record, transition
from ..protocols import ExpiryIndex, GovernanceStore, QuarantineLog
from ._fixtures import sample_request
from ._store_under_test import StoreUnderTest

__all__ = ["ExpiryIndexContract"]

_BASE = datetime(2026, 1, 1, tzinfo=UTC)
_EAST = timezone(timedelta(hours=5, minutes=30))


def _index(store: GovernanceStore) -> ExpiryIndex:
    requests = store.requests
    assert isinstance(requests, ExpiryIndex), f"{type(requests).__name__} is not an ExpiryIndex"
    return requests


def _ids(requests: Sequence[MutationRequest]) -> list[str]:
    return [r.request_id for r in requests]


def _slot(approval_id: str, expires_at: datetime | None, **changes: Any) -> ApprovalRequirement:
    return ApprovalRequirement(approval_id, role="sre", expires_at=expires_at, **changes)


def _at(minutes: float) -> datetime:
    return _BASE + timedelta(minutes=minutes)


@pytest.mark.anyio
class ExpiryIndexContract(StoreUnderTest):
    """What a request store that implements :class:`~mutator_governance.ExpiryIndex` must do.

    Subclass it and implement :meth:`make_store` (a new, empty store per test). Override
    :meth:`corrupt` to make one stored request unreadable, so the quarantine test runs.
    """

    async def _create(self, store: GovernanceStore, *requests: MutationRequest) -> None:
        for request in requests:
            await store.committer.commit(GovernedCommit((RequestWrite.create(request),)))

    async def _update(
        self, store: GovernanceStore, before: MutationRequest, after: MutationRequest
    ) -> MutationRequest:
        (stored,) = await store.committer.commit(
            GovernedCommit((RequestWrite.update(before, after),))
        )
        return stored

    async def _due(self, store: GovernanceStore, minutes: float, limit: int = 100) -> list[str]:
        return _ids(await _index(store).due(now=_at(minutes), limit=limit))

    # -- what is due ---------------------------------------------------------------------

    async def test_returns_pending_requests_whose_deadline_passed_earliest_first(
        self, store: GovernanceStore
    ) -> None:
        await self._create(
            store,
            sample_request("own-10", created_at=_BASE, expires_at=_at(10)),
            sample_request("slot-5", created_at=_BASE, approval_requirements=(_slot("a", _at(5)),)),
            # The earlier of its own expiry and its slots' decides; another offset, same instant.
            sample_request(
                "both-3",
                created_at=_BASE,
                expires_at=_at(20),
                approval_requirements=(_slot("a", _at(3).astimezone(_EAST)), _slot("b", None)),
            ),
            sample_request("tie-5", created_at=_BASE, expires_at=_at(5)),
            sample_request(
                "revalidation-7",
                created_at=_BASE,
                pending_reason=PendingReason.REVALIDATION,
                expires_at=_at(7),
            ),
            sample_request("never", created_at=_BASE, approval_requirements=(_slot("a", None),)),
        )
        assert await self._due(store, 2) == []
        assert await self._due(store, 5) == ["both-3", "slot-5", "tie-5"]
        assert await self._due(store, 60) == [
            "both-3",
            "slot-5",
            "tie-5",
            "revalidation-7",
            "own-10",
        ]
        assert await self._due(store, 60, limit=2) == ["both-3", "slot-5"]

    async def test_only_pending_requests_and_open_slots_count(self, store: GovernanceStore) -> None:
        await self._create(
            store,
            sample_request("approved", status=RequestStatus.APPROVED, expires_at=_at(1)),
            sample_request("executed", status=RequestStatus.EXECUTED, expires_at=_at(1)),
            sample_request(
                "decided-slot",
                created_at=_BASE,
                approval_requirements=(
                    _slot("a", _at(1), status=ApprovalStatus.APPROVED, decided_at=_BASE),
                    _slot("b", _at(30)),
                ),
            ),
        )
        assert await self._due(store, 10) == []
        assert await self._due(store, 30) == ["decided-slot"]

    async def test_follows_every_write(self, store: GovernanceStore) -> None:
        request = sample_request("r", created_at=_BASE, approval_requirements=(_slot("a", _at(5)),))
        await self._create(store, request)
        (stored,) = await _index(store).due(now=_at(5), limit=10)
        assert stored == await store.requests.get("r")
        # The slot is decided: nothing of the request expires any more.
        decided = record(
            stored,
            (),
            at=_at(1),
            approval_requirements=(
                _slot("a", _at(5), status=ApprovalStatus.APPROVED, decided_at=_at(1)),
            ),
        )
        stored = await self._update(store, stored, decided)
        assert await self._due(store, 60) == []
        # A new deadline of its own.
        stored = await self._update(store, stored, record(stored, (), at=_at(2), expires_at=_at(8)))
        assert await self._due(store, 7) == []
        assert await self._due(store, 8) == ["r"]
        # No longer pending.
        moved = transition(
            stored,
            RequestStatus.CANCELED,
            [RequestDecision(LifecycleDecision.CANCELED, MutationContext(), "contract", _at(3))],
            at=_at(3),
        )
        await self._update(store, stored, moved)
        assert await self._due(store, 60) == []

    async def test_agrees_with_expiry_deadline(self, store: GovernanceStore) -> None:
        requests = [
            sample_request(
                f"r{i}",
                created_at=_BASE,
                expires_at=None if i % 3 == 0 else _at(i),
                approval_requirements=(_slot("a", _at(12 - i)),) if i % 2 else (),
            )
            for i in range(12)
        ]
        await self._create(store, *requests)
        for minutes in (0, 4, 8, 12):
            now = _at(minutes)
            expected = sorted(
                (deadline, r.request_id)
                for r in requests
                if (deadline := expiry_deadline(r)) is not None and deadline <= now
            )
            assert await self._due(store, minutes) == [i for _, i in expected]

    async def test_refuses_a_limit_below_one(self, store: GovernanceStore) -> None:
        for limit in (0, -1):
            with pytest.raises(ValueError):
                await _index(store).due(now=_BASE, limit=limit)

    # -- quarantine ----------------------------------------------------------------------

    async def test_an_unreadable_due_request_is_quarantined_and_skipped(
        self, store: GovernanceStore
    ) -> None:
        await self._create(
            store,
            *(sample_request(f"r{i}", created_at=_BASE, expires_at=_at(i)) for i in range(3)),
        )
        await self.corrupt(store, "r1")
        assert await self._due(store, 60) == ["r0", "r2"]
        log = store.requests
        assert isinstance(log, QuarantineLog)
        assert [e.request_id for e in await log.quarantined()] == ["r1"]
        with pytest.raises(StoredDataError):
            await store.requests.get("r1")
