"""The PostgreSQL store's ``audit`` and ``history`` pass the core contract suites.

Each test opens the store on its own schema (``t_<uuid>``) through ``open_store`` and drops
the schema afterwards. psycopg's async driver runs on asyncio only.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from mutator import AuditSink, HistoryStore
from mutator.testing import AuditSinkContract, HistoryStoreContract
from mutator_governance.protocols import GovernanceStore
from mutator_governance.stores import open_store
from mutator_governance.testing import sample_registry

pytestmark = pytest.mark.postgres


class _PostgresSchema:
    """A fresh schema per test, dropped afterwards."""

    url: str
    schema: str
    opened: GovernanceStore

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture(autouse=True)
    async def _schema(self, postgres_url: str) -> AsyncIterator[None]:
        self.url = postgres_url
        self.schema = f"t_{uuid.uuid4().hex}"
        yield
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    async def _open(self) -> GovernanceStore:
        separator = "&" if "?" in self.url else "?"
        url = f"{self.url}{separator}schema={self.schema}"
        self.opened = await open_store(url, registry=sample_registry())
        return self.opened

    async def _close(self) -> None:
        await self.opened.aclose()


class TestPostgresAuditSink(_PostgresSchema, AuditSinkContract):
    async def make_audit_sink(self) -> AuditSink:
        return (await self._open()).audit

    async def close_audit_sink(self, sink: AuditSink) -> None:
        await self._close()


class TestPostgresHistoryStore(_PostgresSchema, HistoryStoreContract):
    async def make_history_store(self) -> HistoryStore:
        return (await self._open()).history

    async def close_history_store(self, store: HistoryStore) -> None:
        await self._close()
