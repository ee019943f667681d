"""Governance observability: the spans of one governed request, end to end.

Two ``Governance`` objects over the same in-memory stores stand for two processes: a web
handler submits a quota change (inside its ``POST /quota-requests`` span) that needs
carol's approval; the approver's process records carol's approval and runs the worker.
Both are instrumented with ``mutator_governance.otel.instrument`` (and the worker's engine
with ``mutator.otel.instrument``). The worker's execution starts a new trace that LINKS to
the submit span through the trace context stored on the request — which is how the two
processes connect — and carol's approval links to it too. One line per span is printed
as it ends; each state change is also logged on ``mutator.governance.changes``.

Needs the OpenTelemetry SDK (``pip install "mutator[otel]" opentelemetry-sdk``); without it
the example prints one line saying so and returns.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import attrs

from mutator import (
    Mutation,
    MutationContext,
    MutationEngine,
    MutationIntent,
    MutationPolicy,
    PolicyDecision,
    PolicyRequirement,
)
from mutator_governance import Governance, InMemoryGovernanceStore, MutationRegistry

STATE_ID = "quotas:acme"


@attrs.frozen
class Quotas:
    limits: dict[str, int]


@attrs.frozen
class RaiseLimit(Mutation[Quotas]):
    user: str
    limit: int
    intent: ClassVar[MutationIntent] = MutationIntent("quota.raise_limit", category="billing")

    def apply(self, state: Quotas) -> Quotas:
        return Quotas({**state.limits, self.user: self.limit})


class CarolApprovesRaises(MutationPolicy[Quotas]):
    name = "CarolApprovesRaises"

    def evaluate(self, mutation: Any, state: Quotas, context: MutationContext) -> PolicyDecision:
        return PolicyDecision.require_approval(
            PolicyRequirement.approval("carol"), reason="raises need billing approval"
        )


def one_line(span: Any) -> str:
    """One line per span: name, ids, parent, links and the governance attributes."""
    parent = f"{span.parent.span_id:016x}" if span.parent else "-"
    links = [f"{link.context.span_id:016x}" for link in span.links]
    attributes = {
        k.rsplit(".", 1)[-1]: v
        for k, v in span.attributes.items()
        if k.startswith("mutator.governance.") and not k.endswith("request_id")
    }
    return (
        f"  {span.name:<34} trace={span.context.trace_id:032x}"[:52]
        + f"… id={span.context.span_id:016x} parent={parent}"
        + (f" links={links}" if links else "")
        + f" {attributes}\n"
    )


def governance_over(store: InMemoryGovernanceStore) -> Governance:
    """One process's governance: its own engine and registry over the shared store."""
    registry = MutationRegistry()
    registry.register(RaiseLimit, name="quota.raise_limit")
    engine = MutationEngine(
        audit=store.audit, history=store.history, policies=[CarolApprovesRaises()]
    )
    return Governance(
        engine,
        registry=registry,
        requests=store.requests,
        decisions=store.decisions,
        states=store.states,
        committer=store.committer,
        audit=store.audit,
    )


async def main() -> dict[str, Any]:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        reason = (
            "skipped: the OpenTelemetry SDK is not installed "
            '(pip install "mutator[otel]" opentelemetry-sdk)'
        )
        print(reason)
        return {"skipped": reason}

    from mutator.otel import instrument as instrument_engine
    from mutator_governance.otel import instrument

    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout, formatter=one_line))
    )
    kept = InMemorySpanExporter()  # what the test suite checks
    provider.add_span_processor(SimpleSpanProcessor(kept))

    store = InMemoryGovernanceStore()
    await store.states.put(STATE_ID, Quotas({"alice": 100}))
    web, approver = governance_over(store), governance_over(store)
    instrument(web, tracer_provider=provider)
    instrument(approver, tracer_provider=provider)
    instrument_engine(approver.engine, tracer_provider=provider)

    print("spans (printed as each one ends):")
    with provider.get_tracer("examples.web").start_as_current_span("POST /quota-requests"):
        request = await web.submit(
            RaiseLimit("alice", 500),
            state_id=STATE_ID,
            context=MutationContext.user("alice", reason="plan upgrade"),
        )
    await approver.approve(
        request.request_id, context=MutationContext.user("carol", reason="budget ok")
    )
    report = await approver.run_worker(until_idle=True, poll_interval=0)
    final = await approver.get(request.request_id)
    print(f"request {request.request_id[:8]}: {final.status.name}")
    print(f"  trace context stored at submit: {dict(request.trace_context)}")
    provider.shutdown()
    return {"spans": kept.get_finished_spans(), "request": final, "report": report}
