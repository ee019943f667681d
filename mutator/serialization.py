"""Serialization of mutations, states and records through cattrs (public API).

``structure`` and ``unstructure`` convert between values and JSON-compatible data with a
converter from :func:`make_converter`, raising :class:`SerializationError` with the path of
the offending field; :class:`TypeRegistry` names the classes stored as data.
"""

from __future__ import annotations

from ._serialization import (
    SerializationError,
    TypeRegistry,
    make_converter,
    structure,
    unstructure,
)

__all__ = ["SerializationError", "TypeRegistry", "make_converter", "structure", "unstructure"]
