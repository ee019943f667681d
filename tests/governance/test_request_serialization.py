"""Requests survive the trip to plain JSON and back exactly, and bad documents say why."""

from __future__ import annotations

import json
import math

import attrs
import pytest
from hypothesis import given

from mutator import MutationContext, SerializationError
from mutator_governance import MutationRegistry, MutationRequest, _registry
from mutator_governance.testing import sample_registry, sample_rich_request

from ..strategies import requests

REGISTRY = sample_registry()


def _round_trip(registry: MutationRegistry, request: MutationRequest) -> MutationRequest:
    text = registry.dumps(registry.unstructure_request(request))
    return registry.structure_request(json.loads(text), where=f"request {request.request_id}")


class TestRoundTrip:
    @given(requests())
    def test_generated_requests_round_trip_exactly(self, request: MutationRequest) -> None:
        """structure(unstructure(request)) == request, through JSON text, for any request."""
        assert _round_trip(REGISTRY, request) == request

    def test_rich_request_keeps_types(self) -> None:
        """Ints, tuples, aware datetimes and typed payloads come back with their types."""
        request = sample_rich_request()
        back = _round_trip(REGISTRY, request)
        assert back == request
        for key, value in request.metadata.items():
            assert type(back.metadata[key]) is type(value)
        assert back.created_at.utcoffset() == request.created_at.utcoffset()
        assert [type(e.data) for e in back.side_effects] == [
            type(e.data) for e in request.side_effects
        ]

    def test_mutation_is_rebuilt_as_its_registered_class(self) -> None:
        """The stored mutation comes back as an instance of the class registered for it."""
        request = sample_rich_request()
        back = _round_trip(REGISTRY, request)
        assert type(back.mutation) is REGISTRY.class_of(request.mutation_type)


class TestBadDocuments:
    def test_unknown_mutation_type_names_the_request_and_field(self) -> None:
        """A stored mutation type nobody registered raises SerializationError naming it."""
        request = sample_rich_request()
        data = REGISTRY.unstructure_request(request)
        data["mutation"]["$type"] = "nobody.registered.this"
        with pytest.raises(SerializationError) as caught:
            REGISTRY.structure_request(data, where=f"request {request.request_id}")
        assert request.request_id in str(caught.value)
        assert "mutation" in caught.value.path
        assert "nobody.registered.this" in str(caught.value)

    def test_unknown_mutation_type_says_how_to_register_a_mutation(self) -> None:
        """The hint names MutationRegistry.register and the mutations that are registered.

        A deploy that dropped a mutation class must not be told to call register_value
        or register_state, which would not make the request readable.
        """
        data = REGISTRY.unstructure_request(sample_rich_request())
        data["mutation"]["$type"] = "quota.retired"
        with pytest.raises(SerializationError) as caught:
            REGISTRY.structure_request(data)
        message = str(caught.value)
        assert "MutationRegistry.register(cls, name=...)" in message
        assert "register_value" not in message
        assert all(name in message for name in REGISTRY.mutation_names)

    def test_missing_field_names_the_field(self) -> None:
        """A document without a required field raises SerializationError naming that field."""
        data = REGISTRY.unstructure_request(sample_rich_request())
        del data["status"]
        with pytest.raises(SerializationError) as caught:
            REGISTRY.structure_request(data)
        assert "status" in str(caught.value)

    def test_wrongly_typed_field_names_the_field(self) -> None:
        """A field of the wrong type raises SerializationError naming that field, not a KeyError."""
        data = REGISTRY.unstructure_request(sample_rich_request())
        data["revision"] = "three"
        with pytest.raises(SerializationError) as caught:
            REGISTRY.structure_request(data)
        assert "revision" in caught.value.path

    def test_an_upgrade_survives_registering_the_class_again(self) -> None:
        """Registering a class again (idempotent) keeps the upgrade it was given."""
        registry = sample_registry()
        request = sample_rich_request()
        cls = registry.class_of(request.mutation_type)
        name = request.mutation_type
        data = registry.unstructure_request(request)
        data["mutation"]["value"]["retired"] = True
        registry.register(
            cls, name=name, upgrade=lambda f: {k: v for k, v in f.items() if k != "retired"}
        )
        registry.register(cls, name=name)
        assert registry.structure_request(data) == request
        with pytest.raises(TypeError, match="upgrade must be a callable"):
            registry.register(cls, name=name, upgrade="drop retired")  # type: ignore[arg-type]

    def test_unregistered_mutation_cannot_be_stored(self) -> None:
        """Unstructuring a request whose mutation class is unregistered fails clearly."""
        with pytest.raises(SerializationError) as caught:
            MutationRegistry().unstructure_request(sample_rich_request())
        assert "register" in str(caught.value)


