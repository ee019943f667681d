"""``Governance.open(..., instrumentation=...)``: spans when given, nothing when not."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mutator import ConfigurationError, MutationContext, MutationEngine
from mutator.otel import TracingInterceptor
from mutator.otel import instrument as instrument_engine
from mutator_governance import Governance, RequestStatus

from ._execution_support import registry
from .conftest import STATE_ID, IncreaseQuota, Quotas

pytest.importorskip("opentelemetry.sdk")
from mutator_governance.otel import GovernanceInstrumentation, instrument

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


async def submit_and_execute(gov: Governance) -> str:
    await gov.states.put(STATE_ID, Quotas({"bob": 1}))
    request = await gov.submit(
        IncreaseQuota("bob", 2), state_id=STATE_ID, context=MutationContext.user("al")
    )
    executed = await gov.execute(request.request_id)
    assert executed.request.status is RequestStatus.EXECUTED
    return request.request_id


def tracing_interceptors(engine: MutationEngine[Any]) -> list[Any]:
    return [i for i in engine.interceptors if isinstance(i, TracingInterceptor)]


class TestInstrumentationOption:
    async def test_given_it_traces_governance_and_engine_while_open(
        self, tmp_path: Path, tracing: Any
    ) -> None:
        """instrument(engine=True) as the hook: governance spans with the engine's nested."""
        engine: MutationEngine[Any] = MutationEngine()
        hook = functools.partial(instrument, tracer_provider=tracing.provider, engine=True)
        async with Governance.open(
            f"sqlite:///{tmp_path}/gov.db", registry=registry(), engine=engine, instrumentation=hook
        ) as gov:
            assert gov.telemetry is not None
            request_id = await submit_and_execute(gov)
        (submit,) = tracing.spans("mutator.governance.submit")
        (execute,) = tracing.spans("mutator.governance.execute")
        (engine_span,) = tracing.spans("mutator.execute")
        for span in (submit, execute):
            assert span.attributes["mutator.governance.request_id"] == request_id
        assert engine_span.context.trace_id == execute.context.trace_id
        assert tracing.spans("mutator.governance.commit")
        # Closed: the hooks are gone from the governance and from the caller's engine.
        assert gov.telemetry is None
        assert tracing_interceptors(engine) == []

    async def test_any_callable_is_called_once_with_the_governance(self) -> None:
        """The hook gets the governance before it is handed out; a plain result is kept."""
        seen: list[Governance] = []
        async with Governance.open(
            "memory://", registry=registry(), instrumentation=seen.append
        ) as gov:
            assert seen == [gov]
        assert seen == [gov]

    async def test_not_given_no_span_is_made(self, tracing: Any) -> None:
        """Without instrumentation= the governance carries no hooks and no span appears."""
        async with Governance.open("memory://", registry=registry()) as gov:
            assert gov.telemetry is None
            assert tracing_interceptors(gov.engine) == []
            await submit_and_execute(gov)
        assert tracing.spans() == []

    async def test_a_failing_hook_propagates_and_the_store_still_closes(
        self, tmp_path: Path
    ) -> None:
        """An engine already instrumented: ConfigurationError, nothing left installed."""
        engine: MutationEngine[Any] = MutationEngine()
        instrument_engine(engine)
        hook = functools.partial(instrument, engine=True)
        with pytest.raises(ConfigurationError, match="engine is already instrumented"):
            async with Governance.open(
                f"sqlite:///{tmp_path}/gov.db",
                registry=registry(),
                engine=engine,
                instrumentation=hook,
            ):
                pytest.fail("the governance was handed out")
        assert len(tracing_interceptors(engine)) == 1
        # The store was closed: the database can be opened (and written) again.
        async with Governance.open(f"sqlite:///{tmp_path}/gov.db", registry=registry()) as gov:
            await gov.states.put("other", Quotas())
            assert gov.telemetry is None

    async def test_instrument_with_engine_uninstruments_both(self, tracing: Any) -> None:
        async with Governance.open("memory://", registry=registry()) as gov:
            installed = instrument(gov, tracer_provider=tracing.provider, engine=True)
            assert isinstance(installed, GovernanceInstrumentation)
            assert installed.engine is not None
            assert installed.engine.active
            installed.uninstrument()
            installed.uninstrument()
            assert gov.telemetry is None
            assert tracing_interceptors(gov.engine) == []


def test_opening_without_instrumentation_imports_no_opentelemetry(tmp_path: Path) -> None:
    """Zero cost when not given: a governed round trip never imports OpenTelemetry."""
    program = textwrap.dedent(
        f"""
        import sys
        import anyio
        from mutator import MutationContext
        from mutator_governance import Governance, RequestStatus
        from tests.governance._execution_support import registry
        from tests.governance.conftest import IncreaseQuota, Quotas

        async def main():
            async with Governance.open("sqlite:///{tmp_path}/gov.db", registry=registry()) as gov:
                await gov.states.put("q", Quotas())
                request = await gov.submit(
                    IncreaseQuota("bob", 2), state_id="q", context=MutationContext.user("al")
                )
                done = await gov.execute(request.request_id)
                assert done.request.status is RequestStatus.EXECUTED

        anyio.run(main)
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
