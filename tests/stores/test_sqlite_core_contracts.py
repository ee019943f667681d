"""The SQLite store's ``audit`` and ``history`` pass the core contract suites (asyncio, trio)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mutator import AuditSink, HistoryStore
from mutator.testing import AuditSinkContract, HistoryStoreContract
from mutator_governance.protocols import GovernanceStore
from mutator_governance.stores import open_store
from mutator_governance.testing import sample_registry


class _SQLiteFile:
    """Each test opens a store on a new file in ``tmp_path``; closing the seam closes it."""

    url: str
    opened: GovernanceStore

    @pytest.fixture(autouse=True)
    def _database_url(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path}/core-contract.db"

    async def _open(self) -> GovernanceStore:
        self.opened = await open_store(self.url, registry=sample_registry())
        return self.opened

    async def _close(self) -> None:
        await self.opened.aclose()


class _SQLiteMemory(_SQLiteFile):
    @pytest.fixture(autouse=True)
    def _database_url(self) -> None:
        self.url = "sqlite:///:memory:"


class TestSQLiteFileAuditSink(_SQLiteFile, AuditSinkContract):
    async def make_audit_sink(self) -> AuditSink:
        return (await self._open()).audit

    async def close_audit_sink(self, sink: AuditSink) -> None:
        await self._close()


class TestSQLiteMemoryAuditSink(_SQLiteMemory, AuditSinkContract):
    async def make_audit_sink(self) -> AuditSink:
        return (await self._open()).audit

    async def close_audit_sink(self, sink: AuditSink) -> None:
        await self._close()


class TestSQLiteFileHistoryStore(_SQLiteFile, HistoryStoreContract):
    async def make_history_store(self) -> HistoryStore:
        return (await self._open()).history

    async def close_history_store(self, store: HistoryStore) -> None:
        await self._close()


class TestSQLiteMemoryHistoryStore(_SQLiteMemory, HistoryStoreContract):
    async def make_history_store(self) -> HistoryStore:
        return (await self._open()).history

    async def close_history_store(self, store: HistoryStore) -> None:
        await self._close()
