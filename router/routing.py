"""Which queue a request goes to: a pure function of the route and the live state."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from turnout.core.errors import NoCapacity, QueueFull
from turnout.core.messages import serves
from turnout.core.redis_keys import DEFAULT_LANE, LANES
from turnout.core.routes import Route, RouteTable


@dataclass(frozen=True)
class LiveWorker:
    """One live worker as routing sees it (from its heartbeat)."""

    name: str
    queues: frozenset[str]
    models: frozenset[str] = frozenset()
    # model -> why the worker would not load it (it cannot fit, …)
    refused: Mapping[str, str] = field(default_factory=dict)
    # Its own ``gpu.<i>`` queue, when it is pinned to a device.
    device_queue: str | None = None
    free_memory_mb: float | None = None
    busy: int = 0  # jobs running now, as of its last heartbeat
    concurrency: int = 1  # jobs it runs at once
    # model -> the versions it has ready
    versions: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def serves(self, model: str, version: str | None = None) -> bool:
        return serves(self.models, self.versions.get(model, frozenset()), model, version)


@dataclass(frozen=True)
class LiveState:
    """What the router knows of the cluster right now.

    ``workers`` are the live workers (from heartbeats); ``depths`` counts jobs
    waiting per queue. ``known`` is False until the first look at Redis has
    been made, and then routing trusts the route table alone.
    """

    workers: tuple[LiveWorker, ...] = ()
    depths: dict[str, int] = field(default_factory=dict)
    known: bool = True
    # queue -> lane -> jobs waiting in it
    lane_depths: dict[str, dict[str, int]] = field(default_factory=dict)
    # queue -> tasks a second it drains while it has work waiting (0: not known yet)
    drain_per_s: dict[str, float] = field(default_factory=dict)
    # queue -> lane -> tasks a second that lane drains while it has work waiting
    lane_drain_per_s: dict[str, dict[str, float]] = field(default_factory=dict)
    # When the depths were read (monotonic s; 0: not from Redis).
    measured_at: float = 0.0

    def consumers(self, queue: str) -> list[LiveWorker]:
        return [w for w in self.workers if queue in w.queues]

    def ahead(self, queue: str, lane: str = DEFAULT_LANE) -> int:
        """Jobs that a new job in ``lane`` waits behind: its lane and those above."""
        lanes = self.lane_depths.get(queue)
        if lanes is None:
            return self.depths.get(queue, 0)
        return sum(lanes.get(x, 0) for x in LANES[: LANES.index(lane) + 1])

    def estimated_wait_s(self, queue: str, lane: str = DEFAULT_LANE) -> float | None:
        """How long a job queued now would wait, from the drain rate; None
        while the rate is not known. Behind ``n`` waiting jobs it starts at
        the ``n + 1``-th completion: the first ``n`` only start the jobs ahead
        of it (with none ahead, a worker is free or about to be)."""
        rate = self.drain_per_s.get(queue, 0.0)
        if rate <= 0:
            return None
        # The depths are as of the last look (plus what this process sent
        # since); the queue has drained meanwhile, at its rate.
        since = time.monotonic() - self.measured_at if self.measured_at else 0.0
        ahead = self.ahead(queue, lane) - rate * max(0.0, since)
        return (ahead + 1) / rate if ahead > 0 else 0.0

    def servers(self, queue: str, model: str, version: str | None = None) -> list[LiveWorker]:
        """Live workers on ``queue`` that serve ``model`` (that version of it, if named)."""
        return [w for w in self.workers if queue in w.queues and w.serves(model, version)]

    def capacity(self, model: str, queue: str) -> int:
        """How many jobs for ``model`` on ``queue`` the live workers run at once."""
        return sum(w.concurrency for w in self.servers(queue, model))

    def queued_work(self, queue: str) -> int:
        """Jobs waiting in ``queue`` plus those running on the devices it feeds."""
        running = sum(w.busy for w in self.workers if w.device_queue == queue)
        return self.depths.get(queue, 0) + running

    def free_memory_mb(self, queue: str) -> float:
        free = [w.free_memory_mb for w in self.consumers(queue) if w.free_memory_mb is not None]
        return max(free, default=0.0)


@dataclass(frozen=True)
class Decision:
    queue: str
    fallback_used: bool


def candidates(route: Route, live: LiveState, version: str | None = None) -> list[str]:
    """The route's first-choice queues that a live worker serving the model
    (``version`` of it, when named) consumes, best first: least queued work,
    then most free GPU memory, then at random, so that equals share the load
    instead of the first taking all."""
    if route.devices is not None:
        queues = [q for q in route.placement if live.servers(q, route.name, version)]
    else:
        queue = route.queue
        consumers = live.consumers(queue)
        servers = live.servers(queue, route.name, version)
        if not servers:
            queues = []
        elif len(servers) == len(consumers):
            queues = [queue]
        else:
            # Some workers on the shared queue refused the model (it does not
            # fit on their GPU): steer its jobs to the devices that hold it,
            # where the workers that refused it never look.
            queues = sorted({w.device_queue for w in servers if w.device_queue})
            if not queues:
                queues = [queue]
    return sorted(
        queues, key=lambda q: (live.queued_work(q), -live.free_memory_mb(q), random.random())
    )


def choose_queue(
    route: Route, table: RouteTable, live: LiveState, version: str | None = None,
    timeout_s: float | None = None, lane: str = DEFAULT_LANE,
) -> Decision:
    """Pick the route's queue, or its fallback when the queue cannot take work.
    With ``version`` (a request pinned to it), only workers that have that
    version ready count.

    A queue can take work when a live worker that has loaded the model
    consumes it and it holds fewer than its ``max_depth`` jobs. The first
    choice wins whenever it can; the fallback is used when no first-choice
    queue has a live worker for the model, or every one is full.
    """
    if not live.known:
        return Decision(route.placement[0], fallback_used=False)

    def too_slow(queue: str) -> bool:
        # With a deadline: the queue would not get to the job in time.
        wait = live.estimated_wait_s(queue, lane)
        return timeout_s is not None and wait is not None and wait > timeout_s

    def full(queue: str) -> bool:
        return live.depths.get(queue, 0) >= table.queue_config(queue).max_depth or too_slow(queue)

    usable = candidates(route, live, version)
    if route.fallback is not None and live.servers(route.fallback, route.name, version):
        fallbacks = [route.fallback]
    else:
        fallbacks = []
    for queue in usable:
        if not full(queue):
            return Decision(queue, fallback_used=False)
    for queue in fallbacks:
        if not full(queue):
            return Decision(queue, fallback_used=True)

    live_queues = usable + fallbacks
    if live_queues:
        queue = live_queues[0]
        depth = live.depths.get(queue, 0)
        limit = table.queue_config(queue).max_depth
        rate = live.drain_per_s.get(queue, 0.0)
        if depth < limit and timeout_s is not None:
            # Not full, but too slow for this request's deadline: come back
            # when the jobs ahead of it fit in its timeout.
            ahead = live.ahead(queue, lane)
            wait = live.estimated_wait_s(queue, lane) or 0.0
            raise QueueFull(
                f"queue {queue!r} for model {route.name!r} would start this request in about "
                f"{wait:.1f} s ({ahead} jobs ahead, draining {rate:.1f}/s), after "
                f"its timeout_s of {timeout_s:g} s; retry later",
                retry_after_s=_retry_after(math.ceil((wait - timeout_s) * rate), rate,
                                           len(live.consumers(queue))),
            )
        raise QueueFull(
            f"queue {queue!r} for model {route.name!r} is full ({depth} jobs waiting, "
            f"limit {limit}); retry later",
            retry_after_s=_retry_after(depth - limit + 1, rate, len(live.consumers(queue))),
        )
    raise NoCapacity(_no_capacity(route, live))


def _no_capacity(route: Route, live: LiveState) -> str:
    wanted = " or ".join(repr(q) for q in route.queues)
    refusals = [
        f"worker {w.name} refused it ({w.refused[route.name]})"
        for w in live.workers
        if route.name in w.refused
    ]
    hint = (
        "start one with `turnout worker gpu --device N` (or `--device cpu`)"
        if route.queue.startswith("gpu")
        else "start one with `turnout worker cpu`"
    )
    fallback = "" if route.fallback else " and the route has no fallback"
    why = f"; {'; '.join(refusals)}" if refusals else ""
    return (
        f"model {route.name!r}: no live worker that serves it consumes queue {wanted}"
        f"{fallback}{why}; {hint}"
    )


def _retry_after(excess: int, rate: float, consumers: int) -> int:
    """Seconds until the queue has drained ``excess`` more jobs, at its drain
    rate, with up to 20% of jitter so that refused clients do not all come
    back at once; between 1 and 300. Before any rate is known, a guess: a
    second per hundred waiting jobs per worker."""
    if rate > 0:
        seconds = max(excess, 1) / rate * random.uniform(1.0, 1.2)
    else:
        seconds = excess / (100 * max(consumers, 1))
    return max(1, min(300, math.ceil(seconds)))
