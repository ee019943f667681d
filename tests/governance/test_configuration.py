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
)
from mutator_governance import Governance, RequestQuery, RequestStatus
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
