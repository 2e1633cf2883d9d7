"""Deliveries owned by live workers: who holds which message, who may ack it,
who may write its result, and how a dead worker's messages come back.

kombu's Redis transport keeps a delivered message in the ``unacked`` hash (by
delivery tag) until it is acked; the only way back for a message whose worker
died is the visibility timeout. Turnout adds an owner to each delivery:

- every worker start is a new *incarnation* (``name#random``), registered in
  ``turnout:incarnations`` with a beat counter that its parent's heartbeat
  increments;
- ``append`` (kombu's ``QoS.append``, in ``turnout.transport``) writes the
  unacked entry, the owner (``owners[tag] = incarnation\\ttask_id``), the
  incarnation's ``held`` set and the task's lease (``leases[task_id] =
  incarnation\\ttag``) in one Lua call, and only while the incarnation is
  registered: a reaped incarnation gets nothing more;
- ack and reject remove a delivery only while its owner asks;
- a reaper (``Reaper``) that sees an incarnation's beat counter stand still
  for ``dead_after_s`` on its *own* monotonic clock gives that incarnation's
  deliveries back to the head of their queues, each with a new delivery tag
  (kombu keeps a message's tag across restores; a fresh one tells the two
  deliveries apart), marked redelivered, in one transaction;
- a task's start and its result are written only while the lease names the
  writer's incarnation, and only the first result of a task is kept
  (``store``): a worker that wakes up after its jobs were given away writes
  nothing, and a second result is dropped and counted.

Nothing here connects at import time; callers pass their clients in.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from turnout import keys

log = logging.getLogger("turnout.delivery")

# kombu's own key names (Channel.unacked_key, unacked_index_key).
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"

INCARNATIONS = f"{keys.PREFIX}:incarnations"  # hash: incarnation -> beat counter
OWNERS = f"{keys.PREFIX}:owners"  # hash: delivery tag -> "incarnation\ttask_id"
LEASES = f"{keys.PREFIX}:leases"  # hash: task id -> "incarnation\tdelivery tag"
STATS = f"{keys.PREFIX}:delivery-stats"  # hash of counters
LEDGER = f"{keys.PREFIX}:ledger"  # list of JSON run records (when the ledger is on)


def bell(queue: str) -> str:
    """One token per message pushed onto ``queue``: what idle workers block
    on (BRPOP), so that the message itself is only ever taken by ``claim``."""
    return f"{keys.PREFIX}:bell:{queue}"


def held(incarnation: str) -> str:
    """The delivery tags an incarnation holds (a set)."""
    return f"{keys.PREFIX}:held:{incarnation}"


def done(task_id: str) -> str:
    """Set once, by the first result written for a task."""
    return f"{keys.PREFIX}:done:{task_id}"


def new_incarnation(name: str) -> str:
    return f"{name}#{secrets.token_hex(6)}"


# The one way a worker takes a message: popped from its queue and recorded as
# unacked and owned in the same script, so that no moment exists in which the
# message is out of Redis and owned by no one (kombu's BRPOP, then a MULTI,
# had one: a worker killed between the two lost the message).
# KEYS: incarnations, unacked_index, unacked, owners, held, leases,
#       then n queues, then their n bells
# ARGV: incarnation, now, n, index of the bell already taken (0: none)
# Returns -1: the incarnation was reaped; 0: nothing; {queue, message}.
_CLAIM = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local n = tonumber(ARGV[3])
for i = 1, n do
  local queue = KEYS[6 + i]
  local msg = redis.call('RPOP', queue)
  if msg then
    if tonumber(ARGV[4]) ~= i then redis.call('RPOP', KEYS[6 + n + i]) end
    local ok, m = pcall(cjson.decode, msg)
    local tag, task = nil, ''
    if ok and type(m) == 'table' then
      if type(m.properties) == 'table' and type(m.properties.delivery_tag) == 'string' then
        tag = m.properties.delivery_tag
      end
      if type(m.headers) == 'table' and type(m.headers.id) == 'string' then task = m.headers.id end
    end
    if tag then
      redis.call('ZADD', KEYS[2], ARGV[2], tag)
      redis.call('HSET', KEYS[3], tag, '[' .. msg .. ',"",' .. cjson.encode(queue) .. ']')
      redis.call('HSET', KEYS[4], tag, ARGV[1] .. '\t' .. task)
      redis.call('SADD', KEYS[5], tag)
      if task ~= '' then redis.call('HSET', KEYS[6], task, ARGV[1] .. '\t' .. tag) end
    end
    return {queue, msg}
  end
end
return 0
"""

