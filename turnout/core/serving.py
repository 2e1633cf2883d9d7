"""Which versions of each model serve, shared by every process through Redis.

One hash, ``turnout:serving``, holds a small JSON document per model: its
default version (when an operator has changed it from the route table's), the
one it replaced, a canary (version and percent) and a rollout in progress
(``target``). Every API process and every worker pool child reads the whole
hash on each refresh; only the API writes it (``turnout.router.lifecycle``).

The decisions here are pure functions of that document and the workers'
heartbeats, so that they can be tested without Redis.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from turnout.core.messages import FAILED, LOADING, READY, Heartbeat
from turnout.core.routes import Route

__all__ = ["FAILED", "LOADING", "READY", "Canary", "Serving", "bucket", "choose_version",
           "parse_all", "rollout_state"]


@dataclass(frozen=True)
class Canary:
    version: str
    percent: float


@dataclass(frozen=True)
class Serving:
    default: str | None = None  # None: the route table's version
    previous: str | None = None
    canary: Canary | None = None
    # A version being loaded everywhere before it becomes the default.
    target: str | None = None
    # Bumped by every change an operator asks for: a worker that failed to
    # load a version tries it again only for a newer generation.
    generation: int = 0
    # The last load that failed: {"version", "reason", "at"}.
    failure: dict[str, Any] | None = field(default=None)

    def default_for(self, route: Route) -> str:
        return self.default or route.version

    def wanted(self, route: Route) -> set[str]:
        """The versions a worker serving ``route`` should hold loaded."""
        out = {self.default_for(route)}
        if self.canary is not None:
            out.add(self.canary.version)
        if self.target is not None:
            out.add(self.target)
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> Serving:
        if not raw:
            return cls()
        data = json.loads(raw)
        canary = data.get("canary")
        return cls(
            default=data.get("default"),
            previous=data.get("previous"),
            canary=Canary(str(canary["version"]), float(canary["percent"])) if canary else None,
            target=data.get("target"),
            generation=int(data.get("generation", 0)),
            failure=data.get("failure"),
        )

    def evolve(self, **changes: Any) -> Serving:
        return replace(self, generation=self.generation + 1, **changes)


def parse_all(raw: Mapping[Any, Any]) -> dict[str, Serving]:
    """The ``turnout:serving`` hash as read from Redis."""
    out = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        try:
            out[name] = Serving.from_json(value)
        except (ValueError, KeyError, TypeError):
            continue  # a document no version of Turnout wrote: ignored
    return out


def rollout_state(
    model: str, version: str, workers: Iterable[Heartbeat], generation: int = 0
) -> tuple[str, list[str]]:
    """Where loading ``version`` stands on the workers that serve ``model``:
    ``ready`` once every one of them has it ready, ``failed`` (with each
    worker's reason) once any could not load it for this ``generation`` of
    the serving document or a later one, else ``loading``. With no worker
    serving the model at all, it is ``loading``: nothing can run it."""
    serving = [w for w in workers if w.serves(model)]
    if not serving:
        return LOADING, ["no live worker serves the model"]
    reasons = []
    for worker in serving:
        state = worker.version_states(model).get(version)
        if state is not None and state.state == FAILED and state.generation >= generation:
            reasons.append(f"worker {worker.name}: {state.reason or 'failed'}")
    if reasons:
        return FAILED, reasons
    waiting = [w.name for w in serving if not w.serves(model, version)]
    if not waiting:
        return READY, []
    return LOADING, [f"loading on {', '.join(waiting)}"]


def bucket(model: str, route_key: str) -> float:
    """A caller's fixed place in [0, 100) for ``model``: the same key always
    lands on the same side of a canary, in every API process (a salted
    ``hash()`` would not)."""
    digest = hashlib.blake2b(f"{model}\0{route_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 / 100


def choose_version(
    route: Route, serving: Serving, canary_ready: bool, route_key: str | None, draw: float
) -> str:
    """The version a request for ``route`` goes to. ``draw`` is uniform in
    [0, 100), used when the request carries no ``X-Route-Key``. A canary
    that is not ready everywhere gets nothing."""
    canary = serving.canary
    if canary is not None and canary_ready and canary.percent > 0:
        place = bucket(route.name, route_key) if route_key else draw
        if place < canary.percent:
            return canary.version
    return serving.default_for(route)
