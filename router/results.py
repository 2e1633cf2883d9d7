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

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from turnout.core import redis_keys
from turnout.core.broker import connect_async
from turnout.core.messages import ResultDoc
from turnout.core.settings import RedisSettings

log = logging.getLogger(__name__)

_PREFIX = redis_keys.CELERY_RESULT_PREFIX.encode()


class ResultWatcher:
    def __init__(self, redis: RedisSettings, client: aioredis.Redis) -> None:
        self._redis = redis
        self._client = client  # for GETs; the subscription has its own connection
        self._waiters: dict[str, set[asyncio.Future[ResultDoc]]] = {}
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
    async def watch(self, task_id: str) -> AsyncIterator[asyncio.Future[ResultDoc]]:
        """Register interest in ``task_id`` *before* sending it, so that a result
        published at once cannot be missed; yields the future of its result."""
        future: asyncio.Future[ResultDoc] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, set()).add(future)
        try:
            yield future
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[task_id]

    def on_ready(self, task_id: str) -> asyncio.Future[ResultDoc]:
        """A future of ``task_id``'s finished result, without a context manager:
        it stops being watched once it resolves or is cancelled."""
        future: asyncio.Future[ResultDoc] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, set()).add(future)

        def forget(done: asyncio.Future[ResultDoc]) -> None:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(done)
                if not waiters:
                    del self._waiters[task_id]

        future.add_done_callback(forget)
        return future

    async def wait(
        self, task_id: str, future: asyncio.Future[ResultDoc], timeout: float
    ) -> ResultDoc | None:
        """The finished result's document, or None if not finished in ``timeout``."""
        if not self._subscribed.is_set():
            # Without a live subscription a result may go unheard; look it up.
            meta = await self.lookup(task_id)
            if meta is not None and meta.ready:
                return meta
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            # The subscription may have dropped a message while reconnecting.
            meta = await self.lookup(task_id)
            return meta if meta is not None and meta.ready else None

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    async def lookup(self, task_id: str) -> ResultDoc | None:
        return ResultDoc.decode(await self._client.get(redis_keys.result(task_id)))

    def _resolve(self, task_id: str, meta: ResultDoc) -> None:
        for future in self._waiters.get(task_id, ()):
            if not future.done():
                future.set_result(meta)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            conn = connect_async(self._redis, socket_connect_timeout=5)
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
                    meta = ResultDoc.decode(message["data"])
                    if meta is not None and meta.ready:
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
                meta = ResultDoc.decode(raw)
                if meta is not None and meta.ready:
                    self._resolve(task_id, meta)
