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


def test_a_requests_head_is_encoded_once_while_its_objects_stay() -> None:
    """Later writes of a request reuse its head (id, state, mutation, intent, context) when
    they carry the same objects; the text is the registry's own either way."""
    registry = sample_registry()
    documents = RequestDocuments(registry)
    first = sample_request("r-1", decisions=[sample_decision(LifecycleDecision.SUBMITTED)])
    assert documents.request(first)[0] == _registry_text(registry, first)
    parts = documents._parts
    assert parts is not None
    heads: list[MutationRequest] = []

    def counting(request: MutationRequest) -> dict[str, Any]:
        heads.append(request)
        return parts[0](request)

    documents._parts = (counting, parts[1])
    claimed = attrs.evolve(
        first,
        decisions=(*first.decisions, sample_decision(LifecycleDecision.CLAIMED)),
        revision=first.revision + 1,
    )
    assert documents.request(claimed)[0] == _registry_text(registry, claimed)
    assert heads == []


def test_a_request_with_another_head_object_is_encoded_again() -> None:
    """A copy of a request whose mutation or context is another object (equal or not) gets
    its own head: a kept head never stands for different data."""
    registry = sample_registry()
    documents = RequestDocuments(registry)
    first = sample_request("r-1", decisions=[sample_decision(LifecycleDecision.SUBMITTED)])
    documents.request(first)
    other_mutation = attrs.evolve(first, mutation=attrs.evolve(first.mutation, value=7))
    other_context = attrs.evolve(first, context=attrs.evolve(first.context, actor_id="bob"))
    other_state = attrs.evolve(first, state_id="another-state")
    for request in (other_mutation, other_context, other_state, first):
        text = documents.request(request)[0]
        assert text == _registry_text(registry, request)
    assert '"value":7' in documents.request(other_mutation)[0]
    assert '"actor_id":"bob"' in documents.request(other_context)[0]
