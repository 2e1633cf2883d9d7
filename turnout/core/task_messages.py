"""Celery task messages, built here and pushed by the caller: the router in a
redis.asyncio MULTI, a worker inside the Lua script that hands a pipeline's
step on (``flow_hop.lua``).

``send_task`` is synchronous (kombu) and would cost a thread hop and a Redis
round trip of its own per job. Instead the message is built with Celery's own
``as_task_v2`` (protocol 2, the exact headers a worker expects), wrapped the
way kombu's Redis transport wraps it, and LPUSHed in the same MULTI as the
router's task records: one round trip, and a job is never queued without its
record, nor recorded without being queued.

While monitoring is on, the same round trip also PUBLISHes Celery's
``task-sent`` event (which ``send_task`` would have sent), so that Flower and
celery-exporter see each task from the moment it is queued: its queue, and
how long it waited.

JSON only, as everywhere in Turnout.
"""

from __future__ import annotations

import base64
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from celery import Celery
from celery.events import Event
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset

from turnout.core import redis_keys
from turnout.core.celery_app import TASK_PREDICT
from turnout.core.delivery import JOIN_HEADER, join_key
from turnout.core.redis_keys import DEFAULT_LANE, lane_key

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
# Celery's expiry is judged on the worker's clock, which Turnout never trusts
# for deadlines: it stands this far behind the latest deadline of a task's
# requests, only to catch a message that somehow escaped the check at start.
_EXPIRES_MARGIN_S = 60.0
# Celery's event exchange; on Redis a fanout, each event a PUBLISH.
EVENT_EXCHANGE = "celeryev"


@dataclass(frozen=True)
class QueuedMessage:
    message: str  # what to LPUSH onto the queue
    # (channel, payload) of the task-sent event to PUBLISH, while monitoring
    event: tuple[str, bytes] | None = None

    def queue(self, pipe: Pipeline, queue: str, lane: str = DEFAULT_LANE) -> None:
        """Add to ``pipe`` what queues the task on ``queue``'s ``lane``: the
        message, one bell token that wakes one idle worker, and the task-sent
        event if any."""
        pipe.lpush(lane_key(queue, lane), self.message)
        pipe.lpush(redis_keys.bell(queue), 1)
        if self.event is not None:
            pipe.publish(*self.event)


def expires_backstop(time_limit_s: float, deadlines: list[float | None]) -> float | None:
    """Celery's ``expires`` for a task whose requests have ``deadlines``: the
    latest of them plus a wide margin (the time limit, at least a minute);
    None when any request has no deadline."""
    if not deadlines or any(d is None for d in deadlines):
        return None
    return max(d for d in deadlines if d is not None) + max(_EXPIRES_MARGIN_S, time_limit_s)


def _envelope(body: bytes, headers: dict[str, Any], exchange: str, routing_key: str,
              delivery_mode: int) -> dict[str, Any]:
    """A message as kombu's Redis transport writes it: base64 body, JSON."""
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "delivery_mode": delivery_mode,
            "delivery_info": {"exchange": exchange, "routing_key": routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


class TaskMessages:
    def __init__(self, celery: Celery, db: int = 0,
                 monitoring: Callable[[], bool] = lambda: False) -> None:
        self._amqp = celery.amqp
        self._clock = celery.clock
        # kombu's fanout topic for task-sent: keyprefix_fanout ('/{db}.'),
        # the exchange, then the routing key (fanout_patterns is on).
        self._sent_topic = f"/{db}.{EVENT_EXCHANGE}/task.sent"
        self._hostname = anon_nodename()
        # Whether monitoring is on (TURNOUT_EVENTS, or a `turnout flower` running).
        self.monitoring = monitoring

    def predict(
        self,
        task_id: str,
        queue: str,
        args: tuple[Any, ...],
        time_limit: float,
        soft_time_limit: float,
        group_id: str | None = None,
        group_index: int | None = None,
        lane: str = DEFAULT_LANE,
        joinable: bool = False,
        expires: float | None = None,
    ) -> QueuedMessage:
        """The JSON that kombu's Redis transport would LPUSH onto ``queue``,
        and the task-sent event while monitoring is on. ``joinable``: a worker
        running another task of the same model and version may take this one
        into its forward pass (the join header says which, and how many rows).
        ``expires`` (epoch s): Celery's own expiry, a backstop far behind the
        deadline that the worker checks on Redis's clock at start."""
        return self.build(
            TASK_PREDICT, task_id, queue, args, time_limit, soft_time_limit,
            group_id=group_id, group_index=group_index, lane=lane, joinable=joinable,
            expires=expires,
            # The default repr of the arguments costs more than the rest of
            # the message for a large batch; the rows are not worth logging.
            # Flower shows it for each task: the model and the request count.
            argsrepr=f"({args[0]!r}, {len(args[1])} request(s))",
        )

    def build(
        self,
        name: str,
        task_id: str,
        queue: str,
        args: tuple[Any, ...],
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        *,
        group_id: str | None = None,
        group_index: int | None = None,
        lane: str = DEFAULT_LANE,
        joinable: bool = False,
        expires: float | None = None,
        argsrepr: str | None = None,
    ) -> QueuedMessage:
        """Task ``name``'s message (``predict``'s, or any other task's)."""
        message = self._amqp.as_task_v2(
            task_id,
            name,
            args=args,
            kwargs={},
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            root_id=task_id,
            group_id=group_id,
            group_index=group_index,
            origin=_ORIGIN,
            # The worker stores the result itself (workers/runtime.py); Celery
            # still stores failures (task_store_errors_even_if_ignored).
            ignore_result=True,
            argsrepr=argsrepr if argsrepr is not None else repr(args),
            kwargsrepr="{}",
            create_sent_event=self.monitoring(),
            expires=(datetime.fromtimestamp(expires, tz=UTC) if expires is not None else None),
        )
        headers = message.headers
        if lane != DEFAULT_LANE or joinable:
            headers = dict(headers)
            if lane != DEFAULT_LANE:
                headers["turnout_lane"] = lane
            if joinable:
                model, requests, spec = args
                rows = sum(len(r["rows"]) for r in requests)
                key = join_key(model, str(spec.get("version") or ""), bool(spec.get("pinned")))
                headers[JOIN_HEADER] = f"{key}|{rows}"
        envelope = _envelope(orjson.dumps(message.body), headers, "", queue, 2)
        envelope["properties"] = {**message.properties, **envelope["properties"]}
        built = orjson.dumps(envelope).decode()
        if message.sent_event is None:
            return QueuedMessage(built)
        event = Event(
            "task-sent", hostname=self._hostname, utcoffset=utcoffset(), pid=os.getpid(),
            clock=self._clock.forward(), queue=queue, exchange="", routing_key=queue,
            **message.sent_event,
        )
        payload = _envelope(orjson.dumps(event), {"hostname": self._hostname}, EVENT_EXCHANGE,
                            "task.sent", 1)
        return QueuedMessage(built, (self._sent_topic, orjson.dumps(payload)))
