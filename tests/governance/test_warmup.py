"""Governance.open warms the codec up: the first request it handles builds no hooks."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import pytest

from mutator import Mutation, MutationContext, MutationIntent
from mutator._serialization import _Hooks
from mutator_governance import Governance, MutationRegistry

from .conftest import REQUESTER, STATE_ID, IncreaseQuota, Quotas

pytestmark = pytest.mark.anyio


class Opaque:
    """A value type no codec knows."""


@attrs.frozen
class Unserializable(Mutation[Quotas]):
    opaque: Opaque
    intent: ClassVar[MutationIntent] = MutationIntent("quota.opaque")

    def apply(self, state: Quotas) -> Quotas:
        return state


def registry() -> MutationRegistry:
    registry_ = MutationRegistry()
    registry_.register(IncreaseQuota, name="quota.increase")
    return registry_


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[type[Any]]:
    """The classes whose encode or decode hooks are generated from now on."""
    seen: list[type[Any]] = []
    for name in ("_generate_st", "_generate_un"):
        original = getattr(_Hooks, name)

        def counting(self: _Hooks, cls: type[Any], _original: Any = original) -> Any:
            seen.append(cls)
            return _original(self, cls)

        monkeypatch.setattr(_Hooks, name, counting)
    return seen


async def test_first_request_after_open_builds_no_codec_hooks(built: list[type[Any]]) -> None:
    """Submitting, storing and reading back the first request only uses prepared hooks."""
    async with Governance.open("memory://", registry=registry()) as gov:
        built.clear()  # what opening built
        registry_ = gov.registry
        await gov.states.put(STATE_ID, Quotas({"bob": 1}))
        request = await gov.submit(
            IncreaseQuota("bob", 5), state_id=STATE_ID, context=MutationContext.user(REQUESTER)
        )
        data = registry_.unstructure_request(request)
        assert registry_.structure_request(data) == request
        state = registry_.unstructure_value(Quotas({"bob": 2}))
        assert registry_.structure_value(state) == Quotas({"bob": 2})
    assert built == []


async def test_without_open_the_first_request_builds_its_hooks(built: list[type[Any]]) -> None:
    """The control: a registry that no governance opened builds hooks on first use."""
    registry_ = registry()
    registry_.unstructure_value(Quotas({"bob": 2}))
    assert Quotas in built


async def test_open_does_not_fail_on_a_mutation_the_codec_cannot_handle() -> None:
    """A registered mutation with an unserializable field still opens (it may never be
    stored, e.g. in memory); it fails only where it is encoded, as before."""
    registry_ = registry()
    registry_.register(Unserializable)
    async with Governance.open("memory://", registry=registry_) as gov:
        await gov.states.put(STATE_ID, Quotas({"bob": 1}))
        request = await gov.submit(
            Unserializable(Opaque()), state_id=STATE_ID, context=MutationContext.user(REQUESTER)
        )
        assert request.mutation_type == "quota.opaque"
