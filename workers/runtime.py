"""Per-process state of a worker's pool child: the models it loaded at start,
and the Redis client it uses for delivery bookkeeping.

Built once per child in Celery's ``worker_process_init`` hook (after the fork),
never at import time and never per task.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded

from ml.adapters import LoadedModel, get_adapter
from ml.adapters.base import TransientError
from ml.artifacts import verify
from ml.oom import predict_splitting
from router import keys
from router.routes import Route, RouteTable
from router.settings import Settings
from workers.board import Slot
from workers.memory import DeviceMemory, estimate_mb
from workers.spec import WorkerSpec

log = logging.getLogger(__name__)


class ModelNotServed(Exception):
    """The job reached a worker that has not loaded its model."""


class TaskTimeout(Exception):
    """The job ran past its route's time limit."""


class TooManyDeliveries(Exception):
    """The job's worker died every time it ran it; it is failed, not run again."""


class DeviceOutOfMemory(Exception):
    """Some rows did not fit in device memory even one at a time."""


@dataclass
class WorkerRuntime:
    spec: WorkerSpec
    settings: Settings
    table: RouteTable
    routes: list[Route]
    slot: Slot | None = None
    models: dict[str, LoadedModel] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    client: redis.Redis | None = None
    memory: DeviceMemory | None = None

    def load(self) -> None:
        if self.spec.torch_threads and any(r.framework != "sklearn" for r in self.routes):
            import torch

            torch.set_num_threads(self.spec.torch_threads)
        self.memory = DeviceMemory(self.spec.device, self.spec.memory_limit_mb)
        self.memory.start()
        for route in self.routes:
            started = time.perf_counter()
            path, meta = verify(self.settings.models_dir, route)
            need = estimate_mb(path.parent, route.options, meta.memory_mb)
            fits, why = self.memory.fits(need)
            if not fits:
                self.refused[route.name] = why
                log.error(
                    "worker %s refuses model %s: it does not fit (%s)",
                    self.spec.name, route.name, why,
                )
                continue
            adapter = get_adapter(route.framework)
            model = adapter.load(path, meta, self.spec.device, route.options)
            self._warm_up(route, model)
            self.memory.commit(need)
            self.models[route.name] = model
            log.info(
                "loaded model %s v%s (%s) on %s in %.0f ms",
                route.name,
                route.version,
                route.framework,
                self.spec.device_label,
                (time.perf_counter() - started) * 1000,
            )
        self.memory.mark_baseline()
        self.client = redis.Redis.from_url(self.settings.redis().url)
        self._post(
            ready=True,
            models=sorted(self.models),
            refused=self.refused,
            device_uuid=self.memory.device_uuid(),
            current=None,
        )

    @staticmethod
    def _warm_up(route: Route, model: LoadedModel) -> None:
        # One pass at start pays for lazy initialisation (kernels, allocator,
        # tokenizer) here rather than in the first client's request.
        if route.input.kind == "tabular" and route.input.width:
            model.predict([[0.0] * route.input.width])
        elif route.input.kind == "text":
            model.predict(["warm up"])

    def _post(self, **fields: Any) -> None:
        if self.slot is not None:
            memory = self.memory.figures() if self.memory is not None else {}
            self.slot.post(memory=memory, **fields)

    def run(self, task: Task, model: str, inputs: list[Any], submitted_at: float) -> dict[str, Any]:
        started_at = time.time()
        route = self.table.get(model)
        loaded = self.models.get(model)
        if route is None or loaded is None:
            raise ModelNotServed(f"worker {self.spec.name} does not serve model {model!r}")
        task_id = task.request.id
        assert self.client is not None
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(keys.deliveries(task_id))
        pipe.expire(keys.deliveries(task_id), self.settings.result_ttl_s)
        pipe.exists(keys.revoked(task_id))
        deliveries, _, revoked = pipe.execute()
        if revoked:
            # Celery stored STARTED just before this body ran; put REVOKED back
            # so that the result backend agrees with what the router said.
            task.backend.mark_as_revoked(task_id, reason="revoked through the API")
            raise Ignore()
        limit = self.settings.max_deliveries + route.retries.max
        if deliveries > limit:
            raise TooManyDeliveries(
                f"model {model!r}: the job was started {deliveries - 1} times and its "
                "worker process died each time; it is not run again"
            )
        t0 = time.perf_counter()
        self._post(current={"task_id": task_id, "model": model, "rows": len(inputs), "since": started_at})
        try:
            assert self.memory is not None
            result = predict_splitting(loaded, inputs, self.memory.release)
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
        if result.splits:
            log.warning(
                "model %s: out of device memory on %d rows; split %d times, %d passes",
                model, len(inputs), result.splits, result.passes,
            )
        if result.failed:
            first = min(result.failed)
            raise DeviceOutOfMemory(
                f"model {model!r}: {len(result.failed)} of {len(inputs)} rows did not fit "
                f"in device memory: {result.failed[first]}"
            )
        run_ms = (time.perf_counter() - t0) * 1000
        finished_at = time.time()
        body: dict[str, Any] = {
            "predictions": result.predictions,
            "worker": task.request.hostname or self.spec.name,
            "device": self.spec.device_label,
            "timings_ms": {
                "queued": round(max(0.0, started_at - submitted_at) * 1000, 3),
                "run": round(run_ms, 3),
                "total": round(max(0.0, finished_at - submitted_at) * 1000, 3),
            },
        }
        if result.probabilities is not None:
            body["probabilities"] = result.probabilities
        if result.splits:
            body["oom_splits"] = result.splits
        return body
