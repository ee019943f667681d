"""Serialization of mutations, states and records through cattrs (public API).

``structure`` and ``unstructure`` convert between values and JSON-compatible data with a
converter from :func:`make_converter`, raising :class:`SerializationError` with the path of
the offending field; :class:`TypeRegistry` names the classes stored as data;
:func:`fields_unstructurer` gives some fields of a class as :func:`unstructure` does, for
writers that assemble a document from parts.
"""

from __future__ import annotations

from ._serialization import (
    SerializationError,
    TypeRegistry,
    fields_unstructurer,
    make_converter,
    structure,
    unstructure,
)

__all__ = [
    "SerializationError",
    "TypeRegistry",
    "fields_unstructurer",
    "make_converter",
    "structure",
    "unstructure",
]
