"""A governance backend written by a user: one append-only JSON-lines journal, fcntl-locked.

:class:`JournalStore` keeps everything governance writes — requests, the decision log,
states, audit and history entries — in **one file** (``governance.jsonl``). Every write is
**one line** appended under an exclusive ``fcntl.flock`` on that file. A reader replays
the lines into an in-memory index and catches up on new lines before every operation, so
several processes on one host can share the file.

What it guarantees, and why:

- **Atomic commits** (``JournalCommitter.atomic = True``). A whole
  :class:`~mutator_governance.GovernedCommit` — requests, decisions, state, history and
  audit — is checked against the caught-up index and then written as one line, while the
  lock is held. A line counts only once its final newline is on disk: a crash mid-write
  leaves a torn last line, which readers ignore and the next writer cuts off. So a commit
  lands whole or not at all, and no reader ever sees half of one.
- **Compare-and-set** on request revisions and state versions, checked under the lock;
  a request produces at most one state version; decisions are logged once per
  ``(request_id, sequence)``.
- **Durability** after every write (``os.fsync``; pass ``fsync=False`` to trade it away).
- Everything round-trips through the :class:`~mutator_governance.MutationRegistry`, like
  the shipped backends: what a reader gets back has been decoded from the file.

What it does not do: it is for one host (``flock`` does not work reliably over NFS), it
keeps the whole journal in memory in each process, the journal grows forever (no
compaction), every operation — reads too — is serialized, a complete line that cannot be
read (edited by hand, say) stops the store with the decoder's error rather than
:class:`~mutator_governance.StoredDataError`, and it has no clock of its own (governance
uses the host's). It needs a POSIX system for ``fcntl``. File work runs in a
worker thread through ``anyio.to_thread``, so it works on asyncio and trio.

``main()`` runs a governed request end to end on it (submit, approve, execute), then
reopens the file and shows that the request, its decision log and the state survived.
"""

from __future__ import annotations

import base64
import builtins
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.to_thread
import attrs

from mutator import (
    AuditEntry,
    ConcurrencyError,
    HistoryEntry,
    Mutation,
    MutationContext,
    MutationEngine,
    MutationHistory,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
)
from mutator.serialization import structure, unstructure
from mutator_governance import (
    DecisionCategory,
    DecisionRecord,
    Governance,
    GovernedCommit,
    MutationRegistry,
    MutationRequest,
    PendingReason,
    RequestAlreadyExistsError,
    RequestConcurrencyError,
    RequestDecision,
    RequestNotFoundError,
    RequestPage,
    RequestQuery,
    RequestStatus,
    RequestWrite,
    VersionedState,
    next_version,
)

T = TypeVar("T")
StatePut = tuple[str, Any, str | None, str | None]  # state id, state, expected version, request


@attrs.define
class _Index:
    """What the journal says so far, replayed line by line."""

    requests: dict[str, MutationRequest] = attrs.Factory(dict)
    logged: dict[str, dict[int, RequestDecision]] = attrs.Factory(dict)
    decision_log: list[DecisionRecord] = attrs.Factory(list)
    states: dict[str, VersionedState[Any]] = attrs.Factory(dict)
    produced: dict[tuple[str, str], str] = attrs.Factory(dict)
    audit: list[AuditEntry] = attrs.Factory(list)
    history: list[HistoryEntry] = attrs.Factory(list)


