"""Committing a governed execution: state, requests, decisions and history together."""

from __future__ import annotations

from mutator import HistoryStore

from ._commit_types import GovernedCommit, RequestWrite, StateWrite
from ._errors import RequestConcurrencyError, RequestNotFoundError
from ._memory import InMemoryDecisionHistory, InMemoryRequestStore, InMemoryStateStore
from ._request import MutationRequest
from .protocols import DecisionHistory, RequestStore, StateStore

__all__ = [
    "GovernedCommit",
    "InMemoryCommitter",
    "RequestWrite",
    "SequentialCommitter",
    "StateWrite",
    "default_committer",
]


class InMemoryCommitter:
    """Atomic commits over the in-memory stores: every check passes before any write."""

    def __init__(
        self,
        requests: InMemoryRequestStore,
        decisions: InMemoryDecisionHistory,
        states: InMemoryStateStore,
        history: HistoryStore,
    ) -> None:
        self.requests = requests
        self.decisions = decisions
        self.states = states
        self.history = history

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        with self.requests.lock, self.states.lock:
            for write in commit.requests:
                self.requests.check_revision(write.request.request_id, write.expected_revision)
            if commit.state is not None:
                self.states.check_version(commit.state.state_id, commit.state.expected_version)
            if commit.state is not None:
                s = commit.state
                self.states.put_now(s.state_id, s.state, s.expected_version, s.request_id)
            stored = tuple(
                self.requests.replace_now(write.request, write.expected_revision)
                for write in commit.requests
            )
        for write in commit.requests:
            await self.decisions.append(write.request.request_id, write.new_decisions)
        for entry in commit.history:
            await self.history.append(entry)
        return stored


class SequentialCommitter:
    """Commits through the plain store protocols, for stores that share no transaction.

    The state is written first (recording the request that produced it), then the linked
    requests, then the executed request itself, whose terminal status marks the commit as
    done, then decisions and history. A crash in between leaves the request EXECUTING;
    :meth:`GovernedExecutionManager.recover_stale_claims` sees the recorded version and
    finishes it without applying the mutation again. The history entry of an execution
    finished that way is not recorded (use an atomic committer where that matters).
    """

    def __init__(
        self,
        requests: RequestStore,
        decisions: DecisionHistory,
        states: StateStore,
        history: HistoryStore,
    ) -> None:
        self.requests = requests
        self.decisions = decisions
        self.states = states
        self.history = history

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        for write in commit.requests:
            current = await self.requests.get(write.request.request_id)
            if current is None:
                raise RequestNotFoundError(write.request.request_id)
            if current.revision != write.expected_revision:
                raise RequestConcurrencyError(
                    write.request.request_id, write.expected_revision, current.revision
                )
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
            stored[index] = await self.requests.replace(
                write.request, expected_revision=write.expected_revision
            )
            await self.decisions.append(write.request.request_id, write.new_decisions)
        for entry in commit.history:
            await self.history.append(entry)
        return tuple(stored[index] for index in range(len(commit.requests)))


def default_committer(
    requests: RequestStore, decisions: DecisionHistory, states: StateStore, history: HistoryStore
) -> InMemoryCommitter | SequentialCommitter:
    """Atomic for the in-memory stores, sequential (with crash recovery) otherwise."""
    if (
        isinstance(requests, InMemoryRequestStore)
        and isinstance(decisions, InMemoryDecisionHistory)
        and isinstance(states, InMemoryStateStore)
    ):
        return InMemoryCommitter(requests, decisions, states, history)
    return SequentialCommitter(requests, decisions, states, history)
