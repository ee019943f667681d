"""What a governed execution writes: the state, the requests and their decisions."""

from __future__ import annotations

from typing import Any

import attrs

from mutator import HistoryEntry
from mutator._freeze import to_tuple

from ._decisions import RequestDecision
from ._request import MutationRequest

__all__ = ["GovernedCommit", "RequestWrite", "StateWrite"]


@attrs.frozen
class StateWrite:
    """Write ``state`` as ``new_version`` if the state is still at ``expected_version``."""

    state_id: str
    state: Any
    expected_version: str | None
    new_version: str
    request_id: str


@attrs.frozen
class RequestWrite:
    """Store ``request`` if its stored revision is ``expected_revision``; log the decisions."""

    request: MutationRequest
    expected_revision: int
    new_decisions: tuple[RequestDecision, ...] = attrs.field(converter=to_tuple)


@attrs.frozen
class GovernedCommit:
    """Everything one governed execution writes; all of it lands, or none of it.

    ``requests[0]`` is the executed request; later entries are requests it links (the
    original of a compensation). A committer that cannot write atomically writes the
    executed request last, so its terminal status means everything else landed.
    """

    requests: tuple[RequestWrite, ...] = attrs.field(converter=to_tuple)
    state: StateWrite | None = None
    history: tuple[HistoryEntry, ...] = attrs.field(default=(), converter=to_tuple)
