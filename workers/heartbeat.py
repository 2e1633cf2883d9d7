"""The worker's heartbeat, from its parent process: liveness, what it serves,
NVML's figures; and the fencing that stops a worker the others gave up on."""


from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import redis

from turnout.core import broker, delivery, heartbeats
from turnout.core.messages import (
    FAILED,
    LOADING,
    READY,
    ChildState,
    CurrentTask,
    GpuFigures,
    Heartbeat,
    VersionState,
)
from turnout.core.settings import Settings
from turnout.workers.app import WorkerApp
from turnout.workers.gpu.nvml import DeviceTelemetry
from turnout.workers.spec import WorkerSpec

log = logging.getLogger(__name__)


class HeartbeatThread:
    """A thread in the worker's parent that says, every second or so, that the
    worker is alive, which queues it consumes, which models it serves (and
    refused), what its children are running and, for a GPU, NVML's figures.

    It runs in the parent, never in a pool child, so a long forward pass cannot
    starve it. Each beat also moves the incarnation's counter, by which
    reapers judge it alive (turnout.core.delivery), and runs one reaper look.
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
        gpu = spec.kind == "gpu"
        # The fixed part; each beat adds what the children post.
        self.fixed = Heartbeat(
            name=spec.name,
            incarnation=worker.incarnation,
            kind=spec.kind,
            queues=tuple(spec.queues),
            device=spec.device_label,
            concurrency=spec.concurrency,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=time.time(),
            models=tuple(models),
            gpu_index=spec.gpu_index if gpu else None,
            # What this process pinned itself to, before torch was imported.
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES") if gpu else None,
            memory_limit_mb=spec.memory_limit_mb,
        )
        self._loaded: list[str] = list(models)
        self._refused: dict[str, str] = {}
        self._versions: dict[str, dict[str, VersionState]] = {}
        self._stop = threading.Event()
        self._withdrawn = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None

    def start(self) -> None:
        self._client = broker.connect(self.settings.redis(), socket_timeout=5)
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
                # A broker that answers but writes nothing (full, or its disk)
                # lets no one declare this worker dead meanwhile, and its jobs'
                # results wait for it (fenced by their leases regardless): the
                # jobs in hand go on.
                if (not fenced and silent >= self.settings.fence_after_s
                        and not broker.refuses_writes(exc)):
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

    def current(self) -> Heartbeat:
        """The heartbeat now: the fixed part plus the children's posts."""
        children = self.board.read()
        ready = [c for c in children if c.get("ready")]
        if ready:
            # A model is served where every ready child holds it: a child that
            # has not yet adopted a reloaded route table (or could not load the
            # model) must not be handed its jobs. The same rule as a version's
            # READY (merge_versions).
            self._loaded = sorted(set.intersection(*(set(c.get("models", ())) for c in ready)))
            self._refused = {}
            for child in ready:
                self._refused.update(child.get("refused") or {})
            self._versions = merge_versions([c.get("versions") or {} for c in ready])
        gpu, telemetry = None, None
        if self.spec.kind == "gpu":
            if self.spec.device != "cuda" or self.telemetry is None:
                telemetry = "none: the worker runs on the CPU"
            else:
                uuid = next((c["device_uuid"] for c in children if c.get("device_uuid")), None)
                gpu = GpuFigures.from_wire(self.telemetry.read(uuid))
                telemetry = self.telemetry.status
        current = tuple(CurrentTask.from_wire(c["current"]) for c in children if c.get("current"))
        # While a replaced child reloads, the worker keeps the models it had:
        # its jobs wait a moment in the queue rather than being sent elsewhere.
        return dataclasses.replace(
            self.fixed,
            models=tuple(self._loaded),
            refused=dict(self._refused),
            versions=self._versions,
            reloading=len(ready) < len(children) or not children,
            current_tasks=current,
            busy=len(current),
            children=tuple(ChildState(int(c["pid"]), bool(c.get("ready")), c.get("memory", {}))
                           for c in children),
            gpu=gpu,
            telemetry=telemetry,
        )

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
) -> dict[str, dict[str, VersionState]]:
    """One worker's version states from its children's posts: a version is
    ready when every child has it ready, failed when any child could not load
    it (with that child's reason), and loading otherwise."""
    out: dict[str, dict[str, VersionState]] = {}
    seen: dict[tuple[str, str], list[VersionState]] = {}
    for versions in children:
        for model, states in versions.items():
            for version, state in states.items():
                seen.setdefault((model, version), []).append(VersionState.from_wire(state))
    for (model, version), found in sorted(seen.items()):
        failed = [s for s in found if s.state == FAILED]
        if failed:
            merged = VersionState(FAILED, failed[0].reason, max(f.generation for f in failed))
        elif len(found) == len(children) and all(s.state == READY for s in found):
            merged = VersionState(READY)
        else:
            merged = VersionState(LOADING)
        out.setdefault(model, {})[version] = merged
    return out



