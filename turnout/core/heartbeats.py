"""Worker heartbeats in Redis: each live worker renews its ``Heartbeat``
(turnout.core.messages) under a key with a TTL.

Workers write (``publish``, synchronous: it runs in a worker thread); the router
reads (``read_live``, asynchronous). A worker whose key has expired is gone.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import redis
import redis.asyncio as aioredis

from turnout.core import redis_keys
from turnout.core.messages import Heartbeat, MessageError

log = logging.getLogger(__name__)


def publish(client: redis.Redis, beat: Heartbeat, ttl_s: float) -> None:
    now = time.time()
    body = dataclasses.replace(beat, ts=now).encode()
    pipe = client.pipeline(transaction=False)
    pipe.set(redis_keys.worker(beat.name), body, px=int(ttl_s * 1000))
    pipe.zadd(redis_keys.WORKERS, {beat.name: now})
    pipe.execute()


def withdraw(client: redis.Redis, name: str) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.delete(redis_keys.worker(name))
    pipe.zrem(redis_keys.WORKERS, name)
    pipe.execute()


async def read_live(client: aioredis.Redis, forget_after_s: float = 3600) -> list[Heartbeat]:
    """Every worker whose heartbeat has not expired, sorted by name."""
    raw = await client.zrange(redis_keys.WORKERS, 0, -1)
    if not raw:
        return []
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    docs = await client.mget([redis_keys.worker(n) for n in names])
    live = []
    for name, doc in zip(names, docs, strict=True):
        if not doc:
            continue
        try:
            live.append(Heartbeat.decode(doc))
        except (MessageError, ValueError, TypeError) as exc:
            log.warning("worker %s: heartbeat ignored: %s", name, exc)
    # Names whose heartbeat stopped long ago are dropped from the index.
    await client.zremrangebyscore(redis_keys.WORKERS, 0, time.time() - forget_after_s)
    return sorted(live, key=lambda beat: beat.name)
