"""Opening a governance: URLs and options refused at the door, policies and history wired."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mutator import (
    ConfigurationError,
    EngineOptions,
    Interceptor,
    MutationContext,
    MutationEngine,
    PolicyDecision,
    PolicyRequirement,
)
from mutator_governance import (
    ApprovalQuery,
    Governance,
    PendingReason,
    RequestQuery,
    RequestStatus,
)
from mutator_governance.stores import open_store, redact_url

from ..stores.test_sqlite_commit import files, snapshot
from ._execution_support import registry
from .conftest import STATE_ID, Fixed, IncreaseQuota, Quotas, World

pytestmark = pytest.mark.anyio


class TestStoreURLs:
    @pytest.mark.parametrize(
        "url",
        ["mysql://db/gov", "gov.db", "", "http://[::1", "ftp://host/x"],
        ids=["unknown scheme", "no scheme", "empty", "malformed", "other scheme"],
    )
    async def test_a_bad_url_is_a_configuration_error_naming_the_accepted_forms(
        self, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Refused before anything is created (``gov.db`` is not made a file)."""
        monkeypatch.chdir(tmp_path)
        with pytest.raises(ConfigurationError, match=r"sqlite:///") as caught:
            await open_store(url, registry=registry())
        assert isinstance(caught.value, ValueError)
        assert "memory://" in str(caught.value)
        with pytest.raises(ConfigurationError, match=r"postgresql://"):
            async with Governance.open(url, registry=registry()):
                pytest.fail("opened")
        assert files(tmp_path) == []

    async def test_an_unknown_keyword_is_refused_before_the_file_is_made(
        self, tmp_path: Path
    ) -> None:
        """A misspelt ``open`` keyword reaches the store's options and is refused there."""
        with pytest.raises(ConfigurationError, match="'polices'"):
            async with Governance.open(
                f"sqlite:///{tmp_path}/gov.db", registry=registry(), polices=[]
            ):
                pytest.fail("opened")
        assert files(tmp_path) == []

    async def test_the_in_memory_store_refuses_options(self) -> None:
        with pytest.raises(ConfigurationError, match="pool_size"):
            await open_store("memory://", registry=registry(), pool_size=3)

    @pytest.mark.parametrize("url", ["memory://?pool_size=3", "memory://host", "memory:///x"])
    async def test_the_in_memory_store_refuses_anything_in_its_url(self, url: str) -> None:
        """Nothing a URL names is silently ignored: ``memory://`` takes no options."""
        with pytest.raises(ConfigurationError, match="in-memory store"):
            await open_store(url, registry=registry())

    @pytest.mark.parametrize(
        "lease", ["300", None, True, 0, -1.0, float("inf"), float("nan"), 1e12]
    )
    async def test_a_lease_that_is_not_a_positive_number_of_seconds_is_refused(
        self, lease: Any
    ) -> None:
        with pytest.raises(ConfigurationError, match="lease"):
            Governance(engine=MutationEngine(), registry=registry(), lease=lease)


class Recording(Interceptor):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def after(self, mutation: Any, state: Any, result: Any, context: Any, execution: Any) -> None:
        self.seen.append(type(mutation).__name__)


