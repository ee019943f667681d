"""Hypothesis strategies shared by the test suite.

This module is the single home for strategies: tests import generators from here instead of
defining their own, so every suite draws states, keys and leaves from the same shapes.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import attrs
from hypothesis import strategies as st

__all__ = [
    "Box",
    "Point",
    "Tagged",
    "append_runs",
    "identifier_keys",
    "json_leaves",
    "json_states",
    "leaf_sets",
    "mapping_keys",
    "nested_states",
    "other_keys",
    "state_pairs",
]


@attrs.frozen
class Point:
    """A small frozen attrs state with two compared fields."""

    x: Any
    y: Any


@attrs.frozen
class Tagged:
    """A frozen attrs state whose ``note`` is excluded from equality, and so from diffs."""

    label: Any
    value: Any
    note: Any = attrs.field(default=None, eq=False)


@dataclasses.dataclass(frozen=True)
class Box:
    """A frozen dataclass state whose ``cache`` is excluded from comparison."""

    content: Any
    size: Any = 0
    cache: Any = dataclasses.field(default=None, compare=False)


def json_leaves() -> st.SearchStrategy[Any]:
    """Hashable JSON scalars: None, booleans, integers, finite floats and short text."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**40), max_value=2**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    )


def leaf_sets() -> st.SearchStrategy[frozenset[Any]]:
    """Small frozensets of JSON scalars."""
    return st.frozensets(json_leaves(), max_size=4)


def identifier_keys() -> st.SearchStrategy[str]:
    """Mapping keys that are Python identifiers, so they appear in paths after a dot."""
    return st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)


def other_keys() -> st.SearchStrategy[Any]:
    """Mapping keys that are not identifiers, so they appear in paths as ``[repr(key)]``."""
    return st.one_of(
        st.integers(min_value=-5, max_value=100),
        st.sampled_from(["a.b", "1st", "", "with space", "x[0]", "it's", 'q"uote', "a]b"]),
        st.text(max_size=5).filter(lambda text: not text.isidentifier()),
    )


def mapping_keys() -> st.SearchStrategy[Any]:
    """Mapping keys of both path styles, mostly identifiers."""
    return st.one_of(identifier_keys(), identifier_keys(), other_keys())


