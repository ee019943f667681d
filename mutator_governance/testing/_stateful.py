"""A hypothesis state machine that drives a request store and the in-memory reference alike."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar, TypeVar, cast

import attrs
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck
from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from mutator import (
    BlastRadius,
    BlastRadiusScope,
    MutationContext,
    MutationIntent,
    Severity,
    SideEffect,
)
from mutator.testing import assert_identical

from .._approvals import ApprovalRequirement
from .._enums import (
    ApprovalDecision,
    ApprovalStatus,
    DecisionCategory,
    LifecycleDecision,
    PendingReason,
    RequestStatus,
    ResolutionDecision,
)
from .._errors import RequestAlreadyExistsError, RequestConcurrencyError, RequestNotFoundError
from .._memory import InMemoryRequestStore
from .._query import RequestPage, RequestQuery, TagMatch
from .._request import MutationRequest
from ..protocols import ExpiryIndex, RequestStore
from ._contracts import BASE
from ._fixtures import (
    SAMPLE_MUTATION_TYPE,
    SAMPLE_STATE_TYPE,
    SamplePayload,
    sample_decision,
    sample_request,
)

__all__ = ["RequestStoreComparison", "make_store_comparison"]

T = TypeVar("T")

DEFAULT_SETTINGS = Settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
"""The settings every :class:`RequestStoreComparison` subclass's ``TestCase`` starts with."""

REQUEST_IDS = ("r0", "r1", "r2", "r3", "r4", "r5")
STATE_IDS = ("s:a", "s:b", "s:c")
STATE_TYPES = (SAMPLE_STATE_TYPE, "testing.Other")
MUTATION_TYPES = (SAMPLE_MUTATION_TYPE, "testing.other")
ACTOR_IDS = ("alice", "bob", "carol")
ACTOR_NAMES = ("Alice", "Bob")
CATEGORIES = ("testing", "billing", "access")
TAGS = ("pii", "prod", "batch")
EFFECT_TYPES = ("email", "webhook")
CONTRACTS = ("mutator.testing.sample", "other.contract")
"""The contract name of :class:`SamplePayload`, and one no side effect has."""
_OFFSETS = (
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-4)),
)
_MAX_PAGES = 100

created: Bundle[str] = Bundle("created")
"""Ids of requests that were created."""

moments = st.builds(
    lambda minute, tz: (BASE + timedelta(minutes=minute)).astimezone(tz),
    st.integers(0, 6),
    st.sampled_from(_OFFSETS),
)
"""A few instants (ties are common) written with different UTC offsets."""

_COMMON_VALUES = (None, True, 1, 1.0, "x", (0, "a"), [0])
"""Metadata values requests often hold and filters ask for: equal or not across types."""

metadata_values: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_characters="\x00"), max_size=6),
    st.tuples(st.integers(0, 3), st.text("ab", max_size=2)),
    st.lists(st.integers(0, 3), max_size=2),
)
"""JSON-like metadata values, tuples and lists (no NUL characters, which SQL text refuses)."""

metadata = st.dictionaries(
    st.sampled_from(("a", "b")), st.sampled_from(_COMMON_VALUES), max_size=2
) | st.dictionaries(st.sampled_from(("a", "b", "c")), metadata_values, max_size=3)
"""Request metadata: often the values filters ask for, else any JSON-like values."""

metadata_filters = st.dictionaries(
    st.sampled_from(("a", "b")), st.sampled_from(_COMMON_VALUES), min_size=1, max_size=2
)
"""Metadata filters that match some requests (True never equals 1, 1 equals 1.0)."""


def _some(values: Sequence[Any]) -> st.SearchStrategy[frozenset[Any]]:
    return st.frozensets(st.sampled_from(values), min_size=1, max_size=2)


