"""Celery task messages, built here and pushed with redis.asyncio.

``send_task`` is synchronous (kombu) and would cost a thread hop and a Redis
round trip of its own per job. Instead the message is built with Celery's own
``as_task_v2`` (protocol 2, the exact headers a worker expects), wrapped the
way kombu's Redis transport wraps it, and LPUSHed in the same MULTI as the
router's task records: one round trip, and a job is never queued without its
record, nor recorded without being queued.

JSON only, as everywhere in Turnout.
"""

from __future__ import annotations

import base64
import os
import socket
import uuid
from typing import Any

import orjson
from celery import Celery

from turnout.celery_app import TASK_PREDICT

_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


class TaskMessages:
    def __init__(self, celery: Celery) -> None:
        self._amqp = celery.amqp

    def predict(
        self,
        task_id: str,
        queue: str,
        args: tuple[Any, ...],
        time_limit: float,
        soft_time_limit: float,
        group_id: str | None = None,
        group_index: int | None = None,
    ) -> str:
        """The JSON that kombu's Redis transport would LPUSH onto ``queue``."""
        message = self._amqp.as_task_v2(
            task_id,
            TASK_PREDICT,
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
            # The default repr of the arguments costs more than the rest of
            # the message for a large batch; the rows are not worth logging.
            argsrepr=f"({args[0]!r}, …)",
            kwargsrepr="{}",
        )
        body = orjson.dumps(message.body)
        envelope = {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": message.headers,
            "properties": {
                **message.properties,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        return orjson.dumps(envelope).decode()
