"""Idempotency claims on a real Redis: a retry that arrives (through another
API process, say) while the first request's task is not queued yet waits
for the record or for the claim to lapse, and never answers with a task id
that no record will ever back."""

from __future__ import annotations

import asyncio
import time

import redis
import redis.asyncio as aioredis

from turnout.core import redis_keys
from turnout.router.idempotency import Claims

PREFIX = redis_keys.task("")


def _claims(redis_client: redis.Redis, lapse_s: float) -> tuple[aioredis.Redis, Claims]:
    kwargs = redis_client.connection_pool.connection_kwargs
    client = aioredis.Redis(host=kwargs["host"], port=kwargs["port"], db=kwargs["db"],
                            password=kwargs.get("password"))
    return client, Claims(client, 60, lapse_s=lapse_s)


def test_a_claim_whose_api_died_lapses_and_the_retry_makes_the_task(redis_client: redis.Redis) -> None:
    async def go() -> tuple[str | None, float]:
        client, claims = _claims(redis_client, lapse_s=1.0)
        # The first API process claimed the key, then died before queueing.
        assert await claims.claim("k1", "first", PREFIX) is None
        t0 = time.monotonic()
        got = await claims.claim("k1", "second", PREFIX)
        await client.aclose()
        return got, time.monotonic() - t0

    got, waited = asyncio.run(go())
    assert got is None  # the retry owns the key now, and makes its own task
    assert 0.9 < waited < 3
    assert redis_client.get("k1").startswith(b"second\t")


def test_a_retry_waits_for_the_first_requests_record(redis_client: redis.Redis) -> None:
    async def go() -> str | None:
        client, claims = _claims(redis_client, lapse_s=5.0)
        assert await claims.claim("k2", "first", PREFIX) is None

        async def queue_it() -> None:
            await asyncio.sleep(0.3)
            await client.set(PREFIX + "first", "{}")

        got, _ = await asyncio.gather(claims.claim("k2", "second", PREFIX), queue_it())
        await client.aclose()
        return got

    assert asyncio.run(go()) == "first"
