"""The queries tour of ``examples/queries.py`` on a Redis store.

Runs when ``MUTATOR_REDIS_URL`` (or ``MUTATOR_TEST_REDIS_URL``) names a Redis server and
skips with a one-line reason otherwise. Everything it writes lives under a fresh key
prefix, deleted at the end.
"""

from __future__ import annotations

import uuid
from typing import Any

from mutator_governance import Governance

from ._servers import server_url, skip_reason
from .queries import make_registry, tour


async def main() -> dict[str, Any]:
    url = server_url("MUTATOR_REDIS_URL", "MUTATOR_TEST_REDIS_URL")
    reason = skip_reason(url, variable="MUTATOR_REDIS_URL", store="Redis", scheme="redis")
    if url is None or reason is not None:
        print(reason)
        return {"skipped": reason}
    prefix = f"mutator-example-{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in url else "?"
    print(f"redis store under prefix {prefix}")
    try:
        async with Governance.open(
            f"{url}{separator}prefix={prefix}", registry=make_registry()
        ) as gov:
            return await tour(gov)
    finally:
        await _drop(url, prefix)


async def _drop(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


if __name__ == "__main__":
    import anyio

    anyio.run(main)
