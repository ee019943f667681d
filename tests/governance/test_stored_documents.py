"""Stored documents that cannot be read as they are, on every durable backend (issue #11).

The rule: a field missing from a stored state, request, mutation or value document takes
its class default when the class gives one (this is how a field added with a default
reads documents written before it existed); a missing field without a default raises
:class:`~mutator_governance.StoredDataError` on read, naming the key and the field's
path. Reading never writes, and an operation that hits such a document writes nothing.
The same holds for the other unreadable rows of the issue: a request document stored
under another request's id, and a state version that is not a counter.
SQLite runs on asyncio and trio; PostgreSQL and Redis on asyncio only.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import attrs
import pytest

from mutator import Mutation, MutationContext, MutationIntent
from mutator_governance import Governance, MutationRegistry, StoredDataError

from ..stores.conftest import postgres_url, redis_url  # noqa: F401  (fixtures)

STATE_ID = "account:1"


@attrs.frozen
class Plan:
    tier: str
    seats: int = 1


@attrs.frozen
class Tag:
    """A registered value held in an ``Any`` field."""

    label: str
    weight: int = 1


@attrs.frozen
class Account:
    owner_name: str
    grace_days: int = 30
    plan: Plan = Plan("basic")
    extras: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Rename(Mutation[Account]):
    new_owner: str
    note_text: str = ""
    intent: ClassVar[MutationIntent] = MutationIntent("account.rename", category="test")

    def apply(self, state: Account) -> Account:
        return attrs.evolve(state, owner_name=self.new_owner)


def make_registry(upgrade: Callable[[dict[str, Any]], Any] | None = None) -> MutationRegistry:
    registry = MutationRegistry()
    registry.register(Rename, upgrade=upgrade)
    registry.register_value(Tag, name="Tag")
    return registry


ACCOUNT = Account("ann", 7, Plan("gold", 5), {"tag": Tag("vip", 3)})


def drop(name: str) -> Callable[[Any], None]:
    """Delete every key ``name`` in a JSON document (field names here are unique)."""

    def change(data: Any) -> None:
        if isinstance(data, dict):
            data.pop(name, None)
            for value in data.values():
                change(value)
        elif isinstance(data, list):
            for value in data:
                change(value)

    return change


def put(name: str, value: Any) -> Callable[[Any], None]:
    """Set every key ``name`` in a JSON document to ``value``."""

    def change(data: Any) -> None:
        if isinstance(data, dict):
            if name in data:
                data[name] = value
            for item in data.values():
                change(item)
        elif isinstance(data, list):
            for item in data:
                change(item)

    return change


# -- one durable backend, with raw access to its documents ---------------------------------


class Durable(Protocol):
    url: str
    options: dict[str, Any]

    async def edit(self, kind: str, key: str, change: Callable[[Any], None]) -> None:
        """Rewrite the stored document of a ``state`` or ``request`` behind the store."""

    async def snapshot(self) -> Any:
        """Everything the backend holds (to compare before and after)."""

    def key(self, kind: str, key: str) -> str:
        """The key a StoredDataError names for the ``state`` or ``request`` ``key``."""

    async def set_version(self, state_id: str, version: str) -> None:
        """Overwrite the stored version counter of ``state_id`` behind the store."""


def _edited(text: str | bytes, change: Callable[[Any], None]) -> str:
    data = json.loads(text)
    change(data)
    return json.dumps(data)


_TABLES = {"state": ("states", "state_id"), "request": ("requests", "request_id")}


@attrs.define
class SQLiteFile:
    path: Path
    options: dict[str, Any] = attrs.field(factory=dict)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    async def edit(self, kind: str, key: str, change: Callable[[Any], None]) -> None:
        table, column = _TABLES[kind]
        raw = sqlite3.connect(self.path)
        try:
            with raw:
                (text,) = raw.execute(
                    f"SELECT document FROM {table} WHERE {column} = ?", (key,)
                ).fetchone()
                raw.execute(
                    f"UPDATE {table} SET document = ? WHERE {column} = ?",
                    (_edited(text, change), key),
                )
        finally:
            raw.close()

    async def snapshot(self) -> Any:
        from ..stores.test_sqlite_commit import snapshot

        return snapshot(self.path)

    def key(self, kind: str, key: str) -> str:
        return key

    async def set_version(self, state_id: str, version: str) -> None:
        raw = sqlite3.connect(self.path)
        try:
            with raw:
                raw.execute("UPDATE states SET version = ? WHERE state_id = ?", (version, state_id))
        finally:
            raw.close()


@attrs.define
class PostgresSchema:
    server: str
    schema: str

    @property
    def url(self) -> str:
        return self.server

    @property
    def options(self) -> dict[str, Any]:
        return {"schema": self.schema}

    async def edit(self, kind: str, key: str, change: Callable[[Any], None]) -> None:
        from ..stores.test_postgres import execute_sql

        table, column = _TABLES[kind]
        where = f'"{self.schema}".{table} WHERE {column} = %s'
        ((text,),) = await execute_sql(self.server, f"SELECT document FROM {where}", (key,))
        await execute_sql(
            self.server,
            f'UPDATE "{self.schema}".{table} SET document = %s WHERE {column} = %s',
            (_edited(text, change), key),
        )

    async def snapshot(self) -> Any:
        from ..stores.test_postgres_commit import _snapshot

        return await _snapshot(self.server, self.schema)

    def key(self, kind: str, key: str) -> str:
        return key

    async def set_version(self, state_id: str, version: str) -> None:
        from ..stores.test_postgres import execute_sql

        await execute_sql(
            self.server,
            f'UPDATE "{self.schema}".states SET version = %s WHERE state_id = %s',
            (version, state_id),
        )


@attrs.define
class RedisPrefix:
    server: str
    prefix: str

    @property
    def url(self) -> str:
        return self.server

    @property
    def options(self) -> dict[str, Any]:
        return {"prefix": self.prefix}

    async def edit(self, kind: str, key: str, change: Callable[[Any], None]) -> None:
        from ..stores.test_redis import _open

        store = await _open(self.server, self.prefix, make_registry())
        try:
            name = self.key(kind, key)
            text = await store.client.hget(name, "document")
            await store.client.hset(name, "document", _edited(text, change))
        finally:
            await store.aclose()

    async def snapshot(self) -> Any:
        from mutator_governance.stores._redis import RedisKeyspace

        from ..stores.test_redis import _open
        from ..stores.test_redis_commit import _snapshot

        store = await _open(self.server, self.prefix, make_registry())
        try:
            held = await _snapshot(store)
        finally:
            await store.aclose()
        # Like the SQL snapshots: the governed data, not the quarantine's bookkeeping
        # (a read by id of an unreadable row records it there).
        quarantine = RedisKeyspace(self.prefix).quarantine.encode()
        return {key: value for key, value in held.items() if key != quarantine}

    def key(self, kind: str, key: str) -> str:
        from mutator_governance.stores._redis import RedisKeyspace

        keys = RedisKeyspace(self.prefix)
        return keys.state(key) if kind == "state" else keys.request(key)

    async def set_version(self, state_id: str, version: str) -> None:
        from ..stores.test_redis import _open

        store = await _open(self.server, self.prefix, make_registry())
        try:
            await store.client.hset(self.key("state", state_id), "version", version)
        finally:
            await store.aclose()


CASES = [("sqlite", "asyncio"), ("sqlite", "trio"), ("postgresql", "asyncio"), ("redis", "asyncio")]


@pytest.fixture(params=CASES, ids=[f"{kind}-{loop}" for kind, loop in CASES])
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return tuple(request.param)  # type: ignore[return-value]


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    """SQLite runs on both event loops; the server backends on asyncio only."""
    return case[1]


@pytest.fixture
async def durable(
    case: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Durable]:
    kind = case[0]
    if kind == "sqlite":
        yield SQLiteFile(tmp_path / "gov.db")
    elif kind == "postgresql":
        from ..stores.test_postgres import drop_schema, new_schema

        server = request.getfixturevalue("postgres_url")
        schema = new_schema()
        try:
            yield PostgresSchema(server, schema)
        finally:
            await drop_schema(server, schema)
    else:
        from ..stores.test_redis import _drop

        server = request.getfixturevalue("redis_url")
        prefix = f"mutator-test-{uuid.uuid4().hex}"
        try:
            yield RedisPrefix(server, prefix)
        finally:
            await _drop(server, prefix)


def opened(durable: Durable, upgrade: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    return Governance.open(durable.url, registry=make_registry(upgrade), **durable.options)


def user(actor: str) -> MutationContext:
    return MutationContext.user(actor)


pytestmark = pytest.mark.anyio


# -- state (and value) documents ---------------------------------------------------------------


async def test_state_fields_with_a_default_take_it_when_missing(durable: Durable) -> None:
    """A state written before ``grace_days``, ``Plan.seats`` and ``Tag.weight`` existed."""
    async with opened(durable) as gov:
        await gov.states.put(STATE_ID, ACCOUNT)
        for name in ("grace_days", "seats", "weight"):
            await durable.edit("state", STATE_ID, drop(name))
        before = await durable.snapshot()
        stored = await gov.states.get(STATE_ID)
        assert stored is not None
        assert stored.state == Account("ann", 30, Plan("gold", 1), {"tag": Tag("vip", 1)})
        assert stored.version == "1"
        assert await durable.snapshot() == before


@pytest.mark.parametrize(
    ("missing", "path"),
    [("owner_name", "owner_name"), ("tier", "plan.tier"), ("label", "extras.tag.label")],
)
async def test_a_missing_state_field_without_a_default_is_stored_data_error(
    durable: Durable, missing: str, path: str
) -> None:
    """Read: StoredDataError at the state's key naming the field path; submit writes nothing."""
    async with opened(durable) as gov:
        await gov.states.put(STATE_ID, ACCOUNT)
        await durable.edit("state", STATE_ID, drop(missing))
        before = await durable.snapshot()
        with pytest.raises(StoredDataError) as caught:
            await gov.states.get(STATE_ID)
        assert caught.value.key == durable.key("state", STATE_ID)
        assert caught.value.field is not None
        assert caught.value.field.endswith(path)
        assert "required field missing" in str(caught.value)
        with pytest.raises(StoredDataError):
            await gov.submit(Rename("bea"), state_id=STATE_ID, context=user("al"))
        assert await durable.snapshot() == before


