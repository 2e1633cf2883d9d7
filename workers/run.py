"""The entry point of ``turnout worker``: build the worker's app, start its
heartbeat, run Celery's worker until it stops."""


from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import redis
from celery import signals

from turnout.core import broker, delivery
from turnout.core.routes import RouteTable
from turnout.core.settings import Settings
from turnout.workers.app import build_worker_app
from turnout.workers.gpu.nvml import DeviceTelemetry
from turnout.workers.heartbeat import HeartbeatThread
from turnout.workers.spec import WorkerSpec

log = logging.getLogger(__name__)


def _stuck(name: str, grace_s: float) -> None:
    log.error("worker %s still not stopped %.0f s after its shutdown began; exiting", name,
              grace_s)
    os._exit(1)


def _register(client: redis.Redis, incarnation: str) -> None:
    """Register the incarnation, waiting while the broker refuses writes (full,
    or its disk): a supervisor restarting the worker would only load its
    models again and again until the broker recovers."""
    said = False
    while True:
        try:
            delivery.register(client, incarnation)
            return
        except redis.ResponseError as exc:
            if not broker.refuses_writes(exc):
                raise
            if not said:
                log.warning("waiting to start: %s", broker.why(exc))
                said = True
            time.sleep(1.0)


def run_worker(spec: WorkerSpec, settings: Settings, table: RouteTable) -> int:
    incarnation = delivery.new_incarnation(spec.name)
    if spec.kind == "train":
        from turnout.workers.training import build_train_app

        worker_app = build_train_app(spec, settings, table, incarnation)
    else:
        worker_app = build_worker_app(spec, settings, table, incarnation)
    app = worker_app.app
    telemetry = DeviceTelemetry() if spec.device == "cuda" else None
    heartbeat = HeartbeatThread(spec, settings, worker_app, telemetry)
    # Announce the worker only once its pool is up, and take it back first thing
    # on shutdown, so the router never routes to a worker that is going away.
    # Registered before the consumer starts, so that its first message has an
    # owner; beating from then on, before the children have loaded.
    client = broker.connect(settings.redis(), socket_timeout=5)
    _register(client, incarnation)
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
