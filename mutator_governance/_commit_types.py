"""What one governance operation writes: requests, their decisions, and maybe a state.

Every governance operation — submit, approve, reject, cancel, expire, move to pending,
supersede, claim, release, the governed commit, compensate — is one :class:`GovernedCommit`
handed to the store's :class:`~mutator_governance.ExecutionCommitter`, which applies it as
one atomic write (one transaction, one script, one critical section).
"""

from __future__ import annotations

from typing import Any

import attrs

from mutator import AuditEntry, HistoryEntry
from mutator.values import trusted

from ._decisions import RequestDecision
from ._request import MutationRequest, evolve_request

__all__ = ["GovernedCommit", "RequestWrite", "StateWrite"]


def _tuple(value: Any) -> tuple[Any, ...]:
    return value if type(value) is tuple else tuple(value)


@attrs.frozen
class StateWrite:
    """Write ``state`` as ``new_version`` if the state is still at ``expected_version``.

    ``request_id`` records which request produced the version; a store refuses a second
    version produced by the same request (so a mutation can never be applied twice, even
    through stores that share no transaction).
    """

    state_id: str
    state: Any
    expected_version: str | None
    new_version: str
    request_id: str


@attrs.frozen
class RequestWrite:
    """Store ``request`` and append ``new_decisions`` to its decision log.

    ``expected_revision`` is the compare-and-set: the stored revision must equal it, and
    the request is stored with ``expected_revision + 1``. ``None`` creates the request,
    which must not exist yet, with revision 0. ``new_decisions`` are the decisions the
    write adds; each carries its sequence number within the request.
    """

    request: MutationRequest
    expected_revision: int | None
    new_decisions: tuple[RequestDecision, ...] = attrs.field(converter=_tuple)

    @property
    def stored_revision(self) -> int:
        """The revision the request has once this write lands."""
        return 0 if self.expected_revision is None else self.expected_revision + 1

    @classmethod
    def update(cls, before: MutationRequest, after: MutationRequest) -> RequestWrite:
        """The write that moves a stored ``before`` to ``after`` (decisions past ``before``'s)."""
        if cls is not RequestWrite:
            return cls(after, before.revision, after.decisions[len(before.decisions) :])
        write: RequestWrite = _build_write(
            after, before.revision, after.decisions[len(before.decisions) :]
        )
        return write

    @classmethod
    def create(cls, request: MutationRequest) -> RequestWrite:
        """The write that stores a new ``request`` with every decision it carries."""
        if cls is not RequestWrite:
            return cls(request, None, request.decisions)
        write: RequestWrite = _build_write(request, None, request.decisions)
        return write


_build_write = trusted(RequestWrite)  # a request's decisions are always a tuple


@attrs.frozen
class GovernedCommit:
    """Everything one governance operation writes; all of it lands, or none of it.

    ``requests[0]`` is the request the operation is about; later entries are requests it
    links (the original of a compensation). ``state``, ``history`` and ``audit`` are set by
    governed executions: the new state, the engine's history entry and its audit entry
    land with the terminal request, so a commit that does not land leaves no record of
    success. A committer that cannot write atomically writes ``requests[0]`` last, so its
    new status means everything else landed.
    """

    requests: tuple[RequestWrite, ...] = attrs.field(converter=_tuple)
    state: StateWrite | None = None
    history: tuple[HistoryEntry, ...] = attrs.field(default=(), converter=_tuple)
    audit: tuple[AuditEntry, ...] = attrs.field(default=(), converter=_tuple)

    def stored(self) -> tuple[MutationRequest, ...]:
        """The requests as they are stored once this commit lands (revisions advanced)."""
        return tuple(
            write.request
            if write.request.revision == write.stored_revision
            else evolve_request(write.request, revision=write.stored_revision)
            for write in self.requests
        )