def json_states(
    keys: st.SearchStrategy[Any] | None = None, *, max_leaves: int = 12
) -> st.SearchStrategy[Any]:
    """Recursive dicts and lists of JSON scalars (the shapes plain JSON can hold)."""
    keys = identifier_keys() if keys is None else keys
    return st.recursive(
        json_leaves(),
        lambda children: st.one_of(
            st.dictionaries(keys, children, max_size=4),
            st.lists(children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def nested_states(
    keys: st.SearchStrategy[Any] | None = None, *, max_leaves: int = 12
) -> st.SearchStrategy[Any]:
    """Recursive mixes of dicts, lists, tuples, frozensets, attrs classes and a dataclass."""
    keys = identifier_keys() if keys is None else keys
    return st.recursive(
        st.one_of(json_leaves(), leaf_sets()),
        lambda children: st.one_of(
            st.dictionaries(keys, children, max_size=4),
            st.lists(children, max_size=4),
            st.lists(children, max_size=3).map(tuple),
            st.builds(Point, children, children),
            st.builds(Tagged, children, children, json_leaves()),
            st.builds(Box, children, children, json_leaves()),
        ),
        max_leaves=max_leaves,
    )


_Pair = tuple[Any, Any]

_ALL_KINDS = frozenset({"dict", "list", "tuple", "set", "attrs", "dataclass"})


def state_pairs(
    keys: st.SearchStrategy[Any] | None = None,
    *,
    kinds: frozenset[str] = _ALL_KINDS,
    reshape: bool = True,
    max_leaves: int = 16,
) -> st.SearchStrategy[_Pair]:
    """Pairs ``(old, new)`` of related states, built side by side.

    Every container appears on both sides with child pairs; each child is changed, shared
    (the same object on both sides, as after ``attrs.evolve``) or an equal deep copy. Leaf
    pairs always differ. With ``reshape`` the pair may also differ in shape: dict keys on one
    side only, sequences of different lengths, and unrelated values (usually of different
    types). ``kinds`` limits the containers to some of ``dict``, ``list``, ``tuple``, ``set``,
    ``attrs`` and ``dataclass``.
    """
    keys = mapping_keys() if keys is None else keys
    leaves = [st.tuples(json_leaves(), json_leaves()).filter(lambda pair: pair[0] != pair[1])]
    if "set" in kinds:
        leaves.append(st.tuples(leaf_sets(), leaf_sets()))
    if kinds <= {"dict", "list"}:
        unrelated = json_states(keys, max_leaves=6)
    else:
        unrelated = nested_states(keys, max_leaves=6)

    def extend(pairs: st.SearchStrategy[_Pair]) -> st.SearchStrategy[_Pair]:
        children = st.tuples(pairs, st.sampled_from(_CHILD_MODES)).map(_child)
        options: list[st.SearchStrategy[_Pair]] = []
        if "dict" in kinds:
            sides = st.sampled_from(["both", "both", "old", "new"] if reshape else ["both"])
            options.append(
                st.dictionaries(keys, st.tuples(sides, children), max_size=4).map(_dict_pair)
            )
        if "list" in kinds:
            options.append(_sequence_pairs(children, reshape, list))
        if "tuple" in kinds:
            options.append(_sequence_pairs(children, reshape, tuple))
        if "attrs" in kinds:
            options.append(st.builds(_point_pair, children, children))
            options.append(
                st.builds(_tagged_pair, children, children, json_leaves(), json_leaves())
            )
        if "dataclass" in kinds:
            options.append(st.builds(_box_pair, children, children, json_leaves(), json_leaves()))
        if reshape:
            options.append(st.tuples(unrelated, unrelated))
        return st.one_of(options)

    return st.recursive(st.one_of(leaves), extend, max_leaves=max_leaves)


_CHILD_MODES = ("changed", "changed", "shared", "copied")


def _child(drawn: tuple[_Pair, str]) -> _Pair:
    (old, new), mode = drawn
    if mode == "shared":
        return old, old
    if mode == "copied":
        return old, copy.deepcopy(old)
    return old, new


def _dict_pair(entries: dict[Any, tuple[str, _Pair]]) -> _Pair:
    old = {key: pair[0] for key, (side, pair) in entries.items() if side != "new"}
    new = {key: pair[1] for key, (side, pair) in entries.items() if side != "old"}
    return old, new


def _sequence_pairs(
    children: st.SearchStrategy[_Pair], reshape: bool, factory: type[Any]
) -> st.SearchStrategy[_Pair]:
    def build(common: list[_Pair], tail: list[_Pair], tail_in_new: bool) -> _Pair:
        old = [pair[0] for pair in common]
        new = [pair[1] for pair in common]
        (new if tail_in_new else old).extend(pair[0] for pair in tail)
        return factory(old), factory(new)

    tails = st.lists(children, max_size=3) if reshape else st.just([])
    return st.builds(build, st.lists(children, max_size=4), tails, st.booleans())


def _point_pair(x: _Pair, y: _Pair) -> _Pair:
    return Point(x[0], y[0]), Point(x[1], y[1])


def _tagged_pair(label: _Pair, value: _Pair, old_note: Any, new_note: Any) -> _Pair:
    return Tagged(label[0], value[0], old_note), Tagged(label[1], value[1], new_note)


def _box_pair(content: _Pair, size: _Pair, old_cache: Any, new_cache: Any) -> _Pair:
    return Box(content[0], size[0], old_cache), Box(content[1], size[1], new_cache)


# --------------------------------------------------------------------------- governance

from datetime import UTC, datetime, timedelta, timezone  # noqa: E402

from mutator import MutationContext, PolicyRequirement  # noqa: E402
from mutator_governance import (  # noqa: E402
    ApprovalDecision,
    ApprovalRequirement,
    ApprovalStatus,
    LifecycleDecision,
    MutationRequest,
    PendingReason,
    RejectionReason,
    RequestDecision,
    RequestStatus,
    ResolutionDecision,
)
from mutator_governance.testing import sample_request  # noqa: E402

aware_datetimes = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(min_value=-12 * 60, max_value=14 * 60),
)
"""Timezone-aware datetimes with assorted UTC offsets."""

metadata_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | aware_datetimes,
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(st.text(alphabet="abcxyz", min_size=1, max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)
"""Values found in metadata: JSON-like, plus tuples and aware datetimes."""

metadata = st.dictionaries(
    st.text(alphabet="abcdef_", min_size=1, max_size=6), metadata_values, max_size=4
)

contexts = st.builds(
    MutationContext.user,
    st.text(alphabet="abcdefgh", min_size=1, max_size=6),
    reason=st.none() | st.text(max_size=10),
    roles=st.lists(st.sampled_from(["finance", "sre", "admin"]), max_size=2, unique=True),
    timestamp=aware_datetimes,
    metadata=metadata,
)

decision_codes = st.sampled_from([*LifecycleDecision, *ApprovalDecision, *ResolutionDecision])

decisions = st.builds(
    RequestDecision,
    decision_codes,
    contexts,
    st.none() | st.text(max_size=10),
    aware_datetimes,
    metadata,
)

approval_requirements = st.builds(
    ApprovalRequirement,
    approval_id=st.uuids().map(lambda u: u.hex),
    step=st.integers(min_value=1, max_value=3),
    approver_id=st.none() | st.sampled_from(["alice", "bob"]),
    role=st.none() | st.just("finance"),
    required_approvals=st.integers(min_value=1, max_value=3),
    expires_at=st.none() | aware_datetimes,
    status=st.sampled_from(ApprovalStatus),
    decided_at=st.none() | aware_datetimes,
    rejection=st.none() | st.builds(RejectionReason, st.text(max_size=5), st.text(max_size=10)),
)

policy_requirements = st.builds(
    PolicyRequirement.approval,
    st.sampled_from(["alice", "bob", "carol"]),
    step=st.integers(min_value=1, max_value=3),
    expires_at=st.none() | aware_datetimes,
    reason=st.none() | st.text(max_size=10),
)


@st.composite
def requests(draw: st.DrawFn) -> MutationRequest:
    """Generated requests over the testing package's sample mutation, every field varied."""
    status = draw(st.sampled_from(RequestStatus))
    created = draw(aware_datetimes)
    request = sample_request(
        draw(st.uuids()).hex,
        status=status,
        pending_reason=draw(st.sampled_from(PendingReason))
        if status is RequestStatus.PENDING
        else None,
        actor_id=draw(st.sampled_from(["alice", "bob"])),
        created_at=created,
        updated_at=created
        + draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=9))),
        value=draw(st.integers()),
        metadata=draw(metadata),
        context=draw(contexts),
        decisions=tuple(draw(st.lists(decisions, max_size=3))),
        approval_requirements=tuple(draw(st.lists(approval_requirements, max_size=3))),
        policy_requirements=tuple(draw(st.lists(policy_requirements, max_size=2))),
        revision=draw(st.integers(min_value=0, max_value=10**6)),
        expected_state_version=draw(st.none() | st.integers(min_value=1).map(str)),
        expires_at=draw(st.none() | aware_datetimes),
    )
    return attrs.evolve(request, trace_context=draw(trace_contexts))