class _Journal:
    """The file, its lock and the index; every operation runs in a worker thread."""

    def __init__(self, path: Path, registry: MutationRegistry, *, fsync: bool) -> None:
        self.path = path
        self.registry = registry
        self.fsync = fsync
        self.index = _Index()
        self.offset = 0  # bytes of the file replayed into the index (whole lines only)
        self.thread_lock = threading.Lock()  # flock does not exclude threads sharing one fd
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)

    @contextmanager
    def locked(self, exclusive: bool) -> Iterator[_Index]:
        with self.thread_lock:
            fcntl.flock(self.fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                self._catch_up(cut_torn_tail=exclusive)
                yield self.index
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _catch_up(self, *, cut_torn_tail: bool) -> None:
        size = os.fstat(self.fd).st_size
        if size == self.offset:
            return
        chunk = os.pread(self.fd, size - self.offset, self.offset)
        complete = chunk[: chunk.rfind(b"\n") + 1]
        for line in complete.splitlines():
            self._apply(self.registry.loads(line))
        self.offset += len(complete)
        if cut_torn_tail and self.offset < size:  # a writer died mid-line: it never landed
            os.ftruncate(self.fd, self.offset)

    def append(self, entry: dict[str, Any]) -> None:
        """Write one entry as one line (caller holds the exclusive lock), then replay it."""
        line = memoryview((self.registry.dumps(entry) + "\n").encode())
        while line:
            line = line[os.write(self.fd, line) :]
        if self.fsync:
            os.fsync(self.fd)
        self._catch_up(cut_torn_tail=False)

    def _apply(self, entry: dict[str, Any]) -> None:
        index, registry, converter = self.index, self.registry, self.registry.converter
        for document in entry.get("requests", ()):
            request = registry.structure_request(document)
            index.requests[request.request_id] = request
        for request_id, documents in entry.get("decisions", ()):
            logged = index.logged.setdefault(request_id, {})
            for document in documents:
                decision = registry.structure_decision(document)
                logged[decision.sequence] = decision
                index.decision_log.append(DecisionRecord(request_id, decision))
        if (put := entry.get("state")) is not None:
            value = registry.structure_value(put["value"])
            index.states[put["id"]] = VersionedState(value, put["version"], put["request_id"])
            if put["request_id"] is not None:
                index.produced[(put["id"], put["request_id"])] = put["version"]
        index.history.extend(
            structure(converter, d, HistoryEntry) for d in entry.get("history", ())
        )
        index.audit.extend(structure(converter, d, AuditEntry) for d in entry.get("audit", ()))

    def write(
        self,
        requests: Sequence[RequestWrite] = (),
        state: StatePut | None = None,
        decisions: Sequence[tuple[str, Sequence[RequestDecision]]] = (),
        history: Sequence[HistoryEntry] = (),
        audit: Sequence[AuditEntry] = (),
    ) -> tuple[MutationRequest, ...]:
        """Check everything, then append it as one line; return the stored requests."""
        registry, converter = self.registry, self.registry.converter
        with self.locked(exclusive=True) as index:
            for write in requests:
                _check_revision(index, write.request.request_id, write.expected_revision)
            entry: dict[str, Any] = {}
            if state is not None:
                state_id, value, expected, request_id = state
                _check_state(index, state_id, expected, request_id)
                entry["state"] = {
                    "id": state_id,
                    "value": registry.unstructure_value(value),
                    "version": next_version(expected),
                    "request_id": request_id,
                }
            stored = tuple(attrs.evolve(w.request, revision=w.stored_revision) for w in requests)
            entry["requests"] = [registry.unstructure_request(r) for r in stored]
            new = [(rid, _unlogged(index, rid, ds)) for rid, ds in decisions]
            entry["decisions"] = [
                (rid, [registry.unstructure_decision(d) for d in ds]) for rid, ds in new if ds
            ]
            entry["history"] = [unstructure(converter, e) for e in history]
            entry["audit"] = [unstructure(converter, e) for e in audit]
            entry = {key: value for key, value in entry.items() if value}
            if entry:
                self.append(entry)
            return tuple(index.requests[r.request_id] for r in stored)

    async def read(self, query: Callable[[_Index], T]) -> T:
        def run() -> T:
            with self.locked(exclusive=False) as index:
                return query(index)

        return await anyio.to_thread.run_sync(run)

    async def run_write(self, **changes: Any) -> tuple[MutationRequest, ...]:
        return await anyio.to_thread.run_sync(lambda: self.write(**changes))


def _check_revision(index: _Index, request_id: str, expected: int | None) -> None:
    current = index.requests.get(request_id)
    if expected is None:
        if current is not None:
            raise RequestAlreadyExistsError(request_id)
    elif current is None:
        raise RequestNotFoundError(request_id)
    elif current.revision != expected:
        raise RequestConcurrencyError(request_id, expected, current.revision)


def _check_state(
    index: _Index, state_id: str, expected: str | None, request_id: str | None
) -> None:
    current = index.states.get(state_id)
    actual = current.version if current is not None else None
    if actual != expected:
        raise ConcurrencyError(
            f"state {state_id!r} is at version {actual!r}, expected {expected!r}",
            key=state_id,
            expected=expected,
            actual=actual,
        )
    produced = index.produced.get((state_id, request_id)) if request_id is not None else None
    if produced is not None:
        raise ConcurrencyError(
            f"request {request_id!r} already produced version {produced!r} of {state_id!r}",
            key=state_id,
            expected=None,
            actual=produced,
        )


def _unlogged(
    index: _Index, request_id: str, decisions: Sequence[RequestDecision]
) -> list[RequestDecision]:
    logged = index.logged.get(request_id, {})
    new: dict[int, RequestDecision] = {}
    for decision in decisions:
        if decision.sequence < 1:
            raise ValueError(f"decision {decision} of {request_id!r} has no sequence number")
        if decision.sequence not in logged:
            new.setdefault(decision.sequence, decision)
    return list(new.values())


def _order(request: MutationRequest) -> tuple[datetime, str]:
    return (request.created_at, request.request_id)


def _cursor_after(request: MutationRequest) -> str:
    position = json.dumps([request.created_at.isoformat(), request.request_id])
    return base64.urlsafe_b64encode(position.encode()).decode()


def _position(cursor: str) -> tuple[datetime, str]:
    try:
        created, request_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        moment = datetime.fromisoformat(created)
    except Exception as error:
        raise ValueError(f"not a request cursor: {cursor!r}") from error
    if not isinstance(request_id, str) or moment.tzinfo is None:
        raise ValueError(f"not a request cursor: {cursor!r}")
    return moment, request_id


class JournalRequestStore:
    """Requests from the journal (implements :class:`~mutator_governance.RequestStore`)."""

    def __init__(self, journal: _Journal) -> None:
        self._journal = journal

    async def create(self, request: MutationRequest) -> MutationRequest:
        (stored,) = await self._journal.run_write(requests=[RequestWrite(request, None, ())])
        return stored

    async def replace(self, request: MutationRequest, *, expected_revision: int) -> MutationRequest:
        write = RequestWrite(request, expected_revision, ())
        (stored,) = await self._journal.run_write(requests=[write])
        return stored

    async def get(self, request_id: str) -> MutationRequest | None:
        return await self._journal.read(lambda index: index.requests.get(request_id))

    async def by_state(self, state_id: str) -> Sequence[MutationRequest]:
        return await self._select(lambda r: r.state_id == state_id)

    async def pending(
        self, reason: PendingReason | None = None, *, state_id: str | None = None
    ) -> Sequence[MutationRequest]:
        return await self._select(
            lambda r: (
                r.status is RequestStatus.PENDING
                and (reason is None or r.pending_reason is reason)
                and (state_id is None or r.state_id == state_id)
            )
        )

    async def list(
        self, query: RequestQuery | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> RequestPage:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        after = _position(cursor) if cursor is not None else None
        wanted = query or RequestQuery()
        found = await self._select(
            lambda r: wanted.matches(r) and (after is None or _order(r) > after)
        )
        items = found[:limit]
        more = len(found) > limit
        return RequestPage(items, _cursor_after(items[-1]) if more else None)

    async def _select(
        self, keep: Callable[[MutationRequest], bool]
    ) -> builtins.list[MutationRequest]:
        found = await self._journal.read(lambda index: [*index.requests.values()])
        return sorted((r for r in found if keep(r)), key=_order)


class JournalDecisionHistory:
    """The decision log (implements :class:`~mutator_governance.DecisionHistory`)."""

    def __init__(self, journal: _Journal) -> None:
        self._journal = journal

    async def append(self, request_id: str, decisions: Sequence[RequestDecision]) -> None:
        await self._journal.run_write(decisions=[(request_id, decisions)])

    async def for_request(self, request_id: str) -> Sequence[RequestDecision]:
        def query(index: _Index) -> tuple[RequestDecision, ...]:
            logged = index.logged.get(request_id, {})
            return tuple(logged[sequence] for sequence in sorted(logged))

        return await self._journal.read(query)

    async def recent(
        self, limit: int = 50, *, category: DecisionCategory | None = None
    ) -> Sequence[DecisionRecord]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        log = await self._journal.read(lambda index: [*index.decision_log])
        records = [r for r in reversed(log) if category in (None, r.decision.category)]
        records.sort(key=lambda r: r.decision.timestamp, reverse=True)  # stable: ties newest
        return records[:limit]


class JournalStateStore:
    """Governed states (implements :class:`~mutator_governance.StateStore`)."""

    def __init__(self, journal: _Journal) -> None:
        self._journal = journal

    async def get(self, state_id: str) -> VersionedState[Any] | None:
        return await self._journal.read(lambda index: index.states.get(state_id))

    async def put(
        self,
        state_id: str,
        state: Any,
        *,
        expected_version: str | None = None,
        request_id: str | None = None,
    ) -> str:
        await self._journal.run_write(state=(state_id, state, expected_version, request_id))
        return next_version(expected_version)

    async def version_by_request(self, state_id: str, request_id: str) -> str | None:
        return await self._journal.read(lambda index: index.produced.get((state_id, request_id)))


class JournalAuditSink:
    """Audit entries in record order (implements :class:`mutator.AuditSink`)."""

    def __init__(self, journal: _Journal) -> None:
        self._journal = journal

    async def record(self, entry: AuditEntry) -> None:
        await self._journal.run_write(audit=[entry])

    async def entries(
        self,
        state_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEntry]:
        entries = await self._journal.read(lambda index: [*index.audit])
        return [
            e
            for e in entries
            if (state_id is None or e.state_id == state_id)
            and (since is None or e.executed_at >= since)
            and (until is None or e.executed_at <= until)
        ]


class JournalHistoryStore:
    """Each state's history in append order (implements :class:`mutator.HistoryStore`)."""

    def __init__(self, journal: _Journal) -> None:
        self._journal = journal

    async def append(self, entry: HistoryEntry) -> None:
        await self._journal.run_write(history=[entry])

    async def history(self, state_id: str) -> MutationHistory[Any]:
        return MutationHistory(state_id, await self._of(state_id))

    async def between(
        self, state_id: str, start: datetime, end: datetime
    ) -> Sequence[HistoryEntry]:
        return [e for e in await self._of(state_id) if start <= e.executed_at <= end]

    async def recent(self, state_id: str, limit: int) -> Sequence[HistoryEntry]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        return (await self._of(state_id))[::-1][:limit]

    async def _of(self, state_id: str) -> list[HistoryEntry]:
        return await self._journal.read(
            lambda index: [e for e in index.history if e.state_id == state_id]
        )


class JournalCommitter:
    """One governance operation, one journal line (implements ``ExecutionCommitter``).

    Atomic: every check and the single append happen under one exclusive lock, and a line
    lands only with its final newline, so a commit is never half visible.
    """

    atomic = True

    def __init__(self, journal: _Journal) -> None:
        self._journal = journal

    async def commit(self, commit: GovernedCommit) -> tuple[MutationRequest, ...]:
        state = commit.state
        return await self._journal.run_write(
            requests=commit.requests,
            state=(state.state_id, state.state, state.expected_version, state.request_id)
            if state is not None
            else None,
            decisions=[(w.request.request_id, w.new_decisions) for w in commit.requests],
            history=commit.history,
            audit=commit.audit,
        )


class JournalStore:
    """Every store on one journal file (a :class:`~mutator_governance.GovernanceStore`)."""

    def __init__(
        self, path: str | os.PathLike[str], *, registry: MutationRegistry, fsync: bool = True
    ):
        self._journal = _Journal(Path(path), registry, fsync=fsync)
        self.requests = JournalRequestStore(self._journal)
        self.decisions = JournalDecisionHistory(self._journal)
        self.states = JournalStateStore(self._journal)
        self.audit = JournalAuditSink(self._journal)
        self.history = JournalHistoryStore(self._journal)
        self.committer = JournalCommitter(self._journal)

    async def aclose(self) -> None:
        """Close the file; the store is unusable afterwards."""
        os.close(self._journal.fd)

    def governance(self, **options: Any) -> Governance:
        """A :class:`~mutator_governance.Governance` (and engine) keeping everything here."""
        engine = MutationEngine(audit=self.audit, history=self.history)
        return Governance(
            engine,
            registry=self._journal.registry,
            requests=self.requests,
            decisions=self.decisions,
            states=self.states,
            committer=self.committer,
            audit=self.audit,
            **options,
        )


# -- the example --------------------------------------------------------------------------


@attrs.frozen
class Quota:
    limit: int


@attrs.frozen
class RaiseQuota(Mutation[Quota]):
    by: int
    intent: ClassVar[MutationIntent] = MutationIntent("quota.raise", category="billing")

    def apply(self, state: Quota) -> Quota:
        return Quota(state.limit + self.by)


class FinanceApproves(MutationPolicy[Quota]):
    """Every quota raise needs someone from finance."""

    def evaluate(self, mutation: Any, state: Quota, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(
            PolicyRequirement.approval(role="finance"), reason="quotas cost money"
        )


def make_registry() -> MutationRegistry:
    registry = MutationRegistry()
    registry.register(RaiseQuota, name="quota.raise")
    registry.register_state(Quota, name="billing.Quota")
    return registry


async def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mutator-journal-") as directory:
        path = Path(directory) / "governance.jsonl"
        requester = MutationContext.user("dev", reason="launch needs headroom")
        finance = MutationContext.user("fiona", roles=["finance"])

        print("1) submit, approve and execute on a journal file")
        store = JournalStore(path, registry=make_registry())
        try:
            gov = store.governance()
            gov.engine.register_policy(FinanceApproves())
            await gov.states.put("quota:acme", Quota(100))
            request = await gov.submit(RaiseQuota(50), state_id="quota:acme", context=requester)
            reason = request.pending_reason.name if request.pending_reason else None
            print(f"  submitted: {request.status.name}, waiting for {reason}")
            approved = await gov.approve(request.request_id, context=finance)
            print(f"  approved by fiona: {approved.status.name}")
            done = await gov.execute(request.request_id)
            print(f"  executed={done.executed}, state version {done.resulting_version}")
        finally:
            await store.aclose()
        lines = len(path.read_bytes().splitlines())
        print(f"  the journal holds {lines} lines, one per write")

        print("2) reopen the file and read everything back")
        reopened = JournalStore(path, registry=make_registry())
        try:
            gov = reopened.governance()
            stored = await gov.get(request.request_id)
            logged = await gov.decisions.for_request(request.request_id)
            print(f"  request is {stored.status.name} at revision {stored.revision}")
            print(f"  decisions: {', '.join(d.code.name for d in logged)}")
            state = await gov.states.get("quota:acme")
            assert state is not None
            print(f"  quota:acme = {state.state} at version {state.version}")
            history = await gov.history("quota:acme")
            audit = await gov.audit.entries("quota:acme")
            print(f"  history entries: {len(history)}, audit entries: {len(audit)}")
            sweep = await gov.recover()
            print(f"  recover() repaired {sweep.repaired_decisions} decisions (atomic: none)")
            return {
                "status": stored.status,
                "limit": state.state.limit,
                "version": state.version,
                "log_matches": tuple(logged) == stored.decisions,
                "history": len(history),
                "audit": len(audit),
                "repaired": sweep.repaired_decisions,
                "atomic": reopened.committer.atomic,
            }
        finally:
            await reopened.aclose()


if __name__ == "__main__":
    anyio.run(main)
