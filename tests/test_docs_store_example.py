"""The audit sink written in the "write your own store" how-to passes the contract suite.

The sink's code is taken from the page itself (its first python block), so the example the
page says passes the suite is the one that is tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mutator import AuditSink
from mutator.testing import AuditSinkContract

from .test_docs import DOCS, programs

PAGE = DOCS / "how-to" / "write-a-store.md"


def _example_sink_class() -> Any:
    code, _ = programs(PAGE)[0]
    namespace: dict[str, Any] = {"__name__": "docs_write_a_store"}
    exec(compile(code, str(PAGE), "exec"), namespace)
    return namespace["JsonLinesAuditSink"]


JsonLinesAuditSink = _example_sink_class()


class TestDocsJsonLinesAuditSink(AuditSinkContract):
    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.directory = tmp_path

    async def make_audit_sink(self) -> AuditSink:
        return JsonLinesAuditSink(self.directory / "audit.jsonl")  # type: ignore[no-any-return]
