"""Committing governance operations: requests, decisions, state, history and audit together."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import anyio

from mutator import (
    AuditSink,
    HistoryStore,
    InMemoryAuditSink,
    InMemoryHistoryStore,
    NullAuditSink,
    NullHistoryStore,
)

from ._commit_types import GovernedCommit, RequestWrite, StateWrite
from ._errors import RequestAlreadyExistsError, RequestConcurrencyError, RequestNotFoundError
from ._memory import InMemoryDecisionHistory, InMemoryRequestStore, InMemoryStateStore
from ._request import MutationRequest
from .protocols import DecisionHistory, RequestStore, StateStore

__all__ = [
    "GovernedCommit",
    "InMemoryCommitter",
    "InMemoryGovernanceStore",
    "RequestWrite",
    "SequentialCommitter",
    "StateWrite",
    "default_committer",
]


_SYNC_SINKS = (InMemoryAuditSink, NullAuditSink, InMemoryHistoryStore, NullHistoryStore)


def _run_now(call: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never suspends (an in-memory sink's write) to its end, now."""
    try:
        call.send(None)
    except StopIteration:
        return
    call.close()
    raise RuntimeError("an in-memory sink suspended inside an atomic commit")


class InMemoryCommitter:
    """Atomic commits over the in-memory stores: every check passes before any write.

    Requests, states, decisions, and the history and audit entries (``audit=None``: not
    recorded) change in one critical section under the stores' locks, so no task or
    thread observes a half-written operation. The history store and audit sink must be
    the in-memory (or null) ones; :func:`default_committer` picks
    :class:`SequentialCommitter` for anything else.
    """

    atomic = True

    def __init__(
        self,
        requests: InMemoryRequestStore,
        decisions: InMemoryDecisionHistory,
        states: InMemoryStateStore,
        history: HistoryStore,
        audit: AuditSink | None = None,
    ) -> None:
        for sink in (history, audit):
            if sink is not None and not isinstance(sink, _SYNC_SINKS):
                raise TypeError(
                    f"InMemoryCommitter needs in-memory history and audit sinks, got "
                    f"{type(sink).__name__}; use SequentialCommitter for other sinks"
                )
        self.requests = requests
        self.decisions = decisions
        self.states = states
        self.history = history
        self.audit = audit

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        """Apply every write in ``commit`` atomically; return the stored requests in order."""
        requests, states, decisions = self.requests, self.states, self.decisions
        writes = commit.requests
        with requests._lock, states._lock, decisions._lock:  # the stores' own locks
            for write in writes:
                requests.check_revision(write.request.request_id, write.expected_revision)
            state = commit.state
            if state is not None:
                states.put_now(
                    state.state_id, state.state, state.expected_version, state.request_id
                )
            if len(writes) == 1:
                (write,) = writes
                stored: tuple[MutationRequest, ...] = (
                    requests.replace_now(write.request, write.expected_revision),
                )
                decisions.append_now(write.request.request_id, write.new_decisions)
            else:
                stored = tuple(
                    requests.replace_now(write.request, write.expected_revision) for write in writes
                )
                for write in writes:
                    decisions.append_now(write.request.request_id, write.new_decisions)
            for entry in commit.history:
                _run_now(self.history.append(entry))
            audit = self.audit
            if audit is not None:
                for record in commit.audit:
                    _run_now(audit.record(record))
        return stored


class InMemoryGovernanceStore:
    """Every in-memory store behind one atomic committer: a whole backend in one process.

    What ``open_store("memory://")`` returns; useful for tests, examples and services that
    need no durability.
    """

    def __init__(self) -> None:
        self._requests = InMemoryRequestStore()
        self._decisions = InMemoryDecisionHistory()
        self._states = InMemoryStateStore()
        self._audit = InMemoryAuditSink()
        self._history = InMemoryHistoryStore()
        self._committer = InMemoryCommitter(
            self._requests, self._decisions, self._states, self._history, self._audit
        )

    @property
    def requests(self) -> InMemoryRequestStore:
        """The request store."""
        return self._requests

    @property
    def decisions(self) -> InMemoryDecisionHistory:
        """The decision log."""
        return self._decisions

    @property
    def states(self) -> InMemoryStateStore:
        """The state store."""
        return self._states

    @property
    def audit(self) -> InMemoryAuditSink:
        """The audit sink (governed executions are audited here)."""
        return self._audit

    @property
    def history(self) -> InMemoryHistoryStore:
        """The history store."""
        return self._history

    @property
    def committer(self) -> InMemoryCommitter:
        """The atomic committer over the stores above."""
        return self._committer

    async def aclose(self) -> None:
        """Nothing to release."""