# -- request (and mutation) documents ----------------------------------------------------------


async def test_a_mutation_field_with_a_default_takes_it_when_missing(durable: Durable) -> None:
    """A request stored before ``Rename.note_text`` (and ``trace_context``) existed."""
    async with opened(durable) as gov:
        await gov.states.put(STATE_ID, ACCOUNT)
        request = await gov.submit(
            Rename("bea", note_text="hi"), state_id=STATE_ID, context=user("al")
        )
        for name in ("note_text", "trace_context"):
            await durable.edit("request", request.request_id, drop(name))
        before = await durable.snapshot()
        loaded = await gov.get(request.request_id)
        assert loaded.mutation == Rename("bea")
        assert loaded.trace_context == {}
        assert attrs.evolve(loaded, mutation=request.mutation) == request
        assert await durable.snapshot() == before
        executed = await gov.execute(request.request_id)
        assert executed.request.mutation == Rename("bea")
        current = await gov.states.get(STATE_ID)
        assert current is not None
        assert current.state.owner_name == "bea"


async def test_a_missing_mutation_field_without_a_default_is_stored_data_error(
    durable: Durable,
) -> None:
    """Read: StoredDataError naming the request and ``new_owner``; execute writes nothing."""
    async with opened(durable) as gov:
        await gov.states.put(STATE_ID, ACCOUNT)
        request = await gov.submit(Rename("bea"), state_id=STATE_ID, context=user("al"))
        await durable.edit("request", request.request_id, drop("new_owner"))
        before = await durable.snapshot()
        with pytest.raises(StoredDataError) as caught:
            await gov.get(request.request_id)
        assert caught.value.key == durable.key("request", request.request_id)
        assert caught.value.field is not None
        assert caught.value.field.endswith("mutation.new_owner")
        assert "required field missing" in str(caught.value)
        with pytest.raises(StoredDataError):
            await gov.execute(request.request_id)
        with pytest.raises(StoredDataError):
            await gov.cancel(request.request_id, context=user("al"))
        assert await durable.snapshot() == before