class TestOpen:
    async def test_open_takes_policies_and_interceptors(self) -> None:
        interceptor = Recording()
        async with Governance.open(
            "memory://",
            registry=registry(),
            policies=[Fixed("no", PolicyDecision.deny("frozen"))],
            interceptors=[interceptor],
        ) as gov:
            await gov.states.put(STATE_ID, Quotas({"bob": 1}))
            request = await gov.submit(
                IncreaseQuota("bob", 1), state_id=STATE_ID, context=MutationContext.user("al")
            )
            assert request.status is RequestStatus.REJECTED
            assert [p.name for p in gov.engine.policies] == ["no"]
            assert gov.engine.interceptors == (interceptor,)

    async def test_history_reads_the_store_when_the_engine_is_the_callers(
        self, tmp_path: Path
    ) -> None:
        """With ``engine=``, ``gov.history`` still reads the rows the store wrote."""
        engine: MutationEngine[Any] = MutationEngine()
        async with Governance.open(
            f"sqlite:///{tmp_path}/gov.db", registry=registry(), engine=engine
        ) as gov:
            await gov.states.put(STATE_ID, Quotas({"bob": 1}))
            request = await gov.submit(
                IncreaseQuota("bob", 1), state_id=STATE_ID, context=MutationContext.user("al")
            )
            await gov.execute(request.request_id)
            history = await gov.history(STATE_ID)
            assert [e.context.correlation_id for e in history.entries] == [request.request_id]
        rows = snapshot(tmp_path / "gov.db")["history"]
        assert len(rows) == 1

    def test_the_docstring_lists_the_stores(self) -> None:
        doc = Governance.__doc__ or ""
        for name in ("engine", "registry", "requests", "decisions", "states", "audit"):
            assert f"``{name}``" in doc, name

    async def test_history_reads_the_governance_history_store(self) -> None:
        async with Governance.open("memory://", registry=registry()) as gov:
            await gov.states.put(STATE_ID, Quotas({"bob": 1}))
            request = await gov.submit(
                IncreaseQuota("bob", 1), state_id=STATE_ID, context=MutationContext.user("al")
            )
            await gov.execute(request.request_id)
            history = await gov.history(STATE_ID)
            assert [e.context.correlation_id for e in history.entries] == [request.request_id]
            audit = await gov.audit.entries(STATE_ID)
            assert [e.context.correlation_id for e in audit] == [request.request_id]

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("poll_interval", -1),
            ("poll_interval", float("nan")),
            ("concurrency", 0),
            ("concurrency", 1.5),
            ("concurrency", 2**31),
            ("recover_every", float("inf")),
            ("strategy", "renew"),
            ("context", "worker"),
        ],
    )
    async def test_bad_worker_options_are_refused_before_anything_runs(
        self, option: str, value: Any, tmp_path: Path
    ) -> None:
        """ConfigurationError naming the option; the approved request is not touched."""
        async with Governance.open(f"sqlite:///{tmp_path}/gov.db", registry=registry()) as gov:
            await gov.states.put(STATE_ID, Quotas({"bob": 1}))
            request = await gov.submit(
                IncreaseQuota("bob", 1), state_id=STATE_ID, context=MutationContext.user("al")
            )
            assert request.status is RequestStatus.APPROVED
            before = snapshot(tmp_path / "gov.db")
            with pytest.raises(ConfigurationError, match=option):
                await gov.run_worker(until_idle=True, **{option: value})
            assert snapshot(tmp_path / "gov.db") == before

    @pytest.mark.parametrize(
        ("argument", "value"), [("strategy", "renew"), ("strategy", None), ("context", "al")]
    )
    async def test_execute_refuses_a_bad_argument_before_claiming(
        self, argument: str, value: Any, tmp_path: Path
    ) -> None:
        """TypeError and nothing written: it was raised after the claim, which left a
        CLAIMED and a RELEASED decision behind."""
        async with Governance.open(f"sqlite:///{tmp_path}/gov.db", registry=registry()) as gov:
            await gov.states.put(STATE_ID, Quotas({"bob": 1}))
            request = await gov.submit(
                IncreaseQuota("bob", 1), state_id=STATE_ID, context=MutationContext.user("al")
            )
            with pytest.raises(TypeError, match=f"{argument} must be a "):
                await gov.execute(request.request_id, **{argument: value})
            assert await gov.get(request.request_id) == request

    @pytest.mark.parametrize("lease", [0, -5, float("nan"), float("inf"), 1e12])
    async def test_a_bad_lease_is_refused(self, lease: float) -> None:
        """1e12 s was accepted, then every claim raised OverflowError (a worker retried
        forever)."""
        with pytest.raises(ConfigurationError, match="lease"):
            async with Governance.open("memory://", registry=registry(), lease=lease):
                pass

    @pytest.mark.parametrize(
        "clock",
        [datetime.now, lambda: "2026-01-01T00:00:00Z", lambda: None],
        ids=["naive", "text", "none"],
    )
    async def test_a_clock_that_gives_no_aware_datetime_is_refused_at_open(
        self, tmp_path: Path, clock: Any
    ) -> None:
        """Refused before the file is made, naming the clock (before: the first submit
        failed saying only "timestamp must be a timezone-aware datetime")."""
        path = tmp_path / "gov.db"
        with pytest.raises(ConfigurationError, match="clock must return a timezone-aware"):
            async with Governance.open(f"sqlite:///{path}", registry=registry(), clock=clock):
                pass
        assert not path.exists()
        with pytest.raises(ConfigurationError, match="clock must return a timezone-aware"):
            Governance(MutationEngine(), registry=registry(), clock=clock)


