"""Changing which version serves: rollouts, canaries, rollbacks.

``PUT /v1/models/{name}/default`` writes what is wanted into the model's
serving document (``turnout.core.serving``); the workers load it in the
background while the old version goes on serving; the default flips only
once every live worker that serves the model has the new version ready. A
version that fails to load anywhere is dropped, the old default stays, and
the reason is kept in the document.

Every API process runs ``tick`` after each refresh, so a rollout that
outlasts the call that asked for it is finished by whichever process looks
first; each change is a WATCH/MULTI on the model's field, so they cannot
undo each other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from turnout.core import redis_keys
from turnout.core.catalog import list_versions, require_version
from turnout.core.errors import InvalidInput, LoadFailed
from turnout.core.routes import Route, RouteTable, describe_steps
from turnout.core.serving import FAILED, READY, Canary, Serving, rollout_state
from turnout.core.settings import Settings
from turnout.router.live import LiveView

log = logging.getLogger(__name__)

Change = Callable[[Serving], Serving | None]


class Lifecycle:
    def __init__(
        self, settings: Settings, client: aioredis.Redis, live: LiveView
    ) -> None:
        self.settings = settings
        self.client = client
        self.live = live

    @property
    def table(self) -> RouteTable:
        """The route table in force, read at use time (the live view holds it)."""
        return self.live.table

    async def _change(self, model: str, change: Change) -> Serving:
        """Apply ``change`` to the model's document atomically; it returns None
        to leave the document as it is. The local view follows at once, so
        that this process's next request already sees the change."""
        while True:
            async with self.client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(redis_keys.SERVING)
                    current = Serving.from_json(await pipe.hget(redis_keys.SERVING, model))
                    new = change(current)
                    if new is None:
                        await pipe.unwatch()
                        return current
                    pipe.multi()
                    pipe.hset(redis_keys.SERVING, model, new.to_json())
                    await pipe.execute()
                except WatchError:
                    continue
            self.live.serving[model] = new
            return new

    async def describe(self, name: str) -> dict[str, Any]:
        flow = self.table.flows.get(name)
        if flow is not None:
            # A pipeline or ensemble has no versions of its own: each of its
            # models serves its own default (or canary's share).
            return {"name": name, "kind": flow.kind, "steps": describe_steps(flow),
                    "models": {m: self.live.serving_for(m).default_for(self.table.require(m))
                               for m in flow.models}}
        route = self.table.require(name)
        serving = Serving.from_json(await self.client.hget(redis_keys.SERVING, name))
        workers = self.live.workers
        versions = []
        for info in list_versions(self.settings.models_dir, route):
            entry = info.describe()
            # Each worker's state of this version (its generation is internal).
            entry["workers"] = [
                {"name": w.name, "state": state.state,
                 **({"reason": state.reason} if state.reason is not None else {})}
                for w in workers
                if (state := w.version_states(name).get(info.version)) is not None
            ]
            role = _role(route, serving, info.version)
            if role:
                entry["serving"] = role
            versions.append(entry)
        body: dict[str, Any] = {
            "name": name,
            "default_version": serving.default_for(route),
            "previous_version": serving.previous,
            "route_version": route.version,
            "versions": versions,
        }
        if serving.canary is not None:
            ready = rollout_state(name, serving.canary.version, workers)[0] == READY
            body["canary"] = {"version": serving.canary.version,
                              "percent": serving.canary.percent if ready else 0.0,
                              "asked_percent": serving.canary.percent, "ready": ready}
        if serving.target is not None:
            rolling, detail = rollout_state(name, serving.target, workers, serving.generation)
            body["rollout"] = {"version": serving.target, "state": rolling, "detail": detail}
        if serving.failure:
            body["last_failure"] = serving.failure
        return body

    async def set_default(
        self, name: str, version: str, canary_percent: float | None, wait_s: float | None
    ) -> tuple[int, dict[str, Any]]:
        """Start a rollout (or a canary, or clear one) and wait up to ``wait_s``
        for it to serve: (200, body) done; (202, body) still loading.
        ``LoadFailed`` when a worker could not load it (the old one serves on)."""
        route = self.table.require(name)
        require_version(self.settings.models_dir, route, version)
        wait = self.settings.rollout_wait_s if wait_s is None else wait_s
        if canary_percent is not None:
            if not 0 <= canary_percent <= 100:
                raise InvalidInput(f"canary_percent: expected 0 to 100, got {canary_percent}")
            return await self._canary(route, version, canary_percent, wait)
        serving = await self._change(name, partial(_aim, route, version=version))
        if serving.target is None:  # already the default: nothing was replaced
            return 200, self._done(route, serving, None)
        return await self._follow(route, version, serving, wait, "version", flip=True)

    async def _canary(
        self, route: Route, version: str, percent: float, wait: float
    ) -> tuple[int, dict[str, Any]]:
        def aim(s: Serving) -> Serving | None:
            if percent == 0 or version == s.default_for(route):
                return None if s.canary is None else s.evolve(canary=None)
            return s.evolve(canary=Canary(version, percent), failure=None)

        before = Serving.from_json(await self.client.hget(redis_keys.SERVING, route.name))
        serving = await self._change(route.name, aim)
        if serving.canary is None:
            # A canary call never replaces the default: "previous" stays empty,
            # and the answer says which canary it ended, if any.
            body = self._done(route, serving, None)
            if before.canary is not None:
                body["canary_ended"] = before.canary.version
            return 200, body
        return await self._follow(route, version, serving, wait, "canary version", flip=False)

    async def _follow(
        self, route: Route, version: str, serving: Serving, wait: float, what: str, flip: bool
    ) -> tuple[int, dict[str, Any]]:
        """Watch the workers load ``version`` for up to ``wait`` seconds."""
        name = route.name
        deadline = time.monotonic() + wait
        while True:
            await self.live.refresh()
            state, detail = rollout_state(name, version, self.live.workers, serving.generation)
            if state == READY:
                if not flip:
                    return 200, self._done(route, serving, None)
                serving = await self._change(name, partial(_flip, route, version=version))
                return 200, self._done(route, serving, serving.previous)
            if state == FAILED:
                await self._change(name, partial(_drop, version=version, detail=detail))
                raise LoadFailed(
                    f"model {name!r} {what} {version!r} could not be loaded: {'; '.join(detail)}; "
                    f"version {serving.default_for(route)!r} keeps serving"
                )
            if time.monotonic() >= deadline:
                return 202, {"model": name, "version": version, "status": "loading",
                             "detail": detail, "status_url": f"/v1/models/{name}"}
            await asyncio.sleep(0.1)

    @staticmethod
    def _done(route: Route, serving: Serving, previous: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": route.name, "version": serving.default_for(route), "previous": previous,
        }
        if serving.canary is not None:
            body["canary"] = {"version": serving.canary.version, "percent": serving.canary.percent}
        return body

    async def tick(self) -> None:
        """Finish what calls that answered 202 started: flip a rollout whose
        version is ready everywhere, drop one that failed, drop a canary
        that failed to load."""
        for name, serving in list(self.live.serving.items()):
            route = self.table.get(name)
            if route is None:
                continue
            workers = self.live.workers
            if serving.target is not None:
                version = serving.target
                state, detail = rollout_state(name, version, workers, serving.generation)
                if state == READY:
                    await self._change(name, partial(_flip, route, version=version))
                    log.info("model %s: version %s is the default now", name, version)
                elif state == FAILED:
                    await self._change(name, partial(_drop, version=version, detail=detail))
                    log.error("model %s: version %s not rolled out: %s", name, version, detail)
            if serving.canary is not None:
                version = serving.canary.version
                state, detail = rollout_state(name, version, workers, serving.generation)
                if state == FAILED:
                    await self._change(name, partial(_drop, version=version, detail=detail))
                    log.error("model %s: canary %s dropped: %s", name, version, detail)


def _role(route: Route, serving: Serving, version: str) -> str | None:
    if version == serving.default_for(route):
        return "default"
    if serving.canary is not None and serving.canary.version == version:
        return "canary"
    if serving.target == version:
        return "rolling-out"
    return None


def _aim(route: Route, s: Serving, version: str) -> Serving | None:
    if version == s.default_for(route):
        if s.target is None:
            return None  # nothing to do
        return s.evolve(target=None)  # back to what serves: drop the rollout
    return s.evolve(target=version, failure=None)


def _flip(route: Route, s: Serving, version: str) -> Serving | None:
    if s.target != version:
        return None  # someone else finished or replaced it
    canary = None if s.canary is not None and s.canary.version == version else s.canary
    return s.evolve(default=version, previous=s.default_for(route), target=None, canary=canary)


def _drop(s: Serving, version: str, detail: list[str]) -> Serving | None:
    failure = {"version": version, "reason": "; ".join(detail), "at": time.time()}
    if s.target == version:
        return s.evolve(target=None, failure=failure)
    if s.canary is not None and s.canary.version == version:
        return s.evolve(canary=None, failure=failure)
    return None
