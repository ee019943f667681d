"""A decision log row that cannot be read does not stop the decision listing, on every
durable store: the requests hold every decision too, so the listing reads them instead
and answers exactly as it would have."""

from __future__ import annotations

import logging
import sqlite3

import pytest
import redis.asyncio as aioredis

from mutator_governance import DecisionQuery, Governance, RequestStatus

from . import test_stored_documents as documents
from .test_stored_documents import (
    ACCOUNT,
    STATE_ID,
    Durable,
    PostgresSchema,
    RedisPrefix,
    Rename,
    SQLiteFile,
    opened,
    user,
)

# the durable stores' fixtures (a SQLite file, a PostgreSQL schema, a Redis prefix)
case = documents.case
anyio_backend = documents.anyio_backend
durable = documents.durable
postgres_url = documents.postgres_url
redis_url = documents.redis_url

pytestmark = pytest.mark.anyio

QUERIES = [
    DecisionQuery(),
    DecisionQuery.recent_execution_outcomes(),
    DecisionQuery.recent_version_resolutions(),
    DecisionQuery(actor_ids={"ann"}),
]


async def damage_newest_log_row(durable: Durable) -> None:
    """Overwrite the newest decision log row with text that is no decision."""
    if isinstance(durable, SQLiteFile):
        raw = sqlite3.connect(durable.path)
        try:
            with raw:
                raw.execute(
                    "UPDATE decisions SET document = '[]' "
                    "WHERE rowid = (SELECT max(rowid) FROM decisions)"
                )
        finally:
            raw.close()
    elif isinstance(durable, PostgresSchema):
        from ..stores.test_postgres import execute_sql

        table = f'"{durable.schema}".decisions'
        await execute_sql(
            durable.server,
            f"UPDATE {table} SET document = '[]' WHERE id = (SELECT max(id) FROM {table})",
        )
    else:
        assert isinstance(durable, RedisPrefix)
        client = aioredis.Redis.from_url(durable.server)
        try:
            async for key in client.scan_iter(match=f"{durable.prefix}:decisions-by-time*"):
                await client.zadd(key, {b"9" * 18 + b"|" + b"9" * 16 + b"|[]": 0})
        finally:
            await client.aclose()


async def listings(gov: Governance) -> list[list[tuple[str, int]]]:
    return [
        [(v.request.request_id, v.decision.sequence) for v in (await gov.list_decisions(q)).items]
        for q in QUERIES
    ]


async def test_a_damaged_log_row_leaves_the_decision_listing_whole(
    durable: Durable, caplog: pytest.LogCaptureFixture
) -> None:
    async with opened(durable) as gov:
        await gov.states.put(STATE_ID, ACCOUNT)
        for name in ("bea", "cai", "dan"):
            request = await gov.submit(Rename(name), state_id=STATE_ID, context=user("ann"))
            assert request.status is RequestStatus.APPROVED
            await gov.execute(request.request_id)
        before = await listings(gov)
        assert all(before), "every query lists something"

        await damage_newest_log_row(durable)
        with caplog.at_level(logging.WARNING, logger="mutator.governance"):
            after = await listings(gov)

    assert after == before
    assert "decision log unreadable" in caplog.text