class TestTypedStates:
    async def test_states_can_be_typed_by_the_caller(self) -> None:
        """``StateStore[S]`` and ``VersionedState[S]`` are generic in the state type."""
        from mutator_governance import StateStore, VersionedState

        async with Governance.open("memory://", registry=registry()) as gov:
            states: StateStore[Quotas] = gov.states
            await states.put(STATE_ID, Quotas({"bob": 1}))
            current: VersionedState[Quotas] | None = await states.get(STATE_ID)
            assert current is not None
            assert current.state.quotas == {"bob": 1}
            assert VersionedState[Quotas](Quotas(), "1").version == "1"


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize(
    ("url", "backend"),
    [("postgresql://postgres@127.0.0.1:1/test", "PostgreSQL"), ("redis://127.0.0.1:1/0", "Redis")],
)
async def test_server_backends_under_trio_are_refused_before_connecting(
    url: str, backend: str, anyio_backend: str
) -> None:
    """ConfigurationError naming the backend and asyncio (port 1 would refuse a connection)."""
    pytest.importorskip("psycopg" if backend == "PostgreSQL" else "redis")
    with pytest.raises(ConfigurationError) as caught:
        async with Governance.open(url, registry=registry()):
            pytest.fail("opened under trio")
    assert backend in str(caught.value)
    assert "asyncio" in str(caught.value)


class TestMoments:
    """Sweeps given an explicit ``now`` refuse one they could not compare with stored times."""

    @pytest.mark.parametrize(
        ("now", "error"),
        [(datetime(2030, 1, 1), ValueError), ("2030-01-01T00:00:00Z", TypeError)],
        ids=["naive", "text"],
    )
    @pytest.mark.parametrize("sweep", ["expire_due", "recover_stale_claims", "recover", "purge"])
    async def test_a_sweep_refuses_a_now_that_is_not_an_aware_datetime(
        self, world: World, sweep: str, now: Any, error: type[Exception]
    ) -> None:
        request = await world.submit()
        arguments: dict[str, Any] = {"now": now}
        if sweep == "purge":
            arguments["older_than"] = timedelta(days=1)
        with pytest.raises(error, match="now must be"):
            await getattr(world.gov, sweep)(**arguments)
        assert await world.gov.get(request.request_id) == request


class TestIds:
    @pytest.mark.parametrize("state_id", [None, "", "  ", 7, "a\x00b"])
    async def test_a_state_lookup_refuses_what_no_state_is_stored_under(
        self, world: World, state_id: Any
    ) -> None:
        """A clear ValueError naming the argument on every backend (Redis raised a bare
        TypeError for None)."""
        with pytest.raises(ValueError, match="state_id"):
            await world.gov.history(state_id)
        if state_id is not None:
            with pytest.raises(ValueError, match="state_id"):
                await world.gov.pending(state_id=state_id)


