"""The stores' request and decision JSON (RequestDocuments): the registry's own text, each
decision object encoded once however many writes carry it."""

from __future__ import annotations

from typing import Any

import attrs

from mutator_governance import LifecycleDecision, MutationRegistry, MutationRequest
from mutator_governance._decisions import RequestDecision
from mutator_governance.stores._documents import RequestDocuments
from mutator_governance.testing import sample_decision, sample_registry, sample_request


def _registry_text(registry: MutationRegistry, request: MutationRequest) -> str:
    return registry.dumps(registry.unstructure_request(request))


def _counting(registry: MutationRegistry) -> list[RequestDecision]:
    """Every decision ``registry`` unstructures from now on (alone or in a request)."""
    seen: list[RequestDecision] = []
    hook = registry.converter.get_unstructure_hook(RequestDecision)

    def counting(decision: RequestDecision) -> Any:
        seen.append(decision)
        return hook(decision)

    registry.converter.register_unstructure_hook(RequestDecision, counting)
    return seen


def test_each_decision_is_encoded_once_across_writes() -> None:
    """A request written again with one more decision (a claim, then its outcome) encodes
    only the new one; its rows take the same texts; every text is the registry's own."""
    registry = sample_registry()
    first = sample_request(
        "r-1",
        decisions=[
            sample_decision(LifecycleDecision.SUBMITTED),
            sample_decision(LifecycleDecision.PENDING, metadata={"decisions": ["x"]}),
        ],
    )
    claimed = attrs.evolve(
        first, decisions=(*first.decisions, sample_decision(LifecycleDecision.CLAIMED))
    )
    expected = [_registry_text(registry, first), _registry_text(registry, claimed)]
    rows = [registry.dumps(registry.unstructure_decision(d)) for d in claimed.decisions]
    documents = RequestDocuments(registry)
    seen = _counting(registry)
    assert documents.request(first)[0] == expected[0]
    seen.clear()
    text, texts = documents.request(claimed)
    assert text == expected[1]
    assert texts == rows
    assert [documents.decision(d) for d in claimed.decisions] == rows
    assert seen == [claimed.decisions[-1]]


def test_a_request_holding_the_marker_is_still_the_registrys_document() -> None:
    registry = sample_registry()
    documents = RequestDocuments(registry)
    marker = documents._marker  # what a request's data never holds, unless it does
    request = sample_request(
        "r-1", decisions=[sample_decision(metadata={"note": marker})], metadata={"m": marker}
    )
    assert documents.request(request)[0] == _registry_text(registry, request)


def test_a_decision_of_a_subclass_is_encoded_by_its_own_hooks_every_time() -> None:
    @attrs.frozen
    class Annotated(RequestDecision):
        note: str = "kept"

    registry = sample_registry()
    documents = RequestDocuments(registry)
    decision = Annotated(**attrs.asdict(sample_decision(), recurse=False))
    expected = registry.dumps(registry.unstructure_decision(decision))
    assert '"note":"kept"' in expected
    assert documents.decision(decision) == expected
