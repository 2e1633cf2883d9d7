"""Builds and starts a worker from a ``WorkerSpec``; the CPU and GPU workers
differ only in their specs."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, signals

from ml.artifacts import verify
from turnout import heartbeats
from turnout.celery_app import TASK_PREDICT, make_celery
from turnout.errors import ArtifactError, ConfigError
from turnout.routes import RouteTable
from turnout.settings import Settings
from workers.board import Board
from workers.gpu.nvml import DeviceTelemetry
from workers.runtime import WorkerRuntime
from workers.spec import WorkerSpec

log = logging.getLogger(__name__)

# The pool child's runtime; set by the worker_process_init hook after the fork.
_runtime: WorkerRuntime | None = None


@dataclass
class WorkerApp:
    app: Celery
    models: list[str]
    concurrency: int
    # What each pool child posts for the heartbeat (shared across the fork).
    board: Board

    def all_loaded(self) -> bool:
        return self.board.ready() >= self.concurrency


def build_worker_app(spec: WorkerSpec, settings: Settings, table: RouteTable) -> WorkerApp:
    """The Celery app with the predict task bound to this process's runtime."""
    routes = table.routes_for_queues(set(spec.queues))
    if not routes:
        raise ConfigError(f"worker {spec.name}: no route in {table.source} uses {spec.queues}")
    # Checked in the parent so that a bad artifact stops the start with a clear
    # message instead of a child that dies and is restarted forever.
    problems = []
    for route in routes:
        try:
            verify(settings.models_dir, route)
        except ArtifactError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(f"worker {spec.name} cannot start: " + "; ".join(problems))

    app = make_celery(settings, table)
    app.conf.worker_prefetch_multiplier = spec.prefetch_multiplier
    app.conf.worker_disable_prefetch = spec.disable_prefetch

    @app.task(name=TASK_PREDICT, bind=True)
    def predict(self: Any, model: str, requests: list[list[Any]]) -> None:
        if _runtime is None:
            raise RuntimeError("the worker's models are not loaded")
        # The runtime has stored the result itself; returning it too would only
        # pickle it through the pool's pipe to the parent, which drops it.
        _runtime.run(self, model, requests)

    board = Board(spec.concurrency)

    def init_child(**_: Any) -> None:
        global _runtime
        runtime = WorkerRuntime(spec, settings, table, routes, slot=board.claim())
        runtime.load()
        _runtime = runtime

    signals.worker_process_init.connect(init_child, weak=False)
    return WorkerApp(app, [r.name for r in routes], spec.concurrency, board)


class Heartbeat:
    """A thread in the worker's parent that says, every few seconds, that the
    worker is alive, which queues it consumes, which models it serves (and
    refused), what its children are running and, for a GPU, NVML's figures."""

    def __init__(
        self,
        spec: WorkerSpec,
        settings: Settings,
        worker: WorkerApp,
        telemetry: DeviceTelemetry | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.ready = worker.all_loaded
        self.board = worker.board
        self.telemetry = telemetry
        models = worker.models
        self.doc: dict[str, Any] = {
            "name": spec.name,
            "kind": spec.kind,
            "queues": list(spec.queues),
            "device": spec.device_label,
            "models": models,
            "concurrency": spec.concurrency,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": time.time(),
        }
        if spec.kind == "gpu":
            # What this process pinned itself to, before torch was imported.
            self.doc["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
            self.doc["gpu_index"] = spec.gpu_index
        if spec.memory_limit_mb is not None:
            self.doc["memory_limit_mb"] = spec.memory_limit_mb
        self._loaded: list[str] = list(models)
        self._refused: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None

    def start(self) -> None:
        self._client = redis.Redis.from_url(self.settings.redis().url, socket_timeout=5)
        self._thread = threading.Thread(target=self._loop, name="turnout-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = self.settings.heartbeat_s
        # Celery says "ready" once it consumes, which can be before the pool
        # children have loaded their models: announce only after they have.
        while not self.ready():
            if self._stop.wait(0.05):
                return
        log.info("worker %s: all models loaded; announcing it", self.spec.name)
        while not self._stop.is_set():
            try:
                assert self._client is not None
                heartbeats.publish(self._client, self.current(), ttl_s=interval * 3)
            except redis.RedisError as exc:
                log.warning("heartbeat not sent: %s", exc)
            self._stop.wait(interval)

    def current(self) -> dict[str, Any]:
        """The heartbeat document now: the fixed part plus the children's posts."""
        doc = dict(self.doc)
        children = self.board.read()
        ready = [c for c in children if c.get("ready")]
        if ready:
            self._loaded = sorted({m for c in ready for m in c.get("models", ())})
            self._refused = {}
            for child in ready:
                self._refused.update(child.get("refused") or {})
        # While a replaced child reloads, the worker keeps the models it had:
        # its jobs wait a moment in the queue rather than being sent elsewhere.
        doc["models"] = self._loaded
        doc["refused"] = self._refused
        doc["reloading"] = len(ready) < len(children) or not children
        doc["current_tasks"] = [c["current"] for c in children if c.get("current")]
        doc["busy"] = len(doc["current_tasks"])
        doc["children"] = [
            {"pid": c["pid"], "ready": bool(c.get("ready")), "memory": c.get("memory", {})}
            for c in children
        ]
        if self.spec.kind == "gpu":
            if self.spec.device != "cuda" or self.telemetry is None:
                doc["gpu"] = None
                doc["telemetry"] = "none: the worker runs on the CPU"
            else:
                uuid = next((c["device_uuid"] for c in children if c.get("device_uuid")), None)
                doc["gpu"] = self.telemetry.read(uuid)
                doc["telemetry"] = self.telemetry.status
        return doc

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._client is not None:
            try:
                heartbeats.withdraw(self._client, self.spec.name)
            except redis.RedisError:
                pass  # the key expires on its own


def run_worker(spec: WorkerSpec, settings: Settings, table: RouteTable) -> int:
    worker_app = build_worker_app(spec, settings, table)
    app = worker_app.app
    telemetry = DeviceTelemetry() if spec.device == "cuda" else None
    heartbeat = Heartbeat(spec, settings, worker_app, telemetry)
    # Announce the worker only once its pool is up, and take it back first thing
    # on shutdown, so the router never routes to a worker that is going away.
    signals.worker_ready.connect(lambda **_: heartbeat.start(), weak=False)
    signals.worker_shutting_down.connect(lambda **_: heartbeat.stop(), weak=False)
    log.info(
        "starting worker %s: queues %s, concurrency %d, device %s, broker %s",
        spec.name,
        ",".join(spec.queues),
        spec.concurrency,
        spec.device_label,
        settings.redis().redacted,
    )
    if settings.log_level.upper() != "DEBUG":
        # Two INFO lines per task ("received", "succeeded") cost more than
        # a small model's forward pass at a few thousand tasks a second.
        for name in ("celery.app.trace", "celery.worker.strategy"):
            logging.getLogger(name).setLevel(logging.WARNING)
    worker = app.Worker(
        hostname=spec.name,
        queues=list(spec.queues),
        concurrency=spec.concurrency,
        pool="prefork",
        loglevel=settings.log_level,
        optimization="fair",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
    )
    worker.start()
    return int(worker.exitcode or 0)