intents = st.builds(
    lambda category, tags, meta, scope: MutationIntent(
        "testing.sample.set",
        category=category,
        tags=tags,
        metadata=meta,
        blast_radius=None if scope is None else BlastRadius(scope),
    ),
    st.sampled_from(CATEGORIES),
    st.frozensets(st.sampled_from(TAGS), max_size=3),
    st.dictionaries(st.sampled_from(("a", "b")), st.sampled_from(_COMMON_VALUES), max_size=2),
    st.none() | st.sampled_from(BlastRadiusScope),
)
"""Intents varying every intent filter's dimension (no blast radius too)."""

side_effects = st.lists(
    st.builds(
        lambda kind, severity, typed, requires_action: SideEffect(
            kind,
            severity=severity,
            data=SamplePayload("ops") if typed else {"plain": 1},
            requires_action=requires_action,
            timestamp=BASE,
        ),
        st.sampled_from(EFFECT_TYPES),
        st.sampled_from(Severity),
        st.booleans(),
        st.booleans(),
    ),
    max_size=2,
).map(tuple)
"""Up to two side effects, with a typed payload (a contract) or a plain one."""

decision_codes = st.sampled_from(
    (
        LifecycleDecision.SUBMITTED,
        LifecycleDecision.EXECUTED,
        ApprovalDecision.GRANTED,
        ResolutionDecision.VALIDATED,
    )
)
decision_logs = st.lists(decision_codes, max_size=2)
"""Decision codes (so decision categories) a request's log holds."""

_FILTERS: dict[str, st.SearchStrategy[Any]] = {
    "request_ids": _some((*REQUEST_IDS, "missing")),
    "state_ids": _some((*STATE_IDS, "s:missing")),
    "state_types": _some(STATE_TYPES),
    "mutation_types": _some((*MUTATION_TYPES, "missing.type")),
    "actor_ids": _some(ACTOR_IDS),
    "actor_names": _some(ACTOR_NAMES),
    "intent_categories": _some(CATEGORIES),
    "tags": _some(TAGS),
    "tag_match": st.sampled_from(TagMatch),
    "intent_metadata": metadata_filters,
    "min_blast_radius": st.sampled_from(BlastRadiusScope),
    "max_blast_radius": st.sampled_from(BlastRadiusScope),
    "metadata": metadata_filters,
    "statuses": st.frozensets(st.sampled_from(RequestStatus), min_size=1, max_size=3),
    "pending_reasons": _some(tuple(PendingReason)),
    "decision_categories": _some(tuple(DecisionCategory)),
    "created_from": moments,
    "created_to": moments,
    "updated_from": moments,
    "updated_to": moments,
    "side_effect_types": _some(EFFECT_TYPES),
    "side_effect_contracts": _some(CONTRACTS),
    "side_effect_severities": _some(tuple(Severity)),
    "side_effect_requires_action": st.booleans(),
}
"""A strategy per :class:`RequestQuery` field, over the values the drawn requests hold."""


@st.composite
def _queries(draw: st.DrawFn) -> RequestQuery:
    names = draw(st.lists(st.sampled_from(sorted(_FILTERS)), max_size=3, unique=True))
    return RequestQuery(**{name: draw(_FILTERS[name]) for name in names})


queries = _queries()
"""Request queries over every filter group, up to three fields at once (more would rarely
match anything)."""

request_specs = st.fixed_dictionaries(
    {
        "request_id": st.sampled_from(REQUEST_IDS),
        "state_id": st.sampled_from(STATE_IDS),
        "status": st.sampled_from(RequestStatus) | st.just(RequestStatus.PENDING),
        "pending_reason": st.sampled_from(PendingReason),
        "actor_id": st.sampled_from(ACTOR_IDS),
        "created_at": moments,
        "updated_after": st.integers(0, 3),
        "value": st.integers(-3, 3),
        "metadata": metadata,
    },
    optional={
        "state_type": st.sampled_from(STATE_TYPES),
        "mutation_type": st.sampled_from(MUTATION_TYPES),
        "actor": st.tuples(st.none() | st.sampled_from(ACTOR_IDS), st.sampled_from(ACTOR_NAMES)),
        "intent": intents,
        "side_effects": side_effects,
        "decisions": decision_logs,
        "expires_at": moments,
        "slots": st.lists(
            st.tuples(st.sampled_from(ApprovalStatus), st.none() | moments), max_size=2
        ),
    },
)
"""Arguments of :func:`_build` (printed compactly when hypothesis reports a failure)."""