# KEYS: incarnations, unacked_index, unacked, owners, held, leases
# ARGV: incarnation, tag, unacked payload, score, task id
_APPEND = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1] .. '\\t' .. ARGV[5])
redis.call('SADD', KEYS[5], ARGV[2])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[6], ARGV[5], ARGV[1] .. '\\t' .. ARGV[2]) end
return 1
"""

# KEYS: owners, unacked_index, unacked, held, leases, stats
# ARGV: incarnation, tag
_ACK = """
local owner = redis.call('HGET', KEYS[1], ARGV[2])
if not owner then
  if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then
    redis.call('HINCRBY', KEYS[6], 'ack_refused', 1)
    return 0
  end
  return 2
end
local tab = string.find(owner, '\\t', 1, true)
if string.sub(owner, 1, tab - 1) ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[6], 'ack_refused', 1)
  return 0
end
local task = string.sub(owner, tab + 1)
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[2])
if task ~= '' and redis.call('HGET', KEYS[5], task) == ARGV[1] .. '\\t' .. ARGV[2] then
  redis.call('HDEL', KEYS[5], task)
end
return 1
"""

# KEYS: incarnations
# ARGV: incarnation
_BEAT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
"""

# KEYS: leases, done, result key, stats, deliveries, then revoked keys
# ARGV: incarnation, task id, STARTED meta, ttl
# Returns {code, deliveries, revoked...}: code 1 run, 0 fenced, -1 already done.
_START = """
if ARGV[1] ~= '' then
  local lease = redis.call('HGET', KEYS[1], ARGV[2])
  if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\\t' then
    redis.call('HINCRBY', KEYS[4], 'fenced_starts', 1)
    return {0, 0}
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[4], 'skipped_done', 1)
  return {-1, 0}
end
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4])
redis.call('PUBLISH', KEYS[3], ARGV[3])
local n = redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], ARGV[4])
local out = {1, n}
for i = 6, #KEYS do out[#out + 1] = redis.call('EXISTS', KEYS[i]) end
return out
"""

# KEYS: leases, done, result key, stats, ledger
# ARGV: incarnation ('' = no lease check), task id, meta, ttl, ledger entry (or '')
# Returns 1 stored, 0 fenced (the writer no longer owns the task), -1 duplicate.
_STORE = """
local outcome = 1
if ARGV[1] ~= '' then
  local lease = redis.call('HGET', KEYS[1], ARGV[2])
  if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\\t' then
    outcome = 0
  end
end
if outcome == 1 and not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[4]) then
  outcome = -1
end
if outcome == 1 then
  redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4])
  redis.call('PUBLISH', KEYS[3], ARGV[3])
elseif outcome == 0 then
  redis.call('HINCRBY', KEYS[4], 'fenced_results', 1)
else
  redis.call('HINCRBY', KEYS[4], 'duplicate_results', 1)
end
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[5], string.sub(ARGV[5], 1, -2) .. ',"stored":' .. outcome .. '}')
end
return outcome
"""