class TestGovernanceOptions:
    """``allow_self_approval`` and ``clock`` are refused when malformed, before anything
    opens (``"no"`` is truthy: taken as is, it turned the four-eyes rule off)."""

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("allow_self_approval", "no"),
            ("allow_self_approval", 0),
            ("clock", 5),
            ("instrumentation", "otel"),
        ],
    )
    async def test_a_malformed_option_is_refused_before_the_file_is_made(
        self, tmp_path: Path, option: str, value: Any
    ) -> None:
        with pytest.raises(ConfigurationError, match=option):
            async with Governance.open(
                f"sqlite:///{tmp_path}/gov.db", registry=registry(), **{option: value}
            ):
                pytest.fail("opened")
        assert files(tmp_path) == []
        if option != "instrumentation":  # an argument of open() only
            with pytest.raises(ConfigurationError, match=option):
                Governance(MutationEngine(), registry=registry(), **{option: value})

    async def test_engine_options_beside_an_engine_are_refused(self, tmp_path: Path) -> None:
        """They were ignored: the caller's engine kept its own options."""
        with pytest.raises(ConfigurationError, match="with engine=, give that engine"):
            async with Governance.open(
                f"sqlite:///{tmp_path}/gov.db",
                registry=registry(),
                engine=MutationEngine(),
                options=EngineOptions.strict(),
            ):
                pytest.fail("opened")
        assert files(tmp_path) == []


class TestSubmittedIds:
    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("request_id", "req-\udc80", "no lone surrogates"),
            ("state_id", "quotas:\ud800", "no lone surrogates"),
            ("context.actor_id", "al\udc80", "no lone surrogates"),
            ("context.actor_id", "al\x00ice", "NUL"),
            ("request_id", "r" * 1025, "at most 1,024 bytes"),
            ("state_id", "é" * 513, "at most 1,024 bytes"),
            ("context.actor_id", "a" * 1025, "at most 1,024 bytes"),
        ],
    )
    async def test_submit_refuses_an_id_that_no_store_can_keep(
        self, tmp_path: Path, field: str, value: str, message: str
    ) -> None:
        """The same ValueError naming the argument on every store: SQLite and PostgreSQL
        raised a bare UnicodeEncodeError (or refused a NUL requester) while the in-memory
        store and Redis stored it."""
        for url in ("memory://", f"sqlite:///{tmp_path}/gov.db"):
            async with Governance.open(url, registry=registry()) as gov:
                await gov.states.put(STATE_ID, Quotas({"bob": 1}))
                arguments: dict[str, Any] = {
                    "state_id": STATE_ID,
                    "context": MutationContext.user("al"),
                }
                if field == "context.actor_id":
                    arguments["context"] = MutationContext.user(value)
                else:
                    arguments[field] = value
                with pytest.raises(ValueError, match=rf"{field} .*{message}"):
                    await gov.submit(IncreaseQuota("bob", 1), **arguments)
                assert (await gov.list(RequestQuery())).items == ()

    @pytest.mark.parametrize("request_id", ["req-\udc80", "req-\x00", "r" * 1025])
    async def test_a_lookup_refuses_an_id_that_no_store_can_keep(
        self, tmp_path: Path, request_id: str
    ) -> None:
        """``get`` (and every operation that reads the request first) says ValueError on
        every store: SQLite raised a bare UnicodeEncodeError for a lone surrogate, the
        in-memory store said RequestNotFoundError."""
        for url in ("memory://", f"sqlite:///{tmp_path}/gov.db"):
            async with Governance.open(url, registry=registry()) as gov:
                with pytest.raises(ValueError, match="request_id must"):
                    await gov.get(request_id)
                with pytest.raises(ValueError, match="request_id must"):
                    await gov.cancel(request_id, context=MutationContext.user("al"))

    @pytest.mark.parametrize("state_id", ["s" * 1025, "€" * 342, "s\udc80"])
    async def test_a_state_put_refuses_an_id_that_no_store_can_keep(
        self, tmp_path: Path, state_id: str
    ) -> None:
        """A state is created with the store's own ``put``: it refuses the ids ``submit``
        refuses, on every store (PostgreSQL called an id too long for its index an
        outage)."""
        for url in ("memory://", f"sqlite:///{tmp_path}/gov.db"):
            async with Governance.open(url, registry=registry()) as gov:
                with pytest.raises(ValueError, match="state_id must"):
                    await gov.states.put(state_id, Quotas({"bob": 1}))

    async def test_an_id_of_exactly_the_limit_is_kept(self, tmp_path: Path) -> None:
        state_id = "€" * 341 + "s"  # 1,024 bytes
        for url in ("memory://", f"sqlite:///{tmp_path}/gov.db"):
            async with Governance.open(url, registry=registry()) as gov:
                await gov.states.put(state_id, Quotas({"bob": 1}))
                request = await gov.submit(
                    IncreaseQuota("bob", 1),
                    state_id=state_id,
                    request_id="r" * 1024,
                    context=MutationContext.user("a" * 1024),
                )
                assert (await gov.get(request.request_id)).state_id == state_id