class SequentialCommitter:
    """Commits through the plain store protocols, for stores that share no transaction.

    Order: check every revision; write the state (the state store refuses a second version
    from the same request, so a mutation lands at most once whatever interleaves); the
    linked requests; the request the operation is about, whose new revision marks the
    operation as done; then its decisions (idempotent by sequence number), history and
    audit. A crash in between leaves the request EXECUTING (recovery finishes it from the
    recorded state version) or its log behind (``Governance.recover`` appends exactly the
    missing sequence numbers). A cancellation does not: once the first write is sent, the
    rest are written under a shield. The history and audit entries of an execution
    finished by recovery are not recorded: use an atomic committer where that matters.
    """

    atomic = False

    def __init__(
        self,
        requests: RequestStore,
        decisions: DecisionHistory,
        states: StateStore[Any],
        history: HistoryStore,
        audit: AuditSink | None = None,
    ) -> None:
        self.requests = requests
        self.decisions = decisions
        self.states = states
        self.history = history
        self.audit = audit

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        """Write ``commit`` store by store, the operation's own request last."""
        for write in commit.requests:
            await self._check(write)
        with anyio.CancelScope(shield=True):
            stored = await self._write(commit)
        return tuple(stored[index] for index in range(len(commit.requests)))

    async def _write(self, commit: GovernedCommit) -> dict[int, MutationRequest]:
        """The writes of ``commit``; the stored requests by their index in it."""
        if commit.state is not None:
            s = commit.state
            version = await self.states.put(
                s.state_id, s.state, expected_version=s.expected_version, request_id=s.request_id
            )
            if version != s.new_version:
                raise ValueError(
                    f"state store produced version {version!r}, expected {s.new_version!r}: "
                    "versions must be decimal counters (see next_version)"
                )
        stored: dict[int, MutationRequest] = {}
        for index in [*range(1, len(commit.requests)), 0]:
            write = commit.requests[index]
            if write.expected_revision is None:
                stored[index] = await self.requests.create(write.request)
            else:
                stored[index] = await self.requests.replace(
                    write.request, expected_revision=write.expected_revision
                )
            if write.new_decisions:
                await self.decisions.append(write.request.request_id, write.new_decisions)
        for entry in commit.history:
            await self.history.append(entry)
        if self.audit is not None:
            for record in commit.audit:
                await self.audit.record(record)
        return stored

    async def _check(self, write: RequestWrite) -> None:
        request_id = write.request.request_id
        current = await self.requests.get(request_id)
        if write.expected_revision is None:
            if current is not None:
                raise RequestAlreadyExistsError(request_id)
            return
        if current is None:
            raise RequestNotFoundError(request_id)
        if current.revision != write.expected_revision:
            raise RequestConcurrencyError(request_id, write.expected_revision, current.revision)


def default_committer(
    requests: RequestStore,
    decisions: DecisionHistory,
    states: StateStore[Any],
    history: HistoryStore,
    audit: AuditSink,
) -> InMemoryCommitter | SequentialCommitter:
    """Atomic for the in-memory stores and sinks, sequential (with crash recovery) otherwise."""
    if (
        isinstance(requests, InMemoryRequestStore)
        and isinstance(decisions, InMemoryDecisionHistory)
        and isinstance(states, InMemoryStateStore)
        and isinstance(history, _SYNC_SINKS)
        and isinstance(audit, _SYNC_SINKS)
    ):
        return InMemoryCommitter(requests, decisions, states, history, audit)
    return SequentialCommitter(requests, decisions, states, history, audit)
