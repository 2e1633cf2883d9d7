"""One step of a pipeline or an ensemble, run by a pool child (see
turnout/core/flows.py for the shape of a request's journey).

A step starts under its lease like any task (STARTED shown on its request's
result key; revocations and deadlines read on Redis's clock), reads its input
(with the message for the first step and an ensemble's branches, by
reference for the others, the join hash for a combine step), runs its model,
transform or combiner on the requests still alive, and hands on in one Lua
script that also acks its delivery (``flow_hop.lua``): the next step queued
with its input, a branch's answer joined, or the request's result stored.
A request that fails, is revoked or misses its deadline at a step ends there;
the later steps never run for it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import redis
from celery import Task
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded

from turnout.core import delivery, redis_keys
from turnout.core.celery_app import TASK_PREDICT
from turnout.core.flows import COMBINE, MODEL, TRANSFORM, Carried, FlowSpec, step_record
from turnout.core.messages import MessageError, Outcome, RequestItem, ResultDoc, TaskResult
from turnout.core.redis_keys import lane_key
from turnout.core.task_messages import TaskMessages, expires_backstop
from turnout.ml.adapters.base import TransientError
from turnout.workers import faults
from turnout.workers import riders as riders_
from turnout.workers.combine import CombineError, combine, load_callable
from turnout.workers.shelf import NotLoaded

if TYPE_CHECKING:
    from turnout.workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)

_STORE_PATIENCE_S = 60.0
# Retries of a step whose model raised a transient error.
_RETRIES = 2
# Passes of fewer rows say nothing of a model's time per row (as runtime.py's).
_ROWS_FOR_RATE = 16


@dataclass
class StepRun:
    """What one step did: each request's outcome after it, and its record."""

    carried: Carried
    version: str
    run_ms: float
    rows: int