def test_a_password_is_masked_even_when_the_port_is_malformed() -> None:
    """``redact_url`` raised ValueError on a port out of range, so opening such a URL
    failed with a bare ValueError instead of a ConfigurationError."""
    assert redact_url("postgresql://u:secret@db:99999/app") == "postgresql://u:***@db:99999/app"
    assert redact_url("postgresql://u:secret@[::1]:5432/app") == "postgresql://u:***@[::1]:5432/app"
    assert redact_url("redis://db:6379/0") == "redis://db:6379/0"


class TestArgumentTypes:
    """A wrongly typed argument is a TypeError naming it, not an AttributeError from deep
    inside."""

    async def test_submit_refuses_a_pending_reason_that_is_not_a_pending_reason(
        self, world: World
    ) -> None:
        with pytest.raises(TypeError, match="pending_reason must be a PendingReason"):
            await world.submit(pending_reason="schedule")
        assert (await world.gov.list(RequestQuery())).items == ()

    async def test_compensate_refuses_a_context_that_is_not_a_mutation_context(
        self, world: World
    ) -> None:
        request = await world.submit()
        executed = await world.gov.execute(request.request_id)
        with pytest.raises(TypeError, match="context must be a MutationContext, got str"):
            await world.gov.compensate(
                request.request_id,
                IncreaseQuota("bob", -10),
                context="al",  # type: ignore[arg-type]
            )
        assert await world.gov.get(request.request_id) == executed.request


def _decisions(world: World, request_id: str, value: Any) -> dict[str, Any]:
    """Every call that records a decision with free text, given ``value`` as that text."""
    gov, ctx = world.gov, world.ctx("carol", roles=["approver"])
    return {
        "approve": lambda: gov.approve(request_id, context=ctx, reason=value),
        "reject": lambda: gov.reject(request_id, context=ctx, reason=value),
        "cancel": lambda: gov.cancel(request_id, context=ctx, reason=value),
        "expire": lambda: gov.expire(request_id, context=ctx, reason=value),
        "supersede": lambda: gov.supersede(request_id, request_id + "x", context=ctx, reason=value),
        "move_to_pending": lambda: gov.move_to_pending(
            request_id, PendingReason.EXTERNAL_CHECK, context=ctx, note=value
        ),
    }


_DECISIONS = ["approve", "reject", "cancel", "expire", "supersede", "move_to_pending"]


