"""Request queries, pages and cursors shared by every store.

:class:`RequestQuery` holds the reference's filter groups (scope, actor, intent, metadata,
lifecycle, time range, side effects) as flat keyword fields. Its :meth:`RequestQuery.matches`
is the reference predicate: every backend must return exactly the requests it accepts.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import attrs

from mutator import BlastRadiusScope, Severity, SideEffect
from mutator.values import EMPTY_MAPPING, freeze_mapping, optional_aware, to_tuple

from ._arguments import check_limit
from ._decisions import RequestDecision
from ._enums import DecisionCategory, PendingReason, RequestStatus
from ._request import MutationRequest

__all__ = ["DecisionRecord", "RequestPage", "RequestQuery", "TagMatch", "VersionedState"]


class TagMatch(enum.Enum):
    """How a tag filter matches an intent's tags: any listed tag, or all of them."""

    ANY = "any"
    ALL = "all"


def to_set(value: Iterable[Any] | None) -> frozenset[Any]:
    """A filter set from an iterable, a lone string or enum member (one element) or None."""
    if value is None:
        return frozenset()
    if isinstance(value, str | enum.Enum):
        return frozenset((value,))
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        return value  # type: ignore[return-value]  # reported by the field's validator
    return frozenset(value)


def names(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: a frozenset of non-blank strings."""
    if not isinstance(value, frozenset):
        raise TypeError(f"{attribute.name} must be a set of strings, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{attribute.name} must hold non-blank strings, got {item!r}")


def members(kind: type[enum.Enum]) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """attrs validator: a frozenset of ``kind`` members."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, frozenset):
            raise TypeError(
                f"{attribute.name} must be a set of {kind.__name__} members, got {value!r}"
            )
        for item in value:
            if not isinstance(item, kind):
                raise TypeError(f"{attribute.name} must hold {kind.__name__} members, got {item!r}")

    return check


def metadata_filter(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy of a metadata filter; keys must be strings."""
    if value is None:
        return EMPTY_MAPPING
    if not isinstance(value, Mapping):
        raise TypeError(f"a metadata filter must be a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"metadata filter keys must be strings, got {key!r}")
    return freeze_mapping(value)


def _optional_enum(kind: type[enum.Enum]) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{attribute.name} must be a {kind.__name__} or None, got {value!r}")

    return check


def _optional_bool(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be True, False or None, got {value!r}")


def _tag_match(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, TagMatch):
        raise TypeError(f"tag_match must be a TagMatch, got {value!r}")


def _same(actual: Any, wanted: Any) -> bool:
    """Metadata equality: ``==``, except that a bool never equals a number."""
    if isinstance(actual, bool) is not isinstance(wanted, bool):
        return False
    try:
        return bool(actual == wanted)
    except Exception:
        return False


def metadata_matches(metadata: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Every key of ``wanted`` is present in ``metadata`` with an equal value."""
    missing = object()
    return all(_same(metadata.get(key, missing), value) for key, value in wanted.items())


@attrs.frozen
class RequestQuery:
    """Filters for listing requests, in the reference's groups.

    Every filter is optional: an empty set, an empty mapping or None means "no constraint".
    Groups are AND-ed; a non-empty set means membership; a request value that is None
    (actor id or name, pending reason, blast radius) never matches a non-empty filter.
    Metadata filters need every key present with an equal value. Time and blast-radius
    bounds are inclusive. Results are ordered by ``created_at`` then ``request_id``.

    - scope: ``request_ids``, ``state_ids``, ``state_types``, ``mutation_types`` (the
      registered names);
    - actor (the requester): ``actor_ids``, ``actor_names``;
    - intent: ``intent_categories``, ``tags`` (with ``tag_match``), ``intent_metadata``,
      ``min_blast_radius`` / ``max_blast_radius`` (on :class:`~mutator.BlastRadiusScope`);
    - request ``metadata``;
    - lifecycle: ``statuses``, ``pending_reasons``, ``decision_categories`` (any decision
      of a listed category);
    - time: ``created_from``/``created_to``, ``updated_from``/``updated_to``;
    - side effects (one side effect must satisfy every given criterion):
      ``side_effect_types``, ``side_effect_contracts`` (typed-payload contract names),
      ``side_effect_severities``, ``side_effect_requires_action``.
    """

    statuses: frozenset[RequestStatus] = attrs.field(
        default=frozenset(), converter=to_set, validator=members(RequestStatus)
    )
    pending_reasons: frozenset[PendingReason] = attrs.field(
        default=frozenset(), converter=to_set, validator=members(PendingReason)
    )
    state_ids: frozenset[str] = attrs.field(default=frozenset(), converter=to_set, validator=names)
    actor_ids: frozenset[str] = attrs.field(default=frozenset(), converter=to_set, validator=names)
    created_from: datetime | None = attrs.field(default=None, validator=optional_aware)
    created_to: datetime | None = attrs.field(default=None, validator=optional_aware)
    updated_from: datetime | None = attrs.field(default=None, validator=optional_aware)
    updated_to: datetime | None = attrs.field(default=None, validator=optional_aware)
    request_ids: frozenset[str] = attrs.field(
        default=frozenset(), converter=to_set, validator=names
    )
    state_types: frozenset[str] = attrs.field(
        default=frozenset(), converter=to_set, validator=names
    )
    mutation_types: frozenset[str] = attrs.field(
        default=frozenset(), converter=to_set, validator=names
    )
    actor_names: frozenset[str] = attrs.field(
        default=frozenset(), converter=to_set, validator=names
    )
    intent_categories: frozenset[str] = attrs.field(
        default=frozenset(), converter=to_set, validator=names
    )
    tags: frozenset[str] = attrs.field(default=frozenset(), converter=to_set, validator=names)
    tag_match: TagMatch = attrs.field(default=TagMatch.ANY, validator=_tag_match)
    intent_metadata: Mapping[str, Any] = attrs.field(
        factory=dict, converter=metadata_filter, hash=False
    )
    min_blast_radius: BlastRadiusScope | None = attrs.field(
        default=None, validator=_optional_enum(BlastRadiusScope)
    )
    max_blast_radius: BlastRadiusScope | None = attrs.field(
        default=None, validator=_optional_enum(BlastRadiusScope)
    )
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=metadata_filter, hash=False)
    decision_categories: frozenset[DecisionCategory] = attrs.field(
        default=frozenset(), converter=to_set, validator=members(DecisionCategory)
    )
    side_effect_types: frozenset[str] = attrs.field(
        default=frozenset(), converter=to_set, validator=names
    )
    side_effect_contracts: frozenset[str] = attrs.field(
        default=frozenset(), converter=to_set, validator=names
    )
    side_effect_severities: frozenset[Severity] = attrs.field(
        default=frozenset(), converter=to_set, validator=members(Severity)
    )
    side_effect_requires_action: bool | None = attrs.field(default=None, validator=_optional_bool)

    # -- presets ---------------------------------------------------------------------------

    @classmethod
    def pending(cls, **filters: Any) -> RequestQuery:
        """Pending requests (plus any further ``filters``)."""
        return cls(**{"statuses": {RequestStatus.PENDING}, **filters})

    @classmethod
    def pending_approval_queue(cls, **filters: Any) -> RequestQuery:
        """Requests pending for approval that have approval decisions (the approval queue)."""
        preset: dict[str, Any] = {
            "statuses": {RequestStatus.PENDING},
            "pending_reasons": {PendingReason.APPROVAL},
            "decision_categories": {DecisionCategory.APPROVAL},
        }
        return cls(**{**preset, **filters})

    @classmethod
    def recent_approvals(cls, **filters: Any) -> RequestQuery:
        """Approved or executed requests that went through approvals."""
        preset: dict[str, Any] = {
            "statuses": {RequestStatus.APPROVED, RequestStatus.EXECUTED},
            "decision_categories": {DecisionCategory.APPROVAL},
        }
        return cls(**{**preset, **filters})

    # -- the reference predicate -----------------------------------------------------------

    def matches(self, request: MutationRequest) -> bool:
        """The reference predicate every backend's query must agree with."""
        return (
            self._scope(request)
            and self._actor(request)
            and self._intent(request)
            and metadata_matches(request.metadata, self.metadata)
            and self._lifecycle(request)
            and self._times(request)
            and self._side_effects(request)
        )

    def predicate(self) -> Callable[[MutationRequest], bool]:
        """:meth:`matches`, reduced to the filter groups this query sets.

        A scan builds it once and calls it per request, so it pays only for the
        constraints the query has (its answer is always :meth:`matches`'s).
        """
        checks: list[Callable[[MutationRequest], bool]] = []
        if self.request_ids or self.state_ids or self.state_types or self.mutation_types:
            checks.append(self._scope)
        if self.actor_ids or self.actor_names:
            checks.append(self._actor)
        if (
            self.intent_categories
            or self.tags
            or self.intent_metadata
            or self.min_blast_radius is not None
            or self.max_blast_radius is not None
        ):
            checks.append(self._intent)
        if self.metadata:
            wanted = self.metadata
            checks.append(lambda request: metadata_matches(request.metadata, wanted))
        if self.pending_reasons or self.decision_categories:
            checks.append(self._lifecycle)
        elif self.statuses:
            statuses = tuple(self.statuses)  # members compare by identity: no enum hashing
            checks.append(lambda request: request.status in statuses)
        if (
            self.created_from is not None
            or self.created_to is not None
            or self.updated_from is not None
            or self.updated_to is not None
        ):
            checks.append(self._times)
        if (
            self.side_effect_types
            or self.side_effect_contracts
            or self.side_effect_severities
            or self.side_effect_requires_action is not None
        ):
            checks.append(self._side_effects)
        if not checks:
            return _matches_all
        if len(checks) == 1:
            return checks[0]
        return lambda request: all(check(request) for check in checks)

    def _scope(self, request: MutationRequest) -> bool:
        return (
            (not self.request_ids or request.request_id in self.request_ids)
            and (not self.state_ids or request.state_id in self.state_ids)
            and (not self.state_types or request.state_type in self.state_types)
            and (not self.mutation_types or request.mutation_type in self.mutation_types)
        )

    def _actor(self, request: MutationRequest) -> bool:
        context = request.context
        return (not self.actor_ids or context.actor_id in self.actor_ids) and (
            not self.actor_names or context.actor_name in self.actor_names
        )

    def _intent(self, request: MutationRequest) -> bool:
        intent = request.intent
        if self.intent_categories and intent.category not in self.intent_categories:
            return False
        if self.tags:
            if self.tag_match is TagMatch.ALL:
                if not self.tags <= intent.tags:
                    return False
            elif self.tags.isdisjoint(intent.tags):
                return False
        if not metadata_matches(intent.metadata, self.intent_metadata):
            return False
        if self.min_blast_radius is None and self.max_blast_radius is None:
            return True
        if intent.blast_radius is None:
            return False
        scope = intent.blast_radius.scope
        if self.min_blast_radius is not None and scope < self.min_blast_radius:
            return False
        return self.max_blast_radius is None or scope <= self.max_blast_radius

    def _lifecycle(self, request: MutationRequest) -> bool:
        if self.statuses and request.status not in self.statuses:
            return False
        if self.pending_reasons and request.pending_reason not in self.pending_reasons:
            return False
        return not self.decision_categories or any(
            d.category in self.decision_categories for d in request.decisions
        )

    def _times(self, request: MutationRequest) -> bool:
        created, updated = request.created_at, request.updated_at
        return (
            (self.created_from is None or created >= self.created_from)
            and (self.created_to is None or created <= self.created_to)
            and (self.updated_from is None or updated >= self.updated_from)
            and (self.updated_to is None or updated <= self.updated_to)
        )

    def _side_effects(self, request: MutationRequest) -> bool:
        if not (
            self.side_effect_types
            or self.side_effect_contracts
            or self.side_effect_severities
            or self.side_effect_requires_action is not None
        ):
            return True
        return any(self._side_effect(effect) for effect in request.side_effects)

    def _side_effect(self, effect: SideEffect) -> bool:
        if self.side_effect_types and effect.type not in self.side_effect_types:
            return False
        if self.side_effect_contracts:
            contract = effect.contract
            if contract is None or contract.name not in self.side_effect_contracts:
                return False
        if self.side_effect_severities and effect.severity not in self.side_effect_severities:
            return False
        wanted = self.side_effect_requires_action
        return wanted is None or effect.requires_action is wanted


def _matches_all(request: MutationRequest) -> bool:
    return True


@attrs.frozen
class RequestPage:
    """One page of requests and the cursor of the next page (None on the last page)."""

    items: tuple[MutationRequest, ...] = attrs.field(converter=to_tuple)
    next_cursor: str | None = None


@attrs.frozen
class DecisionRecord:
    """A decision together with the request it belongs to."""

    request_id: str
    decision: RequestDecision


StateT = TypeVar("StateT")


@attrs.frozen
class VersionedState(Generic[StateT]):
    """A state, its version, and the request whose execution produced that version.

    Generic in the state's type, so callers can type what a store returns::

        current: VersionedState[Quotas] | None = await gov.states.get("quotas:acme")
    """

    state: StateT
    version: str
    request_id: str | None = None


_EVERY_REQUEST = RequestQuery()


def sort_key(request: MutationRequest) -> tuple[datetime, str]:
    return (request.created_at, request.request_id)


def encode_cursor(request: MutationRequest) -> str:
    """The cursor of the position right after ``request``."""
    return encode_position(request.created_at, request.request_id)


def encode_position(created_at: datetime, request_id: str) -> str:
    """The cursor of the position right after (``created_at``, ``request_id``)."""
    raw = json.dumps([created_at.isoformat(), request_id])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Decode a cursor from :func:`encode_cursor` (ValueError when it is not one)."""
    try:
        created, request_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        moment = datetime.fromisoformat(created)
    except Exception as error:
        raise ValueError(f"not a request cursor: {cursor!r}") from error
    if not isinstance(request_id, str) or moment.tzinfo is None:
        raise ValueError(f"not a request cursor: {cursor!r}")
    return moment, request_id


def listing(query: object, limit: object) -> RequestQuery:
    """The query a page of requests runs, ``query`` or every request for None, once the
    arguments every store's ``list`` takes are checked (TypeError or ValueError naming the
    argument, before anything is read)."""
    check_limit(limit)
    if query is None:
        return _EVERY_REQUEST
    if not isinstance(query, RequestQuery):
        raise TypeError(f"query must be a RequestQuery or None, got {type(query).__name__}")
    return query


def pending_reason(reason: object) -> PendingReason | None:
    """``reason`` when it is a PendingReason or None: the filter of every store's
    ``pending`` (TypeError otherwise, rather than an empty answer or an AttributeError)."""
    if reason is not None and not isinstance(reason, PendingReason):
        raise TypeError(f"reason must be a PendingReason or None, got {reason!r}")
    return reason


def page_of(ordered: Sequence[MutationRequest], limit: int, cursor: str | None) -> RequestPage:
    """Slice an ordered, filtered sequence into a page after ``cursor``."""
    check_limit(limit)
    start = 0
    if cursor is not None:
        after = decode_cursor(cursor)
        start = next((i for i, r in enumerate(ordered) if sort_key(r) > after), len(ordered))
    items = tuple(ordered[start : start + limit])
    more = start + limit < len(ordered)
    return RequestPage(items, encode_cursor(items[-1]) if more and items else None)


def next_version(version: str | None) -> str:
    """The version after ``version``: state versions are decimal counters ("1", "2", ...).

    Every state store uses this scheme, so a governed execution knows the version it will
    produce before it commits the state and the request together.
    """
    if version is None:
        return "1"
    # int() alone would also take "-1", "+1", " 1" and "1_0", none of which a store writes.
    if not (isinstance(version, str) and version.isascii() and version.isdigit()):
        raise ValueError(f"state version {version!r} is not a decimal counter")
    return str(int(version) + 1)