def _build(spec: dict[str, Any]) -> MutationRequest:
    fields = dict(spec)
    created_at: datetime = fields["created_at"]
    if fields["status"] is not RequestStatus.PENDING:
        fields["pending_reason"] = None
    fields["updated_at"] = created_at + timedelta(minutes=fields.pop("updated_after"))
    if "actor" in fields:
        actor_id, actor_name = fields.pop("actor")
        fields["context"] = MutationContext(
            actor_id=actor_id, actor_name=actor_name, timestamp=created_at
        )
    if "decisions" in fields:
        fields["decisions"] = tuple(
            sample_decision(code, timestamp=created_at) for code in fields["decisions"]
        )
    if "slots" in fields:
        fields["approval_requirements"] = tuple(
            ApprovalRequirement(f"a{i}", role="sre", status=status, expires_at=expires_at)
            for i, (status, expires_at) in enumerate(fields.pop("slots"))
        )
    return sample_request(fields.pop("request_id"), **fields)


edits = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(RequestStatus),
        "pending_reason": st.none() | st.sampled_from(PendingReason),
        "metadata": metadata,
        "updated_at": moments,
        "actor_id": st.sampled_from(ACTOR_IDS),
        "value": st.integers(-3, 3),
        "mutation_type": st.sampled_from(MUTATION_TYPES),
        "intent": intents,
        "side_effects": side_effects,
        "decision": decision_codes,
        "expires_at": st.none() | moments,
    },
)
"""Changes applied with :func:`attrs.evolve` to the current request before a replace
(``decision`` appends one decision to its log)."""


@attrs.frozen
class _Outcome:
    value: Any = None
    error: Exception | None = None


