"""The training lane's worker: ``turnout worker train --device N|cpu``.

It consumes ``train.gpu`` (and, on the CPU, ``train.cpu`` too), one job at a
time, and its pool child is replaced after every job
(``worker_max_tasks_per_child=1``), so a job's memory, GPU memory included,
goes back when it ends. Its deliveries are owned like any worker's
(turnout.core.delivery): a trial whose worker lives is never run twice, and one
whose worker dies runs again from the start, writing its progress only once
it passes where the first run got.

A job is ``turnout.train_trial`` per trial, then ``turnout.train_select``,
which keeps the best trial and registers it as the model's next version. A
trial that fails reports its error instead of raising, so the job goes on to
the best of the others. Each trial's result goes into the job's join hash in
the same Lua script that acks the trial (``flow_hop.lua``, as a pipeline's
ensemble branches join), and the trial whose write completes the set queues
the select task: a trial whose worker dies at any point runs again, and the
select step is reached exactly once (a Celery chord's counter would miss it).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from celery import Task, signals
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded

from turnout.core import broker, delivery, lua, redis_keys
from turnout.core.routes import RouteTable
from turnout.core.settings import Settings
from turnout.core.task_messages import TaskMessages
from turnout.core.training import TASK_SELECT, TASK_TRIAL, select_id
from turnout.ml.train import Cancelled, discard, register, train_trial, trial_folder
from turnout.workers import faults
from turnout.workers.app import WorkerApp, owned_app
from turnout.workers.board import Board, Slot
from turnout.workers.riders import Fenced
from turnout.workers.runtime import start_under_lease
from turnout.workers.spec import WorkerSpec

log = logging.getLogger(__name__)

_trainer: Trainer | None = None


@dataclass
class Trainer:
    spec: WorkerSpec
    settings: Settings
    table: RouteTable
    incarnation: str
    slot: Slot
    client: redis.Redis = field(init=False)
    _messages: TaskMessages | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.client = broker.connect(self.settings.redis())
        self.scripts = delivery.Scripts(self.client)
        self._progress = self.client.register_script(lua.source("training_progress"))
        self._mark = self.client.register_script(lua.source("training_mark"))
        self.slot.post(ready=True, models=[], versions={}, current=None)

    def _start(self, task: Task) -> None:
        """STARTED under the task's lease, or Ignore: the worker no longer owns
        it, or it already has its result (it ran before this delivery)."""
        task_id = task.request.id
        try:
            started = start_under_lease(self.scripts, self.incarnation, task_id,
                                        task.request.hostname or self.spec.name,
                                        self.settings.result_ttl_s, [])
        except redis.RedisError as exc:
            raise Reject(f"Redis unreachable at start: {exc}", requeue=True) from exc
        except Fenced:
            raise Reject("not this worker's lease", requeue=True) from None
        if started is None:
            raise Ignore()

    def cancelled(self, job_id: str) -> bool:
        return bool(self.client.exists(redis_keys.training_cancel(job_id)))

    def trial(self, task: Task, job_id: str, model: str, index: int, trainer: str,
              params: dict[str, Any], seed: int, dataset: str, trials: int) -> None:
        self._start(task)
        result = self._trial(task, job_id, model, index, trainer, params, seed, dataset)
        faults.pause(self.settings, "hop", task.request.id, "trial")
        self._join(task, job_id, model, index, trials, result)
        faults.pause(self.settings, "handed", task.request.id, "trial")

    def _join(self, task: Task, job_id: str, model: str, index: int, trials: int,
              result: dict[str, Any]) -> None:
        """The trial's result into the job's join, atomically with its ack;
        the last trial's write queues the select task."""
        if self._messages is None:
            self._messages = TaskMessages(task.app, self.settings.redis().db)
        lane = str((task.request.delivery_info or {}).get("routing_key") or "")
        select = self._messages.build(TASK_SELECT, select_id(job_id), lane, (job_id, model))
        entry = ""
        if self.settings.ledger:
            entry = orjson.dumps({"event": "hop", "task": task.request.id, "flow": job_id,
                                  "step": index, "incarnation": self.incarnation,
                                  "t": time.time()}).decode()
        call = delivery.hop_call(
            self.scripts, self.incarnation, task.request.id, delivery.HOP_JOIN,
            redis_keys.training_join(job_id), lane, lane, orjson.dumps(result),
            self.settings.result_ttl_s, message=select.message, field=str(index),
            branches=trials, ledger_entry=entry)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.scripts.pipelined([call])
                return
            except redis.RedisError as exc:
                if time.monotonic() > deadline:
                    raise Reject(f"Redis unreachable for the join: {exc}", requeue=True) from exc
                time.sleep(1.0)

    def _trial(self, task: Task, job_id: str, model: str, index: int, trainer: str,
               params: dict[str, Any], seed: int, dataset: str) -> dict[str, Any]:
        out: dict[str, Any] = {"index": index, "params": params}
        if self.cancelled(job_id):
            return {**out, "status": "cancelled"}
        route = self.table.require(model)
        folder = trial_folder(self.settings.models_dir, model, job_id, index)
        progress_key = redis_keys.training_progress(job_id)

        def report(stage: str, percent: float, **more: Any) -> None:
            doc = {"stage": stage, "percent": round(percent, 1), **more}
            self._progress(keys=[progress_key],
                           args=[index, json.dumps(doc), percent, self.settings.result_ttl_s])

        self.slot.post(current={"task_id": task.request.id, "model": model, "training": job_id,
                                "trial": index, "since": time.time()})
        try:
            metrics = train_trial(route, trainer, params, seed, dataset, self.settings.data_dir,
                                  folder, report, lambda: self.cancelled(job_id))
        except Cancelled:
            shutil.rmtree(folder, ignore_errors=True)
            return {**out, "status": "cancelled"}
        except SoftTimeLimitExceeded:
            shutil.rmtree(folder, ignore_errors=True)
            limit = self.settings.train_time_limit_s
            return {**out, "status": "failed", "error": f"ran past the time limit of {limit:g} s"}
        except Exception as exc:  # noqa: BLE001 - a failed trial is reported, the search goes on
            log.warning("training %s trial %d failed: %s", job_id, index, exc)
            shutil.rmtree(folder, ignore_errors=True)
            return {**out, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        finally:
            self.slot.post(current=None)
        return {**out, "status": "SUCCESS", "score": metrics["test_accuracy"], "metrics": metrics}

    def select(self, task: Task, job_id: str, model: str) -> dict[str, Any]:
        """Keep the best trial by held-out accuracy and register it, once."""
        self._start(task)
        joined = self.client.hgetall(redis_keys.training_join(job_id))
        results = [orjson.loads(v) for v in joined.values()]
        record_key = redis_keys.training(job_id)
        record = orjson.loads(self.client.get(record_key) or b"{}")
        results = sorted(results, key=lambda r: int(r["index"]))
        record["trials"] = [{k: v for k, v in r.items() if k != "index"} for r in results]
        ok = [r for r in results if r.get("status") == "SUCCESS"]
        models_dir = self.settings.models_dir
        if not ok or not self._mark(keys=[record_key, redis_keys.training_cancel(job_id)]):
            discard(models_dir, model, job_id)
            if self.cancelled(job_id):
                record["status"] = "REVOKED"
            else:
                record["status"] = "FAILURE"
                record["error"] = f"all {len(results)} trial(s) failed: " + "; ".join(
                    f"trial {r['index']} ({_short(r['params'])}): {r.get('error', r.get('status'))}"
                    for r in results)
            self._save(record_key, record)
            return {"status": record["status"]}
        best = max(ok, key=lambda r: (r["score"], -int(r["index"])))
        route = self.table.require(model)
        chosen = trial_folder(models_dir, model, job_id, int(best["index"]))
        extra: dict[str, Any] = {}
        if len(results) > 1:
            extra["trials"] = [{"params": r["params"], "status": r.get("status"),
                                "score": r.get("score"), "error": r.get("error")} for r in results]
        with self.client.lock(redis_keys.register_lock(model), timeout=120, blocking_timeout=120):
            version = register(models_dir, route, job_id, chosen, extra)
        discard(models_dir, model, job_id)
        record.update(status="SUCCESS", version=version, metrics=best["metrics"],
                      params=best["params"], finished_at=time.time())
        record.pop("registering", None)
        self._save(record_key, record)
        log.info("training %s: model %s version %s registered (held-out accuracy %.4f)",
                 job_id, model, version, best["score"])
        return {"status": "SUCCESS", "version": version}

    def _save(self, key: str, record: dict[str, Any]) -> None:
        self.client.set(key, orjson.dumps(record), ex=self.settings.result_ttl_s)


def _short(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def build_train_app(
    spec: WorkerSpec, settings: Settings, table: RouteTable, incarnation: str = ""
) -> WorkerApp:
    app = owned_app(spec, settings, table, incarnation)
    # A fresh child per job: whatever a job allocated goes back with it.
    app.conf.worker_max_tasks_per_child = 1

    # A trial's result goes into its job's join, not the result backend.
    @app.task(name=TASK_TRIAL, bind=True)
    def trial(self: Any, job_id: str, model: str, index: int, trainer: str,
              params: dict[str, Any], seed: int, dataset: str, trials: int) -> None:
        assert _trainer is not None
        _trainer.trial(self, job_id, model, index, trainer, params, seed, dataset, trials)

    @app.task(name=TASK_SELECT, bind=True)
    def select(self: Any, job_id: str, model: str) -> dict[str, Any]:
        assert _trainer is not None
        return _trainer.select(self, job_id, model)

    board = Board(spec.concurrency)

    def init_child(**_: Any) -> None:
        global _trainer
        _trainer = Trainer(spec, settings, table, incarnation, board.claim())

    signals.worker_process_init.connect(init_child, weak=False)
    return WorkerApp(app, [], spec.concurrency, board, incarnation)
