"""Contract test suites for the core seams, shipped for every implementation, ours or yours.

An audit sink, history store or metrics collector is correct when it behaves like the
in-memory reference. Three pytest suites state that behaviour: :class:`AuditSinkContract`,
:class:`HistoryStoreContract` and :class:`MetricsCollectorContract`. Subclass one in a test
module, under a name pytest collects, and implement its factory hook; each test gets a new,
empty instance::

    from mutator import AuditSink
    from mutator.testing import AuditSinkContract

    from myservice.audit import KafkaAuditSink


    class TestKafkaAuditSink(AuditSinkContract):
        async def make_audit_sink(self) -> AuditSink:
            return await KafkaAuditSink.connect(BROKER)

        async def close_audit_sink(self, sink: AuditSink) -> None:
            await sink.aclose()

The suites' tests are ``async`` and marked ``anyio``, so the anyio pytest plugin must be
active (``-p anyio``); they run once per backend of your ``anyio_backend`` fixture. Entries
come from :func:`sample_audit_entry`, :func:`sample_history_entry` and their ``rich``
variants (every optional field set, including a typed side-effect payload,
:class:`SampleEffectPayload`). The governance stores have their own suites in
:mod:`mutator_governance.testing`.
"""

from __future__ import annotations

from ._contracts import AuditSinkContract, HistoryStoreContract, MetricsCollectorContract
from ._identical import assert_identical
from ._samples import (
    SAMPLE_BASE_TIME,
    SampleEffectPayload,
    sample_audit_entry,
    sample_history_entry,
    sample_rich_audit_entry,
    sample_rich_history_entry,
)

__all__ = [
    # contract suites
    "AuditSinkContract",
    "HistoryStoreContract",
    "MetricsCollectorContract",
    # sample entries
    "SAMPLE_BASE_TIME",
    "SampleEffectPayload",
    "sample_audit_entry",
    "sample_history_entry",
    "sample_rich_audit_entry",
    "sample_rich_history_entry",
    "assert_identical",
]