class RequestStoreComparison(RuleBasedStateMachine):
    """Run random operations on a store and on :class:`InMemoryRequestStore`; compare them.

    Every rule (create, duplicate create, replace with the current or a stale revision,
    replace of an unknown id, get, by_state, pending, list with up to three random filters
    walked page by page, one list per :class:`RequestQuery` filter group, invalid list
    arguments, and ``due`` when the store is an :class:`~mutator_governance.ExpiryIndex`)
    runs against both stores; each must return identical
    values (:func:`~mutator_governance.testing.assert_identical`) or raise the same
    exception type. Cursors are opaque: each store is paged with its own cursors.

    Subclass it, implement :meth:`make_store` (return a new, empty store) and optionally
    :meth:`close_store`, and expose its ``TestCase`` to pytest::

        class SQLiteComparison(RequestStoreComparison):
            backend = "trio"  # the event loop the store runs on; default "asyncio"

            async def make_store(self) -> RequestStore:
                return await SQLiteRequestStore.open(":memory:", registry=sample_registry())

            async def close_store(self, store: RequestStore) -> None:
                await store.aclose()


        TestSQLiteComparison = SQLiteComparison.TestCase

    The store runs in an event loop of its own (a blocking portal started per example),
    because hypothesis drives rules synchronously. ``TestCase.settings`` starts at
    ``max_examples=30, stateful_step_count=20, deadline=None``; change it with the
    ``@hypothesis.settings(...)`` class decorator or ``Machine.TestCase.settings = ...``.
    :func:`make_store_comparison` builds such a subclass from a factory function.
    """

    backend: ClassVar[str] = "asyncio"
    """The anyio backend of the portal the stores run in: ``"asyncio"`` or ``"trio"``."""

    backend_options: ClassVar[Mapping[str, Any] | None] = None
    """Options for the backend (e.g. ``{"use_uvloop": True}``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.TestCase.settings = DEFAULT_SETTINGS

    def __init__(self) -> None:
        super().__init__()
        self._resources = contextlib.ExitStack()
        options = dict(self.backend_options) if self.backend_options is not None else None
        self.portal = self._resources.enter_context(start_blocking_portal(self.backend, options))
        try:
            self.store: RequestStore = self.portal.call(self.make_store)
            self._resources.callback(self.portal.call, self.close_store, self.store)
            self.reference: RequestStore = self.portal.call(self.make_reference)
        except BaseException:
            self._resources.close()
            raise

    async def make_store(self) -> RequestStore:
        """Return a new, empty store under test (override this)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement make_store()")

    async def close_store(self, store: RequestStore) -> None:
        """Release the store under test after an example (override when needed)."""

    async def make_reference(self) -> RequestStore:
        """The store the one under test is compared with: an :class:`InMemoryRequestStore`."""
        return InMemoryRequestStore()

    def teardown(self) -> None:
        self._resources.close()

    # -- running and comparing -------------------------------------------------------------

    def _outcome(
        self, store: RequestStore, operation: Callable[[RequestStore], Awaitable[T]]
    ) -> _Outcome:
        try:
            return _Outcome(value=self.portal.call(operation, store))
        except Exception as error:
            return _Outcome(error=error)

    def _compare(
        self,
        label: str,
        operation: Callable[[RequestStore], Awaitable[T]],
        normalize: Callable[[Any], Any] = lambda value: value,
    ) -> _Outcome:
        """Run ``operation`` on both stores and assert identical outcomes."""
        expected = self._outcome(self.reference, operation)
        actual = self._outcome(self.store, operation)
        if expected.error is not None:
            if actual.error is None:
                raise AssertionError(
                    f"{label}: the store returned {actual.value!r} where the reference "
                    f"raised {expected.error!r}"
                )
            if type(actual.error) is not type(expected.error):
                raise AssertionError(
                    f"{label}: the store raised {actual.error!r} where the reference "
                    f"raised {expected.error!r}"
                ) from actual.error
            _assert_same_error(label, expected.error, actual.error)
            return expected
        if actual.error is not None:
            raise AssertionError(
                f"{label}: the store raised {actual.error!r} where the reference returned "
                f"{expected.value!r}"
            ) from actual.error
        assert_identical(normalize(expected.value), normalize(actual.value), label)
        return expected

    def _current(self, request_id: str) -> MutationRequest | None:
        async def get(store: RequestStore) -> MutationRequest | None:
            return await store.get(request_id)

        return self.portal.call(get, self.reference)

    # -- rules -------------------------------------------------------------------------------

    @initialize(target=created, specs=st.lists(request_specs, max_size=6))
    def seed(self, specs: list[dict[str, Any]]) -> MultipleResults[str]:
        """Start with a few requests (some ids may repeat)."""
        ids = [spec["request_id"] for spec in specs if self._create(spec)]
        return multiple(*ids)

    @rule(target=created, spec=request_specs)
    def create(self, spec: dict[str, Any]) -> MultipleResults[str]:
        """Create a request; ids come from a small pool, so some are duplicates."""
        return multiple(spec["request_id"]) if self._create(spec) else multiple()

    def _create(self, spec: dict[str, Any]) -> bool:
        request = _build(spec)

        async def create(store: RequestStore) -> MutationRequest:
            return await store.create(request)

        return self._compare(f"create({request.request_id!r})", create).error is None

    @rule(request_id=created, value=st.integers(-3, 3))
    def create_duplicate(self, request_id: str, value: int) -> None:
        """Create a request whose id is taken: RequestAlreadyExistsError in both stores."""
        request = sample_request(request_id, created_at=BASE, value=value)

        async def create(store: RequestStore) -> MutationRequest:
            return await store.create(request)

        self._compare(f"create({request_id!r}) again", create)

    @rule(request_id=created, changes=edits, stale_by=st.sampled_from((0, 0, 0, -1, 1, 2)))
    def replace(self, request_id: str, changes: dict[str, Any], stale_by: int) -> None:
        """Replace a request with edits, with its current revision (``stale_by=0``) or not."""
        current = self._current(request_id)
        assert current is not None
        self._replace(current, changes, current.revision + stale_by)

    @rule(
        request_id=st.sampled_from(("missing", "r9")),
        changes=edits,
        expected_revision=st.integers(0, 2),
    )
    def replace_unknown(
        self, request_id: str, changes: dict[str, Any], expected_revision: int
    ) -> None:
        """Replace a request nobody created: RequestNotFoundError in both stores."""
        self._replace(sample_request(request_id, created_at=BASE), changes, expected_revision)

    def _replace(
        self, base: MutationRequest, changes: dict[str, Any], expected_revision: int
    ) -> None:
        fields = dict(changes)
        if "actor_id" in fields:
            fields["context"] = attrs.evolve(base.context, actor_id=fields.pop("actor_id"))
        if "value" in fields:
            fields["mutation"] = attrs.evolve(cast(Any, base.mutation), value=fields.pop("value"))
        if "decision" in fields:
            moment = fields.get("updated_at", base.updated_at)
            added = sample_decision(fields.pop("decision"), timestamp=moment)
            fields["decisions"] = (*base.decisions, added)
        changed = attrs.evolve(base, **fields)

        async def replace(store: RequestStore) -> MutationRequest:
            return await store.replace(changed, expected_revision=expected_revision)

        label = f"replace({base.request_id!r}, expected_revision={expected_revision})"
        self._compare(label, replace)

    @rule(request_id=created)
    def get_created(self, request_id: str) -> None:
        self._get(request_id)

    @rule(request_id=st.sampled_from((*REQUEST_IDS, "missing")))
    def get(self, request_id: str) -> None:
        self._get(request_id)

    def _get(self, request_id: str) -> None:
        async def get(store: RequestStore) -> MutationRequest | None:
            return await store.get(request_id)

        self._compare(f"get({request_id!r})", get)

    @rule(state_id=st.sampled_from((*STATE_IDS, "s:missing")))
    def by_state(self, state_id: str) -> None:
        async def by_state(store: RequestStore) -> Sequence[MutationRequest]:
            return await store.by_state(state_id)

        self._compare(f"by_state({state_id!r})", by_state, list)

    @rule(
        reason=st.none() | st.sampled_from(PendingReason),
        state_id=st.none() | st.sampled_from(STATE_IDS),
    )
    def pending(self, reason: PendingReason | None, state_id: str | None) -> None:
        async def pending(store: RequestStore) -> Sequence[MutationRequest]:
            return await store.pending(reason, state_id=state_id)

        self._compare(f"pending({reason}, state_id={state_id!r})", pending, list)

    @rule(now=moments, limit=st.integers(1, 4))
    def due(self, now: datetime, limit: int) -> None:
        """Pending requests past their deadline, when the store is an ExpiryIndex."""
        if not isinstance(self.store, ExpiryIndex):
            return

        async def due(store: RequestStore) -> Sequence[MutationRequest]:
            assert isinstance(store, ExpiryIndex)
            return await store.due(now=now, limit=limit)

        self._compare(f"due(now={now.isoformat()}, limit={limit})", due, list)

    @rule(query=st.none() | queries, limit=st.integers(1, 4))
    def list_pages(self, query: RequestQuery | None, limit: int) -> None:
        """Walk every page of a query in both stores, each with its own cursors."""
        self._walk(query, limit)

    @rule(data=st.data(), limit=st.integers(2, 6))
    def list_each_filter(self, data: st.DataObject, limit: int) -> None:
        """Walk one query per filter group, that group alone, so every group is compared
        in every example (a few random groups at once are drawn by ``list_pages``)."""
        for name in sorted(_FILTERS):
            if name == "tag_match":
                continue
            fields = {name: data.draw(_FILTERS[name], label=name)}
            if name == "tags":
                fields["tag_match"] = data.draw(_FILTERS["tag_match"], label="tag_match")
            self._walk(RequestQuery(**fields), limit)

    def _walk(self, query: RequestQuery | None, limit: int) -> None:
        cursors: dict[int, str | None] = {id(self.reference): None, id(self.store): None}

        async def page(store: RequestStore) -> RequestPage:
            result = await store.list(query, limit=limit, cursor=cursors[id(store)])
            cursors[id(store)] = result.next_cursor
            return result

        for number in range(_MAX_PAGES):
            outcome = self._compare(f"list({query!r}, limit={limit}) page {number}", page, _page)
            if outcome.error is not None or outcome.value.next_cursor is None:
                return
        raise AssertionError(f"list({query!r}, limit={limit}) does not terminate")

    @rule(
        limit=st.integers(-2, 3),
        cursor=st.sampled_from(("", "not a cursor", "W1sIHhdXQ==")) | st.none(),
    )
    def list_invalid(self, limit: int, cursor: str | None) -> None:
        """Invalid limits and cursors raise ValueError in both stores."""

        async def listing(store: RequestStore) -> RequestPage:
            return await store.list(limit=limit, cursor=cursor)

        self._compare(f"list(limit={limit}, cursor={cursor!r})", listing, _page)

    @invariant()
    def same_requests(self) -> None:
        """After every step both stores hold the same requests in the same order."""

        async def everything(store: RequestStore) -> RequestPage:
            return await store.list(limit=len(REQUEST_IDS) + 1)

        self._compare("list() of everything", everything, _page)


