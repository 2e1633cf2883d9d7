"""Batch jobs: thousands of rows in one request, split into chunks that run as
one Celery group across the route's workers.

The job's record lists its chunks (task id, queue, first row, row count); the
record and every chunk's message go to Redis in one MULTI. Progress is read
from the chunks' results: rows done of total. When every chunk is done, the
same call gives all predictions in order, and names any chunk that failed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from turnout.core import redis_keys
from turnout.core.broker import why
from turnout.core.errors import BrokerUnavailable, IdempotencyMismatch, UnknownBatch
from turnout.core.messages import RequestItem, ResultDoc
from turnout.core.routes import Flow, Route, RouteTable
from turnout.core.settings import Settings
from turnout.core.task_messages import TaskMessages, expires_backstop
from turnout.router.flows import first_messages, flow_max_rows, flow_rows, plan_for
from turnout.router.idempotency import Claims
from turnout.router.live import LiveView
from turnout.router.publishing import Publisher
from turnout.router.routing import choose_queue
from turnout.router.schemas import VersionSchemas
from turnout.router.validation import validate_inputs

# Rows per chunk when the route has no max_batch and the client names none.
DEFAULT_CHUNK_ROWS = 256


class BatchJobs:
    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        live: LiveView,
        messages: TaskMessages,
        claims: Claims,
        track: Callable[[str, Route, str], None] | None = None,
        schemas: VersionSchemas | None = None,
    ) -> None:
        self.settings = settings
        # The dispatcher's: one cache of the versions' schemas per process.
        self.schemas = schemas or VersionSchemas(settings.models_dir)
        self.client = client
        self.publisher = Publisher(client, settings)
        self.live = live
        self.messages = messages
        self.claims = claims
        # Times each chunk when its result comes back (the metrics).
        self.track = track

    @property
    def table(self) -> RouteTable:
        """The route table in force, read at use time (the live view holds it)."""
        return self.live.table

    def chunk_limit(self, model: str) -> int:
        route = self.table.get(model)
        flow = self.table.flows.get(model)
        if flow is not None:
            return flow_max_rows(flow, self.table)
        return route.max_rows if route is not None else DEFAULT_CHUNK_ROWS

    def _chunk_size(self, route: Route) -> int:
        """Rows per chunk: the route's batch size, but no more than its queue's
        workers run in about ``TURNOUT_CHUNK_TARGET_S`` (from the model's time
        per row they have reported), which bounds how long an interactive request
        waits behind a chunk that is already running."""
        size = min(route.max_batch or DEFAULT_CHUNK_ROWS, route.max_rows)
        per_row = self.live.seconds_per_row.get(route.name)
        if per_row:
            size = min(size, max(1, int(self.settings.chunk_target_s / per_row)))
        return size

    async def submit(
        self,
        model: str,
        inputs: Any,
        chunk_rows: int | None,
        owner: str | None = None,
        idempotency_key: str | None = None,
        priority: str = "low",
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Queue a batch job, its chunks in the ``priority`` lane; an
        ``idempotency_key`` sent before by the same ``owner`` answers with the
        job it made then."""
        flow = self.table.flows.get(model)
        if flow is not None:
            return await self._submit_flow(flow, inputs, chunk_rows, owner, idempotency_key,
                                           priority, timeout_s)
        route = self.table.require(model)
        # A batch job runs on one version, the default when it is submitted.
        version = self.live.serving_for(model).default_for(route)
        rows = validate_inputs(route, inputs, max_rows=self.settings.max_batch_rows,
                               schema=self.schemas.input(route, version))
        size = chunk_rows or self._chunk_size(route)
        job_id = str(uuid.uuid4())
        claim, earlier = await self.claims.take(idempotency_key, owner, job_id,
                                                      redis_keys.batch(""))
        if earlier is not None:
            return await self._submitted(earlier, route.name)
        submitted_at = time.time()
        deadline = self.live.deadline(timeout_s or route.queue_timeout_s)
        chunks: list[list[Any]] = []
        pipe = self.publisher.transaction()
        for index, start in enumerate(range(0, len(rows), size)):
            part = rows[start : start + size]
            # Chosen per chunk, and counted as it goes: chunks spread over
            # the route's devices as they would over its workers.
            queue = choose_queue(route, self.table, self.live.state, lane=priority).queue
            self.live.note_sent(queue, priority)
            task_id = str(uuid.uuid4())
            chunks.append([task_id, queue, start, len(part)])
            message = self.messages.predict(
                task_id,
                queue,
                (route.name, [RequestItem(task_id, part, submitted_at, deadline).to_wire()],
                 {"version": version, "pinned": False}),
                time_limit=route.time_limit_s,
                soft_time_limit=route.soft_time_limit_s,
                group_id=job_id,
                group_index=index,
                lane=priority,
                joinable=(route.max_batch or 1) > 1,
                expires=expires_backstop(route.time_limit_s, [deadline]),
            )
            message.queue(pipe, queue, priority)
        record = {
            "model": route.name,
            "rows": len(rows),
            "chunk_rows": size,
            "chunks": chunks,
            "submitted_at": submitted_at,
            "priority": priority,
        }
        await self._queue(pipe, job_id, record, owner, claim)
        if self.track is not None:
            for task_id, *_ in chunks:
                self.track(task_id, route, version)
        return {
            "batch_id": job_id,
            "status": "PENDING",
            "model": route.name,
            "rows": len(rows),
            "chunks": len(chunks),
            "status_url": f"/v1/batches/{job_id}",
        }

    async def _submit_flow(
        self, flow: Flow, inputs: Any, chunk_rows: int | None, owner: str | None,
        idempotency_key: str | None, priority: str, timeout_s: float | None,
    ) -> dict[str, Any]:
        """A batch job on a pipeline or ensemble: each chunk one request of it,
        every chunk on the same plan (the versions chosen once, now)."""
        timeout_s = timeout_s or flow.queue_timeout_s
        plan = plan_for(flow, self.table, self.live, timeout_s, priority)
        rows = flow_rows(flow, self.table, self.schemas, plan, inputs,
                         max_rows=self.settings.max_batch_rows)
        size = min(chunk_rows or flow_max_rows(flow, self.table), flow_max_rows(flow, self.table))
        job_id = str(uuid.uuid4())
        claim, earlier = await self.claims.take(idempotency_key, owner, job_id,
                                                      redis_keys.batch(""))
        if earlier is not None:
            return await self._submitted(earlier, flow.name)
        submitted_at = time.time()
        deadline = self.live.deadline(timeout_s)
        chunks: list[list[Any]] = []
        pipe = self.publisher.transaction()
        for start in range(0, len(rows), size):
            part = rows[start : start + size]
            task_id = str(uuid.uuid4())
            request = RequestItem(task_id, part, submitted_at, deadline)
            for queue, message in first_messages(self.messages, flow, plan, task_id, [request],
                                                 priority):
                self.live.note_sent(queue, priority)
                message.queue(pipe, queue, priority)
            chunks.append([task_id, plan[0].queue, start, len(part)])
        record: dict[str, Any] = {"model": flow.name, "rows": len(rows), "chunk_rows": size,
                                  "chunks": chunks, "submitted_at": submitted_at,
                                  "priority": priority}
        await self._queue(pipe, job_id, record, owner, claim)
        return {"batch_id": job_id, "status": "PENDING", "model": flow.name, "rows": len(rows),
                "chunks": len(chunks), "status_url": f"/v1/batches/{job_id}"}

    async def _queue(self, pipe: Any, job_id: str, record: dict[str, Any], owner: str | None,
                     claim: str | None) -> None:
        """The job's record added to ``pipe`` (which holds its chunks'
        messages), and all of it sent as one transaction."""
        if owner is not None:
            record["owner"] = owner
        pipe.set(redis_keys.batch(job_id), json.dumps(record), ex=self.settings.result_ttl_s)
        try:
            await self.publisher.commit(pipe)
        except (RedisError, OSError) as exc:
            if claim is not None:
                await self.claims.release(claim)
            raise BrokerUnavailable(
                f"could not queue the batch: {why(exc)}") from None

    async def _submitted(self, job_id: str, model: str) -> dict[str, Any]:
        """The 202 body of a job an Idempotency-Key already made."""
        raw = await self.client.get(redis_keys.batch(job_id))
        record = orjson.loads(raw) if raw else {"model": model, "rows": None, "chunks": None}
        if record["model"] != model:
            raise IdempotencyMismatch(
                f"Idempotency-Key was first used for a batch of model {record['model']!r}, not "
                f"{model!r}; use a new key for a new job"
            )
        chunks = record["chunks"]
        return {
            "batch_id": job_id,
            "status": "PENDING",
            "model": model,
            "rows": record["rows"],
            "chunks": len(chunks) if chunks is not None else None,
            "status_url": f"/v1/batches/{job_id}",
        }

    async def status(self, job_id: str, viewer: str | None = None) -> dict[str, Any]:
        """A job's progress; ``viewer`` (a predict key's name) sees only its own."""
        try:
            uuid.UUID(job_id)
        except ValueError:
            raise UnknownBatch(f"no batch {job_id!r}: batch ids are UUIDs") from None
        raw = await self.client.get(redis_keys.batch(job_id))
        if raw is None:
            raise UnknownBatch(f"no batch {job_id}: this router never issued it, or it expired")
        record = orjson.loads(raw)
        if viewer is not None and record.get("owner") not in (None, viewer):
            raise UnknownBatch(f"no batch {job_id}: this router never issued it, or it expired")
        chunks = record["chunks"]
        metas = await self.client.mget([redis_keys.result(c[0]) for c in chunks]) if chunks else []
        total = record["rows"]
        done_rows = failed_rows = started = 0
        predictions: list[Any] = [None] * total
        probabilities: list[Any] = [None] * total
        any_proba = False
        errors: list[dict[str, Any]] = []
        versions: set[str] = set()
        for index, ((_, _, start, count), raw_meta) in enumerate(zip(chunks, metas, strict=True)):
            meta = ResultDoc.decode(raw_meta)
            if meta is not None and meta.status == "STARTED":
                started += 1
            if meta is None or not meta.ready:
                continue
            done_rows += count
            error = _chunk_error(meta)
            if error is not None:
                failed_rows += count
                errors.append(
                    {"chunk": index, "rows": [start, start + count], "error": error}
                )
                continue
            entry, result = meta.outcome(0)
            if result.version:
                versions.add(result.version)
            predictions[start : start + count] = entry.predictions or []
            if entry.probabilities is not None:
                any_proba = True
                probabilities[start : start + count] = entry.probabilities
        finished = done_rows == total
        if finished:
            status = "FAILURE" if errors else "SUCCESS"
        elif done_rows or started:
            status = "STARTED"
        else:
            status = "PENDING"
        view: dict[str, Any] = {
            "batch_id": job_id,
            "status": status,
            "model": record["model"],
            "rows": total,
            "rows_done": done_rows,
            "rows_failed": failed_rows,
            "chunks": len(chunks),
            "chunk_rows": record["chunk_rows"],
            "priority": record.get("priority", "normal"),
        }
        if versions:
            # One version normally; two when a rollout happened mid-job.
            view["versions"] = sorted(versions)
        if errors:
            first = errors[0]
            view["error"] = (
                f"{len(errors)} of {len(chunks)} chunks failed; first: chunk {first['chunk']} "
                f"(rows {first['rows'][0]}-{first['rows'][1] - 1}): {first['error']}"
            )
            view["failed_chunks"] = errors
        if finished:
            # Rows of a failed chunk stay null, so every other row keeps its place.
            view["predictions"] = predictions
            if any_proba:
                view["probabilities"] = probabilities
        return view


def _chunk_error(meta: ResultDoc) -> str | None:
    if meta.status == "REVOKED":
        return "revoked"
    if meta.status == "FAILURE":
        return meta.error_text()
    return meta.outcome(0)[0].error