trace_contexts = st.just({}) | st.builds(
    lambda trace, span, state: {"traceparent": f"00-{trace:032x}-{span:016x}-01", **state},
    st.integers(min_value=1, max_value=2**128 - 1),
    st.integers(min_value=1, max_value=2**64 - 1),
    st.just({}) | st.just({"tracestate": "vendor=value"}),
)
"""W3C trace contexts as governance stores them on a request (or none)."""


# --------------------------------------------------------------------------- queries

from mutator import (  # noqa: E402
    BlastRadius,
    BlastRadiusScope,
    MutationIntent,
    Severity,
    SideEffect,
)
from mutator_governance import DecisionCategory, RequestQuery, TagMatch  # noqa: E402
from mutator_governance.testing import SamplePayload  # noqa: E402

QUERY_BASE = datetime(2031, 5, 1, 9, 0, tzinfo=UTC)
"""Where the query corpus's request times start."""

QUERY_STATES = ("s:a", "s:b", "s:c")
QUERY_ACTORS = ("alice", "bob", "carol")
QUERY_ACTOR_NAMES = ("Alice", "Bob")
QUERY_STATE_TYPES = ("testing.SampleState", "testing.Other")
QUERY_CATEGORIES = ("billing", "access", "testing")
QUERY_TAGS = ("pii", "prod", "batch")
QUERY_EFFECT_TYPES = ("email", "webhook")
QUERY_MUTATION_TYPES = ("testing.sample", "testing.other")


