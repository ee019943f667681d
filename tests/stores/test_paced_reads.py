"""Bulk reads decode in chunks and yield to the event loop between them."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import attrs
import pytest

from mutator_governance.stores._documents import DECODE_CHUNK, pace, paced

pytestmark = pytest.mark.anyio


@attrs.define
class Yields:
    """Rows built so far, and how many had been built at each yield to the event loop."""

    built: list[int] = attrs.Factory(list)
    at: list[int] = attrs.Factory(list)

    def build(self, row: int) -> int:
        self.built.append(row)
        return row


@pytest.fixture
def yields(monkeypatch: pytest.MonkeyPatch) -> Yields:
    seen = Yields()
    real = anyio.lowlevel.checkpoint

    async def counted() -> None:
        seen.at.append(len(seen.built))
        await real()

    monkeypatch.setattr(anyio.lowlevel, "checkpoint", counted)
    return seen


CHUNK = DECODE_CHUNK


@pytest.mark.parametrize(
    ("rows", "expected"),
    [(CHUNK * 3 + 5, [CHUNK, CHUNK * 2, CHUNK * 3]), (CHUNK, [])],
    ids=["long", "one chunk"],
)
async def test_a_long_decode_yields_between_chunks_a_short_one_never(
    yields: Yields, rows: int, expected: list[int]
) -> None:
    assert await paced(list(range(rows)), yields.build) == list(range(rows))
    assert yields.at == expected


async def test_pace_yields_before_each_new_chunk_of_a_hand_written_loop(yields: Yields) -> None:
    for index in range(CHUNK * 2 + 1):
        await pace(index)
        yields.build(index)
    assert yields.at == [CHUNK, CHUNK * 2]


async def test_other_tasks_run_while_a_long_decode_yields() -> None:
    """On a running loop the yields are real: a concurrent task gets turns mid-decode."""
    turns = 0
    seen: list[int] = []

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        await paced(list(range(CHUNK * 40)), lambda row: seen.append(turns))
        tg.cancel_scope.cancel()
    assert seen[-1] > seen[0]