class TestDecisionArguments:
    """A decision's arguments are checked at the call, before the request is read: the same
    refusal on every store (the in-memory store used to keep a reason of any type, which
    the durable stores then refused to encode), and nothing recorded."""

    @pytest.mark.parametrize("call", _DECISIONS)
    @pytest.mark.parametrize("value", [123, b"why", ["why"], {}], ids=repr)
    async def test_free_text_that_is_not_a_string_is_refused(
        self, world: World, call: str, value: Any
    ) -> None:
        world.rules.require(PolicyRequirement.approval(role="approver"))
        request = await world.submit()
        name = "note" if call == "move_to_pending" else "reason"
        with pytest.raises(TypeError, match=f"{name} must be a string or None, got "):
            await _decisions(world, request.request_id, value)[call]()
        assert await world.gov.get(request.request_id) == request

    @pytest.mark.parametrize("call", [*_DECISIONS, "resolve"])
    async def test_a_context_of_another_type_is_refused_whatever_the_request_is(
        self, world: World, call: str
    ) -> None:
        """Not the request's state error first: the request here is already EXECUTED."""
        request = await world.submit()
        executed = (await world.gov.execute(request.request_id)).request
        gov, rid = world.gov, request.request_id
        calls = {
            "approve": lambda: gov.approve(rid, context="carol"),  # type: ignore[arg-type]
            "reject": lambda: gov.reject(rid, context="carol"),  # type: ignore[arg-type]
            "cancel": lambda: gov.cancel(rid, context="carol"),  # type: ignore[arg-type]
            "expire": lambda: gov.expire(rid, context="carol"),  # type: ignore[arg-type]
            "supersede": lambda: gov.supersede(rid, "other", context="carol"),  # type: ignore[arg-type]
            "move_to_pending": lambda: gov.move_to_pending(
                rid,
                PendingReason.EXTERNAL_CHECK,
                context="carol",  # type: ignore[arg-type]
            ),
            "resolve": lambda: gov.resolve(rid, context="carol"),  # type: ignore[arg-type]
        }
        with pytest.raises(TypeError, match="context must be a MutationContext, got str"):
            await calls[call]()
        assert await world.gov.get(rid) == executed

    async def test_reject_refuses_a_rejection_that_is_not_a_rejection_reason(
        self, world: World
    ) -> None:
        world.rules.require(PolicyRequirement.approval(role="approver"))
        request = await world.submit()
        with pytest.raises(TypeError, match="rejection must be a RejectionReason or None, got str"):
            await world.gov.reject(
                request.request_id,
                context=world.ctx("carol", roles=["approver"]),
                rejection="too risky",  # type: ignore[arg-type]
            )
        assert await world.gov.get(request.request_id) == request

    @pytest.mark.parametrize(
        ("arguments", "error", "message"),
        [
            ({"reason": "external_check"}, TypeError, "reason must be a PendingReason, got"),
            ({"reason": None}, TypeError, "reason must be a PendingReason, got None"),
            (
                {"reason": PendingReason.EXTERNAL_CHECK, "expires_at": "tomorrow"},
                TypeError,
                "expires_at must be a datetime, got str",
            ),
        ],
        ids=["reason text", "reason None", "expires_at text"],
    )
    async def test_move_to_pending_refuses_arguments_of_another_type(
        self, world: World, arguments: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        request = await world.submit()
        with pytest.raises(error, match=message):
            await world.gov.move_to_pending(
                request.request_id, context=world.ctx("carol"), **arguments
            )
        assert await world.gov.get(request.request_id) == request


class TestSubmissionArguments:
    @pytest.mark.parametrize("mutation", [None, 123, "quota.increase", {"amount": 1}], ids=repr)
    async def test_submit_refuses_what_is_not_a_mutation(self, world: World, mutation: Any) -> None:
        """Not "mutation class int is not registered: call MutationRegistry.register(int)"."""
        with pytest.raises(TypeError, match="mutation must be a Mutation, got "):
            await world.gov.submit(mutation, state_id=STATE_ID, context=world.ctx("alice"))
        assert (await world.gov.list()).items == ()

    @pytest.mark.parametrize("metadata", ["", [], "ticket=42", 7], ids=repr)
    async def test_submit_refuses_metadata_that_is_not_a_mapping(
        self, world: World, metadata: Any
    ) -> None:
        """An empty string or list was taken as no metadata."""
        with pytest.raises(TypeError, match="metadata must be a mapping or None, got "):
            await world.submit(metadata=metadata)
        assert (await world.gov.list()).items == ()

    async def test_compensate_refuses_a_plan_or_mutation_of_another_type(
        self, world: World
    ) -> None:
        request = await world.submit()
        await world.gov.execute(request.request_id)
        before = (await world.gov.list()).items
        ctx = world.ctx("alice")
        with pytest.raises(TypeError, match="plan must be a CompensationPlan or None, got str"):
            await world.gov.compensate(
                request.request_id,
                IncreaseQuota("bob", -10),
                "undo",  # type: ignore[arg-type]
                context=ctx,
            )
        with pytest.raises(TypeError, match="mutation must be a Mutation, got NoneType"):
            await world.gov.compensate(request.request_id, None, context=ctx)  # type: ignore[arg-type]
        assert (await world.gov.list()).items == before


class TestListingArguments:
    """A page's size and query are checked at the call: not a comparison's TypeError, nor
    (SQLite, ``limit=1.5``) a StoredDataError blaming the database."""

    @pytest.mark.parametrize("listing", ["list", "list_approvals", "list_decisions", "inbox"])
    @pytest.mark.parametrize("limit", [None, "10", 1.5, True], ids=repr)
    async def test_a_limit_that_is_not_an_int_is_refused(
        self, world: World, listing: str, limit: Any
    ) -> None:
        await world.submit()
        gov = world.gov
        calls = {
            "list": lambda: gov.list(limit=limit),
            "list_approvals": lambda: gov.list_approvals(limit=limit),
            "list_decisions": lambda: gov.list_decisions(limit=limit),
            "inbox": lambda: gov.inbox(world.ctx("carol"), limit=limit),
        }
        with pytest.raises(TypeError, match=r"limit must be an int >= 1, got "):
            await calls[listing]()

    @pytest.mark.parametrize("query", ["pending", [], {}, ApprovalQuery()], ids=repr)
    async def test_a_request_query_of_another_type_is_refused(
        self, world: World, query: Any
    ) -> None:
        await world.submit()
        with pytest.raises(TypeError, match="query must be a RequestQuery or None, got "):
            await world.gov.list(query)
        with pytest.raises(TypeError, match="query must be a RequestQuery or None, got "):
            await world.gov.inbox(world.ctx("carol"), query=query)

    @pytest.mark.parametrize("reason", ["schedule", 1, PendingReason], ids=repr)
    async def test_pending_refuses_a_reason_that_is_not_a_pending_reason(
        self, world: World, reason: Any
    ) -> None:
        """The in-memory store answered an empty list; SQLite and PostgreSQL raised
        AttributeError."""
        with pytest.raises(TypeError, match="reason must be a PendingReason or None, got "):
            await world.gov.pending(reason)


class TestMaintenanceArguments:
    @pytest.mark.parametrize("statuses", [None, 3, b"executed", "executed"], ids=repr)
    async def test_purge_refuses_statuses_that_are_not_statuses(
        self, world: World, statuses: Any
    ) -> None:
        with pytest.raises(TypeError, match="statuses must be a RequestStatus or an iterable"):
            await world.gov.purge(older_than=timedelta(days=1), statuses=statuses)

    @pytest.mark.parametrize("ids", ["abc", b"abc", 3], ids=repr)
    async def test_repair_refuses_what_is_not_a_sequence_of_ids(
        self, world: World, ids: Any
    ) -> None:
        """A lone string was read as one request id per character."""
        with pytest.raises(TypeError, match="request_ids must be a sequence of request ids"):
            await world.gov.repair_decision_log(ids)

    async def test_repair_refuses_an_id_no_store_can_keep(self, world: World) -> None:
        with pytest.raises(ValueError, match="request_ids"):
            await world.gov.repair_decision_log([""])
