"""A worker's Celery app: the predict task bound to the pool child's runtime,
its deliveries owned by the worker's incarnation. The CPU and GPU workers
differ only in their specs."""


from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, signals

from turnout.core import broker, redis_keys
from turnout.core.catalog import at_version
from turnout.core.celery_app import TASK_PREDICT, make_celery
from turnout.core.errors import ArtifactError, ConfigError
from turnout.core.routes import RouteTable
from turnout.core.serving import parse_all
from turnout.core.settings import Settings
from turnout.ml.artifacts import verify
from turnout.workers.board import Board
from turnout.workers.flows import FlowSteps
from turnout.workers.runtime import WorkerRuntime
from turnout.workers.spec import WorkerSpec

log = logging.getLogger(__name__)

# The pool child's runtime, and its runner of pipeline steps; set by the
# worker_process_init hook after the fork.
_runtime: WorkerRuntime | None = None
_flows: FlowSteps | None = None


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
            "turnout_lane_share": settings.lane_share,
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
    and its tasks' leases (turnout.core.delivery)."""
    routes = table.routes_for_queues(set(spec.queues))
    if not routes:
        raise ConfigError(f"worker {spec.name}: no route in {table.source} uses {spec.queues}")
    # Checked in the parent so that a bad artifact stops the start with a clear
    # message instead of a child that dies and is restarted forever.
    problems = []
    try:
        client = broker.connect(settings.redis(), socket_timeout=5)
        serving = parse_all(client.hgetall(redis_keys.SERVING))
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
        self: Any, model: str, requests: list[dict[str, Any]], spec: dict[str, Any] | None = None
    ) -> None:
        if _runtime is None or _flows is None:
            raise RuntimeError("the worker's models are not loaded")
        if spec and spec.get("flow") is not None:
            # A step of a pipeline or an ensemble: it hands itself on.
            _flows.run(self, requests, spec["flow"])
            return
        # The runtime has stored the result itself; returning it too would only
        # pickle it through the pool's pipe to the parent, which drops it.
        _runtime.run(self, model, requests, spec)

    board = Board(spec.concurrency)

    def init_child(**_: Any) -> None:
        global _runtime, _flows
        runtime = WorkerRuntime(
            spec, settings, table, routes, slot=board.claim(), incarnation=incarnation
        )
        runtime.load()
        _runtime = runtime
        _flows = FlowSteps(runtime)

    signals.worker_process_init.connect(init_child, weak=False)
    return WorkerApp(app, [r.name for r in routes], spec.concurrency, board, incarnation)


