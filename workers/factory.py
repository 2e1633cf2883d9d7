"""Builds and starts a worker from a ``WorkerSpec``; the CPU and GPU workers
differ only in their specs."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, signals

from ml.artifacts import verify
from turnout import delivery, heartbeats, keys
from turnout.catalog import at_version
from turnout.celery_app import TASK_PREDICT, make_celery
from turnout.errors import ArtifactError, ConfigError
from turnout.routes import RouteTable
from turnout.serving import FAILED, LOADING, READY, parse_all
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
    incarnation: str = ""

    def all_loaded(self) -> bool:
        return self.board.ready() >= self.concurrency


def owned_app(spec: WorkerSpec, settings: Settings, table: RouteTable, incarnation: str) -> Celery:
    """The Celery app of a worker whose deliveries belong to ``incarnation``."""
    app = make_celery(settings, table)
    if incarnation:
        # Read by the transport's QoS (owners) and the result backend (leases);
        # the pool children inherit it across the fork.
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options, "turnout_incarnation": incarnation,
        }
        app.conf.turnout_incarnation = incarnation
    app.conf.worker_prefetch_multiplier = spec.prefetch_multiplier
    app.conf.worker_disable_prefetch = spec.disable_prefetch
    return app


def build_worker_app(
    spec: WorkerSpec, settings: Settings, table: RouteTable, incarnation: str = ""
) -> WorkerApp:
    """The Celery app with the predict task bound to this process's runtime.
    ``incarnation`` names this start of the worker in its deliveries' owners
    and its tasks' leases (turnout.delivery)."""
    routes = table.routes_for_queues(set(spec.queues))
    if not routes:
        raise ConfigError(f"worker {spec.name}: no route in {table.source} uses {spec.queues}")
    # Checked in the parent so that a bad artifact stops the start with a clear
    # message instead of a child that dies and is restarted forever.
    problems = []
    try:
        client = redis.Redis.from_url(settings.redis().url, socket_timeout=5)
        serving = parse_all(client.hgetall(keys.SERVING))
        client.close()
    except redis.RedisError:
        serving = {}  # the children look again; the route table's versions meanwhile
    for route in routes:
        version = serving[route.name].default_for(route) if route.name in serving else route.version
        try:
            verify(settings.models_dir, at_version(route, version))
        except ArtifactError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(f"worker {spec.name} cannot start: " + "; ".join(problems))

    app = owned_app(spec, settings, table, incarnation)

    @app.task(name=TASK_PREDICT, bind=True)
    def predict(
        self: Any, model: str, requests: list[list[Any]], spec: dict[str, Any] | None = None
    ) -> None:
        if _runtime is None:
            raise RuntimeError("the worker's models are not loaded")
        # The runtime has stored the result itself; returning it too would only
        # pickle it through the pool's pipe to the parent, which drops it.
        _runtime.run(self, model, requests, spec)

    board = Board(spec.concurrency)

    def init_child(**_: Any) -> None:
        global _runtime
        runtime = WorkerRuntime(
            spec, settings, table, routes, slot=board.claim(), incarnation=incarnation
        )
        runtime.load()
        _runtime = runtime

    signals.worker_process_init.connect(init_child, weak=False)
    return WorkerApp(app, [r.name for r in routes], spec.concurrency, board, incarnation)


