"""kombu's Redis transport with owned deliveries (see ``turnout.core.delivery``).

Selected with Celery's ``broker_transport`` as a dotted path, so the broker
URL stays a plain ``redis://``. A worker names its incarnation in the
transport options (``turnout_incarnation``); without one (the router, Celery's
own tools) the QoS behaves exactly as kombu's.

What changes against kombu:

- the channel never BRPOPs a message: idle workers block on the queues'
  *bells* (one token per message), then take the message with
  ``delivery.claim``, which pops it and records it as unacked and owned in
  one Lua call. kombu's BRPOP-then-MULTI left a moment in which a killed
  worker lost the message it had just popped; here there is none;
- ``append`` (for a message that did not come through ``claim``) writes the
  unacked entry and its owner in one Lua call, and only while the
  incarnation is registered;
- ``ack`` and ``reject`` remove a delivery only while this incarnation owns it;
- ``restore_by_tag`` (a requeue, or the restore at shutdown) gives back only
  what this incarnation owns;
- ``restore_visible``, kombu's visibility-timeout sweep, skips deliveries that
  have an owner: those come back through the reaper when their owner dies,
  and never while it lives, however long the job runs;
- an ack or requeue that cannot reach Redis is kept and tried again on the
  next sweep, and the sweep also gives back anything Redis says this worker
  holds that the worker no longer has in hand (a delivery must never stay
  owned by a live worker that has forgotten it: nothing else would free it).
"""

from __future__ import annotations

import logging
import os
import signal
from queue import Empty
from time import monotonic, sleep, time
from typing import Any, NoReturn

import redis
import redis.sentinel
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps, loads

from turnout.core import broker, delivery
from turnout.core.redis_keys import lane_key, lane_named, queue_of
from turnout.core.settings import RedisSettings

log = logging.getLogger("turnout.core.transport")


