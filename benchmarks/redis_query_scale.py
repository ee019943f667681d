"""Redis operator reads on a large history: fill a key prefix, count what every read touches.

``python -m benchmarks.redis_query_scale`` fills a private key prefix (``--prefix``, default
``scale_probe``) of the server named by ``MUTATOR_TEST_REDIS_URL`` with ``--requests``
requests (default 200,000) in the mix of a year-old service (the same mix, requesters and
states as :mod:`benchmarks.postgres_query_plans`): a sample of 216 requests written through
``Governance`` (submit / approve / reject / cancel / expire / execute), then copies of the
sample rows with fresh ids, state ids, requesters and every timestamp shifted (documents
included), each written by the store's own commit script (``create`` sections built by the
store, so every index, sorted set and hash is the one the store would write), pipelined;
executed copies append their audit and history entries in the same script call.

Then every read the store offers an operator runs once to warm up and once counted: wall
ms, the commands sent and the elements their replies carried (a list reply counts its
length, any other reply one). ``--only`` runs the reads whose names contain a word;
``--reuse`` skips the fill when the prefix already holds it; the prefix's keys are deleted
at the end unless ``--keep``. ``--json PATH`` writes the results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter as Tally
from datetime import UTC, datetime, timedelta
from typing import Any

from mutator_governance import Governance, RequestStatus

from .governance import REDIS_URL
from .postgres_query_plans import (
    NOW,
    ByAmount,
    _Copies,
    _probe_main,
    _reads,
    _Sample,
    _sample,
    _sample_of,
    _selected,
    registry,
)
from .redis_replies import counting

__all__ = ["counting", "main"]


def _url(prefix: str) -> str:
    return f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={prefix}"


async def _drop(client: Any, prefix: str) -> int:
    """Delete every key under ``prefix`` (SCAN + UNLINK, in batches)."""
    dropped = 0
    async for keys in _batches(client.scan_iter(match=f"{prefix}:*", count=2000), 2000):
        dropped += await client.unlink(*keys)
    return dropped


async def _batches(items: Any, size: int) -> Any:
    batch: list[Any] = []
    async for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _templates(gov: Governance) -> dict[str, list[_Sample]]:
    """The sample requests (document text, audit and history texts), by outcome."""
    b: Any = gov.requests._b  # type: ignore[attr-defined]
    keys = b.keys
    segments = await b.client.hgetall(keys.segments)
    found: dict[str, list[_Sample]] = {}
    for raw_id in segments:
        rid = raw_id.decode()
        raw = await b.client.hget(keys.request(rid), "document")
        document = json.loads(raw)["request"]
        state_id = document["state_id"]
        texts = {"request": raw.decode()}
        audit = await b.client.lrange(keys.audit(state_id), 0, -1)
        history = await b.client.lrange(keys.history(state_id), 0, -1)
        if audit:
            texts["audit"] = audit[-1].decode()
        if history:
            texts["history"] = history[-1].decode()
        sample = _sample_of(texts, rid, state_id, document)
        found.setdefault(sample.outcome, []).append(sample)
    return found


async def _bulk(gov: Governance, total: int, progress: Any) -> dict[str, Any]:
    """Copies of the sample rows until the prefix holds ``total`` requests; the facts."""
    from mutator_governance.stores import _redis_scripts as scripts

    b: Any = gov.requests._b  # type: ignore[attr-defined]
    keys = b.keys
    copies = _Copies(await _templates(gov), total)
    await b.client.script_load(scripts.COMMIT)
    connection = await b.client.connection_pool.get_connection()
    actors: Tally[str] = Tally()
    states: Tally[str] = Tally()
    executed: str | None = None
    try:
        for done, batch in copies.batches(1000):
            packed: list[bytes] = []
            for copy in batch:
                rid, state_id = copy.request_id, copy.state_id
                request = b.request_from(copy.build("request").encode(), keys.request(rid), rid)
                actors[copy.actor] += 1
                states[state_id] += 1
                if copy.outcome == "executed" and executed is None:
                    executed = rid
                section_keys, section_args = b.section(
                    "create", rid, request, None, request.decisions
                )
                entries: list[tuple[str, bytes]] = []
                if "audit" in copy.sample.pieces:
                    audit = copy.build("audit").encode()
                    entries += [(keys.audit(), audit), (keys.audit(state_id), audit)]
                if "history" in copy.sample.pieces:
                    history = copy.build("history").encode()
                    entries.append((keys.history(state_id), history))
                args: list[Any] = ["1", *section_args, "0", str(len(entries))]
                args += [document for _, document in entries]
                args.append("0")
                packed.append(b.script.pack([*section_keys, *(k for k, _ in entries)], args))
            await connection.send_packed_command(b"".join(packed), check_health=False)
            for _ in packed:
                reply = await connection.read_response()
                if int(reply[0]) != 1:
                    raise RuntimeError(f"copy refused: {reply!r}")
            if done % 20000 < 1000 or done == copies.count:
                progress(f"  copied {done:,} / {copies.count:,} requests")
    finally:
        await b.client.connection_pool.release(connection)
    rare = sorted(a for a, c in actors.items() if 20 <= c <= 60)[0]
    total_members = await b.client.zcard(keys.index_all)
    deep = (await b.client.zrange(keys.index_all, total_members * 3 // 4, total_members * 3 // 4))[
        0
    ]
    return {
        "actor": actors.most_common(1)[0][0],
        "rare_actor": rare,
        "state_id": states.most_common(1)[0][0],
        "request_id": executed,
        "deep": _position(deep),
    }


def _position(member: bytes) -> tuple[datetime, str]:
    """(created_at, request id) of an index member."""
    from mutator_governance.stores._redis import _MARGIN_US, _ORIGIN

    stamp, rid = member.decode().split("|", 1)
    return _ORIGIN + timedelta(microseconds=int(stamp) - _MARGIN_US), rid


def _extra_reads(facts: dict[str, Any]) -> list[tuple[str, Any]]:
    from mutator_governance import RequestQuery

    actor = facts["actor"]
    hour = NOW - timedelta(hours=1)

    async def quarantine(gov: Governance) -> Any:
        return await gov.quarantined()

    return [
        (
            "list: status pending + requester (busy), cursor",
            lambda gov: gov.list(
                RequestQuery(statuses={RequestStatus.PENDING}, actor_ids={actor}), limit=5
            ),
        ),
        (
            "list: status executed + updated in the last hour",
            lambda gov: gov.list(
                RequestQuery(statuses={RequestStatus.EXECUTED}, updated_from=hour), limit=50
            ),
        ),
        (
            "list: recent approvals preset",
            lambda gov: gov.list(RequestQuery.recent_approvals(), limit=50),
        ),
        ("quarantined()", quarantine),
    ]


def _size(out: Any) -> Any:
    for attribute in ("items", "entries"):
        items = getattr(out, attribute, None)
        if items is not None:
            return len(items)
    if isinstance(out, list | tuple):
        return len(out)
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    import redis.asyncio as aioredis

    probe = aioredis.Redis.from_url(REDIS_URL)
    facts_key = f"{args.prefix}:probe-facts"
    out: dict[str, Any] = {"at": datetime.now(UTC).isoformat(), "reads": []}
    try:
        if not args.reuse:
            await _drop(probe, args.prefix)
        async with Governance.open(_url(args.prefix), registry=registry()) as gov:
            gov.engine.register_policy(ByAmount())
            raw_facts = await probe.get(facts_key)
            if args.reuse and raw_facts:
                facts = json.loads(raw_facts)
                facts["deep"] = (datetime.fromisoformat(facts["deep"][0]), facts["deep"][1])
            else:
                before = (await probe.info("memory"))["used_memory"]
                started = time.perf_counter()
                progress("sample through the write path (216 requests)")
                await _sample(gov)
                progress(f"copies up to {args.requests:,} requests")
                facts = await _bulk(gov, args.requests, progress)
                seconds = time.perf_counter() - started
                used = (await probe.info("memory"))["used_memory"] - before
                progress(
                    f"filled in {seconds:.0f} s; used_memory +{used / 2**20:.0f} MiB, "
                    f"{used / args.requests:,.0f} B per request"
                )
                out["fill"] = {"seconds": seconds, "used_memory": used}
                stored = dict(facts, deep=[facts["deep"][0].isoformat(), facts["deep"][1]])
                await probe.set(facts_key, json.dumps(stored))
            b: Any = gov.requests._b  # type: ignore[attr-defined]
            sizes = {
                key: await probe.zcard(key)
                for key in (
                    b.keys.index_all,
                    *(b.keys.index("status", s.value) for s in RequestStatus),
                    b.keys.index("actor", facts["actor"]),
                    b.keys.index("state", facts["state_id"]),
                    b.keys.due,
                    b.keys.recent(),
                )
            }
            for key, size in sizes.items():
                encoding = await probe.object("encoding", key) if size else None
                progress(f"  {key}: {size:,} ({encoding})")
            progress(f"  {b.keys.audit()}: {await probe.llen(b.keys.audit()):,} (list)")
            out["sizes"] = sizes
            reads = [*_reads(facts), *_extra_reads(facts)]
            for name, read in _selected(reads, args.only):
                if name.startswith("purge") and not args.purge:
                    continue
                await read(gov)
                with counting() as tally:
                    started = time.perf_counter()
                    result = await read(gov)
                    wall = (time.perf_counter() - started) * 1000
                row = {
                    "read": name,
                    "wall_ms": wall,
                    "commands": tally["commands"],
                    "elements": tally["elements"],
                    "rows": _size(result),
                }
                out["reads"].append(row)
                print(
                    f"{name:<52} {wall:>9.1f} ms {row['commands']:>7,} cmd "
                    f"{row['elements']:>9,} elements rows={row['rows']}",
                    flush=True,
                )
    finally:
        if not args.keep:
            progress(f"deleted {await _drop(probe, args.prefix):,} keys of {args.prefix}")
        await probe.aclose()
    return out


def main() -> int:
    return _probe_main(
        "python -m benchmarks.redis_query_scale",
        run,
        (("--prefix",), {"default": "scale_probe"}),
        "keep the keys at the end",
        "keep a prefix already filled",
        (("--purge",), {"action": "store_true", "help": "also run a purge batch (deletes)"}),
        plans=False,
        server=("Redis", REDIS_URL, 6379, "redis"),
        document=lambda args, out: out,
    )


if __name__ == "__main__":
    raise SystemExit(main())
