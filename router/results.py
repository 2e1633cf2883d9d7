"""Learning of results without a thread per waiting request.

Celery's Redis result backend writes each state to ``celery-task-meta-<id>``
and publishes the same document on a channel of that name. One pattern
subscription per API process hears every result; a waiting request is a
future in a dict, resolved by the single reader task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from turnout.core import redis_keys
from turnout.core.settings import RedisSettings

log = logging.getLogger(__name__)

READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
_PREFIX = redis_keys.CELERY_RESULT_PREFIX.encode()


class ResultWatcher:
    def __init__(self, redis: RedisSettings, client: aioredis.Redis) -> None:
        self._redis = redis
        self._client = client  # for GETs; the subscription has its own connection
        self._waiters: dict[str, set[asyncio.Future[dict[str, Any]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="turnout-result-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def watch(self, task_id: str) -> AsyncIterator[asyncio.Future[dict[str, Any]]]:
        """Register interest in ``task_id`` *before* sending it, so that a result
        published at once cannot be missed; yields the future of its result."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, set()).add(future)
        try:
            yield future
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[task_id]

    def on_ready(self, task_id: str) -> asyncio.Future[dict[str, Any]]:
        """A future of ``task_id``'s finished result, without a context manager:
        it stops being watched once it resolves or is cancelled."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, set()).add(future)

        def forget(done: asyncio.Future[dict[str, Any]]) -> None:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(done)
                if not waiters:
                    del self._waiters[task_id]

        future.add_done_callback(forget)
        return future

    async def wait(
        self, task_id: str, future: asyncio.Future[dict[str, Any]], timeout: float
    ) -> dict[str, Any] | None:
        """The finished result's document, or None if not finished in ``timeout``."""
        if not self._subscribed.is_set():
            # Without a live subscription a result may go unheard; look it up.
            meta = await self.lookup(task_id)
            if meta is not None and meta.get("status") in READY_STATES:
                return meta
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            # The subscription may have dropped a message while reconnecting.
            meta = await self.lookup(task_id)
            return meta if meta is not None and meta.get("status") in READY_STATES else None

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    async def lookup(self, task_id: str) -> dict[str, Any] | None:
        raw = await self._client.get(redis_keys.result(task_id))
        return orjson.loads(raw) if raw else None

    def _resolve(self, task_id: str, meta: dict[str, Any]) -> None:
        for future in self._waiters.get(task_id, ()):
            if not future.done():
                future.set_result(meta)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            conn = aioredis.Redis.from_url(self._redis.url, socket_connect_timeout=5)
            pubsub = conn.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(redis_keys.CELERY_RESULT_PREFIX + "*")
                # Results finished while the subscription was down are fetched.
                await self._catch_up()
                self._subscribed.set()
                delay = 0.1
                async for message in pubsub.listen():
                    if message["type"] != "pmessage":
                        continue
                    channel: bytes = message["channel"]
                    task_id = channel[len(_PREFIX) :].decode()
                    if task_id not in self._waiters:
                        continue
                    meta = orjson.loads(message["data"])
                    if meta.get("status") in READY_STATES:
                        self._resolve(task_id, meta)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("result subscription lost (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await conn.aclose()

    async def _catch_up(self) -> None:
        waiting = list(self._waiters)
        # In slices: thousands of waiters must not mean thousands of round trips.
        for start in range(0, len(waiting), 500):
            ids = waiting[start : start + 500]
            for task_id, raw in zip(ids, await self._client.mget([redis_keys.result(i) for i in ids]), strict=True):
                meta = orjson.loads(raw) if raw else None
                if meta is not None and meta.get("status") in READY_STATES:
                    self._resolve(task_id, meta)


def error_text(result: Any) -> str:
    """Celery stores a failure as {exc_type, exc_message, exc_module} in JSON."""
    if isinstance(result, dict) and result.get("exc_type") == "TimeLimitExceeded":
        # The pool killed the job's process at the hard limit (the job had
        # ignored the soft one): say so in the words of the soft limit's error.
        limit = result.get("exc_message")
        if isinstance(limit, list | tuple):
            limit = limit[0] if limit else "?"
        return (f"TaskTimeout: the job ran past its hard time limit of {limit} s; "
                "its worker process was replaced")
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, list | tuple):
            message = " ".join(str(m) for m in message)
        return f"{result['exc_type']}: {message}" if message else str(result["exc_type"])
    return str(result)
