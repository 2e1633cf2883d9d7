"""Submitting jobs and reading them back: the router's core, free of HTTP."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from celery import Celery
from redis.exceptions import RedisError

from turnout.core import lua, redis_keys
from turnout.core.broker import why
from turnout.core.catalog import require_version
from turnout.core.errors import (
    BrokerUnavailable,
    DeadlineExceeded,
    IdempotencyMismatch,
    NotReplicated,
    TaskFinished,
    TurnoutError,
    UnknownTask,
    UnknownVersion,
    VersionNotLoaded,
)
from turnout.core.flows import PlanStep
from turnout.core.messages import RequestItem, ResultDoc
from turnout.core.redis_keys import DEFAULT_LANE
from turnout.core.routes import Flow, Route, RouteTable
from turnout.core.serving import choose_version
from turnout.core.settings import Settings
from turnout.core.task_messages import TaskMessages, expires_backstop
from turnout.router.batching import Batch, Batcher, Job
from turnout.router.flows import FlowBatching, first_messages, flow_rows, plan_for, plan_key
from turnout.router.idempotency import Claims
from turnout.router.live import LiveView
from turnout.router.metrics import Metrics
from turnout.router.publishing import Publisher
from turnout.router.results import ResultWatcher
from turnout.router.routing import choose_queue
from turnout.router.schemas import VersionSchemas
from turnout.router.validation import validate_inputs

# Celery states that the v1 contract folds into its five.
_STATUS = {"RECEIVED": "PENDING", "RETRY": "PENDING"}


@dataclass(frozen=True)
class Submitted:
    task_id: str
    model: str
    queue: str
    fallback_used: bool
    version: str = ""


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        celery: Celery,
        client: aioredis.Redis,
        watcher: ResultWatcher,
        live: LiveView,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.schemas = VersionSchemas(settings.models_dir)
        self.metrics = metrics
        self.client = client
        self.watcher = watcher
        self.live = live
        self.messages = TaskMessages(celery, settings.redis().db,
                                     lambda: settings.events or live.monitoring)
        self.batcher = Batcher(self._publish, live.state_capacity, watcher,
                               gather=settings.router_batching)
        # A composed model's requests batch on their plan; a batch goes at
        # once while its first model has a free worker slot.
        self.flow_batcher = Batcher(self._publish_flow, self._flow_capacity, watcher,
                                    gather=settings.router_batching)
        self._plans: dict[str, tuple[Flow, tuple[PlanStep, ...]]] = {}
        self._revoke = client.register_script(lua.source("task_revoke"))
        self.claims = Claims(client, settings.result_ttl_s)
        self.publisher = Publisher(client, settings)

    def _flow_capacity(self, name: str, queue: str) -> int:
        flow = self.table.flows.get(name)
        first = flow.models[0] if flow is not None and flow.models else ""
        return self.live.state_capacity(first, queue) if first else 1

    @property
    def table(self) -> RouteTable:
        """The route table in force, read at use time (the live view holds it)."""
        return self.live.table

    async def predict(
        self,
        model: str,
        inputs: Any,
        wait_s: float,
        version: str | None = None,
        route_key: str | None = None,
        owner: str | None = None,
        idempotency_key: str | None = None,
        priority: str = DEFAULT_LANE,
        timeout_s: float | None = None,
    ) -> tuple[Submitted, dict[str, Any] | None]:
        """Validate, route and queue one request; with ``wait_s`` > 0, wait that
        long for its result. ``version`` pins the request to that version;
        otherwise it goes to the default, or to a canary's share
        (``route_key`` keeps a caller on one side). ``owner`` is the API
        key's name; an ``idempotency_key`` sent before by the same owner
        answers with the task it made then, never a second one. Returns the
        submission and the task view if finished."""
        flow = self.table.flows.get(model)
        if flow is not None:
            if version is not None:
                raise UnknownVersion(
                    f"model {model!r} is a {flow.kind}: it has no versions of its own (each "
                    "of its models runs the version it serves)")
            return await self._predict_flow(flow, inputs, wait_s, route_key, owner,
                                            idempotency_key, priority, timeout_s)
        route = self.table.require(model)
        pinned = version is not None
        if version is None:
            serving = self.live.serving_for(model)
            canary = serving.canary
            ready = canary is not None and self.live.ready_everywhere(model, canary.version)
            version = choose_version(route, serving, ready, route_key, random.random() * 100)
        else:
            self._check_pinned(route, version)
        rows = validate_inputs(route, inputs, schema=self.schemas.input(route, version))
        timeout_s = timeout_s or route.queue_timeout_s
        decision = choose_queue(route, self.table, self.live.state, version if pinned else None,
                                timeout_s, priority)
        job = Job(id=str(uuid.uuid4()), rows=rows, submitted_at=time.time(), owner=owner,
                  deadline=self.live.deadline(timeout_s))
        claim, earlier = await self.claims.take(idempotency_key, owner, job.id,
                                                      redis_keys.task(""))
        if earlier is not None:
            return await self._replay(earlier, model, route.queue, wait_s)
        # Counted at once: requests routed while this one is being sent see it.
        self.live.note_sent(decision.queue, priority)
        submitted = Submitted(job.id, model, decision.queue, decision.fallback_used, version)
        batch = self.batcher.add(route, decision.queue, job, version, pinned, priority)
        return await self._deliver(submitted, job.batch_id, job.index, batch.sent, claim, wait_s,
                                   timeout_s)

    async def _deliver(
        self, submitted: Submitted, batch_id: str, index: int, sent: asyncio.Future[None],
        claim: str | None, wait_s: float, timeout_s: float | None,
    ) -> tuple[Submitted, dict[str, Any] | None]:
        """Wait for ``sent`` (the task's queueing), then up to ``wait_s`` for
        its result: the submission, and the task view if it finished."""
        model, task_id = submitted.model, submitted.task_id
        # Watch before the batch is sent (add() only schedules the send), so a
        # result that comes back at once cannot be missed.
        async with self.watcher.watch(batch_id) as future:
            try:
                await asyncio.shield(sent)
            except NotReplicated:
                raise  # queued: the claim stays, so that a retry gets this task
            except TurnoutError:
                if claim is not None:
                    await self.claims.release(claim)  # never queued: the next try may
                raise
            if wait_s <= 0:
                return submitted, None
            # The caller hears of a deadline as it passes, not when a worker
            # later drops the request.
            bounded = timeout_s is not None and timeout_s < wait_s
            meta = await self.watcher.wait(batch_id, future,
                                           timeout_s if bounded and timeout_s else wait_s)
        if meta is None:
            if bounded:
                now = await self.watcher.lookup(batch_id)
                running = now is not None and now.status == "STARTED"
                raise DeadlineExceeded(
                    f"model {model!r}: the request did not finish within its timeout_s of "
                    f"{timeout_s:g} s; " + (
                        f"it had started, and its result will be at /v1/tasks/{task_id}"
                        if running else "it had not started, and it will not run")
                    + f" (task {task_id})")
            return submitted, None
        record = {"model": model, "queue": submitted.queue, "batch": batch_id, "index": index}
        view = self._view(task_id, record, meta, False)
        if str(view.get("error") or "").startswith("DeadlineExceeded"):
            raise DeadlineExceeded(f"model {model!r}: {view['error']} (task {task_id})")
        return submitted, view

    async def _predict_flow(
        self, flow: Flow, inputs: Any, wait_s: float, route_key: str | None, owner: str | None,
        idempotency_key: str | None, priority: str, timeout_s: float | None,
    ) -> tuple[Submitted, dict[str, Any] | None]:
        """A pipeline's or an ensemble's request: its plan fixed now, and
        micro-batched with others on the same plan (one chain of tasks per
        batch, as a route's requests share one task)."""
        timeout_s = timeout_s or flow.queue_timeout_s
        plan = plan_for(flow, self.table, self.live, timeout_s, priority, route_key)
        rows = flow_rows(flow, self.table, self.schemas, plan, inputs)
        job = Job(id=str(uuid.uuid4()), rows=rows, submitted_at=time.time(), owner=owner,
                  deadline=self.live.deadline(timeout_s))
        claim, earlier = await self.claims.take(idempotency_key, owner, job.id,
                                                      redis_keys.task(""))
        if earlier is not None:
            return await self._replay(earlier, flow.name, plan[0].queue, wait_s)
        starts = plan[:-1] if flow.ensemble is not None else plan[:1]
        for step in starts:
            self.live.note_sent(step.queue, priority)
        # Kept for the batch's send (a plan per set of versions and queues:
        # a handful, new ones only with rollouts and canaries).
        key = plan_key(plan)
        self._plans[key] = (flow, plan)
        versions = "+".join(f"{s.name}@{s.version}" for s in plan if s.version)
        submitted = Submitted(job.id, flow.name, plan[0].queue, False, versions)
        batch = self.flow_batcher.add(FlowBatching.of(flow, self.table), plan[0].queue, job, key,
                                      False, priority)
        return await self._deliver(submitted, job.batch_id, job.index, batch.sent, claim, wait_s,
                                   timeout_s)

    async def _publish_flow(self, batch: Batch) -> None:
        """A composed model's batch: every request's record and its first
        tasks, atomically, in one round trip."""
        flow, plan = self._plans[batch.version]
        requests = [RequestItem(j.id, j.rows, j.submitted_at, j.deadline) for j in batch.jobs]
        pipe = self.publisher.transaction()
        for job in batch.jobs:
            record: dict[str, Any] = {"model": flow.name, "queue": plan[0].queue,
                                      "submitted_at": job.submitted_at, "batch": batch.id,
                                      "index": job.index, "size": len(batch.jobs),
                                      "flow": flow.kind}
            if job.owner is not None:
                record["owner"] = job.owner
            if job.deadline is not None:
                record["deadline"] = job.deadline
            pipe.set(redis_keys.task(job.id), orjson.dumps(record), ex=self.settings.result_ttl_s)
        for queue, message in first_messages(self.messages, flow, plan, batch.id, requests,
                                             batch.lane):
            message.queue(pipe, queue, batch.lane)
        try:
            await self.publisher.commit(pipe)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(
                f"could not queue the job: {why(exc)}") from None

    async def _replay(
        self, task_id: str, model: str, queue: str, wait_s: float
    ) -> tuple[Submitted, dict[str, Any] | None]:
        """The answer for a task an Idempotency-Key already made: its result
        if it has finished (or does within ``wait_s``), else 202 again."""
        deadline = time.monotonic() + wait_s
        try:
            record, meta, revoked = await self._read(task_id)
        except UnknownTask:
            # Claimed a moment ago by a request still queueing it.
            submitted = Submitted(task_id, model, queue, False, "")
            return submitted, None
        if record["model"] != model:
            raise IdempotencyMismatch(
                f"Idempotency-Key was first used for a request to model {record['model']!r}, "
                f"not {model!r}; use a new key for a new request"
            )
        batch_id = record.get("batch", task_id)
        if (meta is None or not meta.ready) and not revoked and wait_s > 0:
            async with self.watcher.watch(batch_id) as future:
                meta = await self.watcher.lookup(batch_id)  # finished while we looked away?
                if meta is None or not meta.ready:
                    meta = await self.watcher.wait(
                        batch_id, future, max(0.0, deadline - time.monotonic())
                    )
        view = self._view(task_id, record, meta, revoked)
        submitted = Submitted(task_id, model, record["queue"], False,
                              str(view.get("version") or ""))
        if view["status"] in ("PENDING", "STARTED"):
            return submitted, None
        return submitted, view

    def _check_pinned(self, route: Route, version: str) -> None:
        """404 for a version that does not exist, 409 for one no live worker holds."""
        if any(w.serves(route.name, version) for w in self.live.state.workers):
            return
        if not self.live.state.known:
            return  # no look at the workers yet: let the worker say
        require_version(self.settings.models_dir, route, version)
        raise VersionNotLoaded(
            f"model {route.name!r} version {version!r} exists but no live worker has it "
            f"loaded; load it with PUT /v1/models/{route.name}/default "
            '{"version": ..., "canary_percent": 0} or as the default'
        )

    async def _publish(self, batch: Batch) -> None:
        """Write every request's record and queue the batch's task, atomically,
        in one round trip."""
        route = batch.route
        assert isinstance(route, Route)
        requests = [RequestItem(j.id, j.rows, j.submitted_at, j.deadline).to_wire()
                    for j in batch.jobs]
        message = self.messages.predict(
            batch.id,
            batch.queue,
            (route.name, requests, {"version": batch.version, "pinned": batch.pinned}),
            time_limit=route.time_limit_s,
            soft_time_limit=route.soft_time_limit_s,
            lane=batch.lane,
            joinable=(route.max_batch or 1) > 1,
            expires=expires_backstop(route.time_limit_s, [j.deadline for j in batch.jobs]),
        )
        pipe = self.publisher.transaction()
        for job in batch.jobs:
            record = {
                "model": route.name,
                "queue": batch.queue,
                "submitted_at": job.submitted_at,
                "batch": batch.id,
                "index": job.index,
                "size": len(batch.jobs),
            }
            if job.owner is not None:
                record["owner"] = job.owner
            if job.deadline is not None:
                record["deadline"] = job.deadline
            pipe.set(redis_keys.task(job.id), orjson.dumps(record), ex=self.settings.result_ttl_s)
        message.queue(pipe, batch.queue, batch.lane)
        try:
            await self.publisher.commit(pipe)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(
                f"could not queue the job: {why(exc)}"
            ) from None
        self.track(batch.id, route, batch.version)

    def track(self, task_id: str, route: Route, version: str) -> None:
        """Time a task this process queued when its result comes back (the
        metrics' queue, run and request times): once per task, cluster-wide."""
        metrics = self.metrics
        future = self.watcher.on_ready(task_id)
        # A result that never comes (its record expired) stops being awaited.
        give_up = asyncio.get_running_loop().call_later(
            route.time_limit_s + self.settings.max_queue_wait_s, future.cancel
        )

        def done(result: asyncio.Future[ResultDoc]) -> None:
            give_up.cancel()
            if not result.cancelled():
                metrics.observe_result(route.name, version, result.result())

        future.add_done_callback(done)

    async def close(self) -> None:
        await self.batcher.close()
        await self.flow_batcher.close()

    async def task(self, task_id: str, viewer: str | None = None) -> dict[str, Any]:
        """A task's view; ``viewer`` (a predict key's name) sees only its own."""
        record, meta, revoked = await self._read(task_id, viewer)
        return self._view(task_id, record, meta, revoked, self.live.clock_offset)

    async def revoke(self, task_id: str, viewer: str | None = None) -> dict[str, Any]:
        record, _, revoked = await self._read(task_id, viewer)
        if revoked:
            return {"task_id": task_id, "status": "REVOKED"}
        batch_id = record.get("batch", task_id)
        doc = ResultDoc.revoked(batch_id).encode()
        solo = "1" if record.get("size", 1) == 1 else "0"
        outcome = await self._revoke(
            keys=[redis_keys.result(batch_id), redis_keys.revoked(task_id)],
            args=[doc, self.settings.result_ttl_s, solo],
        )
        outcome = outcome.decode() if isinstance(outcome, bytes) else outcome
        if outcome != "REVOKED":
            raise TaskFinished(f"task {task_id} has already finished ({outcome}); nothing to revoke")
        return {"task_id": task_id, "status": "REVOKED"}

    async def _read(
        self, task_id: str, viewer: str | None = None
    ) -> tuple[dict[str, Any], ResultDoc | None, bool]:
        try:
            uuid.UUID(task_id)
        except ValueError:
            raise UnknownTask(f"no task {task_id!r}: task ids are UUIDs") from None
        # A request is usually its own batch's first: one round trip then.
        raw_record, raw_meta, revoked = await self.client.mget(
            redis_keys.task(task_id), redis_keys.result(task_id), redis_keys.revoked(task_id)
        )
        if raw_record is None:
            raise UnknownTask(f"no task {task_id}: this router never issued it, or it expired")
        record = orjson.loads(raw_record)
        if viewer is not None and record.get("owner") not in (None, viewer):
            # Another key's task: as if it did not exist.
            raise UnknownTask(f"no task {task_id}: this router never issued it, or it expired")
        batch_id = record.get("batch", task_id)
        if batch_id != task_id:
            raw_meta = await self.client.get(redis_keys.result(batch_id))
        return record, ResultDoc.decode(raw_meta), revoked is not None

    @staticmethod
    def _view(
        task_id: str, record: dict[str, Any], meta: ResultDoc | None, revoked: bool,
        clock_offset: float = 0.0,
    ) -> dict[str, Any]:
        status = "PENDING" if meta is None else _STATUS.get(meta.status, meta.status)
        view: dict[str, Any] = {
            "task_id": task_id,
            "status": status,
            "model": record["model"],
            "queue": record["queue"],
        }
        if status == "SUCCESS" and meta is not None:
            entry, result = meta.outcome(record.get("index", 0))
            if entry.revoked:
                view["status"] = "REVOKED"
            elif entry.error is not None:
                view["status"] = "FAILURE"
                view["error"] = entry.error
                view["worker"] = result.worker
                if entry.timings_ms:
                    view["timings_ms"] = entry.timings_ms
            else:
                view["predictions"] = entry.predictions
                if entry.probabilities is not None:
                    view["probabilities"] = entry.probabilities
                view["worker"] = result.worker
                view["device"] = result.device
                if result.version:
                    view["version"] = result.version
                view["timings_ms"] = entry.timings_ms
                if result.batch_size > 1:
                    view["batch_size"] = result.batch_size
                if entry.oom_splits:
                    view["oom_splits"] = entry.oom_splits
            if result.steps is not None:
                view["steps"] = result.steps
        elif status == "FAILURE" and meta is not None:
            view["error"] = meta.error_text()
        if revoked:
            view["status"] = "REVOKED"
            view.pop("error", None)
        elif status == "PENDING" and record.get("deadline") is not None \
                and time.time() + clock_offset > float(record["deadline"]):
            # Past its deadline and not started: no worker will run it (each
            # checks at start, on Redis's clock), so say so now rather than
            # when one gets to it in the queue.
            view["status"] = "FAILURE"
            view["error"] = ("DeadlineExceeded: the request could not start before its "
                             "deadline; it will not run")
        return view
