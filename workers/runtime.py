"""Per-process state of a worker's pool child: the models it loaded at start,
and the Redis client it uses for delivery bookkeeping.

Built once per child in Celery's ``worker_process_init`` hook (after the fork),
never at import time and never per task.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from celery import Task
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded

from turnout.core import broker, delivery, redis_keys
from turnout.core.errors import ConfigError, InvalidImage
from turnout.core.inputs import Image
from turnout.core.messages import Outcome, RequestItem, ResultDoc, TaskResult
from turnout.core.redis_keys import lane_named
from turnout.core.routes import Route, RouteTable
from turnout.core.routes.shared import parse_published
from turnout.core.serving import Serving, parse_all
from turnout.core.settings import Settings
from turnout.ml.adapters import LoadedModel
from turnout.ml.adapters.base import TransientError
from turnout.ml.images import model_rows
from turnout.ml.oom import predict_splitting
from turnout.workers import riders as riders_
from turnout.workers.board import Slot
from turnout.workers.memory import DeviceMemory
from turnout.workers.shelf import NotLoaded, Shelf
from turnout.workers.spec import WorkerSpec

log = logging.getLogger(__name__)

# What a stored result counts as drained: (queue, rows, run seconds, model, lane).
Drained = tuple[str, int, float, str, str]
# Tasks of fewer rows say nothing of a model's time per row.
_ROWS_FOR_RATE = 16
# How long a finished job waits for Redis to store its result before it is
# given back to run again.
_STORE_PATIENCE_S = 60.0


class ModelNotServed(Exception):
    """The job reached a worker that has not loaded its model."""


class TaskTimeout(Exception):
    """The job ran past its route's time limit."""


class TooManyDeliveries(Exception):
    """The job's worker died every time it ran it; it is failed, not run again."""


class DeviceOutOfMemory(Exception):
    """Some rows did not fit in device memory even one at a time."""


def start_under_lease(
    scripts: delivery.Scripts, incarnation: str, task_id: str, hostname: str, ttl_s: int,
    requests: list[RequestItem],
) -> tuple[int, list[int], list[int]] | None:
    """STARTED, under the task's lease: (deliveries so far, a revoked flag per
    request, an expired flag per request by Redis's clock), or None when the
    task already has its result; ``riders.Fenced`` when this incarnation does
    not hold its lease."""
    script, keys, args = riders_.start_call(scripts, incarnation, task_id, hostname, ttl_s,
                                            requests)
    return riders_.read_start(script(keys=keys, args=args), task_id, incarnation, len(requests))


def _lane(task: Task) -> str:
    """The lane the task waited in (its message's ``turnout_lane`` header,
    which Celery hands over as a request attribute)."""
    return lane_named(getattr(task.request, "turnout_lane", None))


def _outcomes(
    requests: list[RequestItem], revoked: list[int], expired: list[int], live: list[int],
    outcomes: dict[int, Outcome], first: int, started_at: float, finished_at: float,
    run_ms: float,
) -> list[Outcome]:
    """One task's outcomes, in the order of its requests: its live ones from
    the pass's ``outcomes`` (from position ``first``), the rest revoked or
    too late to start."""
    results = [Outcome(revoked=True) for _ in requests]
    for i, late in enumerate(expired):
        if late and not revoked[i]:
            waited = max(0.0, started_at - requests[i].submitted_at)
            results[i] = Outcome(
                error=f"DeadlineExceeded: the request could not start before its deadline "
                      f"(it waited {waited:.3f} s in the queue); it did not run",
                timings_ms={"queued": round(waited * 1000, 3)})
    for position, i in enumerate(live, start=first):
        entry = outcomes[position]
        submitted_at = requests[i].submitted_at
        entry.timings_ms = {
            "queued": round(max(0.0, started_at - submitted_at) * 1000, 3),
            "run": run_ms,
            "total": round(max(0.0, finished_at - submitted_at) * 1000, 3),
        }
        results[i] = entry
    return results