class OwningQoS(kombu_redis.QoS):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = self.channel.connection.client.transport_options
        self.incarnation: str | None = options.get("turnout_incarnation")
        # A client of our own for the ownership bookkeeping, on the whole
        # broker URL (celery_config puts it in the transport options, TLS
        # options and Sentinels included): after a lost connection kombu
        # closes this channel, yet the pool still finishes (and acks) the jobs
        # it delivered, and those acks must reach Redis.
        self._uri: str = options.get("turnout_broker", "")
        self._redis: redis.Redis | None = None
        self._scripts: delivery.Scripts | None = None
        # tag -> "ack" | "requeue": what could not reach Redis yet.
        self._deferred: dict[str, str] = {}

    def _owned(self) -> bool:
        return self.incarnation is not None

    def _client(self) -> redis.Redis:
        if self._redis is None:
            self._redis = broker.connect(RedisSettings.from_url(self._uri), socket_timeout=10,
                                         socket_connect_timeout=5)
        return self._redis

    def scripts(self, client: Any) -> delivery.Scripts:
        if self._scripts is None or self._scripts.client is not client:
            self._scripts = delivery.Scripts(client)
        return self._scripts

    def append(self, message: Any, delivery_tag: str) -> None:
        if not self._owned():
            return super().append(message, delivery_tag)
        assert self.incarnation is not None
        claimed: set[str] = self.channel.claimed
        if delivery_tag in claimed:
            # ``claim`` recorded it in Redis already; only kombu's memory is left.
            claimed.discard(delivery_tag)
            super(kombu_redis.QoS, self).append(message, delivery_tag)
            return
        info = message.delivery_info
        payload = dumps([message._raw, info["exchange"], info["routing_key"]])
        task_id = (message.headers or {}).get("id") or ""
        client = self._client()
        taken = delivery.append(self.scripts(client), self.incarnation, delivery_tag, payload,
                                task_id)
        if not taken:
            # This incarnation was declared dead: the message goes back to the
            # head of its queue at once, and the worker stops (a fresh
            # incarnation takes its place). The task's start finds no lease
            # and does not run.
            queue, restored, _ = delivery.restored(payload)
            client.rpush(queue, restored)
            log.error("worker %s was declared dead; stopping it", self.incarnation)
            os.kill(os.getpid(), signal.SIGTERM)
        # kombu's in-memory bookkeeping (prefetch counts, restore at shutdown).
        super(kombu_redis.QoS, self).append(message, delivery_tag)

    def _settle(self, tag: str, how: str) -> None:
        """Ack (or requeue) ``tag`` in Redis now, or keep it for the next sweep."""
        assert self.incarnation is not None
        try:
            client = self._client()
            if how == "requeue":
                delivery.give_back(client, self.incarnation, [tag], why="requeued",
                                   leftmost=True, forget=False)
            elif delivery.ack(self.scripts(client), self.incarnation, tag) == 0:
                log.warning("ack of %s refused: worker %s no longer owns it", tag,
                            self.incarnation)
            self._deferred.pop(tag, None)
        except redis.RedisError as exc:
            # Kept for the next sweep; if this channel is gone by then, the
            # next channel's audit gives the job back once Celery has let go.
            log.warning("%s of %s deferred: Redis unreachable (%s)", how, tag, exc)
            self._deferred[tag] = how

    def ack(self, delivery_tag: str) -> None:
        if not self._owned():
            return super().ack(delivery_tag)
        self._settle(delivery_tag, "ack")
        super(kombu_redis.QoS, self).ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if not self._owned():
            return super().reject(delivery_tag, requeue)
        self._settle(delivery_tag, "requeue" if requeue else "ack")
        self._release_riders(delivery_tag)
        super(kombu_redis.QoS, self).ack(delivery_tag)

    def _release_riders(self, leader: str) -> None:
        """Give back at once what a task's pool child had taken along and not
        settled (the child died with the pass: Celery rejects the task), rather
        than at the next sweep's audit. Rejects are rare; acks never look."""
        assert self.incarnation is not None
        try:
            client = self._client()
            riders = [_text(t) for t, who in client.hgetall(delivery.joined(self.incarnation)).items()
                      if _text(who) == leader]
            if riders:
                moved = delivery.give_back(client, self.incarnation, riders, why="requeued",
                                           forget=False)
                log.warning("worker %s: %d task(s) taken along by %s given back with it",
                            self.incarnation, moved, leader)
        except redis.RedisError as exc:
            log.warning("tasks taken along by %s not given back now (%s); the audit will",
                        leader, exc)

    def _audit(self) -> None:
        """Settle what was deferred, then give back what Redis says we hold
        but this worker no longer has in hand: not in this channel's memory,
        and not among the requests Celery is still running or holding (those
        may have come through an earlier channel, before a reconnect). Runs
        in the consumer's thread, like ``append``, so the views cannot
        disagree mid-delivery."""
        assert self.incarnation is not None
        for tag, how in list(self._deferred.items()):
            self._settle(tag, how)
        client = self._client()
        # Both in one snapshot: a pool child's join writes both at once.
        with client.pipeline(transaction=True) as pipe:
            pipe.smembers(delivery.held(self.incarnation))
            pipe.hgetall(delivery.joined(self.incarnation))
            raw_held, raw_joined = pipe.execute()
        held = {_text(t) for t in raw_held}
        in_hand = set(self._delivered) | set(self._deferred) | _in_hand()
        # A task a pool child took into its leader's forward pass is in hand
        # exactly while the leader is; once the leader is settled (its child
        # died, say), whatever joined it and was not acked goes back.
        riding = {_text(t) for t, leader in raw_joined.items() if _text(leader) in in_hand}
        forgotten = held - in_hand - riding
        if forgotten:
            moved = delivery.give_back(client, self.incarnation, forgotten, why="forgotten",
                                       forget=False)
            log.warning("worker %s: %d held job(s) it no longer had in hand given back",
                        self.incarnation, moved)

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        if not self._owned():
            return super().restore_by_tag(tag, client=client, leftmost=leftmost)
        assert self.incarnation is not None
        delivery.give_back(
            self._client(), self.incarnation, [tag], why="restored", leftmost=leftmost,
            forget=False,
        )

    def restore_unacked(self, client: Any = None) -> None:
        """At shutdown, or when the connection is lost: give back what this
        worker holds and has not acked. kombu's own version raises from a
        channel whose connection is already gone (and Celery then dies of an
        "unrecoverable error"); here a failure only logs, since the next
        channel's audit, or a reaper, gives those jobs back anyway."""
        if not self._owned():
            return super().restore_unacked(client)
        assert self.incarnation is not None
        tags = [t for t in self._delivered if t not in self._dirty]
        self._delivered.clear()
        if not tags:
            return None
        try:
            delivery.give_back(self._client(), self.incarnation, tags, why="restored",
                               forget=False)
        except Exception as exc:  # noqa: BLE001 - closing a broken channel; see above
            log.warning("worker %s: %d job(s) not given back on closing (%s: %s); they will be",
                        self.incarnation, len(tags), type(exc).__name__, exc)
        return None

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        self._vrestore_count += 1
        if (self._vrestore_count - 1) % (interval or 1):
            return
        if self._owned():
            self._audit()
        with self.channel.conn_or_acquire() as client:
            ceil = time() - self.visibility_timeout
            try:
                with kombu_redis.Mutex(client, self.unacked_mutex_key, self.unacked_mutex_expire):
                    visible = client.zrange(
                        self.unacked_index_key, ceil, 0, desc=True, byscore=True,
                        offset=num and start, num=num, withscores=True,
                    )
                    for tag, _score in visible or []:
                        # An owned delivery is its owner's until the owner is
                        # declared dead; only ownerless ones age out here.
                        if client.hexists(delivery.OWNERS, tag):
                            continue
                        super().restore_by_tag(tag, client)
            except kombu_redis.MutexHeld:
                pass
            except redis.ResponseError as exc:
                if not broker.refuses_writes(exc):
                    raise
                # The broker answers but refuses writes (full, or its disk):
                # the sweep waits for the next round rather than end the worker.
                log.warning("visibility sweep skipped: %s", broker.why(exc))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _in_hand() -> set[str]:
    """The delivery tags of the requests this Celery worker is running or
    holding (empty outside a worker)."""
    try:
        from celery.worker import state
    except ImportError:
        return set()
    tags = set()
    for request in [*state.active_requests, *state.reserved_requests]:
        message = getattr(request, "message", None)
        tag = getattr(message, "delivery_tag", None)
        if tag:
            tags.add(str(tag))
    return tags