class Scripts:
    """The Lua scripts, registered on one client (EVALSHA after the first call)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.claim = client.register_script(_CLAIM)
        self.append = client.register_script(_APPEND)
        self.ack = client.register_script(_ACK)
        self.beat = client.register_script(_BEAT)
        self.start = client.register_script(_START)
        self.store = client.register_script(_STORE)


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
    scripts: Scripts, incarnation: str, queues: list[str], bell_index: int = 0
) -> tuple[str, str] | int:
    """Take the next message from the first of ``queues`` that has one, owned
    by ``incarnation``: (queue, message JSON); 0 when all are empty; -1 when
    the incarnation was reaped. ``bell_index`` (1-based) names the queue whose
    bell the caller already popped; otherwise one bell of the claimed queue is
    popped here, so that bells and messages stay about one to one."""
    got = scripts.claim(
        keys=[INCARNATIONS, UNACKED_INDEX, UNACKED, OWNERS, held(incarnation), LEASES,
              *queues, *(bell(q) for q in queues)],
        args=[incarnation, time.time(), len(queues), bell_index],
    )
    if isinstance(got, list):
        queue, message = (x.decode() if isinstance(x, bytes) else x for x in got)
        return queue, message
    return int(got)


def ack(scripts: Scripts, incarnation: str, tag: str, client: Any = None) -> int:
    """Remove a delivery if ``incarnation`` owns it: 1 done, 0 refused (another
    owner, or given back), 2 nothing to remove (unowned and not unacked)."""
    return int(scripts.ack(
        keys=[OWNERS, UNACKED_INDEX, UNACKED, held(incarnation), LEASES, STATS],
        args=[incarnation, tag],
        client=client,
    ))


def beat(scripts: Scripts, incarnation: str) -> int:
    """One heartbeat: the new counter, or -1 when the incarnation was reaped."""
    return int(scripts.beat(keys=[INCARNATIONS], args=[incarnation]))


def _restored(payload: bytes | str) -> tuple[str, str, str]:
    """The message as it goes back to its queue: marked redelivered, with a
    new delivery tag. Returns (queue, message JSON, new tag)."""
    message, _exchange, routing_key = json.loads(payload)
    tag = str(uuid.uuid4())
    properties = message.setdefault("properties", {})
    properties["delivery_tag"] = tag
    properties.setdefault("delivery_info", {})["redelivered"] = True
    message.setdefault("headers", {})["redelivered"] = True
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
                moved = 0
                for tag, payload, owner in zip(wanted, payloads, owners, strict=True):
                    owner_text = owner.decode() if isinstance(owner, bytes) else owner
                    pipe.srem(key, tag)
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
                    queue, message, _ = _restored(payload)
                    (pipe.lpush if leftmost else pipe.rpush)(queue, message)
                    pipe.lpush(bell(queue), 1)
                    moved += 1
                if moved:
                    pipe.hincrby(STATS, f"given_back_{why}", moved)
                if forget:
                    pipe.hdel(INCARNATIONS, incarnation)
                    pipe.delete(key)
                pipe.execute()
                return moved
            except redis.WatchError:
                continue


@dataclass
class Reaper:
    """Declares incarnations dead and gives their deliveries back.

    Death is judged by this process's monotonic clock alone: an incarnation is
    dead once its beat counter has not moved for ``dead_after_s`` *as seen
    from here*, over an unbroken watch; no timestamp written by another host
    is compared with ours. When this process cannot read Redis, or has itself
    not looked for a while (it was frozen, starved, or busy), its observations
    start over: time it did not watch never counts as a worker's silence.

    Any number of reapers may run at once (each API process, ``turnout up``,
    each worker): each give-back is one transaction (``give_back``).
    """

    client: redis.Redis
    dead_after_s: float
    name: str = "reaper"
    clock: Any = time.monotonic
    # A gap longer than this between two looks breaks the watch (default:
    # half of dead_after_s).
    max_gap_s: float | None = None
    _seen: dict[str, tuple[Any, float]] = field(default_factory=dict)
    _last_look: float | None = None

    def forget(self) -> None:
        """Start the watch over (this process could not look)."""
        self._seen.clear()
        self._last_look = None

    def tick(self) -> list[tuple[str, int]]:
        """One look: returns the incarnations reaped now, with how many
        deliveries each gave back."""
        try:
            counters = self.client.hgetall(INCARNATIONS)
        except redis.RedisError:
            self.forget()
            raise
        now = self.clock()
        gap = self.max_gap_s if self.max_gap_s is not None else self.dead_after_s / 2
        if self._last_look is not None and now - self._last_look > gap:
            self._seen.clear()
        self._last_look = now
        reaped: list[tuple[str, int]] = []
        current = {
            (k.decode() if isinstance(k, bytes) else k): v for k, v in counters.items()
        }
        for incarnation in list(self._seen):
            if incarnation not in current:
                del self._seen[incarnation]
        for incarnation, counter in current.items():
            seen = self._seen.get(incarnation)
            if seen is None or seen[0] != counter:
                self._seen[incarnation] = (counter, now)
                continue
            if now - seen[1] < self.dead_after_s:
                continue
            moved = give_back(self.client, incarnation, why="reaped")
            del self._seen[incarnation]
            reaped.append((incarnation, moved))
            log.warning(
                "%s: worker %s silent for %.1f s: declared dead; %d job(s) given back",
                self.name, incarnation, now - seen[1], moved,
            )
        return reaped


def stats(client: redis.Redis) -> dict[str, int]:
    raw = client.hgetall(STATS)
    return {
        (k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()
    }


class ReaperThread:
    """A ``Reaper`` looking every ``interval_s`` on a thread of its own, so a
    busy event loop or a long forward pass never delays it."""

    def __init__(self, url: str, dead_after_s: float, interval_s: float, name: str) -> None:
        self.url = url
        self.dead_after_s = dead_after_s
        self.interval_s = interval_s
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"turnout-{self.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        reaper = Reaper(client, self.dead_after_s, name=self.name)
        failing = False
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    reaper.tick()
                    failing = False
                except redis.RedisError as exc:
                    if not failing:  # once per outage, not once per tick
                        log.warning("%s: cannot reach Redis (%s); retrying", self.name, exc)
                    failing = True
        finally:
            client.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