class FlowSteps:
    """The pipeline steps of one pool child (beside its WorkerRuntime)."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.rt = runtime
        self._messages: TaskMessages | None = None

    def _builder(self, task: Task) -> TaskMessages:
        if self._messages is None:
            self._messages = TaskMessages(task.app, self.rt.settings.redis().db)
        return self._messages

    def run(self, task: Task, items: list[dict[str, Any]], raw_flow: Any) -> None:
        rt = self.rt
        assert rt.client is not None and rt.scripts is not None
        try:
            flow = FlowSpec.from_wire(raw_flow)
        except MessageError as exc:
            raise Ignore(f"a flow task no Turnout wrote: {exc}") from None
        started_at = time.time()
        requests = [RequestItem.from_wire(i) for i in items]
        task_id = task.request.id
        hostname = task.request.hostname or rt.spec.name
        step = flow.step
        call = delivery.start_call(
            rt.scripts, rt.incarnation, task_id,
            ResultDoc.started(flow.id, os.getpid(), hostname).encode(), rt.settings.result_ttl_s,
            [redis_keys.revoked(r.id) for r in requests], [r.deadline for r in requests],
            result_of=flow.id)
        try:
            (got,) = rt.scripts.pipelined([call])
        except redis.RedisError as exc:
            raise Reject(f"Redis unreachable at start: {exc}", requeue=True) from exc
        try:
            started = riders_.read_start(got, task_id, rt.incarnation, len(requests))
        except riders_.Fenced:
            raise Reject("not this worker's lease", requeue=True) from None
        if started is None:
            raise Ignore()
        deliveries, revoked, expired = started
        carried = self._input(flow, requests)
        for i, request in enumerate(requests):
            outcome = carried.outcomes[i]
            if outcome.error is not None or outcome.revoked:
                continue
            if revoked[i]:
                carried.outcomes[i] = Outcome(revoked=True)
            elif expired[i]:
                waited = max(0.0, started_at - request.submitted_at)
                carried.outcomes[i] = Outcome(
                    error=f"DeadlineExceeded: step {flow.at} ({step.name}) of {flow.name!r} could "
                          f"not start before the request's deadline ({waited:.3f} s after its "
                          "arrival); it and the later steps did not run")
        live = [i for i, o in enumerate(carried.outcomes) if o.error is None and not o.revoked]
        if all(revoked) and not flow.is_branch:
            # Revoked through the API: the router has written REVOKED already.
            self._hand_on(task, flow, requests, carried, "", started_at, 0.0, hostname, 0, final=True)
            return
        # As a predict task's: the deliveries its worker may die in, plus the
        # retries of a transient error (each one a delivery of the same id).
        limit = rt.settings.max_deliveries + _RETRIES
        if deliveries > limit:
            for i in live:
                carried.outcomes[i] = Outcome(
                    error=f"TooManyDeliveries: step {flow.at} ({step.name}) of {flow.name!r} was "
                          f"started {deliveries - 1} times and its worker process died each time")
            live = []
        if rt.settings.ledger and live:
            entry = orjson.dumps({"event": "start", "task": task_id, "flow": flow.id,
                                  "step": flow.at, "steps": len(flow.plan),
                                  "incarnation": rt.incarnation,
                                  "requests": [f"{requests[i].id}.{flow.at}" for i in live],
                                  "t": started_at, "pid": os.getpid()})
            try:
                rt.client.rpush(delivery.LEDGER, entry)
            except redis.RedisError as exc:
                raise Reject(f"Redis unreachable at start: {exc}", requeue=True) from exc
        since = self._since(flow, carried, requests)
        ran = self._step(task, flow, carried, live)
        ran.carried.steps.append(step_record(step, hostname, rt.spec.device_label, ran.version,
                                             max(0.0, started_at - since) * 1000, ran.run_ms))
        faults.pause(rt.settings, "hop", task_id, step.name)
        self._hand_on(task, flow, requests, ran.carried, ran.version, started_at, ran.run_ms,
                      hostname, ran.rows)
        faults.pause(rt.settings, "handed", task_id, step.name)

    @staticmethod
    def _since(flow: FlowSpec, carried: Carried, requests: list[RequestItem]) -> float:
        """Since when this step has been waiting: the end of the step(s)
        before it, or the request's arrival for a first step or a branch."""
        ends = [float(s["ended_at"]) for s in carried.steps
                if isinstance(s.get("ended_at"), int | float)]
        if ends and (flow.reads_input or flow.step.kind == COMBINE):
            return max(ends)
        return min(r.submitted_at for r in requests)

    def _input(self, flow: FlowSpec, requests: list[RequestItem]) -> Carried:
        """Each request's input to this step, as an outcome so far."""
        rt = self.rt
        assert rt.client is not None
        if flow.step.kind == COMBINE:
            raw = rt.client.hgetall(redis_keys.flow_join(flow.id))
            return self._joined(flow, requests, raw)
        if not flow.reads_input:
            return Carried([Outcome(predictions=r.rows) for r in requests])
        raw_input = rt.client.get(redis_keys.flow_input(flow.id, flow.at))
        if raw_input is None:
            return Carried([Outcome(error=f"FlowError: the input of step {flow.at} of "
                                          f"{flow.name!r} has expired") for _ in requests])
        carried = Carried.decode(raw_input)
        if len(carried.outcomes) != len(requests):
            raise Ignore(f"step {flow.at} of {flow.name!r}: its input has "
                         f"{len(carried.outcomes)} requests, its message {len(requests)}")
        return carried

    def _joined(self, flow: FlowSpec, requests: list[RequestItem],
                raw: dict[Any, Any]) -> Carried:
        """A combine step's input: every branch's answer, kept as the
        members' outcomes, one Carried per branch (in member order), folded
        into one whose predictions are [member answers] per request."""
        branches = []
        for b in range(flow.branches):
            got = raw.get(str(b).encode())
            if got is None:
                return Carried([Outcome(error=f"FlowError: branch {b} of {flow.name!r} left no "
                                              "answer (expired)") for _ in requests])
            branches.append(Carried.decode(got))
        out = []
        for i in range(len(requests)):
            members = [c.outcomes[i] for c in branches]
            failed = next(((b, o) for b, o in enumerate(members) if o.error is not None), None)
            if any(o.revoked for o in members):
                out.append(Outcome(revoked=True))
            elif failed is not None:
                b, o = failed
                out.append(Outcome(error=f"member {flow.plan[b].name!r} of {flow.name!r} failed: "
                                         f"{o.error}"))
            else:
                out.append(Outcome(predictions=[o.predictions for o in members],
                                   probabilities=[o.probabilities for o in members]))
        steps = [s for c in branches for s in c.steps]
        return Carried(out, steps)

    def _step(self, task: Task, flow: FlowSpec, carried: Carried, live: list[int]) -> StepRun:
        rt = self.rt
        step = flow.step
        groups = [carried.outcomes[i].predictions or [] for i in live]
        rows = sum(len(g) for g in groups)
        version = step.version
        t0 = time.perf_counter()
        rt._post(current={"task_id": task.request.id, "model": step.name, "rows": rows,
                          "requests": len(groups), "since": time.time()})
        try:
            faults.pause(rt.settings, "run", task.request.id, step.name)
            if not groups:
                got: dict[int, Outcome] = {}
            elif step.kind == MODEL:
                version, got = self._model(step.name, step.version, groups)
            elif step.kind == TRANSFORM:
                got = {p: self._transform(step.name, g) for p, g in enumerate(groups)}
            else:
                got = {p: self._combine(step.name, carried.outcomes[i]) for p, i in enumerate(live)}
        except TransientError as exc:
            retries = task.request.retries
            raise task.retry(exc=exc, countdown=2 ** retries, max_retries=_RETRIES) from exc
        except SoftTimeLimitExceeded:
            got = {p: Outcome(error=f"TaskTimeout: step {flow.at} ({step.name}) of {flow.name!r} "
                                    f"ran past its time limit of {step.time_limit_s:g} s")
                   for p in range(len(groups))}
        finally:
            rt._post(current=None)
        run_ms = (time.perf_counter() - t0) * 1000
        for position, i in enumerate(live):
            carried.outcomes[i] = got.get(position) or Outcome(error="no result for it")
        return StepRun(carried, version, run_ms, rows)

    def _model(self, name: str, version: str, groups: list[list[Any]]) -> tuple[str, dict[int, Outcome]]:
        rt = self.rt
        assert rt.shelf is not None
        route = rt.table.get(name)
        wait = route.soft_time_limit_s / 2 if route is not None else 10.0
        try:
            chosen, loaded = rt.shelf.get(name, version or None, False, wait)
        except NotLoaded as exc:
            # Not here now (a swap being undone): back for a worker that has it.
            time.sleep(1.0)
            raise Reject(str(exc), requeue=True) from None
        try:
            if route is not None:
                return chosen, rt._predict_inputs(route, loaded, groups)
            return chosen, rt._predict(name, loaded, groups)
        except (TransientError, SoftTimeLimitExceeded):
            raise
        except Exception as exc:  # noqa: BLE001 - the model's error fails its request
            return chosen, {0: Outcome(error=f"{type(exc).__name__}: {exc}")}

    @staticmethod
    def _transform(path: str, rows: list[Any]) -> Outcome:
        try:
            out = load_callable(path)(rows)
            out = list(out)
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:  # noqa: BLE001 - the operator's function fails its request
            return Outcome(error=f"TransformError: {path}: {type(exc).__name__}: {exc}")
        if len(out) != len(rows):
            return Outcome(error=f"TransformError: {path} answered {len(out)} rows for {len(rows)}")
        return Outcome(predictions=out)

    @staticmethod
    def _combine(how: str, joined: Outcome) -> Outcome:
        try:
            predictions, probabilities = combine(how, joined.predictions or [],
                                                 joined.probabilities or [])
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:  # noqa: BLE001 - a combine that fails fails its request
            kind = "CombineError" if isinstance(exc, CombineError) else type(exc).__name__
            return Outcome(error=f"{kind}: {exc}")
        return Outcome(predictions=predictions, probabilities=probabilities)

    # -- handing on -----------------------------------------------------------

    def _hand_on(self, task: Task, flow: FlowSpec, requests: list[RequestItem], carried: Carried,
                 version: str, started_at: float, run_ms: float, hostname: str, rows: int,
                 final: bool = False) -> None:
        rt = self.rt
        assert rt.scripts is not None
        if carried.steps:
            carried.steps[-1]["ended_at"] = started_at + run_ms / 1000
        alive = any(o.error is None and not o.revoked for o in carried.outcomes)
        ttl = rt.settings.result_ttl_s
        queue = str((task.request.delivery_info or {}).get("routing_key") or flow.step.queue)
        sized = rows >= _ROWS_FOR_RATE
        drained = (queue, rows if sized else 0, run_ms / 1000 if sized else 0.0, flow.step.name,
                   flow.lane)
        task_id = task.request.id
        if flow.is_branch and not final:
            following = flow.following()
            call = delivery.hop_call(
                rt.scripts, rt.incarnation, task_id, delivery.HOP_JOIN,
                redis_keys.flow_join(flow.id), lane_key(following.step.queue, flow.lane),
                following.step.queue, carried.encode(), ttl,
                message=self._message(task, following, requests), field=str(flow.at),
                branches=flow.branches, drained=drained,
                ledger_entry=self._entry(task_id, "hop", flow))
        elif flow.is_last or final or not alive:
            body = self._result(flow, requests, carried, hostname, rows)
            call = delivery.hop_call(
                rt.scripts, rt.incarnation, task_id, delivery.HOP_FINAL,
                redis_keys.result(flow.id), delivery.done(flow.id), flow.step.queue,
                ResultDoc.success(flow.id, body).encode(), ttl, drained=drained,
                ledger_entry=self._entry(flow.id, "result", flow))
        else:
            following = flow.following()
            call = delivery.hop_call(
                rt.scripts, rt.incarnation, task_id, delivery.HOP_NEXT,
                redis_keys.flow_input(flow.id, following.at),
                lane_key(following.step.queue, flow.lane), following.step.queue,
                carried.encode(), ttl, message=self._message(task, following, requests),
                drained=drained, ledger_entry=self._entry(task_id, "hop", flow))
        deadline = time.monotonic() + _STORE_PATIENCE_S
        while True:
            try:
                (outcome,) = rt.scripts.pipelined([call])
                break
            except redis.RedisError as exc:
                if time.monotonic() > deadline:
                    raise Reject(f"Redis unreachable for the hand-on: {exc}", requeue=True) from exc
                log.warning("step %s: not handed on yet (%s); trying again", task_id, exc)
                time.sleep(1.0)
        if outcome != 1:
            log.warning("step %s: %s", task_id, "no longer owned: not handed on" if outcome == 0
                        else "handed on before: not again")

    def _entry(self, task_id: str, event: str, flow: FlowSpec) -> str:
        if not self.rt.settings.ledger:
            return ""
        return orjson.dumps({"event": event, "task": task_id, "flow": flow.id, "step": flow.at,
                             "steps": len(flow.plan), "incarnation": self.rt.incarnation,
                             "t": time.time()}).decode()

    def _message(self, task: Task, following: FlowSpec, requests: list[RequestItem]) -> str:
        """The next step's task message; its requests without their rows (the
        rows go by reference), their ids, arrival times and deadlines kept."""
        step = following.step
        items = [RequestItem(r.id, [], r.submitted_at, r.deadline).to_wire() for r in requests]
        built = self._builder(task).build(
            TASK_PREDICT, following.task_id(), step.queue,
            (following.name, items, {"flow": following.to_wire()}),
            step.time_limit_s, step.soft_time_limit_s, lane=following.lane,
            expires=expires_backstop(step.time_limit_s, [r.deadline for r in requests]),
            argsrepr=f"({following.name!r}, step {following.at}: {step.name})")
        return built.message

    def _result(self, flow: FlowSpec, requests: list[RequestItem], carried: Carried,
                hostname: str, rows: int) -> TaskResult:
        """The request's result: each outcome with its timings, the steps."""
        now = time.time()
        run = sum(float((s.get("timings_ms") or {}).get("run") or 0) for s in carried.steps)
        steps = [{k: v for k, v in s.items() if k != "ended_at"} for s in carried.steps]
        outcomes = []
        for request, outcome in zip(requests, carried.outcomes, strict=True):
            total = max(0.0, now - request.submitted_at) * 1000
            outcome.timings_ms = {"queued": round(max(0.0, total - run), 3), "run": round(run, 3),
                                  "total": round(total, 3)}
            outcomes.append(outcome)
        versions = "+".join(f"{s['model']}@{s['version']}" for s in steps if s.get("version"))
        return TaskResult(outcomes=outcomes, worker=hostname, device=self.rt.spec.device_label,
                          version=versions, batch_size=len(requests), rows=rows, steps=steps)