class Channel(kombu_redis.Channel):
    QoS = OwningQoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = self.connection.client.transport_options
        self.incarnation: str | None = options.get("turnout_incarnation")
        self.lane_share = int(options.get("turnout_lane_share", 10))
        self.claimed: set[str] = set()  # tags taken by claim, awaiting append
        self._bells: list[str] = []
        self._claim_scripts: delivery.Scripts | None = None
        self._refused_logged = 0.0

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """A message sent through kombu (a retry, a chord's callback, a
        training job) rings its queue's bell like the router's own messages,
        so an idle worker takes it at once instead of at its next timeout."""
        if kwargs.get("_publish_batch") is not None:
            return super()._put(queue, message, **kwargs)
        # A message the router put in a lane keeps it when Celery sends it
        # again (a retry copies the headers).
        key = lane_key(queue, lane_named((message.get("headers") or {}).get("turnout_lane")))
        with self.conn_or_acquire() as client, client.pipeline(transaction=True) as pipe:
            pipe.lpush(key, dumps(message))
            pipe.lpush(delivery.bell(queue), 1)
            pipe.execute()

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self.incarnation is None:
            return super()._brpop_start(timeout)
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        # kombu's priorities are not used: Turnout's lanes are its own lists,
        # chosen inside the claim; a queue's lanes share its one bell.
        self._bells = list(queues)
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        self.client.connection.send_command(
            "BRPOP", *(delivery.bell(q) for q in queues), timeout or 0
        )

    def _brpop_read(self, **options: Any) -> bool:
        if self.incarnation is None:
            return bool(super()._brpop_read(**options))
        try:
            try:
                rang = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except redis.ResponseError as exc:
                self._refused(exc)  # BRPOP pops the bell: a write
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()
        queues = list(self._bells)
        first = 0
        if rang:
            # The rung queue first, so that its message is the one taken.
            key = rang[0].decode() if isinstance(rang[0], bytes) else rang[0]
            rung = key.removeprefix(delivery.bell(""))
            if rung in queues:
                queues.remove(rung)
                queues.insert(0, rung)
                first = 1
        if not queues:
            raise Empty()
        if self._claim_scripts is None:
            self._claim_scripts = delivery.Scripts(self.client)
        try:
            got = delivery.claim(self._claim_scripts, self.incarnation, queues, first,
                                 self.lane_share)
        except redis.ResponseError as exc:
            # Refused before it wrote anything (Redis checks a script's first
            # write): the message is still in its queue, and the next poll's
            # claim looks there whether or not a bell rings.
            self._refused(exc)
        if got == -1:
            log.error("worker %s was declared dead; stopping it", self.incarnation)
            os.kill(os.getpid(), signal.SIGTERM)
            raise Empty()
        if not isinstance(got, tuple):
            raise Empty()  # a bell without a message (taken by another worker), or a timeout
        lane, raw = got
        queue = queue_of(lane)  # the lane's list: its queue is what was consumed
        message = loads(raw)
        self.claimed.add(message["properties"]["delivery_tag"])
        self._queue_cycle.rotate(queue)
        self.connection._deliver(message, queue)
        return True

    def _receive_one(self, c: Any) -> Any:
        """kombu's fanout receive (the control channel), with the pubsub
        connection's health-check PING refused by a broker that cannot write
        its disk (Redis refuses PING then) taken as a quiet round, not as
        the end of the worker."""
        try:
            return super()._receive_one(c)
        except redis.ResponseError as exc:
            self._refused(exc)

    def _refused(self, exc: redis.ResponseError) -> NoReturn:
        """A poll, a claim or a fanout read the broker refused: a worker whose
        broker is full or cannot write its disk waits it out, where Celery
        would end it (a ResponseError is no connection error to kombu)."""
        if not broker.refuses_writes(exc):
            raise exc
        now = monotonic()
        if now - self._refused_logged > 5:
            log.warning("not taking jobs: %s", broker.why(exc))
            self._refused_logged = now
        # The hub would call again at once: a short pause instead of a spin.
        sleep(0.2)
        raise Empty()


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """The owning channel on the primary that Redis Sentinel names: kombu's
    Sentinel pool under Turnout's claim, bells and lanes.

    kombu takes the Sentinels from the broker URL's ``;``-separated
    alternates, but it also treats them as failover URLs: after a
    connection error it switches to the next one, *parsed afresh, with the
    stock Sentinel transport*, which pops messages with no owner and no
    lease (every start then fenced, every job acked unrun). So kombu is given
    one URL, and the Sentinels come from the whole broker URL here."""

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        where = RedisSettings.from_url(self.connection.client.transport_options["turnout_broker"])
        params = self._connparams(asynchronous)
        params.pop("host", None)
        params.pop("port", None)
        manager = redis.sentinel.Sentinel(
            list(where.sentinels), min_other_sentinels=getattr(self, "min_other_sentinels", 0),
            sentinel_kwargs=getattr(self, "sentinel_kwargs", None), **params)
        # kept, as kombu keeps it, so that its connections are closed with the pools
        if asynchronous:
            self._async_sentinel_manager = manager
        else:
            self._sentinel_manager = manager
        auth = {k: params[k] for k in ("username", "password") if k in params}
        return manager.master_for(where.master_name, redis.Redis, **auth).connection_pool


class SentinelTransport(Transport):
    """``sentinel://`` brokers (kombu's Sentinel transport, with owned deliveries)."""

    Channel = SentinelChannel
    default_port = 26379  # type: ignore[assignment]  # kombu says None
