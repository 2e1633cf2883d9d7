"""The result watcher against a real Redis: results arrive by pub/sub, without polling."""

from __future__ import annotations

import asyncio
import json
import uuid

import redis
import redis.asyncio as aioredis

from turnout.core import redis_keys
from turnout.core.messages import ResultDoc
from turnout.router.results import ResultWatcher


def _publish(client: redis.Redis, task_id: str, status: str) -> None:
    doc = json.dumps({"status": status, "result": {"predictions": [1]}, "task_id": task_id})
    client.set(redis_keys.result(task_id), doc)
    client.publish(redis_keys.result(task_id), doc)


def _url(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://:{kw['password']}@{kw['host']}:{kw['port']}/{kw['db']}"


def test_a_waiter_hears_its_result_and_ignores_started(redis_client: redis.Redis) -> None:
    from turnout.core.settings import RedisSettings

    settings = RedisSettings.from_url(_url(redis_client))

    async def scenario() -> tuple[object, object, object]:
        client = aioredis.Redis.from_url(settings.url)
        watcher = ResultWatcher(settings, client)
        await watcher.start()
        await asyncio.wait_for(watcher._subscribed.wait(), 5)
        task_id, other = str(uuid.uuid4()), str(uuid.uuid4())
        async with watcher.watch(task_id) as future:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, _publish, redis_client, task_id, "STARTED")
            loop.call_later(0.05, _publish, redis_client, other, "SUCCESS")
            loop.call_later(0.2, _publish, redis_client, task_id, "SUCCESS")
            started = loop.time()
            meta = await watcher.wait(task_id, future, timeout=5)
            waited = loop.time() - started
        async with watcher.watch(str(uuid.uuid4())) as never:
            timed_out = await watcher.wait("x", never, timeout=0.2)
        left = dict(watcher._waiters)
        await watcher.stop()
        await client.aclose()
        return meta, (waited, timed_out), left

    meta, (waited, timed_out), left = asyncio.run(scenario())
    assert isinstance(meta, ResultDoc) and meta.status == "SUCCESS"
    assert 0.15 < waited < 2  # woke on SUCCESS, not on STARTED or another task
    assert timed_out is None
    assert left == {}  # no waiter leaks


def test_a_result_published_before_the_subscription_is_found(redis_client: redis.Redis) -> None:
    from turnout.core.settings import RedisSettings

    settings = RedisSettings.from_url(_url(redis_client))
    task_id = str(uuid.uuid4())
    _publish(redis_client, task_id, "SUCCESS")  # nobody listening yet

    async def scenario() -> object:
        client = aioredis.Redis.from_url(settings.url)
        watcher = ResultWatcher(settings, client)  # not started: no subscription
        async with watcher.watch(task_id) as future:
            meta = await watcher.wait(task_id, future, timeout=1)
        await client.aclose()
        return meta

    meta = asyncio.run(scenario())
    assert isinstance(meta, ResultDoc) and meta.status == "SUCCESS"