@dataclass
class WorkerRuntime:
    spec: WorkerSpec
    settings: Settings
    table: RouteTable
    routes: list[Route]
    slot: Slot | None = None
    shelf: Shelf | None = None
    client: redis.Redis | None = None
    memory: DeviceMemory | None = None
    # The worker's incarnation (turnout.core.delivery): what its leases name.
    incarnation: str = ""
    scripts: delivery.Scripts | None = None
    # The generation of the published route table in use (0: the file's).
    routes_generation: int = 0
    # Whether task events are wanted (TURNOUT_EVENTS, or a `turnout flower`
    # running), and until when that answer holds (monotonic s).
    _monitoring: tuple[bool, float] = (False, 0.0)

    def load(self) -> None:
        """Load what should serve, then follow changes from a thread."""
        if self.spec.torch_threads and any(r.framework != "sklearn" for r in self.routes):
            import torch

            torch.set_num_threads(self.spec.torch_threads)
        self.memory = DeviceMemory(self.spec.device, self.spec.memory_limit_mb)
        self.memory.start()
        self.client = broker.connect(self.settings.redis())
        self.scripts = delivery.Scripts(self.client)
        self.shelf = Shelf(self.spec, self.settings, self.memory, self._post_shelf)
        try:
            routes, serving = self._look()
        except redis.RedisError as exc:
            log.warning("worker %s: cannot read which versions serve (%s); loading the "
                        "route table's", self.spec.name, exc)
            routes, serving = {r.name: r for r in self.routes}, {}
        self.shelf.sync(routes, serving)
        self.memory.mark_baseline()
        self._post(ready=True, device_uuid=self.memory.device_uuid(), current=None)
        self.shelf.watch(self._look)

    def _look(self) -> tuple[dict[str, Route], dict[str, Serving]]:
        """What should serve now: this worker's routes in the table in force
        (adopting a newer published one), and the serving documents."""
        assert self.client is not None
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(redis_keys.SERVING)
        pipe.hget(redis_keys.ROUTES, "generation")
        raw_serving, generation = pipe.execute()
        if int(generation or 0) > self.routes_generation:
            try:
                found, table = parse_published(self.client.hgetall(redis_keys.ROUTES))
            except ConfigError as exc:
                log.error("worker %s: the published route table is bad (%s); keeping the last",
                          self.spec.name, exc)
                self.routes_generation = int(generation)
            else:
                self.table = table
                self.routes = table.routes_for_queues(set(self.spec.queues))
                self.routes_generation = found
                log.info("worker %s: route table generation %d in force (%d routes here)",
                         self.spec.name, found, len(self.routes))
        return {r.name: r for r in self.routes}, parse_all(raw_serving)

    def _post_shelf(self) -> None:
        if self.shelf is not None:
            self._post(**self.shelf.report())

    def _post(self, **fields: Any) -> None:
        if self.slot is not None:
            memory = self.memory.figures() if self.memory is not None else {}
            self.slot.post(memory=memory, **fields)

    def run(
        self, task: Task, model: str, items: list[dict[str, Any]],
        spec: dict[str, Any] | None = None,
    ) -> TaskResult:
        """Run one task: a batch of request items (turnout.core.messages), as
        one forward pass, on the version ``spec`` names (``{"version",
        "pinned"}``). Returns one outcome per request, in order."""
        started_at = time.time()
        requests = [RequestItem.from_wire(item) for item in items]
        route = self.table.get(model)
        if route is None or self.shelf is None:
            raise ModelNotServed(f"worker {self.spec.name} does not serve model {model!r}")
        spec = spec or {}
        try:
            version, loaded = self.shelf.get(
                model, spec.get("version"), bool(spec.get("pinned")), route.soft_time_limit_s / 2
            )
        except NotLoaded as exc:
            if spec.get("pinned"):
                raise ModelNotServed(str(exc)) from None
            # Nothing of the model here now (a swap that failed and is being
            # undone): give the job back for a worker that has it, not fail it.
            time.sleep(1.0)
            raise Reject(str(exc), requeue=True) from None
        task_id = task.request.id
        hostname = task.request.hostname or self.spec.name
        assert self.client is not None and self.memory is not None
        queue = str((task.request.delivery_info or {}).get("routing_key") or "")
        joining = self._joining(task, route, version, bool(spec.get("pinned")), queue, requests)
        # One round trip, under the task's lease: say STARTED, count the
        # delivery, look for revocations; and take queued tasks along.
        try:
            started, taken = self._start(task_id, hostname, requests, joining)
        except redis.RedisError as exc:
            # Redis is away (restarting, say): not the job's fault. Give the
            # message back (settled once Redis answers again) rather than fail.
            # (Anything taken along goes back once this task is settled.)
            raise Reject(f"Redis unreachable at start: {exc}", requeue=True) from exc
        riders: list[riders_.Rider] = []
        try:
            riders = riders_.parse(self.client, self.incarnation, taken)
            if isinstance(started, riders_.Fenced):
                raise Reject("not this worker's lease", requeue=True)
            if started is None:
                raise Ignore()
            deliveries, revoked, expired = started
            if all(revoked):
                # Put REVOKED in the result so that it agrees with what the router said.
                task.backend.mark_as_revoked(task_id, reason="revoked through the API")
                raise Ignore()
            limit = self.settings.max_deliveries + route.retries.max
            if deliveries > limit:
                raise TooManyDeliveries(
                    f"model {model!r}: the job was started {deliveries - 1} times and its "
                    "worker process died each time; it is not run again"
                )
            if riders and deliveries > 1:
                # Started before without being marked redelivered: it runs alone.
                riders_.give_back(self.client, self.incarnation, riders, why="requeued")
                riders = []
            if riders:
                riders = self._start_riders(task, hostname, riders)
            return self._run_pass(task, route, version, loaded, hostname, started_at, queue,
                                  requests, revoked, expired, riders)
        except BaseException:
            # Whatever went wrong, the tasks taken along go back to run alone.
            riders_.give_back(self.client, self.incarnation,
                              [r for r in riders if not r.settled], why="requeued")
            raise

    def _joining(
        self, task: Task, route: Route, version: str, pinned: bool, queue: str,
        requests: list[RequestItem],
    ) -> riders_.Join | None:
        """What to take along (worker-side batching: other queued tasks of this
        model and version, see workers/riders.py), or None. A task that was
        delivered before takes none: one that may have killed its worker runs
        alone."""
        room = (route.max_batch or 1) - sum(len(r.rows) for r in requests)
        info = task.request.delivery_info or {}
        if not (self.settings.worker_batching and room > 0 and queue) \
                or info.get("redelivered") or getattr(task.request, "redelivered", False):
            return None
        return riders_.Join(task.request.id, queue, _lane(task),
                            delivery.join_key(route.name, version, pinned), room,
                            self.settings.join_depth)

    def _start_riders(
        self, task: Task, hostname: str, taken: list[riders_.Rider],
    ) -> list[riders_.Rider]:
        """The riders started under their leases; those that must not run now
        settled or given back. Returns the ones to run."""
        assert self.client is not None and self.scripts is not None
        try:
            riders_.start(self.scripts, self.incarnation, hostname, self.settings.result_ttl_s,
                          taken)
        except redis.RedisError as exc:
            # Held, and given back once this task is settled.
            log.warning("task %s: tasks taken along not started (%s)", task.request.id, exc)
            return []
        keep, settle, back = [], [], []
        for rider in taken:
            if not rider.started:
                settle.append(rider)  # already has its result, or is not ours
            elif rider.deliveries > 1:
                back.append(rider)
            elif all(rider.revoked):
                task.backend.mark_as_revoked(rider.task_id, reason="revoked through the API")
                settle.append(rider)
            else:
                keep.append(rider)
        riders_.give_back(self.client, self.incarnation, back, why="requeued")
        if settle:
            riders_.ack(self.scripts, self.incarnation, settle)
        for rider in settle + back:
            rider.settled = True
        return keep

    def _run_pass(
        self, task: Task, route: Route, version: str, loaded: LoadedModel, hostname: str,
        started_at: float,
        queue: str, requests: list[RequestItem], revoked: list[int], expired: list[int],
        riders: list[riders_.Rider],
    ) -> TaskResult:
        """One forward pass over the live requests of the task and of its
        riders; each task's result stored under its own lease."""
        assert self.client is not None
        model = route.name
        task_id = task.request.id
        live = [i for i, gone in enumerate(revoked) if not gone and not expired[i]]
        groups = [requests[i].rows for i in live]
        for rider in riders:
            groups += [rider.requests[i].rows for i in rider.live()]
        rows = sum(len(g) for g in groups)
        if self.settings.ledger:
            # Recorded just before the model runs, with the requests it runs.
            entries = [orjson.dumps({
                "event": "start", "task": task_id, "incarnation": self.incarnation,
                "requests": [requests[i].id for i in live], "t": started_at,
                "pid": os.getpid(),
            }), *riders_.ledger_starts(self.incarnation, riders, started_at)]
            try:
                self.client.rpush(delivery.LEDGER, *entries)
            except redis.RedisError as exc:
                raise Reject(f"Redis unreachable at start: {exc}", requeue=True) from exc
        t0 = time.perf_counter()
        in_pass = len(requests) + sum(len(r.requests) for r in riders)
        self._post(current={"task_id": task_id, "model": model, "rows": rows,
                            "requests": len(groups), "since": started_at})
        outcomes: dict[int, Outcome]
        try:
            # Every request too late to start: nothing runs.
            outcomes = self._predict_inputs(route, loaded, groups) if groups else {}
        except TransientError as exc:
            retries = task.request.retries
            raise task.retry(
                exc=exc,
                countdown=route.retries.backoff_s * (2**retries),
                max_retries=route.retries.max,
            ) from exc
        except SoftTimeLimitExceeded:
            raise TaskTimeout(
                f"model {model!r}: the job ran past its time limit of {route.time_limit_s:g} s"
            ) from None
        finally:
            self._post(current=None)
        run_ms = round((time.perf_counter() - t0) * 1000, 3)
        finished_at = time.time()
        def result(outcomes_: list[Outcome], rows_: int) -> TaskResult:
            return TaskResult(outcomes=outcomes_, worker=hostname, device=self.spec.device_label,
                              version=version, batch_size=in_pass, rows=rows_)

        body = result(_outcomes(requests, revoked, expired, live, outcomes, 0, started_at,
                                finished_at, run_ms),
                      sum(len(requests[i].rows) for i in live))
        position = len(live)
        rider_bodies = []
        for rider in riders:
            alive = rider.live()
            rider_bodies.append(result(
                _outcomes(rider.requests, rider.revoked, rider.expired, alive, outcomes,
                          position, started_at, finished_at, run_ms),
                sum(len(rider.requests[i].rows) for i in alive)))
            position += len(alive)
        # The time per row counts only passes big enough for it to mean
        # something: a one-row call is mostly fixed cost.
        sized = rows >= _ROWS_FOR_RATE
        drained = (queue, rows if sized else 0, run_ms / 1000 if sized else 0.0, model,
                   _lane(task))
        self._finish(task_id, body, drained if queue else None,
                     list(zip(riders, rider_bodies, strict=True)))
        if riders and self._monitored():
            riders_.announce(task, hostname, riders, rider_bodies, run_ms / 1000)
        return body

    def _monitored(self) -> bool:
        """Whether to send task events for the riders (Celery sends the
        leader's, but never saw the riders): looked up at most every 5 s."""
        wanted, until = self._monitoring
        if time.monotonic() < until:
            return wanted
        try:
            wanted = self.settings.events or bool(
                self.client is not None and self.client.exists(redis_keys.MONITORING))
        except redis.RedisError:
            wanted = False
        self._monitoring = (wanted, time.monotonic() + 5.0)
        return wanted

    def _start(
        self, task_id: str, hostname: str, requests: list[RequestItem],
        joining: riders_.Join | None,
    ) -> tuple[tuple[int, list[int], list[int]] | riders_.Fenced | None, list[str]]:
        """The task's start and, in the same round trip, the messages taken
        along (none without ``joining``)."""
        assert self.scripts is not None
        calls = [riders_.start_call(self.scripts, self.incarnation, task_id, hostname,
                                    self.settings.result_ttl_s, requests)]
        if joining is not None:
            calls.append(riders_.join_call(self.scripts, self.incarnation, joining))
        got, *taken = self.scripts.pipelined(calls)
        # What was taken along is returned even when the start was fenced, so
        # that it goes back with the task.
        started: tuple[int, list[int], list[int]] | riders_.Fenced | None
        try:
            started = riders_.read_start(got, task_id, self.incarnation, len(requests))
        except riders_.Fenced as fenced:
            started = fenced
        return started, [m.decode() if isinstance(m, bytes) else m for m in (taken[0] if taken else [])]

    def _finish(self, task_id: str, body: TaskResult, drained: Drained | None = None,
                riders: list[tuple[riders_.Rider, TaskResult]] | None = None) -> None:
        """The result, under the lease, if it is the task's first, and each
        rider's result and ack, in one round trip. While Redis is away it is
        tried again for a while; then the job is given back to run again (a
        second run, never a second result), and its riders with it."""
        assert self.client is not None and self.scripts is not None
        deadline = time.monotonic() + _STORE_PATIENCE_S
        while True:
            try:
                calls: list[delivery.Call] = []
                for rider, rider_body in riders or []:
                    counted = None if drained is None else \
                        (drained[0], 0, 0.0, drained[3], rider.lane)
                    calls.append(self._store_call(rider.task_id, rider_body, counted))
                    calls.append(delivery.ack_joined_call(self.scripts, self.incarnation,
                                                          rider.tag))
                calls.append(self._store_call(task_id, body, drained))
                *_, stored = self.scripts.pipelined(calls)
            except redis.RedisError as exc:
                if time.monotonic() > deadline:
                    raise Reject(f"Redis unreachable for the result: {exc}", requeue=True) from exc
                log.warning("task %s: result not stored yet (%s); trying again", task_id, exc)
                time.sleep(1.0)
                continue
            for rider, _ in riders or []:
                rider.settled = True
            if stored != 1:
                log.warning("task %s: result dropped (%s)", task_id,
                            "no longer owned" if stored == 0 else "a result was already stored")
            return

    def _store_call(self, task_id: str, body: TaskResult, drained: Drained | None) -> delivery.Call:
        """The store script for one task (``delivery_store.lua``)."""
        assert self.scripts is not None
        entry = ""
        if self.settings.ledger:
            entry = orjson.dumps({"event": "result", "task": task_id, "state": "SUCCESS",
                                  "incarnation": self.incarnation, "t": time.time()}).decode()
        keys = [delivery.LEASES, delivery.done(task_id), redis_keys.result(task_id),
                delivery.STATS, delivery.LEDGER]
        args: list[Any] = [self.incarnation, task_id, ResultDoc.success(task_id, body).encode(),
                           self.settings.result_ttl_s, entry]
        if drained is not None:
            keys.append(redis_keys.DRAINED)
            args += [drained[0], drained[1], repr(drained[2]), drained[3], drained[4]]
        return self.scripts.store, keys, args

    def _predict_inputs(
        self, route: Route, loaded: LoadedModel, groups: list[list[Any]]
    ) -> dict[int, Outcome]:
        """``_predict`` after the rows that only the worker can make ready
        are made so (images decoded): a request whose rows do not decode
        fails alone, naming its image, and the others run."""
        if not isinstance(route.input, Image):
            return self._predict(route.name, loaded, groups)
        out: dict[int, Outcome] = {}
        ready: list[list[Any]] = []
        positions: list[int] = []
        for position, group in enumerate(groups):
            try:
                ready.append(model_rows(route.input, group))
            except InvalidImage as exc:
                out[position] = Outcome(error=f"InvalidImage: {exc}")
                continue
            positions.append(position)
        if ready:
            ran = self._predict(route.name, loaded, ready)
            out.update({position: ran[k] for k, position in enumerate(positions)})
        return out

    def _predict(
        self, model: str, loaded: LoadedModel, groups: list[list[Any]]
    ) -> dict[int, Outcome]:
        """One forward pass over every group's rows, split on out-of-memory;
        what each group gets back, by position. When the pass fails otherwise,
        each group runs alone, so that one bad request fails alone."""
        assert self.memory is not None
        rows = [row for group in groups for row in group]
        try:
            result = predict_splitting(loaded, rows, self.memory.release)
        except (TransientError, SoftTimeLimitExceeded):
            raise
        except Exception as exc:
            if len(groups) == 1:
                raise
            log.warning("model %s: a batch of %d requests failed (%s); running them one by one",
                        model, len(groups), exc)
            out: dict[int, Outcome] = {}
            for position, group in enumerate(groups):
                try:
                    out[position] = self._predict(model, loaded, [group])[0]
                except (TransientError, SoftTimeLimitExceeded):
                    raise
                except Exception as alone:  # noqa: BLE001 - any model error fails only its request
                    out[position] = Outcome(error=f"{type(alone).__name__}: {alone}")
            return out
        if result.splits:
            log.warning(
                "model %s: out of device memory on %d rows; split %d times, %d passes",
                model, len(rows), result.splits, result.passes,
            )
        out = {}
        start = 0
        for position, group in enumerate(groups):
            end = start + len(group)
            failed = {i - start: why for i, why in result.failed.items() if start <= i < end}
            if failed:
                first = min(failed)
                error = DeviceOutOfMemory(
                    f"model {model!r}: {len(failed)} of {len(group)} rows did not fit in "
                    f"device memory: row {first} does not fit even on its own ({failed[first]})"
                )
                if len(groups) == 1:
                    raise error
                out[position] = Outcome(error=f"DeviceOutOfMemory: {error}")
            else:
                out[position] = Outcome(
                    predictions=result.predictions[start:end],
                    probabilities=(result.probabilities[start:end]
                                   if result.probabilities is not None else None),
                    oom_splits=result.splits,
                )
            start = end
        return out
