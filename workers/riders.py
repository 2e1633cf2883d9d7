"""Worker-side batching: the queued tasks a running task (the leader) takes
into its forward pass, whichever API process sent them.

The router's micro-batcher can only batch the requests of one API process;
with several behind a load balancer each sends small tasks, and a GPU worker
would run one small forward pass per task. Here the pool child running a
batched route's task takes, in one Lua step (``delivery_join.lua``), other
queued tasks of the same model and version, from the leader's lane and the
ones above it, up to the route's ``max_batch`` rows. Each of them (a *rider*)
is owned exactly as a claimed message is, keeps its own task id, lease,
deadlines, revocations, result and failure, and is acked by the child once
its result is stored. If the child dies, the worker's audit gives the riders
back as soon as the leader is settled; if the whole worker dies, the reaper
does, with everything else it held.
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from turnout.core import delivery, redis_keys
from turnout.core.messages import MessageError, RequestItem, ResultDoc
from turnout.core.redis_keys import LANES, lane_key, lane_named

log = logging.getLogger(__name__)


@dataclass
class Rider:
    task_id: str
    tag: str
    # The lane it waited in (its own, for the drain counts).
    lane: str
    requests: list[RequestItem]
    deliveries: int = 0
    revoked: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    # Set once its start went through under its lease.
    started: bool = False
    # Set once its result is stored and it is acked.
    settled: bool = False

    def live(self) -> list[int]:
        return [i for i, gone in enumerate(self.revoked) if not gone and not self.expired[i]]


def lanes_from(queue: str, lane: str) -> list[str]:
    """The lists a leader in ``lane`` of ``queue`` takes riders from: its own
    lane and those above it, best first (a low batch chunk never slows an
    interactive request's pass; a chunk takes interactive requests along)."""
    return [lane_key(queue, name) for name in LANES[: LANES.index(lane) + 1]]


def decode(raw: str) -> tuple[str, str, str, list[Any]] | None:
    """(task id, delivery tag, lane, request items) of a queued predict
    message, or None for one that is not."""
    try:
        message = orjson.loads(raw)
        headers = message["headers"]
        args, _kwargs, _embed = orjson.loads(base64.b64decode(message["body"]))
        _model, requests, _spec = args
        return (str(headers["id"]), str(message["properties"]["delivery_tag"]),
                lane_named(headers.get("turnout_lane")), list(requests))
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
        return None


@dataclass(frozen=True)
class Join:
    """What a leader may take along: tasks whose join key is ``key``, at most
    ``room`` rows of them, from ``lane`` of ``queue`` and the lanes above."""

    leader: str
    queue: str
    lane: str
    key: str
    room: int
    depth: int


def join_call(scripts: delivery.Scripts, incarnation: str, joining: Join) -> delivery.Call:
    """The join, for ``Scripts.pipelined`` (its answer: the messages taken)."""
    return delivery.join_call(scripts, incarnation, joining.leader, joining.key,
                              lanes_from(joining.queue, joining.lane), joining.room,
                              joining.depth)


def parse(client: redis.Redis | None, incarnation: str, raw: list[str]) -> list[Rider]:
    """The riders in the messages a join took; any that is not a predict task
    Turnout wrote goes straight back, to be run (and failed) alone."""
    riders: list[Rider] = []
    strays: list[str] = []
    for message in raw:
        decoded = decode(message)
        if decoded is None:
            # The join script decoded its tag; only its body is not ours.
            strays.append(str(orjson.loads(message)["properties"]["delivery_tag"]))
            continue
        task_id, tag, lane, items = decoded
        try:
            requests = [RequestItem.from_wire(item) for item in items]
        except MessageError as exc:
            log.warning("task %s: not taken along (%s); given back", task_id, exc)
            strays.append(tag)
            continue
        riders.append(Rider(task_id, tag, lane, requests))
    if strays and client is not None:
        delivery.give_back(client, incarnation, strays, why="requeued", forget=False)
    return riders


def start(
    scripts: delivery.Scripts, incarnation: str, hostname: str, ttl_s: int, riders: list[Rider],
) -> None:
    """Each rider's STARTED under its lease, in one round trip (as the
    leader's start: deliveries counted, revocations and deadlines read)."""
    answers = scripts.pipelined([
        start_call(scripts, incarnation, r.task_id, hostname, ttl_s, r.requests) for r in riders])
    for rider, (code, deliveries, *flags) in zip(riders, answers, strict=True):
        if code != 1:
            continue  # fenced, or it already has its result: only its ack is left
        n = len(rider.requests)
        rider.started = True
        rider.deliveries = int(deliveries)
        rider.revoked = [int(f) for f in flags[:n]]
        rider.expired = [int(f) for f in flags[n:]]


def ack(scripts: delivery.Scripts, incarnation: str, riders: list[Rider]) -> None:
    scripts.pipelined([delivery.ack_joined_call(scripts, incarnation, r.tag) for r in riders])


def give_back(client: redis.Redis, incarnation: str, riders: list[Rider], why: str) -> None:
    """The riders back to the head of their lanes, to run alone next time
    (a message that went back has lost its join header)."""
    if not riders:
        return
    try:
        delivery.give_back(client, incarnation, [r.tag for r in riders], why=why, forget=False)
    except redis.RedisError as exc:
        # The audit gives them back once the leader is settled.
        log.warning("%d task(s) taken along not given back now (%s); they will be",
                    len(riders), exc)


def ledger_starts(incarnation: str, riders: list[Rider], started_at: float) -> list[bytes]:
    return [orjson.dumps({"event": "start", "task": r.task_id, "incarnation": incarnation,
                          "requests": [r.requests[i].id for i in r.live()], "t": started_at,
                          "pid": os.getpid(), "joined": True})
            for r in riders if r.started and r.live()]


def announce(task: Any, hostname: str, riders: list[Rider], bodies: list[Any],
             runtime_s: float) -> None:
    """Celery's task-started and task-succeeded events for the riders, as
    the worker sends them for the task they rode with, so that Flower and
    celery-exporter see every task end (Celery itself never saw these)."""
    try:
        with task.app.events.default_dispatcher(hostname=hostname) as dispatcher:
            for rider, body in zip(riders, bodies, strict=True):
                dispatcher.send("task-started", uuid=rider.task_id)
                dispatcher.send("task-succeeded", uuid=rider.task_id,
                                result=f"{len(body.outcomes)} outcome(s), run with {task.request.id}",
                                runtime=runtime_s)
    except Exception as exc:  # noqa: BLE001 - monitoring must never fail a job
        log.warning("task events for %d task(s) taken along not sent (%s)", len(riders), exc)


def start_call(
    scripts: delivery.Scripts, incarnation: str, task_id: str, hostname: str, ttl_s: int,
    requests: list[RequestItem],
) -> delivery.Call:
    """A task's start under its lease, for its requests (the leader's as a
    rider's)."""
    return delivery.start_call(
        scripts, incarnation, task_id, ResultDoc.started(task_id, os.getpid(), hostname).encode(),
        ttl_s, [redis_keys.revoked(r.id) for r in requests], [r.deadline for r in requests])


class Fenced(Exception):
    """The start found no lease of this incarnation's for the task.

    Normally another worker owns it now (this one was declared dead) and the
    requeue that follows finds nothing of ours to give back. But after a
    Sentinel failover with a split brain, a pool child can still be talking
    to the demoted primary while the delivery is ours on the new one: then
    the requeue (owner-checked, like every give-back) puts the job back, where
    an acknowledgement would have dropped it unrun."""


def read_start(
    got: list[Any], task_id: str, incarnation: str, n: int,
) -> tuple[int, list[int], list[int]] | None:
    """(deliveries, revoked, expired), or None when the task already has its
    result; ``Fenced`` when this incarnation does not hold its lease."""
    code, deliveries, *flags = got
    if code == 0:
        log.warning("task %s: not run: worker %s does not hold its lease", task_id, incarnation)
        raise Fenced(task_id)
    if code == -1:
        log.warning("task %s: not run again: it already has its result", task_id)
        return None
    revoked, expired = flags[:n], flags[n:]
    return int(deliveries), [int(r) for r in revoked], [int(e) for e in expired]
