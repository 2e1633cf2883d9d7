"""Submitting jobs and reading them back: the router's core, free of HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from celery import Celery
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from router import keys
from router.celery_app import TASK_PREDICT
from router.errors import BrokerUnavailable, TaskFinished, UnknownModel, UnknownTask
from router.live import LiveView
from router.results import ResultWatcher
from router.routes import Route, RouteTable
from router.routing import choose_queue
from router.settings import Settings
from router.validation import validate_inputs

# Celery states that the v1 contract folds into its five.
_STATUS = {"RECEIVED": "PENDING", "RETRY": "PENDING"}

# Marks a task revoked unless it has already finished, atomically, and wakes
# anyone waiting on it. KEYS: result key, revoked marker. ARGV: meta doc, ttl.
_REVOKE_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
  local status = cjson.decode(current)['status']
  if status == 'SUCCESS' or status == 'FAILURE' then return status end
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 'REVOKED'
"""


@dataclass(frozen=True)
class Submitted:
    task_id: str
    model: str
    queue: str
    fallback_used: bool


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        table: RouteTable,
        celery: Celery,
        client: aioredis.Redis,
        watcher: ResultWatcher,
        live: LiveView,
    ) -> None:
        self.settings = settings
        self.table = table
        self.celery = celery
        self.client = client
        self.watcher = watcher
        self.live = live
        self._revoke = client.register_script(_REVOKE_LUA)

    async def predict(
        self, model: str, inputs: Any, wait_s: float
    ) -> tuple[Submitted, dict[str, Any] | None]:
        """Validate, route and send one job; with ``wait_s`` > 0, wait that long
        for its result. Returns the submission and the task view if finished."""
        route = self.table.get(model)
        if route is None:
            known = ", ".join(sorted(self.table.routes)) or "none"
            raise UnknownModel(f"unknown model {model!r}; known models: {known}")
        rows = validate_inputs(route, inputs)
        decision = choose_queue(route, self.table, self.live.state)
        # Counted at once: requests routed while this one is being sent see it.
        self.live.note_sent(decision.queue)
        task_id = str(uuid.uuid4())
        submitted = Submitted(task_id, model, decision.queue, decision.fallback_used)
        submitted_at = time.time()
        record = json.dumps({"model": model, "queue": decision.queue, "submitted_at": submitted_at})
        try:
            # The record goes first, so that a poll right after the 202 finds it.
            await self.client.set(keys.task(task_id), record, ex=self.settings.result_ttl_s)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"the broker is unreachable: {exc}") from None
        async with self.watcher.watch(task_id) as future:
            await self._send(task_id, route.name, rows, submitted_at, decision.queue, route)
            if wait_s <= 0:
                return submitted, None
            meta = await self.watcher.wait(task_id, future, wait_s)
        if meta is None:
            return submitted, None
        return submitted, self._view(task_id, {"model": model, "queue": decision.queue}, meta, False)

    async def _send(
        self, task_id: str, model: str, rows: list[Any], submitted_at: float, queue: str, route: Route
    ) -> None:
        def send() -> None:
            self.celery.send_task(
                TASK_PREDICT,
                args=(model, rows, submitted_at),
                task_id=task_id,
                queue=queue,
                time_limit=route.time_limit_s,
                soft_time_limit=route.soft_time_limit_s,
                # A full connection pool or a dead broker must not hang a request.
                retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
            )

        try:
            # kombu's publish is synchronous; it runs in a thread so the event
            # loop keeps serving other requests meanwhile.
            await asyncio.to_thread(send)
        except (OperationalError, RedisError, OSError) as exc:
            await self._forget(task_id)
            raise BrokerUnavailable(f"could not queue the job: the broker is unreachable ({exc})") from None

    async def _forget(self, task_id: str) -> None:
        try:
            await self.client.delete(keys.task(task_id))
        except (RedisError, OSError):
            pass

    async def task(self, task_id: str) -> dict[str, Any]:
        record, meta, revoked = await self._read(task_id)
        return self._view(task_id, record, meta, revoked)

    async def revoke(self, task_id: str) -> dict[str, Any]:
        _, _, revoked = await self._read(task_id)
        if revoked:
            return {"task_id": task_id, "status": "REVOKED"}
        doc = json.dumps(
            {"status": "REVOKED", "result": None, "traceback": None, "children": [],
             "date_done": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
             "task_id": task_id}
        )
        outcome = await self._revoke(
            keys=[keys.result(task_id), keys.revoked(task_id)],
            args=[doc, self.settings.result_ttl_s],
        )
        outcome = outcome.decode() if isinstance(outcome, bytes) else outcome
        if outcome != "REVOKED":
            raise TaskFinished(f"task {task_id} has already finished ({outcome}); nothing to revoke")
        return {"task_id": task_id, "status": "REVOKED"}

    async def _read(self, task_id: str) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
        try:
            uuid.UUID(task_id)
        except ValueError:
            raise UnknownTask(f"no task {task_id!r}: task ids are UUIDs") from None
        record, meta, revoked = await self.client.mget(
            keys.task(task_id), keys.result(task_id), keys.revoked(task_id)
        )
        if record is None:
            raise UnknownTask(f"no task {task_id}: this router never issued it, or it expired")
        return json.loads(record), json.loads(meta) if meta else None, revoked is not None

    @staticmethod
    def _view(
        task_id: str, record: dict[str, Any], meta: dict[str, Any] | None, revoked: bool
    ) -> dict[str, Any]:
        status = "PENDING" if meta is None else _STATUS.get(meta["status"], meta["status"])
        if revoked:
            status = "REVOKED"
        view: dict[str, Any] = {
            "task_id": task_id,
            "status": status,
            "model": record["model"],
            "queue": record["queue"],
        }
        if status == "SUCCESS" and meta is not None:
            result = meta.get("result") or {}
            for key in ("predictions", "probabilities", "worker", "device", "timings_ms", "oom_splits"):
                if key in result:
                    view[key] = result[key]
        elif status == "FAILURE" and meta is not None:
            view["error"] = _error_text(meta.get("result"))
        return view


def _error_text(result: Any) -> str:
    """Celery stores a failure as {exc_type, exc_message, exc_module} in JSON."""
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, list | tuple):
            message = " ".join(str(m) for m in message)
        return f"{result['exc_type']}: {message}" if message else str(result["exc_type"])
    return str(result)