def in_mutation(change: Callable[[dict[str, Any]], None]) -> Callable[[Any], None]:
    """Apply ``change`` to the stored fields of a request document's mutation."""

    def edit(data: Any) -> None:
        if isinstance(data, dict):
            if data.get("$type") == "account.rename":
                change(data["value"])
                return
            for value in data.values():
                edit(value)

    return edit


def renamed_to_legacy(fields: dict[str, Any]) -> None:
    """The request as an older ``Rename`` stored it: ``owner`` and a retired ``legacy``."""
    fields["owner"] = fields.pop("new_owner")
    fields["legacy"] = True


def upgrade_rename(fields: dict[str, Any]) -> dict[str, Any]:
    """What an older ``Rename``'s fields become (current fields come back unchanged)."""
    if "owner" in fields:
        fields["new_owner"] = fields.pop("owner")
    fields.pop("legacy", None)
    return fields


async def test_a_stored_mutation_field_its_class_no_longer_declares_is_stored_data_error(
    durable: Durable,
) -> None:
    """The approved mutation is never run without a field it was approved with.

    Before, the field was dropped: the request executed something other than what was
    approved and its rewritten document lost the field for good.
    """
    async with opened(durable) as gov:
        await gov.states.put(STATE_ID, ACCOUNT)
        request = await gov.submit(Rename("bea"), state_id=STATE_ID, context=user("al"))
        await durable.edit(
            "request", request.request_id, in_mutation(lambda f: f.update(limit_cents=500))
        )
        before = await durable.snapshot()
        with pytest.raises(StoredDataError) as caught:
            await gov.get(request.request_id)
        assert caught.value.key == durable.key("request", request.request_id)
        assert caught.value.field is not None
        assert caught.value.field.endswith("mutation")
        assert "'limit_cents'" in str(caught.value)
        assert "upgrade=" in str(caught.value)
        with pytest.raises(StoredDataError):
            await gov.execute(request.request_id)
        assert await durable.snapshot() == before


