"""Warming a governance up before it serves: the codec's hooks are built on first use.

Building the converter's hooks for the request, its decisions, the engine's records and
every registered mutation and state class costs tens of milliseconds of CPU the first time
each is met; :func:`warm_codec` pays it once when a governance opens, so the first request
a process handles does not.
"""

from __future__ import annotations

from typing import Any

from mutator import AuditEntry, HistoryEntry

from ._decisions import RequestDecision
from ._registry import MutationRegistry, _state_class_of
from ._request import MutationRequest

__all__ = ["warm_codec"]


def warm_codec(registry: MutationRegistry) -> None:
    """Build ``registry``'s encode and decode hooks for every type it knows (no I/O).

    Never raises: a class the codec cannot handle (a field of an unregistered type) is
    left to fail where it is first encoded or decoded, as without the warm-up.
    """
    converter = registry.converter
    known: list[type[Any]] = [MutationRequest, RequestDecision, HistoryEntry, AuditEntry]
    for name in registry.mutation_names:
        mutation = registry.class_of(name)
        known.append(mutation)
        state = _state_class_of(mutation)
        if state is not None and registry.state_name_of(state) is not None:
            known.append(state)
    for cls in known:
        for build in (converter.get_unstructure_hook, converter.get_structure_hook):
            try:
                build(cls)
            except Exception:
                continue
