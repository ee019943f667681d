"""How the option tests of every backend open a store: each path must reach one check."""

from __future__ import annotations

from typing import Any

from mutator_governance import Governance
from mutator_governance.stores import open_store
from mutator_governance.testing import sample_registry

OPENERS = ("open_store", "Governance.open")


async def open_through(opener: str, url: str, **options: Any) -> None:
    """Open and close ``url`` the way ``opener`` (one of :data:`OPENERS`) names."""
    if opener == "open_store":
        store = await open_store(url, registry=sample_registry(), **options)
        await store.aclose()
    else:
        async with Governance.open(url, registry=sample_registry(), **options):
            pass