class Heartbeat:
    """A thread in the worker's parent that says, every second or so, that the
    worker is alive, which queues it consumes, which models it serves (and
    refused), what its children are running and, for a GPU, NVML's figures.

    It runs in the parent, never in a pool child, so a long forward pass cannot
    starve it. Each beat also moves the incarnation's counter, by which
    reapers judge it alive (turnout.delivery), and runs one reaper look.
    Fencing: a worker that could not beat for ``fence_after_s`` kills its
    running children before anyone can declare it dead, and one that learns
    it was declared dead stops at once, so that a fresh incarnation replaces it.
    """

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
        self.incarnation = worker.incarnation
        self.doc: dict[str, Any] = {
            "name": spec.name,
            "incarnation": worker.incarnation,
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
        self._versions: dict[str, dict[str, dict[str, Any]]] = {}
        self._stop = threading.Event()
        self._withdrawn = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None

    def start(self) -> None:
        self._client = redis.Redis.from_url(self.settings.redis().url, socket_timeout=5)
        self._thread = threading.Thread(target=self._loop, name="turnout-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = self.settings.heartbeat_s
        assert self._client is not None
        scripts = delivery.Scripts(self._client)
        reaper = delivery.Reaper(self._client, self.settings.dead_after_s, name=self.spec.name)
        last_beat = time.monotonic()
        fenced = False
        announced = False
        while not self._stop.is_set():
            try:
                if self.incarnation and delivery.beat(scripts, self.incarnation) < 0:
                    self._declared_dead()
                    return
                last_beat = time.monotonic()
                fenced = False
                # Celery says "ready" once it consumes, which can be before the
                # pool children have loaded their models: announce only after.
                if self._withdrawn.is_set():
                    pass  # going away: beat on (jobs in hand finish) but unannounced
                elif announced or self.ready():
                    if not announced:
                        log.info("worker %s: all models loaded; announcing it", self.spec.name)
                        announced = True
                    heartbeats.publish(self._client, self.current(), ttl_s=interval * 3)
                    if self._withdrawn.is_set():  # stop() ran meanwhile: take it back
                        heartbeats.withdraw(self._client, self.spec.name)
                reaper.tick()
            except redis.RedisError as exc:
                log.warning("heartbeat not sent: %s", exc)
                reaper.forget()  # it could not watch the others either
                silent = time.monotonic() - last_beat
                if not fenced and silent >= self.settings.fence_after_s:
                    fenced = True
                    self._kill_running(f"no heartbeat for {silent:.1f} s")
            self._stop.wait(interval if announced else min(interval, 0.05))

    def _kill_children(self, busy_only: bool, why: str) -> None:
        """SIGKILL the pool children (those running a job, with ``busy_only``);
        the pool replaces them."""
        for child in self.board.read():
            if not child.get("pid") or (busy_only and not child.get("current")):
                continue
            log.error("worker %s: %s; killing child %s", self.spec.name, why, child["pid"])
            try:
                os.kill(int(child["pid"]), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _kill_running(self, why: str) -> None:
        """After this long without a beat, a running job may be given to
        another worker at any moment: it must not run on here."""
        self._kill_children(busy_only=True, why=why)

    def _declared_dead(self) -> None:
        """Our jobs have been given to others: stop everything now. Whatever
        the children would write is fenced off anyway; killing them saves the
        device. A supervisor (`turnout up`, systemd) starts a fresh worker."""
        self._kill_children(busy_only=False, why=(
            f"declared dead (its beats stopped for {self.settings.dead_after_s:.0f} s); "
            "its jobs went to other workers"))
        os.kill(os.getpid(), signal.SIGKILL)

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
            self._versions = merge_versions([c.get("versions") or {} for c in ready])
        # While a replaced child reloads, the worker keeps the models it had:
        # its jobs wait a moment in the queue rather than being sent elsewhere.
        doc["models"] = self._loaded
        doc["refused"] = self._refused
        doc["versions"] = self._versions
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
        """Withdraw the announcement (the worker is going away). The beats go
        on until ``retire``: a warm shutdown still finishes its jobs."""
        self._withdrawn.set()
        if self._client is not None:
            try:
                heartbeats.withdraw(self._client, self.spec.name)
            except redis.RedisError:
                pass  # the key expires on its own

    def retire(self) -> None:
        """After the consumer has stopped: give back whatever is still held,
        and strike the incarnation off."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._client is not None and self.incarnation:
            try:
                moved = delivery.retire(self._client, self.incarnation)
                if moved:
                    log.info("worker %s: %d job(s) given back at shutdown", self.spec.name, moved)
            except redis.RedisError as exc:
                log.warning("worker %s: could not retire (%s); reapers will", self.spec.name, exc)


def merge_versions(
    children: list[dict[str, dict[str, dict[str, Any]]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """One worker's version states from its children's: a version is ready when
    every child has it ready, failed when any child could not load it (with
    that child's reason), and loading otherwise."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for versions in children:
        for model, states in versions.items():
            for version, state in states.items():
                seen.setdefault((model, version), []).append(state)
    for (model, version), found in sorted(seen.items()):
        failed = [s for s in found if s.get("state") == FAILED]
        if failed:
            merged = {"state": FAILED, "reason": failed[0].get("reason"),
                      "generation": max(int(f.get("generation", 0)) for f in failed)}
        elif len(found) == len(children) and all(s.get("state") == READY for s in found):
            merged = {"state": READY}
        else:
            merged = {"state": LOADING}
        out.setdefault(model, {})[version] = merged
    return out


def _stuck(name: str, grace_s: float) -> None:
    log.error("worker %s still not stopped %.0f s after its shutdown began; exiting", name,
              grace_s)
    os._exit(1)


def run_worker(spec: WorkerSpec, settings: Settings, table: RouteTable) -> int:
    incarnation = delivery.new_incarnation(spec.name)
    if spec.kind == "train":
        from workers.training import build_train_app

        worker_app = build_train_app(spec, settings, table, incarnation)
    else:
        worker_app = build_worker_app(spec, settings, table, incarnation)
    app = worker_app.app
    telemetry = DeviceTelemetry() if spec.device == "cuda" else None
    heartbeat = Heartbeat(spec, settings, worker_app, telemetry)
    # Announce the worker only once its pool is up, and take it back first thing
    # on shutdown, so the router never routes to a worker that is going away.
    # Registered before the consumer starts, so that its first message has an
    # owner; beating from then on, before the children have loaded.
    client = redis.Redis.from_url(settings.redis().url, socket_timeout=5)
    delivery.register(client, incarnation)
    client.close()
    heartbeat.start()
    grace_s = table.max_time_limit_s + 30

    def shutting_down(**_: Any) -> None:
        heartbeat.stop()
        # A warm shutdown waits for the jobs in hand; one that outlasts the
        # longest time limit is stuck (Celery can hang after an unrecoverable
        # consumer error while this thread still beats): end the process, so
        # that the reapers take its jobs and a supervisor starts a fresh one.
        timer = threading.Timer(grace_s, _stuck, args=(spec.name, grace_s))
        timer.daemon = True  # a clean exit does not wait for it
        timer.start()

    signals.worker_shutting_down.connect(shutting_down, weak=False)
    signals.worker_shutdown.connect(lambda **_: heartbeat.retire(), weak=False)
    log.info(
        "starting worker %s (incarnation %s): queues %s, concurrency %d, device %s, broker %s",
        spec.name,
        incarnation,
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
        # Celery's own heartbeat (a worker-heartbeat event every 2 s) feeds only
        # monitors; Turnout's heartbeat (above) is what the router and the
        # reapers read. It stays on because it keeps the worker's event
        # dispatcher enabled, so that Flower's `enable_events` broadcast can
        # turn task events on at run time (with all three off, Celery leaves
        # the dispatcher disabled and the broadcast does nothing).
        without_heartbeat=False,
    )
    worker.start()
    return int(worker.exitcode or 0)
