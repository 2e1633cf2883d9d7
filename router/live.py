"""The router's view of the cluster, refreshed in the background from Redis:
live workers (heartbeats) and queue depths. Requests read it without a round trip."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router.routing import LiveState, LiveWorker
from turnout import heartbeats
from turnout.routes import RouteTable

log = logging.getLogger(__name__)


class LiveView:
    def __init__(self, client: aioredis.Redis, table: RouteTable, interval_s: float = 0.5):
        self._client = client
        self._table = table
        self._interval = interval_s
        self.state = LiveState(known=False)
        self.workers: list[dict[str, Any]] = []
        self.updated_at = 0.0
        self.broker_ok = False
        self._task: asyncio.Task[None] | None = None

    def known_queues(self) -> list[str]:
        names = set(self._table.queues)
        for route in self._table.routes.values():
            names.update(route.queues)
        for worker in self.workers:
            names.update(worker["queues"])
        return sorted(names)

    async def refresh(self) -> None:
        workers = await heartbeats.read_live(self._client)
        self.workers = workers
        queues = self.known_queues()
        pipe = self._client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
        depths = dict(zip(queues, await pipe.execute(), strict=True))
        self.state = LiveState(
            workers=tuple(_live_worker(w) for w in workers), depths=depths, known=True
        )
        self.updated_at = time.time()
        self.broker_ok = True

    def state_capacity(self, model: str, queue: str) -> int:
        return self.state.capacity(model, queue)

    def note_sent(self, queue: str) -> None:
        """Count a job this router just queued, until the next refresh reads the
        real depth, so that a burst between two refreshes spreads over devices
        instead of piling onto the one that looked emptiest."""
        self.state.depths[queue] = self.state.depths.get(queue, 0) + 1

    async def start(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="turnout-live-view")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                if self.broker_ok:
                    log.warning("cannot read live state from Redis: %s", exc)
                self.broker_ok = False


def _live_worker(doc: dict[str, Any]) -> LiveWorker:
    gpu = doc.get("gpu") or {}
    index = doc.get("gpu_index")
    return LiveWorker(
        name=doc["name"],
        queues=frozenset(doc.get("queues", ())),
        models=frozenset(doc.get("models", ())),
        refused=dict(doc.get("refused") or {}),
        device_queue=f"gpu.{index}" if index is not None else None,
        free_memory_mb=gpu.get("memory_free_mb"),
        busy=int(doc.get("busy", 0)),
        concurrency=int(doc.get("concurrency", 1)),
    )
