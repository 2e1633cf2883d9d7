"""Celery's Redis result backend, with results written under the task's lease.

Selected in the result backend URL (``turnout.core.backend:FencedRedisBackend+redis://…``).
A final state (SUCCESS, FAILURE, REVOKED) is stored through
``turnout.core.delivery``'s ``store`` script: only while the writer's incarnation
holds the task's lease (in a worker), and only if no result was stored for the
task before. Celery's own read-then-write guard against overwriting a success
is not atomic; this is. Other states, and processes that are no worker (the
router), are stored as Celery stores them.
"""

from __future__ import annotations

import json
import time
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend, SentinelBackend

from turnout.core import delivery, redis_keys


class FencedRedisBackend(RedisBackend):
    """Celery's Redis backend; a final state stored under the task's lease."""

    def _set_with_state(self, key: Any, value: Any, state: str) -> Any:
        if state not in states.READY_STATES:
            return super()._set_with_state(key, value, state)
        conf = self.app.conf
        incarnation = conf.get("turnout_incarnation") or ""
        text = key.decode() if isinstance(key, bytes) else str(key)
        task_id = text.removeprefix(redis_keys.CELERY_RESULT_PREFIX)
        ttl = self.failure_expires if state == states.FAILURE else self.expires
        entry = ""
        if conf.get("turnout_ledger"):
            entry = json.dumps({"event": "result", "task": task_id, "incarnation": incarnation,
                                "state": state, "t": time.time()})
        return self.ensure(self._store_fenced, (task_id, key, value, ttl, incarnation, entry))

    def _store_fenced(self, task_id: str, key: Any, value: Any, ttl: Any, incarnation: str,
                      entry: str) -> int:
        scripts = delivery.Scripts(self.client)
        return int(scripts.store(
            keys=[delivery.LEASES, delivery.done(task_id), key, delivery.STATS, delivery.LEDGER],
            args=[incarnation, task_id, value, int(ttl or 86400), entry],
        ))


class FencedSentinelBackend(FencedRedisBackend, SentinelBackend):
    """The same, on the primary that Redis Sentinel names (``sentinel://``):
    Celery's SentinelBackend finds it, and finds the new one after a failover."""
