"""Taking, acking and giving back deliveries, each one atomic step in Redis."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterable
from typing import Any

import redis

from turnout.core.delivery.scripts import Call, Scripts
from turnout.core.redis_keys import (
    DRAINED,
    INCARNATIONS,
    LEASES,
    LEDGER,
    OWNERS,
    STATS,
    UNACKED,
    UNACKED_INDEX,
    bell,
    deliveries,
    done,
    held,
    joined,
    lane_keys,
    lane_turn,
    result,
)

# The message header the router writes on a predict task that another task of
# the same model and version may take into its forward pass (worker-side
# batching): "model|version|pinned|rows". It is dropped whenever a message goes
# back to its queue, so that a redelivered job never joins another.
JOIN_HEADER = "turnout_join"


def join_key(model: str, version: str, pinned: bool) -> str:
    return f"{model}|{version}|{int(pinned)}"


def new_incarnation(name: str) -> str:
    """This start of worker ``name``: ``name#random``, never reused."""
    return f"{name}#{secrets.token_hex(6)}"


def register(client: redis.Redis, incarnation: str) -> None:
    """Make ``incarnation`` known before it takes its first message."""
    client.hsetnx(INCARNATIONS, incarnation, 0)


def retire(client: redis.Redis, incarnation: str) -> int:
    """A clean stop: give back whatever is still held, then forget the
    incarnation. Returns how many deliveries went back."""
    return give_back(client, incarnation, why="stopped")


def append(
    scripts: Scripts, incarnation: str, tag: str, payload: str, task_id: str,
    client: Any = None,
) -> bool:
    """kombu's unacked write plus the owner, atomically. False: the
    incarnation was reaped, and nothing was written."""
    return bool(scripts.append(
        keys=[INCARNATIONS, UNACKED_INDEX, UNACKED, OWNERS, held(incarnation), LEASES],
        args=[incarnation, tag, payload, time.time(), task_id],
        client=client,
    ))


def claim(
    scripts: Scripts, incarnation: str, queues: list[str], bell_index: int = 0,
    share: int = 10,
) -> tuple[str, str] | int:
    """Take the next message from the first of ``queues`` that has one, owned
    by ``incarnation``: (queue, message JSON); 0 when all are empty; -1 when
    the incarnation was reaped. ``bell_index`` (1-based) names the queue whose
    bell the caller already popped; otherwise one bell of the claimed queue is
    popped here, so that bells and messages stay about one to one."""
    got = scripts.claim(
        keys=[INCARNATIONS, UNACKED_INDEX, UNACKED, OWNERS, held(incarnation), LEASES,
              *(key for q in queues for key in lane_keys(q)), *(bell(q) for q in queues),
              *(lane_turn(q) for q in queues)],
        args=[incarnation, time.time(), len(queues), bell_index, share],
    )
    if isinstance(got, list):
        queue, message = (x.decode() if isinstance(x, bytes) else x for x in got)
        return queue, message
    return int(got)


def join_call(
    scripts: Scripts, incarnation: str, leader: str, key: str, lanes: list[str],
    room: int, depth: int,
) -> Call:
    """The call that takes queued messages whose join key is ``key``, as many
    as fit in ``room`` rows, from ``lanes`` (best first, oldest first), owned by ``incarnation`` and marked joined to the delivery of task
    ``leader`` (which ``incarnation`` must hold); it answers their JSON. For
    ``Scripts.pipelined``, beside the leader's start."""
    return (scripts.join,
            [INCARNATIONS, UNACKED_INDEX, UNACKED, OWNERS, held(incarnation), LEASES,
             joined(incarnation), bell(lanes[0]), *lanes],
            [incarnation, time.time(), leader, key, room, depth])


def start_call(
    scripts: Scripts, incarnation: str, task_id: str, started: bytes, ttl_s: int,
    revoked_keys: list[str], deadlines: list[float | None], result_of: str | None = None,
) -> Call:
    """A task's start under its lease (``delivery_start.lua``): ``started``
    (its STARTED document) stored, one more delivery counted, each request's
    revocation key and deadline read, the deadlines on Redis's clock.
    ``result_of``: the task whose result key shows STARTED (a pipeline's
    step shows it on its request's); the task's own by default."""
    return (scripts.start,
            [LEASES, done(task_id), result(result_of or task_id), STATS, deliveries(task_id),
             *revoked_keys],
            [incarnation, task_id, started, ttl_s,
             *(repr(d) if d is not None else "0" for d in deadlines)])


# How a step hands on (flow_hop.lua): the next step's input and message, a
# branch's answer into its ensemble's join, or the request's result.
HOP_NEXT, HOP_JOIN, HOP_FINAL = "next", "join", "final"


