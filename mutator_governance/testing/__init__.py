"""Contract test suites for governance stores, shipped for every backend, ours or yours.

A store is correct when it behaves like the in-memory reference. Three pytest suites state
that behaviour: :class:`RequestStoreContract`, :class:`DecisionHistoryContract` and
:class:`StateStoreContract`. Subclass one in a test module, under a name pytest collects,
and implement its factory hook; each test gets a new, empty store::

    import pytest

    from mutator_governance import RequestStore
    from mutator_governance.testing import (
        RequestStoreContract,
        make_store_comparison,
        sample_registry,
    )

    from mybackend import MyRequestStore


    class TestMyRequestStore(RequestStoreContract):
        async def make_request_store(self) -> RequestStore:
            return await MyRequestStore.connect(URL, registry=sample_registry())

        async def close_request_store(self, store: RequestStore) -> None:
            await store.aclose()

        # Only for stores that cannot run on trio:
        @pytest.fixture
        def anyio_backend(self) -> str:
            return "asyncio"


    async def _fresh_store() -> RequestStore:
        return await MyRequestStore.connect(URL, registry=sample_registry())


    # A hypothesis state machine comparing the store with InMemoryRequestStore:
    TestMyRequestStoreComparison = make_store_comparison(_fresh_store).TestCase

The suites' tests are ``async`` and marked ``anyio``, so the anyio pytest plugin must be
active (``-p anyio`` or anyio installed as a plugin); they run once per backend of your
``anyio_backend`` fixture. Requests are built from a small built-in domain
(:class:`SampleState`, :class:`SampleMutation`, :class:`SamplePayload`) with
:func:`sample_request`, :func:`sample_rich_request` and :func:`sample_decision`; stores that
keep mutations as data resolve them with :func:`sample_registry`.

:class:`RequestStoreComparison` and :func:`make_store_comparison` need hypothesis; they are
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mutator.testing import assert_identical

from ._commit_contract import GovernanceStoreContract
from ._contracts import (
    DecisionHistoryContract,
    RequestStoreContract,
    StateStoreContract,
)
from ._expiry_contract import ExpiryIndexContract
from ._fixtures import (
    SAMPLE_MUTATION_TYPE,
    SAMPLE_STATE_TYPE,
    SampleMutation,
    SamplePayload,
    SampleState,
    sample_decision,
    sample_registry,
    sample_request,
    sample_rich_request,
)
from ._ready_contract import ReadyQueueContract

if TYPE_CHECKING:
    from ._stateful import RequestStoreComparison, make_store_comparison

__all__ = [
    "GovernanceStoreContract",
    "ReadyQueueContract",
    "ExpiryIndexContract",
    # contract suites
    "RequestStoreContract",
    "DecisionHistoryContract",
    "StateStoreContract",
    # stateful comparison with the in-memory reference (needs hypothesis)
    "RequestStoreComparison",
    "make_store_comparison",
    # sample domain and builders
    "SampleState",
    "SampleMutation",
    "SamplePayload",
    "SAMPLE_MUTATION_TYPE",
    "SAMPLE_STATE_TYPE",
    "sample_registry",
    "sample_request",
    "sample_rich_request",
    "sample_decision",
    "assert_identical",
]

_STATEFUL = frozenset({"RequestStoreComparison", "make_store_comparison"})


def __getattr__(name: str) -> Any:
    if name in _STATEFUL:
        from . import _stateful

        return getattr(_stateful, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
