"""Training jobs from the API: validate, record, and queue the job's trials on
its training lane; read a job back; cancel it.

A job is one task per trial, queued with the job's record in one MULTI. There
is no Celery chord: a chord on Redis counts its parts in a counter that a
part whose worker dies at the wrong moment never increments, and the job
hangs (celery#2911). Each trial instead writes its result into the job's join
hash, by field, in the same Lua script that acks it (``flow_hop.lua``), and
the trial whose write completes the set queues the select step, once.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import redis.asyncio as aioredis
from celery import Celery

from turnout.core import lua, redis_keys
from turnout.core.errors import NoCapacity, TaskFinished, UnknownTraining
from turnout.core.routes import RouteTable
from turnout.core.settings import Settings
from turnout.core.task_messages import TaskMessages
from turnout.core.training import TASK_TRIAL, job_view, parse_request, trial_id
from turnout.router.live import LiveView


class Training:
    def __init__(
        self, settings: Settings, celery: Celery, client: aioredis.Redis,
        live: LiveView,
    ) -> None:
        self.settings = settings
        self.celery = celery
        self.client = client
        self.live = live
        self._cancel = client.register_script(lua.source("training_cancel"))
        self.messages = TaskMessages(celery, settings.redis().db)

    @property
    def table(self) -> RouteTable:
        """The route table in force, read at use time (the live view holds it)."""
        return self.live.table

    async def submit(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        route = self.table.require(model)
        request = parse_request(route, body, self.settings.data_dir)
        if self.live.state.known and not self.live.state.consumers(request.lane):
            raise NoCapacity(
                f"model {model!r} trains on lane {request.lane!r}, which no live training worker "
                "consumes; start one with `turnout worker train --device cpu` (or --device N)"
            )
        job_id = str(uuid.uuid4())
        trials = request.trials()
        record = {
            "job_id": job_id, "model": model, "status": "PENDING", "dataset": request.dataset,
            "seed": request.seed, "params": request.params, "search": request.search or None,
            "lane": request.lane, "created_at": time.time(),
            "trials": [{"params": p} for p in trials],
        }
        limit = self.settings.train_time_limit_s
        pipe = self.client.pipeline(transaction=True)
        pipe.set(redis_keys.training(job_id), orjson.dumps(record), ex=self.settings.result_ttl_s)
        for i, params in enumerate(trials):
            message = self.messages.build(
                TASK_TRIAL, trial_id(job_id, i), request.lane,
                (job_id, model, i, request.trainer, params, request.seed, request.dataset,
                 len(trials)),
                time_limit=limit + 30, soft_time_limit=limit)
            message.queue(pipe, request.lane)
        await pipe.execute()
        url = f"/v1/training/{job_id}"
        return {"job_id": job_id, "model": model, "status": "PENDING", "trials": len(trials),
                "lane": request.lane, "status_url": url}

    async def _record(self, job_id: str) -> dict[str, Any]:
        try:
            uuid.UUID(job_id)
        except ValueError:
            raise UnknownTraining(f"no training job {job_id!r}: job ids are UUIDs") from None
        raw = await self.client.get(redis_keys.training(job_id))
        if raw is None:
            raise UnknownTraining(f"no training job {job_id}: never submitted, or it expired")
        record: dict[str, Any] = orjson.loads(raw)
        return record

    async def status(self, job_id: str) -> dict[str, Any]:
        record = await self._record(job_id)
        raw = await self.client.hgetall(redis_keys.training_progress(job_id))
        progress = {(k.decode() if isinstance(k, bytes) else k): orjson.loads(v)
                    for k, v in raw.items()}
        return job_view(record, progress)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        await self._record(job_id)
        outcome = await self._cancel(
            keys=[redis_keys.training(job_id), redis_keys.training_cancel(job_id)],
            args=[self.settings.result_ttl_s],
        )
        outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        if outcome != "REVOKED":
            state = outcome.removeprefix("FINISHED:")
            state = "its version is being registered" if state == "REGISTERING" else state
            raise TaskFinished(f"training job {job_id} has already finished ({state}); nothing to cancel")
        return {"job_id": job_id, "status": "REVOKED"}
