"""The PostgreSQL store's expiry index: a sweep reads only the pending requests that are due.

Every test uses its own schema (``t_<uuid>``) and drops it afterwards. psycopg's async
driver runs on asyncio only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from mutator_governance import (
    ApprovalRequirement,
    Governance,
    GovernedCommit,
    MutationRequest,
    RequestStatus,
    RequestWrite,
    expiry_deadline,
)
from mutator_governance.stores import _postgres
from mutator_governance.testing import ExpiryIndexContract, sample_registry, sample_request

from .test_postgres import execute_sql, insert_request_row
from .test_postgres_ready import BASE, PostgresContractStores, _schema_at
from .test_postgres_ready import schema as schema  # the fixture

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class TestExpiryIndexWithInvalidJson(PostgresContractStores, ExpiryIndexContract):
    corruption = "not-json"


class TestExpiryIndexWithUnknownMutationType(PostgresContractStores, ExpiryIndexContract):
    corruption = "unknown-type"


def _pending(request_id: str, *, expires_in: timedelta | None, slot_in: timedelta | None = None):
    slots = (
        ()
        if slot_in is None
        else (ApprovalRequirement("a", role="sre", expires_at=BASE + slot_in),)
    )
    return sample_request(
        request_id,
        created_at=BASE,
        expires_at=None if expires_in is None else BASE + expires_in,
        approval_requirements=slots,
    )


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the request documents the store decodes, in order."""
    seen: list[str] = []
    request_from = _postgres._Database.request_from

    def counting(db: Any, request_id: str, text: Any) -> MutationRequest:
        seen.append(request_id)
        return request_from(db, request_id, text)

    monkeypatch.setattr(_postgres._Database, "request_from", counting)
    return seen


async def test_a_sweep_decodes_only_the_requests_it_expires(
    postgres_url: str, schema: str, decoded: list[str]
) -> None:
    registry = sample_registry()
    async with Governance.open(
        f"{postgres_url}?schema={schema}", registry=registry, clock=lambda: BASE
    ) as gov:
        backlog = [
            _pending(f"later-{i:04d}", expires_in=timedelta(days=1 + i % 7)) for i in range(1000)
        ]
        due = [
            _pending("due-own", expires_in=-timedelta(minutes=1)),
            _pending("due-slot", expires_in=None, slot_in=-timedelta(minutes=3)),
            _pending("due-now", expires_in=timedelta(0)),
        ]
        for request in (*backlog, *due):
            await gov.committer.commit(GovernedCommit((RequestWrite.create(request),)))
        decoded.clear()
        sweep = await gov.expire_due()
        assert [r.request_id for r in sweep.expired] == ["due-slot", "due-own", "due-now"]
        assert all(r.status is RequestStatus.EXPIRED for r in sweep.expired)
        assert sorted(decoded) == ["due-now", "due-own", "due-slot"]
        decoded.clear()
        assert (await gov.expire_due()).expired == ()
        assert decoded == []


async def test_requests_pending_before_the_upgrade_are_swept_by_their_real_deadline(
    postgres_url: str, schema: str
) -> None:
    registry = sample_registry()
    await _schema_at(postgres_url, schema, registry, 6)
    s = f'"{schema}"'
    rows = [
        _pending("past", expires_in=-timedelta(hours=1)),
        _pending("slot-past", expires_in=timedelta(days=2), slot_in=-timedelta(seconds=1)),
        _pending("future", expires_in=timedelta(days=2), slot_in=timedelta(days=1)),
        _pending("never", expires_in=None),
    ]
    for request in rows:
        await insert_request_row(postgres_url, s, registry, request)
    async with Governance.open(
        f"{postgres_url}?schema={schema}", registry=registry, clock=lambda: BASE
    ) as gov:
        sweep = await gov.expire_due()
        assert sorted(r.request_id for r in sweep.expired) == ["past", "slot-past"]
        store = gov.requests
        assert isinstance(store, _postgres.PostgresRequestStore)
        assert await store.due(now=BASE + timedelta(hours=1), limit=10) == []
        assert [r.request_id for r in await store.due(now=BASE + timedelta(days=1), limit=10)] == [
            "future"
        ]
    # The rows the sweep read but did not expire now carry their real deadline.
    found = dict(
        await execute_sql(
            postgres_url,
            f"SELECT request_id, due_at FROM {s}.requests WHERE request_id IN ('future', 'never')",
        )
    )
    assert found == {"future": expiry_deadline(rows[2]), "never": None}
