"""The Redis store's ``audit`` and ``history`` pass the core contract suites.

Each test opens the store under its own key prefix through ``open_store`` and deletes the
prefix's keys afterwards (SCAN, never KEYS). redis-py's asyncio client runs on asyncio only.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from mutator import AuditSink, HistoryStore
from mutator.testing import AuditSinkContract, HistoryStoreContract
from mutator_governance.protocols import GovernanceStore
from mutator_governance.stores import open_store
from mutator_governance.testing import sample_registry

pytestmark = pytest.mark.redis


class _RedisPrefix:
    """A fresh key prefix per test, deleted afterwards."""

    url: str
    prefix: str
    opened: GovernanceStore

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture(autouse=True)
    async def _prefix(self, redis_url: str) -> AsyncIterator[None]:
        self.url = redis_url
        self.prefix = f"mutator-core-{uuid.uuid4().hex}"
        yield
        client = aioredis.Redis.from_url(redis_url)
        try:
            keys = [key async for key in client.scan_iter(match=f"{self.prefix}:*", count=500)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    async def _open(self) -> GovernanceStore:
        separator = "&" if "?" in self.url else "?"
        url = f"{self.url}{separator}prefix={self.prefix}"
        self.opened = await open_store(url, registry=sample_registry())
        return self.opened

    async def _close(self) -> None:
        await self.opened.aclose()


class TestRedisAuditSink(_RedisPrefix, AuditSinkContract):
    async def make_audit_sink(self) -> AuditSink:
        return (await self._open()).audit

    async def close_audit_sink(self, sink: AuditSink) -> None:
        await self._close()


class TestRedisHistoryStore(_RedisPrefix, HistoryStoreContract):
    async def make_history_store(self) -> HistoryStore:
        return (await self._open()).history

    async def close_history_store(self, store: HistoryStore) -> None:
        await self._close()
