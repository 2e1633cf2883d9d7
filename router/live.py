"""The router's view of the cluster, refreshed in the background from Redis:
live workers (heartbeats) and queue depths. Requests read it without a round trip."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from turnout.core import heartbeats, redis_keys
from turnout.core.errors import ConfigError
from turnout.core.messages import Heartbeat
from turnout.core.routes import RouteTable
from turnout.core.routes.shared import parse_published
from turnout.core.serving import READY, Serving, parse_all, rollout_state
from turnout.router.routing import LiveState, LiveWorker

log = logging.getLogger(__name__)
# A queue's drain rate is measured over the last 10 s of a busy spell, once
# that spell has lasted 2 s.
_DRAIN_WINDOW_S = 10.0
_DRAIN_MIN_SPAN_S = 2.0


class LiveView:
    def __init__(self, client: aioredis.Redis, table: RouteTable, interval_s: float = 0.5):
        self._client = client
        # The route table in force in this process: the one holder, read at use
        # time by everything that routes; a reload is one assignment (adopt).
        self.table = table
        self._interval = interval_s
        self.state = LiveState(known=False)
        # queue -> lane -> depth, as of the last refresh
        self.lane_depths: dict[str, dict[str, int]] = {}
        self.workers: list[Heartbeat] = []
        # Which versions serve each model (turnout.core.serving), as of the last refresh.
        self.serving: dict[str, Serving] = {}
        self.updated_at = 0.0
        self.broker_ok = False
        # turnout:delivery-stats, the workers' cluster-wide delivery counters.
        self.delivery_stats: dict[str, int] = {}
        # A `turnout flower` is running: send task-sent events.
        self.monitoring = False
        self._task: asyncio.Task[None] | None = None
        # Run after each background refresh (the lifecycle's rollouts).
        self.after_refresh: Callable[[], Awaitable[None]] | None = None
        # The published route table's generation in use (0: the file's), and
        # who to tell when a newer one is adopted.
        self.routes_generation = 0
        # queue -> tasks a second it drains while it has work, and the (time,
        # drained count) samples of its current busy spell.
        self.drain_per_s: dict[str, float] = {}
        # queue -> lane -> the same, per lane
        self.lane_drain_per_s: dict[str, dict[str, float]] = {}
        # model -> its run time per row, as its workers have reported it (all time)
        self.seconds_per_row: dict[str, float] = {}
        self._drain_seen: dict[str, collections.deque[tuple[float, int]]] = {}
        # Redis's clock minus this process's (seconds), as of the last refresh.
        self.clock_offset = 0.0
        # Given the API keys (turnout:apikeys) as read with each refresh.
        self.on_keys: Callable[[dict[Any, Any], bool], None] | None = None

    def known_queues(self) -> list[str]:
        names = set(self.table.queues)
        for route in self.table.routes.values():
            names.update(route.queues)
        for worker in self.workers:
            names.update(worker.queues)
        return sorted(names)

    async def refresh(self) -> None:
        workers = await heartbeats.read_live(self._client)
        self.workers = workers
        queues = self.known_queues()
        pipe = self._client.pipeline(transaction=False)
        for queue in queues:
            for key in redis_keys.lane_keys(queue):
                pipe.llen(key)
        pipe.hgetall(redis_keys.SERVING)
        pipe.hget(redis_keys.ROUTES, "generation")
        pipe.hgetall(redis_keys.API_KEYS)
        pipe.exists(redis_keys.API_KEYS_CLOSED)
        pipe.hgetall(redis_keys.STATS)
        pipe.exists(redis_keys.MONITORING)
        pipe.hgetall(redis_keys.DRAINED)
        pipe.time()
        sent = time.time()
        (*lengths, serving, generation, api_keys, keys_closed, stats,
         monitoring, drained, redis_time) = await pipe.execute()
        # Redis's clock against this process's, at the middle of the round
        # trip: deadlines are written on Redis's clock, which workers compare
        # with TIME, so that no machine's clock decides.
        self.clock_offset = float(redis_time[0]) + float(redis_time[1]) / 1e6 \
            - (sent + time.time()) / 2
        self.monitoring = bool(monitoring)
        self.delivery_stats = {
            (k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in stats.items()
        }
        if self.on_keys is not None:
            self.on_keys(api_keys, bool(keys_closed))
        # Per queue, each lane's depth (highest first); a queue's depth is all of them.
        per_lane = [lengths[i:i + len(redis_keys.LANES)]
                    for i in range(0, len(lengths), len(redis_keys.LANES))]
        self.lane_depths = {q: dict(zip(redis_keys.LANES, counts, strict=True))
                            for q, counts in zip(queues, per_lane, strict=True)}
        depths = {q: sum(counts) for q, counts in zip(queues, per_lane, strict=True)}
        self._drained(drained, depths)
        self.serving = parse_all(serving)
        if int(generation or 0) > self.routes_generation:
            await self._adopt_routes(int(generation))
        self.state = LiveState(
            workers=tuple(_live_worker(w) for w in workers), depths=depths, known=True,
            lane_depths=self.lane_depths, drain_per_s=dict(self.drain_per_s),
            lane_drain_per_s={q: dict(r) for q, r in self.lane_drain_per_s.items()},
            measured_at=time.monotonic(),
        )
        self.updated_at = time.time()
        self.broker_ok = True

    def _drained(self, raw: dict[Any, Any], depths: dict[str, int]) -> None:
        """Each queue's drain rate: tasks finished a second over the last
        ``_DRAIN_WINDOW_S`` in which it had work waiting. An idle queue drains
        only what comes, which says nothing of how fast it could: its last
        busy rate is kept."""
        now = time.monotonic()
        totals = {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in raw.items()}
        for name, rows in totals.items():
            model, _, what = name.removeprefix("model:").rpartition(":")
            if name.startswith("model:") and what == "rows" and rows > 0:
                self.seconds_per_row[model] = totals.get(f"model:{model}:busy_s", 0.0) / rows
        for name, value in totals.items():
            if name.startswith("lane:"):
                # Each lane's own rate: lanes share their queue's workers, so
                # this says how the share goes, not how long a wait is.
                queue, _, lane = name.removeprefix("lane:").rpartition("@")
                waiting = self.lane_depths.get(queue, {}).get(lane, 0)
                rate = self._rate(name, int(value), waiting, now)
                if rate is not None:
                    self.lane_drain_per_s.setdefault(queue, {})[lane] = rate
            elif ":" not in name:
                rate = self._rate(name, int(value), depths.get(name, 0), now)
                if rate is not None:
                    self.drain_per_s[name] = rate

    def _rate(self, key: str, count: int, waiting: int, now: float) -> float | None:
        """Counted items a second over the current busy spell's window (None
        until it has lasted ``_DRAIN_MIN_SPAN_S``)."""
        seen = self._drain_seen.setdefault(key, collections.deque())
        if waiting == 0 and (not seen or seen[-1][1] == count):
            seen.clear()  # idle: a new busy spell starts a new window
            seen.append((now, count))
            return None
        seen.append((now, count))
        while len(seen) > 2 and now - seen[1][0] >= _DRAIN_WINDOW_S:
            seen.popleft()
        t0, count0 = seen[0]
        if now - t0 >= _DRAIN_MIN_SPAN_S and count >= count0:
            return (count - count0) / (now - t0)
        return None

    async def _adopt_routes(self, generation: int) -> None:
        """A newer route table was published (``turnout reload``): use it."""
        try:
            found, table = parse_published(await self._client.hgetall(redis_keys.ROUTES))
        except ConfigError as exc:
            log.error("the published route table is bad (%s); keeping the last good one", exc)
            self.routes_generation = generation
            return
        self.adopt(found, table)

    def adopt(self, generation: int, table: RouteTable) -> None:
        self.routes_generation = generation
        self.table = table
        log.info("route table generation %d in force: %d models", generation, len(table.routes))

    def deadline(self, timeout_s: float | None) -> float | None:
        """``timeout_s`` from now, on Redis's clock (None for no timeout)."""
        return None if timeout_s is None else time.time() + self.clock_offset + timeout_s

    def serving_for(self, model: str) -> Serving:
        return self.serving.get(model) or Serving()

    def ready_everywhere(self, model: str, version: str) -> bool:
        """Whether every live worker that serves ``model`` has ``version`` ready."""
        return rollout_state(model, version, self.workers)[0] == READY

    def state_capacity(self, model: str, queue: str) -> int:
        return self.state.capacity(model, queue)

    def note_sent(self, queue: str, lane: str = redis_keys.DEFAULT_LANE) -> None:
        """Count a job this router just queued, until the next refresh reads the
        real depth, so that a burst between two refreshes spreads over devices
        instead of piling onto the one that looked emptiest, and so that the
        wait estimated for the next request (admission against its deadline)
        counts it too."""
        self.state.depths[queue] = self.state.depths.get(queue, 0) + 1
        lanes = self.state.lane_depths.setdefault(queue, {})
        lanes[lane] = lanes.get(lane, 0) + 1

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
                if self.after_refresh is not None:
                    await self.after_refresh()
            except (RedisError, OSError) as exc:
                if self.broker_ok:
                    log.warning("cannot read live state from Redis: %s", exc)
                self.broker_ok = False


def _live_worker(beat: Heartbeat) -> LiveWorker:
    return LiveWorker(
        name=beat.name,
        queues=frozenset(beat.queues),
        models=frozenset(beat.models),
        refused=dict(beat.refused),
        device_queue=beat.device_queue,
        free_memory_mb=beat.gpu.memory_free_mb if beat.gpu is not None else None,
        busy=beat.busy,
        concurrency=beat.concurrency,
        versions={model: beat.ready_versions(model) for model in beat.versions},
    )
