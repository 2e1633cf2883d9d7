"""Pipelines and ensembles on the wire: the plan a request carries through
every step, fixed when the router accepted it (each model's version chosen
then, so every row sees one consistent set), and what one step hands the next.

A request to a pipeline ``P`` of steps ``s0 … sN`` is one task per step, each
with the id ``<request id>.<step>``; the router queues ``s0``, and the worker
that finishes step ``k`` queues step ``k+1`` in the same Lua script that acks
step ``k`` (``flow_hop.lua``). An ensemble's members run as branches, all
queued by the router at once; each branch writes its answer into the
request's join hash, and the one that completes it queues the combine step.
The last step stores the request's result under the request's own id, which
is what its client polls, with ``steps``: where each step ran, and how long.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from turnout.core.messages import MessageError, Outcome
from turnout.core.redis_keys import DEFAULT_LANE

PIPELINE, ENSEMBLE = "pipeline", "ensemble"
MODEL, TRANSFORM, COMBINE = "model", "transform", "combine"


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One step as the request will run it."""

    kind: str  # MODEL, TRANSFORM or COMBINE
    # The model's name, the transform's module:function, or the combiner.
    name: str
    queue: str
    # A model step's version, chosen at submission.
    version: str = ""
    time_limit_s: float = 30.0

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "queue": self.queue,
                               "time_limit_s": self.time_limit_s}
        if self.version:
            out["version"] = self.version
        return out

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> PlanStep:
        kind = str(raw.get("kind") or "")
        if kind not in (MODEL, TRANSFORM, COMBINE):
            raise MessageError(f"a flow step of kind {kind!r}")
        return cls(kind, str(raw.get("name") or ""), str(raw.get("queue") or ""),
                   str(raw.get("version") or ""), float(raw.get("time_limit_s") or 30.0))

    @property
    def soft_time_limit_s(self) -> float:
        return self.time_limit_s - min(1.0, self.time_limit_s * 0.1)


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """Which request, which composed model, its plan, and which step this task is."""

    id: str  # the request's task id: its result's key
    name: str
    kind: str  # PIPELINE or ENSEMBLE
    plan: tuple[PlanStep, ...]
    at: int = 0
    lane: str = DEFAULT_LANE

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind,
                "plan": [s.to_wire() for s in self.plan], "at": self.at, "lane": self.lane}

    @classmethod
    def from_wire(cls, raw: Any) -> FlowSpec:
        if not isinstance(raw, Mapping):
            raise MessageError(f"a flow spec is a {type(raw).__name__}, not an object")
        kind = str(raw.get("kind") or "")
        if kind not in (PIPELINE, ENSEMBLE):
            raise MessageError(f"a flow of kind {kind!r}")
        plan = tuple(PlanStep.from_wire(s) for s in raw.get("plan") or ())
        at = int(raw.get("at") or 0)
        if not 0 <= at < len(plan):
            raise MessageError(f"a flow step {at} of a plan of {len(plan)}")
        return cls(str(raw.get("id") or ""), str(raw.get("name") or ""), kind, plan, at,
                   str(raw.get("lane") or DEFAULT_LANE))

    @property
    def step(self) -> PlanStep:
        return self.plan[self.at]

    def task_id(self, at: int | None = None) -> str:
        """The task id of step ``at`` (this one's by default)."""
        return f"{self.id}.{self.at if at is None else at}"

    @property
    def branches(self) -> int:
        """An ensemble's members (every step but the combine)."""
        return len(self.plan) - 1 if self.kind == ENSEMBLE else 0

    @property
    def is_branch(self) -> bool:
        return self.kind == ENSEMBLE and self.at < len(self.plan) - 1

    @property
    def is_last(self) -> bool:
        return self.at == len(self.plan) - 1

    def following(self) -> FlowSpec:
        """The spec of the step this one hands on to."""
        return replace(self, at=len(self.plan) - 1 if self.is_branch else self.at + 1)

    @property
    def reads_input(self) -> bool:
        """Whether this step's input comes from the step before (by reference),
        not with the message: every pipeline step but the first."""
        return self.kind == PIPELINE and self.at > 0


@dataclass(slots=True)
class Carried:
    """What one step hands the next: each request's outcome so far (its
    predictions are the next step's rows; an error or a revocation ends it
    there), and the steps run so far."""

    outcomes: list[Outcome]
    steps: list[dict[str, Any]] = field(default_factory=list)

    def encode(self) -> bytes:
        return orjson.dumps({"results": [o.to_wire() for o in self.outcomes],
                             "steps": self.steps})

    @classmethod
    def decode(cls, raw: bytes | str) -> Carried:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise MessageError("a flow step's input is not an object")
        return cls([Outcome.from_wire(o) for o in data.get("results") or ()],
                   list(data.get("steps") or ()))


def step_record(step: PlanStep, worker: str, device: str, version: str, queued_ms: float,
                run_ms: float) -> dict[str, Any]:
    """One entry of a result's ``steps``."""
    out: dict[str, Any] = {"model": step.name, "kind": step.kind, "queue": step.queue,
                           "worker": worker, "device": device,
                           "timings_ms": {"queued": round(queued_ms, 3), "run": round(run_ms, 3)}}
    if version:
        out["version"] = version
    return out
