"""Worker heartbeats in Redis: each live worker renews a JSON document with a TTL.

Workers write (``publish``, synchronous: it runs in a worker thread); the router
reads (``read_live``, asynchronous). A worker whose key has expired is gone.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from turnout.core import redis_keys


def publish(client: redis.Redis, doc: dict[str, Any], ttl_s: float) -> None:
    now = time.time()
    body = json.dumps({**doc, "ts": now})
    pipe = client.pipeline(transaction=False)
    pipe.set(redis_keys.worker(doc["name"]), body, px=int(ttl_s * 1000))
    pipe.zadd(redis_keys.WORKERS, {doc["name"]: now})
    pipe.execute()


def withdraw(client: redis.Redis, name: str) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.delete(redis_keys.worker(name))
    pipe.zrem(redis_keys.WORKERS, name)
    pipe.execute()


async def read_live(client: aioredis.Redis, forget_after_s: float = 3600) -> list[dict[str, Any]]:
    """Every worker whose heartbeat has not expired, sorted by name."""
    raw = await client.zrange(redis_keys.WORKERS, 0, -1)
    if not raw:
        return []
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    docs = await client.mget([redis_keys.worker(n) for n in names])
    live = [json.loads(d) for d in docs if d]
    # Names whose heartbeat stopped long ago are dropped from the index.
    await client.zremrangebyscore(redis_keys.WORKERS, 0, time.time() - forget_after_s)
    return sorted(live, key=lambda d: d["name"])