async def test_an_upgrade_reads_an_older_mutation_and_the_request_keeps_it(
    durable: Durable,
) -> None:
    """``register(..., upgrade=...)``: the older request runs, and is stored upgraded."""
    async with opened(durable) as gov:
        await gov.states.put(STATE_ID, ACCOUNT)
        request = await gov.submit(Rename("bea"), state_id=STATE_ID, context=user("al"))
    await durable.edit("request", request.request_id, in_mutation(renamed_to_legacy))
    async with opened(durable, upgrade_rename) as gov:
        loaded = await gov.get(request.request_id)
        assert loaded == request
        executed = await gov.execute(request.request_id)
        assert executed.executed
        current = await gov.states.get(STATE_ID)
        assert current is not None
        assert current.state.owner_name == "bea"
    async with opened(durable) as gov:  # no upgrade: the stored document is current now
        assert (await gov.get(request.request_id)).mutation == Rename("bea")


@pytest.mark.parametrize(
    ("upgrade", "message"),
    [
        (lambda fields: fields["missing"], "upgrade of stored mutation 'account.rename' raised"),
        (lambda fields: [fields], "returned list, not a mapping of fields"),
    ],
    ids=["raises", "returns-a-list"],
)
async def test_an_upgrade_that_fails_is_stored_data_error(
    durable: Durable, upgrade: Callable[[dict[str, Any]], Any], message: str
) -> None:
    """A failing upgrade is the request's unreadable document, not an error from inside."""
    async with opened(durable) as gov:
        await gov.states.put(STATE_ID, ACCOUNT)
        request = await gov.submit(Rename("bea"), state_id=STATE_ID, context=user("al"))
    before = await durable.snapshot()
    async with opened(durable, upgrade) as gov:
        with pytest.raises(StoredDataError) as caught:
            await gov.execute(request.request_id)
        assert message in str(caught.value)
    assert await durable.snapshot() == before


# -- the other unreadable rows --------------------------------------------------------------------


async def test_a_request_document_under_another_id_is_stored_data_error(
    durable: Durable,
) -> None:
    """Read, cancel or execute it: StoredDataError naming the other id; a listing quarantines it."""
    async with opened(durable) as gov:
        await gov.states.put(STATE_ID, ACCOUNT)
        first = await gov.submit(Rename("bea"), state_id=STATE_ID, context=user("al"))
        second = await gov.submit(Rename("cy"), state_id=STATE_ID, context=user("al"))
        await durable.edit("request", first.request_id, put("request_id", second.request_id))
        before = await durable.snapshot()
        with pytest.raises(StoredDataError) as caught:
            await gov.get(first.request_id)
        assert caught.value.key == durable.key("request", first.request_id)
        assert caught.value.field is not None
        assert "request_id" in caught.value.field or "document" in caught.value.field
        assert repr(second.request_id) in str(caught.value)
        with pytest.raises(StoredDataError):
            await gov.cancel(first.request_id, context=user("al"))
        with pytest.raises(StoredDataError):
            await gov.execute(first.request_id)
        assert await durable.snapshot() == before
        # a listing skips it and quarantines it instead of failing
        listed = [r.request_id for r in (await gov.list()).items]
        assert listed == [second.request_id]
        assert [q.request_id for q in await gov.quarantined()] == [first.request_id]


@pytest.mark.parametrize("version", ["abc", "", "-1", "1.5"])
async def test_a_state_version_that_is_not_a_counter_is_stored_data_error(
    durable: Durable, version: str
) -> None:
    """Read, submit or write the state: StoredDataError naming ``version``; nothing written."""
    async with opened(durable) as gov:
        await gov.states.put(STATE_ID, ACCOUNT)
        await durable.set_version(STATE_ID, version)
        before = await durable.snapshot()
        with pytest.raises(StoredDataError) as caught:
            await gov.states.get(STATE_ID)
        assert caught.value.key == durable.key("state", STATE_ID)
        assert caught.value.field is not None
        assert caught.value.field.endswith("version")
        with pytest.raises(StoredDataError):
            await gov.submit(Rename("bea"), state_id=STATE_ID, context=user("al"))
        with pytest.raises(StoredDataError):
            await gov.states.put(STATE_ID, ACCOUNT, expected_version=version)
        assert await durable.snapshot() == before