def hop_call(
    scripts: Scripts, incarnation: str, task_id: str, mode: str, target: str, second: str,
    bell_of: str, payload: bytes | str, ttl_s: int, message: str = "", field: str = "",
    branches: int = 0, ledger_entry: str = "",
    drained: tuple[str, int, float, str, str] | None = None,
) -> Call:
    """Step ``task_id`` finished: hand it on and ack its delivery in one
    script, under its lease. ``target`` and ``second`` are, by ``mode``: the
    next step's input key and lane list (HOP_NEXT), the join hash and the
    combine step's lane list (HOP_JOIN), or the request's result key and done
    key (HOP_FINAL); ``bell_of`` the queue whose bell rings for a message."""
    keys = [LEASES, done(task_id), OWNERS, UNACKED_INDEX, UNACKED, held(incarnation), STATS,
            LEDGER, target, second, bell(bell_of)]
    args: list[Any] = [incarnation, task_id, mode, ttl_s, payload, message, field, branches,
                       ledger_entry]
    if drained is not None:
        keys.append(DRAINED)
        args += [drained[0], drained[1], repr(drained[2]), drained[3], drained[4]]
    return scripts.hop, keys, args


def ack(scripts: Scripts, incarnation: str, tag: str, client: Any = None) -> int:
    """Remove a delivery if ``incarnation`` owns it: 1 done, 0 refused (another
    owner, or given back), 2 nothing to remove (unowned and not unacked)."""
    return int(scripts.ack(
        keys=[OWNERS, UNACKED_INDEX, UNACKED, held(incarnation), LEASES, STATS],
        args=[incarnation, tag],
        client=client,
    ))


def ack_joined_call(scripts: Scripts, incarnation: str, tag: str) -> Call:
    """``ack`` of a delivery that came through ``join`` (its joined mark goes
    too), as a call for ``Scripts.pipelined``."""
    return (scripts.ack,
            [OWNERS, UNACKED_INDEX, UNACKED, held(incarnation), LEASES, STATS,
             joined(incarnation)],
            [incarnation, tag])


def beat(scripts: Scripts, incarnation: str) -> int:
    """One heartbeat: the new counter, or -1 when the incarnation was reaped."""
    return int(scripts.beat(keys=[INCARNATIONS], args=[incarnation]))


def restored(payload: bytes | str) -> tuple[str, str, str]:
    """The message as it goes back to its queue: marked redelivered, with a
    new delivery tag. Returns (queue, message JSON, new tag)."""
    message, _exchange, routing_key = json.loads(payload)
    tag = str(uuid.uuid4())
    properties = message.setdefault("properties", {})
    properties["delivery_tag"] = tag
    properties.setdefault("delivery_info", {})["redelivered"] = True
    headers = message.setdefault("headers", {})
    headers["redelivered"] = True
    headers.pop(JOIN_HEADER, None)
    # Turnout's queues are bound by name on the direct exchange: the routing
    # key is the queue (priorities are not used).
    return routing_key, json.dumps(message), tag


def give_back(
    client: redis.Redis,
    incarnation: str,
    tags: Iterable[str] | None = None,
    *,
    why: str = "reaped",
    leftmost: bool = False,
    forget: bool = True,
) -> int:
    """Give ``incarnation``'s deliveries (all of them, or ``tags``) back to
    their queues, atomically: WATCH on the incarnation's held set, so that an
    ack, an append or another reaper in between makes this attempt start over
    and find nothing twice. With ``forget``, the incarnation is also struck
    off, so that it can never take or ack anything again.

    Returns how many messages went back. ``leftmost`` puts them at the end of
    their queue (kombu's requeue on reject); otherwise at the head.
    """
    key = held(incarnation)
    while True:
        with client.pipeline() as pipe:
            try:
                pipe.watch(key)
                members = [t.decode() if isinstance(t, bytes) else t for t in pipe.smembers(key)]
                wanted = members if tags is None else [t for t in tags if t in set(members)]
                payloads = pipe.hmget(UNACKED, wanted) if wanted else []
                owners = pipe.hmget(OWNERS, wanted) if wanted else []
                pipe.multi()
                # First and always: HINCRBY is one of the commands Redis refuses
                # when it is out of memory, and then it refuses the whole
                # transaction. A worker's beat (HINCRBY too) is refused then:
                # no one may declare it dead for a silence that is the broker's.
                pipe.hincrby(STATS, f"given_back_{why}", 0)
                moved = 0
                for tag, payload, owner in zip(wanted, payloads, owners, strict=True):
                    owner_text = owner.decode() if isinstance(owner, bytes) else owner
                    pipe.srem(key, tag)
                    pipe.hdel(joined(incarnation), tag)
                    if owner_text is None or owner_text.split("\t", 1)[0] != incarnation:
                        continue  # not this incarnation's (any more)
                    task_id = owner_text.split("\t", 1)[1]
                    pipe.zrem(UNACKED_INDEX, tag)
                    pipe.hdel(UNACKED, tag)
                    pipe.hdel(OWNERS, tag)
                    if task_id:
                        pipe.hdel(LEASES, task_id)
                    if payload is None:
                        continue
                    queue, message, _ = restored(payload)
                    (pipe.lpush if leftmost else pipe.rpush)(queue, message)
                    pipe.lpush(bell(queue), 1)
                    moved += 1
                if moved:
                    pipe.hincrby(STATS, f"given_back_{why}", moved)
                if forget:
                    pipe.hdel(INCARNATIONS, incarnation)
                    pipe.delete(key, joined(incarnation))
                pipe.execute()
                return moved
            except redis.WatchError:
                continue


def stats(client: redis.Redis) -> dict[str, int]:
    raw = client.hgetall(STATS)
    return {
        (k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()
    }
