"""Counting what a redis-py asyncio client reads: the replies (commands) and their elements.

Shared by :mod:`benchmarks.redis_query_scale` and the Redis query-scale tests.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

__all__ = ["counting"]


@contextlib.contextmanager
def counting() -> Iterator[Counter[str]]:
    """Count the replies read (commands) and the elements they carry, on every connection."""
    from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser

    tally: Counter[str] = Counter()
    originals = {cls: cls.read_response for cls in (_AsyncHiredisParser, _AsyncRESP2Parser)}

    def wrap(original: Any) -> Any:
        async def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
            reply = await original(self, *args, **kwargs)
            tally["commands"] += 1
            tally["elements"] += len(reply) if isinstance(reply, list) else 1
            return reply

        return read_response

    for cls, original in originals.items():
        cls.read_response = wrap(original)  # type: ignore[method-assign]
    try:
        yield tally
    finally:
        for cls, original in originals.items():
            cls.read_response = original  # type: ignore[method-assign]
