"""The in-memory stores against the shipped contract suites and the stateful comparison.

The contract suites run on asyncio and trio (the project's ``anyio_backend`` fixture). The
comparison of :class:`InMemoryRequestStore` with itself is a sanity check of the state
machine: it must agree with itself, exercise every operation, and catch a broken store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
import sniffio
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from mutator_governance import (
    DecisionHistory,
    GovernanceStore,
    InMemoryDecisionHistory,
    InMemoryGovernanceStore,
    InMemoryRequestStore,
    InMemoryStateStore,
    MutationRequest,
    PendingReason,
    RequestPage,
    RequestQuery,
    RequestStore,
    StateStore,
)
from mutator_governance.testing import (
    DecisionHistoryContract,
    ExpiryIndexContract,
    GovernanceStoreContract,
    ReadyQueueContract,
    RequestStoreComparison,
    RequestStoreContract,
    StateStoreContract,
    make_store_comparison,
)


class TestInMemoryRequestStore(RequestStoreContract):
    async def make_request_store(self) -> RequestStore:
        return InMemoryRequestStore()


class TestInMemoryDecisionHistory(DecisionHistoryContract):
    async def make_decision_history(self) -> DecisionHistory:
        return InMemoryDecisionHistory()


class TestInMemoryStateStore(StateStoreContract):
    async def make_state_store(self) -> StateStore:
        return InMemoryStateStore()


class TestAsyncioOnlyRequestStore(RequestStoreContract):
    """How an asyncio-only backend pins the loop; also counts the factory and close hooks."""

    made: ClassVar[list[RequestStore]] = []
    closed: ClassVar[list[RequestStore]] = []

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def make_request_store(self) -> RequestStore:
        store = InMemoryRequestStore()
        self.made.append(store)
        return store

    async def close_request_store(self, store: RequestStore) -> None:
        self.closed.append(store)

    async def test_runs_on_asyncio(self, request_store: RequestStore, anyio_backend: str) -> None:
        assert anyio_backend == "asyncio"
        assert sniffio.current_async_library() == "asyncio"
        assert request_store is self.made[-1]


def test_every_store_made_was_closed() -> None:
    # Runs after the class above (file order); each of its tests closed its own store.
    made, closed = TestAsyncioOnlyRequestStore.made, TestAsyncioOnlyRequestStore.closed
    if not made:
        pytest.skip("the asyncio-only suite did not run in this process")
    assert closed == made
    assert len({id(store) for store in made}) == len(made)


class TestStateStoreWithFixtures(StateStoreContract):
    """Hooks can use other fixtures: an autouse fixture keeps them on ``self``."""

    @pytest.fixture(autouse=True)
    def _workspace(self, tmp_path: Path) -> None:
        self.workspace = tmp_path

    async def make_state_store(self) -> StateStore:
        assert self.workspace.is_dir()
        return InMemoryStateStore()


# -- stateful comparison -----------------------------------------------------------------------

TestInMemoryComparisonAsyncio = make_store_comparison(
    InMemoryRequestStore, name="InMemoryComparisonAsyncio"
).TestCase


class InMemoryComparisonTrio(RequestStoreComparison):
    backend = "trio"

    async def make_store(self) -> RequestStore:
        return InMemoryRequestStore()


TestInMemoryComparisonTrio = InMemoryComparisonTrio.TestCase


class CountingStore:
    """An in-memory store that counts the operations and their outcomes it sees."""

    calls: ClassVar[Counter[str]] = Counter()

    def __init__(self) -> None:
        self._inner = InMemoryRequestStore()

    async def _count(self, name: str, call: Any) -> Any:
        try:
            result = await call
        except Exception as error:
            self.calls[f"{name}:{type(error).__name__}"] += 1
            raise
        self.calls[f"{name}:ok"] += 1
        return result

    async def create(self, request: MutationRequest) -> MutationRequest:
        return await self._count("create", self._inner.create(request))  # type: ignore[no-any-return]

    async def replace(self, request: MutationRequest, *, expected_revision: int) -> MutationRequest:
        result = self._inner.replace(request, expected_revision=expected_revision)
        return await self._count("replace", result)  # type: ignore[no-any-return]

    async def get(self, request_id: str) -> MutationRequest | None:
        return await self._count("get", self._inner.get(request_id))  # type: ignore[no-any-return]

    async def by_state(self, state_id: str) -> Sequence[MutationRequest]:
        return await self._count("by_state", self._inner.by_state(state_id))  # type: ignore[no-any-return]

    async def pending(
        self, reason: PendingReason | None = None, *, state_id: str | None = None
    ) -> Sequence[MutationRequest]:
        result = self._inner.pending(reason, state_id=state_id)
        return await self._count("pending", result)  # type: ignore[no-any-return]

    async def list(
        self, query: RequestQuery | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> RequestPage:
        result = self._inner.list(query, limit=limit, cursor=cursor)
        name = "list-next" if cursor is not None else "list"
        return await self._count(name, result)  # type: ignore[no-any-return]


QUICK = settings(
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    database=None,
    derandomize=True,
    report_multiple_bugs=False,
    suppress_health_check=list(HealthCheck),
)


def test_comparison_exercises_every_operation() -> None:
    CountingStore.calls.clear()
    machine = make_store_comparison(CountingStore, name="CountingComparison")
    run_state_machine_as_test(machine, settings=settings(QUICK, max_examples=30))
    seen = set(CountingStore.calls)
    expected = {
        "create:ok",
        "create:RequestAlreadyExistsError",
        "replace:ok",
        "replace:RequestConcurrencyError",
        "replace:RequestNotFoundError",
        "get:ok",
        "by_state:ok",
        "pending:ok",
        "list:ok",
        "list-next:ok",
        "list:ValueError",
    }
    assert expected <= seen, f"never exercised: {sorted(expected - seen)}"


def test_comparison_has_default_settings() -> None:
    test_case = InMemoryComparisonTrio.TestCase
    assert test_case.settings.max_examples == 30
    assert test_case.settings.stateful_step_count == 20
    assert test_case.settings.deadline is None
    assert InMemoryComparisonTrio.backend == "trio"
    assert TestInMemoryComparisonAsyncio.__name__ == "InMemoryComparisonAsyncio.TestCase"


class LaxRevisionStore(InMemoryRequestStore):
    """Broken: replace ignores the expected revision."""

    async def replace(self, request: MutationRequest, *, expected_revision: int) -> MutationRequest:
        current = await self.get(request.request_id)
        if current is None:
            return await super().replace(request, expected_revision=expected_revision)
        return await super().replace(request, expected_revision=current.revision)


class LossyPagingStore(InMemoryRequestStore):
    """Broken: a page after the first one skips its first item."""

    async def list(
        self, query: RequestQuery | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> RequestPage:
        page = await super().list(query, limit=limit, cursor=cursor)
        if cursor is None or not page.items:
            return page
        return attrs.evolve(page, items=page.items[1:])


class TextOrderStore(InMemoryRequestStore):
    """Broken: orders by the text of ``created_at`` (offsets included), not by its instant."""

    async def by_state(self, state_id: str) -> Sequence[MutationRequest]:
        found = await super().by_state(state_id)
        return sorted(found, key=lambda r: (r.created_at.isoformat(), r.request_id))


@pytest.mark.parametrize("broken", [LaxRevisionStore, LossyPagingStore, TextOrderStore])
def test_comparison_catches_broken_store(broken: type[InMemoryRequestStore]) -> None:
    machine = make_store_comparison(broken, name=f"{broken.__name__}Comparison")
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            machine, settings=settings(QUICK, max_examples=200, phases=[Phase.generate])
        )


class TestInMemoryGovernanceStore(GovernanceStoreContract):
    """The in-memory stores behind their atomic committer keep the commit contract."""

    async def make_store(self) -> GovernanceStore:
        return InMemoryGovernanceStore()


class TestInMemoryReadyQueue(ReadyQueueContract):
    async def make_store(self) -> GovernanceStore:
        return InMemoryGovernanceStore()


class TestInMemoryExpiryIndex(ExpiryIndexContract):
    async def make_store(self) -> GovernanceStore:
        return InMemoryGovernanceStore()
