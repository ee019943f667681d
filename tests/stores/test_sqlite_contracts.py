"""The SQLite backend passes every store contract, on a file and in memory, on asyncio and trio."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from mutator_governance import DecisionHistory, GovernanceStore, RequestStore, StateStore
from mutator_governance.stores._sqlite import SQLiteStore
from mutator_governance.testing import (
    DecisionHistoryContract,
    GovernanceStoreContract,
    RequestStoreContract,
    StateStoreContract,
    make_store_comparison,
    sample_registry,
)


class _SQLiteFile:
    """Each test gets a store on a new file in ``tmp_path``."""

    store: SQLiteStore
    url: str

    @pytest.fixture(autouse=True)
    def _database_url(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path}/contract.db"

    async def _open(self) -> SQLiteStore:
        self.store = await SQLiteStore.open(self.url, registry=sample_registry())
        return self.store

    async def _close(self) -> None:
        await self.store.aclose()


class _SQLiteMemory(_SQLiteFile):
    """Each test gets a store on a private in-memory database."""

    @pytest.fixture(autouse=True)
    def _database_url(self) -> None:
        self.url = "sqlite:///:memory:"


class TestSQLiteFileRequestStore(_SQLiteFile, RequestStoreContract):
    async def make_request_store(self) -> RequestStore:
        return (await self._open()).requests

    async def close_request_store(self, store: RequestStore) -> None:
        await self._close()


class TestSQLiteMemoryRequestStore(_SQLiteMemory, RequestStoreContract):
    async def make_request_store(self) -> RequestStore:
        return (await self._open()).requests

    async def close_request_store(self, store: RequestStore) -> None:
        await self._close()


class TestSQLiteFileDecisionHistory(_SQLiteFile, DecisionHistoryContract):
    async def make_decision_history(self) -> DecisionHistory:
        return (await self._open()).decisions

    async def close_decision_history(self, history: DecisionHistory) -> None:
        await self._close()


class TestSQLiteMemoryDecisionHistory(_SQLiteMemory, DecisionHistoryContract):
    async def make_decision_history(self) -> DecisionHistory:
        return (await self._open()).decisions

    async def close_decision_history(self, history: DecisionHistory) -> None:
        await self._close()


class TestSQLiteFileStateStore(_SQLiteFile, StateStoreContract):
    async def make_state_store(self) -> StateStore:
        return (await self._open()).states

    async def close_state_store(self, store: StateStore) -> None:
        await self._close()


class TestSQLiteMemoryStateStore(_SQLiteMemory, StateStoreContract):
    async def make_state_store(self) -> StateStore:
        return (await self._open()).states

    async def close_state_store(self, store: StateStore) -> None:
        await self._close()


class TestSQLiteFileGovernanceStore(_SQLiteFile, GovernanceStoreContract):
    async def make_store(self) -> GovernanceStore:
        return await self._open()


class TestSQLiteMemoryGovernanceStore(_SQLiteMemory, GovernanceStoreContract):
    async def make_store(self) -> GovernanceStore:
        return await self._open()


# -- stateful comparison with the in-memory reference ------------------------------------------

_OPEN: dict[int, tuple[SQLiteStore, str | None]] = {}


async def _memory_store() -> RequestStore:
    store = await SQLiteStore.open("sqlite:///:memory:", registry=sample_registry())
    _OPEN[id(store.requests)] = (store, None)
    return store.requests


async def _file_store() -> RequestStore:
    directory = tempfile.mkdtemp(prefix="mutator-sqlite-")
    store = await SQLiteStore.open(f"sqlite:///{directory}/cmp.db", registry=sample_registry())
    _OPEN[id(store.requests)] = (store, directory)
    return store.requests


async def _close(requests: RequestStore) -> None:
    store, directory = _OPEN.pop(id(requests))
    await store.aclose()
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


TestSQLiteMemoryComparison = make_store_comparison(
    _memory_store, close=_close, backend="asyncio", name="SQLiteMemoryComparison"
).TestCase

TestSQLiteFileComparison = make_store_comparison(
    _file_store, close=_close, backend="trio", name="SQLiteFileComparison"
).TestCase