class TestJsonLibraries:
    """orjson (the ``fast`` extra) and the stdlib ``json`` write documents that read back alike."""

    @pytest.fixture(params=["installed", "stdlib"])
    def library(self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
        if request.param == "stdlib":
            monkeypatch.setattr(_registry, "_dumps", _registry._stdlib_dumps)
            monkeypatch.setattr(_registry, "_loads", _registry._stdlib_loads)
        return str(request.param)

    @given(requests())
    def test_both_libraries_round_trip_generated_requests(self, request: MutationRequest) -> None:
        """Each library's text reads back (with either library) to the same request."""
        data = REGISTRY.unstructure_request(request)
        for dumps in (_registry._dumps, _registry._stdlib_dumps):
            for loads in (_registry._loads, _registry._stdlib_loads):
                assert REGISTRY.structure_request(loads(dumps(data))) == request

    def test_awkward_values_survive_either_library(self, library: str) -> None:
        """Lone surrogates, integers beyond 64 bits and non-ASCII text come back exactly."""
        values = {"surrogate": "a\ud800b", "big": 2**70, "negative": -(2**65), "text": "€ ü"}
        text = REGISTRY.dumps(REGISTRY.unstructure_value(values))
        text.encode("utf-8")  # always valid UTF-8
        assert REGISTRY.structure_value(REGISTRY.loads(text)) == values

    def test_non_finite_floats_are_refused_by_either_library(self, library: str) -> None:
        """Raw NaN in plain data is not JSON: the stdlib refuses it; unstructured data tags it."""
        assert REGISTRY.structure_value(
            REGISTRY.loads(REGISTRY.dumps(REGISTRY.unstructure_value([math.inf])))
        ) == [math.inf]
        if library == "stdlib":
            with pytest.raises(ValueError, match="not JSON compliant"):
                REGISTRY.dumps([math.nan])

    def test_json_library_is_reported(self) -> None:
        """JSON_LIBRARY says which library the registry uses in this install."""
        assert _registry.JSON_LIBRARY in ("orjson", "json")


class TestRepeatedValues:
    """Repeated contexts are reused inside the codec, never shared with the caller."""

    def test_unstructured_documents_do_not_alias(self) -> None:
        """Changing one returned document leaves the next one (of the same request) intact."""
        plain = MutationContext(actor_id="alice")  # text fields only: the reused kind
        request = sample_rich_request()
        decisions = tuple(attrs.evolve(d, context=plain) for d in request.decisions)
        request = attrs.evolve(request, context=plain, decisions=decisions)
        first = REGISTRY.unstructure_request(request)
        for context in [first["context"]] + [d["context"] for d in first["decisions"]]:
            context["actor_id"] = "mallory"
            context["metadata"]["injected"] = 1
        second = REGISTRY.unstructure_request(request)
        for context in [second["context"]] + [d["context"] for d in second["decisions"]]:
            assert context["actor_id"] == "alice"
            assert context["metadata"] == {}
        assert REGISTRY.structure_request(second) == request

    def test_changed_document_is_read_as_changed(self) -> None:
        """Reading a document, changing it and reading it again sees the change (or its error)."""
        converter = REGISTRY.converter
        data = converter.unstructure(MutationContext(actor_id="alice"))
        assert converter.structure(data, MutationContext).actor_id == "alice"
        data["actor_id"] = "mallory"
        assert converter.structure(data, MutationContext).actor_id == "mallory"
        data["metadata"]["limit"] = 5
        assert converter.structure(data, MutationContext).metadata == {"limit": 5}
        data["actor_id"] = 5
        with pytest.raises(SerializationError) as caught:
            REGISTRY.structure_value({"$type": "mutator.MutationContext", "value": data})
        assert caught.value.path == "actor_id"


class TestCompiledRequests:
    """Requests read through the compiled path equal what their constructor builds."""

    def test_unnumbered_decisions_are_numbered_as_the_constructor_does(self) -> None:
        request = sample_rich_request()
        assert len(request.decisions) > 1
        data = REGISTRY.unstructure_request(request)
        for decision in data["decisions"]:
            decision["sequence"] = 0
        back = REGISTRY.structure_request(json.loads(REGISTRY.dumps(data)))
        assert [d.sequence for d in back.decisions] == list(range(1, len(request.decisions) + 1))
        assert back == request

    def test_mappings_are_read_only_and_decision_codes_checked(self) -> None:
        request = sample_rich_request()
        back = _round_trip(REGISTRY, request)
        with pytest.raises(TypeError):
            back.metadata["new"] = 1  # type: ignore[index]
        data = REGISTRY.unstructure_request(request)
        data["decisions"][0]["code"] = {"category": "lifecycle", "code": "NOPE"}
        with pytest.raises(SerializationError) as caught:
            REGISTRY.structure_request(data)
        assert caught.value.path.startswith("decisions[0].code")
