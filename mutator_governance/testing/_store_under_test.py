"""The store a governance contract suite runs against: how it is made, closed and spoilt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ..protocols import GovernanceStore

__all__ = ["StoreUnderTest", "implementing"]


def implementing(part: object, protocol: Any) -> Any:
    """``part``, when it implements the optional runtime-checkable ``protocol``; otherwise
    the test is skipped. (Annotate the result: mypy takes no protocol as ``type[P]``.)"""
    if not isinstance(part, protocol):
        pytest.skip(f"{type(part).__name__} does not implement {protocol.__name__}")
    return part


class StoreUnderTest:
    """The ``store`` fixture of a suite: a new store per test from :meth:`make_store`.

    Subclasses implement :meth:`make_store`; :meth:`corrupt` makes one stored request
    unreadable, for the suites that test quarantine (they skip without it).
    """

    async def make_store(self) -> GovernanceStore:
        """Return a new, empty store (override this)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement make_store()")

    async def close_store(self, store: GovernanceStore) -> None:
        """Release ``store`` after a test (default: ``aclose``)."""
        await store.aclose()

    async def corrupt(self, store: GovernanceStore, request_id: str) -> None:
        """Make the stored request ``request_id`` unreadable (default: skip the test)."""
        pytest.skip(f"{type(self).__qualname__} does not implement corrupt()")

    @pytest.fixture
    async def store(self) -> AsyncIterator[GovernanceStore]:
        """The store under test, from :meth:`make_store`."""
        store = await self.make_store()
        try:
            yield store
        finally:
            await self.close_store(store)