def _page(page: RequestPage) -> tuple[list[MutationRequest], bool]:
    return list(page.items), page.next_cursor is None


def _assert_same_error(label: str, expected: Exception, actual: Exception) -> None:
    if isinstance(expected, RequestConcurrencyError):
        assert isinstance(actual, RequestConcurrencyError)
        assert (actual.request_id, actual.expected_revision, actual.actual_revision) == (
            expected.request_id,
            expected.expected_revision,
            expected.actual_revision,
        ), f"{label}: {actual!r} does not match the reference's {expected!r}"
    elif isinstance(expected, RequestAlreadyExistsError | RequestNotFoundError):
        assert isinstance(actual, RequestAlreadyExistsError | RequestNotFoundError)
        assert actual.request_id == expected.request_id, (
            f"{label}: {actual!r} names another request than the reference's {expected!r}"
        )


def make_store_comparison(
    factory: Callable[[], RequestStore | Awaitable[RequestStore]],
    *,
    close: Callable[[RequestStore], Awaitable[None]] | None = None,
    backend: str = "asyncio",
    backend_options: Mapping[str, Any] | None = None,
    name: str = "StoreComparison",
    settings: Settings | None = None,
) -> type[RequestStoreComparison]:
    """A :class:`RequestStoreComparison` subclass that makes its stores with ``factory``.

    ``factory`` returns a new, empty store (or an awaitable of one; it is called inside the
    portal's event loop); ``close`` releases it after each example. Expose the result's
    ``TestCase`` to pytest::

        TestInMemoryComparison = make_store_comparison(InMemoryRequestStore).TestCase

    ``settings`` replaces the default ``TestCase`` settings.
    """
    backend_name = backend
    options = backend_options

    class StoreComparison(RequestStoreComparison):
        backend = backend_name
        backend_options = options

        async def make_store(self) -> RequestStore:
            made = factory()
            if isinstance(made, Awaitable):
                return await made
            return made

        async def close_store(self, store: RequestStore) -> None:
            if close is not None:
                await close(store)

    StoreComparison.__name__ = StoreComparison.__qualname__ = name
    test_case = StoreComparison.TestCase
    test_case.__name__ = test_case.__qualname__ = f"{name}.TestCase"
    if settings is not None:
        StoreComparison.TestCase.settings = settings
    return StoreComparison
