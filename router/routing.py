"""Which queue a request goes to: a pure function of the route and the live state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from router.errors import NoCapacity, QueueFull
from router.routes import Route, RouteTable


@dataclass(frozen=True)
class LiveState:
    """What the router knows of the cluster right now.

    ``consumers`` counts live workers per queue (from their heartbeats);
    ``depths`` counts jobs waiting per queue. ``known`` is False until the first
    look at Redis has been made, and then routing trusts the route table alone.
    """

    consumers: Mapping[str, int] = field(default_factory=dict)
    depths: Mapping[str, int] = field(default_factory=dict)
    known: bool = True


@dataclass(frozen=True)
class Decision:
    queue: str
    fallback_used: bool


def choose_queue(route: Route, table: RouteTable, live: LiveState) -> Decision:
    """Pick the route's queue, or its fallback when the queue cannot take work.

    A queue can take work when some live worker consumes it and it holds fewer
    than its ``max_depth`` jobs. The primary queue wins whenever it can; the
    fallback is used when the primary has no live worker or is full.
    """
    if not live.known:
        return Decision(route.queue, fallback_used=False)

    def alive(queue: str) -> bool:
        return live.consumers.get(queue, 0) > 0

    def full(queue: str) -> bool:
        return live.depths.get(queue, 0) >= table.queue_config(queue).max_depth

    for queue in route.queues:
        if alive(queue) and not full(queue):
            return Decision(queue, fallback_used=queue != route.queue)

    live_queues = [q for q in route.queues if alive(q)]
    if live_queues:
        queue = live_queues[0]
        depth = live.depths.get(queue, 0)
        raise QueueFull(
            f"queue {queue!r} for model {route.name!r} is full ({depth} jobs waiting, "
            f"limit {table.queue_config(queue).max_depth}); retry later",
            retry_after_s=_retry_after(depth, live.consumers.get(queue, 1)),
        )
    wanted = " or ".join(repr(q) for q in route.queues)
    hint = (
        "start one with `turnout worker gpu --device N` (or `--device cpu`)"
        if route.queue.startswith("gpu")
        else "start one with `turnout worker cpu`"
    )
    fallback = "" if route.fallback else " and the route has no fallback"
    raise NoCapacity(
        f"model {route.name!r}: no live worker consumes queue {wanted}{fallback}; {hint}"
    )


def _retry_after(depth: int, consumers: int) -> int:
    # A rough hint: a second per hundred waiting jobs per worker, between 1 and 30.
    return max(1, min(30, depth // (100 * max(consumers, 1))))
