"""The models one pool child holds, by version, and how it changes them while
it serves: the lifecycle's worker side.

A child loads what ``turnout:serving`` wants for each of its routes (the
default, a canary, a version being rolled out) once at start, then a thread
in the child watches that document and loads new versions in the background
while the child's main thread goes on serving the old ones. A version nothing
wants any more is unloaded after ``TURNOUT_RETIRE_AFTER_S``; a task running
on it keeps its own reference, so it finishes on it.

Memory: a new version is loaded beside the old one when both fit; otherwise
the model's other versions are unloaded first (requests for the model wait
for the load meanwhile), and loaded again if the new one fails.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from turnout.core.catalog import at_version, sort_key
from turnout.core.inputs import Image
from turnout.core.routes import Route
from turnout.core.serving import FAILED, LOADING, READY, Serving
from turnout.core.settings import Settings
from turnout.ml.adapters import LoadedModel
from turnout.ml.artifacts import ModelMeta, verify
from turnout.ml.images import model_rows
from turnout.ml.loading import load_version
from turnout.workers.memory import DeviceMemory, estimate_mb
from turnout.workers.spec import WorkerSpec

log = logging.getLogger(__name__)


class NotLoaded(Exception):
    """No version of the model that this request may use is loaded here."""


@dataclass
class Held:
    model: LoadedModel
    need_mb: float


class Shelf:
    def __init__(
        self,
        spec: WorkerSpec,
        settings: Settings,
        memory: DeviceMemory,
        post: Callable[..., None],
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.memory = memory
        self._post = post
        self._cond = threading.Condition()
        self.routes: dict[str, Route] = {}
        self.serving: dict[str, Serving] = {}
        self.held: dict[str, dict[str, Held]] = {}
        self.states: dict[str, dict[str, dict[str, Any]]] = {}
        # (model, version) -> the serving generation at which it failed to load
        self._failed_at: dict[tuple[str, str], int] = {}
        self._unwanted_since: dict[tuple[str, str], float] = {}
        self._thread: threading.Thread | None = None

    # -- what the child's main thread asks -------------------------------------

    def get(self, model: str, version: str | None, pinned: bool, wait_s: float) -> tuple[str, LoadedModel]:
        """The version to run a request on, and its model. A pinned request gets
        its version or nothing; any other gets its version if loaded, else the
        default, else the newest loaded. While a version of the model is
        loading (a swap that had to unload first), it waits up to ``wait_s``."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                held = self.held.get(model, {})
                if version is not None and version in held:
                    return version, held[version].model
                if not pinned and held:
                    serving = self.serving.get(model, Serving())
                    route = self.routes.get(model)
                    default = serving.default_for(route) if route else None
                    chosen = default if default in held else max(held, key=sort_key)
                    return chosen, held[chosen].model
                loading = any(s["state"] == LOADING for s in self.states.get(model, {}).values())
                left = deadline - time.monotonic()
                if not loading or left <= 0:
                    what = f"version {version!r} of model {model!r}" if pinned else f"model {model!r}"
                    raise NotLoaded(f"worker {self.spec.name} has no {what} loaded")
                self._cond.wait(min(left, 0.5))

    def report(self) -> dict[str, Any]:
        """What the heartbeat shows of this child's models."""
        with self._cond:
            versions = {m: {v: dict(s) for v, s in vs.items()} for m, vs in self.states.items()}
            models = sorted(m for m, held in self.held.items() if held)
        refused = {}
        for model, states in versions.items():
            if model not in models:
                reasons = [s.get("reason") for s in states.values() if s["state"] == FAILED]
                if reasons:
                    refused[model] = str(reasons[-1])
        return {"versions": versions, "models": models, "refused": refused}

    # -- changing what is held -------------------------------------------------

    def sync(self, routes: dict[str, Route], serving: dict[str, Serving]) -> None:
        """Load what is wanted and not held; retire what is held and not wanted."""
        with self._cond:
            self.routes = dict(routes)
            self.serving = dict(serving)
        now = time.monotonic()
        for name, route in routes.items():
            doc = serving.get(name, Serving())
            for version in sorted(doc.wanted(route), key=sort_key):
                self._unwanted_since.pop((name, version), None)
                if version in self.held.get(name, {}):
                    continue
                failed_at = self._failed_at.get((name, version))
                if failed_at is not None and failed_at >= doc.generation:
                    continue  # tried already; an operator's next change tries again
                self._load(route, version, doc.generation)
        for name in list(self.held):
            routed = routes.get(name)
            wanted = serving.get(name, Serving()).wanted(routed) if routed else set()
            for version in list(self.held.get(name, {})):
                if version in wanted:
                    continue
                since = self._unwanted_since.setdefault((name, version), now)
                if routed is None or now - since >= self.settings.retire_after_s:
                    self._unload(name, version, "no longer wanted")
                    self._unwanted_since.pop((name, version), None)
        for name in list(self.states):
            if name not in routes:
                with self._cond:
                    self.states.pop(name, None)
        self._post()

    def retiring(self) -> bool:
        return bool(self._unwanted_since)

    def _set_state(
        self, model: str, version: str, state: str, generation: int, reason: str | None = None
    ) -> None:
        with self._cond:
            # The generation says which operator change this state answers.
            entry: dict[str, Any] = {"state": state, "generation": generation}
            if reason:
                entry["reason"] = reason
            self.states.setdefault(model, {})[version] = entry
            self._cond.notify_all()
        self._post()

    def _load(self, route: Route, version: str, generation: int, evict: bool = True) -> bool:
        name = route.name
        started = time.perf_counter()
        self._set_state(name, version, LOADING, generation)
        evicted: list[str] = []
        try:
            path, meta = verify(self.settings.models_dir, at_version(route, version))
            need = estimate_mb(path.parent, route.options, meta.memory_mb)
            fits, why = self.memory.fits(need)
            others = self.held.get(name, {})
            if not fits and evict and others:
                # Not beside the old version: would it fit instead of it?
                room = sum(h.need_mb for h in others.values())
                if self.memory.fits(need - room)[0]:
                    for old in list(others):
                        self._unload(name, old, f"making room for version {version}")
                        evicted.append(old)
                    fits, why = self.memory.fits(need)
            if not fits:
                raise MemoryError(why)
            model = load_version(route.framework, path, meta, self.spec.device, route.options)
            _warm_up(route, meta, model)
            self.memory.commit(need)
        except Exception as exc:  # noqa: BLE001 - any failure to load is reported, never fatal
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, MemoryError) else str(exc)
            log.error("worker %s: model %s version %s not loaded: %s",
                      self.spec.name, name, version, reason)
            self._failed_at[(name, version)] = generation
            self._set_state(name, version, FAILED, generation, reason)
            for old in evicted:  # put back what was unloaded for it
                self._load(route, old, generation, evict=False)
            return False
        with self._cond:
            self.held.setdefault(name, {})[version] = Held(model, need)
        self._failed_at.pop((name, version), None)
        self._set_state(name, version, READY, generation)
        log.info("worker %s: loaded model %s version %s (%s) on %s in %.0f ms",
                 self.spec.name, name, version, route.framework, self.spec.device_label,
                 (time.perf_counter() - started) * 1000)
        return True

    def _unload(self, model: str, version: str, why: str) -> None:
        with self._cond:
            held = self.held.get(model, {}).pop(version, None)
            self.states.get(model, {}).pop(version, None)
            if not self.held.get(model):
                self.held.pop(model, None)
        if held is None:
            return
        self.memory.uncommit(held.need_mb)
        del held
        gc.collect()
        self.memory.release()
        log.info("worker %s: unloaded model %s version %s (%s)", self.spec.name, model, version, why)
        self._post()

    # -- the watcher thread ----------------------------------------------------

    def watch(self, look: Callable[[], tuple[dict[str, Route], dict[str, Serving]]]) -> None:
        """Follow what ``look`` reads (the routes in force, ``turnout:serving``)
        from a thread of this child."""

        def loop() -> None:
            last: tuple[dict[str, Route], dict[str, Serving]] | None = None
            while True:
                time.sleep(self.settings.lifecycle_poll_s)
                try:
                    current = look()
                except redis.RedisError:
                    continue  # Redis is away: keep serving what is held
                if current != last or self.retiring():
                    try:
                        self.sync(*current)
                    except Exception:  # the watcher must outlive any one sync
                        log.exception("worker %s: model sync failed", self.spec.name)
                    last = current

        self._thread = threading.Thread(target=loop, name="turnout-shelf", daemon=True)
        self._thread.start()


def _warm_up(route: Route, meta: ModelMeta, model: LoadedModel) -> None:
    # One pass at load pays for lazy initialisation (kernels, allocator,
    # tokenizer) here rather than in the first client's request. An added
    # version runs the sample that passed at add (its schema's own rows; a
    # category the encoder knows).
    sample = meta.sample
    if isinstance(route.input, Image) and not all(isinstance(r, str) for r in sample or []):
        # An image route over a version added as a tensor: its sample is the
        # tensor; the route's own warm-up image is what it will get.
        sample = None
    model.predict(model_rows(route.input, sample or route.input.warm_up()))