def query_corpus(size: int = 40) -> list[MutationRequest]:
    """A deterministic, varied set of requests for comparing query answers across stores.

    Every query dimension takes several values, including None where the model allows it
    (no actor id or name, no pending reason, no blast radius, no side effects); the
    mutation type is a name the sample registry does not know for one request in five
    (stores keep ``mutation_type`` as given).
    """
    corpus = []
    for n in range(size):
        status = list(RequestStatus)[n % len(RequestStatus)]
        created = QUERY_BASE + timedelta(minutes=n // 3)  # ties on created_at
        actor = QUERY_ACTORS[n % 3] if n % 7 else None
        name = QUERY_ACTOR_NAMES[n % 2] if n % 5 else None
        context = MutationContext(actor_id=actor, actor_name=name, timestamp=created)
        intent = MutationIntent(
            "testing.sample.set",
            category=QUERY_CATEGORIES[n % 3],
            tags=frozenset(t for i, t in enumerate(QUERY_TAGS) if (n >> i) & 1),
            metadata={"team": "a" if n % 2 else "b", "weight": n % 3}
            if n % 4
            else {"flag": n % 8 == 0},
            blast_radius=BlastRadius(list(BlastRadiusScope)[n % 4]) if n % 6 else None,
        )
        effects = []
        if n % 3:
            data = SamplePayload("ops") if n % 2 else {"plain": n}
            effects.append(
                SideEffect(
                    QUERY_EFFECT_TYPES[n % 2],
                    severity=list(Severity)[n % 4],
                    data=data,
                    requires_action=n % 5 == 0,
                    timestamp=created,
                )
            )
        decisions = [RequestDecision(LifecycleDecision.SUBMITTED, context, None, created)]
        if n % 2:
            decided = created + timedelta(minutes=1)
            decisions.append(RequestDecision(ApprovalDecision.GRANTED, context, None, decided))
        if n % 3 == 0:
            decisions.append(RequestDecision(ResolutionDecision.VALIDATED, context, None, created))
        if status.is_terminal and status is not RequestStatus.FAILED:
            code = LifecycleDecision[status.name]
            final = created + timedelta(minutes=n % 5)
            decisions.append(RequestDecision(code, context, None, final))
        approvals = []
        if n % 4 != 3:
            approvals.append(
                ApprovalRequirement(f"a{n:02d}-1", step=1, approver_id=("carol", "dave")[n % 2])
            )
            approvals.append(
                ApprovalRequirement(
                    f"a{n:02d}-0",
                    step=1 + n % 2,
                    approver_id="dave" if n % 5 == 0 else None,
                    role=None if n % 5 == 0 else "sre",
                    status=list(ApprovalStatus)[n % len(ApprovalStatus)],
                )
            )
        corpus.append(
            sample_request(
                f"q{n:02d}",
                state_id=QUERY_STATES[n % 3],
                state_type=QUERY_STATE_TYPES[n % 2],
                mutation_type=QUERY_MUTATION_TYPES[n % 5 == 2],
                status=status,
                pending_reason=list(PendingReason)[n % 7]
                if status is RequestStatus.PENDING
                else None,
                created_at=created,
                updated_at=created + timedelta(minutes=n % 5),
                metadata={"env": ("prod", "dev")[n % 2], "n": n % 4} if n % 3 else {},
                context=context,
                intent=intent,
                side_effects=tuple(effects),
                decisions=tuple(decisions),
                approval_requirements=tuple(approvals),
            )
        )
    return corpus


_query_moments = st.integers(0, 16).map(lambda m: QUERY_BASE + timedelta(minutes=m))


def _some(values: Any) -> st.SearchStrategy[frozenset[Any]]:
    return st.frozensets(st.sampled_from(values), min_size=1, max_size=2)


QUERY_FILTERS: dict[str, st.SearchStrategy[Any]] = {
    "request_ids": _some([f"q{n:02d}" for n in range(0, 40, 3)] + ["missing"]),
    "state_ids": _some(QUERY_STATES),
    "state_types": _some(QUERY_STATE_TYPES),
    "mutation_types": _some((*QUERY_MUTATION_TYPES, "missing.type")),
    "actor_ids": _some(QUERY_ACTORS),
    "actor_names": _some(QUERY_ACTOR_NAMES),
    "intent_categories": _some(QUERY_CATEGORIES),
    "tags": _some(QUERY_TAGS),
    "tag_match": st.sampled_from(TagMatch),
    "intent_metadata": st.sampled_from(
        [{"team": "a"}, {"team": "b", "weight": 1}, {"flag": True}, {"flag": 1}, {"nope": 0}]
    ),
    "min_blast_radius": st.sampled_from(BlastRadiusScope),
    "max_blast_radius": st.sampled_from(BlastRadiusScope),
    "metadata": st.sampled_from([{"env": "prod"}, {"env": "dev", "n": 2}, {"n": 0}]),
    "statuses": _some(list(RequestStatus)),
    "pending_reasons": _some(list(PendingReason)),
    "decision_categories": _some(list(DecisionCategory)),
    "created_from": _query_moments,
    "created_to": _query_moments,
    "updated_from": _query_moments,
    "updated_to": _query_moments,
    "side_effect_types": _some(QUERY_EFFECT_TYPES),
    "side_effect_contracts": _some(("mutator.testing.sample", "other.contract")),
    "side_effect_severities": _some(list(Severity)),
    "side_effect_requires_action": st.booleans(),
}


@st.composite
def request_queries(draw: st.DrawFn, max_filters: int = 3) -> RequestQuery:
    """Request queries over :func:`query_corpus`'s vocabulary with up to ``max_filters``."""
    names = draw(
        st.lists(st.sampled_from(sorted(QUERY_FILTERS)), max_size=max_filters, unique=True)
    )
    return RequestQuery(**{name: draw(QUERY_FILTERS[name]) for name in names})


def append_runs() -> st.SearchStrategy[tuple[int, list[str]]]:
    """A store bound (1-8) and the state ids of a run of appends over a few states."""
    return st.tuples(
        st.integers(min_value=1, max_value=8),
        st.lists(st.sampled_from(["a", "b", "c"]), max_size=60),
    )
